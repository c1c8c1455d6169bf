// Small plugins built for the kernel's tests. Which one a library holds is chosen at
// compile time (TEST_PLUGIN_KIND), so each lib<name>.so is a real, separate plugin;
// TEST_PLUGIN_VARIANT stamps output so two builds of one plugin differ visibly.

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "grove/plugin.hpp"
#include "grove/rpc.hpp"

#include <spdlog/spdlog.h>

namespace {

constexpr const char* echo_schema = R"(
prefix: {type: string, default: "", doc: "prepended to echoed payloads"}
listen: {type: string, default: "test/echo/in"}
answer: {type: string, default: "test/echo/out"}
crash_on: {type: string, default: "", doc: "payload that makes on_message throw"}
slow_us: {type: int, default: 0, min: 0, doc: "busy time per message"}
stamp: {type: bool, default: false, doc: "answer '<variant>|<payload>|<count>'"}
segv_on: {type: string, default: "", doc: "payload that makes the plugin segfault"}
abort_on: {type: string, default: "", doc: "payload that makes the plugin call abort"}
log_on: {type: string, default: "", doc: "payloads starting with it are logged at info; it is logged at init too"}
serve: {type: string, default: "", doc: "filter whose requests it answers like echoes"}
typed_serve: {type: string, default: "", doc: "filter served as rpc<Envelope, Envelope>"}
await: {type: string, default: "", doc: "at start, wait for this topic to be served"}
await_ms: {type: int, default: 5000, min: 1}
claim_as: {type: string, default: "", doc: "source set on echoes, for may_claim tests"}
call_as: {type: string, default: "", doc: "payload 'call:<topic>' requests <topic> as this source"}
init_gate: {type: string, default: "", doc: "init appends a line to <gate>.waiting, then blocks until the file <gate> exists"}
stop_gate: {type: string, default: "", doc: "stop appends a line to <gate>.waiting, then blocks until the file <gate> exists"}
own: {type: string, default: "", doc: "filter under $grove/ whose events it owns, by own_events"}
)";

