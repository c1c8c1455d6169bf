// shadow_bench: the shadow plugin (plugins/shadow) through its bus API, in process, each
// figure next to a peer measured in the same run:
// - durable update throughput, 200-byte documents, `THREADS` callers on their own things
//   (each answer sent only after its group commit) vs a plain SQLite upsert loop with
//   the same durability (WAL, synchronous=FULL, every upsert committed before the next);
// - get and update latency (sequential, p50/p99) with 10 vs 100,000 named shadows (2,500
//   things x 40; the cache holds 4,096, so the large set reads from disk), each sample a
//   get of one random shadow and an update of another;
// - resident memory of a process that made 10 vs 100,000 shadows, and 20,000 (also past
//   the cache's bound: memory that grew with the count would differ from 100,000's).
// Each shadow-count scenario runs in a child process of its own, so memory figures do not
// mix. Beside wall time, the process's CPU time per operation (all its threads: the
// callers, the kernel, the plugin, the writer), which other processes' load disturbs less.
// Prints one JSON object. Not a test: it reports figures and never fails on them.
//
// Usage: shadow_bench [UPDATES] [THREADS] [LATENCY_SAMPLES] [SHADOW_CONFIG]
// SHADOW_CONFIG: a YAML map of plugin keys added to the bench's (e.g. '{commit_delay_ms: 2}').

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <sqlite3.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "bench_kernel.hpp"
#include "grove/kernel/kernel.hpp"
#include "grove/shadow/client.hpp"

namespace {

using json = nlohmann::ordered_json;
using clock_type = std::chrono::steady_clock;
namespace fs = std::filesystem;
namespace sh = grove::shadow;

double percentile(std::vector<double> xs, double q) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  return xs[static_cast<size_t>(q * static_cast<double>(xs.size() - 1))];
}

double round2(double x) {
  return std::round(x * 100.0) / 100.0;
}

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

long rss_kb() {
  std::ifstream in{"/proc/self/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

// CPU time of the whole process (every thread) so far, in microseconds.
double process_cpu_us() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

// The plugin keys added to the bench's (argument SHADOW_CONFIG).
std::string extra_config;

// A ~200-byte update document for sequence number `i`.
std::string document(uint64_t i) {
  std::string pad(120, 'x');
  return R"({"state":{"reported":{"seq":)" + std::to_string(i) + R"(,"mode":"auto","pad":")"
         + pad + R"("},"desired":{"level":)" + std::to_string(i % 100) + "}}}";
}

// One kernel with the shadow plugin loaded, in `dir`.
struct bench_kernel {
  explicit bench_kernel(const fs::path& dir) {
    profile = grove::bench::bench_profile(dir, SHADOW_PLUGIN_DIR);
    grove::kernel_options opts;
    opts.control_socket = false;
    opts.log_to_stderr = false;
    k = std::make_unique<grove::kernel>(profile, opts);
  }

  caf::error start() {
    if (auto err = k->start())
      return err;
    grove::plugin_spec spec;
    spec.name = "shadow";
    // The store's throughput, not shadow manager's local limits (20/s per thing, 200/s
    // in all by default): both at their highest.
    auto cfg = YAML::Load("{rateLimits: {maxTotalLocalRequestsRate: 1000000,"
                          " maxLocalRequestsPerSecondPerThing: 1000000}}");
    if (!extra_config.empty())
      for (const auto& kv : YAML::Load(extra_config))
        cfg[kv.first.as<std::string>()] = kv.second;
    spec.config = grove::make_yaml(cfg);
    return k->host().load(spec);
  }

  // One call on sh-1..sh-3; true when answered 200.
  bool call(std::string_view topic, std::string_view thing, std::string_view name,
            std::string payload) {
    auto send = [this](grove::Envelope e) {
      return k->request(std::move(e), std::chrono::seconds{30});
    };
    auto r = sh::document_rpc{std::string{topic}}.call_with(
      send, sh::make_request(thing, name, std::move(payload)));
    return r && r->code() == 200;
  }

  grove::image_profile profile;
  std::unique_ptr<grove::kernel> k;
};

// `threads` callers, each updating its own thing's classic shadow `n / threads` times.
json throughput(bench_kernel& bk, uint64_t n, unsigned threads) {
  std::atomic<uint64_t> failed{0};
  auto per = n / threads;
  auto cpu0 = process_cpu_us();
  auto t0 = clock_type::now();
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      auto thing = "tp-" + std::to_string(t);
      for (uint64_t i = 0; i < per; ++i)
        if (!bk.call(sh::update_topic, thing, "", document(i)))
          ++failed;
    });
  for (auto& x : ts)
    x.join();
  auto secs = seconds_since(t0);
  auto cpu = process_cpu_us() - cpu0;
  json j;
  j["updates"] = per * threads;
  j["failed"] = failed.load();
  j["updates_per_s"] = std::llround(static_cast<double>(per * threads) / secs);
  j["cpu_us_per_update"] = round2(cpu / static_cast<double>(per * threads));
  return j;
}

