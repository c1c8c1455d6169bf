#pragma once
// The group's subscription table, compiled for the two places that enforce it: the
// broker plugin's ACL file (device publishes and every delivery to a device) and the
// message_manager itself (deliveries to functions, the shadow service and the cloud).
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <caf/expected.hpp>

#include "grove/group.pb.h"

namespace grove::mm {

/// The kind of a subscription endpoint.
enum class endpoint_kind { device, function, cloud, shadow };

/// A parsed endpoint: "device:<thing>", "function:<name>", "cloud" or "shadow".
struct endpoint {
  /// Its kind.
  endpoint_kind kind = endpoint_kind::cloud;
  /// Thing or function name; empty for cloud and shadow.
  std::string name;
};

/// Parses an endpoint string; an error names what is wrong.
caf::expected<endpoint> parse_endpoint(std::string_view text);

/// Whether the broker's line-based ACL file can carry `filter` as written: no line break
/// would split the rule (and start one of its own), no leading blank would be trimmed
/// away by its reader.
bool acl_safe(std::string_view filter);

/// Where one message goes. Device targets are not listed: the broker decides them.
struct route_targets {
  /// Some subscription to a device matches (only for non-device sources): inject the
  /// message into the broker once, stamped with its source.
  bool devices = false;
  /// Functions to deliver to, each once.
  std::vector<std::string> functions;
  /// Deliver to the shadow service.
  bool shadow = false;
  /// Queue for the cloud.
  bool cloud = false;

  /// True when nothing matched.
  bool empty() const noexcept {
    return !devices && functions.empty() && !shadow && !cloud;
  }
};

/// A compiled subscription table. Immutable once built; share it between threads with a
/// shared_ptr<const routes>.
class routes {
public:
  /// An empty table: nothing routes, no device may connect.
  routes() = default;

  /// Compiles a group. The group was validated by the kernel; subscriptions with an
  /// endpoint this code does not understand are skipped and counted in skipped(), and
  /// so are devices whose names are not valid endpoint names.
  explicit routes(const group::Group& g);

  /// Targets of a message from `source` (an endpoint string) on `topic`.
  route_targets match(std::string_view source, std::string_view topic) const;

  /// The broker plugin's ACL file for this table (format in broker/README.md).
  std::string acl_text() const;

  /// Filters Grove's own client subscribes to on the broker: the subjects of every
  /// subscription from a device to a function, the shadow service or the cloud.
  std::vector<std::string> local_filters() const;

  /// Filters subscribed to on the cloud: the subjects of every subscription from cloud.
  std::vector<std::string> cloud_filters() const;

  /// Group name and version this table was built from.
  const std::string& group_name() const noexcept { return group_name_; }

  /// Version of the group this table was built from (0: no group).
  uint64_t group_version() const noexcept { return group_version_; }

  /// Number of subscriptions compiled.
  size_t size() const noexcept { return size_; }

  /// Number of devices in the group.
  size_t devices() const noexcept { return things_.size(); }

  /// The group's devices (their thing names).
  const std::vector<std::string>& things() const noexcept { return things_; }

  /// Subscriptions skipped because an endpoint was not understood or the subject cannot
  /// be written on one line of the broker's ACL file (a line break, a leading blank).
  size_t skipped() const noexcept { return skipped_; }

private:
  struct rule {
    std::string filter;
    endpoint target;
  };

  std::string group_name_;
  uint64_t group_version_ = 0;
  size_t size_ = 0;
  size_t skipped_ = 0;
  std::vector<std::string> things_;
  // source endpoint string -> rules to non-device targets, and whether any rule of that
  // source targets a device.
  std::unordered_map<std::string, std::vector<rule>> by_source_;
  std::unordered_map<std::string, std::vector<std::string>> device_filters_by_source_;
  std::string acl_;
  std::vector<std::string> local_filters_;
  std::vector<std::string> cloud_filters_;
};

} // namespace grove::mm
