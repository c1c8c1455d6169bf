#pragma once

// Small figures the C++ benchmarks print: elapsed microseconds, percentiles, rounding.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

namespace grove::bench {

/// The benchmarks' clock.
using clock_type = std::chrono::steady_clock;

/// Microseconds since `t0`.
inline double us_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
}

/// The `p` quantile (0..1) of `v` (nearest rank below); 0 for none.
inline double pct(std::vector<double> v, double p) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1))];
}

/// `x` rounded to two decimals, for JSON.
inline double round2(double x) {
  return static_cast<double>(static_cast<int64_t>(x * 100 + 0.5)) / 100;
}

} // namespace grove::bench
