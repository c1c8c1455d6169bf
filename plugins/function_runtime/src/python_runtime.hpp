#pragma once

// What a `runtime: python3` function's instance runs: the interpreter with the function's
// execArgs as its own arguments, then the Python function SDK's runner
// (sdk/function/python/grove_function/runner.py), which imports `handler`
// (module.function) from the code directory. Apart from the launch code in
// function_runtime.cpp so the process start stays one path for every runtime.

#include <string>
#include <string_view>
#include <vector>

#include "function_def.hpp"

namespace grove::fn {

/// The Python SDK's runner module, run with `-m`.
inline constexpr std::string_view python_runner = "grove_function.runner";

/// True for `module.function`: Python identifiers (ASCII) joined by dots, at least two.
bool valid_python_handler(std::string_view handler) noexcept;

/// The directory holding the Python SDK: `python_sdk_dir`, else the build tree's when it
/// exists, else the installed one.
std::string python_sdk_dir(const runtime_config& cfg);

/// The instance's argv: `<python> <execArgs...> -m grove_function.runner <handler>`.
std::vector<std::string> python_argv(const function_def& def, const runtime_config& cfg);

/// Where a sandboxed (GreengrassContainer) instance sees the Python SDK: sandbox::prepare
/// mounts python_sdk_dir() there, read-only.
inline constexpr std::string_view sandbox_python_dir = "/grove/python";

/// Adds what the runner needs to the instance's environment `env` (NAME=VALUE): the SDK
/// directory `sdk_dir` (as the instance sees it) in front of PYTHONPATH (the function's own PYTHONPATH after it), unbuffered output
/// (print() lines reach the function's log as they are written) and the payload
/// encoding (GROVE_FUNCTION_ENCODING: json or binary).
void add_python_env(const function_def& def, const std::string& sdk_dir,
                    std::vector<std::string>& env);

} // namespace grove::fn
