#include "platform.hpp"

#include <sys/utsname.h>

#include <algorithm>
#include <regex>

namespace grove::deployment {

using nlohmann::json;

namespace {

// A recipe's Platform value against the device's: `*`, the same string, or `/regex/`
// (Greengrass' form) matching the whole value. Patterns and values are short on real
// devices; longer ones (past 256 bytes, where std::regex's recursion grows) and patterns
// that do not compile match nothing.
bool value_matches(const std::string& wanted, const std::string& have) {
  if (wanted == "*" || wanted == have)
    return true;
  if (wanted.size() < 2 || wanted.front() != '/' || wanted.back() != '/'
      || wanted.size() > 258 || have.size() > 256)
    return false;
  try {
    return std::regex_match(have, std::regex{wanted.substr(1, wanted.size() - 2)});
  } catch (const std::exception&) {
    return false;
  }
}

} // namespace

bool platform_matches(const platform_attributes& wanted, const platform_attributes& platform) {
  return std::all_of(wanted.begin(), wanted.end(), [&](const auto& kv) {
    if (kv.second == "*")
      return true;
    auto it = platform.find(kv.first);
    return it != platform.end() && value_matches(kv.second, it->second);
  });
}

platform_attributes platform_of(const json& manifest) {
  platform_attributes attrs;
  if (!manifest.is_object())
    return attrs;
  if (auto p = manifest.find("Platform"); p != manifest.end() && p->is_object())
    for (auto it = p->begin(); it != p->end(); ++it)
      // Not a string (parse_recipe refuses it): a value no device has.
      attrs[it.key()] = it->is_string() ? it->get<std::string>() : "\x01" + it->dump();
  return attrs;
}

const json* manifest_for(const json& recipe, const platform_attributes& platform) {
  if (!recipe.is_object())
    return nullptr;
  auto m = recipe.find("Manifests");
  if (m == recipe.end() || !m->is_array())
    return nullptr;
  for (const auto& manifest : *m)
    if (manifest.is_object() && platform_matches(platform_of(manifest), platform))
      return &manifest;
  return nullptr;
}

platform_attributes core_platform() {
  std::string arch;
  utsname u{};
  if (::uname(&u) == 0)
    arch = u.machine;
  if (arch == "x86_64")
    arch = "amd64";
  else if (arch.starts_with("armv"))
    arch = "arm";
  return {{"os", "linux"}, {"architecture", arch}};
}

} // namespace grove::deployment
