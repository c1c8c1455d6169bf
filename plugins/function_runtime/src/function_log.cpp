#include "function_log.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

namespace grove::fn {

function_log::function_log(std::filesystem::path path, uint64_t max_bytes, uint32_t files)
  : log_(std::move(path), {.max_bytes = max_bytes, .files = files}) {
  (void)log_.open(); // the file exists from the start (grovectl logs); an error: next line
}

void function_log::set_limits(uint64_t max_bytes, uint32_t files) {
  (void)log_.set_limits({.max_bytes = max_bytes, .files = files});
}

void function_log::write(std::string_view level, std::string_view text) {
  auto now = std::chrono::system_clock::now();
  auto t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch())
              .count()
            % 1000;
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char stamp[40];
  auto n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(stamp + n, sizeof stamp - n, ".%03dZ", static_cast<int>(ms));
  std::string line;
  line.reserve(text.size() + 40);
  line += stamp;
  line += ' ';
  line += level;
  line += ' ';
  line += text;
  (void)log_.write(line);
}

} // namespace grove::fn
