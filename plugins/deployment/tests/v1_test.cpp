// Greengrass v1's group API (src/v1_api.{hpp,cpp}) through the shared router (SigV4
// first) over a real SQLite file: the six definition kinds from one table, their checks
// with the field named, groups and group versions, tags, clientTokens, deployments with
// their status, and the group document a deployment hands the kernel, loaded by the
// kernel's own group reader.

#define BOOST_TEST_MODULE deployment_v1
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sys/stat.h>
#include <unistd.h>

#include "api.hpp"
#include "grove/errors.hpp"
#include "grove/kernel/group.hpp"
#include "sigv4.hpp"
#include "ip_detector.hpp"
#include "v1_api.hpp"
#include "v1_operations.hpp"

using namespace grove::deployment;
using nlohmann::json;

namespace {

constexpr const char* region = "us-east-1";
constexpr const char* account = "123456789012";

struct fixture {
  std::filesystem::path dir;
  std::unique_ptr<component_store> components;
  std::unique_ptr<v1_store> groups;
  std::unique_ptr<api> service;
  std::unique_ptr<v1_api> v1;
  std::vector<v1_apply_job> jobs;
  std::chrono::system_clock::time_point now = *parse_amz_date("20261202T120000Z");

  explicit fixture(std::string thing_name = "") {
    dir = std::filesystem::temp_directory_path() / ("deployment_v1_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    auto c = component_store::open(dir / "components.db");
    BOOST_REQUIRE(c);
    components = std::move(*c);
    auto g = v1_store::open(dir / "groups.db");
    BOOST_REQUIRE(g);
    groups = std::move(*g);
    api_settings settings;
    settings.keys["AKIAGROVETEST00001"] = access_key{"secret-secret-secret", {"*"}};
    settings.keys["AKIAGROVEREADONLY1"] = access_key{"secret-secret-secret", {"GetGroup"}};
    service = std::make_unique<api>(settings, *components);
    v1_settings vs;
    vs.thing_name = std::move(thing_name);
    // brain's package, version 1, in lambdaFunction's layout (a program in code/).
    std::filesystem::create_directories(dir / "lambdas/brain/1/code");
    std::ofstream{dir / "lambdas/brain/1/configuration.json"}
      << R"({"FunctionName": "brain", "Runtime": "provided.al2", "Handler": "bootstrap"})";
    vs.lambda_packages_dir = (dir / "lambdas").string();
    vs.group_ca_dir = dir / "group_ca";
    v1 = std::make_unique<v1_api>(settings, vs, *groups);
    v1->set_applier([this](v1_apply_job job) { jobs.push_back(std::move(job)); });
    service->set_v1(v1.get());
  }

  ~fixture() {
    service.reset();
    v1.reset();
    groups.reset();
    components.reset();
    std::filesystem::remove_all(dir);
  }

  http_response call(std::string method, std::string target, const json& body = nullptr,
                     std::string token = "", std::string key = "AKIAGROVETEST00001") {
    http_request r{std::move(method),
                   std::move(target),
                   {{"host", "localhost"}},
                   body.is_null() ? std::string{} : body.dump()};
    if (!token.empty())
      r.headers.emplace_back("x-amzn-client-token", token);
    sign_sigv4(r, sigv4_scope{region}, key, "secret-secret-secret", now);
    return service->handle(r, now);
  }

  json ok(std::string method, std::string target, const json& body = nullptr) {
    auto r = call(method, target, body);
    BOOST_TEST_INFO(method << " " << target << ": " << r.body);
    BOOST_REQUIRE_EQUAL(r.status, 200);
    return json::parse(r.body);
  }
};

std::string type_of(const http_response& r) {
  for (auto& [k, v] : r.headers)
    if (k == "x-amzn-ErrorType")
      return v;
  return "";
}

std::string message_of(const http_response& r) {
  return json::parse(r.body).value("Message", "");
}

std::string thing(const std::string& name) {
  return std::string{"arn:aws:iot:"} + region + ":" + account + ":thing/" + name;
}

std::string cert() {
  return std::string{"arn:aws:iot:"} + region + ":" + account + ":cert/abc123";
}

std::string lambda(const std::string& name, const std::string& q = "1") {
  return std::string{"arn:aws:lambda:"} + region + ":" + account + ":function:" + name + ":" + q;
}

json device(const std::string& id, const std::string& name) {
  return {{"Id", id}, {"ThingArn", thing(name)}, {"CertificateArn", cert()}, {"SyncShadow", false}};
}

json sub(const std::string& id, const std::string& source, const std::string& subject,
         const std::string& target) {
  return {{"Id", id}, {"Source", source}, {"Subject", subject}, {"Target", target}};
}

// One good version of each kind.
json good(const std::string& kind) {
  if (kind == "cores")
    return {{"Cores", json::array({device("core", "core-1")})}};
  if (kind == "devices")
    return {{"Devices", json::array({device("d1", "lamp"), device("d2", "switch")})}};
  if (kind == "functions")
    return {{"Functions",
             json::array({{{"Id", "f1"},
                           {"FunctionArn", lambda("brain")},
                           {"FunctionConfiguration",
                            {{"Executable", "brain"},
                             {"Pinned", true},
                             {"Timeout", 3},
                             {"MemorySize", 16384},
                             {"EncodingType", "json"},
                             {"ExecArgs", "-v  --x"},
                             {"Environment",
                              {{"Variables", {{"A", "1"}}},
                               {"AccessSysfs", false},
                               {"ResourceAccessPolicies",
                                json::array({{{"ResourceId", "data"}, {"Permission", "rw"}}})},
                               {"Execution", {{"IsolationMode", "NoContainer"},
                                              {"RunAs", {{"Uid", 1000}, {"Gid", 1000}}}}}}}}}}})}};
  if (kind == "subscriptions")
    return {{"Subscriptions",
             json::array({sub("s1", thing("switch"), "home/switch/+", lambda("brain")),
                          sub("s2", lambda("brain"), "home/lamp/set", thing("lamp")),
                          sub("s3", thing("lamp"), "home/lamp/#", "cloud"),
                          sub("s4", thing("lamp"), "$aws/things/lamp/shadow/#", "GGShadowService")})}};
  if (kind == "resources")
    return {{"Resources",
             json::array({{{"Id", "data"},
                           {"Name", "data"},
                           {"ResourceDataContainer",
                            {{"LocalVolumeResourceData",
                              {{"SourcePath", "/srv/data"},
                               {"DestinationPath", "/data"},
                               {"GroupOwnerSetting", {{"AutoAddGroupOwner", true}}}}}}}}})}};
  return {{"Loggers", json::array({{{"Id", "l1"},
                                    {"Component", "GreengrassSystem"},
                                    {"Level", "INFO"},
                                    {"Type", "FileSystem"},
                                    {"Space", 1024}}})}};
}

const std::vector<std::string> all_kinds = {"cores",     "devices",   "functions",
                                            "subscriptions", "resources", "loggers"};

// Creates one definition of each kind with its good version: kind → version ARN.
std::map<std::string, std::string> definitions(fixture& f) {
  std::map<std::string, std::string> out;
  for (const auto& k : all_kinds)
    out[k] = f.ok("POST", "/greengrass/definition/" + k,
                  {{"Name", k + "-def"}, {"InitialVersion", good(k)}})["LatestVersionArn"];
  return out;
}

json group_version(const std::map<std::string, std::string>& arns) {
  return {{"CoreDefinitionVersionArn", arns.at("cores")},
          {"DeviceDefinitionVersionArn", arns.at("devices")},
          {"FunctionDefinitionVersionArn", arns.at("functions")},
          {"SubscriptionDefinitionVersionArn", arns.at("subscriptions")},
          {"ResourceDefinitionVersionArn", arns.at("resources")},
          {"LoggerDefinitionVersionArn", arns.at("loggers")}};
}

const std::regex iso_re{R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"};
const std::regex uuid_re{R"([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})"};

} // namespace

BOOST_FIXTURE_TEST_CASE(every_kind_has_the_same_life_cycle, fixture) {
  for (const auto& k : all_kinds) {
    BOOST_TEST_CONTEXT("kind " << k) {
      auto base = "/greengrass/definition/" + k;
      // Created without a version: no LatestVersion yet.
      auto created = ok("POST", base, {{"Name", "first"}});
      std::string id = created["Id"];
      BOOST_TEST(std::regex_match(id, uuid_re));
      BOOST_TEST(created["Arn"] == std::string{"arn:aws:greengrass:us-east-1:123456789012:/greengrass/definition/"} + k + "/" + id);
      BOOST_TEST(std::regex_match(created["CreationTimestamp"].get<std::string>(), iso_re));
      BOOST_TEST(created["CreationTimestamp"] == "2026-12-02T12:00:00.000Z");
      BOOST_TEST(!created.contains("LatestVersion"));
      // A version, then the definition points at it.
      auto v = ok("POST", base + "/" + id + "/versions", good(k));
      BOOST_TEST(v["Id"] == id);
      BOOST_TEST(v["Arn"] == created["Arn"].get<std::string>() + "/versions/" + v["Version"].get<std::string>());
      auto got = ok("GET", base + "/" + id);
      BOOST_TEST(got["LatestVersion"] == v["Version"]);
      BOOST_TEST(got["LatestVersionArn"] == v["Arn"]);
      BOOST_TEST(got["Name"] == "first");
      BOOST_TEST(got["tags"] == json::object());
      auto gv = ok("GET", base + "/" + id + "/versions/" + v["Version"].get<std::string>());
      BOOST_TEST(gv["Definition"] == good(k));
      // Rename; a second version; both listed, oldest first.
      BOOST_TEST(ok("PUT", base + "/" + id, {{"Name", "renamed"}}) == json::object());
      BOOST_TEST(ok("GET", base + "/" + id)["Name"] == "renamed");
      auto v2 = ok("POST", base + "/" + id + "/versions", good(k));
      auto versions = ok("GET", base + "/" + id + "/versions")["Versions"];
      BOOST_REQUIRE_EQUAL(versions.size(), 2u);
      BOOST_TEST(versions[0]["Version"] == v["Version"]);
      BOOST_TEST(versions[1]["Version"] == v2["Version"]);
      BOOST_TEST(ok("GET", base + "/" + id)["LatestVersion"] == v2["Version"]);
      // Listed with its Tags (DefinitionInformation).
      auto list = ok("GET", base)["Definitions"];
      BOOST_REQUIRE_EQUAL(list.size(), 1u);
      BOOST_TEST(list[0]["Id"] == id);
      BOOST_TEST(list[0]["tags"] == json::object());
      // Deleted: gone, and its versions with it.
      BOOST_TEST(ok("DELETE", base + "/" + id) == json::object());
      auto gone = call("GET", base + "/" + id);
      BOOST_TEST(gone.status == 404);
      BOOST_TEST(type_of(gone) == "IdNotFoundException");
      BOOST_TEST(call("GET", base + "/" + id + "/versions/" + v["Version"].get<std::string>()).status == 404);
      BOOST_TEST(type_of(call("DELETE", base + "/" + id)) == "IdNotFoundException");
      BOOST_TEST(type_of(call("PUT", base + "/" + id, {{"Name", "x"}})) == "IdNotFoundException");
      BOOST_TEST(type_of(call("POST", base + "/" + id + "/versions", good(k))) == "IdNotFoundException");
    }
  }
}

BOOST_FIXTURE_TEST_CASE(unknown_version_and_update_without_name, fixture) {
  auto id = ok("POST", "/greengrass/definition/devices", {{"InitialVersion", good("devices")}})["Id"].get<std::string>();
  auto r = call("GET", "/greengrass/definition/devices/" + id + "/versions/nope");
  BOOST_TEST(r.status == 404);
  BOOST_TEST(type_of(r) == "VersionNotFoundException");
  r = call("PUT", "/greengrass/definition/devices/" + id, json::object());
  BOOST_TEST(r.status == 400);
  BOOST_TEST(type_of(r) == "BadRequestException");
  r = call("POST", "/greengrass/definition/devices", "not an object");
  BOOST_TEST(type_of(r) == "BadRequestException");
  http_request raw{"POST", "/greengrass/definition/devices", {{"host", "localhost"}}, "{oops"};
  sign_sigv4(raw, sigv4_scope{region}, "AKIAGROVETEST00001", "secret-secret-secret", now);
  r = service->handle(raw, now);
  BOOST_TEST(r.status == 400);
  BOOST_TEST(message_of(r) == "the request body is not a JSON object");
}

BOOST_FIXTURE_TEST_CASE(pagination_walks_every_definition_once, fixture) {
  std::set<std::string> made;
  for (int i = 0; i < 7; ++i)
    made.insert(ok("POST", "/greengrass/definition/loggers", {{"Name", "l" + std::to_string(i)}})["Id"].get<std::string>());
  std::set<std::string> seen;
  std::string next;
  int pages = 0;
  do {
    auto page = ok("GET", "/greengrass/definition/loggers?MaxResults=3"
                            + (next.empty() ? "" : "&NextToken=" + uri_encode(next, false)));
    for (auto& d : page["Definitions"])
      BOOST_TEST(seen.insert(d["Id"].get<std::string>()).second);
    next = page.value("NextToken", "");
    ++pages;
  } while (!next.empty());
  BOOST_TEST(pages == 3);
  BOOST_TEST(seen == made);
  BOOST_TEST(type_of(call("GET", "/greengrass/definition/loggers?MaxResults=0")) == "BadRequestException");
  BOOST_TEST(type_of(call("GET", "/greengrass/definition/loggers?MaxResults=101")) == "BadRequestException");
  BOOST_TEST(type_of(call("GET", "/greengrass/definition/loggers?NextToken=%21%21")) == "BadRequestException");
}

BOOST_FIXTURE_TEST_CASE(checks_name_the_field, fixture) {
  struct bad_case {
    std::string kind;
    json body;
    std::string field;
  };
  auto devices = [](size_t n) {
    json list = json::array();
    for (size_t i = 0; i < n; ++i)
      list.push_back(device("d" + std::to_string(i), "t" + std::to_string(i)));
    return json{{"Devices", list}};
  };
  auto subs = [](size_t n) {
    json list = json::array();
    for (size_t i = 0; i < n; ++i)
      list.push_back(sub("s" + std::to_string(i), "cloud", "a/b", thing("lamp")));
    return json{{"Subscriptions", list}};
  };
  std::vector<bad_case> cases = {
    {"cores", {{"Cores", json::array({device("a", "x"), device("b", "y")})}}, "Cores: 2 entries; at most 1"},
    {"cores", {{"Cores", json::array({{{"Id", "a"}, {"ThingArn", thing("x")}}})}}, "Cores[0].CertificateArn: is required"},
    {"devices", devices(grove::max_group_devices + 1), "Devices: 2501 entries; at most 2500"},
    {"devices", {{"Devices", json::array({device("a", "x"), device("a", "y")})}}, "Devices[1].Id: id 'a' is used twice"},
    {"devices", {{"Devices", json::array({device("a", "x"), device("b", "x")})}}, "Devices[1].ThingArn: thing 'x' is listed twice"},
    {"devices", {{"Devices", json::array({device("a", "grove")})}}, "Devices[0].ThingArn: thing name 'grove' is reserved"},
    {"devices", {{"Devices", json::array({{{"Id", "a"}, {"ThingArn", "lamp"}, {"CertificateArn", cert()}}})}}, "Devices[0].ThingArn: 'lamp' is not arn:aws:iot"},
    {"devices", {{"Devices", json::array({{{"Id", "a"}, {"ThingArn", thing("l")}, {"CertificateArn", cert()}, {"Extra", 1}}})}}, "Devices[0].Extra: unknown field"},
    {"devices", {{"Devices", json::array({{{"Id", "a"}, {"ThingArn", thing("l")}, {"CertificateArn", cert()}, {"SyncShadow", "yes"}}})}}, "Devices[0].SyncShadow: must be true or false"},
    {"functions", {{"Functions", json::array({{{"Id", "f"}, {"FunctionArn", lambda("f", "$LATEST")}}})}}, "Functions[0].FunctionArn: '" + lambda("f", "$LATEST") + "' $LATEST cannot be deployed"},
    {"functions", {{"Functions", json::array({{{"Id", "f"}, {"FunctionArn", lambda("f")}, {"FunctionConfiguration", {{"Timeout", 0}}}}})}}, "Functions[0].FunctionConfiguration.Timeout: must be an integer from 1 to 900"},
    {"functions", {{"Functions", json::array({{{"Id", "f"}, {"FunctionArn", lambda("f")}, {"FunctionConfiguration", {{"EncodingType", "xml"}}}}})}}, "Functions[0].FunctionConfiguration.EncodingType: must be one of binary | json"},
    {"functions", {{"Functions", json::array({{{"Id", "f"}, {"FunctionArn", lambda("f")}, {"FunctionConfiguration", {{"Environment", {{"Execution", {{"IsolationMode", "Docker"}}}}}}}}})}}, "Functions[0].FunctionConfiguration.Environment.Execution.IsolationMode: must be one of"},
    {"subscriptions", subs(grove::max_group_subscriptions + 1), "Subscriptions: 10001 entries; at most 10000"},
    {"subscriptions", {{"Subscriptions", json::array({sub("s", "device:lamp", "a", "cloud")})}}, "Subscriptions[0].Source: 'device:lamp' is not cloud, GGShadowService"},
    {"subscriptions", {{"Subscriptions", json::array({sub("s", "cloud", "a/#/b", thing("x"))})}}, "Subscriptions[0].Subject: "},
    {"subscriptions", {{"Subscriptions", json::array({sub("s", "cloud", "a", "cloud")})}}, "Subscriptions[0].Target: source and target are the same"},
    {"subscriptions", {{"Subscriptions", json::array({{{"Id", "s"}, {"Source", "cloud"}, {"Subject", "a"}}})}}, "Subscriptions[0].Target: is required"},
    {"resources", {{"Resources", json::array({{{"Id", "r"}, {"Name", "r"}, {"ResourceDataContainer", {{"LocalDeviceResourceData", {{"SourcePath", "/srv/x"}}}}}}})}}, "Resources[0].ResourceDataContainer.LocalDeviceResourceData.SourcePath: a device is under /dev/"},
    {"resources", {{"Resources", json::array({{{"Id", "r"}, {"Name", "r"}, {"ResourceDataContainer", {{"SecretsManagerSecretResourceData", json::object()}}}}})}}, "Resources[0].ResourceDataContainer.SecretsManagerSecretResourceData: is not supported by Grove"},
    {"loggers", {{"Loggers", json::array({{{"Id", "l"}, {"Component", "Lambda"}, {"Level", "INFO"}, {"Type", "AWSCloudWatch"}}})}}, "Loggers[0].Type: AWSCloudWatch: no cloud logging on the device"},
    {"loggers", {{"Loggers", json::array({{{"Id", "l"}, {"Component", "Kernel"}, {"Level", "INFO"}, {"Type", "FileSystem"}}})}}, "Loggers[0].Component: must be one of GreengrassSystem | Lambda"},
    {"loggers", {{"Loggers", json::array({{{"Id", "a"}, {"Component", "Lambda"}, {"Level", "INFO"}, {"Type", "FileSystem"}},
                                          {{"Id", "b"}, {"Component", "Lambda"}, {"Level", "WARN"}, {"Type", "FileSystem"}}})}},
     "Loggers[1].Component: Lambda has a logger already (Loggers[0])"},
  };
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT(c.kind << ": " << c.field) {
      auto id = ok("POST", "/greengrass/definition/" + c.kind, json::object())["Id"].get<std::string>();
      auto r = call("POST", "/greengrass/definition/" + c.kind + "/" + id + "/versions", c.body);
      BOOST_TEST(r.status == 400);
      BOOST_TEST(type_of(r) == "BadRequestException");
      BOOST_TEST(message_of(r).rfind(c.field, 0) == 0, message_of(r));
      auto details = json::parse(r.body)["ErrorDetails"];
      BOOST_TEST(details[0]["DetailedErrorCode"] == "InvalidField");
      // Nothing stored: the definition has no version.
      BOOST_TEST(!ok("GET", "/greengrass/definition/" + c.kind + "/" + id).contains("LatestVersion"));
      // The same as an InitialVersion: refused with the path under it, nothing created.
      auto before = ok("GET", "/greengrass/definition/" + c.kind)["Definitions"].size();
      r = call("POST", "/greengrass/definition/" + c.kind, {{"InitialVersion", c.body}});
      BOOST_TEST(message_of(r).rfind("InitialVersion." + c.field, 0) == 0, message_of(r));
      BOOST_TEST(ok("GET", "/greengrass/definition/" + c.kind)["Definitions"].size() == before);
    }
  }
  // At the limits exactly: accepted.
  auto id = ok("POST", "/greengrass/definition/devices", json::object())["Id"].get<std::string>();
  ok("POST", "/greengrass/definition/devices/" + id + "/versions", devices(grove::max_group_devices));
  id = ok("POST", "/greengrass/definition/subscriptions", json::object())["Id"].get<std::string>();
  ok("POST", "/greengrass/definition/subscriptions/" + id + "/versions", subs(grove::max_group_subscriptions));
}

BOOST_FIXTURE_TEST_CASE(groups_and_group_versions, fixture) {
  auto arns = definitions(*this);
  auto g = ok("POST", "/greengrass/groups", {{"Name", "home"}, {"InitialVersion", group_version(arns)}, {"tags", {{"site", "a"}}}});
  std::string id = g["Id"];
  BOOST_TEST(g["Arn"] == "arn:aws:greengrass:us-east-1:123456789012:/greengrass/groups/" + id);
  BOOST_TEST(g["LatestVersionArn"] == g["Arn"].get<std::string>() + "/versions/" + g["LatestVersion"].get<std::string>());
  auto got = ok("GET", "/greengrass/groups/" + id);
  BOOST_TEST(got["Name"] == "home");
  BOOST_TEST(got["tags"] == json({{"site", "a"}}));
  auto gv = ok("GET", "/greengrass/groups/" + id + "/versions/" + g["LatestVersion"].get<std::string>());
  BOOST_TEST(gv["Definition"] == group_version(arns));
  // A second version with fewer definitions.
  auto v2 = ok("POST", "/greengrass/groups/" + id + "/versions", {{"CoreDefinitionVersionArn", arns["cores"]}});
  BOOST_TEST(ok("GET", "/greengrass/groups/" + id)["LatestVersion"] == v2["Version"]);
  BOOST_TEST(ok("GET", "/greengrass/groups/" + id + "/versions")["Versions"].size() == 2u);
  auto list = ok("GET", "/greengrass/groups")["Groups"];
  BOOST_REQUIRE_EQUAL(list.size(), 1u);
  BOOST_TEST(!list[0].contains("tags"));
  BOOST_TEST(ok("PUT", "/greengrass/groups/" + id, {{"Name", "house"}}) == json::object());
  // Name is required.
  BOOST_TEST(message_of(call("POST", "/greengrass/groups", json::object())) == "Name: is required");
  // ARNs that are not there, of the wrong kind, or malformed.
  auto r = call("POST", "/greengrass/groups/" + id + "/versions", {{"DeviceDefinitionVersionArn", arns["cores"]}});
  BOOST_TEST(type_of(r) == "BadRequestException");
  BOOST_TEST(message_of(r).rfind("DeviceDefinitionVersionArn: '", 0) == 0, message_of(r));
  auto missing = arns["devices"].substr(0, arns["devices"].rfind('/')) + "/00000000-0000-4000-8000-000000000000";
  r = call("POST", "/greengrass/groups/" + id + "/versions", {{"DeviceDefinitionVersionArn", missing}});
  BOOST_TEST(message_of(r) == "DeviceDefinitionVersionArn: device definition version " + missing + " does not exist");
  r = call("POST", "/greengrass/groups/" + id + "/versions", {{"ConnectorDefinitionVersionArn", "x"}});
  BOOST_TEST(message_of(r).find("connectors are not supported") != std::string::npos);
  r = call("POST", "/greengrass/groups/nope/versions", {{"CoreDefinitionVersionArn", arns["cores"]}});
  BOOST_TEST(r.status == 404);
  BOOST_TEST(type_of(r) == "IdNotFoundException");
  BOOST_TEST(type_of(call("GET", "/greengrass/groups/" + id + "/versions/nope")) == "VersionNotFoundException");
}

BOOST_FIXTURE_TEST_CASE(group_versions_must_fit_together, fixture) {
  auto arns = definitions(*this);
  auto id = ok("POST", "/greengrass/groups", {{"Name", "g"}})["Id"].get<std::string>();
  // Subscriptions naming a device and a function the group does not hold.
  auto gv = group_version(arns);
  gv.erase("DeviceDefinitionVersionArn");
  auto r = call("POST", "/greengrass/groups/" + id + "/versions", gv);
  BOOST_TEST(type_of(r) == "BadRequestException");
  BOOST_TEST(message_of(r) == "SubscriptionDefinitionVersionArn: Subscriptions[0].Source: thing 'switch' is not a device of the group (its device definition version)");
  gv = group_version(arns);
  gv.erase("FunctionDefinitionVersionArn");
  r = call("POST", "/greengrass/groups/" + id + "/versions", gv);
  BOOST_TEST(message_of(r) == "SubscriptionDefinitionVersionArn: Subscriptions[0].Target: function 'brain' is not in the group's function definition version");
  gv = group_version(arns);
  gv.erase("ResourceDefinitionVersionArn");
  r = call("POST", "/greengrass/groups/" + id + "/versions", gv);
  BOOST_TEST(message_of(r).find("ResourceAccessPolicies[0].ResourceId: resource 'data' is not in the group's resources") != std::string::npos, message_of(r));
  // The core's thing listed as a device too.
  auto devs = ok("POST", "/greengrass/definition/devices", {{"InitialVersion", {{"Devices", json::array({device("c", "core-1")})}}}});
  gv = {{"CoreDefinitionVersionArn", arns["cores"]}, {"DeviceDefinitionVersionArn", devs["LatestVersionArn"]}};
  r = call("POST", "/greengrass/groups/" + id + "/versions", gv);
  BOOST_TEST(message_of(r).find("thing 'core-1' is the group's core, not a device") != std::string::npos, message_of(r));
  BOOST_TEST(!ok("GET", "/greengrass/groups/" + id).contains("LatestVersion"));
}

BOOST_FIXTURE_TEST_CASE(the_group_document_is_one_the_kernel_loads, fixture) {
  auto arns = definitions(*this);
  std::map<std::string, json> defs;
  for (const auto& k : all_kinds)
    defs[k] = good(k);
  auto g = v1->to_grove_group("home", defs);
  BOOST_REQUIRE(std::holds_alternative<json>(g));
  auto doc = std::get<json>(g);
  BOOST_TEST(doc["devices"] == json::parse(R"([{"thing":"lamp","sync_shadow":false},{"thing":"switch","sync_shadow":false}])"));
  BOOST_TEST(doc["subscriptions"][0] == json::parse(R"({"id":"s1","source":"device:switch","subject":"home/switch/+","target":"function:brain"})"));
  BOOST_TEST(doc["subscriptions"][2]["target"] == "cloud");
  BOOST_TEST(doc["subscriptions"][3]["target"] == "shadow");
  auto fn = doc["functions"][0];
  BOOST_TEST(fn["name"] == "brain");
  // The package gives the runtime and the code; Executable names the handler.
  BOOST_TEST(fn["config"]["codeUri"] == (dir / "lambdas/brain/1/code").string());
  fn["config"].erase("codeUri");
  BOOST_TEST(fn["config"] == json::parse(R"({"runtime":"executable","handler":"brain",
    "pinned":true,"timeoutInSeconds":3,
    "inputPayloadEncodingType":"json","execArgs":["-v","--x"],"environmentVariables":{"A":"1"},
    "linuxProcessParams":{"isolationMode":"NoContainer","containerParams":{"memorySizeInKB":16384,"mountROSysfs":false}},
    "runAs":{"uid":1000,"gid":1000},"resourceAccessPolicies":[{"resourceId":"data","permission":"rw"}]})"));
  BOOST_TEST(doc["resources"][0] == json::parse(R"({"id":"data","config":{"localVolumeResourceData":
    {"sourcePath":"/srv/data","destinationPath":"/data","groupOwnerSetting":{"autoAddGroupOwner":true}}}})"));
  // The kernel's own reader takes it.
  auto file = dir / "group.json";
  std::ofstream{file} << doc.dump(2);
  auto loaded = grove::load_group(file);
  if (!loaded)
    BOOST_FAIL(grove::describe(loaded.error()));
  BOOST_TEST(loaded->subscriptions_size() == 4);
  BOOST_TEST(loaded->functions_size() == 1);
  BOOST_TEST(loaded->devices_size() == 2);
  // The logger becomes the group's loggers section (issue 16: applied live).
  BOOST_TEST(doc["loggers"] == json::parse(R"([{"id":"l1","component":"GreengrassSystem",
    "level":"INFO","type":"FileSystem","space_kb":1024}])"));
  BOOST_REQUIRE_EQUAL(loaded->loggers_size(), 1);
  BOOST_TEST(loaded->loggers(0).space_kb() == 1024u);
}

