// Image profiles (kernel/src/config.cpp, load_profile): the YAML file an operator
// writes, validated against the kernel's schema; nothing may crash or throw out of it,
// and what loads keeps the promises groved relies on.

#include <set>

#include "fuzz_support.hpp"
#include "grove/kernel/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using grove::fuzz::require;
  static grove::fuzz::input_file file{"image.yaml"};
  grove::profile_overrides overrides;
  overrides.default_plugin_dir = "/usr/lib/grove/plugins";
  auto p = grove::load_profile(file.write(grove::fuzz::bytes(data, size)), overrides);
  if (!p) {
    (void) grove::describe(p.error());
    return 0;
  }
  require(!grove::validate_log_level(p->log_level), "a profile with a bad log level");
  std::set<std::string> names;
  for (auto& spec : p->plugins) {
    require(!spec.name.empty() && names.insert(spec.name).second, "bad or repeated plugin");
    (void) grove::to_yaml(*spec.config);
  }
  return 0;
}
