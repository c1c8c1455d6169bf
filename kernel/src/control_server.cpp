// The control socket: a Unix stream socket serving proto/control.proto to grovectl.
//
// Threads: one acceptor (poll() on the listening socket, a stop eventfd and a reap
// eventfd) and one thread per connection. stop() signals the stop eventfd, joins the
// acceptor, shuts every client socket down and joins every client thread. A finished
// client thread signals the reap eventfd so the acceptor joins it right away; a
// long-running daemon never accumulates dead threads. A client socket is closed only
// after its thread was joined, so shutdown() from stop() never hits a reused fd.
//
// Limits (control_limits): a connection waits for a request at most idle_timeout (and
// a half-sent frame stalls at most that long: SO_RCVTIMEO); at max_clients the
// acceptor evicts the connection waiting longest (shutdown, its thread leaves); a
// reply or subscribed message nobody takes for send_timeout (SO_SNDTIMEO) ends the
// connection; a subscription holds at most its byte and message bounds.

#include "grove/kernel/control.hpp"
#include "grove/rpc.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <caf/atom.hpp>
#include <spdlog/logger.h>
#include <spdlog/sinks/null_sink.h>

#include "grove/errors.hpp"
#include "grove/kernel/plugin_name.hpp"
#include "grove/topic.hpp"

namespace grove {

control_backend::~control_backend() = default;

caf::expected<Envelope> control_backend::request(Envelope, std::chrono::milliseconds) {
  return make_error(errc::unsupported, "this backend sends no requests");
}

namespace {

std::string errno_text(const char* what, int code = errno) {
  return std::string{what} + ": " + std::strerror(code);
}

bool has_code(const caf::error& err, errc code) {
  return err && err.compare(static_cast<uint8_t>(code), caf::atom("grove")) == 0;
}

void close_fd(int& fd) noexcept {
  if (fd >= 0) {
    ::close(fd);
    fd = -1;
  }
}

void signal_eventfd(int fd) noexcept {
  uint64_t one = 1;
  // EFD_NONBLOCK: the counter cannot realistically overflow, and a failed signal only
  // means the waiter is already awake.
  [[maybe_unused]] auto rc = ::write(fd, &one, sizeof(one));
}

void drain_eventfd(int fd) noexcept {
  uint64_t n;
  [[maybe_unused]] auto rc = ::read(fd, &n, sizeof(n));
}

caf::expected<sockaddr_un> make_address(const std::filesystem::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const auto& str = path.native();
  if (str.empty() || str.size() >= sizeof(addr.sun_path))
    return make_error(errc::system_error,
                      "control socket path is empty or longer than "
                        + std::to_string(sizeof(addr.sun_path) - 1)
                        + " bytes: " + str);
  std::memcpy(addr.sun_path, str.data(), str.size());
  return addr;
}

/// Whether a process accepts connections on `addr` right now.
bool someone_listens(const sockaddr_un& addr) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  int rc;
  do {
    rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (rc != 0 && errno == EINTR);
  // EAGAIN: the listener's backlog is full, so it is alive.
  bool alive = rc == 0 || errno == EAGAIN;
  ::close(fd);
  return alive;
}

int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

timeval to_timeval(std::chrono::milliseconds ms) {
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(ms);
  return timeval{static_cast<time_t>(secs.count()),
                 static_cast<suseconds_t>((ms - secs).count() * 1000)};
}

/// Bounded hand-over from bus threads to one subscribed connection. The bound covers
/// what the connection holds in all: queued messages and the ones taken but not yet
/// written (released()), counted in messages and in bytes.
class subscription_queue {
public:
  subscription_queue(size_t max_messages, size_t max_bytes)
    : max_messages_(max_messages), max_bytes_(max_bytes) {
    event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (event_fd_ < 0)
      throw std::system_error(errno, std::generic_category(), "eventfd");
  }

  ~subscription_queue() {
    close_fd(event_fd_);
  }

  subscription_queue(const subscription_queue&) = delete;
  subscription_queue& operator=(const subscription_queue&) = delete;

