#pragma once

// The Grove plugin SDK: everything a plugin author includes. A plugin is a class
// deriving from grove::plugin, exported with GROVE_PLUGIN(...). The kernel runs it inside
// a kernel-owned actor (its slot); every call into the plugin happens on that actor, one
// at a time, so a plugin needs no locks for its own state.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include <caf/config.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <google/protobuf/stubs/common.h>
#include <yaml-cpp/yaml.h>

#include "grove/abi.hpp"
#include "grove/envelope.pb.h"
#include "grove/errors.hpp"
#include "grove/metrics.hpp"
#include "grove/process.hpp"
#include "grove/topic.hpp"

namespace spdlog {
class logger;
}

namespace caf {
class actor_system;
}

/// Version of the C ABI below and of the C++ interfaces in the SDK's public headers.
/// The build derives GROVE_PLUGIN_ABI_HASH from those headers (grove/abi.hpp); the test
/// sdk_abi_lock fails until a changed hash comes with a new version in
/// sdk/plugin/abi.lock, so an interface change cannot ship without a bump.
#define GROVE_PLUGIN_ABI_VERSION 15u

#define GROVE_STRINGIFY_IMPL(x) #x
#define GROVE_STRINGIFY(x) GROVE_STRINGIFY_IMPL(x)

// What a plugin was compiled with, recorded in its descriptor and compared with the
// kernel's by the loader: compiler family and major version, the C++ library's release,
// and the libraries whose types cross the plugin boundary (GROVE_BUILD_LIBS, set by
// grove_add_plugin from the versions CMake found).
#if defined(__clang__)
#  define GROVE_BUILD_COMPILER "clang " GROVE_STRINGIFY(__clang_major__)
#elif defined(__GNUC__)
#  define GROVE_BUILD_COMPILER "gcc " GROVE_STRINGIFY(__GNUC__)
#else
#  define GROVE_BUILD_COMPILER "compiler unknown"
#endif
#if defined(_GLIBCXX_RELEASE)
#  define GROVE_BUILD_STDLIB "libstdc++ " GROVE_STRINGIFY(_GLIBCXX_RELEASE)
#elif defined(_LIBCPP_VERSION)
#  define GROVE_BUILD_STDLIB "libc++ " GROVE_STRINGIFY(_LIBCPP_VERSION)
#else
#  define GROVE_BUILD_STDLIB "stdlib unknown"
#endif
#ifndef GROVE_BUILD_LIBS
#  define GROVE_BUILD_LIBS "libraries unknown"
#endif
/// "gcc 12, libstdc++ 12, yaml-cpp 0.7.0, fmt 9.1.0, spdlog 1.10.0"
#define GROVE_BUILD_INFO GROVE_BUILD_COMPILER ", " GROVE_BUILD_STDLIB ", " GROVE_BUILD_LIBS

extern "C" {

/// What a plugin library exports through grove_plugin_entry_v1. Fields are only ever
/// appended; `struct_size` comes first so the kernel can tell how much it may read.
typedef struct grove_plugin_descriptor {
  /// sizeof(grove_plugin_descriptor) as the plugin was compiled.
  uint32_t struct_size;
  /// GROVE_PLUGIN_ABI_VERSION as the plugin was compiled.
  uint32_t abi_version;
  /// CAF_VERSION as the plugin was compiled (kernel and plugin share CAF types).
  uint32_t caf_version;
  /// GOOGLE_PROTOBUF_VERSION as the plugin was compiled.
  uint32_t protobuf_version;
  /// Plugin name; must equal the library name lib<name>.so.
  const char* name;
  /// Semantic version of the plugin, e.g. "1.2.0".
  const char* version;
  /// Configuration schema as YAML text (see sdk/plugin/README.md), or null for "no keys".
  const char* config_schema;
  /// Creates one plugin instance (a grove::plugin*); null on failure. Never throws.
  void* (*create)(void);
  /// Destroys an instance made by create. Never throws.
  void (*destroy)(void*);
  /// GROVE_PLUGIN_ABI_HASH as the plugin was compiled (hash of the SDK's headers).
  const char* abi_hash;
  /// GROVE_PLUGIN_ABI_MANIFEST: per-header hashes, so a refusal names what differs.
  const char* abi_manifest;
  /// GROVE_BUILD_INFO: compiler, C++ library and library versions, comma-separated.
  const char* build_info;
  /// Reserved for future fields; zero.
  void* reserved[5];
} grove_plugin_descriptor;

/// Signature of the one entry symbol a plugin library exports.
typedef const grove_plugin_descriptor* (*grove_plugin_entry_fn)(void);
}

