#include "process_sandbox.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <utility>
#include <map>
#include <set>

#include "grove/errors.hpp"

namespace grove::detail {

namespace {

namespace fs = std::filesystem;

caf::error plan_error(const std::string& what) {
  return make_error(errc::invalid_config, "process sandbox: " + what);
}

// Writes `text` to a /proc or cgroup file in one write (both want exactly that).
caf::error write_file(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return make_error(errc::system_error, "process sandbox: open " + path + ": "
                                            + std::strerror(errno));
  auto n = ::write(fd, text.data(), text.size());
  auto e = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size()))
    return make_error(errc::system_error, "process sandbox: write " + path + ": "
                                            + std::strerror(n < 0 ? e : EIO));
  return {};
}

} // namespace

caf::error split_and_prepare(sandbox_plan& p);

caf::error plan_sandbox(const process_sandbox& sb, uid_t uid, gid_t gid, sandbox_plan& p) {
  if (sb.root_base.empty() || !sb.root_base.is_absolute())
    return plan_error("root_base must be an absolute directory");
  std::error_code ec;
  if (!fs::is_directory(sb.root_base, ec))
    return plan_error("root_base " + sb.root_base.string() + " is not a directory");
  p.hostname = sb.hostname;
  p.filter = sb.seccomp;
  for (const auto& c : sb.cgroup_procs) {
    // v1: through the `tasks` file beside it (a task moving itself; see attach_fds),
    // which a v2 directory does not have (there the `tasks` open fails first and
    // cgroup.procs is opened: two lookups, as before). The file system is told by the
    // descriptor, not by another lookup of these deep paths (each is on the start's path).
    int fd = c.filename() == "cgroup.procs"
               ? ::open((c.parent_path() / "tasks").c_str(), O_WRONLY | O_CLOEXEC)
               : -1;
    if (fd < 0)
      fd = ::open(c.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
      return plan_error("open " + c.string() + ": " + std::strerror(errno));
    // v2: born in it (one hierarchy, so one directory at most).
    struct statfs fs_info {};
    if (p.cgroup_dir_fd < 0 && c.filename() == "cgroup.procs" && ::fstatfs(fd, &fs_info) == 0
        && fs_info.f_type == 0x63677270 /* CGROUP2_SUPER_MAGIC */) {
      p.cgroup_dir_procs_fd = fd;
      p.cgroup_dir_fd = ::open(c.parent_path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (p.cgroup_dir_fd < 0)
        return plan_error("open " + c.parent_path().string() + ": " + std::strerror(errno));
      continue;
    }
    p.attach_fds.push_back(fd);
  }
  // A tmpfs belongs to the function's user (root is not mapped inside).
  const auto owner = "uid=" + std::to_string(uid) + ",gid=" + std::to_string(gid);
  // The skeleton: every mount point and link of the root, made here on the host by groved
  // (the child could not: an inode made by host root, who is not mapped in its user
  // namespace, would have no owner). One directory per layout, reused.
  struct entry {
    char kind; // 'd' directory, 'f' file, 'l' link
    std::string path;
    std::string link;
  };
  std::vector<entry> layout;
  std::set<std::string> seen;
  auto add = [&](char kind, const fs::path& rel, std::string link = {}) {
    if (seen.insert(rel.string()).second)
      layout.push_back({kind, rel.string(), std::move(link)});
  };
  std::vector<std::string> late_read_only;
  using op = sandbox_step::op;
  auto step = [&](op what, const std::string& target, const char* source = nullptr,
                  bool recursive = true) {
    p.steps.push_back({what, source, p.keep(target), recursive});
  };
  for (const auto& m : sb.mounts) {
    auto target = m.target.lexically_normal();
    if (!target.is_absolute() || target == "/" || target.string().find("..") != std::string::npos)
      return plan_error("mount target '" + m.target.string() + "' must be absolute, below /");
    auto rel = target.relative_path();
    fs::path at;
    for (auto it = rel.begin(); it != rel.end() && std::next(it) != rel.end(); ++it)
      add('d', at /= *it);
    auto full = rel.string();
    switch (m.type) {
      case sandbox_mount::kind::bind: {
        struct stat st {};
        if (::lstat(m.source.c_str(), &st) != 0) {
          if (m.optional && errno == ENOENT)
            break;
          return plan_error("mount source " + m.source.string() + ": " + std::strerror(errno));
        }
        if (S_ISLNK(st.st_mode)) {
          auto to = fs::read_symlink(m.source, ec);
          if (ec)
            return plan_error("readlink " + m.source.string() + ": " + ec.message());
          add('l', rel, to.string());
          break;
        }
        add(S_ISDIR(st.st_mode) ? 'd' : 'f', rel);
        step(op::bind, full, p.keep(m.source.string()));
        if (m.read_only)
          step(op::read_only, full);
        break;
      }
      case sandbox_mount::kind::tmpfs:
        add('d', rel);
        step(op::tmpfs, full, p.keep(m.data.empty() ? owner : m.data + "," + owner));
        p.steps.back().noexec = m.noexec;
        // Read-only once what is mounted inside it is there.
        if (m.read_only)
          late_read_only.push_back(full);
        break;
      case sandbox_mount::kind::proc:
        add('d', rel);
        step(op::proc, full);
        // What container runtimes hide (the OCI defaults' masked paths): kernel memory,
        // keys, timers and scheduler state of the whole host.
        for (const char* hide : {"kcore", "keys", "latency_stats", "timer_list", "timer_stats",
                              "sched_debug", "kpagecount", "kpageflags", "kpagecgroup",
                              "acpi", "asound", "scsi"})
          step(op::mask, (rel / hide).string());
        if (m.read_only) {
          step(op::read_only, full);
        } else {
          // Writable /proc: still not the kernel's knobs (bubblewrap's covered paths).
          for (const char* c : {"sys", "sysrq-trigger", "irq", "bus", "fs"})
            step(op::cover, (rel / c).string());
        }
        break;
      case sandbox_mount::kind::symlink:
        add('l', rel, m.source.string());
        break;
      case sandbox_mount::kind::devpts:
        // Its own instance: no pty of the host (nor of another sandbox) is there, and
        // ptmx is open to all (the device cgroup decides). A pty belongs to its opener's
        // ids (no gid= option: the host's tty group is not mapped inside).
        add('d', rel);
        step(op::devpts, full,
             p.keep(std::string{"newinstance,ptmxmode=0666,mode=0620"}
                    + (m.data.empty() ? "" : "," + m.data)));
        break;
    }
  }
  for (const auto& t : late_read_only)
    step(op::read_only, t, nullptr, false);
  // The root itself last: nothing in it can be written from inside.
  step(op::read_only, ".", nullptr, false);
  auto cwd = sb.cwd.empty() ? fs::path{"/"} : sb.cwd;
  if (!cwd.is_absolute())
    return plan_error("cwd '" + cwd.string() + "' must be absolute");
  p.cwd = p.keep(cwd.string());
  // Named by a hash of the layout; made once (".ok" beside it says it is complete).
  // "modes" names the skeletons made with explicit modes (below): an older one made
  // under groved's umask 077 (a root the sandbox's user could not enter) is not reused.
  std::string text = "modes\n";
  for (const auto& e : layout)
    text += std::string{e.kind} + e.path + '\0' + e.link + '\n';
  char name[32];
  std::snprintf(name, sizeof name, "root-%016zx", std::hash<std::string>{}(text));
  auto skel = sb.root_base.lexically_normal() / name;
  p.root = p.keep(skel.string());
  auto done = fs::path{skel.string() + ".ok"};
  if (fs::exists(done, ec))
    return split_and_prepare(p);
  fs::remove_all(skel, ec);
  // chmod after each mkdir/open: the modes must not depend on the caller's umask
  // (groved runs with 077, which would leave the root closed to the sandbox's user and
  // every exec in it EACCES).
  if (::mkdir(skel.c_str(), 0755) != 0 || ::chmod(skel.c_str(), 0755) != 0)
    return plan_error("mkdir " + skel.string() + ": " + std::strerror(errno));
  for (const auto& e : layout) {
    auto path = skel / e.path;
    int rc = 0;
    if (e.kind == 'd') {
      rc = ::mkdir(path.c_str(), 0755);
      if (rc == 0)
        rc = ::chmod(path.c_str(), 0755);
    } else if (e.kind == 'f') {
      int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
      rc = fd < 0 ? -1 : ::close(fd);
      if (rc == 0)
        rc = ::chmod(path.c_str(), 0644);
    } else {
      rc = ::symlink(e.link.c_str(), path.c_str());
    }
    if (rc != 0)
      return plan_error("cannot make " + path.string() + ": " + std::strerror(errno));
  }
  int fd = ::open(done.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0)
    return plan_error("cannot make " + done.string() + ": " + std::strerror(errno));
  ::close(fd);
  return split_and_prepare(p);
}

namespace {

// `a` is `b`, below it or above it ("." is above everything).
bool related(std::string_view a, std::string_view b) {
  if (a == b || a == "." || b == ".")
    return true;
  auto under = [](std::string_view x, std::string_view y) {
    return x.size() > y.size() && x.starts_with(y) && x[y.size()] == '/';
  };
  return under(a, b) || under(b, a);
}

} // namespace

caf::error split_and_prepare(sandbox_plan& p) {
  // Each start's own: the file systems that must be its own (its PID namespace's /proc
  // and what covers it, a writable tmpfs, a devpts), and any later step at, below or
  // above one of them (their order matters there). The rest (binds, what makes them
  // read-only, the root's own read-only, which is non-recursive) is the prepared root's:
  // moving them ahead of the own steps changes nothing, as their targets are apart.
  using op = sandbox_step::op;
  std::vector<sandbox_step> all = p.steps;
  std::vector<sandbox_step> own;
  std::vector<std::string_view> own_targets;
  for (const auto& s : all) {
    bool is_own = s.what == op::tmpfs || s.what == op::proc || s.what == op::devpts
                  || s.what == op::mask || s.what == op::cover;
    std::string_view target{s.target};
    if (!is_own && target != ".")
      is_own = std::any_of(own_targets.begin(), own_targets.end(),
                        [&](std::string_view t) { return related(target, t); });
    if (is_own) {
      own.push_back(s);
      own_targets.push_back(target);
    } else {
      p.root_steps.push_back(s);
    }
  }
  // A bind among them (onto a file of the new /proc, say) would have to reach the host's
  // tree from the copy of the prepared root, where its source is not: such a root is
  // always built by the child, which still has the host's tree (no key: never prepared).
  if (std::any_of(own.begin(), own.end(), [](const sandbox_step& s) { return s.what == op::bind; }))
    return {};
  // The key: the root, its steps, and what each bind's source is now (a source made
  // anew at the same path is another file: the prepared root still holds the old one).
  std::string key = p.root;
  for (const auto& s : p.root_steps) {
    key += '\n';
    key += std::to_string(static_cast<int>(s.what)) + (s.recursive ? "r" : "") + ' '
           + s.target;
    if (s.what == op::bind) {
      struct stat st {};
      if (::stat(s.source, &st) != 0)
        return plan_error(std::string{"mount source "} + s.source + ": " + std::strerror(errno));
      key += std::string{" "} + s.source + ' ' + std::to_string(st.st_dev) + ':'
             + std::to_string(st.st_ino);
    }
  }
  p.root_key = std::move(key);
  p.mntns_fd = sandbox_find_root(p);
  if (p.mntns_fd >= 0)
    p.steps = std::move(own); // else every step, by the child (sandbox_enter)
  return {};
}

std::string describe_step(const std::vector<sandbox_step>& steps, int step) {
  if (step < 0 || static_cast<size_t>(step) >= steps.size())
    return "its root, pivot_root, host name or user namespace";
  static constexpr const char* names[]
    = {"bind", "mount tmpfs on", "mount proc on", "make read-only", "mask", "cover",
       "mount devpts on"};
  const auto& s = steps[static_cast<size_t>(step)];
  return std::string{names[static_cast<int>(s.what)]} + " /"
         + (std::string_view{s.target} == "." ? std::string{} : std::string{s.target});
}

void sandbox_mark(const sandbox_plan& p, sandbox_mark_id id) noexcept {
  if (p.marks == nullptr)
    return;
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  p.marks[id] = static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

void sandbox_report_marks(sandbox_plan& p) {
  if (p.marks == nullptr)
    return;
  static constexpr const char* names[]
    = {"clone", "child", "attached", "mounted", "pivoted", "entered", "ids", "locked", "exec"};
  std::string line = "{";
  for (int i = 1; i < mark_count; ++i)
    if (p.marks[i] != 0 && p.marks[0] != 0)
      line += std::string{line.size() > 1 ? "," : ""} + "\"" + names[i] + "_us\":"
              + std::to_string(static_cast<double>(p.marks[i] - p.marks[0]) / 1000.0);
  line += "}\n";
  if (const char* file = std::getenv("GROVE_SANDBOX_TIMING"); file != nullptr && *file != '\0') {
    int fd = ::open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      [[maybe_unused]] auto n = ::write(fd, line.data(), line.size());
      ::close(fd);
    }
  }
  ::munmap(p.marks, 4096);
  p.marks = nullptr;
}

int sandbox_attach(const sandbox_plan& p) noexcept {
  for (int fd : p.attach_fds) {
    if (::write(fd, "0", 1) != 1)
      return errno;
    ::close(fd); // the worker must not move itself anywhere
  }
  if (p.cgroup_dir_procs_fd >= 0) {
    if (p.attach_dir && ::write(p.cgroup_dir_procs_fd, "0", 1) != 1)
      return errno;
    ::close(p.cgroup_dir_procs_fd);
  }
  sandbox_mark(p, mark_attached);
  return 0;
}

namespace {

// Makes `steps`, in order, relative to the working directory. `null_tree`: a detached
// copy of the host's /dev/null (open_tree), attached at the first file a mask hides
// (a bind's source must be in this namespace, and the sandbox's own /dev may have no
// null), which the next ones bind; -1: the host's tree is still this namespace's (a
// root built by the child), a mask binds /dev/null itself. Async-signal-safe.
int run_steps(const std::vector<sandbox_step>& steps, int null_tree, int& step) noexcept {
  using op = sandbox_step::op;
  const char* null_at = nullptr;
  step = -1;
  for (const auto& s : steps) {
    ++step;
    int rc = 0;
    switch (s.what) {
      case op::bind:
        rc = ::mount(s.source, s.target, nullptr, MS_BIND | MS_REC, nullptr);
        break;
      case op::tmpfs: {
        unsigned long flags = MS_NOSUID | MS_NODEV;
        if (s.noexec)
          flags |= MS_NOEXEC;
        rc = ::mount("tmpfs", s.target, "tmpfs", flags, s.source);
        break;
      }
      case op::proc:
        rc = ::mount("proc", s.target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
        break;
      case op::devpts:
        rc = ::mount("devpts", s.target, "devpts", MS_NOSUID | MS_NOEXEC, s.source);
        break;
      case op::mask: {
        struct stat st {};
        if (::stat(s.target, &st) != 0) {
          if (errno == ENOENT)
            continue;
          return errno;
        }
        if (S_ISDIR(st.st_mode)) {
          rc = ::mount("tmpfs", s.target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                       "size=4k,mode=555");
          break;
        }
        if (null_at != nullptr || null_tree < 0) {
          rc = ::mount(null_at != nullptr ? null_at : "/dev/null", s.target, nullptr, MS_BIND,
                       nullptr);
        } else {
          rc = static_cast<int>(::syscall(SYS_move_mount, null_tree, "", AT_FDCWD, s.target,
                                          MOVE_MOUNT_F_EMPTY_PATH));
          null_at = s.target;
        }
        break;
      }
      case op::cover: {
        if (::mount(s.target, s.target, nullptr, MS_BIND | MS_REC, nullptr) != 0) {
          if (errno == ENOENT)
            continue;
          return errno;
        }
        mount_attr attr{};
        attr.attr_set = MOUNT_ATTR_RDONLY;
        rc = static_cast<int>(
          ::syscall(SYS_mount_setattr, AT_FDCWD, s.target, AT_RECURSIVE, &attr, sizeof attr));
        break;
      }
      case op::read_only: {
        // mount_setattr keeps the locked flags (nosuid, nodev, ...) a remount would have
        // to repeat, and reaches every submount.
        mount_attr attr{};
        attr.attr_set = MOUNT_ATTR_RDONLY;
        rc = static_cast<int>(::syscall(SYS_mount_setattr, AT_FDCWD, s.target,
                                        s.recursive ? AT_RECURSIVE : 0, &attr, sizeof attr));
        break;
      }
    }
    if (rc != 0)
      return errno;
  }
  step = -1;
  return 0;
}

// In a new mount namespace: binds the skeleton, makes `steps` on it, pivots into it and
// detaches the host's tree (a prepared root's builder, or a child without one).
int build_root(const sandbox_plan& p, const std::vector<sandbox_step>& steps,
               int& step) noexcept {
  step = -1;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return errno;
  // The skeleton, bound onto itself: a mount of this namespace to build on and pivot to.
  if (::mount(p.root, p.root, nullptr, MS_BIND, nullptr) != 0 || ::chdir(p.root) != 0)
    return errno;
  if (int rc = run_steps(steps, -1, step); rc != 0)
    return rc;
  // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves
  // nothing of the host but what was bound in.
  if (::syscall(SYS_pivot_root, ".", ".") != 0 || ::umount2(".", MNT_DETACH) != 0
      || ::chdir("/") != 0)
    return errno;
  return 0;
}

// The rest of sandbox_enter once the root is there: host name, working directory, user
// namespace, bounding set.
int finish_entering(const sandbox_plan& p) noexcept;

} // namespace

int sandbox_enter(const sandbox_plan& p, int& step) noexcept {
  step = -1;
  // The IPC and UTS namespaces its holder, PID 1 here, was made in.
  int holder = static_cast<int>(::syscall(SYS_pidfd_open, 1, 0));
  if (holder < 0)
    return errno;
  if (::setns(holder, sandbox_holder_flags) != 0)
    return errno;
  ::close(holder);
  if (p.mntns_fd < 0) {
    // No prepared root yet (the supervisor makes it after this start): the whole root,
    // in this child's new mount namespace.
    if (int rc = build_root(p, p.steps, step); rc != 0)
      return rc;
    sandbox_mark(p, mark_mounted);
    sandbox_mark(p, mark_pivoted);
    return finish_entering(p);
  }
  // The host's /dev/null, for /proc's masks, while the host's tree is still this one.
  int null_tree = -1;
  for (const auto& s : p.steps)
    if (s.what == sandbox_step::op::mask) {
      null_tree = static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, "/dev/null",
                                             OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
      if (null_tree < 0)
        return errno;
      break;
    }
  // The prepared root, then a copy of it of its own (its root and working directory
  // are the copy's root from here): no mount of this start is seen by another.
  if (::setns(p.mntns_fd, CLONE_NEWNS) != 0)
    return errno;
  ::close(p.mntns_fd);
  if (::unshare(CLONE_NEWNS) != 0 || ::chdir("/") != 0)
    return errno;
  sandbox_mark(p, mark_mounted);
  if (int rc = run_steps(p.steps, null_tree, step); rc != 0)
    return rc;
  if (null_tree >= 0)
    ::close(null_tree);
  sandbox_mark(p, mark_pivoted);
  return finish_entering(p);
}

namespace {

int finish_entering(const sandbox_plan& p) noexcept {
  if (!p.hostname.empty() && ::sethostname(p.hostname.data(), p.hostname.size()) != 0)
    return errno;
  if (::chdir(p.cwd) != 0)
    return errno;
  // Last as host root: the mapped ids from here on, with capabilities only in the user
  // namespace (none in the ones above, which the initial user namespace owns).
  if (::setns(p.userns_fd, CLONE_NEWUSER) != 0)
    return errno;
  ::close(p.userns_fd);
  // Capabilities are numbered from 0 to the kernel's last: the first EINVAL ends them.
  for (int cap = 0; cap < 64; ++cap)
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
      if (errno != EINVAL)
        return errno;
      break;
    }
  sandbox_mark(p, mark_entered);
  return 0;
}

} // namespace

int sandbox_lock(const sandbox_plan& p) noexcept {
  sandbox_mark(p, mark_ids);
  // Nothing left: permitted, effective, inheritable and ambient (the bounding set is
  // empty since sandbox_enter, so exec grants nothing either).
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capset, &hdr, data) != 0)
    return errno;
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    return errno;
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return errno;
  if (!p.filter.empty()) {
    sock_fprog prog{static_cast<unsigned short>(p.filter.size()),
                    const_cast<sock_filter*>(p.filter.data())};
    int listener = static_cast<int>(::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                                              SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog));
    if (listener < 0)
      return errno;
    // To the parent, queued in the socket: no round trip, and the worker never holds it
    // (it could answer its own denied calls).
    char byte = 0;
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &listener, sizeof(int));
    if (::sendmsg(p.handover_w, &msg, MSG_NOSIGNAL) != 1)
      return errno;
    ::close(listener);
    ::close(p.handover_w);
  }
  sandbox_mark(p, mark_locked);
  return 0;
}

