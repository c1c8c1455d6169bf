#pragma once

// Typed configuration declared once. A config_map binds each key of a plugin's
// configuration to a member of a plain struct, with its type, default, range, allowed
// values and doc. From that one declaration come (a) the schema text the kernel
// validates the profile against (so `groved --check` and file:line:col errors stay as
// they are, isolated plugins included), (b) the parser from the validated YAML to the
// struct, (c) the Markdown table of the plugin's README (`groved --describe-config`).
// See sdk/plugin/README.md, "Typed configuration".

#include <charconv>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <yaml-cpp/yaml.h>

#include "grove/errors.hpp"
#include "grove/plugin.hpp"

namespace grove {

/// Inclusive bounds of an int or float key; either side may be open.
struct range {
  /// Lower bound, if any.
  std::optional<double> min;
  /// Upper bound, if any.
  std::optional<double> max;

  /// Both bounds (any arithmetic types, so `range{1, 65535}` needs no casts).
  template <class Lo, class Hi>
  range(Lo lo, Hi hi) : min(static_cast<double>(lo)), max(static_cast<double>(hi)) {
  }

  /// Only a lower bound.
  template <class Lo>
  static range at_least(Lo lo) {
    range r{0, 0};
    r.min = static_cast<double>(lo);
    r.max.reset();
    return r;
  }

  /// Only an upper bound.
  template <class Hi>
  static range at_most(Hi hi) {
    range r{0, 0};
    r.min.reset();
    r.max = static_cast<double>(hi);
    return r;
  }
};

/// The allowed values of a `std::string` key (schema `enum`).
struct one_of {
  /// Allowed values, in the order the docs list them.
  std::vector<std::string> values;

  /// E.g. `one_of{"memory", "file"}`.
  one_of(std::initializer_list<const char*> xs) : values(xs.begin(), xs.end()) {
  }
};

/// The names of a C++ enum key: the YAML value is one of the names (schema `enum`),
/// the member gets the matching enumerator.
template <class E>
struct names {
  /// Name and enumerator pairs, in the order the docs list them.
  std::vector<std::pair<std::string, E>> values;

