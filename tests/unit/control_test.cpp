// Control socket: framing, control_server against an in-test backend (stands in for the
// kernel), and the grovectl binary against that server. No sleeps: every wait is a
// bounded poll or condition-variable wait.

#define BOOST_TEST_MODULE control
#include <boost/test/included/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <spdlog/logger.h>
#include <spdlog/sinks/ringbuffer_sink.h>

#include "../../kernel/src/frame_channel.hpp"
#include "grove/control.pb.h"
#include "grove/errors.hpp"
#include "grove/kernel/control.hpp"
#include "grove/kernel/plugin_name.hpp"

#ifndef GROVECTL_PATH
#  error "GROVECTL_PATH must name the grovectl binary"
#endif

extern char** environ;

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using grove::Envelope;
using grove::control::Request;
using grove::control::Response;

namespace {

/// Makes SO_PEERCRED unreadable while set (see getsockopt below).
std::atomic<bool> fail_peercred{false};

} // namespace

// The kernel cannot be made to fail SO_PEERCRED on a real Unix socket, so this test
// binary interposes getsockopt (the executable's definition wins over libc's for calls
// from libgrove_core) and fails that one option on request; every other call goes to
// libc unchanged.
extern "C" int getsockopt(int fd, int level, int name, void* __restrict value,
                          socklen_t* __restrict len) noexcept {
  using fn = int (*)(int, int, int, void*, socklen_t*);
  static auto real = reinterpret_cast<fn>(::dlsym(RTLD_NEXT, "getsockopt"));
  if (level == SOL_SOCKET && name == SO_PEERCRED && fail_peercred.load()) {
    errno = ENOPROTOOPT;
    return -1;
  }
  return real(fd, level, name, value, len);
}

namespace {

/// Upper bound for any wait; only reached when something is broken.
constexpr auto deadline = 20s;

/// The kernel side, stood in for: canned answers and a record of what it was asked.
class fake_backend : public grove::control_backend {
public:
  grove::control::Status status() override {
    grove::control::Status st;
    st.set_version("0.1.0-test");
    st.set_pid(4242);
    st.set_uptime_seconds(3723.5);
    st.set_config_file("/etc/grove/test.yaml");
    st.set_write_dir("/var/lib/grove");
    st.set_plugin_dir("/usr/lib/grove/plugins");
    st.set_control_socket("/var/lib/grove/run/control.sock");
    st.set_bus_published(11);
    st.set_bus_delivered(22);
    st.set_bus_dropped(3);
    st.set_bus_unrouted(4);
    st.set_subscriptions(5);
    *st.mutable_plugins() = plugins().plugins();
    (*st.mutable_details())["heartbeat.beating"] = "1000 ms on grove/heartbeat";
    (*st.mutable_details())["shadow.things"] = "7";
    return st;
  }

  grove::control::Plugins plugins() override {
    grove::control::Plugins list;
    auto* hb = list.add_plugins();
    hb->set_name("heartbeat");
    hb->set_version("1.0.0");
    hb->set_state("running");
    hb->set_restarts(1);
    hb->set_queue_depth(3);
    hb->set_queue_capacity(100);
    hb->set_dropped(9);
    hb->set_last_reload("2024-01-02T03:04:05Z ok");
    auto* beats = hb->add_metrics();
    beats->set_name("beats");
    beats->set_kind("counter");
    beats->set_help("Beats published.");
    beats->set_value(42);
    auto* denied = hb->add_metrics();
    denied->set_name("denied");
    denied->set_kind("counter");
    (*denied->mutable_labels())["device"] = "A";
    denied->set_value(2);
    auto* backlog = hb->add_metrics();
    backlog->set_name("backlog.change");
    backlog->set_kind("gauge");
    backlog->set_value(-3);
    auto* sh = list.add_plugins();
    sh->set_name("shadow");
    sh->set_version("0.2.0");
    sh->set_state("broken");
    sh->set_queue_capacity(10000);
    sh->set_last_error("init_failed: database is locked");
    return list;
  }

  caf::error load(const std::string& name) override {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      asked_.push_back("load " + name);
    }
    if (name == "missing")
      return grove::make_error(grove::errc::load_failed, "cannot open libmissing.so");
    return {};
  }

  caf::error unload(const std::string& name) override {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      asked_.push_back("unload " + name);
    }
    if (name != "heartbeat")
      return grove::make_error(grove::errc::unknown_plugin, "no plugin named " + name);
    return {};
  }

  caf::expected<std::string> reload(const std::string& name,
                                    const std::string& path) override {
    if (name != "heartbeat")
      return grove::make_error(grove::errc::unknown_plugin, "no plugin named " + name);
    std::lock_guard<std::mutex> guard{mtx_};
    asked_.push_back("reload " + name);
    last_reload_path_ = path;
    return "reloaded heartbeat 1.0.0 -> 1.1.0";
  }

  caf::expected<grove::publish_result> publish(Envelope msg) override {
    std::lock_guard<std::mutex> guard{mtx_};
    // Nobody subscribes below nobody/: the bus delivers such a message to no one.
    bool unheard = msg.topic().starts_with("nobody/");
    published_.push_back(std::move(msg));
    return unheard ? grove::publish_result{0, 0} : grove::publish_result{2, 1};
  }

  caf::expected<std::shared_ptr<void>>
  subscribe(const std::string& filter,
            std::function<void(const Envelope&)> sink) override {
    std::lock_guard<std::mutex> guard{mtx_};
    sinks_.push_back(std::move(sink));
    filters_.push_back(filter);
    ++subscribes_;
    cv_.notify_all();
    auto index = sinks_.size() - 1;
    // Releasing the handle unsubscribes, as the kernel's handle does.
    return std::shared_ptr<void>{new int{0}, [this, index](void* ptr) {
                                   delete static_cast<int*>(ptr);
                                   std::lock_guard<std::mutex> guard{mtx_};
                                   sinks_[index] = nullptr;
                                   ++unsubscribes_;
                                   cv_.notify_all();
                                 }};
  }

  /// Calls every live sink with `msg`, as the bus would from a kernel thread.
  size_t deliver(const Envelope& msg) {
    std::lock_guard<std::mutex> guard{mtx_};
    size_t n = 0;
    for (auto& sink : sinks_)
      if (sink) {
        sink(msg);
        ++n;
      }
    return n;
  }

  /// Reads a member under the backend's lock.
  template <class T>
  T get(const T& member) {
    std::lock_guard<std::mutex> guard{mtx_};
    return member;
  }

  /// Waits (bounded) until `pred` holds under the backend's lock.
  bool wait(std::function<bool()> pred) {
    std::unique_lock<std::mutex> guard{mtx_};
    return cv_.wait_for(guard, deadline, pred);
  }

  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<std::function<void(const Envelope&)>> sinks_;
  std::vector<std::string> filters_;
  std::vector<Envelope> published_;
  std::string last_reload_path_;
  /// Every load, unload and reload the server passed on, as "<verb> <name>".
  std::vector<std::string> asked_;
  int subscribes_ = 0;
  int unsubscribes_ = 0;
};

fs::path make_temp_dir() {
  std::string tmpl = (fs::temp_directory_path() / "grove-ctl-XXXXXX").string();
  BOOST_REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
  return tmpl;
}

