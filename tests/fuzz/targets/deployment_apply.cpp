// The deployment plugin's apply-side readers of outside input (recipes and
// CreateDeployment bodies, as the runner applies them): the merged configuration
// (`merged_configuration`: DefaultConfiguration, the previous one, `reset` pointers and
// the `merge` document, render.cpp), recipe variables (`render`), life cycle steps as the
// runner reads them (`step_of`, `parse_skipif`, and `check_lifecycle`, CreateComponentVersion's
// check of the same, lifecycle.cpp) and the documents AWS's public components become for
// Grove's plugins (`public_plugin_document`, public_components.cpp).
//
// The input is the text of a script (rendered, read as a Skipif) and, when it is a JSON
// object, its members: `defaults`, `previous`, `update` ({merge: "<json>", reset: [...]}),
// `template` (a string to render), `lifecycle` (a Lifecycle map) and `public` (a public
// component's configuration). Checked: nothing throws; render gives what the render
// before its linear brace scan gave (kept here as reference_render); with an object (or
// null) previous and object defaults the result is an object; a text without a
// `{`...`}` renders as itself; a lifecycle check_lifecycle accepts (holding no recipe variable) gives steps
// without error, and one with a step in error is refused; a Skipif that parses prints
// back to one that parses the same; a public document is an object of the plugin's keys.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "lifecycle.hpp"
#include "public_components.hpp"
#include "render.hpp"

using namespace grove::deployment;
using nlohmann::json;

namespace {

// Any string value (or key) that holds a recipe variable's braces.
bool has_variable(const json& v) {
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    auto open = s.find('{');
    return open != std::string::npos && s.find('}', open) != std::string::npos;
  }
  if (v.is_object() || v.is_array())
    for (auto it = v.begin(); it != v.end(); ++it)
      if (has_variable(*it))
        return true;
  return false;
}

// render as it was before its brace scan was made linear (a342877's, verbatim but for
// its name): the fast one must give the same text for every input.
const json* ref_at_pointer(const json& doc, const std::string& ptr) {
  try {
    json::json_pointer p{ptr};
    if (!doc.contains(p))
      return nullptr;
    return &doc.at(p);
  } catch (const json::exception&) {
    return nullptr;
  }
}

std::string reference_render(std::string_view text, const render_context& ctx, const std::string& self) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    auto open = text.find('{', i);
    if (open == std::string_view::npos) {
      out.append(text.substr(i));
      break;
    }
    out.append(text.substr(i, open - i));
    auto close = text.find('}', open + 1);
    if (close == std::string_view::npos) {
      out.append(text.substr(open));
      break;
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
          const json* got = ref_at_pointer(v.configuration, ptr);
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

void rendered(std::string_view text, const render_context& ctx) {
  for (const char* self : {"a", "b.c", "missing"}) {
    auto out = render(text, ctx, self);
    if (out != reference_render(text, ctx, self))
      std::abort(); // the linear scan renders as the one it replaced
    auto open = text.find('{');
    if ((open == std::string_view::npos || text.find('}', open) == std::string_view::npos)
        && out != text)
      std::abort(); // nothing to replace: the text as it is
  }
}

void skipif(std::string_view text) {
  auto r = parse_skipif(text);
  if (!r)
    return;
  if (r->verb != "onpath" && r->verb != "exists")
    std::abort();
  auto again = parse_skipif(r->verb + " " + r->arg);
  if (!again || again->verb != r->verb || again->arg != r->arg)
    std::abort();
}

void lifecycle(const json& lc) {
  std::vector<recipe_error> errors;
  check_lifecycle(lc, "/Lifecycle", errors);
  for (const auto& e : errors)
    if (e.field.rfind("/Lifecycle", 0) != 0 || e.message.empty())
      std::abort(); // every refusal names its field
  bool variables = has_variable(lc);
  for (const char* name : {"install", "run", "startup", "shutdown", "recover", "bootstrap"}) {
    auto s = step_of(lc, name);
    if (!variables && errors.empty() && !s.error.empty())
      std::abort(); // the runner refuses what the API accepted
    if (s.timeout < 0)
      std::abort();
    if (!s.skipif.empty() && s.error.empty() && !variables && !parse_skipif(s.skipif))
      std::abort();
    (void) step_of(lc, name, [](const std::string& t) { return t + "7"; });
  }
}

void public_documents(const json& configuration) {
  std::vector<std::string> ignored;
  auto bridge = public_plugin_document("aws.greengrass.clientdevices.mqtt.Bridge",
                                       configuration, "core-1", &ignored);
  if (!bridge || !bridge->is_object() || !(*bridge)["bridge"].contains("mqtt_topic_mapping"))
    std::abort();
  auto shadow = public_plugin_document("aws.greengrass.ShadowManager", configuration, "core-1",
                                       &ignored);
  if (!shadow || !shadow->is_object() || shadow->contains("shadowDocumentSizeLimitBytes"))
    std::abort();
  if (auto sync = shadow->find("synchronize"); sync != shadow->end() && sync->is_object())
    if (auto map = sync->find("shadowDocumentsMap"); map != sync->end() && map->is_object())
      std::abort(); // the map form becomes list entries
  (void) shadow->dump(-1, ' ', false, json::error_handler_t::replace);
  if (public_plugin_document("e2e.NotPublic", configuration, "core-1", nullptr))
    std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view all{reinterpret_cast<const char*>(data), size};
  render_context ctx;
  ctx.thing_name = "core-1";
  ctx.components["a"] = component_view{"/art/a", "/unz/a", "/work/a",
                                       json{{"k", "v"}, {"n", 1}, {"o", {{"x", {1, 2}}}}}};
  ctx.components["b.c"] = component_view{"/art/b", "/unz/b", "/work/b", json::object()};
  rendered(all, ctx);
  skipif(all);
  auto doc = json::parse(all, nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    return 0;
  auto get = [&](const char* key) { return doc.contains(key) ? doc[key] : json{}; };
  json defaults = get("defaults");
  json previous = get("previous");
  json update = get("update");
  json merged = merged_configuration(defaults, previous, update);
  if (defaults.is_object() && (previous.is_null() || previous.is_object()) && !merged.is_object())
    std::abort(); // a configuration stays an object
  // A second deployment over the first's result, as the runner does.
  json again = merged_configuration(defaults, merged, update);
  if (merged.is_object() && defaults.is_object() && !again.is_object())
    std::abort();
  ctx.components["a"].configuration = merged;
  ctx.components["b.c"].configuration = again;
  if (auto t = doc.find("template"); t != doc.end() && t->is_string())
    rendered(t->get_ref<const std::string&>(), ctx);
  if (auto lc = doc.find("lifecycle"); lc != doc.end()) {
    lifecycle(*lc);
    if (lc->is_object())
      for (auto it = lc->begin(); it != lc->end(); ++it)
        if (it->is_string())
          rendered(it->get_ref<const std::string&>(), ctx);
  }
  if (auto p = doc.find("public"); p != doc.end())
    public_documents(*p);
  return 0;
}
