// message_manager's configuration (plugins/message_manager/src/config.cpp): the
// `config:` an operator writes in the image profile, checked by the kernel's validator
// against the schema grove::config_map (sdk/plugin/src/config_map.cpp) derives, then
// parsed into plugin_config with the cross-field rules.

#include "config.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto map = grove::mm::plugin_config::map();
  auto cfg = map.load(grove::fuzz::bytes(data, size), "image.yaml", "/var/lib/grove");
  if (!cfg)
    (void) grove::describe(cfg.error());
  return 0;
}
