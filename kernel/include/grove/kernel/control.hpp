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
#include "grove/kernel/framing.hpp"
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

/// What control clients can make groved hold, and for how long (README: "Security").
/// Only the socket's owner (or root) connects at all; these bound what a stuck or
/// misbehaving client of that user costs.
struct control_limits {
  /// Connections served at once. At the limit, the connection that has waited longest
  /// for a request is closed to make room, so an operator always gets in; when every
  /// connection is busy (a request or a `sub` in progress) the new one is refused.
  size_t max_clients = 64;
  /// A connection that completes no request for this long is closed (a frame that
  /// stalls half-way counts as no request).
  std::chrono::milliseconds idle_timeout{30'000};
  /// Largest request frame; larger ones are answered with errc::too_large and closed.
  uint32_t max_request_size = framing::max_request_size;
  /// Bytes a `sub` connection may hold (queued plus being written); messages beyond
  /// are dropped, counted, and the subscriber told. One message larger than this
  /// still passes when nothing else is held.
  size_t subscriber_queue_bytes = 8u << 20;
  /// Messages a `sub` connection may hold, whatever their size.
  size_t subscriber_queue_messages = 10000;
  /// A client that takes no byte of a reply (or subscribed message) for this long is
  /// closed: a `sub` that stops reading is dropped instead of held forever.
  std::chrono::milliseconds send_timeout{10'000};
};

/// Serves the control protocol (proto/control.proto) on a Unix stream socket.
class control_server {
public:
  /// Prepares a server for `backend` on `socket_path`.
  control_server(control_backend& backend, std::filesystem::path socket_path,
                 std::shared_ptr<spdlog::logger> log, control_limits limits = {});

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
