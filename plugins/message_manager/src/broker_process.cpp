#include "broker_process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "grove/errors.hpp"

extern char** environ;

namespace grove::mm {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr size_t max_tail_lines = 20;
constexpr auto start_timeout = 5s;
constexpr auto stop_timeout = 3s;
constexpr auto stable_uptime = 60s;
constexpr uintmax_t max_log_bytes = 1 << 20;

std::string errno_text(const char* what) {
  return std::string{what} + ": " + std::strerror(errno);
}

std::string now_iso8601() {
  auto t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string describe_exit(int st) {
  if (WIFEXITED(st))
    return "exited with " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st))
    return "killed by signal " + std::to_string(WTERMSIG(st));
  return "ended with status " + std::to_string(st);
}

// Writes `text` to a temporary file next to `path`, then renames it over `path`, so that a
// reader (the broker plugin) sees the old or the new content, never a partial one.
caf::error write_file_atomic(const fs::path& path, const std::string& text, mode_t mode) {
  auto templ = (path.parent_path() / ("." + path.filename().string() + ".XXXXXX")).string();
  int fd = mkstemp(templ.data());
  if (fd < 0)
    return make_error(errc::system_error, errno_text(("cannot create " + templ).c_str()));
  auto fail = [&](const char* what) {
    auto err = make_error(errc::system_error, errno_text(what) + " (" + path.string() + ")");
    ::close(fd);
    ::unlink(templ.c_str());
    return err;
  };
  size_t done = 0;
  while (done < text.size()) {
    auto n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return fail("write");
    }
    done += static_cast<size_t>(n);
  }
  if (::fchmod(fd, mode) != 0)
    return fail("fchmod");
  if (::fsync(fd) != 0)
    return fail("fsync");
  if (::close(fd) != 0) {
    ::unlink(templ.c_str());
    return make_error(errc::system_error, errno_text("close") + " (" + path.string() + ")");
  }
  if (::rename(templ.c_str(), path.c_str()) != 0) {
    auto err = make_error(errc::system_error, errno_text("rename") + " (" + path.string() + ")");
    ::unlink(templ.c_str());
    return err;
  }
  return {};
}

std::string current_user_name() {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* res = nullptr;
  if (getpwuid_r(geteuid(), &pw, buf.data(), buf.size(), &res) == 0 && res != nullptr)
    return res->pw_name;
  return geteuid() == 0 ? "root" : "";
}

// The inodes of the TCP sockets listening on `port` (IPv4 and IPv6).
std::set<std::string> listening_inodes(uint16_t port) {
  std::set<std::string> result;
  for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in{file};
    std::string line;
    std::getline(in, line); // header
    while (std::getline(in, line)) {
      std::istringstream fields{line};
      std::string sl, local, remote, st, queues, timer, retr, uid, timeout, inode;
      if (!(fields >> sl >> local >> remote >> st >> queues >> timer >> retr >> uid >> timeout
                   >> inode))
        continue;
      auto colon = local.rfind(':');
      if (colon == std::string::npos || st != "0A")
        continue;
      if (std::strtoul(local.c_str() + colon + 1, nullptr, 16) == port)
        result.insert(inode);
    }
  }
  return result;
}

log_level level_of(const std::string& line) {
  if (line.find("Error") != std::string::npos || line.find("error:") != std::string::npos)
    return log_level::error;
  if (line.find("Warning") != std::string::npos)
    return log_level::warning;
  return log_level::info;
}

} // namespace

broker_process::broker_process(broker_options opts) : opts_(std::move(opts)) {
  conf_path_ = (opts_.state_dir / "mosquitto.conf").string();
}

broker_process::~broker_process() {
  stop();
}

fs::path broker_process::acl_file() const {
  return opts_.state_dir / "broker.acl";
}

fs::path broker_process::stats_file() const {
  return opts_.state_dir / "broker-stats.json";
}

broker_status broker_process::status() const {
  std::lock_guard<std::mutex> lk{mtx_};
  broker_status st;
  st.running = running_;
  st.pid = running_ ? pid_ : 0;
  st.restarts = restarts_;
  st.last_exit = last_exit_;
  st.started_at = running_ ? started_at_ : std::string{};
  return st;
}

