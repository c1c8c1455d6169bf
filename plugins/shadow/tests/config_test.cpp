// The shadow plugin's configuration (plugins/shadow/src/config.hpp): defaults that serve
// the group with no configuration at all, the size range of shadow manager, and
// README.md's table being the generated one.

#define BOOST_TEST_MODULE shadow_config
#include <boost/test/unit_test.hpp>

#include "config.hpp"
#include "test_support.hpp"

using grove::shadow::shadow_config;

BOOST_AUTO_TEST_CASE(no_configuration_at_all_serves_the_group) {
  auto cfg = shadow_config::map().load("{}", "image.yaml", "/var/lib/grove/plugins/shadow");
  BOOST_REQUIRE_MESSAGE(cfg, (cfg ? std::string{} : grove::describe(cfg.error())));
  BOOST_CHECK_EQUAL(cfg->file.string(), "/var/lib/grove/plugins/shadow/shadow.db");
  BOOST_CHECK_EQUAL(cfg->max_document_bytes, 8192);
  BOOST_CHECK_EQUAL(cfg->max_inflight_per_thing, 10);
  BOOST_CHECK(!cfg->allow_unknown_things);
}

BOOST_AUTO_TEST_CASE(document_size_within_shadow_managers_range) {
  const auto map = shadow_config::map();
  BOOST_CHECK(map.load("max_document_bytes: 30720"));
  for (auto bad : {"max_document_bytes: 30721", "max_document_bytes: 8191",
                   "max_inflight_per_thing: 0", "allow_unknown_things: maybe", "nope: 1"}) {
    auto cfg = map.load(bad, "image.yaml");
    BOOST_CHECK_MESSAGE(!cfg, bad);
    if (!cfg)
      BOOST_TEST_MESSAGE(grove::describe(cfg.error()));
  }
}

BOOST_AUTO_TEST_CASE(readme_table_is_the_generated_one) {
  auto generated = shadow_config::map().markdown();
  BOOST_TEST(grove::test::readme_config_table(SHADOW_README) == generated,
             "README.md's table is stale; replace the lines between the config-table "
             "markers with `groved --describe-config shadow`:\n"
               << generated);
}
