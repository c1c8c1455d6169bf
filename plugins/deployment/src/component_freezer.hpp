#pragma once

// PauseComponent / ResumeComponent (Greengrass IPC, aws.greengrass.ipc.lifecycle): a
// generic component's processes stopped where they are and let go on later, with the
// cgroup freezer as Greengrass' nucleus does. Per pause, the first of these that fits
// (the README's PauseComponent section says why in this order):
//  1. cgroup v2, the component's own cgroup: a component with systemResourceLimits on a
//     v2 host already lives in a cgroup of its own (component_cgroups); that cgroup is
//     frozen (`cgroup.freeze` 1) where it is: no process leaves the cgroup holding its
//     limits, and what it forks is born inside and frozen. Named by the caller, or
//     found from where the processes are (own_of).
//  2. the v1 `freezer` hierarchy: one group per paused component, `<groved's freezer
//     cgroup>/grove-freeze-<pid>/<component>`, its processes moved in (a hierarchy of its
//     own, so the memory and cpu cgroups stay as they are), `freezer.state` FROZEN.
//  3. cgroup v2, a leaf of its own: `<groved's v2 cgroup>/grove-freeze-<pid>/<component>`,
//     the processes moved in from groved's cgroup (they hold no limits there), frozen;
//     only when every one is in groved's cgroup (or the leaf): one a scope or its own
//     cgroup holds is stopped with 4 instead. No v2 backend on a kernel without
//     `cgroup.freeze` (before 5.2); a component with v2 limits then takes 2 or 4.
//  4. SIGSTOP to each process, SIGCONT on resume (groved not root, no cgroup file system
//     it may write): any SIGCONT ends the pause, and a stopped process's parent can see
//     the stop through waitpid's WUNTRACED (frozen ones show nothing).
// The processes come as the runner holds them (held_process: a pidfd each): signals go
// through the pidfd, and one that has ended is neither signalled nor moved, so a pid
// given to another process since is never stopped, continued or frozen.
// The groups are listed again after the freeze until nothing new turns up (ten rounds
// at most; a fork between the listing and the freeze is moved in and frozen too; one
// still outside after them fails the pause), and the pause is
// answered once the kernel reports the group frozen (v2: `cgroup.events` "frozen 1",
// waited for with poll(2); v1: FROZEN), or after a second in any case.
//
// A v1-frozen task acts on no signal, SIGKILL included, until thawed, and a v2-frozen
// group stays frozen after its processes went: whoever ends a paused component's
// processes thaws them first (runner: stop, run timeout, hand-over, its destructor); a
// leaf goes once its processes have (thaw() of a pause whose processes are gone, remove()
// after the runner reaped them or stopped the component), and
// the constructor thaws what earlier groveds in the same cgroups (and this one's earlier
// instance) left frozen, on every backend there is. Tests only:
// GROVE_DEPLOYMENT_FREEZER=v1|v2|signal limits the choice to that backend (v2: 1 and 3).
// Used on the plugin's actor.

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <caf/error.hpp>

#include "held_process.hpp"

namespace grove::deployment {

/// The components' freezer (see the file comment).
class component_freezer {
public:
  /// Finds the v1 freezer and groved's v2 cgroup, and thaws (and removes, when empty)
  /// the `grove-freeze-<pid>` groups whose groved is gone, and this groved's own (a hot
  /// reload's new runner starts with nothing paused), and the components' own v2 cgroups
  /// (`grove-components-<pid>/*`) of the same groveds: nothing stays frozen that nobody
  /// knows of. Without any of them, freeze() and thaw() signal.
  component_freezer();

  /// Freezes (or stops) `name`'s processes, listed by `procs` (called again until it
  /// finds none that is not frozen yet). `own`: the component's v2 cgroup holding its
  /// systemResourceLimits, or empty. The error says why not.
  caf::error freeze(const std::string& name,
                    const std::function<std::vector<held_process>()>& procs,
                    const std::filesystem::path& own = {});

  /// Thaws (or continues) `name`'s processes, the way freeze() stopped them (`procs` for
  /// the signals' fallback); its leaf goes when they are gone (remove()).
  caf::error thaw(const std::string& name, const std::vector<held_process>& procs);

  /// Removes `name`'s leaves (v1 and v2, not a component's own cgroup) once its processes
  /// are gone (rmdir refuses one before). Whether none is left.
  bool remove(const std::string& name);

  /// The backends in the order they are tried, e.g. "cgroup v2 cgroup.freeze (a
  /// component's own cgroup, else a leaf under <dir>)" or "SIGSTOP/SIGCONT (<why>)".
  std::string describe() const;

private:
  enum class kind { v2_own, v1, v2_leaf, signal };

  // The backend for component `name` whose own v2 cgroup is `own` (or none), its
  // processes `pids`.
  kind choose(const std::string& name, const std::filesystem::path& own,
              const std::vector<held_process>& procs) const;

  // `pid`'s cgroup on the v2 hierarchy, or empty.
  std::filesystem::path v2_cgroup_of(pid_t pid) const;

  // The component's own v2 cgroup, found from where `pid` is: a directory of a
  // `grove-components-<pid>` under groved's v2 cgroup (a runner that has not opened its
  // component_cgroups yet, e.g. after a hot reload, does not name it), or empty.
  std::filesystem::path own_of(pid_t pid) const;

  std::filesystem::path v1_base_; // <v1 freezer>/grove-freeze-<pid>; empty: none
  std::filesystem::path v2_base_; // <v2 cgroup>/grove-freeze-<pid>; empty: none
  bool v2_own_ = false;           // a component's own v2 cgroup may be frozen
  std::filesystem::path v2_mount_, v2_dir_; // cgroup_host's
  std::string why_;               // why neither: signals
  std::map<std::string, std::pair<kind, std::filesystem::path>> paused_; // name -> how, group
};

} // namespace grove::deployment
