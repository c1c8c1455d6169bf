// The C++ function SDK's example: answers with the payload it got, logs where it came
// from, and (for a routed message) publishes the payload on "<subject>/echo" through the
// group's subscription table. At QoS 0 it does not wait to learn where the message went
// (publish_nowait): a failed publish is in the function's log, and the handler is free
// for its next item at once (publish() would wait for message_manager's answer).

#include "grove/function/function.hpp"

namespace gf = grove::function;

std::string echo(const std::string& payload, const gf::context& ctx) {
  gf::log(gf::level::info, "echo " + std::to_string(payload.size()) + " bytes from "
                             + ctx.source);
  if (!ctx.subject.empty() && !gf::publish_nowait(ctx.subject + "/echo", payload))
    gf::log(gf::level::warn, "cannot send the publish: the runtime's socket is gone");
  return payload;
}

GROVE_FUNCTION(echo)