/// Connects to `path`; replies that do not come within the deadline fail the test.
int connect_to(const fs::path& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  BOOST_REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  BOOST_REQUIRE_MESSAGE(::connect(fd, reinterpret_cast<sockaddr*>(&addr),
                                  sizeof(addr))
                          == 0,
                        "connect " << path << ": " << std::strerror(errno));
  timeval tv{std::chrono::duration_cast<std::chrono::seconds>(deadline).count(), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

Response call(int fd, const Request& req) {
  BOOST_REQUIRE(!grove::framing::write_frame(fd, req));
  Response res;
  auto err = grove::framing::read_frame(fd, res);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  return res;
}

/// Whether the peer closed `fd` (EOF within the deadline).
bool sees_eof(int fd) {
  char buf[256];
  for (;;) {
    auto n = ::read(fd, buf, sizeof(buf));
    if (n == 0)
      return true;
    if (n < 0 && errno != EINTR)
      return errno == ECONNRESET;
  }
}

bool is(const caf::error& err, grove::errc code) {
  return err && err.compare(static_cast<uint8_t>(code), caf::atom("grove")) == 0;
}

size_t thread_count() {
  size_t n = 0;
  for ([[maybe_unused]] auto& entry : fs::directory_iterator{"/proc/self/task"})
    ++n;
  return n;
}

/// VmSize of this process.
size_t vm_size_kb() {
  std::ifstream in{"/proc/self/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmSize:", 0) == 0)
      return std::stoul(line.substr(7));
  return 0;
}

/// A field of /proc/self/status in KiB (VmRSS, VmHWM).
size_t status_kb(const std::string& key) {
  std::ifstream in{"/proc/self/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0)
      return std::stoul(line.substr(key.size() + 1));
  return 0;
}

/// Resets VmHWM to the current RSS (Linux >= 4.0); false where /proc forbids it.
bool reset_peak_rss() {
  std::ofstream out{"/proc/self/clear_refs"};
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

/// Stack size of a new std::thread.
size_t default_stack_kb() {
  pthread_attr_t attr;
  size_t size = 8u << 20;
  if (::pthread_getattr_default_np(&attr) == 0) {
    ::pthread_attr_getstacksize(&attr, &size);
    ::pthread_attr_destroy(&attr);
  }
  return size / 1024;
}

/// A control_server on a fresh temp dir, with the fake backend.
struct server_fixture {
  explicit server_fixture(grove::control_limits limits = {})
    : dir(make_temp_dir()),
      path(dir / "run" / "control.sock"),
      sink(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256)),
      log(std::make_shared<spdlog::logger>("control", sink)) {
    log->set_level(spdlog::level::debug);
    server = std::make_unique<grove::control_server>(backend, path, log, limits);
    auto err = server->start();
    BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  }

  ~server_fixture() {
    server->stop();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  bool logged(const std::string& needle) {
    for (auto& line : sink->last_formatted())
      if (line.find(needle) != std::string::npos)
        return true;
    return false;
  }

  /// `logged`, waiting (bounded) for a line the server writes after the event the test
  /// saw (a subscription's end is logged after its unsubscribe).
  bool logged_soon(const std::string& needle) {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{10};
    while (!logged(needle)) {
      if (std::chrono::steady_clock::now() > until)
        return false;
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    }
    return true;
  }

  fs::path dir;
  fs::path path;
  fake_backend backend;
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink;
  std::shared_ptr<spdlog::logger> log;
  std::unique_ptr<grove::control_server> server;
};

/// Result of one grovectl run.
struct run_result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

/// Runs grovectl with `args`; GROVE_* variables are cleared, then `env` added.
/// `while_running` is called with the child's pid right after it started.
run_result grovectl(const std::vector<std::string>& args,
                    const std::vector<std::string>& env = {},
                    const std::function<void(pid_t)>& while_running = nullptr) {
  std::vector<std::string> argv_store{GROVECTL_PATH};
  argv_store.insert(argv_store.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& arg : argv_store)
    argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_store;
  for (auto** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "GROVE_", 6) != 0)
      env_store.emplace_back(*e);
  env_store.insert(env_store.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& var : env_store)
    envp.push_back(var.data());
  envp.push_back(nullptr);
  int out_pipe[2];
  int err_pipe[2];
  BOOST_REQUIRE(::pipe2(out_pipe, O_CLOEXEC) == 0);
  BOOST_REQUIRE(::pipe2(err_pipe, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  pid_t pid;
  auto rc = ::posix_spawn(&pid, GROVECTL_PATH, &actions, nullptr, argv.data(),
                          envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  BOOST_REQUIRE_MESSAGE(rc == 0, "posix_spawn: " << std::strerror(rc));
  if (while_running)
    while_running(pid);
  run_result result;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* bufs[2] = {&result.out, &result.err};
  auto until = std::chrono::steady_clock::now() + deadline;
  int open = 2;
  while (open > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      until - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ::kill(pid, SIGKILL);
      BOOST_ERROR("grovectl did not finish in time");
      break;
    }
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0 && errno != EINTR)
      break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0)
        continue;
      char buf[4096];
      auto n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        bufs[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open;
      }
    }
  }
  for (auto& p : fds)
    if (p.fd >= 0)
      ::close(p.fd);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

Request status_request() {
  Request req;
  req.mutable_status();
  return req;
}

} // namespace

// -- framing -------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(framing)

BOOST_AUTO_TEST_CASE(round_trip) {
  int sv[2];
  BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  Request in;
  auto* msg = in.mutable_publish();
  msg->set_topic("sensors/temp");
  msg->set_payload(std::string("\x00\xff binary\n", 10));
  msg->set_content_type("application/octet-stream");
  msg->set_timestamp_ns(-1);
  Request empty;
  BOOST_REQUIRE(!grove::framing::write_frame(sv[0], in));
  BOOST_REQUIRE(!grove::framing::write_frame(sv[0], empty)); // zero-length frame
  BOOST_REQUIRE(!grove::framing::write_frame(sv[0], in));
  for (auto* expected : {&in, &empty, &in}) {
    Request out;
    auto err = grove::framing::read_frame(sv[1], out);
    BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
    BOOST_CHECK_EQUAL(out.SerializeAsString(), expected->SerializeAsString());
  }
  ::close(sv[0]);
  Request out;
  auto err = grove::framing::read_frame(sv[1], out);
  BOOST_CHECK(is(err, grove::errc::system_error));
  BOOST_CHECK_EQUAL(grove::describe(err), "system_error: connection closed");
  ::close(sv[1]);
}

BOOST_AUTO_TEST_CASE(truncated_and_garbage) {
  int sv[2];
  BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  const unsigned char garbage[] = {0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff};
  BOOST_REQUIRE(::write(sv[0], garbage, sizeof(garbage)) == sizeof(garbage));
  Request out;
  BOOST_CHECK(is(grove::framing::read_frame(sv[1], out), grove::errc::malformed));
  const unsigned char truncated[] = {0, 0, 0, 10, 1, 2, 3};
  BOOST_REQUIRE(::write(sv[0], truncated, sizeof(truncated)) == sizeof(truncated));
  ::close(sv[0]);
  auto err = grove::framing::read_frame(sv[1], out);
  BOOST_CHECK_MESSAGE(is(err, grove::errc::malformed), grove::describe(err));
  ::close(sv[1]);
}

BOOST_AUTO_TEST_CASE(oversized_frames_rejected) {
  int sv[2];
  BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  // Writing: refused before a byte goes out.
  Envelope big;
  big.set_payload(std::string(grove::framing::max_frame_size + 1, 'x'));
  BOOST_CHECK(is(grove::framing::write_frame(sv[0], big), grove::errc::too_large));
  // Reading: the length alone is enough to refuse.
  const unsigned char header[] = {0x01, 0x00, 0x00, 0x01}; // 16 MiB + 1
  BOOST_REQUIRE(::write(sv[0], header, sizeof(header)) == sizeof(header));
  Envelope out;
  BOOST_CHECK(is(grove::framing::read_frame(sv[1], out), grove::errc::too_large));
  // The limit itself is fine (the length check, not the parse, is what is tested).
  BOOST_CHECK_EQUAL(grove::framing::max_frame_size, 16u << 20);
  // A caller's own limit is enforced the same way.
  const unsigned char two_mib[] = {0x00, 0x20, 0x00, 0x00};
  BOOST_REQUIRE(::write(sv[0], two_mib, sizeof(two_mib)) == sizeof(two_mib));
  BOOST_CHECK(is(grove::framing::read_frame(sv[1], out, 1u << 20), grove::errc::too_large));
  ::close(sv[0]);
  ::close(sv[1]);
}

BOOST_AUTO_TEST_CASE(memory_follows_the_bytes_received_not_the_announced_length) {
  // Announcing the largest frame and sending a few bytes must not cost the announced
  // 16 MiB: the reader grows its buffer as bytes arrive.
  int sv[2];
  BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  const unsigned char header[] = {0x01, 0x00, 0x00, 0x00}; // exactly 16 MiB
  BOOST_REQUIRE(::write(sv[0], header, sizeof(header)) == sizeof(header));
  std::string some(1000, 'x');
  BOOST_REQUIRE(::write(sv[0], some.data(), some.size()) == 1000);
  ::close(sv[0]); // then the peer vanishes
  if (!reset_peak_rss()) {
    BOOST_TEST_MESSAGE("cannot reset VmHWM here; peak not measured");
    ::close(sv[1]);
    return;
  }
  auto before = status_kb("VmRSS");
  Envelope out;
  auto err = grove::framing::read_frame(sv[1], out);
  auto peak = status_kb("VmHWM");
  ::close(sv[1]);
  BOOST_CHECK_MESSAGE(is(err, grove::errc::malformed), grove::describe(err));
  BOOST_TEST_MESSAGE("peak RSS growth " << (peak - before) << " KiB");
  // The announced 16 MiB would show as 16384 KiB: well under a quarter of it is what
  // one chunk and the allocator's slack cost.
  BOOST_CHECK_LT(peak - before, (grove::framing::max_frame_size / 1024) / 4);
}


namespace {

// `msg` as one frame's bytes.
std::string frame_of(const Envelope& msg) {
  std::string out;
  BOOST_REQUIRE(!grove::framing::append_frame(out, msg));
  return out;
}

Envelope envelope_of(std::string payload) {
  Envelope e;
  e.set_payload(std::move(payload));
  return e;
}

} // namespace

BOOST_AUTO_TEST_CASE(frame_stream_receives_frames_split_across_writes) {
  int sv[2];
  BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  using grove::framing::frame_stream;
  std::vector<Envelope> sent{envelope_of(std::string(1u << 20, 'L')), envelope_of("s1"),
                             envelope_of(std::string(300, 'm')), envelope_of("s2")};
  std::string bytes;
  for (auto& e : sent)
    bytes += frame_of(e);
  // Cut points inside a header, inside a body, and one past the large frame's end.
  auto large_end = frame_of(sent[0]).size();
  std::vector<size_t> cuts{2, 1000, large_end + 3, large_end + 9, bytes.size()};
  std::atomic<bool> written{true};
  std::thread writer{[&] {
    size_t at = 0;
    for (auto cut : cuts) {
      if (grove::framing::write_all(sv[0], std::string_view{bytes}.substr(at, cut - at)))
        written = false;
      at = cut;
    }
    ::close(sv[0]);
  }};
  frame_stream in{grove::framing::max_frame_size};
  for (auto& e : sent) {
    Envelope out;
    auto err = in.receive(sv[1], out);
    BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
    BOOST_CHECK_EQUAL(out.payload().size(), e.payload().size());
    BOOST_CHECK(out.payload() == e.payload());
  }
  writer.join();
  BOOST_CHECK(written);
  Envelope out;
  auto err = in.receive(sv[1], out);
  BOOST_CHECK_EQUAL(grove::describe(err), "system_error: connection closed");
  BOOST_CHECK(in.ended());
  // The large frame's memory has gone (the next test: also when a frame follows it).
  BOOST_CHECK_LT(in.capacity(), 4 * frame_stream::chunk);
  ::close(sv[1]);
}

BOOST_AUTO_TEST_CASE(frame_channel_ends_at_a_cut_frame_and_refuses_a_frame_it_cannot_send) {
  int sv[2];
  BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(16);
  auto log = std::make_shared<spdlog::logger>("frame_channel_test", sink);
  grove::frame_channel ch{sv[0], {}, log};
  // Over the reader's limit: logged, not sent, and too_large to the caller (who answers
  // its waiter with it); the next frame goes out alone.
  auto refused = ch.send(envelope_of(std::string(grove::frame_channel::max_frame + 1, 'x')));
  BOOST_TEST(is(refused, grove::errc::too_large), grove::describe(refused));
  BOOST_TEST(!ch.send(envelope_of("after")));
  Envelope out;
  auto err = grove::framing::read_frame(sv[1], out);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  BOOST_CHECK_EQUAL(out.payload(), "after");
  auto lines = sink->last_formatted();
  BOOST_REQUIRE_EQUAL(lines.size(), 1u);
  BOOST_CHECK_MESSAGE(lines[0].find("too_large") != std::string::npos, lines[0]);
  // The peer dies in the middle of a frame: the end of the stream, not bad data.
  const unsigned char cut[] = {0, 0, 0, 10, 1, 2, 3};
  BOOST_REQUIRE(::write(sv[1], cut, sizeof(cut)) == sizeof(cut));
  ::close(sv[1]);
  err = ch.receive(out);
  BOOST_CHECK(is(err, grove::errc::system_error));
  BOOST_CHECK_MESSAGE(grove::message_of(err).starts_with("connection closed in a frame"),
                      grove::describe(err));
}

BOOST_AUTO_TEST_CASE(frame_stream_gives_back_a_large_frame_with_a_leftover) {
  // The read that ends a large frame also brings the start of the next: the buffer
  // shrinks to the leftover instead of keeping the large frame's size.
  using grove::framing::frame_stream;
  frame_stream in{grove::framing::max_frame_size};
  auto bytes = frame_of(envelope_of(std::string(1u << 20, 'L')));
  auto next = frame_of(envelope_of("next"));
  bytes += next.substr(0, 5);
  for (size_t at = 0; at < bytes.size();) {
    auto s = in.space();
    auto n = std::min(s.size(), bytes.size() - at);
    std::memcpy(s.data(), bytes.data() + at, n);
    in.commit(n);
    at += n;
  }
  Envelope out;
  auto got = in.next(out);
  BOOST_REQUIRE(got && *got);
  BOOST_CHECK_EQUAL(out.payload().size(), 1u << 20);
  BOOST_CHECK_GT(in.capacity(), 4 * frame_stream::chunk);
  BOOST_CHECK_EQUAL(in.partial(), 5u);
  auto s = in.space();
  BOOST_CHECK_LT(in.capacity(), 4 * frame_stream::chunk);
  std::memcpy(s.data(), next.data() + 5, next.size() - 5);
  in.commit(next.size() - 5);
  got = in.next(out);
  BOOST_REQUIRE(got && *got);
  BOOST_CHECK_EQUAL(out.payload(), "next");
  BOOST_CHECK_EQUAL(in.partial(), 0u);
}

BOOST_AUTO_TEST_SUITE_END()

// -- control_server --------------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(server, server_fixture)

BOOST_AUTO_TEST_CASE(socket_is_private) {
  struct stat st;
  BOOST_REQUIRE(::lstat(path.c_str(), &st) == 0);
  BOOST_CHECK(S_ISSOCK(st.st_mode));
  BOOST_CHECK_EQUAL(st.st_mode & 0777, 0600u);
  BOOST_CHECK_EQUAL(server->path(), path);
}

BOOST_AUTO_TEST_CASE(requests_and_error_propagation) {
  int fd = connect_to(path);
  // Several requests on one connection.
  auto res = call(fd, status_request());
  BOOST_REQUIRE(res.ok());
  BOOST_REQUIRE(res.has_status());
  BOOST_CHECK_EQUAL(res.status().pid(), 4242u);
  BOOST_CHECK_EQUAL(res.status().plugins_size(), 2);
  BOOST_CHECK_EQUAL(res.status().details().at("heartbeat.beating"),
                    "1000 ms on grove/heartbeat");
  BOOST_CHECK_EQUAL(res.status().plugins(0).metrics(0).value(), 42);
  Request req;
  req.mutable_plugins();
  res = call(fd, req);
  BOOST_REQUIRE(res.ok());
  BOOST_REQUIRE(res.has_plugins());
  BOOST_CHECK_EQUAL(res.plugins().plugins(0).name(), "heartbeat");
  req.mutable_load()->set_name("missing");
  res = call(fd, req);
  BOOST_CHECK(!res.ok());
  BOOST_CHECK_EQUAL(res.error(), "load_failed: cannot open libmissing.so");
  req.mutable_load()->set_name("heartbeat");
  res = call(fd, req);
  BOOST_CHECK(res.ok());
  BOOST_CHECK_EQUAL(res.message(), "loaded heartbeat");
  req.mutable_unload()->set_name("ghost");
  res = call(fd, req);
  BOOST_CHECK(!res.ok());
  BOOST_CHECK_EQUAL(res.error(), "unknown_plugin: no plugin named ghost");
  req.mutable_reload()->set_name("heartbeat");
  req.mutable_reload()->set_path("/opt/libheartbeat.so");
  res = call(fd, req);
  BOOST_CHECK(res.ok());
  BOOST_CHECK_EQUAL(res.message(), "reloaded heartbeat 1.0.0 -> 1.1.0");
  BOOST_CHECK_EQUAL(backend.get(backend.last_reload_path_), "/opt/libheartbeat.so");
  // An empty request is an error, not a reason to hang up.
  res = call(fd, Request{});
  BOOST_CHECK(!res.ok());
  res = call(fd, status_request());
  BOOST_CHECK(res.ok());
  ::close(fd);
}

BOOST_AUTO_TEST_CASE(publish) {
  int fd = connect_to(path);
  Request req;
  req.mutable_publish()->set_topic("sensors/temp");
  req.mutable_publish()->set_payload("21.5");
  auto res = call(fd, req);
  BOOST_REQUIRE_MESSAGE(res.ok(), res.error());
  BOOST_CHECK_EQUAL(res.message(), "delivered 2, dropped 1");
  // The outcome as fields: grovectl reads these, never the note.
  BOOST_REQUIRE(res.has_published());
  BOOST_CHECK_EQUAL(res.published().topic(), "sensors/temp");
  BOOST_CHECK_EQUAL(res.published().delivered(), 2u);
  BOOST_CHECK_EQUAL(res.published().dropped(), 1u);
  {
    std::lock_guard<std::mutex> guard{backend.mtx_};
    BOOST_REQUIRE_EQUAL(backend.published_.size(), 1u);
    BOOST_CHECK_EQUAL(backend.published_[0].topic(), "sensors/temp");
    BOOST_CHECK_EQUAL(backend.published_[0].payload(), "21.5");
  }
  req.mutable_publish()->set_topic("sensors/+");
  res = call(fd, req);
  BOOST_CHECK(!res.ok());
  BOOST_CHECK(res.error().rfind("invalid_topic:", 0) == 0);
  std::lock_guard<std::mutex> guard{backend.mtx_};
  BOOST_CHECK_EQUAL(backend.published_.size(), 1u);
  ::close(fd);
}

BOOST_AUTO_TEST_CASE(subscribe_streams_until_client_hangs_up) {
  int fd = connect_to(path);
  Request req;
  req.mutable_subscribe()->set_filter("a/#/b");
  auto res = call(fd, req);
  BOOST_CHECK(!res.ok());
  BOOST_CHECK(res.error().rfind("invalid_topic:", 0) == 0);
  req.mutable_subscribe()->set_filter("sensors/#");
  res = call(fd, req); // the acknowledgement
  BOOST_REQUIRE_MESSAGE(res.ok(), res.error());
  BOOST_CHECK(!res.has_message_out());
  BOOST_REQUIRE(backend.wait([&] { return backend.subscribes_ == 1; }));
  BOOST_CHECK_EQUAL(backend.get(backend.filters_).at(0), "sensors/#");
  for (int i = 0; i < 3; ++i) {
    Envelope msg;
    msg.set_topic("sensors/" + std::to_string(i));
    msg.set_payload("v" + std::to_string(i));
    msg.set_id(static_cast<uint64_t>(i + 1));
    BOOST_REQUIRE_EQUAL(backend.deliver(msg), 1u);
  }
  for (int i = 0; i < 3; ++i) {
    Response out;
    auto err = grove::framing::read_frame(fd, out);
    BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
    BOOST_REQUIRE(out.ok());
    BOOST_REQUIRE(out.has_message_out());
    BOOST_CHECK_EQUAL(out.message_out().topic(), "sensors/" + std::to_string(i));
    BOOST_CHECK_EQUAL(out.message_out().payload(), "v" + std::to_string(i));
    BOOST_CHECK_EQUAL(out.message_out().id(), static_cast<uint64_t>(i + 1));
  }
  BOOST_CHECK_EQUAL(backend.get(backend.unsubscribes_), 0);
  ::close(fd);
  BOOST_CHECK(backend.wait([&] { return backend.unsubscribes_ == 1; }));
}

BOOST_AUTO_TEST_CASE(garbage_gets_an_error_and_the_server_survives) {
  int fd = connect_to(path);
  const unsigned char garbage[] = {0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff};
  BOOST_REQUIRE(::write(fd, garbage, sizeof(garbage)) == sizeof(garbage));
  Response res;
  auto err = grove::framing::read_frame(fd, res);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  BOOST_CHECK(!res.ok());
  BOOST_CHECK(res.error().rfind("malformed:", 0) == 0);
  BOOST_CHECK(sees_eof(fd));
  ::close(fd);
  // Plain text is read as an absurd length.
  fd = connect_to(path);
  const char text[] = "GET / HTTP/1.1\r\n\r\n";
  BOOST_REQUIRE(::write(fd, text, sizeof(text) - 1) == sizeof(text) - 1);
  err = grove::framing::read_frame(fd, res);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  BOOST_CHECK(!res.ok());
  BOOST_CHECK(res.error().rfind("too_large:", 0) == 0);
  BOOST_CHECK(sees_eof(fd));
  ::close(fd);
  // A client that vanishes mid-frame.
  fd = connect_to(path);
  const unsigned char partial[] = {0, 0, 0, 100, 1, 2};
  BOOST_REQUIRE(::write(fd, partial, sizeof(partial)) == sizeof(partial));
  ::close(fd);
  // The next client is served as usual.
  fd = connect_to(path);
  BOOST_CHECK(call(fd, status_request()).ok());
  ::close(fd);
  BOOST_CHECK(logged("bad frame"));
}

BOOST_AUTO_TEST_CASE(oversized_request_rejected) {
  int fd = connect_to(path);
  const unsigned char header[] = {0x01, 0x00, 0x00, 0x01}; // 16 MiB + 1
  BOOST_REQUIRE(::write(fd, header, sizeof(header)) == sizeof(header));
  Response res;
  auto err = grove::framing::read_frame(fd, res);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  BOOST_CHECK(!res.ok());
  BOOST_CHECK(res.error().rfind("too_large:", 0) == 0);
  BOOST_CHECK(sees_eof(fd));
  ::close(fd);
}

BOOST_AUTO_TEST_CASE(request_frames_have_their_own_cap) {
  // 2 MiB is a valid reply size but no control request needs it: refused on the
  // announced length alone, before groved holds any of it.
  BOOST_CHECK_EQUAL(grove::control_limits{}.max_request_size, 1u << 20);
  int fd = connect_to(path);
  const unsigned char header[] = {0x00, 0x20, 0x00, 0x00};
  BOOST_REQUIRE(::write(fd, header, sizeof(header)) == sizeof(header));
  ::shutdown(fd, SHUT_WR);
  Response res;
  auto err = grove::framing::read_frame(fd, res);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  BOOST_CHECK(!res.ok());
  BOOST_CHECK_MESSAGE(res.error().rfind("too_large:", 0) == 0, res.error());
  BOOST_CHECK(sees_eof(fd));
  ::close(fd);
}

BOOST_AUTO_TEST_CASE(plugin_names_are_checked_by_the_server) {
  // What the profile refuses, the control socket refuses: a name reaches file names
  // (lib<name>.so, plugins/<name>/) and log lines.
  int fd = connect_to(path);
  const std::vector<std::string> bad = {"../../tmp/evil", "a/b", "x\nINFO control: forged",
                                        std::string("nul\0byte", 8), "", "tab\there",
                                        "\x1b[31mred", std::string(65, 'a'), "dot.so"};
  for (auto& name : bad) {
    for (int verb = 0; verb < 3; ++verb) {
      Request req;
      if (verb == 0)
        req.mutable_load()->set_name(name);
      else if (verb == 1)
        req.mutable_unload()->set_name(name);
      else
        req.mutable_reload()->set_name(name);
      auto res = call(fd, req);
      BOOST_CHECK(!res.ok());
      BOOST_CHECK_MESSAGE(res.error().rfind("invalid_config: invalid plugin name", 0) == 0,
                          res.error());
      BOOST_CHECK(res.error().find('\n') == std::string::npos);
    }
  }
  // Nothing reached the backend, and the refusals logged no raw control character.
  BOOST_CHECK(backend.get(backend.asked_).empty());
  for (auto& line : sink->last_formatted())
    BOOST_CHECK_MESSAGE(line.find("forged") == std::string::npos
                          || line.find("\\x0a") != std::string::npos,
                        line);
  // The longest valid name still passes.
  Request ok;
  ok.mutable_load()->set_name(std::string(64, 'a'));
  BOOST_CHECK(call(fd, ok).ok());
  BOOST_CHECK_EQUAL(backend.get(backend.asked_).size(), 1u);
  ::close(fd);
}

BOOST_AUTO_TEST_CASE(unreadable_peer_credentials_are_refused) {
  fail_peercred = true;
  int fd = connect_to(path);
  // Closed without a word: no request of this peer is ever read.
  BOOST_CHECK(sees_eof(fd));
  fail_peercred = false;
  ::close(fd);
  BOOST_CHECK(logged("cannot read peer credentials"));
  fd = connect_to(path);
  BOOST_CHECK(call(fd, status_request()).ok());
  ::close(fd);
}

BOOST_AUTO_TEST_CASE(second_server_on_live_path_refused) {
  fake_backend other;
  grove::control_server second{other, path, log};
  auto err = second.start();
  BOOST_REQUIRE(err);
  BOOST_CHECK_EQUAL(grove::describe(err),
                    "invalid_state: another groved is listening on " + path.string());
  second.stop();
  // The refused server left the live socket alone.
  BOOST_CHECK(fs::exists(path));
  int fd = connect_to(path);
  BOOST_CHECK(call(fd, status_request()).ok());
  ::close(fd);
}

BOOST_AUTO_TEST_CASE(stop_closes_connections_and_releases_subscriptions) {
  int idle = connect_to(path);
  int sub = connect_to(path);
  Request req;
  req.mutable_subscribe()->set_filter("#");
  BOOST_REQUIRE(call(sub, req).ok());
  // The idle connection is being served once it answers.
  BOOST_REQUIRE(call(idle, status_request()).ok());
  server->stop();
  BOOST_CHECK(backend.wait([&] { return backend.unsubscribes_ == 1; }));
  BOOST_CHECK(sees_eof(idle));
  BOOST_CHECK(sees_eof(sub));
  BOOST_CHECK(!fs::exists(path));
  server->stop(); // idempotent
  ::close(idle);
  ::close(sub);
}

BOOST_AUTO_TEST_CASE(finished_connections_are_reaped) {
  // A finished but never joined thread keeps its stack mapped, so without reaping the
  // address space grows by one stack per connection. With reaping, each new
  // connection thread reuses the stack (and malloc arena) of the previous one.
  auto baseline_threads = thread_count(); // the test's and the acceptor
  auto one_connection = [&] {
    int fd = connect_to(path);
    BOOST_REQUIRE(call(fd, status_request()).ok());
    ::close(fd);
    // Bounded poll until the connection thread has exited: the next accept then
    // finds it finished and joins it before starting another.
    auto until = std::chrono::steady_clock::now() + deadline;
    while (thread_count() > baseline_threads) {
      BOOST_REQUIRE(std::chrono::steady_clock::now() < until);
      std::this_thread::yield();
    }
  };
  for (int i = 0; i < 3; ++i) // warm up: stack cache and arenas exist
    one_connection();
  auto baseline_vm = vm_size_kb();
  constexpr int connections = 40; // below max_clients (64)
  for (int i = 0; i < connections; ++i)
    one_connection();
  auto vm = vm_size_kb();
  auto growth = vm > baseline_vm ? vm - baseline_vm : 0;
  BOOST_TEST_MESSAGE("address space growth " << growth << " KiB, stack "
                                             << default_stack_kb() << " KiB");
  BOOST_CHECK_LT(growth, default_stack_kb() * connections / 4);
}

BOOST_AUTO_TEST_SUITE_END()

// -- control_server limits -------------------------------------------------------

namespace {

/// Short timeouts and small bounds, so a test reaches them at once.
grove::control_limits tight_limits() {
  grove::control_limits limits;
  limits.max_clients = 4;
  limits.idle_timeout = 1000ms;
  limits.subscriber_queue_bytes = 1u << 20;
  limits.send_timeout = 300ms;
  return limits;
}

struct tight_fixture : server_fixture {
  tight_fixture() : server_fixture(tight_limits()) {
  }
};

/// The default idle timeout with room for only four connections.
struct four_clients_fixture : server_fixture {
  static grove::control_limits limits() {
    grove::control_limits l;
    l.max_clients = 4;
    return l;
  }
  four_clients_fixture() : server_fixture(limits()) {
  }
};

Request subscribe_request(const std::string& filter) {
  Request req;
  req.mutable_subscribe()->set_filter(filter);
  return req;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(server_limits, tight_fixture)

BOOST_AUTO_TEST_CASE(idle_connections_time_out) {
  int idle = connect_to(path);
  BOOST_CHECK(sees_eof(idle)); // bounded by connect_to's 20 s receive timeout
  ::close(idle);
  // Half a frame, then nothing: the same.
  int stalled = connect_to(path);
  const unsigned char partial[] = {0, 0, 0, 100, 1, 2};
  BOOST_REQUIRE(::write(stalled, partial, sizeof(partial)) == sizeof(partial));
  BOOST_CHECK(sees_eof(stalled));
  ::close(stalled);
  BOOST_CHECK(logged("idle for 1000 ms"));
  BOOST_CHECK(logged("request stalled"));
}

BOOST_AUTO_TEST_CASE(a_subscriber_that_stops_reading_is_bounded_then_closed) {
  // 20 MB for a subscriber that reads nothing: the server holds at most its byte
  // bound (plus what the socket buffers take), drops the rest, and hangs up once the
  // subscriber has taken nothing for send_timeout.
  int fd = connect_to(path);
  BOOST_REQUIRE(call(fd, subscribe_request("big/#")).ok());
  BOOST_REQUIRE(backend.wait([&] { return backend.subscribes_ == 1; }));
  constexpr int count = 200;
  Envelope msg;
  msg.set_topic("big/x");
  msg.set_payload(std::string(100 * 1024, 'p'));
  for (int i = 0; i < count; ++i)
    backend.deliver(msg);
  BOOST_REQUIRE_MESSAGE(backend.wait([&] { return backend.unsubscribes_ == 1; }),
                        "the blocked subscriber was never closed");
  BOOST_CHECK(logged_soon("blocked: read nothing for 300 ms"));
  // What reached the socket before the close: everything readable, then EOF (the
  // last frame may be cut short by the close).
  int received = 0;
  size_t bytes = 0;
  for (;;) {
    Response out;
    if (grove::framing::read_frame(fd, out))
      break;
    if (out.has_message_out()) {
      ++received;
      bytes += out.message_out().ByteSizeLong();
    }
  }
  ::close(fd);
  int sndbuf = 0;
  int rcvbuf = 0;
  socklen_t len = sizeof(int);
  int probe = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ::getsockopt(probe, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len);
  len = sizeof(int);
  ::getsockopt(probe, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &len);
  ::close(probe);
  auto bound = tight_limits().subscriber_queue_bytes + static_cast<size_t>(sndbuf)
               + static_cast<size_t>(rcvbuf) + msg.ByteSizeLong();
  BOOST_TEST_MESSAGE(received << " of " << count << " messages (" << bytes
                              << " bytes) reached the subscriber; bound " << bound);
  BOOST_CHECK_LT(received, count);
  BOOST_CHECK_LE(bytes, bound);
  // Every message is accounted for: sent in full, or dropped and counted.
  std::smatch m;
  bool found = false;
  for (auto& line : sink->last_formatted())
    if (std::regex_search(line, m, std::regex{"ended \\(blocked.*: (\\d+) sent, (\\d+) dropped"})) {
      found = true;
      auto sent = std::stoi(m[1]);
      auto dropped = std::stoi(m[2]);
      BOOST_CHECK_EQUAL(sent + dropped, count);
      BOOST_CHECK_GT(dropped, 0);
      BOOST_CHECK_EQUAL(sent, received); // a frame cut short by the close counts as dropped
    }
  BOOST_CHECK_MESSAGE(found, "no 'ended (blocked...' line in the log");
}

BOOST_AUTO_TEST_CASE(a_subscriber_that_reads_gets_everything) {
  // The bound is on what is held, not on throughput: a reading subscriber loses
  // nothing even when the total far exceeds the bound.
  int fd = connect_to(path);
  BOOST_REQUIRE(call(fd, subscribe_request("big/#")).ok());
  BOOST_REQUIRE(backend.wait([&] { return backend.subscribes_ == 1; }));
  constexpr int count = 40; // 4 MB through a 1 MiB bound
  Envelope msg;
  msg.set_topic("big/x");
  msg.set_payload(std::string(100 * 1024, 'p'));
  int received = 0;
  for (int i = 0; i < count; ++i) {
    backend.deliver(msg);
    Response out;
    auto err = grove::framing::read_frame(fd, out);
    BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
    BOOST_REQUIRE(out.has_message_out());
    ++received;
  }
  BOOST_CHECK_EQUAL(received, count);
  BOOST_CHECK_EQUAL(backend.get(backend.unsubscribes_), 0);
  ::close(fd);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(server_connection_limit, four_clients_fixture)

BOOST_AUTO_TEST_CASE(idle_connections_never_lock_out_grovectl) {
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i)
    idle.push_back(connect_to(path));
  // All four slots hold idle connections (30 s timeout): grovectl still gets in, in
  // place of the one idle longest.
  auto r = grovectl({"--socket", path.string(), "status", "--json"});
  BOOST_CHECK_MESSAGE(r.exit_code == 0, r.err);
  BOOST_CHECK(sees_eof(idle[0]));
  BOOST_CHECK(logged("to make room for"));
  for (int fd : idle)
    ::close(fd);
}

BOOST_AUTO_TEST_CASE(busy_connections_make_the_limit_real) {
  std::vector<int> subs;
  for (int i = 0; i < 4; ++i) {
    subs.push_back(connect_to(path));
    BOOST_REQUIRE(call(subs.back(), subscribe_request("s/" + std::to_string(i))).ok());
  }
  // Four subscriptions in progress: nothing to evict, so the fifth is refused.
  int fifth = connect_to(path);
  Response res;
  auto err = grove::framing::read_frame(fifth, res);
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  BOOST_CHECK(!res.ok());
  BOOST_CHECK_EQUAL(res.error(), "too many control connections");
  BOOST_CHECK(sees_eof(fifth));
  ::close(fifth);
  // One subscription ends: its slot is free again.
  ::close(subs.back());
  subs.pop_back();
  BOOST_REQUIRE(backend.wait([&] { return backend.unsubscribes_ == 1; }));
  auto r = grovectl({"--socket", path.string(), "plugins"});
  BOOST_CHECK_MESSAGE(r.exit_code == 0, r.err);
  for (int fd : subs)
    ::close(fd);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(server_setup)

BOOST_AUTO_TEST_CASE(stale_socket_file_replaced) {
  auto dir = make_temp_dir();
  auto path = dir / "control.sock";
  // A socket file left behind by a crashed groved: bound, then closed.
  {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    ::close(fd);
  }
  BOOST_REQUIRE(fs::is_socket(path));
  fake_backend backend;
  grove::control_server server{backend, path, nullptr};
  auto err = server.start();
  BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
  int fd = connect_to(path);
  BOOST_CHECK(call(fd, status_request()).ok());
  ::close(fd);
  server.stop();
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(regular_file_is_not_replaced) {
  auto dir = make_temp_dir();
  auto path = dir / "control.sock";
  { std::ofstream{path} << "keep me"; }
  fake_backend backend;
  grove::control_server server{backend, path, nullptr};
  auto err = server.start();
  BOOST_CHECK(err);
  BOOST_CHECK(fs::is_regular_file(path));
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()

// -- grovectl --------------------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(grovectl_cli, server_fixture)

BOOST_AUTO_TEST_CASE(status_json) {
  for (auto args : {std::vector<std::string>{"--socket", path.string(), "status",
                                             "--json"},
                    std::vector<std::string>{"--json", "status"}}) {
    auto r = grovectl(args, {"GROVE_CONTROL_SOCKET=" + path.string()});
    BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    auto doc = nlohmann::json::parse(r.out);
    BOOST_CHECK_EQUAL(doc["pid"].get<int>(), 4242);
    BOOST_CHECK_EQUAL(doc["bus"]["published"].get<uint64_t>(), 11u);
    BOOST_CHECK_EQUAL(doc["bus"]["dropped"].get<uint64_t>(), 3u);
    BOOST_CHECK_EQUAL(doc["details"]["heartbeat.beating"].get<std::string>(),
                      "1000 ms on grove/heartbeat");
    // Metrics are JSON numbers, never text to parse.
    auto& metrics = doc["plugins"][0]["metrics"];
    BOOST_REQUIRE_EQUAL(metrics.size(), 3u);
    BOOST_CHECK(metrics[0]["value"].is_number_integer());
    BOOST_CHECK_EQUAL(metrics[0]["name"].get<std::string>(), "beats");
    BOOST_CHECK_EQUAL(metrics[0]["kind"].get<std::string>(), "counter");
    BOOST_CHECK_EQUAL(metrics[0]["value"].get<int64_t>(), 42);
    BOOST_CHECK_EQUAL(metrics[1]["labels"]["device"].get<std::string>(), "A");
    BOOST_CHECK_EQUAL(metrics[1]["value"].get<int64_t>(), 2);
    BOOST_CHECK_EQUAL(metrics[2]["kind"].get<std::string>(), "gauge");
    BOOST_CHECK_EQUAL(metrics[2]["value"].get<int64_t>(), -3);
    BOOST_REQUIRE_EQUAL(doc["plugins"].size(), 2u);
    BOOST_CHECK_EQUAL(doc["plugins"][0]["queue_depth"].get<uint64_t>(), 3u);
    BOOST_CHECK_EQUAL(doc["plugins"][0]["queue_capacity"].get<uint64_t>(), 100u);
    BOOST_CHECK_EQUAL(doc["plugins"][0]["dropped"].get<uint64_t>(), 9u);
  }
}

BOOST_AUTO_TEST_CASE(status_text_and_plugins_table) {
  // Default path: ${GROVE_WRITE_DIR}/run/control.sock.
  auto r = grovectl({"status"}, {"GROVE_WRITE_DIR=" + dir.string()});
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  BOOST_CHECK(r.out.find("pid 4242, up 1h 2m 3s") != std::string::npos);
  BOOST_CHECK(r.out.find("11 published, 22 delivered, 3 dropped, 4 unrouted")
              != std::string::npos);
  BOOST_CHECK(r.out.find("heartbeat.beating: 1000 ms on grove/heartbeat")
              != std::string::npos);
  BOOST_CHECK(r.out.find("\nmetrics:\n") != std::string::npos);
  BOOST_CHECK(std::regex_search(r.out, std::regex{"\n  heartbeat beats +42\n"}));
  BOOST_CHECK(std::regex_search(r.out, std::regex{"\n  heartbeat denied\\{device=\"A\"\\} +2\n"}));
  BOOST_CHECK(std::regex_search(r.out, std::regex{"\n  heartbeat backlog.change +-3\n"}));
  r = grovectl({"--socket", path.string(), "plugins"});
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  BOOST_TEST_MESSAGE(r.out);
  BOOST_CHECK(r.out.find("NAME") == 0);
  BOOST_CHECK(r.out.find("3/100") != std::string::npos);
  BOOST_CHECK(r.out.find("2024-01-02T03:04:05Z ok") != std::string::npos);
  BOOST_CHECK(r.out.find("shadow: init_failed: database is locked")
              != std::string::npos);
}

BOOST_AUTO_TEST_CASE(pub_load_and_errors) {
  auto r = grovectl({"--socket", path.string(), "pub", "sensors/temp", "{\"t\":21}"});
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  BOOST_CHECK_EQUAL(r.out, "published to sensors/temp: delivered 2, dropped 1\n");
  {
    std::lock_guard<std::mutex> guard{backend.mtx_};
    BOOST_REQUIRE_EQUAL(backend.published_.size(), 1u);
    BOOST_CHECK_EQUAL(backend.published_[0].payload(), "{\"t\":21}");
    BOOST_CHECK_EQUAL(backend.published_[0].content_type(), "application/json");
  }
  // --json: the counts as numbers, taken from the reply's fields.
  r = grovectl({"--socket", path.string(), "--json", "pub", "sensors/temp", "x"});
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  BOOST_CHECK_EQUAL(r.out,
                    "{\"ok\":true,\"topic\":\"sensors/temp\",\"delivered\":2,\"dropped\":1}\n");
  r = grovectl({"--socket", path.string(), "load", "missing"});
  BOOST_CHECK_EQUAL(r.exit_code, 1);
  BOOST_CHECK_EQUAL(r.err, "grovectl: load_failed: cannot open libmissing.so\n");
  r = grovectl({"--socket", path.string(), "reload", "heartbeat", "--path", "x.so"});
  BOOST_CHECK_EQUAL(r.exit_code, 0);
  BOOST_CHECK_EQUAL(r.out, "reloaded heartbeat 1.0.0 -> 1.1.0\n");
  {
    // Relative paths are made absolute: groved has another working directory.
    std::lock_guard<std::mutex> guard{backend.mtx_};
    BOOST_CHECK_EQUAL(backend.last_reload_path_,
                      (fs::current_path() / "x.so").string());
  }
  r = grovectl({"--socket", path.string()});
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  r = grovectl({"--socket", path.string(), "load"});
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  r = grovectl({"status", "--help"});
  BOOST_CHECK_EQUAL(r.exit_code, 0);
  BOOST_CHECK(!r.out.empty());
}

BOOST_AUTO_TEST_CASE(plugin_names_are_checked_by_grovectl) {
  for (auto verb : {"load", "unload", "reload"}) {
    auto r = grovectl({"--socket", path.string(), verb, "../../tmp/evil"});
    BOOST_CHECK_EQUAL(r.exit_code, 2);
    BOOST_CHECK_EQUAL(r.err, "grovectl: invalid_config: invalid plugin name "
                             "\"../../tmp/evil\": plugin names are 1-64 characters of "
                             "[A-Za-z0-9_-]\n");
    r = grovectl({"--socket", path.string(), verb, "x\nforged"});
    BOOST_CHECK_EQUAL(r.exit_code, 2);
    BOOST_CHECK(r.err.find("\"x\\x0aforged\"") != std::string::npos);
  }
  // A usage error: the daemon was never asked.
  BOOST_CHECK(backend.get(backend.asked_).empty());
  auto r = grovectl({"--socket", path.string(), "load", "good-name_2"});
  BOOST_CHECK_EQUAL(r.exit_code, 0);
  BOOST_CHECK_EQUAL(backend.get(backend.asked_).size(), 1u);
}

BOOST_AUTO_TEST_CASE(pub_not_delivered_qos_and_properties) {
  // No subscriber took it: the counts, and exit 1 (not a success).
  auto r = grovectl({"--socket", path.string(), "pub", "nobody/home", "x"});
  BOOST_CHECK_EQUAL(r.exit_code, 1);
  BOOST_CHECK_EQUAL(r.out, "published to nobody/home: delivered 0, dropped 0\n");
  BOOST_CHECK_EQUAL(r.err, "grovectl: not delivered: no subscriber for nobody/home\n");
  r = grovectl({"--socket", path.string(), "--json", "pub", "nobody/home", "x"});
  BOOST_CHECK_EQUAL(r.exit_code, 1);
  BOOST_CHECK_EQUAL(r.out,
                    "{\"ok\":false,\"topic\":\"nobody/home\",\"delivered\":0,\"dropped\":0}\n");
  // --qos and --user-property reach the envelope.
  r = grovectl({"--socket", path.string(), "pub", "sensors/q", "x", "--qos", "1",
                "--user-property", "unit=C", "--user-property", "site=a=b"});
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  {
    std::lock_guard<std::mutex> guard{backend.mtx_};
    BOOST_REQUIRE(!backend.published_.empty());
    const auto& msg = backend.published_.back();
    BOOST_CHECK_EQUAL(msg.topic(), "sensors/q");
    BOOST_CHECK_EQUAL(msg.qos(), 1u);
    BOOST_REQUIRE_EQUAL(msg.user_properties().size(), 2u);
    BOOST_CHECK_EQUAL(msg.user_properties().at("unit"), "C");
    BOOST_CHECK_EQUAL(msg.user_properties().at("site"), "a=b");
  }
  // Out of range or malformed: usage errors, nothing sent.
  size_t sent = 0;
  {
    std::lock_guard<std::mutex> guard{backend.mtx_};
    sent = backend.published_.size();
  }
  BOOST_CHECK_EQUAL(grovectl({"--socket", path.string(), "pub", "a", "x", "--qos", "2"})
                      .exit_code,
                    2);
  BOOST_CHECK_EQUAL(grovectl({"--socket", path.string(), "pub", "a", "x",
                              "--user-property", "novalue"})
                      .exit_code,
                    2);
  std::lock_guard<std::mutex> guard{backend.mtx_};
  BOOST_CHECK_EQUAL(backend.published_.size(), sent);
}

BOOST_AUTO_TEST_CASE(sub_json) {
  Envelope text;
  text.set_topic("sensors/a");
  text.set_source("heartbeat");
  text.set_payload("héllo");
  text.set_content_type("text/plain");
  text.set_id(7);
  text.set_timestamp_ns(123);
  text.set_qos(1);
  (*text.mutable_user_properties())["unit"] = "C";
  Envelope binary;
  binary.set_topic("sensors/b");
  binary.set_payload(std::string("\xff\x00\x01", 3));
  // Boost.Test is not thread-safe: everything runs on this thread.
  auto r = grovectl({"--socket", path.string(), "sub", "sensors/#", "--count", "2",
                     "--json"},
                    {}, [&](pid_t) {
                      BOOST_REQUIRE(
                        backend.wait([&] { return backend.subscribes_ == 1; }));
                      backend.deliver(text);
                      backend.deliver(binary);
                    });
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  auto nl = r.out.find('\n');
  BOOST_REQUIRE(nl != std::string::npos);
  auto first = nlohmann::json::parse(r.out.substr(0, nl));
  auto second = nlohmann::json::parse(r.out.substr(nl + 1));
  BOOST_CHECK_EQUAL(first["topic"].get<std::string>(), "sensors/a");
  BOOST_CHECK_EQUAL(first["source"].get<std::string>(), "heartbeat");
  BOOST_CHECK_EQUAL(first["payload"].get<std::string>(), "héllo");
  BOOST_CHECK_EQUAL(first["id"].get<uint64_t>(), 7u);
  BOOST_CHECK_EQUAL(first["timestamp_ns"].get<int64_t>(), 123);
  BOOST_CHECK_EQUAL(first["qos"].get<int>(), 1);
  BOOST_CHECK_EQUAL(first["user_properties"]["unit"].get<std::string>(), "C");
  BOOST_CHECK(!second.contains("user_properties"));
  BOOST_CHECK(!second.contains("payload"));
  BOOST_CHECK_EQUAL(second["payload_base64"].get<std::string>(), "/wAB");
  // grovectl hung up after two messages: the subscription is released.
  BOOST_CHECK(backend.wait([&] { return backend.unsubscribes_ == 1; }));
}

BOOST_AUTO_TEST_CASE(sub_text) {
  auto r = grovectl({"--socket", path.string(), "sub", "#", "-n", "2"}, {},
                    [&](pid_t) {
                      BOOST_REQUIRE(
                        backend.wait([&] { return backend.subscribes_ == 1; }));
                      Envelope msg;
                      msg.set_topic("a/b");
                      msg.set_payload("hello world");
                      backend.deliver(msg);
                      msg.set_topic("a/c");
                      msg.set_payload(std::string("\xff\x00\x01", 3));
                      backend.deliver(msg);
                    });
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  BOOST_CHECK_EQUAL(r.out, "a/b hello world\na/c base64:/wAB\n");
}

BOOST_AUTO_TEST_CASE(sub_ctrl_c_exits_cleanly) {
  auto r = grovectl({"--socket", path.string(), "sub", "#"}, {}, [&](pid_t pid) {
    BOOST_REQUIRE(backend.wait([&] { return backend.subscribes_ == 1; }));
    ::kill(pid, SIGINT);
  });
  BOOST_CHECK_EQUAL(r.exit_code, 0);
  BOOST_CHECK(r.err.empty());
  BOOST_CHECK(r.out.empty());
  BOOST_CHECK(backend.wait([&] { return backend.unsubscribes_ == 1; }));
}

BOOST_AUTO_TEST_CASE(daemon_not_running) {
  auto missing = dir / "nope" / "control.sock";
  auto r = grovectl({"--socket", missing.string(), "status"});
  BOOST_CHECK_EQUAL(r.exit_code, 3);
  BOOST_CHECK_EQUAL(r.err, "grovectl: groved is not running (no control socket at "
                             + missing.string() + ")\n");
  BOOST_CHECK(r.out.empty());
  // A stale socket file nobody listens on.
  server->stop();
  auto stale = dir / "stale.sock";
  {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, stale.c_str(), sizeof(addr.sun_path) - 1);
    BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    ::close(fd);
  }
  r = grovectl({"plugins"}, {"GROVE_CONTROL_SOCKET=" + stale.string()});
  BOOST_CHECK_EQUAL(r.exit_code, 3);
  BOOST_CHECK(r.err.rfind("grovectl: groved is not running", 0) == 0);
  BOOST_CHECK_EQUAL(std::count(r.err.begin(), r.err.end(), '\n'), 1);
}

BOOST_AUTO_TEST_SUITE_END()
