#include "grove/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <string>

#include "grove/errors.hpp"

namespace grove {

namespace fs = std::filesystem;

namespace {

/// Closes a descriptor when it goes out of scope.
struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0)
      ::close(fd);
  }
};

caf::error failed(const fs::path& path, const std::string& step, int code) {
  return make_error(errc::system_error,
                    "cannot write " + path.string() + ": " + step + ": " + std::strerror(code));
}

// Six random letters and digits: the temporary name is taken with O_EXCL, so a leftover or
// a concurrent writer's file only costs another draw.
std::string random_suffix() {
  static constexpr char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device rd;
  std::uniform_int_distribution<size_t> pick{0, sizeof alphabet - 2};
  std::string out(6, '\0');
  for (auto& c : out)
    c = alphabet[pick(rd)];
  return out;
}

} // namespace

caf::error write_file_atomically(const fs::path& path, std::string_view contents,
                                 const write_options& opts) {
  return write_file_atomically(path, {contents}, opts);
}

caf::error write_file_atomically(const fs::path& path,
                                 std::initializer_list<std::string_view> parts,
                                 const write_options& opts) {
  auto name = path.filename().string();
  if (name.empty() || name == "." || name == "..")
    return make_error(errc::system_error, "cannot write " + path.string() + ": not a file name");
  auto dir = path.parent_path();
  if (dir.empty())
    dir = ".";
  // Every step relative to one open directory: a directory renamed or swapped meanwhile
  // cannot split the temporary file from its rename or its fsync.
  fd_guard d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd < 0)
    return failed(path, "open its directory " + dir.string(), errno);
  std::string tmp;
  fd_guard f;
  for (int attempt = 0; attempt < 100 && f.fd < 0; ++attempt) {
    tmp = "." + name + "." + random_suffix();
    f.fd = ::openat(d.fd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0600);
    if (f.fd < 0 && errno != EEXIST)
      break;
  }
  if (f.fd < 0)
    return failed(path, "create " + (dir / tmp).string(), errno);
  auto fail = [&](const std::string& step) {
    int code = errno;
    ::close(f.fd);
    f.fd = -1;
    ::unlinkat(d.fd, tmp.c_str(), 0);
    return failed(path, step, code);
  };
  for (auto text : parts) {
    size_t done = 0;
    while (done < text.size()) {
      auto n = ::write(f.fd, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return fail("write");
      done += static_cast<size_t>(n);
    }
  }
  // The owner first: chown may clear mode bits, and the mode must be exactly `mode`.
  if (opts.owner && ::fchown(f.fd, opts.owner->uid, opts.owner->gid) != 0)
    return fail("fchown");
  if (::fchmod(f.fd, opts.mode) != 0)
    return fail("fchmod");
  if (opts.sync && ::fsync(f.fd) != 0)
    return fail("fsync");
  int closed = ::close(f.fd);
  f.fd = -1;
  if (closed != 0) {
    int code = errno;
    ::unlinkat(d.fd, tmp.c_str(), 0);
    return failed(path, "close", code);
  }
  if (opts.check) {
    if (auto err = opts.check(dir / tmp)) {
      ::unlinkat(d.fd, tmp.c_str(), 0);
      return err;
    }
  }
  if (::renameat(d.fd, tmp.c_str(), d.fd, name.c_str()) != 0) {
    int code = errno;
    ::unlinkat(d.fd, tmp.c_str(), 0);
    return failed(path, "rename " + tmp + " over it", code);
  }
  if (opts.sync && ::fsync(d.fd) != 0)
    return failed(path, "fsync its directory " + dir.string() + " (the file is replaced)",
                  errno);
  return {};
}

caf::error sync_directory(const fs::path& dir) {
  fd_guard d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd < 0 || ::fsync(d.fd) != 0)
    return make_error(errc::system_error,
                      "cannot fsync the directory " + dir.string() + ": " + std::strerror(errno));
  return {};
}

} // namespace grove
