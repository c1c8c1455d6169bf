#pragma once

// The managed Mosquitto broker of the message_manager: one real `mosquitto` (2.0) child
// with Grove's broker plugin (grove_broker_plugin.so, see broker/README.md). The child is
// a grove::process (sdk/plugin/README.md, "Child processes"): forked by the SDK's
// supervisor thread, dies with groved (even on kill -9), its output in the plugin's log
// ("mosquitto: ...") and in state_dir/broker.log, restarted with the kernel's back-off
// policy once it has started. What stays here is what is Mosquitto's: the generated
// mosquitto.conf, the ACL file, the stats file, and the readiness check.
//
// Start-up never blocks: begin_start() writes the configuration, then the owner calls
// poll_start() on its actor (a timer) until it answers ready or an error. Threading: all
// members are called on the owner's actor (one thread at a time).

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sys/types.h>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "grove/file.hpp"
#include "grove/process.hpp"
#include "grove/rotating_log.hpp"

namespace grove::mm {

/// How the managed broker is configured and supervised.
struct broker_options {
  /// Directory for mosquitto.conf, broker.acl, broker-stats.json and broker.log (created;
  /// a symlink to the broker's own directory when it drops to run_as_user).
  std::filesystem::path state_dir;
  /// The Mosquitto 2.0 executable.
  std::string mosquitto_exe = "/usr/sbin/mosquitto";
  /// Grove's broker plugin (grove_broker_plugin.so).
  std::filesystem::path plugin_path;
  /// Address of the listener.
  std::string bind_address = "0.0.0.0";
  /// Port of the listener.
  uint16_t port = 8883;
  /// Plain TCP with username login (plugin_opt_insecure_username_auth); tests only.
  bool dev_mode = false;
  /// Listener cafile; required unless dev_mode.
  std::string ca_file;
  /// Listener capath (hashed CA names, looked up per handshake); optional.
  std::string ca_dir;
  /// Listener certfile; required unless dev_mode.
  std::string cert_file;
  /// Listener keyfile; required unless dev_mode.
  std::string key_file;
  /// Largest accepted payload, enforced exactly by the broker plugin; Mosquitto's
  /// max_packet_size (the MQTT 5 CONNACK's Maximum Packet Size) is 64 KiB more, for the
  /// topic and properties.
  size_t max_payload_bytes = 131072;
  /// Longest topic a device may publish on (the broker plugin refuses longer ones).
  size_t max_topic_bytes = 256;
  /// Bytes Mosquitto queues per client (max_queued_bytes).
  uint64_t max_queued_bytes = 64u << 20;
  /// Connections the listener accepts at once (max_connections).
  uint32_t max_connections = 1024;
  /// A connection that has sent nothing (no TLS handshake, no CONNECT) for this long is
  /// closed by the broker plugin.
  std::chrono::milliseconds connect_timeout{10000};
  /// Restarts after unexpected exits (the kernel's policy by default).
  restart_policy restart;
  /// How long begin_start() waits for the port to be free (an earlier broker may still
  /// be stopping) before it starts Mosquitto anyway.
  std::chrono::milliseconds port_wait{3000};
  /// How long Mosquitto may take to listen.
  std::chrono::milliseconds start_timeout{5000};
  /// How often the broker plugin stats the ACL file on its own (plugin_opt_check_interval_ms).
  /// write_acl() signals the broker (SIGHUP), which applies a new table at once; this
  /// only bounds the delay of a table written while no broker could take the signal.
  std::chrono::milliseconds table_check_interval{1000};
  // --- identity and TLS ---
  /// Client ids a device may use (plugin_opt_client_id_patterns): "<thing>" and patterns
  /// starting with it, a trailing '*' matching any rest.
  std::vector<std::string> client_id_patterns{"<thing>"};
  /// Lowest TLS version: "1.2" or "1.3".
  std::string tls_min_version = "1.2";
  /// TLS 1.2 cipher suites (OpenSSL list).
  std::string tls_ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20";
  /// Revocation list checked at the TLS handshake (crlfile); empty = none.
  std::string crl_file;
  /// When groved runs as root, the user the broker drops to (made at install by
  /// tools/deps; a missing user is refused). Ignored when groved is not root.
  std::string run_as_user = "grove-broker";
  /// When groved runs as root, where the broker's own directories are made (root, 0755):
  /// <base>/<hash of state_dir>, owned by run_as_user, 0700; state_dir links to it, so
  /// groved's write dir stays closed (0700) to the broker.
  std::filesystem::path run_as_home_base = "/var/lib/grove-broker";
};

/// Checks the identity and TLS options (client id patterns, TLS version and ciphers).
caf::error check_identity_options(const broker_options& o);

/// Runs and supervises one Mosquitto broker with Grove's broker plugin.
class broker_process {
public:
  /// Takes the options; starts nothing.
  explicit broker_process(broker_options opts);

