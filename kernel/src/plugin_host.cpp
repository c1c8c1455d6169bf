#include "grove/kernel/plugin_host.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <map>

#include <caf/scoped_actor.hpp>
#include <caf/sec.hpp>
#include <google/protobuf/stubs/common.h>
#include <spdlog/spdlog.h>

#include "isolated_slot.hpp"
#include "slot.hpp"

namespace grove {

// -- plugin_library -------------------------------------------------------------

plugin_library::~plugin_library() {
  if (handle != nullptr)
    dlclose(handle);
}

namespace {

// Splits "k1=v1;k2=v2;" (the ABI manifest) or "a 1, b 2" (build info) into pairs.
std::map<std::string, std::string> split_pairs(std::string_view text, char sep,
                                               char kv) {
  std::map<std::string, std::string> out;
  while (!text.empty()) {
    auto end = text.find(sep);
    auto item = text.substr(0, end);
    while (!item.empty() && item.front() == ' ')
      item.remove_prefix(1);
    if (auto at = item.find(kv); at != std::string_view::npos)
      out.emplace(std::string{item.substr(0, at)}, std::string{item.substr(at + 1)});
    else if (!item.empty())
      out.emplace(std::string{item}, std::string{});
    if (end == std::string_view::npos)
      break;
    text.remove_prefix(end + 1);
  }
  return out;
}

// Lists the keys whose values differ between what the plugin and the kernel report,
// as "key plugin-value (kernel: kernel-value)".
std::string differences(const std::map<std::string, std::string>& plugin,
                        const std::map<std::string, std::string>& kernel) {
  std::string out;
  auto add = [&](const std::string& key, const std::string& theirs,
                 const std::string& ours) {
    if (!out.empty())
      out += ", ";
    out += key + " " + (theirs.empty() ? "absent" : theirs)
           + " (kernel: " + (ours.empty() ? "absent" : ours) + ")";
  };
  for (auto& [key, ours] : kernel) {
    auto i = plugin.find(key);
    auto theirs = i == plugin.end() ? std::string{} : i->second;
    if (theirs != ours)
      add(key, theirs, ours);
  }
  for (auto& [key, theirs] : plugin)
    if (!kernel.contains(key))
      add(key, theirs, {});
  return out;
}

} // namespace

const char* kernel_build_info() noexcept {
  return GROVE_BUILD_INFO;
}

std::string check_build(const grove_plugin_descriptor& desc) {
  if (desc.abi_hash == nullptr || desc.abi_manifest == nullptr
      || desc.build_info == nullptr)
    return "descriptor has no ABI hash or build information (built with an older SDK "
           "or without GROVE_PLUGIN)";
  if (std::string_view{desc.abi_hash} != GROVE_PLUGIN_ABI_HASH) {
    auto diff = differences(split_pairs(desc.abi_manifest, ';', '='),
                            split_pairs(GROVE_PLUGIN_ABI_MANIFEST, ';', '='));
    return std::string{"built against other SDK headers (ABI hash "} + desc.abi_hash
           + ", kernel " + GROVE_PLUGIN_ABI_HASH + "); differing: "
           + (diff.empty() ? "unknown" : diff);
  }
  // "yaml-cpp 0.7.0": the last word is the version, the rest names the component; the
  // compiler's family ("gcc"/"clang") is part of what must match, so it is the value.
  auto parse = [](std::string_view info) {
    std::map<std::string, std::string> out;
    for (auto& [item, _] : split_pairs(info, ',', '\0')) {
      auto sp = item.rfind(' ');
      auto key = sp == std::string::npos ? item : item.substr(0, sp);
      auto value = sp == std::string::npos ? std::string{} : item.substr(sp + 1);
      if (key == "gcc" || key == "clang") {
        value = key + " " + value;
        key = "compiler";
      }
      out[key] = value;
    }
    return out;
  };
  if (auto diff = differences(parse(desc.build_info), parse(GROVE_BUILD_INFO));
      !diff.empty())
    return "built with other libraries: " + diff;
  return {};
}

caf::expected<plugin_library_ptr>
open_plugin_library(const std::filesystem::path& path, std::string_view expected_name,
                    const std::filesystem::path& private_copy) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return make_error(errc::load_failed, path.string() + ": no such file");
  auto load_path = path;
  if (!private_copy.empty()) {
    std::filesystem::create_directories(private_copy.parent_path(), ec);
    std::filesystem::copy_file(path, private_copy,
                               std::filesystem::copy_options::overwrite_existing, ec);
    if (ec)
      return make_error(errc::load_failed, "cannot copy " + path.string() + " to "
                                             + private_copy.string() + ": "
                                             + ec.message());
    load_path = private_copy;
  }
  // RTLD_LOCAL keeps each plugin's symbols to itself; RTLD_NOW surfaces missing
  // symbols here instead of at some later call.
  auto handle = dlopen(load_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!private_copy.empty())
    std::filesystem::remove(private_copy, ec); // the mapping stays valid
  if (handle == nullptr) {
    auto msg = dlerror();
    return make_error(errc::load_failed,
                      path.string() + ": " + (msg ? msg : "dlopen failed"));
  }
  auto lib = std::make_shared<plugin_library>();
  lib->path = path;
  lib->handle = handle;
  auto sym = dlsym(handle, plugin_entry_symbol);
  if (sym == nullptr)
    return make_error(errc::load_failed, path.string() + ": missing entry symbol "
                                           + plugin_entry_symbol);
  const grove_plugin_descriptor* desc = nullptr;
  try {
    desc = reinterpret_cast<grove_plugin_entry_fn>(sym)();
  } catch (...) {
    return make_error(errc::load_failed, path.string() + ": entry symbol threw");
  }
  if (desc == nullptr)
    return make_error(errc::load_failed, path.string() + ": entry symbol returned null");
  // Read only the first field until we know how large the plugin's struct is.
  if (desc->struct_size < offsetof(grove_plugin_descriptor, reserved))
    return make_error(errc::abi_mismatch, path.string() + ": descriptor too small ("
                                            + std::to_string(desc->struct_size)
                                            + " bytes)");
  if (desc->abi_version != GROVE_PLUGIN_ABI_VERSION)
    return make_error(errc::abi_mismatch,
                      path.string() + ": built for plugin ABI "
                        + std::to_string(desc->abi_version) + ", kernel speaks "
                        + std::to_string(GROVE_PLUGIN_ABI_VERSION));
  if (auto err = check_build(*desc); !err.empty())
    return make_error(errc::abi_mismatch, path.string() + ": " + err);
  if (desc->caf_version != CAF_VERSION)
    return make_error(errc::abi_mismatch,
                      path.string() + ": built against CAF "
                        + std::to_string(desc->caf_version) + ", kernel uses "
                        + std::to_string(CAF_VERSION));
  if (desc->protobuf_version != GOOGLE_PROTOBUF_VERSION)
    return make_error(errc::abi_mismatch,
                      path.string() + ": built against Protobuf "
                        + std::to_string(desc->protobuf_version) + ", kernel uses "
                        + std::to_string(GOOGLE_PROTOBUF_VERSION));
  if (desc->name == nullptr || desc->version == nullptr || desc->create == nullptr
      || desc->destroy == nullptr)
    return make_error(errc::abi_mismatch,
                      path.string() + ": descriptor lacks name, version or factory");
  if (expected_name != desc->name)
    return make_error(errc::load_failed, path.string() + ": library calls itself '"
                                           + desc->name + "', expected '"
                                           + std::string{expected_name} + "'");
  lib->descriptor = desc;
  lib->name = desc->name;
  lib->version = desc->version;
  if (desc->config_schema != nullptr) {
    auto schema = config_schema::parse(desc->config_schema,
                                       lib->name + " (config schema)");
    if (!schema)
      return schema.error();
    lib->schema = std::move(*schema);
  } else {
    lib->schema = config_schema::empty();
  }
  return lib;
}

