// ota: the bus face of the A/B installer (README.md). $grove/ota/apply verifies and
// stages a bundle off the plugin's actor (run_blocking), switches `current`, answers, and
// then stops groved so grove-ota-watchdog starts the new release on trial. With a
// thing_name it also takes AWS IoT Jobs through message_manager's cloud link (a system
// client): the next execution is applied like an apply request, and its outcome (the
// watchdog's journal after the restart) reported SUCCEEDED or FAILED with the reason.

#include "bundle.hpp"
#include "install.hpp"
#include "jobs.hpp"

#include "grove/kernel/control_client.hpp"
#include "grove/message_manager/client.hpp"

#include "grove/config_map.hpp"
#include "grove/errors.hpp"
#include "grove/http_fetch.hpp"
#include "grove/ota/client.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

namespace {

using namespace std::chrono_literals;
namespace ota = grove::ota;
namespace mmc = grove::message_manager;

// Downloads an https:// bundle into `dir`/<job>.tar (the install root's file system, so
// staging from it is a local copy); the file, or why not. Blocking: run_blocking only.
caf::expected<std::filesystem::path> download_bundle(const std::string& url,
                                                     const std::filesystem::path& dir,
                                                     const std::string& job,
                                                     const grove::http::fetch_options& o) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return grove::make_error(grove::errc::system_error,
                             "ota: cannot create " + dir.string() + ": " + ec.message());
  auto file = dir / (job + ".tar");
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return grove::make_error(grove::errc::system_error,
                             "ota: cannot create " + file.string() + ": " + std::strerror(errno));
  std::string write_error;
  auto why = grove::http::get(url, o, [&](const char* data, size_t n) {
    while (n > 0) {
      auto w = ::write(fd, data, n);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0) {
        write_error = "cannot write " + file.string() + ": " + std::strerror(errno);
        return false;
      }
      data += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  });
  ::close(fd);
  if (!write_error.empty())
    why = write_error;
  if (!why.empty()) {
    std::filesystem::remove(file, ec);
    return grove::make_error(grove::errc::unsupported, "ota: download of the bundle: " + why);
  }
  return file;
}

