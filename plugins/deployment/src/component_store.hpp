#pragma once

// The component store: every component version's recipe and status in SQLite (through
// grove::store, WAL, synchronous=FULL, so a version CreateComponentVersion answered for
// survives kill -9), plus clientToken records with their expiry. Thread-safe: the HTTP
// server's threads share one store behind a mutex.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include "client_tokens.hpp"
#include "connectivity.hpp"
#include "grove/store.hpp"
#include "recipe.hpp"

namespace grove::deployment {

/// One stored component version.
struct component_version {
  /// ComponentName.
  std::string name;
  /// ComponentVersion (text as in the recipe).
  std::string version;
  /// Creation time, ms since the epoch.
  int64_t created_ms = 0;
  /// ComponentDescription.
  std::string description;
  /// ComponentPublisher.
  std::string publisher;
  /// The recipe (JSON text).
  std::string recipe;
  /// DescribeComponent's platforms (JSON text).
  std::string platforms;
  /// componentState.
  std::string state;
  /// status.message.
  std::string message;
  /// status.vendorGuidance.
  std::string vendor_guidance = "ACTIVE";
  /// status.vendorGuidanceMessage.
  std::string vendor_guidance_message;
  /// Tags (JSON object text).
  std::string tags = "{}";
};

/// Outcome of put(): stored, or what was there.
enum class put_result {
  /// The version is stored (with its token).
  stored,
  /// That name and version exist already.
  exists,
  /// The token is taken (retry: see the record).
  token_taken,
};

/// Outcome of modify_tags().
enum class tag_result {
  /// The new tags are stored.
  changed,
  /// No such version.
  not_found,
  /// The change function refused.
  refused,
};

/// What became of a version's artifacts (schema 2).
struct artifact_status {
  /// status.errors: Uri → what went wrong (JSON object text).
  std::string errors = "{}";
  /// Uri → SHA-256 (hex) of the stored artifact (JSON object text).
  std::string artifacts = "{}";
};

/// One deployment of this core's journal (schema 3): what CreateDeployment asked and
/// where its execution on this core stands.
struct deployment_record {
  /// deploymentId (a UUID).
  std::string id;
  /// targetArn: this core's thing or a thing group it belongs to.
  std::string target_arn;
  /// deploymentName.
  std::string name;
  /// revisionId: 1, 2, ... per target.
  int64_t revision = 0;
  /// The request's components, deploymentPolicies, iotJobConfiguration, parentTargetArn
  /// and tags (JSON object text), as GetDeployment gives them back.
  std::string request = "{}";
  /// deploymentStatus: ACTIVE, COMPLETED, CANCELED, FAILED or INACTIVE.
  std::string status = "ACTIVE";
  /// coreDeviceExecutionStatus on this core: QUEUED, IN_PROGRESS, SUCCEEDED, FAILED,
  /// CANCELED, REJECTED.
  std::string execution = "QUEUED";
  /// Why it failed (or "").
  std::string reason;
  /// Creation and last change, ms since the epoch.
  int64_t created_ms = 0;
  /// Last change of status or execution.
  int64_t modified_ms = 0;
  /// Insertion order (newest highest).
  int64_t seq = 0;
  /// The tags of its ARN (schema 6; JSON object text): CreateDeployment's `tags`, then
  /// TagResource and UntagResource. They go with the deployment when it is deleted.
  std::string tags = "{}";
  /// When DeleteDeployment deleted it, ms since the epoch (schema 8); 0: not deleted. A
  /// deleted deployment is gone from the API (Get, List, ListEffective, tags) but stays
  /// what the core runs: its target's kept components, what a start applies again.
  int64_t deleted_ms = 0;
  /// When its run on this core began (prepared, about to change the set), ms since the
  /// epoch (schema 9); 0: it never ran (failed at resolution or preparation, canceled or
  /// replaced before its turn), so it changed nothing on the core.
  int64_t started_ms = 0;
};

/// Whether the core keeps the components `d` names for its target: it is applying
/// (ACTIVE) or applied (COMPLETED, or SUCCEEDED and replaced since, INACTIVE), or its run
/// FAILED with failureHandlingPolicy DO_NOTHING (the core keeps what it left, as
/// Greengrass records a DO_NOTHING deployment's components as its target's).
bool keeps_its_set(const deployment_record& d);

/// Each target's deployment whose components the core keeps for it, by target ARN, from
/// `all` (newest first, as component_store::deployments() lists them): the newest that
/// keeps_its_set(). A newer one that FAILED (with ROLLBACK, or before its run), or was
/// canceled or replaced before it ran,
/// leaves the target's last applied set in force, as Greengrass keeps what a target's last
/// successful deployment put on the device. Deleted ones count (DeleteDeployment does not
/// change what the core runs).
std::map<std::string, const deployment_record*>
effective_by_target(const std::vector<deployment_record>& all);

/// What a start of the core finds in the journal (of the deployments `all`, newest first,
/// already narrowed to this core's targets).
struct core_journal_state {
  /// The deployment applied again: the newest of effective_by_target(); null: none.
  const deployment_record* current = nullptr;
  /// The deployment whose run ended last (COMPLETED, FAILED or CANCELED, latest
  /// modified); one that never ran (started_ms 0: canceled or refused before its run)
  /// changed nothing and does not count. Null: none.
  const deployment_record* settled = nullptr;
};

/// core_journal_state of `all` (newest first, this core's targets only).
core_journal_state core_journal_state_of(const std::vector<deployment_record>& all);

/// What component_store::delete_deployment() did.
enum class delete_result {
  /// Deleted (hidden from the API).
  deleted,
  /// No such deployment (or deleted before).
  not_found,
  /// ACTIVE: it must be canceled first.
  active,
};

/// A component installed on this core, as the runner last had it.
struct installed_row {
  /// ComponentName, ComponentVersion, lifecycle state and its details.
  std::string name, version, state, details;
  /// Last state change, ms since the epoch.
  int64_t changed_ms = 0;
  /// The rest of its plan (recipe, effective configuration, root, user, paths) as JSON.
  std::string plan;
};

/// The store (see the file comment).
class component_store {
public:
  /// Opens or creates `file`.
  static caf::expected<std::unique_ptr<component_store>> open(const std::filesystem::path& file);

