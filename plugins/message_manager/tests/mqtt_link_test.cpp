#define BOOST_TEST_MODULE mqtt_link_test
#include <boost/test/unit_test.hpp>

// Tests of mqtt_link and cloud_forwarder against real Mosquitto brokers with a real PKI
// made by tools/grove-certs (found through GROVE_SOURCE_DIR, set in CMake).
//
// What reached the "cloud" is read from the broker's own debug log ("Received PUBLISH
// from <client> (..., 'topic', ...)"), which Mosquitto writes before it sends the PUBACK.
// A subscriber would not do for the kill -9 case: the broker may PUBACK a message and die
// before it forwarded it to the subscriber.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <MQTTAsync.h>

#include "test_support.hpp"
#include "cloud_forwarder.hpp"
#include "grove/errors.hpp"
#include "mqtt_link.hpp"
#include "spool.hpp"

#ifndef GROVE_SOURCE_DIR
#  error "GROVE_SOURCE_DIR must name the repository root (set in CMakeLists.txt)"
#endif

namespace grove::mm {
// Lets BOOST_CHECK_EQUAL print states.
std::ostream& operator<<(std::ostream& os, link_state s) {
  return os << to_string(s);
}
} // namespace grove::mm

using namespace grove::mm;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

using grove::test::temp_dir;
using grove::test::free_port;
using grove::test::port_open;
using grove::test::mosquitto_path;
using grove::test::wait_until;

namespace {

void run(const std::string& cmd) {
  auto rc = std::system((cmd + " >/dev/null").c_str());
  if (rc != 0)
    throw std::runtime_error("command failed: " + cmd);
}

// One PKI for the whole run: CA, server cert for localhost/127.0.0.1, two device certs;
// and a second, unrelated CA.
struct pki {
  temp_dir dir;
  fs::path ca, server_crt, server_key, other_ca;
  pki() {
    auto tool = std::string{GROVE_SOURCE_DIR} + "/tools/grove-certs";
    auto d = dir.path().string();
    // The CA keys go outside the PKI directories: into this test's directory.
    ::setenv("GROVE_CA_DIR", (d + "/ca-keys").c_str(), 1);
    run(tool + " init " + d + "/pki");
    run(tool + " server " + d + "/pki --host localhost --ip 127.0.0.1");
    run(tool + " device " + d + "/pki core-thing");
    run(tool + " device " + d + "/pki observer");
    run(tool + " init " + d + "/other --cn Other");
    ca = dir.path() / "pki/ca.crt";
    server_crt = dir.path() / "pki/server.crt";
    server_key = dir.path() / "pki/server.key";
    other_ca = dir.path() / "other/ca.crt";
  }
  std::string cert(const std::string& thing) const {
    return (dir.path() / "pki/devices" / (thing + ".crt")).string();
  }
  std::string key(const std::string& thing) const {
    return (dir.path() / "pki/devices" / (thing + ".key")).string();
  }
};

pki& the_pki() {
  static pki instance;
  return instance;
}

// A real Mosquitto "cloud": TLS with required client certificates, identity as user name,
// debug log to a file per start.
struct broker {
  temp_dir dir;
  uint16_t port = free_port();
  pid_t pid = -1;
  int starts = 0;
  std::string extra_conf; // more mosquitto.conf lines

  fs::path log_file(int n) const {
    return dir.path() / ("broker-" + std::to_string(n) + ".log");
  }

