#pragma once

// A function's definition as the group gives it (functions[].config), validated with
// the SDK's config map: the parameters of shared/REFERENCE.md ("Functions", v2 names)
// plus what the code is (runtime, handler, codeUri, runAs). And the runtime plugin's own
// configuration.

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/expected.hpp>

#include "grove/config_map.hpp"

namespace grove::fn {

/// eventSources[]: a topic the function takes messages from.
struct event_source {
  /// PUB_SUB: a local bus topic (no wildcards); IOT_CORE: a cloud topic filter.
  std::string topic;
  /// PUB_SUB or IOT_CORE.
  std::string type;

  /// Field-by-field equality.
  bool operator==(const event_source&) const = default;
};

/// containerParams.volumes[] (kept for the sandbox, issue 13).
struct volume {
  /// Path on the device.
  std::string source_path;
  /// Path inside the sandbox.
  std::string destination_path;
  /// ro or rw.
  std::string permission;
  /// Add the source's group owner to the function's groups.
  bool add_group_owner = false;

  /// Field-by-field equality.
  bool operator==(const volume&) const = default;
};

/// containerParams.devices[] (kept for the sandbox, issue 13).
struct device {
  /// Device node under /dev.
  std::string path;
  /// ro or rw.
  std::string permission;
  /// Add the device's group owner to the function's groups.
  bool add_group_owner = false;

  /// Field-by-field equality.
  bool operator==(const device&) const = default;
};

/// containerParams (kept for the sandbox, issue 13).
struct container_params {
  /// Memory limit of the container.
  int64_t memory_size_kb = 16384;
  /// Mount /sys read-only in the container.
  bool mount_ro_sysfs = false;
  /// Volumes.
  std::vector<volume> volumes;
  /// Devices.
  std::vector<device> devices;

  /// Field-by-field equality.
  bool operator==(const container_params&) const = default;
};

/// resourceAccessPolicies[]: a local resource of the group (local_resources) the
/// function may use, and how.
struct access_policy {
  /// The resource's id in the group.
  std::string resource_id;
  /// ro or rw.
  std::string permission;

  /// Field-by-field equality.
  bool operator==(const access_policy&) const = default;
};

/// linuxProcessParams.
struct process_params {
  /// GreengrassContainer or NoContainer.
  std::string isolation_mode;
  /// containerParams.
  container_params container;

  /// Field-by-field equality.
  bool operator==(const process_params&) const = default;
};

/// runAs: the user and group the instances run as.
struct user_params {
  /// User id; absent: the runtime's default user.
  std::optional<int64_t> uid;
  /// Group id; absent: the user's primary group.
  std::optional<int64_t> gid;

  /// Field-by-field equality.
  bool operator==(const user_params&) const = default;
};

/// One function's definition.
struct function_def {
  /// executable or python3.
  std::string runtime;
  /// executable: the program, relative to codeUri; python3: module.function.
  std::string handler;
  /// A directory holding the code, or a .zip/.tar.gz of it; relative to the group
  /// file's directory.
  std::string code_uri;
  /// SHA-256 (hex) of an archive codeUri; required for one.
  std::string code_sha256;
  /// runAs.
  user_params run_as;
  /// One long-lived instance (true) or instances on demand.
  bool pinned = true;
  /// Work items waiting beyond this are refused.
  int64_t max_queue_size = 1000;
  /// Instances at once (on-demand).
  int64_t max_instances_count = 100;
  /// An idle on-demand instance exits after this.
  int64_t max_idle_time_s = 60;
  /// An item running longer ends its instance.
  int64_t timeout_s = 3;
  /// An instance that has not said hello within this is ended.
  int64_t status_timeout_s = 60;
  /// json or binary.
  std::string input_encoding;
  /// Extra arguments after the program.
  std::vector<std::string> exec_args;
  /// NAME=VALUE pairs added to the instances' environment.
  std::vector<std::pair<std::string, std::string>> environment;
  /// eventSources.
  std::vector<event_source> event_sources;
  /// linuxProcessParams.
  process_params process;
  /// resourceAccessPolicies (GreengrassContainer only).
  std::vector<access_policy> resource_access_policies;

