#pragma once

// Typed client of function_runtime (plugins/function_runtime/README.md, "Topics"):
// invoke a function (request/response, or as an event) and list the functions with
// their counters (the console's Functions page and grovectl use it). Usable from a plugin (asynchronous, through its context) and from
// tools and tests (any blocking transport `send(Envelope) -> caf::expected<Envelope>`).

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "grove/function.pb.h"
#include "grove/rpc.hpp"

namespace grove::function_runtime {

/// Requests on this prefix + a function's name invoke it; the reply is the handler's
/// return value (fr-1).
inline constexpr std::string_view invoke_prefix = "$grove/functions/invoke/";

/// Messages published on this prefix + a function's name are queued for it as events,
/// no reply (fr-2).
inline constexpr std::string_view event_prefix = "$grove/functions/event/";

/// A ListRequest here is answered with a FunctionList (fr-3).
inline constexpr std::string_view list_topic = "$grove/functions/list";

/// The source function_runtime stamps on what a function sends: "function:<name>".
inline std::string source_of(std::string_view function) {
  return "function:" + std::string{function};
}

/// The request that invokes `function` with `payload`.
inline Envelope make_invoke(std::string_view function, std::string payload,
                            std::string_view content_type = {}) {
  Envelope e;
  e.set_topic(std::string{invoke_prefix} + std::string{function});
  e.set_payload(std::move(payload));
  e.set_content_type(std::string{content_type});
  return e;
}

/// The typed call of the list service.
using list_rpc = rpc<fn::ListRequest, fn::FunctionList>;

/// Lists the functions from a plugin; `f` runs on the plugin's actor.
inline void list(context& ctx, std::chrono::milliseconds timeout,
                 std::function<void(caf::expected<fn::FunctionList>)> f) {
  list_rpc{std::string{list_topic}}(ctx, fn::ListRequest{}, timeout, std::move(f));
}

/// Invokes `function` from a plugin (as its own source); `f` runs on the plugin's actor
/// with the reply (its payload is the handler's return value) or the error (fr-1).
inline void invoke(context& ctx, std::string_view function, std::string payload,
                   std::string_view content_type, std::chrono::milliseconds timeout,
                   std::function<void(caf::expected<Envelope>)> f) {
  ctx.call(make_invoke(function, std::move(payload), content_type), timeout,
           [f = std::move(f)](caf::expected<Envelope> reply) {
             f(checked_reply(std::move(reply)));
           });
}

/// Lists the functions through a blocking transport.
template <class Send>
caf::expected<fn::FunctionList> list(Send&& send) {
  list_rpc rpc{std::string{list_topic}};
  return list_rpc::decode(send(rpc.encode(fn::ListRequest{})));
}

} // namespace grove::function_runtime
