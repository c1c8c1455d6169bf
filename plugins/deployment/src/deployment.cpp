// The deployment plugin, part 1 (README.md): the component store and Greengrass v2's
// component API over HTTPS with SigV4, for the AWS CLI and SDKs pointed at the core.
//
// The HTTP server (cpp-httplib) runs on its own threads, never on CAF's workers: a slow
// client or a large recipe holds one of the server's threads, not the kernel.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <thread>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "api.hpp"
#include "artifacts.hpp"
#include "bulk_input.hpp"
#include "imagebuilder_document.hpp"
#include "ipc_server.hpp"
#include "ip_detector.hpp"
#include "platform.hpp"
#include "component_store.hpp"
#include "config.hpp"
#include "reason.hpp"
#include "discovery_server.hpp"
#include "render.hpp"
#include "runner.hpp"
#include "grove/deployment/client.hpp"
#include "grove/message_manager/client.hpp"
#include "grove/shadow/client.hpp"
#include "grove/errors.hpp"
#include "grove/kernel/group_client.hpp"
#include "grove/plugin.hpp"
#include "grove/process.hpp"
#include "v1_api.hpp"
#include "v1_store.hpp"

namespace grove::deployment {

namespace {

using components_rpc_service = grove::service<ApiCall, ApiAnswer>;

// A document named by a URI (Image Builder's `uri`, a bulk deployment's InputFileUri)
// through the artifact rules and fetcher (s3:// from artifacts_base_url, file:// inside
// artifacts_file_dir), at most `max_bytes`; blocking.
caf::expected<std::string> read_uri(artifact_store& arts, const fetch_settings& fs,
                                    const std::string& uri, uint64_t max_bytes) {
  auto limited = fs;
  limited.max_bytes = std::min<uint64_t>(fs.max_bytes, max_bytes);
  auto hex = arts.fetch(artifact_ref{uri, "", "", false}, limited);
  if (!hex)
    return std::move(hex.error());
  std::ifstream in{arts.path_of(*hex), std::ios::binary};
  std::string text{std::istreambuf_iterator<char>{in}, {}};
  if (!in.good() && !in.eof())
    return grove::make_error(grove::errc::system_error, "cannot read the fetched copy");
  return text;
}

class deployment_plugin : public grove::typed_plugin<deployment_config> {
public:
  caf::error init(grove::context& ctx, const deployment_config& cfg) override {
    ctx_ = &ctx;
    auto bad = [](std::string what) {
      return grove::make_error(grove::errc::invalid_config, std::move(what));
    };
    if (!cfg.api.development_plain_http)
      for (auto [key, file] : {std::pair{"api.cert_file", &cfg.api.cert_file},
                               std::pair{"api.key_file", &cfg.api.key_file}}) {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(*file, ec))
          return bad(std::string{key} + ": '" + file->string() + "': no such file");
      }
    auto db = component_store::open(cfg.file);
    if (!db)
      return std::move(db.error());
    store_ = std::shared_ptr<component_store>{std::move(*db)};
    auto arts = artifact_store::open(cfg.artifacts_dir);
    if (!arts)
      return std::move(arts.error());
    artifacts_ = std::shared_ptr<artifact_store>{std::move(*arts)};
    auto url_key = artifacts_->url_key();
    if (!url_key)
      return std::move(url_key.error());
    fetch_.uris.base_url = cfg.artifacts_base_url;
    fetch_.uris.file_dir = cfg.artifacts_file_dir;
    fetch_.ca_file = cfg.artifacts_ca_file;
    fetch_.max_bytes = static_cast<uint64_t>(cfg.artifacts_max_bytes);
    fetch_.timeout = std::chrono::seconds{cfg.artifacts_fetch_timeout};
    fetch_.cancel = std::make_shared<fetch_canceller>();
    api_settings s;
    s.artifact_files = cfg.artifacts_dir / "sha256";
    s.url_key = std::move(*url_key);
    s.url_ttl = std::chrono::seconds{cfg.artifacts_url_seconds};
    s.url_scheme = cfg.api.development_plain_http ? "http" : "https";
    // From a server thread (stopped before this instance goes): the fetch is scheduled
    // on the actor (post() drops it once the instance is gone) and runs on the pool.
    s.on_requested = [this](const std::string& name, const std::string& version) {
      ctx_->post([this, name, version] { fetch(name, version); });
    };
    s.region = cfg.region;
    s.account_id = cfg.account_id;
    s.thing_name = cfg.thing_name;
    s.thing_groups = cfg.thing_groups;
    s.platform = core_platform();
    s.core_version = GROVE_VERSION_STRING;
    // A deployment whose set resolved is applied on the actor (the runner's), its
    // preparation on the pool; ListInstalledComponents reads the runner's states.
    s.on_deployment = [this](const std::string& id, const nlohmann::json& resolved) {
      ctx_->post([this, id, resolved] { apply_deployment(id, resolved); });
    };
    s.installed = [this] {
      std::lock_guard guard{runner_mtx_};
      return runner_ ? runner_->installed() : nlohmann::json::array();
    };
    // Image Builder's CreateComponent `uri`: the artifact rules and fetcher (s3:// from
    // artifacts_base_url, file:// inside artifacts_file_dir), on the server's thread
    // (the client waits for the answer), at most a document's size.
    s.fetch_document = [arts = artifacts_, fs = fetch_](const std::string& uri) {
      return read_uri(*arts, fs, uri, max_component_document_bytes);
    };
    thing_name_ = cfg.thing_name;
    default_limits_ = {cfg.default_system_resource_limits.memory,
                       cfg.default_system_resource_limits.cpus};
    runner_settings_.error_window = std::chrono::seconds{cfg.broken_error_window};
    runner_settings_.log_limits = {static_cast<uint64_t>(cfg.component_log_max_bytes),
                                   static_cast<uint32_t>(cfg.component_log_files)};
    runner_settings_.allow_privileged = cfg.allow_privileged_components;
    runner_settings_.start_read_timeout = std::chrono::seconds{cfg.start_group_read_timeout};
    runner_settings_.default_posix_user = cfg.default_posix_user;
    if (runner_)
      runner_->set_settings(runner_settings_);
    s.max_body_bytes = static_cast<size_t>(cfg.api.max_body_bytes);
    s.lambda_packages_dir = cfg.lambda_packages_dir;
    for (const auto& k : cfg.credentials)
      s.keys[k.access_key_id] =
        access_key{k.secret_access_key, {k.operations.begin(), k.operations.end()},
                   static_cast<double>(k.requests_per_second)};
    auto groups = v1_store::open(cfg.groups_file);
    if (!groups)
      return std::move(groups.error());
    groups_ = std::shared_ptr<v1_store>{std::move(*groups)};
    // Deployments a stop or a crash cut short never got the kernel's answer.
    if (auto n = groups_->fail_unfinished("interrupted: groved or the deployment plugin "
                                          "stopped before the kernel answered",
                                          now_ms()))
      ctx.log().warn("deployment: {} Greengrass v1 deployment(s) left unfinished by the last "
                     "run marked Failure",
                     *n);
    v1_settings vs;
    vs.thing_name = cfg.thing_name;
    vs.lambda_packages_dir = cfg.lambda_packages_dir.string();
    vs.group_ca_dir = cfg.group_ca_dir;
    v1_ = std::make_shared<v1_api>(s, std::move(vs), *groups_);
    if (auto err = v1_->sweep_ca_dirs())
      ctx.log().error("deployment: cannot sweep the group CA directory {}: {}",
                      cfg.group_ca_dir.string(), caf::to_string(err));
    // The broker and discovery trust what the store says (a crash may have cut a rewrite).
    if (auto err = v1_->refresh_trust())
      ctx.log().error("deployment: the group CA trust directory {} could not be written: {}",
                      (cfg.group_ca_dir / "trust").string(), caf::to_string(err));
    api_ = std::make_shared<api>(std::move(s), *store_);
    api_->set_v1(v1_.get());
    // A v1 deployment replaces the kernel's group through `$grove/group/set` (the same
    // checks and file as an edit of the group file); the kernel's answer settles it.
    v1_->set_applier([this, v1 = v1_, db = groups_](v1_apply_job job) {
      v1->in_progress(job.group_id, job.deployment_id, now_ms());
      ctx_->post([this, v1, db, job = std::move(job)]() mutable {
        // The functions of Greengrass v2 Lambda components (and the subscriptions naming
        // them) and the resources of model components stay: the group in force is read,
        // they are added to the v1 group, and it is set as a compare-and-set on the
        // version read (group_client::edit), so a v2 deployment changing such a component
        // meanwhile makes it recompute, not lose it. Without such components the v1 group
        // replaces the group as it is (also one the kernel could not load): a v2
        // deployment adding one meanwhile has it in its set already and edits by
        // compare-and-set, so it recomputes on this group.
        auto dropped = std::make_shared<size_t>(0);
        auto done = [this, v1, db, job, dropped](caf::expected<grove::group::Group> g) {
            if (g && *dropped > 0)
              ctx_->log().warn("deployment: v1 deployment {}: {} subscription(s) naming a "
                               "Lambda component's function left out (the new group lacks "
                               "their other end)",
                               job.deployment_id, *dropped);
            if (g)
              ctx_->log().info("deployment: v1 deployment {} of group {} applied (group "
                               "version {})",
                               job.deployment_id, job.group_id, g->version());
            report_v1(v1, db, job, g ? std::string{} : grove::describe(g.error()));
        };
        if (!runner_
            || (runner_->lambda_components().empty() && runner_->model_components().empty())) {
          grove::group_client::set(*ctx_, job.group, std::chrono::seconds{60}, done);
          return;
        }
        grove::group_client::edit(
          *ctx_, std::chrono::seconds{60},
          [this, job, dropped](const grove::group::Group& now) -> caf::expected<std::string> {
            auto lambda = runner_ ? runner_->lambda_components() : std::set<std::string>{};
            auto models = runner_ ? runner_->model_components() : std::set<std::string>{};
            if (lambda.empty() && models.empty())
              return job.group;
            return keep_v2_components(job.group, now, lambda, models, dropped.get());
          },
          done);
      });
    });
    // A bulk deployment (StartBulkDeployment, from a server thread) runs on a thread of its
    // own (one at a time: the store refuses a second while one has not ended): its input
    // file fetched as an artifact, then each record deployed and waited for. stop()
    // cuts it (v1_api::shutdown) and joins it.
    if (auto n = groups_->end_unfinished_bulks("interrupted: groved or the deployment plugin "
                                               "stopped during the bulk deployment",
                                               now_ms());
        n && *n > 0)
      ctx.log().warn("deployment: {} bulk deployment(s) left unfinished by the last run ended",
                     *n);
    v1_->set_bulk_starter([this, v1 = v1_, db = groups_, arts = artifacts_,
                           fs = fetch_](std::string id, std::string uri) {
      std::lock_guard guard{bulk_mtx_};
      if (bulk_thread_.joinable())
        bulk_thread_.join(); // the last one has ended (the store allows one at a time)
      bulk_thread_ = std::thread([v1, db, arts, fs, id = std::move(id), uri = std::move(uri)] {
        v1->run_bulk(id, read_uri(*arts, fs, uri, max_bulk_input_bytes));
      });
    });
    if (auto c = ctx.counter("deployment_api_requests", "Greengrass v2 API requests answered"))
      requests_ = *c;
    if (auto c = ctx.counter("deployment_api_refused",
                             "Greengrass v2 API requests answered with an error status"))
      refused_ = *c;
    if (cfg.api.development_plain_http) {
      ctx.log().warn("deployment: api.development_plain_http is ON: the Greengrass v2 API on "
                     "{}:{} is PLAIN HTTP, credentials' signatures and recipes cross the "
                     "network unencrypted. Never in production.",
                     cfg.api.bind, cfg.api.port);
      server_ = std::make_unique<httplib::Server>();
    } else {
      auto tls = std::make_unique<httplib::SSLServer>(cfg.api.cert_file.c_str(),
                                                      cfg.api.key_file.c_str());
      if (!tls->is_valid())
        return bad("api.cert_file/api.key_file: '" + cfg.api.cert_file.string() + "' and '"
                   + cfg.api.key_file.string()
                   + "' are not a PEM certificate and its private key");
      server_ = std::move(tls);
    }
    // Headers and body leave as separate TLS records: without TCP_NODELAY, Nagle holds
    // the second until the client's delayed ACK (~40 ms per request).
    server_->set_tcp_nodelay(true);
    auto threads = static_cast<size_t>(cfg.api.threads);
    server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    // httplib answers a larger body 413 itself; the API's own check sits just below.
    server_->set_payload_max_length(static_cast<size_t>(cfg.api.max_body_bytes) + 1);
    // Every route goes to the API, which answers unknown ones in AWS's shape. (httplib's
    // pre-routing handler runs before the body is read, so catch-all routes it is.)
    auto all = [this](const httplib::Request& in, httplib::Response& out) { serve(in, out); };
    server_->Get(".*", all).Post(".*", all).Put(".*", all).Patch(".*", all).Delete(".*", all);
    if (!server_->bind_to_port(cfg.api.bind, cfg.api.port))
      return grove::make_error(grove::errc::system_error,
                               "api: cannot listen on " + cfg.api.bind + ":"
                                 + std::to_string(cfg.api.port));
    // dep-bus-1: the operator's calls; the store is SQLite, so each runs off the slot.
    if (auto err = ctx.serve(components_topic, [this](const grove::Envelope& msg) {
          auto call = components_rpc_service::decode(msg);
          if (!call) {
            ctx_->reply_error(msg, std::move(call.error()));
            return;
          }
          ctx_->run_blocking(
            // Shares the API and its store: a stop() meanwhile cannot free them under it.
            [api = api_, db = store_, c = std::move(*call)] {
              auto r = api->operator_call(c.operation(), c.arn(), c.recipe_output_format(),
                                          c.vendor_guidance(), c.message(), c.body(),
                                          c.next_token(), c.max_results());
              ApiAnswer answer;
              answer.set_status(r.status);
              answer.set_body(r.body);
              for (const auto& [k, v] : r.headers)
                if (k == "x-amzn-ErrorType")
                  answer.set_error_type(v);
              return answer;
            },
            [this, msg](caf::expected<ApiAnswer> answer) {
              components_rpc_service::reply(*ctx_, msg, std::move(answer));
            });
        }))
      return err;
    ctx.set_status("api", std::string{cfg.api.development_plain_http ? "http" : "https"}
                            + "://" + cfg.api.bind + ":" + std::to_string(cfg.api.port));
    if (cfg.discovery.enabled)
      if (auto err = init_discovery(cfg))
        return err;
    return {};
  }

