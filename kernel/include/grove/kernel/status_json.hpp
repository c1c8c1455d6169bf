#pragma once

// groved's status (control.proto's Status, PluginInfo, Metric) as JSON: the one rendering
// that `grovectl status --json` / `plugins --json` print and the console serves on
// /api/status, so a field added to the status shows in both. Numbers stay numbers;
// protobuf maps (labels, details) come out sorted, whatever their wire order.
// Header-only over nlohmann-json, which both users link.

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "grove/control.pb.h"

namespace grove::status_json {

/// The JSON type: keys in the order written here.
using json = nlohmann::ordered_json;

/// A plugin's counters and gauges.
inline json metrics(const control::PluginInfo& p) {
  auto arr = json::array();
  for (const auto& m : p.metrics()) {
    std::map<std::string, std::string> labels(m.labels().begin(), m.labels().end());
    arr.push_back({{"name", m.name()},
                   {"kind", m.kind()},
                   {"value", m.value()},
                   {"labels", labels},
                   {"help", m.help()}});
  }
  return arr;
}

/// One plugin, every field.
inline json plugin(const control::PluginInfo& p) {
  return {{"name", p.name()},
          {"version", p.version()},
          {"state", p.state()},
          {"restarts", p.restarts()},
          {"queue_depth", p.queue_depth()},
          {"queue_capacity", p.queue_capacity()},
          {"delivered", p.delivered()},
          {"dropped", p.dropped()},
          {"overflow", p.overflow()},
          {"isolation", p.isolation()},
          {"last_error", p.last_error()},
          {"library", p.library()},
          {"last_reload", p.last_reload()},
          {"log_level", p.log_level()},
          {"refused_sources", p.refused_sources()},
          {"serves", std::vector<std::string>{p.serves().begin(), p.serves().end()}},
          {"metrics", metrics(p)}};
}

/// A list of plugins.
template <class Plugins>
json plugins(const Plugins& list) {
  auto arr = json::array();
  for (const auto& p : list)
    arr.push_back(plugin(p));
  return arr;
}

/// The whole status.
inline json status(const control::Status& s) {
  std::map<std::string, std::string> details(s.details().begin(), s.details().end());
  return {{"version", s.version()},
          {"pid", s.pid()},
          {"uptime_seconds", s.uptime_seconds()},
          {"config_file", s.config_file()},
          {"write_dir", s.write_dir()},
          {"plugin_dir", s.plugin_dir()},
          {"control_socket", s.control_socket()},
          {"log_level", s.log_level()},
          {"bus",
           {{"published", s.bus_published()},
            {"delivered", s.bus_delivered()},
            {"dropped", s.bus_dropped()},
            {"unrouted", s.bus_unrouted()},
            {"refused_not_owner", s.bus_refused_not_owner()},
            {"refused_too_large", s.bus_refused_too_large()},
            {"subscriptions", s.subscriptions()}}},
          {"plugins", plugins(s.plugins())},
          {"details", details}};
}

} // namespace grove::status_json