const char* to_string(plugin_state x) noexcept {
  switch (x) {
    case plugin_state::loaded: return "loaded";
    case plugin_state::initialized: return "initialized";
    case plugin_state::running: return "running";
    case plugin_state::restarting: return "restarting";
    case plugin_state::stopped: return "stopped";
    case plugin_state::broken: return "broken";
  }
  return "unknown";
}

// -- plugin_host ----------------------------------------------------------------

plugin_host::plugin_host(caf::actor_system& sys, bus& b, host_settings settings,
                         std::shared_ptr<spdlog::logger> log)
  : sys_(sys), bus_(b), settings_(std::move(settings)), log_(std::move(log)) {
}

plugin_host::~plugin_host() {
  stop_all();
}

caf::expected<plugin_library_ptr> plugin_host::open(const plugin_spec& spec,
                                                    const std::filesystem::path& library,
                                                    YAML::Node* validated) {
  if (spec.isolation == "process" && settings_.plugin_host_exe.empty())
    return make_error(errc::unsupported,
                      spec.file + ":" + std::to_string(spec.line) + ": plugin '"
                        + spec.name + "': isolation 'process' needs groved as the "
                        + "plugin host, and this kernel has none");
  if (spec.isolation != "in_process" && spec.isolation != "process")
    return make_error(errc::invalid_config, "plugin '" + spec.name
                                              + "': unknown isolation '"
                                              + spec.isolation + "'");
  auto path = library.empty() ? settings_.plugin_dir / ("lib" + spec.name + ".so") : library;
  auto lib = open_plugin_library(path, spec.name);
  if (!lib)
    return lib.error();
  auto origin = spec.file.empty() ? std::string{"<load>"} : spec.file;
  auto cfg = (*lib)->schema.validate(*spec.config, origin,
                                     "plugins." + spec.name + ".config");
  if (!cfg)
    return cfg.error();
  if (validated != nullptr)
    *validated = std::move(*cfg);
  return lib;
}

