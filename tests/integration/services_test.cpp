#define BOOST_TEST_MODULE services_test
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "kernel_fixture.hpp"
#include "grove/group.pb.h"
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
    return k->request(topic, payload, test::scaled(std::chrono::seconds{10}));
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

// [services-1] Answers from a thread of the plugin's own (not its slot) reach their
// requesters, each its own, from many requesters at once; a second answer is ignored.
BOOST_AUTO_TEST_CASE(answers_from_a_plugin_thread_reach_their_requesters) {
  both_kinds([](env& e) {
    BOOST_REQUIRE(!e.load("echo", "{serve: svc/t, prefix: 'r:'}"));
    std::atomic<int> right{0}, wrong{0};
    std::vector<std::thread> requesters;
    for (int t = 0; t < 8; ++t)
      requesters.emplace_back([&, t] {
        for (int i = 0; i < 25; ++i) {
          auto p = std::to_string(t) + "." + std::to_string(i);
          auto r = e.request("svc/t", "thread:" + p);
          (r && r->payload() == "r:" + p ? right : wrong)++;
        }
      });
    for (auto& t : requesters)
      t.join();
    BOOST_TEST(right.load() == 200);
    BOOST_TEST(wrong.load() == 0);
    // The slot's own answers are unchanged beside them.
    auto r = e.request("svc/t", "x");
    BOOST_TEST((r && r->payload() == "r:x"));
  });
}

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
    BOOST_TEST(!e.k->wait_served("svc/late/get", test::scaled(std::chrono::seconds{10})));
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
    auto send = [&](Envelope req) {
      return e.k->request(std::move(req), test::scaled(std::chrono::seconds{10}));
    };
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
    auto r = e.k->request(wrong, test::scaled(std::chrono::seconds{10}));
    BOOST_REQUIRE(!r);
    BOOST_TEST(r.error() == errc::malformed);
    BOOST_TEST(contains(describe(r.error()), "expected 'application/x-protobuf; "
                                             "messageType=grove.Envelope'"),
               describe(r.error()));
    wrong.set_content_type(echo_rpc::request_type());
    wrong.set_payload(std::string{"\xff\xff\xff\xff", 4});
    r = e.k->request(wrong, test::scaled(std::chrono::seconds{10}));
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

// [owners-1] Events on an owned topic come from its owner alone: another plugin's
// publish there and grovectl's are refused and counted (status and metrics), the
// owner's own are delivered, and unowned `$grove/` topics stay open.
BOOST_AUTO_TEST_CASE(only_the_owner_publishes_on_its_event_topics) {
  both_kinds([](env& e) {
    test::collector out{*e.k, "$grove/t/out/#"};
    test::collector open{*e.k, "$grove/t/open"};
    BOOST_REQUIRE(!e.load("echo", "{listen: o/in, answer: '$grove/t/out/a', "
                                  "own: '$grove/t/out/#'}"));
    BOOST_REQUIRE(!e.load("echo_b", "{listen: b/in, answer: '$grove/t/out/b'}"));
    BOOST_REQUIRE(!e.load("echo_c", "{listen: c/in, answer: '$grove/t/open'}"));
    test::pub(*e.k, "b/in", "forged by a plugin");
    BOOST_REQUIRE(
      e.wait_until([&] { return e.k->status().bus_refused_not_owner() == 1u; }));
    // grovectl (the control server's path) is refused with the owner named.
    Envelope g;
    g.set_topic("$grove/t/out/c");
    g.set_payload("forged by grovectl");
    auto r = e.k->publish(g);
    BOOST_REQUIRE(!r);
    BOOST_TEST(r.error() == errc::not_authorized);
    BOOST_TEST(contains(describe(r.error()), "belong to 'echo'"), describe(r.error()));
    BOOST_TEST(e.k->status().bus_refused_not_owner() == 2u);
    BOOST_TEST(contains(e.k->scrape(), "grove_bus_refused_not_owner_total 2"));
    // The owner's own events arrive, and nothing else did.
    test::pub(*e.k, "o/in", "real");
    test::pub(*e.k, "b/in", "forged again");
    test::pub(*e.k, "o/in", "real 2");
    BOOST_REQUIRE(out.wait_for(2));
    BOOST_REQUIRE(e.wait_until([&] { return e.k->status().bus_refused_not_owner() == 3u; }));
    auto got = out.messages();
    BOOST_REQUIRE(got.size() == 2u);
    BOOST_TEST(got[0].payload() == "real");
    BOOST_TEST(got[1].payload() == "real 2");
    for (auto& m : got)
      BOOST_TEST(m.source() == "echo");
    // A `$grove/` topic nobody owns is open to every plugin.
    test::pub(*e.k, "c/in", "open");
    BOOST_REQUIRE(open.wait_for(1));
    BOOST_TEST(open.messages()[0].source() == "echo_c");
    BOOST_TEST(e.info("echo_b").state() == "running");
  });
}

