// The C++ function SDK's example: answers with the payload it got, logs where it came
// from, and (for a routed message) publishes the payload on "<subject>/echo" through the
// group's subscription table.

#include "grove/function/function.hpp"

namespace gf = grove::function;

std::string echo(const std::string& payload, const gf::context& ctx) {
  gf::log(gf::level::info, "echo " + std::to_string(payload.size()) + " bytes from "
                             + ctx.source);
  if (!ctx.subject.empty())
    if (auto routed = gf::publish(ctx.subject + "/echo", payload); !routed)
      gf::log(gf::level::warn, "publish failed: " + routed.error);
  return payload;
}

GROVE_FUNCTION(echo)