  /// Called from a kernel thread: never blocks for long, never throws.
  void push(const Envelope& msg) noexcept {
    try {
      auto size = msg.ByteSizeLong();
      std::lock_guard<std::mutex> guard{mtx_};
      // Nothing held: one message passes whatever its size, or a subscriber to large
      // messages would never get any.
      bool full = held_messages_ > 0
                  && (held_messages_ >= max_messages_ || held_bytes_ + size > max_bytes_);
      if (full) {
        ++dropped_;
        return;
      }
      items_.push_back(msg);
      ++held_messages_;
      held_bytes_ += size;
    } catch (...) {
      // Out of memory while copying: count it as a drop rather than fail the bus.
      std::lock_guard<std::mutex> guard{mtx_};
      ++dropped_;
      return;
    }
    signal_eventfd(event_fd_);
  }

  /// Gives back the room of one taken message once it is written (or abandoned).
  void release(size_t bytes) noexcept {
    std::lock_guard<std::mutex> guard{mtx_};
    held_bytes_ -= std::min(bytes, held_bytes_);
    if (held_messages_ > 0)
      --held_messages_;
  }

  /// Takes everything queued so far and the number dropped since the last call; each
  /// message taken stays counted until release().
  std::deque<Envelope> take(uint64_t& dropped) {
    drain_eventfd(event_fd_);
    std::lock_guard<std::mutex> guard{mtx_};
    dropped = std::exchange(dropped_, 0);
    return std::exchange(items_, {});
  }

  /// Readable while messages wait.
  int fd() const noexcept {
    return event_fd_;
  }

private:
  size_t max_messages_;
  size_t max_bytes_;
  int event_fd_ = -1;
  std::mutex mtx_;
  std::deque<Envelope> items_;
  size_t held_messages_ = 0;
  size_t held_bytes_ = 0;
  uint64_t dropped_ = 0;
};

control::Response error_response(const caf::error& err) {
  control::Response res;
  res.set_ok(false);
  auto text = describe(err);
  res.set_error(text.empty() ? "unknown error" : text);
  return res;
}

control::Response error_response(std::string text) {
  control::Response res;
  res.set_ok(false);
  res.set_error(std::move(text));
  return res;
}

control::Response ok_response(std::string note) {
  control::Response res;
  res.set_ok(true);
  res.set_message(std::move(note));
  return res;
}

} // namespace

struct control_server::impl {
  /// One accepted connection.
  struct client {
    /// What the connection does; only a waiting one may be evicted, and the switch
    /// between the two is a compare-and-swap, so a request is never cut off. A
    /// leaving connection (evicted, or its thread ending) no longer takes a slot.
    enum state_t : int { waiting, busy, leaving };
    int fd = -1;
    std::string peer;
    std::thread thread;
    std::atomic<bool> done{false};
    std::atomic<int> state{waiting};
    /// When the connection last began waiting for a request (steady clock, ns).
    std::atomic<int64_t> idle_since{0};
  };

  impl(control_backend& backend, std::filesystem::path path,
       std::shared_ptr<spdlog::logger> log, control_limits limits)
    : backend_(backend), path_(std::move(path)), log_(std::move(log)), limits_(limits) {
    if (!log_)
      log_ = std::make_shared<spdlog::logger>(
        "control", std::make_shared<spdlog::sinks::null_sink_mt>());
  }

  caf::error start();
  void stop();
  void accept_loop();
  void accept_one();
  void reap(bool all);
  void serve(client& c);
  bool handle(client& c, const control::Request& req);
  bool stream(client& c, const std::string& filter);
  bool send(client& c, const control::Response& res);
  bool wait_for_request(client& c);
  bool make_room(const std::string& peer);

  control_backend& backend_;
  std::filesystem::path path_;
  std::shared_ptr<spdlog::logger> log_;
  control_limits limits_;

