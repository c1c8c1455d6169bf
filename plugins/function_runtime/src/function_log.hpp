#pragma once

// A function's log file, <write_dir>/logs/functions/<name>.log: its output lines and
// what it logs through the SDK, each line "<UTC time> <level> <text>", kept within its cap
// by the SDK's grove::rotating_log (<name>.log.1 ... .N, each file within the cap, a line
// longer than it cut and ending "…truncated", the oldest file going first; with no
// rotated files kept the log is started again instead).

#include <cstdint>
#include <filesystem>
#include <string_view>

#include "grove/rotating_log.hpp"

namespace grove::fn {

/// One function's log. Not thread-safe: written from the runtime's actor only.
class function_log {
public:
  /// Appends to `path` (created now), rotating before `max_bytes` and keeping `files`
  /// old files.
  function_log(std::filesystem::path path, uint64_t max_bytes, uint32_t files);

  /// Changes the cap and the files kept, live (a group's Lambda logger): rotates now
  /// when the file is already over the new cap, removes rotated files beyond `files` and
  /// cuts the rotated files kept to the new cap (their oldest lines go).
  void set_limits(uint64_t max_bytes, uint32_t files);

  /// Writes "<UTC time> <level> <text>\n"; errors of the file system are ignored
  /// (a full disk must not stop the function).
  void write(std::string_view level, std::string_view text);

  /// The file's path.
  const std::filesystem::path& path() const noexcept {
    return log_.path();
  }

private:
  grove::rotating_log log_;
};

} // namespace grove::fn
