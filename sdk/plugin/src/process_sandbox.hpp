#pragma once

// The sandbox of one grove::process child (process_options::sandbox), in two halves: a
// plan built in the parent (every path, flag and string resolved, so the child allocates
// nothing), and the steps the child runs between clone and exec from it. Private to
// process.cpp.

#include <linux/filter.h>
#include <sys/types.h>

#include <deque>
#include <string>
#include <vector>

#include <caf/error.hpp>

#include "grove/process.hpp"

namespace grove::detail {

/// Whether this build is instrumented (ASan, TSan): such code must not run in a child
/// sharing the parent's memory (the sanitizer's per-thread state would be the calling
/// thread's, used by two tasks at once), so process.cpp and the prepared root's builder
/// clone a copy instead.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool sanitized_build = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool sanitized_build = true;
#else
inline constexpr bool sanitized_build = false;
#endif
#else
inline constexpr bool sanitized_build = false;
#endif

/// The namespaces a sandboxed child is cloned into (the network stays shared): none of
/// its own but a mount namespace without a prepared root (sandbox_direct_flag). Its IPC
/// and UTS namespaces are its holder's (sandbox_holder_flags). Its user
/// namespace is not among them: it joins one made beforehand (sandbox_user_namespace)
/// once its root is built, so nothing of the parent is needed between clone and exec.
/// Nor is its PID namespace: that is made by a holder process, PID 1 there, and the
/// child is born into it as PID 2 (process.cpp, pid_namespace_holder), so that it is
/// not the namespace's init, which the kernel shields from every signal it does not
/// handle but SIGKILL (a denied call must end it with SIGSYS). Nor is its mount
/// namespace when its root is prepared: it joins that root's (sandbox_root_namespace)
/// and copies it (unshare), which is cheaper than copying the host's tree, building the
/// root and detaching the host's after pivot_root at every start. A start whose root is
/// not prepared yet adds sandbox_direct_flag and builds it itself, as before.
constexpr unsigned long sandbox_clone_flags = 0;

/// The namespaces the PID namespace's holder is made in besides its PID namespace (by
/// the supervisor, ahead of the start when it can), which the child joins first thing
/// in sandbox_enter: IPC (a new one mounts an mqueue file system) and UTS.
constexpr unsigned long sandbox_holder_flags = 0x08000000UL /* CLONE_NEWIPC */
                                               | 0x04000000UL /* CLONE_NEWUTS */;

/// CLONE_NEWNS: the clone flag of a start without a prepared root (sandbox_plan::mntns_fd).
constexpr unsigned long sandbox_direct_flag = 0x00020000UL;


/// One step of the child's root: only C strings and numbers.
struct sandbox_step {
  /// What the step does.
  /// mask: hides a path of a new /proc (/dev/null on a file, an empty read-only tmpfs on
  /// a directory); cover: binds a path onto itself read-only. Both skip a missing path.
  /// devpts: a new devpts instance (source: its options).
  enum class op : uint8_t { bind, tmpfs, proc, read_only, mask, cover, devpts };
  /// What the step does.
  op what = op::bind;
  /// bind: the host path; tmpfs, devpts: options.
  const char* source = nullptr;
  /// The path relative to the root (the child works from there).
  const char* target = nullptr;
  /// read_only: recursive.
  bool recursive = true;
  /// tmpfs: MS_NOEXEC too.
  bool noexec = false;
};

/// A sandbox resolved for one spawn. Lives in the parent across the fork; the child
/// reads it only.
struct sandbox_plan {
  /// Storage of every C string below (a deque: pointers stay put).
  std::deque<std::string> strings;
  /// The steps the child makes: with a prepared root, in its copy of it, its own file
  /// systems (/proc of its PID namespace and what covers it, a writable tmpfs, a
  /// devpts, and any later step at, below or above one of them); without one, every
  /// step of the root, in the order given.
  std::vector<sandbox_step> steps;
  /// The steps a prepared root is built with (binds and what makes them read-only).
  std::vector<sandbox_step> root_steps;
  /// The prepared root's key (sandbox_prepare_root); empty: this root is never prepared
  /// (a bind at or below a start's own file system: its source is the host's).
  std::string root_key;
  /// The prepared root's mount namespace the child joins and copies (the child's copy, a
  /// high descriptor); -1: none yet, the child builds its root in a new mount namespace
  /// of its own (sandbox_direct_flag) and the supervisor prepares it after the start.
  int mntns_fd = -1;
  /// Without a prepared root: this root was started before, so the supervisor prepares
  /// it after this start (a root started once, a pinned function's, never costs that).
  bool prepare_root = false;
  /// The root's skeleton on the host (its mount points and links, made by the parent).
  const char* root = nullptr;
  /// Working directory inside the new root.
  const char* cwd = "/";
  /// Host name.
  std::string hostname;
  /// The child writes "0" (itself) to each first thing: v1's `tasks` files beside the
  /// given cgroup.procs, and any other cgroup.procs. Opened by the parent (permission is
  /// checked against the opener, root). A task moving itself through `tasks` skips the
  /// kernel's thread-group lock, whose write side waits for an RCU grace period
  /// (milliseconds) when the parent moves another process.
  std::vector<int> attach_fds;
  /// v2: the cgroup directory of the first cgroup.procs on a cgroup2 file system; the
  /// child is cloned into it (clone3's CLONE_INTO_CGROUP: no migration at all). -1: none.
  int cgroup_dir_fd = -1;
  /// Its cgroup.procs (write-only), for a kernel that refuses clone3: the child then
  /// writes "0" to it (`attach_dir`); either way it closes it before running anything.
  int cgroup_dir_procs_fd = -1;
  /// See cgroup_dir_procs_fd.
  bool attach_dir = false;
  /// The user namespace the child joins (sandbox_user_namespace; the child's copy, a
  /// high descriptor).
  int userns_fd = -1;
  /// The seccomp program.
  std::vector<sock_filter> filter;
  /// GROVE_SANDBOX_TIMING=<file> (tools/bench): a page shared with the child where each
  /// side notes when it reached each step (CLOCK_MONOTONIC ns, see sandbox_mark); the
  /// parent appends them to the file as one JSON line per start. Null: off.
  uint64_t* marks = nullptr;
  /// With a filter: a datagram socketpair the child sends the filter's listener over
  /// (SCM_RIGHTS) and goes straight on to exec; the parent receives it after the exec.
  /// The child's end (a high descriptor) and the parent's.
  int handover_w = -1;
  int handover_r = -1;