  /// Serializes start() and stop().
  std::mutex state_mtx_;
  bool started_ = false;
  int listen_fd_ = -1;
  /// Readable once stop() begins; never drained, so every waiter sees it.
  int stop_fd_ = -1;
  /// Signalled by a client thread when it finishes.
  int reap_fd_ = -1;
  /// Identity of the socket file we bound, so stop() never unlinks someone else's.
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  std::thread acceptor_;

  std::mutex clients_mtx_;
  std::list<std::unique_ptr<client>> clients_;
};

caf::error control_server::impl::start() {
  std::lock_guard<std::mutex> guard{state_mtx_};
  if (started_)
    return make_error(errc::invalid_state, "control server already started");
  auto addr = make_address(path_);
  if (!addr)
    return std::move(addr.error());
  std::error_code ec;
  if (path_.has_parent_path()) {
    std::filesystem::create_directories(path_.parent_path(), ec);
    if (ec)
      return make_error(errc::system_error, "cannot create "
                                              + path_.parent_path().string() + ": "
                                              + ec.message());
  }
  struct stat st;
  if (::lstat(path_.c_str(), &st) == 0) {
    // Never delete a file that is not a socket: the path is probably misconfigured.
    if (!S_ISSOCK(st.st_mode))
      return make_error(errc::system_error,
                        path_.string() + " exists and is not a socket");
    if (someone_listens(*addr))
      return make_error(errc::invalid_state,
                        "another groved is listening on " + path_.string());
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
      return make_error(errc::system_error,
                        errno_text(("cannot remove stale " + path_.string()).c_str()));
    log_->info("control: removed stale socket {}", path_.string());
  }
  auto fail = [this](std::string what) {
    auto err = make_error(errc::system_error, errno_text(what.c_str()));
    close_fd(listen_fd_);
    close_fd(stop_fd_);
    close_fd(reap_fd_);
    return err;
  };
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd_ < 0)
    return fail("socket");
  if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr))
      != 0)
    return fail("bind " + path_.string());
  // Between bind and chmod the file has the umask's mode; accept_one() also checks
  // the peer's uid, so nobody slips in through that window.
  if (::chmod(path_.c_str(), 0600) != 0 || ::lstat(path_.c_str(), &st) != 0) {
    auto err = fail("chmod " + path_.string());
    ::unlink(path_.c_str());
    return err;
  }
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  if (::listen(listen_fd_, SOMAXCONN) != 0) {
    auto err = fail("listen " + path_.string());
    ::unlink(path_.c_str());
    return err;
  }
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  reap_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0 || reap_fd_ < 0) {
    auto err = fail("eventfd");
    ::unlink(path_.c_str());
    return err;
  }
  try {
    acceptor_ = std::thread{[this] { accept_loop(); }};
  } catch (const std::exception& ex) {
    close_fd(listen_fd_);
    close_fd(stop_fd_);
    close_fd(reap_fd_);
    ::unlink(path_.c_str());
    return make_error(errc::system_error,
                      std::string{"cannot start control thread: "} + ex.what());
  }
  started_ = true;
  log_->info("control: listening on {}", path_.string());
  return {};
}

void control_server::impl::stop() {
  std::lock_guard<std::mutex> guard{state_mtx_};
  if (!started_)
    return;
  started_ = false;
  signal_eventfd(stop_fd_);
  if (acceptor_.joinable())
    acceptor_.join();
  // The acceptor is gone, so the list only shrinks from here on.
  std::list<std::unique_ptr<client>> clients;
  {
    std::lock_guard<std::mutex> lock{clients_mtx_};
    clients.swap(clients_);
  }
  // Wakes threads blocked in read/write; waiters in poll() also see stop_fd_.
  for (auto& c : clients)
    ::shutdown(c->fd, SHUT_RDWR);
  for (auto& c : clients) {
    if (c->thread.joinable())
      c->thread.join();
    close_fd(c->fd);
  }
  close_fd(listen_fd_);
  close_fd(stop_fd_);
  close_fd(reap_fd_);
  struct stat st;
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_)
    ::unlink(path_.c_str());
  log_->info("control: stopped ({} connections closed)", clients.size());
}

