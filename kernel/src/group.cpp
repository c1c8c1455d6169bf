#include "grove/kernel/group.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <span>
#include <unordered_set>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>
#include <yaml.h>

#include "grove/config_map.hpp"

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
loggers:
  type: list
  default: []
  items:
    type: map
    keys:
      id: {type: string, required: true}
      component: {type: string, required: true, enum: [GreengrassSystem, Lambda]}
      level: {type: string, required: true, enum: [DEBUG, INFO, WARN, ERROR, FATAL]}
      type: {type: string, default: FileSystem, enum: [FileSystem],
             doc: "AWSCloudWatch is refused: no cloud logging on the device"}
      space_kb: {type: int, min: 1, max: 1073741824}
)";

constexpr std::string_view logger_components[] = {"GreengrassSystem", "Lambda"};
constexpr std::string_view logger_levels[] = {"DEBUG", "INFO", "WARN", "ERROR", "FATAL"};

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 128)
    return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'
          || c == ':'))
      return false;
  return true;
}


/// Where check_group found a fault: `key` of `section[index]`, or the whole section
/// when index is npos.
struct group_fault {
  std::string_view section;
  size_t index = std::string_view::npos;
  std::string_view key;
  std::string what;
};

/// The checks the schema cannot express (limits, names, duplicates, references,
/// subjects), run on the built group by both readers so they agree. The sets hold
/// views into `g`: no string of a 10,000-subscription group is copied.
std::optional<group_fault> check_group(const group::Group& g) {
  constexpr auto npos = std::string_view::npos;
  if (static_cast<size_t>(g.devices_size()) > max_group_devices)
    return group_fault{"devices", npos, {},
                       std::to_string(g.devices_size()) + " devices; a group holds at most "
                         + std::to_string(max_group_devices)};
  if (static_cast<size_t>(g.subscriptions_size()) > max_group_subscriptions)
    return group_fault{"subscriptions", npos, {},
                       std::to_string(g.subscriptions_size())
                         + " subscriptions; a group holds at most "
                         + std::to_string(max_group_subscriptions)};
  std::unordered_set<std::string_view> things;
  things.reserve(g.devices_size());
  for (int i = 0; i < g.devices_size(); ++i) {
    const auto& thing = g.devices(i).thing();
    auto fault = [&](std::string what) {
      return group_fault{"devices", static_cast<size_t>(i), "thing", std::move(what)};
    };
    if (!valid_name(thing) || thing.find(':') != std::string::npos)
      return fault("thing names are 1-128 characters of [A-Za-z0-9_.-]");
    if (thing == "grove")
      return fault("thing name 'grove' is reserved for Grove's own broker client");
    if (!things.insert(thing).second)
      return fault("device '" + thing + "' is listed twice");
  }
  std::unordered_set<std::string_view> functions;
  for (int i = 0; i < g.functions_size(); ++i) {
    const auto& name = g.functions(i).name();
    auto fault = [&](std::string what) {
      return group_fault{"functions", static_cast<size_t>(i), "name", std::move(what)};
    };
    if (!valid_name(name) || name.find(':') != std::string::npos)
      return fault("function names are 1-128 characters of [A-Za-z0-9_.-]");
    if (!functions.insert(name).second)
      return fault("function '" + name + "' is listed twice");
  }
  std::unordered_set<std::string_view> ids;
  ids.reserve(g.subscriptions_size());
  for (int i = 0; i < g.subscriptions_size(); ++i) {
    const auto& s = g.subscriptions(i);
    auto fault = [&](std::string_view key, std::string what) {
      return group_fault{"subscriptions", static_cast<size_t>(i), key, std::move(what)};
    };
    if (s.id().empty() || !ids.insert(s.id()).second)
      return fault("id", s.id().empty() ? "must not be empty"
                                        : "id '" + s.id() + "' is used twice");
    for (std::string_view key : {"source", "target"}) {
      std::string_view ep = key == "source" ? s.source() : s.target();
      if (auto err = validate_endpoint(ep))
        return fault(key, describe(err));
      auto colon = ep.find(':');
      if (colon == npos)
        continue;
      auto kind = ep.substr(0, colon);
      auto name = ep.substr(colon + 1);
      if (kind == "device" && !things.count(name))
        return fault(key, "device '" + std::string{name}
                            + "' is not in this group's devices");
      if (kind == "function" && !functions.count(name))
        return fault(key, "function '" + std::string{name}
                            + "' is not in this group's functions");
    }
    if (s.source() == s.target())
      return fault("target", "source and target are the same");
    if (auto err = validate_filter(s.subject()))
      return fault("subject", describe(err));
    // MQTT says topics should hold no control characters; the broker's table is a
    // line-based file, where a line break in a subject would start a rule of its own.
    for (unsigned char c : s.subject())
      if (c < 0x20 || c == 0x7f)
        return fault("subject", "a subject must not contain control characters");
  }
  std::unordered_set<std::string_view> resource_ids;
  for (int i = 0; i < g.resources_size(); ++i) {
    const auto& id = g.resources(i).id();
    if (id.empty() || !resource_ids.insert(id).second)
      return group_fault{"resources", static_cast<size_t>(i), "id",
                         id.empty() ? "must not be empty" : "id '" + id + "' is used twice"};
  }
  std::unordered_set<std::string_view> logger_ids;
  std::optional<size_t> by_component[std::size(logger_components)];
  for (int i = 0; i < g.loggers_size(); ++i) {
    const auto& l = g.loggers(i);
    auto fault = [&](std::string_view key, std::string what) {
      return group_fault{"loggers", static_cast<size_t>(i), key, std::move(what)};
    };
    if (!valid_name(l.id()))
      return fault("id", "logger ids are 1-128 characters of [A-Za-z0-9_.:-]");
    if (!logger_ids.insert(l.id()).second)
      return fault("id", "id '" + l.id() + "' is used twice");
    auto comp = std::find(std::begin(logger_components), std::end(logger_components),
                          l.component());
    if (comp == std::end(logger_components))
      return fault("component", "'" + l.component() + "' is not GreengrassSystem or Lambda");
    if (std::find(std::begin(logger_levels), std::end(logger_levels), l.level())
        == std::end(logger_levels))
      return fault("level", "'" + l.level() + "' is not DEBUG, INFO, WARN, ERROR or FATAL");
    if (l.type() != "FileSystem")
      return fault("type", "'" + l.type()
                             + "' is not FileSystem: there is no cloud logging on the device");
    if (l.space_kb() > (1u << 30))
      return fault("space_kb", "at most 1073741824 (1 TiB)");
    auto& first = by_component[comp - std::begin(logger_components)];
    if (first)
      return fault("component", l.component() + " has a logger already (loggers["
                                  + std::to_string(*first) + "])");
    first = static_cast<size_t>(i);
  }
  return std::nullopt;
}

