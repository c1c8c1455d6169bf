// Cloud sync's merge (plugins/shadow/src/sync_merge.cpp): the three-way merge per leaf,
// every case of README's "The merge rule", the one-way directions, the updates it asks
// of both sides (applied here with the document library, so what a side ends with is
// checked, not only the patch), and the reading of the cloud's JSON.

#define BOOST_TEST_MODULE shadow_sync_merge
#include <boost/test/unit_test.hpp>

#include "document.hpp"
#include "sync_merge.hpp"

using namespace grove::shadow;

namespace {

json j(std::string_view text) {
  return json::parse(text);
}

// A side whose every leaf has timestamp `t` (or as `meta` gives).
sync_side side(std::string_view state, int64_t t, std::optional<std::string_view> meta = {}) {
  sync_side s;
  s.state = j(state);
  s.timestamp = t;
  s.version = 7;
  if (meta) {
    s.metadata = j(*meta);
  } else {
    std::function<json(const json&)> stamp = [&](const json& x) -> json {
      if (!x.is_object())
        return json{{"timestamp", t}};
      json out = json::object();
      for (const auto& [k, v] : x.items())
        out[k] = stamp(v);
      return out;
    };
    s.metadata = stamp(s.state);
  }
  return s;
}

// Applies a patch the way the plugin does (an update through the document library)
// and returns the resulting state.
json applied(const std::optional<sync_side>& from, const json& patch) {
  std::optional<document> cur;
  if (from) {
    document d;
    d.desired = from->state.contains("desired") ? from->state["desired"] : json{};
    d.reported = from->state.contains("reported") ? from->state["reported"] : json{};
    d.meta_desired = d.desired.is_null() ? json{} : json::object();
    d.meta_reported = d.reported.is_null() ? json{} : json::object();
    d.version = 1;
    cur = d;
  }
  request req;
  req.state = patch;
  auto r = apply_update(cur, std::nullopt, req, 100, 30720);
  BOOST_REQUIRE(!rejected(r));
  return side_of(std::get<update_result>(r).current).state;
}

// Both sides end as the plan's merged state.
void check_converges(const std::optional<sync_side>& l, const std::optional<sync_side>& c,
                     const sync_plan& p) {
  BOOST_REQUIRE(p.exists);
  auto lhs = p.local_patch.is_null() ? l->state : applied(l, p.local_patch);
  auto rhs = p.cloud_patch.is_null() ? c->state : applied(c, p.cloud_patch);
  BOOST_CHECK_EQUAL(state_diff(lhs, p.merged).dump(), "null");
  BOOST_CHECK_EQUAL(state_diff(rhs, p.merged).dump(), "null");
}

} // namespace

BOOST_AUTO_TEST_CASE(state_diff_turns_one_state_into_the_other) {
  BOOST_CHECK(state_diff(j(R"({"desired":{"a":1}})"), j(R"({"desired":{"a":1}})")).is_null());
  // Key order does not matter (the cloud writes its own).
  BOOST_CHECK(state_diff(j(R"({"desired":{"a":1,"b":{"x":1,"y":2}}})"),
                         j(R"({"desired":{"b":{"y":2,"x":1},"a":1}})"))
                .is_null());
  BOOST_CHECK_EQUAL(state_diff(j(R"({"desired":{"a":1,"b":2,"c":{"x":1}}})"),
                               j(R"({"desired":{"a":5,"c":{"x":1,"y":2},"d":[1]}})"))
                      .dump(),
                    R"({"desired":{"a":5,"c":{"y":2},"d":[1],"b":null}})");
  // A section gone is cleared; an object turned scalar and back replaces.
  BOOST_CHECK_EQUAL(state_diff(j(R"({"desired":{"a":1},"reported":{"o":{"x":1}}})"),
                               j(R"({"reported":{"o":3}})"))
                      .dump(),
                    R"({"reported":{"o":3},"desired":null})");
  BOOST_CHECK_EQUAL(state_diff(j(R"({"reported":{"o":3}})"), j(R"({"reported":{"o":{"x":1}}})"))
                      .dump(),
                    R"({"reported":{"o":{"x":1}}})");
}

