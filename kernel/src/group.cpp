#include "grove/kernel/group.hpp"

#include <set>

#include <yaml-cpp/yaml.h>

#include "grove/errors.hpp"
#include "grove/kernel/config.hpp"
#include "grove/topic.hpp"

namespace grove {

namespace {

constexpr std::string_view group_schema_text = R"(
name: {type: string, required: true}
devices:
  type: list
  default: []
  items:
    type: map
    keys:
      thing: {type: string, required: true}
      sync_shadow: {type: bool, default: false}
functions:
  type: list
  default: []
  items:
    type: map
    keys:
      name: {type: string, required: true}
      config: {type: any}
subscriptions:
  type: list
  default: []
  items:
    type: map
    keys:
      id: {type: string, required: true}
      source: {type: string, required: true}
      subject: {type: string, required: true}
      target: {type: string, required: true}
resources:
  type: list
  default: []
  items:
    type: map
    keys:
      id: {type: string, required: true}
      config: {type: any}
)";

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 128)
    return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'
          || c == ':'))
      return false;
  return true;
}

} // namespace

caf::error validate_endpoint(std::string_view ep) {
  if (ep == "cloud" || ep == "shadow")
    return {};
  for (std::string_view kind : {"device:", "function:"})
    if (ep.substr(0, kind.size()) == kind) {
      if (valid_name(ep.substr(kind.size())))
        return {};
      return make_error(errc::invalid_config, "'" + std::string{ep}
                                                + "': the name after '"
                                                + std::string{kind} + "' is invalid");
    }
  return make_error(errc::invalid_config,
                    "'" + std::string{ep}
                      + "' is not device:<thing>, function:<name>, cloud or shadow");
}

caf::expected<group::Group> load_group(const std::filesystem::path& path) {
  auto file = path.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return make_error(errc::invalid_config, file + ": no such file");
  YAML::Node doc;
  try {
    doc = YAML::LoadFile(file);
  } catch (const YAML::ParserException& e) {
    return make_error(errc::invalid_config, file + ":" + std::to_string(e.mark.line + 1)
                                              + ":" + std::to_string(e.mark.column + 1)
                                              + ": " + e.msg);
  } catch (const std::exception& e) {
    return make_error(errc::invalid_config, file + ": " + e.what());
  }
  if (!doc.IsMap())
    return config_error(file, doc, "", "a group must be a map");
  auto schema = config_schema::parse(group_schema_text, "<group schema>");
  if (!schema)
    return schema.error();
  auto checked = schema->validate(doc, file, "");
  if (!checked)
    return checked.error();
  group::Group g;
  g.set_name((*checked)["name"].as<std::string>());
  g.set_source_file(std::filesystem::absolute(path).string());
  auto raw_devices = doc["devices"];
  auto raw_functions = doc["functions"];
  auto raw_subs = doc["subscriptions"];
  auto raw_resources = doc["resources"];
  if (raw_devices && raw_devices.size() > max_group_devices)
    return config_error(file, raw_devices, "devices",
                std::to_string(raw_devices.size()) + " devices; a group holds at most "
                  + std::to_string(max_group_devices));
  if (raw_subs && raw_subs.size() > max_group_subscriptions)
    return config_error(file, raw_subs, "subscriptions",
                std::to_string(raw_subs.size())
                  + " subscriptions; a group holds at most "
                  + std::to_string(max_group_subscriptions));
  std::set<std::string> things;
  auto devices = (*checked)["devices"];
  for (size_t i = 0; i < devices.size(); ++i) {
    auto thing = devices[i]["thing"].as<std::string>();
    auto field = "devices[" + std::to_string(i) + "].thing";
    if (!valid_name(thing) || thing.find(':') != std::string::npos)
      return config_error(file, raw_devices[i]["thing"], field,
                  "thing names are 1-128 characters of [A-Za-z0-9_.-]");
    if (thing == "grove")
      return config_error(file, raw_devices[i]["thing"], field,
                  "thing name 'grove' is reserved for Grove's own broker client");
    if (!things.insert(thing).second)
      return config_error(file, raw_devices[i]["thing"], field, "device '" + thing
                                                          + "' is listed twice");
    auto* d = g.add_devices();
    d->set_thing(thing);
    d->set_sync_shadow(devices[i]["sync_shadow"].as<bool>());
  }
  std::set<std::string> functions;
  auto fns = (*checked)["functions"];
  for (size_t i = 0; i < fns.size(); ++i) {
    auto name = fns[i]["name"].as<std::string>();
    auto field = "functions[" + std::to_string(i) + "].name";
    if (!valid_name(name) || name.find(':') != std::string::npos)
      return config_error(file, raw_functions[i]["name"], field,
                  "function names are 1-128 characters of [A-Za-z0-9_.-]");
    if (!functions.insert(name).second)
      return config_error(file, raw_functions[i]["name"], field,
                  "function '" + name + "' is listed twice");
    auto* f = g.add_functions();
    f->set_name(name);
    f->set_config_yaml(to_yaml(fns[i]["config"]));
  }
  std::set<std::string> ids;
  auto subs = (*checked)["subscriptions"];
  for (size_t i = 0; i < subs.size(); ++i) {
    auto s = subs[i];
    auto raw = raw_subs[i];
    auto base = "subscriptions[" + std::to_string(i) + "].";
    auto id = s["id"].as<std::string>();
    if (id.empty() || !ids.insert(id).second)
      return config_error(file, raw["id"], base + "id",
                  id.empty() ? "must not be empty" : "id '" + id + "' is used twice");
    for (auto key : {"source", "target"}) {
      auto ep = s[key].as<std::string>();
      if (auto err = validate_endpoint(ep))
        return config_error(file, raw[key], base + key, describe(err));
      auto colon = ep.find(':');
      if (colon == std::string::npos)
        continue;
      auto kind = ep.substr(0, colon);
      auto name = ep.substr(colon + 1);
      if (kind == "device" && !things.count(name))
        return config_error(file, raw[key], base + key,
                    "device '" + name + "' is not in this group's devices");
      if (kind == "function" && !functions.count(name))
        return config_error(file, raw[key], base + key,
                    "function '" + name + "' is not in this group's functions");
    }
    if (s["source"].as<std::string>() == s["target"].as<std::string>())
      return config_error(file, raw["target"], base + "target", "source and target are the same");
    auto subject = s["subject"].as<std::string>();
    if (auto err = validate_filter(subject))
      return config_error(file, raw["subject"], base + "subject", describe(err));
    // MQTT says topics should hold no control characters; the broker's table is a
    // line-based file, where a line break in a subject would start a rule of its own.
    for (unsigned char c : subject)
      if (c < 0x20 || c == 0x7f)
        return config_error(file, raw["subject"], base + "subject",
                            "a subject must not contain control characters");
    auto* out = g.add_subscriptions();
    out->set_id(id);
    out->set_source(s["source"].as<std::string>());
    out->set_subject(subject);
    out->set_target(s["target"].as<std::string>());
  }
  std::set<std::string> resource_ids;
  auto res = (*checked)["resources"];
  for (size_t i = 0; i < res.size(); ++i) {
    auto id = res[i]["id"].as<std::string>();
    if (id.empty() || !resource_ids.insert(id).second)
      return config_error(file, raw_resources[i]["id"], "resources[" + std::to_string(i) + "].id",
                  id.empty() ? "must not be empty" : "id '" + id + "' is used twice");
    auto* r = g.add_resources();
    r->set_id(id);
    r->set_config_yaml(to_yaml(res[i]["config"]));
  }
  return g;
}

} // namespace grove
