#pragma once

// The Greengrass v2 REST-JSON API over the component store: routes as botocore's model
// (greengrassv2 2020-11-30) names them, SigV4 and the per-key allow-list first, errors in
// AWS's shape (x-amzn-ErrorType header, {"message": ...} body, modelled extra fields).

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "grove/rate_limiter.hpp"

#include "component_store.hpp"
#include "http.hpp"
#include "imagebuilder.hpp"
#include "sigv4.hpp"

namespace grove::deployment {

class v1_api;

/// One access key of the configuration.
struct access_key {
  /// The secret.
  std::string secret;
  /// Operation names it may call; `*` for all.
  std::set<std::string> operations;
  /// Requests per second it may make (a token bucket holding one second's worth); 0: no
  /// limit.
  double requests_per_second = 0;
};

/// What the API needs to know.
struct api_settings {
  /// Region (ARNs, SigV4 scope).
  std::string region = "us-east-1";
  /// Account id (ARNs).
  std::string account_id = "123456789012";
  /// Access key id → key.
  std::map<std::string, access_key> keys;
  /// Largest request body accepted.
  size_t max_body_bytes = 2 * 1024 * 1024;
  /// Where lambdaFunction's packages are (lambda.hpp).
  std::filesystem::path lambda_packages_dir;
  /// How long a clientToken's first answer is kept.
  std::chrono::seconds token_ttl{8 * 3600};
  /// Where stored artifacts are, by SHA-256 (hex): the artifact store's `sha256/`.
  std::filesystem::path artifact_files;
  /// The key that signs pre-signed artifact URLs; "" refuses GetComponentVersionArtifact.
  std::string url_key;
  /// How long a pre-signed artifact URL is valid.
  std::chrono::seconds url_ttl{3600};
  /// Scheme of pre-signed URLs (the API's own: https, or http in development).
  std::string url_scheme = "https";
  /// Called (on the server's thread) for a version stored REQUESTED: its artifacts are
  /// to be fetched. Unset: it stays REQUESTED (unit tests settle it themselves).
  std::function<void(const std::string& name, const std::string& version)> on_requested;
  /// This core's thing name ("": no deployment can target it).
  std::string thing_name;
  /// The thing groups this core belongs to (deployment targets besides its thing).
  std::vector<std::string> thing_groups;
  /// This core's platform attributes for resolution (`os`, `architecture`).
  std::map<std::string, std::string> platform;
  /// GetCoreDevice's coreVersion.
  std::string core_version;
  /// Called (on the server's thread) for a new deployment whose graph resolved: it is to
  /// be applied on this core. `resolved` is ResolveComponentCandidates' answer for the
  /// whole set this core keeps. Unset: it stays QUEUED.
  std::function<void(const std::string& id, const nlohmann::json& resolved)> on_deployment;
  /// The installed components (ListInstalledComponents' `installedComponents` entries);
  /// unset: none.
  std::function<nlohmann::json()> installed;
  /// Reads Image Builder's CreateComponent `uri` (imagebuilder.hpp); unset: refused.
  std::function<caf::expected<std::string>(const std::string& uri)> fetch_document;
};

/// What is wrong with a TagMap (1..128-character keys, values up to 256, at most 50:
/// AWS's per-resource limit), or "" when it is good. Both APIs' tags (v2 and v1).
std::string tag_map_problem(const nlohmann::json& tags);

/// The API (see the file comment). Thread-safe as long as the store is.
class api {
public:
  /// Serves `settings` over `store`.
  api(api_settings settings, component_store& store);

  /// Answers one request received at `now`.
  http_response handle(const http_request& req, std::chrono::system_clock::time_point now);

  /// Runs `operation` for an operator tool (the bus API, no SigV4): ListComponents,
  /// ListComponentVersions, DescribeComponent, GetComponent, DeleteComponent, or
  /// SetVendorGuidance (`guidance`, `message`); CreateDeployment (`body`, targetArn
  /// defaulting to this core's thing), ListDeployments (ALL), GetDeployment (with this
  /// core's `coreDeviceExecutionStatus` and `reason`), CancelDeployment, DeleteDeployment
  /// (`arn`: the id), ListInstalledComponents, ListEffectiveDeployments (this core's).
  /// The List operations answer the page after `next_token`, of at most `max_results`
  /// rows (0: 100), with the next page's nextToken.
  http_response operator_call(const std::string& operation, const std::string& arn,
                              const std::string& format, const std::string& guidance,
                              const std::string& message, const std::string& body = "",
                              const std::string& next_token = "", int max_results = 0);

