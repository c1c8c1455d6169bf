// function_runtime in a real kernel (the SDK harness) with a real group file, running
// real worker processes (tests/test_function.cpp, built on the C++ function SDK): life
// cycles, limits, timeouts, faults, encodings, inputs and definitions.
#define BOOST_TEST_MODULE function_runtime
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <pwd.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <future>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <seccomp.h>

#include "code_archive.hpp"
#include "function_def.hpp"
#include "function_log.hpp"
#include "sandbox.hpp"
#include "seccomp_profile.hpp"
#include "grove/function_runtime/client.hpp"
#include "grove/cgroup.hpp"
#include "grove/function.pb.h"
#include "grove/kernel/framing.hpp"
#include "grove/kernel/kernel.hpp"
#include "grove/kernel/plugin_host.hpp"
#include "grove/testing/harness.hpp"
#include "grove/utf8.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using grove::errc;
namespace fr = grove::function_runtime;
namespace test = grove::test;

namespace {

/// The error of a failed `x`, "" for a value (BOOST_REQUIRE_MESSAGE builds its message
/// even when the check holds).
template <class T>
std::string why(const caf::expected<T>& x) {
  return x ? std::string{} : grove::describe(x.error());
}

/// A function entry of the group running the test function in `mode`.
std::string fn(const std::string& name, const std::string& mode, const std::string& extra = "") {
  return "  - name: " + name + "\n    config: {handler: " + FN_TEST_FUNCTION
         + ", execArgs: [" + mode + "], runAs: {uid: 0, gid: 0}, "
           "linuxProcessParams: {isolationMode: NoContainer}"
         + (extra.empty() ? "" : ", " + extra) + "}\n";
}

std::string group(const std::string& functions) {
  return "name: test\nfunctions:\n" + functions;
}

/// The runtime in a kernel with the group `functions`.
struct runtime {
  test::temp_dir dir;
  fs::path group_file;
  std::unique_ptr<grove::testing::harness> h;

  // The test function runs as root (its binary is in the build tree), which the image
  // must allow.
  explicit runtime(const std::string& functions,
                   const std::string& config = "{allow_run_as_root: true}") {
    group_file = dir.write("group.yaml", group(functions));
    grove::testing::harness_options o;
    o.write_dir = dir.path() / "var";
    o.may_claim = {"function:*"};
    o.group_file = group_file;
    o.log_level = "off";
    h = std::make_unique<grove::testing::harness>(FN_PLUGIN, config, o);
    auto err = h->start();
    BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  }

  caf::expected<grove::Envelope> invoke(const std::string& name, std::string payload,
                                        std::chrono::milliseconds timeout = 20s) {
    return h->kernel().request(fr::make_invoke(name, std::move(payload)), test::scaled(timeout));
  }

  std::string ok(const std::string& name, std::string payload) {
    auto r = invoke(name, std::move(payload));
    BOOST_REQUIRE_MESSAGE(r, name << ": " << why(r));
    return r->payload();
  }

  grove::fn::FunctionInfo info(const std::string& name) {
    auto l = fr::list([this](grove::Envelope e) { return h->kernel().request(std::move(e), 10s); });
    BOOST_REQUIRE_MESSAGE(l, why(l));
    for (const auto& f : l->functions())
      if (f.name() == name)
        return f;
    BOOST_FAIL("no function " << name << " in the list");
    return {};
  }

  /// Waits until the runtime has read the group (the list is no longer empty).
  void wait_defined(const std::string& name) {
    BOOST_REQUIRE(test::wait_until([&] {
      auto l = fr::list([this](grove::Envelope e) { return h->kernel().request(std::move(e), 10s); });
      if (!l)
        return false;
      for (const auto& f : l->functions())
        if (f.name() == name)
          return true;
      return false;
    }));
  }

  void rewrite(const std::string& functions) {
    dir.write("group.yaml", group(functions));
    auto err = h->kernel().reload_group();
    BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  }

  /// Kills pinned function `name`'s instance `pid` (its handler answers with its pid)
  /// and waits until a new instance answers.
  bool replaced_after_kill(const std::string& name, const std::string& pid) {
    BOOST_REQUIRE(::kill(std::stoi(pid), SIGKILL) == 0);
    return test::wait_until([&] {
      auto r = invoke(name, "{}");
      return r && r->payload() != pid;
    });
  }

  std::string log_of(const std::string& name) {
    std::ifstream in{dir.path() / "var" / "logs" / "functions" / (name + ".log")};
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
};

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// The C++ and the Python SDK's check of text that is not UTF-8 ("bad \xff\xfe text"):
/// function `name` fails `payload` with `error` (escaped, so valid UTF-8, also as the
/// function list's last error), its log has each of `log_lines` and is UTF-8, and the
/// instance that answered `pid` still serves (a frame that did not parse ended it).
void check_escaped(runtime& rt, const std::string& name, const std::string& pid,
                   const std::string& payload, const std::string& error,
                   std::initializer_list<std::string> log_lines) {
  auto failed = rt.invoke(name, payload);
  BOOST_REQUIRE(!failed);
  auto text = grove::describe(failed.error());
  BOOST_TEST(has(text, "function '" + name + "': " + error), text);
  BOOST_TEST(grove::valid_utf8(text), text);
  BOOST_TEST(rt.ok(name, "\"pid\"") == pid);
  auto log = rt.log_of(name);
  for (const auto& line : log_lines)
    BOOST_TEST(has(log, line + "\n"), line << " in " << log);
  BOOST_TEST(grove::valid_utf8(log), log);
  auto info = rt.info(name); // its last error is UTF-8, or the list would not parse
  BOOST_TEST(info.last_error() == "handler failed: " + error);
  BOOST_TEST(info.instances() == 1u);
}

bool is(const caf::expected<grove::Envelope>& r, errc code) {
  return !r && r.error() == code;
}

using call = std::future<caf::expected<grove::Envelope>>;

/// A request to function g whose handler holds it until the file `hold` exists, sent and
/// waited for until the handler runs (`<hold>.pid` written): the item in hand while
/// others queue behind it.
call hold_an_item(runtime& rt, const fs::path& hold) {
  auto held = std::async(std::launch::async, [&rt, hold] {
    return rt.invoke("g", "\"wait:" + hold.string() + "\"", 120s);
  });
  BOOST_REQUIRE(test::wait_until([&] { return fs::exists(hold.string() + ".pid"); }));
  return held;
}

/// Function g in the test function's pipeline mode, on demand with up to two instances
/// (items sent ahead to busy ones once both run), and what the send-ahead tests do
/// with it: keep instances busy on items held by a file, and ask for pids.
struct two_instances {
  runtime rt;

  explicit two_instances(const std::string& extra = "",
                         const std::string& config = "{allow_run_as_root: true}")
    : rt{fn("g", "pipeline",
            "pinned: false, timeoutInSeconds: 600, maxInstancesCount: 2" + extra),
         config} {
    rt.wait_defined("g");
  }

  /// An item that holds its instance until release(name).
  call hold(const std::string& name) {
    return std::async(std::launch::async, [this, p = rt.dir.path() / name] {
      return rt.invoke("g", "\"wait:" + p.string() + "\"", 120s);
    });
  }

  /// The pid of the instance holding item `name`, once it runs.
  std::string pid_of(const std::string& name) {
    auto file = rt.dir.path() / (name + ".pid");
    BOOST_REQUIRE_MESSAGE(test::wait_until([&] { return fs::exists(file); }),
                          name << ": " << rt.log_of("g"));
    std::ifstream in{file};
    std::string pid;
    in >> pid;
    return pid;
  }

  void release(const std::string& name) {
    std::ofstream{rt.dir.path() / name} << "go";
  }

  /// Both instances busy, each on a held item, and their (different) pids.
  struct held_pair {
    call a;
    std::string pid_a;
    call b;
    std::string pid_b;
  };

  /// Items hold-a and hold-b, each held by its own instance.
  held_pair hold_both() {
    held_pair h;
    h.a = hold("hold-a");
    h.pid_a = pid_of("hold-a");
    h.b = hold("hold-b");
    h.pid_b = pid_of("hold-b");
    BOOST_REQUIRE(h.pid_a != h.pid_b);
    return h;
  }

  /// An item answered with its instance's pid.
  call pid_call() {
    return std::async(std::launch::async, [this] { return rt.invoke("g", "\"pid\"", 120s); });
  }

  /// `n` pid items, each sent once the one before it is queued (behind `queued` items
  /// queued already).
  std::vector<call> pid_calls(int n, size_t queued = 0) {
    std::vector<call> calls;
    for (int i = 0; i < n; ++i) {
      calls.push_back(pid_call());
      BOOST_REQUIRE(test::wait_until([&] { return rt.info("g").queued() == queued + i + 1; }));
    }
    return calls;
  }
};

} // namespace

BOOST_AUTO_TEST_CASE(pinned_instance_serves_and_is_restarted_when_it_dies) {
  runtime rt{fn("p", "pid")};
  rt.wait_defined("p");
  auto pid1 = rt.ok("p", "{}");
  BOOST_TEST(rt.ok("p", "{}") == pid1); // the same long-lived instance
  BOOST_TEST(rt.info("p").pinned());
  BOOST_TEST(rt.info("p").invocations() == 2u);
  BOOST_TEST(rt.replaced_after_kill("p", pid1));
  BOOST_TEST(rt.info("p").instances() == 1u);
}

BOOST_AUTO_TEST_CASE(a_pinned_instance_killed_while_idle_is_restarted_every_time) {
  // More deaths than the restart policy's failed starts (5): an instance that said its
  // hello and dies idle is restarted (after a back-off), never given up.
  runtime rt{fn("p", "pid")};
  rt.wait_defined("p");
  auto pid = rt.ok("p", "{}");
  for (int i = 0; i < 7; ++i) {
    BOOST_REQUIRE_MESSAGE(rt.replaced_after_kill("p", pid), "kill " << i << ": " << rt.log_of("p"));
    pid = rt.ok("p", "{}");
  }
  BOOST_TEST(!has(rt.log_of("p"), "gave up"), rt.log_of("p"));
}

BOOST_AUTO_TEST_CASE(an_item_that_ends_every_instance_is_answered_each_time) {
  // Every item crashes its instance: each is answered (its fault), the instances are
  // replaced (at once, then after a back-off while the run lasts), and an item that
  // succeeds afterwards ends the run.
  runtime rt{fn("c", "pipeline", "timeoutInSeconds: 5")};
  rt.wait_defined("c");
  for (int i = 0; i < 4; ++i) {
    auto r = rt.invoke("c", "\"crash\"", 60s);
    BOOST_TEST((is(r, errc::plugin_failed) || is(r, errc::timeout)), i << ": " << why(r));
  }
  BOOST_TEST(test::wait_until([&] { return bool(rt.invoke("c", "\"pid\"", 60s)); }, 60s),
             rt.log_of("c"));
  BOOST_TEST(!has(rt.log_of("c"), "gave up"), rt.log_of("c"));
}

BOOST_AUTO_TEST_CASE(on_demand_instance_starts_with_work_and_exits_when_idle) {
  runtime rt{fn("d", "echo", "pinned: false, maxIdleTimeInSeconds: 1")};
  rt.wait_defined("d");
  BOOST_TEST(rt.info("d").instances() == 0u); // nothing runs before work arrives
  BOOST_TEST(rt.ok("d", "{\"a\":1}") == "{\"a\":1}");
  BOOST_TEST(rt.info("d").instances() == 1u);
  BOOST_TEST(test::wait_until([&] { return rt.info("d").instances() == 0u; }));
}

BOOST_AUTO_TEST_CASE(max_instances_and_queue_limit) {
  runtime rt{fn("w", "wait_file", "pinned: false, maxInstancesCount: 2, maxQueueSize: 1")};
  rt.wait_defined("w");
  auto release = rt.dir.path() / "release";
  auto payload = "\"" + release.string() + "\"";
  std::vector<std::future<caf::expected<grove::Envelope>>> calls;
  // One at a time: an item waiting for its instance to start counts against the queue.
  auto call = [&] {
    calls.push_back(std::async(std::launch::async, [&] { return rt.invoke("w", payload, 60s); }));
  };
  call();
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("w").busy() == 1u; }));
  call();
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("w").busy() == 2u; }));
  call();
  BOOST_REQUIRE(test::wait_until([&] {
    auto i = rt.info("w");
    return i.busy() == 2u && i.queued() == 1u;
  }));
  BOOST_TEST(rt.info("w").instances() == 2u); // never more than maxInstancesCount
  auto refused = rt.invoke("w", payload);
  BOOST_TEST(is(refused, errc::queue_full));
  BOOST_TEST(rt.info("w").refused() == 1u);
  std::ofstream{release} << "go";
  std::set<std::string> pids;
  for (auto& c : calls) {
    auto r = c.get();
    BOOST_REQUIRE_MESSAGE(r, why(r));
    pids.insert(r->payload());
  }
  BOOST_TEST(pids.size() == 2u); // the queued item ran on one of the two instances
}

BOOST_AUTO_TEST_CASE(an_item_past_its_timeout_ends_the_instance) {
  runtime rt{fn("h", "hang", "timeoutInSeconds: 1") + fn("e", "echo")};
  rt.wait_defined("h");
  auto r = rt.invoke("h", "{}");
  BOOST_TEST(is(r, errc::timeout));
  BOOST_TEST(rt.info("h").timeouts() == 1u);
  // The hung instance is replaced; the other function never noticed.
  BOOST_TEST(test::wait_until([&] { return rt.info("h").instances() == 1u; }));
  BOOST_TEST(rt.ok("e", "[1]") == "[1]");
}

BOOST_AUTO_TEST_CASE(items_sent_ahead_count_as_queued_and_outlive_their_instance) {
  // A pinned instance takes items ahead of its handler (the SDK's hello asks for a
  // pipeline): they still count against maxQueueSize, wait for the item in hand, and
  // go to the next instance when that item's timeout ends this one.
  runtime rt{fn("q", "wait_file", "timeoutInSeconds: 2, maxQueueSize: 3")};
  rt.wait_defined("q");
  auto never = "\"" + (rt.dir.path() / "never").string() + "\"";
  auto release = rt.dir.path() / "release";
  auto payload = "\"" + release.string() + "\"";
  auto stuck = std::async(std::launch::async, [&] { return rt.invoke("q", never, 60s); });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("q").busy() == 1u; }));
  std::vector<std::future<caf::expected<grove::Envelope>>> calls;
  for (int i = 0; i < 3; ++i) {
    calls.push_back(std::async(std::launch::async, [&] { return rt.invoke("q", payload, 60s); }));
    BOOST_REQUIRE(test::wait_until([&] { return rt.info("q").queued() == size_t(i + 1); }));
  }
  BOOST_TEST(is(rt.invoke("q", payload), errc::queue_full));
  auto r = stuck.get();
  BOOST_TEST(is(r, errc::timeout));
  std::ofstream{release} << "go";
  std::set<std::string> pids;
  for (auto& c : calls) {
    auto x = c.get();
    BOOST_REQUIRE_MESSAGE(x, why(x));
    pids.insert(x->payload());
  }
  BOOST_TEST(pids.size() == 1u); // all three ran on the instance that replaced it
  auto info = rt.info("q");
  BOOST_TEST(info.timeouts() == 1u);
  BOOST_TEST(info.invocations() == 3u);
  BOOST_TEST(info.queued() == 0u);
}

BOOST_AUTO_TEST_CASE(a_hot_reload_carries_queued_events_and_requests_to_the_next_instance) {
  // Events queued behind an item a pinned function holds, some sent ahead to its worker
  // and the rest in the queue, with requests among them. After a hot reload of the
  // plugin every event and every request has run, once, in the new instance, in the
  // order they arrived, and each request's caller has its real answer; the held item
  // is answered with an error that says what happened; the counts go on.
  runtime rt{fn("g", "pipeline", "timeoutInSeconds: 600")};
  rt.wait_defined("g");
  BOOST_TEST(rt.ok("g", "\"first\"") == "\"first\"");
  auto hold = rt.dir.path() / "hold";
  auto held = hold_an_item(rt, hold);
  constexpr int events = 40;
  auto order = rt.dir.path() / "order";
  auto note = [&](const std::string& tag) {
    return "\"note:" + order.string() + "|" + tag + "\"";
  };
  std::vector<std::pair<std::string, call>> requests;
  std::vector<std::string> expected;
  for (int i = 0; i < events; ++i) {
    auto topic = std::string{fr::event_prefix} + "g";
    auto tag = "e" + std::to_string(i);
    BOOST_REQUIRE(rt.h->publish(topic, note(tag)));
    expected.push_back(tag);
    if (i == 5 || i == 30) {
      // Queued before the next event is sent: the order below is the arrival order.
      auto rtag = "r" + std::to_string(i);
      requests.emplace_back(rtag, std::async(std::launch::async, [&, rtag] {
                              return rt.invoke("g", note(rtag), 120s);
                            }));
      expected.push_back(rtag);
      auto n = expected.size();
      BOOST_REQUIRE(test::wait_until([&] { return rt.info("g").queued() == n; }));
    }
  }
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("g").queued() == events + 2u; }));
  auto before = rt.info("g");
  BOOST_TEST(before.sent_ahead() > 0u); // both kinds: sent ahead, and still queued
  BOOST_TEST(before.sent_ahead() < before.queued());
  auto r = rt.h->kernel().reload(rt.h->name(), "");
  BOOST_REQUIRE_MESSAGE(r, why(r));
  BOOST_TEST(has(*r, "state carried over"), *r);
  auto h = held.get();
  BOOST_REQUIRE(!h);
  BOOST_TEST(has(grove::describe(h.error()), "stopped by a reload of function_runtime while "
                                             "the handler ran"),
             grove::describe(h.error()));
  for (auto& [tag, c] : requests) {
    auto x = c.get();
    BOOST_REQUIRE_MESSAGE(x, tag << ": " << why(x));
    BOOST_TEST(x->payload() == note(tag));
  }
  auto lines = [&] {
    std::ifstream in{order};
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);)
      out.push_back(line);
    return out;
  };
  BOOST_REQUIRE_MESSAGE(test::wait_until([&] { return lines().size() >= expected.size(); }, 60s),
                        rt.log_of("g"));
  BOOST_REQUIRE(
    test::wait_until([&] { return rt.info("g").invocations() == 1u + expected.size(); }));
  // Each once, in arrival order.
  BOOST_TEST(lines() == expected, boost::test_tools::per_element());
  auto after = rt.info("g");
  BOOST_TEST(after.queued() == 0u);
  BOOST_TEST(after.errors() == 1u); // the held item
  BOOST_TEST(has(rt.log_of("g"), "stopped by a reload of function_runtime"));
}

/// Changes function_runtime's configuration to `config`: a reload of the same build
/// with a snapshot (the runtime has no live reconfigure), as groved does when the image's
/// entry changes. Gives the kernel's account of it.
std::string reconfigure(runtime& rt, const std::string& config) {
  auto spec = rt.h->kernel().host().spec_of(rt.h->name());
  BOOST_REQUIRE(spec);
  spec->config = grove::make_yaml(YAML::Load(config));
  auto r = rt.h->kernel().host().reconfigure(*spec);
  BOOST_REQUIRE_MESSAGE(r, why(r));
  return *r;
}

BOOST_AUTO_TEST_CASE(a_carried_request_the_next_instance_refuses_gets_the_refusal_once) {
  // Items queued behind a held one, then a configuration change that lowers
  // max_queue_bytes (and max_frame_bytes, which it must be at least): a reload with a
  // snapshot, and the new instance queues the carried items again under the new limit.
  // The request that no longer fits is refused: its caller gets queue_full, once, from
  // the new instance (not the kernel's "stopped: reloading", not silence), and it never
  // runs; an event that no longer fits is logged as not handled; every other item runs
  // once, in arrival order.
  runtime rt{fn("g", "pipeline", "timeoutInSeconds: 600")};
  rt.wait_defined("g");
  BOOST_TEST(rt.ok("g", "\"first\"") == "\"first\"");
  auto hold = rt.dir.path() / "hold";
  auto held = hold_an_item(rt, hold);
  auto order = rt.dir.path() / "order";
  // A line "<tag>" or "<tag> xxx...": `pad` bytes of padding make the item that large.
  auto note = [&](const std::string& tag, size_t pad = 0) {
    return "\"note:" + order.string() + "|" + tag + (pad ? " " + std::string(pad, 'x') : "")
           + "\"";
  };
  std::map<std::string, call> requests;
  size_t queued = 0;
  auto event = [&](const std::string& tag, size_t pad = 0) {
    BOOST_REQUIRE(rt.h->publish(std::string{fr::event_prefix} + "g", note(tag, pad)));
    // Queued before the next item is sent: the order below is the arrival order.
    BOOST_REQUIRE(test::wait_until([&] { return rt.info("g").queued() == queued + 1; }));
    ++queued;
  };
  auto request = [&](const std::string& tag, size_t pad = 0) {
    requests.emplace(tag, std::async(std::launch::async, [&rt, p = note(tag, pad)] {
                       return rt.invoke("g", p, 120s);
                     }));
    BOOST_REQUIRE(test::wait_until([&] { return rt.info("g").queued() == queued + 1; }));
    ++queued;
  };
  // Under the new 64 KiB: e0, rA (30 kB) and the small ones fit; rB (40 kB) and eBig
  // (40 kB) do not, behind rA.
  event("e0");
  request("rA", 30000);
  event("e1");
  request("rB", 40000);
  event("e2");
  event("eBig", 40000);
  request("rC");
  event("e3");
  const std::vector<std::string> expected{"e0", "rA", "e1", "e2", "rC", "e3"};
  auto before = rt.info("g");
  auto r = reconfigure(rt, "{allow_run_as_root: true, max_frame_bytes: 65536, "
                           "max_queue_bytes: 65536}");
  BOOST_TEST(has(r, "state carried over"), r);
  auto h = held.get();
  BOOST_REQUIRE(!h);
  BOOST_TEST(has(grove::describe(h.error()), "stopped by a reload"), grove::describe(h.error()));
  auto refused = requests.at("rB").get();
  BOOST_REQUIRE_MESSAGE(!refused, "rB ran"); // the message is built even when it holds
  BOOST_TEST(is(refused, errc::queue_full), grove::describe(refused.error()));
  BOOST_TEST(has(grove::describe(refused.error()), "max_queue_bytes 65536"),
             grove::describe(refused.error()));
  for (const auto& tag : {"rA", "rC"}) {
    auto x = requests.at(tag).get();
    BOOST_REQUIRE_MESSAGE(x, tag << ": " << why(x));
    BOOST_TEST(x->payload() == note(tag, tag == std::string{"rA"} ? 30000 : 0));
  }
  auto lines = [&] {
    std::ifstream in{order};
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);)
      out.push_back(line.substr(0, line.find(' ')));
    return out;
  };
  BOOST_REQUIRE(test::wait_until(
    [&] { return rt.info("g").invocations() == before.invocations() + expected.size(); }));
  // Each once, in arrival order; the refused two never ran.
  BOOST_TEST(lines() == expected, boost::test_tools::per_element());
  auto after = rt.info("g");
  BOOST_TEST(after.queued() == 0u);
  BOOST_TEST(after.refused() == before.refused() + 2);
  BOOST_TEST(after.errors() == before.errors() + 1); // the held item
  BOOST_TEST(has(rt.log_of("g"), "event not handled"), rt.log_of("g"));
}

