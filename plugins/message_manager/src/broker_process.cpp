#include "broker_process.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <string_view>
#include <regex>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <spdlog/spdlog.h>

#include "grove/errors.hpp"
#include "grove/file.hpp"
#include "route_frame.hpp"

namespace grove::mm {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr size_t max_tail_lines = 20;
constexpr auto stop_grace = 3s;
constexpr uintmax_t max_log_bytes = 1 << 20;

std::string errno_text(const char* what) {
  return std::string{what} + ": " + std::strerror(errno);
}

// Writes the broker's table (its text, then the `end` line that tells the plugin the file
// is complete) with no fsync: 8-30 ms for a table at Greengrass' limits on a loaded disk,
// on the path of every group change. The table needs no durability: it is derived from the
// group (durable in its own file) and message_manager writes it again at every start
// before the broker listens. A crash that leaves a file cut short costs nothing either:
// the plugin (plugin_opt_require_end) refuses a table without its `end` line, keeping the
// one in force, and at start the broker does not come up on it (fail closed) until the
// next table is written.
caf::error write_table(const fs::path& path, std::string_view text,
                       std::optional<file_owner> owner = std::nullopt) {
  bool newline = text.empty() || text.back() == '\n';
  return write_file_atomically(path, {text, newline ? "" : "\n", "end\n"},
                               {.mode = 0600, .owner = owner, .sync = false});
}

std::string current_user_name() {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* res = nullptr;
  if (getpwuid_r(geteuid(), &pw, buf.data(), buf.size(), &res) == 0 && res != nullptr)
    return res->pw_name;
  return geteuid() == 0 ? "root" : "";
}

// --- broker user (identity and TLS) ---
// As root, Mosquitto runs as `run_as_user` from the start (setpriv, see launch()): that user
// owns its home (broker_home: the configuration, the ACL, the stats file, copies of the TLS
// files and of the plugin), which state_dir links to, and nothing else of Grove's.

bool drops_privileges(const broker_options& o) {
  return ::geteuid() == 0 && !o.run_as_user.empty();
}

std::optional<file_owner> lookup_user(const std::string& name) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* res = nullptr;
  if (getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &res) == 0 && res != nullptr)
    return file_owner{res->pw_uid, res->pw_gid};
  return std::nullopt;
}

// The broker's user. It is created at install (tools/deps), never here: a missing user is
// an installation fault, refused with the command that makes it.
caf::expected<file_owner> require_user(const std::string& name) {
  if (auto u = lookup_user(name))
    return *u;
  return make_error(errc::invalid_config,
                    "broker: the user '" + name + "' the broker runs as (broker.run_as_user) "
                    "does not exist; it is made at install (tools/deps runs: useradd --system "
                    "--user-group --no-create-home --home-dir /nonexistent --shell "
                    "/usr/sbin/nologin " + name + "); Grove creates no users at runtime");
}

// Dropped to run_as_user, the broker's files live outside groved's write dir, which stays
// 0700: in <run_as_home_base>/<hash of state_dir>, a directory of the broker's own under a
// root-owned 0755 base. state_dir becomes a symlink to it, so groved (root) and whoever reads
// state_dir find everything where it was; the broker is only ever given the real path.
fs::path broker_home(const broker_options& o) {
  std::error_code ec;
  auto key = fs::absolute(o.state_dir, ec).lexically_normal().string();
  uint64_t h = 1469598103934665603ull; // FNV-1a: the same name on every build
  for (unsigned char c : key)
    h = (h ^ c) * 1099511628211ull;
  char name[20];
  std::snprintf(name, sizeof name, "%016llx", static_cast<unsigned long long>(h));
  return o.run_as_home_base / name;
}

// What of the broker's directory outlives a broker run: the table (the next start falls
// back on it when the group cannot be fetched) and the log. The rest (the configuration,
// the copies of the TLS files and of the plugin, the counters) is made again by each start.
constexpr const char* kept_files[] = {"broker.acl", "broker.log", "broker.log.1"};

// Copies the kept files of `from` into `to` (replacing them there).
void copy_kept_files(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  for (auto name : kept_files)
    if (fs::is_regular_file(from / name, ec))
      fs::copy_file(from / name, to / name, fs::copy_options::overwrite_existing, ec);
}

