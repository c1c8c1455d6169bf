#pragma once

// grove::rate_limiter: token buckets for plugins that bound how fast outside parties may
// ask (deployment's access keys, shadow's things) or how fast they send (shadow's cloud
// sync). One bucket (token_bucket) or one per key (rate_limiter, with a bounded number of
// keys); time comes from an injectable clock or from the caller, so tests move it instead
// of sleeping. grove_rate_limiter, a static library a plugin links itself; its types
// never cross the plugin boundary, so it is not part of the plugin ABI (as cgroup.hpp).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>

namespace grove {

/// How fast and how much at once.
struct rate_limit {
  /// Tokens added per second; 0 or less: no limit (every take succeeds).
  double rate = 0;
  /// Most tokens a bucket holds, the largest burst; 0 or less: one second's worth (`rate`).
  double burst = 0;

  /// The burst in force: `burst`, or `rate` when `burst` is not set.
  double capacity() const {
    return burst > 0 ? burst : rate;
  }

  /// True when nothing is limited.
  bool unlimited() const {
    return rate <= 0;
  }
};

/// One token bucket. It starts full at its first use, gains `rate` tokens a second up to
/// `capacity()`, and a take of n succeeds when n tokens are there. Time that runs
/// backwards adds nothing. Not thread-safe (callers hold their own lock or run on one
/// actor).
class token_bucket {
public:
  /// The time a bucket reads: any clock, as long as one bucket is always given the same.
  using clock = std::chrono::steady_clock;
  /// A point on it.
  using time_point = clock::time_point;

  /// An unlimited bucket.
  token_bucket() = default;

  /// A bucket of `limit`.
  explicit token_bucket(rate_limit limit) : limit_(limit) {
  }

  /// Takes `n` tokens at `now` if there are that many; false (and nothing taken) if not.
  bool try_take(time_point now, double n = 1);

  /// True when a try_take(now, n) would succeed; takes nothing.
  bool can_take(time_point now, double n = 1);

  /// Takes `n` tokens at `now` whether or not they are there: the bucket may go below
  /// zero and then refuses until it has filled back up (work that had to be done anyway
  /// still counts against the rate).
  void spend(time_point now, double n = 1);

  /// Tokens there at `now` (capacity() for a bucket not used yet).
  double available(time_point now);

  /// How long from `now` until `n` tokens are there; zero when they are.
  std::chrono::nanoseconds wait_for(time_point now, double n = 1);

  /// True when the bucket holds capacity() at `now`: forgetting it changes nothing.
  bool full(time_point now);

  /// The limit.
  const rate_limit& limit() const {
    return limit_;
  }

  /// A new limit from `now` on; tokens above the new capacity are dropped.
  void set_limit(rate_limit limit, time_point now);

private:
  void refill(time_point now);

  rate_limit limit_;
  double tokens_ = 0;
  time_point last_{};
  bool started_ = false;
};

/// A token bucket per key (a thing, an access key), all with one limit. At most
/// `max_keys` buckets are kept: a new key beyond that replaces the least recently used
/// one (a full bucket loses nothing; a forgotten partly empty one starts full again,
/// counted in `evictions()`). Not thread-safe.
class rate_limiter {
public:
  /// The bucket's clock.
  using time_point = token_bucket::time_point;
  /// Where the time comes from when the caller does not give it.
  using clock_fn = std::function<time_point()>;

  /// Settings.
  struct options {
    /// Every key's limit.
    rate_limit limit;
    /// Most keys with a bucket (at least 1).
    size_t max_keys = 10000;
    /// Where now is; empty: std::chrono::steady_clock::now.
    clock_fn clock;
  };

  /// An unlimited limiter.
  rate_limiter() : rate_limiter(options{}) {
  }

  /// A limiter with `opts`.
  explicit rate_limiter(options opts);

  /// Takes `n` tokens from `key`'s bucket now (the clock's time).
  bool try_acquire(std::string_view key, double n = 1) {
    return try_acquire(key, now(), n);
  }

  /// Takes `n` tokens from `key`'s bucket at `now`; false (nothing taken) if not there.
  bool try_acquire(std::string_view key, time_point now, double n = 1);

  /// True when a try_acquire(key, now, n) would succeed; takes nothing and makes no
  /// bucket.
  bool can_acquire(std::string_view key, time_point now, double n = 1);

  /// Tokens `key` has at `now`, without making it a bucket (capacity() for a new key).
  double available(std::string_view key, time_point now);

  /// Every key's new limit from `now` on.
  void set_limit(rate_limit limit, time_point now);

  /// The limit.
  const rate_limit& limit() const {
    return opts_.limit;
  }

  /// The clock's time.
  time_point now() const {
    return opts_.clock ? opts_.clock() : std::chrono::steady_clock::now();
  }

  /// Keys with a bucket.
  size_t size() const {
    return buckets_.size();
  }

  /// Buckets forgotten before they were full (for a counter).
  uint64_t evictions() const {
    return evictions_;
  }

private:
  struct slot {
    token_bucket bucket;
    std::list<std::string>::iterator lru;
  };

  slot& find_or_add(std::string_view key, time_point now);

  options opts_;
  std::unordered_map<std::string, slot> buckets_;
  std::list<std::string> lru_; // most recently used first
  uint64_t evictions_ = 0;
};

} // namespace grove
