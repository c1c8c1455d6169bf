#pragma once

// The Greengrass v1 group API's state (v1_api.hpp): definitions of the six kinds and
// groups, their immutable versions, deployments, clientTokens, role associations and bulk deployments, in their own SQLite
// file (`groups.db`, grove::store, synchronous=FULL) apart from the component store.
// One generic table holds every kind, so one code path serves all of them. Thread-safe:
// one mutex.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "component_store.hpp"
#include "grove/store.hpp"

namespace grove::deployment {

/// A definition (kind `cores`, `devices`, `functions`, `subscriptions`, `resources`,
/// `loggers`) or a group (kind `groups`).
struct v1_resource {
  /// The kind, as in the route (`cores`, ..., `groups`).
  std::string kind;
  /// Id (a UUID).
  std::string id;
  /// Name (may be empty).
  std::string name;
  /// Creation time, ms since the epoch.
  int64_t created_ms = 0;
  /// Last change (a rename or a new version), ms since the epoch.
  int64_t updated_ms = 0;
  /// The newest version's id, or "".
  std::string latest;
  /// Tags (JSON object text).
  std::string tags = "{}";
  /// Insertion order (pagination).
  int64_t seq = 0;
};

/// An immutable version of a resource.
struct v1_version {
  /// The resource's kind.
  std::string kind;
  /// The resource's id.
  std::string id;
  /// The version's id (a UUID).
  std::string version;
  /// Creation time, ms since the epoch.
  int64_t created_ms = 0;
  /// The `Definition` (JSON object text).
  std::string definition;
  /// Insertion order (pagination).
  int64_t seq = 0;
};

/// A deployment of a group.
struct v1_deployment {
  /// The group's id.
  std::string group_id;
  /// The deployment's id.
  std::string id;
  /// NewDeployment | Redeployment | ResetDeployment | ForceResetDeployment.
  std::string type;
  /// The group version deployed ("" for a reset).
  std::string version;
  /// Building | InProgress | Success | Failure.
  std::string status;
  /// ErrorMessage when Failure.
  std::string error_message;
  /// ErrorDetails (JSON array text).
  std::string error_details = "[]";
  /// Creation time, ms since the epoch.
  int64_t created_ms = 0;
  /// Last status change, ms since the epoch.
  int64_t updated_ms = 0;
  /// Insertion order (pagination).
  int64_t seq = 0;
};

/// A group's certificate authority (README.md, "Group CA"); its key is a file, not here.
struct v1_group_ca {
  /// The group's id.
  std::string group_id;
  /// The CA's id (hex SHA-256 of its certificate's DER).
  std::string id;
  /// The certificate, PEM.
  std::string certificate;
  /// Creation time, ms since the epoch.
  int64_t created_ms = 0;
  /// notAfter, ms since the epoch.
  int64_t not_after_ms = 0;
  /// Insertion order (the newest is the active one).
  int64_t seq = 0;
};

/// A role associated with a group (AssociateRoleToGroup) or the account's service role.
struct v1_role {
  /// The role's ARN.
  std::string role_arn;
  /// When it was associated, ms since the epoch.
  int64_t associated_ms = 0;
};

/// A bulk deployment (StartBulkDeployment).
struct v1_bulk {
  /// Its id (a UUID).
  std::string id;
  /// Initializing | Running | Completed | Stopping | Stopped | Failed.
  std::string status;
  /// `InputFileUri`.
  std::string input_uri;
  /// `ExecutionRoleArn`.
  std::string role_arn;
  /// Tags (JSON object text).
  std::string tags = "{}";
  /// ErrorMessage when Failed.
  std::string error_message;
  /// ErrorDetails (JSON array text).
  std::string error_details = "[]";
  /// Records processed so far.
  int64_t processed = 0;
  /// Records that failed before a deployment was made (a bad line, an unknown group).
  int64_t invalid = 0;
  /// Creation time, ms since the epoch.
  int64_t created_ms = 0;
  /// Last change, ms since the epoch.
  int64_t updated_ms = 0;
  /// Insertion order (pagination).
  int64_t seq = 0;
};

/// One processed record of a bulk deployment (a detailed report).
struct v1_bulk_record {
  /// The bulk deployment's id.
  std::string bulk_id;
  /// The record's line in the input file.
  int64_t line = 0;
  /// Its GroupId ("" when the line had none).
  std::string group_id;
  /// Its GroupVersionId.
  std::string group_version_id;
  /// Its DeploymentType.
  std::string type;
  /// The deployment it made ("" when none).
  std::string deployment_id;
  /// The deployment's status (read from the deployment when there is one, else Failure).
  std::string status;
  /// Why the record failed.
  std::string error_message;
  /// ErrorDetails (JSON array text).
  std::string error_details = "[]";
  /// When it was processed, ms since the epoch.
  int64_t created_ms = 0;
  /// Insertion order (pagination).
  int64_t seq = 0;
};

/// The store (see the file comment).
class v1_store {
public:
  /// Opens or creates `file`.
  static caf::expected<std::unique_ptr<v1_store>> open(const std::filesystem::path& file);

  /// The live record of `token` (expired ones are deleted on the way).
  caf::expected<std::optional<token_record>> token(const std::string& token, int64_t now_ms);

  /// Keeps the first answer of `token` until `expires_ms`.
  caf::error put_token(const std::string& token, const token_record& rec, int64_t expires_ms);

  /// Stores a new resource and, if given, its first version (one transaction).
  caf::error create(const v1_resource& r, const std::optional<v1_version>& first);

  /// One resource.
  caf::expected<std::optional<v1_resource>> get(const std::string& kind, const std::string& id);

