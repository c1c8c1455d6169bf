#include "component_cgroups.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "grove/errors.hpp"

namespace grove::deployment {

namespace {

namespace fs = std::filesystem;

// The CFS period the quota is a share of (the kernel's default).
constexpr int64_t cfs_period_us = 100000;

std::string read_text(const fs::path& p) {
  std::ifstream in{p};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One write, as cgroup files want: 0 or the errno value.
int write_raw(const fs::path& p, const std::string& text) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return errno;
  auto n = ::write(fd, text.data(), text.size());
  int e = n < 0 ? errno : EIO;
  ::close(fd);
  return n == static_cast<ssize_t>(text.size()) ? 0 : e;
}

caf::error write_text(const fs::path& p, const std::string& text) {
  if (int e = write_raw(p, text); e != 0)
    return make_error(errc::system_error,
                      "cannot write '" + text + "' to " + p.string() + ": " + std::strerror(e));
  return {};
}

caf::error make_dir(const fs::path& p) {
  if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST)
    return make_error(errc::system_error, "mkdir " + p.string() + ": " + std::strerror(errno));
  return {};
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in{s};
  std::string w;
  while (in >> w)
    out.push_back(w);
  return out;
}

struct mount_entry {
  std::string point, type;
  std::vector<std::string> options;
};

std::vector<mount_entry> cgroup_mounts() {
  std::vector<mount_entry> out;
  std::ifstream in{"/proc/self/mountinfo"};
  std::string line;
  while (std::getline(in, line)) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos)
      continue;
    auto left = words(line.substr(0, dash));
    auto right = words(line.substr(dash + 3));
    if (left.size() < 5 || right.size() < 3
        || (right[0] != "cgroup" && right[0] != "cgroup2"))
      continue;
    std::vector<std::string> opts;
    std::stringstream ss{right[2]};
    std::string o;
    while (std::getline(ss, o, ','))
      opts.push_back(o);
    out.push_back({left[4], right[0], std::move(opts)});
  }
  return out;
}

// groved's cgroup in the hierarchy holding `controller` ("" : v2's "0::").
std::optional<std::string> own_cgroup(const std::string& controller) {
  std::ifstream in{"/proc/self/cgroup"};
  std::string line;
  while (std::getline(in, line)) {
    auto a = line.find(':');
    auto b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos)
      continue;
    auto ctrls = line.substr(a + 1, b - a - 1);
    std::vector<std::string> list;
    std::stringstream ss{ctrls};
    std::string c;
    while (std::getline(ss, c, ','))
      list.push_back(c);
    if (controller.empty() ? line.substr(0, a) == "0" && ctrls.empty()
                           : std::find(list.begin(), list.end(), controller) != list.end())
      return line.substr(b + 1);
  }
  return std::nullopt;
}

fs::path under(const std::string& mount_point, const std::string& path) {
  return fs::path{mount_point} / fs::path{path}.relative_path();
}

// Kills what is left in `dir` and removes it (the kernel frees an emptied cgroup soon
// after its last process is reaped).
void kill_and_remove(const fs::path& dir) {
  if (::rmdir(dir.c_str()) == 0 || errno != EBUSY)
    return;
  std::istringstream procs{read_text(dir / "cgroup.procs")};
  pid_t pid;
  while (procs >> pid)
    ::kill(pid, SIGKILL);
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds{2};
  while (::rmdir(dir.c_str()) != 0 && errno == EBUSY && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
}

// The `grove-components-<pid>` directories under `parent` whose groved is gone: their
// components' cgroups, then theirs (the runner kills what the last run left at start).
void remove_stale(const fs::path& parent) {
  static constexpr std::string_view prefix = "grove-components-";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator{parent, ec}) {
    auto name = e.path().filename().string();
    if (!name.starts_with(prefix) || name.size() == prefix.size()
        || name.find_first_not_of("0123456789", prefix.size()) != std::string::npos)
      continue;
    auto pid = std::stol(name.substr(prefix.size()));
    if (pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH)
      continue;
    std::error_code ec2;
    for (const auto& leaf : fs::directory_iterator{e.path(), ec2})
      if (leaf.is_directory(ec2))
        kill_and_remove(leaf.path());
    ::rmdir(e.path().c_str());
  }
}

