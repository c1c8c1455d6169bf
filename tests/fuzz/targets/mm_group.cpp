// The group as message_manager receives it on the bus (message_manager.cpp:
// apply_group: protobuf bytes), compiled into its routing table (routes.cpp). The
// table's ACL text is what the broker plugin enforces, one record per line: whatever
// the names and subjects hold, it may carry no more lines than the group has records
// (a newline in a name or subject must not inject a rule), and what the broker plugin
// reads back from it (acl.hpp: parse_acl) names only things the group has.

#include <set>

#include "acl.hpp"
#include "fuzz_support.hpp"
#include "grove/group.pb.h"
#include "routes.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using grove::fuzz::require;
  grove::group::Group g;
  if (!g.ParseFromArray(data, static_cast<int>(size)))
    return 0;
  grove::mm::routes table{g};
  auto acl = table.acl_text();
  size_t things = 0;
  size_t rules = 0;
  size_t lines = 0;
  for (size_t start = 0; start < acl.size(); ++lines) {
    auto end = acl.find('\n', start);
    require(end != std::string::npos, "the ACL text does not end in a newline");
    auto line = std::string_view{acl}.substr(start, end - start);
    require(line.find('\r') == std::string_view::npos, "a carriage return in the ACL");
    if (line.starts_with("thing "))
      ++things;
    else if (line.starts_with("pub ") || line.starts_with("deliver "))
      ++rules;
    else
      require(lines == 0 && line.starts_with("# "), "an ACL line of no known kind");
    start = end + 1;
  }
  require(things <= static_cast<size_t>(g.devices_size()), "more things than devices");
  // At most one pub and one deliver line per subscription.
  require(rules <= 2 * static_cast<size_t>(g.subscriptions_size()), "more rules than subscriptions");
  std::string error;
  if (auto parsed = grove::broker::parse_acl(acl, error)) {
    std::set<std::string> devices;
    for (auto& d : g.devices())
      devices.insert(d.thing());
    for (auto& thing : parsed->things)
      require(devices.count(thing) == 1, "the broker reads a thing the group does not have");
  }
  for (auto& s : g.subscriptions())
    for (auto& d : g.devices())
      (void) table.match(s.source(), d.thing());
  return 0;
}
