#include "render.hpp"

namespace grove::deployment {

using nlohmann::json;

namespace {

// `patch` merged into `target`: objects key by key, anything else replaces.
void merge_into(json& target, const json& patch) {
  if (!patch.is_object() || !target.is_object()) {
    target = patch;
    return;
  }
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    auto at = target.find(it.key());
    if (at == target.end())
      target[it.key()] = *it;
    else
      merge_into(*at, *it);
  }
}

// The value at `ptr` in `doc`, or nullptr (a malformed pointer too).
const json* at_pointer(const json& doc, const std::string& ptr) {
  try {
    json::json_pointer p{ptr};
    if (!doc.contains(p))
      return nullptr;
    return &doc.at(p);
  } catch (const json::exception&) {
    return nullptr;
  }
}

// Whether `var` (the text between a brace and the first `}` after it) can be a variable
// render knows, from its start alone: every form begins with a name and a colon
// (`iot:`, `configuration:`, `<component>:configuration:`, ...). A false is certain; a
// true is either a variable (its text consumed) or a short text. Deciding each brace of a
// script of many braces in full would copy the rest of it each time: quadratic.
bool may_know(std::string_view var, const render_context& ctx, const std::string& self) {
  size_t n = 0;
  while (n < var.size() && var[n] != ':' && var[n] != '{')
    ++n;
  if (n == 0 || n == var.size() || var[n] != ':')
    return false; // no name before the first colon (component names hold no brace)
  auto after = var.substr(n);
  auto known = [&](std::string_view name) { return ctx.components.count(std::string{name}) > 0; };
  if (after.starts_with(":configuration:"))
    return known(var.substr(0, n));
  if (after.starts_with(":artifacts:") || after.starts_with(":work:"))
    return var.size() <= n + 27; // `<component>:artifacts:decompressedPath` at most
  if (var.starts_with("configuration:"))
    return known(self);
  return var.size() <= 26; // `iot:thingName`, `artifacts:path`, `work:path`, ...
}

} // namespace

json merged_configuration(const json& defaults, const json& previous, const json& update) {
  json base = defaults.is_object() ? defaults : json::object();
  json out = previous.is_null() ? base : previous;
  if (!update.is_object())
    return out;
  if (auto r = update.find("reset"); r != update.end() && r->is_array())
    for (const auto& p : *r) {
      if (!p.is_string())
        continue;
      const auto& ptr = p.get_ref<const std::string&>();
      if (ptr.empty()) {
        out = base;
        continue;
      }
      try {
        json::json_pointer jp{ptr};
        if (const json* d = at_pointer(base, ptr)) {
          out[jp] = *d;
        } else if (out.contains(jp)) {
          auto parent = jp.parent_pointer();
          auto& holder = out.at(parent);
          if (holder.is_object())
            holder.erase(jp.back());
          else if (holder.is_array() && !jp.back().empty()
                   && jp.back().find_first_not_of("0123456789") == std::string::npos)
            holder.erase(std::stoul(jp.back()));
        }
      } catch (const std::exception&) {
        // A malformed pointer (CreateDeployment refuses it) or an index past the end.
      }
    }
  if (auto m = update.find("merge"); m != update.end() && m->is_string()) {
    auto patch = json::parse(m->get_ref<const std::string&>(), nullptr, false);
    if (patch.is_object())
      merge_into(out, patch);
  }
  return out;
}

std::string render(std::string_view text, const render_context& ctx, const std::string& self) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  size_t close = 0; // the first `}` after the last brace tried: still the first after the next
  while (i < text.size()) {
    auto open = text.find('{', i);
    if (open == std::string_view::npos) {
      out.append(text.substr(i));
      break;
    }
    out.append(text.substr(i, open - i));
    if (close <= open)
      close = text.find('}', open + 1);
    if (close == std::string_view::npos) {
      out.append(text.substr(open));
      break;
    }
    if (!may_know(text.substr(open + 1, close - open - 1), ctx, self)) {
      out += '{'; // as below, without the copy
      i = open + 1;
      continue;
    }
    std::string var{text.substr(open + 1, close - open - 1)};
    std::optional<std::string> value;
    if (var == "iot:thingName") {
      value = ctx.thing_name;
    } else {
      // `<ns>:<key>` of self, or `<component>:<ns>:<key>` of another.
      std::string comp = self;
      std::string rest = var;
      for (const char* ns : {":configuration:", ":artifacts:", ":work:"}) {
        auto at = var.find(ns);
        if (at != std::string::npos && at > 0
            && var.find(':') == at) { // the first colon starts the namespace
          comp = var.substr(0, at);
          rest = var.substr(at + 1);
          break;
        }
      }
      auto c = ctx.components.find(comp);
      if (c != ctx.components.end()) {
        const auto& v = c->second;
        if (rest == "artifacts:path")
          value = v.artifacts_path;
        else if (rest == "artifacts:decompressedPath")
          value = v.decompressed_path;
        else if (rest == "work:path")
          value = v.work_path;
        else if (rest.starts_with("configuration:")) {
          auto ptr = rest.substr(14);
          const json* got = at_pointer(v.configuration, ptr);
          value = !got ? std::string{}
                       : got->is_string() ? got->get<std::string>()
                                          : got->dump(-1, ' ', false,
                                                      json::error_handler_t::replace);
        }
      }
    }
    if (value) {
      out += *value;
      i = close + 1;
    } else {
      // Not a variable it knows: the brace stays, and the scan goes on after it (a
      // nested `{a{b}}` still finds `{b}`).
      out += '{';
      i = open + 1;
    }
  }
  return out;
}

} // namespace grove::deployment
