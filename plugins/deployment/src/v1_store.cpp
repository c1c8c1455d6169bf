#include "v1_store.hpp"

#include <sqlite3.h>

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
  if (kind == "groups")
    for (const char* sql : {"DELETE FROM v1_deployments WHERE group_id = ?",
                            "DELETE FROM v1_group_cas WHERE group_id = ?",
                            "DELETE FROM v1_group_cert_config WHERE group_id = ?"})
      if (auto err = db_->run(sql, id))
        return err;
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
