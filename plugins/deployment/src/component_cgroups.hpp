#pragma once

// runWith.systemResourceLimits applied (issue 15): one cgroup per generic component,
// `<groved's cgroup>/grove-components-<pid>/<component>`, with its memory limit and CPU
// quota; every life-cycle process of the component joins it before it runs anything
// (grove::process's pre-exec hook writes "0" to each cgroup.procs). cgroup v2 when
// groved's cgroup offers memory (and cpu), else v1's memory and cpu hierarchies. The
// policy is here; the cgroups' mechanics are the SDK's (grove::cgroup) and so is
// starting children (grove::process), as function_runtime keeps its sandbox's policy in
// its own sandbox.cpp.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

#include "grove/cgroup.hpp"

namespace grove::deployment {

/// The directory of a groved's components' cgroups is `<prefix><groved pid>`.
inline constexpr std::string_view component_cgroups_prefix = "grove-components-";

/// A component's runWith.systemResourceLimits (AWS's units; 0: none).
struct resource_limits {
  /// RAM in kilobytes (`memory`).
  int64_t memory_kb = 0;
  /// CPU time in cores (`cpus`: 0.5 is half of one core, 2 two cores).
  double cpus = 0;

  /// Any limit set.
  bool any() const {
    return memory_kb > 0 || cpus > 0;
  }

  /// Field-by-field equality (a change restarts the component).
  bool operator==(const resource_limits&) const = default;
};

/// The components' cgroups (see the file comment). Used on the plugin's actor.
class component_cgroups {
public:
  /// Finds the hierarchies and makes `grove-components-<pid>` under groved's cgroup in
  /// each, removing those of earlier groveds whose pid is gone. The error says what is
  /// missing (root, a writable memory controller); limits are then refused, not ignored.
  static caf::expected<std::unique_ptr<component_cgroups>> open();

  /// Removes the components' cgroups and the base where they are empty (see the .cpp).
  ~component_cgroups();

  /// Component `name`'s cgroup with `limits` written (made when new, rewritten
  /// otherwise): the cgroup.procs files its processes join.
  caf::expected<std::vector<std::filesystem::path>> prepare(const std::string& name,
                                                            const resource_limits& limits);

  /// How many times the kernel's OOM killer acted in `name`'s cgroup so far.
  uint64_t oom_kills(const std::string& name) const;

  /// Removes `name`'s cgroup when nothing is left in it (a stopping process keeps it:
  /// it goes with the others when this goes).
  void remove(const std::string& name);

  /// `name`'s cgroup on cgroup v2 (where its processes live), or empty (v1, or none made).
  std::filesystem::path v2_group(const std::string& name) const;

  /// "cgroup v1 (memory, cpu)".
  std::string describe() const;

  /// The base directory of `controller` ("memory", "cpu"; "" on v2), for tests and logs.
  std::filesystem::path base(const std::string& controller) const;

private:
  component_cgroups() = default;

  // `name`'s group (its directories, made or not).
  cgroup_group group(const std::string& name) const;

  int version_ = 1;
  // controller ("memory", "cpu"; "" for v2) -> grove-components-<pid>
  std::map<std::string, std::filesystem::path> bases_;
  bool cpu_ = false; // v2: the cpu controller is enabled
};

} // namespace grove::deployment