// Makes state_dir a symlink to broker_home(). A real directory there (an earlier version's,
// one made before the broker started, or the one retire_home() left) is replaced; its kept
// files win over those of a home an earlier run left behind.
caf::error link_state_dir(const broker_options& o) {
  // Nothing is made for a user that does not exist.
  if (auto user = require_user(o.run_as_user); !user)
    return user.error();
  std::error_code ec;
  auto home = broker_home(o);
  auto fail = [&](const std::string& what) {
    return make_error(errc::system_error, "broker: " + what + ": " + ec.message());
  };
  fs::create_directories(home, ec);
  if (ec)
    return fail("cannot create " + home.string());
  fs::permissions(home, fs::perms::owner_all, fs::perm_options::replace, ec); // until handed over
  if (::chmod(o.run_as_home_base.c_str(), 0755) != 0)
    return make_error(errc::system_error, errno_text(("chmod " + o.run_as_home_base.string()).c_str()));
  auto st = fs::symlink_status(o.state_dir, ec);
  if (fs::is_symlink(st)) {
    if (fs::read_symlink(o.state_dir, ec) == home)
      return {};
    fs::remove(o.state_dir, ec);
  } else if (fs::exists(st)) {
    copy_kept_files(o.state_dir, home);
    fs::remove_all(o.state_dir, ec);
  }
  ec.clear();
  fs::create_directories(o.state_dir.parent_path(), ec);
  fs::create_symlink(home, o.state_dir, ec);
  if (ec)
    return fail("cannot link " + o.state_dir.string() + " to " + home.string());
  return {};
}

// A start replaces what an earlier run left in the broker's home (a groved killed before
// its broker stopped leaves a server key copy, a CRL, a plugin copy, temporary files):
// everything but the kept files goes, and the start makes the rest again.
caf::error clear_home(const fs::path& home) {
  std::error_code ec;
  std::vector<fs::path> stale;
  for (auto it = fs::directory_iterator{home, ec}; !ec && it != fs::end(it); it.increment(ec)) {
    auto name = it->path().filename().string();
    if (std::ranges::find(kept_files, name) == std::end(kept_files))
      stale.push_back(it->path());
  }
  for (const auto& p : stale)
    if (!ec)
      fs::remove_all(p, ec);
  if (ec)
    return make_error(errc::system_error,
                      "broker: cannot clear " + home.string() + ": " + ec.message());
  return {};
}

// When a broker run as run_as_user ends (and is not handed over): its home, with the copy
// of the server key, goes; the kept files move back into state_dir, a real directory of
// groved's again (0700, root's), where link_state_dir() finds them at the next start.
void retire_home(const broker_options& o) {
  std::error_code ec;
  auto home = broker_home(o);
  if (!fs::exists(home, ec))
    return;
  if (fs::is_symlink(fs::symlink_status(o.state_dir, ec))) {
    fs::remove(o.state_dir, ec);
    fs::create_directory(o.state_dir, ec);
    fs::permissions(o.state_dir, fs::perms::owner_all, fs::perm_options::replace, ec);
    if (fs::is_directory(fs::symlink_status(o.state_dir, ec))) {
      copy_kept_files(home, o.state_dir);
      for (auto name : kept_files) // copies: groved's own now
        fs::permissions(o.state_dir / name, fs::perms::owner_read | fs::perms::owner_write,
                        fs::perm_options::replace, ec);
    }
  }
  fs::remove_all(home, ec);
}

// Gives the broker's home (and what is in it) to the broker's user.
caf::error hand_over_home(const fs::path& dir, file_owner owner) {
  std::error_code ec;
  auto chown_one = [&](const fs::path& p) -> caf::error {
    if (::lchown(p.c_str(), owner.uid, owner.gid) != 0)
      return make_error(errc::system_error, errno_text(("broker: chown " + p.string()).c_str()));
    return {};
  };
  if (auto err = chown_one(dir))
    return err;
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  for (auto it = fs::recursive_directory_iterator{dir, ec}; !ec && it != fs::end(it);
       it.increment(ec))
    if (auto err = chown_one(it->path()))
      return err;
  if (ec)
    return make_error(errc::system_error, "broker: " + dir.string() + ": " + ec.message());
  return {};
}

// The broker plugin as Mosquitto loads it when it runs as run_as_user (config_text).
constexpr const char* kPluginCopy = "grove_broker_plugin.so";

