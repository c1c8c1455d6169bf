#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "grove/control.pb.h"
#include "grove/metrics.hpp"
#include "grove/plugin_host.pb.h"

namespace grove {

/// What a metric measures.
enum class metric_kind : uint8_t {
  counter,
  gauge,
};

/// "counter" or "gauge".
const char* to_string(metric_kind x) noexcept;

/// Parses "counter" or "gauge".
std::optional<metric_kind> parse_metric_kind(std::string_view x) noexcept;

/// Checks a Grove metric name: 1-128 characters, dot-separated segments of
/// [a-z][a-z0-9_]* ("routed.to_cloud").
caf::error validate_metric_name(std::string_view name);

/// Checks a label name: [a-z_][a-z0-9_]*, at most 64 characters, not starting "__"
/// (reserved by Prometheus).
caf::error validate_label_name(std::string_view label);

/// One plugin's counters and gauges. The host makes one per slot, so values outlive
/// the plugin instances that update them (restarts, hot reloads). Thread-safe: a lock
/// guards declarations and reads of the family table; updates go straight to the
/// cells through the plugin's handles.
class metric_registry {
public:
  metric_registry();
  ~metric_registry();

  metric_registry(const metric_registry&) = delete;
  metric_registry& operator=(const metric_registry&) = delete;

  /// Declares family `name` (`label` empty: a plain metric with one series), or finds
  /// the one declared before. Errors: bad name or label (invalid_config), the name
  /// declared before as another kind or with another label (invalid_state).
  caf::expected<metric_series_source*> declare(std::string_view name, metric_kind kind,
                                               std::string_view help,
                                               std::string_view label);

  /// Declares a plain counter.
  caf::expected<grove::counter> counter(std::string_view name, std::string_view help);

  /// Declares a plain gauge.
  caf::expected<grove::gauge> gauge(std::string_view name, std::string_view help);

  /// Appends every series to `out`: families sorted by name, the series of a family
  /// next to each other, sorted by label value.
  void collect(google::protobuf::RepeatedPtrField<control::Metric>& out) const;

  /// Applies an update from an isolated plugin's child: declares what is new, adds
  /// counter deltas, sets gauges.
  caf::error apply(const host::MetricUpdate& update);

  /// Number of series.
  size_t size() const;

private:
  struct family;
  mutable std::mutex mtx_;
  std::map<std::string, std::unique_ptr<family>, std::less<>> families_;
};

/// Remembers what an isolated plugin's child last sent up and makes the next update:
/// new series and those that changed, counters as deltas.
class metric_uplink {
public:
  /// Fills `out` with the changes in `reg` since the last call; false if none.
  bool diff(const metric_registry& reg, host::Metrics& out);

private:
  std::map<std::string, int64_t> sent_;
};

/// Writes the kernel's and every plugin's numbers in `st` as Prometheus text exposition
/// format 0.0.4 (appended to `out`). Kernel families are grove_bus_*, grove_plugin_*
/// (label `plugin`), grove_uptime_seconds and grove_info; a plugin's metric `a.b` is
/// grove_<plugin>_a_b (counters end in _total). A plugin family whose name a kernel
/// family already took is left out.
void write_prometheus(const control::Status& st, std::string& out);

} // namespace grove
