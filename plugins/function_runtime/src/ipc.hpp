#pragma once

// What function_runtime accepts from a worker on its socket (README.md, "IPC"): frames
// arrive through the kernel's framing (grove::framing::read_frame, bounded by
// max_frame_bytes); this decides whether a decoded frame may be acted on. Apart from the
// plugin so the fuzz target (tests/fuzz/targets/function_frame.cpp) runs the same check.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "grove/function.pb.h"

namespace grove::fn {

/// Why `f` ends the instance that sent it, or an empty error when the runtime may act on
/// it: before the hello only a Hello carrying `token`; after it Result, Publish (with a
/// valid topic), Call (with a function name), ShadowCall (valid thing, shadow name, op),
/// InferCall and Log, never a second Hello nor a
/// frame only the runtime sends.
caf::error check_worker_frame(const Frame& f, bool said_hello, const std::string& token);

/// Splits the bytes read from a worker's socket into frames (a 4-byte big-endian length,
/// then the bytes: the kernel's framing), so that one read() takes every frame that has
/// arrived. Memory grows with the bytes that arrive (64 KiB at a time), never to an
/// announced length; a frame announced over `max_frame` is an error.
class frame_stream {
public:
  /// Bytes asked of one read().
  static constexpr size_t chunk = 64u << 10;

  explicit frame_stream(uint32_t max_frame) : max_frame_(max_frame) {
  }

  /// Where the next read() puts its bytes (`chunk` bytes); commit() says how many came.
  std::span<char> space();

  /// Adds `n` bytes read into space().
  void commit(size_t n) noexcept {
    end_ += n;
  }

  /// The next complete frame's bytes (valid until the next call of space() or next()),
  /// nullopt when none is complete yet, or the error of a frame announced too large.
  caf::expected<std::optional<std::string_view>> next();

  /// Bytes held that are not a complete frame yet (at EOF: a truncated frame).
  size_t partial() const noexcept {
    return end_ - begin_;
  }

private:
  uint32_t max_frame_;
  std::string buf_;
  size_t begin_ = 0; // first byte not handed out
  size_t end_ = 0;   // one past the last byte read
};

/// Appends `f` to `out` as one frame (length, then bytes); errc::too_large past the
/// kernel's framing limit.
caf::error append_frame(std::string& out, const Frame& f);

/// Writes all of `bytes` to the socket `fd` (MSG_NOSIGNAL; a write past its
/// SO_SNDTIMEO is errc::timeout): one send() for several frames.
caf::error send_all(int fd, std::string_view bytes);

/// A model name an InferCall may carry: one topic level of ml-1 (`$grove/ml/infer/<model>`),
/// non-empty, at most 256 bytes, without `/`, `+`, `#` or NUL.
bool valid_model_name(const std::string& name) noexcept;

/// A thing name (up to 128) or shadow name (up to 64) of `[a-zA-Z0-9:_-]`.
bool valid_shadow_name(const std::string& name, size_t max) noexcept;

/// Token comparison whose time does not depend on where the strings differ.
bool same_token(const std::string& a, const std::string& b) noexcept;

} // namespace grove::fn
