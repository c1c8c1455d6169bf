// message_manager: the device endpoint (a managed Mosquitto with Grove's broker plugin),
// the subscription table that decides every route, the cloud connection and the spool
// in front of it. See README.md for topics, configuration and guarantees.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include <spdlog/spdlog.h>

#include "bridge.hpp"
#include "broker_process.hpp"
#include "cloud_forwarder.hpp"
#include "config.hpp"
#include "grove/config_map.hpp"
#include "grove/group.pb.h"
#include "grove/kernel/group_client.hpp"
#include "grove/kernel/plugin_name.hpp"
#include "grove/message_manager/client.hpp"
#include "grove/topic.hpp"
#include "mqtt_link.hpp"
#include "route_reader.hpp"
#include "routes.hpp"
#include "spool.hpp"
#include "system_clients.hpp"

namespace grove::mm {
namespace {

// Bus topics: into the table from functions and the shadow service, and out of it.
using grove::message_manager::in_prefix;
using grove::message_manager::out_prefix;
constexpr std::string_view out_function_prefix = "$grove/mm/out/function/";
constexpr std::string_view out_shadow_prefix = "$grove/mm/out/shadow/";
// The system API (mm-6 to mm-9).
namespace sys = grove::message_manager;
using cloud_publish_service = grove::service<mm::CloudPublish, mm::CloudPublished>;
using cloud_subscribe_service = grove::service<mm::CloudSubscribe, mm::CloudSubscriptions>;

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

// The MQTT 5 properties a bus envelope carries.
message_meta meta_of(const Envelope& msg) {
  message_meta meta;
  meta.content_type = msg.content_type();
  for (const auto& [name, value] : msg.user_properties())
    meta.user_properties[name] = value;
  return meta;
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
    if (auto err = declare_metrics())
      return err;
    // mm-1, mm-2: what arrives on $grove/mm/out/ came through the table, from us alone.
    if (auto err = ctx.own_events(std::string{out_prefix} + "#"))
      return err;
    dev_mode_ = cfg.development_mode;
    const auto& b = cfg.broker;
    broker_opts_.state_dir = ctx.state_dir() / "broker";
    broker_opts_.mosquitto_exe = b.mosquitto;
    broker_opts_.plugin_path = b.plugin.empty() ? default_broker_plugin() : b.plugin;
    broker_opts_.bind_address = b.bind;
    broker_opts_.port = b.port;
    broker_opts_.dev_mode = dev_mode_;
    broker_opts_.ca_file = b.ca_file.string();
    broker_opts_.ca_dir = b.ca_dir.string();
    broker_opts_.cert_file = b.cert_file.string();
    broker_opts_.key_file = b.key_file.string();
    broker_opts_.max_payload_bytes = b.max_payload_bytes;
    broker_opts_.max_topic_bytes = b.max_topic_bytes;
    broker_opts_.max_queued_bytes = b.max_queued_bytes;
    broker_opts_.max_connections = b.max_connections;
    broker_opts_.connect_timeout = b.connect_timeout;
    broker_opts_.client_id_patterns = b.client_id_patterns;
    broker_opts_.tls_min_version = b.tls_min_version;
    broker_opts_.tls_ciphers = b.tls_ciphers;
    broker_opts_.crl_file = b.crl_file.string();
    broker_opts_.run_as_user = b.run_as_user;
    if (auto err = check_identity_options(broker_opts_))
      return err;
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
    // Down (or disabled) from now on, later than whatever a last instance said: start()
    // tells it, so a client does not keep that instance's "up" (after a hot reload).
    set_link(false, !cloud_enabled_);

    spool_options so;
    so.storage = cfg.spool.storage;
    so.file = ctx.state_dir() / "spool.db";
    so.max_size_bytes = cfg.spool.max_size_bytes;
    so.when_full = cfg.spool.when_full;
    so.disk_reserve_bytes = cfg.spool.disk_reserve_bytes;
    // Runs on the spool's writer thread, perhaps after stop(): it only records, and
    // update_status() logs and shows it on the actor.
    so.on_error = [errors = spool_errors_](const caf::error& err) {
      std::lock_guard guard{errors->mtx};
      errors->last = describe(err);
      ++errors->count;
    };
    // A CloudPublish is answered once its message is committed (mm-6).
    so.on_commit = [hook = commit_hook_](uint64_t) { hook->committed(); };
    {
      std::lock_guard guard{commit_hook_->mtx};
      commit_hook_->notify = [this] { ctx_->post([this] { answer_committed(); }); };
    }
    auto sp = spool::open(std::move(so));
    if (!sp)
      return sp.error();
    spool_ = std::move(*sp);
    auto clients = system_clients::open(ctx.state_dir() / "system.db",
                                        cfg.cloud.system_clients);
    if (!clients)
      return clients.error();
    system_ = std::move(*clients);
    if (auto err = serve_system_api())
      return err;
    if (auto err = set_bridge(cfg.bridge)) // its bus subscriptions come in start_links
      return err;
    apply_cloud_filters(); // the gauge; the cloud link takes them when it starts
    if (auto n = spool_->stats().count; n > 0)
      log_->info("spool: {} cloud-bound messages from before the restart ({} possibly "
                 "delivered already)",
                 n, spool_->stats().redelivered_after_restart);
    return {};
  }

  caf::error start() override {
    publish_link(link_now()); // before any link starts: its events are later
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
    std::filesystem::create_directories(broker_opts_.state_dir);
    // After a hand-over the table of the last instance is in force until the group
    // arrives; group changes from now on are applied as they come.
    if (!kept_group_.empty())
      apply_group(std::exchange(kept_group_, std::string{}));
    if (auto err = ctx_->subscribe(grove::group_client::current_topic))
      return err;
    broker_->on_restarted([this] { reconnect_when_listening(); });
    if (auto kept = ctx_->adopt_process("broker")) {
      // A hot reload: the broker the last instance ran keeps its devices connected, if
      // it runs with the configuration this one would write.
      auto text = broker_identity();
      if (text && *text == kept_config_ && kept->running()) {
        if (auto err = broker_->adopt(std::move(*kept), owner, on_failed))
          return err;
        // The last instance counted the broker's totals so far: take the next ones as
        // baselines, or a reload would count them twice.
        for (auto* feed : {&m_.broker_restarts, &m_.denied_unknown, &m_.denied_delivery,
                           &m_.refused_connect, &m_.acl_reloads, &m_.acl_errors,
                           &m_.deferred_connect, &m_.idle_closed, &m_.denied_subscribe,
                           &m_.wills_forwarded, &m_.wills_dropped, &m_.route_dropped,
                           &m_.route_refused})
          feed->rebase();
        rebase_devices_ = true;
        log_->info("took over the running broker (pid {}): devices stay connected",
                   broker_->status().pid);
        fetch_group([] {});
        return start_links();
      }
      // Dropping `kept` stops it; the new broker waits until the port is free.
      log_->info("the broker's configuration changed: replacing it");
    }
    // The broker listens only once it holds the current table, so that no member device
    // is refused because the core is starting (device libraries give up on a refused
    // CONNACK): the group is fetched first. Should that fail, the table the last run left
    // in the state directory (0600) is used; without one, devices are told to retry
    // (not_ready) until a group arrives.
    std::error_code ec;
    if (table()->group_version() == 0 && !std::filesystem::exists(broker_->acl_file(), ec))
      if (auto err = broker_->write_acl(routes{}.acl_text()))
        return err;
    fetch_group([this, owner, on_failed] {
      if (stopped_)
        return;
      if (auto err = start_broker(owner, on_failed))
        ctx_->fail(err);
    });
    update_status();
    return {};
  }

