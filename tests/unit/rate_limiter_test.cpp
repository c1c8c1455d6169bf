// grove::token_bucket and grove::rate_limiter (sdk/plugin/include/grove/rate_limiter.hpp)
// on a clock the test moves: bursts, refill, fractions, time going backwards, spending
// ahead, limit changes, keys kept apart and the bound on keys.

#define BOOST_TEST_MODULE rate_limiter_test
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <string>

#include "grove/rate_limiter.hpp"

using namespace std::chrono_literals;
using grove::rate_limit;
using grove::rate_limiter;
using grove::token_bucket;

namespace {

// The test's clock: starts anywhere, moves only when told.
struct fake_clock {
  token_bucket::time_point t = token_bucket::time_point{} + 1000h;

  rate_limiter::clock_fn fn() {
    return [this] { return t; };
  }
};

// How many takes succeed in a row at one instant (stops at `most`).
int takes(token_bucket& b, token_bucket::time_point now, int most = 1000) {
  int n = 0;
  while (n < most && b.try_take(now))
    ++n;
  return n;
}

} // namespace

BOOST_AUTO_TEST_CASE(a_bucket_starts_full_with_one_seconds_worth) {
  fake_clock c;
  token_bucket b{rate_limit{5}};
  BOOST_TEST(b.available(c.t) == 5.0);
  BOOST_TEST(takes(b, c.t) == 5);
  BOOST_TEST(!b.try_take(c.t));
}

BOOST_AUTO_TEST_CASE(a_burst_can_be_larger_or_smaller_than_the_rate) {
  fake_clock c;
  token_bucket big{rate_limit{2, 10}};
  BOOST_TEST(takes(big, c.t) == 10);
  token_bucket small{rate_limit{100, 3}};
  BOOST_TEST(takes(small, c.t) == 3);
  c.t += 1s; // a full second refills only up to the burst
  BOOST_TEST(takes(small, c.t) == 3);
}

BOOST_AUTO_TEST_CASE(tokens_come_back_at_the_rate_and_fractions_add_up) {
  fake_clock c;
  token_bucket b{rate_limit{4}};
  BOOST_TEST(takes(b, c.t) == 4);
  c.t += 250ms; // one token
  BOOST_TEST(takes(b, c.t) == 1);
  c.t += 100ms; // 0.4
  BOOST_TEST(!b.try_take(c.t));
  c.t += 100ms; // 0.8
  BOOST_TEST(!b.try_take(c.t));
  c.t += 50ms; // 1.0
  BOOST_TEST(b.try_take(c.t));
  c.t += 1h; // never more than the burst
  BOOST_TEST(takes(b, c.t) == 4);
}

BOOST_AUTO_TEST_CASE(time_running_backwards_adds_nothing) {
  fake_clock c;
  token_bucket b{rate_limit{2}};
  BOOST_TEST(takes(b, c.t) == 2);
  auto earlier = c.t - 10s;
  BOOST_TEST(!b.try_take(earlier));
  c.t += 500ms; // from the last time seen, not from the earlier one
  BOOST_TEST(takes(b, c.t) == 1);
}

BOOST_AUTO_TEST_CASE(spending_ahead_goes_below_zero_and_waits_for_the_refill) {
  fake_clock c;
  token_bucket b{rate_limit{10}};
  b.spend(c.t, 15); // 10 - 15 = -5
  BOOST_TEST(b.available(c.t) == -5.0);
  BOOST_TEST(!b.try_take(c.t));
  auto wait = b.wait_for(c.t);
  BOOST_TEST(wait > 599ms); // 6 tokens at 10/s
  BOOST_TEST(wait <= 601ms);
  c.t += 599ms;
  BOOST_TEST(!b.try_take(c.t));
  c.t += 1ms;
  BOOST_TEST(b.try_take(c.t));
  BOOST_TEST(b.wait_for(c.t + 1s).count() == 0);
}

