#include "v1_api.hpp"

#include "lambda.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <climits>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>


#include "api.hpp"
#include "client_tokens.hpp"
#include "discovery.hpp"
#include "group_ca.hpp"
#include "grove/errors.hpp"
#include "grove/file.hpp"
#include "grove/kernel/config.hpp"
#include "grove/kernel/group.hpp"
#include "grove/topic.hpp"

namespace grove::deployment {

using nlohmann::json;

namespace {

/// One definition kind: its route segment, its name in operation names, the list field
/// of its versions, and a noun for messages.
struct kind_info {
  std::string_view route;
  std::string_view op;
  std::string_view list;
  std::string_view noun;
};

constexpr kind_info kinds[] = {
  {"cores", "Core", "Cores", "core"},
  {"devices", "Device", "Devices", "device"},
  {"functions", "Function", "Functions", "function"},
  {"subscriptions", "Subscription", "Subscriptions", "subscription"},
  {"resources", "Resource", "Resources", "resource"},
  {"loggers", "Logger", "Loggers", "logger"},
};

const kind_info* find_kind(std::string_view route) {
  for (const auto& k : kinds)
    if (k.route == route)
      return &k;
  return nullptr;
}

std::string noun_of(const std::string& kind) {
  if (kind == "groups")
    return "group";
  auto k = find_kind(kind);
  return k ? std::string{k->noun} + " definition" : kind;
}

// v1's error shape: the status, x-amzn-ErrorType, {"Message", "ErrorDetails"} as the
// model's GeneralError has them (botocore reads Message).
http_response v1_error(int status, const std::string& type, const std::string& message,
                       const std::string& code = {}) {
  http_response r;
  r.status = status;
  r.headers.emplace_back("x-amzn-ErrorType", type);
  json body = {{"Message", message}};
  if (!code.empty())
    body["ErrorDetails"] =
      json::array({{{"DetailedErrorCode", code}, {"DetailedErrorMessage", message}}});
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

http_response bad_request(const std::string& message, const std::string& code = "InvalidInput") {
  return v1_error(400, "BadRequestException", message, code);
}

http_response bad_field(const v1_field_error& e) {
  return bad_request(e.field + ": " + e.message, "InvalidField");
}

http_response id_not_found(const std::string& kind, const std::string& id) {
  return v1_error(404, "IdNotFoundException",
                  "That " + noun_of(kind) + " does not exist: '" + id.substr(0, 128) + "'");
}

http_response version_not_found(const std::string& kind, const std::string& id,
                                const std::string& version) {
  return v1_error(404, "VersionNotFoundException",
                  "Version '" + version.substr(0, 128) + "' of " + noun_of(kind) + " '"
                    + id.substr(0, 128) + "' does not exist");
}

http_response internal(const caf::error& err) {
  return v1_error(500, "InternalServerErrorException",
                  "the group store failed: " + caf::to_string(err));
}

// The resource `kind`/`id` exists (its row in `*row` when asked for), else the answer:
// the store's failure (internal) or IdNotFoundException (404).
std::optional<http_response> require_resource(v1_store& store, const std::string& kind,
                                              const std::string& id, v1_resource* row = nullptr) {
  auto res = store.get(kind, id);
  if (!res)
    return internal(res.error());
  if (!*res)
    return id_not_found(kind, id);
  if (row)
    *row = std::move(**res);
  return std::nullopt;
}

http_response ok(const json& body, int status = 200) {
  http_response r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

// MaxResults (1..100, 100 when absent) and NextToken (an insertion number this API gave).
std::optional<http_response> page(const http_request& req, size_t& limit, int64_t& after) {
  auto text = query_value(req, "MaxResults");
  limit = 100;
  if (!text.empty()) {
    if (text.size() > 3 || !std::all_of(text.begin(), text.end(), ::isdigit)
        || std::stoi(text) < 1 || std::stoi(text) > 100)
      return bad_request("MaxResults must be 1 to 100", "InvalidMaxResults");
    limit = static_cast<size_t>(std::stoi(text));
  }
  after = -1;
  auto next = query_value(req, "NextToken");
  if (!next.empty()) {
    std::string raw;
    if (!base64_decode(next, raw) || raw.empty() || raw.size() > 19
        || !std::all_of(raw.begin(), raw.end(), ::isdigit))
      return bad_request("NextToken is not one this API gave", "InvalidNextToken");
    after = std::stoll(raw);
  }
  return std::nullopt;
}

std::string next_token(int64_t seq) {
  return base64_encode(std::to_string(seq));
}

// The body as a JSON object ({} when empty), or nullopt.
std::optional<json> body_of(const http_request& req) {
  auto body = json::parse(req.body.empty() ? std::string_view{"{}"} : std::string_view{req.body},
                          nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return std::nullopt;
  return body;
}

// ---- checks of a definition version ---------------------------------------------------

using fault = std::optional<v1_field_error>;

std::string at(const std::string& path, std::string_view key) {
  return path.empty() ? std::string{key} : path + "." + std::string{key};
}

std::string at(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

// `obj` is an object holding only `allowed` keys and every `required` one.
fault shape(const json& obj, const std::string& path, std::initializer_list<std::string_view> allowed,
            std::initializer_list<std::string_view> required = {}) {
  if (!obj.is_object())
    return v1_field_error{path.empty() ? "body" : path, "must be an object"};
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end())
      return v1_field_error{at(path, it.key()), "unknown field"};
  for (auto key : required)
    if (!obj.contains(key) || obj[std::string{key}].is_null())
      return v1_field_error{at(path, key), "is required"};
  return std::nullopt;
}

fault string_field(const json& obj, const std::string& path, std::string_view key,
                   size_t max = 1024) {
  auto it = obj.find(key);
  if (it == obj.end())
    return std::nullopt;
  if (!it->is_string())
    return v1_field_error{at(path, key), "must be a string"};
  if (it->get_ref<const std::string&>().size() > max)
    return v1_field_error{at(path, key), "is longer than " + std::to_string(max) + " characters"};
  return std::nullopt;
}

fault bool_field(const json& obj, const std::string& path, std::string_view key) {
  auto it = obj.find(key);
  if (it != obj.end() && !it->is_boolean())
    return v1_field_error{at(path, key), "must be true or false"};
  return std::nullopt;
}

fault int_field(const json& obj, const std::string& path, std::string_view key, int64_t lo,
                int64_t hi) {
  auto it = obj.find(key);
  if (it == obj.end())
    return std::nullopt;
  if (!it->is_number_integer() || it->get<int64_t>() < lo || it->get<int64_t>() > hi)
    return v1_field_error{at(path, key), "must be an integer from " + std::to_string(lo) + " to "
                                           + std::to_string(hi)};
  return std::nullopt;
}

fault enum_field(const json& obj, const std::string& path, std::string_view key,
                 std::initializer_list<std::string_view> values) {
  auto it = obj.find(key);
  if (it == obj.end())
    return std::nullopt;
  if (it->is_string()
      && std::find(values.begin(), values.end(), it->get_ref<const std::string&>()) != values.end())
    return std::nullopt;
  std::string list;
  for (auto v : values)
    list += (list.empty() ? "" : " | ") + std::string{v};
  return v1_field_error{at(path, key), "must be one of " + list};
}

// The list under `key` (absent: empty), at most `max` long.
fault list_field(const json& obj, const std::string& path, std::string_view key, size_t max,
                 const json*& out) {
  static const json empty = json::array();
  out = &empty;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null())
    return std::nullopt;
  if (!it->is_array())
    return v1_field_error{at(path, key), "must be a list"};
  if (it->size() > max)
    return v1_field_error{at(path, key), std::to_string(it->size()) + " entries; at most "
                                           + std::to_string(max)};
  out = &*it;
  return std::nullopt;
}

// Names as the kernel takes them (things, functions): 1-128 of [A-Za-z0-9_.-].
bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 128)
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

// An ARN of `service` in partition aws: its region, account and resource.
bool split_arn(const std::string& arn, std::string_view service, std::string& region,
               std::string& account, std::string& resource) {
  auto f = arn_fields_of(arn);
  if (!f || f->partition != "aws" || f->service != service)
    return false;
  region = std::move(f->region);
  account = std::move(f->account);
  resource = std::move(f->resource);
  return true;
}

// `arn:aws:iot:<region>:<account>:thing/<name>` → name.
std::optional<std::string> thing_of(const std::string& arn) {
  std::string region, account, resource;
  if (!split_arn(arn, "iot", region, account, resource) || resource.rfind("thing/", 0) != 0)
    return std::nullopt;
  auto name = resource.substr(6);
  if (!valid_name(name))
    return std::nullopt;
  return name;
}

// `arn:aws:lambda:<region>:<account>:function:<name>:<qualifier>` → name (v1 deploys
// an alias or a version, never $LATEST).
std::optional<std::string> function_of(const std::string& arn, std::string* why = nullptr) {
  std::string region, account, resource;
  if (!split_arn(arn, "lambda", region, account, resource) || resource.rfind("function:", 0) != 0)
    return std::nullopt;
  auto rest = resource.substr(9);
  auto colon = rest.find(':');
  auto name = rest.substr(0, colon);
  if (name.empty() || name.size() > 64
      || !std::all_of(name.begin(), name.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
         }))
    return std::nullopt;
  if (colon == std::string::npos || colon + 1 == rest.size()) {
    if (why)
      *why = "names no alias or version (arn:aws:lambda:<region>:<account>:function:<name>:<alias>)";
    return std::nullopt;
  }
  if (rest.substr(colon + 1) == "$LATEST") {
    if (why)
      *why = "$LATEST cannot be deployed: name an alias or a version";
    return std::nullopt;
  }
  return name;
}

// A subscription's Source or Target: cloud, GGShadowService, a thing or a function ARN.
fault endpoint(const json& s, const std::string& path, std::string_view key) {
  const auto& ep = s[std::string{key}].get_ref<const std::string&>();
  if (ep == "cloud" || ep == "GGShadowService" || thing_of(ep))
    return std::nullopt;
  std::string why;
  if (function_of(ep, &why))
    return std::nullopt;
  if (!why.empty())
    return v1_field_error{at(path, key), "'" + ep.substr(0, 256) + "' " + why};
  return v1_field_error{at(path, key), "'" + ep.substr(0, 256)
                                         + "' is not cloud, GGShadowService, a thing ARN or a "
                                           "Lambda function ARN (connectors are not supported)"};
}

// Ids of a list's entries: required, 1-128 of [a-zA-Z0-9:_-], unique.
fault ids(const json& list, const std::string& path) {
  std::set<std::string> seen;
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& id = list[i]["Id"].get_ref<const std::string&>();
    if (id.empty() || id.size() > 128
        || !std::all_of(id.begin(), id.end(), [](char c) {
             return std::isalnum(static_cast<unsigned char>(c)) || c == ':' || c == '_'
                    || c == '-';
           }))
      return v1_field_error{at(at(path, i), "Id"), "ids are 1-128 of [a-zA-Z0-9:_-]"};
    if (!seen.insert(id).second)
      return v1_field_error{at(at(path, i), "Id"), "id '" + id + "' is used twice"};
  }
  return std::nullopt;
}

// Cores and devices have the same shape.
fault things(const json& def, std::string_view list_key, size_t max) {
  std::string path{list_key};
  const json* list;
  if (auto f = list_field(def, "", list_key, max, list))
    return f;
  std::set<std::string> names;
  for (size_t i = 0; i < list->size(); ++i) {
    const auto& d = (*list)[i];
    auto p = at(path, i);
    if (auto f = shape(d, p, {"CertificateArn", "Id", "SyncShadow", "ThingArn"},
                       {"CertificateArn", "Id", "ThingArn"}))
      return f;
    for (auto key : {"CertificateArn", "Id", "ThingArn"})
      if (auto f = string_field(d, p, key))
        return f;
    if (auto f = bool_field(d, p, "SyncShadow"))
      return f;
    auto thing = thing_of(d["ThingArn"]);
    if (!thing)
      return v1_field_error{at(p, "ThingArn"),
                            "'" + d["ThingArn"].get<std::string>().substr(0, 256)
                              + "' is not arn:aws:iot:<region>:<account>:thing/<name> (names "
                                "1-128 of [A-Za-z0-9_.-])"};
    if (*thing == "grove")
      return v1_field_error{at(p, "ThingArn"),
                            "thing name 'grove' is reserved for Grove's own broker client"};
    if (!names.insert(*thing).second)
      return v1_field_error{at(p, "ThingArn"), "thing '" + *thing + "' is listed twice"};
    const auto& cert = d["CertificateArn"].get_ref<const std::string&>();
    std::string region, account, resource;
    if (!split_arn(cert, "iot", region, account, resource) || resource.rfind("cert/", 0) != 0)
      return v1_field_error{at(p, "CertificateArn"),
                            "'" + cert.substr(0, 256)
                              + "' is not arn:aws:iot:<region>:<account>:cert/<id>"};
  }
  return ids(*list, path);
}

fault check_execution(const json& exec, const std::string& p) {
  if (auto f = shape(exec, p, {"IsolationMode", "RunAs"}))
    return f;
  if (auto f = enum_field(exec, p, "IsolationMode", {"GreengrassContainer", "NoContainer"}))
    return f;
  if (exec.contains("RunAs")) {
    auto rp = at(p, "RunAs");
    if (auto f = shape(exec["RunAs"], rp, {"Gid", "Uid"}))
      return f;
    for (auto key : {"Gid", "Uid"})
      if (auto f = int_field(exec["RunAs"], rp, key, 0, 4294967294))
        return f;
  }
  return std::nullopt;
}

fault check_functions(const json& def) {
  const json* list;
  if (auto f = list_field(def, "", "Functions", 1000, list))
    return f;
  if (def.contains("DefaultConfig")) {
    const auto& dc = def["DefaultConfig"];
    if (auto f = shape(dc, "DefaultConfig", {"Execution"}))
      return f;
    if (dc.contains("Execution"))
      if (auto f = check_execution(dc["Execution"], "DefaultConfig.Execution"))
        return f;
  }
  std::set<std::string> names;
  for (size_t i = 0; i < list->size(); ++i) {
    const auto& fn = (*list)[i];
    auto p = at(std::string{"Functions"}, i);
    if (auto f = shape(fn, p, {"FunctionArn", "FunctionConfiguration", "Id"}, {"Id", "FunctionArn"}))
      return f;
    for (auto key : {"FunctionArn", "Id"})
      if (auto f = string_field(fn, p, key))
        return f;
    std::string why;
    auto name = function_of(fn["FunctionArn"], &why);
    if (!name)
      return v1_field_error{at(p, "FunctionArn"),
                            "'" + fn["FunctionArn"].get<std::string>().substr(0, 256) + "' "
                              + (why.empty() ? "is not arn:aws:lambda:<region>:<account>:"
                                               "function:<name>:<alias or version>"
                                             : why)};
    if (!names.insert(*name).second)
      return v1_field_error{at(p, "FunctionArn"), "function '" + *name + "' is listed twice"};
    if (!fn.contains("FunctionConfiguration"))
      continue;
    const auto& c = fn["FunctionConfiguration"];
    auto cp = at(p, "FunctionConfiguration");
    if (auto f = shape(c, cp, {"EncodingType", "Environment", "ExecArgs", "Executable",
                               "MemorySize", "Pinned", "Timeout", "FunctionRuntimeOverride"}))
      return f;
    if (auto f = enum_field(c, cp, "EncodingType", {"binary", "json"}))
      return f;
    for (auto key : {"ExecArgs", "Executable", "FunctionRuntimeOverride"})
      if (auto f = string_field(c, cp, key))
        return f;
    if (auto f = int_field(c, cp, "MemorySize", 1, 1LL << 32))
      return f;
    if (auto f = int_field(c, cp, "Timeout", 1, 900))
      return f;
    if (auto f = bool_field(c, cp, "Pinned"))
      return f;
    if (!c.contains("Environment"))
      continue;
    const auto& env = c["Environment"];
    auto ep = at(cp, "Environment");
    if (auto f = shape(env, ep, {"AccessSysfs", "Execution", "ResourceAccessPolicies", "Variables"}))
      return f;
    if (auto f = bool_field(env, ep, "AccessSysfs"))
      return f;
    if (env.contains("Execution"))
      if (auto f = check_execution(env["Execution"], at(ep, "Execution")))
        return f;
    if (env.contains("Variables")) {
      const auto& vars = env["Variables"];
      if (!vars.is_object())
        return v1_field_error{at(ep, "Variables"), "must be a map of strings"};
      for (auto it = vars.begin(); it != vars.end(); ++it)
        if (!it->is_string() || it.key().empty())
          return v1_field_error{at(at(ep, "Variables"), it.key()), "must be a string"};
    }
    const json* policies;
    if (auto f = list_field(env, ep, "ResourceAccessPolicies", 1000, policies))
      return f;
    for (size_t k = 0; k < policies->size(); ++k) {
      auto pp = at(at(ep, "ResourceAccessPolicies"), k);
      if (auto f = shape((*policies)[k], pp, {"Permission", "ResourceId"}, {"ResourceId"}))
        return f;
      if (auto f = string_field((*policies)[k], pp, "ResourceId", 128))
        return f;
      if (auto f = enum_field((*policies)[k], pp, "Permission", {"ro", "rw"}))
        return f;
    }
  }
  return ids(*list, "Functions");
}

fault check_subscriptions(const json& def) {
  const json* list;
  if (auto f = list_field(def, "", "Subscriptions", max_group_subscriptions, list))
    return f;
  for (size_t i = 0; i < list->size(); ++i) {
    const auto& s = (*list)[i];
    auto p = at(std::string{"Subscriptions"}, i);
    if (auto f = shape(s, p, {"Id", "Source", "Subject", "Target"},
                       {"Id", "Source", "Subject", "Target"}))
      return f;
    for (auto key : {"Id", "Source", "Subject", "Target"})
      if (auto f = string_field(s, p, key, 1024))
        return f;
    for (auto key : {"Source", "Target"})
      if (auto f = endpoint(s, p, key))
        return f;
    if (s["Source"] == s["Target"])
      return v1_field_error{at(p, "Target"), "source and target are the same"};
    const auto& subject = s["Subject"].get_ref<const std::string&>();
    if (auto err = validate_filter(subject))
      return v1_field_error{at(p, "Subject"), describe(err)};
    for (unsigned char c : subject)
      if (c < 0x20 || c == 0x7f)
        return v1_field_error{at(p, "Subject"), "a subject must not contain control characters"};
  }
  return ids(*list, "Subscriptions");
}

fault check_owner(const json& data, const std::string& p) {
  if (!data.contains("GroupOwnerSetting"))
    return std::nullopt;
  auto gp = at(p, "GroupOwnerSetting");
  if (auto f = shape(data["GroupOwnerSetting"], gp, {"AutoAddGroupOwner", "GroupOwner"}))
    return f;
  if (auto f = bool_field(data["GroupOwnerSetting"], gp, "AutoAddGroupOwner"))
    return f;
  return string_field(data["GroupOwnerSetting"], gp, "GroupOwner", 32);
}

fault check_resources(const json& def) {
  const json* list;
  if (auto f = list_field(def, "", "Resources", 50, list))
    return f;
  for (size_t i = 0; i < list->size(); ++i) {
    const auto& r = (*list)[i];
    auto p = at(std::string{"Resources"}, i);
    if (auto f = shape(r, p, {"Id", "Name", "ResourceDataContainer"},
                       {"Id", "Name", "ResourceDataContainer"}))
      return f;
    for (auto key : {"Id", "Name"})
      if (auto f = string_field(r, p, key, 128))
        return f;
    auto cp = at(p, "ResourceDataContainer");
    const auto& c = r["ResourceDataContainer"];
    if (auto f = shape(c, cp, {"LocalDeviceResourceData", "LocalVolumeResourceData",
                               "S3MachineLearningModelResourceData",
                               "SageMakerMachineLearningModelResourceData",
                               "SecretsManagerSecretResourceData"}))
      return f;
    if (c.size() != 1)
      return v1_field_error{cp, "holds exactly one kind of resource data"};
    auto kind = c.begin().key();
    auto dp = at(cp, kind);
    const auto& data = c.begin().value();
    if (kind == "LocalVolumeResourceData") {
      if (auto f = shape(data, dp, {"DestinationPath", "GroupOwnerSetting", "SourcePath"},
                         {"DestinationPath", "SourcePath"}))
        return f;
      for (auto key : {"DestinationPath", "SourcePath"}) {
        if (auto f = string_field(data, dp, key))
          return f;
        if (data[key].get_ref<const std::string&>().rfind('/', 0) != 0)
          return v1_field_error{at(dp, key), "must be an absolute path"};
      }
    } else if (kind == "LocalDeviceResourceData") {
      if (auto f = shape(data, dp, {"GroupOwnerSetting", "SourcePath"}, {"SourcePath"}))
        return f;
      if (auto f = string_field(data, dp, "SourcePath"))
        return f;
      if (data["SourcePath"].get_ref<const std::string&>().rfind("/dev/", 0) != 0)
        return v1_field_error{at(dp, "SourcePath"), "a device is under /dev/"};
    } else {
      return v1_field_error{dp, "is not supported by Grove (local volumes and devices are)"};
    }
    if (auto f = check_owner(data, dp))
      return f;
  }
  return ids(*list, "Resources");
}

fault check_loggers(const json& def) {
  const json* list;
  if (auto f = list_field(def, "", "Loggers", 100, list))
    return f;
  for (size_t i = 0; i < list->size(); ++i) {
    const auto& l = (*list)[i];
    auto p = at(std::string{"Loggers"}, i);
    if (auto f = shape(l, p, {"Component", "Id", "Level", "Space", "Type"},
                       {"Component", "Id", "Level", "Type"}))
      return f;
    if (auto f = string_field(l, p, "Id", 128))
      return f;
    if (auto f = enum_field(l, p, "Component", {"GreengrassSystem", "Lambda"}))
      return f;
    if (auto f = enum_field(l, p, "Level", {"DEBUG", "INFO", "WARN", "ERROR", "FATAL"}))
      return f;
    if (auto f = enum_field(l, p, "Type", {"FileSystem", "AWSCloudWatch"}))
      return f;
    if (l["Type"] == "AWSCloudWatch")
      return v1_field_error{at(p, "Type"), "AWSCloudWatch: no cloud logging on the device (a "
                                           "Grove core logs to its FileSystem only)"};
    if (auto f = int_field(l, p, "Space", 1, 1LL << 30))
      return f;
    // One logger per component (the kernel's group holds at most one of each).
    for (size_t j = 0; j < i; ++j)
      if ((*list)[j]["Component"] == l["Component"])
        return v1_field_error{at(p, "Component"),
                              l["Component"].get<std::string>() + " has a logger already (Loggers["
                                + std::to_string(j) + "])"};
  }
  return ids(*list, "Loggers");
}

// The version's Definition from a request body (its list field(s) only).
json definition_of(const kind_info& k, const json& body) {
  json def = json::object();
  auto list = std::string{k.list};
  if (body.contains(list))
    def[list] = body[list];
  else
    def[list] = json::array();
  if (k.route == "functions" && body.contains("DefaultConfig"))
    def["DefaultConfig"] = body["DefaultConfig"];
  return def;
}

constexpr std::string_view group_version_fields[] = {
  "CoreDefinitionVersionArn",     "DeviceDefinitionVersionArn",
  "FunctionDefinitionVersionArn", "SubscriptionDefinitionVersionArn",
  "ResourceDefinitionVersionArn", "LoggerDefinitionVersionArn",
};

fault group_version_shape(const json& gv, const std::string& path) {
  return shape(gv, path, {group_version_fields[0], group_version_fields[1],
                          group_version_fields[2], group_version_fields[3],
                          group_version_fields[4], group_version_fields[5],
                          "ConnectorDefinitionVersionArn"});
}

// `arn:aws:greengrass:<r>:<a>:/greengrass/definition/<kind>/<id>/versions/<version>` →
// (kind, id, version); also `.../groups/<id>[...]` (kind "groups").
struct v1_arn {
  std::string region, account, kind, id, version;
};

std::optional<v1_arn> parse_v1_arn(const std::string& arn) {
  std::string region, account, resource;
  if (!split_arn(arn, "greengrass", region, account, resource))
    return std::nullopt;
  std::vector<std::string> segs;
  size_t start = 0;
  if (resource.rfind("/greengrass/", 0) != 0)
    return std::nullopt;
  resource = resource.substr(12);
  while (start <= resource.size()) {
    auto slash = resource.find('/', start);
    segs.push_back(resource.substr(start, slash - start));
    if (slash == std::string::npos)
      break;
    start = slash + 1;
  }
  for (const auto& s : segs)
    if (s.empty())
      return std::nullopt;
  v1_arn out{region, account, {}, {}, {}};
  size_t rest = 0;
  if (segs.size() >= 3 && segs[0] == "definition" && find_kind(segs[1])) {
    out.kind = segs[1];
    out.id = segs[2];
    rest = 3;
  } else if (segs.size() >= 2 && segs[0] == "groups") {
    out.kind = "groups";
    out.id = segs[1];
    rest = 2;
  } else {
    return std::nullopt;
  }
  if (segs.size() == rest)
    return out;
  if (segs.size() == rest + 2 && segs[rest] == "versions") {
    out.version = segs[rest + 1];
    return out;
  }
  return std::nullopt;
}

// "a b  c" → ["a", "b", "c"].
json split_args(const std::string& s) {
  json out = json::array();
  std::string cur;
  for (char c : s) {
    if (c == ' ' || c == '\t') {
      if (!cur.empty())
        out.push_back(std::exchange(cur, {}));
    } else {
      cur += c;
    }
  }
  if (!cur.empty())
    out.push_back(cur);
  return out;
}

// PascalCase keys → camelCase, recursively (resource data: local_resources' keys).
json camel(const json& j) {
  if (j.is_object()) {
    json out = json::object();
    for (auto it = j.begin(); it != j.end(); ++it) {
      auto key = it.key();
      if (!key.empty())
        key[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(key[0])));
      out[key] = camel(*it);
    }
    return out;
  }
  if (j.is_array()) {
    json out = json::array();
    for (const auto& e : j)
      out.push_back(camel(e));
    return out;
  }
  return j;
}

} // namespace

