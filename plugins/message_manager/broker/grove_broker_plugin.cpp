// Grove broker plugin: a Mosquitto 2.0 plugin (plugin API version 5) that enforces the Grove
// subscription table inside the broker. See README.md in this folder for the ACL file format,
// the options, the stats file and the way the source of a message is carried.
//
// Mosquitto is single-threaded: every callback below runs on the broker's main loop, so the
// plugin state needs no locking. No C++ exception may cross into mosquitto: every entry point
// catches everything and answers with a safe (denying) result.

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <mqtt_protocol.h>

#include <openssl/asn1.h>
#include <openssl/crypto.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include <dirent.h>
#include <linux/tcp.h>  // struct tcp_info with tcpi_bytes_received (glibc's lacks it)
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <cerrno>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <cstdlib>
#include <deque>
#include <functional>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "acl.hpp"
#include "route_frame.hpp"
#include "unix_address.hpp"

namespace {

constexpr const char* kSourceProperty = "grove-source";
constexpr std::size_t kMaxTracked = 65536;  // messages whose source is remembered
constexpr const char* kThingPattern = "<thing>";  // client id patterns start with it
constexpr std::size_t kMaxMemberName = 128;  // longest thing name a group file allows
constexpr auto kDeniedLogInterval = std::chrono::seconds(10);  // per thing
constexpr std::size_t kMaxPendingWills = 1024;

using Clock = std::chrono::steady_clock;

// The ACL file parser and the topic matching it uses: acl.hpp (pure, fuzzed by
// tests/fuzz/targets/broker_acl.cpp).
using namespace grove::broker;

// ---------------------------------------------------------------------------------------------
// Plugin state.

struct Tracked {  // the source of one stored message, keyed by its topic pointer
  std::string source;  // the stamped grove-source value: a thing, "grove" or grove's claim
  bool from_grove;     // published by the grove client
  std::size_t topic_hash;  // of the topic text: no copy of (possibly long) topics is kept
  const void* payload;
  uint32_t payloadlen;
  uint64_t seq;
};

struct State {
  mosquitto_plugin_id_t* id = nullptr;
  std::string acl_file;
  std::string stats_file;
  bool insecure_username_auth = false;
  // plugin_opt_require_end: a table without its `end` line is refused (a torn write).
  bool require_end = false;

  Table table;
  bool have_mtime = false;
  struct timespec mtime {};
  off_t size = 0;
  dev_t dev = 0;
  ino_t ino = 0;
  Clock::time_point last_check{};
  // How often ticks and ACL checks stat the file on their own (plugin_opt_check_interval_ms).
  // The writer sends SIGHUP after each new table (MOSQ_EVT_RELOAD), so this only bounds the
  // delay of a change whose signal was missed (e.g. one written while the broker started).
  std::chrono::milliseconds check_interval{1000};

  // statistics
  std::map<std::string, uint64_t> denied_publish;  // per thing
  uint64_t denied_publish_unknown = 0;
  uint64_t denied_delivery = 0;
  uint64_t refused_connect = 0;
  uint64_t acl_reloads = 0;
  uint64_t acl_signal_reloads = 0;  // loads started by MOSQ_EVT_RELOAD (SIGHUP)
  uint64_t acl_errors = 0;
  std::string last_acl_error;
  bool stats_dirty = true;
  Clock::time_point last_stats{};

  std::set<std::string> pending_kick;

  std::unordered_map<const void*, Tracked> tracked;
  std::deque<std::pair<const void*, uint64_t>> tracked_order;
  uint64_t seq = 0;

  // --- limits and start-up (plugin_opt_max_payload_bytes, _max_topic_bytes,
  // _connect_timeout_ms, _listener_port) ---
  std::size_t max_payload_bytes = 0;  // 0: no limit
  std::size_t max_topic_bytes = 0;    // 0: no limit
  std::chrono::milliseconds connect_timeout{0};  // 0: idle connections are not closed
  int listener_port = 0;
  std::map<std::string, uint64_t> refused_oversize;  // per thing: payload or topic too long
  uint64_t deferred_connect = 0;  // closed without CONNACK while not_ready
  uint64_t idle_closed = 0;       // connections closed for sending nothing in time
  Clock::time_point last_oversize_log{};
  struct Idle { ino_t ino; Clock::time_point since; };
  std::unordered_map<int, Idle> idle;  // fd -> socket that has received nothing yet
  Clock::time_point last_idle_scan{};
  // --- identity: client ids, subscriptions, denied publishes, wills ---
  // The allowed client ids of a thing T: T followed by one of these suffixes (from the
  // patterns "<thing>...", a trailing '*' matching any rest). Default: the name alone.
  std::vector<std::string> client_id_suffixes{""};
  struct DeniedLog {
    Clock::time_point last{};
    uint64_t suppressed = 0;
  };
  std::map<std::string, DeniedLog> denied_log;  // rate limit of the denied-publish log, per thing
  uint64_t denied_subscribe = 0;
  // The last allowed WRITE check. A client PUBLISH is followed at once by MOSQ_EVT_MESSAGE;
  // a will (Mosquitto 2.0.11: context__send_will) is fanned out without it, so READ checks
  // of this topic before the next MESSAGE are the will's.
  // Nothing is copied or hashed here (every publish passes): the will's topic and payload
  // stay Mosquitto's, alive until its fan-out ends (context__send_will frees them after
  // db__messages_easy_queue); `user` keeps its capacity from one publish to the next.
  struct PendingWrite {
    bool active = false;
    bool from_grove = false;
    std::string user;
    const char* topic = nullptr;
    const void* payload = nullptr;
    uint32_t payloadlen = 0;
    const void* bound = nullptr;  // the stored topic of the will, once seen
  } pending_write;
  struct Will {  // a will to publish again, stamped, on the next tick
    std::string source, topic;
    std::vector<unsigned char> payload;
    int qos = 0;
  };
  std::vector<Will> wills;
  struct Injected {  // a will published by the plugin, fanned out at the next loop start
    std::string source, topic;
    uint32_t payloadlen = 0;
    uint64_t payload_hash = 0;
    const void* bound = nullptr;
  };
  std::deque<Injected> injected;
  uint64_t wills_forwarded = 0;
  uint64_t wills_dropped = 0;
  // --- presence: the things' authenticated connections (MOSQ_EVT_BASIC_AUTH accepted
  // them; MOSQ_EVT_DISCONNECT, which Mosquitto raises for every client it lets go, ends
  // them), keyed by the client: a thing may hold several (client ids "<thing>-*").
  std::unordered_map<const void*, std::string> online;
  // Things seen online since the broker started, so a disconnect writes 0, not nothing.
  std::set<std::string> seen_online;
  // --- the route socket (plugin_opt_route_socket, README "Route socket"): device publishes
  // matching the table's `route` filters go to message_manager as frames (route_frame.hpp),
  // appended here and written once per loop iteration (MOSQ_EVT_TICK) without blocking.
  std::string route_path;
  bool route_version_checked = false;  // plugin_opt_route_frame_version is kFrameVersion
  int route_listen = -1;
  int route_conn = -1;
  bool route_draining = false;  // the reader ended its side: finish the frame, then close
  std::size_t route_buffer_max = 64u << 20;  // plugin_opt_route_buffer_bytes
  std::string route_buf;          // frames, the first route_sent bytes already written
  std::size_t route_sent = 0;
  std::size_t route_boundary = 0;  // start of the frame holding route_sent (<= route_sent)
  uint64_t route_frames = 0;      // frames written in full
  uint64_t route_dropped = 0;     // frames dropped: buffer full, too big, cut by a lost reader
  uint64_t route_refused = 0;     // connections from a process other than groved
  uint64_t route_connects = 0;
  Clock::time_point last_route_log{};
};

State* g_state = nullptr;

void log(int level, const std::string& msg) {
  mosquitto_log_printf(level, "grove_broker_plugin: %s", msg.c_str());
}

bool read_file(const std::string& path, std::string& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  out = ss.str();
  return true;
}

// Loads the ACL file. On failure the previous table stays in force.
bool load_acl(State& s, bool initial) {
  auto started = Clock::now();
  struct stat st {};
  if (::stat(s.acl_file.c_str(), &st) != 0) {
    s.last_acl_error = "cannot stat " + s.acl_file;
    ++s.acl_errors;
    s.stats_dirty = true;
    log(MOSQ_LOG_ERR, s.last_acl_error);
    return false;
  }
  s.have_mtime = true;
  s.mtime = st.st_mtim;
  s.size = st.st_size;
  s.dev = st.st_dev;
  s.ino = st.st_ino;
  std::string text, error;
  if (!read_file(s.acl_file, text)) {
    s.last_acl_error = "cannot read " + s.acl_file;
    ++s.acl_errors;
    s.stats_dirty = true;
    log(MOSQ_LOG_ERR, s.last_acl_error);
    return false;
  }
  auto t = parse_acl(text, error);
  if (t && s.require_end && !t->complete) {
    t.reset();
    error = "no 'end' line: the file is incomplete (cut short by a crash?)";
  }
  if (!t) {
    s.last_acl_error = s.acl_file + ": " + error;
    ++s.acl_errors;
    s.stats_dirty = true;
    log(MOSQ_LOG_ERR, s.last_acl_error + (initial ? "" : " (keeping the previous table)"));
    return false;
  }
  if (!initial) {
    for (auto& old : s.table.things)
      if (!t->things.count(old)) s.pending_kick.insert(old);  // removed from the group
  }
  s.table = std::move(*t);
  ++s.acl_reloads;
  s.last_acl_error.clear();
  s.stats_dirty = true;
  // The read and parse time: the broker's share of a change (issue 9's bench reads it).
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started);
  char took[32];
  std::snprintf(took, sizeof took, " in %.1f ms", us.count() / 1000.0);
  log(MOSQ_LOG_INFO, "loaded " + s.acl_file + " (" + std::to_string(s.table.things.size()) +
                         " things)" + took);
  return true;
}

