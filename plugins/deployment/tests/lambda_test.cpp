// CreateComponentVersion's lambdaFunction (src/lambda.cpp) through the API over a real
// store and real package directories: the converted recipe (GetComponent), every
// componentLambdaParameters field read back by function_runtime's own parser
// (grove::fn::parse_function, what runs the function), the defaults, and each refusal
// naming its field.

#define BOOST_TEST_MODULE deployment_lambda
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>

#include "api_fixture.hpp"
#include "function_def.hpp" // plugins/function_runtime/src
#include "recipe.hpp"

using namespace grove::deployment;
using nlohmann::json;

namespace {

void write(const std::filesystem::path& file, const std::string& text) {
  std::filesystem::create_directories(file.parent_path());
  std::ofstream{file, std::ios::binary} << text;
}

struct fixture : test::api_fixture {
  std::filesystem::path packages;
  std::string zip_bytes = std::string{"PK\x03\x04", 4} + "not really a zip, but bytes to digest";

  fixture() : api_fixture("deployment_lambda") {
    packages = dir / "lambda_packages";
    write(packages / "hello/3/configuration.json",
          R"({"FunctionName": "hello", "Runtime": "python3.9", "Handler": "app.handler",
              "Description": "Says hello", "Timeout": 30})");
    write(packages / "hello/3/code.zip", zip_bytes);
    write(packages / "native/12/configuration.json", R"({"Runtime": "provided.al2", "Handler": "bootstrap"})");
    write(packages / "native/12/code/bootstrap", "#!/bin/sh\n");
    write(packages / "java/1/configuration.json", R"({"Runtime": "java11", "Handler": "a.B::handle"})");
    write(packages / "java/1/code.zip", zip_bytes);
    write(packages / "both/1/configuration.json", R"({"Runtime": "python3.8", "Handler": "a.b"})");
    write(packages / "both/1/code.zip", zip_bytes);
    write(packages / "both/1/code/a.py", "");
    write(packages / "broken/1/configuration.json", "{not json");
    auto settings = test::settings_with_key();
    settings.lambda_packages_dir = packages;
    open_api(settings);
  }

  http_response create(json lambda) {
    return call("POST", "/greengrass/v2/createComponentVersion",
                json{{"lambdaFunction", std::move(lambda)}}.dump());
  }

  // GetComponent's recipe (JSON) of name:version.
  json recipe(const std::string& name, const std::string& version) {
    auto r = call("GET", "/greengrass/v2/components/"
                           + uri_encode(service->version_arn(name, version), false)
                           + "?recipeOutputFormat=JSON");
    BOOST_REQUIRE_EQUAL(r.status, 200);
    std::string text;
    BOOST_REQUIRE(base64_decode(json::parse(r.body)["recipe"].get<std::string>(), text));
    return json::parse(text);
  }
};

const std::string hello_arn = "arn:aws:lambda:us-east-1:123456789012:function:hello:3";

std::string type_of(const http_response& r) {
  for (auto& [k, v] : r.headers)
    if (k == "x-amzn-ErrorType")
      return v;
  return "";
}

// The `fields` names of a ValidationException, space-separated.
std::string fields_of(const http_response& r) {
  std::string out;
  for (auto& f : json::parse(r.body).value("fields", json::array()))
    out.append(out.empty() ? "" : " ").append(f["name"].get<std::string>());
  return out;
}

} // namespace

