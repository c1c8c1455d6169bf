// Image Builder's component routes (plugins/deployment/src/imagebuilder.cpp) through the
// API's router over a real SQLite file, and the component document checks
// (imagebuilder_document.cpp): what is accepted, each refusal naming its field and line,
// build numbers, ARNs, clientTokens, pagination, the signing service and the allow-list,
// and the clientToken helper the three APIs share (client_tokens.hpp).

#define BOOST_TEST_MODULE deployment_imagebuilder
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "api.hpp"
#include "grove/errors.hpp"
#include "client_tokens.hpp"
#include "imagebuilder_document.hpp"
#include "sigv4.hpp"

using namespace grove::deployment;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

const std::string hello_doc = R"(name: HelloImage
description: says hello
schemaVersion: 1.0
phases:
  - name: build
    steps:
      - name: hello
        action: ExecuteBash
        onFailure: Continue
        timeoutSeconds: 60
        maxAttempts: 2
        inputs:
          commands:
            - echo hello
  - name: test
    steps:
      - name: check
        action: ExecuteBash
        inputs:
          commands: ["test -d ."]
)";

std::string type_of(const http_response& r) {
  for (auto& [k, v] : r.headers)
    if (k == "x-amzn-ErrorType")
      return v;
  return "";
}

std::string message_of(const http_response& r) {
  auto j = json::parse(r.body, nullptr, false);
  return j.is_object() && j.contains("message") ? j["message"].get<std::string>() : "";
}

struct fixture {
  std::filesystem::path dir;
  std::unique_ptr<component_store> store;
  std::unique_ptr<api> service;
  std::chrono::system_clock::time_point now = *parse_amz_date("20261202T120000Z");

  fixture() {
    dir = std::filesystem::temp_directory_path()
          / ("deployment_ib_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir / "docs");
    open();
  }

  void open() {
    service.reset();
    store.reset();
    auto s = component_store::open(dir / "components.db");
    BOOST_REQUIRE(s);
    store = std::move(*s);
    api_settings settings;
    settings.keys["AKIAGROVETEST00001"] = access_key{"secret-secret-secret", {"*"}};
    settings.keys["AKIAGROVEIBSLOWKEY"] = access_key{"secret-secret-secret", {"*"}, 1};
    settings.keys["AKIAGROVEIBREADER1"] =
      access_key{"secret-secret-secret", {"imagebuilder:GetComponent", "GetComponent"}};
    // A file:// uri read from dir/docs (the plugin uses the artifact fetcher here).
    auto docs = dir / "docs";
    settings.fetch_document = [docs](const std::string& uri) -> caf::expected<std::string> {
      auto path = std::filesystem::path{uri.substr(7)};
      if (!uri.starts_with("file://") || path.parent_path() != docs)
        return grove::make_error(grove::errc::malformed, "outside the document directory");
      std::ifstream in{path};
      if (!in)
        return grove::make_error(grove::errc::malformed, "no such file");
      return std::string{std::istreambuf_iterator<char>{in}, {}};
    };
    service = std::make_unique<api>(settings, *store);
  }

  ~fixture() {
    service.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }

  http_response call(std::string method, std::string target, std::string body = "",
                     std::string key = "AKIAGROVETEST00001",
                     std::string signing = "imagebuilder") {
    http_request r{std::move(method), std::move(target), {{"host", "localhost"}}, std::move(body)};
    sign_sigv4(r, sigv4_scope{"us-east-1", signing}, key, "secret-secret-secret", now);
    return service->handle(r, now);
  }

  json create_body(const std::string& name, const std::string& version,
                   const std::string& token) {
    return {{"name", name},
            {"semanticVersion", version},
            {"platform", "Linux"},
            {"data", hello_doc},
            {"clientToken", token}};
  }

  http_response create(const json& body) {
    return call("PUT", "/CreateComponent", body.dump());
  }

  http_response get(const std::string& arn) {
    return call("GET", "/GetComponent?componentBuildVersionArn=" + uri_encode(arn, false));
  }
};

} // namespace