// Re-reads the ACL file when it is another file (inode: the writer renames a new one over
// it) or its mtime or size changed. One stat(): cheap enough for every CONNECT.
void reload_if_changed(State& s) {
  s.last_check = Clock::now();
  struct stat st {};
  if (::stat(s.acl_file.c_str(), &st) != 0) return;  // keep the table while it is replaced
  if (s.have_mtime && st.st_dev == s.dev && st.st_ino == s.ino &&
      st.st_mtim.tv_sec == s.mtime.tv_sec && st.st_mtim.tv_nsec == s.mtime.tv_nsec &&
      st.st_size == s.size)
    return;
  load_acl(s, false);
}

// The same on the hot paths (ACL checks, ticks): at most every check_interval.
void maybe_reload(State& s) {
  if (Clock::now() - s.last_check < s.check_interval) return;
  reload_if_changed(s);
}

std::string json_escape(const std::string& in) {
  std::string out;
  for (unsigned char c : in) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

void write_stats(State& s, bool force) {
  if (s.stats_file.empty() || !s.stats_dirty) return;
  auto now = Clock::now();
  if (!force && now - s.last_stats < std::chrono::seconds(1)) return;
  s.last_stats = now;
  std::ostringstream o;
  o << "{\"denied_publish\":{";
  bool first = true;
  for (auto& [thing, n] : s.denied_publish) {
    o << (first ? "" : ",") << '"' << json_escape(thing) << "\":" << n;
    first = false;
  }
  o << "},\"refused_oversize\":{";
  first = true;
  for (auto& [thing, n] : s.refused_oversize) {
    o << (first ? "" : ",") << '"' << json_escape(thing) << "\":" << n;
    first = false;
  }
  o << "},\"connected\":{";
  first = true;
  {
    std::map<std::string, uint64_t> connected;
    for (auto& thing : s.seen_online) connected[thing] = 0;
    for (auto& [client, thing] : s.online) ++connected[thing];
    for (auto& [thing, n] : connected) {
      o << (first ? "" : ",") << '"' << json_escape(thing) << "\":" << n;
      first = false;
    }
  }
  o << "},\"deferred_connect\":" << s.deferred_connect << ",\"idle_closed\":" << s.idle_closed
    << ",\"denied_publish_unknown\":" << s.denied_publish_unknown
    << ",\"denied_delivery\":" << s.denied_delivery << ",\"refused_connect\":" << s.refused_connect
    << ",\"denied_subscribe\":" << s.denied_subscribe
    << ",\"wills_forwarded\":" << s.wills_forwarded << ",\"wills_dropped\":" << s.wills_dropped
    << ",\"acl_reloads\":" << s.acl_reloads << ",\"acl_signal_reloads\":" << s.acl_signal_reloads
    << ",\"acl_errors\":" << s.acl_errors << ",\"route_frames\":" << s.route_frames
    << ",\"route_dropped\":" << s.route_dropped << ",\"route_refused\":" << s.route_refused
    << ",\"route_connects\":" << s.route_connects
    << ",\"route_connected\":" << (s.route_conn >= 0 ? 1 : 0)
    << ",\"route_buffered_bytes\":" << (s.route_buf.size() - s.route_sent)
    << ",\"pid\":" << ::getpid()
    << ",\"last_acl_error\":\"" << json_escape(s.last_acl_error) << "\"}\n";
  std::string tmp = s.stats_file + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return;
    f << o.str();
    if (!f.flush()) return;
  }
  if (std::rename(tmp.c_str(), s.stats_file.c_str()) == 0) s.stats_dirty = false;
}

void track(State& s, const char* topic, const void* payload, uint32_t payloadlen,
           const std::string& source, bool from_grove) {
  uint64_t seq = ++s.seq;
  s.tracked[topic] = Tracked{source, from_grove, std::hash<std::string_view>{}(topic), payload,
                             payloadlen, seq};
  s.tracked_order.emplace_back(topic, seq);
  while (s.tracked_order.size() > kMaxTracked) {
    auto [key, sq] = s.tracked_order.front();
    s.tracked_order.pop_front();
    auto it = s.tracked.find(key);
    if (it != s.tracked.end() && it->second.seq == sq) s.tracked.erase(it);
  }
}

const Tracked* source_of(State& s, const char* topic, const void* payload, uint32_t payloadlen) {
  if (!topic) return nullptr;
  auto it = s.tracked.find(topic);
  if (it == s.tracked.end()) return nullptr;
  const Tracked& t = it->second;
  if (t.payload != payload || t.payloadlen != payloadlen ||
      t.topic_hash != std::hash<std::string_view>{}(topic))
    return nullptr;
  return &t;
}

bool any_match(const std::vector<std::string>& filters, std::string_view topic) {
  for (auto& f : filters)
    if (topic_matches(f, topic)) return true;
  return false;
}