// ---- the class -------------------------------------------------------------------------

v1_api::v1_api(const api_settings& settings, v1_settings v1, v1_store& store)
  : region_(settings.region),
    account_(settings.account_id),
    token_ttl_ms_(settings.token_ttl.count() * 1000),
    v1_(std::move(v1)),
    store_(store) {
}

void v1_api::set_applier(v1_applier applier) {
  std::lock_guard guard{mtx_};
  applier_ = std::move(applier);
}

bool v1_api::is_v1_arn(const std::string& arn) {
  return parse_v1_arn(arn).has_value();
}

std::string v1_api::operation(const std::string& m, const std::vector<std::string>& segs) {
  auto n = segs.size();
  if (n < 2 || segs[0] != "greengrass")
    return {};
  if (n == 2 && segs[1] == "servicerole")
    return m == "PUT"      ? "AssociateServiceRoleToAccount"
           : m == "GET"    ? "GetServiceRoleForAccount"
           : m == "DELETE" ? "DisassociateServiceRoleFromAccount"
                           : "";
  if (segs[1] == "bulk") {
    if (n < 3 || segs[2] != "deployments")
      return {};
    if (n == 3)
      return m == "POST" ? "StartBulkDeployment" : m == "GET" ? "ListBulkDeployments" : "";
    if (n == 5 && segs[4] == "status" && m == "GET")
      return "GetBulkDeploymentStatus";
    if (n == 5 && segs[4] == "detailed-reports" && m == "GET")
      return "ListBulkDeploymentDetailedReports";
    if (n == 5 && segs[4] == "$stop" && m == "PUT")
      return "StopBulkDeployment";
    return {};
  }
  if (segs[1] == "definition" && n >= 3) {
    auto k = find_kind(segs[2]);
    if (!k)
      return {};
    std::string op{k->op};
    if (n == 3)
      return m == "POST" ? "Create" + op + "Definition"
             : m == "GET" ? "List" + op + "Definitions"
                          : "";
    if (n == 4)
      return m == "GET"      ? "Get" + op + "Definition"
             : m == "PUT"    ? "Update" + op + "Definition"
             : m == "DELETE" ? "Delete" + op + "Definition"
                             : "";
    if (n == 5 && segs[4] == "versions")
      return m == "POST" ? "Create" + op + "DefinitionVersion"
             : m == "GET" ? "List" + op + "DefinitionVersions"
                          : "";
    if (n == 6 && segs[4] == "versions" && m == "GET")
      return "Get" + op + "DefinitionVersion";
    return {};
  }
  if (segs[1] != "groups")
    return {};
  if (n == 2)
    return m == "POST" ? "CreateGroup" : m == "GET" ? "ListGroups" : "";
  if (n == 3)
    return m == "GET"      ? "GetGroup"
           : m == "PUT"    ? "UpdateGroup"
           : m == "DELETE" ? "DeleteGroup"
                           : "";
  if (n == 4 && segs[3] == "role")
    return m == "PUT"      ? "AssociateRoleToGroup"
           : m == "GET"    ? "GetAssociatedRole"
           : m == "DELETE" ? "DisassociateRoleFromGroup"
                           : "";
  if (n == 4 && segs[3] == "versions")
    return m == "POST" ? "CreateGroupVersion" : m == "GET" ? "ListGroupVersions" : "";
  if (n == 5 && segs[3] == "versions" && m == "GET")
    return "GetGroupVersion";
  if (n == 4 && segs[3] == "deployments")
    return m == "POST" ? "CreateDeployment" : m == "GET" ? "ListDeployments" : "";
  if (n == 5 && segs[3] == "deployments" && segs[4] == "$reset" && m == "POST")
    return "ResetDeployments";
  if (n == 6 && segs[3] == "deployments" && segs[5] == "status" && m == "GET")
    return "GetDeploymentStatus";
  if (n >= 4 && segs[3] == "certificateauthorities") {
    if (n == 4)
      return m == "POST"  ? "CreateGroupCertificateAuthority"
             : m == "GET" ? "ListGroupCertificateAuthorities"
                          : "";
    if (n == 6 && segs[4] == "configuration" && segs[5] == "expiry")
      return m == "GET"   ? "GetGroupCertificateConfiguration"
             : m == "PUT" ? "UpdateGroupCertificateConfiguration"
                          : "";
    if (n == 5 && m == "GET")
      return "GetGroupCertificateAuthority";
  }
  return {};
}

