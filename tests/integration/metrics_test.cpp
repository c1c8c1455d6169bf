#define BOOST_TEST_MODULE metrics_test
#include <boost/test/unit_test.hpp>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <regex>
#include <set>
#include <thread>

#include "../unit/test_util.hpp"
#include "grove/kernel/metrics.hpp"
#include "grove/kernel/metrics_server.hpp"
#include "kernel_fixture.hpp"
#include "process_util.hpp"

// Counters and gauges: the registry, both slot kinds, status, and the Prometheus
// endpoint scraped over a real TCP socket.

using namespace grove;

namespace {

constexpr uint64_t burst_total = 4 * 250000; // echo's burst_threads x burst_per_thread

struct fixture : test::kernel_fixture {
  fixture()
    : kernel_fixture([](image_profile& p) {
        p.metrics.enabled = true; // port 0: the kernel picks a free one
      }) {
    BOOST_REQUIRE(k->metrics_port() != 0);
  }

  void load(const std::string& config, bool isolated) {
    kernel_fixture::load("echo", config, isolated);
  }

  control::PluginInfo info() {
    BOOST_REQUIRE_EQUAL(k->plugins().plugins_size(), 1);
    return kernel_fixture::info("echo");
  }

  // The value of echo's series `name` (with label value `label`); -1 if missing.
  int64_t value(const std::string& name, const std::string& label = {}) {
    auto i = info(); // a range-for over info().metrics() would outlive the temporary
    for (auto& m : i.metrics()) {
      auto lv = m.labels().empty() ? std::string{} : m.labels().begin()->second;
      if (m.name() == name && lv == label)
        return m.value();
    }
    return -1;
  }

  bool wait_value(const std::string& name, int64_t want, const std::string& label = {}) {
    return test::wait_until([&] { return value(name, label) == want; },
                            std::chrono::seconds{20});
  }

  // Counts through a crash (`crash` makes the plugin fail before counting it) and a
  // hot reload: the values go on from where they were.
  void values_survive(const std::string& config, const std::string& crash, bool isolated) {
    load(config, isolated);
    for (int i = 0; i < 3; ++i)
      test::pub(*k, "test/echo/in", "a");
    BOOST_REQUIRE(wait_value("messages.seen", 3)); // isolated: shipped to the kernel
    test::pub(*k, "test/echo/in", crash);
    BOOST_REQUIRE(wait_restarts(1));
    test::pub(*k, "test/echo/in", "a");
    BOOST_TEST(wait_value("messages.seen", 4));
    auto r = k->reload("echo", "");
    BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
    test::pub(*k, "test/echo/in", "a");
    BOOST_TEST(wait_value("messages.seen", 5));
    BOOST_TEST(wait_value("payloads", 5, "a"));
  }

  bool wait_restarts(uint32_t n) {
    return kernel_fixture::wait_restarts("echo", n);
  }
};

// -- HTTP over a real socket ------------------------------------------------------

using test::connect_loopback;
using test::http_reply;
using test::read_to_eof;
using test::send_all;

http_reply http(uint16_t port, const std::string& request) {
  return test::http_exchange(port, request);
}

http_reply get_metrics(uint16_t port) {
  return http(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
}

// -- the exposition format --------------------------------------------------------

struct sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct exposition {
  std::map<std::string, std::string> type;
  std::map<std::string, std::string> help;
  std::vector<sample> samples;

  // The sample's value; -1 if missing.
  double find(const std::string& name,
                             const std::map<std::string, std::string>& labels = {}) const {
    for (auto& s : samples)
      if (s.name == name && s.labels == labels)
        return s.value;
    return -1;
  }
};

std::string unescape(std::string_view x) {
  std::string out;
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] == '\\' && i + 1 < x.size()) {
      ++i;
      out += x[i] == 'n' ? '\n' : x[i];
    } else {
      out += x[i];
    }
  }
  return out;
}

// Checks every line against text format 0.0.4 and the rules of a family (HELP and
// TYPE once, before its samples, samples together); records what it read.
exposition parse_exposition(const std::string& text) {
  static const std::regex help_re{R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*))"};
  static const std::regex type_re{
    R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))"};
  static const std::regex sample_re{
    R"re(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(([a-zA-Z_][a-zA-Z0-9_]*)="((\\[\\"n]|[^"\\])*)")?\})? )re"
    R"re((-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?|NaN|[+-]Inf))re"};
  exposition result;
  BOOST_REQUIRE(!text.empty() && text.back() == '\n');
  std::set<std::string> closed; // families whose samples are behind us
  std::string current;
  size_t pos = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    auto line = text.substr(pos, nl - pos);
    pos = nl + 1;
    std::smatch m;
    if (std::regex_match(line, m, help_re)) {
      BOOST_TEST(result.help.emplace(m[1], m[2]).second, "HELP twice: " << line);
    } else if (std::regex_match(line, m, type_re)) {
      BOOST_TEST(result.type.emplace(m[1], m[2]).second, "TYPE twice: " << line);
    } else if (std::regex_match(line, m, sample_re)) {
      std::string name = m[1];
      BOOST_TEST(result.type.count(name) == 1, "sample before its TYPE: " << line);
      if (name != current) {
        BOOST_TEST(closed.insert(name).second, "family split: " << line);
        current = name;
      }
      sample s;
      s.name = name;
      if (m[4].matched)
        s.labels[m[4]] = unescape(m[5].str());
      s.value = std::stod(m[7]);
      result.samples.push_back(std::move(s));
    } else {
      BOOST_ERROR("not exposition format: '" << line << "'");
    }
  }
  return result;
}

} // namespace

