// grovectl: the operator CLI. Talks to groved over the control socket
// (proto/control.proto, framing in kernel/src/framing.cpp).
//
// Exit codes: 0 success, 1 error reply from groved (or a bad reply), 2 usage error,
// 3 groved not reachable (no socket, refused, connection lost).

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <caf/atom.hpp>
#include <nlohmann/json.hpp>

#include "grove/control.pb.h"
#include "grove/errors.hpp"
#include "grove/kernel/control.hpp"
#include "grove/kernel/plugin_name.hpp"
#include "grove/kernel/status_json.hpp"
#include "grove/utf8.hpp"
#include "grove/function_runtime/client.hpp"
#include "grove/message_manager/client.hpp"
#include "grove/ml_inference/client.hpp"
#include "grove/ota/client.hpp"
#include "grove/deployment/client.hpp"
#include "grove/shadow/client.hpp"

#ifndef GROVE_VERSION
#  define GROVE_VERSION "unknown"
#endif

namespace {

namespace fs = std::filesystem;
// Keeps fields in the order written here rather than sorted.
using json = nlohmann::ordered_json;

/// Process exit codes (documented in --help).
enum exit_code : int {
  exit_ok = 0,
  exit_daemon_error = 1,
  exit_usage = 2,
  exit_not_running = 3,
};

/// Prints the one-line diagnostic and returns `code`.
int fail(int code, const std::string& msg) {
  std::fflush(stdout);
  std::fprintf(stderr, "grovectl: %s\n", msg.c_str());
  return code;
}

/// --socket, else $GROVE_CONTROL_SOCKET, else ${GROVE_WRITE_DIR:-./var}/run/control.sock.
fs::path socket_path(const std::string& option) {
  if (!option.empty())
    return option;
  if (auto env = std::getenv("GROVE_CONTROL_SOCKET"); env != nullptr && *env != '\0')
    return env;
  std::string dir = "./var";
  if (auto env = std::getenv("GROVE_WRITE_DIR"); env != nullptr && *env != '\0')
    dir = env;
  return fs::path{dir} / "run" / "control.sock";
}

/// An open control connection; closes on destruction.
class connection {
public:
  connection() = default;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  ~connection() {
    if (fd_ >= 0)
      ::close(fd_);
  }

  /// Connects to `path`; on failure prints why and returns the exit code.
  int open(const fs::path& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const auto& str = path.native();
    if (str.size() >= sizeof(addr.sun_path))
      return fail(exit_usage, "control socket path too long: " + str);
    std::memcpy(addr.sun_path, str.data(), str.size());
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0)
      return fail(exit_not_running, std::string{"socket: "} + std::strerror(errno));
    int rc;
    do {
      rc = ::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    } while (rc != 0 && errno == EINTR);
    if (rc == 0)
      return exit_ok;
    auto code = errno;
    if (code == ENOENT || code == ENOTDIR)
      return fail(exit_not_running,
                  "groved is not running (no control socket at " + str + ")");
    if (code == ECONNREFUSED)
      return fail(exit_not_running,
                  "groved is not running (nothing listens on " + str + ")");
    return fail(exit_not_running, "cannot connect to groved at " + str + ": "
                                    + std::strerror(code));
  }

  /// Bounds how long a reply may take (0: forever).
  void set_timeout(unsigned seconds) {
    timeval tv{static_cast<time_t>(seconds), 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }

  /// Sends `req`.
  int send(const grove::control::Request& req) {
    if (auto err = grove::framing::write_frame(fd_, req))
      return fail(exit_not_running, "cannot send to groved: " + grove::describe(err));
    return exit_ok;
  }

  /// Reads one response.
  int receive(grove::control::Response& res) {
    if (auto err = grove::framing::read_frame(fd_, res)) {
      if (err.compare(static_cast<uint8_t>(grove::errc::system_error),
                      caf::atom("grove"))
          == 0)
        return fail(exit_not_running, "groved closed the connection ("
                                        + grove::describe(err) + ")");
      if (err.compare(static_cast<uint8_t>(grove::errc::timeout), caf::atom("grove"))
          == 0)
        return fail(exit_daemon_error, "no reply from groved in time");
      return fail(exit_daemon_error, "bad reply from groved: " + grove::describe(err));
    }
    return exit_ok;
  }

  /// Sends `req`, reads the response and turns an error reply into exit code 1.
  int call(const grove::control::Request& req, grove::control::Response& res) {
    if (auto rc = send(req))
      return rc;
    if (auto rc = receive(res))
      return rc;
    if (!res.ok())
      return fail(exit_daemon_error, res.error().empty() ? "request failed"
                                                         : res.error());
    return exit_ok;
  }

  /// The socket.
  int fd() const noexcept {
    return fd_;
  }

private:
  int fd_ = -1;
};

// -- rendering ---------------------------------------------------------------

// Strict UTF-8 (what JSON strings may carry): the SDK's check.
using grove::valid_utf8;

/// Standard base64 with padding.
std::string base64(std::string_view in) {
  static constexpr char tbl[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  auto at = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(in[k])); };
  for (; i + 3 <= in.size(); i += 3) {
    auto v = (at(i) << 16) | (at(i + 1) << 8) | at(i + 2);
    out += tbl[(v >> 18) & 63];
    out += tbl[(v >> 12) & 63];
    out += tbl[(v >> 6) & 63];
    out += tbl[v & 63];
  }
  if (auto rest = in.size() - i; rest > 0) {
    auto v = at(i) << 16;
    if (rest == 2)
      v |= at(i + 1) << 8;
    out += tbl[(v >> 18) & 63];
    out += tbl[(v >> 12) & 63];
    out += rest == 2 ? tbl[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

/// "name" or "name{label=\"value\"}".
std::string series_name(const grove::control::Metric& m) {
  std::string out = m.name();
  std::map<std::string, std::string> labels(m.labels().begin(), m.labels().end());
  for (const auto& [key, value] : labels)
    out += (out.size() == m.name().size() ? "{" : ",") + key + "=\"" + value + "\"";
  if (!labels.empty())
    out += "}";
  return out;
}

/// Whether a payload prints as text: UTF-8 and not Protobuf (whose bytes may happen to be
/// valid UTF-8 control characters, e.g. message_manager's Routed reply).
bool printable(const std::string& payload, std::string_view content_type) {
  return !content_type.starts_with("application/x-protobuf") && valid_utf8(payload);
}

/// A payload as printed: itself, or `base64:...` when it is not text.
std::string shown(const grove::Envelope& e) {
  return printable(e.payload(), e.content_type()) ? e.payload()
                                                   : "base64:" + base64(e.payload());
}

/// One `sub --json` line.
json to_json(const grove::Envelope& e) {
  json obj = {{"topic", e.topic()}, {"source", e.source()}};
  if (printable(e.payload(), e.content_type()))
    obj["payload"] = e.payload();
  else
    obj["payload_base64"] = base64(e.payload());
  obj["content_type"] = e.content_type();
  if (!e.user_properties().empty()) {
    // Sorted by name: a protobuf map has no order of its own.
    std::map<std::string, std::string> props;
    for (const auto& [name, value] : e.user_properties())
      props[name] = value;
    obj["user_properties"] = props;
  }
  obj["qos"] = e.qos();
  obj["id"] = e.id();
  obj["timestamp_ns"] = e.timestamp_ns();
  return obj;
}

/// "1d 2h 3m 4s", leading zero units left out.
std::string format_uptime(double seconds) {
  auto s = static_cast<uint64_t>(seconds < 0 ? 0 : seconds);
  auto d = s / 86400;
  auto h = s / 3600 % 24;
  auto m = s / 60 % 60;
  std::string out;
  if (d > 0)
    out += std::to_string(d) + "d ";
  if (d > 0 || h > 0)
    out += std::to_string(h) + "h ";
  if (d > 0 || h > 0 || m > 0)
    out += std::to_string(m) + "m ";
  return out + std::to_string(s % 60) + "s";
}

/// The plugin table, then one line per plugin with a last error.
template <class Plugins>
void print_plugin_table(const Plugins& plugins) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back(
    {"NAME", "VERSION", "STATE", "RESTARTS", "QUEUE", "DROPPED", "LAST RELOAD"});
  for (const auto& p : plugins)
    rows.push_back({p.name(), p.version(), p.state(), std::to_string(p.restarts()),
                    std::to_string(p.queue_depth()) + "/"
                      + std::to_string(p.queue_capacity()),
                    std::to_string(p.dropped()),
                    p.last_reload().empty() ? "-" : p.last_reload()});
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i)
      width[i] = std::max(width[i], row[i].size());
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size())
        line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
  // Errors are too wide for the table; list them under it.
  for (const auto& p : plugins)
    if (!p.last_error().empty())
      std::printf("  %s: %s\n", p.name().c_str(), p.last_error().c_str());
}

