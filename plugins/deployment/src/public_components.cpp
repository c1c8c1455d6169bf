#include "public_components.hpp"

#include <algorithm>
#include <array>

#include "recipe.hpp"
#include "semver.hpp"

namespace grove::deployment {

using json = nlohmann::json;

namespace {

// The catalog's creation time (Greengrass v2's general availability, 2020-12-15): the
// versions are built in, not created on this core.
constexpr int64_t catalog_ms = 1608019200000;

struct entry {
  std::string_view name;
  // The versions served: `first` to `version` (the newest), every patch between them (one
  // minor); `first` is where AWS's component page confirms every patch up to the newest.
  std::string_view first, version;
  std::string_view description;
  public_role role;
  std::string_view plugin, reason;
  std::string_view defaults; // DefaultConfiguration (JSON)
  std::string_view type = "aws.greengrass.plugin"; // ComponentType as AWS documents it
};

// The versions of each (README.md, "AWS public components", says which numbers were
// checked against AWS's pages and which not), DefaultConfiguration as AWS's recipes give
// it. A deployment pins a version (AWS's own do): every patch from `first` to the newest
// is served, so pinning any of them resolves. No ComponentDependencies: the nucleus and
// the client device components they name are Grove itself.
constexpr std::array entries{
  entry{"aws.greengrass.Nucleus", "2.16.0", "2.16.1", "The Greengrass nucleus.",
        public_role::no_op, "",
        "Grove's kernel is the nucleus; its settings come from the image profile",
        R"({})", "aws.greengrass.nucleus"},
  entry{"aws.greengrass.LambdaLauncher", "2.0.13", "2.0.13",
        "Starts and stops Lambda functions on Greengrass core devices.", public_role::no_op, "",
        "Lambda components run under function_runtime", R"({})", "aws.greengrass.generic"},
  entry{"aws.greengrass.LambdaManager", "2.3.1", "2.3.7",
        "Manages Lambda functions on Greengrass core devices.", public_role::no_op, "",
        "Lambda components run under function_runtime", R"({})"},
  entry{"aws.greengrass.LambdaRuntimes", "2.0.3", "2.0.9",
        "Provides the runtimes of Lambda functions.", public_role::no_op, "",
        "Lambda components run under function_runtime", R"({})", "aws.greengrass.generic"},
  entry{"aws.greengrass.ShadowManager", "2.3.10", "2.3.12",
        "Enables the local shadow service and shadow synchronization.",
        public_role::plugin_config, "shadow",
        "its configuration is the shadow plugin's, over the image profile",
        R"({"strategy": {"type": "realTime"},
            "rateLimits": {"maxOutboundSyncUpdatesPerSecond": 100,
                           "maxTotalLocalRequestsRate": 200,
                           "maxLocalRequestsPerSecondPerThing": 20},
            "shadowDocumentSizeLimitBytes": 8192})"},
  entry{"aws.greengrass.clientdevices.Auth", "2.5.1", "2.5.1",
        "Authenticates client devices and authorizes their actions.", public_role::no_op, "",
        "message_manager authenticates devices (the group's things, mutual TLS) and its "
        "subscription table authorizes every route (nothing without one); deviceGroups "
        "policies are not read",
        R"({"deviceGroups": {}})"},
  entry{"aws.greengrass.clientdevices.IPDetector", "2.2.0", "2.2.0",
        "Reports the core's IP addresses as its connectivity information.", public_role::no_op,
        "", "the deployment plugin's ip_detector keeps the connectivity information", R"({})"},
  entry{"aws.greengrass.clientdevices.mqtt.Bridge", "2.3.2", "2.3.2",
        "The MQTT bridge between client devices, local publish/subscribe and AWS IoT Core.",
        public_role::plugin_config, "message_manager",
        "its mqttTopicMapping is message_manager's bridge, over the image profile",
        R"({"mqttTopicMapping": {}})"},
  entry{"aws.greengrass.clientdevices.mqtt.EMQX", "2.0.2", "2.0.2",
        "An MQTT broker for client devices.", public_role::no_op, "",
        "message_manager's Mosquitto is the devices' broker, set in the image profile",
        R"({})", "aws.greengrass.generic"},
  entry{"aws.greengrass.clientdevices.mqtt.Moquette", "2.3.7", "2.3.7",
        "An MQTT broker for client devices.", public_role::no_op, "",
        "message_manager's Mosquitto is the devices' broker, set in the image profile",
        R"({})"},
};

// AWS components Grove does not implement, and why a deployment of one is refused.
constexpr std::array<std::pair<std::string_view, std::string_view>, 6> refused{{
  {"aws.greengrass.Cli", "use grovectl, Grove's operator CLI"},
  {"aws.greengrass.DockerApplicationManager",
   "Grove runs no Docker images (docker: artifacts are not fetched)"},
  {"aws.greengrass.LogManager", "Grove does not upload logs to CloudWatch"},
  {"aws.greengrass.SecretManager", "Grove has no secret store synchronized with the cloud"},
  {"aws.greengrass.StreamManager",
   "Grove has no stream manager; message_manager's spool keeps cloud-bound messages"},
  {"aws.greengrass.TokenExchangeService",
   "Grove gives components no AWS credentials (no token exchange role)"},
}};

// Shadow manager's configuration keys as AWS documents them (its component page and
// aws-greengrass-shadow-manager's README), each with the keys of its map ({}: a value, or
// a map whose keys are names). The shadow plugin implements all of them.
using key_list = std::vector<std::string_view>;
const std::array<std::pair<std::string_view, key_list>, 4> shadow_manager_keys{{
  {"strategy", {"type", "delay"}},
  {"synchronize", {"coreThing", "shadowDocuments", "shadowDocumentsMap", "direction"}},
  {"rateLimits",
   {"maxOutboundSyncUpdatesPerSecond", "maxTotalLocalRequestsRate",
    "maxLocalRequestsPerSecondPerThing"}},
  {"shadowDocumentSizeLimitBytes", {}},
}};

component_version make_version(const entry& e, const std::string& version) {
  json recipe = {{"RecipeFormatVersion", "2020-01-25"},
                 {"ComponentName", e.name},
                 {"ComponentVersion", version},
                 {"ComponentType", e.type},
                 {"ComponentDescription", e.description},
                 {"ComponentPublisher", "AWS"},
                 {"ComponentConfiguration", {{"DefaultConfiguration", json::parse(e.defaults)}}},
                 {"Manifests", json::array({{{"Platform", {{"os", "linux"}}}}})}};
  std::vector<recipe_error> errors;
  auto r = parse_recipe(recipe.dump(), errors); // checked as any recipe, its platforms made
  component_version v;
  v.name = e.name;
  v.version = version;
  v.created_ms = catalog_ms;
  v.description = e.description;
  v.publisher = "AWS";
  v.recipe = r ? r->doc.dump() : recipe.dump();
  v.platforms = r ? r->platforms.dump() : "[]";
  v.state = "DEPLOYABLE";
  v.message = "NONE";
  return v;
}

} // namespace