BOOST_AUTO_TEST_CASE(documents_that_grove_image_runs_are_accepted) {
  component_document_error err;
  auto doc = parse_component_document(hello_doc, err);
  BOOST_REQUIRE_MESSAGE(doc, err.field + ": " + err.message);
  BOOST_CHECK_EQUAL(doc->name, "HelloImage");
  BOOST_REQUIRE_EQUAL(doc->phases.size(), 2u);
  const auto& s = doc->phases[0].steps.at(0);
  BOOST_CHECK_EQUAL(s.on_failure, "Continue");
  BOOST_CHECK_EQUAL(s.timeout_seconds, 60);
  BOOST_CHECK_EQUAL(s.max_attempts, 2);
  BOOST_CHECK_EQUAL(s.commands.at(0), "echo hello");
  // Image Builder's defaults.
  const auto& t = doc->phases[1].steps.at(0);
  BOOST_CHECK_EQUAL(t.on_failure, "Abort");
  BOOST_CHECK_EQUAL(t.timeout_seconds, 7200);
  BOOST_CHECK_EQUAL(t.max_attempts, 1);
}

BOOST_AUTO_TEST_CASE(bad_documents_name_the_field_and_line) {
  struct row {
    std::string find, replace, field, message_has;
  };
  std::vector<row> rows = {
    {"schemaVersion: 1.0", "schemaVersion: 2.0", "schemaVersion", "line 3: must be 1.0"},
    {"  - name: test\n", "  - name: deploy\n", "phases[1].name", "line 15: must be one of"},
    {"action: ExecuteBash\n        onFailure", "action: S3Download\n        onFailure",
     "build.hello.action", "line 8: unsupported action 'S3Download'"},
    {"onFailure: Continue", "onFailure: Retry", "build.hello.onFailure", "line 9:"},
    {"timeoutSeconds: 60", "timeoutSeconds: soon", "build.hello.timeoutSeconds",
     "line 10: must be an integer 1-86400"},
    {"timeoutSeconds: 60", "timeoutSeconds: 86401", "build.hello.timeoutSeconds", "86401"},
    {"maxAttempts: 2", "maxAttempts: 11", "build.hello.maxAttempts", "line 11:"},
    {"            - echo hello", "            - true", "build.hello.inputs.commands[0]",
     "must be a string"},
    {"      - name: hello", "      - name: hello world", "build.steps[0].name", "line 7:"},
    {"name: HelloImage", "name: x", "name", "line 1:"},
    {"description: says hello", "description: [a]", "description", "must be a string"},
    {"        inputs:\n          commands:\n            - echo hello",
     "        inputs:\n          script: echo hello", "build.hello.inputs", "exactly the key commands"},
    {"description: says hello", "parameters: []", "parameters", "not supported"},
    {"description: says hello", "colour: red", "colour", "unknown key"},
    {"description: says hello", "name: Again", "document", "duplicate key 'name'"},
    {"      - name: check", "      - name: check\n        name: again", "test.steps[0]",
     "duplicate key 'name'"},
    {"phases:", "phases: [", "document", "not YAML: line"},
  };
  for (const auto& r : rows) {
    auto text = hello_doc;
    auto at = text.find(r.find);
    BOOST_REQUIRE_MESSAGE(at != std::string::npos, r.find);
    text.replace(at, r.find.size(), r.replace);
    component_document_error err;
    auto doc = parse_component_document(text, err);
    BOOST_CHECK_MESSAGE(!doc, r.replace + " was accepted");
    BOOST_CHECK_MESSAGE(err.field.starts_with(r.field) && err.message.find(r.message_has) != std::string::npos,
                        r.replace + " -> " + err.field + ": " + err.message);
  }
  component_document_error err;
  BOOST_CHECK(!parse_component_document("", err));
  BOOST_CHECK(!parse_component_document(std::string(70000, '#'), err));
  BOOST_CHECK_EQUAL(err.field, "document");
  BOOST_CHECK(!parse_component_document(std::string(100, '[') + std::string(100, ']'), err));
  BOOST_CHECK(!parse_component_document(std::string("a: \0", 4), err));
}

