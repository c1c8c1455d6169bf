#pragma once

#include <filesystem>

#include <caf/expected.hpp>

#include "grove/group.pb.h"

namespace grove {

/// Most subscriptions a group may hold (Greengrass v1's limit).
constexpr size_t max_group_subscriptions = 10000;

/// Most devices a group may hold (Greengrass v1's limit).
constexpr size_t max_group_devices = 2500;

/// Loads a group definition (YAML, or JSON, which YAML reads too) and validates it:
/// schema (unknown keys, types, required fields), endpoint syntax
/// (`device:<thing>`, `function:<name>`, `cloud`, `shadow`), subjects (MQTT topics or
/// filters), unique ids and names, references to declared devices and functions, and
/// the Greengrass limits. Errors name file, line and field; nothing is applied.
caf::expected<group::Group> load_group(const std::filesystem::path& file);

/// Checks one subscription endpoint ("device:lamp", "cloud", ...).
caf::error validate_endpoint(std::string_view endpoint);

} // namespace grove
