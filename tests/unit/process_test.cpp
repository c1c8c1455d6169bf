#define BOOST_TEST_MODULE process_test
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include <fcntl.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>

#include <spdlog/spdlog.h>

#include "grove/cgroup.hpp"
#include "grove/kernel/kernel.hpp"
#include "grove/process.hpp"
#include "../support/process_recorder.hpp"
#include "test_util.hpp"

// grove::process with real children (/bin/sh, cat, ls): exit codes and signal names,
// output in the log, SIGTERM then SIGKILL, restart with back-off then giving up,
// parent death, the reset signal state and descriptors; and through a plugin
// (tests/plugins/process_plugin.cpp): events on the plugin's actor, context::post,
// run_blocking, and a child handed to the next instance across a hot reload.

using namespace grove;
using namespace std::chrono_literals;

// groved blocks its stop signals (for sigwait) and ignores SIGPIPE before any thread
// starts; the suite does the same so every thread, the supervisor's included, has them.
using groved_signals = test::groved_process_signals;
BOOST_TEST_GLOBAL_FIXTURE(groved_signals);

namespace {

using recorder = test::process_recorder;

process_options sh(const std::string& script) {
  process_options o;
  o.argv = {"sh", "-c", script};
  return o;
}

process start_ok(recorder& r, process_options o) {
  auto p = process::start(r.owner(), std::move(o), r.callbacks());
  BOOST_REQUIRE_MESSAGE(p, (p ? std::string{} : describe(p.error())));
  return std::move(*p);
}

// A pid is gone when /proc has no entry or only a zombie nobody reaped yet.
bool gone(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  if (!std::getline(in, line))
    return true;
  auto close = line.rfind(')');
  return close != std::string::npos && line.size() > close + 2 && line[close + 2] == 'Z';
}

} // namespace

BOOST_AUTO_TEST_CASE(exit_code_is_reported) {
  recorder r;
  auto p = start_ok(r, sh("exit 3"));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  auto ex = r.exit(0);
  BOOST_TEST(ex.code == 3);
  BOOST_TEST(ex.signal == 0);
  BOOST_TEST(!ex.requested);
  BOOST_TEST(!ex.restarting);
  BOOST_TEST(ex.describe() == "exited with code 3");
  BOOST_TEST(p.status().last_exit == "exited with code 3");
  BOOST_TEST(!p.running());
}

BOOST_AUTO_TEST_CASE(signal_name_is_reported) {
  recorder r;
  // SIGUSR1's default action ends the process: the disposition was reset to default.
  auto p = start_ok(r, sh("kill -USR1 $$; sleep 5"));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  auto ex = r.exit(0);
  BOOST_TEST(ex.signal == SIGUSR1);
  BOOST_TEST(ex.signal_name == "SIGUSR1");
  BOOST_TEST(ex.code == -1);
  BOOST_TEST(ex.describe() == "killed by signal 10 (SIGUSR1)");
}

BOOST_AUTO_TEST_CASE(output_lines_reach_the_log_with_their_prefix) {
  recorder r;
  auto o = sh("echo first line; echo to stderr >&2; printf 'no newline'");
  o.log_prefix = "kid: ";
  auto p = start_ok(r, std::move(o));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.sink->has("kid: first line"));
  BOOST_TEST(r.sink->has("kid: to stderr"));
  BOOST_TEST(r.sink->has("kid: no newline"));
  auto out = r.lines(output_stream::out);
  auto err = r.lines(output_stream::err);
  BOOST_TEST(out == (std::vector<std::string>{"first line", "no newline"}));
  BOOST_TEST(err == (std::vector<std::string>{"to stderr"}));
}

BOOST_AUTO_TEST_CASE(output_an_owner_does_not_take_is_bounded_and_counted) {
  // The owner's "actor" takes nothing until the child is gone: a child flooding its
  // stdout (30 MB in 300 000 lines) must not queue all of it there. What is queued stays
  // within about 1 MiB, and every line is either delivered or counted as dropped.
  recorder r;
  std::mutex mtx;
  std::deque<std::function<void()>> mailbox;
  process_owner owner;
  owner.post = [&](std::function<void()> f) {
    std::lock_guard guard{mtx};
    mailbox.push_back(std::move(f));
  };
  owner.log = r.log;
  constexpr size_t lines = 300000;
  auto o = sh("head -c " + std::to_string(lines * 99) + " /dev/zero | tr '\\0' x | fold -w 99");
  o.stdout_level = output_level::off;
  // on_dropped gets the same counts as the notes (on the owner's "actor", like them).
  uint64_t counted = 0;
  auto cb = r.callbacks();
  cb.on_dropped = [&](output_stream which, uint64_t n) {
    BOOST_TEST((which == output_stream::out));
    counted += n;
  };
  auto p = process::start(owner, std::move(o), std::move(cb));
  BOOST_REQUIRE_MESSAGE(p, (p ? std::string{} : describe(p.error())));
  auto pid = p->pid();
  BOOST_REQUIRE(test::wait_until([&] { return gone(pid); }, std::chrono::seconds{120}));
  auto run_mail = [&] {
    std::deque<std::function<void()>> batch;
    {
      std::lock_guard guard{mtx};
      batch.swap(mailbox);
    }
    for (auto& f : batch)
      f();
    return batch.size();
  };
  // What waited while the child wrote: bounded (a line costs its text and an overhead).
  size_t waiting = 0;
  {
    std::lock_guard guard{mtx};
    waiting = mailbox.size();
  }
  BOOST_TEST(waiting * 100 <= 1024u * 1024u + 64u * 1024u, waiting << " posted");
  BOOST_REQUIRE(test::wait_until([&] {
    run_mail();
    return r.exit_count() == 1;
  }));
  size_t delivered = 0;
  uint64_t dropped = 0;
  for (auto& l : r.lines(output_stream::out)) {
    if (l == std::string(99, 'x')) {
      ++delivered;
    } else if (l.starts_with("[grove: ")) {
      dropped += std::stoull(l.substr(8));
      BOOST_TEST(l.find(" lines of stdout dropped here") != std::string::npos, l);
    } else {
      BOOST_TEST(false, "unexpected line " << l.substr(0, 120));
    }
  }
  BOOST_TEST(dropped > 0u);
  BOOST_TEST(delivered + dropped == lines);
  BOOST_TEST(counted == dropped);
}

