#define BOOST_TEST_MODULE ota_jobs_test
#include <boost/test/unit_test.hpp>

#include "jobs.hpp"

#include "grove/errors.hpp"

#include <nlohmann/json.hpp>

using namespace grove::ota::jobs;
using json = nlohmann::json;

namespace {

template <class T>
std::string why(const caf::expected<T>& x) {
  return x ? std::string{"ok"} : grove::describe(x.error());
}

} // namespace

BOOST_AUTO_TEST_CASE(topics_follow_aws) {
  BOOST_TEST(notify_next_topic("core") == "$aws/things/core/jobs/notify-next");
  BOOST_TEST(get_topic("core", "$next") == "$aws/things/core/jobs/$next/get");
  BOOST_TEST(update_topic("core", "job-1") == "$aws/things/core/jobs/job-1/update");
  auto f = filters("core");
  BOOST_TEST(f.size() == 5u);
  BOOST_TEST((std::find(f.begin(), f.end(), "$aws/things/core/jobs/+/update/rejected") != f.end()));
  // A job's own get replies too: the re-read after a VersionMismatch.
  BOOST_TEST((std::find(f.begin(), f.end(), "$aws/things/core/jobs/+/get/accepted") != f.end()));
  BOOST_TEST(job_of("$aws/things/core/jobs/job-1/update/accepted", "core", "/update/accepted")
             == "job-1");
  BOOST_TEST(job_of("$aws/things/core/jobs/$next/get/accepted", "core", "/get/accepted") == "$next");
  BOOST_TEST(job_of("$aws/things/core/jobs/job-1/get/accepted", "core", "/update/accepted") == "");
  BOOST_TEST(job_of("$aws/things/other/jobs/job-1/get/accepted", "core", "/get/accepted") == "");
  BOOST_TEST(job_of("$aws/things/core/jobs//get/accepted", "core", "/get/accepted") == "");
  BOOST_TEST(job_of("$aws/things/core/jobs/a/b/get/accepted", "core", "/get/accepted") == "");
  BOOST_TEST(job_of("$aws/things/core/jobs/get/accepted", "core", "/get/accepted") == "");
  BOOST_TEST(valid_thing_name("my:core_1-a"));
  BOOST_TEST(!valid_thing_name("a/b"));
  BOOST_TEST(!valid_thing_name(std::string(129, 'a')));
  BOOST_TEST(!valid_job_id("a:b"));
  BOOST_TEST(!valid_job_id("+"));
}

BOOST_AUTO_TEST_CASE(executions_are_read_from_notify_next_and_get) {
  auto ex = parse_execution(R"({"timestamp":1,"execution":{"jobId":"ota-7","status":"QUEUED",
    "versionNumber":2,"jobDocument":{"operation":"grove-ota","bundle":"/var/b.tar"}}})");
  BOOST_REQUIRE_MESSAGE(ex, why(ex));
  BOOST_REQUIRE(ex->has_value());
  BOOST_TEST((*ex)->job_id == "ota-7");
  BOOST_TEST((*ex)->status == "QUEUED");
  BOOST_TEST((*ex)->version_number == 2);
  auto b = bundle_of((*ex)->document);
  BOOST_REQUIRE_MESSAGE(b, why(b));
  BOOST_TEST(*b == "/var/b.tar");
  // notify-next without an execution: nothing pending.
  auto none = parse_execution(R"({"timestamp":1})");
  BOOST_REQUIRE(none);
  BOOST_TEST(!none->has_value());
  for (auto bad : {"[]", "{\"execution\":1}", "{\"execution\":{\"status\":\"QUEUED\"}}",
                   "{\"execution\":{\"jobId\":\"a/b\",\"status\":\"QUEUED\"}}",
                   "{\"execution\":{\"jobId\":\"a\"}}",
                   "{\"execution\":{\"jobId\":\"a\",\"status\":\"QUEUED\",\"versionNumber\":\"x\"}}"})
    BOOST_TEST(!parse_execution(bad), bad);
}

