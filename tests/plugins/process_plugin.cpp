// "spawner": a test plugin for grove::process, context::post and run_blocking. It runs
// one child (`sh -c <command>`), reports on the bus what happened and where it ran, and
// hands the child to its next instance across a reload when `keep` is set.
//
// Bus topics: test/proc/in (commands: post, blocking, blocking_throws, stop, pid),
// test/proc/out (reports, "<what>|<detail>|<on the actor: yes/no>").

#include <sys/types.h>

#include <stdexcept>
#include <string>
#include <thread>

#include "grove/plugin.hpp"
#include "grove/process.hpp"

namespace {

constexpr const char* schema = R"(
command: {type: string, default: "sleep 1000", doc: "run by sh -c"}
keep: {type: bool, default: true, doc: "hand the child to the next instance on reload"}
adopt: {type: bool, default: true, doc: "take a child an earlier instance kept"}
restart: {type: bool, default: false}
)";

class spawner : public grove::plugin {
public:
  caf::error init(grove::context& ctx) override {
    ctx_ = &ctx;
    return ctx.subscribe("test/proc/in");
  }

  caf::error start() override {
    auto kept = ctx_->config()["adopt"].as<bool>() ? ctx_->adopt_process("child")
                                                   : std::nullopt;
    if (kept) {
      child_ = std::move(*kept);
      child_.bind(*ctx_, callbacks());
      report("started", "adopted " + std::to_string(child_.pid()));
      return {};
    }
    grove::process_options opts;
    opts.argv = {"sh", "-c", ctx_->config()["command"].as<std::string>()};
    opts.log_prefix = "child: ";
    opts.stop_grace = std::chrono::milliseconds{200};
    opts.restart = ctx_->config()["restart"].as<bool>();
    auto p = grove::process::start(*ctx_, std::move(opts), callbacks());
    if (!p)
      return p.error();
    child_ = std::move(*p);
    report("started", "fresh " + std::to_string(child_.pid()));
    return {};
  }

  void on_message(const grove::Envelope& msg) override {
    const auto& cmd = msg.payload();
    if (cmd == "post") {
      // Another thread; the plugin joins it before returning, as plugins must.
      std::thread t{[this] { ctx_->post([this] { report("posted", "", true); }); }};
      t.join();
    } else if (cmd == "blocking") {
      ctx_->run_blocking(
        [this] {
          // On a pool thread: timers refuse to be set here (they belong to the actor).
          return std::string{on_actor() ? "work on the actor" : "work off the actor"};
        },
        [this](caf::expected<std::string> r) {
          report("blocking", r ? *r : grove::describe(r.error()), true);
        });
    } else if (cmd == "blocking_throws") {
      ctx_->run_blocking([]() -> int { throw std::runtime_error("disk on fire"); },
                         [this](caf::expected<int> r) {
                           report("blocking", r ? "no error" : grove::describe(r.error()),
                                  true);
                         });
    } else if (cmd == "stop") {
      child_.stop();
    } else if (cmd == "pid") {
      report("pid", std::to_string(child_.pid()));
    }
  }

  caf::expected<std::string> snapshot() override {
    if (ctx_->config()["keep"].as<bool>() && child_)
      ctx_->keep_process("child", std::move(child_));
    return std::string{};
  }

  caf::error restore(std::string_view) override {
    return {};
  }

private:
  grove::process_callbacks callbacks() {
    grove::process_callbacks cb;
    cb.on_exit = [this](const grove::process_exit& ex) {
      report("exit", ex.describe() + (ex.requested ? " requested" : "")
                       + (ex.restarting ? " restarting" : "") + (ex.gave_up ? " gave_up" : ""),
             true);
    };
    cb.on_output = [this](grove::output_stream s, const std::string& line) {
      report(s == grove::output_stream::out ? "stdout" : "stderr", line, true);
    };
    return cb;
  }

  // True on the plugin's actor: only there does the kernel accept a timer.
  bool on_actor() {
    auto id = ctx_->after(std::chrono::hours{1}, [] {});
    if (id == 0)
      return false;
    ctx_->cancel(id);
    return true;
  }

  void report(const std::string& what, const std::string& detail, bool check = false) {
    std::string where = check ? (on_actor() ? "yes" : "no") : "-";
    ctx_->publish("test/proc/out", what + "|" + detail + "|" + where);
  }

  grove::context* ctx_ = nullptr;
  grove::process child_;
};

} // namespace

GROVE_PLUGIN(spawner, "spawner", "1.0.0", schema)
