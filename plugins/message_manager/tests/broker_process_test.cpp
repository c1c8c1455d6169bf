#define BOOST_TEST_MODULE broker_process_test
#include <boost/test/unit_test.hpp>

// Tests of broker_process with a real Mosquitto 2.0 and Grove's broker plugin, real clients
// (mosquitto_pub / mosquitto_sub) and a real PKI made by tools/grove-certs. Results are
// polled with a deadline, never awaited with a fixed sleep.

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "process_support.hpp"
#include "test_support.hpp"
#include "broker_process.hpp"
#include "route_reader.hpp"
#include "unix_address.hpp"
#include "grove/errors.hpp"

#ifndef GROVE_SOURCE_DIR
#  error "GROVE_SOURCE_DIR must name the repository root (set in CMakeLists.txt)"
#endif
#ifndef GROVE_BROKER_PLUGIN
#  error "GROVE_BROKER_PLUGIN must name grove_broker_plugin.so (set in CMakeLists.txt)"
#endif

using namespace grove::mm;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

using grove::test::temp_dir;
using grove::test::free_port;

namespace {

// Polls `pred` every 50 ms for at most `timeout`.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred())
      return true;
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(50ms);
  }
}

std::string read_all(const fs::path& file) {
  std::ifstream in{file};
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// Starts `args` with stdout and stderr going to `out`.
pid_t spawn(const std::vector<std::string>& args, const fs::path& out) {
  std::vector<char*> argv;
  for (const auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  auto pid = ::fork();
  if (pid == 0) {
    auto fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    auto nul = ::open("/dev/null", O_RDONLY); // s_client ends after the handshake
    ::dup2(nul, 0);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

// Runs `args` to completion (killed after 10 s); returns the exit code (-1 if killed).
int run(const std::vector<std::string>& args, const fs::path& out) {
  auto pid = spawn(args, out);
  int st = 0;
  if (!wait_until([&] { return ::waitpid(pid, &st, WNOHANG) == pid; })) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &st, 0);
    return -1;
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// True once `pid` is gone or a zombie (a reparented zombie may wait for a slow reaper).
bool process_gone(int pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  if (!in)
    return true;
  std::string line;
  std::getline(in, line);
  auto paren = line.rfind(')');
  return paren == std::string::npos || line.size() < paren + 3 || line[paren + 2] == 'Z';
}

// A background process killed at the end of the scope.
struct background {
  pid_t pid;
  ~background() {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
};

const char* acl_ab = "thing A\nthing B\npub A t/ab\ndeliver A B t/ab\n";

// Keeps every logged line with its level.
class level_sink final : public spdlog::sinks::base_sink<std::mutex> {
public:
  // True if a line at `level` contains `needle`.
  bool has(spdlog::level::level_enum level, const std::string& needle) {
    return find([&](auto lvl) { return lvl == level; }, needle);
  }

  // True if a line at `level` or above contains `needle`.
  bool has_from(spdlog::level::level_enum level, const std::string& needle) {
    return find([&](auto lvl) { return lvl >= level; }, needle);
  }

protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    lines_.emplace_back(msg.level, std::string(msg.payload.data(), msg.payload.size()));
  }

  void flush_() override {
  }

private:
  template <class Pred>
  bool find(Pred pred, const std::string& needle) {
    std::lock_guard<std::mutex> guard{mutex_};
    for (const auto& [lvl, text] : lines_)
      if (pred(lvl) && text.find(needle) != std::string::npos)
        return true;
    return false;
  }

  std::vector<std::pair<spdlog::level::level_enum, std::string>> lines_;
};

// A broker in a fresh state dir plus client helpers; TLS is set up by make_pki().
struct fixture {
  temp_dir dir;
  uint16_t port = free_port();
  broker_options opts;
  // What the broker's process logs (the plugin's logger in message_manager).
  std::shared_ptr<grove::test::capture_sink> sink = std::make_shared<grove::test::capture_sink>();
  // The same lines with their levels.
  std::shared_ptr<level_sink> levels = std::make_shared<level_sink>();
  std::vector<std::string> tls_client; // client TLS args; empty in dev mode
  int counter = 0;

  fixture() {
    opts.state_dir = dir.path() / "state";
    opts.plugin_path = GROVE_BROKER_PLUGIN;
    opts.bind_address = "127.0.0.1";
    opts.port = port;
    opts.dev_mode = true;
    // Several clients per thing below: ids <thing>-<tool>-N.
    opts.client_id_patterns = {"<thing>", "<thing>-*"};
  }

  bool logged(const std::string& text) {
    return sink->has(text);
  }

  // The test thread as the broker's actor, logging into `sink` and `levels`.
  grove::process_owner owner() {
    grove::process_owner o;
    o.post = [](std::function<void()> f) { f(); };
    o.log = std::make_shared<spdlog::logger>("message_manager",
                                             spdlog::sinks_init_list{sink, levels});
    o.log->set_level(spdlog::level::debug);
    return o;
  }

  // The plugin's way of starting a broker, with the test thread as its actor: begin,
  // then poll until ready or an error. Events run on the supervisor thread here.
  caf::error start(broker_process& bp) {
    if (auto err = bp.begin_start(owner(), nullptr))
      return err;
    caf::error result;
    bool done = wait_until(
      [&] {
        auto r = bp.poll_start();
        if (!r)
          result = r.error();
        return !r || *r;
      },
      20s);
    if (!done)
      return grove::make_error(grove::errc::timeout, "poll_start never answered");
    return result;
  }

  // Starts `bp` with the A -> B table; the test case stops if it does not start.
  void start_ab(broker_process& bp) {
    BOOST_REQUIRE(!bp.write_acl(acl_ab));
    auto err = start(bp);
    BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  }

  // One failed check per line the written mosquitto.conf lacks.
  void check_conf(std::initializer_list<const char*> lines) {
    auto conf = read_all(opts.state_dir / "mosquitto.conf");
    for (auto line : lines)
      BOOST_CHECK_MESSAGE(conf.find(line) != std::string::npos, "conf lacks: " << line);
  }

  // The broker plugin copied where the broker's user cannot reach it (a build tree under
  // /root, say): the broker loads its own copy.
  void hide_plugin() {
    auto hidden = dir.path() / "private";
    fs::create_directories(hidden);
    fs::permissions(hidden, fs::perms::owner_all, fs::perm_options::replace);
    fs::copy_file(GROVE_BROKER_PLUGIN, hidden / "grove_broker_plugin.so");
    opts.plugin_path = hidden / "grove_broker_plugin.so";
  }

  // A write dir of groved's, 0700 (as groved makes it).
  fs::path make_write_dir() {
    auto write_dir = dir.path() / "write";
    fs::create_directories(write_dir);
    fs::permissions(write_dir, fs::perms::owner_all, fs::perm_options::replace);
    return write_dir;
  }

  // make_pki(), the table acl_ab, start(): a running TLS broker, or the test stops.
  std::unique_ptr<broker_process> start_tls() {
    make_pki();
    auto bp = std::make_unique<broker_process>(opts);
    start_ab(*bp);
    return bp;
  }

  void make_pki() {
    auto tool = std::string{GROVE_SOURCE_DIR} + "/tools/grove-certs";
    auto pki = (dir.path() / "pki").string();
    auto out = dir.path() / "certs.out";
    // The CA key goes outside the PKI directory: into this test's directory.
    ::setenv("GROVE_CA_DIR", (dir.path() / "ca-keys").c_str(), 1);
    BOOST_REQUIRE_EQUAL(run({tool, "init", pki, "--days", "2"}, out), 0);
    BOOST_REQUIRE_EQUAL(run({tool, "server", pki, "--host", "localhost", "--days", "2"}, out), 0);
    BOOST_REQUIRE_EQUAL(run({tool, "device", pki, "A", "--days", "2"}, out), 0);
    BOOST_REQUIRE_EQUAL(run({tool, "device", pki, "B", "--days", "2"}, out), 0);
    // A valid certificate of the group CA whose CN is no thing of the table.
    BOOST_REQUIRE_EQUAL(run({tool, "device", pki, "intruder", "--days", "2"}, out), 0);
    opts.dev_mode = false;
    opts.ca_file = pki + "/ca.crt";
    opts.cert_file = pki + "/server.crt";
    opts.key_file = pki + "/server.key";
  }

  std::vector<std::string> client(const std::string& tool, const std::string& thing) {
    std::vector<std::string> args{tool, "-h", "127.0.0.1", "-p", std::to_string(port),
                                  "-i", thing + "-" + tool + "-" + std::to_string(++counter)};
    if (opts.dev_mode) {
      args.insert(args.end(), {"-u", thing});
    } else {
      auto pki = (dir.path() / "pki").string();
      args.insert(args.end(), {"--cafile", pki + "/ca.crt", "--cert",
                               pki + "/devices/" + thing + ".crt", "--key",
                               pki + "/devices/" + thing + ".key"});
    }
    return args;
  }

  int pub(const std::string& thing, const std::string& topic, const std::string& payload) {
    auto args = client("mosquitto_pub", thing);
    args.insert(args.end(), {"-t", topic, "-m", payload});
    return run(args, dir.path() / "pub.out");
  }

  background sub(const std::string& thing, const std::string& filter, const fs::path& out) {
    auto args = client("mosquitto_sub", thing);
    // -W: a sub left behind by an aborted test ends by itself.
    args.insert(args.end(), {"-t", filter, "-v", "-W", "120"});
    return background{spawn(args, out)};
  }

  // Once B's subscriber (writing to `out`) gets A's messages: the broker runs, and its
  // plugin loaded the first table, once.
  void first_table_loaded(broker_process& bp, const fs::path& out) {
    BOOST_REQUIRE(deliver_until("A", "t/ab", "barrier", out));
    BOOST_REQUIRE(wait_until([&] {
      auto s = read_broker_stats(bp.stats_file());
      return s && s->pid == bp.status().pid && s->acl_reloads == 1;
    }));
  }

  // Republishes until `payload` shows up in `out` (the SUBSCRIBE may still be in flight).
  bool deliver_until(const std::string& from, const std::string& topic,
                     const std::string& payload, const fs::path& out) {
    return wait_until([&] {
      pub(from, topic, payload);
      return wait_until([&] { return read_all(out).find(payload) != std::string::npos; },
                        300ms);
    });
  }
};

} // namespace

BOOST_FIXTURE_TEST_CASE(dev_mode_routes_a_to_b, fixture) {
  broker_process bp{opts};
  start_ab(bp);
  auto st = bp.status();
  BOOST_CHECK(st.running);
  BOOST_CHECK_GT(st.pid, 0);
  BOOST_CHECK_EQUAL(st.restarts, 0u);
  BOOST_CHECK(!st.started_at.empty());
  check_conf({"per_listener_settings false", "allow_anonymous false", "persistence false",
              "plugin_opt_insecure_username_auth true", "max_packet_size 196608",
              "plugin_opt_client_id_patterns <thing> <thing>-*\n"});
  BOOST_CHECK(read_all(opts.state_dir / "mosquitto.conf").find("pid_file") == std::string::npos);
  BOOST_CHECK(fs::exists(bp.stats_file()));
  auto out = dir.path() / "B.out";
  auto b = sub("B", "t/#", out);
  BOOST_CHECK(deliver_until("A", "t/ab", "hello-b", out));
  BOOST_CHECK(logged("mosquitto: started"));
  BOOST_CHECK(fs::exists(opts.state_dir / "broker.log"));
}

BOOST_FIXTURE_TEST_CASE(tls_mode_delivers_and_refuses_client_without_certificate, fixture) {
  auto started = start_tls();
  auto out = dir.path() / "B.out";
  auto b = sub("B", "t/#", out);
  BOOST_CHECK(deliver_until("A", "t/ab", "tls-hello", out));
  auto pki = (dir.path() / "pki").string();
  auto rc = run({"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(port), "--cafile",
                 pki + "/ca.crt", "-i", "nocert", "-t", "t/ab", "-m", "nocert"},
                dir.path() / "nocert.out");
  BOOST_CHECK_NE(rc, 0);
  BOOST_CHECK(wait_until([&] { return logged("peer did not return a certificate"); }));
  BOOST_CHECK(read_all(out).find("nocert") == std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(tls_mode_refuses_certificate_of_non_member_at_connect, fixture) {
  make_pki();
  broker_process bp{opts};
  start_ab(bp);
  // The plugin, not Mosquitto, takes the identity from the certificate.
  check_conf({"require_certificate true", "use_identity_as_username false"});
  auto out = dir.path() / "B.out";
  auto b = sub("B", "t/#", out);
  BOOST_CHECK(deliver_until("A", "t/ab", "member-hello", out));
  auto args = client("mosquitto_pub", "intruder");
  args.insert(args.end(), {"-t", "t/ab", "-m", "intruder-hello"});
  auto intruder_out = dir.path() / "intruder.out";
  BOOST_CHECK_NE(run(args, intruder_out), 0);
  auto text = read_all(intruder_out);
  BOOST_CHECK_MESSAGE(text.find("not authorised") != std::string::npos, "intruder: " << text);
  BOOST_CHECK(wait_until(
    [&] { return logged("refused connect of certificate CN 'intruder'"); }));
  BOOST_CHECK(read_all(out).find("intruder-hello") == std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(killed_child_is_restarted, fixture) {
  opts.restart.backoff_initial = 200ms;
  broker_process bp{opts};
  // Reported for the supervisor's restart only, not for the first start.
  std::atomic<int> restarted{0};
  bp.on_restarted([&] { ++restarted; });
  start_ab(bp);
  BOOST_CHECK(bp.listening());
  BOOST_CHECK_EQUAL(restarted.load(), 0);
  auto old_pid = bp.status().pid;
  BOOST_REQUIRE_EQUAL(::kill(old_pid, SIGKILL), 0);
  BOOST_CHECK(wait_until([&] {
    auto st = bp.status();
    return st.running && st.pid != old_pid && st.restarts == 1;
  }));
  BOOST_CHECK_EQUAL(bp.status().last_exit, "killed by signal 9 (SIGKILL)");
  BOOST_CHECK(logged("mosquitto: killed by signal 9 (SIGKILL); restarting in 200 ms"));
  BOOST_CHECK(process_gone(old_pid));
  BOOST_CHECK(wait_until([&] { return restarted.load() == 1; }));
  BOOST_CHECK(wait_until([&] { return bp.listening(); }));
  // The new broker serves clients again (it may still be opening its listener).
  BOOST_CHECK(wait_until([&] { return pub("A", "t/ab", "probe") == 0; }));
  auto out = dir.path() / "B.out";
  auto b = sub("B", "t/#", out);
  BOOST_CHECK(deliver_until("A", "t/ab", "after-restart", out));
}

BOOST_FIXTURE_TEST_CASE(write_acl_applies_live_and_stats_count_denials, fixture) {
  broker_process bp{opts};
  start_ab(bp);
  auto pid = bp.status().pid;
  auto out = dir.path() / "B.out";
  auto b = sub("B", "t/#", out);
  BOOST_REQUIRE(deliver_until("A", "t/ab", "barrier", out));
  // t/cd is not allowed yet: the publish is denied and counted for A.
  BOOST_CHECK_EQUAL(pub("A", "t/cd", "denied-1"), 0);
  BOOST_CHECK(wait_until([&] {
    auto stats = read_broker_stats(bp.stats_file());
    return stats && stats->denied_publish["A"] >= 1;
  }));
  auto stats = read_broker_stats(bp.stats_file());
  BOOST_REQUIRE_MESSAGE(stats, (stats ? std::string{} : grove::describe(stats.error())));
  BOOST_CHECK_EQUAL(stats->acl_reloads, 1u);
  BOOST_CHECK_EQUAL(stats->acl_errors, 0u);
  BOOST_CHECK_EQUAL(stats->denied_publish.count("B"), 0u);
  // Allow it; the plugin re-reads the file within about a second.
  BOOST_REQUIRE(!bp.write_acl(std::string{acl_ab} + "pub A t/cd\ndeliver A B t/cd\n"));
  BOOST_CHECK(deliver_until("A", "t/cd", "allowed-now", out));
  BOOST_CHECK(read_all(out).find("denied-1") == std::string::npos);
  BOOST_CHECK_EQUAL(bp.status().pid, pid);
  BOOST_CHECK_EQUAL(bp.status().restarts, 0u);
  BOOST_CHECK(wait_until([&] {
    auto s = read_broker_stats(bp.stats_file());
    return s && s->acl_reloads == 2;
  }));
  // No temporary files are left next to the ACL.
  for (const auto& e : fs::directory_iterator{opts.state_dir})
    BOOST_CHECK_MESSAGE(e.path().filename().string().find(".XXX") == std::string::npos
                          && e.path().filename().string()[0] != '.',
                        "left over: " << e.path());
}

// Issue 9: a group change reaches the broker when it is written, not on the plugin's next
// periodic check. The check runs once an hour here and no client connects (a CONNECT also
// checks the file), so only write_acl's SIGHUP can explain the new table; the subscriber
// connected before the change keeps its connection and gets what the new table allows.
BOOST_FIXTURE_TEST_CASE(write_acl_signals_the_broker_and_keeps_its_connections, fixture) {
  opts.table_check_interval = std::chrono::hours{1};
  broker_process bp{opts};
  start_ab(bp);
  check_conf({"plugin_opt_check_interval_ms 3600000"});
  auto pid = bp.status().pid;
  auto out = dir.path() / "B.out";
  auto b = sub("B", "t/#", out);
  first_table_loaded(bp, out);
  BOOST_REQUIRE(!bp.write_acl(std::string{acl_ab} + "pub A t/cd\ndeliver A B t/cd\n"));
  BOOST_CHECK_EQUAL(bp.table_signals(), 1u);
  BOOST_CHECK(wait_until([&] {
    auto s = read_broker_stats(bp.stats_file());
    return s && s->acl_reloads == 2 && s->acl_signal_reloads == 1;
  }));
  BOOST_CHECK(deliver_until("A", "t/cd", "allowed-by-signal", out));
  BOOST_CHECK_EQUAL(bp.status().pid, pid);
  // B connected once: Mosquitto's reload on SIGHUP closed no connection.
  auto log = read_all(opts.state_dir / "broker.log");
  size_t connects = 0;
  for (auto at = log.find(" as B-mosquitto_sub-"); at != std::string::npos;
       at = log.find(" as B-mosquitto_sub-", at + 1))
    ++connects;
  BOOST_CHECK_EQUAL(connects, 1u);
  BOOST_CHECK(log.find("Reloading config.") != std::string::npos);
}

// Issue 9: write_acl writes the table with no fsync (8-30 ms of a change at Greengrass'
// limits) and ends it with `end`; the plugin (plugin_opt_require_end) refuses a table a
// crash cut short, which has no `end`, and keeps the one in force.
BOOST_FIXTURE_TEST_CASE(a_table_cut_short_is_refused_and_the_one_in_force_stays, fixture) {
  opts.table_check_interval = std::chrono::hours{1}; // loads only on the signals below
  broker_process bp{opts};
  start_ab(bp);
  check_conf({"plugin_opt_require_end true"});
  BOOST_CHECK(read_all(bp.acl_file()) == std::string{acl_ab} + "end\n");
  auto pid = bp.status().pid;
  auto out = dir.path() / "B.out";
  auto b = sub("B", "t/#", out);
  first_table_loaded(bp, out);
  // What a crash can leave after the rename when the data had not all reached the disk:
  // the next table, cut at a line break, which would allow A to publish on t/cd.
  auto next = std::string{acl_ab} + "pub A t/cd\ndeliver A B t/cd\n";
  auto torn = next.substr(0, next.find("deliver A B t/cd"));
  std::ofstream{opts.state_dir / "torn"} << torn;
  fs::rename(opts.state_dir / "torn", bp.acl_file());
  BOOST_REQUIRE_EQUAL(::kill(pid, SIGHUP), 0);
  BOOST_CHECK(wait_until([&] {
    auto s = read_broker_stats(bp.stats_file());
    return s && s->acl_errors == 1;
  }));
  auto stats = read_broker_stats(bp.stats_file());
  BOOST_REQUIRE(stats);
  BOOST_CHECK_EQUAL(stats->acl_reloads, 1u);
  BOOST_CHECK_MESSAGE(stats->last_acl_error.find("no 'end' line") != std::string::npos,
                      stats->last_acl_error);
  // The table in force is still acl_ab: A's publish on t/cd is denied, t/ab still flows.
  BOOST_CHECK_EQUAL(pub("A", "t/cd", "denied-cd"), 0);
  BOOST_CHECK(wait_until([&] {
    auto s = read_broker_stats(bp.stats_file());
    return s && s->denied_publish["A"] >= 1;
  }));
  BOOST_CHECK(deliver_until("A", "t/ab", "kept", out));
  // The next whole table applies.
  BOOST_REQUIRE(!bp.write_acl(next));
  BOOST_CHECK(deliver_until("A", "t/cd", "allowed-cd", out));
  BOOST_CHECK(read_all(out).find("denied-cd") == std::string::npos);
  BOOST_CHECK_EQUAL(bp.status().pid, pid);
}

// The stats file names the broker process that wrote it; one an earlier run left behind
// is removed before a new broker starts (message_manager counts only the running
// broker's file, see read_broker_stats).
BOOST_FIXTURE_TEST_CASE(stats_file_names_its_broker_and_a_stale_one_is_removed, fixture) {
  fs::create_directories(opts.state_dir);
  std::ofstream{opts.state_dir / "broker-stats.json"} << R"({"denied_delivery":100000})";
  broker_process bp{opts};
  BOOST_REQUIRE(!bp.write_acl(acl_ab));
  grove::process_owner owner;
  owner.post = [](std::function<void()> f) { f(); };
  owner.log = std::make_shared<spdlog::logger>("message_manager", sink);
  BOOST_REQUIRE(!bp.begin_start(owner, nullptr));
  BOOST_CHECK(!fs::exists(bp.stats_file())); // Mosquitto starts on the next poll_start()
  BOOST_REQUIRE(wait_until([&] {
    auto r = bp.poll_start();
    return !r || *r;
  }, 20s));
  BOOST_REQUIRE(bp.status().running);
  BOOST_CHECK(wait_until([&] {
    auto s = read_broker_stats(bp.stats_file());
    return s && s->pid == bp.status().pid;
  }));
  auto s = read_broker_stats(bp.stats_file());
  BOOST_REQUIRE(s);
  BOOST_CHECK_EQUAL(s->denied_delivery, 0u);
}

BOOST_AUTO_TEST_CASE(read_broker_stats_rejects_malformed_files) {
  temp_dir dir;
  auto file = dir.path() / "stats.json";
  BOOST_CHECK(!read_broker_stats(file)); // missing
  std::ofstream{file} << "not json";
  BOOST_CHECK(!read_broker_stats(file));
  std::ofstream{file} << R"({"denied_publish":{"S":3},"denied_delivery":-1})";
  BOOST_CHECK(!read_broker_stats(file));
  std::ofstream{file} << R"({"denied_publish":{"S":3},"denied_publish_unknown":1,)"
                         R"("denied_delivery":12,"refused_connect":4,"acl_reloads":2,)"
                         R"("acl_errors":1,"last_acl_error":"line 3: bad","pid":4242,)"
                         R"("denied_subscribe":5,"wills_forwarded":6,"wills_dropped":7,)"
                         R"("acl_signal_reloads":1})";
  auto s = read_broker_stats(file);
  BOOST_REQUIRE(s);
  BOOST_CHECK_EQUAL(s->pid, 4242);
  BOOST_CHECK_EQUAL(s->denied_subscribe, 5u);
  BOOST_CHECK_EQUAL(s->wills_forwarded, 6u);
  BOOST_CHECK_EQUAL(s->wills_dropped, 7u);
  BOOST_CHECK_EQUAL(s->acl_signal_reloads, 1u);
  BOOST_CHECK_EQUAL(s->denied_publish["S"], 3u);
  BOOST_CHECK_EQUAL(s->denied_publish_unknown, 1u);
  BOOST_CHECK_EQUAL(s->denied_delivery, 12u);
  BOOST_CHECK_EQUAL(s->refused_connect, 4u);
  BOOST_CHECK_EQUAL(s->acl_reloads, 2u);
  BOOST_CHECK_EQUAL(s->acl_errors, 1u);
  BOOST_CHECK_EQUAL(s->last_acl_error, "line 3: bad");
}

BOOST_FIXTURE_TEST_CASE(port_in_use_is_an_error_naming_the_cause, fixture) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  BOOST_REQUIRE_EQUAL(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  BOOST_REQUIRE_EQUAL(::listen(fd, 4), 0);
  broker_process bp{opts};
  auto err = start(bp);
  ::close(fd);
  BOOST_REQUIRE(err);
  auto text = grove::describe(err);
  BOOST_TEST_MESSAGE("port in use: " << text);
  BOOST_CHECK(text.find("Address already in use") != std::string::npos);
  BOOST_CHECK(!bp.status().running);
}

BOOST_FIXTURE_TEST_CASE(bad_certificate_path_is_an_error, fixture) {
  make_pki();
  opts.cert_file = (dir.path() / "pki" / "missing.crt").string();
  broker_process bp{opts};
  auto err = start(bp);
  BOOST_REQUIRE(err);
  auto text = grove::describe(err);
  BOOST_TEST_MESSAGE("bad cert: " << text);
  BOOST_CHECK(text.find("missing.crt") != std::string::npos);
  BOOST_CHECK(!bp.status().running);
}

BOOST_FIXTURE_TEST_CASE(stop_leaves_no_process_behind, fixture) {
  broker_process bp{opts};
  auto err = start(bp);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  auto pid = bp.status().pid;
  BOOST_REQUIRE_GT(pid, 0);
  bp.stop();
  // stop() returns at once; the supervisor reaps the child: gone, not even a zombie.
  BOOST_CHECK(wait_until([&] { return !fs::exists("/proc/" + std::to_string(pid)); }));
  BOOST_CHECK(!bp.status().running);
  BOOST_CHECK_EQUAL(bp.status().pid, 0);
  BOOST_CHECK_EQUAL(bp.status().restarts, 0u);
  bp.stop(); // idempotent
  BOOST_CHECK(wait_until([&] { return logged("mosquitto: exited with code 0"); }));
  // And it can be started again.
  err = start(bp);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  BOOST_CHECK_NE(bp.status().pid, 0);
}

// That the broker dies with a kill -9ed groved is grove::process's parent-death signal:
// process_test (child_dies_with_a_killed_parent) and message_manager_test.sh check it.

// --- presence (issue 19: the console shows whether a device is connected) ---

BOOST_FIXTURE_TEST_CASE(connected_devices_are_counted_until_they_disconnect, fixture) {
  broker_process bp{opts};
  start_ab(bp);
  auto connected = [&](const std::string& thing) -> int64_t {
    auto s = read_broker_stats(bp.stats_file());
    if (!s)
      return -1;
    auto i = s->connected.find(thing);
    return i == s->connected.end() ? -2 : static_cast<int64_t>(i->second);
  };
  auto out = dir.path() / "B.out";
  {
    auto b = sub("B", "t/#", out);
    first_table_loaded(bp, out); // A's mosquitto_pub came and went meanwhile
    BOOST_CHECK(wait_until([&] { return connected("B") == 1; }));
    BOOST_CHECK(wait_until([&] { return connected("A") == 0; })); // seen, gone
    // Killed: Mosquitto lets the lost connection go, and B counts as disconnected.
  }
  BOOST_CHECK(wait_until([&] { return connected("B") == 0; }));
  // A refused client is never counted.
  auto args = client("mosquitto_pub", "A");
  args.insert(args.end(), {"-i", "not-a-client-id-of-A", "-t", "t/ab", "-m", "x"});
  run(args, dir.path() / "refused.out");
  BOOST_CHECK(wait_until([&] {
    auto st = read_broker_stats(bp.stats_file());
    return st && st->refused_connect >= 1;
  }));
  auto s = read_broker_stats(bp.stats_file());
  BOOST_REQUIRE(s);
  BOOST_CHECK_EQUAL(s->connected.size(), 2u); // A and B only, both 0
  BOOST_CHECK_EQUAL(s->connected["A"], 0u);
}

// --- limits, start-up and idle connections (issue 10) ---

BOOST_FIXTURE_TEST_CASE(payload_and_topic_limits_are_exact_and_counted_per_device, fixture) {
  opts.max_payload_bytes = 2048;
  opts.max_topic_bytes = 32;
  broker_process bp{opts};
  BOOST_REQUIRE(!bp.write_acl("thing A\nthing B\npub A t/#\ndeliver A B t/#\n"));
  auto err = start(bp);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  auto out = dir.path() / "B.out";
  auto b = sub("B", "t/#", out);
  BOOST_REQUIRE(deliver_until("A", "t/x", "barrier", out));
  auto publish = [&](const std::string& topic, const std::string& payload) {
    auto args = client("mosquitto_pub", "A");
    args.insert(args.end(), {"-V", "5", "-q", "1", "-t", topic, "-m", payload});
    return run(args, dir.path() / "pub.out");
  };
  // One byte over each limit: refused (MQTT 5 PUBACK "Not authorized", see the README).
  publish("t/x", std::string(2049, 'o'));
  auto long_topic = "t/" + std::string(31, 'l'); // 33 bytes
  publish(long_topic, "long-topic");
  // Exactly at each limit: delivered.
  auto at_limit_topic = "t/" + std::string(30, 'k'); // 32 bytes
  BOOST_CHECK(deliver_until("A", at_limit_topic, std::string(2048, 'y'), out));
  auto text = read_all(out);
  BOOST_CHECK(text.find(std::string(2049, 'o')) == std::string::npos);
  BOOST_CHECK(text.find("long-topic") == std::string::npos);
  BOOST_CHECK(wait_until([&] {
    auto s = read_broker_stats(bp.stats_file());
    return s && s->refused_oversize["A"] == 2;
  }));
  auto s = read_broker_stats(bp.stats_file());
  BOOST_REQUIRE(s);
  BOOST_CHECK_EQUAL(s->refused_oversize.count("B"), 0u);
  BOOST_CHECK_EQUAL(s->denied_publish["A"], 0u); // not counted as a missing route
  auto conf = read_all(opts.state_dir / "mosquitto.conf");
  // The advertised Maximum Packet Size leaves room for the topic and properties.
  BOOST_CHECK(conf.find("max_packet_size " + std::to_string(2048 + 65536)) != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(local_delivery_is_at_most_qos_1_and_retain_is_unavailable, fixture) {
  broker_process bp{opts};
  BOOST_REQUIRE(!bp.write_acl("thing A\nthing B\npub A t/#\ndeliver A B t/#\n"));
  auto err = start(bp);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  auto out = dir.path() / "B.out";
  auto args = client("mosquitto_sub", "B");
  args.insert(args.end(), {"-V", "5", "-q", "2", "-t", "t/#", "-F", "%q %p", "-W", "120"});
  background b{spawn(args, out)};
  BOOST_REQUIRE(deliver_until("A", "t/x", "barrier", out));
  auto publish = [&](std::vector<std::string> extra) {
    auto a = client("mosquitto_pub", "A");
    a.insert(a.end(), extra.begin(), extra.end());
    return run(a, dir.path() / "pub.out");
  };
  publish({"-V", "5", "-q", "2", "-t", "t/x", "-m", "sent-at-qos-2"});
  publish({"-V", "311", "-q", "2", "-t", "t/x", "-m", "sent-at-qos-2-v311"});
  BOOST_CHECK(wait_until([&] {
    publish({"-V", "5", "-q", "1", "-t", "t/x", "-m", "qos-1-marker"});
    return read_all(out).find("1 qos-1-marker") != std::string::npos;
  }));
  // Nothing reaches a device at QoS 2, though it subscribed at QoS 2.
  auto text = read_all(out);
  BOOST_TEST_MESSAGE("B got: " << text);
  BOOST_CHECK(text.find("\n2 ") == std::string::npos && text.rfind("2 ", 0) != 0);
  // Retain is unavailable: the MQTT 5 CONNACK says so (libmosquitto then clears the flag
  // itself), and a 3.1.1 client that publishes a retained message anyway is disconnected
  // without its message being delivered.
  BOOST_CHECK_NE(publish({"-V", "311", "-q", "1", "-r", "-t", "t/x", "-m", "retained-311"}), 0);
  BOOST_CHECK(wait_until([&] {
    publish({"-V", "5", "-q", "1", "-t", "t/x", "-m", "retain-marker"});
    return read_all(out).find("1 retain-marker") != std::string::npos;
  }));
  BOOST_CHECK(read_all(out).find("retained-311") == std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(not_ready_table_tells_clients_to_retry_and_a_new_table_applies_at_once,
                        fixture) {
  broker_process bp{opts};
  // What message_manager writes before any group exists.
  BOOST_REQUIRE(!bp.write_acl("# no group yet\nnot_ready\n"));
  auto err = start(bp);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  // Told to come back: the connection is closed without a CONNACK "not authorized".
  BOOST_CHECK_NE(pub("A", "t/ab", "early"), 0);
  auto text = read_all(dir.path() / "pub.out");
  BOOST_TEST_MESSAGE("while not ready: " << text);
  BOOST_CHECK(text.find("not authori") == std::string::npos);
  BOOST_CHECK(wait_until([&] {
    auto s = read_broker_stats(bp.stats_file());
    return s && s->deferred_connect >= 1 && s->refused_connect == 0;
  }));
  // The group arrives: the very next CONNECT sees it (no once-a-second re-read).
  BOOST_REQUIRE(!bp.write_acl(acl_ab));
  BOOST_CHECK_EQUAL(pub("A", "t/ab", "first-try"), 0);
  // With a group, a client outside it is refused for good.
  BOOST_CHECK_NE(pub("C", "t/ab", "outsider"), 0);
  BOOST_CHECK(read_all(dir.path() / "pub.out").find("not authori") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(idle_connections_are_limited_and_closed_and_a_device_still_gets_in,
                        fixture) {
  opts.max_connections = 8;
  opts.connect_timeout = 1s;
  broker_process bp{opts};
  start_ab(bp);
  // 40 TCP connections that never send a byte.
  std::vector<int> fds;
  for (int i = 0; i < 40; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    BOOST_REQUIRE_EQUAL(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::fcntl(fd, F_SETFL, O_NONBLOCK);
    fds.push_back(fd);
  }
  // Each is closed by the broker: those above max_connections at once, the others when
  // they stayed silent for connect_timeout.
  auto closed = [](int fd) {
    char c;
    auto n = ::recv(fd, &c, 1, 0);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
  };
  BOOST_CHECK(wait_until(
    [&] { return std::all_of(fds.begin(), fds.end(), closed); }, 20s));
  for (int fd : fds)
    ::close(fd);
  BOOST_CHECK(wait_until([&] {
    auto s = read_broker_stats(bp.stats_file());
    return s && s->idle_closed >= 1;
  }));
  // A real device still gets in.
  auto out = dir.path() / "B.out";
  auto b = sub("B", "t/#", out);
  BOOST_CHECK(deliver_until("A", "t/ab", "after-the-flood", out));
  auto conf = read_all(opts.state_dir / "mosquitto.conf");
  BOOST_CHECK(conf.find("max_connections 8") != std::string::npos);
}

// --- identity and TLS ---

// openssl s_client with A's certificate; returns its output (the negotiated protocol and
// cipher when the handshake succeeded).
std::string handshake(fixture& f, const std::vector<std::string>& extra) {
  auto pki = (f.dir.path() / "pki").string();
  std::vector<std::string> args{"openssl", "s_client", "-connect",
                                "127.0.0.1:" + std::to_string(f.port), "-CAfile",
                                pki + "/ca.crt", "-cert", pki + "/devices/A.crt", "-key",
                                pki + "/devices/A.key"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto out = f.dir.path() / "s_client.out";
  // s_client reads stdin: spawn() gives it /dev/null, so it ends after the handshake.
  run(args, out);
  return read_all(out);
}

BOOST_FIXTURE_TEST_CASE(tls_listener_allows_only_ecdhe_aead_suites, fixture) {
  make_pki();
  broker_process bp{opts};
  start_ab(bp);
  check_conf({"tls_version tlsv1.2\n", "ciphers ECDHE+AESGCM:ECDHE+CHACHA20\n"});
  // TLS 1.2 CBC with SHA-1 (what the security review found accepted): refused.
  for (auto cipher : {"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA"}) {
    auto text = handshake(*this, {"-tls1_2", "-cipher", cipher});
    BOOST_CHECK_MESSAGE(text.find("Cipher is " + std::string{cipher}) == std::string::npos
                          && text.find("handshake failure") != std::string::npos,
                        cipher << " was not refused: " << text);
  }
  // ECDHE with AEAD on TLS 1.2, and TLS 1.3: accepted.
  auto gcm = handshake(*this, {"-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"});
  BOOST_CHECK_MESSAGE(gcm.find("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256") != std::string::npos,
                      gcm);
  auto v13 = handshake(*this, {"-tls1_3"});
  BOOST_CHECK_MESSAGE(v13.find("New, TLSv1.3") != std::string::npos, v13);
}

BOOST_FIXTURE_TEST_CASE(tls_min_version_1_3_refuses_tls_1_2, fixture) {
  make_pki();
  opts.tls_min_version = "1.3";
  broker_process bp{opts};
  start_ab(bp);
  check_conf({"tls_version tlsv1.3\n"});
  auto v12 = handshake(*this, {"-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"});
  BOOST_CHECK_MESSAGE(v12.find("Cipher is ECDHE") == std::string::npos, v12);
  auto v13 = handshake(*this, {"-tls1_3"});
  BOOST_CHECK_MESSAGE(v13.find("New, TLSv1.3") != std::string::npos, v13);
}

BOOST_FIXTURE_TEST_CASE(revoked_certificate_is_refused_and_the_thing_keeps_its_name, fixture) {
  make_pki();
  auto tool = std::string{GROVE_SOURCE_DIR} + "/tools/grove-certs";
  auto pki = (dir.path() / "pki").string();
  auto old_crt = dir.path() / "A-old.crt";
  auto old_key = dir.path() / "A-old.key";
  fs::copy_file(pki + "/devices/A.crt", old_crt);
  fs::copy_file(pki + "/devices/A.key", old_key);
  BOOST_REQUIRE_EQUAL(run({tool, "revoke", pki, "A"}, dir.path() / "revoke.out"), 0);
  BOOST_REQUIRE_EQUAL(run({tool, "device", pki, "A", "--days", "2"}, dir.path() / "A.out"), 0);
  opts.crl_file = pki + "/crl.pem";
  broker_process bp{opts};
  start_ab(bp);
  check_conf({"crlfile "});
  auto out = dir.path() / "B.out";
  auto b = sub("B", "t/#", out);
  // A's new certificate (same thing name) is served ...
  BOOST_CHECK(deliver_until("A", "t/ab", "new-cert", out));
  // ... its revoked one fails the handshake.
  auto rc = run({"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(port), "--cafile",
                 pki + "/ca.crt", "--cert", old_crt.string(), "--key", old_key.string(), "-i",
                 "A-revoked", "-t", "t/ab", "-m", "revoked"},
                dir.path() / "revoked.out");
  BOOST_CHECK_NE(rc, 0);
  BOOST_CHECK(wait_until([&] { return logged("certificate verify failed"); }));
  BOOST_CHECK(read_all(out).find("revoked") == std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(broker_drops_root_to_its_own_user, fixture) {
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("not root: Mosquitto keeps the current user; nothing to check");
    return;
  }
  make_pki();
  hide_plugin();
  // The state dir inside a write dir of groved's.
  auto write_dir = make_write_dir();
  opts.state_dir = write_dir / "plugins" / "message_manager" / "broker";
  broker_process bp{opts};
  start_ab(bp);
  // The broker's files are in a directory of its own outside the write dir, which stays
  // closed to it (no search permission for others).
  BOOST_REQUIRE(fs::is_symlink(opts.state_dir));
  auto home = fs::canonical(opts.state_dir);
  BOOST_CHECK(home.string().rfind(write_dir.string(), 0) != 0);
  BOOST_CHECK_EQUAL(home.parent_path(), opts.run_as_home_base);
  struct stat sw {};
  BOOST_REQUIRE_EQUAL(::stat(write_dir.c_str(), &sw), 0);
  BOOST_CHECK_EQUAL(sw.st_mode & 0777, 0700u);
  check_conf({("plugin " + (home / "grove_broker_plugin.so").string() + "\n").c_str(),
              ("plugin_opt_acl_file " + (home / "broker.acl").string() + "\n").c_str()});
  passwd* pw = ::getpwnam("grove-broker");
  BOOST_REQUIRE_MESSAGE(pw != nullptr, "the user grove-broker is missing (tools/deps makes it)");
  BOOST_CHECK_NE(pw->pw_uid, 0u);
  auto uid = pw->pw_uid;
  // The running broker's real and effective user.
  std::ifstream st{"/proc/" + std::to_string(bp.status().pid) + "/status"};
  std::string line, uids;
  while (std::getline(st, line))
    if (line.rfind("Uid:", 0) == 0)
      uids = line;
  std::istringstream fields{uids.substr(4)};
  unsigned real = 0, effective = 0;
  fields >> real >> effective;
  BOOST_CHECK_EQUAL(real, uid);
  BOOST_CHECK_EQUAL(effective, uid);
  check_conf({"user grove-broker\n"});
  // It owns its directory (and the copies of the TLS files in it), mode 0700 ...
  struct stat sd {};
  BOOST_REQUIRE_EQUAL(::stat(opts.state_dir.c_str(), &sd), 0);
  BOOST_CHECK_EQUAL(sd.st_uid, uid);
  BOOST_CHECK_EQUAL(sd.st_mode & 0777, 0700u);
  struct stat sk {};
  BOOST_REQUIRE_EQUAL(::stat((opts.state_dir / "tls" / "server.key").c_str(), &sk), 0);
  BOOST_CHECK_EQUAL(sk.st_uid, uid);
  // ... and not the PKI it was made from.
  struct stat sp {};
  BOOST_REQUIRE_EQUAL(::stat((dir.path() / "pki" / "server.key").c_str(), &sp), 0);
  BOOST_CHECK_EQUAL(sp.st_uid, 0u);
  // A table written after the start (by root) is still read by the broker's user.
  auto out = dir.path() / "B.out";
  auto b = sub("B", "t/#", out);
  BOOST_CHECK(deliver_until("A", "t/ab", "as-grove-broker", out));
  BOOST_REQUIRE(!bp.write_acl(std::string{acl_ab} + "pub A t/new\ndeliver A B t/new\n"));
  BOOST_CHECK(deliver_until("A", "t/new", "new-rule", out));
}

// broker.ca_dir as run_as_user: the broker's copy takes whole PEM certificates only (a
// file that is none would end OpenSSL's lookup of its hash), and when a CA leaves the
// directory the broker restarts (OpenSSL keeps what it loaded).
BOOST_FIXTURE_TEST_CASE(ca_dir_copy_takes_certificates_and_a_removal_restarts, fixture) {
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("not root: the broker reads ca_dir itself; nothing to check");
    return;
  }
  make_pki();
  hide_plugin();
  auto write_dir = make_write_dir();
  opts.state_dir = write_dir / "plugins" / "message_manager" / "broker";
  auto cas = write_dir / "cas";
  fs::create_directories(cas);
  fs::copy_file(opts.ca_file, cas / "0badcafe.0");
  std::ofstream{cas / "0badcafe.1"} << "not a certificate\n";
  opts.ca_dir = cas.string();
  broker_process bp{opts};
  start_ab(bp);
  auto copy = fs::canonical(opts.state_dir) / "tls" / "ca.d";
  BOOST_CHECK(fs::exists(copy / "0badcafe.0"));
  BOOST_CHECK(!fs::exists(copy / "0badcafe.1"));
  BOOST_REQUIRE(!bp.sync_ca_dir());
  BOOST_CHECK_EQUAL(bp.ca_restarts(), 0u);
  auto pid = bp.status().pid;
  fs::remove(cas / "0badcafe.0");
  BOOST_REQUIRE(!bp.sync_ca_dir());
  BOOST_CHECK(!fs::exists(copy / "0badcafe.0"));
  BOOST_CHECK_EQUAL(bp.ca_restarts(), 1u);
  BOOST_CHECK(wait_until([&] {
    auto st = bp.status();
    return st.running && st.pid != pid;
  }));
}

// A root run's broker home holds a copy of the server key: it goes when the broker stops,
// unless the broker is handed over (a reload), and the table moves back into state_dir for
// the next start. A start replaces what a run that never stopped (groved killed) left.
BOOST_FIXTURE_TEST_CASE(broker_home_goes_at_stop_unless_handed_over, fixture) {
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("not root: the broker has no home of its own; nothing to check");
    return;
  }
  make_pki();
  auto write_dir = make_write_dir();
  opts.state_dir = write_dir / "broker";
  auto first = std::make_unique<broker_process>(opts);
  start_ab(*first);
  BOOST_REQUIRE(fs::is_symlink(opts.state_dir));
  auto home = fs::canonical(opts.state_dir);
  BOOST_REQUIRE(fs::exists(home / "tls" / "server.key"));

  // Handed over: the broker keeps running from its home.
  auto kept = first->release();
  first->stop();
  first.reset();
  BOOST_CHECK(fs::exists(home / "tls" / "server.key"));
  BOOST_CHECK(fs::is_symlink(opts.state_dir));

  // The instance that took it over stops it: the home goes, the table stays.
  broker_process second{opts};
  BOOST_REQUIRE(!second.adopt(std::move(kept), owner(), nullptr));
  second.stop();
  BOOST_CHECK_MESSAGE(!fs::exists(home), home << " is left behind");
  BOOST_REQUIRE(fs::is_directory(fs::symlink_status(opts.state_dir)));
  BOOST_CHECK_EQUAL(read_all(opts.state_dir / "broker.acl"), std::string{acl_ab} + "end\n");
  BOOST_CHECK(!fs::exists(opts.state_dir / "tls"));
  struct stat sd {};
  BOOST_REQUIRE_EQUAL(::stat(opts.state_dir.c_str(), &sd), 0);
  BOOST_CHECK_EQUAL(sd.st_uid, 0u);
  BOOST_CHECK_EQUAL(sd.st_mode & 0777, 0700u);

  // The next start runs on that table; then groved "dies": the broker is let go without a
  // stop (released and killed), its home stays with stale files planted in it.
  broker_process third{opts};
  auto err = start(third);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  BOOST_CHECK_EQUAL(fs::canonical(opts.state_dir), home);
  BOOST_CHECK_EQUAL(pub("A", "t/ab", "on-the-kept-table"), 0);  // A is still a thing
  {
    auto orphan = third.release();
    orphan.stop(SIGKILL, std::chrono::milliseconds{0});
    BOOST_REQUIRE(wait_until([&] { return !orphan.running(); }));
  }
  BOOST_REQUIRE(fs::exists(home / "tls" / "server.key"));
  std::ofstream{home / "tls" / "crl.pem"} << "stale";
  std::ofstream{home / ".broker.acl.stale"} << "stale";

  // A start replaces them and keeps the table; its stop removes the home again.
  broker_process fourth{opts};
  err = start(fourth);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  BOOST_CHECK(!fs::exists(home / "tls" / "crl.pem"));
  BOOST_CHECK(!fs::exists(home / ".broker.acl.stale"));
  BOOST_CHECK(fs::exists(home / "tls" / "server.key"));
  BOOST_CHECK_EQUAL(read_all(home / "broker.acl"), std::string{acl_ab} + "end\n");
  BOOST_CHECK_EQUAL(pub("A", "t/ab", "after-the-replaced-home"), 0);
  fourth.stop();
  BOOST_CHECK_MESSAGE(!fs::exists(home), home << " is left behind");
  BOOST_CHECK_EQUAL(read_all(opts.state_dir / "broker.acl"), std::string{acl_ab} + "end\n");
}

// The broker's user is made at install (tools/deps); at runtime a missing one is refused
// with the way to make it, and no user is created.
BOOST_FIXTURE_TEST_CASE(missing_broker_user_is_refused_not_created, fixture) {
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("not root: the broker keeps the current user; nothing to check");
    return;
  }
  opts.run_as_user = "grove-no-such-user";
  BOOST_REQUIRE(::getpwnam(opts.run_as_user.c_str()) == nullptr);
  broker_process bp{opts};
  // Neither the table nor the broker's start makes anything for a missing user.
  auto err = bp.write_acl(acl_ab);
  BOOST_REQUIRE(err);
  BOOST_CHECK_MESSAGE(grove::describe(err).find("'grove-no-such-user'") != std::string::npos,
                      grove::describe(err));
  err = start(bp);
  BOOST_REQUIRE(err);
  BOOST_CHECK_EQUAL(err.code(), static_cast<uint8_t>(grove::errc::invalid_config));
  BOOST_CHECK_MESSAGE(grove::describe(err).find("'grove-no-such-user'") != std::string::npos
                        && grove::describe(err).find("tools/deps") != std::string::npos,
                      grove::describe(err));
  BOOST_CHECK(::getpwnam(opts.run_as_user.c_str()) == nullptr);
  BOOST_CHECK(!bp.status().running);
}

BOOST_FIXTURE_TEST_CASE(abrupt_device_disconnect_is_counted_and_logged_at_debug, fixture) {
  // A device killed with its TLS session open (no close_notify) makes Mosquitto print an
  // OpenSSL "unexpected eof" error: routine for devices, so debug level and a count.
  auto started = start_tls();
  auto& bp = *started;
  auto out = dir.path() / "B.out";
  uint64_t before = 0;
  {
    auto b = sub("B", "t/#", out);
    BOOST_REQUIRE(deliver_until("A", "t/ab", "before-kill", out));
    before = bp.abrupt_disconnects();
  } // SIGKILL: B's TLS session ends without a close
  BOOST_CHECK(wait_until([&] { return bp.abrupt_disconnects() == before + 1; }));
  BOOST_CHECK(wait_until([&] { return levels->has(spdlog::level::debug, "unexpected eof"); }));
  BOOST_CHECK(!levels->has_from(spdlog::level::info, "unexpected eof"));
  // Mosquitto's other lines stay at info.
  BOOST_CHECK(levels->has(spdlog::level::info, "mosquitto: "));
}


// The route socket (README "How a message travels"): the device publishes matching a
// `route` line reach groved once each, with the broker's source and the MQTT 5 properties;
// only groved (the broker's parent) may read, and groved reads only the broker's listener;
// what is published while no reader is there waits in the broker and arrives in order.
BOOST_FIXTURE_TEST_CASE(route_socket_hands_routed_device_messages_to_groved_only, fixture) {
  broker_process bp{opts};
  BOOST_REQUIRE(!bp.write_acl("thing A\nthing B\npub A t/#\npub A other/#\ndeliver A B t/ab\n"
                              "pub B t/back\ndeliver B A t/back\nroute t/#\nroute t/+/x\n"));
  auto err = start(bp);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  check_conf({"plugin_opt_route_socket ", "plugin_opt_route_buffer_bytes "});
  std::mutex mtx;
  std::vector<grove::broker::route_message> got;
  auto count = [&](const std::string& payload) {
    std::lock_guard guard{mtx};
    return std::count_if(got.begin(), got.end(),
                         [&](const auto& m) { return m.payload == payload; });
  };
  auto make_reader = [&](fs::path socket) {
    return std::make_unique<route_reader>(
      std::move(socket),
      [&](grove::broker::route_message&& m) {
        std::lock_guard guard{mtx};
        got.push_back(std::move(m));
      },
      [](bool, const std::string& line) { BOOST_TEST_MESSAGE(line); });
  };
  auto reader = make_reader(bp.route_socket());
  reader->set_broker_pid(bp.status().pid);
  reader->start();
  BOOST_REQUIRE(wait_until([&] { return reader->connected(); }));
  // Grove's client, subscribed to the route filters as message_manager's is (so that wills
  // there are caught): it receives none of the devices' messages, they go over the socket.
  auto grove_out = dir.path() / "grove.out";
  auto grove_args = client("mosquitto_sub", "grove");
  grove_args.insert(grove_args.end(), {"-V", "5", "-t", "t/#", "-F", "%t %p", "-W", "120"});
  background grove_sub{spawn(grove_args, grove_out)};
  auto publish = [&](std::vector<std::string> extra) {
    auto a = client("mosquitto_pub", "A");
    a.insert(a.end(), extra.begin(), extra.end());
    return run(a, dir.path() / "pub.out");
  };
  // Matched by both route lines: one frame. A forged grove-source is not among the
  // properties: the source is the broker's stamp.
  BOOST_REQUIRE_EQUAL(publish({"-V", "5", "-q", "1", "-t", "t/a/x", "-m", "with-props", "-D",
                               "publish", "content-type", "text/plain", "-D", "publish",
                               "user-property", "k", "v", "-D", "publish", "user-property",
                               "grove-source", "function:forged"}),
                      0);
  BOOST_REQUIRE_EQUAL(publish({"-t", "other/x", "-m", "not-routed"}), 0);
  BOOST_REQUIRE_EQUAL(publish({"-q", "1", "-t", "t/y", "-m", "marker"}), 0);
  BOOST_REQUIRE(wait_until([&] { return count("marker") == 1; }));
  BOOST_CHECK_EQUAL(count("with-props"), 1);
  BOOST_CHECK_EQUAL(count("not-routed"), 0);
  {
    std::lock_guard guard{mtx};
    auto& m = got.front();
    BOOST_CHECK_EQUAL(m.payload, "with-props");
    BOOST_CHECK_EQUAL(m.source, "A");
    BOOST_CHECK_EQUAL(m.topic, "t/a/x");
    BOOST_CHECK_EQUAL(int{m.qos}, 1);
    BOOST_CHECK_EQUAL(m.content_type, "text/plain");
    BOOST_REQUIRE_EQUAL(m.user_properties.size(), 1u);
    BOOST_CHECK_EQUAL(m.user_properties[0].first, "k");
    BOOST_CHECK_EQUAL(m.user_properties[0].second, "v");
  }

  // A will on a route filter, where no device subscribes: it comes over the socket, once,
  // stamped with its device.
  auto will_args = client("mosquitto_sub", "A");
  will_args.insert(will_args.end(), {"-V", "5", "-t", "t/back", "--will-topic", "t/will",
                                     "--will-payload", "will-of-a", "-W", "120"});
  auto will_holder = spawn(will_args, dir.path() / "will.out");
  BOOST_CHECK(wait_until([&] {
    auto s = read_broker_stats(bp.stats_file());
    return s && s->connected.count("A") && s->connected.at("A") >= 1;
  }));
  ::kill(will_holder, SIGKILL);
  ::waitpid(will_holder, nullptr, 0);
  BOOST_CHECK(wait_until([&] { return count("will-of-a") == 1; }));
  {
    std::lock_guard guard{mtx};
    for (auto& m : got)
      if (m.payload == "will-of-a") {
        BOOST_CHECK_EQUAL(m.source, "A");
        BOOST_CHECK_EQUAL(m.topic, "t/will");
      }
  }

  // Another process (python3, not the broker's parent) is refused: it reads nothing but
  // the end of the stream, and groved's reader stays connected.
  auto probe = dir.path() / "probe.py";
  std::ofstream{probe} << "import socket, sys\n"
                          "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                          "s.settimeout(10)\n"
                          "s.connect(sys.argv[1])\n"
                          "data = s.recv(65536)\n"
                          "print('eof' if data == b'' else 'data %d' % len(data))\n"
                          "sys.exit(0 if data == b'' else 1)\n";
  background foreign{spawn({"python3", probe.string(), bp.route_socket().string()},
                           dir.path() / "probe.out")};
  BOOST_CHECK(wait_until([&] {
    publish({"-t", "t/while-probing", "-m", "probe-traffic"});
    auto s = read_broker_stats(bp.stats_file());
    return s && s->route_refused == 1;
  }));
  int st = 0;
  BOOST_CHECK(wait_until([&] { return ::waitpid(foreign.pid, &st, WNOHANG) == foreign.pid; }));
  BOOST_CHECK_MESSAGE(WIFEXITED(st) && WEXITSTATUS(st) == 0, read_all(dir.path() / "probe.out"));
  BOOST_CHECK(logged("route socket: refused a connection from pid"));
  BOOST_CHECK(reader->connected());

  // groved's side refuses a listener that is not the broker's (someone else's socket).
  auto fake = dir.path() / "fake.sock";
  int lfd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, fake.c_str(), sizeof addr.sun_path - 1);
  BOOST_REQUIRE_EQUAL(::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  BOOST_REQUIRE_EQUAL(::listen(lfd, 4), 0);
  std::atomic<bool> done{false};
  std::thread acceptor{[&] { // it takes every connection, as an impostor would
    while (!done) {
      int c = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK);
      if (c >= 0)
        ::close(c);
      else
        std::this_thread::sleep_for(5ms);
    }
  }};
  ::fcntl(lfd, F_SETFL, O_NONBLOCK);
  auto impostor = make_reader(fake);
  impostor->set_broker_pid(bp.status().pid);
  impostor->start();
  BOOST_CHECK(wait_until([&] { return impostor->refused() > 0; }));
  BOOST_CHECK(!impostor->connected());
  impostor->stop();
  done = true;
  acceptor.join();
  ::close(lfd);

  // A reader leaves (a hot reload): what devices publish meanwhile waits in the broker and
  // reaches the next reader, all of it, in order.
  reader->stop();
  BOOST_CHECK(!reader->connected());
  for (int i = 0; i < 20; ++i)
    BOOST_REQUIRE_EQUAL(publish({"-q", "1", "-t", "t/gap", "-m", "gap-" + std::to_string(i)}),
                        0);
  BOOST_CHECK(wait_until([&] {
    auto s = read_broker_stats(bp.stats_file());
    return s && s->route_buffered_bytes > 0;
  }));
  auto next = make_reader(bp.route_socket());
  next->set_broker_pid(bp.status().pid);
  next->start();
  BOOST_REQUIRE(wait_until([&] { return count("gap-19") == 1; }));
  std::vector<std::string> gap;
  {
    std::lock_guard guard{mtx};
    for (auto& m : got)
      if (m.topic == "t/gap")
        gap.push_back(m.payload);
  }
  BOOST_REQUIRE_EQUAL(gap.size(), 20u);
  for (int i = 0; i < 20; ++i)
    BOOST_CHECK_EQUAL(gap[i], "gap-" + std::to_string(i));
  auto s = read_broker_stats(bp.stats_file());
  BOOST_REQUIRE(s);
  BOOST_CHECK_EQUAL(s->route_dropped, 0u);
  BOOST_CHECK_EQUAL(count("will-of-a"), 1);
  BOOST_CHECK_MESSAGE(read_all(grove_out).empty(), "grove's client got: " << read_all(grove_out));
  next->stop();
  bp.stop();
}

// The route socket in a broker home whose path is longer than sun_path (108 bytes): the
// plugin binds and groved's reader connects through the directory (unix_address.hpp), and
// device messages still reach the reader. As root the broker has dropped to its own user
// (its home under a long run_as_home_base); otherwise its home is the long state_dir.
BOOST_FIXTURE_TEST_CASE(route_socket_in_a_long_broker_home, fixture) {
  // Every level searchable by the broker's user, as /var/lib/grove-broker's parents are.
  fs::permissions(dir.path(), fs::perms::others_exec | fs::perms::group_exec,
                  fs::perm_options::add);
  auto deep = dir.path();
  for (int i = 0; i < 4; ++i)
    deep /= "a-directory-name-long-enough-that-four-make-the-path-too-long-" + std::to_string(i);
  fs::create_directories(deep);
  for (auto p = deep; p != dir.path(); p = p.parent_path())
    fs::permissions(p, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec,
                    fs::perm_options::replace);
  opts.state_dir = deep / "state";
  opts.run_as_home_base = deep / "broker-homes";
  broker_process bp{opts};
  BOOST_REQUIRE(!bp.write_acl("thing A\npub A t/#\nroute t/#\n"));
  auto err = start(bp);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  // Both ends' paths are past the limit: the broker's own (its home) and groved's.
  auto home = fs::canonical(opts.state_dir);
  BOOST_TEST_MESSAGE("broker home " << home);
  BOOST_CHECK_GE((home / "route.sock").string().size(), sizeof(sockaddr_un{}.sun_path));
  BOOST_CHECK_GE(bp.route_socket().string().size(), sizeof(sockaddr_un{}.sun_path));
  BOOST_CHECK(fs::is_socket(home / "route.sock"));
  std::mutex mtx;
  std::vector<grove::broker::route_message> got;
  route_reader reader{bp.route_socket(),
                      [&](grove::broker::route_message&& m) {
                        std::lock_guard guard{mtx};
                        got.push_back(std::move(m));
                      },
                      [](bool, const std::string& line) { BOOST_TEST_MESSAGE(line); }};
  reader.set_broker_pid(bp.status().pid);
  reader.start();
  BOOST_REQUIRE(wait_until([&] { return reader.connected(); }));
  BOOST_REQUIRE_EQUAL(pub("A", "t/long", "through-a-long-path"), 0);
  BOOST_REQUIRE(wait_until([&] {
    std::lock_guard guard{mtx};
    return !got.empty();
  }));
  {
    std::lock_guard guard{mtx};
    BOOST_CHECK_EQUAL(got.front().payload, "through-a-long-path");
    BOOST_CHECK_EQUAL(got.front().source, "A");
  }
  reader.stop();
  bp.stop();
  BOOST_CHECK(!fs::exists(home / "route.sock"));
}

// On the wire the route frames are Grove's frames (a big-endian length; their integers
// big-endian, route_frame.hpp), read here raw as groved (the broker's parent) may. No
// retained message crosses: Mosquitto refuses retained publishes (retain_available false)
// before the plugin sees them, so a frame's retain flag is what subscribers see, never set.
BOOST_FIXTURE_TEST_CASE(route_frames_are_big_endian_and_never_retained, fixture) {
  broker_process bp{opts};
  BOOST_REQUIRE(!bp.write_acl("thing A\npub A t/#\nroute t/#\n"));
  auto err = start(bp);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  int fd = -1;
  BOOST_REQUIRE(wait_until([&] {
    grove::broker::unix_address addr{bp.route_socket().string()};
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (addr.ok() && ::connect(fd, addr.get(), addr.size()) == 0)
      return true;
    ::close(fd);
    return false;
  }));
  BOOST_REQUIRE(wait_until([&] {
    auto s = read_broker_stats(bp.stats_file());
    return s && s->route_connects >= 1;
  }));
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string bytes;
  // The frames read until one carries `payload` (or the stream ends).
  auto frames_until = [&](const std::string& payload) {
    std::vector<grove::broker::route_message> out;
    char buf[4096];
    for (;;) {
      while (bytes.size() >= 4) {
        uint32_t len = (uint32_t{static_cast<uint8_t>(bytes[0])} << 24)
                       | (uint32_t{static_cast<uint8_t>(bytes[1])} << 16)
                       | (uint32_t{static_cast<uint8_t>(bytes[2])} << 8)
                       | uint32_t{static_cast<uint8_t>(bytes[3])};
        BOOST_REQUIRE_LT(len, 4096u); // a host-order length would be ~2^24 times larger
        if (bytes.size() < 4 + len)
          break;
        BOOST_CHECK_EQUAL(int{static_cast<uint8_t>(bytes[4])}, int{grove::broker::kFrameVersion});
        grove::broker::route_message m;
        auto why = grove::broker::decode_frame(std::string_view{bytes}.substr(4, len), m);
        BOOST_REQUIRE_MESSAGE(why.empty(), why);
        bytes.erase(0, 4 + len);
        out.push_back(std::move(m));
        if (out.back().payload == payload)
          return out;
      }
      auto n = ::read(fd, buf, sizeof buf);
      if (n <= 0)
        return out;
      bytes.append(buf, static_cast<size_t>(n));
    }
  };
  auto publish = [&](std::vector<std::string> extra) {
    auto a = client("mosquitto_pub", "A");
    a.insert(a.end(), extra.begin(), extra.end());
    return run(a, dir.path() / "pub.out");
  };
  // MQTT 5: the CONNACK says Retain Available 0, and libmosquitto clears the flag.
  BOOST_REQUIRE_EQUAL(publish({"-V", "5", "-q", "1", "-r", "-t", "t/r", "-m", "retain-v5"}), 0);
  // MQTT 3.1.1 sends it anyway: the client is disconnected, its message goes nowhere.
  BOOST_CHECK_NE(publish({"-V", "311", "-q", "1", "-r", "-t", "t/r", "-m", "retain-311"}), 0);
  // An MQTT 5 client that ignores the CONNACK (a raw PUBLISH with the retain bit): the same.
  auto probe = dir.path() / "retain.py";
  std::ofstream{probe}
    << "import socket, sys\n"
       "def s(b): return len(b).to_bytes(2, 'big') + b\n"
       "def pkt(h, body): return bytes([h, len(body)]) + body\n"
       "c = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)\n"
       "c.sendall(pkt(0x10, s(b'MQTT') + bytes([5, 0x82, 0, 60, 0]) + s(b'A-raw') + s(b'A')))\n"
       "ack = c.recv(64)\n"
       "if ack[:1] != b'\\x20' or ack[3:4] != b'\\x00': sys.exit('connack %r' % ack)\n"
       "c.sendall(pkt(0x31, s(b't/r') + b'\\x00' + b'retain-raw'))\n"
       "rest = b''\n"
       "while True:\n"
       "    d = c.recv(64)\n"
       "    if not d: break\n"
       "    rest += d\n"
       "print('closed after %r' % rest)\n";
  BOOST_CHECK_EQUAL(run({"python3", probe.string(), std::to_string(port)},
                        dir.path() / "retain.out"),
                    0);
  BOOST_TEST_MESSAGE(read_all(dir.path() / "retain.out"));
  BOOST_REQUIRE_EQUAL(publish({"-V", "5", "-q", "1", "-t", "t/r", "-m", "marker"}), 0);
  auto frames = frames_until("marker");
  ::close(fd);
  std::vector<std::string> payloads;
  for (auto& m : frames) {
    payloads.push_back(m.payload);
    BOOST_CHECK_MESSAGE(!m.retain, m.payload << " crossed as retained");
  }
  BOOST_CHECK((payloads == std::vector<std::string>{"retain-v5", "marker"}));
  bp.stop();
}
