#pragma once

// The broker plugin's ACL file (format in README.md): its parser and the MQTT topic
// matching the plugin enforces it with. Pure functions, apart from the Mosquitto
// callbacks, so the parser is fuzzed on its own (tests/fuzz/targets/broker_acl.cpp).

#include <cstddef>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace grove::broker {

inline constexpr const char* kGroveUser = "grove";
inline constexpr const char* kAnyGrove = "*";  // deliver-rule key: any message injected by grove

// ---------------------------------------------------------------------------------------------
// MQTT topic matching (MQTT 3.1.1 / 5.0 section 4.7), with the $-rule: a filter starting with a
// wildcard does not match a topic starting with '$'.

inline std::vector<std::string_view> split_levels(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    auto pos = s.find('/', start);
    if (pos == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

inline bool valid_filter(std::string_view filter) {
  if (filter.empty()) return false;
  auto levels = split_levels(filter);
  for (std::size_t i = 0; i < levels.size(); ++i) {
    auto l = levels[i];
    if (l.find('#') != std::string_view::npos && (l != "#" || i + 1 != levels.size())) return false;
    if (l.find('+') != std::string_view::npos && l != "+") return false;
  }
  return true;
}

inline bool topic_matches(std::string_view filter, std::string_view topic) {
  if (topic.empty()) return false;
  if (topic.front() == '$' && !filter.empty() && (filter.front() == '+' || filter.front() == '#'))
    return false;
  auto f = split_levels(filter);
  auto t = split_levels(topic);
  std::size_t i = 0;
  for (; i < f.size(); ++i) {
    if (f[i] == "#") return true;  // matches the parent level too ("a/#" matches "a")
    if (i >= t.size()) return false;
    if (f[i] != "+" && f[i] != t[i]) return false;
  }
  return i == t.size();
}

// Can some topic match both filters? A topic starting with '$' is matched only by filters
// whose first level is that same literal (the $-rule), so a wildcard first level never
// overlaps a '$' one.
inline bool filters_overlap(std::string_view a, std::string_view b) {
  auto x = split_levels(a);
  auto y = split_levels(b);
  auto dollar = [](std::string_view l) { return !l.empty() && l.front() == '$'; };
  for (std::size_t i = 0;; ++i) {
    bool x_end = i >= x.size(), y_end = i >= y.size();
    if (x_end && y_end) return true;
    bool x_wild = !x_end && (x[i] == "#" || x[i] == "+");
    bool y_wild = !y_end && (y[i] == "#" || y[i] == "+");
    if (i == 0 && ((x_wild && !y_end && dollar(y[0])) || (y_wild && !x_end && dollar(x[0]))))
      return false;
    if ((!x_end && x[i] == "#") || (!y_end && y[i] == "#")) return true;
    if (x_end || y_end) return false;
    if (!x_wild && !y_wild && x[i] != y[i]) return false;
  }
}

// ---------------------------------------------------------------------------------------------
// The ACL table.

struct Table {
  std::set<std::string> things;
  std::map<std::string, std::vector<std::string>> pub;  // thing -> filters
  // target -> (source -> filters). Source keys: a thing name, "*" for `deliver * ...` lines
  // and "@cloud", "@shadow", "@bridge", "@function:<name>" for grove-injected messages of that origin
  // (thing names cannot start with '@', so the keys never collide).
  std::map<std::string, std::map<std::string, std::vector<std::string>>> deliver;
  // `not_ready`: the core has no group yet. A client that is no thing is then told to come
  // back (connection closed without CONNACK) instead of refused for good.
  bool not_ready = false;
  // `end`: the file's writer finished it. message_manager writes its tables without an
  // fsync (see the README), so with plugin_opt_require_end a file without it is refused as
  // torn (cut short by a crash).
  bool complete = false;
  // `route <filter>`: device publishes message_manager routes (to functions, the shadow
  // service, the cloud, the bridge); the plugin hands each matching one over the route
  // socket once (README.md, "Route socket").
  std::vector<std::string> route;
};

inline bool valid_name(std::string_view n) {
  if (n.empty()) return false;
  for (char c : n) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '#' || c == '+' || c == '*' ||
        c == '/')
      return false;
  }
  return true;
}

