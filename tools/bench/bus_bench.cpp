// bus_bench: throughput and latency of the Grove bus (64-byte payloads, 1 -> 1 and
// 1 -> 8 fan-out) against a bare CAF actor-to-actor send of the same payload, in one
// process and one run. Prints one JSON object on stdout. Not a test: it reports figures
// and never fails on them.
//
// Usage: bus_bench [--messages N] [--repeat R] [--paced-messages N] [--paced-rate R]
//                  [--capacity C] [--fanout F] [--threads T] [--idle-polls P]
//                  [--only grove|caf]

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/make_message.hpp>
#include <caf/send.hpp>
#include <nlohmann/json.hpp>

#include "bench_kernel.hpp"
#include "grove/errors.hpp"
#include "grove/kernel/kernel.hpp"

namespace {

using json = nlohmann::ordered_json;

constexpr size_t payload_bytes = 64;

/// Steady-clock nanoseconds; the send time every payload carries.
int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

/// A 64-byte payload whose first 8 bytes carry the steady-clock send time.
std::string make_payload(int64_t sent) {
  std::string result(payload_bytes, 'p');
  std::memcpy(result.data(), &sent, sizeof(sent));
  return result;
}

/// Reads the send time back out of a payload.
int64_t sent_at(std::string_view payload) noexcept {
  int64_t result = 0;
  if (payload.size() >= sizeof(result))
    std::memcpy(&result, payload.data(), sizeof(result));
  return result;
}

// -- command line ---------------------------------------------------------------

struct options {
  uint64_t messages = 2'000'000;
  uint32_t repeat = 3;
  uint64_t paced_messages = 200'000;
  uint64_t paced_rate = 100'000;
  uint32_t capacity = 10'000;
  size_t fanout = 8;
  uint32_t threads = 0;
  /// kernel.idle_poll_attempts (-1: the kernel's default).
  int64_t idle_polls = -1;
  /// "all", "grove" or "caf": which side to run (one side only is for profiling).
  std::string only = "all";
};

[[noreturn]] void usage(const char* argv0, int rc) {
  std::fprintf(rc == 0 ? stdout : stderr,
               "usage: %s [--messages N] [--repeat R] [--paced-messages N]\n"
               "          [--paced-rate MSGS_PER_S] [--capacity C] [--fanout F]\n"
               "          [--threads T (CAF workers, 0 = CAF's default)]\n"
               "          [--idle-polls P (kernel.idle_poll_attempts, default the kernel's)]\n"
               "          [--only grove|caf (one side, for profiling)]\n",
               argv0);
  std::exit(rc);
}

options parse_options(int argc, char** argv) {
  options opt;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help")
      usage(argv[0], 0);
    if (i + 1 >= argc)
      usage(argv[0], 2);
    if (arg == "--only") {
      opt.only = argv[++i];
      if (opt.only != "grove" && opt.only != "caf" && opt.only != "all")
        usage(argv[0], 2);
      continue;
    }
    char* end = nullptr;
    auto value = std::strtoull(argv[++i], &end, 10);
    if (arg == "--idle-polls" && end != nullptr && *end == '\0') {
      opt.idle_polls = static_cast<int64_t>(value);
      continue;
    }
    if (end == nullptr || *end != '\0' || value == 0)
      usage(argv[0], 2);
    if (arg == "--messages")
      opt.messages = value;
    else if (arg == "--repeat")
      opt.repeat = static_cast<uint32_t>(value);
    else if (arg == "--paced-messages")
      opt.paced_messages = value;
    else if (arg == "--paced-rate")
      opt.paced_rate = value;
    else if (arg == "--capacity")
      opt.capacity = static_cast<uint32_t>(value);
    else if (arg == "--fanout")
      opt.fanout = static_cast<size_t>(value);
    else if (arg == "--threads")
      opt.threads = static_cast<uint32_t>(value);
    else
      usage(argv[0], 2);
  }
  return opt;
}

// -- receiving side ---------------------------------------------------------------