/// Human-readable status.
void print_status(const grove::control::Status& s) {
  std::printf("groved %s, pid %u, up %s\n", s.version().c_str(), s.pid(),
              format_uptime(s.uptime_seconds()).c_str());
  std::printf("  config:          %s\n", s.config_file().c_str());
  std::printf("  write dir:       %s\n", s.write_dir().c_str());
  std::printf("  plugin dir:      %s\n", s.plugin_dir().c_str());
  std::printf("  control socket:  %s\n", s.control_socket().c_str());
  std::printf("  log level:       %s\n", s.log_level().c_str());
  std::printf("bus: %llu published, %llu delivered, %llu dropped, %llu unrouted, "
              "%u subscriptions\n",
              static_cast<unsigned long long>(s.bus_published()),
              static_cast<unsigned long long>(s.bus_delivered()),
              static_cast<unsigned long long>(s.bus_dropped()),
              static_cast<unsigned long long>(s.bus_unrouted()), s.subscriptions());
  if (s.bus_refused_not_owner() + s.bus_refused_too_large() > 0)
    std::printf("bus refused: %llu not the topic's owner, %llu over the payload limit\n",
                static_cast<unsigned long long>(s.bus_refused_not_owner()),
                static_cast<unsigned long long>(s.bus_refused_too_large()));
  std::printf("\n");
  print_plugin_table(s.plugins());
  std::vector<std::pair<std::string, std::string>> rows;
  size_t width = 0;
  for (const auto& p : s.plugins())
    for (const auto& m : p.metrics()) {
      rows.emplace_back(p.name() + " " + series_name(m), std::to_string(m.value()));
      width = std::max(width, rows.back().first.size());
    }
  if (!rows.empty()) {
    std::printf("\nmetrics:\n");
    for (const auto& [key, value] : rows)
      std::printf("  %-*s  %s\n", static_cast<int>(width), key.c_str(), value.c_str());
  }
  if (!s.details().empty()) {
    std::printf("\ndetails:\n");
    std::map<std::string, std::string> details(s.details().begin(), s.details().end());
    for (const auto& [key, value] : details)
      std::printf("  %s: %s\n", key.c_str(), value.c_str());
  }
}

/// One JSON document per line, flushed (scripts read line by line).
void print_json(const json& value) {
  std::printf("%s\n", value.dump().c_str());
  std::fflush(stdout);
}

// -- Ctrl-C for `sub` ----------------------------------------------------------

/// Self-pipe written by the signal handler.
int interrupt_pipe[2] = {-1, -1};

/// SIGINT/SIGTERM handler: async-signal-safe write to the self-pipe.
extern "C" void on_interrupt(int) {
  auto saved = errno;
  char byte = 1;
  [[maybe_unused]] auto rc = ::write(interrupt_pipe[1], &byte, 1);
  errno = saved;
}

