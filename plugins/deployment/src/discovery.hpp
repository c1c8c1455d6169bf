#pragma once

// Greengrass v1's discovery (README.md, "Discovery"): `GET
// /greengrass/discover/thing/{thingName}` answers a device of the group with the group,
// the core's connectivity information and the group CA, in v1's JSON shape. Pure of the
// server and the kernel: the request's method, raw target and the client certificate's
// CN in, the response out (tests and the fuzzer call it directly); the plugin's
// discovery_server does the mutual TLS and keeps the group.

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include "http.hpp"

namespace grove::deployment {

class v1_store;

/// The kernel's group as discovery needs it.
struct discovery_group {
  /// The group's name.
  std::string name;
  /// Its devices' thing names.
  std::set<std::string> devices;
};

/// What the answer says besides the group.
struct discovery_settings {
  /// Region and account of the core's thing ARN.
  std::string region;
  /// Account id.
  std::string account_id;
  /// The core's thing name.
  std::string core_thing;
  /// The group CA's certificates (PEM, one per entry): the answer's `CAs`.
  std::vector<std::string> cas;
};

/// Where the answer's changing parts come from (each may fail; the request is then 500).
struct discovery_sources {
  /// The stored connectivity list of a thing (UpdateConnectivityInfo's), nullopt when
  /// none was ever set.
  std::function<caf::expected<std::optional<nlohmann::json>>(const std::string& thing)>
    connectivity;
  /// The id of the Greengrass v1 group deployed last, "" when none was.
  std::function<caf::expected<std::string>()> deployed_group_id;
  /// The deployed group's CAs (PEM, oldest first; README "Group CA"), added to the
  /// answer's `CAs` after the configured ones; may be unset.
  std::function<caf::expected<std::vector<std::string>>()> group_cas;
};

/// A response and, for a refusal, the line to log (who asked for what, and why).
struct discovery_outcome {
  /// What the client gets.
  http_response response;
  /// Empty when answered 200.
  std::string refusal;
};

/// Answers one request. `group` is null when the kernel has no group (or none was read
/// yet); `client_cn` is the CN of the verified client certificate.
discovery_outcome discover(const discovery_settings& settings, const discovery_group* group,
                           const std::string& method, const std::string& target,
                           const std::string& client_cn, const discovery_sources& sources);

/// The certificates of a PEM bundle, each from its BEGIN to its END line (anything
/// between them is dropped, and so is a block with bytes other than printable ASCII).
std::vector<std::string> pem_certificates(std::string_view pem);

/// A stable id for a group no v1 deployment named: the name-based UUID (version 5,
/// SHA-1) of `grove-group:<name>` in the URL namespace, so it stays the same across
/// restarts and group versions and differs between group names.
std::string stable_group_id(std::string_view group_name);

/// The id of the Greengrass v1 group whose latest deployment succeeded most recently
/// (v1_store), "" when no group was ever deployed.
caf::expected<std::string> last_deployed_group(v1_store& store);

} // namespace grove::deployment