// May a message from `src` on `topic` be delivered to `target`? A thing's message needs
// `deliver <thing> target F`; a grove-injected one `deliver * target F`, or, when grove named
// a specific source X, `deliver @X target F`.
bool may_deliver(const Table& table, const std::string& target, const Tracked& src,
                 std::string_view topic) {
  auto t = table.deliver.find(target);
  if (t == table.deliver.end()) return false;
  auto rules_match = [&](const std::string& key) {
    auto f = t->second.find(key);
    return f != t->second.end() && any_match(f->second, topic);
  };
  if (!src.from_grove) return rules_match(src.source);
  if (rules_match(kAnyGrove)) return true;
  return src.source != kGroveUser && rules_match("@" + src.source);
}

// The source grove claims for a message: the value of its grove-source user properties if
// they all carry one and the same allowed value (cloud, shadow, function:<name>); otherwise
// "grove" (no claim, a disallowed claim such as device:X, or conflicting claims).
std::string grove_claimed_source(const mosquitto_property* props) {
  std::optional<std::string> claim;
  for (const mosquitto_property* p = props; p; p = mosquitto_property_next(p)) {
    if (mosquitto_property_identifier(p) != MQTT_PROP_USER_PROPERTY) continue;
    char* name = nullptr;
    char* value = nullptr;
    if (!mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, false))
      continue;
    std::string n = name ? name : "";
    std::string v = value ? value : "";
    mosquitto_free(name);
    mosquitto_free(value);
    if (n != kSourceProperty) continue;
    if (!valid_grove_source(v) || (claim && *claim != v)) return kGroveUser;
    claim = std::move(v);
  }
  return claim ? *claim : std::string(kGroveUser);
}

// Returns a copy of `props` without user properties named grove-source, plus
// grove-source=<source>. Returns false on allocation failure.
bool restamp(mosquitto_property** props, const std::string& source) {
  mosquitto_property* out = nullptr;
  for (const mosquitto_property* p = *props; p; p = mosquitto_property_next(p)) {
    int id = mosquitto_property_identifier(p);
    int rc = MOSQ_ERR_SUCCESS;
    uint8_t b;
    uint16_t i16;
    uint32_t i32;
    char* name = nullptr;
    char* value = nullptr;
    void* bin = nullptr;
    if (id == MQTT_PROP_USER_PROPERTY) {
      if (mosquitto_property_read_string_pair(p, id, &name, &value, false)) {
        if (std::strcmp(name, kSourceProperty) != 0)
          rc = mosquitto_property_add_string_pair(&out, id, name, value);
        mosquitto_free(name);
        mosquitto_free(value);
      }
    } else if (mosquitto_property_read_byte(p, id, &b, false)) {
      rc = mosquitto_property_add_byte(&out, id, b);
    } else if (mosquitto_property_read_int16(p, id, &i16, false)) {
      rc = mosquitto_property_add_int16(&out, id, i16);
    } else if (mosquitto_property_read_int32(p, id, &i32, false)) {
      rc = mosquitto_property_add_int32(&out, id, i32);
    } else if (mosquitto_property_read_varint(p, id, &i32, false)) {
      rc = mosquitto_property_add_varint(&out, id, i32);
    } else if (mosquitto_property_read_string(p, id, &value, false)) {
      rc = mosquitto_property_add_string(&out, id, value);
      mosquitto_free(value);
    } else if (mosquitto_property_read_binary(p, id, &bin, &i16, false)) {
      rc = mosquitto_property_add_binary(&out, id, bin, i16);
      mosquitto_free(bin);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
      mosquitto_property_free_all(&out);
      return false;
    }
  }
  if (mosquitto_property_add_string_pair(&out, MQTT_PROP_USER_PROPERTY, kSourceProperty,
                                         source.c_str()) != MOSQ_ERR_SUCCESS) {
    mosquitto_property_free_all(&out);
    return false;
  }
  mosquitto_property_free_all(props);
  *props = out;
  return true;
}

// ---------------------------------------------------------------------------------------------
// The route socket: the broker's side. Only groved (the broker's parent, which started it)
// may connect: SO_PEERCRED's pid must be getppid(); anyone else is refused and counted.

// Moves route_boundary over the frames written in full.
void route_advance(State& s) {
  while (s.route_boundary < s.route_sent) {
    auto len = frame_length_at(std::string_view(s.route_buf).substr(s.route_boundary));
    if (len == 0 || s.route_boundary + len > s.route_sent) break;
    s.route_boundary += len;
    ++s.route_frames;
  }
  if (s.route_sent == s.route_buf.size()) {
    s.route_buf.clear();  // keeps its capacity
    s.route_sent = s.route_boundary = 0;
  } else if (s.route_boundary > (1u << 20) && s.route_boundary > s.route_buf.size() / 2) {
    s.route_buf.erase(0, s.route_boundary);
    s.route_sent -= s.route_boundary;
    s.route_boundary = 0;
  }
}

// Closes the reader's connection. A frame written in part is lost with it (the reader drops
// an incomplete frame): counted, and the rest of it is never written to the next reader.
void route_close(State& s) {
  if (s.route_conn < 0) return;
  ::close(s.route_conn);
  s.route_conn = -1;
  s.route_draining = false;
  if (s.route_boundary < s.route_sent) {
    auto len = frame_length_at(std::string_view(s.route_buf).substr(s.route_boundary));
    s.route_sent = s.route_boundary + len;
    s.route_boundary = s.route_sent;
    ++s.route_dropped;
    route_advance(s);
  }
  s.stats_dirty = true;
}