// -- the registry -----------------------------------------------------------------

BOOST_AUTO_TEST_CASE(declaring_twice_gives_the_same_series_and_clashes_are_errors) {
  metric_registry reg;
  auto a = reg.counter("routed.to_cloud", "help");
  auto b = reg.counter("routed.to_cloud", "other help");
  BOOST_REQUIRE(a && b);
  a->add(5);
  b->inc();
  BOOST_TEST(a->value() == 6u);
  BOOST_TEST(b->value() == 6u);
  auto g = reg.gauge("routed.to_cloud", "clash");
  BOOST_REQUIRE(!g);
  BOOST_TEST(g.error() == errc::invalid_state);
  auto f = reg.declare("routed.to_cloud", metric_kind::counter, "", "device");
  BOOST_REQUIRE(!f);
  BOOST_TEST(f.error() == errc::invalid_state);
  for (auto bad : {"", "Routed", "a..b", "a.", ".a", "1a", "a-b", "a b"}) {
    auto x = reg.counter(bad, "");
    BOOST_TEST(!x, "accepted '" << bad << "'");
  }
  for (auto bad : {"__x", "Device", "1x", "a.b"}) {
    auto x = reg.declare("fine", metric_kind::gauge, "", bad);
    BOOST_TEST(!x, "accepted label '" << bad << "'");
  }
  BOOST_TEST(reg.size() == 1u);
}

BOOST_AUTO_TEST_CASE(a_family_holds_a_bounded_number_of_series) {
  metric_registry reg;
  auto f = reg.declare("denied", metric_kind::counter, "", "device");
  BOOST_REQUIRE(f);
  grove::counter_family fam{*f};
  const size_t n = metric_series_cap + 200;
  for (size_t i = 0; i < n; ++i)
    fam.with("device-" + std::to_string(i)).inc();
  BOOST_TEST(reg.size() == metric_series_cap);
  google::protobuf::RepeatedPtrField<control::Metric> all;
  reg.collect(all);
  int64_t sum = 0;
  int64_t other = 0;
  for (auto& m : all) {
    sum += m.value();
    if (m.labels().at("device") == "_other")
      other = m.value();
  }
  BOOST_TEST(sum == static_cast<int64_t>(n)); // nothing lost, the rest is "_other"
  BOOST_TEST(other == static_cast<int64_t>(n - (metric_series_cap - 1)));
}

// -- both slot kinds --------------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(slots, fixture)

BOOST_AUTO_TEST_CASE(counters_from_several_threads_sum_exactly_in_process) {
  load("{}", false);
  test::pub(*k, "test/echo/in", "burst");
  BOOST_TEST(wait_value("burst", burst_total));
  BOOST_TEST(value("messages.seen") == 1);
  BOOST_TEST(value("last.payload_bytes") == 5);
}

BOOST_AUTO_TEST_CASE(counters_from_several_threads_sum_exactly_isolated) {
  load("{}", true);
  test::pub(*k, "test/echo/in", "burst");
  BOOST_TEST(wait_value("burst", burst_total));
  test::pub(*k, "test/echo/in", "burst");
  BOOST_TEST(wait_value("burst", 2 * burst_total));
  BOOST_TEST(wait_value("payloads", 2, "burst"));
}

BOOST_AUTO_TEST_CASE(values_survive_restart_and_reload_in_process) {
  values_survive("{crash_on: boom}", "boom", false); // throws before counting
}

BOOST_AUTO_TEST_CASE(values_survive_a_crash_of_the_child_and_a_reload_isolated) {
  values_survive("{segv_on: die}", "die", true);
}

// -- the endpoint -----------------------------------------------------------------

