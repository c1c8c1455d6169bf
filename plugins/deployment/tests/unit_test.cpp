// The deployment plugin's pure parts (plugins/deployment/src): SigV4 against the AWS
// test suite's get-vanilla vector and its own signer, npm-style semver ranges, recipe
// checks, and the API's routes over a real SQLite store without a server.

#define BOOST_TEST_MODULE deployment_unit
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <unistd.h>

#include "api.hpp"
#include "api_fixture.hpp"
#include "lifecycle.hpp"
#include "platform.hpp"
#include "public_components.hpp"
#include "recipe.hpp"
#include "semver.hpp"
#include "sigv4.hpp"

using namespace grove::deployment;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::chrono::system_clock::time_point at(const char* amz) {
  return *parse_amz_date(amz);
}

std::string verdict(const std::variant<std::string, auth_error>& v) {
  if (auto* e = std::get_if<auth_error>(&v))
    return e->type;
  return "ok:" + std::get<std::string>(v);
}

} // namespace

// ---- SigV4 -----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(sigv4_aws_test_suite_get_vanilla) {
  // aws-sig-v4-test-suite/get-vanilla: the canonical request and signature AWS publishes.
  http_request req{"GET", "/", {{"host", "example.amazonaws.com"}, {"x-amz-date", "20150830T123600Z"}}, ""};
  auto canonical = canonical_request(req, "host;x-amz-date", hex(sha256("")));
  BOOST_CHECK_EQUAL(canonical, "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
                               "host;x-amz-date\n"
                               "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  req.headers.emplace_back(
    "authorization",
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
    "SignedHeaders=host;x-amz-date, "
    "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  sigv4_scope scope{"us-east-1", "service"};
  auto secret = [](std::string_view id) -> std::optional<std::string> {
    if (id == "AKIDEXAMPLE")
      return std::string{"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"};
    return std::nullopt;
  };
  BOOST_CHECK_EQUAL(verdict(verify_sigv4(req, scope, secret, at("20150830T123900Z"))),
                    "ok:AKIDEXAMPLE");
  // Six minutes later the same request is expired; six minutes early it is not yet current.
  BOOST_CHECK_EQUAL(verdict(verify_sigv4(req, scope, secret, at("20150830T124200Z"))),
                    "InvalidSignatureException");
  BOOST_CHECK_EQUAL(verdict(verify_sigv4(req, scope, secret, at("20150830T123000Z"))),
                    "InvalidSignatureException");
  // Another region in the scope.
  BOOST_CHECK_EQUAL(verdict(verify_sigv4(req, sigv4_scope{"eu-west-1", "service"}, secret,
                                         at("20150830T123600Z"))),
                    "InvalidSignatureException");
}

BOOST_AUTO_TEST_CASE(amz_dates_outside_the_clocks_range_are_refused) {
  // Found by fuzz_deployment_request: year 1020 overflowed the nanosecond clock.
  BOOST_TEST(!parse_amz_date("10200803T120000Z"));
  BOOST_TEST(!parse_amz_date("99991231T235959Z"));
  BOOST_TEST(!parse_amz_date("19691231T235959Z"));
  BOOST_TEST(parse_amz_date("19700101T000000Z").has_value());
  BOOST_TEST(parse_amz_date("22001231T235959Z").has_value());
}

BOOST_AUTO_TEST_CASE(sigv4_round_trip_and_every_refusal) {
  sigv4_scope scope{"us-east-1", "greengrass"};
  auto secret = [](std::string_view id) -> std::optional<std::string> {
    if (id == "AKIAGROVETEST00001")
      return std::string{"secret-secret-secret"};
    return std::nullopt;
  };
  auto now = at("20261202T120000Z");
  auto make = [&] {
    http_request r{"GET",
                   "/greengrass/v2/components/arn%3Aaws%3Agreengrass%3Aus-east-1%3A123456789012"
                   "%3Acomponents%3Aa.b/versions?maxResults=2&nextToken=MS4wLjA%3D",
                   {{"host", "127.0.0.1:8443"}, {"user-agent", "test  with   spaces "}},
                   ""};
    return r;
  };
  auto good = make();
  sign_sigv4(good, scope, "AKIAGROVETEST00001", "secret-secret-secret", now);
  BOOST_CHECK_EQUAL(verdict(verify_sigv4(good, scope, secret, now + 4min)), "ok:AKIAGROVETEST00001");
  auto wrong_secret = make();
  sign_sigv4(wrong_secret, scope, "AKIAGROVETEST00001", "another-secret-here", now);
  BOOST_CHECK_EQUAL(verdict(verify_sigv4(wrong_secret, scope, secret, now)), "InvalidSignatureException");
  auto unknown = make();
  sign_sigv4(unknown, scope, "AKIAUNKNOWNKEY0001", "secret-secret-secret", now);
  BOOST_CHECK_EQUAL(verdict(verify_sigv4(unknown, scope, secret, now)), "UnrecognizedClientException");
  auto tampered = good;
  tampered.target += "0";
  BOOST_CHECK_EQUAL(verdict(verify_sigv4(tampered, scope, secret, now)), "InvalidSignatureException");
  auto body = good;
  body.body = "x";
  BOOST_CHECK_EQUAL(verdict(verify_sigv4(body, scope, secret, now)), "InvalidSignatureException");
  BOOST_CHECK_EQUAL(verdict(verify_sigv4(make(), scope, secret, now)),
                    "MissingAuthenticationTokenException");
  auto garbled = make();
  garbled.headers.emplace_back("authorization", "AWS4-HMAC-SHA256 Credential=x");
  BOOST_CHECK_EQUAL(verdict(verify_sigv4(garbled, scope, secret, now)), "IncompleteSignatureException");
  BOOST_CHECK_EQUAL(verdict(verify_sigv4(good, scope, secret, now + 6min)), "InvalidSignatureException");
}

// ---- semver ----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(semver_versions_are_strict_and_ordered) {
  for (auto bad : {"1.2", "01.2.3", "1.2.3-", "1.2.3-01", "v1.2.3", "1.2.3.4", "", "1..3",
                   "1.2.3-a..b", "99999999999999999.0.0"})
    BOOST_CHECK_MESSAGE(!parse_semver(bad), bad);
  std::vector<const char*> order = {"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta",
                                    "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
                                    "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0", "2.0.0"};
  for (size_t i = 0; i + 1 < order.size(); ++i)
    BOOST_CHECK_MESSAGE(compare(*parse_semver(order[i]), *parse_semver(order[i + 1])) < 0,
                        order[i] << " < " << order[i + 1]);
  BOOST_CHECK_EQUAL(compare(*parse_semver("1.0.0+a"), *parse_semver("1.0.0+b")), 0);
}

// grove.<plugin>'s version check: the plugin's own version against the component's.
BOOST_AUTO_TEST_CASE(semver_same_version_ignores_build_and_missing_parts) {
  for (auto [a, b] : {std::pair{"1.0", "1.0.0"}, {"1.0.0+b1", "1.0.0"}, {"1", "1.0.0+x"},
                      {"2.1.0-rc.1+b", "2.1.0-rc.1"}, {"odd", "odd"}})
    BOOST_CHECK_MESSAGE(same_version(a, b) && same_version(b, a), a << " vs " << b);
  for (auto [a, b] : {std::pair{"1.0.0", "2.1.0"}, {"1.0.0-rc.1", "1.0.0"}, {"1.0.1", "1.0"},
                      {"odd", "1.0.0"}, {"1.0.0-a", "1.0.0-b"}, {"", "1.0.0"}})
    BOOST_CHECK_MESSAGE(!same_version(a, b) && !same_version(b, a), a << " vs " << b);
}

BOOST_AUTO_TEST_CASE(semver_ranges_as_npm_decides) {
  // (range, version, npm's semver.satisfies) from npm semver's range tests.
  struct row {
    const char* range;
    const char* version;
    bool expected;
  };
  row rows[] = {
    {">=1.0.0 <2.0.0", "1.5.0", true},  {">=1.0.0 <2.0.0", "2.0.0", false},
    {"^1.2", "1.9.9", true},            {"^1.2", "2.0.0", false},
    {"^1.2.3", "1.2.2", false},         {"^0.2.3", "0.2.9", true},
    {"^0.2.3", "0.3.0", false},         {"^0.0.3", "0.0.4", false},
    {"^0.0.3", "0.0.3", true},          {"~1.2.3", "1.2.9", true},
    {"~1.2.3", "1.3.0", false},         {"~1", "1.9.0", true},
    {"1.x", "1.0.0", true},             {"1.x", "2.0.0", false},
    {"1.2.x", "1.2.7", true},           {"*", "3.4.5", true},
    {"", "0.0.1", true},                {"1.2 - 2.3", "2.3.9", true},
    {"1.2 - 2.3", "2.4.0", false},      {"1.2.3 - 2.3.4", "2.3.4", true},
    {"1.2.3 - 2.3.4", "2.3.5", false},  {"<1.0.0 || >=3", "3.1.0", true},
    {"<1.0.0 || >=3", "2.0.0", false},  {">1.2", "1.2.9", false},
    {">1.2", "1.3.0", true},            {"<=1.2", "1.2.9", true},
    {"<=1.2", "1.3.0", false},          {"<1.2", "1.1.9", true},
    {"= 1.2.3", "1.2.3", true},         {">= 1.2.3", "1.2.4", true},
    {"^1.2.3", "1.2.4-beta", false},    {">=1.2.4-alpha", "1.2.4-beta", true},
    {">=1.2.4-alpha", "1.2.5-beta", false}, {"1.2.3", "1.2.3", true},
    {"1.2.3", "1.2.4", false},          {"~1.2.3-beta.2", "1.2.3-beta.4", true},
  };
  for (const auto& r : rows) {
    std::string why;
    auto range = parse_range(r.range, &why);
    BOOST_REQUIRE_MESSAGE(range, r.range << ": " << why);
    BOOST_CHECK_MESSAGE(range->satisfies(*parse_semver(r.version)) == r.expected,
                        "'" << r.range << "' on " << r.version << " should be " << r.expected);
  }
  for (auto bad : {">=abc", "^", "1.2.3 -", "1.x.3", "<>1.0.0", "01.2", "1.2.3.4"}) {
    std::string why;
    BOOST_CHECK_MESSAGE(!parse_range(bad, &why), bad);
    BOOST_CHECK(!why.empty());
  }
}

// ---- recipes ---------------------------------------------------------------------------

