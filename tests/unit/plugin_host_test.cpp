#define BOOST_TEST_MODULE plugin_host_test
#include <boost/test/unit_test.hpp>

#include <future>

#include "grove/errors.hpp"
#include "grove/kernel/kernel.hpp"
#include "test_util.hpp"

using namespace grove;

namespace {

struct fixture {
  test::temp_dir dir;
  std::unique_ptr<kernel> k;

  fixture() {
    restart_with({});
  }

  /// Replaces the kernel by one whose profile `tweak` adjusts (timeouts).
  void restart_with(std::function<void(image_profile&)> tweak) {
    k.reset();
    auto p = test::make_profile(dir.path());
    p.restart.backoff_initial = std::chrono::milliseconds{1};
    p.restart.backoff_max = std::chrono::milliseconds{5};
    p.restart.max_failures = 3;
    if (tweak)
      tweak(p);
    k = std::make_unique<kernel>(std::move(p), kernel_options{false, false});
    BOOST_REQUIRE(!k->start());
  }

  plugin_spec spec(const std::string& name, const std::string& config_yaml = "{}") {
    plugin_spec s;
    s.name = name;
    s.config = make_yaml(YAML::Load(config_yaml));
    s.file = "test.yaml";
    s.line = 1;
    s.queue.overflow = overflow_policy::block;
    return s;
  }

  control::PluginInfo info(const std::string& name) {
    auto all = k->plugins();
    for (auto& p : all.plugins())
      if (p.name() == name)
        return p;
    BOOST_FAIL("plugin " << name << " not listed");
    return {};
  }

  std::string error_text(const caf::error& err) {
    return describe(err);
  }
};

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

/// The file a test plugin waits for in init or stop (its `init_gate`/`stop_gate`);
/// opened at the latest when this goes out of scope, so no plugin thread outlives
/// a failed test. Declare it after the futures whose loads it releases.
struct gate {
  std::filesystem::path path;

  ~gate() {
    open();
  }

  void open() const {
    std::ofstream{path} << "open\n";
  }