// Writes what the buffer holds, as far as the socket takes it without blocking.
void route_flush(State& s) {
  if (s.route_conn < 0) return;
  while (s.route_sent < s.route_buf.size()) {
    std::size_t limit = s.route_buf.size();
    if (s.route_draining) {
      if (s.route_boundary == s.route_sent) break;  // nothing more for a leaving reader
      limit = s.route_boundary +
              frame_length_at(std::string_view(s.route_buf).substr(s.route_boundary));
    }
    ssize_t n = ::send(s.route_conn, s.route_buf.data() + s.route_sent, limit - s.route_sent,
                       MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      s.route_sent += static_cast<std::size_t>(n);
      route_advance(s);
      s.stats_dirty = true;  // route_buffered_bytes
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    log(MOSQ_LOG_NOTICE, "route socket: the reader went away");
    route_close(s);
    return;
  }
  route_advance(s);
  if (s.route_draining && s.route_boundary == s.route_sent) {
    // Every frame is whole on the reader's side; the rest waits for the next reader.
    ::shutdown(s.route_conn, SHUT_WR);
    route_close(s);
    log(MOSQ_LOG_INFO, "route socket: the reader left; " +
                           std::to_string(s.route_buf.size() - s.route_sent) +
                           " bytes kept for the next one");
  }
}

// Appends one device message (its source already stamped) when a `route` filter matches.
void route_append(State& s, const std::string& source, const char* topic, const void* payload,
                  uint32_t payloadlen, int qos, bool retain,
                  const mosquitto_property* props) {
  if (s.route_listen < 0 || !topic || s.table.route.empty()) return;
  if (!any_match(s.table.route, topic)) return;
  std::string_view content_type;
  std::vector<std::pair<std::string_view, std::string_view>> user;
  // Mosquitto reads a property only as a copy; a deque keeps the copies where they are.
  std::deque<std::string> owned;
  for (const mosquitto_property* p = props; p; p = mosquitto_property_next(p)) {
    int id = mosquitto_property_identifier(p);
    if (id == MQTT_PROP_CONTENT_TYPE) {
      char* v = nullptr;
      if (mosquitto_property_read_string(p, id, &v, false) && v) {
        content_type = owned.emplace_back(v);
        mosquitto_free(v);
      }
    } else if (id == MQTT_PROP_USER_PROPERTY) {
      char* k = nullptr;
      char* v = nullptr;
      if (mosquitto_property_read_string_pair(p, id, &k, &v, false)) {
        if (k && std::strcmp(k, kSourceProperty) != 0) {
          std::string_view key = owned.emplace_back(k);
          std::string_view value = owned.emplace_back(v ? v : "");
          user.emplace_back(key, value);
        }
        mosquitto_free(k);
        mosquitto_free(v);
      }
    }
  }
  auto size = frame_size(source, topic, payloadlen, content_type, user);
  if (size == 0 || s.route_buf.size() - s.route_sent + size > s.route_buffer_max) {
    ++s.route_dropped;  // like Mosquitto's max_queued_bytes for a slow client
    s.stats_dirty = true;
    auto now = Clock::now();
    if (now - s.last_route_log >= std::chrono::seconds(1)) {
      s.last_route_log = now;
      log(MOSQ_LOG_WARNING, "route socket: dropped a message of '" + source + "' on '" + topic +
                                "': " +
                                (size == 0 ? std::string("too large for a frame")
                                           : "the buffer holds " +
                                                 std::to_string(s.route_buf.size() - s.route_sent) +
                                                 " bytes (" + std::to_string(s.route_dropped) +
                                                 " dropped so far)"));
    }
    return;
  }
  encode_frame(s.route_buf, size, source, topic, payload, payloadlen,
               static_cast<uint8_t>(qos), retain, content_type, user);
  s.stats_dirty = true;
  if (s.route_buf.size() - s.route_sent >= (256u << 10)) route_flush(s);  // a burst
}

// Takes the connections waiting on the route socket: groved's replaces the one before
// (a new message_manager instance after a hot reload), anyone else's is refused.
void route_accept(State& s) {
  if (s.route_listen < 0) return;
  while (true) {
    int fd = ::accept4(s.route_listen, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    ucred cred{};
    socklen_t len = sizeof cred;
    pid_t parent = ::getppid();
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid != parent ||
        parent <= 1) {
      ::close(fd);
      ++s.route_refused;
      s.stats_dirty = true;
      log(MOSQ_LOG_WARNING, "route socket: refused a connection from pid " +
                                std::to_string(cred.pid) + " (uid " + std::to_string(cred.uid) +
                                "): only groved (pid " + std::to_string(parent) + ") may read");
      continue;
    }
    route_close(s);
    int sndbuf = 4 << 20;
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    s.route_conn = fd;
    ++s.route_connects;
    s.stats_dirty = true;
    log(MOSQ_LOG_INFO, "route socket: groved connected (" +
                           std::to_string(s.route_buf.size() - s.route_sent) +
                           " bytes waiting for it)");
  }
}

// The reader ends its side to leave (message_manager stops or reloads): then the frame in
// progress is finished and the connection closed, so the next reader starts on a frame.
void route_poll(State& s) {
  if (s.route_conn < 0 || s.route_draining) return;
  char b[64];
  ssize_t n = ::recv(s.route_conn, b, sizeof b, MSG_DONTWAIT);
  if (n == 0) {
    s.route_draining = true;
  } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
    route_close(s);
  }
}