/// A plugin stuck in init or stop, for the host's timeouts: says it is waiting, then
/// blocks until the test opens the gate (bounded, so a failed test cannot leave a
/// thread behind for ever).
void wait_at_gate(const std::string& gate) {
  std::ofstream{gate + ".waiting", std::ios::app} << "waiting\n";
  auto until = std::chrono::steady_clock::now() + std::chrono::minutes{2};
  while (!std::filesystem::exists(gate) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
}

#ifndef TEST_PLUGIN_VARIANT
#  define TEST_PLUGIN_VARIANT "v1"
#endif

/// Echoes `listen` to `answer` with a prefix; answers requests; counts what it saw.
class echo : public grove::plugin {
public:
  caf::error init(grove::context& ctx) override {
    ctx_ = &ctx;
    auto& cfg = ctx.config();
    if (auto gate = cfg["init_gate"].as<std::string>(); !gate.empty())
      wait_at_gate(gate);
    prefix_ = cfg["prefix"].as<std::string>();
    answer_ = cfg["answer"].as<std::string>();
    crash_on_ = cfg["crash_on"].as<std::string>();
    slow_ = std::chrono::microseconds{cfg["slow_us"].as<int64_t>()};
    stamp_ = cfg["stamp"].as<bool>();
    segv_on_ = cfg["segv_on"].as<std::string>();
    abort_on_ = cfg["abort_on"].as<std::string>();
    log_on_ = cfg["log_on"].as<std::string>();
    if (!log_on_.empty())
      ctx.log().info("echo logged: {} at init", log_on_);
    claim_as_ = cfg["claim_as"].as<std::string>();
    call_as_ = cfg["call_as"].as<std::string>();
    if (auto filter = cfg["own"].as<std::string>(); !filter.empty())
      if (auto err = ctx.own_events(filter))
        return err;
    if (auto filter = cfg["serve"].as<std::string>(); !filter.empty())
      if (auto err = ctx.serve(filter, [this](const grove::Envelope& msg) { answer(msg); }))
        return err;
    if (auto filter = cfg["typed_serve"].as<std::string>(); !filter.empty()) {
      using svc = grove::service<grove::Envelope, grove::Envelope>;
      auto err = svc::serve(ctx, filter,
                            [this](const grove::Envelope& req,
                                   const grove::Envelope&) -> caf::expected<grove::Envelope> {
                              if (req.payload() == "fail")
                                return grove::make_error(grove::errc::invalid_state,
                                                         "asked to fail");
                              grove::Envelope resp;
                              resp.set_payload(prefix_ + req.payload());
                              return resp;
                            });
      if (err)
        return err;
    }
    // What the metrics tests read; the values live in the kernel, not in this instance.
    auto seen = ctx.counter("messages.seen", "Messages handled.");
    auto size = ctx.gauge("last.payload_bytes", "Size of the last payload.");
    auto by_payload = ctx.counter_family("payloads", "Messages per payload.", "payload");
    auto burst = ctx.counter("burst", "Increments from the 'burst' threads.");
    if (!seen || !size || !by_payload || !burst)
      return grove::make_error(grove::errc::init_failed, "metrics declaration failed");
    seen_counter_ = *seen;
    size_gauge_ = *size;
    by_payload_ = *by_payload;
    burst_ = *burst;
#if TEST_PLUGIN_KIND == 2
    throw std::runtime_error("init exploded on purpose");
#elif TEST_PLUGIN_KIND == 3
    return grove::make_error(grove::errc::init_failed, "init refused on purpose");
#endif
    return ctx.subscribe(cfg["listen"].as<std::string>());
  }

  void stop() override {
    if (auto gate = ctx_->config()["stop_gate"].as<std::string>(); !gate.empty())
      wait_at_gate(gate);
    for (auto& t : repliers_)
      t.join();
    repliers_.clear();
  }

  caf::error start() override {
    // Requests adopted in restore() are answered here, stamped with this build.
    for (auto& req : adopted_)
      ctx_->reply(req, std::string{TEST_PLUGIN_VARIANT} + "|adopted " + req.payload());
    adopted_.clear();
    auto topic = ctx_->config()["await"].as<std::string>();
    if (topic.empty())
      return {};
    auto ms = std::chrono::milliseconds{ctx_->config()["await_ms"].as<int64_t>()};
    ctx_->when_served(topic, ms, [this, topic](caf::error err) {
      ctx_->publish(answer_, err ? "not served: " + grove::describe(err) : "served " + topic);
    });
    return {};
  }

  // Answers a request the way the echo answers a publish.
  void answer(const grove::Envelope& msg) {
    ++seen_;
    if (msg.payload().starts_with("thread:")) {
      // [services-1] Answered from a thread of the plugin's own, off its slot, twice (the
      // second answer is logged and ignored). Joined in stop().
      repliers_.emplace_back([this, msg] {
        ctx_->reply(msg, prefix_ + msg.payload().substr(7));
        ctx_->reply(msg, "a second answer");
      });
      return;
    }
    if (msg.payload().starts_with("hold")) {
      // Left open for a reload to carry: "hold..." is adopted by the next instance,
      // "hold-drop..." is not (snapshot, restore).
      held_.push_back(msg);
      ctx_->publish(answer_, "held " + msg.payload());
      return;
    }
    if (msg.payload() == "fail")
      ctx_->reply_error(msg, grove::make_error(grove::errc::invalid_state, "asked to fail"));
    else if (msg.payload() != "ignore")
      ctx_->reply(msg, prefix_ + msg.payload());
  }

  void on_message(const grove::Envelope& msg) override {
    if (!crash_on_.empty() && msg.payload() == crash_on_)
      throw std::runtime_error("crash requested by message");
    if (!segv_on_.empty() && msg.payload() == segv_on_)
      std::raise(SIGSEGV); // what a stray pointer does, without UB in the test itself
    if (!abort_on_.empty() && msg.payload() == abort_on_)
      std::abort();
    if (!log_on_.empty() && msg.payload().starts_with(log_on_))
      ctx_->log().info("echo logged: {}", msg.payload());
    if (slow_.count() > 0) {
      auto until = std::chrono::steady_clock::now() + slow_;
      while (std::chrono::steady_clock::now() < until)
        ; // busy: a slow consumer
    }
    ++seen_;
    seen_counter_.inc();
    size_gauge_.set(static_cast<int64_t>(msg.payload().size()));
    by_payload_.with(msg.payload()).inc();
    if (msg.payload() == "burst") {
      // burst_threads x burst_per_thread increments from threads of our own.
      std::vector<std::thread> threads;
      for (int t = 0; t < burst_threads; ++t)
        threads.emplace_back([c = burst_]() mutable {
          for (int i = 0; i < burst_per_thread; ++i)
            c.inc();
        });
      for (auto& t : threads)
        t.join();
    }
    if (msg.payload().starts_with("status:")) {
      // "status:KEY=VALUE" sets a status line, "status:KEY=" removes it.
      auto kv = msg.payload().substr(7);
      auto eq = kv.find('=');
      ctx_->set_status(kv.substr(0, eq), eq == std::string::npos ? "" : kv.substr(eq + 1));
      ctx_->publish(answer_, "status set");
      return;
    }
    if (msg.payload().starts_with("call:")) {
      // Requests the topic after "call:" as call_as, and echoes the outcome.
      grove::Envelope req;
      req.set_topic(msg.payload().substr(5));
      req.set_source(call_as_);
      req.set_payload("from " + call_as_);
      ctx_->call(std::move(req), std::chrono::seconds{10},
                 [this](caf::expected<grove::Envelope> r) {
                   ctx_->publish(answer_, r ? "reply: " + r->payload()
                                            : "error: " + grove::describe(r.error()));
                 });
      return;
    }
    if (!claim_as_.empty()) {
      grove::Envelope out;
      out.set_topic(answer_);
      out.set_source(claim_as_);
      out.set_payload(prefix_ + msg.payload());
      if (auto r = ctx_->publish(std::move(out)); !r)
        ctx_->publish(answer_, "refused: " + grove::describe(r.error()));
      return;
    }
    if (stamp_)
      ctx_->publish(answer_, std::string{TEST_PLUGIN_VARIANT} + "|" + prefix_
                               + msg.payload() + "|" + std::to_string(seen_));
    else
      ctx_->publish(answer_, prefix_ + msg.payload());
  }

#if TEST_PLUGIN_KIND != 8 // kind 8 has no hooks: reloads start it fresh
  // "<seen>", then a line "<id> <reply_to> <payload>" per request left open ("hold").
  caf::expected<std::string> snapshot() override {
    auto out = std::to_string(seen_);
    for (auto& req : held_)
      out += "\n" + std::to_string(req.id()) + " " + req.reply_to() + " " + req.payload();
    return out;
  }

  caf::error restore(std::string_view snap) override {
#  if TEST_PLUGIN_KIND == 7
    return grove::make_error(grove::errc::malformed, "restore refused on purpose");
#  endif
    std::istringstream in{std::string{snap}};
    in >> seen_;
    uint64_t id = 0;
    std::string reply_to, payload;
    while (in >> id >> reply_to >> payload) {
      if (payload.starts_with("hold-drop"))
        continue; // left to the kernel: answered as before requests were carried
      grove::Envelope req;
      req.set_id(id);
      req.set_reply_to(reply_to);
      req.set_payload(payload);
      if (ctx_->adopt_request(req)) {
        // Only once: a second adoption of the same request finds none.
        if (ctx_->adopt_request(req))
          return grove::make_error(grove::errc::invalid_state, "adopted twice");
        adopted_.push_back(std::move(req));
      }
    }
    return {};
  }

  caf::error reconfigure(const YAML::Node& cfg) override {
    // Only the prefix can change live; anything else needs a reload.
    if (cfg["listen"].as<std::string>() != ctx_->config()["listen"].as<std::string>())
      return grove::make_error(grove::errc::unsupported, "listen changes need a reload");
    prefix_ = cfg["prefix"].as<std::string>();
    return {};
  }
#endif

private:
  grove::context* ctx_ = nullptr;
  std::string prefix_;
  std::string answer_;
  std::string crash_on_;
  std::chrono::microseconds slow_{0};
  bool stamp_ = false;
  std::string segv_on_;
  std::string abort_on_;
  std::string log_on_;
  std::string claim_as_;
  std::string call_as_;
  uint64_t seen_ = 0;
  std::vector<std::thread> repliers_;
  std::vector<grove::Envelope> held_;    // requests left open (payload "hold...")
  std::vector<grove::Envelope> adopted_; // adopted in restore(), answered in start()
  grove::counter seen_counter_;
  grove::gauge size_gauge_;
  grove::counter_family by_payload_;
  grove::counter burst_;

public:
  /// Threads and increments per thread of a "burst" message.
  static constexpr int burst_threads = 4;
  static constexpr int burst_per_thread = 250000;
};

} // namespace

