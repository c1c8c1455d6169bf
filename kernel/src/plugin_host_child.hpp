#pragma once

#include <string>

namespace grove {

/// Runs one plugin in this process for a groved that started it with
/// `groved --plugin-host NAME --fd FD` (`isolation: process`): reads the Start frame
/// from FD, loads the plugin into a local kernel whose bus forwards to the parent, and
/// serves until told to stop or the parent goes away. Returns the exit code.
int run_plugin_host(const std::string& name, int fd);

} // namespace grove
