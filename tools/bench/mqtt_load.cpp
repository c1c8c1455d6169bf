// mqtt_load: device -> device MQTT load generator (libmosquitto C API). N publisher clients,
// each with K subscriber clients on its own topic; every payload starts with the send time
// (steady clock, ns), so the subscribers measure end-to-end latency. Prints one JSON line.
//
//   mqtt_load --host H --port P --pubs N --subs-per-pub K --messages M --payload 64
//             --qos 0|1 [--rate R] [--user-prefix dev] [--topic-prefix bench]
//             [--window W] [--idle-timeout S]
//
// - Publisher i: client id and username `<user-prefix>-pub-i`, topic `<topic-prefix>/i`.
//   Subscriber j of publisher i: `<user-prefix>-sub-i-j`, subscribed to that topic.
// - All subscribers must have their SUBACK before the first message is sent.
// - --rate R: total messages per second over all publishers (0 = as fast as possible).
// - --window W: at most W messages per publisher handed to libmosquitto and not yet written
//   (QoS 0) or acknowledged (QoS 1), so the client queues stay bounded (default 1000).
// - Ends when all N*M*K messages arrived, or after --idle-timeout seconds (default 5)
//   without an arrival once sending is over; `lost` = expected - received.
// - msgs_per_s = received / (first send -> last receive).

#include <mosquitto.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct options {
  std::string host = "127.0.0.1";
  int port = 1883;
  int pubs = 1;
  int subs_per_pub = 1;
  long messages = 10000;
  int payload = 64;
  int qos = 0;
  double rate = 0;
  std::string user_prefix = "dev";
  std::string topic_prefix = "bench";
  long window = 1000;
  double idle_timeout = 5;
};

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           clock_type::now().time_since_epoch())
    .count();
}

// One MQTT client with its own network thread (mosquitto_loop_start).
struct client {
  std::string id;
  std::string topic;
  int qos = 0;
  mosquitto* mosq = nullptr;
  std::atomic<int> connack{-1};   // CONNACK return code, -1 until it arrived
  std::atomic<bool> subacked{false};
  std::atomic<long> written{0};   // publishes written (QoS 0) or acknowledged (QoS 1)
  std::vector<uint32_t> latencies_us; // touched only by this client's network thread
};

std::atomic<long> g_received{0};
std::atomic<int64_t> g_last_receive_ns{0};
std::mutex g_mtx;
std::condition_variable g_cv;

void on_connect(mosquitto* mosq, void* ud, int rc) {
  auto* c = static_cast<client*>(ud);
  if (rc == 0 && !c->topic.empty())
    mosquitto_subscribe(mosq, nullptr, c->topic.c_str(), c->qos);
  std::lock_guard<std::mutex> lk{g_mtx};
  c->connack = rc;
  g_cv.notify_all();
}

void on_subscribe(mosquitto*, void* ud, int, int qos_count, const int* granted) {
  auto* c = static_cast<client*>(ud);
  std::lock_guard<std::mutex> lk{g_mtx};
  c->subacked = qos_count > 0 && granted[0] != 0x80;
  g_cv.notify_all();
}

void on_publish(mosquitto*, void* ud, int) {
  auto* c = static_cast<client*>(ud);
  c->written.fetch_add(1, std::memory_order_relaxed);
  g_cv.notify_all();
}

void on_message(mosquitto*, void* ud, const mosquitto_message* msg) {
  auto* c = static_cast<client*>(ud);
  auto now = now_ns();
  if (msg->payloadlen >= 8) {
    int64_t sent = 0;
    std::memcpy(&sent, msg->payload, sizeof(sent));
    auto us = (now - sent) / 1000;
    c->latencies_us.push_back(static_cast<uint32_t>(std::clamp<int64_t>(us, 0, UINT32_MAX)));
  }
  g_last_receive_ns.store(now, std::memory_order_relaxed);
  g_received.fetch_add(1, std::memory_order_relaxed);
}