  /// The config map of everything but environmentVariables (an open map, read apart).
  static config_map<function_def> map();

  /// Field-by-field equality (a group change that leaves a function alone keeps it
  /// running).
  bool operator==(const function_def&) const = default;
};

/// Validates and reads one function's config (YAML text from the group). Errors read
/// `<origin>:<line>:<col>: <key>: <what>`. Relative codeUri resolves against `base`.
caf::expected<function_def> parse_function(std::string_view yaml, std::string_view origin,
                                           const std::filesystem::path& base);

/// The runtime plugin's own configuration (the image profile's entry).
struct runtime_config {
  /// User functions run as when their runAs has no uid.
  std::string default_user;
  /// Whether a function may run as root (runAs uid or gid 0): the device's decision, not
  /// the group's (Greengrass' allowFunctionsToRunAsRoot).
  bool allow_run_as_root = false;
  /// Largest IPC frame either side may send.
  int64_t max_frame_bytes = 0;
  /// A function's log file is rotated past this size.
  int64_t log_max_bytes = 0;
  /// Rotated log files kept (<name>.log.1 ... .N).
  int64_t log_files = 0;
  /// Frames a worker may have waiting for the runtime, and publishes in flight: beyond,
  /// the instance is ended as a flood.
  int64_t max_pending_frames = 0;
  /// Invokes in flight to one instance whose worker takes a pipeline (Hello.pipeline):
  /// the handler still runs them one at a time; 1: one at a time.
  int64_t pipeline_depth = 0;
  /// Between SIGTERM and SIGKILL when an instance is ended.
  int64_t stop_grace_ms = 0;
  /// Timeout of a function's invoke of another function when it names none.
  int64_t call_timeout_ms = 0;
  /// Bytes of work items one function's queue may hold (payloads, subjects, sources).
  int64_t max_queue_bytes = 0;
  /// After a function gave up starting (the restart policy's failed starts), how long
  /// until it tries again.
  int64_t give_up_retry_ms = 0;
  /// The interpreter of python3 functions.
  std::string python;
  /// The Python function SDK's directory; empty: the one built or installed with Grove.
  std::string python_sdk_dir;
  // --- sandbox (GreengrassContainer, src/sandbox.hpp) ---
  /// The seccomp profile file; empty: the plugin's seccomp/default.txt (built in).
  std::string seccomp_profile;
  /// Tasks (processes and threads) an instance may have (its cgroup's pids limit).
  int64_t sandbox_pids_max = 0;
  /// The instances' CPU weight (cgroup v2 units, 1-10000, 100 is the default); 0: unset.
  int64_t sandbox_cpu_weight = 0;
  /// Size cap of an instance's private /tmp, in KiB.
  int64_t sandbox_tmp_kb = 0;
  /// Size cap of an instance's private /dev/shm (POSIX shared memory), in KiB.
  int64_t sandbox_shm_kb = 0;
  /// A directory whose usr, lib*, bin, sbin and etc make the sandbox's system; empty: the host's.
  std::string sandbox_rootfs;
  /// The cgroup instance cgroups are made under (a path inside each hierarchy); empty:
  /// groved's own.
  std::string cgroup_parent;
  /// How instances' device access is enforced: auto, cgroup_v1 or bpf.
  std::string sandbox_device_filter;

  /// The config map.
  static config_map<runtime_config> map();
};

/// The uid and gid an instance of `def` runs as: runAs, else `default_user` (which must
/// exist). Errors: a missing user, a runAs that needs root when groved is not root, root
/// in a GreengrassContainer or without the image's consent.
caf::expected<std::pair<uid_t, gid_t>> resolve_user(const function_def& def,
                                                    const std::string& default_user,
                                                    bool allow_root);

} // namespace grove::fn
