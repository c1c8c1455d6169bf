#pragma once

// A function's log file, <write_dir>/logs/functions/<name>.log: its output lines and
// what it logs through the SDK, with size-capped rotation (<name>.log.1 ... .N). A file
// is rotated before a line would take it past the cap, so each file stays within it
// (a single line longer than the cap is cut at it and ends "…truncated"); the oldest
// file goes first. With no rotated files kept the log is truncated instead.

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string_view>

namespace grove::fn {

/// One function's log. Not thread-safe: written from the runtime's actor only.
class function_log {
public:
  /// Appends to `path`, rotating before `max_bytes` and keeping `files` old files.
  function_log(std::filesystem::path path, uint64_t max_bytes, uint32_t files);

  /// Changes the cap and the files kept, live (a group's Lambda logger): rotates now
  /// when the file is already over the new cap, removes rotated files beyond `files` and
  /// cuts the rotated files kept to the new cap (their oldest lines go).
  void set_limits(uint64_t max_bytes, uint32_t files);

  ~function_log();

  function_log(const function_log&) = delete;
  function_log& operator=(const function_log&) = delete;

  /// Writes "<UTC time> <level> <text>\n"; errors of the file system are ignored
  /// (a full disk must not stop the function).
  void write(std::string_view level, std::string_view text);

  /// The file's path.
  const std::filesystem::path& path() const noexcept {
    return path_;
  }

private:
  void open();
  void rotate();

  std::filesystem::path path_;
  uint64_t max_bytes_;
  uint32_t files_;
  std::FILE* file_ = nullptr;
  uint64_t size_ = 0;
};

} // namespace grove::fn
