// Compiled, not run, by ctest: the slot protocol is checked at compile time. Each state
// of both slot actors builds its protocol handlers with slot_protocol_handlers(), which
// must not compile when a handler is missing or answers with the wrong type.
// SLOT_CASE_COMPLETE must compile; SLOT_CASE_MISSING and SLOT_CASE_WRONG_REPLY must not.

#include "grove/kernel/slot_protocol.hpp"

namespace grove {

/// One state's protocol handlers, complete or broken on purpose (see above).
caf::message_handler some_state() {
  return slot_protocol_handlers(
    [](init_atom) -> std::string { return {}; }, slot_skip::envelope, slot_skip::reload,
#if !defined(SLOT_CASE_MISSING)
    [](stop_atom) { return true; },
#endif
#if defined(SLOT_CASE_WRONG_REPLY)
    // The reply must be (bool, std::string).
    [](reconf_atom, reconfig_request&) -> bool { return false; }
#else
    slot_skip::reconf
#endif
  );
}

} // namespace grove
