#define BOOST_TEST_MODULE plugin_host_test
#include <boost/test/unit_test.hpp>

#include "grove/errors.hpp"
#include "grove/kernel/kernel.hpp"
#include "test_util.hpp"

using namespace grove;

namespace {

struct fixture {
  test::temp_dir dir;
  std::unique_ptr<kernel> k;

  fixture() {
    auto p = test::make_profile(dir.path());
    p.restart.backoff_initial = std::chrono::milliseconds{1};
    p.restart.backoff_max = std::chrono::milliseconds{5};
    p.restart.max_failures = 3;
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
  BOOST_REQUIRE(!k->host().load(spec("echo", "{prefix: 're:'}")));
  auto r = k->request("test/echo/in", "ping", std::chrono::seconds{10});
  BOOST_REQUIRE(r);
  BOOST_TEST(r->payload() == "re:ping");
  BOOST_TEST(r->source() == "echo");
  r = k->request("test/echo/in", "fail", std::chrono::seconds{10});
  BOOST_REQUIRE(!r);
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