std::optional<v1_field_error> v1_api::check_definition(const std::string& kind, const json& def) {
  if (kind == "cores")
    return things(def, "Cores", 1);
  if (kind == "devices")
    return things(def, "Devices", max_group_devices);
  if (kind == "functions")
    return check_functions(def);
  if (kind == "subscriptions")
    return check_subscriptions(def);
  if (kind == "resources")
    return check_resources(def);
  if (kind == "loggers")
    return check_loggers(def);
  return v1_field_error{"kind", "unknown kind '" + kind + "'"};
}

std::string v1_api::resource_arn(const std::string& kind, const std::string& id) const {
  return "arn:aws:greengrass:" + region_ + ":" + account_ + ":/greengrass/"
         + (kind == "groups" ? "groups/" : "definition/" + kind + "/") + id;
}

std::string v1_api::version_arn(const std::string& kind, const std::string& id,
                                const std::string& version) const {
  return resource_arn(kind, id) + "/versions/" + version;
}

json v1_api::resource_json(const v1_resource& r, bool with_tags) const {
  json out = {{"Arn", resource_arn(r.kind, r.id)},
              {"CreationTimestamp", iso8601_ms(r.created_ms)},
              {"Id", r.id},
              {"LastUpdatedTimestamp", iso8601_ms(r.updated_ms)}};
  if (!r.latest.empty()) {
    out["LatestVersion"] = r.latest;
    out["LatestVersionArn"] = version_arn(r.kind, r.id, r.latest);
  }
  if (!r.name.empty())
    out["Name"] = r.name;
  if (with_tags)
    out["tags"] = json::parse(r.tags);
  return out;
}

