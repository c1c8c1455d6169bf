#include "runner.hpp"

#include <algorithm>
#include <span>
#include <utility>

#include <spdlog/spdlog.h>

#include "grove/errors.hpp"
#include "grove/rpc.hpp"
#include "preprocess.hpp"

namespace grove::ml {

namespace {

using infer_service = service<InferRequest, InferResponse>;

/// Latencies kept for p50/p99.
constexpr size_t latency_window = 4096;

/// Whether two requests' inputs agree beyond the batch dimension (so they concatenate).
template <class Ready>
bool same_item_shape(const Ready& a, const Ready& b) {
  if (a.inputs.size() != b.inputs.size())
    return false;
  for (size_t i = 0; i < a.inputs.size(); ++i) {
    const auto& x = a.inputs[i].shape;
    const auto& y = b.inputs[i].shape;
    if (a.inputs[i].name != b.inputs[i].name || x.size() != y.size() || x.empty()
        || !std::equal(x.begin() + 1, x.end(), y.begin() + 1))
      return false;
  }
  return true;
}

} // namespace

runner::runner(std::string id, package pkg, runner_options opts)
  : id_(std::move(id)), pkg_(std::move(pkg)), opts_(opts) {
  batchable_ = batchable(pkg_.man.inputs) && opts_.max_batch_size > 1;
}

caf::expected<std::shared_ptr<runner>>
runner::make(std::string id, package pkg, backend& be, runner_options opts) {
  std::shared_ptr<runner> r{new runner(std::move(id), std::move(pkg), opts)};
  for (size_t i = 0; i < std::max<size_t>(1, opts.threads); ++i) {
    auto s = be.open(r->pkg_.onnx, r->pkg_.man.outputs);
    if (!s)
      return s.error();
    r->sessions_.push_back(std::move(*s));
  }
  r->output_names_ = r->sessions_.front()->output_names();
  // The sessions hold the network; the file's bytes are not needed any more.
  std::string{}.swap(r->pkg_.onnx);
  return r;
}

runner::~runner() {
  retire();
  join();
}

void runner::start(context& ctx, runner_metrics m) {
  ctx_ = &ctx;
  metrics_ = m;
  for (auto& s : sessions_)
    workers_.emplace_back([this, sp = s.get()] { work(*sp); });
}

bool runner::submit(Envelope&& request) {
  {
    std::lock_guard<std::mutex> g{mtx_};
    if (retired_ || queue_.size() >= opts_.queue_capacity)
      return false;
    queue_.push_back(job{std::move(request), std::chrono::steady_clock::now()});
    ++outstanding_;
  }
  cv_.notify_one();
  return true;
}

void runner::retire() {
  {
    std::lock_guard<std::mutex> g{mtx_};
    retired_ = true;
  }
  cv_.notify_all();
}

void runner::abandon() {
  {
    std::lock_guard<std::mutex> g{mtx_};
    retired_ = true;
    outstanding_ -= queue_.size();
    queue_.clear();
  }
  cv_.notify_all();
}

void runner::join() {
  std::lock_guard<std::mutex> g{join_mtx_};
  for (auto& w : workers_)
    if (w.joinable())
      w.join();
}

bool runner::prepare(job& j, ready& out) {
  out.request = std::move(j.request);
  out.arrived = j.arrived;
  // Read in place: the tensors' bytes stay where the bus delivered them (moved out of
  // the envelope, never copied), and the inputs point into them.
  out.wire = std::make_unique<std::string>(std::move(*out.request.mutable_payload()));
  caf::error err = infer_service::check_type(out.request);
  if (!err) {
    if (auto v = read_request(*out.wire, limits_of(pkg_.man.inputs)))
      out.view = std::move(*v);
    else
      err = std::move(v.error());
  }
  if (!err) {
    const auto& r = out.view;
    if (!r.image.empty() && !r.inputs.empty()) {
      // Which one to run would be a guess.
      err = make_error(errc::malformed, "an image request carries no tensors (got "
                                          + std::to_string(r.inputs.size())
                                          + "): send an image or tensors");
    } else if (!r.image.empty()) {
      auto t = image_to_tensor(r.image, pkg_.man, opts_.max_image_pixels);
      if (!t) {
        err = std::move(t.error());
      } else if (pkg_.man.inputs.size() != 1) {
        err = make_error(errc::malformed, "an image request: the model has "
                                            + std::to_string(pkg_.man.inputs.size())
                                            + " inputs (send tensors)");
      } else {
        out.inputs.push_back(std::move(*t));
        out.batch = 1;
      }
    } else {
      auto d = decode_tensors(r, pkg_.man.inputs, opts_.max_input_elements, true);
      if (!d) {
        err = std::move(d.error());
      } else {
        out.inputs = std::move(d->inputs);
        out.batch = d->batch;
      }
    }
  }
  if (err) {
    finish(out, make_error(static_cast<errc>(err.code()),
                           "model '" + id_ + "': " + message_of(err)));
    return false;
  }
  out.top_k = out.view.top_k != 0 ? out.view.top_k : static_cast<uint32_t>(pkg_.man.top_k);
  return true;
}

void runner::work(session& s) {
  for (;;) {
    std::vector<job> taken;
    {
      std::unique_lock<std::mutex> lk{mtx_};
      cv_.wait(lk, [&] { return retired_ || !queue_.empty(); });
      if (queue_.empty())
        return; // retired and drained
      taken.push_back(std::move(queue_.front()));
      queue_.pop_front();
      if (batchable_) {
        // Requests that arrive within max_batch_delay of the first join its batch (the
        // items of a request count, so a batch never exceeds max_batch_size items). It
        // waits only while other requests are in flight (sent to this model, not yet
        // answered, e.g. running on another worker): a lone client's request, or one
        // whose peers are all in the batch already, runs at once instead of idling.
        auto until = taken.front().arrived + opts_.max_batch_delay;
        while (static_cast<int64_t>(taken.size()) < opts_.max_batch_size) {
          if (queue_.empty()) {
            if (retired_ || outstanding_ <= taken.size()
                || !cv_.wait_until(lk, until, [&] { return !queue_.empty() || retired_; }))
              break;
            if (queue_.empty())
              break;
          }
          taken.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
    }
    // Decoded first; then run in batches of requests whose items have one shape (a
    // model with free dimensions beyond the batch one takes requests of different sizes,
    // which cannot be concatenated) and at most max_batch_size items.
    std::vector<ready> prepared;
    prepared.reserve(taken.size());
    for (auto& j : taken) {
      ready r;
      try {
        if (!prepare(j, r))
          continue;
      } catch (const std::exception& e) { // e.g. bad_alloc: this request fails, not groved
        finish(r, make_error(errc::plugin_failed, "model '" + id_ + "': " + e.what()));
        continue;
      }
      prepared.push_back(std::move(r));
    }
    size_t first = 0;
    int64_t items = 0;
    for (size_t i = 0; i < prepared.size(); ++i) {
      if (i > first
          && (items + prepared[i].batch > opts_.max_batch_size
              || !same_item_shape(prepared[first], prepared[i]))) {
        run_guarded(s, std::span<ready>{prepared}.subspan(first, i - first));
        first = i;
        items = 0;
      }
      items += prepared[i].batch;
    }
    if (first < prepared.size())
      run_guarded(s, std::span<ready>{prepared}.subspan(first));
  }
}

void runner::run_guarded(session& s, std::span<ready> batch) {
  try {
    run_batch(s, batch);
  } catch (const std::exception& e) {
    for (auto& r : batch)
      if (!r.answered)
        finish(r, make_error(errc::plugin_failed, "model '" + id_ + "': " + e.what()));
  }
}

size_t runner::run_batch(session& s, std::span<ready> batch) {
  std::vector<tensor> inputs;
  int64_t total = 0;
  if (batch.size() == 1) {
    inputs = std::move(batch.front().inputs);
    total = batch.front().batch;
  } else {
    // Concatenated along the batch dimension, input by input.
    inputs.resize(batch.front().inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      inputs[i].name = batch.front().inputs[i].name;
      inputs[i].shape = batch.front().inputs[i].shape;
      inputs[i].shape[0] = 0;
      for (auto& r : batch) {
        inputs[i].shape[0] += r.inputs[i].shape[0];
        auto v = r.inputs[i].values();
        inputs[i].data.insert(inputs[i].data.end(), v.begin(), v.end());
      }
    }
    for (auto& r : batch)
      total += r.batch;
  }
  auto outs = s.run(inputs);
  {
    std::lock_guard<std::mutex> g{mtx_};
    ++batches_[static_cast<uint32_t>(total)];
  }
  if (batch.size() > 1) {
    // A model whose manifest claims a batch dimension its graph does not have fails the
    // joined call, or answers without the dimension: each request runs alone instead
    // (its own answer or its own error). When the outputs lack the dimension, or every
    // request then succeeds alone, the joining was the fault: the model is not batched
    // again.
    bool split = static_cast<bool>(outs);
    if (split)
      for (const auto& o : *outs)
        split = split && !o.shape.empty() && o.shape[0] == total;
    if (!split) {
      size_t failed = 0;
      for (size_t i = 0; i < batch.size(); ++i)
        failed += run_batch(s, batch.subspan(i, 1));
      if (outs && failed != 0)
        return failed;
      bool first_time = false;
      {
        std::lock_guard<std::mutex> g{mtx_};
        first_time = std::exchange(batchable_, false);
      }
      if (first_time)
        ctx_->log().warn("ml_inference: model '{}' does not batch ({}): its requests run "
                         "one at a time",
                         id_,
                         outs ? "an output has no batch dimension of " + std::to_string(total)
                              : message_of(outs.error()));
      return failed;
    }
  }
  if (!outs) {
    for (auto& r : batch)
      finish(r, make_error(static_cast<errc>(outs.error().code()),
                           "model '" + id_ + "': " + message_of(outs.error())));
    return batch.size();
  }
  // Split the outputs back, item counts in order (every output has the batch dimension:
  // checked above).
  int64_t offset = 0;
  for (auto& r : batch) {
    InferResponse resp;
    resp.set_model(id_);
    resp.set_version(pkg_.version);
    resp.set_batch_size(static_cast<uint32_t>(total));
    std::span<const float> scores; // this request's part of the first output
    for (const auto& o : *outs) {
      auto* t = resp.add_outputs();
      t->set_name(o.name);
      t->set_dtype(FLOAT32);
      std::span<const float> mine{o.data};
      if (batch.size() == 1) {
        for (auto d : o.shape)
          t->add_shape(d);
      } else {
        auto row = o.data.size() / static_cast<size_t>(total);
        t->add_shape(r.batch);
        for (size_t d = 1; d < o.shape.size(); ++d)
          t->add_shape(o.shape[d]);
        mine = mine.subspan(static_cast<size_t>(offset) * row, static_cast<size_t>(r.batch) * row);
      }
      t->set_data(reinterpret_cast<const char*>(mine.data()), mine.size() * 4);
      if (resp.outputs_size() == 1)
        scores = mine;
    }
    if (r.top_k > 0 && resp.outputs_size() > 0)
      top_labels(scores, r.batch, r.top_k, pkg_.man.labels, resp);
    finish(r, std::move(resp));
    offset += r.batch;
  }
  return 0;
}

void runner::finish(ready& r, caf::expected<InferResponse> result) {
  r.answered = true;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(
              std::chrono::steady_clock::now() - r.arrived)
              .count();
  {
    std::lock_guard<std::mutex> g{mtx_};
    if (latencies_us_.size() < latency_window)
      latencies_us_.push_back(static_cast<uint32_t>(us));
    else
      latencies_us_[latency_next_++ % latency_window] = static_cast<uint32_t>(us);
  }
  {
    std::lock_guard<std::mutex> g{mtx_};
    --outstanding_;
  }
  metrics_.requests.inc();
  if (!result)
    metrics_.errors.inc();
  infer_service::reply(*ctx_, r.request, std::move(result));
}

void runner::describe(ModelInfo& out) const {
  out.set_version(pkg_.version);
  out.set_sha256(pkg_.sha256);
  out.set_model_bytes(pkg_.file_bytes);
  out.set_threads(static_cast<uint32_t>(sessions_.size()));
  out.set_queue_capacity(static_cast<uint32_t>(opts_.queue_capacity));
  for (const auto& in : pkg_.man.inputs) {
    auto* s = out.add_inputs();
    s->set_name(in.name);
    s->set_dtype(in.dtype == "uint8" ? UINT8 : FLOAT32);
    for (auto d : in.shape)
      s->add_shape(d);
  }
  for (const auto& o : output_names_)
    out.add_outputs(o);
  std::vector<uint32_t> lat;
  {
    std::lock_guard<std::mutex> g{mtx_};
    lat = latencies_us_;
    for (auto [size, n] : batches_)
      (*out.mutable_batches())[size] = n;
  }
  if (!lat.empty()) {
    std::sort(lat.begin(), lat.end());
    out.set_p50_us(lat[lat.size() / 2]);
    out.set_p99_us(lat[std::min(lat.size() - 1, lat.size() * 99 / 100)]);
  }
}

} // namespace grove::ml
