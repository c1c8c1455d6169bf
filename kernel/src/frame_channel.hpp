#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <caf/error.hpp>
#include <google/protobuf/message_lite.h>
#include <spdlog/logger.h>

#include "grove/kernel/framing.hpp"

namespace grove {

/// Length-prefixed protobuf frames (the kernel's framing, grove/kernel/framing.hpp)
/// over a stream socket, built for throughput: a writer thread coalesces every frame
/// queued meanwhile into one write(), and the reader pulls large chunks and parses
/// frames out of them (framing::frame_stream). Used between groved and its plugin-host
/// children.
class frame_channel {
public:
  /// Takes ownership of `fd`. `tick`, when set, runs on the writer thread about every
  /// millisecond (and after each batch), e.g. to send acknowledgements. `log` (spdlog's
  /// default logger when null) hears of a frame send() could not queue.
  explicit frame_channel(int fd, std::function<void()> tick = {},
                         std::shared_ptr<spdlog::logger> log = nullptr);

  /// Shuts the socket down, joins the writer, closes the fd.
  ~frame_channel();

  frame_channel(const frame_channel&) = delete;
  frame_channel& operator=(const frame_channel&) = delete;

  /// Queues one frame. Thread-safe, never blocks on the socket. A frame over max_frame
  /// (the reader's limit) is not queued: logged, and errc::too_large returned, so a
  /// caller waiting for its answer can be told now instead of at its timeout.
  caf::error send(const google::protobuf::MessageLite& msg);

  /// Reads the next frame into `msg`; only one thread may read. Errors on EOF
  /// (errc::system_error "connection closed", also when the EOF cuts a frame short: the
  /// peer died mid-write), malformed or oversized frames.
  caf::error receive(google::protobuf::MessageLite& msg);

  /// Shuts the socket down so a blocked receive() returns; idempotent.
  void shutdown();

  /// Largest frame accepted (64 MiB).
  static constexpr uint32_t max_frame = 64u << 20;

private:
  void write_loop();

  int fd_;
  std::function<void()> tick_;
  std::shared_ptr<spdlog::logger> log_;
  std::mutex mtx_;
  std::condition_variable cv_;
  std::string out_;
  bool closing_ = false;
  std::thread writer_;
  framing::frame_stream in_{max_frame};
};

} // namespace grove
