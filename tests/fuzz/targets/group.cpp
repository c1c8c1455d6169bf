// Group definitions (kernel/src/group.cpp, load_group): the file an operator writes,
// YAML or JSON (the same loader reads both). A group that loads must satisfy what the
// loader promises the message_manager: unique, well-formed names and ids, endpoints
// that parse, subjects that are valid filters without control characters (the broker's
// ACL file is line-based).

#include <set>

#include "fuzz_support.hpp"
#include "grove/kernel/group.hpp"
#include "grove/topic.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using grove::fuzz::require;
  static grove::fuzz::input_file file{"group.yaml"};
  auto g = grove::load_group(file.write(grove::fuzz::bytes(data, size)));
  if (!g) {
    (void) grove::describe(g.error());
    return 0;
  }
  std::set<std::string> things;
  for (auto& d : g->devices())
    require(!d.thing().empty() && things.insert(d.thing()).second, "bad or repeated thing");
  require(g->devices_size() <= static_cast<int>(grove::max_group_devices), "too many devices");
  require(g->subscriptions_size() <= static_cast<int>(grove::max_group_subscriptions),
          "too many subscriptions");
  for (auto& s : g->subscriptions()) {
    require(!grove::validate_endpoint(s.source()), "a subscription's source is invalid");
    require(!grove::validate_endpoint(s.target()), "a subscription's target is invalid");
    require(!grove::validate_filter(s.subject()), "a subscription's subject is invalid");
    for (unsigned char c : s.subject())
      require(c >= 0x20 && c != 0x7f, "a control character in a subject");
  }
  return 0;
}
