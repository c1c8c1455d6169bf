#include "python_runtime.hpp"

#include <filesystem>

namespace grove::fn {

namespace {

bool identifier_start(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

bool identifier_char(char c) noexcept {
  return identifier_start(c) || (c >= '0' && c <= '9');
}

} // namespace

bool valid_python_handler(std::string_view handler) noexcept {
  size_t parts = 0;
  bool start = true;
  for (char c : handler) {
    if (c == '.') {
      if (start)
        return false; // an empty part
      start = true;
      continue;
    }
    if (start ? !identifier_start(c) : !identifier_char(c))
      return false;
    if (start)
      ++parts;
    start = false;
  }
  return !start && parts >= 2;
}

std::string python_sdk_dir(const runtime_config& cfg) {
  if (!cfg.python_sdk_dir.empty())
    return cfg.python_sdk_dir;
  // The build tree's first: tests and the example image run the plugin from there.
  std::error_code ec;
  if (std::filesystem::is_directory(GROVE_PYTHON_SDK_BUILD_DIR "/grove_function", ec))
    return GROVE_PYTHON_SDK_BUILD_DIR;
  return GROVE_PYTHON_SDK_INSTALL_DIR;
}

std::vector<std::string> python_argv(const function_def& def, const runtime_config& cfg) {
  std::vector<std::string> argv{cfg.python};
  argv.insert(argv.end(), def.exec_args.begin(), def.exec_args.end());
  argv.emplace_back("-m");
  argv.emplace_back(python_runner);
  argv.push_back(def.handler);
  return argv;
}

void add_python_env(const function_def& def, const std::string& sdk_dir,
                    std::vector<std::string>& env) {
  auto path = "PYTHONPATH=" + sdk_dir;
  bool merged = false;
  for (auto& kv : env)
    if (kv.starts_with("PYTHONPATH=")) {
      kv = path + (kv.size() > 11 ? ":" + kv.substr(11) : std::string{});
      merged = true;
    }
  if (!merged)
    env.push_back(std::move(path));
  env.emplace_back("PYTHONUNBUFFERED=1");
  env.push_back("GROVE_FUNCTION_ENCODING=" + def.input_encoding);
}

} // namespace grove::fn
