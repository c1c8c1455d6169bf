#include "client_tokens.hpp"

#include "http.hpp"

namespace grove::deployment {

token_verdict judge_token(const std::optional<token_record>& rec,
                          const std::string& request_hash) {
  if (!rec)
    return token_verdict::fresh;
  return rec->request_hash == request_hash ? token_verdict::retry : token_verdict::mismatch;
}

std::string request_hash_of(nlohmann::json body) {
  if (body.is_object())
    body.erase("clientToken");
  return hex(sha256(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
}

client_token_table::client_token_table(std::string table)
  : expire_sql_("DELETE FROM " + table + " WHERE expires_ms <= ?"),
    select_sql_("SELECT request_hash, status, response FROM " + table
                + " WHERE token = ? AND expires_ms > ?"),
    insert_sql_("INSERT OR REPLACE INTO " + table + " VALUES (?,?,?,?,?)"),
    table_(std::move(table)) {
  // Nothing.
}

std::string client_token_table::schema_sql() const {
  return "CREATE TABLE " + table_
         + "( token TEXT PRIMARY KEY, request_hash TEXT NOT NULL, status INTEGER NOT NULL,"
           " response TEXT NOT NULL, expires_ms INTEGER NOT NULL) WITHOUT ROWID;";
}

caf::expected<std::optional<token_record>>
client_token_table::lookup(grove::store& db, const std::string& token, int64_t now_ms) const {
  if (auto err = db.run(expire_sql_, now_ms))
    return err;
  return live(db, token, now_ms);
}

caf::expected<std::optional<token_record>>
client_token_table::live(grove::store& db, const std::string& token, int64_t now_ms) const {
  auto stmt = db.prepare(select_sql_);
  if (!stmt)
    return std::move(stmt.error());
  auto& s = **stmt;
  s.bind_all(token, now_ms);
  auto row = s.step();
  std::optional<token_record> out;
  if (row && *row)
    out = token_record{std::string{s.column_text(0)}, static_cast<int>(s.column_int64(1)),
                       std::string{s.column_text(2)}};
  s.reset(); // a cached statement left mid-step would hold its read snapshot
  if (!row)
    return std::move(row.error());
  return out;
}

caf::error client_token_table::put(grove::store& db, const std::string& token,
                                   const token_record& rec, int64_t expires_ms) const {
  return db.run(insert_sql_, token, rec.request_hash, rec.status, rec.response, expires_ms);
}

} // namespace grove::deployment
