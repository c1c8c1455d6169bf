#include "discovery.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdio>
#include <limits>

#include "grove/errors.hpp"
#include "v1_store.hpp"

namespace grove::deployment {

using nlohmann::json;

namespace {

constexpr std::string_view discover_prefix = "/greengrass/discover/thing/";

http_response json_response(int status, const json& body) {
  http_response r;
  r.status = status;
  // Bytes of the request quoted in a message that are not UTF-8 become U+FFFD.
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

std::string format_uuid(const unsigned char* b) {
  char out[37];
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                b[14], b[15]);
  return out;
}

// A random trace id, as AWS puts in its 403 body.
std::string trace_id() {
  unsigned char b[16] = {};
  RAND_bytes(b, sizeof b);
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
  return format_uuid(b);
}

// Requests quote at most this much of what the client sent in a log line.
std::string printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 160))
    out += (c >= ' ' && c < 127) ? c : '?';
  return out;
}

} // namespace

discovery_outcome discover(const discovery_settings& settings, const discovery_group* group,
                           const std::string& method, const std::string& target,
                           const std::string& client_cn, const discovery_sources& sources) {
  std::string_view path{target};
  if (auto q = path.find('?'); q != std::string_view::npos)
    path = path.substr(0, q);
  auto refuse = [](int status, json body, std::string why) {
    auto r = json_response(status, body);
    return discovery_outcome{std::move(r), std::move(why)};
  };
  if (!path.starts_with(discover_prefix) || path.size() == discover_prefix.size()
      || path.substr(discover_prefix.size()).find('/') != std::string_view::npos)
    return refuse(404, {{"message", "Not Found"}}, "no such route: " + printable(path));
  if (method != "GET") {
    auto out = refuse(405, {{"message", "Method Not Allowed"}},
                      "method " + printable(method) + " on " + printable(path));
    out.response.headers.emplace_back("Allow", "GET");
    return out;
  }
  auto thing = uri_decode(path.substr(discover_prefix.size()));
  // The certificate is the device's identity (as AWS's greengrass:Discover for the
  // caller's own thing): asking for another thing is forbidden whatever it is, so a
  // device cannot learn which things belong to the group.
  if (thing != client_cn)
    return refuse(403,
                  {{"message", "the client certificate's thing may only discover itself"},
                   {"traceId", trace_id()}},
                  "certificate CN '" + printable(client_cn) + "' asked to discover '"
                    + printable(thing) + "' (403)");
  if (group == nullptr || !group->devices.contains(thing))
    return refuse(404, {{"errorMessage", "The thing provided for discovery was not found"}},
                  "'" + printable(thing) + "' is not a device of "
                    + (group ? "group '" + group->name + "'" : std::string{"any group"})
                    + " (404)");
  auto internal = [&](const caf::error& err) {
    return refuse(500, {{"message", "internal error: " + grove::describe(err)}},
                  "internal error answering '" + printable(thing) + "': " + grove::describe(err));
  };
  auto info = sources.connectivity(settings.core_thing);
  if (!info)
    return internal(info.error());
  auto id = sources.deployed_group_id();
  if (!id)
    return internal(id.error());
  auto cas = settings.cas;
  if (sources.group_cas) {
    auto more = sources.group_cas();
    if (!more)
      return internal(more.error());
    for (auto& pem : *more)
      if (std::find(cas.begin(), cas.end(), pem) == cas.end())
        cas.push_back(std::move(pem));
  }
  json core = {{"thingArn", "arn:aws:iot:" + settings.region + ":" + settings.account_id
                              + ":thing/" + settings.core_thing},
               {"Connectivity", *info ? **info : json::array()}};
  json g = {{"GGGroupId", id->empty() ? stable_group_id(group->name) : *id},
            {"Cores", json::array({core})},
            {"CAs", std::move(cas)}};
  return {json_response(200, {{"GGGroups", json::array({g})}}), {}};
}

std::vector<std::string> pem_certificates(std::string_view pem) {
  static constexpr std::string_view begin = "-----BEGIN CERTIFICATE-----";
  static constexpr std::string_view end = "-----END CERTIFICATE-----";
  std::vector<std::string> out;
  for (size_t at = pem.find(begin); at != std::string_view::npos; at = pem.find(begin, at)) {
    auto stop = pem.find(end, at);
    if (stop == std::string_view::npos)
      break;
    auto cert = pem.substr(at, stop + end.size() - at);
    at = stop + end.size();
    // PEM is ASCII: a block with other bytes is no certificate (and would not survive
    // the JSON answer as it is).
    if (std::all_of(cert.begin(), cert.end(), [](char c) {
          return (c >= ' ' && c < 127) || c == '\n' || c == '\r' || c == '\t';
        })) {
      out.emplace_back(cert);
      out.back() += '\n';
    }
  }
  return out;
}

std::string stable_group_id(std::string_view group_name) {
  // RFC 4122's URL namespace, 6ba7b811-9dad-11d1-80b4-00c04fd430c8.
  static constexpr unsigned char ns[16] = {0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1,
                                           0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8};
  std::string data{reinterpret_cast<const char*>(ns), sizeof ns};
  data += "grove-group:";
  data += group_name;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha1(), nullptr);
  md[6] = static_cast<unsigned char>((md[6] & 0x0f) | 0x50);
  md[8] = static_cast<unsigned char>((md[8] & 0x3f) | 0x80);
  return format_uuid(md);
}

caf::expected<std::string> last_deployed_group(v1_store& store) {
  std::string best;
  int64_t best_ms = -1;
  int64_t after = 0;
  for (;;) {
    auto groups = store.list("groups", after, 100);
    if (!groups)
      return std::move(groups.error());
    for (const auto& g : *groups) {
      after = g.seq;
      // A group's newest deployment decides: a later failed one leaves the group in
      // force as it was, so the newest Success of any of its deployments counts.
      int64_t before = std::numeric_limits<int64_t>::max();
      for (;;) {
        auto ds = store.deployments(g.id, before, 50);
        if (!ds)
          return std::move(ds.error());
        bool found = false;
        for (const auto& d : *ds) {
          before = d.seq;
          if (d.status == "Success") {
            if (d.updated_ms > best_ms) {
              best_ms = d.updated_ms;
              best = g.id;
            }
            found = true;
            break;
          }
        }
        if (found || ds->size() < 50)
          break;
      }
    }
    if (groups->size() < 100)
      break;
  }
  return best;
}

} // namespace grove::deployment
