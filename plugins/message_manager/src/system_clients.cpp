#include "system_clients.hpp"

#include <algorithm>

#include <mosquitto.h>

#include "grove/errors.hpp"
#include "grove/message_manager/client.hpp"
#include "grove/topic.hpp"

namespace grove::mm {
namespace {

using grove::message_manager::cloud_max_filters;
using grove::message_manager::cloud_max_topic_bytes;

// MQTT's UTF-8 rule (libmosquitto: well-formed, no U+0000, no surrogates or
// non-characters), which AWS IoT Core applies to topics too.
caf::error check_utf8(std::string_view what, std::string_view text) {
  if (mosquitto_validate_utf8(text.data(), static_cast<int>(text.size())) != MOSQ_ERR_SUCCESS)
    return make_error(errc::invalid_topic, std::string{what} + " is not valid UTF-8");
  return {};
}

caf::error check_size(std::string_view what, std::string_view text) {
  if (text.size() > cloud_max_topic_bytes)
    return make_error(errc::invalid_topic,
                      std::string{what} + " has " + std::to_string(text.size())
                        + " bytes, more than the cloud's " + std::to_string(cloud_max_topic_bytes));
  return {};
}

std::vector<std::string> to_vector(const std::set<std::string>& xs) {
  return {xs.begin(), xs.end()};
}

} // namespace

caf::error check_cloud_topic(std::string_view topic) {
  if (auto err = check_size("cloud topic", topic))
    return err;
  if (auto err = validate_topic(topic))
    return err;
  return check_utf8("cloud topic", topic);
}

caf::error check_cloud_filter(std::string_view filter) {
  if (auto err = check_size("cloud filter", filter))
    return err;
  if (auto err = validate_filter(filter))
    return err;
  return check_utf8("cloud filter", filter);
}

caf::expected<std::unique_ptr<system_clients>>
system_clients::open(const std::filesystem::path& file, const std::vector<std::string>& allowed) {
  store_options opts;
  opts.application_id = 0x47524d53; // 'GRMS'
  opts.kind = "message_manager system clients";
  // A commit survives the death of groved; a power loss may lose the last change,
  // which the client makes again when it subscribes at its start.
  opts.synchronous = sync_level::normal;
  opts.migrations = {{1,
                      "CREATE TABLE system_filters(client TEXT NOT NULL, filter TEXT NOT NULL,"
                      " PRIMARY KEY(client, filter)) WITHOUT ROWID;",
                      {}}};
  auto db = store::open(file, std::move(opts));
  if (!db)
    return std::move(db.error());
  auto stmt = (*db)->prepare("SELECT client, filter FROM system_filters");
  if (!stmt)
    return std::move(stmt.error());
  table loaded;
  for (;;) {
    auto row = (*stmt)->step();
    if (!row)
      return std::move(row.error());
    if (!*row)
      break;
    loaded[std::string{(*stmt)->column_text(0)}].emplace((*stmt)->column_text(1));
  }
  (*stmt)->reset();
  std::unique_ptr<system_clients> result{new system_clients{std::move(*db)}};
  result->table_ = std::make_shared<const table>(std::move(loaded));
  if (auto dropped = result->retain(allowed); !dropped)
    return std::move(dropped.error());
  return result;
}

system_clients::system_clients(std::unique_ptr<store> db) : db_(std::move(db)) {
}

caf::expected<std::vector<std::string>>
system_clients::add(const std::string& client, const std::vector<std::string>& filters) {
  for (const auto& f : filters)
    if (auto err = check_cloud_filter(f))
      return err;
  auto current = snapshot();
  std::set<std::string> next;
  if (auto i = current->find(client); i != current->end())
    next = i->second;
  next.insert(filters.begin(), filters.end());
  if (next.size() > cloud_max_filters)
    return make_error(errc::too_large, "'" + client + "' would hold "
                                         + std::to_string(next.size())
                                         + " cloud filters, more than "
                                         + std::to_string(cloud_max_filters));
  if (auto err = commit(client, next))
    return err;
  return to_vector(next);
}

caf::expected<std::vector<std::string>>
system_clients::remove(const std::string& client, const std::vector<std::string>& filters) {
  auto current = snapshot();
  std::set<std::string> next;
  if (auto i = current->find(client); i != current->end())
    next = i->second;
  if (filters.empty())
    next.clear();
  for (const auto& f : filters)
    next.erase(f);
  if (auto err = commit(client, next))
    return err;
  return to_vector(next);
}

caf::expected<std::vector<std::string>>
system_clients::retain(const std::vector<std::string>& allowed) {
  std::vector<std::string> dropped;
  auto current = snapshot();
  for (const auto& [client, filters] : *current)
    if (std::find(allowed.begin(), allowed.end(), client) == allowed.end()) {
      if (auto err = commit(client, {}))
        return err;
      dropped.push_back(client);
    }
  return dropped;
}

caf::error system_clients::commit(const std::string& client, const std::set<std::string>& next) {
  auto tx = db_->begin(begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  if (auto err = db_->run("DELETE FROM system_filters WHERE client = ?1", client))
    return err;
  for (const auto& f : next)
    if (auto err = db_->run("INSERT INTO system_filters(client, filter) VALUES(?1, ?2)",
                            client, f))
      return err;
  if (auto err = tx->commit())
    return err;
  auto updated = std::make_shared<table>(*snapshot());
  if (next.empty())
    updated->erase(client);
  else
    (*updated)[client] = next;
  std::lock_guard guard{mtx_};
  table_ = std::move(updated);
  return {};
}

std::vector<std::string> system_clients::match(std::string_view topic) const {
  std::vector<std::string> result;
  for (const auto& [client, filters] : *snapshot())
    if (std::any_of(filters.begin(), filters.end(),
                    [&](const std::string& f) { return topic_matches(f, topic); }))
      result.push_back(client);
  return result;
}

std::vector<std::string> system_clients::filters() const {
  std::set<std::string> all;
  for (const auto& [client, filters] : *snapshot())
    all.insert(filters.begin(), filters.end());
  return to_vector(all);
}

std::shared_ptr<const system_clients::table> system_clients::snapshot() const {
  std::lock_guard guard{mtx_};
  return table_;
}

} // namespace grove::mm
