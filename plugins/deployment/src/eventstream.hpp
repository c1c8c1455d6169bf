// AWS event-stream framing (the wire of Greengrass v2's IPC, "eventstream RPC"):
//   prelude: total length u32 BE, headers length u32 BE, CRC32 of those 8 bytes;
//   headers: name length u8, name, value type u8, value (see header_type);
//   payload; CRC32 of everything before it.
// Pure functions over bytes: the IPC server (ipc_server.cpp) and the fuzzer use them.

#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace grove::deployment::eventstream {

/// A header value's type byte.
enum class header_type : uint8_t {
  bool_true = 0,
  bool_false = 1,
  byte = 2,
  int16 = 3,
  int32 = 4,
  int64 = 5,
  bytes = 6,
  string = 7,
  timestamp = 8,
  uuid = 9,
};

/// One header: integers (and booleans, timestamps) in `number`, byte strings, strings and
/// UUIDs (16 bytes) in `text`.
struct header {
  std::string name;
  header_type type = header_type::string;
  int64_t number = 0;
  std::string text;

  /// A string header.
  static header str(std::string name, std::string value);

  /// An int32 header.
  static header i32(std::string name, int32_t value);
};

/// One message.
struct message {
  std::vector<header> headers;
  std::string payload;

  /// The first header named `name`, or nullptr.
  const header* find(std::string_view name) const;

  /// The value of a string header, or nullopt (absent or of another type).
  std::optional<std::string> string_of(std::string_view name) const;

  /// The value of an int32 header, or nullopt (absent or of another type).
  std::optional<int32_t> int32_of(std::string_view name) const;
};

/// The smallest frame (no headers, no payload): prelude 12 bytes and the message CRC.
constexpr size_t min_frame = 16;

/// The outcome of decode().
enum class decode_status {
  ok,        ///< one message read
  need_more, ///< the buffer holds a frame's beginning only
  invalid,   ///< the bytes are no frame (CRC, lengths, a header): the connection must end
};

/// Reads one message from the start of `in` into `out`; on ok, `used` is its length.
/// Frames longer than `max_frame` are invalid (checked from the prelude, before the rest
/// arrives). On invalid, `why` says what was wrong.
decode_status decode(std::string_view in, size_t max_frame, message& out, size_t& used,
                     std::string& why);

/// The frame of `m` (header names over 255 bytes and string values over 65535 are cut:
/// the IPC server only writes short ones).
std::string encode(const message& m);

/// CRC32 (IEEE, zlib's) of `data` continuing `crc`.
uint32_t crc32(std::string_view data, uint32_t crc = 0);

} // namespace grove::deployment::eventstream
