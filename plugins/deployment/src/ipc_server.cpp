// Greengrass v2's IPC server for generic components (ipc_server.hpp).

#include "ipc_server.hpp"

#include "base64.hpp"
#include "eventstream.hpp"
#include "ipc_request.hpp"

#include <grove/errors.hpp>
#include <grove/file.hpp>
#include <grove/topic.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <spdlog/logger.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <thread>

namespace grove::deployment {

using json = nlohmann::json;
namespace es = eventstream;
using ipc::depth_of;
using ipc::max_depth;

namespace {

// Event-stream RPC's message types and flags (the `:message-type` and
// `:message-flags` headers).
enum : int32_t {
  msg_application = 0,
  msg_application_error = 1,
  msg_ping = 2,
  msg_ping_response = 3,
  msg_connect = 4,
  msg_connect_ack = 5,
  msg_protocol_error = 6,
};
constexpr int32_t flag_accepted = 1;
constexpr int32_t flag_terminate = 2;

// A connection's unsent bytes beyond this end it: a client that does not read.
constexpr size_t max_unsent = 16 << 20;

// Connections at once (more are closed at accept), and the time a client has to send an
// accepted connect: fds are not held by clients that never authenticate.
constexpr size_t max_connections = 256;
constexpr std::chrono::seconds connect_within{10};

const std::string gg = "aws.greengrass#";

using clock = std::chrono::steady_clock;

std::string hex(const unsigned char* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s.push_back(digits[p[i] >> 4]);
    s.push_back(digits[p[i] & 15]);
  }
  return s;
}

// Greengrass' resource match for authorization: the exact topic, `*` anywhere as any
// characters, or an MQTT filter (`+`, `#`) matching it.
bool glob(std::string_view pat, std::string_view s) {
  size_t p = 0, i = 0, star = std::string_view::npos, mark = 0;
  while (i < s.size()) {
    if (p < pat.size() && pat[p] == '*') {
      star = p++;
      mark = i;
    } else if (p < pat.size() && pat[p] == s[i]) {
      ++p;
      ++i;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      i = ++mark;
    } else {
      return false;
    }
  }
  while (p < pat.size() && pat[p] == '*')
    ++p;
  return p == pat.size();
}

bool resource_matches(const std::string& resource, const std::string& topic) {
  if (resource == topic || glob(resource, topic))
    return true;
  return !validate_filter(resource) && !validate_topic(topic) && topic_matches(resource, topic);
}

// Whether `config`'s accessControl lets its component do `op` on `resource` under
// `service` (aws.greengrass.ipc.pubsub): some policy lists the operation (or `*`) and
// the resource.
bool authorized(const json& config, const std::string& service, const std::string& op,
                const std::string& resource) {
  if (!config.is_object())
    return false;
  auto ac = config.find("accessControl");
  if (ac == config.end() || !ac->is_object())
    return false;
  auto policies = ac->find(service);
  if (policies == ac->end() || !policies->is_object())
    return false;
  for (const auto& [id, policy] : policies->items()) {
    if (!policy.is_object())
      continue;
    auto ops = policy.find("operations");
    auto res = policy.find("resources");
    if (ops == policy.end() || res == policy.end() || !ops->is_array() || !res->is_array())
      continue;
    bool op_ok = std::any_of(ops->begin(), ops->end(), [&](const json& o) {
      return o.is_string() && (o == "*" || o == op);
    });
    if (!op_ok)
      continue;
    for (const auto& r : *res)
      if (r.is_string() && resource_matches(r.get<std::string>(), resource))
        return true;
  }
  return false;
}

} // namespace

struct ipc_server::impl {
  enum class kind { topic, updates, validation, iotcore, configuration };

  struct stream {
    kind k;
    std::string filter;   // topic and iotcore streams
    bool others = false;  // RECEIVE_MESSAGES_FROM_OTHERS
    std::vector<std::string> key_path; // configuration streams (filter: the component)
  };

  struct conn {
    int fd = -1;
    std::string in, out;
    std::string component; // empty until the connect is accepted
    std::map<int32_t, stream> streams;
    bool closing = false;
    uint64_t serial = 0; // tells a reused fd's connection apart
  };

  // A pre_update round (DeferComponentUpdate answers awaited).
  struct update_round {
    std::string id;
    std::chrono::milliseconds timeout;
    std::set<std::string> waiting;
    int64_t recheck_ms = 0;
    std::vector<std::string> deferred;
    std::function<void(std::vector<std::string>)> done;
    uint64_t timer = 0;
  };

  // A validate round (SendConfigurationValidityReport answers awaited).
  struct validation_round {
    std::string id;
    std::set<std::string> waiting;
    std::function<void(std::optional<std::string>)> done;
    uint64_t timer = 0;
  };

  spdlog::logger& log;
  std::filesystem::path path;
  std::string key;
  int listen_fd = -1;
  int wake_fd = -1;
  std::thread thread;
  std::atomic<bool> stopping{false};

  mutable std::mutex mtx; // components, tokens, tasks, on_state
  std::map<std::string, json> components; // effective: base with the overlay merged
  // UpdateConfiguration's changes of each component (a merge patch over its base, the
  // running set's configuration) and their timestamps by key path; a component's
  // overlay goes when a deployment changes its base. Kept in `changes_file` (save()).
  std::map<std::string, json> bases, overlays;
  std::map<std::string, std::map<std::vector<std::string>, double>> stamps;
  std::filesystem::path changes_file;
  std::string saved; // what changes_file holds
  std::map<std::string, std::string> tokens; // token → component
  std::vector<std::function<void()>> tasks;
  std::function<void(const std::string&, const std::string&)> state_cb;
  std::function<void(const std::string&, std::string, std::string)> publish_cb;
  std::function<void(std::set<std::string>)> filters_cb;
  std::function<void(ipc_server::shadow_call, std::function<void(ipc_server::answer_data)>)>
    shadow_cb;
  std::function<void(std::string, std::string, std::function<void(ipc_server::answer_data)>)>
    iot_publish_cb;
  std::function<void(std::set<std::string>)> iot_filters_cb;
  std::function<void(ipc_server::control_call, std::function<void(ipc_server::answer_data)>)>
    control_cb;
  // The callbacks above are set from the plugin's thread and read on the server's: a
  // copy is taken under mtx and called outside it.
  template <class Callback>
  Callback copy_of(const Callback& cb) const {
    std::lock_guard guard{mtx};
    return cb;
  }
  std::set<std::string> iot_filters; // the server thread's: the last set reported
  std::set<std::string> filters; // the server thread's: the last set reported

