#include "frame_channel.hpp"

#include <cerrno>
#include <cstring>

#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "grove/errors.hpp"
#include "grove/kernel/framing.hpp"

namespace grove {

frame_channel::frame_channel(int fd, std::function<void()> tick,
                             std::shared_ptr<spdlog::logger> log)
  : fd_(fd), tick_(std::move(tick)),
    log_(log ? std::move(log) : spdlog::default_logger()) {
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

caf::error frame_channel::send(const google::protobuf::MessageLite& msg) {
  std::unique_lock guard{mtx_};
  bool was_empty = out_.empty();
  // The reader's limit: a frame over it would end the channel at the other side.
  if (auto err = framing::append_frame(out_, msg, max_frame)) {
    guard.unlock();
    log_->error("{} not sent to the other process: {}", msg.GetTypeName(), describe(err));
    return err;
  }
  if (was_empty)
    cv_.notify_one();
  return {};
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
  auto err = in_.receive(fd_, msg);
  // A frame cut short by the end of the stream is a peer that died mid-write (killed,
  // crashed): its end, not bad data from it.
  if (err && in_.partial() > 0 && in_.ended())
    return make_error(errc::system_error, "connection closed in a frame ("
                                            + std::to_string(in_.partial())
                                            + " bytes of it came)");
  return err;
}

} // namespace grove
