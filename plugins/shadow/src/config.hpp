#pragma once

// The shadow plugin's configuration (grove::config_map): the keys an operator writes
// under `config:` in the image profile; README.md's table is generated from it.

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "grove/config_map.hpp"
#include "sync_merge.hpp"

namespace grove::shadow {

/// One thing's shadows to synchronize (shadow manager's `shadowDocuments` entry).
struct sync_thing {
  /// The thing.
  std::string thing_name;
  /// Its classic shadow.
  bool classic = true;
  /// Its named shadows.
  std::vector<std::string> named_shadows;

  /// The keys.
  static grove::config_map<sync_thing> map() {
    return grove::config_map<sync_thing>{}
      .key_no_default("thingName", &sync_thing::thing_name, grove::required,
                      "the thing ([a-zA-Z0-9:_-], at most 128 bytes)")
      .key("classic", &sync_thing::classic, true, "synchronize its classic shadow")
      .key("namedShadows", &sync_thing::named_shadows, std::vector<std::string>{},
           "its named shadows to synchronize");
  }
};

/// The core device's own shadows (`coreThing`).
struct sync_core {
  /// The core's thing name (message_manager's `cloud.thing_name`); empty: none.
  std::string thing_name;
  /// Its classic shadow.
  bool classic = true;
  /// Its named shadows.
  std::vector<std::string> named_shadows;

  /// The keys.
  static grove::config_map<sync_core> map() {
    return grove::config_map<sync_core>{}
      .key("thingName", &sync_core::thing_name, "",
           "the core's thing name (message_manager's cloud.thing_name); empty: the core's "
           "shadows are not synchronized")
      .key("classic", &sync_core::classic, true, "synchronize the core's classic shadow")
      .key("namedShadows", &sync_core::named_shadows, std::vector<std::string>{},
           "the core's named shadows to synchronize");
  }
};

/// Which shadows go to the cloud and which way (`synchronize`).
struct sync_config {
  /// The core device's shadows.
  sync_core core_thing;
  /// Other things' shadows.
  std::vector<sync_thing> shadow_documents;
  /// Which way changes flow.
  sync_direction direction = sync_direction::between;

  /// The keys.
  static grove::config_map<sync_config> map() {
    return grove::config_map<sync_config>{}
      .section("coreThing", &sync_config::core_thing, sync_core::map(),
               "the core device's shadows")
      .list("shadowDocuments", &sync_config::shadow_documents, sync_thing::map(),
            "other things' shadows (group devices with sync_shadow: true add their "
            "classic shadow)")
      .key("direction", &sync_config::direction, sync_direction::between,
           grove::names<sync_direction>{{"betweenDeviceAndCloud", sync_direction::between},
                                        {"deviceToCloud", sync_direction::device_to_cloud},
                                        {"cloudToDevice", sync_direction::cloud_to_device}},
           "which way changes flow: both (merged per leaf), or one way only");
  }
};

/// When local changes go out.
enum class sync_strategy {
  /// As they happen (within the rate limit).
  real_time,
  /// Every `delay` seconds.
  periodic,
};

/// `strategy`.
struct strategy_config {
  /// realTime or periodic.
  sync_strategy type = sync_strategy::real_time;
  /// The period of `periodic`.
  std::chrono::seconds delay{};

  /// The keys.
  static grove::config_map<strategy_config> map() {
    return grove::config_map<strategy_config>{}
      .key("type", &strategy_config::type, sync_strategy::real_time,
           grove::names<sync_strategy>{{"realTime", sync_strategy::real_time},
                                       {"periodic", sync_strategy::periodic}},
           "realTime: changes go out as they happen; periodic: every `delay` seconds")
      .key("delay", &strategy_config::delay, 300, grove::range{1, 86400},
           "seconds between two syncs of `periodic`");
  }
};

/// `rateLimits`: shadow manager's names and defaults.
struct rate_limits_config {
  /// Messages to the cloud per second.
  int64_t max_outbound = 0;
  /// Local requests (devices, functions, the bus API) per second, all things together.
  int64_t max_total_local = 0;
  /// Local requests per second of one thing.
  int64_t max_local_per_thing = 0;