BOOST_AUTO_TEST_CASE(names_follow_create_components_pattern) {
  for (const std::string& good : std::vector<std::string>{"abc", "Hello Image", "a-b_c", std::string(128, 'x')})
    BOOST_CHECK_MESSAGE(valid_imagebuilder_name(good), good);
  for (const std::string& bad : std::vector<std::string>{"ab", " ab", "ab ", "a/b", "a.b", "", std::string(129, 'x')})
    BOOST_CHECK_MESSAGE(!valid_imagebuilder_name(bad), bad);
  BOOST_CHECK_EQUAL(imagebuilder_arn_name("Hello Image_1"), "hello-image_1");
}

BOOST_FIXTURE_TEST_CASE(create_assigns_builds_and_get_list_delete_read_them, fixture) {
  auto r = create(create_body("Hello Image", "1.0.0", "t1"));
  BOOST_REQUIRE_MESSAGE(r.status == 200, r.body);
  auto a = json::parse(r.body);
  BOOST_CHECK_EQUAL(a["componentBuildVersionArn"],
                    "arn:aws:imagebuilder:us-east-1:123456789012:component/hello-image/1.0.0/1");
  BOOST_CHECK_EQUAL(a["clientToken"], "t1");
  BOOST_CHECK(!a["requestId"].get<std::string>().empty());
  // The same token and request: the first answer again, no new build.
  auto again = create(create_body("Hello Image", "1.0.0", "t1"));
  BOOST_CHECK_EQUAL(again.body, r.body);
  // Another token: build 2.
  auto b = create(create_body("Hello Image", "1.0.0", "t2"));
  BOOST_REQUIRE_EQUAL(b.status, 200);
  auto arn2 = json::parse(b.body)["componentBuildVersionArn"].get<std::string>();
  BOOST_CHECK(arn2.ends_with("/hello-image/1.0.0/2"));
  // The same token with other parameters.
  auto other = create_body("Hello Image", "1.0.1", "t2");
  auto mismatch = create(other);
  BOOST_CHECK_EQUAL(mismatch.status, 400);
  BOOST_CHECK_EQUAL(type_of(mismatch), "IdempotentParameterMismatchException");
  // Get: the document back, with what was stored.
  auto g = get(arn2);
  BOOST_REQUIRE_MESSAGE(g.status == 200, g.body);
  auto c = json::parse(g.body)["component"];
  BOOST_CHECK_EQUAL(c["data"], hello_doc);
  BOOST_CHECK_EQUAL(c["name"], "Hello Image");
  BOOST_CHECK_EQUAL(c["version"], "1.0.0");
  BOOST_CHECK_EQUAL(c["platform"], "Linux");
  BOOST_CHECK_EQUAL(c["type"], "BUILD");
  BOOST_CHECK_EQUAL(c["arn"], arn2);
  // A version ARN without a build: its newest build.
  auto newest = get("arn:aws:imagebuilder:us-east-1:123456789012:component/hello-image/1.0.0");
  BOOST_CHECK_EQUAL(json::parse(newest.body)["component"]["arn"], arn2);
  // More components for the list.
  for (int i = 0; i < 4; ++i) {
    auto body = create_body("other-" + std::to_string(i), "2.0." + std::to_string(i),
                            "o" + std::to_string(i));
    if (i == 3)
      body["platform"] = "Windows";
    BOOST_REQUIRE_EQUAL(create(body).status, 200);
  }
  auto list = [&](json body) {
    auto l = call("POST", "/ListComponents", body.dump());
    BOOST_REQUIRE_MESSAGE(l.status == 200, l.body);
    return json::parse(l.body);
  };
  auto all = list(json::object());
  BOOST_CHECK_EQUAL(all["componentVersionList"].size(), 5u); // one per semantic version
  auto named = list({{"filters", {{{"name", "name"}, {"values", {"Hello Image"}}}}}});
  BOOST_REQUIRE_EQUAL(named["componentVersionList"].size(), 1u);
  BOOST_CHECK_EQUAL(named["componentVersionList"][0]["arn"],
                    "arn:aws:imagebuilder:us-east-1:123456789012:component/hello-image/1.0.0");
  auto windows = list({{"filters", {{{"name", "platform"}, {"values", {"Windows"}}}}}});
  BOOST_REQUIRE_EQUAL(windows["componentVersionList"].size(), 1u);
  BOOST_CHECK_EQUAL(windows["componentVersionList"][0]["name"], "other-3");
  // Pages of two: 2, 2, 1.
  std::vector<std::string> seen;
  json page = list({{"maxResults", 2}});
  for (;;) {
    for (auto& v : page["componentVersionList"])
      seen.push_back(v["arn"]);
    if (!page.contains("nextToken"))
      break;
    page = list({{"maxResults", 2}, {"nextToken", page["nextToken"]}});
  }
  BOOST_CHECK_EQUAL(seen.size(), 5u);
  BOOST_CHECK_EQUAL(list({{"owner", "Amazon"}})["componentVersionList"].size(), 0u);
  auto bad_page = call("POST", "/ListComponents", json{{"nextToken", "!!"}}.dump());
  BOOST_CHECK_EQUAL(type_of(bad_page), "InvalidPaginationTokenException");
  auto bad_filter = call("POST", "/ListComponents",
                         json{{"filters", {{{"name", "colour"}, {"values", {"x"}}}}}}.dump());
  BOOST_CHECK_EQUAL(type_of(bad_filter), "InvalidParameterValueException");
  // Delete build 2; build 1 stays; a new create gets build 3 (numbers are not reused).
  auto d = call("DELETE", "/DeleteComponent?componentBuildVersionArn=" + uri_encode(arn2, false));
  BOOST_REQUIRE_MESSAGE(d.status == 200, d.body);
  BOOST_CHECK_EQUAL(json::parse(d.body)["componentBuildVersionArn"], arn2);
  BOOST_CHECK_EQUAL(type_of(get(arn2)), "ResourceNotFoundException");
  BOOST_CHECK_EQUAL(get(arn2).status, 404);
  auto d2 = call("DELETE", "/DeleteComponent?componentBuildVersionArn=" + uri_encode(arn2, false));
  BOOST_CHECK_EQUAL(type_of(d2), "ResourceNotFoundException");
  auto c3 = create(create_body("Hello Image", "1.0.0", "t3"));
  BOOST_CHECK(json::parse(c3.body)["componentBuildVersionArn"].get<std::string>().ends_with("/3"));
  // Reopened (the file is all there is): the builds are there and the token answers.
  open();
  BOOST_CHECK_EQUAL(get("arn:aws:imagebuilder:us-east-1:123456789012:component/hello-image/1.0.0/1")
                      .status,
                    200);
  BOOST_CHECK_EQUAL(create(create_body("Hello Image", "1.0.0", "t1")).body, r.body);
}