  void start() {
    ++starts;
    auto& p = the_pki();
    auto conf = dir.path() / "mosquitto.conf";
    {
      std::ofstream out(conf);
      if (getuid() == 0)
        out << "user root\n"; // else it drops to 'mosquitto' and cannot read the keys
      out << "persistence false\n"
          << "allow_anonymous false\n"
          << "max_queued_messages 1000000\n"
          << "log_type all\n"
          << "log_dest file " << log_file(starts).string() << "\n"
          << "listener " << port << " 127.0.0.1\n"
          << "cafile " << p.ca.string() << "\n"
          << "certfile " << p.server_crt.string() << "\n"
          << "keyfile " << p.server_key.string() << "\n"
          << "require_certificate true\n"
          << "use_identity_as_username true\n"
          << extra_conf;
    }
    auto out = (dir.path() / "stderr.txt").string();
    auto exe = mosquitto_path();
    pid = fork();
    if (pid == 0) {
      freopen(out.c_str(), "a", stdout);
      freopen(out.c_str(), "a", stderr);
      execl(exe.c_str(), exe.c_str(), "-c", conf.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    BOOST_REQUIRE(pid > 0);
    BOOST_REQUIRE_MESSAGE(wait_until([this] {
                            int st;
                            if (waitpid(pid, &st, WNOHANG) == pid)
                              throw std::runtime_error("mosquitto exited at start");
                            return port_open(port);
                          }),
                          "mosquitto does not listen on " << port);
  }

  void kill(int sig) {
    if (pid <= 0)
      return;
    ::kill(pid, sig);
    int st;
    waitpid(pid, &st, 0);
    pid = -1;
  }

  ~broker() {
    kill(SIGKILL);
  }

  // Topic suffixes of PUBLISH packets `client` sent, over every start, in arrival order
  // ("Denied": those the broker refused).
  std::vector<long> received_from(const std::string& client, int only = 0,
                                  const std::string& verb = "Received") const {
    std::vector<long> result;
    std::regex re(verb + " PUBLISH from " + client + R"( \(d\d, q\d, r\d, m\d+, '[^']*/(\d+)')");
    for (int n = 1; n <= starts; ++n) {
      if (only != 0 && n != only)
        continue;
      std::ifstream in(log_file(n));
      std::string line;
      std::smatch m;
      while (std::getline(in, line))
        if (std::regex_search(line, m, re))
          result.push_back(std::stol(m[1].str()));
    }
    return result;
  }
};

link_options tls_options(uint16_t port, const std::string& thing, const std::string& name) {
  auto& p = the_pki();
  link_options opts;
  opts.name = name;
  opts.host = "localhost";
  opts.port = port;
  opts.client_id = thing;
  opts.ca_file = p.ca.string();
  opts.cert_file = p.cert(thing);
  opts.key_file = p.key(thing);
  opts.retry_initial = 50ms;
  opts.retry_max = 400ms;
  opts.keep_alive = 10s;
  if (std::getenv("MQTT_LINK_TEST_LOG"))
    opts.log = [](log_level level, std::string msg) {
      std::fprintf(stderr, "[%d] %s\n", static_cast<int>(level), msg.c_str());
    };
  return opts;
}

// Collects what a link receives.
struct inbox {
  std::mutex mtx;
  std::vector<inbound_message> msgs;
  void attach(mqtt_link& link) {
    link.on_message([this](inbound_message&& m) {
      std::lock_guard guard{mtx};
      msgs.push_back(std::move(m));
    });
  }
  size_t size() {
    std::lock_guard guard{mtx};
    return msgs.size();
  }
  inbound_message at(size_t i) {
    std::lock_guard guard{mtx};
    return msgs.at(i);
  }
};

// Aborts the test run if it is still alive after `limit`: a deadlocked link would
// otherwise hang the test in its destructor instead of failing it. Declare it first.
struct watchdog {
  std::mutex mtx;
  std::condition_variable cv;
  bool done = false;
  std::thread thread;
  watchdog(std::chrono::seconds limit, std::string what) {
    thread = std::thread([this, limit, what] {
      std::unique_lock lk{mtx};
      if (!cv.wait_for(lk, limit, [this] { return done; })) {
        std::fprintf(stderr, "watchdog: %s still running after %llds, aborting\n",
                     what.c_str(), static_cast<long long>(limit.count()));
        std::abort();
      }
    });
  }
  ~watchdog() {
    {
      std::lock_guard guard{mtx};
      done = true;
    }
    cv.notify_all();
    thread.join();
  }
};

std::string describe(const caf::error& err) {
  return grove::describe(err);
}

// Publishes until it succeeds (the link may just be reconnecting) and waits for done.
void publish_acked(mqtt_link& link, const std::string& topic, const std::string& payload,
                   std::string_view source = {}) {
  auto done = std::make_shared<std::atomic<int>>(0);
  caf::error err;
  BOOST_REQUIRE(wait_until([&] {
    err = link.publish(topic, payload, 1, source,
                       [done](bool ok) { done->store(ok ? 1 : 2); });
    return !err;
  }));
  BOOST_REQUIRE_MESSAGE(wait_until([&] { return done->load() != 0; }), "no PUBACK");
  BOOST_REQUIRE_EQUAL(done->load(), 1);
}

// Starts a subscribing and a publishing link and waits until both are connected.
void start_both(mqtt_link& sub, mqtt_link& pub) {
  BOOST_REQUIRE(!sub.start());
  BOOST_REQUIRE(!pub.start());
  BOOST_REQUIRE_MESSAGE(wait_until([&] { return sub.connected() && pub.connected(); }),
                        "not connected: " << sub.status().last_error << " / "
                                          << pub.status().last_error);
}

std::string topic_of(const char* prefix, long i) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s/%07ld", prefix, i);
  return buf;
}

// A running cloud broker with a subscribing link (core-thing, what it receives in `in`)
// and a publishing one (observer), neither started.
struct cloud_and_two_links {
  broker cloud;
  mqtt_link sub{tls_options(cloud.port, "core-thing", "cloud")};
  mqtt_link pub{tls_options(cloud.port, "observer", "peer")};
  inbox in;

  cloud_and_two_links() {
    cloud.start();
    in.attach(sub);
  }
};

// A memory spool holding prefix/0, then the message `odd_topic`, then prefix/1 .. n-1.
std::unique_ptr<spool> spool_with_one_odd(const char* prefix, long n, const std::string& odd_topic,
                                          const std::string& odd_payload) {
  auto sp = spool::open(spool_options{});
  BOOST_REQUIRE(sp);
  BOOST_REQUIRE((*sp)->push(topic_of(prefix, 0), "x"));
  BOOST_REQUIRE((*sp)->push(odd_topic, odd_payload));
  for (long i = 1; i < n; ++i)
    BOOST_REQUIRE((*sp)->push(topic_of(prefix, i), "x"));
  return std::move(*sp);
}

// Forwards `sp` to `cloud` as core-thing (4 in flight) until the spool is empty, or the
// test stops.
struct forwarding {
  mqtt_link link;
  cloud_forwarder fwd;