// Copies the broker plugin into state_dir, by rename so that a broker still running (an
// adopted one) keeps the file it mapped.
caf::error copy_plugin(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  auto tmp = to;
  tmp += ".new";
  fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
  if (!ec)
    fs::permissions(tmp, fs::perms::owner_read, fs::perm_options::replace, ec);
  if (!ec)
    fs::rename(tmp, to, ec);
  if (ec)
    return make_error(errc::system_error, "broker: cannot copy the broker plugin "
                                            + from.string() + " to " + to.string() + ": "
                                            + ec.message());
  return {};
}

// A regular file's content, read without following a symlink; nullopt when it cannot be
// read whole (missing, vanished mid-read, not a regular file, larger than 1 MiB).
std::optional<std::string> read_nofollow(const fs::path& file) {
  constexpr size_t limit = 1 << 20;
  int fd = ::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return std::nullopt;
  struct stat st {};
  std::optional<std::string> out;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<size_t>(st.st_size) <= limit) {
    out.emplace();
    char buf[8192];
    for (;;) {
      auto n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 || out->size() + static_cast<size_t>(n) > limit) {
        out.reset();
        break;
      }
      if (n == 0)
        break;
      out->append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

// True when `pem` holds a PEM certificate (`crl`: a PEM CRL) OpenSSL can read: anything
// else in the hashed directory would end OpenSSL's lookup of that hash.
bool readable_pem(const std::string& pem, bool crl) {
  if (pem.empty())
    return false;
  auto* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (!bio)
    return false;
  bool ok = false;
  if (crl) {
    auto* c = PEM_read_bio_X509_CRL(bio, nullptr, nullptr, nullptr);
    ok = c != nullptr;
    X509_CRL_free(c);
  } else {
    auto* c = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    ok = c != nullptr;
    X509_free(c);
  }
  BIO_free(bio);
  ERR_clear_error();
  return ok;
}

// Makes `copy` hold exactly the hashed certificates (`<hash>.<n>`) and CRLs (`<hash>.r<n>`)
// of `ca_dir`, owned by the broker's user: as run_as_user the broker cannot reach ca_dir
// inside the 0700 write directory. Each file is replaced atomically, so a handshake never
// reads half of one. A file that cannot be read whole or is no PEM certificate/CRL is
// skipped (the copy keeps its last good version; gone from ca_dir, it goes next pass);
// when ca_dir cannot be listed the copy stays as it is. `removed` counts files removed.
caf::error mirror_ca_dir(const fs::path& ca_dir, const fs::path& copy, file_owner owner,
                         size_t* removed) {
  static const std::regex hashed{"[0-9a-f]{8}\\.r?[0-9]+"};
  std::error_code ec;
  if (!fs::exists(copy, ec)) {
    fs::create_directories(copy, ec);
    if (ec || ::chown(copy.c_str(), owner.uid, owner.gid) != 0)
      return make_error(errc::system_error, "broker: cannot make " + copy.string());
  }
  std::vector<std::string> found;
  fs::directory_iterator it{ca_dir, ec};
  for (; !ec && it != fs::directory_iterator{}; it.increment(ec)) {
    auto name = it->path().filename().string();
    if (std::regex_match(name, hashed))
      found.push_back(std::move(name));
  }
  // Not there yet (the deployment plugin makes it when it starts, possibly after this
  // plugin): no group CA is trusted yet, which is no failure.
  if (ec == std::errc::no_such_file_or_directory) {
    ec.clear();
    found.clear();
  }
  if (ec)
    return make_error(errc::system_error, "broker: cannot list " + ca_dir.string() + ": "
                                            + ec.message() + " (the broker's copy is kept)");
  // CRLs first: the broker never sees a CA without its CRL (with a crlfile it would refuse
  // the CA's devices until the next pass).
  std::stable_partition(found.begin(), found.end(),
                        [](const std::string& n) { return n.find(".r") != std::string::npos; });
  std::set<std::string> names;
  for (const auto& name : found) {
    auto had = read_nofollow(copy / name);
    auto content = read_nofollow(ca_dir / name);
    if (!content || !readable_pem(*content, name.find(".r") != std::string::npos)) {
      if (had)
        names.insert(name);
      continue;
    }
    names.insert(name);
    if (had && *had == *content)
      continue;
    if (auto err = write_file_atomically(copy / name, *content, {.mode = 0644, .owner = owner}))
      return err;
  }
  size_t gone = 0;
  std::vector<fs::path> extra;
  for (fs::directory_iterator c{copy, ec}; !ec && c != fs::directory_iterator{}; c.increment(ec))
    if (!names.count(c->path().filename().string()))
      extra.push_back(c->path());
  for (const auto& p : extra)
    if (fs::remove(p, ec))
      ++gone;
  if (removed)
    *removed = gone;
  return {};
}

// Copies the listener's TLS files into state_dir/tls, readable by the broker's user only.
caf::error copy_tls_files(const broker_options& o, const fs::path& tls_dir, file_owner owner) {
  std::error_code ec;
  fs::create_directories(tls_dir, ec);
  if (ec)
    return make_error(errc::system_error, "broker: cannot create " + tls_dir.string());
  std::pair<const std::string*, const char*> files[] = {
    {&o.ca_file, "ca.crt"}, {&o.cert_file, "server.crt"}, {&o.key_file, "server.key"},
    {&o.crl_file, "crl.pem"}};
  for (auto [src, name] : files) {
    if (src->empty())
      continue;
    std::ifstream in{*src, std::ios::binary};
    if (!in)
      return make_error(errc::invalid_config, "broker: cannot read '" + *src + "'");
    std::stringstream buf;
    buf << in.rdbuf();
    if (auto err = write_file_atomically(tls_dir / name, buf.str(), {.mode = 0600, .owner = owner}))
      return err;
  }
  if (!o.ca_dir.empty())
    return mirror_ca_dir(o.ca_dir, tls_dir / "ca.d", owner, nullptr);
  return {};
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


// True when process `pid` has a handler for SIGHUP (SigCgt in /proc/PID/status). Mosquitto
// installs its handlers only after its listeners are open, and SIGHUP's default action
// would end it; setpriv, before it execs Mosquitto, has none.
bool catches_sighup(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("SigCgt:", 0) != 0)
      continue;
    auto mask = std::strtoull(line.c_str() + 7, nullptr, 16);
    return (mask >> (SIGHUP - 1)) & 1u;
  }
  return false;
}

} // namespace

