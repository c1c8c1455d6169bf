#pragma once

// Counters and gauges. A plugin declares each once through its context
// (context::counter, context::gauge, ...) and updates it from any thread. The values
// live in the kernel, in the plugin's slot, so they survive restarts and hot reloads of
// the plugin (Prometheus counters must never go back); a handle is one pointer to a
// cache line, and an update is one relaxed atomic add: no lock, no allocation.

#include <atomic>
#include <cstdint>
#include <string_view>

namespace grove {

/// Storage of one series. One cache line each, so threads updating different series
/// never contend for a line.
struct alignas(64) metric_cell {
  /// A counter's count, or a gauge's value in two's complement.
  std::atomic<uint64_t> bits{0};
};

/// A count that only goes up (messages routed, errors seen). Cheap to copy. Valid
/// while the plugin instance that declared it runs; a default-constructed counter
/// counts nothing.
class counter {
public:
  /// A counter that counts nothing.
  counter() noexcept = default;

  /// A counter over `cell` (made by the kernel).
  explicit counter(metric_cell* cell) noexcept : cell_(cell) {
  }

  /// Adds `n`. Thread-safe, lock-free, never allocates.
  void add(uint64_t n) noexcept {
    if (cell_ != nullptr)
      cell_->bits.fetch_add(n, std::memory_order_relaxed);
  }

  /// Adds one.
  void inc() noexcept {
    add(1);
  }

  /// Adds one (so a std::atomic<uint64_t> counter member ports unchanged).
  counter& operator++() noexcept {
    add(1);
    return *this;
  }

  /// Adds `n`.
  counter& operator+=(uint64_t n) noexcept {
    add(n);
    return *this;
  }

  /// The count now (across restarts and reloads of the plugin).
  uint64_t value() const noexcept {
    return cell_ != nullptr ? cell_->bits.load(std::memory_order_relaxed) : 0;
  }

  /// Whether this counter was declared.
  explicit operator bool() const noexcept {
    return cell_ != nullptr;
  }

private:
  metric_cell* cell_ = nullptr;
};

/// A value that goes up and down (queue length, connected devices). Integer-valued.
/// Same rules as counter.
class gauge {
public:
  /// A gauge that records nothing.
  gauge() noexcept = default;

  /// A gauge over `cell` (made by the kernel).
  explicit gauge(metric_cell* cell) noexcept : cell_(cell) {
  }

  /// Sets the value. Thread-safe, lock-free, never allocates.
  void set(int64_t v) noexcept {
    if (cell_ != nullptr)
      cell_->bits.store(static_cast<uint64_t>(v), std::memory_order_relaxed);
  }

  /// Adds `n` (negative to subtract).
  void add(int64_t n) noexcept {
    if (cell_ != nullptr)
      cell_->bits.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  }

  /// The value now.
  int64_t value() const noexcept {
    return cell_ != nullptr
             ? static_cast<int64_t>(cell_->bits.load(std::memory_order_relaxed))
             : 0;
  }

  /// Whether this gauge was declared.
  explicit operator bool() const noexcept {
    return cell_ != nullptr;
  }

private:
  metric_cell* cell_ = nullptr;
};

/// Feeds a counter from a running total kept elsewhere (a library's statistics, a
/// child's stats file): growth of the total is added; a smaller total means the source
/// started over from zero, and all of it is added. Not thread-safe: observe from one
/// thread (the plugin's actor, e.g. a status timer).
class counter_feed {
public:
  /// A feed into nothing.
  counter_feed() noexcept = default;

  /// Feeds `c`. With `from_zero` (a source that starts with this plugin instance) the
  /// first total counts in full; without it (a source that predates the instance, e.g.
  /// a child handed over across a reload) the first total is only the baseline.
  explicit counter_feed(grove::counter c, bool from_zero = true) noexcept
    : c_(c), primed_(from_zero) {
  }

  /// Takes the next total as a baseline only: for a source handed over from an earlier
  /// instance (a child kept across a reload) whose totals that instance counted.
  void rebase() noexcept {
    primed_ = false;
  }

  /// Takes the source's total now.
  void observe(uint64_t total) noexcept {
    if (primed_)
      c_.add(total >= last_ ? total - last_ : total);
    primed_ = true;
    last_ = total;
  }

private:
  grove::counter c_;
  uint64_t last_ = 0;
  bool primed_ = true;
};

/// The kernel's side of a labelled family; plugins use counter_family/gauge_family.
class metric_series_source {
public:
  /// The series for `label_value`, made on first use. Past the family's cap
  /// (metric_series_cap) every new value shares the series "_other". Thread-safe; takes
  /// a lock and may allocate, so keep the handle on hot paths.
  virtual metric_cell* series(std::string_view label_value) = 0;

protected:
  ~metric_series_source() = default;
};

/// Most series one labelled family holds, "_other" included: labels come from devices
/// and users, and memory must stay bounded whatever they send.
constexpr size_t metric_series_cap = 1000;

/// Counters or gauges (`Handle`) that share a name and differ by one label, e.g.
/// denied publishes per device. Cheap to copy.
template <class Handle>
class metric_family {
public:
  /// A family that records nothing.
  metric_family() noexcept = default;

  /// A family over `src` (made by the kernel).
  explicit metric_family(metric_series_source* src) noexcept : src_(src) {
  }

  /// The series for label value `v` (see metric_series_source::series).
  Handle with(std::string_view v) const {
    return Handle{src_ != nullptr ? src_->series(v) : nullptr};
  }

private:
  metric_series_source* src_ = nullptr;
};

/// Counters that differ by one label.
using counter_family = metric_family<counter>;

/// Gauges that differ by one label.
using gauge_family = metric_family<gauge>;

} // namespace grove
