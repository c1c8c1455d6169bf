// message_manager's configuration map: defaults, file:line errors from the kernel's
// validator, the cross-field rules with today's messages, paths under the state
// directory, and that README.md's table is the generated one.

#define BOOST_TEST_MODULE mm_config_test
#include <boost/test/unit_test.hpp>

#include "bridge.hpp"
#include "config.hpp"
#include "test_support.hpp"

using namespace grove;
using namespace grove::mm;

namespace {

// A complete TLS broker section, so the cross-field rules pass.
constexpr const char* tls_broker = R"(broker:
  ca_file: pki/ca.crt
  cert_file: pki/server.crt
  key_file: pki/server.key
  client_cert_file: pki/grove.crt
  client_key_file: pki/grove.key
)";

// The cloud link on, for mappings from or to IotCore.
constexpr const char* cloud_on =
  "cloud: {enabled: true, host: h, thing_name: core-1, ca_file: /etc/ca.pem}\n";

std::string error_of(const std::string& yaml) {
  auto cfg = plugin_config::map().load(yaml, "image.yaml", "/state");
  BOOST_REQUIRE(!cfg);
  return describe(cfg.error());
}

template <class T>
std::string error_text(const caf::expected<T>& x) {
  return x ? std::string{} : describe(x.error());
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

} // namespace

BOOST_AUTO_TEST_CASE(map_is_sound) {
  BOOST_TEST(plugin_config::map().defect() == "");
}

BOOST_AUTO_TEST_CASE(defaults_fill_every_section) {
  auto cfg = plugin_config::map().load("development_mode: true", "image.yaml", "/state");
  BOOST_REQUIRE_MESSAGE(cfg, error_text(cfg));
  BOOST_TEST(cfg->development_mode);
  BOOST_TEST(cfg->broker.bind == "0.0.0.0");
  BOOST_TEST(cfg->broker.port == 8883);
  BOOST_TEST(cfg->broker.mosquitto == "/usr/sbin/mosquitto");
  BOOST_TEST(cfg->broker.plugin.empty());
  BOOST_TEST(cfg->broker.max_payload_bytes == 131072u);
  BOOST_TEST(cfg->broker.max_topic_bytes == 256u);
  BOOST_TEST(cfg->broker.max_queued_bytes == 67108864u);
  BOOST_TEST(cfg->broker.max_connections == 1024u);
  BOOST_TEST(cfg->broker.connect_timeout.count() == 10);
  BOOST_TEST(!cfg->cloud.enabled);
  BOOST_TEST(cfg->cloud.tls);
  BOOST_TEST(cfg->cloud.keep_alive.count() == 60);
  BOOST_TEST(cfg->cloud.retry_max.count() == 60);
  BOOST_TEST(cfg->cloud.retry_initial.count() == 1000);
  BOOST_TEST(cfg->cloud.max_inflight == 100);
  BOOST_TEST((cfg->spool.storage == spool_storage::memory));
  BOOST_TEST(cfg->spool.max_size_bytes == 2621440u);
  BOOST_TEST((cfg->spool.when_full == spool_when_full::drop_oldest));
}

BOOST_AUTO_TEST_CASE(values_enums_and_paths) {
  auto cfg = plugin_config::map().load(std::string{tls_broker} + R"(  port: 1883
  plugin: /opt/grove/broker.so
cloud: {enabled: true, host: h, thing_name: core-1, ca_file: /etc/ca.pem, retry_initial_ms: 250}
spool: {storage: file, when_full: reject_new, max_size_bytes: 1099511627776}
)",
                                       "image.yaml", "/state");
  BOOST_REQUIRE_MESSAGE(cfg, error_text(cfg));
  BOOST_TEST(cfg->broker.port == 1883);
  BOOST_TEST(cfg->broker.ca_file == "/state/pki/ca.crt"); // relative: under the state dir
  BOOST_TEST(cfg->broker.plugin == "/opt/grove/broker.so"); // absolute stays
  BOOST_TEST(cfg->cloud.ca_file == "/etc/ca.pem");
  BOOST_TEST(cfg->cloud.cert_file.empty()); // empty stays empty
  BOOST_TEST(cfg->cloud.retry_initial.count() == 250);
  BOOST_TEST((cfg->spool.storage == spool_storage::file));
  BOOST_TEST((cfg->spool.when_full == spool_when_full::reject_new));
  BOOST_TEST(cfg->spool.max_size_bytes == 1099511627776u);
}

