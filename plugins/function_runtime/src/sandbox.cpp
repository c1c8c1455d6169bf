#include "sandbox.hpp"

#include "device_filter.hpp"
#include "python_runtime.hpp"

#include <fcntl.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "grove/errors.hpp"

namespace grove::fn {

namespace {

namespace fs = std::filesystem;

/// /etc/resolv.conf is often a link out of /etc (systemd-resolved, NetworkManager: into
/// /run, which the root does not have): the file it names, read-only at the place the
/// link names, so names resolve inside as on the host (the network is the host's). The
/// root's own file when a rootfs has it, else the host's; nothing when it is a plain file.
std::optional<sandbox_mount> resolv_conf_bind(const fs::path& sys) {
  std::error_code ec;
  auto link = fs::read_symlink(sys / "etc" / "resolv.conf", ec);
  if (ec)
    return std::nullopt;
  auto inside = (link.is_absolute() ? link : fs::path{"/etc"} / link).lexically_normal();
  if (!inside.is_absolute() || inside.string().starts_with("/etc/")
      || inside.string().find("..") != std::string::npos)
    return std::nullopt;
  auto source = fs::canonical(sys / inside.relative_path(), ec);
  if (ec)
    source = fs::canonical(inside, ec);
  if (ec || !fs::is_regular_file(source, ec))
    return std::nullopt;
  sandbox_mount m;
  m.source = source;
  m.target = inside;
  m.optional = true;
  return m;
}

/// The namespaces of grove::process's sandbox (CLONE_NEWUSER | NEWPID | NEWNS | NEWIPC |
/// NEWUTS), for the probe.
constexpr unsigned long probe_flags = 0x10000000UL | 0x20000000UL | 0x00020000UL
                                      | 0x08000000UL | 0x04000000UL;

std::string read_text(const fs::path& p) {
  std::ifstream in{p};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A name safe for a cgroup directory and a host name.
std::string safe_name(const std::string& s) {
  std::string out;
  for (char c : s)
    out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '_';
  return out.substr(0, 48);
}

/// The devices an instance may open: the minimal /dev (null, zero, random, urandom: rw),
/// its own pseudo-terminals (ptmx, 5:2, and the slaves its devpts numbers, 136:*: the
/// kernel's fixed numbers; only the instance's own devpts is mounted, so no other pty
/// can be reached) and the granted devices (r, or rw).
std::vector<device_rule> device_rules(const std::vector<resource_mount>& resources) {
  std::vector<device_rule> out;
  for (const char* d : {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"}) {
    struct stat st {};
    if (::stat(d, &st) == 0 && S_ISCHR(st.st_mode))
      out.push_back({'c', major(st.st_rdev), minor(st.st_rdev), true});
  }
  out.push_back({'c', 5, 2, true});        // TTYAUX_MAJOR: /dev/ptmx
  out.push_back({'c', 136, 0, true, true}); // UNIX98_PTY_SLAVE_MAJOR: /dev/pts/N
  for (const auto& r : resources)
    if (r.device)
      out.push_back({r.device_type, r.major, r.minor, !r.read_only});
  return out;
}

/// A v1 devices cgroup's rules: nothing but device_rules().
caf::error allow_devices(const fs::path& dir, const std::vector<resource_mount>& resources) {
  if (auto e = cgroup_write(dir / "devices.deny", "a"))
    return e;
  for (const auto& r : device_rules(resources))
    if (auto e = cgroup_write(dir / "devices.allow",
                              std::string{r.type} + " " + std::to_string(r.major) + ":"
                                + (r.any_minor ? std::string{"*"} : std::to_string(r.minor))
                                + (r.write ? " rw" : " r")))
      return e;
  return {};
}

} // namespace

// -- cgroups -----------------------------------------------------------------------

instance_cgroup::~instance_cgroup() {
  // Normally the instance has ended (its exit was reported). When the runtime goes with
  // instances still running, what is left in the cgroup is killed, so nothing outlives
  // it and the directories can go.
  group.remove(true);
}

std::vector<fs::path> instance_cgroup::procs() const {
  return group.procs();
}

bool instance_cgroup::oom_killed() const {
  return group.oom_kills() > 0;
}

// -- the sandbox -------------------------------------------------------------------

caf::expected<std::unique_ptr<sandbox>> sandbox::open(const runtime_config& cfg,
                                                      const fs::path& state_dir) {
  std::unique_ptr<sandbox> sb{new sandbox};
  sb->cfg_ = cfg;
  auto missing = [](const std::string& what) {
    return make_error(errc::unsupported, "isolationMode GreengrassContainer needs " + what
                                           + "; the function is refused (NoContainer runs "
                                             "it without isolation)");
  };
  if (::geteuid() != 0)
    return missing("groved to run as root (it maps the function's user into the sandbox)");
  // 1. Namespaces: what the kernel allows, tried for real.
  if (read_text("/proc/sys/user/max_user_namespaces").starts_with("0"))
    return missing("user namespaces (user.max_user_namespaces is 0)");
  pid_t probe = static_cast<pid_t>(::syscall(SYS_clone, probe_flags | SIGCHLD, nullptr,
                                             nullptr, nullptr, nullptr));
  // The raw exit: a sanitizer's _exit would finalise its runtime in this copy of groved
  // (TSan reports groved's threads as leaked here, and may wait on a lock one held).
  if (probe == 0)
    ::syscall(SYS_exit_group, 0);
  if (probe < 0) {
    auto e = errno;
    // Which one: each alone, the user namespace first (the one a distribution, a
    // container's seccomp profile or a security module most often turns off).
    std::string which = "user, PID, mount, IPC and UTS namespaces";
    for (auto [flag, name] : {std::pair{0x10000000UL, "user"}, std::pair{0x20000000UL, "PID"},
                              std::pair{0x00020000UL, "mount"}, std::pair{0x08000000UL, "IPC"},
                              std::pair{0x04000000UL, "UTS"}}) {
      pid_t one = static_cast<pid_t>(
        ::syscall(SYS_clone, flag | SIGCHLD, nullptr, nullptr, nullptr, nullptr));
      if (one == 0)
        ::syscall(SYS_exit_group, 0);
      if (one < 0) {
        e = errno;
        which = std::string{name} + " namespaces";
        break;
      }
      int one_st = 0;
      while (::waitpid(one, &one_st, 0) < 0 && errno == EINTR) {
      }
    }
    return missing(which + " (clone: " + std::strerror(e) + ")");
  }
  int st = 0;
  while (::waitpid(probe, &st, 0) < 0 && errno == EINTR) {
  }
  // 1b. Calls every sandboxed start makes, which older kernels lack: without them each
  // start would fail with "Function not implemented" until the function gave up.
  if (::syscall(SYS_mount_setattr, -1, "", 0, nullptr, 0) != 0 && errno == ENOSYS)
    return missing("mount_setattr (Linux 5.12 or later), for the read-only binds");
  seccomp_notif_sizes sizes{};
  if (::syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) != 0)
    return missing(std::string{"seccomp user notification (Linux 5.0 or later), to name a "
                               "denied call (seccomp: "}
                   + std::strerror(errno) + ")");
  // 2. cgroups: v2 with memory and pids delegated, else v1's memory and pids.
  auto tag = "grove-" + std::to_string(::getpid());
  auto host = cgroup_host::probe(cfg.cgroup_parent);
  std::string v2_why = host.v2_why;
  if (!host.v2_dir.empty()) {
    auto parent = host.v2_dir;
    bool cpu = cfg.sandbox_cpu_weight > 0 && host.v2_has("cpu");
    if (!host.v2_has("memory") || !host.v2_has("pids")) {
      v2_why = parent.string() + " has no memory and pids controllers";
    } else {
      if (cfg.sandbox_cpu_weight > 0 && !cpu)
        sb->warnings_.push_back("sandbox_cpu_weight is not applied: " + parent.string()
                                + " has no cpu controller (memory and pids limits are)");
      std::string enable = cpu ? "+memory +pids +cpu" : "+memory +pids";
      auto base = parent / tag;
      for (auto& gone : cgroup_remove_stale(parent, "grove-", false))
        sb->stale_.push_back(std::move(gone));
      caf::error e = cgroup_enable(parent, enable, cfg.cgroup_parent.empty());
      if (!e)
        e = cgroup_mkdir(base);
      if (!e)
        e = cgroup_write(base / "cgroup.subtree_control", enable);
      if (e) {
        v2_why = grove::describe(e);
        ::rmdir(base.c_str());
      } else {
        sb->cgroup_version_ = 2;
        sb->bases_[""] = base;
        sb->cpu_ = cpu;
      }
    }
  }
  if (sb->bases_.empty()) {
    std::string v1_why;
    std::vector<std::string> wanted{"memory", "pids"};
    if (cfg.sandbox_cpu_weight > 0)
      wanted.emplace_back("cpu");
    for (const auto& c : wanted) {
      auto parent = host.v1_dir(c);
      if (parent.empty()) {
        if (c == "cpu") { // a weight is a preference; the limits are not
          sb->warnings_.push_back("sandbox_cpu_weight is not applied: no v1 cpu hierarchy "
                                  "(memory and pids limits are)");
          break;
        }
        v1_why = "no v1 " + c + " hierarchy";
        break;
      }
      for (auto& gone : cgroup_remove_stale(parent, "grove-", false))
        sb->stale_.push_back(std::move(gone));
      auto base = parent / tag;
      if (auto e = cgroup_mkdir(base)) {
        if (c == "cpu") {
          sb->warnings_.push_back("sandbox_cpu_weight is not applied: " + grove::describe(e));
          break;
        }
        v1_why = grove::describe(e);
        break;
      }
      sb->bases_[c] = base;
      sb->cpu_ = sb->cpu_ || c == "cpu";
    }
    if (!v1_why.empty()) {
      sb.reset(); // removes what was made
      return missing("a writable cgroup with the memory and pids controllers (v2: " + v2_why
                     + "; v1: " + v1_why + ")");
    }
  }
  // 2b. What limits devices (README, "Local resources"): v1's devices controller, or a
  // device program on a cgroup v2 (the main hierarchy's instance cgroup, or on a hybrid
  // host one of the unified hierarchy's). Optional under auto: without either, only a
  // device granted ro is refused.
  const auto& filter = cfg.sandbox_device_filter;
  if (auto parent = host.v1_dir("devices"); filter != "bpf" && !parent.empty()) {
    for (auto& gone : cgroup_remove_stale(parent, "grove-", false))
      sb->stale_.push_back(std::move(gone));
    auto base = parent / tag;
    if (!cgroup_mkdir(base))
      sb->bases_["devices"] = base;
  }
  if (filter == "bpf" || (filter == "auto" && !sb->has_devices_cgroup())) {
    std::string why;
    if (!device_filter_supported(&why)) {
      if (filter == "bpf") {
        sb.reset();
        return missing("cgroup v2 device programs (sandbox_device_filter: bpf): " + why);
      }
    } else if (sb->cgroup_version_ == 2) {
      sb->device_bpf_ = true; // on the instance's own cgroup
    } else {
      // Hybrid: the unified hierarchy, beside v1's controllers.
      std::string bpf_why = host.v2_why;
      if (!host.v2_dir.empty()) {
        for (auto& gone : cgroup_remove_stale(host.v2_dir, "grove-", false))
          sb->stale_.push_back(std::move(gone));
        auto base = host.v2_dir / tag;
        if (auto e = cgroup_mkdir(base)) {
          bpf_why = grove::describe(e);
        } else {
          sb->bases_["bpf"] = base;
          sb->device_bpf_ = true;
        }
      }
      if (!sb->device_bpf_ && filter == "bpf") {
        sb.reset();
        return missing("a cgroup v2 for the device program (sandbox_device_filter: bpf): "
                       + bpf_why);
      }
    }
  }
  // 3. The profile.
  std::string text;
  if (cfg.seccomp_profile.empty()) {
    text = default_seccomp_profile();
    sb->profile_name_ = "seccomp/default.txt";
  } else {
    std::ifstream in{cfg.seccomp_profile};
    if (!in)
      return make_error(errc::invalid_config, "seccomp_profile " + cfg.seccomp_profile
                                                + ": cannot read it");
    text = read_text(cfg.seccomp_profile);
    sb->profile_name_ = cfg.seccomp_profile;
  }
  auto profile = parse_seccomp_profile(text, sb->profile_name_);
  if (!profile)
    return profile.error();
  auto prog = compile_seccomp(*profile);
  if (!prog)
    return prog.error();
  sb->filter_ = std::move(*prog);
  sb->allowed_ = profile->allow.size();
  // Instances with the same ids share one user namespace (grove::process), which is
  // harmless only while these are denied: keyrings are per user namespace (the user and
  // session keyrings, named keyrings), and a namespace one instance made would be owned
  // by the shared one, so every other instance would hold all capabilities in it.
  std::string sharing;
  // (keyctl, add_key, unshare and setns no profile may allow: parse_seccomp_profile.)
  for (const auto& name : profile->allow)
    if (name == "request_key")
      sharing += (sharing.empty() ? "" : ", ") + name;
  if (!sharing.empty())
    sb->warnings_.push_back(sb->profile_name_ + " allows " + sharing
                            + ": instances running as the same user share their keyrings and"
                              " can reach each other's namespaces (their user namespace is"
                              " shared)");
  // 4. Where the instances' roots are built (inside their own mount namespaces).
  sb->root_base_ = state_dir / "sandbox-root";
  std::error_code ec;
  fs::create_directories(sb->root_base_, ec);
  if (ec)
    return make_error(errc::init_failed,
                      "cannot create " + sb->root_base_.string() + ": " + ec.message());
  return sb;
}

sandbox::~sandbox() {
  for (const auto& [c, base] : bases_)
    ::rmdir(base.c_str());
}

std::string sandbox::describe() const {
  std::string ctrls;
  for (const auto& [c, base] : bases_)
    if (c != "bpf")
      ctrls += (ctrls.empty() ? "" : ", ") + (c.empty() ? std::string{"memory, pids"} : c);
  if (device_bpf_)
    ctrls += ", devices (bpf)";
  std::string notes;
  for (const auto& w : warnings_)
    notes += "; " + w;
  return "cgroup v" + std::to_string(cgroup_version_) + " (" + ctrls + "); seccomp "
         + profile_name_ + ": " + std::to_string(allowed_) + " calls allowed" + notes;
}

std::string sandbox::key(const std::string& fn, const function_def& def,
                         const fs::path& code_dir, const std::vector<resource_mount>& resources) {
  // Each part as its length and text: no two different inputs give one key.
  std::string out;
  auto add = [&out](const std::string& part) {
    out += std::to_string(part.size()) + ":" + part;
  };
  add(fn);
  add(code_dir.string());
  add(def.runtime);
  add(std::to_string(def.process.container.memory_size_kb));
  add(def.process.container.mount_ro_sysfs ? "sys" : "");
  for (const auto& r : resources) {
    add(r.id);
    add(r.source);
    add(r.destination);
    add(std::string{r.device ? "d" : "v"} + (r.read_only ? "r" : "w") + r.device_type
        + std::to_string(r.major) + ":" + std::to_string(r.minor));
  }
  return out;
}

caf::expected<instance_sandbox> sandbox::prepare(const std::string& fn, uint64_t id,
                                                 const function_def& def,
                                                 const fs::path& code_dir,
                                                 const std::vector<resource_mount>& resources)
  const {
  instance_sandbox out;
  // The cgroup, limits first: the child is attached before it runs anything.
  auto cg = std::make_unique<instance_cgroup>();
  auto leaf = safe_name(fn) + "." + std::to_string(id);
  auto fail = [&](caf::error e) {
    return make_error(errc::system_error, "sandbox cgroup: " + grove::describe(e));
  };
  for (const auto& r : resources)
    if (r.device && r.read_only && !has_devices_cgroup())
      return make_error(errc::unsupported,
                        "resource '" + r.id + "': a device granted ro needs the devices "
                        "cgroup (v1) or a cgroup v2 device program, which this host does not "
                        "give the runtime (a read-only mount does not stop writes to a device)");
  // Memory's directory first (instance_cgroup::group's order).
  std::vector<std::pair<std::string, fs::path>> bases;
  for (const auto& c : {std::string{"memory"}, std::string{"pids"}, std::string{"cpu"},
                        std::string{""}, std::string{"devices"}, std::string{"bpf"}})
    if (auto it = bases_.find(c); it != bases_.end())
      bases.emplace_back(c, it->second);
  auto group = cgroup_group::make(bases, leaf);
  if (!group)
    return fail(std::move(group.error()));
  cg->group = std::move(*group);
  cgroup_limits limits;
  limits.memory_bytes = static_cast<int64_t>(def.process.container.memory_size_kb) * 1024;
  limits.pids_max = cfg_.sandbox_pids_max;
  if (auto e = cg->group.apply(limits))
    return fail(std::move(e));
  if (auto dir = cg->group.dir("devices"); !dir.empty())
    if (auto e = allow_devices(dir, resources))
      return fail(std::move(e));
  for (const auto& c : {std::string{"bpf"}, std::string{""}})
    if (auto dir = cg->group.dir(c); !dir.empty() && (c == "bpf" || device_bpf_))
      if (auto e = device_programs_->attach(dir, device_rules(resources)))
        return fail(std::move(e));
  // The CPU weight is a preference: not applied, the instance still starts.
  if (cfg_.sandbox_cpu_weight > 0 && cpu_) {
    cgroup_limits weight;
    weight.cpu_weight = cfg_.sandbox_cpu_weight;
    if (cg->group.apply(weight)) {
      auto dir = cg->group.dir(cgroup_version_ == 2 ? "" : "cpu");
      out.warning = "sandbox_cpu_weight is not applied: cannot write " + dir.string()
                    + (cgroup_version_ == 2 ? "/cpu.weight" : "/cpu.shares");
    }
  }
  auto& s = out.spec;
  s.root_base = root_base_;
  s.hostname = safe_name(fn);
  s.cgroup_procs = cg->procs();
  s.seccomp = filter_;
  using kind = sandbox_mount::kind;
  // The system, read-only: the host's or the configured rootfs's.
  fs::path sys = cfg_.sandbox_rootfs.empty() ? fs::path{"/"} : fs::path{cfg_.sandbox_rootfs};
  for (const char* d : {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"}) {
    sandbox_mount m;
    m.source = sys / d;
    m.target = fs::path{"/"} / d;
    m.optional = std::string_view{d} != "usr";
    s.mounts.push_back(std::move(m));
  }
  if (auto dns = resolv_conf_bind(sys))
    s.mounts.push_back(std::move(*dns));
  // The function's code, read-only at /lambda (as in Greengrass), its working directory.
  if (!code_dir.empty()) {
    sandbox_mount m;
    m.source = code_dir;
    m.target = "/lambda";
    s.mounts.push_back(std::move(m));
    s.cwd = "/lambda";
  }
  if (def.runtime == "python3") {
    // The Python function SDK (the runner and its verbs), read-only where the instance's
    // PYTHONPATH points (python_runtime.hpp).
    sandbox_mount m;
    m.source = python_sdk_dir(cfg_);
    m.target = std::string{sandbox_python_dir};
    s.mounts.push_back(std::move(m));
  }
  sandbox_mount tmp;
  tmp.type = kind::tmpfs;
  tmp.target = "/tmp";
  tmp.read_only = false;
  tmp.data = "size=" + std::to_string(cfg_.sandbox_tmp_kb) + "k,mode=1777";
  s.mounts.push_back(std::move(tmp));
  sandbox_mount proc;
  proc.type = kind::proc;
  proc.target = "/proc";
  s.mounts.push_back(std::move(proc));
  // A minimal /dev: the skeleton's (read-only) with the host's nodes bound in.
  for (const char* d : {"null", "zero", "random", "urandom"}) {
    sandbox_mount m;
    m.source = fs::path{"/dev"} / d;
    m.target = fs::path{"/dev"} / d;
    m.read_only = false;
    s.mounts.push_back(std::move(m));
  }
  // POSIX shared memory and semaphores (shm_open, sem_open: Python's multiprocessing)
  // live in /dev/shm: the instance's own tmpfs, capped, nothing there to execute; not
  // the host's, so instances share no segment with the host or with each other.
  sandbox_mount shm;
  shm.type = kind::tmpfs;
  shm.target = "/dev/shm";
  shm.read_only = false;
  shm.noexec = true;
  shm.data = "size=" + std::to_string(cfg_.sandbox_shm_kb) + "k,mode=1777";
  s.mounts.push_back(std::move(shm));
  // Pseudo-terminals (Python's pty, tools that want a terminal): the instance's own
  // devpts, capped at 64 (the kernel's pty count, kernel.pty.max, is the host's); no pty
  // of the host or of another instance is there.
  sandbox_mount pts;
  pts.type = kind::devpts;
  pts.target = "/dev/pts";
  pts.data = "max=64";
  s.mounts.push_back(std::move(pts));
  for (auto [link, to] : {std::pair{"fd", "/proc/self/fd"}, std::pair{"stdin", "/proc/self/fd/0"},
                          std::pair{"stdout", "/proc/self/fd/1"},
                          std::pair{"stderr", "/proc/self/fd/2"}, std::pair{"ptmx", "pts/ptmx"}}) {
    sandbox_mount m;
    m.type = kind::symlink;
    m.source = to;
    m.target = fs::path{"/dev"} / link;
    s.mounts.push_back(std::move(m));
  }
  if (def.process.container.mount_ro_sysfs) {
    // A new sysfs needs a network namespace of its own: the host's, read-only, instead.
    sandbox_mount m;
    m.source = "/sys";
    m.target = "/sys";
    s.mounts.push_back(std::move(m));
  }
  // Volumes and devices of local_resources (lr-1), last: over the skeleton, each its
  // own mount, so a rw one stays writable when the root becomes read-only. A ro volume
  // is a read-only bind (writes fail with EROFS); a device's access is the devices
  // cgroup's rule above.
  for (const auto& r : resources) {
    sandbox_mount m;
    m.source = r.source;
    m.target = r.destination;
    m.read_only = r.read_only;
    s.mounts.push_back(std::move(m));
  }
  out.cgroup = std::move(cg);
  return out;
}

std::string sandbox::inside(const std::string& path, const fs::path& code_dir) {
  if (code_dir.empty())
    return path;
  fs::path p{path};
  if (!p.is_absolute()) // a bare name is looked up in PATH
    return path.find('/') == std::string::npos
             ? path
             : (fs::path{"/lambda"} / p).lexically_normal().string();
  auto rel = p.lexically_normal().lexically_relative(code_dir.lexically_normal());
  if (rel.empty() || rel.string().starts_with(".."))
    return path;
  return (fs::path{"/lambda"} / rel).lexically_normal().string();
}

std::string sandbox::explain(const process_exit& e, const instance_cgroup* cg,
                             const function_def* def) {
  if (e.denied_syscall >= 0)
    return (e.signal != 0
              ? "killed by signal " + std::to_string(e.signal) + " (" + e.signal_name + ")"
              : "exited with code " + std::to_string(e.code))
           + ": the sandbox denied system call " + syscall_name(e.denied_syscall)
           + " (seccomp)";
  if (cg != nullptr && cg->oom_killed())
    return "out of memory (memorySizeInKB "
           + (def != nullptr ? std::to_string(def->process.container.memory_size_kb)
                             : std::string{"?"})
           + "): " + e.describe();
  return e.describe();
}

} // namespace grove::fn
