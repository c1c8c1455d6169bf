#include "file_watch.hpp"

#include <cstring>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

namespace grove {

file_watch::file_watch(const std::filesystem::path& file)
  : name_(file.filename().string()) {
  wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  inotify_ = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (inotify_ < 0)
    return;
  auto dir = file.parent_path();
  if (dir.empty())
    dir = ".";
  // CLOSE_WRITE: written in place and closed (not each partial write); MOVED_TO:
  // renamed over the file.
  if (::inotify_add_watch(inotify_, dir.c_str(), IN_CLOSE_WRITE | IN_MOVED_TO) < 0) {
    ::close(inotify_);
    inotify_ = -1;
  }
}

file_watch::~file_watch() {
  if (inotify_ >= 0)
    ::close(inotify_);
  if (wake_ >= 0)
    ::close(wake_);
}

bool file_watch::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (stopped_)
      return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return true;
    pollfd fds[2] = {{wake_, POLLIN, 0}, {inotify_, POLLIN, 0}};
    int n = ::poll(fds, inotify_ >= 0 ? 2 : 1, static_cast<int>(left.count()));
    if (stopped_)
      return false;
    if (n > 0 && (fds[1].revents & POLLIN) && drain())
      return true;
    // Anything else (another file of the directory, EINTR): wait on until the deadline.
  }
}

bool file_watch::drain() {
  alignas(inotify_event) char buf[4096];
  bool hit = false;
  for (;;) {
    auto n = ::read(inotify_, buf, sizeof buf);
    if (n <= 0)
      return hit;
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      if ((ev->mask & IN_Q_OVERFLOW)
          || (ev->len > 0 && std::strcmp(ev->name, name_.c_str()) == 0))
        hit = true;
      p += sizeof(inotify_event) + ev->len;
    }
  }
}

void file_watch::stop() {
  stopped_ = true;
  if (wake_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] auto r = ::write(wake_, &one, sizeof one);
  }
}

} // namespace grove
