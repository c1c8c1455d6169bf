#include "recipe.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <map>

#include <yaml-cpp/yaml.h>

#include "lifecycle.hpp"

namespace grove::deployment {

using nlohmann::json;

namespace {

constexpr size_t max_depth = 64;

} // namespace

std::string escape_pointer(std::string_view key) {
  std::string out;
  for (char c : key) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

namespace {

// Plain YAML scalars take the type YAML 1.2's core schema gives them; quoted ones stay
// strings.
json scalar(const YAML::Node& n) {
  const auto& s = n.Scalar();
  if (n.Tag() == "!")
    return s;
  if (s == "null" || s == "~" || s == "Null" || s == "NULL" || s.empty())
    return nullptr;
  if (s == "true" || s == "True" || s == "TRUE")
    return true;
  if (s == "false" || s == "False" || s == "FALSE")
    return false;
  // Integers as JSON keeps them: int64, else uint64, else (too large) a double below.
  {
    const char* b = s.data() + (s[0] == '+' ? 1 : 0);
    const char* e = s.data() + s.size();
    int64_t i64 = 0;
    if (auto [p, ec] = std::from_chars(b, e, i64); ec == std::errc{} && p == e)
      return i64;
    uint64_t u64 = 0;
    if (auto [p, ec] = std::from_chars(b, e, u64); ec == std::errc{} && p == e)
      return u64;
  }
  // A float only when the whole text is one (so 1.0.0 stays a string).
  char* end = nullptr;
  errno = 0;
  double d = std::strtod(s.c_str(), &end);
  if (end == s.c_str() + s.size() && errno == 0 && s.find_first_of("0123456789") != std::string::npos
      && s.find_first_not_of("0123456789.eE+-") == std::string::npos)
    return d;
  return s;
}

struct yaml_reader {
  std::map<std::string, int> lines; // JSON pointer -> 1-based line
  std::vector<recipe_error>& errors;

  bool convert(const YAML::Node& n, const std::string& ptr, json& out, size_t depth) {
    lines.emplace(ptr.empty() ? "/" : ptr, n.Mark().line + 1);
    if (depth > max_depth) {
      errors.push_back({ptr.empty() ? "/" : ptr, "nested deeper than 64 levels"});
      return false;
    }
    switch (n.Type()) {
      case YAML::NodeType::Null:
      case YAML::NodeType::Undefined:
        out = nullptr;
        return true;
      case YAML::NodeType::Scalar:
        out = scalar(n);
        return true;
      case YAML::NodeType::Sequence: {
        out = json::array();
        size_t i = 0;
        for (const auto& e : n) {
          json v;
          if (!convert(e, ptr + "/" + std::to_string(i++), v, depth + 1))
            return false;
          out.push_back(std::move(v));
        }
        return true;
      }
      case YAML::NodeType::Map: {
        out = json::object();
        for (const auto& kv : n) {
          if (!kv.first.IsScalar()) {
            errors.push_back({ptr.empty() ? "/" : ptr,
                              "line " + std::to_string(kv.first.Mark().line + 1)
                                + ": a key must be a plain string"});
            return false;
          }
          const auto& key = kv.first.Scalar();
          auto child = ptr + "/" + escape_pointer(key);
          if (out.contains(key)) {
            errors.push_back({child, "line " + std::to_string(kv.first.Mark().line + 1)
                                       + ": duplicate key '" + key + "'"});
            return false;
          }
          json v;
          if (!convert(kv.second, child, v, depth + 1))
            return false;
          out[key] = std::move(v);
        }
        return true;
      }
    }
    return true;
  }
};

struct checker {
  std::vector<recipe_error>& errors;
  const std::map<std::string, int>* lines = nullptr;

  void error(const std::string& ptr, std::string what) {
    std::string field = ptr.empty() ? "/" : ptr;
    if (lines) {
      // The closest enclosing node with a known line.
      std::string p = field;
      while (true) {
        auto it = lines->find(p);
        if (it != lines->end()) {
          what = "line " + std::to_string(it->second) + ": " + what;
          break;
        }
        auto slash = p.rfind('/');
        if (slash == 0 || slash == std::string::npos) {
          if (p != "/" && lines->count("/"))
            what = "line " + std::to_string(lines->at("/")) + ": " + what;
          break;
        }
        p = p.substr(0, slash);
      }
    }
    errors.push_back({std::move(field), std::move(what)});
  }

  const json* string_at(const json& obj, const std::string& ptr, const char* key, bool required) {
    auto it = obj.find(key);
    if (it == obj.end()) {
      if (required)
        error(ptr + "/" + key, std::string{key} + " is required");
      return nullptr;
    }
    if (!it->is_string()) {
      error(ptr + "/" + key, std::string{key} + " must be a string");
      return nullptr;
    }
    return &*it;
  }

  bool object_at(const json& v, const std::string& ptr, const char* what) {
    if (!v.is_object()) {
      error(ptr, std::string{what} + " must be a map");
      return false;
    }
    return true;
  }

  void unknown_keys(const json& obj, const std::string& ptr,
                    std::initializer_list<std::string_view> allowed) {
    for (auto it = obj.begin(); it != obj.end(); ++it)
      if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end())
        error(ptr + "/" + escape_pointer(it.key()), "unknown field '" + it.key() + "'");
  }

  // Every step, key and value as the runner reads them (lifecycle.hpp).
  void lifecycle(const json& v, const std::string& ptr) {
    if (!object_at(v, ptr, "Lifecycle"))
      return;
    std::vector<recipe_error> found;
    check_lifecycle(v, ptr, found);
    for (auto& e : found)
      error(e.field, std::move(e.message));
  }

  void artifact(const json& a, const std::string& ptr) {
    if (!object_at(a, ptr, "an artifact"))
      return;
    unknown_keys(a, ptr, {"Uri", "Digest", "Algorithm", "Unarchive", "Permission"});
    if (auto uri = string_at(a, ptr, "Uri", true)) {
      const auto& u = uri->get_ref<const std::string&>();
      auto colon = u.find("://");
      auto scheme = colon == std::string::npos ? std::string{} : u.substr(0, colon);
      if (scheme != "s3" && scheme != "https" && scheme != "file" && scheme != "greengrass"
          && scheme != "docker")
        error(ptr + "/Uri", "Uri must be s3://, https://, file://, greengrass:// or docker://");
      else if (u.size() == colon + 3)
        error(ptr + "/Uri", "Uri has no path");
      // The artifact's file name is the last segment: never a way out of its directory.
      auto last = u.substr(u.rfind('/') + 1);
      if (scheme != "docker" && (last.empty() || last == "." || last == ".."))
        error(ptr + "/Uri", "Uri must end in a file name (not '" + last + "')");
      if (u.find('\0') != std::string::npos || u.find('\\') != std::string::npos)
        error(ptr + "/Uri", "Uri holds a NUL or a backslash");
    }
    if (auto d = string_at(a, ptr, "Digest", false))
      if (d->get_ref<const std::string&>().empty())
        error(ptr + "/Digest", "Digest is empty");
    if (auto alg = string_at(a, ptr, "Algorithm", false)) {
      auto s = alg->get<std::string>();
      if (s != "SHA-256" && s != "SHA-384" && s != "SHA-512")
        error(ptr + "/Algorithm", "Algorithm must be SHA-256, SHA-384 or SHA-512");
    }
    if (a.contains("Algorithm") != a.contains("Digest"))
      error(ptr, "Digest and Algorithm go together");
    if (auto un = string_at(a, ptr, "Unarchive", false)) {
      auto s = un->get<std::string>();
      if (s != "NONE" && s != "ZIP")
        error(ptr + "/Unarchive", "Unarchive must be NONE or ZIP");
    }
    if (auto it = a.find("Permission"); it != a.end()) {
      auto p = ptr + "/Permission";
      if (object_at(*it, p, "Permission")) {
        unknown_keys(*it, p, {"Read", "Execute"});
        for (const char* k : {"Read", "Execute"})
          if (auto v = string_at(*it, p, k, false)) {
            auto s = v->get<std::string>();
            if (s != "NONE" && s != "OWNER" && s != "ALL")
              error(p + "/" + k, std::string{k} + " must be NONE, OWNER or ALL");
          }
      }
    }
  }

  void manifest(const json& m, const std::string& ptr, json& platforms) {
    if (!object_at(m, ptr, "a manifest"))
      return;
    unknown_keys(m, ptr, {"Platform", "Lifecycle", "Artifacts", "Name", "Selections"});
    if (auto it = m.find("Platform"); it != m.end()) {
      auto p = ptr + "/Platform";
      if (object_at(*it, p, "Platform")) {
        json attrs = json::object();
        for (auto a = it->begin(); a != it->end(); ++a) {
          if (!a->is_string())
            error(p + "/" + escape_pointer(a.key()), "a platform attribute is a string");
          else
            attrs[a.key()] = *a;
        }
        std::string name = attrs.contains("os") ? attrs["os"].get<std::string>() : "all";
        platforms.push_back({{"name", name}, {"attributes", attrs}});
      }
    }
    if (auto it = m.find("Lifecycle"); it != m.end())
      lifecycle(*it, ptr + "/Lifecycle");
    if (auto it = m.find("Artifacts"); it != m.end()) {
      if (!it->is_array())
        error(ptr + "/Artifacts", "Artifacts must be a list");
      else
        for (size_t i = 0; i < it->size(); ++i)
          artifact((*it)[i], ptr + "/Artifacts/" + std::to_string(i));
    }
    if (auto it = m.find("Selections"); it != m.end()) {
      if (!it->is_array()
          || !std::all_of(it->begin(), it->end(), [](const json& s) { return s.is_string(); }))
        error(ptr + "/Selections", "Selections must be a list of strings");
    }
  }

  std::optional<recipe> check(json doc) {
    recipe r;
    if (!doc.is_object()) {
      error("", "a recipe is a map (YAML) or an object (JSON)");
      return std::nullopt;
    }
    unknown_keys(doc, "",
                 {"RecipeFormatVersion", "ComponentName", "ComponentVersion", "ComponentType",
                  "ComponentDescription", "ComponentPublisher", "ComponentSource",
                  "ComponentConfiguration", "ComponentDependencies", "Manifests", "Lifecycle"});
    if (auto f = string_at(doc, "", "RecipeFormatVersion", true))
      if (*f != "2020-01-25")
        error("/RecipeFormatVersion", "RecipeFormatVersion must be '2020-01-25'");
    if (auto n = string_at(doc, "", "ComponentName", true)) {
      r.name = n->get<std::string>();
      if (!valid_component_name(r.name))
        error("/ComponentName", "ComponentName must be 1 to 128 of [A-Za-z0-9._-], not "
                                "starting with '.'");
    }
    if (auto v = string_at(doc, "", "ComponentVersion", true)) {
      std::string why;
      const auto& text = v->get_ref<const std::string&>();
      if (text.size() > 64)
        error("/ComponentVersion", "ComponentVersion is longer than 64 characters");
      else if (auto sv = parse_semver(text, &why))
        r.version = *sv;
      else
        error("/ComponentVersion", "ComponentVersion '" + text.substr(0, 64)
                                     + "' is not a semantic version (MAJOR.MINOR.PATCH): " + why);
    }
    if (auto t = string_at(doc, "", "ComponentType", false)) {
      auto s = t->get<std::string>();
      if (s != "aws.greengrass.generic" && s != "aws.greengrass.lambda"
          && s != "aws.greengrass.plugin" && s != "aws.greengrass.nucleus")
        error("/ComponentType", "ComponentType must be aws.greengrass.generic, "
                                "aws.greengrass.lambda, aws.greengrass.plugin or "
                                "aws.greengrass.nucleus");
    }
    if (auto d = string_at(doc, "", "ComponentDescription", false))
      r.description = d->get<std::string>();
    if (auto p = string_at(doc, "", "ComponentPublisher", false))
      r.publisher = p->get<std::string>();
    string_at(doc, "", "ComponentSource", false);
    if (auto it = doc.find("ComponentConfiguration"); it != doc.end()) {
      if (object_at(*it, "/ComponentConfiguration", "ComponentConfiguration")) {
        unknown_keys(*it, "/ComponentConfiguration", {"DefaultConfiguration"});
        if (auto dc = it->find("DefaultConfiguration"); dc != it->end())
          object_at(*dc, "/ComponentConfiguration/DefaultConfiguration", "DefaultConfiguration");
      }
    }
    if (auto it = doc.find("ComponentDependencies"); it != doc.end()) {
      const std::string base = "/ComponentDependencies";
      if (object_at(*it, base, "ComponentDependencies"))
        for (auto d = it->begin(); d != it->end(); ++d) {
          auto p = base + "/" + escape_pointer(d.key());
          if (!valid_component_name(d.key()))
            error(p, "'" + d.key().substr(0, 128) + "' is not a component name");
          if (d.key() == r.name)
            error(p, "a component cannot depend on itself");
          if (!object_at(*d, p, "a dependency"))
            continue;
          unknown_keys(*d, p, {"VersionRequirement", "DependencyType"});
          if (auto vr = string_at(*d, p, "VersionRequirement", false)) {
            std::string why;
            if (!parse_range(vr->get_ref<const std::string&>(), &why))
              error(p + "/VersionRequirement", "not a version range: " + why);
          }
          if (auto dt = string_at(*d, p, "DependencyType", false))
            if (*dt != "HARD" && *dt != "SOFT")
              error(p + "/DependencyType", "DependencyType must be HARD or SOFT");
        }
    }
    r.platforms = json::array();
    if (auto it = doc.find("Manifests"); it != doc.end()) {
      if (!it->is_array())
        error("/Manifests", "Manifests must be a list");
      else
        for (size_t i = 0; i < it->size(); ++i)
          manifest((*it)[i], "/Manifests/" + std::to_string(i), r.platforms);
    }
    // The recipe's own Lifecycle runs only where a manifest has none (lifecycle_of); the
    // older format's one, keyed by selection names, beside manifests that each have their
    // own is never read, so it is not checked then.
    auto manifests = doc.find("Manifests");
    bool global_used = manifests == doc.end() || !manifests->is_array() || manifests->empty()
                       || std::any_of(manifests->begin(), manifests->end(), [](const json& m) {
                            return !m.is_object() || !m.contains("Lifecycle");
                          });
    if (auto it = doc.find("Lifecycle"); it != doc.end() && global_used)
      lifecycle(*it, "/Lifecycle");
    // YAML passes bytes through as they are; JSON text (and the store) needs UTF-8.
    try {
      (void) doc.dump();
    } catch (const json::exception&) {
      error("", "the recipe is not valid UTF-8");
    }
    if (!errors.empty())
      return std::nullopt;
    r.doc = std::move(doc);
    return r;
  }
};

void emit(YAML::Emitter& out, const json& v) {
  switch (v.type()) {
    case json::value_t::object:
      out << YAML::BeginMap;
      for (auto it = v.begin(); it != v.end(); ++it) {
        out << YAML::Key << it.key() << YAML::Value;
        emit(out, it.value());
      }
      out << YAML::EndMap;
      break;
    case json::value_t::array:
      out << YAML::BeginSeq;
      for (const auto& e : v)
        emit(out, e);
      out << YAML::EndSeq;
      break;
    case json::value_t::string: {
      // Quote what a reader would otherwise take for another type.
      const auto& s = v.get_ref<const std::string&>();
      bool plain = false;
      try {
        YAML::Node probe = YAML::Load(s.empty() ? "''" : s);
        // Also quoted: what a YAML 1.1 reader (PyYAML, older Jackson) would take for a
        // number, date or boolean: anything starting with a digit, yes/no/on/off.
        static const char* words11[] = {"y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No",
                                        "NO", "on", "On", "ON", "off", "Off", "OFF"};
        bool risky = (!s.empty() && ((s[0] >= '0' && s[0] <= '9') || s[0] == '-' || s[0] == '.'
                                     || s[0] == ' ' || s.back() == ' '))
                     || std::find(std::begin(words11), std::end(words11), s) != std::end(words11)
                     // A control character (a trailing CR reads back as a line break).
                     || std::any_of(s.begin(), s.end(),
                                    [](char c) { return static_cast<unsigned char>(c) < 0x20; });
        plain = !risky && s.find_first_of(":#\n\"'{}[]&*!|>%@`,") == std::string::npos && probe.IsScalar() && probe.Tag() != "!" && scalar(probe).is_string()
                && scalar(probe).get<std::string>() == s;
      } catch (...) {
        plain = false;
      }
      if (!plain)
        out << YAML::DoubleQuoted;
      out << s;
      break;
    }
    case json::value_t::boolean:
      out << v.get<bool>();
      break;
    case json::value_t::null:
      out << YAML::Null;
      break;
    default:
      out << v.dump();
      break;
  }
}

} // namespace

bool valid_component_name(std::string_view name) {
  if (name.empty() || name.size() > 128 || name[0] == '.')
    return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.'
           || c == '_' || c == '-';
  });
}