/// What one receiver saw. Written only by the receiving actor (CAF runs it one message
/// at a time), read by the main thread once `wait` returned true.
class probe {
public:
  /// Expects `expected` messages and keeps the latency of every `stride`-th one.
  probe(uint64_t expected, uint64_t stride) : expected_(expected), stride_(stride) {
    samples_.reserve(expected / stride + 1);
  }

  /// Handles one received payload.
  void on_payload(std::string_view payload) {
    auto now = now_ns();
    auto n = received_.load(std::memory_order_relaxed);
    if (n % stride_ == 0)
      samples_.push_back(now - sent_at(payload));
    received_.store(n + 1, std::memory_order_relaxed);
    if (n + 1 == expected_) {
      std::lock_guard guard{mtx_};
      last_ns_ = now;
      done_ = true;
      cv_.notify_all();
    }
  }

  /// Waits until every expected message arrived; false on timeout.
  bool wait(std::chrono::seconds timeout) {
    std::unique_lock guard{mtx_};
    return cv_.wait_for(guard, timeout, [this] { return done_; });
  }

  uint64_t received() const noexcept {
    return received_.load(std::memory_order_relaxed);
  }

  /// Steady-clock time of the last expected message.
  int64_t last_ns() const noexcept {
    return last_ns_;
  }

  const std::vector<int64_t>& samples() const noexcept {
    return samples_;
  }

private:
  uint64_t expected_;
  uint64_t stride_;
  std::atomic<uint64_t> received_{0};
  std::vector<int64_t> samples_;
  std::mutex mtx_;
  std::condition_variable cv_;
  bool done_ = false;
  int64_t last_ns_ = 0;
};

/// Bounded in-flight counter for the bare CAF receivers. CAF mailboxes are unbounded:
/// without a bound the publisher would run ahead, fill memory and measure malloc rather
/// than delivery. The Grove bus bounds each subscriber (capacity, overflow block), so
/// the CAF side gets the same capacity and a copy of grove::endpoint::offer's wait: take
/// credit first, then yield, then sleep with doubling back-off. Both sides thus pay the
/// same for waiting and differ only in what a send costs.
class credit {
public:
  explicit credit(int64_t capacity) : capacity_(capacity) {
  }

  /// Takes one unit of credit, waiting while the receiver is full.
  void acquire() {
    if (queued_.fetch_add(1, std::memory_order_acq_rel) < capacity_)
      return;
    queued_.fetch_sub(1, std::memory_order_acq_rel);
    auto pause = std::chrono::microseconds{1};
    for (;;) {
      if (queued_.load(std::memory_order_acquire) < capacity_) {
        if (queued_.fetch_add(1, std::memory_order_acq_rel) < capacity_)
          return;
        queued_.fetch_sub(1, std::memory_order_acq_rel);
      }
      if (pause.count() < 8)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds{500});
    }
  }

  /// Gives one unit back after handling a message.
  void release() noexcept {
    queued_.fetch_sub(1, std::memory_order_acq_rel);
  }

private:
  int64_t capacity_;
  std::atomic<int64_t> queued_{0};
};

/// The bare CAF receiver: the same work as the Grove sink (probe, then credit back).
caf::behavior counting_actor(caf::event_based_actor*, probe* p, credit* c) {
  return {
    [=](const std::string& payload) {
      p->on_payload(payload);
      c->release();
    },
  };
}

// -- one run ----------------------------------------------------------------------

/// Figures of one run of one variant.
struct run_result {
  uint64_t published = 0;
  uint64_t delivered = 0;
  uint64_t dropped = 0;
  double seconds = 0;
  double msgs_per_s = 0;
  double deliveries_per_s = 0;
  double p50_us = 0;
  double p99_us = 0;
  double max_us = 0;
  std::string error;
};

/// Latency percentile `q` (0..1) of `xs` in microseconds; reorders `xs`.
double percentile_us(std::vector<int64_t>& xs, double q) {
  if (xs.empty())
    return 0;
  auto k = static_cast<size_t>(q * static_cast<double>(xs.size() - 1));
  std::nth_element(xs.begin(), xs.begin() + static_cast<std::ptrdiff_t>(k), xs.end());
  return static_cast<double>(xs[k]) / 1000.0;
}