BOOST_AUTO_TEST_CASE(stop_sends_sigterm) {
  recorder r;
  auto p = start_ok(r, sh("echo ready; while :; do sleep 0.05; done"));
  BOOST_REQUIRE(test::wait_until([&] { return r.has_line("ready"); }));
  p.stop();
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.exit(0).signal_name == "SIGTERM");
  BOOST_TEST(r.exit(0).requested);
}

BOOST_AUTO_TEST_CASE(a_child_that_ignores_sigterm_gets_sigkill_after_the_grace) {
  recorder r;
  auto p = start_ok(r, sh("trap '' TERM; echo ready; while :; do sleep 0.05; done"));
  BOOST_REQUIRE(test::wait_until([&] { return r.has_line("ready"); }));
  p.stop(SIGTERM, 100ms);
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.exit(0).signal_name == "SIGKILL");
  BOOST_TEST(r.exit(0).requested);
  BOOST_TEST(!r.exit(0).restarting);
}

BOOST_AUTO_TEST_CASE(restarts_with_back_off_then_gives_up) {
  recorder r;
  auto o = sh("echo run; exit 1");
  o.restart = true;
  o.policy.max_failures = 3;
  o.policy.window = std::chrono::seconds{600};
  o.policy.backoff_initial = 10ms;
  o.policy.backoff_max = 1000ms;
  auto p = start_ok(r, std::move(o));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 3; }));
  BOOST_TEST(r.exit(0).restarting);
  BOOST_TEST(r.exit(0).restart_in == 10ms);
  BOOST_TEST(r.exit(1).restarting);
  BOOST_TEST(r.exit(1).restart_in == 20ms); // doubled
  BOOST_TEST(!r.exit(2).restarting);
  BOOST_TEST(r.exit(2).gave_up);
  auto st = p.status();
  BOOST_TEST(st.restarts == 2u);
  BOOST_TEST(st.gave_up);
  BOOST_TEST(!st.running);
  BOOST_TEST(r.lines(output_stream::out).size() == 3u);
  std::lock_guard guard{r.mtx};
  BOOST_TEST(r.starts.size() == 3u);
}

BOOST_AUTO_TEST_CASE(a_stopped_child_is_not_restarted) {
  recorder r;
  auto o = sh("echo ready; exec sleep 100");
  o.restart = true;
  auto p = start_ok(r, std::move(o));
  BOOST_REQUIRE(test::wait_until([&] { return r.has_line("ready"); }));
  p.stop();
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.exit(0).requested);
  BOOST_TEST(!r.exit(0).restarting);
  BOOST_TEST(p.status().restarts == 0u);
}

BOOST_AUTO_TEST_CASE(signal_mask_and_dispositions_are_reset) {
  // This thread (and so the supervisor) blocks SIGINT/SIGTERM/SIGHUP and ignores
  // SIGPIPE, like groved; the child must start clean or its parent-death SIGTERM
  // would never act.
  sigset_t cur;
  pthread_sigmask(SIG_BLOCK, nullptr, &cur);
  BOOST_REQUIRE(sigismember(&cur, SIGTERM));
  recorder r;
  process_options o;
  o.argv = {"cat", "/proc/self/status"};
  auto p = start_ok(r, std::move(o));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.has_line("SigBlk:\t0000000000000000"));
  BOOST_TEST(r.has_line("SigIgn:\t0000000000000000"));
}

BOOST_AUTO_TEST_CASE(only_passed_descriptors_are_inherited) {
  // Without O_CLOEXEC, as a careless library would open them.
  int leaked = ::open("/dev/null", O_RDONLY);
  int pass[2];
  BOOST_REQUIRE(::pipe(pass) == 0);
  BOOST_REQUIRE(leaked >= 0);
  recorder r;
  process_options o;
  o.argv = {"ls", "-1", "/proc/self/fd"};
  o.pass_fds = {{pass[1], 5}};
  auto p = start_ok(r, std::move(o));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  auto lines = r.lines(output_stream::out);
  std::set<std::string> fds(lines.begin(), lines.end());
  // 0-2, the passed 5, and 3: ls's own handle on /proc/self/fd (the lowest free one,
  // so nothing else sits at 3 either).
  BOOST_TEST((fds == std::set<std::string>{"0", "1", "2", "3", "5"}));
  ::close(leaked);
  ::close(pass[0]);
  ::close(pass[1]);
}

BOOST_AUTO_TEST_CASE(passed_descriptor_works_in_the_child) {
  int fds[2];
  BOOST_REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  recorder r;
  auto o = sh("echo through-fd-3 >&3");
  o.pass_fds = {{fds[1], 3}};
  auto p = start_ok(r, std::move(o));
  ::close(fds[1]);
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  char buf[64] = {};
  auto n = ::read(fds[0], buf, sizeof(buf) - 1);
  ::close(fds[0]);
  BOOST_TEST(std::string(buf, n > 0 ? n : 0) == "through-fd-3\n");
}

BOOST_AUTO_TEST_CASE(environment_and_working_directory) {
  test::temp_dir dir;
  recorder r;
  auto o = sh("echo \"x=$GROVE_X home=${HOME:-unset}\"; pwd");
  o.env = std::vector<std::string>{"GROVE_X=42", "PATH=/usr/bin:/bin"};
  o.cwd = dir.path();
  auto p = start_ok(r, std::move(o));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  auto out = r.lines(output_stream::out);
  BOOST_REQUIRE(out.size() == 2u);
  BOOST_TEST(out[0] == "x=42 home=unset");
  BOOST_TEST(std::filesystem::equivalent(out[1], dir.path()));
}

