#pragma once

// What function_bench and sandbox_bench share: function_runtime loaded into a bench
// kernel, and the wait until it has defined the group's functions.

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include <yaml-cpp/yaml.h>

#include "bench_stats.hpp"
#include "grove/function_runtime/client.hpp"
#include "grove/kernel/kernel.hpp"

namespace grove::bench {

/// <dir>/lib/grove/plugins, laid out as installed, holding a copy of function_runtime
/// (`plugin`): the copy finds the SDK library it needs (libgrove_archive) at its
/// $ORIGIN/../.., where a link to the build's is made.
inline std::filesystem::path function_plugin_dir(const std::filesystem::path& dir,
                                                 const std::filesystem::path& plugin) {
  namespace fs = std::filesystem;
  auto lib = dir / "lib";
  auto plugins = lib / "grove" / "plugins";
  fs::create_directories(plugins);
  // The build has <lib>/grove/plugins/libfunction_runtime.so beside <lib>/libgrove_*.so.
  auto build_lib = plugin.parent_path().parent_path().parent_path();
  fs::create_symlink(build_lib / "libgrove_archive.so.0", lib / "libgrove_archive.so.0");
  fs::copy_file(plugin, plugins / "libfunction_runtime.so");
  return plugins;
}

/// Loads function_runtime (it may speak as `function:*`) with the config `config_yaml`.
inline caf::error load_function_runtime(kernel& k, const std::string& config_yaml) {
  plugin_spec rt;
  rt.name = "function_runtime";
  rt.may_claim = {"function:*"};
  rt.config = make_yaml(YAML::Load(config_yaml));
  return k.host().load(rt);
}

/// Waits (30 s at most) until the runtime lists `count` functions: it reads the group
/// after its start. `send` is a blocking request (Envelope -> expected<Envelope>).
template <class Send>
bool wait_for_functions(Send&& send, int count) {
  auto deadline = clock_type::now() + std::chrono::seconds{30};
  for (;;) {
    auto l = function_runtime::list(send);
    if (l && l->functions_size() == count)
      return true;
    if (clock_type::now() > deadline)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
}

} // namespace grove::bench
