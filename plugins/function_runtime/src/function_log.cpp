#include "function_log.hpp"

#include "grove/file.hpp"
#include "grove/utf8.hpp"

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

namespace {

std::filesystem::path numbered(const std::filesystem::path& path, uint32_t i) {
  return std::filesystem::path{path.string() + "." + std::to_string(i)};
}

} // namespace

void function_log::rotate() {
  if (file_ != nullptr)
    std::fclose(file_);
  file_ = nullptr;
  std::error_code ec;
  if (files_ == 0) {
    std::filesystem::remove(path_, ec); // nothing kept: truncated
  } else {
    std::filesystem::remove(numbered(path_, files_), ec);
    for (uint32_t i = files_; i > 1; --i)
      std::filesystem::rename(numbered(path_, i - 1), numbered(path_, i), ec);
    std::filesystem::rename(path_, numbered(path_, 1), ec);
  }
  open();
}

namespace {

/// Cuts `file` to its newest whole lines within `cap` bytes (through a temporary file
/// renamed over it, so a failure leaves the old one); nothing fits: removed.
void trim_to(const std::filesystem::path& file, uint64_t cap) {
  std::error_code ec;
  auto size = std::filesystem::file_size(file, ec);
  if (ec || size <= cap)
    return;
  std::string tail;
  if (std::FILE* in = std::fopen(file.c_str(), "rbe"); in != nullptr) {
    tail.resize(cap);
    if (std::fseek(in, static_cast<long>(size - cap), SEEK_SET) == 0)
      tail.resize(std::fread(tail.data(), 1, cap, in));
    else
      tail.clear();
    std::fclose(in);
  }
  // The first line is cut at its start: it goes.
  auto nl = tail.find('\n');
  tail.erase(0, nl == std::string::npos ? tail.size() : nl + 1);
  if (tail.empty()) {
    std::filesystem::remove(file, ec);
    return;
  }
  // Synced like any other: a rotated log has no end marker a reader could miss.
  (void)write_file_atomically(file, tail, {.mode = 0600});
}

} // namespace

void function_log::set_limits(uint64_t max_bytes, uint32_t files) {
  std::error_code ec;
  for (uint32_t i = files + 1; i <= files_; ++i)
    std::filesystem::remove(numbered(path_, i), ec);
  max_bytes_ = max_bytes;
  files_ = files;
  if (size_ > max_bytes_)
    rotate();
  // The rotated files kept were cut at the old cap: each is cut to the new one (its
  // oldest lines go), so the files together stay within (files + 1) * cap.
  for (uint32_t i = 1; i <= files_; ++i)
    trim_to(numbered(path_, i), max_bytes_);
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
  // A line longer than the cap is cut at it, marked, so no file outgrows the cap (not
  // inside a UTF-8 sequence).
  static constexpr std::string_view marker = "\u2026truncated";
  if (line.size() + 1 > max_bytes_ && max_bytes_ > marker.size() + 1) {
    line.resize(utf8_cut_point(line, max_bytes_ - marker.size() - 1));
    line += marker;
  }
  line += '\n';
  if (size_ > 0 && size_ + line.size() > max_bytes_) {
    rotate();
    if (file_ == nullptr)
      return;
  }
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
  size_ += line.size();
}

} // namespace grove::fn