[[noreturn]] void fail(const std::string& what) {
  std::printf("%s\n", nlohmann::json{{"error", what}}.dump().c_str());
  std::exit(1);
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: mqtt_load --host H --port P --pubs N --subs-per-pub K --messages M\n"
               "                 --payload BYTES --qos 0|1 [--rate R] [--user-prefix dev]\n"
               "                 [--topic-prefix bench] [--window W] [--idle-timeout S]\n");
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "--help" || k == "-h")
      usage();
    if (i + 1 >= argc)
      usage();
    std::string v = argv[++i];
    try {
      if (k == "--host") o.host = v;
      else if (k == "--port") o.port = std::stoi(v);
      else if (k == "--pubs") o.pubs = std::stoi(v);
      else if (k == "--subs-per-pub") o.subs_per_pub = std::stoi(v);
      else if (k == "--messages") o.messages = std::stol(v);
      else if (k == "--payload") o.payload = std::stoi(v);
      else if (k == "--qos") o.qos = std::stoi(v);
      else if (k == "--rate") o.rate = std::stod(v);
      else if (k == "--user-prefix") o.user_prefix = v;
      else if (k == "--topic-prefix") o.topic_prefix = v;
      else if (k == "--window") o.window = std::stol(v);
      else if (k == "--idle-timeout") o.idle_timeout = std::stod(v);
      else usage();
    } catch (const std::exception&) {
      usage();
    }
  }
  if (o.pubs < 1 || o.subs_per_pub < 0 || o.messages < 1 || o.payload < 8
      || (o.qos != 0 && o.qos != 1) || o.window < 1 || o.rate < 0)
    usage();
  return o;
}

// Waits (bounded) until pred() holds; false on timeout.
template <class Pred>
bool wait_for(Pred pred, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk{g_mtx};
  return g_cv.wait_for(lk, timeout, pred);
}

void start_client(client& c, const options& o) {
  c.mosq = mosquitto_new(c.id.c_str(), true, &c);
  if (c.mosq == nullptr)
    fail("mosquitto_new failed for " + c.id);
  mosquitto_username_pw_set(c.mosq, c.id.c_str(), nullptr);
  mosquitto_connect_callback_set(c.mosq, on_connect);
  mosquitto_subscribe_callback_set(c.mosq, on_subscribe);
  mosquitto_publish_callback_set(c.mosq, on_publish);
  mosquitto_message_callback_set(c.mosq, on_message);
  // Let the window, not libmosquitto's default of 20, bound QoS 1 in flight.
  mosquitto_max_inflight_messages_set(c.mosq, static_cast<unsigned>(o.window));
  if (int rc = mosquitto_connect(c.mosq, o.host.c_str(), o.port, 60); rc != MOSQ_ERR_SUCCESS)
    fail("connect " + c.id + ": " + mosquitto_strerror(rc));
  if (int rc = mosquitto_loop_start(c.mosq); rc != MOSQ_ERR_SUCCESS)
    fail("loop_start " + c.id + ": " + mosquitto_strerror(rc));
}

} // namespace

