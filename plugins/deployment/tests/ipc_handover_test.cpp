// Greengrass IPC across a hot reload (ipc_server::detach, then start with what it returned),
// over a real Unix socket in this process, as groved's reload keeps the descriptors: a
// client's connection, its subscription, a frame it sent half before and half after the
// hand-over, a request the plugin had not answered (ServiceError, never silence), and a
// descriptor closed in between (not taken; a new listener made).

#define BOOST_TEST_MODULE deployment_ipc_handover
#include <boost/test/unit_test.hpp>

#include "eventstream.hpp"
#include "ipc_server.hpp"

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <mutex>

using namespace grove::deployment;
namespace es = grove::deployment::eventstream;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct dir {
  fs::path path;
  dir() {
    char tmpl[] = "/tmp/ipc_handover_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string frame(int32_t type, int32_t sid, const std::string& op, const json& body) {
  es::message m;
  m.headers.push_back(es::header::i32(":message-type", type));
  m.headers.push_back(es::header::i32(":message-flags", 0));
  m.headers.push_back(es::header::i32(":stream-id", sid));
  if (!op.empty())
    m.headers.push_back(es::header::str("operation", "aws.greengrass#" + op));
  m.payload = body.dump();
  return es::encode(m);
}

// A raw IPC client: frames out, frames in (each a message), with a bound on the wait.
struct client {
  int fd = -1;
  std::string in;

  explicit client(const fs::path& socket) {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, socket.c_str());
    BOOST_REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~client() {
    ::close(fd);
  }

  void send(const std::string& bytes) {
    BOOST_REQUIRE(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
                  static_cast<ssize_t>(bytes.size()));
  }

  // The next message, or nullopt when none comes within 10 s or the server closed.
  std::optional<es::message> next() {
    for (;;) {
      es::message m;
      size_t used = 0;
      std::string why;
      if (es::decode(in, ipc_server::max_frame, m, used, why) == es::decode_status::ok) {
        in.erase(0, used);
        return m;
      }
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 10'000) <= 0)
        return std::nullopt;
      char buf[65536];
      auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0)
        return std::nullopt;
      in.append(buf, static_cast<size_t>(n));
    }
  }
};

std::string shape_of(const es::message& m) {
  return m.string_of("service-model-type").value_or("");
}

struct server_setup {
  dir d;
  std::shared_ptr<spdlog::logger> log =
    std::make_shared<spdlog::logger>("t", std::make_shared<spdlog::sinks::null_sink_mt>());
  fs::path socket = d.path / "ipc.socket";

  std::unique_ptr<ipc_server> start(const json* handed = nullptr) {
    auto s = ipc_server::start(socket, d.path / "ipc.key", d.path / "changes.json", *log, handed);
    BOOST_REQUIRE(s);
    (*s)->set_components({{"c.One", json{{"greeting", "hi"},
                                        {"accessControl",
                                         {{"aws.greengrass.ipc.pubsub",
                                           {{"p", {{"operations", {"*"}}, {"resources", {"*"}}}}}},
                                          {"aws.greengrass.ShadowManager",
                                           {{"p", {{"operations", {"*"}}, {"resources", {"*"}}}}}}}}}}});
    return std::move(*s);
  }
};

// What the client's connect sends (its token through env()).
std::string connect_frame(ipc_server& s, const std::string& name) {
  std::string token;
  for (const auto& e : s.env(name))
    if (e.starts_with("SVCUID="))
      token = e.substr(7);
  return frame(4, 0, "", json{{"authToken", token}});
}

} // namespace

