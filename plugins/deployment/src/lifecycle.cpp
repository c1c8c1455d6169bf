#include "lifecycle.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <climits>

namespace grove::deployment {

using nlohmann::json;

namespace {

// What each step may hold besides Script, RequiresPrivilege, Timeout and Setenv.
struct step_kind {
  std::string_view name;
  bool skipif;
  bool on_rollback;
};

constexpr std::array<step_kind, 6> step_kinds{{{"install", true, false},
                                               {"run", true, false},
                                               {"startup", true, false},
                                               {"shutdown", true, false},
                                               {"recover", true, false},
                                               {"bootstrap", false, true}}};

bool same_key(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x))
                  == std::tolower(static_cast<unsigned char>(y));
         });
}

// The spelling `key` has in `names` (matched without case), or "".
std::string_view known(std::string_view key, std::initializer_list<std::string_view> names) {
  for (auto n : names)
    if (same_key(key, n))
      return n;
  return {};
}

// A recipe variable's braces: rendered (by the runner) before the value is typed.
bool has_variable(const std::string& s) {
  auto open = s.find('{');
  return open != std::string::npos && s.find('}', open + 1) != std::string::npos;
}

using render_fn = std::function<std::string(const std::string&)>;
using report_fn = std::function<void(const std::string& key, std::string message)>;

// A string value of a typed key: rendered by the runner; at creation (no renderer) one
// with a variable is left for then (nullopt: accepted unread).
std::optional<std::string> text_of(const json& v, const render_fn* render) {
  const auto& s = v.get_ref<const std::string&>();
  if (!render)
    return has_variable(s) ? std::nullopt : std::optional<std::string>{s};
  return *render ? (*render)(s) : s;
}

void read_timeout(const json& v, const render_fn* render, step_def& out, const report_fn& bad) {
  constexpr const char* why = "Timeout must be a whole number of seconds (0 to 2147483647)";
  int64_t n = -1;
  if (v.is_number_unsigned())
    n = v.get<uint64_t>() > INT_MAX ? -1 : static_cast<int64_t>(v.get<uint64_t>());
  else if (v.is_number_integer())
    n = v.get<int64_t>();
  else if (v.is_string()) {
    auto s = text_of(v, render);
    if (!s)
      return;
    const char* b = s->data();
    const char* e = b + s->size();
    while (b < e && std::isspace(static_cast<unsigned char>(*b)))
      ++b;
    while (e > b && std::isspace(static_cast<unsigned char>(e[-1])))
      --e;
    if (auto [p, ec] = std::from_chars(b, e, n); ec != std::errc{} || p != e || b == e)
      n = -1;
  }
  if (n < 0 || n > INT_MAX)
    return bad("Timeout", why);
  out.timeout = static_cast<int>(n);
}

void read_bool(const json& v, const char* key, const render_fn* render, bool& out,
               const report_fn& bad) {
  if (v.is_boolean()) {
    out = v.get<bool>();
    return;
  }
  if (v.is_string()) {
    auto s = text_of(v, render);
    if (!s)
      return;
    if (same_key(*s, "true") || same_key(*s, "false")) {
      out = same_key(*s, "true");
      return;
    }
  }
  bad(key, std::string{key} + " must be true or false");
}

void read_setenv(const json& v, const char* key, json& out, const report_fn& bad) {
  if (!v.is_object())
    return bad(key, std::string{key} + " must be a map of variable names to values");
  for (auto it = v.begin(); it != v.end(); ++it) {
    const auto& name = it.key();
    if (name.empty() || name.find_first_of("=") != std::string::npos
        || name.find('\0') != std::string::npos)
      bad(std::string{key} + "/" + escape_pointer(name),
          "'" + name.substr(0, 64) + "' is no environment variable name (empty, or holds '=')");
    else if (!it->is_string() && !it->is_number() && !it->is_boolean())
      bad(std::string{key} + "/" + escape_pointer(name),
          "the value of " + name.substr(0, 64) + " must be a string, number or boolean");
  }
  out = v;
}