BOOST_AUTO_TEST_CASE(own_process_group) {
  recorder r;
  auto p = start_ok(r, sh("echo ready; exec sleep 100"));
  BOOST_REQUIRE(test::wait_until([&] { return r.has_line("ready"); }));
  BOOST_TEST(::getpgid(p.pid()) == p.pid());
  BOOST_TEST(::getpgid(p.pid()) != ::getpgid(0));
}

BOOST_AUTO_TEST_CASE(pre_exec_hook_runs_in_the_child_and_can_refuse) {
  recorder r;
  auto cb = r.callbacks();
  cb.pre_exec = [] {
    static constexpr char msg[] = "from the hook\n";
    return ::write(1, msg, sizeof(msg) - 1) > 0 ? 0 : EIO;
  };
  auto p = process::start(r.owner(), sh("echo after exec"), cb);
  BOOST_REQUIRE(p);
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.lines(output_stream::out)
             == (std::vector<std::string>{"from the hook", "after exec"}));

  auto refuse = r.callbacks();
  refuse.pre_exec = [] { return EPERM; };
  auto q = process::start(r.owner(), sh("echo never"), refuse);
  BOOST_REQUIRE(!q);
  BOOST_TEST(describe(q.error()).find("pre-exec hook") != std::string::npos,
             describe(q.error()));
}

BOOST_AUTO_TEST_CASE(user_and_group_switch) {
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("not root: uid/gid switch not testable here");
    BOOST_TEST(true);
    return;
  }
  recorder r;
  auto o = sh("id -u; id -g");
  o.uid = 65534;
  o.gid = 65534;
  auto p = start_ok(r, std::move(o));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.lines(output_stream::out) == (std::vector<std::string>{"65534", "65534"}));
}

// -- process_options::sandbox ------------------------------------------------------

namespace {

/// A sandbox with the host's system read-only, a private /tmp and its own /proc.
process_options sandboxed(const std::string& script, const std::filesystem::path& root_base) {
  auto o = sh(script);
  o.uid = 65534;
  o.gid = 65534;
  auto sb = test::host_system_sandbox(root_base);
  sb.hostname = "boxed";
  sandbox_mount tmp;
  tmp.type = sandbox_mount::kind::tmpfs;
  tmp.target = "/tmp";
  tmp.read_only = false;
  tmp.data = "size=64k,mode=1777";
  sb.mounts.push_back(tmp);
  o.sandbox = std::move(sb);
  return o;
}

// The sandbox tests need root (the id maps); they say so and check nothing else.
bool sandbox_skipped() {
  if (::geteuid() == 0)
    return false;
  BOOST_TEST_MESSAGE("skipped: process sandboxes need root");
  return true;
}

} // namespace

BOOST_AUTO_TEST_CASE(a_sandboxed_child_has_its_namespaces_root_and_ids,
                     *boost::unit_test::precondition([](auto) { return !sandbox_skipped(); })) {
  test::temp_dir dir;
  recorder r;
  auto o = sandboxed("echo pid=$$; cat /proc/sys/kernel/hostname; id -u; id -g; ls /; "
                     "touch /escape 2>/dev/null || echo root-ro; "
                     "touch /usr/escape 2>/dev/null || echo usr-ro; "
                     "echo x > /tmp/x && cat /tmp/x; grep -c . /proc/self/status >/dev/null "
                     "&& echo proc; grep CapEff /proc/self/status; "
                     "grep NoNewPrivs /proc/self/status",
                     dir.path());
  auto p = start_ok(r, std::move(o));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.exit(0).code == 0);
  auto out = r.lines(output_stream::out);
  std::string all;
  for (auto& l : out)
    all += l + "|";
  // PID 2 of its own PID namespace: PID 1 there is the namespace's holder, so the child
  // is not an init the kernel shields from signals.
  BOOST_TEST(all.find("pid=2|boxed|65534|65534|") == 0, all);
  // Only what was mounted: no home, no root's files, no write directory.
  BOOST_TEST(all.find("|home|") == std::string::npos, all);
  BOOST_TEST(all.find("|root|") == std::string::npos, all);
  BOOST_TEST(all.find("|tmp|") != std::string::npos, all);
  BOOST_TEST(all.find("|root-ro|usr-ro|x|proc|") != std::string::npos, all);
  BOOST_TEST(all.find("CapEff:\t0000000000000000|NoNewPrivs:\t1|") != std::string::npos, all);
}

BOOST_AUTO_TEST_CASE(a_sandboxed_child_inherits_only_its_standard_descriptors,
                     *boost::unit_test::precondition([](auto) { return !sandbox_skipped(); })) {
  // Without O_CLOEXEC, as a careless library would open them; the sandbox's own
  // descriptors (its user namespace, cgroup and hand-over) must not reach it either.
  int leaked = ::open("/dev/null", O_RDONLY);
  BOOST_REQUIRE(leaked >= 0);
  test::temp_dir dir;
  recorder r;
  auto p = start_ok(r, sandboxed("ls -1 /proc/self/fd", dir.path()));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.exit(0).code == 0);
  auto lines = r.lines(output_stream::out);
  std::set<std::string> fds(lines.begin(), lines.end());
  // 0-2, and 3: ls's own handle on /proc/self/fd (the lowest free one).
  BOOST_TEST((fds == std::set<std::string>{"0", "1", "2", "3"}));
  ::close(leaked);
}

