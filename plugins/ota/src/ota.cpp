// ota: the bus face of the A/B installer (README.md). $grove/ota/apply verifies and
// stages a bundle off the plugin's actor (run_blocking), switches `current`, answers, and
// then stops groved so grove-ota-watchdog starts the new release on trial.

#include "bundle.hpp"
#include "install.hpp"

#include "grove/config_map.hpp"
#include "grove/errors.hpp"
#include "grove/ota/client.hpp"

#include <signal.h>
#include <unistd.h>

#include <chrono>

#include <spdlog/spdlog.h>

namespace {

using namespace std::chrono_literals;
namespace ota = grove::ota;

struct ota_config {
  std::filesystem::path install_root;
  std::vector<std::string> trusted_keys;
  bool allow_downgrade = false;
  int64_t stage_margin_bytes = 0;
  std::string restart;

  static grove::config_map<ota_config> map() {
    return grove::config_map<ota_config>{}
      .key_no_default("install_root", &ota_config::install_root, grove::required,
                      "the A/B install root: releases/, current, ota-state.json (absolute; "
                      "a relative path is under the plugin's state directory)")
      .key_no_default("trusted_keys", &ota_config::trusted_keys, grove::required,
                      "Ed25519 public keys (64 hex digits, grove-ota keygen's .pub) whose "
                      "signatures are accepted")
      .key("allow_downgrade", &ota_config::allow_downgrade, false,
           "accept a bundle older than the installed version")
      .key("stage_margin_bytes", &ota_config::stage_margin_bytes, 4 << 20,
           grove::range{0, int64_t{1} << 40},
           "free disk kept beyond a bundle's unpacked size; less is refused before staging")
      .key("restart", &ota_config::restart, "exit", grove::one_of{"exit", "none"},
           "after a switch: exit (groved stops, the watchdog starts the new release) or "
           "none (the next start runs it)");
  }
};

class ota_plugin : public grove::typed_plugin<ota_config> {
public:
  caf::error init(grove::context& ctx, const ota_config& cfg) override {
    ctx_ = &ctx;
    cfg_ = cfg;
    for (auto& k : cfg_.trusted_keys)
      if (!ota::from_hex(k, 32))
        return grove::make_error(grove::errc::invalid_config,
                                 "ota: trusted_keys: '" + k + "' is not 64 hex digits");
    auto applied = ctx.counter("applied", "Bundles installed (switched to, on trial).");
    auto refused = ctx.counter("refused", "Bundles refused before anything changed.");
    if (!applied || !refused)
      return grove::make_error(grove::errc::init_failed, "ota: cannot declare counters");
    applied_ = *applied, refused_ = *refused;
    if (auto err = ctx.serve(ota::apply_topic, [this](const grove::Envelope& msg) { apply(msg); }))
      return err;
    using status_service = grove::service<ota::StatusRequest, ota::StatusReply>;
    return status_service::serve(ctx, ota::status_topic,
                                 [this](auto&, auto&) { return status(); });
  }

  void on_message(const grove::Envelope&) override {
  }

private:
  using apply_service = grove::service<ota::ApplyRequest, ota::ApplyReply>;

  void apply(const grove::Envelope& msg) {
    auto req = apply_service::decode(msg);
    if (!req) {
      ctx_->reply_error(msg, std::move(req.error()));
      return;
    }
    if (busy_) {
      ctx_->reply_error(msg, grove::make_error(grove::errc::invalid_state,
                                               "ota: an update is being applied"));
      return;
    }
    busy_ = true;
    ota::policy pol;
    pol.trusted_keys = cfg_.trusted_keys;
    pol.allow_downgrade = cfg_.allow_downgrade || req->allow_downgrade();
    pol.margin_bytes = static_cast<uint64_t>(cfg_.stage_margin_bytes);
    auto root = cfg_.install_root;
    auto bundle = std::filesystem::path{req->bundle()};
    auto job = req->job_id();
    ctx_->run_blocking(
      [root, bundle, pol, job] {
        return ota::install(root, ota::source{bundle, {}}, pol, job);
      },
      [this, msg](caf::expected<caf::expected<ota::state>> outer) {
        auto st = outer ? std::move(*outer) : caf::expected<ota::state>{std::move(outer.error())};
        busy_ = false;
        if (!st) {
          refused_.inc();
          ctx_->log().warn("ota: refused: {}", grove::describe(st.error()));
          ctx_->reply_error(msg, std::move(st.error()));
          return;
        }
        applied_.inc();
        ota::ApplyReply reply;
        reply.set_version(st->version);
        reply.set_release(st->target);
        reply.set_previous(st->previous);
        reply.set_phase(st->phase);
        reply.set_restarting(cfg_.restart == "exit");
        ctx_->log().info("ota: switched to {} (previous {})", st->target, st->previous);
        apply_service::reply(*ctx_, msg, std::move(reply));
        if (cfg_.restart == "exit")
          // After the reply is out: groved's orderly stop, then the watchdog's restart.
          ctx_->after(300ms, [] { ::kill(::getpid(), SIGTERM); });
      });
  }

  caf::expected<ota::StatusReply> status() {
    auto st = ota::read_state(cfg_.install_root);
    if (!st)
      return std::move(st.error());
    ota::StatusReply r;
    r.set_phase(st->phase);
    r.set_current(ota::current_release(cfg_.install_root));
    r.set_previous(st->previous);
    r.set_target(st->target);
    r.set_version(st->version);
    r.set_reason(st->reason);
    r.set_job_id(st->job_id);
    r.set_attempts(st->attempts);
    r.set_current_version(ota::release_version(cfg_.install_root, r.current()));
    return r;
  }

  grove::context* ctx_ = nullptr;
  ota_config cfg_;
  bool busy_ = false;
  grove::counter applied_;
  grove::counter refused_;
};

} // namespace

GROVE_TYPED_PLUGIN(ota_plugin, "ota", "0.1.0")
