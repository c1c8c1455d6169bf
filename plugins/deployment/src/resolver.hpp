#pragma once

// Whole-graph resolution of component versions: given the device's platform, the root
// requirements (component → ranges, each with who asked) and the versions a catalog
// holds, it picks for every component reached through ComponentDependencies the newest
// version that meets every requirement on it, backtracking when a newer pick's
// dependencies conflict. DELETED versions and versions for other platforms are never
// picked; a dependency cycle among the picks is an error. Pure: no HTTP and no store
// (the catalog is a lookup function), so ResolveComponentCandidates and deployments
// (issue 15) share it.
//
// HARD and SOFT dependencies are resolved alike, as Greengrass does: the type only says
// whether the dependent restarts when the dependency changes state (part 2's concern),
// so a SOFT dependency's range binds like a HARD one's and the pick records its type.

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include "platform.hpp"
#include "semver.hpp"

namespace grove::deployment {

/// One ComponentDependencies entry of a version.
struct dependency {
  /// The component depended on.
  std::string name;
  /// VersionRequirement as written (`*` when absent).
  std::string range_text;
  /// The parsed range.
  semver_range range;
  /// DependencyType SOFT (else HARD).
  bool soft = false;
};

/// A stored version as the resolver sees it.
struct available_version {
  /// The version.
  semver version;
  /// Its text as stored.
  std::string text;
  /// vendorGuidance DELETED: never picked.
  bool deleted = false;
  /// One Platform per manifest (an empty map matches every device); no entries: the
  /// recipe has no manifests and runs anywhere.
  std::vector<platform_attributes> platforms;
  /// Its dependencies.
  std::vector<dependency> dependencies;
};

/// A requirement on a component from outside the graph (a deployment, a candidate).
struct requirement {
  /// Who asked (e.g. a thing group, `main`).
  std::string requirer;
  /// The range as written.
  std::string range_text;
  /// The parsed range.
  semver_range range;
};

/// A component's versions, newest first; nullptr or an empty list when the catalog has
/// none. The list must stay valid and unchanged for the whole resolve() call.
using catalog_lookup =
  std::function<caf::expected<const std::vector<available_version>*>(const std::string& name)>;

/// One component of a resolution.
struct resolved_component {
  /// The component.
  std::string name;
  /// The version picked (points into the catalog's list).
  const available_version* version = nullptr;
  /// True for a component the roots named (else only a dependency reached it).
  bool root = false;
};

/// Why a resolution failed.
enum class resolve_failure {
  /// The catalog has no version of the component.
  not_found,
  /// No version that is not DELETED runs on the platform.
  no_platform,
  /// No version meets every requirement on it.
  conflict,
  /// The picks depend on each other in a cycle.
  cycle,
  /// The search took more than its step budget.
  too_complex,
  /// The catalog failed (the store).
  catalog,
};

/// A failed resolution: what, where, who asked.
struct resolve_error {
  /// What failed.
  resolve_failure kind = resolve_failure::conflict;
  /// The component at fault.
  std::string component;
  /// Each requirement on it: requirer (`X@1.2.0` for a dependency) → range.
  std::vector<std::pair<std::string, std::string>> requirements;
  /// The whole explanation, for an error message.
  std::string message;
  /// The catalog's error (kind catalog).
  caf::error cause;
};

/// A successful resolution: every component reached, dependencies before dependents.
using resolution = std::vector<resolved_component>;

/// Resolves `roots` (component → requirements; a component with no requirement takes its
/// newest usable version) on `platform` against `catalog`, giving up after `max_steps`
/// versions tried.
std::variant<resolution, resolve_error> resolve(const platform_attributes& platform,
                                                const std::map<std::string, std::vector<requirement>>& roots,
                                                const catalog_lookup& catalog,
                                                size_t max_steps = 1000000);

/// Whether `v` runs on `platform`: no manifests, or one manifest whose Platform matches
/// (platform_matches).
bool runs_on(const available_version& v, const platform_attributes& platform);


/// The resolver's view of a stored recipe (JSON, already checked by parse_recipe).
available_version describe_version(const nlohmann::json& recipe, const std::string& text,
                                   bool deleted);

} // namespace grove::deployment
