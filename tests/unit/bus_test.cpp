#define BOOST_TEST_MODULE bus_test
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "grove/errors.hpp"
#include "grove/kernel/kernel.hpp"
#include "test_util.hpp"

using namespace grove;

namespace {

struct fixture {
  test::temp_dir dir;
  kernel k{test::make_profile(dir.path()), kernel_options{false, false}};

  fixture() {
    auto err = k.start();
    BOOST_REQUIRE(!err);
  }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(bus_suite, fixture)

BOOST_AUTO_TEST_CASE(routes_by_filter_and_counts_unrouted) {
  test::collector all{k, "sensors/#"};
  test::collector temp{k, "sensors/+/temp"};
  test::collector exact{k, "sensors/a/temp"};
  BOOST_TEST(test::pub(k, "sensors/a/temp", "1").delivered == 3u);
  BOOST_TEST(test::pub(k, "sensors/b/temp", "2").delivered == 2u);
  BOOST_TEST(test::pub(k, "sensors/b/hum", "3").delivered == 1u);
  BOOST_TEST(test::pub(k, "other", "4").delivered == 0u);
  BOOST_REQUIRE(all.wait_for(3));
  BOOST_REQUIRE(temp.wait_for(2));
  BOOST_REQUIRE(exact.wait_for(1));
  BOOST_TEST(exact.messages()[0].payload() == "1");
  BOOST_TEST(exact.messages()[0].source() == "test");
  BOOST_TEST(exact.messages()[0].id() != 0u);
  BOOST_TEST(exact.messages()[0].timestamp_ns() > 0);
  auto st = k.status();
  BOOST_TEST(st.bus_published() == 4u);
  BOOST_TEST(st.bus_unrouted() == 1u);
  BOOST_TEST(st.subscriptions() == 3u);
}

BOOST_AUTO_TEST_CASE(rejects_bad_topics) {
  Envelope e;
  e.set_topic("a/+");
  auto r = k.publish(e);
  BOOST_REQUIRE(!r);
  BOOST_TEST(r.error() == errc::invalid_topic);
  auto s = k.subscribe("a/#/b", [](const Envelope&) {});
  BOOST_REQUIRE(!s);
  BOOST_TEST(s.error() == errc::invalid_topic);
}

BOOST_AUTO_TEST_CASE(dollar_topics_need_explicit_filters) {
  test::collector all{k, "#"};
  test::collector aws{k, "$aws/#"};
  test::pub(k, "$aws/things/t/shadow/get", "x");
  test::pub(k, "plain", "y");
  BOOST_REQUIRE(aws.wait_for(1));
  BOOST_REQUIRE(all.wait_for(1));
  BOOST_TEST(all.messages()[0].topic() == "plain");
  BOOST_TEST(aws.messages()[0].topic() == "$aws/things/t/shadow/get");
}

BOOST_AUTO_TEST_CASE(in_order_per_publisher_with_fan_out) {
  // tsan_report_cost_test.sh bounds TSan reports by these 40,000 messages.
  constexpr int n = 20000;
  constexpr int publishers = 2;
  std::vector<std::unique_ptr<test::collector>> subs;
  for (int i = 0; i < 4; ++i)
    subs.push_back(std::make_unique<test::collector>(k, "order/#"));
  std::vector<std::thread> threads;
  for (int p = 0; p < publishers; ++p)
    threads.emplace_back([this, p] {
      for (int i = 0; i < n; ++i)
        test::pub(k, "order/" + std::to_string(p), std::to_string(i));
    });
  for (auto& t : threads)
    t.join();
  for (auto& s : subs) {
    // The count tells a slow delivery (under a sanitizer) from a lost one.
    BOOST_REQUIRE_MESSAGE(s->wait_for(n * publishers),
                          "received " << s->size() << " of " << n * publishers
                                      << "; bus dropped " << k.status().bus_dropped());
    std::vector<int> next(publishers, 0);
    for (auto& m : s->messages()) {
      auto p = std::stoi(m.topic().substr(6));
      BOOST_REQUIRE_EQUAL(std::stoi(m.payload()), next[p]);
      ++next[p];
    }
  }
}

BOOST_AUTO_TEST_CASE(drop_policy_bounds_a_slow_consumer) {
  // The consumer blocks on its first message until released, so the queue fills.
  std::promise<void> release;
  auto released = release.get_future().share();
  std::mutex mtx;
  std::condition_variable cv;
  uint32_t handled = 0;
  queue_settings q;
  q.capacity = 100;
  q.overflow = overflow_policy::drop;
  auto h = k.subscribe(
    "slow",
    [&](const Envelope&) {
      released.wait();
      std::lock_guard guard{mtx};
      ++handled;
      cv.notify_all();
    },
    q);
  BOOST_REQUIRE(h);
  uint32_t delivered = 0;
  uint32_t dropped = 0;
  for (int i = 0; i < 1000; ++i) {
    auto r = test::pub(k, "slow", "x");
    delivered += r.delivered;
    dropped += r.dropped;
  }
  // The queue never held more than its capacity; the rest was counted as dropped.
  BOOST_TEST(delivered == 100u);
  BOOST_TEST(dropped == 900u);
  auto st = k.status();
  BOOST_TEST(st.bus_dropped() == 900u);
  release.set_value();
  // Everything accepted is handled: nothing accepted is lost.
  std::unique_lock guard{mtx};
  BOOST_TEST(cv.wait_for(guard, std::chrono::seconds{20}, [&] { return handled == delivered; }));
}

BOOST_AUTO_TEST_CASE(block_policy_waits_for_credit) {
  std::atomic<int> handled{0};
  queue_settings q;
  q.capacity = 8;
  q.overflow = overflow_policy::block;
  q.block_timeout = std::chrono::seconds{30};
  auto h = k.subscribe(
    "credit",
    [&](const Envelope&) {
      std::this_thread::yield();
      ++handled;
    },
    q);
  BOOST_REQUIRE(h);
  uint32_t dropped = 0;
  for (int i = 0; i < 5000; ++i)
    dropped += test::pub(k, "credit", "x").dropped;
  BOOST_TEST(dropped == 0u);
  test::collector done{k, "credit"};
  test::pub(k, "credit", "last");
  BOOST_REQUIRE(done.wait_for(1));
}

BOOST_AUTO_TEST_CASE(block_policy_gives_up_after_timeout) {
  std::promise<void> release;
  auto released = release.get_future().share();
  queue_settings q;
  q.capacity = 1;
  q.overflow = overflow_policy::block;
  q.block_timeout = std::chrono::milliseconds{20};
  auto h = k.subscribe("stuck", [&](const Envelope&) { released.wait(); }, q);
  BOOST_REQUIRE(h);
  uint32_t dropped = 0;
  for (int i = 0; i < 4; ++i)
    dropped += test::pub(k, "stuck", "x").dropped;
  // One in flight, one queued at most; the others waited, timed out and were counted.
  BOOST_TEST(dropped >= 2u);
  release.set_value();
}

BOOST_AUTO_TEST_CASE(unsubscribe_on_handle_release) {
  {
    test::collector c{k, "gone/#"};
    BOOST_TEST(test::pub(k, "gone/x", "1").delivered == 1u);
    BOOST_REQUIRE(c.wait_for(1));
  }
  BOOST_TEST(test::pub(k, "gone/x", "2").delivered == 0u);
  BOOST_TEST(k.status().subscriptions() == 0u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(caf_workers_run_with_the_configured_timer_slack) {
  // Each thread's slack: a value no thread has by default marks the workers (two here),
  // and the thread that started the kernel keeps its own.
  auto slack_of = [](const std::string& tid) {
    std::ifstream f{"/proc/" + tid + "/timerslack_ns"};
    uint64_t v = 0;
    f >> v;
    return v;
  };
  auto own = slack_of(std::to_string(::gettid()));
  test::temp_dir dir;
  auto profile = test::make_profile(dir.path());
  profile.worker_timer_slack_ns = 12345;
  kernel k{profile, kernel_options{false, false}};
  BOOST_REQUIRE(!k.start());
  size_t marked = 0;
  for (const auto& t : std::filesystem::directory_iterator{"/proc/self/task"})
    if (slack_of(t.path().filename().string()) == 12345u)
      ++marked;
  BOOST_TEST(marked >= 2u);
  BOOST_TEST(slack_of(std::to_string(::gettid())) == own);
}
