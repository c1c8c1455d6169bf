#pragma once

// Image Builder's build components in the component store's SQLite file (schema 5 of
// component_store.cpp; synchronous=FULL like the rest, so an answered CreateComponent
// survives kill -9): one row per build version, the last build number per name and
// version (a deleted build's number is never given again), and CreateComponent's
// clientTokens (client_tokens.hpp). Functions on any grove::store; the component store
// runs them under its lock (component_store::with_store).

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "client_tokens.hpp"
#include "grove/store.hpp"

namespace grove::deployment {

/// One build version of a component.
struct ib_component {
  /// The name as CreateComponent gave it.
  std::string name;
  /// The name in ARNs: lower case, spaces as `-` (the key with version and build).
  std::string arn_name;
  /// `major.minor.patch`.
  std::string version;
  /// The build number the store assigned (1, 2, ...).
  int64_t build = 0;
  /// Linux or Windows.
  std::string platform;
  /// BUILD, or TEST for a document with only a test phase.
  std::string type;
  /// The document (YAML text); empty when listed.
  std::string data;
  /// description, changeDescription, supportedOsVersions, tags, kmsKeyId (JSON object
  /// text, as given).
  std::string extra = "{}";
  /// ms since the epoch.
  int64_t created_ms = 0;
};

/// The schema-5 statements (tables for components, build numbers and clientTokens).
std::string imagebuilder_schema_sql();

/// The live record of CreateComponent's `token` (expired ones deleted on the way).
caf::expected<std::optional<token_record>> ib_token(grove::store& db, const std::string& token,
                                                    int64_t now_ms);

/// What ib_put() did.
enum class ib_put_result {
  /// Stored as `c.build`.
  stored,
  /// The token was taken meanwhile: `existing` holds its record.
  token_taken,
};

/// Stores `c` under the next build number of its name and version (written back into
/// `c.build`) and, when `token` is not empty, `answer_of(c)` as its first answer until
/// `expires_ms`, in one transaction.
caf::expected<ib_put_result> ib_put(grove::store& db, ib_component& c, const std::string& token,
                                    const std::function<token_record(const ib_component&)>& answer_of,
                                    int64_t expires_ms, token_record& existing);

/// One build (`build` 0: the newest build of that version), with its data.
caf::expected<std::optional<ib_component>> ib_get(grove::store& db, const std::string& arn_name,
                                                  const std::string& version, int64_t build);

/// Every build version, without data, by ARN name, then version, then build.
caf::expected<std::vector<ib_component>> ib_list(grove::store& db);

/// Deletes one build; false when there was none.
caf::expected<bool> ib_erase(grove::store& db, const std::string& arn_name,
                             const std::string& version, int64_t build);

} // namespace grove::deployment