BOOST_FIXTURE_TEST_CASE(tags_on_groups_and_definitions, fixture) {
  auto d = ok("POST", "/greengrass/definition/cores", {{"Name", "c"}, {"tags", {{"a", "1"}}}});
  auto g = ok("POST", "/greengrass/groups", {{"Name", "g"}});
  for (std::string arn : {d["Arn"].get<std::string>(), g["Arn"].get<std::string>()}) {
    auto path = "/tags/" + uri_encode(arn, false);
    auto r = call("POST", path, {{"tags", {{"b", "2"}, {"c", "3"}}}});
    BOOST_TEST(r.status == 204);
    r = call("DELETE", path + "?tagKeys=c");
    BOOST_TEST(r.status == 204);
    auto tags = ok("GET", path)["tags"];
    BOOST_TEST(tags["b"] == "2");
    BOOST_TEST(!tags.contains("c"));
    json many = json::object();
    for (int i = 0; i < 50; ++i)
      many["k" + std::to_string(i)] = "v";
    r = call("POST", path, {{"tags", many}});
    BOOST_TEST(type_of(r) == "BadRequestException");
    BOOST_TEST(message_of(r) == "tags: a resource has at most 50 tags");
  }
  BOOST_TEST(ok("GET", "/greengrass/definition/cores/" + d["Id"].get<std::string>())["tags"] == json({{"a", "1"}, {"b", "2"}}));
  auto r = call("GET", "/tags/" + uri_encode("arn:aws:greengrass:us-east-1:123456789012:/greengrass/groups/nope", false));
  BOOST_TEST(type_of(r) == "IdNotFoundException");
  // Another region's ARN is not this core's.
  r = call("GET", "/tags/" + uri_encode("arn:aws:greengrass:eu-west-1:123456789012:/greengrass/groups/" + g["Id"].get<std::string>(), false));
  BOOST_TEST(type_of(r) == "IdNotFoundException");
}