BOOST_AUTO_TEST_CASE(schema_errors_keep_file_line_and_field) {
  auto err = error_of("development_mode: true\nspool:\n  max_size_bytes: 1000\n");
  BOOST_TEST(contains(err, "image.yaml:3:19: spool.max_size_bytes: must be at least 262144"),
             err);
  err = error_of("development_mode: true\nspool: {when_full: drop_newest}\n");
  BOOST_TEST(contains(err, "image.yaml:2:20: spool.when_full: must be one of drop_oldest, "
                           "reject_new, got 'drop_newest'"),
             err);
  err = error_of("development_mode: true\nbroker: {prot: 1}\n");
  BOOST_TEST(contains(err, "image.yaml:2:10: broker.prot: unknown key (allowed: bind, port,"),
             err);
  err = error_of("development_mode: yes please\n");
  BOOST_TEST(contains(err, "development_mode: expected true or false"), err);
}

BOOST_AUTO_TEST_CASE(cross_field_rules_keep_their_messages) {
  BOOST_TEST(contains(error_of("{}"), "broker.ca_file is required outside development_mode"));
  auto no_key = std::string{tls_broker};
  no_key.replace(no_key.find("pki/grove.key"), 13, "''");
  BOOST_TEST(contains(error_of(no_key),
                      "broker.client_key_file is required outside development_mode"));
  auto cloud = [](const std::string& c) {
    return std::string{tls_broker} + "cloud: {enabled: true, " + c + "}\n";
  };
  BOOST_TEST(contains(error_of(cloud("thing_name: t, ca_file: ca")),
                      "cloud.host is required when cloud.enabled"));
  BOOST_TEST(contains(error_of(cloud("host: h, ca_file: ca")),
                      "cloud.thing_name is required when cloud.enabled"));
  BOOST_TEST(contains(error_of(cloud("host: h, thing_name: t")),
                      "cloud.ca_file is required with TLS"));
  BOOST_TEST(contains(error_of(cloud("host: h, thing_name: t, tls: false")),
                      "cloud.tls: false is only allowed in development_mode"));
  BOOST_TEST(contains(error_of(cloud("host: h, thing_name: t, ca_file: ca, retry_initial_ms: "
                                     "5000, mqtt_max_connection_retry_interval: 2")),
                      "cloud.retry_initial_ms is above cloud.mqtt_max_connection_retry_interval"));
  // A disabled cloud is not checked, and development mode allows plain TCP to it.
  BOOST_TEST(bool(plugin_config::map().load(std::string{tls_broker}
                                            + "cloud: {enabled: false, host: h}\n")));
  BOOST_TEST(bool(plugin_config::map().load(
    "development_mode: true\ncloud: {enabled: true, host: h, thing_name: t, tls: false}\n")));
}

BOOST_AUTO_TEST_CASE(system_clients_are_plugin_names) {
  auto cfg = plugin_config::map().load(std::string{tls_broker});
  BOOST_REQUIRE(cfg);
  BOOST_TEST(cfg->cloud.system_clients.empty()); // nobody by default
  cfg = plugin_config::map().load(std::string{tls_broker}
                                  + "cloud: {system_clients: [shadow, my-sync_2]}\n");
  BOOST_REQUIRE(cfg);
  BOOST_TEST(cfg->cloud.system_clients == (std::vector<std::string>{"shadow", "my-sync_2"}));
  // A name that could not be a plugin's (it would also break the mm-9 topic).
  auto err = error_of(std::string{tls_broker} + "cloud: {system_clients: [shadow, \"a/#\"]}\n");
  BOOST_TEST(contains(err, "cloud.system_clients: invalid_config"), err);
}