namespace grove {

/// Name of the entry symbol.
constexpr const char* plugin_entry_symbol = "grove_plugin_entry_v1";

/// Result of a publish: how many subscribers got the message and how many queues
/// were full (the message was dropped for them and counted).
struct publish_result {
  uint32_t delivered = 0;
  uint32_t dropped = 0;
};

/// Identifies a timer made by context::after or context::every.
using timer_id = uint64_t;

/// Called with the reply to a request, or the error (timeout, no_route, ...).
using response_handler = std::function<void(caf::expected<Envelope>)>;

/// Called on the plugin's actor with a request for a topic the plugin serves; answer
/// it (now or later) with context::reply or context::reply_error. The request is the
/// handler's: it may move the envelope (or its payload) into its own queue instead of
/// copying it, and answer with the moved-to envelope (an answer needs its id and
/// reply_to only). A handler taking `const Envelope&` fits too.
using request_handler = std::function<void(Envelope&)>;

/// What the kernel offers a plugin. Valid from init() until stop() returns.
class context {
public:
  virtual ~context();

  /// The plugin's name.
  virtual const std::string& name() const = 0;

  /// The plugin's validated configuration, defaults filled in.
  virtual const YAML::Node& config() const = 0;

  /// The plugin's private state directory (<write_dir>/plugins/<name>/), created.
  virtual const std::filesystem::path& state_dir() const = 0;

  /// The plugin's logger (named after the plugin, level from the image profile).
  virtual spdlog::logger& log() = 0;

  /// The actor system, for plugins that spawn helper actors. Actors spawned here
  /// run plugin code: stop them in plugin::stop().
  virtual caf::actor_system& system() = 0;

  /// Receive messages published on topics matching `filter` through on_message().
  virtual caf::error subscribe(std::string_view filter) = 0;

  /// Undo one subscribe().
  virtual caf::error unsubscribe(std::string_view filter) = 0;

  /// Publishes `payload` on `topic`; an empty content type means
  /// application/octet-stream. Thread-safe: may be called from any thread.
  virtual caf::expected<publish_result>
  publish(std::string_view topic, std::string payload,
          std::string_view content_type = {})
    = 0;

  /// Publishes a prepared envelope (topic, payload, content type, qos are used; id and
  /// timestamp are set by the bus; an empty source becomes the plugin's name; a set
  /// one, e.g. "device:<thing>" for a message the plugin forwards, must be granted by
  /// the plugin's `may_claim` in the image profile, else the publish fails with
  /// errc::not_authorized and is counted). Thread-safe.
  virtual caf::expected<publish_result> publish(Envelope msg) = 0;

  /// Sends a request to the plugin serving `topic` (see serve) and calls `f` on this
  /// plugin's actor with the reply or an error (no_route, timeout, the responder's
  /// error with its code and category).
  virtual void request(std::string_view topic, std::string payload,
                       std::chrono::milliseconds timeout, response_handler f)
    = 0;

  /// Answers a request handed to a request_handler (see serve).
  virtual void reply(const Envelope& request, std::string payload,
                     std::string_view content_type = {})
    = 0;

  /// Answers a request with an error.
  virtual void reply_error(const Envelope& request, caf::error err) = 0;

  /// Calls `f` once after `delay`, on this plugin's actor.
  virtual timer_id after(std::chrono::milliseconds delay, std::function<void()> f)
    = 0;

  /// Calls `f` every `period`, on this plugin's actor, until cancelled.
  virtual timer_id every(std::chrono::milliseconds period, std::function<void()> f)
    = 0;

  /// Cancels a timer; unknown ids are ignored.
  virtual void cancel(timer_id id) = 0;

  /// Reports that the plugin cannot go on: the kernel stops it and restarts it with
  /// back-off (or marks it broken after repeated failures).
  virtual void fail(caf::error reason) = 0;

  /// Adds or replaces a key/value line shown by `grovectl status` for this plugin; an
  /// empty value removes the line (a removed item's line does not stay behind).
  virtual void set_status(std::string_view key, std::string value) = 0;

  // --- services ---

  /// Claims requests on `filter` (a topic or an MQTT filter) exclusively: each request
  /// whose topic matches goes to `handler`, on this plugin's actor; subscribers never
  /// see requests. A claim overlapping another plugin's (some topic matches both)
  /// fails with errc::already_served naming both plugins, and fails the plugin's load
  /// when made during init or start. Claims survive restarts and reloads of the
  /// plugin while the new instance claims them again. Call from the plugin's actor.
  virtual caf::error serve(std::string_view filter, request_handler handler) = 0;