bool route_open(State& s) {
  // Any length: a path past sun_path's 108 bytes is bound through its directory.
  unix_address addr{s.route_path};
  if (!addr.ok()) {
    log(MOSQ_LOG_ERR, "route socket " + s.route_path + ": " + std::strerror(errno));
    return false;
  }
  ::unlink(s.route_path.c_str());  // a killed broker's
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  auto old = ::umask(0077);  // 0600 from the start: no window for another user
  int rc = ::bind(fd, addr.get(), addr.size());
  ::umask(old);
  if (rc != 0 || ::listen(fd, 8) != 0) {
    log(MOSQ_LOG_ERR, "route socket " + s.route_path + ": " + std::strerror(errno));
    ::close(fd);
    return false;
  }
  s.route_listen = fd;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Identity: client ids bound to the certificate, SUBSCRIBE checks, the denied-publish log and
// the will path.

// Parses "plugin_opt_client_id_patterns": blank-separated patterns, each "<thing>" followed by
// a literal suffix, optionally ending in '*' (any rest). Empty result on a bad pattern.
std::vector<std::string> parse_client_id_patterns(std::string_view text) {
  std::vector<std::string> out;
  std::string_view rest = text;
  for (auto tok = next_token(rest); !tok.empty(); tok = next_token(rest)) {
    std::string_view pat = tok;
    if (pat.substr(0, std::strlen(kThingPattern)) != kThingPattern) return {};
    auto suffix = pat.substr(std::strlen(kThingPattern));
    auto star = suffix.find('*');
    if (star != std::string_view::npos && star + 1 != suffix.size()) return {};
    if (suffix.find_first_of("+#/") != std::string_view::npos) return {};
    out.emplace_back(suffix);
  }
  return out;
}

bool suffix_matches(const std::string& pattern, std::string_view rest) {
  if (!pattern.empty() && pattern.back() == '*') {
    std::string_view lit(pattern.data(), pattern.size() - 1);
    return rest.substr(0, lit.size()) == lit;
  }
  return rest == pattern;
}

// The member (a thing or grove) that owns client id `id`: the longest member name N such that
// `id` is N followed by an allowed suffix. Longest, so that with "<thing>-*" the id "B-x"
// belongs to thing "B-x", not to thing "B".
// Member names are at most kMaxMemberName characters (group files allow 128), so only
// prefixes up to that length are tried: a long client id costs no more than a short one.
std::optional<std::string> client_id_owner(const State& s, std::string_view id) {
  for (std::size_t n = std::min(id.size(), kMaxMemberName); n > 0; --n) {
    std::string name(id.substr(0, n));
    if (name != kGroveUser && !s.table.things.count(name)) continue;
    for (auto& suffix : s.client_id_suffixes)
      if (suffix_matches(suffix, id.substr(n))) return name;
  }
  return std::nullopt;
}

// Why client id `id` is not allowed for member `who` (empty when it is).
std::string client_id_refusal(const State& s, const std::string& who, const char* id) {
  std::string cid = id ? id : "";
  auto owner = client_id_owner(s, cid);
  if (owner && *owner == who) return {};
  return "client id '" + cid + "' is not allowed for '" + who + "'" +
         (owner ? " (it belongs to '" + *owner + "')" : " (it must be the thing name)");
}

// May `user` subscribe to `filter`? Only if some topic the filter matches could be delivered
// to it by a `deliver` rule (from any source); otherwise the SUBACK says not authorized
// instead of a grant that never receives anything.
bool may_subscribe(const Table& table, const std::string& user, std::string_view filter) {
  // A shared subscription ($share/<group>/<filter>, MQTT 5) is checked by its filter.
  constexpr std::string_view share = "$share/";
  if (filter.substr(0, share.size()) == share) {
    auto slash = filter.find('/', share.size());
    if (slash == std::string_view::npos) return false;
    filter.remove_prefix(slash + 1);
  }
  auto t = table.deliver.find(user);
  if (t == table.deliver.end()) return false;
  for (auto& [source, filters] : t->second)
    for (auto& f : filters)
      if (filters_overlap(f, filter)) return true;
  return false;
}

// Logs a denied publish at info level, at most once per kDeniedLogInterval per thing (the
// number left out is given with the next line).
void log_denied_publish(State& s, const std::string& user, const char* topic) {
  auto& d = s.denied_log[user];
  auto now = Clock::now();
  if (d.last != Clock::time_point{} && now - d.last < kDeniedLogInterval) {
    ++d.suppressed;
    return;
  }
  std::string more = d.suppressed ? " (" + std::to_string(d.suppressed) +
                                        " more denied publishes of this thing not logged)"
                                  : "";
  d.last = now;
  d.suppressed = 0;
  log(MOSQ_LOG_INFO, "denied publish by '" + user + "' on '" + (topic ? topic : "") +
                         "': no route from device:" + user +
                         " has a subject matching this topic (missing: pub " + user + " " +
                         (topic ? topic : "") + ")" + more);
}

uint64_t payload_hash(const void* payload, uint32_t len) {  // FNV-1a
  uint64_t h = 1469598103934665603ull;
  auto* p = static_cast<const unsigned char*>(payload);
  for (uint32_t i = 0; p && i < len; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// READ checks of a will. Mosquitto 2.0.11 fans a will out without MOSQ_EVT_MESSAGE, so it
// carries whatever properties the device put on it (a forged grove-source too) and no
// recorded source. Its own delivery is denied to everyone; a copy stamped with the real
// source is published on the next tick and then follows the table like any publish.
// Returns true when this READ check is one of the will's.
bool is_will_delivery(State& s, const mosquitto_evt_acl_check& ev) {
  auto& p = s.pending_write;
  if (!p.active || !ev.topic) return false;
  if (p.bound) {
    if (p.bound == ev.topic) return true;
    p.active = false;  // another stored message: the will's fan-out is over
    return false;
  }
  // The will's own payload against the stored copy being fanned out: compared only here,
  // when READ checks follow a WRITE without MESSAGE (a will), never for a publish.
  if (p.payloadlen != ev.payloadlen || std::strcmp(p.topic, ev.topic) != 0 ||
      (ev.payloadlen && (!p.payload || !ev.payload ||
                         std::memcmp(p.payload, ev.payload, ev.payloadlen) != 0)))
    return false;
  p.bound = ev.topic;
  if (p.from_grove || ev.topic[0] == '$' || s.wills.size() >= kMaxPendingWills) {
    ++s.wills_dropped;
    s.stats_dirty = true;
    log(MOSQ_LOG_NOTICE, "dropped the will of '" + p.user + "' on '" + ev.topic + "'");
    return true;
  }
  auto* b = static_cast<const unsigned char*>(ev.payload);
  s.wills.push_back(State::Will{p.user, ev.topic, std::vector<unsigned char>(b, b + ev.payloadlen),
                         ev.qos});
  return true;
}

// Publishes the wills caught since the last tick, stamped with their device's name; they are
// fanned out at the start of the next loop iteration (Mosquitto's queue_plugin_msgs), before
// any other client traffic.
void publish_wills(State& s) {
  s.injected.clear();
  s.pending_write.active = false;
  auto wills = std::move(s.wills);
  s.wills.clear();
  for (auto& w : wills) {
    mosquitto_property* props = nullptr;
    void* payload = w.payload.empty() ? nullptr : mosquitto_malloc(w.payload.size());
    if ((!w.payload.empty() && !payload) ||
        mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, kSourceProperty,
                                           w.source.c_str()) != MOSQ_ERR_SUCCESS) {
      mosquitto_free(payload);
      mosquitto_property_free_all(&props);
      ++s.wills_dropped;
      continue;
    }
    if (payload) std::memcpy(payload, w.payload.data(), w.payload.size());
    auto len = static_cast<uint32_t>(w.payload.size());
    // On success Mosquitto owns payload and props.
    if (mosquitto_broker_publish(nullptr, w.topic.c_str(), static_cast<int>(len), payload, w.qos,
                                 false, props) != MOSQ_ERR_SUCCESS) {
      mosquitto_free(payload);
      mosquitto_property_free_all(&props);
      ++s.wills_dropped;
      continue;
    }
    s.injected.push_back(State::Injected{w.source, w.topic, len, payload_hash(w.payload.data(), len),
                                  nullptr});
    route_append(s, w.source, w.topic.c_str(), w.payload.data(), len, w.qos, false, nullptr);
    ++s.wills_forwarded;
  }
  if (!wills.empty()) s.stats_dirty = true;
}

// The source of a READ check of a will published by publish_wills(), or nullopt. They are
// fanned out in order, one after the other, before anything else happens; any other READ
// check ends them.
std::optional<std::string> injected_source(State& s, const mosquitto_evt_acl_check& ev) {
  while (!s.injected.empty() && ev.topic) {
    auto& f = s.injected.front();
    if (f.bound == ev.topic) return f.source;
    if (f.bound) {  // that one is done
      s.injected.pop_front();
      continue;
    }
    auto it = s.injected.begin();
    for (; it != s.injected.end(); ++it)
      if (!it->bound && it->topic == ev.topic && it->payloadlen == ev.payloadlen &&
          it->payload_hash == payload_hash(ev.payload, ev.payloadlen))
        break;
    if (it == s.injected.end()) {
      s.injected.clear();
      return std::nullopt;
    }
    s.injected.erase(s.injected.begin(), it);  // those had no subscriber
    s.injected.front().bound = ev.topic;
    return s.injected.front().source;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Callbacks.

// The CN of a verified client certificate, as UTF-8; nullopt when the certificate has no CN,
// more than one (ambiguous) or one with an embedded NUL.
std::optional<std::string> certificate_cn(X509* cert) {
  X509_NAME* name = X509_get_subject_name(cert);
  if (!name) return std::nullopt;
  int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (i < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, i) >= 0) return std::nullopt;
  X509_NAME_ENTRY* entry = X509_NAME_get_entry(name, i);
  ASN1_STRING* data = entry ? X509_NAME_ENTRY_get_data(entry) : nullptr;
  if (!data) return std::nullopt;
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0 || !utf8) return std::nullopt;
  std::string cn(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(len));
  OPENSSL_free(utf8);
  if (cn.empty() || cn.find('\0') != std::string::npos) return std::nullopt;
  return cn;
}

int refuse_connect(State& s, const std::string& why) {
  ++s.refused_connect;
  s.stats_dirty = true;
  log(MOSQ_LOG_NOTICE, "refused connect of " + why);
  write_stats(s, false);
  return MOSQ_ERR_AUTH;
}

// --- start-up, limits and idle connections ---

// While the table says not_ready (the core has no group yet), a client that is no thing is
// told to come back: the connection is closed without a CONNACK. Mosquitto 2.0.11 lets a
// BASIC_AUTH callback answer only "success" or "not authorized" (MOSQ_ERR_AUTH); any other
// result closes the connection without a CONNACK (src/handle_connect.c, 887-909), which device
// libraries treat as a lost connection and retry, whereas they give up on a refused CONNACK:
// MQTT.js 5 with its defaults gives up after "server unavailable" (code 3 / 0x88) too.
int defer_connect(State& s, const std::string& who) {
  ++s.deferred_connect;
  s.stats_dirty = true;
  log(MOSQ_LOG_NOTICE, "closed the connection of " + who +
                           " without CONNACK: no group yet, the client may retry");
  write_stats(s, false);
  return MOSQ_ERR_UNKNOWN;
}

// A thing's publish whose payload exceeds max_payload_bytes or whose topic exceeds
// max_topic_bytes is denied and counted per thing. Mosquitto 2.0.11 answers an ACL denial
// with PUBACK/PUBREC "Not authorized" (0x87) to MQTT 5 publishers; a plugin cannot choose
// another reason code.
bool over_limits(State& s, const std::string& thing, const char* topic, uint32_t payloadlen) {
  std::size_t topic_len = topic ? std::strlen(topic) : 0;
  bool too_large = s.max_payload_bytes && payloadlen > s.max_payload_bytes;
  bool too_long = s.max_topic_bytes && topic_len > s.max_topic_bytes;
  if (!too_large && !too_long) return false;
  ++s.refused_oversize[thing];
  s.stats_dirty = true;
  auto now = Clock::now();
  if (now - s.last_oversize_log >= std::chrono::seconds(1)) {  // a flood logs once a second
    s.last_oversize_log = now;
    log(MOSQ_LOG_NOTICE,
        "refused a publish of '" + thing + "': " +
            (too_large ? "payload of " + std::to_string(payloadlen) + " bytes above " +
                             std::to_string(s.max_payload_bytes)
                       : "topic of " + std::to_string(topic_len) + " bytes above " +
                             std::to_string(s.max_topic_bytes)));
  }
  return true;
}

// The local port of a connected TCP socket, or 0.
int local_port(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (addr.ss_family == AF_INET6)
    return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return 0;
}

// Closes accepted connections that have not sent a single byte (no TLS ClientHello, no
// CONNECT) within connect_timeout. Mosquitto 2.0.11 has no such timeout: before CONNECT it
// applies a fixed 60 s keep-alive (90 s in all). The plugin runs inside the broker, so it
// looks at the broker's own sockets on the listener port and shuts idle ones down
// (shutdown(), never close(): Mosquitto sees the end of the stream and frees the client).
void reap_idle(State& s) {
  if (s.connect_timeout.count() <= 0 || s.listener_port <= 0) return;
  auto now = Clock::now();
  if (now - s.last_idle_scan < std::chrono::milliseconds(250)) return;
  s.last_idle_scan = now;
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return;
  std::unordered_map<int, State::Idle> seen;
  while (dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    long v = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    int fd = static_cast<int>(v);
    if (fd == ::dirfd(dir)) continue;
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    if (local_port(fd) != s.listener_port) continue;
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0) continue;  // listener
    tcp_info ti{};
    socklen_t tlen = sizeof ti;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tlen) != 0 ||
        tlen < offsetof(tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received)
      continue;
    if (ti.tcpi_bytes_received > 0) continue;  // the client has spoken: Mosquitto's business
    auto it = s.idle.find(fd);
    auto since = it != s.idle.end() && it->second.ino == st.st_ino ? it->second.since : now;
    if (now - since >= s.connect_timeout) {
      ::shutdown(fd, SHUT_RDWR);
      ++s.idle_closed;
      s.stats_dirty = true;
    } else {
      seen.emplace(fd, State::Idle{st.st_ino, since});
    }
  }
  ::closedir(dir);
  s.idle = std::move(seen);
}