BOOST_AUTO_TEST_CASE(scrape_is_valid_exposition_with_kernel_and_plugin_numbers) {
  load("{}", false);
  const std::string odd = "q\"uo\\te\nnext";
  for (auto payload : {std::string{"a"}, std::string{"a"}, odd})
    test::pub(*k, "test/echo/in", payload);
  BOOST_REQUIRE(wait_value("messages.seen", 3));
  auto r = get_metrics(k->metrics_port());
  BOOST_REQUIRE_EQUAL(r.status, 200);
  BOOST_TEST(r.head.find("Content-Type: text/plain; version=0.0.4") != std::string::npos);
  BOOST_TEST(r.head.find("Content-Length: " + std::to_string(r.body.size()))
             != std::string::npos);
  auto ex = parse_exposition(r.body);
  auto st = k->status();
  // Kernel families, compared with what status says now (they only grow meanwhile).
  BOOST_TEST(ex.type.at("grove_bus_published_total") == "counter");
  BOOST_TEST(ex.find("grove_bus_published_total") >= 3);
  BOOST_TEST(ex.find("grove_bus_published_total") <= st.bus_published());
  BOOST_TEST(ex.find("grove_bus_subscriptions") == st.subscriptions());
  BOOST_TEST(ex.find("grove_plugin_running", {{"plugin", "echo"}}) == 1);
  BOOST_TEST(ex.find("grove_plugin_queue_capacity", {{"plugin", "echo"}})
             == st.plugins(0).queue_capacity());
  BOOST_TEST(ex.type.at("grove_plugin_restarts_total") == "counter");
  // The plugin's own, under grove_<plugin>_<name>; labels escaped and read back.
  BOOST_TEST(ex.type.at("grove_echo_messages_seen_total") == "counter");
  BOOST_TEST(ex.help.at("grove_echo_messages_seen_total") == "Messages handled.");
  BOOST_TEST(ex.find("grove_echo_messages_seen_total") == 3);
  BOOST_TEST(ex.type.at("grove_echo_last_payload_bytes") == "gauge");
  BOOST_TEST(ex.find("grove_echo_last_payload_bytes") == static_cast<double>(odd.size()));
  BOOST_TEST(ex.find("grove_echo_payloads_total", {{"payload", "a"}}) == 2);
  BOOST_TEST(ex.find("grove_echo_payloads_total", {{"payload", odd}}) == 1);
  BOOST_TEST(r.body.find(R"(payload="q\"uo\\te\nnext")") != std::string::npos);
  // HEAD: the same head, no body.
  auto h = http(k->metrics_port(), "HEAD /metrics HTTP/1.1\r\n\r\n");
  BOOST_TEST(h.status == 200);
  BOOST_TEST(h.body.empty());
}

BOOST_AUTO_TEST_CASE(bad_requests_are_refused_and_scrapes_go_on) {
  auto port = k->metrics_port();
  auto big = "GET /metrics HTTP/1.1\r\nX-Filler: " + std::string(16384, 'x') + "\r\n\r\n";
  BOOST_TEST(http(port, big).status == 431);
  BOOST_TEST(http(port, "POST /metrics HTTP/1.1\r\n\r\n").status == 405);
  BOOST_TEST(http(port, "GET /secret HTTP/1.1\r\n\r\n").status == 404);
  BOOST_TEST(http(port, "hello\r\n\r\n").status == 400);
  auto r = get_metrics(port);
  BOOST_TEST(r.status == 200);
  parse_exposition(r.body);
}

BOOST_AUTO_TEST_CASE(slow_and_surplus_clients_do_not_block_scrapes) {
  auto port = k->metrics_port();
  // A client that never finishes its request: scrapes still work while it hangs...
  int slow = connect_loopback(port);
  send_all(slow, "GET /metr");
  BOOST_TEST(get_metrics(port).status == 200);
  // ...and the server drops it (read timeout); EOF without an answer.
  BOOST_TEST(read_to_eof(slow).find("200 OK") == std::string::npos);
  ::close(slow);
  // Idle connections up to the cap; one more is told to come back later.
  std::vector<int> idle;
  for (size_t i = 0; i < metrics_server_limits{}.max_connections; ++i)
    idle.push_back(connect_loopback(port));
  BOOST_TEST(get_metrics(port).status == 503);
  for (int fd : idle)
    ::close(fd);
  BOOST_TEST(test::wait_until([&] { return get_metrics(port).status == 200; }));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(the_endpoint_is_off_by_default) {
  test::temp_dir dir;
  auto file = dir.write("image.yaml", "kernel:\n  log_level: warn\n");
  auto p = load_profile(file, {});
  BOOST_REQUIRE(p);
  BOOST_TEST(!p->metrics.enabled);
  kernel k{std::move(*p), kernel_options{false, false}};
  BOOST_REQUIRE(!k.start());
  BOOST_TEST(k.metrics_port() == 0);
  // Still numbers through status and scrape(), just no listening socket.
  BOOST_TEST(k.scrape().find("# TYPE grove_bus_published_total counter") != std::string::npos);
}
