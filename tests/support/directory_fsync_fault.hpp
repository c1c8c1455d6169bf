#pragma once

// A directory fsync that fails on demand: a file system that cannot fsync directories
// (EINVAL), or a disk failing under one (EIO), without either. The fsync defined here is
// the one the test program's and libgrove_core's calls bind to (the program's symbols
// come first); it fails only directories, only while a failing_directory_fsync lives.
// Include it in one source file of a test program.

#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace grove::test {

/// The errno a directory's fsync fails with; 0: the real fsync.
inline std::atomic<int> directory_fsync_errno{0};

/// Fails every directory fsync with `code` for its scope.
struct failing_directory_fsync {
  explicit failing_directory_fsync(int code) {
    directory_fsync_errno = code;
  }
  ~failing_directory_fsync() {
    directory_fsync_errno = 0;
  }
  failing_directory_fsync(const failing_directory_fsync&) = delete;
  failing_directory_fsync& operator=(const failing_directory_fsync&) = delete;
};

} // namespace grove::test

extern "C" int fsync(int fd) {
  struct stat st {};
  int code = grove::test::directory_fsync_errno.load();
  if (code != 0 && ::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    errno = code;
    return -1;
  }
  return static_cast<int>(::syscall(SYS_fsync, fd));
}
