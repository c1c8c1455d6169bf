#pragma once

// Typed client of the shadow plugin's bus API (plugins/shadow/README.md, "Bus topics"):
// get, update, delete and list a thing's shadows from another plugin (asynchronous,
// through its context) or from tools and tests (any blocking transport
// `send(Envelope) -> caf::expected<Envelope>`).

#include <string>
#include <string_view>

#include "grove/rpc.hpp"
#include "grove/shadow.pb.h"

namespace grove::shadow {

/// sh-1: a shadow's document (GetThingShadow).
inline constexpr std::string_view get_topic = "$grove/shadow/get";

/// sh-2: a partial update (UpdateThingShadow); answered once it is durable.
inline constexpr std::string_view update_topic = "$grove/shadow/update";

/// sh-3: deletes a shadow (DeleteThingShadow).
inline constexpr std::string_view delete_topic = "$grove/shadow/delete";

/// sh-4: the named shadows of a thing (ListNamedShadowsForThing).
inline constexpr std::string_view list_topic = "$grove/shadow/list";

/// The calls, typed both ways. Refusals of AWS's table come back as a Reply with the
/// code; errors of the bus (no_route, timeout, malformed) as caf::error.
using document_rpc = rpc<Request, Reply>;
using list_rpc = rpc<ListRequest, ListReply>;

/// A request for sh-1..sh-3 on `thing`'s shadow `name` (empty: classic).
inline Request make_request(std::string_view thing, std::string_view name,
                            std::string payload = {}) {
  Request req;
  req.set_thing_name(std::string{thing});
  req.set_shadow_name(std::string{name});
  req.set_payload(std::move(payload));
  return req;
}

/// A request for sh-4.
inline ListRequest make_list(std::string_view thing, uint32_t page_size = 0,
                             std::string_view next_token = {}) {
  ListRequest req;
  req.set_thing_name(std::string{thing});
  req.set_page_size(page_size);
  req.set_next_token(std::string{next_token});
  return req;
}

} // namespace grove::shadow
