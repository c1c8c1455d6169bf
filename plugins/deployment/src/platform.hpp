#pragma once

// A device's platform against a recipe's manifests, the one matcher the resolver
// (which versions run here), the runner (which Lifecycle runs) and the artifact links
// (which files a component gets) share. Pure but for core_platform (uname).

#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace grove::deployment {

/// A device's platform attributes (os, architecture, any other).
using platform_attributes = std::map<std::string, std::string>;

/// Whether a manifest's Platform holds on `platform`: every value `*`, the device's, or a
/// `/regex/` matching the device's whole value (an empty Platform matches every device).
bool platform_matches(const platform_attributes& wanted, const platform_attributes& platform);

/// The Platform of one manifest of a stored recipe (a value that is no string: one no
/// device has).
platform_attributes platform_of(const nlohmann::json& manifest);

/// The manifest of a (checked) recipe that runs on `platform`: the first whose Platform
/// matches, as the nucleus picks it; nullptr when none does or there are none. Its
/// Lifecycle runs and only its Artifacts are linked.
const nlohmann::json* manifest_for(const nlohmann::json& recipe,
                                   const platform_attributes& platform);

/// This core's platform as Greengrass names it: `os` linux, `architecture` from uname
/// (x86_64 is `amd64`, armv* `arm`, others as uname says).
platform_attributes core_platform();

} // namespace grove::deployment
