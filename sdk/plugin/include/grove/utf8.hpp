#pragma once

// UTF-8 checks for text from outside (user code, devices): Protobuf refuses a `string`
// field that is not UTF-8 (a peer's whole frame fails to parse), JSON and MQTT want it
// too. Grove's own text is UTF-8; text a user's code made may not be.

#include <string>
#include <string_view>

namespace grove {

/// Whether `text` is well-formed UTF-8 (RFC 3629: no overlong forms, surrogates or code
/// points past U+10FFFF), what a Protobuf `string` field must hold. NUL is valid.
bool valid_utf8(std::string_view text) noexcept;

/// `text` with every byte that is not part of a well-formed UTF-8 sequence written as
/// `\xNN` (lower-case hex, as Python's `backslashreplace` writes it): valid UTF-8 that
/// keeps what the bytes were. `text` itself when it is valid.
std::string escape_invalid_utf8(std::string_view text);

/// The longest length of `text`, at most `max`, that does not end inside a UTF-8
/// sequence (`text.size()` when that is at most `max`): where to cut text to a size.
size_t utf8_cut_point(std::string_view text, size_t max) noexcept;

/// `text` in at most `max` bytes: itself when it fits, else its start (cut between
/// characters) followed by " [N bytes, cut]", N its whole size. For text from user code
/// (an exception's message) that must not make a frame or a list too large.
std::string cut_utf8(std::string text, size_t max);

} // namespace grove
