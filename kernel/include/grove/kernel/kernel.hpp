#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/expected.hpp>

#include "grove/kernel/bus.hpp"
#include "grove/kernel/config.hpp"
#include "grove/kernel/control.hpp"
#include "grove/kernel/group.hpp"
#include "grove/kernel/plugin_host.hpp"

namespace caf {
class scoped_actor;
} // namespace caf

namespace spdlog {
class logger;
}

namespace grove {

class file_watch;
class metrics_server;

/// Version of groved.
extern const char* const kernel_version;

/// Options that do not come from the image profile.
struct kernel_options {
  /// Serve the control socket (tests may run kernels without one).
  bool control_socket = true;
  /// Log to stderr with colours if it is a terminal.
  bool log_to_stderr = true;
  /// Watch the profile file and apply changes (plugins added, removed, reconfigured).
  bool watch_profile = false;
  /// How often the profile file is checked.
  std::chrono::milliseconds watch_interval{1000};
  /// The groved binary for `isolation: process` plugins (empty: not available).
  std::filesystem::path plugin_host_exe;
  /// Serve the kernel's own request topics ($grove/kernel/...). A plugin-host child
  /// does not: its requests reach the parent's kernel, which serves them.
  bool kernel_services = true;
  /// Name of the kernel's logger (a plugin-host child logs as "host:<plugin>").
  std::string logger_name = "groved";
  /// Time for in-process plugins' timers and restart back-off; null = real time (the
  /// SDK test harness passes a manual_clock).
  std::shared_ptr<kernel_clock> clock;
};

/// One running Grove kernel: actor system, bus, plugin host and control socket.
/// Several kernels may live in one process (tests, the SDK harness).
class kernel final : public control_backend {
public:
  /// Builds a kernel for a validated profile; nothing is started yet.
  kernel(image_profile profile, kernel_options options = {});

  ~kernel() override;

  /// Creates the write directory, loads every plugin of the profile (a plugin that
  /// fails is logged and left out; the rest run), and opens the control socket.
  /// Errors only when the kernel itself cannot run (write dir, control socket).
  caf::error start();

  /// Stops plugins (last first), closes the control socket. Idempotent.
  void stop();

  /// The bus.
  grove::bus& bus() noexcept {
    return bus_;
  }

  /// The plugin host.
  plugin_host& host() noexcept {
    return *host_;
  }

  /// The actor system.
  caf::actor_system& system() noexcept {
    return *sys_;
  }

  /// The kernel logger.
  const std::shared_ptr<spdlog::logger>& log() const noexcept {
    return log_;
  }

  /// A copy of the profile in force (the watcher may replace it at any time).
  image_profile profile() const;

  /// Re-reads the profile file and applies what changed: new plugins are loaded,
  /// removed ones unloaded, changed plugin configs applied (live or by a reload). A
  /// file that fails validation changes nothing. Returns one line per action.
  caf::expected<std::vector<std::string>> apply_profile_change();

  /// Re-reads the profile (and group) file now and applies it as a change on disk
  /// would be; what groved does on SIGHUP. Thread-safe with the file watcher.
  void reread();

  /// The group definition in force (null when the image has none).
  std::shared_ptr<const group::Group> group() const;

  /// Replaces the group with `document` (YAML or JSON) as an edit of the group file
  /// would: validated first (a refused one changes nothing, the error says why), then
  /// written to the group file atomically (temporary file, fsync, rename) and applied.
  /// `caller` is the plugin asking; it must have `may_set_group` in the profile.
  /// With `expected_version`, a compare-and-set: errc::conflict, and nothing changes,
  /// when the group in force (after an unread edit of the file) has another version.
  /// Thread-safe with the file watcher.
  caf::expected<std::shared_ptr<const group::Group>>
  set_group(std::string_view caller, const std::string& document,
            std::optional<uint64_t> expected_version = std::nullopt);

  /// Answers one request of the kernel's control service (control_client.hpp):
  /// `$grove/kernel/status` for anyone, `$grove/kernel/plugins/{load,unload,reload,
  /// configure}` for plugins whose profile entry has `may_control_plugins` (the request's
  /// source is the caller), never on the caller itself. Blocks while a plugin loads or
  /// reloads; thread-safe.
  caf::expected<Envelope> control_request(const Envelope& msg);

  /// Re-reads the group file; a valid one replaces the group in force and is published
  /// on `$grove/group/current`, an invalid one is refused and changes nothing.
  caf::error reload_group();

  /// The kernel's and every plugin's numbers in Prometheus text format 0.0.4, as
  /// `GET /metrics` serves them. Thread-safe.
  std::string scrape();

  /// Port of the metrics endpoint; 0 when it is off.
  uint16_t metrics_port() const noexcept;

  /// Sends a request to the plugin serving `topic` and waits for the reply (or the
  /// responder's error, code and category intact; no_route; timeout).
  caf::expected<Envelope> request(std::string_view topic, std::string payload,
                                  std::chrono::milliseconds timeout);