namespace {

const char* hello_yaml = R"(---
RecipeFormatVersion: '2020-01-25'
ComponentName: com.example.HelloWorld
ComponentVersion: '1.0.0'
ComponentDescription: My first component
ComponentPublisher: Amazon
ComponentConfiguration:
  DefaultConfiguration:
    Message: world
ComponentDependencies:
  aws.greengrass.Nucleus: {VersionRequirement: '>=2.0.0 <3.0.0', DependencyType: SOFT}
Manifests:
  - Platform:
      os: linux
    Lifecycle:
      run: python3 -u {artifacts:path}/hello_world.py "{configuration:/Message}"
    Artifacts:
      - Uri: s3://bucket/hello_world.py
        Digest: abc=
        Algorithm: SHA-256
)";

std::string errors_text(const std::vector<recipe_error>& es) {
  std::string s;
  for (auto& e : es)
    s += e.field + ": " + e.message + "\n";
  return s;
}

} // namespace

BOOST_AUTO_TEST_CASE(recipe_yaml_and_json_parse_and_round_trip) {
  std::vector<recipe_error> errors;
  auto r = parse_recipe(hello_yaml, errors);
  BOOST_REQUIRE_MESSAGE(r, errors_text(errors));
  BOOST_CHECK_EQUAL(r->name, "com.example.HelloWorld");
  BOOST_CHECK_EQUAL(r->version.str(), "1.0.0");
  BOOST_CHECK_EQUAL(r->publisher, "Amazon");
  BOOST_CHECK_EQUAL(r->platforms.dump(), R"([{"attributes":{"os":"linux"},"name":"linux"}])");
  // JSON out, JSON in: the same document; YAML out, YAML in: the same document.
  auto again = parse_recipe(recipe_json(r->doc), errors);
  BOOST_REQUIRE_MESSAGE(again, errors_text(errors));
  BOOST_CHECK(again->doc == r->doc);
  auto yaml = recipe_yaml(r->doc);
  auto back = parse_recipe(yaml, errors);
  BOOST_REQUIRE_MESSAGE(back, errors_text(errors) << yaml);
  BOOST_CHECK(back->doc == r->doc);
  BOOST_CHECK(back->doc["ComponentVersion"].is_string()); // quoted, not a float
}

// A string with a control character (a trailing CR read back as a line break) is written
// quoted: YAML out, YAML in, the same string (found by fuzz_deployment_recipe).
BOOST_AUTO_TEST_CASE(recipe_yaml_quotes_control_characters) {
  std::vector<recipe_error> errors;
  auto r = parse_recipe("{\"RecipeFormatVersion\": \"2020-01-25\", \"ComponentName\": \"a\", "
                        "\"ComponentVersion\": \"1.0.0\", \"ComponentDescription\": \"a\\r\", "
                        "\"Manifests\": [{\"Platform\": {\"os\": \"x\\u0001\\t\"}}]}",
                        errors);
  BOOST_REQUIRE_MESSAGE(r, errors_text(errors));
  auto yaml = recipe_yaml(r->doc);
  auto back = parse_recipe(yaml, errors);
  BOOST_REQUIRE_MESSAGE(back, errors_text(errors) << yaml);
  BOOST_CHECK_EQUAL(back->doc["ComponentDescription"], "a\r");
  BOOST_CHECK(back->doc == r->doc);
}

BOOST_AUTO_TEST_CASE(recipe_errors_name_the_field_and_line) {
  struct row {
    std::string text;
    std::string field;
    std::string says;
  };
  std::string base = "RecipeFormatVersion: '2020-01-25'\nComponentName: a.b\n";
  row rows[] = {
    {"RecipeFormatVersion: '2020-01-25'\nComponentVersion: 1.0.0\n", "/ComponentName", "required"},
    {base + "ComponentVersion: 1.0\n", "/ComponentVersion", "line 3"},
    {base + "ComponentVersion: 1.0.0\nColor: red\n", "/Color", "unknown field"},
    {base + "ComponentVersion: 1.0.0\nComponentDependencies: {x: {DependencyType: MEDIUM}}\n",
     "/ComponentDependencies/x/DependencyType", "HARD or SOFT"},
    {base + "ComponentVersion: 1.0.0\nComponentDependencies: {x: {VersionRequirement: '>=abc'}}\n",
     "/ComponentDependencies/x/VersionRequirement", "not a version range"},
    {base + "ComponentVersion: 1.0.0\nManifests:\n  - Artifacts:\n      - Uri: s3://b/..\n",
     "/Manifests/0/Artifacts/0/Uri", "file name"},
    {base + "ComponentVersion: 1.0.0\nManifests:\n  - Artifacts:\n      - Uri: ftp://x/y\n",
     "/Manifests/0/Artifacts/0/Uri", "line 6"},
    {"{\"RecipeFormatVersion\": \"2020-01-25\", \"ComponentName\": \"a:b\", "
     "\"ComponentVersion\": \"1.0.0\"}",
     "/ComponentName", "A-Za-z0-9"},
    {"{\"RecipeFormatVersion\": ", "/", "not valid JSON"},
    {"a: [b\n", "/", "not valid YAML"},
    {"just text", "/", "a map"},
    {std::string(100, '[') + std::string(100, ']'), "/", "deeper"},
    {base + "ComponentVersion: 1.0.0\nComponentName: c\n", "/ComponentName", "duplicate"},
  };
  for (const auto& r : rows) {
    std::vector<recipe_error> errors;
    BOOST_CHECK_MESSAGE(!parse_recipe(r.text, errors), r.text);
    auto text = errors_text(errors);
    BOOST_CHECK_MESSAGE(text.find(r.field + ": ") != std::string::npos
                          && text.find(r.says) != std::string::npos,
                        "for\n" << r.text << "\nexpected " << r.field << " / " << r.says
                                << ", got\n" << text);
  }
}

// Every life cycle step's keys and values, checked when the recipe is created (issue 15's
// audit: bad values were taken as 0, false, "never skip" or an empty script).
BOOST_AUTO_TEST_CASE(recipe_lifecycle_steps_refuse_bad_values_by_name) {
  struct row {
    std::string lifecycle; // YAML under a manifest's Lifecycle, 6 spaces in
    std::string field;     // under /Manifests/0/Lifecycle
    std::string says;
  };
  row rows[] = {
    {"install: {Script: x, Timeout: abc}", "/install/Timeout", "whole number of seconds"},
    {"install: {Script: x, Timeout: -1}", "/install/Timeout", "whole number of seconds"},
    {"install: {Script: x, Timeout: 1.5}", "/install/Timeout", "whole number of seconds"},
    {"install: {Script: x, Timeout: 2147483648}", "/install/Timeout", "0 to 2147483647"},
    {"install: {Script: x, Timeout: [1]}", "/install/Timeout", "whole number of seconds"},
    {"run: {Script: x, Skipif: sometimes /x}", "/run/Skipif", "'onpath <program>' or 'exists"},
    {"run: {Script: x, Skipif: onpath}", "/run/Skipif", "not 'onpath'"},
    {"run: {Script: x, Skipif: 3}", "/run/Skipif", "onpath"},
    {"startup: {Script: x, RequiresPrivilege: 'yes'}", "/startup/RequiresPrivilege",
     "true or false"},
    {"startup: {Script: x, RequiresPrivilege: 1}", "/startup/RequiresPrivilege", "true or false"},
    {"install: {Scirpt: echo hi}", "/install/Scirpt", "unknown field 'Scirpt' of install"},
    {"install: {Scirpt: echo hi}", "/install/Script", "install has no Script"},
    {"install: {Script: 5}", "/install/Script", "Script must be a string"},
    {"install: {Script: a, script: b}", "/install/script", "repeats Script"},
    {"instal: echo hi", "/instal", "unknown lifecycle step 'instal'"},
    {"run: 5", "/run", "a script (string) or a map"},
    {"bootstrap: {Script: x, Skipif: exists /}", "/bootstrap/Skipif", "unknown field 'Skipif'"},
    {"install: {Script: x, BootstrapOnRollback: true}", "/install/BootstrapOnRollback",
     "unknown field"},
    {"bootstrap: {Script: x, BootstrapOnRollback: maybe}", "/bootstrap/BootstrapOnRollback",
     "true or false"},
    {"run: {Script: x, Setenv: [A]}", "/run/Setenv", "a map of variable names"},
    {"run: {Script: x, Setenv: {A: {b: 1}}}", "/run/Setenv/A", "string, number or boolean"},
    {"run: {Script: x, Setenv: {A: null}}", "/run/Setenv/A", "string, number or boolean"},
    {"run: {Script: x, Setenv: {'A=B': c}}", "/run/Setenv/A=B", "no environment variable"},
    {"setenv: 5", "/setenv", "a map of variable names"},
    {"setenv: {X: [1]}", "/setenv/X", "string, number or boolean"},
    {"Run: x\n      run: y", "/run", "repeats run"},
  };
  std::string head = "RecipeFormatVersion: '2020-01-25'\nComponentName: a.b\n"
                     "ComponentVersion: 1.0.0\nManifests:\n  - Platform: {os: linux}\n"
                     "    Lifecycle:\n      ";
  for (const auto& r : rows) {
    std::vector<recipe_error> errors;
    auto text = head + r.lifecycle + "\n";
    BOOST_CHECK_MESSAGE(!parse_recipe(text, errors), text);
    auto got = errors_text(errors);
    auto field = "/Manifests/0/Lifecycle" + r.field + ": line ";
    BOOST_CHECK_MESSAGE(got.find(field) != std::string::npos
                          && got.find(r.says) != std::string::npos,
                        "for\n" << text << "expected " << field << " / " << r.says << ", got\n"
                                << got);
  }
  // The recipe's own Lifecycle, in JSON: the same checks, the field under /Lifecycle.
  std::vector<recipe_error> errors;
  BOOST_CHECK(!parse_recipe(R"({"RecipeFormatVersion": "2020-01-25", "ComponentName": "a.b",
    "ComponentVersion": "1.0.0", "Lifecycle": {"run": {"Script": "x", "Timeout": "abc"}}})",
                            errors));
  BOOST_CHECK_EQUAL(errors_text(errors),
                    "/Lifecycle/run/Timeout: Timeout must be a whole number of seconds (0 to "
                    "2147483647)\n");
}

