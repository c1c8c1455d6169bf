#include "component_freezer.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <system_error>

#include "component_cgroups.hpp"
#include "grove/cgroup.hpp"
#include "grove/errors.hpp"

namespace grove::deployment {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view prefix = "grove-freeze-";

// How long a pause waits for the kernel to report the group frozen.
constexpr auto freeze_wait = std::chrono::seconds{1};

std::string read_state(const fs::path& group) {
  std::ifstream in{group / "freezer.state"};
  std::string s;
  in >> s;
  return s;
}

bool empty(const fs::path& group) {
  std::ifstream in{group / "cgroup.procs"};
  pid_t p;
  return !(in >> p);
}

// /proc/<pid>/stat's state ('T' stopped), or 0 once it is gone.
char state_of(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string text{std::istreambuf_iterator<char>{in}, {}};
  auto paren = text.rfind(") ");
  return paren == std::string::npos || paren + 2 >= text.size() ? 0 : text[paren + 2];
}

// `<prefix><pid>` of a groved that is gone, or of this one (whose earlier instance's
// groups nobody knows of any more); another live groved's is left alone.
bool unowned(const std::string& file, std::string_view prefix) {
  return cgroup_name_owner(file, prefix) == ::getpid() || cgroup_name_stale(file, prefix);
}

// Thaws every group under `top` (writing `thawed` to its `file`); with `drop` the empty
// ones are removed, `top` too when it empties. What a dead groved's parent-death SIGKILL
// waited for ends once thawed (v1): up to 200 ms for that, else the group stays (thawed,
// with what the runner kills next) until a later start.
void thaw_all(const fs::path& top, const char* file, const char* thawed, bool drop) {
  std::error_code ec;
  std::vector<fs::path> leaves;
  for (const auto& leaf : fs::directory_iterator{top, ec})
    if (leaf.is_directory(ec)) {
      cgroup_write(leaf.path() / file, thawed);
      leaves.push_back(leaf.path());
    }
  if (!drop)
    return;
  for (const auto& leaf : leaves) {
    for (int i = 0; i < 20 && !empty(leaf); ++i)
      ::usleep(10000);
    ::rmdir(leaf.c_str());
  }
  ::rmdir(top.c_str());
}

// Every `<prefix><pid>` directory under `dir` that unowned() picks, thawed.
void thaw_unowned(const fs::path& dir, std::string_view prefix, const char* file,
                  const char* thawed, bool drop) {
  std::error_code ec;
  auto mine = std::string{prefix} + std::to_string(::getpid());
  for (const auto& e : fs::directory_iterator{dir, ec})
    if (e.is_directory(ec) && unowned(e.path().filename().string(), prefix))
      // This groved's own (a hot reload): its components' processes live on in them,
      // so no waiting for them to empty.
      thaw_all(e.path(), file, thawed, drop && e.path().filename() != mine);
}

// Whether this kernel has cgroup v2's freezer (5.2 on): `cgroup.freeze` in a non-root
// cgroup at `dir` or just under it (none at the root).
bool has_v2_freeze(const fs::path& mount, const fs::path& dir) {
  std::error_code ec;
  if (!fs::equivalent(dir, mount, ec) && fs::exists(dir / "cgroup.freeze", ec))
    return true;
  for (const auto& e : fs::directory_iterator{dir, ec})
    if (e.is_directory(ec) && fs::exists(e.path() / "cgroup.freeze", ec))
      return true;
  return false;
}

// cgroup.events' "frozen 1" (v2).
bool events_frozen(const std::string& text) {
  std::istringstream in{text};
  std::string key, value;
  while (in >> key >> value)
    if (key == "frozen")
      return value == "1";
  return false;
}

// Waits up to `wait` until v2 group `group` reports every task frozen: the kernel
// notifies a change of cgroup.events as a poll(2) priority event (cgroup-v2.rst).
bool wait_frozen(const fs::path& group, std::chrono::milliseconds wait) {
  int fd = ::open((group / "cgroup.events").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  auto until = std::chrono::steady_clock::now() + wait;
  bool frozen = false;
  for (;;) {
    char buf[256];
    ::lseek(fd, 0, SEEK_SET);
    auto n = ::read(fd, buf, sizeof buf - 1);
    if (n > 0 && events_frozen(std::string{buf, static_cast<size_t>(n)})) {
      frozen = true;
      break;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      until - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      break;
    pollfd p{fd, POLLPRI, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR)
      break;
  }
  ::close(fd);
  return frozen;
}

// Moves `procs` into `group` and freezes it (`file` <- `value`), then lists again until
// nothing new turns up: what forked meanwhile is moved into the frozen group, where both
// v1 and v2 freeze it. One that ended meanwhile is not moved: cgroup.procs takes a pid,
// not a pidfd, so each is checked alive through its pidfd just before (what is left is a
// process ending, reaped and its pid given out again between the two). A process that
// forked inside the group is frozen with it, never signalled or moved by its pid.
caf::error move_and_freeze(const fs::path& group, const char* file, const char* value,
                           const std::function<std::vector<held_process>()>& procs) {
  bool frozen = false;
  for (int round = 0; round < 10; ++round) {
    std::set<pid_t> inside;
    {
      std::ifstream in{group / "cgroup.procs"};
      for (pid_t p; in >> p;)
        inside.insert(p);
    }
    bool fresh = false;
    for (const auto& p : procs())
      if (!inside.count(p.pid) && p.signal(0)) {
        fresh = true;
        cgroup_write(group / "cgroup.procs", std::to_string(p.pid));
      }
    if (!frozen) {
      if (auto e = cgroup_write(group / file, value))
        return e;
      frozen = true;
      continue;
    }
    if (!fresh)
      break;
  }
  // Every process still there is inside, or the pause failed (a write to cgroup.procs
  // refused for another reason than its end: a threaded or foreign cgroup).
  std::set<pid_t> inside;
  {
    std::ifstream in{group / "cgroup.procs"};
    for (pid_t p; in >> p;)
      inside.insert(p);
  }
  for (const auto& p : procs())
    if (!inside.count(p.pid) && p.signal(0))
      return make_error(errc::invalid_state, "process " + std::to_string(p.pid)
                                               + " could not be moved into " + group.string());
  return {};
}

} // namespace

component_freezer::component_freezer() {
  if (::geteuid() != 0) {
    why_ = "groved does not run as root";
    return;
  }
  auto host = cgroup_host::probe();
  // Whatever backend is chosen below, what any of them left frozen is thawed.
  std::string v1_why;
  auto v1 = host.v1_dir("freezer");
  if (v1.empty()) {
    v1_why = "no cgroup v1 freezer hierarchy";
  } else if (!cgroup_host::writable(v1)) {
    v1_why = v1.string() + " is not writable";
  } else {
    thaw_unowned(v1, prefix, "freezer.state", "THAWED", true);
    v1_base_ = v1 / (std::string{prefix} + std::to_string(::getpid()));
  }
  std::string v2_why;
  if (host.v2_dir.empty()) {
    v2_why = host.v2_why;
  } else if (!cgroup_host::writable(host.v2_dir)) {
    v2_why = host.v2_dir.string() + " is not writable";
  } else if (!has_v2_freeze(host.v2_mount, host.v2_dir)) {
    v2_why = "this kernel's cgroup v2 has no cgroup.freeze (Linux 5.2 on)";
  } else {
    thaw_unowned(host.v2_dir, prefix, "cgroup.freeze", "0", true);
    // The components' own cgroups are component_cgroups' to remove (they kill what is
    // left there): thawed only.
    thaw_unowned(host.v2_dir, component_cgroups_prefix, "cgroup.freeze", "0", false);
    v2_base_ = host.v2_dir / (std::string{prefix} + std::to_string(::getpid()));
    v2_own_ = true;
    v2_mount_ = host.v2_mount;
    v2_dir_ = host.v2_dir;
  }
  std::string force;
  if (const char* f = std::getenv("GROVE_DEPLOYMENT_FREEZER"))
    force = f;
  if (force == "signal") {
    v1_base_.clear();
    v2_base_.clear();
    v2_own_ = false;
    why_ = "GROVE_DEPLOYMENT_FREEZER=signal";
  } else if (force == "v1") {
    v2_base_.clear();
    v2_own_ = false;
    why_ = "v1: " + v1_why + "; GROVE_DEPLOYMENT_FREEZER=v1";
  } else if (force == "v2") {
    v1_base_.clear();
    why_ = "v2: " + v2_why + "; GROVE_DEPLOYMENT_FREEZER=v2";
  } else {
    why_ = "v1: " + v1_why + "; v2: " + v2_why;
  }
}

component_freezer::kind component_freezer::choose(const std::string& name, const fs::path& own,
                                                   const std::vector<held_process>& procs) const {
  std::error_code ec;
  if (!own.empty()) {
    // Its limits hold it in a v2 cgroup: frozen there, or in v1's own hierarchy, or
    // stopped; never moved to a leaf (it would leave its limits).
    if (v2_own_ && fs::exists(own / "cgroup.freeze", ec))
      return kind::v2_own;
    return v1_base_.empty() ? kind::signal : kind::v1;
  }
  if (!v1_base_.empty())
    return kind::v1;
  if (v2_base_.empty())
    return kind::signal;
  // A leaf takes only processes from groved's own cgroup (or the leaf, paused before):
  // one that sits elsewhere (a scope, a cgroup of its own making) stays there. groved's
  // own is also its leaf `groved` once it enabled controllers there (cgroup_enable; on a
  // v2 host the first component with limits or function sandbox does).
  for (const auto& p : procs) {
    auto at = v2_cgroup_of(p.pid);
    if (!at.empty() && !fs::equivalent(at, v2_dir_, ec)
        && !fs::equivalent(at, v2_dir_ / "groved", ec)
        && !fs::equivalent(at, v2_base_ / name, ec))
      return kind::signal;
  }
  return kind::v2_leaf;
}

fs::path component_freezer::v2_cgroup_of(pid_t pid) const {
  if (v2_mount_.empty())
    return {};
  auto path = cgroup_of(pid, "");
  return path ? cgroup_under(v2_mount_, *path) : fs::path{};
}

fs::path component_freezer::own_of(pid_t pid) const {
  if (!v2_own_)
    return {};
  auto dir = v2_cgroup_of(pid);
  auto base = dir.parent_path();
  std::error_code ec;
  if (!dir.empty() && base.filename().string().starts_with(component_cgroups_prefix)
      && fs::equivalent(base.parent_path(), v2_dir_, ec))
    return dir;
  return {};
}

caf::error component_freezer::freeze(const std::string& name,
                                     const std::function<std::vector<held_process>()>& procs,
                                     const fs::path& own_given) {
  // Never moved out of the cgroup holding its limits, named or not.
  auto own = own_given;
  if (own.empty())
    for (const auto& p : procs())
      if (own = own_of(p.pid); !own.empty())
        break;
  auto how = choose(name, own, procs());
  switch (how) {
    case kind::signal: {
      paused_[name] = {how, {}};
      // Through each one's pidfd. The runner lists the component's grandchildren too (they
      // inherit its environment marker), each held by a pidfd opened before its
      // environment was read: this stops that process or none. One that dropped the marker
      // (a fresh environment) is not listed and runs on: nothing here signals a pid that
      // is not held (a cgroup backend freezes such a one with its group).
      std::set<pid_t> done;
      std::vector<held_process> stopped;
      for (int round = 0; round < 10; ++round) {
        bool fresh = false;
        for (auto& p : procs())
          if (done.insert(p.pid).second) {
            fresh = true;
            if (p.signal(SIGSTOP))
              stopped.push_back(std::move(p));
          }
        if (!fresh)
          break;
      }
      // Answered once each shows stopped (a signal is delivered after it is sent), or has
      // ended (its state read while it is alive is its own), or after a second in any case.
      auto until = std::chrono::steady_clock::now() + freeze_wait;
      for (const auto& p : stopped)
        for (char st = state_of(p.pid); (st == 'R' || st == 'S' || st == 'D') && p.signal(0);
             st = state_of(p.pid)) {
          if (std::chrono::steady_clock::now() >= until)
            return {};
          ::usleep(1000);
        }
      return {};
    }
    case kind::v1: {
      auto group = v1_base_ / name;
      if (auto e = cgroup_mkdir(v1_base_))
        return e;
      if (auto e = cgroup_mkdir(group))
        return e;
      paused_[name] = {how, group};
      if (auto e = move_and_freeze(group, "freezer.state", "FROZEN", procs))
        return e;
      // FREEZING until every task has stopped (one in an uninterruptible sleep holds it
      // up): answered once FROZEN, or after a second in any case (the rest freezes when
      // it can).
      auto until = std::chrono::steady_clock::now() + freeze_wait;
      while (read_state(group) != "FROZEN" && std::chrono::steady_clock::now() < until)
        ::usleep(10000);
      return {};
    }
    case kind::v2_own:
    case kind::v2_leaf: {
      auto group = how == kind::v2_own ? own : v2_base_ / name;
      if (how == kind::v2_leaf) {
        if (auto e = cgroup_mkdir(v2_base_))
          return e;
        if (auto e = cgroup_mkdir(group))
          return e;
      }
      paused_[name] = {how, group};
      // The own cgroup: its processes are there already (they joined it before they ran
      // anything, and their children are born there); one that is not is the
      // component's too and belongs there.
      if (auto e = move_and_freeze(group, "cgroup.freeze", "1", procs))
        return e;
      wait_frozen(group, freeze_wait);
      return {};
    }
  }
  return {};
}

caf::error component_freezer::thaw(const std::string& name,
                                   const std::vector<held_process>& procs) {
  auto it = paused_.find(name);
  if (it == paused_.end())
    return {};
  auto [how, group] = it->second;
  std::error_code ec;
  if (how == kind::signal) {
    for (const auto& p : procs)
      p.signal(SIGCONT); // as SIGSTOP: only a held process
  } else if (fs::exists(group, ec)) {
    auto e = how == kind::v1 ? cgroup_write(group / "freezer.state", "THAWED")
                             : cgroup_write(group / "cgroup.freeze", "0");
    if (e)
      return e; // still paused: a later thaw tries again
  }
  paused_.erase(name);
  remove(name); // its processes ended while paused: nothing keeps the leaf
  return {};
}

bool component_freezer::remove(const std::string& name) {
  bool gone = true;
  for (const auto& base : {v1_base_, v2_base_}) {
    if (base.empty())
      continue;
    if (::rmdir((base / name).c_str()) == 0)
      ::rmdir(base.c_str()); // the last one
    else if (errno != ENOENT)
      gone = false;
  }
  return gone;
}

std::string component_freezer::describe() const {
  std::string out;
  auto add = [&out](const std::string& way) {
    out += (out.empty() ? "" : ", else ") + way;
  };
  if (v2_own_)
    add("cgroup v2 cgroup.freeze of a component's own cgroup (systemResourceLimits)");
  if (!v1_base_.empty())
    add("cgroup v1 freezer (" + v1_base_.string() + ")");
  if (!v2_base_.empty())
    add("cgroup v2 cgroup.freeze (" + v2_base_.string() + ")");
  if (out.empty())
    return "SIGSTOP/SIGCONT (" + why_ + ")";
  add("SIGSTOP/SIGCONT");
  return out;
}

} // namespace grove::deployment