caf::error check_identity_options(const broker_options& o) {
  auto bad = [](const std::string& what) {
    return make_error(errc::invalid_config, "broker: " + what);
  };
  if (o.client_id_patterns.empty())
    return bad("client_id_patterns is empty (use [\"<thing>\"])");
  for (const auto& p : o.client_id_patterns) {
    auto rest = std::string_view{p};
    if (rest.substr(0, 7) != "<thing>")
      return bad("client id pattern '" + p + "' does not start with <thing>");
    rest.remove_prefix(7);
    auto star = rest.find('*');
    if ((star != std::string_view::npos && star + 1 != rest.size())
        || rest.find_first_of("+#/ \t\r\n") != std::string_view::npos)
      return bad("client id pattern '" + p
                 + "': after <thing>, literal characters (no '+', '#', '/', blanks) and at "
                   "most one '*' at the end");
  }
  if (o.tls_min_version != "1.2" && o.tls_min_version != "1.3")
    return bad("tls_min_version must be 1.2 or 1.3");
  if (o.tls_ciphers.empty() || o.tls_ciphers.find_first_of(" \t\r\n") != std::string::npos)
    return bad("tls_ciphers must be one OpenSSL cipher list without blanks");
  if (o.crl_file.find_first_of("\r\n") != std::string::npos
      || o.run_as_user.find_first_of(" \t\r\n") != std::string::npos)
    return bad("option contains a line break or blank");
  return {};
}

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

fs::path broker_process::route_socket() const {
  return opts_.state_dir / "route.sock";
}

size_t broker_process::route_buffer_bytes() const {
  // Mosquitto's own budget for a slow client, and at least one largest message.
  return std::max<size_t>(opts_.max_queued_bytes, opts_.max_payload_bytes + (1u << 20));
}

