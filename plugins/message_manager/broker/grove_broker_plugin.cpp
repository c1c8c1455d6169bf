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
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
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

namespace {

constexpr const char* kSourceProperty = "grove-source";
constexpr const char* kGroveUser = "grove";
constexpr const char* kAnyGrove = "*";  // deliver-rule key: any message injected by grove
constexpr std::size_t kMaxTracked = 65536;  // messages whose source is remembered

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// MQTT topic matching (MQTT 3.1.1 / 5.0 section 4.7), with the $-rule: a filter starting with a
// wildcard does not match a topic starting with '$'.

std::vector<std::string_view> split_levels(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    auto pos = s.find('/', start);
    if (pos == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

bool valid_filter(std::string_view filter) {
  if (filter.empty()) return false;
  auto levels = split_levels(filter);
  for (std::size_t i = 0; i < levels.size(); ++i) {
    auto l = levels[i];
    if (l.find('#') != std::string_view::npos && (l != "#" || i + 1 != levels.size())) return false;
    if (l.find('+') != std::string_view::npos && l != "+") return false;
  }
  return true;
}

bool topic_matches(std::string_view filter, std::string_view topic) {
  if (topic.empty()) return false;
  if (topic.front() == '$' && !filter.empty() && (filter.front() == '+' || filter.front() == '#'))
    return false;
  auto f = split_levels(filter);
  auto t = split_levels(topic);
  std::size_t i = 0;
  for (; i < f.size(); ++i) {
    if (f[i] == "#") return true;  // matches the parent level too ("a/#" matches "a")
    if (i >= t.size()) return false;
    if (f[i] != "+" && f[i] != t[i]) return false;
  }
  return i == t.size();
}

// ---------------------------------------------------------------------------------------------
// The ACL table.

struct Table {
  std::set<std::string> things;
  std::map<std::string, std::vector<std::string>> pub;  // thing -> filters
  // target -> (source -> filters). Source keys: a thing name, "*" for `deliver * ...` lines
  // and "@cloud", "@shadow", "@function:<name>" for grove-injected messages of that origin
  // (thing names cannot start with '@', so the keys never collide).
  std::map<std::string, std::map<std::string, std::vector<std::string>>> deliver;
  // `not_ready`: the core has no group yet. A client that is no thing is then told to come
  // back (connection closed without CONNACK) instead of refused for good.
  bool not_ready = false;
};

bool valid_name(std::string_view n) {
  if (n.empty()) return false;
  for (char c : n) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '#' || c == '+' || c == '*' ||
        c == '/')
      return false;
  }
  return true;
}

// A source that grove may claim for a message it injects: "cloud", "shadow" or
// "function:<name>". Anything else (e.g. "device:X") is not honoured.
bool valid_grove_source(std::string_view v) {
  if (v == "cloud" || v == "shadow") return true;
  constexpr std::string_view fn = "function:";
  return v.substr(0, fn.size()) == fn && valid_name(v.substr(fn.size()));
}

// Splits off the next whitespace-separated token; returns the rest after exactly the
// separator run that follows it.
std::string_view next_token(std::string_view& rest) {
  auto b = rest.find_first_not_of(" \t");
  if (b == std::string_view::npos) {
    rest = {};
    return {};
  }
  rest.remove_prefix(b);
  auto e = rest.find_first_of(" \t");
  auto tok = rest.substr(0, e);
  if (e == std::string_view::npos) {
    rest = {};
  } else {
    rest.remove_prefix(e);
    auto n = rest.find_first_not_of(" \t");
    rest = n == std::string_view::npos ? std::string_view{} : rest.substr(n);
  }
  return tok;
}

// Parses the whole file; on any error returns nullopt and sets `error` ("line N: ...").
std::optional<Table> parse_acl(const std::string& text, std::string& error) {
  Table t;
  struct PubLine { std::size_t line; std::string thing, filter; };
  struct DelLine { std::size_t line; std::string source, target, filter; };
  std::vector<PubLine> pubs;
  std::vector<DelLine> dels;
  std::istringstream in(text);
  std::string raw;
  std::size_t lineno = 0;
  auto fail = [&](const std::string& msg) {
    error = "line " + std::to_string(lineno) + ": " + msg;
    return std::nullopt;
  };
  while (std::getline(in, raw)) {
    ++lineno;
    if (!raw.empty() && raw.back() == '\r') raw.pop_back();
    std::string_view rest = raw;
    auto first = rest.find_first_not_of(" \t");
    if (first == std::string_view::npos || rest[first] == '#') continue;
    auto kw = next_token(rest);
    if (kw == "thing") {
      auto name = next_token(rest);
      if (!valid_name(name)) return fail("bad thing name");
      if (!rest.empty()) return fail("trailing text after thing name");
      if (name == kGroveUser) return fail("thing name 'grove' is reserved");
      if (name.front() == '@')
        return fail("thing name '" + std::string(name) + "' must not start with '@' (reserved)");
      t.things.emplace(name);
    } else if (kw == "not_ready") {
      if (!rest.empty()) return fail("trailing text after not_ready");
      t.not_ready = true;
    } else if (kw == "pub") {
      auto thing = next_token(rest);
      if (!valid_name(thing)) return fail("bad thing name");
      if (!valid_filter(rest)) return fail("bad topic filter");
      pubs.push_back({lineno, std::string(thing), std::string(rest)});
    } else if (kw == "deliver") {
      auto source = next_token(rest);
      auto target = next_token(rest);
      if (!source.empty() && source.front() == '@') {
        if (!valid_grove_source(source.substr(1)))
          return fail("bad source '" + std::string(source) +
                      "' (expected @cloud, @shadow or @function:<name>)");
      } else if (source != kAnyGrove && !valid_name(source)) {
        return fail("bad source thing name");
      }
      if (!valid_name(target)) return fail("bad target thing name");
      if (!valid_filter(rest)) return fail("bad topic filter");
      dels.push_back({lineno, std::string(source), std::string(target), std::string(rest)});
    } else {
      return fail("unknown keyword '" + std::string(kw) + "'");
    }
  }
  for (auto& p : pubs) {
    lineno = p.line;
    if (!t.things.count(p.thing)) return fail("pub: '" + p.thing + "' is not a thing of the group");
    t.pub[p.thing].push_back(p.filter);
  }
  for (auto& d : dels) {
    lineno = d.line;
    if (d.source != kAnyGrove && d.source.front() != '@' && !t.things.count(d.source))
      return fail("deliver: source '" + d.source + "' is not a thing of the group");
    if (!t.things.count(d.target))
      return fail("deliver: target '" + d.target + "' is not a thing of the group");
    t.deliver[d.target][d.source].push_back(d.filter);
  }
  return t;
}

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