// A client that presented a certificate (verified by the listener: require_certificate true)
// is identified by its CN alone. Refused here, at CONNECT, unless the CN is a thing of the
// table or grove; a username the client sent must equal the CN. The CN becomes the
// client's username, which every later check reads.
int certificate_auth(State& s, mosquitto_evt_basic_auth& ev, X509* cert) {
  auto cn = certificate_cn(cert);
  if (!cn) return refuse_connect(s, "a client whose certificate has no single, valid CN");
  // mosquitto_set_username frees the string ev.username points to: copy it first.
  std::optional<std::string> sent;
  if (ev.username) sent = ev.username;
  if (*cn != kGroveUser && !s.table.things.count(*cn)) {
    if (s.table.not_ready) return defer_connect(s, "certificate CN '" + *cn + "'");
    return refuse_connect(s, "certificate CN '" + *cn + "': not a thing of the group");
  }
  if (sent && *sent != *cn)
    return refuse_connect(s, "certificate CN '" + *cn + "': username '" + *sent +
                                 "' differs from the CN");
  if (auto why = client_id_refusal(s, *cn, mosquitto_client_id(ev.client)); !why.empty())
    return refuse_connect(s, "certificate CN '" + *cn + "': " + why);
  if (mosquitto_set_username(ev.client, cn->c_str()) != MOSQ_ERR_SUCCESS)
    return refuse_connect(s, "certificate CN '" + *cn + "': cannot set the username");
  return MOSQ_ERR_SUCCESS;
}

int authenticate(State& s, mosquitto_evt_basic_auth* ev);

// A thing's accepted connection counts as online until its MOSQ_EVT_DISCONNECT.
int on_basic_auth(int, void* event_data, void* userdata) noexcept {
  try {
    auto& s = *static_cast<State*>(userdata);
    auto* ev = static_cast<mosquitto_evt_basic_auth*>(event_data);
    int rc = authenticate(s, ev);
    if (rc == MOSQ_ERR_SUCCESS) {
      const char* user = mosquitto_client_username(ev->client);
      if (user && std::strcmp(user, kGroveUser) != 0) {
        s.online[ev->client] = user;
        s.seen_online.insert(user);
        s.stats_dirty = true;
      }
    }
    return rc;
  } catch (...) {
    return MOSQ_ERR_AUTH;
  }
}

int on_disconnect(int, void* event_data, void* userdata) noexcept {
  try {
    auto& s = *static_cast<State*>(userdata);
    auto* ev = static_cast<mosquitto_evt_disconnect*>(event_data);
    if (s.online.erase(ev->client) > 0) {
      s.stats_dirty = true;
      write_stats(s, false);
    }
  } catch (...) {
  }
  return MOSQ_ERR_SUCCESS;
}

// Decides a CONNECT (see certificate_auth; the username test mode).
int authenticate(State& s, mosquitto_evt_basic_auth* ev) {
  reload_if_changed(s);  // at once: a device just added to the group must get in
  // Mosquitto 2.0.11 calls this for every CONNECT on a listener without
  // use_identity_as_username, whether or not the client sent a username.
  if (auto* cert = static_cast<X509*>(mosquitto_client_certificate(ev->client))) {
    std::unique_ptr<X509, decltype(&X509_free)> owned{cert, &X509_free};  // caller frees
    return certificate_auth(s, *ev, cert);
  }
  // No certificate: a username/password login, accepted only in the explicit test mode.
  if (s.insecure_username_auth && ev->username &&
      (std::strcmp(ev->username, kGroveUser) == 0 || s.table.things.count(ev->username))) {
    std::string user = ev->username;
    if (auto why = client_id_refusal(s, user, mosquitto_client_id(ev->client)); !why.empty())
      return refuse_connect(s, "username '" + user + "': " + why);
    return MOSQ_ERR_SUCCESS;
  }
  if (s.insecure_username_auth && ev->username && s.table.not_ready)
    return defer_connect(s, std::string("username '") + ev->username + "'");
  return refuse_connect(s, std::string("client with username '") +
                               (ev->username ? ev->username : "") + "'");
}

