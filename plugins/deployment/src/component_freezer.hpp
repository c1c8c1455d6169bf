#pragma once

// PauseComponent / ResumeComponent (Greengrass IPC, aws.greengrass.ipc.lifecycle): a
// generic component's processes stopped where they are and let go on later. As
// Greengrass' nucleus, with the cgroup freezer: the v1 `freezer` hierarchy, one group
// per paused component, `<groved's freezer cgroup>/grove-freeze-<pid>/<component>`, its
// processes moved in when it is paused (a fork between the listing and the freeze lands
// in the group too: freeze() lists again until nothing new turns up). Without a
// writable freezer hierarchy (groved not root, none mounted, cgroup v2 only) each of the
// component's processes gets SIGSTOP, and SIGCONT on resume (a stopped process's parent
// can see the stop through waitpid's WUNTRACED; frozen ones show nothing).
//
// A frozen task acts on no signal, SIGKILL included, until thawed: whoever ends a
// paused component's processes thaws them first (runner: stop, run timeout, hand-over,
// its destructor), and open() thaws what earlier groveds left frozen. Used on the
// plugin's actor.

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <caf/error.hpp>

namespace grove::deployment {

/// The components' freezer (see the file comment).
class component_freezer {
public:
  /// Finds the v1 freezer hierarchy and thaws (and removes, when empty) the
  /// `grove-freeze-<pid>` groups under groved's freezer cgroup whose groved is gone, and
  /// this groved's own (a hot reload's new runner starts with nothing paused): nothing
  /// stays frozen that nobody knows of. Without one, freeze() and thaw() signal.
  component_freezer();

  /// Freezes (or stops) `name`'s processes, listed by `pids` (called again until it
  /// finds none that is not frozen yet); the error says why not.
  caf::error freeze(const std::string& name, const std::function<std::vector<pid_t>()>& pids);

  /// Thaws (or continues) `name`'s processes (`pids` for the signals' fallback).
  caf::error thaw(const std::string& name, const std::vector<pid_t>& pids);

  /// Removes `name`'s group once its processes are gone (rmdir refuses it before).
  void remove(const std::string& name);

  /// "cgroup v1 freezer (<dir>)" or "SIGSTOP/SIGCONT (<why no freezer>)".
  std::string describe() const;

private:
  std::filesystem::path base_; // grove-freeze-<pid>; empty: signals
  std::string why_;            // why no freezer
};

} // namespace grove::deployment
