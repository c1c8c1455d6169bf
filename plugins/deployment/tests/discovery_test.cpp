// Greengrass v1's discovery answer (src/discovery.{hpp,cpp}) without a server: the route
// and its refusals (404, 405, 403 before 404 so a device cannot probe the group), v1's
// JSON shape with the connectivity list and the CAs, the group id (the deployed v1
// group's over a real groups.db, else the name-based UUID), PEM bundles split.

#define BOOST_TEST_MODULE deployment_discovery
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <filesystem>

#include "discovery.hpp"
#include "grove/errors.hpp"
#include "v1_store.hpp"

using namespace grove::deployment;
using nlohmann::json;

namespace {

const char* ca1 = "-----BEGIN CERTIFICATE-----\nMIIBone\n-----END CERTIFICATE-----";
const char* ca2 = "-----BEGIN CERTIFICATE-----\nMIIBtwo\n-----END CERTIFICATE-----";

struct fixture {
  discovery_settings settings;
  discovery_group group;
  std::optional<json> info;          // the core's stored connectivity
  std::string deployed;              // the deployed v1 group's id
  std::vector<std::string> asked;    // things whose connectivity was read
  caf::error fail;                   // both sources fail with it when set
  discovery_sources sources;

  fixture() {
    settings.region = "eu-west-1";
    settings.account_id = "123456789012";
    settings.core_thing = "core-1";
    settings.cas = {std::string{ca1} + "\n"};
    group.name = "home";
    group.devices = {"A", "B"};
    sources.connectivity =
      [this](const std::string& thing) -> caf::expected<std::optional<json>> {
      asked.push_back(thing);
      if (fail)
        return fail;
      return info;
    };
    sources.deployed_group_id = [this]() -> caf::expected<std::string> {
      if (fail)
        return fail;
      return deployed;
    };
  }

  discovery_outcome get(const std::string& target, const std::string& cn,
                        const std::string& method = "GET", bool with_group = true) {
    return discover(settings, with_group ? &group : nullptr, method, target, cn, sources);
  }
};

json body(const discovery_outcome& o) {
  return json::parse(o.response.body);
}

} // namespace

BOOST_FIXTURE_TEST_CASE(a_device_gets_v1s_answer, fixture) {
  auto o = get("/greengrass/discover/thing/A", "A");
  BOOST_REQUIRE_EQUAL(o.response.status, 200);
  BOOST_CHECK(o.refusal.empty());
  auto b = body(o);
  BOOST_REQUIRE_EQUAL(b["GGGroups"].size(), 1u);
  auto g = b["GGGroups"][0];
  BOOST_CHECK_EQUAL(g["GGGroupId"], stable_group_id("home"));
  BOOST_REQUIRE_EQUAL(g["Cores"].size(), 1u);
  BOOST_CHECK_EQUAL(g["Cores"][0]["thingArn"], "arn:aws:iot:eu-west-1:123456789012:thing/core-1");
  // Never set: an empty list, not an error.
  BOOST_CHECK(g["Cores"][0]["Connectivity"] == json::array());
  BOOST_CHECK(g["CAs"] == json::array({std::string{ca1} + "\n"}));
  // The core's connectivity is read, not the device's.
  BOOST_CHECK(asked == std::vector<std::string>{"core-1"});
  BOOST_CHECK_EQUAL(o.response.content_type, "application/json");
}

BOOST_FIXTURE_TEST_CASE(the_stored_connectivity_and_the_deployed_group, fixture) {
  info = json::array({{{"Id", "lan"}, {"HostAddress", "10.0.0.2"}, {"PortNumber", 8883},
                       {"Metadata", ""}},
                      {{"Id", "wlan"}, {"HostAddress", "core.local"}, {"PortNumber", 8884},
                       {"Metadata", "m"}}});
  deployed = "0b8e1cd6-7d3f-4f4f-9a1b-2d0c6a1e9e11";
  auto o = get("/greengrass/discover/thing/B?x=1", "B"); // the query is ignored
  BOOST_REQUIRE_EQUAL(o.response.status, 200);
  auto g = body(o)["GGGroups"][0];
  BOOST_CHECK(g["Cores"][0]["Connectivity"] == *info);
  BOOST_CHECK_EQUAL(g["GGGroupId"], deployed);
  // Percent-encoding is decoded before the thing is compared with the CN.
  BOOST_CHECK_EQUAL(get("/greengrass/discover/thing/%41", "A").response.status, 200);
}

