#pragma once

// The watchdog's side of systemd's notify protocol when it is a Type=notify unit's main
// process (packaging/grove-ota.service, README.md "Under systemd"). groved gets its own
// NOTIFY_SOCKET (an abstract Unix datagram socket of the watchdog) and WATCHDOG_USEC for
// its pid; the relay forwards what the current groved says (READY=1, WATCHDOG=1,
// STATUS=) to the service manager, so a wedged groved still stops the feed. While a
// groved is starting or on trial the watchdog feeds systemd itself (bounded by its own
// deadlines), so an update's restart or a rollback does not look like a hang. Inactive
// (every call a no-op) without NOTIFY_SOCKET.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace grove::ota {

/// Relays groved's notifications to the service manager (see the file comment).
class notify_relay {
public:
  using clock = std::chrono::steady_clock;

  notify_relay() = default;
  ~notify_relay();

  notify_relay(const notify_relay&) = delete;
  notify_relay& operator=(const notify_relay&) = delete;

  /// Opens the relay's socket and starts its thread when NOTIFY_SOCKET is set; "" on
  /// success or when inactive, else why not.
  std::string start();

  /// True when the watchdog runs under a service manager.
  bool active() const noexcept {
    return fd_ >= 0;
  }

  /// groved's environment: the watchdog's without systemd's variables, plus (when
  /// active) NOTIFY_SOCKET naming the relay and WATCHDOG_USEC. Made before fork() (the
  /// child of a threaded process only execs); no WATCHDOG_PID, whose pid is not known
  /// yet (without it the variable is groved's, and groved strips both for its children).
  std::vector<std::string> child_env() const;

  /// `pid` is the groved whose messages count from now on; the watchdog feeds the
  /// manager itself until that groved says READY=1 or `self_feed` has passed.
  void set_child(pid_t pid, clock::duration self_feed);

  /// The watchdog feeds the manager itself until `until` (a trial), whatever groved says.
  void feed_until(clock::time_point until);

  /// Sends STATUS=`text`.
  void status(const std::string& text);

  /// Sends STOPPING=1 and ends the thread.
  void stopping();

private:
  void run();
  void send(const std::string& msg);
  void on_datagram(const char* data, size_t n, pid_t sender);

  int fd_ = -1;
  std::string name_;      // "@grove-ota-watchdog-<pid>"
  std::string usec_text_; // WATCHDOG_USEC as the manager gave it, or ""
  std::chrono::microseconds period_{0};
  std::atomic<pid_t> child_{0};
  std::mutex mtx_;
  clock::time_point feed_until_{};
  bool until_ready_ = false;
  bool stop_ = false;
  std::thread thread_;
};

} // namespace grove::ota
