// cloud_drain_bench: how fast the message_manager drains its spool to the cloud.
// N 256-byte messages are pushed into a `file` spool while offline; then a local
// plain-TCP Mosquitto "cloud" is started and cloud_forwarder drains the spool over an
// mqtt_link at QoS 1 until it is empty. The peer, same run and broker: a bare Paho
// async_client publishing the same N messages at QoS 1 with the same in-flight window.
// Prints one JSON object.
//
// Usage: cloud_drain_bench [--messages N] [--max-inflight M] [--repeat R]

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <thread>

#include <mqtt/async_client.h>
#include <nlohmann/json.hpp>

#include "test_support.hpp"
#include "cloud_forwarder.hpp"
#include "grove/errors.hpp"
#include "mqtt_link.hpp"
#include "spool.hpp"

using namespace std::chrono;
namespace fs = std::filesystem;

using grove::test::free_port;
using grove::test::port_open;

namespace {

constexpr size_t payload_bytes = 256;

std::string find_mosquitto() {
  if (const char* env = std::getenv("MOSQUITTO"))
    return env;
  if (const char* path = std::getenv("PATH")) {
    std::string p = path;
    size_t start = 0;
    while (start <= p.size()) {
      auto end = p.find(':', start);
      auto dir = p.substr(start, end == std::string::npos ? std::string::npos : end - start);
      auto exe = fs::path(dir) / "mosquitto";
      if (!dir.empty() && access(exe.c_str(), X_OK) == 0)
        return exe.string();
      if (end == std::string::npos)
        break;
      start = end + 1;
    }
  }
  return "/usr/sbin/mosquitto";
}

// A plain-TCP Mosquitto on a free loopback port; killed by the destructor.
struct broker {
  pid_t pid = -1;
  uint16_t port = free_port();

  std::string start(const fs::path& dir, int max_inflight) {
    auto conf = dir / "mosquitto.conf";
    {
      std::ofstream out(conf);
      if (getuid() == 0)
        out << "user root\n";
      // Receive Maximum = our window, so the broker throttles neither side.
      out << "persistence false\nallow_anonymous true\nlog_dest none\n"
          << "max_inflight_messages " << max_inflight << "\n"
          << "listener " << port << " 127.0.0.1\n";
    }
    auto exe = find_mosquitto();
    pid = fork();
    if (pid == 0) {
      freopen("/dev/null", "w", stdout);
      freopen("/dev/null", "w", stderr);
      execl(exe.c_str(), exe.c_str(), "-c", conf.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    auto deadline = steady_clock::now() + seconds{10};
    while (steady_clock::now() < deadline) {
      int st;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        return "mosquitto (" + exe + ") exited at start";
      }
      if (port_open(port))
        return {};
      std::this_thread::sleep_for(milliseconds{10});
    }
    return "mosquitto does not listen";
  }

  ~broker() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      int st;
      waitpid(pid, &st, 0);
    }
  }
};

std::string topic_of(uint64_t i) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "bench/telemetry/%010llu", static_cast<unsigned long long>(i));
  return buf;
}

struct result {
  double msgs_per_s = 0;
  double fill_msgs_per_s = 0;
  std::string error;
};

// Fills a fresh file spool offline, then drains it through cloud_forwarder.
result run_forwarder(const fs::path& dir, uint16_t port, uint64_t n, int max_inflight) {
  result res;
  fs::remove_all(dir / "spool");
  grove::mm::spool_options sopts;
  sopts.storage = grove::mm::spool_storage::file;
  sopts.file = dir / "spool" / "spool.db";
  sopts.max_size_bytes = std::max<uint64_t>(
    grove::mm::spool::min_size_bytes * 10, n * (payload_bytes + 32 + 64) * 5 / 4);
  sopts.when_full = grove::mm::spool_when_full::reject_new;
  auto sp = grove::mm::spool::open(sopts);
  if (!sp) {
    res.error = grove::describe(sp.error());
    return res;
  }
  std::string payload(payload_bytes, 'x');
  auto fill_start = steady_clock::now();
  for (uint64_t i = 0; i < n; ++i) {
    if (auto seq = (*sp)->push(topic_of(i), payload); !seq) {
      res.error = grove::describe(seq.error());
      return res;
    }
  }
  if (auto err = (*sp)->flush()) {
    res.error = grove::describe(err);
    return res;
  }
  res.fill_msgs_per_s = n / duration<double>(steady_clock::now() - fill_start).count();
  grove::mm::link_options lopts;
  lopts.name = "cloud";
  lopts.host = "127.0.0.1";
  lopts.port = port;
  lopts.client_id = "bench-core";
  lopts.tls = false;
  lopts.max_inflight = max_inflight;
  lopts.retry_initial = milliseconds{50};
  lopts.retry_max = milliseconds{500};
  grove::mm::mqtt_link link{lopts};
  if (auto err = link.start()) {
    res.error = grove::describe(err);
    return res;
  }
  auto deadline = steady_clock::now() + seconds{10};
  while (!link.connected() && steady_clock::now() < deadline)
    std::this_thread::sleep_for(milliseconds{1});
  if (!link.connected()) {
    res.error = "link: " + link.status().last_error;
    return res;
  }
  grove::mm::cloud_forwarder fwd{link, **sp, static_cast<size_t>(max_inflight)};
  auto start = steady_clock::now();
  if (auto err = fwd.start()) {
    res.error = grove::describe(err);
    return res;
  }
  deadline = steady_clock::now() + seconds{600};
  while (fwd.stats().delivered < n && steady_clock::now() < deadline)
    std::this_thread::sleep_for(microseconds{500});
  auto elapsed = duration<double>(steady_clock::now() - start).count();
  if (fwd.stats().delivered < n)
    res.error = "forwarder delivered only " + std::to_string(fwd.stats().delivered);
  res.msgs_per_s = fwd.stats().delivered / elapsed;
  fwd.stop();
  link.stop();
  return res;
}