  /// How many times a plugin started waiting at it.
  size_t waiters() const {
    std::ifstream in{path.string() + ".waiting"};
    size_t n = 0;
    for (std::string line; std::getline(in, line);)
      ++n;
    return n;
  }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(host, fixture)

BOOST_AUTO_TEST_CASE(good_plugin_runs_and_echoes) {
  test::collector out{*k, "test/echo/out"};
  BOOST_REQUIRE(!k->host().load(spec("echo", "{prefix: '>'}")));
  BOOST_TEST(std::filesystem::is_directory(dir.path() / "var/plugins/echo"));
  test::pub(*k, "test/echo/in", "hello");
  BOOST_REQUIRE(out.wait_for(1));
  BOOST_TEST(out.messages()[0].payload() == ">hello");
  BOOST_TEST(out.messages()[0].source() == "echo");
  auto i = info("echo");
  BOOST_TEST(i.state() == "running");
  BOOST_TEST(i.version() == "1.0.0");
  BOOST_TEST(i.restarts() == 0u);
}

BOOST_AUTO_TEST_CASE(missing_file) {
  auto err = k->host().load(spec("does_not_exist"));
  BOOST_TEST(err == errc::load_failed);
  BOOST_TEST(contains(error_text(err), "no such file"), error_text(err));
  BOOST_TEST(k->plugins().plugins_size() == 0);
}

BOOST_AUTO_TEST_CASE(wrong_abi_and_caf_and_missing_symbol) {
  auto err = k->host().load(spec("wrong_abi"));
  BOOST_TEST(err == errc::abi_mismatch);
  BOOST_TEST(contains(error_text(err),
                      "plugin ABI " + std::to_string(GROVE_PLUGIN_ABI_VERSION + 1)
                        + ", kernel speaks " + std::to_string(GROVE_PLUGIN_ABI_VERSION)),
             error_text(err));
  err = k->host().load(spec("wrong_caf"));
  BOOST_TEST(err == errc::abi_mismatch);
  BOOST_TEST(contains(error_text(err), "CAF"), error_text(err));
  err = k->host().load(spec("no_symbol"));
  BOOST_TEST(err == errc::load_failed);
  BOOST_TEST(contains(error_text(err), "grove_plugin_entry_v1"), error_text(err));
  // The kernel still works.
  BOOST_REQUIRE(!k->host().load(spec("echo")));
  BOOST_TEST(k->plugins().plugins_size() == 1);
}

BOOST_AUTO_TEST_CASE(other_headers_or_libraries_are_refused_naming_what_differs) {
  // Same ABI version number, but the SDK header hash says plugin.hpp differs.
  auto err = k->host().load(spec("wrong_headers"));
  BOOST_TEST(err == errc::abi_mismatch);
  auto text = error_text(err);
  BOOST_TEST(contains(text, "other SDK headers"), text);
  BOOST_TEST(contains(text, "plugin.hpp 000000000000 (kernel: "), text);
  BOOST_TEST(!contains(text, "errors.hpp"), text); // only what differs is named
  // Same headers, other compiler and yaml-cpp.
  err = k->host().load(spec("wrong_libs"));
  BOOST_TEST(err == errc::abi_mismatch);
  text = error_text(err);
  BOOST_TEST(contains(text, "compiler clang 99 (kernel: "), text);
  BOOST_TEST(contains(text, "yaml-cpp 0.6.3 (kernel: "), text);
  BOOST_TEST(!contains(text, "fmt"), text);
  BOOST_TEST(k->plugins().plugins_size() == 0);
  // The kernel's own build information names real versions, not placeholders.
  std::string info = kernel_build_info();
  BOOST_TEST(!contains(info, "unknown"), info);
  BOOST_TEST(contains(info, "yaml-cpp "), info);
  BOOST_REQUIRE(!k->host().load(spec("echo")));
}

BOOST_AUTO_TEST_CASE(init_throws_or_fails) {
  auto err = k->host().load(spec("init_throws"));
  BOOST_TEST(err == errc::init_failed);
  BOOST_TEST(contains(error_text(err), "init threw: init exploded on purpose"),
             error_text(err));
  err = k->host().load(spec("init_fails"));
  BOOST_TEST(err == errc::init_failed);
  BOOST_TEST(contains(error_text(err), "init refused on purpose"), error_text(err));
  BOOST_TEST(k->plugins().plugins_size() == 0);
  BOOST_TEST(k->status().subscriptions() == 0u); // nothing half-loaded stays
}

BOOST_AUTO_TEST_CASE(duplicate_name) {
  BOOST_REQUIRE(!k->host().load(spec("echo")));
  auto err = k->host().load(spec("echo"));
  BOOST_TEST(err == errc::duplicate_plugin);
}

BOOST_AUTO_TEST_CASE(concurrent_loads_of_one_name_start_one_plugin) {
  auto at = dir.path() / "init-gate";
  auto s = spec("echo", "{init_gate: '" + at.string() + "'}");
  auto first = std::async(std::launch::async, [&] { return k->host().load(s); });
  auto second = std::future<caf::error>{};
  gate g{at};
  BOOST_REQUIRE(test::wait_until([&] { return g.waiters() == 1; }));
  // The first load is inside init now. A second load of the name must be refused at
  // once; were the check and the insert apart, it would pass and wait in init too.
  second = std::async(std::launch::async, [&] { return k->host().load(s); });
  BOOST_REQUIRE(test::wait_until([&] {
    return second.wait_for(std::chrono::seconds{0}) == std::future_status::ready
           || g.waiters() > 1;
  }));
  BOOST_TEST(g.waiters() == 1u);
  g.open();
  auto e1 = first.get();
  auto e2 = second.get();
  BOOST_TEST(!e1);
  BOOST_TEST(e2 == errc::duplicate_plugin);
  BOOST_TEST(contains(error_text(e2), "is being loaded"), error_text(e2));
  BOOST_TEST(k->host().names() == std::vector<std::string>{"echo"});
}

BOOST_AUTO_TEST_CASE(hung_init_times_out_while_the_kernel_answers) {
  restart_with([](image_profile& p) { p.init_timeout = std::chrono::milliseconds{300}; });
  auto at = dir.path() / "init-gate";
  auto load = std::async(std::launch::async, [&] {
    return k->host().load(spec("echo", "{init_gate: '" + at.string() + "'}"));
  });
  gate g{at};
  BOOST_REQUIRE(test::wait_until([&] { return g.waiters() == 1; }));
  // What the control socket serves answers while init hangs.
  auto st = k->status();
  BOOST_TEST(st.pid() == static_cast<uint32_t>(getpid()));
  BOOST_TEST(st.plugins_size() == 0);
  BOOST_REQUIRE_MESSAGE(test::wait_until([&] {
    return load.wait_for(std::chrono::seconds{0}) == std::future_status::ready;
  }), "load still waits for init after 10 s");
  auto err = load.get();
  BOOST_TEST(err == errc::timeout);
  BOOST_TEST(contains(error_text(err), "init did not finish within 300 ms"), error_text(err));
  BOOST_TEST(k->plugins().plugins_size() == 0);
  BOOST_TEST(k->host().abandoned() == 1u);
  // Another plugin loads while the stuck one holds its thread.
  BOOST_TEST(!k->host().load(spec("echo_b")));
  // Once init returns, the given-up slot stops and leaves nothing on the bus.
  g.open();
  BOOST_TEST(test::wait_until([&] { return k->host().abandoned() == 0; }));
  BOOST_TEST(test::pub(*k, "test/echo/in", "x").delivered == 1u); // echo_b only
  BOOST_TEST(k->host().names() == std::vector<std::string>{"echo_b"});
}

BOOST_AUTO_TEST_CASE(hung_stop_does_not_hang_unload) {
  restart_with([](image_profile& p) { p.stop_timeout = std::chrono::milliseconds{300}; });
  auto at = dir.path() / "stop-gate";
  BOOST_REQUIRE(!k->host().load(spec("echo", "{stop_gate: '" + at.string() + "'}")));
  auto unload = std::async(std::launch::async, [&] { return k->unload("echo"); });
  gate g{at};
  BOOST_REQUIRE_MESSAGE(test::wait_until([&] {
    return unload.wait_for(std::chrono::seconds{0}) == std::future_status::ready;
  }), "unload still waits for stop after 10 s");
  auto err = unload.get();
  BOOST_TEST(err == errc::timeout);
  BOOST_TEST(contains(error_text(err), "did not stop within 300 ms"), error_text(err));
  BOOST_TEST(g.waiters() == 1u);
  BOOST_TEST(k->plugins().plugins_size() == 0);
  BOOST_TEST(k->host().abandoned() == 1u);
  g.open();
  BOOST_TEST(test::wait_until([&] { return k->host().abandoned() == 0; }));
}

BOOST_AUTO_TEST_CASE(config_checked_against_plugin_schema) {
  auto err = k->host().load(spec("echo", "{prefix: x, sloow_us: 5}"));
  BOOST_TEST(err == errc::invalid_config);
  BOOST_TEST(contains(error_text(err), "plugins.echo.config.sloow_us: unknown key"),
             error_text(err));
  BOOST_TEST(contains(error_text(err), "test.yaml:1:"), error_text(err));
  err = k->host().load(spec("echo", "{slow_us: -4}"));
  BOOST_TEST(contains(error_text(err), "must be at least 0"), error_text(err));
  BOOST_TEST(k->plugins().plugins_size() == 0);
}

BOOST_AUTO_TEST_CASE(unsupported_isolation_is_refused) {
  auto s = spec("echo");
  s.isolation = "process";
  auto err = k->host().load(s);
  BOOST_TEST(err == errc::unsupported);
}

BOOST_AUTO_TEST_CASE(crash_restarts_and_keeps_queued_messages) {
  test::collector out{*k, "test/echo/out"};
  BOOST_REQUIRE(!k->host().load(spec("echo", "{crash_on: boom}")));
  test::pub(*k, "test/echo/in", "a");
  test::pub(*k, "test/echo/in", "boom");
  for (int i = 0; i < 50; ++i)
    test::pub(*k, "test/echo/in", std::to_string(i));
  // Messages behind the crash wait in the slot and reach the restarted instance.
  BOOST_REQUIRE(out.wait_for(51));
  auto msgs = out.messages();
  BOOST_TEST(msgs[0].payload() == "a");
  for (int i = 0; i < 50; ++i)
    BOOST_TEST(msgs[i + 1].payload() == std::to_string(i));
  auto i = info("echo");
  BOOST_TEST(i.state() == "running");
  BOOST_TEST(i.restarts() == 1u);
  BOOST_TEST(contains(i.last_error(), "crash requested by message"), i.last_error());
}

BOOST_AUTO_TEST_CASE(broken_after_repeated_failures) {
  test::collector out{*k, "test/echo/out"};
  BOOST_REQUIRE(!k->host().load(spec("echo", "{crash_on: boom}")));
  for (int i = 0; i < 3; ++i)
    test::pub(*k, "test/echo/in", "boom");
  // Wait until the plugin is marked broken: it unsubscribes, so a publish reaches no one.
  test::collector probe{*k, "test/echo/in"};
  for (int tries = 0; tries < 2000 && info("echo").state() != "broken"; ++tries) {
    test::pub(*k, "test/echo/in", "probe");
    BOOST_REQUIRE(probe.wait_for(static_cast<size_t>(tries) + 1));
  }
  auto i = info("echo");
  BOOST_TEST(i.state() == "broken");
  BOOST_TEST(i.restarts() == 2u);
  // It stays down: nothing more is echoed, and other plugins still work.
  BOOST_REQUIRE(!k->host().load(spec("echo_b", "{listen: b/in, answer: b/out}")));
  test::collector b_out{*k, "b/out"};
  test::pub(*k, "b/in", "still alive");
  BOOST_REQUIRE(b_out.wait_for(1));
  BOOST_TEST(info("echo").state() == "broken");
  // An operator can unload and load it again.
  BOOST_REQUIRE(!k->unload("echo"));
  BOOST_REQUIRE(!k->host().load(spec("echo")));
  BOOST_TEST(info("echo").state() == "running");
}

BOOST_AUTO_TEST_CASE(requests_reply_fail_and_time_out) {
  BOOST_REQUIRE(!k->host().load(spec("echo", "{prefix: 're:', serve: test/echo/in}")));
  auto r = k->request("test/echo/in", "ping", std::chrono::seconds{10});
  BOOST_REQUIRE(r);
  BOOST_TEST(r->payload() == "re:ping");
  BOOST_TEST(r->source() == "echo");
  r = k->request("test/echo/in", "fail", std::chrono::seconds{10});
  BOOST_REQUIRE(!r);
  // The responder's own error, code intact (not flattened to plugin_failed).
  BOOST_TEST(r.error() == errc::invalid_state);
  BOOST_TEST(contains(describe(r.error()), "asked to fail"), describe(r.error()));
  r = k->request("test/echo/in", "ignore", std::chrono::milliseconds{50});
  BOOST_REQUIRE(!r);
  BOOST_TEST(r.error() == errc::timeout);
  r = k->request("nobody/listens", "x", std::chrono::seconds{1});
  BOOST_REQUIRE(!r);
  BOOST_TEST(r.error() == errc::no_route);
}

BOOST_AUTO_TEST_CASE(unload_stops_delivery_and_unloads) {
  BOOST_REQUIRE(!k->host().load(spec("echo")));
  BOOST_TEST(test::pub(*k, "test/echo/in", "x").delivered == 1u);
  BOOST_REQUIRE(!k->unload("echo"));
  BOOST_TEST(test::pub(*k, "test/echo/in", "x").delivered == 0u);
  BOOST_TEST(k->unload("echo") == errc::unknown_plugin);
  BOOST_TEST(k->plugins().plugins_size() == 0);
}

BOOST_AUTO_TEST_SUITE_END()