BOOST_FIXTURE_TEST_CASE(every_refusal_has_image_builders_error_name, fixture) {
  struct row {
    std::function<void(json&)> change;
    int status;
    std::string type, message_has;
  };
  std::vector<row> rows = {
    {[](json& b) { b["name"] = "a/b"; }, 400, "InvalidParameterValueException", "name"},
    {[](json& b) { b["name"] = "ab"; }, 400, "InvalidParameterValueException", "name"},
    {[](json& b) { b["semanticVersion"] = "1.0.1073741824"; }, 400,
     "InvalidVersionNumberException", "2^30-1"},
    {[](json& b) { b["semanticVersion"] = "1073741823.0"; }, 400,
     "InvalidVersionNumberException", "major.minor.patch"},
    {[](json& b) { b["semanticVersion"] = "1.0.0/1"; }, 400, "InvalidVersionNumberException", ""},
    {[](json& b) { b["platform"] = "macOS"; }, 400, "InvalidParameterValueException", "platform"},
    {[](json& b) { b["uri"] = "s3://bucket/doc.yaml"; }, 400,
     "InvalidParameterCombinationException", "not both"},
    {[](json& b) { b.erase("data"); }, 400, "InvalidParameterCombinationException", "required"},
    {[](json& b) { b["data"] = std::string(16001, '#'); }, 400, "InvalidParameterValueException",
     "16001 characters, at most 16000"},
    {[](json& b) {
       auto d = b["data"].get<std::string>();
       d.replace(d.find("maxAttempts: 2"), 14, "maxAttempts: 0");
       b["data"] = d;
     },
     400, "InvalidParameterValueException", "build.hello.maxAttempts: line 11:"},
    {[](json& b) { b["data"] = "phases: ["; }, 400, "InvalidParameterValueException",
     "document: not YAML"},
    {[](json& b) { b.erase("clientToken"); }, 400, "InvalidRequestException", "clientToken"},
    {[](json& b) { b["colour"] = "red"; }, 400, "InvalidParameterException", "colour"},
    {[](json& b) { b["tags"] = {{"aws:x", "y"}}; }, 400, "InvalidParameterValueException", "aws:"},
    {[](json& b) { b["description"] = ""; }, 400, "InvalidParameterValueException", "description"},
    {[](json& b) { b["dryRun"] = true; }, 412, "DryRunOperationException", "nothing was stored"},
    {[](json& b) {
       b.erase("data");
       b["uri"] = "https://example.com/doc.yaml";
     },
     400, "InvalidParameterValueException", "s3:// or file://"},
    {[](json& b) {
       b.erase("data");
       b["uri"] = "file:///etc/passwd";
     },
     400, "InvalidParameterValueException", "outside"},
  };
  int n = 0;
  for (const auto& r : rows) {
    auto body = create_body("refused", "1.0.0", "r" + std::to_string(n++));
    r.change(body);
    auto got = create(body);
    BOOST_CHECK_EQUAL(got.status, r.status);
    BOOST_CHECK_MESSAGE(type_of(got) == r.type && message_of(got).find(r.message_has) != std::string::npos,
                        body.dump().substr(0, 200) + " -> " + type_of(got) + ": " + message_of(got));
  }
  // Nothing of those was stored.
  auto l = call("POST", "/ListComponents", "{}");
  BOOST_CHECK_EQUAL(json::parse(l.body)["componentVersionList"].size(), 0u);
  // A file:// uri the reader allows.
  std::ofstream{dir / "docs" / "doc.yaml"} << hello_doc;
  auto body = create_body("from-uri", "3.0.0", "u1");
  body.erase("data");
  body["uri"] = "file://" + (dir / "docs" / "doc.yaml").string();
  auto u = create(body);
  BOOST_REQUIRE_MESSAGE(u.status == 200, u.body);
  auto g = get(json::parse(u.body)["componentBuildVersionArn"]);
  BOOST_CHECK_EQUAL(json::parse(g.body)["component"]["data"], hello_doc);
  // ARNs: malformed, another account, unknown, missing.
  BOOST_CHECK_EQUAL(type_of(get("arn:aws:greengrass:us-east-1:123456789012:components:x")),
                    "InvalidParameterValueException");
  BOOST_CHECK_EQUAL(type_of(get("arn:aws:imagebuilder:us-east-1:999999999999:component/from-uri/3.0.0/1")),
                    "ResourceNotFoundException");
  BOOST_CHECK_EQUAL(type_of(get("arn:aws:imagebuilder:us-east-1:123456789012:component/nope/1.0.0/1")),
                    "ResourceNotFoundException");
  BOOST_CHECK_EQUAL(type_of(call("GET", "/GetComponent")), "InvalidRequestException");
  auto del = call("DELETE", "/DeleteComponent?componentBuildVersionArn="
                              + uri_encode("arn:aws:imagebuilder:us-east-1:123456789012:"
                                           "component/from-uri/3.0.0",
                                           false));
  BOOST_CHECK_EQUAL(type_of(del), "InvalidParameterValueException");
  BOOST_CHECK_EQUAL(type_of(call("PUT", "/CreateComponent", "not json")), "InvalidRequestException");
}

