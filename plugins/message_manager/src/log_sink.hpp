#pragma once
// How message_manager's parts (the MQTT links, the managed broker) hand log lines to
// the plugin, which routes them to its spdlog logger.

#include <functional>
#include <string>

namespace grove::mm {

/// Severity of a log line.
enum class log_level { debug, info, warning, error };

/// Receives log lines; called from the part's own threads.
using log_sink = std::function<void(log_level, std::string)>;

} // namespace grove::mm
