#include "bridge.hpp"

#include <algorithm>

#include "grove/errors.hpp"
#include "grove/topic.hpp"

namespace grove::mm {

bridge_side to_bridge_side(std::string_view text) noexcept {
  if (text == "LocalMqtt")
    return bridge_side::local_mqtt;
  if (text == "IotCore")
    return bridge_side::iot_core;
  return bridge_side::pubsub;
}

const char* to_string(bridge_side side) noexcept {
  switch (side) {
    case bridge_side::local_mqtt:
      return "LocalMqtt";
    case bridge_side::iot_core:
      return "IotCore";
    case bridge_side::pubsub:
      break;
  }
  return "Pubsub";
}

std::string for_thing(std::string_view filter, std::string_view thing) {
  std::string out{filter};
  for (auto at = out.find(thing_name_variable); at != std::string::npos;
       at = out.find(thing_name_variable, at + thing.size()))
    out.replace(at, thing_name_variable.size(), thing);
  return out;
}

std::string with_wildcard(std::string_view filter) {
  return for_thing(filter, "+");
}

bridge::bridge(const std::vector<bridge_mapping>& mappings) {
  for (const auto& m : mappings)
    mappings_.push_back(compiled{m.name, with_wildcard(m.topic), m.topic,
                                 to_bridge_side(m.source),
                                 to_bridge_side(m.target), m.target_topic_prefix});
}

std::vector<bridge_hop> bridge::match(bridge_side source, std::string_view topic) const {
  std::vector<bridge_hop> out;
  for (size_t i = 0; i < mappings_.size(); ++i) {
    const auto& m = mappings_[i];
    if (m.source != source || !topic_matches(m.filter, topic))
      continue;
    auto to = m.prefix + std::string{topic};
    if (std::none_of(out.begin(), out.end(),
                     [&](const bridge_hop& h) { return h.target == m.target && h.topic == to; }))
      out.push_back(bridge_hop{i, m.target, std::move(to)});
  }
  return out;
}

std::vector<std::string> bridge::filters(bridge_side source) const {
  std::vector<std::string> out;
  for (const auto& m : mappings_)
    if (m.source == source && std::find(out.begin(), out.end(), m.filter) == out.end())
      out.push_back(m.filter);
  return out;
}

std::string bridge::acl_lines(const std::vector<std::string>& things) const {
  std::string out;
  for (const auto& m : mappings_) {
    if (m.source == bridge_side::local_mqtt)
      for (const auto& t : things)
        out += "pub " + t + " " + for_thing(m.written, t) + "\n";
    // Grove injects what a mapping relays to the devices stamped bridge_relay_source;
    // the broker lets every device that subscribes have it, as Greengrass' bridge
    // publishes to its broker. Scoped by that stamp, so a table route (cloud or
    // function:F -> device:B) on the same topic still reaches only B; and per thing
    // with thing_name_variable, as clientdevices.Auth's policy with it would.
    if (m.target == bridge_side::local_mqtt)
      for (const auto& t : things)
        out += "deliver @" + std::string{bridge_relay_source} + " " + t + " " + m.prefix
               + for_thing(m.written, t) + "\n";
  }
  return out;
}

bool bus_copies::first(uint64_t id, size_t copies) {
  if (auto i = due_.find(id); i != due_.end()) {
    if (--i->second == 0)
      due_.erase(i);
    return false;
  }
  if (copies > 1) {
    due_.emplace(id, copies - 1);
    if (due_.size() > max_pending)
      due_.erase(due_.begin()); // the bus numbers publishes in order: the oldest
  }
  return true;
}

caf::error check_target_filter(const bridge_mapping& m) {
  if (m.target != "LocalMqtt" || m.target_topic_prefix.empty())
    return {};
  if (auto err = validate_filter(m.target_topic_prefix + m.topic))
    return make_error(errc::invalid_config,
                      "'" + m.target_topic_prefix + "' + '" + m.topic
                        + "' is no MQTT filter for the devices' table (end the prefix with "
                          "'/'): "
                        + describe(err));
  return {};
}

} // namespace grove::mm