BOOST_AUTO_TEST_CASE(bridge_mappings_are_read_and_checked) {
  auto cfg = plugin_config::map().load(std::string{tls_broker} + R"(bridge:
  mqtt_topic_mapping:
    - {name: up, topic: "clients/+/hello", source: LocalMqtt, target: Pubsub}
    - {name: down, topic: "replies/#", source: Pubsub, target: LocalMqtt,
       targetTopicPrefix: "core/"}
)");
  BOOST_REQUIRE_MESSAGE(cfg, error_text(cfg));
  const auto& ms = cfg->bridge.mqtt_topic_mapping;
  BOOST_REQUIRE(ms.size() == 2u);
  BOOST_TEST(ms[0].name == "up");
  BOOST_TEST(ms[0].source == "LocalMqtt");
  BOOST_TEST(ms[0].target_topic_prefix == "");
  BOOST_TEST(ms[1].target_topic_prefix == "core/");
  // None by default.
  BOOST_TEST(plugin_config::map().load(std::string{tls_broker})->bridge.mqtt_topic_mapping.empty());
  auto with = [](const std::string& entry) {
    return error_of(std::string{tls_broker} + "bridge:\n  mqtt_topic_mapping:\n    - " + entry
                    + "\n");
  };
  // The schema's errors name file, line and field.
  auto err = with("{name: m, topic: a, source: LocalMqt, target: Pubsub}");
  BOOST_TEST((contains(err, "image.yaml:9:")
              && contains(err, "source: must be one of LocalMqtt, Pubsub, IotCore")),
             err);
  err = with("{name: m, topic: a, target: Pubsub}");
  BOOST_TEST((contains(err, "image.yaml:") && contains(err, "source")), err);
  err = with("{name: m, topic: a, source: Pubsub, target: Pubsub, retain: true}");
  BOOST_TEST(contains(err, "unknown key"), err);
  // The bridge's own rules name the entry.
  err = with("{name: m, topic: \"a/#/b\", source: LocalMqtt, target: Pubsub}");
  BOOST_TEST(contains(err, "bridge.mqtt_topic_mapping[0] (m).topic: 'a/#/b' is no MQTT topic filter"),
             err);
  // Review #12: IotCore needs the cloud (tls_broker has it disabled).
  err = with("{name: up, topic: a, source: LocalMqtt, target: IotCore}");
  BOOST_TEST(contains(err, "bridge.mqtt_topic_mapping[0] (up): IotCore needs cloud.enabled"), err);
  err = with("{name: m, topic: a, source: IotCore, target: IotCore}");
  BOOST_TEST(contains(err, "(m).target: the same as its source (IotCore)"), err);
  err = with("{name: m, topic: a, source: Pubsub, target: IotCore, targetTopicPrefix: \"x/+/\"}");
  BOOST_TEST(contains(err, "(m).targetTopicPrefix: 'x/+/' has a wildcard"), err);
  err = with("{name: m, topic: \"#\", source: Pubsub, target: LocalMqtt, targetTopicPrefix: x}");
  BOOST_TEST((contains(err, "(m).targetTopicPrefix:") && contains(err, "end the prefix with '/'")),
             err);
  err = with("{name: m, topic: \"a\\nb\", source: Pubsub, target: LocalMqtt}");
  BOOST_TEST(contains(err, "(m).topic: a line break or a leading blank"), err);
  err = with("{name: m, topic: \"$grove/mm/in/x\", source: Pubsub, target: LocalMqtt}");
  BOOST_TEST(contains(err, "(m): topics under $grove/ are Grove's own"), err);
  // Nor split across targetTopicPrefix and topic, nor completed by a first-level wildcard
  // after a `$` prefix (a device's "grove/mm/out/x" would land on "$grove/mm/out/x").
  for (const char* split :
       {"{name: m, topic: \"/mm/out/shadow/#\", source: LocalMqtt, target: Pubsub, "
        "targetTopicPrefix: \"$grove\"}",
        "{name: m, topic: \"ve/mm/out/function/#\", source: LocalMqtt, target: Pubsub, "
        "targetTopicPrefix: \"$gro\"}",
        "{name: m, topic: \"+/mm/out/#\", source: LocalMqtt, target: Pubsub, "
        "targetTopicPrefix: \"$\"}",
        "{name: m, topic: \"#\", source: IotCore, target: Pubsub, targetTopicPrefix: \"$gr\"}"}) {
    err = with(split);
    BOOST_TEST(contains(err, "(m): topics under $grove/ are Grove's own"), split << ": " << err);
  }
  // A `$` prefix followed by a literal level stays allowed.
  auto dollar = plugin_config::map().load(
    std::string{tls_broker}
      + "bridge:\n  mqtt_topic_mapping:\n    - {name: m, topic: \"a/+\", source: LocalMqtt, "
        "target: Pubsub, targetTopicPrefix: \"$x/\"}\n");
  BOOST_TEST(bool{dollar}, error_text(dollar));
  err = error_of(std::string{tls_broker} + R"(bridge:
  mqtt_topic_mapping:
    - {name: m, topic: a, source: LocalMqtt, target: Pubsub}
    - {name: m, topic: b, source: LocalMqtt, target: Pubsub}
)");
  BOOST_TEST(contains(err, "bridge.mqtt_topic_mapping[1] (m).name: another mapping has this name"),
             err);
}