/// Builds a group straight from the parser's events, with no node tree: the tree of a
/// group at the limits costs ~100 MB at its peak and most of the start-up time
/// (yaml-cpp's nodes, then the schema's validated copy). It takes only the plain
/// shape of a group; anything else (an unknown or repeated key, a missing one, a
/// wrong type, a tag, an anchor or alias, a syntax error) makes it give up (`ok()`
/// false) and parse_group reads the text again through the tree and the schema, which
/// name the fault with its line.
class group_reader final : public YAML::EventHandler {
public:
  /// True when a whole group was read into `group`.
  bool ok() const {
    return ok_ && level_ == level::done;
  }

  /// The group read.
  group::Group group;

  void OnDocumentStart(const YAML::Mark&) override {
  }

  void OnDocumentEnd() override {
  }

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (!config_.empty()) {
      add(YAML::Node{YAML::NodeType::Null});
      return;
    }
    // A null config is stored as "" (to_yaml); any other null is a fault.
    if (anchor == 0 && at_value() && level_ == level::item && key_ == "config")
      want_key_ = true;
    else
      fail();
  }

  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {
    fail(); // the tree reader resolves aliases
  }

  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    if (anchor != 0)
      return fail();
    if (!config_.empty()) {
      add(scalar(tag, value));
      return;
    }
    if (std::string_view t = tag; t != "?" && t != "!")
      return fail(); // "?" plain, "!" quoted; an explicit tag goes the long way
    if (level_ != level::top && level_ != level::item)
      return fail(); // a scalar where a map belongs
    if (want_key_)
      return take_key(value);
    want_key_ = true;
    if (level_ == level::top) {
      if (key_ != "name")
        return fail(); // a section must be a list
      group.set_name(value);
      return;
    }
    set_field(mark, tag, value);
  }

  void OnSequenceStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value style) override {
    if (anchor != 0)
      return fail();
    if (!config_.empty() || (at_value() && level_ == level::item && key_ == "config")) {
      open(YAML::NodeType::Sequence, tag, style);
      return;
    }
    if (!plain(tag) || !at_value() || level_ != level::top || key_ == "name")
      return fail();
    level_ = level::list;
    section_ = key_;
  }

  void OnSequenceEnd() override {
    if (!config_.empty()) {
      return close();
    }
    if (level_ != level::list)
      return fail();
    level_ = level::top;
    want_key_ = true;
  }

  void OnMapStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value style) override {
    if (anchor != 0)
      return fail();
    if (!config_.empty() || (at_value() && level_ == level::item && key_ == "config")) {
      open(YAML::NodeType::Map, tag, style);
      return;
    }
    if (!plain(tag))
      return fail();
    if (level_ == level::start) {
      level_ = level::top;
    } else if (level_ == level::list) {
      level_ = level::item;
      item_seen_ = 0;
      add_item();
    } else {
      return fail();
    }
    want_key_ = true;
  }

  void OnMapEnd() override {
    if (!config_.empty()) {
      return close();
    }
    if (!want_key_)
      return fail();
    if (level_ == level::item) {
      // Every key of a subscription is required; of a logger id, component and level;
      // of the others, the first (thing, name, id).
      unsigned required = section_ == "subscriptions" ? (1u << item_keys().size()) - 1
                          : section_ == "loggers"     ? 7u
                                                      : 1u;
      if ((item_seen_ & required) != required)
        return fail();
      level_ = level::list;
      return;
    }
    if (level_ == level::top && (top_seen_ & 1u)) { // name
      level_ = level::done;
      return;
    }
    fail();
  }

