// device -> function through Grove: MQTT devices (libmosquitto clients) publish to the
// managed Mosquitto of a message_manager running in an in-process kernel; a bus
// subscriber on $grove/mm/out/function/F/# stands in for the function. Peer, in the same
// run: the same publishers through a bare Mosquitto (no plugin) to one MQTT subscriber.
// Prints one JSON line: messages/s end to end and latency percentiles for both.
//   device_function_bench [--messages N] [--pubs P] [--payload B] [--rate R] [--round-trip]
//                         [--idle-subscriptions S]
// --idle-subscriptions: S more devices in the group, each with a subscription of its own
// that no message matches (a larger group; Grove's broker client subscribes to each).
// --round-trip: device -> function -> device with a real function. function_runtime runs
// the C++ SDK's example (echo: publishes each payload on "<subject>/echo") as a pinned
// function; the group routes bench/<i> from device dev-<i> to it and bench/+/echo from it
// to device sink, an MQTT client of the managed Mosquitto that measures. Peer, in the
// same run: a bare Mosquitto with an MQTT echo client (bench/+ -> bench/<i>/echo) and the
// same publishers and sink.

#include <algorithm>
#include <cmath>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_support.hpp"
#include "grove/errors.hpp"
#include "grove/kernel/config.hpp"
#include "grove/kernel/kernel.hpp"

extern char** environ;

using namespace std::chrono;
namespace fs = std::filesystem;

using grove::test::free_port;

namespace {

int64_t now_ns() {
  return duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
}

// Collects arrivals: count and the latency from the timestamp at the payload's start.
struct sink {
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<double> lat_us;
  int64_t last_ns = 0;

  void arrived(const void* data, size_t len) {
    int64_t sent = 0;
    if (len >= sizeof sent)
      std::memcpy(&sent, data, sizeof sent);
    auto t = now_ns();
    std::lock_guard guard{mtx};
    lat_us.push_back((t - sent) / 1000.0);
    last_ns = t;
    cv.notify_all();
  }

  size_t size() {
    std::lock_guard guard{mtx};
    return lat_us.size();
  }

