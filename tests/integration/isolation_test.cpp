#define BOOST_TEST_MODULE isolation_test
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <optional>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <unistd.h>

#include "../support/process_support.hpp"
#include "../unit/test_util.hpp"
#include "kernel_fixture.hpp"
#include "process_util.hpp"

// Plugins in `isolation: process`: the kernel runs in this test process and starts
// real `groved --plugin-host` children for them.

using namespace grove;

// Like groved, whose kernel threads block its stop signals.
using groved_like_signals = test::groved_like_signals;
BOOST_TEST_GLOBAL_FIXTURE(groved_like_signals);

namespace {

// The plugin-host child of this process that runs `name`; 0 if none.
pid_t host_child(const std::string& name) {
  auto found = test::children_of(::getpid(), "--plugin-host " + name + " ");
  return found.empty() ? 0 : found.front();
}

// A field of /proc/<pid>/status, e.g. "SigBlk".
std::string status_field(pid_t pid, const std::string& key) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) {
      auto v = line.substr(key.size() + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  return {};
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

using fixture = test::kernel_fixture;

} // namespace

BOOST_FIXTURE_TEST_SUITE(isolation, fixture)

BOOST_AUTO_TEST_CASE(isolated_plugin_routes_like_an_in_process_one) {
  load("echo", "{prefix: 'iso:', serve: test/echo/in}", true);
  BOOST_TEST(info("echo").isolation() == "process");
  test::collector out{*k, "test/echo/out"};
  for (int i = 0; i < 100; ++i)
    test::pub(*k, "test/echo/in", std::to_string(i));
  BOOST_REQUIRE(out.wait_for(100));
  auto msgs = out.messages();
  for (int i = 0; i < 100; ++i)
    BOOST_TEST(msgs[i].payload() == "iso:" + std::to_string(i));
  BOOST_TEST(msgs[0].source() == "echo"); // stamped by the kernel, not the child
  // Requests cross the process boundary both ways.
  auto r = k->request("test/echo/in", "ping", std::chrono::seconds{10});
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  BOOST_TEST(r->payload() == "iso:ping");
  r = k->request("test/echo/in", "fail", std::chrono::seconds{10});
  BOOST_REQUIRE(!r);
  // Code and category cross the process boundary as fields.
  BOOST_TEST(r.error() == errc::invalid_state);
  BOOST_TEST(contains(describe(r.error()), "asked to fail"), describe(r.error()));
}

BOOST_AUTO_TEST_CASE(segfault_is_contained_restarted_and_nothing_else_stops) {
  load("echo", "{prefix: 'iso:', segv_on: segv}", true);
  load("echo_b", "{listen: b/in, answer: b/out}", false);
  test::collector out{*k, "test/echo/out"};
  test::collector b_out{*k, "b/out"};
  test::pub(*k, "test/echo/in", "before");
  BOOST_REQUIRE(out.wait_for(1));
  // The crash, then traffic for both plugins while the child is down and restarting.
  test::pub(*k, "test/echo/in", "segv");
  for (int i = 0; i < 200; ++i) {
    test::pub(*k, "test/echo/in", std::to_string(i));
    test::pub(*k, "b/in", std::to_string(i));
  }
  BOOST_REQUIRE(b_out.wait_for(200)); // the in-process plugin never stopped
  // Everything after the crash reached the restarted child, in order.
  BOOST_REQUIRE(out.wait_for(201));
  auto msgs = out.messages();
  BOOST_REQUIRE_EQUAL(msgs.size(), 201u);
  for (int i = 0; i < 200; ++i)
    BOOST_TEST(msgs[i + 1].payload() == "iso:" + std::to_string(i));
  auto i = info("echo");
  BOOST_TEST(i.restarts() == 1u);
  BOOST_TEST(i.state() == "running");
  BOOST_TEST(contains(i.last_error(), "signal 11"), i.last_error());
  BOOST_TEST(i.dropped() == 1u); // the message in hand at the crash
}

BOOST_AUTO_TEST_CASE(abort_and_kill_are_crashes_too_then_broken) {
  load("echo", "{abort_on: abort}", true);
  test::pub(*k, "test/echo/in", "abort");
  BOOST_REQUIRE(wait_restarts("echo", 1));
  BOOST_TEST(contains(info("echo").last_error(), "signal 6"), info("echo").last_error());
  // What the OOM killer does: SIGKILL from outside.
  auto before = info("echo").restarts();
  // This process's own child only: other suites run their echo children beside us.
  auto child = host_child("echo");
  BOOST_REQUIRE(child > 0);
  ::kill(child, SIGKILL);
  BOOST_REQUIRE(wait_restarts("echo", before + 1));
  BOOST_TEST(contains(info("echo").last_error(), "signal 9"), info("echo").last_error());
  // Two more crashes reach max_failures (4): broken, and it stays down.
  test::pub(*k, "test/echo/in", "abort");
  BOOST_REQUIRE(wait_restarts("echo", before + 2));
  test::pub(*k, "test/echo/in", "abort");
  BOOST_REQUIRE(wait_until([&] { return info("echo").state() == "broken"; }));
  BOOST_TEST(info("echo").state() == "broken");
  BOOST_TEST(test::pub(*k, "test/echo/in", "x").delivered == 0u);
  // A new configuration is refused with the reason, as for a broken in-process plugin
  // (the slot protocol: every state answers it).
  plugin_spec spec;
  spec.name = "echo";
  spec.config = make_yaml(YAML::Load("{abort_on: abort}"));
  spec.file = "test.yaml";
  spec.isolation = "process";
  auto refused = k->host().reconfigure(spec);
  BOOST_REQUIRE(!refused);
  BOOST_TEST(contains(test::error_text(refused), "echo is broken"), test::error_text(refused));
  // An operator's reload revives it; the answer comes once the new child runs.
  auto r = k->reload("echo", (test::test_plugin_dir() / "libecho.so").string());
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  BOOST_TEST(contains(*r, "replaced a broken plugin"), *r);
  BOOST_TEST(info("echo").state() == "running");
  test::collector out{*k, "test/echo/out"};
  test::pub(*k, "test/echo/in", "back");
  BOOST_REQUIRE(out.wait_for(1));
  BOOST_TEST(out.messages()[0].payload() == "back");
}

// Review of issue 16: a log level set while an isolated plugin is broken is the one the
// child a reload starts logs at (the broken state keeps it, not drops it).
BOOST_AUTO_TEST_CASE(a_level_set_while_broken_reaches_the_revived_child) {
  k->host().set_log_level("info");
  load("echo", "{abort_on: abort, log_on: say}", true);
  for (int i = 0; i < 10 && info("echo").state() != "broken"; ++i) {
    auto before = info("echo").restarts();
    test::pub(*k, "test/echo/in", "abort");
    BOOST_REQUIRE(wait_until([&] {
      auto p = info("echo");
      return p.state() == "broken" || (p.restarts() > before && p.state() == "running");
    }));
  }
  BOOST_REQUIRE(info("echo").state() == "broken");
  k->host().set_log_level("error");
  // The revived child inherits this process's stderr, where it logs: a file, for now.
  auto err_file = dir.path() / "child_stderr.txt";
  int saved = ::dup(2);
  BOOST_REQUIRE(saved >= 0);
  int fd = ::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  BOOST_REQUIRE(fd >= 0);
  ::dup2(fd, 2);
  auto r = k->reload("echo", (test::test_plugin_dir() / "libecho.so").string());
  ::dup2(saved, 2);
  ::close(saved);
  ::close(fd);
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  BOOST_TEST(info("echo").state() == "running");
  auto logged = [&] {
    std::ifstream in{err_file};
    return std::string{std::istreambuf_iterator<char>{in}, {}};
  };
  test::collector out{*k, "test/echo/out"};
  test::pub(*k, "test/echo/in", "say under error");
  BOOST_REQUIRE(out.wait_for(1)); // the child handled it
  // Info again: the child's lines show (so the file does catch them), the first did not.
  k->host().set_log_level("info");
  BOOST_TEST(wait_until([&] {
    test::pub(*k, "test/echo/in", "say under info");
    return contains(logged(), "echo logged: say under info");
  }));
  BOOST_TEST(!contains(logged(), "say under error"), logged());
  // The revived child started at error: its init's info line is not there either.
  BOOST_TEST(!contains(logged(), "say at init"), logged());
}

BOOST_AUTO_TEST_CASE(hot_reload_of_an_isolated_plugin_keeps_state) {
  load("relay", "{stamp: true}", true);
  test::collector out{*k, "test/echo/out"};
  test::pub(*k, "test/echo/in", "a");
  BOOST_REQUIRE(out.wait_for(1));
  auto r = k->reload("relay", (test::test_plugin_dir() / "librelay_v2.so").string());
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  BOOST_TEST(contains(*r, "state carried over"), *r);
  test::pub(*k, "test/echo/in", "b");
  BOOST_REQUIRE(out.wait_for(2));
  BOOST_TEST(out.messages()[1].payload() == "v2|b|2");
  BOOST_TEST(info("relay").version() == "2.0.0");
  // A bad build is refused; the isolated plugin keeps serving.
  r = k->reload("relay", (test::test_plugin_dir() / "librelay_throws.so").string());
  BOOST_REQUIRE(!r);
  test::pub(*k, "test/echo/in", "c");
  BOOST_REQUIRE(out.wait_for(3));
  BOOST_TEST(out.messages()[2].payload() == "v2|c|3");
}

// A request the isolated plugin left open at a reload: the child's slot carries it, the
// new build adopts and answers it (context::adopt_request); one it does not adopt gets
// the answer of before, "relay stopped: reloading".
BOOST_AUTO_TEST_CASE(an_isolated_plugin_answers_requests_it_carried_over_a_reload) {
  load("relay", "{stamp: true, serve: 'test/relay/req'}", true);
  test::collector out{*k, "test/echo/out"};
  auto ask = [&](const std::string& payload) { return test::ask_held(*k, out, payload); };
  auto a = ask("hold-a");
  auto d = ask("hold-drop");
  auto r = k->reload("relay", (test::test_plugin_dir() / "librelay_v2.so").string());
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  auto ra = a.get();
  BOOST_REQUIRE_MESSAGE(ra, test::error_text(ra));
  BOOST_TEST(ra->payload() == "v2|adopted hold-a");
  auto rd = d.get();
  BOOST_REQUIRE(!rd);
  BOOST_TEST(contains(describe(rd.error()), "relay stopped: reloading"), describe(rd.error()));
}

BOOST_AUTO_TEST_CASE(status_lines_and_metrics_cross_the_boundary) {
  // heartbeat reports a "beating" status line and a "beats" counter; isolated, both
  // still show. It gets a kernel of its own whose plugin directory holds a copy of it.
  test::temp_dir pdir;
  std::filesystem::copy(HEARTBEAT_PLUGIN, pdir.path() / "libheartbeat.so");
  auto p = test::make_profile(pdir.path());
  p.plugin_dir = pdir.path();
  kernel_options opts{false, false};
  opts.plugin_host_exe = GROVED_PATH;
  kernel hk{std::move(p), opts};
  BOOST_REQUIRE(!hk.start());
  plugin_spec s;
  s.name = "heartbeat";
  s.config = make_yaml(YAML::Load("{interval_ms: 2, topic: hb}"));
  s.isolation = "process";
  auto err = hk.host().load(s);
  BOOST_REQUIRE_MESSAGE(!err, describe(err));
  test::collector beats{hk, "hb"};
  bool line = false;
  int64_t counted = 0;
  for (size_t n = 1; n < 5000 && !(line && counted >= 3); ++n) {
    BOOST_REQUIRE(beats.wait_for(n)); // paced by the plugin's own beats
    auto st = hk.status();
    auto d = st.details();
    if (auto i = d.find("heartbeat.beating"); i != d.end())
      line = i->second == "2 ms on hb";
    for (auto& m : st.plugins(0).metrics())
      if (m.name() == "beats" && m.kind() == "counter")
        counted = m.value();
  }
  BOOST_TEST(line);
  BOOST_TEST(counted >= 3);
  // The counter reaches the Prometheus text as a number too.
  BOOST_TEST(hk.scrape().find("\ngrove_heartbeat_beats_total ") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_removed_status_line_goes_in_both_slot_kinds) {
  // An empty value removes a line (context::set_status): in process, and across the
  // boundary, where the child sends status lines up only when they change.
  for (bool isolated : {false, true}) {
    auto kind = std::string{isolated ? "isolated" : "in process"};
    load("echo", "{}", isolated);
    test::collector out{*k, "test/echo/out"};
    auto line = [&](const std::string& key) -> std::optional<std::string> {
      auto d = k->status().details();
      auto i = d.find("echo." + key);
      return i == d.end() ? std::nullopt : std::optional<std::string>{i->second};
    };
    test::pub(*k, "test/echo/in", "status:note=hello");
    test::pub(*k, "test/echo/in", "status:other=stays");
    BOOST_REQUIRE(out.wait_for(2));
    BOOST_REQUIRE_MESSAGE(wait_until([&] { return line("note") == "hello"; }), kind);
    test::pub(*k, "test/echo/in", "status:note=");
    BOOST_REQUIRE(out.wait_for(3));
    BOOST_CHECK_MESSAGE(wait_until([&] { return !line("note").has_value(); }),
                        kind << ": the removed line is still shown");
    // The plugin's other line is not touched.
    BOOST_CHECK_MESSAGE(line("other") == "stays", kind);
    BOOST_REQUIRE(!k->unload("echo"));
  }
}

BOOST_AUTO_TEST_CASE(the_child_starts_with_no_blocked_signals) {
  // This process blocks SIGINT/SIGTERM/SIGHUP like groved; a child inheriting that mask
  // would never act on its parent-death SIGTERM and outlive a crashed groved.
  load("echo", "{}", true);
  auto pid = host_child("echo");
  BOOST_REQUIRE(pid > 0);
  BOOST_TEST(status_field(pid, "SigBlk") == "0000000000000000");
}

BOOST_AUTO_TEST_CASE(the_child_inherits_no_descriptor_but_its_channel) {
  // Opened without O_CLOEXEC, as a careless library (or an old TLS socket) would be.
  auto marker = dir.write("leak-marker", "x");
  int leaked = ::open(marker.c_str(), O_RDONLY);
  BOOST_REQUIRE(leaked >= 0);
  load("echo", "{}", true);
  auto pid = host_child("echo");
  BOOST_REQUIRE(pid > 0);
  std::vector<std::string> targets;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator{
         "/proc/" + std::to_string(pid) + "/fd", ec})
    targets.push_back(std::filesystem::read_symlink(e.path(), ec).string());
  ::close(leaked);
  BOOST_REQUIRE(!targets.empty());
  for (auto& t : targets)
    BOOST_TEST(t != marker.string());
  // The channel is there: the plugin answers through it.
  test::collector out{*k, "test/echo/out"};
  test::pub(*k, "test/echo/in", "through the channel");
  BOOST_TEST(out.wait_for(1));
}

BOOST_AUTO_TEST_CASE(unload_stops_the_child) {
  load("echo", "{}", true);
  // Children of this process only: a suite run beside this one has echo children too.
  BOOST_TEST(host_child("echo") > 0);
  BOOST_REQUIRE(!k->unload("echo"));
  BOOST_TEST(host_child("echo") == 0);
}

BOOST_AUTO_TEST_CASE(a_hung_isolated_init_times_out_and_its_child_goes) {
  test::kernel_fixture f{
    [](image_profile& p) { p.init_timeout = std::chrono::milliseconds{500}; }};
  // The gate is never opened: the child's init blocks for good.
  auto gate = f.dir.path() / "gate";
  auto err = f.try_load("echo", "{init_gate: '" + gate.string() + "'}", true);
  BOOST_TEST(err == errc::timeout);
  BOOST_TEST(contains(describe(err), "init did not finish within 500 ms"), describe(err));
  BOOST_TEST(f.k->plugins().plugins_size() == 0);
  // Unlike an in-process plugin, a child can be made to go: stopped, killed after the
  // grace period, and then nothing of it is left.
  BOOST_TEST(test::wait_until([&] { return f.k->host().abandoned() == 0; },
                              std::chrono::seconds{30}));
  BOOST_TEST(host_child("echo") == 0);
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

// The bus at its largest payload limit: an envelope it accepts can still make a frame
// over the plugin-host channel's cap (64 MiB) with its other fields.
struct largest_payloads : test::kernel_fixture {
  largest_payloads()
    : kernel_fixture([](image_profile& p) { p.max_payload_bytes = max_max_payload_bytes; }) {
  }
};

} // namespace

BOOST_FIXTURE_TEST_CASE(a_request_over_the_channels_cap_is_answered_too_large_at_once,
                        largest_payloads) {
  load("echo", "{prefix: 'iso:', serve: test/echo/in}", true);
  // A payload within the bus's limit, a content type that takes the frame past the
  // channel's cap: the caller gets too_large, not its timeout (an hour, so a lost
  // answer would show as this test's own timeout).
  Envelope big;
  big.set_topic("test/echo/in");
  big.set_payload(std::string(max_max_payload_bytes, 'x'));
  big.set_content_type(std::string(2u << 20, 't'));
  auto r = k->request(std::move(big), std::chrono::hours{1});
  BOOST_REQUIRE(!r);
  BOOST_TEST(r.error() == errc::too_large, describe(r.error()));
  // The channel and the child are fine: the next request is answered.
  r = k->request("test/echo/in", "ping", std::chrono::seconds{30});
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  BOOST_TEST(r->payload() == "iso:ping");
  BOOST_TEST(info("echo").restarts() == 0u);
}