  /// The keys.
  static grove::config_map<rate_limits_config> map() {
    return grove::config_map<rate_limits_config>{}
      .key("maxOutboundSyncUpdatesPerSecond", &rate_limits_config::max_outbound, 100,
           grove::range{1, 1000},
           "shadow messages to the cloud per second; more wait, the latest state of each "
           "shadow replacing what it had waiting")
      .key("maxTotalLocalRequestsRate", &rate_limits_config::max_total_local, 200,
           grove::range{1, 1000000},
           "get, update and delete requests per second of devices, functions and the bus "
           "API, all things together; more are refused 429 'Too Many Requests'")
      .key("maxLocalRequestsPerSecondPerThing", &rate_limits_config::max_local_per_thing, 20,
           grove::range{1, 1000000},
           "the same requests per second about one thing; more are refused 429 'Too Many "
           "Requests' while other things are still served");
  }
};

/// The plugin's configuration; every key has a default, so `- name: shadow` serves the
/// group's devices.
struct shadow_config {
  /// Database file.
  std::filesystem::path file;
  /// Largest desired + reported state, bytes.
  int64_t max_document_bytes = 0;
  /// Requests of one thing waiting for their answer.
  int64_t max_inflight_per_thing = 0;
  /// Serve things outside the group.
  bool allow_unknown_things = false;
  /// Documents kept in memory.
  int64_t cache_entries = 0;
  /// How long a group commit waits for more writes after the first, milliseconds.
  int64_t commit_delay_ms = 0;
  /// Cloud sync: which shadows, which way.
  sync_config synchronize;
  /// Cloud sync: when.
  strategy_config strategy;
  /// Cloud sync's and local requests' rates.
  rate_limits_config rate_limits;

  /// The keys, their defaults, ranges and meanings.
  static grove::config_map<shadow_config> map() {
    return grove::config_map<shadow_config>{}
      .key("file", &shadow_config::file, "shadow.db",
           "database file; a relative path is under the plugin's state directory")
      .key("max_document_bytes", &shadow_config::max_document_bytes, 8192,
           grove::range{8192, 30720},
           "largest desired + reported state of one shadow (413 above it)")
      .key("max_inflight_per_thing", &shadow_config::max_inflight_per_thing, 10,
           grove::range{1, 100000},
           "requests of one thing waiting for their answer before more are refused (429)")
      .key("allow_unknown_things", &shadow_config::allow_unknown_things, false,
           "serve devices that are not in the group (else 404 'Thing not found')")
      .key("cache_entries", &shadow_config::cache_entries, 4096, grove::range{16, 10000000},
           "documents kept in memory; the rest are read from the database when asked")
      .key("commit_delay_ms", &shadow_config::commit_delay_ms, 0, grove::range{0, 1000},
           "how long a commit waits for more writes after the first; 0: at once (what "
           "arrives during a commit's fsync forms the next one)")
      .section("synchronize", &shadow_config::synchronize, sync_config::map(),
               "cloud sync through message_manager's system API (README, \"Cloud sync\")")
      .section("strategy", &shadow_config::strategy, strategy_config::map(),
               "when local changes go to the cloud")
      .section("rateLimits", &shadow_config::rate_limits, rate_limits_config::map(),
               "rates: cloud sync's, and local requests' (README, \"Local request limits\")")
      .validate([](const shadow_config& c) -> caf::error {
        auto bad = [](std::string what) {
          return grove::make_error(grove::errc::invalid_config, std::move(what));
        };
        auto names = [&](const std::vector<std::string>& xs) -> caf::error {
          for (const auto& n : xs)
            if (!valid_shadow_name(n))
              return bad("synchronize: invalid shadow name '" + n + "'");
          return {};
        };
        const auto& core = c.synchronize.core_thing;
        if (!core.thing_name.empty() && !valid_thing_name(core.thing_name))
          return bad("synchronize.coreThing.thingName: invalid thing name");
        if (auto err = names(core.named_shadows))
          return err;
        for (const auto& t : c.synchronize.shadow_documents) {
          if (!valid_thing_name(t.thing_name))
            return bad("synchronize.shadowDocuments: invalid thingName '" + t.thing_name + "'");
          if (auto err = names(t.named_shadows))
            return err;
        }
        return {};
      });
  }
};

} // namespace grove::shadow
