#pragma once
// The address of a Unix socket whose path may be longer than sun_path (108 bytes with its
// NUL): the route socket lives in the broker's home, wherever groved's write dir (or
// run_as_home_base) is. Header-only, for both ends (the broker plugin binds, groved's
// route_reader connects) and both without CAF.
//
// A path that fits is used as it is. A longer one goes through its directory: opened
// O_PATH, it is reached as "/proc/self/fd/<n>/<name>" (Linux resolves the magic link to
// the directory itself, for the process's own descriptors even after it dropped root),
// and the descriptor is closed once bind() or connect() is done.
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace grove::broker {

/// sockaddr_un for a path of any length (see above). Holds the directory's descriptor
/// while it lives: bind or connect before it goes.
class unix_address {
public:
  /// The address of `path`; ok() is false (errno set) when it cannot be made: the last
  /// part alone is too long, or the directory cannot be opened.
  explicit unix_address(const std::string& path) {
    addr_.sun_family = AF_UNIX;
    if (path.size() < sizeof addr_.sun_path) {
      std::memcpy(addr_.sun_path, path.data(), path.size());
      ok_ = true;
      return;
    }
    auto slash = path.rfind('/');
    auto dir = slash == std::string::npos ? std::string{"."}
                                          : (slash == 0 ? std::string{"/"} : path.substr(0, slash));
    auto name = slash == std::string::npos ? path : path.substr(slash + 1);
    dir_fd_ = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd_ < 0) return;
    auto via = "/proc/self/fd/" + std::to_string(dir_fd_) + "/" + name;
    if (name.empty() || via.size() >= sizeof addr_.sun_path) {
      errno = ENAMETOOLONG;
      return;
    }
    std::memcpy(addr_.sun_path, via.data(), via.size());
    ok_ = true;
  }

  ~unix_address() {
    if (dir_fd_ >= 0) ::close(dir_fd_);
  }

  unix_address(const unix_address&) = delete;
  unix_address& operator=(const unix_address&) = delete;

  /// True when the address was made.
  bool ok() const noexcept { return ok_; }

  /// For bind() and connect().
  const sockaddr* get() const noexcept { return reinterpret_cast<const sockaddr*>(&addr_); }

  /// Its size for bind() and connect().
  socklen_t size() const noexcept { return sizeof addr_; }

private:
  sockaddr_un addr_{};
  int dir_fd_ = -1;
  bool ok_ = false;
};

}  // namespace grove::broker
