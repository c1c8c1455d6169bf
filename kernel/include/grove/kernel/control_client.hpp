#pragma once

// Typed client of the kernel's control service: what grovectl does over the control
// socket, for plugins on the bus (README.md, "Kernel services"). `$grove/kernel/status`
// answers any plugin; the `$grove/kernel/plugins/*` calls only plugins whose profile
// entry has `may_control_plugins: true` (the deployment, ota and console plugins), and
// never on the caller itself (a plugin cannot wait for its own unload). Changes are live:
// a restart of groved goes back to the image profile, so whoever changes a plugin
// re-applies its change at start.

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "grove/control.pb.h"
#include "grove/rpc.hpp"

namespace grove::control_client {

/// Daemon status, as `grovectl status` shows it: control::Empty in, control::Status out.
inline constexpr std::string_view status_topic = "$grove/kernel/status";

/// Loads and starts a plugin: control::PluginChange (name, optional config) in, the
/// plugin's control::PluginInfo out.
inline constexpr std::string_view load_topic = "$grove/kernel/plugins/load";

/// Stops and unloads a plugin: control::Name in, control::Empty out.
inline constexpr std::string_view unload_topic = "$grove/kernel/plugins/unload";

/// Hot-reloads a plugin with no message lost: control::Reload (name, optional path) in,
/// control::PluginInfo out (its `last_reload` says what happened).
inline constexpr std::string_view reload_topic = "$grove/kernel/plugins/reload";

/// Gives a running plugin a new config (validated against its schema; the old one stays
/// on a refusal): control::PluginChange (name, config) in, control::PluginInfo out.
inline constexpr std::string_view configure_topic = "$grove/kernel/plugins/configure";

/// The typed calls.
using status_rpc = rpc<control::Empty, control::Status>;
using load_rpc = rpc<control::PluginChange, control::PluginInfo>;
using unload_rpc = rpc<control::Name, control::Empty>;
using reload_rpc = rpc<control::Reload, control::PluginInfo>;
using configure_rpc = rpc<control::PluginChange, control::PluginInfo>;

/// The one source the kernel answers with.
inline constexpr std::string_view source = "kernel";

namespace detail {

template <class Rpc, class Req, class F>
void call(context& ctx, std::string_view topic, const Req& req,
          std::chrono::milliseconds timeout, F f) {
  Rpc rpc{std::string{topic}};
  ctx.call(rpc.encode(req), timeout, [f = std::move(f)](caf::expected<Envelope> reply) {
    if (reply && reply->source() != source) {
      f(make_error(errc::not_authorized, "ignored a control reply from '" + reply->source()
                                           + "': only the kernel's is accepted"));
      return;
    }
    f(Rpc::decode(std::move(reply)));
  });
}

} // namespace detail

/// Asks for the daemon status; `f` runs on the plugin's actor.
inline void status(context& ctx, std::chrono::milliseconds timeout,
                   std::function<void(caf::expected<control::Status>)> f) {
  detail::call<status_rpc>(ctx, status_topic, control::Empty{}, timeout, std::move(f));
}

/// Loads plugin `change.name()` with `change.config()` (YAML/JSON; empty: the profile's
/// entry, else the schema's defaults).
inline void load(context& ctx, const control::PluginChange& change,
                 std::chrono::milliseconds timeout,
                 std::function<void(caf::expected<control::PluginInfo>)> f) {
  detail::call<load_rpc>(ctx, load_topic, change, timeout, std::move(f));
}

/// Unloads plugin `name`.
inline void unload(context& ctx, const std::string& name, std::chrono::milliseconds timeout,
                   std::function<void(caf::expected<control::Empty>)> f) {
  control::Name req;
  req.set_name(name);
  detail::call<unload_rpc>(ctx, unload_topic, req, timeout, std::move(f));
}

/// Hot-reloads plugin `name` from `path` (empty: its current library file).
inline void reload(context& ctx, const std::string& name, const std::string& path,
                   std::chrono::milliseconds timeout,
                   std::function<void(caf::expected<control::PluginInfo>)> f) {
  control::Reload req;
  req.set_name(name);
  req.set_path(path);
  detail::call<reload_rpc>(ctx, reload_topic, req, timeout, std::move(f));
}

/// Gives plugin `name` the config `document` (YAML or JSON).
inline void configure(context& ctx, const std::string& name, const std::string& document,
                      std::chrono::milliseconds timeout,
                      std::function<void(caf::expected<control::PluginInfo>)> f) {
  control::PluginChange req;
  req.set_name(name);
  req.set_config(document);
  detail::call<configure_rpc>(ctx, configure_topic, req, timeout, std::move(f));
}

/// Gives plugin `name` its profile's config with `document` (YAML or JSON) merged over
/// it (maps key by key); an empty `document` gives the profile's back.
inline void configure_over_profile(context& ctx, const std::string& name,
                                   const std::string& document,
                                   std::chrono::milliseconds timeout,
                                   std::function<void(caf::expected<control::PluginInfo>)> f) {
  control::PluginChange req;
  req.set_name(name);
  req.set_config(document);
  req.set_over_profile(true);
  detail::call<configure_rpc>(ctx, configure_topic, req, timeout, std::move(f));
}

} // namespace grove::control_client
