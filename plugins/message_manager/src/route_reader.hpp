#pragma once
// message_manager's side of the route socket (README.md, "How a message travels"): the
// device messages the broker plugin hands over in frames (broker/route_frame.hpp), read in
// big chunks on a thread of its own. The broker listens on a Unix socket in its own
// directory; this side connects, and talks only to a listener whose SO_PEERCRED pid is the
// broker's (set_broker_pid): no other process can feed it messages with forged sources.
// The broker in turn accepts only groved (its parent).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <sys/types.h>

#include "route_frame.hpp"

namespace grove::mm {

/// Reads the broker plugin's route socket. Thread-safe.
class route_reader {
public:
  /// Called on the reader's thread for every message, in the broker's order.
  using handler = std::function<void(broker::route_message&&)>;
  /// Called on the reader's thread for what is worth a log line (connects, refusals).
  using logger = std::function<void(bool warning, const std::string&)>;

  /// Starts nothing.
  route_reader(std::filesystem::path socket, handler on_message, logger log);
  /// Stops.
  ~route_reader();
  route_reader(const route_reader&) = delete;
  route_reader& operator=(const route_reader&) = delete;

  /// The broker's pid: only a listener of that process is read (0: none yet).
  void set_broker_pid(pid_t pid);
  /// Starts the thread; it connects (again) whenever it has no connection.
  void start();
  /// Leaves cleanly: ends its side, reads every frame the broker still finishes (the
  /// broker keeps what follows for the next reader, a hot reload loses nothing), waits at
  /// most `drain` for that, then closes. Idempotent.
  void stop(std::chrono::milliseconds drain = std::chrono::milliseconds{1000});
  /// Tries to connect at once (the broker was restarted and listens again).
  void poke();

  /// Messages read since start.
  uint64_t messages() const noexcept { return messages_.load(); }
  /// Connections made since start.
  uint64_t connects() const noexcept { return connects_.load(); }
  /// Listeners refused because their pid was not the broker's (for 3 s in a row: the
  /// pid of a just restarted broker may reach this reader a moment after it listens).
  uint64_t refused() const noexcept { return refused_.load(); }
  /// Streams given up as malformed.
  uint64_t malformed() const noexcept { return malformed_.load(); }
  /// True while connected.
  bool connected() const noexcept { return connected_.load(); }

private:
  void run();
  int try_connect();

  std::filesystem::path path_;
  handler on_message_;
  logger log_;
  std::atomic<pid_t> broker_pid_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> messages_{0};
  std::atomic<uint64_t> connects_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> malformed_{0};
  std::chrono::steady_clock::time_point drain_deadline_;
  // The listener refused last and since when (the reader's thread only).
  pid_t mismatch_pid_ = 0;
  std::chrono::steady_clock::time_point mismatch_since_;
  bool mismatch_reported_ = false;
  int wake_[2] = {-1, -1}; // pipe: stop() and poke() wake the thread
  std::thread thread_;
  std::mutex stop_mtx_;
};

} // namespace grove::mm