BOOST_AUTO_TEST_CASE(recipe_lifecycle_steps_accept_what_greengrass_reads) {
  // Any case for keys; numbers and booleans as strings; recipe variables where the
  // runner renders before it reads; every step's own keys.
  std::string text = R"(RecipeFormatVersion: '2020-01-25'
ComponentName: a.b
ComponentVersion: 1.0.0
ComponentConfiguration: {DefaultConfiguration: {t: 7}}
Manifests:
  - Platform: {os: linux}
    Lifecycle:
      setenv: {A: 1, B: 'x', C: true}
      bootstrap: {Script: b, BootstrapOnRollback: 'true', Timeout: 5, RequiresPrivilege: false}
      install: {script: i, timeout: '30', skipif: 'onpath  sh ', requiresprivilege: 'True'}
      startup: {Script: s, Timeout: '{configuration:/t}', RequiresPrivilege: '{configuration:/p}'}
      shutdown: {Script: d, Timeout: 0, Setenv: {X: '{work:path}'}, Skipif: 'exists /x'}
      recover: {Script: r, skipif: 'onpath sh'}
  - Lifecycle:
      run: {Script: x, Skipif: 'exists {artifacts:path}/done'}
      install: {Script: y, Skipif: '{configuration:/skip}'}
      Shutdown:
)";
  std::vector<recipe_error> errors;
  BOOST_CHECK_MESSAGE(parse_recipe(text, errors), errors_text(errors));
}

// The older format: manifests with Selections and a recipe-level Lifecycle keyed by
// selection names. Never read while every manifest has its own, so not refused then; read
// (and refused) when a manifest has none.
BOOST_AUTO_TEST_CASE(recipe_selection_lifecycle_checked_only_when_used) {
  std::string text = R"(RecipeFormatVersion: '2020-01-25'
ComponentName: a.b
ComponentVersion: 1.0.0
Manifests:
  - Platform: {os: linux}
    Selections: [linux]
    Lifecycle: {run: x}
  - Platform: {os: darwin}
    Selections: [all]
    Lifecycle: {run: y}
Lifecycle:
  all: {run: z}
)";
  std::vector<recipe_error> errors;
  BOOST_CHECK_MESSAGE(parse_recipe(text, errors), errors_text(errors));
  errors.clear();
  auto without = text;
  without.replace(without.find("    Lifecycle: {run: y}\n"), 24, "");
  BOOST_CHECK(!parse_recipe(without, errors));
  auto got = errors_text(errors);
  BOOST_CHECK_MESSAGE(got.find("/Lifecycle/all: ") != std::string::npos
                        && got.find("unknown lifecycle step 'all'") != std::string::npos,
                      got);
}

BOOST_AUTO_TEST_CASE(runner_steps_are_read_strictly_and_rendered) {
  auto lc = json::parse(R"({
    "install": {"Script": "i", "Timeout": "abc"},
    "run": {"Script": "r", "Timeout": "{configuration:/t}", "Skipif": "exists {work:path}/x",
            "RequiresPrivilege": "{configuration:/p}", "Setenv": {"A": "1"}},
    "startup": {"Script": "s", "Skipif": "sometimes"},
    "shutdown": {"Scirpt": "typo"},
    "bootstrap": {"Script": "b", "BootstrapOnRollback": true, "Timeout": 9}})");
  // A value stored before the checks: an error naming the key, never atoi's 0.
  auto install = step_of(lc, "install");
  BOOST_CHECK(install.present);
  BOOST_CHECK_EQUAL(install.error, "install/Timeout: Timeout must be a whole number of "
                                   "seconds (0 to 2147483647)");
  BOOST_CHECK_NE(step_of(lc, "startup").error.find("startup/Skipif: Skipif must be"),
                 std::string::npos);
  BOOST_CHECK_NE(step_of(lc, "shutdown").error.find("unknown field 'Scirpt'"), std::string::npos);
  // Rendered first: the variables' values are what is typed.
  auto render = [](const std::string& s) {
    if (s == "{configuration:/t}")
      return std::string{"12"};
    if (s == "{configuration:/p}")
      return std::string{"true"};
    return s == "exists {work:path}/x" ? std::string{"exists /w/x"} : s;
  };
  auto run = step_of(lc, "run", render);
  BOOST_CHECK_EQUAL(run.error, "");
  BOOST_CHECK_EQUAL(run.timeout, 12);
  BOOST_CHECK(run.privileged);
  BOOST_CHECK_EQUAL(run.skipif, "exists /w/x");
  BOOST_CHECK_EQUAL(run.setenv.dump(), R"({"A":"1"})");
  auto bad = step_of(lc, "run", [](const std::string& s) {
    return s == "{configuration:/t}"   ? std::string{"soon"}
           : s == "{configuration:/p}" ? std::string{"true"}
                                       : std::string{"exists /w/x"};
  });
  BOOST_CHECK_EQUAL(bad.error, "run/Timeout: Timeout must be a whole number of seconds (0 to "
                               "2147483647)");
  auto boot = step_of(lc, "bootstrap");
  BOOST_CHECK(boot.on_rollback);
  BOOST_CHECK_EQUAL(boot.timeout, 9);
  BOOST_CHECK(!step_of(lc, "recover").present);
  // Skipif on shutdown and recover too (the nucleus checks it on every step it runs).
  auto stops = json::parse(R"({"shutdown": {"Script": "d", "Skipif": "exists /x"},
                               "recover": {"Script": "r", "skipif": "onpath sh"}})");
  auto shutdown = step_of(stops, "shutdown");
  BOOST_CHECK_EQUAL(shutdown.error, "");
  BOOST_CHECK_EQUAL(shutdown.skipif, "exists /x");
  BOOST_CHECK_EQUAL(step_of(stops, "recover").skipif, "onpath sh");
  // Skipif: both verbs, blanks around; anything else refused.
  BOOST_CHECK(parse_skipif(" onpath\tsh ")->arg == "sh");
  BOOST_CHECK(parse_skipif("exists /a b")->arg == "/a b");
  for (const char* bad_rule : {"", "onpath", "exists ", "Onpath sh", "skip x", "onpathsh"})
    BOOST_CHECK_MESSAGE(!parse_skipif(bad_rule), bad_rule);
}

// The manifest is chosen by the whole platform, with the resolver's matcher: os and
// architecture, `*` and `/regex/` values (issue 15's audit: the first `os: linux` one won).
BOOST_AUTO_TEST_CASE(manifest_chosen_by_the_whole_platform) {
  auto recipe = json::parse(R"({"Manifests": [
    {"Platform": {"os": "linux", "architecture": "aarch64"}, "Lifecycle": {"run": "arm"},
     "Artifacts": [{"Uri": "s3://b/arm/tool"}]},
    {"Platform": {"os": "linux", "architecture": "amd64"}, "Lifecycle": {"run": "amd"},
     "Artifacts": [{"Uri": "s3://b/amd/tool"}]},
    {"Platform": {"os": "/lin.*/", "architecture": "/riscv.*/"}},
    {"Platform": {"os": "*"}, "Lifecycle": {"run": "any"}}],
    "Lifecycle": {"run": "global"}})");
  platform_attributes amd{{"os", "linux"}, {"architecture", "amd64"}};
  platform_attributes arm{{"os", "linux"}, {"architecture", "aarch64"}};
  platform_attributes riscv{{"os", "linux"}, {"architecture", "riscv64"}};
  platform_attributes mips{{"os", "linux"}, {"architecture", "mips"}};
  BOOST_CHECK_EQUAL(lifecycle_of(recipe, amd)["run"], "amd");
  BOOST_CHECK_EQUAL(lifecycle_of(recipe, arm)["run"], "arm");
  // The chosen manifest has no Lifecycle: the recipe's own, not the next manifest's.
  BOOST_CHECK_EQUAL(lifecycle_of(recipe, riscv)["run"], "global");
  BOOST_CHECK_EQUAL(lifecycle_of(recipe, mips)["run"], "any");
  // Its artifacts are the ones linked.
  const json* m = manifest_for(recipe, amd);
  BOOST_REQUIRE(m);
  BOOST_CHECK_EQUAL((*m)["Artifacts"][0]["Uri"], "s3://b/amd/tool");
  BOOST_CHECK(manifest_for(json::parse(R"({"Manifests": [{"Platform": {"os": "windows"}}]})"),
                           amd)
              == nullptr);
  // This core: uname's machine as Greengrass names it.
  auto here = core_platform();
  BOOST_CHECK_EQUAL(here["os"], "linux");
  if (here["architecture"] == "amd64")
    BOOST_CHECK_EQUAL(lifecycle_of(recipe, here)["run"], "amd");
}

// ---- the API over a real store -------------------------------------------------------

namespace {

struct fixture : test::api_fixture {
  fixture() : api_fixture("deployment_unit") {
    auto settings = test::settings_with_key();
    settings.keys["AKIAGROVEREADONLY1"] = access_key{"secret-secret-secret", {"GetComponent"}};
    settings.keys["AKIAGROVESLOWKEY01"] = access_key{"secret-secret-secret", {"*"}, 2};
    open_api(settings);
  }

  http_response create(const std::string& recipe, const std::string& token = "") {
    json body = {{"inlineRecipe", base64_encode(recipe)}};
    if (!token.empty())
      body["clientToken"] = token;
    return call("POST", "/greengrass/v2/createComponentVersion", body.dump());
  }
};

std::string recipe_of(const std::string& name, const std::string& version) {
  return "RecipeFormatVersion: '2020-01-25'\nComponentName: " + name
         + "\nComponentVersion: '" + version + "'\n";
}

std::string type_of(const http_response& r) {
  for (auto& [k, v] : r.headers)
    if (k == "x-amzn-ErrorType")
      return v;
  return "";
}

std::string enc(const std::string& arn) {
  return uri_encode(arn, false);
}

} // namespace