caf::error broker_process::check_options() const {
  if (opts_.state_dir.empty())
    return make_error(errc::invalid_config, "broker: state_dir is empty");
  if (opts_.plugin_path.empty())
    return make_error(errc::invalid_config, "broker: plugin_path is empty");
  if (opts_.mosquitto_exe.empty() || ::access(opts_.mosquitto_exe.c_str(), X_OK) != 0)
    return make_error(errc::invalid_config,
                      "broker: mosquitto executable '" + opts_.mosquitto_exe
                        + "' not found or not executable");
  if (!opts_.dev_mode
      && (opts_.ca_file.empty() || opts_.cert_file.empty() || opts_.key_file.empty()))
    return make_error(errc::invalid_config,
                      "broker: ca_file, cert_file and key_file are required unless dev_mode");
  if (opts_.max_payload_bytes == 0 || opts_.max_payload_bytes > 256u * 1024 * 1024)
    return make_error(errc::invalid_config, "broker: max_payload_bytes must be 1..268435456");
  auto bad_char = [](const std::string& s) {
    return s.find_first_of("\n\r") != std::string::npos;
  };
  // A newline would inject a configuration line.
  for (const auto& s : {opts_.state_dir.string(), opts_.plugin_path.string(), opts_.bind_address,
                        opts_.ca_file, opts_.cert_file, opts_.key_file})
    if (bad_char(s))
      return make_error(errc::invalid_config, "broker: option contains a line break");
  return {};
}

caf::error broker_process::write_config() {
  std::error_code ec;
  fs::create_directories(opts_.state_dir, ec);
  if (ec)
    return make_error(errc::system_error,
                      "broker: cannot create " + opts_.state_dir.string() + ": " + ec.message());
  // Mosquitto runs as the current user (see `user` below): owner access is what it needs.
  fs::permissions(opts_.state_dir, fs::perms::owner_all, fs::perm_options::add, ec);
  auto state = fs::absolute(opts_.state_dir, ec);
  if (ec)
    state = opts_.state_dir;
  auto max_packet = opts_.max_payload_bytes + 65536; // room for the topic and properties
  std::ostringstream out;
  out << "# generated by Grove's message_manager; rewritten on every start\n"
      << "per_listener_settings false\n"
      << "allow_anonymous false\n"
      << "persistence false\n";
  // As root, Mosquitto 2.0 would drop privileges to `mosquitto`, which cannot read the
  // state dir: keep the current user.
  if (auto user = current_user_name(); !user.empty())
    out << "user " << user << "\n";
  out << "log_dest stderr\n"
      << "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
      << "connection_messages true\n"
      << "log_timestamp true\n"
      << "log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
      << "max_packet_size " << max_packet << "\n"
      // Mosquitto's default of 20 unacknowledged QoS 1 messages per client stalls Paho
      // (Grove's own client) for up to a second when it bursts past it.
      << "max_inflight_messages 100\n"
      // Mosquitto drops QoS 1 messages for a client with more than max_queued_messages
      // waiting (default 1000). Grove's own client takes every message bound for a
      // function, the shadow or the cloud: a burst of devices must queue, not vanish.
      << "max_queued_messages 100000\n"
      << "listener " << opts_.port << " " << opts_.bind_address << "\n";
  if (!opts_.dev_mode) {
    out << "cafile " << opts_.ca_file << "\n"
        << "certfile " << opts_.cert_file << "\n"
        << "keyfile " << opts_.key_file << "\n"
        << "require_certificate true\n"
        // Not `true`: Mosquitto 2.0.11 would then skip the plugin's BASIC_AUTH. The plugin
        // takes the certificate CN as the identity and refuses a non-member at CONNECT.
        << "use_identity_as_username false\n";
  }
  out << "plugin " << fs::absolute(opts_.plugin_path, ec).string() << "\n"
      << "plugin_opt_acl_file " << (state / "broker.acl").string() << "\n"
      << "plugin_opt_stats_file " << (state / "broker-stats.json").string() << "\n";
  if (opts_.dev_mode)
    out << "plugin_opt_insecure_username_auth true\n";
  conf_path_ = (state / "mosquitto.conf").string();
  if (auto err = write_file_atomic(conf_path_, out.str(), 0600))
    return err;
  if (!fs::exists(acl_file(), ec))
    if (auto err = write_file_atomic(acl_file(), "# no things yet\n", 0600))
      return err;
  return {};
}

