#pragma once

// The cloud filters of message_manager's system clients (README "System clients",
// mm-7 to mm-9): which plugin listed in cloud.system_clients receives which cloud
// messages. Kept in a small grove::store (system.db in the state directory), so a
// restart of message_manager keeps every client's subscriptions without the client
// asking again. Changes come from the plugin's actor; match() is called from the
// cloud link's Paho thread: the table is an immutable snapshot swapped under a mutex.

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "grove/store.hpp"

namespace grove::mm {

/// Checks a cloud topic a system client publishes on: valid UTF-8, no wildcards or NUL,
/// at most cloud_max_topic_bytes. Errors: invalid_topic naming the rule.
caf::error check_cloud_topic(std::string_view topic);

/// Checks a cloud filter a system client subscribes to: a valid MQTT filter in valid
/// UTF-8, at most cloud_max_topic_bytes. Errors: invalid_topic naming the rule.
caf::error check_cloud_filter(std::string_view filter);

/// The system clients' cloud filters, persisted.
class system_clients {
public:
  /// Client name → its filters.
  using table = std::map<std::string, std::set<std::string>>;

  /// Opens (or creates) the store at `file` and loads it. Filters of clients not in
  /// `allowed` (no longer listed in cloud.system_clients) are deleted. Errors: the
  /// store's (malformed, invalid_state, system_error), each naming the file.
  static caf::expected<std::unique_ptr<system_clients>>
  open(const std::filesystem::path& file, const std::vector<std::string>& allowed);

  /// Adds `filters` to `client`'s, all or none: each is checked (invalid_topic) and the
  /// client keeps at most cloud_max_filters (too_large). Returns the client's filters.
  caf::expected<std::vector<std::string>> add(const std::string& client,
                                              const std::vector<std::string>& filters);

  /// Removes `filters` from `client`'s (unknown ones are ignored; none: all of them).
  /// Returns those left.
  caf::expected<std::vector<std::string>> remove(const std::string& client,
                                                 const std::vector<std::string>& filters);

  /// Forgets the filters of every client not in `allowed` (a live change of
  /// cloud.system_clients); returns the names of those dropped.
  caf::expected<std::vector<std::string>> retain(const std::vector<std::string>& allowed);

  /// The clients whose filters match cloud topic `topic`, each once. Thread-safe.
  std::vector<std::string> match(std::string_view topic) const;

  /// Every filter of every client, each once, sorted. Thread-safe.
  std::vector<std::string> filters() const;

  /// The whole table. Thread-safe.
  std::shared_ptr<const table> snapshot() const;

private:
  explicit system_clients(std::unique_ptr<store> db);

  // Writes `client`'s rows as `next` says (one transaction) and then swaps the table.
  caf::error commit(const std::string& client, const std::set<std::string>& next);

  std::unique_ptr<store> db_;
  mutable std::mutex mtx_;
  std::shared_ptr<const table> table_ = std::make_shared<const table>();
};

} // namespace grove::mm
