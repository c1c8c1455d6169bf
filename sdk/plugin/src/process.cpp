#include "grove/process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "grove/errors.hpp"
#include "grove/plugin.hpp"
#include "code_mappings.hpp"
#include "process_sandbox.hpp"
#include "allocator.hpp"

extern char** environ;

namespace grove {

namespace detail {

/// One supervised child: options, owner and state. `mtx` guards everything a handle
/// reads or writes; the descriptors and timers belong to the supervisor thread.
struct process_record {
  std::mutex mtx;
  process_options opts;
  std::string program;
  process_callbacks cb;
  process_owner owner;
  // Output keeps going to the last owner's log while nobody owns the child.
  std::shared_ptr<spdlog::logger> log;
  std::string prefix;
  pid_t pid = 0;
  bool running = false;
  bool stop_requested = false;
  uint64_t restarts = 0;
  std::string last_exit;
  std::string started_at;
  bool gave_up = false;
  // release_code_pages() succeeded for the running child: repeated after groved's own
  // release (detail::release_children_code_pages).
  bool code_released = false;
  // An exit nobody owned the child for: posted to the next owner by bind, so an exit
  // between a new owner's running() check and its bind is not lost.
  std::optional<process_exit> unowned_exit;
  // -- supervisor thread only -------------------------------------------------------
  int pidfd = -1;
  int out_fd = -1;
  int err_fd = -1;
  // A sandbox's seccomp listener, and the call it reported.
  int notify_fd = -1;
  int denied_syscall = -1;
  // A sandbox's PID namespace holder (PID 1 there) and its stack; ended with the child.
  pid_t holder_pid = -1;
  void* holder_stack = nullptr;
  std::string out_buf;
  std::string err_buf;
  // Output lines posted to the owner and not yet run there (bytes, shared with the
  // posted closures), and the lines of each stream dropped because that was over
  // max_pending_output_bytes: a child writing faster than its owner takes lines must
  // not grow the owner's mailbox without bound (emit_line).
  std::shared_ptr<std::atomic<size_t>> output_pending =
    std::make_shared<std::atomic<size_t>>(0);
  uint64_t out_dropped = 0;
  uint64_t err_dropped = 0;
  std::optional<std::chrono::steady_clock::time_point> kill_at;
  std::optional<std::chrono::steady_clock::time_point> restart_at;
  failure_tracker failures;
};

} // namespace detail

namespace {

using detail::process_record;
using record_ptr = std::shared_ptr<process_record>;
using clock_type = std::chrono::steady_clock;

constexpr size_t max_line_bytes = 16 * 1024;

// Output of one child posted to its owner and not yet handled there; beyond it lines go
// to the log only, and the owner gets a count of those it missed (emit_line).
constexpr size_t max_pending_output_bytes = 1024 * 1024;

// What a posted line costs besides its text (the closure and the mailbox's element).
constexpr size_t pending_line_overhead = 128;

/// Ends a forked or cloned child before exec with the raw system call. A sanitizer runtime
/// intercepts _exit and finalises itself there (TSan: reports the parent's threads, which
/// the child copied the state of but not the threads, as leaked, and may wait on a lock
/// one of them held at the fork).
[[noreturn]] void child_exit(int code) {
  ::syscall(SYS_exit_group, code);
  __builtin_unreachable();
}

std::string iso_now() {
  auto t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string signal_name(int sig) {
  if (const char* abbrev = sigabbrev_np(sig); abbrev != nullptr)
    return std::string{"SIG"} + abbrev;
  return "signal " + std::to_string(sig);
}

spdlog::level::level_enum to_spdlog(output_level lvl) {
  switch (lvl) {
    case output_level::debug:
      return spdlog::level::debug;
    case output_level::info:
      return spdlog::level::info;
    case output_level::warn:
      return spdlog::level::warn;
    case output_level::error:
      return spdlog::level::err;
    default:
      return spdlog::level::off;
  }
}

// The program to exec: argv[0] itself when it names a path, else the first executable
// of that name in PATH (resolved here: after fork only async-signal-safe calls run).
caf::expected<std::string> resolve_program(const std::string& name,
                                           const std::optional<std::vector<std::string>>& env) {
  if (name.empty())
    return make_error(errc::invalid_config, "process: argv is empty");
  if (name.find('/') != std::string::npos)
    return name;
  std::string path;
  if (env) {
    for (const auto& kv : *env)
      if (kv.rfind("PATH=", 0) == 0)
        path = kv.substr(5);
  } else if (const char* p = std::getenv("PATH")) {
    path = p;
  }
  if (path.empty())
    path = "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  for (;;) {
    auto end = path.find(':', start);
    auto dir = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
    auto candidate = (dir.empty() ? std::string{"."} : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    if (end == std::string::npos)
      break;
    start = end + 1;
  }
  return make_error(errc::invalid_config, "process: '" + name + "' not found in PATH");
}

void close_fd(int& fd) {
  if (fd >= 0)
    ::close(fd);
  fd = -1;
}

/// Whether the kernel confines a core dump to the dumping thread group (Linux 5.16,
/// "coredump: Limit coredumps to a single thread group"). Before it, a core-dumping
/// signal in a CLONE_VM child before its exec kills every process sharing its memory,
/// groved included; such kernels (the 5.4, 5.10 and 5.15 of many devices) get the
/// plain clone. uname once.
bool clone_vm_is_safe() {
  static const bool safe = [] {
    utsname u{};
    unsigned major = 0;
    unsigned minor = 0;
    if (::uname(&u) != 0 || std::sscanf(u.release, "%u.%u", &major, &minor) != 2)
      return false;
    return major > 5 || (major == 5 && minor >= 16);
  }();
  return safe;
}

/// Clones a child into the namespaces of `flags` that runs `body` (which never returns:
/// it execs or exits). With `share`, on a stack of its own, sharing groved's memory
/// until its exec (CLONE_VM, as posix_spawn does): no copy of groved's page tables at
/// the clone, none to tear down at the exec. The caller then waits for the exec (or the
/// child's end) before anything `body` reads is freed; the stack is reused (supervisor
/// thread only, one child in its start at a time). Without `share`, without that stack,
/// or in a sanitized build, a plain clone (a copy of this stack, `body` run by the
/// caller in the child); `share` then says false. Like clone: the pid, 0 in a plain
/// child, -1 with errno.
template <class F>
pid_t clone_sharing_memory(unsigned long flags, F& body, bool& share) {
  static constexpr size_t stack_size = 1u << 20;
  static char* stack = [] {
    if (detail::sanitized_build)
      return static_cast<char*>(nullptr);
    void* m = ::mmap(nullptr, stack_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
      return static_cast<char*>(nullptr);
    ::mprotect(m, 4096, PROT_NONE); // a guard page below it
    return static_cast<char*>(m);
  }();
  share = share && stack != nullptr && clone_vm_is_safe();
  if (!share)
    return static_cast<pid_t>(::syscall(SYS_clone, flags | SIGCHLD, nullptr, nullptr,
                                        nullptr, nullptr));
  // Every signal that can be blocked stays blocked until the child has put back the
  // default handlers: groved's must not run in it. glibc keeps two of its own
  // (SIGCANCEL, SIGSETXID) unblockable and unresettable; only an explicit kill of the
  // child could deliver them, and nothing sends one.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = ::clone(
    [](void* f) -> int {
      (*static_cast<F*>(f))();
      return 127;
    },
    stack + stack_size, static_cast<int>(flags | CLONE_VM | SIGCHLD), &body);
  auto e = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = e;
  return pid;
}

/// A system call that leaves errno alone, for a child that shares groved's memory for
/// good (pid_namespace_holder): its errno would be the supervisor thread's.
inline long raw_syscall(long n, long a = 0, long b = 0, long c = 0, long d = 0) noexcept {
#if defined(__x86_64__)
  long ret;
  register long r10 __asm__("r10") = d;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                   : "rcx", "r11", "memory");
  return ret;
#elif defined(__aarch64__)
  register long x8 __asm__("x8") = n;
  register long x0 __asm__("x0") = a;
  register long x1 __asm__("x1") = b;
  register long x2 __asm__("x2") = c;
  register long x3 __asm__("x3") = d;
  __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
  return x0;
#else
  // Elsewhere through libc, whose errno the holder's wait loop may then write.
  return ::syscall(n, a, b, c, d);
#endif
}

/// The stack of one PID namespace holder: a guard page and a few pages above it.
constexpr size_t holder_stack_size = 64 * 1024;

/// PID 1 of a sandbox's PID namespace, a process sharing groved's memory (and its
/// descriptor table and file system context) that only
/// reaps (orphans of the sandbox are reparented to it) until the supervisor kills it
/// after the sandboxed child's end, which ends the namespace and all left in it. The
/// child is then PID 2, an ordinary process: the kernel drops any signal but SIGKILL
/// that a namespace's init does not handle, so a sandboxed init could not be made to
/// die by SIGSYS for a denied call (nor by SIGTERM). Every signal is blocked (since the
/// clone); raw calls only: it has no TLS of its own.
int pid_namespace_holder(void*) {
  raw_syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL);
  static const char name[] = "grove-pid1";
  raw_syscall(SYS_prctl, PR_SET_NAME, reinterpret_cast<long>(name));
  uint64_t chld = uint64_t{1} << (SIGCHLD - 1);
  for (;;) {
    raw_syscall(SYS_rt_sigtimedwait, reinterpret_cast<long>(&chld), 0, 0, 8);
    while (raw_syscall(SYS_wait4, -1, 0, WNOHANG | __WALL, 0) > 0) {
    }
  }
}

/// Starts a PID namespace holder in new PID, IPC and UTS namespaces (the sandboxed child
/// is cloned into the first and joins the others): its pid and a pidfd of it (for
/// setns), or -1 with errno. `stack` gets its stack, unmapped by end_holder.
pid_t start_holder(void*& stack, int& pidfd) {
  stack = nullptr;
  pidfd = -1;
  void* m = ::mmap(nullptr, holder_stack_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED)
    return -1;
  ::mprotect(m, 4096, PROT_NONE);
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  // Sharing the descriptor table too: a copy would keep every descriptor groved has open
  // now (the start's status pipe among them) open for good.
  pid_t pid = ::clone(pid_namespace_holder, static_cast<char*>(m) + holder_stack_size,
                      CLONE_VM | CLONE_FILES | CLONE_FS | CLONE_NEWPID
                        | static_cast<int>(detail::sandbox_holder_flags) | SIGCHLD,
                      nullptr);
  auto e = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) {
    ::munmap(m, holder_stack_size);
    errno = e;
    return -1;
  }
  stack = m;
  pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    e = errno;
    ::kill(pid, SIGKILL);
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    ::munmap(m, holder_stack_size);
    stack = nullptr;
    errno = e;
    return -1;
  }
  return pid;
}

