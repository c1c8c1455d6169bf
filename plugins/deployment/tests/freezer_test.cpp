// PauseComponent's freezer (src/component_freezer.cpp) on this host's real cgroups, with
// real processes: cgroup v2's cgroup.freeze (a leaf of its own, and a component's own
// cgroup frozen where it is), the SIGSTOP/SIGCONT fallback, and what a dead groved left
// frozen thawed by the next freezer. Each backend is forced with GROVE_DEPLOYMENT_FREEZER
// (tests only). Needs root and a writable v2 cgroup (a hybrid host's controller-less
// unified hierarchy is enough); skipped otherwise.

#define BOOST_TEST_MODULE deployment_freezer
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "component_cgroups.hpp"
#include "component_freezer.hpp"
#include "grove/cgroup.hpp"

using namespace grove;
using namespace grove::deployment;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in{p};
  return {std::istreambuf_iterator<char>{in}, {}};
}

bool wait_until(const std::function<bool()>& f) {
  for (auto until = std::chrono::steady_clock::now() + 10s;
       std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(10ms))
    if (f())
      return true;
  return f();
}

// A process counting in shared memory, as a component's work.
struct counter {
  pid_t pid = -1;
  std::atomic<uint64_t>* count = nullptr;

  counter() {
    void* mem = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    BOOST_REQUIRE(mem != MAP_FAILED);
    count = new (mem) std::atomic<uint64_t>{0};
    pid = ::fork();
    BOOST_REQUIRE(pid >= 0);
    if (pid == 0)
      for (;;) {
        count->fetch_add(1);
        ::usleep(1000);
      }
  }

  ~counter() {
    ::kill(pid, SIGKILL); // v2-frozen, stopped or running: it ends
    ::waitpid(pid, nullptr, 0);
    ::munmap(count, 4096);
  }

  // Whether it counts on (within 10 s).
  bool runs() const {
    auto at = count->load();
    return wait_until([&] { return count->load() > at + 3; });
  }

  // Whether it counts no more: the count is the same before and after a pause.
  bool still() const {
    auto at = count->load();
    std::this_thread::sleep_for(200ms);
    return count->load() == at;
  }

  // Its v2 cgroup under `mount`.
  fs::path v2_cgroup(const fs::path& mount) const {
    auto path = cgroup_of(pid, "");
    return path ? cgroup_under(mount, *path) : fs::path{};
  }

  // It, as the runner lists it: held by a pidfd.
  std::vector<held_process> held() const {
    std::vector<held_process> out;
    out.push_back(held_process::open(pid));
    return out;
  }

  // It as a pid given to another process since: its number with the pidfd of one that
  // has ended (and been reaped).
  std::vector<held_process> reused() const {
    pid_t gone = ::fork();
    BOOST_REQUIRE(gone >= 0);
    if (gone == 0)
      ::_exit(0);
    auto was = held_process::open(gone);
    ::waitpid(gone, nullptr, 0);
    BOOST_REQUIRE(was.fd >= 0 && !was.signal(0));
    std::vector<held_process> out;
    out.emplace_back(pid, std::exchange(was.fd, -1));
    return out;
  }

  char state() const {
    auto text = read_text("/proc/" + std::to_string(pid) + "/stat");
    auto paren = text.rfind(") ");
    return paren == std::string::npos ? 0 : text[paren + 2];
  }
};

// Whether v2 group `group`'s cgroup.events has line `line`.
bool events_say(const fs::path& group, std::string_view line) {
  std::istringstream in{read_text(group / "cgroup.events")};
  for (std::string l; std::getline(in, l);)
    if (l == line)
      return true;
  return false;
}

bool v2_frozen(const fs::path& group) {
  return events_say(group, "frozen 1");
}

// Whether it holds a process: an empty one can be removed.
bool populated(const fs::path& group) {
  return events_say(group, "populated 1");
}