  // Greengrass v1's discovery (discovery_server.hpp): its own mutual-TLS listener, the
  // group read from the kernel now and on every change (on_message).
  caf::error init_discovery(const deployment_config& cfg) {
    discovery_server::parts p;
    p.settings.region = cfg.region;
    p.settings.account_id = cfg.account_id;
    p.settings.core_thing = cfg.thing_name;
    p.sources.connectivity =
      [db = store_](const std::string& thing) -> caf::expected<std::optional<nlohmann::json>> {
      auto rec = db->connectivity(thing);
      if (!rec)
        return std::move(rec.error());
      if (!*rec)
        return std::optional<nlohmann::json>{};
      return std::optional<nlohmann::json>{(*rec)->info};
    };
    p.sources.deployed_group_id = [db = groups_] { return last_deployed_group(*db); };
    p.sources.group_cas = [v1 = v1_] { return v1->trusted_cas(); };
    p.trust_dir = cfg.group_ca_dir / "trust";
    p.log = &ctx_->log();
    if (auto c = ctx_->counter("deployment_discovery_requests", "discovery requests answered"))
      p.requests = *c;
    if (auto c = ctx_->counter("deployment_discovery_refused",
                               "discovery requests answered with an error status"))
      p.refused = *c;
    auto srv = discovery_server::make(cfg.discovery, std::move(p));
    if (!srv)
      return std::move(srv.error());
    discovery_ = std::move(*srv);
    if (auto err = ctx_->subscribe(grove::group_client::current_topic))
      return err;
    ctx_->set_status("discovery", "https://" + cfg.discovery.bind + ":"
                                    + std::to_string(cfg.discovery.port)
                                    + " (mutual TLS, group CA)");
    return {};
  }

  // The broker advertised on the LAN (README "Greengrass discovery", disc-6): Avahi's
  // publisher as a supervised child, restarted with the kernel's back-off (e.g. while
  // avahi-daemon is down: avahi-publish then exits at once); it dies with groved.
  void start_dns_sd() {
    const auto& cfg = config();
    grove::process_options o;
    o.argv = {"avahi-publish", "-s", "Grove " + cfg.thing_name, "_grove-mqtt._tcp",
              std::to_string(cfg.discovery.dns_sd_port), "thing=" + cfg.thing_name,
              "discovery=" + std::to_string(cfg.discovery.port)};
    o.restart = true;
    o.log_prefix = "avahi-publish: ";
    o.stdout_level = grove::output_level::info;
    o.stderr_level = grove::output_level::warn;
    grove::process_callbacks cb;
    cb.on_exit = [this](const grove::process_exit& e) {
      ctx_->set_status("dns_sd", "avahi-publish " + e.describe()
                                   + (e.gave_up ? ", gave up" : ", restarting"));
    };
    cb.on_output = [this](grove::output_stream, const std::string& line) {
      if (line.starts_with("Established under name"))
        ctx_->set_status("dns_sd", "_grove-mqtt._tcp advertised: " + line.substr(23));
    };
    auto p = grove::process::start(*ctx_, std::move(o), std::move(cb));
    if (!p) {
      ctx_->log().error("deployment: discovery.dns_sd: cannot start avahi-publish (install "
                        "avahi-utils): {}",
                        grove::describe(p.error()));
      ctx_->set_status("dns_sd", "not advertised: " + grove::describe(p.error()));
      return;
    }
    dns_sd_ = std::move(*p);
    ctx_->set_status("dns_sd", "avahi-publish started");
  }

  // On the actor: the group discovery answers for.
  void set_discovery_group(const grove::group::Group& g) {
    // The start's get may answer after a newer `$grove/group/current` (the kernel bumps
    // the version on every change it applies): an older group is not taken back.
    if (discovery_version_ && g.version() < *discovery_version_)
      return;
    discovery_version_ = g.version();
    discovery_group dg;
    dg.name = g.name();
    for (const auto& d : g.devices())
      dg.devices.insert(d.thing());
    ctx_->log().info("deployment: discovery answers the {} device(s) of group '{}' version {}",
                     dg.devices.size(), dg.name, g.version());
    discovery_->set_group(std::move(dg));
  }

  // At start, before anything applies (resume() comes after, so no preparation makes a
  // link meanwhile): the artifact links of component versions the core no longer has (not
  // installed, not handed over, not in a rollback journal's set) go, and with them the
  // per-mode artifact copies no remaining link names (artifact_store::with_mode): a removed
  // version's copies would stay for ever otherwise. A journal that cannot be read prunes
  // nothing. A version applied again is linked (and copied) again by its preparation.
  void prune_packages() {
    namespace fs = std::filesystem;
    std::set<std::pair<std::string, std::string>> keep;
    for (const auto& h : handed_)
      keep.emplace(h.record.plan.name, h.record.plan.version);
    auto rows = store_->installed();
    auto journals = store_->rollbacks();
    if (!rows || !journals)
      return;
    for (const auto& r : *rows)
      keep.emplace(r.name, r.version);
    for (const auto& [id, text] : *journals) {
      auto back = rollback_of(text, nullptr);
      if (!back)
        return;
      for (const auto& p : back->first)
        keep.emplace(p.name, p.version);
    }
    auto packages = ctx_->state_dir() / "components" / "packages";
    size_t versions = 0;
    std::set<fs::path> in_use;
    for (const char* kind : {"artifacts", "artifacts-unarchived"}) {
      std::error_code ec;
      std::vector<fs::path> names, old;
      for (const auto& n : fs::directory_iterator{packages / kind, ec})
        names.push_back(n.path());
      for (const auto& n : names) {
        std::error_code e;
        for (const auto& v : fs::directory_iterator{n, e}) {
          if (!keep.contains({n.filename().string(), v.path().filename().string()})) {
            old.push_back(v.path());
            continue;
          }
          std::error_code le;
          for (const auto& f : fs::directory_iterator{v.path(), le})
            if (f.is_symlink(le))
              in_use.insert(fs::read_symlink(f.path(), le).lexically_normal());
        }
      }
      for (const auto& v : old) {
        std::error_code e;
        fs::remove_all(v, e);
        versions += kind == std::string_view{"artifacts"} ? 1 : 0;
      }
      for (const auto& n : names) {
        std::error_code e;
        fs::remove(n, e); // only when empty
      }
    }
    auto copies = artifacts_->prune_modes(in_use);
    if (versions > 0 || copies > 0)
      ctx_->log().info("deployment: the artifact links of {} component version(s) the core no "
                       "longer has and {} per-mode artifact copies removed",
                       versions, copies);
  }