/// The supervisor thread's own PID namespace, to go back to after a child was cloned
/// into a holder's.
int own_pid_namespace() {
  static const int fd = ::open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
  return fd;
}

/// The one thread that forks, watches and reaps every grove::process child of groved.
class supervisor {
public:
  static supervisor& instance() {
    static supervisor s;
    return s;
  }

  /// True once instance() made the supervisor (a process was started).
  static std::atomic<bool>& exists() {
    static std::atomic<bool> made{false};
    return made;
  }

  /// Pages out again the code of every running child whose code was released before
  /// (supervisor thread).
  void release_released_children();

  ~supervisor() {
    {
      std::lock_guard guard{mtx_};
      quit_ = true;
    }
    wake();
    if (thread_.joinable())
      thread_.join();
    ::close(wake_fd_);
  }

  /// Runs `f` on the supervisor thread and returns its result.
  template <class F>
  auto call(F f) -> decltype(f()) {
    if (std::this_thread::get_id() == thread_.get_id())
      return f();
    std::packaged_task<decltype(f())()> task{std::move(f)};
    auto result = task.get_future();
    post([&task] { task(); });
    return result.get();
  }

  /// Runs `f` on the supervisor thread, soon.
  void post(std::function<void()> f) {
    {
      std::lock_guard guard{mtx_};
      queue_.push_back(std::move(f));
    }
    wake();
  }

  /// Forks and execs `r`'s program (supervisor thread); registers it on success.
  caf::error spawn(const record_ptr& r);

  /// Marks `r` stopped for good and signals it (supervisor thread).
  void stop(const record_ptr& r, int sig, std::chrono::milliseconds grace);

private:
  supervisor() {
    exists().store(true);
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    thread_ = std::thread{[this] {
      // Named, not `caf.multiplexer` (inherited from the CAF worker that started it).
      ::pthread_setname_np(::pthread_self(), "grove.process");
      loop();
    }};
  }

  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof(one));
  }

  void loop();
  void read_output(process_record& r, output_stream which, bool drain);
  void emit_line(process_record& r, output_stream which, std::string line);
  // Both with r.mtx held.
  void post_line(process_record& r, output_stream which, std::string line);
  void post_dropped(process_record& r, output_stream which);
  void on_exited(const record_ptr& r);
  void on_denied(process_record& r, short revents);
  // Kills a PID namespace holder (and so all left in its namespace); reaped and its
  // stack unmapped now or, when the namespace takes a while to empty, by the loop.
  void end_holder(pid_t pid, void* stack);
  void reap_holders();
  // A holder made ahead (after a sandboxed start) for the next one, so that no start
  // waits for its namespaces (PID, IPC with its mqueue mount, UTS); -1: none.
  void make_spare_holder();
  pid_t spare_holder_ = -1;
  void* spare_holder_stack_ = nullptr;
  int spare_holder_fd_ = -1;
  void schedule_restart(process_record& r, process_exit& ex);
  void forget(const record_ptr& r);

  std::mutex mtx_;
  std::deque<std::function<void()>> queue_;
  bool quit_ = false;
  int wake_fd_ = -1;
  std::vector<record_ptr> children_;
  std::vector<std::pair<pid_t, void*>> ending_holders_;
  std::thread thread_;
};

