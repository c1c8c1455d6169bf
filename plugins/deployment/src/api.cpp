#include "api.hpp"

#include "v1_api.hpp"

#include <algorithm>
#include <cctype>

namespace grove::deployment {

using nlohmann::json;

http_response aws_error(int status, const std::string& type, const std::string& message,
                        json extra) {
  http_response r;
  r.status = status;
  r.headers.emplace_back("x-amzn-ErrorType", type);
  extra["message"] = message;
  // Messages quote the request (paths, ARNs, keys cut at a length): bytes that are not
  // UTF-8 become U+FFFD rather than make the JSON writer throw.
  r.body = extra.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

namespace {

http_response validation(const std::string& message, json fields = json::array()) {
  json extra = {{"reason", fields.empty() ? "OTHER" : "FIELD_VALIDATION_FAILED"}};
  if (!fields.empty())
    extra["fields"] = std::move(fields);
  return aws_error(400, "ValidationException", message, std::move(extra));
}

http_response not_found(const std::string& what, const std::string& id, const std::string& type) {
  return aws_error(404, "ResourceNotFoundException", what,
                   {{"resourceId", id}, {"resourceType", type}});
}

http_response internal(const caf::error& err) {
  return aws_error(500, "InternalServerException",
                   "the component store failed: " + caf::to_string(err));
}

http_response ok(int status, const json& body) {
  http_response r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

double epoch_seconds(int64_t ms) {
  return static_cast<double>(ms) / 1000.0;
}

json status_of(const component_version& v) {
  json s = {{"componentState", v.state},
            {"errors", json::object()},
            {"vendorGuidance", v.vendor_guidance}};
  if (!v.message.empty())
    s["message"] = v.message;
  if (!v.vendor_guidance_message.empty())
    s["vendorGuidanceMessage"] = v.vendor_guidance_message;
  return s;
}

// Splits a path into its decoded segments.
std::vector<std::string> segments(std::string_view path) {
  std::vector<std::string> out;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    auto slash = path.find('/');
    out.push_back(uri_decode(path.substr(0, slash)));
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
  }
  return out;
}

std::string query_value(const http_request& req, std::string_view key) {
  for (auto& [k, v] : parse_query(req.raw_query()))
    if (k == key)
      return v;
  return {};
}

// maxResults: 1..100 (DefaultMaxResults), 50 when absent.
bool max_results(const http_request& req, size_t& out, http_response& err) {
  auto text = query_value(req, "maxResults");
  out = 50;
  if (text.empty())
    return true;
  if (text.size() > 3 || !std::all_of(text.begin(), text.end(), ::isdigit)
      || std::stoi(text) < 1 || std::stoi(text) > 100) {
    err = validation("maxResults must be 1 to 100",
                     json::array({{{"name", "maxResults"}, {"message", "1 to 100"}}}));
    return false;
  }
  out = static_cast<size_t>(std::stoi(text));
  return true;
}

// A TagMap: 1..128-character keys, values up to 256; at most 50 (AWS's per-resource
// tag limit). An empty string when good, else what is wrong.
std::string tag_map_problem(const json& tags) {
  if (!tags.is_object())
    return "tags must be a map of strings";
  if (tags.size() > 50)
    return "a resource has at most 50 tags";
  for (auto it = tags.begin(); it != tags.end(); ++it)
    if (it.key().empty() || it.key().size() > 128 || !it->is_string()
        || it->get_ref<const std::string&>().size() > 256)
      return "tag '" + it.key().substr(0, 128)
             + "': keys are 1 to 128 characters, values strings of at most 256";
  return {};
}

} // namespace

api::api(api_settings settings, component_store& store)
  : settings_(std::move(settings)), store_(store) {
  scope_.region = settings_.region;
}

std::string api::component_arn(const std::string& name) const {
  return "arn:aws:greengrass:" + settings_.region + ":" + settings_.account_id + ":components:"
         + name;
}

std::string api::version_arn(const std::string& name, const std::string& version) const {
  return component_arn(name) + ":versions:" + version;
}

http_response api::handle(const http_request& req, std::chrono::system_clock::time_point now) {
  // Which operation, from the route (so an allow-list check can name it).
  auto segs = segments(req.raw_path());
  std::string op;
  std::string arn;
  const auto& m = req.method;
  if (segs.size() >= 2 && segs[0] == "greengrass" && segs[1] == "v2") {
    if (m == "POST" && segs.size() == 3 && segs[2] == "createComponentVersion")
      op = "CreateComponentVersion";
    else if (m == "GET" && segs.size() == 3 && segs[2] == "components")
      op = "ListComponents";
    else if (m == "POST" && segs.size() == 3 && segs[2] == "resolveComponentCandidates")
      op = "ResolveComponentCandidates";
    else if (segs.size() >= 4 && segs[2] == "components") {
      arn = segs[3];
      if (m == "GET" && segs.size() == 5 && segs[4] == "metadata")
        op = "DescribeComponent";
      else if (m == "GET" && segs.size() == 5 && segs[4] == "versions")
        op = "ListComponentVersions";
      else if (m == "GET" && segs.size() == 4)
        op = "GetComponent";
      else if (m == "DELETE" && segs.size() == 4)
        op = "DeleteComponent";
    }
  } else if (segs.size() == 2 && segs[0] == "tags") {
    arn = segs[1];
    if (m == "GET")
      op = "ListTagsForResource";
    else if (m == "POST")
      op = "TagResource";
    else if (m == "DELETE")
      op = "UntagResource";
  }
  // Greengrass v1's group API (v1_api.hpp): its own routes, and /tags/ of its ARNs.
  bool v1_route = false;
  if (op.empty() && v1_) {
    op = v1_api::operation(m, segs);
    v1_route = !op.empty();
  }
  bool v1_tags = v1_ && segs.size() == 2 && segs[0] == "tags" && v1_api::is_v1_arn(arn);
  auto who = verify_sigv4(
    req, scope_,
    [this](std::string_view id) -> std::optional<std::string> {
      auto it = settings_.keys.find(std::string{id});
      if (it == settings_.keys.end())
        return std::nullopt;
      return it->second.secret;
    },
    now);
  if (auto* e = std::get_if<auth_error>(&who))
    return aws_error(403, e->type, e->message);
  const auto& key_id = std::get<std::string>(who);
  if (op.empty())
    return aws_error(404, "UnknownOperationException",
                     "Grove's Greengrass v2 API has no operation " + m + " "
                       + std::string{req.raw_path().substr(0, 256)});
  const auto& allowed = settings_.keys.at(key_id).operations;
  if (!allowed.count("*") && !allowed.count(op))
    return aws_error(403, "AccessDeniedException",
                     "User: arn:aws:iam::" + settings_.account_id + ":user/" + key_id
                       + " is not authorized to perform: greengrass:" + op);
  if (throttled(key_id, now)) {
    auto r = aws_error(429, "ThrottlingException",
                       "Rate exceeded: access key " + key_id + " may make "
                         + std::to_string(static_cast<int64_t>(
                           settings_.keys.at(key_id).requests_per_second))
                         + " requests per second",
                       {{"serviceCode", "greengrass"}});
    r.headers.emplace_back("Retry-After", "1");
    return r;
  }
  if (req.body.size() > settings_.max_body_bytes)
    return aws_error(413, "RequestEntityTooLargeException",
                     "the request body is larger than " + std::to_string(settings_.max_body_bytes)
                       + " bytes");
  auto now_ms =
    std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  if (v1_route)
    return v1_->handle(op, segs, req, now_ms);
  if (v1_tags)
    return v1_->tags(op, arn, req);
  if (op == "CreateComponentVersion")
    return create_component_version(req, now_ms);
  if (op == "ListComponents")
    return list_components(req);
  if (op == "DescribeComponent")
    return describe_component(arn);
  if (op == "GetComponent")
    return get_component(arn, req);
  if (op == "ListComponentVersions")
    return list_component_versions(arn, req);
  if (op == "DeleteComponent")
    return delete_component(arn);
  if (op == "ResolveComponentCandidates")
    return resolve_component_candidates(req);
  return tags(op, arn, req);
}

bool api::throttled(const std::string& key_id, std::chrono::system_clock::time_point now) {
  double rate = settings_.keys.at(key_id).requests_per_second;
  if (rate <= 0)
    return false;
  std::lock_guard guard{buckets_mtx_};
  auto& b = buckets_[key_id];
  if (!b.started) {
    b.tokens = rate;
    b.last = now;
    b.started = true;
  } else if (now > b.last) {
    b.tokens = std::min(rate, b.tokens + rate * std::chrono::duration<double>(now - b.last).count());
    b.last = now;
  }
  if (b.tokens < 1)
    return true;
  b.tokens -= 1;
  return false;
}

namespace {

// "arn:aws:greengrass:<region>:<account>:components:<name>[:versions:<version>]"
struct parsed_arn {
  std::string region, account, name, version;
};

std::optional<parsed_arn> parse_arn(const std::string& arn, bool with_version) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    auto colon = arn.find(':', start);
    parts.push_back(arn.substr(start, colon - start));
    if (colon == std::string::npos)
      break;
    start = colon + 1;
  }
  if (parts.size() != (with_version ? 9u : 7u) || parts[0] != "arn" || parts[2] != "greengrass"
      || parts[5] != "components" || parts[6].empty()
      || (with_version && (parts[7] != "versions" || parts[8].empty())))
    return std::nullopt;
  return parsed_arn{parts[3], parts[4], parts[6], with_version ? parts[8] : ""};
}

// The answer to a malformed component version ARN.
http_response bad_version_arn(const std::string& arn) {
  return validation("'" + arn.substr(0, 512) + "' is not a component version ARN",
                    json::array({{{"name", "arn"}, {"message", "a component version ARN"}}}));
}

// The answer to a component version this core does not hold (none of that name and
// version, or an ARN of another region or account).
http_response version_not_found(const std::string& arn) {
  return not_found("Component version " + arn + " not found", arn, "ComponentVersion");
}

} // namespace

