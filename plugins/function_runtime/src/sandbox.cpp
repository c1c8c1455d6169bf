#include "sandbox.hpp"

#include "device_filter.hpp"
#include "python_runtime.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "grove/errors.hpp"

namespace grove::fn {

namespace {

namespace fs = std::filesystem;

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

// One write, as cgroup files want: 0 or the errno value.
int write_raw(const fs::path& p, const std::string& text) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return errno;
  auto n = ::write(fd, text.data(), text.size());
  int e = n < 0 ? errno : EIO;
  ::close(fd);
  return n == static_cast<ssize_t>(text.size()) ? 0 : e;
}

caf::error write_text(const fs::path& p, const std::string& text) {
  if (int e = write_raw(p, text); e != 0)
    return make_error(errc::system_error, "cannot write " + p.string() + ": "
                                            + std::strerror(e));
  return {};
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss{s};
  std::string item;
  while (std::getline(ss, item, sep))
    out.push_back(item);
  return out;
}

/// A name safe for a cgroup directory and a host name.
std::string safe_name(const std::string& s) {
  std::string out;
  for (char c : s)
    out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '_';
  return out.substr(0, 48);
}

struct mount_entry {
  std::string point;
  std::string type;
  std::vector<std::string> options; // super options
};

std::vector<mount_entry> mounts() {
  std::vector<mount_entry> out;
  std::ifstream in{"/proc/self/mountinfo"};
  std::string line;
  while (std::getline(in, line)) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos)
      continue;
    std::istringstream left{line.substr(0, dash)};
    std::istringstream right{line.substr(dash + 3)};
    std::string f, point, type, source, opts;
    for (int i = 0; i < 5 && left >> f; ++i)
      if (i == 4)
        point = f;
    right >> type >> source >> opts;
    out.push_back({point, type, split(opts, ',')});
  }
  return out;
}

/// groved's cgroup path in the hierarchy holding `controller` ("" for v2's "0::").
std::optional<std::string> own_cgroup(const std::string& controller) {
  std::ifstream in{"/proc/self/cgroup"};
  std::string line;
  while (std::getline(in, line)) {
    auto a = line.find(':');
    auto b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos)
      continue;
    auto ctrls = split(line.substr(a + 1, b - a - 1), ',');
    if (controller.empty() ? line.substr(0, a) == "0" && ctrls.empty()
                           : std::find(ctrls.begin(), ctrls.end(), controller) != ctrls.end())
      return line.substr(b + 1);
  }
  return std::nullopt;
}

caf::error make_dir(const fs::path& p) {
  if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST)
    return make_error(errc::system_error, "mkdir " + p.string() + ": " + std::strerror(errno));
  return {};
}

fs::path under(const std::string& mount_point, const std::string& path) {
  return fs::path{mount_point} / fs::path{path}.relative_path();
}

/// Removes the `grove-<pid>` cgroups under `parent` whose groved is gone (killed before
/// it could remove them): their instance directories, then theirs. A directory still
/// holding processes stays (rmdir refuses it; nothing here kills). Returns what went.
std::vector<std::string> remove_stale(const fs::path& parent) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator{parent, ec}) {
    auto name = e.path().filename().string();
    if (!name.starts_with("grove-") || name.size() == 6
        || name.find_first_not_of("0123456789", 6) != std::string::npos)
      continue;
    auto pid = std::stol(name.substr(6));
    if (pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH)
      continue;
    std::error_code ec2;
    for (const auto& leaf : fs::directory_iterator{e.path(), ec2})
      if (leaf.is_directory(ec2))
        ::rmdir(leaf.path().c_str());
    if (::rmdir(e.path().c_str()) == 0)
      out.push_back(e.path().string());
  }
  return out;
}