// Everything the child needs is prepared before fork: after fork only
// async-signal-safe calls are allowed (other threads may hold malloc's locks).
caf::error supervisor::spawn(const record_ptr& rp) {
  auto& r = *rp;
  const auto& o = r.opts;
  std::vector<std::string> args = o.argv;
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  std::vector<char*> envp;
  if (o.env) {
    env_strings = *o.env;
    for (auto& e : env_strings)
      envp.push_back(e.data());
    envp.push_back(nullptr);
  }
  if (!o.env) {
    // groved's environment minus systemd's notify variables: they are groved's alone
    // (Debian's Mosquitto calls sd_notify; a child must not report READY=1 or feed the
    // watchdog in groved's name).
    for (char** e = environ; *e != nullptr; ++e) {
      std::string_view var{*e};
      if (!var.starts_with("NOTIFY_SOCKET=") && !var.starts_with("WATCHDOG_USEC=")
          && !var.starts_with("WATCHDOG_PID="))
        envp.push_back(*e);
    }
    envp.push_back(nullptr);
  }
  char* const* child_env = envp.data();
  std::string program = r.program;
  std::string cwd = o.cwd.string();
  process_callbacks cb;
  {
    std::lock_guard guard{r.mtx};
    cb.pre_exec = r.cb.pre_exec;
  }
  // Sources are moved above every target number first, so one dup2 never overwrites a
  // descriptor another still needs.
  int base = 3;
  for (auto& [from, to] : o.pass_fds) {
    if (to < 3)
      return make_error(errc::invalid_config, "process: pass_fds targets must be >= 3");
    base = std::max(base, to + 1);
  }
  std::vector<int> opened; // closed in the parent after fork
  auto cleanup = [&] {
    for (int fd : opened)
      ::close(fd);
  };
  auto sys_error = [&](const char* what) {
    auto err = make_error(errc::system_error,
                          std::string{"process: "} + what + ": " + std::strerror(errno));
    cleanup();
    return err;
  };
  auto high = [&](int fd) {
    int h = ::fcntl(fd, F_DUPFD_CLOEXEC, base);
    if (h >= 0)
      opened.push_back(h);
    return h;
  };
  int status_pipe[2];
  if (::pipe2(status_pipe, O_CLOEXEC) != 0)
    return sys_error("pipe2");
  opened.push_back(status_pipe[0]);
  opened.push_back(status_pipe[1]);
  int status_w = high(status_pipe[1]);
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0)
    return sys_error("open /dev/null");
  opened.push_back(devnull);
  int stdin_fd = high(devnull);
  int out[2] = {-1, -1};
  int err[2] = {-1, -1};
  int out_w = -1;
  int err_w = -1;
  if (o.capture_output) {
    if (::pipe2(out, O_CLOEXEC) != 0)
      return sys_error("pipe2");
    opened.push_back(out[1]);
    if (::pipe2(err, O_CLOEXEC) != 0) {
      ::close(out[0]);
      return sys_error("pipe2");
    }
    opened.push_back(err[1]);
    out_w = high(out[1]);
    err_w = high(err[1]);
  }
  // A sandbox is resolved here: the child only reads the plan.
  std::unique_ptr<detail::sandbox_plan> plan;
  if (o.sandbox) {
    if (!o.uid || !o.gid) {
      close_fd(out[0]);
      close_fd(err[0]);
      cleanup();
      return make_error(errc::invalid_config, "process: a sandbox needs uid and gid");
    }
    // The ids are mapped 1:1: 0 inside would be host root's files and group outside.
    if (*o.uid == 0 || *o.gid == 0
        || std::find(o.groups.begin(), o.groups.end(), gid_t{0}) != o.groups.end()) {
      close_fd(out[0]);
      close_fd(err[0]);
      cleanup();
      return make_error(errc::not_authorized,
                        "process: a sandbox never runs as uid or gid 0 (host root), nor "
                        "with group 0 among its supplementary groups");
    }
    plan = std::make_unique<detail::sandbox_plan>();
    auto e = detail::plan_sandbox(*o.sandbox, *o.uid, *o.gid, *plan);
    if (plan->cgroup_dir_fd >= 0)
      opened.push_back(plan->cgroup_dir_fd); // the child's copy goes with the sweep
    // The user namespace it joins (made once per set of ids, kept by the cache).
    int userns = -1;
    if (!e) {
      auto ns = detail::sandbox_user_namespace(*o.uid, *o.gid, o.groups);
      if (ns)
        userns = *ns;
      else
        e = std::move(ns.error());
    }
    // The child's cgroup and namespace descriptors go above the targets, closed here
    // after the clone (the cache keeps its own).
    auto lift = [&](int& fd, bool owned) {
      if (fd < 0)
        return;
      int h = e ? -1 : high(fd);
      if (owned)
        ::close(fd);
      fd = h;
      if (h < 0 && !e)
        e = make_error(errc::system_error, std::string{"process: fcntl(F_DUPFD): "}
                                             + std::strerror(errno));
    };
    for (int& fd : plan->attach_fds)
      lift(fd, true);
    lift(plan->cgroup_dir_procs_fd, true);
    plan->userns_fd = userns;
    lift(plan->userns_fd, false);
    lift(plan->mntns_fd, false); // the prepared root's (plan_sandbox; the cache keeps it)
    if (e) {
      close_fd(out[0]);
      close_fd(err[0]);
      cleanup();
      return e;
    }
    if (const char* t = std::getenv("GROVE_SANDBOX_TIMING"); t != nullptr && *t != '\0') {
      void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
      if (page != MAP_FAILED)
        plan->marks = static_cast<uint64_t*>(page);
    }
    if (!plan->filter.empty()) {
      int sp[2];
      if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sp) != 0) {
        close_fd(out[0]);
        close_fd(err[0]);
        return sys_error("socketpair");
      }
      opened.push_back(sp[1]);
      plan->handover_w = high(sp[1]);
      plan->handover_r = sp[0];
    }
  }
  std::vector<int> sources;
  std::vector<int> targets;
  for (auto& [from, to] : o.pass_fds) {
    sources.push_back(high(from));
    targets.push_back(to);
  }
  bool bad = status_w < 0 || stdin_fd < 0 || (o.capture_output && (out_w < 0 || err_w < 0))
             || (plan && !plan->filter.empty() && plan->handover_w < 0)
             || std::find(sources.begin(), sources.end(), -1) != sources.end();
  if (bad) {
    close_fd(out[0]);
    close_fd(err[0]);
    if (plan)
      close_fd(plan->handover_r);
    return sys_error("fcntl(F_DUPFD)");
  }
  // Descriptors that survive the close-everything sweep in the child, sorted.
  std::vector<int> keep = targets;
  keep.push_back(status_w);
  if (plan) {
    for (int fd : {plan->handover_w, plan->userns_fd, plan->mntns_fd, plan->cgroup_dir_procs_fd})
      if (fd >= 0)
        keep.push_back(fd);
    keep.insert(keep.end(), plan->attach_fds.begin(), plan->attach_fds.end());
  }
  std::sort(keep.begin(), keep.end());
  rlimit nofile{};
  unsigned max_fd = 65536;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY)
    max_fd = static_cast<unsigned>(std::min<rlim_t>(nofile.rlim_cur, 1u << 20));
  int pdeathsig = o.parent_death_signal;
  auto gid = o.gid;
  auto uid = o.uid;
  // setgroups' list, made here: the child allocates nothing.
  std::vector<gid_t> groups;
  if (gid) {
    groups.push_back(*gid);
    for (auto g : o.groups)
      if (g != *gid)
        groups.push_back(g);
  }
  bool capture = o.capture_output;
  auto parent = ::getpid();

  const detail::sandbox_plan* sb = plan.get();
  // The child, from clone to exec: it reads what is prepared above and allocates nothing.
  // A CLONE_VM child has no TLS of its own: its errno is the supervisor thread's, which
  // the parent may write too (only on its own failures, each of which kills the child).
  // So every failing call's errno is copied into a local at once, and nothing relies on
  // errno across another call.
  auto child = [&]() {
    // Child: report [stage, errno] on the status pipe and exit on any failure.
    auto fail = [&](int stage, int code) {
      int msg[2] = {stage, code};
      [[maybe_unused]] auto n = ::write(status_w, msg, sizeof(msg));
      child_exit(127);
    };
    // Own process group: a terminal's Ctrl-C reaches groved only, which stops children.
    ::setpgid(0, 0);
    // groved blocks its stop signals for sigwait and ignores SIGPIPE: the child starts
    // from the defaults, or the parent-death SIGTERM would never act. Handlers first:
    // a child sharing groved's memory must not run one of groved's (all are blocked
    // until here).
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig)
      ::sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (::dup2(stdin_fd, 0) < 0) {
      int e = errno;
      fail(0, e);
    }
    if (capture && (::dup2(out_w, 1) < 0 || ::dup2(err_w, 2) < 0)) {
      int e = errno;
      fail(0, e);
    }
    for (size_t i = 0; i < sources.size(); ++i)
      if (::dup2(sources[i], targets[i]) < 0) {
        int e = errno;
        fail(0, e);
      }
    // Nothing else of groved leaks into the child.
    unsigned lo = 3;
    for (int k : keep) {
      auto uk = static_cast<unsigned>(k);
      if (uk > lo && ::syscall(SYS_close_range, lo, uk - 1, 0u) != 0)
        for (unsigned fd = lo; fd < uk; ++fd)
          ::close(static_cast<int>(fd));
      lo = std::max(lo, uk + 1);
    }
    if (::syscall(SYS_close_range, lo, ~0u, 0u) != 0)
      for (unsigned fd = lo; fd < max_fd; ++fd)
        ::close(static_cast<int>(fd));
    if (sb) {
      detail::sandbox_mark(*sb, detail::mark_child);
      if (int rc = detail::sandbox_attach(*sb); rc != 0)
        fail(8, rc);
      int step = -1;
      if (int rc = detail::sandbox_enter(*sb, step); rc != 0)
        fail(step < 0 ? 6 : 1000 + step, rc);
    } else if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) {
      int e = errno;
      fail(1, e);
    }
    if (cb.pre_exec)
      if (int rc = cb.pre_exec(); rc != 0)
        fail(2, rc);
    // Raw system calls: glibc's wrappers would signal groved's other threads (setxid),
    // which a cloned child still believes it has.
    if (gid && (::syscall(SYS_setgroups, groups.size(), groups.data()) != 0
                || ::syscall(SYS_setresgid, *gid, *gid, *gid) != 0)) {
      int e = errno;
      fail(3, e);
    }
    if (uid && ::syscall(SYS_setresuid, *uid, *uid, *uid) != 0) {
      int e = errno;
      fail(4, e);
    }
    // After the credential change, which clears it. The getppid() check closes the race
    // where groved died before prctl; a sandboxed child sees no parent (getppid() is 0
    // outside its PID namespace) and asks the status pipe instead: groved's end is gone.
    if (pdeathsig != 0) {
      ::prctl(PR_SET_PDEATHSIG, pdeathsig);
      if (sb) {
        pollfd pf{status_w, 0, 0};
        if (::poll(&pf, 1, 0) > 0 && (pf.revents & POLLERR) != 0)
          child_exit(127);
      } else if (::getppid() != parent) {
        child_exit(127);
      }
    }
    if (sb)
      if (int rc = detail::sandbox_lock(*sb); rc != 0)
        fail(7, rc);
    ::execve(program.c_str(), argv.data(), child_env);
    int e = errno;
    fail(5, e);
  };
  if (sb)
    detail::sandbox_mark(*sb, detail::mark_clone);
  // A sandboxed child is cloned into its namespaces (PID 1 of its own).
  pid_t pid = -1;
  bool shared = false; // the child runs in this memory until its exec or end
  int dumpable = -1;
  // A sandboxed child is born into a new PID namespace, as PID 2: its PID 1 is a holder
  // (pid_namespace_holder). This thread's children go there until the clone is done.
  pid_t holder = -1;
  void* holder_stack = nullptr;
  if (sb) {
    int holder_fd = -1;
    if (spare_holder_ > 0) {
      // Made ahead; one that has died meanwhile (nothing kills it but groved's end)
      // fails its setns, and a new one is made.
      holder = std::exchange(spare_holder_, -1);
      holder_stack = std::exchange(spare_holder_stack_, nullptr);
      holder_fd = std::exchange(spare_holder_fd_, -1);
      if (::setns(holder_fd, CLONE_NEWPID) != 0) {
        ::close(holder_fd);
        end_holder(holder, holder_stack);
        holder = -1;
        holder_stack = nullptr;
        holder_fd = -1;
      }
    }
    if (holder < 0)
      holder = start_holder(holder_stack, holder_fd);
    if (holder < 0 || ::setns(holder_fd, CLONE_NEWPID) != 0) {
      auto e = errno;
      close_fd(holder_fd);
      if (holder > 0)
        end_holder(holder, holder_stack);
      close_fd(out[0]);
      close_fd(err[0]);
      close_fd(plan->handover_r);
      errno = e;
      return sys_error("a new PID namespace (clone, setns)");
    }
    ::close(holder_fd);
  }
  // Without a prepared root, the child builds its own in a new mount namespace.
  const unsigned long ns_flags
    = detail::sandbox_clone_flags | (sb && sb->mntns_fd < 0 ? detail::sandbox_direct_flag : 0);
  if (sb && sb->cgroup_dir_fd >= 0) {
    // v2: into its cgroup at birth (a cgroup.procs write would wait for the kernel's
    // thread-group lock); like fork, the child runs on a copy of this stack. A kernel
    // that refuses clone3 gets the child's own write instead.
    clone_args ca{};
    ca.flags = ns_flags | CLONE_INTO_CGROUP;
    ca.exit_signal = SIGCHLD;
    ca.cgroup = static_cast<uint64_t>(sb->cgroup_dir_fd);
    pid = static_cast<pid_t>(::syscall(SYS_clone3, &ca, sizeof ca));
    if (pid < 0 && (errno == ENOSYS || errno == E2BIG)) {
      plan->attach_dir = true;
      pid = static_cast<pid_t>(::syscall(SYS_clone, ns_flags | SIGCHLD,
                                         nullptr, nullptr, nullptr, nullptr));
    }
  } else if (sb) {
    // A pre-exec hook is plugin code: it may write a static, errno or a thread_local,
    // and its .so may be unloaded during the start. It runs in a child of its own.
    shared = !cb.pre_exec;
    // The child's credential change makes the shared memory non-dumpable (commit_creds
    // sets it to fs.suid_dumpable): groved's own value goes back once the child is gone
    // from it.
    dumpable = ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    pid = clone_sharing_memory(ns_flags, child, shared);
  } else {
    pid = ::fork();
  }
  if (pid == 0)
    child();
  if (sb) {
    // Back to this process's own: later children of this thread (any grove::process
    // child, a user namespace's helper) are born here again.
    auto e = errno;
    if (::setns(own_pid_namespace(), CLONE_NEWPID) != 0)
      std::abort(); // every later child would land in this sandbox's namespace
    errno = e;
  }
  if (pid < 0) {
    auto e = errno;
    if (sb)
      end_holder(holder, holder_stack);
    close_fd(out[0]);
    close_fd(err[0]);
    if (sb)
      close_fd(plan->handover_r);
    errno = e;
    return sys_error(sb ? "clone (new mount, IPC and UTS namespaces)" : "fork");
  }
  // Parent.
  ::close(status_pipe[1]);
  std::erase(opened, status_pipe[1]);
  ::close(status_w);
  std::erase(opened, status_w);
  int early_pidfd = -1;
  int listener = -1;
  // The child has left this memory (exec'd or ended): groved's dumpable flag back.
  auto left_memory = [&] {
    if (shared && (dumpable == 0 || dumpable == 1)
        && ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != dumpable)
      ::prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0);
  };
  // Reaps the child. While a shared child runs, errno may be its: it never calls a wait
  // function, so ECHILD is waitpid's own, and anything else is retried.
  auto reap = [&] {
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && (shared ? errno != ECHILD : errno == EINTR)) {
    }
    left_memory();
  };
  // A sandboxed child hands over its listener before its exec. It may share this
  // memory until then: it is gone before anything here is freed.
  auto refuse = [&](caf::error e) {
    ::kill(pid, SIGKILL);
    reap();
    if (holder > 0)
      end_holder(holder, holder_stack);
    if (plan) {
      detail::sandbox_report_marks(*plan);
      close_fd(plan->handover_r);
    }
    close_fd(early_pidfd);
    close_fd(listener);
    close_fd(out[0]);
    close_fd(err[0]);
    cleanup();
    return e;
  };
  if (sb) {
    early_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (early_pidfd < 0)
      return refuse(make_error(errc::system_error, std::string{"process: pidfd_open: "}
                                                     + std::strerror(errno)));
  }
  int msg[2] = {0, 0};
  ssize_t got = 0;
  // While a shared child runs, errno may be its (see the child), so an EINTR read here
  // cannot be told from the child's: a shared start fails on any error (groved installs
  // no signal handlers, so none is expected). Any other read error is a failure too,
  // never taken for the exec's EOF: the child would be left running on memory freed
  // below.
  for (;;) {
    if (sb) {
      // A filter that denies the hand-over's own calls would leave both sides waiting.
      pollfd pf{status_pipe[0], POLLIN, 0};
      int ready = ::poll(&pf, 1, 10000);
      if (ready < 0 && !shared && errno == EINTR)
        continue;
      if (ready < 0)
        return refuse(make_error(errc::system_error,
                                 "process: cannot wait for the sandboxed child's exec"));
      if (ready == 0)
        return refuse(make_error(errc::system_error,
                                 "process: the sandboxed child did not reach exec within 10 s"
                                 " (does its seccomp filter allow read, write, close,"
                                 " sendmsg and execve?)"));
    }
    got = ::read(status_pipe[0], msg, sizeof(msg));
    if (got < 0 && !shared && errno == EINTR)
      continue;
    break;
  }
  if (got < 0)
    return refuse(make_error(errc::system_error,
                             "process: cannot read the child's start status"));
  if (got == 0)
    left_memory();
  if (sb && got == 0 && sb->handover_r >= 0) {
    // Exec'd: the listener is queued in the socket since before the exec.
    listener = detail::sandbox_take_listener(*sb);
    if (listener < 0)
      return refuse(make_error(errc::system_error,
                               "process: the sandboxed child exec'd without handing over its "
                               "seccomp listener"));
  }
  if (sb) {
    close_fd(plan->handover_r);
    detail::sandbox_mark(*sb, detail::mark_exec);
    detail::sandbox_report_marks(*plan);
  }
  cleanup();
  if (got > 0) {
    // The child failed before exec and exits 127: reap it now.
    reap();
    if (holder > 0)
      end_holder(holder, holder_stack);
    close_fd(out[0]);
    close_fd(err[0]);
    close_fd(early_pidfd);
    close_fd(listener);
    static constexpr const char* stages[]
      = {"set up descriptors", "chdir", "pre-exec hook", "setgid", "setuid", "execute",
         "enter its sandbox", "lock its sandbox", "join its cgroups"};
    std::string stage = msg[0] >= 0 && msg[0] < 9 ? stages[msg[0]] : "start";
    if (sb && msg[0] >= 1000)
      stage = "enter its sandbox (" + detail::describe_step(sb->steps, msg[0] - 1000) + ")";
    return make_error(errc::system_error, "process: " + args[0] + ": cannot " + stage
                                            + ": " + std::strerror(msg[1]));
  }
  int pidfd = early_pidfd >= 0 ? early_pidfd : static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    auto e = errno;
    ::kill(pid, SIGKILL);
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (holder > 0)
      end_holder(holder, holder_stack);
    close_fd(out[0]);
    close_fd(err[0]);
    return make_error(errc::system_error,
                      std::string{"process: pidfd_open: "} + std::strerror(e));
  }
  for (int fd : {out[0], err[0]})
    if (fd >= 0)
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  r.pidfd = pidfd;
  close_fd(r.notify_fd);
  r.notify_fd = listener;
  r.denied_syscall = -1;
  if (r.holder_pid > 0)
    end_holder(r.holder_pid, r.holder_stack);
  r.holder_pid = holder;
  r.holder_stack = holder_stack;
  r.out_fd = out[0];
  r.err_fd = err[0];
  r.out_buf.clear();
  r.err_buf.clear();
  r.kill_at.reset();
  r.restart_at.reset();
  {
    std::lock_guard guard{r.mtx};
    r.pid = pid;
    r.running = true;
    r.started_at = iso_now();
    if (r.opts.log_prefix.empty()) {
      auto slash = args[0].rfind('/');
      r.prefix = (slash == std::string::npos ? args[0] : args[0].substr(slash + 1)) + "["
                 + std::to_string(pid) + "]: ";
    } else {
      r.prefix = r.opts.log_prefix;
    }
    if (r.log) {
      try {
        r.log->info("{}started (pid {})", r.prefix, pid);
      } catch (...) {
      }
    }
    if (r.owner.post && r.cb.on_start)
      r.owner.post([f = r.cb.on_start, pid] { f(pid); });
  }
  if (std::find(children_.begin(), children_.end(), rp) == children_.end())
    children_.push_back(rp);
  if (sb && spare_holder_ < 0)
    post([this] { make_spare_holder(); });
  if (plan && plan->prepare_root) {
    // This child built its root, started before: the next start of this root joins a
    // prepared one, made here once the caller has its answer (a failure is remembered,
    // and such a root is always built by its child, as this one was).
    post([root = std::shared_ptr<detail::sandbox_plan>{std::move(plan)}] {
      [[maybe_unused]] auto err = detail::sandbox_prepare_root(*root);
    });
  }
  return {};
}

