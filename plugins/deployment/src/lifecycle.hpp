#pragma once

// Greengrass v2 life cycle steps (`install`, `run`, `startup`, `shutdown`, `recover`,
// `bootstrap`, and the Lifecycle's `setenv`), read one way by CreateComponentVersion's
// checks (recipe.cpp) and by the runner, so a recipe the API accepts is a recipe the
// runner can run: keys matched without regard to case (as the nucleus and the runner read
// them), every value of its type. Pure: no I/O, so the unit suite and a fuzzer call it.

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "recipe.hpp"
#include "platform.hpp"

namespace grove::deployment {

/// One life cycle step as the runner runs it.
struct step_def {
  /// `Script` (or the step itself when it is a string).
  std::string script;
  /// `Setenv`: name → value.
  nlohmann::json setenv = nlohmann::json::object();
  /// `Timeout` in seconds; 0: the step's default.
  int timeout = 0;
  /// `Skipif` (`onpath <program>` or `exists <file>`), or "".
  std::string skipif;
  /// `RequiresPrivilege`.
  bool privileged = false;
  /// The Lifecycle has the step.
  bool present = false;
  /// bootstrap's `BootstrapOnRollback`.
  bool on_rollback = false;
  /// What is wrong with the step, each problem as `<step>/<key>: <why>`, "; " between
  /// them ("" : nothing). A step with an error must not run.
  std::string error;
};

/// The first member of `obj` named `key` without regard to case (recipes write `Script`
/// and `script`), or nullptr (also when `obj` is no object).
const nlohmann::json* member(const nlohmann::json& obj, std::string_view key);

/// A parsed `Skipif`.
struct skipif_rule {
  /// `onpath` or `exists`.
  std::string verb;
  /// The program or file.
  std::string arg;
};

/// `Skipif` text as `onpath <program>` or `exists <file>` (blanks around allowed), or
/// nullopt.
std::optional<skipif_rule> parse_skipif(std::string_view text);

/// Appends what is wrong with a Lifecycle map (a manifest's or the recipe's) to
/// `errors`, each field under `ptr`: a step name it does not know, a step that is no
/// string, map or null, a key a step does not have (`Skipif` on every step but bootstrap,
/// as the nucleus checks it; `BootstrapOnRollback` on bootstrap only), a map without
/// `Script`, `Timeout` not a whole number of seconds (0 to 2147483647), `RequiresPrivilege` or
/// `BootstrapOnRollback` not true or false, `Skipif` not `onpath X` / `exists X`, `Setenv`
/// (and `setenv`) not a map of names to strings, numbers or booleans, a key given twice
/// in two spellings. A string holding a recipe variable (`{...}`) where a number, a
/// boolean or a Skipif verb is due passes: the runner checks it once rendered.
void check_lifecycle(const nlohmann::json& lifecycle, const std::string& ptr,
                     std::vector<recipe_error>& errors);

/// Step `name` of `lifecycle`, read as check_lifecycle checks it; `render` (when set)
/// replaces the recipe variables of a Timeout, RequiresPrivilege, BootstrapOnRollback or
/// Skipif first. A wrong value (a recipe stored before these checks, a variable rendered
/// to no number) sets `error`, naming the key; the step must not run then.
step_def step_of(const nlohmann::json& lifecycle, std::string_view name,
                 const std::function<std::string(const std::string&)>& render = {});

/// The Lifecycle that runs on `platform`: the first manifest whose Platform matches
/// (manifest_for), its Lifecycle; without one (or without manifests), the recipe's own
/// Lifecycle; else an empty map.
nlohmann::json lifecycle_of(const nlohmann::json& recipe, const platform_attributes& platform);

} // namespace grove::deployment