BOOST_FIXTURE_TEST_CASE(every_parameter_reaches_function_runtime_as_it_reads_it, fixture) {
  json params = {
    {"eventSources", json::array({{{"topic", "sensors/temp"}, {"type", "PUB_SUB"}},
                                  {{"topic", "cloud/+/cmd"}, {"type", "IOT_CORE"}}})},
    {"maxQueueSize", 50},
    {"maxInstancesCount", 4},
    {"maxIdleTimeInSeconds", 120},
    {"timeoutInSeconds", 9},
    {"statusTimeoutInSeconds", 30},
    {"pinned", false},
    {"inputPayloadEncodingType", "binary"},
    {"execArgs", json::array({"-X", "dev"})},
    {"environmentVariables", {{"LEVEL", "debug"}, {"EMPTY", ""}}},
    {"linuxProcessParams",
     {{"isolationMode", "NoContainer"},
      {"containerParams",
       {{"memorySizeInKB", 32768},
        {"mountROSysfs", true},
        {"volumes", json::array({{{"sourcePath", "/srv/data"}, {"destinationPath", "/data"},
                                  {"permission", "rw"}, {"addGroupOwner", true}}})},
        {"devices", json::array({{{"path", "/dev/ttyS0"}, {"permission", "rw"},
                                  {"addGroupOwner", true}}})}}}}}};
  auto r = create({{"lambdaArn", hello_arn},
                   {"componentName", "com.example.Hello"},
                   {"componentVersion", "3.1.0"},
                   {"componentPlatforms", json::array({{{"name", "Pi"}, {"attributes", {{"os", "linux"}, {"architecture", "aarch64"}}}}})},
                   {"componentDependencies", {{"com.example.Lib", {{"versionRequirement", "^1.2.0"}, {"dependencyType", "SOFT"}}}}},
                   {"componentLambdaParameters", params}});
  BOOST_REQUIRE_MESSAGE(r.status == 201, r.body);
  BOOST_CHECK_EQUAL(json::parse(r.body)["arn"], service->version_arn("com.example.Hello", "3.1.0"));
  auto doc = recipe("com.example.Hello", "3.1.0");
  BOOST_CHECK_EQUAL(doc["ComponentType"], "aws.greengrass.lambda");
  BOOST_CHECK_EQUAL(doc["ComponentSource"], hello_arn);
  BOOST_CHECK_EQUAL(doc["ComponentDescription"], "Says hello");
  BOOST_CHECK_EQUAL(doc["Manifests"][0]["Platform"]["architecture"], "aarch64");
  BOOST_CHECK_EQUAL(doc["ComponentDependencies"]["com.example.Lib"].dump(),
                    R"({"DependencyType":"SOFT","VersionRequirement":"^1.2.0"})");
  // DescribeComponent keeps the platform's given name.
  auto d = call("GET", "/greengrass/v2/components/"
                         + uri_encode(service->version_arn("com.example.Hello", "3.1.0"), false)
                         + "/metadata");
  BOOST_CHECK_EQUAL(json::parse(d.body)["platforms"][0]["name"], "Pi");
  // The configuration is a function definition function_runtime accepts, field by field.
  const auto& cfg = doc["ComponentConfiguration"]["DefaultConfiguration"];
  auto def = grove::fn::parse_function(cfg.dump(), "recipe", "/");
  BOOST_REQUIRE_MESSAGE(def, (def ? "" : grove::describe(def.error())));
  BOOST_CHECK_EQUAL(def->runtime, "python3");
  BOOST_CHECK_EQUAL(def->handler, "app.handler");
  BOOST_CHECK_EQUAL(def->code_uri, (packages / "hello/3/code.zip").string());
  BOOST_CHECK_EQUAL(def->code_sha256, hex(sha256(zip_bytes)));
  BOOST_CHECK(!def->pinned);
  BOOST_CHECK_EQUAL(def->max_queue_size, 50);
  BOOST_CHECK_EQUAL(def->max_instances_count, 4);
  BOOST_CHECK_EQUAL(def->max_idle_time_s, 120);
  BOOST_CHECK_EQUAL(def->timeout_s, 9);
  BOOST_CHECK_EQUAL(def->status_timeout_s, 30);
  BOOST_CHECK_EQUAL(def->input_encoding, "binary");
  BOOST_CHECK(def->exec_args == (std::vector<std::string>{"-X", "dev"}));
  BOOST_CHECK(def->environment
              == (std::vector<std::pair<std::string, std::string>>{{"EMPTY", ""}, {"LEVEL", "debug"}}));
  BOOST_REQUIRE_EQUAL(def->event_sources.size(), 2u);
  BOOST_CHECK_EQUAL(def->event_sources[1].topic, "cloud/+/cmd");
  BOOST_CHECK_EQUAL(def->event_sources[1].type, "IOT_CORE");
  BOOST_CHECK_EQUAL(def->process.isolation_mode, "NoContainer");
  BOOST_CHECK_EQUAL(def->process.container.memory_size_kb, 32768);
  BOOST_CHECK(def->process.container.mount_ro_sysfs);
  BOOST_REQUIRE_EQUAL(def->process.container.volumes.size(), 1u);
  BOOST_CHECK(def->process.container.volumes[0]
              == (grove::fn::volume{"/srv/data", "/data", "rw", true}));
  BOOST_REQUIRE_EQUAL(def->process.container.devices.size(), 1u);
  BOOST_CHECK(def->process.container.devices[0] == (grove::fn::device{"/dev/ttyS0", "rw", true}));
}

