#pragma once

// Greengrass v1's group management API (botocore's model greengrass 2017-06-07) on the
// same server as the v2 API: definitions of cores, devices, functions, subscriptions,
// resources and loggers with their immutable versions, groups and group versions,
// deployments and tags, role associations and bulk deployments. api.cpp checks SigV4, the allow-list and the rate limit, then
// hands the v1 routes (`/greengrass/definition/...`, `/greengrass/groups/...`, and
// `/tags/` of a v1 ARN) here. One generic handler serves the six definition kinds: a
// table says each one's route, operation name, list field and checks.
//
// A deployment turns a group version into Grove's group document (to_grove_group) and
// hands it to an applier (the plugin: the kernel's `$grove/group/set`), which reports
// back through applied().

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include "grove/group.pb.h"

#include "bulk_input.hpp"
#include "http.hpp"
#include "v1_store.hpp"

namespace grove::deployment {

struct api_settings;

/// What a deployment asks the applier to do.
struct v1_apply_job {
  /// The group's id.
  std::string group_id;
  /// The deployment's id.
  std::string deployment_id;
  /// Grove's group document (JSON, the kernel's group file shape).
  std::string group;
};

/// Applies a deployment; must eventually call v1_api::applied() with its outcome.
using v1_applier = std::function<void(v1_apply_job)>;

/// Starts a bulk deployment: fetches `uri` (InputFileUri, through the artifact rules) off
/// the server's thread and then calls v1_api::run_bulk() with its text or why not.
using v1_bulk_starter = std::function<void(std::string bulk_id, std::string uri)>;

/// A v1 deployment's group document (`v1_group`, JSON, as v1_apply_job carries it) that
/// keeps what Greengrass v2 components put in the group in force (`current`): the
/// functions named in `lambda` (the Lambda components' names) and the resources named in
/// `models` (the model components' names) that `current` has, and the subscriptions
/// naming those functions whose other end the new group has (a device it lists, a
/// function it or a kept one defines, `cloud`, `shadow`; the others are left out and
/// counted in `dropped`). Returns the document to set (YAML), or why the group version
/// cannot be deployed beside them: one of its functions has a Lambda component's name,
/// one of its resources a model component's, or one of its subscription ids is a kept
/// subscription's.
caf::expected<std::string> keep_v2_components(const std::string& v1_group,
                                              const group::Group& current,
                                              const std::set<std::string>& lambda,
                                              const std::set<std::string>& models,
                                              size_t* dropped = nullptr);

/// A problem in a request body: the field (e.g. `Subscriptions[3].Source`) and what.
struct v1_field_error {
  /// Which field.
  std::string field;
  /// What is wrong with it.
  std::string message;
};

/// Settings of the v1 API beyond the shared ones.
struct v1_settings {
  /// This core's thing name; when set, a group whose core definition names another thing
  /// is not deployed here.
  std::string thing_name;
  /// Where a function's code is: `<lambda_packages_dir>/<function name>`.
  std::string lambda_packages_dir;
  /// The group's name in Grove's document when the group has none.
  std::string default_group_name = "grove";
  /// Where group CAs live (README.md, "Group CA"): `<dir>/<group>/<ca>/ca.key` (0600)
  /// and `ca.crt`, `<dir>/active` (the active CA's `<group>/<ca>`) and `<dir>/trust/`
  /// (the deployed group's CAs under OpenSSL's hashed names). Empty: no group CAs.
  std::filesystem::path group_ca_dir;
  /// How long a new group CA is valid.
  int64_t ca_validity_ms = int64_t{3650} * 24 * 3600 * 1000;
};

/// CertificateExpiryInMilliseconds' bounds and default: 7 to 30 days, 7 by default (the
/// Greengrass v1 developer guide on the core's MQTT server certificate).
constexpr int64_t cert_expiry_min_ms = int64_t{7} * 24 * 3600 * 1000;
/// The upper bound, 30 days.
constexpr int64_t cert_expiry_max_ms = int64_t{30} * 24 * 3600 * 1000;

/// The v1 API (see the file comment). Thread-safe as long as the store is.
class v1_api {
public:
  /// Serves over `store` with the shared `settings` (region, account, token lifetime).
  v1_api(const api_settings& settings, v1_settings v1, v1_store& store);

  /// Sets who applies deployments (without one, a deployment fails with that reason).
  void set_applier(v1_applier applier);

  /// Sets who starts bulk deployments (without one, StartBulkDeployment fails the bulk
  /// deployment at once with that reason).
  void set_bulk_starter(v1_bulk_starter starter);

  /// Runs bulk deployment `id` over its fetched input file `text` (or fails it with the
  /// fetch's error): blocking, for a pool thread. Each record is a deployment through
  /// CreateDeployment's path, one at a time, each waited for until it settles (at most
  /// `settle_timeout`); a record that cannot be deployed is a failed record with the
  /// reason. Stops between records when StopBulkDeployment asked, or at shutdown().
  void run_bulk(const std::string& id, const caf::expected<std::string>& text,
                std::chrono::milliseconds settle_timeout = std::chrono::minutes{2});

  /// Makes a running run_bulk() return soon, its bulk deployment left as it is (the next
  /// start ends it), and refuses to run more.
  void shutdown();

  /// Whether `arn` is a role ARN of IAM (`arn:aws:iam::<account>:role/[<path>/]<name>`) in
  /// account `account`; "" when it is, else what is wrong (for a message naming the field).
  static std::string role_arn_problem(const std::string& arn, const std::string& account);

  /// The operation a request names ("" when the route is not a v1 one). `segs` are the
  /// decoded path segments.
  static std::string operation(const std::string& method, const std::vector<std::string>& segs);

