#pragma once

// The HTTP request and response the API works on, apart from the server library, so the
// signature check and the routes are pure functions that tests and fuzzers call directly.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base64.hpp"

namespace grove::deployment {

/// A request as received: the raw target (path and query still percent-encoded, as
/// SigV4 signs them), header names lower-cased.
struct http_request {
  /// GET, POST, DELETE, ...
  std::string method;
  /// The request target: raw path, then `?` and the raw query if any.
  std::string target;
  /// Headers in arrival order; names lower-case.
  std::vector<std::pair<std::string, std::string>> headers;
  /// The body.
  std::string body;

  /// The first value of header `name` (lower-case), or "".
  std::string_view header(std::string_view name) const;

  /// The raw path (before `?`).
  std::string_view raw_path() const;

  /// The raw query (after `?`), or "".
  std::string_view raw_query() const;
};

/// A response to send.
struct http_response {
  /// Status code.
  int status = 200;
  /// Headers to add.
  std::vector<std::pair<std::string, std::string>> headers;
  /// The body (JSON).
  std::string body;
  /// Its content type.
  std::string content_type = "application/json";
  /// When set, the body is this file's content, streamed by the server (an artifact).
  std::filesystem::path file;
};

/// The first value of query parameter `key` of `req` (decoded), or "" when absent.
std::string query_value(const http_request& req, std::string_view key);

/// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters stay, every other
/// byte is `%XX` (upper-case); `/` stays when `keep_slash`.
std::string uri_encode(std::string_view in, bool keep_slash);

/// The fields of an ARN: arn:<partition>:<service>:<region>:<account>:<resource>.
struct arn_fields {
  std::string partition;
  std::string service;
  std::string region;
  std::string account;
  /// Everything after the fifth colon (it may hold colons and slashes itself).
  std::string resource;
};

/// Splits `arn` at its first five colons; nullopt unless it starts with "arn:" and has
/// them. What the partition, service and resource must be is the caller's to check.
std::optional<arn_fields> arn_fields_of(const std::string& arn);

/// Percent-decoding; a `%` not followed by two hex digits is kept as it is. `+` stays
/// `+` (AWS clients encode a space as `%20`).
std::string uri_decode(std::string_view in);

/// The query's `key=value` pairs, decoded, in order.
std::vector<std::pair<std::string, std::string>> parse_query(std::string_view raw_query);

/// Lower-case hex of `bytes`.
std::string hex(std::string_view bytes);

/// SHA-256 of `data` (raw bytes).
std::string sha256(std::string_view data);

/// HMAC-SHA256 of `data` with `key` (raw bytes).
std::string hmac_sha256(std::string_view key, std::string_view data);

/// A random (version 4) UUID, as AWS's request and deployment ids.
std::string new_uuid();

/// `ms` since the epoch as ISO 8601 UTC with milliseconds (`2026-12-03T08:30:00.000Z`).
std::string iso8601_ms(int64_t ms);

} // namespace grove::deployment