void control_server::impl::accept_loop() {
  try {
    pollfd fds[3] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0},
                     {reap_fd_, POLLIN, 0}};
    for (;;) {
      for (auto& p : fds)
        p.revents = 0;
      if (::poll(fds, 3, -1) < 0) {
        if (errno == EINTR)
          continue;
        log_->error("control: {}; no longer accepting connections",
                    errno_text("poll"));
        return;
      }
      if (fds[1].revents != 0)
        return;
      if (fds[2].revents != 0) {
        drain_eventfd(reap_fd_);
        reap(false);
      }
      if (fds[0].revents != 0)
        accept_one();
    }
  } catch (const std::exception& ex) {
    log_->error("control: accept thread failed: {}", ex.what());
  } catch (...) {
    log_->error("control: accept thread failed");
  }
}

void control_server::impl::accept_one() {
  int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) {
    auto code = errno;
    if (code == EINTR || code == EAGAIN || code == EWOULDBLOCK
        || code == ECONNABORTED)
      return;
    log_->warn("control: {}", errno_text("accept", code));
    if (code == EMFILE || code == ENFILE || code == ENOBUFS || code == ENOMEM) {
      // Out of descriptors: back off instead of spinning on a readable socket, but
      // stay responsive to stop().
      pollfd p{stop_fd_, POLLIN, 0};
      ::poll(&p, 1, 100);
    }
    return;
  }
  ucred cred{};
  socklen_t len = sizeof(cred);
  // Who connects is the only check there is: a peer whose credentials cannot be read
  // is refused, never let in as "unknown".
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0
      || len != sizeof(cred)) {
    log_->warn("control: refused connection: {}",
               errno_text("cannot read peer credentials"));
    ::close(fd);
    return;
  }
  std::string peer = "pid " + std::to_string(cred.pid) + " uid "
                     + std::to_string(cred.uid);
  if (cred.uid != ::geteuid() && cred.uid != 0) {
    log_->warn("control: refused connection from {} (not our user)", peer);
    ::close(fd);
    return;
  }
  // A request that stalls half-way ends like an idle connection; a reply nobody reads
  // (a `sub` that stopped reading) ends the connection after send_timeout.
  auto rcv = to_timeval(limits_.idle_timeout);
  auto snd = to_timeval(limits_.send_timeout);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof(rcv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof(snd));
  reap(false);
  std::lock_guard<std::mutex> lock{clients_mtx_};
  if (!make_room(peer)) {
    log_->warn("control: refused connection from {}: {} connections busy", peer,
               limits_.max_clients);
    // Best effort: the socket buffer takes this small frame without blocking.
    framing::write_frame(fd, error_response("too many control connections"));
    ::close(fd);
    return;
  }
  auto c = std::make_unique<client>();
  c->fd = fd;
  c->peer = std::move(peer);
  c->idle_since.store(now_ns());
  auto* ptr = c.get();
  clients_.push_back(std::move(c));
  try {
    ptr->thread = std::thread{[this, ptr] { serve(*ptr); }};
  } catch (const std::exception& ex) {
    log_->error("control: cannot start connection thread: {}", ex.what());
    ::close(fd);
    clients_.pop_back();
  }
}

bool control_server::impl::make_room(const std::string& peer) {
  // Called with clients_mtx_ held. Leaving connections are on their way out (an
  // evicted one's thread sees the shutdown at once) and no longer count.
  size_t open = 0;
  client* idlest = nullptr;
  for (auto& c : clients_) {
    auto st = c->state.load();
    if (st == client::leaving)
      continue;
    ++open;
    if (st == client::waiting
        && (idlest == nullptr || c->idle_since.load() < idlest->idle_since.load()))
      idlest = c.get();
  }
  if (open < limits_.max_clients)
    return true;
  int expected = client::waiting;
  if (idlest == nullptr || !idlest->state.compare_exchange_strong(expected, client::leaving))
    return false;
  log_->info("control: closed the idle connection of {} to make room for {}",
             idlest->peer, peer);
  ::shutdown(idlest->fd, SHUT_RDWR);
  return true;
}

