#include "grove/cgroup.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "grove/errors.hpp"

namespace grove {

namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& p) {
  std::ifstream in{p};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in{s};
  std::string w;
  while (in >> w)
    out.push_back(w);
  return out;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss{s};
  std::string item;
  while (std::getline(ss, item, sep))
    out.push_back(item);
  return out;
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

std::string limit_text(int64_t v, const char* unlimited) {
  return v < 0 ? std::string{unlimited} : std::to_string(v);
}

} // namespace

std::vector<cgroup_mount> cgroup_mounts() {
  std::vector<cgroup_mount> out;
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
    out.push_back({left[4], right[0], split(right[2], ',')});
  }
  return out;
}

std::optional<std::string> cgroup_path_in(std::string_view text, const std::string& controller) {
  for (const auto& line : split(std::string{text}, '\n')) {
    auto a = line.find(':');
    if (a == std::string::npos)
      continue;
    auto b = line.find(':', a + 1);
    if (b == std::string::npos)
      continue;
    auto ctrls = line.substr(a + 1, b - a - 1);
    auto list = split(ctrls, ',');
    if (controller.empty() ? line.substr(0, a) == "0" && ctrls.empty()
                           : std::find(list.begin(), list.end(), controller) != list.end())
      return line.substr(b + 1);
  }
  return std::nullopt;
}

std::optional<std::string> cgroup_of(pid_t pid, const std::string& controller) {
  auto file = "/proc/" + (pid == 0 ? std::string{"self"} : std::to_string(pid)) + "/cgroup";
  return cgroup_path_in(read_text(file), controller);
}

std::optional<std::string> own_cgroup(const std::string& controller) {
  return cgroup_of(0, controller);
}

pid_t cgroup_name_owner(std::string_view name, std::string_view prefix) {
  if (!name.starts_with(prefix))
    return 0;
  auto digits = name.substr(prefix.size());
  if (digits.empty() || digits.size() > 9 || digits[0] == '0'
      || digits.find_first_not_of("0123456789") != std::string_view::npos)
    return 0;
  pid_t pid = 0;
  for (auto c : digits)
    pid = pid * 10 + (c - '0');
  return pid;
}

bool cgroup_name_stale(std::string_view name, std::string_view prefix) {
  auto pid = cgroup_name_owner(name, prefix);
  return pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH;
}

fs::path cgroup_under(const fs::path& mount, const std::string& path) {
  return mount / fs::path{path}.relative_path();
}

cgroup_host cgroup_host::probe(const std::string& parent) {
  cgroup_host h;
  h.v2_why = "no cgroup2 mount";
  auto all = cgroup_mounts();
  for (const auto& m : all) {
    if (m.type != "cgroup2")
      continue;
    h.v2_mount = m.point;
    auto own = own_cgroup("");
    if (!own) {
      h.v2_why = "groved is in no v2 cgroup";
      break;
    }
    // groved moved itself to the leaf `groved` before (cgroup_enable): its parent is the
    // one its groups go under.
    auto own_dir = fs::path{*own};
    if (parent.empty() && own_dir.filename() == "groved")
      own_dir = own_dir.parent_path();
    h.v2_dir = cgroup_under(m.point, parent.empty() ? own_dir.string() : parent);
    h.v2_controllers = words(read_text(h.v2_dir / "cgroup.controllers"));
    h.v2_why.clear();
    break;
  }
  // v1: the last mount holding a controller is the one in force.
  for (const auto& m : all) {
    if (m.type != "cgroup")
      continue;
    for (const auto& c : m.options) {
      auto own = own_cgroup(c);
      if (!own)
        continue;
      h.v1_dirs[c] = cgroup_under(m.point, parent.empty() ? *own : parent);
    }
  }
  return h;
}

bool cgroup_host::v2_has(std::string_view controller) const {
  return std::find(v2_controllers.begin(), v2_controllers.end(), controller)
         != v2_controllers.end();
}

fs::path cgroup_host::v1_dir(const std::string& controller) const {
  auto it = v1_dirs.find(controller);
  return it == v1_dirs.end() ? fs::path{} : it->second;
}

