#include "grove/file.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
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

constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
constexpr size_t suffix_size = 6;
// Leads the message of a directory fsync that failed after the rename: at the start, so
// that no path in the rest of the message can make another error look like it.
constexpr std::string_view not_durable = "replaced, but not yet durable: ";

// EINVAL, EROFS, ENOTSUP: the file system cannot fsync a directory; SQLite takes that as
// done, so do we.
bool directory_sync_done(int code) {
  return code == EINVAL || code == EROFS || code == ENOTSUP;
}

// Six random letters and digits: the temporary name is taken with O_EXCL, so a leftover or
// a concurrent writer's file only costs another draw. std::random_device may throw (no
// entropy source): a draw from the clock and the pid then, O_EXCL still guards the name.
std::string random_suffix() {
  std::uniform_int_distribution<size_t> pick{0, sizeof alphabet - 2};
  std::string out(suffix_size, '\0');
  try {
    std::random_device rd;
    for (auto& c : out)
      c = alphabet[pick(rd)];
  } catch (...) {
    std::minstd_rand gen(static_cast<unsigned>(
      std::chrono::steady_clock::now().time_since_epoch().count() ^ ::getpid()));
    for (auto& c : out)
      c = alphabet[pick(gen)];
  }
  return out;
}

// The process's umask without changing it: umask(2) can only read by setting, which
// races with other threads creating files. Linux reports it in /proc/self/status (4.7+).
mode_t current_umask() {
  if (std::FILE* in = std::fopen("/proc/self/status", "re")) {
    char line[256];
    std::optional<mode_t> mask;
    while (!mask && std::fgets(line, sizeof line, in))
      if (std::strncmp(line, "Umask:", 6) == 0)
        mask = static_cast<mode_t>(std::strtoul(line + 6, nullptr, 8));
    std::fclose(in);
    if (mask)
      return *mask;
  }
  // No /proc: assume groved's own 077 rather than set-and-restore umask(2), which two
  // threads doing at once could leave changed for good.
  return 077;
}

// A writer killed between create and rename leaves `.<name>.XXXXXX`; a temporary file
// older than a minute is no live writer's (a write takes far less), so the next writer of
// the same name removes it. Only that exact pattern, only regular files, and only files
// this process could have left: its own or the owner it gives its files (in a shared
// sticky directory another user's file is none of ours).
void remove_stale(int dir_fd, const std::string& name, std::optional<uid_t> given_to) {
  int fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return;
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return;
  }
  auto prefix = "." + name + ".";
  auto now = ::time(nullptr);
  while (auto* e = ::readdir(d)) {
    std::string_view entry = e->d_name;
    if (entry.size() != prefix.size() + suffix_size || !entry.starts_with(prefix))
      continue;
    auto suffix = entry.substr(prefix.size());
    if (suffix.find_first_not_of(std::string_view{alphabet, sizeof alphabet - 1})
        != std::string_view::npos)
      continue;
    struct stat st {};
    if (::fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)
        && (st.st_uid == ::geteuid() || (given_to && st.st_uid == *given_to))
        && now - st.st_mtime > 60)
      ::unlinkat(dir_fd, e->d_name, 0);
  }
  ::closedir(d);
}

} // namespace

bool replaced_not_durable(const caf::error& err) {
  return err && err == errc::system_error && message_of(err).starts_with(not_durable);
}

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
  // Unasked, the mode is the replaced file's permissions (never its setuid, setgid or
  // sticky bit: the content is new), else what open(2) would give a new file.
  mode_t mode = 0;
  if (opts.mode) {
    mode = *opts.mode;
  } else {
    struct stat st {};
    if (::fstatat(d.fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
      mode = st.st_mode & 0777;
    else
      mode = 0666 & ~current_umask();
  }
  remove_stale(d.fd, name,
               opts.owner ? std::optional<uid_t>{opts.owner->uid} : std::nullopt);
  std::string tmp;
  fd_guard f;
  for (int attempt = 0; attempt < 100 && f.fd < 0; ++attempt) {
    tmp = "." + name + "." + random_suffix();
    f.fd = ::openat(d.fd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0600);
    if (f.fd < 0 && errno != EEXIST)
      break;
  }
  if (f.fd < 0) {
    int code = errno;
    return failed(path, "create " + (dir / tmp).string(), code);
  }
  // Until the rename the temporary file goes on every way out, a throwing `check` too.
  struct temp_guard {
    int dir_fd;
    const std::string& name;
    bool armed = true;
    ~temp_guard() {
      if (armed)
        ::unlinkat(dir_fd, name.c_str(), 0);
    }
  } temp{d.fd, tmp};
  for (auto text : parts) {
    size_t done = 0;
    while (done < text.size()) {
      auto n = ::write(f.fd, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return failed(path, "write", n == 0 ? EIO : errno);
      done += static_cast<size_t>(n);
    }
  }
  // The owner first: chown may clear mode bits, and the mode must be exactly `mode`.
  if (opts.owner && ::fchown(f.fd, opts.owner->uid, opts.owner->gid) != 0)
    return failed(path, "fchown", errno);
  if (::fchmod(f.fd, mode) != 0)
    return failed(path, "fchmod", errno);
  // The check before the fsync: a refused file costs no disk flush. It reads the file by
  // name, which sees the written data without an fsync.
  if (opts.check)
    if (auto err = opts.check(dir / tmp))
      return err;
  if (opts.sync && ::fsync(f.fd) != 0)
    return failed(path, "fsync", errno);
  int closed = ::close(f.fd);
  f.fd = -1;
  if (closed != 0)
    return failed(path, "close", errno);
  if (::renameat(d.fd, tmp.c_str(), d.fd, name.c_str()) != 0) {
    int code = errno;
    return failed(path, "rename " + tmp + " over it", code);
  }
  temp.armed = false;
  // Any failure here but a file system that cannot: the file is replaced, its rename may
  // not survive a crash; replaced_not_durable() tells it from a failure that kept the old
  // file.
  if (opts.sync && ::fsync(d.fd) != 0) {
    int code = errno;
    if (!directory_sync_done(code))
      return make_error(errc::system_error,
                        std::string{not_durable} + path.string() + ": fsync its directory "
                          + dir.string() + ": " + std::strerror(code));
  }
  return {};
}

caf::error sync_directory(const fs::path& dir) {
  fd_guard d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  int code = 0;
  if (d.fd < 0)
    code = errno;
  else if (::fsync(d.fd) != 0 && !directory_sync_done(errno))
    code = errno;
  if (code != 0)
    return make_error(errc::system_error,
                      "cannot fsync the directory " + dir.string() + ": " + std::strerror(code));
  return {};
}

} // namespace grove
