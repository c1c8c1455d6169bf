#include "blocking_pool.hpp"

#include <pthread.h>

namespace grove::detail {

blocking_pool& blocking_pool::instance() {
  static blocking_pool pool;
  return pool;
}

blocking_pool::~blocking_pool() {
  {
    std::lock_guard guard{mtx_};
    quit_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable())
      t.join();
}

void blocking_pool::submit(std::function<void()> task) {
  std::lock_guard guard{mtx_};
  queue_.push_back(std::move(task));
  // A new thread only when every existing one is busy, up to the bound.
  if (idle_ < queue_.size() && threads_.size() < max_threads)
    threads_.emplace_back([this] {
      // Named, not `caf.multiplexer` (inherited from the CAF worker that started it).
      ::pthread_setname_np(::pthread_self(), "grove.blocking");
      work();
    });
  else
    cv_.notify_one();
}

void blocking_pool::work() {
  std::unique_lock guard{mtx_};
  for (;;) {
    ++idle_;
    cv_.wait(guard, [this] { return quit_ || !queue_.empty(); });
    --idle_;
    if (queue_.empty())
      return; // quitting, nothing left
    auto task = std::move(queue_.front());
    queue_.pop_front();
    guard.unlock();
    try {
      task();
    } catch (...) {
      // Nothing may end a pool thread.
    }
    task = nullptr; // the task's captures go before the lock is taken again
    guard.lock();
  }
}

} // namespace grove::detail
