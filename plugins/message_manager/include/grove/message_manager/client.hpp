#pragma once

// Typed client of message_manager's service mm-3 (plugins/message_manager/README.md):
// publish a message through the subscription table on behalf of a function or the
// shadow service and learn where it went. Usable from a plugin (asynchronous, through
// its context), and from tools and tests (any blocking transport).

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "grove/message_manager.pb.h"
#include "grove/rpc.hpp"

namespace grove::message_manager {

/// Requests on this prefix + the MQTT topic are message_manager's (mm-3).
inline constexpr std::string_view in_prefix = "$grove/mm/in/";

/// Where message_manager publishes messages for functions and the shadow service
/// (mm-1, mm-2); only message_manager may publish there (it owns the events).
inline constexpr std::string_view out_prefix = "$grove/mm/out/";

/// The reply's decoding (the request carries the message itself, not a Protobuf).
using routed_rpc = rpc<Envelope, mm::Routed>;

/// The request for `payload` on MQTT topic `subject`, sent as `source`
/// (function:<name> or shadow; the sender's may_claim must grant it).
inline Envelope make_publish(std::string_view subject, std::string payload,
                             std::string_view source, uint32_t qos = 0,
                             std::string_view content_type = {}) {
  Envelope e;
  e.set_topic(std::string{in_prefix} + std::string{subject});
  e.set_payload(std::move(payload));
  e.set_source(std::string{source});
  e.set_qos(qos);
  e.set_content_type(std::string{content_type});
  return e;
}

/// Publishes through message_manager from a plugin; `f` runs on the plugin's actor with
/// the targets reached (0: no route) or the error (not_authorized: refused source).
inline void publish(context& ctx, Envelope msg, std::chrono::milliseconds timeout,
                    std::function<void(caf::expected<mm::Routed>)> f) {
  ctx.call(std::move(msg), timeout, [f = std::move(f)](caf::expected<Envelope> reply) {
    f(routed_rpc::decode(std::move(reply)));
  });
}

/// Publishes through any blocking transport `send(Envelope) -> caf::expected<Envelope>`.
template <class Send>
caf::expected<mm::Routed> publish(Send&& send, Envelope msg) {
  return routed_rpc::decode(send(std::move(msg)));
}

} // namespace grove::message_manager