bool cgroup_host::writable(const fs::path& dir) {
  return !dir.empty() && ::access(dir.c_str(), W_OK) == 0;
}

caf::error cgroup_mkdir(const fs::path& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    return make_error(errc::system_error, "mkdir " + dir.string() + ": " + std::strerror(errno));
  return {};
}

caf::error cgroup_write(const fs::path& file, const std::string& value) {
  if (int e = write_raw(file, value); e != 0)
    return make_error(errc::system_error, "cannot write '" + value + "' to " + file.string()
                                            + ": " + std::strerror(e));
  return {};
}

caf::error cgroup_enable(const fs::path& dir, const std::string& controllers, bool move_own) {
  int rc = write_raw(dir / "cgroup.subtree_control", controllers);
  if (rc == 0)
    return {};
  if (rc != EBUSY || !move_own)
    return make_error(errc::system_error, "cannot write " + dir.string()
                                            + "/cgroup.subtree_control: " + std::strerror(rc));
  auto leaf = dir / "groved";
  if (auto err = cgroup_mkdir(leaf))
    return err;
  std::istringstream procs{read_text(dir / "cgroup.procs")};
  pid_t pid;
  while (procs >> pid)
    if (int e = write_raw(leaf / "cgroup.procs", std::to_string(pid)); e != 0 && e != ESRCH)
      return make_error(errc::system_error,
                        "cannot move the processes of groved's cgroup to " + leaf.string()
                          + " (enabling its controllers needs it empty): " + std::strerror(e));
  return cgroup_write(dir / "cgroup.subtree_control", controllers);
}

bool cgroup_kill_and_remove(const fs::path& dir) {
  if (::rmdir(dir.c_str()) == 0)
    return true;
  if (errno != EBUSY)
    return errno == ENOENT;
  // v2 (Linux 5.14 on): the kernel kills every process of the group, frozen or not, and
  // what forks meanwhile. Else each listed process through a pidfd: opened first, and
  // signalled only when its pid is still listed afterwards (a pid read from cgroup.procs
  // may have gone to another process by the time it is signalled).
  if (write_raw(dir / "cgroup.kill", "1") != 0) {
    std::vector<std::pair<pid_t, int>> held;
    std::istringstream listed{read_text(dir / "cgroup.procs")};
    for (pid_t pid; listed >> pid;)
      if (int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); fd >= 0)
        held.emplace_back(pid, fd);
    std::istringstream again{read_text(dir / "cgroup.procs")};
    std::vector<pid_t> still;
    for (pid_t pid; again >> pid;)
      still.push_back(pid);
    for (auto [pid, fd] : held) {
      if (std::find(still.begin(), still.end(), pid) != still.end())
        ::syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0);
      ::close(fd);
    }
  }
  // The kernel frees an emptied cgroup soon after its last process is reaped.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds{2};
  while (::rmdir(dir.c_str()) != 0) {
    if (errno != EBUSY || std::chrono::steady_clock::now() >= until)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
  return true;
}

std::vector<std::string> cgroup_remove_stale(const fs::path& parent, std::string_view prefix,
                                             bool kill) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator{parent, ec}) {
    if (!cgroup_name_stale(e.path().filename().string(), prefix))
      continue;
    std::error_code ec2;
    for (const auto& leaf : fs::directory_iterator{e.path(), ec2})
      if (leaf.is_directory(ec2)) {
        if (kill)
          cgroup_kill_and_remove(leaf.path());
        else
          ::rmdir(leaf.path().c_str());
      }
    if (::rmdir(e.path().c_str()) == 0)
      out.push_back(e.path().string());
  }
  return out;
}

// -- cgroup_group ---------------------------------------------------------------------

caf::expected<cgroup_group>
cgroup_group::make(const std::vector<std::pair<std::string, fs::path>>& bases,
                   const std::string& name) {
  cgroup_group g;
  for (const auto& [c, base] : bases) {
    auto dir = base / name;
    if (auto e = cgroup_mkdir(dir)) {
      g.remove(false);
      return e;
    }
    g.dirs.emplace_back(c, dir);
  }
  return g;
}

