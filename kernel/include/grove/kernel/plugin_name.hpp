#pragma once

#include <string>
#include <string_view>

#include <caf/error.hpp>

namespace grove {

/// Longest plugin name.
constexpr size_t max_plugin_name_size = 64;

/// Checks a plugin name: 1-64 characters of [A-Za-z0-9_-]. The one rule for the image
/// profile, grovectl and the control server: a name becomes part of a file name
/// (lib<name>.so, plugins/<name>/) and of log lines, so `/`, `..`, newlines and
/// control characters never pass. Returns errc::invalid_config naming the offender.
caf::error validate_plugin_name(std::string_view name);

/// `text` in double quotes with control and non-ASCII bytes as \xNN escapes, so
/// it can go into a log line or an error message as it is.
std::string quoted(std::string_view text);

} // namespace grove
