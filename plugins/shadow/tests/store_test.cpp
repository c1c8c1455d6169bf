// The shadow plugin's storage costs, in a real in-process kernel (the SDK harness) with
// the real plugin and its SQLite file: a read (ListNamedShadowsForThing, get) never makes
// the group writer commit, neither when nothing waits to be written (no commit, the WAL
// file does not grow) nor while writes wait for their commit (the list waits for them
// instead of cutting the batch short), and a list still sees every write made before it;
// a get of a shadow not in memory answers from its row as one in memory does.
#define BOOST_TEST_MODULE shadow_store_test
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <future>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include "grove/errors.hpp"
#include "grove/kernel/kernel.hpp"
#include "grove/shadow/client.hpp"
#include "grove/testing/harness.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
namespace sh = grove::shadow;
using namespace std::chrono_literals;

namespace {

// commit_delay_ms at its longest: the writer holds a batch open for a second, so a read
// that made it commit shows as one commit more. The in-flight bound and the local
// request limits high: the updates waiting in that batch are all lamp's.
constexpr auto config = "{commit_delay_ms: 1000, max_inflight_per_thing: 1000, rateLimits:"
                        " {maxTotalLocalRequestsRate: 1000000,"
                        " maxLocalRequestsPerSecondPerThing: 1000000}}";

struct fixture {
  grove::testing::harness h{SHADOW_PLUGIN, config};

  fixture() {
    BOOST_REQUIRE(!h.start());
  }

  int64_t metric(const std::string& name) const {
    auto info = h.info(); // kept: metrics() refers into it
    for (const auto& m : info.metrics())
      if (m.name() == name)
        return m.value();
    BOOST_FAIL("no metric " + name);
    return -1;
  }

  // One call on sh-1..sh-3: the reply's code (0 for an error of the bus).
  uint32_t call(std::string_view topic, const std::string& name, std::string payload = {}) {
    auto r = h.request(std::string{topic},
                       sh::make_request("lamp", name, std::move(payload)).SerializeAsString(),
                       30s);
    sh::Reply reply;
    if (!r || !reply.ParseFromString(r->payload()))
      return 0;
    return reply.code();
  }

  // The named shadows of lamp (one page of up to 100); an error as ["error: ..."].
  std::vector<std::string> list() {
    auto r = h.request(std::string{sh::list_topic},
                       sh::make_list("lamp", 100).SerializeAsString(), 30s);
    if (!r)
      return {"error: " + grove::describe(r.error())};
    sh::ListReply reply;
    if (!reply.ParseFromString(r->payload()))
      return {"error: not a ListReply"};
    return {reply.results().begin(), reply.results().end()};
  }

  fs::path wal() const {
    return h.state_dir() / "shadow.db-wal";
  }
};

std::string name_of(int i) {
  // append, not "s" + to_string: GCC 12 warns falsely (-Wrestrict) on the latter.
  return std::string{"s"}.append(std::to_string(100 + i)); // byte order is numeric order
}

} // namespace

BOOST_FIXTURE_TEST_CASE(reads_with_nothing_to_write_commit_nothing, fixture) {
  BOOST_REQUIRE_EQUAL(call(sh::update_topic, "a", R"({"state":{"reported":{"x":1}}})"), 200u);
  BOOST_REQUIRE(grove::test::wait_until([&] { return metric("commits") >= 1; }));
  auto commits = metric("commits");
  auto wal_size = fs::file_size(wal());
  for (int i = 0; i < 100; ++i) {
    BOOST_REQUIRE(list() == std::vector<std::string>{"a"});
    BOOST_REQUIRE_EQUAL(call(sh::get_topic, "a"), 200u);
  }
  BOOST_TEST(metric("lists") == 100);
  BOOST_TEST(metric("commits") == commits, "100 lists and 100 gets committed "
                                               << metric("commits") - commits << " times");
  BOOST_TEST(fs::file_size(wal()) == wal_size);
}

// Each list comes while an update waits in the writer's open batch (commit_delay_ms): a
// list that flushed would commit that batch at once, one commit per list. Instead each
// list waits for the commit the batch makes anyway, and still lists that update.
BOOST_FIXTURE_TEST_CASE(a_list_waits_for_pending_writes_without_committing_them, fixture) {
  constexpr int n = 20;
  BOOST_REQUIRE(grove::test::wait_until([&] { return metric("commits") >= 1; })); // start-up
  auto commits = metric("commits");
  std::vector<std::future<uint32_t>> updates;
  std::vector<std::future<std::vector<std::string>>> lists;
  for (int i = 0; i < n; ++i) {
    // In this order on the plugin's actor: each request is known taken before the next
    // is sent (its counter moved), whatever the threads.
    updates.push_back(std::async(std::launch::async, [this, i] {
      return call(sh::update_topic, name_of(i), R"({"state":{"reported":{"x":1}}})");
    }));
    BOOST_REQUIRE(grove::test::wait_until([&] { return metric("updates") == i + 1; }));
    lists.push_back(std::async(std::launch::async, [this] { return list(); }));
    BOOST_REQUIRE(grove::test::wait_until([&] { return metric("lists") == i + 1; }));
  }
  for (auto& u : updates)
    BOOST_TEST(u.get() == 200u);
  for (int i = 0; i < n; ++i) {
    auto got = lists[i].get();
    BOOST_TEST_INFO("list " << i);
    BOOST_TEST(got.size() >= static_cast<size_t>(i + 1)); // sees the writes before it
    if (got.size() > static_cast<size_t>(i))
      BOOST_TEST(got[i] == name_of(i));
  }
  // A list that commits what waits makes this n, whatever the machine's speed; batches
  // of a second make it 1 on most machines (a bound, not a timing: it needs a second
  // between every two of the test's requests to reach n).
  auto made = metric("commits") - commits;
  BOOST_TEST_MESSAGE(n << " updates and " << n << " lists: " << made << " commits");
  BOOST_TEST(made < n, n << " updates, each followed by a list, took " << made << " commits");
}

