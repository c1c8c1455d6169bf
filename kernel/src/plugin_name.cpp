// Plugin names: the rule shared by the profile, grovectl and the control server. Part
// of grove_framing, so grovectl checks a name without linking the kernel.

#include "grove/kernel/plugin_name.hpp"

#include <cstdio>

#include "grove/errors.hpp"

namespace grove {

namespace {

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
         || c == '_' || c == '-';
}

} // namespace

caf::error validate_plugin_name(std::string_view name) {
  bool valid = !name.empty() && name.size() <= max_plugin_name_size;
  for (char c : name)
    valid = valid && name_char(c);
  if (valid)
    return {};
  // Long garbage is cut: the message stays one short line.
  auto shown = name.substr(0, 2 * max_plugin_name_size);
  return make_error(errc::invalid_config,
                    "invalid plugin name " + quoted(shown)
                      + (shown.size() < name.size() ? "..." : "")
                      + ": plugin names are 1-64 characters of [A-Za-z0-9_-]");
}

std::string quoted(std::string_view text) {
  std::string out = "\"";
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20 || c >= 0x7f) {
      char buf[5];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  out += '"';
  return out;
}

} // namespace grove
