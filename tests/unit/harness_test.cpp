#define BOOST_TEST_MODULE harness_test
#include <boost/test/unit_test.hpp>

#include "grove/testing/harness.hpp"
#include "test_util.hpp"

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
