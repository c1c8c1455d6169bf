// ml_inference: the group's model resources served on the bus (README.md). Reads the
// group's `localMachineLearningModelResourceData` resources at start and on every group
// change, loads each (digest checked, archive unpacked, one backend session per worker)
// off the actor, and swaps a new version in atomically: the old runner takes nothing new
// and finishes its queue. Requests on `$grove/ml/infer/<model>` go to the model's bounded
// queue; its workers decode, batch, run and reply.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "config.hpp"
#include "grove/kernel/group_client.hpp"
#include "grove/ml_inference/client.hpp"
#include "grove/plugin.hpp"
#include "model_def.hpp"
#include "runner.hpp"

namespace {

using namespace std::chrono_literals;
using grove::errc;
using grove::make_error;
namespace ml = grove::ml;
namespace gml = grove::ml_inference;

using models_service = grove::service<ml::ModelsRequest, ml::ModelsReply>;

/// One model resource of the group.
struct model_entry {
  /// The resource's config text in force (or being loaded).
  std::string config_yaml;
  /// Serving.
  std::shared_ptr<ml::runner> current;
  /// Why the last load failed ("" when it did not).
  std::string error;
  /// A load is under way.
  bool loading = false;
  /// Bumped per load, so a late result of a superseded load is dropped.
  uint64_t generation = 0;
};

class ml_inference final : public grove::typed_plugin<ml::ml_config> {
public:
  caf::error init(grove::context& ctx, const ml::ml_config& cfg) override {
    ctx_ = &ctx;
    cfg_ = cfg;
    backend_ = std::shared_ptr<ml::backend>{ml::make_opencv_backend()};
    auto req = ctx.counter_family("requests", "Inference requests answered.", "model");
    auto err = ctx.counter_family("errors", "Inference requests answered with an error.",
                                  "model");
    auto thr = ctx.counter_family("throttled", "Requests refused: the model's queue was full.",
                                  "model");
    if (!req || !err || !thr)
      return make_error(errc::init_failed, "metrics");
    requests_ = *req;
    errors_ = *err;
    throttled_ = *thr;
    if (auto e = ctx.serve(gml::infer_filter, [this](grove::Envelope& m) { infer(m); }))
      return e;
    if (auto e = models_service::serve(ctx, gml::models_topic,
                                       [this](const ml::ModelsRequest&, const grove::Envelope&)
                                         -> caf::expected<ml::ModelsReply> { return models(); }))
      return e;
    return ctx.subscribe(grove::group_client::current_topic);
  }

  caf::error start() override {
    grove::group_client::get(*ctx_, 10s, [this](caf::expected<grove::group::Group> g) {
      if (g)
        apply(*g);
      else if (g.error() != errc::no_route)
        ctx_->log().warn("cannot get the group: {}", grove::describe(g.error()));
    });
    return {};
  }

  void stop() override {
    // Within stop_timeout_ms: what runs finishes, what waits in a queue is left to the
    // kernel, which answers it plugin_failed.
    for (auto& [id, e] : models_)
      if (e.current)
        e.current->abandon();
    for (auto& r : retiring_)
      r->abandon();
    for (auto& [id, e] : models_)
      if (e.current)
        e.current->join();
    for (auto& r : retiring_)
      r->join();
  }