// GROVE_DEPLOYMENT_FREEZER set for one freezer's construction.
struct forced {
  explicit forced(const char* backend) {
    ::setenv("GROVE_DEPLOYMENT_FREEZER", backend, 1);
  }
  ~forced() {
    ::unsetenv("GROVE_DEPLOYMENT_FREEZER");
  }
};

// The host's v2 directory for groved, or why the test is skipped.
fs::path v2_dir() {
  auto host = cgroup_host::probe();
  if (::geteuid() != 0 || !cgroup_host::writable(host.v2_dir)) {
    BOOST_TEST_MESSAGE("skipped: no writable cgroup v2 directory (" << host.v2_dir << ", "
                                                                     << host.v2_why << ")");
    return {};
  }
  // A kernel before 5.2 has no v2 freezer (cgroup.freeze in a non-root cgroup).
  std::error_code ec;
  bool freeze = host.v2_dir != host.v2_mount && fs::exists(host.v2_dir / "cgroup.freeze", ec);
  for (const auto& e : fs::directory_iterator{host.v2_dir, ec})
    freeze = freeze || fs::exists(e.path() / "cgroup.freeze", ec);
  if (!freeze) {
    BOOST_TEST_MESSAGE("skipped: this kernel's cgroup v2 has no cgroup.freeze");
    return {};
  }
  return host.v2_dir;
}

// A pid that was a process and is gone (a child reaped).
pid_t dead_pid() {
  pid_t p = ::fork();
  if (p == 0)
    ::_exit(0);
  ::waitpid(p, nullptr, 0);
  return p;
}

} // namespace

BOOST_AUTO_TEST_CASE(v2_freezes_a_component_in_a_leaf_and_thaws_it) {
  auto dir = v2_dir();
  if (dir.empty())
    return;
  auto host = cgroup_host::probe();
  counter c;
  BOOST_REQUIRE(c.runs());
  forced f{"v2"};
  component_freezer fz;
  BOOST_TEST(fz.describe().find("cgroup v2 cgroup.freeze (") != std::string::npos, fz.describe());
  BOOST_TEST(fz.describe().find("v1 freezer") == std::string::npos, fz.describe());
  // cgroup.procs takes a pid: one given to another process since (the listed one's pidfd
  // is of one reaped) is not written there, and that process stays where it is.
  auto was = c.v2_cgroup(host.v2_mount);
  BOOST_REQUIRE(!fz.freeze("comp", [&] { return c.reused(); }));
  BOOST_TEST(c.v2_cgroup(host.v2_mount) == was);
  BOOST_TEST(c.runs());
  BOOST_REQUIRE(!fz.thaw("comp", c.reused()));
  BOOST_REQUIRE(!fz.freeze("comp", [&] { return c.held(); }));
  auto group = c.v2_cgroup(host.v2_mount);
  BOOST_TEST(group == dir / ("grove-freeze-" + std::to_string(::getpid())) / "comp");
  BOOST_TEST(v2_frozen(group), read_text(group / "cgroup.events"));
  BOOST_TEST(c.still());
  BOOST_REQUIRE(!fz.thaw("comp", c.held()));
  BOOST_TEST(!v2_frozen(group));
  BOOST_TEST(c.runs());
  // A second thaw (nothing paused) is nothing.
  BOOST_TEST(!fz.thaw("comp", c.held()));
  ::kill(c.pid, SIGKILL);
  ::waitpid(c.pid, nullptr, 0);
  BOOST_TEST(wait_until([&] {
    fz.remove("comp");
    return !fs::exists(group);
  }));
  BOOST_TEST(!fs::exists(group.parent_path()));
}

