#include "function_def.hpp"

#include "code_archive.hpp"
#include "python_runtime.hpp"

#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "grove/errors.hpp"
#include "grove/topic.hpp"

namespace grove::fn {

namespace {

config_map<event_source> event_source_map() {
  return config_map<event_source>{}
    .key_no_default("topic", &event_source::topic, required,
                    "PUB_SUB: a local topic (no wildcards); IOT_CORE: a cloud topic filter")
    .key("type", &event_source::type, "PUB_SUB", one_of{"PUB_SUB", "IOT_CORE"},
         "where the messages come from");
}

config_map<volume> volume_map() {
  return config_map<volume>{}
    .key_no_default("sourcePath", &volume::source_path, required, "path on the device")
    .key_no_default("destinationPath", &volume::destination_path, required,
                    "path inside the sandbox")
    .key("permission", &volume::permission, "ro", one_of{"ro", "rw"}, "access")
    .key("addGroupOwner", &volume::add_group_owner, false,
         "add the source's group owner to the function's groups");
}

config_map<device> device_map() {
  return config_map<device>{}
    .key_no_default("path", &device::path, required, "device node under /dev")
    .key("permission", &device::permission, "ro", one_of{"ro", "rw"}, "access")
    .key("addGroupOwner", &device::add_group_owner, false,
         "add the device's group owner to the function's groups");
}

config_map<container_params> container_map() {
  return config_map<container_params>{}
    .key("memorySizeInKB", &container_params::memory_size_kb, 16384,
         range::at_least(2048), "memory limit of the sandbox (its cgroup)")
    .key("mountROSysfs", &container_params::mount_ro_sysfs, false,
         "mount /sys read-only in the sandbox")
    .list("volumes", &container_params::volumes, volume_map())
    .list("devices", &container_params::devices, device_map());
}

config_map<process_params> process_map() {
  return config_map<process_params>{}
    .key("isolationMode", &process_params::isolation_mode, "GreengrassContainer",
         one_of{"GreengrassContainer", "NoContainer"},
         "GreengrassContainer: the sandbox (README, Sandbox); NoContainer: a plain process")
    .section("containerParams", &process_params::container, container_map(),
             "limits and resources of the sandbox");
}

config_map<access_policy> policy_map() {
  return config_map<access_policy>{}
    .key_no_default("resourceId", &access_policy::resource_id, required,
                    "the id of a local volume or device of the group (local_resources)")
    .key("permission", &access_policy::permission, "ro", one_of{"ro", "rw"},
         "read-only or read-write");
}

config_map<user_params> user_map() {
  return config_map<user_params>{}
    .key_no_default("uid", &user_params::uid, range{0, 4294967294},
                    "user id; absent: the runtime's default_user")
    .key_no_default("gid", &user_params::gid, range{0, 4294967294},
                    "group id; absent: the user's primary group");
}

} // namespace

config_map<function_def> function_def::map() {
  return config_map<function_def>{}
    .key("runtime", &function_def::runtime, "executable", one_of{"executable", "python3"},
         "what the code is: a program, or Python run by the Python function SDK")
    .key_no_default("handler", &function_def::handler, required,
                    "executable: the program, relative to codeUri; python3: "
                    "module.function, the module under codeUri")
    .key("codeUri", &function_def::code_uri, "",
         "directory of the code, or a .zip/.tar.gz of it; relative to the group file's "
         "directory")
    .key("codeSha256", &function_def::code_sha256, "",
         "SHA-256 (hex) of an archive codeUri; required for one")
    .section("runAs", &function_def::run_as, user_map(), "user and group of the instances")
    .key("pinned", &function_def::pinned, true,
         "one long-lived instance (true) or instances on demand (false)")
    .key("maxQueueSize", &function_def::max_queue_size, 1000, range{0, 1000000},
         "work items waiting; beyond, new work is refused and counted")
    .key("maxInstancesCount", &function_def::max_instances_count, 100, range{1, 1000},
         "on-demand instances at once")
    .key("maxIdleTimeInSeconds", &function_def::max_idle_time_s, 60, range{1, 86400},
         "an idle on-demand instance exits after this")
    .key("timeoutInSeconds", &function_def::timeout_s, 3, range{1, 86400},
         "an item running longer ends its instance (SIGTERM, then SIGKILL)")
    .key("statusTimeoutInSeconds", &function_def::status_timeout_s, 60, range{1, 86400},
         "Greengrass: the interval at which a pinned instance reports its status. "
         "Any instance that has not said hello within this is ended; a pinned one is ended "
         "when nothing was heard from it for twice this (its SDK reports every interval "
         "from a thread of its own)")
    .key("inputPayloadEncodingType", &function_def::input_encoding, "json",
         one_of{"json", "binary"}, "json: a payload that is not JSON is refused")
    .key("execArgs", &function_def::exec_args, std::vector<std::string>{},
         "arguments after the program")
    .list("eventSources", &function_def::event_sources, event_source_map())
    .section("linuxProcessParams", &function_def::process, process_map(),
             "isolation and its limits")
    .list("resourceAccessPolicies", &function_def::resource_access_policies, policy_map())
    .validate([](const function_def& d) -> caf::error {
      if (d.handler.empty())
        return make_error(errc::invalid_config, "handler: empty");
      if (d.runtime == "python3" && !valid_python_handler(d.handler))
        return make_error(errc::invalid_config,
                          "handler: '" + d.handler + "' is not module.function (Python "
                          "identifiers joined by dots)");
      // A policy on a NoContainer function: refused by the runtime unless it names an ML
      // model (a grant of the infer verb), which needs the group's resources to tell.
      for (size_t i = 0; i < d.resource_access_policies.size(); ++i)
        for (size_t j = 0; j < i; ++j)
          if (d.resource_access_policies[i].resource_id
              == d.resource_access_policies[j].resource_id)
            return make_error(errc::invalid_config,
                              "resourceAccessPolicies[" + std::to_string(i)
                                + "].resourceId: '" + d.resource_access_policies[i].resource_id
                                + "' is named twice");
      for (size_t i = 0; i < d.event_sources.size(); ++i) {
        const auto& s = d.event_sources[i];
        auto where = "eventSources[" + std::to_string(i) + "].topic: ";
        if (s.type == "PUB_SUB" && validate_topic(s.topic))
          return make_error(errc::invalid_config,
                            where + "a PUB_SUB source is one local topic, without wildcards");
        if (s.type == "IOT_CORE" && validate_filter(s.topic))
          return make_error(errc::invalid_config, where + "not a valid MQTT filter");
      }
      return {};
    });
}

caf::expected<function_def> parse_function(std::string_view yaml, std::string_view origin,
                                            const std::filesystem::path& base) {
  static const auto map = function_def::map();
  // environmentVariables is an open map of names to strings, which the config map has
  // no key kind for: validate it as `any`, then read it here with the same error form.
  auto fields = map.fields();
  detail::config_field env;
  env.name = "environmentVariables";
  env.type = "any";
  env.doc = "NAME: VALUE pairs for the instances' environment";
  fields.push_back(env);
  auto node = detail::validate(fields, yaml, origin);
  if (!node)
    return node.error();
  auto def = map.parse(*node);
  if (!def)
    return make_error(errc::invalid_config,
                      std::string{origin} + ": " + describe(def.error()));
  auto vars = detail::child(*node, "environmentVariables");
  if (!detail::absent(vars)) {
    if (!vars.IsMap())
      return make_error(errc::invalid_config,
                        std::string{origin} + ": environmentVariables: expected a map");
    for (auto kv : vars) {
      auto name = kv.first.Scalar();
      if (name.empty() || name.find('=') != std::string::npos
          || name.find('\0') != std::string::npos || !kv.second.IsScalar())
        return make_error(errc::invalid_config,
                          std::string{origin} + ": environmentVariables." + name
                            + ": a name without '=' and a scalar value");
      def->environment.emplace_back(name, kv.second.Scalar());
    }
  }
  if (!def->code_uri.empty()) {
    std::filesystem::path uri{def->code_uri};
    if (uri.is_relative())
      uri = base / uri;
    def->code_uri = uri.lexically_normal().string();
    if (is_code_archive(def->code_uri) && def->code_sha256.size() != 64)
      return make_error(errc::invalid_config,
                        std::string{origin} + ": codeSha256: an archive codeUri needs its "
                                              "SHA-256 (64 hex digits)");
  }
  return def;
}

config_map<runtime_config> runtime_config::map() {
  return config_map<runtime_config>{}
    .key("default_user", &runtime_config::default_user, "grove-fn",
         "user functions run as when their runAs has no uid (tools/deps creates it)")
    .key("allow_run_as_root", &runtime_config::allow_run_as_root, false,
         "let a function run as root (runAs uid or gid 0); otherwise such a function is "
         "refused. The image decides this, not the group (Greengrass' "
         "allowFunctionsToRunAsRoot)")
    .key("max_frame_bytes", &runtime_config::max_frame_bytes, 4 << 20,
         range{4096, 15 << 20}, "largest IPC frame; a larger one from a worker ends the instance, a work "
         "item whose frame would be larger is refused (too_large)")
    .key("log_max_bytes", &runtime_config::log_max_bytes, 1 << 20, range{4096, 1 << 30},
         "a function's log is rotated before a line would take it past this size; a group's "
         "Lambda logger's space_kb replaces it and log_files (README, Logs)")
    .key("log_files", &runtime_config::log_files, 3, range{1, 100},
         "rotated logs kept per function (<name>.log.1 ... .N)")
    .key("max_pending_frames", &runtime_config::max_pending_frames, 1024,
         range{16, 1000000},
         "frames and publishes in flight per instance; beyond, the instance is ended")
    .key("pipeline_depth", &runtime_config::pipeline_depth, 16, range{1, 1024},
         "work items sent ahead to a busy instance whose worker takes them (its hello's "
         "pipeline), when no other instance can take them: the handler still runs one "
         "at a time, in order; 1: one at a time")
    .key("stop_grace_ms", &runtime_config::stop_grace_ms, 1000, range{0, 60000},
         "between SIGTERM and SIGKILL when an instance is ended")
    .key("call_timeout_ms", &runtime_config::call_timeout_ms, 10000, range{1, 3600000},
         "a function's invoke of another function, when it gives no timeout")
    .key("max_queue_bytes", &runtime_config::max_queue_bytes, 64 << 20,
         range{64 << 10, int64_t{1} << 40}, at_least_key{"max_frame_bytes"},
         "bytes of work items (payload, subject, source) one function's queue may hold, "
         "with its maxQueueSize: beyond, new work is refused (queue_full) and counted; at "
         "least max_frame_bytes (a queue that cannot hold one item of the largest frame "
         "would refuse it even when empty)")
    .key("give_up_retry_ms", &runtime_config::give_up_retry_ms, 60000,
         range{100, 86400000},
         "after a function gave up starting (failed starts under the kernel's restart "
         "policy; its work is refused plugin_broken meanwhile), it tries again after this")
    .key("python", &runtime_config::python, "/usr/bin/python3",
         "the interpreter of runtime: python3 functions (the SDK needs only its standard library)")
    .key("python_sdk_dir", &runtime_config::python_sdk_dir, "",
         "the Python function SDK (grove_function, greengrasssdk); empty: the build "
         "tree's when it exists, else <libdir>/grove/python")
    .key("seccomp_profile", &runtime_config::seccomp_profile, "",
         "GreengrassContainer: the seccomp profile file (README, Sandbox); empty: the "
         "plugin's seccomp/default.txt")
    .key("sandbox_pids_max", &runtime_config::sandbox_pids_max, 128, range{8, 1000000},
         "GreengrassContainer: tasks (processes and threads) an instance may have")
    .key("sandbox_cpu_weight", &runtime_config::sandbox_cpu_weight, 0, range{0, 10000},
         "GreengrassContainer: CPU weight of an instance (cgroup v2 units, 100 is the "
         "default share); 0: unset")
    .key("sandbox_tmp_kb", &runtime_config::sandbox_tmp_kb, 16384, range{64, 1 << 30},
         "GreengrassContainer: size cap of an instance's private /tmp (KiB)")
    .key("sandbox_shm_kb", &runtime_config::sandbox_shm_kb, 65536, range{64, 1 << 30},
         "GreengrassContainer: size cap of an instance's private /dev/shm (KiB): POSIX "
         "shared memory and semaphores (shm_open, sem_open, Python multiprocessing)")
    .key("sandbox_rootfs", &runtime_config::sandbox_rootfs, "",
         "GreengrassContainer: a directory whose usr, lib*, bin, sbin and etc are the "
         "sandbox's (read-only); empty: the host's")
    .key("cgroup_parent", &runtime_config::cgroup_parent, "",
         "GreengrassContainer: the cgroup (path inside each hierarchy) instance cgroups "
         "are made under; empty: groved's own")
    .key("sandbox_device_filter", &runtime_config::sandbox_device_filter, "auto",
         one_of{"auto", "cgroup_v1", "bpf"},
         "GreengrassContainer: what limits an instance's devices to the minimal /dev and "
         "its granted ones: cgroup_v1 (the v1 devices controller), bpf (a cgroup v2 device "
         "program), auto (v1's controller when there, else bpf)");
}

caf::expected<std::pair<uid_t, gid_t>> resolve_user(const function_def& def,
                                                    const std::string& default_user,
                                                    bool allow_root) {
  uid_t uid = 0;
  gid_t gid = 0;
  if (def.run_as.uid) {
    uid = static_cast<uid_t>(*def.run_as.uid);
    if (def.run_as.gid) {
      gid = static_cast<gid_t>(*def.run_as.gid);
    } else {
      auto* pw = ::getpwuid(uid);
      gid = pw != nullptr ? pw->pw_gid : static_cast<gid_t>(uid);
    }
  } else {
    errno = 0;
    auto* pw = ::getpwnam(default_user.c_str());
    if (pw == nullptr)
      return make_error(errc::invalid_config,
                        "runAs: the default user '" + default_user
                          + "' does not exist (tools/deps creates it: useradd --system "
                          + default_user + "); or give runAs.uid");
    uid = pw->pw_uid;
    gid = def.run_as.gid ? static_cast<gid_t>(*def.run_as.gid) : pw->pw_gid;
  }
  // As in Greengrass (runAs root needs NoContainer): the sandbox maps runAs 1:1, so uid
  // or gid 0 inside would be host root's files and group outside.
  if ((uid == 0 || gid == 0) && def.process.isolation_mode == "GreengrassContainer")
    return make_error(errc::not_authorized,
                      "runAs: uid " + std::to_string(uid) + " gid " + std::to_string(gid)
                        + " is root, which runs only with linuxProcessParams.isolationMode "
                          "NoContainer (and the image's allow_run_as_root): a "
                          "GreengrassContainer worker is never host root");
  if ((uid == 0 || gid == 0) && !allow_root)
    return make_error(errc::not_authorized,
                      "runAs: uid " + std::to_string(uid) + " gid " + std::to_string(gid)
                        + " is root, which the image does not allow (function_runtime's "
                          "allow_run_as_root: true in the image profile)");
  if (::geteuid() != 0 && (uid != ::geteuid() || gid != ::getegid()))
    return make_error(errc::not_authorized,
                      "runAs: switching to uid " + std::to_string(uid) + " gid "
                        + std::to_string(gid) + " needs groved to run as root");
  return std::make_pair(uid, gid);
}

} // namespace grove::fn