int main(int argc, char** argv) {
  auto o = parse(argc, argv);
  mosquitto_lib_init();
  std::vector<std::unique_ptr<client>> pubs;
  std::vector<std::unique_ptr<client>> subs;
  for (int i = 0; i < o.pubs; ++i) {
    auto topic = o.topic_prefix + "/" + std::to_string(i);
    for (int j = 0; j < o.subs_per_pub; ++j) {
      auto c = std::make_unique<client>();
      c->id = o.user_prefix + "-sub-" + std::to_string(i) + "-" + std::to_string(j);
      c->topic = topic;
      c->qos = o.qos;
      c->latencies_us.reserve(static_cast<size_t>(o.messages));
      subs.push_back(std::move(c));
    }
    auto p = std::make_unique<client>();
    p->id = o.user_prefix + "-pub-" + std::to_string(i);
    p->qos = o.qos;
    pubs.push_back(std::move(p));
  }
  for (auto& c : subs)
    start_client(*c, o);
  for (auto& c : pubs)
    start_client(*c, o);
  auto all = [&](auto pred) {
    return std::all_of(subs.begin(), subs.end(), [&](auto& c) { return pred(*c); })
           && std::all_of(pubs.begin(), pubs.end(), [&](auto& c) { return pred(*c); });
  };
  if (!wait_for([&] { return all([](client& c) { return c.connack.load() >= 0; }); }, 30s))
    fail("not every client got a CONNACK within 30 s");
  for (auto* group : {&subs, &pubs})
    for (auto& c : *group)
      if (c->connack != 0)
        fail("connection of " + c->id + " refused: "
             + mosquitto_connack_string(c->connack.load()));
  if (!wait_for([&] {
        return std::all_of(subs.begin(), subs.end(), [](auto& c) { return c->subacked.load(); });
      }, 30s))
    fail("not every subscriber got a successful SUBACK within 30 s");

  // Send.
  std::string payload(static_cast<size_t>(o.payload), 'x');
  double per_pub_rate = o.rate / o.pubs;
  auto first_send_ns = now_ns();
  std::atomic<long> sent{0};
  std::atomic<bool> send_failed{false};
  std::vector<std::thread> senders;
  for (auto& p : pubs) {
    senders.emplace_back([&, c = p.get(), buf = payload]() mutable {
      auto topic = o.topic_prefix + "/" + c->id.substr(c->id.rfind('-') + 1);
      auto start = clock_type::now();
      for (long n = 0; n < o.messages; ++n) {
        if (per_pub_rate > 0) {
          auto due = start + std::chrono::nanoseconds(static_cast<int64_t>(n * 1e9 / per_pub_rate));
          std::this_thread::sleep_until(due);
        }
        // on_publish notifies without the lock (per message), so a wake-up may be missed:
        // re-check every millisecond.
        while (n - c->written.load(std::memory_order_relaxed) >= o.window) {
          std::unique_lock<std::mutex> lk{g_mtx};
          g_cv.wait_for(lk, 1ms);
        }
        auto ts = now_ns();
        std::memcpy(buf.data(), &ts, sizeof(ts));
        int rc = mosquitto_publish(c->mosq, nullptr, topic.c_str(), static_cast<int>(buf.size()),
                                   buf.data(), o.qos, false);
        if (rc != MOSQ_ERR_SUCCESS) {
          send_failed = true;
          return;
        }
        sent.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (auto& t : senders)
    t.join();
  long expected = static_cast<long>(o.pubs) * o.subs_per_pub * o.messages;
  // Wait for the rest, until nothing arrived for idle_timeout.
  auto idle = std::chrono::nanoseconds(static_cast<int64_t>(o.idle_timeout * 1e9));
  auto last_progress = clock_type::now();
  long last_count = -1;
  while (g_received.load() < expected) {
    auto n = g_received.load();
    if (n != last_count) {
      last_count = n;
      last_progress = clock_type::now();
    } else if (clock_type::now() - last_progress > idle) {
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  auto received = g_received.load();
  auto end_ns = received > 0 ? g_last_receive_ns.load() : now_ns();
  for (auto* group : {&pubs, &subs})
    for (auto& c : *group) {
      mosquitto_disconnect(c->mosq);
      mosquitto_loop_stop(c->mosq, false);
    }
  std::vector<uint32_t> lat;
  for (auto& c : subs)
    lat.insert(lat.end(), c->latencies_us.begin(), c->latencies_us.end());
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) -> uint64_t {
    if (lat.empty())
      return 0;
    auto idx = static_cast<size_t>(p * static_cast<double>(lat.size() - 1) + 0.5);
    return lat[std::min(idx, lat.size() - 1)];
  };
  double seconds = static_cast<double>(end_ns - first_send_ns) / 1e9;
  nlohmann::json out{
    {"host", o.host},
    {"port", o.port},
    {"pubs", o.pubs},
    {"subs_per_pub", o.subs_per_pub},
    {"messages_per_pub", o.messages},
    {"payload", o.payload},
    {"qos", o.qos},
    {"rate", o.rate},
    {"sent", sent.load()},
    {"received", received},
    {"expected", expected},
    {"lost", expected - received},
    {"seconds", seconds},
    {"msgs_per_s", seconds > 0 ? static_cast<double>(received) / seconds : 0.0},
    {"latency_p50_us", pct(0.50)},
    {"latency_p99_us", pct(0.99)},
    {"latency_max_us", lat.empty() ? 0 : lat.back()},
  };
  if (send_failed)
    out["error"] = "mosquitto_publish failed";
  std::printf("%s\n", out.dump().c_str());
  for (auto* group : {&pubs, &subs})
    for (auto& c : *group)
      mosquitto_destroy(c->mosq);
  mosquitto_lib_cleanup();
  return send_failed ? 1 : 0;
}