BOOST_FIXTURE_TEST_CASE(api_create_describe_get_list_delete, fixture) {
  auto r = create(hello_yaml);
  BOOST_REQUIRE_EQUAL(r.status, 201);
  auto arn = json::parse(r.body)["arn"].get<std::string>();
  BOOST_CHECK_EQUAL(arn, "arn:aws:greengrass:us-east-1:123456789012:components:"
                         "com.example.HelloWorld:versions:1.0.0");
  auto again = create(hello_yaml);
  BOOST_CHECK_EQUAL(again.status, 409);
  BOOST_CHECK_EQUAL(type_of(again), "ConflictException");
  auto d = call("GET", "/greengrass/v2/components/" + enc(arn) + "/metadata");
  BOOST_REQUIRE_EQUAL(d.status, 200);
  BOOST_CHECK_EQUAL(json::parse(d.body)["publisher"], "Amazon");
  auto g = call("GET", "/greengrass/v2/components/" + enc(arn) + "?recipeOutputFormat=JSON");
  BOOST_REQUIRE_EQUAL(g.status, 200);
  std::string recipe;
  BOOST_REQUIRE(base64_decode(json::parse(g.body)["recipe"].get<std::string>(), recipe));
  BOOST_CHECK_EQUAL(json::parse(recipe)["ComponentName"], "com.example.HelloWorld");
  for (auto v : {"1.0.0", "1.10.0", "1.2.0", "2.0.0-rc.1", "0.9.0"})
    BOOST_REQUIRE_EQUAL(create(recipe_of("b.c", v)).status, 201);
  // Versions newest first, two a page.
  std::vector<std::string> seen;
  std::string next;
  auto base = "/greengrass/v2/components/"
              + enc("arn:aws:greengrass:us-east-1:123456789012:components:b.c") + "/versions";
  do {
    auto page = call("GET", base + "?maxResults=2" + (next.empty() ? "" : "&nextToken=" + enc(next)));
    BOOST_REQUIRE_EQUAL(page.status, 200);
    auto j = json::parse(page.body);
    BOOST_CHECK_LE(j["componentVersions"].size(), 2u);
    for (auto& v : j["componentVersions"])
      seen.push_back(v["componentVersion"]);
    next = j.value("nextToken", "");
  } while (!next.empty());
  BOOST_CHECK_EQUAL(seen.size(), 5u);
  if (seen.size() == 5) {
    BOOST_CHECK_EQUAL(seen[0], "2.0.0-rc.1");
    BOOST_CHECK_EQUAL(seen[1], "1.10.0");
    BOOST_CHECK_EQUAL(seen[4], "0.9.0");
  }
  auto list = json::parse(call("GET", "/greengrass/v2/components?maxResults=1").body);
  BOOST_CHECK_EQUAL(list["components"].size(), 1u);
  BOOST_CHECK_EQUAL(list["components"][0]["componentName"], "b.c");
  BOOST_CHECK_EQUAL(list["components"][0]["latestVersion"]["componentVersion"], "2.0.0-rc.1");
  auto list2 = json::parse(
    call("GET", "/greengrass/v2/components?maxResults=1&nextToken="
                  + enc(list["nextToken"].get<std::string>())).body);
  BOOST_CHECK_EQUAL(list2["components"][0]["componentName"], "com.example.HelloWorld");
  BOOST_CHECK(!list2.contains("nextToken"));
  BOOST_CHECK_EQUAL(call("DELETE", "/greengrass/v2/components/" + enc(arn)).status, 204);
  auto gone = call("DELETE", "/greengrass/v2/components/" + enc(arn));
  BOOST_CHECK_EQUAL(gone.status, 404);
  BOOST_CHECK_EQUAL(type_of(gone), "ResourceNotFoundException");
  BOOST_CHECK_EQUAL(call("GET", "/greengrass/v2/components/" + enc(arn) + "/metadata").status, 404);
}

BOOST_FIXTURE_TEST_CASE(api_client_token_idempotency_and_refusals, fixture) {
  auto first = create(recipe_of("t.x", "1.0.0"), "token-1");
  BOOST_REQUIRE_EQUAL(first.status, 201);
  auto retry = create(recipe_of("t.x", "1.0.0"), "token-1");
  BOOST_CHECK_EQUAL(retry.status, 201);
  BOOST_CHECK_EQUAL(retry.body, first.body);
  auto reuse = create(recipe_of("t.x", "1.0.1"), "token-1");
  BOOST_CHECK_EQUAL(reuse.status, 409);
  BOOST_CHECK_EQUAL(type_of(reuse), "ConflictException");
  // Eight hours on, the token is free again (and the version exists: a conflict).
  now += std::chrono::hours{8} + 1s;
  BOOST_CHECK_EQUAL(create(recipe_of("t.x", "1.0.1"), "token-1").status, 201);
  auto bad = create("RecipeFormatVersion: '2020-01-25'\nComponentName: x\nComponentVersion: 1\n");
  BOOST_CHECK_EQUAL(bad.status, 400);
  BOOST_CHECK_EQUAL(type_of(bad), "ValidationException");
  BOOST_CHECK_EQUAL(json::parse(bad.body)["fields"][0]["name"], "inlineRecipe/ComponentVersion");
  auto denied = call("POST", "/greengrass/v2/createComponentVersion", "{}", "AKIAGROVEREADONLY1");
  BOOST_CHECK_EQUAL(denied.status, 403);
  BOOST_CHECK_EQUAL(type_of(denied), "AccessDeniedException");
  auto unknown = call("GET", "/greengrass/v2/nothing");
  BOOST_CHECK_EQUAL(unknown.status, 404);
  auto badarn = call("GET", "/greengrass/v2/components/not-an-arn/metadata");
  BOOST_CHECK_EQUAL(badarn.status, 400);
  auto junk = call("POST", "/greengrass/v2/createComponentVersion", "{nope");
  BOOST_CHECK_EQUAL(junk.status, 400);
}

BOOST_FIXTURE_TEST_CASE(api_tags_of_a_component_version, fixture) {
  BOOST_REQUIRE_EQUAL(create(recipe_of("tag.me", "1.0.0")).status, 201);
  auto path = "/tags/" + enc("arn:aws:greengrass:us-east-1:123456789012:components:tag.me:versions:1.0.0");
  BOOST_CHECK_EQUAL(call("POST", path, R"({"tags": {"a": "1", "b": "2"}})").status, 200);
  BOOST_CHECK_EQUAL(call("POST", path, R"({"tags": {"b": "3"}})").status, 200);
  auto list = call("GET", path);
  BOOST_REQUIRE_EQUAL(list.status, 200);
  BOOST_CHECK_EQUAL(json::parse(list.body)["tags"].dump(), R"({"a":"1","b":"3"})");
  BOOST_CHECK_EQUAL(call("DELETE", path + "?tagKeys=a&tagKeys=zz").status, 200);
  BOOST_CHECK_EQUAL(json::parse(call("GET", path).body)["tags"].dump(), R"({"b":"3"})");
  // 51 tags in all is one too many: refused, nothing written.
  json many = json::object();
  for (int i = 0; i < 50; ++i)
    many[std::string{"k"}.append(std::to_string(i))] = "v"; // (g++ 12 -Wrestrict misfires on "k" + s)
  auto over = call("POST", path, json{{"tags", many}}.dump());
  BOOST_CHECK_EQUAL(over.status, 400);
  BOOST_CHECK_EQUAL(type_of(over), "ValidationException");
  BOOST_CHECK_EQUAL(json::parse(call("GET", path).body)["tags"].size(), 1u);
  BOOST_CHECK_EQUAL(call("DELETE", path).status, 400); // no tagKeys
  auto missing = call("GET", "/tags/" + enc("arn:aws:greengrass:us-east-1:123456789012:components:no:versions:1.0.0"));
  BOOST_CHECK_EQUAL(missing.status, 404);
  BOOST_CHECK_EQUAL(type_of(missing), "ResourceNotFoundException");
  BOOST_CHECK_EQUAL(call("GET", "/tags/" + enc("arn:aws:greengrass:us-east-1:123456789012:deployments:x")).status, 404);
  BOOST_CHECK_EQUAL(call("GET", "/tags/nonsense").status, 400);
}

BOOST_FIXTURE_TEST_CASE(api_throttles_each_key_to_its_rate, fixture) {
  // 2 requests a second: a bucket of two, refilled at two a second (the fixture's clock).
  auto list = [&](const char* key) { return call("GET", "/greengrass/v2/components", "", key); };
  BOOST_CHECK_EQUAL(list("AKIAGROVESLOWKEY01").status, 200);
  BOOST_CHECK_EQUAL(list("AKIAGROVESLOWKEY01").status, 200);
  auto third = list("AKIAGROVESLOWKEY01");
  BOOST_CHECK_EQUAL(third.status, 429);
  BOOST_CHECK_EQUAL(type_of(third), "ThrottlingException");
  bool retry_after = false;
  for (auto& [k, v] : third.headers)
    retry_after = retry_after || (k == "Retry-After" && v == "1");
  BOOST_CHECK(retry_after);
  BOOST_CHECK_EQUAL(list("AKIAGROVETEST00001").status, 200); // other keys are not held back
  now += 500ms;
  BOOST_CHECK_EQUAL(list("AKIAGROVESLOWKEY01").status, 200);
  BOOST_CHECK_EQUAL(list("AKIAGROVESLOWKEY01").status, 429);
}

BOOST_FIXTURE_TEST_CASE(api_resolves_the_newest_version_meeting_every_requirement, fixture) {
  auto on = [](const char* os) {
    return std::string{"Manifests:\n  - Platform: {os: "} + os + ", architecture: '*'}\n";
  };
  for (auto v : {"1.0.0", "1.5.0", "2.0.0", "2.1.0"})
    BOOST_REQUIRE_EQUAL(create(recipe_of("dep.A", v) + on("linux")).status, 201);
  BOOST_REQUIRE_EQUAL(create(recipe_of("dep.A", "3.0.0") + on("windows")).status, 201);
  auto resolve = [&](json candidates) {
    json body = {{"platform", {{"name", "linux"}, {"attributes", {{"os", "linux"}, {"architecture", "amd64"}}}}},
                 {"componentCandidates", candidates}};
    return call("POST", "/greengrass/v2/resolveComponentCandidates", body.dump());
  };
  // Newest for linux (3.0.0 is windows only) meeting both requirers.
  auto r = resolve(json::array({{{"componentName", "dep.A"}, {"componentVersion", "1.0.0"},
                                 {"versionRequirements", {{"main", ">=1.0.0"}, {"B", "<2.1.0"}}}}}));
  BOOST_REQUIRE_EQUAL(r.status, 200);
  auto got = json::parse(r.body)["resolvedComponentVersions"][0];
  BOOST_CHECK_EQUAL(got["componentVersion"], "2.0.0");
  std::string recipe;
  BOOST_REQUIRE(base64_decode(got["recipe"].get<std::string>(), recipe));
  BOOST_CHECK_EQUAL(json::parse(recipe)["ComponentVersion"], "2.0.0");
  // A conflict names the component, each requirement and who asked.
  auto c = resolve(json::array({{{"componentName", "dep.A"},
                                 {"versionRequirements", {{"main", ">2.0.0"}, {"B", "<2.0.0"}}}}}));
  BOOST_CHECK_EQUAL(c.status, 409);
  BOOST_CHECK_EQUAL(type_of(c), "ConflictException");
  auto msg = json::parse(c.body)["message"].get<std::string>();
  for (auto part : {"dep.A", "main requires '>2.0.0'", "B requires '<2.0.0'"})
    BOOST_CHECK_MESSAGE(msg.find(part) != std::string::npos, msg << " lacks " << part);
  BOOST_CHECK_EQUAL(resolve(json::array({{{"componentName", "dep.Nope"}}})).status, 404);
  BOOST_CHECK_EQUAL(resolve(json::array({{{"componentName", "dep.A"},
                                          {"versionRequirements", {{"main", ">=abc"}}}}})).status, 400);
  json mac = {{"platform", {{"attributes", {{"os", "darwin"}}}}},
              {"componentCandidates", json::array({{{"componentName", "dep.A"}}})}};
  BOOST_CHECK_EQUAL(call("POST", "/greengrass/v2/resolveComponentCandidates", mac.dump()).status, 404);
}

