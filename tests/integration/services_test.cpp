#define BOOST_TEST_MODULE services_test
#include <boost/test/unit_test.hpp>

#include "kernel_fixture.hpp"
#include "grove/rpc.hpp"

// Services (serve / rpc / readiness) and who may speak as whom (may_claim), for both
// slot kinds: each case runs with the plugins in process and in `isolation: process`
// (real `groved --plugin-host` children). Requirement ids refer to
// sdk/plugin/README.md, "Services".

using namespace grove;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

/// One kernel; plugins load in process or isolated as the case asks.
struct env : test::kernel_fixture {
  bool isolated;

  explicit env(bool iso) : isolated(iso) {
  }

  caf::error load(const std::string& name, const std::string& config,
                  std::vector<std::string> may_claim = {}) {
    return try_load(name, config, isolated, std::move(may_claim));
  }

  caf::expected<Envelope> request(const std::string& topic, const std::string& payload) {
    return k->request(topic, payload, std::chrono::seconds{10});
  }
};

/// Runs `body` once per slot kind.
template <class F>
void both_kinds(F body) {
  for (bool iso : {false, true}) {
    BOOST_TEST_CONTEXT("isolated: " << iso) {
      env e{iso};
      body(e);
    }
  }
}

using echo_rpc = rpc<Envelope, Envelope>;

} // namespace

// [services-2] A claim overlapping another plugin's is a load error naming both.
BOOST_AUTO_TEST_CASE(a_second_claim_is_a_load_error_naming_both_plugins) {
  both_kinds([](env& e) {
    BOOST_REQUIRE(!e.load("echo", "{serve: 'svc/+/get'}"));
    BOOST_TEST(e.info("echo").isolation() == (e.isolated ? "process" : "in_process"));
    auto err = e.load("echo_b", "{listen: b/in, serve: 'svc/a/#'}");
    BOOST_REQUIRE(err);
    auto text = describe(err);
    BOOST_TEST(contains(text, "'echo_b' cannot serve 'svc/a/#'"), text);
    BOOST_TEST(contains(text, "'echo' serves 'svc/+/get'"), text);
    BOOST_TEST(e.k->plugins().plugins_size() == 1);
    // The first claim is untouched; a filter no topic shares with it is fine.
    auto r = e.request("svc/a/get", "x");
    BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
    BOOST_TEST(r->source() == "echo");
    BOOST_REQUIRE(!e.load("echo_b", "{listen: b/in, serve: 'svc/a'}"));
    r = e.request("svc/a", "y");
    BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
    BOOST_TEST(r->source() == "echo_b");
    BOOST_TEST(e.info("echo").serves_size() == 1);
    BOOST_TEST(e.info("echo").serves(0) == "svc/+/get");
  });
}

// [services-3] Requests go only to the server; [services-4] no server: no_route.
BOOST_AUTO_TEST_CASE(subscribers_never_get_requests_and_unserved_is_no_route) {
  both_kinds([](env& e) {
    test::collector spy{*e.k, "svc/#"};
    auto r = e.request("svc/x/get", "secret");
    BOOST_REQUIRE(!r);
    BOOST_TEST(r.error() == errc::no_route);
    // A plugin that only subscribes does not answer either.
    BOOST_REQUIRE(!e.load("echo_b", "{listen: 'svc/#'}"));
    r = e.request("svc/x/get", "secret");
    BOOST_REQUIRE(!r);
    BOOST_TEST(r.error() == errc::no_route);
    BOOST_REQUIRE(!e.load("echo", "{serve: 'svc/+/get', prefix: 'ok:'}"));
    r = e.request("svc/x/get", "secret");
    BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
    BOOST_TEST(r->payload() == "ok:secret");
    // The subscriber saw only the plain publish that marks the end.
    test::pub(*e.k, "svc/marker", "end");
    BOOST_REQUIRE(spy.wait_for(1));
    auto got = spy.messages();
    BOOST_REQUIRE(got.size() == 1u);
    BOOST_TEST(got[0].payload() == "end");
    // Unloading the server gives the claim up.
    BOOST_REQUIRE(!e.k->unload("echo"));
    r = e.request("svc/x/get", "secret");
    BOOST_REQUIRE(!r);
    BOOST_TEST(r.error() == errc::no_route);
  });
}

// [services-6] A caller waits for a service: served later -> handler; never -> timeout.
BOOST_AUTO_TEST_CASE(readiness_wait_fires_when_served_and_times_out_otherwise) {
  both_kinds([](env& e) {
    test::collector out{*e.k, "test/echo/out"};
    BOOST_REQUIRE(!e.load("echo", "{await: 'svc/late/get', await_ms: 60000}"));
    BOOST_TEST(e.k->wait_served("svc/late/get", std::chrono::milliseconds{1})
               == errc::timeout);
    BOOST_REQUIRE(!e.load("echo_b", "{listen: b/in, serve: 'svc/+/get'}"));
    BOOST_REQUIRE(out.wait_for(1));
    BOOST_TEST(out.messages()[0].payload() == "served svc/late/get");
    BOOST_TEST(!e.k->wait_served("svc/late/get", std::chrono::seconds{10}));
    BOOST_REQUIRE(!e.k->unload("echo"));
    BOOST_REQUIRE(!e.load("echo", "{await: 'svc/never', await_ms: 50}"));
    BOOST_REQUIRE(out.wait_for(2));
    auto msg = out.messages()[1].payload();
    BOOST_TEST(contains(msg, "not served: timeout"), msg);
  });
}

