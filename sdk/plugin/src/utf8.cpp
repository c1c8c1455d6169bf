#include "grove/utf8.hpp"

#include <algorithm>
#include <cstdint>

namespace grove {

namespace {

/// Bytes of the well-formed sequence at `i` (1 to 4), or 0 when the byte at `i` starts
/// none (Unicode's table 3-7: the second byte's range depends on the first).
size_t sequence_at(std::string_view s, size_t i) noexcept {
  auto at = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  auto c = at(i);
  if (c < 0x80)
    return 1;
  size_t len;
  uint8_t lo = 0x80;
  uint8_t hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0)
      lo = 0xA0; // overlong
    else if (c == 0xED)
      hi = 0x9F; // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0)
      lo = 0x90; // overlong
    else if (c == 0xF4)
      hi = 0x8F; // past U+10FFFF
  } else {
    return 0; // a continuation byte, C0, C1 or F5..FF
  }
  if (i + len > s.size() || at(i + 1) < lo || at(i + 1) > hi)
    return 0;
  for (size_t k = 2; k < len; ++k)
    if ((at(i + k) & 0xC0) != 0x80)
      return 0;
  return len;
}

} // namespace

bool valid_utf8(std::string_view text) noexcept {
  for (size_t i = 0; i < text.size();) {
    auto n = sequence_at(text, i);
    if (n == 0)
      return false;
    i += n;
  }
  return true;
}

std::string escape_invalid_utf8(std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  size_t done = 0; // text[0, done) is in `out`
  for (size_t i = 0; i < text.size();) {
    if (auto n = sequence_at(text, i); n != 0) {
      i += n;
      continue;
    }
    if (out.empty())
      out.reserve(text.size() + 16);
    out.append(text.substr(done, i - done));
    auto b = static_cast<uint8_t>(text[i]);
    out += "\\x";
    out += hex[b >> 4];
    out += hex[b & 0xF];
    done = ++i;
  }
  if (done == 0)
    return std::string{text};
  out.append(text.substr(done));
  return out;
}

size_t utf8_cut_point(std::string_view text, size_t max) noexcept {
  if (text.size() <= max)
    return text.size();
  auto keep = max;
  // Back off over continuation bytes to the start of the character `max` falls in.
  while (keep > 0 && (static_cast<uint8_t>(text[keep]) & 0xC0) == 0x80)
    --keep;
  return keep;
}

std::string cut_utf8(std::string text, size_t max) {
  if (text.size() <= max)
    return text;
  auto tail = " [" + std::to_string(text.size()) + " bytes, cut]";
  text.resize(utf8_cut_point(text, max - std::min(max, tail.size())));
  if (text.size() + tail.size() <= max)
    text += tail;
  return text;
}

} // namespace grove
