#pragma once

// The GreengrassContainer policy: what a sandboxed instance sees (mounts), its limits
// (a cgroup per instance, v2 or v1, made with the SDK's grove::cgroup) and its seccomp
// profile. grove::process runs it (process_options::sandbox); this file decides it. See
// README.md, "Sandbox".

#include <linux/filter.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

#include "device_filter.hpp"
#include "function_def.hpp"
#include "seccomp_profile.hpp"
#include "grove/cgroup.hpp"
#include "grove/process.hpp"

namespace grove::fn {

/// One instance's cgroup (grove::cgroup_group: one directory per v1 hierarchy, or one v2
/// directory), removed when this goes.
class instance_cgroup {
public:
  /// Removes the directories (the instance has ended: its namespace's processes too).
  ~instance_cgroup();

  /// The cgroup.procs files the instance is attached through.
  std::vector<std::filesystem::path> procs() const;

  /// The kernel's OOM killer acted in this cgroup (memory.events / memory.oom_control).
  bool oom_killed() const;

  /// The directories, memory's first.
  cgroup_group group;
};

/// A local resource (local_resources, lr-1) made visible in an instance's sandbox.
struct resource_mount {
  /// The resource's id (for errors).
  std::string id;
  /// A device node (else a volume).
  bool device = false;
  /// On the device (canonical).
  std::string source;
  /// Inside the sandbox (a device: its path under /dev).
  std::string destination;
  /// Permission ro: a volume is mounted read-only (EROFS), a device allowed "r" only.
  bool read_only = true;
  /// Device: 'c' or 'b', and its numbers (the devices cgroup's rule).
  char device_type = 'c';
  /// Device: major number.
  uint32_t major = 0;
  /// Device: minor number.
  uint32_t minor = 0;

  /// Field-by-field equality (a change restarts the function's instances).
  bool operator==(const resource_mount&) const = default;
};

/// The started instance's part of the sandbox.
struct instance_sandbox {
  /// For process_options::sandbox.
  process_sandbox spec;
  /// Its cgroup.
  std::unique_ptr<instance_cgroup> cgroup;
  /// What could not be applied but does not refuse the start (a CPU weight); "" none.
  std::string warning;
};

/// The runtime's sandbox: the host's support (probed once) and the compiled profile.
class sandbox {
public:
  /// Checks the kernel (user, PID, mount, IPC and UTS namespaces; a writable cgroup with
  /// memory and pids, v2 preferred) and loads the profile. The error names what is
  /// missing: GreengrassContainer functions are refused with it, never run unisolated.
  static caf::expected<std::unique_ptr<sandbox>> open(const runtime_config& cfg,
                                                      const std::filesystem::path& state_dir);

  /// Removes the runtime's cgroup directory.
  ~sandbox();

  /// "cgroup v1 (memory, pids, cpu); seccomp default.txt: 250 calls allowed".
  std::string describe() const;

  /// What open() could not apply (a CPU weight), for the log.
  const std::vector<std::string>& warnings() const { return warnings_; }

  /// The cgroups of earlier runtimes whose groved is gone, removed by open().
  const std::vector<std::string>& stale_removed() const { return stale_; }

  /// Makes instance `id` of `fn`'s cgroup and its process_sandbox.
  caf::expected<instance_sandbox> prepare(const std::string& fn, uint64_t id,
                                          const function_def& def,
                                          const std::filesystem::path& code_dir,
                                          const std::vector<resource_mount>& resources
                                          = {}) const;

  /// What prepare() makes an instance's sandbox from, as a key: an instance_sandbox
  /// prepared ahead (the runtime keeps one spare per function) serves a start whose
  /// key is the same (the rest comes from the runtime's configuration, fixed for its
  /// life).
  static std::string key(const std::string& fn, const function_def& def,
                         const std::filesystem::path& code_dir,
                         const std::vector<resource_mount>& resources);

  /// Whether instances' devices are limited (v1's devices controller, or a cgroup v2
  /// device program): a device granted ro needs it (a read-only mount does not stop
  /// writes to a device node).
  bool has_devices_cgroup() const {
    return bases_.count("devices") > 0 || device_bpf_;
  }

  /// `path` (a program or argument) as the sandbox sees it: the code directory is at
  /// /lambda, the instance's working directory, so a relative path ("./x") is taken from
  /// there and an absolute one inside `code_dir` moves there; anything else (a bare
  /// name for PATH, a system path) stays as it is.
  static std::string inside(const std::string& path, const std::filesystem::path& code_dir);

  /// How a sandboxed instance ended, for its item and log: "out of memory (...)",
  /// "killed: the sandbox denied system call ptrace", else the exit as it is.
  static std::string explain(const process_exit& e, const instance_cgroup* cg,
                             const function_def* def);

private:
  sandbox() = default;

  runtime_config cfg_;
  std::filesystem::path root_base_;
  int cgroup_version_ = 1;
  // controller ("memory", "pids", "cpu", "devices"; "" for v2; "bpf": the unified
  // hierarchy's, for the device program on a hybrid host) -> the runtime's cgroup directory
  std::map<std::string, std::filesystem::path> bases_;
  bool cpu_ = false; // the CPU weight can be set
  bool device_bpf_ = false; // instances get a device program (device_filter.hpp)
  std::unique_ptr<device_programs> device_programs_ = std::make_unique<device_programs>();
  std::vector<std::string> warnings_;
  std::vector<std::string> stale_;
  std::vector<sock_filter> filter_;
  std::string profile_name_;
  size_t allowed_ = 0;
};

} // namespace grove::fn