BOOST_AUTO_TEST_CASE(bridge_matches_and_writes_the_devices_table) {
  std::vector<bridge_mapping> ms{{"up", "clients/+/hello", "LocalMqtt", "Pubsub", ""},
                                 {"cloud", "clients/#", "LocalMqtt", "IotCore", "site/"},
                                 {"down", "replies/#", "Pubsub", "LocalMqtt", "core/"},
                                 {"cmd", "cmd/#", "IotCore", "LocalMqtt", ""}};
  bridge b{ms};
  auto hops = b.match(bridge_side::local_mqtt, "clients/A/hello");
  BOOST_REQUIRE(hops.size() == 2u);
  BOOST_TEST(hops[0].mapping == 0u);
  BOOST_TEST((hops[0].target == bridge_side::pubsub));
  BOOST_TEST(hops[0].topic == "clients/A/hello");
  BOOST_TEST((hops[1].target == bridge_side::iot_core));
  BOOST_TEST(hops[1].topic == "site/clients/A/hello");
  BOOST_TEST(b.match(bridge_side::pubsub, "clients/A/hello").empty()); // another source
  BOOST_TEST(b.match(bridge_side::local_mqtt, "replies/x").empty());
  BOOST_TEST(b.match(bridge_side::pubsub, "replies/x").at(0).topic == "core/replies/x");
  BOOST_TEST(b.filters(bridge_side::local_mqtt)
             == (std::vector<std::string>{"clients/+/hello", "clients/#"}));
  BOOST_TEST(b.filters(bridge_side::iot_core) == (std::vector<std::string>{"cmd/#"}));
  auto acl = b.acl_lines({"A", "B"});
  for (const char* line : {"pub A clients/+/hello\n", "pub B clients/#\n",
                           "deliver @bridge A core/replies/#\n", "deliver @bridge B core/replies/#\n",
                           "deliver @bridge A cmd/#\n"})
    BOOST_TEST(contains(acl, line), acl);
  // Issue 15 review #1: the bridge's relays from the cloud are its own too; a `@cloud`
  // line would let the table's cloud routes on cmd/# reach every device.
  BOOST_TEST(!contains(acl, "@cloud"), acl);
  BOOST_TEST(!contains(acl, "pub A replies"), acl);
  BOOST_TEST(!contains(acl, "deliver * "), acl); // never every injection (review #3)
  BOOST_TEST(bridge{}.acl_lines({"A"}).empty());
  // Issue 15 review #3: overlapping mappings to the same target topic relay once (the
  // first counts it); to another target or topic each relays.
  bridge overlap{{{"all", "a/#", "Pubsub", "LocalMqtt", ""},
                  {"one", "a/+", "Pubsub", "LocalMqtt", ""},
                  {"up", "a/+", "Pubsub", "IotCore", ""},
                  {"pre", "a/+", "Pubsub", "LocalMqtt", "p/"}}};
  hops = overlap.match(bridge_side::pubsub, "a/b");
  BOOST_REQUIRE(hops.size() == 3u);
  BOOST_TEST(hops[0].mapping == 0u);
  BOOST_TEST(hops[1].mapping == 2u);
  BOOST_TEST(hops[2].topic == "p/a/b");
}