  /// E.g. `names<mode>{{"fast", mode::fast}, {"safe", mode::safe}}`.
  names(std::initializer_list<std::pair<const char*, E>> xs) {
    for (auto& [n, e] : xs)
      values.emplace_back(n, e);
  }
};

/// A lower bound of an int or float key that is another key of the same map (schema
/// `min_key`): the value must be at least that key's, e.g. a queue in bytes that must
/// hold one of the largest frames. The kernel checks it with the rest of the schema, so
/// a profile breaking it is refused at load with file:line, naming both keys.
struct at_least_key {
  /// The other key: an int or float key declared in the same map.
  std::string key;
};

/// Marks a key as required (no default; the kernel refuses a profile without it).
struct required_t {};

/// Marks a key as required.
inline constexpr required_t required{};

namespace detail {

/// Type-erased description of one key: what the schema text and the docs show.
struct config_field {
  /// Key name.
  std::string name;
  /// Schema type: int, float, bool, string, list, map.
  std::string type;
  /// Whether the key must be present.
  bool required = false;
  /// Default value, null when the key has none.
  std::shared_ptr<const YAML::Node> default_value;
  /// Inclusive bounds (int and float).
  std::optional<double> min;
  /// Inclusive bounds (int and float).
  std::optional<double> max;
  /// Another key of the same map whose value is a lower bound (int and float); empty:
  /// none.
  std::string min_key;
  /// Allowed values (string).
  std::vector<std::string> choices;
  /// Free text for readers.
  std::string doc;
  /// Nested keys (map).
  std::vector<config_field> keys;
  /// Element spec (list); null = any elements.
  std::shared_ptr<const config_field> items;
};

/// Where a parse runs: relative paths resolve against `base`.
struct parse_env {
  /// The plugin's state directory.
  std::filesystem::path base;
};

/// Appends `f` to `fields`; returns a defect of the declaration (a default outside its
/// range or allowed values, a key declared twice, `enum_without_names`) or "".
std::string add_field(std::vector<config_field>& fields, config_field f,
                      bool enum_without_names);

/// Renders fields as schema YAML text; a defect in the declaration makes the text an
/// invalid schema naming it, so the kernel refuses the library with that message.
std::string schema_text(const std::vector<config_field>& fields, const std::string& defect);

/// Renders fields as a Markdown table (via the schema text, like groved does).
std::string markdown_table(const std::vector<config_field>& fields);

/// Validates `yaml` (a map or empty) against the schema of `fields` with the kernel's
/// validator; errors read `<origin>:<line>:<col>: <key>: <what>`.
caf::expected<YAML::Node> validate(const std::vector<config_field>& fields,
                                   std::string_view yaml, std::string_view origin);

/// An invalid_config error "<path>: <what>".
caf::error field_error(std::string_view path, const std::string& what);

/// "a.b" from "a" and "b".
std::string join_path(std::string_view path, std::string_view key);

/// Resolves a configured file name: empty and absolute stay, relative is under base.
std::filesystem::path resolve_path(const std::string& text, const parse_env& env);

/// The value of `key` in `parent`; an undefined node when `parent` is not a map or
/// lacks the key (never yaml-cpp's invalid "zombie" node, which throws when used).
inline YAML::Node child(const YAML::Node& parent, const std::string& key) {
  if (!parent.IsDefined() || !parent.IsMap())
    return YAML::Node{YAML::NodeType::Undefined};
  auto x = parent[key];
  return x.IsDefined() ? x : YAML::Node{YAML::NodeType::Undefined};
}

/// True for an absent key or an explicit null.
inline bool absent(const YAML::Node& node) {
  return !node.IsDefined() || node.IsNull();
}

/// Scalar conversion without letting yaml-cpp's exceptions out.
template <class T>
bool scalar_as(const YAML::Node& node, T& out) {
  if (!node.IsScalar())
    return false;
  try {
    out = node.as<T>();
    return true;
  } catch (...) {
    return false;
  }
}

template <class T>
struct is_duration : std::false_type {};

template <class Rep, class Period>
struct is_duration<std::chrono::duration<Rep, Period>> : std::true_type {};

template <class T>
struct is_vector : std::false_type {};

template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};

template <class T>
struct is_optional : std::false_type {};

template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

/// The value type of an optional member, the member type otherwise.
template <class T>
struct unwrap_optional {
  using type = T;
};

template <class T>
struct unwrap_optional<std::optional<T>> {
  using type = T;
};

/// Stands for "no default" in config_map::add_key.
struct no_default_t {};

/// The schema type a scalar C++ type maps to.
template <class T>
constexpr const char* scalar_type() {
  if constexpr (std::is_same_v<T, bool>)
    return "bool";
  else if constexpr (std::is_integral_v<T> || is_duration<T>::value)
    return "int";
  else if constexpr (std::is_floating_point_v<T>)
    return "float";
  else
    return "string"; // std::string, std::filesystem::path, enums (with names)
}

/// Reads one scalar into `out`; errors name `path`.
template <class T, class E = int>
caf::error read_scalar(const YAML::Node& node, T& out, std::string_view path,
                       const parse_env& env, const std::vector<std::pair<std::string, E>>* ns) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!scalar_as(node, out))
      return field_error(path, "expected true or false");
  } else if constexpr (std::is_integral_v<T>) {
    long long x = 0;
    if (!scalar_as(node, x))
      return field_error(path, "expected an integer");
    if (x < static_cast<long long>(std::numeric_limits<T>::min())
        || (x > 0
            && static_cast<unsigned long long>(x)
                 > static_cast<unsigned long long>(std::numeric_limits<T>::max())))
      return field_error(path, node.Scalar() + " does not fit");
    out = static_cast<T>(x);
  } else if constexpr (is_duration<T>::value) {
    long long x = 0;
    if (!scalar_as(node, x))
      return field_error(path, "expected an integer");
    out = T{static_cast<typename T::rep>(x)};
  } else if constexpr (std::is_floating_point_v<T>) {
    double x = 0;
    if (!scalar_as(node, x))
      return field_error(path, "expected a number");
    out = static_cast<T>(x);
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!scalar_as(node, out))
      return field_error(path, "expected a string");
  } else if constexpr (std::is_same_v<T, std::filesystem::path>) {
    std::string text;
    if (!scalar_as(node, text))
      return field_error(path, "expected a file name");
    out = resolve_path(text, env);
  } else if constexpr (std::is_enum_v<T>) {
    std::string text;
    if (!scalar_as(node, text))
      return field_error(path, "expected a string");
    for (auto& [n, e] : *ns)
      if (n == text) {
        out = e;
        return {};
      }
    return field_error(path, "unknown value '" + text + "'");
  } else {
    static_assert(std::is_same_v<T, void>, "config_map: unsupported member type");
  }
  return {};
}