http_response api::create_component_version(const http_request& req, int64_t now_ms) {
  auto body = json::parse(req.body.empty() ? std::string_view{"{}"} : std::string_view{req.body},
                          nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return aws_error(400, "SerializationException", "the request body is not a JSON object");
  auto has = [&](const char* k) { return body.contains(k) && !body[k].is_null(); };
  if (has("lambdaFunction") && has("inlineRecipe"))
    return validation("give inlineRecipe or lambdaFunction, not both",
                      json::array({{{"name", "lambdaFunction"},
                                    {"message", "exactly one of inlineRecipe, lambdaFunction"}}}));
  if (has("lambdaFunction"))
    return validation("lambdaFunction is not supported by this Grove version yet; give an "
                      "inlineRecipe",
                      json::array({{{"name", "lambdaFunction"}, {"message", "not supported yet"}}}));
  if (!has("inlineRecipe") || !body["inlineRecipe"].is_string())
    return validation("inlineRecipe is required (a base64 blob)",
                      json::array({{{"name", "inlineRecipe"}, {"message", "required"}}}));
  std::string token;
  if (has("clientToken")) {
    if (!body["clientToken"].is_string())
      return validation("clientToken must be a string",
                        json::array({{{"name", "clientToken"}, {"message", "a string"}}}));
    token = body["clientToken"].get<std::string>();
    if (token.empty() || token.size() > 64
        || !std::all_of(token.begin(), token.end(),
                        [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; }))
      return validation("clientToken must be 1 to 64 of [a-zA-Z0-9-]",
                        json::array({{{"name", "clientToken"}, {"message", "^[a-zA-Z0-9-]+$"}}}));
  }
  json tags = json::object();
  if (has("tags")) {
    tags = body["tags"];
    if (auto problem = tag_map_problem(tags); !problem.empty())
      return validation(problem, json::array({{{"name", "tags"}, {"message", problem}}}));
  }
  // What the request asks, without the token: a retry has the same hash.
  json asked = body;
  asked.erase("clientToken");
  auto request_hash = hex(sha256(asked.dump()));
  if (!token.empty()) {
    auto rec = store_.token(token, now_ms);
    if (!rec)
      return internal(rec.error());
    if (*rec) {
      if ((*rec)->request_hash != request_hash)
        return aws_error(409, "ConflictException",
                         "clientToken '" + token + "' was used for another request",
                         {{"resourceId", token}, {"resourceType", "clientToken"}});
      return ok((*rec)->status, json::parse((*rec)->response));
    }
  }
  std::string recipe_text;
  if (!base64_decode(body["inlineRecipe"].get_ref<const std::string&>(), recipe_text))
    return validation("inlineRecipe is not valid base64",
                      json::array({{{"name", "inlineRecipe"}, {"message", "not base64"}}}));
  std::vector<recipe_error> errors;
  auto r = parse_recipe(recipe_text, errors);
  if (!r) {
    json fields = json::array();
    std::string message = "the recipe is invalid:";
    for (auto& e : errors) {
      fields.push_back({{"name", "inlineRecipe" + e.field}, {"message", e.message}});
      if (fields.size() <= 5)
        message += " " + e.field + ": " + e.message + ";";
    }
    message.pop_back();
    return validation(message, std::move(fields));
  }
  component_version v;
  v.name = r->name;
  v.version = r->version.str();
  v.created_ms = now_ms;
  v.description = r->description;
  v.publisher = r->publisher;
  v.recipe = r->doc.dump();
  v.platforms = r->platforms.dump();
  // Part 1 stores the recipe; artifacts are fetched and checked when a deployment needs
  // them (part 2), so a stored version is deployable at once.
  v.state = "DEPLOYABLE";
  v.message = "NONE";
  v.tags = tags.dump();
  auto arn = version_arn(v.name, v.version);
  json answer = {{"arn", arn},
                 {"componentName", v.name},
                 {"componentVersion", v.version},
                 {"creationTimestamp", epoch_seconds(now_ms)},
                 {"status", status_of(v)}};
  token_record first{request_hash, 201, answer.dump()};
  token_record existing;
  auto put = store_.put(v, token, first, now_ms + settings_.token_ttl.count() * 1000, existing);
  if (!put)
    return internal(put.error());
  switch (*put) {
    case put_result::stored:
      return ok(201, answer);
    case put_result::exists:
      return aws_error(409, "ConflictException",
                       "Component " + v.name + " version " + v.version + " already exists",
                       {{"resourceId", arn}, {"resourceType", "ComponentVersion"}});
    case put_result::token_taken:
      break;
  }
  // A concurrent request with the same token won the race.
  if (existing.request_hash != request_hash)
    return aws_error(409, "ConflictException",
                     "clientToken '" + token + "' was used for another request",
                     {{"resourceId", token}, {"resourceType", "clientToken"}});
  return ok(existing.status, json::parse(existing.response));
}

http_response api::describe_component(const std::string& arn) {
  auto a = parse_arn(arn, true);
  if (!a)
    return bad_version_arn(arn);
  std::optional<component_version> v;
  if (a->region == settings_.region && a->account == settings_.account_id) {
    auto got = store_.get(a->name, a->version);
    if (!got)
      return internal(got.error());
    v = std::move(*got);
  }
  if (!v)
    return version_not_found(arn);
  return ok(200, {{"arn", arn},
                  {"componentName", v->name},
                  {"componentVersion", v->version},
                  {"creationTimestamp", epoch_seconds(v->created_ms)},
                  {"publisher", v->publisher},
                  {"description", v->description},
                  {"status", status_of(*v)},
                  {"platforms", json::parse(v->platforms)},
                  {"tags", json::parse(v->tags)}});
}

http_response api::get_component(const std::string& arn, const http_request& req) {
  auto format = query_value(req, "recipeOutputFormat");
  if (format.empty())
    format = "YAML";
  if (format != "JSON" && format != "YAML")
    return validation("recipeOutputFormat must be JSON or YAML",
                      json::array({{{"name", "recipeOutputFormat"}, {"message", "JSON | YAML"}}}));
  auto a = parse_arn(arn, true);
  if (!a)
    return bad_version_arn(arn);
  std::optional<component_version> v;
  if (a->region == settings_.region && a->account == settings_.account_id) {
    auto got = store_.get(a->name, a->version);
    if (!got)
      return internal(got.error());
    v = std::move(*got);
  }
  if (!v)
    return version_not_found(arn);
  auto doc = json::parse(v->recipe);
  auto text = format == "JSON" ? recipe_json(doc) : recipe_yaml(doc);
  return ok(200, {{"recipeOutputFormat", format},
                  {"recipe", base64_encode(text)},
                  {"tags", json::parse(v->tags)}});
}

http_response api::list_components(const http_request& req) {
  auto scope = query_value(req, "scope");
  if (!scope.empty() && scope != "PRIVATE" && scope != "PUBLIC")
    return validation("scope must be PRIVATE or PUBLIC",
                      json::array({{{"name", "scope"}, {"message", "PRIVATE | PUBLIC"}}}));
  size_t limit;
  http_response err;
  if (!max_results(req, limit, err))
    return err;
  json out = {{"components", json::array()}};
  if (scope == "PUBLIC") // AWS-provided components live in the cloud, not on this core
    return ok(200, out);
  std::string after;
  auto next = query_value(req, "nextToken");
  if (!next.empty() && !base64_decode(next, after))
    return validation("nextToken is not one this API gave",
                      json::array({{{"name", "nextToken"}, {"message", "invalid"}}}));
  auto names = store_.names(after, limit + 1);
  if (!names)
    return internal(names.error());
  bool more = names->size() > limit;
  if (more)
    names->resize(limit);
  for (const auto& name : *names) {
    auto vs = store_.versions(name);
    if (!vs)
      return internal(vs.error());
    if (vs->empty())
      continue; // deleted meanwhile
    const auto& v = vs->front();
    out["components"].push_back(
      {{"arn", component_arn(name)},
       {"componentName", name},
       {"latestVersion",
        {{"arn", version_arn(name, v.version)},
         {"componentVersion", v.version},
         {"creationTimestamp", epoch_seconds(v.created_ms)},
         {"description", v.description},
         {"publisher", v.publisher},
         {"platforms", json::parse(v.platforms)}}}});
  }
  if (more)
    out["nextToken"] = base64_encode(names->back());
  return ok(200, out);
}

http_response api::list_component_versions(const std::string& arn, const http_request& req) {
  auto a = parse_arn(arn, false);
  if (!a)
    return validation("'" + arn.substr(0, 512) + "' is not a component ARN",
                      json::array({{{"name", "arn"}, {"message", "a component ARN"}}}));
  size_t limit;
  http_response err;
  if (!max_results(req, limit, err))
    return err;
  std::vector<component_version> vs;
  if (a->region == settings_.region && a->account == settings_.account_id) {
    auto got = store_.versions(a->name);
    if (!got)
      return internal(got.error());
    vs = std::move(*got);
  }
  if (vs.empty())
    return not_found("Component " + arn + " not found", arn, "Component");
  // nextToken: the last version returned; the page goes on after it.
  size_t start = 0;
  auto next = query_value(req, "nextToken");
  if (!next.empty()) {
    std::string last;
    if (!base64_decode(next, last))
      return validation("nextToken is not one this API gave",
                        json::array({{{"name", "nextToken"}, {"message", "invalid"}}}));
    auto last_v = parse_semver(last);
    if (!last_v)
      return validation("nextToken is not one this API gave",
                        json::array({{{"name", "nextToken"}, {"message", "invalid"}}}));
    while (start < vs.size()
           && compare(parse_semver(vs[start].version).value_or(semver{}), *last_v) >= 0)
      ++start;
  }
  json out = {{"componentVersions", json::array()}};
  size_t end = std::min(vs.size(), start + limit);
  for (size_t i = start; i < end; ++i)
    out["componentVersions"].push_back({{"componentName", vs[i].name},
                                        {"componentVersion", vs[i].version},
                                        {"arn", version_arn(vs[i].name, vs[i].version)}});
  if (end < vs.size())
    out["nextToken"] = base64_encode(vs[end - 1].version);
  return ok(200, out);
}

http_response api::delete_component(const std::string& arn) {
  auto a = parse_arn(arn, true);
  if (!a)
    return bad_version_arn(arn);
  bool gone = false;
  if (a->region == settings_.region && a->account == settings_.account_id) {
    auto erased = store_.erase(a->name, a->version);
    if (!erased)
      return internal(erased.error());
    gone = *erased;
  }
  if (!gone)
    return version_not_found(arn);
  http_response r;
  r.status = 204;
  return r;
}

} // namespace grove::deployment

