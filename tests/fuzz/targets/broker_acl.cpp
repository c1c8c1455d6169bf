// The broker plugin's ACL file reader (plugins/message_manager/broker/acl.hpp,
// parse_acl): the file message_manager writes and Mosquitto's plugin reloads while
// devices are connected. A table that parses must be one the plugin can enforce: every
// rule names declared things and valid filters.

#include "acl.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using grove::fuzz::require;
  namespace acl = grove::broker;
  std::string error;
  auto table = acl::parse_acl(std::string{grove::fuzz::bytes(data, size)}, error);
  if (!table) {
    require(error.starts_with("line "), "a refused table without the line");
    return 0;
  }
  for (auto& thing : table->things)
    require(acl::valid_name(thing) && thing != acl::kGroveUser, "a bad thing name");
  for (auto& [thing, filters] : table->pub) {
    require(table->things.count(thing) == 1, "a pub rule for an undeclared thing");
    for (auto& f : filters)
      require(acl::valid_filter(f), "a pub rule with a bad filter");
  }
  for (auto& [target, by_source] : table->deliver) {
    require(table->things.count(target) == 1, "a deliver rule to an undeclared thing");
    for (auto& [source, filters] : by_source)
      for (auto& f : filters)
        require(acl::valid_filter(f), "a deliver rule with a bad filter");
  }
  return 0;
}
