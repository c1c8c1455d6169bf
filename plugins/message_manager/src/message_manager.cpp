// message_manager: the device endpoint (a managed Mosquitto with Grove's broker plugin),
// the subscription table that decides every route, the cloud connection and the spool
// in front of it. See README.md for topics, configuration and guarantees.

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include <spdlog/spdlog.h>

#include "broker_process.hpp"
#include "cloud_forwarder.hpp"
#include "config.hpp"
#include "grove/group.pb.h"
#include "grove/config_map.hpp"
#include "grove/kernel/group_client.hpp"
#include "grove/message_manager/client.hpp"
#include "mqtt_link.hpp"
#include "routes.hpp"
#include "spool.hpp"

namespace grove::mm {
namespace {

// Bus topics: into the table from functions and the shadow service, and out of it.
using grove::message_manager::in_prefix;
constexpr std::string_view out_function_prefix = "$grove/mm/out/function/";
constexpr std::string_view out_shadow_prefix = "$grove/mm/out/shadow/";
constexpr std::string_view group_current = "$grove/group/current";

std::string format_bytes(uint64_t n) {
  if (n >= 1024 * 1024)
    return fmt::format("{:.1f} MB", n / (1024.0 * 1024.0));
  if (n >= 1024)
    return fmt::format("{:.1f} KB", n / 1024.0);
  return fmt::format("{} B", n);
}

// Where the broker plugin lives next to groved: <prefix>/<libdir>/grove/broker/ when
// installed, <build>/lib/grove/broker/ in the build tree.
std::filesystem::path default_broker_plugin() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec)
    return {};
  auto prefix = exe.parent_path().parent_path();
  for (auto dir : {prefix / GROVE_BROKER_RELDIR, prefix / "lib" / "grove" / "broker"}) {
    auto file = dir / "grove_broker_plugin.so";
    if (std::filesystem::is_regular_file(file, ec))
      return file;
  }
  return prefix / GROVE_BROKER_RELDIR / "grove_broker_plugin.so";
}

// A log_sink that writes to the plugin's logger with a prefix naming the part.
log_sink to_logger(spdlog::logger* log, std::string prefix) {
  return [log, prefix = std::move(prefix)](log_level level, std::string line) {
    static constexpr spdlog::level::level_enum levels[]
      = {spdlog::level::debug, spdlog::level::info, spdlog::level::warn, spdlog::level::err};
    log->log(levels[static_cast<int>(level)], "{}{}", prefix, line);
  };
}

class message_manager final : public grove::typed_plugin<plugin_config> {
public:
  caf::error init(grove::context& ctx, const plugin_config& cfg) override {
    ctx_ = &ctx;
    log_ = &ctx.log();
    dev_mode_ = cfg.development_mode;
    const auto& b = cfg.broker;
    broker_opts_.state_dir = ctx.state_dir() / "broker";
    broker_opts_.mosquitto_exe = b.mosquitto;
    broker_opts_.plugin_path = b.plugin.empty() ? default_broker_plugin() : b.plugin;
    broker_opts_.bind_address = b.bind;
    broker_opts_.port = b.port;
    broker_opts_.dev_mode = dev_mode_;
    broker_opts_.ca_file = b.ca_file.string();
    broker_opts_.cert_file = b.cert_file.string();
    broker_opts_.key_file = b.key_file.string();
    broker_opts_.max_payload_bytes = b.max_payload_bytes;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(broker_opts_.plugin_path, ec))
      return make_error(errc::invalid_config,
                        "broker.plugin: no broker plugin at '"
                          + broker_opts_.plugin_path.string() + "'");
    local_opts_.name = "local";
    local_opts_.host = broker_opts_.bind_address == "0.0.0.0" || broker_opts_.bind_address == "::"
                         ? std::string{"127.0.0.1"}
                         : broker_opts_.bind_address;
    local_opts_.port = broker_opts_.port;
    local_opts_.client_id = "grove";
    local_opts_.mqtt_version = 5;
    local_opts_.keep_alive = std::chrono::seconds{30};
    local_opts_.retry_initial = std::chrono::milliseconds{100};
    local_opts_.retry_max = std::chrono::milliseconds{2000};
    local_opts_.max_inflight = 100; // the broker's max_inflight_messages
    local_opts_.log = to_logger(log_, "local link: ");
    if (dev_mode_) {
      local_opts_.tls = false;
      local_opts_.username = "grove";
    } else {
      // plugin_config::map() made sure the TLS files are named.
      local_opts_.tls = true;
      local_opts_.ca_file = broker_opts_.ca_file;
      local_opts_.cert_file = b.client_cert_file.string();
      local_opts_.key_file = b.client_key_file.string();
    }

