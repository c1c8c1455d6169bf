#pragma once

// AWS Signature Version 4 as a server checks it (the `Authorization` header form the AWS
// CLI and SDKs send): rebuild the canonical request from what arrived, the string to
// sign, and compare HMAC-SHA256 signatures in constant time.

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "http.hpp"

namespace grove::deployment {

/// Why a request was refused, in AWS's terms (all 403).
struct auth_error {
  /// x-amzn-ErrorType: MissingAuthenticationTokenException, IncompleteSignatureException,
  /// UnrecognizedClientException or InvalidSignatureException.
  std::string type;
  /// The message, worded as AWS words it.
  std::string message;
};

/// What the service expects in the credential scope.
struct sigv4_scope {
  /// Region, e.g. us-east-1.
  std::string region;
  /// Signing name, `greengrass` for Greengrass v2.
  std::string service = "greengrass";
  /// Largest difference between the request's X-Amz-Date and the clock.
  std::chrono::seconds max_skew{300};
};

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
struct sigv4_header {
  /// The access key id.
  std::string access_key_id;
  /// yyyymmdd.
  std::string date;
  /// Region of the scope.
  std::string region;
  /// Service of the scope.
  std::string service;
  /// Terminator, `aws4_request`.
  std::string terminator;
  /// Lower-case names, `;`-separated, as sent.
  std::string signed_headers;
  /// 64 lower-case hex digits.
  std::string signature;
};

/// Parses an Authorization header; an error names what is missing or malformed.
std::optional<sigv4_header> parse_authorization(std::string_view value, std::string& why);

/// The canonical request of `req` for `signed_headers` (SigV4 task 1), the path encoded
/// once more as the AWS SDKs do for every service but S3.
std::string canonical_request(const http_request& req, std::string_view signed_headers,
                              std::string_view payload_hash);

/// Finds the secret of an access key id; nullopt for an unknown key.
using secret_lookup = std::function<std::optional<std::string>(std::string_view key_id)>;

/// Checks the signature of `req` at time `now`: the access key id on success.
std::variant<std::string, auth_error> verify_sigv4(const http_request& req,
                                                   const sigv4_scope& scope,
                                                   const secret_lookup& secret_of,
                                                   std::chrono::system_clock::time_point now);

/// Signs `req` as a client does (every header it has, so `host` must be there; adds
/// x-amz-date and Authorization): for tests, benchmarks and the fuzzers.
void sign_sigv4(http_request& req, const sigv4_scope& scope, std::string_view key_id,
                std::string_view secret, std::chrono::system_clock::time_point now);

/// `yyyymmddThhmmssZ` of `t` (UTC).
std::string amz_date(std::chrono::system_clock::time_point t);

/// Parses `yyyymmddThhmmssZ`.
std::optional<std::chrono::system_clock::time_point> parse_amz_date(std::string_view s);

} // namespace grove::deployment