int on_acl_check(int, void* event_data, void* userdata) noexcept {
  try {
    auto& s = *static_cast<State*>(userdata);
    auto* ev = static_cast<mosquitto_evt_acl_check*>(event_data);
    maybe_reload(s);
    const char* u = mosquitto_client_username(ev->client);
    std::string user = u ? u : "";
    bool is_grove = user == kGroveUser;
    bool is_thing = !is_grove && s.table.things.count(user) > 0;
    int rc = MOSQ_ERR_ACL_DENIED;

    if (!is_grove && !is_thing) {
      // Not a member of the group: refused at CONNECT, so this is a thing removed from the
      // table while connected. Deny everything and disconnect it at the next tick.
      if (ev->access == MOSQ_ACL_WRITE) {
        ++s.denied_publish_unknown;
        s.stats_dirty = true;
      }
      s.pending_kick.insert(user);
      rc = MOSQ_ERR_ACL_DENIED;
    } else {
      switch (ev->access) {
        case MOSQ_ACL_SUBSCRIBE:
          // Delivery is filtered per message (READ); a filter that can match nothing the
          // table delivers to this thing is refused in SUBACK (0x80 / 0x87).
          if (is_grove || (ev->topic && may_subscribe(s.table, user, ev->topic))) {
            rc = MOSQ_ERR_SUCCESS;
          } else {
            ++s.denied_subscribe;
            s.stats_dirty = true;
            log(MOSQ_LOG_INFO, "denied subscription of '" + user + "' to '" +
                                   (ev->topic ? ev->topic : "") +
                                   "': no route to device:" + user + " can match it");
          }
          break;
        case MOSQ_ACL_UNSUBSCRIBE:
          rc = MOSQ_ERR_SUCCESS;
          break;
        case MOSQ_ACL_WRITE: {
          if (is_grove) {
            rc = MOSQ_ERR_SUCCESS;
          } else if (over_limits(s, user, ev->topic, ev->payloadlen)) {
            rc = MOSQ_ERR_ACL_DENIED;
          } else {
            auto it = s.table.pub.find(user);
            if (it != s.table.pub.end() && ev->topic && any_match(it->second, ev->topic)) {
              rc = MOSQ_ERR_SUCCESS;
            } else {
              ++s.denied_publish[user];
              s.stats_dirty = true;
              log_denied_publish(s, user, ev->topic);
            }
          }
          // Remembered until the MESSAGE event that follows a PUBLISH; without one, the
          // READ checks that follow are a will's (is_will_delivery). Pointers only: a
          // $CONTROL/ publish is freed without MESSAGE, so it is not remembered.
          auto& p = s.pending_write;
          p.active = rc == MOSQ_ERR_SUCCESS && ev->topic &&
                     std::strncmp(ev->topic, "$CONTROL/", 9) != 0;
          p.bound = nullptr;
          if (p.active) {
            p.from_grove = is_grove;
            p.user.assign(user);
            p.topic = ev->topic;
            p.payload = ev->payload;
            p.payloadlen = ev->payloadlen;
          }
          s.injected.clear();
          break;
        }
        case MOSQ_ACL_READ: {
          // Messages that never passed MOSQ_EVT_MESSAGE (unstamped) first, so that their
          // source is never looked up by a stored address a stamped message used before:
          // a retained message (the plugin clears retain on every stamped one) and a will
          // reach nobody; a will's stamped copy has its device as source.
          // With the route socket, grove's client subscribes to the `route` filters only so
          // that a will there raises these checks (and is caught); what it would receive
          // goes over the socket instead, so it is denied to grove without being counted.
          bool routed = is_grove && s.route_listen >= 0;
          if (ev->retain || is_will_delivery(s, *ev)) {
            rc = MOSQ_ERR_ACL_DENIED;
          } else if (auto will_source = injected_source(s, *ev)) {
            if (routed) break;
            Tracked src{*will_source, false, {}, nullptr, 0, 0};
            if (is_grove || may_deliver(s.table, user, src, ev->topic)) rc = MOSQ_ERR_SUCCESS;
          } else if (routed) {
            break;
          } else if (is_grove) {
            rc = MOSQ_ERR_SUCCESS;  // the internal client sees everything; source in property
            break;
          } else if (ev->topic && std::strncmp(ev->topic, "$SYS/", 5) == 0) {
            rc = MOSQ_ERR_ACL_DENIED;  // the broker's own messages: no thing is their source
          } else {
            const Tracked* source = source_of(s, ev->topic, ev->payload, ev->payloadlen);
            if (source && may_deliver(s.table, user, *source, ev->topic)) rc = MOSQ_ERR_SUCCESS;
          }
          if (rc != MOSQ_ERR_SUCCESS) {
            ++s.denied_delivery;
            s.stats_dirty = true;
          }
          break;
        }
        default:
          rc = MOSQ_ERR_ACL_DENIED;
      }
    }
    write_stats(s, false);
    return rc;
  } catch (...) {
    return MOSQ_ERR_ACL_DENIED;
  }
}

int on_message(int, void* event_data, void* userdata) noexcept {
  try {
    auto& s = *static_cast<State*>(userdata);
    auto* ev = static_cast<mosquitto_evt_message*>(event_data);
    s.pending_write.active = false;  // a PUBLISH, not a will (and its pointers go stale)
    s.injected.clear();
    const char* u = mosquitto_client_username(ev->client);
    std::string user = u ? u : "";
    bool from_grove = user == kGroveUser;
    if (!from_grove && !s.table.things.count(user)) return MOSQ_ERR_ACL_DENIED;
    // The source is stamped by the broker; whatever a thing put there is dropped. Only grove
    // may name the origin of what it injects, and only as cloud, shadow, bridge or
    // function:<name>.
    std::string source = from_grove ? grove_claimed_source(ev->properties) : user;
    if (!restamp(&ev->properties, source)) return MOSQ_ERR_NOMEM;
    // Retained messages are not supported locally (as in Greengrass v1): a retained message
    // would be delivered long after its source is known.
    ev->retain = false;
    track(s, ev->topic, ev->payload, ev->payloadlen, source, from_grove);
    // The retain flag as delivered (cleared above; Mosquitto refuses retained publishes
    // anyway): message_manager's targets see what the broker's subscribers see.
    if (!from_grove)
      route_append(s, source, ev->topic, ev->payload, ev->payloadlen, ev->qos, ev->retain,
                   ev->properties);
    return MOSQ_ERR_SUCCESS;
  } catch (...) {
    return MOSQ_ERR_ACL_DENIED;
  }
}

// SIGHUP to the broker (broker_process::write_acl after a new table): Mosquitto 2.0.11
// re-reads mosquitto.conf, keeps every connection and raises MOSQ_EVT_RELOAD, and the table
// is re-read at once instead of on the next periodic check.
int on_reload(int, void*, void* userdata) noexcept {
  try {
    auto& s = *static_cast<State*>(userdata);
    auto before = s.acl_reloads;
    reload_if_changed(s);
    if (s.acl_reloads != before) ++s.acl_signal_reloads;
    write_stats(s, true);
  } catch (...) {
  }
  return MOSQ_ERR_SUCCESS;
}

