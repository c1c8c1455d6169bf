#define BOOST_TEST_MODULE kv_test
#include <boost/test/unit_test.hpp>

#include "grove/kernel/config.hpp"
#include "grove/kernel/plugin_host.hpp"
#include "grove/kv/client.hpp"
#include "grove/testing/harness.hpp"
#include "test_support.hpp"

// The SDK's example service plugin through its typed client, as another plugin, a tool
// or a test uses it: typed calls, errors with their codes, durability, counters.

using namespace grove;

namespace {

// A blocking transport for the typed client: the harness's request.
auto through(testing::harness& h) {
  return [&h](Envelope e) { return h.request(e.topic(), e.payload()); };
}

int64_t metric(testing::harness& h, const std::string& name) {
  auto info = h.info(); // the loop must not run over a destroyed temporary
  for (auto& m : info.metrics())
    if (m.name() == name)
      return m.value();
  return -1;
}

} // namespace

BOOST_AUTO_TEST_CASE(put_get_versions_and_errors_through_the_typed_client) {
  testing::harness h{KV_PLUGIN, "{max_value_bytes: 8}"};
  BOOST_REQUIRE(!h.start());
  kv::get_rpc get{std::string{kv::get_topic}};
  kv::put_rpc put{std::string{kv::put_topic}};
  auto missing = get.call_with(through(h), kv::make_get("lamp"));
  BOOST_REQUIRE(missing);
  BOOST_TEST(!missing->found());
  auto v1 = put.call_with(through(h), kv::make_put("lamp", "on"));
  BOOST_REQUIRE(v1);
  BOOST_TEST(v1->version() == 1u);
  auto v2 = put.call_with(through(h), kv::make_put("lamp", "off", 1));
  BOOST_REQUIRE(v2);
  BOOST_TEST(v2->version() == 2u);
  auto got = get.call_with(through(h), kv::make_get("lamp"));
  BOOST_REQUIRE(got);
  BOOST_TEST(got->found());
  BOOST_TEST(got->value() == "off");
  BOOST_TEST(got->version() == 2u);
  // A stale conditional put is refused with its code, not flattened to text.
  auto stale = put.call_with(through(h), kv::make_put("lamp", "on", 1));
  BOOST_REQUIRE(!stale);
  BOOST_TEST((stale.error() == errc::invalid_state));
  BOOST_TEST(describe(stale.error()).find("version 2") != std::string::npos,
             describe(stale.error()));
  auto big = put.call_with(through(h), kv::make_put("lamp", "123456789"));
  BOOST_REQUIRE(!big);
  BOOST_TEST((big.error() == errc::invalid_config));
  // Bytes that are no GetRequest are malformed, and the plugin keeps running.
  auto bad = h.request(std::string{kv::get_topic}, std::string("\xff\xff\xff", 3));
  BOOST_REQUIRE(!bad);
  BOOST_TEST((bad.error() == errc::malformed));
  BOOST_TEST(h.info().state() == "running");
  BOOST_TEST(metric(h, "puts") == 2);
  BOOST_TEST(metric(h, "refused") == 2);
  BOOST_TEST(metric(h, "gets") == 2); // puts look up without counting a get
}

BOOST_AUTO_TEST_CASE(values_survive_a_restart_of_the_kernel) {
  test::temp_dir dir;
  testing::harness_options opts;
  opts.write_dir = dir.path();
  {
    testing::harness h{KV_PLUGIN, "{}", opts};
    BOOST_REQUIRE(!h.start());
    kv::put_rpc put{std::string{kv::put_topic}};
    BOOST_REQUIRE(put.call_with(through(h), kv::make_put("switch", "1")));
    BOOST_TEST(std::filesystem::exists(h.state_dir() / "kv.db"));
  }
  testing::harness h{KV_PLUGIN, "{}", opts};
  BOOST_REQUIRE(!h.start());
  kv::get_rpc get{std::string{kv::get_topic}};
  auto got = get.call_with(through(h), kv::make_get("switch"));
  BOOST_REQUIRE(got);
  BOOST_TEST(got->found());
  BOOST_TEST(got->value() == "1");
  BOOST_TEST(got->version() == 1u);
}

BOOST_AUTO_TEST_CASE(readme_table_is_the_generated_one) {
  auto lib = open_plugin_library(KV_PLUGIN, "kv");
  BOOST_REQUIRE(lib);
  auto table = config_table((*lib)->schema);
  BOOST_TEST(test::readme_config_table(KV_README) == table,
             "sdk/examples/kv/README.md's table is stale; put `groved --describe-config kv` "
             "between the config-table markers:\n"
               << table);
}