BOOST_FIXTURE_TEST_CASE(api_resolves_the_whole_dependency_graph, fixture) {
  // app 2.0.0 needs lib ^2 which log rules out (lib <2): app falls back to 1.0.0; the
  // answer lists the candidates, then the dependencies they brought.
  auto dep = [](const char* name, const char* range, const char* type = "HARD") {
    return std::string{"ComponentDependencies:\n  "} + name + ":\n    VersionRequirement: '"
           + range + "'\n    DependencyType: " + type + "\n";
  };
  BOOST_REQUIRE_EQUAL(create(recipe_of("g.app", "2.0.0") + dep("g.lib", "^2.0.0")).status, 201);
  BOOST_REQUIRE_EQUAL(create(recipe_of("g.app", "1.0.0") + dep("g.lib", "^1.0.0")).status, 201);
  BOOST_REQUIRE_EQUAL(create(recipe_of("g.log", "1.0.0") + dep("g.lib", "<2.0.0", "SOFT")).status, 201);
  for (auto v : {"1.0.0", "1.4.0", "2.0.0"})
    BOOST_REQUIRE_EQUAL(create(recipe_of("g.lib", v)).status, 201);
  auto resolve = [&](json candidates) {
    json body = {{"platform", {{"attributes", {{"os", "linux"}}}}}, {"componentCandidates", candidates}};
    return call("POST", "/greengrass/v2/resolveComponentCandidates", body.dump());
  };
  auto r = resolve(json::array({{{"componentName", "g.app"}}, {{"componentName", "g.log"}}}));
  BOOST_REQUIRE_EQUAL(r.status, 200);
  std::string got;
  auto answer = json::parse(r.body);
  for (auto& v : answer["resolvedComponentVersions"])
    got += v["componentName"].get<std::string>() + "@" + v["componentVersion"].get<std::string>() + " ";
  BOOST_CHECK_MESSAGE(got == "g.app@1.0.0 g.log@1.0.0 g.lib@1.4.0 ", r.body);
  // lib 1.4.0 DELETED: 1.0.0 is the one left.
  BOOST_CHECK_EQUAL(service->operator_call("SetVendorGuidance", service->version_arn("g.lib", "1.4.0"),
                                           "", "DELETED", "bad").status, 200);
  r = resolve(json::array({{{"componentName", "g.log"}}}));
  BOOST_REQUIRE_EQUAL(r.status, 200);
  BOOST_CHECK_EQUAL(json::parse(r.body)["resolvedComponentVersions"][1]["componentVersion"], "1.0.0");
  // A requirement no version meets, through a dependency: 409 naming both sides.
  auto c = resolve(json::array({{{"componentName", "g.log"}},
                                {{"componentName", "g.lib"}, {"versionRequirements", {{"ops", ">=2.0.0"}}}}}));
  BOOST_CHECK_EQUAL(c.status, 409);
  auto msg = json::parse(c.body)["message"].get<std::string>();
  for (auto part : {"g.lib", "ops requires '>=2.0.0'", "g.log@1.0.0 requires '<2.0.0'"})
    BOOST_CHECK_MESSAGE(msg.find(part) != std::string::npos, msg << " lacks " << part);
  // A dependency that is not stored: 404 naming it and who asked.
  BOOST_REQUIRE_EQUAL(create(recipe_of("g.orphan", "1.0.0") + dep("g.ghost", "*")).status, 201);
  auto m = resolve(json::array({{{"componentName", "g.orphan"}}}));
  BOOST_CHECK_EQUAL(m.status, 404);
  BOOST_CHECK_EQUAL(json::parse(m.body)["message"], "Component g.ghost not found (g.orphan@1.0.0 requires '*')");
}

// ---- artifacts, pre-signed URLs, connectivity (issue 14, part 1's rest) ----------------

#include <archive.h>
#include <archive_entry.h>
#include <fstream>

#include "artifact_uri.hpp"
#include "artifacts.hpp"
#include "connectivity.hpp"

namespace {

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in{p, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, {}};
}

void write_all(const std::filesystem::path& p, const std::string& data) {
  std::ofstream{p, std::ios::binary} << data;
}

// A ZIP of (name, content) entries; a content starting "->" makes a symbolic link.
void make_zip(const std::filesystem::path& file,
              const std::vector<std::pair<std::string, std::string>>& entries) {
  auto* a = archive_write_new();
  archive_write_set_format_zip(a);
  archive_write_open_filename(a, file.c_str());
  for (const auto& [name, data] : entries) {
    auto* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    if (data.starts_with("->")) {
      archive_entry_set_filetype(e, AE_IFLNK);
      archive_entry_set_symlink(e, data.substr(2).c_str());
      archive_entry_set_perm(e, 0777);
      archive_write_header(a, e);
    } else {
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_perm(e, 0644);
      archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
      archive_write_header(a, e);
      archive_write_data(a, data.data(), data.size());
    }
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
}

std::string b64_sha256(const std::string& data) {
  return base64_encode(sha256(data));
}

} // namespace

// ---- AWS's public components ---------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(api_public_components_are_there_with_no_set_up, fixture) {
  const std::string bridge = "aws.greengrass.clientdevices.mqtt.Bridge";
  const std::string shadow = "aws.greengrass.ShadowManager";
  const std::string aws = "arn:aws:greengrass:us-east-1:aws:components:";
  // ListComponents --scope PUBLIC: the whole catalog, by name, two a page; PRIVATE empty.
  std::vector<std::string> names;
  std::string next;
  do {
    auto page = call("GET", "/greengrass/v2/components?scope=PUBLIC&maxResults=2"
                              + (next.empty() ? "" : "&nextToken=" + enc(next)));
    BOOST_REQUIRE_EQUAL(page.status, 200);
    auto j = json::parse(page.body);
    BOOST_CHECK_LE(j["components"].size(), 2u);
    for (auto& c : j["components"]) {
      names.push_back(c["componentName"]);
      BOOST_CHECK_EQUAL(c["arn"], aws + names.back());
      BOOST_CHECK_EQUAL(c["latestVersion"]["publisher"], "AWS");
    }
    next = j.value("nextToken", "");
  } while (!next.empty());
  BOOST_CHECK_EQUAL(names.size(), public_catalog().size());
  BOOST_CHECK(std::is_sorted(names.begin(), names.end()));
  for (const auto& n : {bridge, shadow, std::string{"aws.greengrass.Nucleus"}})
    BOOST_CHECK_MESSAGE(std::find(names.begin(), names.end(), n) != names.end(), n);
  BOOST_CHECK(json::parse(call("GET", "/greengrass/v2/components").body)["components"].empty());
  // DescribeComponent, GetComponent and ListComponentVersions by AWS's ARN.
  const auto& shadow_vs = find_public(shadow)->versions; // newest first
  auto shadow_arn = aws + shadow + ":versions:" + shadow_vs.front().version;
  auto d = json::parse(call("GET", "/greengrass/v2/components/" + enc(shadow_arn) + "/metadata").body);
  BOOST_CHECK_EQUAL(d["arn"], shadow_arn);
  BOOST_CHECK_EQUAL(d["status"]["componentState"], "DEPLOYABLE");
  BOOST_CHECK_EQUAL(d["platforms"][0]["attributes"]["os"], "linux");
  auto g = call("GET", "/greengrass/v2/components/" + enc(shadow_arn) + "?recipeOutputFormat=JSON");
  BOOST_REQUIRE_EQUAL(g.status, 200);
  std::string recipe;
  BOOST_REQUIRE(base64_decode(json::parse(g.body)["recipe"].get<std::string>(), recipe));
  auto defaults = json::parse(recipe)["ComponentConfiguration"]["DefaultConfiguration"];
  BOOST_CHECK_EQUAL(defaults["rateLimits"]["maxLocalRequestsPerSecondPerThing"], 20);
  BOOST_CHECK_EQUAL(defaults["shadowDocumentSizeLimitBytes"], 8192);
  // Several patches of the newest minor, newest first: a deployment pinning an older patch
  // (as AWS's own deployments do) finds it.
  auto vs = json::parse(call("GET", "/greengrass/v2/components/" + enc(aws + shadow) + "/versions").body);
  BOOST_REQUIRE_EQUAL(vs["componentVersions"].size(), shadow_vs.size());
  BOOST_CHECK_GT(shadow_vs.size(), 1u);
  BOOST_CHECK_EQUAL(vs["componentVersions"][0]["arn"], shadow_arn);
  auto oldest = shadow_vs.back().version;
  BOOST_CHECK_EQUAL(vs["componentVersions"].back()["componentVersion"], oldest);
  BOOST_CHECK_EQUAL(call("GET", "/greengrass/v2/components/"
                                  + enc(aws + shadow + ":versions:" + oldest) + "/metadata").status, 200);
  // Another version, or the account's ARN, is not found.
  BOOST_CHECK_EQUAL(call("GET", "/greengrass/v2/components/"
                                  + enc(aws + shadow + ":versions:9.9.9") + "/metadata").status, 404);
  BOOST_CHECK_EQUAL(call("GET", "/greengrass/v2/components/"
                                  + enc("arn:aws:greengrass:us-east-1:123456789012:components:"
                                        + shadow + ":versions:2.3.12") + "/metadata").status, 404);
  // Not deletable; the account's own version of the same name and number lives beside
  // it (its own ARN), is the one resolved, and once deleted the public one is back.
  auto bridge_v = find_public(bridge)->versions.front().version;
  auto bridge_arn = aws + bridge + ":versions:" + bridge_v;
  auto del = call("DELETE", "/greengrass/v2/components/" + enc(bridge_arn));
  BOOST_CHECK_EQUAL(del.status, 403);
  BOOST_CHECK_EQUAL(type_of(del), "AccessDeniedException");
  auto resolve = [&](const std::string& name, const std::string& requirement = ">=1.0.0") {
    json body = {{"platform", {{"attributes", {{"os", "linux"}, {"architecture", "amd64"}}}}},
                 {"componentCandidates", json::array({{{"componentName", name},
                                                       {"versionRequirements", {{"t", requirement}}}}})}};
    return call("POST", "/greengrass/v2/resolveComponentCandidates", body.dump());
  };
  auto first_arn = [](const http_response& r) {
    auto j = json::parse(r.body, nullptr, false);
    return j.is_object() && j.contains("resolvedComponentVersions")
             ? j["resolvedComponentVersions"][0].value("arn", "") : r.body;
  };
  BOOST_CHECK_EQUAL(first_arn(resolve(bridge)), bridge_arn);
  // A pinned older patch resolves to AWS's version of that number; a version the catalog
  // does not serve is a conflict naming the ones it does.
  BOOST_CHECK_EQUAL(first_arn(resolve(shadow, "=" + oldest)), aws + shadow + ":versions:" + oldest);
  auto outside = resolve(shadow, "<" + oldest);
  BOOST_CHECK_EQUAL(outside.status, 409);
  BOOST_CHECK_MESSAGE(outside.body.find("this core serves " + oldest + " to "
                                        + shadow_vs.front().version) != std::string::npos,
                      outside.body);
  auto own = create(recipe_of(bridge, bridge_v) + "ComponentPublisher: Me\n");
  BOOST_REQUIRE_EQUAL(own.status, 201);
  auto own_arn = json::parse(own.body)["arn"].get<std::string>();
  BOOST_CHECK_EQUAL(own_arn, "arn:aws:greengrass:us-east-1:123456789012:components:" + bridge
                               + ":versions:" + bridge_v);
  BOOST_CHECK_EQUAL(first_arn(resolve(bridge)), own_arn);
  auto still = json::parse(call("GET", "/greengrass/v2/components/" + enc(bridge_arn) + "/metadata").body);
  BOOST_CHECK_EQUAL(still["publisher"], "AWS");
  BOOST_CHECK_EQUAL(call("DELETE", "/greengrass/v2/components/" + enc(own_arn)).status, 204);
  BOOST_CHECK_EQUAL(first_arn(resolve(bridge)), bridge_arn);
  // An AWS component Grove does not implement: refused, saying why.
  auto tes = resolve("aws.greengrass.TokenExchangeService");
  BOOST_CHECK_EQUAL(tes.status, 400);
  BOOST_CHECK_MESSAGE(tes.body.find("Grove does not implement") != std::string::npos, tes.body);
}

