#pragma once

// Typed client of the ota plugin's bus API (plugins/ota/README.md, "Bus topics").

#include <string_view>

#include "grove/ota.pb.h"
#include "grove/rpc.hpp"

namespace grove::ota {

/// Installs a bundle (A/B, on trial) and restarts groved into it.
inline constexpr std::string_view apply_topic = "$grove/ota/apply";

/// The update journal and the running release.
inline constexpr std::string_view status_topic = "$grove/ota/status";

/// The calls, typed both ways; refusals come back as caf::error with the reason.
using apply_rpc = rpc<ApplyRequest, ApplyReply>;
using status_rpc = rpc<StatusRequest, StatusReply>;

} // namespace grove::ota
