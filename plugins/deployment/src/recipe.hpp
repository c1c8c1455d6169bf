#pragma once

// Greengrass v2 component recipes (format 2020-01-25), YAML or JSON: parsed into one JSON
// tree, checked field by field (every error names the field as a JSON pointer, and its
// line when the recipe was YAML), and written back in either format.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "semver.hpp"

namespace grove::deployment {

/// The largest recipe accepted (bytes); CreateComponentVersion's body cap is above it.
inline constexpr size_t max_recipe_bytes = 1 << 20;

/// One thing wrong with a recipe: ValidationException's `fields` entry.
struct recipe_error {
  /// A JSON pointer (`/Manifests/0/Artifacts/1/Uri`), `/` for the document.
  std::string field;
  /// What is wrong, with `line N: ` in front for YAML.
  std::string message;
};

/// A recipe that passed every check.
struct recipe {
  /// ComponentName.
  std::string name;
  /// ComponentVersion.
  semver version;
  /// ComponentDescription, or "".
  std::string description;
  /// ComponentPublisher, or "".
  std::string publisher;
  /// The whole recipe.
  nlohmann::json doc;
  /// DescribeComponent's `platforms`: one {name, attributes} per manifest's Platform.
  nlohmann::json platforms;
};

/// Parses and checks recipe text (YAML or JSON, told apart by the first character);
/// nullopt with every error found in `errors`.
std::optional<recipe> parse_recipe(std::string_view text, std::vector<recipe_error>& errors);

/// The recipe as JSON text.
std::string recipe_json(const nlohmann::json& doc);

/// The recipe as YAML text.
std::string recipe_yaml(const nlohmann::json& doc);

/// A YAML tree as JSON, read as recipes are: plain scalars typed by YAML 1.2's core
/// schema, quoted ones strings; nullopt for one JSON cannot hold (a key that is no plain
/// string, a repeated key, nesting past 64 levels).
std::optional<nlohmann::json> yaml_json(const YAML::Node& node);

/// `key` as one JSON pointer segment (RFC 6901: `~` as `~0`, `/` as `~1`).
std::string escape_pointer(std::string_view key);

/// True for a component name Grove stores: 1 to 128 of [A-Za-z0-9._-], not starting with
/// `.` (it names directories in part 2 and sits in ARNs, so no `:` or `/`).
bool valid_component_name(std::string_view name);

} // namespace grove::deployment
