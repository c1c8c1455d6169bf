#pragma once

// A group resource as local_resources reads it (resources[].config): a local volume or a
// local device in Greengrass v1's model (shared/REFERENCE.md, "Local resources";
// LocalVolumeResourceData, LocalDeviceResourceData), validated with the SDK's config map.
// Parsing is pure (fuzzed); resolving looks at the device's file system.

#include <string>
#include <string_view>

#include <caf/expected.hpp>

#include "grove/config_map.hpp"
#include "grove/local_resources.pb.h"

namespace grove::lr {

/// groupOwnerSetting: which group the function gets for the resource.
struct group_owner_setting {
  /// Add the resource's group owner (the source's group) to the function's groups.
  bool auto_add_group_owner = false;
  /// Or add this named group; empty: none.
  std::string group_owner;
};

/// localVolumeResourceData.
struct volume_data {
  /// A directory or file on the device (not under /sys, /dev or /var).
  std::string source_path;
  /// Where the function sees it.
  std::string destination_path;
  /// groupOwnerSetting.
  group_owner_setting owner;
};

/// localDeviceResourceData.
struct device_data {
  /// A character or block device under /dev.
  std::string source_path;
  /// groupOwnerSetting.
  group_owner_setting owner;
};

/// What kind of resource an entry is.
enum class resource_kind {
  /// localVolumeResourceData.
  volume,
  /// localDeviceResourceData.
  device,
  /// Another plugin's (a machine-learning model: ml_inference); not ours.
  other,
};

/// One resource's definition.
struct resource_def {
  /// Which data the entry has.
  resource_kind kind = resource_kind::other;
  /// The source on the device.
  std::string source_path;
  /// Inside the sandbox (a device: its own path).
  std::string destination_path;
  /// groupOwnerSetting.
  group_owner_setting owner;
};

/// The keys of a resource's config (for the README's table and the fuzz target).
struct resource_config {
  /// localVolumeResourceData.
  volume_data volume;
  /// localDeviceResourceData.
  device_data device;
  /// The config map (the other plugins' data keys are accepted and left alone).
  static config_map<resource_config> map();
};

/// Validates and reads one resource's config (YAML text from the group). Errors read
/// `<origin>:<line>:<col>: <key>: <what>` or `<origin>: <key>: <what>`.
caf::expected<resource_def> parse_resource(std::string_view yaml, std::string_view origin);

/// A volume (`device` false) or device the function's own config names (v2's
/// containerParams.volumes[] / devices[]), checked as the group's resources are: errors
/// read `<origin>: <key>: <what>`.
caf::expected<resource_def> inline_resource(bool device, const std::string& source_path,
                                            const std::string& destination_path,
                                            bool add_group_owner, std::string_view origin);

/// `path` is `root` or below it (by whole components).
bool is_under(std::string_view path, std::string_view root);

/// Resolves `def` (resource `id`) on this device for a policy of `permission` (ro|rw):
/// the canonical source (a volume's still outside /sys, /dev, /var; a device's a
/// character or block device under /dev), the group to add. Errors name the resource.
caf::expected<local_resources::Mount> resolve(const std::string& id, const resource_def& def,
                                              const std::string& permission);

/// Whether two of one function's mounts meet inside the sandbox: the same destination (the
/// second would hide the first) or one below the other (the inner one's mount point must
/// then exist in the outer one's source, so starts fail whenever it does not). Returns
/// the message naming both ("" when none do).
std::string destination_clash(const local_resources::MountsReply& mounts);

} // namespace grove::lr