  // The server thread's own.
  std::map<int, conn> conns;
  std::multimap<clock::time_point, std::pair<uint64_t, std::function<void()>>> timers;
  uint64_t next_timer = 1;
  uint64_t next_serial = 1;
  uint64_t refused_connections = 0;
  // Connects refused for their token: a window is open (the first was logged) and how
  // many more it has seen (note_refused_connect).
  static constexpr std::chrono::seconds refused_log_interval{60};
  bool refused_window = false;
  uint64_t refused_tokens = 0;
  std::vector<std::shared_ptr<update_round>> updates;
  std::vector<std::shared_ptr<validation_round>> validations;

  // Requests the plugin answers later (later()), not answered yet: a hot reload answers
  // them (detach()), as the plugin's answer would go to an instance that is gone.
  struct call {
    int fd;
    uint64_t serial;
    int32_t sid;
    std::string op;
  };
  std::map<uint64_t, call> in_flight;
  uint64_t next_call = 1;

  // What start() took over from an earlier instance (detach()).
  std::set<std::string> handed_filters, handed_iot_filters;
  size_t handed_connections = 0;

  impl(spdlog::logger& l) : log(l) {
  }

  ~impl() {
    stopping = true;
    wake();
    if (thread.joinable())
      thread.join();
    for (auto& [fd, c] : conns)
      ::close(fd);
    if (listen_fd >= 0) {
      ::close(listen_fd);
      std::error_code ec;
      std::filesystem::remove(path, ec);
    }
    if (wake_fd >= 0)
      ::close(wake_fd);
  }

