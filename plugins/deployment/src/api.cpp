#include "api.hpp"

#include "artifact_uri.hpp"
#include "connectivity.hpp"
#include "lambda.hpp"
#include "public_components.hpp"
#include "reason.hpp"
#include "resolver.hpp"
#include "semver.hpp"
#include "v1_api.hpp"

#include <algorithm>
#include <cctype>
#include <variant>

#include <openssl/rand.h>

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

// Pagination over a list already in memory: the first index past `nextToken` (base64
// of the last index given), or false with the answer.
bool page_start(const http_request& req, size_t& start, http_response& err) {
  start = 0;
  auto next = query_value(req, "nextToken");
  if (next.empty())
    return true;
  std::string text;
  if (!base64_decode(next, text) || text.empty() || text.size() > 9
      || !std::all_of(text.begin(), text.end(), ::isdigit)) {
    err = validation("nextToken is not one this API gave",
                     json::array({{{"name", "nextToken"}, {"message", "invalid"}}}));
    return false;
  }
  start = static_cast<size_t>(std::stoul(text));
  return true;
}

// One page of `items` from `start`, at most `limit`, into out[key] (+ nextToken).
void page(json& out, const char* key, const json& items, size_t start, size_t limit) {
  out[key] = json::array();
  for (size_t i = start; i < items.size() && i < start + limit; ++i)
    out[key].push_back(items[i]);
  if (start + limit < items.size())
    out["nextToken"] = base64_encode(std::to_string(start + limit));
}

} // namespace

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


api::api(api_settings settings, component_store& store)
  : settings_(std::move(settings)),
    store_(store),
    ib_(imagebuilder_settings{settings_.region, settings_.account_id, settings_.token_ttl,
                              settings_.fetch_document},
        store) {
  scope_.region = settings_.region;
  ib_scope_ = scope_;
  ib_scope_.service = "imagebuilder";
}

std::string api::component_arn(const std::string& name) const {
  return "arn:aws:greengrass:" + settings_.region + ":" + settings_.account_id + ":components:"
         + name;
}