BOOST_AUTO_TEST_CASE(a_sandboxed_start_leaves_groveds_dumpable_flag_as_it_was,
                     *boost::unit_test::precondition([](auto) { return !sandbox_skipped(); })) {
  // A child sharing groved's memory until its exec changes its ids, and the kernel then
  // sets that memory's dumpable flag to fs.suid_dumpable. Both values are tried, so one
  // differs from fs.suid_dumpable whatever it is.
  auto before = ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
  BOOST_REQUIRE(before >= 0);
  test::temp_dir dir;
  for (int flag : {1, 0}) {
    BOOST_REQUIRE(::prctl(PR_SET_DUMPABLE, flag, 0, 0, 0) == 0);
    recorder r;
    auto p = start_ok(r, sandboxed("id -u", dir.path()));
    BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
    BOOST_TEST(r.lines(output_stream::out) == (std::vector<std::string>{"65534"}));
    BOOST_TEST(::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == flag, "set to " << flag);
  }
  ::prctl(PR_SET_DUMPABLE, before == 0 ? 0 : 1, 0, 0, 0);
}

BOOST_AUTO_TEST_CASE(a_sandboxed_childs_pre_exec_hook_writes_its_own_memory,
                     *boost::unit_test::precondition([](auto) { return !sandbox_skipped(); })) {
  // A hook may write a static: in a child sharing groved's memory that would be groved's.
  static volatile int written = 0;
  test::temp_dir dir;
  recorder r;
  auto cb = r.callbacks();
  cb.pre_exec = [] {
    written = 1;
    return 0;
  };
  auto p = process::start(r.owner(), sandboxed("echo ran", dir.path()), cb);
  BOOST_REQUIRE_MESSAGE(p, (p ? std::string{} : describe(p.error())));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.lines(output_stream::out) == (std::vector<std::string>{"ran"}));
  BOOST_TEST(written == 0);
}

BOOST_AUTO_TEST_CASE(sandboxed_children_share_only_the_user_namespace_of_their_ids,
                     *boost::unit_test::precondition([](auto) { return !sandbox_skipped(); })) {
  // The user namespace is made once per set of ids and joined; mount, PID, IPC and UTS
  // are new for each child (and none is the host's). The children stay until the end:
  // a namespace's number is reused once it is gone.
  test::temp_dir dir;
  auto script = "for n in user mnt pid ipc uts; do echo $n=$(readlink /proc/self/ns/$n); "
                "done; cat /proc/self/uid_map /proc/self/gid_map; echo done; exec sleep 600";
  auto words = [](const std::string& line) { // "  65534   65534 1" -> "65534 65534 1"
    std::istringstream in{line};
    std::string w, out;
    while (in >> w)
      out += (out.empty() ? "" : " ") + w;
    return out;
  };
  std::deque<recorder> recorders; // outlive the handles, which stop the children
  std::vector<process> running;
  auto run = [&](std::vector<gid_t> groups) {
    auto& r = recorders.emplace_back();
    auto o = sandboxed(script, dir.path());
    o.groups = std::move(groups);
    running.push_back(start_ok(r, std::move(o)));
    auto lines = [&] { return r.lines(output_stream::out); };
    BOOST_REQUIRE(test::wait_until([&] {
      auto l = lines();
      return !l.empty() && l.back() == "done";
    }));
    std::map<std::string, std::string> ns;
    std::string maps;
    for (auto& l : lines())
      if (auto eq = l.find('='); eq != std::string::npos)
        ns[l.substr(0, eq)] = l.substr(eq + 1);
      else if (l != "done")
        maps += words(l) + "|";
    return std::pair{ns, maps};
  };
  auto [a, a_maps] = run({});
  auto [b, b_maps] = run({});
  auto [c, c_maps] = run({4242});
  // Only the ids, 1:1.
  BOOST_TEST(a_maps == "65534 65534 1|65534 65534 1|", a_maps);
  BOOST_TEST(c_maps == "65534 65534 1|4242 4242 1|65534 65534 1|", c_maps);
  for (auto n : {"user", "mnt", "pid", "ipc", "uts"}) {
    std::error_code ec;
    auto host = std::filesystem::read_symlink(std::filesystem::path{"/proc/self/ns"} / n, ec)
                  .string();
    BOOST_REQUIRE_MESSAGE(!a[n].empty() && !b[n].empty() && !c[n].empty(), n);
    BOOST_TEST(a[n] != host, n);
    BOOST_TEST(c[n] != host, n);
    if (std::string_view{n} == "user") {
      BOOST_TEST(a[n] == b[n]); // the same ids: joined
      BOOST_TEST(a[n] != c[n]); // another group mapped: its own
    } else {
      BOOST_TEST(a[n] != b[n], n);
      BOOST_TEST(a[n] != c[n], n);
    }
  }
}

BOOST_AUTO_TEST_CASE(a_sandboxed_child_has_a_devpts_of_its_own,
                     *boost::unit_test::precondition([](auto) { return !sandbox_skipped(); })) {
  // A pty of the host (index 0 at least) that the child must not see.
  int host_pty = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  BOOST_REQUIRE(host_pty >= 0);
  test::temp_dir dir;
  recorder r;
  auto o = sandboxed("ls -A /dev/pts; python3 -c 'import os; m, s = os.openpty(); "
                     "print(os.ttyname(s)); print(*sorted(os.listdir(\"/dev/pts\")))'",
                     dir.path());
  sandbox_mount pts;
  pts.type = sandbox_mount::kind::devpts;
  pts.target = "/dev/pts";
  pts.data = "max=4";
  o.sandbox->mounts.push_back(pts);
  sandbox_mount ptmx;
  ptmx.type = sandbox_mount::kind::symlink;
  ptmx.source = "pts/ptmx";
  ptmx.target = "/dev/ptmx";
  o.sandbox->mounts.push_back(ptmx);
  auto p = start_ok(r, std::move(o));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  ::close(host_pty);
  BOOST_TEST(r.exit(0).code == 0);
  // Empty but for ptmx; then the child's own first pty, and nothing else.
  BOOST_TEST(r.lines(output_stream::out)
             == (std::vector<std::string>{"ptmx", "/dev/pts/0", "0 ptmx"}));
}