BOOST_FIXTURE_TEST_CASE(routes_sign_for_imagebuilder_and_the_allow_list_names_them, fixture) {
  // Signed for greengrass (another service's scope): refused.
  auto wrong = call("PUT", "/CreateComponent", create_body("signed", "1.0.0", "s1").dump(),
                    "AKIAGROVETEST00001", "greengrass");
  BOOST_CHECK_EQUAL(wrong.status, 403);
  BOOST_CHECK_EQUAL(type_of(wrong), "InvalidSignatureException");
  // And a Greengrass route signed for imagebuilder too.
  auto wrong2 = call("GET", "/greengrass/v2/components", "", "AKIAGROVETEST00001", "imagebuilder");
  BOOST_CHECK_EQUAL(type_of(wrong2), "InvalidSignatureException");
  // The reader may get, not create; its v2 GetComponent does not grant Image Builder's.
  auto denied = call("PUT", "/CreateComponent", create_body("signed", "1.0.0", "s2").dump(),
                     "AKIAGROVEIBREADER1");
  BOOST_CHECK_EQUAL(denied.status, 403);
  BOOST_CHECK_EQUAL(type_of(denied), "ForbiddenException");
  BOOST_CHECK(message_of(denied).find("imagebuilder:CreateComponent") != std::string::npos);
  auto made = create(create_body("signed", "1.0.0", "s3"));
  BOOST_REQUIRE_EQUAL(made.status, 200);
  auto g = call("GET",
                "/GetComponent?componentBuildVersionArn="
                  + uri_encode(json::parse(made.body)["componentBuildVersionArn"].get<std::string>(), false),
                "", "AKIAGROVEIBREADER1");
  BOOST_CHECK_EQUAL(g.status, 200);
  BOOST_CHECK_EQUAL(type_of(call("POST", "/ListComponents", "{}", "AKIAGROVEIBREADER1")),
                    "ForbiddenException");
  // A key of 1 request a second, twice in the same instant: Image Builder's 429.
  BOOST_CHECK_EQUAL(call("POST", "/ListComponents", "{}", "AKIAGROVEIBSLOWKEY").status, 200);
  auto slow = call("POST", "/ListComponents", "{}", "AKIAGROVEIBSLOWKEY");
  BOOST_CHECK_EQUAL(slow.status, 429);
  BOOST_CHECK_EQUAL(type_of(slow), "CallRateLimitExceededException");
  // A wrong method on an Image Builder path is no operation (checked as Greengrass').
  BOOST_CHECK_EQUAL(type_of(call("GET", "/CreateComponent", "", "AKIAGROVETEST00001", "greengrass")),
                    "UnknownOperationException");
}