  forwarding(broker& cloud, spool& sp, std::chrono::milliseconds limit)
    : link{tls_options(cloud.port, "core-thing", "cloud")}, fwd{link, sp, 4} {
    BOOST_REQUIRE(!fwd.start());
    BOOST_REQUIRE(!link.start());
    BOOST_REQUIRE_MESSAGE(wait_until([&] { return sp.stats().count == 0; }, limit),
                          "left in spool: " << sp.stats().count);
  }

  void stop() {
    fwd.stop();
    link.stop();
  }
};

// Checks that `seen` holds 0..n-1 in order of first arrival; returns the duplicates.
size_t check_first_arrival_order(const std::vector<long>& seen, long n) {
  long next = 0;
  size_t dups = 0;
  for (auto x : seen) {
    if (x == next)
      ++next;
    else if (x < next)
      ++dups;
    else
      BOOST_FAIL("gap: got " << x << " while expecting " << next);
  }
  BOOST_CHECK_EQUAL(next, n);
  return dups;
}

} // namespace

BOOST_AUTO_TEST_CASE(backoff_delay_math) {
  auto init = 1000ms;
  auto max = 60000ms;
  // Lower and upper bound of the jitter window.
  BOOST_CHECK_EQUAL(backoff_delay(1, init, max, 0.0).count(), 500);
  BOOST_CHECK_EQUAL(backoff_delay(1, init, max, 1.0).count(), 1000);
  BOOST_CHECK_EQUAL(backoff_delay(1, init, max, 0.5).count(), 750);
  // Growth: doubles per failure.
  BOOST_CHECK_EQUAL(backoff_delay(2, init, max, 1.0).count(), 2000);
  BOOST_CHECK_EQUAL(backoff_delay(3, init, max, 1.0).count(), 4000);
  BOOST_CHECK_EQUAL(backoff_delay(6, init, max, 0.0).count(), 16000);
  // Cap: 2^6 s > 60 s; jitter still applies below the cap, never above it.
  BOOST_CHECK_EQUAL(backoff_delay(7, init, max, 1.0).count(), 60000);
  BOOST_CHECK_EQUAL(backoff_delay(7, init, max, 0.0).count(), 30000);
  BOOST_CHECK_EQUAL(backoff_delay(1000000, init, max, 1.0).count(), 60000);
  // Out-of-range inputs stay within bounds.
  BOOST_CHECK_EQUAL(backoff_delay(0, init, max, 1.0).count(), 1000);
  BOOST_CHECK_EQUAL(backoff_delay(1, init, max, 7.0).count(), 1000);
  BOOST_CHECK_EQUAL(backoff_delay(1, init, max, -3.0).count(), 500);
  BOOST_CHECK_EQUAL(backoff_delay(1, 90000ms, max, 1.0).count(), 60000);
  for (int n = 1; n < 80; ++n)
    for (double j : {0.0, 0.3, 0.99, 1.0}) {
      auto d = backoff_delay(n, init, max, j);
      BOOST_CHECK(d <= max);
      auto uncapped = std::chrono::milliseconds{init.count() << std::min(n - 1, 20)};
      BOOST_CHECK(d >= std::min(max, uncapped) / 2);
    }
}

BOOST_AUTO_TEST_CASE(start_validates_options) {
  auto& p = the_pki();
  auto opts = tls_options(1, "core-thing", "cloud");
  opts.ca_file = (p.dir.path() / "missing.crt").string();
  mqtt_link bad_ca{opts};
  auto err = bad_ca.start();
  BOOST_REQUIRE(err);
  BOOST_CHECK_EQUAL(err.code(), static_cast<uint8_t>(grove::errc::invalid_config));
  BOOST_TEST_MESSAGE(describe(err));
  BOOST_CHECK(describe(err).find("missing.crt") != std::string::npos);
  opts = tls_options(1, "core-thing", "cloud");
  opts.key_file.clear();
  mqtt_link no_key{opts};
  BOOST_CHECK(no_key.start());
  opts = tls_options(1, "core-thing", "cloud");
  opts.mqtt_version = 3;
  mqtt_link bad_version{opts};
  BOOST_CHECK(bad_version.start());
  // A link that never started: publishing is an error, not a crash.
  mqtt_link idle{tls_options(1, "core-thing", "cloud")};
  BOOST_CHECK(idle.publish("a/b", "x", 1));
  BOOST_CHECK_EQUAL(idle.status().state, link_state::stopped);
}

BOOST_FIXTURE_TEST_CASE(mutual_tls_round_trip_with_grove_source, cloud_and_two_links) {
  std::atomic<int> connected_calls{0};
  std::atomic<int> second_listener{0};
  sub.on_connected([&] { ++connected_calls; });
  sub.on_connected([&] { ++second_listener; }); // several listeners, all called
  sub.set_subscriptions({"rt/#", "other/+"}, 1);
  start_both(sub, pub);
  BOOST_CHECK(wait_until([&] { return connected_calls == 1 && second_listener == 1; }));
  BOOST_CHECK(sub.status().subscribed == (std::vector<std::string>{"other/+", "rt/#"}));
  // no_local: our own publish must not come back. The broker handles it before the
  // peer's message below, so if it came back it would arrive first.
  publish_acked(sub, "rt/own", "mine");
  publish_acked(pub, "rt/a", "hello", "plugin-x");
  publish_acked(pub, "rt/b", "plain");
  BOOST_REQUIRE(wait_until([&] { return in.size() >= 2; }));
  auto first = in.at(0);
  BOOST_CHECK_EQUAL(first.topic, "rt/a");
  BOOST_CHECK_EQUAL(first.payload, "hello");
  BOOST_CHECK_EQUAL(first.qos, 1);
  BOOST_CHECK_EQUAL(first.source, "plugin-x");
  auto second = in.at(1);
  BOOST_CHECK_EQUAL(second.topic, "rt/b");
  BOOST_CHECK_EQUAL(second.source, "");
  BOOST_CHECK_EQUAL(second.filter, "rt/#");
  auto st = sub.status();
  BOOST_CHECK_EQUAL(st.state, link_state::connected);
  BOOST_CHECK_EQUAL(st.connects, 1u);
  BOOST_CHECK_EQUAL(st.received, 2u);
  BOOST_CHECK_EQUAL(st.acked, 1u);
  BOOST_CHECK_EQUAL(second.meta.content_type, "");
  BOOST_CHECK(second.meta.user_properties.empty());
  // MQTT 5 Content Type and user properties travel both ways; grove-source stays the
  // source's alone (a user property of that name is left out).
  message_meta meta;
  meta.content_type = "application/json";
  meta.user_properties = {{"unit", "C"}, {"site", "north"}, {"grove-source", "forged"}};
  auto done = std::make_shared<std::atomic<int>>(0);
  BOOST_REQUIRE(!pub.publish("rt/meta", "{\"t\":21}", 1, "plugin-x",
                             [done](bool ok) { done->store(ok ? 1 : 2); }, meta));
  BOOST_REQUIRE(wait_until([&] { return done->load() == 1 && in.size() >= 3; }));
  auto third = in.at(2);
  BOOST_CHECK_EQUAL(third.topic, "rt/meta");
  BOOST_CHECK_EQUAL(third.source, "plugin-x");
  BOOST_CHECK_EQUAL(third.meta.content_type, "application/json");
  BOOST_CHECK((third.meta.user_properties
               == std::map<std::string, std::string>{{"site", "north"}, {"unit", "C"}}));
  sub.stop();
  sub.stop(); // idempotent
  BOOST_CHECK_EQUAL(sub.status().state, link_state::stopped);
  BOOST_CHECK(sub.publish("rt/x", "late", 1));
}

BOOST_AUTO_TEST_CASE(mqtt_311_round_trip) {
  broker cloud;
  cloud.start();
  auto opts = tls_options(cloud.port, "core-thing", "cloud");
  opts.mqtt_version = 4;
  mqtt_link sub{opts};
  mqtt_link pub{tls_options(cloud.port, "observer", "peer")};
  inbox in;
  in.attach(sub);
  sub.set_subscriptions({"v4/#"}, 1);
  start_both(sub, pub);
  publish_acked(pub, "v4/x", "three-one-one", "ignored-by-3.1.1");
  BOOST_REQUIRE(wait_until([&] { return in.size() == 1; }));
  BOOST_CHECK_EQUAL(in.at(0).payload, "three-one-one");
  BOOST_CHECK_EQUAL(in.at(0).source, ""); // no user properties in 3.1.1
  BOOST_CHECK_EQUAL(in.at(0).filter, "");  // nor subscription identifiers
}

// Paho's trace below LOG_ERROR costs its receive thread about a fifth of its CPU per
// message (issue 12); a link puts the level at LOG_ERROR. Paho hands its trace callback
// what passes the level, so nothing below LOG_ERROR may come while messages flow.
std::atomic<int> paho_trace_below_error{0};
std::atomic<int> paho_trace_lines{0};

BOOST_AUTO_TEST_CASE(paho_trace_below_error_is_off_while_messages_flow) {
  broker cloud;
  cloud.start();
  mqtt_link sub{tls_options(cloud.port, "core-thing", "cloud")};
  mqtt_link pub{tls_options(cloud.port, "observer", "peer")};
  inbox in;
  in.attach(sub);
  sub.set_subscriptions({"trace/#"}, 1);
  start_both(sub, pub);
  ::MQTTAsync_setTraceCallback([](enum MQTTASYNC_TRACE_LEVELS level, char*) {
    ++paho_trace_lines;
    if (level < MQTTASYNC_TRACE_ERROR)
      ++paho_trace_below_error;
  });
  for (int i = 0; i < 20; ++i)
    publish_acked(pub, topic_of("trace", i), "x");
  BOOST_REQUIRE(wait_until([&] { return in.size() == 20; }));
  ::MQTTAsync_setTraceCallback(nullptr);
  BOOST_CHECK_EQUAL(paho_trace_below_error.load(), 0);
  BOOST_TEST_MESSAGE("Paho trace lines: " << paho_trace_lines.load());
}

BOOST_AUTO_TEST_CASE(tls_refusal_is_reported_and_retried) {
  broker cloud;
  cloud.start();
  auto opts = tls_options(cloud.port, "core-thing", "cloud");
  opts.ca_file = the_pki().other_ca.string(); // the server's chain does not verify
  mqtt_link link{opts};
  std::atomic<int> connected_calls{0};
  link.on_connected([&] { ++connected_calls; });
  BOOST_REQUIRE(!link.start());
  BOOST_REQUIRE(wait_until([&] { return link.status().failures >= 3; }));
  auto st = link.status();
  BOOST_TEST_MESSAGE("last_error: " << st.last_error);
  BOOST_CHECK(st.state == link_state::waiting || st.state == link_state::connecting);
  BOOST_CHECK(st.last_error.find("connect to ssl://localhost:") != std::string::npos);
  BOOST_CHECK(st.last_error.find("certificate verify failed") != std::string::npos);
  BOOST_CHECK_EQUAL(st.connects, 0u);
  BOOST_CHECK_EQUAL(connected_calls.load(), 0);
  BOOST_CHECK(wait_until([&] { return link.status().state == link_state::waiting; }));
  // Not connected: publishing is an error right away.
  auto err = link.publish("a/b", "x", 1);
  BOOST_REQUIRE(err);
  BOOST_CHECK_EQUAL(err.code(), static_cast<uint8_t>(grove::errc::invalid_state));
  link.stop();
  BOOST_CHECK_EQUAL(link.status().state, link_state::stopped);
}

BOOST_AUTO_TEST_CASE(client_without_certificate_is_refused) {
  broker cloud;
  cloud.start();
  auto opts = tls_options(cloud.port, "core-thing", "cloud");
  opts.cert_file.clear();
  opts.key_file.clear();
  mqtt_link link{opts};
  BOOST_REQUIRE(!link.start());
  BOOST_REQUIRE(wait_until([&] { return link.status().failures >= 2; }));
  BOOST_TEST_MESSAGE("last_error: " << link.status().last_error);
  BOOST_CHECK(!link.status().last_error.empty());
  BOOST_CHECK(!link.connected());
}

BOOST_FIXTURE_TEST_CASE(set_subscriptions_live, cloud_and_two_links) {
  sub.set_subscriptions({"a/#"}, 1);
  start_both(sub, pub);
  publish_acked(sub, "a/own", "mine"); // no_local with a single filter too
  publish_acked(pub, "a/1", "one");
  BOOST_REQUIRE(wait_until([&] { return in.size() == 1; }));
  BOOST_CHECK_EQUAL(in.at(0).topic, "a/1");
  sub.set_subscriptions({"b/#", "c/+"}, 1);
  BOOST_REQUIRE(wait_until([&] {
    return sub.status().subscribed == std::vector<std::string>{"b/#", "c/+"};
  }));
  // a/2 is handled by the broker before b/1: had "a/#" stayed, it would arrive first.
  publish_acked(pub, "a/2", "two");
  publish_acked(pub, "b/1", "three");
  publish_acked(pub, "c/x", "four");
  BOOST_REQUIRE(wait_until([&] { return in.size() >= 3; }));
  BOOST_CHECK_EQUAL(in.at(1).topic, "b/1");
  BOOST_CHECK_EQUAL(in.at(2).topic, "c/x");
  // The subscriptions are re-made after a reconnect (the broker restarts without state).
  cloud.kill(SIGKILL);
  BOOST_REQUIRE(wait_until([&] { return !sub.connected(); }));
  cloud.start();
  BOOST_REQUIRE(wait_until([&] { return sub.connected() && pub.connected(); }));
  BOOST_CHECK(sub.status().subscribed == (std::vector<std::string>{"b/#", "c/+"}));
  BOOST_CHECK_EQUAL(sub.status().disconnects, 1u);
  publish_acked(pub, "b/2", "five");
  BOOST_REQUIRE(wait_until([&] { return in.size() >= 4; }));
  BOOST_CHECK_EQUAL(in.at(3).topic, "b/2");
}

BOOST_AUTO_TEST_CASE(publish_done_false_when_connection_lost) {
  broker cloud;
  cloud.start();
  mqtt_link link{tls_options(cloud.port, "core-thing", "cloud")};
  std::atomic<int> disconnected_calls{0};
  std::string why;
  std::mutex why_mtx;
  link.on_disconnected([&](const std::string& w) {
    std::lock_guard guard{why_mtx};
    why = w;
    ++disconnected_calls;
  });
  BOOST_REQUIRE(!link.start());
  BOOST_REQUIRE(wait_until([&] { return link.connected(); }));
  // Stop the broker (SIGSTOP) so PUBACKs cannot come, then kill it.
  ::kill(cloud.pid, SIGSTOP);
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  for (int i = 0; i < 5; ++i)
    BOOST_REQUIRE(!link.publish("x/" + std::to_string(i), "p", 1, {},
                                [&](bool r) { ++(r ? ok : failed); }));
  cloud.kill(SIGKILL);
  BOOST_REQUIRE(wait_until([&] { return disconnected_calls == 1; }));
  BOOST_CHECK_EQUAL(failed.load(), 5);
  BOOST_CHECK_EQUAL(ok.load(), 0);
  {
    std::lock_guard guard{why_mtx};
    BOOST_TEST_MESSAGE("disconnected: " << why);
    BOOST_CHECK(!why.empty());
  }
  BOOST_REQUIRE(wait_until([&] { return link.status().failures >= 2; }));
  BOOST_CHECK(link.publish("x/y", "p", 1));
}

BOOST_AUTO_TEST_CASE(spool_drains_in_order_after_cloud_comes_up) {
  constexpr long n = 3000;
  temp_dir dir;
  broker cloud; // port reserved, not started: the cloud is down
  spool_options sopts;
  sopts.storage = spool_storage::file;
  sopts.file = dir.path() / "state" / "spool.db";
  sopts.max_size_bytes = 64u << 20;
  sopts.when_full = spool_when_full::reject_new;
  auto sp = spool::open(sopts);
  BOOST_REQUIRE(sp);
  mqtt_link link{tls_options(cloud.port, "core-thing", "cloud")};
  std::atomic<int> plugin_connected{0};
  link.on_connected([&] { ++plugin_connected; }); // the plugin's own listener stays
  cloud_forwarder fwd{link, **sp, 100};
  BOOST_REQUIRE(!link.start());
  BOOST_REQUIRE(!fwd.start());
  std::string payload(100, 'p');
  for (long i = 0; i < n; ++i) {
    BOOST_REQUIRE((*sp)->push(topic_of("drain", i), payload));
    fwd.notify();
  }
  BOOST_REQUIRE(wait_until([&] { return link.status().failures >= 2; }));
  BOOST_CHECK(link.status().state != link_state::connected);
  BOOST_CHECK_EQUAL((*sp)->stats().count, static_cast<uint64_t>(n));
  BOOST_CHECK_EQUAL(fwd.stats().delivered, 0u);
  cloud.start();
  auto drained = wait_until([&] { return (*sp)->stats().count == 0; }, 30s);
  BOOST_REQUIRE_MESSAGE(drained, "left in spool: " << (*sp)->stats().count << ", link "
                                                   << link.status().last_error);
  BOOST_CHECK_EQUAL(fwd.stats().delivered, static_cast<uint64_t>(n));
  BOOST_CHECK_EQUAL(plugin_connected.load(), 1);
  fwd.stop();
  link.stop();
  cloud.kill(SIGTERM); // Mosquitto flushes its log on a clean exit
  auto seen = cloud.received_from("core-thing");
  auto dups = check_first_arrival_order(seen, n);
  BOOST_CHECK_EQUAL(dups, 0u); // the connection never dropped
  BOOST_CHECK_EQUAL(seen.size(), static_cast<size_t>(n));
  fwd.stop();
  link.stop();
}

BOOST_AUTO_TEST_CASE(cloud_killed_mid_drain_loses_nothing) {
  constexpr long n = 20000;
  temp_dir dir;
  broker cloud;
  spool_options sopts;
  sopts.storage = spool_storage::file;
  sopts.file = dir.path() / "spool.db";
  sopts.max_size_bytes = 64u << 20;
  sopts.when_full = spool_when_full::reject_new;
  auto sp = spool::open(sopts);
  BOOST_REQUIRE(sp);
  std::string payload(100, 'k');
  for (long i = 0; i < n; ++i)
    BOOST_REQUIRE((*sp)->push(topic_of("kill", i), payload));
  BOOST_REQUIRE(!(*sp)->flush());
  cloud.start();
  // What the first broker got is seen by a QoS 0 subscriber: Mosquitto forwards a message
  // (no in-flight limit for QoS 0) before it sends the PUBACK, and its log file is not
  // flushed when it is killed. The second broker is stopped cleanly and its log read.
  mqtt_link observer{tls_options(cloud.port, "observer", "observer")};
  inbox seen_by_observer;
  seen_by_observer.attach(observer);
  observer.set_subscriptions({"kill/#"}, 0);
  BOOST_REQUIRE(!observer.start());
  BOOST_REQUIRE(wait_until([&] { return observer.connected(); }));
  mqtt_link link{tls_options(cloud.port, "core-thing", "cloud")};
  cloud_forwarder fwd{link, **sp, 100};
  BOOST_REQUIRE(!fwd.start()); // before the link: it must catch the first connect
  BOOST_REQUIRE(!link.start());
  BOOST_REQUIRE(wait_until([&] { return fwd.stats().delivered >= 2000; }));
  cloud.kill(SIGKILL);
  auto at_kill = fwd.stats().delivered;
  BOOST_TEST_MESSAGE("killed the cloud after " << at_kill << " acked");
  BOOST_REQUIRE(wait_until([&] { return !link.connected() && !observer.connected(); }));
  std::vector<long> seen;
  for (size_t i = 0, k = seen_by_observer.size(); i < k; ++i)
    seen.push_back(std::stol(seen_by_observer.at(i).topic.substr(5)));
  observer.stop();
  cloud.start(); // same port
  BOOST_REQUIRE_MESSAGE(wait_until([&] { return (*sp)->stats().count == 0; }, 60s),
                        "left in spool: " << (*sp)->stats().count);
  auto st = fwd.stats();
  BOOST_CHECK_EQUAL(st.delivered, static_cast<uint64_t>(n));
  BOOST_CHECK_EQUAL(st.in_flight, 0u);
  BOOST_CHECK_EQUAL(link.status().disconnects, 1u);
  fwd.stop();
  link.stop();
  cloud.kill(SIGTERM);
  BOOST_TEST_MESSAGE("first broker: " << seen.size() << " arrivals, last "
                                      << (seen.empty() ? -1 : seen.back()));
  auto second = cloud.received_from("core-thing", 2);
  if (!second.empty())
    BOOST_TEST_MESSAGE("second broker: first arrivals " << second[0] << " "
                                                        << (second.size() > 1 ? second[1] : -1));
  seen.insert(seen.end(), second.begin(), second.end());
  auto dups = check_first_arrival_order(seen, n);
  BOOST_TEST_MESSAGE("duplicates at the cloud: " << dups << ", redelivered: "
                                                 << st.redelivered);
  // Only messages in flight when the connection died can come twice.
  BOOST_CHECK_LE(dups, 100u);
  BOOST_CHECK_LE(dups, st.redelivered);
}

BOOST_AUTO_TEST_CASE(stop_with_messages_in_flight_returns_them_to_the_spool) {
  broker cloud;
  cloud.start();
  auto sp = spool::open(spool_options{});
  BOOST_REQUIRE(sp);
  mqtt_link link{tls_options(cloud.port, "core-thing", "cloud")};
  BOOST_REQUIRE(!link.start());
  BOOST_REQUIRE(wait_until([&] { return link.connected(); }));
  ::kill(cloud.pid, SIGSTOP); // no PUBACK can come
  cloud_forwarder fwd{link, **sp, 10};
  BOOST_REQUIRE(!fwd.start()); // the link is already connected
  for (long i = 0; i < 50; ++i)
    BOOST_REQUIRE((*sp)->push(topic_of("held", i), "x"));
  fwd.notify();
  BOOST_REQUIRE(wait_until([&] { return (*sp)->stats().in_flight == 10; }));
  BOOST_CHECK_EQUAL(fwd.stats().in_flight, 10u);
  fwd.stop();
  BOOST_CHECK_EQUAL((*sp)->stats().in_flight, 0u);
  BOOST_CHECK_EQUAL((*sp)->stats().count, 50u);
  auto first = (*sp)->peek(1);
  BOOST_REQUIRE_EQUAL(first.size(), 1u);
  BOOST_CHECK_EQUAL(first[0].topic, topic_of("held", 0));
  cloud.kill(SIGKILL);
  link.stop();
}

BOOST_FIXTURE_TEST_CASE(overlapping_filters_deliver_each_message_once, cloud_and_two_links) {
  // Identifiers are given in the sorted order of the first set: "s/#" 1, "s/+/t" 2.
  sub.set_subscriptions({"s/#", "s/+/t"}, 1);
  start_both(sub, pub);
  BOOST_REQUIRE(sub.status().subscribed == (std::vector<std::string>{"s/#", "s/+/t"}));
  publish_acked(pub, "s/x/t", "both");
  // The broker sends every copy of "s/x/t" before the marker, which only "s/#" matches.
  publish_acked(pub, "s/marker", "1");
  BOOST_REQUIRE(wait_until([&] { return in.size() >= 2 && in.at(in.size() - 1).topic == "s/marker"; }));
  BOOST_CHECK(!wait_until([&] { return in.size() > 2; }, 300ms));
  BOOST_REQUIRE_EQUAL(in.size(), 2u);
  BOOST_CHECK_EQUAL(in.at(0).topic, "s/x/t");
  BOOST_CHECK_EQUAL(in.at(0).payload, "both");
  BOOST_CHECK_EQUAL(in.at(0).filter, "s/#");
  BOOST_CHECK_EQUAL(in.at(1).filter, "s/#");
  BOOST_CHECK_EQUAL(sub.status().duplicates_dropped, 1u);
  BOOST_CHECK_EQUAL(sub.status().received, 2u);
  // "s/+/t" keeps its identifier (2), "s/x/#" gets 3: now "s/+/t" delivers.
  sub.set_subscriptions({"s/+/t", "s/x/#"}, 1);
  BOOST_REQUIRE(wait_until([&] {
    return sub.status().subscribed == std::vector<std::string>{"s/+/t", "s/x/#"};
  }));
  publish_acked(pub, "s/x/t", "again");
  publish_acked(pub, "s/x/marker", "2");
  BOOST_REQUIRE(wait_until([&] { return in.size() >= 4 && in.at(in.size() - 1).topic == "s/x/marker"; }));
  BOOST_CHECK(!wait_until([&] { return in.size() > 4; }, 300ms));
  BOOST_REQUIRE_EQUAL(in.size(), 4u);
  BOOST_CHECK_EQUAL(in.at(2).payload, "again");
  BOOST_CHECK_EQUAL(in.at(2).filter, "s/+/t");
  BOOST_CHECK_EQUAL(in.at(3).filter, "s/x/#");
  BOOST_CHECK_EQUAL(sub.status().duplicates_dropped, 2u);
}

BOOST_AUTO_TEST_CASE(publish_refuses_bad_topics_with_clear_errors) {
  broker cloud;
  cloud.start();
  mqtt_link link{tls_options(cloud.port, "core-thing", "cloud")};
  BOOST_REQUIRE(!link.start());
  BOOST_REQUIRE(wait_until([&] { return link.connected(); }));
  auto code = [](const caf::error& err) { return err ? static_cast<int>(err.code()) : 0; };
  auto invalid_topic = static_cast<int>(grove::errc::invalid_topic);
  BOOST_CHECK_EQUAL(code(link.publish("a/+/b", "x", 1)), invalid_topic);
  BOOST_CHECK_EQUAL(code(link.publish("", "x", 1)), invalid_topic);
  BOOST_CHECK_EQUAL(code(link.publish("bad/\xff\xfe", "x", 1)), invalid_topic); // Paho: UTF-8
  BOOST_CHECK_EQUAL(link.status().published, 0u);
  publish_acked(link, "good/1", "x"); // the link is still fine
}

BOOST_AUTO_TEST_CASE(invalid_topic_in_spool_is_dropped_and_the_rest_delivered) {
  broker cloud;
  cloud.start();
  auto sp = spool_with_one_odd("inv", 10, "inv/\xff\xfe/0000099", "not UTF-8: Paho refuses it");
  forwarding f{cloud, *sp, 10s};
  auto st = f.fwd.stats();
  BOOST_CHECK_EQUAL(st.delivered, 10u);
  BOOST_CHECK_EQUAL(st.dropped_invalid, 1u);
  BOOST_CHECK_EQUAL(st.in_flight, 0u);
  f.stop();
  cloud.kill(SIGTERM);
  auto seen = cloud.received_from("core-thing");
  BOOST_CHECK_EQUAL(check_first_arrival_order(seen, 10), 0u);
  BOOST_CHECK_EQUAL(seen.size(), 10u);
}

BOOST_AUTO_TEST_CASE(message_the_broker_keeps_refusing_is_dropped_after_three_attempts) {
  temp_dir dir;
  auto acl = dir.path() / "acl";
  {
    // core-thing may publish only below "ok/": the rest gets PUBACK "not authorized".
    std::ofstream out(acl);
    out << "user core-thing\ntopic write ok/#\n";
  }
  broker cloud;
  cloud.extra_conf = "acl_file " + acl.string() + "\n";
  cloud.start();
  auto sp = spool_with_one_odd("ok", 5, "denied/0000099", "refused");
  forwarding f{cloud, *sp, 20s};
  auto st = f.fwd.stats();
  BOOST_CHECK_EQUAL(st.delivered, 5u);
  BOOST_CHECK_EQUAL(st.dropped_invalid, 1u);
  BOOST_CHECK_EQUAL(st.publish_errors, 3u);
  BOOST_CHECK_EQUAL(f.link.status().disconnects, 0u);
  f.stop();
  cloud.kill(SIGTERM);
  BOOST_CHECK(cloud.received_from("core-thing", 0, "Denied") == std::vector<long>(3, 99L));
  auto seen = cloud.received_from("core-thing");
  BOOST_CHECK_EQUAL(check_first_arrival_order(seen, 5), 0u);
}

BOOST_AUTO_TEST_CASE(retired_client_with_queued_publishes_is_destroyed_without_deadlock) {
  watchdog dog{90s, "retired_client_with_queued_publishes_is_destroyed_without_deadlock"};
  broker cloud;
  cloud.start();
  auto opts = tls_options(cloud.port, "core-thing", "cloud");
  opts.max_inflight = 2; // the rest waits in Paho's queue
  mqtt_link link{opts};
  BOOST_REQUIRE(!link.start());
  BOOST_REQUIRE(wait_until([&] { return link.connected(); }));
  ::kill(cloud.pid, SIGSTOP); // no PUBACK can come
  constexpr int n = 50;
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  for (int i = 0; i < n; ++i)
    BOOST_REQUIRE(!link.publish(topic_of("q", i), "p", 1, {},
                                [&](bool r) { ++(r ? ok : failed); }));
  cloud.kill(SIGKILL);
  BOOST_REQUIRE(wait_until([&] { return failed == n; })); // fail_pending at the loss
  BOOST_CHECK_EQUAL(link.status().disconnects, 1u);
  cloud.start();
  BOOST_REQUIRE(wait_until([&] { return link.connected(); }));
  // A second client with the same id takes the session over, and the link takes it back:
  // each round retires one of the link's Paho clients; the fifth retirement destroys
  // the first client, with its queued publishes.
  mqtt_link intruder{tls_options(cloud.port, "core-thing", "intruder")};
  BOOST_REQUIRE(!intruder.start());
  BOOST_REQUIRE_MESSAGE(wait_until([&] { return link.status().disconnects >= 8; }, 60s),
                        "disconnects: " << link.status().disconnects);
  intruder.stop();
  BOOST_REQUIRE_MESSAGE(wait_until([&] { return link.connected(); }),
                        "the link does not reconnect: " << link.status().last_error);
  publish_acked(link, "q/after", "p");
  BOOST_CHECK_EQUAL(failed.load(), n); // each done ran once
  BOOST_CHECK_EQUAL(ok.load(), 0);
  link.stop();
}

BOOST_AUTO_TEST_CASE(reconnect_now_ends_the_back_off) {
  watchdog dog{120s, "reconnect_now_ends_the_back_off"};
  broker local;
  local.start();
  auto opts = tls_options(local.port, "core-thing", "local");
  // A back-off far longer than the test may wait: only reconnect_now() can bring the
  // link back in time.
  opts.retry_initial = 600s;
  opts.retry_max = 600s;
  mqtt_link link{opts};
  BOOST_REQUIRE(!link.start());
  BOOST_REQUIRE(wait_until([&] { return link.connected(); }));
  link.reconnect_now(); // connected: no effect, and no skipped back-off kept for later
  local.kill(SIGKILL);
  BOOST_REQUIRE(wait_until([&] { return link.status().state == link_state::waiting; }));
  BOOST_CHECK_GT(link.status().next_retry_in.count(), 60000);
  local.start(); // the same port
  link.reconnect_now();
  BOOST_CHECK_MESSAGE(wait_until([&] { return link.connected(); }),
                      "still " << link.status().state << ", " << link.status().last_error);
  BOOST_CHECK_EQUAL(link.status().connects, 2u);
  link.stop();
}