namespace {

// A cache of 16 (the least allowed): a few updates of other shadows push one out.
constexpr auto small_cache = "{cache_entries: 16, rateLimits: {maxTotalLocalRequestsRate:"
                             " 1000000, maxLocalRequestsPerSecondPerThing: 1000000}}";

struct small_cache_fixture {
  grove::testing::harness h{SHADOW_PLUGIN, small_cache};

  small_cache_fixture() {
    BOOST_REQUIRE(!h.start());
  }

  // One call on sh-1..sh-3: the reply's code and payload ("" for an error of the bus).
  std::pair<uint32_t, std::string> call(std::string_view topic, const std::string& name,
                                        std::string payload = {}) {
    auto r = h.request(std::string{topic},
                       sh::make_request("lamp", name, std::move(payload)).SerializeAsString(),
                       30s);
    sh::Reply reply;
    if (!r || !reply.ParseFromString(r->payload()))
      return {0, ""};
    return {reply.code(), reply.payload()};
  }

  void push_out_of_memory() {
    for (int i = 0; i < 40; ++i)
      BOOST_REQUIRE_EQUAL(call(sh::update_topic, name_of(i), R"({"state":{"reported":{}}})")
                            .first,
                          200u);
  }
};

// A reply with its top-level timestamp (the time of the answer) taken out; everything
// else, key order included, as sent.
std::string without_answer_time(std::string reply) {
  auto at = reply.rfind(",\"timestamp\":");
  if (at == std::string::npos)
    return reply;
  auto end = reply.find_first_not_of("0123456789", at + 13);
  return reply.erase(at, end - at);
}

} // namespace

// A get of a shadow no longer in memory answers from the stored row without parsing it
// (get_accepted_from_stored) and without taking a cache slot: byte for byte the answer
// the document in memory gave, delta and an escaped clientToken included. A row written
// before the stored form carried the delta (schema 2, form 0) is parsed and answered in
// full, delta included.
BOOST_FIXTURE_TEST_CASE(a_get_from_disk_answers_as_one_from_memory, small_cache_fixture) {
  constexpr auto get = R"({"clientToken":"t\"1\u00e9"})";
  BOOST_REQUIRE_EQUAL(call(sh::update_topic, "a",
                           R"({"state":{"desired":{"x":1,"y":{"z":2}},"reported":{"x":2}}})")
                        .first,
                      200u);
  auto [code, in_memory] = call(sh::get_topic, "a", get);
  BOOST_REQUIRE_EQUAL(code, 200u);
  BOOST_TEST_MESSAGE("from memory: " << in_memory);
  BOOST_REQUIRE(in_memory.find("\"delta\":{\"x\":1,\"y\":{\"z\":2}}") != std::string::npos);
  push_out_of_memory();
  for (int i = 0; i < 3; ++i) { // the same each time: a get does not bring it back in
    auto [c, from_disk] = call(sh::get_topic, "a", get);
    BOOST_TEST(c == 200u);
    BOOST_TEST(without_answer_time(from_disk) == without_answer_time(in_memory));
  }
  // The row as schema 2 wrote it: no delta in the stored text, form 0.
  auto old = nlohmann::ordered_json::parse(in_memory);
  old["state"].erase("delta");
  old.erase("clientToken");
  {
    sqlite3* db = nullptr;
    BOOST_REQUIRE_EQUAL(sqlite3_open((h.state_dir() / "shadow.db").c_str(), &db), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    BOOST_REQUIRE_EQUAL(sqlite3_prepare_v2(db, "UPDATE shadows SET doc = ?, form = 0 WHERE"
                                               " thing = 'lamp' AND name = 'a'",
                                           -1, &st, nullptr),
                        SQLITE_OK);
    auto text = old.dump();
    sqlite3_bind_text(st, 1, text.c_str(), -1, SQLITE_TRANSIENT);
    BOOST_CHECK_EQUAL(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    BOOST_CHECK_EQUAL(sqlite3_changes(db), 1);
    sqlite3_close(db);
  }
  auto [c, from_old_row] = call(sh::get_topic, "a", get);
  BOOST_TEST(c == 200u);
  BOOST_TEST(without_answer_time(from_old_row) == without_answer_time(in_memory));
}