  /// Resources of `kind` after insertion `after_seq`, at most `limit`.
  caf::expected<std::vector<v1_resource>> list(const std::string& kind, int64_t after_seq,
                                               size_t limit);

  /// Renames a resource; false when there is none.
  caf::expected<bool> rename(const std::string& kind, const std::string& id,
                             const std::string& name, int64_t now_ms);

  /// Replaces the tags (JSON object text); false when there is no such resource.
  caf::expected<bool> set_tags(const std::string& kind, const std::string& id,
                               const std::string& tags);

  /// Deletes a resource with its versions (and a group's deployments); false when there
  /// was none.
  caf::expected<bool> erase(const std::string& kind, const std::string& id);

  /// Adds a version and makes it the latest; false when the resource is gone.
  caf::expected<bool> add_version(const v1_version& v);

  /// One version.
  caf::expected<std::optional<v1_version>> version(const std::string& kind, const std::string& id,
                                                   const std::string& version);

  /// Versions of a resource after insertion `after_seq`, at most `limit`, oldest first.
  caf::expected<std::vector<v1_version>> versions(const std::string& kind, const std::string& id,
                                                  int64_t after_seq, size_t limit);

  /// Stores a new deployment.
  caf::error put_deployment(const v1_deployment& d);

  /// Sets a deployment's status (and error); false when there is none.
  caf::expected<bool> set_deployment_status(const std::string& group_id, const std::string& id,
                                            const std::string& status,
                                            const std::string& error_message,
                                            const std::string& error_details, int64_t now_ms);

  /// Marks every Building or InProgress deployment Failure with `message` (they were cut
  /// short by a stop); how many.
  caf::expected<int64_t> fail_unfinished(const std::string& message, int64_t now_ms);

  /// One deployment.
  caf::expected<std::optional<v1_deployment>> deployment(const std::string& group_id,
                                                         const std::string& id);

  /// A group's deployments inserted before `before_seq`, newest first, at most `limit`.
  caf::expected<std::vector<v1_deployment>> deployments(const std::string& group_id,
                                                        int64_t before_seq, size_t limit);

  /// Stores a group's new CA; errc::conflict when the group does not exist (any more).
  caf::error put_ca(const v1_group_ca& ca);

  /// Every stored CA as `<group id>/<CA id>` (its key directory under group_ca_dir).
  caf::expected<std::set<std::string>> ca_dirs();

  /// A group's CAs, oldest first.
  caf::expected<std::vector<v1_group_ca>> cas(const std::string& group_id);

  /// A group's CertificateExpiryInMilliseconds, nullopt when never set.
  caf::expected<std::optional<int64_t>> cert_expiry(const std::string& group_id);

  /// Sets a group's CertificateExpiryInMilliseconds.
  caf::error set_cert_expiry(const std::string& group_id, int64_t ms);

  /// The role of `scope` (`group:<id>`, or `account` for the service role), if any.
  caf::expected<std::optional<v1_role>> role(const std::string& scope);

  /// Associates `role` with `scope`, replacing the one there.
  caf::error put_role(const std::string& scope, const v1_role& role);

  /// Removes the role of `scope`; false when there was none.
  caf::expected<bool> erase_role(const std::string& scope);

  /// Stores a new bulk deployment, unless another one has not ended (Initializing,
  /// Running, Stopping): then its id, and nothing is stored.
  caf::expected<std::optional<std::string>> put_bulk(const v1_bulk& b);

  /// One bulk deployment.
  caf::expected<std::optional<v1_bulk>> bulk(const std::string& id);

  /// Bulk deployments inserted before `before_seq`, newest first, at most `limit`.
  caf::expected<std::vector<v1_bulk>> bulks(int64_t before_seq, size_t limit);

  /// Sets a bulk deployment's status (and error) if it is one of `from` (any when empty);
  /// false when it is not.
  caf::expected<bool> set_bulk_status(const std::string& id, const std::vector<std::string>& from,
                                      const std::string& status, const std::string& error_message,
                                      const std::string& error_details, int64_t now_ms);

  /// Adds a processed record and counts it (and as invalid when `invalid`), in one
  /// transaction.
  caf::error add_bulk_record(const v1_bulk_record& r, bool invalid);

  /// The records of a bulk deployment after insertion `after_seq`, in input order, at
  /// most `limit`; each with its deployment's current status and error.
  caf::expected<std::vector<v1_bulk_record>> bulk_records(const std::string& id,
                                                          int64_t after_seq, size_t limit);

  /// Ends every bulk deployment a stop cut short: Stopping ones Stopped, Initializing and
  /// Running ones Failed with `message`; how many.
  caf::expected<int64_t> end_unfinished_bulks(const std::string& message, int64_t now_ms);

private:
  explicit v1_store(std::unique_ptr<grove::store> db) : db_(std::move(db)) {
    // Nothing.
  }

  caf::expected<std::vector<v1_resource>> resources(const char* sql, const std::string& a,
                                                    const std::string& b, int64_t n1, int64_t n2);
  caf::expected<std::vector<v1_version>> version_rows(const char* sql, const std::string& a,
                                                      const std::string& b, const std::string& c,
                                                      int64_t n1, int64_t n2);
  caf::expected<std::vector<v1_bulk>> bulk_rows(const char* sql, const std::string& a,
                                                int64_t n1, int64_t n2);
  caf::expected<std::vector<v1_deployment>> deployment_rows(const char* sql, const std::string& a,
                                                            const std::string& b, int64_t n1,
                                                            int64_t n2);

  std::mutex mtx_;
  std::unique_ptr<grove::store> db_;
};

} // namespace grove::deployment
