#include "route_reader.hpp"

#include <cerrno>
#include <optional>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "grove/errors.hpp"
#include "grove/kernel/framing.hpp"
#include "unix_address.hpp"

namespace grove::mm {

namespace {

// Reads (frame_stream::chunk bytes each) per wake-up while the socket stays full: up to
// 256 KiB taken per poll, as many frames as the broker writes in one burst.
constexpr int reads_per_wake = 4;

void drain_pipe(int fd) {
  char b[64];
  while (::read(fd, b, sizeof b) > 0) {
  }
}

} // namespace

route_reader::route_reader(std::filesystem::path socket, handler on_message, logger log)
  : path_(std::move(socket)), on_message_(std::move(on_message)), log_(std::move(log)) {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0)
    wake_[0] = wake_[1] = -1;
}

route_reader::~route_reader() {
  stop(std::chrono::milliseconds{0});
  for (int fd : wake_)
    if (fd >= 0)
      ::close(fd);
}

void route_reader::set_broker_pid(pid_t pid) {
  if (broker_pid_.exchange(pid) != pid)
    poke();
}

void route_reader::start() {
  std::lock_guard guard{stop_mtx_};
  if (thread_.joinable() || stopping_)
    return;
  thread_ = std::thread{[this] { run(); }};
}

void route_reader::poke() {
  if (wake_[1] >= 0) {
    char c = 1;
    [[maybe_unused]] auto n = ::write(wake_[1], &c, 1);
  }
}

void route_reader::stop(std::chrono::milliseconds drain) {
  std::lock_guard guard{stop_mtx_};
  drain_deadline_ = std::chrono::steady_clock::now() + drain;
  stopping_ = true;
  poke();
  if (thread_.joinable())
    thread_.join();
}

int route_reader::try_connect() {
  auto pid = broker_pid_.load();
  if (pid <= 0)
    return -1;
  auto p = path_.string();
  broker::unix_address addr{p}; // any length: a long path goes through its directory
  if (!addr.ok())
    return -1; // the directory is not there yet (the broker starts): try again
  // Non-blocking: a Unix connect to a listener whose backlog is full (one that does not
  // accept, as a stranger's may not) would block; this way it fails with EAGAIN.
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -1;
  if (::connect(fd, addr.get(), addr.size()) != 0) {
    ::close(fd); // not there yet (the broker starts) or gone: try again
    return -1;
  }
  // The listener's owner: the broker we started, or someone who put a socket there.
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid != pid) {
    ::close(fd);
    // Right after a broker restart the new broker listens before message_manager's actor
    // has told this reader its pid: a refusal counts (and is logged) only once the same
    // listener has been refused for 3 s.
    auto now = std::chrono::steady_clock::now();
    if (cred.pid != mismatch_pid_) {
      mismatch_pid_ = cred.pid;
      mismatch_since_ = now;
      mismatch_reported_ = false;
    } else if (!mismatch_reported_ && now - mismatch_since_ >= std::chrono::seconds{3}) {
      mismatch_reported_ = true;
      refused_.fetch_add(1);
      log_(true, "route socket " + p + ": refused a listener of pid "
                   + std::to_string(cred.pid) + " (uid " + std::to_string(cred.uid)
                   + "): the broker is pid " + std::to_string(pid));
    }
    return -1;
  }
  mismatch_pid_ = 0;
  int rcvbuf = 4 << 20;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  return fd;
}

void route_reader::run() {
  // The stream's frames are Grove's (a big-endian length, then the body): the kernel's
  // frame_stream splits them, growing with the bytes that arrive, never to an announced
  // length, and refuses a frame over the largest a broker can write.
  std::optional<grove::framing::frame_stream> in;
  broker::route_message msg;
  int fd = -1;
  bool draining = false;
  auto close_conn = [&] {
    if (fd >= 0)
      ::close(fd);
    fd = -1;
    in.reset(); // an incomplete frame is the broker's to count (it drops it)
    connected_ = false;
  };
  // Hands on every whole frame read so far; false when the stream cannot be trusted.
  auto take_frames = [&] {
    for (;;) {
      auto body = in->next();
      if (!body) {
        malformed_.fetch_add(1);
        log_(true, "route socket: malformed stream (" + grove::describe(body.error())
                     + "); connecting again");
        return false;
      }
      if (!*body)
        return true;
      if (auto why = broker::decode_frame(**body, msg); !why.empty()) {
        malformed_.fetch_add(1);
        log_(true, "route socket: malformed frame (" + why + "); connecting again");
        return false;
      }
      messages_.fetch_add(1, std::memory_order_relaxed);
      on_message_(std::move(msg));
    }
  };
  while (true) {
    if (fd < 0) {
      if (stopping_)
        break;
      fd = try_connect();
      if (fd < 0) {
        pollfd w{wake_[0], POLLIN, 0};
        ::poll(&w, 1, 20);
        drain_pipe(wake_[0]);
        continue;
      }
      in.emplace(static_cast<uint32_t>(broker::kMaxFrameBytes));
      connected_ = true;
      connects_.fetch_add(1);
      log_(false, "route socket: connected to the broker (pid "
                    + std::to_string(broker_pid_.load()) + ")");
    }
    if (stopping_ && !draining) {
      // The broker finishes the frame in progress and closes; the rest waits for the
      // next instance. Everything it wrote before is read below.
      ::shutdown(fd, SHUT_WR);
      draining = true;
    }
    int timeout = -1;
    if (draining) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    drain_deadline_ - std::chrono::steady_clock::now())
                    .count();
      if (left <= 0)
        break;
      timeout = static_cast<int>(left);
    }
    pollfd p[2] = {{fd, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(p, 2, timeout) < 0 && errno != EINTR)
      break;
    if (p[1].revents & POLLIN)
      drain_pipe(wake_[0]);
    if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
      continue;
    // Several reads per wake-up while the socket stays full (a busy broker writes a
    // burst at once), each followed by the frames it completed.
    bool again = true;
    for (int i = 0; again && i < reads_per_wake; ++i) {
      auto space = in->space();
      auto n = ::read(fd, space.data(), space.size());
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        break;
      if (n <= 0) {
        close_conn();
        if (!draining)
          log_(false, "route socket: the broker closed the connection; connecting again");
        break;
      }
      in->commit(static_cast<size_t>(n));
      if (!take_frames()) {
        close_conn();
        break;
      }
      again = static_cast<size_t>(n) == space.size(); // less: the socket is empty
    }
    if (fd < 0 && draining)
      break;
  }
  close_conn();
}

} // namespace grove::mm