/// The YAML form of a default value.
template <class T, class E = int>
YAML::Node to_node(const T& value, const std::vector<std::pair<std::string, E>>* ns) {
  if constexpr (is_duration<T>::value) {
    return YAML::Node{static_cast<long long>(value.count())};
  } else if constexpr (std::is_same_v<T, std::filesystem::path>) {
    return YAML::Node{value.string()};
  } else if constexpr (std::is_enum_v<T>) {
    for (auto& [n, e] : *ns)
      if (e == value)
        return YAML::Node{n};
    return YAML::Node{YAML::NodeType::Null};
  } else if constexpr (is_vector<T>::value) {
    YAML::Node seq{YAML::NodeType::Sequence};
    for (const auto& x : value)
      seq.push_back(to_node(x, ns));
    return seq;
  } else if constexpr (std::is_floating_point_v<T>) {
    // Shortest text that reads back as the same number (not yaml-cpp's 17 digits).
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), static_cast<double>(value));
    return YAML::Node{std::string{buf, ec == std::errc{} ? end : buf}};
  } else if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, std::string>) {
    return YAML::Node{value};
  } else if constexpr (std::is_integral_v<T>) {
    return YAML::Node{static_cast<long long>(value)};
  } else {
    return YAML::Node{value};
  }
}

} // namespace detail

/// Binds the keys of a configuration to the members of `T` (default-constructible).
/// Declared once, usually in a static `T::map()`; copyable; not thread-safe while being
/// declared, read-only (and so safe from any thread) afterwards.
template <class T>
class config_map {
public:
  /// A cross-field check run after the keys are read; the error should name the key.
  using validator = std::function<caf::error(const T&)>;

  /// A key read into `member`, with a default (`def`, converted to the member's type)
  /// and attributes: `range`, `at_least_key`, `one_of`, `names<E>` (enum members),
  /// `required`, and the
  /// doc text (a string, last by convention). Member types: bool, integers, float,
  /// double, std::string, std::filesystem::path (relative = under the state
  /// directory), std::chrono durations (an int in the duration's unit), enums (with
  /// `names<E>`), std::vector of those, std::optional of those (absent key = nullopt).
  template <class M, class D, class... Attrs>
  config_map&& key(std::string name, M T::*member, D def, Attrs... attrs) && {
    // By value: string literals decay, so keys of one member type share one
    // instantiation of add_key whatever their doc's length.
    using V = typename detail::unwrap_optional<M>::type;
    static_assert(std::is_constructible_v<V, D>,
                  "config_map: the default does not convert to the member's type");
    using E = typename enum_of<Attrs...>::type;
    attrs_of<E> a;
    (apply_attr(a, std::move(attrs)), ...);
    add_key<M, E>(std::move(name), member, std::optional<V>{V(std::move(def))}, std::move(a));
    return std::move(*this);
  }

  /// A key without a default: `required`, or `std::optional` (absent = nullopt), or
  /// absent = the member keeps its initializer (say so in the doc).
  template <class M, class... Attrs>
  config_map&& key_no_default(std::string name, M T::*member, Attrs... attrs) && {
    using V = typename detail::unwrap_optional<M>::type;
    using E = typename enum_of<Attrs...>::type;
    attrs_of<E> a;
    (apply_attr(a, std::move(attrs)), ...);
    add_key<M, E>(std::move(name), member, std::optional<V>{}, std::move(a));
    return std::move(*this);
  }