// v2: enables `enable` for `parent`'s children. Refused (EBUSY) while `parent` holds
// processes itself, as groved's own cgroup does: they move to its leaf `groved` first
// (function_runtime's sandbox does the same, so either may come first).
caf::error enable_v2(const fs::path& parent, const std::string& enable) {
  int rc = write_raw(parent / "cgroup.subtree_control", enable);
  if (rc == 0)
    return {};
  if (rc != EBUSY)
    return make_error(errc::system_error, "cannot write " + parent.string()
                                            + "/cgroup.subtree_control: " + std::strerror(rc));
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

} // namespace

caf::expected<std::unique_ptr<component_cgroups>> component_cgroups::open() {
  std::unique_ptr<component_cgroups> cg{new component_cgroups};
  if (::geteuid() != 0)
    return make_error(errc::unsupported, "groved does not run as root (cgroups need it)");
  auto tag = "grove-components-" + std::to_string(::getpid());
  auto all = cgroup_mounts();
  std::string v2_why = "no cgroup2 mount";
  for (const auto& m : all) {
    if (m.type != "cgroup2")
      continue;
    auto own = own_cgroup("");
    if (!own) {
      v2_why = "groved is in no v2 cgroup";
      break;
    }
    auto own_dir = fs::path{*own};
    if (own_dir.filename() == "groved") // moved to its leaf before (enable_v2)
      own_dir = own_dir.parent_path();
    auto parent = under(m.point, own_dir.string());
    auto ctrls = words(read_text(parent / "cgroup.controllers"));
    auto has = [&](const char* c) { return std::find(ctrls.begin(), ctrls.end(), c) != ctrls.end(); };
    if (!has("memory")) {
      v2_why = parent.string() + " has no memory controller";
      break;
    }
    bool cpu = has("cpu");
    std::string enable = cpu ? "+memory +cpu" : "+memory";
    remove_stale(parent);
    auto base = parent / tag;
    caf::error e = enable_v2(parent, enable);
    if (!e)
      e = make_dir(base);
    if (!e)
      e = write_text(base / "cgroup.subtree_control", enable);
    if (e) {
      v2_why = grove::describe(e);
      ::rmdir(base.c_str());
      break;
    }
    cg->version_ = 2;
    cg->bases_[""] = base;
    cg->cpu_ = cpu;
    return cg;
  }
  // v1: memory is required, cpu optional (a cpus limit is refused without it).
  std::string v1_why;
  for (const char* c : {"memory", "cpu"}) {
    const mount_entry* at = nullptr;
    for (const auto& m : all)
      if (m.type == "cgroup" && std::find(m.options.begin(), m.options.end(), c) != m.options.end())
        at = &m;
    auto own = own_cgroup(c);
    if (at == nullptr || !own) {
      if (std::string_view{c} == "memory")
        v1_why = "no v1 memory hierarchy";
      break;
    }
    auto parent = under(at->point, *own);
    remove_stale(parent);
    auto base = parent / tag;
    if (auto e = make_dir(base)) {
      if (std::string_view{c} == "memory")
        v1_why = grove::describe(e);
      break;
    }
    cg->bases_[c] = base;
  }
  if (!v1_why.empty())
    return make_error(errc::unsupported, "no writable cgroup with the memory controller (v2: "
                                           + v2_why + "; v1: " + v1_why + ")");
  cg->cpu_ = cg->bases_.count("cpu") > 0;
  return cg;
}

component_cgroups::~component_cgroups() {
  // The components were told to stop (SIGTERM, SIGKILL after their grace, by the SDK's
  // supervisor): nothing is killed here. What is still busy stays; a plugin instance
  // reloaded in this groved takes it over (same pid), the next groved removes it.
  for (const auto& [c, base] : bases_) {
    std::error_code ec;
    for (const auto& leaf : fs::directory_iterator{base, ec})
      if (leaf.is_directory(ec))
        ::rmdir(leaf.path().c_str());
    ::rmdir(base.c_str());
  }
}

