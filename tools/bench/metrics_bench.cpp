// metrics_bench: what counters cost to update and what a Prometheus scrape costs.
//
// 1. Update: grove::counter::inc() against a bare std::atomic fetch_add (the floor),
//    one thread, ns per update.
// 2. Scrape: N plugin registries of M series each (a quarter of them a labelled
//    family), collected into a control::Status and written as Prometheus text (what
//    groved does per GET /metrics), against formatting the same numbers into a string
//    with snprintf (the floor). Time and heap allocations per scrape.
// 3. Over HTTP: GET /metrics on a real groved kernel's endpoint (loopback TCP), against
//    kernel::scrape() in process, to show what the socket adds.
// Prints one JSON object. Usage: metrics_bench [plugins] [series_per_plugin]

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "grove/kernel/kernel.hpp"
#include "grove/kernel/metrics.hpp"

namespace {

std::atomic<uint64_t> allocations{0};

} // namespace

// Counts heap allocations (the bench's own measure; not linked with jemalloc).
void* operator new(size_t n) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n))
    return p;
  throw std::bad_alloc{};
}

void operator delete(void* p) noexcept {
  std::free(p);
}

void operator delete(void* p, size_t) noexcept {
  std::free(p);
}

using namespace std::chrono;
using clock_type = steady_clock;

namespace {

template <class F>
double ns_per(size_t n, F f) {
  auto t0 = clock_type::now();
  for (size_t i = 0; i < n; ++i)
    f(i);
  return duration<double, std::nano>(clock_type::now() - t0).count() / n;
}

// One scrape's figures: mean time and allocations per run of `f`.
template <class F>
std::pair<double, double> per_scrape(size_t runs, F f) {
  f(); // warm-up: first-use allocations are not the steady state
  auto a0 = allocations.load();
  auto t0 = clock_type::now();
  for (size_t i = 0; i < runs; ++i)
    f();
  auto us = duration<double, std::micro>(clock_type::now() - t0).count() / runs;
  return {us, static_cast<double>(allocations.load() - a0) / runs};
}

std::string http_get(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return {};
  }
  std::string req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[65536];
  for (;;) {
    auto n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0)
      break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

} // namespace

int main(int argc, char** argv) {
  size_t plugins = argc > 1 ? std::stoul(argv[1]) : 8;
  size_t series = argc > 2 ? std::stoul(argv[2]) : 50;
  nlohmann::ordered_json out;
  out["bench"] = "metrics";
  out["plugins"] = plugins;
  out["series_per_plugin"] = series;

  // 1. Update cost.
  {
    grove::metric_registry reg;
    auto c = *reg.counter("bench.updates", "");
    std::atomic<uint64_t> bare{0};
    const size_t n = 20'000'000;
    auto counter_ns = ns_per(n, [&](size_t) { c.inc(); });
    auto atomic_ns = ns_per(n, [&](size_t) {
      bare.fetch_add(1, std::memory_order_relaxed);
    });
    if (c.value() != n || bare.load() != n)
      return 1;
    out["update"] = {{"counter_inc_ns", counter_ns},
                     {"atomic_fetch_add_ns", atomic_ns},
                     {"ratio", counter_ns / atomic_ns}};
  }

  // 2. Scrape cost against direct formatting of the same numbers.
  {
    std::vector<std::unique_ptr<grove::metric_registry>> regs;
    std::vector<std::string> names;
    for (size_t p = 0; p < plugins; ++p) {
      auto reg = std::make_unique<grove::metric_registry>();
      size_t labelled = series / 4;
      for (size_t s = 0; s < series - labelled; ++s) {
        auto c = *reg->counter("bench.series_" + std::to_string(s), "A benchmark series.");
        c.add(p * 1000 + s);
      }
      auto fam = *reg->declare("bench.per_device", grove::metric_kind::counter,
                               "Per device.", "device");
      for (size_t s = 0; s < labelled; ++s)
        grove::counter_family{fam}.with("device-" + std::to_string(s)).add(s);
      regs.push_back(std::move(reg));
      names.push_back("plugin_" + std::to_string(p));
    }
    std::string text;
    auto [scrape_us, scrape_allocs] = per_scrape(2000, [&] {
      grove::control::Status st;
      for (size_t p = 0; p < plugins; ++p) {
        auto* info = st.add_plugins();
        info->set_name(names[p]);
        regs[p]->collect(*info->mutable_metrics());
      }
      text.clear();
      grove::write_prometheus(st, text);
    });
    // The floor: the same numbers read and printed, no families, names or escaping.
    std::string direct;
    direct.reserve(text.size());
    auto [direct_us, direct_allocs] = per_scrape(2000, [&] {
      direct.clear();
      char line[64];
      google::protobuf::RepeatedPtrField<grove::control::Metric> tmp;
      for (auto& reg : regs) {
        tmp.Clear();
        reg->collect(tmp);
        for (auto& m : tmp) {
          int n = std::snprintf(line, sizeof(line), "%lld\n",
                                static_cast<long long>(m.value()));
          direct.append(line, static_cast<size_t>(n));
        }
      }
    });
    out["scrape"] = {{"series", plugins * series},
                     {"bytes", text.size()},
                     {"scrape_us", scrape_us},
                     {"scrape_allocations", scrape_allocs},
                     {"direct_format_us", direct_us},
                     {"direct_format_allocations", direct_allocs},
                     {"ratio", scrape_us / direct_us}};
  }

  // 3. Over HTTP on a real kernel's endpoint (kernel families only: no plugin .so here).
  {
    auto dir = std::filesystem::temp_directory_path()
               / ("grove-metrics-bench-" + std::to_string(getpid()));
    grove::image_profile p;
    p.file = dir / "profile.yaml";
    p.write_dir = dir / "var";
    p.plugin_dir = dir;
    p.control_socket = dir / "var/run/control.sock";
    p.log_level = "warn";
    p.metrics.enabled = true;
    grove::kernel_options opts;
    opts.control_socket = false;
    opts.log_to_stderr = false;
    {
      grove::kernel k{std::move(p), opts};
      if (auto err = k.start()) {
        std::cerr << grove::describe(err) << "\n";
        return 1;
      }
      auto port = k.metrics_port();
      auto [in_process_us, ia] = per_scrape(2000, [&] { k.scrape(); });
      bool ok = true;
      auto [http_us, ha] = per_scrape(500, [&] {
        ok = ok && http_get(port).rfind("HTTP/1.1 200 OK", 0) == 0;
      });
      if (!ok)
        return 1;
      out["http"] = {{"kernel_scrape_us", in_process_us},
                     {"http_get_us", http_us},
                     {"ratio", http_us / in_process_us}};
      k.stop();
    }
    std::filesystem::remove_all(dir);
  }
  std::cout << out.dump(2) << std::endl;
  return 0;
}