  /// Serves Greengrass v1's group routes with `v1` too (nullptr: none). Set before serving.
  void set_v1(v1_api* v1) {
    v1_ = v1;
  }

  /// The component ARN of AWS's public component `name` (account `aws`).
  std::string public_arn(const std::string& name) const;

  /// The component version ARN of `name` at `version`.
  std::string version_arn(const std::string& name, const std::string& version) const;

  /// True when `target_arn` is this core's thing or one of its thing groups.
  bool targets_this_core(const std::string& target_arn) const;

  /// This core's thing ARN (`arn:aws:iot:<region>:<account>:thing/<name>`).
  std::string thing_arn() const;

  /// Resolves the set this core keeps with deployment `d` as its target's current one:
  /// ResolveComponentCandidates' answer (200) or the error (its message is the reason).
  http_response resolve_deployment(const deployment_record& d);

  /// The component ARN of `name`.
  std::string component_arn(const std::string& name) const;

private:
  // clientToken idempotency (8 hours): a retry's first answer, a ConflictException for a
  // token used with another request, or nothing for a fresh (or no) token.
  std::optional<http_response> token_answer(const std::string& token,
                                            const std::string& request_hash, int64_t now_ms);
  http_response create_component_version(const http_request& req, int64_t now_ms);
  http_response describe_component(const std::string& arn);
  http_response get_component(const std::string& arn, const http_request& req);
  http_response list_components(const http_request& req);
  http_response list_component_versions(const std::string& arn, const http_request& req);
  http_response delete_component(const std::string& arn);
  http_response set_vendor_guidance(const std::string& arn, const std::string& guidance,
                                    const std::string& message);
  http_response resolve_component_candidates(const http_request& req);
  http_response tags(const std::string& op, const std::string& arn, const http_request& req);
  http_response get_component_version_artifact(const std::string& arn,
                                               const std::string& artifact_name,
                                               const http_request& req, int64_t now_ms);
  http_response presigned_artifact(const http_request& req, int64_t now_ms);
  http_response get_connectivity_info(const std::string& thing);
  http_response update_connectivity_info(const std::string& thing, const http_request& req,
                                         int64_t now_ms);
  http_response create_deployment(const http_request& req, int64_t now_ms);
  http_response get_deployment(const std::string& id);
  // GetDeployment's answer `r` for the operator: with what this core's execution of `id`
  // is (ListEffectiveDeployments' coreDeviceExecutionStatus and reason).
  http_response with_execution(http_response r, const std::string& id);
  http_response list_deployments(const http_request& req);
  http_response cancel_deployment(const std::string& id, int64_t now_ms);
  http_response delete_deployment(const std::string& id, int64_t now_ms);
  http_response list_effective_deployments(const std::string& thing, const http_request& req);
  http_response list_installed_components(const std::string& thing, const http_request& req);
  http_response get_core_device(const std::string& thing);
  http_response list_core_devices(const http_request& req);
  bool throttled(const std::string& key_id, std::chrono::system_clock::time_point now);

  api_settings settings_;
  sigv4_scope scope_;
  component_store& store_;
  std::mutex buckets_mtx_;
  // By access key id, each at its key's rate (the keys are the configuration's: bounded).
  std::map<std::string, grove::token_bucket> buckets_;
  v1_api* v1_ = nullptr;                    // Greengrass v1's group API (v1_api.hpp)
  sigv4_scope ib_scope_;                    // Image Builder's routes sign for `imagebuilder`
  imagebuilder_api ib_;                     // Image Builder's components (imagebuilder.hpp)
};

/// An AWS error response: status, `x-amzn-ErrorType`, and a body with `message` plus
/// `extra` fields.
http_response aws_error(int status, const std::string& type, const std::string& message,
                        nlohmann::json extra = nlohmann::json::object());

} // namespace grove::deployment