BOOST_AUTO_TEST_CASE(a_sandbox_root_is_open_to_its_user_under_umask_077,
                     *boost::unit_test::precondition([](auto) { return !sandbox_skipped(); })) {
  // groved runs with umask 077: the root skeleton made then must still let the child's
  // user (65534 here) enter / and run programs (its modes were once the umask's, and
  // every exec in a sandbox under groved failed with EACCES).
  test::temp_dir dir;
  recorder r;
  auto old = ::umask(077);
  auto o = sandboxed("ls / >/dev/null && echo entered", dir.path());
  auto p = start_ok(r, std::move(o));
  ::umask(old);
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.exit(0).code == 0);
  BOOST_TEST(r.lines(output_stream::out) == (std::vector<std::string>{"entered"}));
}

namespace fs = std::filesystem;

BOOST_AUTO_TEST_CASE(a_sandboxed_child_starts_in_its_v1_and_v2_cgroups,
                     *boost::unit_test::precondition([](auto) { return !sandbox_skipped(); })) {
  // v1 (a `tasks` file): the child joins by itself; v2: clone3 puts it there at birth.
  // Whichever hierarchies this machine has writable (a v2 one without controllers will
  // do: membership is what is checked).
  std::vector<std::pair<std::string, fs::path>> made; // /proc/self/cgroup line, directory
  auto tag = "grove-process-test-" + std::to_string(::getpid());
  for (const auto& m : cgroup_mounts()) {
    bool v2 = m.type == "cgroup2";
    if (!v2 && std::find(m.options.begin(), m.options.end(), "pids") == m.options.end())
      continue;
    // Below this process's own cgroup there.
    auto own = own_cgroup(v2 ? "" : "pids");
    if (!own)
      continue;
    auto dir = cgroup_under(m.point, *own) / tag;
    std::error_code ec;
    if (!fs::create_directory(dir, ec) || ec)
      continue;
    made.emplace_back((v2 ? "0::" : ":pids:") + (fs::path{*own} / tag).string(), dir);
  }
  BOOST_REQUIRE_MESSAGE(!made.empty(), "no writable cgroup hierarchy");
  for (auto& [key, d] : made)
    BOOST_TEST_MESSAGE("checking " << key);
  test::temp_dir dir;
  recorder r;
  auto o = sandboxed("cat /proc/self/cgroup", dir.path());
  for (auto& [key, d] : made)
    o.sandbox->cgroup_procs.push_back(d / "cgroup.procs");
  auto p = start_ok(r, std::move(o));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.exit(0).code == 0);
  std::string all;
  for (auto& l : r.lines(output_stream::out))
    all += l + "|";
  for (auto& [key, d] : made) {
    BOOST_TEST(all.find(key + "|") != std::string::npos, key << " not in " << all);
    ::rmdir(d.c_str());
  }
}

BOOST_AUTO_TEST_CASE(a_call_the_sandbox_filter_denies_is_reported,
                     *boost::unit_test::precondition([](auto) { return !sandbox_skipped(); })) {
  // mkdir and mkdirat go to the supervisor; everything else passes.
  auto filtered = [](const std::string& script, const fs::path& root_base) {
    auto o = sandboxed(script, root_base);
    o.sandbox->seccomp = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mkdir, 1, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mkdirat, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    return o;
  };
  {
    // The child itself makes the call: it is ended by SIGSYS, as a seccomp kill would end
    // it, with the call named.
    test::temp_dir dir;
    recorder r;
    auto p = start_ok(r, filtered("echo before; exec mkdir /tmp/d", dir.path()));
    BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
    auto ex = r.exit(0);
    BOOST_TEST((ex.denied_syscall == __NR_mkdir || ex.denied_syscall == __NR_mkdirat),
               ex.denied_syscall);
    BOOST_TEST(ex.signal == SIGSYS);
    BOOST_TEST(ex.describe()
               == "killed by signal " + std::to_string(SIGSYS)
                    + " (SIGSYS): the sandbox denied system call "
                    + std::to_string(ex.denied_syscall));
    BOOST_TEST(r.lines(output_stream::out) == std::vector<std::string>{"before"});
  }
  {
    // A process the child forked makes it: the caller dies by SIGSYS and the child (the
    // instance) is killed, the call named.
    test::temp_dir dir;
    recorder r;
    auto p = start_ok(r, filtered("echo before; mkdir /tmp/d; echo after", dir.path()));
    BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
    auto ex = r.exit(0);
    BOOST_TEST((ex.denied_syscall == __NR_mkdir || ex.denied_syscall == __NR_mkdirat),
               ex.denied_syscall);
    BOOST_TEST(ex.signal == SIGKILL);
    BOOST_TEST(r.lines(output_stream::out) == std::vector<std::string>{"before"});
  }
}

BOOST_AUTO_TEST_CASE(a_sandbox_needs_ids_and_names_its_failing_step,
                     *boost::unit_test::precondition([](auto) { return !sandbox_skipped(); })) {
  test::temp_dir dir;
  recorder r;
  auto o = sandboxed("true", dir.path());
  o.uid.reset();
  auto p = process::start(r.owner(), o, r.callbacks());
  BOOST_REQUIRE(!p);
  BOOST_TEST(describe(p.error()).find("a sandbox needs uid and gid") != std::string::npos);
  // Root inside would be host root (the ids are mapped 1:1): refused, uid or gid.
  for (auto [uid, gid] : {std::pair{0u, 65534u}, std::pair{65534u, 0u}}) {
    o = sandboxed("true", dir.path());
    o.uid = uid;
    o.gid = gid;
    p = process::start(r.owner(), o, r.callbacks());
    BOOST_REQUIRE(!p);
    BOOST_TEST(describe(p.error()).find("never runs as uid or gid 0") != std::string::npos,
               describe(p.error()));
  }
  // Nor with root's group among the supplementary ones.
  o = sandboxed("true", dir.path());
  o.groups = {4242, 0};
  p = process::start(r.owner(), o, r.callbacks());
  BOOST_REQUIRE(!p);
  BOOST_TEST(describe(p.error()).find("nor with group 0") != std::string::npos,
             describe(p.error()));
  // A tmpfs with options the kernel refuses: the error names the step.
  o = sandboxed("true", dir.path());
  for (auto& m : o.sandbox->mounts)
    if (m.type == sandbox_mount::kind::tmpfs)
      m.data = "size=nonsense";
  p = process::start(r.owner(), o, r.callbacks());
  BOOST_REQUIRE(!p);
  BOOST_TEST(describe(p.error()).find("cannot enter its sandbox (mount tmpfs on /tmp)")
               != std::string::npos,
             describe(p.error()));
}