BOOST_FIXTURE_TEST_CASE(client_tokens_repeat_the_first_answer, fixture) {
  auto a = call("POST", "/greengrass/definition/cores", {{"Name", "c"}}, "token-1");
  auto b = call("POST", "/greengrass/definition/cores", {{"Name", "c"}}, "token-1");
  BOOST_TEST(a.status == 200);
  BOOST_TEST(a.body == b.body);
  BOOST_TEST(ok("GET", "/greengrass/definition/cores")["Definitions"].size() == 1u);
  auto c = call("POST", "/greengrass/definition/cores", {{"Name", "other"}}, "token-1");
  BOOST_TEST(c.status == 400);
  BOOST_TEST(type_of(c) == "BadRequestException");
  BOOST_TEST(json::parse(c.body)["ErrorDetails"][0]["DetailedErrorCode"] == "IdempotentParameterMismatch");
  // Past the token's lifetime it is a new request.
  now += std::chrono::hours{9};
  auto d = call("POST", "/greengrass/definition/cores", {{"Name", "c"}}, "token-1");
  BOOST_TEST(d.status == 200);
  BOOST_TEST(d.body != a.body);
}

BOOST_FIXTURE_TEST_CASE(allow_list_and_signature_come_first, fixture) {
  auto r = call("POST", "/greengrass/groups", {{"Name", "g"}}, "", "AKIAGROVEREADONLY1");
  BOOST_TEST(r.status == 403);
  BOOST_TEST(type_of(r) == "AccessDeniedException");
  BOOST_TEST(json::parse(r.body)["message"].get<std::string>().find("greengrass:CreateGroup") != std::string::npos);
  http_request unsigned_req{"GET", "/greengrass/groups", {{"host", "localhost"}}, ""};
  BOOST_TEST(service->handle(unsigned_req, now).status == 403);
  // A route v1 does not have.
  r = call("PATCH", "/greengrass/groups");
  BOOST_TEST(type_of(r) == "UnknownOperationException");
}

