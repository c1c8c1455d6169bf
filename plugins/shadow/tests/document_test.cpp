// The shadow document library (plugins/shadow/src/document.hpp): AWS's request checks,
// merge rules, metadata, delta, versions and tombstones, each reply's exact shape.

#define BOOST_TEST_MODULE shadow_document
#include <boost/test/unit_test.hpp>

#include "document.hpp"

using namespace grove::shadow;

namespace {

constexpr size_t max_payload = 4 * 8192;
constexpr size_t max_doc = 8192;

request parse_update(std::string_view text) {
  auto r = parse_request(text, verb::update, max_payload);
  if (auto rej = rejected(r))
    BOOST_FAIL("refused: " << rej->code << " " << rej->message << " for " << text);
  return std::get<request>(r);
}

rejection refusal(std::string_view text, verb op = verb::update) {
  auto r = parse_request(text, op, max_payload);
  auto rej = rejected(r);
  BOOST_REQUIRE_MESSAGE(rej != nullptr, "accepted: " << text);
  return *rej;
}

update_result update(const std::optional<document>& cur, std::string_view text, int64_t now,
                     const std::optional<tombstone>& tomb = std::nullopt) {
  auto r = apply_update(cur, tomb, parse_update(text), now, max_doc);
  if (auto rej = rejected(r))
    BOOST_FAIL("refused: " << rej->code << " " << rej->message);
  return std::get<update_result>(std::move(r));
}

json parsed(const std::string& text) {
  return json::parse(text);
}

} // namespace

BOOST_AUTO_TEST_CASE(topics_and_names) {
  auto t = parse_topic("$aws/things/lamp/shadow/update");
  BOOST_REQUIRE(t);
  BOOST_CHECK_EQUAL(t->thing, "lamp");
  BOOST_CHECK(t->name.empty());
  BOOST_CHECK(t->op == verb::update);
  BOOST_CHECK_EQUAL(t->prefix(), "$aws/things/lamp/shadow");
  auto n = parse_topic("$aws/things/lamp/shadow/name/cfg:1_a-b/delete");
  BOOST_REQUIRE(n);
  BOOST_CHECK_EQUAL(n->name, "cfg:1_a-b");
  BOOST_CHECK(n->op == verb::del);
  BOOST_CHECK_EQUAL(n->prefix(), "$aws/things/lamp/shadow/name/cfg:1_a-b");
  for (auto bad : {"$aws/things/lamp/shadow/update/accepted", "$aws/things/+/shadow/get",
                   "$aws/things/#", "$aws/things/lamp/shadow/name/+/get",
                   "$aws/things/lamp/shadow/name//get", "$aws/things//shadow/get",
                   "$aws/things/lamp/shadow/list", "$aws/things/lamp/shadow",
                   "$aws/things/la.mp/shadow/get", "things/lamp/shadow/get",
                   "$aws/things/lamp/shadow/name/a/get/x"})
    BOOST_CHECK_MESSAGE(!parse_topic(bad), bad);
  BOOST_CHECK(valid_thing_name(std::string(128, 'a')));
  BOOST_CHECK(!valid_thing_name(std::string(129, 'a')));
  BOOST_CHECK(valid_shadow_name(std::string(64, 'a')));
  BOOST_CHECK(!valid_shadow_name(std::string(65, 'a')));
  BOOST_CHECK(!valid_thing_name(""));
  BOOST_CHECK(!valid_thing_name("a b"));
}