http_response v1_api::handle(const std::string& op, const std::vector<std::string>& segs,
                             const http_request& req, int64_t now_ms) {
  // The kind and ids from the route operation() accepted.
  bool group = segs[1] == "groups";
  std::string kind = group ? "groups" : segs.size() > 2 ? segs[2] : "";
  size_t id_at = group ? 2 : 3;
  std::string id = segs.size() > id_at ? segs[id_at] : "";
  std::string sub = segs.size() > id_at + 1 ? segs[id_at + 1] : "";
  std::string sub_id = segs.size() > id_at + 2 ? segs[id_at + 2] : "";
  // clientToken (X-Amzn-Client-Token): the same token and request within the token's
  // lifetime answer the first answer again; another request with it is refused.
  std::string token{req.header("x-amzn-client-token")};
  bool creates =
    op.rfind("Create", 0) == 0 || op == "ResetDeployments" || op == "StartBulkDeployment";
  std::unique_lock guard{mtx_, std::defer_lock};
  std::string request_hash;
  // DeleteGroup too: a CreateGroupCertificateAuthority running meanwhile would write a
  // key directory for the deleted group.
  if (creates || op == "DeleteGroup")
    guard.lock();
  if (creates) {
    if (!token.empty()) {
      if (token.size() > 64
          || !std::all_of(token.begin(), token.end(), [](char c) { return c > 0x20 && c < 0x7f; }))
        return bad_request("X-Amzn-Client-Token must be 1 to 64 printable characters",
                           "InvalidClientToken");
      request_hash = hex(sha256(op + "\n" + std::string{req.raw_path()} + "\n" + req.body));
      auto rec = store_.token(token, now_ms);
      if (!rec)
        return internal(rec.error());
      switch (judge_token(*rec, request_hash)) {
        case token_verdict::mismatch:
          return bad_request("X-Amzn-Client-Token '" + token + "' was used for another request",
                             "IdempotentParameterMismatch");
        case token_verdict::retry:
          return ok(json::parse((*rec)->response), (*rec)->status);
        case token_verdict::fresh:
          break;
      }
    }
  }
  http_response r;
  if (op == "CreateGroupCertificateAuthority")
    r = create_ca(id, now_ms);
  else if (op == "ListGroupCertificateAuthorities")
    r = list_cas(id);
  else if (op == "GetGroupCertificateAuthority")
    r = get_ca(id, sub_id);
  else if (op == "GetGroupCertificateConfiguration")
    r = cert_config(id, nullptr);
  else if (op == "UpdateGroupCertificateConfiguration")
    r = cert_config(id, &req);
  else if (op == "AssociateRoleToGroup" || op == "AssociateServiceRoleToAccount")
    r = associate_role(group ? "group:" + id : "account", req, now_ms);
  else if (op == "GetAssociatedRole" || op == "GetServiceRoleForAccount")
    r = get_role(group ? "group:" + id : "account");
  else if (op == "DisassociateRoleFromGroup" || op == "DisassociateServiceRoleFromAccount")
    r = disassociate_role(group ? "group:" + id : "account", now_ms);
  else if (op == "StartBulkDeployment")
    r = start_bulk(req, now_ms);
  else if (op == "ListBulkDeployments")
    r = list_bulks(req);
  else if (op == "GetBulkDeploymentStatus")
    r = bulk_status(id);
  else if (op == "ListBulkDeploymentDetailedReports")
    r = bulk_reports(id, req);
  else if (op == "StopBulkDeployment")
    r = stop_bulk(id, now_ms);
  else if (op == "CreateGroup" || (!group && sub.empty() && op.rfind("Create", 0) == 0))
    r = create_definition(kind, req, now_ms);
  else if (op == "CreateGroupVersion" || (!group && op.rfind("Create", 0) == 0))
    r = create_version(kind, id, req, now_ms);
  else if (op == "CreateDeployment")
    r = create_deployment(id, req, now_ms);
  else if (op == "ResetDeployments")
    r = reset_deployments(id, req, now_ms);
  else if (op == "GetDeploymentStatus")
    r = deployment_status(id, sub_id);
  else if (op == "ListDeployments")
    r = list_deployments(id, req);
  else if (id.empty())
    r = list_resources(kind, req);
  else if (sub.empty())
    r = req.method == "GET"   ? get_resource(kind, id)
        : req.method == "PUT" ? update_resource(kind, id, req, now_ms)
                              : delete_resource(kind, id);
  else if (sub_id.empty())
    r = list_versions(kind, id, req);
  else
    r = get_version(kind, id, sub_id);
  if (!request_hash.empty() && r.status < 300)
    if (auto err = store_.put_token(token, token_record{request_hash, r.status, r.body},
                                    now_ms + token_ttl_ms_))
      return internal(err);
  return r;
}

http_response v1_api::create_definition(const std::string& kind, const http_request& req,
                                        int64_t now_ms) {
  auto body = body_of(req);
  if (!body)
    return bad_request("the request body is not a JSON object", "InvalidBody");
  if (auto f = shape(*body, "", {"Name", "InitialVersion", "tags"}))
    return bad_field(*f);
  if (kind == "groups" && !body->contains("Name"))
    return bad_field({"Name", "is required"});
  if (auto f = string_field(*body, "", "Name", 128))
    return bad_field(*f);
  v1_resource r;
  r.kind = kind;
  r.id = new_uuid();
  r.name = body->value("Name", "");
  r.created_ms = r.updated_ms = now_ms;
  if (body->contains("tags")) {
    if (auto p = tag_map_problem((*body)["tags"]); !p.empty())
      return bad_request("tags: " + p, "InvalidTags");
    r.tags = (*body)["tags"].dump();
  }
  std::optional<v1_version> first;
  if (body->contains("InitialVersion")) {
    const auto& iv = (*body)["InitialVersion"];
    json def;
    if (kind == "groups") {
      if (auto f = group_version_shape(iv, "InitialVersion"))
        return bad_field(*f);
      auto resolved = resolve_group_version(iv);
      if (auto* e = std::get_if<http_response>(&resolved))
        return *e;
      def = iv;
    } else {
      auto k = find_kind(kind);
      if (auto f = shape(iv, "InitialVersion",
                         k->route == "functions"
                           ? std::initializer_list<std::string_view>{k->list, "DefaultConfig"}
                           : std::initializer_list<std::string_view>{k->list}))
        return bad_field(*f);
      def = definition_of(*k, iv);
      if (auto f = check_definition(kind, def)) {
        f->field = "InitialVersion." + f->field;
        return bad_field(*f);
      }
    }
    first = v1_version{kind, r.id, new_uuid(), now_ms, def.dump(), 0};
    r.latest = first->version;
  }
  if (auto err = store_.create(r, first))
    return internal(err);
  return ok(resource_json(r, false));
}

http_response v1_api::create_version(const std::string& kind, const std::string& id,
                                     const http_request& req, int64_t now_ms) {
  auto body = body_of(req);
  if (!body)
    return bad_request("the request body is not a JSON object", "InvalidBody");
  if (auto err = require_resource(store_, kind, id))
    return *err;
  json def;
  if (kind == "groups") {
    if (auto f = group_version_shape(*body, ""))
      return bad_field(*f);
    auto resolved = resolve_group_version(*body);
    if (auto* e = std::get_if<http_response>(&resolved))
      return *e;
    def = *body;
  } else {
    auto k = find_kind(kind);
    if (auto f = shape(*body, "",
                       k->route == "functions"
                         ? std::initializer_list<std::string_view>{k->list, "DefaultConfig"}
                         : std::initializer_list<std::string_view>{k->list}))
      return bad_field(*f);
    def = definition_of(*k, *body);
    if (auto f = check_definition(kind, def))
      return bad_field(*f);
  }
  v1_version v{kind, id, new_uuid(), now_ms, def.dump(), 0};
  auto added = store_.add_version(v);
  if (!added)
    return internal(added.error());
  if (!*added)
    return id_not_found(kind, id);
  return ok({{"Arn", version_arn(kind, id, v.version)},
             {"CreationTimestamp", iso8601_ms(now_ms)},
             {"Id", id},
             {"Version", v.version}});
}

http_response v1_api::get_resource(const std::string& kind, const std::string& id) {
  v1_resource res;
  if (auto err = require_resource(store_, kind, id, &res))
    return *err;
  return ok(resource_json(res, true));
}

http_response v1_api::list_resources(const std::string& kind, const http_request& req) {
  size_t limit;
  int64_t after;
  if (auto err = page(req, limit, after))
    return *err;
  auto rows = store_.list(kind, after, limit + 1);
  if (!rows)
    return internal(rows.error());
  bool more = rows->size() > limit;
  if (more)
    rows->resize(limit);
  json items = json::array();
  for (const auto& r : *rows) {
    auto j = resource_json(r, false);
    if (kind != "groups") // DefinitionInformation's Tags (on the wire `tags`); not a group's
      j["tags"] = json::parse(r.tags);
    items.push_back(std::move(j));
  }
  json out = {{kind == "groups" ? "Groups" : "Definitions", std::move(items)}};
  if (more)
    out["NextToken"] = next_token(rows->back().seq);
  return ok(out);
}

http_response v1_api::update_resource(const std::string& kind, const std::string& id,
                                      const http_request& req, int64_t now_ms) {
  auto body = body_of(req);
  if (!body)
    return bad_request("the request body is not a JSON object", "InvalidBody");
  if (auto f = shape(*body, "", {"Name"}))
    return bad_field(*f);
  if (!body->contains("Name"))
    return bad_request("Input does not contain any attributes to be updated (Name)",
                       "InvalidContainerDefinition");
  if (auto f = string_field(*body, "", "Name", 128))
    return bad_field(*f);
  auto done = store_.rename(kind, id, (*body)["Name"], now_ms);
  if (!done)
    return internal(done.error());
  if (!*done)
    return id_not_found(kind, id);
  return ok(json::object());
}

http_response v1_api::delete_resource(const std::string& kind, const std::string& id) {
  if (kind == "groups") {
    // AWS refuses to delete a deployed group: reset its deployments first. Deployed: the
    // newest successful deployment is not a reset.
    auto last = store_.deployments(id, INT64_MAX, 100);
    if (!last)
      return internal(last.error());
    auto success = std::find_if(last->begin(), last->end(),
                                [](const v1_deployment& d) { return d.status == "Success"; });
    if (success != last->end() && !success->version.empty())
      return bad_request("Group " + id + " is deployed; reset its deployments "
                           "(ResetDeployments) before deleting it",
                         "GroupDeployed");
  }
  auto gone = store_.erase(kind, id);
  if (!gone)
    return internal(gone.error());
  if (!*gone)
    return id_not_found(kind, id);
  if (kind == "groups" && !v1_.group_ca_dir.empty()) {
    // Its CAs' keys go with it (the records went in the same transaction as the group).
    std::error_code ec;
    std::filesystem::remove_all(v1_.group_ca_dir / id, ec);
    // A reset group was still the deployed one: its CAs leave the trust now.
    if (auto err = refresh_trust())
      return v1_error(500, "InternalServerErrorException",
                      "the group is deleted but the trust directory could not be written: "
                        + caf::to_string(err));
  }
  return ok(json::object());
}

http_response v1_api::get_version(const std::string& kind, const std::string& id,
                                  const std::string& version) {
  if (auto err = require_resource(store_, kind, id))
    return *err;
  auto v = store_.version(kind, id, version);
  if (!v)
    return internal(v.error());
  if (!*v)
    return version_not_found(kind, id, version);
  return ok({{"Arn", version_arn(kind, id, version)},
             {"CreationTimestamp", iso8601_ms((*v)->created_ms)},
             {"Definition", json::parse((*v)->definition)},
             {"Id", id},
             {"Version", version}});
}

http_response v1_api::list_versions(const std::string& kind, const std::string& id,
                                    const http_request& req) {
  size_t limit;
  int64_t after;
  if (auto err = page(req, limit, after))
    return *err;
  if (auto err = require_resource(store_, kind, id))
    return *err;
  auto rows = store_.versions(kind, id, after, limit + 1);
  if (!rows)
    return internal(rows.error());
  bool more = rows->size() > limit;
  if (more)
    rows->resize(limit);
  json items = json::array();
  for (const auto& v : *rows)
    items.push_back({{"Arn", version_arn(kind, id, v.version)},
                     {"CreationTimestamp", iso8601_ms(v.created_ms)},
                     {"Id", id},
                     {"Version", v.version}});
  json out = {{"Versions", std::move(items)}};
  if (more)
    out["NextToken"] = next_token(rows->back().seq);
  return ok(out);
}

std::variant<std::map<std::string, json>, http_response>
v1_api::resolve_group_version(const json& gv) {
  if (gv.contains("ConnectorDefinitionVersionArn"))
    return bad_request("ConnectorDefinitionVersionArn: connectors are not supported by Grove",
                       "InvalidField");
  std::map<std::string, json> defs;
  for (auto field : group_version_fields) {
    std::string key{field};
    if (!gv.contains(key) || gv[key].is_null())
      continue;
    if (!gv[key].is_string())
      return bad_request(key + ": must be a string", "InvalidField");
    const auto& arn = gv[key].get_ref<const std::string&>();
    auto a = parse_v1_arn(arn);
    std::string kind;
    for (const auto& k : kinds)
      if (key == std::string{k.op} + "DefinitionVersionArn")
        kind = k.route;
    if (!a || a->kind != kind || a->version.empty())
      return bad_request(key + ": '" + arn.substr(0, 256) + "' is not a " + noun_of(kind)
                           + " version ARN (arn:aws:greengrass:<region>:<account>:/greengrass/"
                             "definition/"
                           + kind + "/<id>/versions/<version>)",
                         "InvalidField");
    std::optional<v1_version> v;
    if (a->region == region_ && a->account == account_) {
      auto got = store_.version(kind, a->id, a->version);
      if (!got)
        return internal(got.error());
      v = std::move(*got);
    }
    if (!v)
      return bad_request(key + ": " + noun_of(kind) + " version " + arn.substr(0, 256)
                           + " does not exist",
                         "InvalidField");
    defs[kind] = json::parse(v->definition);
  }
  auto g = to_grove_group("check", defs);
  if (auto* f = std::get_if<v1_field_error>(&g))
    return bad_field(*f);
  return defs;
}