/// Keeps at most ~2M latency samples per run, spread over the receivers.
uint64_t sample_stride(uint64_t n, size_t receivers) {
  return std::max<uint64_t>(1, (n * receivers + 1'999'999) / 2'000'000);
}

/// Publishes `n` payloads from a fresh thread via `send` (which returns how many
/// receivers dropped it), paced to `rate` msgs/s if non-zero, then collects `probes`.
template <class Send>
run_result drive(std::vector<std::unique_ptr<probe>>& probes, uint64_t n, uint64_t rate,
                 Send send) {
  run_result r;
  int64_t start = 0;
  std::thread publisher{[&] {
    const double gap_ns = rate > 0 ? 1e9 / static_cast<double>(rate) : 0.0;
    start = now_ns();
    for (uint64_t i = 0; i < n; ++i) {
      if (rate > 0) {
        // Yield-spin: sleeps are too coarse for 10 us gaps, and yielding lets the
        // CAF workers share the two cores.
        auto due = start + static_cast<int64_t>(gap_ns * static_cast<double>(i));
        while (now_ns() < due)
          std::this_thread::yield();
      }
      r.dropped += send(make_payload(now_ns()));
    }
  }};
  publisher.join();
  r.published = n;
  int64_t last = start;
  auto timeout = std::chrono::seconds{30 + n / 50'000};
  for (auto& p : probes) {
    if (r.dropped == 0 && !p->wait(timeout) && r.error.empty())
      r.error = "timeout: a receiver got " + std::to_string(p->received()) + " of "
                + std::to_string(n) + " messages";
    r.delivered += p->received();
    last = std::max(last, p->last_ns());
  }
  if (r.dropped > 0 && r.error.empty())
    r.error = std::to_string(r.dropped) + " deliveries dropped";
  if (r.error.empty() && r.delivered != n * probes.size())
    r.error = "delivered " + std::to_string(r.delivered) + ", expected "
              + std::to_string(n * probes.size());
  r.seconds = static_cast<double>(last - start) / 1e9;
  if (r.seconds > 0) {
    r.msgs_per_s = static_cast<double>(n) / r.seconds;
    r.deliveries_per_s = static_cast<double>(r.delivered) / r.seconds;
  }
  std::vector<int64_t> all;
  for (auto& p : probes)
    all.insert(all.end(), p->samples().begin(), p->samples().end());
  r.p50_us = percentile_us(all, 0.50);
  r.p99_us = percentile_us(all, 0.99);
  r.max_us = percentile_us(all, 1.0);
  return r;
}

/// The Grove bus: `fanout` subscribers via kernel::subscribe (overflow block, so
/// nothing is dropped), one publisher using kernel::publish as a control client or a
/// plugin's context::publish would (topic, source, content type, payload).
run_result run_grove(grove::kernel& k, const options& opt, size_t fanout, uint64_t n,
                     uint64_t rate) {
  static int run_id = 0;
  auto topic = "bench/bus/grove" + std::to_string(++run_id);
  grove::queue_settings q;
  q.capacity = opt.capacity;
  q.overflow = grove::overflow_policy::block;
  // Long enough that a descheduled subscriber never turns into a drop.
  q.block_timeout = std::chrono::seconds{60};
  std::vector<std::unique_ptr<probe>> probes;
  std::vector<std::shared_ptr<void>> subs;
  for (size_t i = 0; i < fanout; ++i) {
    auto p = std::make_unique<probe>(n, sample_stride(n, fanout));
    auto h = k.subscribe(
      topic, [raw = p.get()](const grove::Envelope& msg) { raw->on_payload(msg.payload()); },
      q);
    if (!h) {
      run_result r;
      r.error = "subscribe failed: " + grove::describe(h.error());
      return r;
    }
    subs.push_back(std::move(*h));
    probes.push_back(std::move(p));
  }
  auto r = drive(probes, n, rate, [&](std::string payload) -> uint64_t {
    grove::Envelope env;
    env.set_topic(topic);
    env.set_source("bus_bench");
    env.set_payload(std::move(payload));
    auto res = k.publish(std::move(env));
    return res ? res->dropped : fanout;
  });
  subs.clear(); // unsubscribes and stops the sink actors
  return r;
}

/// Bare CAF: `fanout` event-based actors in the kernel's actor system (same workers),
/// fed by anon_send from the same kind of publisher thread.
run_result run_caf(caf::actor_system& sys, const options& opt, size_t fanout, uint64_t n,
                   uint64_t rate) {
  std::vector<std::unique_ptr<probe>> probes;
  std::vector<std::unique_ptr<credit>> credits;
  std::vector<caf::actor> actors;
  for (size_t i = 0; i < fanout; ++i) {
    probes.push_back(std::make_unique<probe>(n, sample_stride(n, fanout)));
    credits.push_back(std::make_unique<credit>(opt.capacity));
    actors.push_back(sys.spawn(counting_actor, probes.back().get(), credits.back().get()));
  }
  run_result r;
  if (fanout == 1) {
    // The idiomatic bare send: the string moves into the mailbox element.
    r = drive(probes, n, rate, [&](std::string payload) -> uint64_t {
      credits[0]->acquire();
      caf::anon_send(actors[0], std::move(payload));
      return 0;
    });
  } else {
    // One reference-counted message shared by all receivers, as the bus does; copying
    // the string per receiver would handicap CAF.
    r = drive(probes, n, rate, [&](std::string payload) -> uint64_t {
      auto msg = caf::make_message(std::move(payload));
      for (size_t i = 0; i < fanout; ++i) {
        credits[i]->acquire();
        caf::anon_send(actors[i], msg);
      }
      return 0;
    });
  }
  for (auto& a : actors)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  return r;
}

// -- reporting ----------------------------------------------------------------------

double median(std::vector<double> xs) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto m = xs.size() / 2;
  return xs.size() % 2 == 1 ? xs[m] : (xs[m - 1] + xs[m]) / 2;
}