  /// Stops the broker unless it was released.
  ~broker_process();

  broker_process(const broker_process&) = delete;
  broker_process& operator=(const broker_process&) = delete;

  /// The mosquitto.conf these options make (what begin_start() writes).
  caf::expected<std::string> config_text() const;

  /// Checks the options and writes mosquitto.conf (and an empty ACL file if none
  /// exists); Mosquitto starts on a later poll_start(), once the port is free. Events go
  /// to `owner`; `on_failed` is called there when the broker failed too often after it
  /// had started (the supervisor gave up).
  caf::error begin_start(process_owner owner, std::function<void(std::string)> on_failed);

  /// Advances start-up: true once Mosquitto listens, false while it is on its way, an
  /// error (quoting Mosquitto's last log lines) when it exited or timed out; nothing is
  /// left running then.
  caf::expected<bool> poll_start();

  /// Takes over a broker an earlier instance kept (context::keep_process), started with
  /// the same configuration: it is ready at once.
  caf::error adopt(process p, process_owner owner,
                   std::function<void(std::string)> on_failed);

  /// Hands the running broker out (for context::keep_process); this object then has
  /// none. Empty when there is none.
  process release();

  /// SIGTERM, SIGKILL after 3 s, no restart afterwards; asynchronous. Idempotent. A
  /// broker run as run_as_user (not released) is awaited, then its home goes: the table
  /// and the log move back into state_dir, the copies of the TLS files are deleted.
  void stop();

  /// The current state of the broker's process (empty when there is none).
  process_status status() const;

  /// As run_as_user the broker reads a copy of `ca_dir` in its own directory: mirrors
  /// what changed there while the broker runs (called every second; a no-op otherwise).
  /// Mosquitto's capath is looked up per handshake, so a CA added to ca_dir is trusted
  /// within a second; when a file leaves the set the broker is restarted through its
  /// supervisor (OpenSSL keeps what it loaded), which drops the connections once.
  caf::error sync_ca_dir();

  /// Restarts sync_ca_dir() asked for because a CA or CRL left ca_dir.
  uint64_t ca_restarts() const {
    return ca_restarts_;
  }

  /// state_dir/broker.acl, the table read by the broker plugin.
  std::filesystem::path acl_file() const;

  /// state_dir/broker-stats.json, the counters written by the broker plugin.
  std::filesystem::path stats_file() const;

  /// state_dir/route.sock, where the broker plugin hands over the device messages
  /// message_manager routes (route_reader.hpp); only groved may connect.
  std::filesystem::path route_socket() const;
  /// The plugin's bound on what it holds for a slow or absent reader
  /// (plugin_opt_route_buffer_bytes): max_queued_bytes, at least a largest message + 1 MiB.
  size_t route_buffer_bytes() const;
  /// Replaces the ACL file atomically (temporary file in the same directory + rename) and
  /// sends the running broker SIGHUP: Mosquitto 2.0 keeps its connections and raises
  /// MOSQ_EVT_RELOAD, on which the plugin re-reads the table. A broker not yet catching
  /// SIGHUP (still starting) is not signalled; it reads the file at start or on its
  /// periodic check (table_check_interval).
  caf::error write_acl(const std::string& text);

  /// SIGHUPs sent by write_acl() since this object started.
  uint64_t table_signals() const;

  /// Sets what runs on the owner's actor when the supervisor has started the broker
  /// again after an exit it did not ask for; the new broker may not listen yet
  /// (listening()). Set it before begin_start() or adopt().
  void on_restarted(std::function<void()> f);

  /// True while the running broker accepts connections on its port.
  bool listening() const;

  /// Device connections that ended without a TLS close_notify (Mosquitto's OpenSSL
  /// "unexpected eof" line: a device that lost power or its network, or was killed).
  /// Normal device behaviour: logged at debug, counted here. Since this object started.
  uint64_t abrupt_disconnects() const;