std::variant<json, v1_field_error>
v1_api::to_grove_group(const std::string& name, const std::map<std::string, json>& defs) const {
  auto list = [&](const char* kind, const char* key) -> const json& {
    static const json empty = json::array();
    auto it = defs.find(kind);
    if (it == defs.end() || !it->second.contains(key))
      return empty;
    return it->second[key];
  };
  json g = {{"name", name},
            {"devices", json::array()},
            {"functions", json::array()},
            {"subscriptions", json::array()},
            {"resources", json::array()}};
  // Loggers: the kernel's `loggers` (the group file's section); applied live by the
  // kernel (GreengrassSystem) and function_runtime (Lambda). Checked at their version.
  for (const auto& l : list("loggers", "Loggers")) {
    json out = {{"id", l["Id"]},
                {"component", l["Component"]},
                {"level", l["Level"]},
                {"type", l["Type"]}};
    if (l.contains("Space"))
      out["space_kb"] = l["Space"];
    if (!g.contains("loggers"))
      g["loggers"] = json::array();
    g["loggers"].push_back(std::move(out));
  }
  std::set<std::string> things, functions, resources;
  std::string core_thing;
  for (const auto& c : list("cores", "Cores"))
    core_thing = thing_of(c["ThingArn"]).value_or("");
  const auto& devices = list("devices", "Devices");
  for (size_t i = 0; i < devices.size(); ++i) {
    auto thing = *thing_of(devices[i]["ThingArn"]);
    if (thing == core_thing)
      return v1_field_error{"DeviceDefinitionVersionArn: Devices[" + std::to_string(i)
                              + "].ThingArn",
                            "thing '" + thing + "' is the group's core, not a device"};
    things.insert(thing);
    g["devices"].push_back({{"thing", thing}, {"sync_shadow", devices[i].value("SyncShadow", false)}});
  }
  const auto& res = list("resources", "Resources");
  for (const auto& r : res) {
    resources.insert(r["Id"].get<std::string>());
    g["resources"].push_back(
      {{"id", r["Id"]}, {"config", camel(r["ResourceDataContainer"])}});
  }
  json default_exec = json::object();
  if (auto it = defs.find("functions"); it != defs.end() && it->second.contains("DefaultConfig"))
    default_exec = it->second["DefaultConfig"].value("Execution", json::object());
  const auto& fns = list("functions", "Functions");
  for (size_t i = 0; i < fns.size(); ++i) {
    const auto& f = fns[i];
    auto fname = *function_of(f["FunctionArn"]);
    functions.insert(fname);
    auto c = f.value("FunctionConfiguration", json::object());
    json cfg = {{"runtime", "executable"}, {"handler", c.value("Executable", fname)}};
    if (!v1_.lambda_packages_dir.empty()) {
      // The function's package, in lambdaFunction's layout (lambda.hpp): its runtime,
      // handler and code. None there: the group names the executable alone (function_runtime
      // reports it when it does not run).
      const std::string arn = f["FunctionArn"];
      json pkg = json::object();
      if (read_lambda_package(v1_.lambda_packages_dir, fname, arn.substr(arn.rfind(':') + 1), pkg)
            .empty()) {
        cfg.update(pkg);
        if (c.contains("Executable"))
          cfg["handler"] = c["Executable"];
      }
    }
    if (c.contains("Pinned"))
      cfg["pinned"] = c["Pinned"];
    if (c.contains("Timeout"))
      cfg["timeoutInSeconds"] = c["Timeout"];
    if (c.contains("EncodingType"))
      cfg["inputPayloadEncodingType"] = c["EncodingType"];
    if (c.contains("ExecArgs"))
      cfg["execArgs"] = split_args(c["ExecArgs"]);
    auto env = c.value("Environment", json::object());
    if (env.contains("Variables"))
      cfg["environmentVariables"] = env["Variables"];
    auto exec = env.value("Execution", default_exec);
    json lpp = json::object();
    if (exec.contains("IsolationMode"))
      lpp["isolationMode"] = exec["IsolationMode"];
    json container = json::object();
    if (c.contains("MemorySize"))
      container["memorySizeInKB"] = c["MemorySize"];
    if (env.contains("AccessSysfs"))
      container["mountROSysfs"] = env["AccessSysfs"];
    if (!container.empty())
      lpp["containerParams"] = container;
    if (!lpp.empty())
      cfg["linuxProcessParams"] = lpp;
    if (exec.contains("RunAs")) {
      json run_as = json::object();
      if (exec["RunAs"].contains("Uid"))
        run_as["uid"] = exec["RunAs"]["Uid"];
      if (exec["RunAs"].contains("Gid"))
        run_as["gid"] = exec["RunAs"]["Gid"];
      cfg["runAs"] = run_as;
    }
    auto policies = env.value("ResourceAccessPolicies", json::array());
    if (!policies.empty()) {
      json out = json::array();
      for (size_t k = 0; k < policies.size(); ++k) {
        const auto& rid = policies[k]["ResourceId"].get_ref<const std::string&>();
        if (!resources.count(rid))
          return v1_field_error{"FunctionDefinitionVersionArn: Functions[" + std::to_string(i)
                                  + "].FunctionConfiguration.Environment.ResourceAccessPolicies["
                                  + std::to_string(k) + "].ResourceId",
                                "resource '" + rid + "' is not in the group's resources"};
        out.push_back({{"resourceId", rid}, {"permission", policies[k].value("Permission", "ro")}});
      }
      cfg["resourceAccessPolicies"] = out;
    }
    g["functions"].push_back({{"name", fname}, {"config", cfg}});
  }
  const auto& subs = list("subscriptions", "Subscriptions");
  for (size_t i = 0; i < subs.size(); ++i) {
    const auto& s = subs[i];
    json out = {{"id", s["Id"]}, {"subject", s["Subject"]}};
    for (auto key : {"Source", "Target"}) {
      const auto& ep = s[key].get_ref<const std::string&>();
      std::string grove_ep;
      auto field = "SubscriptionDefinitionVersionArn: Subscriptions[" + std::to_string(i) + "]."
                   + key;
      if (ep == "cloud")
        grove_ep = "cloud";
      else if (ep == "GGShadowService")
        grove_ep = "shadow";
      else if (auto thing = thing_of(ep)) {
        if (!things.count(*thing))
          return v1_field_error{field, "thing '" + *thing + "' is not a device of the group "
                                         "(its device definition version)"};
        grove_ep = "device:" + *thing;
      } else {
        auto fname = *function_of(ep);
        if (!functions.count(fname))
          return v1_field_error{field, "function '" + fname + "' is not in the group's "
                                         "function definition version"};
        grove_ep = "function:" + fname;
      }
      out[key == std::string_view{"Source"} ? "source" : "target"] = grove_ep;
    }
    g["subscriptions"].push_back(std::move(out));
  }
  return g;
}

// ---- deployments -----------------------------------------------------------------------

caf::expected<std::string> keep_v2_components(const std::string& v1_group,
                                              const group::Group& current,
                                              const std::set<std::string>& lambda,
                                              const std::set<std::string>& models,
                                              size_t* dropped) {
  if (dropped)
    *dropped = 0;
  YAML::Node doc;
  YAML::Node now;
  try {
    doc = YAML::Load(v1_group); // JSON is YAML
    now = grove::group_document(current);
  } catch (const std::exception& e) {
    return make_error(errc::invalid_config, std::string{"the group could not be read: "} + e.what());
  }
  std::set<std::string> functions, devices, ids, kept, resources;
  for (const auto& f : doc["functions"])
    functions.insert(f["name"].as<std::string>());
  for (const auto& r : doc["resources"])
    resources.insert(r["id"].as<std::string>());
  for (const auto& d : doc["devices"])
    devices.insert(d["thing"].as<std::string>());
  for (const auto& sub : doc["subscriptions"])
    ids.insert(sub["id"].as<std::string>());
  for (const auto& f : now["functions"]) {
    auto name = f["name"].as<std::string>();
    if (!lambda.count(name))
      continue;
    if (functions.count(name))
      return make_error(errc::invalid_config,
                        "Functions: function '" + name + "' has the name of the Greengrass v2 "
                        "Lambda component " + name + ", whose function the group keeps; rename "
                        "the v1 function, or remove the component with a v2 deployment first");
    doc["functions"].push_back(f);
    kept.insert(name);
  }
  for (const auto& r : now["resources"]) {
    auto id = r["id"].as<std::string>();
    if (!models.count(id))
      continue;
    if (resources.count(id))
      return make_error(errc::invalid_config,
                        "Resources: resource '" + id + "' has the id of the Greengrass v2 "
                        "model component " + id + ", whose model resource the group keeps; "
                        "give the v1 resource another id, or remove the component with a v2 "
                        "deployment first");
    doc["resources"].push_back(r);
  }
  auto names_kept = [&](const std::string& ep) {
    return ep.starts_with("function:") && kept.count(ep.substr(9));
  };
  auto reachable = [&](const std::string& ep) {
    if (ep == "cloud" || ep == "shadow")
      return true;
    if (ep.starts_with("device:"))
      return devices.count(ep.substr(7)) > 0;
    if (ep.starts_with("function:"))
      return functions.count(ep.substr(9)) > 0 || kept.count(ep.substr(9)) > 0;
    return false;
  };
  for (const auto& sub : now["subscriptions"]) {
    auto source = sub["source"].as<std::string>();
    auto target = sub["target"].as<std::string>();
    if (!names_kept(source) && !names_kept(target))
      continue;
    if (!reachable(source) || !reachable(target)) {
      if (dropped)
        ++*dropped;
      continue;
    }
    auto id = sub["id"].as<std::string>();
    if (ids.count(id))
      return make_error(errc::invalid_config,
                        "Subscriptions: id '" + id + "' is also the id of a subscription of the "
                        "group in force naming a Greengrass v2 Lambda component's function ("
                        + source + " -> " + target + "), which the group keeps; use another id");
    doc["subscriptions"].push_back(sub);
    ids.insert(id);
  }
  return grove::to_yaml(doc); // the group in force's quoted strings stay quoted
}