BOOST_AUTO_TEST_CASE(public_components_map_onto_grove_plugins) {
  // Shadow manager's configuration as the shadow plugin reads it.
  auto doc = public_plugin_document(
    "aws.greengrass.ShadowManager",
    json::parse(R"({"shadowDocumentSizeLimitBytes": 16384,
                    "rateLimits": {"maxTotalLocalRequestsRate": 50},
                    "synchronize": {"coreThing": {"classic": true},
                                    "shadowDocuments": [{"thingName": "A"}],
                                    "shadowDocumentsMap": {"B": {"namedShadows": ["n"]}}}})"),
    "core-1");
  BOOST_REQUIRE(doc);
  BOOST_CHECK_EQUAL((*doc)["max_document_bytes"], 16384);
  BOOST_CHECK(!doc->contains("shadowDocumentSizeLimitBytes"));
  BOOST_CHECK_EQUAL((*doc)["rateLimits"]["maxTotalLocalRequestsRate"], 50);
  BOOST_CHECK_EQUAL((*doc)["synchronize"]["coreThing"]["thingName"], "core-1");
  auto docs = (*doc)["synchronize"]["shadowDocuments"];
  BOOST_REQUIRE_EQUAL(docs.size(), 2u);
  BOOST_CHECK_EQUAL(docs[1]["thingName"], "B");
  BOOST_CHECK_EQUAL(docs[1]["namedShadows"][0], "n");
  BOOST_CHECK(!(*doc)["synchronize"].contains("shadowDocumentsMap"));
  // Only shadow manager's keys pass: the plugin's own (file, allow_unknown_things, the
  // core's thingName) are the profile's, and a key Grove does not implement is named.
  std::vector<std::string> ignored;
  doc = public_plugin_document(
    "aws.greengrass.ShadowManager",
    json::parse(R"({"file": "/tmp/other.db", "allow_unknown_things": true,
                    "rateLimits": {"maxTotalLocalRequestsRate": 50, "burst": 3},
                    "synchronize": {"coreThing": {"thingName": "other", "classic": true}},
                    "strategy": {"type": "periodic", "delay": 30}})"),
    "core-1", &ignored);
  BOOST_REQUIRE(doc);
  BOOST_CHECK(!doc->contains("file"));
  BOOST_CHECK(!doc->contains("allow_unknown_things"));
  BOOST_CHECK(!(*doc)["rateLimits"].contains("burst"));
  BOOST_CHECK_EQUAL((*doc)["rateLimits"]["maxTotalLocalRequestsRate"], 50);
  BOOST_CHECK_EQUAL((*doc)["strategy"]["delay"], 30);
  BOOST_CHECK_EQUAL((*doc)["synchronize"]["coreThing"]["thingName"], "core-1");
  std::sort(ignored.begin(), ignored.end());
  BOOST_CHECK_EQUAL(json(ignored).dump(),
                    R"(["allow_unknown_things","file","rateLimits.burst","synchronize.coreThing.thingName"])");
  // The bridge's named mappings as message_manager's list.
  auto b = public_plugin_document(
    "aws.greengrass.clientdevices.mqtt.Bridge",
    json::parse(R"({"mqttTopicMapping": {"M": {"topic": "t/#", "source": "LocalMqtt",
                                               "target": "Pubsub"}}})"),
    "core-1");
  BOOST_REQUIRE(b);
  BOOST_CHECK_EQUAL((*b)["bridge"]["mqtt_topic_mapping"][0]["name"], "M");
  BOOST_CHECK_EQUAL((*b)["bridge"]["mqtt_topic_mapping"][0]["topic"], "t/#");
  // No-ops and others configure nothing; every catalog entry is a valid, deployable recipe.
  BOOST_CHECK(!public_plugin_document("aws.greengrass.Nucleus", json::object(), "core-1"));
  for (const auto& c : public_catalog())
    for (const auto& v : c.versions) {
      std::vector<recipe_error> errors;
      BOOST_CHECK_MESSAGE(parse_recipe(v.recipe, errors), c.name << " " << v.version);
      BOOST_CHECK_EQUAL(v.state, "DEPLOYABLE");
      BOOST_CHECK_EQUAL(find_public_version(c.name, v.version), &v);
    }
  for (const auto& c : public_catalog()) {
    BOOST_CHECK_MESSAGE(!public_refusal(c.name), c.name);
    // AWS's component types: the Lambda launcher and runtimes and EMQX are generic, the
    // nucleus its own type, the others plugins.
    auto type = json::parse(c.versions.front().recipe)["ComponentType"];
    bool generic = c.name == "aws.greengrass.LambdaLauncher"
                   || c.name == "aws.greengrass.LambdaRuntimes"
                   || c.name == "aws.greengrass.clientdevices.mqtt.EMQX";
    BOOST_CHECK_EQUAL(type, c.name == "aws.greengrass.Nucleus" ? "aws.greengrass.nucleus"
                            : generic                          ? "aws.greengrass.generic"
                                                               : "aws.greengrass.plugin");
    BOOST_CHECK_EQUAL(c.role == public_role::plugin_config, !c.plugin.empty());
  }
}

BOOST_AUTO_TEST_CASE(artifact_uris_map_to_their_source_or_are_refused) {
  auto dir = std::filesystem::temp_directory_path() / ("deployment_uri_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir / "in");
  write_all(dir / "in/a.bin", "a");
  write_all(dir / "secret", "s");
  std::filesystem::create_symlink(dir / "secret", dir / "in/link");
  artifact_uri_settings s{"https://mirror.example/base/", dir / "in"};
  std::string why;
  auto src = resolve_artifact_uri("s3://bucket/dir/key.zip", s, why);
  BOOST_CHECK_EQUAL(why, "");
  BOOST_CHECK_EQUAL(src.url, "https://mirror.example/base/bucket/dir/key.zip");
  // The key's own `?`, `#` and `%` are encoded, so they stay in the path.
  src = resolve_artifact_uri("s3://bucket/k/.?.pz#f%41", s, why);
  BOOST_CHECK_EQUAL(why, "");
  BOOST_CHECK_EQUAL(src.url, "https://mirror.example/base/bucket/k/.%3F.pz%23f%2541");
  src = resolve_artifact_uri("https://h.example:8443/p/x.py", s, why);
  BOOST_CHECK(why.empty() && src.url == "https://h.example:8443/p/x.py");
  src = resolve_artifact_uri("file://" + (dir / "in/a.bin").string(), s, why);
  BOOST_CHECK(why.empty() && src.file == std::filesystem::canonical(dir / "in/a.bin"));
  // Each refusal says why.
  for (auto [uri, reason] : std::vector<std::pair<std::string, std::string>>{
         {"s3://bucket", "s3://bucket/key"},
         {"s3://bucket/", "s3://bucket/key"},
         {"s3:///key", "s3://bucket/key"},
         {"s3://bucket/a/../../etc/passwd", "'..' segment"},
         {"s3://bucket/a/%2e%2e/x", "'..' segment"},
         {"s3://bucket/a b", "space"},
         {"https://user@h.example/x", "no user info"},
         {"https://h.example/a/../x", "'..' segment"},
         {"file://relative/x", "file:///absolute"},
         {"file://" + (dir / "secret").string(), "not under artifacts_file_dir"},
         {"file://" + (dir / "in/link").string(), "not under artifacts_file_dir"},
         {"file://" + (dir / "in/../secret").string(), "'..' segment"},
         {"greengrass:x.zip", "only s3://"},
       }) {
    resolve_artifact_uri(uri, s, why);
    BOOST_CHECK_MESSAGE(why.find(reason) != std::string::npos, uri << ": '" << why << "'");
  }
  resolve_artifact_uri("s3://b/k", artifact_uri_settings{}, why);
  BOOST_CHECK(why.find("artifacts_base_url") != std::string::npos);
  resolve_artifact_uri("file://" + (dir / "in/a.bin").string(), artifact_uri_settings{}, why);
  BOOST_CHECK(why.find("artifacts_file_dir") != std::string::npos);
  // Which artifacts of a recipe are fetched: the manifest's for the device's platform
  // (another architecture's, unreachable, is not), s3, https, file; each Uri once.
  auto recipe = json::parse(R"({"Manifests": [
    {"Platform": {"os": "linux", "architecture": "aarch64"},
     "Artifacts": [{"Uri": "https://unreachable.invalid/arm/tool"}]},
    {"Platform": {"os": "linux"},
     "Artifacts": [{"Uri": "s3://b/k.zip", "Unarchive": "ZIP", "Digest": "x", "Algorithm": "SHA-256"},
                   {"Uri": "greengrass:Lambda.zip"}, {"Uri": "docker:img"},
                   {"Uri": "s3://b/k.zip"}, {"Uri": "file:///x/y"}]}]})");
  auto arts = fetchable_artifacts(recipe, {{"os", "linux"}, {"architecture", "amd64"}});
  BOOST_REQUIRE_EQUAL(arts.size(), 2u);
  BOOST_CHECK(arts[0].uri == "s3://b/k.zip" && arts[0].unzip && arts[0].digest == "x");
  BOOST_CHECK_EQUAL(arts[1].uri, "file:///x/y");
  auto arm = fetchable_artifacts(recipe, {{"os", "linux"}, {"architecture", "aarch64"}});
  BOOST_REQUIRE_EQUAL(arm.size(), 1u);
  BOOST_CHECK_EQUAL(arm[0].uri, "https://unreachable.invalid/arm/tool");
  BOOST_CHECK(fetchable_artifacts(recipe, {{"os", "windows"}}).empty());
  std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(presigned_urls_verify_and_refuse_forged_expired_malformed) {
  std::string key(32, 'k');
  std::string sha(64, 'a');
  auto url = presign_artifact(key, sha, "hello world.py", 1000);
  BOOST_CHECK_EQUAL(url.substr(0, url.find('?')), "/grove/artifacts/" + sha + "/hello%20world.py");
  auto path = url.substr(0, url.find('?'));
  auto query = url.substr(url.find('?') + 1);
  std::string got;
  BOOST_CHECK(check_presigned(key, path, query, 999, got) == presign_check::valid);
  BOOST_CHECK_EQUAL(got, sha);
  BOOST_CHECK(check_presigned(key, path, query, 1000, got) == presign_check::expired);
  BOOST_CHECK(check_presigned(std::string(32, 'x'), path, query, 999, got) == presign_check::forged);
  // Another expiry, artifact or name: the signature no longer fits.
  auto later = query;
  later.replace(later.find("1000"), 4, "9999");
  BOOST_CHECK(check_presigned(key, path, later, 999, got) == presign_check::forged);
  auto other = path;
  other.replace(other.find(sha), 64, std::string(64, 'b'));
  BOOST_CHECK(check_presigned(key, other, query, 999, got) == presign_check::forged);
  BOOST_CHECK(check_presigned(key, path + "x", query, 999, got) == presign_check::forged);
  for (auto [p, q] : std::vector<std::pair<std::string, std::string>>{
         {path, ""},
         {path, "X-Grove-Expires=1000"},
         {path, query + "&X-Grove-Expires=1000"},
         {path, "X-Grove-Expires=-1&X-Grove-Signature=00"},
         {"/grove/artifacts/" + sha, query},
         {"/grove/artifacts/" + std::string(63, 'a') + "/x", query},
         {"/grove/artifacts/" + std::string(64, 'A') + "/x", query},
         {"/grove/artifacts/" + sha + "/a%2Fb", query},
         {"/grove/artifacts/" + sha + "/", query},
         {"/elsewhere", query},
       })
    BOOST_CHECK_MESSAGE(check_presigned(key, p, q, 999, got) == presign_check::malformed, p << "?" << q);
}