// [services-5] Typed calls: errors keep code and category; malformed payloads are
// refused with errc::malformed, never a crash.
BOOST_AUTO_TEST_CASE(typed_rpc_round_trip_errors_and_malformed_payloads) {
  both_kinds([](env& e) {
    BOOST_REQUIRE(!e.load("echo", "{typed_serve: 'svc/typed', prefix: 't:'}"));
    echo_rpc call{"svc/typed"};
    auto send = [&](Envelope req) { return e.k->request(std::move(req), std::chrono::seconds{10}); };
    Envelope req;
    req.set_payload("hello");
    auto resp = call.call_with(send, req);
    BOOST_REQUIRE_MESSAGE(resp, test::error_text(resp));
    BOOST_TEST(resp->payload() == "t:hello");
    req.set_payload("fail");
    resp = call.call_with(send, req);
    BOOST_REQUIRE(!resp);
    BOOST_TEST(resp.error() == errc::invalid_state);
    BOOST_TEST(resp.error().category() == caf::atom("grove"));
    BOOST_TEST(contains(describe(resp.error()), "asked to fail"));
    // Another content type, then bytes that do not parse.
    Envelope wrong;
    wrong.set_topic("svc/typed");
    wrong.set_content_type("application/json");
    wrong.set_payload("{}");
    auto r = e.k->request(wrong, std::chrono::seconds{10});
    BOOST_REQUIRE(!r);
    BOOST_TEST(r.error() == errc::malformed);
    BOOST_TEST(contains(describe(r.error()), "expected 'application/x-protobuf; "
                                             "messageType=grove.Envelope'"),
               describe(r.error()));
    wrong.set_content_type(echo_rpc::request_type());
    wrong.set_payload(std::string{"\xff\xff\xff\xff", 4});
    r = e.k->request(wrong, std::chrono::seconds{10});
    BOOST_REQUIRE(!r);
    BOOST_TEST(r.error() == errc::malformed);
    // The server is still there.
    req.set_payload("again");
    resp = call.call_with(send, req);
    BOOST_REQUIRE_MESSAGE(resp, test::error_text(resp));
    BOOST_TEST(resp->payload() == "t:again");
  });
}

// [services-7] Claims belong to the slot: they survive a restart of the plugin.
BOOST_AUTO_TEST_CASE(claims_survive_a_restart) {
  both_kinds([](env& e) {
    // In a child a segfault is the crash to survive; in process an exception.
    BOOST_REQUIRE(!e.load("echo", e.isolated ? "{serve: 'svc/s', segv_on: boom}"
                                             : "{serve: 'svc/s', crash_on: boom}"));
    test::pub(*e.k, "test/echo/in", "boom");
    BOOST_REQUIRE(e.wait_until([&] {
      auto i = e.info("echo");
      return i.restarts() >= 1 && i.state() == "running";
    }));
    auto r = e.request("svc/s", "after");
    BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
    BOOST_TEST(r->payload() == "after");
    // Still exclusive.
    BOOST_REQUIRE(e.load("echo_b", "{listen: b/in, serve: 'svc/#'}"));
  });
}

// [claims-1] A source within may_claim passes; [claims-2] another one is refused,
// counted and never reaches a subscriber, for publishes and requests alike.
BOOST_AUTO_TEST_CASE(sources_are_authorized_by_the_kernel) {
  both_kinds([](env& e) {
    test::collector granted{*e.k, "granted/out"};
    test::collector refused{*e.k, "refused/out"};
    BOOST_REQUIRE(!e.load("echo", "{listen: granted/in, answer: granted/out, "
                                  "claim_as: 'device:lamp', call_as: 'function:f'}",
                          {"device:*", "function:f"}));
    BOOST_REQUIRE(!e.load("echo_b", "{listen: refused/in, answer: refused/out, "
                                    "claim_as: 'cloud', call_as: 'device:lamp'}",
                          {"device:other"}));
    BOOST_REQUIRE(!e.load("echo_c", "{listen: c/in, serve: 'svc/who'}"));
    test::pub(*e.k, "granted/in", "on");
    BOOST_REQUIRE(granted.wait_for(1));
    BOOST_TEST(granted.messages()[0].source() == "device:lamp");
    BOOST_TEST(granted.messages()[0].payload() == "on");
    test::pub(*e.k, "refused/in", "spoof");
    BOOST_REQUIRE(e.wait_until([&] { return e.info("echo_b").refused_sources() == 1u; }));
    // Requests: the server sees the granted source; the refused one never gets there.
    test::pub(*e.k, "granted/in", "call:svc/who");
    BOOST_REQUIRE(granted.wait_for(2));
    BOOST_TEST(granted.messages()[1].payload() == "reply: from function:f");
    test::pub(*e.k, "refused/in", "call:svc/who");
    BOOST_REQUIRE(e.wait_until([&] { return e.info("echo_b").refused_sources() == 2u; }));
    // Nothing from echo_b carried a source it does not own.
    test::pub(*e.k, "refused/out", "marker");
    auto want = e.isolated ? 2u : 3u; // in process the refusal is echoed back as text
    BOOST_REQUIRE(refused.wait_for(want));
    for (auto& m : refused.messages())
      BOOST_TEST((m.source() == "echo_b" || m.source() == "test"), m.source());
    BOOST_TEST(e.info("echo").refused_sources() == 0u);
    BOOST_TEST(e.info("echo_c").refused_sources() == 0u);
  });
}
