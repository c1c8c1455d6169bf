#pragma once

// grove::cgroup: groved's own cgroups (v1 controllers or the v2 unified hierarchy) and
// named child groups under them with limits, for plugins that confine what they start
// (function_runtime's sandbox, deployment's systemResourceLimits). A group's cgroup.procs
// files go to grove::process (process_sandbox::cgroup_procs, process_options::cgroup_procs)
// so a child joins before it runs anything. The policy (which controllers are required,
// what a failure means) stays with the plugin; the files, their formats and the v1/v2
// differences are here. grove_cgroup, a static library a plugin links itself; its types
// never cross the plugin boundary, so it is not part of the plugin ABI (as store.hpp).

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace grove {

/// A cgroup file system of groved's mount namespace (/proc/self/mountinfo).
struct cgroup_mount {
  /// Where it is mounted.
  std::string point;
  /// "cgroup" (v1) or "cgroup2".
  std::string type;
  /// Its super options: a v1 hierarchy's controllers are among them.
  std::vector<std::string> options;
};

/// The cgroup and cgroup2 mounts of groved's mount namespace.
std::vector<cgroup_mount> cgroup_mounts();

/// The cgroup path ("/system.slice/grove.service") that `text`, a /proc/<pid>/cgroup file
/// (`id:controllers:path` lines), gives for the v1 hierarchy holding `controller`, or for
/// the v2 hierarchy with "" (its "0::" line); nullopt when there is none.
std::optional<std::string> cgroup_path_in(std::string_view text, const std::string& controller);

/// Process `pid`'s cgroup path (cgroup_path_in of /proc/<pid>/cgroup; 0: groved itself);
/// nullopt when it has none there or is gone. A pid alone may name another process by the
/// time it is read: who needs it to be one process checks that process is still alive
/// after the read (a pidfd of it, opened before).
std::optional<std::string> cgroup_of(pid_t pid, const std::string& controller);

/// groved's cgroup path in the v1 hierarchy holding `controller`, or in the v2 hierarchy
/// for "" (cgroup_of(0, controller)).
std::optional<std::string> own_cgroup(const std::string& controller);

/// The pid in a `<prefix><pid>` directory name (the groups of groved `pid`), or 0 when
/// `name` is not one (no digits, a leading zero, anything after them, over 9 digits).
pid_t cgroup_name_owner(std::string_view name, std::string_view prefix);

/// Whether `name` is a `<prefix><pid>` directory name whose groved is gone (no process
/// has that pid). Another live groved's, or this one's, is not.
bool cgroup_name_stale(std::string_view name, std::string_view prefix);

/// Where groved's cgroups are on this host (probe()).
struct cgroup_host {
  /// The unified (v2) hierarchy's mount point; empty without one.
  std::filesystem::path v2_mount;
  /// groved's directory in it (the parent of its leaf `groved`, see cgroup_enable);
  /// empty when there is none (v2_why says why).
  std::filesystem::path v2_dir;
  /// The controllers v2_dir's children may get (its cgroup.controllers).
  std::vector<std::string> v2_controllers;
  /// Why v2_dir is empty ("no cgroup2 mount", "groved is in no v2 cgroup").
  std::string v2_why;
  /// v1: controller ("memory", "pids", "cpu", "devices", ...) -> groved's directory in
  /// the hierarchy holding it.
  std::map<std::string, std::filesystem::path> v1_dirs;

  /// Reads /proc/self/mountinfo and /proc/self/cgroup. A non-empty `parent` (a path from
  /// each hierarchy's root, "/grove") replaces groved's own cgroup.
  static cgroup_host probe(const std::string& parent = {});

  /// v2_dir offers `controller` to its children.
  bool v2_has(std::string_view controller) const;

  /// `controller`'s v1 directory, or empty.
  std::filesystem::path v1_dir(const std::string& controller) const;

  /// Whether groved may make groups in `dir` (write access; false when it is missing).
  static bool writable(const std::filesystem::path& dir);
};

/// `path` (a cgroup path from /proc/self/cgroup) inside the hierarchy mounted at `mount`.
std::filesystem::path cgroup_under(const std::filesystem::path& mount, const std::string& path);

/// Makes cgroup directory `dir` (an existing one is fine); the error names it and why.
caf::error cgroup_mkdir(const std::filesystem::path& dir);

/// Writes `value` to cgroup file `file` in one write(2), as the kernel wants it; the
/// error names the value, the file and the kernel's reason.
caf::error cgroup_write(const std::filesystem::path& file, const std::string& value);

/// v2: enables `controllers` ("+memory +pids") for `dir`'s children. The kernel refuses
/// it while `dir` holds processes itself, as groved's own non-root cgroup does; with
/// `move_own` every process of `dir` then moves to its leaf `groved` first (a delegated
/// sub-tree's usual layout; cgroup_host::probe() looks past that leaf).
caf::error cgroup_enable(const std::filesystem::path& dir, const std::string& controllers,
                         bool move_own);

/// Removes the `<prefix><pid>` directories under `parent` whose groved (`pid`) is gone
/// (cgroup_name_stale), with the groups in them: with `kill` what is left in a group is killed first, else a
/// group still holding processes stays (rmdir refuses it). Returns the directories that
/// went.
std::vector<std::string> cgroup_remove_stale(const std::filesystem::path& parent,
                                             std::string_view prefix, bool kill);

/// Kills what is left in cgroup `dir` (v2 `cgroup.kill` where the kernel has it, else
/// SIGKILL through a pidfd to each of its cgroup.procs still listed once the pidfd is
/// open: never a process that took a listed pid since) and removes it, waiting up to 2 s for the kernel to free the emptied group. Whether it went.
bool cgroup_kill_and_remove(const std::filesystem::path& dir);

/// What cgroup_group::apply() writes; an unset field is left as it is.
struct cgroup_limits {
  /// Memory in bytes (v1 memory.limit_in_bytes, v2 memory.max); -1: unlimited.
  std::optional<int64_t> memory_bytes;
  /// With a memory limit the process may not swap past it (v1: memory.memsw.limit_in_bytes
  /// equal to it where swap is accounted; v2: memory.swap.max 0); else swap is unlimited.
  bool no_swap = true;
  /// Processes and threads (pids.max); -1: unlimited.
  std::optional<int64_t> pids_max;
  /// CPU time in microseconds per cpu_period_us (v1 cpu.cfs_quota_us, v2 cpu.max); -1:
  /// unlimited.
  std::optional<int64_t> cpu_quota_us;
  /// The period cpu_quota_us is a share of (the kernel's default).
  int64_t cpu_period_us = 100000;
  /// CPU weight in v2 units, 1-10000, 100 the default (v2 cpu.weight; v1 cpu.shares
  /// weight * 1024 / 100, at least 2).
  std::optional<int64_t> cpu_weight;
};

/// One named group: a directory per v1 hierarchy, or one v2 directory.
class cgroup_group {
public:
  /// Makes `name` under each base (controller -> directory, in this order; "" : a v2
  /// directory). On an error the directories made so far are removed again.
  static caf::expected<cgroup_group>
  make(const std::vector<std::pair<std::string, std::filesystem::path>>& bases,
       const std::string& name);

  /// Writes `limits` into the directories of the controllers they concern (v2: all into
  /// the one); the first error is returned.
  caf::error apply(const cgroup_limits& limits) const;

  /// The cgroup.procs files a process joins the group through, in the order of make().
  std::vector<std::filesystem::path> procs() const;

  /// How many times the kernel's OOM killer acted in the group (v1 memory.oom_control,
  /// v2 memory.events: oom_kill); 0 without a memory directory.
  uint64_t oom_kills() const;

  /// `controller`'s directory ("" : v2), or empty.
  std::filesystem::path dir(const std::string& controller) const;

  /// 2 when the group is a v2 directory, else 1.
  int version() const;

  /// Removes the directories; with `kill` what is still in them is killed first
  /// (cgroup_kill_and_remove), else a busy one stays. Whether all went.
  bool remove(bool kill) const;

  /// (controller, directory), in the order of make().
  std::vector<std::pair<std::string, std::filesystem::path>> dirs;
};

} // namespace grove
