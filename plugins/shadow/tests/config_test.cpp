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

BOOST_AUTO_TEST_CASE(no_configuration_syncs_nothing) {
  auto cfg = shadow_config::map().load("{}", "image.yaml");
  BOOST_REQUIRE(cfg);
  BOOST_CHECK(cfg->synchronize.core_thing.thing_name.empty());
  BOOST_CHECK(cfg->synchronize.shadow_documents.empty());
  BOOST_CHECK(cfg->synchronize.direction == grove::shadow::sync_direction::between);
  BOOST_CHECK(cfg->strategy.type == grove::shadow::sync_strategy::real_time);
  BOOST_CHECK_EQUAL(cfg->rate_limits.max_outbound, 100); // shadow manager's default
}

BOOST_AUTO_TEST_CASE(cloud_sync_keys_as_shadow_manager_names_them) {
  auto cfg = shadow_config::map().load(R"(
synchronize:
  coreThing: {thingName: core, classic: false, namedShadows: [config]}
  shadowDocuments: [{thingName: lamp, namedShadows: [a, b]}, {thingName: fan}]
  direction: deviceToCloud
strategy: {type: periodic, delay: 60}
rateLimits: {maxOutboundSyncUpdatesPerSecond: 5})",
                                       "image.yaml");
  BOOST_REQUIRE_MESSAGE(cfg, (cfg ? std::string{} : grove::describe(cfg.error())));
  const auto& sync = cfg->synchronize;
  BOOST_CHECK_EQUAL(sync.core_thing.thing_name, "core");
  BOOST_CHECK(!sync.core_thing.classic);
  BOOST_REQUIRE_EQUAL(sync.core_thing.named_shadows.size(), 1u);
  BOOST_REQUIRE_EQUAL(sync.shadow_documents.size(), 2u);
  BOOST_CHECK_EQUAL(sync.shadow_documents[0].thing_name, "lamp");
  BOOST_CHECK(sync.shadow_documents[0].classic); // default
  BOOST_CHECK_EQUAL(sync.shadow_documents[0].named_shadows.size(), 2u);
  BOOST_CHECK(sync.direction == grove::shadow::sync_direction::device_to_cloud);
  BOOST_CHECK(cfg->strategy.type == grove::shadow::sync_strategy::periodic);
  BOOST_CHECK_EQUAL(cfg->strategy.delay.count(), 60);
  BOOST_CHECK_EQUAL(cfg->rate_limits.max_outbound, 5);
  for (auto bad : {"synchronize: {shadowDocuments: [{classic: true}]}",
                   "synchronize: {shadowDocuments: [{thingName: 'a/b'}]}",
                   "synchronize: {shadowDocuments: [{thingName: a, namedShadows: ['#']}]}",
                   "synchronize: {coreThing: {thingName: 'x+y'}}",
                   "synchronize: {direction: sideways}", "strategy: {type: sometimes}",
                   "strategy: {delay: 0}", "rateLimits: {maxOutboundSyncUpdatesPerSecond: 0}"}) {
    auto r = shadow_config::map().load(bad, "image.yaml");
    BOOST_CHECK_MESSAGE(!r, bad);
    if (!r)
      BOOST_TEST_MESSAGE(grove::describe(r.error()));
  }
}

BOOST_AUTO_TEST_CASE(local_request_limits_as_shadow_manager_names_them) {
  auto cfg = shadow_config::map().load("{}", "image.yaml");
  BOOST_REQUIRE(cfg);
  BOOST_CHECK_EQUAL(cfg->rate_limits.max_total_local, 200);    // shadow manager's defaults
  BOOST_CHECK_EQUAL(cfg->rate_limits.max_local_per_thing, 20);
  cfg = shadow_config::map().load(
    "rateLimits: {maxTotalLocalRequestsRate: 1000000, maxLocalRequestsPerSecondPerThing: 1}",
    "image.yaml");
  BOOST_REQUIRE_MESSAGE(cfg, (cfg ? std::string{} : grove::describe(cfg.error())));
  BOOST_CHECK_EQUAL(cfg->rate_limits.max_total_local, 1000000);
  BOOST_CHECK_EQUAL(cfg->rate_limits.max_local_per_thing, 1);
  // Shadow manager requires more than 0; Grove also caps them at a million.
  for (auto bad : {"rateLimits: {maxTotalLocalRequestsRate: 0}",
                   "rateLimits: {maxLocalRequestsPerSecondPerThing: 0}",
                   "rateLimits: {maxLocalRequestsPerSecondPerThing: -5}",
                   "rateLimits: {maxTotalLocalRequestsRate: 1000001}",
                   "rateLimits: {maxLocalRequestsPerSecondPerThing: many}",
                   "rateLimits: {maxLocalRequestsPerThing: 5}"}) {
    auto r = shadow_config::map().load(bad, "image.yaml");
    BOOST_CHECK_MESSAGE(!r, bad);
    if (!r)
      BOOST_TEST_MESSAGE(grove::describe(r.error()));
  }
}

BOOST_AUTO_TEST_CASE(readme_table_is_the_generated_one) {
  auto generated = shadow_config::map().markdown();
  BOOST_TEST(grove::test::readme_config_table(SHADOW_README) == generated,
             "README.md's table is stale; replace the lines between the config-table "
             "markers with `groved --describe-config shadow`:\n"
               << generated);
}