// [owners-2] Ownership is exclusive: an overlapping claim fails the load naming both,
// `$grove/group/#` is the kernel's, nothing outside `$grove/` is owned, and unloading
// the owner frees its topics. Neither grovectl nor a plugin granted every source may
// send as the kernel, and grovectl cannot forge a group.
BOOST_AUTO_TEST_CASE(ownership_is_exclusive_and_the_kernel_owns_its_topics) {
  both_kinds([](env& e) {
    BOOST_REQUIRE(!e.load("echo", "{listen: a/in, own: '$grove/t/out/#'}"));
    BOOST_TEST(e.k->bus().owner_of("$grove/t/out/x/y") == "echo");
    BOOST_TEST(e.k->bus().owner_of("$grove/group/current") == "kernel");
    BOOST_TEST(e.k->bus().owner_of("$grove/mm/in/x").empty());
    auto err = e.load("echo_b", "{listen: b/in, own: '$grove/t/out/x'}");
    BOOST_REQUIRE(err);
    BOOST_TEST(contains(describe(err), "'echo_b' cannot own '$grove/t/out/x': 'echo' owns "
                                       "'$grove/t/out/#'"),
               describe(err));
    err = e.load("echo_b", "{listen: b/in, own: '$grove/group/current'}");
    BOOST_REQUIRE(err);
    BOOST_TEST(contains(describe(err), "'kernel' owns '$grove/group/#'"), describe(err));
    err = e.load("echo_b", "{listen: b/in, own: 'plain/#'}");
    BOOST_REQUIRE(err);
    BOOST_TEST(contains(describe(err), "only topics under $grove/ have owners"),
               describe(err));
    // A forged group with the highest version, as grovectl pub would send it.
    test::collector current{*e.k, "$grove/group/current"};
    group::Group forged;
    forged.set_name("forged");
    forged.set_version(UINT64_MAX);
    Envelope g;
    g.set_topic("$grove/group/current");
    g.set_payload(forged.SerializeAsString());
    auto r = e.k->publish(g);
    BOOST_REQUIRE(!r);
    BOOST_TEST(contains(describe(r.error()), "belong to 'kernel'"), describe(r.error()));
    g.set_source("kernel");
    g.set_topic("t/x");
    r = e.k->publish(g);
    BOOST_REQUIRE(!r);
    BOOST_TEST(r.error() == errc::not_authorized);
    // A plugin granted every source still cannot claim the kernel's.
    test::collector out{*e.k, "k/out"};
    BOOST_REQUIRE(
      !e.load("echo_c", "{listen: k/in, answer: k/out, claim_as: kernel}", {"*"}));
    test::pub(*e.k, "k/in", "as kernel");
    BOOST_REQUIRE(e.wait_until([&] { return e.info("echo_c").refused_sources() == 1u; }));
    // Unloading the owner ends its ownership.
    BOOST_REQUIRE(!e.k->unload("echo"));
    BOOST_TEST(e.k->bus().owner_of("$grove/t/out/x/y").empty());
    BOOST_REQUIRE(!e.load("echo_b", "{listen: b/in, own: '$grove/t/out/x'}"));
    BOOST_TEST(e.k->bus().owner_of("$grove/t/out/x") == "echo_b");
    // Nothing ever reached the group's subscribers.
    test::pub(*e.k, "k/in", "marker");
    BOOST_REQUIRE(e.wait_until([&] { return e.info("echo_c").refused_sources() == 2u; }));
    BOOST_TEST(current.messages().empty());
  });
}

// [payload-1] One payload limit (kernel.bus.max_payload_bytes, 15 MiB by default): a
// publish, a request and a reply over it are refused with too_large and counted, the
// (isolated) plugin never sees them and stays healthy, and a payload at the limit is
// delivered.
BOOST_AUTO_TEST_CASE(payloads_over_the_bus_limit_are_refused_at_publish) {
  both_kinds([](env& e) {
    const auto limit = e.k->bus().max_payload();
    BOOST_TEST(limit == default_max_payload_bytes);
    test::collector out{*e.k, "big/out"};
    BOOST_REQUIRE(!e.load("echo", "{listen: big/in, answer: big/out, serve: big/svc}"));
    BOOST_REQUIRE(!e.load("echo_b", "{listen: b/in, prefix: p, serve: big/plus}"));
    Envelope m;
    m.set_topic("big/in");
    m.set_payload(std::string(limit + 1, 'x'));
    auto r = e.k->publish(m);
    BOOST_REQUIRE(!r);
    BOOST_TEST(r.error() == errc::too_large);
    BOOST_TEST(contains(describe(r.error()), "kernel.bus.max_payload_bytes"));
    auto q = e.request("big/svc", std::string(limit + 1, 'x'));
    BOOST_REQUIRE(!q);
    BOOST_TEST(q.error() == errc::too_large);
    BOOST_TEST(e.k->status().bus_refused_too_large() == 2u);
    // At the limit: delivered to the plugin and echoed back whole.
    test::pub(*e.k, "big/in", std::string(limit, 'y'));
    BOOST_REQUIRE(out.wait_for(1));
    BOOST_TEST(out.messages()[0].payload().size() == limit);
    auto ok = e.request("big/svc", std::string(limit, 'z'));
    BOOST_REQUIRE_MESSAGE(ok, (ok ? std::string{} : describe(ok.error())));
    BOOST_TEST(ok->payload().size() == limit);
    // The reply of echo_b is one byte over ("p" + payload): the requester's error.
    auto over = e.request("big/plus", std::string(limit, 'w'));
    BOOST_REQUIRE(!over);
    BOOST_TEST(over.error() == errc::too_large, describe(over.error()));
    for (auto* name : {"echo", "echo_b"}) {
      BOOST_TEST(e.info(name).state() == "running");
      BOOST_TEST(e.info(name).restarts() == 0u);
    }
    // An oversized publish of the plugin itself (its echo of a message at the limit,
    // one byte longer) is refused too and never delivered.
    BOOST_REQUIRE(!e.k->unload("echo"));
    BOOST_REQUIRE(!e.load("echo", "{listen: big/in, answer: big/out, prefix: p}"));
    test::pub(*e.k, "big/in", std::string(limit, 'v'));
    test::pub(*e.k, "big/in", "small");
    BOOST_REQUIRE(out.wait_for(2));
    auto got = out.messages();
    BOOST_REQUIRE(got.size() == 2u);
    BOOST_TEST(got[1].payload() == "psmall");
    BOOST_TEST(e.info("echo").state() == "running");
    BOOST_TEST(e.info("echo").restarts() == 0u);
  });
}