  /// The live record of `token`, if any (expired ones are deleted on the way).
  caf::expected<std::optional<token_record>> token(const std::string& token, int64_t now_ms);

  /// Stores `v` and, when `token` is not empty, its answer (one transaction). `answer`
  /// gets the token's existing record when that is the outcome.
  caf::expected<put_result> put(const component_version& v, const std::string& token,
                                const token_record& first_answer, int64_t expires_ms,
                                token_record& existing);

  /// One version.
  caf::expected<std::optional<component_version>> get(const std::string& name,
                                                      const std::string& version);

  /// Every version of a component, newest (semver) first.
  caf::expected<std::vector<component_version>> versions(const std::string& name);

  /// Names after `after` (sorted), at most `limit`.
  caf::expected<std::vector<std::string>> names(const std::string& after, size_t limit);

  /// Replaces the tags (JSON object text) of a version with `change(old)` in one
  /// transaction; `change` returning nullopt refuses (nothing is written).
  caf::expected<tag_result>
  modify_tags(const std::string& name, const std::string& version,
              const std::function<std::optional<std::string>(const std::string&)>& change);

  /// Sets a version's vendorGuidance and its message; false when there is no such version.
  caf::expected<bool> set_guidance(const std::string& name, const std::string& version,
                                   const std::string& guidance, const std::string& message);

  /// Deletes a version; false when there was none.
  caf::expected<bool> erase(const std::string& name, const std::string& version);

  /// The artifact status of a version; nullopt when there is no such version.
  caf::expected<std::optional<artifact_status>> artifacts_of(const std::string& name,
                                                             const std::string& version);

  /// Moves a version from state `from` to `to` (REQUESTED → INITIATED); false when it is
  /// not (or no longer) in `from`.
  caf::expected<bool> advance(const std::string& name, const std::string& version,
                              const std::string& from, const std::string& to);

