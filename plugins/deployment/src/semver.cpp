#include "semver.hpp"

#include <algorithm>

namespace grove::deployment {

namespace {

constexpr uint64_t max_number = (uint64_t{1} << 53) - 1;

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool ident_char(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}

bool numeric(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_digit);
}

bool fail(std::string* why, std::string text) {
  if (why)
    *why = std::move(text);
  return false;
}

// A number without leading zeros, below 2^53.
bool read_number(std::string_view s, uint64_t& out, std::string* why) {
  if (!numeric(s))
    return fail(why, "'" + std::string{s} + "' is not a number");
  if (s.size() > 1 && s[0] == '0')
    return fail(why, "'" + std::string{s} + "' has a leading zero");
  if (s.size() > 16)
    return fail(why, "'" + std::string{s} + "' is too large");
  out = 0;
  for (char c : s)
    out = out * 10 + static_cast<uint64_t>(c - '0');
  if (out > max_number)
    return fail(why, "'" + std::string{s} + "' is too large");
  return true;
}

// Dot-separated identifiers of a pre-release or build part.
bool read_idents(std::string_view s, bool pre, std::vector<std::string>& out, std::string* why) {
  while (true) {
    auto dot = s.find('.');
    auto id = s.substr(0, dot);
    if (id.empty())
      return fail(why, "empty identifier");
    if (!std::all_of(id.begin(), id.end(), ident_char))
      return fail(why, "'" + std::string{id} + "' has characters other than [0-9A-Za-z-]");
    if (pre && numeric(id) && id.size() > 1 && id[0] == '0')
      return fail(why, "pre-release '" + std::string{id} + "' has a leading zero");
    out.emplace_back(id);
    if (dot == std::string_view::npos)
      return true;
    s = s.substr(dot + 1);
  }
}

int compare_ident(const std::string& a, const std::string& b) {
  bool na = numeric(a), nb = numeric(b);
  if (na && nb) {
    if (a.size() != b.size())
      return a.size() < b.size() ? -1 : 1;
    return a.compare(b) < 0 ? -1 : a.compare(b) > 0 ? 1 : 0;
  }
  if (na != nb)
    return na ? -1 : 1;
  int c = a.compare(b);
  return c < 0 ? -1 : c > 0 ? 1 : 0;
}

} // namespace

std::string semver::str() const {
  std::string s = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
  for (size_t i = 0; i < pre.size(); ++i)
    s += (i == 0 ? "-" : ".") + pre[i];
  if (!build.empty())
    s += "+" + build;
  return s;
}

std::optional<semver> parse_semver(std::string_view text, std::string* why) {
  semver v;
  auto plus = text.find('+');
  if (plus != std::string_view::npos) {
    std::vector<std::string> ids;
    if (!read_idents(text.substr(plus + 1), false, ids, why))
      return std::nullopt;
    v.build = std::string{text.substr(plus + 1)};
    text = text.substr(0, plus);
  }
  auto dash = text.find('-');
  if (dash != std::string_view::npos) {
    if (!read_idents(text.substr(dash + 1), true, v.pre, why))
      return std::nullopt;
    text = text.substr(0, dash);
  }
  uint64_t* parts[] = {&v.major, &v.minor, &v.patch};
  for (int i = 0; i < 3; ++i) {
    auto dot = text.find('.');
    if ((i < 2) == (dot == std::string_view::npos)) {
      fail(why, "expected MAJOR.MINOR.PATCH");
      return std::nullopt;
    }
    if (!read_number(text.substr(0, dot), *parts[i], why))
      return std::nullopt;
    text = i < 2 ? text.substr(dot + 1) : std::string_view{};
  }
  return v;
}

int compare(const semver& a, const semver& b) {
  if (a.major != b.major)
    return a.major < b.major ? -1 : 1;
  if (a.minor != b.minor)
    return a.minor < b.minor ? -1 : 1;
  if (a.patch != b.patch)
    return a.patch < b.patch ? -1 : 1;
  if (a.pre.empty() != b.pre.empty())
    return a.pre.empty() ? 1 : -1;
  for (size_t i = 0; i < std::min(a.pre.size(), b.pre.size()); ++i)
    if (int c = compare_ident(a.pre[i], b.pre[i]))
      return c;
  if (a.pre.size() != b.pre.size())
    return a.pre.size() < b.pre.size() ? -1 : 1;
  return 0;
}