BOOST_FIXTURE_TEST_CASE(deployments_report_the_kernels_verdict, fixture) {
  auto arns = definitions(*this);
  auto g = ok("POST", "/greengrass/groups", {{"Name", "home"}, {"InitialVersion", group_version(arns)}});
  std::string id = g["Id"];
  auto base = "/greengrass/groups/" + id + "/deployments";
  // Not yet deployed: a plain reset is refused, and so is deleting nothing... (allowed).
  auto r = call("POST", base + "/%24reset", json::object());
  BOOST_TEST(type_of(r) == "BadRequestException");
  BOOST_TEST(message_of(r).find("has not been deployed") != std::string::npos);
  // NewDeployment needs a version that exists.
  r = call("POST", base, {{"DeploymentType", "NewDeployment"}});
  BOOST_TEST(message_of(r).rfind("GroupVersionId:", 0) == 0);
  r = call("POST", base, {{"DeploymentType", "NewDeployment"}, {"GroupVersionId", "nope"}});
  BOOST_TEST(type_of(r) == "VersionNotFoundException");
  r = call("POST", base, {{"DeploymentType", "Sideways"}});
  BOOST_TEST(message_of(r).rfind("DeploymentType: must be one of", 0) == 0);
  // A deployment: Building until the applier reports, then Success.
  auto d = ok("POST", base, {{"DeploymentType", "NewDeployment"}, {"GroupVersionId", g["LatestVersion"]}});
  std::string did = d["DeploymentId"];
  BOOST_TEST(d["DeploymentArn"] == g["Arn"].get<std::string>() + "/deployments/" + did);
  BOOST_REQUIRE_EQUAL(jobs.size(), 1u);
  BOOST_TEST(jobs[0].group_id == id);
  BOOST_TEST(jobs[0].deployment_id == did);
  auto doc = json::parse(jobs[0].group);
  BOOST_TEST(doc["name"] == "home");
  BOOST_TEST(doc["subscriptions"].size() == 4u);
  BOOST_TEST(ok("GET", base + "/" + did + "/status")["DeploymentStatus"] == "Building");
  v1->in_progress(id, did, 1);
  BOOST_TEST(ok("GET", base + "/" + did + "/status")["DeploymentStatus"] == "InProgress");
  v1->applied(id, did, "", 2);
  auto st = ok("GET", base + "/" + did + "/status");
  BOOST_TEST(st["DeploymentStatus"] == "Success");
  BOOST_TEST(st["DeploymentType"] == "NewDeployment");
  BOOST_TEST(!st.contains("ErrorMessage"));
  // A deployed group cannot be deleted.
  r = call("DELETE", "/greengrass/groups/" + id);
  BOOST_TEST(type_of(r) == "BadRequestException");
  BOOST_TEST(message_of(r).find("reset its deployments") != std::string::npos);
  // The kernel refuses the next one: Failure with its reason.
  auto d2 = ok("POST", base, {{"DeploymentType", "Redeployment"}, {"DeploymentId", did}});
  BOOST_REQUIRE_EQUAL(jobs.size(), 2u);
  BOOST_TEST(jobs[1].group == jobs[0].group);
  v1->applied(id, d2["DeploymentId"], "group refused: subscriptions: 10001 subscriptions", 3);
  st = ok("GET", base + "/" + d2["DeploymentId"].get<std::string>() + "/status");
  BOOST_TEST(st["DeploymentStatus"] == "Failure");
  BOOST_TEST(st["ErrorMessage"] == "group refused: subscriptions: 10001 subscriptions");
  BOOST_TEST(st["ErrorDetails"][0]["DetailedErrorMessage"] == st["ErrorMessage"]);
  // A Redeployment of something that is not a deployment of the group.
  r = call("POST", base, {{"DeploymentType", "Redeployment"}, {"DeploymentId", "nope"}});
  BOOST_TEST(message_of(r).rfind("DeploymentId: deployment 'nope'", 0) == 0);
  // Listed newest first, with paging.
  auto all = ok("GET", base)["Deployments"];
  BOOST_REQUIRE_EQUAL(all.size(), 2u);
  BOOST_TEST(all[0]["DeploymentId"] == d2["DeploymentId"]);
  BOOST_TEST(all[1]["DeploymentId"] == did);
  auto p1 = ok("GET", base + "?MaxResults=1");
  BOOST_TEST(p1["Deployments"][0]["DeploymentId"] == d2["DeploymentId"]);
  auto p2 = ok("GET", base + "?MaxResults=1&NextToken=" + uri_encode(p1["NextToken"].get<std::string>(), false));
  BOOST_TEST(p2["Deployments"][0]["DeploymentId"] == did);
  BOOST_TEST(!p2.contains("NextToken"));
  // Reset: the devices stay, functions, subscriptions and resources go.
  auto reset = ok("POST", base + "/%24reset", json::object());
  BOOST_REQUIRE_EQUAL(jobs.size(), 3u);
  doc = json::parse(jobs[2].group);
  BOOST_TEST(doc["devices"].size() == 2u);
  BOOST_TEST(doc["functions"].empty());
  BOOST_TEST(doc["subscriptions"].empty());
  BOOST_TEST(doc["resources"].empty());
  v1->applied(id, reset["DeploymentId"], "", 4);
  BOOST_TEST(ok("GET", base + "/" + reset["DeploymentId"].get<std::string>() + "/status")["DeploymentType"] == "ResetDeployment");
  // Reset, the group can go.
  BOOST_TEST(ok("DELETE", "/greengrass/groups/" + id) == json::object());
  BOOST_TEST(type_of(call("GET", base)) == "IdNotFoundException");
}

BOOST_FIXTURE_TEST_CASE(a_deployment_that_cannot_be_built_fails_at_once, fixture) {
  auto arns = definitions(*this);
  auto g = ok("POST", "/greengrass/groups", {{"Name", "home"}, {"InitialVersion", group_version(arns)}});
  // The function definition goes after the group version was made.
  auto fid = arns["functions"].substr(0, arns["functions"].find("/versions/"));
  fid = fid.substr(fid.rfind('/') + 1);
  ok("DELETE", "/greengrass/definition/functions/" + fid);
  auto base = "/greengrass/groups/" + g["Id"].get<std::string>() + "/deployments";
  auto d = ok("POST", base, {{"DeploymentType", "NewDeployment"}, {"GroupVersionId", g["LatestVersion"]}});
  BOOST_TEST(jobs.empty());
  auto st = ok("GET", base + "/" + d["DeploymentId"].get<std::string>() + "/status");
  BOOST_TEST(st["DeploymentStatus"] == "Failure");
  BOOST_TEST(st["ErrorMessage"].get<std::string>().find("FunctionDefinitionVersionArn: function definition version") == 0, st.dump());
  // ForceResetDeployment through CreateDeployment works on a never-deployed group.
  auto f = ok("POST", base, {{"DeploymentType", "ForceResetDeployment"}});
  BOOST_REQUIRE_EQUAL(jobs.size(), 1u);
  BOOST_TEST(ok("GET", base + "/" + f["DeploymentId"].get<std::string>() + "/status")["DeploymentType"] == "ForceResetDeployment");
}

struct core_fixture : fixture {
  core_fixture() : fixture("core-2") {
  }
};

BOOST_FIXTURE_TEST_CASE(another_cores_group_is_not_deployed_here, core_fixture) {
  auto arns = definitions(*this);
  auto g = ok("POST", "/greengrass/groups", {{"Name", "home"}, {"InitialVersion", group_version(arns)}});
  auto base = "/greengrass/groups/" + g["Id"].get<std::string>() + "/deployments";
  auto d = ok("POST", base, {{"DeploymentType", "NewDeployment"}, {"GroupVersionId", g["LatestVersion"]}});
  BOOST_TEST(jobs.empty());
  auto st = ok("GET", base + "/" + d["DeploymentId"].get<std::string>() + "/status");
  BOOST_TEST(st["ErrorMessage"] == "the group's core is 'core-1'; this core is 'core-2'");
}

