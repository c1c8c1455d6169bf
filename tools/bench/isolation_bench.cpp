// isolation_bench: throughput of a plugin in its own process against the same plugin
// in process, same run. A publisher sends N 64-byte messages through the test plugin
// "echo" (it republishes each one); a subscriber counts what comes out. Both queues
// block rather than drop, so every message must arrive. Prints one JSON object.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <iostream>
#include <mutex>

#include <nlohmann/json.hpp>

#include "grove/errors.hpp"
#include "grove/kernel/kernel.hpp"

using namespace std::chrono;

namespace {

struct run_result {
  double msgs_per_s = 0;
  uint64_t received = 0;
  std::string error;
};

run_result run(grove::kernel& k, const std::string& isolation, uint64_t n) {
  run_result res;
  grove::plugin_spec spec;
  spec.name = "echo";
  spec.config = grove::make_yaml(YAML::Load("{}"));
  spec.isolation = isolation;
  spec.queue.overflow = grove::overflow_policy::block;
  spec.queue.capacity = 10000;
  spec.queue.block_timeout = seconds{60};
  if (auto err = k.host().load(spec)) {
    res.error = grove::describe(err);
    return res;
  }
  std::mutex mtx;
  std::condition_variable cv;
  uint64_t got = 0;
  grove::queue_settings q;
  q.overflow = grove::overflow_policy::block;
  q.block_timeout = seconds{60};
  auto sub = k.subscribe(
    "test/echo/out",
    [&](const grove::Envelope&) {
      std::lock_guard guard{mtx};
      if (++got == n)
        cv.notify_all();
    },
    q);
  std::string payload(64, 'x');
  auto t0 = steady_clock::now();
  for (uint64_t i = 0; i < n; ++i) {
    grove::Envelope e;
    e.set_topic("test/echo/in");
    e.set_payload(payload);
    k.publish(std::move(e));
  }
  {
    std::unique_lock guard{mtx};
    cv.wait_for(guard, seconds{120}, [&] { return got >= n; });
    res.received = got;
  }
  auto secs = duration<double>(steady_clock::now() - t0).count();
  res.msgs_per_s = res.received / secs;
  if (res.received != n)
    res.error = "lost messages";
  sub->reset();
  k.unload("echo");
  return res;
}

} // namespace

int main(int argc, char** argv) {
  uint64_t n = argc > 1 ? std::stoull(argv[1]) : 500000;
  int repeat = argc > 2 ? std::atoi(argv[2]) : 3;
  auto tmp = std::filesystem::temp_directory_path() / "grove-isolation-bench";
  std::filesystem::remove_all(tmp);
  grove::image_profile p;
  p.file = tmp / "none.yaml";
  p.write_dir = tmp;
  p.plugin_dir = TEST_PLUGIN_DIR;
  p.control_socket = tmp / "c.sock";
  p.log_level = "warn";
  grove::kernel_options opts{false, false};
  opts.plugin_host_exe = GROVED_PATH;
  grove::kernel k{std::move(p), opts};
  if (auto err = k.start()) {
    std::cerr << grove::describe(err) << '\n';
    return 1;
  }
  nlohmann::json runs = nlohmann::json::array();
  double best_in = 0, best_iso = 0;
  std::string error;
  // Interleaved, best of `repeat`, so machine noise hits both alike.
  for (int i = 0; i < repeat; ++i) {
    for (std::string iso : {"in_process", "process"}) {
      auto r = run(k, iso, n);
      if (!r.error.empty())
        error = iso + ": " + r.error;
      runs.push_back({{"isolation", iso}, {"msgs_per_s", r.msgs_per_s},
                      {"received", r.received}});
      auto& best = iso == "process" ? best_iso : best_in;
      best = std::max(best, r.msgs_per_s);
    }
  }
  auto ratio = best_in > 0 ? best_iso / best_in : 0;
  nlohmann::json out{{"benchmark", "isolation"},
                     {"payload_bytes", 64},
                     {"messages", n},
                     {"in_process_msgs_per_s", best_in},
                     {"process_msgs_per_s", best_iso},
                     {"ratio", ratio},
                     {"targets", {{"ratio_min", 0.3}, {"process_msgs_per_s", 200000}}},
                     {"meets_targets", error.empty() && ratio >= 0.3 && best_iso >= 200000},
                     {"runs", runs}};
  if (!error.empty())
    out["error"] = error;
  std::cout << out.dump() << std::endl;
  k.stop();
  std::filesystem::remove_all(tmp);
  return 0;
}
