#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include "grove/kernel/bus.hpp"
#include "grove/kernel/config.hpp"
#include "grove/kernel/plugin_host.hpp"
#include "grove/kernel/slot_protocol.hpp"

namespace spdlog {
class logger;
}

namespace grove {

/// A slot's own messages, besides the slot protocol (slot_protocol.hpp).
using timer_atom = caf::atom_constant<caf::atom("timer")>;
using fail_atom = caf::atom_constant<caf::atom("fail")>;
using restart_atom = caf::atom_constant<caf::atom("restart")>;
using reply_atom = caf::atom_constant<caf::atom("reply")>;
using resp_atom = caf::atom_constant<caf::atom("resp")>;
using post_atom = caf::atom_constant<caf::atom("post")>;

/// A function posted to a slot (context::post, run_blocking). Holds the plugin library
/// open until the function, plugin code, is gone (members die in reverse order).
struct posted_call {
  /// The library the function's code lives in.
  plugin_library_ptr lib;
  /// The function.
  std::function<void()> fn;
};
using served_atom = caf::atom_constant<caf::atom("served")>;
using unserved_atom = caf::atom_constant<caf::atom("unserved")>;

/// Everything a slot needs; fixed for the slot's life except where noted.
struct slot_setup {
  /// Plugin name.
  std::string name;
  /// The library the slot instantiates (replaced by a reload).
  plugin_library_ptr lib;
  /// Validated configuration. Swapped as a pointer: assigning YAML::Node objects
  /// rebinds shared node memory, which would change the old copy too.
  std::shared_ptr<const YAML::Node> config;
  /// <write_dir>/plugins/<name>/.
  std::filesystem::path state_dir;
  /// The plugin's logger.
  std::shared_ptr<spdlog::logger> log;
  /// Restart policy.
  restart_policy restart;
  /// Time for timers and back-off; null = CAF's clock (real time).
  std::shared_ptr<kernel_clock> clock;
  /// The bus.
  bus* bus_ptr = nullptr;
  /// Status shared with the host.
  std::shared_ptr<slot_status> status;
  /// The slot's endpoint; set by the host after spawning, before `init`.
  std::shared_ptr<endpoint_ptr> ep;
  /// Sources the plugin may set besides its name (plugin_spec::may_claim).
  std::vector<std::string> may_claim;
};

/// Applies the source rule to an envelope a plugin sends (publish or request): an
/// empty source becomes the plugin's name; another one must be granted by
/// `setup.may_claim`, else the claim is counted in the status, logged and refused
/// with errc::not_authorized. Thread-safe.
caf::error authorize_source(Envelope& msg, const std::string& name,
                            const std::vector<std::string>& may_claim,
                            slot_status& status, spdlog::logger& log);

/// Publishes `msg` for plugin `name` (bus::publish), logging a refusal (ownership,
/// payload limit) the first ten times and every thousandth after. Thread-safe.
caf::expected<publish_result> publish_as(bus& b, Envelope msg, const std::string& name,
                                         spdlog::logger& log);

/// authorize_source for the plugin of `setup`.
inline caf::error authorize_source(Envelope& msg, const slot_setup& setup) {
  return authorize_source(msg, setup.name, setup.may_claim, *setup.status, *setup.log);
}

/// The current UTC time as "YYYY-MM-DDTHH:MM:SSZ".
std::string now_iso8601();

/// Logs what `failures` decided after a plugin's failure (both slot kinds): marked
/// broken for good, or restarting after the back-off.
void log_failure_decision(spdlog::logger& log, const restart_policy& policy,
                          const failure_tracker::decision& d);

/// Spawns a slot that runs its plugin in this process; it speaks the slot protocol
/// (slot_actor).
slot_actor spawn_slot(caf::actor_system& sys, slot_setup setup);

} // namespace grove

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(grove::posted_call)