BOOST_AUTO_TEST_CASE(a_v1_group_keeps_the_lambda_components_functions) {
  // The group in force, read by the kernel's own reader: the group's function `keep` and
  // the Lambda component `relay` (a v2 deployment's), with routes naming each; the
  // group's volume `vol` and the model component `cnn`'s model resource.
  auto dir = std::filesystem::temp_directory_path()
             / ("grove-v1-keep-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream{dir / "now.yaml"} << R"(name: e2e
devices: [{thing: A}, {thing: B}, {thing: C}]
functions:
  - {name: keep, config: {runtime: executable, handler: keep}}
  - {name: relay, config: {runtime: executable, handler: relay, environmentVariables: {T: x}}}
subscriptions:
  - {id: a-keep, source: "device:A", subject: a/k, target: "function:keep"}
  - {id: a-r, source: "device:A", subject: a/r, target: "function:relay"}
  - {id: r-c, source: "function:relay", subject: r/c, target: "device:C"}
  - {id: r-cloud, source: "function:relay", subject: r/cloud, target: cloud}
resources:
  - {id: vol, config: {localVolumeResourceData: {sourcePath: /srv, destinationPath: /data}}}
  - {id: cnn, config: {localMachineLearningModelResourceData: {path: /m/cnn.onnx, version: 1.0.0}}}
)";
  auto now = grove::load_group(dir / "now.yaml");
  if (!now)
    BOOST_FAIL(grove::describe(now.error()));
  // group_document gives the kernel's reader the same group back.
  {
    YAML::Emitter e;
    e << grove::group_document(*now);
    std::ofstream{dir / "again.yaml"} << e.c_str();
    auto again = grove::load_group(dir / "again.yaml");
    if (!again)
    BOOST_FAIL(grove::describe(again.error()));
    again->set_source_file(now->source_file()); // read from another file
    BOOST_TEST(again->SerializeAsString() == now->SerializeAsString());
  }
  auto v1 = json::parse(R"({"name": "home", "devices": [{"thing": "A"}, {"thing": "B"}],
    "functions": [], "resources": [],
    "subscriptions": [{"id": "v1", "source": "device:A", "subject": "a/b", "target": "device:B"}]})");
  size_t dropped = 9;
  auto out = keep_v2_components(v1.dump(), *now, {"relay", "gone"}, {"cnn", "gone"}, &dropped);
  if (!out)
    BOOST_FAIL(grove::describe(out.error()));
  BOOST_TEST(dropped == 1u); // r-c: the new group has no device C
  std::ofstream{dir / "out.yaml"} << *out;
  auto got = grove::load_group(dir / "out.yaml");
  if (!got)
    BOOST_FAIL(grove::describe(got.error()));
  BOOST_TEST(got->name() == "home");
  BOOST_REQUIRE(got->functions_size() == 1);
  BOOST_TEST(got->functions(0).name() == "relay");
  BOOST_TEST(got->functions(0).config_yaml() == now->functions(1).config_yaml());
  std::vector<std::string> ids;
  for (const auto& s : got->subscriptions())
    ids.push_back(s.id());
  BOOST_TEST(ids == (std::vector<std::string>{"v1", "a-r", "r-cloud"}), boost::test_tools::per_element());
  // The model component's resource kept as it was, the group's volume gone.
  BOOST_REQUIRE(got->resources_size() == 1);
  BOOST_TEST(got->resources(0).id() == "cnn");
  BOOST_TEST(got->resources(0).config_yaml() == now->resources(1).config_yaml());
  // Without Lambda or model components the v1 group is the group as it is.
  out = keep_v2_components(v1.dump(), *now, {}, {});
  BOOST_REQUIRE(out);
  std::ofstream{dir / "plain.yaml"} << *out;
  got = grove::load_group(dir / "plain.yaml");
  BOOST_REQUIRE(got);
  BOOST_TEST(got->functions_size() == 0);
  BOOST_TEST(got->subscriptions_size() == 1);
  BOOST_TEST(got->resources_size() == 0);
  // A v1 function named as a Lambda component, a resource with a model component's id,
  // or a route id a kept route has: refused.
  auto clash = v1;
  clash["functions"].push_back({{"name", "relay"}, {"config", {{"runtime", "executable"}, {"handler", "x"}}}});
  out = keep_v2_components(clash.dump(), *now, {"relay"}, {});
  BOOST_REQUIRE(!out);
  BOOST_TEST(grove::describe(out.error()).find("Functions: function 'relay' has the name of the "
                                               "Greengrass v2 Lambda component relay")
               != std::string::npos, grove::describe(out.error()));
  clash = v1;
  clash["subscriptions"][0]["id"] = "a-r";
  out = keep_v2_components(clash.dump(), *now, {"relay"}, {});
  BOOST_REQUIRE(!out);
  BOOST_TEST(grove::describe(out.error()).find("Subscriptions: id 'a-r'") != std::string::npos,
             grove::describe(out.error()));
  clash = v1;
  clash["resources"].push_back({{"id", "cnn"}, {"config", {{"localVolumeResourceData",
                                {{"sourcePath", "/srv"}, {"destinationPath", "/d"}}}}}});
  out = keep_v2_components(clash.dump(), *now, {}, {"cnn"});
  BOOST_REQUIRE(!out);
  BOOST_TEST(grove::describe(out.error()).find("Resources: resource 'cnn' has the id of the "
                                               "Greengrass v2 model component cnn")
               != std::string::npos, grove::describe(out.error()));
  std::filesystem::remove_all(dir);
}

namespace {

// The PEM's subject and whether it verifies itself with CA:TRUE (openssl's own reader).
std::string openssl_text(const std::filesystem::path& file) {
  auto out = file;
  out += ".txt";
  auto cmd = "openssl x509 -in '" + file.string() + "' -noout -subject -ext basicConstraints "
             "> '" + out.string() + "' 2>&1 && openssl verify -CAfile '" + file.string() + "' '"
             + file.string() + "' >> '" + out.string() + "' 2>&1";
  BOOST_REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in{out};
  return std::string{std::istreambuf_iterator<char>{in}, {}};
}

} // namespace

