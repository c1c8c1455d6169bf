#include "notify_relay.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace grove::ota {

notify_relay::~notify_relay() {
  {
    std::lock_guard guard{mtx_};
    stop_ = true;
  }
  if (thread_.joinable())
    thread_.join();
  if (fd_ >= 0)
    ::close(fd_);
}

std::string notify_relay::start() {
  auto sock = std::getenv("NOTIFY_SOCKET");
  if (sock == nullptr || *sock == '\0')
    return {};
  uint64_t usec = 0;
  // > 0 only when WATCHDOG_USEC is set for this process (the unit's main process).
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    period_ = std::chrono::microseconds{usec / 2};
    usec_text_ = std::to_string(usec);
  }
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return std::string{"notify relay: socket: "} + std::strerror(errno);
  // Abstract: nothing on disk to clean up after a kill -9, per network namespace.
  name_ = "@grove-ota-watchdog-" + std::to_string(::getpid());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name_.data() + 1, name_.size() - 1);
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name_.size());
  int one = 1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0
      || ::setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0) {
    auto why = std::string{"notify relay: bind "} + name_ + ": " + std::strerror(errno);
    ::close(fd);
    return why;
  }
  fd_ = fd;
  thread_ = std::thread{[this] { run(); }};
  return {};
}

std::vector<std::string> notify_relay::child_env() const {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view v{*e};
    if (!v.starts_with("NOTIFY_SOCKET=") && !v.starts_with("WATCHDOG_USEC=")
        && !v.starts_with("WATCHDOG_PID="))
      env.emplace_back(v);
  }
  if (fd_ >= 0) {
    env.push_back("NOTIFY_SOCKET=" + name_);
    if (!usec_text_.empty())
      env.push_back("WATCHDOG_USEC=" + usec_text_);
  }
  return env;
}

void notify_relay::set_child(pid_t pid, clock::duration self_feed) {
  child_ = pid;
  std::lock_guard guard{mtx_};
  feed_until_ = std::max(feed_until_, clock::now() + self_feed);
  until_ready_ = true;
}

void notify_relay::feed_until(clock::time_point until) {
  std::lock_guard guard{mtx_};
  feed_until_ = until;
  until_ready_ = false;
}

void notify_relay::status(const std::string& text) {
  send("STATUS=" + text);
}

void notify_relay::stopping() {
  {
    std::lock_guard guard{mtx_};
    if (stop_)
      return;
    stop_ = true;
  }
  send("STOPPING=1");
  if (thread_.joinable())
    thread_.join();
}

void notify_relay::send(const std::string& msg) {
  if (fd_ >= 0)
    sd_notify(0, msg.c_str());
}

void notify_relay::on_datagram(const char* data, size_t n, pid_t sender) {
  if (sender == 0 || sender != child_.load())
    return; // a stale groved, or not groved at all
  std::string out;
  std::string_view text{data, n};
  while (!text.empty()) {
    auto nl = text.find('\n');
    auto line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    // STOPPING=1 is not relayed: groved stops for an update and the unit goes on; the
    // watchdog says STOPPING=1 when the unit stops.
    if (line == "READY=1") {
      std::lock_guard guard{mtx_};
      if (until_ready_)
        feed_until_ = clock::now();
    }
    if (line == "READY=1" || line == "WATCHDOG=1" || line.starts_with("STATUS="))
      out.append(line).push_back('\n');
  }
  if (!out.empty())
    send(out);
}

void notify_relay::run() {
  auto last_feed = clock::now() - std::chrono::hours{1};
  for (;;) {
    {
      std::lock_guard guard{mtx_};
      if (stop_)
        return;
      auto now = clock::now();
      // The watchdog's own feed while groved starts or is on trial.
      if (period_.count() > 0 && now < feed_until_ && now - last_feed >= period_) {
        sd_notify(0, "WATCHDOG=1");
        last_feed = now;
      }
    }
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0)
      continue;
    char buf[4096];
    union {
      cmsghdr align;
      char space[CMSG_SPACE(sizeof(ucred))];
    } control{};
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = sizeof control.space;
    auto n = ::recvmsg(fd_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n <= 0)
      continue;
    pid_t sender = 0;
    for (auto* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
        ucred cred{};
        std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
        sender = cred.pid;
      }
    on_datagram(buf, static_cast<size_t>(n), sender);
  }
}

} // namespace grove::ota
