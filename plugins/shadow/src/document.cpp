#include "document.hpp"

#include <algorithm>

namespace grove::shadow {

namespace {

constexpr std::string_view things_prefix = "$aws/things/";

// Nesting beyond this is refused before parsing, so nothing below recurses deeply
// whatever the input (AWS's own limit, 6, is checked on the sections after parsing).
constexpr int max_raw_depth = 64;

bool name_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
         || c == ':' || c == '_' || c == '-';
}

bool valid_name(std::string_view name, size_t max) noexcept {
  return !name.empty() && name.size() <= max && std::all_of(name.begin(), name.end(), name_char);
}

std::string dump(const json& j) {
  // Input was checked to be UTF-8, so `replace` never fires; it only rules out a throw.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Deepest nesting of objects and arrays in raw JSON text, strings skipped; stops
// counting past `limit`.
int raw_depth(std::string_view text, int limit) noexcept {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit)
        return deepest;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return deepest;
}

// Levels of nesting of a section: {"a":1} is 1, {"a":{"b":1}} is 2.
int depth_of(const json& j) {
  if (!j.is_structured())
    return 0;
  int deepest = 0;
  for (const auto& child : j)
    deepest = std::max(deepest, depth_of(child));
  return deepest + 1;
}

rejection reject(int code, std::string_view message) {
  return rejection{code, std::string{message}};
}

json stamp_of(int64_t now) {
  return json{{"timestamp", now}};
}

// The metadata of a stored value, as AWS keeps it: a scalar gets the stamp, an array one
// entry per element, an object inside an array one per key (an empty one stays empty).
json stamp_tree(const json& value, const json& stamp) {
  if (value.is_array()) {
    json out = json::array();
    for (const auto& element : value)
      out.push_back(stamp_tree(element, stamp));
    return out;
  }
  if (value.is_object()) {
    json out = json::object();
    for (const auto& [key, child] : value.items())
      out[key] = stamp_tree(child, stamp);
    return out;
  }
  return stamp;
}

// Merges the update `patch` (an object) into `target` and its metadata `meta`: null
// deletes a key, an object merges key by key, anything else replaces the value and
// stamps it; an object left empty disappears with its metadata.
void merge(json& target, json& meta, const json& patch, const json& stamp) {
  for (const auto& [key, value] : patch.items()) {
    if (value.is_null()) {
      target.erase(key);
      meta.erase(key);
    } else if (value.is_object()) {
      if (value.empty())
        continue; // nothing to merge: an empty object changes nothing
      json& t = target[key];
      json& m = meta[key];
      if (!t.is_object()) {
        t = json::object();
        m = json::object(); // a leaf's {"timestamp"} is not child metadata
      } else if (!m.is_object()) {
        m = json::object();
      }
      merge(t, m, value, stamp);
      if (t.empty()) {
        target.erase(key);
        meta.erase(key);
      }
    } else {
      target[key] = value;
      meta[key] = stamp_tree(value, stamp);
    }
  }
}

// The metadata an update/accepted carries: the request's shape, stamped at the leaves
// (deleted keys too).
json request_metadata(const json& patch, const json& stamp) {
  if (patch.is_array())
    return stamp_tree(patch, stamp);
  if (!patch.is_object() || patch.empty())
    return stamp;
  json out = json::object();
  for (const auto& [key, value] : patch.items())
    if (!(value.is_object() && value.empty()))
      out[key] = request_metadata(value, stamp);
  return out;
}

// The part of `meta` (desired's metadata) that describes the keys of `delta`.
json metadata_of(const json& delta, const json& meta) {
  json out = json::object();
  if (!meta.is_object())
    return out;
  for (const auto& [key, value] : delta.items()) {
    auto it = meta.find(key);
    if (it == meta.end())
      continue;
    out[key] = value.is_object() ? metadata_of(value, *it) : *it;
  }
  return out;
}

void put_sections(json& into, const json& desired, const json& reported) {
  if (!desired.is_null())
    into["desired"] = desired;
  if (!reported.is_null())
    into["reported"] = reported;
}

void put_token(json& into, const std::optional<std::string>& token) {
  if (token)
    into["clientToken"] = *token;
}

outcome<request> parse_request_impl(std::string_view payload, verb op,
                                    size_t max_payload_bytes) {
  if (!valid_utf8(payload))
    return reject(415, msg::not_utf8);
  if (payload.size() > max_payload_bytes)
    return reject(413, msg::too_large);
  request req;
  if (op != verb::update && payload.find_first_not_of(" \t\r\n") == std::string_view::npos)
    return req; // get and delete need no body
  if (raw_depth(payload, max_raw_depth) > max_raw_depth)
    return reject(400, msg::too_deep);
  auto doc = json::parse(payload, nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    return reject(400, msg::invalid_json);
  if (auto it = doc.find("clientToken"); it != doc.end()) {
    if (!it->is_string() || it->get_ref<const std::string&>().size() > max_client_token)
      return reject(400, msg::invalid_client_token);
    req.client_token = it->get<std::string>();
  }
  if (auto it = doc.find("version"); it != doc.end()) {
    if (!it->is_number_unsigned())
      return reject(400, msg::invalid_version);
    req.version = it->get<uint64_t>();
  }
  if (op != verb::update)
    return req;
  auto state = doc.find("state");
  if (state == doc.end())
    return reject(400, msg::missing_state);
  if (!state->is_object())
    return reject(400, msg::state_not_object);
  for (const auto& [key, value] : state->items()) {
    if (key == "desired") {
      if (!value.is_object() && !value.is_null())
        return reject(400, msg::desired_not_object);
    } else if (key == "reported") {
      if (!value.is_object() && !value.is_null())
        return reject(400, msg::reported_not_object);
    } else {
      return reject(400, msg::invalid_node);
    }
    if (depth_of(value) > max_depth)
      return reject(400, msg::too_deep);
  }
  req.state = std::move(*state);
  return req;
}

outcome<update_result> apply_update_impl(const std::optional<document>& current,
                                         const std::optional<tombstone>& tomb,
                                         const request& req, int64_t now,
                                         size_t max_document_bytes) {
  uint64_t version = 0;
  if (current)
    version = current->version;
  else if (tomb && tomb->live(now))
    version = tomb->version; // re-created within 48 hours: versions continue
  if (req.version && *req.version != version)
    return reject(409, msg::version_conflict);
  document next = current ? *current : document{};
  auto stamp = stamp_of(now);
  json meta = json::object();
  bool desired_given = false;
  auto section = [&](const char* name, json& data, json& data_meta) {
    auto it = req.state.find(name);
    if (it == req.state.end())
      return;
    if (it->is_null()) {
      data = nullptr;
      data_meta = nullptr;
    } else {
      if (!data.is_object())
        data = json::object();
      if (!data_meta.is_object())
        data_meta = json::object();
      merge(data, data_meta, *it, stamp);
      if (data.empty()) {
        data = nullptr;
        data_meta = nullptr;
      }
    }
    meta[name] = request_metadata(*it, stamp);
  };
  section("desired", next.desired, next.meta_desired);
  section("reported", next.reported, next.meta_reported);
  if (auto it = req.state.find("desired"); it != req.state.end() && it->is_object())
    desired_given = true;
  if (next.state_bytes() > max_document_bytes)
    return reject(413, msg::too_large);
  next.version = version + 1;
  next.timestamp = now;

  update_result out;
  json accepted = json::object();
  accepted["state"] = req.state;
  accepted["metadata"] = std::move(meta);
  accepted["version"] = next.version;
  accepted["timestamp"] = now;
  put_token(accepted, req.client_token);
  out.accepted = dump(accepted);

  json documents = json::object();
  if (current)
    documents["previous"] = current->snapshot();
  documents["current"] = next.snapshot();
  documents["timestamp"] = now;
  put_token(documents, req.client_token);
  out.documents = dump(documents);

  if (desired_given) {
    auto delta = delta_of(next.desired, next.reported);
    if (!delta.is_null()) {
      json event = json::object();
      event["version"] = next.version;
      event["timestamp"] = now;
      event["state"] = delta;
      event["metadata"] = metadata_of(delta, next.meta_desired);
      put_token(event, req.client_token);
      out.delta = dump(event);
    }
  }
  out.current = std::move(next);
  return out;
}

} // namespace

std::string shadow_topic::prefix() const {
  std::string out{things_prefix};
  out += thing;
  out += "/shadow";
  if (!name.empty()) {
    out += "/name/";
    out += name;
  }
  return out;
}

bool valid_thing_name(std::string_view name) noexcept {
  return valid_name(name, max_thing_name);
}

bool valid_shadow_name(std::string_view name) noexcept {
  return valid_name(name, max_shadow_name);
}

bool valid_utf8(std::string_view bytes) noexcept {
  auto s = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size(), i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len)
      return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    static constexpr uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < least[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

std::optional<shadow_topic> parse_topic(std::string_view topic) {
  if (topic.substr(0, things_prefix.size()) != things_prefix)
    return std::nullopt;
  topic.remove_prefix(things_prefix.size());
  // Split on '/': thing, "shadow", [ "name", name ], verb.
  std::string_view parts[5];
  size_t count = 0;
  while (count < 5) {
    auto slash = topic.find('/');
    parts[count++] = topic.substr(0, slash);
    if (slash == std::string_view::npos) {
      topic = {};
      break;
    }
    topic.remove_prefix(slash + 1);
    if (count == 5)
      return std::nullopt; // more levels than any request topic has
  }
  shadow_topic out;
  std::string_view op;
  if (count == 3 && parts[1] == "shadow") {
    op = parts[2];
  } else if (count == 5 && parts[1] == "shadow" && parts[2] == "name") {
    if (!valid_shadow_name(parts[3]))
      return std::nullopt;
    out.name = std::string{parts[3]};
    op = parts[4];
  } else {
    return std::nullopt;
  }
  if (!valid_thing_name(parts[0]))
    return std::nullopt;
  out.thing = std::string{parts[0]};
  if (op == "get")
    out.op = verb::get;
  else if (op == "update")
    out.op = verb::update;
  else if (op == "delete")
    out.op = verb::del;
  else
    return std::nullopt;
  return out;
}

std::string document::serialize() const {
  return get_accepted(*this, std::nullopt, timestamp);
}

std::optional<document> document::deserialize(std::string_view text) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return std::nullopt;
  auto state = j.find("state");
  auto meta = j.find("metadata");
  auto version = j.find("version");
  auto ts = j.find("timestamp");
  if (state == j.end() || !state->is_object() || meta == j.end() || !meta->is_object()
      || version == j.end() || !version->is_number_unsigned() || ts == j.end()
      || !ts->is_number_integer())
    return std::nullopt;
  document d;
  // Moved out of the parsed text, not copied: every cache miss parses a document.
  auto section = [](json& from, const char* key) -> json {
    auto it = from.find(key);
    return it != from.end() && it->is_object() ? std::move(*it) : json{};
  };
  d.desired = section(*state, "desired");
  d.reported = section(*state, "reported");
  d.meta_desired = section(*meta, "desired");
  d.meta_reported = section(*meta, "reported");
  d.version = version->get<uint64_t>();
  d.timestamp = ts->get<int64_t>();
  return d;
}

json document::snapshot() const {
  json j = json::object();
  json state = json::object();
  json meta = json::object();
  put_sections(state, desired, reported);
  put_sections(meta, meta_desired, meta_reported);
  j["state"] = std::move(state);
  j["metadata"] = std::move(meta);
  j["version"] = version;
  return j;
}

size_t document::state_bytes() const {
  size_t n = 0;
  if (!desired.is_null())
    n += dump(desired).size();
  if (!reported.is_null())
    n += dump(reported).size();
  return n;
}

outcome<request> parse_request(std::string_view payload, verb op, size_t max_payload_bytes) {
  try {
    return parse_request_impl(payload, op, max_payload_bytes);
  } catch (...) {
    return reject(500, msg::internal); // nlohmann only throws on misuse: never expected
  }
}

std::optional<json> parse_object(std::string_view text) {
  try {
    if (!valid_utf8(text) || raw_depth(text, max_raw_depth) > max_raw_depth)
      return std::nullopt;
    auto doc = json::parse(text, nullptr, false);
    if (doc.is_discarded() || !doc.is_object())
      return std::nullopt;
    return doc;
  } catch (...) {
    return std::nullopt;
  }
}

std::optional<std::string> client_token_of(std::string_view payload) {
  try {
    auto parsed = parse_object(payload);
    if (!parsed)
      return std::nullopt;
    auto& doc = *parsed;
    auto it = doc.find("clientToken");
    if (it == doc.end() || !it->is_string()
        || it->get_ref<const std::string&>().size() > max_client_token)
      return std::nullopt;
    return it->get<std::string>();
  } catch (...) {
    return std::nullopt;
  }
}

outcome<update_result> apply_update(const std::optional<document>& current,
                                    const std::optional<tombstone>& tomb, const request& req,
                                    int64_t now, size_t max_document_bytes) {
  try {
    return apply_update_impl(current, tomb, req, now, max_document_bytes);
  } catch (...) {
    return reject(500, msg::internal);
  }
}

json delta_of(const json& desired, const json& reported) {
  if (!desired.is_object())
    return nullptr;
  json out = json::object();
  for (const auto& [key, value] : desired.items()) {
    auto it = reported.is_object() ? reported.find(key) : reported.end();
    if (!reported.is_object() || it == reported.end()) {
      out[key] = value;
    } else if (value.is_object() && it->is_object()) {
      auto sub = delta_of(value, *it);
      if (!sub.is_null())
        out[key] = std::move(sub);
    } else if (value != *it) {
      out[key] = value;
    }
  }
  if (out.empty())
    return nullptr;
  return out;
}

std::string get_accepted(const document& doc, const std::optional<std::string>& token,
                         int64_t now) {
  json j = json::object();
  json state = json::object();
  json meta = json::object();
  put_sections(state, doc.desired, doc.reported);
  if (auto delta = delta_of(doc.desired, doc.reported); !delta.is_null())
    state["delta"] = std::move(delta);
  put_sections(meta, doc.meta_desired, doc.meta_reported);
  j["state"] = std::move(state);
  j["metadata"] = std::move(meta);
  j["version"] = doc.version;
  j["timestamp"] = now;
  put_token(j, token);
  return dump(j);
}

std::optional<std::string> get_accepted_from_stored(std::string_view stored,
                                                    const std::optional<std::string>& token,
                                                    int64_t now) {
  // The top level's last key is "timestamp" (get_accepted's order); the metadata's
  // timestamps all come before it, so its last occurrence is the top level's.
  constexpr std::string_view key = ",\"timestamp\":";
  auto at = stored.rfind(key);
  if (at == std::string_view::npos || stored.size() < at + key.size() + 2
      || stored.back() != '}' || stored.front() != '{')
    return std::nullopt;
  auto digits = stored.substr(at + key.size(), stored.size() - at - key.size() - 1);
  if (digits.empty()
      || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  std::string out;
  out.reserve(stored.size() + 24 + (token ? token->size() * 2 + 16 : 0));
  out.append(stored.substr(0, at + key.size()));
  out += std::to_string(now);
  if (token) {
    json tail = json::object();
    tail["clientToken"] = *token;
    auto text = dump(tail); // {"clientToken":"..."}, escaped as dump escapes it
    out += ',';
    out.append(text, 1, text.size() - 2);
  }
  out += '}';
  return out;
}

std::string delete_accepted(uint64_t version, const std::optional<std::string>& token,
                            int64_t now) {
  json j = json::object();
  j["version"] = version;
  j["timestamp"] = now;
  put_token(j, token);
  return dump(j);
}

std::string rejected_payload(const rejection& r, const std::optional<std::string>& token,
                             int64_t now) {
  json j = json::object();
  j["code"] = r.code;
  j["message"] = r.message;
  j["timestamp"] = now;
  put_token(j, token);
  return dump(j);
}

rejection no_shadow(const shadow_topic& t) {
  std::string name = t.thing;
  if (!t.name.empty())
    name += "~" + t.name;
  return rejection{404, "No shadow exists with name: '" + name + "'"};
}

} // namespace grove::shadow