// Review #4: a LocalMqtt source lets every group device publish on its filter; per thing
// with ${iot:Connection.Thing.ThingName}, and only so under $aws/.
BOOST_AUTO_TEST_CASE(bridge_local_sources_per_thing) {
  auto with = [](const std::string& entry) {
    return std::string{tls_broker} + "bridge:\n  mqtt_topic_mapping:\n    - " + entry + "\n";
  };
  auto err = error_of(with("{name: m, topic: \"$aws/things/+/shadow/update\", source: LocalMqtt, "
                           "target: IotCore}"));
  BOOST_TEST(contains(err, "(m).topic: a LocalMqtt source under $aws/ must name the publishing "
                           "device with ${iot:Connection.Thing.ThingName}"),
             err);
  err = error_of(with("{name: m, topic: \"a/${iot:Connection.Thing.ThingName}\", source: IotCore, "
                      "target: Pubsub}"));
  BOOST_TEST(contains(err, "is only for a LocalMqtt source or target"), err);
  err = error_of(with("{name: m, topic: \"a/${iot:Connection.Thing.ThingName}-x\", "
                      "source: LocalMqtt, target: Pubsub}"));
  BOOST_TEST(contains(err, "must be a whole level"), err);
  // The variable is a wildcard for the $grove/ rule: prefix "$gro" + a thing named "ve".
  err = error_of(with("{name: m, topic: \"${iot:Connection.Thing.ThingName}/mm/out/#\", "
                      "source: LocalMqtt, target: Pubsub, targetTopicPrefix: \"$\"}"));
  BOOST_TEST(contains(err, "(m): topics under $grove/ are Grove's own"), err);
  auto cfg = plugin_config::map().load(
    with("{name: shadow, topic: \"$aws/things/${iot:Connection.Thing.ThingName}/shadow/update\", "
         "source: LocalMqtt, target: Pubsub}"));
  BOOST_REQUIRE_MESSAGE(cfg, error_text(cfg));
  bridge b{cfg->bridge.mqtt_topic_mapping};
  BOOST_TEST(b.filters(bridge_side::local_mqtt)
             == (std::vector<std::string>{"$aws/things/+/shadow/update"}));
  BOOST_TEST(b.match(bridge_side::local_mqtt, "$aws/things/A/shadow/update").size() == 1u);
  auto acl = b.acl_lines({"A", "B"});
  BOOST_TEST(contains(acl, "pub A $aws/things/A/shadow/update\n"), acl);
  BOOST_TEST(contains(acl, "pub B $aws/things/B/shadow/update\n"), acl);
  BOOST_TEST(!contains(acl, "pub A $aws/things/B"), acl);
  BOOST_TEST(!contains(acl, "+"), acl);
}

