#pragma once

// clientToken idempotency, one helper for the three APIs that take one (Greengrass v2's
// component store, Greengrass v1's group store, Image Builder's components): the first
// answer to a request is kept with a hash of what it asked until it expires (api_settings'
// token_ttl, 8 hours); a retry with the same token and request gets that answer again,
// the same token with another request is refused (each API in its own error's words).
// Each store keeps its tokens in its own table of the same shape.

#include <cstdint>
#include <optional>
#include <string>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include "grove/store.hpp"

namespace grove::deployment {

/// A first answer kept for a clientToken.
struct token_record {
  /// SHA-256 (hex) of what the request asked, to tell a retry from a reuse.
  std::string request_hash;
  /// HTTP status of the first answer.
  int status = 0;
  /// Its body.
  std::string response;
};

/// What a token says about a request.
enum class token_verdict {
  /// No live record: handle the request (and keep its answer).
  fresh,
  /// The same request again: answer the record.
  retry,
  /// Another request with a token in use: refuse it.
  mismatch,
};

/// The verdict on a request hashed `request_hash` given the token's live record.
token_verdict judge_token(const std::optional<token_record>& rec,
                          const std::string& request_hash);

/// The hash of a JSON request body without its `clientToken` member (a retry's is the
/// same whatever token the client made up).
std::string request_hash_of(nlohmann::json body);

/// One token table of a grove::store (`token TEXT PRIMARY KEY, request_hash, status,
/// response, expires_ms`). Callers hold whatever lock guards the store.
class client_token_table {
public:
  /// The table named `table` (an SQL identifier of the caller's, never outside input).
  explicit client_token_table(std::string table);

  /// The CREATE TABLE statement, for the store's schema migration.
  std::string schema_sql() const;

  /// The live record of `token`; expired records of every token are deleted first.
  caf::expected<std::optional<token_record>> lookup(grove::store& db, const std::string& token,
                                                    int64_t now_ms) const;

  /// The live record of `token` at `now_ms`, deleting nothing (inside the caller's
  /// transaction, to catch a concurrent request that took the token).
  caf::expected<std::optional<token_record>> live(grove::store& db, const std::string& token,
                                                  int64_t now_ms) const;

  /// Keeps `rec` as the first answer of `token` until `expires_ms`.
  caf::error put(grove::store& db, const std::string& token, const token_record& rec,
                 int64_t expires_ms) const;

private:
  std::string expire_sql_;
  std::string select_sql_;
  std::string insert_sql_;
  std::string table_;
};

} // namespace grove::deployment
