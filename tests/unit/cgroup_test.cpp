#define BOOST_TEST_MODULE cgroup_test
#include <boost/test/unit_test.hpp>

#include <csignal>
#include <fstream>
#include <sstream>

#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "grove/cgroup.hpp"
#include "grove/errors.hpp"
#include "grove/process.hpp"
#include "../support/process_recorder.hpp"
#include "test_util.hpp"

// grove::cgroup (grove_cgroup) on this machine's real cgroups: the hierarchy found as
// /proc/self says, a group under this process's own memory cgroup with limits the kernel
// then reports, a child started into it through grove::process (process_sandbox's
// cgroup_procs), one allocating past its limit killed and the kill read back, removal,
// stale groups of a dead pid removed and a live one's kept, /proc/<pid>/cgroup and stale
// names parsed, and errors that name the file. The v2 cases with limits need a v2 memory
// controller (cgroup_v2_vm_test runs them).

using namespace grove;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

using groved_signals = test::groved_process_signals;
BOOST_TEST_GLOBAL_FIXTURE(groved_signals);

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in{p};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

using recorder = test::process_recorder;

/// `script` under sh in a process sandbox joining `procs` (the cgroup_procs way
/// function_runtime starts its instances).
process_options sandboxed(const std::string& script, const fs::path& root_base,
                          std::vector<fs::path> procs) {
  process_options o;
  o.argv = {"sh", "-c", script};
  o.uid = 65534;
  o.gid = 65534;
  auto sb = test::host_system_sandbox(root_base);
  sandbox_mount zero;
  zero.source = "/dev/zero";
  zero.target = "/dev/zero";
  zero.read_only = false;
  sb.mounts.push_back(zero);
  sb.cgroup_procs = std::move(procs);
  o.sandbox = std::move(sb);
  return o;
}

/// A base directory under this process's own cgroup in each v1 hierarchy of `wanted`
/// that is there and writable, removed with the fixture; empty (and a message saying
/// why) where this host gives none.
struct v1_bases {
  std::vector<std::pair<std::string, fs::path>> bases;
  std::string why_not;

  explicit v1_bases(std::vector<std::string> wanted) {
    if (::geteuid() != 0) {
      why_not = "skipped: making cgroups needs root";
      return;
    }
    auto host = cgroup_host::probe();
    auto tag = "grove-cgroup-test-" + std::to_string(::getpid());
    for (const auto& c : wanted) {
      auto parent = host.v1_dir(c);
      if (!cgroup_host::writable(parent)) {
        if (c == "memory") {
          why_not = "skipped: no writable v1 memory hierarchy (" + parent.string() + ")";
          return;
        }
        continue;
      }
      if (auto e = cgroup_mkdir(parent / tag)) {
        why_not = "skipped: " + describe(e);
        return;
      }
      bases.emplace_back(c, parent / tag);
    }
  }

  ~v1_bases() {
    // What a failed check left behind goes too.
    for (const auto& [c, b] : bases) {
      std::error_code ec;
      for (const auto& leaf : fs::directory_iterator{b, ec})
        if (leaf.is_directory(ec))
          cgroup_kill_and_remove(leaf.path());
      ::rmdir(b.c_str());
    }
  }

  bool skipped() const {
    if (why_not.empty())
      return false;
    BOOST_TEST_MESSAGE(why_not);
    return true;
  }
};

pid_t dead_pid() {
  pid_t pid = ::fork();
  if (pid == 0)
    ::_exit(0);
  int st = 0;
  ::waitpid(pid, &st, 0);
  return pid;
}

} // namespace

BOOST_AUTO_TEST_CASE(the_hierarchy_is_found_as_proc_self_says) {
  auto mounts = cgroup_mounts();
  auto host = cgroup_host::probe();
  bool any_v1 = false;
  for (const auto& m : mounts) {
    BOOST_TEST((m.type == "cgroup" || m.type == "cgroup2"), m.type);
    if (m.type != "cgroup")
      continue;
    any_v1 = true;
    for (const auto& c : m.options) {
      auto own = own_cgroup(c);
      if (!own)
        continue;
      // The directory is the mount point joined with this process's path there, and it
      // exists (the process is in it).
      BOOST_TEST(host.v1_dir(c) == cgroup_under(m.point, *own), c);
      BOOST_TEST(fs::is_directory(host.v1_dir(c)), host.v1_dir(c));
    }
  }
  BOOST_TEST(any_v1 == !host.v1_dirs.empty());
  if (host.v2_dir.empty()) {
    BOOST_TEST(!host.v2_why.empty());
  } else {
    BOOST_TEST(fs::is_directory(host.v2_dir), host.v2_dir);
    BOOST_TEST(host.v2_why.empty());
  }
  // A configured parent replaces the process's own cgroup.
  auto under = cgroup_host::probe("/grove-elsewhere");
  for (const auto& [c, d] : under.v1_dirs)
    BOOST_TEST(d.filename() == "grove-elsewhere", d);
}

