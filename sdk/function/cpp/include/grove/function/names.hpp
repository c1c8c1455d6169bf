#pragma once

// The rules of the names a function's verbs carry (the function an invoke names, a
// thing and a shadow, an ML model), in one place: the C++ function SDK checks them
// before it sends (a bad name is the verb's `malformed` error, nothing sent), and
// function_runtime checks the same on what a worker sends (a worker need not use this
// SDK). Header only, without dependencies: a function binary and the plugin compile the
// same text. The Python SDK (grove_function._check_names) follows these rules.

#include <cstddef>
#include <string_view>

namespace grove::function::names {

/// Longest thing name (AWS IoT's limit).
inline constexpr size_t max_thing = 128;

/// Longest shadow name.
inline constexpr size_t max_shadow = 64;

/// Longest ML model name.
inline constexpr size_t max_model = 256;

/// What a function name is, for errors: "... is not <function_rule>".
inline constexpr const char* function_rule = "one topic level (not empty, no '/', '+', '#')";

/// What a thing name is, for errors.
inline constexpr const char* thing_rule = "1-128 of a-z, A-Z, 0-9, ':', '_', '-'";

/// What a shadow name is, for errors.
inline constexpr const char* shadow_rule = "1-64 of a-z, A-Z, 0-9, ':', '_', '-'";

/// What an ML model name is, for errors.
inline constexpr const char* model_rule = "one topic level: no '/', '+', '#', at most 256 bytes";

/// True when `name` is one MQTT topic level: not empty, without '/', '+', '#' or NUL.
constexpr bool one_topic_level(std::string_view name) noexcept {
  if (name.empty())
    return false;
  for (char c : name)
    if (c == '/' || c == '+' || c == '#' || c == '\0')
      return false;
  return true;
}

/// A function name an invoke may carry: one topic level of fr-1/fr-2
/// (`$grove/functions/invoke/<name>`, `$grove/functions/event/<name>`).
constexpr bool valid_function_name(std::string_view name) noexcept {
  return one_topic_level(name);
}

/// A model name an infer may carry: one topic level of ml-1 (`$grove/ml/infer/<model>`),
/// at most max_model bytes.
constexpr bool valid_model_name(std::string_view name) noexcept {
  return name.size() <= max_model && one_topic_level(name);
}

/// A thing name (`max` = max_thing) or shadow name (`max` = max_shadow): 1 to `max` of
/// `[a-zA-Z0-9:_-]`.
constexpr bool valid_shadow_name(std::string_view name, size_t max) noexcept {
  if (name.empty() || name.size() > max)
    return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
          || c == ':' || c == '_' || c == '-'))
      return false;
  return true;
}

} // namespace grove::function::names
