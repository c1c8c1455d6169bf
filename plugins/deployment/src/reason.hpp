#pragma once

// A deployment's failure reason as it is journaled and answered (ListEffectiveDeployments'
// `reason`): at most max_reason_bytes, cut only between UTF-8 sequences (a split one is no
// UTF-8: the API's JSON writer would answer U+FFFD for it, past the limit), and a note
// appended at its end (the rollback's outcome, what a start decided) kept whole: the text
// before it gives way instead. A component's lifecycleStateDetails are cut the same way
// (utf8_prefix, max_details_bytes). Pure.

#include <cstddef>
#include <string>
#include <string_view>

namespace grove::deployment {

/// The most bytes of a reason journaled or answered.
inline constexpr size_t max_reason_bytes = 1024;

/// The most bytes of a component's `lifecycleStateDetails` answered
/// (ListInstalledComponents; AWS's limit is 255), cut with utf8_prefix.
inline constexpr size_t max_details_bytes = 255;

/// The note a failed deployment's reason ends with when its rollback put the previous set back.
inline constexpr std::string_view rollback_note =
  " (ROLLBACK_COMPLETE: the previous set runs again)";

/// The longest prefix of `text` of at most `max` bytes that does not end inside a UTF-8
/// sequence (continuation bytes after the cut would belong to a cut character).
inline std::string_view utf8_prefix(std::string_view text, size_t max) {
  if (text.size() <= max)
    return text;
  size_t n = max;
  // Back off continuation bytes (10xxxxxx): the cut then falls before a lead byte.
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80)
    --n;
  return text.substr(0, n);
}

/// `text` followed by `note`, in at most `max` bytes: `note` whole (unless it alone is
/// longer), `text` cut at a UTF-8 boundary and marked with "..." when it does not fit.
inline std::string clip_reason(std::string_view text, std::string_view note = {},
                               size_t max = max_reason_bytes) {
  if (text.size() + note.size() <= max)
    return std::string{text}.append(note);
  constexpr std::string_view more = "...";
  if (note.size() + more.size() >= max)
    return std::string{utf8_prefix(note, max)};
  return std::string{utf8_prefix(text, max - note.size() - more.size())}
    .append(more)
    .append(note);
}

/// A journaled `reason` with `note` appended ("; " between): the rollback note it ends
/// with, if any, stays with `note` at the end, kept whole; the text before them gives way.
inline std::string append_note(std::string_view reason, std::string_view note,
                               size_t max = max_reason_bytes) {
  if (reason.empty())
    return clip_reason(note, {}, max);
  std::string tail;
  if (reason.size() >= rollback_note.size()
      && reason.substr(reason.size() - rollback_note.size()) == rollback_note) {
    reason.remove_suffix(rollback_note.size());
    tail = rollback_note;
  }
  tail.append("; ").append(note);
  return clip_reason(reason, tail, max);
}

} // namespace grove::deployment
