#pragma once

// The in-process kernel the C++ benchmarks start: its profile in a scratch directory.

#include <filesystem>

#include "grove/kernel/config.hpp"

namespace grove::bench {

/// The profile of a bench kernel in `dir`: profile.yaml, state under var/ (the control
/// socket var/run/control.sock), plugins from `plugin_dir` (dir/plugins when empty),
/// warnings and worse logged.
inline image_profile bench_profile(const std::filesystem::path& dir,
                                   std::filesystem::path plugin_dir = {}) {
  image_profile profile;
  profile.file = dir / "profile.yaml";
  profile.write_dir = dir / "var";
  profile.plugin_dir = plugin_dir.empty() ? dir / "plugins" : std::move(plugin_dir);
  profile.control_socket = dir / "var" / "run" / "control.sock";
  profile.log_level = "warn";
  return profile;
}

} // namespace grove::bench