BOOST_AUTO_TEST_CASE(a_leaf_changed_on_one_side_takes_that_side) {
  auto base = j(R"({"desired":{"color":"red","level":1}})");
  auto l = side(R"({"desired":{"color":"blue","level":1}})", 10);
  auto c = side(R"({"desired":{"color":"red","level":4}})", 5);
  auto p = plan_sync(base, l, c, sync_direction::between);
  BOOST_CHECK_EQUAL(p.merged.dump(), R"({"desired":{"color":"blue","level":4}})");
  BOOST_CHECK_EQUAL(p.local_patch.dump(), R"({"desired":{"level":4}})");
  BOOST_CHECK_EQUAL(p.cloud_patch.dump(), R"({"desired":{"color":"blue"}})");
  BOOST_CHECK(!p.delete_local && !p.delete_cloud);
  check_converges(l, c, p);
}

BOOST_AUTO_TEST_CASE(a_leaf_changed_on_both_takes_the_newer_timestamp) {
  auto base = j(R"({"desired":{"a":0,"b":0}})");
  // a: local newer; b: cloud newer.
  auto l = side(R"({"desired":{"a":1,"b":1}})", 0,
                R"({"desired":{"a":{"timestamp":200},"b":{"timestamp":100}}})");
  auto c = side(R"({"desired":{"a":2,"b":2}})", 0,
                R"({"desired":{"a":{"timestamp":150},"b":{"timestamp":300}}})");
  auto p = plan_sync(base, l, c, sync_direction::between);
  BOOST_CHECK_EQUAL(p.merged.dump(), R"({"desired":{"a":1,"b":2}})");
  check_converges(l, c, p);
  // A tie keeps the local value.
  auto tie = plan_sync(base, side(R"({"desired":{"a":1,"b":0}})", 50),
                       side(R"({"desired":{"a":2,"b":0}})", 50), sync_direction::between);
  BOOST_CHECK_EQUAL(tie.merged.dump(), R"({"desired":{"a":1,"b":0}})");
}

BOOST_AUTO_TEST_CASE(the_same_change_on_both_sides_asks_nothing) {
  auto base = j(R"({"reported":{"on":false}})");
  auto p = plan_sync(base, side(R"({"reported":{"on":true}})", 3),
                     side(R"({"reported":{"on":true}})", 9), sync_direction::between);
  BOOST_CHECK(p.local_patch.is_null());
  BOOST_CHECK(p.cloud_patch.is_null());
  BOOST_CHECK_EQUAL(p.merged.dump(), R"({"reported":{"on":true}})");
}

BOOST_AUTO_TEST_CASE(a_delete_is_a_change) {
  auto base = j(R"({"desired":{"a":1,"b":1}})");
  // Deleted in the cloud, untouched locally: deleted on both.
  auto l = side(R"({"desired":{"a":1,"b":1}})", 10);
  auto c = side(R"({"desired":{"a":1}})", 20);
  auto p = plan_sync(base, l, c, sync_direction::between);
  BOOST_CHECK_EQUAL(p.merged.dump(), R"({"desired":{"a":1}})");
  BOOST_CHECK_EQUAL(p.local_patch.dump(), R"({"desired":{"b":null}})");
  check_converges(l, c, p);
  // Deleted in the cloud (its last change at 20), changed locally at 30: the change wins;
  // at 10 the delete wins.
  auto newer = plan_sync(base, side(R"({"desired":{"a":1,"b":5}})", 30), c,
                         sync_direction::between);
  BOOST_CHECK_EQUAL(newer.merged.dump(), R"({"desired":{"a":1,"b":5}})");
  auto older = plan_sync(base, side(R"({"desired":{"a":1,"b":5}})", 10), c,
                         sync_direction::between);
  BOOST_CHECK_EQUAL(older.merged.dump(), R"({"desired":{"a":1}})");
  // A whole section cleared on one side.
  auto cleared = plan_sync(j(R"({"desired":{"a":1},"reported":{"a":1}})"),
                           side(R"({"reported":{"a":1}})", 10),
                           side(R"({"desired":{"a":1},"reported":{"a":1}})", 5),
                           sync_direction::between);
  BOOST_CHECK_EQUAL(cleared.cloud_patch.dump(), R"({"desired":null})");
}

BOOST_AUTO_TEST_CASE(a_leaf_changed_under_a_parent_deleted_on_the_other_side_survives) {
  auto base = j(R"({"desired":{"light":{"color":"red","level":1}}})");
  auto l = side(R"({"desired":{"light":{"color":"green","level":1}}})", 30);
  auto c = side(R"({"desired":{}})", 20);
  c.state = j(R"({})"); // the cloud deleted `light` (and with it the section)
  auto p = plan_sync(base, l, c, sync_direction::between);
  BOOST_CHECK_EQUAL(p.merged.dump(), R"({"desired":{"light":{"color":"green"}}})");
  check_converges(l, c, p);
}