caf::error plugin_host::check_free(const std::string& name) const {
  for (auto& p : plugins_)
    if (p.name == name)
      return make_error(errc::duplicate_plugin,
                        "a plugin named '" + name + "' is already loaded");
  if (std::find(starting_.begin(), starting_.end(), name) != starting_.end())
    return make_error(errc::duplicate_plugin,
                      "a plugin named '" + name + "' is being loaded");
  return {};
}

size_t plugin_host::abandoned() const noexcept {
  return abandoned_->load();
}

void plugin_host::abandon(const slot_actor& slot) {
  ++*abandoned_;
  // Stops the slot once the handler it is stuck in returns (a stop already queued
  // makes this one a no-op), and counts it as finished when it is gone.
  caf::anon_send(slot, stop_atom::value);
  // Runs at once when the slot is gone already.
  slot->attach_functor([count = abandoned_] { --*count; });
}

caf::error plugin_host::check(const plugin_spec& spec) {
  {
    std::lock_guard guard{mtx_};
    if (auto err = check_free(spec.name))
      return err;
  }
  auto lib = open(spec, {}, nullptr);
  return lib ? caf::error{} : lib.error();
}

caf::error plugin_host::load(const plugin_spec& spec, const std::filesystem::path& library,
                             const std::filesystem::path& reported) {
  // Check and claim the name in one critical section: two loads of one name must not
  // both pass the check while the first is still in init.
  {
    std::lock_guard guard{mtx_};
    if (auto err = check_free(spec.name))
      return err;
    starting_.push_back(spec.name);
  }
  // Every return below gives the claim back, except the one that makes it a plugin.
  struct name_claim {
    plugin_host* host;
    const std::string* name;
    ~name_claim() {
      if (name == nullptr)
        return;
      std::lock_guard guard{host->mtx_};
      auto& v = host->starting_;
      v.erase(std::find(v.begin(), v.end(), *name));
    }
  } claim{this, &spec.name};
  YAML::Node cfg;
  auto lib = open(spec, library, &cfg);
  if (!lib)
    return lib.error();
  if (!reported.empty())
    (*lib)->path = reported;
  auto state_dir = settings_.write_dir / "plugins" / spec.name;
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec)
    return make_error(errc::system_error,
                      "cannot create " + state_dir.string() + ": " + ec.message());
  auto plog = std::make_shared<spdlog::logger>(spec.name, settings_.sink);
  std::string level;
  {
    std::lock_guard guard{mtx_};
    level = level_of(spec);
  }
  plog->set_level(spdlog::level::from_str(level));
  plog->flush_on(spdlog::level::warn);
  auto status = std::make_shared<slot_status>();
  status->version = (*lib)->version;
  status->library = (*lib)->path.string();
  status->log_level = level;
  status->schema = (*lib)->schema;
  auto ep_box = std::make_shared<endpoint_ptr>();
  slot_setup setup;
  setup.name = spec.name;
  setup.lib = *lib;
  setup.config = std::make_shared<const YAML::Node>(cfg);
  setup.state_dir = state_dir;
  setup.log = plog;
  setup.restart = settings_.restart;
  setup.clock = settings_.clock;
  setup.bus_ptr = &bus_;
  setup.status = status;
  setup.ep = ep_box;
  setup.may_claim = spec.may_claim;
  slot_actor slot;
  if (spec.isolation == "process") {
    isolation_setup iso;
    iso.exe = settings_.plugin_host_exe;
    iso.log_level = level;
    iso.queue_capacity = spec.queue.capacity;
    slot = spawn_isolated_slot(sys_, std::move(setup), std::move(iso));
  } else {
    slot = spawn_slot(sys_, std::move(setup));
  }
  auto ep = std::make_shared<endpoint>(spec.name, caf::actor_cast<caf::actor>(slot), spec.queue);
  *ep_box = ep; // published to the slot by the send below
  lib->reset(); // the slot holds the library now
  caf::scoped_actor self{sys_};
  std::string result;
  bool timed_out = false;
  self->request(slot, settings_.init_timeout, init_atom::value)
    .receive([&](std::string& err) { result = std::move(err); },
             [&](caf::error& err) {
               timed_out = err == caf::sec::request_timeout;
               result = describe(err);
             });
  if (timed_out) {
    // The plugin's init (or start) is stuck: stop waiting, fail the load, and let the
    // slot stop whenever the plugin returns. Only a thread stays behind.
    abandon(slot);
    auto what = "init did not finish within "
                + std::to_string(settings_.init_timeout.count())
                + " ms (kernel.init_timeout_ms); the plugin was given up";
    log_->error("plugin {}: {}", spec.name, what);
    return make_error(errc::timeout, "plugin '" + spec.name + "': " + what);
  }
  if (!result.empty()) {
    self->request(slot, settings_.stop_timeout, stop_atom::value)
      .receive([](bool) {},
               [&](caf::error& err) {
                 if (err == caf::sec::request_timeout)
                   abandon(slot);
               });
    return make_error(errc::init_failed, "plugin '" + spec.name + "': " + result);
  }
  std::lock_guard guard{mtx_};
  // Still ours: the name was claimed above, so nobody else can have inserted it.
  starting_.erase(std::find(starting_.begin(), starting_.end(), spec.name));
  claim.name = nullptr;
  plugins_.push_back(loaded{spec.name, spec, slot, ep, status, spec.isolation, plog});
  // A set_log_level while this one started: it takes that level too.
  if (auto now = level_of(spec); now != level)
    apply_level(plugins_.back(), now);
  log_->info("plugin {} {} started from {}", spec.name, status->version,
             status->library);
  return {};
}