BOOST_AUTO_TEST_CASE(sandboxes_of_one_prepared_root_see_none_of_each_others_mounts,
                     *boost::unit_test::precondition([](auto) { return !sandbox_skipped(); })) {
  // Both start from the same prepared root (one layout; the first two starts of a root
  // build it themselves, the root is prepared after the second) and copy it: the first's /tmp (a tmpfs of
  // its own) and its /proc are not the second's, while the first runs.
  test::temp_dir dir;
  for (int i = 0; i < 2; ++i) {
    recorder r;
    auto p = start_ok(r, sandboxed("true", dir.path()));
    BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  }
  recorder first;
  auto a = start_ok(first, sandboxed("echo mine > /tmp/first && echo written; exec sleep 600",
                                     dir.path()));
  BOOST_REQUIRE(test::wait_until([&] { return !first.lines(output_stream::out).empty(); }));
  BOOST_REQUIRE(first.lines(output_stream::out) == (std::vector<std::string>{"written"}));
  recorder second;
  auto b = start_ok(second, sandboxed("ls -A /tmp; echo end; ls /proc | grep -c '^[0-9]'; "
                                      "grep -c ' /tmp ' /proc/self/mountinfo",
                                      dir.path()));
  BOOST_REQUIRE(test::wait_until([&] { return second.exit_count() == 1; }));
  // Its own /tmp is empty; its /proc lists the holder, itself and ls's pipeline (its
  // shell forks grep and ls) only: never the first's processes; and one /tmp is
  // mounted where it looks (not the first's too, under or over its own).
  auto out = second.lines(output_stream::out);
  BOOST_REQUIRE(out.size() == 3u);
  BOOST_TEST(out[0] == "end");
  BOOST_TEST(std::stoi(out[1]) <= 4, out[1]);
  BOOST_TEST(out[2] == "1");
  a.stop(SIGKILL, 0ms);
  BOOST_REQUIRE(test::wait_until([&] { return first.exit_count() == 1; }));
}

BOOST_AUTO_TEST_CASE(a_bind_source_made_anew_at_its_path_is_what_the_next_sandbox_sees,
                     *boost::unit_test::precondition([](auto) { return !sandbox_skipped(); })) {
  // The prepared root holds what a bind's source was when it was built: a source
  // removed and made again at the same path (a re-deployed code directory, a device node
  // re-made) must get a new one, not the removed directory.
  test::temp_dir dir;
  auto data = dir.path() / "data";
  auto start = [&](const std::string& content) {
    std::filesystem::create_directories(data);
    std::filesystem::permissions(dir.path(), std::filesystem::perms::owner_all
                                               | std::filesystem::perms::others_exec);
    std::ofstream{data / "f"} << content << '\n';
    std::filesystem::permissions(data / "f", std::filesystem::perms::owner_read
                                               | std::filesystem::perms::others_read);
    auto o = sandboxed("cat /data/f", dir.path() / "roots");
    sandbox_mount m;
    m.source = data;
    m.target = "/data";
    o.sandbox->mounts.push_back(m);
    recorder r;
    auto p = start_ok(r, std::move(o));
    BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
    return r.lines(output_stream::out);
  };
  std::filesystem::create_directories(dir.path() / "roots");
  // The first two starts build their root, the third joins the root prepared after the
  // second.
  for (int i = 0; i < 3; ++i)
    BOOST_TEST(start("one") == (std::vector<std::string>{"one"}), "start " << i);
  std::filesystem::remove_all(data);
  BOOST_TEST(start("two") == (std::vector<std::string>{"two"}));
}

BOOST_AUTO_TEST_CASE(a_sandboxs_new_root_lets_its_old_prepared_root_go,
                     *boost::unit_test::precondition([](auto) { return !sandbox_skipped(); })) {
  // A prepared root is a mount namespace kept open by the supervisor (in this process):
  // when a host name's (a function's) mounts change, its old one must be closed, or it
  // would pin what it binds (a revoked volume's file system) for groved's life.
  test::temp_dir dir;
  auto prepared = [] {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator{"/proc/self/fd"}) {
      std::error_code ec;
      auto to = std::filesystem::read_symlink(e.path(), ec);
      n += !ec && to.string().starts_with("mnt:[") ? 1 : 0;
    }
    return n;
  };
  auto run = [&](bool with_extra) {
    auto o = sandboxed("true", dir.path());
    o.sandbox->hostname = "root-owner";
    if (with_extra) {
      sandbox_mount m;
      m.source = "/usr";
      m.target = "/opt/usr";
      o.sandbox->mounts.push_back(m);
    }
    recorder r;
    auto p = start_ok(r, std::move(o));
    BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  };
  // Each third start joins the root prepared after the second (posted before it).
  for (int i = 0; i < 3; ++i)
    run(false);
  auto before = prepared();
  BOOST_TEST(before >= 1u);
  for (int i = 0; i < 3; ++i)
    run(true);
  BOOST_TEST(prepared() == before);
}

