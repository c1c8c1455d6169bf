#define BOOST_TEST_MODULE routes_test
#include <boost/test/unit_test.hpp>

#include <algorithm>

#include "routes.hpp"

using namespace grove;
using namespace grove::mm;

namespace {

group::Group make_group() {
  group::Group g;
  g.set_name("home");
  g.set_version(7);
  for (auto t : {"lamp", "switch", "meter"})
    g.add_devices()->set_thing(t);
  for (auto f : {"brain", "logger"})
    g.add_functions()->set_name(f);
  auto sub = [&](const char* id, const char* src, const char* subject, const char* dst) {
    auto* s = g.add_subscriptions();
    s->set_id(id);
    s->set_source(src);
    s->set_subject(subject);
    s->set_target(dst);
  };
  sub("s1", "device:switch", "home/switch/+", "function:brain");
  sub("s2", "device:switch", "home/switch/#", "function:logger");
  sub("s3", "device:switch", "home/switch/+", "function:brain"); // duplicate route
  sub("s4", "function:brain", "home/lamp/set", "device:lamp");
  sub("s5", "device:meter", "home/meter/#", "cloud");
  sub("s6", "device:meter", "home/meter/power", "device:lamp");
  sub("s7", "shadow", "$aws/things/lamp/shadow/#", "device:lamp");
  sub("s8", "device:lamp", "$aws/things/lamp/shadow/update", "shadow");
  sub("s9", "cloud", "cmd/#", "function:brain");
  sub("s10", "cloud", "cmd/lamp", "device:lamp");
  return g;
}

bool has(const std::vector<std::string>& xs, const std::string& x) {
  return std::find(xs.begin(), xs.end(), x) != xs.end();
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

} // namespace

BOOST_AUTO_TEST_CASE(endpoints_parse) {
  BOOST_TEST((parse_endpoint("cloud")->kind == endpoint_kind::cloud));
  BOOST_TEST((parse_endpoint("shadow")->kind == endpoint_kind::shadow));
  auto d = parse_endpoint("device:lamp");
  BOOST_REQUIRE(d);
  BOOST_TEST(d->name == "lamp");
  BOOST_TEST((parse_endpoint("function:f")->kind == endpoint_kind::function));
  BOOST_TEST(!parse_endpoint("device:"));
  BOOST_TEST(!parse_endpoint("device:a/b"));
  BOOST_TEST(!parse_endpoint("queue:x"));
  BOOST_TEST(!parse_endpoint("function:@x"));
}

BOOST_AUTO_TEST_CASE(device_sources_route_to_functions_shadow_and_cloud_only) {
  routes r{make_group()};
  BOOST_TEST(r.size() == 10u);
  BOOST_TEST(r.skipped() == 0u);
  auto t = r.match("device:switch", "home/switch/1");
  BOOST_TEST(t.functions.size() == 2u); // brain once, logger once
  BOOST_TEST(has(t.functions, "brain"));
  BOOST_TEST(has(t.functions, "logger"));
  BOOST_TEST(!t.cloud);
  BOOST_TEST(!t.devices); // device to device is the broker's job
  t = r.match("device:switch", "home/switch/1/deep");
  BOOST_TEST(t.functions.size() == 1u);
  BOOST_TEST(t.functions[0] == "logger");
  // Another device on the same topic is not the subscription's source.
  BOOST_TEST(r.match("device:lamp", "home/switch/1").empty());
  t = r.match("device:meter", "home/meter/power");
  BOOST_TEST(t.cloud);
  BOOST_TEST(!t.devices);
  BOOST_TEST(r.match("device:lamp", "$aws/things/lamp/shadow/update").shadow);
  BOOST_TEST(r.match("device:lamp", "$aws/things/lamp/shadow/get").empty());
}

BOOST_AUTO_TEST_CASE(other_sources_inject_for_devices) {
  routes r{make_group()};
  auto t = r.match("function:brain", "home/lamp/set");
  BOOST_TEST(t.devices);
  BOOST_TEST(t.functions.empty());
  BOOST_TEST(r.match("function:logger", "home/lamp/set").empty());
  BOOST_TEST(r.match("function:brain", "home/lamp/other").empty());
  BOOST_TEST(r.match("shadow", "$aws/things/lamp/shadow/update/accepted").devices);
  t = r.match("cloud", "cmd/lamp");
  BOOST_TEST(t.devices);
  BOOST_TEST(has(t.functions, "brain"));
  t = r.match("cloud", "cmd/other");
  BOOST_TEST(!t.devices);
  BOOST_TEST(has(t.functions, "brain"));
  BOOST_TEST(r.match("cloud", "status").empty());
}

BOOST_AUTO_TEST_CASE(acl_and_filters) {
  routes r{make_group()};
  auto acl = r.acl_text();
  for (auto line : {"thing lamp", "thing switch", "thing meter", "pub switch home/switch/+",
                    "pub switch home/switch/#", "pub meter home/meter/#",
                    "pub meter home/meter/power", "pub lamp $aws/things/lamp/shadow/update",
                    "deliver meter lamp home/meter/power",
                    "deliver @function:brain lamp home/lamp/set",
                    "deliver @shadow lamp $aws/things/lamp/shadow/#",
                    "deliver @cloud lamp cmd/lamp"})
    BOOST_TEST(has_line(acl, line), line);
  // The duplicate subscription gives one pub line.
  auto first = acl.find("pub switch home/switch/+\n");
  BOOST_TEST(acl.find("pub switch home/switch/+\n", first + 1) == std::string::npos);
  // Functions, cloud and shadow are not things.
  BOOST_TEST(acl.find("thing brain") == std::string::npos);
  auto local = r.local_filters();
  BOOST_TEST(local.size() == 4u);
  BOOST_TEST(has(local, "home/switch/+"));
  BOOST_TEST(has(local, "home/meter/#"));
  BOOST_TEST(has(local, "$aws/things/lamp/shadow/update"));
  BOOST_TEST(!has(local, "home/meter/power")); // device to device only
  auto cloud = r.cloud_filters();
  BOOST_TEST(cloud.size() == 2u);
  BOOST_TEST(has(cloud, "cmd/#"));
  BOOST_TEST(has(cloud, "cmd/lamp"));
}

BOOST_AUTO_TEST_CASE(empty_table_routes_nothing) {
  routes r;
  BOOST_TEST(r.match("device:lamp", "a").empty());
  BOOST_TEST(r.acl_text().find("thing") == std::string::npos);
  // No group yet: the broker tells devices to retry instead of refusing them.
  BOOST_TEST(r.acl_text().find("\nnot_ready\n") != std::string::npos);
  BOOST_TEST(r.local_filters().empty());
  auto g = make_group();
  g.mutable_subscriptions(0)->set_target("queue:x");
  routes bad{g};
  BOOST_TEST(bad.skipped() == 1u);
  BOOST_TEST(bad.size() == 9u);
}