std::optional<json> yaml_json(const YAML::Node& node) {
  std::vector<recipe_error> errors;
  yaml_reader reader{{}, errors};
  json out;
  if (!reader.convert(node, "", out, 0))
    return std::nullopt;
  return out;
}

std::optional<recipe> parse_recipe(std::string_view text, std::vector<recipe_error>& errors) {
  if (text.size() > max_recipe_bytes) {
    errors.push_back({"/", "the recipe is larger than " + std::to_string(max_recipe_bytes)
                             + " bytes"});
    return std::nullopt;
  }
  auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) {
    errors.push_back({"/", "the recipe is empty"});
    return std::nullopt;
  }
  if (text.find('\0') != std::string_view::npos) {
    errors.push_back({"/", "the recipe holds a NUL byte (not YAML or JSON text)"});
    return std::nullopt;
  }
  // Both parsers recurse per level: refuse deep nesting before either sees it.
  {
    size_t depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < text.size(); ++i) {
      char c = text[i];
      if (in_string) {
        if (c == '\\')
          ++i;
        else if (c == '"')
          in_string = false;
        continue;
      }
      if (c == '"')
        in_string = true;
      else if (c == '{' || c == '[')
        ++depth;
      else if ((c == '}' || c == ']') && depth > 0)
        --depth;
      if (depth > max_depth) {
        errors.push_back({"/", "nested deeper than 64 levels"});
        return std::nullopt;
      }
    }
  }
  if (text[first] == '{' || text[first] == '[') {
    auto doc = json::parse(text, nullptr, false);
    if (doc.is_discarded()) {
      // Again with exceptions, for the position.
      std::string what = "not valid JSON";
      try {
        auto again = json::parse(text);
        (void) again;
      } catch (const json::parse_error& e) {
        what = std::string{"not valid JSON: "} + e.what();
      } catch (...) {
      }
      errors.push_back({"/", what});
      return std::nullopt;
    }
    // nlohmann's depth is unbounded on output; refuse what YAML would refuse too.
    checker c{errors};
    return c.check(std::move(doc));
  }
  yaml_reader reader{{}, errors};
  json doc;
  try {
    auto node = YAML::Load(std::string{text});
    if (!reader.convert(node, "", doc, 0))
      return std::nullopt;
  } catch (const YAML::Exception& e) {
    errors.push_back({"/", "not valid YAML: line " + std::to_string(e.mark.line + 1) + ": "
                             + e.msg});
    return std::nullopt;
  } catch (const std::exception& e) {
    errors.push_back({"/", std::string{"not valid YAML: "} + e.what()});
    return std::nullopt;
  }
  checker c{errors, &reader.lines};
  return c.check(std::move(doc));
}

std::string recipe_json(const nlohmann::json& doc) {
  return doc.dump(2);
}

std::string recipe_yaml(const nlohmann::json& doc) {
  YAML::Emitter out;
  emit(out, doc);
  return std::string{out.c_str()} + "\n";
}

} // namespace grove::deployment