BOOST_AUTO_TEST_CASE(job_documents_name_a_bundle) {
  BOOST_TEST(*bundle_of(R"({"operation":"grove-ota","bundle":"file:///opt/b.tar"})") == "/opt/b.tar");
  auto expect = [](const char* doc, const char* needle) {
    auto b = bundle_of(doc);
    BOOST_REQUIRE(!b);
    BOOST_TEST(why(b).find(needle) != std::string::npos, why(b));
  };
  expect(R"({"operation":"other","bundle":"/b"})", "not 'grove-ota'");
  expect(R"({"operation":"grove-ota"})", "names no 'bundle'");
  // https:// is downloaded: returned as it is.
  BOOST_TEST(*bundle_of(R"({"operation":"grove-ota","bundle":"https://h.example:8443/b.tar?x=1"})")
             == "https://h.example:8443/b.tar?x=1");
  expect(R"({"operation":"grove-ota","bundle":"http://x/b.tar"})", "https:// URL");
  expect(R"({"operation":"grove-ota","bundle":"ftp://x/b.tar"})", "https:// URL");
  expect(R"({"operation":"grove-ota","bundle":"https:///b.tar"})", "no host");
  expect(R"({"operation":"grove-ota","bundle":"https://u:p@x/b.tar"})", "user info");
  expect(R"({"operation":"grove-ota","bundle":"https://x/a b.tar"})", "space");
  expect(R"({"operation":"grove-ota","bundle":"https://x/a\nb.tar"})", "control character");
  expect(R"({"operation":"grove-ota","bundle":"relative.tar"})", "absolute path");
  expect(R"({"operation":"grove-ota","bundle":"/a/../etc/shadow"})", "absolute path");
}

BOOST_AUTO_TEST_CASE(update_payloads) {
  auto p = json::parse(update_payload("FAILED", {{"reason", std::string(2000, 'x')}}, 3, "t1"));
  BOOST_TEST(p["status"] == "FAILED");
  BOOST_TEST(p["statusDetails"]["reason"].get<std::string>().size() == 1024u);
  BOOST_TEST(p["expectedVersion"] == 3);
  BOOST_TEST(p["includeJobExecutionState"] == true);
  BOOST_TEST(p["clientToken"] == "t1");
  auto q = json::parse(update_payload("IN_PROGRESS", {}, 0, ""));
  BOOST_TEST(!q.contains("expectedVersion"));
  BOOST_TEST(q["statusDetails"].is_object());
  // A reason cut inside a UTF-8 sequence stays valid UTF-8 (the dump would throw).
  auto r = json::parse(update_payload("FAILED", {{"reason", std::string(1023, 'x') + "é"}}, 0, ""));
  BOOST_TEST(r["statusDetails"]["reason"].get<std::string>().size() == 1023u);
  BOOST_TEST(json::parse(get_payload("tok"))["clientToken"] == "tok");
}

BOOST_AUTO_TEST_CASE(update_answers_carry_the_version) {
  auto ok = parse_update_answer(R"({"executionState":{"status":"IN_PROGRESS",
    "statusDetails":{},"versionNumber":3},"timestamp":1,"clientToken":"t"})", false);
  BOOST_REQUIRE_MESSAGE(ok, why(ok));
  BOOST_TEST(ok->code.empty());
  BOOST_TEST(ok->version == 3);
  BOOST_TEST(ok->state_status == "IN_PROGRESS");
  // Without includeJobExecutionState: no version.
  auto bare = parse_update_answer(R"({"timestamp":1})", false);
  BOOST_REQUIRE(bare);
  BOOST_TEST(bare->version == 0);
  auto mismatch = parse_update_answer(R"({"code":"VersionMismatch","message":"m",
    "executionState":{"status":"IN_PROGRESS","versionNumber":5}})", true);
  BOOST_REQUIRE_MESSAGE(mismatch, why(mismatch));
  BOOST_TEST(mismatch->code == "VersionMismatch");
  BOOST_TEST(mismatch->message == "m");
  BOOST_TEST(mismatch->version == 5);
  for (auto bad : {"[]", "nope", "{\"executionState\":1}",
                   "{\"executionState\":{\"versionNumber\":\"5\"}}",
                   "{\"executionState\":{\"versionNumber\":-1}}"})
    BOOST_TEST(!parse_update_answer(bad, false), bad);
  BOOST_TEST(!parse_update_answer(R"({"message":"no code"})", true));
  BOOST_TEST(terminal("CANCELED"));
  BOOST_TEST(terminal("SUCCEEDED"));
  BOOST_TEST(!terminal("IN_PROGRESS"));
  BOOST_TEST(!terminal("QUEUED"));
}