void supervisor::emit_line(process_record& r, output_stream which, std::string line) {
  if (!line.empty() && line.back() == '\r')
    line.pop_back();
  std::lock_guard guard{r.mtx};
  auto lvl = to_spdlog(which == output_stream::out ? r.opts.stdout_level
                                                   : r.opts.stderr_level);
  if (r.log && lvl != spdlog::level::off) {
    try {
      r.log->log(lvl, "{}{}", r.prefix, line);
    } catch (...) {
      // A failing sink must not take the supervisor down.
    }
  }
  if (!r.owner.post || !r.cb.on_output)
    return;
  auto& dropped = which == output_stream::out ? r.out_dropped : r.err_dropped;
  auto cost = line.size() + pending_line_overhead;
  if (r.output_pending->load(std::memory_order_relaxed) + cost > max_pending_output_bytes) {
    // The owner is behind (a child flooding its output): the line is in the log above
    // but not posted, and counted; the count reaches the owner with the next line it
    // gets (post_dropped).
    ++dropped;
    return;
  }
  post_dropped(r, which);
  post_line(r, which, std::move(line));
}

void supervisor::post_line(process_record& r, output_stream which, std::string line) {
  auto cost = line.size() + pending_line_overhead;
  r.output_pending->fetch_add(cost, std::memory_order_relaxed);
  r.owner.post([f = r.cb.on_output, which, l = std::move(line), pending = r.output_pending,
                cost] {
    pending->fetch_sub(cost, std::memory_order_relaxed);
    f(which, l);
  });
}

