#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

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

/// What the metrics endpoint answers one HTTP request with.
enum class metrics_request {
  /// `GET /metrics` (a query string is ignored): the scrape.
  get,
  /// `HEAD /metrics`: the scrape's headers only.
  head,
  /// No blank line ends the head within the size limit: 431.
  too_large,
  /// The request line is not `<method> <target> HTTP/1.x`: 400.
  bad_request,
  /// Any method but GET and HEAD: 405.
  bad_method,
  /// Any target but /metrics: 404.
  not_found,
};

/// Classifies the bytes a client sent (request line and headers, complete when they
/// hold "\r\n\r\n"). Pure: the server's only parser of outside input, fuzzed by
/// tests/fuzz/targets/metrics_request.cpp.
metrics_request parse_metrics_request(std::string_view in) noexcept;

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