BOOST_AUTO_TEST_CASE(v2_freezes_a_components_own_cgroup_where_it_is) {
  auto dir = v2_dir();
  if (dir.empty())
    return;
  auto host = cgroup_host::probe();
  // As component_cgroups makes it for a component with systemResourceLimits.
  auto base = dir / (std::string{component_cgroups_prefix} + std::to_string(::getpid()));
  auto own = base / "comp";
  // Where v2 has a memory controller (cgroup_v2_vm_test), with a limit as it has one.
  bool memory = host.v2_has("memory");
  if (memory)
    BOOST_REQUIRE(!cgroup_enable(dir, "+memory", true));
  BOOST_REQUIRE(!cgroup_mkdir(base));
  if (memory)
    BOOST_REQUIRE(!cgroup_write(base / "cgroup.subtree_control", "+memory"));
  BOOST_REQUIRE(!cgroup_mkdir(own));
  if (memory)
    BOOST_REQUIRE(!cgroup_write(own / "memory.max", std::to_string(64 << 20)));
  {
    counter c;
    BOOST_REQUIRE(!cgroup_write(own / "cgroup.procs", std::to_string(c.pid)));
    BOOST_REQUIRE(c.runs());
    forced f{"v2"};
    component_freezer fz;
    BOOST_REQUIRE(!fz.freeze("comp", [&] { return c.held(); }, own));
    BOOST_TEST(c.v2_cgroup(host.v2_mount) == own); // not moved out of its limits
    BOOST_TEST(v2_frozen(own), read_text(own / "cgroup.events"));
    BOOST_TEST(!fs::exists(dir / ("grove-freeze-" + std::to_string(::getpid()))));
    BOOST_TEST(c.still());
    BOOST_REQUIRE(!fz.thaw("comp", c.held()));
    BOOST_TEST(!v2_frozen(own));
    BOOST_TEST(c.runs());
    BOOST_TEST(c.v2_cgroup(host.v2_mount) == own);
    // Not named (a runner that has not opened its cgroups yet, after a hot reload): found
    // from where the process is, and frozen there too.
    BOOST_REQUIRE(!fz.freeze("comp", [&] { return c.held(); }));
    BOOST_TEST(c.v2_cgroup(host.v2_mount) == own);
    BOOST_TEST(v2_frozen(own), read_text(own / "cgroup.events"));
    BOOST_TEST(c.still());
    BOOST_REQUIRE(!fz.thaw("comp", c.held()));
    BOOST_TEST(c.runs());
    if (memory) // still under its limit
      BOOST_TEST(read_text(own / "memory.max") == std::to_string(64 << 20) + "\n");
  }
  BOOST_TEST(wait_until([&] { return ::rmdir(own.c_str()) == 0; }));
  BOOST_TEST(::rmdir(base.c_str()) == 0);
}

BOOST_AUTO_TEST_CASE(v2_leaves_a_process_in_a_cgroup_of_its_own_making_where_it_is) {
  // A process in a v2 cgroup that is neither groved's nor a component's own (a scope, a
  // cgroup it made): a leaf would take it out of there for good, so it is stopped instead.
  auto dir = v2_dir();
  if (dir.empty())
    return;
  auto host = cgroup_host::probe();
  auto elsewhere = dir / ("grove-freezer-test-" + std::to_string(::getpid()));
  BOOST_REQUIRE(!cgroup_mkdir(elsewhere));
  {
    counter c;
    BOOST_REQUIRE(!cgroup_write(elsewhere / "cgroup.procs", std::to_string(c.pid)));
    BOOST_REQUIRE(c.runs());
    forced f{"v2"};
    component_freezer fz;
    BOOST_REQUIRE(!fz.freeze("comp", [&] { return c.held(); }));
    BOOST_TEST(c.v2_cgroup(host.v2_mount) == elsewhere); // not moved
    BOOST_TEST(!fs::exists(dir / ("grove-freeze-" + std::to_string(::getpid())) / "comp"));
    BOOST_TEST(wait_until([&] { return c.state() == 'T'; }));
    BOOST_TEST(c.still());
    BOOST_REQUIRE(!fz.thaw("comp", c.held()));
    BOOST_TEST(c.runs());
    BOOST_TEST(c.v2_cgroup(host.v2_mount) == elsewhere);
  }
  BOOST_TEST(wait_until([&] { return ::rmdir(elsewhere.c_str()) == 0; }));
}

