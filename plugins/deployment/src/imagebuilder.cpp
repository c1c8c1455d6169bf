#include "imagebuilder.hpp"

#include <algorithm>
#include <cctype>
#include <optional>
#include <variant>

#include "api.hpp"
#include "artifact_uri.hpp"
#include "imagebuilder_document.hpp"
#include "imagebuilder_store.hpp"

namespace grove::deployment {

using nlohmann::json;

namespace {

constexpr int64_t max_version_node = (int64_t{1} << 30) - 1;
constexpr size_t max_data_chars = 16000;

http_response ib_error(int status, const std::string& type, const std::string& message) {
  return aws_error(status, type, message);
}

http_response bad_value(const std::string& message) {
  return ib_error(400, "InvalidParameterValueException", message);
}

http_response bad_request(const std::string& message) {
  return ib_error(400, "InvalidRequestException", message);
}

http_response service_error(const caf::error& err) {
  return ib_error(500, "ServiceException",
                  "the component store failed: " + caf::to_string(err));
}

http_response answer(const json& body) {
  http_response r;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

// Characters (UTF-8 code points) of `s`.
size_t chars_of(const std::string& s) {
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xc0) != 0x80;
  }));
}

// `major.minor.patch`, each node 0..2^30-1, written without leading zeros; nullopt when
// it is not one.
std::optional<std::string> semantic_version(const std::string& v, std::string& why) {
  int64_t nodes[3] = {0, 0, 0};
  size_t i = 0;
  size_t digits = 0;
  for (char c : v) {
    if (c == '.') {
      if (digits == 0 || ++i == 3) {
        why = "must be major.minor.patch (^[0-9]+\\.[0-9]+\\.[0-9]+$)";
        return std::nullopt;
      }
      digits = 0;
    } else if (c >= '0' && c <= '9') {
      if (++digits > 10 || (nodes[i] = nodes[i] * 10 + (c - '0')) > max_version_node) {
        why = "each node must be at most 2^30-1 (1073741823)";
        return std::nullopt;
      }
    } else {
      why = "must be major.minor.patch (^[0-9]+\\.[0-9]+\\.[0-9]+$)";
      return std::nullopt;
    }
  }
  if (i != 2 || digits == 0) {
    why = "must be major.minor.patch (^[0-9]+\\.[0-9]+\\.[0-9]+$)";
    return std::nullopt;
  }
  return std::to_string(nodes[0]) + "." + std::to_string(nodes[1]) + "." + std::to_string(nodes[2]);
}

// A parsed component ARN: the name in ARNs, the version, the build (0 when absent).
struct parsed_arn {
  std::string arn_name;
  std::string version;
  int64_t build = 0;
  bool elsewhere = false; // another region or account
};

std::optional<parsed_arn> parse_component_arn(const std::string& arn, const std::string& region,
                                              const std::string& account) {
  // arn:<partition>:imagebuilder:<region>:<account>:component/<name>/<x.y.z>[/<build>]
  auto f = arn_fields_of(arn);
  if (!f || !f->partition.starts_with("aws") || f->service != "imagebuilder"
      || !f->resource.starts_with("component/"))
    return std::nullopt;
  const auto& resource = f->resource;
  std::vector<std::string> segs;
  size_t at = std::string_view{"component/"}.size();
  while (at <= resource.size()) {
    auto slash = resource.find('/', at);
    segs.push_back(resource.substr(at, slash == std::string::npos ? std::string::npos : slash - at));
    if (slash == std::string::npos)
      break;
    at = slash + 1;
  }
  if (segs.size() < 2 || segs.size() > 3 || segs[0].empty() || segs[0].size() > 128
      || !std::all_of(segs[0].begin(), segs[0].end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
         }))
    return std::nullopt;
  parsed_arn out;
  out.arn_name = segs[0];
  std::string why;
  auto v = semantic_version(segs[1], why);
  if (!v || *v != segs[1])
    return std::nullopt;
  out.version = *v;
  if (segs.size() == 3) {
    const auto& b = segs[2];
    if (b.empty() || b.size() > 9 || b[0] == '0'
        || !std::all_of(b.begin(), b.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return std::nullopt;
    out.build = std::stoll(b);
  }
  out.elsewhere = f->region != region || f->account != account;
  return out;
}

// A string member of `body` of 1..max characters, when present; "" with no problem when
// absent.
bool optional_text(const json& body, const char* key, size_t max, std::string& problem) {
  if (!body.contains(key) || body[key].is_null())
    return true;
  if (!body[key].is_string() || body[key].get_ref<const std::string&>().empty()
      || chars_of(body[key].get_ref<const std::string&>()) > max) {
    problem = std::string{key} + ": must be a string of 1 to " + std::to_string(max) + " characters";
    return false;
  }
  return true;
}

} // namespace