  bool wait_for(size_t n, seconds idle) {
    std::unique_lock lock{mtx};
    while (lat_us.size() < n)
      if (cv.wait_for(lock, idle) == std::cv_status::timeout)
        return false;
    return true;
  }
};

mosquitto* connect_client(const std::string& id, const std::string& user, uint16_t port) {
  auto* m = mosquitto_new(id.c_str(), true, nullptr);
  mosquitto_username_pw_set(m, user.c_str(), nullptr);
  for (int i = 0; i < 100; ++i) {
    if (mosquitto_connect(m, "127.0.0.1", port, 30) == MOSQ_ERR_SUCCESS) {
      mosquitto_loop_start(m);
      return m;
    }
    std::this_thread::sleep_for(milliseconds{50});
  }
  std::cerr << "cannot connect to 127.0.0.1:" << port << '\n';
  std::exit(1);
}

// Publishes `n` messages from each of `pubs` clients at QoS 0 (local delivery in
// Greengrass v1 is QoS 0); returns when all are handed to the socket.
// `rate` > 0 paces each publisher to rate/pubs messages per second.
void publish_all(const std::vector<mosquitto*>& pubs, int n, size_t payload, int rate = 0) {
  std::vector<std::thread> threads;
  for (size_t i = 0; i < pubs.size(); ++i)
    threads.emplace_back([&, i] {
      std::string buf(std::max(payload, sizeof(int64_t)), 'x');
      auto topic = "bench/" + std::to_string(i);
      auto begin = steady_clock::now();
      auto gap = rate > 0 ? nanoseconds{1'000'000'000LL * static_cast<int64_t>(pubs.size()) / rate}
                          : nanoseconds{0};
      for (int k = 0; k < n; ++k) {
        if (rate > 0)
          std::this_thread::sleep_until(begin + gap * k);
        auto t = now_ns();
        std::memcpy(buf.data(), &t, sizeof t);
        while (mosquitto_publish(pubs[i], nullptr, topic.c_str(), static_cast<int>(buf.size()),
                                 buf.data(), 0, false)
               == MOSQ_ERR_NOMEM)
          std::this_thread::sleep_for(microseconds{50});
      }
    });
  for (auto& t : threads)
    t.join();
}

double pct(std::vector<double> xs, double p) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  return xs[static_cast<size_t>(p * static_cast<double>(xs.size() - 1))];
}

nlohmann::json report(sink& s, size_t expected, int64_t start_ns) {
  std::lock_guard guard{s.mtx};
  double secs = (s.last_ns - start_ns) / 1e9;
  return {{"received", s.lat_us.size()},
          {"expected", expected},
          {"msgs_per_s", secs > 0 ? static_cast<int64_t>(s.lat_us.size() / secs) : 0},
          {"p50_us", static_cast<int64_t>(pct(s.lat_us, 0.5))},
          {"p99_us", static_cast<int64_t>(pct(s.lat_us, 0.99))}};
}

void reset(sink& s) {
  std::lock_guard guard{s.mtx};
  s.lat_us.clear();
}

// Two phases on the same clients: as fast as the publishers can go (throughput), then
// paced at `rate` msgs/s in all (latency below saturation).
nlohmann::json measure(sink& s, const std::vector<mosquitto*>& pubs, int n, size_t payload,
                       int rate) {
  size_t expected = static_cast<size_t>(n) * pubs.size();
  // Let warm-up stragglers arrive before counting.
  std::this_thread::sleep_for(milliseconds{300});
  reset(s);
  auto start = now_ns();
  publish_all(pubs, n, payload);
  s.wait_for(expected, seconds{3});
  auto fast = report(s, expected, start);
  std::this_thread::sleep_for(milliseconds{300});
  reset(s);
  start = now_ns();
  publish_all(pubs, n, payload, rate);
  s.wait_for(expected, seconds{3});
  auto paced = report(s, expected, start);
  return {{"unpaced", fast}, {"paced", paced}, {"paced_rate", rate}};
}

} // namespace