caf::error broker_process::sync_ca_dir() {
  if (opts_.ca_dir.empty() || opts_.dev_mode || !run_as_)
    return {};
  // Only while the broker runs: after stop() its home is not to be made again. The
  // content is compared each pass (an mtime misses a rename within the same tick).
  if (!proc_ || !proc_.running())
    return {};
  size_t removed = 0;
  if (auto err = mirror_ca_dir(opts_.ca_dir, broker_home(opts_) / "tls" / "ca.d", *run_as_,
                               &removed))
    return err;
  // OpenSSL caches what it loaded from a hashed directory: a CA that left the set stays
  // trusted until the broker restarts. The supervisor starts it again (connections drop
  // once; persistent sessions keep their queued QoS 1 messages).
  if (removed > 0) {
    ++ca_restarts_;
    if (auto err = proc_.signal(SIGTERM))
      return err;
  }
  return {};
}

process_status broker_process::status() const {
  return proc_.status();
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
                        opts_.ca_file, opts_.ca_dir, opts_.cert_file, opts_.key_file})
    if (bad_char(s))
      return make_error(errc::invalid_config, "broker: option contains a line break");
  if (auto err = check_identity_options(opts_))
    return err;
  return {};
}

caf::expected<std::string> broker_process::config_text() const {
  std::error_code ec;
  auto state = drops_privileges(opts_) ? broker_home(opts_) : fs::absolute(opts_.state_dir, ec);
  if (ec)
    state = opts_.state_dir;
  auto max_packet = opts_.max_payload_bytes + 65536; // room for the topic and properties
  std::ostringstream out;
  out << "# generated by Grove's message_manager; rewritten on every start\n"
      << "per_listener_settings false\n"
      << "allow_anonymous false\n"
      << "persistence false\n";
  // As root: the dedicated run_as_user (see broker_home). Otherwise keep the current
  // user (Mosquitto 2.0 would drop to `mosquitto`, which cannot read the state dir).
  bool drop = drops_privileges(opts_);
  if (auto user = drop ? opts_.run_as_user : current_user_name(); !user.empty())
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
      // ... within a byte budget per client, so slow subscribers cannot take the memory.
      << "max_queued_bytes " << opts_.max_queued_bytes << "\n"
      // Retained messages are not supported (Greengrass v1): MQTT 5 CONNACKs say so, and
      // Mosquitto disconnects a client that publishes one anyway.
      << "retain_available false\n"
      << "listener " << opts_.port << " " << opts_.bind_address << "\n"
      << "max_connections " << opts_.max_connections << "\n"
      // Local delivery is QoS 0/1 (Greengrass v1): MQTT 5 CONNACKs say Maximum QoS 1,
      // subscriptions are granted at most QoS 1, a QoS 2 publish is refused.
      << "max_qos 1\n";
  if (!opts_.dev_mode) {
    // The broker's user reads copies in state_dir/tls (copy_tls_files).
    auto tls = [&](const std::string& file, const char* name) {
      return drop ? (state / "tls" / name).string() : file;
    };
    if (!opts_.ca_dir.empty())
      out << "capath " << (drop ? (state / "tls" / "ca.d").string() : opts_.ca_dir) << "\n";
    out << "cafile " << tls(opts_.ca_file, "ca.crt") << "\n"
        << "certfile " << tls(opts_.cert_file, "server.crt") << "\n"
        << "keyfile " << tls(opts_.key_file, "server.key") << "\n";
    // --- identity and TLS ---
    // Only ECDHE key exchange with AEAD on TLS 1.2; TLS 1.3 suites are all AEAD.
    out << "tls_version tlsv" << opts_.tls_min_version << "\n"
        << "ciphers " << opts_.tls_ciphers << "\n";
    if (!opts_.crl_file.empty())
      out << "crlfile " << tls(opts_.crl_file, "crl.pem") << "\n";
    out << "require_certificate true\n"
        // Not `true`: Mosquitto 2.0.11 would then skip the plugin's BASIC_AUTH. The plugin
        // takes the certificate CN as the identity and refuses a non-member at CONNECT.
        << "use_identity_as_username false\n";
  }
  // Dropped to run_as_user, Mosquitto loads a copy in its own directory: the build or
  // install tree may be one that user cannot reach (e.g. under /root).
  auto plugin = drops_privileges(opts_) ? (state / kPluginCopy).string()
                                        : fs::absolute(opts_.plugin_path, ec).string();
  out << "plugin " << plugin << "\n"
      << "plugin_opt_acl_file " << (state / "broker.acl").string() << "\n"
      << "plugin_opt_stats_file " << (state / "broker-stats.json").string() << "\n"
      << "plugin_opt_max_payload_bytes " << opts_.max_payload_bytes << "\n"
      << "plugin_opt_max_topic_bytes " << opts_.max_topic_bytes << "\n"
      << "plugin_opt_connect_timeout_ms " << opts_.connect_timeout.count() << "\n"
      << "plugin_opt_listener_port " << opts_.port << "\n"
      << "plugin_opt_check_interval_ms " << opts_.table_check_interval.count() << "\n"
      << "plugin_opt_require_end true\n" // write_table: a table without it is torn
      // The device messages message_manager routes come over this socket (route_reader).
      << "plugin_opt_route_socket " << (state / "route.sock").string() << "\n"
      // Part of the broker's identity: a hot reload onto a build whose frames differ
      // replaces the running broker (whose plugin writes the old ones).
      << "plugin_opt_route_frame_version " << int{broker::kFrameVersion} << "\n"
      << "plugin_opt_route_buffer_bytes " << route_buffer_bytes() << "\n";
  if (opts_.dev_mode)
    out << "plugin_opt_insecure_username_auth true\n";
  out << "plugin_opt_client_id_patterns";
  for (const auto& p : opts_.client_id_patterns)
    out << " " << p;
  out << "\n";
  return out.str();
}