void supervisor::post_dropped(process_record& r, output_stream which) {
  auto& dropped = which == output_stream::out ? r.out_dropped : r.err_dropped;
  if (dropped == 0 || !r.owner.post || !r.cb.on_output)
    return;
  auto note = "[grove: " + std::to_string(dropped) + " lines of "
              + (which == output_stream::out ? "stdout" : "stderr")
              + " dropped here: written faster than they were taken]";
  if (r.cb.on_dropped)
    r.owner.post([f = r.cb.on_dropped, which, n = dropped] { f(which, n); });
  dropped = 0;
  post_line(r, which, std::move(note));
}

// Reads what `which` has (all of it when `drain`), emitting complete lines.
void supervisor::read_output(process_record& r, output_stream which, bool drain) {
  int& fd = which == output_stream::out ? r.out_fd : r.err_fd;
  auto& buf = which == output_stream::out ? r.out_buf : r.err_buf;
  char chunk[4096];
  for (;;) {
    if (fd < 0)
      return;
    auto n = ::read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR)
      continue;
    if (n > 0) {
      buf.append(chunk, static_cast<size_t>(n));
      size_t pos;
      while ((pos = buf.find('\n')) != std::string::npos) {
        emit_line(r, which, buf.substr(0, pos));
        buf.erase(0, pos + 1);
      }
      if (buf.size() > max_line_bytes) {
        emit_line(r, which, std::move(buf));
        buf.clear();
      }
      if (drain)
        continue;
      return;
    }
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
      // End of output (or a broken pipe): flush a last line without newline, and the
      // count of lines dropped at the end, which no later line carries.
      if (!buf.empty())
        emit_line(r, which, std::move(buf));
      buf.clear();
      {
        std::lock_guard guard{r.mtx};
        post_dropped(r, which);
      }
      close_fd(fd);
    }
    return;
  }
}