/// Routes SIGINT/SIGTERM into a pipe the `sub` loop polls, so Ctrl-C ends it cleanly.
bool install_interrupt_handler() {
  if (::pipe2(interrupt_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
    return false;
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  return ::sigaction(SIGINT, &sa, nullptr) == 0
         && ::sigaction(SIGTERM, &sa, nullptr) == 0;
}

// -- commands ------------------------------------------------------------------

/// Options shared by all commands.
struct options {
  std::string socket;
  bool json = false;
  unsigned timeout = 60;
};

/// Runs a request that answers with a note (load, unload, reload).
int run_simple(connection& conn, const options& opts,
               const grove::control::Request& req) {
  grove::control::Response res;
  if (auto rc = conn.call(req, res))
    return rc;
  if (opts.json)
    print_json({{"ok", true}, {"message", res.message()}});
  else if (!res.message().empty())
    std::printf("%s\n", res.message().c_str());
  return exit_ok;
}

/// `status`: daemon, bus, plugins and details.
int run_status(connection& conn, const options& opts) {
  grove::control::Request req;
  req.mutable_status();
  grove::control::Response res;
  if (auto rc = conn.call(req, res))
    return rc;
  if (!res.has_status())
    return fail(exit_daemon_error, "bad reply from groved: no status");
  if (opts.json)
    print_json(grove::status_json::status(res.status()));
  else
    print_status(res.status());
  return exit_ok;
}

/// `plugins`: the plugin table.
int run_plugins(connection& conn, const options& opts) {
  grove::control::Request req;
  req.mutable_plugins();
  grove::control::Response res;
  if (auto rc = conn.call(req, res))
    return rc;
  if (!res.has_plugins())
    return fail(exit_daemon_error, "bad reply from groved: no plugin list");
  if (opts.json)
    print_json(grove::status_json::plugins(res.plugins().plugins()));
  else
    print_plugin_table(res.plugins().plugins());
  return exit_ok;
}

/// What `pub` and `call` put into the envelope besides topic and payload.
struct message_options {
  /// --content-type; empty: guessed from the payload.
  std::string content_type;
  /// --source; empty: groved stamps "grovectl".
  std::string source;
  /// --qos (pub only).
  uint32_t qos = 0;
  /// --user-property NAME=VALUE, repeatable (pub only).
  std::vector<std::string> user_properties;
};

/// The envelope `pub` and `call` send; content type by default application/json when
/// the payload parses as JSON, else UTF-8 text; an empty source is stamped "grovectl".
grove::Envelope make_message(const std::string& topic, const std::string& payload,
                             const message_options& mo) {
  auto content_type = mo.content_type;
  if (content_type.empty())
    content_type = json::accept(payload) ? "application/json"
                                         : "text/plain; charset=utf-8";
  grove::Envelope msg;
  msg.set_topic(topic);
  msg.set_payload(payload);
  msg.set_content_type(std::move(content_type));
  msg.set_source(mo.source);
  msg.set_qos(mo.qos);
  for (const auto& kv : mo.user_properties) {
    // The option's validator made sure of the '='; the last value of a name wins.
    auto eq = kv.find('=');
    (*msg.mutable_user_properties())[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return msg;
}

/// Sends `req` (a Call) and returns the reply or the error groved reported.
caf::expected<grove::Envelope> call_daemon(connection& conn,
                                           const grove::control::Request& req, int& rc) {
  grove::control::Response res;
  if ((rc = conn.send(req)) != exit_ok || (rc = conn.receive(res)) != exit_ok)
    return grove::make_error(grove::errc::system_error, "no reply");
  if (!res.ok()) {
    auto err = grove::error_of(res.reply());
    return err ? err : grove::make_error(grove::errc::plugin_failed, res.error());
  }
  return res.reply();
}

/// A blocking transport for typed clients: each envelope goes to groved as a Call (the
/// bus's timeout a second under ours); `rc` gets the exit code of a transport failure.
auto call_sender(connection& conn, const options& opts, int& rc) {
  return [&conn, &opts, &rc](grove::Envelope e) {
    grove::control::Request req;
    *req.mutable_call()->mutable_msg() = std::move(e);
    if (opts.timeout > 1)
      req.mutable_call()->set_timeout_ms((opts.timeout - 1) * 1000);
    return call_daemon(conn, req, rc);
  };
}

/// `pub` on message_manager's `$grove/mm/in/<subject>`: sent as its typed mm-3 request,
/// so the outcome is where the message went (targets), a refusal or no route.
int run_pub_mm(connection& conn, const options& opts, grove::Envelope msg) {
  auto topic = msg.topic();
  int rc = exit_ok;
  auto send = call_sender(conn, opts, rc);
  auto routed = grove::message_manager::publish(send, std::move(msg));
  if (rc != exit_ok)
    return rc;
  if (!routed)
    return fail(exit_daemon_error, grove::describe(routed.error()));
  if (opts.json)
    print_json({{"ok", routed->targets() > 0}, {"topic", topic}, {"targets", routed->targets()}});
  else if (routed->targets() > 0)
    std::printf("published to %s: routed to %u targets\n", topic.c_str(), routed->targets());
  if (routed->targets() == 0)
    return fail(exit_daemon_error, "no route: no subscription of the group takes " + topic);
  return exit_ok;
}

/// `pub`: publishes one message and prints what the bus did with it; exit 1 when no
/// subscriber took it.
int run_pub(connection& conn, const options& opts, const std::string& topic,
            const std::string& payload, const message_options& mo) {
  if (topic.starts_with(grove::message_manager::in_prefix))
    return run_pub_mm(conn, opts, make_message(topic, payload, mo));
  grove::control::Request req;
  *req.mutable_publish() = make_message(topic, payload, mo);
  grove::control::Response res;
  if (auto rc = conn.call(req, res))
    return rc;
  if (!res.has_published())
    return fail(exit_daemon_error, "bad reply from groved: no publish outcome");
  const auto& out = res.published();
  if (opts.json)
    print_json({{"ok", out.delivered() > 0},
                {"topic", topic},
                {"delivered", out.delivered()},
                {"dropped", out.dropped()}});
  else
    std::printf("published to %s: delivered %u, dropped %u\n", topic.c_str(),
                out.delivered(), out.dropped());
  if (out.delivered() == 0)
    return fail(exit_daemon_error,
                out.dropped() > 0 ? "not delivered: every subscriber's queue was full"
                                  : "not delivered: no subscriber for " + topic);
  return exit_ok;
}

/// `call`: sends a request to whoever serves TOPIC and prints the reply's payload.
int run_call(connection& conn, const options& opts, const std::string& topic,
             const std::string& payload, const message_options& mo) {
  grove::control::Request req;
  *req.mutable_call()->mutable_msg() = make_message(topic, payload, mo);
  // Leave groved a second to answer after the bus gave up.
  if (opts.timeout > 1)
    req.mutable_call()->set_timeout_ms((opts.timeout - 1) * 1000);
  grove::control::Response res;
  if (auto rc = conn.send(req))
    return rc;
  if (auto rc = conn.receive(res))
    return rc;
  const auto& reply = res.reply();
  if (!res.ok()) {
    if (opts.json)
      print_json({{"ok", false},
                  {"topic", topic},
                  {"error", res.error()},
                  {"error_code", reply.error_code()},
                  {"error_category", reply.error_category()}});
    return fail(exit_daemon_error, res.error().empty() ? "request failed" : res.error());
  }
  if (opts.json) {
    auto obj = to_json(reply);
    obj["ok"] = true;
    print_json(obj);
    return exit_ok;
  }
  auto line = shown(reply) + '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
  return exit_ok;
}

/// What `shadow` was asked.
struct shadow_options {
  /// get, update, delete or list.
  std::string verb;
  /// THING.
  std::string thing;
  /// --name: a named shadow; empty: the classic one.
  std::string name;
  /// The request document (update; optional for get and delete).
  std::string document;
  /// --page-size and --next-token (list).
  uint32_t page_size = 0;
  std::string next_token;
};

/// `shadow`: the shadow plugin's bus API (plugins/shadow/README.md). Prints the AWS JSON
/// document a device would get on .../accepted, or the rejection (exit 1).
int run_shadow(connection& conn, const options& opts, const shadow_options& so) {
  namespace sh = grove::shadow;
  int rc = exit_ok;
  auto send = call_sender(conn, opts, rc);
  if (so.verb == "list") {
    auto page = sh::list_rpc{std::string{sh::list_topic}}.call_with(
      send, sh::make_list(so.thing, so.page_size, so.next_token));
    if (rc != exit_ok)
      return rc;
    if (!page)
      return fail(exit_daemon_error, grove::describe(page.error()));
    json out = json::object();
    out["results"] = json::array();
    for (const auto& n : page->results())
      out["results"].push_back(n);
    if (!page->next_token().empty())
      out["nextToken"] = page->next_token();
    out["timestamp"] = page->timestamp();
    print_json(out);
    return exit_ok;
  }
  auto topic = so.verb == "get" ? sh::get_topic
               : so.verb == "update" ? sh::update_topic
                                     : sh::delete_topic;
  auto reply = sh::document_rpc{std::string{topic}}.call_with(
    send, sh::make_request(so.thing, so.name, so.document));
  if (rc != exit_ok)
    return rc;
  if (!reply)
    return fail(exit_daemon_error, grove::describe(reply.error()));
  auto line = reply->payload() + "\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
  if (reply->code() != 200)
    return fail(exit_daemon_error, "rejected with code " + std::to_string(reply->code()));
  return exit_ok;
}

/// What `ml` was asked.
struct ml_options {
  /// models or infer.
  std::string verb;
  /// infer: MODEL, --input FILE, --top-k N.
  std::string model;
  std::string input;
  uint32_t top_k = 0;
};

const char* ml_dtype(int t) {
  return t == grove::ml::UINT8 ? "uint8" : t == grove::ml::FLOAT32 ? "float32" : "unspecified";
}

/// The ml-1 request of an --input file: a .json file's tensors, or the bytes of an image.
std::optional<grove::ml::InferRequest> ml_request_of(const std::string& file,
                                                     std::string& why) {
  std::ifstream in{file, std::ios::binary};
  if (!in) {
    why = file + ": cannot open: " + std::strerror(errno);
    return std::nullopt;
  }
  std::string bytes{std::istreambuf_iterator<char>{in}, {}};
  grove::ml::InferRequest req;
  if (!file.ends_with(".json")) {
    req.set_image(std::move(bytes));
    return req;
  }
  auto doc = json::parse(bytes, nullptr, false);
  if (!doc.is_object() || !doc.contains("inputs") || !doc["inputs"].is_array()) {
    why = file + ": expected {\"inputs\": [{\"name\", \"dtype\", \"shape\", \"data\"}...]}";
    return std::nullopt;
  }
  for (const auto& t : doc["inputs"]) {
    if (!t.is_object() || !t.value("name", json{}).is_string() || !t.value("shape", json{}).is_array()
        || !t.value("data", json{}).is_array()) {
      why = file + ": every input needs a name, a shape and data";
      return std::nullopt;
    }
    auto* out = req.add_inputs();
    out->set_name(t["name"].get<std::string>());
    auto dtype = t.value("dtype", std::string{"float32"});
    out->set_dtype(dtype == "uint8" ? grove::ml::UINT8 : grove::ml::FLOAT32);
    for (const auto& d : t["shape"]) {
      if (!d.is_number_integer()) {
        why = file + ": input '" + out->name() + "': shape: integers";
        return std::nullopt;
      }
      out->add_shape(d.get<int64_t>());
    }
    std::string data;
    for (const auto& v : t["data"]) {
      if (!v.is_number()) {
        why = file + ": input '" + out->name() + "': data: numbers";
        return std::nullopt;
      }
      if (dtype == "uint8") {
        if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 255) {
          why = file + ": input '" + out->name() + "': data: uint8 values are integers 0-255, got "
                + v.dump();
          return std::nullopt;
        }
        data.push_back(static_cast<char>(v.get<int>()));
      } else {
        float f = v.get<float>();
        data.append(reinterpret_cast<const char*>(&f), sizeof f);
      }
    }
    out->set_data(std::move(data));
  }
  return req;
}

/// `ota`: the ota plugin's bus API (plugins/ota/README.md): apply a bundle, the journal.
int run_ota(connection& conn, const options& opts, const std::string& verb,
            const std::string& bundle, bool allow_downgrade) {
  namespace go = grove::ota;
  int rc = exit_ok;
  auto send = call_sender(conn, opts, rc);
  if (verb == "apply") {
    go::ApplyRequest req;
    std::error_code ec;
    auto abs = std::filesystem::absolute(bundle, ec); // groved's working directory differs
    req.set_bundle(ec ? bundle : abs.string());
    req.set_allow_downgrade(allow_downgrade);
    auto r = go::apply_rpc{std::string{go::apply_topic}}.call_with(send, req);
    if (rc != exit_ok)
      return rc;
    if (!r)
      return fail(exit_daemon_error, grove::describe(r.error()));
    if (opts.json)
      std::cout << json{{"version", r->version()}, {"release", r->release()},
                        {"previous", r->previous()}, {"phase", r->phase()},
                        {"restarting", r->restarting()}}.dump()
                << "\n";
    else
      std::cout << "switched to " << r->release() << " (previous " << r->previous() << ", "
                << r->phase() << ")" << (r->restarting() ? "; groved restarts into it" : "")
                << "\n";
    return exit_ok;
  }
  auto r = go::status_rpc{std::string{go::status_topic}}.call_with(send, go::StatusRequest{});
  if (rc != exit_ok)
    return rc;
  if (!r)
    return fail(exit_daemon_error, grove::describe(r.error()));
  json j{{"phase", r->phase()},       {"current", r->current()},
         {"current_version", r->current_version()}, {"previous", r->previous()},
         {"target", r->target()},     {"version", r->version()},
         {"reason", r->reason()},     {"job_id", r->job_id()},
         {"attempts", r->attempts()}};
  if (opts.json) {
    std::cout << j.dump() << "\n";
  } else {
    for (auto& [k, v] : j.items())
      std::cout << k << ": " << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
  }
  return exit_ok;
}

/// `ml`: the ml_inference plugin's bus API (plugins/ml_inference/README.md).
int run_ml(connection& conn, const options& opts, const ml_options& mo) {
  namespace gml = grove::ml_inference;
  int rc = exit_ok;
  auto send = call_sender(conn, opts, rc);
  if (mo.verb == "models") {
    auto r = gml::models_rpc{std::string{gml::models_topic}}.call_with(send,
                                                                        grove::ml::ModelsRequest{});
    if (rc != exit_ok)
      return rc;
    if (!r)
      return fail(exit_daemon_error, grove::describe(r.error()));
    static const char* states[] = {"loading", "serving", "failed"};
    json all = json::array();
    for (const auto& m : r->models()) {
      json inputs = json::array();
      for (const auto& in : m.inputs())
        inputs.push_back({{"name", in.name()}, {"dtype", ml_dtype(in.dtype())},
                          {"shape", std::vector<int64_t>(in.shape().begin(), in.shape().end())}});
      json batches = json::object();
      for (const auto& [size, n] : m.batches())
        batches[std::to_string(size)] = n;
      all.push_back({{"id", m.id()}, {"state", states[m.state() % 3]}, {"loading", m.loading()},
                     {"version", m.version()},
                     {"sha256", m.sha256()}, {"error", m.error()}, {"backend", m.backend()},
                     {"inputs", inputs},
                     {"outputs", std::vector<std::string>(m.outputs().begin(), m.outputs().end())},
                     {"requests", m.requests()}, {"errors", m.errors()},
                     {"throttled", m.throttled()}, {"p50_us", m.p50_us()}, {"p99_us", m.p99_us()},
                     {"batches", batches}, {"threads", m.threads()},
                     {"queue_capacity", m.queue_capacity()}, {"model_bytes", m.model_bytes()}});
    }
    if (opts.json) {
      print_json(all);
      return exit_ok;
    }
    for (const auto& m : all) {
      std::string ins, outs, batches;
      for (const auto& in : m["inputs"])
        ins += (ins.empty() ? "" : ", ") + in["name"].get<std::string>() + " "
               + in["dtype"].get<std::string>() + " " + in["shape"].dump();
      for (const auto& o : m["outputs"])
        outs += (outs.empty() ? "" : ", ") + o.get<std::string>();
      for (const auto& [size, n] : m["batches"].items())
        batches += (batches.empty() ? "" : " ") + size + "=" + std::to_string(n.get<uint64_t>());
      std::printf("%s  %s  %s%s\n", m["id"].get<std::string>().c_str(),
                  m["state"].get<std::string>().c_str(), m["version"].get<std::string>().c_str(),
                  m["loading"].get<bool>() && m["state"] != "loading" ? "  (a new version loading)"
                                                                       : "");
      if (!m["error"].get<std::string>().empty())
        std::printf("  error: %s\n", m["error"].get<std::string>().c_str());
      if (m["state"] == "serving") {
        std::printf("  inputs: %s\n  outputs: %s\n", ins.c_str(), outs.c_str());
        std::printf("  requests %llu  errors %llu  throttled %llu  p50 %llu us  p99 %llu us  "
                    "batch size=calls %s\n",
                    static_cast<unsigned long long>(m["requests"].get<uint64_t>()),
                    static_cast<unsigned long long>(m["errors"].get<uint64_t>()),
                    static_cast<unsigned long long>(m["throttled"].get<uint64_t>()),
                    static_cast<unsigned long long>(m["p50_us"].get<uint64_t>()),
                    static_cast<unsigned long long>(m["p99_us"].get<uint64_t>()),
                    batches.empty() ? "-" : batches.c_str());
      }
    }
    return exit_ok;
  }
  std::string why;
  auto req = ml_request_of(mo.input, why);
  if (!req)
    return fail(exit_usage, why);
  req->set_top_k(mo.top_k);
  auto r = gml::infer_rpc{gml::infer_topic(mo.model)}.call_with(send, *req);
  if (rc != exit_ok)
    return rc;
  if (!r)
    return fail(exit_daemon_error, grove::describe(r.error()));
  json outputs = json::array();
  for (const auto& t : r->outputs())
    outputs.push_back({{"name", t.name()}, {"dtype", ml_dtype(t.dtype())},
                       {"shape", std::vector<int64_t>(t.shape().begin(), t.shape().end())},
                       {"data", gml::floats(t)}});
  json top = json::array();
  for (const auto& l : r->top())
    top.push_back({{"index", l.index()}, {"label", l.label()}, {"score", l.score()}});
  print_json({{"model", r->model()}, {"version", r->version()}, {"batch_size", r->batch_size()},
              {"outputs", outputs}, {"top", top}});
  return exit_ok;
}

/// What `components` was asked.
struct components_options {
  /// list, versions, describe, recipe, delete or guidance.
  std::string verb;
  /// The component (versions) or component version ARN.
  std::string arn;
  /// recipe: --format JSON or YAML.
  std::string format;
  /// guidance: ACTIVE, DISCONTINUED or DELETED, and --message.
  std::string guidance;
  std::string message;
  /// deployments create: the CreateDeployment JSON file.
  std::string file;
  /// The lists: one page of at most `max_results` rows after `next_token` (the answer's
  /// nextToken); neither: every page, the rows in one answer.
  int max_results = 0;
  std::string next_token;
};

/// --max and --next-token of a list: one page instead of every row.
void add_page_options(CLI::App* v, components_options& co) {
  v->add_option("--max", co.max_results, "One page of at most this many rows (1 to 100), "
                                         "with its nextToken (default: every row)");
  v->add_option("--next-token", co.next_token, "The page after this nextToken");
}

/// `components`: the deployment plugin's bus API (plugins/deployment/README.md). Prints
/// the AWS JSON the Greengrass v2 API answers (the recipe itself for `recipe`), or the
/// error (exit 1).
int run_components(connection& conn, const options& opts, const components_options& co) {
  namespace dp = grove::deployment;
  static const std::pair<const char*, const char*> operations[] = {
    {"list", "ListComponents"},        {"versions", "ListComponentVersions"},
    {"describe", "DescribeComponent"}, {"recipe", "GetComponent"},
    {"delete", "DeleteComponent"},     {"guidance", "SetVendorGuidance"},
    {"installed", "ListInstalledComponents"},
    {"deployments list", "ListDeployments"},
    {"deployments get", "GetDeployment"},
    {"deployments effective", "ListEffectiveDeployments"},
    {"deployments create", "CreateDeployment"},
    {"deployments cancel", "CancelDeployment"},
    {"deployments delete", "DeleteDeployment"}};
  std::string operation;
  for (auto [verb, op] : operations)
    if (co.verb == verb)
      operation = op;
  // The rows of each List operation; asked for neither a page size nor a page, grovectl
  // follows nextToken to the end (an operator wants every row, the API gives 100 a page).
  static const std::pair<const char*, const char*> rows_of[] = {
    {"ListComponents", "components"},
    {"ListComponentVersions", "componentVersions"},
    {"ListInstalledComponents", "installedComponents"},
    {"ListDeployments", "deployments"},
    {"ListEffectiveDeployments", "effectiveDeployments"}};
  std::string rows;
  for (auto [op, key] : rows_of)
    if (operation == op)
      rows = key;
  auto call = dp::make_call(operation, co.arn);
  call.set_recipe_output_format(co.format);
  call.set_vendor_guidance(co.guidance);
  call.set_message(co.message);
  call.set_max_results(co.max_results);
  call.set_next_token(co.next_token);
  if (!co.file.empty()) {
    std::ifstream in{co.file};
    if (!in)
      return fail(exit_usage, "cannot read " + co.file);
    call.set_body(std::string{std::istreambuf_iterator<char>{in}, {}});
  }
  bool every_page = !rows.empty() && co.max_results == 0 && co.next_token.empty();
  json all; // every page's rows, when every_page
  std::set<std::string> tokens_seen;
  for (;;) {
    int rc = exit_ok;
    auto send = call_sender(conn, opts, rc);
    auto answer = dp::components_rpc{std::string{dp::components_topic}}.call_with(send, call);
    if (rc != exit_ok)
      return rc;
    if (!answer)
      return fail(exit_daemon_error, grove::describe(answer.error()));
    if (answer->status() >= 400) {
      auto body = json::parse(answer->body(), nullptr, false);
      auto text = body.is_object() && body.contains("message") && body["message"].is_string()
                    ? body["message"].get<std::string>()
                    : answer->body();
      return fail(exit_daemon_error, answer->error_type() + ": " + text);
    }
    if (answer->status() == 204)
      return exit_ok;
    auto line = answer->body();
    if (every_page) {
      auto page = json::parse(line, nullptr, false);
      if (!page.is_object() || !page.contains(rows) || !page[rows].is_array())
        return fail(exit_daemon_error, "the answer has no " + rows + ": " + line);
      if (all.is_null())
        all = page;
      else
        for (auto& row : page[rows])
          all[rows].push_back(std::move(row));
      auto next = page.value("nextToken", "");
      all.erase("nextToken");
      if (!next.empty()) {
        if (!tokens_seen.insert(next).second) // an API that pages in a circle
          return fail(exit_daemon_error, "the same nextToken twice: " + next);
        call.set_next_token(next);
        continue;
      }
      line = all.dump();
    }
    if (line.empty() || line.back() != '\n')
      line += '\n';
    std::fwrite(line.data(), 1, line.size(), stdout);
    return exit_ok;
  }
}

/// `sub`: streams matching messages until Ctrl-C, `count` messages or hang-up.
int run_sub(connection& conn, const options& opts, const std::string& filter,
            uint64_t count) {
  if (!install_interrupt_handler())
    return fail(exit_daemon_error, std::string{"cannot handle signals: "}
                                     + std::strerror(errno));
  grove::control::Request req;
  req.mutable_subscribe()->set_filter(filter);
  if (auto rc = conn.send(req))
    return rc;
  bool acked = false;
  uint64_t received = 0;
  pollfd fds[2] = {{conn.fd(), POLLIN, 0}, {interrupt_pipe[0], POLLIN, 0}};
  while (count == 0 || received < count) {
    fds[0].revents = fds[1].revents = 0;
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      return fail(exit_daemon_error, std::string{"poll: "} + std::strerror(errno));
    }
    if (fds[1].revents != 0)
      return exit_ok; // Ctrl-C: a normal way to end a subscription
    grove::control::Response res;
    if (auto rc = conn.receive(res))
      return rc;
    if (!res.ok())
      return fail(exit_daemon_error, res.error().empty() ? "subscribe failed"
                                                         : res.error());
    if (res.has_message_out()) {
      const auto& msg = res.message_out();
      if (opts.json) {
        print_json(to_json(msg));
      } else {
        // fwrite: a UTF-8 payload may contain NUL bytes.
        auto line = msg.topic() + ' ' + shown(msg) + '\n';
        std::fwrite(line.data(), 1, line.size(), stdout);
        std::fflush(stdout);
      }
      ++received;
    } else if (!acked) {
      acked = true; // "subscribed to <filter>"
    } else if (!res.message().empty()) {
      // e.g. "dropped N messages: subscriber queue full"
      std::fprintf(stderr, "grovectl: %s\n", res.message().c_str());
    }
  }
  return exit_ok;
}

/// Sends `msg` as a request through groved (the `call` path): the transport of the
/// typed clients (grove::function_runtime).
caf::expected<grove::Envelope> request_through(connection& conn, const options& opts,
                                               grove::Envelope msg) {
  grove::control::Request req;
  *req.mutable_call()->mutable_msg() = std::move(msg);
  if (opts.timeout > 1)
    req.mutable_call()->set_timeout_ms((opts.timeout - 1) * 1000);
  int rc = exit_ok;
  return call_daemon(conn, req, rc);
}

/// `functions`: each function of function_runtime with its instances and counters.
int run_functions(connection& conn, const options& opts) {
  auto list = grove::function_runtime::list(
    [&](grove::Envelope e) { return request_through(conn, opts, std::move(e)); });
  if (!list)
    return fail(exit_daemon_error, grove::describe(list.error()));
  if (opts.json) {
    for (const auto& f : list->functions())
      print_json({{"name", f.name()}, {"valid", f.valid()}, {"pinned", f.pinned()},
                  {"instances", f.instances()}, {"busy", f.busy()}, {"queued", f.queued()},
                  {"sent_ahead", f.sent_ahead()},
                  {"max_instances", f.max_instances()}, {"max_queue", f.max_queue()},
                  {"invocations", f.invocations()}, {"errors", f.errors()},
                  {"timeouts", f.timeouts()}, {"refused", f.refused()},
                  {"memory_hwm_kb", f.memory_hwm_kb()},
                  {"output_lines_dropped", f.output_lines_dropped()},
                  {"last_error", f.last_error()}, {"log_file", f.log_file()}});
    return exit_ok;
  }
  std::printf("%-20s %-9s %9s %9s %11s %7s %8s %7s %9s %8s  %s\n", "NAME", "KIND",
              "INSTANCES", "QUEUED", "INVOCATIONS", "ERRORS", "TIMEOUTS", "REFUSED", "MEM_HWM",
              "DROPPED", "LAST ERROR");
  for (const auto& f : list->functions()) {
    auto inst = std::to_string(f.instances()) + "/" + std::to_string(f.max_instances());
    auto queue = std::to_string(f.queued()) + "/" + std::to_string(f.max_queue());
    auto mem = std::to_string(f.memory_hwm_kb()) + "kB";
    std::printf("%-20s %-9s %9s %9s %11llu %7llu %8llu %7llu %9s %8llu  %s\n", f.name().c_str(),
                !f.valid() ? "invalid" : f.pinned() ? "pinned" : "on-demand", inst.c_str(),
                queue.c_str(), static_cast<unsigned long long>(f.invocations()),
                static_cast<unsigned long long>(f.errors()),
                static_cast<unsigned long long>(f.timeouts()),
                static_cast<unsigned long long>(f.refused()), mem.c_str(),
                static_cast<unsigned long long>(f.output_lines_dropped()),
                f.last_error().c_str());
  }
  return exit_ok;
}

/// `invoke`: runs a function with a payload; prints its reply, exit 1 with the error.
int run_invoke(connection& conn, const options& opts, const std::string& name,
               const std::string& payload, bool event) {
  if (event) {
    // An event has no reply, and the runtime's own subscription takes every one: the
    // function list says whether NAME would run it.
    auto list = grove::function_runtime::list(
      [&](grove::Envelope e) { return request_through(conn, opts, std::move(e)); });
    if (!list)
      return fail(exit_daemon_error, grove::describe(list.error()));
    auto& fns = list->functions();
    if (std::none_of(fns.begin(), fns.end(),
                     [&](const auto& f) { return f.name() == name && f.valid(); }))
      return fail(exit_daemon_error, "no_route: no function '" + name
                                       + "' in the group to take the event");
    message_options mo;
    return run_pub(conn, opts, std::string{grove::function_runtime::event_prefix} + name,
                   payload, mo);
  }
  auto reply = request_through(conn, opts, grove::function_runtime::make_invoke(name, payload));
  if (!reply)
    return fail(exit_daemon_error, grove::describe(reply.error()));
  auto line = shown(*reply) + '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
  return exit_ok;
}

/// `logs`: prints a function's log (the path comes from function_runtime); with
/// `follow`, goes on printing what is appended until Ctrl-C.
int run_logs(connection& conn, const options& opts, const std::string& name, bool follow) {
  auto list = grove::function_runtime::list(
    [&](grove::Envelope e) { return request_through(conn, opts, std::move(e)); });
  if (!list)
    return fail(exit_daemon_error, grove::describe(list.error()));
  std::string path;
  for (const auto& f : list->functions())
    if (f.name() == name)
      path = f.log_file();
  if (path.empty())
    return fail(exit_daemon_error, "no function '" + name + "'");
  if (follow && !install_interrupt_handler())
    return fail(exit_daemon_error, "cannot handle signals");
  off_t offset = 0;
  for (;;) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      struct stat st{};
      if (::fstat(fd, &st) == 0 && st.st_size < offset)
        offset = 0; // rotated: the new file starts over
      char buf[65536];
      ssize_t n;
      while ((n = ::pread(fd, buf, sizeof buf, offset)) > 0) {
        std::fwrite(buf, 1, static_cast<size_t>(n), stdout);
        offset += n;
      }
      ::close(fd);
      std::fflush(stdout);
    } else if (!follow) {
      return fail(exit_daemon_error, "cannot read " + path + ": " + std::strerror(errno));
    }
    if (!follow)
      return exit_ok;
    pollfd p{interrupt_pipe[0], POLLIN, 0};
    if (::poll(&p, 1, 250) > 0)
      return exit_ok; // Ctrl-C
  }
}