  Table table;
  bool have_mtime = false;
  struct timespec mtime {};
  off_t size = 0;
  dev_t dev = 0;
  ino_t ino = 0;
  Clock::time_point last_check{};

  // statistics
  std::map<std::string, uint64_t> denied_publish;  // per thing
  uint64_t denied_publish_unknown = 0;
  uint64_t denied_delivery = 0;
  uint64_t refused_connect = 0;
  uint64_t acl_reloads = 0;
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
  log(MOSQ_LOG_INFO, "loaded " + s.acl_file + " (" + std::to_string(s.table.things.size()) +
                         " things)");
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

// The same on the hot paths (ACL checks, ticks): at most every 100 ms.
void maybe_reload(State& s) {
  if (Clock::now() - s.last_check < std::chrono::milliseconds(100)) return;
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
  o << "},\"deferred_connect\":" << s.deferred_connect << ",\"idle_closed\":" << s.idle_closed
    << ",\"denied_publish_unknown\":" << s.denied_publish_unknown
    << ",\"denied_delivery\":" << s.denied_delivery << ",\"refused_connect\":" << s.refused_connect
    << ",\"acl_reloads\":" << s.acl_reloads << ",\"acl_errors\":" << s.acl_errors
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
// result closes the connection without a CONNACK (src/handle_connect.c), which device
// libraries treat as a lost connection and retry, whereas they give up on a refused CONNACK.
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
  if (mosquitto_set_username(ev.client, cn->c_str()) != MOSQ_ERR_SUCCESS)
    return refuse_connect(s, "certificate CN '" + *cn + "': cannot set the username");
  return MOSQ_ERR_SUCCESS;
}

int on_basic_auth(int, void* event_data, void* userdata) noexcept {
  try {
    auto& s = *static_cast<State*>(userdata);
    auto* ev = static_cast<mosquitto_evt_basic_auth*>(event_data);
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
      return MOSQ_ERR_SUCCESS;
    }
    if (s.insecure_username_auth && ev->username && s.table.not_ready)
      return defer_connect(s, std::string("username '") + ev->username + "'");
    return refuse_connect(s, std::string("client with username '") +
                                 (ev->username ? ev->username : "") + "'");
  } catch (...) {
    return MOSQ_ERR_AUTH;
  }
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
        case MOSQ_ACL_UNSUBSCRIBE:
          rc = MOSQ_ERR_SUCCESS;  // delivery is filtered per message (READ)
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
            }
          }
          break;
        }
        case MOSQ_ACL_READ: {
          if (is_grove) {
            rc = MOSQ_ERR_SUCCESS;  // the internal client sees everything; source in property
            break;
          }
          const Tracked* source = source_of(s, ev->topic, ev->payload, ev->payloadlen);
          if (source && may_deliver(s.table, user, *source, ev->topic)) rc = MOSQ_ERR_SUCCESS;
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
    const char* u = mosquitto_client_username(ev->client);
    std::string user = u ? u : "";
    bool from_grove = user == kGroveUser;
    if (!from_grove && !s.table.things.count(user)) return MOSQ_ERR_ACL_DENIED;
    // The source is stamped by the broker; whatever a thing put there is dropped. Only grove
    // may name the origin of what it injects, and only as cloud, shadow or function:<name>.
    std::string source = from_grove ? grove_claimed_source(ev->properties) : user;
    if (!restamp(&ev->properties, source)) return MOSQ_ERR_NOMEM;
    // Retained messages are not supported locally (as in Greengrass v1): a retained message
    // would be delivered long after its source is known.
    ev->retain = false;
    track(s, ev->topic, ev->payload, ev->payloadlen, source, from_grove);
    return MOSQ_ERR_SUCCESS;
  } catch (...) {
    return MOSQ_ERR_ACL_DENIED;
  }
}