  // Asks the kernel for the group in force, applies it, then runs `then` (also when
  // there is none).
  void fetch_group(std::function<void()> then) {
    group_client::get(*ctx_, std::chrono::seconds{5},
                      [this, then = std::move(then)](caf::expected<group::Group> g) {
                        if (g) {
                          apply_group(std::move(*g));
                        } else if (table()->group_version() == 0) {
                          // The image has no group: no table of an earlier run applies.
                          // Another failure (a timeout) keeps the last run's table.
                          if (g.error() == errc::no_route)
                            if (auto err = broker_->write_acl(routes{}.acl_text()))
                              log_->error("cannot write the broker's table: {}",
                                          describe(err));
                          log_->warn("no group definition ({}): {} until one is published "
                                     "on {}",
                                     describe(g.error()),
                                     g.error() == errc::no_route
                                       ? "devices are told to retry"
                                       : "the table of the last run applies",
                                     grove::group_client::current_topic);
                        }
                        then();
                      });
  }

  // Starts Mosquitto (with the table in place) and the links once it listens.
  caf::error start_broker(process_owner owner, std::function<void(std::string)> on_failed) {
    if (auto err = broker_->begin_start(std::move(owner), std::move(on_failed)))
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
    // Grove's client publishes (function, shadow, cloud -> devices); what devices send
    // to message_manager comes over the route socket, filtered by the broker's `route`
    // lines (broker_table()). The client still subscribes to those filters, only so that
    // a device's will there reaches the broker plugin (Mosquitto 2.0.11 shows a will to
    // the plugin only in the READ checks of its subscribers); the plugin denies it every
    // delivery, so it receives nothing.
    local_ = std::make_unique<mqtt_link>(local_opts_);
    local_->set_subscriptions(local_filters(), 1); // the group came first
    if (auto err = local_->start())
      return err;
    route_in_ = std::make_unique<route_reader>(
      broker_->route_socket(),
      [this](broker::route_message&& r) {
        inbound_message m;
        m.topic = std::move(r.topic);
        m.payload = std::move(r.payload);
        m.qos = r.qos;
        m.source = std::move(r.source);
        m.meta.content_type = std::move(r.content_type);
        for (auto& [name, value] : r.user_properties) // a name sent twice: the last value
          m.meta.user_properties[std::move(name)] = std::move(value);
        from_device(std::move(m));
      },
      [log = log_](bool warning, const std::string& line) {
        if (warning)
          log->warn("{}", line);
        else
          log->info("{}", line);
      });
    route_in_->set_broker_pid(broker_->status().pid);
    route_in_->start();

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
    links_started_ = true;
    subscribe_bridge_sources();
    ctx_->every(std::chrono::seconds{1}, [this] {
      update_status();
      release_broker_code_if_due();
      if (bridge_bus_missing_) // a bus filter of the bridge was refused (br-6)
        subscribe_bridge_sources();
      if (broker_ && route_in_) // a restart the supervisor made: the new broker's pid
        route_in_->set_broker_pid(broker_->status().pid);
      if (broker_) {
        auto restarts = broker_->ca_restarts();
        if (auto err = broker_->sync_ca_dir())
          ctx_->log().error("message_manager: broker.ca_dir: {}", caf::to_string(err));
        if (broker_->ca_restarts() != restarts)
          ctx_->log().warn("message_manager: a CA left broker.ca_dir: the broker restarts to "
                           "forget it (OpenSSL keeps what it loaded; connections drop once)");
      }
    });
    update_status();
    return {};
  }

  // broker.release_code_pages: once per broker process, two ticks after Grove's client
  // is connected to it (its TLS set-up and the first routes are done by then), the
  // broker's code is marked cold, as the kernel does for groved 2 s after ready.
  void release_broker_code_if_due() {
    if (!broker_ || !local_ || !config().broker.release_code_pages)
      return;
    auto pid = broker_->status().pid;
    if (pid == 0 || pid == released_broker_pid_
        || local_->status().state != link_state::connected) {
      release_ticks_ = 0;
      return;
    }
    if (++release_ticks_ < 3)
      return;
    release_ticks_ = 0;
    released_broker_pid_ = pid;
    auto advised = broker_->release_code_pages();
    if (advised)
      log_->info("broker: start-up code pages released ({:.1f} MB of code advised)",
                 static_cast<double>(*advised) / (1024.0 * 1024.0));
    else if (!release_refused_logged_) {
      release_refused_logged_ = true; // once: the same refusal would follow each restart
      log_->info("broker: start-up code pages stay resident (broker.release_code_pages): {}",
                 grove::describe(advised.error()));
    }
  }

  // After the supervisor restarted the broker: Grove's client reconnects the moment the
  // new broker listens, not when a back-off grown while it was down runs out (devices
  // would be back first, and their messages to functions, the shadow and the cloud lost
  // meanwhile). Polls on the actor every 10 ms, at most the broker's start timeout.
  void reconnect_when_listening() {
    ctx_->cancel(listen_timer_);
    auto deadline = std::chrono::steady_clock::now() + broker_opts_.start_timeout;
    listen_timer_ = ctx_->every(std::chrono::milliseconds{10}, [this, deadline] {
      bool ready = broker_ && broker_->listening();
      if (!ready && std::chrono::steady_clock::now() < deadline)
        return;
      ctx_->cancel(listen_timer_);
      if (ready && local_) {
        log_->info("the restarted broker listens: Grove's client reconnects now");
        local_->reconnect_now();
      }
      if (ready && route_in_)
        route_in_->set_broker_pid(broker_->status().pid);
    });
  }

  void stop() override {
    stopped_ = true;
    // Order: the cloud, then Grove's client, the broker; the spool flushes last.
    stop_cloud();
    // Before the broker goes (or is handed over): every frame the broker finished is
    // routed, the rest stays in the broker for the next instance.
    if (route_in_)
      route_in_->stop();
    if (local_)
      local_->stop();
    if (broker_)
      broker_->stop();
    {
      std::lock_guard guard{commit_hook_->mtx};
      commit_hook_->notify = nullptr;
    }
    if (spool_) {
      if (auto err = spool_->flush())
        log_->error("spool flush at stop: {}", describe(err));
      answer_committed(); // the rest get plugin_failed from the kernel
    }
  }

  ~message_manager() override {
    // The spool's writer may still commit while the members go.
    std::lock_guard guard{commit_hook_->mtx};
    commit_hook_->notify = nullptr;
  }

  // A hot reload hands the running broker to the next instance (context::keep_process),
  // with the configuration it runs and the group in force: devices stay connected.
  // What a kept broker must match to be taken over after a reload: the configuration
  // file this instance would write and the executable it would run.
  caf::expected<std::string> broker_identity() const {
    auto text = broker_->config_text();
    if (!text)
      return text;
    return *text + "\n# executable: " + broker_opts_.mosquitto_exe + "\n";
  }