    cloud_enabled_ = cfg.cloud.enabled;
    if (cloud_enabled_)
      cloud_opts_ = cloud_link_options(cfg.cloud);

    spool_options so;
    so.storage = cfg.spool.storage;
    so.file = ctx.state_dir() / "spool.db";
    so.max_size_bytes = cfg.spool.max_size_bytes;
    so.when_full = cfg.spool.when_full;
    auto sp = spool::open(std::move(so));
    if (!sp)
      return sp.error();
    spool_ = std::move(*sp);
    if (auto n = spool_->stats().count; n > 0)
      log_->info("spool: {} cloud-bound messages from before the restart ({} possibly "
                 "delivered already)",
                 n, spool_->stats().redelivered_after_restart);
    return {};
  }

  caf::error start() override {
    if (dev_mode_) {
      log_->warn("**************************************************************");
      log_->warn("DEVELOPMENT MODE: devices connect over PLAIN TCP on {}:{} with a",
                 broker_opts_.bind_address, broker_opts_.port);
      log_->warn("bare username and NO certificate. Anyone on the network can");
      log_->warn("pose as any device. Never use development_mode in production.");
      log_->warn("**************************************************************");
    }
    broker_ = std::make_unique<broker_process>(broker_opts_);
    auto owner = process::owner_of(*ctx_);
    auto on_failed = [this](std::string why) {
      ctx_->fail(make_error(errc::plugin_failed, "broker: " + why));
    };
    if (auto kept = ctx_->adopt_process("broker")) {
      // A hot reload: the broker the last instance ran keeps its devices connected, if
      // it runs with the configuration this one would write.
      auto text = broker_->config_text();
      if (text && *text == kept_config_ && kept->running()) {
        if (auto err = broker_->adopt(std::move(*kept), owner, on_failed))
          return err;
        log_->info("took over the running broker (pid {}): devices stay connected",
                   broker_->status().pid);
        return start_links();
      }
      // Dropping `kept` stops it; the new broker waits until the port is free.
      log_->info("the broker's configuration changed: replacing it");
    }
    // Until the group arrives nothing may connect; a table left by an earlier run could
    // be stale.
    std::filesystem::create_directories(broker_opts_.state_dir);
    if (auto err = broker_->write_acl(routes{}.acl_text()))
      return err;
    if (auto err = broker_->begin_start(owner, on_failed))
      return err;
    // Mosquitto comes up while the actor goes on: poll, never wait on a CAF worker.
    starting_timer_ = ctx_->every(std::chrono::milliseconds{20}, [this] {
      auto ready = broker_->poll_start();
      if (ready && !*ready)
        return;
      ctx_->cancel(starting_timer_);
      if (!ready) {
        ctx_->fail(ready.error());
        return;
      }
      if (auto err = start_links())
        ctx_->fail(err);
    });
    update_status();
    return {};
  }

  // The rest of start, once the broker listens: Grove's client, the cloud, the bus.
  caf::error start_links() {
    local_ = std::make_unique<mqtt_link>(local_opts_);
    local_->on_message([this](inbound_message&& m) { from_device(std::move(m)); });
    if (auto err = local_->start())
      return err;

    if (cloud_enabled_) {
      if (auto err = start_cloud())
        return err;
    } else {
      log_->info("cloud connection disabled: cloud-bound messages stay in the spool");
    }

    // mm-3: plain publishes arrive through the subscription, requests through the
    // claim (subscribers never get requests).
    if (auto err = ctx_->subscribe(std::string{in_prefix} + "#"))
      return err;
    if (auto err = ctx_->serve(std::string{in_prefix} + "#",
                               [this](const Envelope& msg) { on_message(msg); }))
      return err;
    if (auto err = ctx_->subscribe(group_current))
      return err;
    group_client::get(*ctx_, std::chrono::seconds{5},
                      [this](caf::expected<group::Group> g) {
                        if (g) {
                          apply_group(std::move(*g));
                          return;
                        }
                        log_->warn("no group definition ({}): no device may connect "
                                   "until one is published on {}",
                                   describe(g.error()), group_current);
                      });
    // After a hand-over the table of the last instance is in force until the reply.
    if (!kept_group_.empty())
      apply_group(std::exchange(kept_group_, std::string{}));
    ctx_->every(std::chrono::seconds{1}, [this] { update_status(); });
    update_status();
    return {};
  }

  void stop() override {
    // Order: the cloud, then Grove's client, the broker; the spool flushes last.
    stop_cloud();
    if (local_)
      local_->stop();
    if (broker_)
      broker_->stop();
    if (spool_)
      if (auto err = spool_->flush())
        log_->error("spool flush at stop: {}", describe(err));
  }

  // A hot reload hands the running broker to the next instance (context::keep_process),
  // with the configuration it runs and the group in force: devices stay connected.
  caf::expected<std::string> snapshot() override {
    if (!broker_ || !broker_->status().running)
      return std::string{};
    auto text = broker_->config_text();
    if (!text)
      return std::string{};
    ctx_->keep_process("broker", broker_->release());
    return std::to_string(text->size()) + "\n" + *text + group_bytes_;
  }

  caf::error restore(std::string_view snap) override {
    auto nl = snap.find('\n');
    if (snap.empty() || nl == std::string_view::npos)
      return {};
    size_t n = 0;
    try {
      n = std::stoul(std::string{snap.substr(0, nl)});
    } catch (...) {
      return make_error(errc::malformed, "snapshot: bad header");
    }
    if (nl + 1 + n > snap.size())
      return make_error(errc::malformed, "snapshot: truncated");
    kept_config_ = std::string{snap.substr(nl + 1, n)};
    kept_group_ = std::string{snap.substr(nl + 1 + n)};
    return {};
  }

  void on_message(const Envelope& msg) override {
    if (msg.topic() == group_current) {
      apply_group(msg.payload());
      return;
    }
    if (!msg.topic().starts_with(in_prefix))
      return;
    auto subject = std::string_view{msg.topic()}.substr(in_prefix.size());
    if (subject.empty()) {
      ++refused_source_;
      if (!msg.reply_to().empty())
        ctx_->reply_error(msg, make_error(errc::invalid_topic, "empty subject"));
      return;
    }
    // Only functions (through function_runtime) and the shadow service enter here;
    // device and cloud messages come from their own connections.
    auto src = parse_endpoint(msg.source());
    if (!src || (src->kind != endpoint_kind::function && src->kind != endpoint_kind::shadow)) {
      ++refused_source_;
      log_->warn("refused message on '{}' from '{}': sources on {}# must be "
                 "function:<name> or shadow",
                 subject, msg.source(), in_prefix);
      if (!msg.reply_to().empty())
        ctx_->reply_error(msg, make_error(errc::not_authorized,
                                          "source '" + msg.source()
                                            + "' may not publish through message_manager"));
      return;
    }
    auto n = route(msg.source(), subject, msg.payload(), msg.qos());
    if (!msg.reply_to().empty()) {
      mm::Routed routed;
      routed.set_targets(static_cast<uint32_t>(n));
      ctx_->reply(msg, routed.SerializeAsString(),
                  grove::message_manager::routed_rpc::response_type());
    }
  }

  /// Applies a change of the cloud settings live (devices stay connected). Changes of
  /// the broker, spool or development mode answer `unsupported`, and the kernel then
  /// reloads the plugin, which restarts the broker.
  caf::error reconfigure(const plugin_config& next) override {
    const auto& old = config();
    if (old.development_mode != next.development_mode)
      return make_error(errc::unsupported, "development_mode changed: the broker must restart");
    if (old.broker != next.broker)
      return make_error(errc::unsupported, "broker changed: the broker must restart");
    if (old.spool != next.spool)
      return make_error(errc::unsupported, "spool changed: the broker must restart");
    stop_cloud();
    cloud_enabled_ = next.cloud.enabled;
    if (!cloud_enabled_) {
      log_->info("cloud connection disabled: cloud-bound messages stay in the spool");
      update_status();
      return {};
    }
    cloud_opts_ = cloud_link_options(next.cloud);
    if (auto err = start_cloud())
      return err;
    log_->info("cloud settings applied live: {}:{}", cloud_opts_.host, cloud_opts_.port);
    update_status();
    return {};
  }