caf::error cgroup_group::apply(const cgroup_limits& l) const {
  for (const auto& [c, dir] : dirs) {
    caf::error e;
    if (c == "memory" && l.memory_bytes) {
      auto memory = limit_text(*l.memory_bytes, "-1");
      // With swap accounting the limit covers swap too (else a hog swaps instead). The
      // memsw limit may never be below the memory limit: lowered first, raised last.
      bool memsw = fs::exists(dir / "memory.memsw.limit_in_bytes");
      auto memsw_value = l.no_swap ? memory : std::string{"-1"};
      if (!memsw) {
        e = cgroup_write(dir / "memory.limit_in_bytes", memory);
      } else if (memsw_value == "-1") {
        (void) cgroup_write(dir / "memory.memsw.limit_in_bytes", "-1");
        e = cgroup_write(dir / "memory.limit_in_bytes", memory);
      } else if (write_raw(dir / "memory.memsw.limit_in_bytes", memsw_value) == 0) {
        e = cgroup_write(dir / "memory.limit_in_bytes", memory);
      } else {
        e = cgroup_write(dir / "memory.limit_in_bytes", memory);
        if (!e)
          e = cgroup_write(dir / "memory.memsw.limit_in_bytes", memsw_value);
      }
    } else if (c == "pids" && l.pids_max) {
      e = cgroup_write(dir / "pids.max", limit_text(*l.pids_max, "max"));
    } else if (c == "cpu") {
      if (l.cpu_quota_us) {
        e = cgroup_write(dir / "cpu.cfs_period_us", std::to_string(l.cpu_period_us));
        if (!e)
          e = cgroup_write(dir / "cpu.cfs_quota_us", limit_text(*l.cpu_quota_us, "-1"));
      }
      if (!e && l.cpu_weight)
        e = cgroup_write(dir / "cpu.shares",
                         std::to_string(std::max<int64_t>(2, *l.cpu_weight * 1024 / 100)));
    } else if (c.empty()) {
      if (l.memory_bytes) {
        bool limited = *l.memory_bytes >= 0;
        e = cgroup_write(dir / "memory.max", limit_text(*l.memory_bytes, "max"));
        // Absent without swap accounting: nothing to limit then.
        if (!e)
          (void) cgroup_write(dir / "memory.swap.max", limited && l.no_swap ? "0" : "max");
      }
      if (!e && l.pids_max)
        e = cgroup_write(dir / "pids.max", limit_text(*l.pids_max, "max"));
      if (!e && l.cpu_quota_us)
        e = cgroup_write(dir / "cpu.max", limit_text(*l.cpu_quota_us, "max") + " "
                                            + std::to_string(l.cpu_period_us));
      if (!e && l.cpu_weight)
        e = cgroup_write(dir / "cpu.weight", std::to_string(*l.cpu_weight));
    }
    if (e)
      return e;
  }
  return {};
}

std::vector<fs::path> cgroup_group::procs() const {
  std::vector<fs::path> out;
  for (const auto& [c, d] : dirs)
    out.push_back(d / "cgroup.procs");
  return out;
}

uint64_t cgroup_group::oom_kills() const {
  auto v2 = version() == 2;
  auto d = dir(v2 ? "" : "memory");
  if (d.empty())
    return 0;
  std::istringstream in{read_text(d / (v2 ? "memory.events" : "memory.oom_control"))};
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value)
    if (key == "oom_kill")
      return value;
  return 0;
}

fs::path cgroup_group::dir(const std::string& controller) const {
  for (const auto& [c, d] : dirs)
    if (c == controller)
      return d;
  return {};
}

int cgroup_group::version() const {
  for (const auto& [c, d] : dirs)
    if (c.empty())
      return 2;
  return 1;
}

bool cgroup_group::remove(bool kill) const {
  bool all = true;
  for (const auto& [c, d] : dirs)
    if (kill ? !cgroup_kill_and_remove(d) : ::rmdir(d.c_str()) != 0 && errno != ENOENT)
      all = false;
  return all;
}

} // namespace grove