caf::error broker_process::write_acl(const std::string& text) {
  try {
    std::error_code ec;
    fs::create_directories(opts_.state_dir, ec);
    if (ec)
      return make_error(errc::system_error, "broker: cannot create " + opts_.state_dir.string()
                                              + ": " + ec.message());
    return write_file_atomic(acl_file(), text, 0600);
  } catch (const std::exception& e) {
    return make_error(errc::system_error, std::string{"broker: write_acl: "} + e.what());
  }
}

void broker_process::emit(log_level level, const std::string& line) {
  std::lock_guard<std::mutex> lk{log_mtx_};
  try {
    auto file = opts_.state_dir / "broker.log";
    std::error_code ec;
    if (fs::file_size(file, ec) > max_log_bytes && !ec)
      fs::rename(file, opts_.state_dir / "broker.log.1", ec);
    std::ofstream out{file, std::ios::app};
    out << line << '\n';
    if (opts_.log)
      opts_.log(level, line);
  } catch (...) {
    // A failing log sink must not take the supervisor down.
  }
}

void broker_process::read_log(int fd) {
  std::string buf;
  char chunk[4096];
  auto flush_line = [this](std::string line) {
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    {
      std::lock_guard<std::mutex> lk{mtx_};
      tail_.push_back(line);
      while (tail_.size() > max_tail_lines)
        tail_.pop_front();
    }
    emit(level_of(line), line);
  };
  for (;;) {
    auto n = ::read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    buf.append(chunk, static_cast<size_t>(n));
    size_t pos;
    while ((pos = buf.find('\n')) != std::string::npos) {
      flush_line(buf.substr(0, pos));
      buf.erase(0, pos + 1);
    }
  }
  if (!buf.empty())
    flush_line(buf);
  ::close(fd);
}

// Forks and execs mosquitto; called on the supervisor thread with mtx_ held.
caf::error broker_process::spawn_child(int& read_fd, int& pid) {
  // Everything the child needs is prepared before fork: after fork only async-signal-safe
  // calls are allowed (other threads may hold malloc's locks).
  std::string exe = opts_.mosquitto_exe;
  std::string flag = "-c";
  std::vector<char*> argv{exe.data(), flag.data(), conf_path_.data(), nullptr};
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    return make_error(errc::system_error, errno_text("broker: pipe2"));
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0) {
    auto err = make_error(errc::system_error, errno_text("broker: open /dev/null"));
    ::close(fds[0]);
    ::close(fds[1]);
    return err;
  }
  rlimit nofile{};
  unsigned max_fd = 65536;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY)
    max_fd = static_cast<unsigned>(std::min<rlim_t>(nofile.rlim_cur, 1u << 20));
  auto parent = ::getpid();
  auto child = ::fork();
  if (child < 0) {
    auto err = make_error(errc::system_error, errno_text("broker: fork"));
    ::close(fds[0]);
    ::close(fds[1]);
    ::close(devnull);
    return err;
  }
  if (child == 0) {
    // Die with the parent, and close the race where it died before prctl.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
      ::_exit(127);
    // Own process group: a terminal's Ctrl-C goes to groved, which stops the broker.
    ::setpgid(0, 0);
    ::dup2(devnull, 0);
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    // Nothing else of the parent leaks into the broker.
    if (::syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
      for (unsigned i = 3; i < max_fd; ++i)
        ::close(static_cast<int>(i));
    sigset_t all;
    sigemptyset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig)
      ::sigaction(sig, &dfl, nullptr);
    ::execve(argv[0], argv.data(), environ);
    static constexpr char msg[] = "Error: cannot execute mosquitto\n";
    [[maybe_unused]] auto n = ::write(2, msg, sizeof(msg) - 1);
    ::_exit(127);
  }
  ::close(fds[1]);
  ::close(devnull);
  read_fd = fds[0];
  pid = child;
  return {};
}