  caf::error start() override {
    prune_packages();
    // Versions a crash or stop left REQUESTED or INITIATED: fetched again.
    if (auto pending = store_->unsettled(); pending) {
      for (const auto& [name, version] : *pending)
        fetch(name, version);
    } else {
      ctx_->log().error("deployment: cannot list unsettled versions: {}",
                        grove::describe(pending.error()));
    }
    {
      std::lock_guard guard{runner_mtx_};
      auto write_dir = ctx_->state_dir().parent_path().parent_path();
      // A hot reload: the processes the last instance handed over (snapshot()) are
      // adopted now (what start() leaves unadopted the kernel stops), and spared by the
      // runner's sweep of what earlier runs left.
      std::map<std::string, grove::process> kept;
      std::set<pid_t> spare;
      std::set<std::string> services; // startups' services, stopped by the next runner
      for (const auto& h : handed_) {
        if (h.service_pgid > 0)
          services.insert(h.record.plan.name);
        if (h.kept)
          if (auto p = ctx_->adopt_process("component:" + h.record.plan.name)) {
            if (auto pid = p->pid(); pid > 0)
              spare.insert(pid);
            kept.emplace(h.record.plan.name, std::move(*p));
          }
      }
      start_ipc(); // Greengrass IPC (ipc_server.cpp)
      runner_ = std::make_unique<runner>(*ctx_, ctx_->state_dir() / "components",
                                         write_dir / "logs" / "components", thing_name_,
                                         std::move(spare), std::move(services));
      runner_->set_settings(runner_settings_);
      if (ipc_)
        runner_->set_extra_env([ipc = ipc_.get()](const std::string& n) { return ipc->env(n); });
      // The components the journal kept: listed with their last states at once, their
      // effective configurations what the next deployment builds on. After a hot reload,
      // the last instance's own records instead (the journal is written behind it).
      if (!handed_.empty()) {
        std::vector<installed_record> records;
        for (const auto& h : handed_)
          records.push_back(h.record);
        runner_->restore(std::move(records));
        runner_->adopt(handed_, std::move(kept));
        handed_.clear();
      } else if (auto rows = store_->installed(); rows) {
        std::vector<installed_record> records;
        for (const auto& r : *rows)
          records.push_back(record_of(r));
        runner_->restore(std::move(records));
      } else {
        ctx_->log().error("deployment: cannot read the installed components: {}",
                          grove::describe(rows.error()));
      }
      runner_->on_change([this] {
        journal_installed();
        sync_ipc();
      });
      sync_ipc();
    }
    resume();
    thread_ = std::thread([srv = server_.get()] { srv->listen_after_bind(); });
    if (discovery_) {
      discovery_->start();
      grove::group_client::get(*ctx_, std::chrono::seconds{10},
                               [this](caf::expected<grove::group::Group> g) {
                                 if (g) {
                                   set_discovery_group(*g);
                                 } else {
                                   ctx_->log().warn("deployment: discovery has no group yet "
                                                    "(every thing is answered 404): {}",
                                                    grove::describe(g.error()));
                                 }
                               });
      ctx_->log().info("deployment: Greengrass discovery listening on {}:{}",
                       config().discovery.bind, config().discovery.port);
      if (config().discovery.dns_sd)
        start_dns_sd();
    }
    start_ip_detector();
    ctx_->log().info("deployment: Greengrass v2 API listening on {}:{}", config().api.bind,
                     config().api.port);
    return {};
  }

  // A hot reload: generic components' running processes go to the next instance
  // (context::keep_process) with every component's record, so a reload leaves them
  // running (same pids) instead of stopping and starting them again.
  // Greengrass IPC's socket and connections go too (ipc_server::detach), last: the
  // components' clients do not reconnect.
  caf::expected<std::string> snapshot() override {
    nlohmann::json out = {{"components", nlohmann::json::array()}};
    std::lock_guard guard{runner_mtx_};
    auto with_ipc = [&] {
      if (ipc_)
        out["ipc"] = ipc_->detach();
      return out.dump();
    };
    if (!runner_)
      return with_ipc();
    for (const auto& h : runner_->hand_over()) {
      auto row = row_of(h.record);
      out["components"].push_back({{"name", row.name},
                                   {"version", row.version},
                                   {"state", row.state},
                                   {"details", row.details},
                                   {"changedMs", row.changed_ms},
                                   {"plan", nlohmann::json::parse(row.plan)},
                                   {"main", h.main},
                                   {"errors", h.errors},
                                   {"installedVersion", h.installed_version},
                                   {"kept", h.kept},
                                   {"servicePgid", h.service_pgid}});
    }
    return with_ipc();
  }

  caf::error restore(std::string_view snap) override {
    auto in = nlohmann::json::parse(snap, nullptr, false);
    if (!in.is_object() || !in.contains("components") || !in["components"].is_array())
      return grove::make_error(grove::errc::malformed,
                               "deployment: the last instance's snapshot is no object with "
                               "`components`");
    handed_.clear();
    ipc_handed_ = in.contains("ipc") ? in["ipc"] : nlohmann::json{};
    try {
      for (const auto& c : in["components"]) {
        installed_row row{c.at("name").get<std::string>(), c.at("version").get<std::string>(),
                          c.at("state").get<std::string>(), c.at("details").get<std::string>(),
                          c.at("changedMs").get<int64_t>(), c.at("plan").dump()};
        handed_component h;
        h.record = record_of(row);
        h.main = c.at("main").get<std::string>();
        h.errors = c.at("errors").get<int>();
        h.installed_version = c.at("installedVersion").get<std::string>();
        h.kept = c.at("kept").get<bool>();
        h.service_pgid = c.value("servicePgid", pid_t{0});
        handed_.push_back(std::move(h));
      }
    } catch (const std::exception& e) {
      handed_.clear();
      return grove::make_error(grove::errc::malformed,
                               std::string{"deployment: the last instance's snapshot: "}
                                 + e.what());
    }
    return {};
  }

  // Greengrass v1's IP detector (ip_detector.hpp): the core's connectivity information
  // from its interfaces now and on every address change. Off, the detector's entries a
  // past run left are taken out once (they may name addresses gone since).
  void start_ip_detector() {
    const auto& cfg = config();
    if (cfg.thing_name.empty())
      return;
    detect_addresses_now();
    if (!cfg.ip_detector.enabled)
      return;
    std::string how;
    ip_watcher_ = address_watcher::start(
      [this] { ctx_->post([this] { detect_addresses_now(); }); }, std::chrono::seconds{30}, how);
    ctx_->log().info("deployment: ip_detector: watching address changes ({})", how);
  }

  // On the actor: the detected addresses merged into thing_name's list on the pool.
  void detect_addresses_now() {
    const auto& cfg = config();
    ip_detector_options o;
    o.include_ipv6 = cfg.ip_detector.include_ipv6;
    o.include_loopback = cfg.ip_detector.include_loopback;
    o.interfaces = cfg.ip_detector.interfaces;
    o.exclude = cfg.ip_detector.exclude;
    o.port = cfg.ip_detector.port != 0 ? cfg.ip_detector.port : cfg.discovery.dns_sd_port;
    bool on = cfg.ip_detector.enabled;
    struct outcome {
      std::optional<int64_t> version; // nullopt: unchanged
      std::vector<interface_address> detected;
    };
    ctx_->run_blocking(
      [db = store_, o, on, thing = cfg.thing_name]() -> caf::expected<outcome> {
        outcome out;
        if (on) {
          auto all = interface_addresses();
          if (!all)
            return std::move(all.error());
          out.detected = select_addresses(std::move(*all), o);
        }
        auto v = db->update_connectivity(
          thing,
          [&](const nlohmann::json& old) { return merge_detected(old, out.detected, o.port); },
          now_ms());
        if (!v)
          return std::move(v.error());
        out.version = *v;
        return out;
      },
      [this, on](caf::expected<caf::expected<outcome>> r) {
        auto got = r ? std::move(*r) : caf::expected<outcome>{r.error()};
        if (!got) {
          ctx_->log().error("deployment: ip_detector: the connectivity information could not "
                            "be updated: {}",
                            grove::describe(got.error()));
          if (on)
            ctx_->set_status("ip_detector", "failed: " + grove::describe(got.error()));
          return;
        }
        if (!on) {
          if (got->version)
            ctx_->log().info("deployment: ip_detector is off: its entries taken out of the "
                             "connectivity information (version {})",
                             *got->version);
          return;
        }
        std::string list;
        for (const auto& a : got->detected)
          list += (list.empty() ? "" : ", ") + a.interface + " " + a.address;
        ctx_->set_status("ip_detector", std::to_string(got->detected.size()) + " address(es)"
                                          + (list.empty() ? "" : ": " + list));
        if (got->version)
          ctx_->log().info("deployment: ip_detector: connectivity information version {}: {}",
                           *got->version, list.empty() ? "no address" : list);
      });
  }

  void stop() override {
    // Fetches in flight give up, and are waited for: they hold the store, which the next
    // instance (a reload) opens, exclusively.
    if (fetch_.cancel)
      fetch_.cancel->cancel();
    ip_watcher_.reset();
    if (v1_)
      v1_->shutdown();
    {
      auto& t = *fetches_;
      std::unique_lock lock{t.mtx};
      if (!t.cv.wait_for(lock, std::chrono::seconds{10}, [&t] { return t.running == 0; }))
        ctx_->log().warn("deployment: {} artifact fetches did not end within 10 s of stop",
                         t.running);
    }
    if (server_)
      server_->stop();
    if (thread_.joinable())
      thread_.join();
    server_.reset();
    {
      // After the server: no StartBulkDeployment can start another meanwhile.
      std::lock_guard guard{bulk_mtx_};
      if (bulk_thread_.joinable())
        bulk_thread_.join();
    }
    dns_sd_ = grove::process{};
    if (discovery_)
      discovery_->stop();
    discovery_.reset();
    *alive_ = false;
    {
      std::lock_guard guard{runner_mtx_};
      runner_.reset(); // stops every component
    }
    ipc_.reset(); // after the components it serves
    if (v1_) {
      // Both hold the v1 API and its store (a cycle): the store is let go for the next
      // instance (a reload opens it) only once they are gone.
      v1_->set_applier({});
      v1_->set_bulk_starter({});
    }
    api_.reset();
    v1_.reset();
    store_.reset();
    groups_.reset();
  }

  void on_message(const grove::Envelope& msg) override {
    // Greengrass local publish/subscribe: the bus's messages on components' filters
    // (not the plugin's own publishes: their local subscribers have them already).
    if (auto cloud = grove::message_manager::cloud_topic_of(msg.topic(), ctx_->name())) {
      if (ipc_ && msg.source() == "cloud") // mm-9: message_manager's, from the cloud
        ipc_->deliver_iot(std::string{*cloud}, msg.payload());
      return;
    }
    if (msg.topic() != grove::group_client::current_topic) {
      if (ipc_ && msg.source() != ctx_->name())
        ipc_->deliver(msg.topic(), msg.payload(), msg.content_type());
      return;
    }
    // The API is HTTP; only the kernel's new groups arrive here, for discovery.
    if (!discovery_ || msg.topic() != grove::group_client::current_topic)
      return;
    if (msg.source() != grove::group_client::source) {
      ctx_->log().warn("deployment: ignored a group from '{}': only the kernel's is accepted",
                       msg.source());
      return;
    }
    grove::group::Group g;
    if (!g.ParseFromString(msg.payload())) {
      ctx_->log().error("deployment: a malformed group on {}: discovery keeps the last one",
                        msg.topic());
      return;
    }
    set_discovery_group(g);
  }

private:
  // A change of the group a deployment journaled as pending and left undecided (it
  // settled, or never resumed, before the change could be checked).
  struct undecided {
    std::string id;
    group_changes changes;
    bool undo = false; // its rollback owed it: undone when in force
    std::string state;   // the deployment's status (execution), for the log
    int64_t seq = 0;     // its order of creation: the newest is decided first
    // The run of a deployment CANCELED while it applied that kill -9 cut short (its row
    // not marked ended): every change of the group it made is decided, not only the
    // pending one (its run's rollback never came).
    bool whole = false;
    // Its rollback owed, and it settled last: the set before it runs again (not the
    // journal's set, which a rollback that failed or never came left as it was).
    bool put_back = false;
  };