void supervisor::schedule_restart(process_record& r, process_exit& ex) {
  auto d = r.failures.record(r.opts.policy);
  if (d.broken) {
    r.gave_up = true;
    ex.gave_up = true;
    return;
  }
  ex.restarting = true;
  ex.restart_in = d.delay;
  r.restart_at = clock_type::now() + d.delay;
}

void supervisor::on_exited(const record_ptr& rp) {
  auto& r = *rp;
  read_output(r, output_stream::out, true);
  read_output(r, output_stream::err, true);
  // Output of a grandchild that still holds the pipes is cut here.
  for (auto which : {output_stream::out, output_stream::err}) {
    auto& buf = which == output_stream::out ? r.out_buf : r.err_buf;
    if (!buf.empty())
      emit_line(r, which, std::move(buf));
    buf.clear();
  }
  close_fd(r.out_fd);
  close_fd(r.err_fd);
  process_exit ex;
  bool done = false;
  close_fd(r.notify_fd);
  ex.denied_syscall = r.denied_syscall;
  r.denied_syscall = -1;
  {
    std::lock_guard guard{r.mtx};
    int st = 0;
    pid_t got;
    while ((got = ::waitpid(r.pid, &st, WNOHANG)) < 0 && errno == EINTR) {
    }
    if (got == 0)
      return; // not ended after all; poll again
    close_fd(r.pidfd);
    if (r.holder_pid > 0) {
      end_holder(r.holder_pid, r.holder_stack);
      r.holder_pid = -1;
      r.holder_stack = nullptr;
    }
    ex.pid = r.pid;
    if (WIFSIGNALED(st)) {
      ex.signal = WTERMSIG(st);
      ex.signal_name = signal_name(ex.signal);
    } else if (WIFEXITED(st)) {
      ex.code = WEXITSTATUS(st);
    }
    r.running = false;
    r.pid = 0;
    r.started_at.clear();
    r.kill_at.reset();
    r.last_exit = ex.describe();
    if (r.stop_requested) {
      ex.requested = true;
      done = true;
    } else if (r.opts.restart && r.owner.post) {
      schedule_restart(r, ex);
      done = ex.gave_up;
    } else {
      done = true;
    }
    if (r.log) {
      try {
        if (ex.requested)
          r.log->info("{}{}", r.prefix, ex.describe());
        else if (ex.restarting)
          r.log->warn("{}{}; restarting in {} ms", r.prefix, ex.describe(),
                      ex.restart_in.count());
        else if (ex.gave_up)
          r.log->error("{}{}; failed {} times within {} s: not restarted again", r.prefix,
                       ex.describe(), r.opts.policy.max_failures,
                       r.opts.policy.window.count());
        else
          r.log->warn("{}{}", r.prefix, ex.describe());
      } catch (...) {
      }
    }
    if (r.owner.post && r.cb.on_exit)
      r.owner.post([f = r.cb.on_exit, ex] { f(ex); });
    else if (!r.owner.post)
      r.unowned_exit = ex;
  }
  if (done)
    forget(rp);
}

// Whether `tid` is a thread of process `pid` (seen from here).
bool is_thread_of(pid_t tid, pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/task/%d", static_cast<int>(pid),
                static_cast<int>(tid));
  return tid > 0 && ::access(path, F_OK) == 0;
}

// The sandbox's filter stopped a call it denies: note which and end the instance with
// SIGSYS, as the kernel's SECCOMP_RET_KILL_PROCESS would (which would not say which
// call). The child is not its namespace's init, so a SIGSYS it does not handle ends it.
// The caller gets it; the call stays unanswered, so it is never made. A child that
// handles, blocks or ignores SIGSYS gets SIGKILL: at its next denied call (a handled
// SIGSYS restarts the call), or after a moment. The namespace's end takes whatever
// else is left in it.
void supervisor::on_denied(process_record& r, short revents) {
  if (r.notify_fd < 0)
    return;
  seccomp_notif n{};
  // Only with POLLIN: RECV blocks when nothing is pending (POLLHUP: no filter user left).
  if ((revents & POLLIN) != 0 && ::ioctl(r.notify_fd, SECCOMP_IOCTL_NOTIF_RECV, &n) == 0) {
    std::lock_guard guard{r.mtx};
    if (!r.running)
      return;
    if (r.denied_syscall >= 0) {
      if (::kill(-r.pid, SIGKILL) != 0)
        ::kill(r.pid, SIGKILL);
      return;
    }
    r.denied_syscall = n.data.nr;
    auto caller = static_cast<pid_t>(n.pid);
    if (caller == r.pid || is_thread_of(caller, r.pid)) {
      ::kill(caller, SIGSYS);
      auto at = clock_type::now() + std::chrono::milliseconds{500};
      if (!r.kill_at || at < *r.kill_at)
        r.kill_at = at;
    } else {
      // A process the child forked made the call: the child (the instance) is ended, as
      // before, by SIGKILL: a SIGSYS could find it in a state where it does not act on
      // one (seen with dash between a vfork and its wait), and the instance must not go
      // on. First: the caller's SIGSYS wakes the child (its wait), which could run on
      // (print, exit) before a second kill if this thread were preempted in between.
      if (::kill(-r.pid, SIGKILL) != 0)
        ::kill(r.pid, SIGKILL);
      if (caller > 0)
        ::kill(caller, SIGSYS);
    }
    return;
  } else if ((revents & POLLIN) != 0 && errno == EINTR) {
    return;
  }
  close_fd(r.notify_fd);
}

void supervisor::make_spare_holder() {
  if (spare_holder_ > 0)
    return;
  void* stack = nullptr;
  int fd = -1;
  pid_t pid = start_holder(stack, fd);
  if (pid < 0)
    return; // the next start makes its own, and says why if it cannot
  spare_holder_ = pid;
  spare_holder_stack_ = stack;
  spare_holder_fd_ = fd;
}

