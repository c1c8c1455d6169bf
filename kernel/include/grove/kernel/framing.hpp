#pragma once

// Grove's frames: a 4-byte big-endian length, then one serialized Protobuf message. The
// control socket (groved <-> grovectl) and the function IPC (function_runtime <-> its
// workers, both function SDKs) speak it. One implementation (kernel/src/framing.cpp, the
// static library grove_framing, also inside libgrove_core), so every reader and writer
// agrees on the bytes and the bounds. This is its caf::error API (framing_error.cpp);
// grove/kernel/framing_core.hpp is the implementation's own, without CAF (the function
// SDK's).

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <google/protobuf/message_lite.h>

#include "grove/kernel/framing_core.hpp"

namespace grove::framing {

/// Appends `msg` to `out` as one frame (several frames can then go in one write).
/// errc::too_large, with nothing appended, when the message is over `max_size`.
caf::error append_frame(std::string& out, const google::protobuf::MessageLite& msg,
                        uint32_t max_size = max_frame_size);

/// Writes all of `bytes` to `fd`: send() with MSG_NOSIGNAL (a vanished peer is EPIPE,
/// not SIGPIPE), write() for a descriptor that is no socket; retries EINTR. EAGAIN (an
/// expired SO_SNDTIMEO) is errc::timeout.
caf::error write_all(int fd, std::string_view bytes);

/// Writes one frame holding `msg` in one write. Retries on EINTR; MSG_NOSIGNAL.
caf::error write_frame(int fd, const google::protobuf::MessageLite& msg);

/// Reads one frame into `msg`, and not a byte past it. Returns errc::malformed for bad
/// bytes, errc::too_large for a frame announced larger than `max_size`,
/// errc::system_error "connection closed" on EOF, errc::timeout when SO_RCVTIMEO
/// expires. Memory grows with the bytes received (read_chunk_size at a time), not with
/// the announced length.
caf::error read_frame(int fd, google::protobuf::MessageLite& msg,
                      uint32_t max_size = max_frame_size);

/// Splits a stream's bytes into frames, so that one read() takes every frame that has
/// arrived (read_frame reads twice per frame). Memory grows with the bytes that arrive
/// (`chunk` at a time), never to an announced length; a frame announced over
/// `max_frame` is an error. For one reader thread.
class frame_stream {
public:
  /// Bytes asked of one read().
  static constexpr size_t chunk = read_chunk_size;

  /// A stream whose frames may be up to `max_frame` bytes.
  explicit frame_stream(uint32_t max_frame) : core_(max_frame) {
  }

  /// Where the next read() puts its bytes (`chunk` bytes); commit() says how many came.
  std::span<char> space() {
    return core_.space();
  }

  /// Adds `n` bytes read into space().
  void commit(size_t n) noexcept {
    core_.commit(n);
  }

  /// One read() of `fd` into space() (EINTR retried). At the end of the stream:
  /// errc::system_error "connection closed", or errc::malformed "truncated frame" when
  /// part of a frame is held; a read error is errc::system_error (errc::timeout for an
  /// expired SO_RCVTIMEO).
  caf::error fill(int fd);

  /// The next complete frame's bytes (valid until the next call of space()), nullopt
  /// when none is complete yet, or the error of a frame announced too large.
  caf::expected<std::optional<std::string_view>> next();

  /// Parses the next complete frame into `msg`: true when one was there, false when
  /// none is complete yet; errc::malformed when its bytes do not parse.
  caf::expected<bool> next(google::protobuf::MessageLite& msg);

  /// The next frame into `msg`, reading `fd` (fill) only when no complete frame is held:
  /// a blocking reader's loop. Errors as fill() and next().
  caf::error receive(int fd, google::protobuf::MessageLite& msg);

  /// Bytes held that are not a complete frame yet (at EOF: a truncated frame).
  size_t partial() const noexcept {
    return core_.partial();
  }

  /// True once fill() has met the end of the stream.
  bool ended() const noexcept {
    return core_.ended();
  }

  /// Bytes allocated for the stream's buffer (it shrinks once a large frame has gone).
  size_t capacity() const noexcept {
    return core_.capacity();
  }

private:
  core::frame_stream core_;
};

} // namespace grove::framing
