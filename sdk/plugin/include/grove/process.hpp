#pragma once

// grove::process: a supervised child process. Every child is forked by one long-lived
// supervisor thread of libgrove_core (so its parent-death signal fires when groved dies,
// not when the plugin instance or CAF worker that asked for it goes away), which also
// watches its exit (pidfd) and its stdout/stderr, stops it (SIGTERM, then SIGKILL after a
// grace period), restarts it with the kernel's back-off policy and reports exits and
// output on the owner's actor. See sdk/plugin/README.md, "Child processes".

#include <linux/filter.h>
#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "grove/supervision.hpp"

namespace spdlog {
class logger;
}

namespace grove {

class context;

namespace detail {
struct process_record;
} // namespace detail

/// How one run of a child ended.
struct process_exit {
  /// The child's process id.
  pid_t pid = 0;
  /// Exit code when it exited; -1 when a signal ended it.
  int code = -1;
  /// The signal that ended it; 0 when it exited.
  int signal = 0;
  /// The signal's name, e.g. "SIGKILL"; empty when it exited.
  std::string signal_name;
  /// The owner asked for it (stop(), or the handle went away).
  bool requested = false;
  /// A restart is scheduled after `restart_in`.
  bool restarting = false;
  /// Back-off before the restart.
  std::chrono::milliseconds restart_in{0};
  /// Too many failures within the policy's window: no more restarts.
  bool gave_up = false;
  /// The system call number the sandbox's seccomp filter denied (the child was killed for
  /// it, see process_sandbox::seccomp); -1 when none.
  int denied_syscall = -1;

