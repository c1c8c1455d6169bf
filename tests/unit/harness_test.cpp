#define BOOST_TEST_MODULE harness_test
#include <boost/test/unit_test.hpp>

#include "grove/testing/harness.hpp"
#include "test_support.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;

// The SDK harness running the example plugin, as a plugin author would test it.

BOOST_AUTO_TEST_CASE(heartbeat_beats_and_answers) {
  grove::testing::harness h{HEARTBEAT_PLUGIN, "{interval_ms: 2, topic: hb/test}"};
  auto beats = h.subscribe("hb/test");
  BOOST_REQUIRE(!h.start());
  BOOST_TEST(h.name() == "heartbeat");
  BOOST_REQUIRE(beats->wait_for(3));
  auto msgs = beats->messages();
  // Beats count up from 1, one per period.
  for (size_t i = 0; i < 3; ++i)
    BOOST_TEST(msgs[i].payload() == std::to_string(i + 1));
  BOOST_TEST(msgs[0].source() == "heartbeat");
  BOOST_TEST(msgs[0].content_type() == "text/plain");
  auto reply = h.request("hb/test/ping", "");
  BOOST_REQUIRE(reply);
  BOOST_TEST(reply->payload().rfind("pong ", 0) == 0u);
  BOOST_TEST(h.info().state() == "running");
  BOOST_TEST(std::filesystem::is_directory(h.state_dir()));
}

BOOST_AUTO_TEST_CASE(bad_config_is_refused_with_the_field) {
  grove::testing::harness h{HEARTBEAT_PLUGIN, "{interval_ms: 0}"};
  auto err = h.start();
  BOOST_REQUIRE(err);
  BOOST_TEST(grove::describe(err).find("interval_ms: must be at least 1")
             != std::string::npos, grove::describe(err));
  grove::testing::harness h2{HEARTBEAT_PLUGIN, "{topic: 'bad/#'}"};
  err = h2.start();
  BOOST_REQUIRE(err);
  BOOST_TEST(grove::describe(err).find("wildcard") != std::string::npos,
             grove::describe(err));
}

BOOST_AUTO_TEST_CASE(manual_clock_drives_timers_without_sleeping) {
  // An hour-long period: with real time nothing would beat during the test.
  grove::testing::harness_options opts;
  opts.manual_time = true;
  grove::testing::harness h{HEARTBEAT_PLUGIN, "{interval_ms: 3600000, topic: hb/manual}",
                            opts};
  auto beats = h.subscribe("hb/manual");
  BOOST_REQUIRE(!h.start());
  BOOST_REQUIRE(h.clock());
  BOOST_TEST(h.clock()->pending() == 1u);
  BOOST_TEST(h.clock()->next_due().value_or(0ms).count() == 3600000);
  // Just short of the period: nothing fires.
  BOOST_TEST(h.advance(3599999ms) == 0u);
  BOOST_TEST(beats->size() == 0u);
  // The period's end fires the first beat; three more periods fire three more, in order.
  BOOST_TEST(h.advance(1ms) == 1u);
  BOOST_REQUIRE(beats->wait_for(1));
  // Each beat re-arms the timer from the slot; wait for that before moving on.
  BOOST_REQUIRE(grove::test::wait_until([&] { return h.clock()->pending() == 1u; }));
  for (int i = 0; i < 3; ++i) {
    BOOST_TEST(h.advance(1h) == 1u);
    BOOST_REQUIRE(beats->wait_for(2 + i));
    BOOST_REQUIRE(grove::test::wait_until([&] { return h.clock()->pending() == 1u; }));
  }
  auto msgs = beats->messages();
  BOOST_REQUIRE(msgs.size() == 4u);
  for (size_t i = 0; i < msgs.size(); ++i)
    BOOST_TEST(msgs[i].payload() == std::to_string(i + 1));
}

BOOST_AUTO_TEST_CASE(manual_clock_drives_restart_back_off) {
  grove::testing::harness_options opts;
  opts.manual_time = true;
  grove::testing::harness h{ECHO_PLUGIN, "{crash_on: boom, listen: e/in, answer: e/out}",
                            opts};
  auto out = h.subscribe("e/out");
  BOOST_REQUIRE(!h.start());
  BOOST_REQUIRE(h.publish("e/in", "boom"));
  BOOST_REQUIRE(grove::test::wait_until([&] { return h.info().state() == "restarting"; }));
  // The back-off waits on the manual clock: no real time makes the plugin come back.
  BOOST_REQUIRE(grove::test::wait_until([&] { return h.clock()->pending() == 1u; }));
  auto due = h.clock()->next_due();
  BOOST_REQUIRE(due.has_value());
  BOOST_TEST(due->count() > 0);
  BOOST_REQUIRE(h.publish("e/in", "held"));
  BOOST_TEST(h.info().state() == "restarting");
  BOOST_TEST(h.advance(*due - 1ms) == 0u);
  BOOST_TEST(h.info().state() == "restarting");
  BOOST_TEST(h.advance(1ms) == 1u);
  // Back up: the message held during the back-off is handled by the new instance.
  BOOST_REQUIRE(out->wait_for(1));
  BOOST_TEST(out->messages()[0].payload() == "held");
  BOOST_TEST(h.info().state() == "running");
  BOOST_TEST(h.info().restarts() == 1u);
}

BOOST_AUTO_TEST_CASE(idle_poll_attempts_reach_the_kernel) {
  // Unset: the kernel's default; set (0: workers sleep at once, a request wakes them):
  // the kernel runs with it and still answers.
  grove::testing::harness dflt{HEARTBEAT_PLUGIN, "{interval_ms: 1000, topic: hb/test}"};
  BOOST_TEST(dflt.kernel().profile().idle_poll_attempts
             == grove::image_profile{}.idle_poll_attempts);
  grove::testing::harness_options o;
  o.idle_poll_attempts = 0;
  grove::testing::harness h{HEARTBEAT_PLUGIN, "{interval_ms: 1000, topic: hb/test}", o};
  BOOST_TEST(h.kernel().profile().idle_poll_attempts == 0u);
  BOOST_REQUIRE(!h.start());
  for (int i = 0; i < 3; ++i) {
    auto reply = h.request("hb/test/ping", "");
    BOOST_REQUIRE(reply);
    BOOST_TEST(reply->payload().rfind("pong ", 0) == 0u);
  }
}
