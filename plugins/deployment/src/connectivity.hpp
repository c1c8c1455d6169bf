#pragma once

// Connectivity information of core devices (Greengrass v2's Get/UpdateConnectivityInfo,
// and v1's of the same name): where client devices reach a core's MQTT broker. The
// checks and the two store functions live here, apart from the component store, so the
// v1 group API (issue 16) keeps its copy in its own SQLite file with the same table
// (`connectivity_schema_sql`) and the same functions.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include "grove/store.hpp"

namespace grove::deployment {

/// The table (one row per thing); run it in a migration of the file that keeps it.
inline constexpr const char* connectivity_schema_sql =
  "CREATE TABLE connectivity_info("
  " thing_name TEXT PRIMARY KEY, version INTEGER NOT NULL, info TEXT NOT NULL,"
  " updated_ms INTEGER NOT NULL) WITHOUT ROWID;";

/// The most endpoints one thing keeps.
inline constexpr size_t max_connectivity_entries = 100;

/// One thing wrong with a request: a ValidationException `fields` entry.
struct connectivity_problem {
  /// The field (`ConnectivityInfo/0/PortNumber`).
  std::string field;
  /// What is wrong.
  std::string message;
};

/// True for an IoT thing name: 1 to 128 of [a-zA-Z0-9:_-].
bool valid_thing_name(const std::string& name);

/// Checks UpdateConnectivityInfo's `ConnectivityInfo` list (`Id`, `HostAddress`,
/// `PortNumber` 1–65535, `Metadata`; no other keys) and returns it normalized (every
/// entry with all four, `Id` defaulting to `HostAddress`); nullopt with every problem
/// found in `problems`.
std::optional<nlohmann::json> check_connectivity_info(const nlohmann::json& list,
                                                      std::vector<connectivity_problem>& problems);

/// A thing's stored connectivity information.
struct connectivity_record {
  /// Its version (1 after the first update).
  int64_t version = 0;
  /// The list, as check_connectivity_info() returned it.
  nlohmann::json info = nlohmann::json::array();
};

/// The record of `thing`, nullopt when it was never set.
caf::expected<std::optional<connectivity_record>> connectivity_get(grove::store& db,
                                                                   const std::string& thing);

/// Replaces the list of `thing` (checked before) and returns its new version, in one
/// transaction.
caf::expected<int64_t> connectivity_put(grove::store& db, const std::string& thing,
                                        const nlohmann::json& info, int64_t now_ms);

/// Replaces the list of `thing` with `change(old list)` (the old list is empty when never
/// set) in one transaction, when that differs from it: the new version, or nullopt when
/// nothing changed (nothing written). `change` must return a checked list.
caf::expected<std::optional<int64_t>>
connectivity_update(grove::store& db, const std::string& thing,
                    const std::function<nlohmann::json(const nlohmann::json&)>& change,
                    int64_t now_ms);

} // namespace grove::deployment