#if TEST_PLUGIN_KIND == 4
// Wrong ABI: claims a future ABI version.
extern "C" __attribute__((visibility("default"))) const grove_plugin_descriptor*
grove_plugin_entry_v1(void) {
  static grove_plugin_descriptor d = {sizeof(grove_plugin_descriptor),
                                      GROVE_PLUGIN_ABI_VERSION + 1,
                                      CAF_VERSION,
                                      GOOGLE_PROTOBUF_VERSION,
                                      TEST_PLUGIN_NAME,
                                      "0.0.1",
                                      nullptr,
                                      nullptr,
                                      nullptr,
                                      {}};
  return &d;
}
#elif TEST_PLUGIN_KIND == 5
// Wrong CAF: claims to be built against another CAF.
extern "C" __attribute__((visibility("default"))) const grove_plugin_descriptor*
grove_plugin_entry_v1(void) {
  static grove_plugin_descriptor d = {sizeof(grove_plugin_descriptor),
                                      GROVE_PLUGIN_ABI_VERSION,
                                      CAF_VERSION + 100,
                                      GOOGLE_PROTOBUF_VERSION,
                                      TEST_PLUGIN_NAME,
                                      "0.0.1",
                                      nullptr,
                                      nullptr,
                                      nullptr,
                                      GROVE_PLUGIN_ABI_HASH,
                                      GROVE_PLUGIN_ABI_MANIFEST,
                                      GROVE_BUILD_INFO,
                                      {}};
  return &d;
}
#elif TEST_PLUGIN_KIND == 9 || TEST_PLUGIN_KIND == 10
// Same ABI version, but built against other SDK headers (9: plugin.hpp differs) or
// other library versions (10: yaml-cpp and the compiler differ).
extern "C" __attribute__((visibility("default"))) const grove_plugin_descriptor*
grove_plugin_entry_v1(void) {
  static const std::string manifest = [] {
    std::string m = GROVE_PLUGIN_ABI_MANIFEST;
    auto at = m.find("plugin.hpp=");
    if (TEST_PLUGIN_KIND == 9 && at != std::string::npos)
      m.replace(at + 11, 12, "000000000000");
    return m;
  }();
  static grove_plugin_descriptor d = {sizeof(grove_plugin_descriptor),
                                      GROVE_PLUGIN_ABI_VERSION,
                                      CAF_VERSION,
                                      GOOGLE_PROTOBUF_VERSION,
                                      TEST_PLUGIN_NAME,
                                      "0.0.1",
                                      nullptr,
                                      [] { return static_cast<void*>(nullptr); },
                                      [](void*) {},
                                      TEST_PLUGIN_KIND == 9 ? "0123456789abcdef"
                                                            : GROVE_PLUGIN_ABI_HASH,
                                      manifest.c_str(),
                                      TEST_PLUGIN_KIND == 9
                                        ? GROVE_BUILD_INFO
                                        : "clang 99, " GROVE_BUILD_STDLIB
                                          ", yaml-cpp 0.6.3, fmt 9.1.0, spdlog 1.10.0",
                                      {}};
  return &d;
}
#elif TEST_PLUGIN_KIND == 6
// No entry symbol at all.
extern "C" __attribute__((visibility("default"))) int grove_plugin_entry_v0(void) {
  return 0;
}
#elif TEST_PLUGIN_KIND == 11
#include "grove/config_map.hpp"