BOOST_AUTO_TEST_CASE(utf8) {
  BOOST_CHECK(valid_utf8("plain"));
  BOOST_CHECK(valid_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
  BOOST_CHECK(!valid_utf8("\xff"));
  BOOST_CHECK(!valid_utf8("\xc0\xaf"));         // overlong '/'
  BOOST_CHECK(!valid_utf8("\xed\xa0\x80"));     // surrogate
  BOOST_CHECK(!valid_utf8("\xf4\x90\x80\x80")); // above U+10FFFF
  BOOST_CHECK(!valid_utf8("\xe2\x82"));         // truncated
}

BOOST_AUTO_TEST_CASE(every_request_error_of_the_table) {
  struct row {
    std::string text;
    int code;
    std::string_view message;
  };
  std::vector<row> rows{
    {"{not json", 400, msg::invalid_json},
    {"[1,2]", 400, msg::invalid_json},
    {R"({"clientToken":"x"})", 400, msg::missing_state},
    {R"({"state":[1]})", 400, msg::state_not_object},
    {R"({"state":{"desired":5}})", 400, msg::desired_not_object},
    {R"({"state":{"reported":"x"}})", 400, msg::reported_not_object},
    {R"({"state":{},"version":"3"})", 400, msg::invalid_version},
    {R"({"state":{},"version":-1})", 400, msg::invalid_version},
    {R"({"state":{},"version":1.5})", 400, msg::invalid_version},
    {R"({"state":{},"clientToken":")" + std::string(65, 't') + "\"}", 400,
     msg::invalid_client_token},
    {R"({"state":{},"clientToken":7})", 400, msg::invalid_client_token},
    {R"({"state":{"desired":{"a":{"b":{"c":{"d":{"e":{"f":{"g":1}}}}}}}}})", 400,
     msg::too_deep},
    {std::string(200, '[') + std::string(200, ']'), 400, msg::too_deep},
    {R"({"state":{"delta":{}}})", 400, msg::invalid_node},
    {"{\"state\":{\"desired\":{\"a\":\"\xff\"}}}", 415, msg::not_utf8},
    {"{\"state\":{\"desired\":{\"a\":\"" + std::string(max_payload, 'x') + "\"}}}", 413,
     msg::too_large},
  };
  for (const auto& r : rows) {
    auto rej = refusal(r.text);
    BOOST_CHECK_EQUAL(rej.code, r.code);
    BOOST_CHECK_EQUAL(rej.message, r.message);
  }
  // Six levels are allowed; a valid token is read even from a refused request.
  parse_update(R"({"state":{"desired":{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}}})");
  BOOST_CHECK_EQUAL(client_token_of(R"({"clientToken":"tok","state":5})").value(), "tok");
  BOOST_CHECK(!client_token_of(R"({"clientToken":5})"));
  // Get and delete take an empty body, or JSON with a token; never garbage.
  BOOST_CHECK(!rejected(parse_request("", verb::get, max_payload)));
  BOOST_CHECK(!rejected(parse_request(R"({"clientToken":"a"})", verb::del, max_payload)));
  BOOST_CHECK_EQUAL(refusal("nope", verb::get).code, 400);
  BOOST_CHECK_EQUAL(refusal("", verb::update).code, 400);
}

BOOST_AUTO_TEST_CASE(first_update_creates_version_1_with_metadata) {
  auto r = update(std::nullopt,
                  R"({"state":{"desired":{"color":"red","cfg":{"mode":1}}},"clientToken":"c1"})",
                  1000);
  BOOST_CHECK_EQUAL(r.current.version, 1u);
  auto accepted = parsed(r.accepted);
  BOOST_CHECK_EQUAL(accepted["version"], 1);
  BOOST_CHECK_EQUAL(accepted["timestamp"], 1000);
  BOOST_CHECK_EQUAL(accepted["clientToken"], "c1");
  BOOST_CHECK_EQUAL(accepted["state"]["desired"]["color"], "red");
  BOOST_CHECK_EQUAL(accepted["metadata"]["desired"]["color"]["timestamp"], 1000);
  BOOST_CHECK_EQUAL(accepted["metadata"]["desired"]["cfg"]["mode"]["timestamp"], 1000);
  // AWS's key order.
  BOOST_CHECK_EQUAL(r.accepted.substr(0, 9), R"({"state":)");
  // Nothing reported: the whole desired section is the delta.
  auto delta = parsed(r.delta);
  BOOST_CHECK_EQUAL(delta["state"]["color"], "red");
  BOOST_CHECK_EQUAL(delta["state"]["cfg"]["mode"], 1);
  BOOST_CHECK_EQUAL(delta["metadata"]["color"]["timestamp"], 1000);
  BOOST_CHECK_EQUAL(delta["version"], 1);
  auto docs = parsed(r.documents);
  BOOST_CHECK(!docs.contains("previous"));
  BOOST_CHECK_EQUAL(docs["current"]["version"], 1);
  BOOST_CHECK_EQUAL(docs["current"]["state"]["desired"]["color"], "red");
}

