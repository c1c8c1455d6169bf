#pragma once
// Greengrass v2's MQTT bridge (aws.greengrass.clientdevices.mqtt.Bridge) inside
// message_manager: the `bridge.mqtt_topic_mapping` entries compiled for matching, the
// subscriptions each side needs and the broker ACL lines devices need. Immutable once
// built; shared between the actor and the links' Paho threads as shared_ptr<const>.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"

namespace grove::mm {

/// A message broker the bridge relays between.
enum class bridge_side { local_mqtt, pubsub, iot_core };

/// "LocalMqtt", "Pubsub" or "IotCore" (the config's spelling) as a side; Pubsub otherwise.
bridge_side to_bridge_side(std::string_view text) noexcept;

/// The config's spelling of a side.
const char* to_string(bridge_side side) noexcept;

/// AWS IoT's policy variable: in a LocalMqtt source's topic, one level that is the
/// publishing device's thing name (each device may publish only with its own).
inline constexpr std::string_view thing_name_variable = "${iot:Connection.Thing.ThingName}";

/// `filter` with each thing_name_variable level as `+`: what Grove's client subscribes to
/// and matches with.
std::string with_wildcard(std::string_view filter);

/// `filter` with each thing_name_variable level as `thing`: the filter `thing` may
/// publish on (a LocalMqtt source) or be delivered on (a LocalMqtt target).
std::string for_thing(std::string_view filter, std::string_view thing);

/// The grove-source the bridge stamps on everything it relays to the devices, from
/// IotCore or Pubsub (the broker plugin's valid_grove_source() accepts it). The devices'
/// `deliver @bridge` lines name it and no other source: the bridge grants them its own
/// relays only, never what the group's table routes on the same topics.
inline constexpr std::string_view bridge_relay_source = "bridge";

/// Where one matching mapping sends a message.
struct bridge_hop {
  /// Index of the mapping (its name: bridge::name()).
  size_t mapping = 0;
  /// Where the message goes.
  bridge_side target = bridge_side::pubsub;
  /// Its topic there: the mapping's targetTopicPrefix + the message's topic.
  std::string topic;
};

/// The compiled mappings.
class bridge {
public:
  /// No mappings: nothing is relayed.
  bridge() = default;

  /// Compiles mappings that plugin_config::map() checked.
  explicit bridge(const std::vector<bridge_mapping>& mappings);

  /// Every mapping from `source` whose filter matches `topic`, in the config's order,
  /// each target topic once: overlapping mappings that would send the message to the
  /// same target on the same topic give the first of them only.
  std::vector<bridge_hop> match(bridge_side source, std::string_view topic) const;

  /// The filters of the mappings from `source`, each once: what the bridge subscribes
  /// to there.
  std::vector<std::string> filters(bridge_side source) const;

  /// Lines of the broker's ACL file for `things`: each may publish on a LocalMqtt
  /// source's filter (`pub`) and be delivered what a mapping relays to LocalMqtt
  /// (`deliver @bridge`, on the prefixed filter); with thing_name_variable, each line
  /// has the thing's own name there.
  std::string acl_lines(const std::vector<std::string>& things) const;

  /// The name of mapping `i`.
  const std::string& name(size_t i) const { return mappings_[i].name; }

  /// Number of mappings.
  size_t size() const noexcept { return mappings_.size(); }

private:
  struct compiled {
    std::string name;
    std::string filter; // thing_name_variable as `+`
    std::string written; // as configured
    bridge_side source;
    bridge_side target;
    std::string prefix;
  };
  std::vector<compiled> mappings_;
};

/// The bus hands a subscriber one copy of a message per filter of its own the topic
/// matches: with two of the bridge's Pubsub filters matching (`a/#`, `a/+`) the same
/// envelope arrives twice. Tells the first copy from the others by the envelope's id
/// (the bus numbers every publish), so the bridge relays each message once. Not
/// thread-safe (the plugin's actor).
class bus_copies {
public:
  /// Whether this copy of message `id` is its first, `copies` of it being on their way.
  bool first(uint64_t id, size_t copies);

  /// Messages with copies still to come.
  size_t pending() const noexcept { return due_.size(); }

  /// At most this many pending messages are remembered (a copy the bus dropped for a
  /// full queue never comes): the oldest are forgotten first.
  static constexpr size_t max_pending = 1024;

private:
  std::map<uint64_t, size_t> due_; // id -> copies still to come
};

/// The filter of the topics a mapping's messages have at its target: `prefix` + `filter`.
/// An error when they do not form an MQTT filter (a prefix not ending in `/` before a
/// wildcard level), which the devices' ACL could not say.
caf::error check_target_filter(const bridge_mapping& m);

} // namespace grove::mm