http_response v1_api::create_deployment(const std::string& group_id, const http_request& req,
                                        int64_t now_ms) {
  auto body = body_of(req);
  if (!body)
    return bad_request("the request body is not a JSON object", "InvalidBody");
  if (auto f = shape(*body, "", {"DeploymentId", "DeploymentType", "GroupVersionId"},
                     {"DeploymentType"}))
    return bad_field(*f);
  if (auto f = enum_field(*body, "", "DeploymentType",
                          {"NewDeployment", "Redeployment", "ResetDeployment",
                           "ForceResetDeployment"}))
    return bad_field(*f);
  for (auto key : {"DeploymentId", "GroupVersionId"})
    if (auto f = string_field(*body, "", key, 128))
      return bad_field(*f);
  v1_resource group;
  if (auto err = require_resource(store_, "groups", group_id, &group))
    return *err;
  std::string type = (*body)["DeploymentType"];
  std::string version = body->value("GroupVersionId", "");
  if (type == "ResetDeployment" || type == "ForceResetDeployment") {
    http_request r2 = req;
    r2.body = json{{"Force", type == "ForceResetDeployment"}}.dump();
    return reset_deployments(group_id, r2, now_ms);
  }
  if (type == "Redeployment") {
    if (!body->contains("DeploymentId"))
      return bad_request("DeploymentId: a Redeployment names the deployment to repeat",
                         "InvalidField");
    auto prev = store_.deployment(group_id, (*body)["DeploymentId"]);
    if (!prev)
      return internal(prev.error());
    if (!*prev)
      return bad_request("DeploymentId: deployment '" + (*body)["DeploymentId"].get<std::string>()
                           + "' of group " + group_id + " does not exist",
                         "InvalidField");
    if ((*prev)->version.empty())
      return bad_request("DeploymentId: deployment " + (*prev)->id
                           + " was a reset; deploy a group version instead",
                         "InvalidField");
    if (version.empty())
      version = (*prev)->version;
  } else if (version.empty()) {
    return bad_request("GroupVersionId: a NewDeployment names the group version to deploy",
                       "InvalidField");
  }
  auto v = store_.version("groups", group_id, version);
  if (!v)
    return internal(v.error());
  if (!*v)
    return version_not_found("groups", group_id, version);
  return deploy(group, type, version, now_ms);
}

http_response v1_api::deploy(const v1_resource& group, const std::string& type,
                             const std::string& version, int64_t now_ms) {
  v1_deployment d;
  d.group_id = group.id;
  d.id = new_uuid();
  d.type = type;
  d.version = version;
  d.status = "Building";
  d.created_ms = d.updated_ms = now_ms;
  // Build Grove's group now: what cannot be built (a definition version deleted since
  // the group version was made, another core's group) fails the deployment.
  std::string failure;
  json doc;
  auto name = valid_name(group.name) ? group.name : v1_.default_group_name;
  if (version.empty()) {
    // A reset: the devices of the group deployed last stay; functions, subscriptions and
    // resources go.
    doc = {{"name", name},
           {"devices", json::array()},
           {"functions", json::array()},
           {"subscriptions", json::array()},
           {"resources", json::array()}};
    auto last = store_.deployments(group.id, INT64_MAX, 100);
    if (!last)
      return internal(last.error());
    for (const auto& prev : *last) {
      if (prev.status != "Success")
        continue;
      if (!prev.version.empty()) {
        auto pv = store_.version("groups", group.id, prev.version);
        if (pv && *pv) {
          auto resolved = resolve_group_version(json::parse((*pv)->definition));
          if (auto* defs = std::get_if<std::map<std::string, json>>(&resolved)) {
            auto g = to_grove_group(name, *defs);
            if (auto* gj = std::get_if<json>(&g))
              doc["devices"] = (*gj)["devices"];
          }
        }
      }
      break;
    }
  } else {
    auto v = store_.version("groups", group.id, version);
    if (!v)
      return internal(v.error());
    auto resolved = resolve_group_version(json::parse((*v)->definition));
    if (auto* e = std::get_if<http_response>(&resolved)) {
      auto msg = json::parse(e->body, nullptr, false);
      failure = msg.is_object() ? msg.value("Message", e->body) : e->body;
    } else {
      auto& defs = std::get<std::map<std::string, json>>(resolved);
      auto g = to_grove_group(name, defs);
      if (auto* f = std::get_if<v1_field_error>(&g))
        failure = f->field + ": " + f->message;
      else
        doc = std::get<json>(g);
      if (failure.empty() && !v1_.thing_name.empty()) {
        std::string core;
        if (auto it = defs.find("cores"); it != defs.end())
          for (const auto& c : it->second.value("Cores", json::array()))
            core = thing_of(c["ThingArn"]).value_or("");
        if (core.empty())
          failure = "the group version has no core definition: this core is '" + v1_.thing_name
                    + "'";
        else if (core != v1_.thing_name)
          failure = "the group's core is '" + core + "'; this core is '" + v1_.thing_name + "'";
      }
    }
  }
  v1_applier applier;
  {
    // handle() holds mtx_ for creating operations; applier_ is read under it.
    applier = applier_;
  }
  if (failure.empty() && !applier)
    failure = "this core applies no deployments (no kernel connection)";
  if (!failure.empty()) {
    d.status = "Failure";
    d.error_message = failure;
    d.error_details =
      json::array({{{"DetailedErrorCode", "GG-DEPLOY"}, {"DetailedErrorMessage", failure}}}).dump();
  }
  if (auto err = store_.put_deployment(d))
    return internal(err);
  if (failure.empty())
    applier(v1_apply_job{group.id, d.id, doc.dump()});
  return ok({{"DeploymentArn", resource_arn("groups", group.id) + "/deployments/" + d.id},
             {"DeploymentId", d.id}});
}

http_response v1_api::reset_deployments(const std::string& group_id, const http_request& req,
                                        int64_t now_ms) {
  auto body = body_of(req);
  if (!body)
    return bad_request("the request body is not a JSON object", "InvalidBody");
  if (auto f = shape(*body, "", {"Force"}))
    return bad_field(*f);
  if (auto f = bool_field(*body, "", "Force"))
    return bad_field(*f);
  bool force = body->value("Force", false);
  v1_resource group;
  if (auto err = require_resource(store_, "groups", group_id, &group))
    return *err;
  if (!force) {
    auto last = store_.deployments(group_id, INT64_MAX, 100);
    if (!last)
      return internal(last.error());
    bool deployed = false;
    for (const auto& d : *last)
      if (d.status == "Success") {
        deployed = !d.version.empty();
        break;
      }
    if (!deployed)
      return bad_request("Group " + group_id + " has not been deployed; give Force to reset "
                           "it anyway",
                         "GroupNotDeployed");
  }
  return deploy(group, force ? "ForceResetDeployment" : "ResetDeployment", "", now_ms);
}

http_response v1_api::deployment_status(const std::string& group_id, const std::string& id) {
  if (auto err = require_resource(store_, "groups", group_id))
    return *err;
  auto d = store_.deployment(group_id, id);
  if (!d)
    return internal(d.error());
  if (!*d)
    return v1_error(404, "IdNotFoundException",
                    "That deployment does not exist: '" + id.substr(0, 128) + "'");
  json out = {{"DeploymentStatus", (*d)->status},
              {"DeploymentType", (*d)->type},
              {"UpdatedAt", iso8601_ms((*d)->updated_ms)}};
  if (!(*d)->error_message.empty()) {
    out["ErrorMessage"] = (*d)->error_message;
    out["ErrorDetails"] = json::parse((*d)->error_details);
  }
  return ok(out);
}

http_response v1_api::list_deployments(const std::string& group_id, const http_request& req) {
  size_t limit;
  int64_t after;
  if (auto err = page(req, limit, after))
    return *err;
  if (auto err = require_resource(store_, "groups", group_id))
    return *err;
  // Newest first; NextToken is the last one given.
  auto rows = store_.deployments(group_id, after < 0 ? INT64_MAX : after, limit + 1);
  if (!rows)
    return internal(rows.error());
  bool more = rows->size() > limit;
  if (more)
    rows->resize(limit);
  json items = json::array();
  for (const auto& d : *rows)
    items.push_back({{"CreatedAt", iso8601_ms(d.created_ms)},
                     {"DeploymentArn", resource_arn("groups", group_id) + "/deployments/" + d.id},
                     {"DeploymentId", d.id},
                     {"DeploymentType", d.type},
                     {"GroupArn", version_arn("groups", group_id, d.version)}});
  json out = {{"Deployments", std::move(items)}};
  if (more)
    out["NextToken"] = next_token(rows->back().seq);
  return ok(out);
}

void v1_api::in_progress(const std::string& group_id, const std::string& deployment_id,
                         int64_t now_ms) {
  (void) store_.set_deployment_status(group_id, deployment_id, "InProgress", "", "[]", now_ms);
}

caf::error v1_api::applied(const std::string& group_id, const std::string& deployment_id,
                           const std::string& error, int64_t now_ms) {
  // A bulk deployment waits for its records' deployments to settle.
  struct wake {
    v1_api* self;
    ~wake() {
      std::lock_guard guard{self->settled_mtx_};
      self->settled_cv_.notify_all();
    }
  } w{this};
  if (error.empty()) {
    (void) store_.set_deployment_status(group_id, deployment_id, "Success", "", "[]", now_ms);
    // The deployed group's CAs are the ones the broker trusts now.
    return refresh_trust();
  }
  auto details =
    json::array({{{"DetailedErrorCode", "GG-KERNEL"}, {"DetailedErrorMessage", error}}});
  (void) store_.set_deployment_status(group_id, deployment_id, "Failure", error,
                                      details.dump(-1, ' ', false,
                                                   json::error_handler_t::replace),
                                      now_ms);
  return {};
}

// ---- group CAs ---------------------------------------------------------------------------

std::string v1_api::ca_arn(const std::string& group_id, const std::string& ca_id) const {
  return resource_arn("groups", group_id) + "/certificateauthorities/" + ca_id;
}

http_response v1_api::create_ca(const std::string& group_id, int64_t now_ms) {
  if (auto err = require_resource(store_, "groups", group_id))
    return *err;
  if (v1_.group_ca_dir.empty())
    return v1_error(500, "InternalServerErrorException",
                    "this core keeps no group CAs (the plugin has no group_ca_dir)");
  auto ca = make_group_ca(group_id, now_ms, v1_.ca_validity_ms);
  if (!ca)
    return v1_error(500, "InternalServerErrorException", caf::to_string(ca.error()));
  // The key is on disk (fsync'd) before the record: a kill -9 in between leaves an
  // unused key file, never a CA without its key.
  auto dir = v1_.group_ca_dir / group_id / ca->id;
  std::error_code made;
  std::filesystem::create_directories(dir, made);
  if (!made)
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, made);
  if (made)
    return v1_error(500, "InternalServerErrorException",
                    "cannot make " + dir.string() + ": " + made.message());
  if (auto err = write_file_atomically(dir / "ca.key", ca->private_key, {.mode = 0600}))
    return v1_error(500, "InternalServerErrorException", caf::to_string(err));
  if (auto err = write_file_atomically(dir / "ca.crt", ca->certificate, {.mode = 0644}))
    return v1_error(500, "InternalServerErrorException", caf::to_string(err));
  if (auto err = write_file_atomically(dir / "ca.crl", ca->crl, {.mode = 0644}))
    return v1_error(500, "InternalServerErrorException", caf::to_string(err));
  if (auto err = store_.put_ca({group_id, ca->id, ca->certificate, now_ms, ca->not_after_ms, 0})) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec); // no record: no key kept
    if (err == errc::conflict)
      return id_not_found("groups", group_id);
    return internal(err);
  }
  if (auto err = refresh_trust())
    return v1_error(500, "InternalServerErrorException",
                    "the CA is stored but the trust directory could not be written: "
                      + caf::to_string(err));
  return ok({{"GroupCertificateAuthorityArn", ca_arn(group_id, ca->id)}});
}

http_response v1_api::get_ca(const std::string& group_id, const std::string& ca_id) {
  if (auto err = require_resource(store_, "groups", group_id))
    return *err;
  auto cas = store_.cas(group_id);
  if (!cas)
    return internal(cas.error());
  for (const auto& ca : *cas)
    if (ca.id == ca_id)
      return ok({{"GroupCertificateAuthorityArn", ca_arn(group_id, ca.id)},
                 {"GroupCertificateAuthorityId", ca.id},
                 {"PemEncodedCertificate", ca.certificate}});
  return v1_error(404, "IdNotFoundException",
                  "That group certificate authority does not exist: '" + ca_id.substr(0, 128)
                    + "' (group " + group_id + ")");
}

