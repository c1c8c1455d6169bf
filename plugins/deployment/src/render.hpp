#pragma once

// What a component sees on this core (issue 15, step 2): its merged configuration
// (DefaultConfiguration, then the deployment's `reset` pointers, then its `merge`) and
// the recipe variables of its life cycle scripts, as Greengrass v2 interpolates them.
// Pure: no I/O, so the unit suite and a fuzzer call it directly.

#include <map>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace grove::deployment {

/// The configuration a component runs with after a deployment's `configurationUpdate`
/// (`{merge: "<json>", reset: ["/ptr", ...]}`, null for none): `previous` (what the last
/// deployment left; null the first time: `defaults`), every `reset` pointer put back to
/// its value in `defaults` (removed when `defaults` has none; "" resets all), then
/// `merge` merged in (objects key by key, anything else replaced). A merge text that is
/// no JSON object is ignored here (CreateDeployment refuses it).
nlohmann::json merged_configuration(const nlohmann::json& defaults,
                                    const nlohmann::json& previous,
                                    const nlohmann::json& update);

/// One component's places and configuration, for interpolation.
struct component_view {
  /// `{artifacts:path}`: its artifacts' directory.
  std::string artifacts_path;
  /// `{artifacts:decompressedPath}`: where its ZIP artifacts are unpacked.
  std::string decompressed_path;
  /// `{work:path}`: its work directory.
  std::string work_path;
  /// Its merged configuration (`{configuration:/ptr}`).
  nlohmann::json configuration = nlohmann::json::object();
};

/// What interpolation may read: this core's thing and every component of the set.
struct render_context {
  /// `{iot:thingName}`.
  std::string thing_name;
  /// Component name → its view.
  std::map<std::string, component_view> components;
};

/// `text` with the recipe variables of `self` replaced: `{artifacts:path}`,
/// `{artifacts:decompressedPath}`, `{work:path}`, `{configuration:/json/pointer}` (a
/// string as it is, anything else as JSON; a pointer to nothing gives ""),
/// `{iot:thingName}`, and another component's `{<name>:configuration:/ptr}`,
/// `{<name>:artifacts:path}`, `{<name>:artifacts:decompressedPath}`, `{<name>:work:path}`.
/// A variable it does not know (or a component not in the set) is left as written, as
/// Greengrass leaves it.
std::string render(std::string_view text, const render_context& ctx, const std::string& self);

} // namespace grove::deployment