  /// A nested map of keys read into `member` with its own map; absent = all defaults.
  template <class S>
  config_map&& section(std::string name, S T::*member, config_map<S> sub,
                       std::string doc = {}) && {
    detail::config_field f;
    f.name = name;
    f.type = "map";
    f.doc = std::move(doc);
    f.keys = sub.fields();
    note_defect(detail::add_field(fields_, std::move(f), false));
    if (!sub.defect().empty())
      note_defect(name + "." + sub.defect());
    readers_.push_back([name, member, sub = std::move(sub)](
                         const YAML::Node& parent, T& out, std::string_view path,
                         const detail::parse_env& env) -> caf::error {
      auto node = detail::child(parent, name);
      auto x = sub.parse_at(node, detail::join_path(path, name), env);
      if (!x)
        return x.error();
      out.*member = std::move(*x);
      return {};
    });
    return std::move(*this);
  }

  /// A list whose elements are maps read with `item`; absent = empty (or required).
  template <class S, class... Attrs>
  config_map&& list(std::string name, std::vector<S> T::*member, config_map<S> item,
                    Attrs... attrs) && {
    detail::config_field f;
    f.name = name;
    f.type = "list";
    auto it = std::make_shared<detail::config_field>();
    it->name = "[]";
    it->type = "map";
    it->keys = item.fields();
    f.items = it;
    bool req = false;
    (apply_list_attr(f, req, std::move(attrs)), ...);
    f.required = req;
    if (!req)
      f.default_value = std::make_shared<const YAML::Node>(YAML::NodeType::Sequence);
    note_defect(detail::add_field(fields_, std::move(f), false));
    if (!item.defect().empty())
      note_defect(name + "[]." + item.defect());
    readers_.push_back([name, member, item = std::move(item)](
                         const YAML::Node& parent, T& out, std::string_view path,
                         const detail::parse_env& env) -> caf::error {
      auto node = detail::child(parent, name);
      (out.*member).clear();
      if (detail::absent(node))
        return {};
      auto p = detail::join_path(path, name);
      if (!node.IsSequence())
        return detail::field_error(p, "expected a list");
      for (size_t i = 0; i < node.size(); ++i) {
        auto x = item.parse_at(node[i], p + "[" + std::to_string(i) + "]", env);
        if (!x)
          return x.error();
        (out.*member).push_back(std::move(*x));
      }
      return {};
    });
    return std::move(*this);
  }

  /// Adds a cross-field check (run in declaration order after every key is read).
  config_map&& validate(validator f) && {
    validators_.push_back(std::move(f));
    return std::move(*this);
  }

  /// The schema text for GROVE_PLUGIN / the descriptor's `config_schema`.
  std::string schema() const {
    return detail::schema_text(fields_, defect_);
  }

  /// The Markdown table (key, type, default, range, meaning) of every key.
  std::string markdown() const {
    return detail::markdown_table(fields_);
  }

  /// Reads a configuration the kernel validated (defaults filled) into a `T`, then
  /// runs the cross-field checks. Relative paths resolve against `state_dir`.
  caf::expected<T> parse(const YAML::Node& node,
                         const std::filesystem::path& state_dir = {}) const {
    return parse_at(node, "", detail::parse_env{state_dir});
  }

  /// Validates YAML text with the kernel's validator, then parses it: what a plugin
  /// gets, for tests and tools. Errors read `<origin>:<line>:<col>: <key>: <what>`.
  caf::expected<T> load(std::string_view yaml, std::string_view origin = "<config>",
                        const std::filesystem::path& state_dir = {}) const {
    auto node = detail::validate(fields_, yaml, origin);
    if (!node)
      return node.error();
    return parse(*node, state_dir);
  }

  /// The type-erased key descriptions.
  const std::vector<detail::config_field>& fields() const noexcept {
    return fields_;
  }

  /// A mistake in the declaration (a default outside its range or names, a duplicate
  /// key), empty when there is none. A defective map's schema text is refused by the
  /// kernel with this message.
  const std::string& defect() const noexcept {
    return defect_;
  }