BOOST_AUTO_TEST_CASE(a_carried_request_for_a_function_the_next_instance_refuses_is_answered) {
  // The new configuration no longer lets the function run as root: in the new instance
  // it has no valid definition. The request carried for it is answered with that (once,
  // by the new instance), the carried event is dropped, and neither runs.
  runtime rt{fn("g", "pipeline", "timeoutInSeconds: 600")};
  rt.wait_defined("g");
  auto hold = rt.dir.path() / "hold";
  auto held = hold_an_item(rt, hold);
  auto order = rt.dir.path() / "order";
  auto note = "\"note:" + order.string() + "|ran\"";
  BOOST_REQUIRE(rt.h->publish(std::string{fr::event_prefix} + "g", note));
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("g").queued() == 1u; }));
  auto waiting = std::async(std::launch::async, [&] { return rt.invoke("g", note, 120s); });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("g").queued() == 2u; }));
  auto r = reconfigure(rt, "{allow_run_as_root: false}");
  BOOST_TEST(has(r, "state carried over"), r);
  auto h = held.get();
  BOOST_REQUIRE(!h);
  BOOST_TEST(has(grove::describe(h.error()), "stopped by a reload"), grove::describe(h.error()));
  auto x = waiting.get();
  BOOST_REQUIRE_MESSAGE(!x, "it ran");
  BOOST_TEST(is(x, errc::no_route), grove::describe(x.error()));
  BOOST_TEST(has(grove::describe(x.error()), "function 'g' has no valid definition"),
             grove::describe(x.error()));
  BOOST_TEST(has(grove::describe(x.error()), "root"), grove::describe(x.error()));
  BOOST_TEST(!fs::exists(order)); // no instance could have run either
  BOOST_TEST(rt.info("g").instances() == 0u);
}

BOOST_AUTO_TEST_CASE(an_unload_answers_waiting_requests_and_counts_the_events_it_drops) {
  // No hot reload, so nothing carries the work on: a request waiting behind a held item,
  // and the held one, get an error at once (not their callers' timeout), and the events
  // queued behind them are counted in the function's log.
  runtime rt{fn("g", "pipeline", "timeoutInSeconds: 600")};
  rt.wait_defined("g");
  auto hold = rt.dir.path() / "hold";
  auto held = hold_an_item(rt, hold);
  constexpr int events = 7;
  for (int i = 0; i < events; ++i)
    BOOST_REQUIRE(rt.h->publish(std::string{fr::event_prefix} + "g", "\"pid\""));
  auto waiting = std::async(std::launch::async, [&] { return rt.invoke("g", "\"pid\"", 120s); });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("g").queued() == events + 1u; }));
  auto err = rt.h->kernel().unload(rt.h->name());
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  for (auto* c : {&held, &waiting}) {
    auto x = c->get();
    BOOST_REQUIRE(!x);
    BOOST_TEST(has(grove::describe(x.error()), "function_runtime stopped"),
               grove::describe(x.error()));
  }
  BOOST_TEST(has(rt.log_of("g"), std::to_string(events) + " events not run: function_runtime "
                                                          "stopped"),
             rt.log_of("g"));
}

BOOST_AUTO_TEST_CASE(a_pinned_instance_that_stops_reporting_status_is_replaced) {
  // statusTimeoutInSeconds (Greengrass: the interval at which a pinned Lambda reports
  // its status). A handler running far longer than the interval keeps its instance (the
  // SDK reports from a thread of its own); an instance that stops reporting (SIGSTOP:
  // alive, silent) is ended after twice the interval, its item answered, and the pinned
  // function serves again from a new instance. Without the watchdog the item sent to the
  // stopped instance would wait out timeoutInSeconds (600 s).
  runtime rt{fn("g", "pipeline", "statusTimeoutInSeconds: 1, timeoutInSeconds: 600")};
  rt.wait_defined("g");
  auto hold = rt.dir.path() / "hold";
  auto held = hold_an_item(rt, hold);
  std::string pid;
  std::ifstream{hold.string() + ".pid"} >> pid;
  // Not a wait for a result: time for the watchdog (2 s) to have fired twice over.
  std::this_thread::sleep_for(5s);
  std::ofstream{hold} << "go";
  auto h = held.get();
  BOOST_REQUIRE_MESSAGE(h, why(h));
  BOOST_TEST(rt.ok("g", "\"pid\"") == pid); // the same instance: it kept reporting
  BOOST_REQUIRE(::kill(std::stoi(pid), SIGSTOP) == 0);
  std::string answered;
  BOOST_REQUIRE_MESSAGE(test::wait_until(
                          [&] {
                            auto r = rt.invoke("g", "\"pid\"", 60s);
                            answered = r ? r->payload() : why(r);
                            return r && r->payload() != pid;
                          },
                          90s),
                        "last answer: " << answered);
  BOOST_TEST(has(rt.log_of("g") + rt.info("g").last_error(), "no status report"),
             rt.info("g").last_error());
  ::kill(std::stoi(pid), SIGCONT); // ended by the runtime (SIGKILL) by now, or at once
}

BOOST_AUTO_TEST_CASE(large_items_sent_ahead_never_overrun_a_busy_worker) {
  // 32 items of 32 KiB behind a handler that holds: far more than a socket buffer. Only
  // a bounded number of bytes goes ahead, so no send waits on the worker and every item
  // is answered by the one instance, none failed.
  runtime rt{fn("p", "pipeline")};
  rt.wait_defined("p");
  auto release = rt.dir.path() / "release";
  auto hold = std::async(std::launch::async, [&] {
    return rt.invoke("p", "\"wait:" + release.string() + "\"", 120s);
  });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").busy() == 1u; }));
  std::vector<std::pair<std::string, std::future<caf::expected<grove::Envelope>>>> calls;
  for (int i = 0; i < 32; ++i) {
    auto payload = "\"" + std::to_string(i) + std::string(32 << 10, char('a' + i % 26)) + "\"";
    calls.emplace_back(payload, std::async(std::launch::async, [&rt, payload] {
                         return rt.invoke("p", payload, 120s);
                       }));
  }
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").queued() == 32u; }));
  std::ofstream{release} << "go";
  auto held = hold.get();
  BOOST_REQUIRE_MESSAGE(held, why(held));
  for (auto& [payload, c] : calls) {
    auto x = c.get();
    BOOST_REQUIRE_MESSAGE(x, why(x));
    BOOST_TEST((x->payload() == payload));
  }
  auto info = rt.info("p");
  BOOST_TEST(info.errors() == 0u);
  BOOST_TEST(info.invocations() == 33u);
  BOOST_TEST(info.instances() == 1u);
}

BOOST_AUTO_TEST_CASE(an_item_over_max_frame_bytes_is_refused_alone) {
  // A work item whose frame the worker would refuse is answered too_large before it is
  // sent; the items ahead of and behind it, and the instance, are untouched.
  runtime rt{fn("p", "pipeline"), "{allow_run_as_root: true, max_frame_bytes: 65536}"};
  rt.wait_defined("p");
  auto big = "\"" + std::string(100 << 10, 'b') + "\"";
  BOOST_TEST(is(rt.invoke("p", big), errc::too_large));
  auto release = rt.dir.path() / "release";
  auto held_payload = "\"wait:" + release.string() + "\"";
  auto hold = std::async(std::launch::async, [&] { return rt.invoke("p", held_payload, 60s); });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").busy() == 1u; }));
  auto before = std::async(std::launch::async, [&] { return rt.invoke("p", "\"before\"", 60s); });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").queued() == 1u; }));
  auto over = std::async(std::launch::async, [&] { return rt.invoke("p", big, 60s); });
  auto after = std::async(std::launch::async, [&] { return rt.invoke("p", "\"after\"", 60s); });
  BOOST_TEST(is(over.get(), errc::too_large));
  std::ofstream{release} << "go";
  auto h = hold.get();
  BOOST_REQUIRE_MESSAGE(h, why(h));
  BOOST_TEST(h->payload() == held_payload);
  auto b = before.get();
  BOOST_REQUIRE_MESSAGE(b, why(b));
  BOOST_TEST(b->payload() == "\"before\"");
  auto a = after.get();
  BOOST_REQUIRE_MESSAGE(a, why(a));
  BOOST_TEST(a->payload() == "\"after\"");
  auto info = rt.info("p");
  BOOST_TEST(info.errors() == 0u);
  BOOST_TEST(info.refused() == 2u);
  BOOST_TEST(info.invocations() == 3u);
}

BOOST_AUTO_TEST_CASE(an_oversized_result_or_publish_is_an_error_not_the_instances_end) {
  // The SDK holds its frames to max_frame_bytes: a result over it is answered as an
  // error, a publish over it is the verb's error, a huge exception text is cut; the
  // instance serves on.
  runtime rt{fn("o", "oversize"), "{allow_run_as_root: true, max_frame_bytes: 65536}"};
  rt.wait_defined("o");
  auto pid = rt.ok("o", "\"pid\"");
  auto big = rt.invoke("o", "\"result:100000\"");
  BOOST_REQUIRE(!big);
  auto text = grove::describe(big.error());
  BOOST_TEST(text.find("result of 100002 bytes exceeds max_frame_bytes (65536)")
               != std::string::npos,
             text);
  auto published = rt.ok("o", "\"publish:100000\"");
  BOOST_TEST(published.find("too_large") != std::string::npos, published);
  BOOST_TEST(published.find("max_frame_bytes") != std::string::npos, published);
  BOOST_TEST(published.find("not connected") == std::string::npos, published);
  BOOST_TEST(rt.ok("o", "\"pid\"") == pid);
  // A what() over the frame limit: its start (16 KiB at most, half the limit here), cut
  // between characters, and its size, as the item's error. Three-byte characters, so the
  // cut's length (16 KiB less the mark) falls inside one and the SDK must back off to
  // the character's start (else the frame is not UTF-8 and the runtime refuses it).
  auto thrown = rt.invoke("o", "\"throw:100000\"");
  BOOST_REQUIRE(!thrown);
  text = grove::describe(thrown.error());
  BOOST_TEST(text.find("\u20ac\u20ac [300000 bytes, cut]") != std::string::npos,
             text.substr(text.size() - std::min<size_t>(text.size(), 200)));
  BOOST_TEST(text.size() < 32768u);
  BOOST_TEST(rt.ok("o", "\"pid\"") == pid);
  auto info = rt.info("o");
  BOOST_TEST(info.errors() == 2u);
  BOOST_TEST(info.instances() == 1u);
}

BOOST_AUTO_TEST_CASE(text_that_is_not_utf8_is_escaped_not_the_instances_end) {
  // A what() and a log line of bytes that are not UTF-8 (the SDK escapes them), and a
  // Log frame of such bytes written past the SDK (the runtime escapes it): each reaches
  // the caller or the log as \xNN, and the instance serves on. A `string` field that is
  // not UTF-8 fails the frame's parse, which ended the instance.
  runtime rt{fn("b", "badtext")};
  rt.wait_defined("b");
  auto pid = rt.ok("b", "\"pid\"");
  BOOST_TEST(rt.ok("b", "\"log\"") == pid);
  BOOST_TEST(rt.ok("b", "\"raw_log\"") == pid);
  check_escaped(rt, "b", pid, "\"throw\"", "bad \\xff\\xfe text",
                {"WARN bad \\xff\\xfe text", "INFO raw bad \\xff\\xfe text"});
  BOOST_TEST(rt.info("b").errors() == 1u);
}

BOOST_AUTO_TEST_CASE(the_cpp_sdk_itself_escapes_text_that_is_not_utf8) {
  // The frames the C++ SDK writes, read off a socketpair with no runtime between (the
  // runtime's own escaping would hide the SDK's): a what() and a log line of bytes that
  // are not UTF-8 arrive as \xNN.
  int sv[2];
  BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  std::string exe = FN_TEST_FUNCTION;
  char* argv[] = {exe.data(), const_cast<char*>("badtext"), nullptr};
  char* envp[] = {const_cast<char*>("GROVE_FUNCTION_FD=3"),
                  const_cast<char*>("GROVE_FUNCTION_TOKEN=t"),
                  const_cast<char*>("GROVE_FUNCTION_NAME=b"), nullptr};
  auto pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(sv[1], 3); // a dup has no FD_CLOEXEC
    ::execve(argv[0], argv, envp);
    ::_exit(127);
  }
  ::close(sv[1]);
  grove::framing::frame_stream in{1u << 20};
  grove::fn::Frame f;
  BOOST_REQUIRE(!in.receive(sv[0], f));
  BOOST_TEST(f.hello().token() == "t");
  auto run = [&](uint64_t id, const std::string& payload) {
    grove::fn::Frame inv;
    inv.mutable_invoke()->set_id(id);
    inv.mutable_invoke()->set_payload(payload);
    inv.mutable_invoke()->set_remaining_ms(60000);
    std::string out;
    BOOST_REQUIRE(!grove::framing::append_frame(out, inv, 1u << 20));
    BOOST_REQUIRE(!grove::framing::write_all(sv[0], out));
    std::vector<grove::fn::Frame> got;
    do {
      got.emplace_back();
      BOOST_REQUIRE(!in.receive(sv[0], got.back()));
    } while (got.back().body_case() != grove::fn::Frame::kResult);
    BOOST_TEST(got.back().result().id() == id);
    return got;
  };
  auto thrown = run(1, "\"throw\"");
  BOOST_TEST(thrown.back().result().error() == "bad \\xff\\xfe text");
  auto logged = run(2, "\"log\"");
  BOOST_REQUIRE(logged.size() == 2u);
  BOOST_TEST(logged[0].log().text() == "bad \\xff\\xfe text");
  ::close(sv[0]); // the worker reads the end and exits
  int status = 0;
  BOOST_REQUIRE(::waitpid(pid, &status, 0) == pid);
  BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0), status);
}

BOOST_AUTO_TEST_CASE(names_and_topics_that_are_not_utf8_are_the_verbs_error_not_the_instances_end) {
  // Publish's topic and content type, a call's function name, a shadow call's thing and
  // shadow names, an infer call's model are Protobuf strings: a frame with such text in
  // them would not parse and would end the instance. The SDK refuses each, sending nothing.
  runtime rt{fn("b", "badtext")};
  rt.wait_defined("b");
  auto pid = rt.ok("b", "\"pid\"");
  auto errors = rt.ok("b", "\"verbs\"");
  for (const auto* what : {"the topic", "the content type", "the function name",
                           "the thing name", "the shadow name", "the model name"})
    BOOST_TEST(has(errors, std::string{"malformed: "} + what + " is not UTF-8\n"), errors);
  BOOST_TEST(has(errors, "refused\n"), errors); // publish_nowait
  BOOST_TEST(grove::valid_utf8(errors));
  BOOST_TEST(rt.ok("b", "\"pid\"") == pid);
  BOOST_TEST(rt.info("b").instances() == 1u);
}

BOOST_AUTO_TEST_CASE(failed_no_ack_publishes_are_counted_not_logged_one_by_one) {
  // 800 publish_nowait calls the runtime refuses (under the 1,024 frames that may wait:
  // more end the instance as a flood): the function's log gets the first one
  // of each window and one line with the count of the others, not 800 lines; every
  // failure is in a line or a count.
  runtime rt{fn("w", "nowait_fail")};
  rt.wait_defined("w");
  BOOST_TEST(rt.ok("w", "800") == "sent");
  size_t written = 0, counted = 0, count_lines = 0;
  auto tally = [&] {
    written = counted = count_lines = 0;
    std::istringstream log{rt.log_of("w")};
    for (std::string line; std::getline(log, line);) {
      if (auto at = line.find(" more no-ack publishes failed"); at != std::string::npos) {
        auto from = line.rfind(' ', at - 1) + 1;
        counted += std::stoul(line.substr(from, at - from));
        ++count_lines;
      } else if (has(line, "publish to 'nowait/+/bad' failed: ")) {
        ++written;
      }
    }
    return written + counted == 800u;
  };
  BOOST_REQUIRE_MESSAGE(test::wait_until(tally, std::chrono::seconds{60}),
                        written << " written, " << counted << " counted: " << rt.log_of("w"));
  BOOST_TEST(count_lines >= 1u);
  // One window of 5 s normally holds them all (2 lines); a loaded machine may need more.
  BOOST_TEST(written + count_lines <= 10u, written << " written, " << count_lines << " counts");
}

BOOST_AUTO_TEST_CASE(failed_no_ack_publishes_still_counted_at_an_unload_are_written) {
  // The function's 800 refused publish_nowait calls are all handled before its reply (in
  // frame order, each refused at once); an unload right after, inside the 5-s window,
  // must still write the 799 only counted so far.
  runtime rt{fn("w", "nowait_fail")};
  rt.wait_defined("w");
  BOOST_TEST(rt.ok("w", "800") == "sent");
  auto err = rt.h->kernel().unload(rt.h->name());
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  size_t written = 0, counted = 0;
  std::istringstream log{rt.log_of("w")};
  for (std::string line; std::getline(log, line);) {
    if (auto at = line.find(" more no-ack publishes failed"); at != std::string::npos) {
      auto from = line.rfind(' ', at - 1) + 1;
      counted += std::stoul(line.substr(from, at - from));
    } else if (has(line, "publish to 'nowait/+/bad' failed: ")) {
      ++written;
    }
  }
  BOOST_TEST(written + counted == 800u, written << " written, " << counted << " counted: "
                                                 << rt.log_of("w"));
}

BOOST_AUTO_TEST_CASE(items_sent_ahead_are_answered_when_the_function_gave_up) {
  // Two busy instances, one item of 40 KiB sent ahead to each (the byte budget takes one),
  // one queued. New instances stop starting, one instance is killed: its items go back to
  // the queue and the runtime gives up on starts. When the other dies, the item sent
  // ahead to it has nothing to run it: it is answered plugin_broken, not left hanging.
  test::temp_dir tmp;
  auto gate = tmp.path() / "gate";
  runtime rt{fn("g", "pipeline",
                "pinned: false, timeoutInSeconds: 600, maxInstancesCount: 2, "
                "environmentVariables: {START_GATE: '" + gate.string() + "'}")};
  rt.wait_defined("g");
  auto hold = [&](const std::string& name) {
    return std::async(std::launch::async, [&rt, p = rt.dir.path() / name] {
      return rt.invoke("g", "\"wait:" + p.string() + "\"", 120s);
    });
  };
  auto pid_of = [&](const std::string& name) {
    auto file = rt.dir.path() / (name + ".pid");
    BOOST_REQUIRE_MESSAGE(test::wait_until([&] { return fs::exists(file); }),
                          name << ": " << rt.log_of("g"));
    std::ifstream in{file};
    int pid = 0;
    in >> pid;
    return pid;
  };
  auto a = hold("never-a");
  auto pid_a = pid_of("never-a");
  auto b = hold("never-b");
  auto pid_b = pid_of("never-b");
  std::vector<std::future<caf::expected<grove::Envelope>>> calls;
  for (int i = 0; i < 3; ++i) {
    calls.push_back(std::async(std::launch::async, [&rt, i] {
      return rt.invoke("g", "\"" + std::to_string(i) + std::string(40 << 10, 'x') + "\"", 120s);
    }));
    BOOST_REQUIRE(test::wait_until([&] { return rt.info("g").queued() == size_t(i + 1); }));
  }
  std::ofstream{gate} << "closed";
  BOOST_REQUIRE(::kill(pid_b, SIGKILL) == 0);
  BOOST_TEST(is(b.get(), errc::plugin_failed));
  BOOST_REQUIRE(test::wait_until([&] {
    return rt.info("g").last_error().find("gave up") != std::string::npos;
  }, 120s));
  BOOST_REQUIRE_MESSAGE(::kill(pid_a, SIGKILL) == 0, rt.log_of("g"));
  BOOST_TEST(is(a.get(), errc::plugin_failed));
  for (auto& c : calls)
    BOOST_TEST(is(c.get(), errc::plugin_broken));
  BOOST_TEST(rt.info("g").queued() == 0u);
}

BOOST_AUTO_TEST_CASE(items_sent_ahead_go_to_the_instances_in_turn_and_are_counted) {
  // Two busy instances (maxInstancesCount reached): eight items sent ahead go to each in
  // turn, four and four, not all to the first one; the runtime counts them as sent
  // ahead (list, status and the sent_ahead gauge) until the handlers take them.
  two_instances t;
  auto& rt = t.rt;
  auto [a, pid_a, b, pid_b] = t.hold_both();
  auto calls = t.pid_calls(8);
  auto info = rt.info("g");
  BOOST_TEST(info.sent_ahead() == 8u);
  BOOST_TEST(info.busy() == 2u);
  auto status = [&] {
    auto details = rt.h->kernel().status().details();
    auto it = details.find("function_runtime.instances");
    return it == details.end() ? std::string{} : it->second;
  };
  BOOST_TEST(test::wait_until([&] { return status() == "2 running, 8 queued (8 sent ahead)"; }),
             status());
  BOOST_TEST(test::wait_until([&] {
    auto text = rt.h->kernel().scrape();
    return text.find("grove_function_runtime_sent_ahead{function=\"g\"} 8") != std::string::npos;
  }));
  t.release("hold-a");
  t.release("hold-b");
  for (auto* held : {&a, &b}) {
    auto r = held->get();
    BOOST_REQUIRE_MESSAGE(r, why(r));
  }
  std::map<std::string, int> by_pid;
  for (auto& c : calls) {
    auto r = c.get();
    BOOST_REQUIRE_MESSAGE(r, why(r));
    ++by_pid[r->payload()];
  }
  BOOST_TEST(by_pid[pid_a] == 4);
  BOOST_TEST(by_pid[pid_b] == 4);
  info = rt.info("g");
  BOOST_TEST(info.sent_ahead() == 0u);
  BOOST_TEST(info.queued() == 0u);
  BOOST_TEST(info.invocations() == 10u);
}

BOOST_AUTO_TEST_CASE(items_go_ahead_to_the_instance_with_the_fewest_in_hand) {
  // Instance a is stuck on a long item with two items sent ahead behind it; b drained
  // its own and holds one item: the next two go to b, not in turn to a.
  two_instances t;
  auto& rt = t.rt;
  auto [a, pid_a, b, pid_b] = t.hold_both();
  // Equal loads: four items go ahead two and two.
  auto first = t.pid_calls(4);
  t.release("hold-b");
  auto hb = b.get();
  BOOST_REQUIRE_MESSAGE(hb, why(hb));
  // b has answered its two; a holds its long item and two behind it.
  BOOST_REQUIRE(test::wait_until([&] {
    auto info = rt.info("g");
    return info.queued() == 2u && info.busy() == 1u;
  }));
  auto b2 = t.hold("hold-b2");
  BOOST_REQUIRE(t.pid_of("hold-b2") == pid_b);
  auto next = t.pid_calls(2, 2);
  BOOST_TEST(rt.info("g").sent_ahead() == 4u);
  t.release("hold-b2");
  for (auto& c : next) {
    auto r = c.get();
    BOOST_REQUIRE_MESSAGE(r, why(r));
    BOOST_TEST(r->payload() == pid_b);
  }
  t.release("hold-a");
  for (auto* held : {&a, &b2}) {
    auto r = held->get();
    BOOST_REQUIRE_MESSAGE(r, why(r));
  }
  std::map<std::string, int> by_pid;
  for (auto& c : first) {
    auto r = c.get();
    BOOST_REQUIRE_MESSAGE(r, why(r));
    ++by_pid[r->payload()];
  }
  BOOST_TEST(by_pid[pid_a] == 2);
  BOOST_TEST(by_pid[pid_b] == 2);
  BOOST_TEST(rt.info("g").sent_ahead() == 0u);
}

