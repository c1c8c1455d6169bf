#pragma once

// One loaded version of one model: its sessions (one per worker thread), a bounded queue,
// dynamic batching, and the numbers `grovectl ml models` shows. Workers reply on the bus
// themselves (context::reply is callable from any thread). A new version gets a runner of
// its own; the old one is retired: it takes nothing new and its workers finish what is
// queued, so no request in flight is lost.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "backend.hpp"
#include "grove/envelope.pb.h"
#include "grove/ml.pb.h"
#include "grove/plugin.hpp"
#include "model_def.hpp"
#include "request.hpp"

namespace grove::ml {

/// Pool and batching settings of one model.
struct runner_options {
  /// Workers (one session each).
  size_t threads = 1;
  /// Requests waiting at most.
  size_t queue_capacity = 64;
  /// Items per backend call at most (1: no batching).
  int64_t max_batch_size = 1;
  /// How long the first request of a batch waits for others.
  std::chrono::microseconds max_batch_delay{0};
  /// Elements per input at most.
  uint64_t max_input_elements = 16u << 20;
  /// Pixels per image at most (by its header, before decoding).
  uint64_t max_image_pixels = 4096u * 4096u;
};

/// Counters shared with the plugin's metrics.
struct runner_metrics {
  /// Requests answered.
  counter requests;
  /// Requests answered with an error.
  counter errors;
  /// Requests refused because the queue was full.
  counter throttled;
};

/// One model version at work.
class runner {
public:
  /// Opens `opts.threads` sessions of `pkg` (blocking: call off the plugin's actor).
  static caf::expected<std::shared_ptr<runner>>
  make(std::string id, package pkg, backend& be, runner_options opts);

  ~runner();

  /// Starts the workers; `ctx` must outlive join().
  void start(context& ctx, runner_metrics m);

  /// Queues a request, moved in (its payload is not copied); false when the queue is
  /// full, `request` then untouched (the caller answers it).
  bool submit(Envelope&& request);

  /// Takes nothing new; the workers finish the queue and end.
  void retire();

  /// Takes nothing new and drops what is queued (the kernel answers those requests
  /// plugin_failed when the plugin stops); the workers finish what they run and end.
  void abandon();

  /// Waits for the workers to end (after retire). Idempotent, any thread.
  void join();

  /// The model's state for ml-2 (numbers, inputs, outputs).
  void describe(ModelInfo& out) const;

  /// The package's version.
  const std::string& version() const noexcept {
    return pkg_.version;
  }

  /// The manifest.
  const manifest& man() const noexcept {
    return pkg_.man;
  }

private:
  struct job {
    Envelope request;
    std::chrono::steady_clock::time_point arrived;
  };
  struct ready {
    /// The request, its payload moved to `wire` (its id and reply_to answer it).
    Envelope request;
    /// The serialized InferRequest, where `view` and `inputs` point (never moves).
    std::unique_ptr<std::string> wire;
    /// The request read in place.
    request_view view;
    std::chrono::steady_clock::time_point arrived;
    std::vector<tensor> inputs;
    int64_t batch = 1;
    uint32_t top_k = 0;
    /// Set by finish(): a request is answered once.
    bool answered = false;
  };

  runner(std::string id, package pkg, runner_options opts);
  void work(session& s);
  /// Decodes `j` into `out`, or answers it with the error and returns false.
  bool prepare(job& j, ready& out);
  /// Runs `batch` (requests of one item shape) as one backend call, or one by one when
  /// the model turns out not to batch; returns how many were answered with an error.
  size_t run_batch(session& s, std::span<ready> batch);
  /// run_batch, where a worker's exception answers what is left.
  void run_guarded(session& s, std::span<ready> batch);
  void finish(ready& r, caf::expected<InferResponse> result);

  std::string id_;
  package pkg_;
  runner_options opts_;
  bool batchable_ = false;
  std::vector<std::unique_ptr<session>> sessions_;
  std::vector<std::string> output_names_;
  context* ctx_ = nullptr;
  runner_metrics metrics_;

  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::deque<job> queue_;
  /// Requests queued or being run (submitted, not yet answered).
  size_t outstanding_ = 0;
  bool retired_ = false;
  std::vector<std::thread> workers_;
  std::mutex join_mtx_;

  // Numbers (under mtx_).
  std::vector<uint32_t> latencies_us_; // a ring of the last ones
  size_t latency_next_ = 0;
  std::map<uint32_t, uint64_t> batches_;
};

} // namespace grove::ml
