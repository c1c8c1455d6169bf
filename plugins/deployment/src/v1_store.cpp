#include "v1_store.hpp"

#include <sqlite3.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "grove/errors.hpp"

#include "store_rows.hpp"

namespace grove::deployment {

namespace {

constexpr const char* resource_columns =
  "SELECT kind, id, name, created_ms, updated_ms, latest, tags, rowid FROM v1_resources ";
constexpr const char* version_columns =
  "SELECT kind, id, version, created_ms, definition, rowid FROM v1_versions ";
constexpr const char* deployment_columns =
  "SELECT group_id, id, type, version, status, error_message, error_details, created_ms, "
  "updated_ms, rowid FROM v1_deployments ";

// Greengrass v1's X-Amzn-Client-Tokens: client_tokens.hpp, as the other two APIs'.
const client_token_table& v1_tokens() {
  static const client_token_table t{"v1_client_tokens"};
  return t;
}

} // namespace

caf::expected<std::unique_ptr<v1_store>> v1_store::open(const std::filesystem::path& file) {
  grove::store_options opts;
  opts.application_id = 0x47525631; // "GRV1"
  opts.kind = "group store";
  opts.synchronous = grove::sync_level::full;
  opts.migrations.push_back({1,
                             "CREATE TABLE v1_resources("
                             " kind TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,"
                             " created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,"
                             " latest TEXT NOT NULL, tags TEXT NOT NULL,"
                             " UNIQUE(kind, id));"
                             "CREATE TABLE v1_versions("
                             " kind TEXT NOT NULL, id TEXT NOT NULL, version TEXT NOT NULL,"
                             " created_ms INTEGER NOT NULL, definition TEXT NOT NULL,"
                             " UNIQUE(kind, id, version));"
                             "CREATE TABLE v1_deployments("
                             " group_id TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL,"
                             " version TEXT NOT NULL, status TEXT NOT NULL,"
                             " error_message TEXT NOT NULL, error_details TEXT NOT NULL,"
                             " created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,"
                             " UNIQUE(group_id, id));"
                               + v1_tokens().schema_sql(),
                             {}});
  // Group CAs (README.md, "Group CA"), schema 2.
  opts.migrations.push_back({2,
                             "CREATE TABLE v1_group_cas("
                             " group_id TEXT NOT NULL, id TEXT NOT NULL,"
                             " certificate TEXT NOT NULL, created_ms INTEGER NOT NULL,"
                             " not_after_ms INTEGER NOT NULL, UNIQUE(group_id, id));"
                             "CREATE TABLE v1_group_cert_config("
                             " group_id TEXT PRIMARY KEY, cert_expiry_ms INTEGER NOT NULL);",
                             {}});
  // Role associations (scope `group:<id>` or `account`) and bulk deployments with their
  // processed records.
  opts.migrations.push_back({3,
                             "CREATE TABLE v1_roles(scope TEXT PRIMARY KEY,"
                             " role_arn TEXT NOT NULL, associated_ms INTEGER NOT NULL)"
                             " WITHOUT ROWID;"
                             "CREATE TABLE v1_bulk("
                             " id TEXT NOT NULL UNIQUE, status TEXT NOT NULL,"
                             " input_uri TEXT NOT NULL, role_arn TEXT NOT NULL,"
                             " tags TEXT NOT NULL, error_message TEXT NOT NULL,"
                             " error_details TEXT NOT NULL, processed INTEGER NOT NULL,"
                             " invalid INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
                             " updated_ms INTEGER NOT NULL);"
                             "CREATE TABLE v1_bulk_records("
                             " bulk_id TEXT NOT NULL, line INTEGER NOT NULL,"
                             " group_id TEXT NOT NULL, group_version_id TEXT NOT NULL,"
                             " type TEXT NOT NULL, deployment_id TEXT NOT NULL,"
                             " status TEXT NOT NULL, error_message TEXT NOT NULL,"
                             " error_details TEXT NOT NULL, created_ms INTEGER NOT NULL,"
                             " UNIQUE(bulk_id, line));",
                             {}});
  auto db = grove::store::open(file, std::move(opts));
  if (!db)
    return std::move(db.error());
  return std::unique_ptr<v1_store>{new v1_store(std::move(*db))};
}

caf::expected<std::optional<token_record>> v1_store::token(const std::string& token,
                                                           int64_t now_ms) {
  std::lock_guard guard{mtx_};
  return v1_tokens().lookup(*db_, token, now_ms);
}

caf::error v1_store::put_token(const std::string& token, const token_record& rec,
                               int64_t expires_ms) {
  std::lock_guard guard{mtx_};
  return v1_tokens().put(*db_, token, rec, expires_ms);
}

caf::error v1_store::create(const v1_resource& r, const std::optional<v1_version>& first) {
  std::lock_guard guard{mtx_};
  auto tx = db_->begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  if (auto err = db_->run("INSERT INTO v1_resources(kind, id, name, created_ms, updated_ms, "
                          "latest, tags) VALUES (?,?,?,?,?,?,?)",
                          r.kind, r.id, r.name, r.created_ms, r.updated_ms, r.latest, r.tags))
    return err;
  if (first)
    if (auto err = db_->run("INSERT INTO v1_versions(kind, id, version, created_ms, definition) "
                            "VALUES (?,?,?,?,?)",
                            first->kind, first->id, first->version, first->created_ms,
                            first->definition))
      return err;
  return tx->commit();
}

caf::expected<std::vector<v1_resource>> v1_store::resources(const char* sql, const std::string& a,
                                                            const std::string& b, int64_t n1,
                                                            int64_t n2) {
  std::vector<v1_resource> out;
  if (auto err = each_row(*db_, std::string{resource_columns} + sql, [&](grove::statement& s) {
        out.push_back({std::string{s.column_text(0)}, std::string{s.column_text(1)},
                       std::string{s.column_text(2)}, s.column_int64(3), s.column_int64(4),
                       std::string{s.column_text(5)}, std::string{s.column_text(6)},
                       s.column_int64(7)});
      }, a, b, n1, n2))
    return err;
  return out;
}

caf::expected<std::optional<v1_resource>> v1_store::get(const std::string& kind,
                                                        const std::string& id) {
  std::lock_guard guard{mtx_};
  auto rows = resources("WHERE kind = ? AND id = ? AND ? >= 0 AND ? >= 0", kind, id, 0, 0);
  if (!rows)
    return std::move(rows.error());
  if (rows->empty())
    return std::optional<v1_resource>{};
  return std::optional<v1_resource>{std::move(rows->front())};
}

caf::expected<std::vector<v1_resource>> v1_store::list(const std::string& kind, int64_t after_seq,
                                                       size_t limit) {
  std::lock_guard guard{mtx_};
  return resources("WHERE kind = ? AND id <> ? AND rowid > ? ORDER BY rowid LIMIT ?", kind, "",
                   after_seq, static_cast<int64_t>(limit));
}

caf::expected<bool> v1_store::rename(const std::string& kind, const std::string& id,
                                     const std::string& name, int64_t now_ms) {
  std::lock_guard guard{mtx_};
  if (auto err = db_->run("UPDATE v1_resources SET name = ?, updated_ms = ? "
                          "WHERE kind = ? AND id = ?",
                          name, now_ms, kind, id))
    return err;
  return sqlite3_changes(db_->native_handle()) > 0;
}

caf::expected<bool> v1_store::set_tags(const std::string& kind, const std::string& id,
                                       const std::string& tags) {
  std::lock_guard guard{mtx_};
  if (auto err = db_->run("UPDATE v1_resources SET tags = ? WHERE kind = ? AND id = ?", tags,
                          kind, id))
    return err;
  return sqlite3_changes(db_->native_handle()) > 0;
}

caf::expected<bool> v1_store::erase(const std::string& kind, const std::string& id) {
  std::lock_guard guard{mtx_};
  auto tx = db_->begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  if (auto err = db_->run("DELETE FROM v1_resources WHERE kind = ? AND id = ?", kind, id))
    return err;
  bool gone = sqlite3_changes(db_->native_handle()) > 0;
  if (auto err = db_->run("DELETE FROM v1_versions WHERE kind = ? AND id = ?", kind, id))
    return err;
  if (kind == "groups") {
    for (const char* sql : {"DELETE FROM v1_deployments WHERE group_id = ?",
                            "DELETE FROM v1_group_cas WHERE group_id = ?",
                            "DELETE FROM v1_group_cert_config WHERE group_id = ?"})
      if (auto err = db_->run(sql, id))
        return err;
    if (auto err = db_->run("DELETE FROM v1_roles WHERE scope = ?", "group:" + id))
      return err;
  }
  if (auto err = tx->commit())
    return err;
  return gone;
}

caf::expected<bool> v1_store::add_version(const v1_version& v) {
  std::lock_guard guard{mtx_};
  auto tx = db_->begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  if (auto err = db_->run("UPDATE v1_resources SET latest = ?, updated_ms = ? "
                          "WHERE kind = ? AND id = ?",
                          v.version, v.created_ms, v.kind, v.id))
    return err;
  if (sqlite3_changes(db_->native_handle()) == 0)
    return false;
  if (auto err = db_->run("INSERT INTO v1_versions(kind, id, version, created_ms, definition) "
                          "VALUES (?,?,?,?,?)",
                          v.kind, v.id, v.version, v.created_ms, v.definition))
    return err;
  if (auto err = tx->commit())
    return err;
  return true;
}

caf::expected<std::vector<v1_version>>
v1_store::version_rows(const char* sql, const std::string& a, const std::string& b,
                       const std::string& c, int64_t n1, int64_t n2) {
  std::vector<v1_version> out;
  if (auto err = each_row(*db_, std::string{version_columns} + sql, [&](grove::statement& s) {
        out.push_back({std::string{s.column_text(0)}, std::string{s.column_text(1)},
                       std::string{s.column_text(2)}, s.column_int64(3),
                       std::string{s.column_text(4)}, s.column_int64(5)});
      }, a, b, c, n1, n2))
    return err;
  return out;
}

caf::expected<std::optional<v1_version>>
v1_store::version(const std::string& kind, const std::string& id, const std::string& version) {
  std::lock_guard guard{mtx_};
  auto rows = version_rows("WHERE kind = ? AND id = ? AND version = ? AND ? >= 0 AND ? >= 0",
                           kind, id, version, 0, 0);
  if (!rows)
    return std::move(rows.error());
  if (rows->empty())
    return std::optional<v1_version>{};
  return std::optional<v1_version>{std::move(rows->front())};
}

caf::expected<std::vector<v1_version>> v1_store::versions(const std::string& kind,
                                                          const std::string& id,
                                                          int64_t after_seq, size_t limit) {
  std::lock_guard guard{mtx_};
  return version_rows("WHERE kind = ? AND id = ? AND version <> ? AND rowid > ? ORDER BY rowid "
                      "LIMIT ?",
                      kind, id, "", after_seq, static_cast<int64_t>(limit));
}

caf::error v1_store::put_deployment(const v1_deployment& d) {
  std::lock_guard guard{mtx_};
  return db_->run("INSERT INTO v1_deployments(group_id, id, type, version, status, "
                  "error_message, error_details, created_ms, updated_ms) "
                  "VALUES (?,?,?,?,?,?,?,?,?)",
                  d.group_id, d.id, d.type, d.version, d.status, d.error_message,
                  d.error_details, d.created_ms, d.updated_ms);
}

caf::expected<bool> v1_store::set_deployment_status(const std::string& group_id,
                                                    const std::string& id,
                                                    const std::string& status,
                                                    const std::string& error_message,
                                                    const std::string& error_details,
                                                    int64_t now_ms) {
  std::lock_guard guard{mtx_};
  if (auto err = db_->run("UPDATE v1_deployments SET status = ?, error_message = ?, "
                          "error_details = ?, updated_ms = ? WHERE group_id = ? AND id = ?",
                          status, error_message, error_details, now_ms, group_id, id))
    return err;
  return sqlite3_changes(db_->native_handle()) > 0;
}

caf::expected<std::vector<v1_deployment>>
v1_store::deployment_rows(const char* sql, const std::string& a, const std::string& b, int64_t n1,
                          int64_t n2) {
  std::vector<v1_deployment> out;
  if (auto err = each_row(*db_, std::string{deployment_columns} + sql, [&](grove::statement& s) {
        out.push_back({std::string{s.column_text(0)}, std::string{s.column_text(1)},
                       std::string{s.column_text(2)}, std::string{s.column_text(3)},
                       std::string{s.column_text(4)}, std::string{s.column_text(5)},
                       std::string{s.column_text(6)}, s.column_int64(7), s.column_int64(8),
                       s.column_int64(9)});
      }, a, b, n1, n2))
    return err;
  return out;
}

caf::expected<std::optional<v1_deployment>> v1_store::deployment(const std::string& group_id,
                                                                 const std::string& id) {
  std::lock_guard guard{mtx_};
  auto rows = deployment_rows("WHERE group_id = ? AND id = ? AND ? >= 0 AND ? >= 0", group_id,
                              id, 0, 0);
  if (!rows)
    return std::move(rows.error());
  if (rows->empty())
    return std::optional<v1_deployment>{};
  return std::optional<v1_deployment>{std::move(rows->front())};
}

caf::expected<std::vector<v1_deployment>>
v1_store::deployments(const std::string& group_id, int64_t before_seq, size_t limit) {
  std::lock_guard guard{mtx_};
  return deployment_rows("WHERE group_id = ? AND id <> ? AND rowid < ? ORDER BY rowid DESC "
                         "LIMIT ?",
                         group_id, "", before_seq, static_cast<int64_t>(limit));
}

caf::expected<int64_t> v1_store::fail_unfinished(const std::string& message, int64_t now_ms) {
  std::lock_guard guard{mtx_};
  auto details = "[{\"DetailedErrorCode\":\"GG-INTERRUPTED\",\"DetailedErrorMessage\":\""
                 + message + "\"}]";
  if (auto err = db_->run("UPDATE v1_deployments SET status = 'Failure', error_message = ?, "
                          "error_details = ?, updated_ms = ? "
                          "WHERE status IN ('Building', 'InProgress')",
                          message, details, now_ms))
    return err;
  return static_cast<int64_t>(sqlite3_changes(db_->native_handle()));
}

// ---- roles --------------------------------------------------------------------------

caf::expected<std::optional<v1_role>> v1_store::role(const std::string& scope) {
  std::lock_guard guard{mtx_};
  std::optional<v1_role> out;
  if (auto err = each_row(*db_, "SELECT role_arn, associated_ms FROM v1_roles WHERE scope = ?",
                          [&](grove::statement& s) {
                            out = v1_role{std::string{s.column_text(0)}, s.column_int64(1)};
                          },
                          scope))
    return err;
  return out;
}

caf::error v1_store::put_role(const std::string& scope, const v1_role& role) {
  std::lock_guard guard{mtx_};
  return db_->run("INSERT OR REPLACE INTO v1_roles VALUES (?,?,?)", scope, role.role_arn,
                  role.associated_ms);
}

caf::expected<bool> v1_store::erase_role(const std::string& scope) {
  std::lock_guard guard{mtx_};
  if (auto err = db_->run("DELETE FROM v1_roles WHERE scope = ?", scope))
    return err;
  return sqlite3_changes(db_->native_handle()) > 0;
}

// ---- bulk deployments --------------------------------------------------------------

namespace {

constexpr const char* bulk_columns =
  "SELECT id, status, input_uri, role_arn, tags, error_message, error_details, processed, "
  "invalid, created_ms, updated_ms, rowid FROM v1_bulk ";

} // namespace

caf::expected<std::vector<v1_bulk>> v1_store::bulk_rows(const char* sql, const std::string& a,
                                                        int64_t n1, int64_t n2) {
  std::vector<v1_bulk> out;
  if (auto err = each_row(*db_, std::string{bulk_columns} + sql, [&](grove::statement& s) {
        out.push_back({std::string{s.column_text(0)}, std::string{s.column_text(1)},
                       std::string{s.column_text(2)}, std::string{s.column_text(3)},
                       std::string{s.column_text(4)}, std::string{s.column_text(5)},
                       std::string{s.column_text(6)}, s.column_int64(7), s.column_int64(8),
                       s.column_int64(9), s.column_int64(10), s.column_int64(11)});
      }, a, n1, n2))
    return err;
  return out;
}

caf::expected<std::optional<std::string>> v1_store::put_bulk(const v1_bulk& b) {
  std::lock_guard guard{mtx_};
  auto tx = db_->begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  auto running = bulk_rows("WHERE status IN ('Initializing', 'Running', 'Stopping') "
                           "AND id <> ? AND ? >= 0 LIMIT ?",
                           "", 0, 1);
  if (!running)
    return std::move(running.error());
  if (!running->empty())
    return std::optional<std::string>{running->front().id};
  if (auto err = db_->run("INSERT INTO v1_bulk(id, status, input_uri, role_arn, tags, "
                          "error_message, error_details, processed, invalid, created_ms, "
                          "updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                          b.id, b.status, b.input_uri, b.role_arn, b.tags, b.error_message,
                          b.error_details, b.processed, b.invalid, b.created_ms, b.updated_ms))
    return err;
  if (auto err = tx->commit())
    return err;
  return std::optional<std::string>{};
}

caf::expected<std::optional<v1_bulk>> v1_store::bulk(const std::string& id) {
  std::lock_guard guard{mtx_};
  auto rows = bulk_rows("WHERE id = ? AND ? >= 0 AND ? >= 0", id, 0, 0);
  if (!rows)
    return std::move(rows.error());
  if (rows->empty())
    return std::optional<v1_bulk>{};
  return std::optional<v1_bulk>{std::move(rows->front())};
}

caf::expected<std::vector<v1_bulk>> v1_store::bulks(int64_t before_seq, size_t limit) {
  std::lock_guard guard{mtx_};
  return bulk_rows("WHERE id <> ? AND rowid < ? ORDER BY rowid DESC LIMIT ?", "", before_seq,
                   static_cast<int64_t>(limit));
}

caf::expected<bool> v1_store::set_bulk_status(const std::string& id,
                                              const std::vector<std::string>& from,
                                              const std::string& status,
                                              const std::string& error_message,
                                              const std::string& error_details,
                                              int64_t now_ms) {
  std::lock_guard guard{mtx_};
  auto tx = db_->begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  auto rows = bulk_rows("WHERE id = ? AND ? >= 0 AND ? >= 0", id, 0, 0);
  if (!rows)
    return std::move(rows.error());
  if (rows->empty()
      || (!from.empty()
          && std::find(from.begin(), from.end(), rows->front().status) == from.end()))
    return false;
  if (auto err = db_->run("UPDATE v1_bulk SET status = ?, error_message = ?, error_details = ?, "
                          "updated_ms = ? WHERE id = ?",
                          status, error_message, error_details, now_ms, id))
    return err;
  if (auto err = tx->commit())
    return err;
  return true;
}

caf::error v1_store::add_bulk_record(const v1_bulk_record& r, bool invalid) {
  std::lock_guard guard{mtx_};
  auto tx = db_->begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  if (auto err = db_->run("INSERT OR REPLACE INTO v1_bulk_records(bulk_id, line, group_id, "
                          "group_version_id, type, deployment_id, status, error_message, "
                          "error_details, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?)",
                          r.bulk_id, r.line, r.group_id, r.group_version_id, r.type,
                          r.deployment_id, r.status, r.error_message, r.error_details,
                          r.created_ms))
    return err;
  if (auto err = db_->run("UPDATE v1_bulk SET processed = processed + 1, invalid = invalid + ?, "
                          "updated_ms = ? WHERE id = ?",
                          int64_t{invalid ? 1 : 0}, r.created_ms, r.bulk_id))
    return err;
  return tx->commit();
}

caf::expected<std::vector<v1_bulk_record>>
v1_store::bulk_records(const std::string& id, int64_t after_seq, size_t limit) {
  std::lock_guard guard{mtx_};
  std::vector<v1_bulk_record> out;
  // The deployment's status and error as they are now (it settles after the record).
  if (auto err = each_row(
        *db_,
        "SELECT r.bulk_id, r.line, r.group_id, r.group_version_id, r.type, r.deployment_id,"
        " COALESCE(d.status, r.status),"
        " CASE WHEN d.status IS NULL THEN r.error_message ELSE d.error_message END,"
        " CASE WHEN d.status IS NULL THEN r.error_details ELSE d.error_details END,"
        " r.created_ms, r.rowid FROM v1_bulk_records r"
        " LEFT JOIN v1_deployments d ON d.group_id = r.group_id AND d.id = r.deployment_id"
        " AND r.deployment_id <> ''"
        " WHERE r.bulk_id = ? AND r.rowid > ? ORDER BY r.rowid LIMIT ?",
        [&](grove::statement& s) {
          out.push_back({std::string{s.column_text(0)}, s.column_int64(1),
                         std::string{s.column_text(2)}, std::string{s.column_text(3)},
                         std::string{s.column_text(4)}, std::string{s.column_text(5)},
                         std::string{s.column_text(6)}, std::string{s.column_text(7)},
                         std::string{s.column_text(8)}, s.column_int64(9), s.column_int64(10)});
        },
        id, after_seq, static_cast<int64_t>(limit)))
    return err;
  return out;
}

caf::expected<int64_t> v1_store::end_unfinished_bulks(const std::string& message,
                                                      int64_t now_ms) {
  std::lock_guard guard{mtx_};
  auto tx = db_->begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  if (auto err = db_->run("UPDATE v1_bulk SET status = 'Stopped', updated_ms = ? "
                          "WHERE status = 'Stopping'",
                          now_ms))
    return err;
  auto n = static_cast<int64_t>(sqlite3_changes(db_->native_handle()));
  auto details = nlohmann::json::array(
    {{{"DetailedErrorCode", "GG-INTERRUPTED"}, {"DetailedErrorMessage", message}}});
  if (auto err = db_->run("UPDATE v1_bulk SET status = 'Failed', error_message = ?, "
                          "error_details = ?, updated_ms = ? "
                          "WHERE status IN ('Initializing', 'Running')",
                          message, details.dump(), now_ms))
    return err;
  n += static_cast<int64_t>(sqlite3_changes(db_->native_handle()));
  if (auto err = tx->commit())
    return err;
  return n;
}

// ---- group CAs ----------------------------------------------------------------------

caf::error v1_store::put_ca(const v1_group_ca& ca) {
  std::lock_guard guard{mtx_};
  // Only while the group exists: a CA of a group deleted meanwhile would be an orphan.
  if (auto err = db_->run("INSERT INTO v1_group_cas(group_id, id, certificate, created_ms, "
                          "not_after_ms) SELECT ?,?,?,?,? WHERE EXISTS (SELECT 1 FROM "
                          "v1_resources WHERE kind = 'groups' AND id = ?)",
                          ca.group_id, ca.id, ca.certificate, ca.created_ms, ca.not_after_ms,
                          ca.group_id))
    return err;
  if (sqlite3_changes(db_->native_handle()) == 0)
    return grove::make_error(grove::errc::conflict, "group " + ca.group_id + " no longer exists");
  return {};
}

caf::expected<std::set<std::string>> v1_store::ca_dirs() {
  std::lock_guard guard{mtx_};
  std::set<std::string> out;
  if (auto err = each_row(*db_, "SELECT group_id, id FROM v1_group_cas",
                          [&](grove::statement& s) {
                            out.insert(std::string{s.column_text(0)} + "/"
                                       + std::string{s.column_text(1)});
                          }))
    return err;
  return out;
}

caf::expected<std::vector<v1_group_ca>> v1_store::cas(const std::string& group_id) {
  std::lock_guard guard{mtx_};
  std::vector<v1_group_ca> out;
  if (auto err = each_row(*db_,
                          "SELECT group_id, id, certificate, created_ms, not_after_ms, rowid "
                          "FROM v1_group_cas WHERE group_id = ? ORDER BY rowid",
                          [&](grove::statement& s) {
                            out.push_back({std::string{s.column_text(0)},
                                           std::string{s.column_text(1)},
                                           std::string{s.column_text(2)}, s.column_int64(3),
                                           s.column_int64(4), s.column_int64(5)});
                          },
                          group_id))
    return err;
  return out;
}

caf::expected<std::optional<int64_t>> v1_store::cert_expiry(const std::string& group_id) {
  std::lock_guard guard{mtx_};
  std::optional<int64_t> out;
  if (auto err = each_row(*db_,
                          "SELECT cert_expiry_ms FROM v1_group_cert_config WHERE group_id = ?",
                          [&](grove::statement& s) { out = s.column_int64(0); }, group_id))
    return err;
  return out;
}

caf::error v1_store::set_cert_expiry(const std::string& group_id, int64_t ms) {
  std::lock_guard guard{mtx_};
  return db_->run("INSERT INTO v1_group_cert_config(group_id, cert_expiry_ms) VALUES (?,?) "
                  "ON CONFLICT(group_id) DO UPDATE SET cert_expiry_ms = excluded.cert_expiry_ms",
                  group_id, ms);
}

} // namespace grove::deployment