  /// Keeps `s` and returns its C string.
  const char* keep(std::string s) {
    strings.push_back(std::move(s));
    return strings.back().c_str();
  }
};

/// Resolves `sb` for a child running as `uid`/`gid`, makes the root's skeleton under
/// `root_base` and looks up its prepared root (sandbox_find_root; parent, supervisor
/// thread; may allocate).
caf::error plan_sandbox(const process_sandbox& sb, uid_t uid, gid_t gid, sandbox_plan& out);

/// The prepared root of `p.root_key`: a descriptor of its mount namespace (the cache's),
/// or -1 when there is none (not built yet, or its build failed: such a root is always
/// built by the child). Without one, sets `p.prepare_root` when the root was started
/// before. Supervisor thread only.
int sandbox_find_root(sandbox_plan& p);

/// Builds `p`'s prepared root when it has none: a mount namespace whose root is
/// `p.root` with `p.root_steps` made in it (pivoted into, the host's tree detached, the
/// root read-only), for sandboxed children to join and copy, made by a short-lived child
/// (sharing groved's memory, on a stack of its own) and kept open (supervisor thread
/// only; close-on-exec). Run after the second start that built its root itself, so no
/// start waits for it. Keyed (`p.root_key`) by the steps and the identity (device, inode) of every
/// bind's source, so a changed set of mounts (a local resource granted or revoked) or a
/// source made anew at the same path (a re-deployed code directory, a device node
/// re-made) gets a new one. One per host name (a function): its new root lets the old
/// one go, which pins no mount any longer; the least recently used beyond 32 are closed.
/// A bind reaches what its source held when the root was built: a file system mounted
/// below a source later is not seen. A failed build is remembered (the error returned).
caf::error sandbox_prepare_root(const sandbox_plan& p);

/// A user namespace mapping `uid`, `gid` and `groups` 1:1 and nothing else, for sandboxed
/// children to join (setns): made once per set of ids by a short-lived child whose maps
/// the parent writes, then kept open (supervisor thread only; the descriptor is the
/// cache's, close-on-exec; never pruned: one per set of ids, which are few). A process
/// of the namespace has no capability in the others' mount, PID, IPC and UTS namespaces
/// (made by host root at each clone, owned by the initial user namespace), and the ids
/// it maps are the same host ids either way. Sharing it gives sandboxes two things more,
/// which a seccomp filter must deny: the keyrings registered per user namespace (the
/// user and user-session keyrings, named keyrings: keyctl, add_key, request_key), and
/// every capability in a user namespace one of them creates (unshare, clone's namespace
/// flags; reached with setns). Without such a filter, sandboxes of the same ids are not
/// isolated from each other in those two. The holder child is a fork of groved (it
/// holds groved's descriptors until it exits, and execs nothing).
caf::expected<int> sandbox_user_namespace(uid_t uid, gid_t gid,
                                          const std::vector<gid_t>& groups);

/// Child, first half (after the descriptor sweep and sandbox_attach), as host root in
/// its new PID, IPC and UTS namespaces: joins the prepared root's mount namespace and
/// copies it (its own from here) and makes its own steps there, or without a prepared
/// root, in its new mount namespace, builds the root and pivots into it; sets the host name and
/// working directory, joins the user namespace (userns_fd) and empties the capability
/// bounding set. Async-signal-safe; returns 0 or an errno value, with the failed step's
/// index in `step` (-1: none of the plan's steps).
int sandbox_enter(const sandbox_plan& p, int& step) noexcept;

/// "bind /usr", "mount tmpfs on /tmp": what step `step` of `steps` does (parent, for
/// errors); out of range: the part of sandbox_enter that is no step.
std::string describe_step(const std::vector<sandbox_step>& steps, int step);

/// Child, second half (after the uid/gid switch, just before exec): drops every
/// capability, sets PR_SET_NO_NEW_PRIVS and loads the filter, sending its listener to the
/// parent over `handover_w` and closing it (the worker never holds it). Async-signal-safe.
int sandbox_lock(const sandbox_plan& p) noexcept;

/// Parent, after the child's exec: the listener the child sent; -1 when none came.
int sandbox_take_listener(const sandbox_plan& p);

/// The steps sandbox_plan::marks records, in order.
enum sandbox_mark_id : int {
  mark_clone, mark_child, mark_attached, mark_mounted, mark_pivoted, mark_entered, mark_ids,
  mark_locked, mark_exec, mark_count
};

/// Notes now as step `id` (async-signal-safe; nothing when timing is off).
void sandbox_mark(const sandbox_plan& p, sandbox_mark_id id) noexcept;

/// Parent, after the child's exec: appends the marks to GROVE_SANDBOX_TIMING's file and
/// unmaps them.
void sandbox_report_marks(sandbox_plan& p);

/// Child, first thing after the descriptor sweep: joins the cgroups of `attach_fds` and
/// closes them. Async-signal-safe; 0 or an errno value.
int sandbox_attach(const sandbox_plan& p) noexcept;

} // namespace grove::detail
