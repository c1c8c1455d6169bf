#include "grove/kernel/config.hpp"

#include <arpa/inet.h>

#include <cstdlib>
#include <set>
#include <unordered_map>

#include "grove/config_map.hpp"
#include "grove/errors.hpp"
#include "grove/kernel/plugin_name.hpp"

namespace grove::detail {
struct node_identity;
} // namespace grove::detail

/// A node's identity (its node_ref, what yaml-cpp's own writer keys anchors on): yaml-cpp
/// befriends every as_if specialization, and has no public way to it.
template <>
struct YAML::as_if<grove::detail::node_identity, grove::detail::node_identity> {
  static const void* of(const YAML::Node& n) {
    return n.m_pNode ? n.m_pNode->ref() : nullptr;
  }
};

namespace grove {

namespace {

constexpr std::string_view type_names[] = {"int",  "float", "bool", "string",
                                           "list", "map",   "any"};

constexpr std::string_view spec_attributes[]
  = {"type", "required", "default", "min", "max", "min_key", "enum", "keys", "items", "open",
     "doc"};

std::string where(std::string_view file, const YAML::Node& node) {
  auto mark = node.Mark();
  std::string result{file};
  if (!mark.is_null())
    result += ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
  return result;
}

using detail::join_path;


std::string show(const YAML::Node& node) {
  if (node.IsScalar())
    return "'" + node.Scalar() + "'";
  if (node.IsSequence())
    return "a list";
  if (node.IsMap())
    return "a map";
  return "nothing";
}

using detail::scalar_as;

// -- schema self-check --------------------------------------------------------

caf::error check_spec(const YAML::Node& spec, std::string_view origin,
                      std::string_view path);

caf::error check_keys(const YAML::Node& keys, std::string_view origin,
                      std::string_view path) {
  if (!keys.IsMap())
    return config_error(origin, keys, path, "schema 'keys' must be a map");
  for (auto kv : keys) {
    auto key = kv.first.Scalar();
    if (auto err = check_spec(kv.second, origin, join_path(path, key)))
      return err;
    // min_key: a bound that is another number key of this map.
    if (auto other = kv.second["min_key"]) {
      auto name = other.IsScalar() ? other.Scalar() : std::string{};
      auto spec = name.empty() || name == key ? YAML::Node{} : keys[name];
      auto type = spec.IsDefined() && spec.IsMap() ? spec["type"] : YAML::Node{};
      if (!type.IsDefined() || !type.IsScalar()
          || (type.Scalar() != "int" && type.Scalar() != "float"))
        return config_error(origin, other, join_path(path, key),
                            "'min_key' must name another int or float key of the same map");
    }
  }
  return {};
}

caf::error check_spec(const YAML::Node& spec, std::string_view origin,
                      std::string_view path) {
  if (!spec.IsMap())
    return config_error(origin, spec, path, "schema entry must be a map with a 'type'");
  for (auto kv : spec) {
    auto attr = kv.first.Scalar();
    if (std::find(std::begin(spec_attributes), std::end(spec_attributes), attr)
        == std::end(spec_attributes))
      return config_error(origin, kv.first, path, "unknown schema attribute '" + attr + "'");
  }
  auto type = spec["type"];
  if (!type || !type.IsScalar()
      || std::find(std::begin(type_names), std::end(type_names), type.Scalar())
           == std::end(type_names))
    return config_error(origin, spec, path,
                "schema 'type' must be one of int, float, bool, string, list, map, any");
  auto t = type.Scalar();
  if (spec["keys"] && t != "map")
    return config_error(origin, spec, path, "'keys' only applies to type map");
  if (spec["items"] && t != "list")
    return config_error(origin, spec, path, "'items' only applies to type list");
  if ((spec["min"] || spec["max"] || spec["min_key"]) && t != "int" && t != "float")
    return config_error(origin, spec, path,
                        "'min'/'max'/'min_key' only apply to int and float");
  if (spec["enum"] && (t != "string" || !spec["enum"].IsSequence()))
    return config_error(origin, spec, path, "'enum' must be a list and only applies to strings");
  if (auto keys = spec["keys"])
    if (auto err = check_keys(keys, origin, path))
      return err;
  if (auto items = spec["items"])
    if (auto err = check_spec(items, origin, join_path(path, "[]")))
      return err;
  return {};
}

// -- validation ---------------------------------------------------------------

caf::expected<YAML::Node> check(const YAML::Node& value, const YAML::Node& spec,
                                std::string_view file, const std::string& path);

// The min_key bounds of a checked map `result` (defaults filled in) read from `value`:
// the error is at the bounded key's line when it is given, else at the other key's.
caf::error check_min_keys(const YAML::Node& value, const YAML::Node& result,
                          const YAML::Node& keys, std::string_view file,
                          const std::string& path) {
  for (auto k : keys) {
    auto bound = k.second["min_key"];
    if (!bound)
      continue;
    auto key = k.first.Scalar();
    auto other = bound.Scalar();
    auto x = result[key];
    auto lo = result[other];
    double xv = 0;
    double lov = 0;
    if (!x.IsDefined() || !lo.IsDefined() || !scalar_as(x, xv) || !scalar_as(lo, lov)
        || xv >= lov)
      continue;
    // Copies of handles only: assigning a YAML::Node that refers into a tree would
    // overwrite that tree's node.
    auto given = [&](const std::string& name) -> std::optional<YAML::Node> {
      if (!value || !value.IsMap())
        return std::nullopt;
      auto n = value[name];
      return n.IsDefined() ? std::optional<YAML::Node>{n} : std::nullopt;
    };
    auto mine = given(key);
    auto theirs = given(other);
    const YAML::Node& at = mine ? *mine : theirs ? *theirs : value;
    return config_error(file, at, join_path(path, key),
                        "must be at least " + other + " (" + lo.Scalar() + "), got "
                          + x.Scalar() + (mine ? "" : " (its default)"));
  }
  return {};
}

caf::expected<YAML::Node> check_map(const YAML::Node& value, const YAML::Node& keys,
                                    bool open, std::string_view file,
                                    const std::string& path) {
  YAML::Node result{YAML::NodeType::Map};
  if (value && !value.IsNull() && !value.IsMap())
    return config_error(file, value, path, "expected a map, got " + show(value));
  std::set<std::string> seen;
  if (value && value.IsMap()) {
    for (auto kv : value) {
      if (!kv.first.IsScalar())
        return config_error(file, kv.first, path, "keys must be plain strings");
      auto key = kv.first.Scalar();
      if (!seen.insert(key).second)
        return config_error(file, kv.first, join_path(path, key), "duplicate key");
      // A default-constructed YAML::Node counts as defined (null), so test explicitly.
      bool known = keys.IsDefined() && keys.IsMap() && keys[key].IsDefined();
      if (!known) {
        if (open) {
          result[key] = YAML::Clone(kv.second);
          continue;
        }
        std::string known;
        if (keys.IsDefined() && keys.IsMap())
          for (auto k : keys)
            known += (known.empty() ? "" : ", ") + k.first.Scalar();
        return config_error(file, kv.first, join_path(path, key),
                    "unknown key" + (known.empty() ? std::string{" (no keys allowed)"}
                                                   : " (allowed: " + known + ")"));
      }
      auto checked = check(kv.second, keys[key], file, join_path(path, key));
      if (!checked)
        return checked.error();
      result[key] = *checked;
    }
  }
  if (keys.IsDefined() && keys.IsMap()) {
    for (auto k : keys) {
      auto key = k.first.Scalar();
      if (seen.count(key))
        continue;
      auto spec = k.second;
      if (spec["required"] && spec["required"].as<bool>(false))
        return config_error(file, value ? value : YAML::Node{}, join_path(path, key),
                    "required key is missing");
      if (auto def = spec["default"]) {
        result[key] = YAML::Clone(def);
      } else if (spec["type"].Scalar() == "map") {
        // Nested maps get their own defaults even when absent.
        auto nested = check_map(YAML::Node{}, spec["keys"],
                                spec["open"] && spec["open"].as<bool>(false), file,
                                join_path(path, key));
        if (!nested)
          return nested.error();
        if (nested->size() > 0)
          result[key] = *nested;
      }
    }
    if (auto err = check_min_keys(value, result, keys, file, path))
      return err;
  }
  return result;
}

caf::expected<YAML::Node> check(const YAML::Node& value, const YAML::Node& spec,
                                std::string_view file, const std::string& path) {
  auto type = spec["type"].Scalar();
  if (type == "any")
    return YAML::Clone(value);
  if (type == "map")
    return check_map(value, spec["keys"], spec["open"] && spec["open"].as<bool>(false),
                     file, path);
  if (type == "list") {
    if (!value.IsSequence())
      return config_error(file, value, path, "expected a list, got " + show(value));
    YAML::Node result{YAML::NodeType::Sequence};
    auto items = spec["items"];
    for (size_t i = 0; i < value.size(); ++i) {
      auto item_path = path + "[" + std::to_string(i) + "]";
      if (!items) {
        result.push_back(YAML::Clone(value[i]));
        continue;
      }
      auto checked = check(value[i], items, file, item_path);
      if (!checked)
        return checked.error();
      result.push_back(*checked);
    }
    return result;
  }
  if (!value.IsScalar())
    return config_error(file, value, path, "expected " + type + ", got " + show(value));
  if (type == "int") {
    long long x = 0;
    if (!scalar_as(value, x))
      return config_error(file, value, path, "expected an integer, got " + show(value));
    if (auto mn = spec["min"]; mn && x < mn.as<long long>())
      return config_error(file, value, path,
                  "must be at least " + mn.Scalar() + ", got " + value.Scalar());
    if (auto mx = spec["max"]; mx && x > mx.as<long long>())
      return config_error(file, value, path,
                  "must be at most " + mx.Scalar() + ", got " + value.Scalar());
  } else if (type == "float") {
    double x = 0;
    if (!scalar_as(value, x))
      return config_error(file, value, path, "expected a number, got " + show(value));
    if (auto mn = spec["min"]; mn && x < mn.as<double>())
      return config_error(file, value, path,
                  "must be at least " + mn.Scalar() + ", got " + value.Scalar());
    if (auto mx = spec["max"]; mx && x > mx.as<double>())
      return config_error(file, value, path,
                  "must be at most " + mx.Scalar() + ", got " + value.Scalar());
  } else if (type == "bool") {
    bool x = false;
    if (!scalar_as(value, x))
      return config_error(file, value, path, "expected true or false, got " + show(value));
  } else if (type == "string") {
    if (auto choices = spec["enum"]) {
      bool found = false;
      std::string all;
      for (auto c : choices) {
        found = found || c.Scalar() == value.Scalar();
        all += (all.empty() ? "" : ", ") + c.Scalar();
      }
      if (!found)
        return config_error(file, value, path,
                    "must be one of " + all + ", got " + show(value));
    }
  }
  return YAML::Clone(value);
}

// The kernel's own profile schema, checked with the same validator as plugin schemas.
constexpr std::string_view profile_schema_text = R"(
kernel:
  type: map
  keys:
    write_dir: {type: string, doc: "state directory; default ./var"}
    plugin_dir: {type: string, doc: "where lib<name>.so files are"}
    control_socket: {type: string, doc: "default <write_dir>/run/control.sock"}
    group: {type: string, doc: "group definition file, YAML or JSON"}
    log_level: {type: string, default: info,
                enum: [trace, debug, info, warn, error, critical, off]}
    worker_threads: {type: int, default: 0, min: 0, max: 256}
    idle_poll_attempts: {type: int, default: 500, min: 0, max: 100000,
                         doc: "polls of ~50 us a worker makes after its last job before it sleeps until woken; CAF's 500 favour bursts, 20 an idle device"}
    worker_timer_slack_ns: {type: int, default: 1000, min: 1, max: 100000000,
                            doc: "how late Linux may wake a CAF worker's idle poll (its timer slack); Linux's 50000 makes each ~50 us poll ~100 us, and a job waits for the next one"}
    release_code_pages: {type: bool, default: true,
                         doc: "2 s after start and after each plugin load, mark start-up code cold and let the OS reclaim it, MADV_PAGEOUT"}
    init_timeout_ms: {type: int, default: 10000, min: 1, max: 3600000,
                      doc: "a plugin's init and start must finish within this, else its load fails"}
    stop_timeout_ms: {type: int, default: 10000, min: 1, max: 3600000,
                      doc: "unload and shutdown wait this long for a plugin's stop, then give it up"}
    bus:
      type: map
      keys:
        queue_capacity: {type: int, default: 10000, min: 1, max: 100000000}
        overflow: {type: string, default: drop, enum: [drop, block]}
        block_timeout_ms: {type: int, default: 1000, min: 0, max: 3600000}
        max_payload_bytes: {type: int, default: 15728640, min: 1024, max: 66060288,
                            doc: "largest payload of a publish, request or reply; below the plugin-host frame cap of 64 MiB"}
    restart:
      type: map
      keys:
        max_failures: {type: int, default: 5, min: 1, max: 1000}
        window_seconds: {type: int, default: 60, min: 1, max: 86400}
        backoff_initial_ms: {type: int, default: 100, min: 1, max: 3600000}
        backoff_max_ms: {type: int, default: 10000, min: 1, max: 3600000}
    metrics:
      type: map
      doc: "Prometheus text endpoint (GET /metrics); off unless port is set"
      keys:
        bind: {type: string, default: 127.0.0.1,
               doc: "numeric IPv4 or IPv6 address; reachable by every local user"}
        port: {type: int, default: 0, min: 0, max: 65535, doc: "TCP port; 0 = off"}
plugins:
  type: list
  default: []
  items:
    type: map
    keys:
      name: {type: string, required: true}
      config: {type: any}
      log_level: {type: string, enum: [trace, debug, info, warn, error, critical, off]}
      queue_capacity: {type: int, min: 1, max: 100000000}
      overflow: {type: string, enum: [drop, block]}
      block_timeout_ms: {type: int, min: 0, max: 3600000}
      isolation: {type: string, default: in_process, enum: [in_process, process]}
      may_claim: {type: list, default: [], items: {type: string}, doc: "envelope sources the plugin may set: names, or prefixes ending in '*'"}
      may_set_group: {type: bool, default: false, doc: "the plugin may replace the group on $grove/group/set"}
      may_control_plugins: {type: bool, default: false, doc: "the plugin may load, unload, reload and reconfigure other plugins on $grove/kernel/plugins/*"}
image:
  type: map
  doc: "read by tools/grove-image only; groved ignores it"
  keys:
    components: {type: list, default: [], items: {type: string},
                 doc: "Image Builder build component documents run against the image tree, relative to the profile"}
)";

std::filesystem::path absolute_from(const std::filesystem::path& base,
                                    const std::filesystem::path& p) {
  if (p.is_absolute())
    return p.lexically_normal();
  return std::filesystem::absolute(base / p).lexically_normal();
}

} // namespace

