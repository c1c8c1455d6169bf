#include "lambda.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <optional>
#include <fstream>
#include <memory>

#include <openssl/evp.h>

#include "grove/topic.hpp"
#include "http.hpp"
#include "semver.hpp"

namespace grove::deployment {

using nlohmann::json;

namespace {

// SHA-256 (hex) of a file, read in blocks (a deployment package may be tens of MB).
std::optional<std::string> file_sha256(const std::filesystem::path& file) {
  std::ifstream in{file, std::ios::binary};
  if (!in)
    return std::nullopt;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), EVP_MD_CTX_free};
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    return std::nullopt;
  char buf[65536];
  while (in) {
    in.read(buf, sizeof buf);
    if (in.gcount() > 0 && EVP_DigestUpdate(ctx.get(), buf, static_cast<size_t>(in.gcount())) != 1)
      return std::nullopt;
  }
  if (in.bad())
    return std::nullopt;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1)
    return std::nullopt;
  return hex(std::string_view{reinterpret_cast<const char*>(md), len});
}

// Collects the problems of one request, each under `lambdaFunction`.
class converter {
public:
  converter(const lambda_settings& settings, std::vector<recipe_error>& errors)
    : settings_(settings), errors_(errors) {
    // Nothing.
  }

  /// The package `fn` version `ver` into `function` (see read_lambda_package).
  void read_package(const std::string& fn, const std::string& ver, json& function) {
    std::string description;
    package(fn, ver, function, description);
  }

  std::optional<lambda_recipe> run(const json& src) {
    if (!src.is_object()) {
      error("", "lambdaFunction must be an object");
      return std::nullopt;
    }
    known(src, "", {"lambdaArn", "componentName", "componentVersion", "componentPlatforms",
                    "componentDependencies", "componentLambdaParameters"});
    // The ARN, then the package it names.
    std::string fn_name, fn_version;
    auto arn = text(src, "", "lambdaArn", true);
    if (arn)
      parse_arn(*arn, fn_name, fn_version);
    json function; // function_runtime's definition
    std::string description;
    if (!fn_name.empty())
      package(fn_name, fn_version, function, description);
    // Name and version of the component.
    std::string name = fn_name;
    if (auto n = text(src, "", "componentName", false)) {
      name = *n;
      if (!valid_component_name(name))
        error("/componentName", "'" + name.substr(0, 128)
                                  + "' is not a component name (1 to 128 of [A-Za-z0-9._-], not "
                                    "starting with '.')");
    }
    std::string version = fn_version.empty() ? "" : fn_version + ".0.0";
    if (auto v = text(src, "", "componentVersion", false)) {
      version = *v;
      std::string why;
      if (version.size() > 64 || !parse_semver(version, &why))
        error("/componentVersion", "'" + version.substr(0, 64)
                                     + "' is not a semantic version: " + why);
    }
    json recipe = {{"RecipeFormatVersion", "2020-01-25"},
                   {"ComponentName", name},
                   {"ComponentVersion", version},
                   {"ComponentType", "aws.greengrass.lambda"},
                   {"ComponentDescription",
                    description.empty() ? "Lambda function " + arn.value_or("") : description},
                   {"ComponentPublisher", "AWS Lambda"},
                   {"ComponentSource", arn.value_or("")}};
    json platforms = nullptr;
    recipe["Manifests"] = manifests(src, platforms);
    if (auto deps = dependencies(src); !deps.empty())
      recipe["ComponentDependencies"] = std::move(deps);
    parameters(src, function);
    recipe["ComponentConfiguration"] = {{"DefaultConfiguration", std::move(function)}};
    if (!errors_.empty())
      return std::nullopt;
    return lambda_recipe{recipe.dump(2), std::move(platforms)};
  }

private:
  void error(const std::string& ptr, std::string message) {
    errors_.push_back(recipe_error{"lambdaFunction" + ptr, std::move(message)});
  }

  void known(const json& obj, const std::string& ptr, std::initializer_list<const char*> keys) {
    for (auto it = obj.begin(); it != obj.end(); ++it)
      if (std::find_if(keys.begin(), keys.end(), [&](const char* k) { return it.key() == k; })
          == keys.end())
        error(ptr + "/" + it.key().substr(0, 64), "unknown field '" + it.key().substr(0, 64) + "'");
  }

