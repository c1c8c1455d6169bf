#pragma once

// message_manager's configuration, declared once with grove::config_map: the schema the
// kernel validates the profile against, the defaults, the cross-field rules, and the
// table in README.md ("Configuration") all come from plugin_config::map().

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "grove/config_map.hpp"
#include "spool.hpp"

namespace grove::mm {

/// `broker:` the managed Mosquitto devices connect to.
struct broker_config {
  /// Listener address.
  std::string bind;
  /// Listener port.
  uint16_t port = 0;
  /// Broker executable.
  std::string mosquitto;
  /// Grove's broker plugin; empty = the one next to groved.
  std::filesystem::path plugin;
  /// Group CA (device certificates chain to it).
  std::filesystem::path ca_file;
  /// More group CAs, OpenSSL's hashed names (Mosquitto's capath), read per handshake.
  std::filesystem::path ca_dir;
  /// The broker's server certificate.
  std::filesystem::path cert_file;
  /// The broker's server key.
  std::filesystem::path key_file;
  /// Certificate with CN grove for Grove's own client.
  std::filesystem::path client_cert_file;
  /// Key of client_cert_file.
  std::filesystem::path client_key_file;
  /// Larger publishes are refused by the broker.
  uint64_t max_payload_bytes = 0;
  /// Publishes on longer topics are refused by the broker.
  uint64_t max_topic_bytes = 0;
  /// Bytes the broker queues per client.
  uint64_t max_queued_bytes = 0;
  /// Connections the broker accepts at once.
  uint32_t max_connections = 0;
  /// Connections silent for this long are closed.
  std::chrono::seconds connect_timeout{};
  // --- identity and TLS ---
  /// Client ids a device may use: "<thing>" and patterns starting with it ("<thing>-*").
  std::vector<std::string> client_id_patterns;
  /// Lowest TLS version of the listener: "1.2" or "1.3".
  std::string tls_min_version;
  /// TLS 1.2 cipher suites (OpenSSL list); TLS 1.3 suites are all AEAD.
  std::string tls_ciphers;
  /// Certificate revocation list (PEM) checked at the TLS handshake; empty = none.
  std::filesystem::path crl_file;
  /// Extra DNS names of the broker's certificate (tools/grove-certs ensure-default).
  std::vector<std::string> server_names;
  /// Extra IP addresses of the broker's certificate (tools/grove-certs ensure-default).
  std::vector<std::string> server_ips;
  /// The user the broker runs as when groved runs as root (tools/deps creates it).
  std::string run_as_user;
  /// Page out the broker's start-up code once Grove's client is connected.
  bool release_code_pages = true;

  /// Equal settings need no broker restart.
  bool operator==(const broker_config&) const = default;

  /// The keys of `broker:`.
  static config_map<broker_config> map();
};

/// `cloud:` the connection to the cloud MQTT endpoint.
struct cloud_config {
  /// Connect at all.
  bool enabled = false;
  /// Endpoint host.
  std::string host;
  /// Endpoint port.
  uint16_t port = 0;
  /// The core's thing name, the MQTT client id.
  std::string thing_name;
  /// TLS to the endpoint.
  bool tls = true;
  /// CA that verifies the endpoint.
  std::filesystem::path ca_file;
  /// The core's client certificate.
  std::filesystem::path cert_file;
  /// The core's client key.
  std::filesystem::path key_file;
  /// MQTT keep-alive.
  std::chrono::seconds keep_alive{};
  /// Cap of the reconnect back-off.
  std::chrono::seconds retry_max{};
  /// First reconnect delay.
  std::chrono::milliseconds retry_initial{};
  /// QoS 1 messages awaiting PUBACK.
  uint16_t max_inflight = 0;
  /// Plugins that may use the system API (mm-6 to mm-9), e.g. shadow.
  std::vector<std::string> system_clients;

  /// Compared to tell a live change from none.
  bool operator==(const cloud_config&) const = default;

  /// The keys of `cloud:`.
  static config_map<cloud_config> map();
};

/// `spool:` where cloud-bound messages wait for the cloud's acknowledgement.
struct spool_config {
  /// memory or file.
  spool_storage storage = spool_storage::memory;
  /// Capacity.
  uint64_t max_size_bytes = 0;
  /// What a full spool does with a new message.
  spool_when_full when_full = spool_when_full::drop_oldest;
  /// Free space a `file` spool leaves on its filesystem.
  uint64_t disk_reserve_bytes = default_disk_reserve_bytes;

  /// Equal settings keep the spool.
  bool operator==(const spool_config&) const = default;

  /// The keys of `spool:`.
  static config_map<spool_config> map();
};

/// One `bridge.mqtt_topic_mapping` entry: a value of Greengrass' MQTT bridge
/// `mqttTopicMapping` with its name (README "MQTT bridge").
struct bridge_mapping {
  /// The mapping's name (mqttTopicMapping's key).
  std::string name;
  /// Topic filter of the messages relayed.
  std::string topic;
  /// LocalMqtt, Pubsub or IotCore: where the messages come from.
  std::string source;
  /// LocalMqtt, Pubsub or IotCore: where they go.
  std::string target;
  /// Put in front of the topic at the target.
  std::string target_topic_prefix;

  /// Compared to tell a live change from none.
  bool operator==(const bridge_mapping&) const = default;

  /// The keys of one mapping.
  static config_map<bridge_mapping> map();
};

/// `bridge:` Greengrass v2's MQTT bridge (aws.greengrass.clientdevices.mqtt.Bridge).
struct bridge_config {
  /// The mappings, in the order given.
  std::vector<bridge_mapping> mqtt_topic_mapping;

  /// Compared to tell a live change from none.
  bool operator==(const bridge_config&) const = default;

  /// The keys of `bridge:`.
  static config_map<bridge_config> map();
};

/// The whole configuration of message_manager.
struct plugin_config {
  /// Plain-TCP device listener, username login, no certificates.
  bool development_mode = false;
  /// `broker:`.
  broker_config broker;
  /// `cloud:`.
  cloud_config cloud;
  /// `spool:`.
  spool_config spool;
  /// `bridge:`.
  bridge_config bridge;

  /// Every key, and the rules across keys (TLS files outside development mode, a
  /// complete cloud section when it is enabled).
  static config_map<plugin_config> map();
};

/// "memory" or "file", as the profile spells it.
const char* to_string(spool_storage x) noexcept;

} // namespace grove::mm