int on_tick(int, void*, void* userdata) noexcept {
  try {
    auto& s = *static_cast<State*>(userdata);
    maybe_reload(s);
    reap_idle(s);
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
      } else if (key == "max_payload_bytes" || key == "max_topic_bytes" ||
                 key == "connect_timeout_ms" || key == "listener_port") {
        char* end = nullptr;
        unsigned long long n = std::strtoull(value.c_str(), &end, 10);
        if (value.empty() || *end != '\0' || n > (1ull << 31)) {
          log(MOSQ_LOG_ERR, "plugin_opt_" + key + ": not a number: '" + value + "'");
          return MOSQ_ERR_INVAL;
        }
        if (key == "max_payload_bytes") s->max_payload_bytes = n;
        else if (key == "max_topic_bytes") s->max_topic_bytes = n;
        else if (key == "connect_timeout_ms") s->connect_timeout = std::chrono::milliseconds(n);
        else s->listener_port = static_cast<int>(n);
      } else {
        log(MOSQ_LOG_WARNING, "ignoring unknown option plugin_opt_" + key);
      }
    }
    if (s->acl_file.empty()) {
      log(MOSQ_LOG_ERR, "plugin_opt_acl_file is required");
      return MOSQ_ERR_INVAL;
    }
    if (!load_acl(*s, true)) return MOSQ_ERR_INVAL;
    if (s->insecure_username_auth)
      log(MOSQ_LOG_WARNING, "insecure_username_auth is on: usernames are trusted (tests only)");
    s->last_check = Clock::now();
    State* st = s.release();
    struct Reg { int ev; MOSQ_FUNC_generic_callback cb; } regs[] = {
        {MOSQ_EVT_BASIC_AUTH, on_basic_auth},
        {MOSQ_EVT_ACL_CHECK, on_acl_check},
        {MOSQ_EVT_MESSAGE, on_message},
        {MOSQ_EVT_TICK, on_tick},
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
    write_stats(*s, true);
    if (g_state == s) g_state = nullptr;
    delete s;
  } catch (...) {
  }
  return MOSQ_ERR_SUCCESS;
}

}  // extern "C"