  /// Sends a prepared request (topic, payload, content type; an empty source becomes
  /// "kernel") and waits like request(); the transport of typed clients in tests.
  caf::expected<Envelope> request(Envelope msg, std::chrono::milliseconds timeout) override;

  /// Waits until some plugin serves `topic`; errc::timeout after `timeout`.
  caf::error wait_served(std::string_view topic, std::chrono::milliseconds timeout);

  // -- control_backend ----------------------------------------------------------

  control::Status status() override;
  control::Plugins plugins() override;
  caf::error load(const std::string& name) override;
  caf::error unload(const std::string& name) override;
  caf::expected<std::string> reload(const std::string& name,
                                    const std::string& path) override;
  caf::expected<publish_result> publish(Envelope msg) override;
  caf::expected<std::shared_ptr<void>>
  subscribe(const std::string& filter,
            std::function<void(const Envelope&)> sink) override;

  /// Like subscribe(), with explicit queue settings for the subscriber.
  caf::expected<std::shared_ptr<void>>
  subscribe(const std::string& filter, std::function<void(const Envelope&)> sink,
            queue_settings queue);

private:
  /// One pass of the file watcher (watch_mtx_ held); `force` applies the profile
  /// even when its text did not change.
  void check_files(bool force);

  /// Reloads the group if its file's text changed (watch_mtx_ held).
  void check_group_file();

  /// Calls `f` with the profile in force, under the lock that its replacement takes.
  template <class F>
  auto with_profile(F&& f) const {
    std::lock_guard guard{profile_mtx_};
    return f(profile_);
  }

  /// Replaced only under apply_mtx_ and profile_mtx_: holders of apply_mtx_ (start,
  /// apply_profile_change) read it directly, everyone else through with_profile().
  image_profile profile_;
  mutable std::mutex profile_mtx_;
  kernel_options options_;
  std::shared_ptr<spdlog::logger> log_;
  caf::actor_system_config cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  /// Blocking actors that request() borrows, one per call in flight, so a call spawns
  /// none (spawning one and its clean-up cost more than the bus hop itself). Declared
  /// after sys_: they go before the actor system does.
  std::mutex requesters_mtx_;
  std::vector<std::unique_ptr<caf::scoped_actor>> requesters_;
  std::unique_ptr<caf::scoped_actor> take_requester();
  void give_back(std::unique_ptr<caf::scoped_actor> self);
  grove::bus bus_;
  std::unique_ptr<plugin_host> host_;
  std::unique_ptr<control_server> control_;
  std::unique_ptr<metrics_server> metrics_;
  std::chrono::steady_clock::time_point started_;
  bool stopped_ = false;
  std::mutex apply_mtx_;
  /// Per plugin, the last configure over the profile (PluginChange.over_profile) in
  /// force: profile changes apply merge(profile entry, overlay). Under apply_mtx_.
  std::map<std::string, yaml_ptr> overlays_;
  std::string profile_text_;
  std::string group_text_;
  std::array<long long, 5> group_stamp_{}; // file_stamp() of group_text_'s read
  std::string group_in_force_text_; // the group file's text group_ was read from (group_mtx_)
  mutable std::mutex group_mtx_;
  std::shared_ptr<const group::Group> group_;
  // The GreengrassSystem logger applied last: its id and spdlog level (empty: none, the
  // profile's levels), under group_mtx_.
  std::string system_logger_;
  std::string system_level_;
  bool loggers_applied_ = false;
  // The profile's log_level at start: the one a group without a GreengrassSystem logger
  // gives back (a changed profile's level applies at the next start only). Set once.
  std::string start_level_;
  /// Applies `g`'s GreengrassSystem logger (or its absence) to groved's and the plugins'
  /// log levels, when it changed.
  void apply_loggers(const group::Group& g);
  // Spawns one of the kernel's own services (kernel.cpp, kernel_service) as `svc`,
  // behind endpoint `ep`, serving `topics`.
  caf::error serve_kernel_service(std::string name,
                                  std::function<caf::expected<Envelope>(const Envelope&)> answer,
                                  std::initializer_list<std::string_view> topics,
                                  caf::actor& svc, endpoint_ptr& ep);
  caf::actor group_service_;
  endpoint_ptr group_ep_;
  caf::actor control_service_;
  endpoint_ptr control_ep_;
  std::thread watcher_;
  std::mutex watch_mtx_;
  std::condition_variable watch_cv_;
  bool watch_stop_ = false;
  // The group file's own watcher (kernel.cpp, start()).
  std::unique_ptr<file_watch> group_watch_;
  std::thread group_watcher_;
  // When the watcher releases code pages next (steady_clock ticks; 0 = nothing due).
  std::atomic<int64_t> code_trim_due_{0};
  void schedule_code_trim();
  void release_code_pages_if_due();
};

} // namespace grove
