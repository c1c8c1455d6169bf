// Deployments and core devices through the API (issue 15) over a real SQLite store,
// without a server: CreateDeployment's checks and journal, the whole set a core keeps
// resolved at creation (a missing, DELETED or clashing version fails the deployment with
// its reason), history and pagination, cancel and delete rules, and the core device
// operations; and a rollback's undo of the group (group_changes).

#define BOOST_TEST_MODULE deployment_deployments
#include <boost/test/unit_test.hpp>

#include <algorithm>

#include "api_fixture.hpp"
#include "group_changes.hpp"
#include "grove/kernel/config.hpp"
#include "grove/kernel/group.hpp"
#include "http.hpp"
#include "reason.hpp"
#include "render.hpp"
#include "store_rows.hpp"

using namespace grove::deployment;
using nlohmann::json;

namespace {

const char* thing = "arn:aws:iot:us-east-1:123456789012:thing/core-1";
const char* group = "arn:aws:iot:us-east-1:123456789012:thinggroup/site";

struct fixture : test::api_fixture {
  std::vector<std::pair<std::string, json>> applied; // on_deployment's calls
  json installed = json::array();

  fixture() : api_fixture("deployment_deployments") {
    open();
  }

  void open() {
    auto settings = test::settings_with_key();
    settings.thing_name = "core-1";
    settings.thing_groups = {"site"};
    settings.platform = {{"os", "linux"}, {"architecture", "amd64"}};
    settings.core_version = "0.1.0";
    settings.on_deployment = [this](const std::string& id, const json& resolved) {
      applied.emplace_back(id, resolved);
    };
    settings.installed = [this] { return installed; };
    open_api(settings);
  }

  void component(const std::string& name, const std::string& version,
                 const std::string& deps = "") {
    auto recipe = "RecipeFormatVersion: '2020-01-25'\nComponentName: " + name
                  + "\nComponentVersion: '" + version + "'\n" + deps;
    json body = {{"inlineRecipe", base64_encode(recipe)}};
    BOOST_REQUIRE_EQUAL(call("POST", "/greengrass/v2/createComponentVersion", body.dump()).status,
                        201);
  }

  http_response deploy(json body) {
    return call("POST", "/greengrass/v2/deployments", body.dump());
  }

  std::string deploy_ok(json body) {
    auto r = deploy(std::move(body));
    BOOST_REQUIRE_EQUAL(r.status, 201);
    return json::parse(r.body)["deploymentId"];
  }

  json get(const std::string& id) {
    auto r = call("GET", "/greengrass/v2/deployments/" + id);
    BOOST_REQUIRE_EQUAL(r.status, 200);
    return json::parse(r.body);
  }

  json effective(const std::string& id) {
    auto r = call("GET", "/greengrass/v2/coreDevices/core-1/effectiveDeployments");
    BOOST_REQUIRE_EQUAL(r.status, 200);
    auto list = json::parse(r.body); // kept: the loop must not run over a temporary
    for (auto& e : list["effectiveDeployments"])
      if (e["deploymentId"] == id)
        return e;
    BOOST_FAIL("deployment " + id + " not in ListEffectiveDeployments");
    return {};
  }
};

std::string type_of(const http_response& r) {
  for (auto& [k, v] : r.headers)
    if (k == "x-amzn-ErrorType")
      return v;
  return "";
}

json spec(const std::string& version) {
  return {{"componentVersion", version}};
}

} // namespace

BOOST_FIXTURE_TEST_CASE(create_get_and_the_defaults, fixture) {
  component("a.one", "1.0.0");
  json cfg = {{"componentVersion", "1.0.0"},
              {"configurationUpdate", {{"merge", R"({"k":"v"})"}, {"reset", {"/old", ""}}}},
              {"runWith", {{"posixUser", "nobody:nogroup"}}}};
  auto id = deploy_ok({{"targetArn", thing},
                       {"deploymentName", "first"},
                       {"components", {{"a.one", cfg}}},
                       {"tags", {{"team", "x"}}}});
  BOOST_REQUIRE_EQUAL(applied.size(), 1u);
  BOOST_CHECK_EQUAL(applied[0].first, id);
  BOOST_CHECK_EQUAL(applied[0].second["resolvedComponentVersions"][0]["componentName"], "a.one");
  auto d = get(id);
  BOOST_CHECK_EQUAL(d["targetArn"], thing);
  BOOST_CHECK_EQUAL(d["deploymentName"], "first");
  BOOST_CHECK_EQUAL(d["revisionId"], "1");
  BOOST_CHECK_EQUAL(d["deploymentStatus"], "ACTIVE");
  BOOST_CHECK_EQUAL(d["isLatestForTarget"], true);
  BOOST_CHECK_EQUAL(d["components"]["a.one"], cfg);
  BOOST_CHECK_EQUAL(d["tags"]["team"], "x");
  // AWS's policy defaults filled in.
  BOOST_CHECK_EQUAL(d["deploymentPolicies"]["failureHandlingPolicy"], "ROLLBACK");
  BOOST_CHECK_EQUAL(d["deploymentPolicies"]["componentUpdatePolicy"]["timeoutInSeconds"], 60);
  BOOST_CHECK_EQUAL(d["deploymentPolicies"]["componentUpdatePolicy"]["action"],
                    "NOTIFY_COMPONENTS");
  BOOST_CHECK_EQUAL(d["deploymentPolicies"]["configurationValidationPolicy"]["timeoutInSeconds"],
                    30);
  BOOST_CHECK_EQUAL(effective(id)["coreDeviceExecutionStatus"], "QUEUED");
  // Null members are journaled as absent.
  auto nulls = deploy_ok({{"targetArn", group},
                          {"components",
                           {{"a.one", {{"componentVersion", "1.0.0"},
                                       {"runWith", nullptr},
                                       {"configurationUpdate", nullptr}}}}}});
  BOOST_CHECK_EQUAL(get(nulls)["components"]["a.one"], spec("1.0.0"));
  // Journaled: the store reopened has it.
  open();
  BOOST_CHECK_EQUAL(get(id)["deploymentName"], "first");
  BOOST_CHECK_EQUAL(call("GET", "/greengrass/v2/deployments/nope").status, 404);
}

BOOST_FIXTURE_TEST_CASE(bad_requests_name_their_field, fixture) {
  auto field = [&](json body) {
    auto r = deploy(std::move(body));
    BOOST_CHECK_EQUAL(r.status, 400);
    auto j = json::parse(r.body);
    return j.contains("fields") ? j["fields"][0]["name"].get<std::string>() : type_of(r);
  };
  BOOST_CHECK_EQUAL(field(json::object()), "targetArn");
  BOOST_CHECK_EQUAL(field({{"targetArn", "core-1"}}), "targetArn");
  BOOST_CHECK_EQUAL(field({{"targetArn", thing}, {"components", {{"a", json::object()}}}}),
                    "components/a/componentVersion");
  BOOST_CHECK_EQUAL(field({{"targetArn", thing}, {"components", {{"a", spec("1.x")}}}}),
                    "components/a/componentVersion");
  auto with = [](json extra) {
    json c = spec("1.0.0");
    c.update(extra);
    return json{{"targetArn", thing}, {"components", {{"a", c}}}};
  };
  BOOST_CHECK_EQUAL(field(with({{"configurationUpdate", {{"merge", "[1]"}}}})),
                    "components/a/configurationUpdate/merge");
  BOOST_CHECK_EQUAL(field(with({{"configurationUpdate", {{"merge", "{"}}}})),
                    "components/a/configurationUpdate/merge");
  BOOST_CHECK_EQUAL(field(with({{"configurationUpdate", {{"reset", {"no-slash"}}}}})),
                    "components/a/configurationUpdate/reset");
  BOOST_CHECK_EQUAL(field(with({{"runWith", {{"windowsUser", "x"}}}})),
                    "components/a/runWith/windowsUser");
  BOOST_CHECK_EQUAL(field(with({{"runWith", {{"posixUser", "a:b:c"}}}})),
                    "components/a/runWith/posixUser");
  BOOST_CHECK_EQUAL(field(with({{"bogus", 1}})), "components/a/bogus");
  BOOST_CHECK_EQUAL(field({{"targetArn", thing},
                           {"deploymentPolicies", {{"failureHandlingPolicy", "MAYBE"}}}}),
                    "deploymentPolicies/failureHandlingPolicy");
  BOOST_CHECK_EQUAL(field({{"targetArn", thing},
                           {"deploymentPolicies",
                            {{"componentUpdatePolicy", {{"timeoutInSeconds", 0}}}}}}),
                    "deploymentPolicies/componentUpdatePolicy/timeoutInSeconds");
  BOOST_CHECK_EQUAL(field({{"targetArn", thing}, {"clientToken", "a b"}}), "clientToken");
  BOOST_CHECK_EQUAL(field({{"targetArn", thing}, {"parentTargetArn", thing}}), "parentTargetArn");
  // Another thing, group, region or account: not this core.
  for (auto t : {"arn:aws:iot:us-east-1:123456789012:thing/other",
                 "arn:aws:iot:us-east-1:123456789012:thinggroup/elsewhere",
                 "arn:aws:iot:eu-west-1:123456789012:thing/core-1",
                 "arn:aws:iot:us-east-1:999999999999:thing/core-1"}) {
    auto r = deploy({{"targetArn", t}});
    BOOST_CHECK_EQUAL(r.status, 404);
    BOOST_CHECK_EQUAL(type_of(r), "ResourceNotFoundException");
  }
  BOOST_CHECK_EQUAL(
    call("POST", "/greengrass/v2/deployments", "[1]").status, 400);
  // Routes next to these that are no operation (the fuzzer's find: /greengrass/v2/ read
  // a third segment that was not there).
  for (auto path : {"/greengrass/v2/", "/greengrass/v2", "/greengrass/v2/deployments/a/b/c",
                    "/greengrass/v2/coreDevices/core-1/other"}) {
    auto r = call("GET", path);
    BOOST_CHECK_EQUAL(r.status, 404);
    BOOST_CHECK_EQUAL(type_of(r), "UnknownOperationException");
  }
  // Nothing of these was journaled.
  auto list = call("GET", "/greengrass/v2/deployments?historyFilter=ALL");
  BOOST_CHECK_EQUAL(json::parse(list.body)["deployments"].size(), 0u);
  BOOST_CHECK(applied.empty());
}

BOOST_FIXTURE_TEST_CASE(client_token_retries_answer_the_first_deployment, fixture) {
  json body = {{"targetArn", thing}, {"clientToken", "tok-1"}};
  auto first = deploy_ok(body);
  BOOST_CHECK_EQUAL(deploy_ok(body), first);
  body["deploymentName"] = "other";
  auto reuse = deploy(body);
  BOOST_CHECK_EQUAL(reuse.status, 409);
  BOOST_CHECK_EQUAL(type_of(reuse), "ConflictException");
  BOOST_CHECK_EQUAL(applied.size(), 1u);
}

BOOST_FIXTURE_TEST_CASE(history_supersedes_and_pages, fixture) {
  component("a.one", "1.0.0");
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(deploy_ok({{"targetArn", thing}, {"components", {{"a.one", spec("1.0.0")}}}}));
  auto group_id = deploy_ok({{"targetArn", group}});
  // The older four of the thing are INACTIVE; revisions count per target.
  BOOST_CHECK_EQUAL(get(ids[0])["deploymentStatus"], "INACTIVE");
  BOOST_CHECK_EQUAL(get(ids[0])["isLatestForTarget"], false);
  BOOST_CHECK_EQUAL(get(ids[4])["revisionId"], "5");
  BOOST_CHECK_EQUAL(get(group_id)["revisionId"], "1");
  auto list = [&](const std::string& query) {
    std::vector<std::string> seen;
    std::string next;
    do {
      auto r = call("GET", "/greengrass/v2/deployments?maxResults=2" + query
                             + (next.empty() ? "" : "&nextToken=" + uri_encode(next, false)));
      BOOST_REQUIRE_EQUAL(r.status, 200);
      auto j = json::parse(r.body);
      BOOST_CHECK_LE(j["deployments"].size(), 2u);
      for (auto& d : j["deployments"])
        seen.push_back(d["deploymentId"]);
      next = j.value("nextToken", "");
    } while (!next.empty());
    return seen;
  };
  BOOST_CHECK_EQUAL(list("").size(), 2u); // LATEST_ONLY by default: one per target
  auto all = list("&historyFilter=ALL");
  BOOST_REQUIRE_EQUAL(all.size(), 6u);
  BOOST_CHECK_EQUAL(all[0], group_id); // newest first
  BOOST_CHECK_EQUAL(all[5], ids[0]);
  BOOST_CHECK_EQUAL(list("&historyFilter=ALL&targetArn=" + uri_encode(group, false)).size(), 1u);
  BOOST_CHECK_EQUAL(call("GET", "/greengrass/v2/deployments?historyFilter=SOME").status, 400);
  BOOST_CHECK_EQUAL(call("GET", "/greengrass/v2/deployments?nextToken=%21").status, 400);
}

