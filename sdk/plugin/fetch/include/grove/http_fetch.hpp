#pragma once

// An HTTP(S) GET for plugins that download what they install (deployment's artifacts,
// ota's bundles): cpp-httplib with OpenSSL, the server certificate verified (against a
// given CA file or the system's), redirects followed, a size limit checked against
// Content-Length before the body and while it streams, connect/read timeouts, and a
// canceller that cuts downloads in flight when the plugin stops. Blocking: run it on the
// SDK's blocking pool (`run_blocking`), never on a plugin's actor. Library
// `grove_http_fetch` (static, linked into the plugin; not part of the plugin ABI).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace grove::http {

/// Ends the downloads in flight when a plugin stops: each is cut at once (its socket
/// shut), and those to come are refused. Thread-safe.
class fetch_canceller {
public:
  /// Whether cancel() was called.
  bool cancelled() const {
    return cancelled_.load();
  }

  /// Cancels every download, those to come too.
  void cancel() {
    std::lock_guard guard{mtx_};
    cancelled_ = true;
    for (auto& [id, stop] : active_)
      stop();
  }

  /// Registers how to cut download `id`; false (nothing registered) when cancelled.
  bool add(const void* id, std::function<void()> stop) {
    std::lock_guard guard{mtx_};
    if (cancelled_)
      return false;
    active_[id] = std::move(stop);
    return true;
  }

  /// Unregisters download `id`.
  void remove(const void* id) {
    std::lock_guard guard{mtx_};
    active_.erase(id);
  }

private:
  std::atomic<bool> cancelled_{false};
  std::mutex mtx_;
  std::map<const void*, std::function<void()>> active_;
};

/// How get() downloads.
struct fetch_options {
  /// CA bundle (PEM) the server's certificate must chain to; "" for the system's.
  std::filesystem::path ca_file;
  /// Largest body; a larger Content-Length or body is refused.
  uint64_t max_bytes = 1ull << 30;
  /// How the limit is named in the refusal (a configuration key).
  std::string max_bytes_name = "max_bytes";
  /// Connect and read timeout.
  std::chrono::seconds timeout{30};
  /// Cuts the download when the plugin stops; null: never.
  std::shared_ptr<fetch_canceller> cancel;
};

/// Receives the body in pieces; false stops the download (the caller knows why).
using body_sink = std::function<bool(const char* data, size_t size)>;

/// GETs `url` (http:// or https://) into `sink`. "" when the whole body (status 200) was
/// delivered, else why not: an HTTP status, a TLS or connection failure (a server
/// certificate not from the CA: `SSLServerVerification`), `larger than <max_bytes_name>
/// (N bytes)` (with `: the server announced M bytes` when Content-Length said so), `cancelled: the plugin is stopping`, or `stopped` when
/// the sink returned false (it knows why). URLs in messages are cut to 512 characters.
std::string get(const std::string& url, const fetch_options& opts, const body_sink& sink);

} // namespace grove::http
