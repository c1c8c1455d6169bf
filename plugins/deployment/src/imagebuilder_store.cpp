#include "imagebuilder_store.hpp"

#include <algorithm>
#include <string_view>
#include <tuple>

#include "store_rows.hpp"

namespace grove::deployment {

namespace {

const client_token_table& ib_tokens() {
  static const client_token_table t{"imagebuilder_client_tokens"};
  return t;
}

constexpr const char* columns =
  "name, arn_name, version, build, platform, type, data, extra, created_ms";

ib_component row_of(const grove::statement& s) {
  ib_component c;
  c.name = std::string{s.column_text(0)};
  c.arn_name = std::string{s.column_text(1)};
  c.version = std::string{s.column_text(2)};
  c.build = s.column_int64(3);
  c.platform = std::string{s.column_text(4)};
  c.type = std::string{s.column_text(5)};
  c.data = std::string{s.column_text(6)};
  c.extra = std::string{s.column_text(7)};
  c.created_ms = s.column_int64(8);
  return c;
}

// major.minor.patch as numbers, for ordering.
std::tuple<int64_t, int64_t, int64_t> numeric(const std::string& v) {
  int64_t p[3] = {0, 0, 0};
  size_t i = 0;
  for (char c : v) {
    if (c == '.') {
      if (++i == 3)
        break;
    } else if (c >= '0' && c <= '9' && p[i] < (int64_t{1} << 40)) {
      p[i] = p[i] * 10 + (c - '0');
    }
  }
  return {p[0], p[1], p[2]};
}

} // namespace

std::string imagebuilder_schema_sql() {
  return "CREATE TABLE imagebuilder_components("
         " arn_name TEXT NOT NULL, version TEXT NOT NULL, build INTEGER NOT NULL,"
         " name TEXT NOT NULL, platform TEXT NOT NULL, type TEXT NOT NULL,"
         " data TEXT NOT NULL, extra TEXT NOT NULL, created_ms INTEGER NOT NULL,"
         " PRIMARY KEY(arn_name, version, build)) WITHOUT ROWID;"
         "CREATE TABLE imagebuilder_builds("
         " arn_name TEXT NOT NULL, version TEXT NOT NULL, last_build INTEGER NOT NULL,"
         " PRIMARY KEY(arn_name, version)) WITHOUT ROWID;"
         + ib_tokens().schema_sql();
}

caf::expected<std::optional<token_record>> ib_token(grove::store& db, const std::string& token,
                                                    int64_t now_ms) {
  return ib_tokens().lookup(db, token, now_ms);
}

caf::expected<ib_put_result> ib_put(grove::store& db, ib_component& c, const std::string& token,
                                    const std::function<token_record(const ib_component&)>& answer_of,
                                    int64_t expires_ms, token_record& existing) {
  auto tx = db.begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  if (!token.empty()) {
    auto taken = ib_tokens().live(db, token, c.created_ms);
    if (!taken)
      return std::move(taken.error());
    if (*taken) {
      existing = std::move(**taken);
      return ib_put_result::token_taken;
    }
  }
  int64_t last = 0;
  if (auto err = each_row(
        db, "SELECT last_build FROM imagebuilder_builds WHERE arn_name = ? AND version = ?",
        [&](const grove::statement& s) { last = s.column_int64(0); }, c.arn_name, c.version))
    return err;
  c.build = last + 1;
  if (auto err = db.run("INSERT OR REPLACE INTO imagebuilder_builds VALUES (?,?,?)", c.arn_name,
                        c.version, c.build))
    return err;
  if (auto err = db.run(std::string{"INSERT INTO imagebuilder_components("} + columns
                          + ") VALUES (?,?,?,?,?,?,?,?,?)",
                        c.name, c.arn_name, c.version, c.build, c.platform, c.type, c.data,
                        c.extra, c.created_ms))
    return err;
  if (!token.empty())
    if (auto err = ib_tokens().put(db, token, answer_of(c), expires_ms))
      return err;
  if (auto err = tx->commit())
    return err;
  return ib_put_result::stored;
}

caf::expected<std::optional<ib_component>> ib_get(grove::store& db, const std::string& arn_name,
                                                  const std::string& version, int64_t build) {
  std::optional<ib_component> out;
  auto take = [&](const grove::statement& s) {
    if (!out)
      out = row_of(s);
  };
  caf::error err;
  if (build > 0)
    err = each_row(db,
               std::string{"SELECT "} + columns
                 + " FROM imagebuilder_components WHERE arn_name = ? AND version = ? AND build = ?",
               take, arn_name, version, build);
  else
    err = each_row(db,
               std::string{"SELECT "} + columns
                 + " FROM imagebuilder_components WHERE arn_name = ? AND version = ?"
                   " ORDER BY build DESC LIMIT 1",
               take, arn_name, version);
  if (err)
    return err;
  return out;
}

caf::expected<std::vector<ib_component>> ib_list(grove::store& db) {
  std::vector<ib_component> out;
  if (auto err = each_row(db,
                      "SELECT name, arn_name, version, build, platform, type, '', extra,"
                      " created_ms FROM imagebuilder_components",
                      [&](const grove::statement& s) { out.push_back(row_of(s)); }))
    return err;
  std::sort(out.begin(), out.end(), [](const ib_component& a, const ib_component& b) {
    return std::make_tuple(std::string_view{a.arn_name}, numeric(a.version), a.build)
           < std::make_tuple(std::string_view{b.arn_name}, numeric(b.version), b.build);
  });
  return out;
}

caf::expected<bool> ib_erase(grove::store& db, const std::string& arn_name,
                             const std::string& version, int64_t build) {
  bool found = false;
  if (auto err = each_row(
        db,
        "SELECT 1 FROM imagebuilder_components WHERE arn_name = ? AND version = ? AND build = ?",
        [&](const grove::statement&) { found = true; }, arn_name, version, build))
    return err;
  if (!found)
    return false;
  if (auto err = db.run(
        "DELETE FROM imagebuilder_components WHERE arn_name = ? AND version = ? AND build = ?",
        arn_name, version, build))
    return err;
  return true;
}

} // namespace grove::deployment
