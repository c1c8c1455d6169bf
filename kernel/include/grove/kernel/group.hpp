#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include <caf/expected.hpp>
#include <yaml-cpp/yaml.h>

#include "grove/group.pb.h"

namespace grove {

/// Most subscriptions a group may hold (Greengrass v1's limit).
constexpr size_t max_group_subscriptions = 10000;

/// Most devices a group may hold (Greengrass v1's limit).
constexpr size_t max_group_devices = 2500;

/// Loads a group definition (YAML, or JSON, which YAML reads too) and validates it:
/// printable UTF-8 text (YAML 1.2: no control character but tab, LF and CR), schema
/// (unknown keys, types, required fields), endpoint syntax (`device:<thing>`,
/// `function:<name>`, `cloud`, `shadow`), subjects (MQTT topics or filters), unique ids
/// and names, references to declared devices and functions, and the Greengrass limits.
/// Errors name file, line and field (or column); nothing is applied.
caf::expected<group::Group> load_group(const std::filesystem::path& file);

/// The group a text holds, read and validated as load_group reads a file (`name` stands
/// for the file in errors; the result has no source_file): what the kernel would put in
/// force from a `$grove/group/set` document, e.g. a group_document written with to_yaml.
caf::expected<group::Group> parse_group(std::string_view text, const std::string& name);

/// The group file's document for `g` (a group in force, as `$grove/group/get` answers
/// it): `name`, `devices`, `functions` and `resources` with their `config` as YAML, and
/// `subscriptions`; what load_group reads back as `g`. Plugins with `may_set_group` edit
/// it and set it back (`$grove/group/set`). Throws YAML::Exception when a config is no
/// YAML (the kernel only hands out configs it parsed).
YAML::Node group_document(const group::Group& g);

/// Checks one subscription endpoint ("device:lamp", "cloud", ...).
caf::error validate_endpoint(std::string_view endpoint);

} // namespace grove