BOOST_AUTO_TEST_CASE(a_group_gets_its_limits_and_a_child_started_into_it) {
  v1_bases base{{"memory", "pids", "cpu"}};
  if (base.skipped())
    return;
  auto g = cgroup_group::make(base.bases, "limited");
  BOOST_REQUIRE_MESSAGE(g, (g ? std::string{} : describe(g.error())));
  BOOST_TEST(g->version() == 1);
  BOOST_TEST(g->dirs.front().first == "memory");
  cgroup_limits l;
  l.memory_bytes = 48 << 20;
  l.pids_max = 37;
  l.cpu_quota_us = 25000;
  auto e = g->apply(l);
  BOOST_REQUIRE_MESSAGE(!e, describe(e));
  auto mem = g->dir("memory");
  BOOST_TEST(std::stoll(read_text(mem / "memory.limit_in_bytes")) == 48 << 20);
  if (fs::exists(mem / "memory.memsw.limit_in_bytes"))
    BOOST_TEST(std::stoll(read_text(mem / "memory.memsw.limit_in_bytes")) == 48 << 20);
  if (auto d = g->dir("pids"); !d.empty())
    BOOST_TEST(std::stoll(read_text(d / "pids.max")) == 37);
  if (auto d = g->dir("cpu"); !d.empty()) {
    BOOST_TEST(std::stoll(read_text(d / "cpu.cfs_quota_us")) == 25000);
    BOOST_TEST(std::stoll(read_text(d / "cpu.cfs_period_us")) == 100000);
  }
  // Lifted again: unlimited.
  cgroup_limits lift;
  lift.memory_bytes = -1;
  lift.pids_max = -1;
  e = g->apply(lift);
  BOOST_REQUIRE_MESSAGE(!e, describe(e));
  BOOST_TEST(std::stoll(read_text(mem / "memory.limit_in_bytes")) > int64_t{1} << 40);
  if (auto d = g->dir("pids"); !d.empty())
    BOOST_TEST(read_text(d / "pids.max") == "max\n");
  e = g->apply(l);
  BOOST_REQUIRE_MESSAGE(!e, describe(e));
  // A child through grove::process joins every directory before it runs.
  test::temp_dir root;
  recorder r;
  auto p = process::start(r.owner(), sandboxed("sleep 60", root.path(), g->procs()),
                          r.callbacks());
  BOOST_REQUIRE_MESSAGE(p, (p ? std::string{} : describe(p.error())));
  auto pid = p->pid();
  BOOST_REQUIRE(pid > 0);
  for (const auto& procs : g->procs()) {
    std::istringstream in{read_text(procs)};
    std::vector<pid_t> pids;
    for (pid_t x; in >> x;)
      pids.push_back(x);
    BOOST_TEST((std::find(pids.begin(), pids.end(), pid) != pids.end()),
               pid << " not in " << procs);
  }
  // A busy group stays without `kill`; with it, the child is killed and the group goes.
  BOOST_TEST(!g->remove(false));
  BOOST_TEST(fs::exists(mem));
  BOOST_TEST(g->remove(true));
  for (const auto& [c, d] : g->dirs)
    BOOST_TEST(!fs::exists(d), d);
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.exit(0).signal == SIGKILL);
  BOOST_TEST(g->oom_kills() == 0u);
}

