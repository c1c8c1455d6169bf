#pragma once

// groved's side of systemd's notify protocol (Type=notify, WatchdogSec=): READY=1 once
// every plugin of the profile has been started, WATCHDOG=1 while the kernel's actor
// system answers, STOPPING=1 on shutdown. Does nothing unless NOTIFY_SOCKET is set, so a
// groved started by hand, by tools/run or by tests behaves as before; libsystemd.so.0 is
// dlopen()ed only then (libsystemd-dev provides the header, libsystemd0 the library).

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include <caf/fwd.hpp>

namespace grove {

/// Notifies the service manager named by NOTIFY_SOCKET; a no-op without one.
class systemd_notifier {
public:
  systemd_notifier();
  ~systemd_notifier();

  systemd_notifier(const systemd_notifier&) = delete;
  systemd_notifier& operator=(const systemd_notifier&) = delete;

  /// True when NOTIFY_SOCKET is set and libsystemd.so.0 was loaded.
  bool enabled() const noexcept {
    return enabled_;
  }

  /// Why NOTIFY_SOCKET is set but notifications are off (empty otherwise).
  const std::string& error() const noexcept {
    return error_;
  }

  /// Sends READY=1 with `status` as STATUS=.
  void ready(const std::string& status);

  /// Sends STOPPING=1 and ends the watchdog feed.
  void stopping();

  /// When the manager asked for a watchdog (WATCHDOG_USEC for this pid), starts a thread
  /// that sends WATCHDOG=1 every half period, each time only when the CAF workers of `sys`
  /// have run the ping job sent one period before: a wedged scheduler stops the feed and
  /// systemd restarts groved.
  void start_watchdog(caf::actor_system& sys);

  /// The feed period (half of WATCHDOG_USEC); zero when no watchdog was asked for.
  std::chrono::microseconds watchdog_period() const noexcept {
    return period_;
  }

private:
  void send(const std::string& state);

  bool enabled_ = false;
  std::string error_;
  void* lib_ = nullptr;
  int (*notify_)(int, const char*) = nullptr;
  std::chrono::microseconds period_{0};
  std::mutex mtx_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread feeder_;
};

} // namespace grove