caf::expected<config_schema> config_schema::parse(std::string_view text,
                                                  std::string_view origin) {
  auto node = parse_yaml(text, origin);
  if (!node)
    return node.error();
  if (!node->IsNull())
    if (auto err = check_keys(*node, origin, ""))
      return err;
  config_schema result;
  result.text_ = std::make_shared<const std::string>(node->IsNull() ? "" : text);
  result.origin_ = std::make_shared<const std::string>(origin);
  return result;
}

config_schema config_schema::empty() {
  config_schema result;
  result.text_ = std::make_shared<const std::string>();
  result.origin_ = std::make_shared<const std::string>("<empty schema>");
  return result;
}

caf::expected<YAML::Node> config_schema::parsed() const {
  if (text_ == nullptr || text_->empty())
    return YAML::Node{YAML::NodeType::Map};
  // parse() checked this text, so it parses again; an error here is a bug, reported as
  // such rather than as every key being unknown.
  return parse_yaml(*text_, *origin_);
}

YAML::Node config_schema::node() const {
  auto node = parsed();
  return node ? std::move(*node) : YAML::Node{YAML::NodeType::Map};
}

caf::expected<YAML::Node> config_schema::validate(const YAML::Node& value,
                                                  std::string_view file,
                                                  std::string_view path) const {
  auto schema = parsed();
  if (!schema)
    return schema.error();
  return check_map(value, *schema, false, file, std::string{path});
}

