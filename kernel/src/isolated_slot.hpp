#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/atom.hpp>

#include "slot.hpp"

namespace grove {

/// Sets the log level of an isolated slot's plugin: `(log_level_atom, std::string)`,
/// told to its child and used for the children it starts next.
using log_level_atom = caf::atom_constant<caf::atom("loglevel")>;

/// What a process-isolated slot needs beyond a slot's setup.
struct isolation_setup {
  /// The groved binary to start as `groved --plugin-host NAME --fd 3`.
  std::filesystem::path exe;
  /// Log level for the child.
  std::string log_level;
  /// Queue capacity inside the child.
  uint32_t queue_capacity = 10000;
};

/// Spawns a slot that runs its plugin in a child process and bridges its bus traffic
/// over a socketpair. It speaks the slot protocol (slot_actor) as spawn_slot()'s actor
/// does, so the host, the bus and the CLI treat both alike. A crash of the child (signal, abort,
/// OOM kill) is logged and the child restarted with back-off; messages for the plugin
/// wait in the slot meanwhile, and those sent but not handled are sent again (except
/// the one in hand at the crash, the likely cause, which is dropped and counted).
slot_actor spawn_isolated_slot(caf::actor_system& sys, slot_setup setup,
                               isolation_setup iso);

} // namespace grove