BOOST_AUTO_TEST_CASE(connectivity_info_is_checked_field_by_field) {
  std::vector<connectivity_problem> problems;
  auto ok = check_connectivity_info(
    json::parse(R"([{"HostAddress": "10.0.0.1", "PortNumber": 8883},
                    {"Id": "wan", "HostAddress": "core.example.com", "PortNumber": 1, "Metadata": "m"}])"),
    problems);
  BOOST_REQUIRE(ok);
  BOOST_CHECK_EQUAL(ok->dump(), R"([{"HostAddress":"10.0.0.1","Id":"10.0.0.1","Metadata":"","PortNumber":8883},)"
                                R"({"HostAddress":"core.example.com","Id":"wan","Metadata":"m","PortNumber":1}])");
  auto fields = [](const char* text) {
    std::vector<connectivity_problem> ps;
    BOOST_CHECK(!check_connectivity_info(json::parse(text), ps));
    std::string out;
    for (auto& p : ps)
      out += p.field + ";";
    return out;
  };
  BOOST_CHECK_EQUAL(fields(R"([{"HostAddress": "h", "PortNumber": 0}])"), "ConnectivityInfo/0/PortNumber;");
  BOOST_CHECK_EQUAL(fields(R"([{"HostAddress": "h", "PortNumber": 65536}])"), "ConnectivityInfo/0/PortNumber;");
  BOOST_CHECK_EQUAL(fields(R"([{"HostAddress": "h", "PortNumber": "8883"}])"), "ConnectivityInfo/0/PortNumber;");
  BOOST_CHECK_EQUAL(fields(R"([{"PortNumber": 1}, {"HostAddress": "a b", "PortNumber": 1}])"),
                    "ConnectivityInfo/0/HostAddress;ConnectivityInfo/1/HostAddress;");
  BOOST_CHECK_EQUAL(fields(R"([{"HostAddress": "h", "PortNumber": 1, "Port": 2}])"), "ConnectivityInfo/0/Port;");
  BOOST_CHECK_EQUAL(fields(R"([{"Id": "x", "HostAddress": "h", "PortNumber": 1},
                               {"Id": "x", "HostAddress": "g", "PortNumber": 2}])"), "ConnectivityInfo/1/Id;");
  BOOST_CHECK_EQUAL(fields(R"([{"Id": "", "HostAddress": "h", "PortNumber": 1, "Metadata": 5}])"),
                    "ConnectivityInfo/0/Id;ConnectivityInfo/0/Metadata;");
  BOOST_CHECK_EQUAL(fields(R"({"HostAddress": "h"})"), "ConnectivityInfo;");
  BOOST_CHECK_EQUAL(fields(R"([1])"), "ConnectivityInfo/0;");
  json many = json::array();
  for (int i = 0; i < 101; ++i)
    many.push_back({{"HostAddress", std::string{"h"}.append(std::to_string(i))}, {"PortNumber", 1}});
  BOOST_CHECK_EQUAL(fields(many.dump().c_str()), "ConnectivityInfo;");
  BOOST_CHECK(valid_thing_name("core-1:a_b"));
  BOOST_CHECK(!valid_thing_name("") && !valid_thing_name("a b") && !valid_thing_name("a/b")
              && !valid_thing_name(std::string(129, 'a')));
}

BOOST_AUTO_TEST_CASE(a_schema_1_store_migrates_keeping_its_versions) {
  auto dir = std::filesystem::temp_directory_path() / ("deployment_mig_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  {
    // The file as part 1's first release wrote it.
    grove::store_options opts;
    opts.application_id = 0x47524450;
    opts.migrations.push_back({1,
                               "CREATE TABLE component_versions("
                               " name TEXT NOT NULL, version TEXT NOT NULL,"
                               " created_ms INTEGER NOT NULL, description TEXT NOT NULL,"
                               " publisher TEXT NOT NULL, recipe TEXT NOT NULL,"
                               " platforms TEXT NOT NULL, state TEXT NOT NULL,"
                               " message TEXT NOT NULL, vendor_guidance TEXT NOT NULL,"
                               " vendor_guidance_message TEXT NOT NULL, tags TEXT NOT NULL,"
                               " PRIMARY KEY(name, version)) WITHOUT ROWID;"
                               "CREATE TABLE client_tokens("
                               " token TEXT PRIMARY KEY, request_hash TEXT NOT NULL,"
                               " status INTEGER NOT NULL, response TEXT NOT NULL,"
                               " expires_ms INTEGER NOT NULL) WITHOUT ROWID;",
                               {}});
    auto db = grove::store::open(dir / "c.db", std::move(opts));
    BOOST_REQUIRE(db);
    BOOST_REQUIRE(!(*db)->run("INSERT INTO component_versions VALUES "
                              "('old', '1.0.0', 1, '', '', '{}', '[]', 'DEPLOYABLE', 'NONE', "
                              "'ACTIVE', '', '{}')"));
  }
  auto s = component_store::open(dir / "c.db");
  BOOST_REQUIRE(s);
  auto v = (*s)->get("old", "1.0.0");
  BOOST_REQUIRE(v && *v);
  BOOST_CHECK_EQUAL((*v)->state, "DEPLOYABLE");
  auto st = (*s)->artifacts_of("old", "1.0.0");
  BOOST_REQUIRE(st && *st);
  BOOST_CHECK(((*st)->errors == "{}") && ((*st)->artifacts == "{}"));
  BOOST_CHECK(*(*s)->set_connectivity("core", json::array(), 5) == 1);
  s->reset();
  std::filesystem::remove_all(dir);
}

namespace {

// The fixture's API with artifacts: file:// ones under `local`, the store under `arts`.
struct artifact_fixture : fixture {
  std::filesystem::path local;
  std::unique_ptr<artifact_store> arts;
  fetch_settings fetch;
  std::vector<std::string> requested;

  artifact_fixture() {
    local = dir / "local";
    std::filesystem::create_directories(local);
    auto a = artifact_store::open(dir / "artifacts");
    BOOST_REQUIRE(a);
    arts = std::move(*a);
    fetch.uris.file_dir = local;
    api_settings settings;
    settings.keys["AKIAGROVETEST00001"] = access_key{"secret-secret-secret", {"*"}};
    settings.artifact_files = dir / "artifacts" / "sha256";
    settings.url_key = *arts->url_key();
    settings.url_ttl = 60s;
    settings.on_requested = [this](const std::string& n, const std::string& v) {
      requested.push_back(n + "@" + v);
    };
    service = std::make_unique<api>(settings, *store);
  }

  std::string with_artifacts(const std::string& name, const json& artifacts) {
    return json{{"RecipeFormatVersion", "2020-01-25"},
                {"ComponentName", name},
                {"ComponentVersion", "1.0.0"},
                {"Manifests", json::array({{{"Artifacts", artifacts}}})}}
      .dump();
  }

  json describe(const std::string& name) {
    auto r = call("GET", "/greengrass/v2/components/"
                           + enc("arn:aws:greengrass:us-east-1:123456789012:components:" + name
                                 + ":versions:1.0.0")
                           + "/metadata");
    return json::parse(r.body);
  }

  http_response artifact(const std::string& name, const std::string& artifact_name) {
    return call("GET", "/greengrass/v2/components/"
                         + enc("arn:aws:greengrass:us-east-1:123456789012:components:" + name
                               + ":versions:1.0.0")
                         + "/artifacts/" + artifact_name);
  }

  http_response unsigned_get(const std::string& target, std::chrono::seconds later = 0s) {
    return service->handle(http_request{"GET", target, {{"host", "localhost"}}, ""}, now + later);
  }
};

} // namespace