  caf::expected<std::string> snapshot() override {
    if (!broker_ || !broker_->status().running)
      return std::string{};
    auto text = broker_identity();
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
    if (msg.topic() == grove::group_client::current_topic) {
      // mm-4: a group only from the kernel (the bus refuses anyone else's publish there;
      // this keeps a forged one out should that rule ever be bypassed).
      if (msg.source() != group_client::source) {
        ++refused_source_;
        log_->warn("ignoring a group published by '{}': only the kernel's is accepted",
                   msg.source());
        return;
      }
      apply_group(msg.payload(), msg.timestamp_ns());
      return;
    }
    if (!msg.topic().starts_with(in_prefix)) {
      // A local bus message on a filter of a mapping from Pubsub, once per filter it
      // matches: relayed at the first copy. What the bridge put on the bus itself
      // carries its origin's source: never relayed back there.
      if (!bus_copies_.first(msg.id(), own_bus_copies(msg.topic())))
        return;
      auto origin = msg.source().starts_with("device:") ? bridge_side::local_mqtt
                    : msg.source() == "cloud"           ? bridge_side::iot_core
                                                        : bridge_side::pubsub;
      relay(bridge_side::pubsub, origin, msg.source(), msg.topic(), msg.payload(), msg.qos(),
            meta_of(msg));
      return;
    }
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
    auto meta = meta_of(msg);
    // A function's publish is a local publish/subscribe message too (Greengrass v2's
    // Lambda publish): the bridge's Pubsub mappings take it as well as the table.
    auto bridged = relay(bridge_side::pubsub, bridge_side::pubsub, msg.source(), subject,
                         msg.payload(), msg.qos(), meta);
    auto n = route(msg.source(), subject, msg.payload(), msg.qos(), meta, bridged) + bridged;
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
    // The bridge first: its broker table write can fail, and then nothing changed (the
    // kernel keeps the old configuration on record, links included).
    bool bridge_changed = old.bridge != next.bridge;
    if (bridge_changed) {
      if (auto err = set_bridge(next.bridge))
        return err;
      log_->info("bridge: {} mapping(s) applied live", next.bridge.mqtt_topic_mapping.size());
    }
    if (auto err = reconfigure_links(old, next)) {
      // The old configuration stays on record: its bridge too.
      if (bridge_changed)
        if (auto back = set_bridge(old.bridge))
          log_->error("bridge: the mappings before could not be put back: {}", describe(back));
      update_status();
      return err;
    }
    update_status();
    return {};
  }

private:
  // The cloud and system client part of reconfigure() (the broker, spool and development
  // mode are the same: reconfigure() checked).
  caf::error reconfigure_links(const plugin_config& old, const plugin_config& next) {
    // Filters of clients no longer listed are deleted only once nothing else can fail:
    // on an error the kernel keeps the old configuration, whose clients keep theirs.
    auto prune_clients = [&]() -> caf::error {
      if (old.cloud.system_clients == next.cloud.system_clients)
        return {};
      auto dropped = system_->retain(next.cloud.system_clients);
      if (!dropped)
        return dropped.error();
      for (const auto& client : *dropped)
        log_->info("'{}' is no longer a system client: its cloud filters are gone", client);
      apply_cloud_filters();
      return {};
    };
    auto link_settings = [](cloud_config c) {
      c.system_clients.clear();
      return c;
    };
    if (link_settings(old.cloud) == link_settings(next.cloud)) {
      // Only the system clients changed: the link stays.
      auto err = prune_clients();
      update_status();
      return err;
    }
    stop_cloud();
    cloud_enabled_ = next.cloud.enabled;
    if (!cloud_enabled_) {
      log_->info("cloud connection disabled: cloud-bound messages stay in the spool");
      link_event(false, true);
      auto err = prune_clients();
      update_status();
      return err;
    }
    cloud_opts_ = cloud_link_options(next.cloud);
    if (link_now().disabled())
      link_event(false); // enabled: down until it connects
    if (auto err = start_cloud())
      return err;
    log_->info("cloud settings applied live: {}:{}", cloud_opts_.host, cloud_opts_.port);
    auto err = prune_clients();
    update_status();
    return err;
  }

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
    // mm-10: system clients learn when the cloud can hear them again (the listeners go
    // with the link).
    link->on_connected([this] { link_event(true); });
    link->on_disconnected([this](const std::string&) { link_event(false); });
    link->set_subscriptions(cloud_filters(), 1);
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
      cloud_->stop(); // fires no disconnected listener: hence the event below
    if (link_now().connected())
      link_event(false); // clients stop sending what would only wait in the spool
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

  /// Applies a group published at `published_ns` (CLOCK_REALTIME; 0: unknown).
  void apply_group(const std::string& bytes, int64_t published_ns = 0) {
    group::Group g;
    if (!g.ParseFromString(bytes)) {
      log_->error("malformed group definition on the bus ({} bytes): keeping the current table",
                  bytes.size());
      return;
    }
    apply_group(std::move(g), published_ns, bytes);
  }

  /// Applies `g`; `bytes`, when given, is `g` serialized (kept for the next instance).
  void apply_group(group::Group g, int64_t published_ns = 0, std::string_view bytes = {}) {
    using ms = std::chrono::duration<double, std::milli>;
    // The stages of a change, logged with the group (issue 9: <= 100 ms at the limits).
    auto received = std::chrono::system_clock::now();
    if (auto current = table(); current->group_version() > g.version()) {
      // A late $grove/group/get reply after a newer $grove/group/current.
      log_->info("ignoring group '{}' v{}: v{} is in force", g.name(), g.version(),
                 current->group_version());
      return;
    }
    auto t0 = std::chrono::steady_clock::now();
    auto next = std::make_shared<const routes>(g);
    auto t1 = std::chrono::steady_clock::now();
    if (auto err = broker_->write_acl(broker_table(*next, bridge_now()->table))) {
      log_->error("group '{}' v{}: cannot write the broker's table: {}; keeping the "
                  "current one",
                  g.name(), g.version(), describe(err));
      return;
    }
    auto t2 = std::chrono::steady_clock::now();
    auto bus_ms = published_ns > 0 ? std::chrono::duration_cast<ms>(
                                       received.time_since_epoch()
                                       - std::chrono::nanoseconds{published_ns})
                                       .count()
                                   : 0.0;
    // Logged as soon as the broker has its table (and its signal): what follows is not
    // on the broker's path.
    log_->info("group '{}' v{}: {} subscriptions, {} devices{} (bus {:.1f} ms, compiled in "
               "{:.1f} ms, table written in {:.1f} ms)",
               next->group_name(), next->group_version(), next->size(), next->devices(),
               next->skipped() ? fmt::format(", {} skipped", next->skipped()) : "", bus_ms,
               ms{t1 - t0}.count(), ms{t2 - t1}.count());
    {
      std::lock_guard guard{routes_mtx_};
      routes_ = next;
    }
    // Handed to the next instance on reload.
    group_bytes_ = bytes.empty() ? g.SerializeAsString() : std::string{bytes};
    if (local_) // not before the broker listens (start)
      local_->set_subscriptions(local_filters(), 1);
    apply_cloud_filters();
    update_status();
  }

  // Called on a Paho thread for every message Grove's client gets from the broker.
  void from_device(inbound_message&& m) {
    // The broker plugin stamps grove-source with the publisher's username. Grove's own
    // injections are not echoed (no_local), and anything not from a thing is ignored.
    if (m.source.empty() || m.source == "grove" || m.source.find(':') != std::string::npos)
      return;
    ++from_devices_;
    auto source = "device:" + m.source;
    auto bridged = relay(bridge_side::local_mqtt, bridge_side::local_mqtt, source, m.topic,
                         m.payload, static_cast<uint32_t>(m.qos), m.meta);
    route(source, m.topic, std::move(m.payload), static_cast<uint32_t>(m.qos), m.meta,
          bridged);
  }

  // Called on a Paho thread for every message from the cloud: to the system clients
  // whose filters match (mm-9), and through the table.
  void from_cloud(inbound_message&& m) {
    ++from_cloud_;
    auto qos = std::min<uint32_t>(static_cast<uint32_t>(m.qos), 1);
    auto clients = system_->match(m.topic);
    for (const auto& client : clients) {
      auto bus_topic = std::string{sys::system_out_prefix} + client + "/" + m.topic;
      if (to_bus(std::move(bus_topic), "cloud", m.payload, qos, m.meta))
        ++system_delivered_;
      else
        ++undeliverable_;
    }
    auto bridged = relay(bridge_side::iot_core, bridge_side::iot_core, "cloud", m.topic,
                         m.payload, qos, m.meta);
    if ((!clients.empty() || bridged > 0) && table()->match("cloud", m.topic).empty())
      return; // for system clients or the bridge only: not unroutable
    route("cloud", m.topic, std::move(m.payload), qos, m.meta, bridged);
  }

  // Publishes one message on the bus with its source and properties; false when no
  // subscriber took it. message_manager's own subscriptions to the bridge's Pubsub
  // sources are no subscriber (what comes back there from the bus is a loop). Thread-safe.
  bool to_bus(std::string bus_topic, const std::string& source, std::string payload,
              uint32_t qos, const message_meta& meta) {
    auto own = own_bus_copies(bus_topic);
    Envelope e;
    e.set_topic(std::move(bus_topic));
    e.set_source(source);
    e.set_payload(std::move(payload));
    e.set_qos(qos);
    e.set_content_type(meta.content_type);
    for (const auto& [name, value] : meta.user_properties)
      (*e.mutable_user_properties())[name] = value;
    auto r = ctx_->publish(std::move(e));
    return r && r->delivered > own;
  }