const std::vector<public_component>& public_catalog() {
  static const auto catalog = [] {
    std::vector<public_component> out;
    for (const auto& e : entries) {
      public_component c{e.name, e.role, e.plugin, e.reason, {}};
      auto newest = parse_semver(e.version), first = parse_semver(e.first);
      for (auto patch = newest->patch + 1; patch-- > first->patch;) // newest first
        c.versions.push_back(make_version(e, std::to_string(newest->major) + "."
                                               + std::to_string(newest->minor) + "."
                                               + std::to_string(patch)));
      out.push_back(std::move(c));
    }
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    return out;
  }();
  return catalog;
}

const public_component* find_public(std::string_view name) {
  for (const auto& c : public_catalog())
    if (c.name == name)
      return &c;
  return nullptr;
}

const component_version* find_public_version(std::string_view name, std::string_view version) {
  if (const auto* p = find_public(name))
    for (const auto& v : p->versions)
      if (v.version == version)
        return &v;
  return nullptr;
}

std::optional<std::string> public_refusal(std::string_view name) {
  for (const auto& [n, why] : refused)
    if (n == name)
      return std::string{name} + " is an AWS component Grove does not implement: "
             + std::string{why};
  return std::nullopt;
}

std::optional<json> public_plugin_document(std::string_view name, const json& configuration,
                                           const std::string& thing,
                                           std::vector<std::string>* ignored) {
  if (name == "aws.greengrass.clientdevices.mqtt.Bridge") {
    // AWS's map of named mappings becomes message_manager's list, each key its `name`.
    json list = json::array();
    auto mapping = configuration.is_object() ? configuration.find("mqttTopicMapping")
                                             : configuration.end();
    if (mapping != configuration.end() && mapping->is_object())
      for (auto e = mapping->begin(); e != mapping->end(); ++e) {
        json item = e.value().is_object() ? e.value() : json::object();
        item["name"] = e.key();
        list.push_back(std::move(item));
      }
    else if (mapping != configuration.end() && !mapping->is_null())
      list = *mapping; // message_manager's schema says what is wrong with it
    return json{{"bridge", {{"mqtt_topic_mapping", std::move(list)}}}};
  }
  if (name == "aws.greengrass.ShadowManager") {
    // Only shadow manager's own keys reach the plugin: a Grove-only key (file,
    // allow_unknown_things, ...) is the image profile's, not an AWS component's. An AWS key
    // the plugin does not implement is dropped and named in `ignored`.
    json doc = json::object();
    if (configuration.is_object())
      for (auto it = configuration.begin(); it != configuration.end(); ++it) {
        auto fields = std::find_if(shadow_manager_keys.begin(), shadow_manager_keys.end(),
                                   [&](const auto& k) { return k.first == it.key(); });
        if (fields == shadow_manager_keys.end()) {
          if (ignored)
            ignored->push_back(it.key());
          continue;
        }
        json value = it.value();
        if (value.is_object() && !fields->second.empty()) {
          for (auto sub = value.begin(); sub != value.end();) {
            if (std::find(fields->second.begin(), fields->second.end(), sub.key())
                != fields->second.end()) {
              ++sub;
              continue;
            }
            if (ignored)
              ignored->push_back(it.key() + "." + sub.key());
            sub = value.erase(sub);
          }
        }
        doc[it.key()] = std::move(value);
      }
    // The plugin reads them under their names but for three: the document size limit's
    // name, the core's thing (implicit on Greengrass), and the map form of shadowDocuments
    // (2.2.0's shadowDocumentsMap), which becomes list entries.
    if (auto it = doc.find("shadowDocumentSizeLimitBytes"); it != doc.end()) {
      doc["max_document_bytes"] = *it;
      doc.erase("shadowDocumentSizeLimitBytes");
    }
    if (auto sync = doc.find("synchronize"); sync != doc.end() && sync->is_object()) {
      if (auto core = sync->find("coreThing"); core != sync->end() && core->is_object()) {
        if (core->contains("thingName") && ignored)
          ignored->push_back("synchronize.coreThing.thingName"); // Grove's key, not AWS's
        (*core)["thingName"] = thing;
      }
      if (auto map = sync->find("shadowDocumentsMap"); map != sync->end()) {
        if (map->is_object()) {
          json& list = (*sync)["shadowDocuments"];
          if (!list.is_array())
            list = json::array();
          for (auto t = map->begin(); t != map->end(); ++t) {
            json item = t.value().is_object() ? t.value() : json::object();
            item["thingName"] = t.key();
            list.push_back(std::move(item));
          }
          sync->erase("shadowDocumentsMap");
        } // else left for the shadow plugin's schema to refuse, naming it
      }
    }
    return doc;
  }
  return std::nullopt;
}

} // namespace grove::deployment