private:
  // The cloud link's settings (plugin_config::map() checked them).
  link_options cloud_link_options(const cloud_config& c) const {
    link_options opts;
    opts.name = "cloud";
    opts.host = c.host;
    opts.port = c.port;
    opts.client_id = c.thing_name;
    opts.tls = c.tls;
    opts.ca_file = c.ca_file.string();
    opts.cert_file = c.cert_file.string();
    opts.key_file = c.key_file.string();
    // MQTT 5 (AWS IoT Core speaks it): subscription identifiers let the link deliver a
    // message once even where the cloud subscriptions overlap.
    opts.mqtt_version = 5;
    opts.keep_alive = c.keep_alive;
    opts.retry_initial = c.retry_initial;
    opts.retry_max = c.retry_max;
    opts.max_inflight = c.max_inflight;
    opts.log = to_logger(log_, "cloud link: ");
    return opts;
  }

  // Starts the cloud link and the forwarder draining the spool into it.
  caf::error start_cloud() {
    auto link = std::make_unique<mqtt_link>(cloud_opts_);
    auto fwd = std::make_unique<cloud_forwarder>(*link, *spool_,
                                                 static_cast<size_t>(cloud_opts_.max_inflight));
    link->on_message([this](inbound_message&& m) { from_cloud(std::move(m)); });
    link->set_subscriptions(table()->cloud_filters(), 1);
    if (auto err = fwd->start())
      return err;
    if (auto err = link->start())
      return err;
    cloud_ = std::move(link);
    std::lock_guard guard{forwarder_mtx_};
    forwarder_ = std::move(fwd);
    return {};
  }

  // Stops the cloud link first (its disconnect grace period still delivers PUBACKs to
  // the forwarder, so acknowledged messages are not sent again), then the forwarder.
  void stop_cloud() {
    if (cloud_)
      cloud_->stop();
    std::unique_ptr<cloud_forwarder> fwd;
    {
      std::lock_guard guard{forwarder_mtx_};
      fwd = std::move(forwarder_);
    }
    if (fwd)
      fwd->stop();
    fwd.reset();
    cloud_.reset();
  }

  std::shared_ptr<const routes> table() const {
    std::lock_guard guard{routes_mtx_};
    return routes_;
  }

  void apply_group(const std::string& bytes) {
    group::Group g;
    if (!g.ParseFromString(bytes)) {
      log_->error("malformed group definition on the bus ({} bytes): keeping the current table",
                  bytes.size());
      return;
    }
    apply_group(std::move(g));
  }

  void apply_group(group::Group g) {
    if (auto current = table(); current->group_version() > g.version()) {
      // A late $grove/group/get reply after a newer $grove/group/current.
      log_->info("ignoring group '{}' v{}: v{} is in force", g.name(), g.version(),
                 current->group_version());
      return;
    }
    auto next = std::make_shared<const routes>(g);
    if (auto err = broker_->write_acl(next->acl_text())) {
      log_->error("group '{}' v{}: cannot write the broker's table: {}; keeping the "
                  "current one",
                  g.name(), g.version(), describe(err));
      return;
    }
    {
      std::lock_guard guard{routes_mtx_};
      routes_ = next;
    }
    group_bytes_ = g.SerializeAsString(); // handed to the next instance on reload
    local_->set_subscriptions(next->local_filters(), 1);
    if (cloud_)
      cloud_->set_subscriptions(next->cloud_filters(), 1);
    log_->info("group '{}' v{}: {} subscriptions, {} devices{}", next->group_name(),
               next->group_version(), next->size(), next->devices(),
               next->skipped() ? fmt::format(", {} skipped", next->skipped()) : "");
    update_status();
  }

  // Called on a Paho thread for every message Grove's client gets from the broker.
  void from_device(inbound_message&& m) {
    // The broker plugin stamps grove-source with the publisher's username. Grove's own
    // injections are not echoed (no_local), and anything not from a thing is ignored.
    if (m.source.empty() || m.source == "grove" || m.source.find(':') != std::string::npos)
      return;
    ++from_devices_;
    route("device:" + m.source, m.topic, std::move(m.payload), static_cast<uint32_t>(m.qos));
  }

  // Called on a Paho thread for every message from the cloud.
  void from_cloud(inbound_message&& m) {
    ++from_cloud_;
    route("cloud", m.topic, std::move(m.payload), static_cast<uint32_t>(m.qos));
  }

  // Delivers one message to every target the table names for it; returns how many
  // kinds of target took it. Thread-safe.
  size_t route(const std::string& source, std::string_view topic, std::string payload,
               uint32_t qos) {
    auto t = table()->match(source, topic);
    if (t.empty()) {
      ++unroutable_;
      return 0;
    }
    size_t n = 0;
    qos = std::min<uint32_t>(qos, 1);
    auto to_bus = [&](std::string bus_topic) {
      Envelope e;
      e.set_topic(std::move(bus_topic));
      e.set_source(source);
      e.set_payload(payload);
      e.set_qos(qos);
      if (auto r = ctx_->publish(std::move(e)); r && r->delivered > 0)
        return true;
      ++undeliverable_;
      return false;
    };
    for (const auto& f : t.functions)
      if (to_bus(std::string{out_function_prefix} + f + "/" + std::string{topic})) {
        ++to_functions_;
        ++n;
      }
    if (t.shadow && to_bus(std::string{out_shadow_prefix} + std::string{topic})) {
      ++to_shadow_;
      ++n;
    }
    if (t.devices) {
      if (auto err = local_->publish(std::string{topic}, payload, static_cast<int>(qos),
                                     source)) {
        ++undeliverable_;
      } else {
        ++to_devices_;
        ++n;
      }
    }
    if (t.cloud) {
      // Cloud-bound messages are QoS 1 through the spool (Greengrass' spooler).
      if (auto seq = spool_->push(std::string{topic}, std::move(payload), 1)) {
        ++to_cloud_;
        ++n;
        std::lock_guard guard{forwarder_mtx_};
        if (forwarder_)
          forwarder_->notify();
      } else {
        ++spool_refused_;
      }
    }
    return n;
  }

  void update_status() {
    if (broker_) {
      auto st = broker_->status();
      ctx_->set_status("broker", fmt::format("{} pid {} on {}:{} ({}), restarts {}{}",
                                             st.running ? "running" : "down", st.pid,
                                             broker_opts_.bind_address, broker_opts_.port,
                                             dev_mode_ ? "DEVELOPMENT MODE: plain TCP"
                                                       : "mutual TLS",
                                             st.restarts,
                                             st.last_exit.empty() ? ""
                                                                  : ", last exit: "
                                                                      + st.last_exit));
      if (auto stats = read_broker_stats(broker_->stats_file())) {
        std::string per;
        for (const auto& [thing, count] : stats->denied_publish)
          per += (per.empty() ? "" : " ") + thing + "=" + std::to_string(count);
        ctx_->set_status("denied_publish", per.empty() ? "none" : per);
        ctx_->set_status("denied_other",
                         fmt::format("unknown clients {}, deliveries {}, refused logins {}",
                                     stats->denied_publish_unknown, stats->denied_delivery,
                                     stats->refused_connect));
        ctx_->set_status("broker_table",
                         fmt::format("loads {}, errors {}{}", stats->acl_reloads,
                                     stats->acl_errors,
                                     stats->last_acl_error.empty()
                                       ? ""
                                       : ", last error: " + stats->last_acl_error));
      }
    }
    auto t = table();
    ctx_->set_status("group", t->group_version() == 0
                                ? std::string{"none yet"}
                                : fmt::format("'{}' v{}: {} subscriptions, {} devices",
                                              t->group_name(), t->group_version(), t->size(),
                                              t->devices()));
    ctx_->set_status("routed",
                     fmt::format("from devices {}, from cloud {}; to functions {}, shadow "
                                 "{}, devices {}, cloud {}; unroutable {}, undeliverable "
                                 "{}, refused sources {}",
                                 from_devices_.load(), from_cloud_.load(), to_functions_.load(),
                                 to_shadow_.load(), to_devices_.load(), to_cloud_.load(),
                                 unroutable_.load(), undeliverable_.load(),
                                 refused_source_.load()));
    if (local_) {
      auto ls = local_->status();
      ctx_->set_status("local_link",
                       fmt::format("{}, overlapping copies dropped {}{}", to_string(ls.state),
                                   ls.duplicates_dropped,
                                   ls.last_error.empty() || ls.state == link_state::connected
                                     ? ""
                                     : ", last error: " + ls.last_error));
    }
    if (cloud_) {
      auto cs = cloud_->status();
      std::string line = fmt::format("{} {}:{}", to_string(cs.state), cloud_opts_.host,
                                     cloud_opts_.port);
      if (cs.state == link_state::waiting)
        line += fmt::format(", next attempt in {:.1f} s", cs.next_retry_in.count() / 1000.0);
      line += fmt::format(", connects {}, failures {}, disconnects {}, overlapping copies "
                          "dropped {}",
                          cs.connects, cs.failures, cs.disconnects, cs.duplicates_dropped);
      if (forwarder_) {
        auto fs = forwarder_->stats();
        line += fmt::format(", delivered {}, in flight {}, resent {}, dropped invalid {}",
                            fs.delivered, fs.in_flight, fs.redelivered, fs.dropped_invalid);
      }
      if (!cs.last_error.empty() && cs.state != link_state::connected)
        line += ", last error: " + cs.last_error;
      ctx_->set_status("cloud", line);
    } else {
      ctx_->set_status("cloud", "disabled");
    }
    auto ss = spool_->stats();
    ctx_->set_status("spool",
                     fmt::format("{}: {} messages, {} of {}, in flight {}, dropped_oldest {}, "
                                 "rejected {}, refused {}, redelivered_after_restart {}, committed_seq {}",
                                 to_string(config().spool.storage), ss.count,
                                 format_bytes(ss.bytes),
                                 format_bytes(config().spool.max_size_bytes),
                                 ss.in_flight, ss.dropped_oldest, ss.rejected,
                                 spool_refused_.load(), ss.redelivered_after_restart,
                                 ss.committed_seq));
  }

  grove::context* ctx_ = nullptr;
  spdlog::logger* log_ = nullptr;
  bool dev_mode_ = false;
  bool cloud_enabled_ = false;
  broker_options broker_opts_;
  link_options local_opts_;
  link_options cloud_opts_;
  std::unique_ptr<spool> spool_;
  std::unique_ptr<broker_process> broker_;
  grove::timer_id starting_timer_ = 0;
  // From a hand-over (restore): the kept broker's configuration and the group in force.
  std::string kept_config_;
  std::string kept_group_;
  // The group in force, handed to the next instance.
  std::string group_bytes_;
  std::unique_ptr<mqtt_link> local_;
  std::unique_ptr<mqtt_link> cloud_;
  std::mutex forwarder_mtx_; // route() notifies it from Paho threads
  std::unique_ptr<cloud_forwarder> forwarder_;
  mutable std::mutex routes_mtx_;
  std::shared_ptr<const routes> routes_ = std::make_shared<const routes>();
  std::atomic<uint64_t> from_devices_{0};
  std::atomic<uint64_t> from_cloud_{0};
  std::atomic<uint64_t> to_functions_{0};
  std::atomic<uint64_t> to_shadow_{0};
  std::atomic<uint64_t> to_devices_{0};
  std::atomic<uint64_t> to_cloud_{0};
  std::atomic<uint64_t> unroutable_{0};
  std::atomic<uint64_t> undeliverable_{0};
  std::atomic<uint64_t> refused_source_{0};
  std::atomic<uint64_t> spool_refused_{0};
};

} // namespace
} // namespace grove::mm

GROVE_TYPED_PLUGIN(grove::mm::message_manager, "message_manager", "1.0.0")