  std::optional<std::string> text(const json& obj, const std::string& ptr, const char* key,
                                  bool required) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) {
      if (required)
        error(ptr + "/" + key, std::string{key} + " is required");
      return std::nullopt;
    }
    if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
      error(ptr + "/" + key, std::string{key} + " must be a non-empty string");
      return std::nullopt;
    }
    return it->get<std::string>();
  }

  // arn:aws:lambda:<region>:<account>:function:<name>:<version>
  void parse_arn(const std::string& arn, std::string& name, std::string& version) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (;;) {
      auto colon = arn.find(':', start);
      parts.push_back(arn.substr(start, colon - start));
      if (colon == std::string::npos)
        break;
      start = colon + 1;
    }
    const std::string field = "/lambdaArn";
    if (parts.size() < 7 || parts[0] != "arn" || parts[1].rfind("aws", 0) != 0
        || parts[2] != "lambda" || parts[5] != "function" || parts[6].empty()) {
      error(field, "'" + arn.substr(0, 256)
                     + "' is not a Lambda function ARN "
                       "(arn:aws:lambda:<region>:<account>:function:<name>:<version>)");
      return;
    }
    if (parts.size() == 7) {
      error(field, "lambdaArn must include the function's version (...:function:"
                     + parts[6].substr(0, 64) + ":<version>)");
      return;
    }
    if (parts.size() != 8) {
      error(field, "'" + arn.substr(0, 256) + "' is not a Lambda function ARN");
      return;
    }
    const auto& fn = parts[6];
    const auto& ver = parts[7];
    if (ver == "$LATEST") {
      error(field, "lambdaArn names $LATEST: give a published version of " + fn.substr(0, 64)
                     + " (version aliases such as $LATEST are refused)");
      return;
    }
    if (ver.empty() || ver.size() > 10 || ver.front() == '0'
        || !std::all_of(ver.begin(), ver.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      error(field, "lambdaArn's version '" + ver.substr(0, 64)
                     + "' is not a version number (aliases are refused)");
      return;
    }
    if (fn.size() > 64 || !std::all_of(fn.begin(), fn.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
        })) {
      error(field, "'" + fn.substr(0, 64) + "' is not a Lambda function name (1 to 64 of "
                                            "[A-Za-z0-9_-])");
      return;
    }
    if (parts[3] != settings_.region || parts[4] != settings_.account_id) {
      error(field, "lambdaArn is of region '" + parts[3].substr(0, 32) + "' and account '"
                     + parts[4].substr(0, 16) + "'; this core's are '" + settings_.region
                     + "' and '" + settings_.account_id + "'");
      return;
    }
    name = fn;
    version = ver;
  }

  // The package <dir>/<name>/<version>/: runtime, handler and code.
  void package(const std::string& fn, const std::string& ver, json& function,
               std::string& description) {
    const std::string field = "/lambdaArn";
    auto dir = settings_.packages_dir / fn / ver;
    std::error_code ec;
    if (settings_.packages_dir.empty() || !std::filesystem::is_directory(dir, ec)) {
      error(field, "no function package " + fn + " version " + ver + " on this core (looked for "
                     + dir.string() + "/, under the configured lambda_packages_dir)");
      return;
    }
    auto cfg_file = dir / "configuration.json";
    std::ifstream in{cfg_file};
    auto cfg = in ? json::parse(in, nullptr, false) : json{json::value_t::discarded};
    if (cfg.is_discarded() || !cfg.is_object()) {
      error(field, cfg_file.string() + ": " + (in ? "not a JSON object" : "missing")
                     + " (the package's `aws lambda get-function-configuration` output)");
      return;
    }
    auto runtime = cfg.value("Runtime", "");
    auto handler = cfg.value("Handler", "");
    if (auto d = cfg.find("Description"); d != cfg.end() && d->is_string())
      description = d->get<std::string>();
    std::string ours;
    if (runtime.rfind("python3", 0) == 0)
      ours = "python3";
    else if (runtime == "provided" || runtime == "provided.al2" || runtime == "executable")
      ours = "executable";
    else {
      error(field, cfg_file.string() + ": Runtime '" + runtime.substr(0, 64)
                     + "' is not one Grove runs (python3.x; provided, provided.al2 or "
                       "executable for a program)");
      return;
    }
    if (handler.empty()) {
      error(field, cfg_file.string() + ": Handler is required");
      return;
    }
    auto zip = dir / "code.zip";
    auto code = dir / "code";
    bool has_zip = std::filesystem::is_regular_file(zip, ec);
    bool has_dir = std::filesystem::is_directory(code, ec);
    if (has_zip == has_dir) {
      error(field, dir.string() + ": needs exactly one of code.zip and code/ (has "
                     + (has_zip ? "both" : "neither") + ")");
      return;
    }
    function["runtime"] = ours;
    function["handler"] = handler;
    if (has_zip) {
      auto digest = file_sha256(zip);
      if (!digest) {
        error(field, zip.string() + ": cannot be read");
        return;
      }
      function["codeUri"] = zip.string();
      function["codeSha256"] = *digest;
    } else {
      function["codeUri"] = code.string();
    }
  }

  // componentPlatforms → one manifest each (Linux only when none are given: Greengrass
  // runs Lambda functions on Linux cores only).
  json manifests(const json& src, json& platforms) {
    json out = json::array();
    auto it = src.find("componentPlatforms");
    if (it == src.end() || it->is_null() || (it->is_array() && it->empty())) {
      out.push_back({{"Platform", {{"os", "linux"}}}});
      return out;
    }
    if (!it->is_array()) {
      error("/componentPlatforms", "componentPlatforms must be a list");
      return out;
    }
    platforms = json::array();
    for (size_t i = 0; i < it->size(); ++i) {
      const auto& p = (*it)[i];
      auto ptr = "/componentPlatforms/" + std::to_string(i);
      if (!p.is_object()) {
        error(ptr, "a platform is an object {name, attributes}");
        continue;
      }
      known(p, ptr, {"name", "attributes"});
      json attrs = p.value("attributes", json::object());
      if (!attrs.is_object())
        error(ptr + "/attributes", "attributes must be a map of strings");
      else
        for (auto a = attrs.begin(); a != attrs.end(); ++a)
          if (!a->is_string() || a->get_ref<const std::string&>().empty() || a.key().empty())
            error(ptr + "/attributes/" + a.key().substr(0, 64),
                  "platform attributes are non-empty strings");
      auto name = text(p, ptr, "name", false);
      // Greengrass' friendly name when none is given: os and architecture.
      std::string friendly = attrs.is_object() ? attrs.value("os", "") : "";
      if (attrs.is_object() && attrs.contains("architecture") && attrs["architecture"].is_string())
        friendly += (friendly.empty() ? "" : " ") + attrs["architecture"].get<std::string>();
      platforms.push_back({{"name", name.value_or(friendly.empty() ? "all" : friendly)},
                           {"attributes", attrs.is_object() ? attrs : json::object()}});
      out.push_back({{"Platform", attrs.is_object() ? attrs : json::object()}});
    }
    return out;
  }

  json dependencies(const json& src) {
    json out = json::object();
    auto it = src.find("componentDependencies");
    if (it == src.end() || it->is_null())
      return out;
    if (!it->is_object()) {
      error("/componentDependencies", "componentDependencies must be a map");
      return out;
    }
    for (auto d = it->begin(); d != it->end(); ++d) {
      auto ptr = "/componentDependencies/" + d.key().substr(0, 128);
      if (!valid_component_name(d.key()))
        error(ptr, "'" + d.key().substr(0, 128) + "' is not a component name");
      if (!d->is_object()) {
        error(ptr, "a dependency is an object {versionRequirement, dependencyType}");
        continue;
      }
      known(*d, ptr, {"versionRequirement", "dependencyType"});
      json dep = {{"VersionRequirement", "*"}, {"DependencyType", "HARD"}};
      if (auto vr = text(*d, ptr, "versionRequirement", false)) {
        std::string why;
        if (!parse_range(*vr, &why))
          error(ptr + "/versionRequirement", "not a version range: " + why);
        dep["VersionRequirement"] = *vr;
      }
      if (auto dt = text(*d, ptr, "dependencyType", false)) {
        if (*dt != "HARD" && *dt != "SOFT")
          error(ptr + "/dependencyType", "dependencyType must be HARD or SOFT");
        dep["DependencyType"] = *dt;
      }
      out[d.key()] = std::move(dep);
    }
    return out;
  }

  // An integer field in [lo, hi] (function_runtime's ranges), or its default.
  void integer(const json& obj, const std::string& ptr, const char* key, int64_t lo, int64_t hi,
               int64_t dflt, json& to) {
    to[key] = dflt;
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null())
      return;
    if (!it->is_number_integer() || it->get<int64_t>() < lo || it->get<int64_t>() > hi) {
      error(ptr + "/" + key, std::string{key} + " must be an integer from " + std::to_string(lo)
                               + " to " + std::to_string(hi));
      return;
    }
    to[key] = it->get<int64_t>();
  }

  void boolean(const json& obj, const std::string& ptr, const char* key, bool dflt, json& to) {
    to[key] = dflt;
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null())
      return;
    if (!it->is_boolean()) {
      error(ptr + "/" + key, std::string{key} + " must be true or false");
      return;
    }
    to[key] = it->get<bool>();
  }

  void choice(const json& obj, const std::string& ptr, const char* key,
              std::initializer_list<const char*> allowed, json& to) {
    to[key] = *allowed.begin();
    auto v = text(obj, ptr, key, false);
    if (!v)
      return;
    if (std::find_if(allowed.begin(), allowed.end(), [&](const char* a) { return *v == a; })
        == allowed.end()) {
      std::string list;
      for (auto a : allowed)
        list += (list.empty() ? "" : " | ") + std::string{a};
      error(ptr + "/" + key, std::string{key} + " must be " + list);
      return;
    }
    to[key] = *v;
  }

  json object_at(const json& obj, const std::string& ptr, const char* key) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null())
      return json::object();
    if (!it->is_object()) {
      error(ptr + "/" + key, std::string{key} + " must be an object");
      return json::object();
    }
    return *it;
  }

  json list_at(const json& obj, const std::string& ptr, const char* key) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null())
      return json::array();
    if (!it->is_array()) {
      error(ptr + "/" + key, std::string{key} + " must be a list");
      return json::array();
    }
    return *it;
  }

  // componentLambdaParameters → function_runtime's keys (the same names), every field
  // written out with Greengrass' default when absent.
  void parameters(const json& src, json& fn) {
    const std::string ptr = "/componentLambdaParameters";
    json p = object_at(src, "", "componentLambdaParameters");
    known(p, ptr, {"eventSources", "maxQueueSize", "maxInstancesCount", "maxIdleTimeInSeconds",
                   "timeoutInSeconds", "statusTimeoutInSeconds", "pinned",
                   "inputPayloadEncodingType", "execArgs", "environmentVariables",
                   "linuxProcessParams"});
    json sources = json::array();
    auto es = list_at(p, ptr, "eventSources");
    for (size_t i = 0; i < es.size(); ++i) {
      auto at = ptr + "/eventSources/" + std::to_string(i);
      if (!es[i].is_object()) {
        error(at, "an event source is an object {topic, type}");
        continue;
      }
      known(es[i], at, {"topic", "type"});
      auto topic = text(es[i], at, "topic", true);
      auto type = text(es[i], at, "type", true);
      if (type && *type != "PUB_SUB" && *type != "IOT_CORE")
        error(at + "/type", "type must be PUB_SUB or IOT_CORE");
      else if (topic && type && *type == "PUB_SUB" && grove::validate_topic(*topic))
        error(at + "/topic", "a PUB_SUB topic is one topic, without wildcards (+, #)");
      else if (topic && type && *type == "IOT_CORE" && grove::validate_filter(*topic))
        error(at + "/topic", "'" + topic->substr(0, 256) + "' is not an MQTT topic filter");
      if (topic && type)
        sources.push_back({{"topic", *topic}, {"type", *type}});
    }
    fn["eventSources"] = std::move(sources);
    integer(p, ptr, "maxQueueSize", 0, 1000000, 1000, fn);
    integer(p, ptr, "maxInstancesCount", 1, 1000, 100, fn);
    integer(p, ptr, "maxIdleTimeInSeconds", 1, 86400, 60, fn);
    integer(p, ptr, "timeoutInSeconds", 1, 86400, 3, fn);
    integer(p, ptr, "statusTimeoutInSeconds", 1, 86400, 60, fn);
    boolean(p, ptr, "pinned", true, fn);
    choice(p, ptr, "inputPayloadEncodingType", {"json", "binary"}, fn);
    json args = json::array();
    auto ea = list_at(p, ptr, "execArgs");
    for (size_t i = 0; i < ea.size(); ++i) {
      if (!ea[i].is_string())
        error(ptr + "/execArgs/" + std::to_string(i), "an argument is a string");
      else
        args.push_back(ea[i]);
    }
    fn["execArgs"] = std::move(args);
    json env = object_at(p, ptr, "environmentVariables");
    for (auto it = env.begin(); it != env.end(); ++it)
      if (it.key().empty() || it.key().find('=') != std::string::npos || !it->is_string())
        error(ptr + "/environmentVariables/" + it.key().substr(0, 64),
              "a variable is NAME (no '=') with a string value");
    fn["environmentVariables"] = std::move(env);
    const std::string lp = ptr + "/linuxProcessParams";
    json linux_params = object_at(p, ptr, "linuxProcessParams");
    known(linux_params, lp, {"isolationMode", "containerParams"});
    json process = json::object();
    choice(linux_params, lp, "isolationMode", {"GreengrassContainer", "NoContainer"}, process);
    const std::string cp = lp + "/containerParams";
    json container_in = object_at(linux_params, lp, "containerParams");
    known(container_in, cp, {"memorySizeInKB", "mountROSysfs", "volumes", "devices"});
    json container = json::object();
    integer(container_in, cp, "memorySizeInKB", 2048, INT32_MAX, 16384, container);
    boolean(container_in, cp, "mountROSysfs", false, container);
    json volumes = json::array();
    auto vs = list_at(container_in, cp, "volumes");
    for (size_t i = 0; i < vs.size(); ++i) {
      auto at = cp + "/volumes/" + std::to_string(i);
      if (!vs[i].is_object()) {
        error(at, "a volume is an object {sourcePath, destinationPath, permission, addGroupOwner}");
        continue;
      }
      known(vs[i], at, {"sourcePath", "destinationPath", "permission", "addGroupOwner"});
      json v = json::object();
      auto source = text(vs[i], at, "sourcePath", true);
      auto dest = text(vs[i], at, "destinationPath", true);
      v["sourcePath"] = source.value_or("");
      v["destinationPath"] = dest.value_or("");
      choice(vs[i], at, "permission", {"ro", "rw"}, v);
      boolean(vs[i], at, "addGroupOwner", false, v);
      volumes.push_back(std::move(v));
    }
    container["volumes"] = std::move(volumes);
    json devices = json::array();
    auto ds = list_at(container_in, cp, "devices");
    for (size_t i = 0; i < ds.size(); ++i) {
      auto at = cp + "/devices/" + std::to_string(i);
      if (!ds[i].is_object()) {
        error(at, "a device is an object {path, permission, addGroupOwner}");
        continue;
      }
      known(ds[i], at, {"path", "permission", "addGroupOwner"});
      json d = json::object();
      d["path"] = text(ds[i], at, "path", true).value_or("");
      choice(ds[i], at, "permission", {"ro", "rw"}, d);
      boolean(ds[i], at, "addGroupOwner", false, d);
      devices.push_back(std::move(d));
    }
    container["devices"] = std::move(devices);
    process["containerParams"] = std::move(container);
    fn["linuxProcessParams"] = std::move(process);
  }

  const lambda_settings& settings_;
  std::vector<recipe_error>& errors_;
};

} // namespace

std::optional<lambda_recipe> convert_lambda(const json& source, const lambda_settings& settings,
                                            std::vector<recipe_error>& errors) {
  converter c{settings, errors};
  return c.run(source);
}

std::vector<std::string> read_lambda_package(const std::filesystem::path& packages_dir,
                                             const std::string& name,
                                             const std::string& version,
                                             nlohmann::json& function) {
  lambda_settings settings;
  settings.packages_dir = packages_dir;
  std::vector<recipe_error> errors;
  converter{settings, errors}.read_package(name, version, function);
  std::vector<std::string> out;
  for (auto& e : errors)
    out.push_back(std::move(e.message));
  return out;
}

} // namespace grove::deployment
