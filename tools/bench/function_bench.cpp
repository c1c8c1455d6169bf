// function_bench: what function_runtime adds, each figure against a peer in the same run.
// - Cold start: an on-demand native function's first invocation (the runtime starts the
//   instance, it says hello, handles the item, the reply comes back), against a bare
//   posix_spawn + waitpid of the same binary (which exits at once without the runtime).
// - Invocation: sequential round trips through a pinned no-op instance (bus request ->
//   runtime -> socketpair -> handler -> back), p50/p99 and calls/s, and calls/s with
//   8, 16 and 32 requesters at once (FUNCTION_BENCH_REQUESTERS; the peak is the
//   throughput), against the bus's own request/response to an in-process plugin (the
//   test plugin "echo") measured the same way.
// - The same two for a runtime: python3 function (the Python function SDK's runner with
//   tests/python/noop.py): cold start against a bare `python3 -c pass`, pinned
//   invocations against the same bus peer.
// Prints one JSON object.
// FUNCTION_BENCH_ONLY=native skips the Python figures. Under valgrind's callgrind each
// invocation figure is a dump of its own (client requests, "Trigger: Client Request:
// <figure>"), the statistics zeroed before it: its instructions per call are the dump's
// total over INVOCATIONS (tools/bench/README.md, function_bench).

#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#endif

#include "bench_kernel.hpp"
#include "bench_stats.hpp"
#include "function_bench_support.hpp"

extern char** environ;

namespace {

using json = nlohmann::json;
using grove::bench::clock_type;
using grove::bench::pct;
using grove::bench::round2;
using grove::bench::us_since;
namespace fs = std::filesystem;

/// posix_spawn + waitpid of `args` (the program first), output to /dev/null;
/// microseconds per run.
std::vector<double> bare_spawns(std::vector<std::string> args, int runs) {
  std::vector<double> out;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  for (int i = 0; i < runs; ++i) {
    auto t0 = clock_type::now();
    pid_t pid = 0;
    if (posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ) != 0)
      break;
    int st = 0;
    waitpid(pid, &st, 0);
    out.push_back(us_since(t0));
  }
  posix_spawn_file_actions_destroy(&fa);
  return out;
}

/// CPU time (user + system) of this process (the kernel, the runtime, its reader
/// threads, the requesters; not the worker processes) so far, in µs.
double process_cpu_us() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto us = [](const timeval& tv) { return tv.tv_sec * 1e6 + static_cast<double>(tv.tv_usec); };
  return us(ru.ru_utime) + us(ru.ru_stime);
}

/// Sequential round trips: latencies (µs), calls/s, and this process's CPU time per
/// call (which a loaded machine inflates far less than wall time).
template <class Call>
json sequential(uint64_t n, Call call) {
  std::vector<double> lat;
  lat.reserve(n);
  uint64_t failed = 0;
  auto cpu0 = process_cpu_us();
  auto t0 = clock_type::now();
  for (uint64_t i = 0; i < n; ++i) {
    auto t = clock_type::now();
    failed += call() ? 0 : 1;
    lat.push_back(us_since(t));
  }
  double total_s = us_since(t0) / 1e6;
  auto cpu = process_cpu_us() - cpu0;
  return {{"p50_us", round2(pct(lat, 0.5))},
          {"cpu_us_per_call", round2(cpu / static_cast<double>(n))},
          {"p99_us", round2(pct(lat, 0.99))},
          {"calls_per_s", round2(static_cast<double>(n) / total_s)},
          {"failed", failed}};
}

/// Under callgrind: the statistics zeroed before the first figure. Nothing otherwise.
void callgrind_start() {
#ifdef CALLGRIND_ZERO_STATS
  CALLGRIND_ZERO_STATS;
#endif
}

/// Under callgrind: the figure `name` dumped (which zeroes the statistics for the next).
void callgrind_dump([[maybe_unused]] const char* name) {
#ifdef CALLGRIND_DUMP_STATS_AT
  CALLGRIND_DUMP_STATS_AT(name);
#endif
}