namespace grove::deployment {

http_response api::tags(const std::string& op, const std::string& arn, const http_request& req) {
  // Part 1 tags component versions (what CreateComponentVersion tags); other Greengrass
  // resources (deployments, core devices) come with part 2.
  auto a = parse_arn(arn, true);
  if (!a) {
    if (arn.rfind("arn:", 0) == 0 && arn.find(":greengrass:") != std::string::npos)
      return not_found("Resource " + arn.substr(0, 512) + " not found", arn.substr(0, 512),
                       "Resource");
    return validation("'" + arn.substr(0, 512) + "' is not a Greengrass ARN",
                      json::array({{{"name", "resourceArn"}, {"message", "a Greengrass ARN"}}}));
  }
  if (a->region != settings_.region || a->account != settings_.account_id)
    return version_not_found(arn);
  if (op == "ListTagsForResource") {
    auto v = store_.get(a->name, a->version);
    if (!v)
      return internal(v.error());
    if (!*v)
      return version_not_found(arn);
    return ok(200, {{"tags", json::parse((*v)->tags)}});
  }
  std::function<std::optional<std::string>(const std::string&)> change;
  std::string problem;
  if (op == "TagResource") {
    auto body = json::parse(req.body.empty() ? std::string_view{"{}"} : std::string_view{req.body},
                            nullptr, false);
    if (body.is_discarded() || !body.is_object())
      return aws_error(400, "SerializationException", "the request body is not a JSON object");
    auto add = body.value("tags", json::object());
    if (add.empty())
      return validation("tags must hold at least one tag",
                        json::array({{{"name", "tags"}, {"message", "at least one tag"}}}));
    if (auto p = tag_map_problem(add); !p.empty())
      return validation(p, json::array({{{"name", "tags"}, {"message", p}}}));
    change = [add, &problem](const std::string& old) -> std::optional<std::string> {
      auto merged = json::parse(old);
      for (auto it = add.begin(); it != add.end(); ++it)
        merged[it.key()] = *it;
      problem = tag_map_problem(merged);
      if (!problem.empty())
        return std::nullopt;
      return merged.dump();
    };
  } else {
    std::vector<std::string> keys;
    for (auto& [k, v] : parse_query(req.raw_query()))
      if (k == "tagKeys")
        keys.push_back(v);
    if (keys.empty())
      return validation("tagKeys must name at least one tag key",
                        json::array({{{"name", "tagKeys"}, {"message", "at least one key"}}}));
    change = [keys](const std::string& old) -> std::optional<std::string> {
      auto tags = json::parse(old);
      for (const auto& k : keys)
        tags.erase(k);
      return tags.dump();
    };
  }
  auto r = store_.modify_tags(a->name, a->version, change);
  if (!r)
    return internal(r.error());
  switch (*r) {
    case tag_result::not_found:
      return version_not_found(arn);
    case tag_result::refused:
      return validation(problem, json::array({{{"name", "tags"}, {"message", problem}}}));
    case tag_result::changed:
      break;
  }
  return ok(200, json::object());
}

} // namespace grove::deployment