caf::error broker_process::begin_start(process_owner owner,
                                       std::function<void(std::string)> on_failed) {
  try {
    if (phase_ != phase::idle || proc_)
      return make_error(errc::invalid_state, "broker: already started");
    if (auto err = check_options())
      return err;
    auto text = config_text();
    if (!text)
      return text.error();
    std::error_code ec;
    bool drop = drops_privileges(opts_);
    if (drop) {
      if (auto err = link_state_dir(opts_))
        return err;
      owns_home_ = true;
      if (auto err = clear_home(broker_home(opts_)))
        return err;
    }
    fs::create_directories(opts_.state_dir, ec);
    if (ec)
      return make_error(errc::system_error, "broker: cannot create "
                                              + opts_.state_dir.string() + ": " + ec.message());
    // Mosquitto runs as the current user: owner access is what it needs.
    fs::permissions(opts_.state_dir, fs::perms::owner_all, fs::perm_options::add, ec);
    // The real path: the broker's user cannot pass through the write dir.
    auto dir = drop ? broker_home(opts_) : fs::absolute(opts_.state_dir, ec);
    conf_path_ = (dir / "mosquitto.conf").string();
    if (auto err = write_file_atomically(conf_path_, *text, {.mode = 0600}))
      return err;
    if (!fs::exists(acl_file(), ec))
      if (auto err = write_table(acl_file(), "# no things yet\n"))
        return err;
    run_as_.reset();
    if (drop) {
      auto user = require_user(opts_.run_as_user);
      if (!user)
        return user.error();
      run_as_ = *user;
      if (!opts_.dev_mode)
        if (auto err = copy_tls_files(opts_, dir / "tls", *user))
          return err;
      if (auto err = copy_plugin(opts_.plugin_path, dir / kPluginCopy))
        return err;
      if (auto err = hand_over_home(dir, *user))
        return err;
    }
    // The counters of an earlier broker run: counted by whoever ran it.
    fs::remove(stats_file(), ec);
    owner_ = std::move(owner);
    on_failed_ = std::move(on_failed);
    {
      std::lock_guard<std::mutex> lk{mtx_};
      tail_.clear();
      start_exit_.clear();
    }
    phase_ = phase::waiting_for_port;
    deadline_ = std::chrono::steady_clock::now() + opts_.port_wait;
    return {};
  } catch (const std::exception& e) {
    return make_error(errc::system_error, std::string{"broker: start: "} + e.what());
  }
}

process_callbacks broker_process::callbacks() {
  process_callbacks cb;
  cb.on_output = [this](output_stream, const std::string& line) { on_output(line); };
  cb.on_start = [this](pid_t) {
    // The first start is poll_start()'s; later ones are the supervisor's restarts.
    if (phase_ == phase::running && on_restarted_)
      on_restarted_();
  };
  cb.on_exit = [this](const process_exit& ex) {
    if (phase_ == phase::starting) {
      std::lock_guard<std::mutex> lk{mtx_};
      start_exit_ = ex.describe();
    } else if (ex.gave_up && on_failed_) {
      on_failed_("mosquitto " + ex.describe() + " and failed too often: not restarted");
    }
  };
  return cb;
}

