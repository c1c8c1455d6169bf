#pragma once

// grove::rotating_log: a log file of lines kept within a size, for plugins that write the
// output of what they run to a file of its own (deployment's component logs,
// function_runtime's function logs, message_manager's broker.log). The file stays open (one write(2) per line, no
// open per line, no fsync per line: a line written is in the kernel's page cache, so a
// crash of groved loses none); before a line would take it past the size it is renamed
// `<path>.1` (the older ones to `.2` … `.N`, the oldest dropped), as Greengrass' nucleus
// rotates a component's log. A file removed or renamed from outside (logrotate, an
// operator's rm) is noticed at the next line and a new one opened. grove_rotating_log, a
// static library a plugin links itself; its types never cross the plugin boundary, so
// it is not part of the plugin ABI (as cgroup.hpp and rate_limiter.hpp).

#include <cstdint>
#include <filesystem>
#include <string_view>

#include <sys/types.h>

#include <caf/error.hpp>

namespace grove {

/// How large a rotating_log's files grow and how many old ones it keeps.
struct rotating_log_limits {
  /// Largest size of each file in bytes, the live one and each rotated one: a line that
  /// would take the live file past it goes to a new file, and a line longer than it is
  /// cut to it (between UTF-8 characters) and ends "…truncated".
  uint64_t max_bytes = 1024 * 1024;
  /// Rotated files kept, `<path>.1` (the newest) … `.N`; 0: none, the live file is
  /// started again empty instead.
  uint32_t files = 9;
};

/// One log file and its rotated files. Every line goes whole into one file (never split
/// across two). Errors come back as caf::error (code system_error, with the path and
/// errno's text); nothing throws but std::bad_alloc. Not thread-safe: one owner (an
/// actor) writes it. Two rotating_logs of one path in one process see each other's
/// rotations (each checks the file at its path before a line), so they may share a file.
class rotating_log {
public:
  /// A log at `path` (its directory made when missing), created with `mode` (less the
  /// umask). Nothing is opened before open() or the first write().
  explicit rotating_log(std::filesystem::path path, rotating_log_limits limits = {},
                        mode_t mode = 0644) noexcept;

  /// Closes the file (no fsync: see the header's comment).
  ~rotating_log();

  rotating_log(const rotating_log&) = delete;
  rotating_log& operator=(const rotating_log&) = delete;

  /// Opens (creates) the file now, when it is not open; the error why not.
  caf::error open();

  /// Appends `line` and a newline (a newline inside `line` is kept: it is one record, never
  /// split across files), rotating first when the live file would pass
  /// `limits().max_bytes`. Reopens the file when it was removed or replaced since the last
  /// line. The error why the line was not written (the next call tries again).
  caf::error write(std::string_view line);

  /// Changes the size and the number of files kept, at once: rotated files beyond the new
  /// number go, the live file over the new size is rotated, and the rotated files kept are
  /// cut to it (their oldest lines go), so the files together stay within
  /// `(files + 1) * max_bytes`.
  caf::error set_limits(rotating_log_limits limits);

  /// Flushes the live file to the disk (fdatasync), for a line that must survive a power
  /// loss; nothing else syncs (not a rotation either: it runs on the owner's thread).
  caf::error sync();

  /// The live file's path.
  const std::filesystem::path& path() const noexcept {
    return path_;
  }

  /// The limits in force.
  const rotating_log_limits& limits() const noexcept {
    return limits_;
  }

  /// The path of rotated file `i` (1: the newest): `<path>.<i>`.
  std::filesystem::path rotated(uint32_t i) const;

private:
  void close() noexcept;
  caf::error rotate();
  void drop_beyond(uint32_t files) const;

  std::filesystem::path path_;
  rotating_log_limits limits_;
  mode_t mode_;
  int fd_ = -1;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

} // namespace grove
