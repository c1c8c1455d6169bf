// Greengrass v1's discovery (plugins/deployment/src/discovery.cpp): the input is a
// request as the discovery listener hands it over, "METHOD TARGET" on the first line, the
// client certificate's CN on the second, then the core's stored connectivity list (JSON;
// anything else is "never set"). The group is devices A, B and the CN's own thing when the
// input's last byte is odd. Every answer is one of the documented statuses with a JSON
// object body; 200 only for a GET of the CN's own thing that is a device of the group,
// in v1's shape with the list and the CAs given; a refusal always has a printable log
// line. The rest of the input is also split as a PEM bundle and named as a group.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "discovery.hpp"

using namespace grove::deployment;
using nlohmann::json;

namespace {

std::string_view line(std::string_view& in) {
  auto eol = in.find('\n');
  auto out = in.substr(0, eol);
  in = eol == std::string_view::npos ? std::string_view{} : in.substr(eol + 1);
  return out;
}

void require(bool ok) {
  if (!ok)
    std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in{reinterpret_cast<const char*>(data), size};
  bool with_cn_device = size > 0 && (data[size - 1] & 1) != 0;
  auto first = line(in);
  auto sp = first.find(' ');
  std::string method{first.substr(0, sp)};
  std::string target = sp == std::string_view::npos ? "" : std::string{first.substr(sp + 1)};
  std::string cn{line(in)};
  auto stored = json::parse(in, nullptr, false);
  discovery_settings settings{"us-east-1", "123456789012", "core-1",
                              pem_certificates(in)};
  discovery_group group{stable_group_id(in), {"A", "B"}};
  if (with_cn_device)
    group.devices.insert(cn);
  discovery_sources sources;
  sources.connectivity = [&](const std::string& thing)
    -> caf::expected<std::optional<json>> {
    require(thing == "core-1");
    if (stored.is_array())
      return std::optional<json>{stored};
    return std::optional<json>{};
  };
  sources.deployed_group_id = []() -> caf::expected<std::string> { return std::string{}; };
  auto out = discover(settings, &group, method, target, cn, sources);
  auto s = out.response.status;
  require(s == 200 || s == 403 || s == 404 || s == 405);
  auto body = json::parse(out.response.body, nullptr, false);
  require(body.is_object());
  if (s == 200) {
    require(method == "GET" && out.refusal.empty() && group.devices.contains(cn));
    require(target.find("/greengrass/discover/thing/") == 0);
    const auto& g = body["GGGroups"].at(0);
    require(g["GGGroupId"] == stable_group_id(group.name)); // no v1 group deployed
    require(g["CAs"] == json(settings.cas));
    require(g["Cores"].at(0)["Connectivity"] == (stored.is_array() ? stored : json::array()));
  } else {
    require(!out.refusal.empty());
    for (char c : out.refusal)
      require(c >= ' ' && c < 127);
  }
  return 0;
}
