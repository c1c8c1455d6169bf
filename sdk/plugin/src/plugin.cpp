#include "grove/plugin.hpp"

namespace grove {

// Out-of-line so the vtables live in the Grove library, never in a plugin.
context::~context() = default;

plugin::~plugin() = default;

caf::error plugin::start() {
  return {};
}

void plugin::stop() {
  // nop
}

caf::expected<std::string> plugin::snapshot() {
  return make_error(errc::unsupported, "plugin does not hand over state");
}

caf::error plugin::restore(std::string_view) {
  return make_error(errc::unsupported, "plugin does not take over state");
}

caf::error plugin::reconfigure(const YAML::Node&) {
  return make_error(errc::unsupported, "plugin cannot change configuration live");
}

} // namespace grove
