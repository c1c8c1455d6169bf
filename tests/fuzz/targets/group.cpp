// Group definitions (kernel/src/group.cpp, load_group): the file an operator writes,
// YAML or JSON (the same loader reads both). A group that loads must satisfy what the
// loader promises the message_manager: unique, well-formed names and ids, endpoints
// that parse, subjects that are valid filters without control characters (the broker's
// ACL file is line-based), loggers the kernel and function_runtime can apply.

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
  // Loggers (issue 16): what the kernel and function_runtime apply without checking.
  std::set<std::string> components;
  for (auto& l : g->loggers()) {
    require(l.component() == "GreengrassSystem" || l.component() == "Lambda",
            "a logger's component is unknown");
    require(components.insert(l.component()).second, "two loggers of one component");
    require(l.level() == "DEBUG" || l.level() == "INFO" || l.level() == "WARN"
              || l.level() == "ERROR" || l.level() == "FATAL",
            "a logger's level is unknown");
    require(l.type() == "FileSystem", "a logger that is not FileSystem");
    require(l.space_kb() <= (1u << 30), "a logger's space_kb is over the limit");
  }
  return 0;
}