std::string plugin_host::level_of(const plugin_spec& spec) const {
  if (!level_override_.empty())
    return level_override_;
  return spec.log_level.empty() ? settings_.log_level : spec.log_level;
}

void plugin_host::apply_level(const loaded& p, const std::string& level) {
  if (p.log)
    p.log->set_level(spdlog::level::from_str(level));
  {
    std::lock_guard guard{p.status->mtx};
    p.status->log_level = level;
  }
  // The child logs through its own logger: the slot tells it (and starts the next
  // child at this level).
  if (p.isolation == "process")
    caf::anon_send(caf::actor_cast<caf::actor>(p.slot), log_level_atom::value, level);
}

void plugin_host::set_log_level(const std::string& level) {
  std::lock_guard guard{mtx_};
  level_override_ = level;
  for (const auto& p : plugins_)
    apply_level(p, level_of(p.spec));
}

caf::error plugin_host::unload(const std::string& name) {
  loaded entry;
  {
    std::lock_guard guard{mtx_};
    auto i = std::find_if(plugins_.begin(), plugins_.end(),
                          [&](const loaded& p) { return p.name == name; });
    if (i == plugins_.end())
      return make_error(errc::unknown_plugin, "no plugin named '" + name + "' is loaded");
    entry = std::move(*i);
    plugins_.erase(i);
  }
  caf::scoped_actor self{sys_};
  caf::error result;
  self->request(entry.slot, settings_.stop_timeout, stop_atom::value)
    .receive([](bool) {},
             [&](caf::error& err) {
               if (err != caf::sec::request_timeout)
                 return;
               abandon(entry.slot);
               result = make_error(errc::timeout,
                                   "plugin '" + name + "' did not stop within "
                                     + std::to_string(settings_.stop_timeout.count())
                                     + " ms (kernel.stop_timeout_ms); it was given up");
             });
  if (result) {
    log_->error("{}", describe(result));
    return result;
  }
  log_->info("plugin {} unloaded", name);
  return {};
}