BOOST_FIXTURE_TEST_CASE(group_cas_are_real_rotate_and_survive_a_reopen, fixture) {
  auto arns = definitions(*this);
  auto g = ok("POST", "/greengrass/groups", {{"Name", "home"}, {"InitialVersion", group_version(arns)}});
  std::string id = g["Id"];
  auto cas = "/greengrass/groups/" + id + "/certificateauthorities";
  // None yet: an empty list, the default expiry and no CA expiry.
  BOOST_TEST(ok("GET", cas)["GroupCertificateAuthorities"].empty());
  auto conf = ok("GET", cas + "/configuration/expiry");
  BOOST_TEST(conf["CertificateExpiryInMilliseconds"] == "604800000");
  BOOST_TEST(conf["GroupId"] == id);
  BOOST_TEST(!conf.contains("CertificateAuthorityExpiryInMilliseconds"));
  // A CA: its ARN, id (SHA-256 of the DER), certificate; the key 0600 on disk only.
  auto c1 = ok("POST", cas);
  std::string arn1 = c1["GroupCertificateAuthorityArn"];
  auto ca1 = arn1.substr(arn1.rfind('/') + 1);
  BOOST_TEST(arn1 == g["Arn"].get<std::string>() + "/certificateauthorities/" + ca1);
  BOOST_TEST(std::regex_match(ca1, std::regex{"[0-9a-f]{64}"}));
  auto got = ok("GET", cas + "/" + ca1);
  BOOST_TEST(got["GroupCertificateAuthorityId"] == ca1);
  BOOST_TEST(got["GroupCertificateAuthorityArn"] == arn1);
  std::string pem = got["PemEncodedCertificate"];
  BOOST_TEST(pem.rfind("-----BEGIN CERTIFICATE-----", 0) == 0);
  BOOST_TEST(pem.find("PRIVATE") == std::string::npos);
  auto key = dir / "group_ca" / id / ca1 / "ca.key";
  struct stat st{};
  BOOST_REQUIRE(::stat(key.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u);
  BOOST_TEST(std::filesystem::file_size(key) > 100u);
  auto text = openssl_text(dir / "group_ca" / id / ca1 / "ca.crt");
  BOOST_TEST_INFO(text);
  BOOST_TEST(text.find("CA:TRUE") != std::string::npos);
  BOOST_TEST(text.find(": OK") != std::string::npos);
  BOOST_TEST(text.find(id) != std::string::npos);
  // The key signs for the certificate: openssl's pkey and x509 give the same public key.
  auto pub = [&](const std::string& cmd) {
    auto out = dir / "pub.txt";
    BOOST_REQUIRE(std::system((cmd + " > '" + out.string() + "' 2>/dev/null").c_str()) == 0);
    std::ifstream in{out};
    return std::string{std::istreambuf_iterator<char>{in}, {}};
  };
  BOOST_TEST(pub("openssl pkey -in '" + key.string() + "' -pubout")
             == pub("openssl x509 -in '" + (dir / "group_ca" / id / ca1 / "ca.crt").string()
                    + "' -noout -pubkey"));
  conf = ok("GET", cas + "/configuration/expiry");
  auto ca_expiry = std::stoll(conf["CertificateAuthorityExpiryInMilliseconds"].get<std::string>());
  BOOST_TEST(ca_expiry > now.time_since_epoch().count() / 1000000); // a moment ahead, in ms
  // The group is not deployed: the trust directory is empty and nothing is active.
  BOOST_TEST(std::filesystem::is_empty(dir / "group_ca" / "trust"));
  BOOST_TEST(std::filesystem::file_size(dir / "group_ca" / "active") == 0u);
  // Deployed: its CA is trusted (a hashed name) and active.
  auto d = ok("POST", "/greengrass/groups/" + id + "/deployments",
              {{"DeploymentType", "NewDeployment"}, {"GroupVersionId", g["LatestVersion"]}});
  v1->applied(id, d["DeploymentId"], "", 2);
  // The certificates (<hash>.N) and the CAs' CRLs (<hash>.rN) of the trust directory.
  auto hashed = [&](const char* pattern) {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir / "group_ca" / "trust"))
      if (std::regex_match(e.path().filename().string(), std::regex{pattern}))
        names.push_back(e.path().filename().string());
    return names;
  };
  auto trusted = [&] { return hashed("[0-9a-f]{8}\\.[0-9]+"); };
  auto crls = [&] { return hashed("[0-9a-f]{8}\\.r[0-9]+"); };
  auto active = [&] {
    std::ifstream in{dir / "group_ca" / "active"};
    std::string line;
    std::getline(in, line);
    return line;
  };
  BOOST_REQUIRE_EQUAL(trusted().size(), 1u);
  BOOST_TEST(std::regex_match(trusted()[0], std::regex{"[0-9a-f]{8}\\.0"}));
  // Its empty CRL beside it (same hash), and kept beside the key.
  BOOST_REQUIRE_EQUAL(crls().size(), 1u);
  BOOST_TEST(crls()[0] == trusted()[0].substr(0, 9) + "r0");
  BOOST_TEST(std::filesystem::file_size(dir / "group_ca" / id / ca1 / "ca.crl") > 0u);
  BOOST_TEST(active() == id + "/" + ca1);
  // Rotation: a second CA is active, both trusted, both listed oldest first.
  auto c2 = ok("POST", cas);
  std::string arn2 = c2["GroupCertificateAuthorityArn"];
  auto ca2 = arn2.substr(arn2.rfind('/') + 1);
  BOOST_TEST(ca2 != ca1);
  auto list = ok("GET", cas)["GroupCertificateAuthorities"];
  BOOST_REQUIRE_EQUAL(list.size(), 2u);
  BOOST_TEST(list[0]["GroupCertificateAuthorityId"] == ca1);
  BOOST_TEST(list[1]["GroupCertificateAuthorityId"] == ca2);
  BOOST_TEST(list[1]["GroupCertificateAuthorityArn"] == arn2);
  BOOST_TEST(trusted().size() == 2u);
  BOOST_TEST(crls().size() == 2u);
  BOOST_TEST(active() == id + "/" + ca2);
  auto pems = v1->trusted_cas();
  BOOST_REQUIRE(pems);
  BOOST_REQUIRE_EQUAL(pems->size(), 2u);
  BOOST_TEST((*pems)[0] == pem);
  // The expiry: 7 to 30 days as a string of milliseconds; each refusal names the field.
  auto expiry = cas + "/configuration/expiry";
  auto upd = ok("PUT", expiry, {{"CertificateExpiryInMilliseconds", "864000000"}});
  BOOST_TEST(upd["CertificateExpiryInMilliseconds"] == "864000000");
  BOOST_TEST(upd["GroupId"] == id);
  BOOST_TEST(upd.contains("CertificateAuthorityExpiryInMilliseconds"));
  for (const json& bad : {json{{"CertificateExpiryInMilliseconds", "604799999"}},
                          json{{"CertificateExpiryInMilliseconds", "2592000001"}},
                          json{{"CertificateExpiryInMilliseconds", "ten days"}},
                          json{{"CertificateExpiryInMilliseconds", ""}},
                          json{{"CertificateExpiryInMilliseconds", -1}},
                          json::object()}) {
    auto r = call("PUT", expiry, bad);
    BOOST_TEST_INFO(bad.dump() << " -> " << r.body);
    BOOST_TEST(r.status == 400);
    BOOST_TEST(type_of(r) == "BadRequestException");
    BOOST_TEST(message_of(r).rfind("CertificateExpiryInMilliseconds", 0) == 0);
  }
  auto r = call("PUT", expiry, {{"CertificateExpiryInMilliseconds", "1"}, {"Other", 1}});
  BOOST_TEST(message_of(r).rfind("Other: unknown field", 0) == 0);
  BOOST_TEST(ok("GET", expiry)["CertificateExpiryInMilliseconds"] == "864000000");
  // A number is taken as the model's string.
  BOOST_TEST(ok("PUT", expiry, {{"CertificateExpiryInMilliseconds", 2592000000}})
               ["CertificateExpiryInMilliseconds"] == "2592000000");
  // Unknown group and CA: 404 naming them.
  for (auto target : {std::string{"/greengrass/groups/nope/certificateauthorities"},
                      "/greengrass/groups/nope/certificateauthorities/" + ca1,
                      std::string{"/greengrass/groups/nope/certificateauthorities/configuration/expiry"}}) {
    r = call("GET", target);
    BOOST_TEST(r.status == 404);
    BOOST_TEST(type_of(r) == "IdNotFoundException");
    BOOST_TEST(message_of(r).find("'nope'") != std::string::npos);
  }
  r = call("POST", "/greengrass/groups/nope/certificateauthorities");
  BOOST_TEST(type_of(r) == "IdNotFoundException");
  r = call("PUT", "/greengrass/groups/nope/certificateauthorities/configuration/expiry",
           {{"CertificateExpiryInMilliseconds", "864000000"}});
  BOOST_TEST(type_of(r) == "IdNotFoundException");
  r = call("GET", cas + "/" + std::string(64, 'a'));
  BOOST_TEST(r.status == 404);
  BOOST_TEST(message_of(r).find("certificate authority does not exist") != std::string::npos);
  // A client token answers the first answer again (no third CA).
  auto t1 = call("POST", cas, nullptr, "tok-1");
  auto t2 = call("POST", cas, nullptr, "tok-1");
  BOOST_TEST(t1.body == t2.body);
  BOOST_TEST(ok("GET", cas)["GroupCertificateAuthorities"].size() == 3u);
  // Everything back after the store is reopened.
  v1.reset();
  service.reset();
  groups.reset();
  auto reopened = v1_store::open(dir / "groups.db");
  BOOST_REQUIRE(reopened);
  groups = std::move(*reopened);
  api_settings settings;
  settings.keys["AKIAGROVETEST00001"] = access_key{"secret-secret-secret", {"*"}};
  service = std::make_unique<api>(settings, *components);
  v1_settings vs;
  vs.group_ca_dir = dir / "group_ca";
  v1 = std::make_unique<v1_api>(settings, vs, *groups);
  service->set_v1(v1.get());
  std::filesystem::remove_all(dir / "group_ca" / "trust");
  // A CA made before CRLs were kept: its CRL is signed again from the key.
  std::filesystem::remove(dir / "group_ca" / id / ca1 / "ca.crl");
  // Key directories without a record (a kill -9 between key and record, a group deleted
  // meanwhile) go at start; the stored CAs' stay.
  std::filesystem::create_directories(dir / "group_ca" / id / "orphan");
  std::filesystem::create_directories(dir / "group_ca" / "gone-group" / "orphan");
  BOOST_REQUIRE(!v1->sweep_ca_dirs());
  BOOST_TEST(!std::filesystem::exists(dir / "group_ca" / id / "orphan"));
  BOOST_TEST(!std::filesystem::exists(dir / "group_ca" / "gone-group"));
  BOOST_TEST(std::filesystem::exists(dir / "group_ca" / id / ca1 / "ca.key"));
  BOOST_REQUIRE(!v1->refresh_trust());
  BOOST_TEST(trusted().size() == 3u);
  BOOST_TEST(crls().size() == 3u);
  BOOST_TEST(std::filesystem::exists(dir / "group_ca" / id / ca1 / "ca.crl"));
  // A CA record for a group that does not exist is refused.
  BOOST_TEST((groups->put_ca({"no-such-group", "x", pem, 1, 2, 0}) == grove::errc::conflict));
  BOOST_TEST(ok("GET", cas)["GroupCertificateAuthorities"].size() == 3u);
  BOOST_TEST(ok("GET", cas + "/" + ca1)["PemEncodedCertificate"] == pem);
  BOOST_TEST(ok("GET", expiry)["CertificateExpiryInMilliseconds"] == "2592000000");
  // The allow-list names the new operations.
  BOOST_TEST(is_v1_operation("CreateGroupCertificateAuthority"));
  BOOST_TEST(is_v1_operation("UpdateGroupCertificateConfiguration"));
  // A deleted group takes its CAs' keys along (reset first: it is deployed).
  auto reset = ok("POST", "/greengrass/groups/" + id + "/deployments/%24reset", json::object());
  v1->applied(id, reset["DeploymentId"], "", 5);
  BOOST_TEST(std::filesystem::exists(dir / "group_ca" / id / ca1 / "ca.key"));
  BOOST_TEST(trusted().size() == 3u); // reset, still the deployed group
  ok("DELETE", "/greengrass/groups/" + id);
  BOOST_TEST(!std::filesystem::exists(dir / "group_ca" / id));
  BOOST_TEST(trusted().empty());
  BOOST_TEST(crls().empty());
  BOOST_TEST(active().empty());
  BOOST_TEST(type_of(call("GET", cas)) == "IdNotFoundException");
}

// ---- role associations ----------------------------------------------------------------

namespace {

std::string role(const std::string& name, const std::string& acct = account) {
  return "arn:aws:iam::" + acct + ":role/" + name;
}

} // namespace

BOOST_FIXTURE_TEST_CASE(roles_are_checked_stored_and_removed, fixture) {
  auto g = ok("POST", "/greengrass/groups", {{"Name", "home"}});
  std::string id = g["Id"];
  auto base = "/greengrass/groups/" + id + "/role";
  // Nothing associated yet.
  BOOST_TEST(type_of(call("GET", base)) == "IdNotFoundException");
  BOOST_TEST(type_of(call("GET", "/greengrass/servicerole")) == "IdNotFoundException");
  // An unknown group is 404 for each of the three.
  for (auto m : {"PUT", "GET", "DELETE"}) {
    auto r = call(m, "/greengrass/groups/nope/role", std::string{m} == "PUT"
                                                       ? json{{"RoleArn", role("r")}}
                                                       : json(nullptr));
    BOOST_TEST_INFO(m);
    BOOST_TEST(r.status == 404);
    BOOST_TEST(type_of(r) == "IdNotFoundException");
  }
  // The ARN checks name RoleArn.
  for (const auto& bad : std::vector<json>{
         json::object(), {{"RoleArn", 5}}, {{"RoleArn", "role/x"}},
         {{"RoleArn", "arn:aws:iam::123456789012:user/x"}},
         {{"RoleArn", "arn:aws:iam:us-east-1:123456789012:role/x"}},
         {{"RoleArn", role("x", "999999999999")}}, {{"RoleArn", role("bad name")}},
         {{"RoleArn", role(std::string(65, 'a'))}}, {{"RoleArn", role("x")}, {"Other", 1}}}) {
    BOOST_TEST_CONTEXT(bad.dump()) {
      auto r = call("PUT", base, bad);
      BOOST_TEST(r.status == 400);
      BOOST_TEST(type_of(r) == "BadRequestException");
      BOOST_TEST((message_of(r).rfind("RoleArn", 0) == 0 || message_of(r).rfind("Other", 0) == 0),
                 message_of(r));
    }
  }
  BOOST_TEST(type_of(call("GET", base)) == "IdNotFoundException"); // nothing stored
  // Associated (a path is allowed), read back, replaced.
  auto a = ok("PUT", base, {{"RoleArn", role("service-role/GreengrassGroupRole")}});
  BOOST_TEST(std::regex_match(a["AssociatedAt"].get<std::string>(), iso_re));
  auto got = ok("GET", base);
  BOOST_TEST(got["RoleArn"] == role("service-role/GreengrassGroupRole"));
  BOOST_TEST(got["AssociatedAt"] == a["AssociatedAt"]);
  ok("PUT", base, {{"RoleArn", role("Other+Role=1,@.")}});
  BOOST_TEST(ok("GET", base)["RoleArn"] == role("Other+Role=1,@."));
  // The account's service role, apart from the group's.
  ok("PUT", "/greengrass/servicerole", {{"RoleArn", role("Greengrass_ServiceRole")}});
  BOOST_TEST(ok("GET", "/greengrass/servicerole")["RoleArn"] == role("Greengrass_ServiceRole"));
  BOOST_TEST(message_of(call("PUT", "/greengrass/servicerole", {{"RoleArn", "x"}})).rfind("RoleArn:", 0)
             == 0);
  // Both survive the store being reopened.
  service.reset();
  v1.reset();
  groups.reset();
  auto reopened = v1_store::open(dir / "groups.db");
  BOOST_REQUIRE(reopened);
  groups = std::move(*reopened);
  api_settings settings;
  settings.keys["AKIAGROVETEST00001"] = access_key{"secret-secret-secret", {"*"}};
  service = std::make_unique<api>(settings, *components);
  v1 = std::make_unique<v1_api>(settings, v1_settings{}, *groups);
  service->set_v1(v1.get());
  BOOST_TEST(ok("GET", base)["RoleArn"] == role("Other+Role=1,@."));
  BOOST_TEST(ok("GET", "/greengrass/servicerole")["RoleArn"] == role("Greengrass_ServiceRole"));
  // Disassociated: DisassociatedAt, then nothing (and again: the same state, answered).
  BOOST_TEST(std::regex_match(ok("DELETE", base)["DisassociatedAt"].get<std::string>(), iso_re));
  BOOST_TEST(type_of(call("GET", base)) == "IdNotFoundException");
  BOOST_TEST(ok("DELETE", base).contains("DisassociatedAt"));
  ok("DELETE", "/greengrass/servicerole");
  BOOST_TEST(type_of(call("GET", "/greengrass/servicerole")) == "IdNotFoundException");
  // A deleted group's role goes with it.
  ok("PUT", base, {{"RoleArn", role("r")}});
  ok("DELETE", "/greengrass/groups/" + id);
  BOOST_TEST(!*groups->role("group:" + id));
}