int main(int argc, char** argv) {
  int messages = 20000;
  int npubs = 4;
  size_t payload = 64;
  int rate = 10000;
  bool round_trip = false;
  int idle_subscriptions = 0;
  for (int i = 1; i < argc; ++i)
    if (std::string{argv[i]} == "--round-trip") {
      round_trip = true;
      // Fewer by default: one pinned instance handles them one at a time.
      messages = 5000;
      rate = 2000;
    }
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--round-trip") {
      --i; // a flag: no value
      continue;
    }
    if (a == "--messages")
      messages = std::atoi(argv[i + 1]);
    else if (a == "--pubs")
      npubs = std::atoi(argv[i + 1]);
    else if (a == "--rate")
      rate = std::atoi(argv[i + 1]);
    else if (a == "--payload")
      payload = static_cast<size_t>(std::atoi(argv[i + 1]));
    else if (a == "--idle-subscriptions")
      idle_subscriptions = std::atoi(argv[i + 1]);
  }
  mosquitto_lib_init();
  auto dir = fs::temp_directory_path() / ("grove-dfbench-" + std::to_string(getpid()));
  fs::create_directories(dir);

  // --- Grove: in-process kernel with message_manager in development mode.
  auto port = free_port();
  {
    std::ofstream g{dir / "group.yaml"};
    g << "name: bench\ndevices:\n";
    for (int i = 0; i < npubs; ++i)
      g << "  - thing: dev-" << i << "\n";
    for (int i = 0; i < idle_subscriptions; ++i)
      g << "  - thing: idle-" << i << "\n";
    if (round_trip)
      g << "  - thing: sink\n"
        << "functions:\n  - name: F\n    config: {handler: " << GROVE_ECHO_FUNCTION
        << ", pinned: true, maxQueueSize: 1000000, timeoutInSeconds: 60, "
           "inputPayloadEncodingType: binary, "
           "runAs: {uid: 0, gid: 0}, linuxProcessParams: {isolationMode: NoContainer}}\n"
        << "subscriptions:\n  - {id: back, source: \"function:F\", subject: \"bench/+/echo\", "
           "target: \"device:sink\"}\n";
    else
      g << "functions: [{name: F}]\nsubscriptions:\n";
    for (int i = 0; i < npubs; ++i)
      g << "  - {id: s" << i << ", source: \"device:dev-" << i << "\", subject: \"bench/" << i
        << "\", target: \"function:F\"}\n";
    // A larger group: devices that publish nothing, each with its own subscription
    // (Grove's client of the broker subscribes to every one).
    for (int i = 0; i < idle_subscriptions; ++i)
      g << "  - {id: idle" << i << ", source: \"device:idle-" << i << "\", subject: \"idle/"
        << i << "/+/data\", target: \"function:F\"}\n";
    std::ofstream p{dir / "profile.yaml"};
    p << "kernel:\n  log_level: warn\n  group: " << (dir / "group.yaml").string()
      << "\n  bus: {queue_capacity: 1000000}\nplugins:\n  - name: message_manager\n"
      << "    may_claim: [\"device:*\", \"cloud\", \"function:*\", \"shadow\"]\n"
      << "    config:\n      development_mode: true\n      broker: {bind: 127.0.0.1, port: "
      << port << "}\n";
    if (round_trip)
      p << "  - name: function_runtime\n    may_claim: [\"function:*\"]\n"
        << "    config: {allow_run_as_root: true}\n";
  }
  grove::profile_overrides ov;
  ov.write_dir = dir / "var";
  ov.default_plugin_dir = GROVE_PLUGIN_DIR;
  auto prof = grove::load_profile(dir / "profile.yaml", ov);
  if (!prof) {
    std::cerr << grove::describe(prof.error()) << '\n';
    return 1;
  }
  nlohmann::json grove_result;
  {
    grove::kernel_options kopts;
    kopts.control_socket = false;
    kopts.log_to_stderr = false;
    grove::kernel k{std::move(*prof), kopts};
    if (auto err = k.start()) {
      std::cerr << grove::describe(err) << '\n';
      return 1;
    }
    sink s;
    mosquitto* device_sink = nullptr;
    std::shared_ptr<void> subscription;
    if (round_trip) {
      device_sink = connect_client("sink", "sink", port);
      mosquitto_user_data_set(device_sink, &s);
      mosquitto_message_callback_set(device_sink,
                                     [](mosquitto*, void* ud, const mosquitto_message* m) {
        static_cast<sink*>(ud)->arrived(m->payload, static_cast<size_t>(m->payloadlen));
      });
      mosquitto_subscribe(device_sink, nullptr, "bench/+/echo", 0);
    } else {
      auto sub = k.subscribe("$grove/mm/out/function/F/#", [&](const grove::Envelope& e) {
        s.arrived(e.payload().data(), e.payload().size());
      });
      if (!sub) {
        std::cerr << grove::describe(sub.error()) << '\n';
        return 1;
      }
      subscription = std::move(*sub); // the subscription lasts as long as its handle
    }
    std::vector<mosquitto*> pubs;
    for (int i = 0; i < npubs; ++i)
      pubs.push_back(connect_client("dev-" + std::to_string(i), "dev-" + std::to_string(i), port));
    // Warm up until the route is live (the group arrives just after start).
    for (int tries = 0; tries < 200 && s.size() == 0; ++tries) {
      publish_all(pubs, 1, payload);
      std::this_thread::sleep_for(milliseconds{50});
    }
    if (s.size() == 0) {
      // Nothing measured is no figure: say so rather than print 0 msg/s.
      std::cerr << "device_function_bench: no message reached the "
                << (round_trip ? "sink device" : "bus subscriber") << " within 10 s\n";
      return 1;
    }
    {
      std::lock_guard guard{s.mtx};
      s.lat_us.clear();
    }
    grove_result = measure(s, pubs, messages, payload, rate);
    if (device_sink != nullptr)
      pubs.push_back(device_sink);
    for (auto* m : pubs) {
      mosquitto_disconnect(m);
      mosquitto_loop_stop(m, false);
      mosquitto_destroy(m);
    }
  }

  // --- Peer: bare Mosquitto, one MQTT subscriber.
  auto bare_port = free_port();
  {
    std::ofstream c{dir / "bare.conf"};
    c << "listener " << bare_port << " 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n";
  }
  pid_t broker = 0;
  std::string exe = "/usr/sbin/mosquitto";
  std::string conf = (dir / "bare.conf").string();
  char* args[] = {exe.data(), const_cast<char*>("-c"), conf.data(), nullptr};
  posix_spawn_file_actions_t quiet;
  posix_spawn_file_actions_init(&quiet);
  posix_spawn_file_actions_addopen(&quiet, 2, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&quiet, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn(&broker, exe.c_str(), &quiet, nullptr, args, environ);
  posix_spawn_file_actions_destroy(&quiet);
  sink peer;
  auto* subc = connect_client("peer-sub", "peer-sub", bare_port);
  mosquitto_user_data_set(subc, &peer);
  mosquitto_message_callback_set(subc, [](mosquitto*, void* ud, const mosquitto_message* m) {
    static_cast<sink*>(ud)->arrived(m->payload, static_cast<size_t>(m->payloadlen));
  });
  mosquitto_subscribe(subc, nullptr, round_trip ? "bench/+/echo" : "bench/#", 0);
  // --round-trip: the function's stand-in, an MQTT client echoing bench/<i> on
  // bench/<i>/echo, one message at a time on its network thread like the pinned instance.
  mosquitto* echo = nullptr;
  if (round_trip) {
    echo = connect_client("peer-echo", "peer-echo", bare_port);
    mosquitto_message_callback_set(echo, [](mosquitto* m, void*, const mosquitto_message* msg) {
      auto topic = std::string{msg->topic} + "/echo";
      mosquitto_publish(m, nullptr, topic.c_str(), msg->payloadlen, msg->payload, 0, false);
    });
    mosquitto_subscribe(echo, nullptr, "bench/+", 0);
  }
  std::vector<mosquitto*> pubs;
  for (int i = 0; i < npubs; ++i)
    pubs.push_back(connect_client("p-" + std::to_string(i), "p", bare_port));
  for (int tries = 0; tries < 200 && peer.size() == 0; ++tries) {
    publish_all(pubs, 1, payload);
    std::this_thread::sleep_for(milliseconds{50});
  }
  {
    std::lock_guard guard{peer.mtx};
    peer.lat_us.clear();
  }
  auto bare_result = measure(peer, pubs, messages, payload, rate);
  for (auto* m : {subc, echo})
    if (m != nullptr) {
      mosquitto_disconnect(m);
      mosquitto_loop_stop(m, false);
      mosquitto_destroy(m);
    }
  kill(broker, SIGTERM);
  waitpid(broker, nullptr, 0);
  fs::remove_all(dir);

  auto g = grove_result["unpaced"]["msgs_per_s"].get<int64_t>();
  auto b = bare_result["unpaced"]["msgs_per_s"].get<int64_t>();
  double ratio = b > 0 ? static_cast<double>(g) / static_cast<double>(b) : 0;
  nlohmann::json out = {{"bench", round_trip ? "device_function_device" : "device_to_function"},
                        {"publishers", npubs},
                        {"messages_per_publisher", messages},
                        {"idle_subscriptions", idle_subscriptions},
                        {"payload_bytes", payload},
                        {round_trip ? "grove_device_function_device" : "grove_device_to_bus_function",
                         grove_result},
                        {round_trip ? "peer_bare_mosquitto_echo_client"
                                    : "peer_bare_mosquitto_device_to_device",
                         bare_result},
                        {"ratio_unpaced_msgs_per_s", std::round(ratio * 100) / 100}};
  std::cout << out.dump() << std::endl;
  return 0;
}