void supervisor::end_holder(pid_t pid, void* stack) {
  ::kill(pid, SIGKILL);
  ending_holders_.emplace_back(pid, stack);
  reap_holders();
}

void supervisor::reap_holders() {
  std::erase_if(ending_holders_, [](const std::pair<pid_t, void*>& h) {
    int st = 0;
    pid_t got;
    while ((got = ::waitpid(h.first, &st, WNOHANG | __WALL)) < 0 && errno == EINTR) {
    }
    if (got == 0)
      return false;
    // Gone (or never ours): its stack is no one's now.
    ::munmap(h.second, holder_stack_size);
    return true;
  });
}

void supervisor::forget(const record_ptr& r) {
  std::erase(children_, r);
}

namespace {

// Whether `pid` has a handler for `sig` (SigCgt of /proc/<pid>/status); unknown: true.
bool catches(pid_t pid, int sig) {
  char path[48];
  std::snprintf(path, sizeof path, "/proc/%d/status", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return true;
  char buf[4096];
  auto n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0)
    return true;
  buf[n] = '\0';
  const char* at = std::strstr(buf, "SigCgt:");
  if (at == nullptr)
    return true;
  auto mask = std::strtoull(at + 7, nullptr, 16);
  return sig < 1 || sig > 64 || ((mask >> (sig - 1)) & 1u) != 0;
}

} // namespace

void supervisor::stop(const record_ptr& rp, int sig, std::chrono::milliseconds grace) {
  auto& r = *rp;
  std::lock_guard guard{r.mtx};
  r.stop_requested = true;
  r.restart_at.reset();
  if (!r.running) {
    std::erase(children_, rp);
    return;
  }
  // A sandboxed child that does not catch the signal (the C++ SDK and Python workers)
  // is killed at once: its default action would end it but not the processes it forked,
  // and the namespace's end (after its own) takes those.
  if (sig != 0 && sig != SIGKILL && r.opts.sandbox && !catches(r.pid, sig))
    sig = SIGKILL;
  if (sig != 0 && ::kill(-r.pid, sig) != 0)
    ::kill(r.pid, sig);
  auto at = clock_type::now() + grace;
  if (!r.kill_at || at < *r.kill_at)
    r.kill_at = at;
}

void supervisor::loop() {
  std::vector<pollfd> fds;
  struct watch {
    record_ptr rec;
    int kind; // 0 exit, 1 stdout, 2 stderr, 3 seccomp listener
  };
  std::vector<watch> watches;
  bool cache_flushed = false;
  for (;;) {
    std::deque<std::function<void()>> work;
    {
      std::lock_guard guard{mtx_};
      if (quit_) {
        if (spare_holder_ > 0) {
          ::close(spare_holder_fd_);
          ::kill(spare_holder_, SIGKILL);
          int st = 0;
          while (::waitpid(spare_holder_, &st, __WALL) < 0 && errno == EINTR) {
          }
          ::munmap(spare_holder_stack_, holder_stack_size);
          spare_holder_ = -1;
        }
        return;
      }
      work.swap(queue_);
    }
    for (auto& f : work) {
      try {
        f();
      } catch (...) {
        // A command's own error travels in its future; nothing may stop this thread.
      }
    }
    // Timers: SIGKILL after the grace period, restarts after their back-off.
    auto now = clock_type::now();
    std::optional<clock_type::time_point> next;
    auto children = children_; // spawn/forget may change the list
    for (auto& rp : children) {
      auto& r = *rp;
      if (r.kill_at && *r.kill_at <= now) {
        std::lock_guard guard{r.mtx};
        if (r.running && ::kill(-r.pid, SIGKILL) != 0)
          ::kill(r.pid, SIGKILL);
        r.kill_at.reset();
      }
      if (r.restart_at && *r.restart_at <= now) {
        r.restart_at.reset();
        bool go;
        {
          std::lock_guard guard{r.mtx};
          go = !r.stop_requested && r.owner.post != nullptr;
        }
        if (!go) {
          forget(rp);
          continue;
        }
        if (auto err = spawn(rp)) {
          process_exit ex;
          ex.code = 127;
          std::lock_guard guard{r.mtx};
          r.last_exit = describe(err);
          schedule_restart(r, ex);
          if (r.log)
            r.log->error("{}restart failed: {}{}", r.prefix, describe(err),
                         ex.gave_up ? "; not restarted again" : "");
          if (r.owner.post && r.cb.on_exit)
            r.owner.post([f = r.cb.on_exit, ex] { f(ex); });
          if (ex.gave_up)
            std::erase(children_, rp);
        } else {
          std::lock_guard guard{r.mtx};
          ++r.restarts;
        }
      }
      for (auto& t : {r.kill_at, r.restart_at})
        if (t && (!next || *t < *next))
          next = *t;
    }
    fds.clear();
    watches.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    watches.push_back({nullptr, -1});
    for (auto& rp : children_) {
      if (rp->pidfd >= 0) {
        fds.push_back({rp->pidfd, POLLIN, 0});
        watches.push_back({rp, 0});
      }
      if (rp->out_fd >= 0) {
        fds.push_back({rp->out_fd, POLLIN, 0});
        watches.push_back({rp, 1});
      }
      if (rp->err_fd >= 0) {
        fds.push_back({rp->err_fd, POLLIN, 0});
        watches.push_back({rp, 2});
      }
      if (rp->notify_fd >= 0) {
        fds.push_back({rp->notify_fd, POLLIN, 0});
        watches.push_back({rp, 3});
      }
    }
    reap_holders();
    if (!ending_holders_.empty()) {
      // A namespace still emptying: look again shortly.
      auto soon = clock_type::now() + std::chrono::milliseconds{20};
      if (!next || soon < *next)
        next = soon;
    }
    int timeout = -1;
    if (next) {
      auto ms = std::chrono::ceil<std::chrono::milliseconds>(*next - clock_type::now());
      timeout = static_cast<int>(std::max<int64_t>(0, ms.count()));
    }
    // Nothing due: poll a second first, and if nothing came, hand the allocator cache
    // back (allocator.hpp) before waiting for good.
    bool idle_probe = timeout < 0 && !cache_flushed;
    int n = ::poll(fds.data(), fds.size(), idle_probe ? 1000 : timeout);
    if (n == 0 && idle_probe) {
      detail::flush_thread_cache();
      cache_flushed = true;
    }
    if (n <= 0)
      continue;
    cache_flushed = false;
    if (fds[0].revents != 0) {
      uint64_t v;
      [[maybe_unused]] auto got = ::read(wake_fd_, &v, sizeof(v));
    }
    // Output first, so every line a child wrote is out before its exit is reported.
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents == 0)
          continue;
        auto& w = watches[i];
        if (pass == 0 && w.kind == 3)
          on_denied(*w.rec, fds[i].revents);
        else if (pass == 0 && w.kind != 0)
          read_output(*w.rec, w.kind == 1 ? output_stream::out : output_stream::err, false);
        else if (pass == 1 && w.kind == 0 && w.rec->pidfd >= 0)
          on_exited(w.rec);
      }
    }
  }
}

} // namespace

// -- process_exit -----------------------------------------------------------------

std::string process_exit::describe() const {
  if (denied_syscall >= 0)
    return (signal != 0 ? "killed by signal " + std::to_string(signal) + " (" + signal_name + ")"
                        : "exited with code " + std::to_string(code))
           + ": the sandbox denied system call " + std::to_string(denied_syscall);
  if (signal != 0)
    return "killed by signal " + std::to_string(signal) + " (" + signal_name + ")";
  return "exited with code " + std::to_string(code);
}