BOOST_AUTO_TEST_CASE(client_tokens_expire_and_judge_retries) {
  auto dir = std::filesystem::temp_directory_path() / ("deployment_tok_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  client_token_table t{"tokens"};
  grove::store_options opts;
  opts.application_id = 0x47544f4b; // "GTOK", this test's
  opts.migrations.push_back({1, t.schema_sql(), {}});
  auto db = grove::store::open(dir / "t.db", std::move(opts));
  BOOST_REQUIRE(db);
  auto& s = **db;
  auto hash = request_hash_of(json{{"a", 1}, {"clientToken", "x"}});
  BOOST_CHECK_EQUAL(hash, request_hash_of(json{{"a", 1}, {"clientToken", "y"}}));
  BOOST_CHECK_NE(hash, request_hash_of(json{{"a", 2}}));
  BOOST_CHECK(!t.put(s, "tok", token_record{hash, 200, "{}"}, 1000));
  auto live = t.lookup(s, "tok", 999);
  BOOST_REQUIRE(live && *live);
  BOOST_CHECK(judge_token(*live, hash) == token_verdict::retry);
  BOOST_CHECK(judge_token(*live, request_hash_of(json{{"a", 2}})) == token_verdict::mismatch);
  // At its expiry it is gone (and deleted).
  auto expired = t.lookup(s, "tok", 1000);
  BOOST_REQUIRE(expired);
  BOOST_CHECK(!*expired);
  BOOST_CHECK(judge_token(*expired, hash) == token_verdict::fresh);
  BOOST_CHECK(!*t.live(s, "tok", 0));
  db->reset();
  std::filesystem::remove_all(dir);
}
