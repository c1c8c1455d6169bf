#pragma once

// The shadow plugin's configuration (grove::config_map): the keys an operator writes
// under `config:` in the image profile; README.md's table is generated from it.

#include <filesystem>

#include "grove/config_map.hpp"

namespace grove::shadow {

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
           "documents kept in memory; the rest are read from the database when asked");
  }
};

} // namespace grove::shadow
