#pragma once

// AWS's public components as this core serves them (README.md, "AWS public components"):
// the ones Grove implements are in a built-in catalog, under AWS's own account
// (`arn:aws:greengrass:<region>:aws:components:<name>`), deployable with no
// CreateComponentVersion first. Each is either the configuration of one of Grove's plugins
// (the MQTT bridge: message_manager's `bridge`; shadow manager: the shadow plugin), or
// accepted as a no-op with the reason Grove needs nothing from it; a few others are
// refused, with the reason. Pure: no store, no I/O.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "component_store.hpp"

namespace grove::deployment {

/// The account of AWS's public components in their ARNs.
inline constexpr std::string_view public_account = "aws";

/// What a public component is on Grove.
enum class public_role {
  /// Its configuration is given to a Grove plugin over the image profile.
  plugin_config,
  /// Accepted, nothing to run (`reason` says why).
  no_op,
};

/// One public component of the catalog.
struct public_component {
  /// ComponentName.
  std::string_view name;
  /// What it is on Grove.
  public_role role;
  /// plugin_config: the plugin configured; no_op: "".
  std::string_view plugin;
  /// Why it is a no-op, or what it maps onto (README, ListInstalledComponents' details).
  std::string_view reason;
  /// Its versions, newest first (every patch from the first served), in the stored form
  /// (recipe, platforms, DEPLOYABLE, publisher AWS).
  std::vector<component_version> versions;
};

/// Every public component of the catalog, sorted by name.
const std::vector<public_component>& public_catalog();

/// The catalog's entry for `name`, or nullptr.
const public_component* find_public(std::string_view name);

/// The catalog's version `version` of `name`, or nullptr.
const component_version* find_public_version(std::string_view name, std::string_view version);

/// Why a deployment naming `name` (an AWS component Grove does not implement) is
/// refused, or nullopt.
std::optional<std::string> public_refusal(std::string_view name);

/// The document given over the image profile to the plugin of plugin_config component
/// `name` (`configuration`: its merged configuration; `thing`: this core's thing name);
/// nullopt when `name` is no plugin_config component. Keys that are not the AWS
/// component's, or that Grove does not implement, are left out and named in `ignored`.
std::optional<nlohmann::json> public_plugin_document(std::string_view name,
                                                     const nlohmann::json& configuration,
                                                     const std::string& thing,
                                                     std::vector<std::string>* ignored = nullptr);

} // namespace grove::deployment
