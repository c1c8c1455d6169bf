#pragma once

#include <chrono>
#include <filesystem>
#include <atomic>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "grove/control.pb.h"
#include "grove/kernel/bus.hpp"
#include "grove/kernel/clock.hpp"
#include "grove/kernel/config.hpp"
#include "grove/kernel/metrics.hpp"
#include "grove/kernel/slot_protocol.hpp"
#include "grove/plugin.hpp"

namespace spdlog {
class logger;
namespace sinks {
class sink;
}
} // namespace spdlog

namespace grove {

/// A plugin library opened with dlopen. dlclose runs when the last reference (the
/// host's and every live instance's) goes away.
struct plugin_library {
  /// Path it was opened from.
  std::filesystem::path path;
  /// dlopen handle.
  void* handle = nullptr;
  /// The descriptor returned by the entry symbol.
  const grove_plugin_descriptor* descriptor = nullptr;
  /// Name and version copied out of the descriptor.
  std::string name;
  /// Semantic version of the plugin.
  std::string version;
  /// Parsed configuration schema.
  config_schema schema;

  ~plugin_library();
};

/// Shared handle to an open plugin library.
using plugin_library_ptr = std::shared_ptr<plugin_library>;

/// Opens `path`, resolves grove_plugin_entry_v1 and checks struct size, ABI, CAF and
/// Protobuf versions, the name (must equal `expected_name`) and the schema. With
/// `private_copy` set, dlopens a copy of the file made there (and removes it once
/// mapped), so a rebuilt library at an already-loaded path really loads anew.
caf::expected<plugin_library_ptr>
open_plugin_library(const std::filesystem::path& path, std::string_view expected_name,
                    const std::filesystem::path& private_copy = {});

/// Compares a descriptor's ABI hash and build information (compiler family and major
/// version, C++ library release, yaml-cpp/fmt/spdlog versions) with the kernel's.
/// Returns what differs, naming each header or library, or an empty string.
std::string check_build(const grove_plugin_descriptor& desc);

/// The kernel's own GROVE_BUILD_INFO ("gcc 12, libstdc++ 12, yaml-cpp 0.7.0, ...").
const char* kernel_build_info() noexcept;

/// Life-cycle states shown by `grovectl plugins`.
enum class plugin_state : uint8_t {
  loaded,
  initialized,
  running,
  restarting,
  stopped,
  broken,
};

/// Returns the state's name.
const char* to_string(plugin_state x) noexcept;

/// What the host shares with a slot actor for status: written by the slot, read by
/// the control socket.
struct slot_status {
  mutable std::mutex mtx;
  plugin_state state = plugin_state::loaded;
  std::string version;
  std::string library;
  std::string last_error;
  std::string last_reload;
  std::string log_level;
  uint32_t restarts = 0;
  /// Envelopes refused because they claimed a source the plugin may not set.
  std::atomic<uint64_t> refused_sources{0};
  std::map<std::string, std::string> details;
  /// Schema of the build that runs now (config changes are checked against it).
  config_schema schema;
  /// The plugin's counters and gauges: owned here, not by the instance, so they
  /// survive restarts and reloads. Has its own lock; set once at load.
  std::shared_ptr<metric_registry> metrics = std::make_shared<metric_registry>();
};

/// Settings of the plugin host.
struct host_settings {
  /// Where lib<name>.so files are.
  std::filesystem::path plugin_dir;
  /// Per-plugin state lives in <write_dir>/plugins/<name>/.
  std::filesystem::path write_dir;
  /// Restart policy for every plugin.
  restart_policy restart;
  /// Kernel log level (plugins without their own level use it).
  std::string log_level = "info";
  /// Where plugin loggers write.
  std::shared_ptr<spdlog::sinks::sink> sink;
  /// The groved binary that hosts `isolation: process` plugins; empty = unsupported.
  std::filesystem::path plugin_host_exe;
  /// Time for in-process plugins' timers and restart back-off; null = real time.
  std::shared_ptr<kernel_clock> clock;
  /// How long a plugin's init and start may take before its load fails.
  std::chrono::milliseconds init_timeout{10000};
  /// How long a plugin's stop (and a reload's or reconfiguration's swap, which also
  /// inits the new instance: init_timeout + stop_timeout) may take before the host
  /// gives up waiting for it.
  std::chrono::milliseconds stop_timeout{10000};
};

/// Loads, supervises and unloads plugins. Each plugin lives in a kernel-owned slot
/// actor whose address never changes; thread-safe.
class plugin_host {
public:
  /// Creates a host on `sys` publishing through `b`.
  plugin_host(caf::actor_system& sys, bus& b, host_settings settings,
              std::shared_ptr<spdlog::logger> log);

  ~plugin_host();