void broker_process::supervise() {
  auto delay = opts_.restart_initial;
  for (;;) {
    int fd = -1;
    int pid = 0;
    auto spawned_at = std::chrono::steady_clock::now();
    {
      std::unique_lock<std::mutex> lk{mtx_};
      if (stopping_) {
        supervisor_done_ = true;
        cv_.notify_all();
        return;
      }
      if (auto err = spawn_child(fd, pid)) {
        if (starting_) {
          spawn_error_ = err;
          supervisor_done_ = true;
          cv_.notify_all();
          return;
        }
        last_exit_ = describe(err);
      } else {
        pid_ = pid;
        running_ = true;
        started_at_ = now_iso8601();
        cv_.notify_all();
      }
    }
    std::string exit_text;
    if (pid > 0) {
      emit(log_level::info, "mosquitto started (pid " + std::to_string(pid) + ")");
      std::thread reader;
      try {
        reader = std::thread{[this, fd] { read_log(fd); }};
      } catch (...) {
        // No thread to spare: read here until the child closes the pipe (it exited).
        read_log(fd);
      }
      // Wait without reaping: while the zombie exists its pid cannot be reused, so
      // stop() may still signal pid_ safely.
      siginfo_t info{};
      while (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) != 0
             && errno == EINTR) {
      }
      if (reader.joinable())
        reader.join(); // all output is in tail_ before anyone sees the exit
      int st = 0;
      while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
      }
      exit_text = describe_exit(st);
      std::unique_lock<std::mutex> lk{mtx_};
      pid_ = 0;
      running_ = false;
      last_exit_ = exit_text;
      exited_ = true;
      cv_.notify_all();
      if (stopping_ || starting_) {
        supervisor_done_ = true;
        lk.unlock();
        emit(stopping_ ? log_level::info : log_level::error, "mosquitto " + exit_text);
        return;
      }
    } else {
      std::lock_guard<std::mutex> lk{mtx_};
      exit_text = "could not be started: " + last_exit_;
    }
    if (std::chrono::steady_clock::now() - spawned_at >= stable_uptime)
      delay = opts_.restart_initial;
    emit(log_level::warning, "mosquitto " + exit_text + "; restarting in "
                               + std::to_string(delay.count()) + " ms");
    {
      std::unique_lock<std::mutex> lk{mtx_};
      if (cv_.wait_for(lk, delay, [this] { return stopping_; })) {
        supervisor_done_ = true;
        cv_.notify_all();
        return;
      }
      ++restarts_;
    }
    delay = std::min(delay * 2, opts_.restart_max);
  }
}

bool broker_process::child_listening(int pid) const {
  auto inodes = listening_inodes(opts_.port);
  if (inodes.empty())
    return false;
  bool owned = false;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator{"/proc/" + std::to_string(pid) + "/fd", ec}) {
    auto target = fs::read_symlink(entry.path(), ec);
    if (ec)
      continue;
    auto s = target.string();
    if (s.size() > 9 && s.compare(0, 8, "socket:[") == 0
        && inodes.count(s.substr(8, s.size() - 9)) > 0) {
      owned = true;
      break;
    }
  }
  // A listening socket queues connections from now on. No probe connection: with TLS it
  // would log a failed handshake on every start.
  return owned;
}

// The error lines of mosquitto's last output first (the cause), then the last few lines.
std::string broker_process::last_lines() const {
  constexpr size_t context_lines = 4;
  std::lock_guard<std::mutex> lk{mtx_};
  std::string errors;
  std::string context;
  for (size_t i = 0; i < tail_.size(); ++i) {
    const auto& line = tail_[i];
    if (line.find("Error") != std::string::npos)
      errors += (errors.empty() ? "" : " | ") + line;
    if (i + context_lines >= tail_.size())
      context += (context.empty() ? "" : " | ") + line;
  }
  if (context.empty())
    return "(mosquitto wrote nothing)";
  return errors.empty() ? "last log lines: " + context
                        : errors + " (last log lines: " + context + ")";
}