  void on_message(const grove::Envelope& msg) override {
    if (auto g = grove::group_client::current(msg))
      apply(*g);
  }

private:
  void apply(const grove::group::Group& g) {
    if (g.version() < version_)
      return;
    version_ = g.version();
    std::map<std::string, std::string> wanted;
    for (const auto& r : g.resources())
      if (ml::is_model_resource(r.config_yaml()))
        wanted[r.id()] = r.config_yaml();
    // Removed models: retired, their queues finished.
    for (auto it = models_.begin(); it != models_.end();) {
      if (wanted.count(it->first) == 0) {
        ctx_->log().info("model '{}' removed from the group", it->first);
        ctx_->set_status("model." + it->first, ""); // an empty value removes the line
        retire(std::move(it->second.current));
        it = models_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& [id, text] : wanted) {
      auto& e = models_[id];
      // Unchanged and loaded (or loading): kept. A failed one is tried again at every
      // group change, since what failed may be on disk now (a file copied in later).
      if (e.config_yaml == text && (e.loading || e.error.empty()))
        continue;
      e.config_yaml = text;
      load(id, text, g.source_file() + ": resources[" + id + "].config");
    }
    update_status();
  }

  void load(const std::string& id, const std::string& text, const std::string& origin) {
    auto& e = models_[id];
    e.loading = true;
    auto gen = ++e.generation;
    auto be = backend_;
    auto cfg = cfg_;
    ctx_->run_blocking(
      [id, text, origin, be, cfg]() -> caf::expected<std::shared_ptr<ml::runner>> {
        auto d = ml::parse_model_resource(text, origin);
        if (!d)
          return d.error();
        auto pkg = ml::load_package(*d, static_cast<uint64_t>(cfg.max_model_bytes));
        if (!pkg)
          return pkg.error();
        ml::runner_options o;
        o.threads = static_cast<size_t>(d->threads > 0 ? d->threads : cfg.threads);
        o.queue_capacity = static_cast<size_t>(d->queue_capacity > 0 ? d->queue_capacity
                                                                     : cfg.queue_capacity);
        o.max_batch_size = d->max_batch_size > 0 ? d->max_batch_size : cfg.max_batch_size;
        o.max_batch_delay = std::chrono::microseconds{
          d->max_batch_delay_us >= 0 ? d->max_batch_delay_us : cfg.max_batch_delay_us};
        o.max_input_elements = static_cast<uint64_t>(cfg.max_input_elements);
        o.max_image_pixels = static_cast<uint64_t>(cfg.max_image_pixels);
        return ml::runner::make(id, std::move(*pkg), *be, o);
      },
      [this, id, gen](caf::expected<caf::expected<std::shared_ptr<ml::runner>>> outer) {
        // The outer error: the work threw (the SDK's pool caught it).
        caf::expected<std::shared_ptr<ml::runner>> r
          = outer ? std::move(*outer) : caf::expected<std::shared_ptr<ml::runner>>{outer.error()};
        auto it = models_.find(id);
        if (it == models_.end() || it->second.generation != gen) {
          if (r)
            (*r).reset(); // superseded: never started
          return;
        }
        auto& e = it->second;
        e.loading = false;
        if (!r) {
          e.error = grove::message_of(r.error());
          ctx_->log().error("model '{}' not loaded{}: {}", id,
                            e.current ? " (the previous version keeps serving)" : "",
                            e.error);
        } else {
          e.error.clear();
          (*r)->start(*ctx_, metrics_for(id));
          auto old = std::exchange(e.current, std::move(*r));
          ctx_->log().info("model '{}' version {} serving{}", id, e.current->version(),
                           old ? " (replaced version " + old->version() + ")" : "");
          retire(std::move(old));
        }
        update_status();
      });
  }

  /// The old runner finishes its queue on its workers; joined off the actor.
  void retire(std::shared_ptr<ml::runner> r) {
    if (!r)
      return;
    r->retire();
    retiring_.push_back(r);
    ctx_->run_blocking([r] { r->join(); },
                       [this, raw = r.get()](caf::error) {
                         std::erase_if(retiring_, [raw](auto& x) { return x.get() == raw; });
                       });
  }

  ml::runner_metrics metrics_for(const std::string& id) {
    return {requests_.with(id), errors_.with(id), throttled_.with(id)};
  }

  /// Queues `msg` at its model, moved (its tensors are not copied), or answers it.
  void infer(grove::Envelope& msg) {
    auto id = msg.topic().substr(msg.topic().rfind('/') + 1);
    auto it = models_.find(id);
    if (it == models_.end()) {
      std::string names;
      for (auto& [n, e] : models_)
        names += (names.empty() ? "" : ", ") + n;
      ctx_->reply_error(msg, make_error(errc::no_route,
                                        "no model '" + id + "' in the group (models: "
                                          + (names.empty() ? "none" : names) + ")"));
      return;
    }
    auto& e = it->second;
    if (!e.current) {
      ctx_->reply_error(msg, make_error(errc::invalid_state,
                                        e.loading ? "model '" + id + "' is loading"
                                                  : "model '" + id + "' failed to load: "
                                                      + e.error));
      return;
    }
    if (!e.current->submit(std::move(msg))) {
      throttled_.with(id).inc();
      ctx_->reply_error(msg, make_error(errc::queue_full,
                                        "ThrottlingException: model '" + id
                                          + "' has its queue full (queue_capacity); retry "
                                            "later"));
    }
  }

  caf::expected<ml::ModelsReply> models() {
    ml::ModelsReply out;
    for (auto& [id, e] : models_) {
      auto* m = out.add_models();
      m->set_id(id);
      m->set_backend(backend_->name());
      m->set_error(e.error);
      m->set_loading(e.loading);
      if (e.current) {
        m->set_state(ml::ModelInfo::SERVING);
        e.current->describe(*m);
      } else {
        m->set_state(e.loading ? ml::ModelInfo::LOADING : ml::ModelInfo::FAILED);
      }
      m->set_requests(requests_.with(id).value());
      m->set_errors(errors_.with(id).value());
      m->set_throttled(throttled_.with(id).value());
    }
    return out;
  }

  void update_status() {
    size_t serving = 0, failed = 0, loading = 0;
    for (auto& [id, e] : models_) {
      serving += e.current ? 1 : 0;
      failed += !e.current && !e.loading ? 1 : 0;
      loading += !e.current && e.loading ? 1 : 0;
      ctx_->set_status("model." + id,
                       e.current ? "serving " + e.current->version()
                                     + (e.error.empty() ? "" : "; new version failed: " + e.error)
                                 : e.loading ? "loading"
                                             : "failed: " + e.error);
    }
    ctx_->set_status("models", std::to_string(serving) + " serving, " + std::to_string(failed)
                                 + " failed, " + std::to_string(loading) + " loading");
  }

  grove::context* ctx_ = nullptr;
  ml::ml_config cfg_;
  std::shared_ptr<ml::backend> backend_;
  std::map<std::string, model_entry> models_;
  std::vector<std::shared_ptr<ml::runner>> retiring_;
  uint64_t version_ = 0;
  grove::counter_family requests_;
  grove::counter_family errors_;
  grove::counter_family throttled_;
};

} // namespace

GROVE_TYPED_PLUGIN(ml_inference, "ml_inference", "1.0.0")