caf::expected<std::vector<fs::path>>
component_cgroups::prepare(const std::string& name, const resource_limits& limits) {
  // AWS's API bounds neither value; the kernel takes bytes and microseconds as int64.
  if (limits.memory_kb > (int64_t{1} << 40))
    return make_error(errc::invalid_config,
                      "runWith.systemResourceLimits.memory " + std::to_string(limits.memory_kb)
                        + " KB is past the 1 PiB a cgroup takes here");
  if (limits.cpus > 65536)
    return make_error(errc::invalid_config, "runWith.systemResourceLimits.cpus "
                                              + std::to_string(limits.cpus)
                                              + " is past the 65536 cores a quota takes here");
  if (limits.cpus > 0 && !cpu_)
    return make_error(errc::unsupported,
                      "runWith.systemResourceLimits.cpus cannot be applied: no writable cpu "
                      "controller (" + describe() + ")");
  auto memory = limits.memory_kb > 0 ? std::to_string(limits.memory_kb * 1024) : std::string{};
  auto quota = limits.cpus > 0
                 ? std::to_string(std::max<int64_t>(
                     1000, static_cast<int64_t>(std::llround(limits.cpus * cfs_period_us))))
                 : std::string{};
  std::vector<fs::path> procs;
  for (const auto& [c, base] : bases_) {
    auto dir = base / name;
    if (auto e = make_dir(dir))
      return e;
    caf::error e;
    if (c == "memory") {
      // With swap accounting the limit covers swap too (else a hog swaps instead). The
      // memsw limit may never be below the memory limit: lowered first, raised last.
      bool memsw = fs::exists(dir / "memory.memsw.limit_in_bytes");
      if (memory.empty()) {
        if (memsw)
          (void) write_text(dir / "memory.memsw.limit_in_bytes", "-1");
        e = write_text(dir / "memory.limit_in_bytes", "-1");
      } else if (memsw && write_raw(dir / "memory.memsw.limit_in_bytes", memory) == 0) {
        e = write_text(dir / "memory.limit_in_bytes", memory);
      } else {
        e = write_text(dir / "memory.limit_in_bytes", memory);
        if (!e && memsw)
          e = write_text(dir / "memory.memsw.limit_in_bytes", memory);
      }
    } else if (c == "cpu") {
      e = write_text(dir / "cpu.cfs_period_us", std::to_string(cfs_period_us));
      if (!e)
        e = write_text(dir / "cpu.cfs_quota_us", quota.empty() ? "-1" : quota);
    } else {
      e = write_text(dir / "memory.max", memory.empty() ? "max" : memory);
      if (!e)
        (void) write_text(dir / "memory.swap.max", memory.empty() ? "max" : "0");
      if (!e && cpu_)
        e = write_text(dir / "cpu.max", (quota.empty() ? "max" : quota) + " "
                                          + std::to_string(cfs_period_us));
    }
    if (e)
      return e;
    procs.push_back(dir / "cgroup.procs");
  }
  return procs;
}

uint64_t component_cgroups::oom_kills(const std::string& name) const {
  auto it = bases_.find(version_ == 2 ? "" : "memory");
  if (it == bases_.end())
    return 0;
  std::istringstream in{read_text(it->second / name
                                   / (version_ == 2 ? "memory.events" : "memory.oom_control"))};
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value)
    if (key == "oom_kill")
      return value;
  return 0;
}

void component_cgroups::remove(const std::string& name) {
  for (const auto& [c, base] : bases_)
    ::rmdir((base / name).c_str());
}

std::string component_cgroups::describe() const {
  if (version_ == 2)
    return std::string{"cgroup v2 (memory"} + (cpu_ ? ", cpu" : "") + ") under "
           + bases_.at("").string();
  return std::string{"cgroup v1 (memory"} + (cpu_ ? ", cpu" : "") + ") under "
         + bases_.at("memory").string();
}

fs::path component_cgroups::base(const std::string& controller) const {
  auto it = bases_.find(controller);
  return it == bases_.end() ? fs::path{} : it->second;
}

} // namespace grove::deployment