BOOST_FIXTURE_TEST_CASE(api_artifacts_fetched_checked_and_served_presigned, artifact_fixture) {
  std::string data = "print('hello')\n";
  write_all(local / "hello.py", data);
  auto uri = "file://" + (local / "hello.py").string();
  auto r = create(with_artifacts("a.Good", json::array({{{"Uri", uri},
                                                         {"Digest", b64_sha256(data)},
                                                         {"Algorithm", "SHA-256"}}})));
  BOOST_REQUIRE_EQUAL(r.status, 201);
  BOOST_CHECK_EQUAL(json::parse(r.body)["status"]["componentState"], "REQUESTED");
  BOOST_CHECK(requested == std::vector<std::string>{"a.Good@1.0.0"});
  // Not fetched yet: not resolvable, no URL.
  auto res = call("POST", "/greengrass/v2/resolveComponentCandidates",
                  R"({"componentCandidates": [{"componentName": "a.Good", "versionRequirements": {}}]})");
  BOOST_CHECK_EQUAL(res.status, 409);
  auto u = artifact("a.Good", "hello.py");
  BOOST_CHECK_EQUAL(u.status, 404);
  BOOST_CHECK(u.body.find("not fetched yet (componentState REQUESTED)") != std::string::npos);
  BOOST_REQUIRE(!settle_version(*store, *arts, fetch, "a.Good", "1.0.0"));
  auto d = describe("a.Good");
  BOOST_CHECK_EQUAL(d["status"]["componentState"], "DEPLOYABLE");
  BOOST_CHECK_EQUAL(d["status"]["errors"].dump(), "{}");
  BOOST_CHECK_EQUAL(read_all(arts->path_of(hex(sha256(data)))), data);
  res = call("POST", "/greengrass/v2/resolveComponentCandidates",
             R"({"componentCandidates": [{"componentName": "a.Good", "versionRequirements": {}}]})");
  BOOST_CHECK_EQUAL(res.status, 200);
  // Settled once: a second settle leaves it alone.
  BOOST_CHECK(!settle_version(*store, *arts, fetch, "a.Good", "1.0.0"));
  // The URL: this server, unsigned GET, until it expires.
  u = artifact("a.Good", "hello.py");
  BOOST_REQUIRE_EQUAL(u.status, 200);
  auto url = json::parse(u.body)["preSignedUrl"].get<std::string>();
  BOOST_REQUIRE(url.starts_with("https://localhost/grove/artifacts/"));
  auto target = url.substr(std::string{"https://localhost"}.size());
  auto got = unsigned_get(target);
  BOOST_CHECK_EQUAL(got.status, 200);
  BOOST_CHECK_EQUAL(got.file, arts->path_of(hex(sha256(data))));
  BOOST_CHECK_EQUAL(got.content_type, "application/octet-stream");
  got = unsigned_get(target, 61s);
  BOOST_CHECK(got.status == 403 && got.body.find("expired") != std::string::npos);
  got = unsigned_get(target.substr(0, target.size() - 2) + "00");
  BOOST_CHECK(got.status == 403 && type_of(got) == "AccessDeniedException" && got.file.empty());
  // Artifact names: AWS's (after the scheme), traversal refused, unknown ones 404.
  BOOST_CHECK_EQUAL(artifact("a.Good", uri.substr(7)).status, 200);
  BOOST_CHECK_EQUAL(artifact("a.Good", "a/%2E%2E/hello.py").status, 400);
  BOOST_CHECK_EQUAL(artifact("a.Good", "..").status, 400);
  BOOST_CHECK_EQUAL(artifact("a.Good", "other.py").status, 404);
}

BOOST_FIXTURE_TEST_CASE(api_artifacts_that_fail_fail_their_version, artifact_fixture) {
  write_all(local / "x.bin", "x");
  auto uri = "file://" + (local / "x.bin").string();
  auto missing = "file://" + (local / "missing.bin").string();
  BOOST_REQUIRE_EQUAL(create(with_artifacts("a.Bad", json::array({
                        {{"Uri", uri}, {"Digest", b64_sha256("y")}, {"Algorithm", "SHA-256"}},
                        {{"Uri", missing}},
                        {{"Uri", "s3://bucket/k.bin"}},
                        {{"Uri", uri + "2"}, {"Digest", "not base64!"}, {"Algorithm", "SHA-256"}},
                      })))
                        .status,
                      201);
  BOOST_REQUIRE(!settle_version(*store, *arts, fetch, "a.Bad", "1.0.0"));
  auto d = describe("a.Bad");
  BOOST_CHECK_EQUAL(d["status"]["componentState"], "FAILED");
  auto errors = d["status"]["errors"];
  BOOST_CHECK(errors[uri].get<std::string>().find("digest mismatch") != std::string::npos);
  BOOST_CHECK(errors[missing].get<std::string>().find("cannot read") != std::string::npos);
  BOOST_CHECK(errors["s3://bucket/k.bin"].get<std::string>().find("artifacts_base_url") != std::string::npos);
  BOOST_CHECK(errors[uri + "2"].get<std::string>().find("not base64") != std::string::npos);
  BOOST_CHECK(d["status"]["message"].get<std::string>().starts_with("4 of 4 artifacts"));
  // Nothing half written is left behind.
  BOOST_CHECK(std::filesystem::is_empty(dir / "artifacts" / "tmp"));
  BOOST_CHECK(std::filesystem::is_empty(dir / "artifacts" / "sha256"));
  auto u = artifact("a.Bad", "x.bin");
  BOOST_CHECK(u.status == 404 && u.body.find("componentState FAILED") != std::string::npos);
  // A size cap.
  write_all(local / "big.bin", std::string(100, 'b'));
  BOOST_REQUIRE_EQUAL(create(with_artifacts("a.Big", json::array({{{"Uri", "file://" + (local / "big.bin").string()}}}))).status, 201);
  fetch.max_bytes = 99;
  BOOST_REQUIRE(!settle_version(*store, *arts, fetch, "a.Big", "1.0.0"));
  BOOST_CHECK(describe("a.Big")["status"]["message"].get<std::string>().find("artifacts_max_bytes") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(zip_artifacts_unpack_and_zip_slip_is_refused, artifact_fixture) {
  make_zip(local / "good.zip", {{"bin/run.sh", "#!/bin/sh\n"}, {"README", "r"}});
  make_zip(local / "slip.zip", {{"ok.txt", "fine"}, {"../../escaped.txt", "evil"}});
  make_zip(local / "abs.zip", {{"/tmp/deployment-unit-abs.txt", "evil"}});
  make_zip(local / "link.zip", {{"l", "->/etc"}, {"l/passwd", "evil"}});
  write_all(local / "notzip.zip", "this is no zip");
  for (auto name : {"good", "slip", "abs", "link", "notzip"}) {
    auto uri = "file://" + (local / (std::string{name} + ".zip")).string();
    BOOST_REQUIRE_EQUAL(create(with_artifacts(std::string{"z."} + name,
                                              json::array({{{"Uri", uri}, {"Unarchive", "ZIP"}}})))
                          .status,
                        201);
    BOOST_REQUIRE(!settle_version(*store, *arts, fetch, std::string{"z."} + name, "1.0.0"));
  }
  BOOST_CHECK_EQUAL(describe("z.good")["status"]["componentState"], "DEPLOYABLE");
  auto sha = hex(sha256(read_all(local / "good.zip")));
  BOOST_CHECK_EQUAL(read_all(arts->unarchived_of(sha) / "bin/run.sh"), "#!/bin/sh\n");
  auto why = [&](const char* name) {
    auto d = describe(std::string{"z."} + name);
    BOOST_CHECK_EQUAL(d["status"]["componentState"], "FAILED");
    return d["status"]["errors"].begin()->get<std::string>();
  };
  BOOST_CHECK(why("slip").find("zip-slip") != std::string::npos);
  BOOST_CHECK(why("abs").find("zip-slip") != std::string::npos);
  BOOST_CHECK(why("link").find("link") != std::string::npos);
  BOOST_CHECK(why("notzip").find("ZIP") != std::string::npos);
  BOOST_CHECK(!std::filesystem::exists(dir / "escaped.txt"));
  BOOST_CHECK(!std::filesystem::exists(dir / "artifacts" / "escaped.txt"));
  BOOST_CHECK(!std::filesystem::exists("/tmp/deployment-unit-abs.txt"));
  BOOST_CHECK(!std::filesystem::exists(arts->unarchived_of(hex(sha256(read_all(local / "slip.zip"))))));
  BOOST_CHECK(std::filesystem::is_empty(dir / "artifacts" / "tmp"));
}

BOOST_FIXTURE_TEST_CASE(api_connectivity_info_round_trip, artifact_fixture) {
  auto r = call("GET", "/greengrass/things/core-1/connectivityInfo");
  BOOST_CHECK_EQUAL(r.status, 200);
  BOOST_CHECK_EQUAL(json::parse(r.body)["ConnectivityInfo"].dump(), "[]");
  r = call("PUT", "/greengrass/things/core-1/connectivityInfo",
           R"({"ConnectivityInfo": [{"Id": "a", "HostAddress": "10.1.1.1", "PortNumber": 8883}]})");
  BOOST_CHECK_EQUAL(r.status, 200);
  BOOST_CHECK_EQUAL(json::parse(r.body)["Version"], "1");
  r = call("PUT", "/greengrass/things/core-1/connectivityInfo",
           R"({"ConnectivityInfo": [{"Id": "b", "HostAddress": "h", "PortNumber": 443}]})");
  BOOST_CHECK_EQUAL(json::parse(r.body)["Version"], "2");
  r = call("PUT", "/greengrass/things/core-1/connectivityInfo",
           R"({"ConnectivityInfo": [{"Id": "b", "HostAddress": "h", "PortNumber": 0}]})");
  BOOST_CHECK(r.status == 400 && type_of(r) == "ValidationException");
  BOOST_CHECK_EQUAL(json::parse(r.body)["fields"][0]["name"], "ConnectivityInfo/0/PortNumber");
  r = call("PUT", "/greengrass/things/core-1/connectivityInfo", "{}");
  BOOST_CHECK(r.status == 400 && type_of(r) == "ValidationException");
  r = call("PUT", "/greengrass/things/core-1/connectivityInfo", "[");
  BOOST_CHECK(r.status == 400 && type_of(r) == "SerializationException");
  r = call("GET", "/greengrass/things/core-1/connectivityInfo");
  BOOST_CHECK_EQUAL(json::parse(r.body)["ConnectivityInfo"][0]["Id"], "b");
  r = call("DELETE", "/greengrass/things/core-1/connectivityInfo");
  BOOST_CHECK_EQUAL(r.status, 404);
  r = call("GET", "/greengrass/things/a%20b/connectivityInfo");
  BOOST_CHECK_EQUAL(r.status, 400);
}
