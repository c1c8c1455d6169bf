#pragma once

// Helpers shared by every test suite and the benchmarks that start real processes: a
// scratch directory, loopback ports, bounded polling, and the generated README tables.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace grove::test {

/// A fresh directory under $TMPDIR, removed with everything in it at the end.
class temp_dir {
public:
  temp_dir() {
    auto base = std::filesystem::temp_directory_path() / "grove-test-XXXXXX";
    std::string tmpl = base.string();
    if (mkdtemp(tmpl.data()) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }

  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }

  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  /// The directory.
  const std::filesystem::path& path() const {
    return path_;
  }

  /// Writes `text` to `name` inside the directory and returns its path.
  std::filesystem::path write(const std::string& name, const std::string& text) const {
    auto p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream out{p};
    out << text;
    return p;
  }

private:
  std::filesystem::path path_;
};

/// A loopback TCP port nobody uses right now, chosen below the kernel's ephemeral range
/// (as tests/support/free_port.py): a port from bind-to-0 is one the kernel may also give
/// a client's outgoing connection before the test's server binds it.
inline uint16_t free_port() {
  auto try_bind = [](uint16_t port) -> int {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
      return -1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd);
      return -1;
    }
    socklen_t len = sizeof(addr);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
  };
  int low = 32768;
  if (std::ifstream range{"/proc/sys/net/ipv4/ip_local_port_range"}; range)
    range >> low;
  if (low > 12000) {
    std::random_device seed;
    std::mt19937 gen{seed()};
    std::uniform_int_distribution<int> pick{10000, low - 1};
    for (int i = 0; i < 200; ++i)
      if (auto port = try_bind(static_cast<uint16_t>(pick(gen))); port > 0)
        return static_cast<uint16_t>(port);
  }
  if (auto port = try_bind(0); port > 0)
    return static_cast<uint16_t>(port);
  throw std::runtime_error("cannot bind a loopback port");
}

/// True if something accepts TCP connections on the loopback port.
inline bool port_open(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

/// A TCP connection to the loopback port; throws if nobody listens.
inline int connect_loopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (fd >= 0)
      ::close(fd);
    throw std::runtime_error("cannot connect to port " + std::to_string(port));
  }
  return fd;
}

/// Sends all of `data` (stops early if the peer closed).
inline void send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    auto n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0)
      return;
    data.remove_prefix(static_cast<size_t>(n));
  }
}

/// Reads until the peer closes, at most `limit`.
inline std::string read_to_eof(int fd,
                               std::chrono::milliseconds limit = std::chrono::seconds{20}) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0)
      continue;
    char buf[65536];
    auto n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0)
      break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

/// An HTTP/1.1 answer (the server closes after it).
struct http_reply {
  int status = 0;
  std::string head;
  std::string body;
};

/// Sends `request` as is to the loopback port and reads the answer.
inline http_reply http_exchange(uint16_t port, const std::string& request) {
  int fd = connect_loopback(port);
  send_all(fd, request);
  auto raw = read_to_eof(fd);
  ::close(fd);
  http_reply r;
  auto end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.1 ", 0) != 0 || end == std::string::npos)
    return r;
  r.status = std::stoi(raw.substr(9, 3));
  r.head = raw.substr(0, end);
  r.body = raw.substr(end + 4);
  return r;
}

/// The Mosquitto broker executable: $MOSQUITTO, else the first of the usual places.
inline std::string mosquitto_path() {
  if (const char* env = std::getenv("MOSQUITTO"))
    return env;
  for (const char* p : {"/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"})
    if (::access(p, X_OK) == 0)
      return p;
  return "mosquitto";
}

/// `limit` times GROVE_TEST_TIMEOUT_SCALE (default 1): the sanitizer builds set it, as
/// instrumented code runs several times slower. Only bounds of waits are scaled.
inline std::chrono::milliseconds scaled(std::chrono::milliseconds limit) {
  static const long factor = [] {
    auto env = std::getenv("GROVE_TEST_TIMEOUT_SCALE");
    long f = env != nullptr ? std::atol(env) : 1;
    return f > 0 ? f : 1L;
  }();
  return limit * factor;
}

