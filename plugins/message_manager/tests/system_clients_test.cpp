// The system clients' cloud filters (src/system_clients.hpp): checks of cloud topics
// and filters, add/remove, the per-client limit, matching, and persistence in a real
// SQLite file across reopen (a restart of message_manager).
#define BOOST_TEST_MODULE system_clients_test
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "grove/errors.hpp"
#include "grove/message_manager/client.hpp"
#include "system_clients.hpp"
#include "test_support.hpp"

namespace grove {
// Lets BOOST_TEST print error codes.
std::ostream& operator<<(std::ostream& os, errc x) {
  return os << to_string(x);
}
} // namespace grove

using namespace grove;
using namespace grove::mm;
using strings = std::vector<std::string>;

namespace {

errc code_of(const caf::error& err) {
  return static_cast<errc>(err.code());
}

std::unique_ptr<system_clients> open_in(const test::temp_dir& dir, const strings& allowed) {
  auto s = system_clients::open(dir.path() / "system.db", allowed);
  BOOST_REQUIRE_MESSAGE(s, "open: " << (s ? "" : describe(s.error())));
  return std::move(*s);
}

} // namespace

BOOST_AUTO_TEST_CASE(cloud_topics_and_filters_are_checked) {
  BOOST_TEST(!check_cloud_topic("$aws/things/lamp/shadow/update"));
  BOOST_TEST(!check_cloud_topic(std::string(256, 'a')));
  BOOST_TEST(code_of(check_cloud_topic(std::string(257, 'a'))) == errc::invalid_topic);
  BOOST_TEST(code_of(check_cloud_topic("a/+/b")) == errc::invalid_topic);
  BOOST_TEST(code_of(check_cloud_topic("a/#")) == errc::invalid_topic);
  BOOST_TEST(code_of(check_cloud_topic("")) == errc::invalid_topic);
  BOOST_TEST(code_of(check_cloud_topic("bad/\xff\xfe")) == errc::invalid_topic);
  BOOST_TEST(code_of(check_cloud_topic(std::string{"nul\0x", 5})) == errc::invalid_topic);
  BOOST_TEST(!check_cloud_filter("$aws/things/+/shadow/#"));
  BOOST_TEST(code_of(check_cloud_filter("a/#/b")) == errc::invalid_topic);
  BOOST_TEST(code_of(check_cloud_filter("a/b+")) == errc::invalid_topic);
  BOOST_TEST(code_of(check_cloud_filter(std::string(257, 'f'))) == errc::invalid_topic);
  BOOST_TEST(code_of(check_cloud_filter("x/\xc0\xaf")) == errc::invalid_topic); // overlong '/'
}

BOOST_AUTO_TEST_CASE(add_remove_and_match) {
  test::temp_dir dir;
  auto s = open_in(dir, {"shadow", "other"});
  auto r = s->add("shadow", {"$aws/things/+/shadow/#", "cmd/x"});
  BOOST_REQUIRE(r);
  BOOST_TEST(*r == (strings{"$aws/things/+/shadow/#", "cmd/x"}));
  BOOST_REQUIRE(s->add("shadow", {"cmd/x"})); // again: a no-op
  BOOST_REQUIRE(s->add("other", {"cmd/#"}));
  BOOST_TEST(s->match("$aws/things/lamp/shadow/update/delta") == strings{"shadow"});
  BOOST_TEST(s->match("cmd/x") == (strings{"other", "shadow"}));
  BOOST_TEST(s->match("elsewhere").empty());
  BOOST_TEST(s->filters() == (strings{"$aws/things/+/shadow/#", "cmd/#", "cmd/x"}));

  // A bad filter among good ones changes nothing.
  auto bad = s->add("shadow", {"ok/1", "bad/#/x"});
  BOOST_TEST(code_of(bad.error()) == errc::invalid_topic);
  BOOST_TEST(s->snapshot()->at("shadow").count("ok/1") == 0);

  r = s->remove("shadow", {"cmd/x", "never/subscribed"});
  BOOST_REQUIRE(r);
  BOOST_TEST(*r == strings{"$aws/things/+/shadow/#"});
  BOOST_TEST(s->match("cmd/x") == strings{"other"});
  r = s->remove("other", {}); // none: all of them
  BOOST_REQUIRE(r);
  BOOST_TEST(r->empty());
  BOOST_TEST(s->snapshot()->count("other") == 0);
}

BOOST_AUTO_TEST_CASE(a_client_holds_at_most_the_limit) {
  test::temp_dir dir;
  auto s = open_in(dir, {"shadow"});
  strings many;
  for (size_t i = 0; i < message_manager::cloud_max_filters; ++i)
    many.push_back("t/" + std::to_string(i));
  BOOST_REQUIRE(s->add("shadow", many));
  auto over = s->add("shadow", {"one/more"});
  BOOST_TEST(code_of(over.error()) == errc::too_large);
  BOOST_TEST(s->snapshot()->at("shadow").size() == message_manager::cloud_max_filters);
  BOOST_TEST(static_cast<bool>(s->add("shadow", {"t/0"}))); // one it holds: still fits
}

BOOST_AUTO_TEST_CASE(filters_survive_a_reopen_and_unlisted_clients_are_dropped) {
  test::temp_dir dir;
  {
    auto s = open_in(dir, {"shadow", "gone"});
    BOOST_REQUIRE(s->add("shadow", {"$aws/things/+/shadow/#"}));
    BOOST_REQUIRE(s->add("gone", {"cmd/#"}));
    BOOST_REQUIRE(s->remove("shadow", {"nothing"}));
  }
  {
    auto s = open_in(dir, {"shadow", "gone"});
    BOOST_TEST(s->filters() == (strings{"$aws/things/+/shadow/#", "cmd/#"}));
  }
  {
    // "gone" is no longer in cloud.system_clients: its filters go, for good.
    auto s = open_in(dir, {"shadow"});
    BOOST_TEST(s->filters() == strings{"$aws/things/+/shadow/#"});
  }
  auto s = open_in(dir, {"shadow", "gone"});
  BOOST_TEST(s->snapshot()->count("gone") == 0);
  auto dropped = s->retain({});
  BOOST_REQUIRE(dropped);
  BOOST_TEST(*dropped == strings{"shadow"});
  BOOST_TEST(s->filters().empty());
}

BOOST_AUTO_TEST_CASE(a_foreign_file_is_refused_naming_it) {
  test::temp_dir dir;
  auto file = dir.write("system.db", "this is not a database, just text\n");
  auto s = system_clients::open(file, {"shadow"});
  BOOST_REQUIRE(!s);
  BOOST_TEST(code_of(s.error()) == errc::malformed);
  BOOST_TEST(describe(s.error()).find(file.string()) != std::string::npos);
}