  // What resume() finds at start.
  struct resume_plan {
    std::string id; // the deployment to apply again; "" : none
    nlohmann::json resolved;
    std::string journal; // else: why the journal's set starts as it was; "" : nothing
    std::vector<undecided> left; // changes of the group left undecided, decided first
    // Applied instead of the journal's set: the set before the deployment that settled
    // last, when a start decides its row and its rollback is owed (ROLLBACK; a run canceled
    // while it applied and cut short, or one whose rollback could not undo everything).
    std::optional<std::vector<component_plan>> before;
  };

  // On the actor, at start: what the core ran comes back. The current deployment of this
  // core (the newest of those its targets keep, effective_by_target: a target whose newest
  // deployment failed or never ran keeps its last applied one; deleted or not:
  // DeleteDeployment does not change what the core runs) is applied again: components
  // come back after a restart, and one that a kill -9 cut short resumes (its journal row
  // is still ACTIVE / IN_PROGRESS). When none is ACTIVE and the deployment whose run
  // settled last FAILED or was CANCELED, what ran is the journal's set (the rolled-back
  // set, or what a DO_NOTHING deployment left): the runner starts it as it was (Greengrass
  // starts, at boot, what the device ran at its last settled state). One canceled or
  // refused before it ran changed nothing and is not what settled last.
  void resume() {
    ctx_->run_blocking(
      [db = store_, a = api_]() -> caf::expected<resume_plan> {
        // Replaced deployments whose run a restart cut short, or whose turn never came:
        // nothing runs them again (the newer one applies), so they end CANCELED.
        if (auto n = db->end_replaced_runs("replaced by a newer deployment to its target; a "
                                           "restart of the core came before its run began or ended",
                                           now_ms());
            !n)
          return std::move(n.error());
        auto all = db->deployments();
        if (!all)
          return std::move(all.error());
        std::vector<deployment_record> mine; // this core's targets', newest first
        for (const auto& d : *all)
          if (a->targets_this_core(d.target_arn))
            mine.push_back(d);
        auto state = core_journal_state_of(mine);
        const deployment_record* current = state.current;
        const deployment_record* settled = state.settled;
        // Rollback journals of deployments that will not resume (settled, skipped for a
        // newer one, left by a kill -9) go, but for a change of the group they hold
        // undecided (pending), decided first; the current one's, when ACTIVE, is its
        // resume's.
        auto rows = db->rollbacks();
        if (!rows)
          return std::move(rows.error());
        std::vector<undecided> left;
        bool journal_set = settled && settled->status != "COMPLETED"
                           && (!current || current->status != "ACTIVE");
        std::optional<std::vector<component_plan>> before;
        for (const auto& [rid, text] : *rows) {
          if (current && current->status == "ACTIVE" && rid == current->id)
            continue;
          if (auto u = undecided_of(rid, text, *all)) {
            // Its rollback owed and it ran last: the set before it, not what it left (a
            // component whose function the decision takes out would start it again).
            if (u->undo && journal_set && rid == settled->id)
              if (auto back = rollback_of(text, nullptr)) {
                before = std::move(back->first);
                u->put_back = true;
              }
            left.push_back(std::move(*u));
            continue;
          }
          if (auto err = db->forget_rollback(rid))
            return err;
        }
        if (journal_set)
          return resume_plan{{}, {}, "deployment " + settled->id + " settled last, " + settled->status,
                      std::move(left), std::move(before)};
        if (current) {
          auto r = a->resolve_deployment(*current);
          if (r.status != 200)
            return grove::make_error(grove::errc::invalid_state,
                                     "deployment " + current->id + " no longer resolves: " + r.body);
          return resume_plan{current->id, nlohmann::json::parse(r.body), {}, std::move(left)};
        }
        return resume_plan{{}, {}, {}, std::move(left)};
      },
      [this](caf::expected<caf::expected<resume_plan>> outer) {
        auto got = outer ? std::move(*outer) : caf::expected<resume_plan>{outer.error()};
        if (!got) {
          ctx_->log().error("deployment: cannot resume: {}", grove::describe(got.error()));
          return;
        }
        // Newest first (decide_left takes from the back), so that two changes of one
        // entry (v0 -> v1, then v1 -> v2) undo back to v0.
        auto left = std::move(got->left);
        std::sort(left.begin(), left.end(),
                  [](const undecided& a, const undecided& b) { return a.seq < b.seq; });
        decide_left(std::move(left), [this, got = std::move(*got)] { go_on(got); });
      });
  }