/// v2: enables `enable` ("+memory +pids") for `parent`'s children. The kernel refuses it
/// (EBUSY) while `parent` holds processes itself, as groved's own non-root cgroup does:
/// then every process of `parent` moves to its leaf `groved` first (a delegated
/// sub-tree's usual layout).
caf::error enable_v2(const fs::path& parent, const std::string& enable, bool is_own) {
  int rc = write_raw(parent / "cgroup.subtree_control", enable);
  if (rc != EBUSY || !is_own)
    return rc == 0 ? caf::error{}
                   : make_error(errc::system_error, "cannot write " + parent.string()
                                                      + "/cgroup.subtree_control: "
                                                      + std::strerror(rc));
  auto leaf = parent / "groved";
  if (auto err = make_dir(leaf))
    return err;
  std::istringstream procs{read_text(parent / "cgroup.procs")};
  pid_t pid;
  while (procs >> pid)
    if (int e = write_raw(leaf / "cgroup.procs", std::to_string(pid)); e != 0 && e != ESRCH)
      return make_error(errc::system_error,
                        "cannot move the processes of groved's cgroup to " + leaf.string()
                          + " (enabling its controllers needs it empty): " + std::strerror(e));
  return write_text(parent / "cgroup.subtree_control", enable);
}

/// The devices an instance may open: the minimal /dev (null, zero, random, urandom: rw)
/// and the granted devices (r, or rw).
std::vector<device_rule> device_rules(const std::vector<resource_mount>& resources) {
  std::vector<device_rule> out;
  for (const char* d : {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"}) {
    struct stat st {};
    if (::stat(d, &st) == 0 && S_ISCHR(st.st_mode))
      out.push_back({'c', major(st.st_rdev), minor(st.st_rdev), true});
  }
  for (const auto& r : resources)
    if (r.device)
      out.push_back({r.device_type, r.major, r.minor, !r.read_only});
  return out;
}

/// A v1 devices cgroup's rules: nothing but device_rules().
caf::error allow_devices(const fs::path& dir, const std::vector<resource_mount>& resources) {
  if (auto e = write_text(dir / "devices.deny", "a"))
    return e;
  for (const auto& r : device_rules(resources))
    if (auto e = write_text(dir / "devices.allow", std::string{r.type} + " "
                                                     + std::to_string(r.major) + ":"
                                                     + std::to_string(r.minor)
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
  for (const auto& d : dirs) {
    if (::rmdir(d.c_str()) == 0 || errno != EBUSY)
      continue;
    std::istringstream procs{read_text(d / "cgroup.procs")};
    pid_t pid;
    while (procs >> pid)
      ::kill(pid, SIGKILL);
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{2};
    while (::rmdir(d.c_str()) != 0 && errno == EBUSY && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds{1}); // the kernel frees them
  }
}

std::vector<fs::path> instance_cgroup::procs() const {
  std::vector<fs::path> out;
  for (const auto& d : dirs)
    out.push_back(d / "cgroup.procs");
  return out;
}

bool instance_cgroup::oom_killed() const {
  if (dirs.empty())
    return false;
  std::istringstream in{read_text(dirs.front() / (version == 2 ? "memory.events"
                                                                : "memory.oom_control"))};
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value)
    if (key == "oom_kill")
      return value > 0;
  return false;
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
  if (probe < 0)
    return missing(std::string{"user, PID, mount, IPC and UTS namespaces (clone: "}
                   + std::strerror(errno) + ")");
  int st = 0;
  while (::waitpid(probe, &st, 0) < 0 && errno == EINTR) {
  }
  // 2. cgroups: v2 with memory and pids delegated, else v1's memory and pids.
  auto tag = "grove-" + std::to_string(::getpid());
  auto all = mounts();
  std::string v2_why = "no cgroup2 mount";
  for (const auto& m : all) {
    if (m.type != "cgroup2")
      continue;
    auto own = own_cgroup("");
    if (!own) {
      v2_why = "groved is in no v2 cgroup";
      break;
    }
    // groved moved itself to the leaf `groved` before (enable_v2): its parent is the one.
    auto own_dir = fs::path{*own};
    if (cfg.cgroup_parent.empty() && own_dir.filename() == "groved")
      own_dir = own_dir.parent_path();
    auto parent = under(m.point, cfg.cgroup_parent.empty() ? own_dir.string() : cfg.cgroup_parent);
    auto ctrls = split(read_text(parent / "cgroup.controllers"), ' ');
    for (auto& c : ctrls)
      if (!c.empty() && c.back() == '\n')
        c.pop_back();
    auto has = [&](const char* c) {
      return std::find(ctrls.begin(), ctrls.end(), c) != ctrls.end();
    };
    if (!has("memory") || !has("pids")) {
      v2_why = parent.string() + " has no memory and pids controllers";
      break;
    }
    bool cpu = cfg.sandbox_cpu_weight > 0 && has("cpu");
    if (cfg.sandbox_cpu_weight > 0 && !cpu)
      sb->warnings_.push_back("sandbox_cpu_weight is not applied: " + parent.string()
                              + " has no cpu controller (memory and pids limits are)");
    std::string enable = cpu ? "+memory +pids +cpu" : "+memory +pids";
    auto base = parent / tag;
    for (auto& gone : remove_stale(parent))
      sb->stale_.push_back(std::move(gone));
    caf::error e = enable_v2(parent, enable, cfg.cgroup_parent.empty());
    if (!e)
      e = make_dir(base);
    if (!e)
      e = write_text(base / "cgroup.subtree_control", enable);
    if (e) {
      v2_why = grove::describe(e);
      ::rmdir(base.c_str());
      break;
    }
    sb->cgroup_version_ = 2;
    sb->bases_[""] = base;
    sb->cpu_ = cpu;
    break;
  }
  if (sb->bases_.empty()) {
    std::string v1_why;
    std::vector<std::string> wanted{"memory", "pids"};
    if (cfg.sandbox_cpu_weight > 0)
      wanted.emplace_back("cpu");
    for (const auto& c : wanted) {
      const mount_entry* at = nullptr;
      for (const auto& m : all)
        if (m.type == "cgroup"
            && std::find(m.options.begin(), m.options.end(), c) != m.options.end())
          at = &m;
      auto own = own_cgroup(c);
      if (at == nullptr || !own) {
        if (c == "cpu") { // a weight is a preference; the limits are not
          sb->warnings_.push_back("sandbox_cpu_weight is not applied: no v1 cpu hierarchy "
                                  "(memory and pids limits are)");
          break;
        }
        v1_why = "no v1 " + c + " hierarchy";
        break;
      }
      auto parent = under(at->point, cfg.cgroup_parent.empty() ? *own : cfg.cgroup_parent);
      for (auto& gone : remove_stale(parent))
        sb->stale_.push_back(std::move(gone));
      auto base = parent / tag;
      if (auto e = make_dir(base)) {
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
  for (const auto& m : all) {
    if (filter == "bpf")
      break;
    if (m.type != "cgroup"
        || std::find(m.options.begin(), m.options.end(), "devices") == m.options.end())
      continue;
    auto own = own_cgroup("devices");
    if (!own)
      break;
    auto base = under(m.point, cfg.cgroup_parent.empty() ? *own : cfg.cgroup_parent) / tag;
    if (!make_dir(base))
      sb->bases_["devices"] = base;
    break;
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
      std::string bpf_why = "no cgroup2 mount";
      for (const auto& m : all) {
        if (m.type != "cgroup2")
          continue;
        auto own = own_cgroup("");
        if (!own) {
          bpf_why = "groved is in no v2 cgroup";
          break;
        }
        auto parent = under(m.point, cfg.cgroup_parent.empty() ? *own : cfg.cgroup_parent);
        for (auto& gone : remove_stale(parent))
          sb->stale_.push_back(std::move(gone));
        auto base = parent / tag;
        if (auto e = make_dir(base)) {
          bpf_why = grove::describe(e);
          break;
        }
        sb->bases_["bpf"] = base;
        sb->device_bpf_ = true;
        break;
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

caf::expected<instance_sandbox> sandbox::prepare(const std::string& fn, uint64_t id,
                                                 const function_def& def,
                                                 const fs::path& code_dir,
                                                 const std::vector<resource_mount>& resources)
  const {
  instance_sandbox out;
  // The cgroup, limits first: the child is attached before it runs anything.
  auto cg = std::make_unique<instance_cgroup>();
  cg->version = cgroup_version_;
  auto leaf = safe_name(fn) + "." + std::to_string(id);
  auto mem = std::to_string(def.process.container.memory_size_kb * 1024);
  auto pids = std::to_string(cfg_.sandbox_pids_max);
  auto fail = [&](caf::error e) {
    return make_error(errc::system_error, "sandbox cgroup: " + grove::describe(e));
  };
  for (const auto& r : resources)
    if (r.device && r.read_only && !has_devices_cgroup())
      return make_error(errc::unsupported,
                        "resource '" + r.id + "': a device granted ro needs the devices "
                        "cgroup (v1) or a cgroup v2 device program, which this host does not "
                        "give the runtime (a read-only mount does not stop writes to a device)");
  for (const auto& c : {std::string{"memory"}, std::string{"pids"}, std::string{"cpu"},
                        std::string{""}, std::string{"devices"}, std::string{"bpf"}}) {
    auto it = bases_.find(c);
    if (it == bases_.end())
      continue;
    auto dir = it->second / leaf;
    if (auto e = make_dir(dir))
      return fail(std::move(e));
    cg->dirs.push_back(dir);
    caf::error e;
    if (c == "memory") {
      e = write_text(dir / "memory.limit_in_bytes", mem);
      // With swap accounting the limit covers swap too (else a hog swaps instead).
      if (!e && fs::exists(dir / "memory.memsw.limit_in_bytes"))
        (void) write_text(dir / "memory.memsw.limit_in_bytes", mem);
    } else if (c == "pids") {
      e = write_text(dir / "pids.max", pids);
    } else if (c == "devices") {
      e = allow_devices(dir, resources);
    } else if (c == "bpf") {
      e = device_programs_->attach(dir, device_rules(resources));
    } else if (c == "cpu") {
      if (write_text(dir / "cpu.shares",
                     std::to_string(std::max<int64_t>(2, cfg_.sandbox_cpu_weight * 1024 / 100))))
        out.warning = "sandbox_cpu_weight is not applied: cannot write " + dir.string()
                      + "/cpu.shares";
    } else {
      e = write_text(dir / "memory.max", mem);
      if (!e)
        (void) write_text(dir / "memory.swap.max", "0");
      if (!e)
        e = write_text(dir / "pids.max", pids);
      if (!e && device_bpf_)
        e = device_programs_->attach(dir, device_rules(resources));
      if (!e && cfg_.sandbox_cpu_weight > 0 && cpu_
          && write_text(dir / "cpu.weight", std::to_string(cfg_.sandbox_cpu_weight)))
        out.warning = "sandbox_cpu_weight is not applied: cannot write " + dir.string()
                      + "/cpu.weight";
    }
    if (e)
      return fail(std::move(e));
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
  for (auto [link, to] : {std::pair{"fd", "/proc/self/fd"}, std::pair{"stdin", "/proc/self/fd/0"},
                          std::pair{"stdout", "/proc/self/fd/1"},
                          std::pair{"stderr", "/proc/self/fd/2"}}) {
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
    return "killed: the sandbox denied system call " + syscall_name(e.denied_syscall)
           + " (seccomp)";
  if (cg != nullptr && cg->oom_killed())
    return "out of memory (memorySizeInKB "
           + (def != nullptr ? std::to_string(def->process.container.memory_size_kb)
                             : std::string{"?"})
           + "): " + e.describe();
  return e.describe();
}

} // namespace grove::fn