  /// Pages out the running broker's start-up code (grove::process::release_code_pages):
  /// the bytes advised.
  caf::expected<size_t> release_code_pages() const {
    return proc_.release_code_pages();
  }

private:
  enum class phase { idle, waiting_for_port, starting, running };

  caf::error check_options() const;
  process_callbacks callbacks();
  void on_output(const std::string& line);
  bool child_listening(int pid) const;
  std::string last_lines() const;
  caf::error launch();

  broker_options opts_;
  std::string conf_path_;
  process_owner owner_;
  std::function<void(std::string)> on_failed_;
  std::function<void()> on_restarted_;
  std::atomic<uint64_t> abrupt_disconnects_ = 0;
  uint64_t table_signals_ = 0;
  process proc_;
  // Atomic: the exit callback reads it (on the supervisor thread in broker_process_test).
  std::atomic<phase> phase_ = phase::idle;
  std::chrono::steady_clock::time_point deadline_;
  mutable std::mutex mtx_;
  /// How the child ended while starting; empty while it lives.
  std::string start_exit_;
  /// The last lines of mosquitto's output, quoted in errors.
  std::deque<std::string> tail_;
  /// state_dir/broker.log (and .1), opened at the first line; under mtx_.
  std::unique_ptr<rotating_log> log_file_;
  /// The broker's own user when groved is root (run_as_user); empty otherwise.
  std::optional<file_owner> run_as_;
  // Restarts sync_ca_dir asked for (a CA left the trusted set).
  uint64_t ca_restarts_ = 0;
  /// A start or adopt() as root made this object the user of the broker's home, which
  /// stop() removes (release() hands it over with the broker).
  bool owns_home_ = false;
};

/// The broker plugin's stats file (format in broker/README.md), parsed.
struct broker_stats {
  /// Publishes denied per thing.
  std::map<std::string, uint64_t> denied_publish;
  /// Publishes by clients that are no thing of the group.
  uint64_t denied_publish_unknown = 0;
  /// Deliveries no `deliver` rule allowed.
  uint64_t denied_delivery = 0;
  /// Refused logins: certificates of clients outside the group, usernames that differ
  /// from the certificate CN, and (test mode) unknown usernames.
  uint64_t refused_connect = 0;
  /// Successful loads of the ACL file.
  uint64_t acl_reloads = 0;
  /// Loads of the ACL file started by SIGHUP (write_acl), a subset of acl_reloads.
  uint64_t acl_signal_reloads = 0;
  /// Failed loads of the ACL file.
  uint64_t acl_errors = 0;
  /// The last load error, empty after a successful load.
  std::string last_acl_error;
  /// Publishes refused per thing for a payload or topic above the limits.
  std::map<std::string, uint64_t> refused_oversize;
  /// Live connections per thing (0 for one seen since the broker started, now gone).
  std::map<std::string, uint64_t> connected;
  /// Connections closed without CONNACK while the table had no group (not_ready).
  uint64_t deferred_connect = 0;
  /// Connections closed for sending nothing within the connect timeout.
  uint64_t idle_closed = 0;
  /// SUBSCRIBE filters refused (no `deliver` rule could ever match them).
  uint64_t denied_subscribe = 0;
  /// Device wills published again, stamped with their device as source.
  uint64_t wills_forwarded = 0;
  /// Route socket: frames handed to message_manager in full.
  uint64_t route_frames = 0;
  /// Route socket: messages dropped (the buffer full while message_manager was slow or
  /// away, too large for a frame, or cut off by a lost connection).
  uint64_t route_dropped = 0;
  /// Route socket: connections refused because they were not groved's.
  uint64_t route_refused = 0;
  /// Route socket: connections from groved accepted.
  uint64_t route_connects = 0;
  /// Route socket: bytes waiting for message_manager.
  uint64_t route_buffered_bytes = 0;
  /// Wills dropped (grove's own, on a `$` topic, or too many at once).
  uint64_t wills_dropped = 0;
  /// The process id of the broker that wrote the file; 0 from a plugin that does not say.
  /// A file whose pid is not the running broker's is an earlier run's (stale).
  int64_t pid = 0;
};

/// Reads and parses the broker plugin's stats file.
caf::expected<broker_stats> read_broker_stats(const std::filesystem::path& file);

} // namespace grove::mm