namespace {

/// A group "hog" under `bases` with a 16 MiB memory limit: a child filling dd's one 64 MiB
/// block from /dev/zero (four times the limit) is OOM-killed within `wait`, and the
/// group counts the kill.
void oom_killed_past(const std::vector<std::pair<std::string, std::filesystem::path>>& bases,
                     std::chrono::seconds wait) {
  auto g = cgroup_group::make(bases, "hog");
  BOOST_REQUIRE_MESSAGE(g, (g ? std::string{} : describe(g.error())));
  cgroup_limits l;
  l.memory_bytes = 16 << 20;
  auto e = g->apply(l);
  BOOST_REQUIRE_MESSAGE(!e, describe(e));
  BOOST_TEST(g->oom_kills() == 0u);
  test::temp_dir root;
  recorder r;
  auto p = process::start(r.owner(),
                          sandboxed("exec dd if=/dev/zero of=/dev/null bs=64M count=1",
                                    root.path(), g->procs()),
                          r.callbacks());
  BOOST_REQUIRE_MESSAGE(p, (p ? std::string{} : describe(p.error())));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }, wait));
  auto ex = r.exit(0);
  BOOST_TEST(ex.signal == SIGKILL, ex.describe());
  BOOST_TEST(g->oom_kills() >= 1u);
  BOOST_TEST(g->remove(false));
}

} // namespace

BOOST_AUTO_TEST_CASE(a_child_past_its_memory_is_oom_killed_and_reported) {
  v1_bases base{{"memory"}};
  if (base.skipped())
    return;
  oom_killed_past(base.bases, 30s);
}

BOOST_AUTO_TEST_CASE(a_v2_group_takes_a_child_and_names_a_limit_it_cannot_take) {
  // The unified hierarchy (on a hybrid host without controllers: membership only).
  auto host = cgroup_host::probe();
  if (::geteuid() != 0 || !cgroup_host::writable(host.v2_dir)) {
    BOOST_TEST_MESSAGE("skipped: no writable cgroup v2 directory (" << host.v2_dir << ", "
                                                                     << host.v2_why << ")");
    return;
  }
  auto base = host.v2_dir / ("grove-cgroup-test-" + std::to_string(::getpid()));
  BOOST_REQUIRE(!cgroup_mkdir(base));
  auto g = cgroup_group::make({{"", base}}, "v2");
  BOOST_REQUIRE_MESSAGE(g, (g ? std::string{} : describe(g.error())));
  BOOST_TEST(g->version() == 2);
  if (!host.v2_has("memory")) {
    cgroup_limits l;
    l.memory_bytes = 1 << 20;
    auto e = g->apply(l);
    BOOST_REQUIRE(e);
    BOOST_TEST(describe(e).find("to " + (g->dir("") / "memory.max").string())
                 != std::string::npos,
               describe(e));
  }
  test::temp_dir root;
  recorder r;
  auto p = process::start(r.owner(), sandboxed("sleep 60", root.path(), g->procs()),
                          r.callbacks());
  BOOST_REQUIRE_MESSAGE(p, (p ? std::string{} : describe(p.error())));
  auto procs = "\n" + read_text(g->dir("") / "cgroup.procs");
  BOOST_TEST(procs.find("\n" + std::to_string(p->pid()) + "\n") != std::string::npos, procs);
  BOOST_TEST(g->remove(true));
  BOOST_TEST(::rmdir(base.c_str()) == 0);
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
}

namespace {

/// A base directory with memory, pids and cpu below this process's v2 cgroup, as
/// component_cgroups and function_runtime's sandbox make theirs (cgroup_enable moves this
/// process to the leaf `groved`); empty where v2 has no memory controller (a hybrid host:
/// cgroup_v2_vm_test runs these on a pure v2 one).
struct v2_base {
  fs::path dir;

  v2_base() {
    auto host = cgroup_host::probe();
    if (::geteuid() != 0 || !cgroup_host::writable(host.v2_dir) || !host.v2_has("memory")
        || !host.v2_has("pids") || !host.v2_has("cpu")) {
      BOOST_TEST_MESSAGE("skipped: no writable cgroup v2 with memory, pids and cpu ("
                         << host.v2_dir << ", " << host.v2_why << ")");
      return;
    }
    auto enable = "+memory +pids +cpu";
    auto e = cgroup_enable(host.v2_dir, enable, true);
    BOOST_REQUIRE_MESSAGE(!e, describe(e));
    // probe() looks past the leaf: the same directory as before.
    BOOST_TEST(cgroup_host::probe().v2_dir == host.v2_dir);
    dir = host.v2_dir / ("grove-cgroup-test-" + std::to_string(::getpid()));
    BOOST_REQUIRE(!cgroup_mkdir(dir));
    e = cgroup_write(dir / "cgroup.subtree_control", enable);
    BOOST_REQUIRE_MESSAGE(!e, describe(e));
  }

  ~v2_base() {
    if (dir.empty())
      return;
    std::error_code ec;
    for (const auto& leaf : fs::directory_iterator{dir, ec})
      if (leaf.is_directory(ec))
        cgroup_kill_and_remove(leaf.path());
    ::rmdir(dir.c_str());
  }
};

} // namespace