struct ota_config {
  std::filesystem::path install_root;
  std::vector<std::string> trusted_keys;
  bool allow_downgrade = false;
  int64_t stage_margin_bytes = 0;
  std::string restart;
  std::string thing_name;
  std::string plugin_updates;
  std::filesystem::path bundle_ca_file;
  int64_t bundle_max_bytes = 0;
  int64_t download_timeout_seconds = 0;

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
           "none (the next start runs it)")
      .key("plugin_updates", &ota_config::plugin_updates, "reload",
           grove::one_of{"reload", "restart"},
           "a plugins-only bundle: reload (each plugin hot-reloaded from the new release "
           "through the kernel, no restart; needs may_control_plugins: true) or restart")
      .key("thing_name", &ota_config::thing_name, "",
           "the core's AWS IoT thing: take AWS IoT Jobs on $aws/things/<thing_name>/jobs/ "
           "through message_manager's cloud link (list ota in its cloud.system_clients); "
           "empty: no jobs")
      .key("bundle_ca_file", &ota_config::bundle_ca_file, std::filesystem::path{},
           "CA bundle (PEM) an https:// bundle URL's server certificate must chain to; "
           "empty: the system's CAs")
      .key("bundle_max_bytes", &ota_config::bundle_max_bytes, int64_t{512} << 20,
           grove::range{1, int64_t{1} << 40},
           "largest bundle downloaded from an https:// URL; a larger one is refused "
           "(before its body when the server sends Content-Length)")
      .key("download_timeout_seconds", &ota_config::download_timeout_seconds, 60,
           grove::range{1, 3600}, "connect and read timeout of a bundle download");
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
    cancel_ = std::make_shared<grove::http::fetch_canceller>();
    if (auto err = ctx.serve(ota::apply_topic, [this](const grove::Envelope& msg) { apply(msg); }))
      return err;
    using status_service = grove::service<ota::StatusRequest, ota::StatusReply>;
    if (auto err = status_service::serve(ctx, ota::status_topic,
                                         [this](auto&, auto&) { return status(); }))
      return err;
    if (cfg_.thing_name.empty())
      return {};
    if (!ota::jobs::valid_thing_name(cfg_.thing_name))
      return grove::make_error(grove::errc::invalid_config,
                               "ota: thing_name '" + cfg_.thing_name + "' is not a thing name");
    if (auto err = ctx.subscribe(mmc::system_filter(ctx.name())))
      return err;
    if (auto err = ctx.subscribe(mmc::cloud_link_topic))
      return err;
    return {};
  }

  caf::error start() override {
    // What a stop or a kill left of a download: never installed from, so gone.
    std::error_code ec;
    std::filesystem::remove_all(cfg_.install_root / "downloads", ec);
    if (cfg_.thing_name.empty())
      return {};
    cloud_.emplace(*ctx_, [this](mmc::cloud_filters::state st, const caf::error& err) {
      if (st == mmc::cloud_filters::state::refused)
        ctx_->log().error("ota: cannot subscribe to the jobs topics (is ota in "
                          "message_manager's cloud.system_clients?): {}; retrying",
                          grove::describe(err));
      if (st == mmc::cloud_filters::state::subscribed)
        ask_next();
    });
    auto f = ota::jobs::filters(cfg_.thing_name);
    cloud_->set({f.begin(), f.end()});
    return {};
  }

  void stop() override {
    if (cancel_)
      cancel_->cancel(); // a download in flight is cut, not waited for
  }

  void on_message(const grove::Envelope& msg) override {
    if (msg.topic() == mmc::cloud_link_topic) {
      grove::mm::CloudLink ev;
      if (ev.ParseFromString(msg.payload()) && ev.connected() && cloud_
          && cloud_->current() == mmc::cloud_filters::state::subscribed)
        ask_next();
      return;
    }
    auto topic = mmc::cloud_topic_of(msg.topic(), ctx_->name());
    if (!topic)
      return;
    const auto& thing = cfg_.thing_name;
    if (auto job = ota::jobs::job_of(*topic, thing, "/update/accepted"); !job.empty()) {
      on_update_answer(job, msg.payload(), false);
      return;
    }
    if (auto job = ota::jobs::job_of(*topic, thing, "/update/rejected"); !job.empty()) {
      on_update_answer(job, msg.payload(), true);
      return;
    }
    if (auto job = ota::jobs::job_of(*topic, thing, "/get/accepted"); !job.empty() && job != "$next") {
      on_reread(job, msg.payload());
      return;
    }
    if (auto job = ota::jobs::job_of(*topic, thing, "/get/rejected"); !job.empty()) {
      ctx_->log().warn("ota: the cloud refused to describe job {}: {}", job, msg.payload());
      if (job != "$next")
        drop(job, "it cannot be read back");
      return;
    }
    if (*topic != ota::jobs::notify_next_topic(thing)
        && *topic != ota::jobs::get_topic(thing, "$next") + "/accepted")
      return;
    auto ex = ota::jobs::parse_execution(msg.payload());
    if (!ex) {
      ctx_->log().warn("ota: {} ({})", grove::describe(ex.error()), *topic);
      return;
    }
    if (*ex)
      on_execution(**ex);
  }