bool same_version(std::string_view a, std::string_view b) {
  // A version without MINOR or PATCH (`1`, `1.0`, build metadata allowed): the missing
  // parts 0. A pre-release needs all three (as in ranges).
  auto loose = [](std::string_view text) -> std::optional<semver> {
    if (auto v = parse_semver(text))
      return v;
    std::string t{text.substr(0, text.find('+'))};
    auto dots = std::count(t.begin(), t.end(), '.');
    if (t.find('-') != std::string::npos || dots > 1)
      return std::nullopt;
    for (; dots < 2; ++dots)
      t += ".0";
    return parse_semver(t);
  };
  auto x = loose(a);
  auto y = loose(b);
  return x && y ? compare(*x, *y) == 0 : a == b;
}

namespace {

bool holds(const comparator& c, const semver& v) {
  int r = compare(v, c.version);
  if (c.op == "<")
    return r < 0;
  if (c.op == "<=")
    return r <= 0;
  if (c.op == ">")
    return r > 0;
  if (c.op == ">=")
    return r >= 0;
  return r == 0;
}

// A partial version: each of up to three parts a number or a wildcard (x, X, *).
struct partial {
  int parts = 0; // how many numbers before the first wildcard or the end
  uint64_t n[3] = {0, 0, 0};
  std::vector<std::string> pre;
};

bool read_partial(std::string_view s, partial& p, std::string* why) {
  if (!s.empty() && (s[0] == 'v' || s[0] == '='))
    s.remove_prefix(1);
  auto plus = s.find('+');
  if (plus != std::string_view::npos)
    s = s.substr(0, plus);
  if (s.empty())
    return fail(why, "a version is missing");
  int i = 0;
  bool wild = false;
  while (true) {
    if (i == 3)
      return fail(why, "more than three version parts");
    auto end = s.find_first_of(".-");
    auto part = s.substr(0, end);
    if (part == "x" || part == "X" || part == "*") {
      wild = true;
    } else if (wild) {
      return fail(why, "a number after a wildcard");
    } else {
      if (!read_number(part, p.n[i], why))
        return false;
      p.parts = i + 1;
    }
    ++i;
    if (end == std::string_view::npos)
      return true;
    if (s[end] == '-') {
      if (p.parts != 3)
        return fail(why, "a pre-release needs MAJOR.MINOR.PATCH");
      return read_idents(s.substr(end + 1), true, p.pre, why);
    }
    s = s.substr(end + 1);
  }
}

semver make(uint64_t a, uint64_t b, uint64_t c, std::vector<std::string> pre = {}) {
  semver v;
  v.major = a;
  v.minor = b;
  v.patch = c;
  v.pre = std::move(pre);
  return v;
}

semver lowest(const partial& p) {
  return make(p.n[0], p.n[1], p.n[2], p.pre);
}

// The first version above every one the partial's wildcard covers (as `X.Y.Z-0`).
semver above(const partial& p) {
  if (p.parts == 1)
    return make(p.n[0] + 1, 0, 0, {"0"});
  return make(p.n[0], p.n[1] + 1, 0, {"0"});
}

bool expand(std::string op, const partial& p, std::vector<comparator>& out, std::string* why) {
  auto add = [&](std::string o, semver v) { out.push_back({std::move(o), std::move(v)}); };
  if (p.parts == 0) { // *, x: any (but `<*` and `>*` match nothing)
    if (op == "<" || op == ">")
      add("<", make(0, 0, 0, {"0"}));
    else
      add(">=", make(0, 0, 0));
    return true;
  }
  if (op == "~") {
    add(">=", lowest(p));
    add("<", p.parts == 1 ? make(p.n[0] + 1, 0, 0, {"0"}) : make(p.n[0], p.n[1] + 1, 0, {"0"}));
    return true;
  }
  if (op == "^") {
    add(">=", lowest(p));
    if (p.n[0] > 0 || p.parts == 1)
      add("<", make(p.n[0] + 1, 0, 0, {"0"}));
    else if (p.n[1] > 0 || p.parts == 2)
      add("<", make(0, p.n[1] + 1, 0, {"0"}));
    else
      add("<", make(0, 0, p.n[2] + 1, {"0"}));
    return true;
  }
  bool full = p.parts == 3;
  if (op == "" || op == "=") {
    if (full) {
      add("=", lowest(p));
    } else {
      add(">=", lowest(p));
      add("<", above(p));
    }
    return true;
  }
  if (op == ">") {
    add(full ? ">" : ">=", full ? lowest(p) : above(p));
    if (!full)
      out.back().version.pre.clear();
    return true;
  }
  if (op == ">=") {
    add(">=", lowest(p));
    return true;
  }
  if (op == "<") {
    add("<", full ? lowest(p) : make(p.n[0], p.n[1], 0, {"0"}));
    return true;
  }
  if (op == "<=") {
    if (full)
      add("<=", lowest(p));
    else
      add("<", above(p));
    return true;
  }
  return fail(why, "unknown operator '" + op + "'");
}

std::vector<std::string_view> words(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t'))
      ++i;
    size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t')
      ++j;
    if (j > i)
      out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

bool parse_set(std::string_view text, std::vector<comparator>& out, std::string* why) {
  auto ws = words(text);
  if (ws.empty())
    return expand("", partial{}, out, why);
  if (ws.size() == 3 && ws[1] == "-") { // hyphen range
    partial lo, hi;
    if (!read_partial(ws[0], lo, why) || !read_partial(ws[2], hi, why))
      return false;
    return expand(">=", lo, out, why) && expand("<=", hi, out, why);
  }
  for (size_t i = 0; i < ws.size(); ++i) {
    auto w = ws[i];
    size_t k = 0;
    while (k < w.size() && (w[k] == '<' || w[k] == '>' || w[k] == '=' || w[k] == '~'
                            || w[k] == '^'))
      ++k;
    std::string op{w.substr(0, k)};
    auto rest = w.substr(k);
    if (rest.empty()) { // `>= 1.2`: the operator stands apart
      if (i + 1 == ws.size())
        return fail(why, "operator '" + op + "' without a version");
      rest = ws[++i];
    }
    if (op == "~>")
      op = "~";
    static const char* known[] = {"", "=", "<", "<=", ">", ">=", "~", "^"};
    if (std::find(std::begin(known), std::end(known), op) == std::end(known))
      return fail(why, "unknown operator '" + op + "'");
    partial p;
    if (!read_partial(rest, p, why))
      return false;
    if (!expand(op, p, out, why))
      return false;
  }
  return true;
}

} // namespace

std::optional<semver_range> parse_range(std::string_view text, std::string* why) {
  if (text.size() > 1024) {
    fail(why, "longer than 1024 characters");
    return std::nullopt;
  }
  semver_range r;
  while (true) {
    auto bar = text.find("||");
    std::vector<comparator> set;
    if (!parse_set(text.substr(0, bar), set, why))
      return std::nullopt;
    r.sets.push_back(std::move(set));
    if (bar == std::string_view::npos)
      return r;
    text = text.substr(bar + 2);
  }
}

bool semver_range::satisfies(const semver& v) const {
  for (const auto& set : sets) {
    bool ok = std::all_of(set.begin(), set.end(), [&](const comparator& c) { return holds(c, v); });
    if (!ok)
      continue;
    if (v.pre.empty())
      return true;
    for (const auto& c : set)
      if (!c.version.pre.empty() && c.version.major == v.major && c.version.minor == v.minor
          && c.version.patch == v.patch && !(c.version.pre.size() == 1 && c.version.pre[0] == "0"
                                             && c.op == "<"))
        return true;
  }
  return false;
}

} // namespace grove::deployment