http_response v1_api::list_cas(const std::string& group_id) {
  if (auto err = require_resource(store_, "groups", group_id))
    return *err;
  auto cas = store_.cas(group_id);
  if (!cas)
    return internal(cas.error());
  json items = json::array();
  for (const auto& ca : *cas)
    items.push_back({{"GroupCertificateAuthorityArn", ca_arn(group_id, ca.id)},
                     {"GroupCertificateAuthorityId", ca.id}});
  return ok({{"GroupCertificateAuthorities", std::move(items)}});
}

http_response v1_api::cert_config(const std::string& group_id, const http_request* update) {
  std::optional<int64_t> set;
  if (update) {
    auto body = body_of(*update);
    if (!body)
      return bad_request("the request body is not a JSON object", "InvalidBody");
    if (auto f = shape(*body, "", {"CertificateExpiryInMilliseconds"},
                       {"CertificateExpiryInMilliseconds"}))
      return bad_field(*f);
    const auto& v = (*body)["CertificateExpiryInMilliseconds"];
    // The model's type is a string; a JSON number is taken too.
    std::string text = v.is_string() ? v.get<std::string>()
                       : v.is_number_unsigned() ? std::to_string(v.get<uint64_t>())
                                                : std::string{};
    auto range = "must be a number of milliseconds from " + std::to_string(cert_expiry_min_ms)
                 + " (7 days) to " + std::to_string(cert_expiry_max_ms) + " (30 days)";
    if (text.empty() || text.size() > 12
        || !std::all_of(text.begin(), text.end(), ::isdigit))
      return bad_field({"CertificateExpiryInMilliseconds", range});
    auto ms = std::stoll(text);
    if (ms < cert_expiry_min_ms || ms > cert_expiry_max_ms)
      return bad_field({"CertificateExpiryInMilliseconds", range + ", got " + text});
    set = ms;
  }
  if (auto err = require_resource(store_, "groups", group_id))
    return *err;
  if (set)
    if (auto err = store_.set_cert_expiry(group_id, *set))
      return internal(err);
  auto expiry = store_.cert_expiry(group_id);
  if (!expiry)
    return internal(expiry.error());
  auto cas = store_.cas(group_id);
  if (!cas)
    return internal(cas.error());
  json out = {{"CertificateExpiryInMilliseconds",
               std::to_string(expiry->value_or(cert_expiry_min_ms))},
              {"GroupId", group_id}};
  if (!cas->empty()) // the active (newest) CA's notAfter, ms since the epoch, as AWS's
    out["CertificateAuthorityExpiryInMilliseconds"] = std::to_string(cas->back().not_after_ms);
  return ok(out);
}

caf::expected<std::vector<std::string>> v1_api::trusted_cas() {
  auto deployed = last_deployed_group(store_);
  if (!deployed)
    return std::move(deployed.error());
  std::vector<std::string> pems;
  if (deployed->empty())
    return pems;
  auto cas = store_.cas(*deployed);
  if (!cas)
    return std::move(cas.error());
  for (const auto& ca : *cas)
    pems.push_back(ca.certificate);
  return pems;
}

caf::expected<std::string> v1_api::ca_crl(const std::string& group_id,
                                          const std::string& ca_id,
                                          const std::string& certificate) {
  // A CA made before CRLs were written has none yet: sign it now from the key.
  auto dir = v1_.group_ca_dir / group_id / ca_id;
  auto read = [](const std::filesystem::path& file) -> std::optional<std::string> {
    std::ifstream in{file, std::ios::binary};
    if (!in)
      return std::nullopt;
    std::stringstream buf;
    buf << in.rdbuf();
    return buf.str();
  };
  if (auto crl = read(dir / "ca.crl"); crl && !crl->empty())
    return std::move(*crl);
  auto key = read(dir / "ca.key");
  if (!key)
    return make_error(errc::system_error, "group CA " + group_id + "/" + ca_id
                                            + ": no CRL and no key to sign one");
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
               .count();
  auto crl = make_group_crl(certificate, *key, now);
  if (!crl)
    return crl;
  if (auto err = write_file_atomically(dir / "ca.crl", *crl, {.mode = 0644}))
    return err;
  return crl;
}

caf::error v1_api::sweep_ca_dirs() {
  if (v1_.group_ca_dir.empty())
    return {};
  auto kept = store_.ca_dirs();
  if (!kept)
    return std::move(kept.error());
  // Key directories without a record: a kill -9 between the key and the record, or a
  // group deleted while its CA was being made.
  std::error_code ec;
  for (const auto& g : std::filesystem::directory_iterator(v1_.group_ca_dir, ec)) {
    auto group = g.path().filename().string();
    if (group == "trust" || !g.is_directory(ec) || g.is_symlink(ec))
      continue;
    std::error_code ec2;
    for (const auto& c : std::filesystem::directory_iterator(g.path(), ec2))
      if (!kept->count(group + "/" + c.path().filename().string()))
        std::filesystem::remove_all(c.path(), ec2);
    if (std::filesystem::is_empty(g.path(), ec2))
      std::filesystem::remove(g.path(), ec2);
  }
  return {};
}

caf::error v1_api::refresh_trust() {
  if (v1_.group_ca_dir.empty())
    return {};
  std::lock_guard guard{trust_mtx_};
  auto deployed = last_deployed_group(store_);
  if (!deployed)
    return std::move(deployed.error());
  std::vector<trust_entry> pems;
  std::string active;
  if (!deployed->empty()) {
    auto cas = store_.cas(*deployed);
    if (!cas)
      return std::move(cas.error());
    for (const auto& ca : *cas) {
      auto crl = ca_crl(*deployed, ca.id, ca.certificate);
      if (!crl)
        return std::move(crl.error());
      pems.push_back({ca.certificate, std::move(*crl)});
    }
    if (!cas->empty())
      active = *deployed + "/" + cas->back().id;
  }
  if (auto err = write_trust_dir(v1_.group_ca_dir / "trust", pems))
    return err;
  return write_file_atomically(v1_.group_ca_dir / "active", active.empty() ? "" : active + "\n",
                               {.mode = 0644});
}

// ---- role associations ----------------------------------------------------------------

std::string v1_api::role_arn_problem(const std::string& arn, const std::string& account) {
  if (arn.empty() || arn.size() > 2048)
    return "1 to 2048 characters";
  auto f = arn_fields_of(arn);
  if (!f || f->partition != "aws" || f->service != "iam" || !f->region.empty()
      || f->resource.rfind("role/", 0) != 0)
    return "'" + arn.substr(0, 256) + "' is not an IAM role ARN "
           "(arn:aws:iam::<account>:role/[<path>/]<name>)";
  if (f->account != account)
    return "the role is in account '" + f->account.substr(0, 32) + "'; this core's account is '"
           + account + "'";
  // The path and the name: [\w+=,.@-], the name 1-64 characters.
  auto rest = std::string_view{f->resource}.substr(5);
  auto slash = rest.rfind('/');
  auto name = slash == std::string_view::npos ? rest : rest.substr(slash + 1);
  auto role_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string_view{"+=,.@_-/"}.find(c)
                                                            != std::string_view::npos;
  };
  if (name.empty() || name.size() > 64 || !std::all_of(rest.begin(), rest.end(), role_char))
    return "the role name must be 1 to 64 of [A-Za-z0-9+=,.@_-] after an optional /path/";
  return {};
}

http_response v1_api::associate_role(const std::string& scope, const http_request& req,
                                     int64_t now_ms) {
  auto body = body_of(req);
  if (!body)
    return bad_request("the request body is not a JSON object", "InvalidBody");
  if (auto f = shape(*body, "", {"RoleArn"}, {"RoleArn"}))
    return bad_field(*f);
  if (!(*body)["RoleArn"].is_string())
    return bad_field({"RoleArn", "must be a string"});
  std::string arn = (*body)["RoleArn"];
  if (auto why = role_arn_problem(arn, account_); !why.empty())
    return bad_field({"RoleArn", why});
  if (scope.starts_with("group:")) {
    if (auto err = require_resource(store_, "groups", scope.substr(6)))
      return *err;
  }
  if (auto err = store_.put_role(scope, v1_role{arn, now_ms}))
    return internal(err);
  return ok({{"AssociatedAt", iso8601_ms(now_ms)}});
}

http_response v1_api::get_role(const std::string& scope) {
  bool group = scope.starts_with("group:");
  if (group) {
    if (auto err = require_resource(store_, "groups", scope.substr(6)))
      return *err;
  }
  auto r = store_.role(scope);
  if (!r)
    return internal(r.error());
  if (!*r)
    return v1_error(404, "IdNotFoundException",
                    group ? "No role is associated with group '" + scope.substr(6) + "'"
                          : "No service role is associated with account '" + account_ + "'");
  // The service role's answer is the model's GetServiceRoleForAccountResponse; the same
  // two fields as GetAssociatedRole's.
  return ok({{"AssociatedAt", iso8601_ms((*r)->associated_ms)}, {"RoleArn", (*r)->role_arn}});
}

http_response v1_api::disassociate_role(const std::string& scope, int64_t now_ms) {
  if (scope.starts_with("group:")) {
    if (auto err = require_resource(store_, "groups", scope.substr(6)))
      return *err;
  }
  // Idempotent, as AWS's: no role is the state asked for.
  auto gone = store_.erase_role(scope);
  if (!gone)
    return internal(gone.error());
  return ok({{"DisassociatedAt", iso8601_ms(now_ms)}});
}

// ---- bulk deployments -----------------------------------------------------------------

void v1_api::set_bulk_starter(v1_bulk_starter starter) {
  std::lock_guard guard{mtx_};
  bulk_starter_ = std::move(starter);
}

void v1_api::shutdown() {
  shut_ = true;
  std::lock_guard guard{settled_mtx_};
  settled_cv_.notify_all();
}

std::string v1_api::bulk_arn(const std::string& id) const {
  return "arn:aws:greengrass:" + region_ + ":" + account_ + ":/greengrass/bulk/deployments/" + id;
}

http_response v1_api::start_bulk(const http_request& req, int64_t now_ms) {
  auto body = body_of(req);
  if (!body)
    return bad_request("the request body is not a JSON object", "InvalidBody");
  if (auto f = shape(*body, "", {"InputFileUri", "ExecutionRoleArn", "tags"},
                     {"InputFileUri", "ExecutionRoleArn"}))
    return bad_field(*f);
  for (auto key : {"InputFileUri", "ExecutionRoleArn"})
    if (auto f = string_field(*body, "", key, 2048))
      return bad_field(*f);
  std::string uri = (*body)["InputFileUri"];
  // Fetched as an artifact is (artifacts.hpp): s3:// from the mirror, https://, file://
  // only inside artifacts_file_dir; the fetch names any other refusal.
  if (!uri.starts_with("s3://") && !uri.starts_with("https://") && !uri.starts_with("file://"))
    return bad_field({"InputFileUri", "'" + uri.substr(0, 256)
                                        + "' is not an s3://, https:// or file:// URI"});
  std::string role = (*body)["ExecutionRoleArn"];
  if (auto why = role_arn_problem(role, account_); !why.empty())
    return bad_field({"ExecutionRoleArn", why});
  v1_bulk b;
  if (body->contains("tags")) {
    if (auto p = tag_map_problem((*body)["tags"]); !p.empty())
      return bad_request("tags: " + p, "InvalidTags");
    b.tags = (*body)["tags"].dump();
  }
  b.id = new_uuid();
  b.status = "Initializing";
  b.input_uri = uri;
  b.role_arn = role;
  b.created_ms = b.updated_ms = now_ms;
  // handle() holds mtx_ for creating operations; bulk_starter_ is read under it.
  auto starter = bulk_starter_;
  if (!starter) {
    b.status = "Failed";
    b.error_message = "this core runs no bulk deployments (no artifact fetcher)";
    b.error_details = json::array({{{"DetailedErrorCode", "GG-BULK"},
                                    {"DetailedErrorMessage", b.error_message}}})
                        .dump();
  }
  auto running = store_.put_bulk(b);
  if (!running)
    return internal(running.error());
  if (*running)
    return bad_request("bulk deployment " + **running
                         + " has not ended: stop it or wait (one bulk deployment at a time)",
                       "BulkDeploymentInProgress");
  if (starter)
    starter(b.id, uri);
  return ok({{"BulkDeploymentArn", bulk_arn(b.id)}, {"BulkDeploymentId", b.id}});
}