/// Parses the command line and runs one command; returns the exit code.
int run(int argc, char** argv) {
  CLI::App app{"grovectl: operate a running groved over its control socket.\n"
               "Exit codes: 0 ok, 1 error reply from groved, 2 usage error, "
               "3 groved not running/unreachable.",
               "grovectl"};
  app.set_version_flag("--version", GROVE_VERSION);
  // Global options may also follow the subcommand: `grovectl status --json`.
  app.fallthrough();
  app.require_subcommand(1);
  options opts;
  app.add_option("--socket", opts.socket,
                 "Control socket (default: $GROVE_CONTROL_SOCKET, else "
                 "${GROVE_WRITE_DIR:-./var}/run/control.sock)");
  app.add_flag("--json", opts.json, "Print JSON (one object per line for sub)");
  app.add_option("--timeout", opts.timeout,
                 "Seconds to wait for a reply, 0 = forever (not for sub)")
    ->capture_default_str();

  auto* status = app.add_subcommand("status", "Show daemon, bus and plugin status");
  auto* plugins = app.add_subcommand("plugins", "List plugins");

  std::string name;
  auto* load = app.add_subcommand("load", "Load and start a plugin");
  load->add_option("NAME", name, "Plugin name")->required();
  auto* unload = app.add_subcommand("unload", "Stop and unload a plugin");
  unload->add_option("NAME", name, "Plugin name")->required();

  std::string reload_path;
  auto* reload = app.add_subcommand("reload", "Hot-reload a plugin");
  reload->add_option("NAME", name, "Plugin name")->required();
  reload->add_option("--path", reload_path, "Load the new version from this .so");

  std::string topic;
  std::string payload;
  message_options mo;
  auto* pub = app.add_subcommand(
    "pub", "Publish one message; prints how many subscribers got it or dropped it "
           "(on $grove/mm/in/<subject>: where message_manager routed it); exit 1 when "
           "nothing was delivered");
  pub->add_option("TOPIC", topic, "Topic name")->required();
  pub->add_option("PAYLOAD", payload, "Payload (UTF-8 text)")->required();
  pub->add_option("--content-type", mo.content_type,
                  "Content type (default: application/json if PAYLOAD is JSON, "
                  "else text/plain; charset=utf-8)");
  pub->add_option("--source", mo.source,
                  "Publish on behalf of an endpoint, e.g. function:brain (default: grovectl)");
  pub->add_option("--qos", mo.qos, "QoS of the message: 0 or 1 (Grove's local QoS)")
    ->check(CLI::Range(0, 1));
  pub->add_option("--user-property", mo.user_properties,
                  "NAME=VALUE, repeatable: an MQTT 5 user property (kept on the way to "
                  "devices through message_manager)")
    ->check(CLI::Validator(
      [](std::string& kv) {
        auto eq = kv.find('=');
        return eq == std::string::npos || eq == 0 ? std::string{"expected NAME=VALUE"}
                                                  : std::string{};
      },
      "NAME=VALUE"));

  auto* call = app.add_subcommand(
    "call", "Send a request to the plugin serving TOPIC; prints the reply's payload "
            "(binary as base64:...), exit 1 with the error otherwise");
  call->add_option("TOPIC", topic, "Topic name")->required();
  call->add_option("PAYLOAD", payload, "Payload (UTF-8 text)")->required();
  call->add_option("--content-type", mo.content_type,
                   "Content type (default: as for pub)");
  call->add_option("--source", mo.source,
                   "Ask on behalf of an endpoint, e.g. function:brain (default: grovectl)");

  std::string filter;
  uint64_t count = 0;
  auto* sub = app.add_subcommand(
    "sub", "Print messages matching FILTER as `topic payload` lines (binary payloads "
           "as base64:...) until Ctrl-C");
  sub->add_option("FILTER", filter, "Topic filter (MQTT wildcards + and #)")
    ->required();
  sub->add_option("--count,-n", count, "Exit after this many messages");

  auto* functions = app.add_subcommand(
    "functions", "List function_runtime's functions: kind, instances, queue, invocations, "
                 "errors, timeouts, refused work, memory high-water mark, last error");
  bool event = false;
  auto* invoke = app.add_subcommand(
    "invoke", "Invoke function NAME; prints its reply, exit 1 with the error");
  invoke->add_option("NAME", name, "Function name")->required();
  invoke->add_option("--payload", payload, "Payload (default: {})");
  invoke->add_flag("--event", event, "Queue it as an event: no reply awaited");
  bool follow = false;
  auto* logs = app.add_subcommand("logs", "Print a function's log");
  logs->add_option("NAME", name, "Function name")->required();
  logs->add_flag("-f,--follow", follow, "Keep printing what is appended, until Ctrl-C");
  shadow_options so;
  auto* shadow = app.add_subcommand(
    "shadow", "Get, update, delete or list a thing's shadows (the shadow plugin's bus "
              "API); prints the AWS JSON document, exit 1 when rejected");
  shadow->require_subcommand(1);
  for (auto [verb, help] : {std::pair{"get", "Print a shadow's document"},
                            std::pair{"update", "Apply a partial update, e.g. "
                                                "'{\"state\":{\"desired\":{\"on\":true}}}'"},
                            std::pair{"delete", "Delete a shadow"},
                            std::pair{"list", "List the named shadows of THING"}}) {
    auto* v = shadow->add_subcommand(verb, help);
    v->add_option("THING", so.thing, "Thing name")->required();
    std::string_view vv{verb};
    if (vv == "list") {
      v->add_option("--page-size", so.page_size, "Names per page (default 25, at most 100)");
      v->add_option("--next-token", so.next_token, "The previous page's nextToken");
    } else {
      v->add_option("--name", so.name, "Named shadow (default: the classic shadow)");
      v->add_option("DOCUMENT", so.document, "Request document (JSON)")
        ->required(vv == "update");
    }
    v->callback([&so, verb = verb] { so.verb = verb; });
  }

  components_options co;
  auto* components = app.add_subcommand(
    "components", "List, describe, print, delete the components of the deployment plugin's "
                  "store, or set a version's vendor guidance; prints the Greengrass v2 API's "
                  "JSON, exit 1 on an error");
  components->require_subcommand(1);
  for (auto [verb, help] :
       {std::pair{"list", "List components with their newest version"},
        std::pair{"versions", "List the versions of component ARN, newest first"},
        std::pair{"describe", "Describe component version ARN"},
        std::pair{"recipe", "Print the recipe of component version ARN"},
        std::pair{"delete", "Delete component version ARN"},
        std::pair{"guidance", "Set the vendorGuidance of component version ARN: ACTIVE, "
                              "DISCONTINUED or DELETED (never resolved)"}}) {
    auto* v = components->add_subcommand(verb, help);
    std::string_view vv{verb};
    if (vv != "list")
      v->add_option("ARN", co.arn, "Component (versions) or component version ARN")->required();
    if (vv == "recipe")
      v->add_option("--format", co.format, "JSON or YAML (default YAML)");
    if (vv == "list" || vv == "versions")
      add_page_options(v, co);
    if (vv == "guidance") {
      v->add_option("STATE", co.guidance, "ACTIVE, DISCONTINUED or DELETED")->required();
      v->add_option("--message", co.message, "vendorGuidanceMessage");
    }
    v->callback([&co, verb = verb] { co.verb = verb; });
  }
  auto* installed = components->add_subcommand(
    "installed", "List this core's installed components: version, lifecycleState and the "
                 "last error (lifecycleStateDetails)");
  add_page_options(installed, co);
  installed->callback([&co] { co.verb = "installed"; });
  auto* deployments = app.add_subcommand(
    "deployments", "The deployment plugin's deployments of this core (Greengrass v2's JSON; "
                   "exit 1 on an error)");
  deployments->require_subcommand(1);
  for (auto [verb, help] :
       {std::pair{"list", "List every deployment, newest first"},
        std::pair{"get", "Show deployment ID, with this core's execution of it "
                         "(coreDeviceExecutionStatus, and the reason it failed)"},
        std::pair{"effective", "List this core's executions of its deployments: "
                               "coreDeviceExecutionStatus and reason (ListEffectiveDeployments)"},
        std::pair{"create", "Create a deployment from --file (CreateDeployment's JSON; "
                            "targetArn defaults to this core's thing)"},
        std::pair{"cancel", "Cancel the ACTIVE deployment ID"},
        std::pair{"delete", "Delete deployment ID (cancel an ACTIVE one first)"}}) {
    auto* v = deployments->add_subcommand(verb, help);
    std::string_view vv{verb};
    if (vv == "get" || vv == "cancel" || vv == "delete")
      v->add_option("ID", co.arn, "The deployment id")->required();
    if (vv == "create")
      v->add_option("--file", co.file, "CreateDeployment's JSON body")->required();
    if (vv == "list" || vv == "effective")
      add_page_options(v, co);
    v->callback([&co, verb = verb] { co.verb = std::string{"deployments "} + verb; });
  }

  ml_options mlo;
  auto* mlcmd = app.add_subcommand(
    "ml", "The ml_inference plugin's models and inference (prints JSON for infer; exit 1 "
          "with the error)");
  mlcmd->require_subcommand(1);
  auto* ml_models = mlcmd->add_subcommand(
    "models", "List the group's models: state, version, inputs, outputs, requests, "
              "errors, throttled, p50/p99 latency, batch sizes");
  ml_models->callback([&mlo] { mlo.verb = "models"; });
  auto* ml_infer = mlcmd->add_subcommand(
    "infer", "Run MODEL on --input FILE: a .json file {\"inputs\": [{\"name\", \"dtype\", "
             "\"shape\", \"data\"}]} or an encoded image (PNG, JPEG...)");
  ml_infer->add_option("MODEL", mlo.model, "The model's resource id")->required();
  ml_infer->add_option("--input", mlo.input, "The input file")->required();
  ml_infer->add_option("--top-k", mlo.top_k, "Labels to return (default: the model's top_k)");
  ml_infer->callback([&mlo] { mlo.verb = "infer"; });

  std::string ota_verb, ota_bundle;
  bool ota_downgrade = false;
  auto* otacmd = app.add_subcommand(
    "ota", "The ota plugin: apply a signed update bundle (A/B, rolled back by the watchdog "
           "when unhealthy), or show the update journal");
  otacmd->require_subcommand(1);
  auto* ota_apply = otacmd->add_subcommand(
    "apply", "Verify, stage and switch to BUNDLE (a file groved can read); groved then "
             "restarts into it. Exit 1 with the reason when refused");
  ota_apply->add_option("BUNDLE", ota_bundle, "The bundle (grove-ota bundle)")->required();
  ota_apply->add_flag("--allow-downgrade", ota_downgrade, "Accept an older version");
  ota_apply->callback([&ota_verb] { ota_verb = "apply"; });
  otacmd->add_subcommand("status", "The journal: phase, current, previous, reason")
    ->callback([&ota_verb] { ota_verb = "status"; });

  for (auto* cmd : app.get_subcommands([](CLI::App*) { return true; }))
    cmd->footer("Global options (--socket, --json, --timeout) may also follow the "
                "subcommand.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    auto rc = app.exit(e);
    return rc == 0 ? exit_ok : exit_usage;
  }

  // The server checks names too (and is the check that counts); refusing here gives
  // a usage error without a daemon.
  for (auto* cmd : {load, unload, reload})
    if (cmd->parsed())
      if (auto err = grove::validate_plugin_name(name))
        return fail(exit_usage, grove::describe(err));

  auto path = socket_path(opts.socket);
  connection conn;
  if (auto rc = conn.open(path))
    return rc;
  if (!sub->parsed() && !(logs->parsed() && follow) && opts.timeout > 0)
    conn.set_timeout(opts.timeout);

  if (status->parsed())
    return run_status(conn, opts);
  if (plugins->parsed())
    return run_plugins(conn, opts);
  grove::control::Request req;
  if (load->parsed()) {
    req.mutable_load()->set_name(name);
    return run_simple(conn, opts, req);
  }
  if (unload->parsed()) {
    req.mutable_unload()->set_name(name);
    return run_simple(conn, opts, req);
  }
  if (reload->parsed()) {
    req.mutable_reload()->set_name(name);
    if (!reload_path.empty()) {
      // groved resolves paths from its own working directory, not ours.
      std::error_code ec;
      auto abs = fs::absolute(reload_path, ec);
      req.mutable_reload()->set_path(ec ? reload_path : abs.string());
    }
    return run_simple(conn, opts, req);
  }
  if (pub->parsed())
    return run_pub(conn, opts, topic, payload, mo);
  if (sub->parsed())
    return run_sub(conn, opts, filter, count);
  if (call->parsed())
    return run_call(conn, opts, topic, payload, mo);
  if (functions->parsed())
    return run_functions(conn, opts);
  if (invoke->parsed())
    return run_invoke(conn, opts, name, payload.empty() ? "{}" : payload, event);
  if (logs->parsed())
    return run_logs(conn, opts, name, follow);
  if (shadow->parsed())
    return run_shadow(conn, opts, so);
  if (components->parsed() || deployments->parsed())
    return run_components(conn, opts, co);
  if (mlcmd->parsed())
    return run_ml(conn, opts, mlo);
  if (otacmd->parsed())
    return run_ota(conn, opts, ota_verb, ota_bundle, ota_downgrade);
  return fail(exit_usage, "no command given");
}

} // namespace

int main(int argc, char** argv) {
  // Nothing below should throw, but a CLI must never die with a terminate() trace.
  try {
    return run(argc, argv);
  } catch (const std::exception& ex) {
    return fail(exit_daemon_error, ex.what());
  } catch (...) {
    return fail(exit_daemon_error, "unexpected error");
  }
}