BOOST_AUTO_TEST_CASE(our_own_unanswered_update_is_no_cloud_change) {
  // We sent a=2 (answer lost with the link); the device has since set a=3 at 50, and
  // the cloud stamped our a=2 at 100 when it arrived. Without `pending` the cloud's
  // stamp wins; with it, a=2 is ours and the device's later a=3 stays. b: the cloud
  // really changed it after our update (3 is not what we sent).
  auto base = j(R"({"desired":{"a":1,"b":1}})");
  auto pending = j(R"({"desired":{"a":2,"b":1}})");
  auto l = side(R"({"desired":{"a":3,"b":1}})", 50);
  auto c = side(R"({"desired":{"a":2,"b":3}})", 100);
  auto without = plan_sync(base, l, c, sync_direction::between);
  BOOST_CHECK_EQUAL(without.merged.dump(), R"({"desired":{"a":2,"b":3}})");
  auto with = plan_sync(base, l, c, sync_direction::between, pending);
  BOOST_CHECK_EQUAL(with.merged.dump(), R"({"desired":{"a":3,"b":3}})");
  check_converges(l, c, with);
}

BOOST_AUTO_TEST_CASE(never_agreed_merges_the_union) {
  auto l = side(R"({"desired":{"a":1,"same":0,"both":"l"}})", 10);
  auto c = side(R"({"desired":{"b":2,"same":0,"both":"c"},"reported":{"r":1}})", 20);
  auto p = plan_sync(std::nullopt, l, c, sync_direction::between);
  BOOST_CHECK_EQUAL(p.merged.dump(),
                    R"({"desired":{"a":1,"same":0,"both":"c","b":2},"reported":{"r":1}})");
  check_converges(l, c, p);
}

BOOST_AUTO_TEST_CASE(arrays_are_leaves) {
  auto base = j(R"({"desired":{"list":[1,2]}})");
  auto p = plan_sync(base, side(R"({"desired":{"list":[1,2,3]}})", 10),
                     side(R"({"desired":{"list":[1,2]}})", 50), sync_direction::between);
  BOOST_CHECK_EQUAL(p.cloud_patch.dump(), R"({"desired":{"list":[1,2,3]}})");
}

BOOST_AUTO_TEST_CASE(an_array_changed_on_both_sides_takes_its_newest_element_stamp) {
  // AWS's metadata for an array has one entry per element: the array's time is its
  // newest element's, on either side.
  auto base = j(R"({"desired":{"list":[1]}})");
  auto local = side(R"({"desired":{"list":[1,2]}})", 0,
                    R"({"desired":{"list":[{"timestamp":10},{"timestamp":40}]}})");
  auto cloud = side(R"({"desired":{"list":[3]}})", 0,
                    R"({"desired":{"list":[{"timestamp":30}]}})");
  auto p = plan_sync(base, local, cloud, sync_direction::between);
  BOOST_CHECK_EQUAL(p.cloud_patch.dump(), R"({"desired":{"list":[1,2]}})");
  BOOST_CHECK(p.local_patch.is_null());
  // The cloud's element is newer than every local one: the cloud wins.
  auto older = side(R"({"desired":{"list":[1,2]}})", 0,
                    R"({"desired":{"list":[{"timestamp":10},{"timestamp":20}]}})");
  auto q = plan_sync(base, older, cloud, sync_direction::between);
  BOOST_CHECK_EQUAL(q.local_patch.dump(), R"({"desired":{"list":[3]}})");
  BOOST_CHECK(q.cloud_patch.is_null());
}

BOOST_AUTO_TEST_CASE(a_whole_shadow_deleted_on_one_side) {
  auto base = j(R"({"desired":{"a":1}})");
  // Deleted locally, cloud untouched since: deleted in the cloud too.
  auto p = plan_sync(base, std::nullopt, side(R"({"desired":{"a":1}})", 5),
                     sync_direction::between);
  BOOST_CHECK(!p.exists);
  BOOST_CHECK(p.delete_cloud);
  BOOST_CHECK(!p.delete_local);
  // Deleted in the cloud, changed locally since: made again in the cloud from local.
  auto back = plan_sync(base, side(R"({"desired":{"a":2}})", 5), std::nullopt,
                        sync_direction::between);
  BOOST_CHECK(back.exists);
  BOOST_CHECK(!back.delete_local);
  BOOST_CHECK_EQUAL(back.cloud_patch.dump(), R"({"desired":{"a":2}})");
  BOOST_CHECK(back.local_patch.is_null());
  // Missing in the cloud and never agreed: the local shadow goes up whole.
  auto first = plan_sync(std::nullopt, side(R"({"reported":{"x":1}})", 5), std::nullopt,
                         sync_direction::between);
  BOOST_CHECK_EQUAL(first.cloud_patch.dump(), R"({"reported":{"x":1}})");
  // Missing on both: nothing.
  auto none = plan_sync(base, std::nullopt, std::nullopt, sync_direction::between);
  BOOST_CHECK(!none.exists);
  BOOST_CHECK(!none.delete_cloud && !none.delete_local);
  BOOST_CHECK(none.local_patch.is_null() && none.cloud_patch.is_null());
}