std::string imagebuilder_arn_name(std::string_view name) {
  std::string out;
  for (char c : name)
    out.push_back(c == ' ' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return out;
}

imagebuilder_api::imagebuilder_api(imagebuilder_settings settings, component_store& store)
  : settings_(std::move(settings)), store_(store) {
  // Nothing.
}

std::string imagebuilder_api::operation(const std::string& method,
                                        const std::vector<std::string>& segs) {
  if (segs.size() != 1)
    return {};
  const auto& s = segs[0];
  if (method == "PUT" && s == "CreateComponent")
    return "imagebuilder:CreateComponent";
  if (method == "GET" && s == "GetComponent")
    return "imagebuilder:GetComponent";
  if (method == "POST" && s == "ListComponents")
    return "imagebuilder:ListComponents";
  if (method == "DELETE" && s == "DeleteComponent")
    return "imagebuilder:DeleteComponent";
  return {};
}

std::string imagebuilder_api::build_arn(const std::string& arn_name, const std::string& version,
                                        int64_t build) const {
  auto arn = "arn:aws:imagebuilder:" + settings_.region + ":" + settings_.account_id
             + ":component/" + arn_name + "/" + version;
  if (build > 0)
    arn += "/" + std::to_string(build);
  return arn;
}

http_response imagebuilder_api::handle(const std::string& op, const http_request& req,
                                       int64_t now_ms) {
  if (op == "imagebuilder:CreateComponent")
    return create_component(req, now_ms);
  if (op == "imagebuilder:GetComponent")
    return get_component(req);
  if (op == "imagebuilder:ListComponents")
    return list_components(req);
  return delete_component(req);
}

http_response imagebuilder_api::create_component(const http_request& req, int64_t now_ms) {
  auto body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return bad_request("the request body is not a JSON object");
  static const char* known[] = {"name",    "semanticVersion", "description", "changeDescription",
                                "platform", "supportedOsVersions", "data",   "uri",
                                "kmsKeyId", "tags",            "clientToken", "dryRun"};
  for (auto it = body.begin(); it != body.end(); ++it)
    if (std::find_if(std::begin(known), std::end(known),
                     [&](const char* k) { return it.key() == k; })
        == std::end(known))
      return ib_error(400, "InvalidParameterException",
                      "unknown parameter '" + it.key().substr(0, 64) + "'");
  auto has = [&](const char* k) { return body.contains(k) && !body[k].is_null(); };
  // clientToken (botocore makes one up when the caller gives none).
  if (!has("clientToken") || !body["clientToken"].is_string()
      || body["clientToken"].get_ref<const std::string&>().empty()
      || body["clientToken"].get_ref<const std::string&>().size() > 64)
    return bad_request("clientToken is required: a string of 1 to 64 characters");
  auto token = body["clientToken"].get<std::string>();
  if (!has("name") || !body["name"].is_string()
      || !valid_imagebuilder_name(body["name"].get_ref<const std::string&>()))
    return bad_value("name: must match ^[-_A-Za-z-0-9][-_A-Za-z0-9 ]{1,126}[-_A-Za-z-0-9]$"
                     + (has("name") && body["name"].is_string()
                          ? ", got '" + body["name"].get<std::string>().substr(0, 130) + "'"
                          : std::string{}));
  auto name = body["name"].get<std::string>();
  if (!has("semanticVersion") || !body["semanticVersion"].is_string())
    return ib_error(400, "InvalidVersionNumberException",
                    "semanticVersion is required: major.minor.patch");
  std::string why;
  auto version = semantic_version(body["semanticVersion"].get<std::string>(), why);
  if (!version)
    return ib_error(400, "InvalidVersionNumberException",
                    "semanticVersion '" + body["semanticVersion"].get<std::string>().substr(0, 64)
                      + "': " + why);
  if (!has("platform") || !body["platform"].is_string()
      || (body["platform"] != "Linux" && body["platform"] != "Windows"))
    return bad_value("platform: must be Linux or Windows");
  if (has("data") == has("uri"))
    return ib_error(400, "InvalidParameterCombinationException",
                    has("data") ? "give data or uri, not both"
                                : "one of data (the document inline) or uri is required");
  std::string problem;
  for (const char* key : {"description", "changeDescription", "kmsKeyId"})
    if (!optional_text(body, key, 1024, problem))
      return bad_value(problem);
  if (has("supportedOsVersions")) {
    const auto& os = body["supportedOsVersions"];
    bool good = os.is_array() && !os.empty() && os.size() <= 25
                && std::all_of(os.begin(), os.end(), [](const json& v) {
                     return v.is_string() && !v.get_ref<const std::string&>().empty();
                   });
    if (!good)
      return bad_value("supportedOsVersions: must be a list of 1 to 25 non-empty strings");
  }
  if (has("tags")) {
    if (auto p = tag_map_problem(body["tags"]); !p.empty())
      return bad_value("tags: " + p);
    for (auto it = body["tags"].begin(); it != body["tags"].end(); ++it)
      if (it.key().starts_with("aws:"))
        return bad_value("tags: the prefix aws: is reserved (" + it.key().substr(0, 128) + ")");
  }
  if (has("dryRun") && !body["dryRun"].is_boolean())
    return bad_value("dryRun: must be a boolean");
  std::string data;
  if (has("data")) {
    if (!body["data"].is_string() || body["data"].get_ref<const std::string&>().empty())
      return bad_value("data: must be a non-empty string (the YAML document)");
    data = body["data"].get<std::string>();
    if (auto n = chars_of(data); n > max_data_chars)
      return bad_value("data: " + std::to_string(n) + " characters, at most "
                       + std::to_string(max_data_chars) + " (give a uri for a larger document)");
    if (data.find('\0') != std::string::npos)
      return bad_value("data: must not hold a NUL character");
  } else if (!body["uri"].is_string()) {
    return bad_value("uri: must be a string (s3://bucket/key or file:///path)");
  }
  // A retry answers its first answer before anything is fetched again.
  auto request_hash = request_hash_of(body);
  auto rec = store_.with_store([&](grove::store& db) { return ib_token(db, token, now_ms); });
  if (!rec)
    return service_error(rec.error());
  switch (judge_token(*rec, request_hash)) {
    case token_verdict::retry: {
      http_response r;
      r.status = (*rec)->status;
      r.body = (*rec)->response;
      return r;
    }
    case token_verdict::mismatch:
      return ib_error(400, "IdempotentParameterMismatchException",
                      "clientToken '" + token.substr(0, 64)
                        + "' was used with other parameters");
    case token_verdict::fresh:
      break;
  }
  if (!has("data")) {
    const auto& uri = body["uri"].get_ref<const std::string&>();
    if (!uri.starts_with("s3://") && !uri.starts_with("file://"))
      return bad_value("uri: must be an s3:// or file:// URI, got '" + uri.substr(0, 256) + "'");
    if (!settings_.fetch_document)
      return bad_value("uri: this core reads no documents from URIs");
    auto text = settings_.fetch_document(uri);
    if (!text)
      return bad_value("uri: '" + uri.substr(0, 256)
                       + "' cannot be read: " + caf::to_string(text.error()));
    data = std::move(*text);
  }
  component_document_error err;
  auto doc = parse_component_document(data, err);
  if (!doc)
    return bad_value("the component document is invalid: " + err.field + ": " + err.message);
  if (has("dryRun") && body["dryRun"].get<bool>())
    return ib_error(412, "DryRunOperationException",
                    "dry run: the request is valid, nothing was stored");
  ib_component c;
  c.name = name;
  c.arn_name = imagebuilder_arn_name(name);
  c.version = *version;
  c.platform = body["platform"].get<std::string>();
  c.type = std::all_of(doc->phases.begin(), doc->phases.end(),
                       [](const component_phase& p) { return p.name == "test"; })
             ? "TEST"
             : "BUILD";
  c.data = std::move(data);
  json extra = json::object();
  for (const char* key :
       {"description", "changeDescription", "supportedOsVersions", "tags", "kmsKeyId"})
    if (has(key))
      extra[key] = body[key];
  c.extra = extra.dump(-1, ' ', false, json::error_handler_t::replace);
  c.created_ms = now_ms;
  auto request_id = new_uuid();
  http_response first;
  auto answer_of = [&](const ib_component& stored) {
    json a = {{"requestId", request_id},
              {"clientToken", token},
              {"componentBuildVersionArn", build_arn(stored.arn_name, stored.version, stored.build)}};
    first = answer(a);
    return token_record{request_hash, 200, first.body};
  };
  token_record existing;
  auto put = store_.with_store([&](grove::store& db) {
    return ib_put(db, c, token, answer_of, now_ms + settings_.token_ttl.count() * 1000, existing);
  });
  if (!put)
    return service_error(put.error());
  if (*put == ib_put_result::stored)
    return first;
  // A concurrent request with the same token was first.
  if (judge_token(existing, request_hash) == token_verdict::mismatch)
    return ib_error(400, "IdempotentParameterMismatchException",
                    "clientToken '" + token.substr(0, 64) + "' was used with other parameters");
  http_response r;
  r.status = existing.status;
  r.body = existing.response;
  return r;
}

namespace {

// The stored build an ARN query parameter names, or the error to answer.
std::variant<ib_component, http_response> named_build(component_store& store,
                                                      const http_request& req,
                                                      const std::string& region,
                                                      const std::string& account,
                                                      bool build_required) {
  auto arn = query_value(req, "componentBuildVersionArn");
  if (arn.empty())
    return bad_request("componentBuildVersionArn is required");
  auto a = parse_component_arn(arn, region, account);
  if (!a || (build_required && a->build == 0))
    return bad_value("componentBuildVersionArn: '" + arn.substr(0, 256)
                     + "' is not a component build version ARN (arn:aws:imagebuilder:<region>:"
                       "<account>:component/<name>/<x.y.z>/<build>)");
  auto missing = [&] {
    return ib_error(404, "ResourceNotFoundException",
                    "The component build version " + arn.substr(0, 256) + " does not exist");
  };
  if (a->elsewhere)
    return missing();
  auto got = store.with_store(
    [&](grove::store& db) { return ib_get(db, a->arn_name, a->version, a->build); });
  if (!got)
    return service_error(got.error());
  if (!*got)
    return missing();
  return std::move(**got);
}

} // namespace

http_response imagebuilder_api::get_component(const http_request& req) {
  auto found = named_build(store_, req, settings_.region, settings_.account_id, false);
  if (auto* r = std::get_if<http_response>(&found))
    return std::move(*r);
  auto& c = std::get<ib_component>(found);
  json component = {{"arn", build_arn(c.arn_name, c.version, c.build)},
                    {"name", c.name},
                    {"version", c.version},
                    {"type", c.type},
                    {"platform", c.platform},
                    {"state", {{"status", "ACTIVE"}}},
                    {"owner", settings_.account_id},
                    {"data", c.data},
                    {"encrypted", true},
                    {"dateCreated", iso8601_ms(c.created_ms)}};
  auto extra = json::parse(c.extra, nullptr, false);
  if (extra.is_object())
    for (auto it = extra.begin(); it != extra.end(); ++it)
      component[it.key()] = it.value();
  return answer({{"requestId", new_uuid()}, {"component", component}});
}

http_response imagebuilder_api::list_components(const http_request& req) {
  auto body = req.body.empty() ? json::object() : json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return bad_request("the request body is not a JSON object");
  auto has = [&](const char* k) { return body.contains(k) && !body[k].is_null(); };
  std::string owner = "Self";
  if (has("owner")) {
    static const char* owners[] = {"Self", "Shared", "Amazon", "ThirdParty", "AWSMarketplace"};
    if (!body["owner"].is_string()
        || std::find(std::begin(owners), std::end(owners), body["owner"].get<std::string>())
             == std::end(owners))
      return bad_value("owner: must be Self, Shared, Amazon, ThirdParty or AWSMarketplace");
    owner = body["owner"].get<std::string>();
  }
  bool by_name = false;
  if (has("byName")) {
    if (!body["byName"].is_boolean())
      return bad_value("byName: must be a boolean");
    by_name = body["byName"].get<bool>();
  }
  size_t max_results = 25;
  if (has("maxResults")) {
    if (!body["maxResults"].is_number_integer() || body["maxResults"].get<int64_t>() < 1
        || body["maxResults"].get<int64_t>() > 25)
      return bad_value("maxResults: must be 1 to 25");
    max_results = body["maxResults"].get<size_t>();
  }
  size_t start = 0;
  if (has("nextToken")) {
    std::string text;
    if (!body["nextToken"].is_string()
        || !base64_decode(body["nextToken"].get<std::string>(), text) || text.empty()
        || text.size() > 9 || !std::all_of(text.begin(), text.end(), ::isdigit))
      return ib_error(400, "InvalidPaginationTokenException",
                      "nextToken is not one this API gave");
    start = std::stoul(text);
  }
  // Filters: name, platform, type, supportedOsVersion; an entry matches one of the values
  // of every filter.
  std::vector<std::pair<std::string, std::vector<std::string>>> filters;
  if (has("filters")) {
    if (!body["filters"].is_array() || body["filters"].size() > 10)
      return bad_value("filters: must be a list of at most 10 {name, values}");
    for (const auto& f : body["filters"]) {
      if (!f.is_object() || !f.contains("name") || !f["name"].is_string())
        return bad_value("filters: each needs a name");
      auto fname = f["name"].get<std::string>();
      if (fname != "name" && fname != "platform" && fname != "type"
          && fname != "supportedOsVersion")
        return bad_value("filters: '" + fname.substr(0, 64)
                         + "' is not a filter of ListComponents (name, platform, type, "
                           "supportedOsVersion)");
      std::vector<std::string> values;
      if (!f.contains("values") || !f["values"].is_array() || f["values"].empty()
          || f["values"].size() > 10)
        return bad_value("filters: " + fname + ": values must be a list of 1 to 10 strings");
      for (const auto& v : f["values"]) {
        if (!v.is_string())
          return bad_value("filters: " + fname + ": values must be strings");
        values.push_back(v.get<std::string>());
      }
      filters.emplace_back(fname, std::move(values));
    }
  }
  auto all = store_.with_store([](grove::store& db) { return ib_list(db); });
  if (!all)
    return service_error(all.error());
  // One entry per semantic version (its newest build), or per name (its newest version)
  // with byName; ib_list() sorts by name, version and build, so the newest comes last.
  std::vector<ib_component> picked;
  if (owner == "Self")
    for (auto& c : *all) {
      if (!picked.empty() && picked.back().arn_name == c.arn_name
          && (by_name || picked.back().version == c.version))
        picked.back() = std::move(c);
      else
        picked.push_back(std::move(c));
    }
  json items = json::array();
  for (const auto& c : picked) {
    auto extra = json::parse(c.extra, nullptr, false);
    if (!extra.is_object())
      extra = json::object();
    bool keep = true;
    for (const auto& filter : filters) {
      const auto& fname = filter.first;
      const auto& values = filter.second; // (clang 14 captures no structured bindings)
      auto matches = [&](const std::string& v) {
        return std::find(values.begin(), values.end(), v) != values.end();
      };
      if (fname == "name")
        keep = keep && (matches(c.name) || matches(c.arn_name));
      else if (fname == "platform")
        keep = keep && matches(c.platform);
      else if (fname == "type")
        keep = keep && matches(c.type);
      else {
        bool any = false;
        if (extra.contains("supportedOsVersions"))
          for (const auto& os : extra["supportedOsVersions"])
            any = any || (os.is_string() && matches(os.get<std::string>()));
        keep = keep && any;
      }
    }
    if (!keep)
      continue;
    json item = {{"arn", build_arn(c.arn_name, c.version, 0)},
                 {"name", c.name},
                 {"version", c.version},
                 {"platform", c.platform},
                 {"type", c.type},
                 {"owner", settings_.account_id},
                 {"status", "ACTIVE"},
                 {"dateCreated", iso8601_ms(c.created_ms)}};
    for (const char* key : {"description", "supportedOsVersions"})
      if (extra.contains(key))
        item[key] = extra[key];
    items.push_back(std::move(item));
  }
  json out = {{"requestId", new_uuid()}, {"componentVersionList", json::array()}};
  for (size_t i = start; i < items.size() && i < start + max_results; ++i)
    out["componentVersionList"].push_back(items[i]);
  if (start + max_results < items.size())
    out["nextToken"] = base64_encode(std::to_string(start + max_results));
  return answer(out);
}

http_response imagebuilder_api::delete_component(const http_request& req) {
  auto found = named_build(store_, req, settings_.region, settings_.account_id, true);
  if (auto* r = std::get_if<http_response>(&found))
    return std::move(*r);
  auto& c = std::get<ib_component>(found);
  auto erased = store_.with_store(
    [&](grove::store& db) { return ib_erase(db, c.arn_name, c.version, c.build); });
  if (!erased)
    return service_error(erased.error());
  auto arn = build_arn(c.arn_name, c.version, c.build);
  if (!*erased)
    return ib_error(404, "ResourceNotFoundException",
                    "The component build version " + arn + " does not exist");
  return answer({{"requestId", new_uuid()}, {"componentBuildVersionArn", arn}});
}

} // namespace grove::deployment
