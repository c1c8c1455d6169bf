#pragma once

// The console's security parts apart from the server (cpp-httplib) and the kernel, so unit
// tests and the fuzzer call them directly: password checks (libsodium's argon2id),
// sessions with their CSRF tokens, the login limiter, and the parsers of what a browser
// sends (the Cookie header, JSON bodies).

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace grove::console {

using clock = std::chrono::steady_clock;

/// Initializes libsodium (idempotent, thread-safe); false when it cannot.
bool sodium_ready();

/// libsodium's argon2id string for `password` (interactive limits), or "" on failure.
std::string hash_password(std::string_view password);

/// True when `password` matches `hash` (a `crypto_pwhash_str` string).
bool verify_password(const std::string& hash, std::string_view password);

/// 32 random bytes as 64 lower-case hex characters.
std::string random_token();

/// Constant-time comparison of two tokens.
bool same_token(std::string_view a, std::string_view b);

/// The value of cookie `name` in a `Cookie:` header (`a=1; b=2`), or "" when absent.
/// Only the first occurrence counts; quotes are not removed (the console's cookies have none).
std::string cookie_value(std::string_view header, std::string_view name);

/// A JSON object body, or nullopt with `error` set (not JSON, not an object, too deep).
std::optional<nlohmann::json> parse_object(std::string_view body, std::string& error);

/// The string field `key` of `obj`, or `fallback` when absent; nullopt when present and not
/// a string.
std::optional<std::string> string_field(const nlohmann::json& obj, std::string_view key,
                                        std::string fallback = {});

/// True when `s` is valid UTF-8 without NUL or other C0 controls than tab, CR, LF.
bool printable_utf8(std::string_view s);

/// How the console shows a payload: {"kind": "json"|"text"|"binary", "text" or "hex",
/// "size", "truncated"}; at most `limit` bytes of it.
nlohmann::json describe_payload(std::string_view payload, std::string_view content_type,
                                size_t limit);

/// One logged-in operator.
struct session {
  /// The operator's name.
  std::string name;
  /// The CSRF token every state-changing request must carry (header X-CSRF-Token).
  std::string csrf;
  /// When it ends.
  clock::time_point expires;
  /// Its cookie token (filled by session_table::find): live streams check the session
  /// by it, also one a client certificate started on the stream's own request.
  std::string token;
};

/// The sessions, keyed by their cookie token; safe from any thread.
class session_table {
public:
  /// At most this many sessions; the oldest one goes first.
  static constexpr size_t max_sessions = 256;

  /// A new session for `name` lasting `ttl`; returns its cookie token.
  std::string create(std::string name, std::chrono::seconds ttl, clock::time_point now);

  /// The live session of `token`, or nullopt (unknown or expired, which is then removed).
  std::optional<session> find(std::string_view token, clock::time_point now);

  /// Ends the session of `token`.
  void erase(std::string_view token);

  /// Live sessions.
  size_t size() const;

  /// The live sessions as JSON (token, name, csrf, milliseconds left), for the next
  /// instance of a hot reload: operators stay logged in across it.
  std::string dump(clock::time_point now) const;

  /// Adds the sessions of a dump(); false (nothing added) when it does not parse.
  bool load(std::string_view dumped, clock::time_point now);

private:
  mutable std::mutex mtx_;
  std::map<std::string, session, std::less<>> sessions_;
};

/// Failed logins per key (an operator name, a client address) within a window.
class login_limiter {
public:
  /// Most keys counted at once.
  static constexpr size_t max_keys = 65536;

  /// `max_failures` within `window` lock the key until the window passes.
  login_limiter(int64_t max_failures, std::chrono::seconds window);

  /// Seconds until `key` may try again (0: it may now).
  int64_t locked_for(const std::string& key, clock::time_point now);

  /// Counts a failure of `key`.
  void failed(const std::string& key, clock::time_point now);

  /// Forgets `key`'s failures (a successful login).
  void succeeded(const std::string& key);

private:
  struct entry {
    int64_t failures = 0;
    clock::time_point since;
  };
  std::mutex mtx_;
  int64_t max_failures_;
  std::chrono::seconds window_;
  std::map<std::string, entry> entries_;
};

} // namespace grove::console