void plugin_host::stop_all() {
  for (;;) {
    std::string name;
    {
      std::lock_guard guard{mtx_};
      if (plugins_.empty())
        return;
      name = plugins_.back().name;
    }
    unload(name);
  }
}

template <class Atom, class Request>
caf::expected<std::string> plugin_host::swap(const std::string& name, Atom atom, Request req) {
  auto slot = slot_of(name);
  if (!slot)
    return make_error(errc::unknown_plugin, "no plugin named '" + name + "' is loaded");
  caf::scoped_actor self{sys_};
  caf::expected<std::string> result{std::string{}};
  // A swap stops the old instance and inits the new one.
  auto timeout = settings_.init_timeout + settings_.stop_timeout;
  self->request(slot, timeout, atom, std::move(req))
    .receive(
      [&](bool ok, std::string& what) {
        if (ok)
          result = std::move(what);
        else
          result = make_error(errc::init_failed, std::move(what));
      },
      [&](caf::error& err) {
        if (err == caf::sec::request_timeout)
          result = make_error(errc::timeout,
                              "plugin '" + name + "' did not finish the swap within "
                                + std::to_string(timeout.count())
                                + " ms; it stays loaded and may be hung");
        else
          result = std::move(err);
      });
  return result;
}

caf::expected<std::string> plugin_host::reload(const std::string& name,
                                               const std::filesystem::path& path,
                                               const std::filesystem::path& reported) {
  auto spec = spec_of(name);
  if (!spec)
    return make_error(errc::unknown_plugin, "no plugin named '" + name + "' is loaded");
  std::filesystem::path source = path;
  if (source.empty()) {
    std::lock_guard guard{mtx_};
    for (auto& p : plugins_)
      if (p.name == name) {
        std::lock_guard status_guard{p.status->mtx};
        source = p.status->library;
      }
  }
  source = std::filesystem::absolute(source);
  auto copy = settings_.write_dir / "run" / "lib"
              / (name + "-" + std::to_string(getpid()) + "-"
                 + std::to_string(++copies_) + ".so");
  auto lib = open_plugin_library(source, name, copy);
  if (!lib) {
    log_->error("reload of {} refused: {}", name, describe(lib.error()));
    return lib.error();
  }
  (*lib)->path = reported.empty() ? source : reported;
  auto cfg = (*lib)->schema.validate(*spec->config,
                                     spec->file.empty() ? "<load>" : spec->file,
                                     "plugins." + name + ".config");
  if (!cfg)
    return cfg.error();
  auto result = swap(name, reload_atom::value, reload_request{std::move(*lib), *cfg});
  if (!result)
    log_->error("reload of {} failed: {}", name, describe(result.error()));
  return result;
}