BOOST_AUTO_TEST_CASE(merge_delta_documents_and_get) {
  auto a = update(std::nullopt, R"({"state":{"desired":{"color":"red","level":3}}})", 10);
  // The device reports one of the two: the delta keeps only the differing leaf, and a
  // reported-only update announces no delta.
  auto b = update(a.current, R"({"state":{"reported":{"color":"red","level":1}}})", 20);
  BOOST_CHECK(b.delta.empty());
  BOOST_CHECK_EQUAL(b.current.version, 2u);
  auto docs = parsed(b.documents);
  BOOST_CHECK_EQUAL(docs["previous"]["version"], 1);
  BOOST_CHECK(!docs["previous"]["state"].contains("reported"));
  BOOST_CHECK_EQUAL(docs["current"]["state"]["reported"]["level"], 1);
  BOOST_CHECK_EQUAL(docs["current"]["metadata"]["desired"]["color"]["timestamp"], 10);
  BOOST_CHECK_EQUAL(docs["current"]["metadata"]["reported"]["color"]["timestamp"], 20);
  // A partial desired update merges; the delta lists only what still differs.
  auto c = update(b.current, R"({"state":{"desired":{"level":5}}})", 30);
  auto delta = parsed(c.delta);
  BOOST_CHECK_EQUAL(delta["state"].size(), 1u);
  BOOST_CHECK_EQUAL(delta["state"]["level"], 5);
  BOOST_CHECK_EQUAL(delta["metadata"]["level"]["timestamp"], 30);
  BOOST_CHECK_EQUAL(c.current.desired["color"], "red");
  // Desired equal to reported: no delta event at all.
  auto d = update(c.current, R"({"state":{"desired":{"level":1}}})", 40);
  BOOST_CHECK(d.delta.empty());
  auto got = parsed(get_accepted(c.current, std::string{"g"}, 50));
  BOOST_CHECK_EQUAL(got["state"]["delta"]["level"], 5);
  BOOST_CHECK(!got["state"]["delta"].contains("color"));
  BOOST_CHECK_EQUAL(got["version"], 3);
  BOOST_CHECK_EQUAL(got["timestamp"], 50);
  BOOST_CHECK_EQUAL(got["clientToken"], "g");
  BOOST_CHECK_EQUAL(got["metadata"]["desired"]["level"]["timestamp"], 30);
  auto quiet = parsed(get_accepted(d.current, std::nullopt, 50));
  BOOST_CHECK(!quiet["state"].contains("delta"));
  BOOST_CHECK(!quiet.contains("clientToken"));
}

BOOST_AUTO_TEST_CASE(arrays_get_one_metadata_entry_per_element) {
  // As AWS (and Greengrass' shadow manager) keep it: an array's metadata is an array with
  // one entry per element, an object element gets one per key, an empty array none.
  auto a = update(std::nullopt,
                  R"({"state":{"desired":{"colors":["red",{"hue":1,"on":true}],"none":[]}}})",
                  100);
  auto meta = parsed(a.accepted)["metadata"]["desired"];
  BOOST_REQUIRE(meta["colors"].is_array());
  BOOST_REQUIRE_EQUAL(meta["colors"].size(), 2u);
  BOOST_CHECK_EQUAL(meta["colors"][0]["timestamp"], 100);
  BOOST_CHECK_EQUAL(meta["colors"][1]["hue"]["timestamp"], 100);
  BOOST_CHECK_EQUAL(meta["colors"][1]["on"]["timestamp"], 100);
  BOOST_CHECK_EQUAL(meta["none"], json::array());
  // The stored document keeps the same shape, and the delta carries it for the array.
  BOOST_CHECK_EQUAL(a.current.meta_desired["colors"], meta["colors"]);
  BOOST_CHECK_EQUAL(parsed(a.delta)["metadata"]["colors"][1]["hue"]["timestamp"], 100);
  // An update replaces the whole array: a shorter one leaves no stale entries behind,
  // and a scalar replacing an array gets a scalar's metadata again.
  auto b = update(a.current, R"({"state":{"desired":{"colors":["blue"],"none":5}}})", 200);
  auto got = parsed(get_accepted(b.current, std::nullopt, 300));
  BOOST_REQUIRE_EQUAL(got["metadata"]["desired"]["colors"].size(), 1u);
  BOOST_CHECK_EQUAL(got["metadata"]["desired"]["colors"][0]["timestamp"], 200);
  BOOST_CHECK_EQUAL(got["metadata"]["desired"]["none"]["timestamp"], 200);
}

BOOST_AUTO_TEST_CASE(nulls_delete_keys_empty_parents_and_sections) {
  auto a = update(std::nullopt,
                  R"({"state":{"desired":{"a":{"b":{"c":1}},"x":1},"reported":{"r":1}}})", 1);
  auto b = update(a.current, R"({"state":{"desired":{"a":{"b":{"c":null}}}}})", 2);
  BOOST_CHECK(!b.current.desired.contains("a")); // a.b emptied, then a
  BOOST_CHECK(!b.current.meta_desired.contains("a"));
  BOOST_CHECK_EQUAL(b.current.desired["x"], 1);
  BOOST_CHECK_EQUAL(parsed(b.accepted)["metadata"]["desired"]["a"]["b"]["c"]["timestamp"], 2);
  auto c = update(b.current, R"({"state":{"desired":null}})", 3);
  BOOST_CHECK(c.current.desired.is_null());
  BOOST_CHECK(c.current.meta_desired.is_null());
  BOOST_CHECK_EQUAL(c.current.reported["r"], 1);
  auto got = parsed(get_accepted(c.current, std::nullopt, 4));
  BOOST_CHECK(!got["state"].contains("desired"));
  BOOST_CHECK(!got["metadata"].contains("desired"));
  // Replacing an object with a leaf and back keeps the metadata in step.
  auto d = update(c.current, R"({"state":{"reported":{"r":{"deep":true}}}})", 5);
  BOOST_CHECK_EQUAL(d.current.meta_reported["r"]["deep"]["timestamp"], 5);
  auto e = update(d.current, R"({"state":{"reported":{"r":[1,2]}}})", 6);
  BOOST_CHECK_EQUAL(e.current.meta_reported["r"],
                    json::parse(R"([{"timestamp":6},{"timestamp":6}])"));
  BOOST_CHECK_EQUAL(e.current.reported["r"], json::parse("[1,2]"));
  auto f = update(e.current, R"({"state":{"reported":{"r":{"back":1}}}})", 7);
  BOOST_CHECK_EQUAL(f.current.meta_reported["r"]["back"]["timestamp"], 7);
  BOOST_CHECK_EQUAL(f.current.meta_reported["r"].size(), 1u);
}