  /// Whether `arn` is a v1 resource ARN (for the shared `/tags/` routes).
  static bool is_v1_arn(const std::string& arn);

  /// Answers `op` (as operation() named it) at `now_ms`.
  http_response handle(const std::string& op, const std::vector<std::string>& segs,
                       const http_request& req, int64_t now_ms);

  /// TagResource, UntagResource, ListTagsForResource of a v1 ARN.
  http_response tags(const std::string& op, const std::string& arn, const http_request& req);

  /// The applier's report: `error` empty on success; the deployment's status becomes
  /// Success or Failure (ErrorMessage = `error`). After a Success: the error of rewriting
  /// the trust directory (refresh_trust), for the caller to log.
  caf::error applied(const std::string& group_id, const std::string& deployment_id,
                     const std::string& error, int64_t now_ms);

  /// Rewrites the group CA trust directory and the `active` file from the CAs of the
  /// group deployed last (none deployed: an empty directory). Called after a CA is made,
  /// after a successful deployment, and by the plugin at start.
  caf::error refresh_trust();
  /// Removes the key directories under group_ca_dir of CAs the store has no record of.
  /// Called by the plugin at start.
  caf::error sweep_ca_dirs();
  /// The CA's CRL (its ca.crl; signed from its key and written when missing).
  caf::expected<std::string> ca_crl(const std::string& group_id, const std::string& ca_id,
                                    const std::string& certificate);

  /// The certificates (PEM, oldest first) of the CAs of the group deployed last.
  caf::expected<std::vector<std::string>> trusted_cas();

  /// Marks a deployment InProgress (the applier has handed it to the kernel).
  void in_progress(const std::string& group_id, const std::string& deployment_id, int64_t now_ms);

  /// Checks a definition version of `kind` (`cores`, ...): the first problem, if any.
  static std::optional<v1_field_error> check_definition(const std::string& kind,
                                                        const nlohmann::json& def);

  /// Grove's group document for a group version's definition versions (`defs`: kind →
  /// Definition; missing kinds are empty), or the first problem (a subscription naming a
  /// device or function the group does not hold, ...).
  std::variant<nlohmann::json, v1_field_error>
  to_grove_group(const std::string& name, const std::map<std::string, nlohmann::json>& defs) const;

private:
  http_response create_definition(const std::string& kind, const http_request& req,
                                  int64_t now_ms);
  http_response create_version(const std::string& kind, const std::string& id,
                               const http_request& req, int64_t now_ms);
  http_response get_resource(const std::string& kind, const std::string& id);
  http_response list_resources(const std::string& kind, const http_request& req);
  http_response update_resource(const std::string& kind, const std::string& id,
                                const http_request& req, int64_t now_ms);
  http_response delete_resource(const std::string& kind, const std::string& id);
  http_response get_version(const std::string& kind, const std::string& id,
                            const std::string& version);
  http_response list_versions(const std::string& kind, const std::string& id,
                              const http_request& req);
  http_response create_deployment(const std::string& group_id, const http_request& req,
                                  int64_t now_ms);
  http_response reset_deployments(const std::string& group_id, const http_request& req,
                                  int64_t now_ms);
  http_response deployment_status(const std::string& group_id, const std::string& id);
  http_response list_deployments(const std::string& group_id, const http_request& req);
  http_response create_ca(const std::string& group_id, int64_t now_ms);
  http_response get_ca(const std::string& group_id, const std::string& ca_id);
  http_response list_cas(const std::string& group_id);
  http_response cert_config(const std::string& group_id, const http_request* update);
  std::string ca_arn(const std::string& group_id, const std::string& ca_id) const;
  http_response associate_role(const std::string& scope, const http_request& req,
                               int64_t now_ms);
  http_response get_role(const std::string& scope);
  http_response disassociate_role(const std::string& scope, int64_t now_ms);
  http_response start_bulk(const http_request& req, int64_t now_ms);
  http_response bulk_status(const std::string& id);
  http_response list_bulks(const http_request& req);
  http_response bulk_reports(const std::string& id, const http_request& req);
  http_response stop_bulk(const std::string& id, int64_t now_ms);
  std::string bulk_arn(const std::string& id) const;
  // One record of a bulk deployment (run_bulk): its deployment made and waited for.
  void run_record(const std::string& bulk_id, const bulk_record& rec,
                  std::chrono::milliseconds settle_timeout);
  http_response deploy(const v1_resource& group, const std::string& type,
                       const std::string& version, int64_t now_ms);

  // Checks a group version (its ARNs exist, the definitions fit together): the resolved
  // definitions by kind, or the problem.
  std::variant<std::map<std::string, nlohmann::json>, http_response>
  resolve_group_version(const nlohmann::json& gv);

  std::string resource_arn(const std::string& kind, const std::string& id) const;
  std::string version_arn(const std::string& kind, const std::string& id,
                          const std::string& version) const;
  nlohmann::json resource_json(const v1_resource& r, bool with_tags) const;

  std::string region_;
  std::string account_;
  int64_t token_ttl_ms_;
  v1_settings v1_;
  v1_store& store_;
  std::mutex mtx_; // one change at a time (clientToken check, change, token record)
  std::mutex trust_mtx_; // one writer of the trust directory
  v1_applier applier_;
  v1_bulk_starter bulk_starter_;
  // Deployments settling (applied()) and shutdown() wake run_bulk's waits.
  std::mutex settled_mtx_;
  std::condition_variable settled_cv_;
  std::atomic<bool> shut_{false};
};

} // namespace grove::deployment