caf::expected<std::string> plugin_host::reconfigure(const plugin_spec& spec) {
  auto current = spec_of(spec.name);
  if (!current)
    return make_error(errc::unknown_plugin,
                      "no plugin named '" + spec.name + "' is loaded");
  // Validate against the schema of the build that runs now; nothing changes on error.
  config_schema schema = config_schema::empty();
  {
    std::lock_guard guard{mtx_};
    for (auto& p : plugins_)
      if (p.name == spec.name) {
        std::lock_guard status_guard{p.status->mtx};
        schema = p.status->schema;
      }
  }
  auto checked = schema.validate(*spec.config, spec.file,
                                      "plugins." + spec.name + ".config");
  if (!checked)
    return checked.error();
  auto result = swap(spec.name, reconf_atom::value, reconfig_request{*checked});
  if (result) {
    std::lock_guard guard{mtx_};
    for (auto& p : plugins_)
      if (p.name == spec.name)
        p.spec.config = spec.config;
  }
  return result;
}

std::optional<plugin_spec> plugin_host::spec_of(const std::string& name) const {
  std::lock_guard guard{mtx_};
  for (auto& p : plugins_)
    if (p.name == name)
      return p.spec;
  return std::nullopt;
}

std::vector<std::string> plugin_host::names() const {
  std::lock_guard guard{mtx_};
  std::vector<std::string> result;
  for (auto& p : plugins_)
    result.push_back(p.name);
  return result;
}

std::vector<control::PluginInfo> plugin_host::list() const {
  std::lock_guard guard{mtx_};
  std::vector<control::PluginInfo> result;
  for (auto& p : plugins_) {
    control::PluginInfo info;
    info.set_name(p.name);
    {
      std::lock_guard status_guard{p.status->mtx};
      info.set_version(p.status->version);
      info.set_state(to_string(p.status->state));
      info.set_restarts(p.status->restarts);
      info.set_last_error(p.status->last_error);
      info.set_library(p.status->library);
      info.set_last_reload(p.status->last_reload);
      info.set_log_level(p.status->log_level);
    }
    p.status->metrics->collect(*info.mutable_metrics());
    info.set_queue_depth(p.ep->depth());
    info.set_queue_capacity(p.ep->settings().capacity);
    info.set_delivered(p.ep->delivered());
    info.set_dropped(p.ep->dropped());
    info.set_overflow(to_string(p.ep->settings().overflow));
    info.set_isolation(p.isolation);
    info.set_refused_sources(p.status->refused_sources.load(std::memory_order_relaxed));
    for (auto& f : bus_.served_by(p.ep))
      info.add_serves(f);
    result.push_back(std::move(info));
  }
  return result;
}

std::shared_ptr<metric_registry> plugin_host::metrics_of(const std::string& name) const {
  std::lock_guard guard{mtx_};
  for (auto& p : plugins_)
    if (p.name == name)
      return p.status->metrics;
  return nullptr;
}

std::map<std::string, std::string> plugin_host::details() const {
  std::lock_guard guard{mtx_};
  std::map<std::string, std::string> result;
  for (auto& p : plugins_) {
    std::lock_guard status_guard{p.status->mtx};
    result.insert(p.status->details.begin(), p.status->details.end());
  }
  return result;
}

endpoint_ptr plugin_host::endpoint_of(const std::string& name) const {
  std::lock_guard guard{mtx_};
  for (auto& p : plugins_)
    if (p.name == name)
      return p.ep;
  return nullptr;
}

slot_actor plugin_host::slot_of(const std::string& name) const {
  std::lock_guard guard{mtx_};
  for (auto& p : plugins_)
    if (p.name == name)
      return p.slot;
  return {};
}

} // namespace grove