void control_server::impl::reap(bool all) {
  std::list<std::unique_ptr<client>> finished;
  {
    std::lock_guard<std::mutex> lock{clients_mtx_};
    for (auto i = clients_.begin(); i != clients_.end();) {
      if (all || (*i)->done.load()) {
        auto next = std::next(i);
        finished.splice(finished.end(), clients_, i);
        i = next;
      } else {
        ++i;
      }
    }
  }
  for (auto& c : finished) {
    if (c->thread.joinable())
      c->thread.join();
    close_fd(c->fd);
  }
}

bool control_server::impl::send(client& c, const control::Response& res) {
  if (auto err = framing::write_frame(c.fd, res)) {
    log_->debug("control: cannot reply to {}: {}", c.peer, describe(err));
    return false;
  }
  return true;
}

bool control_server::impl::wait_for_request(client& c) {
  // Polls rather than blocks in read(): the idle timeout ends the wait, and stop() or
  // make_room() (shutdown) ends it at once.
  auto until = std::chrono::steady_clock::now() + limits_.idle_timeout;
  pollfd fds[2] = {{c.fd, POLLIN | POLLRDHUP, 0}, {stop_fd_, POLLIN, 0}};
  for (;;) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(
      until - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      log_->info("control: closed the connection of {}: idle for {} ms", c.peer,
                 limits_.idle_timeout.count());
      return false;
    }
    fds[0].revents = fds[1].revents = 0;
    auto rc = ::poll(fds, 2, static_cast<int>(std::min<int64_t>(left.count(), 60'000)));
    if (rc < 0 && errno != EINTR)
      return false;
    if (rc <= 0)
      continue;
    if (fds[1].revents != 0)
      return false;
    // Data, hang-up or error: read_frame() tells which. Claim the connection first so
    // make_room() leaves it alone while the request is served.
    int expected = client::waiting;
    return c.state.compare_exchange_strong(expected, client::busy);
  }
}

void control_server::impl::serve(client& c) {
  try {
    log_->debug("control: connection from {}", c.peer);
    for (;;) {
      if (!wait_for_request(c))
        break;
      control::Request req;
      if (auto err = framing::read_frame(c.fd, req, limits_.max_request_size)) {
        if (has_code(err, errc::malformed) || has_code(err, errc::too_large)) {
          // The stream cannot be resynchronized: say why, then hang up.
          log_->warn("control: bad frame from {}: {}", c.peer, describe(err));
          send(c, error_response(err));
        } else if (has_code(err, errc::timeout)) {
          log_->info("control: closed the connection of {}: request stalled for {} ms",
                     c.peer, limits_.idle_timeout.count());
        } else {
          log_->debug("control: {} disconnected: {}", c.peer, describe(err));
        }
        break;
      }
      if (!handle(c, req))
        break;
      c.idle_since.store(now_ns());
      int expected = client::busy;
      if (!c.state.compare_exchange_strong(expected, client::waiting))
        break;
    }
  } catch (const std::exception& ex) {
    log_->error("control: connection from {} failed: {}", c.peer, ex.what());
  } catch (...) {
    log_->error("control: connection from {} failed", c.peer);
  }
  c.state.store(client::leaving);
  c.done.store(true);
  signal_eventfd(reap_fd_);
}

bool control_server::impl::handle(client& c, const control::Request& req) {
  using control::Request;
  control::Response res;
  try {
    // A name becomes a file name and a log line: this is the check that counts
    // (grovectl's is a courtesy), the same rule as the profile's.
    const std::string* name = nullptr;
    if (req.has_load())
      name = &req.load().name();
    else if (req.has_unload())
      name = &req.unload().name();
    else if (req.has_reload())
      name = &req.reload().name();
    if (name != nullptr)
      if (auto err = validate_plugin_name(*name)) {
        log_->warn("control: refused a request from {}: {}", c.peer, describe(err));
        return send(c, error_response(err));
      }
    switch (req.kind_case()) {
      case Request::kStatus:
        log_->debug("control: status from {}", c.peer);
        *res.mutable_status() = backend_.status();
        res.set_ok(true);
        break;
      case Request::kPlugins:
        log_->debug("control: plugins from {}", c.peer);
        *res.mutable_plugins() = backend_.plugins();
        res.set_ok(true);
        break;
      case Request::kLoad: {
        const auto& name = req.load().name();
        if (auto err = backend_.load(name)) {
          log_->warn("control: load {} failed: {}", name, describe(err));
          res = error_response(err);
        } else {
          log_->info("control: loaded {}", name);
          res = ok_response("loaded " + name);
        }
        break;
      }
      case Request::kUnload: {
        const auto& name = req.unload().name();
        if (auto err = backend_.unload(name)) {
          log_->warn("control: unload {} failed: {}", name, describe(err));
          res = error_response(err);
        } else {
          log_->info("control: unloaded {}", name);
          res = ok_response("unloaded " + name);
        }
        break;
      }
      case Request::kReload: {
        const auto& name = req.reload().name();
        auto result = backend_.reload(name, req.reload().path());
        if (!result) {
          log_->warn("control: reload {} failed: {}", name, describe(result.error()));
          res = error_response(result.error());
        } else {
          log_->info("control: reloaded {}: {}", name, *result);
          res = ok_response(result->empty() ? "reloaded " + name : *result);
        }
        break;
      }
      case Request::kPublish: {
        const auto& topic = req.publish().topic();
        if (auto err = validate_topic(topic)) {
          res = error_response(err);
          break;
        }
        auto result = backend_.publish(req.publish());
        if (!result) {
          log_->debug("control: publish on {} failed: {}", topic,
                      describe(result.error()));
          res = error_response(result.error());
        } else {
          log_->debug("control: published on {} for {}", topic, c.peer);
          // The counts are fields (grovectl reads them); the note is for people.
          res = ok_response("delivered " + std::to_string(result->delivered)
                            + ", dropped " + std::to_string(result->dropped));
          auto* out = res.mutable_published();
          out->set_topic(topic);
          out->set_delivered(result->delivered);
          out->set_dropped(result->dropped);
        }
        break;
      }
      case Request::kCall: {
        auto msg = req.call().msg();
        if (msg.source().empty())
          msg.set_source("grovectl");
        auto timeout = std::chrono::milliseconds{
          req.call().timeout_ms() > 0 ? req.call().timeout_ms() : 10'000};
        auto topic = msg.topic();
        auto reply = backend_.request(std::move(msg), timeout);
        if (!reply) {
          log_->debug("control: request on {} failed: {}", topic, describe(reply.error()));
          res = error_response(reply.error());
          // The error's code and category as fields, for --json.
          set_error(*res.mutable_reply(), reply.error());
        } else {
          res = ok_response({});
          *res.mutable_reply() = std::move(*reply);
        }
        break;
      }
      case Request::kSubscribe:
        return stream(c, req.subscribe().filter());
      default:
        // Also what a newer client's unknown request kind looks like.
        log_->warn("control: empty or unsupported request from {}", c.peer);
        res = error_response("empty or unsupported request");
        break;
    }
  } catch (const std::exception& ex) {
    log_->error("control: request from {} failed: {}", c.peer, ex.what());
    res = error_response(std::string{"internal error: "} + ex.what());
  } catch (...) {
    log_->error("control: request from {} failed", c.peer);
    res = error_response("internal error");
  }
  return send(c, res);
}

bool control_server::impl::stream(client& c, const std::string& filter) {
  if (auto err = validate_filter(filter)) {
    log_->debug("control: bad filter from {}: {}", c.peer, describe(err));
    return send(c, error_response(err));
  }
  auto queue = std::make_shared<subscription_queue>(limits_.subscriber_queue_messages,
                                                    limits_.subscriber_queue_bytes);
  // The sink holds the queue, so a late call from the bus after unsubscribe is safe.
  auto handle = backend_.subscribe(filter,
                                   [queue](const Envelope& msg) { queue->push(msg); });
  if (!handle) {
    log_->warn("control: subscribe {} failed: {}", filter, describe(handle.error()));
    return send(c, error_response(handle.error()));
  }
  log_->info("control: {} subscribed to {}", c.peer, filter);
  // An acknowledgement without body: the client knows the subscription is active.
  if (!send(c, ok_response("subscribed to " + filter))) {
    handle->reset();
    return false;
  }
  uint64_t sent = 0;
  uint64_t dropped_total = 0;
  std::string reason = "client hung up";
  // A write that fails with errc::timeout means the client took nothing for
  // send_timeout: it stopped reading, and holding its messages helps nobody.
  auto write = [&](const control::Response& res) {
    auto err = framing::write_frame(c.fd, res);
    if (!err)
      return true;
    reason = has_code(err, errc::timeout)
               ? "blocked: read nothing for " + std::to_string(limits_.send_timeout.count())
                   + " ms"
               : "write failed: " + describe(err);
    return false;
  };
  pollfd fds[3] = {{c.fd, POLLIN | POLLRDHUP, 0}, {queue->fd(), POLLIN, 0},
                   {stop_fd_, POLLIN, 0}};
  for (bool running = true; running;) {
    for (auto& p : fds)
      p.revents = 0;
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR)
        continue;
      reason = "poll failed";
      break;
    }
    if (fds[2].revents != 0) {
      reason = "server stopping";
      break;
    }
    if (fds[0].revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL))
      break;
    if (fds[0].revents & POLLIN) {
      // The client may only hang up while subscribed; anything else ends the stream.
      char byte;
      auto n = ::recv(c.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0)
        reason = "client sent data while subscribed";
      if (n >= 0 || (errno != EINTR && errno != EAGAIN))
        break;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t dropped = 0;
      auto items = queue->take(dropped);
      for (auto& msg : items) {
        auto size = msg.ByteSizeLong();
        if (running) {
          control::Response res;
          res.set_ok(true);
          *res.mutable_message_out() = std::move(msg);
          running = write(res);
        }
        // Not written in full: dropped like the ones the queue refused.
        ++(running ? sent : dropped_total);
        // Released whether written or not: the queue's bound covers what is in hand.
        queue->release(size);
      }
      dropped_total += dropped;
      if (running && dropped > 0) {
        log_->warn("control: subscription {} of {} dropped {} messages (queue full)",
                   filter, c.peer, dropped);
        running = write(ok_response("dropped " + std::to_string(dropped)
                                    + " messages: subscriber queue full"));
      }
    }
  }
  // The slot is free from here on: the connection ends whatever happens below.
  c.state.store(client::leaving);
  handle->reset(); // unsubscribes
  uint64_t late = 0;
  auto unsent = queue->take(late);
  dropped_total += late + unsent.size();
  log_->info("control: subscription {} of {} ended ({}): {} sent, {} dropped", filter,
             c.peer, reason, sent, dropped_total);
  return false;
}

control_server::control_server(control_backend& backend,
                               std::filesystem::path socket_path,
                               std::shared_ptr<spdlog::logger> log, control_limits limits)
  : impl_(std::make_unique<impl>(backend, std::move(socket_path), std::move(log),
                                 limits)) {
  // nop
}

control_server::~control_server() {
  try {
    stop();
  } catch (...) {
    // A destructor must not throw; stop() logs what it can.
  }
}

caf::error control_server::start() {
  try {
    return impl_->start();
  } catch (const std::exception& ex) {
    return make_error(errc::system_error,
                      std::string{"cannot start control server: "} + ex.what());
  }
}

void control_server::stop() {
  impl_->stop();
}

const std::filesystem::path& control_server::path() const noexcept {
  return impl_->path_;
}

} // namespace grove