int sandbox_take_listener(const sandbox_plan& p) {
  if (p.handover_r < 0)
    return -1;
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  if (::recvmsg(p.handover_r, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) != 1)
    return -1;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  if (c == nullptr || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
    return -1;
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
  return fd;
}

caf::expected<int> sandbox_user_namespace(uid_t uid, gid_t gid,
                                          const std::vector<gid_t>& groups) {
  // The primary group and every supplementary one, one line each (in one write).
  std::set<gid_t> gids{groups.begin(), groups.end()};
  gids.insert(gid);
  std::string gid_map;
  for (auto g : gids)
    gid_map += std::to_string(g) + " " + std::to_string(g) + " 1\n";
  auto uid_map = std::to_string(uid) + " " + std::to_string(uid) + " 1\n";
  static std::map<std::string, int> made; // by its maps; supervisor thread only
  auto key = uid_map + "/" + gid_map;
  if (auto it = made.find(key); it != made.end())
    return it->second;
  auto fail = [](const std::string& what) {
    return make_error(errc::system_error, "process sandbox: user namespace: " + what + ": "
                                            + std::strerror(errno));
  };
  // A child in a new user namespace waits on a pipe while its maps are written and the
  // namespace is opened; the open descriptor keeps the namespace once it is gone.
  int hold[2];
  if (::pipe2(hold, O_CLOEXEC) != 0)
    return fail("pipe2");
  pid_t pid = static_cast<pid_t>(::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr,
                                           nullptr, nullptr, nullptr));
  if (pid == 0) {
    char c = 0;
    ::syscall(SYS_close, hold[1]);
    ::syscall(SYS_read, hold[0], &c, 1); // returns when the parent's end closes
    ::syscall(SYS_exit_group, 0);
  }
  auto e = errno;
  ::close(hold[0]);
  if (pid < 0) {
    ::close(hold[1]);
    errno = e;
    return fail("clone");
  }
  auto proc = "/proc/" + std::to_string(pid) + "/";
  caf::error err = write_file(proc + "uid_map", uid_map);
  if (!err)
    err = write_file(proc + "gid_map", gid_map);
  int fd = -1;
  if (!err) {
    fd = ::open((proc + "ns/user").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      err = fail("open " + proc + "ns/user");
  }
  ::close(hold[1]);
  // Killed, not awaited: its read ends at the pipe's EOF only once no process holds the
  // write end, and a child another thread of groved forks meanwhile (close-on-exec keeps
  // it until that child's exec, or for good if it never execs) would hold this start,
  // and every later one of the supervisor, until then. The open descriptor keeps the
  // namespace. SIGKILL ends it wherever it is (it makes no call that could sleep
  // uninterruptibly), so the reap below is bounded.
  ::kill(pid, SIGKILL);
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (err)
    return err;
  made.emplace(std::move(key), fd);
  return fd;
}

namespace {

// What the prepared root's builder reads.
struct builder_args {
  const sandbox_plan* plan;
  int result_w; // [step, errno]
  int hold_r;   // read until killed
  int hold_w;   // its copy, closed
};

// The prepared root's builder: system calls only (it may share groved's memory, whose
// errno it then writes: the parent trusts none until it has the result).
int root_builder(void* arg) {
  auto& a = *static_cast<builder_args*>(arg);
  int step = -1;
  int rc = build_root(*a.plan, a.plan->root_steps, step);
  int msg[2] = {step, rc};
  ::syscall(SYS_write, a.result_w, msg, sizeof msg);
  char c = 0;
  ::syscall(SYS_close, a.hold_w);
  ::syscall(SYS_read, a.hold_r, &c, 1); // until killed
  ::syscall(SYS_exit, 0);
  return 0;
}

} // namespace

namespace {

// The prepared roots (supervisor thread only): by key (fd -1: its build failed), and
// each host name's (one per function) latest key.
struct prepared_root {
  int fd;
  uint64_t used;
};
std::map<std::string, prepared_root>& prepared_roots() {
  static std::map<std::string, prepared_root> made;
  return made;
}
std::map<std::string, std::string>& roots_by_name() {
  static std::map<std::string, std::string> names;
  return names;
}
uint64_t roots_clock = 0;

// Builds p's prepared root (sandbox_prepare_root): its mount namespace's descriptor.
caf::expected<int> build_prepared_root(const sandbox_plan& p);

// Notes `p.root_key` as `p.hostname`'s root; the one it had goes once no other name
// has it: a function's new root (a resource granted or revoked, its code made anew)
// lets the old one go at once, so that mounts no longer wanted (a revoked volume's file
// system) are not pinned by it.
void note_root_name(const sandbox_plan& p) {
  auto& names = roots_by_name();
  auto [it, fresh] = names.try_emplace(p.hostname, p.root_key);
  if (fresh || it->second == p.root_key)
    return;
  auto old = std::exchange(it->second, p.root_key);
  if (std::any_of(names.begin(), names.end(), [&](const auto& n) { return n.second == old; }))
    return;
  auto& made = prepared_roots();
  if (auto m = made.find(old); m != made.end()) {
    if (m->second.fd >= 0)
      ::close(m->second.fd);
    made.erase(m);
  }
}

} // namespace

int sandbox_find_root(sandbox_plan& p) {
  auto& made = prepared_roots();
  auto it = made.find(p.root_key);
  if (it == made.end()) {
    // Started before: worth preparing. The keys of roots started once are few (one
    // per function); a set grown past 256 (keys changing all the time) starts again.
    static std::set<std::string> started;
    if (started.size() >= 256)
      started.clear();
    p.prepare_root = !started.insert(p.root_key).second;
    return -1;
  }
  it->second.used = ++roots_clock;
  note_root_name(p);
  return it->second.fd;
}

caf::error sandbox_prepare_root(const sandbox_plan& p) {
  auto& made = prepared_roots();
  if (made.count(p.root_key) > 0)
    return {};
  auto e = build_prepared_root(p);
  // Besides, the least recently used beyond 32 are let go (a child joins one during its
  // start only, and starts are made one at a time on this thread).
  if (made.size() >= 32) {
    auto oldest = std::min_element(made.begin(), made.end(), [](const auto& a, const auto& b) {
      return a.second.used < b.second.used;
    });
    std::erase_if(roots_by_name(), [&](const auto& n) { return n.second == oldest->first; });
    if (oldest->second.fd >= 0)
      ::close(oldest->second.fd);
    made.erase(oldest);
  }
  made.emplace(p.root_key, prepared_root{e ? *e : -1, ++roots_clock});
  note_root_name(p);
  return e ? caf::error{} : std::move(e.error());
}

namespace {

caf::expected<int> build_prepared_root(const sandbox_plan& p) {
  auto fail = [](const std::string& what) {
    return make_error(errc::system_error, "process sandbox: prepared root: " + what + ": "
                                            + std::strerror(errno));
  };
  // A child in a new mount namespace builds the root and reports [step, errno] on one
  // pipe, then waits on the other while the parent opens its namespace; the open
  // descriptor keeps the namespace once it is gone. It shares groved's memory (no copy
  // of its page tables, which a fork of a large groved pays in milliseconds) on a stack
  // of its own, every signal blocked, until it is killed.
  int result[2];
  int hold[2];
  if (::pipe2(result, O_CLOEXEC) != 0)
    return fail("pipe2");
  if (::pipe2(hold, O_CLOEXEC) != 0) {
    auto e = errno;
    ::close(result[0]);
    ::close(result[1]);
    errno = e;
    return fail("pipe2");
  }
  constexpr size_t stack_size = 64 * 1024;
  void* stack = MAP_FAILED;
  if (!sanitized_build)
    stack = ::mmap(nullptr, stack_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
  builder_args args{&p, result[1], hold[0], hold[1]};
  pid_t pid = -1;
  if (stack != MAP_FAILED) {
    ::mprotect(stack, 4096, PROT_NONE); // a guard page below it
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = ::clone(root_builder, static_cast<char*>(stack) + stack_size,
                  CLONE_VM | CLONE_NEWNS | SIGCHLD, &args);
    auto e = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    errno = e;
  } else {
    pid = static_cast<pid_t>(::syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, nullptr, nullptr,
                                       nullptr, nullptr));
    if (pid == 0)
      root_builder(&args);
  }
  auto e = errno;
  ::close(result[1]);
  ::close(hold[0]);
  auto end = [&] {
    ::close(result[0]);
    ::close(hold[1]);
    if (pid > 0) {
      // Killed, not awaited: see sandbox_user_namespace (another fork of groved may hold
      // the pipe's write end). Its only calls that sleep are interruptible.
      ::kill(pid, SIGKILL);
      int st = 0;
      while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
      }
    }
    if (stack != MAP_FAILED)
      ::munmap(stack, stack_size); // the builder is gone
  };
  if (pid < 0) {
    end();
    errno = e;
    return fail("clone (new mount namespace)");
  }
  // Until the result is in, errno may be the builder's: any error fails (groved installs
  // no signal handlers, so no EINTR is expected).
  int msg[2] = {0, 0};
  pollfd pf{result[0], POLLIN, 0};
  int ready = ::poll(&pf, 1, 10000);
  ssize_t got = ready > 0 ? ::read(result[0], msg, sizeof msg) : -1;
  if (got != static_cast<ssize_t>(sizeof msg)) {
    end();
    errno = ready == 0 ? ETIMEDOUT : EIO;
    return fail("its builder did not report");
  }
  if (msg[1] != 0) {
    end();
    return make_error(errc::system_error, "process sandbox: cannot enter its sandbox ("
                                            + describe_step(p.root_steps, msg[0])
                                            + "): " + std::strerror(msg[1]));
  }
  int fd = ::open(("/proc/" + std::to_string(pid) + "/ns/mnt").c_str(), O_RDONLY | O_CLOEXEC);
  e = errno;
  end();
  if (fd < 0) {
    errno = e;
    return fail("open its namespace");
  }
  return fd;
}

} // namespace

} // namespace grove::detail
