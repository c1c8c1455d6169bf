// Control-socket framing: a 4-byte big-endian length, then one serialized message.
// Kept free of kernel dependencies so grovectl can link it alone (target grove_framing).

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include <sys/socket.h>
#include <unistd.h>

#include "grove/errors.hpp"
#include "grove/kernel/control.hpp"

namespace grove::framing {

namespace {

caf::error sys_error(const char* what) {
  return make_error(errc::system_error,
                    std::string{what} + ": " + std::strerror(errno));
}

// EAGAIN on a blocking socket means SO_RCVTIMEO/SO_SNDTIMEO expired (callers use them
// as request timeouts); non-blocking descriptors are not supported.
caf::error io_error(const char* what) {
  if (errno == EAGAIN || errno == EWOULDBLOCK)
    return make_error(errc::timeout, std::string{what} + " timed out");
  return sys_error(what);
}

caf::error write_all(int fd, const char* buf, size_t len) {
  // send() with MSG_NOSIGNAL so a vanished peer is EPIPE, not a process-killing SIGPIPE;
  // plain write() for descriptors that are not sockets (pipes in tests).
  bool is_socket = true;
  while (len > 0) {
    auto n = is_socket ? ::send(fd, buf, len, MSG_NOSIGNAL) : ::write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == ENOTSOCK && is_socket) {
        is_socket = false;
        continue;
      }
      return io_error("write");
    }
    buf += n;
    len -= static_cast<size_t>(n);
  }
  return {};
}

// Reads exactly `len` bytes. Sets `got` to the number read before an EOF.
caf::error read_all(int fd, char* buf, size_t len, size_t& got) {
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

caf::error write_frame(int fd, const google::protobuf::MessageLite& msg) {
  auto size = msg.ByteSizeLong();
  if (size > max_frame_size)
    return make_error(errc::too_large, "frame of " + std::to_string(size)
                                         + " bytes exceeds the limit of "
                                         + std::to_string(max_frame_size));
  // One buffer, one write: a frame is never interleaved with a concurrent writer's.
  std::string buf(4 + size, '\0');
  auto n = static_cast<uint32_t>(size);
  buf[0] = static_cast<char>((n >> 24) & 0xff);
  buf[1] = static_cast<char>((n >> 16) & 0xff);
  buf[2] = static_cast<char>((n >> 8) & 0xff);
  buf[3] = static_cast<char>(n & 0xff);
  if (!msg.SerializeToArray(buf.data() + 4, static_cast<int>(size)))
    return make_error(errc::malformed, "cannot serialize " + msg.GetTypeName());
  return write_all(fd, buf.data(), buf.size());
}

caf::error read_frame(int fd, google::protobuf::MessageLite& msg, uint32_t max_size) {
  unsigned char hdr[4];
  size_t got = 0;
  if (auto err = read_all(fd, reinterpret_cast<char*>(hdr), sizeof(hdr), got))
    return err;
  if (got == 0)
    return make_error(errc::system_error, "connection closed");
  if (got < sizeof(hdr))
    return make_error(errc::malformed, "truncated frame header");
  auto size = (uint32_t{hdr[0]} << 24) | (uint32_t{hdr[1]} << 16)
              | (uint32_t{hdr[2]} << 8) | uint32_t{hdr[3]};
  if (size > max_size)
    return make_error(errc::too_large, "frame of " + std::to_string(size)
                                         + " bytes exceeds the limit of "
                                         + std::to_string(max_size));
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
      return make_error(errc::malformed, "truncated frame (got " + std::to_string(total)
                                           + " of " + std::to_string(size) + " bytes)");
  }
  if (!msg.ParseFromArray(body.data(), static_cast<int>(size)))
    return make_error(errc::malformed, "cannot parse " + msg.GetTypeName());
  return {};
}

} // namespace grove::framing
