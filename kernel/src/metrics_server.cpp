// The Prometheus endpoint: a small HTTP/1.1 server on one thread. No library: the
// Debian options (prometheus-cpp with civetweb, cpp-httplib, Boost.Beast) bring a
// general web server, threads per connection or a large dependency for one fixed GET;
// this is ~250 lines whose limits (request size, time, connections) are easy to audit.

#include "grove/kernel/metrics_server.hpp"

#include <cerrno>
#include <cstring>
#include <list>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/logger.h>

#include "grove/errors.hpp"

namespace grove {

namespace {

using clock_type = std::chrono::steady_clock;

/// One client: reads a request, then writes one answer and is closed.
struct connection {
  int fd = -1;
  std::string in;
  std::string out;
  size_t sent = 0;
  bool answering = false;
  clock_type::time_point deadline;
};

std::string http_response(const char* status, std::string_view content_type,
                          std::string_view body, std::string_view extra = {}) {
  std::string r = "HTTP/1.1 ";
  r += status;
  r += "\r\nContent-Type: ";
  r += content_type;
  r += "\r\nContent-Length: ";
  r += std::to_string(body.size());
  r += "\r\nConnection: close\r\n";
  r += extra;
  r += "\r\n";
  r += body;
  return r;
}

std::string plain(const char* status, std::string_view extra = {}) {
  return http_response(status, "text/plain; charset=utf-8", std::string{status} + "\n",
                       extra);
}

} // namespace

metrics_request parse_metrics_request(std::string_view in) noexcept {
  if (in.find("\r\n\r\n") == std::string_view::npos)
    return metrics_request::too_large;
  auto line = in.substr(0, in.find("\r\n"));
  auto sp1 = line.find(' ');
  auto sp2 = line.find(' ', sp1 == line.npos ? 0 : sp1 + 1);
  if (sp1 == line.npos || sp2 == line.npos || !line.substr(sp2 + 1).starts_with("HTTP/1."))
    return metrics_request::bad_request;
  auto method = line.substr(0, sp1);
  auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  target = target.substr(0, target.find('?'));
  if (method != "GET" && method != "HEAD")
    return metrics_request::bad_method;
  if (target != "/metrics")
    return metrics_request::not_found;
  return method == "HEAD" ? metrics_request::head : metrics_request::get;
}

struct metrics_server::impl {
  std::string bind;
  uint16_t port = 0;
  std::function<std::string()> scrape;
  std::shared_ptr<spdlog::logger> log;
  metrics_server_limits limits;
  int listen_fd = -1;
  int wake_fd = -1;
  std::thread thread;
  std::list<connection> conns;

  ~impl() {
    close_all();
  }

  void close_all() {
    for (auto& c : conns)
      ::close(c.fd);
    conns.clear();
    if (listen_fd >= 0)
      ::close(listen_fd);
    if (wake_fd >= 0)
      ::close(wake_fd);
    listen_fd = wake_fd = -1;
  }

