#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>

namespace grove {

/// Time source for plugin timers (context::after/every) and the supervision back-off of
/// in-process slots. A kernel without one uses CAF's clock and std::chrono::steady_clock;
/// the SDK test harness installs a manual_clock so tests advance time instead of sleeping.
class kernel_clock {
public:
  /// Steady time.
  using time_point = std::chrono::steady_clock::time_point;

  virtual ~kernel_clock();

  /// Current time on this clock.
  virtual time_point now() const = 0;

  /// Calls `fire` once `delay` has passed on this clock. `fire` only sends a message
  /// (it never runs plugin code itself), so it may run on any thread.
  virtual void schedule(std::chrono::milliseconds delay, std::function<void()> fire) = 0;
};

/// A clock that moves only when told to. Thread-safe.
class manual_clock final : public kernel_clock {
public:
  /// Starts at an arbitrary fixed point.
  manual_clock();

  time_point now() const override;

  void schedule(std::chrono::milliseconds delay, std::function<void()> fire) override;

  /// Moves time forward by `d`, firing every callback that falls due, in due order
  /// (callbacks scheduled while advancing fire too if they fall inside `d`). Returns how
  /// many fired.
  size_t advance(std::chrono::milliseconds d);

  /// How many callbacks wait.
  size_t pending() const;

  /// Time until the next callback is due, if any waits.
  std::optional<std::chrono::milliseconds> next_due() const;

private:
  mutable std::mutex mtx_;
  time_point now_;
  uint64_t seq_ = 0;
  // Keyed by (due, sequence): equal due times fire in scheduling order.
  std::map<std::pair<time_point, uint64_t>, std::function<void()>> waiting_;
};

} // namespace grove
