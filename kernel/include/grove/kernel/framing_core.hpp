#pragma once

// Grove's frames without CAF: a 4-byte big-endian length, then one serialized Protobuf
// message. The one implementation of the frame format and its read and write loops
// (kernel/src/framing.cpp); grove/kernel/framing.hpp is the caf::error API over it for
// groved, grovectl and the plugins. The C++ function SDK uses this core directly, so a
// function binary needs no libcaf_core at run time: loading it (its relocations) was most
// of a native function's cold start (tools/bench/README.md, sandbox_bench).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <google/protobuf/message_lite.h>

namespace grove {

// grove/errors.hpp defines the codes; declared here so this header needs no CAF header.
enum class errc : uint8_t;

} // namespace grove

namespace grove::framing {

/// Bytes of a frame's length prefix.
constexpr size_t header_size = 4;

/// Largest frame accepted (16 MiB): replies, such as the status of a large group.
constexpr uint32_t max_frame_size = 16u << 20;

/// Largest request frame the control server accepts (1 MiB): a request carries at
/// most one message for the bus, and 64 connections times this bounds what clients
/// can make groved hold.
constexpr uint32_t max_request_size = 1u << 20;

/// Bytes read (and allocated) at a time while a frame arrives.
constexpr size_t read_chunk_size = 64u << 10;

/// Appends `msg` as one frame whose body is `size` bytes, the value msg.ByteSizeLong()
/// just returned (its sizes are cached): for a caller that checks the size first.
void append_frame_sized(std::string& out, const google::protobuf::MessageLite& msg,
                        size_t size);

namespace core {

/// What a framing call did: errc::none (success) or the Grove error code and its
/// message, as framing.hpp's caf::error carries them (make_error(code, message)).
struct status {
  /// errc::none on success.
  errc code{};
  /// What went wrong, for a person.
  std::string message;

  /// True for an error, as a caf::error.
  explicit operator bool() const noexcept {
    return code != errc{};
  }
};

/// "<code>: <message>", as grove::describe renders the same caf::error; empty on success.
std::string describe(const status& s);

/// framing::append_frame (grove/kernel/framing.hpp).
status append_frame(std::string& out, const google::protobuf::MessageLite& msg,
                    uint32_t max_size = max_frame_size);

/// framing::write_all.
status write_all(int fd, std::string_view bytes);

/// framing::write_frame.
status write_frame(int fd, const google::protobuf::MessageLite& msg);

/// framing::read_frame.
status read_frame(int fd, google::protobuf::MessageLite& msg,
                  uint32_t max_size = max_frame_size);

/// framing::frame_stream, its results as status.
class frame_stream {
public:
  /// Bytes asked of one read().
  static constexpr size_t chunk = read_chunk_size;

  /// A stream whose frames may be up to `max_frame` bytes.
  explicit frame_stream(uint32_t max_frame) : max_frame_(max_frame) {
  }

  /// Where the next read() puts its bytes (`chunk` bytes); commit() says how many came.
  std::span<char> space();

  /// Adds `n` bytes read into space().
  void commit(size_t n) noexcept {
    end_ += n;
  }

  /// framing::frame_stream::fill.
  status fill(int fd);

  /// Sets `body` to the next complete frame's bytes (valid until the next call of
  /// space()), or nullopt when none is complete yet; the error of a frame announced
  /// too large.
  status next(std::optional<std::string_view>& body);

  /// Parses the next complete frame into `msg` and sets `got`; errc::malformed when its
  /// bytes do not parse.
  status next(google::protobuf::MessageLite& msg, bool& got);

  /// framing::frame_stream::receive.
  status receive(int fd, google::protobuf::MessageLite& msg);

  /// Bytes held that are not a complete frame yet (at EOF: a truncated frame).
  size_t partial() const noexcept {
    return end_ - begin_;
  }

  /// True once fill() has met the end of the stream.
  bool ended() const noexcept {
    return ended_;
  }

  /// Bytes allocated for the stream's buffer (it shrinks once a large frame has gone).
  size_t capacity() const noexcept {
    return buf_.capacity();
  }

private:
  uint32_t max_frame_;
  std::string buf_;
  size_t begin_ = 0; // first byte not handed out
  size_t end_ = 0;   // one past the last byte read
  bool ended_ = false;
};

} // namespace core

} // namespace grove::framing