// The peer: upserts of the same documents, each committed (and fsynced) on its own.
json sqlite_peer(const fs::path& dir, uint64_t n) {
  fs::create_directories(dir);
  sqlite3* db = nullptr;
  json j;
  if (sqlite3_open((dir / "peer.db").c_str(), &db) != SQLITE_OK) {
    j["error"] = "cannot open the peer database";
    return j;
  }
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                   "CREATE TABLE s (thing TEXT, name TEXT, doc TEXT, version INTEGER,"
                   " PRIMARY KEY (thing, name)) WITHOUT ROWID",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO s VALUES (?, '', ?, 1) ON CONFLICT DO UPDATE SET"
                         " doc = excluded.doc, version = version + 1",
                     -1, &st, nullptr);
  auto cpu0 = process_cpu_us();
  auto t0 = clock_type::now();
  for (uint64_t i = 0; i < n; ++i) {
    auto thing = "tp-" + std::to_string(i % 32);
    auto doc = document(i);
    sqlite3_bind_text(st, 1, thing.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, doc.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_step(st); // autocommit: one durable transaction per upsert
    sqlite3_reset(st);
  }
  auto secs = seconds_since(t0);
  auto cpu = process_cpu_us() - cpu0;
  sqlite3_finalize(st);
  sqlite3_close(db);
  j["updates"] = n;
  j["updates_per_s"] = std::llround(static_cast<double>(n) / secs);
  j["cpu_us_per_update"] = round2(cpu / static_cast<double>(n));
  return j;
}

// Makes `count` named shadows (2,500 things at most, 40 per thing for 100,000), then
// times sequential gets and updates of random ones; reports RSS too.
json scenario(const fs::path& dir, uint64_t count, uint64_t samples) {
  bench_kernel bk{dir};
  json j;
  j["shadows"] = count;
  if (auto err = bk.start()) {
    j["error"] = grove::describe(err);
    return j;
  }
  uint64_t things = std::min<uint64_t>(count, 2500);
  // append, not "t" + to_string: GCC 12 warns falsely (-Wrestrict) on the latter.
  auto thing_of = [&](uint64_t i) { return std::string{"t"}.append(std::to_string(i % things)); };
  auto name_of = [&](uint64_t i) { return std::string{"s"}.append(std::to_string(i / things)); };
  // Made by 32 callers at once, as the throughput run.
  std::atomic<uint64_t> next{0}, failed{0};
  auto t0 = clock_type::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < 32; ++t)
    ts.emplace_back([&] {
      for (uint64_t i; (i = next++) < count;)
        if (!bk.call(sh::update_topic, thing_of(i), name_of(i), document(i)))
          ++failed;
    });
  for (auto& x : ts)
    x.join();
  j["create_s"] = round2(seconds_since(t0));
  j["create_failed"] = failed.load();
  std::mt19937_64 rng{42};
  std::vector<double> get_us, update_us;
  double get_cpu = 0, update_cpu = 0;
  for (uint64_t s = 0; s < samples; ++s) {
    // The update's shadow is drawn on its own: the one just read would always be in
    // memory, hiding what an update of a shadow that is not costs.
    auto i = rng() % count;
    auto u = rng() % count;
    auto ca = process_cpu_us();
    auto a = clock_type::now();
    if (!bk.call(sh::get_topic, thing_of(i), name_of(i), {}))
      ++failed;
    auto b = clock_type::now();
    auto cb = process_cpu_us();
    if (!bk.call(sh::update_topic, thing_of(u), name_of(u), document(s)))
      ++failed;
    auto c = clock_type::now();
    update_cpu += process_cpu_us() - cb;
    get_cpu += cb - ca;
    get_us.push_back(std::chrono::duration<double, std::micro>(b - a).count());
    update_us.push_back(std::chrono::duration<double, std::micro>(c - b).count());
  }
  j["failed"] = failed.load();
  j["get_p50_us"] = round2(percentile(get_us, 0.5));
  j["get_p99_us"] = round2(percentile(get_us, 0.99));
  j["update_p50_us"] = round2(percentile(update_us, 0.5));
  j["update_p99_us"] = round2(percentile(update_us, 0.99));
  j["get_cpu_us"] = round2(get_cpu / static_cast<double>(samples));
  j["update_cpu_us"] = round2(update_cpu / static_cast<double>(samples));
  j["rss_kb"] = rss_kb();
  bk.k->stop();
  return j;
}