  /// Gives up a claim made by serve().
  virtual caf::error unserve(std::string_view filter) = 0;

  /// Calls `f` on this plugin's actor once a plugin serves `topic` (right away when
  /// one does), with an empty error, or with errc::timeout after `timeout`.
  virtual void when_served(std::string_view topic, std::chrono::milliseconds timeout,
                           std::function<void(caf::error)> f)
    = 0;

  /// Sends a prepared request (topic, payload, content type; an empty source becomes
  /// the plugin's name, a set one must be granted by the profile's may_claim) and calls
  /// `f` like request(). grove::rpc uses this.
  virtual void call(Envelope msg, std::chrono::milliseconds timeout, response_handler f)
    = 0;

  // --- process ---

  /// Runs `fn` on this plugin's actor, after what is queued there already. Thread-safe:
  /// for the plugin's own threads and for callbacks of libraries. Dropped, never run,
  /// when the instance that posted it has stopped, failed or been reloaded meanwhile.
  /// An exception escaping `fn` is a failure of the plugin.
  virtual void post(std::function<void()> fn) = 0;

  /// Runs `work` on the SDK's bounded pool of blocking threads (never on a CAF worker),
  /// then `then` on this plugin's actor with the outcome: `then(caf::expected<R>)` for
  /// a `work` returning R, `then(caf::error)` (empty on success) for a void one. An
  /// exception thrown by `work` arrives as a plugin_failed error. Both must be
  /// copyable. `then` is dropped when the instance is gone by the time `work` ends.
  template <class Work, class Then>
  void run_blocking(Work work, Then then);

  /// Hands child process `p` to the next instance of this plugin across a hot reload
  /// (call it in snapshot(), or in stop()). The child runs on, unowned, its output still
  /// logged; whatever the next instance has not adopted when its start() returns is
  /// stopped. Outside a reload (unload, failure) kept processes are stopped too.
  virtual void keep_process(std::string name, process p) = 0;

  /// Takes back the process an earlier instance kept as `name` (in restore() or
  /// start()); nullopt when there is none. Call process::bind to get its events.
  virtual std::optional<process> adopt_process(std::string_view name) = 0;

  /// Takes over `request`, which the previous instance of this plugin left unanswered
  /// when it handed over its snapshot at a hot reload (carried in the snapshot, say), so
  /// this instance may reply() or reply_error() to it; call it in restore() or start().
  /// Only the envelope's id is used. False when there is none to take (already answered,
  /// not open at the reload, called elsewhere). Requests no instance adopts by the time
  /// start() returns are answered `plugin_failed` "<name> stopped: reloading". If the
  /// new build fails to restore or start, what it adopted and left open goes back to the
  /// old build the kernel puts back, which may adopt it in turn.
  virtual bool adopt_request(const Envelope& request) = 0;

  // --- metrics ---

  /// Declares counter `name` (dot-separated segments of [a-z0-9_], e.g.
  /// "routed.to_cloud"), or returns the one declared before under that name. Its value
  /// lives in the kernel and survives restarts and reloads. Errors: a bad name, or the
  /// name declared as another kind. Thread-safe.
  virtual caf::expected<grove::counter> counter(std::string_view name,
                                                std::string_view help)
    = 0;

  /// Declares gauge `name`; same rules as counter().
  virtual caf::expected<grove::gauge> gauge(std::string_view name, std::string_view help)
    = 0;

  /// Declares a family of counters told apart by label `label` ([a-z_][a-z0-9_]*).
  virtual caf::expected<grove::counter_family>
  counter_family(std::string_view name, std::string_view help, std::string_view label)
    = 0;

  /// Declares a family of gauges told apart by label `label`.
  virtual caf::expected<grove::gauge_family>
  gauge_family(std::string_view name, std::string_view help, std::string_view label)
    = 0;

protected:
  /// Implements run_blocking: `work` on the pool, then `then` on the actor (dropped
  /// when the instance is gone).
  virtual void run_blocking_impl(std::function<void()> work, std::function<void()> then)
    = 0;