BOOST_AUTO_TEST_CASE(a_too_large_item_among_items_sent_ahead_to_several_instances) {
  // Two busy instances, items sent ahead with one over max_frame_bytes among them: it
  // alone is refused, the others are answered, and nothing stays counted as sent ahead.
  two_instances t{"", "{allow_run_as_root: true, max_frame_bytes: 65536}"};
  auto& rt = t.rt;
  auto a = t.hold("hold-a");
  auto b = t.hold("hold-b");
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("g").busy() == 2u; }));
  auto big = "\"" + std::string(100 << 10, 'b') + "\"";
  std::vector<std::string> payloads{"\"s1\"", "\"s2\"", big, "\"s3\"", "\"s4\""};
  std::vector<call> calls;
  for (const auto& p : payloads)
    calls.push_back(
      std::async(std::launch::async, [&rt, p] { return rt.invoke("g", p, 120s); }));
  BOOST_TEST(is(calls[2].get(), errc::too_large));
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("g").sent_ahead() == 4u; }));
  t.release("hold-a");
  t.release("hold-b");
  for (auto* held : {&a, &b}) {
    auto r = held->get();
    BOOST_REQUIRE_MESSAGE(r, why(r));
  }
  for (size_t i : {0u, 1u, 3u, 4u}) {
    auto r = calls[i].get();
    BOOST_REQUIRE_MESSAGE(r, why(r));
    BOOST_TEST(r->payload() == payloads[i]);
  }
  auto info = rt.info("g");
  BOOST_TEST(info.sent_ahead() == 0u);
  BOOST_TEST(info.queued() == 0u);
  BOOST_TEST(info.refused() == 1u);
}

BOOST_AUTO_TEST_CASE(an_item_held_for_a_slow_start_goes_ahead_when_the_reserve_ends) {
  // a busy, b starting and slow to say hello (statusTimeoutInSeconds 120): the item that
  // arrives is kept for b for the start reserve (1 s), then sent ahead to a by the
  // reserve's timer alone (no hello, result or new item comes meanwhile), and a answers
  // it once released, while b still has not said hello.
  test::temp_dir gate;
  auto hello = gate.path() / "hello";
  two_instances t{", statusTimeoutInSeconds: 120, environmentVariables: {HELLO_GATE: '"
                  + hello.string() + "'}"};
  auto& rt = t.rt;
  auto a = t.hold("hold-a");
  auto pid_a = t.pid_of("hold-a");
  std::ofstream{hello.string() + ".armed"} << "armed";
  auto c = t.pid_call();
  BOOST_REQUIRE(test::wait_until([&] {
    auto info = rt.info("g");
    return info.instances() == 2u && info.queued() == 1u;
  }));
  BOOST_TEST(test::wait_until([&] { return rt.info("g").sent_ahead() == 1u; }, 30s),
             rt.log_of("g"));
  auto info = rt.info("g");
  BOOST_TEST(info.busy() == 1u); // b is still starting
  t.release("hold-a");
  auto r = c.get();
  BOOST_REQUIRE_MESSAGE(r, why(r));
  BOOST_TEST(r->payload() == pid_a);
  std::ofstream{hello} << "go";
  auto ha = a.get();
  BOOST_REQUIRE_MESSAGE(ha, why(ha));
  BOOST_TEST(rt.info("g").sent_ahead() == 0u);
}

BOOST_AUTO_TEST_CASE(a_function_removed_and_added_again_with_items_sent_ahead) {
  // Items sent ahead to a pinned instance when its function is removed: every one is
  // answered, its gauges fall to 0, and the function added again starts from nothing.
  auto p = fn("p", "pipeline", "timeoutInSeconds: 600");
  runtime rt{p + fn("e", "echo")};
  rt.wait_defined("p");
  auto release = rt.dir.path() / "release";
  auto hold = std::async(std::launch::async, [&] {
    return rt.invoke("p", "\"wait:" + release.string() + "\"", 60s);
  });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").busy() == 1u; }));
  std::vector<std::future<caf::expected<grove::Envelope>>> calls;
  for (int i = 0; i < 3; ++i) {
    calls.push_back(
      std::async(std::launch::async, [&rt] { return rt.invoke("p", "\"pid\"", 60s); }));
    BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").sent_ahead() == size_t(i + 1); }));
  }
  auto gauges_are = [&](const std::string& value) {
    auto text = rt.h->kernel().scrape();
    for (const char* g : {"instances", "queued", "sent_ahead"})
      if (text.find("grove_function_runtime_" + std::string{g} + "{function=\"p\"} " + value
                    + "\n")
          == std::string::npos)
        return false;
    return true;
  };
  BOOST_REQUIRE(test::wait_until([&] {
    auto text = rt.h->kernel().scrape();
    return text.find("grove_function_runtime_sent_ahead{function=\"p\"} 3\n") != std::string::npos;
  }));
  rt.rewrite(fn("e", "echo"));
  BOOST_TEST(!hold.get());
  for (auto& c : calls)
    BOOST_TEST(!c.get());
  BOOST_TEST(test::wait_until([&] { return gauges_are("0"); }), rt.h->kernel().scrape());
  rt.rewrite(p + fn("e", "echo"));
  rt.wait_defined("p");
  BOOST_TEST(rt.ok("p", "\"again\"") == "\"again\"");
  auto info = rt.info("p");
  BOOST_TEST(info.sent_ahead() == 0u);
  BOOST_TEST(info.queued() == 0u);
  BOOST_TEST(info.instances() == 1u);
  // Removed and added again at once, its instance still ending with the items: each is
  // answered (failed, or run again by the new instance), none stays counted.
  auto release2 = rt.dir.path() / "release2";
  auto hold2 = std::async(std::launch::async, [&] {
    return rt.invoke("p", "\"wait:" + release2.string() + "\"", 60s);
  });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").busy() == 1u; }));
  calls.clear();
  for (int i = 0; i < 2; ++i) {
    calls.push_back(
      std::async(std::launch::async, [&rt] { return rt.invoke("p", "\"pid\"", 60s); }));
    BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").sent_ahead() == size_t(i + 1); }));
  }
  rt.rewrite(fn("e", "echo"));
  rt.rewrite(p + fn("e", "echo"));
  std::ofstream{release2} << "go";
  static_cast<void>(hold2.get());
  for (auto& c : calls)
    static_cast<void>(c.get());
  BOOST_TEST(test::wait_until([&] {
    auto i = rt.info("p");
    return i.sent_ahead() == 0u && i.queued() == 0u;
  }));
  BOOST_TEST(rt.ok("p", "\"once more\"") == "\"once more\"");
  BOOST_TEST(rt.info("p").sent_ahead() == 0u);
  BOOST_TEST(test::wait_until([&] {
    auto text = rt.h->kernel().scrape();
    return text.find("grove_function_runtime_sent_ahead{function=\"p\"} 0\n") != std::string::npos;
  }));
}

BOOST_AUTO_TEST_CASE(a_result_held_behind_a_hung_item_is_written_in_time) {
  // "a" and "wait" are sent ahead behind a held item and read by the worker together:
  // the held item's and "a"'s results must not wait for the next one (an SDK that held
  // results to write them together would time "a" out behind a handler that hangs);
  // both are answered while "wait" still runs.
  runtime rt{fn("p", "pipeline", "timeoutInSeconds: 600")};
  rt.wait_defined("p");
  auto release = rt.dir.path() / "release";
  auto hang = rt.dir.path() / "hang";
  auto hold = std::async(std::launch::async, [&] {
    return rt.invoke("p", "\"wait:" + release.string() + "\"", 60s);
  });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").busy() == 1u; }));
  auto a = std::async(std::launch::async, [&] { return rt.invoke("p", "\"a\"", 60s); });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").sent_ahead() == 1u; }));
  auto w = std::async(std::launch::async, [&] {
    return rt.invoke("p", "\"wait:" + hang.string() + "\"", 60s);
  });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").sent_ahead() == 2u; }));
  std::ofstream{release} << "go";
  auto h = hold.get();
  BOOST_REQUIRE_MESSAGE(h, why(h));
  auto r = a.get();
  BOOST_REQUIRE_MESSAGE(r, why(r));
  BOOST_TEST(r->payload() == "\"a\"");
  // "wait" runs (it is not released): the answers above did not wait for it.
  BOOST_TEST(test::wait_until([&] { return fs::exists(hang.string() + ".pid"); }));
  BOOST_TEST(rt.info("p").busy() == 1u);
  std::ofstream{hang} << "go";
  auto wr = w.get();
  BOOST_REQUIRE_MESSAGE(wr, why(wr));
  BOOST_TEST(rt.info("p").errors() == 0u);
}

BOOST_AUTO_TEST_CASE(a_worker_dying_on_an_item_sent_ahead_fails_that_item_only) {
  // The worker answers "a", then dies on "crash", with "b" sent ahead behind it: "a" is
  // answered (its Result came before the exit), "crash" fails, "b" runs on the next
  // instance, and the crasher is not run again.
  runtime rt{fn("p", "pipeline", "timeoutInSeconds: 600")};
  rt.wait_defined("p");
  auto release = rt.dir.path() / "release";
  auto held_payload = "\"wait:" + release.string() + "\"";
  auto hold = std::async(std::launch::async, [&] { return rt.invoke("p", held_payload, 60s); });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").busy() == 1u; }));
  std::vector<std::future<caf::expected<grove::Envelope>>> calls;
  int n = 0;
  for (std::string p : {"\"a\"", "\"crash\"", "\"b\""}) {
    calls.push_back(std::async(std::launch::async, [&rt, p] { return rt.invoke("p", p, 60s); }));
    ++n;
    BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").queued() == size_t(n); }));
  }
  std::ofstream{release} << "go";
  auto h = hold.get();
  BOOST_REQUIRE_MESSAGE(h, why(h));
  auto a = calls[0].get();
  BOOST_REQUIRE_MESSAGE(a, why(a));
  BOOST_TEST(a->payload() == "\"a\"");
  auto crash = calls[1].get();
  BOOST_REQUIRE(!crash);
  BOOST_TEST(grove::describe(crash.error()).find("SIGSEGV") != std::string::npos);
  auto b = calls[2].get();
  BOOST_REQUIRE_MESSAGE(b, why(b));
  BOOST_TEST(b->payload() == "\"b\"");
  auto info = rt.info("p");
  BOOST_TEST(info.errors() == 1u);
  BOOST_TEST(info.invocations() == 3u);
}

BOOST_AUTO_TEST_CASE(a_lowered_timeout_applies_to_the_item_sent_ahead) {
  // timeoutInSeconds drops from 600 to 1 while an item waits behind a held one: when it
  // reaches the handler it gets the new timeout, not the timer armed for the old one.
  auto with = [](const std::string& t) { return fn("p", "pipeline", "timeoutInSeconds: " + t); };
  runtime rt{with("600")};
  rt.wait_defined("p");
  auto release = rt.dir.path() / "release";
  auto hold = std::async(std::launch::async, [&] {
    return rt.invoke("p", "\"wait:" + release.string() + "\"", 60s);
  });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").busy() == 1u; }));
  auto never = "\"wait:" + (rt.dir.path() / "never").string() + "\"";
  auto next = std::async(std::launch::async, [&] { return rt.invoke("p", never, 30s); });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("p").queued() == 1u; }));
  rt.rewrite(with("1"));
  BOOST_REQUIRE(test::wait_until([&] {
    return rt.log_of("p").find("definition changed") != std::string::npos;
  }));
  std::ofstream{release} << "go";
  auto h = hold.get();
  BOOST_REQUIRE_MESSAGE(h, why(h));
  auto r = next.get(); // the runtime's timeout, not the request's
  BOOST_REQUIRE(!r);
  BOOST_TEST(grove::describe(r.error()).find("timed out after 1 s") != std::string::npos,
             grove::describe(r.error()));
}

BOOST_AUTO_TEST_CASE(concurrent_requests_get_their_own_replies_through_the_pipeline) {
  runtime rt{fn("e", "echo")};
  rt.wait_defined("e");
  std::vector<std::future<int>> workers;
  for (int t = 0; t < 8; ++t)
    workers.push_back(std::async(std::launch::async, [&rt, t] {
      int wrong = 0;
      for (int i = 0; i < 200; ++i) {
        auto payload = "[" + std::to_string(t) + "," + std::to_string(i) + "]";
        auto r = rt.invoke("e", payload);
        wrong += r && r->payload() == payload ? 0 : 1;
      }
      return wrong;
    }));
  for (auto& w : workers)
    BOOST_TEST(w.get() == 0);
  BOOST_TEST(rt.info("e").invocations() == 1600u);
  BOOST_TEST(rt.info("e").errors() == 0u);
}

BOOST_AUTO_TEST_CASE(faults_of_a_function_stay_with_its_item_and_instance) {
  runtime rt{fn("crash", "crash") + fn("throw", "throw") + fn("exit", "exit")
               + fn("garbage", "garbage") + fn("flood", "flood") + fn("e", "echo"),
             "{allow_run_as_root: true, max_pending_frames: 64}"};
  rt.wait_defined("e");
  auto thrown = rt.invoke("throw", "{}");
  BOOST_REQUIRE(!thrown);
  BOOST_TEST(grove::describe(thrown.error()).find("handler refused: {}") != std::string::npos);
  BOOST_TEST(rt.info("throw").errors() == 1u);
  auto crashed = rt.invoke("crash", "{}");
  BOOST_REQUIRE(!crashed);
  BOOST_TEST(grove::describe(crashed.error()).find("SIGSEGV") != std::string::npos);
  auto exited = rt.invoke("exit", "{}");
  BOOST_REQUIRE(!exited);
  BOOST_TEST(grove::describe(exited.error()).find("exited with code 3") != std::string::npos);
  auto garbage = rt.invoke("garbage", "{}");
  BOOST_REQUIRE(!garbage);
  BOOST_TEST(grove::describe(garbage.error()).find("bad IPC frame") != std::string::npos);
  auto flood = rt.invoke("flood", "{}");
  BOOST_REQUIRE(!flood);
  BOOST_TEST(grove::describe(flood.error()).find("flood") != std::string::npos);
  BOOST_TEST(rt.ok("e", "{\"still\":\"here\"}") == "{\"still\":\"here\"}");
  // Each faulty pinned function gets a fresh instance.
  BOOST_TEST(test::wait_until([&] { return rt.info("crash").instances() == 1u; }));
  BOOST_TEST(test::wait_until([&] { return rt.info("garbage").instances() == 1u; }));
}

BOOST_AUTO_TEST_CASE(a_worker_that_does_not_read_its_acks_is_ended_not_waited_for) {
  // Acks (and a Recall) are written without waiting: a worker that leaves them unread
  // fills its socket, and a runtime that waited there would hold every function up to
  // the send timeout (and a Recall, sent only once the worker drained the socket, would
  // come after the worker started an item sent ahead, under the grant it was retired
  // for). Without that, the instance ends at the timeout, "cannot write".
  runtime rt{fn("u", "unread_acks") + fn("e", "echo"),
             "{allow_run_as_root: true, max_pending_frames: 1000000}"};
  rt.wait_defined("e");
  auto release = rt.dir.path() / "release";
  auto r = rt.invoke("u", "\"" + release.string() + "\"");
  BOOST_TEST(!r);
  BOOST_TEST(has(why(r), "its socket is full: the worker does not read what the runtime sends it"),
             why(r));
  BOOST_TEST(rt.ok("e", "{\"still\":\"here\"}") == "{\"still\":\"here\"}");
  std::ofstream{release} << "\n"; // the worker, if still there, returns
  BOOST_TEST(has(rt.log_of("u"), "its socket is full"), rt.log_of("u"));
}

BOOST_AUTO_TEST_CASE(replies_to_a_worker_that_stops_reading_wait_for_it_not_the_actor) {
  // Worker "u" makes 16 calls of function "e" with 100 KiB payloads and reads none of the
  // replies until the test lets it: 1.6 MB, more than its socket holds. The replies wait
  // for it in the runtime, in order, while the runtime serves "e" (and everyone else);
  // once "u" reads, it gets every reply whole. A runtime that wrote a reply blocking
  // would hold its actor on the full socket (the test's own invoke of "e" waits behind
  // it) until the send timed out and ended "u" ("cannot write to the instance").
  runtime rt{fn("u", "unread_replies", "pinned: true, timeoutInSeconds: 120")
             + fn("e", "echo", "maxInstancesCount: 4")};
  rt.wait_defined("u");
  rt.wait_defined("e");
  auto release = rt.dir.path() / "release";
  auto held = std::async(std::launch::async,
                         [&] { return rt.invoke("u", "\"" + release.string() + "\"", 180s); });
  BOOST_REQUIRE(test::wait_until([&] { return fs::exists(release.string() + ".sent"); }));
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("e").invocations() >= 16u; }));
  BOOST_TEST(rt.ok("e", "{\"served\":true}") == "{\"served\":true}");
  BOOST_TEST(rt.info("u").instances() == 1u);
  std::ofstream{release} << "\n";
  auto r = held.get();
  BOOST_REQUIRE_MESSAGE(r, why(r));
  BOOST_TEST(r->payload() == "16 replies");
  BOOST_TEST(rt.info("u").errors() == 0u);
}

BOOST_AUTO_TEST_CASE(output_lines_the_log_did_not_get_are_counted_per_function) {
  // grove::process keeps at most 1 MiB of a child's lines waiting for the runtime and
  // drops the rest (counted): the count is the function's, in the list (grovectl
  // functions), not only a note in its log. The run of dropped lines is counted when it
  // ends, at the next line the runtime takes: the "tail" item writes one.
  runtime rt{fn("f", "stdout_flood", "pinned: true") + fn("e", "echo")};
  rt.wait_defined("f");
  BOOST_TEST(rt.info("f").output_lines_dropped() == 0u);
  BOOST_TEST(rt.ok("f", "{}") == "flooded");
  BOOST_REQUIRE(test::wait_until([&] {
    (void) rt.invoke("f", "\"tail\"");
    return rt.info("f").output_lines_dropped() > 0;
  }));
  auto dropped = rt.info("f").output_lines_dropped();
  BOOST_TEST(dropped < 300000u);
  BOOST_TEST(rt.info("e").output_lines_dropped() == 0u);
  // The note reaches the log file on the log's own path, not with the count: waited for.
  BOOST_TEST(test::wait_until([&] {
    return has(rt.log_of("f"), "dropped here: written faster than they were taken");
  }), rt.log_of("f").size() << " bytes of log without the note");
}

BOOST_AUTO_TEST_CASE(items_that_crash_or_time_out_never_make_a_function_give_up) {
  // More faulty items within a minute than the restart policy's failed starts (5): each
  // is that item's failure and its instance is replaced; the function goes on serving,
  // pinned or on demand.
  for (std::string pinned : {"true", "false"}) {
    // 3 s: a crash under load must not pass for a timeout.
    runtime rt{fn("g", "pipeline", "pinned: " + pinned + ", timeoutInSeconds: 3")};
    rt.wait_defined("g");
    // A crash is reported as plugin_failed, or as timeout when the load delays the exit
    // past the item's deadline: either is the item's fault, never the function's.
    for (int i = 0; i < 7; ++i) {
      auto r = rt.invoke("g", "\"crash\"");
      BOOST_TEST((is(r, errc::plugin_failed) || is(r, errc::timeout)),
                 pinned << " crash " << i << ": " << why(r));
    }
    auto slow = rt.invoke("g", "\"wait:" + (rt.dir.path() / "never").string() + "\"");
    BOOST_TEST(is(slow, errc::timeout), pinned << ": " << why(slow));
    auto r = rt.invoke("g", "\"pid\"");
    BOOST_TEST(bool(r), pinned << ": " << why(r));
    BOOST_TEST(!has(rt.log_of("g"), "gave up"), rt.log_of("g"));
  }
}

BOOST_AUTO_TEST_CASE(a_function_that_gave_up_starting_tries_again_after_its_back_off) {
  // Starts fail (exit before the hello) until the gate file goes: the function gives up
  // and refuses work with plugin_broken, then, give_up_retry_ms later, starts again
  // without a redeploy.
  for (std::string pinned : {"true", "false"}) {
    test::temp_dir tmp;
    auto gate = tmp.path() / "gate";
    std::ofstream{gate} << "closed";
    runtime rt{fn("s", "pid", "pinned: " + pinned + ", environmentVariables: {START_GATE: '"
                                + gate.string() + "'}"),
               "{allow_run_as_root: true, give_up_retry_ms: 500}"};
    rt.wait_defined("s");
    if (pinned == "false") // on demand: work makes it try
      BOOST_TEST(is(rt.invoke("s", "{}", 60s), errc::plugin_broken));
    BOOST_REQUIRE_MESSAGE(test::wait_until([&] {
      return rt.info("s").last_error().find("gave up") != std::string::npos;
    }, 60s), pinned << ": " << rt.info("s").last_error());
    fs::remove(gate);
    BOOST_TEST(test::wait_until([&] { return bool(rt.invoke("s", "{}", 60s)); }, 60s),
               pinned << ": " << rt.log_of("s"));
    BOOST_TEST(has(rt.log_of("s"), "trying to start again after the give-up"));
  }
}

BOOST_AUTO_TEST_CASE(bad_names_in_verbs_are_the_calls_errors_not_the_instances) {
  runtime rt{fn("n", "names")};
  rt.wait_defined("n");
  auto pid = rt.ok("n", "\"pid\"");
  // The SDK refuses them before sending.
  std::istringstream sdk{rt.ok("n", "\"sdk\"")};
  std::vector<std::string> lines;
  for (std::string line; std::getline(sdk, line);)
    lines.push_back(line);
  BOOST_REQUIRE_EQUAL(lines.size(), 8u);
  for (size_t i = 0; i < 5; ++i)
    BOOST_TEST(has(lines[i], "malformed: the function name is not one topic level"), lines[i]);
  BOOST_TEST(has(lines[5], "malformed: the thing name is not 1-128"), lines[5]);
  BOOST_TEST(has(lines[6], "malformed: the thing name is not 1-128"), lines[6]);
  BOOST_TEST(has(lines[7], "malformed: the shadow name is not 1-64"), lines[7]);
  // The runtime answers the same sent raw, and keeps the instance.
  auto raw = rt.ok("n", "\"raw\"");
  BOOST_TEST(has(raw, "900001 malformed: invoke: 'a/b' is not a function name"), raw);
  BOOST_TEST(has(raw, "900002 malformed: 'my lamp' is not a thing name"), raw);
  BOOST_TEST(has(raw, "900003 malformed: '" + std::string(129, 't') + "' is not a thing name"),
             raw);
  BOOST_TEST(rt.ok("n", "\"pid\"") == pid);
  BOOST_TEST(rt.info("n").errors() == 0u);
}

BOOST_AUTO_TEST_CASE(an_event_for_a_function_that_does_not_exist_is_refused) {
  runtime rt{fn("ev", "event") + fn("e", "echo")};
  rt.wait_defined("e");
  BOOST_TEST(rt.ok("ev", "\"e\"") == "\"queued\"");
  auto missing = rt.ok("ev", "\"nosuch\"");
  BOOST_TEST(has(missing, "no function 'nosuch' in the group"), missing);
  BOOST_TEST(has(missing, "no_route"), missing);
}

