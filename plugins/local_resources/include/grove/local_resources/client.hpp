#pragma once

// Typed client of the local_resources plugin's bus API (plugins/local_resources/README.md,
// "Bus topics"): a function's volumes and devices, asked by function_runtime at instance
// start, or by tools and tests through any blocking transport.

#include <string>
#include <string_view>

#include "grove/local_resources.pb.h"
#include "grove/rpc.hpp"

namespace grove::local_resources {

/// lr-1: the mounts of one function, from its resourceAccessPolicies.
inline constexpr std::string_view mounts_topic = "$grove/local_resources/mounts";

/// The call, typed both ways. A policy naming an unknown or invalid resource comes back
/// as errc::invalid_config naming it; an image without the plugin as errc::no_route.
using mounts_rpc = rpc<MountsRequest, MountsReply>;

/// A request for `function`'s mounts, read from group version `group_version`.
inline MountsRequest make_request(std::string_view function, uint64_t group_version) {
  MountsRequest req;
  req.set_function(std::string{function});
  req.set_group_version(group_version);
  return req;
}

/// Adds one policy to `req`.
inline void add_policy(MountsRequest& req, std::string_view resource_id,
                       std::string_view permission) {
  auto* p = req.add_policies();
  p->set_resource_id(std::string{resource_id});
  p->set_permission(std::string{permission});
}

} // namespace grove::local_resources