  /// Ends a fetch: a REQUESTED or INITIATED version becomes `state` (DEPLOYABLE or
  /// FAILED) with its message, errors and artifacts, in one transaction; false when the
  /// version is gone or settled already.
  caf::expected<bool> settle(const std::string& name, const std::string& version,
                             const std::string& state, const std::string& message,
                             const artifact_status& status);

  /// Versions still REQUESTED or INITIATED (a fetch to do or resume), as (name, version).
  caf::expected<std::vector<std::pair<std::string, std::string>>> unsettled();

  /// The connectivity information of `thing` (connectivity.hpp).
  caf::expected<std::optional<connectivity_record>> connectivity(const std::string& thing);

  /// Changes the connectivity information of `thing` in one transaction
  /// (connectivity_update): its new version, or nullopt when nothing changed.
  caf::expected<std::optional<int64_t>>
  update_connectivity(const std::string& thing,
                      const std::function<nlohmann::json(const nlohmann::json&)>& change,
                      int64_t now_ms);

  /// Replaces the connectivity information of `thing`; its new version.
  caf::expected<int64_t> set_connectivity(const std::string& thing, const nlohmann::json& info,
                                          int64_t now_ms);

  /// Stores a new deployment `d` (its seq and revision are assigned here and written
  /// back) and, when `token` is not empty, its first answer, in one transaction; earlier
  /// deployments of the same target that are not CANCELED become INACTIVE (a target has
  /// one current deployment), and the deleted INACTIVE ones without a rollback journal
  /// row are erased, but for the target's newest SUCCEEDED one (the set the target falls
  /// back to should the new one fail, effective_by_target()). token_taken fills `existing`.
  caf::expected<put_result> put_deployment(deployment_record& d, const std::string& token,
                                           const token_record& first_answer,
                                           int64_t expires_ms, token_record& existing);

  /// One deployment.
  caf::expected<std::optional<deployment_record>> deployment(const std::string& id);

  /// Every deployment, newest first.
  caf::expected<std::vector<deployment_record>> deployments();

  /// Sets a deployment's status, execution and reason (modified at `now_ms`); false when
  /// there is no such deployment or its status is not one of `from` (empty: any). A
  /// status but ACTIVE deletes its rollback journal in the same transaction, unless
  /// `keep_rollback` (it holds a change of the group not decided yet: the next start
  /// decides it, see rollbacks()).
  caf::expected<bool> set_deployment_state(const std::string& id,
                                           const std::vector<std::string>& from,
                                           const std::string& status,
                                           const std::string& execution,
                                           const std::string& reason, int64_t now_ms,
                                           bool keep_rollback = false);

  /// Marks deployment `id`'s run on this core begun at `now_ms` (IN_PROGRESS,
  /// started_ms); false when it is not ACTIVE (canceled or replaced meanwhile: it must not
  /// run).
  caf::expected<bool> start_deployment(const std::string& id, int64_t now_ms);

  /// Changes the tags of deployment `id` in one transaction: `change` gets the stored
  /// tags (JSON object text) and returns the new ones, or nullopt to refuse.
  caf::expected<tag_result> modify_deployment_tags(
    const std::string& id,
    const std::function<std::optional<std::string>(const std::string&)>& change);

  /// DeleteDeployment: marks a deployment that is not ACTIVE deleted at `now_ms`, drops
  /// its tags and the clientToken that names it. The row stays for the core
  /// (deployment_record::deleted_ms): deleting a deployment does not change what the core
  /// runs, as in Greengrass (the cloud's list of deployments is not the device's effective
  /// set). An INACTIVE one without a rollback journal row is erased at once, and
  /// put_deployment() erases its target's deleted INACTIVE ones: the core no longer runs
  /// them. Kept all the same: the target's newest SUCCEEDED one (its fallback).
  caf::expected<delete_result> delete_deployment(const std::string& id, int64_t now_ms);

  /// Replaces the installed components (the runner's set, ListInstalledComponents) with
  /// `rows`, in one transaction.
  caf::error put_installed(const std::vector<installed_row>& rows);

  /// The installed components, by name.
  caf::expected<std::vector<installed_row>> installed();