/// Polls `f` every 10 ms until it is true or `limit` (scaled()) passed; returns its
/// last value.
template <class F>
bool wait_until(F f, std::chrono::milliseconds limit = std::chrono::seconds{10}) {
  auto deadline = std::chrono::steady_clock::now() + scaled(limit);
  for (;;) {
    if (f())
      return true;
    if (std::chrono::steady_clock::now() > deadline)
      return f();
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
}

/// The lines of a README between `<!-- config-table:begin -->` and
/// `<!-- config-table:end -->` (the generated configuration table), or "<no markers>".
inline std::string readme_config_table(const std::string& file) {
  std::ifstream in{file};
  std::string line;
  std::string table;
  bool inside = false;
  bool found = false;
  while (std::getline(in, line)) {
    if (line.find("<!-- config-table:end -->") != std::string::npos)
      return table;
    if (inside)
      table += line + "\n";
    if (line.find("<!-- config-table:begin -->") != std::string::npos)
      inside = found = true;
  }
  return found ? table : std::string{"<no markers>"};
}

/// A forked child that reports to the test through a pipe (e.g. a writer to be killed
/// with SIGKILL mid-way, or a second process opening a locked file). The child runs
/// `body(fd)`, writing its report to `fd` (see report()), then _exit(0)s; it must not
/// use Boost.Test. The destructor kills and reaps a child still running.
class reporting_child {
public:
  /// Forks and runs `body(fd)` in the child.
  template <class F>
  explicit reporting_child(F body) {
    int fds[2];
    if (::pipe(fds) != 0)
      throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ < 0)
      throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::close(fds[0]);
      body(fds[1]);
      ::_exit(0);
    }
    ::close(fds[1]);
    fd_ = fds[0];
  }

  ~reporting_child() {
    kill_and_wait();
    ::close(fd_);
  }

  reporting_child(const reporting_child&) = delete;
  reporting_child& operator=(const reporting_child&) = delete;

  /// Reads until `done(everything read so far)` holds, the child closes the pipe, or
  /// nothing arrives for `idle`; returns everything read so far.
  template <class Pred>
  const std::string& read_until(Pred done, std::chrono::milliseconds idle = std::chrono::seconds{60}) {
    pollfd pfd{fd_, POLLIN, 0};
    while (!done(text_)) {
      if (::poll(&pfd, 1, static_cast<int>(idle.count())) <= 0)
        break;
      char buf[512];
      auto n = ::read(fd_, buf, sizeof(buf));
      if (n <= 0)
        break;
      text_.append(buf, static_cast<size_t>(n));
    }
    return text_;
  }

  /// The first line the child writes, without the newline (empty if none in time).
  std::string read_line(std::chrono::milliseconds idle = std::chrono::seconds{60}) {
    auto& text = read_until([](const std::string& t) { return t.find('\n') != std::string::npos; },
                            idle);
    auto end = text.find('\n');
    return end == std::string::npos ? std::string{} : text.substr(0, end);
  }

  /// Sends SIGKILL unless the child was reaped already, reaps it, and returns its wait
  /// status (WIFSIGNALED if it was still running).
  int kill_and_wait() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL); // harmless if it exited: it stays ours until reaped
      ::waitpid(pid_, &status_, 0);
      pid_ = -1;
    }
    return status_;
  }

  /// Writes `text` to the test; for the child's `body`.
  static void report(int fd, const std::string& text) {
    [[maybe_unused]] auto n = ::write(fd, text.data(), text.size());
  }

private:
  pid_t pid_ = -1;
  int fd_ = -1;
  int status_ = 0;
  std::string text_;
};

} // namespace grove::test