// One step's value into `out`; each problem to `bad` (the key's path under the step).
// render null: CreateComponentVersion's check (a value with a variable is left).
void read_step(const json& v, const step_kind& kind, const render_fn* render, step_def& out,
               const report_fn& bad) {
  out.present = true;
  if (v.is_null())
    return; // a step with nothing to do
  if (v.is_string()) {
    out.script = v.get<std::string>();
    return;
  }
  if (!v.is_object())
    return bad("", "a lifecycle step is a script (string) or a map");
  std::vector<std::string_view> seen;
  bool has_script = false;
  for (auto it = v.begin(); it != v.end(); ++it) {
    const auto& key = it.key();
    auto k = known(key, {"Script", "RequiresPrivilege", "Timeout", "Setenv", "Skipif",
                         "BootstrapOnRollback"});
    if (k.empty() || (k == "Skipif" && !kind.skipif)
        || (k == "BootstrapOnRollback" && !kind.on_rollback)) {
      bad(escape_pointer(key), "unknown field '" + key + "' of " + std::string{kind.name} + " ("
                         + (kind.skipif ? "Script, RequiresPrivilege, Skipif, Timeout, Setenv"
                            : kind.on_rollback
                              ? "Script, RequiresPrivilege, Timeout, Setenv, BootstrapOnRollback"
                              : "Script, RequiresPrivilege, Timeout, Setenv")
                         + ")");
      continue;
    }
    if (std::find(seen.begin(), seen.end(), k) != seen.end()) {
      bad(escape_pointer(key), "'" + key + "' repeats " + std::string{k}
                         + " (keys are matched without regard to case)");
      continue;
    }
    seen.push_back(k);
    const json& val = *it;
    if (k == "Script") {
      has_script = true;
      if (!val.is_string())
        bad(escape_pointer(key), "Script must be a string");
      else
        out.script = val.get<std::string>();
    } else if (k == "Timeout") {
      read_timeout(val, render, out, [&](const std::string&, std::string m) {
        bad(escape_pointer(key), std::move(m));
      });
    } else if (k == "RequiresPrivilege") {
      read_bool(val, "RequiresPrivilege", render, out.privileged,
                [&](const std::string&, std::string m) { bad(escape_pointer(key), std::move(m)); });
    } else if (k == "BootstrapOnRollback") {
      read_bool(val, "BootstrapOnRollback", render, out.on_rollback,
                [&](const std::string&, std::string m) { bad(escape_pointer(key), std::move(m)); });
    } else if (k == "Setenv") {
      read_setenv(val, "Setenv", out.setenv, [&](const std::string& sub, std::string m) {
        bad(escape_pointer(key) + sub.substr(6), std::move(m)); // "Setenv/x" → "<key>/x"
      });
    } else if (k == "Skipif") {
      if (!val.is_string()) {
        bad(escape_pointer(key), "Skipif must be 'onpath <program>' or 'exists <file>'");
        continue;
      }
      auto s = text_of(val, render);
      if (!s) {
        out.skipif = val.get<std::string>();
        continue;
      }
      if (!parse_skipif(*s))
        bad(escape_pointer(key), "Skipif must be 'onpath <program>' or 'exists <file>', not '"
                           + s->substr(0, 64) + "'");
      else
        out.skipif = *s;
    }
  }
  if (!has_script)
    bad("Script", std::string{kind.name} + " has no Script");
}

} // namespace

const json* member(const json& obj, std::string_view key) {
  if (!obj.is_object())
    return nullptr;
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (same_key(it.key(), key))
      return &*it;
  return nullptr;
}

std::optional<skipif_rule> parse_skipif(std::string_view text) {
  auto blank = [](char c) { return c == ' ' || c == '\t'; };
  while (!text.empty() && blank(text.front()))
    text.remove_prefix(1);
  while (!text.empty() && blank(text.back()))
    text.remove_suffix(1);
  size_t sp = 0;
  while (sp < text.size() && !blank(text[sp]))
    ++sp;
  auto verb = text.substr(0, sp);
  auto arg = text.substr(sp);
  while (!arg.empty() && blank(arg.front()))
    arg.remove_prefix(1);
  if ((verb != "onpath" && verb != "exists") || arg.empty()
      || arg.find('\0') != std::string_view::npos)
    return std::nullopt;
  return skipif_rule{std::string{verb}, std::string{arg}};
}

void check_lifecycle(const json& lifecycle, const std::string& ptr,
                     std::vector<recipe_error>& errors) {
  if (!lifecycle.is_object()) {
    errors.push_back({ptr, "Lifecycle must be a map"});
    return;
  }
  std::vector<std::string_view> seen;
  for (auto it = lifecycle.begin(); it != lifecycle.end(); ++it) {
    const auto& key = it.key();
    auto p = ptr + "/" + escape_pointer(key);
    auto report = [&](const std::string& sub, std::string m) {
      errors.push_back({sub.empty() ? p : p + "/" + sub, std::move(m)});
    };
    auto k = known(key, {"install", "run", "startup", "shutdown", "recover", "bootstrap",
                         "setenv"});
    if (k.empty()) {
      report("", "unknown lifecycle step '" + key.substr(0, 64)
                   + "' (install, run, startup, shutdown, recover, bootstrap, setenv; "
                     "Grove does not read selection keys)");
      continue;
    }
    if (std::find(seen.begin(), seen.end(), k) != seen.end()) {
      report("", "'" + key + "' repeats " + std::string{k}
                   + " (steps are matched without regard to case)");
      continue;
    }
    seen.push_back(k);
    if (k == "setenv") {
      json ignored;
      read_setenv(*it, "setenv", ignored, [&](const std::string& sub, std::string m) {
        errors.push_back({ptr + "/" + escape_pointer(key) + sub.substr(6), std::move(m)});
      });
      continue;
    }
    const auto& kind = *std::find_if(step_kinds.begin(), step_kinds.end(),
                                     [&](const step_kind& s) { return s.name == k; });
    step_def ignored;
    read_step(*it, kind, nullptr, ignored, report);
  }
}

step_def step_of(const json& lifecycle, std::string_view name, const render_fn& render) {
  step_def s;
  auto kind = std::find_if(step_kinds.begin(), step_kinds.end(),
                           [&](const step_kind& k) { return k.name == name; });
  const json* v = member(lifecycle, name);
  if (!v || kind == step_kinds.end())
    return s;
  read_step(*v, *kind, &render, s, [&](const std::string& sub, std::string m) {
    s.error += (s.error.empty() ? "" : "; ") + std::string{name} + (sub.empty() ? "" : "/" + sub)
               + ": " + m;
  });
  return s;
}

json lifecycle_of(const json& recipe, const platform_attributes& platform) {
  if (const json* m = manifest_for(recipe, platform))
    if (auto l = m->find("Lifecycle"); l != m->end() && l->is_object())
      return *l;
  if (recipe.is_object())
    if (auto l = recipe.find("Lifecycle"); l != recipe.end() && l->is_object())
      return *l;
  return json::object();
}

} // namespace grove::deployment