BOOST_FIXTURE_TEST_CASE(defaults_are_greengrass_ones, fixture) {
  // Name from the function, version N.0.0, Linux, pinned, json, a container of 16 MB.
  auto r = create({{"lambdaArn", "arn:aws:lambda:us-east-1:123456789012:function:native:12"}});
  BOOST_REQUIRE_MESSAGE(r.status == 201, r.body);
  auto got = json::parse(r.body);
  BOOST_CHECK_EQUAL(got["componentName"], "native");
  BOOST_CHECK_EQUAL(got["componentVersion"], "12.0.0");
  auto doc = recipe("native", "12.0.0");
  BOOST_CHECK_EQUAL(doc["Manifests"].dump(), R"([{"Platform":{"os":"linux"}}])");
  BOOST_CHECK(!doc.contains("ComponentDependencies"));
  auto def = grove::fn::parse_function(doc["ComponentConfiguration"]["DefaultConfiguration"].dump(),
                                       "recipe", "/");
  BOOST_REQUIRE_MESSAGE(def, (def ? "" : grove::describe(def.error())));
  grove::fn::function_def expected; // function_runtime's own defaults
  expected.runtime = "executable";
  expected.handler = "bootstrap";
  expected.code_uri = (packages / "native/12/code").string();
  expected.input_encoding = "json";
  expected.process.isolation_mode = "GreengrassContainer";
  BOOST_CHECK(*def == expected);
  // The same ARN again: the version exists.
  auto again = create({{"lambdaArn", "arn:aws:lambda:us-east-1:123456789012:function:native:12"}});
  BOOST_CHECK_EQUAL(again.status, 409);
  BOOST_CHECK_EQUAL(type_of(again), "ConflictException");
}

BOOST_FIXTURE_TEST_CASE(arns_and_packages_that_cannot_be_used_are_refused_by_field, fixture) {
  struct refusal {
    std::string arn;
    std::string says;
  };
  for (const auto& [arn, says] : std::vector<refusal>{
         {"arn:aws:lambda:us-east-1:123456789012:function:hello:$LATEST", "$LATEST"},
         {"arn:aws:lambda:us-east-1:123456789012:function:hello:prod", "not a version number"},
         {"arn:aws:lambda:us-east-1:123456789012:function:hello", "must include the function's version"},
         {"arn:aws:lambda:eu-west-1:123456789012:function:hello:3", "region 'eu-west-1'"},
         {"arn:aws:s3:::bucket", "not a Lambda function ARN"},
         {"arn:aws:lambda:us-east-1:123456789012:function:hello:4", "no function package hello version 4"},
         {"arn:aws:lambda:us-east-1:123456789012:function:java:1", "Runtime 'java11'"},
         {"arn:aws:lambda:us-east-1:123456789012:function:both:1", "exactly one of code.zip and code/"},
         {"arn:aws:lambda:us-east-1:123456789012:function:broken:1", "not a JSON object"},
       }) {
    auto r = create({{"lambdaArn", arn}});
    BOOST_CHECK_EQUAL(r.status, 400);
    BOOST_CHECK_EQUAL(type_of(r), "ValidationException");
    BOOST_CHECK_EQUAL(fields_of(r), "lambdaFunction/lambdaArn");
    auto msg = json::parse(r.body)["fields"][0]["message"].get<std::string>();
    BOOST_CHECK_MESSAGE(msg.find(says) != std::string::npos, arn << ": '" << msg << "' lacks '" << says << "'");
  }
  // Nothing was stored.
  BOOST_CHECK_EQUAL(json::parse(call("GET", "/greengrass/v2/components").body)["components"].size(), 0u);
}