BOOST_AUTO_TEST_CASE(the_queue_is_bounded_in_bytes_too) {
  // One item in the handler (nothing sent ahead: pipeline_depth 1), then 40 KiB queued:
  // another 40 KiB would pass max_queue_bytes (64 KiB) and is refused like a full queue,
  // a small one still fits; an item over max_frame_bytes is refused as it arrives.
  runtime rt{fn("q", "pipeline", "timeoutInSeconds: 600"),
             "{allow_run_as_root: true, pipeline_depth: 1, max_queue_bytes: 65536, "
             "max_frame_bytes: 65536}"};
  rt.wait_defined("q");
  auto gate = rt.dir.path() / "gate";
  auto held = std::async(std::launch::async, [&] {
    return rt.invoke("q", "\"wait:" + gate.string() + "\"", 120s);
  });
  BOOST_REQUIRE(test::wait_until([&] { return fs::exists(gate.string() + ".pid"); }));
  auto big = "\"" + std::string(40 << 10, 'x') + "\"";
  auto first = std::async(std::launch::async, [&] { return rt.invoke("q", big, 120s); });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("q").queued() == 1u; }));
  auto refused = rt.invoke("q", big);
  BOOST_TEST(is(refused, errc::queue_full), why(refused));
  BOOST_TEST(has(why(refused), "max_queue_bytes 65536"), why(refused));
  auto huge = rt.invoke("q", "\"" + std::string(65537, 'x') + "\"");
  BOOST_TEST(is(huge, errc::too_large), why(huge));
  BOOST_TEST(rt.info("q").refused() == 2u);
  auto small = std::async(std::launch::async, [&] { return rt.invoke("q", "\"pid\"", 120s); });
  BOOST_REQUIRE(test::wait_until([&] { return rt.info("q").queued() == 2u; }));
  std::ofstream{gate} << "go";
  BOOST_TEST(bool(held.get()));
  auto r1 = first.get();
  BOOST_TEST(bool(r1), why(r1));
  auto r2 = small.get();
  BOOST_TEST(bool(r2), why(r2));
}

BOOST_AUTO_TEST_CASE(a_function_that_cannot_start_is_a_clear_error) {
  runtime rt{fn("nohello", "nohello") + fn("badtoken", "badtoken")
             + "  - name: missing\n    config: {handler: /nonexistent/fn, runAs: {uid: 0}, "
               "linuxProcessParams: {isolationMode: NoContainer}}\n"};
  rt.wait_defined("missing");
  auto r = rt.invoke("missing", "{}", 60s);
  BOOST_TEST(is(r, errc::plugin_broken));
  BOOST_TEST(rt.info("missing").last_error().find("/nonexistent/fn") != std::string::npos);
  BOOST_TEST(test::wait_until([&] {
    return rt.info("nohello").last_error().find("gave up") != std::string::npos;
  }, 60s));
  BOOST_TEST(test::wait_until([&] {
    return rt.info("badtoken").last_error().find("gave up") != std::string::npos;
  }, 60s));
}

BOOST_AUTO_TEST_CASE(json_functions_refuse_other_payloads_binary_ones_take_any) {
  runtime rt{fn("j", "echo") + fn("b", "echo", "inputPayloadEncodingType: binary")};
  rt.wait_defined("b");
  auto r = rt.invoke("j", "not json");
  BOOST_REQUIRE(is(r, errc::malformed));
  BOOST_TEST(grove::describe(r.error()).find("not JSON") != std::string::npos);
  std::string bytes{"\x00\xff\x01", 3};
  BOOST_TEST(rt.ok("b", bytes) == bytes);
}

