#include "function_log.hpp"

#include <chrono>
#include <ctime>
#include <string>
#include <system_error>

namespace grove::fn {

function_log::function_log(std::filesystem::path path, uint64_t max_bytes, uint32_t files)
  : path_(std::move(path)), max_bytes_(max_bytes), files_(files) {
  open();
}

function_log::~function_log() {
  if (file_ != nullptr)
    std::fclose(file_);
}

void function_log::open() {
  std::error_code ec;
  std::filesystem::create_directories(path_.parent_path(), ec);
  file_ = std::fopen(path_.c_str(), "ae");
  size_ = 0;
  if (file_ != nullptr) {
    auto n = std::filesystem::file_size(path_, ec);
    size_ = ec ? 0 : n;
  }
}

void function_log::rotate() {
  if (file_ != nullptr)
    std::fclose(file_);
  file_ = nullptr;
  std::error_code ec;
  auto numbered = [this](uint32_t i) {
    return std::filesystem::path{path_.string() + "." + std::to_string(i)};
  };
  std::filesystem::remove(numbered(files_), ec);
  for (uint32_t i = files_; i > 1; --i)
    std::filesystem::rename(numbered(i - 1), numbered(i), ec);
  std::filesystem::rename(path_, numbered(1), ec);
  open();
}

void function_log::write(std::string_view level, std::string_view text) {
  if (file_ == nullptr)
    open();
  if (file_ == nullptr)
    return;
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
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
  size_ += line.size();
  if (size_ >= max_bytes_)
    rotate();
}

} // namespace grove::fn