std::string api::public_arn(const std::string& name) const {
  return "arn:aws:greengrass:" + settings_.region + ":" + std::string{public_account}
         + ":components:" + name;
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
    // Deployments and core devices (part 2).
    else if (segs.size() >= 3 && segs[2] == "deployments") {
      if (segs.size() == 3 && m == "POST")
        op = "CreateDeployment";
      else if (segs.size() == 3 && m == "GET")
        op = "ListDeployments";
      else if (segs.size() == 4 && m == "GET")
        op = "GetDeployment";
      else if (segs.size() == 4 && m == "DELETE")
        op = "DeleteDeployment";
      else if (segs.size() == 5 && m == "POST" && segs[4] == "cancel")
        op = "CancelDeployment";
      if (segs.size() >= 4)
        arn = segs[3];
    } else if (segs.size() >= 3 && segs[2] == "coreDevices" && m == "GET") {
      if (segs.size() == 3)
        op = "ListCoreDevices";
      else if (segs.size() == 4)
        op = "GetCoreDevice";
      else if (segs.size() == 5 && segs[4] == "effectiveDeployments")
        op = "ListEffectiveDeployments";
      else if (segs.size() == 5 && segs[4] == "installedComponents")
        op = "ListInstalledComponents";
      if (segs.size() >= 4)
        arn = segs[3];
    }
    // GetComponentVersionArtifact: artifacts/{artifactName+}, the rest of the raw path.
    if (m == "GET" && segs.size() >= 6 && segs[2] == "components" && segs[4] == "artifacts")
      op = "GetComponentVersionArtifact";
  } else if (segs.size() == 4 && segs[0] == "greengrass" && segs[1] == "things"
             && segs[3] == "connectivityInfo") {
    arn = segs[2];
    if (m == "GET")
      op = "GetConnectivityInfo";
    else if (m == "PUT")
      op = "UpdateConnectivityInfo";
  } else if (segs.size() == 2 && segs[0] == "tags") {
    arn = segs[1];
    if (m == "GET")
      op = "ListTagsForResource";
    else if (m == "POST")
      op = "TagResource";
    else if (m == "DELETE")
      op = "UntagResource";
  }
  // A pre-signed artifact URL carries its own signature (a device fetches it unsigned).
  if (m == "GET" && req.raw_path().starts_with(presigned_prefix))
    return presigned_artifact(
      req, std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count());
  // Greengrass v1's group API (v1_api.hpp): its own routes, and /tags/ of its ARNs.
  bool v1_route = false;
  if (op.empty() && v1_) {
    op = v1_api::operation(m, segs);
    v1_route = !op.empty();
  }
  bool v1_tags = v1_ && segs.size() == 2 && segs[0] == "tags" && v1_api::is_v1_arn(arn);
  // Image Builder's component routes (imagebuilder.hpp): the AWS clients sign them for
  // the service `imagebuilder`, the others for `greengrass`.
  bool ib_route = false;
  if (op.empty()) {
    op = imagebuilder_api::operation(m, segs);
    ib_route = !op.empty();
  }
  auto who = verify_sigv4(
    req, ib_route ? ib_scope_ : scope_,
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
    return aws_error(403, ib_route ? "ForbiddenException" : "AccessDeniedException",
                     "User: arn:aws:iam::" + settings_.account_id + ":user/" + key_id
                       + " is not authorized to perform: "
                       + (ib_route ? op : "greengrass:" + op));
  if (throttled(key_id, now)) {
    if (ib_route) // Image Builder's name for it
      return aws_error(429, "CallRateLimitExceededException",
                       "Rate exceeded: access key " + key_id + " may make "
                         + std::to_string(static_cast<int64_t>(
                           settings_.keys.at(key_id).requests_per_second))
                         + " requests per second");
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
  if (ib_route)
    return ib_.handle(op, req, now_ms);
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
  if (op == "GetComponentVersionArtifact") {
    auto raw = req.raw_path();
    auto at = raw.find("/artifacts/", std::string_view{"/greengrass/v2/components/"}.size());
    return get_component_version_artifact(arn, uri_decode(raw.substr(at + 11)), req, now_ms);
  }
  if (op == "CreateDeployment")
    return create_deployment(req, now_ms);
  if (op == "GetDeployment")
    return get_deployment(arn);
  if (op == "ListDeployments")
    return list_deployments(req);
  if (op == "CancelDeployment")
    return cancel_deployment(arn, now_ms);
  if (op == "DeleteDeployment")
    return delete_deployment(arn, now_ms);
  if (op == "ListEffectiveDeployments")
    return list_effective_deployments(arn, req);
  if (op == "ListInstalledComponents")
    return list_installed_components(arn, req);
  if (op == "GetCoreDevice")
    return get_core_device(arn);
  if (op == "ListCoreDevices")
    return list_core_devices(req);
  if (op == "GetConnectivityInfo")
    return get_connectivity_info(arn);
  if (op == "UpdateConnectivityInfo")
    return update_connectivity_info(arn, req, now_ms);
  return tags(op, arn, req);
}

bool api::throttled(const std::string& key_id, std::chrono::system_clock::time_point now) {
  double rate = settings_.keys.at(key_id).requests_per_second;
  if (rate <= 0)
    return false;
  std::lock_guard guard{buckets_mtx_};
  auto [it, added] = buckets_.try_emplace(key_id, grove::rate_limit{rate});
  // The bucket only compares times: the request's (which the unit tests move) serves.
  auto at = grove::token_bucket::time_point{
    std::chrono::duration_cast<grove::token_bucket::clock::duration>(now.time_since_epoch())};
  return !it->second.try_take(at);
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

// The stored version `a` (parsed from `arn`) names, or the answer when there is none:
// ResourceNotFoundException for an ARN of another region or account or a version not
// stored, InternalServerException when the store fails.
std::variant<component_version, http_response> stored_version(component_store& store,
                                                               const api_settings& settings,
                                                               const parsed_arn& a,
                                                               const std::string& arn) {
  if (a.region == settings.region && a.account == public_account) {
    // AWS's public components: the built-in catalog (public_components.hpp).
    const auto* v = find_public_version(a.name, a.version);
    if (v == nullptr)
      return version_not_found(arn);
    return *v;
  }
  if (a.region != settings.region || a.account != settings.account_id)
    return version_not_found(arn);
  auto got = store.get(a.name, a.version);
  if (!got)
    return internal(got.error());
  if (!*got)
    return version_not_found(arn);
  return std::move(**got);
}

} // namespace

std::optional<http_response> api::token_answer(const std::string& token,
                                               const std::string& request_hash, int64_t now_ms) {
  if (token.empty())
    return std::nullopt;
  auto rec = store_.token(token, now_ms);
  if (!rec)
    return internal(rec.error());
  switch (judge_token(*rec, request_hash)) {
    case token_verdict::mismatch:
      return aws_error(409, "ConflictException",
                       "clientToken '" + token + "' was used for another request",
                       {{"resourceId", token}, {"resourceType", "clientToken"}});
    case token_verdict::retry:
      return ok((*rec)->status, json::parse((*rec)->response));
    case token_verdict::fresh:
      break;
  }
  return std::nullopt;
}

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
  const bool lambda = has("lambdaFunction");
  if (!lambda && (!has("inlineRecipe") || !body["inlineRecipe"].is_string()))
    return validation("inlineRecipe (a base64 blob) or lambdaFunction is required",
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
  auto request_hash = request_hash_of(body); // client_tokens.hpp
  if (auto answer = token_answer(token, request_hash, now_ms))
    return std::move(*answer);
  std::string recipe_text;
  json platforms = nullptr; // a lambdaFunction's componentPlatforms, with their names
  const char* source = lambda ? "lambdaFunction" : "inlineRecipe";
  if (lambda) {
    // The function package becomes a recipe, stored and served like an inline one.
    std::vector<recipe_error> errors;
    auto converted = convert_lambda(
      body["lambdaFunction"],
      lambda_settings{settings_.lambda_packages_dir, settings_.region, settings_.account_id},
      errors);
    if (!converted) {
      json fields = json::array();
      std::string message = "lambdaFunction cannot be converted:";
      for (auto& e : errors) {
        fields.push_back({{"name", e.field}, {"message", e.message}});
        if (fields.size() <= 5)
          message += " " + e.field + ": " + e.message + ";";
      }
      message.pop_back();
      return validation(message, std::move(fields));
    }
    recipe_text = std::move(converted->recipe);
    platforms = std::move(converted->platforms);
  } else if (!base64_decode(body["inlineRecipe"].get_ref<const std::string&>(), recipe_text)) {
    return validation("inlineRecipe is not valid base64",
                      json::array({{{"name", "inlineRecipe"}, {"message", "not base64"}}}));
  }
  std::vector<recipe_error> errors;
  auto r = parse_recipe(recipe_text, errors);
  if (!r) {
    json fields = json::array();
    std::string message = "the recipe is invalid:";
    for (auto& e : errors) {
      fields.push_back({{"name", source + e.field}, {"message", e.message}});
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
  v.platforms = platforms.is_null() ? r->platforms.dump() : platforms.dump();
  // A version with artifacts to fetch is REQUESTED; the fetch (off this thread) makes
  // it INITIATED, then DEPLOYABLE or FAILED. Without any it is deployable at once.
  // (What settle_version fetches: this core's manifest's.)
  static const auto platform = core_platform();
  bool fetches = !fetchable_artifacts(r->doc, platform).empty();
  v.state = fetches ? "REQUESTED" : "DEPLOYABLE";
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
      if (fetches && settings_.on_requested)
        settings_.on_requested(v.name, v.version);
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
  auto found = stored_version(store_, settings_, *a, arn);
  if (auto* answer = std::get_if<http_response>(&found))
    return std::move(*answer);
  auto* v = &std::get<component_version>(found);
  auto status = status_of(*v);
  if (auto art = store_.artifacts_of(v->name, v->version); art && *art)
    status["errors"] = json::parse((*art)->errors, nullptr, false);
  return ok(200, {{"arn", arn},
                  {"componentName", v->name},
                  {"componentVersion", v->version},
                  {"creationTimestamp", epoch_seconds(v->created_ms)},
                  {"publisher", v->publisher},
                  {"description", v->description},
                  {"status", status},
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
  auto found = stored_version(store_, settings_, *a, arn);
  if (auto* answer = std::get_if<http_response>(&found))
    return std::move(*answer);
  auto* v = &std::get<component_version>(found);
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
  std::string after;
  auto next = query_value(req, "nextToken");
  if (!next.empty() && !base64_decode(next, after))
    return validation("nextToken is not one this API gave",
                      json::array({{{"name", "nextToken"}, {"message", "invalid"}}}));
  if (scope == "PUBLIC") {
    // The AWS components Grove implements (public_components.hpp), by name.
    std::string last;
    for (const auto& p : public_catalog()) {
      if (std::string{p.name} <= after)
        continue;
      if (out["components"].size() == limit) {
        out["nextToken"] = base64_encode(last);
        break;
      }
      const auto& v = p.versions.front(); // the newest
      auto arn = public_arn(v.name);
      out["components"].push_back(
        {{"arn", arn},
         {"componentName", v.name},
         {"latestVersion",
          {{"arn", arn + ":versions:" + v.version},
           {"componentVersion", v.version},
           {"creationTimestamp", epoch_seconds(v.created_ms)},
           {"description", v.description},
           {"publisher", v.publisher},
           {"platforms", json::parse(v.platforms)}}}});
      last = v.name;
    }
    return ok(200, out);
  }
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
  } else if (a->region == settings_.region && a->account == public_account) {
    if (const auto* p = find_public(a->name))
      vs = p->versions; // newest first, as the store's
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
    out["componentVersions"].push_back(
      {{"componentName", vs[i].name},
       {"componentVersion", vs[i].version},
       {"arn", (a->account == public_account ? public_arn(vs[i].name)
                                             : component_arn(vs[i].name))
                 + ":versions:" + vs[i].version}});
  if (end < vs.size())
    out["nextToken"] = base64_encode(vs[end - 1].version);
  return ok(200, out);
}

http_response api::delete_component(const std::string& arn) {
  auto a = parse_arn(arn, true);
  if (!a)
    return bad_version_arn(arn);
  bool gone = false;
  if (a->region == settings_.region && a->account == public_account
      && find_public_version(a->name, a->version))
    return aws_error(403, "AccessDeniedException",
                     "Component version " + arn + " is AWS's public component: it cannot be "
                     "deleted (a version of the same name in this account's scope can)");
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

namespace {

/// The id of a deployment ARN, `arn:aws:greengrass:<region>:<account>:deployments:<id>`,
/// of this core's region and account; nullopt for any other ARN. `other` is set when it
/// is a deployment ARN of another region or account.
std::optional<std::string> deployment_arn_id(const std::string& arn, const api_settings& s,
                                             bool& other) {
  other = false;
  static constexpr std::string_view head = "arn:aws:greengrass:";
  if (!arn.starts_with(head))
    return std::nullopt;
  auto rest = std::string_view{arn}.substr(head.size());
  auto region_end = rest.find(':');
  if (region_end == std::string_view::npos)
    return std::nullopt;
  auto account_end = rest.find(':', region_end + 1);
  if (account_end == std::string_view::npos)
    return std::nullopt;
  auto tail = rest.substr(account_end + 1);
  static constexpr std::string_view kind = "deployments:";
  if (!tail.starts_with(kind) || tail.size() == kind.size())
    return std::nullopt;
  if (rest.substr(0, region_end) != s.region
      || rest.substr(region_end + 1, account_end - region_end - 1) != s.account_id) {
    other = true;
    return std::nullopt;
  }
  return std::string{tail.substr(kind.size())};
}

/// How TagResource changes a stored tag map (JSON object text): `add` merged, refused
/// (nullopt, `problem` says why) when the result breaks the limits.
std::function<std::optional<std::string>(const std::string&)>
merge_tags(json add, std::string& problem) {
  return [add = std::move(add), &problem](const std::string& old) -> std::optional<std::string> {
    auto merged = json::parse(old, nullptr, false);
    if (!merged.is_object())
      merged = json::object();
    for (auto it = add.begin(); it != add.end(); ++it)
      merged[it.key()] = *it;
    problem = tag_map_problem(merged);
    if (!problem.empty())
      return std::nullopt;
    return merged.dump();
  };
}

/// How UntagResource changes a stored tag map: `keys` removed (absent ones are no error).
std::function<std::optional<std::string>(const std::string&)>
drop_tags(std::vector<std::string> keys) {
  return [keys = std::move(keys)](const std::string& old) -> std::optional<std::string> {
    auto tags = json::parse(old, nullptr, false);
    if (!tags.is_object())
      tags = json::object();
    for (const auto& k : keys)
      tags.erase(k);
    return tags.dump();
  };
}

} // namespace

http_response api::tags(const std::string& op, const std::string& arn, const http_request& req) {
  // Component versions (what CreateComponentVersion tags) and deployments (what
  // CreateDeployment tags); core devices have none here.
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
    change = merge_tags(std::move(add), problem);
  } else if (op == "UntagResource") {
    std::vector<std::string> keys;
    for (auto& [k, v] : parse_query(req.raw_query()))
      if (k == "tagKeys")
        keys.push_back(v);
    if (keys.empty())
      return validation("tagKeys must name at least one tag key",
                        json::array({{{"name", "tagKeys"}, {"message", "at least one key"}}}));
    change = drop_tags(std::move(keys));
  }
  bool other_core = false;
  if (auto id = deployment_arn_id(arn, settings_, other_core)) {
    auto gone = [&] {
      return not_found("Deployment " + arn.substr(0, 512) + " not found", id->substr(0, 128),
                       "Deployment");
    };
    if (op == "ListTagsForResource") {
      auto d = store_.deployment(*id);
      if (!d)
        return internal(d.error());
      if (!*d || (*d)->deleted_ms)
        return gone();
      auto tags = json::parse((*d)->tags, nullptr, false);
      return ok(200, {{"tags", tags.is_object() ? tags : json::object()}});
    }
    auto r = store_.modify_deployment_tags(*id, change);
    if (!r)
      return internal(r.error());
    switch (*r) {
      case tag_result::not_found:
        return gone();
      case tag_result::refused:
        return validation(problem, json::array({{{"name", "tags"}, {"message", problem}}}));
      case tag_result::changed:
        break;
    }
    return ok(200, json::object());
  }
  if (other_core)
    return not_found("Resource " + arn.substr(0, 512) + " not found", arn.substr(0, 512),
                     "Deployment");
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
    auto found = stored_version(store_, settings_, *a, arn);
    if (auto* answer = std::get_if<http_response>(&found))
      return std::move(*answer);
    return ok(200, {{"tags", json::parse(std::get<component_version>(found).tags)}});
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
  // The roots: each candidate with its requirements (requirer -> range), parsed once.
  std::map<std::string, std::vector<requirement>> roots;
  std::vector<std::string> asked; // the candidates' order, for the answer
  for (size_t i = 0; i < candidates.size(); ++i) {
    const auto& c = candidates[i];
    auto field = "componentCandidates/" + std::to_string(i);
    if (!c.is_object() || !c.contains("componentName") || !c["componentName"].is_string())
      return validation(field + ": componentName is required",
                        json::array({{{"name", field + "/componentName"}, {"message", "required"}}}));
    auto name = c["componentName"].get<std::string>();
    auto vr = c.value("versionRequirements", json::object());
    if (!vr.is_object())
      return validation(field + ": versionRequirements must be a map",
                        json::array({{{"name", field + "/versionRequirements"}, {"message", "a map"}}}));
    auto [root, fresh] = roots.try_emplace(name);
    if (fresh)
      asked.push_back(name);
    for (auto it = vr.begin(); it != vr.end(); ++it) {
      std::string why;
      auto r = it->is_string() ? parse_range(it->get_ref<const std::string&>(), &why) : std::nullopt;
      if (!r)
        return validation(field + ": '" + it.key() + "' asks for '"
                             + (it->is_string() ? it->get<std::string>() : it->dump())
                             + "', not a version range: " + why,
                           json::array({{{"name", field + "/versionRequirements/" + it.key()},
                                         {"message", "not a version range: " + why}}}));
      root->second.push_back(requirement{it.key(), it->get<std::string>(), std::move(*r)});
    }
  }
  platform_attributes platform;
  for (auto it = attributes.begin(); it != attributes.end(); ++it)
    platform[it.key()] = it->is_string() ? it->get<std::string>() : it->dump();
  // The catalog: each component's stored versions, read once when the search first
  // reaches it (the lists must not move while it runs: std::map nodes do not).
  std::map<std::string, std::pair<std::vector<component_version>, std::vector<available_version>>> seen;
  std::set<std::string> undeployable; // stored, but no version's artifacts are all in yet
  std::set<std::string> from_catalog; // name@version picked from the public catalog
  catalog_lookup catalog = [&](const std::string& name)
    -> caf::expected<const std::vector<available_version>*> {
    auto [it, fresh] = seen.try_emplace(name);
    if (fresh) {
      auto vs = store_.versions(name); // newest first
      if (!vs)
        return std::move(vs.error());
      // AWS's public component of that name beside the account's own versions; a version
      // of the account's own with the same number is the one used (README, "AWS public
      // components").
      if (const auto* p = find_public(name))
        for (const auto& pub : p->versions) {
          if (std::any_of(vs->begin(), vs->end(),
                          [&](const auto& v) { return v.version == pub.version; }))
            continue;
          from_catalog.insert(name + "@" + pub.version);
          auto pv = parse_semver(pub.version);
          auto at = std::find_if(vs->begin(), vs->end(), [&](const auto& v) {
            return compare(parse_semver(v.version).value_or(semver{}), *pv) < 0;
          });
          vs->insert(at, pub); // newest first
        }
      // Only versions whose artifacts are all in (DEPLOYABLE) can be picked.
      for (auto& v : *vs)
        if (v.state == "DEPLOYABLE")
          it->second.first.push_back(std::move(v));
      if (it->second.first.empty() && !vs->empty())
        undeployable.insert(name);
      for (const auto& v : it->second.first)
        it->second.second.push_back(describe_version(json::parse(v.recipe, nullptr, false),
                                                     v.version, v.vendor_guidance == "DELETED"));
    }
    return &it->second.second;
  };
  auto got = resolve(platform, roots, catalog);
  if (auto* e = std::get_if<resolve_error>(&got)) {
    switch (e->kind) {
      case resolve_failure::catalog:
        return internal(e->cause);
      case resolve_failure::not_found:
        if (auto why = public_refusal(e->component))
          return validation(*why, json::array({{{"name", "componentCandidates"},
                                                {"message", *why}}}));
        if (undeployable.contains(e->component))
          return aws_error(409, "ConflictException",
                           "No version of " + e->component + " is DEPLOYABLE yet (its "
                             "artifacts are not all fetched and checked)",
                           {{"resourceId", component_arn(e->component)},
                            {"resourceType", "Component"}});
        return not_found(e->message, component_arn(e->component), "Component");
      case resolve_failure::no_platform:
        return not_found(e->message, component_arn(e->component), "Component");
      default: {
        // A pinned version of an AWS component outside the catalog: say which it serves.
        auto message = e->message;
        if (const auto* p = find_public(e->component); p && e->kind == resolve_failure::conflict)
          message += " (" + e->component + " is AWS's public component: this core serves "
                     + p->versions.back().version + " to " + p->versions.front().version
                     + ", README \"AWS public components\")";
        return aws_error(409, "ConflictException", message,
                         {{"resourceId", component_arn(e->component)}, {"resourceType", "Component"}});
      }
    }
  }
  auto& picks = std::get<resolution>(got);
  // The candidates in the order asked, then the dependencies they brought (dependencies
  // first), each once.
  std::vector<const resolved_component*> listed;
  for (const auto& name : asked)
    for (const auto& p : picks)
      if (p.name == name)
        listed.push_back(&p);
  for (const auto& p : picks)
    if (!p.root)
      listed.push_back(&p);
  json out = {{"resolvedComponentVersions", json::array()}};
  for (const auto* p : listed) {
    const auto& all = seen.at(p->name);
    const auto& pick = all.first[static_cast<size_t>(p->version - all.second.data())];
    json item = {{"arn", from_catalog.contains(pick.name + "@" + pick.version)
                           ? public_arn(pick.name) + ":versions:" + pick.version
                           : version_arn(pick.name, pick.version)},
                 {"componentName", pick.name},
                 {"componentVersion", pick.version},
                 {"recipe", base64_encode(recipe_json(json::parse(pick.recipe)))},
                 {"vendorGuidance", pick.vendor_guidance}};
    if (!pick.vendor_guidance_message.empty())
      item["message"] = pick.vendor_guidance_message;
    out["resolvedComponentVersions"].push_back(std::move(item));
  }
  return ok(200, out);
}

} // namespace grove::deployment

namespace grove::deployment {

http_response api::operator_call(const std::string& operation, const std::string& arn,
                                 const std::string& format, const std::string& guidance,
                                 const std::string& message, const std::string& body,
                                 const std::string& next_token, int max_results) {
  http_request req;
  auto wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
  // A List operation's page: the API's own maxResults and nextToken checks apply.
  auto paged = [&](std::string query) {
    query += "maxResults=" + std::to_string(max_results != 0 ? max_results : 100);
    if (!next_token.empty())
      query += "&nextToken=" + uri_encode(next_token, false);
    return query;
  };
  if (operation == "CreateDeployment") {
    auto doc = json::parse(body.empty() ? std::string{"{}"} : body, nullptr, false);
    if (doc.is_object() && !doc.contains("targetArn") && !settings_.thing_name.empty())
      doc["targetArn"] = thing_arn();
    req.body = doc.is_discarded() ? body : doc.dump();
    return create_deployment(req, wall_ms);
  }
  if (operation == "ListDeployments") {
    req.target = paged("/?historyFilter=ALL&");
    return list_deployments(req);
  }
  if (operation == "GetDeployment")
    return with_execution(get_deployment(arn), arn);
  if (operation == "CancelDeployment")
    return cancel_deployment(arn, wall_ms);
  if (operation == "DeleteDeployment")
    return delete_deployment(arn, wall_ms);
  if (operation == "ListInstalledComponents") {
    req.target = paged("/?");
    return list_installed_components(settings_.thing_name, req);
  }
  if (operation == "ListEffectiveDeployments") {
    req.target = paged("/?");
    return list_effective_deployments(settings_.thing_name, req);
  }
  if (!format.empty())
    req.target = "/?recipeOutputFormat=" + uri_encode(format, false);
  if (operation == "ListComponents") {
    req.target = paged("/?");
    return list_components(req);
  }
  if (operation == "ListComponentVersions") {
    req.target = paged("/?");
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

namespace grove::deployment {

namespace {

// The names a recipe's artifact Uri answers to in GetComponentVersionArtifact: the Uri
// itself, the part after the scheme (AWS's documented form: `greengrass:SomeArtifact.zip`
// → `SomeArtifact.zip`; `s3://b/k` → `//b/k`), that without `//`, and its file name.
bool artifact_named(const std::string& uri, const std::string& name) {
  if (uri == name)
    return true;
  auto colon = uri.find(':');
  if (colon == std::string::npos)
    return false;
  auto ssp = uri.substr(colon + 1);
  if (ssp == name)
    return true;
  if (ssp.starts_with("//") && ssp.substr(2) == name)
    return true;
  return uri.substr(uri.rfind('/') + 1) == name;
}

// An artifact name that tries to leave its place: a `.` or `..` segment, a backslash, a
// NUL or another control character.
bool traverses(const std::string& name) {
  if (std::any_of(name.begin(), name.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == '\\'; }))
    return true;
  std::string_view rest{name};
  while (!rest.empty()) {
    auto slash = rest.find('/');
    auto seg = rest.substr(0, slash);
    if (seg == "." || seg == "..")
      return true;
    rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
  }
  return false;
}

} // namespace

http_response api::get_component_version_artifact(const std::string& arn,
                                                   const std::string& artifact_name,
                                                   const http_request& req, int64_t now_ms) {
  // x-amz-iot-endpoint-type (fips | standard) is accepted and has no meaning here: the
  // URL is this server's own.
  auto a = parse_arn(arn, true);
  if (!a)
    return bad_version_arn(arn);
  if (artifact_name.empty() || artifact_name.size() > 1024 || traverses(artifact_name))
    return validation("artifactName '" + artifact_name.substr(0, 256)
                        + "' is not an artifact name (a '.' or '..' segment, a backslash or "
                          "a control character)",
                      json::array({{{"name", "artifactName"}, {"message", "no path traversal"}}}));
  auto found = stored_version(store_, settings_, *a, arn);
  if (auto* answer = std::get_if<http_response>(&found))
    return std::move(*answer);
  auto* v = &std::get<component_version>(found);
  // The recipe's artifact of that name (the first manifest's wins).
  std::string uri;
  auto recipe = json::parse(v->recipe);
  if (auto ms = recipe.find("Manifests"); ms != recipe.end() && ms->is_array())
    for (const auto& m : *ms)
      if (auto arts = m.find("Artifacts"); uri.empty() && arts != m.end() && arts->is_array())
        for (const auto& art : *arts)
          if (art.contains("Uri") && art["Uri"].is_string()
              && artifact_named(art["Uri"].get<std::string>(), artifact_name)) {
            uri = art["Uri"].get<std::string>();
            break;
          }
  auto missing = [&](const std::string& why) {
    return not_found("Artifact " + artifact_name.substr(0, 256) + " of " + arn + " " + why, arn,
                     "Artifact");
  };
  if (uri.empty())
    return missing("not found: the recipe has no artifact of that name");
  auto status = store_.artifacts_of(a->name, a->version);
  if (!status)
    return internal(status.error());
  auto stored = json::parse(*status ? (*status)->artifacts : "{}", nullptr, false);
  if (!stored.is_object() || !stored.contains(uri)) {
    if (v->state == "FAILED")
      return missing("could not be stored (componentState FAILED): "
                     + json::parse((*status)->errors, nullptr, false).value(uri, std::string{"-"}));
    if (v->state == "REQUESTED" || v->state == "INITIATED")
      return missing("is not fetched yet (componentState " + v->state + ")");
    return missing("is not kept by Grove (only s3://, https:// and file:// artifacts of "
                   "the manifest for this core's platform are)");
  }
  if (settings_.url_key.empty())
    return aws_error(500, "InternalServerException", "pre-signed URLs are not configured");
  auto host = std::string{req.header("host")};
  if (host.empty())
    host = "localhost";
  auto expires = now_ms / 1000 + settings_.url_ttl.count();
  auto file_name = uri.substr(uri.rfind('/') + 1);
  auto url = settings_.url_scheme + "://" + host
             + presign_artifact(settings_.url_key, stored[uri].get<std::string>(), file_name,
                                expires);
  return ok(200, {{"preSignedUrl", url}});
}

http_response api::presigned_artifact(const http_request& req, int64_t now_ms) {
  // The refusals S3 gives a pre-signed URL: 403 AccessDenied.
  std::string sha;
  auto outcome = settings_.url_key.empty()
                   ? presign_check::forged
                   : check_presigned(settings_.url_key, req.raw_path(), req.raw_query(),
                                     now_ms / 1000, sha);
  switch (outcome) {
    case presign_check::malformed:
      return aws_error(403, "AccessDeniedException",
                       "not a pre-signed artifact URL (/grove/artifacts/<sha256>/<name>"
                       "?X-Grove-Expires=..&X-Grove-Signature=..)");
    case presign_check::forged:
      return aws_error(403, "AccessDeniedException",
                       "The request signature we calculated does not match the signature "
                       "you provided.");
    case presign_check::expired:
      return aws_error(403, "AccessDeniedException", "Request has expired");
    case presign_check::valid:
      break;
  }
  http_response r;
  r.file = settings_.artifact_files / sha;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(r.file, ec))
    return not_found("the artifact is no longer stored", sha, "Artifact");
  r.content_type = "application/octet-stream";
  return r;
}

http_response api::get_connectivity_info(const std::string& thing) {
  if (!valid_thing_name(thing))
    return validation("thingName must be 1 to 128 of [a-zA-Z0-9:_-]",
                      json::array({{{"name", "thingName"}, {"message", "1 to 128 of [a-zA-Z0-9:_-]"}}}));
  auto rec = store_.connectivity(thing);
  if (!rec)
    return internal(rec.error());
  json out = {{"ConnectivityInfo", *rec ? (*rec)->info : json::array()}};
  if (!*rec)
    out["Message"] = "No connectivity information has been set for " + thing;
  return ok(200, out);
}

http_response api::update_connectivity_info(const std::string& thing, const http_request& req,
                                            int64_t now_ms) {
  if (!valid_thing_name(thing))
    return validation("thingName must be 1 to 128 of [a-zA-Z0-9:_-]",
                      json::array({{{"name", "thingName"}, {"message", "1 to 128 of [a-zA-Z0-9:_-]"}}}));
  auto body = json::parse(req.body.empty() ? std::string_view{"{}"} : std::string_view{req.body},
                          nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return aws_error(400, "SerializationException", "the request body is not a JSON object");
  if (!body.contains("ConnectivityInfo"))
    return validation("ConnectivityInfo is required",
                      json::array({{{"name", "ConnectivityInfo"}, {"message", "required"}}}));
  std::vector<connectivity_problem> problems;
  auto info = check_connectivity_info(body["ConnectivityInfo"], problems);
  if (!info) {
    json fields = json::array();
    std::string message = "ConnectivityInfo is invalid:";
    for (const auto& p : problems) {
      fields.push_back({{"name", p.field}, {"message", p.message}});
      if (fields.size() <= 5)
        message += " " + p.field + ": " + p.message + ";";
    }
    message.pop_back();
    return validation(message, std::move(fields));
  }
  auto version = store_.set_connectivity(thing, *info, now_ms);
  if (!version)
    return internal(version.error());
  return ok(200, {{"Version", std::to_string(*version)},
                  {"Message", "Connectivity information of " + thing + " updated"}});
}

} // namespace grove::deployment

// Deployments and core devices (issue 15): CreateDeployment journals the request in the
// component store and resolves the set this core then keeps; the plugin applies it.
namespace grove::deployment {

namespace {

// "arn:aws:iot:<region>:<account>:thing/<name>" or ".../thinggroup/<name>": (kind, name).
std::optional<std::pair<std::string, std::string>>
parse_target(const std::string& arn, const std::string& region, const std::string& account,
             bool& elsewhere) {
  elsewhere = false;
  auto f = arn_fields_of(arn);
  if (!f)
    return std::nullopt;
  const auto& rest = f->resource;
  auto slash = rest.find('/');
  if (f->service != "iot" || slash == std::string::npos)
    return std::nullopt;
  auto kind = rest.substr(0, slash);
  auto name = rest.substr(slash + 1);
  if ((kind != "thing" && kind != "thinggroup") || name.empty() || name.size() > 128
      || !std::all_of(name.begin(), name.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == ':' || c == '_' || c == '-';
         }))
    return std::nullopt;
  elsewhere = f->region != region || f->account != account;
  return std::make_pair(kind, name);
}

bool valid_token(const std::string& t) {
  return !t.empty() && t.size() <= 64 && std::all_of(t.begin(), t.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-';
  });
}

http_response field_error(const std::string& field, const std::string& what) {
  return validation(field + ": " + what, json::array({{{"name", field}, {"message", what}}}));
}

// Checks CreateDeployment's `components` (name → ComponentDeploymentSpecification):
// nothing when good, else the ValidationException naming the field.
std::optional<http_response> check_components(const json& components) {
  if (!components.is_object())
    return field_error("components", "a map of component name to specification");
  for (auto it = components.begin(); it != components.end(); ++it) {
    auto f = "components/" + it.key();
    const auto& c = *it;
    if (it.key().empty() || it.key().size() > 128)
      return field_error(f, "component names are 1 to 128 characters");
    if (!c.is_object())
      return field_error(f, "a ComponentDeploymentSpecification object");
    if (!c.contains("componentVersion") || !c["componentVersion"].is_string())
      return field_error(f + "/componentVersion", "required");
    if (!parse_semver(c["componentVersion"].get<std::string>()))
      return field_error(f + "/componentVersion",
                         "'" + c["componentVersion"].get<std::string>().substr(0, 64)
                           + "' is not a semantic version");
    for (auto k = c.begin(); k != c.end(); ++k)
      if (k.key() != "componentVersion" && k.key() != "configurationUpdate"
          && k.key() != "runWith")
        return field_error(f + "/" + k.key(), "not a member of ComponentDeploymentSpecification");
    if (auto u = c.find("configurationUpdate"); u != c.end() && !u->is_null()) {
      if (!u->is_object())
        return field_error(f + "/configurationUpdate", "an object with merge and reset");
      if (auto m = u->find("merge"); m != u->end() && !m->is_null()) {
        if (!m->is_string() || m->get_ref<const std::string&>().size() > 10240)
          return field_error(f + "/configurationUpdate/merge",
                             "a JSON document as a string of at most 10240 characters");
        auto doc = json::parse(m->get_ref<const std::string&>(), nullptr, false);
        if (doc.is_discarded() || !doc.is_object())
          return field_error(f + "/configurationUpdate/merge", "not a JSON object");
      }
      if (auto r = u->find("reset"); r != u->end() && !r->is_null()) {
        if (!r->is_array() || r->size() > 100)
          return field_error(f + "/configurationUpdate/reset", "a list of at most 100 JSON pointers");
        for (const auto& p : *r) {
          bool good = p.is_string() && p.get_ref<const std::string&>().size() <= 256;
          if (good) {
            try {
              json::json_pointer ptr{p.get<std::string>()};
            } catch (const json::exception&) {
              good = false;
            }
          }
          if (!good)
            return field_error(f + "/configurationUpdate/reset",
                               "'" + (p.is_string() ? p.get<std::string>().substr(0, 64) : p.dump())
                                 + "' is not a JSON pointer");
        }
      }
    }
    if (auto w = c.find("runWith"); w != c.end() && !w->is_null()) {
      if (!w->is_object())
        return field_error(f + "/runWith", "an object");
      if (w->contains("windowsUser"))
        return field_error(f + "/runWith/windowsUser", "this core runs Linux (posixUser)");
      if (auto u = w->find("posixUser"); u != w->end()) {
        if (!u->is_string() || u->get_ref<const std::string&>().empty()
            || u->get_ref<const std::string&>().size() > 64
            || std::count(u->get_ref<const std::string&>().begin(),
                          u->get_ref<const std::string&>().end(), ':')
                 > 1)
          return field_error(f + "/runWith/posixUser", "user or user:group");
      }
      if (auto l = w->find("systemResourceLimits"); l != w->end()) {
        if (!l->is_object())
          return field_error(f + "/runWith/systemResourceLimits", "an object (memory, cpus)");
        if (l->contains("memory") && (!(*l)["memory"].is_number_integer() || (*l)["memory"].get<int64_t>() < 0))
          return field_error(f + "/runWith/systemResourceLimits/memory", "kilobytes, 0 or more");
        if (l->contains("cpus") && (!(*l)["cpus"].is_number() || (*l)["cpus"].get<double>() < 0))
          return field_error(f + "/runWith/systemResourceLimits/cpus", "a number, 0 or more");
      }
    }
  }
  return std::nullopt;
}

// deploymentPolicies with AWS's defaults filled in, or the answer.
std::variant<json, http_response> deployment_policies(const json& given) {
  json p = {{"failureHandlingPolicy", "ROLLBACK"},
            {"componentUpdatePolicy", {{"timeoutInSeconds", 60}, {"action", "NOTIFY_COMPONENTS"}}},
            {"configurationValidationPolicy", {{"timeoutInSeconds", 30}}}};
  if (given.is_null())
    return p;
  if (!given.is_object())
    return field_error("deploymentPolicies", "an object");
  if (auto f = given.find("failureHandlingPolicy"); f != given.end()) {
    if (!f->is_string() || (*f != "ROLLBACK" && *f != "DO_NOTHING"))
      return field_error("deploymentPolicies/failureHandlingPolicy", "ROLLBACK | DO_NOTHING");
    p["failureHandlingPolicy"] = *f;
  }
  auto seconds = [](const json& v) {
    return v.is_number_integer() && v.get<int64_t>() >= 1 && v.get<int64_t>() <= 86400;
  };
  if (auto c = given.find("componentUpdatePolicy"); c != given.end()) {
    if (!c->is_object())
      return field_error("deploymentPolicies/componentUpdatePolicy", "an object");
    if (auto t = c->find("timeoutInSeconds"); t != c->end()) {
      if (!seconds(*t))
        return field_error("deploymentPolicies/componentUpdatePolicy/timeoutInSeconds",
                           "1 to 86400");
      p["componentUpdatePolicy"]["timeoutInSeconds"] = *t;
    }
    if (auto a = c->find("action"); a != c->end()) {
      if (!a->is_string() || (*a != "NOTIFY_COMPONENTS" && *a != "SKIP_NOTIFY_COMPONENTS"))
        return field_error("deploymentPolicies/componentUpdatePolicy/action",
                           "NOTIFY_COMPONENTS | SKIP_NOTIFY_COMPONENTS");
      p["componentUpdatePolicy"]["action"] = *a;
    }
  }
  if (auto c = given.find("configurationValidationPolicy"); c != given.end()) {
    if (!c->is_object())
      return field_error("deploymentPolicies/configurationValidationPolicy", "an object");
    if (auto t = c->find("timeoutInSeconds"); t != c->end()) {
      if (!seconds(*t))
        return field_error("deploymentPolicies/configurationValidationPolicy/timeoutInSeconds",
                           "1 to 86400");
      p["configurationValidationPolicy"]["timeoutInSeconds"] = *t;
    }
  }
  return p;
}

// The deployments the API shows: all but those DeleteDeployment deleted (the core keeps
// them, see component_store::delete_deployment).
std::vector<deployment_record> shown(std::vector<deployment_record> all) {
  std::erase_if(all, [](const deployment_record& d) { return d.deleted_ms != 0; });
  return all;
}

// The Deployment shape of ListDeployments.
json deployment_summary(const deployment_record& d, bool latest) {
  auto req = json::parse(d.request, nullptr, false);
  json out = {{"targetArn", d.target_arn},
              {"revisionId", std::to_string(d.revision)},
              {"deploymentId", d.id},
              {"deploymentName", d.name},
              {"creationTimestamp", epoch_seconds(d.created_ms)},
              {"deploymentStatus", d.status},
              {"isLatestForTarget", latest}};
  if (req.is_object() && req.contains("parentTargetArn"))
    out["parentTargetArn"] = req["parentTargetArn"];
  return out;
}

http_response deployment_not_found(const std::string& id) {
  return not_found("Deployment " + id.substr(0, 128) + " not found", id.substr(0, 128),
                   "Deployment");
}

// Whether `d` is the newest deployment of its target among `all` (newest first).
bool latest_for_target(const deployment_record& d, const std::vector<deployment_record>& all) {
  for (const auto& o : all)
    if (o.target_arn == d.target_arn)
      return o.id == d.id;
  return false;
}

} // namespace

std::string api::thing_arn() const {
  return "arn:aws:iot:" + settings_.region + ":" + settings_.account_id + ":thing/"
         + settings_.thing_name;
}

bool api::targets_this_core(const std::string& target_arn) const {
  if (settings_.thing_name.empty())
    return false;
  if (target_arn == thing_arn())
    return true;
  for (const auto& g : settings_.thing_groups)
    if (target_arn == "arn:aws:iot:" + settings_.region + ":" + settings_.account_id
                        + ":thinggroup/" + g)
      return true;
  return false;
}

http_response api::resolve_deployment(const deployment_record& d) {
  // The roots: `d`'s components, and those the core keeps for every other target of this
  // core (the thing and each of its groups; effective_by_target: a target whose newest
  // deployment failed or never ran keeps its last applied one's), each requirement named
  // by its target as Greengrass names a group's. Deleted ones count: DeleteDeployment
  // does not change what the core runs.
  auto all = store_.deployments();
  if (!all)
    return internal(all.error());
  std::map<std::string, const deployment_record*> current; // target → deployment
  current[d.target_arn] = &d;
  for (const auto& [target, o] : effective_by_target(*all))
    if (!current.contains(target) && targets_this_core(target))
      current[target] = o;
  std::map<std::string, json> ranges; // component → requirer → version
  for (const auto& [target, dep] : current) {
    auto req = json::parse(dep->request, nullptr, false);
    if (!req.is_object() || !req.contains("components"))
      continue;
    auto requirer = target.substr(target.rfind(':') + 1);
    for (auto it = req["components"].begin(); it != req["components"].end(); ++it)
      ranges[it.key()][requirer] = (*it)["componentVersion"];
  }
  json body = {{"platform", {{"attributes", settings_.platform}}},
               {"componentCandidates", json::array()}};
  for (auto& [name, vr] : ranges)
    body["componentCandidates"].push_back({{"componentName", name}, {"versionRequirements", vr}});
  if (body["componentCandidates"].empty())
    return ok(200, {{"resolvedComponentVersions", json::array()}});
  http_request r;
  r.method = "POST";
  r.body = body.dump();
  return resolve_component_candidates(r);
}

http_response api::create_deployment(const http_request& req, int64_t now_ms) {
  auto body = json::parse(req.body.empty() ? std::string_view{"{}"} : std::string_view{req.body},
                          nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return aws_error(400, "SerializationException", "the request body is not a JSON object");
  auto has = [&](const char* k) { return body.contains(k) && !body[k].is_null(); };
  if (!has("targetArn") || !body["targetArn"].is_string())
    return field_error("targetArn", "required");
  auto target = body["targetArn"].get<std::string>();
  bool elsewhere = false;
  auto parsed = parse_target(target, settings_.region, settings_.account_id, elsewhere);
  if (!parsed)
    return field_error("targetArn", "'" + target.substr(0, 256)
                                      + "' is not a thing or thing group ARN");
  if (elsewhere || !targets_this_core(target))
    return not_found(settings_.thing_name.empty()
                       ? "This core has no thing name (the deployment plugin's thing_name), so "
                         "no deployment can target it"
                       : "Target " + target.substr(0, 256) + " is not this core's thing ("
                           + thing_arn() + ") or one of its thing groups (thing_groups)",
                     target.substr(0, 256), parsed->first == "thing" ? "Thing" : "ThingGroup");
  std::string token;
  if (has("clientToken")) {
    if (!body["clientToken"].is_string() || !valid_token(body["clientToken"].get<std::string>()))
      return field_error("clientToken", "1 to 64 of [a-zA-Z0-9-]");
    token = body["clientToken"].get<std::string>();
  }
  std::string name = parsed->second;
  if (has("deploymentName")) {
    if (!body["deploymentName"].is_string() || body["deploymentName"].get<std::string>().empty()
        || body["deploymentName"].get<std::string>().size() > 256)
      return field_error("deploymentName", "1 to 256 characters");
    name = body["deploymentName"].get<std::string>();
  }
  json components = has("components") ? body["components"] : json::object();
  if (auto bad = check_components(components))
    return *bad;
  // Null members are absent ones (as botocore never sends them): the journal keeps
  // only what was set, so whoever reads it back finds objects where it expects them.
  for (auto& c : components)
    for (auto it = c.begin(); it != c.end();)
      it = it->is_null() ? c.erase(it) : std::next(it);
  auto policies = deployment_policies(has("deploymentPolicies") ? body["deploymentPolicies"]
                                                                 : json{});
  if (auto* bad = std::get_if<http_response>(&policies))
    return *bad;
  json tags = json::object();
  if (has("tags")) {
    tags = body["tags"];
    if (auto problem = tag_map_problem(tags); !problem.empty())
      return field_error("tags", problem);
  }
  json stored = {{"components", components},
                 {"deploymentPolicies", std::get<json>(policies)},
                 {"tags", tags}};
  if (has("iotJobConfiguration")) {
    if (!body["iotJobConfiguration"].is_object())
      return field_error("iotJobConfiguration", "an object");
    stored["iotJobConfiguration"] = body["iotJobConfiguration"];
  }
  if (has("parentTargetArn")) {
    bool other = false;
    auto p = body["parentTargetArn"].is_string()
               ? parse_target(body["parentTargetArn"].get<std::string>(), settings_.region,
                              settings_.account_id, other)
               : std::nullopt;
    if (!p || p->first != "thinggroup")
      return field_error("parentTargetArn", "a thing group ARN");
    stored["parentTargetArn"] = body["parentTargetArn"];
  }
  auto request_hash = request_hash_of(body); // client_tokens.hpp
  if (auto answer = token_answer(token, request_hash, now_ms))
    return std::move(*answer);
  deployment_record d;
  d.id = new_uuid();
  d.target_arn = target;
  d.name = name;
  d.request = stored.dump();
  d.tags = tags.dump();
  d.created_ms = d.modified_ms = now_ms;
  json answer = {{"deploymentId", d.id}};
  token_record first{request_hash, 201, answer.dump()};
  token_record existing;
  auto put = store_.put_deployment(d, token, first, now_ms + settings_.token_ttl.count() * 1000,
                                   existing);
  if (!put)
    return internal(put.error());
  if (*put == put_result::token_taken) {
    if (existing.request_hash != request_hash)
      return aws_error(409, "ConflictException",
                       "clientToken '" + token + "' was used for another request",
                       {{"resourceId", token}, {"resourceType", "clientToken"}});
    return ok(existing.status, json::parse(existing.response));
  }
  // The whole set this core keeps with it: a missing, DELETED or clashing version fails
  // the deployment here, before anything on the core changes.
  auto resolved = resolve_deployment(d);
  if (resolved.status != 200) {
    auto err = json::parse(resolved.body, nullptr, false);
    auto reason = err.is_object() ? err.value("message", resolved.body) : resolved.body;
    if (auto set = store_.set_deployment_state(d.id, {"ACTIVE"}, "FAILED", "FAILED",
                                               clip_reason("resolution: " + reason), now_ms);
        !set)
      return internal(set.error());
  } else if (settings_.on_deployment) {
    settings_.on_deployment(d.id, json::parse(resolved.body));
  }
  return ok(201, answer);
}

http_response api::get_deployment(const std::string& id) {
  auto d = store_.deployment(id);
  if (!d)
    return internal(d.error());
  if (!*d || (*d)->deleted_ms)
    return deployment_not_found(id);
  auto all = store_.deployments();
  if (!all)
    return internal(all.error());
  auto out = deployment_summary(**d, latest_for_target(**d, shown(std::move(*all))));
  auto req = json::parse((*d)->request, nullptr, false);
  for (const char* k : {"components", "deploymentPolicies", "iotJobConfiguration"})
    if (req.is_object() && req.contains(k))
      out[k] = req[k];
  // The ARN's tags as they are now (TagResource changes them, the request keeps CreateDeployment's).
  out["tags"] = json::parse((*d)->tags, nullptr, false);
  if (!out["tags"].is_object())
    out["tags"] = json::object();
  return ok(200, out);
}

http_response api::with_execution(http_response r, const std::string& id) {
  if (r.status != 200)
    return r;
  auto d = store_.deployment(id);
  auto out = json::parse(r.body, nullptr, false);
  if (!d || !*d || !out.is_object() || !targets_this_core((*d)->target_arn))
    return r;
  out["coreDeviceExecutionStatus"] = (*d)->execution;
  if (!(*d)->reason.empty())
    out["reason"] = std::string{utf8_prefix((*d)->reason, max_reason_bytes)};
  r.body = out.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

http_response api::list_deployments(const http_request& req) {
  auto filter = query_value(req, "historyFilter");
  if (filter.empty())
    filter = "LATEST_ONLY"; // AWS's default
  if (filter != "ALL" && filter != "LATEST_ONLY")
    return field_error("historyFilter", "ALL | LATEST_ONLY");
  auto target = query_value(req, "targetArn");
  auto parent = query_value(req, "parentTargetArn");
  size_t limit, start;
  http_response err;
  if (!max_results(req, limit, err) || !page_start(req, start, err))
    return err;
  auto got = store_.deployments();
  if (!got)
    return internal(got.error());
  auto all = shown(std::move(*got));
  json items = json::array();
  for (const auto& d : all) {
    bool latest = latest_for_target(d, all);
    if (filter == "LATEST_ONLY" && !latest)
      continue;
    if (!target.empty() && d.target_arn != target)
      continue;
    auto summary = deployment_summary(d, latest);
    if (!parent.empty() && summary.value("parentTargetArn", "") != parent)
      continue;
    items.push_back(std::move(summary));
  }
  json out = json::object();
  page(out, "deployments", items, start, limit);
  return ok(200, out);
}

http_response api::cancel_deployment(const std::string& id, int64_t now_ms) {
  auto d = store_.deployment(id);
  if (!d)
    return internal(d.error());
  if (!*d || (*d)->deleted_ms)
    return deployment_not_found(id);
  // Its rollback journal stays: a run under way goes on to its end (a cancel changes
  // nothing on a core that has the deployment, as Greengrass says), and a run that
  // kill -9 cut short is decided at the next start (README, "Rollback journal").
  auto set = store_.set_deployment_state(id, {"ACTIVE"}, "CANCELED", "CANCELED",
                                         "canceled by CancelDeployment", now_ms, true);
  if (!set)
    return internal(set.error());
  if (!*set)
    return aws_error(409, "ConflictException",
                     "Deployment " + id + " is " + (*d)->status + ", not ACTIVE: only an active "
                       "deployment can be canceled",
                     {{"resourceId", id}, {"resourceType", "Deployment"}});
  return ok(200, {{"message", "SUCCESS"}});
}

http_response api::delete_deployment(const std::string& id, int64_t now_ms) {
  // Hidden from the API, kept for the core: what it runs does not change, and a later
  // deployment that fails rolls back to the set this one made.
  auto done = store_.delete_deployment(id, now_ms);
  if (!done)
    return internal(done.error());
  switch (*done) {
    case delete_result::not_found:
      return deployment_not_found(id);
    case delete_result::active:
      return aws_error(409, "ConflictException",
                       "Deployment " + id + " is ACTIVE: cancel it (CancelDeployment) before "
                         "deleting it",
                       {{"resourceId", id}, {"resourceType", "Deployment"}});
    case delete_result::deleted:
      break;
  }
  http_response r;
  r.status = 204;
  return r;
}

namespace {

http_response core_not_found(const std::string& thing) {
  return not_found("Core device " + thing.substr(0, 128) + " not found", thing.substr(0, 128),
                   "CoreDevice");
}

} // namespace

http_response api::list_effective_deployments(const std::string& thing, const http_request& req) {
  if (settings_.thing_name.empty() || thing != settings_.thing_name)
    return core_not_found(thing);
  size_t limit, start;
  http_response err;
  if (!max_results(req, limit, err) || !page_start(req, start, err))
    return err;
  auto all = store_.deployments();
  if (!all)
    return internal(all.error());
  json items = json::array();
  for (const auto& d : *all) {
    if (!targets_this_core(d.target_arn) || d.deleted_ms)
      continue;
    json e = {{"deploymentId", d.id},
              {"deploymentName", d.name},
              {"targetArn", d.target_arn},
              {"coreDeviceExecutionStatus", d.execution},
              {"creationTimestamp", epoch_seconds(d.created_ms)},
              {"modifiedTimestamp", epoch_seconds(d.modified_ms)}};
    if (!d.reason.empty()) {
      // Journaled within the limit (reason.hpp); one journaled before is cut between
      // UTF-8 sequences all the same: a split one is no JSON string.
      e["reason"] = std::string{utf8_prefix(d.reason, max_reason_bytes)};
      if (d.execution == "FAILED")
        e["statusDetails"] = {{"errorStack", json::array({"DEPLOYMENT_FAILURE"})},
                              {"errorTypes", json::array({"DEPLOYMENT_ERROR"})}};
    }
    items.push_back(std::move(e));
  }
  json out = json::object();
  page(out, "effectiveDeployments", items, start, limit);
  return ok(200, out);
}

http_response api::list_installed_components(const std::string& thing, const http_request& req) {
  if (settings_.thing_name.empty() || thing != settings_.thing_name)
    return core_not_found(thing);
  auto filter = query_value(req, "topologyFilter");
  if (!filter.empty() && filter != "ALL" && filter != "ROOT")
    return field_error("topologyFilter", "ALL | ROOT");
  size_t limit, start;
  http_response err;
  if (!max_results(req, limit, err) || !page_start(req, start, err))
    return err;
  json items = json::array();
  if (settings_.installed)
    for (auto& c : settings_.installed())
      if (filter != "ROOT" || c.value("isRoot", false)) {
        // AWS's 255 bytes, cut between UTF-8 sequences: a split one is no JSON string,
        // and the writer's U+FFFD for it would pass the limit (reason.hpp).
        if (auto d = c.find("lifecycleStateDetails"); d != c.end() && d->is_string())
          *d = std::string{utf8_prefix(d->get_ref<const std::string&>(), max_details_bytes)};
        items.push_back(std::move(c));
      }
  json out = json::object();
  page(out, "installedComponents", items, start, limit);
  return ok(200, out);
}

namespace {

json core_device(const api_settings& s, int64_t now_ms, const std::string& status) {
  return {{"coreDeviceThingName", s.thing_name},
          {"status", status},
          {"lastStatusUpdateTimestamp", epoch_seconds(now_ms)},
          {"platform", s.platform.contains("os") ? s.platform.at("os") : "linux"},
          {"architecture",
           s.platform.contains("architecture") ? s.platform.at("architecture") : ""},
          {"runtime", "grove"}};
}

// HEALTHY unless a component is ERRORED or BROKEN (Greengrass' rule).
std::string core_status(const api_settings& s) {
  if (s.installed)
    for (const auto& c : s.installed()) {
      auto st = c.value("lifecycleState", "");
      if (st == "ERRORED" || st == "BROKEN")
        return "UNHEALTHY";
    }
  return "HEALTHY";
}

int64_t now_ms_wall() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

} // namespace

http_response api::get_core_device(const std::string& thing) {
  if (settings_.thing_name.empty() || thing != settings_.thing_name)
    return core_not_found(thing);
  auto out = core_device(settings_, now_ms_wall(), core_status(settings_));
  out["coreVersion"] = settings_.core_version;
  out["tags"] = json::object();
  return ok(200, out);
}

http_response api::list_core_devices(const http_request& req) {
  size_t limit, start;
  http_response err;
  if (!max_results(req, limit, err) || !page_start(req, start, err))
    return err;
  auto status = query_value(req, "status");
  if (!status.empty() && status != "HEALTHY" && status != "UNHEALTHY")
    return field_error("status", "HEALTHY | UNHEALTHY");
  auto group = query_value(req, "thingGroupArn");
  auto runtime = query_value(req, "runtime");
  json items = json::array();
  if (!settings_.thing_name.empty()) {
    auto st = core_status(settings_);
    bool in_group = group.empty();
    for (const auto& g : settings_.thing_groups)
      if (group == "arn:aws:iot:" + settings_.region + ":" + settings_.account_id + ":thinggroup/" + g)
        in_group = true;
    if (in_group && (status.empty() || status == st) && (runtime.empty() || runtime == "grove"))
      items.push_back(core_device(settings_, now_ms_wall(), st));
  }
  json out = json::object();
  page(out, "coreDevices", items, start, limit);
  return ok(200, out);
}

} // namespace grove::deployment