BOOST_AUTO_TEST_CASE(routed_messages_event_sources_and_events_reach_the_handler) {
  runtime rt{fn("c", "context", "eventSources: [{topic: local/in, type: PUB_SUB}]")};
  rt.wait_defined("c");
  // Direct invocation: the reply is the context.
  auto direct = rt.ok("c", "{}");
  BOOST_TEST(direct.find("\"function\":\"c\"") != std::string::npos);
  BOOST_TEST(direct.find("\"event\":false") != std::string::npos);
  // mm-1 (published here by the test; message_manager does in an image).
  BOOST_REQUIRE(rt.h->publish("$grove/mm/out/function/c/home/switch/1", "{}"));
  BOOST_TEST(test::wait_until([&] {
    return rt.log_of("c").find("\"subject\":\"home/switch/1\",\"source\":\"test\"")
           != std::string::npos;
  }));
  BOOST_REQUIRE(rt.h->publish("local/in", "{}"));
  BOOST_TEST(test::wait_until([&] {
    return rt.log_of("c").find("\"subject\":\"local/in\"") != std::string::npos;
  }));
  BOOST_REQUIRE(rt.h->publish("$grove/functions/event/c", "{}"));
  BOOST_TEST(test::wait_until([&] { return rt.info("c").invocations() == 4u; }));
  BOOST_TEST(rt.log_of("c").find("\"subject\":\"\",\"source\":\"test\"") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_function_invokes_another_and_publishes_as_itself) {
  runtime rt{fn("caller", "invoke") + fn("callee", "context") + fn("pub", "publish")};
  rt.wait_defined("pub");
  auto reply = rt.ok("caller", "\"callee\"");
  BOOST_TEST(reply.find("\"source\":\"function:caller\"") != std::string::npos);
  // No message_manager in this kernel: the publish reaches mm-3's topic and nobody
  // serves it, which the function sees as the verb's error.
  auto r = rt.invoke("pub", "{}");
  BOOST_REQUIRE(!r);
  BOOST_TEST(grove::describe(r.error()).find("no_route") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(an_invalid_change_keeps_the_previous_definition) {
  runtime rt{fn("e", "echo")};
  rt.wait_defined("e");
  BOOST_TEST(rt.ok("e", "1") == "1");
  rt.rewrite(fn("e", "echo", "maxQueueSize: lots")
             + "  - name: nohandler\n    config: {pinned: true}\n");
  BOOST_TEST(test::wait_until([&] { return !rt.info("e").last_error().empty(); }));
  auto e = rt.info("e");
  BOOST_TEST(e.valid());
  BOOST_TEST(e.last_error().find("maxQueueSize") != std::string::npos);
  BOOST_TEST(e.last_error().find("group.yaml") != std::string::npos);
  BOOST_TEST(rt.ok("e", "2") == "2");
  auto n = rt.info("nohandler");
  BOOST_TEST(!n.valid());
  BOOST_TEST(n.last_error().find("handler") != std::string::npos);
  BOOST_TEST(is(rt.invoke("nohandler", "{}"), errc::no_route));
}

BOOST_AUTO_TEST_CASE(function_logs_rotate_at_their_cap) {
  runtime rt{fn("l", "log"), "{allow_run_as_root: true, log_max_bytes: 4096, log_files: 2}"};
  rt.wait_defined("l");
  BOOST_TEST(rt.ok("l", "{}") == "logged");
  auto base = rt.dir.path() / "var" / "logs" / "functions";
  BOOST_TEST(fs::exists(base / "l.log.1"));
  BOOST_TEST(fs::exists(base / "l.log.2"));
  BOOST_TEST(!fs::exists(base / "l.log.3"));
  BOOST_TEST(fs::file_size(base / "l.log.1") < 4096u + 512u);
}

/// The text of `file`, "" when there is none.
std::string text_of(const fs::path& file) {
  std::ifstream in{file};
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// function_log on a real file: each file stays within the cap, the newest lines are in
// the live file, the oldest go first; with no rotated files kept it is truncated; a
// smaller cap and fewer files apply at once.
BOOST_AUTO_TEST_CASE(function_log_caps_a_real_file) {
  test::temp_dir dir;
  auto path = dir.path() / "f.log";
  {
    grove::fn::function_log log{path, 4096, 0};
    for (int i = 0; i < 200; ++i)
      log.write("INFO", "line " + std::to_string(i) + " " + std::string(100, 'x'));
  }
  BOOST_TEST(fs::file_size(path) <= 4096u);
  BOOST_TEST(!fs::exists(dir.path() / "f.log.1"));
  auto t = text_of(path);
  BOOST_TEST(t.find("line 199 ") != std::string::npos);
  BOOST_TEST(t.find("line 0 ") == std::string::npos);
  grove::fn::function_log log{path, 8192, 3};
  for (int i = 0; i < 400; ++i)
    log.write("INFO", "more " + std::to_string(i) + " " + std::string(100, 'y'));
  uintmax_t total = 0;
  for (auto f : {"f.log", "f.log.1", "f.log.2", "f.log.3"}) {
    BOOST_REQUIRE(fs::exists(dir.path() / f));
    BOOST_TEST(fs::file_size(dir.path() / f) <= 8192u);
    total += fs::file_size(dir.path() / f);
  }
  BOOST_TEST(total <= 4 * 8192u);
  BOOST_TEST(!fs::exists(dir.path() / "f.log.4"));
  BOOST_TEST(text_of(path).find("more 399 ") != std::string::npos);
  BOOST_TEST(text_of(dir.path() / "f.log.3").find("more 0 ") == std::string::npos);
  log.set_limits(2048, 1);
  BOOST_TEST(!fs::exists(dir.path() / "f.log.2"));
  BOOST_TEST(!fs::exists(dir.path() / "f.log.3"));
  log.write("INFO", "last");
  BOOST_TEST(fs::file_size(path) <= 2048u);
  BOOST_TEST(text_of(path).find("last") != std::string::npos);
}

// Review of issue 16: a smaller cap cuts the rotated files kept too (their oldest lines
// first), so the files together fit the new cap; a line longer than the cap is cut at
// it and marked.
BOOST_AUTO_TEST_CASE(a_smaller_cap_cuts_rotated_files_and_long_lines) {
  test::temp_dir dir;
  auto path = dir.path() / "f.log";
  grove::fn::function_log log{path, 8192, 3};
  for (int i = 0; i < 400; ++i)
    log.write("INFO", "line " + std::to_string(i) + " " + std::string(100, 'x'));
  BOOST_REQUIRE(fs::exists(dir.path() / "f.log.3"));
  BOOST_REQUIRE(fs::file_size(dir.path() / "f.log.2") > 2048u);
  // The live file over the new cap is rotated into .1, so .2 then holds the old .1's
  // newest lines; otherwise the old .2's.
  auto old_second = fs::file_size(path) > 2048u ? text_of(dir.path() / "f.log.1")
                                                : text_of(dir.path() / "f.log.2");
  log.set_limits(2048, 2);
  BOOST_TEST(!fs::exists(dir.path() / "f.log.3"));
  uintmax_t total = 0;
  for (auto f : {"f.log", "f.log.1", "f.log.2"})
    if (fs::exists(dir.path() / f)) {
      BOOST_TEST(fs::file_size(dir.path() / f) <= 2048u, f);
      total += fs::file_size(dir.path() / f);
      auto t = text_of(dir.path() / f);
      BOOST_TEST((t.empty() || (t.starts_with("20") && t.ends_with("\n"))), f); // whole lines
    }
  BOOST_TEST(total <= 3 * 2048u);
  // .2 kept the newest lines of what it was cut from.
  auto two = text_of(dir.path() / "f.log.2");
  BOOST_REQUIRE(!two.empty());
  BOOST_TEST(old_second.ends_with(two));
  BOOST_TEST(two.find("line 0 ") == std::string::npos);
  // One line longer than the cap: cut at it, marked, and the next line still written.
  log.write("INFO", "long " + std::string(5000, 'z'));
  log.write("INFO", "after");
  BOOST_TEST(fs::file_size(path) <= 2048u);
  auto one = text_of(dir.path() / "f.log.1");
  BOOST_TEST(one.find("long zzz") != std::string::npos);
  BOOST_TEST(one.ends_with("z\u2026truncated\n"), one.size());
  BOOST_TEST(fs::file_size(dir.path() / "f.log.1") == 2048u);
  BOOST_TEST(text_of(path).find("after") != std::string::npos);
}

// Issue 16: the group's Lambda logger sets the level of the SDK's log() lines and the
// cap of each function's logs (Space for the file and its rotated ones together), live;
// a group without it gives the image's defaults back.
BOOST_AUTO_TEST_CASE(a_lambda_logger_sets_level_and_cap_live) {
  auto with_logger = [](const std::string& level, int space_kb) {
    return fn("l", "log") + "loggers:\n  - {id: fl, component: Lambda, level: " + level
           + ", space_kb: " + std::to_string(space_kb) + "}\n";
  };
  runtime rt{with_logger("WARN", 16)};
  rt.wait_defined("l");
  auto base = rt.dir.path() / "var" / "logs" / "functions";
  auto status = [&] {
    auto details = rt.h->kernel().status().details();
    auto it = details.find("function_runtime.function_logs");
    return it == details.end() ? std::string{} : it->second;
  };
  BOOST_TEST(test::wait_until([&] { return status().find("group logger 'fl'") != std::string::npos; }),
             status());
  BOOST_TEST(status().find("WARN and above, 4096 bytes per file, 3 rotated files") == 0, status());
  BOOST_TEST(rt.ok("l", "{}") == "logged");
  // 100 INFO lines under WARN: none written.
  BOOST_TEST(text_of(base / "l.log").find("line ") == std::string::npos);
  rt.rewrite(with_logger("INFO", 16));
  BOOST_TEST(test::wait_until([&] { return status().find("INFO and above") == 0; }), status());
  BOOST_TEST(rt.ok("l", "{}") == "logged");
  uintmax_t total = 0;
  std::string all;
  for (auto f : {"l.log", "l.log.1", "l.log.2", "l.log.3"})
    if (fs::exists(base / f)) {
      BOOST_TEST(fs::file_size(base / f) <= 4096u);
      total += fs::file_size(base / f);
      all += text_of(base / f);
    }
  BOOST_TEST(total <= 16u * 1024u);
  BOOST_TEST(!fs::exists(base / "l.log.4"));
  BOOST_TEST(text_of(base / "l.log").find("line 99 ") != std::string::npos); // the newest
  BOOST_TEST(all.find("line 0 ") == std::string::npos);                      // the oldest went
  // Without the logger: the profile's defaults.
  rt.rewrite(fn("l", "log"));
  BOOST_TEST(test::wait_until([&] { return status().find("image profile") != std::string::npos; }),
             status());
  BOOST_TEST(status().find("DEBUG and above, 1048576 bytes per file, 3 rotated files") == 0,
             status());
}

BOOST_AUTO_TEST_CASE(functions_run_as_the_default_user) {
  runtime missing{"  - name: u\n    config: {handler: /bin/true}\n",
                  "{default_user: grove-no-such-user}"};
  missing.wait_defined("u");
  BOOST_TEST(missing.info("u").last_error().find("grove-no-such-user' does not exist")
             != std::string::npos);
  auto* pw = ::getpwnam("grove-fn");
  if (::geteuid() != 0 || pw == nullptr) {
    BOOST_TEST_MESSAGE("not root or no user grove-fn (tools/deps makes it): skipped");
    return;
  }
  // The build tree may be unreachable for grove-fn: run a copy from a reachable place.
  test::temp_dir code;
  ::chmod(code.path().c_str(), 0755);
  fs::copy_file(FN_TEST_FUNCTION, code.path() / "fn");
  runtime rt{"  - name: u\n    config: {handler: fn, codeUri: " + code.path().string()
             + ", execArgs: [uid], linuxProcessParams: {isolationMode: NoContainer}}\n"};
  rt.wait_defined("u");
  BOOST_TEST(rt.ok("u", "{}") == std::to_string(pw->pw_uid));
  // A Python function too, sandboxed (the default): the sandbox shows it the SDK, which
  // a build tree in a 0700 directory would hide from grove-fn under NoContainer.
  fs::copy_file(fs::path{FN_PYTHON_CODE} / "pyfn.py", code.path() / "pyfn.py");
  runtime py_rt{"  - name: u\n    config: {runtime: python3, handler: pyfn.uid, codeUri: "
                + code.path().string() + "}\n"};
  py_rt.wait_defined("u");
  BOOST_TEST(py_rt.ok("u", "{}") == std::to_string(pw->pw_uid));
}

namespace {

/// Runs `cmd` with /bin/sh and returns its first output line.
std::string shell(const std::string& cmd) {
  std::string out;
  if (auto* p = ::popen(cmd.c_str(), "r")) {
    char buf[256];
    if (std::fgets(buf, sizeof buf, p) != nullptr)
      out = buf;
    ::pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' '))
    out.pop_back();
  return out;
}

} // namespace

BOOST_AUTO_TEST_CASE(code_from_an_archive_is_checked_and_unpacked) {
  test::temp_dir src;
  fs::create_directories(src.path() / "pkg" / "bin");
  fs::copy_file(FN_TEST_FUNCTION, src.path() / "pkg" / "bin" / "fn");
  // Marked setuid in the archive: groved unpacks as root, so this must not survive.
  fs::permissions(src.path() / "pkg" / "bin" / "fn",
                  fs::perms::set_uid | fs::perms::owner_all | fs::perms::group_read
                    | fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
  auto tgz = src.path() / "code.tar.gz";
  auto zip = src.path() / "code.zip";
  BOOST_REQUIRE(std::system(("tar -C " + (src.path() / "pkg").string() + " -czf "
                             + tgz.string() + " bin").c_str()) == 0);
  auto sha = shell("sha256sum " + tgz.string() + " | cut -d' ' -f1");
  BOOST_REQUIRE_EQUAL(sha.size(), 64u);
  std::string wrong(64, '0');
  auto entry = [&](const std::string& name, const fs::path& uri, const std::string& digest) {
    return "  - name: " + name + "\n    config: {handler: bin/fn, codeUri: " + uri.string()
           + ", codeSha256: \"" + digest + "\", execArgs: [echo], runAs: {uid: 0, gid: 0}, "
           "linuxProcessParams: {isolationMode: NoContainer}}\n";
  };
  runtime rt{entry("good", tgz, sha) + entry("tampered", tgz, wrong)};
  rt.wait_defined("tampered");
  BOOST_TEST(rt.ok("good", "[7]") == "[7]");
  auto t = rt.info("tampered");
  BOOST_TEST(!t.valid());
  BOOST_TEST(t.last_error().find("SHA-256 is " + sha) != std::string::npos);
  // Unpacked once, under the runtime's state directory, named by the digest.
  auto unpacked = rt.h->state_dir() / "code" / sha / "bin" / "fn";
  BOOST_TEST(fs::exists(unpacked));
  BOOST_TEST(((fs::status(unpacked).permissions() & fs::perms::set_uid) == fs::perms::none));
  // The default user runs it although the code sits under groved's 0700 write dir: the
  // handler is executed relative to the code directory the child entered as root.
  auto* pw = ::getpwnam("grove-fn");
  if (::geteuid() != 0 || pw == nullptr) {
    BOOST_TEST_MESSAGE("not root or no user grove-fn (tools/deps makes it): skipped");
    return;
  }
  runtime as_user{"  - name: u\n    config: {handler: bin/fn, codeUri: " + tgz.string()
                  + ", codeSha256: \"" + sha + "\", execArgs: [uid], "
                  "linuxProcessParams: {isolationMode: NoContainer}}\n"};
  as_user.wait_defined("u");
  BOOST_TEST(as_user.ok("u", "{}") == std::to_string(pw->pw_uid));
}

BOOST_AUTO_TEST_CASE(an_unpacked_archive_is_hashed_again_only_when_its_file_changed) {
  auto slurp = [](const fs::path& p) {
    std::ifstream in{p, std::ios::binary};
    return std::string{std::istreambuf_iterator<char>{in}, {}};
  };
  test::temp_dir d;
  fs::create_directories(d.path() / "pkg");
  std::ofstream{d.path() / "pkg" / "x"} << "one";
  auto tgz = d.path() / "code.tar.gz";
  BOOST_REQUIRE(std::system(("tar -C " + (d.path() / "pkg").string() + " -czf " + tgz.string()
                             + " x").c_str()) == 0);
  auto sha = shell("sha256sum " + tgz.string() + " | cut -d' ' -f1");
  auto root = d.path() / "code";
  auto marker = [&] {
    std::ifstream in{root / sha / ".grove-unpacked"};
    std::string digest, identity;
    std::getline(in, digest);
    std::getline(in, identity);
    BOOST_TEST(digest == sha);
    return identity;
  };
  auto first = grove::fn::unpack_code(tgz, sha, root);
  BOOST_REQUIRE_MESSAGE(first, (first ? std::string{} : grove::describe(first.error())));
  auto identity = marker();
  BOOST_TEST(!identity.empty());
  auto again = grove::fn::unpack_code(tgz, sha, root);
  BOOST_REQUIRE(again);
  BOOST_TEST(*again == *first);
  BOOST_TEST(marker() == identity);
  // Other bytes of the same size, the modification time put back: the change time still
  // tells, so the file is hashed again and refused.
  std::string original = slurp(tgz);
  struct stat before {};
  BOOST_REQUIRE(::stat(tgz.c_str(), &before) == 0);
  std::string other = original;
  other[other.size() / 2] = static_cast<char>(other[other.size() / 2] ^ 0x55);
  std::ofstream{tgz, std::ios::binary | std::ios::trunc} << other;
  struct timespec times[2] = {before.st_atim, before.st_mtim};
  BOOST_REQUIRE(::utimensat(AT_FDCWD, tgz.c_str(), times, 0) == 0);
  auto changed = grove::fn::unpack_code(tgz, sha, root);
  BOOST_REQUIRE(!changed);
  BOOST_TEST(grove::describe(changed.error()).find("SHA-256 is") != std::string::npos,
             grove::describe(changed.error()));
  // Its bytes back (a new identity): hashed, accepted, the marker names the file as it is.
  std::ofstream{tgz, std::ios::binary | std::ios::trunc} << original;
  auto back = grove::fn::unpack_code(tgz, sha, root);
  BOOST_REQUIRE(back);
  BOOST_TEST(*back == *first);
  BOOST_TEST(marker() != identity);
  BOOST_TEST(slurp(*back / "x") == "one");
}

BOOST_AUTO_TEST_CASE(root_needs_the_images_consent) {
  runtime rt{fn("r", "echo"), "{}"};
  rt.wait_defined("r");
  BOOST_TEST(rt.info("r").last_error().find("allow_run_as_root") != std::string::npos,
             rt.info("r").last_error());
  BOOST_TEST(!rt.invoke("r", "[1]"));
}

BOOST_AUTO_TEST_CASE(root_runs_only_without_a_container) {
  // As in Greengrass: even with the image's consent, runAs root needs NoContainer; a
  // GreengrassContainer worker is never host root (uid or gid).
  runtime rt{"  - name: r\n    config: {handler: " + std::string{FN_TEST_FUNCTION}
               + ", execArgs: [uid], runAs: {uid: 0, gid: 0}}\n"
             + "  - name: g\n    config: {handler: " + std::string{FN_TEST_FUNCTION}
             + ", execArgs: [uid], runAs: {uid: 65534, gid: 0}}\n"
             + fn("plain", "uid")};
  rt.wait_defined("plain");
  for (const auto* name : {"r", "g"}) {
    auto info = rt.info(name);
    BOOST_TEST(!info.valid(), name);
    BOOST_TEST(info.last_error().find("runs only with linuxProcessParams.isolationMode "
                                      "NoContainer")
                 != std::string::npos,
               info.last_error());
    BOOST_TEST(is(rt.invoke(name, "{}"), errc::no_route), name);
  }
  BOOST_TEST(rt.ok("plain", "{}") == "0");
}

BOOST_AUTO_TEST_CASE(ml_model_policies_grant_the_infer_verb) {
  // A policy naming an ML model resource is a grant of the infer verb, not a mount: a
  // NoContainer function may hold it, and no local_resources is asked (none runs here).
  // Without ml_inference in this kernel a granted model's request has no route; the
  // runtime's own answers (not granted, no such model, no model name) come first.
  auto model = [](const std::string& id) {
    return "  - id: " + id + "\n    config:\n      localMachineLearningModelResourceData:\n"
           "        path: /opt/models/" + id + ".onnx\n        sha256: " + std::string(64, 'a')
           + "\n";
  };
  runtime rt{fn("granted", "infer", "resourceAccessPolicies: [{resourceId: m}]")
             + fn("other", "infer", "resourceAccessPolicies: [{resourceId: n}]")
             + "resources:\n" + model("m") + model("n")};
  rt.wait_defined("granted");
  rt.wait_defined("other");
  BOOST_TEST(rt.ok("granted", "\"m\"").starts_with("no_route|"));
  auto denied = rt.ok("other", "\"m\"");
  BOOST_TEST(denied.starts_with("not_authorized|"), denied);
  BOOST_TEST(denied.find("function 'other' is not granted model 'm'") != std::string::npos,
             denied);
  auto unknown = rt.ok("granted", "\"nope\"");
  BOOST_TEST(unknown.starts_with("no_route|"), unknown);
  BOOST_TEST(unknown.find("no ML model resource 'nope' in the group") != std::string::npos,
             unknown);
  auto bad = rt.ok("granted", "\"a/+\"");
  BOOST_TEST(bad.starts_with("malformed|"), bad);
  // A grant goes with the policy: removed from the group, the model is refused.
  rt.rewrite(fn("granted", "infer") + fn("other", "infer", "resourceAccessPolicies: "
                                                             "[{resourceId: n}]")
             + "resources:\n" + model("m") + model("n"));
  BOOST_REQUIRE(test::wait_until(
    [&] { return rt.ok("granted", "\"m\"").starts_with("not_authorized|"); }));
  // A local resource on a NoContainer function is still refused (sandboxes only).
  rt.rewrite(fn("vol", "infer", "resourceAccessPolicies: [{resourceId: v}]")
             + "resources:\n  - id: v\n    config:\n      localVolumeResourceData:\n"
               "        sourcePath: /tmp\n        destinationPath: /data\n");
  BOOST_REQUIRE(test::wait_until([&] { return !rt.info("vol").last_error().empty(); }));
  BOOST_TEST(rt.info("vol").last_error().find("isolationMode GreengrassContainer")
               != std::string::npos,
             rt.info("vol").last_error());
  BOOST_TEST(!rt.info("vol").valid());
}

BOOST_AUTO_TEST_CASE(a_queue_smaller_than_a_frame_is_refused_at_load_naming_both_keys) {
  // max_queue_bytes below max_frame_bytes: a queue that could not hold one item of the
  // largest frame, which would be refused even with the queue empty. Refused by the
  // kernel's validator (file:line:col, both keys named), at the key given.
  const auto& map = grove::fn::runtime_config::map();
  BOOST_TEST(map.defect() == "");
  auto small = map.load("allow_run_as_root: true\nmax_frame_bytes: 1048576\n"
                        "max_queue_bytes: 65536\n",
                        "image.yaml");
  BOOST_TEST(has(why(small), "image.yaml:3:18: max_queue_bytes: must be at least "
                             "max_frame_bytes (1048576), got 65536"),
             why(small));
  auto first = map.load("max_queue_bytes: 8388608\nmax_frame_bytes: 15728640\n",
                        "image.yaml");
  BOOST_TEST(has(why(first), "image.yaml:1:18: max_queue_bytes: must be at least "
                             "max_frame_bytes (15728640), got 8388608"),
             why(first));
  // Equal is enough; the defaults hold.
  auto equal = map.load("max_frame_bytes: 65536\nmax_queue_bytes: 65536\n", "image.yaml");
  BOOST_TEST(bool(equal), why(equal));
  BOOST_TEST(bool(map.load("max_frame_bytes: 15728640\n", "image.yaml")));
  // And a kernel refuses to load the plugin with it.
  test::temp_dir dir;
  grove::testing::harness_options o;
  o.write_dir = dir.path() / "var";
  o.log_level = "off";
  grove::testing::harness h{FN_PLUGIN, "{max_frame_bytes: 1048576, max_queue_bytes: 65536}", o};
  auto err = h.start();
  BOOST_REQUIRE(err);
  BOOST_TEST(has(grove::describe(err), "max_queue_bytes: must be at least max_frame_bytes "
                                       "(1048576), got 65536"),
             grove::describe(err));
}

BOOST_AUTO_TEST_CASE(readme_table_is_the_generated_one) {
  auto generated = grove::fn::runtime_config::map().markdown();
  BOOST_TEST(grove::test::readme_config_table(FN_README) == generated,
             "README.md's table is stale; replace the lines between the config-table "
             "markers with `groved --describe-config function_runtime`:\n"
               << generated);
}

// -- runtime: python3 (sdk/function/python, tests/python/pyfn.py) -------------------

namespace {

/// A python3 function entry running `handler` from tests/python.
std::string py(const std::string& name, const std::string& handler,
               const std::string& extra = "") {
  return "  - name: " + name + "\n    config: {runtime: python3, handler: " + handler
         + ", codeUri: " + FN_PYTHON_CODE + ", runAs: {uid: 0, gid: 0}, "
           "linuxProcessParams: {isolationMode: NoContainer}"
         + (extra.empty() ? "" : ", " + extra) + "}\n";
}

} // namespace

BOOST_AUTO_TEST_CASE(python_pinned_instance_serves_survives_exceptions_and_is_restarted) {
  runtime rt{py("p", "pyfn.pid")};
  rt.wait_defined("p");
  auto pid1 = rt.ok("p", "{}");
  BOOST_TEST(rt.ok("p", "{}") == pid1); // the same long-lived instance
  auto raised = rt.invoke("p", R"({"raise":"boom"})");
  BOOST_REQUIRE(!raised);
  BOOST_TEST(has(grove::describe(raised.error()), "ValueError: asked to raise: boom"),
             grove::describe(raised.error()));
  BOOST_TEST(has(rt.log_of("p"), "Traceback (most recent call last)"));
  BOOST_TEST(has(rt.log_of("p"), "ValueError: asked to raise: boom"));
  BOOST_TEST(rt.ok("p", "{}") == pid1); // the exception cost the item, not the instance
  BOOST_TEST(rt.info("p").errors() == 1u);
  BOOST_TEST(rt.info("p").invocations() == 3u);
  BOOST_TEST(rt.replaced_after_kill("p", pid1));
}

BOOST_AUTO_TEST_CASE(python_a_pinned_instance_reports_status_through_a_long_handler) {
  // The Python runner's status reports (statusTimeoutInSeconds): a handler sleeping 5 s
  // with reports due every 1 s keeps its instance; stopped, the instance is replaced.
  runtime rt{py("p", "pyfn.pid", "statusTimeoutInSeconds: 1, timeoutInSeconds: 600")};
  rt.wait_defined("p");
  auto pid = rt.ok("p", "{}");
  BOOST_TEST(rt.ok("p", R"({"sleep": 5})") == pid);
  BOOST_REQUIRE(::kill(std::stoi(pid), SIGSTOP) == 0);
  std::string answered;
  BOOST_REQUIRE_MESSAGE(test::wait_until(
                          [&] {
                            auto r = rt.invoke("p", "{}", 60s);
                            answered = r ? r->payload() : why(r);
                            return r && r->payload() != pid;
                          },
                          90s),
                        "last answer: " << answered);
  BOOST_TEST(has(rt.log_of("p") + rt.info("p").last_error(), "no status report"));
  ::kill(std::stoi(pid), SIGCONT);
}

BOOST_AUTO_TEST_CASE(python_on_demand_instance_gets_the_context_and_exits_when_idle) {
  runtime rt{py("d", "pyfn.context", "pinned: false, maxIdleTimeInSeconds: 1")};
  rt.wait_defined("d");
  BOOST_TEST(rt.info("d").instances() == 0u);
  auto reply = nlohmann::json::parse(rt.ok("d", R"({"a":1})"));
  BOOST_TEST(reply["function"] == "d");
  BOOST_TEST(reply["type"] == "dict");
  BOOST_TEST(reply["event"] == false);
  BOOST_TEST(reply["subject"] == "");
  BOOST_TEST(!reply["invocation"].get<std::string>().empty());
  BOOST_TEST(reply["request_id"] == reply["invocation"]);
  BOOST_TEST(reply["remaining_ms"].get<int64_t>() > 0);
  BOOST_TEST(reply["remaining_ms"].get<int64_t>() <= 3000); // timeoutInSeconds' default
  BOOST_TEST(rt.info("d").instances() == 1u);
  // Routed (mm-1): the subject reaches context.subject and client_context.custom.
  BOOST_REQUIRE(rt.h->publish("$grove/mm/out/function/d/home/switch/1", "{}"));
  BOOST_TEST(test::wait_until([&] { return rt.info("d").invocations() == 2u; }));
  BOOST_TEST(test::wait_until([&] { return rt.info("d").instances() == 0u; }));
}

// Issue 16: a Lambda logger's level reaches Python's logging (DEBUG records are sent at
// all: GROVE_FUNCTION_LOG_LEVEL at the instance's start) and the runtime drops the
// lines under a level set later, the running instance unchanged.
BOOST_AUTO_TEST_CASE(python_logging_follows_the_lambda_logger) {
  auto with = [](const std::string& level) {
    return py("lv", "pyfn.levels") + "loggers:\n  - {id: fl, component: Lambda, level: " + level
           + "}\n";
  };
  runtime rt{with("DEBUG")};
  rt.wait_defined("lv");
  BOOST_TEST(rt.ok("lv", R"({"tag":"one"})") == "\"logged\"");
  auto log = rt.log_of("lv");
  BOOST_TEST(has(log, "DEBUG pyfn: debug one"), log);
  BOOST_TEST(has(log, "INFO pyfn: info one"), log);
  BOOST_TEST(has(log, "FATAL pyfn: critical one"), log);
  rt.rewrite(with("WARN"));
  BOOST_TEST(test::wait_until([&] {
    auto details = rt.h->kernel().status().details();
    auto it = details.find("function_runtime.function_logs");
    return it != details.end() && it->second.starts_with("WARN");
  }));
  BOOST_TEST(rt.ok("lv", R"({"tag":"two"})") == "\"logged\"");
  log = rt.log_of("lv");
  BOOST_TEST(!has(log, "debug two"), log);
  BOOST_TEST(!has(log, "info two"), log);
  BOOST_TEST(has(log, "WARN pyfn: warning two"), log);
  BOOST_TEST(has(log, "FATAL pyfn: critical two"), log);
}

// Review of issue 16: a LOWER level reaches a running (pinned) instance too. Its SDK
// took the level at start, so the runtime retires the instances and a new one starts
// with the lower level; without the logger Python's default (INFO) comes back.
BOOST_AUTO_TEST_CASE(a_lowered_lambda_level_reaches_pinned_instances) {
  auto with = [](const std::string& level) {
    return py("lv", "pyfn.levels", "pinned: true")
           + "loggers:\n  - {id: fl, component: Lambda, level: " + level + "}\n";
  };
  auto level_is = [](runtime& rt, const std::string& prefix) {
    return test::wait_until([&] {
      auto details = rt.h->kernel().status().details();
      auto it = details.find("function_runtime.function_logs");
      return it != details.end() && it->second.starts_with(prefix);
    });
  };
  runtime rt{with("WARN")};
  rt.wait_defined("lv");
  BOOST_TEST(rt.ok("lv", R"({"tag":"one"})") == "\"logged\"");
  auto log = rt.log_of("lv");
  BOOST_TEST(!has(log, "info one"), log);
  BOOST_TEST(has(log, "WARN pyfn: warning one"), log);
  rt.rewrite(with("DEBUG"));
  BOOST_TEST(level_is(rt, "DEBUG"));
  BOOST_TEST(rt.ok("lv", R"({"tag":"two"})") == "\"logged\"");
  log = rt.log_of("lv");
  BOOST_TEST(has(log, "DEBUG pyfn: debug two"), log);
  BOOST_TEST(has(log, "INFO pyfn: info two"), log);
  rt.rewrite(with("ERROR"));
  BOOST_TEST(level_is(rt, "ERROR"));
  BOOST_TEST(rt.ok("lv", R"({"tag":"three"})") == "\"logged\"");
  log = rt.log_of("lv");
  BOOST_TEST(!has(log, "warning three"), log);
  BOOST_TEST(has(log, "FATAL pyfn: critical three"), log);
  rt.rewrite(py("lv", "pyfn.levels", "pinned: true"));
  BOOST_TEST(level_is(rt, "DEBUG and above, 1048576"));
  BOOST_TEST(rt.ok("lv", R"({"tag":"four"})") == "\"logged\"");
  log = rt.log_of("lv");
  BOOST_TEST(has(log, "INFO pyfn: info four"), log);
  BOOST_TEST(has(log, "WARN pyfn: warning four"), log);
}

BOOST_AUTO_TEST_CASE(python_payload_encodings_and_return_values) {
  runtime rt{py("j", "pyfn.context") + py("b", "pyfn.echo", "inputPayloadEncodingType: binary")
             + py("bt", "pyfn.context", "inputPayloadEncodingType: binary")
             + py("t", "pyfn.text") + py("e", "pyfn.echo")};
  rt.wait_defined("e");
  auto r = rt.invoke("j", "not json");
  BOOST_REQUIRE(is(r, errc::malformed));
  BOOST_TEST(nlohmann::json::parse(rt.ok("j", "[1,2]"))["type"] == "list");
  BOOST_TEST(nlohmann::json::parse(rt.ok("bt", "[1,2]"))["type"] == "bytes");
  std::string bytes{"\x00\xff\x01", 3};
  BOOST_TEST(rt.ok("b", bytes) == bytes); // bytes back as they are
  BOOST_TEST(rt.ok("t", "{}") == "\"plain text\""); // anything else JSON-encoded
  BOOST_TEST(nlohmann::json::parse(rt.ok("e", R"({"k":[1,"x"]})"))
             == nlohmann::json::parse(R"({"k":[1,"x"]})"));
}

BOOST_AUTO_TEST_CASE(python_text_that_is_not_utf8_is_escaped_not_the_instances_end) {
  // os.fsdecode's kind of text (lone surrogates for bytes that are not UTF-8) raised and
  // logged: the SDK sends the bytes as \xNN, as the C++ SDK does. Sent unescaped (a
  // Log frame and a Result's error past the SDK's escaping, as another SDK might), the
  // runtime escapes them the same way; before, the frame's parse failed and ended the
  // instance.
  runtime rt{py("b", "pyfn.badtext")};
  rt.wait_defined("b");
  auto pid = rt.ok("b", "\"pid\"");
  BOOST_TEST(rt.ok("b", "\"log\"") == pid);
  auto raised = rt.invoke("b", "\"raise\"");
  BOOST_REQUIRE(!raised);
  auto text = grove::describe(raised.error());
  BOOST_TEST(has(text, "function 'b': ValueError: bad \\xff\\xfe text"), text);
  check_escaped(rt, "b", pid, "\"raw\"", "ValueError: raw bad \\xff\\xfe text",
                {"WARN pyfn: bad \\xff\\xfe text", "INFO raw bad \\xff\\xfe text"});
  // 50000 such bytes, unescaped and uncut: 4 times that escaped, which the runtime cuts
  // to 16 KiB between escapes and says so (the size counts "ValueError: ").
  auto big = rt.invoke("b", "\"raw_big\"");
  BOOST_REQUIRE(!big);
  text = grove::describe(big.error());
  BOOST_TEST(has(text, "ValueError: \\xff\\xff"), text.substr(0, 200));
  BOOST_TEST(has(text, "\\xff [200012 bytes, cut]"), text.substr(text.size() - std::min<size_t>(text.size(), 200)));
  BOOST_TEST(text.size() < 17000u);
  BOOST_TEST(grove::valid_utf8(text));
  BOOST_TEST(rt.ok("b", "\"pid\"") == pid);
  BOOST_TEST(rt.info("b").last_error().size() <= (16u << 10) + 20);
  BOOST_TEST(rt.info("b").errors() == 3u);
}

BOOST_AUTO_TEST_CASE(python_oversized_result_error_or_publish_is_an_error_not_the_instances_end) {
  // As the C++ SDK (an_oversized_result_or_publish_is_an_error_not_the_instances_end): a
  // result over max_frame_bytes is answered as an error, a publish over it is the verb's
  // error, an exception's text is cut to 16 KiB between characters; the instance serves on.
  constexpr size_t max_frame = 65536;
  runtime rt{py("o", "pyfn.oversize"),
             "{allow_run_as_root: true, max_frame_bytes: " + std::to_string(max_frame) + "}"};
  rt.wait_defined("o");
  auto pid = rt.ok("o", "{}");
  const size_t n = 100000;
  auto big = rt.invoke("o", "{\"result\": " + std::to_string(n) + "}");
  BOOST_REQUIRE(!big);
  auto text = grove::describe(big.error());
  BOOST_TEST(has(text, "result of " + std::to_string(n + 2) + " bytes exceeds max_frame_bytes ("
                         + std::to_string(max_frame) + ")"),
             text);
  auto published = rt.ok("o", "{\"publish\": " + std::to_string(n) + "}");
  BOOST_TEST(has(published, "too_large: the request's frame of "), published);
  BOOST_TEST(has(published, "(the runtime's max_frame_bytes)"), published);
  BOOST_TEST(rt.ok("o", "{}") == pid);
  auto raised = rt.invoke("o", "{\"raise\": " + std::to_string(n) + "}");
  BOOST_REQUIRE(!raised);
  text = grove::describe(raised.error());
  auto size = std::string{"ValueError: "}.size() + 3 * n; // the message's UTF-8 bytes
  BOOST_TEST(has(text, "\u20ac\u20ac [" + std::to_string(size) + " bytes, cut]"),
             text.substr(text.size() - std::min<size_t>(text.size(), 200)));
  BOOST_TEST(text.size() < 32768u);
  BOOST_TEST(grove::valid_utf8(text));
  BOOST_TEST(rt.ok("o", "{}") == pid);
  auto info = rt.info("o");
  BOOST_TEST(info.errors() == 2u);
  BOOST_TEST(info.instances() == 1u);
}

BOOST_AUTO_TEST_CASE(python_item_past_its_timeout_ends_the_instance) {
  runtime rt{py("h", "pyfn.hang", "timeoutInSeconds: 1") + py("e", "pyfn.echo")};
  rt.wait_defined("e");
  BOOST_TEST(is(rt.invoke("h", "{}"), errc::timeout));
  BOOST_TEST(rt.info("h").timeouts() == 1u);
  BOOST_TEST(test::wait_until([&] { return rt.info("h").instances() == 1u; }));
  BOOST_TEST(rt.ok("e", "[1]") == "[1]");
}

BOOST_AUTO_TEST_CASE(python_handler_that_does_not_import_is_a_clear_error) {
  runtime rt{py("nomod", "no_such_module.handler") + py("nofn", "pyfn.no_such_function")
             + py("bad", "nodots") + py("e", "pyfn.echo")};
  rt.wait_defined("e");
  BOOST_TEST(test::wait_until([&] {
    return has(rt.info("nomod").last_error(),
               "handler 'no_such_module.handler' does not import: ModuleNotFoundError: "
               "No module named 'no_such_module'");
  }));
  BOOST_TEST(test::wait_until([&] {
    return has(rt.info("nofn").last_error(), "does not import: AttributeError");
  }));
  // The traceback comes through the instance's stderr (the process supervisor's thread),
  // the error through its hello (the socket's reader): either may reach the log first.
  BOOST_TEST(test::wait_until([&] {
    auto log = rt.log_of("nomod");
    return has(log, "Traceback (most recent call last)")
           && has(log, "No module named 'no_such_module'");
  }));
  auto bad = rt.info("bad");
  BOOST_TEST(!bad.valid());
  BOOST_TEST(has(bad.last_error(), "is not module.function"), bad.last_error());
  // For that function only: the others serve.
  BOOST_TEST(rt.ok("e", "[2]") == "[2]");
  BOOST_TEST(rt.info("e").errors() == 0u);
}

BOOST_AUTO_TEST_CASE(python_exec_args_environment_and_sdk_verbs) {
  runtime rt{py("i", "pyfn.interpreter", "execArgs: [-O], environmentVariables: {GREETING: hi}")
             + py("caller", "pyfn.call") + fn("callee", "context") + py("pub", "pyfn.publish")};
  rt.wait_defined("pub");
  auto i = nlohmann::json::parse(rt.ok("i", "{}"));
  BOOST_TEST(i["optimize"] == 1); // execArgs are the interpreter's
  BOOST_TEST(i["greeting"] == "hi");
  // greengrasssdk's lambda client invokes the C++ function, which sees the caller.
  auto called = nlohmann::json::parse(rt.ok("caller", R"({"function":"callee"})"));
  BOOST_TEST(called["error"] == "");
  BOOST_TEST(has(called["payload"].get<std::string>(), "\"source\":\"function:caller\""));
  auto missing = nlohmann::json::parse(rt.ok("caller", R"({"function":"nobody"})"));
  BOOST_TEST(missing["error"] == "Unhandled");
  BOOST_TEST(has(missing["payload"].get<std::string>(), "no function 'nobody'"),
             missing["payload"].get<std::string>());
  // No message_manager in this kernel: AllOrException raises the publish's error.
  auto r = rt.invoke("pub", "{}");
  BOOST_REQUIRE(!r);
  BOOST_TEST(has(grove::describe(r.error()), "no_route"), grove::describe(r.error()));
}

// -- GreengrassContainer: the sandbox (README.md, "Sandbox") -------------------------

namespace {

/// The sandbox needs root (it maps the function's user into a user namespace and makes
/// cgroups): the tests say so and skip without it.
boost::test_tools::assertion_result as_root(boost::unit_test::test_unit_id) {
  boost::test_tools::assertion_result r{::geteuid() == 0};
  r.message() << "skipped: the sandbox tests need root (user namespaces, cgroups)";
  return r;
}

/// A sandboxed function running tests/escape_function.cpp from a code directory of its
/// own (codeUri: the sandbox shows it read-only at /lambda), as the default user.
std::string escape_fn(const test::temp_dir& dir, const std::string& name,
                      const std::string& extra = "") {
  auto code = dir.path() / ("code-" + name);
  fs::create_directories(code);
  // Kept when there (a group rewritten while an instance runs it).
  fs::copy_file(FN_ESCAPE_FUNCTION, code / "escape", fs::copy_options::skip_existing);
  fs::permissions(code, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec
                          | fs::perms::others_read | fs::perms::others_exec);
  return "  - name: " + name + "\n    config: {handler: escape, codeUri: " + code.string()
         + ", pinned: false, inputPayloadEncodingType: binary"
         + (extra.find("timeoutInSeconds") == std::string::npos ? ", timeoutInSeconds: 20" : "")
         + (extra.empty() ? "" : ", " + extra) + "}\n";
}

/// A runtime whose group is written after the scratch directory exists (the code
/// directories live in it).
struct sandboxed {
  test::temp_dir code_dir;
  std::unique_ptr<runtime> rt;

  sandboxed(const std::function<std::string(const test::temp_dir&)>& functions,
            const std::string& config = "{sandbox_pids_max: 32}") {
    rt = std::make_unique<runtime>(functions(code_dir), config);
  }

  /// The answer of attempt `payload`; the error's text when the instance was ended.
  std::string attempt(const std::string& name, const std::string& payload) {
    auto r = rt->invoke(name, payload, 60s);
    return r ? r->payload() : "ERROR: " + why(r);
  }
};

/// The instance cgroups of this process's runtime (grove-<pid>/<function>.<id>) in every
/// hierarchy, and whether any grove-<pid> directory is left.
std::vector<fs::path> instance_cgroups(bool* base_left = nullptr) {
  std::vector<fs::path> out;
  auto base = "grove-" + std::to_string(::getpid());
  if (base_left != nullptr)
    *base_left = false;
  std::error_code ec;
  auto skip = fs::directory_options::skip_permission_denied;
  for (auto it = fs::recursive_directory_iterator{"/sys/fs/cgroup", skip, ec};
       it != fs::recursive_directory_iterator{}; it.increment(ec)) {
    if (ec || it.depth() > 6 || !it->is_directory(ec))
      continue;
    if (it->path().filename() == base && base_left != nullptr)
      *base_left = true;
    if (it->path().parent_path().filename() == base)
      out.push_back(it->path());
  }
  return out;
}

/// A listening socket in groved's run directory under `var`: it stands for the control
/// socket, which no sandboxed function may reach (mode 0777: only the sandbox may stop
/// the function).
struct control_socket {
  fs::path path;
  int fd;

  explicit control_socket(const fs::path& var)
    : path{var / "run" / "control.sock"}, fd{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)} {
    fs::create_directories(path.parent_path());
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    BOOST_REQUIRE(::listen(fd, 4) == 0);
    ::chmod(path.c_str(), 0777);
  }

  ~control_socket() {
    ::close(fd);
  }

  control_socket(const control_socket&) = delete;
  control_socket& operator=(const control_socket&) = delete;
};

uid_t default_uid() {
  auto* pw = ::getpwnam("grove-fn");
  BOOST_REQUIRE_MESSAGE(pw != nullptr, "no user grove-fn: run tools/deps");
  return pw->pw_uid;
}

} // namespace

BOOST_AUTO_TEST_CASE(a_sandboxed_function_runs_as_its_user_as_pid_2_of_its_own_pid_and_uts_namespaces,
                     *boost::unit_test::precondition(as_root)) {
  sandboxed sb{[](auto& d) { return escape_fn(d, "box"); }};
  sb.rt->wait_defined("box");
  auto who = sb.attempt("box", "whoami");
  BOOST_TEST(who == "uid=" + std::to_string(default_uid()) + " gid="
                      + std::to_string(::getpwnam("grove-fn")->pw_gid) + " pid=2 host=box");
  // No capabilities, none to regain, no new privileges, a seccomp filter.
  auto st = sb.attempt("box", "status");
  BOOST_TEST(st.find("CapEff:\t0000000000000000") != std::string::npos, st);
  BOOST_TEST(st.find("CapPrm:\t0000000000000000") != std::string::npos, st);
  BOOST_TEST(st.find("CapBnd:\t0000000000000000") != std::string::npos, st);
  BOOST_TEST(st.find("NoNewPrivs:\t1") != std::string::npos, st);
  BOOST_TEST(st.find("Seccomp:\t2") != std::string::npos, st);
  // The status says which cgroup version and profile are in force.
  auto details = sb.rt->h->kernel().status().details();
  auto it = details.find("function_runtime.sandbox");
  BOOST_REQUIRE(it != details.end());
  BOOST_TEST(it->second.find("cgroup v") == 0, it->second);
  BOOST_TEST(it->second.find("seccomp seccomp/default.txt") != std::string::npos, it->second);
  BOOST_TEST(it->second.find("share their keyrings") == std::string::npos, it->second);
}

BOOST_AUTO_TEST_CASE(the_root_view_hides_groved_and_other_functions,
                     *boost::unit_test::precondition(as_root)) {
  sandboxed sb{[](auto& d) { return escape_fn(d, "box") + escape_fn(d, "other"); }};
  sb.rt->wait_defined("box");
  auto var = sb.rt->dir.path() / "var";
  control_socket sock{var};
  std::vector<std::string> hidden{var.string(), (var / "plugins").string(), "/sys", "/root",
                                  "/home", (sb.code_dir.path() / "code-other").string()};
  for (const auto& p : hidden) {
    auto r = sb.attempt("box", "list " + p);
    BOOST_TEST(r.find("denied: open " + p + ": No such file or directory") == 0, p << ": " << r);
  }
  auto r = sb.attempt("box", "connect " + sock.path.string());
  BOOST_TEST(r.find("denied: connect") == 0, r);
  // The system and the code are read-only; /tmp is private and writable.
  BOOST_TEST(sb.attempt("box", "write /etc/escape").find("denied") == 0);
  BOOST_TEST(sb.attempt("box", "write /usr/escape").find("denied") == 0);
  BOOST_TEST(sb.attempt("box", "write /lambda/escape").find("denied") == 0);
  BOOST_TEST(sb.attempt("box", "write /escape").find("denied") == 0);
  BOOST_TEST(sb.attempt("box", "write /tmp/mine") == "REACHED: wrote /tmp/mine");
  BOOST_TEST(!fs::exists("/tmp/mine"));
  BOOST_TEST(sb.attempt("box", "read /dev/urandom").find("REACHED") == 0);
  BOOST_TEST(sb.attempt("box", "setuid").find("denied: setuid(0)") == 0);
}

BOOST_AUTO_TEST_CASE(sysfs_is_there_read_only_only_when_asked,
                     *boost::unit_test::precondition(as_root)) {
  sandboxed sb{[](auto& d) {
    return escape_fn(d, "sys", "linuxProcessParams: {containerParams: {mountROSysfs: true}}");
  }};
  sb.rt->wait_defined("sys");
  BOOST_TEST(sb.attempt("sys", "list /sys/kernel").find("REACHED") == 0);
  auto w = sb.attempt("sys", "write /sys/kernel/uevent_helper");
  BOOST_TEST(w.find("denied") == 0, w);
}

BOOST_AUTO_TEST_CASE(denied_system_calls_end_the_instance_and_are_named,
                     *boost::unit_test::precondition(as_root)) {
  sandboxed sb{[](auto& d) { return escape_fn(d, "box"); }};
  sb.rt->wait_defined("box");
  // Ended by SIGSYS (as seccomp's own kill would), the call named.
  auto m = sb.attempt("box", "mount");
  BOOST_TEST(m.find("killed by signal 31 (SIGSYS): the sandbox denied system call mount "
                    "(seccomp)") != std::string::npos, m);
  auto p = sb.attempt("box", "ptrace " + std::to_string(::getpid()));
  BOOST_TEST(p.find("killed by signal 31 (SIGSYS): the sandbox denied system call ptrace "
                    "(seccomp)") != std::string::npos, p);
  BOOST_TEST(sb.rt->info("box").last_error().find("SIGSYS") != std::string::npos);
  BOOST_TEST(sb.rt->info("box").last_error().find("ptrace") != std::string::npos);
  // Keyrings are per user namespace, which instances of one user share: no keys.
  for (auto call : {"add_key", "keyctl"}) {
    auto k = sb.attempt("box", call);
    BOOST_TEST(k.find(std::string{"(SIGSYS): the sandbox denied system call "} + call
                      + " (seccomp)") != std::string::npos,
               k);
  }
  // groved is fine and the function gets new instances.
  BOOST_TEST(sb.attempt("box", "whoami").find("pid=2") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_profile_allowing_request_key_is_warned_about,
                     *boost::unit_test::precondition(as_root)) {
  // Instances of one user share their user namespace: a profile letting them look up its
  // keyrings is named in the sandbox status (and the log).
  test::temp_dir prof;
  auto path = prof.path() / "keys.txt";
  std::ofstream{path} << "allow read write close exit_group request_key\n";
  sandboxed sb{[](auto& d) { return escape_fn(d, "box"); },
               "{sandbox_pids_max: 32, seccomp_profile: " + path.string() + "}"};
  sb.rt->wait_defined("box");
  auto details = sb.rt->h->kernel().status().details();
  auto it = details.find("function_runtime.sandbox");
  BOOST_REQUIRE(it != details.end());
  BOOST_TEST(it->second.find(path.string() + " allows request_key: instances"
                             " running as the same user share their keyrings")
               != std::string::npos,
             it->second);
}

BOOST_AUTO_TEST_CASE(a_profile_allowing_a_call_never_allowed_is_refused) {
  // The issue's list holds whatever an image's profile says: a profile allowing one of
  // them is an error naming the file, the line and the call (GreengrassContainer
  // functions are then refused with it, as for a kernel without a needed feature).
  for (const char* call : {"mount", "umount2", "pivot_root", "ptrace", "kexec_load",
                           "init_module", "bpf", "perf_event_open", "keyctl", "add_key",
                           "unshare", "setns", "reboot", "swapon"}) {
    auto p = grove::fn::parse_seccomp_profile(
      std::string{"allow read write\n# mine\nallow close "} + call + "\n", "mine.txt");
    BOOST_REQUIRE_MESSAGE(!p, call << " was accepted");
    auto why = grove::describe(p.error());
    BOOST_TEST(why.find(std::string{"mine.txt:3: '"} + call + "' may never be allowed")
                 != std::string::npos,
               why);
  }
  // Denying them is fine, and the default profile denies every one.
  BOOST_TEST(!!grove::fn::parse_seccomp_profile("allow read\ndeny ptrace mount\n", "d"));
  auto def = grove::fn::parse_seccomp_profile(grove::fn::default_seccomp_profile(), "default");
  BOOST_REQUIRE(def);
  for (const char* call : {"mount", "ptrace", "bpf", "setns", "swapon"})
    BOOST_TEST(std::count(def->deny.begin(), def->deny.end(), call) == 1, call);
}

BOOST_AUTO_TEST_CASE(a_fork_bomb_stops_at_the_pids_limit,
                     *boost::unit_test::precondition(as_root)) {
  // Memory to spare, so the pids limit is what stops it: under the default 16 MB the
  // children of a sanitizer-built worker (each dirtying its copy of the runtime's state)
  // were OOM-killed after a few forks.
  sandboxed sb{[](auto& d) {
    return escape_fn(d, "bomb",
                     "linuxProcessParams: {containerParams: {memorySizeInKB: 262144}}");
  }};
  sb.rt->wait_defined("bomb");
  auto r = sb.attempt("bomb", "fork_bomb");
  BOOST_TEST(r.find("stopped after") == 0, r);
  BOOST_TEST(r.find("Resource temporarily unavailable") != std::string::npos, r);
  auto forks = std::stoi(r.substr(std::string{"stopped after "}.size()));
  BOOST_TEST(forks < 32); // sandbox_pids_max counts the worker's threads too
  BOOST_TEST(sb.attempt("bomb", "whoami").find("pid=2") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_memory_hog_is_reported_out_of_memory_and_replaced,
                     *boost::unit_test::precondition(as_root)) {
  sandboxed sb{[](auto& d) {
    return escape_fn(d, "hog", "linuxProcessParams: {containerParams: {memorySizeInKB: 32768}}");
  }};
  sb.rt->wait_defined("hog");
  // The spare made with the definition: the hog's instance takes it.
  std::string hog_cgroup;
  BOOST_REQUIRE(test::wait_until([&] {
    auto now = instance_cgroups();
    if (!now.empty())
      hog_cgroup = now.front().filename().string();
    return !now.empty();
  }));
  auto r = sb.attempt("hog", "memory_hog");
  BOOST_TEST(r.find("out of memory (memorySizeInKB 32768)") != std::string::npos, r);
  BOOST_TEST(sb.attempt("hog", "whoami").find("pid=2") != std::string::npos);
  // The killed instance's cgroup went with it: only the new instance's and the spare
  // made after its start are left (one directory per hierarchy each), and the runtime's
  // own goes with the runtime.
  std::vector<fs::path> left;
  std::map<std::string, size_t> names; // name -> hierarchies
  // Until both are whole: the spare's directories are made one hierarchy at a time.
  BOOST_TEST(test::wait_until([&] {
    left = instance_cgroups();
    names.clear();
    for (const auto& d : left)
      ++names[d.filename()];
    return names.size() == 2 && names.begin()->second == names.rbegin()->second;
  }), "instance cgroups: " << names.size());
  for (const auto& [name, n] : names)
    BOOST_TEST(n == left.size() / 2, name);
  BOOST_TEST(names.count(hog_cgroup) == 0u, "the killed instance's cgroup " << hog_cgroup);
  sb.rt.reset();
  bool base_left = true;
  BOOST_TEST(instance_cgroups(&base_left).empty());
  BOOST_TEST(!base_left);
}

BOOST_AUTO_TEST_CASE(a_container_function_keeps_one_spare_cgroup,
                     *boost::unit_test::precondition(as_root)) {
  // One instance sandbox is prepared ahead per GreengrassContainer function (its cgroup
  // with the function's limits): made with the definition, taken by a start and made
  // again, replaced when the limits change, gone with the function and the runtime.
  auto box = [](const test::temp_dir& d, int kb) {
    return escape_fn(d, "box", "linuxProcessParams: {containerParams: {memorySizeInKB: "
                                 + std::to_string(kb) + "}}");
  };
  sandboxed sb{[&](auto& d) { return box(d, 20480); }};
  sb.rt->wait_defined("box");
  auto names = [] {
    std::set<std::string> out;
    for (const auto& d : instance_cgroups())
      out.insert(d.filename());
    return out;
  };
  // The memory limit of cgroup `name` (v1 memory.limit_in_bytes, v2 memory.max), -1 when
  // it has no memory directory.
  auto limit_of = [](const std::string& name) -> int64_t {
    for (const auto& d : instance_cgroups())
      for (const char* file : {"memory.limit_in_bytes", "memory.max"})
        if (d.filename() == name && fs::exists(d / file)) {
          std::ifstream in{d / file};
          int64_t v = -1;
          in >> v;
          return v;
        }
    return -1;
  };
  std::set<std::string> now;
  BOOST_REQUIRE_MESSAGE(test::wait_until([&] { return (now = names()).size() == 1; }),
                        "cgroups: " << now.size());
  auto spare = *now.begin();
  // The directory shows before sandbox::prepare wrote its limit (a start takes the spare
  // only once prepare returned): read when written.
  BOOST_TEST(test::wait_until([&] { return limit_of(spare) == 20480 * 1024; }),
             "limit " << limit_of(spare));
  BOOST_TEST(sb.rt->info("box").instances() == 0u);
  // The start takes it (the worker is in it) and another is made.
  auto r = sb.attempt("box", "whoami");
  BOOST_TEST(r.find(" pid=2 ") != std::string::npos, r);
  BOOST_REQUIRE(test::wait_until([&] { return (now = names()).size() == 2; }));
  BOOST_TEST(now.count(spare) == 1u);
  bool in_spare = false;
  for (const auto& d : instance_cgroups())
    if (d.filename() == spare && fs::exists(d / "cgroup.procs")) {
      std::ifstream in{d / "cgroup.procs"};
      pid_t pid = 0;
      in_spare = in_spare || static_cast<bool>(in >> pid);
    }
  BOOST_TEST(in_spare, "the instance is not in the spare cgroup " << spare);
  // Other limits: the idle instance retires, the spare goes, one with the new limit comes.
  sb.rt->rewrite(box(sb.code_dir, 40960));
  BOOST_REQUIRE_MESSAGE(test::wait_until([&] {
                          now = names();
                          return now.size() == 1 && !now.count(spare)
                                 && limit_of(*now.begin()) == 40960 * 1024;
                        }),
                        "cgroups: " << now.size());
  r = sb.attempt("box", "whoami");
  BOOST_TEST(r.find(" pid=2 ") != std::string::npos, r);
  // Removed: its instance and spare go.
  sb.rt->rewrite(escape_fn(sb.code_dir, "other", "linuxProcessParams: {isolationMode: NoContainer}"));
  BOOST_TEST(test::wait_until([&] { return names().empty(); }), "cgroups: " << names().size());
  sb.rt->rewrite(box(sb.code_dir, 20480));
  sb.rt->wait_defined("box");
  BOOST_REQUIRE(test::wait_until([&] { return names().size() == 1; }));
  sb.rt.reset();
  bool base_left = true;
  BOOST_TEST(instance_cgroups(&base_left).empty());
  BOOST_TEST(!base_left);
}

BOOST_AUTO_TEST_CASE(python3_runs_under_the_default_profile,
                     *boost::unit_test::precondition(as_root)) {
  sandboxed sb{[](auto& d) { return escape_fn(d, "py"); }};
  sb.rt->wait_defined("py");
  auto r = sb.attempt("py", "python import json, os, threading, subprocess, tempfile; "
                            "t = threading.Thread(target=print, args=('thread',)); t.start(); "
                            "t.join(); f = tempfile.NamedTemporaryFile(); "
                            "print(json.dumps({'pid': os.getpid(), 'uid': os.getuid()}))");
  BOOST_TEST(r.find("exit 0: thread\n{\"pid\": ") == 0, r);
  BOOST_TEST(r.find("\"uid\": " + std::to_string(default_uid()) + "}") != std::string::npos, r);
}

BOOST_AUTO_TEST_CASE(a_python_function_runs_in_the_sandbox,
                     *boost::unit_test::precondition(as_root)) {
  // runtime: python3 under GreengrassContainer: the interpreter from the read-only
  // system, the SDK mounted where PYTHONPATH points (/grove/python), the handler's
  // module from /lambda, as the default user and PID 2 of its namespace.
  sandboxed sb{[](auto& d) {
    auto code = d.path() / "code-py";
    fs::create_directories(code);
    fs::copy_file(fs::path{FN_PYTHON_CODE} / "pyfn.py", code / "pyfn.py");
    fs::permissions(code, fs::perms::owner_all | fs::perms::group_read
                            | fs::perms::group_exec | fs::perms::others_read
                            | fs::perms::others_exec);
    auto entry = [&](const std::string& name, const std::string& handler) {
      return "  - name: " + name + "\n    config: {runtime: python3, handler: " + handler
             + ", codeUri: " + code.string() + "}\n";
    };
    return entry("py", "pyfn.echo") + entry("pypid", "pyfn.pid") + entry("pyuid", "pyfn.uid");
  }};
  sb.rt->wait_defined("pyuid");
  BOOST_TEST(sb.attempt("py", R"({"k":[1,"x"]})") == R"({"k": [1, "x"]})");
  BOOST_TEST(sb.attempt("pypid", "{}") == "2"); // PID 1 is the namespace's holder
  BOOST_TEST(sb.attempt("pyuid", "{}") == std::to_string(default_uid()));
}

BOOST_AUTO_TEST_CASE(a_missing_kernel_feature_refuses_the_function_by_name,
                     *boost::unit_test::precondition(as_root)) {
  // No cgroup to make: the function is refused, never run without isolation.
  sandboxed sb{[](auto& d) { return escape_fn(d, "box") + escape_fn(d, "plain",
                  "linuxProcessParams: {isolationMode: NoContainer}"); },
               "{cgroup_parent: /grove-no-such-cgroup/below}"};
  sb.rt->wait_defined("box");
  auto info = sb.rt->info("box");
  BOOST_TEST(!info.valid());
  BOOST_TEST(info.last_error().find("GreengrassContainer needs a writable cgroup with the "
                                    "memory and pids controllers")
               != std::string::npos,
             info.last_error());
  BOOST_TEST(is(sb.rt->invoke("box", "whoami"), errc::no_route));
  auto details = sb.rt->h->kernel().status().details();
  BOOST_TEST(details["function_runtime.sandbox"].find("unavailable: ") == 0);
  // NoContainer is unchanged: the default user, groved's namespaces.
  auto plain = sb.attempt("plain", "whoami");
  BOOST_TEST(plain.find("uid=" + std::to_string(default_uid())) == 0, plain);
  BOOST_TEST(plain.find(" pid=2 ") == std::string::npos, plain);
}

BOOST_AUTO_TEST_CASE(proc_is_read_only_and_hides_the_hosts_kernel_state,
                     *boost::unit_test::precondition(as_root)) {
  sandboxed sb{[](auto& d) { return escape_fn(d, "box"); }};
  sb.rt->wait_defined("box");
  // Listed by mount id: a mask's /dev/null is taken from the host before /proc is
  // mounted, so /proc's own line is looked for, not taken to be the first.
  auto m = sb.attempt("box", "mounts /proc");
  BOOST_TEST(("\n" + m).find("\n/proc ro,nosuid,nodev,noexec") != std::string::npos, m);
  for (const char* p : {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"})
    if (fs::exists(p)) // as the kernel has them
      BOOST_TEST(m.find(std::string{p} + " ") != std::string::npos, p << " is not masked: " << m);
  // Its own /proc files too: read-only (comm is writable by its owner elsewhere).
  auto w = sb.attempt("box", "write /proc/self/comm");
  BOOST_TEST(w.find("Read-only file system") != std::string::npos, w);
  w = sb.attempt("box", "write /proc/sysrq-trigger");
  BOOST_TEST(w.find("denied") == 0, w);
  // Readable by anyone on the host; nothing of it inside.
  BOOST_TEST(sb.attempt("box", "read /proc/timer_list") == "REACHED: read 0 bytes of /proc/timer_list");
  BOOST_TEST(sb.attempt("box", "read /proc/self/status").find("REACHED") == 0);
}

BOOST_AUTO_TEST_CASE(a_python_function_cannot_leave_the_sandbox,
                     *boost::unit_test::precondition(as_root)) {
  // tests/python/pyescape.py, the Python twin of escape_function.cpp, next to a C++
  // function whose code it must not see.
  sandboxed sb{[](auto& d) {
    auto code = d.path() / "code-pyescape";
    fs::create_directories(code);
    fs::copy_file(fs::path{FN_PYTHON_CODE} / "pyescape.py", code / "pyescape.py");
    fs::permissions(code, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec
                            | fs::perms::others_read | fs::perms::others_exec);
    return "  - name: pybox\n    config: {runtime: python3, handler: pyescape.attempt, "
           "codeUri: " + code.string() + ", pinned: false, inputPayloadEncodingType: binary}\n"
           + escape_fn(d, "other");
  }};
  sb.rt->wait_defined("pybox");
  auto var = sb.rt->dir.path() / "var";
  control_socket sock{var};
  auto who = sb.attempt("pybox", "whoami");
  BOOST_TEST(who.find("uid=" + std::to_string(default_uid())) == 0, who);
  BOOST_TEST(who.find(" pid=2 host=pybox") != std::string::npos, who);
  for (const auto& p : std::vector<std::string>{var.string(), "/sys", "/root", "/home",
                                               (sb.code_dir.path() / "code-other").string()}) {
    auto r = sb.attempt("pybox", "list " + p);
    BOOST_TEST(r == "denied: open " + p + ": No such file or directory", p << ": " << r);
  }
  auto c = sb.attempt("pybox", "connect " + sock.path.string());
  BOOST_TEST(c.find("denied: connect") == 0, c);
  for (const char* p : {"/etc/escape", "/usr/escape", "/lambda/escape", "/escape",
                        "/proc/self/comm"})
    BOOST_TEST(sb.attempt("pybox", std::string{"write "} + p).find("denied") == 0, p);
  BOOST_TEST(sb.attempt("pybox", "write /tmp/mine") == "REACHED: wrote /tmp/mine");
  BOOST_TEST(sb.attempt("pybox", "read /proc/timer_list")
             == "REACHED: read 0 bytes of /proc/timer_list");
  auto u = sb.attempt("pybox", "setuid");
  BOOST_TEST(u.find("denied: setuid(0)") == 0, u); // EINVAL: 0 is not mapped at all
  // The filter's calls end the instance and are named; groved and the function go on.
  auto m = sb.attempt("pybox", "mount");
  BOOST_TEST(m.find("killed by signal 31 (SIGSYS): the sandbox denied system call mount "
                    "(seccomp)") != std::string::npos, m);
  auto p = sb.attempt("pybox", "ptrace " + std::to_string(::getpid()));
  BOOST_TEST(p.find("killed by signal 31 (SIGSYS): the sandbox denied system call ptrace "
                    "(seccomp)") != std::string::npos, p);
  BOOST_TEST(sb.attempt("pybox", "whoami").find(" pid=2 ") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_python_fork_bomb_and_memory_hog_stop_at_their_limits,
                     *boost::unit_test::precondition(as_root)) {
  // pyescape.py's twins of the C++ function's: the pids limit stops the forks (memory
  // to spare, so it is that limit), the memory limit the hog (reported, replaced).
  auto python_fn = [](const test::temp_dir& d, const std::string& name, const std::string& kb) {
    auto code = d.path() / ("code-" + name);
    fs::create_directories(code);
    fs::copy_file(fs::path{FN_PYTHON_CODE} / "pyescape.py", code / "pyescape.py");
    fs::permissions(code, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec
                            | fs::perms::others_read | fs::perms::others_exec);
    return "  - name: " + name + "\n    config: {runtime: python3, handler: pyescape.attempt, "
           "codeUri: " + code.string() + ", pinned: false, inputPayloadEncodingType: binary, "
           "linuxProcessParams: {containerParams: {memorySizeInKB: " + kb + "}}}\n";
  };
  sandboxed sb{[&](auto& d) {
    return python_fn(d, "pybomb", "262144") + python_fn(d, "pyhog", "65536");
  }};
  sb.rt->wait_defined("pyhog");
  auto r = sb.attempt("pybomb", "fork_bomb");
  BOOST_TEST(r.find("stopped after") == 0, r);
  BOOST_TEST(r.find("Resource temporarily unavailable") != std::string::npos, r);
  BOOST_TEST(sb.attempt("pybomb", "whoami").find(" pid=2 ") != std::string::npos);
  auto h = sb.attempt("pyhog", "memory_hog");
  BOOST_TEST(h.find("out of memory (memorySizeInKB 65536)") != std::string::npos, h);
  BOOST_TEST(sb.attempt("pyhog", "whoami").find(" pid=2 ") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_hanging_sandboxed_instance_is_stopped_without_waiting_out_the_grace,
                     *boost::unit_test::precondition(as_root)) {
  // A worker that does not catch SIGTERM is killed at once: the stop must not wait for
  // the grace (a minute here) to end it, at an item's timeout or at unload.
  sandboxed sb{[](auto& d) {
                 auto code = d.path() / "code-pyhang";
                 fs::create_directories(code);
                 fs::copy_file(fs::path{FN_PYTHON_CODE} / "pyfn.py", code / "pyfn.py");
                 fs::permissions(code, fs::perms::owner_all | fs::perms::group_read
                                         | fs::perms::group_exec | fs::perms::others_read
                                         | fs::perms::others_exec);
                 return escape_fn(d, "hang", "timeoutInSeconds: 1")
                        + "  - name: pyhang\n    config: {runtime: python3, handler: pyfn.hang, "
                          "codeUri: " + code.string() + ", pinned: false, timeoutInSeconds: 1}\n";
               },
               "{sandbox_pids_max: 32, stop_grace_ms: 60000}"};
  sb.rt->wait_defined("pyhang");
  for (const char* name : {"hang", "pyhang"}) {
    auto r = sb.attempt(name, std::string_view{name} == "hang" ? "hang" : "{}");
    BOOST_TEST(r.find("ERROR: timeout") == 0, name << ": " << r);
    BOOST_TEST(test::wait_until([&] { return sb.rt->info(name).instances() == 0; }),
               name << ": the timed-out instance is still there");
  }
  // At unload: a second one hangs in its handler while the runtime goes.
  auto pending = std::async(std::launch::async, [&] { return sb.rt->invoke("hang", "hang"); });
  // Its processes, in whichever instance cgroup holds them (the functions' spares hold
  // none).
  std::vector<pid_t> pids;
  BOOST_REQUIRE_MESSAGE(test::wait_until([&] {
                          for (const auto& c : instance_cgroups()) {
                            std::ifstream in{c / "cgroup.procs"};
                            pid_t pid;
                            while (in >> pid)
                              pids.push_back(pid);
                          }
                          return !pids.empty();
                        }),
                        (pending.wait_for(0s) == std::future_status::ready
                           ? why(pending.get()) : std::string{"no process in an instance cgroup"})
                          << " instances " << sb.rt->info("hang").instances() << " queued "
                          << sb.rt->info("hang").queued() << " " << sb.rt->info("hang").last_error());
  sb.rt.reset();
  pending.wait();
  for (auto pid : pids)
    BOOST_TEST((::kill(pid, 0) != 0 && errno == ESRCH), "pid " << pid << " outlived the runtime");
}

BOOST_AUTO_TEST_CASE(cgroups_left_by_a_killed_groved_are_removed_at_start,
                     *boost::unit_test::precondition(as_root)) {
  // A groved killed with running instances leaves grove-<pid>/<function>.<id>: the next
  // runtime removes those whose pid is gone, and keeps a live one's.
  pid_t dead = ::fork();
  if (dead == 0)
    ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  std::vector<fs::path> made;
  // A pure v2 host (cgroup_v2_vm_test): the groups are under groved's v2 cgroup (the
  // parent of its leaf `groved` once it moved there), as grove::cgroup_host finds it.
  if (grove::own_cgroup("") && !fs::exists("/sys/fs/cgroup/memory")) {
    auto parent = grove::cgroup_host::probe().v2_dir;
    for (auto pid : {static_cast<int>(dead), 1})
      for (const char* fn : {"fn.1", "fn.2"}) {
        auto d = parent / ("grove-" + std::to_string(pid)) / fn;
        std::error_code ec;
        fs::create_directories(d, ec);
        BOOST_REQUIRE_MESSAGE(!ec, d << ": " << ec.message());
        made.push_back(d);
      }
  }
  // devices too: a killed groved's spare cgroups (one per container function) are there
  // as well.
  for (const char* c : {"memory", "pids", "devices"}) {
    auto own = grove::own_cgroup(c);
    if (!own)
      continue;
    auto parent = fs::path{"/sys/fs/cgroup"} / c / fs::path{*own}.relative_path();
    for (auto pid : {static_cast<int>(dead), 1}) {
      auto d = parent / ("grove-" + std::to_string(pid)) / "fn.1";
      std::error_code ec;
      fs::create_directories(d, ec);
      BOOST_REQUIRE_MESSAGE(!ec, d << ": " << ec.message());
      made.push_back(d);
    }
  }
  BOOST_REQUIRE(made.size() >= 4); // memory and pids; devices where it is mounted
  sandboxed sb{[](auto& d) { return escape_fn(d, "box"); }};
  sb.rt->wait_defined("box");
  BOOST_TEST(sb.attempt("box", "whoami").find(" pid=2 ") != std::string::npos);
  for (const auto& d : made) {
    bool live = d.parent_path().filename() == "grove-1";
    BOOST_TEST(fs::exists(d.parent_path()) == live, d);
    if (live) {
      ::rmdir(d.c_str());
      ::rmdir(d.parent_path().c_str());
    }
  }
}

BOOST_AUTO_TEST_CASE(a_cpu_weight_that_cannot_be_set_degrades_with_a_warning,
                     *boost::unit_test::precondition(as_root)) {
  // A parent cgroup with memory and pids but no cpu directory: the weight is a
  // preference, so the function runs with its limits and the status says what is missing.
  auto name = "grove-cpu-test-" + std::to_string(::getpid());
  std::vector<fs::path> made;
  for (const char* c : {"memory", "pids"}) {
    auto d = fs::path{"/sys/fs/cgroup"} / c / name;
    std::error_code ec;
    fs::create_directory(d, ec);
    BOOST_REQUIRE_MESSAGE(!ec, d << ": " << ec.message());
    made.push_back(d);
  }
  BOOST_REQUIRE(!fs::exists(fs::path{"/sys/fs/cgroup/cpu"} / name));
  {
    sandboxed sb{[](auto& d) { return escape_fn(d, "box"); },
                 "{sandbox_pids_max: 32, sandbox_cpu_weight: 50, cgroup_parent: /" + name + "}"};
    sb.rt->wait_defined("box");
    BOOST_TEST(sb.attempt("box", "whoami").find(" pid=2 ") != std::string::npos);
    auto details = sb.rt->h->kernel().status().details();
    auto status = details["function_runtime.sandbox"];
    BOOST_TEST(status.find("cgroup v1 (memory, pids)") == 0, status);
    BOOST_TEST(status.find("sandbox_cpu_weight is not applied") != std::string::npos, status);
  }
  for (const auto& d : made)
    BOOST_TEST(::rmdir(d.c_str()) == 0, d);
}

// -- local resources (local_resources plugin, lr-1) ------------------------------------

namespace {

/// Loads local_resources into `sb`'s kernel (after function_runtime: lr-1 is awaited).
void load_local_resources(sandboxed& sb) {
  grove::plugin_spec spec;
  spec.name = "local_resources";
  spec.file = "<test>";
  auto err = sb.rt->h->kernel().host().load(spec);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
}

/// Device nodes made for a test under /dev (a device resource must be there), removed
/// at the end.
struct test_devices {
  std::vector<std::string> paths;

  /// A character device with `maj`:`min` (e.g. /dev/null's 1:3), mode 0666.
  std::string make(const std::string& name, unsigned maj, unsigned min) {
    auto path = "/dev/grove-test-" + std::to_string(::getpid()) + "-" + name;
    ::unlink(path.c_str());
    BOOST_REQUIRE_MESSAGE(::mknod(path.c_str(), S_IFCHR | 0666, ::makedev(maj, min)) == 0,
                          "mknod " << path << ": " << std::strerror(errno));
    ::chmod(path.c_str(), 0666); // past the umask
    paths.push_back(path);
    return path;
  }

  ~test_devices() {
    for (const auto& p : paths)
      ::unlink(p.c_str());
  }
};

std::string volume(const std::string& id, const fs::path& src, const std::string& dst,
                   const std::string& owner = "") {
  return "  - id: " + id + "\n    config: {localVolumeResourceData: {sourcePath: "
         + src.string() + ", destinationPath: " + dst
         + (owner.empty() ? "" : ", groupOwnerSetting: " + owner) + "}}\n";
}

std::string device(const std::string& id, const std::string& path) {
  return "  - id: " + id + "\n    config: {localDeviceResourceData: {sourcePath: " + path
         + "}}\n";
}

bool starts(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

/// A readable directory `ro` (holding `hello`) and a directory `rw` writable by group
/// `owner` only, for a function's read-only and read-write volumes.
struct volume_dirs {
  test::temp_dir data;
  fs::path ro = data.path() / "ro";
  fs::path rw = data.path() / "rw";
  gid_t owner;

  explicit volume_dirs(gid_t group) : owner{group} {
    fs::create_directories(ro);
    fs::create_directories(rw);
    { std::ofstream{ro / "hello"} << "hello"; }
    ::chmod(ro.c_str(), 0755);
    ::chmod((ro / "hello").c_str(), 0644);
    // Writable by its group only: the function writes there through its group owner.
    BOOST_REQUIRE(::chown(rw.c_str(), 0, owner) == 0);
    ::chmod(rw.c_str(), 0770);
  }
};

/// Checks what function `box` sees of `dirs` mounted at /data/in (ro) and /data/out (rw
/// with its group owner).
void check_volumes(sandboxed& sb, const volume_dirs& dirs) {
  auto r = sb.attempt("box", "read /data/in/hello");
  BOOST_TEST(r == "REACHED: read 5 bytes of /data/in/hello", r);
  // ro is really read-only: the write fails with EROFS, and is reported as such.
  auto w = sb.attempt("box", "write /data/in/new");
  BOOST_TEST(w == "denied: open /data/in/new for writing: Read-only file system", w);
  BOOST_TEST(!fs::exists(dirs.ro / "new"));
  // rw: the write reaches the device's directory.
  w = sb.attempt("box", "write /data/out/new");
  BOOST_TEST(w == "REACHED: wrote /data/out/new", w);
  BOOST_TEST(fs::exists(dirs.rw / "new"));
  // The owner group is among the worker's supplementary groups.
  auto st = sb.attempt("box", "status");
  auto groups = st.substr(st.find("Groups:"));
  groups = groups.substr(0, groups.find('\n')) + " ";
  BOOST_TEST(groups.find(" " + std::to_string(dirs.owner) + " ") != std::string::npos, st);
}

} // namespace

BOOST_AUTO_TEST_CASE(local_volumes_are_mounted_read_only_or_read_write_with_their_group,
                     *boost::unit_test::precondition(as_root)) {
  volume_dirs dirs{4242}; // the group through groupOwnerSetting
  sandboxed sb{[&](auto& d) {
    return escape_fn(d, "box", "resourceAccessPolicies: [{resourceId: in, permission: ro}, "
                               "{resourceId: out, permission: rw}]")
           + "resources:\n" + volume("in", dirs.ro, "/data/in")
           + volume("out", dirs.rw, "/data/out", "{autoAddGroupOwner: true}");
  }};
  load_local_resources(sb);
  sb.rt->wait_defined("box");
  check_volumes(sb, dirs);
  // local_resources' status counts what it holds.
  auto details = sb.rt->h->kernel().status().details();
  auto held = details["local_resources.resources"];
  BOOST_TEST(held.find("2 volumes, 0 devices, 0 refused (group version ") == 0, held);
  // Nothing else of the data directory is visible.
  auto l = sb.attempt("box", "list " + dirs.data.path().string());
  BOOST_TEST(starts(l, "denied: open"), l);
}

BOOST_AUTO_TEST_CASE(local_devices_are_granted_r_or_rw_and_no_other,
                     *boost::unit_test::precondition(as_root)) {
  test_devices devs;
  auto rw_dev = devs.make("rw", 1, 3);    // /dev/null's numbers
  auto ro_dev = devs.make("ro", 1, 7);    // /dev/full's (null and zero are rw for all)
  auto other = devs.make("other", 1, 3);  // not granted
  sandboxed sb{[&](auto& d) {
    return escape_fn(d, "box", "resourceAccessPolicies: [{resourceId: sink, permission: rw}, "
                               "{resourceId: zeros, permission: ro}]")
           + "resources:\n" + device("sink", rw_dev) + device("zeros", ro_dev)
           + device("spare", other);
  }};
  load_local_resources(sb);
  sb.rt->wait_defined("box");
  auto details = sb.rt->h->kernel().status().details();
  bool v1_devices = details["function_runtime.sandbox"].find("devices") != std::string::npos;
  BOOST_TEST_MESSAGE("sandbox: " << details["function_runtime.sandbox"]);
  BOOST_TEST(sb.attempt("box", "write " + rw_dev) == "REACHED: wrote " + rw_dev);
  BOOST_TEST(sb.attempt("box", "read " + rw_dev) == "REACHED: read 0 bytes of " + rw_dev);
  BOOST_TEST(sb.attempt("box", "read " + ro_dev) == "REACHED: read 256 bytes of " + ro_dev);
  // r only: the devices cgroup refuses the open for writing (a read-only mount would not:
  // writes to a device node ignore it).
  auto w = sb.attempt("box", "write " + ro_dev);
  BOOST_TEST(w == "denied: open " + ro_dev + " for writing: Operation not permitted", w);
  BOOST_TEST(v1_devices);
  // A device the function was not granted is not there.
  auto o = sb.attempt("box", "read " + other);
  BOOST_TEST(o == "denied: open " + other + ": No such file or directory", o);
  // Nor is any other device of the host.
  for (const char* p : {"/dev/tty", "/dev/mem", "/dev/vda", "/dev/kmsg"}) {
    auto x = sb.attempt("box", std::string{"read "} + p);
    BOOST_TEST(starts(x, std::string{"denied: open "} + p), x);
  }
}

BOOST_AUTO_TEST_CASE(a_python_function_cannot_write_a_read_only_volume_nor_open_a_device_not_granted,
                     *boost::unit_test::precondition(as_root)) {
  // pyescape.py's twins of the C++ function's volume and device attempts.
  volume_dirs dirs{4444};
  test_devices devs;
  auto rw_dev = devs.make("py-rw", 1, 3);
  auto other = devs.make("py-other", 1, 3); // a resource of the group, not granted
  sandboxed sb{[&](auto& d) {
    auto code = d.path() / "code-pyescape";
    fs::create_directories(code);
    fs::copy_file(fs::path{FN_PYTHON_CODE} / "pyescape.py", code / "pyescape.py");
    fs::permissions(code, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec
                            | fs::perms::others_read | fs::perms::others_exec);
    return "  - name: pybox\n    config: {runtime: python3, handler: pyescape.attempt, "
           "codeUri: " + code.string() + ", pinned: false, inputPayloadEncodingType: binary, "
           "resourceAccessPolicies: [{resourceId: in, permission: ro}, {resourceId: sink, "
           "permission: rw}]}\n"
           + "resources:\n" + volume("in", dirs.ro, "/data/in") + device("sink", rw_dev)
           + device("spare", other);
  }};
  load_local_resources(sb);
  sb.rt->wait_defined("pybox");
  BOOST_TEST(sb.attempt("pybox", "read /data/in/hello") == "REACHED: read 5 bytes of /data/in/hello");
  // Read-only is really read-only: EROFS, reported as such, nothing written.
  auto w = sb.attempt("pybox", "write /data/in/new");
  BOOST_TEST(w == "denied: open /data/in/new for writing: Read-only file system", w);
  BOOST_TEST(!fs::exists(dirs.ro / "new"));
  w = sb.attempt("pybox", "write /data/in/hello");
  BOOST_TEST(w == "denied: open /data/in/hello for writing: Read-only file system", w);
  // The granted device works; the group's other device is not there, nor the host's.
  BOOST_TEST(sb.attempt("pybox", "write " + rw_dev) == "REACHED: wrote " + rw_dev);
  auto o = sb.attempt("pybox", "read " + other);
  BOOST_TEST(o == "denied: open " + other + ": No such file or directory", o);
  for (const char* p : {"/dev/tty", "/dev/mem", "/dev/vda", "/dev/kmsg"}) {
    auto x = sb.attempt("pybox", std::string{"read "} + p);
    BOOST_TEST(starts(x, std::string{"denied: open "} + p), x);
  }
}

BOOST_AUTO_TEST_CASE(a_cgroup_v2_device_program_grants_devices_as_v1_does,
                     *boost::unit_test::precondition(as_root)) {
  // sandbox_device_filter: bpf: no v1 devices controller, a BPF_PROG_TYPE_CGROUP_DEVICE
  // program on the instance's cgroup v2 (on this hybrid host, the unified hierarchy's).
  test_devices devs;
  auto rw_dev = devs.make("bpf-rw", 1, 3);
  auto ro_dev = devs.make("bpf-ro", 1, 7);
  sandboxed sb{[&](auto& d) {
    return escape_fn(d, "box", "resourceAccessPolicies: [{resourceId: sink, permission: rw}, "
                               "{resourceId: full, permission: ro}]")
           + "resources:\n" + device("sink", rw_dev) + device("full", ro_dev);
  },
               "{sandbox_pids_max: 32, sandbox_device_filter: bpf}"};
  load_local_resources(sb);
  sb.rt->wait_defined("box");
  auto details = sb.rt->h->kernel().status().details();
  auto status = details["function_runtime.sandbox"];
  BOOST_TEST(status.find("devices (bpf)") != std::string::npos, status);
  BOOST_TEST(status.find("devices,") == std::string::npos, status); // not v1's
  BOOST_TEST(sb.attempt("box", "write " + rw_dev) == "REACHED: wrote " + rw_dev);
  BOOST_TEST(sb.attempt("box", "read " + ro_dev) == "REACHED: read 256 bytes of " + ro_dev);
  // r only: the program refuses the open for writing.
  auto w = sb.attempt("box", "write " + ro_dev);
  BOOST_TEST(w == "denied: open " + ro_dev + " for writing: Operation not permitted", w);
  // The minimal /dev still works.
  BOOST_TEST(sb.attempt("box", "read /dev/urandom").find("REACHED: read") == 0);
  BOOST_TEST(sb.attempt("box", "write /dev/null") == "REACHED: wrote /dev/null");
}

BOOST_AUTO_TEST_CASE(container_params_volumes_and_devices_are_the_functions_own_resources,
                     *boost::unit_test::precondition(as_root)) {
  // v2's per-function form (containerParams.volumes[] / devices[]), with no resource of
  // the group: checked and mounted as local_resources checks and mounts the group's.
  volume_dirs dirs{4343};
  test_devices devs;
  auto rw_dev = devs.make("own-rw", 1, 3);
  auto other = devs.make("own-other", 1, 3);
  sandboxed sb{[&](auto& d) {
    return escape_fn(d, "box",
                     "linuxProcessParams: {containerParams: {volumes: [{sourcePath: "
                       + dirs.ro.string() + ", destinationPath: /data/in}, {sourcePath: "
                       + dirs.rw.string() + ", destinationPath: /data/out, permission: rw, "
                       "addGroupOwner: true}], devices: [{path: " + rw_dev
                       + ", permission: rw}]}}")
           + escape_fn(d, "sysfs", "linuxProcessParams: {containerParams: {volumes: "
                                   "[{sourcePath: /sys/kernel, destinationPath: /k}]}}")
           + escape_fn(d, "host", "linuxProcessParams: {isolationMode: NoContainer, "
                                  "containerParams: {volumes: [{sourcePath: /sys/kernel, "
                                  "destinationPath: /k}]}}");
  }};
  load_local_resources(sb);
  sb.rt->wait_defined("box");
  check_volumes(sb, dirs);
  BOOST_TEST(sb.attempt("box", "write " + rw_dev) == "REACHED: wrote " + rw_dev);
  auto o = sb.attempt("box", "read " + other);
  BOOST_TEST(o == "denied: open " + other + ": No such file or directory", o);
  // A volume Greengrass refuses is refused by its place in the config, and only that
  // function is.
  auto k = sb.attempt("sysfs", "whoami");
  BOOST_TEST(k.find("containerParams.volumes[0]: sourcePath: ") != std::string::npos, k);
  BOOST_TEST(k.find("/sys") != std::string::npos, k);
  // NoContainer sees the host: its containerParams' volumes do not apply (nor refuse it).
  auto h = sb.attempt("host", "whoami");
  BOOST_TEST(h.find("uid=") == 0, h);
}

BOOST_AUTO_TEST_CASE(a_function_naming_a_missing_resource_is_refused_by_name,
                     *boost::unit_test::precondition(as_root)) {
  test::temp_dir data;
  BOOST_REQUIRE(::chown(data.path().c_str(), 0, 0) == 0);
  sandboxed sb{[&](auto& d) {
    return escape_fn(d, "ghost", "resourceAccessPolicies: [{resourceId: nope}]")
           + escape_fn(d, "wheel", "resourceAccessPolicies: [{resourceId: rooted}]")
           + escape_fn(d, "stateful", "resourceAccessPolicies: [{resourceId: state}]")
           + escape_fn(d, "plain") + "resources:\n" + volume("there", data.path(), "/data")
           + volume("rooted", data.path(), "/data", "{autoAddGroupOwner: true}")
           + volume("state", "/var/lib", "/state");
  }};
  load_local_resources(sb);
  sb.rt->wait_defined("plain");
  auto g = sb.attempt("ghost", "whoami");
  BOOST_TEST(g.find("resourceAccessPolicies[0].resourceId: no resource 'nope' in the group")
               != std::string::npos,
             g);
  BOOST_TEST(!sb.rt->info("ghost").valid());
  // A refused resource is counted, and refuses the functions that name it, by its error.
  std::string held;
  BOOST_TEST(test::wait_until([&] {
    auto all = sb.rt->h->kernel().status().details();
    held = all["local_resources.resources"];
    return held.find("2 volumes, 0 devices, 1 refused") == 0;
  }),
             held);
  auto st = sb.attempt("stateful", "whoami");
  BOOST_TEST(st.find("resource 'state' is refused: ") != std::string::npos, st);
  BOOST_TEST(st.find("localVolumeResourceData.sourcePath: '/var/lib' is under /var") != std::string::npos,
             st);
  // A resource whose group owner is root's group does not give it to a function unless
  // the image lets functions be root.
  auto w = sb.attempt("wheel", "whoami");
  BOOST_TEST(w.find("resource 'rooted': its group owner is root's group (gid 0)")
               != std::string::npos,
             w);
  // The others run.
  BOOST_TEST(sb.attempt("plain", "whoami").find("pid=2") != std::string::npos);
  // A policy on a NoContainer function is refused: only a sandbox gets resources.
  sb.rt->rewrite(escape_fn(sb.code_dir, "open",
                           "resourceAccessPolicies: [{resourceId: there}], linuxProcessParams: "
                           "{isolationMode: NoContainer}")
                 + "resources:\n" + volume("there", data.path(), "/data"));
  BOOST_REQUIRE(test::wait_until([&] { return !sb.rt->info("open").last_error().empty(); }));
  BOOST_TEST(sb.rt->info("open").last_error().find("isolationMode GreengrassContainer")
               != std::string::npos,
             sb.rt->info("open").last_error());
}

BOOST_AUTO_TEST_CASE(without_local_resources_functions_with_resources_are_refused,
                     *boost::unit_test::precondition(as_root)) {
  test::temp_dir data;
  // An image without the plugin: the function that needs it is refused with a clear
  // error naming the resource; a function without resources runs.
  sandboxed sb{[&](auto& d) {
    return escape_fn(d, "needs", "resourceAccessPolicies: [{resourceId: there}]")
           + escape_fn(d, "plain") + "resources:\n" + volume("there", data.path(), "/data");
  }};
  sb.rt->wait_defined("plain");
  BOOST_TEST(sb.attempt("plain", "whoami").find("pid=2") != std::string::npos);
  BOOST_REQUIRE(test::wait_until([&] { return !sb.rt->info("needs").last_error().empty(); },
                                 test::scaled(20s)));
  auto e = sb.rt->info("needs").last_error();
  BOOST_TEST(e.find("resource 'there'") != std::string::npos, e);
  BOOST_TEST(e.find("no local_resources plugin") != std::string::npos, e);
  auto r = sb.attempt("needs", "whoami");
  BOOST_TEST(starts(r, "ERROR: "), r);
}

BOOST_AUTO_TEST_CASE(local_resources_loaded_later_gives_refused_functions_their_resources,
                     *boost::unit_test::precondition(as_root)) {
  // local_resources comes after the runtime gave up waiting for it (an image loading it
  // later, a restart after a failure): its start (lr-2) has the runtime ask again, with
  // no group change.
  test::temp_dir data;
  { std::ofstream{data.path() / "hello"} << "hello"; }
  ::chmod(data.path().c_str(), 0755);
  ::chmod((data.path() / "hello").c_str(), 0644);
  sandboxed sb{[&](auto& d) {
    return escape_fn(d, "needs", "resourceAccessPolicies: [{resourceId: there}]")
           + "resources:\n" + volume("there", data.path(), "/data");
  }};
  sb.rt->wait_defined("needs");
  BOOST_REQUIRE(test::wait_until([&] { return !sb.rt->info("needs").last_error().empty(); },
                                 test::scaled(20s)));
  auto e = sb.rt->info("needs").last_error();
  BOOST_TEST(e.find("no local_resources plugin") != std::string::npos, e);
  load_local_resources(sb);
  BOOST_REQUIRE(test::wait_until(
    [&] { return sb.attempt("needs", "read /data/hello") == "REACHED: read 5 bytes of /data/hello"; },
    test::scaled(20s)));
}

BOOST_AUTO_TEST_CASE(a_reload_of_local_resources_gives_functions_what_it_answers_now,
                     *boost::unit_test::precondition(as_root)) {
  // A device node replaced by one with other numbers (a device plugged again) reaches
  // the function when local_resources is reloaded, with no group change: its start
  // (lr-2) has the runtime ask again, and the changed answer restarts the instances.
  test_devices devs;
  auto dev = devs.make("swap", 1, 3); // /dev/null's numbers: reads nothing
  sandboxed sb{[&](auto& d) {
    return escape_fn(d, "box", "resourceAccessPolicies: [{resourceId: sink, permission: rw}]")
           + "resources:\n" + device("sink", dev);
  }};
  load_local_resources(sb);
  sb.rt->wait_defined("box");
  BOOST_TEST(sb.attempt("box", "read " + dev) == "REACHED: read 0 bytes of " + dev);
  devs.make("swap", 1, 7); // /dev/full's: reads zeros
  auto r = sb.rt->h->kernel().host().reload("local_resources");
  BOOST_REQUIRE_MESSAGE(r, (r ? std::string{} : grove::describe(r.error())));
  BOOST_REQUIRE(test::wait_until(
    [&] { return sb.attempt("box", "read " + dev) == "REACHED: read 256 bytes of " + dev; },
    test::scaled(20s)));
}

BOOST_AUTO_TEST_CASE(changing_or_revoking_a_resource_restarts_the_instances,
                     *boost::unit_test::precondition(as_root)) {
  test::temp_dir data;
  auto a = data.path() / "a";
  auto b = data.path() / "b";
  fs::create_directories(a);
  fs::create_directories(b);
  { std::ofstream{a / "from-a"} << "a"; }
  { std::ofstream{b / "from-b"} << "b"; }
  for (const auto& p : {a, b, a / "from-a", b / "from-b"})
    ::chmod(p.c_str(), fs::is_directory(p) ? 0755 : 0644);
  const std::string policy = "resourceAccessPolicies: [{resourceId: v}]";
  sandboxed sb{[&](auto& d) {
    return escape_fn(d, "box", policy) + "resources:\n" + volume("v", a, "/data");
  }};
  load_local_resources(sb);
  sb.rt->wait_defined("box");
  BOOST_TEST(starts(sb.attempt("box", "read /data/from-a"), "REACHED"));
  // The instance leaves a mark in its private /tmp: a new instance has none.
  BOOST_TEST(sb.attempt("box", "write /tmp/mark") == "REACHED: wrote /tmp/mark");
  BOOST_TEST(starts(sb.attempt("box", "read /tmp/mark"), "REACHED"));
  // The resource changes (another source): the running instance is replaced and the new
  // one sees the new source. The function's own definition did not change.
  sb.rt->rewrite(escape_fn(sb.code_dir, "box", policy) + "resources:\n" + volume("v", b, "/data"));
  BOOST_REQUIRE(test::wait_until(
    [&] { return starts(sb.attempt("box", "read /data/from-b"), "REACHED"); }));
  BOOST_TEST(starts(sb.attempt("box", "read /tmp/mark"), "denied"));
  BOOST_TEST(starts(sb.attempt("box", "read /data/from-a"), "denied"));
  // The policy is withdrawn: new instances have no /data.
  BOOST_TEST(sb.attempt("box", "write /tmp/mark") == "REACHED: wrote /tmp/mark");
  sb.rt->rewrite(escape_fn(sb.code_dir, "box") + "resources:\n" + volume("v", b, "/data"));
  BOOST_REQUIRE(test::wait_until(
    [&] { return starts(sb.attempt("box", "list /data"), "denied"); }));
  BOOST_TEST(starts(sb.attempt("box", "read /tmp/mark"), "denied"));
  // The resource is removed while a function still names it: its new definition is
  // refused, and the previous one is not kept with the resource: the function stops,
  // with the reason.
  sb.rt->rewrite(escape_fn(sb.code_dir, "box", policy) + "resources:\n" + volume("v", b, "/data"));
  BOOST_REQUIRE(test::wait_until(
    [&] { return starts(sb.attempt("box", "read /data/from-b"), "REACHED"); }));
  sb.rt->rewrite(escape_fn(sb.code_dir, "box", policy));
  BOOST_REQUIRE(test::wait_until([&] { return !sb.rt->info("box").valid(); }));
  auto r = sb.attempt("box", "read /data/from-b");
  BOOST_TEST(r.find("resource 'v', which the group does not have") != std::string::npos, r);
  BOOST_TEST(test::wait_until([&] { return sb.rt->info("box").instances() == 0u; }));
}

BOOST_AUTO_TEST_CASE(a_narrowed_grant_holds_for_items_sent_ahead_to_a_busy_instance,
                     *boost::unit_test::precondition(as_root)) {
  // An item holds the one instance (maxInstancesCount 1) while the next is sent ahead to
  // it; the group then narrows the function's grant. The item in hand ends in the old
  // instance; the one sent ahead must run under the narrowed grant, not the old one.
  test::temp_dir data;
  auto ctl = data.path() / "ctl"; // where the test releases the held item
  auto vol = data.path() / "v";   // the volume whose grant narrows
  fs::create_directories(ctl);
  fs::create_directories(vol);
  ::chmod(ctl.c_str(), 0755);
  ::chmod(vol.c_str(), 0777); // the function's user writes there while it may
  auto group_with = [&](const test::temp_dir& d, const std::string& v) {
    return escape_fn(d, "box",
                     "maxInstancesCount: 1, timeoutInSeconds: 120, resourceAccessPolicies: "
                     "[{resourceId: ctl, permission: ro}"
                       + (v.empty() ? std::string{} : ", {resourceId: v, permission: " + v + "}")
                       + "]")
           + "resources:\n" + volume("ctl", ctl, "/ctl") + volume("v", vol, "/data");
  };
  sandboxed sb{[&](auto& d) { return group_with(d, "rw"); }};
  load_local_resources(sb);
  sb.rt->wait_defined("box");
  BOOST_TEST(sb.attempt("box", "write /data/before") == "REACHED: wrote /data/before");
  auto changes = [&] {
    auto log = sb.rt->log_of("box");
    size_t n = 0;
    for (auto at = log.find("definition changed"); at != std::string::npos;
         at = log.find("definition changed", at + 1))
      ++n;
    return n;
  };
  // Group `v` (the grant of volume v) while "wait /ctl/<go>" holds the instance and
  // `ahead` is sent ahead to it; the answer of `ahead`.
  auto narrow = [&](const std::string& v, const std::string& go, const std::string& ahead) {
    auto before = changes();
    auto held = std::async(std::launch::async,
                           [&] { return sb.attempt("box", "wait /ctl/" + go); });
    BOOST_REQUIRE(test::wait_until([&] { return sb.rt->info("box").busy() == 1u; }));
    auto next = std::async(std::launch::async, [&] { return sb.attempt("box", ahead); });
    BOOST_REQUIRE(test::wait_until([&] { return sb.rt->info("box").sent_ahead() == 1u; }));
    sb.rt->rewrite(group_with(sb.code_dir, v));
    BOOST_REQUIRE(test::wait_until([&] { return changes() > before; }));
    { std::ofstream{ctl / go} << "go"; }
    auto h = held.get();
    BOOST_TEST(h == "REACHED: /ctl/" + go + " is there", h); // not cut short
    return next.get();
  };
  // rw made ro: the write sent ahead fails with EROFS (it ran in a new instance).
  auto w = narrow("ro", "go-1", "write /data/after-ro");
  BOOST_TEST(w == "denied: open /data/after-ro for writing: Read-only file system", w);
  BOOST_TEST(!fs::exists(vol / "after-ro"));
  // rw again, then the policy removed: the volume sent ahead to is not there.
  sb.rt->rewrite(group_with(sb.code_dir, "rw"));
  BOOST_REQUIRE(test::wait_until(
    [&] { return sb.attempt("box", "write /data/again") == "REACHED: wrote /data/again"; }));
  auto l = narrow("", "go-2", "list /data");
  BOOST_TEST(l == "denied: open /data: No such file or directory", l);
  BOOST_TEST(sb.rt->info("box").sent_ahead() == 0u);
  BOOST_TEST(sb.rt->info("box").errors() == 0u, sb.rt->info("box").last_error());
}

BOOST_AUTO_TEST_CASE(posix_shared_memory_works_in_a_private_dev_shm,
                     *boost::unit_test::precondition(as_root)) {
  sandboxed sb{[](auto& d) { return escape_fn(d, "box"); },
               "{sandbox_pids_max: 32, sandbox_shm_kb: 1024}"};
  sb.rt->wait_defined("box");
  auto name = "/grove-shm-test-" + std::to_string(::getpid());
  auto host = fs::path{"/dev/shm" + name};
  fs::remove(host);
  // shm_open, ftruncate, two mappings: a tmpfs of sandbox_shm_kb.
  auto r = sb.attempt("box", "shm " + name);
  BOOST_TEST(r == "REACHED: read 'shared' back; /dev/shm is tmpfs of 1024 KiB", r);
  // The instance's own: the segment (kept by the function) is not in the host's.
  BOOST_TEST(!fs::exists(host));
  fs::remove(host);
  auto m = sb.attempt("box", "mounts /dev/shm");
  BOOST_TEST(starts(m, "/dev/shm rw,nosuid,nodev,noexec,"), m);
  // Python's multiprocessing: a semaphore (sem_open) and a shared_memory segment.
  auto py = sb.attempt("box", "python from multiprocessing import Lock, shared_memory; "
                              "lock = Lock(); lock.acquire(); lock.release(); "
                              "m = shared_memory.SharedMemory(create=True, size=64); "
                              "m.buf[0] = 7; n = shared_memory.SharedMemory(m.name); "
                              "print(n.buf[0]); n.close(); m.close(); m.unlink()");
  BOOST_TEST(starts(py, "exit 0: 7\n"), py);
}

BOOST_AUTO_TEST_CASE(a_sandboxed_function_opens_ptys_of_its_own_devpts,
                     *boost::unit_test::precondition(as_root)) {
  // Ptys of the host first: none of them may be seen inside.
  std::vector<int> host_ptys;
  for (int i = 0; i < 3; ++i) {
    int m = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    BOOST_REQUIRE(m >= 0);
    BOOST_REQUIRE(::unlockpt(m) == 0);
    host_ptys.push_back(m);
  }
  BOOST_REQUIRE(fs::exists(::ptsname(host_ptys.back())));
  for (auto filter : {"auto", "bpf"}) { // v1's devices cgroup here, then a device program
    sandboxed sb{[](auto& d) { return escape_fn(d, "box"); },
                 std::string{"{sandbox_pids_max: 32, sandbox_device_filter: "} + filter + "}"};
    sb.rt->wait_defined("box");
    // Python's pty (openpty: /dev/ptmx; glibc gets the slave from the master, no open
    // by name), the slave opened by its name too (as ptsname users and tools do: the
    // device cgroup's 136:* rule), a line through it, and what /dev/pts holds: its own
    // pty and ptmx only.
    auto py = sb.attempt("box", "python import os, pty; m, s = pty.openpty(); "
                                "n = os.open(os.ttyname(s), os.O_RDWR | os.O_NOCTTY); "
                                "os.write(n, b'hello\\n'); print(os.read(m, 64)); "
                                "print(os.ttyname(s)); print(sorted(os.listdir('/dev/pts')))");
    BOOST_TEST(py == "exit 0: b'hello\\r\\n'\n/dev/pts/0\n['0', 'ptmx']\n", filter << ": " << py);
    auto m = sb.attempt("box", "mounts /dev/pts");
    BOOST_TEST(starts(m, "/dev/pts rw,nosuid,noexec,"), m);
  }
  for (int fd : host_ptys)
    ::close(fd);
}

BOOST_AUTO_TEST_CASE(a_resolv_conf_linked_out_of_etc_is_bound_where_it_points) {
  // systemd-resolved's /etc/resolv.conf links into /run, which the sandbox's root does
  // not have: without the file it names, names do not resolve inside.
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("not root: the sandbox cannot be opened, skipped");
    return;
  }
  test::temp_dir d;
  auto rootfs = d.path() / "rootfs";
  for (const char* dir : {"usr", "etc", "run/resolve"})
    fs::create_directories(rootfs / dir);
  std::ofstream{rootfs / "run/resolve/stub.conf"} << "nameserver 127.0.0.53\n";
  fs::create_symlink("../run/resolve/stub.conf", rootfs / "etc/resolv.conf");
  grove::fn::runtime_config cfg;
  cfg.sandbox_rootfs = rootfs.string();
  auto sb = grove::fn::sandbox::open(cfg, d.path() / "state");
  BOOST_REQUIRE_MESSAGE(sb, (sb ? std::string{} : grove::describe(sb.error())));
  grove::fn::function_def def;
  def.runtime = "executable";
  auto bound = [&]() -> std::string {
    auto inst = (*sb)->prepare("f", 1, def, "");
    BOOST_REQUIRE_MESSAGE(inst, (inst ? std::string{} : grove::describe(inst.error())));
    for (const auto& m : inst->spec.mounts)
      if (m.target == "/run/resolve/stub.conf")
        return m.source.string();
    return {};
  };
  BOOST_TEST(bound() == fs::canonical(rootfs / "run/resolve/stub.conf").string());
  // A plain file in /etc is there already: nothing more is bound.
  fs::remove(rootfs / "etc/resolv.conf");
  std::ofstream{rootfs / "etc/resolv.conf"} << "nameserver 192.0.2.1\n";
  BOOST_TEST(bound().empty());
}

namespace {

/// sandbox::open in a child under a seccomp filter that `rules` sets up (allowing the
/// rest): the error's text ("" when the sandbox opened).
std::string open_under(const std::function<int(scmp_filter_ctx)>& rules);

/// sandbox::open where `call` answers ENOSYS, as on a kernel without it.
std::string open_without(const char* call) {
  return open_under([call](scmp_filter_ctx ctx) {
    return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), seccomp_syscall_resolve_name(call), 0);
  });
}

std::string open_under(const std::function<int(scmp_filter_ctx)>& rules) {
  int fd[2];
  BOOST_REQUIRE(::pipe(fd) == 0);
  test::temp_dir state;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fd[0]);
    std::string out = "filter not loaded";
    if (scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW)) {
      if (rules(ctx) == 0 && seccomp_load(ctx) == 0) {
        grove::fn::runtime_config cfg;
        auto sb = grove::fn::sandbox::open(cfg, state.path());
        out = sb ? std::string{} : grove::describe(sb.error());
      }
    }
    [[maybe_unused]] auto n = ::write(fd[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(fd[1]);
  std::string got;
  char buf[512];
  for (ssize_t n; (n = ::read(fd[0], buf, sizeof buf)) > 0;)
    got.append(buf, static_cast<size_t>(n));
  ::close(fd[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  return got;
}

} // namespace

BOOST_AUTO_TEST_CASE(a_kernel_without_a_call_the_sandbox_needs_is_named,
                     *boost::unit_test::precondition(as_root)) {
  // mount_setattr (5.12) and seccomp user notification (5.0): on an older kernel every
  // start would fail "Function not implemented"; the sandbox is refused naming them.
  auto no_setattr = open_without("mount_setattr");
  BOOST_TEST(no_setattr.find("needs mount_setattr (Linux 5.12 or later)") != std::string::npos,
             no_setattr);
  auto no_notify = open_without("seccomp");
  BOOST_TEST(no_notify.find("needs seccomp user notification (Linux 5.0 or later)")
               != std::string::npos,
             no_notify);
  // User namespaces turned off (as a container's seccomp profile or a security module
  // does: EPERM for clone with CLONE_NEWUSER): refused, naming them; nothing runs
  // unisolated.
  auto no_userns = open_under([](scmp_filter_ctx ctx) {
    return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                            SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
  });
  BOOST_TEST(no_userns.find("isolationMode GreengrassContainer needs user namespaces (clone: "
                            "Operation not permitted); the function is refused")
               != std::string::npos,
             no_userns);
  // This kernel has both: the same call opens.
  grove::fn::runtime_config cfg;
  test::temp_dir state;
  auto sb = grove::fn::sandbox::open(cfg, state.path());
  BOOST_TEST(bool(sb), (sb ? std::string{} : grove::describe(sb.error())));
}

BOOST_AUTO_TEST_CASE(a_spare_sandbox_key_changes_with_every_input_of_prepare) {
  // A spare is used only when its key is the start's: every input of sandbox::prepare
  // must change the key, or a start could get a spare's stale limits or device rules (a
  // device turned ro still writable through the devices cgroup).
  grove::fn::function_def def;
  def.runtime = "executable";
  def.process.container.memory_size_kb = 16384;
  grove::fn::resource_mount dev;
  dev.id = "d";
  dev.device = true;
  dev.source = "/dev/x";
  dev.destination = "/dev/x";
  dev.read_only = false;
  dev.major = 1;
  dev.minor = 3;
  auto key = [](const grove::fn::function_def& d, const fs::path& code,
                std::vector<grove::fn::resource_mount> rs, const std::string& fn = "f") {
    return grove::fn::sandbox::key(fn, d, code, rs);
  };
  auto base = key(def, "/code", {dev});
  BOOST_TEST(key(def, "/code", {dev}) == base); // the same inputs, the same key
  BOOST_TEST(key(def, "/code", {dev}, "g") != base);
  BOOST_TEST(key(def, "/other", {dev}) != base);
  BOOST_TEST(key(def, "/code", {}) != base);
  auto d2 = def;
  d2.runtime = "python3";
  BOOST_TEST(key(d2, "/code", {dev}) != base);
  d2 = def;
  d2.process.container.memory_size_kb = 32768;
  BOOST_TEST(key(d2, "/code", {dev}) != base);
  d2 = def;
  d2.process.container.mount_ro_sysfs = true;
  BOOST_TEST(key(d2, "/code", {dev}) != base);
  std::vector<std::function<void(grove::fn::resource_mount&)>> changes{
    [](auto& r) { r.id = "e"; },           [](auto& r) { r.device = false; },
    [](auto& r) { r.source = "/dev/y"; },  [](auto& r) { r.destination = "/dev/y"; },
    [](auto& r) { r.read_only = true; },   [](auto& r) { r.device_type = 'b'; },
    [](auto& r) { r.major = 2; },          [](auto& r) { r.minor = 4; }};
  for (size_t i = 0; i < changes.size(); ++i) {
    auto r = dev;
    changes[i](r);
    BOOST_TEST(!(r == dev), "change " << i << " is not a change of the resource");
    BOOST_TEST(key(def, "/code", {r}) != base, "change " << i << " kept the key");
  }
}