  /// Opens the library, validates the config against the plugin's schema, spawns its
  /// slot, and runs init and start. On any error nothing stays loaded. The name is
  /// taken from the first check on, so of concurrent loads of one name only one can
  /// start; an init that outlasts `init_timeout` fails the load (errc::timeout) and
  /// its slot is abandoned (see abandoned()). `library`: the file to load instead of
  /// `<plugin_dir>/lib<name>.so` (checked by the caller; a reload without a path loads it
  /// again). `reported`: the path to report and re-read on a reload without a path
  /// (empty: `library`), when `library` is the kernel's checked copy of it.
  caf::error load(const plugin_spec& spec, const std::filesystem::path& library = {},
                  const std::filesystem::path& reported = {});

  /// Checks what load() would check (library, ABI, schema, config) without starting.
  caf::error check(const plugin_spec& spec);

  /// Stops and unloads a plugin. A stop that outlasts `stop_timeout` is not waited
  /// for: the plugin is gone from the host, its slot abandoned, and errc::timeout
  /// returned.
  caf::error unload(const std::string& name);

  /// Slots whose init or stop timed out and that have not finished since: their
  /// plugin code still holds a thread (in process) and the actor system cannot shut
  /// down before it returns.
  size_t abandoned() const noexcept;

  /// Hot-reloads `name` from `path` (empty: the library it runs now, re-read from
  /// disk) with its current configuration. On success returns what happened; on
  /// failure the old instance keeps running with its state and the error says why.
  /// `reported`: as for load().
  caf::expected<std::string> reload(const std::string& name,
                                    const std::filesystem::path& path = {},
                                    const std::filesystem::path& reported = {});

  /// Applies a changed configuration entry to a running plugin (live when the plugin
  /// can reconfigure, else by a reload of the same build). A config that fails
  /// validation is refused and the old one stays.
  caf::expected<std::string> reconfigure(const plugin_spec& spec);

  /// The spec a plugin was loaded with (config updated by reconfigure), if loaded.
  std::optional<plugin_spec> spec_of(const std::string& name) const;

  /// Stops every plugin, last loaded first.
  void stop_all();

  /// Names of loaded plugins in load order.
  std::vector<std::string> names() const;

  /// Status of every loaded plugin.
  std::vector<control::PluginInfo> list() const;

  /// Status lines contributed by plugins via context::set_status.
  std::map<std::string, std::string> details() const;

  /// The counters and gauges of `name`, or null.
  std::shared_ptr<metric_registry> metrics_of(const std::string& name) const;

  /// The slot actor of `name` (for tests and the harness), or an invalid handle.
  slot_actor slot_of(const std::string& name) const;

  /// The bus endpoint of `name`, or null.
  endpoint_ptr endpoint_of(const std::string& name) const;

  /// Sets every plugin's log level live, isolated ones too (their child is told, and a
  /// restarted child starts with it), and the level of plugins loaded later: a group's
  /// GreengrassSystem logger. Empty: back to each plugin's configured level (its
  /// profile entry's `log_level`, else the kernel's).
  void set_log_level(const std::string& level);

private:
  struct loaded {
    std::string name;
    plugin_spec spec;
    slot_actor slot;
    endpoint_ptr ep;
    std::shared_ptr<slot_status> status;
    std::string isolation;
    std::shared_ptr<spdlog::logger> log;
  };

  /// The level `spec` runs at: the override, else its own, else the kernel's; mtx_ held.
  std::string level_of(const plugin_spec& spec) const;

  /// Applies `level` to a loaded plugin (logger, status, an isolated child).
  static void apply_level(const loaded& p, const std::string& level);

  caf::expected<plugin_library_ptr> open(const plugin_spec& spec, const std::filesystem::path& library,
                                         YAML::Node* validated);

  /// Sends `(atom, req)` (a reload or a reconfiguration) to the slot of `name` and
  /// waits for its answer.
  template <class Atom, class Request>
  caf::expected<std::string> swap(const std::string& name, Atom atom, Request req);

  /// Fails with duplicate_plugin when `name` is loaded or being loaded; mtx_ held.
  caf::error check_free(const std::string& name) const;

  /// Gives up on a slot that does not answer: it stops once its handler returns, and
  /// counts as abandoned until then.
  void abandon(const slot_actor& slot);

  std::atomic<uint64_t> copies_{0};
  std::shared_ptr<std::atomic<size_t>> abandoned_
    = std::make_shared<std::atomic<size_t>>(0);

  caf::actor_system& sys_;
  bus& bus_;
  host_settings settings_;
  std::shared_ptr<spdlog::logger> log_;
  mutable std::mutex mtx_;
  std::vector<loaded> plugins_;
  /// set_log_level's level; empty: none (under mtx_).
  std::string level_override_;
  /// Names whose load is under way (checked and inserted with plugins_, under mtx_).
  std::vector<std::string> starting_;
};

} // namespace grove
