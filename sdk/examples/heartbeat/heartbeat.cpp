// heartbeat: the SDK's example plugin. Publishes a beat with a running count every
// `interval_ms` on `topic`, answers requests on `<topic>/ping`, and carries its count
// across a hot reload through snapshot/restore.

#include <string>

#include <spdlog/spdlog.h>

#include "grove/config_map.hpp"

namespace {

// The configuration, declared once: the schema, the defaults, the README table.
struct heartbeat_config {
  std::chrono::milliseconds interval{};
  std::string topic;

  static grove::config_map<heartbeat_config> map() {
    return grove::config_map<heartbeat_config>{}
      .key("interval_ms", &heartbeat_config::interval, 1000, grove::range{1, 86400000},
           "beat period")
      .key("topic", &heartbeat_config::topic, "grove/heartbeat",
           "topic beats go to; a topic name, not a filter (no `+`/`#`)")
      .validate([](const heartbeat_config& cfg) -> caf::error {
        if (auto err = grove::validate_topic(cfg.topic))
          return grove::make_error(grove::errc::invalid_config,
                                   "topic: " + grove::describe(err));
        return {};
      });
  }
};

class heartbeat : public grove::typed_plugin<heartbeat_config> {
public:
  caf::error init(grove::context& ctx, const heartbeat_config& cfg) override {
    ctx_ = &ctx;
    topic_ = cfg.topic;
    interval_ = cfg.interval;
    // Numbers are metrics (grovectl and Prometheus show them); status lines are text.
    auto beats = ctx.counter("beats", "Beats published.");
    if (!beats)
      return beats.error();
    beats_ = *beats;
    // Requests on <topic>/ping are ours alone (a second heartbeat would fail to load).
    return ctx.serve(topic_ + "/ping", [this](const grove::Envelope& msg) {
      ctx_->reply(msg, "pong " + std::to_string(count_), "text/plain");
    });
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

  void on_message(const grove::Envelope&) override {
    // Subscribes to nothing: requests go to the serve handler above.
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

// The deployment plugin's tests build it again as version 2.0.0 (HEARTBEAT_VERSION).
#ifndef HEARTBEAT_VERSION
#define HEARTBEAT_VERSION "1.0.0"
#endif
GROVE_TYPED_PLUGIN(heartbeat, "heartbeat", HEARTBEAT_VERSION)
