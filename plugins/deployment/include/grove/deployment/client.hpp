#pragma once

// Typed client of the deployment plugin's bus API (plugins/deployment/README.md, "Bus
// topics"): the component API's operations for operator tools (grovectl components) and
// other plugins, without SigV4.

#include <string>
#include <string_view>

#include "grove/deployment.pb.h"
#include "grove/rpc.hpp"

namespace grove::deployment {

/// dep-bus-1: one operation of the component API (ApiCall → ApiAnswer).
inline constexpr std::string_view components_topic = "$grove/deployment/components";

/// The call, typed both ways. API errors come back as an ApiAnswer with their status;
/// errors of the bus (no_route, timeout, malformed) as caf::error.
using components_rpc = rpc<ApiCall, ApiAnswer>;

/// A call of `operation` on `arn`.
inline ApiCall make_call(std::string_view operation, std::string_view arn = {}) {
  ApiCall call;
  call.set_operation(std::string{operation});
  call.set_arn(std::string{arn});
  return call;
}

} // namespace grove::deployment