  /// Reads `node` (a map, or null for all defaults) found at `path`, then runs the
  /// checks (a section's own checks run too, wherever the section is used).
  caf::expected<T> parse_at(const YAML::Node& node, const std::string& path,
                            const detail::parse_env& env) const {
    if (!detail::absent(node) && !node.IsMap())
      return detail::field_error(path.empty() ? "(top)" : path, "expected a map");
    T out{};
    for (const auto& read : readers_)
      if (auto err = read(node, out, path, env))
        return err;
    for (const auto& check : validators_)
      if (auto err = check(out))
        return err;
    return out;
  }

private:
  using reader = std::function<caf::error(const YAML::Node&, T&, std::string_view,
                                          const detail::parse_env&)>;

  // Attribute folding: each call looks at one attribute.
  template <class E>
  struct attrs_of {
    bool required = false;
    std::optional<range> bounds;
    std::string min_key;
    std::vector<std::string> choices;
    std::vector<std::pair<std::string, E>> enum_names;
    std::string doc;
  };

  template <class E, class X>
  static void apply_attr(attrs_of<E>& a, X x) {
    if constexpr (std::is_same_v<X, range>)
      a.bounds = x;
    else if constexpr (std::is_same_v<X, at_least_key>)
      a.min_key = std::move(x.key);
    else if constexpr (std::is_same_v<X, one_of>)
      a.choices = x.values;
    else if constexpr (std::is_same_v<X, required_t>)
      a.required = true;
    else if constexpr (std::is_same_v<X, names<E>>)
      a.enum_names = x.values;
    else if constexpr (std::is_convertible_v<X, std::string_view>)
      a.doc = std::string{std::string_view{x}};
    else
      static_assert(std::is_same_v<X, void>, "config_map: unknown key attribute");
  }

  template <class X>
  static void apply_list_attr(detail::config_field& f, bool& req, X x) {
    if constexpr (std::is_same_v<X, required_t>)
      req = true;
    else if constexpr (std::is_convertible_v<X, std::string_view>)
      f.doc = std::string{std::string_view{x}};
    else
      static_assert(std::is_same_v<X, void>, "config_map: list takes required and a doc");
  }

  // The enum type named by a names<E> attribute, int when there is none.
  template <class... Attrs>
  struct enum_of {
    using type = int;
  };

  template <class A, class... Rest>
  struct enum_of<A, Rest...> {
    using type = typename enum_of<Rest...>::type;
  };

  template <class E, class... Rest>
  struct enum_of<names<E>, Rest...> {
    using type = E;
  };

  template <class V>
  struct elem_of {
    using type = V;
  };

  template <class V, class A>
  struct elem_of<std::vector<V, A>> {
    using type = V;
  };

  // One instantiation per member type and enum: the type-dependent part of a key.
  template <class M, class E>
  void add_key(std::string name, M T::*member,
               std::optional<typename detail::unwrap_optional<M>::type> def,
               attrs_of<E> a) {
    using V = typename detail::unwrap_optional<M>::type;
    using Elem = typename elem_of<V>::type;
    detail::config_field f;
    f.name = name;
    f.doc = std::move(a.doc);
    f.required = a.required;
    if (a.bounds) {
      f.min = a.bounds->min;
      f.max = a.bounds->max;
    }
    f.min_key = std::move(a.min_key);
    auto choices = std::move(a.choices);
    for (auto& [n, e] : a.enum_names)
      choices.push_back(n);
    if constexpr (detail::is_vector<V>::value) {
      f.type = "list";
      auto it = std::make_shared<detail::config_field>();
      it->name = "[]";
      it->type = detail::scalar_type<Elem>();
      it->min = f.min;
      it->max = f.max;
      f.min.reset();
      f.max.reset();
      it->choices = std::move(choices);
      f.items = it;
    } else {
      f.type = detail::scalar_type<V>();
      f.choices = std::move(choices);
    }
    if (def)
      f.default_value = std::make_shared<const YAML::Node>(detail::to_node(*def, &a.enum_names));
    note_defect(detail::add_field(fields_, std::move(f),
                                  std::is_enum_v<Elem> && a.enum_names.empty()));
    const auto& added = fields_.back();
    readers_.push_back([name, member, dflt = added.default_value, req = added.required,
                        ns = std::move(a.enum_names)](
                         const YAML::Node& parent, T& out, std::string_view path,
                         const detail::parse_env& env) -> caf::error {
      auto p = detail::join_path(path, name);
      auto found = detail::child(parent, name);
      if (detail::absent(found) && !dflt) {
        if (req)
          return detail::field_error(p, "required key is missing");
        return {}; // the member keeps its initializer (nullopt for optionals)
      }
      const YAML::Node& node = detail::absent(found) ? *dflt : found;
      V value{};
      if constexpr (detail::is_vector<V>::value) {
        if (!node.IsSequence())
          return detail::field_error(p, "expected a list");
        for (size_t i = 0; i < node.size(); ++i) {
          Elem x{};
          if (auto err = detail::read_scalar<Elem, E>(node[i], x,
                                                      p + "[" + std::to_string(i) + "]",
                                                      env, &ns))
            return err;
          value.push_back(std::move(x));
        }
      } else if (auto err = detail::read_scalar<V, E>(node, value, p, env, &ns)) {
        return err;
      }
      out.*member = std::move(value);
      return {};
    });
  }