namespace {

http_response bulk_not_found(const std::string& id) {
  return v1_error(404, "IdNotFoundException",
                  "That bulk deployment does not exist: '" + id.substr(0, 128) + "'");
}

} // namespace

http_response v1_api::bulk_status(const std::string& id) {
  auto b = store_.bulk(id);
  if (!b)
    return internal(b.error());
  if (!*b)
    return bulk_not_found(id);
  json out = {{"BulkDeploymentMetrics",
               {{"InvalidInputRecords", (*b)->invalid},
                {"RecordsProcessed", (*b)->processed},
                {"RetryAttempts", 0}}},
              {"BulkDeploymentStatus", (*b)->status},
              {"CreatedAt", iso8601_ms((*b)->created_ms)},
              {"tags", json::parse((*b)->tags, nullptr, false)}};
  if (!(*b)->error_message.empty()) {
    out["ErrorMessage"] = (*b)->error_message;
    out["ErrorDetails"] = json::parse((*b)->error_details, nullptr, false);
  }
  return ok(out);
}

http_response v1_api::list_bulks(const http_request& req) {
  size_t limit;
  int64_t after;
  if (auto err = page(req, limit, after))
    return *err;
  auto rows = store_.bulks(after < 0 ? INT64_MAX : after, limit + 1);
  if (!rows)
    return internal(rows.error());
  bool more = rows->size() > limit;
  if (more)
    rows->resize(limit);
  json items = json::array();
  for (const auto& b : *rows)
    items.push_back({{"BulkDeploymentArn", bulk_arn(b.id)},
                     {"BulkDeploymentId", b.id},
                     {"CreatedAt", iso8601_ms(b.created_ms)}});
  json out = {{"BulkDeployments", std::move(items)}};
  if (more)
    out["NextToken"] = next_token(rows->back().seq);
  return ok(out);
}

http_response v1_api::bulk_reports(const std::string& id, const http_request& req) {
  size_t limit;
  int64_t after;
  if (auto err = page(req, limit, after))
    return *err;
  auto b = store_.bulk(id);
  if (!b)
    return internal(b.error());
  if (!*b)
    return bulk_not_found(id);
  auto rows = store_.bulk_records(id, after, limit + 1);
  if (!rows)
    return internal(rows.error());
  bool more = rows->size() > limit;
  if (more)
    rows->resize(limit);
  json items = json::array();
  for (const auto& r : *rows) {
    json item = {{"CreatedAt", iso8601_ms(r.created_ms)},
                 {"DeploymentStatus", r.status},
                 {"DeploymentType", r.type}};
    if (!r.deployment_id.empty()) {
      item["DeploymentId"] = r.deployment_id;
      item["DeploymentArn"] = resource_arn("groups", r.group_id) + "/deployments/"
                              + r.deployment_id;
    }
    if (!r.group_id.empty())
      item["GroupArn"] = r.group_version_id.empty()
                           ? resource_arn("groups", r.group_id)
                           : version_arn("groups", r.group_id, r.group_version_id);
    if (!r.error_message.empty()) {
      item["ErrorMessage"] = r.error_message;
      item["ErrorDetails"] = json::parse(r.error_details, nullptr, false);
    }
    items.push_back(std::move(item));
  }
  json out = {{"Deployments", std::move(items)}};
  if (more)
    out["NextToken"] = next_token(rows->back().seq);
  return ok(out);
}

http_response v1_api::stop_bulk(const std::string& id, int64_t now_ms) {
  auto b = store_.bulk(id);
  if (!b)
    return internal(b.error());
  if (!*b)
    return bulk_not_found(id);
  auto set = store_.set_bulk_status(id, {"Initializing", "Running"}, "Stopping", "", "[]", now_ms);
  if (!set)
    return internal(set.error());
  if (!*set) {
    auto now = store_.bulk(id);
    auto status = now && *now ? (*now)->status : (*b)->status;
    if (status == "Stopping")
      return ok(json::object()); // asked twice: the same state
    return bad_request("bulk deployment " + id + " is " + status
                         + ": only an Initializing or Running one can be stopped",
                       "BulkDeploymentNotRunning");
  }
  std::lock_guard guard{settled_mtx_};
  settled_cv_.notify_all();
  return ok(json::object());
}

void v1_api::run_record(const std::string& bulk_id, const bulk_record& rec,
                        std::chrono::milliseconds settle_timeout) {
  auto now = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
  };
  v1_bulk_record out;
  out.bulk_id = bulk_id;
  out.line = static_cast<int64_t>(rec.line);
  out.group_id = rec.group_id;
  out.group_version_id = rec.group_version_id;
  out.type = rec.deployment_type.empty() ? "NewDeployment" : rec.deployment_type;
  out.created_ms = now();
  auto failed = [&](const std::string& code, const std::string& message) {
    out.status = "Failure";
    out.error_message = message;
    out.error_details = json::array({{{"DetailedErrorCode", code},
                                      {"DetailedErrorMessage", message}}})
                          .dump(-1, ' ', false, json::error_handler_t::replace);
    (void) store_.add_bulk_record(out, true);
  };
  if (!rec.error.empty()) {
    failed("InvalidInputRecord", rec.error);
    return;
  }
  // CreateDeployment's own path (its checks, its deployment), as a client would call it.
  http_request req;
  req.method = "POST";
  req.body = json{{"DeploymentType", out.type}, {"GroupVersionId", rec.group_version_id}}.dump();
  http_response r;
  {
    std::lock_guard guard{mtx_};
    r = create_deployment(rec.group_id, req, out.created_ms);
  }
  auto answer = json::parse(r.body, nullptr, false);
  if (r.status != 200 || !answer.is_object() || !answer.contains("DeploymentId")) {
    auto message = answer.is_object() ? answer.value("Message", r.body) : r.body;
    std::string code = "InvalidInputRecord";
    for (const auto& [k, v] : r.headers)
      if (k == "x-amzn-ErrorType")
        code = v;
    failed(code, "line " + std::to_string(rec.line) + ": " + message);
    return;
  }
  out.deployment_id = answer["DeploymentId"];
  out.status = "Building";
  (void) store_.add_bulk_record(out, false);
  // One deployment at a time: the next record's group is applied after this one's, so
  // the last successful record's group is the one in force.
  auto deadline = std::chrono::steady_clock::now() + settle_timeout;
  std::unique_lock lock{settled_mtx_};
  for (;;) {
    auto d = store_.deployment(rec.group_id, out.deployment_id);
    if (!d || !*d || (*d)->status == "Success" || (*d)->status == "Failure" || shut_)
      return;
    auto b = store_.bulk(bulk_id);
    if (!b || !*b || (*b)->status == "Stopping")
      return; // in flight: it settles on its own; no more records
    if (settled_cv_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now()
                                                          + std::chrono::milliseconds{500}))
          == std::cv_status::timeout
        && std::chrono::steady_clock::now() >= deadline)
      return;
  }
}

void v1_api::run_bulk(const std::string& id, const caf::expected<std::string>& text,
                      std::chrono::milliseconds settle_timeout) {
  auto now = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
  };
  auto fail = [&](const std::string& message) {
    auto details = json::array({{{"DetailedErrorCode", "GG-BULK-INPUT"},
                                 {"DetailedErrorMessage", message}}});
    (void) store_.set_bulk_status(id, {"Initializing", "Running"}, "Failed", message,
                                  details.dump(-1, ' ', false, json::error_handler_t::replace),
                                  now());
    (void) store_.set_bulk_status(id, {"Stopping"}, "Stopped", "", "[]", now());
  };
  if (!text) {
    fail("InputFileUri: the input file could not be read: " + caf::to_string(text.error()));
    return;
  }
  std::string file_error;
  auto records = parse_bulk_input(*text, file_error);
  if (!file_error.empty()) {
    fail("InputFileUri: " + file_error);
    return;
  }
  auto running = store_.set_bulk_status(id, {"Initializing"}, "Running", "", "[]", now());
  if (!running || !*running) {
    (void) store_.set_bulk_status(id, {"Stopping"}, "Stopped", "", "[]", now());
    return;
  }
  for (const auto& rec : records) {
    if (shut_)
      return; // left Running: the next start marks it Failed (interrupted)
    auto b = store_.bulk(id);
    if (!b || !*b)
      return;
    if ((*b)->status == "Stopping") {
      (void) store_.set_bulk_status(id, {"Stopping"}, "Stopped", "", "[]", now());
      return;
    }
    run_record(id, rec, settle_timeout);
  }
  if (shut_)
    return;
  auto done = store_.set_bulk_status(id, {"Running"}, "Completed", "", "[]", now());
  if (!done || !*done) // a stop asked after the last record
    (void) store_.set_bulk_status(id, {"Stopping"}, "Stopped", "", "[]", now());
}

// ---- tags ------------------------------------------------------------------------------

http_response v1_api::tags(const std::string& op, const std::string& arn, const http_request& req) {
  auto a = parse_v1_arn(arn);
  if (!a || !a->version.empty())
    return bad_request("'" + arn.substr(0, 256) + "' is not a taggable Greengrass ARN (a group "
                       "or a definition)",
                       "InvalidResourceArn");
  std::optional<v1_resource> res;
  if (a->region == region_ && a->account == account_) {
    auto got = store_.get(a->kind, a->id);
    if (!got)
      return internal(got.error());
    res = std::move(*got);
  }
  if (!res)
    return id_not_found(a->kind, a->id);
  if (op == "ListTagsForResource")
    return ok({{"tags", json::parse(res->tags)}});
  std::lock_guard guard{mtx_};
  auto tags = json::parse(res->tags);
  if (op == "TagResource") {
    auto body = body_of(req);
    if (!body)
      return bad_request("the request body is not a JSON object", "InvalidBody");
    auto add = body->value("tags", json::object());
    if (!add.is_object() || add.empty())
      return bad_request("tags: give at least one tag", "InvalidTags");
    if (auto p = tag_map_problem(add); !p.empty())
      return bad_request("tags: " + p, "InvalidTags");
    for (auto it = add.begin(); it != add.end(); ++it)
      tags[it.key()] = *it;
    if (auto p = tag_map_problem(tags); !p.empty())
      return bad_request("tags: " + p, "InvalidTags");
  } else {
    size_t n = 0;
    for (auto& [k, v] : parse_query(req.raw_query()))
      if (k == "tagKeys") {
        tags.erase(v);
        ++n;
      }
    if (n == 0)
      return bad_request("tagKeys: name at least one tag key", "InvalidTags");
  }
  auto set = store_.set_tags(a->kind, a->id, tags.dump());
  if (!set)
    return internal(set.error());
  if (!*set)
    return id_not_found(a->kind, a->id);
  http_response r;
  r.status = 204;
  return r;
}

} // namespace grove::deployment