BOOST_FIXTURE_TEST_CASE(the_deployed_groups_cas_follow_the_configured_ones, fixture) {
  // The group CA source (README "Group CA"): its CAs after ca_file's, a duplicate once.
  const std::string g1 = "-----BEGIN CERTIFICATE-----\nMIIBg1\n-----END CERTIFICATE-----\n";
  const std::string g2 = "-----BEGIN CERTIFICATE-----\nMIIBg2\n-----END CERTIFICATE-----\n";
  caf::error cas_fail;
  sources.group_cas = [&]() -> caf::expected<std::vector<std::string>> {
    if (cas_fail)
      return cas_fail;
    return std::vector<std::string>{g1, std::string{ca1} + "\n", g2};
  };
  auto o = get("/greengrass/discover/thing/A", "A");
  BOOST_REQUIRE_EQUAL(o.response.status, 200);
  BOOST_CHECK(body(o)["GGGroups"][0]["CAs"] == json::array({std::string{ca1} + "\n", g1, g2}));
  // A failing source is a 500 with the reason, as the others.
  cas_fail = grove::make_error(grove::errc::system_error, "the group store is gone");
  o = get("/greengrass/discover/thing/A", "A");
  BOOST_CHECK_EQUAL(o.response.status, 500);
  BOOST_CHECK(o.response.body.find("the group store is gone") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(only_the_certificates_own_thing_and_only_the_groups, fixture) {
  // Another thing's path: 403 whether or not it is a device (no probing the group).
  for (auto [path_thing, cn] : {std::pair{"B", "A"}, std::pair{"A", "C"}, std::pair{"Z", "C"},
                                std::pair{"A", ""}}) {
    auto o = get(std::string{"/greengrass/discover/thing/"} + path_thing, cn);
    BOOST_CHECK_EQUAL(o.response.status, 403);
    auto b = body(o);
    BOOST_CHECK(b["message"].is_string() && !b["message"].get<std::string>().empty());
    BOOST_CHECK_EQUAL(b["traceId"].get<std::string>().size(), 36u);
    BOOST_CHECK(o.refusal.find("asked to discover") != std::string::npos);
  }
  BOOST_CHECK(asked.empty());
  // Its own thing, not a device of the group: AWS's 404 body.
  auto o = get("/greengrass/discover/thing/C", "C");
  BOOST_CHECK_EQUAL(o.response.status, 404);
  BOOST_CHECK_EQUAL(body(o)["errorMessage"], "The thing provided for discovery was not found");
  BOOST_CHECK(o.refusal.find("'C' is not a device of group 'home'") != std::string::npos);
  // No group in force: every thing is 404.
  o = get("/greengrass/discover/thing/A", "A", "GET", false);
  BOOST_CHECK_EQUAL(o.response.status, 404);
  BOOST_CHECK(o.refusal.find("any group") != std::string::npos);
  // The core is no device of its own group.
  BOOST_CHECK_EQUAL(get("/greengrass/discover/thing/core-1", "core-1").response.status, 404);
}

BOOST_FIXTURE_TEST_CASE(routes_and_methods, fixture) {
  for (auto target : {"/", "/greengrass/discover/thing/", "/greengrass/discover/thing/A/",
                      "/greengrass/discover/thing/A/x", "/greengrass/discover/thing",
                      "/greengrass/discover/group/A", "/greengrass/v2/components",
                      "greengrass/discover/thing/A", "//greengrass/discover/thing/A", ""}) {
    auto o = get(target, "A");
    BOOST_CHECK_MESSAGE(o.response.status == 404, target << ": " << o.response.status);
    BOOST_CHECK_EQUAL(body(o)["message"], "Not Found");
    BOOST_CHECK(!o.refusal.empty());
  }
  for (auto method : {"POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}) {
    auto o = get("/greengrass/discover/thing/A", "A", method);
    BOOST_CHECK_EQUAL(o.response.status, 405);
    BOOST_CHECK(o.response.headers == (std::vector<std::pair<std::string, std::string>>{{"Allow", "GET"}}));
  }
  BOOST_CHECK(asked.empty());
}

BOOST_FIXTURE_TEST_CASE(a_failing_source_is_a_500_with_the_reason, fixture) {
  fail = grove::make_error(grove::errc::system_error, "disk I/O error");
  auto o = get("/greengrass/discover/thing/A", "A");
  BOOST_CHECK_EQUAL(o.response.status, 500);
  BOOST_CHECK(body(o)["message"].get<std::string>().find("disk I/O error") != std::string::npos);
  BOOST_CHECK(o.refusal.find("disk I/O error") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(what_the_client_sent_is_quoted_safely, fixture) {
  // Bytes that are not UTF-8 or printable: a valid JSON body, a printable log line.
  std::string target = "/greengrass/discover/thing/\xff\xfe\n%00";
  auto o = get(target, "A");
  BOOST_CHECK_EQUAL(o.response.status, 403);
  BOOST_CHECK_NO_THROW(body(o));
  for (char c : o.refusal)
    BOOST_CHECK(c >= ' ' && c < 127);
  o = get("/x\xff", "A", "G\x01T");
  BOOST_CHECK_EQUAL(o.response.status, 404);
}

BOOST_AUTO_TEST_CASE(stable_group_ids_are_name_based_uuids) {
  // Python's uuid.uuid5(uuid.NAMESPACE_URL, "grove-group:e2e"), an independent
  // implementation of RFC 4122's version 5.
  BOOST_CHECK_EQUAL(stable_group_id("e2e"), "79eb403f-9722-5570-820d-47a2cdc4e585");
  BOOST_CHECK_EQUAL(stable_group_id("home"), stable_group_id("home"));
  BOOST_CHECK_NE(stable_group_id("home"), stable_group_id("home2"));
  auto id = stable_group_id("");
  BOOST_CHECK_EQUAL(id.size(), 36u);
  BOOST_CHECK_EQUAL(id[14], '5');
}

BOOST_AUTO_TEST_CASE(pem_bundles_are_split_per_certificate) {
  std::string bundle = std::string{"Subject: one\n"} + ca1 + "\ntext between\n" + ca2 + "\n";
  auto certs = pem_certificates(bundle);
  BOOST_REQUIRE_EQUAL(certs.size(), 2u);
  BOOST_CHECK_EQUAL(certs[0], std::string{ca1} + "\n");
  BOOST_CHECK_EQUAL(certs[1], std::string{ca2} + "\n");
  BOOST_CHECK(pem_certificates("no certificate").empty());
  // A block with a byte that is not ASCII is no PEM certificate (found by the fuzzer:
  // it came back from the JSON answer as U+FFFD).
  BOOST_CHECK(pem_certificates("-----BEGIN CERTIFICATE-----\n\xefMIIB\n-----END CERTIFICATE-----")
                .empty());
  // A BEGIN without its END is not a certificate.
  BOOST_CHECK_EQUAL(pem_certificates(std::string{ca1} + "\n-----BEGIN CERTIFICATE-----\nMII").size(), 1u);
}

BOOST_AUTO_TEST_CASE(the_deployed_group_is_the_newest_success) {
  auto dir = std::filesystem::temp_directory_path()
             / ("deployment_discovery_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  {
    auto db = v1_store::open(dir / "groups.db");
    BOOST_REQUIRE(db);
    auto& s = **db;
    auto none = last_deployed_group(s);
    BOOST_REQUIRE(none);
    BOOST_CHECK_EQUAL(*none, "");
    for (auto id : {"g1", "g2", "g3"}) {
      v1_resource r;
      r.kind = "groups";
      r.id = id;
      r.name = id;
      BOOST_REQUIRE(!s.create(r, std::nullopt));
    }
    auto deploy = [&s](std::string group, std::string id, std::string status, int64_t ms) {
      v1_deployment d;
      d.group_id = std::move(group);
      d.id = std::move(id);
      d.type = "NewDeployment";
      d.status = std::move(status);
      d.created_ms = ms;
      d.updated_ms = ms;
      BOOST_REQUIRE(!s.put_deployment(d));
    };
    auto last = [&s] {
      auto r = last_deployed_group(s);
      BOOST_REQUIRE_MESSAGE(r, (r ? std::string{} : grove::describe(r.error())));
      return *r;
    };
    // Only failed or unfinished deployments: none deployed.
    deploy("g1", "d1", "Failure", 100);
    deploy("g2", "d2", "InProgress", 110);
    BOOST_CHECK_EQUAL(last(), "");
    deploy("g1", "d3", "Success", 200);
    BOOST_CHECK_EQUAL(last(), "g1");
    deploy("g2", "d4", "Success", 300);
    BOOST_CHECK_EQUAL(last(), "g2");
    // A later failed deployment of g1 leaves g2 in force.
    deploy("g1", "d5", "Failure", 400);
    BOOST_CHECK_EQUAL(last(), "g2");
    // g2's earlier success still counts past more than one page of its failures.
    for (int i = 0; i < 120; ++i)
      deploy("g2", std::to_string(i).append("-failed"), "Failure", 500 + i);
    BOOST_CHECK_EQUAL(last(), "g2");
    deploy("g3", "d6", "Success", 1000);
    BOOST_CHECK_EQUAL(last(), "g3");
  }
  std::filesystem::remove_all(dir);
}
