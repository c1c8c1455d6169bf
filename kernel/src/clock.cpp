#include "grove/kernel/clock.hpp"

#include <vector>

namespace grove {

kernel_clock::~kernel_clock() = default;

manual_clock::manual_clock() : now_(time_point{} + std::chrono::hours{1}) {
}

kernel_clock::time_point manual_clock::now() const {
  std::lock_guard guard{mtx_};
  return now_;
}

void manual_clock::schedule(std::chrono::milliseconds delay, std::function<void()> fire) {
  std::lock_guard guard{mtx_};
  waiting_.emplace(std::pair{now_ + std::max(delay, std::chrono::milliseconds{0}), seq_++},
                   std::move(fire));
}

size_t manual_clock::advance(std::chrono::milliseconds d) {
  time_point end;
  {
    std::lock_guard guard{mtx_};
    end = now_ + d;
  }
  size_t fired = 0;
  for (;;) {
    std::function<void()> fn;
    {
      std::lock_guard guard{mtx_};
      auto i = waiting_.begin();
      if (i == waiting_.end() || i->first.first > end) {
        now_ = end;
        return fired;
      }
      // Time stands at each callback's due time while it fires, so one that schedules
      // again (a periodic timer) lands at the right point.
      now_ = i->first.first;
      fn = std::move(i->second);
      waiting_.erase(i);
    }
    fn(); // outside the lock: it may schedule
    ++fired;
  }
}

size_t manual_clock::pending() const {
  std::lock_guard guard{mtx_};
  return waiting_.size();
}

std::optional<std::chrono::milliseconds> manual_clock::next_due() const {
  std::lock_guard guard{mtx_};
  if (waiting_.empty())
    return std::nullopt;
  return std::chrono::duration_cast<std::chrono::milliseconds>(
    waiting_.begin()->first.first - now_);
}

} // namespace grove
