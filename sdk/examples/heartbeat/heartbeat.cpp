// heartbeat: the SDK's example plugin. Publishes a beat with a running count every
// `interval_ms` on `topic`, answers requests on `<topic>/ping`, and carries its count
// across a hot reload through snapshot/restore.

#include <string>

#include <spdlog/spdlog.h>

#include "grove/plugin.hpp"

namespace {

constexpr const char* schema = R"(
interval_ms: {type: int, default: 1000, min: 1, max: 86400000, doc: "beat period"}
topic: {type: string, default: "grove/heartbeat", doc: "topic beats go to"}
)";

class heartbeat : public grove::plugin {
public:
  caf::error init(grove::context& ctx) override {
    ctx_ = &ctx;
    topic_ = ctx.config()["topic"].as<std::string>();
    if (auto err = grove::validate_topic(topic_))
      return err;
    interval_ = std::chrono::milliseconds{ctx.config()["interval_ms"].as<int64_t>()};
    // Numbers are metrics (grovectl and Prometheus show them); status lines are text.
    auto beats = ctx.counter("beats", "Beats published.");
    if (!beats)
      return beats.error();
    beats_ = *beats;
    return ctx.subscribe(topic_ + "/ping");
  }

  caf::error start() override {
    ctx_->every(interval_, [this] {
      ++count_;
      ctx_->publish(topic_, std::to_string(count_), "text/plain");
      beats_.inc();
    });
    ctx_->set_status("beating", std::to_string(interval_.count()) + " ms on " + topic_);
    ctx_->log().info("beating every {} ms on {}", interval_.count(), topic_);
    return {};
  }

  void on_message(const grove::Envelope& msg) override {
    if (!msg.reply_to().empty())
      ctx_->reply(msg, "pong " + std::to_string(count_), "text/plain");
  }

  caf::expected<std::string> snapshot() override {
    return std::to_string(count_);
  }

  caf::error restore(std::string_view snap) override {
    count_ = std::stoull(std::string{snap});
    return {};
  }

private:
  grove::context* ctx_ = nullptr;
  std::string topic_;
  std::chrono::milliseconds interval_{1000};
  uint64_t count_ = 0;
  grove::counter beats_;
};

} // namespace

GROVE_PLUGIN(heartbeat, "heartbeat", "1.0.0", schema)
