#include "component_freezer.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

#include "grove/cgroup.hpp"
#include "grove/errors.hpp"

namespace grove::deployment {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view prefix = "grove-freeze-";

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

// Thaws every group under `top` (a grove-freeze-<pid> directory) and removes the empty
// ones, `top` too when it empties. What a dead groved's parent-death SIGKILL waited for
// ends once thawed: up to 200 ms for that, else the group stays (empty or with what the
// runner kills next) until a later start.
void thaw_all(const fs::path& top) {
  std::error_code ec;
  std::vector<fs::path> leaves;
  for (const auto& leaf : fs::directory_iterator{top, ec})
    if (leaf.is_directory(ec)) {
      cgroup_write(leaf.path() / "freezer.state", "THAWED");
      leaves.push_back(leaf.path());
    }
  for (const auto& leaf : leaves) {
    for (int i = 0; i < 20 && !empty(leaf); ++i)
      ::usleep(10000);
    ::rmdir(leaf.c_str());
  }
  ::rmdir(top.c_str());
}

} // namespace

component_freezer::component_freezer() {
  if (::geteuid() != 0) {
    why_ = "groved does not run as root";
    return;
  }
  auto dir = cgroup_host::probe().v1_dir("freezer");
  if (dir.empty()) {
    why_ = "no cgroup v1 freezer hierarchy";
    return;
  }
  if (!cgroup_host::writable(dir)) {
    why_ = dir.string() + " is not writable";
    return;
  }
  // Another groved's (a second instance on this host) is left alone while it lives.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator{dir, ec}) {
    auto file = e.path().filename().string();
    if (!e.is_directory(ec) || !file.starts_with(prefix))
      continue;
    auto pid = std::atoi(file.c_str() + prefix.size());
    if (pid == ::getpid() || pid <= 0 || (::kill(pid, 0) != 0 && errno == ESRCH))
      thaw_all(e.path());
  }
  base_ = dir / (std::string{prefix} + std::to_string(::getpid()));
}

caf::error component_freezer::freeze(const std::string& name,
                                     const std::function<std::vector<pid_t>()>& pids) {
  if (base_.empty()) {
    std::set<pid_t> done;
    for (int round = 0; round < 10; ++round) {
      bool fresh = false;
      for (auto p : pids())
        if (done.insert(p).second) {
          fresh = true;
          ::kill(p, SIGSTOP);
        }
      if (!fresh)
        return {};
    }
    return {};
  }
  auto group = base_ / name;
  if (auto e = cgroup_mkdir(base_))
    return e;
  if (auto e = cgroup_mkdir(group))
    return e;
  // Moved in, frozen, then listed again: what forked meanwhile joins the frozen group
  // (v1 freezes a task attached to a frozen group).
  bool frozen = false;
  for (int round = 0; round < 10; ++round) {
    std::set<pid_t> inside;
    {
      std::ifstream in{group / "cgroup.procs"};
      for (pid_t p; in >> p;)
        inside.insert(p);
    }
    bool fresh = false;
    for (auto p : pids())
      if (!inside.count(p)) {
        fresh = true;
        // One that ended meanwhile is refused (ESRCH): nothing to freeze.
        cgroup_write(group / "cgroup.procs", std::to_string(p));
      }
    if (!frozen) {
      if (auto e = cgroup_write(group / "freezer.state", "FROZEN"))
        return e;
      frozen = true;
      continue;
    }
    if (!fresh)
      break;
  }
  // FREEZING until every task has stopped (one in an uninterruptible sleep holds it up):
  // answered once FROZEN, or after a second in any case (the rest freezes when it can).
  for (int i = 0; i < 100 && read_state(group) != "FROZEN"; ++i)
    ::usleep(10000);
  return {};
}

caf::error component_freezer::thaw(const std::string& name, const std::vector<pid_t>& pids) {
  if (base_.empty()) {
    for (auto p : pids)
      ::kill(p, SIGCONT);
    return {};
  }
  auto group = base_ / name;
  std::error_code ec;
  if (!fs::exists(group, ec))
    return {};
  if (auto e = cgroup_write(group / "freezer.state", "THAWED"))
    return e;
  return {};
}

void component_freezer::remove(const std::string& name) {
  if (base_.empty())
    return;
  auto group = base_ / name;
  if (::rmdir(group.c_str()) != 0)
    return;
  ::rmdir(base_.c_str()); // the last one
}

std::string component_freezer::describe() const {
  if (base_.empty())
    return "SIGSTOP/SIGCONT (" + why_ + ")";
  return "cgroup v1 freezer (" + base_.string() + ")";
}

} // namespace grove::deployment
