// Shadow manager's local request limits (src/local_limits.hpp): a thing over
// maxLocalRequestsPerSecondPerThing is refused while others are served, all things
// together over maxTotalLocalRequestsRate are refused, a refusal costs no token, and
// both refill with time, on a clock the test moves (no sleeping, no wall time).

#define BOOST_TEST_MODULE shadow_limits
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <string>

#include "local_limits.hpp"

using namespace std::chrono_literals;
using grove::shadow::limit_verdict;
using grove::shadow::local_limits;

namespace {

struct fake_clock {
  grove::token_bucket::time_point t = grove::token_bucket::time_point{} + 5000h;

  local_limits::clock_fn fn() {
    return [this] { return t; };
  }
};

// Admits `n` requests of `thing` at once; returns how many of each verdict.
struct tally {
  int ok = 0, thing = 0, total = 0;
};

tally burst(local_limits& l, const std::string& thing, int n) {
  tally r;
  for (int i = 0; i < n; ++i) {
    switch (l.admit(thing)) {
      case limit_verdict::ok: ++r.ok; break;
      case limit_verdict::thing: ++r.thing; break;
      case limit_verdict::total: ++r.total; break;
    }
  }
  return r;
}

} // namespace

BOOST_AUTO_TEST_CASE(a_thing_over_its_limit_is_refused_and_another_still_served) {
  fake_clock c;
  local_limits l{20, 200, c.fn()}; // shadow manager's defaults
  auto lamp = burst(l, "lamp", 50);
  BOOST_TEST(lamp.ok == 20);
  BOOST_TEST(lamp.thing == 30);
  BOOST_TEST(lamp.total == 0);
  auto fan = burst(l, "fan", 5);
  BOOST_TEST(fan.ok == 5);
  c.t += 100ms; // two tokens back for lamp
  lamp = burst(l, "lamp", 5);
  BOOST_TEST(lamp.ok == 2);
  BOOST_TEST(lamp.thing == 3);
  c.t += 10s; // never more than one second's worth
  BOOST_TEST(burst(l, "lamp", 50).ok == 20);
}

BOOST_AUTO_TEST_CASE(all_things_together_are_held_to_the_total) {
  fake_clock c;
  local_limits l{20, 50, c.fn()};
  int ok = 0, total = 0;
  for (int i = 0; i < 10; ++i) { // ten things, 10 requests each: 100 asked, 50 in all
    auto r = burst(l, "thing" + std::to_string(i), 10);
    BOOST_TEST(r.thing == 0); // none of them over its own limit
    ok += r.ok;
    total += r.total;
  }
  BOOST_TEST(ok == 50);
  BOOST_TEST(total == 50);
  c.t += 200ms; // 10 more in all
  BOOST_TEST(burst(l, "late", 20).ok == 10);
}

BOOST_AUTO_TEST_CASE(a_refused_request_costs_no_token) {
  fake_clock c;
  local_limits l{5, 8, c.fn()};
  BOOST_TEST(burst(l, "flood", 1000).ok == 5); // 995 refused on its own limit
  auto other = burst(l, "quiet", 10);
  BOOST_TEST(other.ok == 3); // the total lost only flood's 5
  BOOST_TEST(other.total == 7);
  c.t += 1s;
  // Over both: the thing's own limit is named first.
  auto again = burst(l, "quiet", 10);
  BOOST_TEST(again.ok == 5);
  BOOST_TEST(again.thing == 5);
}

BOOST_AUTO_TEST_CASE(the_things_kept_are_bounded) {
  fake_clock c;
  local_limits l{1, 1000000, c.fn()};
  for (size_t i = 0; i < local_limits::max_things + 100; ++i)
    BOOST_REQUIRE(l.admit("t" + std::to_string(i)) == limit_verdict::ok);
  BOOST_TEST(l.things() == local_limits::max_things);
}