  // --- the system API (mm-6 to mm-10) ---

  // mm-10, on the cloud link's thread or the actor (publishing is thread-safe). Nobody
  // listening is not a failure: only system clients that sync care.
  void link_event(bool up, bool disabled = false) {
    publish_link(set_link(up, disabled));
  }

  void publish_link(const mm::CloudLink& state) {
    Envelope e;
    e.set_topic(std::string{sys::cloud_link_topic});
    e.set_payload(state.SerializeAsString());
    (void) ctx_->publish(std::move(e));
  }

  // Records the link's new state, which mm-7 and mm-8 answer with, and returns it.
  mm::CloudLink set_link(bool up, bool disabled) {
    auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                 std::chrono::steady_clock::now().time_since_epoch())
                 .count();
    std::lock_guard guard{link_mtx_};
    link_.set_connected(up);
    link_.set_disabled(disabled);
    if (up)
      link_.set_connects(link_.connects() + 1);
    // Strictly increasing: a client keeps the later of an answer and an event.
    link_.set_since_ns(std::max(static_cast<uint64_t>(now), link_.since_ns() + 1));
    return link_;
  }

  mm::CloudLink link_now() const {
    std::lock_guard guard{link_mtx_};
    return link_;
  }

  // Claims mm-6, mm-7 and mm-8 (in init: the spool and the filters are there).
  caf::error serve_system_api() {
    if (auto err = ctx_->serve(sys::cloud_publish_topic,
                               [this](const Envelope& msg) { on_cloud_publish(msg); }))
      return err;
    if (auto err = ctx_->serve(sys::cloud_subscribe_topic,
                               [this](const Envelope& msg) { on_cloud_subscribe(msg, true); }))
      return err;
    return ctx_->serve(sys::cloud_unsubscribe_topic,
                       [this](const Envelope& msg) { on_cloud_subscribe(msg, false); });
  }

  // The caller is the request's source as the kernel verified it: the calling plugin's
  // name, or a name its may_claim grants (sdk/plugin/README.md, "Who may speak as
  // whom"). Only the plugins in cloud.system_clients pass.
  caf::error authorize_system_client(const Envelope& msg) {
    const auto& clients = config().cloud.system_clients;
    if (std::find(clients.begin(), clients.end(), msg.source()) != clients.end())
      return {};
    ++system_refused_;
    // The first ten, then every thousandth: a caller in a loop cannot flood the log.
    if (auto n = ++system_refusals_logged_; n <= 10 || n % 1000 == 0)
      log_->warn("refused {} from {}: not in cloud.system_clients ({} refusals so far)",
                 msg.topic(), grove::quoted(msg.source()), n);
    return make_error(errc::not_authorized, grove::quoted(msg.source())
                                              + " is not in message_manager's "
                                                "cloud.system_clients");
  }

  // What every system API request goes through first: a caller not listed is refused
  // before its request is read, a request of another type is malformed. Either is
  // answered here (nullopt).
  template <class Req, class Resp>
  std::optional<Req> system_request(const Envelope& msg) {
    if (auto err = authorize_system_client(msg)) {
      ctx_->reply_error(msg, std::move(err));
      return std::nullopt;
    }
    auto req = grove::service<Req, Resp>::decode(msg);
    if (!req) {
      ++system_invalid_;
      ctx_->reply_error(msg, std::move(req.error()));
      return std::nullopt;
    }
    return std::move(*req);
  }

  // mm-6: into the spool at QoS 1; answered once committed (answer_committed).
  void on_cloud_publish(const Envelope& msg) {
    auto req = system_request<mm::CloudPublish, mm::CloudPublished>(msg);
    if (!req)
      return;
    auto bad = check_cloud_topic(req->topic());
    if (!bad && req->payload().size() > sys::cloud_max_payload_bytes)
      bad = make_error(errc::too_large,
                       "payload of " + std::to_string(req->payload().size())
                         + " bytes, more than the cloud's "
                         + std::to_string(sys::cloud_max_payload_bytes));
    if (bad) {
      ++system_invalid_;
      ctx_->reply_error(msg, std::move(bad));
      return;
    }
    auto seq = spool_->push(req->topic(), std::move(*req->mutable_payload()), 1);
    if (!seq) {
      ++spool_refused_;
      ctx_->reply_error(msg, std::move(seq.error()));
      return;
    }
    ++to_cloud_;
    ++system_published_;
    {
      std::lock_guard guard{forwarder_mtx_};
      if (forwarder_)
        forwarder_->notify();
    }
    Envelope request = msg; // what reply() needs; the payload is in the spool
    request.clear_payload();
    pending_publishes_.emplace(*seq, std::move(request));
    commit_hook_->waiting.fetch_add(1, std::memory_order_acq_rel);
    if (*seq <= spool_->committed_seq())
      answer_committed();
  }

  // Answers every CloudPublish whose message is committed. On the actor.
  void answer_committed() {
    auto done = spool_->committed_seq();
    while (!pending_publishes_.empty() && pending_publishes_.begin()->first <= done) {
      auto node = pending_publishes_.extract(pending_publishes_.begin());
      commit_hook_->waiting.fetch_sub(1, std::memory_order_acq_rel);
      mm::CloudPublished r;
      r.set_seq(node.key());
      cloud_publish_service::reply(*ctx_, node.mapped(), std::move(r));
    }
  }

  // mm-7 (add) and mm-8 (remove).
  void on_cloud_subscribe(const Envelope& msg, bool add) {
    auto req = system_request<mm::CloudSubscribe, mm::CloudSubscriptions>(msg);
    if (!req)
      return;
    std::vector<std::string> filters{req->filters().begin(), req->filters().end()};
    auto now = add ? system_->add(msg.source(), filters)
                   : system_->remove(msg.source(), filters);
    if (!now) {
      if (now.error() == errc::invalid_topic || now.error() == errc::too_large)
        ++system_invalid_;
      ctx_->reply_error(msg, std::move(now.error()));
      return;
    }
    apply_cloud_filters();
    mm::CloudSubscriptions r;
    for (auto& f : *now)
      r.add_filters(std::move(f));
    *r.mutable_link() = link_now(); // a client starting offline learns it here
    cloud_subscribe_service::reply(*ctx_, msg, std::move(r));
  }