private:
  enum class level { start, top, list, item, done, failed };

  static constexpr std::string_view top_keys[] = {"name",          "devices",   "functions",
                                                  "subscriptions", "resources", "loggers"};
  static constexpr std::string_view device_keys[] = {"thing", "sync_shadow"};
  static constexpr std::string_view function_keys[] = {"name", "config"};
  static constexpr std::string_view subscription_keys[] = {"id", "source", "subject",
                                                           "target"};
  static constexpr std::string_view resource_keys[] = {"id", "config"};
  static constexpr std::string_view logger_keys[] = {"id", "component", "level", "type",
                                                     "space_kb"};

  std::span<const std::string_view> item_keys() const {
    if (section_ == "devices")
      return device_keys;
    if (section_ == "functions")
      return function_keys;
    if (section_ == "subscriptions")
      return subscription_keys;
    if (section_ == "loggers")
      return logger_keys;
    return resource_keys;
  }

  static bool plain(const std::string& tag) {
    return tag.empty() || std::string_view{tag} == "?";
  }

  bool at_value() const {
    return !want_key_;
  }

  void fail() {
    ok_ = false;
    level_ = level::failed; // nothing is accepted after this
    config_.clear();
  }

  void take_key(const std::string& key) {
    auto keys = level_ == level::top ? std::span<const std::string_view>{top_keys}
                                     : item_keys();
    auto& seen = level_ == level::top ? top_seen_ : item_seen_;
    auto at = std::find(keys.begin(), keys.end(), key);
    unsigned bit = 1u << (at - keys.begin());
    if (at == keys.end() || (seen & bit))
      return fail();
    seen |= bit;
    key_ = *at;
    want_key_ = false;
  }

  void add_item() {
    if (section_ == "devices")
      group.add_devices();
    else if (section_ == "functions")
      group.add_functions();
    else if (section_ == "subscriptions")
      group.add_subscriptions();
    else if (section_ == "loggers")
      group.add_loggers()->set_type("FileSystem"); // the schema's default
    else
      group.add_resources();
  }

  void set_field(const YAML::Mark& mark, const std::string& tag, const std::string& value) {
    if (section_ == "devices") {
      auto* d = group.mutable_devices(group.devices_size() - 1);
      if (key_ == "thing")
        return d->set_thing(value);
      bool b = false;
      if (value == "true" || value == "false")
        b = value == "true";
      else if (!detail::scalar_as(YAML::Node{value}, b))
        return fail();
      return d->set_sync_shadow(b);
    }
    if (section_ == "subscriptions") {
      auto* s = group.mutable_subscriptions(group.subscriptions_size() - 1);
      if (key_ == "id")
        return s->set_id(value);
      if (key_ == "source")
        return s->set_source(value);
      if (key_ == "subject")
        return s->set_subject(value);
      return s->set_target(value);
    }
    if (section_ == "loggers") {
      auto* l = group.mutable_loggers(group.loggers_size() - 1);
      if (key_ == "id")
        return l->set_id(value);
      if (key_ == "component")
        return l->set_component(value);
      if (key_ == "level")
        return l->set_level(value);
      if (key_ == "type")
        return l->set_type(value);
      // space_kb: plain decimal digits only; anything else the schema judges.
      if (tag != "?" || value.empty() || value.size() > 10
          || value.find_first_not_of("0123456789") != std::string::npos)
        return fail();
      auto kb = std::stoull(value);
      if (kb == 0)
        return fail();
      return l->set_space_kb(kb);
    }
    if (key_ != "config") {
      if (section_ == "functions")
        group.mutable_functions(group.functions_size() - 1)->set_name(value);
      else
        group.mutable_resources(group.resources_size() - 1)->set_id(value);
      return;
    }
    // A scalar config.
    set_config(scalar(tag, value));
  }

  /// A `config: any` subtree becomes a (small) node, tags and styles kept, and is
  /// stored as to_yaml emits it: as the tree reader stores its copy of the subtree.
  static YAML::Node scalar(const std::string& tag, const std::string& value) {
    YAML::Node n{value};
    n.SetTag(tag);
    return n;
  }

  void open(YAML::NodeType::value type, const std::string& tag,
            YAML::EmitterStyle::value style) {
    YAML::Node n{type};
    n.SetTag(tag);
    n.SetStyle(style);
    config_.push_back({n, {}, false});
  }

  void close() {
    auto n = config_.back().node;
    config_.pop_back();
    add(n);
  }

  void add(const YAML::Node& n) {
    if (config_.empty())
      return set_config(n);
    auto& top = config_.back();
    if (top.node.IsSequence()) {
      top.node.push_back(n);
    } else if (!top.has_key) {
      if (!n.IsScalar())
        return fail(); // keys must be plain strings
      top.key = n.Scalar();
      top.has_key = true;
    } else {
      const YAML::Node& map = top.node;
      if (map[top.key])
        return fail(); // a repeated key: the tree reader keeps what YAML::Load keeps
      top.node[top.key] = n;
      top.has_key = false;
    }
  }

  void set_config(const YAML::Node& n) {
    auto text = to_yaml(n);
    if (section_ == "functions")
      group.mutable_functions(group.functions_size() - 1)->set_config_yaml(std::move(text));
    else
      group.mutable_resources(group.resources_size() - 1)->set_config_yaml(std::move(text));
    want_key_ = true;
  }

  /// An open collection of a config subtree.
  struct frame {
    YAML::Node node;
    std::string key;
    bool has_key;
  };

  bool ok_ = true;
  level level_ = level::start;
  bool want_key_ = true;
  // Views of the key tables above: the per-scalar comparisons check the length first and
  // copy nothing (std::string's compare with a literal took a tenth of a big group's read).
  std::string_view key_;
  std::string_view section_;
  unsigned top_seen_ = 0;  // bit i: top_keys[i] was seen
  unsigned item_seen_ = 0; // bit i: item_keys()[i] was seen in this item
  std::vector<frame> config_;
};

