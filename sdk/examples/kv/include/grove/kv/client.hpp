#pragma once

// Typed client of the kv example plugin's services (sdk/examples/kv/README.md), for
// other plugins (asynchronous, through their context) and for tools and tests (any
// blocking transport `send(Envelope) -> caf::expected<Envelope>`).

#include <string_view>

#include "grove/kv.pb.h"
#include "grove/rpc.hpp"

namespace grove::kv {

/// kv-1: read a key.
inline constexpr std::string_view get_topic = "$grove/kv/get";

/// kv-2: write a key (optionally only at a known version).
inline constexpr std::string_view put_topic = "$grove/kv/put";

/// The two calls, typed both ways.
using get_rpc = rpc<GetRequest, GetReply>;
using put_rpc = rpc<PutRequest, PutReply>;

/// A GetRequest for `key`.
inline GetRequest make_get(std::string_view key) {
  GetRequest req;
  req.set_key(std::string{key});
  return req;
}

/// A PutRequest writing `value` to `key`; `if_version` non-zero makes it conditional.
inline PutRequest make_put(std::string_view key, std::string value,
                           uint64_t if_version = 0) {
  PutRequest req;
  req.set_key(std::string{key});
  req.set_value(std::move(value));
  req.set_if_version(if_version);
  return req;
}

} // namespace grove::kv