double round2(double x) {
  return static_cast<double>(static_cast<int64_t>(x * 100.0 + 0.5)) / 100.0;
}

/// Runs of one variant, summarised: median (headline) and best of the repeats.
struct variant {
  std::string name;
  std::vector<run_result> runs;

  double median_rate() const {
    std::vector<double> xs;
    for (auto& r : runs)
      xs.push_back(r.msgs_per_s);
    return median(xs);
  }

  json to_json() const {
    std::vector<double> rates, deliveries, p50, p99, maxes;
    uint64_t dropped = 0;
    uint64_t delivered = 0;
    std::vector<std::string> errors;
    for (auto& r : runs) {
      rates.push_back(r.msgs_per_s);
      deliveries.push_back(r.deliveries_per_s);
      p50.push_back(r.p50_us);
      p99.push_back(r.p99_us);
      maxes.push_back(r.max_us);
      dropped += r.dropped;
      delivered += r.delivered;
      if (!r.error.empty())
        errors.push_back(r.error);
    }
    json j;
    j["msgs_per_s"] = std::llround(median(rates));
    j["msgs_per_s_best"] = std::llround(*std::max_element(rates.begin(), rates.end()));
    j["deliveries_per_s"] = std::llround(median(deliveries));
    j["p50_us"] = round2(median(p50));
    j["p99_us"] = round2(median(p99));
    j["max_us"] = round2(median(maxes));
    j["delivered"] = delivered;
    j["dropped"] = dropped;
    json all = json::array();
    for (auto x : rates)
      all.push_back(std::llround(x));
    j["runs_msgs_per_s"] = std::move(all);
    if (!errors.empty())
      j["error"] = errors.front();
    return j;
  }
};

} // namespace