caf::error config_error(std::string_view file, const YAML::Node& node,
                        std::string_view field, const std::string& what) {
  return make_error(errc::invalid_config,
                    where(file, node) + ": " + std::string{field.empty() ? "(top)" : field}
                      + ": " + what);
}

caf::expected<YAML::Node> parse_yaml(std::string_view text, std::string_view origin) {
  try {
    return YAML::Load(std::string{text});
  } catch (const YAML::Exception& e) {
    return make_error(errc::invalid_config,
                      std::string{origin} + ":" + std::to_string(e.mark.line + 1) + ":"
                        + std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
}

namespace {

// A value in backticks, flow style ("" for an empty string).
std::string code(const YAML::Node& node) {
  YAML::Emitter out;
  out << YAML::Flow << node;
  std::string text = out.c_str();
  return "`" + (text.empty() ? std::string{"\"\""} : text) + "`";
}

// Markdown cells must not contain a bare '|' or a line break.
std::string cell(std::string text) {
  std::string result;
  for (char c : text) {
    if (c == '|')
      result += "\\|";
    else if (c == '\n')
      result += ' ';
    else
      result += c;
  }
  return result;
}

std::string bounds_of(const YAML::Node& spec) {
  auto mn = spec["min"];
  auto mx = spec["max"];
  auto key = spec["min_key"];
  auto also = key ? ", ≥ `" + key.Scalar() + "`" : std::string{};
  if (mn && mx)
    return mn.Scalar() + "–" + mx.Scalar() + also;
  if (mn)
    return "≥ " + mn.Scalar() + also;
  if (mx)
    return "≤ " + mx.Scalar() + also;
  if (key)
    return "≥ `" + key.Scalar() + "`";
  if (auto choices = spec["enum"]) {
    std::string all;
    for (auto c : choices)
      all += (all.empty() ? "" : ", ") + ("`" + c.Scalar() + "`");
    return all;
  }
  return {};
}

void table_rows(const YAML::Node& keys, const std::string& prefix, std::string& out) {
  if (!keys.IsDefined() || !keys.IsMap())
    return;
  for (auto kv : keys) {
    auto name = prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar();
    auto spec = kv.second;
    auto type = spec["type"].Scalar();
    auto items = spec["items"];
    std::string shown = type;
    if (type == "list" && items)
      shown = "list of " + items["type"].Scalar();
    else if (type == "map" && spec["open"] && spec["open"].as<bool>(false))
      shown = "map (open)";
    std::string def = "–";
    if (spec["required"] && spec["required"].as<bool>(false))
      def = "required";
    else if (auto d = spec["default"])
      def = code(d);
    auto range = bounds_of(type == "list" && items ? items : spec);
    auto doc = spec["doc"] ? spec["doc"].Scalar() : std::string{};
    out += "| `" + name + "` | " + shown + " | " + cell(def) + " | " + cell(range) + " | "
           + cell(doc) + " |\n";
    if (type == "map")
      table_rows(spec["keys"], name, out);
    else if (type == "list" && items && items["type"].Scalar() == "map")
      table_rows(items["keys"], name + "[]", out);
  }
}

} // namespace

std::string config_table(const config_schema& schema) {
  std::string out = "| key | type | default | range | meaning |\n"
                    "| --- | --- | --- | --- | --- |\n";
  table_rows(schema.node(), "", out);
  return out;
}

namespace {

using node_identity = YAML::as_if<detail::node_identity, detail::node_identity>;

/// Writes a node as yaml-cpp 0.7's `out << node` does (styles, tags, an anchor on a
/// node met twice, an alias after), except that a scalar read quoted (tag "!") is
/// written double-quoted: yaml-cpp drops the "!", so '1' or 'yes' came back plain and
/// were read as an int or a bool (its EmitFromEvents is not exported to override).
class node_writer {
public:
  node_writer(YAML::Emitter& out, const YAML::Node& root) : out_(out) {
    count(root);
  }

  void write(const YAML::Node& n) {
    auto id = node_identity::of(n);
    size_t anchor = 0;
    if (refs_[id] > 1) {
      auto [at, first] = anchors_.try_emplace(id, anchors_.size() + 1);
      if (!first) {
        out_ << YAML::Alias(std::to_string(at->second));
        return;
      }
      anchor = at->second;
    }
    const auto& tag = n.Tag();
    if (!n.IsNull() && !tag.empty() && tag != "?" && tag != "!")
      out_ << YAML::VerbatimTag(tag);
    if (anchor != 0)
      out_ << YAML::Anchor(std::to_string(anchor));
    if (n.IsSequence() || n.IsMap()) {
      // yaml-cpp writes a key over 1024 bytes (escapes and U+FFFD for bad UTF-8 can
      // quadruple it) as an explicit `? key`, which its parser does not read back inside
      // a flow map: a map with a long key goes in block style.
      if (n.Style() == YAML::EmitterStyle::Flow && !has_long_key(n))
        out_ << YAML::Flow;
      else if (n.Style() == YAML::EmitterStyle::Block)
        out_ << YAML::Block;
    }
    switch (n.Type()) {
      case YAML::NodeType::Undefined:
        break;
      case YAML::NodeType::Null:
        out_ << YAML::Null;
        break;
      case YAML::NodeType::Scalar:
        // Quoted when it was read quoted, and when it holds a control character, which
        // yaml-cpp writes raw in a plain scalar (and cannot read back) but escapes in a
        // double-quoted one.
        if (tag == "!" || has_control(n.Scalar()))
          out_ << YAML::DoubleQuoted;
        out_ << n.Scalar();
        break;
      case YAML::NodeType::Sequence:
        out_ << YAML::BeginSeq;
        for (const auto& e : n)
          write(e);
        out_ << YAML::EndSeq;
        break;
      case YAML::NodeType::Map:
        out_ << YAML::BeginMap;
        for (const auto& kv : n) {
          if (long_key(kv.first))
            out_ << YAML::LongKey; // `? key`: the parser reads no longer implicit key
          write(kv.first);
          write(kv.second);
        }
        out_ << YAML::EndMap;
        break;
    }
  }

private:
  // A key yaml-cpp might write past its parser's 1024-byte implicit-key limit (escapes
  // and U+FFFD for bad UTF-8 can quadruple its length), or one that is no scalar.
  static bool long_key(const YAML::Node& key) {
    return !key.IsScalar() || key.Scalar().size() > 200;
  }

  static bool has_long_key(const YAML::Node& n) {
    return n.IsMap() && std::any_of(n.begin(), n.end(), [](const auto& kv) {
             return long_key(kv.first);
           });
  }

  static bool has_control(const std::string& s) {
    return std::any_of(s.begin(), s.end(), [](char c) {
      auto u = static_cast<unsigned char>(c);
      return u < 0x20 || u == 0x7f;
    });
  }

  // How often each node is met; a shared one is walked once (a recursive alias too).
  void count(const YAML::Node& n) {
    if (++refs_[node_identity::of(n)] > 1)
      return;
    if (n.IsSequence()) {
      for (const auto& e : n)
        count(e);
    } else if (n.IsMap()) {
      for (const auto& kv : n) {
        count(kv.first);
        count(kv.second);
      }
    }
  }

  YAML::Emitter& out_;
  std::unordered_map<const void*, int> refs_;
  std::unordered_map<const void*, size_t> anchors_;
};

} // namespace

std::string to_yaml(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull())
    return {};
  YAML::Emitter out;
  node_writer{out, node}.write(node);
  return out.c_str();
}

caf::error validate_log_level(std::string_view level) {
  for (auto x : {"trace", "debug", "info", "warn", "error", "critical", "off"})
    if (level == x)
      return {};
  return make_error(errc::invalid_config, "unknown log level '" + std::string{level}
                                            + "'");
}

caf::expected<image_profile> load_profile(const std::filesystem::path& file,
                                          const profile_overrides& overrides) {
  auto schema = config_schema::parse(profile_schema_text, "<kernel schema>");
  if (!schema)
    return schema.error();
  std::error_code ec;
  auto path = std::filesystem::absolute(file, ec);
  if (ec || !std::filesystem::is_regular_file(path))
    return make_error(errc::invalid_config, file.string() + ": no such file");
  auto fname = file.string();
  YAML::Node doc;
  try {
    doc = YAML::LoadFile(path.string());
  } catch (const YAML::ParserException& e) {
    return make_error(errc::invalid_config,
                      fname + ":" + std::to_string(e.mark.line + 1) + ":"
                        + std::to_string(e.mark.column + 1) + ": " + e.msg);
  } catch (const std::exception& e) {
    return make_error(errc::invalid_config, fname + ": " + e.what());
  }
  if (!doc.IsNull() && !doc.IsMap())
    return make_error(errc::invalid_config,
                      where(fname, doc) + ": an image profile must be a YAML map");
  auto checked = schema->validate(doc, fname, "");
  if (!checked)
    return checked.error();
  auto& cfg = *checked;
  image_profile result;
  result.file = path;
  auto kernel = cfg["kernel"];
  auto cwd = std::filesystem::current_path();
  // Relative paths in the file are relative to the working directory the operator
  // started groved in, like the command line's.
  if (overrides.write_dir)
    result.write_dir = absolute_from(cwd, *overrides.write_dir);
  else if (kernel["write_dir"])
    result.write_dir = absolute_from(cwd, kernel["write_dir"].Scalar());
  else
    result.write_dir = absolute_from(cwd, "var");
  if (overrides.plugin_dir)
    result.plugin_dir = absolute_from(cwd, *overrides.plugin_dir);
  else if (kernel["plugin_dir"])
    result.plugin_dir = absolute_from(cwd, kernel["plugin_dir"].Scalar());
  else
    result.plugin_dir = overrides.default_plugin_dir;
  if (kernel["control_socket"])
    result.control_socket = absolute_from(cwd, kernel["control_socket"].Scalar());
  else
    result.control_socket = result.write_dir / "run" / "control.sock";
  if (kernel["group"])
    result.group_file = absolute_from(cwd, kernel["group"].Scalar());
  result.log_level = kernel["log_level"].Scalar();
  result.worker_threads = kernel["worker_threads"].as<uint32_t>();
  result.release_code_pages = kernel["release_code_pages"].as<bool>();
  result.idle_poll_attempts = kernel["idle_poll_attempts"].as<uint32_t>();
  result.worker_timer_slack_ns = kernel["worker_timer_slack_ns"].as<uint32_t>();
  result.init_timeout = std::chrono::milliseconds{kernel["init_timeout_ms"].as<int64_t>()};
  result.stop_timeout = std::chrono::milliseconds{kernel["stop_timeout_ms"].as<int64_t>()};
  auto bus = kernel["bus"];
  result.queue.capacity = bus["queue_capacity"].as<uint32_t>();
  result.queue.overflow = *parse_overflow_policy(bus["overflow"].Scalar());
  result.queue.block_timeout = std::chrono::milliseconds{
    bus["block_timeout_ms"].as<int64_t>()};
  result.max_payload_bytes = bus["max_payload_bytes"].as<uint64_t>();
  auto restart = kernel["restart"];
  result.restart.max_failures = restart["max_failures"].as<uint32_t>();
  result.restart.window = std::chrono::seconds{restart["window_seconds"].as<int64_t>()};
  result.restart.backoff_initial
    = std::chrono::milliseconds{restart["backoff_initial_ms"].as<int64_t>()};
  result.restart.backoff_max
    = std::chrono::milliseconds{restart["backoff_max_ms"].as<int64_t>()};
  auto metrics = kernel["metrics"];
  result.metrics.port = metrics["port"].as<uint16_t>();
  result.metrics.enabled = result.metrics.port != 0;
  result.metrics.bind = metrics["bind"].Scalar();
  {
    // A numeric address only: a name would need DNS at start and could resolve to an
    // outside interface.
    in6_addr a6{};
    in_addr a4{};
    if (inet_pton(AF_INET, result.metrics.bind.c_str(), &a4) != 1
        && inet_pton(AF_INET6, result.metrics.bind.c_str(), &a6) != 1)
      return config_error(fname, doc["kernel"]["metrics"]["bind"], "kernel.metrics.bind",
                          "'" + result.metrics.bind
                            + "' is not a numeric IPv4 or IPv6 address");
  }
  auto raw_plugins = doc["plugins"];
  auto plugins = cfg["plugins"];
  std::set<std::string> names;
  for (size_t i = 0; i < plugins.size(); ++i) {
    auto p = plugins[i];
    auto raw = raw_plugins[i];
    plugin_spec spec;
    spec.name = p["name"].Scalar();
    auto field = "plugins[" + std::to_string(i) + "].name";
    if (validate_plugin_name(spec.name))
      return config_error(fname, raw["name"], field,
                  "plugin names are 1-64 characters of [A-Za-z0-9_-]");
    if (!names.insert(spec.name).second)
      return config_error(fname, raw["name"], field,
                  "plugin '" + spec.name + "' is listed twice");
    // Keep the raw node: its marks give plugin-config errors their line numbers.
    spec.config = make_yaml(raw["config"] ? raw["config"] : YAML::Node{});
    spec.file = fname;
    spec.line = raw.Mark().line + 1;
    if (p["log_level"])
      spec.log_level = p["log_level"].Scalar();
    spec.queue = result.queue;
    if (p["queue_capacity"])
      spec.queue.capacity = p["queue_capacity"].as<uint32_t>();
    if (p["overflow"])
      spec.queue.overflow = *parse_overflow_policy(p["overflow"].Scalar());
    if (p["block_timeout_ms"])
      spec.queue.block_timeout = std::chrono::milliseconds{
        p["block_timeout_ms"].as<int64_t>()};
    spec.isolation = p["isolation"].Scalar();
    spec.may_set_group = p["may_set_group"].as<bool>();
    spec.may_control_plugins = p["may_control_plugins"].as<bool>();
    auto claims = p["may_claim"];
    for (size_t k = 0; k < claims.size(); ++k) {
      auto grant = claims[k].Scalar();
      auto star = grant.find('*');
      if (grant.empty() || (star != std::string::npos && star + 1 != grant.size()))
        return config_error(fname, raw["may_claim"][k],
                            "plugins[" + std::to_string(i) + "].may_claim["
                              + std::to_string(k) + "]",
                            "a source name, or a prefix ending in '*' (e.g. device:*)");
      if (grant == kernel_source)
        return config_error(fname, raw["may_claim"][k],
                            "plugins[" + std::to_string(i) + "].may_claim["
                              + std::to_string(k) + "]",
                            "'kernel' is the kernel's own source; no plugin may claim it");
      spec.may_claim.push_back(std::move(grant));
    }
    result.plugins.push_back(std::move(spec));
  }
  return result;
}

} // namespace grove