private:
  using apply_service = grove::service<ota::ApplyRequest, ota::ApplyReply>;
  using done_fn = std::function<void(caf::expected<ota::state>)>;

  void apply(const grove::Envelope& msg) {
    auto req = apply_service::decode(msg);
    if (!req) {
      ctx_->reply_error(msg, std::move(req.error()));
      return;
    }
    install(req->bundle(), req->job_id(), req->allow_downgrade(),
            [this, msg](caf::expected<ota::state> st) {
              if (!st) {
                ctx_->reply_error(msg, std::move(st.error()));
                return;
              }
              ota::ApplyReply reply;
              reply.set_version(st->version);
              reply.set_release(st->target);
              reply.set_previous(st->previous);
              reply.set_phase(st->phase);
              reply.set_restarting(st->phase == "trial" && cfg_.restart == "exit");
              apply_service::reply(*ctx_, msg, std::move(reply));
            });
  }

  // Verifies, stages and switches off the actor; `done` runs on it, and then (restart:
  // exit) groved stops so the watchdog starts the new release.
  void install(std::string bundle, std::string job, bool allow_downgrade, done_fn done) {
    if (busy_) {
      done(grove::make_error(grove::errc::invalid_state, "ota: an update is being applied"));
      return;
    }
    busy_ = true;
    ota::policy pol;
    pol.trusted_keys = cfg_.trusted_keys;
    pol.allow_downgrade = cfg_.allow_downgrade || allow_downgrade;
    pol.margin_bytes = static_cast<uint64_t>(cfg_.stage_margin_bytes);
    auto root = cfg_.install_root;
    ctx_->run_blocking(
      [root, bundle, pol, job] {
        return ota::install(root, ota::source{bundle, {}}, pol, job);
      },
      [this, done](caf::expected<caf::expected<ota::state>> outer) {
        auto st = outer ? std::move(*outer) : caf::expected<ota::state>{std::move(outer.error())};
        busy_ = false;
        if (!st) {
          refused_.inc();
          ctx_->log().warn("ota: refused: {}", grove::describe(st.error()));
          done(std::move(st));
          return;
        }
        applied_.inc();
        ctx_->log().info("ota: switched to {} (previous {})", st->target, st->previous);
        if (st->phase == "trial" && st->kind == "plugins" && cfg_.plugin_updates == "reload") {
          auto names = plugins_of(*st);
          if (!names.empty()) {
            busy_ = true;
            hot_reload(*st, std::move(names), 0, std::move(done));
            return;
          }
        }
        done(std::move(st));
        restart();
      });
  }

  void restart() {
    if (cfg_.restart == "exit")
      // After the reply is out: groved's orderly stop, then the watchdog's restart.
      ctx_->after(300ms, [] { ::kill(::getpid(), SIGTERM); });
  }

  // The plugins a plugins release replaces (lib/grove/plugins/lib<name>.so), or none
  // when it replaces this plugin itself (it cannot reload itself: a restart instead).
  std::vector<std::string> plugins_of(const ota::state& st) {
    std::ifstream in{cfg_.install_root / "releases" / st.target / "ota-manifest.json"};
    std::stringstream buf;
    buf << in.rdbuf();
    auto m = ota::parse_manifest(buf.str());
    std::vector<std::string> names;
    if (!m)
      return names;
    for (auto& f : m->files) {
      auto file = std::filesystem::path{f.path}.filename().string();
      if (file.rfind("lib", 0) != 0 || !file.ends_with(".so"))
        return {};
      auto name = file.substr(3, file.size() - 6);
      if (name == ctx_->name())
        return {};
      names.push_back(name);
    }
    return names;
  }

  std::string plugin_path(const std::string& release, const std::string& name) {
    return (cfg_.install_root / "releases" / release / "lib/grove/plugins"
            / ("lib" + name + ".so"))
      .string();
  }

  // A plugins release without a restart: each plugin hot-reloaded from the new release
  // (the kernel loses no message). A refusal switches back, reloads the ones already
  // done from the previous release, and journals the rollback.
  void hot_reload(ota::state st, std::vector<std::string> names, size_t i, done_fn done) {
    if (i == names.size()) {
      busy_ = false;
      st.phase = "healthy";
      st.reason.clear();
      if (auto err = ota::write_state(cfg_.install_root, st))
        ctx_->log().error("ota: {}", grove::describe(err));
      ctx_->log().info("ota: {} hot-reloaded from {}", names.size(), st.target);
      done(std::move(st));
      return;
    }
    grove::control_client::reload(
      *ctx_, names[i], plugin_path(st.target, names[i]), 60s,
      [this, st, names, i, done](caf::expected<grove::control::PluginInfo> r) mutable {
        if (r) {
          hot_reload(std::move(st), std::move(names), i + 1, std::move(done));
          return;
        }
        auto reason = "hot reload of " + names[i] + " failed: " + grove::describe(r.error());
        ctx_->log().error("ota: {}; rolling back to {}", reason, st.previous);
        st.reason = reason;
        ota::write_state(cfg_.install_root, st);
        if (auto err = ota::switch_to(cfg_.install_root, st.previous))
          ctx_->log().error("ota: {}", grove::describe(err));
        for (size_t j = 0; j < i; ++j)
          grove::control_client::reload(*ctx_, names[j], plugin_path(st.previous, names[j]),
                                        60s, [](caf::expected<grove::control::PluginInfo>) {});
        st.phase = "rolled_back";
        ota::write_state(cfg_.install_root, st);
        busy_ = false;
        done(grove::make_error(grove::errc::plugin_failed, "ota: " + reason + " (rolled back)"));
      });
  }

  // --- AWS IoT Jobs ---

  void ask_next() {
    publish(ota::jobs::get_topic(cfg_.thing_name, "$next"), ota::jobs::get_payload("ota-next"));
  }

  void publish(std::string topic, std::string payload) {
    mmc::cloud_publish(*ctx_, std::move(topic), std::move(payload), 10s,
                       [this](caf::expected<grove::mm::CloudPublished> r) {
                         if (!r)
                           ctx_->log().warn("ota: cannot publish to the cloud: {}",
                                            grove::describe(r.error()));
                       });
  }

  // Updates of one execution go out one at a time, each with expectedVersion: the
  // version of the last answer (the execution as read, then each update/accepted's
  // executionState). A VersionMismatch re-reads the execution (<job>/get) and sends the
  // same update again with the version read; a terminal execution drops what is queued.
  struct pending_update {
    std::string status;
    std::map<std::string, std::string> details;
  };

  struct job_track {
    int64_t version = 0;
    std::deque<pending_update> queue;
    bool in_flight = false;
    uint64_t seq = 0;   // of the update in flight, for its answer timeout
    int mismatches = 0; // in a row, for the head of the queue
  };

  void report(const ota::jobs::execution& ex, std::string_view status,
              std::map<std::string, std::string> details) {
    // notify-next and a get reply can both bring the same execution, the second one late:
    // nothing after a job's terminal report (AWS would reject it: already terminal).
    if (std::find(finished_.begin(), finished_.end(), ex.job_id) != finished_.end())
      return;
    if (ota::jobs::terminal(status)) {
      finished_.push_back(ex.job_id);
      if (finished_.size() > 64)
        finished_.pop_front();
    }
    ctx_->log().info("ota: job {} {}", ex.job_id, status);
    auto& t = tracks_[ex.job_id];
    t.version = std::max(t.version, ex.version_number);
    t.queue.push_back({std::string{status}, std::move(details)});
    send_next(ex.job_id);
  }

  void send_next(const std::string& job) {
    auto it = tracks_.find(job);
    if (it == tracks_.end())
      return;
    auto& t = it->second;
    if (t.in_flight)
      return;
    if (t.queue.empty()) {
      tracks_.erase(it);
      return;
    }
    t.in_flight = true;
    auto seq = ++t.seq;
    auto& head = t.queue.front();
    publish(ota::jobs::update_topic(cfg_.thing_name, job),
            ota::jobs::update_payload(head.status, head.details, t.version, "ota-" + job));
    // No answer (lost with the link): read the execution again, then resend.
    ctx_->after(30s, [this, job, seq] {
      auto i = tracks_.find(job);
      if (i != tracks_.end() && i->second.in_flight && i->second.seq == seq)
        reread(job);
    });
  }

  void reread(const std::string& job) {
    publish(ota::jobs::get_topic(cfg_.thing_name, job), ota::jobs::get_payload("ota-reread-" + job));
  }

  void drop(const std::string& job, std::string_view why) {
    auto it = tracks_.find(job);
    if (it == tracks_.end())
      return;
    if (!it->second.queue.empty())
      ctx_->log().warn("ota: job {}: {} update(s) not sent: {}", job, it->second.queue.size(), why);
    tracks_.erase(it);
  }

  void on_update_answer(const std::string& job, const std::string& payload, bool rejected) {
    auto a = ota::jobs::parse_update_answer(payload, rejected);
    if (!a) {
      ctx_->log().warn("ota: job {}: {}", job, grove::describe(a.error()));
      return;
    }
    auto it = tracks_.find(job);
    if (it == tracks_.end() || !it->second.in_flight)
      return; // not ours, or answered already
    auto& t = it->second;
    if (!rejected) {
      // includeJobExecutionState: the new version; without it, AWS's increment.
      t.version = a->version > 0 ? a->version : t.version + 1;
      t.queue.pop_front();
      t.in_flight = false;
      t.mismatches = 0;
      send_next(job);
      return;
    }
    if (a->code == "VersionMismatch") {
      ctx_->log().info("ota: job {}: version {} is not the cloud's{}; reading it again", job,
                       t.version, a->version > 0 ? " (" + std::to_string(a->version) + ")" : "");
      if (++t.mismatches > 5) {
        drop(job, "the version keeps changing");
        return;
      }
      reread(job); // in_flight stays: the head is resent once the execution is read
      return;
    }
    ctx_->log().warn("ota: the cloud rejected job {}'s {} update: {} {}", job,
                     t.queue.front().status, a->code, a->message);
    t.queue.pop_front();
    t.in_flight = false;
    send_next(job);
  }

  void on_reread(const std::string& job, const std::string& payload) {
    auto ex = ota::jobs::parse_execution(payload);
    auto it = tracks_.find(job);
    if (it == tracks_.end())
      return;
    if (!ex || !*ex || (*ex)->job_id != job) {
      drop(job, ex ? "the cloud has no such execution" : grove::describe(ex.error()));
      return;
    }
    if (ota::jobs::terminal((*ex)->status)) {
      drop(job, "the execution is already " + (*ex)->status);
      return;
    }
    it->second.version = (*ex)->version_number;
    it->second.in_flight = false;
    send_next(job);
  }

  void on_execution(const ota::jobs::execution& ex) {
    auto st = ota::read_state(cfg_.install_root);
    if ((ex.status == "IN_PROGRESS" || ex.status == "QUEUED") && st && st->job_id == ex.job_id) {
      // Ours, from before the restart (still QUEUED when its IN_PROGRESS was not
      // accepted before groved stopped): its outcome is the watchdog's journal.
      if (st->phase == "trial") {
        if (!polling_) {
          polling_ = true;
          ctx_->after(1s, [this] {
            polling_ = false;
            ask_next();
          });
        }
        return;
      }
      if (st->phase == "healthy" || st->phase == "idle")
        report(ex, "SUCCEEDED", {{"version", st->version}, {"release", st->target}});
      else
        report(ex, "FAILED", {{"reason", st->reason.empty() ? st->phase : st->reason},
                              {"version", st->version}});
      return;
    }
    if (ex.status != "QUEUED" && ex.status != "IN_PROGRESS")
      return;
    if (busy_ || job_running_ == ex.job_id)
      return;
    // A late notify or get answer can still show a job this plugin already finished.
    if (std::find(finished_.begin(), finished_.end(), ex.job_id) != finished_.end())
      return;
    auto bundle = ota::jobs::bundle_of(ex.document);
    if (!bundle) {
      report(ex, "FAILED", {{"reason", grove::describe(bundle.error())}});
      return;
    }
    job_running_ = ex.job_id;
    if (bundle->starts_with("https://")) {
      report(ex, "IN_PROGRESS", {{"step", "downloading"}});
      download_then_install(ex, *bundle);
      return;
    }
    report(ex, "IN_PROGRESS", {{"step", "installing"}});
    install_job(ex, *bundle, false);
  }

  // An https:// bundle: downloaded off the actor (TLS verified against bundle_ca_file,
  // at most bundle_max_bytes), then installed like a local one and removed; whether it
  // is installed is still decided by its signature.
  void download_then_install(const ota::jobs::execution& ex, const std::string& url) {
    busy_ = true; // no apply while the download runs
    grove::http::fetch_options o;
    o.ca_file = cfg_.bundle_ca_file;
    o.max_bytes = static_cast<uint64_t>(cfg_.bundle_max_bytes);
    o.max_bytes_name = "bundle_max_bytes";
    o.timeout = std::chrono::seconds(cfg_.download_timeout_seconds);
    o.cancel = cancel_;
    auto dir = cfg_.install_root / "downloads";
    ctx_->log().info("ota: job {}: downloading {}", ex.job_id, url);
    ctx_->run_blocking(
      [url, dir, job = ex.job_id, o] { return download_bundle(url, dir, job, o); },
      [this, ex](caf::expected<caf::expected<std::filesystem::path>> outer) {
        auto file = outer ? std::move(*outer)
                          : caf::expected<std::filesystem::path>{std::move(outer.error())};
        busy_ = false;
        if (!file) {
          job_running_.clear();
          refused_.inc();
          ctx_->log().warn("ota: job {}: {}", ex.job_id, grove::describe(file.error()));
          report(ex, "FAILED", {{"reason", grove::describe(file.error())}});
          return;
        }
        install_job(ex, file->string(), true);
      });
  }

  void install_job(const ota::jobs::execution& ex, const std::string& bundle, bool downloaded) {
    install(bundle, ex.job_id, false, [this, ex, bundle, downloaded](caf::expected<ota::state> st) {
      if (downloaded) {
        std::error_code ec;
        std::filesystem::remove(bundle, ec); // staged (or refused): no longer needed
      }
      job_running_.clear();
      if (!st)
        report(ex, "FAILED", {{"reason", grove::describe(st.error())}});
      else if (st->phase != "trial") // a first install: nothing to wait for
        report(ex, "SUCCEEDED", {{"version", st->version}});
      // else: the new release reports once the watchdog decided
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
  bool polling_ = false;
  std::string job_running_;
  std::map<std::string, job_track> tracks_;
  std::deque<std::string> finished_; // jobs reported terminal (the last 64)
  std::shared_ptr<grove::http::fetch_canceller> cancel_;
  std::optional<mmc::cloud_filters> cloud_;
  grove::counter applied_;
  grove::counter refused_;
};

} // namespace

GROVE_TYPED_PLUGIN(ota_plugin, "ota", "0.1.0")