// Runs `f` in a child process and returns the JSON it printed (memory figures per child).
template <class F>
json in_child(F f) {
  int fd[2];
  if (pipe(fd) != 0)
    return json{{"error", "pipe"}};
  auto pid = fork();
  if (pid == 0) {
    close(fd[0]);
    auto text = f().dump();
    auto w = write(fd[1], text.data(), text.size());
    (void) w;
    _exit(0);
  }
  close(fd[1]);
  std::string text;
  char buf[4096];
  for (ssize_t r; (r = read(fd[0], buf, sizeof buf)) > 0;)
    text.append(buf, static_cast<size_t>(r));
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  auto j = json::parse(text, nullptr, false);
  return j.is_discarded() ? json{{"error", "child failed"}} : j;
}

} // namespace

int main(int argc, char** argv) {
  // stdout is the JSON: a log line (grove::store's, SQLite initialised by the direct
  // peer first) goes to stderr.
  spdlog::set_default_logger(spdlog::stderr_color_mt("shadow_bench"));
  uint64_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 20000;
  unsigned threads = argc > 2 ? static_cast<unsigned>(std::strtoul(argv[2], nullptr, 10)) : 32;
  uint64_t samples = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 2000;
  bool config_ok = true;
  if (argc > 4) {
    extra_config = argv[4];
    try {
      config_ok = YAML::Load(extra_config).IsMap();
    } catch (const YAML::Exception&) {
      config_ok = false;
    }
  }
  if (n == 0 || threads == 0 || samples == 0 || argc > 5 || !config_ok) {
    std::cerr << "usage: shadow_bench [UPDATES] [THREADS] [LATENCY_SAMPLES] [SHADOW_CONFIG]\n";
    return 2;
  }
  auto dir = fs::temp_directory_path() / ("grove-shadow-bench-" + std::to_string(getpid()));
  json out;
  out["benchmark"] = "shadow";
  out["document_bytes"] = document(12345).size();
  if (!extra_config.empty())
    out["shadow_config"] = extra_config;
  auto tp = in_child([&] {
    bench_kernel bk{dir / "throughput"};
    if (auto err = bk.start())
      return json{{"error", grove::describe(err)}};
    auto j = throughput(bk, n, threads);
    j["threads"] = threads;
    bk.k->stop();
    return j;
  });
  auto peer = sqlite_peer(dir / "peer", std::min<uint64_t>(n, 5000));
  out["bus_api_durable_updates"] = tp;
  out["sqlite_upsert_loop_durable"] = peer;
  if (tp.contains("updates_per_s") && peer.contains("updates_per_s"))
    out["ratio_throughput_to_peer"]
      = round2(tp["updates_per_s"].get<double>() / peer["updates_per_s"].get<double>());
  auto small = in_child([&] { return scenario(dir / "small", 10, samples); });
  auto mid = in_child([&] { return scenario(dir / "mid", 20000, samples); });
  auto large = in_child([&] { return scenario(dir / "large", 100000, samples); });
  out["shadows_10"] = small;
  out["shadows_20000"] = mid;
  out["shadows_100000"] = large;
  auto ratio = [&](const char* key) -> json {
    if (!small.contains(key) || !large.contains(key) || small[key].get<double>() <= 0)
      return nullptr;
    return round2(large[key].get<double>() / small[key].get<double>());
  };
  out["ratio_get_p50_100000_to_10"] = ratio("get_p50_us");
  out["ratio_update_p50_100000_to_10"] = ratio("update_p50_us");
  out["ratio_get_cpu_100000_to_10"] = ratio("get_cpu_us");
  out["ratio_update_cpu_100000_to_10"] = ratio("update_cpu_us");
  out["ratio_rss_100000_to_10"] = ratio("rss_kb");
  // Both past the cache's bound: memory that grew with the count would show here.
  if (mid.contains("rss_kb") && large.contains("rss_kb") && mid["rss_kb"].get<double>() > 0)
    out["ratio_rss_100000_to_20000"]
      = round2(large["rss_kb"].get<double>() / mid["rss_kb"].get<double>());
  out["note"] = "bus API from the kernel's blocking request, in process; updates are "
                "answered after their group commit (synchronous=FULL); latencies are "
                "sequential round trips";
  std::error_code ec;
  fs::remove_all(dir, ec);
  std::cout << out.dump() << std::endl;
  return 0;
}
