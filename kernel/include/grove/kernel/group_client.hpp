#pragma once

// Typed client of the kernel's group service (sdk/plugin/README.md, "Services";
// README.md, bus topics): `$grove/group/get` answers a grove.group.GetRequest with the
// grove.group.Group in force, or errc::no_route when the image has no group.

#include <chrono>
#include <functional>
#include <string_view>

#include "grove/group.pb.h"
#include "grove/rpc.hpp"

namespace grove::group_client {

/// The topic the kernel serves the group on.
inline constexpr std::string_view get_topic = "$grove/group/get";

/// The typed call.
using get_rpc = rpc<group::GetRequest, group::Group>;

/// Asks for the group from a plugin; `f` runs on the plugin's actor.
inline void get(context& ctx, std::chrono::milliseconds timeout,
                std::function<void(caf::expected<group::Group>)> f) {
  get_rpc{std::string{get_topic}}(ctx, group::GetRequest{}, timeout, std::move(f));
}

/// Asks for the group through a blocking transport `send(Envelope) ->
/// caf::expected<Envelope>` (e.g. a lambda over grove::kernel::request in tests).
template <class Send>
caf::expected<group::Group> get(Send&& send) {
  return get_rpc{std::string{get_topic}}.call_with(std::forward<Send>(send),
                                                   group::GetRequest{});
}

} // namespace grove::group_client
