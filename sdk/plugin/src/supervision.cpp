#include "grove/supervision.hpp"

#include <algorithm>

namespace grove {

failure_tracker::decision
failure_tracker::record(const restart_policy& policy,
                        std::chrono::steady_clock::time_point now) {
  failures_.push_back(now);
  while (!failures_.empty() && now - failures_.front() > policy.window)
    failures_.pop_front();
  decision d;
  d.count = failures_.size();
  if (d.count >= policy.max_failures) {
    d.broken = true;
    return d;
  }
  d.delay = policy.backoff_initial;
  for (size_t i = 1; i < d.count && d.delay < policy.backoff_max; ++i)
    d.delay *= 2;
  d.delay = std::min(d.delay, policy.backoff_max);
  return d;
}

} // namespace grove