/// Feeds libyaml's events for the first document of `text` to `h` as yaml-cpp's
/// parser would (tag "?" for a plain scalar, "!" for a quoted one, OnNull for the plain
/// nulls yaml-cpp knows, an anchor as id 1). libyaml's scanner reads a group at the
/// limits about four times as fast as yaml-cpp's. False on a syntax error.
bool parse_events(std::string_view text, YAML::EventHandler& h) {
  yaml_parser_t parser;
  if (!yaml_parser_initialize(&parser))
    return false;
  yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(text.data()),
                               text.size());
  auto mark = YAML::Mark::null_mark();
  auto tag_of = [](const yaml_char_t* tag, bool implicit, const char* none) {
    return tag && !implicit ? std::string{reinterpret_cast<const char*>(tag)}
                            : std::string{none};
  };
  auto style_of = [](bool flow) {
    return flow ? YAML::EmitterStyle::Flow : YAML::EmitterStyle::Block;
  };
  bool ok = false;
  for (bool more = true; more;) {
    yaml_event_t e;
    if (!yaml_parser_parse(&parser, &e))
      break;
    switch (e.type) {
      case YAML_DOCUMENT_START_EVENT:
        h.OnDocumentStart(mark);
        break;
      case YAML_DOCUMENT_END_EVENT:
        h.OnDocumentEnd();
        ok = true;
        more = false; // the first document, as YAML::Load reads
        break;
      case YAML_STREAM_END_EVENT:
        more = false;
        break;
      case YAML_ALIAS_EVENT:
        h.OnAlias(mark, 1);
        break;
      case YAML_SCALAR_EVENT: {
        auto& sc = e.data.scalar;
        std::string_view text{reinterpret_cast<const char*>(sc.value), sc.length};
        std::string value{text};
        YAML::anchor_t anchor = sc.anchor ? 1 : 0;
        bool plain = sc.style == YAML_PLAIN_SCALAR_STYLE;
        // Compared as views: a length check first, per scalar of a 1 MB file.
        if (plain && sc.plain_implicit
            && (text.empty() || text == "~" || text == "null" || text == "Null"
                || text == "NULL"))
          h.OnNull(mark, anchor);
        else if (plain ? sc.plain_implicit : sc.quoted_implicit)
          h.OnScalar(mark, plain ? "?" : "!", anchor, value);
        else
          h.OnScalar(mark, tag_of(sc.tag, false, "?"), anchor, value);
        break;
      }
      case YAML_SEQUENCE_START_EVENT: {
        auto& sq = e.data.sequence_start;
        h.OnSequenceStart(mark, tag_of(sq.tag, sq.implicit, "?"), sq.anchor ? 1 : 0,
                          style_of(sq.style == YAML_FLOW_SEQUENCE_STYLE));
        break;
      }
      case YAML_SEQUENCE_END_EVENT:
        h.OnSequenceEnd();
        break;
      case YAML_MAPPING_START_EVENT: {
        auto& mp = e.data.mapping_start;
        h.OnMapStart(mark, tag_of(mp.tag, mp.implicit, "?"), mp.anchor ? 1 : 0,
                     style_of(mp.style == YAML_FLOW_MAPPING_STYLE));
        break;
      }
      case YAML_MAPPING_END_EVENT:
        h.OnMapEnd();
        break;
      default:
        break;
    }
    yaml_event_delete(&e);
  }
  yaml_parser_delete(&parser);
  return ok;
}

