// rpc_bench: the round trip of a typed call (grove::rpc, Protobuf both ways, error
// fields checked) against a raw bus request to the same server in the same run. The
// server is the test plugin "echo" (tests/plugins), in process, serving `bench/raw`
// (raw bytes) and `bench/typed` (grove::service<Envelope, Envelope>); the caller is the
// kernel's blocking request, one request at a time, so the figure is latency-bound.
// Prints one JSON object. Not a test: it reports figures and never fails on them.
//
// Usage: rpc_bench [REQUESTS] [REPEAT] [IDLE_POLL_ATTEMPTS (default the kernel's)]

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "bench_kernel.hpp"
#include "grove/kernel/kernel.hpp"
#include "grove/rpc.hpp"

namespace {

using json = nlohmann::ordered_json;
using clock_type = std::chrono::steady_clock;

struct run_result {
  double calls_per_s = 0;
  double p50_us = 0;
  double p99_us = 0;
  std::string error;
};

double percentile(std::vector<double> xs, double q) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto i = static_cast<size_t>(q * static_cast<double>(xs.size() - 1));
  return xs[i];
}

double median(std::vector<double> xs) {
  return percentile(std::move(xs), 0.5);
}

double round2(double x) {
  return std::round(x * 100.0) / 100.0;
}

/// Times `n` sequential calls of `one()` (true = the call succeeded).
template <class F>
run_result measure(uint64_t n, F one) {
  run_result r;
  std::vector<double> lat;
  lat.reserve(n);
  auto start = clock_type::now();
  for (uint64_t i = 0; i < n; ++i) {
    auto t0 = clock_type::now();
    if (!one(i)) {
      r.error = "call " + std::to_string(i) + " failed";
      return r;
    }
    lat.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
  }
  auto secs = std::chrono::duration<double>(clock_type::now() - start).count();
  r.calls_per_s = static_cast<double>(n) / secs;
  r.p50_us = percentile(lat, 0.50);
  r.p99_us = percentile(lat, 0.99);
  return r;
}

json summary(const std::vector<run_result>& runs) {
  std::vector<double> rate, p50, p99;
  json j;
  for (auto& r : runs) {
    if (!r.error.empty())
      j["error"] = r.error;
    rate.push_back(r.calls_per_s);
    p50.push_back(r.p50_us);
    p99.push_back(r.p99_us);
  }
  j["calls_per_s"] = std::llround(median(rate));
  j["p50_us"] = round2(median(p50));
  j["p99_us"] = round2(median(p99));
  return j;
}

} // namespace

int main(int argc, char** argv) {
  uint64_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 20000;
  uint32_t repeat = argc > 2 ? static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 10)) : 3;
  if (n == 0 || repeat == 0) {
    std::cerr << "usage: rpc_bench [REQUESTS] [REPEAT] [IDLE_POLL_ATTEMPTS]\n";
    return 2;
  }
  auto dir = std::filesystem::temp_directory_path()
             / ("grove-rpc-bench-" + std::to_string(getpid()));
  auto profile = grove::bench::bench_profile(dir, TEST_PLUGIN_DIR);
  if (argc > 3)
    profile.idle_poll_attempts = static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10));
  json out;
  {
    grove::kernel k{profile, grove::kernel_options{false, false}};
    if (auto err = k.start()) {
      std::cout << json{{"benchmark", "rpc"}, {"error", grove::describe(err)}}.dump() << '\n';
      return 1;
    }
    grove::plugin_spec spec;
    spec.name = "echo";
    spec.config = grove::make_yaml(YAML::Load("{serve: bench/raw, typed_serve: bench/typed}"));
    if (auto err = k.host().load(spec)) {
      std::cout << json{{"benchmark", "rpc"}, {"error", grove::describe(err)}}.dump() << '\n';
      return 1;
    }
    const std::string payload(64, 'p');
    auto timeout = std::chrono::seconds{10};
    grove::rpc<grove::Envelope, grove::Envelope> typed{"bench/typed"};
    auto send = [&](grove::Envelope e) { return k.request(std::move(e), timeout); };
    std::vector<run_result> raw_runs, typed_runs;
    // Interleaved so drift hits both alike.
    for (uint32_t i = 0; i < repeat; ++i) {
      raw_runs.push_back(measure(n, [&](uint64_t) {
        auto r = k.request("bench/raw", payload, timeout);
        return r && r->payload() == payload;
      }));
      typed_runs.push_back(measure(n, [&](uint64_t) {
        grove::Envelope req;
        req.set_payload(payload);
        auto r = typed.call_with(send, req);
        return r && r->payload() == payload;
      }));
    }
    auto raw = summary(raw_runs);
    auto typ = summary(typed_runs);
    out["benchmark"] = "rpc";
    out["requests"] = n;
    out["repeat"] = repeat;
    out["idle_poll_attempts"] = profile.idle_poll_attempts;
    out["payload_bytes"] = payload.size();
    out["note"] = "sequential blocking round trips from the kernel to an in-process "
                  "plugin; medians of the repeats";
    out["raw_request"] = raw;
    out["typed_rpc"] = typ;
    double raw_rate = raw["calls_per_s"].get<double>();
    out["ratio_typed_to_raw"] = raw_rate > 0
                                  ? round2(typ["calls_per_s"].get<double>() / raw_rate)
                                  : 0.0;
    k.stop();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::cout << out.dump() << std::endl;
  return 0;
}
