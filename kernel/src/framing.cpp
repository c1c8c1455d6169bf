// Grove's frames (grove/kernel/framing_core.hpp): a 4-byte big-endian length, then one
// serialized message. Kept free of kernel dependencies so grovectl and the function SDK
// can link it alone (target grove_framing), and of CAF (nothing here calls into
// libcaf_core: grove/errors.hpp only for the codes) so a function binary needs none;
// framing_error.cpp is the caf::error API over it.

#include "grove/kernel/framing_core.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include <sys/socket.h>
#include <unistd.h>

#include "grove/errors.hpp"

namespace grove::framing {

using core::status;

namespace {

status sys_error(const char* what) {
  return {errc::system_error, std::string{what} + ": " + std::strerror(errno)};
}

// EAGAIN on a blocking socket means SO_RCVTIMEO/SO_SNDTIMEO expired (callers use them
// as request timeouts); non-blocking descriptors are not supported.
status io_error(const char* what) {
  if (errno == EAGAIN || errno == EWOULDBLOCK)
    return {errc::timeout, std::string{what} + " timed out"};
  return sys_error(what);
}

status too_large(size_t size, uint32_t max_size) {
  return {errc::too_large, "frame of " + std::to_string(size) + " bytes exceeds the limit of "
                             + std::to_string(max_size)};
}

uint32_t decode_length(const char* p) noexcept {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8)
         | uint32_t{u[3]};
}

// Reads exactly `len` bytes. Sets `got` to the number read before an EOF.
status read_all(int fd, char* buf, size_t len, size_t& got) {
  got = 0;
  while (got < len) {
    auto n = ::read(fd, buf + got, len - got);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return io_error("read");
    }
    if (n == 0)
      return {};
    got += static_cast<size_t>(n);
  }
  return {};
}

} // namespace

void append_frame_sized(std::string& out, const google::protobuf::MessageLite& msg,
                        size_t size) {
  auto at = out.size();
  out.resize(at + header_size + size);
  auto* p = reinterpret_cast<uint8_t*>(out.data() + at);
  p[0] = static_cast<uint8_t>(size >> 24);
  p[1] = static_cast<uint8_t>(size >> 16);
  p[2] = static_cast<uint8_t>(size >> 8);
  p[3] = static_cast<uint8_t>(size);
  // The sizes ByteSizeLong just cached: SerializeToArray would compute them again.
  msg.SerializeWithCachedSizesToArray(p + header_size);
}

namespace core {

std::string describe(const status& s) {
  if (!s)
    return {};
  std::string out = to_string(s.code);
  return s.message.empty() ? out : out + ": " + s.message;
}

status append_frame(std::string& out, const google::protobuf::MessageLite& msg,
                    uint32_t max_size) {
  auto size = msg.ByteSizeLong();
  if (size > max_size)
    return too_large(size, max_size);
  append_frame_sized(out, msg, size);
  return {};
}

status write_all(int fd, std::string_view bytes) {
  // send() with MSG_NOSIGNAL so a vanished peer is EPIPE, not a process-killing SIGPIPE;
  // plain write() for descriptors that are not sockets (pipes in tests).
  bool is_socket = true;
  while (!bytes.empty()) {
    auto n = is_socket ? ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL)
                       : ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == ENOTSOCK && is_socket) {
        is_socket = false;
        continue;
      }
      return io_error("write");
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

status write_frame(int fd, const google::protobuf::MessageLite& msg) {
  // One buffer, one write: a frame is never interleaved with a concurrent writer's.
  std::string buf;
  if (auto err = append_frame(buf, msg))
    return err;
  return write_all(fd, buf);
}

status read_frame(int fd, google::protobuf::MessageLite& msg, uint32_t max_size) {
  char hdr[header_size];
  size_t got = 0;
  if (auto err = read_all(fd, hdr, sizeof(hdr), got))
    return err;
  if (got == 0)
    return {errc::system_error, "connection closed"};
  if (got < sizeof(hdr))
    return {errc::malformed, "truncated frame header"};
  auto size = decode_length(hdr);
  if (size > max_size)
    return too_large(size, max_size);
  // The buffer grows with the bytes that arrive, never to the announced size up front:
  // a peer that announces a large frame and sends nothing costs one chunk, not 16 MiB.
  std::string body;
  size_t total = 0;
  while (total < size) {
    auto chunk = std::min<size_t>(size - total, read_chunk_size);
    body.resize(total + chunk);
    if (auto err = read_all(fd, body.data() + total, chunk, got))
      return err;
    total += got;
    if (got < chunk)
      return {errc::malformed, "truncated frame (got " + std::to_string(total) + " of "
                                 + std::to_string(size) + " bytes)"};
  }
  if (!msg.ParseFromArray(body.data(), static_cast<int>(size)))
    return {errc::malformed, "cannot parse " + msg.GetTypeName()};
  return {};
}

std::span<char> frame_stream::space() {
  auto left = end_ - begin_;
  if (begin_ == end_) {
    begin_ = end_ = 0;
    if (buf_.capacity() > 4 * chunk)
      std::string{}.swap(buf_); // a large frame has gone: its memory goes with it
  } else if (buf_.capacity() > 4 * chunk && left + chunk < buf_.capacity() / 4) {
    // A large frame has gone but the start of the next one came with it (a busy
    // stream is rarely drained at a frame boundary): the leftover moves to a buffer
    // of its own size, and the large one goes.
    std::string smaller(left + chunk, '\0');
    std::memcpy(smaller.data(), buf_.data() + begin_, left);
    buf_.swap(smaller);
    begin_ = 0;
    end_ = left;
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

status frame_stream::fill(int fd) {
  for (;;) {
    auto s = space();
    auto n = ::read(fd, s.data(), s.size());
    if (n > 0) {
      commit(static_cast<size_t>(n));
      return {};
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return io_error("read");
    ended_ = true;
    if (partial() > 0)
      return {errc::malformed,
              "truncated frame (" + std::to_string(partial()) + " bytes before the end)"};
    return {errc::system_error, "connection closed"};
  }
}

status frame_stream::next(std::optional<std::string_view>& body) {
  body.reset();
  if (end_ - begin_ < header_size)
    return {};
  auto size = decode_length(buf_.data() + begin_);
  if (size > max_frame_)
    return too_large(size, max_frame_);
  if (end_ - begin_ - header_size < size)
    return {};
  body.emplace(buf_.data() + begin_ + header_size, size);
  begin_ += header_size + size;
  return {};
}

status frame_stream::next(google::protobuf::MessageLite& msg, bool& got) {
  std::optional<std::string_view> body;
  got = false;
  if (auto s = next(body))
    return s;
  if (!body)
    return {};
  if (!msg.ParseFromArray(body->data(), static_cast<int>(body->size())))
    return {errc::malformed, "cannot parse " + msg.GetTypeName()};
  got = true;
  return {};
}

status frame_stream::receive(int fd, google::protobuf::MessageLite& msg) {
  for (;;) {
    bool got = false;
    if (auto s = next(msg, got))
      return s;
    if (got)
      return {};
    if (auto s = fill(fd))
      return s;
  }
}

} // namespace core

} // namespace grove::framing