namespace grove::deployment {

namespace {

// Whether a recipe runs on a platform: a recipe without manifests runs anywhere; else one
// manifest must match, i.e. each of its Platform attributes is `*` or equals the
// device's (a manifest without Platform matches every device). Greengrass' `/regex/`
// values are not supported yet and match nothing.
bool runs_on(const json& recipe, const json& attributes) {
  auto manifests = recipe.find("Manifests");
  if (manifests == recipe.end() || !manifests->is_array() || manifests->empty())
    return true;
  for (const auto& m : *manifests) {
    auto platform = m.find("Platform");
    if (platform == m.end() || !platform->is_object())
      return true;
    bool all = true;
    for (auto it = platform->begin(); all && it != platform->end(); ++it) {
      if (!it->is_string())
        all = false;
      else if (*it != "*")
        all = attributes.contains(it.key()) && attributes[it.key()] == *it;
    }
    if (all)
      return true;
  }
  return false;
}

} // namespace

http_response api::resolve_component_candidates(const http_request& req) {
  auto body = json::parse(req.body.empty() ? std::string_view{"{}"} : std::string_view{req.body},
                          nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return aws_error(400, "SerializationException", "the request body is not a JSON object");
  json attributes = json::object();
  if (auto p = body.find("platform"); p != body.end() && p->is_object()) {
    attributes = p->value("attributes", json::object());
    if (!attributes.is_object())
      return validation("platform.attributes must be a map",
                        json::array({{{"name", "platform.attributes"}, {"message", "a map"}}}));
  }
  auto candidates = body.value("componentCandidates", json::array());
  if (!candidates.is_array() || candidates.empty() || candidates.size() > 1000)
    return validation("componentCandidates must list 1 to 1000 candidates",
                      json::array({{{"name", "componentCandidates"}, {"message", "1 to 1000"}}}));
  json out = {{"resolvedComponentVersions", json::array()}};
  for (size_t i = 0; i < candidates.size(); ++i) {
    const auto& c = candidates[i];
    auto field = "componentCandidates/" + std::to_string(i);
    if (!c.is_object() || !c.contains("componentName") || !c["componentName"].is_string())
      return validation(field + ": componentName is required",
                        json::array({{{"name", field + "/componentName"}, {"message", "required"}}}));
    auto name = c["componentName"].get<std::string>();
    // requirer -> range, each parsed once.
    std::vector<std::pair<std::string, semver_range>> reqs;
    std::string described;
    auto vr = c.value("versionRequirements", json::object());
    if (!vr.is_object())
      return validation(field + ": versionRequirements must be a map",
                        json::array({{{"name", field + "/versionRequirements"}, {"message", "a map"}}}));
    for (auto it = vr.begin(); it != vr.end(); ++it) {
      std::string why;
      auto r = it->is_string() ? parse_range(it->get_ref<const std::string&>(), &why) : std::nullopt;
      if (!r)
        return validation(field + ": '" + it.key() + "' asks for '"
                             + (it->is_string() ? it->get<std::string>() : it->dump())
                             + "', not a version range: " + why,
                           json::array({{{"name", field + "/versionRequirements/" + it.key()},
                                         {"message", "not a version range: " + why}}}));
      reqs.emplace_back(it.key(), std::move(*r));
      described += (described.empty() ? "" : ", ") + it.key() + " requires '" + it->get<std::string>() + "'";
    }
    auto versions = store_.versions(name);
    if (!versions)
      return internal(versions.error());
    if (versions->empty())
      return not_found("Component " + name + " not found", component_arn(name), "Component");
    const component_version* pick = nullptr;
    bool any_on_platform = false;
    for (const auto& v : *versions) { // newest first
      if (v.vendor_guidance == "DELETED")
        continue;
      auto recipe = json::parse(v.recipe);
      if (!runs_on(recipe, attributes))
        continue;
      any_on_platform = true;
      auto sv = parse_semver(v.version);
      if (sv && std::all_of(reqs.begin(), reqs.end(),
                            [&](const auto& r) { return r.second.satisfies(*sv); })) {
        pick = &v;
        break;
      }
    }
    if (!pick) {
      if (!any_on_platform)
        return not_found("No version of " + name + " runs on platform " + attributes.dump(),
                         component_arn(name), "Component");
      std::string have;
      for (size_t k = 0; k < versions->size() && k < 10; ++k)
        have += (k ? ", " : "") + (*versions)[k].version;
      return aws_error(409, "ConflictException",
                       "No version of " + name + " satisfies every requirement: " + described
                         + " (versions: " + have + (versions->size() > 10 ? ", ..." : "") + ")",
                       {{"resourceId", component_arn(name)}, {"resourceType", "Component"}});
    }
    json item = {{"arn", version_arn(pick->name, pick->version)},
                 {"componentName", pick->name},
                 {"componentVersion", pick->version},
                 {"recipe", base64_encode(recipe_json(json::parse(pick->recipe)))},
                 {"vendorGuidance", pick->vendor_guidance}};
    if (!pick->vendor_guidance_message.empty())
      item["message"] = pick->vendor_guidance_message;
    out["resolvedComponentVersions"].push_back(std::move(item));
  }
  return ok(200, out);
}

} // namespace grove::deployment

namespace grove::deployment {

http_response api::operator_call(const std::string& operation, const std::string& arn,
                                 const std::string& format, const std::string& guidance,
                                 const std::string& message) {
  http_request req;
  if (!format.empty())
    req.target = "/?recipeOutputFormat=" + uri_encode(format, false);
  if (operation == "ListComponents") {
    req.target = "/?maxResults=100";
    return list_components(req);
  }
  if (operation == "ListComponentVersions") {
    req.target = "/?maxResults=100";
    return list_component_versions(arn, req);
  }
  if (operation == "DescribeComponent")
    return describe_component(arn);
  if (operation == "GetComponent") {
    // The recipe itself, not its base64 inside JSON: what an operator wants printed.
    auto r = get_component(arn, req);
    std::string text;
    if (r.status == 200 && base64_decode(json::parse(r.body)["recipe"].get<std::string>(), text))
      r.body = std::move(text);
    return r;
  }
  if (operation == "DeleteComponent")
    return delete_component(arn);
  if (operation == "SetVendorGuidance")
    return set_vendor_guidance(arn, guidance, message);
  return validation("unknown operation '" + operation.substr(0, 64) + "'",
                    json::array({{{"name", "operation"}, {"message", "unknown"}}}));
}

http_response api::set_vendor_guidance(const std::string& arn, const std::string& guidance,
                                       const std::string& message) {
  if (guidance != "ACTIVE" && guidance != "DISCONTINUED" && guidance != "DELETED")
    return validation("vendorGuidance must be ACTIVE, DISCONTINUED or DELETED",
                      json::array({{{"name", "vendorGuidance"}, {"message", "ACTIVE | DISCONTINUED | DELETED"}}}));
  if (message.size() > 2048)
    return validation("vendorGuidanceMessage is longer than 2048 characters",
                      json::array({{{"name", "vendorGuidanceMessage"}, {"message", "at most 2048"}}}));
  auto a = parse_arn(arn, true);
  if (!a)
    return bad_version_arn(arn);
  bool found = false;
  if (a->region == settings_.region && a->account == settings_.account_id) {
    auto set = store_.set_guidance(a->name, a->version, guidance, message);
    if (!set)
      return internal(set.error());
    found = *set;
  }
  if (!found)
    return version_not_found(arn);
  return describe_component(arn);
}

} // namespace grove::deployment