/// `threads` requesters at once, `n` calls in all (rounded down to a multiple of
/// `threads`): calls/s and the calls that failed (counted, not left out of the rate).
template <class Call>
json concurrent(uint64_t n, unsigned threads, Call call) {
  std::vector<std::thread> ts;
  std::atomic<uint64_t> failed{0};
  auto t0 = clock_type::now();
  for (unsigned t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      for (uint64_t i = 0; i < n / threads; ++i)
        if (!call())
          failed.fetch_add(1, std::memory_order_relaxed);
    });
  for (auto& t : ts)
    t.join();
  return {{"requesters", threads},
          {"calls_per_s", round2(static_cast<double>(n / threads * threads) / (us_since(t0) / 1e6))},
          {"failed", failed.load()}};
}

/// The requester counts of the throughput sweep: FUNCTION_BENCH_REQUESTERS ("8,16,32"),
/// the first one also reported as the `*_concurrent_*` figures of earlier runs.
std::vector<unsigned> requester_counts() {
  std::vector<unsigned> out;
  const char* v = std::getenv("FUNCTION_BENCH_REQUESTERS");
  std::string list = v != nullptr && *v != '\0' ? v : "8,16,32";
  for (size_t at = 0; at < list.size();) {
    auto end = list.find(',', at);
    auto n = std::strtoul(list.substr(at, end - at).c_str(), nullptr, 10);
    if (n > 0 && n <= 1024)
      out.push_back(static_cast<unsigned>(n));
    at = end == std::string::npos ? list.size() : end + 1;
  }
  if (out.empty())
    out.push_back(8);
  return out;
}

} // namespace