namespace {

// A typed plugin: its configuration is a struct declared once with a config_map.
struct typed_config {
  std::string prefix;
  std::string listen;

  static grove::config_map<typed_config> map() {
    return grove::config_map<typed_config>{}
      .key("prefix", &typed_config::prefix, "t-", "prepended to echoed payloads")
      .key("listen", &typed_config::listen, "test/typed/in", "echoed to test/typed/out")
      .validate([](const typed_config& cfg) -> caf::error {
        if (cfg.prefix == "bad")
          return grove::make_error(grove::errc::invalid_config,
                                   "prefix: 'bad' is refused on purpose");
        return {};
      });
  }
};

/// Echoes with the prefix of the configuration in force; the prefix changes live.
class typed_echo : public grove::typed_plugin<typed_config> {
public:
  caf::error init(grove::context& ctx, const typed_config& cfg) override {
    ctx_ = &ctx;
    return ctx.subscribe(cfg.listen);
  }

  caf::error reconfigure(const typed_config& cfg) override {
    if (cfg.listen != config().listen) // config() is still the old one here
      return grove::make_error(grove::errc::unsupported, "listen changed");
    return {};
  }

  void on_message(const grove::Envelope& msg) override {
    ctx_->publish("test/typed/out", config().prefix + msg.payload(), "text/plain");
  }

private:
  grove::context* ctx_ = nullptr;
};

} // namespace

GROVE_TYPED_PLUGIN(typed_echo, TEST_PLUGIN_NAME, TEST_PLUGIN_VERSION)
#else
GROVE_PLUGIN(echo, TEST_PLUGIN_NAME, TEST_PLUGIN_VERSION, echo_schema)
#endif
