#include "frame_channel.hpp"

#include <cerrno>
#include <cstring>

#include <sys/socket.h>
#include <unistd.h>

#include "grove/errors.hpp"

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
  auto size = msg.ByteSizeLong();
  std::lock_guard guard{mtx_};
  auto at = out_.size();
  out_.resize(at + 4 + size);
  auto* p = reinterpret_cast<uint8_t*>(out_.data() + at);
  p[0] = static_cast<uint8_t>(size >> 24);
  p[1] = static_cast<uint8_t>(size >> 16);
  p[2] = static_cast<uint8_t>(size >> 8);
  p[3] = static_cast<uint8_t>(size);
  msg.SerializeWithCachedSizesToArray(p + 4);
  if (at == 0)
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
  auto fill = [this](size_t need) -> caf::error {
    while (in_.size() - in_pos_ < need) {
      if (in_pos_ > 0 && in_pos_ >= in_.size() / 2) {
        in_.erase(0, in_pos_);
        in_pos_ = 0;
      }
      char buf[65536];
      auto n = ::read(fd_, buf, sizeof(buf));
      if (n < 0 && errno == EINTR)
        continue;
      if (n == 0)
        return make_error(errc::system_error, "closed");
      if (n < 0)
        return make_error(errc::system_error, std::string{"read: "} + strerror(errno));
      in_.append(buf, static_cast<size_t>(n));
    }
    return {};
  };
  if (auto err = fill(4))
    return err;
  auto* p = reinterpret_cast<const uint8_t*>(in_.data() + in_pos_);
  uint32_t size = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8)
                  | uint32_t{p[3]};
  if (size > max_frame)
    return make_error(errc::too_large, "frame of " + std::to_string(size) + " bytes");
  if (auto err = fill(4 + size))
    return err;
  bool ok = msg.ParseFromArray(in_.data() + in_pos_ + 4, static_cast<int>(size));
  in_pos_ += 4 + size;
  if (!ok)
    return make_error(errc::malformed, "frame does not parse");
  return {};
}

} // namespace grove