  // The cloud link's filters: the table's and the system clients', each once.
  std::vector<std::string> cloud_filters() const {
    auto all = table()->cloud_filters();
    auto more = system_->filters();
    all.insert(all.end(), more.begin(), more.end());
    auto bridged = bridge_now()->table.filters(bridge_side::iot_core);
    all.insert(all.end(), bridged.begin(), bridged.end());
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());
    return all;
  }

  // Subscribes the cloud link to cloud_filters() (live when connected, again at every
  // reconnect).
  void apply_cloud_filters() {
    if (cloud_)
      cloud_->set_subscriptions(cloud_filters(), 1);
    size_t n = 0;
    for (const auto& [client, filters] : *system_->snapshot())
      n += filters.size();
    m_.system_filters.set(static_cast<int64_t>(n));
  }

  // Delivers one message to every target the table names for it; returns how many
  // kinds of target took it. The content type and user properties go with it to
  // functions, the shadow and devices; the spool keeps neither (cloud-bound messages
  // carry topic, payload and QoS). Thread-safe.
  // `bridged`: how many of the bridge's targets took it (then it is not unroutable).
  size_t route(const std::string& source, std::string_view topic, std::string payload,
               uint32_t qos, const message_meta& meta, size_t bridged = 0) {
    auto t = table()->match(source, topic);
    if (t.empty()) {
      if (bridged == 0)
        ++unroutable_;
      return 0;
    }
    size_t n = 0;
    qos = std::min<uint32_t>(qos, 1);
    // The last target takes the payload itself; the others a copy.
    auto uses = t.functions.size() + (t.shadow ? 1 : 0) + (t.devices ? 1 : 0)
                + (t.cloud ? 1 : 0);
    auto take = [&]() -> std::string { return --uses == 0 ? std::move(payload) : payload; };
    auto deliver = [&](std::string bus_topic) {
      if (to_bus(std::move(bus_topic), source, take(), qos, meta))
        return true;
      ++undeliverable_;
      return false;
    };
    for (const auto& f : t.functions)
      if (deliver(std::string{out_function_prefix} + f + "/" + std::string{topic})) {
        ++to_functions_;
        ++n;
      }
    if (t.shadow && deliver(std::string{out_shadow_prefix} + std::string{topic})) {
      ++to_shadow_;
      ++n;
    }
    if (t.devices) {
      if (auto err = local_->publish(std::string{topic}, take(), static_cast<int>(qos),
                                     source, {}, meta)) {
        ++undeliverable_;
      } else {
        ++to_devices_;
        ++n;
      }
    }
    if (t.cloud) {
      // Cloud-bound messages are QoS 1 through the spool (Greengrass' spooler).
      if (auto seq = spool_->push(std::string{topic}, take(), 1)) {
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

  // --- the MQTT bridge (bridge.mqtt_topic_mapping, README "MQTT bridge") ---

  // The bridge in force, a counter per mapping with it.
  struct bridge_state {
    bridge table;
    mutable std::vector<grove::counter> relayed; // a counter is a handle: add() is atomic
  };

  std::shared_ptr<const bridge_state> bridge_now() const {
    std::lock_guard guard{routes_mtx_};
    return bridge_;
  }

  // Compiles `cfg` and puts it in force: the broker's table (devices may publish on
  // LocalMqtt sources and get what goes to LocalMqtt), then Grove's client, the cloud
  // link and the bus subscribe to the sources' filters. On an error nothing changed.
  caf::error set_bridge(const bridge_config& cfg) {
    auto next = std::make_shared<bridge_state>();
    next->table = bridge{cfg.mqtt_topic_mapping};
    for (size_t i = 0; i < next->table.size(); ++i)
      next->relayed.push_back(bridge_relayed_.with(next->table.name(i)));
    if (auto t = table(); broker_ && t->group_version() > 0)
      if (auto err = broker_->write_acl(broker_table(*t, next->table)))
        return err;
    {
      std::lock_guard guard{routes_mtx_};
      bridge_ = std::move(next);
    }
    if (local_)
      local_->set_subscriptions(local_filters(), 1);
    apply_cloud_filters();
    if (links_started_)
      subscribe_bridge_sources();
    return {};
  }

  // The table's and the bridge's LocalMqtt filters, each once: the `route` lines, and
  // Grove's client's subscriptions (for wills, see start_links).
  std::vector<std::string> local_filters() const {
    return local_filters(*table(), bridge_now()->table);
  }

  static std::vector<std::string> local_filters(const routes& t, const bridge& b) {
    auto all = t.local_filters();
    for (auto& f : b.filters(bridge_side::local_mqtt))
      if (std::find(all.begin(), all.end(), f) == all.end())
        all.push_back(std::move(f));
    return all;
  }

  // The broker's table: the group's rules, the bridge's, and a `route` line for each
  // filter of device messages message_manager routes (the table's to functions, the
  // shadow and the cloud, the bridge's LocalMqtt sources), each once: the broker plugin
  // hands every device publish matching one of them over the route socket, once.
  static std::string broker_table(const routes& t, const bridge& b) {
    auto text = t.acl_text() + b.acl_lines(t.things());
    if (t.group_version() == 0)
      return text; // no group: no device may publish
    for (const auto& f : local_filters(t, b))
      text += "route " + f + "\n";
    return text;
  }

  // How many copies of a message on `topic` the bus hands message_manager through the
  // bridge's subscriptions: one per filter subscribed (not per mapping: a filter the bus
  // refused delivers nothing). Thread-safe.
  size_t own_bus_copies(std::string_view topic) const {
    std::shared_ptr<const std::vector<std::string>> filters;
    {
      std::lock_guard guard{routes_mtx_};
      filters = bridge_bus_filters_;
    }
    return static_cast<size_t>(std::count_if(filters->begin(), filters->end(), [&](auto& f) {
      return topic_matches(f, topic);
    }));
  }

  // Subscribes on the bus to the filters of the mappings from Pubsub, and only to them.
  // Only what the bus took is recorded: a refused filter is tried again at the next
  // call, the status tick's (every second) while one is missing.
  void subscribe_bridge_sources() {
    auto want = bridge_now()->table.filters(bridge_side::pubsub);
    auto had = bridge_bus_filters_now();
    for (const auto& f : *had)
      if (std::find(want.begin(), want.end(), f) == want.end())
        (void) ctx_->unsubscribe(f);
    auto subscribed = std::make_shared<std::vector<std::string>>();
    for (auto& f : want) {
      if (std::find(had->begin(), had->end(), f) == had->end())
        if (auto err = ctx_->subscribe(f)) {
          // Logged once per refusal streak, not at every retry.
          if (bridge_bus_refused_.insert(f).second)
            log_->error("bridge: cannot subscribe to '{}' on the bus (tried again every "
                        "second): {}", f, describe(err));
          continue;
        }
      bridge_bus_refused_.erase(f);
      subscribed->push_back(std::move(f));
    }
    std::erase_if(bridge_bus_refused_, [&](const std::string& f) {
      return std::find(want.begin(), want.end(), f) == want.end();
    });
    bridge_bus_missing_ = subscribed->size() < want.size();
    std::lock_guard guard{routes_mtx_};
    bridge_bus_filters_ = std::move(subscribed);
  }

  std::shared_ptr<const std::vector<std::string>> bridge_bus_filters_now() const {
    std::lock_guard guard{routes_mtx_};
    return bridge_bus_filters_;
  }

  // Relays a message that reached `from` (entering Grove at `origin`: a device's message
  // relayed to the bus comes back there from the bus) to the target of every mapping from
  // `from` whose filter matches, never back to its origin (counted in
  // bridge.dropped_loops). Returns how many targets took it. Thread-safe.
  size_t relay(bridge_side from, bridge_side origin, const std::string& source,
               std::string_view topic, const std::string& payload, uint32_t qos,
               const message_meta& meta) {
    auto b = bridge_now();
    if (b->table.size() == 0)
      return 0;
    qos = std::min<uint32_t>(qos, 1);
    size_t n = 0;
    for (auto& hop : b->table.match(from, topic)) {
      if (hop.target == origin) {
        ++bridge_loops_;
        continue;
      }
      bool took = false;
      switch (hop.target) {
        case bridge_side::pubsub:
          took = to_bus(std::move(hop.topic), source, payload, qos, meta);
          break;
        case bridge_side::local_mqtt:
          // Stamped `bridge` whatever the side it came from, which the bridge's
          // `deliver @bridge` lines name: a table route's message on the same topic
          // (cloud or a function -> device:B) keeps its own stamp and reaches only the
          // devices the table names.
          took = local_
                 && !local_->publish(std::move(hop.topic), payload, static_cast<int>(qos),
                                     bridge_relay_source, {}, meta);
          break;
        case bridge_side::iot_core:
          // As Greengrass' bridge: QoS 1 to the cloud, here through the spool.
          if (spool_->push(std::move(hop.topic), payload, 1)) {
            took = true;
            ++to_cloud_;
            std::lock_guard guard{forwarder_mtx_};
            if (forwarder_)
              forwarder_->notify();
          } else {
            ++spool_refused_;
          }
          break;
      }
      if (took) {
        b->relayed[hop.mapping].add(1);
        ++n;
      } else {
        ++bridge_undeliverable_;
      }
    }
    return n;
  }

  template <class T>
  struct metric_spec {
    T* target;
    const char* name;
    const char* help;
  };

  // Declares each metric with `declare` (the context's counter or gauge) into its target.
  template <class T, class Declare>
  static caf::error declare_each(std::initializer_list<metric_spec<T>> specs,
                                 Declare declare) {
    for (auto& s : specs) {
      auto x = declare(s.name, s.help);
      if (!x)
        return x.error();
      *s.target = T{*x};
    }
    return {};
  }

  // Numbers are counters and gauges (grovectl and Prometheus show them as numbers);
  // status lines carry only text: states, addresses, last errors.
  caf::error declare_metrics() {
    auto counter = [this](const char* n, const char* h) { return ctx_->counter(n, h); };
    auto gauge = [this](const char* n, const char* h) { return ctx_->gauge(n, h); };
    if (auto err = declare_each<grove::counter>({
           {&from_devices_, "routed.from_devices", "Messages received from devices."},
           {&from_cloud_, "routed.from_cloud", "Messages received from the cloud."},
           {&to_functions_, "routed.to_functions", "Messages routed to functions."},
           {&to_shadow_, "routed.to_shadow", "Messages routed to the shadow service."},
           {&to_devices_, "routed.to_devices", "Messages routed to devices."},
           {&to_cloud_, "routed.to_cloud", "Messages spooled for the cloud."},
           {&unroutable_, "routed.unroutable", "Messages no subscription matched."},
           {&undeliverable_, "routed.undeliverable",
             "Messages a matching target could not take."},
           {&refused_source_, "routed.refused_sources",
             "Messages refused for a source the sender may not claim."},
           {&spool_refused_, "spool.refused", "Cloud-bound messages the spool refused."},
           {&system_published_, "system.published",
             "Messages system clients published to the cloud (committed to the spool)."},
           {&system_delivered_, "system.delivered",
             "Cloud messages delivered to system clients on the bus."},
           {&system_refused_, "system.refused",
             "System API requests from callers not in cloud.system_clients."},
           {&system_invalid_, "system.invalid",
             "System API requests refused for bad input (topic, filter, size, encoding)."},
           {&bridge_loops_, "bridge.dropped_loops",
             "Messages a bridge mapping would have sent back to the broker they came from."},
           {&bridge_undeliverable_, "bridge.undeliverable",
             "Relays a bridge target did not take (no bus subscriber, the broker or the "
             "spool refused)."},
         }, counter))
      return err;
    auto relayed = ctx_->counter_family("bridge.relayed",
                                        "Messages the MQTT bridge relayed, per mapping.",
                                        "mapping");
    if (!relayed)
      return relayed.error();
    bridge_relayed_ = *relayed;
    // The sources of these totals (broker, links, forwarder, spool) start with this
    // instance, so their first totals count in full; a broker handed over across a
    // reload rebases its feeds in start().
    if (auto err = declare_each<grove::counter_feed>({
           {&m_.broker_restarts, "broker.restarts", "Restarts of the managed broker."},
           {&m_.denied_unknown, "broker.denied_publish_unknown",
             "Publishes denied to clients that are not group devices."},
           {&m_.denied_delivery, "broker.denied_deliveries",
             "Deliveries the broker refused by the subscription table."},
           {&m_.refused_connect, "broker.refused_connects",
             "Connections refused at CONNECT."},
           {&m_.acl_reloads, "broker.acl_reloads", "Subscription table loads."},
           {&m_.acl_errors, "broker.acl_errors", "Subscription table load errors."},
           {&m_.deferred_connect, "broker.deferred_connects",
             "Connections closed without CONNACK while there was no group (told to retry)."},
           {&m_.idle_closed, "broker.idle_connections_closed",
             "Connections closed for sending nothing within broker.connect_timeout_seconds."},
           {&m_.denied_subscribe, "broker.denied_subscribes",
             "SUBSCRIBE filters refused: no subscription of the group delivers to them."},
           {&m_.wills_forwarded, "broker.wills_forwarded",
             "Device wills published, with their device as source."},
           {&m_.wills_dropped, "broker.wills_dropped",
             "Wills dropped (Grove's own, on a $ topic, or too many at once)."},
           {&m_.abrupt_disconnects, "broker.abrupt_disconnects",
             "Device connections that ended without a TLS close (power or network lost)."},
           {&m_.route_dropped, "broker.route_dropped",
             "Device messages for message_manager the broker dropped: its route buffer was "
             "full (message_manager slow or away), a message too large, or one cut off by a "
             "lost connection."},
           {&m_.route_refused, "broker.route_refused",
             "Connections to the broker's route socket refused: not groved's."},
           {&m_.route_messages, "route.messages",
             "Device messages read from the broker's route socket."},
           {&m_.route_connects, "route.connects",
             "Connections made to the broker's route socket."},
           {&m_.route_refused_listeners, "route.refused_listeners",
             "Route socket listeners refused: not the broker's process."},
           {&m_.route_malformed, "route.malformed",
             "Route socket streams given up for a malformed frame."},
           {&m_.local_duplicates, "local_link.duplicates_dropped",
             "Overlapping copies dropped on the local link."},
           {&m_.cloud_connects, "cloud.connects", "Connections to the cloud."},
           {&m_.cloud_failures, "cloud.failures", "Failed connection attempts."},
           {&m_.cloud_disconnects, "cloud.disconnects", "Lost cloud connections."},
           {&m_.cloud_duplicates, "cloud.duplicates_dropped",
             "Overlapping copies dropped on the cloud link."},
           {&m_.cloud_delivered, "cloud.delivered",
             "Spooled messages the cloud acknowledged."},
           {&m_.cloud_redelivered, "cloud.redelivered",
             "Spooled messages sent again after a lost link or failed publish."},
           {&m_.cloud_dropped_invalid, "cloud.dropped_invalid",
             "Spooled messages dropped undelivered (invalid or refused for good)."},
           {&m_.spool_dropped_oldest, "spool.dropped_oldest",
             "Messages dropped from a full spool (drop_oldest)."},
           {&m_.spool_rejected, "spool.rejected",
             "Messages refused by a full spool (reject_new)."},
           {&m_.spool_commit_failures, "spool.commit_failures",
             "Spool commits that failed (disk full, I/O) and were retried."},
           {&m_.spool_disk_full, "spool.disk_full",
             "Pushes that found the disk's free space at the spool's reserve."},
         }, counter))
      return err;
    if (auto err = declare_each<grove::gauge>({
           {&m_.broker_running, "broker.running", "1 if the managed broker runs."},
           {&m_.group_version, "group.version", "Version of the group in force."},
           {&m_.group_subscriptions, "group.subscriptions",
             "Subscriptions of the group in force."},
           {&m_.group_devices, "group.devices", "Devices of the group in force."},
           {&m_.route_connected, "route.connected",
             "1 while message_manager reads the broker's route socket."},
           {&m_.route_buffered, "broker.route_buffered_bytes",
             "Bytes of device messages the broker holds for message_manager."},
           {&m_.local_connected, "local_link.connected",
             "1 if Grove's client is connected to the broker."},
           {&m_.cloud_connected, "cloud.connected",
             "1 if the cloud link is connected."},
           {&m_.cloud_next_retry_ms, "cloud.next_retry_ms",
             "Milliseconds to the next connection attempt (0 when connected)."},
           {&m_.cloud_in_flight, "cloud.in_flight",
             "Messages published to the cloud awaiting PUBACK."},
           {&m_.spool_messages, "spool.messages", "Messages in the spool."},
           {&m_.spool_bytes, "spool.bytes", "Accounted bytes in the spool."},
           {&m_.spool_max_bytes, "spool.max_bytes", "Capacity of the spool."},
           {&m_.spool_in_flight, "spool.in_flight",
             "Spooled messages handed to the cloud link, not yet acknowledged."},
           {&m_.spool_committed_seq, "spool.committed_seq",
             "Highest sequence number durably committed."},
           {&m_.spool_recovered, "spool.redelivered_after_restart",
             "Messages the spool found from before the last start."},
           {&m_.spool_failing, "spool.failing",
             "1 while commits fail (disk full, I/O): pushes are refused, the writer retries."},
           {&m_.system_filters, "system.filters",
             "Cloud filters of the system clients, all together."},
         }, gauge))
      return err;
    auto denied = ctx_->counter_family("broker.denied_publish",
                                       "Publishes the subscription table denied, per device.",
                                       "device");
    if (!denied)
      return denied.error();
    m_.denied_publish = *denied;
    auto oversize = ctx_->counter_family(
      "broker.refused_oversize",
      "Publishes refused for a payload above broker.max_payload_bytes or a topic above "
      "broker.max_topic_bytes, per device.",
      "device");
    if (!oversize)
      return oversize.error();
    m_.refused_oversize = *oversize;
    auto connected = ctx_->gauge_family(
      "broker.connected",
      "Live MQTT connections of each device (0: disconnected), from the broker plugin's "
      "connects and disconnects.",
      "device");
    if (!connected)
      return connected.error();
    m_.connected = *connected;
    return {};
  }

  // The totals of the broker's stats file start again at zero with each broker process.
  void restart_broker_feeds() {
    for (auto* feed : {&m_.denied_unknown, &m_.denied_delivery, &m_.refused_connect,
                       &m_.acl_reloads, &m_.acl_errors, &m_.deferred_connect, &m_.idle_closed,
                       &m_.denied_subscribe, &m_.wills_forwarded, &m_.wills_dropped,
                       &m_.route_dropped, &m_.route_refused})
      feed->observe(0);
    for (auto* feeds : {&m_.denied_per_device, &m_.oversize_per_device})
      for (auto& [thing, feed] : *feeds)
        feed.observe(0);
    set_connected({});
  }

  /// The per-device connected gauges: `now`'s counts, 0 for every other device seen.
  void set_connected(const std::map<std::string, uint64_t>& now) {
    for (auto& [thing, g] : m_.connected_per_device)
      if (!now.contains(thing))
        g.set(0);
    for (const auto& [thing, n] : now) {
      auto i = m_.connected_per_device.find(thing);
      if (i == m_.connected_per_device.end())
        i = m_.connected_per_device.emplace(thing, m_.connected.with(thing)).first;
      i->second.set(static_cast<int64_t>(n));
    }
  }

  void update_status() {
    if (broker_) {
      auto st = broker_->status();
      m_.broker_running.set(st.running ? 1 : 0);
      if (!st.running)
        set_connected({}); // nobody is connected to a broker that is down
      m_.broker_restarts.observe(st.restarts);
      m_.abrupt_disconnects.observe(broker_->abrupt_disconnects());
      ctx_->set_status("broker", fmt::format("{} pid {} on {}:{} ({}){}",
                                             st.running ? "running" : "down", st.pid,
                                             broker_opts_.bind_address, broker_opts_.port,
                                             dev_mode_ ? "DEVELOPMENT MODE: plain TCP"
                                                       : "mutual TLS",
                                             st.last_exit.empty() ? ""
                                                                  : ", last exit: "
                                                                      + st.last_exit));
      // Only the running broker's file counts: one an earlier run left behind (groved
      // restarted, or the broker restarted and has not written yet) was counted then.
      auto stats = read_broker_stats(broker_->stats_file());
      if (stats && st.pid > 0 && stats->pid == st.pid) {
        if (stats_pid_ != 0 && stats_pid_ != stats->pid)
          restart_broker_feeds(); // a new broker counts from zero
        stats_pid_ = stats->pid;
        // Per-device totals feed one counter of `family` per device.
        auto observe_per_device = [this](const std::map<std::string, uint64_t>& totals,
                                         grove::counter_family& family,
                                         std::map<std::string, grove::counter_feed>& feeds) {
          for (const auto& [thing, count] : totals) {
            auto i = feeds.find(thing);
            if (i == feeds.end())
              i = feeds.emplace(thing, grove::counter_feed{family.with(thing), !rebase_devices_})
                    .first;
            i->second.observe(count);
          }
        };
        observe_per_device(stats->denied_publish, m_.denied_publish, m_.denied_per_device);
        observe_per_device(stats->refused_oversize, m_.refused_oversize,
                           m_.oversize_per_device);
        set_connected(stats->connected);
        rebase_devices_ = false;
        m_.deferred_connect.observe(stats->deferred_connect);
        m_.idle_closed.observe(stats->idle_closed);
        m_.denied_unknown.observe(stats->denied_publish_unknown);
        m_.denied_delivery.observe(stats->denied_delivery);
        m_.refused_connect.observe(stats->refused_connect);
        m_.acl_reloads.observe(stats->acl_reloads);
        m_.acl_errors.observe(stats->acl_errors);
        m_.denied_subscribe.observe(stats->denied_subscribe);
        m_.wills_forwarded.observe(stats->wills_forwarded);
        m_.wills_dropped.observe(stats->wills_dropped);
        m_.route_dropped.observe(stats->route_dropped);
        m_.route_refused.observe(stats->route_refused);
        m_.route_buffered.set(static_cast<int64_t>(stats->route_buffered_bytes));
        ctx_->set_status("broker_table", stats->last_acl_error.empty()
                                           ? std::string{"ok"}
                                           : "last error: " + stats->last_acl_error);
      }
    }
    ctx_->set_status("bridge", fmt::format("{} mapping(s)", bridge_now()->table.size()));
    auto t = table();
    m_.group_version.set(static_cast<int64_t>(t->group_version()));
    m_.group_subscriptions.set(static_cast<int64_t>(t->size()));
    m_.group_devices.set(static_cast<int64_t>(t->devices()));
    ctx_->set_status("group", t->group_version() == 0
                                ? std::string{"none yet"}
                                : fmt::format("'{}' v{}", t->group_name(),
                                              t->group_version()));
    if (local_) {
      auto ls = local_->status();
      m_.local_connected.set(ls.state == link_state::connected ? 1 : 0);
      m_.local_duplicates.observe(ls.duplicates_dropped);
      ctx_->set_status("local_link",
                       fmt::format("{}{}", to_string(ls.state),
                                   ls.last_error.empty() || ls.state == link_state::connected
                                     ? ""
                                     : ", last error: " + ls.last_error));
    }
    if (route_in_) {
      m_.route_connected.set(route_in_->connected() ? 1 : 0);
      m_.route_messages.observe(route_in_->messages());
      m_.route_connects.observe(route_in_->connects());
      m_.route_refused_listeners.observe(route_in_->refused());
      m_.route_malformed.observe(route_in_->malformed());
      ctx_->set_status("route_socket", route_in_->connected() ? "connected" : "connecting");
    }
    if (cloud_) {
      auto cs = cloud_->status();
      m_.cloud_connected.set(cs.state == link_state::connected ? 1 : 0);
      m_.cloud_next_retry_ms.set(cs.state == link_state::waiting ? cs.next_retry_in.count()
                                                                 : 0);
      m_.cloud_connects.observe(cs.connects);
      m_.cloud_failures.observe(cs.failures);
      m_.cloud_disconnects.observe(cs.disconnects);
      m_.cloud_duplicates.observe(cs.duplicates_dropped);
      if (forwarder_) {
        auto fs = forwarder_->stats();
        m_.cloud_delivered.observe(fs.delivered);
        m_.cloud_in_flight.set(static_cast<int64_t>(fs.in_flight));
        m_.cloud_redelivered.observe(fs.redelivered);
        m_.cloud_dropped_invalid.observe(fs.dropped_invalid);
      }
      std::string line = fmt::format("{} {}:{}", to_string(cs.state), cloud_opts_.host,
                                     cloud_opts_.port);
      if (!cs.last_error.empty() && cs.state != link_state::connected)
        line += ", last error: " + cs.last_error;
      ctx_->set_status("cloud", line);
    } else {
      ctx_->set_status("cloud", "disabled");
    }
    auto ss = spool_->stats();
    m_.spool_messages.set(static_cast<int64_t>(ss.count));
    m_.spool_bytes.set(static_cast<int64_t>(ss.bytes));
    m_.spool_max_bytes.set(static_cast<int64_t>(config().spool.max_size_bytes));
    m_.spool_in_flight.set(static_cast<int64_t>(ss.in_flight));
    m_.spool_committed_seq.set(static_cast<int64_t>(ss.committed_seq));
    m_.spool_recovered.set(static_cast<int64_t>(ss.redelivered_after_restart));
    m_.spool_dropped_oldest.observe(ss.dropped_oldest);
    m_.spool_rejected.observe(ss.rejected);
    m_.spool_failing.set(ss.failing ? 1 : 0);
    m_.spool_commit_failures.observe(ss.commit_failures);
    m_.spool_disk_full.observe(ss.disk_full);
    std::string last_error;
    uint64_t errors = 0;
    {
      std::lock_guard guard{spool_errors_->mtx};
      last_error = spool_errors_->last;
      errors = spool_errors_->count;
    }
    if (errors != spool_errors_logged_) {
      // Once per status round, not once per retry.
      log_->error("spool: {} commit(s) failed since the last report, last: {}; cloud-bound "
                  "messages are refused until a commit succeeds",
                  errors - spool_errors_logged_, last_error);
      spool_errors_logged_ = errors;
    }
    ctx_->set_status("spool", ss.failing ? std::string{to_string(config().spool.storage)}
                                             + ", FAILING: " + last_error
                                         : std::string{to_string(config().spool.storage)});
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
  // Set by stop(): a group reply that comes later starts no broker.
  bool stopped_ = false;
  // reconnect_when_listening(): polls for a restarted broker to listen.
  grove::timer_id listen_timer_ = 0;
  // From a hand-over (restore): the kept broker's configuration and the group in force.
  std::string kept_config_;
  std::string kept_group_;
  // Set when a kept broker was adopted: its per-device totals seen first are baselines.
  bool rebase_devices_ = false;
  // The broker process whose stats file was last counted (0: none yet).
  int64_t stats_pid_ = 0;
  // The group in force, handed to the next instance.
  std::string group_bytes_;
  std::unique_ptr<mqtt_link> local_;
  // The device messages to route, from the broker plugin (route_reader.hpp).
  std::unique_ptr<route_reader> route_in_;
  std::unique_ptr<mqtt_link> cloud_;
  std::mutex forwarder_mtx_; // route() notifies it from Paho threads
  std::unique_ptr<cloud_forwarder> forwarder_;
  mutable std::mutex routes_mtx_;
  std::shared_ptr<const routes> routes_ = std::make_shared<const routes>();
  // Counted from Paho threads too: a counter is one atomic add, kept by the kernel.
  grove::counter from_devices_;
  grove::counter from_cloud_;
  mutable std::mutex link_mtx_;
  mm::CloudLink link_; // mm-10's state (down until the link connects)
  grove::counter to_functions_;
  grove::counter to_shadow_;
  grove::counter to_devices_;
  grove::counter to_cloud_;
  grove::counter unroutable_;
  grove::counter undeliverable_;
  grove::counter refused_source_;
  grove::counter spool_refused_;
  // The system API (mm-6 to mm-9).
  grove::counter system_published_;
  grove::counter system_delivered_;
  grove::counter system_refused_;
  grove::counter system_invalid_;
  uint64_t system_refusals_logged_ = 0;
  // The MQTT bridge; bridge_ is guarded by routes_mtx_ (read on Paho threads).
  std::shared_ptr<const bridge_state> bridge_ = std::make_shared<const bridge_state>();
  grove::counter_family bridge_relayed_;
  grove::counter bridge_loops_;
  grove::counter bridge_undeliverable_;
  // The bus filters subscribed for mappings from Pubsub: written on the actor, read
  // by to_bus() on Paho threads (guarded by routes_mtx_).
  std::shared_ptr<const std::vector<std::string>> bridge_bus_filters_ =
    std::make_shared<const std::vector<std::string>>();
  // Filters the bus refused (logged once each) and whether one is missing (on the actor).
  std::set<std::string> bridge_bus_refused_;
  bool bridge_bus_missing_ = false;
  // Copies of one bus message through overlapping Pubsub filters (on the actor).
  bus_copies bus_copies_;
  // Set once the bus subscriptions of start_links() are made.
  bool links_started_ = false;
  pid_t released_broker_pid_ = 0; // the broker process whose code was released last
  int release_ticks_ = 0;          // status ticks with Grove's client connected to it
  bool release_refused_logged_ = false;
  // The system clients' cloud filters (system.db); match() runs on Paho threads.
  std::unique_ptr<system_clients> system_;
  // CloudPublish requests by spool sequence number, answered once it is committed.
  std::map<uint64_t, Envelope> pending_publishes_;
  // The spool's commits reach the actor through this (cleared in stop): a post only
  // while some CloudPublish waits for its commit.
  struct commit_hook {
    std::mutex mtx;
    std::function<void()> notify;
    std::atomic<size_t> waiting{0};
    void committed() {
      if (waiting.load(std::memory_order_acquire) == 0)
        return;
      std::lock_guard guard{mtx};
      if (notify)
        notify();
    }
  };
  std::shared_ptr<commit_hook> commit_hook_ = std::make_shared<commit_hook>();
  // Everything else update_status() reports as numbers.
  struct status_metrics {
    grove::gauge broker_running;
    grove::counter_feed broker_restarts;
    grove::counter_family denied_publish;
    std::map<std::string, grove::counter_feed> denied_per_device;
    grove::counter_feed denied_unknown;
    grove::counter_feed denied_delivery;
    grove::counter_feed refused_connect;
    grove::counter_feed acl_reloads;
    grove::counter_feed acl_errors;
    grove::counter_family refused_oversize;
    std::map<std::string, grove::counter_feed> oversize_per_device;
    grove::gauge_family connected;
    std::map<std::string, grove::gauge> connected_per_device;
    grove::counter_feed deferred_connect;
    grove::counter_feed idle_closed;
    grove::counter_feed denied_subscribe;
    grove::counter_feed wills_forwarded;
    grove::counter_feed wills_dropped;
    grove::counter_feed abrupt_disconnects;
    grove::gauge group_version;
    grove::gauge group_subscriptions;
    grove::gauge group_devices;
    grove::gauge local_connected;
    grove::counter_feed local_duplicates;
    grove::counter_feed route_dropped;
    grove::counter_feed route_refused;
    grove::counter_feed route_messages;
    grove::counter_feed route_connects;
    grove::counter_feed route_refused_listeners;
    grove::counter_feed route_malformed;
    grove::gauge route_connected;
    grove::gauge route_buffered;
    grove::gauge cloud_connected;
    grove::gauge cloud_next_retry_ms;
    grove::counter_feed cloud_connects;
    grove::counter_feed cloud_failures;
    grove::counter_feed cloud_disconnects;
    grove::counter_feed cloud_duplicates;
    grove::counter_feed cloud_delivered;
    grove::gauge cloud_in_flight;
    grove::counter_feed cloud_redelivered;
    grove::counter_feed cloud_dropped_invalid;
    grove::gauge spool_messages;
    grove::gauge spool_bytes;
    grove::gauge spool_max_bytes;
    grove::gauge spool_in_flight;
    grove::gauge spool_committed_seq;
    grove::gauge spool_recovered;
    grove::counter_feed spool_dropped_oldest;
    grove::counter_feed spool_rejected;
    grove::gauge spool_failing;
    grove::counter_feed spool_commit_failures;
    grove::counter_feed spool_disk_full;
    grove::gauge system_filters;
  } m_;

  // Commit errors the spool's writer reported (see init).
  struct spool_error_log {
    std::mutex mtx;
    std::string last;
    uint64_t count = 0;
  };
  std::shared_ptr<spool_error_log> spool_errors_ = std::make_shared<spool_error_log>();
  uint64_t spool_errors_logged_ = 0;
};

} // namespace
} // namespace grove::mm

GROVE_TYPED_PLUGIN(grove::mm::message_manager, "message_manager", "1.0.0")