caf::error broker_process::launch() {
  process_options po;
  po.argv = {opts_.mosquitto_exe, "-c", conf_path_};
  if (run_as_) {
    // Started as the broker's user, not dropped by Mosquitto itself: a change of user
    // clears the parent-death signal, and the broker must die with groved. setpriv
    // (util-linux) changes the user first, then sets the signal again, then runs Mosquitto.
    po.argv.insert(po.argv.begin(),
                   {"/usr/bin/setpriv", "--reuid=" + std::to_string(run_as_->uid),
                    "--regid=" + std::to_string(run_as_->gid), "--clear-groups",
                    "--pdeathsig=KILL", "--"});
  }
  po.log_prefix = "mosquitto: ";
  // on_output() logs each line at its level (Mosquitto does not print its levels).
  po.stdout_level = output_level::off;
  po.stderr_level = output_level::off;
  po.stop_grace = stop_grace;
  // Not while starting: an exit then is a start failure, reported with its cause.
  po.restart = false;
  po.policy = opts_.restart;
  auto p = process::start(owner_, std::move(po), callbacks());
  if (!p)
    return p.error();
  proc_ = std::move(*p);
  return {};
}

caf::expected<bool> broker_process::poll_start() {
  auto now = std::chrono::steady_clock::now();
  switch (phase_) {
    case phase::idle:
      return make_error(errc::invalid_state, "broker: not started");
    case phase::running:
      return true;
    case phase::waiting_for_port:
      // An earlier broker may still hold the port while it stops.
      if (!listening_inodes(opts_.port).empty() && now < deadline_)
        return false;
      if (auto err = launch()) {
        phase_ = phase::idle;
        return err;
      }
      phase_ = phase::starting;
      deadline_ = now + opts_.start_timeout;
      return false;
    case phase::starting:
      break;
  }
  std::string exit_text;
  {
    std::lock_guard<std::mutex> lk{mtx_};
    exit_text = start_exit_;
  }
  auto fail = [this](errc code, const std::string& what) {
    phase_ = phase::idle;
    proc_.stop(SIGKILL, std::chrono::milliseconds{0});
    proc_ = process{};
    return make_error(code, what + ": " + last_lines());
  };
  if (!exit_text.empty())
    return fail(errc::init_failed, "broker: mosquitto " + exit_text + " while starting");
  if (auto pid = proc_.pid(); pid > 0 && child_listening(pid)) {
    phase_ = phase::running;
    proc_.set_restart(true);
    return true;
  }
  if (now >= deadline_)
    return fail(errc::timeout, "broker: mosquitto does not accept connections on port "
                                 + std::to_string(opts_.port) + " after "
                                 + std::to_string(opts_.start_timeout.count()) + " ms");
  return false;
}

caf::error broker_process::adopt(process p, process_owner owner,
                                 std::function<void(std::string)> on_failed) {
  if (!p.running())
    return make_error(errc::invalid_state, "broker: the kept broker is not running");
  owner_ = std::move(owner);
  on_failed_ = std::move(on_failed);
  proc_ = std::move(p);
  owns_home_ = drops_privileges(opts_);
  proc_.bind(owner_, callbacks());
  proc_.set_restart(true);
  phase_ = phase::running;
  return {};
}

process broker_process::release() {
  phase_ = phase::idle;
  owns_home_ = false; // the next instance runs the broker from it
  proc_.unbind();
  return std::move(proc_);
}

