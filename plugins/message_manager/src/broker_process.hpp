#pragma once

// The managed Mosquitto broker of the message_manager: one real `mosquitto` (2.0) child
// process with Grove's broker plugin (grove_broker_plugin.so, see broker/README.md),
// configured, started, watched and restarted by a supervisor thread.
//
// - Every fork happens on the supervisor thread, which lives until stop(): the child gets
//   PR_SET_PDEATHSIG(SIGKILL), which fires when the *thread* that forked it ends.
// - The child dies with its parent, even on kill -9 of the parent (PDEATHSIG, plus a
//   getppid() check against the pid captured before fork to close the race).
// - Mosquitto logs to stderr; its stdout/stderr go through a pipe to broker_options::log
//   and to state_dir/broker.log (rotated to broker.log.1 above 1 MiB).
// - An unexpected exit is logged and followed by a restart with capped exponential back-off
//   (restart_initial, doubling up to restart_max; back to restart_initial once a child ran
//   for 60 s).

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "log_sink.hpp"

namespace grove::mm {

/// How the managed broker is configured and supervised.
struct broker_options {
  /// Directory for mosquitto.conf, broker.acl, broker-stats.json and broker.log (created).
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
  /// Listener certfile; required unless dev_mode.
  std::string cert_file;
  /// Listener keyfile; required unless dev_mode.
  std::string key_file;
  /// Largest accepted payload (message_size_limit; max_packet_size gets 64 KiB more for
  /// the topic and properties).
  size_t max_payload_bytes = 131072;
  /// First restart delay after an unexpected exit.
  std::chrono::milliseconds restart_initial{200};
  /// Largest restart delay.
  std::chrono::milliseconds restart_max{30000};
  /// Receives mosquitto's own log lines and supervisor events: errors and failed starts,
  /// warnings and unexpected exits, everything else as info.
  /// Called from internal threads; must not call back into the broker_process.
  log_sink log;
};

/// A snapshot of the supervised broker.
struct broker_status {
  /// A mosquitto child is alive.
  bool running = false;
  /// Its process id, 0 if none.
  int pid = 0;
  /// Restarts after unexpected exits since start().
  uint64_t restarts = 0;
  /// How the last child ended, e.g. "exited with 1", "killed by signal 9"; empty if none.
  std::string last_exit;
  /// When the current child was started (UTC, ISO 8601); empty if none.
  std::string started_at;
};

/// Runs and supervises one Mosquitto broker with Grove's broker plugin.
class broker_process {
public:
  /// Takes the options; starts nothing.
  explicit broker_process(broker_options opts);

  /// Calls stop().
  ~broker_process();

  broker_process(const broker_process&) = delete;
  broker_process& operator=(const broker_process&) = delete;

  /// Writes mosquitto.conf (and an empty ACL file if none exists) into state_dir, starts
  /// mosquitto and waits (at most 5 s) until it accepts TCP connections on the port. On
  /// failure, returns an error quoting mosquitto's last log lines; nothing is left running.
  caf::error start();

  /// SIGTERM, wait at most 3 s, then SIGKILL; no restart afterwards. Idempotent.
  void stop();

  /// The current state; thread-safe.
  broker_status status() const;

  /// state_dir/broker.acl, the table read by the broker plugin.
  std::filesystem::path acl_file() const;

  /// state_dir/broker-stats.json, the counters written by the broker plugin.
  std::filesystem::path stats_file() const;

  /// Replaces the ACL file atomically (temporary file in the same directory + rename).
  /// The plugin re-reads it within about a second; connections are kept.
  caf::error write_acl(const std::string& text);

private:
  caf::error check_options() const;
  caf::error write_config();
  void supervise();
  caf::error spawn_child(int& read_fd, int& pid);
  void read_log(int fd);
  void emit(log_level level, const std::string& line);
  bool child_listening(int pid) const;
  std::string last_lines() const;

  broker_options opts_;
  std::string conf_path_;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  /// Serialises start() and stop().
  std::mutex control_mtx_;
  std::thread supervisor_;
  int pid_ = 0;
  bool running_ = false;
  bool stopping_ = false;
  /// True until start() saw the first child ready: no restart while starting.
  bool starting_ = false;
  /// Set by the supervisor when it gave up (start failed) or was asked to stop.
  bool supervisor_done_ = true;
  /// Set when fork/exec setup failed while starting.
  caf::error spawn_error_;
  /// A child has exited since start() began.
  bool exited_ = false;
  uint64_t restarts_ = 0;
  std::string last_exit_;
  std::string started_at_;
  /// The last lines of mosquitto's output, quoted in errors.
  std::deque<std::string> tail_;
  /// Serialises writes to broker.log and calls of opts_.log.
  std::mutex log_mtx_;
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
  /// Failed loads of the ACL file.
  uint64_t acl_errors = 0;
  /// The last load error, empty after a successful load.
  std::string last_acl_error;
};

/// Reads and parses the broker plugin's stats file.
caf::expected<broker_stats> read_broker_stats(const std::filesystem::path& file);

} // namespace grove::mm