BOOST_FIXTURE_TEST_CASE(resolution_failures_fail_the_deployment_with_the_reason, fixture) {
  // A component not stored.
  auto missing = deploy_ok({{"targetArn", thing}, {"components", {{"no.such", spec("1.0.0")}}}});
  BOOST_CHECK_EQUAL(get(missing)["deploymentStatus"], "FAILED");
  auto e = effective(missing);
  BOOST_CHECK_EQUAL(e["coreDeviceExecutionStatus"], "FAILED");
  BOOST_CHECK_NE(e["reason"].get<std::string>().find("no.such"), std::string::npos);
  // A DELETED version.
  component("b.two", "1.0.0");
  BOOST_REQUIRE_EQUAL(service
                        ->operator_call("SetVendorGuidance", service->version_arn("b.two", "1.0.0"),
                                        "", "DELETED", "recalled")
                        .status,
                      200);
  auto deleted = deploy_ok({{"targetArn", thing}, {"components", {{"b.two", spec("1.0.0")}}}});
  BOOST_CHECK_EQUAL(get(deleted)["deploymentStatus"], "FAILED");
  BOOST_CHECK(applied.empty());
  // The group keeps c@1.0.0; the thing asking for c@2.0.0 clashes, naming both.
  component("c.three", "1.0.0");
  component("c.three", "2.0.0");
  auto g = deploy_ok({{"targetArn", group}, {"components", {{"c.three", spec("1.0.0")}}}});
  BOOST_CHECK_EQUAL(get(g)["deploymentStatus"], "ACTIVE");
  BOOST_REQUIRE_EQUAL(applied.size(), 1u);
  auto clash = deploy_ok({{"targetArn", thing}, {"components", {{"c.three", spec("2.0.0")}}}});
  auto reason = effective(clash)["reason"].get<std::string>();
  BOOST_CHECK_EQUAL(get(clash)["deploymentStatus"], "FAILED");
  BOOST_CHECK_NE(reason.find("thinggroup/site"), std::string::npos);
  BOOST_CHECK_NE(reason.find("thing/core-1"), std::string::npos);
  // A dependency the thing's component brings, with the group's kept too.
  component("d.four", "1.0.0",
            "ComponentDependencies:\n  c.three:\n    VersionRequirement: '>=1.0.0 <2.0.0'\n");
  auto fine = deploy_ok({{"targetArn", thing}, {"components", {{"d.four", spec("1.0.0")}}}});
  BOOST_CHECK_EQUAL(get(fine)["deploymentStatus"], "ACTIVE");
  BOOST_REQUIRE_EQUAL(applied.size(), 2u);
  std::set<std::string> names;
  for (auto& v : applied[1].second["resolvedComponentVersions"])
    names.insert(v["componentName"].get<std::string>() + "@" + v["componentVersion"].get<std::string>());
  BOOST_CHECK((names == std::set<std::string>{"c.three@1.0.0", "d.four@1.0.0"}));
}