  caf::error open() {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    addrinfo* res = nullptr;
    auto service = std::to_string(port);
    if (int rc = getaddrinfo(bind.c_str(), service.c_str(), &hints, &res); rc != 0)
      return make_error(errc::invalid_config,
                        "metrics endpoint: bad address '" + bind + "': " + gai_strerror(rc));
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard{res, freeaddrinfo};
    listen_fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd < 0)
      return make_error(errc::system_error,
                        std::string{"metrics endpoint: socket: "} + strerror(errno));
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(listen_fd, res->ai_addr, res->ai_addrlen) != 0
        || ::listen(listen_fd, 16) != 0)
      return make_error(errc::system_error, "metrics endpoint: cannot listen on " + bind
                                              + ":" + service + ": " + strerror(errno));
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    getsockname(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.ss_family == AF_INET6
                   ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                   : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd < 0)
      return make_error(errc::system_error,
                        std::string{"metrics endpoint: eventfd: "} + strerror(errno));
    return {};
  }

  void accept_all() {
    for (;;) {
      int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0)
        return; // EAGAIN, or an error that poll() will report again
      if (conns.size() >= limits.max_connections) {
        auto busy = plain("503 Service Unavailable", "Retry-After: 1\r\n");
        [[maybe_unused]] auto n = ::send(fd, busy.data(), busy.size(), MSG_NOSIGNAL);
        ::close(fd);
        log->debug("metrics endpoint: connection refused, {} open", conns.size());
        continue;
      }
      connection c;
      c.fd = fd;
      c.deadline = clock_type::now() + limits.timeout;
      conns.push_back(std::move(c));
    }
  }

  // Decides the answer once the request head is complete (or too large).
  void answer(connection& c) {
    c.answering = true;
    auto kind = parse_metrics_request(c.in);
    switch (kind) {
      case metrics_request::too_large:
        c.out = plain("431 Request Header Fields Too Large");
        return;
      case metrics_request::bad_request:
        c.out = plain("400 Bad Request");
        return;
      case metrics_request::bad_method:
        c.out = plain("405 Method Not Allowed", "Allow: GET, HEAD\r\n");
        return;
      case metrics_request::not_found:
        c.out = plain("404 Not Found");
        return;
      case metrics_request::get:
      case metrics_request::head:
        break;
    }
    std::string body;
    try {
      body = scrape();
    } catch (const std::exception& e) {
      log->error("metrics endpoint: scrape failed: {}", e.what());
      c.out = plain("500 Internal Server Error");
      return;
    }
    c.out = http_response("200 OK", "text/plain; version=0.0.4; charset=utf-8", body);
    if (kind == metrics_request::head)
      c.out.resize(c.out.size() - body.size());
  }

  // Returns false when the connection is done (answered, closed or broken).
  bool on_ready(connection& c, short revents) {
    if (!c.answering) {
      if ((revents & (POLLIN | POLLHUP | POLLERR)) == 0)
        return true;
      char buf[4096];
      auto room = limits.max_request + 1 - c.in.size();
      auto n = ::recv(c.fd, buf, std::min(room, sizeof(buf)), 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        return false;
      if (n > 0)
        c.in.append(buf, static_cast<size_t>(n));
      if (c.in.find("\r\n\r\n") == std::string::npos && c.in.size() <= limits.max_request)
        return true;
      answer(c);
    }
    while (c.sent < c.out.size()) {
      auto n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
      if (n < 0)
        return errno == EAGAIN || errno == EINTR;
      c.sent += static_cast<size_t>(n);
    }
    return false;
  }

  void run() {
    std::vector<pollfd> fds;
    for (;;) {
      fds.clear();
      fds.push_back({wake_fd, POLLIN, 0});
      fds.push_back({listen_fd, POLLIN, 0});
      auto now = clock_type::now();
      auto next = now + std::chrono::hours{1};
      for (auto& c : conns) {
        fds.push_back({c.fd, static_cast<short>(c.answering ? POLLOUT : POLLIN), 0});
        next = std::min(next, c.deadline);
      }
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - now);
      int rc = ::poll(fds.data(), fds.size(), static_cast<int>(wait.count()) + 1);
      if (rc < 0 && errno != EINTR) {
        log->error("metrics endpoint: poll: {}", strerror(errno));
        return;
      }
      if ((fds[0].revents & POLLIN) != 0)
        return;
      // Connections first: accept_all() appends, which would shift the indexes.
      size_t i = 2;
      now = clock_type::now();
      for (auto it = conns.begin(); it != conns.end(); ++i) {
        bool keep = fds[i].revents == 0 || on_ready(*it, fds[i].revents);
        if (keep && now >= it->deadline) {
          log->debug("metrics endpoint: client too slow, dropped");
          keep = false;
        }
        if (keep) {
          ++it;
        } else {
          ::close(it->fd);
          it = conns.erase(it);
        }
      }
      if ((fds[1].revents & POLLIN) != 0)
        accept_all();
    }
  }
};

metrics_server::metrics_server(std::string bind, uint16_t port,
                               std::function<std::string()> scrape,
                               std::shared_ptr<spdlog::logger> log,
                               metrics_server_limits limits)
  : impl_(std::make_unique<impl>()) {
  impl_->bind = std::move(bind);
  impl_->port = port;
  impl_->scrape = std::move(scrape);
  impl_->log = std::move(log);
  impl_->limits = limits;
}

metrics_server::~metrics_server() {
  stop();
}

caf::error metrics_server::start() {
  if (auto err = impl_->open()) {
    impl_->close_all();
    return err;
  }
  impl_->thread = std::thread{[this] { impl_->run(); }};
  return {};
}

void metrics_server::stop() {
  if (!impl_->thread.joinable())
    return;
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(impl_->wake_fd, &one, sizeof(one));
  impl_->thread.join();
  impl_->close_all();
}

uint16_t metrics_server::port() const noexcept {
  return impl_->port;
}

} // namespace grove