int on_tick(int, void*, void* userdata) noexcept {
  try {
    auto& s = *static_cast<State*>(userdata);
    maybe_reload(s);
    reap_idle(s);
    publish_wills(s);
    route_accept(s);
    route_poll(s);
    route_flush(s);
    if (!s.pending_kick.empty()) {
      auto kick = std::move(s.pending_kick);
      s.pending_kick.clear();
      for (auto& user : kick) {
        if (user == kGroveUser || s.table.things.count(user)) continue;  // (re)admitted
        log(MOSQ_LOG_NOTICE, "disconnecting client '" + user + "': not a thing of the group");
        mosquitto_kick_client_by_username(user.empty() ? nullptr : user.c_str(), false);
      }
    }
    write_stats(s, false);
  } catch (...) {
  }
  return MOSQ_ERR_SUCCESS;
}

}  // namespace

#define GROVE_EXPORT __attribute__((visibility("default")))

extern "C" {

GROVE_EXPORT int mosquitto_plugin_version(int supported_version_count, const int* supported_versions) {
  for (int i = 0; i < supported_version_count; ++i)
    if (supported_versions[i] == 5) return 5;
  return -1;
}

GROVE_EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t* identifier, void** userdata,
                          struct mosquitto_opt* options, int option_count) {
  try {
    if (g_state) {
      log(MOSQ_LOG_ERR, "loaded twice; only one instance is supported");
      return MOSQ_ERR_INVAL;
    }
    auto s = std::make_unique<State>();
    s->id = identifier;
    for (int i = 0; i < option_count; ++i) {
      std::string key = options[i].key ? options[i].key : "";
      std::string value = options[i].value ? options[i].value : "";
      if (key == "acl_file") {
        s->acl_file = value;
      } else if (key == "stats_file") {
        s->stats_file = value;
      } else if (key == "insecure_username_auth") {
        s->insecure_username_auth = value == "true";
      } else if (key == "route_socket") {
        s->route_path = value;
      } else if (key == "route_frame_version") {
        // message_manager's frames and this plugin's must be of one build's format.
        if (value != std::to_string(kFrameVersion)) {
          log(MOSQ_LOG_ERR, "plugin_opt_route_frame_version " + value + ": this plugin writes "
                            "version " + std::to_string(kFrameVersion));
          return MOSQ_ERR_INVAL;
        }
        s->route_version_checked = true;
      } else if (key == "route_buffer_bytes") {
        char* end = nullptr;
        unsigned long long n = std::strtoull(value.c_str(), &end, 10);
        if (value.empty() || *end != '\0' || n < 4096 || n > (1ull << 40)) {
          log(MOSQ_LOG_ERR, "plugin_opt_route_buffer_bytes: not a number >= 4096: '" + value + "'");
          return MOSQ_ERR_INVAL;
        }
        s->route_buffer_max = static_cast<std::size_t>(n);
      } else if (key == "require_end") {
        s->require_end = value == "true";
      } else if (key == "max_payload_bytes" || key == "max_topic_bytes" ||
                 key == "connect_timeout_ms" || key == "listener_port" ||
                 key == "check_interval_ms") {
        char* end = nullptr;
        unsigned long long n = std::strtoull(value.c_str(), &end, 10);
        if (value.empty() || *end != '\0' || n > (1ull << 31)) {
          log(MOSQ_LOG_ERR, "plugin_opt_" + key + ": not a number: '" + value + "'");
          return MOSQ_ERR_INVAL;
        }
        if (key == "max_payload_bytes") s->max_payload_bytes = n;
        else if (key == "max_topic_bytes") s->max_topic_bytes = n;
        else if (key == "connect_timeout_ms") s->connect_timeout = std::chrono::milliseconds(n);
        else if (key == "check_interval_ms") s->check_interval = std::chrono::milliseconds(n);
        else s->listener_port = static_cast<int>(n);
      } else if (key == "client_id_patterns") {
        s->client_id_suffixes = parse_client_id_patterns(value);
        if (s->client_id_suffixes.empty()) {
          log(MOSQ_LOG_ERR, "plugin_opt_client_id_patterns: expected patterns like "
                            "'<thing> <thing>-*', got '" + value + "'");
          return MOSQ_ERR_INVAL;
        }
      } else {
        log(MOSQ_LOG_WARNING, "ignoring unknown option plugin_opt_" + key);
      }
    }
    if (s->acl_file.empty()) {
      log(MOSQ_LOG_ERR, "plugin_opt_acl_file is required");
      return MOSQ_ERR_INVAL;
    }
    if (!load_acl(*s, true)) return MOSQ_ERR_INVAL;
    if (!s->route_path.empty() && !s->route_version_checked) {
      log(MOSQ_LOG_ERR, "plugin_opt_route_socket needs plugin_opt_route_frame_version " +
                            std::to_string(kFrameVersion));
      return MOSQ_ERR_INVAL;
    }
    if (!s->route_path.empty() && !route_open(*s)) return MOSQ_ERR_INVAL;
    if (s->insecure_username_auth)
      log(MOSQ_LOG_WARNING, "insecure_username_auth is on: usernames are trusted (tests only)");
    s->last_check = Clock::now();
    State* st = s.release();
    struct Reg { int ev; MOSQ_FUNC_generic_callback cb; } regs[] = {
        {MOSQ_EVT_BASIC_AUTH, on_basic_auth},
        {MOSQ_EVT_ACL_CHECK, on_acl_check},
        {MOSQ_EVT_MESSAGE, on_message},
        {MOSQ_EVT_TICK, on_tick},
        {MOSQ_EVT_RELOAD, on_reload},
        {MOSQ_EVT_DISCONNECT, on_disconnect},
    };
    for (auto& r : regs) {
      int rc = mosquitto_callback_register(identifier, r.ev, r.cb, nullptr, st);
      if (rc != MOSQ_ERR_SUCCESS) {
        for (auto& u : regs) {
          if (&u == &r) break;
          mosquitto_callback_unregister(identifier, u.ev, u.cb, nullptr);
        }
        delete st;
        log(MOSQ_LOG_ERR, "cannot register callbacks");
        return rc;
      }
    }
    write_stats(*st, true);
    g_state = st;
    *userdata = st;
    return MOSQ_ERR_SUCCESS;
  } catch (...) {
    return MOSQ_ERR_UNKNOWN;
  }
}

GROVE_EXPORT int mosquitto_plugin_cleanup(void* userdata, struct mosquitto_opt*, int) {
  try {
    auto* s = static_cast<State*>(userdata);
    if (!s) return MOSQ_ERR_SUCCESS;
    mosquitto_callback_unregister(s->id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, nullptr);
    mosquitto_callback_unregister(s->id, MOSQ_EVT_ACL_CHECK, on_acl_check, nullptr);
    mosquitto_callback_unregister(s->id, MOSQ_EVT_MESSAGE, on_message, nullptr);
    mosquitto_callback_unregister(s->id, MOSQ_EVT_TICK, on_tick, nullptr);
    mosquitto_callback_unregister(s->id, MOSQ_EVT_RELOAD, on_reload, nullptr);
    mosquitto_callback_unregister(s->id, MOSQ_EVT_DISCONNECT, on_disconnect, nullptr);
    route_flush(*s);
    route_close(*s);
    if (s->route_listen >= 0) {
      ::close(s->route_listen);
      ::unlink(s->route_path.c_str());
    }
    write_stats(*s, true);
    if (g_state == s) g_state = nullptr;
    delete s;
  } catch (...) {
  }
  return MOSQ_ERR_SUCCESS;
}

}  // extern "C"