caf::error broker_process::start() {
  try {
    std::lock_guard<std::mutex> control{control_mtx_};
    {
      std::lock_guard<std::mutex> lk{mtx_};
      if (!supervisor_done_)
        return make_error(errc::invalid_state, "broker: already started");
    }
    if (supervisor_.joinable())
      supervisor_.join();
    if (auto err = check_options())
      return err;
    if (auto err = write_config())
      return err;
    {
      std::lock_guard<std::mutex> lk{mtx_};
      stopping_ = false;
      starting_ = true;
      supervisor_done_ = false;
      exited_ = false;
      spawn_error_ = caf::error{};
      restarts_ = 0;
      last_exit_.clear();
      tail_.clear();
    }
    supervisor_ = std::thread{[this] {
      try {
        supervise();
      } catch (const std::exception& e) {
        // Out of memory or threads: give up supervising. A live child dies with this thread
        // (PR_SET_PDEATHSIG follows the forking thread).
        std::lock_guard<std::mutex> lk{mtx_};
        if (!spawn_error_)
          spawn_error_ = make_error(errc::system_error, std::string{"broker: supervisor: "}
                                                          + e.what());
        supervisor_done_ = true;
        cv_.notify_all();
      }
    }};
    auto deadline = std::chrono::steady_clock::now() + start_timeout;
    auto code = errc::init_failed;
    std::string what;
    for (;;) {
      int pid = 0;
      {
        std::unique_lock<std::mutex> lk{mtx_};
        if (spawn_error_) {
          code = errc::system_error;
          what = describe(spawn_error_);
          break;
        }
        if (exited_) {
          what = "broker: mosquitto " + last_exit_ + " while starting";
          break;
        }
        pid = running_ ? pid_ : 0;
      }
      if (pid > 0 && child_listening(pid)) {
        std::lock_guard<std::mutex> lk{mtx_};
        if (running_ && pid_ == pid) {
          starting_ = false;
          return {};
        }
        continue; // it died meanwhile: report that
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        code = errc::timeout;
        what = "broker: mosquitto does not accept connections on port "
               + std::to_string(opts_.port) + " after 5 s";
        break;
      }
      std::unique_lock<std::mutex> lk{mtx_};
      cv_.wait_for(lk, 20ms, [this] { return exited_ || static_cast<bool>(spawn_error_); });
    }
    {
      std::unique_lock<std::mutex> lk{mtx_};
      stopping_ = true;
      if (running_ && pid_ > 0)
        ::kill(pid_, SIGKILL);
      cv_.notify_all();
    }
    supervisor_.join();
    return make_error(code, what + ": " + last_lines());
  } catch (const std::exception& e) {
    return make_error(errc::system_error, std::string{"broker: start: "} + e.what());
  }
}

void broker_process::stop() {
  try {
    std::lock_guard<std::mutex> control{control_mtx_};
    {
      std::unique_lock<std::mutex> lk{mtx_};
      stopping_ = true;
      cv_.notify_all();
      if (running_ && pid_ > 0) {
        ::kill(pid_, SIGTERM);
        if (!cv_.wait_for(lk, stop_timeout, [this] { return !running_; }) && running_
            && pid_ > 0) {
          ::kill(pid_, SIGKILL);
        }
      }
    }
    if (supervisor_.joinable())
      supervisor_.join();
  } catch (...) {
    // stop() runs in the destructor: nothing may escape.
  }
}

caf::expected<broker_stats> read_broker_stats(const fs::path& file) {
  try {
    std::ifstream in{file};
    if (!in)
      return make_error(errc::system_error, "broker stats: cannot read " + file.string());
    std::stringstream buf;
    buf << in.rdbuf();
    auto j = nlohmann::json::parse(buf.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object())
      return make_error(errc::malformed, "broker stats: " + file.string() + " is not a JSON object");
    broker_stats result;
    auto count = [&](const char* key, uint64_t& out) -> bool {
      auto it = j.find(key);
      if (it == j.end())
        return true; // an older plugin may lack a counter
      if (!it->is_number_unsigned())
        return false;
      out = it->get<uint64_t>();
      return true;
    };
    if (!count("denied_publish_unknown", result.denied_publish_unknown)
        || !count("denied_delivery", result.denied_delivery)
        || !count("refused_connect", result.refused_connect)
        || !count("acl_reloads", result.acl_reloads)
        || !count("acl_errors", result.acl_errors))
      return make_error(errc::malformed, "broker stats: a counter in " + file.string()
                                           + " is not a non-negative integer");
    if (auto it = j.find("denied_publish"); it != j.end()) {
      if (!it->is_object())
        return make_error(errc::malformed, "broker stats: denied_publish is not an object");
      for (const auto& [thing, n] : it->items()) {
        if (!n.is_number_unsigned())
          return make_error(errc::malformed, "broker stats: denied_publish." + thing
                                               + " is not a non-negative integer");
        result.denied_publish[thing] = n.get<uint64_t>();
      }
    }
    if (auto it = j.find("last_acl_error"); it != j.end() && it->is_string())
      result.last_acl_error = it->get<std::string>();
    return result;
  } catch (const std::exception& e) {
    return make_error(errc::malformed, std::string{"broker stats: "} + e.what());
  }
}

} // namespace grove::mm