BOOST_FIXTURE_TEST_CASE(bad_parameters_are_refused_all_at_once_by_field, fixture) {
  auto r = create({{"lambdaArn", hello_arn},
                   {"componentVersion", "3"},
                   {"componentDependencies", {{"x", {{"versionRequirement", ">=abc"}, {"dependencyType", "WEAK"}}}}},
                   {"componentLambdaParameters",
                    {{"maxQueueSize", -1},
                     {"maxInstancesCount", 0},
                     {"timeoutInSeconds", "3"},
                     {"pinned", "yes"},
                     {"inputPayloadEncodingType", "xml"},
                     {"eventSources", json::array({{{"topic", "a/+"}, {"type", "PUB_SUB"}},
                                                   {{"topic", "a/#/b"}, {"type", "IOT_CORE"}},
                                                   {{"topic", "t"}}})},
                     {"environmentVariables", {{"A=B", "x"}}},
                     {"linuxProcessParams", {{"isolationMode", "Docker"},
                                             {"containerParams", {{"memorySizeInKB", 100},
                                                                  {"volumes", json::array({{{"sourcePath", "/x"}}})},
                                                                  {"devices", json::array({{{"permission", "ro"}}})}}}}},
                     {"surprise", 1}}}});
  BOOST_CHECK_EQUAL(r.status, 400);
  BOOST_CHECK_EQUAL(type_of(r), "ValidationException");
  auto fields = fields_of(r);
  const std::string p = "lambdaFunction/componentLambdaParameters/";
  for (auto f : {std::string{"lambdaFunction/componentVersion"},
                 std::string{"lambdaFunction/componentDependencies/x/versionRequirement"},
                 std::string{"lambdaFunction/componentDependencies/x/dependencyType"},
                 p + "maxQueueSize", p + "maxInstancesCount", p + "timeoutInSeconds", p + "pinned",
                 p + "inputPayloadEncodingType", p + "eventSources/0/topic", p + "eventSources/1/topic",
                 p + "eventSources/2/type", p + "environmentVariables/A=B",
                 p + "linuxProcessParams/isolationMode",
                 p + "linuxProcessParams/containerParams/memorySizeInKB",
                 p + "linuxProcessParams/containerParams/volumes/0/destinationPath",
                 p + "linuxProcessParams/containerParams/devices/0/path", p + "surprise"})
    BOOST_CHECK_MESSAGE((" " + fields + " ").find(" " + f + " ") != std::string::npos,
                        fields << " lacks " << f);
  // inlineRecipe and lambdaFunction together, or neither.
  auto both = call("POST", "/greengrass/v2/createComponentVersion",
                   json{{"lambdaFunction", {{"lambdaArn", hello_arn}}}, {"inlineRecipe", "e30="}}.dump());
  BOOST_CHECK_EQUAL(both.status, 400);
  auto neither = call("POST", "/greengrass/v2/createComponentVersion", "{}");
  BOOST_CHECK_EQUAL(neither.status, 400);
  BOOST_CHECK_EQUAL(json::parse(call("GET", "/greengrass/v2/components").body)["components"].size(), 0u);
}
