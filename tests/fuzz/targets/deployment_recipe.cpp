// The deployment plugin's recipe parser (plugins/deployment/src/recipe.cpp, YAML or
// JSON) and semver parsers (semver.cpp). A recipe that passes reads back identical from
// both of its written forms (GetComponent's JSON and YAML); every refusal names a field.
// The input's first line is also read as a version and as a version range: a range that
// parses decides every version without failing, and a version that parses prints back
// as itself. An accepted recipe's fetched artifacts each carry a file mode within 0555
// (Permission) or none.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "artifact_uri.hpp"
#include "recipe.hpp"
#include "semver.hpp"

using namespace grove::deployment;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view all{reinterpret_cast<const char*>(data), size};
  auto line = all.substr(0, all.find('\n'));
  std::string why;
  auto v = parse_semver(line, &why);
  if (v && v->str() != line)
    std::abort(); // a strict version prints back as itself
  if (auto r = parse_range(line, &why)) {
    if (r->sets.empty())
      std::abort();
    for (const char* probe : {"0.0.0", "1.2.3", "1.2.3-beta.1", "2.0.0-0", "10.20.30"})
      (void) r->satisfies(*parse_semver(probe));
    if (v)
      (void) r->satisfies(*v);
  }
  std::vector<recipe_error> errors;
  auto rec = parse_recipe(all, errors);
  if (!rec) {
    if (errors.empty())
      std::abort(); // a refusal always says why
    for (const auto& e : errors)
      if (e.field.empty() || e.field[0] != '/' || e.message.empty())
        std::abort();
    return 0;
  }
  // Each manifest's artifacts: the ones fetched on a device of its platform.
  std::vector<platform_attributes> devices{{{"os", "linux"}, {"architecture", "amd64"}}};
  if (auto ms = rec->doc.find("Manifests"); ms != rec->doc.end() && ms->is_array())
    for (const auto& m : *ms)
      devices.push_back(platform_of(m));
  for (const auto& device : devices)
    for (const auto& a : fetchable_artifacts(rec->doc, device))
      if (a.mode != -1 && (a.mode < 0 || (a.mode & ~0555) != 0))
        std::abort(); // Read and Execute bits only
  for (const auto& text : {recipe_json(rec->doc), recipe_yaml(rec->doc)}) {
    std::vector<recipe_error> again_errors;
    auto again = parse_recipe(text, again_errors);
    if (!again || again->doc != rec->doc)
      std::abort(); // what GetComponent writes must read back as the same recipe
  }
  return 0;
}
