#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>

namespace grove {

/// Wakes a watcher thread when a file may have changed: inotify on the file's directory
/// (so a file replaced by rename, as editors and deploy tools do, is seen too), with the
/// timeout as a fallback for what inotify cannot see (a symlinked directory swapped, a
/// network file system, inotify unavailable). The caller compares contents: an event is
/// a hint, never proof of a change.
class file_watch {
public:
  /// Watches `file`; without inotify, wait() only times out.
  explicit file_watch(const std::filesystem::path& file);

  ~file_watch();

  file_watch(const file_watch&) = delete;
  file_watch& operator=(const file_watch&) = delete;

  /// Blocks until `file` was written or renamed into place, or `timeout` passes: true.
  /// False once stop() was called. One thread waits at a time.
  bool wait(std::chrono::milliseconds timeout);

  /// Makes wait() return false, now and from then on; callable from any thread.
  void stop();

private:
  /// Reads pending events; true if one names the file (or events were lost).
  bool drain();

  std::string name_;
  int inotify_ = -1;
  int wake_ = -1;
  std::atomic<bool> stopped_{false};
};

} // namespace grove