BOOST_AUTO_TEST_CASE(a_missing_program_is_an_error_at_start) {
  recorder r;
  process_options o;
  o.argv = {"/nonexistent/grove-test-program"};
  auto p = process::start(r.owner(), std::move(o));
  BOOST_REQUIRE(!p);
  BOOST_TEST(describe(p.error()).find("cannot execute") != std::string::npos,
             describe(p.error()));
  process_options none;
  none.argv = {"grove-no-such-program-in-path"};
  BOOST_TEST(!process::start(r.owner(), std::move(none)));
}

// An owner checks running() and then binds (a handover across a reload): an exit in
// between, while nobody owned the child, reaches the new owner at bind.
BOOST_AUTO_TEST_CASE(an_exit_while_unowned_reaches_the_next_owner_at_bind) {
  recorder first;
  auto p = start_ok(first, sh("echo ready; exec sleep 100"));
  BOOST_REQUIRE(test::wait_until([&] { return first.has_line("ready"); }));
  p.unbind();
  BOOST_REQUIRE(!p.signal(SIGTERM));
  BOOST_REQUIRE(test::wait_until([&] { return !p.running(); }));
  BOOST_TEST(first.exit_count() == 0u);
  recorder next;
  p.bind(next.owner(), next.callbacks());
  BOOST_REQUIRE(test::wait_until([&] { return next.exit_count() == 1; }));
  BOOST_TEST(next.exit(0).signal == SIGTERM);
  BOOST_TEST(!next.exit(0).requested);
  BOOST_TEST(first.exit_count() == 0u);
}

BOOST_AUTO_TEST_CASE(a_dropped_handle_stops_its_child) {
  recorder r;
  pid_t pid = 0;
  {
    auto p = start_ok(r, sh("echo ready; exec sleep 100"));
    BOOST_REQUIRE(test::wait_until([&] { return r.has_line("ready"); }));
    pid = p.pid();
  }
  BOOST_REQUIRE(pid > 0);
  BOOST_TEST(test::wait_until([&] { return gone(pid); }));
  // The owner let go: no callback reports it.
  BOOST_TEST(r.exit_count() == 0u);
}

BOOST_AUTO_TEST_CASE(child_dies_with_a_killed_parent) {
  // A parent process (sh) runs the helper, whose own grove::process child is `sleep`;
  // kill -9 of the helper must take the sleep with it (parent-death signal).
  recorder r;
  process_options o;
  o.argv = {PROCESS_HELPER};
  auto helper = start_ok(r, std::move(o));
  std::string line;
  BOOST_REQUIRE(test::wait_until([&] { return r.has_line("child "); }));
  pid_t child = 0;
  for (auto& l : r.lines(output_stream::out))
    if (l.rfind("child ", 0) == 0)
      child = std::stoi(l.substr(6));
  BOOST_REQUIRE(child > 0);
  BOOST_REQUIRE(!gone(child));
  BOOST_REQUIRE(!helper.signal(SIGKILL));
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  BOOST_TEST(r.exit(0).signal_name == "SIGKILL");
  BOOST_TEST(test::wait_until([&] { return gone(child); }));
}

// -- through a plugin -------------------------------------------------------------

namespace {

struct plugin_fixture {
  test::temp_dir dir;
  std::unique_ptr<kernel> k;
  std::unique_ptr<test::collector> out;

  plugin_fixture() {
    auto p = test::make_profile(dir.path());
    p.file = dir.write("image.yaml", "kernel: {log_level: warn, worker_threads: 2}\n");
    kernel_options opts;
    opts.control_socket = false;
    opts.log_to_stderr = false;
    k = std::make_unique<kernel>(std::move(p), opts);
    BOOST_REQUIRE(!k->start());
    out = std::make_unique<test::collector>(*k, "test/proc/out");
  }

  void load(const std::string& config) {
    plugin_spec s;
    s.name = "spawner";
    s.config = make_yaml(YAML::Load(config));
    s.file = (dir.path() / "image.yaml").string();
    auto err = k->host().load(s);
    BOOST_REQUIRE_MESSAGE(!err, describe(err));
  }

  // Reports so far, as "what|detail|on-actor".
  std::vector<std::string> reports() {
    std::vector<std::string> r;
    for (auto& m : out->messages())
      r.push_back(m.payload());
    return r;
  }

  // The first report starting with `prefix` after the first `skip` of them.
  std::string wait_report(const std::string& prefix, size_t skip = 0) {
    std::string found;
    test::wait_until([&] {
      size_t seen = 0;
      for (auto& r : reports())
        if (r.rfind(prefix, 0) == 0 && seen++ == skip) {
          found = r;
          return true;
        }
      return false;
    });
    return found;
  }
};

pid_t pid_in(const std::string& report) {
  // "started|fresh 123|-"
  auto a = report.find(' ');
  auto b = report.rfind('|');
  return static_cast<pid_t>(std::stol(report.substr(a + 1, b - a - 1)));
}

} // namespace

BOOST_FIXTURE_TEST_CASE(exit_and_output_arrive_on_the_plugins_actor, plugin_fixture) {
  load("{command: 'echo hello from the child; exit 7', keep: false}");
  BOOST_TEST(wait_report("stdout|") == "stdout|hello from the child|yes");
  BOOST_TEST(wait_report("exit|") == "exit|exited with code 7|yes");
}

BOOST_FIXTURE_TEST_CASE(post_runs_on_the_actor, plugin_fixture) {
  load("{}");
  test::pub(*k, "test/proc/in", "post");
  BOOST_TEST(wait_report("posted|") == "posted||yes");
}

BOOST_FIXTURE_TEST_CASE(run_blocking_works_off_the_actor_and_answers_on_it,
                        plugin_fixture) {
  load("{}");
  test::pub(*k, "test/proc/in", "blocking");
  BOOST_TEST(wait_report("blocking|") == "blocking|work off the actor|yes");
  test::pub(*k, "test/proc/in", "blocking_throws");
  auto r = wait_report("blocking|", 1);
  BOOST_TEST(r.find("disk on fire") != std::string::npos, r);
  BOOST_TEST(r.ends_with("|yes"));
}