// -- process ----------------------------------------------------------------------

process::process() noexcept = default;

process::process(process&& other) noexcept = default;

process& process::operator=(process&& other) noexcept {
  if (this != &other) {
    if (rec_) {
      unbind();
      stop();
    }
    rec_ = std::move(other.rec_);
  }
  return *this;
}

process::~process() {
  if (rec_) {
    unbind();
    stop();
  }
}

process_owner process::owner_of(context& ctx) {
  auto* c = &ctx;
  process_owner owner;
  // The handle unbinds (under the record's lock) before the instance goes, so `c`
  // outlives every call made through it.
  owner.post = [c](std::function<void()> f) { c->post(std::move(f)); };
  try {
    owner.log = ctx.log().clone(ctx.log().name());
  } catch (...) {
    owner.log = nullptr;
  }
  return owner;
}

caf::expected<process> process::start(context& ctx, process_options opts,
                                      process_callbacks cb) {
  return start(owner_of(ctx), std::move(opts), std::move(cb));
}

caf::expected<process> process::start(process_owner owner, process_options opts,
                                      process_callbacks cb) {
  try {
    auto program = resolve_program(opts.argv.empty() ? std::string{} : opts.argv[0],
                                   opts.env);
    if (!program)
      return program.error();
    auto rec = std::make_shared<process_record>();
    rec->program = std::move(*program);
    rec->opts = std::move(opts);
    rec->cb = std::move(cb);
    rec->log = owner.log;
    rec->owner = std::move(owner);
    auto& sup = supervisor::instance();
    if (auto err = sup.call([&] { return sup.spawn(rec); })) {
      // Plugin code must not stay behind in a record nobody supervises.
      std::lock_guard guard{rec->mtx};
      rec->cb = {};
      rec->owner = {};
      return err;
    }
    process result;
    result.rec_ = std::move(rec);
    return result;
  } catch (const std::exception& e) {
    return make_error(errc::system_error, std::string{"process: "} + e.what());
  }
}

pid_t process::pid() const {
  if (!rec_)
    return 0;
  std::lock_guard guard{rec_->mtx};
  return rec_->running ? rec_->pid : 0;
}

bool process::running() const {
  return pid() != 0;
}

process_status process::status() const {
  process_status st;
  if (!rec_)
    return st;
  std::lock_guard guard{rec_->mtx};
  st.running = rec_->running;
  st.pid = rec_->running ? rec_->pid : 0;
  st.restarts = rec_->restarts;
  st.last_exit = rec_->last_exit;
  st.started_at = rec_->started_at;
  st.gave_up = rec_->gave_up;
  return st;
}

caf::error process::signal(int sig) const {
  if (!rec_)
    return make_error(errc::invalid_state, "process: empty handle");
  // The reap happens under this lock, so a running pid is never a recycled one.
  std::lock_guard guard{rec_->mtx};
  if (!rec_->running)
    return make_error(errc::invalid_state, "process: no child is running");
  if (::kill(rec_->pid, sig) != 0)
    return make_error(errc::system_error, std::string{"process: kill: "} + std::strerror(errno));
  return {};
}

namespace {

/// MADV_PAGEOUT through process_madvise over the child's read-only file mappings.
caf::expected<size_t> release_code_of(process_record& r) {
  pid_t pid = 0;
  int pidfd = -1;
  {
    // Under the lock the reap takes: the pidfd is this child's, never a recycled pid's.
    std::lock_guard guard{r.mtx};
    if (!r.running)
      return make_error(errc::invalid_state, "process: no child is running");
    pid = r.pid;
    pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0)
      return make_error(errc::system_error,
                        std::string{"process: pidfd_open: "} + std::strerror(errno));
  }
  std::vector<iovec> ranges;
  auto id = std::to_string(pid);
  bool read = detail::for_each_code_mapping(id.c_str(), [&](unsigned long begin, size_t len) {
    ranges.push_back({reinterpret_cast<void*>(begin), len});
  });
  size_t bytes = 0;
  caf::error err;
  if (!read)
    err = make_error(errc::system_error, "process: cannot read /proc/" + id + "/maps");
  for (size_t at = 0; !err && at < ranges.size(); at += IOV_MAX) {
    auto n = std::min<size_t>(ranges.size() - at, IOV_MAX);
    auto r = ::syscall(SYS_process_madvise, pidfd, ranges.data() + at, n, MADV_PAGEOUT, 0u);
    if (r >= 0) {
      bytes += static_cast<size_t>(r);
      continue;
    }
    int e = errno;
    if (e == EPERM)
      err = make_error(errc::not_authorized, "process: process_madvise needs CAP_SYS_NICE "
                                             "over the child (groved as root)");
    else
      err = make_error(e == ENOSYS || e == EINVAL ? errc::unsupported : errc::system_error,
                       std::string{"process: process_madvise: "} + std::strerror(e));
  }
  ::close(pidfd);
  if (err)
    return err;
  std::lock_guard guard{r.mtx};
  r.code_released = r.running && r.pid == pid;
  return bytes;
}

} // namespace

void supervisor::release_released_children() {
  for (auto& rp : children_) {
    bool again = false;
    {
      std::lock_guard guard{rp->mtx};
      again = rp->running && rp->code_released;
    }
    if (again)
      [[maybe_unused]] auto r = release_code_of(*rp);
  }
}

namespace detail {

void release_children_code_pages() noexcept {
  // No supervisor yet: no child, and no thread to start for nothing.
  if (!supervisor::exists().load())
    return;
  try {
    auto& sup = supervisor::instance();
    sup.post([&sup] { sup.release_released_children(); });
  } catch (...) {
    // Out of memory: the children keep their pages until the next release.
  }
}

} // namespace detail

caf::expected<size_t> process::release_code_pages() const {
  if (!rec_)
    return make_error(errc::invalid_state, "process: empty handle");
  return release_code_of(*rec_);
}

void process::stop(int sig, std::optional<std::chrono::milliseconds> grace) {
  if (!rec_)
    return;
  try {
    auto g = grace ? *grace : rec_->opts.stop_grace;
    auto& sup = supervisor::instance();
    sup.post([&sup, rec = rec_, sig, g] { sup.stop(rec, sig, g); });
  } catch (...) {
    // Out of memory: the child dies with groved (parent-death signal).
  }
}

void process::set_restart(bool on) {
  if (!rec_)
    return;
  std::lock_guard guard{rec_->mtx};
  rec_->opts.restart = on;
}

void process::bind(context& ctx, process_callbacks cb) {
  bind(owner_of(ctx), std::move(cb));
}

void process::bind(process_owner owner, process_callbacks cb) {
  if (!rec_)
    return;
  std::lock_guard guard{rec_->mtx};
  rec_->cb = std::move(cb);
  if (owner.log)
    rec_->log = owner.log;
  rec_->owner = std::move(owner);
  // Checked and bound under one lock: an exit since the last owner let go reaches this one.
  if (auto ex = std::exchange(rec_->unowned_exit, std::nullopt);
      ex && !rec_->running && rec_->owner.post && rec_->cb.on_exit)
    rec_->owner.post([f = rec_->cb.on_exit, ex = *ex] { f(ex); });
}

void process::unbind() {
  if (!rec_)
    return;
  process_callbacks old_cb;
  process_owner old_owner;
  {
    std::lock_guard guard{rec_->mtx};
    old_cb = std::move(rec_->cb);
    old_owner = std::move(rec_->owner);
    rec_->cb = {};
    rec_->owner = {};
  }
  // Destroyed here, outside the lock, while the owner's code is still loaded.
}

} // namespace grove