BOOST_AUTO_TEST_CASE(a_v2_group_gets_its_limits_and_a_child_started_into_it) {
  v2_base base;
  if (base.dir.empty())
    return;
  auto g = cgroup_group::make({{"", base.dir}}, "limited");
  BOOST_REQUIRE_MESSAGE(g, (g ? std::string{} : describe(g.error())));
  BOOST_TEST(g->version() == 2);
  cgroup_limits l;
  l.memory_bytes = 48 << 20;
  l.pids_max = 37;
  l.cpu_quota_us = 25000;
  l.cpu_weight = 50;
  auto e = g->apply(l);
  BOOST_REQUIRE_MESSAGE(!e, describe(e));
  auto d = g->dir("");
  BOOST_TEST(read_text(d / "memory.max") == std::to_string(48 << 20) + "\n");
  if (fs::exists(d / "memory.swap.max")) // where swap is accounted
    BOOST_TEST(read_text(d / "memory.swap.max") == "0\n");
  BOOST_TEST(read_text(d / "pids.max") == "37\n");
  BOOST_TEST(read_text(d / "cpu.max") == "25000 100000\n");
  BOOST_TEST(read_text(d / "cpu.weight") == "50\n");
  cgroup_limits lift;
  lift.memory_bytes = -1;
  lift.pids_max = -1;
  lift.cpu_quota_us = -1;
  e = g->apply(lift);
  BOOST_REQUIRE_MESSAGE(!e, describe(e));
  BOOST_TEST(read_text(d / "memory.max") == "max\n");
  if (fs::exists(d / "memory.swap.max"))
    BOOST_TEST(read_text(d / "memory.swap.max") == "max\n");
  BOOST_TEST(read_text(d / "pids.max") == "max\n");
  BOOST_TEST(read_text(d / "cpu.max") == "max 100000\n");
  test::temp_dir root;
  recorder r;
  auto p = process::start(r.owner(), sandboxed("sleep 60", root.path(), g->procs()),
                          r.callbacks());
  BOOST_REQUIRE_MESSAGE(p, (p ? std::string{} : describe(p.error())));
  auto procs = "\n" + read_text(d / "cgroup.procs");
  BOOST_TEST(procs.find("\n" + std::to_string(p->pid()) + "\n") != std::string::npos, procs);
  BOOST_TEST(!g->remove(false));
  BOOST_TEST(g->remove(true));
  BOOST_TEST(!fs::exists(d));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.exit(0).signal == SIGKILL);
}

BOOST_AUTO_TEST_CASE(a_child_past_its_v2_memory_is_oom_killed_and_reported) {
  v2_base base;
  if (base.dir.empty())
    return;
  oom_killed_past({{"", base.dir}}, 60s);
}

BOOST_AUTO_TEST_CASE(stale_groups_of_a_dead_pid_go_and_a_live_ones_stay) {
  v1_bases base{{"memory"}};
  if (base.skipped())
    return;
  auto parent = base.bases.front().second;
  auto dead = parent / ("grove-stale-" + std::to_string(dead_pid()));
  pid_t live_pid = ::fork();
  if (live_pid == 0) {
    ::pause();
    ::_exit(0);
  }
  auto live = parent / ("grove-stale-" + std::to_string(live_pid));
  for (const auto& d : {dead, dead / "component", live, live / "component"})
    BOOST_REQUIRE(!cgroup_mkdir(d));
  // Another prefix is none of its business.
  auto other = parent / ("grove-other-" + std::to_string(dead_pid()));
  BOOST_REQUIRE(!cgroup_mkdir(other));
  auto gone = cgroup_remove_stale(parent, "grove-stale-", true);
  BOOST_TEST(gone.size() == 1u);
  BOOST_TEST(!fs::exists(dead));
  BOOST_TEST(fs::exists(live / "component"));
  BOOST_TEST(fs::exists(other));
  ::kill(live_pid, SIGKILL);
  int st = 0;
  ::waitpid(live_pid, &st, 0);
  gone = cgroup_remove_stale(parent, "grove-stale-", false);
  BOOST_TEST(gone.size() == 1u);
  BOOST_TEST(!fs::exists(live));
  ::rmdir(other.c_str());
}

