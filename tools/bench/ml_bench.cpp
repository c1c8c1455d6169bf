// ml_bench: inference through the bus (ml_inference in a real in-process kernel, the typed
// client's request, reply decoded) against the plugin's OpenCV DNN backend called directly
// in the same process, same model, same input, for a small MLP, two small CNNs and a MobileNet-like classifier
// (the models of plugins/ml_inference/tests/make_models.py). Reports batch-1 latency and
// the overhead (ratio and microseconds), the throughput gain of dynamic batching at
// concurrency 1, 8 and 32 (the same CNN served twice: maxBatchSize 1 and 32), and the
// resident memory per loaded model. Prints one JSON object. Not a test: it reports
// figures and never fails on them.
//
// Usage: ml_bench [REQUESTS] [SECONDS_PER_CONCURRENCY] [IDLE_POLL_ATTEMPTS]
// (SECONDS 0: no batching figures; IDLE_POLL_ATTEMPTS: the kernel's, default the shipped
// images' 20).

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <time.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>

#include "backend.hpp"
#include "bench_models.hpp"
#include "bench_stats.hpp"
#include "grove/kernel/kernel.hpp"
#include "grove/ml_inference/client.hpp"
#include "grove/testing/harness.hpp"

namespace {

namespace fs = std::filesystem;
namespace gml = grove::ml_inference;
using json = nlohmann::ordered_json;
using grove::bench::clock_type;
using grove::bench::latency;
using grove::bench::model_resource;
using grove::bench::pct;
using grove::bench::round2;
using grove::bench::us_since;

/// CPU time of the whole process (every thread: the kernel's, the plugin's workers,
/// OpenCV's) in microseconds.
double process_cpu_us() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

/// Resident set size in KiB.
long rss_kib() {
  std::ifstream in{"/proc/self/statm"};
  long pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}

struct model_case {
  std::string id;
  fs::path file;
  std::vector<int64_t> shape;
};

/// A thread that runs one function at a time when asked and sleeps in between, as a
/// model's worker does: the direct call plus one hand-off to a sleeping thread and back,
/// the floor of any design that runs inference off the caller's thread.
class forward_thread {
public:
  forward_thread() : thread_([this] { loop(); }) {
  }
  ~forward_thread() {
    {
      std::lock_guard g{mtx_};
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  /// Runs `f` on the thread and returns when it is done.
  void run(std::function<void()> f) {
    std::unique_lock lk{mtx_};
    job_ = std::move(f);
    wake_.notify_one();
    done_.wait(lk, [&] { return !job_; });
  }

private:
  void loop() {
    std::unique_lock lk{mtx_};
    for (;;) {
      wake_.wait(lk, [&] { return stop_ || job_; });
      if (stop_)
        return;
      lk.unlock();
      job_();
      lk.lock();
      job_ = nullptr;
      done_.notify_one();
    }
  }
  std::mutex mtx_;
  std::condition_variable wake_, done_;
  std::function<void()> job_;
  bool stop_ = false;
  std::thread thread_; // last: started once the members above exist
};

/// One call as a typed client makes it: the request envelope (content type included)
/// moved to the kernel, its tensor bytes serialized once and never copied on the way.
caf::expected<grove::ml::InferResponse> infer(grove::testing::harness& h, const std::string& id,
                                              const grove::ml::InferRequest& req) {
  return gml::infer_rpc{gml::infer_topic(id)}.call_with(
    [&](grove::Envelope e) { return h.kernel().request(std::move(e), std::chrono::seconds{30}); },
    req);
}

} // namespace

int main(int argc, char** argv) {
  int requests = argc > 1 ? std::atoi(argv[1]) : 500;
  double seconds = argc > 2 ? std::atof(argv[2]) : 3.0;
  uint32_t idle_polls = argc > 3 ? static_cast<uint32_t>(std::atoi(argv[3])) : 20;
  cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
  auto dir = fs::temp_directory_path() / ("ml_bench." + std::to_string(::getpid()));
  fs::create_directories(dir);
  if (auto err = grove::bench::make_models(ML_MAKE_MODELS, dir); !err.empty()) {
    std::cerr << "ml_bench: " << err << "\n";
    return 1;
  }
  std::vector<model_case> cases{
    {"mlp", dir / "mlp.onnx", {1, 32}},
    {"cnn", dir / "cnn.onnx", {1, 3, 32, 32}},
    {"cnn96", dir / "cnn96.onnx", {1, 3, 96, 96}},
    {"mobilenet", dir / "mobilenet.onnx", {1, 3, 128, 128}}};
  auto group_file = dir / "group.yaml";
  std::string group = "name: bench\nresources:\n";
  for (auto& c : cases)
    group += model_resource(c.id, c.file, c.shape, "        maxBatchSize: 1\n");
  group += model_resource("cnn_batched", dir / "cnn.onnx", cases[1].shape,
                          "        maxBatchSize: 32\n        maxBatchDelayUs: 1000\n");
  group += model_resource("cnn96_batched", dir / "cnn96.onnx", cases[2].shape,
                          "        maxBatchSize: 32\n        maxBatchDelayUs: 1000\n");
  std::ofstream{group_file} << group;

  long rss_before = rss_kib();
  grove::testing::harness_options o;
  o.group_file = group_file;
  o.log_level = "off";
  o.idle_poll_attempts = idle_polls;
  grove::testing::harness h{ML_PLUGIN, "{threads: 1, queue_capacity: 1000}", o};
  if (auto e = h.start()) {
    std::cerr << "ml_bench: " << grove::describe(e) << "\n";
    return 1;
  }
  json memory;
  auto wait_serving = [&](size_t n) {
    return grove::bench::wait_models_serving(
      [&](grove::Envelope e) { return h.request(e.topic(), e.payload()); }, n);
  };
  if (!wait_serving(cases.size() + 2)) {
    std::cerr << "ml_bench: the models did not load\n";
    return 1;
  }
  // Memory: 8 more copies of the 96x96 CNN (one worker each) loaded by a group change,
  // each run once (OpenCV allocates a network's buffers at its first forward).
  long rss_loaded = rss_kib(); // before any request: no buffers of runs yet
  std::string more = group;
  for (int i = 0; i < 8; ++i)
    more += model_resource("cnn96_copy" + std::to_string(i), dir / "cnn96.onnx",
                           cases[2].shape, "        maxBatchSize: 1\n");
  std::ofstream{group_file} << more;
  if (h.kernel().reload_group() || !wait_serving(cases.size() + 2 + 8)) {
    std::cerr << "ml_bench: the copies did not load\n";
    return 1;
  }
  {
    grove::ml::InferRequest req;
    gml::add_input(req, "x", {1, 3, 96, 96}, std::vector<float>(3 * 96 * 96, 0.5f));
    (void) infer(h, "cnn96", req); // the reference copy's buffers are counted before
  }
  long rss_loaded_run = rss_kib();
  for (int i = 0; i < 8; ++i) {
    grove::ml::InferRequest req;
    gml::add_input(req, "x", {1, 3, 96, 96}, std::vector<float>(3 * 96 * 96, 0.5f));
    (void) infer(h, "cnn96_copy" + std::to_string(i), req);
  }
  long rss_more = rss_kib();
  memory = {{"rss_kib_before_kernel", rss_before},
                   {"rss_kib_kernel_and_" + std::to_string(cases.size() + 2) + "_models", rss_loaded},
                   {"rss_kib_per_cnn96_model_loaded_and_run", (rss_more - rss_loaded_run) / 8},
                   {"cnn96_file_bytes", fs::file_size(dir / "cnn96.onnx")},
                   {"cnn_file_bytes", fs::file_size(dir / "cnn.onnx")},
                   {"mlp_file_bytes", fs::file_size(dir / "mlp.onnx")},
                   {"mobilenet_file_bytes", fs::file_size(dir / "mobilenet.onnx")}};
  json out;
  out["bench"] = "ml_bench";
  out["requests"] = requests;
  out["idle_poll_attempts"] = idle_polls;
  out["backend"] = std::string{"opencv-dnn "} + CV_VERSION;

  // Batch 1: the plugin's own backend (open()/run(), as a model's worker calls it) called
  // directly vs the bus, alternating blocks so drift hits both; the same direct call
  // handed to a sleeping thread (direct_on_a_thread, a latency); and an empty job handed
  // to that thread (hand_off_us_p50: one wake-up there and one back on this machine).
  json batch1 = json::object();
  auto engine = grove::ml::make_opencv_backend();
  for (auto& c : cases) {
    std::vector<int64_t> shape = c.shape;
    auto x = grove::bench::model_input(shape);
    auto bytes = grove::bench::read_file(c.file);
    auto session = engine->open(bytes, {});
    if (!session) {
      std::cerr << "ml_bench: " << c.id << ": " << grove::describe(session.error()) << "\n";
      return 1;
    }
    std::vector<grove::ml::tensor> in(1);
    in[0].name = "x";
    in[0].shape = shape;
    in[0].borrowed = std::span<const float>{x};
    grove::ml::InferRequest req;
    gml::add_input(req, "x", shape, x);
    std::vector<double> direct, handed, hand_off, bus;
    double direct_cpu = 0, bus_cpu = 0; // the process's, over the timed blocks
    bool failed = false;
    auto forward = [&] { failed |= !(*session)->run(in); };
    auto nothing = [] {};
    forward_thread worker;
    for (int i = 0; i < 20; ++i) { // warm-up
      forward();
      worker.run(forward);
      worker.run(nothing);
      (void) infer(h, c.id, req);
    }
    for (int block = 0; block < 10; ++block) {
      auto cpu0 = process_cpu_us();
      for (int i = 0; i < requests / 10; ++i) {
        auto t0 = clock_type::now();
        forward();
        direct.push_back(us_since(t0));
      }
      direct_cpu += process_cpu_us() - cpu0;
      for (int i = 0; i < requests / 10; ++i) {
        auto t0 = clock_type::now();
        worker.run(forward);
        handed.push_back(us_since(t0));
      }
      for (int i = 0; i < requests / 10; ++i) {
        auto t0 = clock_type::now();
        worker.run(nothing);
        hand_off.push_back(us_since(t0));
      }
      cpu0 = process_cpu_us();
      for (int i = 0; i < requests / 10; ++i) {
        auto t0 = clock_type::now();
        auto r = infer(h, c.id, req);
        if (!r) {
          std::cerr << "ml_bench: " << grove::describe(r.error()) << "\n";
          return 1;
        }
        bus.push_back(us_since(t0));
      }
      bus_cpu += process_cpu_us() - cpu0;
    }
    if (failed) {
      std::cerr << "ml_bench: " << c.id << ": the backend's run() failed\n";
      return 1;
    }
    double d50 = pct(direct, 0.5), b50 = pct(bus, 0.5);
    batch1[c.id] = {{"direct", latency(direct)},
                    {"bus", latency(bus)},
                    {"bus_over_direct_p50", round2(b50 / d50)},
                    {"overhead_pct_p50", round2((b50 / d50 - 1) * 100)},
                    {"overhead_us_p50", round2(b50 - d50)},
                    {"direct_on_a_thread", latency(handed)},
                    {"hand_off_us_p50", round2(pct(hand_off, 0.5))},
                    {"cpu_us_per_request", {{"direct", round2(direct_cpu / static_cast<double>(direct.size()))},
                                            {"bus", round2(bus_cpu / static_cast<double>(bus.size()))}}}};
  }
  // The plugin's own p50 (queued at the model to answered): the rest of the bus figure is
  // the request's way in and the reply's way out.
  {
    auto r = gml::models_rpc{std::string{gml::models_topic}}.call_with(
      [&](grove::Envelope e) { return h.request(e.topic(), e.payload()); },
      grove::ml::ModelsRequest{});
    if (r)
      for (const auto& m : r->models())
        if (batch1.contains(m.id()))
          batch1[m.id()]["plugin_queue_to_reply_p50_us"] = m.p50_us();
  }
  out["batch1"] = batch1;

  // Dynamic batching: N clients, each one request at a time, for `seconds`.
  json batching = json::object();
  for (int conc : {1, 8, 32}) {
    if (seconds <= 0)
      break;
    json row;
    for (const char* id : {"cnn", "cnn_batched", "cnn96", "cnn96_batched"}) {
      std::string sid = id;
      std::vector<int64_t> shape{1, 3, sid.starts_with("cnn96") ? 96 : 32,
                                 sid.starts_with("cnn96") ? 96 : 32};
      grove::ml::InferRequest req;
      gml::add_input(req, "x", shape, std::vector<float>(static_cast<size_t>(3 * shape[2] * shape[3]), 0.5f));
      std::atomic<bool> stop{false};
      std::atomic<uint64_t> done{0}, failed{0};
      std::vector<std::thread> ts;
      auto t0 = clock_type::now();
      for (int t = 0; t < conc; ++t)
        ts.emplace_back([&] {
          while (!stop) {
            if (infer(h, id, req))
              ++done;
            else
              ++failed;
          }
        });
      std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
      stop = true;
      for (auto& t : ts)
        t.join();
      double secs = us_since(t0) / 1e6;
      row[id] = {{"requests_per_s", round2(static_cast<double>(done) / secs)},
                 {"failed", failed.load()}};
    }
    for (const char* id : {"cnn", "cnn96"})
      row[std::string{id} + "_gain"]
        = round2(row[std::string{id} + "_batched"]["requests_per_s"].get<double>()
                 / row[id]["requests_per_s"].get<double>());
    batching["concurrency_" + std::to_string(conc)] = row;
  }
  out["batching"] = batching;
  out["memory"] = memory;

  std::cout << out.dump() << std::endl;
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