// The peer: a bare Paho client, QoS 1, at most `max_inflight` unacknowledged.
result run_paho(uint16_t port, uint64_t n, int max_inflight) {
  result res;
  struct window : mqtt::iaction_listener {
    std::mutex mtx;
    std::condition_variable cv;
    int outstanding = 0;
    uint64_t acked = 0;
    uint64_t failed = 0;
    void done(bool ok) {
      std::lock_guard guard{mtx};
      --outstanding;
      ++(ok ? acked : failed);
      cv.notify_one();
    }
    void on_success(const mqtt::token&) override {
      done(true);
    }
    void on_failure(const mqtt::token&) override {
      done(false);
    }
  } win;
  try {
    mqtt::async_client cli{"tcp://127.0.0.1:" + std::to_string(port), "bench-paho",
                           mqtt::create_options{MQTTVERSION_5}, nullptr};
    auto copts = mqtt::connect_options_builder()
                   .mqtt_version(MQTTVERSION_5)
                   .clean_start(true)
                   .max_inflight(max_inflight)
                   .finalize();
    cli.connect(copts)->wait();
    std::string payload(payload_bytes, 'x');
    auto start = steady_clock::now();
    for (uint64_t i = 0; i < n; ++i) {
      {
        std::unique_lock lk{win.mtx};
        win.cv.wait(lk, [&] { return win.outstanding < max_inflight; });
        ++win.outstanding;
      }
      cli.publish(mqtt::make_message(topic_of(i), payload, 1, false), nullptr, win);
    }
    {
      std::unique_lock lk{win.mtx};
      win.cv.wait(lk, [&] { return win.outstanding == 0; });
    }
    auto elapsed = duration<double>(steady_clock::now() - start).count();
    res.msgs_per_s = win.acked / elapsed;
    if (win.failed > 0)
      res.error = "paho: " + std::to_string(win.failed) + " publishes failed";
    cli.disconnect()->wait();
  } catch (const std::exception& e) {
    res.error = std::string{"paho: "} + e.what();
  }
  return res;
}

} // namespace

int main(int argc, char** argv) {
  uint64_t n = 100000;
  int max_inflight = 100;
  int repeat = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--messages")
      n = std::stoull(argv[i + 1]);
    else if (flag == "--max-inflight")
      max_inflight = std::atoi(argv[i + 1]);
    else if (flag == "--repeat")
      repeat = std::atoi(argv[i + 1]);
    else {
      std::cerr << "usage: cloud_drain_bench [--messages N] [--max-inflight M] [--repeat R]\n";
      return 2;
    }
  }
  auto tmp = fs::temp_directory_path() / ("grove-cloud-drain-bench." + std::to_string(getpid()));
  fs::create_directories(tmp);
  nlohmann::json runs = nlohmann::json::array();
  double best_fwd = 0, best_paho = 0, best_fill = 0;
  std::string error;
  {
    broker cloud;
    if (auto err = cloud.start(tmp, max_inflight); !err.empty()) {
      error = err;
    } else {
      // Interleaved, best of `repeat`, so machine noise hits both alike.
      for (int i = 0; i < repeat; ++i) {
        auto f = run_forwarder(tmp, cloud.port, n, max_inflight);
        auto p = run_paho(cloud.port, n, max_inflight);
        if (!f.error.empty())
          error = "forwarder: " + f.error;
        if (!p.error.empty())
          error = p.error;
        runs.push_back({{"forwarder_msgs_per_s", std::lround(f.msgs_per_s)},
                        {"paho_msgs_per_s", std::lround(p.msgs_per_s)},
                        {"spool_fill_msgs_per_s", std::lround(f.fill_msgs_per_s)}});
        best_fwd = std::max(best_fwd, f.msgs_per_s);
        best_paho = std::max(best_paho, p.msgs_per_s);
        best_fill = std::max(best_fill, f.fill_msgs_per_s);
      }
    }
  }
  std::error_code ec;
  fs::remove_all(tmp, ec);
  auto ratio = best_paho > 0 ? best_fwd / best_paho : 0;
  nlohmann::json out{{"benchmark", "cloud_drain"},
                     {"messages", n},
                     {"payload_bytes", payload_bytes},
                     {"qos", 1},
                     {"max_inflight", max_inflight},
                     {"storage", "file"},
                     {"forwarder_msgs_per_s", std::lround(best_fwd)},
                     {"paho_msgs_per_s", std::lround(best_paho)},
                     {"ratio", std::round(ratio * 100) / 100},
                     {"spool_fill_msgs_per_s", std::lround(best_fill)},
                     {"targets", {{"forwarder_msgs_per_s", 20000}}},
                     {"meets_targets", error.empty() && best_fwd >= 20000},
                     {"runs", runs}};
  if (!error.empty())
    out["error"] = error;
  std::cout << out.dump() << std::endl;
  return error.empty() ? 0 : 1;
}