BOOST_AUTO_TEST_CASE(device_to_cloud_never_takes_cloud_changes) {
  auto base = j(R"({"desired":{"a":1,"b":1}})");
  auto l = side(R"({"desired":{"a":2,"b":1}})", 10);
  auto c = side(R"({"desired":{"a":1,"b":9}})", 99);
  auto p = plan_sync(base, l, c, sync_direction::device_to_cloud);
  BOOST_CHECK(p.local_patch.is_null());
  BOOST_CHECK_EQUAL(p.cloud_patch.dump(), R"({"desired":{"a":2}})");
  BOOST_CHECK_EQUAL(p.merged.dump(), l.state.dump());
  auto gone = plan_sync(base, std::nullopt, c, sync_direction::device_to_cloud);
  BOOST_CHECK(gone.delete_cloud && !gone.delete_local);
}

BOOST_AUTO_TEST_CASE(cloud_to_device_never_sends_local_changes) {
  auto base = j(R"({"desired":{"a":1,"b":1}})");
  auto l = side(R"({"desired":{"a":2,"b":1}})", 99);
  auto c = side(R"({"desired":{"a":1,"b":9}})", 10);
  auto p = plan_sync(base, l, c, sync_direction::cloud_to_device);
  BOOST_CHECK(p.cloud_patch.is_null());
  BOOST_CHECK_EQUAL(p.local_patch.dump(), R"({"desired":{"b":9}})");
  auto gone = plan_sync(base, l, std::nullopt, sync_direction::cloud_to_device);
  BOOST_CHECK(gone.delete_local && !gone.delete_cloud);
}

BOOST_AUTO_TEST_CASE(cloud_documents_are_read_and_checked) {
  auto get = parse_cloud_document(
    R"({"state":{"desired":{"a":1},"delta":{"a":1}},"metadata":{"desired":{"a":{"timestamp":42}}},)"
    R"("version":3,"timestamp":99,"clientToken":"x"})");
  BOOST_REQUIRE(get);
  BOOST_CHECK_EQUAL(get->state.dump(), R"({"desired":{"a":1}})");
  BOOST_CHECK_EQUAL(get->version, 3u);
  BOOST_CHECK_EQUAL(get->timestamp, 42); // its newest leaf, not the answer's time
  for (auto bad : {std::string{"not json"}, std::string{R"({"state":{}})"},
                   std::string{R"({"state":[],"version":1})"},
                   std::string{R"({"state":{"desired":3},"version":1})"},
                   std::string{R"({"state":{},"version":-1})"},
                   std::string{"{\"state\":{\"desired\":{\"a\":\"\xff\"}},\"version\":1}"},
                   std::string(100, '[') + std::string(100, ']')})
    BOOST_CHECK_MESSAGE(!parse_cloud_document(bad), bad);
}

BOOST_AUTO_TEST_CASE(cloud_reply_topics) {
  auto r = parse_cloud_reply("$aws/things/lamp/shadow/name/cfg/update/documents");
  BOOST_REQUIRE(r);
  BOOST_CHECK_EQUAL(r->topic.thing, "lamp");
  BOOST_CHECK_EQUAL(r->topic.name, "cfg");
  BOOST_CHECK(r->topic.op == verb::update);
  BOOST_CHECK_EQUAL(r->kind, "documents");
  auto g = parse_cloud_reply("$aws/things/lamp/shadow/get/rejected");
  BOOST_REQUIRE(g);
  BOOST_CHECK(g->topic.op == verb::get);
  for (auto bad : {"$aws/things/lamp/shadow/update", "$aws/things/lamp/shadow/get/documents",
                   "$aws/things/lamp/shadow/update/other", "$aws/things/+/shadow/get/accepted",
                   "lamp/accepted", ""})
    BOOST_CHECK_MESSAGE(!parse_cloud_reply(bad), bad);
}
