#pragma once

// The discovery endpoint's server (README.md, "Discovery"): cpp-httplib's SSLServer on
// its own threads, mutual TLS against the group CA (a client without a certificate that
// chains to it fails the handshake), the verified certificate's CN handed to
// discovery.hpp's discover() with the group last read from the kernel.

#include <atomic>
#include <filesystem>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <thread>

#include <caf/error.hpp>

#include "config.hpp"
#include "discovery.hpp"
#include "grove/metrics.hpp"

namespace spdlog {
class logger;
}

namespace httplib {
class Server;
}

namespace grove::deployment {

/// See the file comment. Thread-safe: set_group() from the plugin's actor while the
/// server's threads answer.
class discovery_server {
public:
  /// What the answers are built from, and where they are logged and counted.
  struct parts {
    /// Region, account, core thing (the CAs are read from the configuration's ca_file).
    discovery_settings settings;
    /// Connectivity and the deployed group's id.
    discovery_sources sources;
    /// The group CA trust directory (hashed names, README "Group CA"): client
    /// certificates may chain to a CA there too, looked up per handshake; may be empty.
    std::filesystem::path trust_dir;
    /// Refusals are logged here (warn).
    spdlog::logger* log = nullptr;
    /// Requests answered.
    grove::counter requests;
    /// Requests answered with an error status.
    grove::counter refused;
  };

  /// Reads the certificates and binds the port; an error names the key at fault.
  static caf::expected<std::unique_ptr<discovery_server>> make(const discovery_config& cfg,
                                                               parts p);

  ~discovery_server();

  /// Serves on its threads until stop().
  void start();

  /// Stops the server and joins its threads (idempotent).
  void stop();

  /// The group answers are given for from now on (nullopt: none, every thing is 404).
  void set_group(std::optional<discovery_group> g);

private:
  discovery_server() = default;

  parts parts_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  mutable std::mutex mtx_;
  std::shared_ptr<const discovery_group> group_; // null: none
  std::atomic<uint64_t> refusals_{0};             // logged: the first 100, then 1 in 1000
};

} // namespace grove::deployment