  // Keeps the first defect: the one a reader fixes first.
  void note_defect(std::string defect) {
    if (defect_.empty())
      defect_ = std::move(defect);
  }

  std::vector<detail::config_field> fields_;
  std::vector<reader> readers_;
  std::vector<validator> validators_;
  std::string defect_;
};

namespace detail {

/// The schema text of `Config::map()`, built once; never throws. On failure the text
/// is a deliberately invalid schema whose message the kernel reports.
template <class Config>
const char* typed_schema() noexcept {
  try {
    static const std::string text = Config::map().schema();
    return text.c_str();
  } catch (...) {
    return "config map could not be built: {}";
  }
}

} // namespace detail

/// A plugin whose configuration is a `Config` declared by `static config_map<Config>
/// Config::map()`. `init` and `reconfigure` receive the filled struct; `config()`
/// returns the one in force. Export it with GROVE_TYPED_PLUGIN.
template <class Config>
class typed_plugin : public plugin {
public:
  /// The configuration struct.
  using config_type = Config;

  /// Prepares the plugin with its configuration (already validated and checked).
  virtual caf::error init(context& ctx, const Config& cfg) = 0;

  /// Applies a new configuration live. Default: `unsupported` (the kernel reloads).
  virtual caf::error reconfigure(const Config& cfg) {
    return make_error(errc::unsupported, "no live reconfiguration");
  }

  /// Reads ctx.config() into a Config and calls init(ctx, cfg).
  caf::error init(context& ctx) final {
    ctx_ = &ctx;
    auto cfg = map().parse(ctx.config(), ctx.state_dir());
    if (!cfg)
      return std::move(cfg.error());
    config_ = std::make_unique<Config>(std::move(*cfg));
    return init(ctx, *config_);
  }

  /// Reads the new configuration and calls reconfigure(cfg); it is in force after a
  /// successful return.
  caf::error reconfigure(const YAML::Node& node) final {
    auto cfg = map().parse(node, ctx_->state_dir());
    if (!cfg)
      return std::move(cfg.error());
    if (auto err = reconfigure(*cfg))
      return err;
    config_ = std::make_unique<Config>(std::move(*cfg));
    return {};
  }

protected:
  /// The configuration in force (valid from init on).
  const Config& config() const noexcept {
    return *config_;
  }

private:
  static const config_map<Config>& map() {
    static const config_map<Config> instance = Config::map();
    return instance;
  }

  context* ctx_ = nullptr;
  std::unique_ptr<Config> config_;
};

} // namespace grove

/// Exports `cls` (a grove::typed_plugin<Config>) as plugin `name`, version `version`,
/// with the schema generated from `Config::map()`.
#define GROVE_TYPED_PLUGIN(cls, name, version)                                  \
  GROVE_PLUGIN(cls, name, version, ::grove::detail::typed_schema<cls::config_type>())
