#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <caf/error.hpp>

namespace spdlog {
class logger;
}

namespace grove {

/// Limits of the metrics endpoint; it is reachable by every local user, so nobody may
/// make it hold memory, threads or groved's time.
struct metrics_server_limits {
  /// Largest request (request line and headers) read; a bigger one gets 431.
  size_t max_request = 8192;
  /// Time a client has to send its request and read the answer; then it is dropped.
  std::chrono::milliseconds timeout{2000};
  /// Connections served at once; one more is answered 503 and closed.
  size_t max_connections = 8;
};

/// Serves the Prometheus text format on HTTP/1.1 `GET /metrics`: one thread, poll()
/// over non-blocking sockets, every connection closed after one answer.
class metrics_server {
public:
  /// `scrape` makes the body; it runs on the server's thread and must be thread-safe.
  metrics_server(std::string bind, uint16_t port, std::function<std::string()> scrape,
                 std::shared_ptr<spdlog::logger> log, metrics_server_limits limits = {});

  ~metrics_server();

  /// Binds, listens and starts the thread.
  caf::error start();

  /// Closes every connection and joins the thread. Idempotent.
  void stop();

  /// The port listened on (the chosen one when constructed with 0).
  uint16_t port() const noexcept;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace grove