/// The fast reader: a group, or nothing when the text needs the tree reader.
std::optional<group::Group> read_group_events(std::string_view text) {
  group_reader reader;
  try {
    if (!parse_events(text, reader) || !reader.ok())
      return std::nullopt;
  } catch (const std::exception&) {
    return std::nullopt; // yaml-cpp, building a config subtree
  }
  return std::move(reader.group);
}

/// Refuses text that is not YAML 1.2's: bytes that are not UTF-8 (overlong forms and
/// surrogates included) or a character outside its printable set (c-printable: tab, LF
/// and CR the only C0 controls; no DEL, no C1 control, no U+FFFE/U+FFFF). yaml-cpp's
/// parser takes such text, but its writer cannot write it so that it reads back, so a
/// deployment's edit of the group would fail long after the load. NEL, U+2028 and U+2029
/// (printable in 1.2) are refused too: the fast reader (libyaml, YAML 1.1) takes them for
/// line breaks and the tree reader does not, so the group in force would depend on the
/// reader. A byte order mark is taken at the start only (YAML forbids one inside a
/// document). libyaml's reader checks the rest, but only as far as its parser gets and
/// without a way to run it alone: the whole text is checked here, the error naming line
/// and column (in characters, as an editor counts them: the mark takes no column; CR, LF and
/// CRLF end a line).
caf::error check_text(std::string_view text, const std::string& name) {
  size_t line = 1, column = 1;
  auto fault = [&](const std::string& what) {
    return make_error(errc::invalid_config,
                      name + ":" + std::to_string(line) + ":" + std::to_string(column) + ": "
                        + what + ": a group is printable UTF-8 text (YAML 1.2: tab, LF "
                                 "and CR the only control characters)");
  };
  auto starts = [&](std::string_view mark) { return text.substr(0, mark.size()) == mark; };
  // UTF-32 first: its little-endian mark begins with UTF-16's.
  if (starts(std::string_view{"\x00\x00\xFE\xFF", 4}) || starts(std::string_view{"\xFF\xFE\x00\x00", 4}))
    return fault("UTF-32 text (its byte order mark), not UTF-8");
  if (starts("\xFE\xFF") || starts("\xFF\xFE"))
    return fault("UTF-16 text (its byte order mark), not UTF-8");
  size_t i = starts("\xEF\xBB\xBF") ? 3 : 0; // not a character of the text
  for (; i < text.size(); ++column) {
    auto at = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
    unsigned c = at(i);
    size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    unsigned cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
    bool ok = n != 0 && i + n <= text.size();
    for (size_t k = 1; ok && k < n; ++k) {
      ok = (at(i + k) & 0xC0) == 0x80;
      cp = (cp << 6) | (at(i + k) & 0x3F);
    }
    constexpr unsigned least[] = {0, 0, 0x80, 0x800, 0x10000};
    if (!ok || cp < least[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", c);
      return fault(std::string{"not UTF-8 (byte "} + hex + ")");
    }
    char u[16];
    std::snprintf(u, sizeof u, "U+%04X", cp);
    if (cp == 0x85 || cp == 0x2028 || cp == 0x2029)
      return fault(std::string{"line break "} + u
                   + " (YAML 1.1 readers break the line there, YAML 1.2 ones do not)");
    if (cp == 0xFEFF)
      return fault("byte order mark U+FEFF past the start of the text");
    if (cp == 0xFFFE || cp == 0xFFFF)
      return fault(std::string{"noncharacter "} + u);
    bool printable = cp == 0x09 || cp == 0x0A || cp == 0x0D || (cp >= 0x20 && cp <= 0x7E)
                     || (cp >= 0xA0 && cp <= 0xD7FF) || (cp >= 0xE000 && cp <= 0xFFFD)
                     || cp >= 0x10000;
    if (!printable)
      return fault(std::string{"control character "} + u);
    // CRLF is one line end: the CR ends the line, the LF after it starts no other.
    if (cp == '\r' || (cp == '\n' && (i == 0 || text[i - 1] != '\r')))
      ++line;
    if (cp == '\r' || cp == '\n')
      column = 0;
    i += n;
  }
  return {};
}

/// The tree reader: the schema validates the document, then the group is built from
/// the validated copy. Slow and memory-hungry on a big group, but it names every fault
/// with its file, line and field; parse_group uses it only for a group the fast reader
/// did not take.
caf::expected<group::Group> read_group_tree(std::string_view text, const std::string& file) {
  YAML::Node doc;
  try {
    doc = YAML::Load(std::string{text});
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
  const YAML::Node& v = *checked;
  group::Group g;
  g.set_name(v["name"].as<std::string>());
  for (auto d : v["devices"]) {
    auto* out = g.add_devices();
    out->set_thing(d["thing"].as<std::string>());
    out->set_sync_shadow(d["sync_shadow"].as<bool>());
  }
  for (auto f : v["functions"]) {
    auto* out = g.add_functions();
    out->set_name(f["name"].as<std::string>());
    out->set_config_yaml(to_yaml(f["config"]));
  }
  for (auto s : v["subscriptions"]) {
    auto* out = g.add_subscriptions();
    out->set_id(s["id"].as<std::string>());
    out->set_source(s["source"].as<std::string>());
    out->set_subject(s["subject"].as<std::string>());
    out->set_target(s["target"].as<std::string>());
  }
  for (auto r : v["resources"]) {
    auto* out = g.add_resources();
    out->set_id(r["id"].as<std::string>());
    out->set_config_yaml(to_yaml(r["config"]));
  }
  for (auto l : v["loggers"]) {
    auto* out = g.add_loggers();
    out->set_id(l["id"].as<std::string>());
    out->set_component(l["component"].as<std::string>());
    out->set_level(l["level"].as<std::string>());
    out->set_type(l["type"].as<std::string>());
    if (auto kb = l["space_kb"]; kb && !kb.IsNull())
      out->set_space_kb(kb.as<uint64_t>());
  }
  if (auto fault = check_group(g)) {
    // Located in the document as written.
    const YAML::Node& raw = doc;
    auto section = raw[std::string{fault->section}];
    if (fault->index == std::string_view::npos)
      return config_error(file, section, fault->section, fault->what);
    return config_error(file, section[fault->index][std::string{fault->key}],
                        std::string{fault->section} + "[" + std::to_string(fault->index)
                          + "]." + std::string{fault->key},
                        fault->what);
  }
  return g;
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

YAML::Node group_document(const group::Group& g) {
  YAML::Node doc;
  doc["name"] = g.name();
  doc["devices"] = YAML::Node{YAML::NodeType::Sequence};
  for (const auto& d : g.devices()) {
    YAML::Node n;
    n["thing"] = d.thing();
    if (d.sync_shadow())
      n["sync_shadow"] = true;
    doc["devices"].push_back(n);
  }
  doc["functions"] = YAML::Node{YAML::NodeType::Sequence};
  for (const auto& f : g.functions()) {
    YAML::Node n;
    n["name"] = f.name();
    n["config"] = YAML::Load(f.config_yaml());
    doc["functions"].push_back(n);
  }
  doc["subscriptions"] = YAML::Node{YAML::NodeType::Sequence};
  for (const auto& s : g.subscriptions()) {
    YAML::Node n;
    n["id"] = s.id();
    n["source"] = s.source();
    n["subject"] = s.subject();
    n["target"] = s.target();
    doc["subscriptions"].push_back(n);
  }
  doc["resources"] = YAML::Node{YAML::NodeType::Sequence};
  for (const auto& r : g.resources()) {
    YAML::Node n;
    n["id"] = r.id();
    n["config"] = YAML::Load(r.config_yaml());
    doc["resources"].push_back(n);
  }
  // Only when there are any: a group without loggers keeps the document it always had.
  for (const auto& l : g.loggers()) {
    YAML::Node n;
    n["id"] = l.id();
    n["component"] = l.component();
    n["level"] = l.level();
    n["type"] = l.type();
    if (l.space_kb() != 0)
      n["space_kb"] = l.space_kb();
    doc["loggers"].push_back(n);
  }
  return doc;
}

caf::expected<group::Group> parse_group(std::string_view text, const std::string& name) {
  if (auto err = check_text(text, name))
    return err;
  // The tree reader names the fault (and, should the readers ever disagree, its
  // verdict is the one the schema gives).
  auto fast = read_group_events(text);
  if (fast && !check_group(*fast))
    return std::move(*fast);
  return read_group_tree(text, name);
}

caf::expected<group::Group> load_group(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return make_error(errc::invalid_config, path.string() + ": no such file");
  std::ifstream in{path, std::ios::binary};
  std::string text{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
  if (in.bad() || (!in && !in.eof()))
    return make_error(errc::invalid_config, path.string() + ": cannot be read");
  auto g = parse_group(text, path.string());
  if (g)
    g->set_source_file(std::filesystem::absolute(path).string());
  return g;
}

} // namespace grove
