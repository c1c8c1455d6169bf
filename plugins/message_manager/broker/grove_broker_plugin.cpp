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

#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
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

namespace {

constexpr const char* kSourceProperty = "grove-source";
constexpr std::size_t kMaxTracked = 65536;  // messages whose source is remembered

using Clock = std::chrono::steady_clock;

// The ACL file parser and the topic matching it uses: acl.hpp (pure, fuzzed by
// tests/fuzz/targets/broker_acl.cpp).
using namespace grove::broker;

// ---------------------------------------------------------------------------------------------
// Plugin state.

struct Tracked {  // the source of one stored message, keyed by its topic pointer
  std::string source;  // the stamped grove-source value: a thing, "grove" or grove's claim
  bool from_grove;     // published by the grove client
  std::string topic;
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

// Re-reads the ACL file when its mtime or size changed; checked at most once per second.
void maybe_reload(State& s) {
  auto now = Clock::now();
  if (now - s.last_check < std::chrono::seconds(1)) return;
  s.last_check = now;
  struct stat st {};
  if (::stat(s.acl_file.c_str(), &st) != 0) return;  // keep the table while it is replaced
  if (s.have_mtime && st.st_mtim.tv_sec == s.mtime.tv_sec &&
      st.st_mtim.tv_nsec == s.mtime.tv_nsec && st.st_size == s.size)
    return;
  load_acl(s, false);
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
  o << "},\"denied_publish_unknown\":" << s.denied_publish_unknown
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
  s.tracked[topic] = Tracked{source, from_grove, topic, payload, payloadlen, seq};
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
  if (t.payload != payload || t.payloadlen != payloadlen || t.topic != topic) return nullptr;
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
  if (*cn != kGroveUser && !s.table.things.count(*cn))
    return refuse_connect(s, "certificate CN '" + *cn + "': not a thing of the group");
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
    maybe_reload(s);
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