BOOST_AUTO_TEST_CASE(connections_subscriptions_and_requests_survive_a_hand_over) {
  server_setup t;
  auto old = t.start();
  std::mutex mtx;
  std::function<void(ipc_server::answer_data)> held; // a shadow call never answered
  old->on_shadow([&](ipc_server::shadow_call, std::function<void(ipc_server::answer_data)> a) {
    std::lock_guard guard{mtx};
    held = std::move(a);
  });
  old->serve();
  client c{t.socket};
  c.send(connect_frame(*old, "c.One"));
  auto ack = c.next();
  BOOST_REQUIRE(ack);
  BOOST_CHECK_EQUAL(ack->int32_of(":message-flags").value_or(0), 1); // accepted
  c.send(frame(0, 1, "SubscribeToTopic", {{"topic", "a/#"}}));
  auto sub = c.next();
  BOOST_REQUIRE(sub);
  BOOST_CHECK_EQUAL(shape_of(*sub), "aws.greengrass#SubscribeToTopicResponse");
  c.send(frame(0, 2, "GetThingShadow", {{"thingName", "t"}}));
  for (int i = 0; i < 1000; ++i) { // the server's thread passes it on
    {
      std::lock_guard guard{mtx};
      if (held)
        break;
    }
    ::usleep(10'000);
  }
  {
    std::lock_guard guard{mtx};
    BOOST_REQUIRE(held);
  }
  // Half of a GetConfiguration before the hand-over, the rest after.
  auto get = frame(0, 3, "GetConfiguration", {{"keyPath", {"greeting"}}});
  c.send(get.substr(0, 20));
  ::usleep(100'000); // let the old server read the half (it is handed over either way)

  auto handed = old->detach();
  // The request the plugin had not answered: answered now, not left silent.
  auto interrupted = c.next();
  BOOST_REQUIRE(interrupted);
  BOOST_CHECK_EQUAL(interrupted->int32_of(":stream-id").value_or(0), 2);
  BOOST_CHECK_EQUAL(shape_of(*interrupted), "aws.greengrass#ServiceError");
  BOOST_CHECK(interrupted->payload.find("interrupted by a reload") != std::string::npos);
  {
    std::lock_guard guard{mtx};
    held(ipc_server::answer_data{}); // the old plugin's late answer goes nowhere
  }
  old.reset(); // closes nothing now
  BOOST_CHECK(fs::exists(t.socket));

  auto next = t.start(&handed);
  BOOST_CHECK_EQUAL(next->handed_connections(), 1u);
  BOOST_CHECK(next->handed_filters() == std::set<std::string>{"a/#"});
  next->serve();
  c.send(get.substr(20));
  auto got = c.next();
  BOOST_REQUIRE(got);
  BOOST_CHECK_EQUAL(got->int32_of(":stream-id").value_or(0), 3);
  BOOST_CHECK_EQUAL(shape_of(*got), "aws.greengrass#GetConfigurationResponse");
  BOOST_CHECK_EQUAL(json::parse(got->payload)["value"], (json{{"greeting", "hi"}}));
  // The subscription made before goes on.
  next->deliver("a/b", R"({"x":1})", "application/json");
  auto msg = c.next();
  BOOST_REQUIRE(msg);
  BOOST_CHECK_EQUAL(msg->int32_of(":stream-id").value_or(0), 1);
  BOOST_CHECK_EQUAL(shape_of(*msg), "aws.greengrass#SubscriptionResponseMessage");
  // New clients connect to the same listener.
  client d{t.socket};
  d.send(connect_frame(*next, "c.One"));
  auto ack2 = d.next();
  BOOST_REQUIRE(ack2);
  BOOST_CHECK_EQUAL(ack2->int32_of(":message-flags").value_or(0), 1);
}

BOOST_AUTO_TEST_CASE(descriptors_closed_in_between_are_not_taken) {
  server_setup t;
  auto old = t.start();
  old->serve();
  client c{t.socket};
  c.send(connect_frame(*old, "c.One"));
  BOOST_REQUIRE(c.next());
  auto handed = old->detach();
  old.reset();
  // A failed instance took them and closed them (or they were never ours).
  ::close(handed["listen"].get<int>());
  for (const auto& conn : handed["connections"])
    ::close(conn["fd"].get<int>());
  auto next = t.start(&handed);
  BOOST_CHECK_EQUAL(next->handed_connections(), 0u);
  next->serve();
  BOOST_CHECK(!c.next()); // that client's connection ended
  client d{t.socket};     // a new listener serves
  d.send(connect_frame(*next, "c.One"));
  auto ack = d.next();
  BOOST_REQUIRE(ack);
  BOOST_CHECK_EQUAL(ack->int32_of(":message-flags").value_or(0), 1);
}