// ---- bulk deployments -----------------------------------------------------------------

BOOST_AUTO_TEST_CASE(bulk_input_lines_are_records_or_failed_records) {
  std::string err;
  auto recs = parse_bulk_input(
    "\xEF\xBB\xBF{\"GroupId\":\"g1\", \"GroupVersionId\":\"v1\", \"DeploymentType\":\"NewDeployment\"}\r\n"
    "\n   \n"
    "{\"GroupId\":\"g2\",\"GroupVersionId\":\"v2\"}\n"
    "not json\n"
    "{\"GroupId\":\"g3\"}\n"
    "{\"GroupId\":\"g3\",\"GroupVersionId\":\"v\",\"Extra\":1}\n"
    "{\"GroupId\":\"g3\",\"GroupVersionId\":\"v\",\"DeploymentType\":\"Redeployment\"}\n"
    "[1,2]\n"
    "{\"GroupId\":\"\xff\",\"GroupVersionId\":\"v\"}\n"
    "{\"GroupId\":\"a b\",\"GroupVersionId\":\"v\"}",
    err);
  BOOST_TEST(err.empty());
  BOOST_REQUIRE_EQUAL(recs.size(), 9u);
  BOOST_TEST(recs[0].line == 1u);
  BOOST_TEST(recs[0].group_id == "g1");
  BOOST_TEST(recs[0].error.empty());
  BOOST_TEST(recs[1].line == 4u); // blank lines skipped, still counted
  BOOST_TEST(recs[1].deployment_type == "NewDeployment");
  BOOST_TEST(recs[1].error.empty());
  BOOST_TEST(recs[2].error == "line 5: not JSON (or not UTF-8)");
  BOOST_TEST(recs[3].error == "line 6: GroupVersionId is required");
  BOOST_TEST(recs[4].error.find("unknown key 'Extra'") != std::string::npos);
  BOOST_TEST(recs[5].error.find("takes only NewDeployment") != std::string::npos);
  BOOST_TEST(recs[6].error.find("not a JSON object") != std::string::npos);
  BOOST_TEST(recs[7].error == "line 10: not JSON (or not UTF-8)");
  BOOST_TEST(recs[8].error.find("GroupId must be 1 to 128 printable") != std::string::npos);
  // The file as a whole: empty, blank, too many records.
  parse_bulk_input("", err);
  BOOST_TEST(err.find("no records") != std::string::npos);
  parse_bulk_input("\n \n", err);
  BOOST_TEST(err.find("no records") != std::string::npos);
  std::string many;
  for (size_t i = 0; i <= max_bulk_records; ++i)
    many += "{\"GroupId\":\"g\",\"GroupVersionId\":\"v\"}\n";
  BOOST_TEST(parse_bulk_input(many, err).empty());
  BOOST_TEST(err.find("more than 10000 records") != std::string::npos);
  BOOST_TEST(parse_bulk_input(std::string(max_bulk_line_bytes + 1, ' ') + "{}", err)[0].error.find(
               "longer than")
             != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(a_bulk_deployment_deploys_each_record_in_order, fixture) {
  // Deployments settle at once (the kernel's verdict: a group named `refused` is refused).
  v1->set_applier([this](v1_apply_job job) {
    jobs.push_back(job);
    auto doc = json::parse(job.group);
    v1->applied(job.group_id, job.deployment_id,
                doc["name"] == "refused" ? "the kernel refused it" : "", 1);
  });
  std::vector<std::pair<std::string, std::string>> started;
  v1->set_bulk_starter([&](std::string id, std::string uri) { started.emplace_back(id, uri); });
  auto arns = definitions(*this);
  auto g1 = ok("POST", "/greengrass/groups", {{"Name", "one"}, {"InitialVersion", group_version(arns)}});
  auto g2 = ok("POST", "/greengrass/groups", {{"Name", "two"}, {"InitialVersion", group_version(arns)}});
  auto g3 = ok("POST", "/greengrass/groups", {{"Name", "refused"}, {"InitialVersion", group_version(arns)}});
  auto line = [](const json& g, const std::string& v) {
    return json{{"GroupId", g["Id"]}, {"GroupVersionId", v}, {"DeploymentType", "NewDeployment"}}.dump()
           + "\n";
  };
  std::string input = line(g1, g1["LatestVersion"]) + "{oops\n"
                      + line(json{{"Id", "no-such-group"}}, "v") + line(g1, "no-such-version")
                      + line(g3, g3["LatestVersion"]) + line(g2, g2["LatestVersion"]);
  // The request's checks name their field; nothing is stored then.
  auto base = std::string{"/greengrass/bulk/deployments"};
  auto good_role = role("bulk");
  for (const auto& [bad, field] : std::vector<std::pair<json, std::string>>{
         {{{"ExecutionRoleArn", good_role}}, "InputFileUri"},
         {{{"InputFileUri", "s3://b/k"}}, "ExecutionRoleArn"},
         {{{"InputFileUri", "ftp://b/k"}, {"ExecutionRoleArn", good_role}}, "InputFileUri"},
         {{{"InputFileUri", "s3://b/k"}, {"ExecutionRoleArn", "arn:aws:iam::1:role/x"}},
          "ExecutionRoleArn"},
         {{{"InputFileUri", "s3://b/k"}, {"ExecutionRoleArn", good_role}, {"x", 1}}, "x"}}) {
    auto r = call("POST", base, bad);
    BOOST_TEST_INFO(bad.dump());
    BOOST_TEST(type_of(r) == "BadRequestException");
    BOOST_TEST(message_of(r).rfind(field, 0) == 0, message_of(r));
  }
  BOOST_TEST(ok("GET", base)["BulkDeployments"].empty());
  // Started: Initializing, the starter asked to fetch the URI.
  auto b = ok("POST", base,
              {{"InputFileUri", "s3://bucket/input.jsonl"}, {"ExecutionRoleArn", good_role},
               {"tags", {{"team", "ops"}}}});
  std::string id = b["BulkDeploymentId"];
  BOOST_TEST(std::regex_match(id, uuid_re));
  BOOST_TEST(b["BulkDeploymentArn"]
             == std::string{"arn:aws:greengrass:"} + region + ":" + account
                  + ":/greengrass/bulk/deployments/" + id);
  BOOST_REQUIRE_EQUAL(started.size(), 1u);
  BOOST_TEST(started[0].first == id);
  BOOST_TEST(started[0].second == "s3://bucket/input.jsonl");
  auto st = ok("GET", base + "/" + id + "/status");
  BOOST_TEST(st["BulkDeploymentStatus"] == "Initializing");
  BOOST_TEST(st["tags"]["team"] == "ops");
  // One at a time.
  auto again = call("POST", base, {{"InputFileUri", "s3://b/k"}, {"ExecutionRoleArn", good_role}});
  BOOST_TEST(type_of(again) == "BadRequestException");
  BOOST_TEST(message_of(again).find(id + " has not ended") != std::string::npos);
  // Run: each record a deployment through CreateDeployment, in order.
  v1->run_bulk(id, input, std::chrono::seconds{10});
  st = ok("GET", base + "/" + id + "/status");
  BOOST_TEST(st["BulkDeploymentStatus"] == "Completed");
  BOOST_TEST(st["BulkDeploymentMetrics"]["RecordsProcessed"] == 6);
  BOOST_TEST(st["BulkDeploymentMetrics"]["InvalidInputRecords"] == 3);
  BOOST_TEST(!st.contains("ErrorMessage"));
  BOOST_REQUIRE_EQUAL(jobs.size(), 3u);
  BOOST_TEST(jobs.back().group_id == g2["Id"]); // the last successful record's group
  auto reports = ok("GET", base + "/" + id + "/detailed-reports")["Deployments"];
  BOOST_REQUIRE_EQUAL(reports.size(), 6u);
  BOOST_TEST(reports[0]["DeploymentStatus"] == "Success");
  BOOST_TEST(reports[0]["DeploymentType"] == "NewDeployment");
  BOOST_TEST(reports[0]["GroupArn"]
             == g1["Arn"].get<std::string>() + "/versions/" + g1["LatestVersion"].get<std::string>());
  BOOST_TEST(reports[0]["DeploymentArn"]
             == g1["Arn"].get<std::string>() + "/deployments/"
                  + reports[0]["DeploymentId"].get<std::string>());
  BOOST_TEST(ok("GET", "/greengrass/groups/" + g1["Id"].get<std::string>() + "/deployments/"
                         + reports[0]["DeploymentId"].get<std::string>() + "/status")["DeploymentStatus"]
             == "Success");
  BOOST_TEST(reports[1]["DeploymentStatus"] == "Failure");
  BOOST_TEST(reports[1]["ErrorMessage"] == "line 2: not JSON (or not UTF-8)");
  BOOST_TEST(!reports[1].contains("DeploymentId"));
  BOOST_TEST(reports[2]["ErrorDetails"][0]["DetailedErrorCode"] == "IdNotFoundException");
  BOOST_TEST(reports[2]["ErrorMessage"].get<std::string>().find("no-such-group") != std::string::npos);
  BOOST_TEST(reports[3]["ErrorDetails"][0]["DetailedErrorCode"] == "VersionNotFoundException");
  BOOST_TEST(reports[4]["DeploymentStatus"] == "Failure"); // made, then refused by the kernel
  BOOST_TEST(reports[4]["ErrorMessage"] == "the kernel refused it");
  BOOST_TEST(reports[4].contains("DeploymentId"));
  BOOST_TEST(reports[5]["DeploymentStatus"] == "Success");
  // Pages of 4 then 2.
  auto p1 = ok("GET", base + "/" + id + "/detailed-reports?MaxResults=4");
  BOOST_TEST(p1["Deployments"].size() == 4u);
  auto p2 = ok("GET", base + "/" + id + "/detailed-reports?MaxResults=4&NextToken="
                        + uri_encode(p1["NextToken"].get<std::string>(), false));
  BOOST_TEST(p2["Deployments"].size() == 2u);
  BOOST_TEST(!p2.contains("NextToken"));
  // A Completed one cannot be stopped.
  auto r = call("PUT", base + "/" + id + "/%24stop");
  BOOST_TEST(type_of(r) == "BadRequestException");
  BOOST_TEST(message_of(r).find("is Completed") != std::string::npos);
  // Another, stopped before it runs: Stopping, then Stopped without a record.
  auto b2 = ok("POST", base, {{"InputFileUri", "file:///in.jsonl"}, {"ExecutionRoleArn", good_role}});
  std::string id2 = b2["BulkDeploymentId"];
  BOOST_TEST(ok("PUT", base + "/" + id2 + "/%24stop") == json::object());
  BOOST_TEST(ok("GET", base + "/" + id2 + "/status")["BulkDeploymentStatus"] == "Stopping");
  v1->run_bulk(id2, input, std::chrono::seconds{10});
  st = ok("GET", base + "/" + id2 + "/status");
  BOOST_TEST(st["BulkDeploymentStatus"] == "Stopped");
  BOOST_TEST(st["BulkDeploymentMetrics"]["RecordsProcessed"] == 0);
  BOOST_TEST(jobs.size() == 3u);
  // One whose file cannot be read or holds nothing: Failed with the reason.
  auto b3 = ok("POST", base, {{"InputFileUri", "s3://b/missing"}, {"ExecutionRoleArn", good_role}});
  v1->run_bulk(b3["BulkDeploymentId"],
               caf::expected<std::string>{grove::make_error(grove::errc::system_error, "HTTP 404")});
  st = ok("GET", base + "/" + b3["BulkDeploymentId"].get<std::string>() + "/status");
  BOOST_TEST(st["BulkDeploymentStatus"] == "Failed");
  BOOST_TEST(st["ErrorMessage"].get<std::string>().find("HTTP 404") != std::string::npos);
  BOOST_TEST(st["ErrorDetails"][0]["DetailedErrorCode"] == "GG-BULK-INPUT");
  auto b4 = ok("POST", base, {{"InputFileUri", "s3://b/empty"}, {"ExecutionRoleArn", good_role}});
  v1->run_bulk(b4["BulkDeploymentId"], std::string{"\n\n"});
  st = ok("GET", base + "/" + b4["BulkDeploymentId"].get<std::string>() + "/status");
  BOOST_TEST(st["BulkDeploymentStatus"] == "Failed");
  BOOST_TEST(st["ErrorMessage"].get<std::string>().find("no records") != std::string::npos);
  // Listed newest first, paged; an unknown id is 404.
  auto all = ok("GET", base)["BulkDeployments"];
  BOOST_REQUIRE_EQUAL(all.size(), 4u);
  BOOST_TEST(all[0]["BulkDeploymentId"] == b4["BulkDeploymentId"]);
  BOOST_TEST(all[3]["BulkDeploymentId"] == id);
  BOOST_TEST(std::regex_match(all[3]["CreatedAt"].get<std::string>(), iso_re));
  auto l1 = ok("GET", base + "?MaxResults=3");
  auto l2 = ok("GET", base + "?MaxResults=3&NextToken=" + uri_encode(l1["NextToken"].get<std::string>(), false));
  BOOST_TEST(l2["BulkDeployments"].size() == 1u);
  BOOST_TEST(l2["BulkDeployments"][0]["BulkDeploymentId"] == id);
  for (auto path : {"/nope/status", "/nope/detailed-reports"})
    BOOST_TEST(type_of(call("GET", base + path)) == "IdNotFoundException");
  BOOST_TEST(type_of(call("PUT", base + "/nope/%24stop")) == "IdNotFoundException");
  // A client token repeats the first answer.
  auto t1 = call("POST", base, {{"InputFileUri", "s3://b/t"}, {"ExecutionRoleArn", good_role}}, "tok-1");
  auto t2 = call("POST", base, {{"InputFileUri", "s3://b/t"}, {"ExecutionRoleArn", good_role}}, "tok-1");
  BOOST_TEST(t1.status == 200);
  BOOST_TEST(t2.body == t1.body);
  // One left running when the plugin stopped ends at the next start: Failed (interrupted).
  auto n = groups->end_unfinished_bulks("interrupted", 5);
  BOOST_REQUIRE(n);
  BOOST_TEST(*n == 1);
  st = ok("GET", base + "/" + json::parse(t1.body)["BulkDeploymentId"].get<std::string>() + "/status");
  BOOST_TEST(st["BulkDeploymentStatus"] == "Failed");
  BOOST_TEST(st["ErrorMessage"] == "interrupted");
}

BOOST_FIXTURE_TEST_CASE(without_a_starter_a_bulk_deployment_fails_at_once, fixture) {
  auto b = ok("POST", "/greengrass/bulk/deployments",
              {{"InputFileUri", "s3://b/k"}, {"ExecutionRoleArn", role("r")}});
  auto st = ok("GET", "/greengrass/bulk/deployments/" + b["BulkDeploymentId"].get<std::string>()
                        + "/status");
  BOOST_TEST(st["BulkDeploymentStatus"] == "Failed");
  BOOST_TEST(st["ErrorMessage"].get<std::string>().find("no artifact fetcher") != std::string::npos);
}

// ---- the IP detector ------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(the_ip_detector_selects_and_merges_addresses) {
  std::vector<interface_address> all = {
    {"lo", "127.0.0.1", false, true, true},        {"lo", "::1", true, true, true},
    {"eth0", "192.168.1.20", false, false, true},  {"eth0", "fe80::1", true, false, true},
    {"eth0", "2001:db8::20", true, false, true},   {"docker0", "172.17.0.1", false, false, true},
    {"wlan0", "10.0.0.7", false, false, false},    {"eth0", "192.168.1.5", false, false, true},
    {"eth0", "192.168.1.5", false, false, true}};
  ip_detector_options o;
  auto pick = [&](const ip_detector_options& opts) {
    std::vector<std::string> out;
    for (const auto& a : select_addresses(all, opts))
      out.push_back(a.interface + " " + a.address);
    return out;
  };
  // IPv4 of interfaces that are up, not loopback, each once, sorted.
  BOOST_TEST(pick(o) == (std::vector<std::string>{"docker0 172.17.0.1", "eth0 192.168.1.20",
                                                  "eth0 192.168.1.5"}),
             boost::test_tools::per_element());
  o.exclude = {"docker*"};
  o.include_ipv6 = true; // never link-local
  BOOST_TEST(pick(o) == (std::vector<std::string>{"eth0 192.168.1.20", "eth0 192.168.1.5",
                                                  "eth0 2001:db8::20"}),
             boost::test_tools::per_element());
  o.include_loopback = true;
  o.include_ipv6 = false;
  o.interfaces = {"l?"};
  BOOST_TEST(pick(o) == (std::vector<std::string>{"lo 127.0.0.1"}), boost::test_tools::per_element());
  // Merged: the detector's entries first (marked), a manual entry kept after them, the old
  // detected entries replaced.
  json stored = json::array(
    {{{"Id", "ip-detector:eth0:10.9.9.9"}, {"HostAddress", "10.9.9.9"}, {"PortNumber", 8883},
      {"Metadata", "grove:ip-detector eth0"}},
     {{"Id", "lan"}, {"HostAddress", "core.local"}, {"PortNumber", 8883}, {"Metadata", ""}}});
  auto merged = merge_detected(stored, {{"eth0", "192.168.1.20", false, false, true}}, 1883);
  BOOST_REQUIRE_EQUAL(merged.size(), 2u);
  BOOST_TEST(merged[0]["Id"] == "ip-detector:eth0:192.168.1.20");
  BOOST_TEST(merged[0]["HostAddress"] == "192.168.1.20");
  BOOST_TEST(merged[0]["PortNumber"] == 1883);
  BOOST_TEST(detected_entry(merged[0]));
  BOOST_TEST(merged[1]["Id"] == "lan");
  BOOST_TEST(!detected_entry(merged[1]));
  // The merged list passes UpdateConnectivityInfo's own checks unchanged.
  std::vector<connectivity_problem> problems;
  auto checked = check_connectivity_info(merged, problems);
  BOOST_REQUIRE(checked);
  BOOST_TEST(*checked == merged);
  // Off (nothing detected): only the manual entry stays.
  BOOST_TEST(merge_detected(stored, {}, 8883) == json::array({stored[1]}));
  // This machine's own addresses (getifaddrs) hold its loopback.
  auto mine = interface_addresses();
  BOOST_REQUIRE(mine);
  BOOST_TEST(std::any_of(mine->begin(), mine->end(), [](const interface_address& a) {
    return a.address == "127.0.0.1" && a.loopback;
  }));
}

BOOST_AUTO_TEST_CASE(connectivity_update_writes_only_a_change) {
  auto dir = std::filesystem::temp_directory_path() / ("deployment_v1_conn_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  auto c = component_store::open(dir / "components.db");
  BOOST_REQUIRE(c);
  auto detected = std::vector<interface_address>{{"eth0", "192.168.1.20", false, false, true}};
  auto change = [&](const json& old) { return merge_detected(old, detected, 8883); };
  auto v = (*c)->update_connectivity("core-1", change, 1);
  BOOST_REQUIRE(v);
  BOOST_TEST(v->value() == 1);
  v = (*c)->update_connectivity("core-1", change, 2);
  BOOST_REQUIRE(v);
  BOOST_TEST(!v->has_value()); // the same list: nothing written
  // A manual update (the API's) is kept by the next detection, after the detected entry.
  auto manual = json::array({{{"Id", "lan"}, {"HostAddress", "core.local"}, {"PortNumber", 8883},
                              {"Metadata", ""}}});
  BOOST_TEST(*(*c)->set_connectivity("core-1", manual, 3) == 2);
  detected.push_back({"eth1", "10.0.0.2", false, false, true});
  v = (*c)->update_connectivity("core-1", change, 4);
  BOOST_REQUIRE(v);
  BOOST_TEST(v->value() == 3);
  auto rec = (*c)->connectivity("core-1");
  BOOST_REQUIRE(rec);
  BOOST_REQUIRE_EQUAL((*rec)->info.size(), 3u);
  BOOST_TEST((*rec)->info[0]["HostAddress"] == "192.168.1.20");
  BOOST_TEST((*rec)->info[1]["HostAddress"] == "10.0.0.2");
  BOOST_TEST((*rec)->info[2]["Id"] == "lan");
  c->reset();
  std::filesystem::remove_all(dir);
}
