#pragma once

// Helpers for the libFuzzer targets: the fuzzer's bytes as a descriptor (for the frame
// readers, which read sockets) or as a file (for the loaders, which take paths).

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>

#include <google/protobuf/stubs/logging.h>
#include <sys/mman.h>
#include <unistd.h>

#include "grove/errors.hpp"
#include "test_support.hpp"

namespace grove::fuzz {

/// Protobuf logs every string field that is not UTF-8; bad bytes are the point here.
inline const bool quiet_protobuf = (google::protobuf::SetLogHandler(nullptr), true);

/// The fuzzer's input as `std::string_view`.
inline std::string_view bytes(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// A memory file holding `data`, read from the start: read() returns the bytes, then 0
/// (EOF), like a peer that sent them and hung up.
class memory_fd {
public:
  /// Writes `data` into a new memfd and rewinds it.
  explicit memory_fd(std::string_view data) : fd_(::memfd_create("grove-fuzz", MFD_CLOEXEC)) {
    if (fd_ < 0)
      throw std::runtime_error("memfd_create failed");
    for (size_t done = 0; done < data.size();) {
      auto n = ::write(fd_, data.data() + done, data.size() - done);
      if (n <= 0)
        throw std::runtime_error("write to memfd failed");
      done += static_cast<size_t>(n);
    }
    ::lseek(fd_, 0, SEEK_SET);
  }

  ~memory_fd() {
    if (fd_ >= 0)
      ::close(fd_);
  }

  memory_fd(const memory_fd&) = delete;
  memory_fd& operator=(const memory_fd&) = delete;

  /// The descriptor; still owned by this object.
  int get() const noexcept {
    return fd_;
  }

  /// Hands the descriptor over (e.g. to a frame_channel, which closes it).
  int release() noexcept {
    auto fd = fd_;
    fd_ = -1;
    return fd;
  }

private:
  int fd_;
};

/// One file per fuzzer process, rewritten for each input: what an operator's file is.
class input_file {
public:
  /// `name` is the file name (its extension may matter to the loader).
  explicit input_file(const std::string& name) : path_(dir_.path() / name) {
    // nop
  }

  /// Replaces the file's contents with `data` and returns its path.
  const std::filesystem::path& write(std::string_view data) {
    std::ofstream out{path_, std::ios::binary | std::ios::trunc};
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    return path_;
  }

private:
  test::temp_dir dir_;
  std::filesystem::path path_;
};

/// Aborts with `what` when `ok` is false: an invariant broken is a finding.
inline void require(bool ok, const char* what) {
  if (!ok) {
    ::write(2, what, std::char_traits<char>::length(what));
    ::write(2, "\n", 1);
    __builtin_trap();
  }
}

} // namespace grove::fuzz