int main(int argc, char** argv) {
  auto opt = parse_options(argc, argv);
  // An in-process kernel without plugins, control socket or logging; only its bus and
  // actor system are used.
  auto dir = std::filesystem::temp_directory_path()
             / ("grove-bus-bench-" + std::to_string(getpid()));
  auto profile = grove::bench::bench_profile(dir);
  profile.worker_threads = opt.threads;
  if (opt.idle_polls >= 0)
    profile.idle_poll_attempts = static_cast<uint32_t>(opt.idle_polls);
  json out;
  {
    grove::kernel k{profile, grove::kernel_options{false, false}};
    if (auto err = k.start()) {
      std::cout << json{{"benchmark", "bus"}, {"error", grove::describe(err)}}.dump() << '\n';
      return 1;
    }
    variant grove_1to1{"grove_1to1", {}}, grove_paced{"grove_1to1_paced", {}},
      caf_1to1{"caf_1to1", {}}, caf_paced{"caf_1to1_paced", {}},
      grove_fan{"grove_1to" + std::to_string(opt.fanout), {}},
      caf_fan{"caf_1to" + std::to_string(opt.fanout), {}};
    // Interleaved so drift (thermal, noisy neighbours) hits both sides alike.
    const bool with_grove = opt.only != "caf";
    const bool with_caf = opt.only != "grove";
    for (uint32_t i = 0; i < opt.repeat; ++i) {
      if (with_grove)
        grove_1to1.runs.push_back(run_grove(k, opt, 1, opt.messages, 0));
      if (with_caf)
        caf_1to1.runs.push_back(run_caf(k.system(), opt, 1, opt.messages, 0));
      if (with_grove)
        grove_fan.runs.push_back(run_grove(k, opt, opt.fanout, opt.messages, 0));
      if (with_caf)
        caf_fan.runs.push_back(run_caf(k.system(), opt, opt.fanout, opt.messages, 0));
      if (with_grove)
        grove_paced.runs.push_back(
          run_grove(k, opt, 1, opt.paced_messages, opt.paced_rate));
      if (with_caf)
        caf_paced.runs.push_back(
          run_caf(k.system(), opt, 1, opt.paced_messages, opt.paced_rate));
    }
    auto ratio = [](const variant& g, const variant& c) {
      auto x = c.median_rate();
      return x > 0 ? round2(g.median_rate() / x) : 0.0;
    };
    const double target_rate = 1'000'000;
    const double ratio_min = 0.4;
    out["benchmark"] = "bus";
    out["payload_bytes"] = payload_bytes;
    out["messages"] = opt.messages;
    out["repeat"] = opt.repeat;
    out["capacity"] = opt.capacity;
    out["caf_workers"] = k.system().scheduler().num_workers();
    out["idle_poll_attempts"] = profile.idle_poll_attempts;
    out["hardware_threads"] = std::thread::hardware_concurrency();
    out["note"] = "msgs_per_s and latencies are medians of the repeats; throughput runs "
                  "keep queues full, so their latency is mostly queueing delay; *_paced "
                  "runs publish at paced_rate and show per-message latency";
    out["paced_rate"] = opt.paced_rate;
    out["paced_messages"] = opt.paced_messages;
    for (auto* v : {&grove_1to1, &grove_paced, &caf_1to1, &caf_paced, &grove_fan, &caf_fan})
      if (!v->runs.empty())
        out[v->name] = v->to_json();
    auto r11 = ratio(grove_1to1, caf_1to1);
    auto r18 = ratio(grove_fan, caf_fan);
    out["ratio_1to1"] = r11;
    out["ratio_1to" + std::to_string(opt.fanout)] = r18;
    out["targets"] = {{"grove_1to1_msgs_per_s", target_rate}, {"ratio_min", ratio_min}};
    bool clean = true;
    for (auto* v : {&grove_1to1, &grove_paced, &caf_1to1, &caf_paced, &grove_fan, &caf_fan})
      for (auto& r : v->runs)
        clean = clean && r.error.empty();
    out["meets_targets"] = clean && grove_1to1.median_rate() >= target_rate
                           && r11 >= ratio_min && r18 >= ratio_min;
    k.stop();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::cout << out.dump() << std::endl;
  return 0;
}