  /// "exited with code 3" or "killed by signal 9 (SIGKILL)".
  std::string describe() const;
};

/// Which output stream a line came from.
enum class output_stream : uint8_t {
  /// The child's stdout.
  out,
  /// The child's stderr.
  err,
};

/// Log level of a child's output lines (spdlog's levels, without including spdlog).
enum class output_level : uint8_t {
  /// spdlog::level::debug
  debug,
  /// spdlog::level::info
  info,
  /// spdlog::level::warn
  warn,
  /// spdlog::level::err
  error,
  /// not logged
  off,
};

/// One mount a sandboxed child makes in its new root, in order (process_sandbox::mounts).
struct sandbox_mount {
  /// What is mounted.
  enum class kind : uint8_t {
    /// `source` (a host directory or file, recursively) at `target`; a source that is a
    /// symbolic link is recreated as the same link instead.
    bind,
    /// A new tmpfs at `target`, options `data` (e.g. "size=16384k,mode=1777").
    tmpfs,
    /// The /proc of the child's PID namespace at `target`.
    proc,
    /// A symbolic link at `target` pointing to `source`.
    symlink,
    /// A new devpts instance at `target` (newinstance, ptmxmode=0666, mode=0620, nosuid,
    /// noexec; `data`: more options, e.g. "max=64"): the child's own pseudo-terminals,
    /// none of the host's. Pair it with a symlink /dev/ptmx -> pts/ptmx, and allow char
    /// 5:2 and 136:* in the child's device cgroup, if any.
    devpts,
  };
  /// What is mounted.
  kind type = kind::bind;
  /// bind: the host path; symlink: the link's text.
  std::filesystem::path source;
  /// Absolute path inside the new root ("/usr", "/dev/null").
  std::filesystem::path target;
  /// bind, tmpfs and proc: read-only (recursively, keeping the source's
  /// nosuid/nodev/noexec). A proc mount always hides the host's kernel state the OCI
  /// defaults mask (kcore, keys, timer_list, ...); a writable one still covers sys,
  /// sysrq-trigger, irq, bus and fs read-only.
  bool read_only = true;
  /// tmpfs: mount options; devpts: options added to its own.
  std::string data;
  /// tmpfs: noexec as well (a tmpfs is always nosuid and nodev), e.g. /dev/shm.
  bool noexec = false;
  /// bind: a missing source is skipped instead of refusing the start (e.g. /lib32).
  bool optional = false;
};

/// Isolation to start a child in (process_options::sandbox). The child gets new PID, mount,
/// IPC and UTS namespaces (PID 1 of its own; the network is shared), a root built from
/// `mounts` on a tmpfs and then read-only (pivot_root: nothing else of the host is
/// reachable), the cgroups in `cgroup_procs` before it runs, a user namespace (joined, one
/// per set of ids) mapping only the options' `uid` and `gid` (required, 1:1; neither may be
/// 0: host root), an empty capability bounding set, no capabilities, PR_SET_NO_NEW_PRIVS
/// and the seccomp filter. groved must be root. PID 1 of a namespace ignores signals it
/// has no handler for, so a stop whose signal the child does not catch sends SIGKILL at
/// once (one that catches it gets the grace).
struct process_sandbox {
  /// An existing host directory the new root's tmpfs is mounted on (inside the child's
  /// own mount namespace: the host sees nothing there).
  std::filesystem::path root_base;
  /// The root's content, made in order (parents of a target are created as needed).
  std::vector<sandbox_mount> mounts;
  /// Working directory inside the new root.
  std::filesystem::path cwd = "/";
  /// The child's host name (its own UTS namespace).
  std::string hostname = "sandbox";
  /// The cgroups (cgroup.procs of each) the child is in before it runs anything.
  std::vector<std::filesystem::path> cgroup_procs;
  /// A classic BPF seccomp program (e.g. libseccomp's seccomp_export_bpf); empty: none.
  /// Loaded last before exec. A call it answers SECCOMP_RET_USER_NOTIF is never made: it
  /// kills the child (SIGSYS; SIGKILL when the child handles, blocks or ignores SIGSYS)
  /// and is reported in process_exit::denied_syscall. It must allow read, write, close, sendmsg and
  /// execve: the child hands the filter's listener to the supervisor with them.
  std::vector<sock_filter> seccomp;
};

/// What to run and how to supervise it. Plain data: it stays with the supervisor
/// across a hand-over (see context::keep_process).
struct process_options {
  /// argv[0] is the program: a path, or a name looked up in PATH when it has no '/'.
  std::vector<std::string> argv;
  /// Environment as NAME=VALUE; nullopt: groved's own environment.
  std::optional<std::vector<std::string>> env;
  /// Working directory; empty: groved's.
  std::filesystem::path cwd;
  /// Group to switch to before exec (setgid + setgroups); nullopt: keep.
  std::optional<gid_t> gid;
  /// User to switch to before exec (after the group); nullopt: keep.
  std::optional<uid_t> uid;
  /// Supplementary groups besides `gid` (set with it; ignored without it). In a sandbox
  /// they are mapped 1:1 into its user namespace too (e.g. a local resource's group).
  std::vector<gid_t> groups;
  /// Sent to the child when groved dies (PR_SET_PDEATHSIG); 0: none.
  int parent_death_signal = SIGKILL;
  /// Descriptors the child gets: {descriptor here, number in the child (>= 3)}. Every
  /// other descriptor above stderr is closed in the child.
  std::vector<std::pair<int, int>> pass_fds;
  /// True: stdout and stderr go through pipes to the log (and on_output); false: the
  /// child shares groved's stdout and stderr. stdin is /dev/null either way.
  bool capture_output = true;
  /// Level of stdout lines in the owner's log.
  output_level stdout_level = output_level::info;
  /// Level of stderr lines in the owner's log.
  output_level stderr_level = output_level::info;
  /// Prefix of output lines in the log; empty: "<program name>[<pid>]: ".
  std::string log_prefix;
  /// Between the stop signal and SIGKILL when stopping.
  std::chrono::milliseconds stop_grace{3000};
  /// Restart after an exit the owner did not ask for.
  bool restart = false;
  /// Back-off and give-up rule of restarts (the kernel's, see supervision.hpp).
  restart_policy policy;
  /// Starts the child isolated (namespaces, new root, cgroups, seccomp); nullopt: none.
  /// `cwd` is then ignored for the sandbox's own.
  std::optional<process_sandbox> sandbox;
};

/// Code the supervisor runs for a child; every member is optional. Plugin code: it is
/// dropped when the owner lets go (handle destroyed, keep_process) and set again by the
/// next owner (process::bind).
struct process_callbacks {
  /// Runs in the child between fork and exec, after the signal and descriptor reset and
  /// before the uid/gid switch. It MUST be async-signal-safe (no malloc, no locks, no
  /// logging: other threads of groved may have held them at fork). Returns 0 to go on,
  /// or an errno value: the child then exits 127 and start() reports the error. A
  /// sandboxed child with a hook is cloned without sharing groved's memory (the hook may
  /// write a static, errno or a thread_local), so the hook costs that start a copy of
  /// groved's page tables.
  std::function<int()> pre_exec;
  /// A new child runs (start and every restart); on the owner's actor.
  std::function<void(pid_t)> on_start;
  /// A child ended; on the owner's actor.
  std::function<void(const process_exit&)> on_exit;
  /// One line of output (without the newline), after it was logged; on the owner's actor.
  std::function<void(output_stream, const std::string&)> on_output;
  /// Lines of output not handed to on_output because the owner was behind (over 1 MiB of
  /// lines waiting for it): their number, each time a run of them ends (before the next
  /// line it gets, or at the end of the stream); on the owner's actor. They are in the
  /// owner's log either way, and on_output gets a note line with the same count.
  std::function<void(output_stream, uint64_t)> on_dropped;
};

/// Where a process reports. Plugins never build one: process::start(context&, ...) does.
struct process_owner {
  /// Runs a function on the owner's actor; called from the supervisor thread.
  std::function<void(std::function<void()>)> post;
  /// Receives output lines and supervision events (any thread).
  std::shared_ptr<spdlog::logger> log;
};

/// A snapshot of a supervised child.
struct process_status {
  /// A child is alive.
  bool running = false;
  /// Its process id; 0 when none.
  pid_t pid = 0;
  /// Restarts after exits the owner did not ask for.
  uint64_t restarts = 0;
  /// How the last child ended ("exited with code 1"); empty before the first exit.
  std::string last_exit;
  /// When the current child started (UTC, ISO 8601); empty when none.
  std::string started_at;
  /// The supervisor gave up restarting (too many failures).
  bool gave_up = false;
};

/// A handle to a supervised child. Movable, not copyable. Destroying a handle stops the
/// child (stop()); hand it to context::keep_process to let it outlive the instance.
/// All members are thread-safe.
class process {
public:
  /// An empty handle.
  process() noexcept;