BOOST_AUTO_TEST_CASE(the_signal_fallback_stops_and_continues) {
  counter c;
  BOOST_REQUIRE(c.runs());
  forced f{"signal"};
  component_freezer fz;
  BOOST_TEST(fz.describe().starts_with("SIGSTOP/SIGCONT ("), fz.describe());
  BOOST_REQUIRE(!fz.freeze("comp", [&] { return c.held(); }));
  // Answered once stopped, or after a second (a loaded machine): stopped soon in any case.
  BOOST_TEST(wait_until([&] { return c.state() == 'T'; }));
  BOOST_TEST(c.still());
  BOOST_REQUIRE(!fz.thaw("comp", c.held()));
  BOOST_TEST(c.runs());
  BOOST_TEST(c.state() != 'T');
}

BOOST_AUTO_TEST_CASE(a_new_freezer_thaws_what_a_dead_groved_left_frozen) {
  auto dir = v2_dir();
  if (dir.empty())
    return;
  auto host = cgroup_host::probe();
  auto dead = std::to_string(dead_pid());
  // What a groved killed with -9 leaves: its freeze leaf and a component's own cgroup,
  // both frozen, each with a process in it.
  auto leaf_top = dir / ("grove-freeze-" + dead);
  auto own_top = dir / (std::string{component_cgroups_prefix} + dead);
  for (const auto& d : {leaf_top, leaf_top / "comp", own_top, own_top / "comp"})
    BOOST_REQUIRE(!cgroup_mkdir(d));
  {
    counter in_leaf, in_own;
    BOOST_REQUIRE(!cgroup_write(leaf_top / "comp" / "cgroup.procs", std::to_string(in_leaf.pid)));
    BOOST_REQUIRE(!cgroup_write(own_top / "comp" / "cgroup.procs", std::to_string(in_own.pid)));
    for (const auto& g : {leaf_top / "comp", own_top / "comp"}) {
      BOOST_REQUIRE(!cgroup_write(g / "cgroup.freeze", "1"));
      BOOST_REQUIRE(wait_until([&] { return v2_frozen(g); }));
    }
    BOOST_REQUIRE(in_leaf.still() && in_own.still());
    component_freezer fz; // the next groved's (any backend: all are thawed)
    BOOST_TEST(!v2_frozen(leaf_top / "comp"));
    BOOST_TEST(!v2_frozen(own_top / "comp"));
    BOOST_TEST(in_leaf.runs());
    BOOST_TEST(in_own.runs());
    // component_cgroups removes its own (killing what is left); the freeze leaf is the
    // freezer's, removed once empty.
    BOOST_TEST(fs::exists(own_top / "comp"));
  }
  BOOST_TEST(wait_until([&] { return ::rmdir((own_top / "comp").c_str()) == 0; }));
  BOOST_TEST(::rmdir(own_top.c_str()) == 0);
  // The leaf held a live process at the freezer's start: it stays (thawed) for a later
  // start, and goes with it.
  BOOST_TEST(wait_until([&] {
    component_freezer again;
    return !fs::exists(leaf_top);
  }));
}

BOOST_AUTO_TEST_CASE(the_signal_fallback_signals_no_pid_given_to_another_process) {
  // The runner holds each process by a pidfd: a listed process that has ended may have
  // its pid given to another (here: the counter's) by the time it is signalled. Neither
  // SIGSTOP nor SIGCONT reaches that one.
  counter c;
  BOOST_REQUIRE(c.runs());
  forced f{"signal"};
  component_freezer fz;
  BOOST_REQUIRE(!fz.freeze("comp", [&] { return c.reused(); }));
  BOOST_TEST(c.state() != 'T');
  BOOST_TEST(c.runs());
  // Stopped by someone else: a resume through the ended one's pidfd leaves it stopped.
  ::kill(c.pid, SIGSTOP);
  BOOST_REQUIRE(wait_until([&] { return c.state() == 'T'; }));
  BOOST_REQUIRE(!fz.thaw("comp", c.reused()));
  BOOST_TEST(c.state() == 'T');
  BOOST_TEST(c.still());
  ::kill(c.pid, SIGCONT);
}

