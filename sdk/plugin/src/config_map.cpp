#include "grove/config_map.hpp"

#include <cmath>

#include "grove/kernel/config.hpp"

namespace grove::detail {

namespace {

// A bound as schema text: an integer for int keys, the shortest exact form otherwise.
YAML::Node bound(double x, const std::string& type) {
  if (type == "int")
    return YAML::Node{static_cast<long long>(std::llround(x))};
  return to_node(x, static_cast<const std::vector<std::pair<std::string, int>>*>(nullptr));
}

YAML::Node spec_of(const config_field& f);

YAML::Node keys_of(const std::vector<config_field>& fields) {
  YAML::Node keys{YAML::NodeType::Map};
  for (const auto& f : fields)
    keys[f.name] = spec_of(f);
  return keys;
}

YAML::Node spec_of(const config_field& f) {
  YAML::Node spec{YAML::NodeType::Map};
  spec["type"] = f.type;
  if (f.required)
    spec["required"] = true;
  if (f.default_value) {
    auto def = YAML::Clone(*f.default_value);
    def.SetStyle(YAML::EmitterStyle::Flow);
    spec["default"] = def;
  }
  if (f.min)
    spec["min"] = bound(*f.min, f.type);
  if (f.max)
    spec["max"] = bound(*f.max, f.type);
  if (!f.min_key.empty())
    spec["min_key"] = f.min_key;
  if (!f.choices.empty()) {
    YAML::Node choices{YAML::NodeType::Sequence};
    for (const auto& c : f.choices)
      choices.push_back(c);
    choices.SetStyle(YAML::EmitterStyle::Flow);
    spec["enum"] = choices;
  }
  if (f.items)
    spec["items"] = spec_of(*f.items);
  if (!f.doc.empty())
    spec["doc"] = f.doc;
  if (f.type == "map") {
    spec["keys"] = keys_of(f.keys);
  } else if (!f.items || f.items->type != "map") {
    // One line per leaf key, like hand-written schemas.
    spec.SetStyle(YAML::EmitterStyle::Flow);
  }
  return spec;
}

// Why `x` cannot be the default of `spec`, or "".
std::string bad_default(const config_field& spec, const YAML::Node& x) {
  if (spec.type == "int" || spec.type == "float") {
    double v = 0;
    if (!scalar_as(x, v))
      return "default is not a number";
    if ((spec.min && v < *spec.min) || (spec.max && v > *spec.max))
      return "default " + x.Scalar() + " is outside its range";
  } else if (!spec.choices.empty()) {
    for (const auto& c : spec.choices)
      if (x.IsScalar() && c == x.Scalar())
        return {};
    return "default is not one of its allowed values";
  }
  return {};
}

} // namespace

std::string add_field(std::vector<config_field>& fields, config_field f,
                      bool enum_without_names) {
  // The kernel does not check defaults, so a wrong one would reach the plugin.
  std::string what;
  if (enum_without_names)
    what = "an enum key needs names<E>{...}";
  for (const auto& other : fields)
    if (what.empty() && other.name == f.name)
      what = "declared twice";
  if (what.empty() && f.default_value) {
    if (f.items) {
      for (const auto& x : *f.default_value)
        if (what.empty())
          what = bad_default(*f.items, x);
    } else {
      what = bad_default(f, *f.default_value);
    }
  }
  auto defect = what.empty() ? std::string{} : f.name + ": " + what;
  fields.push_back(std::move(f));
  return defect;
}

std::string schema_text(const std::vector<config_field>& fields, const std::string& defect) {
  YAML::Emitter out;
  if (!defect.empty()) {
    // An invalid schema whose path is the message: the kernel refuses the library
    // with "<lib> (config schema): config map defect (<defect>): ...".
    out << YAML::BeginMap << YAML::Key << "config map defect (" + defect + ")"
        << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "type"
        << YAML::Value << "invalid" << YAML::EndMap << YAML::EndMap;
    return out.c_str();
  }
  if (fields.empty())
    return "{}\n";
  out << keys_of(fields);
  return std::string{out.c_str()} + "\n";
}

std::string markdown_table(const std::vector<config_field>& fields) {
  auto schema = config_schema::parse(schema_text(fields, {}), "<config map>");
  if (!schema)
    return describe(schema.error());
  return config_table(*schema);
}

caf::expected<YAML::Node> validate(const std::vector<config_field>& fields,
                                   std::string_view yaml, std::string_view origin) {
  auto schema = config_schema::parse(schema_text(fields, {}), "<config map>");
  if (!schema)
    return schema.error();
  auto node = parse_yaml(yaml, origin);
  if (!node)
    return node.error();
  return schema->validate(*node, origin, "");
}

caf::error field_error(std::string_view path, const std::string& what) {
  return make_error(errc::invalid_config, std::string{path} + ": " + what);
}

std::string join_path(std::string_view path, std::string_view key) {
  if (path.empty())
    return std::string{key};
  return std::string{path} + "." + std::string{key};
}

std::filesystem::path resolve_path(const std::string& text, const parse_env& env) {
  std::filesystem::path p{text};
  if (text.empty() || p.is_absolute() || env.base.empty())
    return p;
  return env.base / p;
}

} // namespace grove::detail
