#pragma once

// A component process held by a pidfd: the runner's way to find and signal them, and what
// component_freezer stops, moves and continues.

#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <utility>

namespace grove::deployment {

/// One of a runner's component processes, found by its environment and held by a pidfd
/// opened before the environment was read: a signal through it reaches that process or
/// none, never one given its pid since.
struct held_process {
  /// Its pid, for logs, getpgid, /proc and cgroup.procs.
  pid_t pid = 0;
  /// Holds `pid` (pidfd_open, or -1).
  int fd = -1;

  held_process(pid_t p, int f) : pid(p), fd(f) {}
  held_process(held_process&& o) noexcept : pid(o.pid), fd(std::exchange(o.fd, -1)) {}
  held_process& operator=(held_process&&) = delete;
  held_process(const held_process&) = delete;
  ~held_process() {
    if (fd >= 0)
      ::close(fd);
  }

  /// Holds `pid` now (pidfd_open; fd -1 when it is gone).
  static held_process open(pid_t pid) {
    return {pid, static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))};
  }

  /// pidfd_send_signal: true when the process was there to get it (0 only checks).
  bool signal(int sig) const {
    return fd >= 0 && ::syscall(SYS_pidfd_send_signal, fd, sig, nullptr, 0) == 0;
  }

  /// Its process group while it lives (0 once it has ended).
  pid_t group() const {
    auto g = ::getpgid(pid);
    return g > 0 && signal(0) ? g : 0; // still alive after getpgid: the group was its
  }
};

} // namespace grove::deployment