BOOST_AUTO_TEST_CASE(a_processs_cgroup_is_read_from_its_proc_file) {
  // A hybrid host's lines (v1 hierarchies by their controllers, named ones, the unified
  // one as "0::"), and a v2-only host's one line.
  std::string hybrid = "12:pids:/system.slice/grove.service\n"
                       "4:cpu,cpuacct:/system.slice\n"
                       "1:name=systemd:/system.slice/grove.service\n"
                       "0::/system.slice/grove.service/groved\n";
  BOOST_TEST(cgroup_path_in(hybrid, "pids").value_or("-") == "/system.slice/grove.service");
  BOOST_TEST(cgroup_path_in(hybrid, "cpuacct").value_or("-") == "/system.slice");
  BOOST_TEST(cgroup_path_in(hybrid, "").value_or("-") == "/system.slice/grove.service/groved");
  BOOST_TEST(!cgroup_path_in(hybrid, "memory"));
  BOOST_TEST(!cgroup_path_in(hybrid, "cpuac"));
  BOOST_TEST(cgroup_path_in("0::/\n", "").value_or("-") == "/");
  BOOST_TEST(!cgroup_path_in("0::/\n", "pids"));
  // A v1 hierarchy numbered 0 is not the unified one, nor is a line without its fields.
  BOOST_TEST(!cgroup_path_in("0:pids:/a\n", ""));
  BOOST_TEST(!cgroup_path_in("0:\nbroken\n", ""));
  BOOST_TEST(!cgroup_path_in("", ""));
  // A child starts where its parent is, on every hierarchy; a gone one has none.
  pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  for (const auto& m : cgroup_mounts())
    for (const auto& c : m.type == "cgroup2" ? std::vector<std::string>{""} : m.options)
      if (auto own = own_cgroup(c))
        BOOST_TEST(cgroup_of(child, c).value_or("-") == *own, c);
  BOOST_TEST((own_cgroup("") == cgroup_of(0, "")));
  ::kill(child, SIGKILL);
  int st = 0;
  ::waitpid(child, &st, 0);
  BOOST_TEST(!cgroup_of(child, ""));
  BOOST_TEST(!cgroup_of(child, "pids"));
}

BOOST_AUTO_TEST_CASE(a_stale_name_is_a_prefix_and_the_pid_of_a_gone_groved) {
  BOOST_TEST(cgroup_name_owner("grove-123", "grove-") == 123);
  BOOST_TEST(cgroup_name_owner("grove-freeze-999999999", "grove-freeze-") == 999999999);
  for (const char* not_one : {"grove-", "grove-0", "grove-012", "grove-12a", "grove-1 ",
                              "grove--1", "grove-1234567890", "other-12", "grove", ""})
    BOOST_TEST(cgroup_name_owner(not_one, "grove-") == 0, not_one);
  // grove-freeze-<pid> is not grove-<pid>.
  BOOST_TEST(cgroup_name_owner("grove-freeze-12", "grove-") == 0);
  auto dead = std::to_string(dead_pid());
  BOOST_TEST(cgroup_name_stale("grove-" + dead, "grove-"));
  BOOST_TEST(!cgroup_name_stale("grove-x" + dead, "grove-"));
  BOOST_TEST(!cgroup_name_stale("grove-" + std::to_string(::getpid()), "grove-")); // its own
  BOOST_TEST(!cgroup_name_stale("grove-1", "grove-")); // init lives
  BOOST_TEST(!cgroup_name_stale("grove-0", "grove-")); // no groved's
}

BOOST_AUTO_TEST_CASE(errors_name_the_file_and_why) {
  test::temp_dir dir;
  auto missing = dir.path() / "nowhere" / "memory.max";
  auto e = cgroup_write(missing, "1024");
  BOOST_REQUIRE(e);
  auto text = describe(e);
  BOOST_TEST(text.find(missing.string()) != std::string::npos, text);
  BOOST_TEST(text.find("'1024'") != std::string::npos, text);
  BOOST_TEST(text.find("No such file") != std::string::npos, text);
  auto g = cgroup_group::make({{"memory", dir.path() / "nowhere"}}, "x");
  BOOST_REQUIRE(!g);
  BOOST_TEST(describe(g.error()).find("mkdir " + (dir.path() / "nowhere" / "x").string())
               != std::string::npos,
             describe(g.error()));
  // A group with nothing made reads no OOM kills and removes cleanly.
  cgroup_group none;
  none.dirs.emplace_back("memory", dir.path() / "never-made");
  BOOST_TEST(none.oom_kills() == 0u);
  BOOST_TEST(none.remove(false));
}