namespace {

// Whether `s` is valid UTF-8 (nlohmann's dump refuses it otherwise).
bool valid_utf8(const std::string& s) {
  try {
    (void) json(s).dump();
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

bool ends_with(const std::string& s, std::string_view tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

} // namespace

// A failure reason is at most 1024 bytes, cut between UTF-8 sequences (a split one is no
// UTF-8: the answer carried U+FFFD for it, 1026 bytes), its trailing notes (the
// rollback's, what a start decided) kept whole.
BOOST_FIXTURE_TEST_CASE(reasons_are_cut_between_utf8_sequences_keeping_their_notes, fixture) {
  // "x" then 2-byte characters: byte 1024 falls inside one.
  std::string long_text = "x";
  for (int i = 0; i < 800; ++i)
    long_text += "\xc3\xa9"; // é
  BOOST_REQUIRE(valid_utf8(long_text));
  BOOST_CHECK_EQUAL(utf8_prefix(long_text, 1024).size(), 1023u);
  BOOST_CHECK(utf8_prefix("\xe2\x82\xac", 2).empty()); // € cut: nothing of it
  BOOST_CHECK_EQUAL(clip_reason("short", rollback_note), "short" + std::string{rollback_note});
  auto clipped = clip_reason(long_text, rollback_note);
  BOOST_CHECK_LE(clipped.size(), max_reason_bytes);
  BOOST_CHECK(valid_utf8(clipped));
  BOOST_CHECK(ends_with(clipped, std::string{"..."} + std::string{rollback_note}));
  BOOST_CHECK_EQUAL(append_note("", "decided"), "decided");
  BOOST_CHECK_EQUAL(append_note("failed" + std::string{rollback_note}, "decided"),
                    "failed" + std::string{rollback_note} + "; decided");
  // Journaled whole before (a build that did not cut it): answered cut, still JSON.
  auto old = deploy_ok({{"targetArn", thing}});
  auto done = store->set_deployment_state(old, {"ACTIVE"}, "FAILED", "FAILED", long_text, 2);
  BOOST_REQUIRE(done && *done);
  auto r = call("GET", "/greengrass/v2/coreDevices/core-1/effectiveDeployments");
  BOOST_REQUIRE_EQUAL(r.status, 200);
  auto reason = effective(old)["reason"].get<std::string>();
  BOOST_CHECK_EQUAL(reason.size(), 1023u);
  BOOST_CHECK(valid_utf8(reason));
  // A decided note appended at a start (forget_rollback) after a long reason that ends
  // with the rollback's note: both notes whole at the end.
  auto rolled = deploy_ok({{"targetArn", thing}});
  BOOST_REQUIRE(!store->put_rollback(rolled, "{}"));
  done = store->set_deployment_state(rolled, {"ACTIVE"}, "FAILED", "FAILED",
                                     clip_reason(long_text, rollback_note), 3, true);
  BOOST_REQUIRE(done && *done);
  const std::string decided = "the change of the group was undone";
  BOOST_REQUIRE(!store->forget_rollback(rolled, decided));
  reason = effective(rolled)["reason"].get<std::string>();
  BOOST_CHECK_LE(reason.size(), max_reason_bytes);
  BOOST_CHECK(valid_utf8(reason));
  BOOST_CHECK(ends_with(reason, std::string{rollback_note} + "; " + decided));
  BOOST_CHECK_EQUAL(reason.substr(0, 3), "x\xc3\xa9");
}

BOOST_FIXTURE_TEST_CASE(cancel_and_delete_rules, fixture) {
  auto id = deploy_ok({{"targetArn", thing}});
  auto del = call("DELETE", "/greengrass/v2/deployments/" + id);
  BOOST_CHECK_EQUAL(del.status, 409);
  BOOST_CHECK_EQUAL(type_of(del), "ConflictException");
  auto cancel = call("POST", "/greengrass/v2/deployments/" + id + "/cancel");
  BOOST_REQUIRE_EQUAL(cancel.status, 200);
  BOOST_CHECK_EQUAL(json::parse(cancel.body)["message"], "SUCCESS");
  BOOST_CHECK_EQUAL(get(id)["deploymentStatus"], "CANCELED");
  BOOST_CHECK_EQUAL(effective(id)["coreDeviceExecutionStatus"], "CANCELED");
  BOOST_CHECK_EQUAL(call("POST", "/greengrass/v2/deployments/" + id + "/cancel").status, 409);
  BOOST_CHECK_EQUAL(call("DELETE", "/greengrass/v2/deployments/" + id).status, 204);
  BOOST_CHECK_EQUAL(call("GET", "/greengrass/v2/deployments/" + id).status, 404);
  BOOST_CHECK_EQUAL(call("DELETE", "/greengrass/v2/deployments/" + id).status, 404);
  BOOST_CHECK_EQUAL(call("POST", "/greengrass/v2/deployments/" + id + "/cancel").status, 404);
  // A superseded (INACTIVE) deployment can be deleted at once.
  auto old = deploy_ok({{"targetArn", thing}});
  deploy_ok({{"targetArn", thing}});
  BOOST_CHECK_EQUAL(call("DELETE", "/greengrass/v2/deployments/" + old).status, 204);
}

// DeleteDeployment hides a deployment from the API but does not change what the core runs
// (issue 15): the deleted thing deployment's components stay in the set a later group
// deployment resolves, and a start still finds its record.
BOOST_FIXTURE_TEST_CASE(a_deleted_deployment_keeps_its_components_on_the_core, fixture) {
  component("a.one", "1.0.0");
  component("b.two", "1.0.0");
  component("c.three", "1.0.0");
  auto first = deploy_ok({{"targetArn", thing}, {"components", {{"a.one", spec("1.0.0")}}}});
  auto second = deploy_ok({{"targetArn", thing},
                           {"components", {{"a.one", spec("1.0.0")}, {"b.two", spec("1.0.0")}}}});
  for (const auto& id : {first, second}) { // as the plugin settles them
    auto done = store->set_deployment_state(id, {}, id == second ? "COMPLETED" : "INACTIVE",
                                            "SUCCEEDED", "", 2);
    BOOST_REQUIRE(done && *done);
  }
  auto arn = "arn:aws:greengrass:us-east-1:123456789012:deployments:" + second;
  BOOST_REQUIRE_EQUAL(call("POST", "/tags/" + arn, json{{"tags", {{"k", "v"}}}}.dump()).status,
                      200);
  BOOST_REQUIRE_EQUAL(call("DELETE", "/greengrass/v2/deployments/" + second).status, 204);
  // Gone from the API: Get, List (ALL), ListEffective, its tags, a second delete, a cancel.
  BOOST_CHECK_EQUAL(call("GET", "/greengrass/v2/deployments/" + second).status, 404);
  auto listed = json::parse(
    call("GET", "/greengrass/v2/deployments?historyFilter=ALL").body)["deployments"];
  BOOST_REQUIRE_EQUAL(listed.size(), 1u);
  BOOST_CHECK_EQUAL(listed[0]["deploymentId"], first);
  BOOST_CHECK_EQUAL(listed[0]["isLatestForTarget"], true); // the latest one shown
  auto eff = json::parse(
    call("GET", "/greengrass/v2/coreDevices/core-1/effectiveDeployments").body);
  for (auto& e : eff["effectiveDeployments"])
    BOOST_CHECK_NE(e["deploymentId"], second);
  BOOST_CHECK_EQUAL(call("GET", "/tags/" + arn).status, 404);
  BOOST_CHECK_EQUAL(call("POST", "/tags/" + arn, json{{"tags", {{"k", "w"}}}}.dump()).status,
                    404);
  BOOST_CHECK_EQUAL(call("DELETE", "/greengrass/v2/deployments/" + second).status, 404);
  BOOST_CHECK_EQUAL(call("POST", "/greengrass/v2/deployments/" + second + "/cancel").status, 404);
  // Kept for the core, across a reopen: its request, its state, no tags.
  open();
  auto rec = store->deployment(second);
  BOOST_REQUIRE(rec && *rec);
  BOOST_CHECK_NE((*rec)->deleted_ms, 0);
  BOOST_CHECK_EQUAL((*rec)->status, "COMPLETED");
  BOOST_CHECK_EQUAL((*rec)->tags, "{}");
  // A group deployment keeps what the deleted thing deployment made run.
  auto g = deploy_ok({{"targetArn", group}, {"components", {{"c.three", spec("1.0.0")}}}});
  BOOST_REQUIRE(!applied.empty());
  BOOST_CHECK_EQUAL(applied.back().first, g);
  std::set<std::string> names;
  for (auto& v : applied.back().second["resolvedComponentVersions"])
    names.insert(v["componentName"].get<std::string>());
  BOOST_CHECK((names == std::set<std::string>{"a.one", "b.two", "c.three"}));
}

namespace {

// What a resolved set names ("a.one", ...).
std::set<std::string> names_in(const json& resolved) {
  std::set<std::string> out;
  for (const auto& v : resolved["resolvedComponentVersions"])
    out.insert(v["componentName"].get<std::string>());
  return out;
}

// Whether component_store::start_deployment() began `id`'s run (false on an error too).
bool started(component_store& db, const std::string& id, int64_t now_ms) {
  auto r = db.start_deployment(id, now_ms);
  BOOST_REQUIRE(r);
  return *r;
}

} // namespace

// A target whose newest deployment FAILED, or was canceled before it ran, keeps what its
// last applied deployment put on the core (as Greengrass keeps a target's last successful
// deployment): another target's deployment resolves with those components, not without
// them. Deleted, that fallback stays (and stays the target's) until a newer one succeeds.
BOOST_FIXTURE_TEST_CASE(a_target_whose_newest_deployment_failed_keeps_its_last_applied_set,
                        fixture) {
  for (const char* name : {"a.one", "b.two", "c.three", "d.four", "e.five"})
    component(name, "1.0.0");
  auto first = deploy_ok({{"targetArn", thing}, {"components", {{"a.one", spec("1.0.0")}}}});
  auto done = store->set_deployment_state(first, {"ACTIVE"}, "COMPLETED", "SUCCEEDED", "", 2);
  BOOST_REQUIRE(done && *done);
  // The thing's next deployment ran and failed (rolled back): `first` is INACTIVE now.
  auto failed = deploy_ok({{"targetArn", thing}, {"components", {{"b.two", spec("1.0.0")}}}});
  BOOST_REQUIRE(started(*store, failed, 3));
  done = store->set_deployment_state(failed, {"ACTIVE"}, "FAILED", "FAILED", "install failed", 4);
  BOOST_REQUIRE(done && *done);
  BOOST_REQUIRE_EQUAL(get(first)["deploymentStatus"], "INACTIVE");
  auto g = deploy_ok({{"targetArn", group}, {"components", {{"c.three", spec("1.0.0")}}}});
  BOOST_REQUIRE_EQUAL(applied.back().first, g);
  BOOST_CHECK((names_in(applied.back().second) == std::set<std::string>{"a.one", "c.three"}));
  done = store->set_deployment_state(g, {"ACTIVE"}, "COMPLETED", "SUCCEEDED", "", 5);
  BOOST_REQUIRE(done && *done);
  // Canceled before it ran: the same.
  auto canceled = deploy_ok({{"targetArn", thing}, {"components", {{"b.two", spec("1.0.0")}}}});
  BOOST_REQUIRE_EQUAL(call("POST", "/greengrass/v2/deployments/" + canceled + "/cancel").status,
                      200);
  BOOST_CHECK(!started(*store, canceled, 6)); // it must not run now
  auto g2 = deploy_ok({{"targetArn", group}, {"components", {{"d.four", spec("1.0.0")}}}});
  BOOST_REQUIRE_EQUAL(applied.back().first, g2);
  BOOST_CHECK((names_in(applied.back().second) == std::set<std::string>{"a.one", "d.four"}));
  auto all = store->deployments();
  BOOST_REQUIRE(all);
  auto eff = effective_by_target(*all);
  BOOST_REQUIRE(eff.contains(thing) && eff.contains(group));
  BOOST_CHECK_EQUAL(eff[thing]->id, first);
  BOOST_CHECK_EQUAL(eff[group]->id, g2); // ACTIVE: applying
  // Deleted, the fallback stays the thing's, past a deployment that fails at resolution.
  BOOST_REQUIRE_EQUAL(call("DELETE", "/greengrass/v2/deployments/" + first).status, 204);
  BOOST_REQUIRE(store->deployment(first)->has_value());
  auto unresolved = deploy_ok({{"targetArn", thing}, {"components", {{"no.such", spec("1.0.0")}}}});
  BOOST_REQUIRE_EQUAL(get(unresolved)["deploymentStatus"], "FAILED");
  BOOST_REQUIRE(store->deployment(first)->has_value());
  auto g3 = deploy_ok({{"targetArn", group}, {"components", {{"e.five", spec("1.0.0")}}}});
  BOOST_REQUIRE_EQUAL(applied.back().first, g3);
  BOOST_CHECK((names_in(applied.back().second) == std::set<std::string>{"a.one", "e.five"}));
  // Canceled while it applied, its run completed: the core runs its set, the thing keeps it
  // (a cancel changes nothing on a core that has the deployment); rolled back: it does not.
  auto canceled_run = deploy_ok({{"targetArn", thing}, {"components", {{"b.two", spec("1.0.0")}}}});
  BOOST_REQUIRE(started(*store, canceled_run, 8));
  BOOST_REQUIRE_EQUAL(
    call("POST", "/greengrass/v2/deployments/" + canceled_run + "/cancel").status, 200);
  BOOST_REQUIRE(!store->end_canceled_run_as(canceled_run, true, 9));
  BOOST_CHECK_EQUAL(effective(canceled_run)["coreDeviceExecutionStatus"], "SUCCEEDED");
  BOOST_CHECK_EQUAL(get(canceled_run)["deploymentStatus"], "CANCELED");
  auto g4 = deploy_ok({{"targetArn", group}, {"components", {{"e.five", spec("1.0.0")}}}});
  BOOST_REQUIRE_EQUAL(applied.back().first, g4);
  BOOST_CHECK((names_in(applied.back().second) == std::set<std::string>{"b.two", "e.five"}));
  BOOST_REQUIRE(!store->end_canceled_run_as(canceled_run, false, 10));
  auto g5 = deploy_ok({{"targetArn", group}, {"components", {{"e.five", spec("1.0.0")}}}});
  BOOST_REQUIRE_EQUAL(applied.back().first, g5);
  BOOST_CHECK((names_in(applied.back().second) == std::set<std::string>{"a.one", "e.five"}));
}

// A run that FAILED with failureHandlingPolicy DO_NOTHING left the core as it stood, so its
// target keeps that deployment's set, not the last applied one (Greengrass records a
// DO_NOTHING deployment's root components as its target's): another target's deployment
// resolves with them. One that failed before its run (at resolution) changed nothing and
// does not count; nor does one that failed with ROLLBACK. Deleted and replaced by a newer
// one that fails, the DO_NOTHING one stays the target's fallback.
BOOST_FIXTURE_TEST_CASE(a_target_whose_do_nothing_deployment_failed_keeps_what_it_left, fixture) {
  for (const char* name : {"a.one", "b.two", "c.three", "d.four"})
    component(name, "1.0.0");
  json do_nothing = {{"failureHandlingPolicy", "DO_NOTHING"}};
  auto first = deploy_ok({{"targetArn", thing}, {"components", {{"a.one", spec("1.0.0")}}}});
  BOOST_REQUIRE(started(*store, first, 1));
  auto done = store->set_deployment_state(first, {"ACTIVE"}, "COMPLETED", "SUCCEEDED", "", 2);
  BOOST_REQUIRE(done && *done);
  auto failed = deploy_ok({{"targetArn", thing},
                           {"components", {{"b.two", spec("1.0.0")}}},
                           {"deploymentPolicies", do_nothing}});
  BOOST_REQUIRE(started(*store, failed, 3));
  done = store->set_deployment_state(failed, {"ACTIVE"}, "FAILED", "FAILED", "install failed", 4);
  BOOST_REQUIRE(done && *done);
  auto g = deploy_ok({{"targetArn", group}, {"components", {{"c.three", spec("1.0.0")}}}});
  BOOST_REQUIRE_EQUAL(applied.back().first, g);
  BOOST_CHECK((names_in(applied.back().second) == std::set<std::string>{"b.two", "c.three"}));
  done = store->set_deployment_state(g, {"ACTIVE"}, "COMPLETED", "SUCCEEDED", "", 5);
  BOOST_REQUIRE(done && *done);
  auto all = store->deployments();
  BOOST_REQUIRE(all);
  BOOST_CHECK_EQUAL(effective_by_target(*all)[thing]->id, failed);
  // Failing at resolution (never ran), even with DO_NOTHING: the thing keeps `failed`'s.
  auto unresolved = deploy_ok({{"targetArn", thing},
                               {"components", {{"no.such", spec("1.0.0")}}},
                               {"deploymentPolicies", do_nothing}});
  BOOST_REQUIRE_EQUAL(get(unresolved)["deploymentStatus"], "FAILED");
  // Deleted (INACTIVE now), `failed` is still the thing's fallback: its row stays.
  BOOST_REQUIRE_EQUAL(call("DELETE", "/greengrass/v2/deployments/" + failed).status, 204);
  BOOST_REQUIRE(store->deployment(failed)->has_value());
  auto g2 = deploy_ok({{"targetArn", group}, {"components", {{"d.four", spec("1.0.0")}}}});
  BOOST_REQUIRE_EQUAL(applied.back().first, g2);
  BOOST_CHECK((names_in(applied.back().second) == std::set<std::string>{"b.two", "d.four"}));
  done = store->set_deployment_state(g2, {"ACTIVE"}, "COMPLETED", "SUCCEEDED", "", 6);
  BOOST_REQUIRE(done && *done);
  // A ROLLBACK one that ran and failed: the thing keeps `failed`'s still.
  auto rolled = deploy_ok({{"targetArn", thing}, {"components", {{"a.one", spec("1.0.0")}}}});
  BOOST_REQUIRE(started(*store, rolled, 7));
  done = store->set_deployment_state(rolled, {"ACTIVE"}, "FAILED", "FAILED", "install failed", 8);
  BOOST_REQUIRE(done && *done);
  BOOST_REQUIRE(store->deployment(failed)->has_value());
  auto g3 = deploy_ok({{"targetArn", group}, {"components", {{"d.four", spec("1.0.0")}}}});
  BOOST_REQUIRE_EQUAL(applied.back().first, g3);
  BOOST_CHECK((names_in(applied.back().second) == std::set<std::string>{"b.two", "d.four"}));
}

// A deployment replaced by a newer one to its target while it ran ends with its run's
// outcome, SUCCEEDED or FAILED (its reason saying it was replaced), not IN_PROGRESS; one
// replaced before its run began ends CANCELED; and at start, replaced runs a restart cut
// short (or never began) end CANCELED. Neither touches a deployment that is not INACTIVE.
BOOST_FIXTURE_TEST_CASE(a_replaced_deployment_ends_its_execution, fixture) {
  component("a.one", "1.0.0");
  auto one = deploy_ok({{"targetArn", thing}, {"components", {{"a.one", spec("1.0.0")}}}});
  BOOST_REQUIRE(started(*store, one, 1));
  auto two = deploy_ok({{"targetArn", thing}, {"components", {{"a.one", spec("1.0.0")}}}});
  BOOST_REQUIRE_EQUAL(get(one)["deploymentStatus"], "INACTIVE");
  BOOST_REQUIRE_EQUAL(effective(one)["coreDeviceExecutionStatus"], "IN_PROGRESS");
  // `two` is ACTIVE: not ended as replaced.
  auto r = store->end_replaced_run(two, false, false, "x", 2);
  BOOST_REQUIRE(r);
  BOOST_CHECK(!*r);
  BOOST_CHECK_EQUAL(effective(two)["coreDeviceExecutionStatus"], "QUEUED");
  // `one`'s run completes.
  r = store->end_replaced_run(one, true, true, "replaced while it applied", 3);
  BOOST_REQUIRE(r && *r);
  BOOST_CHECK_EQUAL(effective(one)["coreDeviceExecutionStatus"], "SUCCEEDED");
  BOOST_CHECK_EQUAL(effective(one)["reason"], "replaced while it applied");
  BOOST_CHECK_EQUAL(get(one)["deploymentStatus"], "INACTIVE");
  // Once ended, it stays so.
  r = store->end_replaced_run(one, true, false, "again", 4);
  BOOST_REQUIRE(r);
  BOOST_CHECK(!*r);
  BOOST_CHECK_EQUAL(effective(one)["coreDeviceExecutionStatus"], "SUCCEEDED");
  // A run of `one` cannot end as not run once it ended.
  r = store->end_replaced_run(one, false, false, "x", 4);
  BOOST_REQUIRE(r);
  BOOST_CHECK(!*r);
  // `two` replaced before its run: CANCELED.
  auto three = deploy_ok({{"targetArn", thing}, {"components", {{"a.one", spec("1.0.0")}}}});
  r = store->end_replaced_run(two, false, false, "replaced before its run", 5);
  BOOST_REQUIRE(r && *r);
  BOOST_CHECK_EQUAL(effective(two)["coreDeviceExecutionStatus"], "CANCELED");
  // At start: `three`, replaced while IN_PROGRESS by `four`, ends CANCELED; `four` (ACTIVE)
  // is left to its resume.
  BOOST_REQUIRE(started(*store, three, 6));
  auto four = deploy_ok({{"targetArn", thing}, {"components", {{"a.one", spec("1.0.0")}}}});
  auto n = store->end_replaced_runs("cut short", 7);
  BOOST_REQUIRE(n);
  BOOST_CHECK_EQUAL(*n, 1u);
  BOOST_CHECK_EQUAL(effective(three)["coreDeviceExecutionStatus"], "CANCELED");
  BOOST_CHECK_EQUAL(effective(three)["reason"], "cut short");
  BOOST_CHECK_EQUAL(effective(four)["coreDeviceExecutionStatus"], "QUEUED");
  BOOST_CHECK_EQUAL(effective(one)["coreDeviceExecutionStatus"], "SUCCEEDED");
  // A run a restart cut short, replaced before its resume began: CANCELED as not run.
  auto five = deploy_ok({{"targetArn", group}});
  BOOST_REQUIRE(started(*store, five, 8));
  deploy_ok({{"targetArn", group}});
  r = store->end_replaced_run(five, false, false, "replaced before its resume", 9);
  BOOST_REQUIRE(r && *r);
  BOOST_CHECK_EQUAL(effective(five)["coreDeviceExecutionStatus"], "CANCELED");
}

// What a start finds (core_journal_state_of): the deployment applied again is the newest
// any target keeps; what settled last is the latest run that ended, not a deployment
// canceled (or refused) before it ran, which changed nothing on the core.
BOOST_FIXTURE_TEST_CASE(a_deployment_canceled_before_it_ran_is_not_what_settled_last, fixture) {
  auto g = deploy_ok({{"targetArn", group}});
  BOOST_REQUIRE(started(*store, g, 4));
  auto done = store->set_deployment_state(g, {"ACTIVE"}, "COMPLETED", "SUCCEEDED", "", 5);
  BOOST_REQUIRE(done && *done);
  auto t = deploy_ok({{"targetArn", thing}});
  BOOST_REQUIRE_EQUAL(call("POST", "/greengrass/v2/deployments/" + t + "/cancel").status, 200);
  auto all = store->deployments();
  BOOST_REQUIRE(all);
  BOOST_REQUIRE_GT(store->deployment(t)->value().modified_ms, 5); // canceled after g settled
  auto state = core_journal_state_of(*all);
  BOOST_REQUIRE(state.current && state.settled);
  BOOST_CHECK_EQUAL(state.current->id, g);
  BOOST_CHECK_EQUAL(state.settled->id, g);
  // One whose run began and was canceled meanwhile counts (its run went on).
  auto ran = deploy_ok({{"targetArn", thing}});
  BOOST_REQUIRE(started(*store, ran, 6));
  BOOST_REQUIRE_EQUAL(call("POST", "/greengrass/v2/deployments/" + ran + "/cancel").status, 200);
  all = store->deployments();
  BOOST_REQUIRE(all);
  state = core_journal_state_of(*all);
  BOOST_REQUIRE(state.settled);
  BOOST_CHECK_EQUAL(state.settled->id, ran);
  BOOST_CHECK_EQUAL(state.current->id, g);
}

// A deleted row goes once the core no longer runs it (issue 15): at once when INACTIVE,
// else when a newer deployment to its target makes it INACTIVE; a rollback journal row
// keeps it, and so does being its target's newest SUCCEEDED one (the set the target falls
// back to while newer ones fail). Revisions keep counting.
BOOST_FIXTURE_TEST_CASE(deleted_deployments_go_once_the_core_no_longer_runs_them, fixture) {
  auto exists = [&](const std::string& id) {
    auto rec = store->deployment(id);
    BOOST_REQUIRE(rec);
    return rec->has_value();
  };
  auto old = deploy_ok({{"targetArn", thing}});
  auto current = deploy_ok({{"targetArn", thing}, {"tags", {{"site", "lab"}}}});
  BOOST_REQUIRE_EQUAL(get(old)["deploymentStatus"], "INACTIVE");
  BOOST_REQUIRE_EQUAL(call("DELETE", "/greengrass/v2/deployments/" + old).status, 204);
  BOOST_CHECK(!exists(old));
  // The current one is kept, marked, without CreateDeployment's tags in its request.
  auto done = store->set_deployment_state(current, {"ACTIVE"}, "COMPLETED", "SUCCEEDED", "", 2);
  BOOST_REQUIRE(done && *done);
  BOOST_REQUIRE_EQUAL(call("DELETE", "/greengrass/v2/deployments/" + current).status, 204);
  auto rec = store->deployment(current);
  BOOST_REQUIRE(rec && *rec);
  BOOST_CHECK_NE((*rec)->deleted_ms, 0);
  auto request = json::parse((*rec)->request);
  BOOST_CHECK(!request.contains("tags"));
  BOOST_CHECK(request.contains("deploymentPolicies"));
  // Superseded, but the thing's newest SUCCEEDED one: kept (what the thing falls back to
  // should `next` fail); the revision counts on past it.
  auto next = deploy_ok({{"targetArn", thing}});
  BOOST_CHECK(exists(current));
  BOOST_CHECK_EQUAL(store->deployment(current)->value().status, "INACTIVE");
  BOOST_CHECK_EQUAL(get(next)["revisionId"], "3");
  // One with a rollback journal row (a change of the group left undecided) stays, deleted
  // and superseded, until the row goes.
  BOOST_REQUIRE(!store->put_rollback(next, "{}"));
  auto failed = store->set_deployment_state(next, {"ACTIVE"}, "FAILED", "FAILED", "x", 3, true);
  BOOST_REQUIRE(failed && *failed);
  BOOST_REQUIRE_EQUAL(call("DELETE", "/greengrass/v2/deployments/" + next).status, 204);
  auto after = deploy_ok({{"targetArn", thing}});
  BOOST_CHECK(exists(next));
  BOOST_CHECK_EQUAL(store->deployment(next)->value().status, "INACTIVE");
  BOOST_REQUIRE(!store->forget_rollback(next));
  auto cancel = call("POST", "/greengrass/v2/deployments/" + after + "/cancel");
  BOOST_REQUIRE_EQUAL(cancel.status, 200);
  auto last = deploy_ok({{"targetArn", thing}});
  BOOST_CHECK(!exists(next));
  BOOST_CHECK(exists(after)); // CANCELED, not deleted: listed as ever
  BOOST_CHECK_EQUAL(get(last)["revisionId"], "5");
  BOOST_CHECK(exists(current)); // still the thing's fallback: nothing newer succeeded
  // A newer one SUCCEEDED: the next deployment to the thing purges the deleted fallback.
  auto applied_now = store->set_deployment_state(last, {"ACTIVE"}, "COMPLETED", "SUCCEEDED", "", 4);
  BOOST_REQUIRE(applied_now && *applied_now);
  deploy_ok({{"targetArn", thing}});
  BOOST_CHECK(!exists(current));
  BOOST_CHECK(exists(last));
}

// A CreateDeployment retried with a deleted deployment's clientToken creates a new one
// (the token went with the deployment); other tokens keep their answers.
BOOST_FIXTURE_TEST_CASE(a_deleted_deployments_client_token_goes_with_it, fixture) {
  json body = {{"targetArn", thing}, {"clientToken", "tok-del"}};
  auto first = deploy_ok(body);
  json other = {{"targetArn", group}, {"clientToken", "tok-keep"}};
  auto kept = deploy_ok(other);
  BOOST_REQUIRE_EQUAL(call("POST", "/greengrass/v2/deployments/" + first + "/cancel").status, 200);
  BOOST_REQUIRE_EQUAL(call("DELETE", "/greengrass/v2/deployments/" + first).status, 204);
  auto again = deploy_ok(body);
  BOOST_CHECK_NE(again, first);
  BOOST_CHECK_EQUAL(get(again)["deploymentStatus"], "ACTIVE");
  BOOST_CHECK_EQUAL(deploy_ok(body), again); // the token now names the new one
  BOOST_CHECK_EQUAL(deploy_ok(other), kept);
}

BOOST_FIXTURE_TEST_CASE(core_device_operations, fixture) {
  auto r = call("GET", "/greengrass/v2/coreDevices/core-1");
  BOOST_REQUIRE_EQUAL(r.status, 200);
  auto j = json::parse(r.body);
  BOOST_CHECK_EQUAL(j["coreDeviceThingName"], "core-1");
  BOOST_CHECK_EQUAL(j["status"], "HEALTHY");
  BOOST_CHECK_EQUAL(j["platform"], "linux");
  BOOST_CHECK_EQUAL(j["architecture"], "amd64");
  BOOST_CHECK_EQUAL(j["coreVersion"], "0.1.0");
  for (auto path : {"/greengrass/v2/coreDevices/other",
                    "/greengrass/v2/coreDevices/other/effectiveDeployments",
                    "/greengrass/v2/coreDevices/other/installedComponents"}) {
    auto nf = call("GET", path);
    BOOST_CHECK_EQUAL(nf.status, 404);
    BOOST_CHECK_EQUAL(type_of(nf), "ResourceNotFoundException");
  }
  auto count = [&](const std::string& query) {
    auto l = call("GET", "/greengrass/v2/coreDevices" + query);
    BOOST_REQUIRE_EQUAL(l.status, 200);
    return json::parse(l.body)["coreDevices"].size();
  };
  BOOST_CHECK_EQUAL(count(""), 1u);
  BOOST_CHECK_EQUAL(count("?thingGroupArn=" + uri_encode(group, false)), 1u);
  BOOST_CHECK_EQUAL(count("?thingGroupArn=" + uri_encode(
                            "arn:aws:iot:us-east-1:123456789012:thinggroup/x", false)),
                    0u);
  BOOST_CHECK_EQUAL(count("?status=UNHEALTHY"), 0u);
  // Installed components as the applier reports them; a BROKEN one makes the core
  // UNHEALTHY.
  installed = json::array({{{"componentName", "a"}, {"componentVersion", "1.0.0"},
                            {"lifecycleState", "RUNNING"}, {"isRoot", true}},
                           {{"componentName", "b"}, {"componentVersion", "1.0.0"},
                            {"lifecycleState", "BROKEN"}, {"isRoot", false}}});
  auto ic = call("GET", "/greengrass/v2/coreDevices/core-1/installedComponents");
  BOOST_REQUIRE_EQUAL(ic.status, 200);
  BOOST_CHECK_EQUAL(json::parse(ic.body)["installedComponents"].size(), 2u);
  auto root = call("GET", "/greengrass/v2/coreDevices/core-1/installedComponents?topologyFilter=ROOT");
  BOOST_CHECK_EQUAL(json::parse(root.body)["installedComponents"].size(), 1u);
  BOOST_CHECK_EQUAL(count("?status=UNHEALTHY"), 1u);
  BOOST_CHECK_EQUAL(
    json::parse(call("GET", "/greengrass/v2/coreDevices/core-1").body)["status"], "UNHEALTHY");
}

// A component's lifecycleStateDetails are at most AWS's 255 bytes, cut between UTF-8
// sequences (reason.hpp): details whose 255th byte is inside a 3-byte character (what a
// plugin's ignored configuration keys or an error of the kernel can make them) answer the
// 254 bytes before it, valid UTF-8, not a split character (which the writer would answer as
// U+FFFD, past the limit).
BOOST_FIXTURE_TEST_CASE(installed_details_are_cut_between_utf8_sequences, fixture) {
  std::string details = std::string(253, 'k');
  for (int i = 0; i < 20; ++i)
    details += "\xe2\x82\xac"; // €: bytes 254..256 are the first one
  installed = json::array({{{"componentName", "a"}, {"componentVersion", "1.0.0"},
                            {"lifecycleState", "RUNNING"}, {"isRoot", true},
                            {"lifecycleStateDetails", details}},
                           {{"componentName", "b"}, {"componentVersion", "1.0.0"},
                            {"lifecycleState", "RUNNING"}, {"isRoot", true},
                            {"lifecycleStateDetails", "short \xe2\x82\xac"}}});
  auto ic = call("GET", "/greengrass/v2/coreDevices/core-1/installedComponents");
  BOOST_REQUIRE_EQUAL(ic.status, 200);
  auto items = json::parse(ic.body)["installedComponents"];
  BOOST_REQUIRE_EQUAL(items.size(), 2u);
  auto cut = items[0]["lifecycleStateDetails"].get<std::string>();
  BOOST_CHECK_EQUAL(cut.size(), 253u);
  BOOST_CHECK_EQUAL(cut, details.substr(0, 253));
  BOOST_CHECK_EQUAL(items[1]["lifecycleStateDetails"], "short \xe2\x82\xac");
  // One more byte of room and the first € is whole.
  installed[0]["lifecycleStateDetails"] = std::string(252, 'k') + details.substr(253);
  cut = json::parse(call("GET", "/greengrass/v2/coreDevices/core-1/installedComponents").body)
          ["installedComponents"][0]["lifecycleStateDetails"];
  BOOST_CHECK_EQUAL(cut.size(), 255u);
  BOOST_CHECK_EQUAL(cut, std::string(252, 'k') + "\xe2\x82\xac");
}

BOOST_FIXTURE_TEST_CASE(installed_components_are_journaled_across_a_reopen, fixture) {
  // The runner's set as the plugin writes it (schema 4): replaced whole, read back by name
  // after the store is reopened (a restart of groved), its plan text byte for byte.
  auto plan = json{{"root", true}, {"configuration", {{"Message", "m3"}, {"Other", "o2"}}}}.dump();
  BOOST_REQUIRE(!store->put_installed({{"e2e.Service", "1.0.0", "RUNNING", "", 1000, plan},
                                       {"e2e.Crash", "1.0.0", "BROKEN", "run exited with code 1",
                                        2000, "{}"}}));
  BOOST_REQUIRE(!store->put_installed({{"e2e.Service", "1.1.0", "RUNNING", "", 3000, plan},
                                       {"e2e.Lib", "1.0.0", "ERRORED", "run exited with code 2",
                                        4000, "{}"}}));
  open();
  auto rows = store->installed();
  BOOST_REQUIRE(rows);
  BOOST_REQUIRE_EQUAL(rows->size(), 2u); // e2e.Crash went with the second write
  BOOST_CHECK_EQUAL((*rows)[0].name, "e2e.Lib");
  BOOST_CHECK_EQUAL((*rows)[0].state, "ERRORED");
  BOOST_CHECK_EQUAL((*rows)[0].details, "run exited with code 2");
  BOOST_CHECK_EQUAL((*rows)[0].changed_ms, 4000);
  BOOST_CHECK_EQUAL((*rows)[1].name, "e2e.Service");
  BOOST_CHECK_EQUAL((*rows)[1].version, "1.1.0");
  BOOST_CHECK_EQUAL((*rows)[1].plan, plan);
  // An empty set empties the table.
  BOOST_REQUIRE(!store->put_installed({}));
  BOOST_CHECK(store->installed()->empty());
}

BOOST_AUTO_TEST_CASE(configuration_defaults_reset_then_merge) {
  json defaults = {{"a", 1}, {"b", {{"c", "x"}, {"d", {1, 2}}}}, {"e", "keep"}};
  // First deployment: the defaults, then merge.
  auto first = merged_configuration(defaults, nullptr,
                                    {{"merge", R"({"a":2,"b":{"c":"y"},"new":true})"}});
  BOOST_CHECK_EQUAL(first, json::parse(R"({"a":2,"b":{"c":"y","d":[1,2]},"e":"keep","new":true})"));
  // Next: reset /a to its default and /new away (no default), merge replaces an array.
  auto second = merged_configuration(defaults, first,
                                     {{"reset", {"/a", "/new"}}, {"merge", R"({"b":{"d":[3]}})"}});
  BOOST_CHECK_EQUAL(second, json::parse(R"({"a":1,"b":{"c":"y","d":[3]},"e":"keep"})"));
  // "" resets all; reset runs before merge.
  BOOST_CHECK_EQUAL(merged_configuration(defaults, second, {{"reset", {""}}, {"merge", R"({"e":"z"})"}}),
                    json::parse(R"({"a":1,"b":{"c":"x","d":[1,2]},"e":"z"})"));
  // No update keeps what was there; a bad pointer or merge text changes nothing.
  BOOST_CHECK_EQUAL(merged_configuration(defaults, second, nullptr), second);
  BOOST_CHECK_EQUAL(merged_configuration(defaults, second, {{"reset", {"bad"}}, {"merge", "[1]"}}),
                    second);
  BOOST_CHECK_EQUAL(merged_configuration(nullptr, nullptr, {{"merge", R"({"k":1})"}}),
                    json::parse(R"({"k":1})"));
}

namespace {

void add_function(grove::group::Group& g, const std::string& name, const std::string& config) {
  auto* f = g.add_functions();
  f->set_name(name);
  f->set_config_yaml(config);
}

void add_subscription(grove::group::Group& g, const std::string& id, const std::string& source,
                      const std::string& target) {
  auto* s = g.add_subscriptions();
  s->set_id(id);
  s->set_source(source);
  s->set_subject("t/" + id);
  s->set_target(target);
}

template <class List, class Key>
std::vector<std::string> keys(const List& list, Key key) {
  std::vector<std::string> out;
  for (const auto& e : list)
    out.push_back(key(e));
  return out;
}

std::vector<std::string> functions_of(const grove::group::Group& g) {
  return keys(g.functions(), [](const auto& f) { return f.name() + "=" + f.config_yaml(); });
}

std::vector<std::string> subscriptions_of(const grove::group::Group& g) {
  return keys(g.subscriptions(), [](const auto& s) { return s.id(); });
}

std::vector<std::string> resources_of(const grove::group::Group& g) {
  return keys(g.resources(), [](const auto& r) { return r.id(); });
}

bool mentions(const std::vector<std::string>& notes, const std::string& what) {
  return std::any_of(notes.begin(), notes.end(),
                     [&](const std::string& n) { return n.find(what) != std::string::npos; });
}

using strings = std::vector<std::string>;

/// A group at `version` with devices `things` and functions written name=config.
grove::group::Group group_at(uint64_t version, const strings& things, const strings& functions) {
  grove::group::Group g;
  g.set_version(version);
  for (const auto& t : things)
    g.add_devices()->set_thing(t);
  for (const auto& f : functions) {
    auto eq = f.find('=');
    add_function(g, f.substr(0, eq), f.substr(eq + 1));
  }
  return g;
}

/// `g` as the next change of the group starts from it: a copy at `version`.
grove::group::Group next(grove::group::Group g, uint64_t version) {
  g.set_version(version);
  return g;
}

/// What undoing `changes` on `now` gives back (`undone` stays 99 if undo does not set it).
struct undo_result {
  grove::group::Group group;
  strings notes;
  strings kept;
  size_t undone = 99;
};

undo_result undo(const group_changes& changes, const grove::group::Group& now) {
  undo_result r;
  r.group = changes.undo(now, r.notes, r.kept, &r.undone);
  return r;
}

/// Records a timed-out deployment's change from `read` to `intended` that did not apply
/// (`now` is another party's): nothing is recorded of the two entries it meant; the
/// functions a rollback then leaves.
strings functions_after_an_unapplied_change(const grove::group::Group& read,
                                            const grove::group::Group& intended,
                                            const grove::group::Group& now) {
  group_changes c;
  size_t meant = 0;
  BOOST_TEST(c.record_if_applied(read, intended, now, &meant) == 0u);
  BOOST_TEST(meant == 2u);
  BOOST_TEST(c.empty());
  return functions_of(undo(c, now).group);
}

} // namespace

BOOST_AUTO_TEST_CASE(a_rollback_undoes_only_the_deployments_own_group_changes) {
  // Before the deployment: the group's function keep, a Lambda component's relay (v1),
  // their routes, a volume.
  auto before = group_at(4, {"A"}, {"keep=k", "relay=v1"});
  before.set_name("e2e");
  add_subscription(before, "a-keep", "device:A", "function:keep");
  add_subscription(before, "a-r", "device:A", "function:relay");
  before.add_resources()->set_id("vol");
  // The deployment's first change: relay v2, a new function dep, relay's route a-r out.
  auto w1 = next(before, 5);
  w1.mutable_functions(1)->set_config_yaml("v2");
  add_function(w1, "dep", "{x: 1, y: [a]}");
  w1.mutable_subscriptions()->DeleteSubrange(1, 1);
  // Meanwhile an operator adds a function and a route to the deployment's function.
  auto n1 = next(w1, 6);
  add_function(n1, "other", "o");
  add_subscription(n1, "o-dep", "device:A", "function:dep");
  // The deployment's second change, computed on that: a model resource.
  auto w2 = next(n1, 7);
  w2.add_resources()->set_id("model");
  group_changes changes;
  BOOST_TEST(changes.empty());
  changes.record(before, w1);
  changes.record(n1, w2);
  BOOST_TEST(changes.size() == 4u); // relay, dep, a-r, model: not the operator's two
  // Undone on the group as the deployment left it (dep's config spelled otherwise, as
  // an edit of the file rewrites it): everything as before, and the operator's additions
  // kept (o-dep left out: the group no longer has function:dep).
  auto respelled = w2;
  respelled.mutable_functions(2)->set_config_yaml("x: 1\ny:\n  - \"a\"\n");
  auto back = undo(changes, respelled);
  BOOST_TEST(functions_of(back.group) == (strings{"keep=k", "relay=v1", "other=o"}),
             boost::test_tools::per_element());
  BOOST_TEST(subscriptions_of(back.group) == (strings{"a-keep", "a-r"}),
             boost::test_tools::per_element());
  BOOST_TEST(resources_of(back.group) == (strings{"vol"}), boost::test_tools::per_element());
  BOOST_TEST(back.group.name() == "e2e");
  BOOST_TEST(back.kept.empty());
  BOOST_TEST(back.notes.size() == 1u);
  BOOST_TEST(mentions(back.notes, "subscription 'o-dep' (device:A -> function:dep) left out"));
  // Someone changed relay again (v3) and removed the model since: theirs stays, and the
  // notes say so.
  auto now = next(w2, 8);
  now.mutable_functions(1)->set_config_yaml("v3");
  now.mutable_resources()->DeleteSubrange(1, 1);
  back = undo(changes, now);
  BOOST_TEST(functions_of(back.group) == (strings{"keep=k", "relay=v3", "other=o"}),
             boost::test_tools::per_element());
  BOOST_TEST(resources_of(back.group) == (strings{"vol"}), boost::test_tools::per_element());
  BOOST_TEST(back.kept == (strings{"relay", "model"}), boost::test_tools::per_element());
  BOOST_TEST(mentions(back.notes, "function 'relay' was changed by another change"));
  BOOST_TEST(mentions(back.notes, "resource 'model' was removed by another change"));
  // The document for `$grove/group/set`.
  auto doc = group_yaml(back.group);
  BOOST_REQUIRE(doc);
  BOOST_TEST(doc->find("name: e2e") != std::string::npos, *doc);
  // A change that changed nothing records nothing.
  group_changes none;
  none.record(before, before);
  BOOST_TEST(none.empty());
}

BOOST_AUTO_TEST_CASE(entries_back_where_they_started_are_not_recorded) {
  auto before = group_at(1, {}, {"relay=v1"});
  // Added then removed in one deployment, and changed then changed back.
  auto w1 = next(before, 2);
  add_function(w1, "tmp", "t");
  w1.mutable_functions(0)->set_config_yaml("v2");
  auto w2 = next(before, 3);
  group_changes changes;
  changes.record(before, w1);
  BOOST_TEST(changes.size() == 2u);
  changes.record(w1, w2);
  BOOST_TEST(changes.empty());
}

BOOST_AUTO_TEST_CASE(a_function_removed_then_made_again_by_another_keeps_its_routes_out) {
  auto before = group_at(1, {"A"}, {"f=mine"});
  add_subscription(before, "a-f", "device:A", "function:f");
  // The deployment removes f and its route; another change adds a function named f.
  auto w1 = next(before, 2);
  w1.mutable_functions()->Clear();
  w1.mutable_subscriptions()->Clear();
  group_changes changes;
  changes.record(before, w1);
  BOOST_TEST(changes.size() == 2u);
  auto now = next(w1, 3);
  add_function(now, "f", "theirs");
  auto back = undo(changes, now);
  BOOST_TEST(functions_of(back.group) == (strings{"f=theirs"}), boost::test_tools::per_element());
  BOOST_TEST(subscriptions_of(back.group).empty());
  BOOST_TEST(back.kept == (strings{"f"}), boost::test_tools::per_element());
  BOOST_TEST(back.undone == 0u);
  BOOST_TEST(mentions(back.notes, "function 'f' was added again by another change"));
  BOOST_TEST(mentions(back.notes, "subscription 'a-f' the deployment removed is not put back"));
}

BOOST_AUTO_TEST_CASE(an_undo_of_changes_all_changed_again_changes_nothing) {
  auto before = group_at(1, {}, {"relay=v1"});
  auto w1 = next(before, 2);
  w1.mutable_functions(0)->set_config_yaml("v2");
  group_changes changes;
  changes.record(before, w1);
  auto now = next(w1, 3);
  now.mutable_functions(0)->set_config_yaml("v3");
  auto back = undo(changes, now);
  BOOST_TEST(back.undone == 0u);
  BOOST_TEST(back.group.SerializeAsString() == now.SerializeAsString());
}

BOOST_AUTO_TEST_CASE(an_entry_changed_twice_with_another_change_between_goes_back_to_that) {
  auto before = group_at(1, {}, {"relay=v1"});
  auto w1 = next(before, 2); // the deployment: v2
  w1.mutable_functions(0)->set_config_yaml("v2");
  auto n1 = next(w1, 3); // someone else: v3
  n1.mutable_functions(0)->set_config_yaml("v3");
  auto w2 = next(n1, 4); // the deployment again: v4
  w2.mutable_functions(0)->set_config_yaml("v4");
  group_changes changes;
  changes.record(before, w1);
  changes.record(n1, w2);
  BOOST_TEST(changes.size() == 1u);
  auto back = undo(changes, w2);
  BOOST_TEST(functions_of(back.group) == (strings{"relay=v3"}), boost::test_tools::per_element());
  BOOST_TEST(back.undone == 1u);
  BOOST_TEST(back.kept.empty());
  BOOST_TEST(back.notes.empty());
}

BOOST_AUTO_TEST_CASE(group_changes_survive_the_journal) {
  // What a rollback after kill -9 undoes: the changes as journaled (to_json, as text and
  // back) undo exactly what the changes in memory undo.
  auto before = group_at(1, {"A"}, {"keep=k", "relay=v1"});
  before.set_name("e2e");
  add_subscription(before, "a-r", "device:A", "function:relay");
  auto w1 = next(before, 2); // the deployment: relay v2, a function dep, a-r out, a model
  w1.mutable_functions(1)->set_config_yaml("v2");
  add_function(w1, "dep", "{x: 1}");
  w1.mutable_subscriptions()->Clear();
  auto* model = w1.add_resources();
  model->set_id("model");
  model->set_config_yaml("{path: /m}");
  group_changes changes;
  changes.record(before, w1);
  BOOST_REQUIRE(changes.size() == 4u);
  auto parsed = group_changes::from_json(json::parse(changes.to_json().dump()));
  BOOST_REQUIRE(parsed);
  BOOST_TEST(parsed->size() == 4u);
  auto now = next(w1, 3); // an operator's function added since: kept by both
  add_function(now, "other", "o");
  auto back = undo(changes, now);
  // Called as the runner may call it, without `undone` (its default, null).
  strings notes2, kept2;
  auto back2 = parsed->undo(now, notes2, kept2);
  BOOST_TEST(functions_of(back2) == (strings{"keep=k", "relay=v1", "other=o"}),
             boost::test_tools::per_element());
  BOOST_TEST(subscriptions_of(back2) == (strings{"a-r"}), boost::test_tools::per_element());
  BOOST_TEST(back2.resources_size() == 0);
  BOOST_TEST(back2.SerializeAsString() == back.group.SerializeAsString());
  BOOST_TEST(notes2 == back.notes, boost::test_tools::per_element());
  BOOST_TEST(kept2 == back.kept, boost::test_tools::per_element());
  // Nothing recorded journals as nothing.
  auto none = group_changes::from_json(group_changes{}.to_json());
  BOOST_REQUIRE(none);
  BOOST_TEST(none->empty());
  // A journal that is not what to_json wrote is refused, not half read.
  BOOST_TEST(!group_changes::from_json(json::array()));
  BOOST_TEST(!group_changes::from_json(json{{"functions", {{"x", {{"before", "%%%"}}}}}}));
  BOOST_TEST(!group_changes::from_json(json{{"resources", {{"x", 3}}}}));
}

BOOST_AUTO_TEST_CASE(a_group_document_reads_back_as_its_group) {
  // The group an edit asked for (its document, as the kernel reads it) compares as the
  // group itself: nothing differs between a group and its own document, one edit of it
  // is that one entry.
  auto g = group_at(5, {"A"}, {"keep=runtime: python3\nenv: {A: x1}"});
  add_subscription(g, "a-keep", "device:A", "function:keep");
  g.add_resources()->set_id("vol");
  g.mutable_resources(0)->set_config_yaml("{path: /v}");
  auto doc = grove::group_document(g);
  group_changes same;
  auto group_of = [](const YAML::Node& doc) {
    auto back = grove::parse_group(grove::to_yaml(doc), "doc");
    BOOST_REQUIRE_MESSAGE(back, (back ? std::string{} : grove::describe(back.error())));
    return *back;
  };
  same.record(g, group_of(doc));
  BOOST_TEST(same.empty());
  doc["functions"][0]["config"]["env"]["A"] = "x2";
  group_changes one;
  one.record(g, group_of(doc));
  BOOST_TEST(one.size() == 1u);
}

BOOST_AUTO_TEST_CASE(a_timed_out_change_is_recorded_when_the_group_has_it) {
  auto read = group_at(4, {"A"}, {"keep=k"});
  add_subscription(read, "a-keep", "device:A", "function:keep");
  auto intended = read; // the deployment's change: a function relay and its route
  add_function(intended, "relay", "r");
  add_subscription(intended, "a-r", "device:A", "function:relay");
  // Applied (the version moved on), then an operator's function came on top: the
  // deployment's two entries are recorded, not the operator's.
  auto now = next(intended, 6);
  add_function(now, "other", "o");
  group_changes applied;
  size_t meant = 0;
  BOOST_TEST(applied.record_if_applied(read, intended, now, &meant) == 2u);
  BOOST_TEST(meant == 2u);
  BOOST_TEST(applied.size() == 2u);
  auto back = undo(applied, now);
  BOOST_TEST(functions_of(back.group) == (strings{"keep=k", "other=o"}),
             boost::test_tools::per_element());
  BOOST_TEST(subscriptions_of(back.group) == (strings{"a-keep"}), boost::test_tools::per_element());
  // Not applied: the group is still the one read (same version) -- nothing recorded.
  group_changes not_applied;
  BOOST_TEST(not_applied.record_if_applied(read, intended, read, &meant) == 0u);
  BOOST_TEST(meant == 2u);
  BOOST_TEST(not_applied.empty());
  // Not applied, but the group changed otherwise (another change won the compare-and-set):
  // nothing of the deployment's is there, nothing recorded.
  auto others = next(read, 5);
  add_function(others, "other", "o");
  group_changes lost;
  BOOST_TEST(lost.record_if_applied(read, intended, others) == 0u);
  BOOST_TEST(lost.empty());
  // Only some entries as asked (someone changed relay since): whose the route is cannot be
  // told, nothing recorded.
  auto changed = next(now, 7);
  changed.mutable_functions(1)->set_config_yaml("r2");
  group_changes partly;
  BOOST_TEST(partly.record_if_applied(read, intended, changed) == 0u);
  BOOST_TEST(partly.empty());
}

BOOST_AUTO_TEST_CASE(a_timed_out_removal_is_not_recorded_when_only_an_operator_removed_alike) {
  auto read = group_at(4, {"A"}, {"keep=k", "old=o"});
  // The deployment's change: function old out, relay in. It did not apply; an operator
  // removed old too (the version moved on): old is gone as asked, relay is not there.
  auto intended = read;
  intended.mutable_functions()->RemoveLast();
  add_function(intended, "relay", "r");
  auto now = next(read, 5);
  now.mutable_functions()->RemoveLast();
  // A rollback then puts nothing back: old stays removed, as the operator wanted.
  BOOST_TEST(functions_after_an_unapplied_change(read, intended, now) == (strings{"keep=k"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_timed_out_addition_is_not_recorded_when_someone_added_the_same) {
  auto read = group_at(4, {"A"}, {"keep=k"});
  // The deployment's change: function relay and its route. It did not apply; someone
  // else added an identical relay (no route).
  auto intended = read;
  add_function(intended, "relay", "r");
  add_subscription(intended, "a-r", "device:A", "function:relay");
  auto now = next(read, 5);
  add_function(now, "relay", "r");
  // A rollback then leaves the other change's relay in the group.
  BOOST_TEST(functions_after_an_unapplied_change(read, intended, now)
               == (strings{"keep=k", "relay=r"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_change_journaled_before_its_set_is_settled_after_a_restart) {
  // kill -9 between the journal write of a change (intend) and its answer: the restart
  // reads the journal back and the group in force (versions begin again at 1) says
  // whether the kernel applied it. Applied: recorded, its rollback undoes it. Not
  // applied: nothing recorded, nothing undone.
  using strings = std::vector<std::string>;
  grove::group::Group read;
  read.set_name("home");
  read.set_version(7);
  read.add_devices()->set_thing("A");
  add_function(read, "keep", "k");
  add_subscription(read, "a-keep", "device:A", "function:keep");
  auto intended = read; // the deployment's change: a function relay and its route
  add_function(intended, "relay", "{env: {T: r}}");
  add_subscription(intended, "a-r", "device:A", "function:relay");
  auto document = grove::to_yaml(grove::group_document(intended));
  // As the kernel puts it in force after the restart: read from the group file.
  auto in_force = [](const std::string& text) {
    auto g = grove::parse_group(text, "group");
    BOOST_REQUIRE_MESSAGE(g, (g ? std::string{} : grove::describe(g.error())));
    g->set_version(1);
    return *g;
  };
  auto journaled = [&] {
    group_changes c;
    c.intend(read, document);
    BOOST_REQUIRE(c.pending());
    auto back = group_changes::from_json(json::parse(c.to_json().dump()));
    BOOST_REQUIRE_MESSAGE(back, (back ? std::string{} : grove::describe(back.error())));
    BOOST_REQUIRE(back->pending());
    return std::move(*back);
  };
  // Applied (the group file holds the document), an operator's function added since.
  auto applied = in_force(document);
  add_function(applied, "other", "o");
  auto c = journaled();
  size_t meant = 0;
  BOOST_TEST(c.settle(applied, true, &meant) == 2u);
  BOOST_TEST(meant == 2u);
  BOOST_TEST(!c.pending());
  BOOST_TEST(c.size() == 2u);
  strings notes, kept;
  auto back = c.undo(applied, notes, kept);
  BOOST_TEST(keys(back.functions(), [](const auto& f) { return f.name(); })
               == (strings{"keep", "other"}),
             boost::test_tools::per_element());
  BOOST_TEST(subscriptions_of(back) == (strings{"a-keep"}), boost::test_tools::per_element());
  // Not applied (the group file still holds the group read): nothing recorded, and an
  // undo leaves the group as it is.
  auto not_applied = in_force(grove::to_yaml(grove::group_document(read)));
  auto n = journaled();
  BOOST_TEST(n.settle(not_applied, true, &meant) == 0u);
  BOOST_TEST(meant == 2u);
  BOOST_TEST(!n.pending());
  BOOST_TEST(n.empty());
  notes.clear();
  kept.clear();
  BOOST_TEST(n.undo(not_applied, notes, kept).SerializeAsString()
             == not_applied.SerializeAsString());
  BOOST_TEST(notes.empty());
  // Without the restart the version still counts: the same group, version 7, is the one
  // read, so the change did not apply (record_if_applied's rule).
  auto same_run = journaled();
  auto unchanged = in_force(document);
  unchanged.set_version(7);
  BOOST_TEST(same_run.settle(unchanged, false) == 0u);
  BOOST_TEST(same_run.empty());
  // A document the kernel refuses (a route to a function it lacks) never applied.
  group_changes refused;
  refused.intend(read, "name: home\nsubscriptions:\n  - {id: x, source: cloud, subject: t, "
                       "target: \"function:none\"}\n");
  BOOST_TEST(refused.settle(applied, true, &meant) == 0u);
  BOOST_TEST(meant == 0u);
  BOOST_TEST(refused.empty());
  // A journal whose pending change is not what to_json wrote loses that change alone:
  // the recorded ones stay, and why it was dropped is told.
  auto bad = c.to_json();
  BOOST_REQUIRE(!c.empty());
  bad["pending"] = {{"read", "%%%"}, {"document", ""}};
  std::string dropped;
  auto rest = group_changes::from_json(bad, &dropped);
  BOOST_REQUIRE(rest);
  BOOST_TEST(!rest->pending());
  BOOST_TEST(rest->size() == c.size());
  BOOST_TEST(dropped.find("pending") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_pending_change_journals_only_the_entries_it_means) {
  // A group of 100 functions and one change adding a function: the journal keeps the
  // change's entry (before: none, after: the function) and the read's version, not the
  // whole group read and document (issue 15 review: ~2.7 times the group per edit), and
  // decides from that alone as before (settle after a restart, and without one).
  grove::group::Group read;
  read.set_name("home");
  read.set_version(3);
  for (int i = 0; i < 100; ++i)
    add_function(read, "fn-" + std::to_string(i),
                 "{runAs: {uid: 1000, gid: 1000}, environmentVariables: {TOPIC: t/"
                   + std::to_string(i) + ", LEVEL: info}, timeoutMs: 3000}");
  auto intended = read;
  add_function(intended, "relay", "{environmentVariables: {RELAY_TOPIC: r/to/b}}");
  auto document = grove::to_yaml(grove::group_document(intended));
  group_changes c;
  c.intend(read, document);
  auto journaled = c.to_json()["pending"].dump().size();
  // What the journal held per edit before: the group read and the document, base64.
  auto whole = json{{"read", base64_encode(read.SerializeAsString())},
                    {"document", base64_encode(document)}}
                 .dump()
                 .size();
  BOOST_TEST_MESSAGE("pending change journaled: " << journaled << " bytes (whole group and "
                                                  << "document: " << whole << " bytes)");
  BOOST_TEST(journaled * 20 < whole);
  BOOST_TEST(c.to_json().dump().find("fn-1") == std::string::npos);
  // Decided as before, through the journal's JSON: applied (the kernel's group has the
  // document, after a restart), not applied (the group read, same version, no restart).
  auto in_force = grove::parse_group(document, "group");
  BOOST_REQUIRE(in_force);
  auto back = group_changes::from_json(json::parse(c.to_json().dump()));
  BOOST_REQUIRE(back && back->pending());
  size_t meant = 0;
  BOOST_TEST(back->settle(*in_force, true, &meant) == 1u);
  BOOST_TEST(meant == 1u);
  BOOST_TEST(back->size() == 1u);
  auto again = group_changes::from_json(json::parse(c.to_json().dump()));
  BOOST_REQUIRE(again && again->pending());
  BOOST_TEST(again->settle(read, false, &meant) == 0u);
  BOOST_TEST(again->empty());
  // A journal written before (the group read and the document) is still decided.
  auto old = c.to_json();
  old["pending"] = {{"read", base64_encode(read.SerializeAsString())},
                    {"document", base64_encode(document)}};
  auto was = group_changes::from_json(old);
  BOOST_REQUIRE(was && was->pending());
  BOOST_TEST(was->settle(*in_force, true, &meant) == 1u);
}

BOOST_AUTO_TEST_CASE(a_start_decides_and_undoes_the_pending_change_alone) {
  // A failed deployment's kept journal: a recorded change (relay updated, which its
  // rollback already undid; an operator set it again since) and a pending one (fn added)
  // left undecided. At the next start only the pending change is decided and, in force,
  // undone: the recorded change's entry stays as the group has it (issue 15 review).
  auto read = group_at(3, {"A"}, {"keep=k", "relay=v1"});
  group_changes c;
  auto updated = next(read, 4);
  updated.mutable_functions(1)->set_config_yaml("v2");
  c.record(read, updated);
  auto intended = updated;
  add_function(intended, "fn", "f");
  c.intend(updated, grove::to_yaml(grove::group_document(intended)));
  auto kept = group_changes::from_json(json::parse(c.to_json().dump()));
  BOOST_REQUIRE(kept && kept->pending() && kept->size() == 1u);
  auto pending = kept->pending_part();
  BOOST_TEST(pending.pending());
  BOOST_TEST(pending.empty()); // nothing recorded
  // In force after a restart: relay at v2 (the operator's), fn as the change asked.
  auto now = next(intended, 1);
  size_t meant = 0;
  BOOST_TEST(pending.settle(now, true, &meant) == 1u);
  BOOST_TEST(meant == 1u);
  BOOST_TEST(functions_of(undo(pending, now).group) == (strings{"keep=k", "relay=v2"}));
  // The whole journal would have put relay back to v1 as well.
  auto whole = *kept;
  BOOST_TEST(whole.settle(now, true) == 1u);
  BOOST_TEST(functions_of(undo(whole, now).group) == (strings{"keep=k", "relay=v1"}));
}

BOOST_FIXTURE_TEST_CASE(the_rollback_journal_survives_a_reopen, fixture) {
  // Schema 7: an ACTIVE deployment's rollback state, replaced on every write, read back
  // after the store is reopened (kill -9 of groved).
  for (auto id : {"d-1", "d-2", "d-3", "d-4"}) {
    deployment_record d;
    d.id = id;
    // A target each: a new deployment makes the older ones of its target INACTIVE.
    d.target_arn = std::string{"arn:aws:iot:us-east-1:123456789012:thing/core-"} + id;
    token_record none;
    auto put = store->put_deployment(d, "", none, 0, none);
    BOOST_REQUIRE(put);
  }
  BOOST_REQUIRE(!store->put_rollback("d-1", "{\"previous\":[]}"));
  BOOST_REQUIRE(!store->put_rollback("d-1", "{\"previous\":[1]}"));
  for (auto id : {"d-2", "d-3", "d-4"})
    BOOST_REQUIRE(!store->put_rollback(id, id));
  BOOST_REQUIRE(!store->put_rollback("d-none", "no such deployment"));
  open();
  auto text = [&](const std::string& id) {
    auto r = store->rollback_of(id);
    BOOST_REQUIRE(r);
    return r->value_or("(none)");
  };
  BOOST_CHECK_EQUAL(text("d-1"), "{\"previous\":[1]}");
  BOOST_CHECK_EQUAL(text("d-2"), "d-2");
  BOOST_CHECK_EQUAL(text("d-none"), "(none)");
  // Settled: gone with the state change (one transaction); a write after it (a deployment
  // canceled while it applied journals on) keeps nothing.
  auto settled = store->set_deployment_state("d-1", {"ACTIVE"}, "FAILED", "FAILED", "x", 1);
  BOOST_REQUIRE(settled && *settled);
  BOOST_CHECK_EQUAL(text("d-1"), "(none)");
  BOOST_REQUIRE(!store->put_rollback("d-1", "late"));
  BOOST_CHECK_EQUAL(text("d-1"), "(none)");
  // Still ACTIVE (IN_PROGRESS): kept.
  auto applying = store->set_deployment_state("d-3", {"ACTIVE"}, "ACTIVE", "IN_PROGRESS", "", 1);
  BOOST_REQUIRE(applying && *applying);
  BOOST_CHECK_EQUAL(text("d-3"), "d-3");
  // An ACTIVE one cannot be deleted (the API cancels first): its run's row stays.
  auto refused = store->delete_deployment("d-2", 1);
  BOOST_REQUIRE(refused);
  BOOST_CHECK(*refused == delete_result::active);
  BOOST_CHECK_EQUAL(text("d-2"), "d-2");
  BOOST_REQUIRE(!store->forget_rollback("d-2"));
  // Settled FAILED with a change of the group left undecided (keep_rollback): the row
  // stays, across a reopen and the deployment's deletion, for the next start to decide.
  auto undecided = store->set_deployment_state("d-4", {"ACTIVE"}, "FAILED", "FAILED", "x", 1,
                                               true);
  BOOST_REQUIRE(undecided && *undecided);
  BOOST_CHECK_EQUAL(text("d-4"), "d-4");
  auto erased4 = store->delete_deployment("d-4", 1);
  BOOST_REQUIRE(erased4);
  BOOST_CHECK(*erased4 == delete_result::deleted);
  open();
  BOOST_CHECK_EQUAL(text("d-4"), "d-4");
  // At start: every row is listed (the resuming deployment's, the undecided ones); each
  // goes when forgotten.
  auto rows = store->rollbacks();
  BOOST_REQUIRE(rows);
  BOOST_TEST(rows->size() == 2u);
  BOOST_CHECK_EQUAL(rows->at("d-3"), "d-3");
  BOOST_CHECK_EQUAL(rows->at("d-4"), "d-4");
  BOOST_REQUIRE(!store->forget_rollback("d-4"));
  BOOST_CHECK_EQUAL(text("d-4"), "(none)");
  BOOST_CHECK_EQUAL(text("d-3"), "d-3");
  BOOST_REQUIRE(!store->forget_rollback("d-3"));
  rows = store->rollbacks();
  BOOST_REQUIRE(rows);
  BOOST_TEST(rows->empty());
}

BOOST_FIXTURE_TEST_CASE(a_canceled_runs_rollback_journal_is_kept_until_its_run_ends, fixture) {
  // A cancel keeps the row of a deployment that applies: its run goes on writing it;
  // the run's end takes it (or marks it ended when it holds a change left undecided);
  // a start's decision goes into the reason with the row, the modified time unchanged.
  for (auto id : {"c-1", "c-2", "c-3"}) {
    deployment_record d;
    d.id = id;
    d.target_arn = std::string{"arn:aws:iot:us-east-1:123456789012:thing/core-"} + id;
    token_record none;
    BOOST_REQUIRE(store->put_deployment(d, "", none, 0, none));
  }
  auto text = [&](const std::string& id) {
    auto r = store->rollback_of(id);
    BOOST_REQUIRE(r);
    return r->value_or("(none)");
  };
  for (auto id : {"c-1", "c-2", "c-3"})
    BOOST_REQUIRE(!store->put_rollback(id, R"({"rollback":true})"));
  for (auto id : {"c-1", "c-2"}) {
    auto canceled = store->set_deployment_state(id, {"ACTIVE"}, "CANCELED", "CANCELED",
                                                "canceled by CancelDeployment", 5, true);
    BOOST_REQUIRE(canceled && *canceled);
    BOOST_CHECK_EQUAL(text(id), R"({"rollback":true})");
    BOOST_REQUIRE(!store->put_rollback(id, R"({"rollback":true,"n":2})"));
    BOOST_CHECK_EQUAL(text(id), R"({"rollback":true,"n":2})");
  }
  // Ended without a change left undecided: gone; with one: marked ended.
  BOOST_REQUIRE(!store->end_canceled_run("c-1", false));
  BOOST_CHECK_EQUAL(text("c-1"), "(none)");
  BOOST_REQUIRE(!store->end_canceled_run("c-2", true));
  auto ended = json::parse(text("c-2"));
  BOOST_TEST(ended.value("ended", false));
  BOOST_TEST(ended.value("n", 0) == 2);
  // Not canceled: untouched (its own settling decides).
  BOOST_REQUIRE(!store->end_canceled_run("c-3", false));
  BOOST_CHECK_EQUAL(text("c-3"), R"({"rollback":true})");
  open();
  BOOST_TEST(json::parse(text("c-2")).value("ended", false));
  // The start's decision: the row goes, the note joins the reason, modified stays.
  BOOST_REQUIRE(!store->forget_rollback("c-2", "a start decided"));
  BOOST_CHECK_EQUAL(text("c-2"), "(none)");
  auto d = store->deployment("c-2");
  BOOST_REQUIRE(d && *d);
  BOOST_CHECK_EQUAL((*d)->reason, "canceled by CancelDeployment; a start decided");
  BOOST_TEST((*d)->modified_ms == 5);
  BOOST_TEST((*d)->status == "CANCELED");
}

BOOST_AUTO_TEST_CASE(recipe_variables_as_greengrass_interpolates) {
  render_context ctx;
  ctx.thing_name = "core-1";
  ctx.components["me"] = {"/a/me/1.0.0", "/u/me/1.0.0", "/w/me",
                          {{"greeting", "hi"}, {"n", 3}, {"obj", {{"x", true}}}}};
  ctx.components["dep.Lib"] = {"/a/lib", "/u/lib", "/w/lib", {{"port", 8080}}};
  auto r = [&](std::string_view t) { return render(t, ctx, "me"); };
  BOOST_CHECK_EQUAL(r("python3 {artifacts:path}/run.py --dir {work:path}"),
                    "python3 /a/me/1.0.0/run.py --dir /w/me");
  BOOST_CHECK_EQUAL(r("{artifacts:decompressedPath}/app"), "/u/me/1.0.0/app");
  BOOST_CHECK_EQUAL(r("echo {configuration:/greeting} {configuration:/n} {configuration:/obj}"),
                    R"(echo hi 3 {"x":true})");
  BOOST_CHECK_EQUAL(r("[{configuration:/missing}]"), "[]");
  BOOST_CHECK_EQUAL(r("{iot:thingName}"), "core-1");
  BOOST_CHECK_EQUAL(r("{dep.Lib:configuration:/port} {dep.Lib:artifacts:path} {dep.Lib:work:path}"),
                    "8080 /a/lib /w/lib");
  // Unknown variables, unknown components and shell braces stay as written.
  BOOST_CHECK_EQUAL(r("{other:configuration:/x} {kernel:rootPath} ${HOME} {"),
                    "{other:configuration:/x} {kernel:rootPath} ${HOME} {");
  BOOST_CHECK_EQUAL(r("if [ -x x ]; then { echo {iot:thingName}; }; fi"),
                    "if [ -x x ]; then { echo core-1; }; fi");
  BOOST_CHECK_EQUAL(r("{{configuration:/greeting}}"), "{hi}");
}

BOOST_FIXTURE_TEST_CASE(operator_calls_for_grovectl, fixture) {
  // CreateDeployment without a targetArn: this core's thing.
  auto c = service->operator_call("CreateDeployment", "", "", "", "", R"({"deploymentName": "ctl"})");
  BOOST_REQUIRE_EQUAL(c.status, 201);
  auto id = json::parse(c.body)["deploymentId"].get<std::string>();
  BOOST_CHECK_EQUAL(get(id)["targetArn"], thing);
  BOOST_CHECK_EQUAL(service->operator_call("CreateDeployment", "", "", "", "", "not json").status,
                    400);
  auto l = service->operator_call("ListDeployments", "", "", "", "");
  BOOST_REQUIRE_EQUAL(l.status, 200);
  BOOST_CHECK_EQUAL(json::parse(l.body)["deployments"][0]["deploymentId"], id);
  BOOST_CHECK_EQUAL(service->operator_call("GetDeployment", id, "", "", "").status, 200);
  BOOST_CHECK_EQUAL(service->operator_call("DeleteDeployment", id, "", "", "").status, 409);
  BOOST_CHECK_EQUAL(service->operator_call("CancelDeployment", id, "", "", "").status, 200);
  BOOST_CHECK_EQUAL(service->operator_call("DeleteDeployment", id, "", "", "").status, 204);
  installed = json::array({{{"componentName", "a"}, {"lifecycleState", "BROKEN"}}});
  auto i = service->operator_call("ListInstalledComponents", "", "", "", "");
  BOOST_REQUIRE_EQUAL(i.status, 200);
  BOOST_CHECK_EQUAL(json::parse(i.body)["installedComponents"][0]["lifecycleState"], "BROKEN");
}

// Tags of deployment ARNs (issue 15): CreateDeployment's `tags`, then TagResource,
// UntagResource and ListTagsForResource on `arn:aws:greengrass:<region>:<account>:
// deployments:<id>` as botocore's greengrassv2 model has them; GetDeployment shows the
// tags as they are now; they survive a reopen of the store; deleting the deployment
// drops them.
BOOST_FIXTURE_TEST_CASE(deployment_arn_tags, fixture) {
  auto id = deploy_ok({{"targetArn", thing}, {"tags", {{"site", "lab"}, {"owner", "ops"}}}});
  auto arn = "arn:aws:greengrass:us-east-1:123456789012:deployments:" + id;
  auto list = [&](const std::string& a) { return call("GET", "/tags/" + a); };
  auto r = list(arn);
  BOOST_REQUIRE_EQUAL(r.status, 200);
  BOOST_CHECK_EQUAL(json::parse(r.body)["tags"], (json{{"site", "lab"}, {"owner", "ops"}}));
  r = call("POST", "/tags/" + arn, json{{"tags", {{"site", "field"}, {"tier", "1"}}}}.dump());
  BOOST_REQUIRE_EQUAL(r.status, 200);
  r = call("DELETE", "/tags/" + arn + "?tagKeys=owner&tagKeys=absent");
  BOOST_REQUIRE_EQUAL(r.status, 200);
  auto want = json{{"site", "field"}, {"tier", "1"}};
  BOOST_CHECK_EQUAL(json::parse(list(arn).body)["tags"], want);
  BOOST_CHECK_EQUAL(get(id)["tags"], want);
  // Refused whole: past 50 tags, an empty change, no keys; nothing changes.
  json many = json::object();
  for (int i = 0; i < 49; ++i)
    many["k" + std::to_string(i)] = "v";
  r = call("POST", "/tags/" + arn, json{{"tags", many}}.dump());
  BOOST_CHECK_EQUAL(r.status, 400);
  BOOST_CHECK_EQUAL(type_of(r), "ValidationException");
  BOOST_CHECK(r.body.find("at most 50 tags") != std::string::npos);
  BOOST_CHECK_EQUAL(call("POST", "/tags/" + arn, json{{"tags", json::object()}}.dump()).status, 400);
  BOOST_CHECK_EQUAL(call("DELETE", "/tags/" + arn).status, 400);
  BOOST_CHECK_EQUAL(json::parse(list(arn).body)["tags"], want);
  // Another region, account or an unknown id: ResourceNotFoundException.
  for (auto other : {"arn:aws:greengrass:eu-west-1:123456789012:deployments:" + id,
                     "arn:aws:greengrass:us-east-1:999999999999:deployments:" + id,
                     std::string{"arn:aws:greengrass:us-east-1:123456789012:deployments:no-such-id"}}) {
    r = list(other);
    BOOST_CHECK_EQUAL(r.status, 404);
    BOOST_CHECK_EQUAL(type_of(r), "ResourceNotFoundException");
    BOOST_CHECK_EQUAL(call("POST", "/tags/" + other, json{{"tags", {{"a", "b"}}}}.dump()).status,
                      404);
  }
  // A reopen of the store (a restart of groved) keeps them.
  open();
  BOOST_CHECK_EQUAL(json::parse(list(arn).body)["tags"], want);
  // Deleted (after a cancel): the tags go with it.
  BOOST_REQUIRE_EQUAL(call("POST", "/greengrass/v2/deployments/" + id + "/cancel").status, 200);
  BOOST_REQUIRE_EQUAL(call("DELETE", "/greengrass/v2/deployments/" + id).status, 204);
  BOOST_CHECK_EQUAL(list(arn).status, 404);
  // The row stays for the core (what it runs), without the tags.
  auto tagged = store->with_store([&](grove::store& db) {
    int n = 0;
    auto err = each_row(db, "SELECT COUNT(*) FROM deployments WHERE id = ? AND tags <> '{}'",
                       [&](const grove::statement& s) {
                         n = static_cast<int>(s.column_int64(0));
                         return false;
                       },
                       id);
    return err ? -1 : n;
  });
  BOOST_CHECK_EQUAL(tagged, 0);
}

// Schema 6 moves deployments' tags into a column of their own: a journal written before
// (schema 5, the tags only in the request) keeps its deployments' tags.
BOOST_AUTO_TEST_CASE(a_schema_5_journal_keeps_its_deployments_tags) {
  auto dir = std::filesystem::temp_directory_path()
             / ("deployment_tags_mig_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  {
    grove::store_options opts;
    opts.application_id = 0x47524450;
    // Schema 5 as far as this test reads it: the deployments table of schema 3.
    for (int v = 1; v <= 4; ++v)
      opts.migrations.push_back({v, "", {}});
    opts.migrations.push_back({5,
                               "CREATE TABLE deployments("
                               " seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
                               " target_arn TEXT NOT NULL, name TEXT NOT NULL,"
                               " revision INTEGER NOT NULL, request TEXT NOT NULL,"
                               " status TEXT NOT NULL, execution TEXT NOT NULL,"
                               " reason TEXT NOT NULL, created_ms INTEGER NOT NULL,"
                               " modified_ms INTEGER NOT NULL);",
                               {}});
    auto db = grove::store::open(dir / "c.db", std::move(opts));
    BOOST_REQUIRE(db);
    BOOST_REQUIRE(!(*db)->run(
      "INSERT INTO deployments(id, target_arn, name, revision, request, status, execution, "
      "reason, created_ms, modified_ms) VALUES "
      "('tagged', 't', '', 1, '{\"tags\":{\"site\":\"lab\"}}', 'COMPLETED', 'SUCCEEDED', '', 1, 1),"
      "('plain', 't', '', 2, '{\"components\":{}}', 'ACTIVE', 'QUEUED', '', 2, 2),"
      "('broken', 't', '', 3, 'not json', 'ACTIVE', 'QUEUED', '', 3, 3)"));
  }
  auto s = component_store::open(dir / "c.db");
  BOOST_REQUIRE(s);
  auto tags_of = [&](const std::string& id) {
    auto d = (*s)->deployment(id);
    BOOST_REQUIRE(d && *d);
    return json::parse((**d).tags);
  };
  BOOST_CHECK_EQUAL(tags_of("tagged"), (json{{"site", "lab"}}));
  BOOST_CHECK_EQUAL(tags_of("plain"), json::object());
  BOOST_CHECK_EQUAL(tags_of("broken"), json::object());
  s->reset();
  std::filesystem::remove_all(dir);
}

// Migrations 8 and 9 on a schema-7 journal (the file a build before issue 15 left): its
// deployments are not deleted and GetDeployment answers them; those past QUEUED are taken
// as run (started_ms), as a start counted them until then.
BOOST_FIXTURE_TEST_CASE(a_schema_7_journal_keeps_its_deployments, fixture) {
  auto ran = deploy_ok({{"targetArn", group}});
  auto done = store->set_deployment_state(ran, {"ACTIVE"}, "COMPLETED", "SUCCEEDED", "", 7);
  BOOST_REQUIRE(done && *done);
  auto id = deploy_ok({{"targetArn", thing}});
  service.reset();
  store.reset();
  {
    // Back to schema 7: the same file without deleted_ms and started_ms.
    grove::store_options opts;
    opts.application_id = 0x47524450;
    for (int v = 1; v <= 9; ++v)
      opts.migrations.push_back({v, "", {}});
    auto db = grove::store::open(dir / "components.db", std::move(opts));
    BOOST_REQUIRE(db);
    BOOST_REQUIRE(!(*db)->run("ALTER TABLE deployments DROP COLUMN deleted_ms"));
    BOOST_REQUIRE(!(*db)->run("ALTER TABLE deployments DROP COLUMN started_ms"));
    BOOST_REQUIRE(!(*db)->run("PRAGMA user_version = 7"));
  }
  open();
  auto rec = store->deployment(id);
  BOOST_REQUIRE(rec && *rec);
  BOOST_CHECK_EQUAL((*rec)->deleted_ms, 0);
  BOOST_CHECK_EQUAL((*rec)->started_ms, 0); // QUEUED: never ran
  BOOST_CHECK_EQUAL(store->deployment(ran)->value().started_ms, 7);
  BOOST_CHECK_EQUAL(get(id)["deploymentId"], id);
  BOOST_CHECK_EQUAL(call("DELETE", "/greengrass/v2/deployments/" + id).status, 409); // ACTIVE
}