BOOST_AUTO_TEST_CASE(an_unlimited_bucket_always_gives) {
  fake_clock c;
  token_bucket b;
  BOOST_TEST(takes(b, c.t, 100000) == 100000);
  token_bucket zero{rate_limit{0}};
  BOOST_TEST(zero.try_take(c.t, 1e9));
  BOOST_TEST(zero.wait_for(c.t).count() == 0);
}

BOOST_AUTO_TEST_CASE(a_new_limit_keeps_what_was_earned_up_to_the_new_burst) {
  fake_clock c;
  token_bucket b{rate_limit{10}};
  BOOST_TEST(takes(b, c.t, 4) == 4); // 6 left
  b.set_limit(rate_limit{3}, c.t);   // capped at 3
  BOOST_TEST(takes(b, c.t) == 3);
  c.t += 1s;
  BOOST_TEST(takes(b, c.t) == 3);
  b.set_limit(rate_limit{0}, c.t); // off
  BOOST_TEST(takes(b, c.t, 50) == 50);
  b.set_limit(rate_limit{2}, c.t); // on again: starts full
  BOOST_TEST(takes(b, c.t) == 2);
}

BOOST_AUTO_TEST_CASE(a_limiter_keeps_each_key_apart_on_the_injected_clock) {
  fake_clock c;
  rate_limiter rl{{rate_limit{3}, 100, c.fn()}};
  int lamp = 0, other = 0;
  for (int i = 0; i < 10; ++i) {
    lamp += rl.try_acquire("lamp");
    other += rl.try_acquire("other");
  }
  BOOST_TEST(lamp == 3);
  BOOST_TEST(other == 3);
  BOOST_TEST(rl.available("lamp", c.t) == 0.0);
  BOOST_TEST(rl.available("new", c.t) == 3.0);
  BOOST_TEST(!rl.can_acquire("lamp", c.t));
  BOOST_TEST(rl.can_acquire("new", c.t, 3));
  BOOST_TEST(!rl.can_acquire("new", c.t, 4));
  BOOST_TEST(rl.size() == 2u); // available() made no bucket
  c.t += 1s;
  BOOST_TEST(rl.try_acquire("lamp"));
  // The explicit time wins over the clock.
  BOOST_TEST(rl.try_acquire("other", c.t));
}

BOOST_AUTO_TEST_CASE(the_number_of_keys_is_bounded_least_recently_used_first) {
  fake_clock c;
  rate_limiter rl{{rate_limit{1}, 3, c.fn()}};
  BOOST_TEST(rl.try_acquire("a"));
  BOOST_TEST(rl.try_acquire("b"));
  BOOST_TEST(rl.try_acquire("c"));
  BOOST_TEST(!rl.try_acquire("a")); // a is now the most recently used
  BOOST_TEST(rl.try_acquire("d"));  // replaces b, the least recently used
  BOOST_TEST(rl.size() == 3u);
  BOOST_TEST(rl.evictions() == 1u); // b was empty when forgotten
  BOOST_TEST(!rl.try_acquire("a")); // a kept its empty bucket
  BOOST_TEST(!rl.try_acquire("c")); // c too
  c.t += 5s; // every bucket full again: forgetting one loses nothing
  BOOST_TEST(rl.try_acquire("e"));
  BOOST_TEST(rl.evictions() == 1u);
  BOOST_TEST(rl.size() == 3u);
}

BOOST_AUTO_TEST_CASE(a_limiter_limit_change_reaches_every_key) {
  fake_clock c;
  rate_limiter rl{{rate_limit{5}, 10, c.fn()}};
  BOOST_TEST(rl.try_acquire("x", c.t, 5));
  rl.set_limit(rate_limit{50}, c.t);
  c.t += 100ms; // 5 tokens at the new rate
  BOOST_TEST(rl.try_acquire("x", c.t, 5));
  BOOST_TEST(!rl.try_acquire("x", c.t));
  rl.set_limit(rate_limit{}, c.t);
  for (int i = 0; i < 1000; ++i)
    BOOST_REQUIRE(rl.try_acquire("y"));
  BOOST_TEST(rl.limit().unlimited());
}
