#pragma once

// The one supervision policy of Grove: plugins (both slot kinds) and supervised child
// processes (grove::process) restart after a failure with exponential back-off, and
// give up ("broken") after too many failures within a window.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>

namespace grove {

/// Restart policy of supervised plugins and processes.
struct restart_policy {
  /// Failures within `window` after which a plugin is marked broken.
  uint32_t max_failures = 5;
  /// Window over which failures are counted.
  std::chrono::seconds window{60};
  /// First back-off delay; doubles per failure in the window.
  std::chrono::milliseconds backoff_initial{100};
  /// Largest back-off delay.
  std::chrono::milliseconds backoff_max{10000};
};

/// Applies a restart_policy: failures are counted over a sliding window; too many
/// mark the supervised thing broken, otherwise it restarts after an exponential
/// back-off. Not thread-safe (each supervisor owns one).
class failure_tracker {
public:
  /// What to do after a failure.
  struct decision {
    /// True: stop for good.
    bool broken = false;
    /// Back-off before the restart (when not broken).
    std::chrono::milliseconds delay{0};
    /// Failures inside the window, this one included.
    size_t count = 0;
  };

  /// Records a failure at `now` (the kernel's clock, manual in tests) and decides.
  decision record(const restart_policy& policy,
                  std::chrono::steady_clock::time_point now
                  = std::chrono::steady_clock::now());

  /// Forgets past failures (after an operator replaced the build).
  void clear() noexcept {
    failures_.clear();
  }

private:
  std::deque<std::chrono::steady_clock::time_point> failures_;
};

} // namespace grove
