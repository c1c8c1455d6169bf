#include "grove/rotating_log.hpp"

#include "grove/errors.hpp"
#include "grove/file.hpp"
#include "grove/utf8.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace grove {

namespace {

caf::error os_error(const char* what, const std::filesystem::path& path, int err) {
  return make_error(errc::system_error,
                    std::string{what} + " " + path.string() + ": " + std::strerror(err));
}

/// Cuts `file` to its newest whole lines within `cap` bytes (through a temporary file
/// renamed over it, so a failure leaves the old one); nothing fits: removed.
caf::error trim_to(const std::filesystem::path& file, uint64_t cap) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) <= cap)
    return {};
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return os_error("cannot read", file, errno);
  std::string tail(cap, '\0');
  auto n = ::pread(fd, tail.data(), cap, static_cast<off_t>(st.st_size - cap));
  int err = errno;
  ::close(fd);
  if (n < 0)
    return os_error("cannot read", file, err);
  tail.resize(static_cast<size_t>(n));
  // The first line is cut at its start: it goes.
  auto nl = tail.find('\n');
  tail.erase(0, nl == std::string::npos ? tail.size() : nl + 1);
  if (tail.empty()) {
    std::error_code ec;
    std::filesystem::remove(file, ec);
    return {};
  }
  return write_file_atomically(file, tail, {.mode = st.st_mode & 07777});
}

} // namespace

rotating_log::rotating_log(std::filesystem::path path, rotating_log_limits limits,
                           mode_t mode) noexcept
  : path_(std::move(path)), limits_(limits), mode_(mode) {
}

rotating_log::~rotating_log() {
  close();
}

void rotating_log::close() noexcept {
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = -1;
}

std::filesystem::path rotating_log::rotated(uint32_t i) const {
  return std::filesystem::path{path_.string() + "." + std::to_string(i)};
}

caf::error rotating_log::open() {
  if (fd_ >= 0)
    return {};
  std::error_code ec;
  std::filesystem::create_directories(path_.parent_path(), ec);
  // O_NOFOLLOW: a log may sit in a directory another user owns (the broker's), who must
  // not point it at a file of groved's.
  int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode_);
  if (fd < 0)
    return os_error("cannot open", path_, errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return os_error("cannot stat", path_, err);
  }
  fd_ = fd;
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  return {};
}

void rotating_log::drop_beyond(uint32_t files) const {
  // Left by a larger `files` (now, or by an earlier run), gaps and all: every
  // `<name>.<n>` beside the log with n > files.
  auto prefix = path_.filename().string() + ".";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator{path_.parent_path(), ec}) {
    auto name = entry.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0)
      continue;
    auto digits = std::string_view{name}.substr(prefix.size());
    if (digits.size() > 9 || digits[0] == '0'
        || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    if (static_cast<uint32_t>(std::stoul(std::string{digits})) > files)
      ::unlink(entry.path().c_str());
  }
}

caf::error rotating_log::rotate() {
  // No fdatasync: it would stall the owner's thread (an actor) on slow flash; a caller
  // that wants the lines on the disk calls sync().
  close();
  caf::error result;
  if (limits_.files == 0) {
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
      result = os_error("cannot remove", path_, errno);
  } else {
    ::unlink(rotated(limits_.files).c_str());
    for (uint32_t i = limits_.files; i > 1; --i)
      ::rename(rotated(i - 1).c_str(), rotated(i).c_str()); // a missing one: a gap, fine
    if (::rename(path_.c_str(), rotated(1).c_str()) != 0 && errno != ENOENT) {
      result = os_error("cannot rotate", path_, errno);
      // The cap holds even so: the file starts again, its lines lost, not kept growing.
      ::truncate(path_.c_str(), 0);
    }
    drop_beyond(limits_.files);
  }
  // Reopened even after an error: the line still goes somewhere.
  auto opened = open();
  return result ? result : opened;
}

caf::error rotating_log::write(std::string_view text) {
  // A line longer than the cap is cut at it, marked, so no file outgrows the cap (not
  // inside a UTF-8 sequence).
  static constexpr std::string_view marker = "\u2026truncated";
  std::string line;
  if (text.size() + 1 > limits_.max_bytes && limits_.max_bytes > marker.size() + 1) {
    line.reserve(limits_.max_bytes);
    line.append(text.substr(0, utf8_cut_point(text, limits_.max_bytes - marker.size() - 1)));
    line += marker;
  } else {
    line.reserve(text.size() + 1);
    line.append(text);
  }
  line += '\n';
  // The file at the path: still ours? Removed or renamed from outside: a new one. Its
  // size is the file's own, so another writer's lines and an outside truncation count.
  struct stat st {};
  if (fd_ >= 0
      && (::stat(path_.c_str(), &st) != 0 || st.st_dev != dev_ || st.st_ino != ino_))
    close();
  if (fd_ < 0) {
    if (auto err = open())
      return err;
    if (::fstat(fd_, &st) != 0)
      return os_error("cannot stat", path_, errno);
  }
  auto size = static_cast<uint64_t>(st.st_size);
  caf::error rotation; // a rotation that failed: the line still goes to the file open
  if (size > 0 && size + line.size() > limits_.max_bytes)
    if (rotation = rotate(); fd_ < 0)
      return rotation;
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    auto n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return os_error("cannot write", path_, n < 0 ? errno : EIO);
    p += n;
    left -= static_cast<size_t>(n);
  }
  return rotation;
}

caf::error rotating_log::set_limits(rotating_log_limits limits) {
  limits_ = limits;
  drop_beyond(limits_.files);
  caf::error result;
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) > limits_.max_bytes)
    result = rotate();
  // The rotated files kept were cut at the old cap: each is cut to the new one (its
  // oldest lines go), so the files together stay within (files + 1) * cap.
  for (uint32_t i = 1; i <= limits_.files; ++i)
    if (auto err = trim_to(rotated(i), limits_.max_bytes); err && !result)
      result = std::move(err);
  return result;
}

caf::error rotating_log::sync() {
  if (fd_ >= 0 && ::fdatasync(fd_) != 0)
    return os_error("cannot sync", path_, errno);
  return {};
}

} // namespace grove
