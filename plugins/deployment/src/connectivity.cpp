#include "connectivity.hpp"

#include <algorithm>
#include <set>

namespace grove::deployment {

using nlohmann::json;

bool valid_thing_name(const std::string& name) {
  return !name.empty() && name.size() <= 128
         && std::all_of(name.begin(), name.end(), [](char c) {
              return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                     || c == ':' || c == '_' || c == '-';
            });
}

namespace {

// A host name or an IP address as text: printable ASCII without spaces, '/', '@' or
// quotes (what a client puts after mqtts://), at most 255 bytes.
bool valid_host(const std::string& h) {
  return !h.empty() && h.size() <= 255 && std::all_of(h.begin(), h.end(), [](char c) {
    return c > ' ' && c < 127 && c != '/' && c != '@' && c != '"' && c != '\'' && c != '\\'
           && c != '?' && c != '#';
  });
}

} // namespace

std::optional<json> check_connectivity_info(const json& list,
                                            std::vector<connectivity_problem>& problems) {
  if (!list.is_array()) {
    problems.push_back({"ConnectivityInfo", "a list of {Id, HostAddress, PortNumber, Metadata}"});
    return std::nullopt;
  }
  if (list.size() > max_connectivity_entries) {
    problems.push_back({"ConnectivityInfo", "at most " + std::to_string(max_connectivity_entries)
                                              + " entries"});
    return std::nullopt;
  }
  json out = json::array();
  std::set<std::string> ids;
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& e = list[i];
    auto at = "ConnectivityInfo/" + std::to_string(i);
    if (!e.is_object()) {
      problems.push_back({at, "an entry is a map"});
      continue;
    }
    for (auto it = e.begin(); it != e.end(); ++it)
      if (it.key() != "Id" && it.key() != "HostAddress" && it.key() != "PortNumber"
          && it.key() != "Metadata")
        problems.push_back({at + "/" + it.key().substr(0, 64), "unknown field"});
    json item;
    auto host = e.find("HostAddress");
    if (host == e.end() || !host->is_string() || !valid_host(host->get<std::string>()))
      problems.push_back({at + "/HostAddress", "required: a host name or IP address (1 to 255 "
                                               "printable characters, no spaces)"});
    else
      item["HostAddress"] = *host;
    auto port = e.find("PortNumber");
    if (port == e.end() || !port->is_number_integer() || port->get<int64_t>() < 1
        || port->get<int64_t>() > 65535)
      problems.push_back({at + "/PortNumber", "required: 1 to 65535"});
    else
      item["PortNumber"] = port->get<int64_t>();
    std::string id;
    if (auto it = e.find("Id"); it != e.end()) {
      if (!it->is_string() || it->get<std::string>().empty() || it->get<std::string>().size() > 128)
        problems.push_back({at + "/Id", "1 to 128 characters"});
      else
        id = it->get<std::string>();
    } else if (item.contains("HostAddress")) {
      id = item["HostAddress"].get<std::string>();
    }
    if (!id.empty() && !ids.insert(id).second)
      problems.push_back({at + "/Id", "'" + id.substr(0, 128) + "' appears twice"});
    item["Id"] = id;
    std::string metadata;
    if (auto it = e.find("Metadata"); it != e.end()) {
      if (!it->is_string() || it->get<std::string>().size() > 2048)
        problems.push_back({at + "/Metadata", "a string of at most 2048 characters"});
      else
        metadata = it->get<std::string>();
    }
    item["Metadata"] = metadata;
    out.push_back(std::move(item));
  }
  if (!problems.empty())
    return std::nullopt;
  return out;
}

caf::expected<std::optional<connectivity_record>> connectivity_get(grove::store& db,
                                                                   const std::string& thing) {
  auto stmt = db.prepare("SELECT version, info FROM connectivity_info WHERE thing_name = ?");
  if (!stmt)
    return std::move(stmt.error());
  auto& s = **stmt;
  s.bind(1, thing);
  auto row = s.step();
  if (!row) {
    s.reset();
    return std::move(row.error());
  }
  std::optional<connectivity_record> out;
  if (*row) {
    auto info = json::parse(s.column_text(1), nullptr, false);
    out = connectivity_record{s.column_int64(0), info.is_array() ? info : json::array()};
  }
  s.reset();
  return out;
}

caf::expected<int64_t> connectivity_put(grove::store& db, const std::string& thing,
                                        const json& info, int64_t now_ms) {
  auto tx = db.begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  auto old = connectivity_get(db, thing);
  if (!old)
    return std::move(old.error());
  int64_t version = *old ? (*old)->version + 1 : 1;
  if (auto err = db.run("INSERT OR REPLACE INTO connectivity_info VALUES (?,?,?,?)", thing,
                        version, info.dump(), now_ms))
    return err;
  if (auto err = tx->commit())
    return err;
  return version;
}

caf::expected<std::optional<int64_t>>
connectivity_update(grove::store& db, const std::string& thing,
                    const std::function<json(const json&)>& change, int64_t now_ms) {
  auto tx = db.begin(grove::begin_mode::immediate);
  if (!tx)
    return std::move(tx.error());
  auto old = connectivity_get(db, thing);
  if (!old)
    return std::move(old.error());
  auto before = *old ? (*old)->info : json::array();
  auto after = change(before);
  if (*old && after == before)
    return std::optional<int64_t>{};
  if (!*old && after.empty())
    return std::optional<int64_t>{}; // never set and nothing to set
  int64_t version = *old ? (*old)->version + 1 : 1;
  if (auto err = db.run("INSERT OR REPLACE INTO connectivity_info VALUES (?,?,?,?)", thing,
                        version, after.dump(), now_ms))
    return err;
  if (auto err = tx->commit())
    return err;
  return std::optional<int64_t>{version};
}

} // namespace grove::deployment