BOOST_FIXTURE_TEST_CASE(a_reload_hands_the_child_over, plugin_fixture) {
  load("{command: 'exec sleep 100', keep: true}");
  auto first = wait_report("started|");
  BOOST_REQUIRE(first.rfind("started|fresh ", 0) == 0);
  auto pid = pid_in(first);
  auto res = k->host().reload("spawner");
  BOOST_REQUIRE_MESSAGE(res, test::error_text(res));
  auto second = wait_report("started|", 1);
  BOOST_TEST(second == "started|adopted " + std::to_string(pid) + "|-");
  BOOST_TEST(!gone(pid));
  // The new instance owns it: its exit is reported there.
  test::pub(*k, "test/proc/in", "stop");
  BOOST_TEST(wait_report("exit|") == "exit|killed by signal 15 (SIGTERM) requested|yes");
  BOOST_TEST(test::wait_until([&] { return gone(pid); }));
}

BOOST_FIXTURE_TEST_CASE(a_dropped_child_is_stopped_at_reload, plugin_fixture) {
  load("{command: 'exec sleep 100', keep: false}");
  auto pid = pid_in(wait_report("started|"));
  BOOST_REQUIRE(k->host().reload("spawner"));
  auto second = wait_report("started|", 1);
  BOOST_TEST(second.rfind("started|fresh ", 0) == 0);
  BOOST_TEST(pid_in(second) != pid);
  BOOST_TEST(test::wait_until([&] { return gone(pid); }));
}

BOOST_FIXTURE_TEST_CASE(a_kept_child_nobody_adopts_is_stopped, plugin_fixture) {
  load("{command: 'exec sleep 100', keep: true}");
  auto pid = pid_in(wait_report("started|"));
  // A new configuration the plugin cannot apply live: a reload with it, whose new
  // instance does not adopt.
  plugin_spec s;
  s.name = "spawner";
  s.config = make_yaml(YAML::Load("{command: 'exec sleep 100', keep: true, adopt: false}"));
  s.file = (dir.path() / "image.yaml").string();
  auto res = k->host().reconfigure(s);
  BOOST_REQUIRE_MESSAGE(res, test::error_text(res));
  auto second = wait_report("started|", 1);
  BOOST_TEST(second.rfind("started|fresh ", 0) == 0);
  BOOST_TEST(pid_in(second) != pid);
  BOOST_TEST(test::wait_until([&] { return gone(pid); }));
}

BOOST_FIXTURE_TEST_CASE(unload_stops_the_child, plugin_fixture) {
  load("{command: 'exec sleep 100'}");
  auto pid = pid_in(wait_report("started|"));
  BOOST_REQUIRE(!k->host().unload("spawner"));
  BOOST_TEST(test::wait_until([&] { return gone(pid); }));
}

namespace {

// Resident kB of the mappings of `pid` whose file lies under `root` (/proc/PID/smaps).
size_t resident_kb_under(pid_t pid, const std::string& root) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/smaps"};
  std::string line;
  size_t kb = 0;
  bool inside = false;
  while (std::getline(in, line)) {
    std::istringstream words{line};
    std::string first;
    words >> first;
    if (first.find('-') != std::string::npos && first.back() != ':') {
      inside = line.find(root) != std::string::npos;
    } else if (inside && first == "Rss:") {
      size_t n = 0;
      words >> n;
      kb += n;
    }
  }
  return kb;
}

} // namespace

BOOST_AUTO_TEST_CASE(release_code_pages_pages_out_the_childs_code) {
  // MADV_PAGEOUT leaves a page another process maps: the child runs from a private copy
  // of sleep, whose resident pages, read from outside, must fall while it keeps running
  // (asleep, it touches none of them again). process_madvise needs CAP_SYS_NICE over the
  // child (root, as the tests run here).
  test::temp_dir dir;
  auto copy = dir.path() / "sleep";
  std::filesystem::copy_file("/bin/sleep", copy);
  {
    // Written back first: the OS does not reclaim a dirty page at once.
    int fd = ::open(copy.c_str(), O_RDONLY | O_CLOEXEC);
    BOOST_REQUIRE(fd >= 0 && ::fsync(fd) == 0);
    ::close(fd);
  }
  recorder r;
  process_options o;
  o.argv = {copy.string(), "1000"};
  auto p = start_ok(r, std::move(o));
  auto root = std::filesystem::canonical(dir.path()).string() + "/";
  // Asleep: in nanosleep (/proc/PID/syscall), its start-up done.
  BOOST_REQUIRE(test::wait_until([&] {
    std::ifstream in{"/proc/" + std::to_string(p.pid()) + "/syscall"};
    std::string nr;
    return in >> nr && (nr == std::to_string(SYS_clock_nanosleep)
                        || nr == std::to_string(SYS_nanosleep));
  }));
  auto before = resident_kb_under(p.pid(), root);
  BOOST_REQUIRE_GT(before, 0u);
  auto advised = p.release_code_pages();
  BOOST_REQUIRE_MESSAGE(advised, (advised ? std::string{} : describe(advised.error())));
  BOOST_TEST(*advised >= before * 1024, "advised " << *advised << " bytes");
  auto after = resident_kb_under(p.pid(), root);
  BOOST_TEST(after < before, "private copy resident " << before << " kB -> " << after << " kB");
  BOOST_TEST(p.running()); // and it runs on, faulting back what it touches
  p.stop();
  BOOST_REQUIRE(test::wait_until([&] { return r.exit_count() == 1; }));
  // Without a running child: a clear error, nothing advised.
  auto none = p.release_code_pages();
  BOOST_REQUIRE(!none);
  BOOST_TEST(none.error() == errc::invalid_state);
  BOOST_TEST(!process{}.release_code_pages());
}
