#include "grove/rate_limiter.hpp"

#include <algorithm>
#include <utility>

namespace grove {

namespace {

// Refills are sums of floating-point fractions (0.1 s at 4/s is not exactly 0.4): a token
// due by the clock must not be refused for rounding.
constexpr double slack = 1e-9;

} // namespace

// --- token_bucket ---

void token_bucket::refill(time_point now) {
  auto cap = limit_.capacity();
  if (!started_) {
    tokens_ = cap;
    last_ = now;
    started_ = true;
    return;
  }
  if (now <= last_)
    return; // time standing still or running backwards adds nothing
  auto elapsed = std::chrono::duration<double>(now - last_).count();
  tokens_ = std::min(cap, tokens_ + elapsed * limit_.rate);
  last_ = now;
}

bool token_bucket::try_take(time_point now, double n) {
  if (limit_.unlimited())
    return true;
  refill(now);
  if (tokens_ + slack < n)
    return false;
  tokens_ -= n;
  return true;
}

bool token_bucket::can_take(time_point now, double n) {
  if (limit_.unlimited())
    return true;
  refill(now);
  return tokens_ + slack >= n;
}

void token_bucket::spend(time_point now, double n) {
  if (limit_.unlimited())
    return;
  refill(now);
  tokens_ -= n;
}

double token_bucket::available(time_point now) {
  if (limit_.unlimited())
    return limit_.capacity();
  refill(now);
  return tokens_;
}

std::chrono::nanoseconds token_bucket::wait_for(time_point now, double n) {
  if (limit_.unlimited())
    return {};
  refill(now);
  if (tokens_ + slack >= n)
    return {};
  return std::chrono::ceil<std::chrono::nanoseconds>(
    std::chrono::duration<double>((n - tokens_) / limit_.rate));
}

bool token_bucket::full(time_point now) {
  if (limit_.unlimited() || !started_)
    return true;
  refill(now);
  return tokens_ + slack >= limit_.capacity();
}

void token_bucket::set_limit(rate_limit limit, time_point now) {
  if (started_ && !limit_.unlimited())
    refill(now); // what was earned under the old rate stays
  bool was_unlimited = limit_.unlimited();
  limit_ = limit;
  if (was_unlimited || !started_) {
    started_ = false; // starts full under the new limit at its next use
    return;
  }
  tokens_ = std::min(tokens_, limit_.capacity());
}

// --- rate_limiter ---

rate_limiter::rate_limiter(options opts) : opts_(std::move(opts)) {
  opts_.max_keys = std::max<size_t>(opts_.max_keys, 1);
}

rate_limiter::slot& rate_limiter::find_or_add(std::string_view key, time_point now) {
  // A heterogeneous lookup needs C++20's transparent hashing; a key is short.
  std::string k{key};
  if (auto it = buckets_.find(k); it != buckets_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return it->second;
  }
  if (buckets_.size() >= opts_.max_keys) {
    auto oldest = buckets_.find(lru_.back());
    if (!oldest->second.bucket.full(now))
      ++evictions_;
    buckets_.erase(oldest);
    lru_.pop_back();
  }
  lru_.push_front(k);
  auto [it, added] = buckets_.emplace(std::move(k), slot{token_bucket{opts_.limit}, lru_.begin()});
  return it->second;
}

bool rate_limiter::try_acquire(std::string_view key, time_point now, double n) {
  if (opts_.limit.unlimited())
    return true;
  return find_or_add(key, now).bucket.try_take(now, n);
}

bool rate_limiter::can_acquire(std::string_view key, time_point now, double n) {
  if (opts_.limit.unlimited())
    return true;
  if (auto it = buckets_.find(std::string{key}); it != buckets_.end())
    return it->second.bucket.can_take(now, n);
  return opts_.limit.capacity() + slack >= n;
}

double rate_limiter::available(std::string_view key, time_point now) {
  if (opts_.limit.unlimited())
    return opts_.limit.capacity();
  if (auto it = buckets_.find(std::string{key}); it != buckets_.end())
    return it->second.bucket.available(now);
  return opts_.limit.capacity();
}

void rate_limiter::set_limit(rate_limit limit, time_point now) {
  opts_.limit = limit;
  for (auto& [key, s] : buckets_)
    s.bucket.set_limit(limit, now);
}

} // namespace grove