// A source that grove may claim for a message it injects: "cloud", "shadow", "bridge" (what
// message_manager's MQTT bridge relays to the devices, from the local bus and from the
// cloud alike) or "function:<name>". Anything else (e.g. "device:X") is not honoured.
inline bool valid_grove_source(std::string_view v) {
  if (v == "cloud" || v == "shadow" || v == "bridge") return true;
  constexpr std::string_view fn = "function:";
  return v.substr(0, fn.size()) == fn && valid_name(v.substr(fn.size()));
}

// Splits off the next whitespace-separated token; returns the rest after exactly the
// separator run that follows it.
inline std::string_view next_token(std::string_view& rest) {
  auto b = rest.find_first_not_of(" \t");
  if (b == std::string_view::npos) {
    rest = {};
    return {};
  }
  rest.remove_prefix(b);
  auto e = rest.find_first_of(" \t");
  auto tok = rest.substr(0, e);
  if (e == std::string_view::npos) {
    rest = {};
  } else {
    rest.remove_prefix(e);
    auto n = rest.find_first_not_of(" \t");
    rest = n == std::string_view::npos ? std::string_view{} : rest.substr(n);
  }
  return tok;
}

// Parses the whole file; on any error returns nullopt and sets `error` ("line N: ...").
inline std::optional<Table> parse_acl(const std::string& text, std::string& error) {
  Table t;
  struct PubLine { std::size_t line; std::string thing, filter; };
  struct DelLine { std::size_t line; std::string source, target, filter; };
  std::vector<PubLine> pubs;
  std::vector<DelLine> dels;
  std::istringstream in(text);
  std::string raw;
  std::size_t lineno = 0;
  auto fail = [&](const std::string& msg) {
    error = "line " + std::to_string(lineno) + ": " + msg;
    return std::nullopt;
  };
  while (std::getline(in, raw)) {
    ++lineno;
    if (!raw.empty() && raw.back() == '\r') raw.pop_back();
    std::string_view rest = raw;
    auto first = rest.find_first_not_of(" \t");
    if (first == std::string_view::npos || rest[first] == '#') continue;
    auto kw = next_token(rest);
    if (t.complete) return fail("'" + std::string(kw) + "' after end");
    if (kw == "end") {
      if (!rest.empty()) return fail("trailing text after end");
      t.complete = true;
    } else if (kw == "thing") {
      auto name = next_token(rest);
      if (!valid_name(name)) return fail("bad thing name");
      if (!rest.empty()) return fail("trailing text after thing name");
      if (name == kGroveUser) return fail("thing name 'grove' is reserved");
      if (name.front() == '@')
        return fail("thing name '" + std::string(name) + "' must not start with '@' (reserved)");
      t.things.emplace(name);
    } else if (kw == "not_ready") {
      if (!rest.empty()) return fail("trailing text after not_ready");
      t.not_ready = true;
    } else if (kw == "pub") {
      auto thing = next_token(rest);
      if (!valid_name(thing)) return fail("bad thing name");
      if (!valid_filter(rest)) return fail("bad topic filter");
      pubs.push_back({lineno, std::string(thing), std::string(rest)});
    } else if (kw == "route") {
      if (!valid_filter(rest)) return fail("bad topic filter");
      t.route.emplace_back(rest);
    } else if (kw == "deliver") {
      auto source = next_token(rest);
      auto target = next_token(rest);
      if (!source.empty() && source.front() == '@') {
        if (!valid_grove_source(source.substr(1)))
          return fail("bad source '" + std::string(source) +
                      "' (expected @cloud, @shadow, @bridge or @function:<name>)");
      } else if (source != kAnyGrove && !valid_name(source)) {
        return fail("bad source thing name");
      }
      if (!valid_name(target)) return fail("bad target thing name");
      if (!valid_filter(rest)) return fail("bad topic filter");
      dels.push_back({lineno, std::string(source), std::string(target), std::string(rest)});
    } else {
      return fail("unknown keyword '" + std::string(kw) + "'");
    }
  }
  for (auto& p : pubs) {
    lineno = p.line;
    if (!t.things.count(p.thing)) return fail("pub: '" + p.thing + "' is not a thing of the group");
    t.pub[p.thing].push_back(p.filter);
  }
  for (auto& d : dels) {
    lineno = d.line;
    if (d.source != kAnyGrove && d.source.front() != '@' && !t.things.count(d.source))
      return fail("deliver: source '" + d.source + "' is not a thing of the group");
    if (!t.things.count(d.target))
      return fail("deliver: target '" + d.target + "' is not a thing of the group");
    t.deliver[d.target][d.source].push_back(d.filter);
  }
  return t;
}

} // namespace grove::broker
