#pragma once
// Greengrass v2's MQTT bridge (aws.greengrass.clientdevices.mqtt.Bridge) inside
// message_manager: the `bridge.mqtt_topic_mapping` entries compiled for matching, the
// subscriptions each side needs and the broker ACL lines devices need. Immutable once
// built; shared between the actor and the links' Paho threads as shared_ptr<const>.
#include <cstdint>
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
/// publish on.
std::string for_thing(std::string_view filter, std::string_view thing);

/// The grove-source the bridge stamps on what a Pubsub-source mapping relays to the
/// devices (the broker plugin's valid_grove_source() accepts it).
inline constexpr std::string_view bridge_relay_source = "bridge";

/// The grove-source of what a mapping from `source` relays to LocalMqtt: "cloud" from
/// IotCore, bridge_relay_source from Pubsub. The devices' `deliver @<it>` lines name it.
std::string_view relay_source(bridge_side source) noexcept;

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

  /// Every mapping from `source` whose filter matches `topic`, in the config's order.
  std::vector<bridge_hop> match(bridge_side source, std::string_view topic) const;

  /// The filters of the mappings from `source`, each once: what the bridge subscribes
  /// to there.
  std::vector<std::string> filters(bridge_side source) const;

  /// Lines of the broker's ACL file for `things`: each may publish on a LocalMqtt
  /// source's filter (`pub`; with thing_name_variable, the filter with its own name) and be delivered what a mapping relays to LocalMqtt
  /// (`deliver @cloud` or `deliver @bridge` by the mapping's source, on the prefixed
  /// filter).
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

/// The filter of the topics a mapping's messages have at its target: `prefix` + `filter`.
/// An error when they do not form an MQTT filter (a prefix not ending in `/` before a
/// wildcard level), which the devices' ACL could not say.
caf::error check_target_filter(const bridge_mapping& m);

} // namespace grove::mm