  std::string token_for(const std::string& name) const {
    unsigned char mac[32];
    unsigned int len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<const unsigned char*>(name.data()), name.size(), mac, &len);
    return hex(mac, len);
  }

  void wake() {
    uint64_t one = 1;
    if (wake_fd >= 0)
      (void) !::write(wake_fd, &one, sizeof one);
  }

  void run_on_thread(std::function<void()> f) {
    {
      std::lock_guard guard{mtx};
      tasks.push_back(std::move(f));
    }
    wake();
  }

  uint64_t after(std::chrono::milliseconds d, std::function<void()> f) {
    auto id = next_timer++;
    timers.emplace(clock::now() + d, std::pair{id, std::move(f)});
    return id;
  }

  void cancel(uint64_t id) {
    for (auto it = timers.begin(); it != timers.end(); ++it)
      if (it->second.first == id) {
        timers.erase(it);
        return;
      }
  }

  // --- Writing -------------------------------------------------------------------------

  void send(conn& c, int32_t type, int32_t flags, int32_t stream_id, const std::string& shape,
            const json& payload) {
    es::message m;
    m.headers.push_back(es::header::i32(":message-type", type));
    m.headers.push_back(es::header::i32(":message-flags", flags));
    m.headers.push_back(es::header::i32(":stream-id", stream_id));
    if (!shape.empty()) {
      m.headers.push_back(es::header::str(":content-type", "application/json"));
      m.headers.push_back(es::header::str("service-model-type", shape));
    }
    if (!payload.is_null())
      m.payload = payload.dump();
    c.out += es::encode(m);
    if (c.out.size() > max_unsent) {
      log.warn("deployment: IPC: {} does not read its messages ({} bytes unsent): "
               "connection closed", c.component, c.out.size());
      c.closing = true;
      c.out.clear();
      return;
    }
    flush(c);
  }

  void flush(conn& c) {
    while (!c.out.empty()) {
      auto n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        c.out.erase(0, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
      c.closing = true;
      c.out.clear();
      return;
    }
  }

  void reply(conn& c, int32_t sid, const std::string& op, const json& body, bool terminate) {
    send(c, msg_application, terminate ? flag_terminate : 0, sid, gg + op + "Response", body);
  }

  void error(conn& c, int32_t sid, const std::string& shape, const std::string& message) {
    send(c, msg_application_error, flag_terminate, sid, gg + shape, {{"message", message}});
  }

  // Whether `c`'s component may do `operation` (aws.greengrass#...) of `service` on
  // `resource` (its accessControl); if not, the stream is answered UnauthorizedError.
  bool permitted(conn& c, int32_t sid, const std::string& service, const std::string& operation,
                 const std::string& resource) {
    if (authorized(config_of(c.component), service, operation, resource))
      return true;
    error(c, sid, "UnauthorizedError",
          "Principal " + c.component + " is not authorized to perform " + service + ":"
            + operation + " on resource " + resource);
    return false;
  }

  // --- Reading -------------------------------------------------------------------------

  void read(conn& c) {
    char buf[65536];
    for (;;) {
      auto n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        c.in.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        break;
      c.closing = true; // EOF or error
      break;
    }
    size_t at = 0;
    while (!c.closing) {
      es::message m;
      size_t used = 0;
      std::string why;
      auto st = es::decode(std::string_view{c.in}.substr(at), max_frame, m, used, why);
      if (st == es::decode_status::need_more)
        break;
      if (st == es::decode_status::invalid) {
        log.warn("deployment: IPC: a malformed frame from {}: {}: connection closed",
                 c.component.empty() ? "a client" : c.component, why);
        c.closing = true;
        break;
      }
      at += used;
      handle(c, m);
    }
    c.in.erase(0, at);
  }

  void protocol_error(conn& c, const std::string& why) {
    log.warn("deployment: IPC: {}: {}: connection closed",
             c.component.empty() ? "a client" : c.component, why);
    send(c, msg_protocol_error, 0, 0, "", json{{"message", why}});
    c.closing = true;
  }

  void handle(conn& c, const es::message& m) {
    auto type = m.int32_of(":message-type").value_or(-1);
    auto flags = m.int32_of(":message-flags").value_or(0);
    auto sid = m.int32_of(":stream-id").value_or(0);
    if (c.component.empty()) {
      if (type != msg_connect)
        return protocol_error(c, "the first message is not a connect");
      return connect(c, m);
    }
    switch (type) {
      case msg_ping:
        send(c, msg_ping_response, 0, 0, "", nullptr);
        return;
      case msg_ping_response:
        return;
      case msg_application:
        break;
      default:
        return protocol_error(c, "unexpected message type " + std::to_string(type));
    }
    if (sid <= 0)
      return protocol_error(c, "an application message on stream " + std::to_string(sid));
    if (auto s = c.streams.find(sid); s != c.streams.end()) {
      if (flags & flag_terminate) {
        c.streams.erase(s); // the client closed its subscription
        report_filters();
      }
      return;               // no operation here takes messages from the client's side
    }
    auto op = m.string_of("operation");
    if (!op)
      return protocol_error(c, "a new stream without an operation");
    if (flags & flag_terminate)
      return; // opened and closed at once: nothing to answer
    auto body = ipc::parse_body(m.payload);
    if (auto* no = std::get_if<ipc::refusal>(&body))
      return error(c, sid, no->shape, no->message);
    operation(c, sid, *op, std::get<json>(body));
  }

  void connect(conn& c, const es::message& m) {
    auto token = ipc::connect_token(m.payload);
    std::string name;
    {
      std::lock_guard guard{mtx};
      if (auto it = tokens.find(token); it != tokens.end() && !token.empty())
        name = it->second;
    }
    if (name.empty()) {
      note_refused_connect();
      send(c, msg_connect_ack, 0, 0, "", nullptr);
      c.closing = true;
      return;
    }
    c.component = name;
    send(c, msg_connect_ack, flag_accepted, 0, "", nullptr);
    log.info("deployment: IPC: {} connected", name);
  }

  // A connect with an unknown token: any local process may send them, so the log is not
  // one line each, for ever: the first is written and the rest are counted until the
  // window closes (as function_runtime's failed no-ack publishes).
  void note_refused_connect() {
    if (refused_window) {
      ++refused_tokens;
      return;
    }
    log.warn("deployment: IPC: a connect with an unknown token refused");
    refused_window = true;
    close_refused_window();
  }

  // At the end of the window: the count it held (another window follows), or none (the
  // next refusal is written again).
  void close_refused_window() {
    after(refused_log_interval, [this] {
      if (refused_tokens == 0) {
        refused_window = false;
        return;
      }
      log.warn("deployment: IPC: {} more connects with an unknown token refused in the last "
               "{} s", refused_tokens, refused_log_interval.count());
      refused_tokens = 0;
      close_refused_window();
    });
  }

  json config_of(const std::string& name, bool* found = nullptr) {
    std::lock_guard guard{mtx};
    auto it = components.find(name);
    if (found)
      *found = it != components.end();
    return it == components.end() ? json::object() : it->second;
  }

  // --- Operations ----------------------------------------------------------------------

  void operation(conn& c, int32_t sid, const std::string& full, const json& req) {
    // The request's fields are read and checked by ipc::parse_operation (pure, fuzzed);
    // what is left here needs the server: authorization, configurations, rounds.
    auto parsed = ipc::parse_operation(full, req);
    if (auto* no = std::get_if<ipc::refusal>(&parsed))
      return error(c, sid, no->shape, no->message);
    auto op = full.substr(gg.size());
    if (auto* r = std::get_if<ipc::publish_to_topic>(&parsed)) {
      const auto& topic = r->topic;
      if (!permitted(c, sid, "aws.greengrass.ipc.pubsub", full, topic))
        return;
      if (r->bad_message)
        return error(c, sid, r->bad_message->shape, r->bad_message->message);
      const auto& event = r->event;
      reply(c, sid, op, json::object(), true);
      publish(c.component, topic, event);
      auto f = copy_of(publish_cb);
      if (!f || topic.starts_with("$"))
        return; // `$` topics are the kernel's and Grove's own: local only
      if (event.contains("jsonMessage"))
        f(topic, event["jsonMessage"]["message"].dump(), "application/json");
      else if (std::string bytes;
               base64_decode(event["binaryMessage"]["message"].get<std::string>(), bytes))
        f(topic, std::move(bytes), "application/octet-stream");
      return;
    }
    if (auto* r = std::get_if<ipc::subscribe_to_topic>(&parsed)) {
      if (!permitted(c, sid, "aws.greengrass.ipc.pubsub", full, r->topic))
        return;
      c.streams[sid] = {kind::topic, r->topic, r->others_only};
      reply(c, sid, op, {{"topicName", r->topic}}, false);
      report_filters();
      return;
    }
    if (auto* r = std::get_if<ipc::get_configuration>(&parsed)) {
      auto name = r->component.empty() ? c.component : r->component;
      bool found = false;
      auto cfg = config_of(name, &found);
      if (!found)
        return error(c, sid, "ResourceNotFoundError", "no component " + name);
      const json* at = &cfg;
      std::string last;
      if (r->key_path.is_array())
        for (const auto& k : r->key_path) {
          if (!k.is_string() || !at->is_object() || !at->contains(k.get<std::string>()))
            return error(c, sid, "ResourceNotFoundError",
                         "key not found: " + (k.is_string() ? k.get<std::string>() : k.dump()));
          last = k.get<std::string>();
          at = &(*at)[last];
        }
      // Greengrass answers a leaf as {its key: its value}.
      json value = at->is_object() ? *at : json{{last, *at}};
      reply(c, sid, op, {{"componentName", name}, {"value", value}}, true);
      return;
    }
    if (auto* r = std::get_if<ipc::update_state>(&parsed)) {
      reply(c, sid, op, json::object(), true);
      auto f = copy_of(state_cb);
      if (f)
        f(c.component, r->state);
      return;
    }
    if (auto* r = std::get_if<ipc::subscription>(&parsed)) {
      auto k = r->op == "SubscribeToComponentUpdates" ? kind::updates : kind::validation;
      c.streams[sid] = {k, {}, false};
      reply(c, sid, op, json::object(), false);
      return;
    }
    if (auto* r = std::get_if<ipc::defer_component_update>(&parsed)) {
      const auto& id = r->deployment_id;
      auto recheck = r->recheck_ms;
      for (auto& round : updates)
        if (round->id == id && round->waiting.erase(c.component)) {
          reply(c, sid, op, json::object(), true);
          if (recheck > 0) {
            round->recheck_ms = std::max(round->recheck_ms, recheck);
            const auto& msg = r->message;
            round->deferred.push_back(c.component + (msg.empty() ? "" : ": " + msg));
            log.info("deployment: IPC: {} defers deployment {} by {} ms{}{}", c.component,
                     id, recheck, msg.empty() ? "" : ": ", msg);
          }
          if (round->waiting.empty())
            finish_update(round);
          return;
        }
      return error(c, sid, "InvalidArgumentsError",
                   "no update of deployment " + id + " waits for " + c.component);
    }
    if (auto* r = std::get_if<ipc::validity_report>(&parsed)) {
      const auto& id = r->deployment_id;
      const auto& status = r->status;
      const auto& message = r->message;
      for (auto it = validations.begin(); it != validations.end(); ++it) {
        auto round = *it;
        if (round->id != id || !round->waiting.erase(c.component))
          continue;
        reply(c, sid, op, json::object(), true);
        log.info("deployment: IPC: {} reports its configuration for {} {}{}{}", c.component,
                 id, status, message.empty() ? "" : ": ", message);
        if (status == "REJECTED")
          finish_validation(round, c.component + " rejected its configuration: " +
                                     (message.empty() ? "(no message)" : message));
        else if (round->waiting.empty())
          finish_validation(round, std::nullopt);
        return;
      }
      return error(c, sid, "InvalidArgumentsError",
                   "no validation of deployment " + id + " waits for " + c.component);
    }
    if (auto* r = std::get_if<ipc::shadow_request>(&parsed))
      return shadow(c, sid, std::move(*r));
    if (auto* r = std::get_if<ipc::iotcore_request>(&parsed))
      return iotcore(c, sid, op, std::move(*r));
    if (auto* r = std::get_if<ipc::subscribe_to_configuration>(&parsed)) {
      auto name = r->component.empty() ? c.component : r->component;
      bool found = false;
      config_of(name, &found);
      if (!found)
        return error(c, sid, "ResourceNotFoundError", "no component " + name);
      stream st{kind::configuration, name, false};
      st.key_path = std::move(r->key_path);
      c.streams[sid] = std::move(st);
      reply(c, sid, op, json::object(), false);
      return;
    }
    if (auto* r = std::get_if<ipc::update_configuration>(&parsed))
      return update_configuration(c, sid, op, std::move(*r));
    if (auto* r = std::get_if<ipc::component_control>(&parsed)) {
      // Greengrass' resources: the target component's name (or `*`).
      if (!permitted(c, sid, "aws.greengrass.ipc.lifecycle", full, r->component))
        return;
      auto f = copy_of(control_cb);
      if (!f)
        return error(c, sid, "ServiceError", "no component control on this core");
      f({r->pause, std::move(r->component)}, later(c, sid, op));
      return;
    }
  }

  // Shadow operations: authorized here by the component's
  // accessControl."aws.greengrass.ShadowManager", answered by the shadow plugin through
  // the plugin (shadow_cb), on this thread when its reply comes.
  void shadow(conn& c, int32_t sid, ipc::shadow_request r) {
    auto op = r.op;
    ipc_server::shadow_call call{std::move(r.op),      std::move(r.thing),
                                 std::move(r.name),    std::move(r.payload),
                                 r.page_size,          std::move(r.next_token)};
    // Greengrass' resources: the classic shadow (and a thing's list of named shadows)
    // `$aws/things/<thing>/shadow`, a named one `.../shadow/name/<name>`.
    auto resource = "$aws/things/" + call.thing + "/shadow" +
                    (call.name.empty() ? "" : "/name/" + call.name);
    if (!permitted(c, sid, "aws.greengrass.ShadowManager", gg + op, resource))
      return;
    auto f = copy_of(shadow_cb);
    if (!f)
      return error(c, sid, "ServiceError", "no shadow service on this core");
    f(std::move(call), later(c, sid, op));
  }

  // The function that answers operation `op` on `c`'s stream `sid` when the plugin's
  // answer comes, from another thread, maybe after the connection is gone (or its fd
  // reused): it is sent only to the same connection, by fd and serial.
  std::function<void(ipc_server::answer_data)> later(conn& c, int32_t sid, const std::string& op) {
    auto id = next_call++;
    in_flight[id] = {c.fd, c.serial, sid, op};
    return [this, id, fd = c.fd, serial = c.serial, sid, op](ipc_server::answer_data a) {
      run_on_thread([this, id, fd, serial, sid, op, a = std::move(a)] {
        if (in_flight.erase(id) == 0)
          return; // answered already (a hot reload's detach())
        auto it = conns.find(fd);
        if (it == conns.end() || it->second.serial != serial || it->second.closing)
          return;
        if (a.error.empty()) {
          auto body = a.body;
          if (a.payload)
            body["payload"] = base64_encode(*a.payload);
          reply(it->second, sid, op, body, true);
        } else {
          error(it->second, sid, a.error, a.message);
        }
      });
    };
  }

  // The changes, each with the base it was made over (a deployment that changed the base
  // while groved was down drops them at the first set_components) and its timestamps.
  json changes_document() const {
    json doc = json::object();
    for (const auto& [name, overlay] : overlays) {
      json ts = json::array();
      if (auto st = stamps.find(name); st != stamps.end())
        for (const auto& [kp, when] : st->second)
          ts.push_back(json{{"keyPath", kp}, {"timestamp", when}});
      auto b = bases.find(name);
      doc[name] = {{"base", b != bases.end() ? b->second : json::object()},
                   {"overlay", overlay},
                   {"timestamps", std::move(ts)}};
    }
    return doc;
  }

  // Writes the changes when they differ from the file's (under mtx): an UpdateConfiguration
  // is answered once it survives a crash. False (logged) when the file cannot be written.
  bool save() {
    if (changes_file.empty())
      return true;
    auto text = changes_document().dump();
    if (text == saved)
      return true;
    if (auto err = grove::write_file_atomically(changes_file, text, {.mode = 0600})) {
      log.error("deployment: IPC: cannot keep the configuration changes: {}",
                grove::describe(err));
      return false;
    }
    saved = std::move(text);
    return true;
  }

  // Reads what save() wrote (before the thread starts); a file that is not such a
  // document is logged and set aside, its changes lost, the server starts.
  void load() {
    std::ifstream f{changes_file, std::ios::binary};
    if (!f)
      return;
    std::string text{std::istreambuf_iterator<char>{f}, {}};
    auto doc = json::parse(text, nullptr, false);
    auto fine = doc.is_object();
    for (auto it = doc.begin(); fine && it != doc.end(); ++it) {
      const auto& c = it.value();
      fine = c.is_object() && c.contains("base") && c["base"].is_object()
             && c.contains("overlay") && c["overlay"].is_object() && c.contains("timestamps")
             && c["timestamps"].is_array();
      for (size_t i = 0; fine && i < c["timestamps"].size(); ++i) {
        const auto& t = c["timestamps"][i];
        fine = t.is_object() && t.contains("keyPath") && t["keyPath"].is_array()
               && t.contains("timestamp") && t["timestamp"].is_number();
        for (size_t k = 0; fine && k < t["keyPath"].size(); ++k)
          fine = t["keyPath"][k].is_string();
      }
    }
    if (!fine) {
      auto aside = changes_file;
      aside += ".bad";
      std::error_code ec;
      std::filesystem::rename(changes_file, aside, ec);
      log.error("deployment: IPC: {} is not a document of configuration changes; set aside "
                "as {}, the changes it held are lost", changes_file.string(), aside.string());
      return;
    }
    for (auto it = doc.begin(); it != doc.end(); ++it) {
      auto& c = it.value();
      bases[it.key()] = c["base"];
      overlays[it.key()] = c["overlay"];
      auto eff = c["base"];
      eff.merge_patch(c["overlay"]);
      components[it.key()] = std::move(eff);
      auto& mine = stamps[it.key()];
      for (const auto& t : c["timestamps"])
        mine[t["keyPath"].get<std::vector<std::string>>()] = t["timestamp"].get<double>();
    }
    saved = std::move(text);
  }

  // UpdateConfiguration: `valueToMerge` merged at `keyPath` into the caller's own
  // configuration (kept as its overlay), refused when a later timestamp changed that key
  // (or one above it) already; subscribers hear of each changed key.
  void update_configuration(conn& c, int32_t sid, const std::string& op,
                            ipc::update_configuration r) {
    const auto& kp = r.key_path;
    double when = r.timestamp;
    std::lock_guard guard{mtx};
    auto& mine = stamps[c.component];
    for (size_t n = 0; n <= kp.size(); ++n) {
      std::vector<std::string> above(kp.begin(), kp.begin() + static_cast<ptrdiff_t>(n));
      if (auto it = mine.find(above); it != mine.end() && it->second > when)
        return error(c, sid, "FailedUpdateConditionCheckError",
                     "the key was updated at a later timestamp");
    }
    // Made in copies: a change that cannot be kept is refused whole.
    auto stamps_then = mine;
    mine[kp] = when;
    json patch = std::move(r.value);
    for (auto it = kp.rbegin(); it != kp.rend(); ++it)
      patch = json{{*it, std::move(patch)}};
    auto had = overlays.find(c.component);
    std::optional<json> overlay_then;
    if (had != overlays.end())
      overlay_then = had->second;
    auto& overlay = overlays[c.component];
    if (!overlay.is_object())
      overlay = json::object();
    overlay.merge_patch(patch);
    if (!save()) {
      mine = std::move(stamps_then);
      if (overlay_then)
        overlay = std::move(*overlay_then);
      else
        overlays.erase(c.component);
      return error(c, sid, "ServiceError",
                   "the configuration change could not be kept on disk; nothing changed");
    }
    auto before = components[c.component];
    auto after = bases.contains(c.component) ? bases[c.component] : json::object();
    after.merge_patch(overlay);
    components[c.component] = after;
    reply(c, sid, op, json::object(), true);
    config_changed(c.component, before, after);
  }

  // Tells the subscribers of `name`'s configuration which keys changed.
  void config_changed(const std::string& name, const json& before, const json& after) {
    if (before == after)
      return;
    std::vector<std::vector<std::string>> changed;
    for (const auto& p : json::diff(before, after)) {
      std::vector<std::string> path;
      auto ptr = json::json_pointer{p.value("path", std::string{})};
      while (!ptr.empty()) {
        path.insert(path.begin(), ptr.back());
        ptr.pop_back();
      }
      changed.push_back(std::move(path));
    }
    for (auto& [fd, c] : conns)
      for (auto& [sid, st] : c.streams) {
        if (st.k != kind::configuration || st.filter != name)
          continue;
        std::set<std::vector<std::string>> sent;
        for (const auto& p : changed) {
          const auto& k = st.key_path;
          bool below = p.size() >= k.size() && std::equal(k.begin(), k.end(), p.begin());
          bool above = p.size() < k.size() && std::equal(p.begin(), p.end(), k.begin());
          if (!below && !above)
            continue;
          const auto& at = below ? p : k;
          if (!sent.insert(at).second)
            continue;
          send(c, msg_application, 0, sid, gg + "ConfigurationUpdateEvents",
               {{"configurationUpdateEvent", {{"componentName", name}, {"keyPath", at}}}});
        }
      }
  }

  // PublishToIoTCore / SubscribeToIoTCore, authorized by the component's
  // accessControl."aws.greengrass.ipc.mqttproxy"; through the plugin to message_manager's
  // cloud link.
  void iotcore(conn& c, int32_t sid, const std::string& op, ipc::iotcore_request r) {
    const auto& topic = r.topic;
    bool publish = r.publish;
    if (!permitted(c, sid, "aws.greengrass.ipc.mqttproxy", gg + op, topic))
      return;
    if (!publish) {
      c.streams[sid] = {kind::iotcore, topic, false};
      reply(c, sid, op, json::object(), false);
      report_filters();
      return;
    }
    if (r.bad_payload)
      return error(c, sid, r.bad_payload->shape, r.bad_payload->message);
    auto payload = std::move(r.payload);
    auto f = copy_of(iot_publish_cb);
    if (!f)
      return error(c, sid, "ServiceError", "no cloud link on this core");
    f(topic, std::move(payload), later(c, sid, op));
  }

  void publish(const std::string& from, const std::string& topic, const json& event) {
    for (auto& [fd, c] : conns)
      for (auto& [sid, s] : c.streams)
        if (s.k == kind::topic && (s.filter == topic || topic_matches(s.filter, topic)) &&
            !(s.others && c.component == from))
          send(c, msg_application, 0, sid, gg + "SubscriptionResponseMessage", event);
  }

  // The topic filters of every subscription, to the plugin when they changed.
  void report_filters() {
    std::set<std::string> now, iot;
    for (auto& [fd, c] : conns)
      if (!c.closing)
        for (auto& [sid, s] : c.streams)
          if (s.k == kind::topic)
            now.insert(s.filter);
          else if (s.k == kind::iotcore)
            iot.insert(s.filter);
    if (iot != iot_filters) {
      iot_filters = iot;
      auto f = copy_of(iot_filters_cb);
      if (f)
        f(std::move(iot));
    }
    if (now == filters)
      return;
    filters = now;
    auto f = copy_of(filters_cb);
    if (f)
      f(std::move(now));
  }

  // Each component's first stream of kind `k`, by component.
  std::map<std::string, std::pair<conn*, int32_t>> subscribers(kind k) {
    std::map<std::string, std::pair<conn*, int32_t>> out;
    for (auto& [fd, c] : conns)
      if (!c.closing)
        for (auto& [sid, s] : c.streams)
          if (s.k == k && !out.contains(c.component))
            out[c.component] = {&c, sid};
    return out;
  }

  void start_update(std::shared_ptr<update_round> round) {
    round->waiting.clear();
    round->recheck_ms = 0;
    json event = {{"preUpdateEvent", {{"deploymentId", round->id}, {"isGgcRestarting", false}}}};
    for (auto& [name, at] : subscribers(kind::updates)) {
      round->waiting.insert(name);
      send(*at.first, msg_application, 0, at.second, gg + "ComponentUpdatePolicyEvents", event);
    }
    if (round->waiting.empty())
      return finish_update(round);
    updates.push_back(round);
    round->timer = after(round->timeout, [this, round] { finish_update(round); });
  }

  void finish_update(std::shared_ptr<update_round> round) {
    cancel(round->timer);
    std::erase(updates, round);
    if (round->recheck_ms > 0) {
      after(std::chrono::milliseconds{round->recheck_ms}, [this, round] { start_update(round); });
      return;
    }
    round->done(round->deferred);
  }

  void finish_validation(std::shared_ptr<validation_round> round,
                         std::optional<std::string> rejected) {
    cancel(round->timer);
    std::erase(validations, round);
    round->done(std::move(rejected));
  }

  void drop(conn& c) {
    // A component gone answers nothing more: rounds stop waiting for it.
    bool other = false;
    for (auto& [fd, o] : conns)
      if (&o != &c && o.component == c.component && !o.closing)
        other = true;
    if (other || c.component.empty())
      return;
    for (auto round : std::vector{updates})
      if (round->waiting.erase(c.component) && round->waiting.empty())
        finish_update(round);
    for (auto round : std::vector{validations})
      if (round->waiting.erase(c.component) && round->waiting.empty())
        finish_validation(round, std::nullopt);
  }

  // --- A hot reload ----------------------------------------------------------------------

  static const char* kind_name(kind k) {
    switch (k) {
      case kind::topic:
        return "topic";
      case kind::updates:
        return "updates";
      case kind::validation:
        return "validation";
      case kind::iotcore:
        return "iotcore";
      case kind::configuration:
        return "configuration";
    }
    return "";
  }

  static std::optional<kind> kind_of(const std::string& n) {
    for (auto k : {kind::topic, kind::updates, kind::validation, kind::iotcore,
                   kind::configuration})
      if (n == kind_name(k))
        return k;
    return std::nullopt;
  }

  // Whether `fd` is still a Unix stream socket on this server's path (listening or
  // accepted): an fd a failed instance closed meanwhile, or whose number was reused, is not
  // taken.
  bool ours(int fd, bool listening) const {
    if (fd < 0 || ::fcntl(fd, F_GETFD) < 0)
      return false;
    int v = 0;
    socklen_t n = sizeof v;
    if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &n) != 0 || v != AF_UNIX)
      return false;
    n = sizeof v;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &n) != 0 || v != SOCK_STREAM)
      return false;
    n = sizeof v;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &n) != 0 || (v != 0) != listening)
      return false;
    sockaddr_un addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      return false;
    return std::string_view{addr.sun_path} == path.native();
  }

  json detach() {
    stopping = true;
    wake();
    if (thread.joinable())
      thread.join();
    // The thread is gone: its state is ours. What was queued for it (the plugin's answers,
    // the bus's messages) still goes to the connections.
    std::vector<std::function<void()>> todo;
    {
      std::lock_guard guard{mtx};
      todo.swap(tasks);
    }
    for (auto& t : todo)
      t();
    // The plugin's answer to these would reach an instance that is gone: never silence.
    for (auto& [id, cl] : in_flight)
      if (auto it = conns.find(cl.fd); it != conns.end() && it->second.serial == cl.serial &&
                                       !it->second.closing)
        error(it->second, cl.sid, "ServiceError",
              "interrupted by a reload of the deployment plugin; ask again");
    in_flight.clear();
    json out = {{"listen", listen_fd}, {"connections", json::array()}};
    for (auto& [fd, c] : conns) {
      if (c.closing) {
        flush(c);
        ::close(fd);
        continue;
      }
      json streams = json::array();
      for (const auto& [sid, st] : c.streams)
        streams.push_back({{"id", sid},
                           {"kind", kind_name(st.k)},
                           {"filter", st.filter},
                           {"others", st.others},
                           {"keyPath", st.key_path}});
      out["connections"].push_back({{"fd", fd},
                                    {"component", c.component},
                                    {"in", base64_encode(c.in)},
                                    {"out", base64_encode(c.out)},
                                    {"streams", std::move(streams)}});
    }
    {
      std::lock_guard guard{mtx};
      json known = json::array();
      for (const auto& [name, cfg] : components)
        known.push_back(name);
      out["bases"] = bases;
      out["known"] = std::move(known);
    }
    // Closed and removed by nobody now: the next instance owns them.
    conns.clear();
    listen_fd = -1;
    return out;
  }

  // start(): the listener, connections and components `h` (detach()) names.
  void adopt(const json& h) {
    if (h.contains("bases") && h["bases"].is_object())
      for (const auto& [name, base] : h["bases"].items()) {
        bases[name] = base;
        auto eff = base;
        if (auto o = overlays.find(name); o != overlays.end())
          eff.merge_patch(o->second);
        components[name] = std::move(eff);
      }
    if (h.contains("known") && h["known"].is_array())
      for (const auto& n : h["known"])
        if (n.is_string())
          components.try_emplace(n.get<std::string>(), json::object());
    for (const auto& [name, cfg] : components)
      tokens[token_for(name)] = name;
    if (auto l = h.value("listen", -1); ours(l, true))
      listen_fd = l;
    else if (l >= 0)
      log.warn("deployment: IPC: the last instance's listening socket (fd {}) is gone: a new one "
               "is made", l);
    if (!h.contains("connections") || !h["connections"].is_array())
      return;
    for (const auto& j : h["connections"]) {
      int fd = j.value("fd", -1);
      if (!ours(fd, false) || conns.contains(fd)) {
        log.warn("deployment: IPC: the last instance's connection (fd {}) of {} is gone",
                 fd, j.value("component", std::string{"a client"}));
        continue;
      }
      conn c;
      c.fd = fd;
      c.serial = next_serial++;
      c.component = j.value("component", std::string{});
      if (!base64_decode(j.value("in", std::string{}), c.in) ||
          !base64_decode(j.value("out", std::string{}), c.out)) {
        c.in.clear();
        c.out.clear();
        c.closing = true; // its stream of bytes cannot go on where it stopped
      }
      if (j.contains("streams") && j["streams"].is_array())
        for (const auto& st : j["streams"]) {
          auto k = kind_of(st.value("kind", std::string{}));
          if (!k)
            continue;
          stream s{*k, st.value("filter", std::string{}), st.value("others", false), {}};
          if (st.contains("keyPath") && st["keyPath"].is_array())
            for (const auto& p : st["keyPath"])
              if (p.is_string())
                s.key_path.push_back(p.get<std::string>());
          c.streams[st.value("id", int32_t{0})] = std::move(s);
        }
      if (c.component.empty())
        after(connect_within, [this, fd, serial = c.serial] {
          auto it = conns.find(fd);
          if (it != conns.end() && it->second.serial == serial && it->second.component.empty())
            it->second.closing = true;
        });
      conns[fd] = std::move(c);
      ++handed_connections;
    }
    // The filters as the last instance had them (the plugin subscribes to them itself).
    for (auto& [fd, c] : conns)
      if (!c.closing)
        for (auto& [sid, s] : c.streams)
          if (s.k == kind::topic)
            handed_filters.insert(s.filter);
          else if (s.k == kind::iotcore)
            handed_iot_filters.insert(s.filter);
    filters = handed_filters;
    iot_filters = handed_iot_filters;
  }

  // --- The loop ------------------------------------------------------------------------

  void loop() {
    std::vector<pollfd> fds;
    while (!stopping) {
      fds.clear();
      fds.push_back({wake_fd, POLLIN, 0});
      fds.push_back({listen_fd, POLLIN, 0});
      for (auto& [fd, c] : conns)
        fds.push_back({fd, static_cast<short>(POLLIN | (c.out.empty() ? 0 : POLLOUT)), 0});
      int timeout = -1;
      if (!timers.empty()) {
        auto d = std::chrono::duration_cast<std::chrono::milliseconds>(timers.begin()->first -
                                                                       clock::now());
        timeout = static_cast<int>(std::clamp<int64_t>(d.count() + 1, 0, 60'000));
      }
      if (::poll(fds.data(), fds.size(), timeout) < 0 && errno != EINTR)
        break;
      if (fds[0].revents & POLLIN) {
        uint64_t v;
        (void) !::read(wake_fd, &v, sizeof v);
      }
      std::vector<std::function<void()>> todo;
      {
        std::lock_guard guard{mtx};
        todo.swap(tasks);
      }
      for (auto& t : todo)
        t();
      while (!timers.empty() && timers.begin()->first <= clock::now()) {
        auto f = std::move(timers.begin()->second.second);
        timers.erase(timers.begin());
        f();
      }
      if (fds[1].revents & POLLIN)
        for (;;) {
          int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
          if (fd < 0)
            break;
          if (conns.size() >= max_connections) {
            if (refused_connections++ % 1000 == 0)
              log.warn("deployment: IPC: {} connections open: one more refused (refused so "
                       "far: {})", conns.size(), refused_connections);
            ::close(fd);
            continue;
          }
          auto& c = conns[fd];
          c.fd = fd;
          c.serial = next_serial++;
          after(connect_within, [this, fd, serial = c.serial] {
            auto it = conns.find(fd);
            if (it != conns.end() && it->second.serial == serial && it->second.component.empty()) {
              log.warn("deployment: IPC: a client sent no connect within {} s: closed",
                       connect_within.count());
              it->second.closing = true;
            }
          });
        }
      for (size_t i = 2; i < fds.size(); ++i) {
        auto it = conns.find(fds[i].fd);
        if (it == conns.end())
          continue;
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR))
          read(it->second);
        if (fds[i].revents & POLLOUT)
          flush(it->second);
      }
      for (auto it = conns.begin(); it != conns.end();) {
        if (it->second.closing) {
          flush(it->second); // a refusal's answer, if the socket takes it
          ::close(it->first);
          auto c = std::move(it->second);
          it = conns.erase(it);
          drop(c);
          if (!c.component.empty())
            log.info("deployment: IPC: {} disconnected", c.component);
          report_filters();
        } else {
          ++it;
        }
      }
    }
  }
};

