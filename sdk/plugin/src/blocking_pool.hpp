#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace grove::detail {

/// The SDK's threads for blocking work (context::run_blocking): at most `max_threads`,
/// started on demand (an idle groved has none), tasks in FIFO order. One per process.
class blocking_pool {
public:
  /// Upper bound of threads.
  static constexpr size_t max_threads = 4;

  /// The process-wide pool.
  static blocking_pool& instance();

  /// Joins the threads after the queued tasks ran.
  ~blocking_pool();

  /// Queues `task`; it runs on a pool thread. Exceptions it throws are swallowed
  /// (run_blocking catches them before, inside the plugin).
  void submit(std::function<void()> task);

private:
  blocking_pool() = default;
  void work();

  std::mutex mtx_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0;
  bool quit_ = false;
};

} // namespace grove::detail