void broker_process::stop() {
  phase_ = phase::idle;
  if (proc_) {
    proc_.stop();
    // The home goes only once Mosquitto is gone (it writes its counters there as it
    // ends): bounded by the SIGKILL after stop_grace.
    auto deadline = std::chrono::steady_clock::now() + stop_grace + 2s;
    while (owns_home_ && proc_.running() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(5ms);
    proc_ = process{};
  }
  if (std::exchange(owns_home_, false))
    retire_home(opts_);
}

caf::error broker_process::write_acl(const std::string& text) {
  try {
    std::error_code ec;
    if (drops_privileges(opts_))
      if (auto err = link_state_dir(opts_))
        return err;
    fs::create_directories(opts_.state_dir, ec);
    if (ec)
      return make_error(errc::system_error, "broker: cannot create " + opts_.state_dir.string()
                                              + ": " + ec.message());
    std::optional<file_owner> owner;
    if (drops_privileges(opts_))
      owner = lookup_user(opts_.run_as_user); // none yet: begin_start hands the file over
    if (auto err = write_table(acl_file(), text, owner))
      return err;
    // Applied now rather than on the plugin's next periodic check.
    if (auto pid = proc_.pid(); phase_ == phase::running && pid > 0 && catches_sighup(pid)
                                && !proc_.signal(SIGHUP))
      ++table_signals_;
    return {};
  } catch (const std::exception& e) {
    return make_error(errc::system_error, std::string{"broker: write_acl: "} + e.what());
  }
}

void broker_process::on_restarted(std::function<void()> f) {
  on_restarted_ = std::move(f);
}

bool broker_process::listening() const {
  auto pid = proc_.pid();
  return phase_ == phase::running && pid > 0 && child_listening(pid);
}

uint64_t broker_process::table_signals() const {
  return table_signals_;
}

uint64_t broker_process::abrupt_disconnects() const {
  return abrupt_disconnects_.load();
}

void broker_process::on_output(const std::string& line) {
  // Mosquitto reports a device that went away without closing TLS (power or network
  // lost, process killed) as an OpenSSL error; for an edge broker that is routine.
  bool abrupt = line.find("OpenSSL Error") != std::string::npos
                && line.find("unexpected eof") != std::string::npos;
  if (abrupt)
    ++abrupt_disconnects_;
  if (owner_.log) {
    try {
      owner_.log->log(abrupt ? spdlog::level::debug : spdlog::level::info, "mosquitto: {}",
                      line);
    } catch (...) {
      // A failing sink must not take the broker's supervision down.
    }
  }
  {
    std::lock_guard<std::mutex> lk{mtx_};
    tail_.push_back(line);
    while (tail_.size() > max_tail_lines)
      tail_.pop_front();
  }
  // broker.log is a convenience (the plugin's log has every line too), so a failed
  // write is dropped.
  std::lock_guard<std::mutex> lk{mtx_};
  if (!log_file_)
    log_file_ = std::make_unique<rotating_log>(opts_.state_dir / "broker.log",
                                               rotating_log_limits{max_log_bytes, 1});
  static_cast<void>(log_file_->write(line));
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
        || !count("acl_errors", result.acl_errors)
        || !count("deferred_connect", result.deferred_connect)
        || !count("idle_closed", result.idle_closed)
        || !count("acl_signal_reloads", result.acl_signal_reloads)
        || !count("denied_subscribe", result.denied_subscribe)
        || !count("wills_forwarded", result.wills_forwarded)
        || !count("wills_dropped", result.wills_dropped)
        || !count("route_frames", result.route_frames)
        || !count("route_dropped", result.route_dropped)
        || !count("route_refused", result.route_refused)
        || !count("route_connects", result.route_connects)
        || !count("route_buffered_bytes", result.route_buffered_bytes))
      return make_error(errc::malformed, "broker stats: a counter in " + file.string()
                                           + " is not a non-negative integer");
    for (auto [key, out] : {std::pair{"denied_publish", &result.denied_publish},
                            std::pair{"refused_oversize", &result.refused_oversize},
                            std::pair{"connected", &result.connected}}) {
      auto it = j.find(key);
      if (it == j.end())
        continue;
      if (!it->is_object())
        return make_error(errc::malformed,
                          std::string{"broker stats: "} + key + " is not an object");
      for (const auto& [thing, n] : it->items()) {
        if (!n.is_number_unsigned())
          return make_error(errc::malformed, std::string{"broker stats: "} + key + "." + thing
                                               + " is not a non-negative integer");
        (*out)[thing] = n.get<uint64_t>();
      }
    }
    if (auto it = j.find("pid"); it != j.end()) {
      if (!it->is_number_integer())
        return make_error(errc::malformed, "broker stats: pid is not an integer");
      result.pid = it->get<int64_t>();
    }
    if (auto it = j.find("last_acl_error"); it != j.end() && it->is_string())
      result.last_acl_error = it->get<std::string>();
    return result;
  } catch (const std::exception& e) {
    return make_error(errc::malformed, std::string{"broker stats: "} + e.what());
  }
}

} // namespace grove::mm
