#include "ipc.hpp"

#include <sys/socket.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "grove/errors.hpp"
#include "grove/kernel/control.hpp"
#include "grove/topic.hpp"

namespace grove::fn {

bool same_token(const std::string& a, const std::string& b) noexcept {
  if (a.size() != b.size())
    return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

caf::error append_frame(std::string& out, const Frame& f) {
  auto size = f.ByteSizeLong();
  if (size > framing::max_frame_size)
    return make_error(errc::too_large, "frame of " + std::to_string(size)
                                         + " bytes exceeds the limit of "
                                         + std::to_string(framing::max_frame_size));
  auto at = out.size();
  out.resize(at + 4 + size);
  auto n = static_cast<uint32_t>(size);
  out[at] = static_cast<char>((n >> 24) & 0xff);
  out[at + 1] = static_cast<char>((n >> 16) & 0xff);
  out[at + 2] = static_cast<char>((n >> 8) & 0xff);
  out[at + 3] = static_cast<char>(n & 0xff);
  if (!f.SerializeToArray(out.data() + at + 4, static_cast<int>(size)))
    return make_error(errc::malformed, "cannot serialize a frame");
  return {};
}

caf::error send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    auto n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return make_error(errc::timeout, "write timed out");
      return make_error(errc::system_error, std::string{"write: "} + std::strerror(errno));
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

std::span<char> frame_stream::space() {
  if (begin_ == end_) {
    begin_ = end_ = 0;
    if (buf_.capacity() > 4 * chunk)
      std::string{}.swap(buf_); // a large frame has gone: its memory goes with it
  } else if (begin_ > 0 && (begin_ >= buf_.size() / 2 || buf_.size() - end_ < chunk)) {
    // Keep what is left of a frame at the front: the buffer stays near one frame's size.
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (buf_.size() < end_ + chunk)
    buf_.resize(end_ + chunk);
  return {buf_.data() + end_, chunk};
}

caf::expected<std::optional<std::string_view>> frame_stream::next() {
  if (end_ - begin_ < 4)
    return std::optional<std::string_view>{};
  const auto* p = reinterpret_cast<const unsigned char*>(buf_.data() + begin_);
  auto size = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8)
              | uint32_t{p[3]};
  if (size > max_frame_)
    return make_error(errc::too_large, "frame of " + std::to_string(size)
                                         + " bytes exceeds the limit of "
                                         + std::to_string(max_frame_));
  if (end_ - begin_ - 4 < size)
    return std::optional<std::string_view>{};
  std::string_view body{buf_.data() + begin_ + 4, size};
  begin_ += 4 + size;
  return std::optional<std::string_view>{body};
}

bool valid_shadow_name(const std::string& name, size_t max) noexcept {
  if (name.empty() || name.size() > max)
    return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == ':' || c == '_' || c == '-'))
      return false;
  return true;
}

bool valid_model_name(const std::string& name) noexcept {
  return !name.empty() && name.size() <= 256
         && name.find_first_of(std::string_view{"/+#\0", 4}) == std::string::npos;
}

caf::error check_worker_frame(const Frame& f, bool said_hello, const std::string& token) {
  if (!said_hello) {
    if (f.body_case() != Frame::kHello || token.empty() || !same_token(f.hello().token(), token))
      return make_error(errc::not_authorized,
                        "the first frame was not a hello with its token");
    return {};
  }
  switch (f.body_case()) {
    case Frame::kResult:
    case Frame::kLog:
      return {};
    case Frame::kPublish:
      // A bad topic is the publish's own error (answered), not the instance's.
      return {};
    case Frame::kCall:
      if (f.call().function().empty() || f.call().function().find('/') != std::string::npos
          || f.call().function().find_first_of("+#") != std::string::npos)
        return make_error(errc::malformed, "a call without a valid function name");
      return {};
    case Frame::kShadowCall: {
      const auto& c = f.shadow_call();
      if (!valid_shadow_name(c.thing(), 128) || (!c.shadow().empty() && !valid_shadow_name(c.shadow(), 64))
          || (c.op() != "get" && c.op() != "update" && c.op() != "delete"))
        return make_error(errc::malformed, "a shadow call without a valid thing, shadow name or op");
      return {};
    }
    case Frame::kInferCall:
      // A model name the function is not granted (or that is no topic level) is the
      // call's own error (answered, see valid_model_name), not the instance's.
      return {};
    default:
      return make_error(errc::malformed, "a frame a worker may not send (case "
                                           + std::to_string(static_cast<int>(f.body_case()))
                                           + ")");
  }
}

} // namespace grove::fn
