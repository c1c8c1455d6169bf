#include "imagebuilder_document.hpp"

#include <algorithm>
#include <cctype>
#include <regex>
#include <set>

#include <yaml-cpp/yaml.h>

namespace grove::deployment {

namespace {

constexpr std::string_view phase_names[] = {"build", "validate", "test"};
constexpr std::string_view on_failure_values[] = {"Abort", "Continue", "Ignore"};
constexpr std::string_view doc_keys[] = {"constants", "description", "name", "parameters",
                                         "phases", "schemaVersion"};
constexpr std::string_view step_keys[] = {"action",   "inputs",         "maxAttempts",
                                          "name",     "onFailure",      "timeoutSeconds"};
constexpr int64_t max_timeout = 86400;
constexpr int64_t max_attempts = 10;

template <size_t N>
bool one_of(std::string_view v, const std::string_view (&set)[N]) {
  return std::find(std::begin(set), std::end(set), v) != std::end(set);
}

template <size_t N>
std::string joined(const std::string_view (&set)[N]) {
  std::string out;
  for (auto s : set)
    out += (out.empty() ? "" : ", ") + std::string{s};
  return out;
}

// Thrown inside the checker only; parse_component_document() turns it into the error.
struct refused {
  component_document_error err;
};

[[noreturn]] void fail(const YAML::Node& at, std::string field, std::string what) {
  std::string line;
  if (at.IsDefined() && at.Mark().line >= 0)
    line = "line " + std::to_string(at.Mark().line + 1) + ": ";
  throw refused{{std::move(field), line + std::move(what)}};
}

// Whether a plain (unquoted) scalar is something other than a string to a YAML 1.1
// reader (grove-image's PyYAML): null, a bool, an int or a float. Such a value where a
// string belongs is refused here as grove-image refuses it.
bool plain_non_string(const std::string& s) {
  static const std::regex non_string{
    "|~|null|Null|NULL"
    "|yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF"
    "|[-+]?0b[01_]+|[-+]?0[0-7_]+|[-+]?(0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
    "|[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+"
    "|[-+]?([0-9][0-9_]*)?\\.[0-9_]*([eE][-+][0-9]+)?"
    "|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\\.[0-9_]*"
    "|[-+]?\\.(inf|Inf|INF)|\\.(nan|NaN|NAN)"};
  if (s.size() > 64)
    return false;
  return std::regex_match(s, non_string);
}

// A string value: a quoted scalar, or a plain one a YAML 1.1 reader reads as a string.
std::optional<std::string> as_string(const YAML::Node& n) {
  if (!n.IsScalar())
    return std::nullopt;
  const auto& s = n.Scalar();
  if (n.Tag() == "?" && plain_non_string(s))
    return std::nullopt;
  if (n.Tag() != "?" && n.Tag() != "!" && n.Tag() != "tag:yaml.org,2002:str")
    return std::nullopt;
  return s;
}

// An integer value: a plain decimal scalar (what grove-image takes as an int).
std::optional<int64_t> as_int(const YAML::Node& n) {
  if (!n.IsScalar() || n.Tag() != "?")
    return std::nullopt;
  const auto& s = n.Scalar();
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  if (s.size() <= i || s.size() - i > 12
      || !std::all_of(s.begin() + static_cast<std::ptrdiff_t>(i), s.end(),
                      [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    return std::nullopt;
  if (s.size() - i > 1 && s[i] == '0')
    return std::nullopt; // octal to YAML 1.1
  return std::stoll(s);
}

// A value shown in a message, cut short.
std::string shown(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull())
    return "None";
  if (n.IsScalar()) {
    auto s = n.Scalar().substr(0, 64);
    for (auto& c : s)
      if (static_cast<unsigned char>(c) < 0x20)
        c = '?';
    return "'" + s + "'";
  }
  return n.IsMap() ? "a map" : "a list";
}

// The map's keys, each checked to be a string and unique (PyYAML keeps the last of two;
// grove-image refuses them, and so does this).
std::vector<std::pair<std::string, YAML::Node>> entries(const YAML::Node& map,
                                                        const std::string& where) {
  std::vector<std::pair<std::string, YAML::Node>> out;
  std::set<std::string> seen;
  for (auto it = map.begin(); it != map.end(); ++it) {
    auto key = as_string(it->first);
    if (!key)
      fail(it->first, where, "keys must be strings");
    if (!seen.insert(*key).second)
      fail(it->first, where, "duplicate key '" + key->substr(0, 64) + "'");
    out.emplace_back(*key, it->second);
  }
  return out;
}

YAML::Node find(const std::vector<std::pair<std::string, YAML::Node>>& kv, std::string_view key) {
  for (const auto& [k, v] : kv)
    if (k == key)
      return v;
  return YAML::Node{YAML::NodeType::Undefined};
}

bool present(const YAML::Node& n) {
  return n.IsDefined();
}

component_step check_step(const YAML::Node& step, const std::string& phase, size_t j,
                          std::set<std::string>& names) {
  auto sw = phase + ".steps[" + std::to_string(j) + "]";
  if (!step.IsMap())
    fail(step, sw, "must be a map");
  auto kv = entries(step, sw);
  for (const auto& [k, v] : kv)
    if (!one_of(k, step_keys))
      fail(v, sw + "." + k.substr(0, 64), "unknown key (allowed: " + joined(step_keys) + ")");
  component_step out;
  auto name_node = find(kv, "name");
  static const std::regex step_name{"[A-Za-z0-9_-]{1,128}"};
  auto name = present(name_node) ? as_string(name_node) : std::nullopt;
  if (!name || !std::regex_match(*name, step_name))
    fail(present(name_node) ? name_node : step, sw + ".name",
         "required, must match ^[A-Za-z0-9_-]{1,128}$, got " + shown(name_node));
  if (!names.insert(*name).second)
    fail(name_node, sw + ".name", "step '" + *name + "' appears twice in phase " + phase);
  out.name = *name;
  sw = phase + "." + *name;
  auto action_node = find(kv, "action");
  auto action = present(action_node) ? as_string(action_node) : std::nullopt;
  if (!action || *action != "ExecuteBash")
    fail(present(action_node) ? action_node : step, sw + ".action",
         "unsupported action " + shown(action_node) + " (supported: ExecuteBash)");
  out.action = *action;
  if (auto n = find(kv, "onFailure"); present(n)) {
    auto v = as_string(n);
    if (!v || !one_of(*v, on_failure_values))
      fail(n, sw + ".onFailure",
           "must be one of " + joined(on_failure_values) + ", got " + shown(n));
    out.on_failure = *v;
  }
  if (auto n = find(kv, "timeoutSeconds"); present(n)) {
    auto v = as_int(n);
    if (!v || *v < 1 || *v > max_timeout)
      fail(n, sw + ".timeoutSeconds",
           "must be an integer 1-" + std::to_string(max_timeout) + ", got " + shown(n));
    out.timeout_seconds = *v;
  }
  if (auto n = find(kv, "maxAttempts"); present(n)) {
    auto v = as_int(n);
    if (!v || *v < 1 || *v > max_attempts)
      fail(n, sw + ".maxAttempts",
           "must be an integer 1-" + std::to_string(max_attempts) + ", got " + shown(n));
    out.max_attempts = *v;
  }
  auto inputs = find(kv, "inputs");
  if (!present(inputs) || !inputs.IsMap() || inputs.size() != 1
      || !as_string(inputs.begin()->first) || *as_string(inputs.begin()->first) != "commands")
    fail(present(inputs) ? inputs : step, sw + ".inputs",
         "must be a map with exactly the key commands");
  auto commands = inputs.begin()->second;
  if (!commands.IsSequence() || commands.size() == 0)
    fail(commands, sw + ".inputs.commands", "must be a non-empty list of strings");
  size_t k = 0;
  for (const YAML::Node& c : commands) {
    auto text = as_string(c);
    if (!text || text->find('\0') != std::string::npos)
      fail(c, sw + ".inputs.commands[" + std::to_string(k) + "]",
           "must be a string without NUL, got " + shown(c));
    out.commands.push_back(*text);
    ++k;
  }
  return out;
}

component_document check(const YAML::Node& doc) {
  if (!doc.IsMap())
    fail(doc, "document", "must be a map with name, schemaVersion and phases");
  auto kv = entries(doc, "document");
  for (const auto& [k, v] : kv)
    if (!one_of(k, doc_keys))
      // An empty key (YAML allows `'': x`) still gets a field to name.
      fail(v, k.empty() ? std::string{"document"} : k.substr(0, 64),
           std::string{k.empty() ? "an empty key" : "unknown key"} + " (allowed: "
             + joined(doc_keys) + ")");
  for (const char* key : {"parameters", "constants"})
    if (auto n = find(kv, key); present(n))
      fail(n, key, "not supported by grove-image (no parameter substitution)");
  component_document out;
  auto name_node = find(kv, "name");
  auto name = present(name_node) ? as_string(name_node) : std::nullopt;
  if (!name || !valid_imagebuilder_name(*name))
    fail(present(name_node) ? name_node : doc, "name",
         "required, must match ^[-_A-Za-z0-9][-_A-Za-z0-9 ]{1,126}[-_A-Za-z0-9]$, got "
           + shown(name_node));
  out.name = *name;
  if (auto n = find(kv, "description"); present(n)) {
    auto v = as_string(n);
    if (!v)
      fail(n, "description", "must be a string");
    out.description = *v;
  }
  // YAML 1.1 reads 1.0 as a float; documents write it either way.
  auto version = find(kv, "schemaVersion");
  if (!present(version) || !version.IsScalar() || version.Scalar() != "1.0")
    fail(present(version) ? version : doc, "schemaVersion",
         "must be 1.0, got " + shown(version));
  auto phases = find(kv, "phases");
  if (!present(phases) || !phases.IsSequence() || phases.size() == 0)
    fail(present(phases) ? phases : doc, "phases", "required: a non-empty list of {name, steps}");
  std::set<std::string> seen;
  size_t i = 0;
  for (const YAML::Node& phase : phases) {
    auto where = "phases[" + std::to_string(i++) + "]";
    if (!phase.IsMap())
      fail(phase, where, "must be a map with name and steps");
    auto pkv = entries(phase, where);
    for (const auto& [k, v] : pkv)
      if (k != "name" && k != "steps")
        fail(v, where + "." + k.substr(0, 64), "unknown key (allowed: name, steps)");
    auto pname_node = find(pkv, "name");
    auto pname = present(pname_node) ? as_string(pname_node) : std::nullopt;
    if (!pname || !one_of(*pname, phase_names))
      fail(present(pname_node) ? pname_node : phase, where + ".name",
           "must be one of " + joined(phase_names) + ", got " + shown(pname_node));
    if (!seen.insert(*pname).second)
      fail(pname_node, where + ".name", "phase '" + *pname + "' appears twice");
    auto steps = find(pkv, "steps");
    if (!present(steps) || !steps.IsSequence() || steps.size() == 0)
      fail(present(steps) ? steps : phase, where + ".steps", "required: a non-empty list");
    component_phase p;
    p.name = *pname;
    std::set<std::string> names;
    size_t j = 0;
    for (const YAML::Node& step : steps)
      p.steps.push_back(check_step(step, *pname, j++, names));
    out.phases.push_back(std::move(p));
  }
  return out;
}

} // namespace

bool valid_imagebuilder_name(std::string_view name) {
  auto edge = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  };
  if (name.size() < 3 || name.size() > 128 || !edge(name.front()) || !edge(name.back()))
    return false;
  return std::all_of(name.begin(), name.end(), [&](char c) { return edge(c) || c == ' '; });
}

std::optional<component_document> parse_component_document(std::string_view text,
                                                           component_document_error& err) {
  if (text.size() > max_component_document_bytes) {
    err = {"document", std::to_string(text.size()) + " bytes, at most "
                         + std::to_string(max_component_document_bytes)};
    return std::nullopt;
  }
  if (text.find('\0') != std::string_view::npos) {
    err = {"document", "holds a NUL byte (not YAML text)"};
    return std::nullopt;
  }
  // yaml-cpp recurses per level of flow nesting; a document needs 5 levels at most.
  size_t depth = 0;
  for (char c : text) {
    if (c == '{' || c == '[')
      ++depth;
    else if ((c == '}' || c == ']') && depth > 0)
      --depth;
    if (depth > 32) {
      err = {"document", "nested deeper than 32 levels"};
      return std::nullopt;
    }
  }
  try {
    auto doc = YAML::Load(std::string{text});
    return check(doc);
  } catch (const refused& r) {
    err = r.err;
  } catch (const YAML::Exception& e) {
    err = {"document", "not YAML: line " + std::to_string(e.mark.line + 1) + ": " + e.msg};
  } catch (const std::exception& e) {
    err = {"document", std::string{"not YAML: "} + e.what()};
  }
  return std::nullopt;
}

} // namespace grove::deployment
