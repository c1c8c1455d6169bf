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

/// lr-2: an event local_resources publishes (empty payload) each time it starts, also
/// after a restart or reload: what it answers may have changed, or a request may have
/// found nobody serving lr-1. function_runtime asks again for every function's mounts.
inline constexpr std::string_view started_topic = "$grove/local_resources/started";

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

/// Adds one of the function's own volumes (containerParams.volumes[`index`]) to `req`.
inline void add_volume(MountsRequest& req, size_t index, std::string_view source,
                       std::string_view destination, std::string_view permission,
                       bool add_group_owner) {
  auto* r = req.add_inline_resources();
  r->set_id("containerParams.volumes[" + std::to_string(index) + "]");
  r->set_source_path(std::string{source});
  r->set_destination_path(std::string{destination});
  r->set_permission(std::string{permission});
  r->set_add_group_owner(add_group_owner);
}

/// Adds one of the function's own devices (containerParams.devices[`index`]) to `req`.
inline void add_device(MountsRequest& req, size_t index, std::string_view path,
                       std::string_view permission, bool add_group_owner) {
  auto* r = req.add_inline_resources();
  r->set_id("containerParams.devices[" + std::to_string(index) + "]");
  r->set_device(true);
  r->set_source_path(std::string{path});
  r->set_destination_path(std::string{path});
  r->set_permission(std::string{permission});
  r->set_add_group_owner(add_group_owner);
}

} // namespace grove::local_resources