caf::expected<std::unique_ptr<ipc_server>>
ipc_server::start(std::filesystem::path socket, const std::filesystem::path& key_file,
                  const std::filesystem::path& changes_file, spdlog::logger& log,
                  const json* handed) {
  auto fail = [](std::string what) {
    return grove::make_error(grove::errc::system_error, std::move(what));
  };
  auto p = std::make_unique<impl>(log);
  p->path = socket;
  // The key tokens are derived from: kept so that running components' tokens stay valid
  // across restarts and reloads.
  {
    std::ifstream f{key_file, std::ios::binary};
    std::string k{std::istreambuf_iterator<char>{f}, {}};
    if (k.size() == 32) {
      p->key = std::move(k);
    } else {
      unsigned char buf[32];
      if (RAND_bytes(buf, sizeof buf) != 1)
        return fail("IPC: no random bytes for the token key");
      p->key.assign(reinterpret_cast<char*>(buf), sizeof buf);
      if (auto err = grove::write_file_atomically(key_file, p->key, {.mode = 0600}))
        return fail("IPC: cannot write the token key: " + grove::describe(err));
    }
  }
  p->changes_file = changes_file;
  p->load();
  p->wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->wake_fd < 0)
    return fail(std::string{"IPC: eventfd: "} + std::strerror(errno));
  if (handed != nullptr && handed->is_object())
    p->adopt(*handed);
  if (p->listen_fd >= 0)
    return std::unique_ptr<ipc_server>{new ipc_server{std::move(p)}};
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket.native().size() >= sizeof addr.sun_path)
    return fail("IPC: socket path too long: " + socket.string());
  std::strcpy(addr.sun_path, socket.c_str());
  std::error_code ec;
  std::filesystem::create_directories(socket.parent_path(), ec);
  std::filesystem::remove(socket, ec);
  p->listen_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (p->listen_fd < 0)
    return fail(std::string{"IPC: socket: "} + std::strerror(errno));
  if (::bind(p->listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return fail("IPC: bind " + socket.string() + ": " + std::strerror(errno));
  // Components may run as other users (runWith): the token is what admits a client.
  ::chmod(socket.c_str(), 0666);
  if (::listen(p->listen_fd, 64) != 0)
    return fail(std::string{"IPC: listen: "} + std::strerror(errno));
  return std::unique_ptr<ipc_server>{new ipc_server{std::move(p)}};
}

void ipc_server::serve() {
  if (impl_->thread.joinable() || impl_->stopping)
    return;
  auto* raw = impl_.get();
  impl_->thread = std::thread{[raw] { raw->loop(); }};
}

json ipc_server::detach() {
  return impl_->detach();
}

std::set<std::string> ipc_server::handed_filters() const {
  return impl_->handed_filters;
}

std::set<std::string> ipc_server::handed_iot_filters() const {
  return impl_->handed_iot_filters;
}

size_t ipc_server::handed_connections() const {
  return impl_->handed_connections;
}

ipc_server::ipc_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {
}

ipc_server::~ipc_server() = default;

void ipc_server::set_components(std::map<std::string, json> configs) {
  std::map<std::string, std::string> tokens;
  for (const auto& [name, cfg] : configs)
    tokens[impl_->token_for(name)] = name;
  std::map<std::string, std::pair<json, json>> changed; // name → before, after
  {
    std::lock_guard guard{impl_->mtx};
    auto& p = *impl_;
    std::map<std::string, json> effective;
    for (auto& [name, base] : configs) {
      // A deployment that changes the base replaces what UpdateConfiguration changed.
      if (auto b = p.bases.find(name); b != p.bases.end() && b->second != base) {
        p.overlays.erase(name);
        p.stamps.erase(name);
      }
      auto eff = base;
      if (auto o = p.overlays.find(name); o != p.overlays.end())
        eff.merge_patch(o->second);
      if (auto old = p.components.find(name); old != p.components.end() && old->second != eff)
        changed[name] = {old->second, eff};
      effective[name] = std::move(eff);
    }
    // A component no longer in the set (not one still starting: env() knows it) loses
    // its changes.
    for (auto it = p.overlays.begin(); it != p.overlays.end();) {
      if (configs.contains(it->first) || !p.bases.contains(it->first)) {
        ++it;
        continue;
      }
      p.stamps.erase(it->first);
      it = p.overlays.erase(it);
    }
    p.bases = std::move(configs);
    p.components = std::move(effective);
    p.tokens = std::move(tokens);
    p.save(); // a failure is logged; the file keeps changes the next save drops
  }
  if (!changed.empty())
    impl_->run_on_thread([p = impl_.get(), changed = std::move(changed)] {
      for (const auto& [name, ba] : changed)
        p->config_changed(name, ba.first, ba.second);
    });
}

std::vector<std::string> ipc_server::env(const std::string& component) const {
  auto token = impl_->token_for(component);
  {
    // Known at once: a process may connect before the set is next synced.
    std::lock_guard guard{impl_->mtx};
    impl_->tokens[token] = component;
    impl_->components.try_emplace(component, json::object());
  }
  return {"AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT=" + impl_->path.string(),
          "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH=" + impl_->path.string(),
          "SVCUID=" + token};
}

void ipc_server::on_state(std::function<void(const std::string&, const std::string&)> f) {
  std::lock_guard guard{impl_->mtx};
  impl_->state_cb = std::move(f);
}

void ipc_server::on_publish(
  std::function<void(const std::string&, std::string, std::string)> f) {
  std::lock_guard guard{impl_->mtx};
  impl_->publish_cb = std::move(f);
}

void ipc_server::on_filters(std::function<void(std::set<std::string>)> f) {
  std::lock_guard guard{impl_->mtx};
  impl_->filters_cb = std::move(f);
}

void ipc_server::on_control(
  std::function<void(control_call, std::function<void(answer_data)>)> f) {
  std::lock_guard guard{impl_->mtx};
  impl_->control_cb = std::move(f);
}

void ipc_server::on_shadow(
  std::function<void(shadow_call, std::function<void(answer_data)>)> f) {
  std::lock_guard guard{impl_->mtx};
  impl_->shadow_cb = std::move(f);
}

void ipc_server::on_iot_publish(
  std::function<void(std::string, std::string, std::function<void(answer_data)>)> f) {
  std::lock_guard guard{impl_->mtx};
  impl_->iot_publish_cb = std::move(f);
}

void ipc_server::on_iot_filters(std::function<void(std::set<std::string>)> f) {
  std::lock_guard guard{impl_->mtx};
  impl_->iot_filters_cb = std::move(f);
}

void ipc_server::deliver_iot(std::string topic, std::string payload) {
  impl_->run_on_thread([p = impl_.get(), topic = std::move(topic), payload = std::move(payload)] {
    json event = {{"message", {{"topicName", topic}, {"payload", base64_encode(payload)}}}};
    for (auto& [fd, c] : p->conns)
      for (auto& [sid, s] : c.streams)
        if (s.k == impl::kind::iotcore && (s.filter == topic || topic_matches(s.filter, topic)))
          p->send(c, msg_application, 0, sid, gg + "IoTCoreMessage", event);
  });
}

void ipc_server::deliver(std::string topic, std::string payload, std::string content_type) {
  impl_->run_on_thread([p = impl_.get(), topic = std::move(topic), payload = std::move(payload),
                        ct = std::move(content_type)] {
    json event;
    json parsed = json(json::value_t::discarded);
    if (ct.starts_with("application/json"))
      parsed = json::parse(payload, nullptr, false);
    // JSON nested past the bound (dump() recurses) reaches components as its bytes.
    if (!parsed.is_discarded() && depth_of(parsed) > max_depth)
      parsed = json(json::value_t::discarded);
    if (!parsed.is_discarded())
      event["jsonMessage"] = json{{"message", parsed}, {"context", {{"topic", topic}}}};
    else
      event["binaryMessage"] =
        json{{"message", base64_encode(payload)}, {"context", {{"topic", topic}}}};
    p->publish("", topic, event);
  });
}

void ipc_server::pre_update(std::string id, std::chrono::milliseconds timeout,
                            std::function<void(std::vector<std::string>)> done) {
  auto round = std::make_shared<impl::update_round>();
  round->id = std::move(id);
  round->timeout = timeout;
  round->done = std::move(done);
  impl_->run_on_thread([p = impl_.get(), round] { p->start_update(round); });
}

void ipc_server::post_update(std::string id) {
  impl_->run_on_thread([p = impl_.get(), id = std::move(id)] {
    json event = {{"postUpdateEvent", {{"deploymentId", id}}}};
    for (auto& [name, at] : p->subscribers(impl::kind::updates))
      p->send(*at.first, msg_application, 0, at.second, gg + "ComponentUpdatePolicyEvents",
              event);
  });
}

void ipc_server::validate(std::string id, std::map<std::string, json> configs,
                          std::chrono::milliseconds timeout,
                          std::function<void(std::optional<std::string>)> done) {
  impl_->run_on_thread([p = impl_.get(), id = std::move(id), configs = std::move(configs),
                        timeout, done = std::move(done)]() mutable {
    auto round = std::make_shared<impl::validation_round>();
    round->id = id;
    round->done = std::move(done);
    auto subs = p->subscribers(impl::kind::validation);
    for (const auto& [name, cfg] : configs) {
      auto s = subs.find(name);
      if (s == subs.end())
        continue;
      round->waiting.insert(name);
      json event = {{"validateConfigurationUpdateEvent",
                     {{"componentName", name}, {"configuration", cfg}, {"deploymentId", id}}}};
      p->send(*s->second.first, msg_application, 0, s->second.second,
              gg + "ValidateConfigurationUpdateEvents", event);
    }
    if (round->waiting.empty())
      return round->done(std::nullopt);
    p->validations.push_back(round);
    // No report within the policy's time: the deployment proceeds (Greengrass).
    round->timer = p->after(timeout, [p, round] { p->finish_validation(round, std::nullopt); });
  });
}

const std::filesystem::path& ipc_server::socket() const {
  return impl_->path;
}

} // namespace grove::deployment
