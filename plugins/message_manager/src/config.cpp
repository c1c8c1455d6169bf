#include "config.hpp"

#include <set>

#include "bridge.hpp"
#include "grove/kernel/bus.hpp"
#include "grove/kernel/plugin_name.hpp"
#include "routes.hpp"
#include "grove/topic.hpp"

namespace grove::mm {

config_map<broker_config> broker_config::map() {
  using c = broker_config;
  return config_map<c>{}
    .key("bind", &c::bind, "0.0.0.0", "listener address")
    .key("port", &c::port, 8883, range{1, 65535}, "listener port")
    .key("mosquitto", &c::mosquitto, "/usr/sbin/mosquitto", "broker executable")
    .key("plugin", &c::plugin, "",
         "Grove's broker plugin `grove_broker_plugin.so`; empty = the one in "
         "`grove/broker/` of the library directory beside groved's `bin/` (installed or "
         "build tree)")
    .key("ca_file", &c::ca_file, "",
         "the group CA: device certificates must chain to it (required outside "
         "development mode)")
    .key("ca_dir", &c::ca_dir, "",
         "more group CAs device certificates may chain to: a directory of OpenSSL hashed "
         "names (`<subject hash>.0`), Mosquitto's `capath`, looked up at each handshake, so a "
         "CA added there is trusted without a broker restart (deployment's `group_ca_dir`/trust, "
         "README \"Group CA rotation\")")
    .key("cert_file", &c::cert_file, "", "the broker's server certificate")
    .key("key_file", &c::key_file, "", "the broker's server key")
    .key("client_cert_file", &c::client_cert_file, "",
         "certificate with CN `grove` (from the group CA) for Grove's own client")
    .key("client_key_file", &c::client_key_file, "", "key of `client_cert_file`")
    .key("max_payload_bytes", &c::max_payload_bytes, 131072, range{1024, 268369919},
         "a device's publish with a larger payload is refused and counted "
         "(`broker.refused_oversize`); Mosquitto's `max_packet_size` (the MQTT 5 "
         "CONNACK's Maximum Packet Size) is this plus 65536 for topic and properties")
    .key("max_topic_bytes", &c::max_topic_bytes, 256, range{16, 65535},
         "a device's publish on a longer topic is refused and counted "
         "(`broker.refused_oversize`); 256 as AWS IoT Core")
    .key("max_queued_bytes", &c::max_queued_bytes, 67108864, range{65536, 17179869184},
         "bytes of QoS 1 messages the broker queues per client (`max_queued_bytes`); "
         "beyond it (or 100000 messages) new ones are dropped for that client")
    .key("max_connections", &c::max_connections, 1024, range{2, 1000000},
         "connections the broker's listener accepts at once, Grove's own client included "
         "(`max_connections`)")
    .key("connect_timeout_seconds", &c::connect_timeout, 10, range{1, 600},
         "a connection that sent nothing (no TLS handshake, no CONNECT) for this long is "
         "closed by the broker plugin")
    // --- identity and TLS ---
    .key("client_id_patterns", &c::client_id_patterns, std::vector<std::string>{"<thing>"},
         "client ids a device may use: `<thing>` (its certificate's CN) and patterns that "
         "start with it, a trailing `*` matching any rest (e.g. `<thing>-*`); any other id "
         "is refused at CONNECT (not authorized). `grove` and its patterns are reserved for "
         "the `grove` certificate")
    .key("tls_min_version", &c::tls_min_version, "1.2", one_of{"1.2", "1.3"},
         "lowest TLS version the device listener accepts")
    .key("tls_ciphers", &c::tls_ciphers, "ECDHE+AESGCM:ECDHE+CHACHA20",
         "TLS 1.2 cipher suites (OpenSSL list); the default allows only ECDHE with AEAD. "
         "TLS 1.3 suites are all AEAD")
    .key("crl_file", &c::crl_file, "",
         "revocation list of the group CA (`tools/grove-certs revoke`); a revoked "
         "certificate fails the TLS handshake. Read when the broker starts")
    .key("server_names", &c::server_names, std::vector<std::string>{},
         "extra DNS names of the broker's certificate: read by `tools/grove-certs "
         "ensure-default --config` when it makes the default PKI")
    .key("server_ips", &c::server_ips, std::vector<std::string>{},
         "IP addresses of the broker's certificate, as server_names (default 127.0.0.1)")
    .key("run_as_user", &c::run_as_user, "grove-broker",
         "when groved runs as root, the broker drops to this unprivileged user (a system "
         "user that tools/deps creates; groved refuses when it is missing) that owns only "
         "the broker's state directory")
    .key("release_code_pages", &c::release_code_pages, true,
         "2-3 s after Grove's client connects to a started broker, mark the broker's code "
         "cold so the OS reclaims its start-up pages (process_madvise MADV_PAGEOUT, as "
         "kernel.release_code_pages does for groved): about 1.2 MB less on an idle device; "
         "the kernel repeats it after groved's own release (`kernel.release_code_pages`), "
         "when the pages the broker shared with groved (OpenSSL, the C and C++ runtimes) "
         "are the broker's alone: broker 5.18 → 2.7 MB PSS idle. Needs groved as root "
         "(CAP_SYS_NICE); otherwise said once in the log and skipped");
}

config_map<cloud_config> cloud_config::map() {
  using c = cloud_config;
  return config_map<c>{}
    .key("enabled", &c::enabled, false,
         "connect to the cloud; without it cloud-bound messages stay in the spool")
    .key("host", &c::host, "", "the cloud MQTT endpoint (required when enabled)")
    .key("port", &c::port, 8883, range{1, 65535}, "port of the endpoint")
    .key("thing_name", &c::thing_name, "",
         "the core's thing name: the MQTT client id (required when enabled)")
    .key("tls", &c::tls, true, "`false` only in development mode")
    .key("ca_file", &c::ca_file, "", "CA to verify the endpoint (required with TLS)")
    .key("cert_file", &c::cert_file, "", "the core's client certificate")
    .key("key_file", &c::key_file, "", "the core's client key")
    .key("keep_alive_seconds", &c::keep_alive, 60, range{5, 1200}, "MQTT keep-alive, seconds")
    .key("mqtt_max_connection_retry_interval", &c::retry_max, 60, range{1, 86400},
         "seconds; cap of the reconnect back-off (Greengrass' "
         "`mqttMaxConnectionRetryInterval`)")
    .key("retry_initial_ms", &c::retry_initial, 1000, range{10, 600000},
         "first reconnect delay; doubles per failure up to the cap, times a jitter factor "
         "in [0.5, 1]")
    .key("max_inflight", &c::max_inflight, 100, range{1, 65535},
         "QoS 1 messages awaiting PUBACK")
    .key("system_clients", &c::system_clients, std::vector<std::string>{},
         "plugins (by name, e.g. `shadow`) that may publish to the cloud through the "
         "spool and subscribe to cloud topics (the system API, mm-6 to mm-9); any other "
         "caller is refused with `not_authorized`. Applies with the cloud disabled too "
         "(publishes wait in the spool)");
}

config_map<spool_config> spool_config::map() {
  using c = spool_config;
  return config_map<c>{}
    .key("storage", &c::storage, spool_storage::memory,
         names<spool_storage>{{"memory", spool_storage::memory},
                              {"file", spool_storage::file}},
         "`memory` (lost on restart) or `file` (SQLite WAL in the state directory, "
         "survives `kill -9`)")
    .key("max_size_bytes", &c::max_size_bytes, 2621440, range{262144, 1099511627776},
         "capacity; below 262144 the profile is refused (Greengrass refuses to start)")
    .key("when_full", &c::when_full, spool_when_full::drop_oldest,
         names<spool_when_full>{{"drop_oldest", spool_when_full::drop_oldest},
                                {"reject_new", spool_when_full::reject_new}},
         "what a full spool does with a new message")
    .key("disk_reserve_bytes", &c::disk_reserve_bytes, default_disk_reserve_bytes,
         range{0, 1099511627776},
         "`file`: free space the spool leaves on its filesystem; with less, the spool is "
         "full (`when_full` applies) whatever `max_size_bytes` says");
}

config_map<bridge_mapping> bridge_mapping::map() {
  using c = bridge_mapping;
  return config_map<c>{}
    .key_no_default("name", &c::name, required,
                    "the mapping's name (the key of Greengrass' `mqttTopicMapping`), unique")
    .key_no_default("topic", &c::topic, required,
                    "MQTT topic filter of the messages relayed (`+` and `#` allowed)")
    .key_no_default("source", &c::source, required,
                    one_of{"LocalMqtt", "Pubsub", "IotCore"},
                    "where they come from: the devices' broker, the local bus (and "
                    "functions' publishes), the cloud")
    .key_no_default("target", &c::target, required,
                    one_of{"LocalMqtt", "Pubsub", "IotCore"},
                    "where they go (not the source)")
    .key("targetTopicPrefix", &c::target_topic_prefix, "",
         "put in front of the message's topic at the target");
}

config_map<bridge_config> bridge_config::map() {
  using c = bridge_config;
  return config_map<c>{}.list(
    "mqtt_topic_mapping", &c::mqtt_topic_mapping, bridge_mapping::map(),
    "Greengrass v2's MQTT bridge (`aws.greengrass.clientdevices.mqtt.Bridge`'s "
    "`mqttTopicMapping` as a list): each message from `source` on a topic matching "
    "`topic` is relayed to `target`, on `targetTopicPrefix` + its topic, never back to "
    "the broker it came from (README \"MQTT bridge\"); changed live");
}

namespace {

// Whether a message relayed by `m` could land under $grove/ at its target: prefix + topic
// starts with it, or starts with `$` and has a wildcard in its first level (e.g. prefix
// "$" + topic "+/mm/out/#" relays a device's "grove/mm/out/x" to "$grove/mm/out/x").
bool reaches_owned_namespace(const bridge_mapping& m) {
  // The thing name variable is any level a device's name fills in.
  auto whole = with_wildcard(m.target_topic_prefix + m.topic);
  if (whole.starts_with(owned_namespace))
    return true;
  if (whole.empty() || whole.front() != '$' || m.target_topic_prefix.empty())
    return false;
  auto first_level = std::string_view{whole}.substr(0, whole.find('/'));
  return first_level.find_first_of("+#") != std::string_view::npos;
}

// Whether every occurrence of `word` in `filter` is a whole level.
bool whole_levels(std::string_view filter, std::string_view word) {
  for (auto at = filter.find(word); at != std::string_view::npos;
       at = filter.find(word, at + 1)) {
    auto end = at + word.size();
    if ((at > 0 && filter[at - 1] != '/') || (end < filter.size() && filter[end] != '/'))
      return false;
  }
  return true;
}

// A mapping the schema accepted but the bridge cannot use; the message names the entry.
caf::error check_mapping(const bridge_mapping& m, size_t i, std::set<std::string>& names) {
  auto at = "bridge.mqtt_topic_mapping[" + std::to_string(i) + "] (" + m.name + ")";
  auto bad = [&](const std::string& what) { return make_error(errc::invalid_config, at + what); };
  if (m.name.empty())
    return bad(".name: empty");
  if (!names.insert(m.name).second)
    return bad(".name: another mapping has this name");
  if (auto err = validate_filter(m.topic))
    return bad(".topic: '" + m.topic + "' is no MQTT topic filter: " + describe(err));
  // One line of the broker's ACL file carries a filter as written.
  if (!acl_safe(m.topic))
    return bad(".topic: a line break or a leading blank");
  if (!acl_safe(m.target_topic_prefix))
    return bad(".targetTopicPrefix: a line break or a leading blank");
  if (m.source == m.target)
    return bad(".target: the same as its source (" + m.source + ")");
  // ${iot:Connection.Thing.ThingName}: a whole level of a LocalMqtt source's or target's
  // topic (the publishing or the receiving device's name).
  bool per_thing = m.topic.find(thing_name_variable) != std::string::npos;
  if (per_thing) {
    if (m.source != "LocalMqtt" && m.target != "LocalMqtt")
      return bad(".topic: " + std::string{thing_name_variable}
                 + " is only for a LocalMqtt source or target (a device's name)");
    if (!whole_levels(m.topic, thing_name_variable))
      return bad(".topic: " + std::string{thing_name_variable} + " must be a whole level");
  }
  if (m.target_topic_prefix.find(thing_name_variable) != std::string::npos)
    return bad(".targetTopicPrefix: " + std::string{thing_name_variable}
               + " is only for a LocalMqtt source's topic");
  // Each LocalMqtt source lets every group device publish on its filter (how a v2
  // deployment grants what clientdevices.Auth would); under $aws/ (shadows, jobs) that
  // would let one device act as another, so only per thing.
  if (m.source == "LocalMqtt" && m.topic.starts_with("$aws/") && !per_thing)
    return bad(".topic: a LocalMqtt source under $aws/ must name the publishing device with "
               + std::string{thing_name_variable} + " (every group device may publish on it)");
  // Likewise every group device may subscribe to what a mapping relays to LocalMqtt:
  // under $aws/ (shadow and jobs replies) each would get every thing's, so only per
  // thing, as clientdevices.Auth's policies grant it.
  if (m.target == "LocalMqtt" && (m.target_topic_prefix + m.topic).starts_with("$aws/")
      && !per_thing)
    return bad(".topic: a LocalMqtt target under $aws/ must name the receiving device with "
               + std::string{thing_name_variable} + " (every group device may subscribe to it)");
  // The bus keeps $grove/ for Grove's own topics; the cloud and devices do not use it.
  // Checked on what a message's target topic can be (prefix + topic), so the name
  // cannot be split across the two, nor completed by a wildcard after a `$` prefix.
  if (m.topic.starts_with(owned_namespace) || reaches_owned_namespace(m))
    return bad(": topics under $grove/ are Grove's own, not bridged");
  if (m.target_topic_prefix.find_first_of("+#") != std::string::npos
      || m.target_topic_prefix.find('\0') != std::string::npos)
    return bad(".targetTopicPrefix: '" + m.target_topic_prefix
               + "' has a wildcard or NUL (it becomes part of a topic)");
  if (auto err = check_target_filter(m))
    return bad(".targetTopicPrefix: " + describe(err));
  return {};
}

// The rules the schema language cannot say; the messages name the key at fault.
caf::error check(const plugin_config& cfg) {
  const auto& b = cfg.broker;
  if (!cfg.development_mode) {
    std::pair<const char*, const std::filesystem::path*> tls_files[] = {
      {"ca_file", &b.ca_file},
      {"cert_file", &b.cert_file},
      {"key_file", &b.key_file},
      {"client_cert_file", &b.client_cert_file},
      {"client_key_file", &b.client_key_file}};
    for (auto [key, file] : tls_files)
      if (file->empty())
        return make_error(errc::invalid_config,
                          std::string{"broker."} + key
                            + " is required outside development_mode (make the files with "
                              "tools/grove-certs: init, server, device PKI grove)");
  }
  std::set<std::string> mapping_names;
  for (size_t i = 0; i < cfg.bridge.mqtt_topic_mapping.size(); ++i)
    if (auto err = check_mapping(cfg.bridge.mqtt_topic_mapping[i], i, mapping_names))
      return err;
  const auto& c = cfg.cloud;
  for (const auto& name : c.system_clients)
    if (auto err = validate_plugin_name(name))
      return make_error(errc::invalid_config, "cloud.system_clients: " + describe(err));
  if (!c.enabled) {
    // A mapping to or from IotCore would only fill the spool (or never get a message).
    const auto& ms = cfg.bridge.mqtt_topic_mapping;
    for (size_t i = 0; i < ms.size(); ++i)
      if (ms[i].source == "IotCore" || ms[i].target == "IotCore")
        return make_error(errc::invalid_config,
                          "bridge.mqtt_topic_mapping[" + std::to_string(i) + "] ("
                            + ms[i].name + "): IotCore needs cloud.enabled");
    return {};
  }
  if (c.retry_initial > c.retry_max)
    return make_error(errc::invalid_config,
                      "cloud.retry_initial_ms is above "
                      "cloud.mqtt_max_connection_retry_interval");
  if (c.host.empty())
    return make_error(errc::invalid_config, "cloud.host is required when cloud.enabled");
  if (c.thing_name.empty())
    return make_error(errc::invalid_config, "cloud.thing_name is required when cloud.enabled");
  if (!c.tls && !cfg.development_mode)
    return make_error(errc::invalid_config,
                      "cloud.tls: false is only allowed in development_mode");
  if (c.tls && c.ca_file.empty())
    return make_error(errc::invalid_config, "cloud.ca_file is required with TLS");
  return {};
}

} // namespace

config_map<plugin_config> plugin_config::map() {
  return config_map<plugin_config>{}
    .key("development_mode", &plugin_config::development_mode, false,
         "plain-TCP device listener, username = thing name, no certificates; logged loudly "
         "at start and shown in `grovectl status`. Never in production.")
    .section("broker", &plugin_config::broker, broker_config::map(),
             "the managed Mosquitto broker devices connect to")
    .section("cloud", &plugin_config::cloud, cloud_config::map(),
             "the connection to the cloud MQTT endpoint")
    .section("spool", &plugin_config::spool, spool_config::map(),
             "cloud-bound messages wait here until the cloud acknowledged them")
    .section("bridge", &plugin_config::bridge, bridge_config::map(),
             "Greengrass v2's MQTT bridge between devices, the local bus and the cloud")
    .validate(check);
}

const char* to_string(spool_storage x) noexcept {
  return x == spool_storage::file ? "file" : "memory";
}

} // namespace grove::mm