BOOST_AUTO_TEST_CASE(v2_a_leaf_goes_once_its_processes_have) {
  // Not left for the next groved's start: a paused component's leaf goes when it is
  // thawed with its processes gone (the runner's resume, or the state their end brings),
  // and a resumed one's when the runner has reaped them (remove()).
  auto dir = v2_dir();
  if (dir.empty())
    return;
  auto host = cgroup_host::probe();
  forced f{"v2"};
  component_freezer fz;
  auto top = dir / ("grove-freeze-" + std::to_string(::getpid()));
  auto leaf = top / "comp";
  {
    counter c;
    BOOST_REQUIRE(c.runs());
    BOOST_REQUIRE(!fz.freeze("comp", [&] { return c.held(); }));
    BOOST_REQUIRE(c.v2_cgroup(host.v2_mount) == leaf);
    BOOST_REQUIRE(c.still());
  } // killed while paused (SIGKILL ends a v2-frozen process) and reaped
  BOOST_REQUIRE(wait_until([&] { return !populated(leaf); })); // the kernel's word: empty
  BOOST_REQUIRE(!fz.thaw("comp", {}));
  BOOST_TEST(!fs::exists(leaf));
  BOOST_TEST(!fs::exists(top));
  {
    counter c;
    BOOST_REQUIRE(c.runs());
    BOOST_REQUIRE(!fz.freeze("comp", [&] { return c.held(); }));
    BOOST_REQUIRE(!fz.thaw("comp", c.held()));
    BOOST_TEST(c.runs());
    BOOST_TEST(c.v2_cgroup(host.v2_mount) == leaf); // resumed where it was paused
    BOOST_TEST(!fz.remove("comp"));                 // it still lives there
    BOOST_TEST(fs::exists(leaf));
  }
  BOOST_REQUIRE(wait_until([&] { return !populated(leaf); }));
  BOOST_TEST(fz.remove("comp"));
  BOOST_TEST(!fs::exists(top));
}

BOOST_AUTO_TEST_CASE(v2_freezes_a_component_in_groveds_leaf_in_a_leaf_of_its_own) {
  // Once groved enabled controllers in its v2 cgroup (a component with limits, a function
  // sandbox: cgroup_enable) it lives in the leaf `groved` below it, and so do the
  // components it starts without limits: taken into a freeze leaf as from its own cgroup,
  // not left to SIGSTOP.
  auto dir = v2_dir();
  if (dir.empty())
    return;
  auto host = cgroup_host::probe();
  auto leaf = dir / "groved";
  std::error_code ec;
  bool made = !fs::exists(leaf, ec);
  BOOST_REQUIRE(!cgroup_mkdir(leaf));
  {
    counter c;
    BOOST_REQUIRE(!cgroup_write(leaf / "cgroup.procs", std::to_string(c.pid)));
    BOOST_REQUIRE(c.runs());
    forced f{"v2"};
    component_freezer fz;
    BOOST_REQUIRE(!fz.freeze("comp", [&] { return c.held(); }));
    auto group = c.v2_cgroup(host.v2_mount);
    BOOST_TEST(group == dir / ("grove-freeze-" + std::to_string(::getpid())) / "comp");
    BOOST_TEST(v2_frozen(group), read_text(group / "cgroup.events"));
    BOOST_TEST(c.state() != 'T'); // frozen, not stopped
    BOOST_TEST(c.still());
    BOOST_REQUIRE(!fz.thaw("comp", c.held()));
    BOOST_TEST(c.runs());
    ::kill(c.pid, SIGKILL);
    ::waitpid(c.pid, nullptr, 0);
    BOOST_TEST(wait_until([&] {
      fz.remove("comp");
      return !fs::exists(group);
    }));
  }
  if (made)
    BOOST_TEST(wait_until([&] { return ::rmdir(leaf.c_str()) == 0; }));
}