  /// Journals what deployment `deployment_id` must undo when it fails (schema 7; JSON
  /// text the plugin writes: the set before it and its group changes), replacing what was;
  /// nothing unless the deployment is ACTIVE, or CANCELED (its run goes on after a
  /// cancel). set_deployment_state() to another status deletes it in its transaction (but
  /// see keep_rollback).
  caf::error put_rollback(const std::string& deployment_id, const std::string& state);

  /// The run of deployment `deployment_id`, CANCELED while it applied, ended: its rollback
  /// journal goes, or, when it holds a change of the group left `undecided`, is marked
  /// ended (`"ended": true`: the run's own rollback was done) for the next start to
  /// decide that change alone. Nothing when the deployment is not CANCELED.
  caf::error end_canceled_run(const std::string& deployment_id, bool undecided);

  /// How the run of deployment `deployment_id`, CANCELED while it applied, ended (at
  /// `now_ms`): `succeeded`, its execution is SUCCEEDED, since the core runs its set (a
  /// cancel changes nothing on a core that has the deployment) and its target keeps it
  /// (effective_by_target); else CANCELED (rolled back, or left as its policy says).
  /// Nothing when the deployment is not CANCELED.
  caf::error end_canceled_run_as(const std::string& deployment_id, bool succeeded,
                                 int64_t now_ms);

  /// How the run of deployment `deployment_id` ended when a newer deployment to its
  /// target replaced it (INACTIVE) while it ran: its execution is SUCCEEDED or FAILED
  /// (with `reason`), the run's own outcome, not IN_PROGRESS forever; its rollback journal
  /// goes unless `undecided` (as set_deployment_state's keep_rollback). Without `ran` (it
  /// was replaced before its run, which then never began) its execution is CANCELED, as
  /// Greengrass cancels the job a newer revision supersedes (also when a run of it that a
  /// restart cut short was not resumed). Nothing (false) unless it is INACTIVE and
  /// IN_PROGRESS (`ran`), or QUEUED or IN_PROGRESS (not `ran`).
  caf::expected<bool> end_replaced_run(const std::string& deployment_id, bool ran,
                                       bool succeeded, const std::string& reason,
                                       int64_t now_ms, bool undecided = false);

  /// A run of replaced (INACTIVE) deployment `deployment_id` that ended SUCCEEDED went
  /// BROKEN within its timeout after all: its execution FAILED with `reason`. Nothing
  /// (false) unless it is INACTIVE and SUCCEEDED.
  caf::expected<bool> fail_replaced_run(const std::string& deployment_id,
                                        const std::string& reason, int64_t now_ms);

  /// At start: every run of a replaced (INACTIVE) deployment still QUEUED or IN_PROGRESS
  /// (a restart of the core cut it short, or came before its turn) ends CANCELED with
  /// `reason`: nothing runs it again (the newer deployment applies). Their number.
  caf::expected<size_t> end_replaced_runs(const std::string& reason, int64_t now_ms);

  /// What put_rollback() kept for `deployment_id`; nullopt: nothing.
  caf::expected<std::optional<std::string>> rollback_of(const std::string& deployment_id);

  /// Every rollback journal, by deployment id (at start: the one of the deployment that
  /// resumes, and those kept for a change of the group left undecided).
  caf::expected<std::map<std::string, std::string>> rollbacks();

  /// Forgets what put_rollback() kept for `deployment_id`; a `decided` note (what a start
  /// decided of a change of the group left undecided) is added to the deployment's reason
  /// in the same transaction (reason.hpp's append_note: the notes whole, within
  /// max_reason_bytes), its modified time unchanged (what settled last stays so).
  caf::error forget_rollback(const std::string& deployment_id, const std::string& decided = {});

  /// Runs `f(grove::store&)` under the store's lock and returns what it returns: for
  /// tables kept beside the component store by functions of their own (Image Builder's
  /// components, imagebuilder_store.hpp).
  template <class F>
  auto with_store(F&& f) {
    std::lock_guard guard{mtx_};
    return f(*db_);
  }

private:
  explicit component_store(std::unique_ptr<grove::store> db) : db_(std::move(db)) {
    // Nothing.
  }

  std::mutex mtx_;
  std::unique_ptr<grove::store> db_;
};

} // namespace grove::deployment