  /// Stops the child unless the handle is empty.
  ~process();

  /// Moves the child over; `other` becomes empty.
  process(process&& other) noexcept;

  /// Stops this handle's child, then takes over `other`'s.
  process& operator=(process&& other) noexcept;

  process(const process&) = delete;
  process& operator=(const process&) = delete;

  /// Starts a child owned by a plugin: events on the plugin's actor, output in its log.
  /// Returns once the child has exec'd (or failed to: the error says why, e.g. the
  /// program is missing or pre_exec failed); never waits for the child beyond that.
  static caf::expected<process> start(context& ctx, process_options opts,
                                      process_callbacks cb = {});

  /// Starts a child for an explicit owner (the kernel's own children).
  static caf::expected<process> start(process_owner owner, process_options opts,
                                      process_callbacks cb = {});

  /// The owner process::start(ctx, ...) uses: `ctx`'s actor and a copy of its logger.
  static process_owner owner_of(context& ctx);

  /// True unless empty.
  explicit operator bool() const noexcept {
    return rec_ != nullptr;
  }

  /// The running child's pid; 0 when none.
  pid_t pid() const;

  /// True while a child is alive.
  bool running() const;

  /// The current state.
  process_status status() const;

  /// Sends `sig` to the child (not its group); an error when none runs.
  caf::error signal(int sig) const;

  /// Marks the child's code cold: its read-only file mappings (executable, libraries)
  /// get MADV_PAGEOUT through process_madvise, so start-up code nothing touches again
  /// stops counting against an idle device (pages another process maps stay, and what
  /// the child touches later faults back in). Needs CAP_SYS_NICE over the child (groved
  /// as root): errc::not_authorized otherwise. The bytes advised.
  caf::expected<size_t> release_code_pages() const;

  /// Stops for good, asynchronously: `sig` (default SIGTERM; 0 sends nothing) to the
  /// child's process group now, SIGKILL after `grace` (default: the options'
  /// stop_grace). No restart afterwards; on_exit reports the end with `requested`.
  void stop(int sig = SIGTERM, std::optional<std::chrono::milliseconds> grace = {});

  /// Turns restarts after unexpected exits on or off from now on (e.g. on once a child
  /// proved that it starts).
  void set_restart(bool on);

  /// Makes a plugin the owner (after context::adopt_process): events go to its actor
  /// and its callbacks from now on, starting with an exit while nobody owned the child.
  void bind(context& ctx, process_callbacks cb = {});

  /// Makes `owner` the owner, with callbacks `cb`.
  void bind(process_owner owner, process_callbacks cb = {});

  /// Drops owner and callbacks; the child runs on, output still logged. An exit while
  /// nobody owns the child is not restarted; the next bind posts it to the new owner's
  /// on_exit (so a running() check before bind never misses an exit in between).
  void unbind();

private:
  std::shared_ptr<detail::process_record> rec_;
};

} // namespace grove