// Issue 15 review #1: every group device may subscribe to what a mapping relays to
// LocalMqtt, so under $aws/ (shadow replies) only per thing: each device gets its own
// thing's, as clientdevices.Auth's policy with the variable would grant.
BOOST_AUTO_TEST_CASE(bridge_local_targets_per_thing) {
  auto with = [](const std::string& entry) {
    return std::string{tls_broker} + cloud_on + "bridge:\n  mqtt_topic_mapping:\n    - " + entry
           + "\n";
  };
  auto err = error_of(with("{name: m, topic: \"$aws/things/+/shadow/#\", source: IotCore, "
                           "target: LocalMqtt}"));
  BOOST_TEST(contains(err, "(m).topic: a LocalMqtt target under $aws/ must name the receiving "
                           "device with ${iot:Connection.Thing.ThingName}"),
             err);
  // The prefix counts: "$aws/" + "things/+/shadow/#" is the same target.
  err = error_of(with("{name: m, topic: \"things/+/shadow/#\", source: Pubsub, "
                      "target: LocalMqtt, targetTopicPrefix: \"$aws/\"}"));
  BOOST_TEST(contains(err, "a LocalMqtt target under $aws/"), err);
  auto cfg = plugin_config::map().load(
    with("{name: shadow, topic: \"$aws/things/${iot:Connection.Thing.ThingName}/shadow/#\", "
         "source: IotCore, target: LocalMqtt}"));
  BOOST_REQUIRE_MESSAGE(cfg, error_text(cfg));
  bridge b{cfg->bridge.mqtt_topic_mapping};
  // The cloud link subscribes for every thing; each device is delivered its own.
  BOOST_TEST(b.filters(bridge_side::iot_core)
             == (std::vector<std::string>{"$aws/things/+/shadow/#"}));
  BOOST_TEST(b.match(bridge_side::iot_core, "$aws/things/B/shadow/get/accepted").size() == 1u);
  auto acl = b.acl_lines({"A", "B"});
  BOOST_TEST(contains(acl, "deliver @bridge A $aws/things/A/shadow/#\n"), acl);
  BOOST_TEST(contains(acl, "deliver @bridge B $aws/things/B/shadow/#\n"), acl);
  BOOST_TEST(!contains(acl, "A $aws/things/B"), acl);
  BOOST_TEST(!contains(acl, "+"), acl);
}

// Issue 15 review #3: the bus hands message_manager one copy per matching filter; the
// bridge relays the first copy of each message only.
BOOST_AUTO_TEST_CASE(bus_copies_pass_the_first_of_each_message) {
  bus_copies c;
  BOOST_TEST(c.first(7, 1)); // one filter: every copy is a first
  BOOST_TEST(c.first(8, 1));
  BOOST_TEST(c.pending() == 0u);
  BOOST_TEST(c.first(9, 3)); // three filters: the next two copies are not
  BOOST_TEST(c.first(10, 2)); // another message's copies in between
  BOOST_TEST(!c.first(9, 3));
  BOOST_TEST(!c.first(10, 2));
  BOOST_TEST(!c.first(9, 3));
  BOOST_TEST(c.pending() == 0u);
  BOOST_TEST(c.first(9, 3)); // done with: an id seen again is a new message
  BOOST_TEST(!c.first(9, 3));
  BOOST_TEST(!c.first(9, 3));
  BOOST_TEST(c.pending() == 0u);
  // Copies that never come (dropped for a full queue) are forgotten, oldest first: one
  // message more than it remembers forgets 100, the oldest, and only it.
  const uint64_t last = 100 + bus_copies::max_pending;
  for (uint64_t id = 100; id <= last; ++id)
    BOOST_TEST(c.first(id, 2));
  BOOST_TEST(c.pending() == bus_copies::max_pending);
  BOOST_TEST(!c.first(101, 2)); // the oldest remembered
  BOOST_TEST(!c.first(last, 2)); // the newest
  BOOST_TEST(c.first(100, 2)); // forgotten: its copy counts as a new message
}

BOOST_AUTO_TEST_CASE(readme_table_is_the_generated_one) {
  auto generated = plugin_config::map().markdown();
  BOOST_TEST(contains(generated, "| `spool.max_size_bytes` | int | `2621440` | 262144–"),
             generated);
  BOOST_TEST(test::readme_config_table(MM_README) == generated,
             "README.md's table is stale; replace the lines between the config-table "
             "markers with `groved --describe-config message_manager`:\n"
               << generated);
}
