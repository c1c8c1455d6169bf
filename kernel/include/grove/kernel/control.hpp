#pragma once

#include <chrono>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "grove/control.pb.h"
#include "grove/envelope.pb.h"
#include "grove/plugin.hpp"

namespace spdlog {
class logger;
}

namespace grove {

/// What the control socket can ask of the kernel. Implemented by grove::kernel; every
/// member is thread-safe (the control server calls them from its own threads).
class control_backend {
public:
  virtual ~control_backend();

  /// Whole-daemon status (includes the plugin list).
  virtual control::Status status() = 0;

  /// The plugin list.
  virtual control::Plugins plugins() = 0;

  /// Loads and starts plugin `name` from the plugin directory (config from the image
  /// profile if it lists the plugin, else the schema's defaults).
  virtual caf::error load(const std::string& name) = 0;

  /// Stops and unloads plugin `name`.
  virtual caf::error unload(const std::string& name) = 0;

  /// Hot-reloads plugin `name`, from `path` if non-empty (issue 3).
  virtual caf::expected<std::string> reload(const std::string& name,
                                            const std::string& path)
    = 0;

  /// Publishes `msg` on the bus with source "grovectl".
  virtual caf::expected<publish_result> publish(Envelope msg) = 0;

  /// Subscribes `sink` to `filter`; `sink` is called for each matching message from a
  /// kernel thread and must not block for long. Destroying the returned handle
  /// unsubscribes.
  virtual caf::expected<std::shared_ptr<void>>
  subscribe(const std::string& filter, std::function<void(const Envelope&)> sink)
    = 0;
  /// Sends a request to the plugin serving `msg.topic()` and waits up to `timeout` for
  /// the reply (or the responder's error). Default: unsupported.
  virtual caf::expected<Envelope> request(Envelope msg, std::chrono::milliseconds timeout);
};

/// Reads and writes control-socket frames: 4-byte big-endian length, then bytes.
namespace framing {

/// Largest frame accepted (16 MiB).
constexpr uint32_t max_frame_size = 16u << 20;

/// Writes one frame holding `msg`. Retries on EINTR; MSG_NOSIGNAL.
caf::error write_frame(int fd, const google::protobuf::MessageLite& msg);

/// Reads one frame into `msg`. Returns errc::malformed for bad bytes, errc::too_large
/// for an oversized frame, sec::end_of_stream... as errc::system_error "closed" on EOF.
caf::error read_frame(int fd, google::protobuf::MessageLite& msg);

} // namespace framing

/// Serves the control protocol (proto/control.proto) on a Unix stream socket.
class control_server {
public:
  /// Prepares a server for `backend` on `socket_path`.
  control_server(control_backend& backend, std::filesystem::path socket_path,
                 std::shared_ptr<spdlog::logger> log);

  ~control_server();

  /// Binds and listens (socket mode 0600, parent directory created). A stale socket
  /// file nobody listens on is replaced; a live one is an error (another groved runs).
  caf::error start();

  /// Stops accepting, closes every client connection, removes the socket file, joins
  /// all threads. Idempotent.
  void stop();

  /// The socket path.
  const std::filesystem::path& path() const noexcept;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace grove