BOOST_AUTO_TEST_CASE(version_check_and_size_limit) {
  auto a = update(std::nullopt, R"({"state":{"reported":{"t":1}}})", 1);
  auto b = update(a.current, R"({"state":{"reported":{"t":2}},"version":1})", 2);
  BOOST_CHECK_EQUAL(b.current.version, 2u);
  auto conflict = apply_update(b.current, std::nullopt,
                               parse_update(R"({"state":{"reported":{"t":3}},"version":1})"),
                               3, max_doc);
  BOOST_REQUIRE(rejected(conflict));
  BOOST_CHECK_EQUAL(rejected(conflict)->code, 409);
  BOOST_CHECK_EQUAL(rejected(conflict)->message, msg::version_conflict);
  // 413 counts desired + reported after the merge, against the configured limit.
  std::string big(5000, 'x');
  auto c = update(b.current, R"({"state":{"desired":{"big":")" + big + "\"}}}", 4);
  auto over = apply_update(c.current, std::nullopt,
                           parse_update(R"({"state":{"reported":{"big":")" + big + "\"}}}"),
                           5, max_doc);
  BOOST_REQUIRE(rejected(over));
  BOOST_CHECK_EQUAL(rejected(over)->code, 413);
  BOOST_CHECK(!rejected(apply_update(c.current, std::nullopt,
                                     parse_update(R"({"state":{"reported":{"big":")" + big
                                                  + "\"}}}"),
                                     5, 30720)));
}

BOOST_AUTO_TEST_CASE(tombstone_continues_versions_for_48_hours) {
  tombstone tomb{7, 1000};
  auto within = update(std::nullopt, R"({"state":{"reported":{"a":1}}})",
                       1000 + tombstone_seconds - 1, tomb);
  BOOST_CHECK_EQUAL(within.current.version, 8u);
  auto after = update(std::nullopt, R"({"state":{"reported":{"a":1}}})",
                      1000 + tombstone_seconds, tomb);
  BOOST_CHECK_EQUAL(after.current.version, 1u);
  // The version check sees the deleted shadow's version while the tombstone lives.
  auto stale = apply_update(std::nullopt, tomb,
                            parse_update(R"({"state":{"reported":{}},"version":0})"), 1001,
                            max_doc);
  BOOST_REQUIRE(rejected(stale));
  BOOST_CHECK_EQUAL(rejected(stale)->code, 409);
  BOOST_CHECK_EQUAL(parsed(delete_accepted(8, std::string{"d"}, 9))["version"], 8);
}

BOOST_AUTO_TEST_CASE(storage_round_trip_and_replies) {
  auto a = update(std::nullopt, R"({"state":{"desired":{"a":{"b":1}},"reported":{"c":"x"}}})",
                  77);
  auto text = a.current.serialize();
  auto back = document::deserialize(text);
  BOOST_REQUIRE(back);
  BOOST_CHECK_EQUAL(back->serialize(), text);
  BOOST_CHECK_EQUAL(back->version, 1u);
  BOOST_CHECK_EQUAL(back->timestamp, 77);
  BOOST_CHECK(!document::deserialize("{}"));
  BOOST_CHECK(!document::deserialize("garbage"));
  auto rej = parsed(rejected_payload({409, std::string{msg::version_conflict}}, "tk", 5));
  BOOST_CHECK_EQUAL(rej.dump(), R"({"code":409,"message":"Version conflict","timestamp":5,"clientToken":"tk"})");
  shadow_topic named{"lamp", "cfg", verb::get};
  BOOST_CHECK_EQUAL(no_shadow(named).message, "No shadow exists with name: 'lamp~cfg'");
  BOOST_CHECK_EQUAL(no_shadow(shadow_topic{"lamp", "", verb::get}).code, 404);
}