  // The undecided change a rollback journal row holds, if any (`all`: the deployments).
  // A row of a deployment CANCELED while it applied is kept: its run went on (a cancel
  // changes nothing on a core that has the deployment, as Greengrass says). Cut short by
  // kill -9 (no `ended`), the run never comes back (the deployment is canceled): what it
  // changed is undone as its failure would have, per its policy.
  static std::optional<undecided> undecided_of(const std::string& id, const std::string& text,
                                               const std::vector<deployment_record>& all) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object())
      return std::nullopt;
    const deployment_record* rec = nullptr;
    for (const auto& d : all)
      if (d.id == id)
        rec = &d;
    bool cut = rec && rec->status == "CANCELED" && !j.value("ended", false);
    auto group = j.value("group", nlohmann::json::object());
    if (!cut && (!group.is_object() || !group.contains("pending")))
      return std::nullopt;
    auto changes = group_changes::from_json(group);
    if (!changes || (!cut && !changes->pending())) // a malformed one cannot be decided
      return std::nullopt;
    // Undone when in force only if the deployment's run FAILED with ROLLBACK (or its
    // record is gone; a deleted deployment's stays): a DO_NOTHING one, or one skipped for
    // a newer deployment, keeps it.
    // The run's result, not the status: a newer deployment to the same target turns a
    // FAILED one INACTIVE, and its rollback is owed all the same; a canceled run whose
    // row was marked ended left a change undecided only when it failed.
    bool rollback = j.value("rollback", false);
    bool undo = rollback
                && (cut || !rec || rec->execution == "FAILED" || rec->status == "CANCELED");
    undecided u{id, std::move(*changes), undo,
                rec ? rec->status + " (" + rec->execution + ")" : std::string{"deleted"},
                rec ? rec->seq : std::numeric_limits<int64_t>::max()};
    u.whole = cut;
    return u;
  }

  // Decides the undecided changes one by one (runner::decide_left); a decided one's row
  // goes, one that could not be decided stays for the next start. Then `then`.
  void decide_left(std::vector<undecided> left, std::function<void()> then) {
    if (left.empty() || !runner_) {
      then();
      return;
    }
    auto u = std::move(left.back());
    left.pop_back();
    if (u.whole)
      ctx_->log().info("deployment: deployment {} ({}) was canceled while it applied and its "
                       "run cut short: deciding its changes of the group",
                       u.id, u.state);
    else
      ctx_->log().info("deployment: deciding the change of the group deployment {} ({}) "
                       "left undecided",
                       u.id, u.state);
    runner_->decide_left(
      std::move(u.changes), u.undo, u.whole, runner_settings_.start_read_timeout,
      [this, id = u.id, whole = u.whole, put_back = u.put_back, left = std::move(left),
       then = std::move(then), alive = alive_](caf::expected<std::string> decided) mutable {
        if (!*alive)
          return;
        if (!decided) {
          ctx_->log().error("deployment: the change of the group deployment {} left "
                            "undecided is still undecided ({}): kept for the next start",
                            id, grove::describe(decided.error()));
          // The group did not answer (three reads timed out): the others would wait as
          // long each, so they are kept for the next start unread, and the start goes on.
          if (decided.error() == grove::errc::timeout && !left.empty()) {
            ctx_->log().error("deployment: the group does not answer: {} more change(s) of "
                              "the group left undecided kept for the next start unread",
                              left.size());
            left.clear();
          }
          decide_left(std::move(left), std::move(then));
          return;
        }
        // The decision goes in the deployment's reason (ListEffectiveDeployments), which
        // said the next start would decide.
        if (whole)
          *decided = "a start found its run cut short after the cancel: " + *decided;
        if (put_back)
          *decided += "; the set before it runs again";
        ctx_->run_blocking(
          [db = store_, id, note = std::move(*decided)] {
            auto err = db->forget_rollback(id, note);
            return err ? grove::describe(err) : std::string{};
          },
          [this, id, left = std::move(left), then = std::move(then),
           alive](caf::expected<std::string> r) mutable {
            if (!*alive)
              return;
            auto why = r ? *r : grove::describe(r.error());
            if (!why.empty())
              ctx_->log().error("deployment: the decided change of {} stays journaled: {}", id,
                                why);
            else
              ctx_->log().info("deployment: {}: its decided change of the group is no longer "
                               "journaled",
                               id);
            decide_left(std::move(left), std::move(then));
          });
      });
  }

  // resume() goes on, once the undecided changes are decided.
  void go_on(const resume_plan& got) {
    if (!got.id.empty()) {
      ctx_->log().info("deployment: applying deployment {} again at start", got.id);
      apply_deployment(got.id, got.resolved);
    } else if (got.before && runner_) {
      ctx_->log().info("deployment: {}, its rollback owed: the set before it runs again "
                       "({} components)",
                       got.journal, got.before->size());
      runner_->apply(*got.before, false, std::chrono::seconds{60}, [this](apply_outcome o) {
        if (o.ok)
          ctx_->log().info("deployment: the set before the deployment that settled last runs "
                           "again");
        else
          ctx_->log().error("deployment: the set before the deployment that settled last did "
                            "not all start again: {}",
                            o.reason);
      });
    } else if (!got.journal.empty() && runner_) {
      ctx_->log().info("deployment: {}: the journaled set runs again as it was",
                       got.journal);
      runner_->restart([this](apply_outcome o) {
        if (o.ok)
          ctx_->log().info("deployment: the journaled set runs again");
        else
          ctx_->log().error("deployment: the journaled set did not all start again: {}",
                            o.reason);
      });
    }
  }

  // How a v1 deployment ended ("" : Success), recorded on the pool.
  void report_v1(std::shared_ptr<v1_api> v1, std::shared_ptr<v1_store> db, v1_apply_job job,
                 std::string error) {
    if (!error.empty())
      ctx_->log().error("deployment: v1 deployment {} of group {} refused: {}",
                        job.deployment_id, job.group_id, error);
    ctx_->run_blocking(
      [v1, db, job, error] {
        // The trust directory's error as text (an expected<caf::error> cannot be).
        auto err = v1->applied(job.group_id, job.deployment_id, error, now_ms());
        return err ? caf::to_string(err) : std::string{};
      },
      [this](caf::expected<std::string> r) {
        auto why = r ? *r : caf::to_string(r.error());
        if (!why.empty())
          ctx_->log().error("deployment: the group CA trust directory could not be written "
                            "after a v1 deployment: {}",
                            why);
      });
  }

  // The journal's row of a runner's component, and back.
  static installed_row row_of(const installed_record& r) {
    nlohmann::json plan = {{"root", r.plan.root},
                           {"recipe", r.plan.recipe},
                           {"configuration", r.plan.configuration},
                           {"posixUser", r.plan.posix_user},
                           {"limits", {{"memory", r.plan.limits.memory_kb},
                                       {"cpus", r.plan.limits.cpus}}},
                           {"artifactsPath", r.plan.artifacts_path},
                           {"decompressedPath", r.plan.decompressed_path},
                           {"foreign", r.foreign},
                           {"installedVersion", r.installed_version},
                           {"bootstrappedVersion", r.bootstrapped_version}};
    return installed_row{r.plan.name, r.plan.version, r.state, r.details, r.changed_ms,
                         plan.dump()};
  }

  static installed_record record_of(const installed_row& r) {
    installed_record out;
    auto plan = nlohmann::json::parse(r.plan, nullptr, false);
    if (!plan.is_object())
      plan = nlohmann::json::object();
    out.plan.name = r.name;
    out.plan.version = r.version;
    out.plan.root = plan.value("root", false);
    out.plan.recipe = plan.value("recipe", nlohmann::json::object());
    out.plan.configuration = plan.value("configuration", nlohmann::json::object());
    out.plan.posix_user = plan.value("posixUser", std::string{});
    auto limits = plan.value("limits", nlohmann::json::object());
    out.plan.limits = {limits.value("memory", int64_t{0}), limits.value("cpus", 0.0)};
    out.plan.artifacts_path = plan.value("artifactsPath", std::string{});
    out.plan.decompressed_path = plan.value("decompressedPath", std::string{});
    out.installed_version = plan.value("installedVersion", std::string{});
    out.bootstrapped_version = plan.value("bootstrappedVersion", std::string{});
    out.foreign = plan.value("foreign", false);
    out.state = r.state;
    out.details = r.details;
    out.changed_ms = r.changed_ms;
    return out;
  }

  // On the actor, when the runner's set or a state changes: the set written to the
  // journal on the pool, one write at a time (changes meanwhile make one more write).
  void journal_installed() {
    auto& j = *journal_;
    j.dirty = true;
    if (j.busy || !runner_)
      return;
    j.busy = true;
    j.dirty = false;
    std::vector<installed_row> rows;
    for (const auto& r : runner_->snapshot())
      rows.push_back(row_of(r));
    ctx_->run_blocking(
      [db = store_, rows = std::move(rows)] {
        auto err = db->put_installed(rows);
        return err ? grove::describe(err) : std::string{};
      },
      [this, st = journal_, alive = alive_](caf::expected<std::string> r) {
        st->busy = false;
        auto why = r ? std::move(*r) : grove::describe(r.error());
        if (!*alive)
          return;
        if (!why.empty())
          ctx_->log().error("deployment: the installed components could not be journaled: {}",
                            why);
        if (st->dirty)
          journal_installed();
      });
  }

  // --- Greengrass IPC (ipc_server.cpp) --------------------------------------------------

  void start_ipc() {
    if (ipc_)
      return;
    // In the state directory, not groved's run/ (its control socket): a runWith user's
    // component passes the same traversal-only directories as to its {artifacts:path}.
    // After a hot reload, the last instance's socket and connections (snapshot()).
    auto handed = std::exchange(ipc_handed_, nlohmann::json{});
    auto s = ipc_server::start(ctx_->state_dir() / "greengrass-ipc.socket",
                               ctx_->state_dir() / "ipc.key",
                               ctx_->state_dir() / "ipc-configuration-changes.json", ctx_->log(),
                               handed.is_object() ? &handed : nullptr);
    if (!s) {
      ctx_->log().error("deployment: no Greengrass IPC: {}", grove::describe(s.error()));
      return;
    }
    ipc_ = std::move(*s);
    // Components' PublishToTopic goes on the bus too (Greengrass' local publish/subscribe
    // is Grove's bus: the MQTT bridge's Pubsub, functions), and their SubscribeToTopic
    // filters are the plugin's bus subscriptions.
    ipc_->on_publish([this](const std::string& topic, std::string payload, std::string ct) {
      ctx_->post([this, topic, payload = std::move(payload), ct = std::move(ct)] {
        grove::Envelope e;
        e.set_topic(topic);
        e.set_payload(payload);
        e.set_content_type(ct);
        if (auto r = ctx_->publish(std::move(e)); !r)
          ctx_->log().warn("deployment: IPC: a publish on {} did not reach the bus: {}", topic,
                           grove::describe(r.error()));
      });
    });
    ipc_->on_filters([this](std::set<std::string> all) {
      ctx_->post([this, all = std::move(all)] { set_bus_filters(all); });
    });
    // Shadow operations go to the shadow plugin's bus API (sh-1..sh-4), answered when
    // its reply comes; an answer for a server since replaced (a restart of IPC) is dropped.
    auto server = ++ipc_generation_;
    ipc_->on_shadow([this, server](ipc_server::shadow_call call,
                                   std::function<void(ipc_server::answer_data)> answer) {
      ctx_->post([this, server, call = std::move(call), answer = std::move(answer)] {
        auto done = [this, server, answer](ipc_server::answer_data a) {
          if (ipc_ && ipc_generation_ == server)
            answer(std::move(a));
        };
        if (call.op == "ListNamedShadowsForThing") {
          grove::shadow::list_rpc rpc{std::string{grove::shadow::list_topic}};
          rpc(*ctx_, grove::shadow::make_list(call.thing, call.page_size, call.next_token),
              ipc_call_timeout, [done](caf::expected<grove::shadow::ListReply> r) {
                if (!r)
                  return done(shadow_bus_error(r.error()));
                ipc_server::answer_data a;
                a.body["results"] = std::vector<std::string>(r->results().begin(),
                                                             r->results().end());
                a.body["timestamp"] = r->timestamp();
                if (!r->next_token().empty())
                  a.body["nextToken"] = r->next_token();
                done(std::move(a));
              });
          return;
        }
        auto topic = call.op == "GetThingShadow"      ? grove::shadow::get_topic
                     : call.op == "UpdateThingShadow" ? grove::shadow::update_topic
                                                      : grove::shadow::delete_topic;
        grove::shadow::document_rpc rpc{std::string{topic}};
        rpc(*ctx_, grove::shadow::make_request(call.thing, call.name, call.payload),
            ipc_call_timeout, [done](caf::expected<grove::shadow::Reply> r) {
              if (!r)
                return done(shadow_bus_error(r.error()));
              done(shadow_reply(*r));
            });
      });
    });
    // PublishToIoTCore / SubscribeToIoTCore: message_manager's cloud link, as one of its
    // system clients (its cloud.system_clients must list this plugin); cloud messages
    // for the components' filters come on mm-9.
    ipc_->on_iot_publish([this, server](std::string topic, std::string payload,
                                        std::function<void(ipc_server::answer_data)> answer) {
      ctx_->post([this, server, topic = std::move(topic), payload = std::move(payload),
                  answer = std::move(answer)] {
        grove::message_manager::cloud_publish(
          *ctx_, topic, payload, ipc_call_timeout,
          [this, server, answer](caf::expected<grove::mm::CloudPublished> r) {
            if (!ipc_ || ipc_generation_ != server)
              return;
            ipc_server::answer_data a;
            if (!r) {
              a.error = "ServiceError";
              a.message = cloud_error(r.error());
            }
            answer(std::move(a));
          });
      });
    });
    ipc_->on_iot_filters([this](std::set<std::string> filters) {
      ctx_->post([this, filters = std::move(filters)] { set_cloud_filters(filters, false); });
    });
    ipc_->on_control([this, server](ipc_server::control_call call,
                                    std::function<void(ipc_server::answer_data)> answer) {
      ctx_->post([this, server, call = std::move(call), answer = std::move(answer)] {
        if (!ipc_ || ipc_generation_ != server)
          return;
        ipc_server::answer_data a;
        if (!runner_) {
          a.error = "ResourceNotFoundError";
          a.message = "Component " + call.component + " not found";
        } else if (auto no = runner_->control(call.component, call.pause)) {
          a.error = no->shape;
          a.message = no->message;
        }
        ctx_->log().info("deployment: IPC: {} of {}: {}",
                         call.pause ? "PauseComponent" : "ResumeComponent", call.component,
                         a.error.empty() ? std::string{"done"} : a.error + ": " + a.message);
        answer(std::move(a));
      });
    });
    ipc_->on_state([this](const std::string& name, const std::string& state) {
      ctx_->post([this, name, state] {
        ctx_->log().info("deployment: {} reports {} (UpdateState)", name, state);
        if (runner_)
          runner_->report_state(name, state);
      });
    });
    // Connections taken over: their subscriptions made again now, in start(), so the
    // kernel keeps the bus subscriptions the last instance held (none is dropped between).
    if (auto n = ipc_->handed_connections(); n > 0) {
      set_bus_filters(ipc_->handed_filters());
      if (auto iot = ipc_->handed_iot_filters(); !iot.empty())
        set_cloud_filters(std::move(iot), true);
      ctx_->log().info("deployment: IPC: {} connection(s) taken over from the last instance",
                       n);
    }
    ipc_->serve();
  }

  // The components' SubscribeToTopic filters as the plugin's bus subscriptions. `$`
  // filters stay local: the bus's `$` topics are the kernel's and plugins' own.
  void set_bus_filters(const std::set<std::string>& all) {
    std::set<std::string> filters;
    for (auto& f : all)
      if (!f.starts_with("$"))
        filters.insert(f);
    for (const auto& f : bus_filters_)
      if (!filters.contains(f))
        (void) ctx_->unsubscribe(f);
    for (const auto& f : filters)
      if (!bus_filters_.contains(f))
        if (auto err = ctx_->subscribe(f))
          ctx_->log().warn("deployment: IPC: cannot subscribe to {} on the bus: {}", f,
                           grove::describe(err));
    bus_filters_ = std::move(filters);
  }

  // The components' SubscribeToIoTCore filters as the plugin's cloud filters.
  // `handed`: the last instance's connections' (taken over), whose filters
  // message_manager still holds for this plugin.
  void set_cloud_filters(std::set<std::string> filters, bool handed) {
    if (!cloud_filters_) {
      if (auto err = ctx_->subscribe(grove::message_manager::system_filter(ctx_->name())))
        ctx_->log().warn("deployment: IPC: cannot subscribe to the cloud's messages: {}",
                         grove::describe(err));
      // What a last instance left (message_manager keeps a client's filters) goes
      // first: the components subscribe again. Not when their connections were taken
      // over: their filters stay in force (set() below makes them the set).
      if (!handed)
        grove::message_manager::cloud_unsubscribe(
          *ctx_, {}, ipc_call_timeout, [](caf::expected<grove::mm::CloudSubscriptions>) {});
      cloud_filters_ = std::make_unique<grove::message_manager::cloud_filters>(
        *ctx_, [this](grove::message_manager::cloud_filters::state st, const caf::error& e) {
          if (st == grove::message_manager::cloud_filters::state::refused)
            ctx_->log().warn("deployment: IPC: SubscribeToIoTCore filters refused: {} "
                             "(retrying)", cloud_error(e));
        });
    }
    cloud_filters_->set(std::move(filters));
  }

  // A shadow plugin's Reply as Greengrass' IPC answers it: 200 the document, else
  // AWS's code as the IPC error shape, with the rejection's message.
  static ipc_server::answer_data shadow_reply(const grove::shadow::Reply& r) {
    ipc_server::answer_data a;
    if (r.code() == 200) {
      a.payload = r.payload();
      return a;
    }
    auto doc = nlohmann::json::parse(r.payload(), nullptr, false);
    a.message = doc.is_object() && doc.contains("message") && doc["message"].is_string()
                  ? doc["message"].get<std::string>()
                  : r.payload();
    switch (r.code()) {
      case 404:
        a.error = "ResourceNotFoundError";
        break;
      case 400:
      case 413:
        a.error = "InvalidArgumentsError";
        break;
      case 409:
        a.error = "ConflictError";
        break;
      case 401:
      case 403:
        a.error = "UnauthorizedError";
        break;
      default:
        a.error = "ServiceError";
    }
    return a;
  }

  // message_manager's refusal of a cloud call, as a component's error message says it.
  static std::string cloud_error(const caf::error& err) {
    if (err == grove::errc::no_route)
      return "no cloud link: message_manager is not in this core's image";
    if (err == grove::errc::not_authorized)
      return "no cloud link for components: message_manager's cloud.system_clients does not "
             "list deployment";
    return "the cloud link: " + grove::describe(err);
  }

  // An error of the bus on a shadow call: a name outside the rules is the caller's
  // (InvalidArgumentsError); no shadow plugin, a timeout and the rest are ServiceError.
  static ipc_server::answer_data shadow_bus_error(const caf::error& err) {
    ipc_server::answer_data a;
    if (err == grove::errc::no_route) {
      a.error = "ServiceError";
      a.message = "no shadow service: the shadow plugin is not in this core's image";
    } else if (err == grove::errc::invalid_topic || err == grove::errc::malformed) {
      a.error = "InvalidArgumentsError";
      a.message = grove::describe(err);
    } else {
      a.error = "ServiceError";
      a.message = "the shadow service: " + grove::describe(err);
    }
    return a;
  }

  // The running set's effective configurations, for GetConfiguration and the tokens.
  void sync_ipc() {
    if (!ipc_ || !runner_)
      return;
    std::map<std::string, nlohmann::json> configs;
    for (const auto& r : runner_->snapshot())
      configs[r.plan.name] = r.plan.configuration;
    ipc_->set_components(std::move(configs));
  }

  // Before a deployment changes the running set: each component whose configuration
  // changes and that subscribed to validation is asked (a REJECTED report fails the
  // deployment), then, with NOTIFY_COMPONENTS, the subscribed components hear of the
  // update and may defer it. `then` runs on the actor.
  void ipc_gate(const std::string& id, const std::vector<component_plan>& plan, bool notify,
                std::chrono::seconds timeout, std::chrono::seconds validation_timeout,
                std::function<void(std::optional<std::string>)> then) {
    if (!ipc_ || !runner_)
      return then(std::nullopt);
    std::map<std::string, nlohmann::json> running, changed;
    for (const auto& r : runner_->snapshot())
      running[r.plan.name] = r.plan.configuration;
    for (const auto& c : plan)
      if (auto it = running.find(c.name); it != running.end() && it->second != c.configuration)
        changed[c.name] = c.configuration;
    auto shared = std::make_shared<std::function<void(std::optional<std::string>)>>(
      std::move(then));
    auto on_actor = [this, shared](std::optional<std::string> r) {
      ctx_->post([shared, r = std::move(r)] { (*shared)(r); });
    };
    ipc_->validate(id, std::move(changed), validation_timeout,
                   [this, id, notify, timeout, on_actor](std::optional<std::string> rejected) {
      if (rejected)
        return on_actor("Components reported that their to-be-deployed configurations are "
                        "invalid: " + *rejected);
      if (!notify)
        return on_actor(std::nullopt);
      // Still on the IPC thread: pre_update only queues its round there.
      ipc_->pre_update(id, timeout, [this, id, on_actor](std::vector<std::string> deferred) {
        if (!deferred.empty())
          ctx_->post([this, id, n = deferred.size()] {
            ctx_->log().info("deployment: {}: applied after {} deferral(s)", id, n);
          });
        on_actor(std::nullopt);
      });
    });
  }

  struct prepared {
    std::string target; // the deployment's targetArn
    std::vector<component_plan> plan;
    bool rollback = true;
    std::chrono::seconds timeout{60};
    std::optional<std::string> resumed; // the rollback journal a run cut short left
    bool notify = true; // componentUpdatePolicy.action NOTIFY_COMPONENTS
    std::chrono::seconds validation_timeout{30}; // configurationValidationPolicy
  };

  // A deployment's rollback journal (apply_journal): the set before it, as the installed
  // table keeps plans, and its group changes.
  static std::string rollback_text(const std::vector<component_plan>& previous,
                                   const group_changes& changes, bool rollback) {
    auto set = nlohmann::json::array();
    for (const auto& p : previous) {
      auto row = row_of(installed_record{p, "", "", 0, p.foreign, "", ""});
      set.push_back({{"name", row.name}, {"version", row.version},
                     {"plan", nlohmann::json::parse(row.plan)}});
    }
    // `rollback`: the policy, for a change left undecided that the next start decides.
    return nlohmann::json{{"previous", std::move(set)},
                          {"group", changes.to_json()},
                          {"rollback", rollback}}
      .dump();
  }

  static caf::expected<std::pair<std::vector<component_plan>, group_changes>>
  rollback_of(const std::string& text, std::string* dropped) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object() || !j.contains("previous") || !j["previous"].is_array())
      return grove::make_error(grove::errc::malformed, "the rollback journal is no object "
                                                       "with `previous`");
    std::vector<component_plan> previous;
    for (const auto& c : j["previous"]) {
      if (!c.is_object() || !c.value("name", nlohmann::json{}).is_string()
          || !c.value("version", nlohmann::json{}).is_string())
        return grove::make_error(grove::errc::malformed, "the rollback journal's set is "
                                                         "malformed");
      auto rec = record_of(installed_row{c["name"], c["version"], "", "", 0,
                                         c.value("plan", nlohmann::json{}).dump()});
      rec.plan.foreign = rec.foreign; // the rollback leaves such a function alone
      previous.push_back(std::move(rec.plan));
    }
    auto changes = group_changes::from_json(j.value("group", nlohmann::json::object()),
                                            dropped);
    if (!changes)
      return std::move(changes.error());

    return std::pair{std::move(previous), std::move(*changes)};
  }

  // Traversal for others (x without r) on `dir`, when groved owns it: a user may pass
  // through it to what it names, but not list it (README, "Reaching its own files as
  // another user").
  static void traversable(const std::filesystem::path& dir) {
    struct stat st{};
    if (::stat(dir.c_str(), &st) == 0 && st.st_uid == ::geteuid() && !(st.st_mode & S_IXOTH))
      ::chmod(dir.c_str(), (st.st_mode & 07777) | S_IXOTH);
  }

  // `dir` owned by groved's user and group `gid` with `mode`.
  static void give_dir(const std::filesystem::path& dir, gid_t gid, mode_t mode) {
    (void) ::chown(dir.c_str(), ::geteuid(), gid);
    ::chmod(dir.c_str(), mode);
  }

  // On the pool: the plans of a resolved set (recipes, merged configurations, runWith,
  // artifacts linked under the component's directory) and the deployment's policies.
  static caf::expected<prepared> prepare(component_store& db, artifact_store& arts,
                                         std::filesystem::path root, std::string id,
                                         nlohmann::json resolved, int64_t now,
                                         resource_limits default_limits,
                                         std::string default_user) {
    using nlohmann::json;
    auto d = db.deployment(id);
    if (!d)
      return std::move(d.error());
    if (!*d)
      return grove::make_error(grove::errc::invalid_state, "deployment " + id + " is gone");
    auto all = db.deployments();
    if (!all)
      return std::move(all.error());
    // What each target keeps (a target whose newest deployment failed or never ran keeps
    // its last applied one).
    auto effective = effective_by_target(*all);
    // Replaced meanwhile (a newer deployment to its target made it INACTIVE, or it was
    // canceled) before its turn came: the newer one applies the whole set. Also what
    // keeps a start's re-apply of the current deployment from running after a newer one
    // created while the start decided what earlier runs left undecided. A start applies
    // again one its target falls back to (INACTIVE, SUCCEEDED): the target's own still.
    if (auto e = effective.find((*d)->target_arn); e == effective.end() || e->second->id != id)
      return grove::make_error(grove::errc::invalid_state,
                               "deployment " + id + " is " + (*d)->status
                                 + " (replaced or canceled before its turn): not applied");
    auto req = json::parse((*d)->request, nullptr, false);
    prepared out;
    out.target = (*d)->target_arn;
    auto policies = req.value("deploymentPolicies", json::object());
    out.rollback = policies.value("failureHandlingPolicy", "ROLLBACK") == "ROLLBACK";
    out.timeout = std::chrono::seconds{
      policies.value("componentUpdatePolicy", json::object()).value("timeoutInSeconds", 60)};
    out.notify = policies.value("componentUpdatePolicy", json::object())
                   .value("action", "NOTIFY_COMPONENTS") == "NOTIFY_COMPONENTS";
    out.validation_timeout = std::chrono::seconds{
      policies.value("configurationValidationPolicy", json::object())
        .value("timeoutInSeconds", 30)};
    // Every target's kept deployment's component specifications (the newest target's win).
    std::map<std::string, json> specs;
    std::set<std::string> own; // the components this deployment names
    for (auto it = all->rbegin(); it != all->rend(); ++it)
      if (auto e = effective.find(it->target_arn); e != effective.end() && e->second == &*it) {
        auto r = json::parse(it->request, nullptr, false);
        if (r.is_object() && r.contains("components"))
          for (auto c = r["components"].begin(); c != r["components"].end(); ++c) {
            specs[c.key()] = *c;
            if (it->id == id)
              own.insert(c.key());
          }
      }
    // A run that kill -9 cut short journaled what its rollback undoes (only an ACTIVE
    // deployment has such a row: a COMPLETED one applied again at start has none).
    if ((*d)->status == "ACTIVE") {
      auto journaled = db.rollback_of(id);
      if (!journaled)
        return std::move(journaled.error());
      out.resumed = std::move(*journaled);
    }
    std::vector<component_plan> plans;
    for (const auto& v : resolved.value("resolvedComponentVersions", json::array())) {
      component_plan p;
      p.name = v["componentName"];
      p.version = v["componentVersion"];
      std::string text;
      base64_decode(v["recipe"].get<std::string>(), text);
      p.recipe = json::parse(text, nullptr, false);
      auto spec = specs.find(p.name);
      p.root = spec != specs.end();
      json defaults = json::object();
      if (auto cc = p.recipe.find("ComponentConfiguration"); cc != p.recipe.end() && cc->is_object())
        defaults = cc->value("DefaultConfiguration", json::object());
      // Cumulative (the runner computes it on what the component has on this core):
      // this deployment's update for its own components; another target's for one new
      // here; none for a dependency.
      p.cumulative = true;
      p.defaults = defaults;
      p.update = p.root ? spec->second.value("configurationUpdate", json{}) : json{};
      p.update_if_new = p.root && !own.count(p.name);
      p.configuration = merged_configuration(defaults, nullptr, p.update);
      // runWith: a named component's own; each systemResourceLimits value it leaves out
      // (and every one of a dependency) is the plugin's default (Greengrass' runWithDefault).
      p.limits = default_limits;
      // runWith.posixUser, else the plugin's default_posix_user (Greengrass'
      // runWithDefault.posixUser, for dependencies too).
      p.posix_user = default_user;
      if (p.root) {
        auto run_with = spec->second.value("runWith", json::object());
        if (auto u = run_with.value("posixUser", std::string{}); !u.empty())
          p.posix_user = u;
        if (auto l = run_with.find("systemResourceLimits"); l != run_with.end() && l->is_object())
          p.limits = {l->value("memory", default_limits.memory_kb),
                      l->value("cpus", default_limits.cpus)};
      }
      // Artifacts: links named as the Uri's file, to the content-addressed store.
      auto dir = root / "packages" / "artifacts" / p.name / p.version;
      auto unz = root / "packages" / "artifacts-unarchived" / p.name / p.version;
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      std::filesystem::create_directories(unz, ec);
      // The user its steps run as (spawn(): runWith applies as root only), and whether it
      // is another than groved's: then {artifacts:path} is made reachable by it alone.
      auto ids = posix_ids(::geteuid() == 0 ? p.posix_user : std::string{});
      if (!ids)
        return std::move(ids.error());
      bool other_user = ids->first != ::geteuid();
      // Its version's directories ({artifacts:path}, {artifacts:decompressedPath}) and the
      // ones above: readable by its user's group alone (or groved's only), whatever an
      // earlier deployment of it with another user left.
      for (const auto& d : {dir.parent_path(), dir, unz.parent_path(), unz})
        give_dir(d, other_user ? ids->second : ::getegid(), other_user ? 0750 : 0700);
      if (other_user) {
        // Traversal only, down to it, to its work directory (the user's own, 0700: spawn)
        // and to the per-mode copies its links name: the write
        // directory and the plugin's directories stay unlistable, and what they hold
        // stays groved's (made under umask 077: 0700 directories, 0600 files).
        auto state = root.parent_path();
        for (const auto& d : {state.parent_path().parent_path(), state.parent_path(), state,
                              root, root / "work", root / "packages",
                              root / "packages" / "artifacts",
                              root / "packages" / "artifacts-unarchived",
                              arts.root(), arts.root() / "modes"})
          traversable(d);
      }
      if (auto st = db.artifacts_of(p.name, p.version); st && *st) {
        auto map = json::parse((*st)->artifacts, nullptr, false);
        // Only the artifacts of the manifest that runs here (the one its life cycle
        // comes from): another platform's files of the same name must not take its place.
        // With the recipe's Permission: a copy with that mode the user cannot write.
        std::map<std::string, int> modes;
        for (const auto& r : fetchable_artifacts(p.recipe, core_platform()))
          modes[r.uri] = r.mode;
        if (map.is_object())
          for (auto a = map.begin(); a != map.end(); ++a) {
            if (!modes.count(a.key()))
              continue;
            auto file = std::filesystem::path{a.key()}.filename();
            auto target = arts.path_of(a->get<std::string>());
            // Another user's component gets a copy for every artifact, the ones without
            // Permission with Greengrass' default (Read OWNER): the stored files stay in
            // groved's private sha256/.
            auto m = modes.find(a.key());
            int mode = m != modes.end() && m->second >= 0 ? m->second : other_user ? 0400 : -1;
            if (mode >= 0) {
              auto t = arts.with_mode(a->get<std::string>(), mode, ids->second);
              if (!t)
                return std::move(t.error());
              target = *t;
              // Its directory (one per mode, owner and group): entered by that group only,
              // by everyone when the mode gives ALL something.
              if (other_user)
                give_dir(t->parent_path(), ids->second, (mode & 0055) ? 0711 : 0710);
            }
            std::filesystem::remove(dir / file, ec);
            std::filesystem::create_symlink(target, dir / file, ec);
            if (std::filesystem::exists(arts.unarchived_of(a->get<std::string>()))) {
              // Another user's component gets a copy of the tree its group reads (and runs
              // where the archive said so); the unpacked store stays groved's alone.
              auto tree = arts.unarchived_of(a->get<std::string>());
              if (other_user) {
                auto t = arts.unarchived_with_group(a->get<std::string>(), ids->second);
                if (!t)
                  return std::move(t.error());
                tree = *t;
                give_dir(t->parent_path(), ids->second, 0710);
              }
              std::filesystem::remove(unz / file.stem(), ec);
              std::filesystem::create_directory_symlink(tree, unz / file.stem(), ec);
            }
          }
      }
      p.artifacts_path = dir.string();
      p.decompressed_path = unz.string();
      plans.push_back(std::move(p));
    }
    // Dependencies first (the resolver's answer lists the roots first).
    std::vector<bool> placed(plans.size(), false);
    while (out.plan.size() < plans.size()) {
      bool moved = false;
      for (size_t i = 0; i < plans.size(); ++i) {
        if (placed[i])
          continue;
        bool ready = true;
        auto deps = plans[i].recipe.value("ComponentDependencies", json::object());
        for (size_t k = 0; k < plans.size(); ++k)
          if (!placed[k] && k != i && deps.is_object() && deps.contains(plans[k].name))
            ready = false;
        if (ready) {
          placed[i] = true;
          out.plan.push_back(plans[i]);
          moved = true;
        }
      }
      if (!moved) // a cycle (the resolver refuses them): the rest as listed
        for (size_t i = 0; i < plans.size(); ++i)
          if (!placed[i]) {
            placed[i] = true;
            out.plan.push_back(plans[i]);
          }
    }
    // Its run begins here (started_ms): refused before, it changed nothing on the core.
    // Canceled or replaced while it was prepared, it does not run at all.
    if ((*d)->status == "ACTIVE") {
      auto started = db.start_deployment(id, now);
      if (!started)
        return std::move(started.error());
      if (!*started)
        return grove::make_error(grove::errc::invalid_state,
                                 "deployment " + id + " was canceled or replaced while it was "
                                                      "prepared: not applied");
    }
    return out;
  }

  // On the actor: applies deployment `id` whose whole set resolved to `resolved`.
  void apply_deployment(const std::string& id, const nlohmann::json& resolved) {
    ctx_->run_blocking(
      [db = store_, arts = artifacts_, root = ctx_->state_dir() / "components", id,
       resolved, limits = default_limits_, user = runner_settings_.default_posix_user]() {
        return prepare(*db, *arts, root, id, resolved, now_ms(), limits, user);
      },
      [this, id](caf::expected<caf::expected<prepared>> outer) {
        auto p = outer ? std::move(*outer) : caf::expected<prepared>{outer.error()};
        if (!p) {
          ctx_->log().error("deployment: {} cannot be applied: {}", id, grove::describe(p.error()));
          // Not run here: a run of it that a kill -9 cut short (canceled since, during
          // this start) keeps its journal row for the next start to decide.
          settle_deployment(id, false, clip_reason("preparation: " + grove::describe(p.error())),
                            {"ACTIVE"}, false, false);
          return;
        }
        ctx_->log().info("deployment: applying {} ({} components)", id, p->plan.size());
        // A newer deployment to the same target replaces the one the runner still applies
        // (or that waits for its turn), as Greengrass cancels the job a newer revision
        // supersedes: interrupted at its next safe point, so this one proceeds.
        // Picked first: interrupting one still waiting for its turn ends it at once, and its
        // outcome erases it from in_runner_.
        std::vector<std::string> replaced;
        for (const auto& [other, target] : in_runner_)
          if (other != id && target == p->target)
            replaced.push_back(other);
        for (const auto& other : replaced) {
          auto why = "replaced by deployment " + id + " to its target";
          if (in_gate_.contains(other)) // still at Greengrass IPC's gate: never runs
            gate_interrupted_[other] = std::move(why);
          else
            runner_->interrupt(other, why);
        }
        in_runner_[id] = p->target;
        auto outcome = [this, id](apply_outcome o) {
          in_runner_.erase(id);
          if (o.interrupted) { // replaced: CANCELED, where it stopped in its reason
            settle_interrupted(id, clip_reason(o.reason), o.undecided);
            return;
          }
          // The rollback's note whole at the end, within the reason's limit (reason.hpp).
          auto reason =
            clip_reason(o.ok ? o.notes : o.reason, o.rolled_back ? rollback_note : std::string_view{});
          settle_deployment(id, o.ok, reason, {"ACTIVE"}, o.undecided);
        };
        // What its rollback needs, journaled before each step moves on (kill -9).
        apply_journal journal;
        journal.write = [this, id, rollback = p->rollback](
                          const std::vector<component_plan>& previous,
                          const group_changes& changes, std::function<void(caf::error)> then) {
          ctx_->run_blocking(
            [db = store_, id, text = rollback_text(previous, changes, rollback)] {
              auto err = db->put_rollback(id, text);
              return err ? grove::message_of(err) : std::string{}; // made an error again below
            },
            [this, id, then = std::move(then), alive = alive_](caf::expected<std::string> r) {
              if (!*alive)
                return;
              auto why = r ? std::move(*r) : grove::describe(r.error());
              if (why.empty()) {
                then({});
                return;
              }
              ctx_->log().error("deployment: {}: what its rollback undoes could not be "
                                "journaled: {}", id, why);
              then(grove::make_error(grove::errc::system_error, why));
            });
        };
        if (p->resumed) {
          std::string dropped;
          auto back = rollback_of(*p->resumed, &dropped);
          if (!dropped.empty()) // only that change: the others still matter to a rollback
            ctx_->log().error("deployment: {}: {}, so it alone is left out of the resume "
                              "(a rollback does not undo it)", id, dropped);
          if (back)
            journal.resumed = std::move(*back);
          else
            ctx_->log().error("deployment: {}: its rollback journal is unreadable ({}): a "
                              "rollback undoes only this run's changes",
                              id, grove::describe(back.error()));
        }
        // A run that goes BROKEN within the timeout fails the deployment late (it may be
        // COMPLETED by then: every component had started). Greengrass IPC's gate first.
        gated_apply(
          id, std::move(*p), outcome,
          [this, id](apply_outcome o) {
            auto reason =
              clip_reason(o.reason, o.rolled_back ? rollback_note : std::string_view{});
            settle_deployment(id, false, reason, {"ACTIVE", "COMPLETED"}, o.undecided, true,
                              true);
          },
          std::move(journal), id);
      });
  }

  // Runs deployment `id`'s plan (runner::apply) once Greengrass IPC's gate (ipc_gate)
  // let it through: a REJECTED configuration fails it instead. One gate at a time, so the
  // runner gets the applies in the order they came.
  void gated_apply(const std::string& id, prepared p, std::function<void(apply_outcome)> outcome,
                   std::function<void(apply_outcome)> late, apply_journal journal,
                   std::string tag) {
    auto held = std::make_shared<prepared>(std::move(p));
    in_gate_.insert(id);
    auto then = std::make_shared<std::function<void(std::optional<std::string>)>>(
      [this, id, held, outcome = std::move(outcome), late = std::move(late),
       journal = std::make_shared<apply_journal>(std::move(journal)),
       tag = std::move(tag)](std::optional<std::string> rejected) {
        gate_busy_ = false;
        in_gate_.erase(id);
        if (auto it = gate_interrupted_.find(id); it != gate_interrupted_.end()) {
          auto why = std::move(it->second) + ", before its turn came";
          gate_interrupted_.erase(it);
          outcome(apply_outcome{false, std::move(why), false, false, true, {}});
          return next_gate();
        }
        if (rejected) {
          settle_deployment(id, false, clip_reason(*rejected), {"ACTIVE"}, false, false);
          return next_gate();
        }
        auto done = [this, id, outcome, notify = held->notify](apply_outcome o) {
          if (notify && ipc_)
            ipc_->post_update(id);
          outcome(std::move(o));
        };
        runner_->apply(std::move(held->plan), held->rollback, held->timeout, done, late,
                       std::move(*journal), tag);
        next_gate();
      });
    gates_.push_back([this, id, held, then] {
      if (gate_interrupted_.contains(id)) // replaced while it waited: nobody is asked
        return (*then)(std::nullopt);
      ipc_gate(id, held->plan, held->notify, held->timeout, held->validation_timeout, *then);
    });
    next_gate();
  }

  void next_gate() {
    if (gate_busy_ || gates_.empty())
      return;
    gate_busy_ = true;
    auto f = std::move(gates_.front());
    gates_.pop_front();
    f();
  }

  // Deployment `id`, replaced while the runner applied it (or before its turn), was
  // interrupted (runner::interrupt): its execution CANCELED with `reason`; its rollback
  // journal goes, but for a change of the group left `undecided`. One CANCELED
  // (CancelDeployment) before the newer one came ends as a canceled run that failed.
  void settle_interrupted(const std::string& id, const std::string& reason, bool undecided) {
    ctx_->log().warn("deployment: {} ended: {}", id, reason);
    ctx_->run_blocking(
      [db = store_, id, reason, undecided] {
        auto replaced = db->end_replaced_run(id, false, false, reason, now_ms(), undecided);
        if (replaced && !*replaced) {
          db->end_canceled_run(id, undecided);
          db->end_canceled_run_as(id, false, now_ms());
        }
      },
      [](caf::error) {});
  }

  // Records how deployment `id` ended on this core (unless it was canceled meanwhile).
  // `undecided`: its rollback journal holds a change of the group not decided yet, kept
  // for the next start (resume) to decide.
  // `ran`: false when nothing of it ran in this instance (its preparation was refused),
  // so a canceled one's journal row, from a run a kill -9 cut short, is kept.
  // `late`: a run it started went BROKEN after it ended (runner::apply's `late`): one
  // replaced since, whose run SUCCEEDED, is recorded FAILED with `reason` all the same.
  void settle_deployment(const std::string& id, bool ok, const std::string& reason,
                         std::vector<std::string> from = {"ACTIVE"}, bool undecided = false,
                         bool ran = true, bool late = false) {
    if (ok)
      ctx_->log().info("deployment: {} applied", id);
    else
      ctx_->log().error("deployment: {} failed: {}", id, reason);
    ctx_->run_blocking(
      [db = store_, id, ok, reason, from, undecided, ran, late] {
        // Settled: its rollback journal goes in the same transaction (unless undecided).
        auto set = db->set_deployment_state(id, from, ok ? "COMPLETED" : "FAILED",
                                            ok ? "SUCCEEDED" : "FAILED", reason, now_ms(),
                                            undecided);
        // Canceled while it applied: its run ended here, and with it its journal row
        // (but for a change left undecided, marked ended for the next start). Its
        // outcome is the core's: a run that completed is what its target keeps.
        if (set && !*set && ran) {
          db->end_canceled_run(id, undecided);
          db->end_canceled_run_as(id, ok, now_ms());
        }
        // Replaced (INACTIVE) by a newer deployment to its target: while it ran, its
        // execution is its run's outcome; before its run began (its preparation found it
        // replaced), CANCELED. Not IN_PROGRESS or QUEUED forever.
        if (set && !*set)
          db->end_replaced_run(
            id, ran, ok,
            !ran ? std::string{"replaced by a newer deployment to its target before its run "
                               "began or resumed"}
                 : append_note(reason, ok ? "replaced by a newer deployment to its target while "
                                            "it applied: its run completed"
                                          : "replaced by a newer deployment to its target while "
                                            "it applied"),
            now_ms(), undecided);
        if (set && !*set && late)
          db->fail_replaced_run(id, reason, now_ms());
      },
      [](caf::error) {});
  }

  // On the actor: fetches a version's artifacts on the blocking pool, once at a time.
  void fetch(const std::string& name, const std::string& version) {
    auto key = name + ":" + version;
    if (!fetching_.insert(key).second)
      return;
    ctx_->log().info("deployment: fetching the artifacts of {} {}", name, version);
    {
      std::lock_guard guard{fetches_->mtx};
      ++fetches_->running;
    }
    ctx_->run_blocking(
      [t = fetches_, db = store_, arts = artifacts_, s = fetch_, name, version]() mutable {
        auto err = settle_version(*db, *arts, s, name, version);
        std::string outcome;
        if (err) {
          outcome = "error: " + grove::describe(err);
        } else {
          auto v = db->get(name, version);
          outcome = (v && *v) ? (*v)->state + " (" + (*v)->message + ")" : std::string{"gone"};
        }
        // The store is let go before stop() hears this fetch is over.
        db.reset();
        arts.reset();
        std::lock_guard guard{t->mtx};
        if (--t->running == 0)
          t->cv.notify_all();
        return outcome;
      },
      [this, key](caf::expected<std::string> outcome) {
        fetching_.erase(key);
        if (outcome)
          ctx_->log().info("deployment: {}: {}", key, *outcome);
        else
          ctx_->log().error("deployment: {}: {}", key, grove::describe(outcome.error()));
      });
  }

  void serve(const httplib::Request& in, httplib::Response& out) {
    http_request req;
    req.method = in.method;
    req.target = in.target;
    for (const auto& [k, v] : in.headers) {
      std::string name = k;
      for (auto& ch : name)
        ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      req.headers.emplace_back(std::move(name), v);
    }
    req.body = in.body;
    http_response res;
    try {
      res = api_->handle(req, std::chrono::system_clock::now());
    } catch (const std::exception& e) {
      res = aws_error(500, "InternalServerException", std::string{"internal error: "} + e.what());
    }
    requests_.inc();
    if (res.status >= 400)
      refused_.inc();
    out.status = res.status;
    for (auto& [k, v] : res.headers)
      out.set_header(k, v);
    out.set_header("x-amzn-RequestId", request_id());
    if (!res.file.empty()) {
      // An artifact: streamed from its file, never whole in memory.
      int fd = ::open(res.file.c_str(), O_RDONLY | O_CLOEXEC);
      struct stat st{};
      if (fd < 0 || ::fstat(fd, &st) != 0) {
        if (fd >= 0)
          ::close(fd);
        out.status = 500;
        out.set_content("{\"message\":\"cannot read the artifact\"}", "application/json");
        return;
      }
      out.set_content_provider(
        static_cast<size_t>(st.st_size), res.content_type,
        [fd](size_t offset, size_t length, httplib::DataSink& sink) {
          char buf[65536];
          auto n = ::pread(fd, buf, std::min(length, sizeof buf), static_cast<off_t>(offset));
          if (n <= 0)
            return false;
          return sink.write(buf, static_cast<size_t>(n));
        },
        [fd](bool) { ::close(fd); });
      return;
    }
    if (res.status != 204)
      out.set_content(res.body, res.content_type.c_str());
  }

  static int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
  }

  std::string request_id() {
    auto n = next_id_.fetch_add(1);
    char buf[40];
    std::snprintf(buf, sizeof buf, "grove-%016llx", static_cast<unsigned long long>(n));
    return buf;
  }

  grove::context* ctx_ = nullptr;
  std::string thing_name_;
  resource_limits default_limits_; // default_system_resource_limits
  runner_settings runner_settings_; // broken_error_window, allow_privileged_components, ...
  std::unique_ptr<ipc_server> ipc_; // Greengrass IPC; outlives the runner
  uint64_t ipc_generation_ = 0;     // which ipc_ a shadow call's answer is for
  nlohmann::json ipc_handed_;       // restore(): the last instance's IPC (ipc_server::detach)
  // How long an IPC operation waits for the shadow plugin or message_manager.
  static constexpr std::chrono::seconds ipc_call_timeout{10};
  std::set<std::string> bus_filters_; // components' SubscribeToTopic filters on the bus
  // Components' SubscribeToIoTCore filters, kept with message_manager (mm-7, mm-8).
  std::unique_ptr<grove::message_manager::cloud_filters> cloud_filters_;
  std::deque<std::function<void()>> gates_; // deployments waiting for their IPC gate
  bool gate_busy_ = false;
  std::set<std::string> in_gate_; // deployments between gated_apply and the runner
  std::map<std::string, std::string> gate_interrupted_; // of those, replaced: id → why
  std::mutex runner_mtx_;          // the server's threads read installed()
  std::unique_ptr<runner> runner_; // the components of this core's deployments
  std::vector<handed_component> handed_; // restore(): what the last instance handed over
  std::map<std::string, std::string> in_runner_; // deployments the runner has: id → target
  std::shared_ptr<artifact_store> artifacts_; // shared with fetches in flight
  fetch_settings fetch_;
  std::set<std::string> fetching_; // name:version, on the actor
  // Fetches running on the pool, which stop() waits for (shared: a fetch that outlives
  // the wait still counts down safely).
  struct fetch_count {
    std::mutex mtx;
    std::condition_variable cv;
    size_t running = 0;
  };
  std::shared_ptr<fetch_count> fetches_ = std::make_shared<fetch_count>();
  std::shared_ptr<component_store> store_; // shared with operator calls in flight
  std::shared_ptr<api> api_;
  std::shared_ptr<v1_store> groups_; // Greengrass v1's groups (shared like store_)
  std::shared_ptr<v1_api> v1_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::mutex bulk_mtx_;     // StartBulkDeployment's server thread and stop()
  std::thread bulk_thread_; // the bulk deployment running, if any
  std::unique_ptr<address_watcher> ip_watcher_; // with ip_detector.enabled
  std::unique_ptr<discovery_server> discovery_; // null unless discovery.enabled
  grove::process dns_sd_;                       // avahi-publish, with discovery.dns_sd
  std::optional<uint64_t> discovery_version_;   // the group version discovery answers for
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true); // false once stopped
  struct journal_state {
    bool busy = false;  // a write of the installed set in flight
    bool dirty = false; // changed since it was taken
  };
  std::shared_ptr<journal_state> journal_ = std::make_shared<journal_state>();
  grove::counter requests_;
  grove::counter refused_;
  std::atomic<uint64_t> next_id_{1};
};

} // namespace

} // namespace grove::deployment

GROVE_TYPED_PLUGIN(grove::deployment::deployment_plugin, "deployment", "0.1.0")
