#pragma once

#include <memory>
#include <string>
#include <utility>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/behavior.hpp>
#include <caf/message_handler.hpp>
#include <caf/replies_to.hpp>
#include <caf/result.hpp>
#include <caf/skip.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_behavior.hpp>
#include <yaml-cpp/yaml.h>

#include "grove/envelope.pb.h"

namespace grove {

struct plugin_library;
/// A plugin library, opened and checked by the host (defined in plugin_host.hpp).
using plugin_library_ptr = std::shared_ptr<plugin_library>;

/// Creates and starts the plugin (slot protocol).
using init_atom = caf::atom_constant<caf::atom("init")>;
/// Stops the plugin for good (slot protocol).
using stop_atom = caf::atom_constant<caf::atom("stop")>;
/// Swaps in a new build (slot protocol).
using reload_atom = caf::atom_constant<caf::atom("reload")>;
/// Applies a new configuration (slot protocol).
using reconf_atom = caf::atom_constant<caf::atom("reconf")>;

/// What a hot reload swaps in: a library (the same build or a new one) and a
/// configuration already validated against that library's schema.
struct reload_request {
  /// The library to instantiate; opened and checked by the host.
  plugin_library_ptr lib;
  /// Validated configuration for the new instance.
  YAML::Node config;
};

/// A configuration-only change (wrapped: CAF would take a bare YAML::Node for a list).
struct reconfig_request {
  /// Validated configuration.
  YAML::Node config;
};

/// The slot protocol, declared once: what the plugin host and the bus say to a slot,
/// whichever kind (in process: spawn_slot(), in a child process:
/// spawn_isolated_slot()), and what the slot answers.
/// - `init`: create and start the plugin; the error text, empty on success.
/// - `stop`: stop it for good; true.
/// - `(reload, reload_request)`: swap in a build; whether it worked and what happened.
/// - `(reconf, reconfig_request)`: apply a configuration (a same-build reload when the
///   plugin cannot reconfigure); same answer.
/// - `Envelope`: a bus message, or a request (sent with `request`): then the slot
///   answers with the reply Envelope or an error, through a response promise.
/// Every state of both slot actors implements all of it, checked at compile time by
/// slot_protocol_handlers(); what a state cannot take yet it skips (leaves queued).
using slot_actor = caf::typed_actor<
  caf::replies_to<init_atom>::with<std::string>, caf::replies_to<stop_atom>::with<bool>,
  caf::replies_to<reload_atom, reload_request>::with<bool, std::string>,
  caf::replies_to<reconf_atom, reconfig_request>::with<bool, std::string>,
  caf::reacts_to<Envelope>>;

/// One state's handlers for the whole slot protocol, as a message handler to combine
/// (`or_else`) with the slot kind's own messages. Does not compile unless `fs` are
/// exactly slot_actor's interface: one handler per message, with its reply type.
template <class... Fs>
caf::message_handler slot_protocol_handlers(Fs... fs) {
  slot_actor::behavior_type checked{std::move(fs)...};
  return caf::message_handler{checked.unbox().as_behavior_impl()};
}

/// Handlers that leave a protocol message queued for a later state (caf::skip).
namespace slot_skip {
/// Skips `init`.
inline constexpr auto init = [](init_atom) -> caf::result<std::string> { return caf::skip; };
/// Skips `stop`.
inline constexpr auto stop = [](stop_atom) -> caf::result<bool> { return caf::skip; };
/// Skips a reload.
inline constexpr auto reload = [](reload_atom,
                                  reload_request&) -> caf::result<bool, std::string> {
  return caf::skip;
};
/// Skips a reconfiguration.
inline constexpr auto reconf = [](reconf_atom,
                                  reconfig_request&) -> caf::result<bool, std::string> {
  return caf::skip;
};
/// Skips a bus message or request.
inline constexpr auto envelope = [](Envelope&) -> caf::result<void> { return caf::skip; };
} // namespace slot_skip

} // namespace grove

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(grove::reload_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(grove::reconfig_request)
