#pragma once

// The web application (web/*), compiled into the plugin by embed.cmake: a reload of the
// plugin swaps the pages with the code that serves them, and nothing is installed beside
// the .so that could drift from it.

#include <string_view>

namespace grove::console {

/// One file of the web application.
struct asset {
  /// URL path, e.g. "/app.js".
  std::string_view path;
  /// Its Content-Type.
  std::string_view content_type;
  /// Its bytes.
  std::string_view body;
};

/// The file served at `path`, or nullptr.
const asset* find_asset(std::string_view path);

} // namespace grove::console