  // --- h9-owner ---
public:
  /// Makes this plugin the only publisher of events on topics matching `filter`, which
  /// must lie under `$grove/` (e.g. "$grove/mm/out/#"): a publish there by anyone else
  /// (another plugin, grovectl) is refused with errc::not_authorized and counted.
  /// Requests to topics a plugin serves are not events and stay open. Fails with
  /// errc::already_served naming both owners when another owner's filter overlaps
  /// (the kernel owns `$grove/group/#` and `$grove/kernel/#`), errc::invalid_topic
  /// outside `$grove/`; a failure during init or start fails the plugin's load.
  /// Ownership lasts across restarts and reloads while the new instance declares it
  /// again, and ends when the plugin is unloaded. Call from the plugin's actor.
  virtual caf::error own_events(std::string_view filter) = 0;
};

template <class Work, class Then>
void context::run_blocking(Work work, Then then) {
  using result_type = std::invoke_result_t<Work&>;
  auto failed = [](const char* what) {
    return make_error(errc::plugin_failed, std::string{"blocking work threw: "} + what);
  };
  if constexpr (std::is_void_v<result_type>) {
    auto out = std::make_shared<caf::error>();
    run_blocking_impl(
      [w = std::move(work), out, failed]() mutable {
        try {
          w();
        } catch (const std::exception& e) {
          *out = failed(e.what());
        } catch (...) {
          *out = failed("a non-standard exception");
        }
      },
      [t = std::move(then), out]() mutable { t(std::move(*out)); });
  } else {
    using outcome = caf::expected<result_type>;
    auto out = std::make_shared<std::optional<outcome>>();
    run_blocking_impl(
      [w = std::move(work), out, failed]() mutable {
        try {
          out->emplace(w());
        } catch (const std::exception& e) {
          out->emplace(failed(e.what()));
        } catch (...) {
          out->emplace(failed("a non-standard exception"));
        }
      },
      [t = std::move(then), out]() mutable { t(std::move(**out)); });
  }
}

/// The interface a plugin implements. The kernel calls init, then start; on_message
/// for each message; stop before destroying the instance. An exception escaping any of
/// these is caught by the kernel and treated as a failure of the plugin.
class plugin {
public:
  virtual ~plugin();

  /// Prepares the plugin. `ctx` stays valid until stop() returns.
  virtual caf::error init(context& ctx) = 0;

  /// Starts work (subscriptions, timers, threads). Called once after init.
  virtual caf::error start();

  /// Stops work: join threads, stop helper actors. Called before destruction.
  virtual void stop();

  /// Handles one message published on a topic matching a subscription (requests go
  /// to the handlers given to context::serve).
  virtual void on_message(const Envelope& msg) = 0;

  /// Hands over state before a hot reload. Default: unsupported (new instance starts
  /// fresh).
  virtual caf::expected<std::string> snapshot();

  /// Takes over state from a snapshot after a hot reload, between init and start.
  virtual caf::error restore(std::string_view snapshot);

  /// Applies a new, already validated configuration without a restart. Default:
  /// unsupported (the kernel then reloads the plugin with snapshot/restore).
  virtual caf::error reconfigure(const YAML::Node& config);
};

} // namespace grove

/// Exports `cls` (a grove::plugin with a default constructor) as plugin `name`, version
/// `version` (semver string), with configuration schema `schema` (YAML text or nullptr).
#define GROVE_PLUGIN(cls, name, version, schema)                                \
  extern "C" __attribute__((visibility("default")))                             \
  const grove_plugin_descriptor*                                                \
  grove_plugin_entry_v1(void) {                                                 \
    static const grove_plugin_descriptor descriptor = {                         \
      sizeof(grove_plugin_descriptor),                                          \
      GROVE_PLUGIN_ABI_VERSION,                                                 \
      CAF_VERSION,                                                              \
      GOOGLE_PROTOBUF_VERSION,                                                  \
      name,                                                                     \
      version,                                                                  \
      schema,                                                                   \
      []() noexcept -> void* {                                                  \
        try {                                                                   \
          return static_cast<::grove::plugin*>(new cls());                      \
        } catch (...) {                                                         \
          return nullptr;                                                       \
        }                                                                       \
      },                                                                        \
      [](void* ptr) noexcept {                                                  \
        try {                                                                   \
          delete static_cast<::grove::plugin*>(ptr);                            \
        } catch (...) {                                                         \
        }                                                                       \
      },                                                                        \
      GROVE_PLUGIN_ABI_HASH,                                                    \
      GROVE_PLUGIN_ABI_MANIFEST,                                                \
      GROVE_BUILD_INFO,                                                         \
      {}};                                                                      \
    return &descriptor;                                                         \
  }