int main(int argc, char** argv) {
  uint64_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 20000;
  int cold = argc > 2 ? std::atoi(argv[2]) : 20;
  if (n == 0 || cold <= 0) {
    std::cerr << "usage: function_bench [INVOCATIONS] [COLD_STARTS]\n";
    return 2;
  }
  // Another build's runtime, worker and Python SDK (a before/after comparison in one
  // session, see tools/bench/README.md); the build's own by default.
  auto env_or = [](const char* name, const char* def) {
    const char* v = std::getenv(name);
    return std::string{v != nullptr && *v != '\0' ? v : def};
  };
  const auto fn_plugin = env_or("FUNCTION_BENCH_PLUGIN", FN_PLUGIN);
  const auto fn_worker = env_or("FUNCTION_BENCH_WORKER", FN_TEST_FUNCTION);
  const auto python_sdk = env_or("FUNCTION_BENCH_PYTHON_SDK", "");
  const bool python_too = env_or("FUNCTION_BENCH_ONLY", "") != "native";
  auto dir = fs::temp_directory_path() / ("grove-function-bench-" + std::to_string(getpid()));
  auto plugins = grove::bench::function_plugin_dir(dir, fn_plugin);
  // One plugin directory for both: the runtime and the bus peer.
  fs::copy_file(fs::path{TEST_PLUGIN_DIR} / "libecho.so", plugins / "libecho.so");
  std::string user = "runAs: {uid: " + std::to_string(getuid()) + ", gid: "
                     + std::to_string(getgid()) + "}";
  std::string common = "handler: " + fn_worker
                       + ", execArgs: [echo], inputPayloadEncodingType: binary, " + user
                       + ", linuxProcessParams: {isolationMode: NoContainer}";
  std::string python = std::string{"runtime: python3, handler: noop.handler, codeUri: "}
                       + FN_PYTHON_CODE + ", inputPayloadEncodingType: binary, " + user
                       + ", linuxProcessParams: {isolationMode: NoContainer}";
  {
    std::ofstream g{dir / "group.yaml"};
    g << "name: bench\nfunctions:\n  - name: p\n    config: {" << common << "}\n";
    g << "  - name: py\n    config: {" << python << "}\n";
    for (int i = 0; i < cold; ++i) {
      g << "  - name: c" << i << "\n    config: {" << common << ", pinned: false}\n";
      g << "  - name: pc" << i << "\n    config: {" << python << ", pinned: false}\n";
    }
  }
  auto profile = grove::bench::bench_profile(dir, plugins);
  profile.group_file = dir / "group.yaml";
  // The kernel's idle polling (kernel.idle_poll_attempts): the kernel's default unless
  // FUNCTION_BENCH_IDLE_POLLS says otherwise (the shipped images set 20).
  if (auto polls = env_or("FUNCTION_BENCH_IDLE_POLLS", ""); !polls.empty())
    profile.idle_poll_attempts = static_cast<uint32_t>(std::stoul(polls));
  // The workers' timer slack (kernel.worker_timer_slack_ns), e.g. Linux's 50000.
  if (auto slack = env_or("FUNCTION_BENCH_TIMER_SLACK_NS", ""); !slack.empty())
    profile.worker_timer_slack_ns = static_cast<uint32_t>(std::stoul(slack));
  json out;
  out["benchmark"] = "function";
  out["runtime_plugin"] = fn_plugin;
  out["idle_poll_attempts"] = profile.idle_poll_attempts;
  out["worker_timer_slack_ns"] = profile.worker_timer_slack_ns;
  {
    grove::kernel k{profile, grove::kernel_options{false, false}};
    auto fail = [&](const std::string& what) {
      std::cout << json{{"benchmark", "function"}, {"error", what}}.dump() << '\n';
      return 1;
    };
    if (auto err = k.start())
      return fail(grove::describe(err));
    // Run as whoever runs the bench, root included.
    std::string rt_config = "{allow_run_as_root: true";
    if (!python_sdk.empty())
      rt_config += ", python_sdk_dir: \"" + python_sdk + "\"";
    if (auto err = grove::bench::load_function_runtime(k, rt_config + "}"))
      return fail(grove::describe(err));
    grove::plugin_spec echo;
    echo.name = "echo";
    echo.config = grove::make_yaml(YAML::Load("{serve: bench/raw}"));
    if (auto err = k.host().load(echo))
      return fail(grove::describe(err));
    auto timeout = std::chrono::seconds{10};
    auto send = [&](grove::Envelope e) { return k.request(std::move(e), timeout); };
    if (!grove::bench::wait_for_functions(send, 2 * (cold + 1)))
      return fail("the runtime did not define the functions");
    const std::string payload(64, 'p');
    auto invoke = [&](const std::string& name) {
      auto r = k.request(grove::function_runtime::make_invoke(name, payload), timeout);
      return r && r->payload() == payload;
    };
    // Cold starts of functions <prefix>0.., each followed by a bare spawn of `bare` so
    // drift hits both alike.
    auto cold_starts = [&](const std::string& prefix, const std::vector<std::string>& bare,
                           const std::string& bare_key) {
      std::vector<double> cold_us, bare_us;
      uint64_t failed = 0;
      for (int i = 0; i < cold; ++i) {
        auto t0 = clock_type::now();
        failed += invoke(prefix + std::to_string(i)) ? 0 : 1;
        cold_us.push_back(us_since(t0));
        auto b = bare_spawns(bare, 1);
        bare_us.insert(bare_us.end(), b.begin(), b.end());
      }
      return json{{"runs", cold},
                  {"failed", failed},
                  {"on_demand_first_invoke_p50_us", round2(pct(cold_us, 0.5))},
                  {bare_key, round2(pct(bare_us, 0.5))},
                  {"overhead_p50_us", round2(pct(cold_us, 0.5) - pct(bare_us, 0.5))}};
    };
    out["cold_start"] = cold_starts("c", {fn_worker}, "bare_spawn_p50_us");
    // Python: the runner's first reply against the interpreter doing nothing.
    if (python_too)
      out["python_cold_start"] =
        cold_starts("pc", {"/usr/bin/python3", "-c", "pass"}, "bare_python3_c_pass_p50_us");
    // Warm-up, then the pinned instance against the bus's own request/response.
    for (int i = 0; i < 1000; ++i) {
      invoke("p");
      if (python_too)
        invoke("py");
      (void) k.request("bench/raw", payload, timeout);
    }
    callgrind_start();
    auto fn_seq = sequential(n, [&] { return invoke("p"); });
    callgrind_dump("pinned_sequential");
    // The bus peer: the same payload to echo's request/response.
    auto bus_call = [&] {
      auto r = k.request("bench/raw", payload, timeout);
      return r && r->payload() == payload;
    };
    auto bus_seq = sequential(n, bus_call);
    callgrind_dump("bus_sequential");
    // Throughput: the pinned instance and the bus peer at each requester count in turn
    // (the pipeline is full from pipeline_depth requesters on); the peak is the figure
    // the targets (50,000/s native, 10,000/s Python) are read against.
    auto counts = requester_counts();
    json sweep = json::array(), py_sweep = json::array();
    double peak = 0, py_peak = 0, bus_peak = 0;
    uint64_t sweep_failed = 0;
    for (auto threads : counts) {
      auto fn_par = concurrent(n, threads, [&] { return invoke("p"); });
      callgrind_dump("pinned_concurrent");
      auto bus_par = concurrent(n, threads, bus_call);
      callgrind_dump("bus_concurrent");
      double f = fn_par["calls_per_s"], b = bus_par["calls_per_s"];
      sweep_failed += fn_par["failed"].get<uint64_t>() + bus_par["failed"].get<uint64_t>();
      // A level where any call failed is no throughput: not a peak.
      if (fn_par["failed"] == 0)
        peak = std::max(peak, f);
      bus_peak = std::max(bus_peak, b);
      sweep.push_back({{"requesters", threads},
                       {"pinned_calls_per_s", f},
                       {"bus_calls_per_s", b},
                       {"ratio", round2(f / b)},
                       {"failed", fn_par["failed"]},
                       {"bus_failed", bus_par["failed"]}});
      if (python_too) {
        auto py_par = concurrent(n, threads, [&] { return invoke("py"); });
        double p = py_par["calls_per_s"];
        if (py_par["failed"] == 0)
          py_peak = std::max(py_peak, p);
        sweep_failed += py_par["failed"].get<uint64_t>();
        py_sweep.push_back({{"requesters", threads},
                            {"pinned_calls_per_s", p},
                            {"ratio", round2(p / b)},
                            {"failed", py_par["failed"]}});
      }
    }
    out["invocations"] = n;
    out["payload_bytes"] = payload.size();
    out["pinned_sequential"] = fn_seq;
    out["bus_sequential"] = bus_seq;
    out["ratio_sequential_calls_per_s"] =
      round2(fn_seq["calls_per_s"].get<double>() / bus_seq["calls_per_s"].get<double>());
    // The first count's figures under the names earlier runs used.
    out["pinned_concurrent_calls_per_s"] = sweep[0]["pinned_calls_per_s"];
    out["bus_concurrent_calls_per_s"] = sweep[0]["bus_calls_per_s"];
    out["concurrent_requesters"] = counts.front();
    out["ratio_concurrent_calls_per_s"] = sweep[0]["ratio"];
    out["throughput"] = sweep;
    out["pinned_peak_calls_per_s"] = peak;
    out["bus_peak_calls_per_s"] = bus_peak;
    out["sweep_failed"] = sweep_failed;
    json targets = {{"native_50000_per_s", peak >= 50000}};
    if (python_too) {
      auto py_seq = sequential(n, [&] { return invoke("py"); });
      out["python_pinned_sequential"] = py_seq;
      out["python_ratio_sequential_calls_per_s"] =
        round2(py_seq["calls_per_s"].get<double>() / bus_seq["calls_per_s"].get<double>());
      out["python_pinned_concurrent_calls_per_s"] = py_sweep[0]["pinned_calls_per_s"];
      out["python_ratio_concurrent_calls_per_s"] = py_sweep[0]["ratio"];
      out["python_throughput"] = py_sweep;
      out["python_pinned_peak_calls_per_s"] = py_peak;
      targets["python_10000_per_s"] = py_peak >= 10000;
    }
    out["meets_targets"] = targets;
    out["note"] = "blocking round trips from the kernel; the pinned instance's handler runs "
                  "one item at a time, so concurrency only sends items ahead to it "
                  "(pipeline_depth)";
    k.stop();
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  std::cout << out.dump() << std::endl;
  return 0;
}
