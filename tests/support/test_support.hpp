#pragma once

// Helpers shared by every test suite and the benchmarks that start real processes: a
// scratch directory, loopback ports, bounded polling, and the generated README tables.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
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

/// A loopback TCP port nobody listened on a moment ago (bind to 0, read it back).
inline uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (fd >= 0)
      ::close(fd);
    throw std::runtime_error("cannot bind a loopback port");
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
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

/// The Mosquitto broker executable: $MOSQUITTO, else the first of the usual places.
inline std::string mosquitto_path() {
  if (const char* env = std::getenv("MOSQUITTO"))
    return env;
  for (const char* p : {"/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"})
    if (::access(p, X_OK) == 0)
      return p;
  return "mosquitto";
}

/// Polls `f` every 10 ms until it is true or `limit` passed; returns its last value.
template <class F>
bool wait_until(F f, std::chrono::milliseconds limit = std::chrono::seconds{10}) {
  auto deadline = std::chrono::steady_clock::now() + limit;
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

} // namespace grove::test
