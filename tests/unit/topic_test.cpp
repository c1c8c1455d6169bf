#define BOOST_TEST_MODULE topic_test
#include <boost/test/unit_test.hpp>

#include "grove/errors.hpp"
#include "grove/topic.hpp"
#include "test_util.hpp"

using grove::topic_matches;

BOOST_AUTO_TEST_CASE(exact_and_single_level) {
  BOOST_TEST(topic_matches("a/b/c", "a/b/c"));
  BOOST_TEST(!topic_matches("a/b/c", "a/b"));
  BOOST_TEST(!topic_matches("a/b", "a/b/c"));
  BOOST_TEST(topic_matches("a/+/c", "a/b/c"));
  BOOST_TEST(!topic_matches("a/+/c", "a/b/d"));
  BOOST_TEST(topic_matches("+/+/+", "a/b/c"));
  BOOST_TEST(!topic_matches("+/+", "a/b/c"));
  BOOST_TEST(topic_matches("+", "a"));
  BOOST_TEST(!topic_matches("+", "a/b"));
}

BOOST_AUTO_TEST_CASE(empty_levels) {
  // '+' matches an empty level; leading and trailing slashes make levels.
  BOOST_TEST(topic_matches("a/+", "a/"));
  BOOST_TEST(topic_matches("+/b", "/b"));
  BOOST_TEST(topic_matches("/+", "/x"));
  BOOST_TEST(!topic_matches("a/b", "a/b/"));
  BOOST_TEST(topic_matches("a//c", "a//c"));
  BOOST_TEST(topic_matches("a/+/c", "a//c"));
}

BOOST_AUTO_TEST_CASE(multi_level) {
  BOOST_TEST(topic_matches("#", "a"));
  BOOST_TEST(topic_matches("#", "a/b/c"));
  BOOST_TEST(topic_matches("a/#", "a/b/c"));
  // MQTT 4.7.1.2: "sport/#" also matches "sport".
  BOOST_TEST(topic_matches("a/#", "a"));
  BOOST_TEST(!topic_matches("a/#", "ab"));
  BOOST_TEST(!topic_matches("a/b/#", "a"));
  BOOST_TEST(topic_matches("+/#", "a/b"));
  BOOST_TEST(topic_matches("a/+/#", "a/b"));
}

BOOST_AUTO_TEST_CASE(dollar_topics) {
  // MQTT 4.7.2: wildcards in the first level do not match $-topics.
  BOOST_TEST(!topic_matches("#", "$aws/things/t/shadow/get"));
  BOOST_TEST(!topic_matches("+/things/t/shadow/get", "$aws/things/t/shadow/get"));
  BOOST_TEST(topic_matches("$aws/#", "$aws/things/t/shadow/get"));
  BOOST_TEST(topic_matches("$aws/things/+/shadow/#", "$aws/things/t/shadow/get"));
  BOOST_TEST(topic_matches("$SYS", "$SYS"));
  // A '$' that is not first is an ordinary character.
  BOOST_TEST(topic_matches("a/#", "a/$b"));
}

BOOST_AUTO_TEST_CASE(filter_validation) {
  BOOST_TEST(!grove::validate_filter("a/b"));
  BOOST_TEST(!grove::validate_filter("a/+/b"));
  BOOST_TEST(!grove::validate_filter("#"));
  BOOST_TEST(!grove::validate_filter("a/#"));
  BOOST_TEST(!grove::validate_filter("+"));
  BOOST_TEST(grove::validate_filter("") == grove::errc::invalid_topic);
  BOOST_TEST(grove::validate_filter("a/#/b") == grove::errc::invalid_topic);
  BOOST_TEST(grove::validate_filter("a/b#") == grove::errc::invalid_topic);
  BOOST_TEST(grove::validate_filter("a/+b") == grove::errc::invalid_topic);
  BOOST_TEST(grove::validate_filter("a+/b") == grove::errc::invalid_topic);
  BOOST_TEST(grove::validate_filter(std::string_view{"a\0b", 3})
             == grove::errc::invalid_topic);
  BOOST_TEST(grove::validate_filter(std::string(65536, 'a'))
             == grove::errc::invalid_topic);
  BOOST_TEST(!grove::validate_filter(std::string(65535, 'a')));
}

BOOST_AUTO_TEST_CASE(topic_validation) {
  BOOST_TEST(!grove::validate_topic("a/b"));
  BOOST_TEST(!grove::validate_topic("$aws/things/x/shadow/get"));
  BOOST_TEST(!grove::validate_topic("/"));
  BOOST_TEST(grove::validate_topic("a/+") == grove::errc::invalid_topic);
  BOOST_TEST(grove::validate_topic("#") == grove::errc::invalid_topic);
  BOOST_TEST(grove::validate_topic("") == grove::errc::invalid_topic);
  auto err = grove::validate_topic("a/#");
  BOOST_TEST(grove::describe(err).find("wildcard") != std::string::npos);
}

// Serve claims are exclusive when some topic matches both filters.
BOOST_AUTO_TEST_CASE(filter_overlap) {
  using grove::filters_overlap;
  BOOST_TEST(filters_overlap("a/b", "a/b"));
  BOOST_TEST(!filters_overlap("a/b", "a/c"));
  BOOST_TEST(filters_overlap("a/+", "a/b"));
  BOOST_TEST(filters_overlap("a/+/c", "a/b/+"));
  BOOST_TEST(!filters_overlap("a/+/c", "a/b/d"));
  BOOST_TEST(filters_overlap("a/#", "a")); // "a" matches both
  BOOST_TEST(filters_overlap("a", "a/#"));
  BOOST_TEST(!filters_overlap("a", "a/b"));
  BOOST_TEST(!filters_overlap("a/b", "a"));
  BOOST_TEST(!filters_overlap("a/+", "a"));
  BOOST_TEST(filters_overlap("#", "x/y/z"));
  BOOST_TEST(filters_overlap("svc/+/get", "svc/a/#"));
  BOOST_TEST(!filters_overlap("svc/+/get", "svc/a"));
  // Wildcards at the first level never match $-topics.
  BOOST_TEST(!filters_overlap("#", "$grove/group/get"));
  BOOST_TEST(!filters_overlap("+/group/get", "$grove/group/get"));
  BOOST_TEST(filters_overlap("$grove/#", "$grove/group/get"));
  BOOST_TEST(filters_overlap("#", "+/x"));
  // Agrees with topic_matches on a shared topic.
  BOOST_TEST(grove::topic_matches("a/+/c", "a/b/c"));
  BOOST_TEST(grove::topic_matches("a/b/+", "a/b/c"));
}
