#include "frame_channel.hpp"

#include <cerrno>
#include <cstring>
#include <limits>

#include <sys/socket.h>
#include <unistd.h>

#include "grove/errors.hpp"
#include "grove/kernel/framing.hpp"

namespace grove {

frame_channel::frame_channel(int fd, std::function<void()> tick)
  : fd_(fd), tick_(std::move(tick)) {
  writer_ = std::thread{[this] { write_loop(); }};
}

frame_channel::~frame_channel() {
  {
    std::lock_guard guard{mtx_};
    closing_ = true;
  }
  cv_.notify_all();
  writer_.join();
  shutdown();
  ::close(fd_);
}

void frame_channel::shutdown() {
  ::shutdown(fd_, SHUT_RDWR);
}

void frame_channel::send(const google::protobuf::MessageLite& msg) {
  std::lock_guard guard{mtx_};
  bool was_empty = out_.empty();
  // No limit here: the reader refuses a frame over max_frame, and the channel ends.
  static_cast<void>(framing::append_frame(out_, msg, std::numeric_limits<uint32_t>::max()));
  if (was_empty)
    cv_.notify_one();
}

void frame_channel::write_loop() {
  std::string batch;
  for (;;) {
    {
      std::unique_lock guard{mtx_};
      if (out_.empty() && !closing_)
        cv_.wait_for(guard, std::chrono::milliseconds{1});
      if (out_.empty() && closing_)
        return;
      batch.swap(out_);
    }
    size_t done = 0;
    while (done < batch.size()) {
      auto n = ::send(fd_, batch.data() + done, batch.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        // The peer is gone; the reader side notices and reports it.
        std::lock_guard guard{mtx_};
        out_.clear();
        break;
      }
      done += static_cast<size_t>(n);
    }
    batch.clear();
    if (tick_)
      tick_();
  }
}

caf::error frame_channel::receive(google::protobuf::MessageLite& msg) {
  return in_.receive(fd_, msg);
}

} // namespace grove
