// grove::to_string(errc): apart from errors.cpp (make_error, describe: CAF) so code that
// needs only the codes' names, such as the function SDK through the CAF-free framing
// core, links no libcaf_core.

#include "grove/errors.hpp"

namespace grove {

const char* to_string(errc x) noexcept {
  switch (x) {
    case errc::none: return "none";
    case errc::invalid_config: return "invalid_config";
    case errc::invalid_topic: return "invalid_topic";
    case errc::load_failed: return "load_failed";
    case errc::abi_mismatch: return "abi_mismatch";
    case errc::duplicate_plugin: return "duplicate_plugin";
    case errc::unknown_plugin: return "unknown_plugin";
    case errc::init_failed: return "init_failed";
    case errc::plugin_failed: return "plugin_failed";
    case errc::plugin_broken: return "plugin_broken";
    case errc::no_route: return "no_route";
    case errc::timeout: return "timeout";
    case errc::queue_full: return "queue_full";
    case errc::too_large: return "too_large";
    case errc::malformed: return "malformed";
    case errc::unsupported: return "unsupported";
    case errc::system_error: return "system_error";
    case errc::invalid_state: return "invalid_state";
    case errc::not_authorized: return "not_authorized";
    case errc::already_served: return "already_served";
    case errc::conflict: return "conflict";
  }
  return "unknown";
}

} // namespace grove
