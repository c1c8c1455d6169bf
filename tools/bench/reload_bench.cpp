// reload_bench: the pause a subscriber sees while a plugin is hot-reloaded under load.
//
// A publisher streams numbered 64-byte messages at full speed through the test plugin
// "relay" (overflow: block, so nothing may be dropped) to a subscriber that stamps
// each arrival. Meanwhile the plugin is reloaded R times, alternating two builds. For
// each reload the benchmark reports the longest gap between consecutive arrivals
// inside the reload's time window; as a peer it reports the longest gap in an equal
// window with no reload (the stream's own jitter). Prints one JSON object.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "grove/errors.hpp"
#include "grove/kernel/kernel.hpp"

using namespace std::chrono;

namespace {

using clock_type = steady_clock;

struct arrivals {
  std::mutex mtx;
  std::vector<clock_type::time_point> at;
  std::vector<uint64_t> seq;
};

double longest_gap_us(const arrivals& a, clock_type::time_point from,
                      clock_type::time_point to) {
  auto lo = std::lower_bound(a.at.begin(), a.at.end(), from);
  auto hi = std::upper_bound(a.at.begin(), a.at.end(), to);
  // Include the last arrival before the window and the first after it.
  if (lo != a.at.begin())
    --lo;
  if (hi != a.at.end())
    ++hi;
  double worst = 0;
  for (auto i = lo; i + 1 < hi; ++i)
    worst = std::max(worst, duration<double, std::micro>(*(i + 1) - *i).count());
  return worst;
}

double percentile(std::vector<double> xs, double p) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  return xs[static_cast<size_t>(p * (xs.size() - 1))];
}

} // namespace

int main(int argc, char** argv) {
  int reloads = argc > 1 ? std::atoi(argv[1]) : 20;
  auto tmp = std::filesystem::temp_directory_path() / "grove-reload-bench";
  std::filesystem::remove_all(tmp);
  grove::image_profile p;
  p.file = tmp / "none.yaml";
  p.write_dir = tmp;
  p.plugin_dir = RELAY_DIR;
  p.control_socket = tmp / "c.sock";
  p.log_level = "warn";
  grove::kernel k{std::move(p), grove::kernel_options{false, false}};
  if (auto err = k.start()) {
    std::cerr << grove::describe(err) << '\n';
    return 1;
  }
  grove::plugin_spec spec;
  spec.name = "relay";
  spec.config = grove::make_yaml(YAML::Load("{}"));
  spec.queue.overflow = grove::overflow_policy::block;
  spec.queue.capacity = 1000;
  if (auto err = k.host().load(spec)) {
    std::cerr << grove::describe(err) << '\n';
    return 1;
  }
  arrivals got;
  got.at.reserve(20'000'000);
  got.seq.reserve(20'000'000);
  grove::queue_settings q;
  q.overflow = grove::overflow_policy::block;
  auto sub = k.subscribe(
    "test/echo/out",
    [&](const grove::Envelope& m) {
      std::lock_guard guard{got.mtx};
      got.at.push_back(clock_type::now());
      got.seq.push_back(std::stoull(m.payload().substr(0, m.payload().find(' '))));
    },
    q);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> dropped{0};
  std::thread publisher{[&] {
    std::string pad(48, 'x');
    for (uint64_t i = 0; !stop; ++i) {
      grove::Envelope e;
      e.set_topic("test/echo/in");
      auto text = std::to_string(i) + " ";
      e.set_payload(text + pad.substr(0, 64 - text.size()));
      auto r = k.publish(std::move(e));
      dropped += r ? r->dropped : 1;
      sent = i + 1;
    }
  }};
  std::this_thread::sleep_for(milliseconds{200}); // warm up
  std::vector<std::pair<clock_type::time_point, clock_type::time_point>> windows;
  std::vector<std::pair<clock_type::time_point, clock_type::time_point>> quiet;
  int failed = 0;
  for (int i = 0; i < reloads; ++i) {
    auto path = std::string{RELAY_DIR} + (i % 2 == 0 ? "/librelay_v2.so" : "/librelay.so");
    auto begin = clock_type::now();
    auto r = k.reload("relay", path);
    auto end = clock_type::now();
    failed += r ? 0 : 1;
    windows.emplace_back(begin, end);
    // An equally long window without a reload, as the stream's own baseline.
    std::this_thread::sleep_for(milliseconds{20});
    auto qb = clock_type::now();
    std::this_thread::sleep_for(end - begin);
    quiet.emplace_back(qb, clock_type::now());
    std::this_thread::sleep_for(milliseconds{20});
  }
  stop = true;
  publisher.join();
  // Wait (bounded) for the stream to drain.
  for (int i = 0; i < 1000; ++i) {
    {
      std::lock_guard guard{got.mtx};
      if (got.seq.size() >= sent)
        break;
    }
    std::this_thread::sleep_for(milliseconds{10});
  }
  std::lock_guard guard{got.mtx};
  uint64_t out_of_order = 0;
  for (size_t i = 0; i < got.seq.size(); ++i)
    out_of_order += got.seq[i] != i;
  std::vector<double> gaps;
  std::vector<double> quiet_gaps;
  std::vector<double> durations;
  for (auto& [b, e] : windows) {
    gaps.push_back(longest_gap_us(got, b, e));
    durations.push_back(duration<double, std::micro>(e - b).count());
  }
  for (auto& [b, e] : quiet)
    quiet_gaps.push_back(longest_gap_us(got, b, e));
  nlohmann::json out{
    {"benchmark", "reload_pause"},
    {"reloads", reloads},
    {"failed_reloads", failed},
    {"messages_sent", sent.load()},
    {"messages_received", got.seq.size()},
    {"lost", sent.load() - got.seq.size()},
    {"dropped", dropped.load()},
    {"out_of_order", out_of_order},
    {"pause_p50_us", percentile(gaps, 0.5)},
    {"pause_max_us", percentile(gaps, 1.0)},
    {"reload_call_p50_us", percentile(durations, 0.5)},
    {"quiet_window_gap_p50_us", percentile(quiet_gaps, 0.5)},
    {"target_pause_p50_us", 5000},
    {"meets_target", failed == 0 && sent.load() == got.seq.size()
                       && percentile(gaps, 0.5) <= 5000},
  };
  std::cout << out.dump() << std::endl;
  sub->reset();
  k.stop();
  std::filesystem::remove_all(tmp);
  return 0;
}
