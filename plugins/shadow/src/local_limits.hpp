#pragma once

// Shadow manager's local request limits (README "Local request limits"):
// `rateLimits.maxLocalRequestsPerSecondPerThing` (a token bucket per thing) and
// `rateLimits.maxTotalLocalRequestsRate` (one bucket for all), each holding one second's
// worth, on grove::rate_limiter. A request is admitted only when both have a token, and
// then takes one from each: a refused request costs nothing, so a flooding thing does not
// eat the total the others live on beyond its own limit.

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>

#include "grove/rate_limiter.hpp"

namespace grove::shadow {

/// Why a request was refused, or that it was not.
enum class limit_verdict {
  /// Admitted.
  ok,
  /// Its thing made more than maxLocalRequestsPerSecondPerThing.
  thing,
  /// All things together made more than maxTotalLocalRequestsRate.
  total,
};

/// The per-thing and total buckets. Not thread-safe (the plugin's actor owns it).
class local_limits {
public:
  /// The clock of the buckets.
  using clock_fn = grove::rate_limiter::clock_fn;

  /// Things with a bucket at most (AWS allows 2,500 devices per group; beyond this the
  /// least recently seen thing's bucket is forgotten).
  static constexpr size_t max_things = 10000;

  /// `per_thing` and `total` requests per second; `clock` empty: steady_clock.
  local_limits(int64_t per_thing, int64_t total, clock_fn clock = {})
    : clock_(std::move(clock)),
      things_({grove::rate_limit{static_cast<double>(per_thing)}, max_things, clock_}),
      total_(grove::rate_limit{static_cast<double>(total)}) {
  }

  /// Admits one request of `thing` now, or says which limit it is over.
  limit_verdict admit(std::string_view thing) {
    auto now = things_.now();
    if (!things_.can_acquire(thing, now))
      return limit_verdict::thing;
    if (!total_.can_take(now))
      return limit_verdict::total;
    things_.try_acquire(thing, now);
    total_.try_take(now);
    return limit_verdict::ok;
  }

  /// Things with a bucket now.
  size_t things() const {
    return things_.size();
  }

private:
  clock_fn clock_;
  grove::rate_limiter things_;
  grove::token_bucket total_;
};

} // namespace grove::shadow
