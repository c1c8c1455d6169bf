#include "component_store.hpp"

#include <algorithm>

#include <sqlite3.h>

#include "grove/errors.hpp"
#include "imagebuilder_store.hpp"
#include "reason.hpp"
#include "semver.hpp"
#include "store_rows.hpp"

namespace grove::deployment {

namespace {

constexpr const char* columns =
  "name, version, created_ms, description, publisher, recipe, platforms, state, message, "
  "vendor_guidance, vendor_guidance_message, tags";

// Greengrass v2's clientTokens (CreateComponentVersion, CreateDeployment) and Image
// Builder's (CreateComponent): client_tokens.hpp, each in its own table.
const client_token_table& v2_tokens() {
  static const client_token_table t{"client_tokens"};
  return t;
}

// The tags (JSON object text) of the one row of `table` that `where` (with `keys`) finds,
// replaced with `change(old)` in one transaction: component versions' and deployments'.
// The caller holds the store's lock.
template <class... Keys>
caf::expected<tag_result>
change_tags(grove::store& db, const std::string& table, const std::string& where,
            const std::function<std::optional<std::string>(const std::string&)>& change,
            const Keys&... keys) {
  auto tx = db.begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  std::optional<std::string> old;
  if (auto err = each_row(
        db, "SELECT tags FROM " + table + " WHERE " + where,
        [&](const grove::statement& s) {
          old.emplace(s.column_text(0));
          return false;
        },
        keys...))
    return err;
  if (!old)
    return tag_result::not_found;
  auto next = change(*old);
  if (!next)
    return tag_result::refused;
  if (auto err = db.run("UPDATE " + table + " SET tags = ? WHERE " + where, *next, keys...))
    return err;
  if (auto err = tx->commit())
    return err;
  return tag_result::changed;
}

} // namespace

caf::expected<std::unique_ptr<component_store>>
component_store::open(const std::filesystem::path& file) {
  grove::store_options opts;
  opts.application_id = 0x47524450; // "GRDP"
  opts.kind = "component store";
  opts.synchronous = grove::sync_level::full;
  opts.migrations.push_back({1,
                             "CREATE TABLE component_versions("
                             " name TEXT NOT NULL, version TEXT NOT NULL,"
                             " created_ms INTEGER NOT NULL, description TEXT NOT NULL,"
                             " publisher TEXT NOT NULL, recipe TEXT NOT NULL,"
                             " platforms TEXT NOT NULL, state TEXT NOT NULL,"
                             " message TEXT NOT NULL, vendor_guidance TEXT NOT NULL,"
                             " vendor_guidance_message TEXT NOT NULL, tags TEXT NOT NULL,"
                             " PRIMARY KEY(name, version)) WITHOUT ROWID;"
                               + v2_tokens().schema_sql(),
                             {}});
  // Artifacts (fetched before a version is DEPLOYABLE) and core devices' connectivity.
  opts.migrations.push_back({2,
                             std::string{"ALTER TABLE component_versions"
                                         " ADD COLUMN errors TEXT NOT NULL DEFAULT '{}';"
                                         "ALTER TABLE component_versions"
                                         " ADD COLUMN artifacts TEXT NOT NULL DEFAULT '{}';"}
                               + connectivity_schema_sql,
                             {}});
  // The deployment journal (issue 15): what CreateDeployment asked and its execution here.
  opts.migrations.push_back({3,
                             "CREATE TABLE deployments("
                             " seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
                             " target_arn TEXT NOT NULL, name TEXT NOT NULL,"
                             " revision INTEGER NOT NULL, request TEXT NOT NULL,"
                             " status TEXT NOT NULL, execution TEXT NOT NULL,"
                             " reason TEXT NOT NULL, created_ms INTEGER NOT NULL,"
                             " modified_ms INTEGER NOT NULL);",
                             {}});
  // The installed components (issue 15): their states and effective configurations
  // survive a restart, and configuration builds on them (cumulative, as in Greengrass).
  opts.migrations.push_back({4,
                             "CREATE TABLE installed("
                             " name TEXT PRIMARY KEY, version TEXT NOT NULL,"
                             " state TEXT NOT NULL, details TEXT NOT NULL,"
                             " changed_ms INTEGER NOT NULL, plan TEXT NOT NULL) WITHOUT ROWID;",
                             {}});
  // Image Builder's build components (imagebuilder.hpp) and their clientTokens.
  opts.migrations.push_back({5, imagebuilder_schema_sql(), {}});
  // Tags of deployment ARNs (TagResource and friends): a column of their own, since the
  // request is what CreateDeployment asked and stays as it was; filled from the request's
  // `tags` for deployments journaled before (JSON1 is built into SQLite 3.38+).
  opts.migrations.push_back({6,
                             "ALTER TABLE deployments ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';"
                             "UPDATE deployments SET tags = json_extract(request, '$.tags')"
                             " WHERE json_valid(request)"
                             " AND json_type(request, '$.tags') = 'object';",
                             {}});
  // What a deployment applying now must undo when it fails (issue 15): the set before it
  // and its changes of the kernel's group, written before each change moves on, so a
  // rollback after `kill -9` and the resume undoes them (runner.hpp, apply_journal).
  opts.migrations.push_back({7,
                             "CREATE TABLE rollback_journal("
                             " deployment_id TEXT PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID;",
                             {}});
  // DeleteDeployment hides a deployment from the API but keeps the row: the core's set is
  // built from its targets' current deployments, deleted or not (issue 15).
  opts.migrations.push_back({8,
                             "ALTER TABLE deployments ADD COLUMN deleted_ms INTEGER NOT NULL"
                             " DEFAULT 0;",
                             {}});
  // When a deployment's run began (0: never), so that one canceled or refused before it
  // ran is not what settled last (a start's choice). Rows journaled before: taken as run
  // unless still QUEUED, as they were counted until then.
  opts.migrations.push_back({9,
                             "ALTER TABLE deployments ADD COLUMN started_ms INTEGER NOT NULL"
                             " DEFAULT 0;"
                             "UPDATE deployments SET started_ms = MAX(modified_ms, 1)"
                             " WHERE execution <> 'QUEUED';",
                             {}});
  auto db = grove::store::open(file, std::move(opts));
  if (!db)
    return std::move(db.error());
  return std::unique_ptr<component_store>{new component_store(std::move(*db))};
}

caf::expected<std::optional<token_record>> component_store::token(const std::string& token,
                                                                  int64_t now_ms) {
  std::lock_guard guard{mtx_};
  return v2_tokens().lookup(*db_, token, now_ms);
}

caf::expected<put_result> component_store::put(const component_version& v,
                                               const std::string& token,
                                               const token_record& first_answer,
                                               int64_t expires_ms, token_record& existing) {
  std::lock_guard guard{mtx_};
  auto tx = db_->begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  if (!token.empty()) {
    auto taken = v2_tokens().live(*db_, token, v.created_ms);
    if (!taken)
      return std::move(taken.error());
    if (*taken) {
      existing = std::move(**taken);
      return put_result::token_taken;
    }
  }
  bool exists = false;
  if (auto err = each_row(
        *db_, "SELECT 1 FROM component_versions WHERE name = ? AND version = ?",
        [&](const grove::statement&) {
          exists = true;
          return false;
        },
        v.name, v.version))
    return err;
  if (exists)
    return put_result::exists;
  if (auto err = db_->run(std::string{"INSERT INTO component_versions("} + columns
                            + ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                          v.name, v.version, v.created_ms, v.description, v.publisher, v.recipe,
                          v.platforms, v.state, v.message, v.vendor_guidance,
                          v.vendor_guidance_message, v.tags))
    return err;
  if (!token.empty())
    if (auto err = v2_tokens().put(*db_, token, first_answer, expires_ms))
      return err;
  if (auto err = tx->commit())
    return err;
  return put_result::stored;
}

namespace {

// A version from the current row of a `SELECT <columns>`.
component_version version_row(const grove::statement& s) {
  component_version v;
  auto text = [&](int i) { return std::string{s.column_text(i)}; };
  v.name = text(0);
  v.version = text(1);
  v.created_ms = s.column_int64(2);
  v.description = text(3);
  v.publisher = text(4);
  v.recipe = text(5);
  v.platforms = text(6);
  v.state = text(7);
  v.message = text(8);
  v.vendor_guidance = text(9);
  v.vendor_guidance_message = text(10);
  v.tags = text(11);
  return v;
}

} // namespace

caf::expected<std::optional<component_version>>
component_store::get(const std::string& name, const std::string& version) {
  std::lock_guard guard{mtx_};
  std::optional<component_version> out;
  if (auto err = each_row(
        *db_,
        std::string{"SELECT "} + columns + " FROM component_versions WHERE name = ? AND version = ?",
        [&](const grove::statement& s) {
          out = version_row(s);
          return false;
        },
        name, version))
    return err;
  return out;
}

caf::expected<std::vector<component_version>>
component_store::versions(const std::string& name) {
  std::lock_guard guard{mtx_};
  // Newest first by semver precedence (stored versions always parse).
  std::vector<std::pair<semver, component_version>> keyed;
  if (auto err = each_row(
        *db_, std::string{"SELECT "} + columns + " FROM component_versions WHERE name = ?",
        [&](const grove::statement& s) {
          auto v = version_row(s);
          auto key = parse_semver(v.version).value_or(semver{});
          keyed.emplace_back(std::move(key), std::move(v));
          return true;
        },
        name))
    return err;
  std::stable_sort(keyed.begin(), keyed.end(), [](const auto& x, const auto& y) {
    return compare(x.first, y.first) > 0;
  });
  std::vector<component_version> out;
  for (auto& [k, v] : keyed)
    out.push_back(std::move(v));
  return out;
}

caf::expected<std::vector<std::string>> component_store::names(const std::string& after,
                                                               size_t limit) {
  std::lock_guard guard{mtx_};
  std::vector<std::string> out;
  if (auto err = each_row(
        *db_,
        "SELECT DISTINCT name FROM component_versions WHERE name > ? ORDER BY name LIMIT ?",
        [&](const grove::statement& s) {
          out.emplace_back(s.column_text(0));
          return true;
        },
        after, static_cast<int64_t>(limit)))
    return err;
  return out;
}

caf::expected<tag_result> component_store::modify_tags(
  const std::string& name, const std::string& version,
  const std::function<std::optional<std::string>(const std::string&)>& change) {
  std::lock_guard guard{mtx_};
  return change_tags(*db_, "component_versions", "name = ? AND version = ?", change, name,
                     version);
}

caf::expected<bool> component_store::set_guidance(const std::string& name,
                                                  const std::string& version,
                                                  const std::string& guidance,
                                                  const std::string& message) {
  std::lock_guard guard{mtx_};
  if (auto err = db_->run("UPDATE component_versions SET vendor_guidance = ?, "
                          "vendor_guidance_message = ? WHERE name = ? AND version = ?",
                          guidance, message, name, version))
    return err;
  return sqlite3_changes(db_->native_handle()) > 0;
}

caf::expected<bool> component_store::erase(const std::string& name, const std::string& version) {
  std::lock_guard guard{mtx_};
  if (auto err = db_->run("DELETE FROM component_versions WHERE name = ? AND version = ?", name,
                          version))
    return err;
  return sqlite3_changes(db_->native_handle()) > 0;
}

caf::expected<std::optional<artifact_status>>
component_store::artifacts_of(const std::string& name, const std::string& version) {
  std::lock_guard guard{mtx_};
  std::optional<artifact_status> out;
  if (auto err = each_row(
        *db_, "SELECT errors, artifacts FROM component_versions WHERE name = ? AND version = ?",
        [&](const grove::statement& s) {
          out = artifact_status{std::string{s.column_text(0)}, std::string{s.column_text(1)}};
          return false;
        },
        name, version))
    return err;
  return out;
}

caf::expected<bool> component_store::advance(const std::string& name,
                                             const std::string& version,
                                             const std::string& from, const std::string& to) {
  std::lock_guard guard{mtx_};
  if (auto err = db_->run("UPDATE component_versions SET state = ? "
                          "WHERE name = ? AND version = ? AND state = ?",
                          to, name, version, from))
    return err;
  return sqlite3_changes(db_->native_handle()) > 0;
}

caf::expected<bool> component_store::settle(const std::string& name, const std::string& version,
                                            const std::string& state,
                                            const std::string& message,
                                            const artifact_status& status) {
  std::lock_guard guard{mtx_};
  if (auto err = db_->run("UPDATE component_versions SET state = ?, message = ?, errors = ?, "
                          "artifacts = ? WHERE name = ? AND version = ? "
                          "AND state IN ('REQUESTED', 'INITIATED')",
                          state, message, status.errors, status.artifacts, name, version))
    return err;
  return sqlite3_changes(db_->native_handle()) > 0;
}

caf::expected<std::vector<std::pair<std::string, std::string>>> component_store::unsettled() {
  std::lock_guard guard{mtx_};
  std::vector<std::pair<std::string, std::string>> out;
  if (auto err = each_row(*db_,
                          "SELECT name, version FROM component_versions "
                          "WHERE state IN ('REQUESTED', 'INITIATED') ORDER BY created_ms",
                          [&](const grove::statement& s) {
                            out.emplace_back(std::string{s.column_text(0)},
                                             std::string{s.column_text(1)});
                          }))
    return err;
  return out;
}

caf::expected<std::optional<connectivity_record>>
component_store::connectivity(const std::string& thing) {
  std::lock_guard guard{mtx_};
  return connectivity_get(*db_, thing);
}

caf::expected<int64_t> component_store::set_connectivity(const std::string& thing,
                                                         const nlohmann::json& info,
                                                         int64_t now_ms) {
  std::lock_guard guard{mtx_};
  return connectivity_put(*db_, thing, info, now_ms);
}

caf::expected<std::optional<int64_t>> component_store::update_connectivity(
  const std::string& thing, const std::function<nlohmann::json(const nlohmann::json&)>& change,
  int64_t now_ms) {
  std::lock_guard guard{mtx_};
  return connectivity_update(*db_, thing, change, now_ms);
}

namespace {

constexpr const char* deployment_columns =
  "seq, id, target_arn, name, revision, request, status, execution, reason, created_ms, "
  "modified_ms, tags, deleted_ms, started_ms";

deployment_record deployment_row(const grove::statement& s) {
  deployment_record d;
  auto text = [&](int i) { return std::string{s.column_text(i)}; };
  d.seq = s.column_int64(0);
  d.id = text(1);
  d.target_arn = text(2);
  d.name = text(3);
  d.revision = s.column_int64(4);
  d.request = text(5);
  d.status = text(6);
  d.execution = text(7);
  d.reason = text(8);
  d.created_ms = s.column_int64(9);
  d.modified_ms = s.column_int64(10);
  d.tags = text(11);
  d.deleted_ms = s.column_int64(12);
  d.started_ms = s.column_int64(13);
  return d;
}

} // namespace

namespace {

// keeps_its_set() of a row that is no longer ACTIVE or COMPLETED, in SQL (`t`: the
// table's alias and a dot, or ""): the set its target falls back to.
std::string keeps_sql(const std::string& t) {
  return "(" + t + "execution = 'SUCCEEDED' OR (" + t + "execution = 'FAILED' AND " + t
         + "started_ms <> 0 AND json_valid(" + t + "request) AND json_extract(" + t
         + "request, '$.deploymentPolicies.failureHandlingPolicy') = 'DO_NOTHING'))";
}

} // namespace

bool keeps_its_set(const deployment_record& d) {
  if (d.status == "ACTIVE" || d.status == "COMPLETED" || d.execution == "SUCCEEDED")
    return true;
  // A run that FAILED with DO_NOTHING left the core as it stood (Greengrass then records
  // the deployment's root components as its target's all the same): its set, not the
  // one before, is what the target keeps. One that failed before its run changed nothing.
  if (d.execution != "FAILED" || d.started_ms == 0)
    return false;
  auto req = nlohmann::json::parse(d.request, nullptr, false);
  return req.is_object() && req.contains("deploymentPolicies")
         && req["deploymentPolicies"].is_object()
         && req["deploymentPolicies"].value("failureHandlingPolicy", "") == "DO_NOTHING";
}

std::map<std::string, const deployment_record*>
effective_by_target(const std::vector<deployment_record>& all) {
  std::map<std::string, const deployment_record*> out;
  for (const auto& d : all) // newest first: the first that keeps its set wins
    if (keeps_its_set(d))
      out.emplace(d.target_arn, &d);
  return out;
}

core_journal_state core_journal_state_of(const std::vector<deployment_record>& all) {
  core_journal_state out;
  for (const auto& [target, d] : effective_by_target(all))
    if (!out.current || d->seq > out.current->seq)
      out.current = d;
  for (const auto& d : all)
    if ((d.status == "COMPLETED" || d.status == "FAILED" || d.status == "CANCELED")
        && d.started_ms != 0 && (!out.settled || d.modified_ms > out.settled->modified_ms))
      out.settled = &d;
  return out;
}

caf::expected<put_result> component_store::put_deployment(deployment_record& d,
                                                          const std::string& token,
                                                          const token_record& first_answer,
                                                          int64_t expires_ms,
                                                          token_record& existing) {
  std::lock_guard guard{mtx_};
  auto tx = db_->begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  if (!token.empty()) {
    auto taken = v2_tokens().live(*db_, token, d.created_ms);
    if (!taken)
      return std::move(taken.error());
    if (*taken) {
      existing = std::move(**taken);
      return put_result::token_taken;
    }
  }
  int64_t revision = 0;
  if (auto err = each_row(
        *db_, "SELECT COALESCE(MAX(revision), 0) FROM deployments WHERE target_arn = ?",
        [&](const grove::statement& s) {
          revision = s.column_int64(0);
          return false;
        },
        d.target_arn))
    return err;
  d.revision = revision + 1;
  if (auto err = db_->run("UPDATE deployments SET status = 'INACTIVE', modified_ms = ? "
                          "WHERE target_arn = ? AND status <> 'CANCELED' AND status <> 'INACTIVE'",
                          d.created_ms, d.target_arn))
    return err;
  // Deleted rows this deployment supersedes are no longer what the core runs: purged, unless
  // a rollback journal row still needs them (the revision is counted above, so stays monotonic).
  // The target's newest SUCCEEDED (or DO_NOTHING FAILED) one stays too: should the new
  // one fail, the target's set is that one's again (effective_by_target).
  if (auto err = db_->run("DELETE FROM deployments WHERE target_arn = ? AND deleted_ms <> 0 "
                          "AND status = 'INACTIVE' "
                          "AND id NOT IN (SELECT deployment_id FROM rollback_journal) "
                          "AND seq <> COALESCE((SELECT MAX(seq) FROM deployments WHERE "
                          "target_arn = ? AND " + keeps_sql("") + "), 0)",
                          d.target_arn, d.target_arn))
    return err;
  if (auto err = db_->run("INSERT INTO deployments(id, target_arn, name, revision, request, "
                          "status, execution, reason, created_ms, modified_ms, tags) "
                          "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                          d.id, d.target_arn, d.name, d.revision, d.request, d.status,
                          d.execution, d.reason, d.created_ms, d.modified_ms, d.tags))
    return err;
  d.seq = sqlite3_last_insert_rowid(db_->native_handle());
  if (!token.empty())
    if (auto err = v2_tokens().put(*db_, token, first_answer, expires_ms))
      return err;
  if (auto err = tx->commit())
    return err;
  return put_result::stored;
}

caf::expected<std::optional<deployment_record>>
component_store::deployment(const std::string& id) {
  std::lock_guard guard{mtx_};
  std::optional<deployment_record> out;
  if (auto err = each_row(
        *db_, std::string{"SELECT "} + deployment_columns + " FROM deployments WHERE id = ?",
        [&](const grove::statement& s) {
          out = deployment_row(s);
          return false;
        },
        id))
    return err;
  return out;
}

caf::expected<std::vector<deployment_record>> component_store::deployments() {
  std::lock_guard guard{mtx_};
  std::vector<deployment_record> out;
  if (auto err = each_row(
        *db_, std::string{"SELECT "} + deployment_columns + " FROM deployments ORDER BY seq DESC",
        [&](const grove::statement& s) {
          out.push_back(deployment_row(s));
          return true;
        }))
    return err;
  return out;
}

caf::expected<bool> component_store::set_deployment_state(const std::string& id,
                                                          const std::vector<std::string>& from,
                                                          const std::string& status,
                                                          const std::string& execution,
                                                          const std::string& reason,
                                                          int64_t now_ms, bool keep_rollback) {
  std::lock_guard guard{mtx_};
  auto tx = db_->begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  std::string current;
  bool found = false;
  if (auto err = each_row(
        *db_, "SELECT status FROM deployments WHERE id = ?",
        [&](const grove::statement& s) {
          current = std::string{s.column_text(0)};
          found = true;
          return false;
        },
        id))
    return err;
  if (!found || (!from.empty() && std::find(from.begin(), from.end(), current) == from.end()))
    return false;
  if (auto err = db_->run("UPDATE deployments SET status = ?, execution = ?, reason = ?, "
                          "modified_ms = ? WHERE id = ?",
                          status, execution, reason, now_ms, id))
    return err;
  // Settled (or canceled): nothing left for a resume to roll back; in the same transaction,
  // so that kill -9 cannot leave the row of a settled deployment.
  if (status != "ACTIVE" && !keep_rollback)
    if (auto err = db_->run("DELETE FROM rollback_journal WHERE deployment_id = ?", id))
      return err;
  if (auto err = tx->commit())
    return err;
  return true;
}

caf::expected<bool> component_store::start_deployment(const std::string& id, int64_t now_ms) {
  std::lock_guard guard{mtx_};
  if (auto err = db_->run("UPDATE deployments SET execution = 'IN_PROGRESS', modified_ms = ?, "
                          "started_ms = ? WHERE id = ? AND status = 'ACTIVE'",
                          now_ms, std::max<int64_t>(now_ms, 1), id))
    return err;
  return sqlite3_changes(db_->native_handle()) > 0;
}

caf::expected<tag_result> component_store::modify_deployment_tags(
  const std::string& id,
  const std::function<std::optional<std::string>(const std::string&)>& change) {
  std::lock_guard guard{mtx_};
  // A deleted deployment's ARN is gone (DeleteDeployment).
  return change_tags(*db_, "deployments", "id = ? AND deleted_ms = 0", change, id);
}

caf::expected<delete_result> component_store::delete_deployment(const std::string& id,
                                                                int64_t now_ms) {
  std::lock_guard guard{mtx_};
  auto tx = db_->begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  std::optional<std::string> status;
  if (auto err = each_row(
        *db_, "SELECT status FROM deployments WHERE id = ? AND deleted_ms = 0",
        [&](const grove::statement& s) {
          status = std::string{s.column_text(0)};
          return false;
        },
        id))
    return err;
  if (!status)
    return delete_result::not_found;
  // Checked in the transaction: one ACTIVE is applying, its rollback journal still its run's.
  if (*status == "ACTIVE")
    return delete_result::active;
  // A CreateDeployment retry with the deleted one's clientToken creates a new deployment
  // instead of answering an id that is gone.
  if (auto err = db_->run("DELETE FROM client_tokens WHERE CASE WHEN json_valid(response) "
                          "THEN json_extract(response, '$.deploymentId') END = ?",
                          id))
    return err;
  // An INACTIVE one is no target's current deployment: nothing the core runs needs its
  // row, unless a rollback journal row (a change of the group left undecided) does.
  // Unless it is its target's newest SUCCEEDED (or DO_NOTHING FAILED) one: the set the
  // target falls back to while newer ones fail (effective_by_target).
  if (auto err = db_->run("DELETE FROM deployments WHERE id = ? AND status = 'INACTIVE' AND "
                          "id NOT IN (SELECT deployment_id FROM rollback_journal) AND "
                          "seq <> COALESCE((SELECT MAX(o.seq) FROM deployments o WHERE "
                          "o.target_arn = deployments.target_arn AND "
                          + keeps_sql("o.") + "), 0)",
                          id))
    return err;
  // The tags go, CreateDeployment's copy in the kept request too.
  if (auto err = db_->run("UPDATE deployments SET deleted_ms = ?, tags = '{}', "
                          "request = CASE WHEN json_valid(request) "
                          "THEN json_remove(request, '$.tags') ELSE request END WHERE id = ?",
                          std::max<int64_t>(now_ms, 1), id))
    return err;
  if (auto err = tx->commit())
    return err;
  return delete_result::deleted;
}

caf::error component_store::put_installed(const std::vector<installed_row>& rows) {
  std::lock_guard guard{mtx_};
  auto tx = db_->begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  if (auto err = db_->run("DELETE FROM installed"))
    return err;
  for (const auto& r : rows)
    if (auto err = db_->run("INSERT INTO installed(name, version, state, details, changed_ms, "
                            "plan) VALUES(?, ?, ?, ?, ?, ?)",
                            r.name, r.version, r.state, r.details, r.changed_ms, r.plan))
      return err;
  return tx->commit();
}

caf::expected<std::vector<installed_row>> component_store::installed() {
  std::lock_guard guard{mtx_};
  std::vector<installed_row> out;
  if (auto err = each_row(
        *db_,
        "SELECT name, version, state, details, changed_ms, plan FROM installed ORDER BY name",
        [&](const grove::statement& s) {
          out.push_back(installed_row{std::string{s.column_text(0)}, std::string{s.column_text(1)},
                                      std::string{s.column_text(2)}, std::string{s.column_text(3)},
                                      s.column_int64(4), std::string{s.column_text(5)}});
          return true;
        }))
    return err;
  return out;
}

caf::error component_store::put_rollback(const std::string& deployment_id,
                                         const std::string& state) {
  std::lock_guard guard{mtx_};
  // Only while the deployment's run may go on: ACTIVE, or CANCELED while it applies (the
  // run goes on; a start decides what kill -9 left of it). One settled meanwhile (FAILED,
  // COMPLETED, INACTIVE) resumes never.
  return db_->run("INSERT INTO rollback_journal(deployment_id, state) SELECT ?, ?"
                  " WHERE EXISTS(SELECT 1 FROM deployments WHERE id = ?"
                  " AND status IN ('ACTIVE', 'CANCELED'))"
                  " ON CONFLICT(deployment_id) DO UPDATE SET state = excluded.state",
                  deployment_id, state, deployment_id);
}

caf::error component_store::end_canceled_run(const std::string& deployment_id,
                                             bool undecided) {
  std::lock_guard guard{mtx_};
  const char* canceled = " WHERE deployment_id = ? AND EXISTS(SELECT 1 FROM deployments"
                         " WHERE id = ? AND status = 'CANCELED')";
  if (!undecided)
    return db_->run(std::string{"DELETE FROM rollback_journal"} + canceled, deployment_id,
                    deployment_id);
  return db_->run(std::string{"UPDATE rollback_journal SET state = json_set(state, '$.ended', "
                              "json('true'))"}
                    + canceled,
                  deployment_id, deployment_id);
}

caf::error component_store::end_canceled_run_as(const std::string& deployment_id,
                                                bool succeeded, int64_t now_ms) {
  std::lock_guard guard{mtx_};
  return db_->run("UPDATE deployments SET execution = ?, modified_ms = ? WHERE id = ? AND "
                  "status = 'CANCELED'",
                  std::string{succeeded ? "SUCCEEDED" : "CANCELED"}, now_ms, deployment_id);
}

caf::expected<bool> component_store::end_replaced_run(const std::string& deployment_id,
                                                      bool ran, bool succeeded,
                                                      const std::string& reason,
                                                      int64_t now_ms, bool undecided) {
  std::lock_guard guard{mtx_};
  auto tx = db_->begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  std::string execution = !ran ? "CANCELED" : succeeded ? "SUCCEEDED" : "FAILED";
  // Not run here: QUEUED, or IN_PROGRESS from a run a restart cut short (never resumed).
  if (auto err = db_->run(std::string{"UPDATE deployments SET execution = ?, reason = ?, "
                                      "modified_ms = ? WHERE id = ? AND status = 'INACTIVE' "
                                      "AND "}
                            + (ran ? "execution = 'IN_PROGRESS'"
                                   : "execution IN ('QUEUED', 'IN_PROGRESS')"),
                          execution, reason, now_ms, deployment_id))
    return err;
  if (sqlite3_changes(db_->native_handle()) == 0)
    return false;
  if (!undecided)
    if (auto err = db_->run("DELETE FROM rollback_journal WHERE deployment_id = ?",
                            deployment_id))
      return err;
  if (auto err = tx->commit())
    return err;
  return true;
}

caf::expected<bool> component_store::fail_replaced_run(const std::string& deployment_id,
                                                       const std::string& reason,
                                                       int64_t now_ms) {
  std::lock_guard guard{mtx_};
  if (auto err = db_->run("UPDATE deployments SET execution = 'FAILED', reason = ?, "
                          "modified_ms = ? WHERE id = ? AND status = 'INACTIVE' AND "
                          "execution = 'SUCCEEDED'",
                          reason, now_ms, deployment_id))
    return err;
  return sqlite3_changes(db_->native_handle()) > 0;
}

caf::expected<size_t> component_store::end_replaced_runs(const std::string& reason,
                                                         int64_t now_ms) {
  std::lock_guard guard{mtx_};
  if (auto err = db_->run("UPDATE deployments SET execution = 'CANCELED', reason = ?, "
                          "modified_ms = ? WHERE status = 'INACTIVE' AND "
                          "execution IN ('QUEUED', 'IN_PROGRESS')",
                          reason, now_ms))
    return err;
  return static_cast<size_t>(sqlite3_changes(db_->native_handle()));
}

caf::expected<std::optional<std::string>>
component_store::rollback_of(const std::string& deployment_id) {
  std::lock_guard guard{mtx_};
  std::optional<std::string> out;
  if (auto err = each_row(*db_, "SELECT state FROM rollback_journal WHERE deployment_id = ?",
                          [&](const grove::statement& s) {
                            out = std::string{s.column_text(0)};
                            return false;
                          },
                          deployment_id))
    return err;
  return out;
}

caf::expected<std::map<std::string, std::string>> component_store::rollbacks() {
  std::lock_guard guard{mtx_};
  std::map<std::string, std::string> out;
  if (auto err = each_row(*db_, "SELECT deployment_id, state FROM rollback_journal",
                          [&](const grove::statement& s) {
                            out.emplace(std::string{s.column_text(0)},
                                        std::string{s.column_text(1)});
                            return true;
                          }))
    return err;
  return out;
}

caf::error component_store::forget_rollback(const std::string& deployment_id,
                                           const std::string& decided) {
  std::lock_guard guard{mtx_};
  auto tx = db_->begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  if (auto err = db_->run("DELETE FROM rollback_journal WHERE deployment_id = ?", deployment_id))
    return err;
  if (!decided.empty()) {
    std::optional<std::string> reason;
    if (auto err = each_row(
          *db_, "SELECT reason FROM deployments WHERE id = ?",
          [&](const grove::statement& s) {
            reason = std::string{s.column_text(0)};
            return false;
          },
          deployment_id))
      return err;
    if (reason)
      if (auto err = db_->run("UPDATE deployments SET reason = ? WHERE id = ?",
                              append_note(*reason, decided), deployment_id))
        return err;
  }
  return tx->commit();
}

} // namespace grove::deployment
