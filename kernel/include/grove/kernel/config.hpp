#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <yaml-cpp/yaml.h>

#include "grove/kernel/bus.hpp"
#include "grove/supervision.hpp"

namespace grove {

/// A YAML value held by pointer. Copying and assigning rebind the pointer; a
/// YAML::Node's own operator= instead writes through to every node sharing its memory,
/// so containers of specs (vector::erase shifts by assignment) would corrupt each other.
using yaml_ptr = std::shared_ptr<const YAML::Node>;

/// Wraps a node (copy-constructed, never assigned) in a yaml_ptr.
inline yaml_ptr make_yaml(YAML::Node node) {
  return std::make_shared<const YAML::Node>(std::move(node));
}

/// A self-checked configuration schema (see sdk/plugin/README.md for the format).
/// Schemas are YAML maps of `key: {type, required, default, min, max, enum, keys,
/// items, doc}`. It keeps the checked text, not the parsed tree, and parses it again
/// for each use: every loaded plugin's schema stays for reloads and reconfigures, and
/// yaml-cpp's trees of them held ~0.4 MB of an idle groved (tools/bench/README.md), for
/// one more parse of a few-kB schema per load, reload or reconfigure.
class config_schema {
public:
  /// Parses schema text; an invalid schema is an error naming `origin`.
  static caf::expected<config_schema> parse(std::string_view text,
                                            std::string_view origin);

  /// A schema that accepts only an empty map (plugins without a schema).
  static config_schema empty();

  /// Validates `value` (a map or null) and returns a copy with defaults filled in.
  /// Errors read "<file>:<line>:<col>: <path>.<key>: <what>".
  caf::expected<YAML::Node> validate(const YAML::Node& value, std::string_view file,
                                     std::string_view path) const;

  /// The schema as a YAML node (a map), parsed anew.
  YAML::Node node() const;

private:
  /// The checked text parsed anew, or parse_yaml's error.
  caf::expected<YAML::Node> parsed() const;

  /// The checked text (empty: a schema that accepts only an empty map) and its origin.
  std::shared_ptr<const std::string> text_;
  std::shared_ptr<const std::string> origin_;
};

/// The Prometheus endpoint (`kernel.metrics`). Off unless the profile sets a port.
struct metrics_settings {
  /// Serve GET /metrics.
  bool enabled = false;
  /// Numeric IPv4 or IPv6 address to listen on.
  std::string bind = "127.0.0.1";
  /// TCP port; 0 picks a free one (tests).
  uint16_t port = 0;
};

/// One plugin entry of an image profile.
struct plugin_spec {
  /// Plugin name (library lib<name>.so).
  std::string name;
  /// The raw `config` node, validated against the plugin's schema at load.
  yaml_ptr config = make_yaml(YAML::Node{});
  /// Where the entry stands, for error messages.
  std::string file;
  /// 1-based line of the entry.
  int line = 0;
  /// Log level for this plugin ("" = kernel level).
  std::string log_level;
  /// Bus queue settings of this plugin.
  queue_settings queue;
  /// "in_process" or "process".
  std::string isolation = "in_process";
  /// Envelope sources the plugin may set besides its own name: exact names
  /// ("cloud") or prefixes ending in '*' ("device:*"). Enforced by the kernel for both
  /// slot kinds (sdk/plugin/README.md, "Who may speak as whom").
  std::vector<std::string> may_claim;
  /// Whether the plugin may replace the group (`$grove/group/set`), as the deployment
  /// plugin does for Greengrass v1 deployments.
  bool may_set_group = false;
  /// Whether the plugin may load, unload, reload and reconfigure other plugins through
  /// the kernel's control service (`$grove/kernel/plugins/*`, control_client.hpp), as
  /// the deployment, ota and console plugins do.
  bool may_control_plugins = false;
};

/// A validated image profile.
struct image_profile {
  /// The file it came from (absolute).
  std::filesystem::path file;
  /// Write directory (absolute).
  std::filesystem::path write_dir;
  /// Plugin directory (absolute).
  std::filesystem::path plugin_dir;
  /// Control socket path (absolute).
  std::filesystem::path control_socket;
  /// Group definition file (absolute), empty when the image has none.
  std::filesystem::path group_file;
  /// Kernel log level.
  std::string log_level = "info";
  /// CAF worker threads (0 = one per core, at least 2).
  uint32_t worker_threads = 0;
  /// Polls a CAF worker makes, ~50 us apart, after its last job before it sleeps until
  /// woken (kernel.idle_poll_attempts; CAF's work-stealing.moderate-poll-attempts).
  uint32_t idle_poll_attempts = 500;
  /// Timer slack of the CAF workers, in ns (kernel.worker_timer_slack_ns): how late
  /// Linux may wake their ~50 us idle polls.
  uint32_t worker_timer_slack_ns = 1000;
  /// Let the OS reclaim start-up code once groved is idle (kernel.release_code_pages).
  bool release_code_pages = true;
  /// How long a plugin's init and start may take (kernel.init_timeout_ms).
  std::chrono::milliseconds init_timeout{10000};
  /// How long unload and shutdown wait for a plugin's stop (kernel.stop_timeout_ms).
  std::chrono::milliseconds stop_timeout{10000};
  /// Default bus queue settings.
  queue_settings queue;
  /// Largest payload the bus carries (`kernel.bus.max_payload_bytes`).
  uint64_t max_payload_bytes = default_max_payload_bytes;
  /// Restart policy for every plugin.
  restart_policy restart;
  /// The Prometheus endpoint.
  metrics_settings metrics;
  /// Plugins in start order.
  std::vector<plugin_spec> plugins;
};

/// Command-line and environment overrides, applied after the file.
struct profile_overrides {
  /// --write-dir or GROVE_WRITE_DIR.
  std::optional<std::filesystem::path> write_dir;
  /// --plugin-dir.
  std::optional<std::filesystem::path> plugin_dir;
  /// Plugin directory to use when neither the file nor the command line names one.
  std::filesystem::path default_plugin_dir;
};

/// Loads and validates an image profile. Nothing is applied on error: the error names
/// file, line and field.
caf::expected<image_profile> load_profile(const std::filesystem::path& file,
                                          const profile_overrides& overrides);

/// An invalid_config error reading "<file>:<line>:<col>: <field>: <what>", the
/// position taken from `node` (omitted when the node has none).
caf::error config_error(std::string_view file, const YAML::Node& node,
                        std::string_view field, const std::string& what);

/// Parses YAML text; a syntax error reads "<origin>:<line>:<col>: <what>".
caf::expected<YAML::Node> parse_yaml(std::string_view text, std::string_view origin);

/// The schema as a Markdown table: one row per key (nested keys as `a.b`, list
/// elements as `a[].b`) with type, default, range or allowed values, and doc. What
/// `groved --describe-config` prints and plugin READMEs embed.
std::string config_table(const config_schema& schema);

/// The node as YAML text; empty for a null or undefined node. A scalar read quoted stays
/// quoted (double), so '1' or 'yes' is read back as a string; every re-emitted group or
/// config goes through here.
std::string to_yaml(const YAML::Node& node);

/// Parses a log level name (trace, debug, info, warn, error, critical, off).
caf::error validate_log_level(std::string_view level);

} // namespace grove
