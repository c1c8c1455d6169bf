#include "mqtt_link.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include <mqtt/async_client.h>
#include <netdb.h>
#include <pthread.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "grove/errors.hpp"
#include "grove/topic.hpp"

namespace grove::mm {

namespace {

using namespace std::chrono_literals;

// How often blocking waits on Paho tokens look at stop()/connection loss.
constexpr auto poll_step = 50ms;

// Paho refuses a publish once this many are queued (default 100: in-flight + 100 would be
// a silent, low ceiling). QoS 1 also runs out of packet ids at 65535 before that.
constexpr int max_buffered_messages = 100000;

// MQTT's Remaining Length limit; room kept for the fixed parts and properties.
constexpr size_t max_packet_bytes = 268435455;
constexpr size_t packet_overhead = 1024;

// Largest MQTT 5 subscription identifier (a variable byte integer).
constexpr uint32_t max_sub_id = 268435455;

// Filters of unsubscribed identifiers kept for inbound_message::filter.
constexpr size_t max_gone_ids = 64;

// Topics whose chosen copy mqtt_link remembers (pick_copy), at most.
constexpr size_t max_best_copies = 4096;

// The user property the broker plugin stamps with the publisher (broker/README.md).
constexpr std::string_view source_property = "grove-source";

// Paho C (Debian builds it without HIGH_PERFORMANCE) keeps an in-memory trace ring that
// nobody reads here. At its default level, TRACE_MINIMUM, it formats a line (vsnprintf
// under a global mutex) for packets and records every traced function's entry and exit,
// on every message of its receive thread: about a fifth of that thread's CPU per message
// in issue 12's profile. LOG_ERROR, what a HIGH_PERFORMANCE build starts with, is the
// highest level Paho lets us set; errors still reach the ring. Process-wide, set once,
// and not when MQTT_C_CLIENT_TRACE asks Paho for its trace (debugging).
void quiet_paho_trace() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("MQTT_C_CLIENT_TRACE") == nullptr)
      ::MQTTAsync_setTraceLevel(MQTTASYNC_TRACE_ERROR);
  });
}

bool readable_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return false;
  std::ifstream in(path, std::ios::binary);
  return in.good();
}

// Why a TLS connect failed, from a handshake of our own with the same trust store and
// client certificate (OpenSSL's reason, e.g. "certificate verify failed"); empty when it
// succeeds or the server cannot be reached. Paho's per-connect SSL error callback would
// give the same text, but Paho C++ 1.2 hands Paho C a context pointer into the copy of
// the connect options that dies when connect() returns (a use after scope that
// AddressSanitizer reports), so it is not used.
std::string tls_failure(const link_options& o) {
  std::string out;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr)
    return out;
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (!o.ca_file.empty())
    SSL_CTX_load_verify_locations(ctx, o.ca_file.c_str(), nullptr);
  else
    SSL_CTX_set_default_verify_paths(ctx);
  if (!o.cert_file.empty()) {
    SSL_CTX_use_certificate_chain_file(ctx, o.cert_file.c_str());
    SSL_CTX_use_PrivateKey_file(ctx, o.key_file.c_str(), SSL_FILETYPE_PEM);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  auto port = std::to_string(o.port);
  if (::getaddrinfo(o.host.c_str(), port.c_str(), &hints, &res) == 0) {
    for (auto* ai = res; ai != nullptr && out.empty(); ai = ai->ai_next) {
      int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0)
        continue;
      // Bounded like the attempt itself: a silent server cannot hold the link's thread.
      auto ms = std::max<long>(1000, static_cast<long>(o.connect_timeout.count()));
      timeval tv{ms / 1000, (ms % 1000) * 1000};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        if (SSL* ssl = SSL_new(ctx)) {
          SSL_set_fd(ssl, fd);
          SSL_set_tlsext_host_name(ssl, o.host.c_str());
          ERR_clear_error();
          if (SSL_connect(ssl) != 1) {
            if (auto code = ERR_peek_last_error(); code != 0) {
              char buf[256];
              ERR_error_string_n(code, buf, sizeof buf);
              out = buf;
            }
            if (auto v = SSL_get_verify_result(ssl); v != X509_V_OK)
              out += std::string{out.empty() ? "" : ": "} + X509_verify_cert_error_string(v);
            if (out.empty())
              out = "handshake failed";
          }
          SSL_free(ssl);
        }
      }
      ::close(fd);
      if (!out.empty())
        break;
    }
    ::freeaddrinfo(res);
  }
  ERR_clear_error();
  SSL_CTX_free(ctx);
  return out;
}

std::string describe_exception(const mqtt::exception& e) {
  // Paho's own text ("TCP/TLS connect failure") is more telling than the rc's name.
  std::string msg = e.get_message();
  if (msg.empty())
    msg = e.get_error_str();
  if (msg.empty())
    msg = e.what();
  msg += " [rc " + std::to_string(e.get_return_code()) + "]";
  if (e.get_reason_code() != mqtt::ReasonCode::SUCCESS)
    msg += " (reason: " + e.get_reason_code_str() + ")";
  return msg;
}

} // namespace

// Completions of publishes: the token's user context is the publish id.
class mqtt_link::publish_listener : public mqtt::iaction_listener {
public:
  explicit publish_listener(mqtt_link* link) : link_(link) {
  }

  void on_success(const mqtt::token& tok) override {
    link_->publish_finished(id_of(tok), true);
  }

  void on_failure(const mqtt::token& tok) override {
    // A PUBACK reason code of 0x80 or more is the broker's refusal; anything else
    // (MQTT 3.1.1 has no such codes) means Paho closed the session under the publish.
    auto rc = tok.get_reason_code();
    if (rc != mqtt::MQTTPP_V3_CODE && static_cast<int>(rc) >= 0x80)
      link_->publish_finished(id_of(tok), false);
    else
      link_->publish_interrupted(id_of(tok));
  }

private:
  static uint64_t id_of(const mqtt::token& tok) {
    return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(tok.get_user_context()));
  }

  mqtt_link* link_;
};

std::string_view to_string(link_state s) {
  switch (s) {
    case link_state::stopped:
      return "stopped";
    case link_state::connecting:
      return "connecting";
    case link_state::connected:
      return "connected";
    case link_state::waiting:
      return "waiting";
  }
  return "unknown";
}

std::chrono::milliseconds backoff_delay(int failures, std::chrono::milliseconds initial,
                                        std::chrono::milliseconds max, double jitter01) {
  if (max.count() <= 0)
    return std::chrono::milliseconds{0};
  failures = std::max(failures, 1);
  // Doubles are exact enough here and cannot overflow for any failure count.
  auto exponent = std::min(failures - 1, 62);
  auto base = std::min(static_cast<double>(max.count()),
                       static_cast<double>(std::max<int64_t>(initial.count(), 0))
                         * std::ldexp(1.0, exponent));
  if (!(jitter01 >= 0.0)) // also catches NaN
    jitter01 = 0.0;
  jitter01 = std::min(jitter01, 1.0);
  auto delay = static_cast<int64_t>(base * (0.5 + 0.5 * jitter01));
  return std::chrono::milliseconds{std::min<int64_t>(delay, max.count())};
}

mqtt_link::mqtt_link(link_options opts) : opts_(std::move(opts)) {
  listener_ = std::make_unique<publish_listener>(this);
}

mqtt_link::~mqtt_link() {
  stop();
  // Paho must not call into a half-destroyed link.
  if (cli_) {
    try {
      cli_->disable_callbacks();
    } catch (...) {
    }
  }
  cli_.reset();
  retired_.clear();
}

void mqtt_link::log(log_level level, const std::string& msg) const {
  if (opts_.log)
    opts_.log(level, "mqtt link '" + opts_.name + "': " + msg);
}

void mqtt_link::on_message(std::function<void(inbound_message&&)> f) {
  std::unique_lock gate{gate_};
  on_message_ = std::move(f);
}

listener_id mqtt_link::on_connected(std::function<void()> f) {
  std::lock_guard guard{listeners_mtx_};
  auto id = next_listener_++;
  connected_listeners_.emplace_back(id, std::move(f));
  return id;
}

listener_id mqtt_link::on_disconnected(std::function<void(const std::string&)> f) {
  std::lock_guard guard{listeners_mtx_};
  auto id = next_listener_++;
  disconnected_listeners_.emplace_back(id, std::move(f));
  return id;
}

void mqtt_link::remove_listener(listener_id id) {
  {
    std::lock_guard guard{listeners_mtx_};
    std::erase_if(connected_listeners_, [id](auto& x) { return x.first == id; });
    std::erase_if(disconnected_listeners_, [id](auto& x) { return x.first == id; });
  }
  // Wait out a call in progress, unless we are that call.
  if (runner_.joinable() && std::this_thread::get_id() == runner_.get_id())
    return;
  std::lock_guard wait{listener_call_mtx_};
}

template <class F>
void mqtt_link::call_listeners(const F& call) {
  std::lock_guard calling{listener_call_mtx_};
  call();
}

caf::error mqtt_link::start() {
  auto bad = [this](std::string what) {
    return make_error(errc::invalid_config, "mqtt link '" + opts_.name + "': " + what);
  };
  if (opts_.host.empty())
    return bad("host is empty");
  if (opts_.port == 0)
    return bad("port is 0");
  if (opts_.client_id.empty())
    return bad("client_id is empty");
  if (opts_.mqtt_version != 4 && opts_.mqtt_version != 5)
    return bad("mqtt_version must be 4 (3.1.1) or 5, got "
               + std::to_string(opts_.mqtt_version));
  if (opts_.retry_initial.count() <= 0 || opts_.retry_max < opts_.retry_initial)
    return bad("need 0 < retry_initial <= retry_max");
  if (opts_.max_inflight < 1 || opts_.max_inflight > 65535)
    return bad("max_inflight must be in [1, 65535]");
  if (opts_.keep_alive.count() < 0 || opts_.keep_alive.count() > 65535)
    return bad("keep_alive must be in [0, 65535] s");
  if (opts_.connect_timeout.count() <= 0)
    return bad("connect_timeout must be positive");
  if (opts_.tls) {
    if (!opts_.ca_file.empty() && !readable_file(opts_.ca_file))
      return bad("ca_file '" + opts_.ca_file + "' is not a readable file");
    if (opts_.cert_file.empty() != opts_.key_file.empty())
      return bad("cert_file and key_file go together");
    if (!opts_.cert_file.empty() && !readable_file(opts_.cert_file))
      return bad("cert_file '" + opts_.cert_file + "' is not a readable file");
    if (!opts_.key_file.empty() && !readable_file(opts_.key_file))
      return bad("key_file '" + opts_.key_file + "' is not a readable file");
  } else if (!opts_.ca_file.empty() || !opts_.cert_file.empty()
             || !opts_.key_file.empty()) {
    return bad("ca_file/cert_file/key_file given but tls is false");
  }
  auto already = [this] {
    return make_error(errc::invalid_state,
                      "mqtt link '" + opts_.name + "' was already started");
  };
  {
    std::lock_guard guard{mtx_};
    if (started_ || stop_)
      return already();
    uri_ = (opts_.tls ? "ssl://" : "tcp://") + opts_.host + ":" + std::to_string(opts_.port);
  }
  // Made without mtx_, like every Paho call (see cli_); destroyed after the guard below
  // if another start() won the race.
  auto cli = make_client(1);
  if (!cli)
    return std::move(cli.error());
  std::lock_guard guard{mtx_};
  if (started_ || stop_)
    return already();
  cli_ = std::move(*cli);
  generation_ = 1;
  started_ = true;
  state_ = link_state::connecting;
  runner_ = std::thread([this] {
    // Named, not `caf.multiplexer` (inherited from the CAF worker that started it).
    ::pthread_setname_np(::pthread_self(), "mm.mqtt_link");
    run();
  });
  return {};
}

caf::expected<std::shared_ptr<mqtt::async_client>>
mqtt_link::make_client(uint64_t gen) {
  quiet_paho_trace();
  std::shared_ptr<mqtt::async_client> cli;
  try {
    mqtt::create_options create{opts_.mqtt_version == 5 ? MQTTVERSION_5
                                                        : MQTTVERSION_3_1_1};
    create.set_max_buffered_messages(max_buffered_messages);
    cli = std::make_shared<mqtt::async_client>(uri_, opts_.client_id, create, nullptr);
    // Every handler carries its client's generation: a late call from a replaced client
    // must not touch the current connection.
    cli->set_connection_lost_handler([this, gen](const std::string& cause) {
      connection_lost(gen, cause.empty() ? "connection lost" : "connection lost: " + cause);
    });
    cli->set_disconnected_handler(
      [this, gen](const mqtt::properties&, mqtt::ReasonCode rc) {
        connection_lost(gen, "server sent DISCONNECT (reason code "
                               + std::to_string(int(rc)) + ")");
      });
    cli->set_message_callback([this, gen](mqtt::const_message_ptr msg) {
      std::shared_lock gate{gate_};
      if (closed_ || !on_message_ || !msg)
        return;
      inbound_message in;
      in.topic = msg->get_topic();
      in.payload = msg->get_payload_str();
      in.qos = msg->get_qos();
      const auto& props = msg->get_properties();
      auto n = props.count(mqtt::property::USER_PROPERTY);
      for (size_t i = 0; i < n; ++i) {
        try {
          auto kv = mqtt::get<mqtt::string_pair>(props, mqtt::property::USER_PROPERTY, i);
          if (std::get<0>(kv) == source_property) {
            // The broker stamps exactly one, replacing any the publisher sent.
            if (in.source.empty())
              in.source = std::get<1>(kv);
          } else {
            in.meta.user_properties[std::get<0>(kv)] = std::get<1>(kv);
          }
        } catch (...) {
        }
      }
      if (props.contains(mqtt::property::CONTENT_TYPE)) {
        try {
          in.meta.content_type = mqtt::get<std::string>(props, mqtt::property::CONTENT_TYPE);
        } catch (...) {
        }
      }
      std::vector<uint32_t> ids;
      auto n_ids = props.count(mqtt::property::SUBSCRIPTION_IDENTIFIER);
      for (size_t i = 0; i < n_ids; ++i) {
        try {
          ids.push_back(
            mqtt::get<uint32_t>(props, mqtt::property::SUBSCRIPTION_IDENTIFIER, i));
        } catch (...) {
        }
      }
      {
        std::lock_guard guard{mtx_};
        if (gen != generation_)
          return;
        if (!pick_copy(in.topic, ids, in.filter)) {
          ++duplicates_dropped_;
          return;
        }
        ++received_;
      }
      try {
        on_message_(std::move(in));
      } catch (...) {
        // A throwing handler must not unwind into Paho's thread.
      }
    });
  } catch (const std::exception& e) {
    return make_error(errc::invalid_config, "mqtt link '" + opts_.name
                                              + "': cannot create the client: " + e.what());
  }
  return cli;
}

bool mqtt_link::pick_copy(const std::string& topic, const std::vector<uint32_t>& ids,
                          std::string& filter) {
  if (ids.empty())
    return true; // MQTT 3.1.1, or the server gives no identifiers: one copy per filter
  // The copy to deliver is the one of the matching filter with the smallest identifier.
  // Identifiers grow and are subscribed in ascending order, so that filter was
  // subscribed first and its copy always comes.
  const best_copy* best = nullptr;
  if (auto i = best_copies_.find(topic); i != best_copies_.end()) {
    best = &i->second;
  } else {
    const std::string* best_filter = nullptr;
    uint32_t best_id = 0;
    for (const auto& [f, id] : sub_ids_)
      if ((best_filter == nullptr || id < best_id) && grove::topic_matches(f, topic)) {
        best_filter = &f;
        best_id = id;
      }
    if (best_filter != nullptr) {
      if (best_copies_.size() >= max_best_copies)
        best_copies_.clear(); // many distinct topics: start over rather than grow
      best = &best_copies_.emplace(topic, best_copy{best_id, *best_filter}).first->second;
    }
  }
  if (best == nullptr) {
    // Only filters just unsubscribed match: this copy is the only one left.
    for (auto id : ids)
      if (auto i = gone_ids_.find(id); i != gone_ids_.end()) {
        filter = i->second;
        break;
      }
    return true;
  }
  if (std::find(ids.begin(), ids.end(), best->id) == ids.end())
    return false;
  filter = best->filter;
  return true;
}

void mqtt_link::connection_lost(uint64_t gen, std::string why) {
  {
    std::lock_guard guard{mtx_};
    if (gen != generation_ || (lost_ && !lost_provisional_))
      return;
    lost_ = true;
    lost_provisional_ = false;
    lost_why_ = std::move(why);
  }
  cv_.notify_all();
}

bool mqtt_link::connect_once(const std::shared_ptr<mqtt::async_client>& cli) {
  mqtt::connect_options_builder b;
  if (opts_.mqtt_version == 5)
    b.mqtt_version(MQTTVERSION_5).clean_start(true);
  else
    b.mqtt_version(MQTTVERSION_3_1_1).clean_session(true);
  b.keep_alive_interval(opts_.keep_alive)
    .connect_timeout(std::chrono::duration_cast<std::chrono::seconds>(
      std::max<std::chrono::milliseconds>(opts_.connect_timeout, 1000ms)))
    .automatic_reconnect(false)
    .max_inflight(opts_.max_inflight);
  if (!opts_.username.empty())
    b.user_name(opts_.username);
  if (!opts_.password.empty())
    b.password(opts_.password);
  if (opts_.tls) {
    mqtt::ssl_options_builder ssl;
    ssl.enable_server_cert_auth(true).verify(true);
    if (!opts_.ca_file.empty())
      ssl.trust_store(opts_.ca_file);
    if (!opts_.cert_file.empty())
      ssl.key_store(opts_.cert_file).private_key(opts_.key_file);
    b.ssl(ssl.finalize());
  }
  auto fail = [this](const std::string& why) {
    // Paho says only "TCP/TLS connect failure": ask the server ourselves why.
    auto tls = opts_.tls ? tls_failure(opts_) : std::string{};
    std::lock_guard guard{mtx_};
    last_error_ = "connect to " + uri_ + " failed: " + why;
    if (!tls.empty())
      last_error_ += " (TLS: " + tls + ")";
  };
  try {
    auto tok = cli->connect(b.finalize());
    for (;;) {
      if (tok->wait_for(poll_step)) {
        // A server without subscription identifiers would drop us for sending one.
        bool ids = false;
        if (opts_.mqtt_version == 5) {
          ids = true;
          auto props = tok->get_connect_response().get_properties();
          if (props.contains(mqtt::property::SUBSCRIPTION_IDENTIFIERS_AVAILABLE))
            ids = mqtt::get<uint8_t>(props,
                                     mqtt::property::SUBSCRIPTION_IDENTIFIERS_AVAILABLE)
                  != 0;
        }
        std::lock_guard guard{mtx_};
        sub_ids_available_ = ids;
        return true;
      }
      std::lock_guard guard{mtx_};
      if (stop_)
        return false; // stop() disconnects, which cancels the attempt
    }
  } catch (const mqtt::exception& e) {
    fail(describe_exception(e));
  } catch (const std::exception& e) {
    fail(e.what());
  }
  return false;
}

void mqtt_link::apply_subscriptions(std::unique_lock<std::mutex>& lk, bool all) {
  subs_dirty_ = false;
  std::vector<std::string> wanted = wanted_filters_;
  int qos = wanted_qos_;
  bool use_ids = opts_.mqtt_version == 5 && sub_ids_available_;
  auto forget_id = [this](std::map<std::string, uint32_t>::iterator i) {
    gone_ids_[i->second] = i->first;
    while (gone_ids_.size() > max_gone_ids)
      gone_ids_.erase(gone_ids_.begin());
    sub_ids_changed();
    return sub_ids_.erase(i);
  };
  std::vector<std::string> to_sub;
  std::vector<std::string> to_unsub;
  if (all || qos != active_qos_) {
    // A clean session starts without subscriptions; a QoS change re-subscribes all.
    if (all) {
      active_filters_.clear();
      for (auto i = sub_ids_.begin(); i != sub_ids_.end();)
        i = std::binary_search(wanted.begin(), wanted.end(), i->first) && use_ids
              ? std::next(i)
              : forget_id(i);
    }
    to_sub = wanted;
  } else {
    std::set_difference(wanted.begin(), wanted.end(), active_filters_.begin(),
                        active_filters_.end(), std::back_inserter(to_sub));
  }
  std::set_difference(active_filters_.begin(), active_filters_.end(), wanted.begin(),
                      wanted.end(), std::back_inserter(to_unsub));
  if (to_sub.empty() && to_unsub.empty()) {
    active_qos_ = qos;
    return;
  }
  // Identifiers are set before the SUBSCRIBE goes out (a copy may come before the
  // SUBACK): kept for a filter that has one, new (thus the largest) otherwise. Sent in
  // ascending order, so a filter with a smaller identifier is always subscribed first.
  std::vector<std::pair<uint32_t, std::string>> subs;
  for (auto& f : to_sub) {
    uint32_t id = 0;
    if (use_ids) {
      auto [i, inserted] = sub_ids_.try_emplace(f, next_sub_id_);
      if (inserted)
        sub_ids_changed();
      if (inserted && next_sub_id_ < max_sub_id)
        ++next_sub_id_;
      id = i->second;
    }
    subs.emplace_back(id, f);
  }
  std::stable_sort(subs.begin(), subs.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  // An unsubscribed filter loses its identifier before the UNSUBSCRIBE goes out: a copy
  // still under way for it is then dropped if another filter matches (whose copy comes
  // too) and delivered if none does.
  std::map<std::string, uint32_t> unsub_ids;
  for (auto& f : to_unsub)
    if (auto i = sub_ids_.find(f); i != sub_ids_.end()) {
      unsub_ids.emplace(f, i->second);
      forget_id(i);
    }
  std::vector<std::string> removed;
  std::vector<std::string> added;
  {
    auto cli = cli_; // only the runner replaces it
    lk.unlock();
    // Waits for a token: true when it completed, false on stop or connection loss.
    // Throws when the server refused the request.
    auto await = [this](const mqtt::token_ptr& tok) {
      for (;;) {
        if (tok->wait_for(poll_step))
          return true;
        std::lock_guard guard{mtx_};
        if (stop_ || lost_)
          return false;
      }
    };
    // Each filter on its own: a refusal must not lose track of the others.
    auto attempt = [this](const char* what, const std::string& f, auto&& step) {
      try {
        step();
      } catch (const mqtt::exception& e) {
        log(log_level::warning, std::string{what} + " '" + f + "' failed: " + describe_exception(e));
      } catch (const std::exception& e) {
        log(log_level::warning, std::string{what} + " '" + f + "' failed: " + e.what());
      }
    };
    // One request per filter, all sent before waiting: Paho C++ 1.2 mishandles the
    // per-filter options of its many-filter subscribe (no_local lost for one filter,
    // a crash for several).
    std::vector<mqtt::token_ptr> unsub_toks(to_unsub.size());
    for (size_t i = 0; i < to_unsub.size(); ++i)
      attempt("unsubscribe from", to_unsub[i],
              [&] { unsub_toks[i] = cli->unsubscribe(to_unsub[i]); });
    for (size_t i = 0; i < to_unsub.size(); ++i) {
      if (!unsub_toks[i])
        continue;
      attempt("unsubscribe from", to_unsub[i], [&] {
        if (!await(unsub_toks[i]))
          return;
        auto codes = unsub_toks[i]->get_unsubscribe_response().get_reason_codes();
        if (!codes.empty() && static_cast<int>(codes[0]) >= 0x80) {
          log(log_level::warning, "unsubscribe from '" + to_unsub[i] + "' refused (reason code "
                   + std::to_string(static_cast<int>(codes[0])) + ")");
          return;
        }
        removed.push_back(to_unsub[i]);
      });
    }
    auto sub_opts = opts_.mqtt_version == 5 ? mqtt::subscribe_options{true} // no_local
                                            : mqtt::subscribe_options{};
    std::vector<mqtt::token_ptr> sub_toks(subs.size());
    for (size_t i = 0; i < subs.size(); ++i)
      attempt("subscribe to", subs[i].second, [&] {
        mqtt::properties props;
        if (subs[i].first != 0)
          props.add(mqtt::property(mqtt::property::SUBSCRIPTION_IDENTIFIER,
                                   static_cast<int32_t>(subs[i].first)));
        sub_toks[i] = cli->subscribe(subs[i].second, qos, sub_opts, props);
      });
    for (size_t i = 0; i < subs.size(); ++i) {
      if (!sub_toks[i])
        continue;
      attempt("subscribe to", subs[i].second, [&] {
        if (!await(sub_toks[i]))
          return;
        // 0x80 and above: refused (MQTT 3.1.1 "failure" and MQTT 5 reason codes).
        auto codes = sub_toks[i]->get_subscribe_response().get_reason_codes();
        if (!codes.empty() && static_cast<int>(codes[0]) >= 0x80) {
          log(log_level::warning, "subscribe to '" + subs[i].second + "' refused (reason code "
                   + std::to_string(static_cast<int>(codes[0])) + ")");
          return;
        }
        added.push_back(subs[i].second);
      });
    }
  }
  lk.lock();
  std::sort(added.begin(), added.end());
  // A filter whose SUBSCRIBE failed is not subscribed (unless it was before, for a QoS
  // change): its identifier goes, else it would hide the copies of the other filters.
  for (auto& [id, f] : subs) {
    if (std::binary_search(added.begin(), added.end(), f)
        || std::binary_search(active_filters_.begin(), active_filters_.end(), f))
      continue;
    if (auto i = sub_ids_.find(f); i != sub_ids_.end() && i->second == id) {
      sub_ids_.erase(i);
      sub_ids_changed();
    }
  }
  // A filter whose UNSUBSCRIBE failed stays subscribed, with its identifier.
  std::sort(removed.begin(), removed.end());
  for (auto& [f, id] : unsub_ids)
    if (!std::binary_search(removed.begin(), removed.end(), f)) {
      sub_ids_[f] = id;
      sub_ids_changed();
      gone_ids_.erase(id);
    }
  std::vector<std::string> next;
  std::set_difference(active_filters_.begin(), active_filters_.end(), removed.begin(),
                      removed.end(), std::back_inserter(next));
  next.insert(next.end(), added.begin(), added.end());
  std::sort(next.begin(), next.end());
  next.erase(std::unique(next.begin(), next.end()), next.end());
  active_filters_ = std::move(next);
  active_qos_ = qos;
}

void mqtt_link::fail_pending() {
  std::map<uint64_t, pending_publish> failed;
  {
    std::lock_guard guard{mtx_};
    failed.swap(pending_);
  }
  std::shared_lock gate{gate_};
  if (closed_)
    return;
  for (auto& [id, p] : failed)
    if (p.done)
      p.done(false);
}

void mqtt_link::publish_interrupted(uint64_t id) {
  // Paho fails the publishes of a closed session before it reports the loss. done(false)
  // must come after the link counts as lost (the forwarder tells a refusal from a loss
  // by connected()), so the entry stays for fail_pending, and the link is marked lost
  // now: Paho's own report follows and replaces the reason.
  {
    std::lock_guard guard{mtx_};
    auto i = pending_.find(id);
    if (i == pending_.end() || i->second.generation != generation_ || lost_)
      return;
    lost_ = true;
    lost_provisional_ = true;
    lost_why_ = "connection lost (a publish was interrupted)";
  }
  cv_.notify_all();
}

void mqtt_link::publish_finished(uint64_t id, bool ok) {
  pending_publish p;
  {
    std::lock_guard guard{mtx_};
    auto i = pending_.find(id);
    if (i == pending_.end())
      return; // already failed by a connection loss
    p = std::move(i->second);
    pending_.erase(i);
    if (ok)
      ++acked_;
  }
  std::shared_lock gate{gate_};
  if (!closed_ && p.done)
    p.done(ok);
}

void mqtt_link::run() {
  std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> jitter{0.0, 1.0};
  int failures_in_row = 0;
  std::unique_lock lk{mtx_};
  while (!stop_) {
    state_ = link_state::connecting;
    lost_ = false;
    lost_provisional_ = false;
    bool ok;
    {
      auto cli = cli_; // released before mtx_ is taken again
      lk.unlock();
      log(log_level::debug, "connecting to " + uri_);
      ok = connect_once(cli);
    }
    lk.lock();
    if (stop_)
      break;
    std::chrono::milliseconds delay;
    if (ok) {
      failures_in_row = 0;
      reconnect_now_ = false; // meant for a connection that is not there any more
      ++connects_;
      apply_subscriptions(lk, true);
      if (!lost_ && !stop_) {
        state_ = link_state::connected;
        lk.unlock();
        log(log_level::info, "connected to " + uri_);
        call_listeners([this] {
          std::vector<std::function<void()>> fs;
          {
            std::lock_guard guard{listeners_mtx_};
            for (auto& x : connected_listeners_)
              fs.push_back(x.second);
          }
          for (auto& f : fs)
            f();
        });
        lk.lock();
      }
      while (!stop_ && !lost_) {
        if (subs_dirty_) {
          apply_subscriptions(lk, false);
          continue;
        }
        cv_.wait(lk, [this] { return stop_ || lost_ || subs_dirty_; });
      }
      if (stop_)
        break;
      ++disconnects_;
      last_error_ = lost_why_;
      state_ = link_state::waiting;
      // A connection that drops right away must not make a tight loop: wait as after
      // one failure.
      delay = backoff_delay(1, opts_.retry_initial, opts_.retry_max, jitter(rng));
      retry_at_ = std::chrono::steady_clock::now() + delay;
      auto why = lost_why_;
      auto old = cli_;
      auto gen = generation_ + 1;
      lk.unlock();
      log(log_level::warning, why);
      try {
        old->disable_callbacks();
      } catch (...) {
      }
      fail_pending();
      call_listeners([this, &why] {
        std::vector<std::function<void(const std::string&)>> fs;
        {
          std::lock_guard guard{listeners_mtx_};
          for (auto& x : disconnected_listeners_)
            fs.push_back(x.second);
        }
        for (auto& f : fs)
          f(why);
      });
      // Paho clients are made and destroyed without mtx_: destroying one fails the
      // publishes still queued in it on this thread, under Paho's global mutex, and
      // those completions take mtx_.
      auto next = make_client(gen);
      retired_.push_back(std::move(old));
      if (retired_.size() > 4) {
        auto victim = std::move(retired_.front());
        retired_.erase(retired_.begin());
        victim.reset();
      }
      lk.lock();
      if (!next) {
        last_error_ = grove::describe(next.error());
        break;
      }
      cli_ = std::move(*next);
      generation_ = gen;
    } else {
      ++failures_;
      ++failures_in_row;
      delay = backoff_delay(failures_in_row, opts_.retry_initial, opts_.retry_max,
                            jitter(rng));
      state_ = link_state::waiting;
      retry_at_ = std::chrono::steady_clock::now() + delay;
      auto why = last_error_;
      lk.unlock();
      log(failures_in_row == 1 ? log_level::warning : log_level::debug,
          why + "; retrying in " + std::to_string(delay.count()) + " ms");
      lk.lock();
    }
    cv_.wait_until(lk, retry_at_, [this] { return stop_ || reconnect_now_; });
    if (reconnect_now_ && !stop_) {
      reconnect_now_ = false;
      // The server is back: a back-off grown while it was down must not delay us. The
      // next failure starts the back-off again from its first step.
      failures_in_row = 0;
      auto cut = std::chrono::duration_cast<std::chrono::milliseconds>(
        retry_at_ - std::chrono::steady_clock::now());
      if (cut.count() > 0) {
        lk.unlock();
        log(log_level::debug, "the server is back: reconnecting now (" + std::to_string(cut.count())
                                + " ms of back-off left)");
        lk.lock();
      }
    }
  }
  state_ = link_state::stopped;
}

void mqtt_link::reconnect_now() {
  {
    std::lock_guard guard{mtx_};
    if (!started_ || stop_ || (state_ == link_state::connected && !lost_))
      return;
    reconnect_now_ = true;
  }
  cv_.notify_all();
}

void mqtt_link::stop() {
  {
    std::lock_guard guard{mtx_};
    if (!started_ || stop_)
      return;
    stop_ = true;
  }
  cv_.notify_all();
  if (runner_.joinable())
    runner_.join();
  // The runner is gone: cli_ is ours. Paho is called without mtx_ (see cli_).
  // Cancels a connect in progress too; gives in-flight PUBACKs a moment to arrive.
  if (cli_) {
    try {
      auto tok = cli_->disconnect(1000);
      tok->wait_for(std::chrono::seconds{3});
    } catch (...) {
    }
  }
  fail_pending();
  {
    std::unique_lock gate{gate_}; // waits for callbacks in progress
    closed_ = true;
  }
  if (cli_) {
    try {
      cli_->disable_callbacks();
    } catch (...) {
    }
  }
  std::lock_guard guard{mtx_};
  state_ = link_state::stopped;
  active_filters_.clear();
  sub_ids_.clear();
  sub_ids_changed();
}

void mqtt_link::set_subscriptions(std::vector<std::string> filters, int qos) {
  std::sort(filters.begin(), filters.end());
  filters.erase(std::unique(filters.begin(), filters.end()), filters.end());
  {
    std::lock_guard guard{mtx_};
    wanted_filters_ = std::move(filters);
    wanted_qos_ = std::clamp(qos, 0, 2);
    subs_dirty_ = true;
  }
  cv_.notify_all();
}

caf::error mqtt_link::publish(std::string topic, std::string payload, int qos,
                              std::string_view source, std::function<void(bool)> done,
                              const message_meta& meta) {
  if (qos < 0 || qos > 2)
    return make_error(errc::invalid_config, "qos must be 0, 1 or 2");
  if (auto err = grove::validate_topic(topic))
    return make_error(errc::invalid_topic, "mqtt link '" + opts_.name
                                             + "': cannot publish: " + grove::describe(err));
  if (payload.size() > max_packet_bytes - packet_overhead - topic.size())
    return make_error(errc::too_large, "mqtt link '" + opts_.name + "': payload of "
                                         + std::to_string(payload.size())
                                         + " bytes exceeds MQTT's packet limit");
  uint64_t id;
  std::shared_ptr<mqtt::async_client> cli;
  {
    std::lock_guard guard{mtx_};
    if (state_ != link_state::connected || lost_ || stop_)
      return make_error(errc::invalid_state,
                        "mqtt link '" + opts_.name + "' is not connected");
    id = next_publish_id_++;
    pending_.emplace(id, pending_publish{std::move(done), generation_});
    ++published_;
    cli = cli_;
  }
  try {
    auto msg = mqtt::make_message(std::move(topic), std::move(payload), qos, false);
    if (opts_.mqtt_version == 5
        && (!source.empty() || !meta.content_type.empty() || !meta.user_properties.empty())) {
      mqtt::properties props;
      if (!meta.content_type.empty())
        props.add(mqtt::property(mqtt::property::CONTENT_TYPE, meta.content_type));
      for (const auto& [name, value] : meta.user_properties)
        if (name != source_property)
          props.add(mqtt::property(mqtt::property::USER_PROPERTY, name, value));
      if (!source.empty())
        props.add(mqtt::property(mqtt::property::USER_PROPERTY, std::string{source_property},
                                 std::string{source}));
      msg->set_properties(std::move(props));
    }
    cli->publish(std::move(msg), reinterpret_cast<void*>(static_cast<uintptr_t>(id)),
                  *listener_);
    return {};
  } catch (const mqtt::exception& e) {
    auto code = errc::system_error;
    switch (e.get_return_code()) {
      case MQTTASYNC_BAD_UTF8_STRING:
      case MQTTASYNC_BAD_STRUCTURE:
        code = errc::invalid_topic;
        break;
      case MQTTASYNC_MAX_BUFFERED_MESSAGES:
      case MQTTASYNC_NO_MORE_MSGIDS:
        code = errc::queue_full;
        break;
      case MQTTASYNC_DISCONNECTED:
        code = errc::invalid_state;
        break;
      default:
        break;
    }
    std::lock_guard guard{mtx_};
    // Gone already: a connection loss in between ran done(false); a second report
    // (an error) would count the message twice.
    if (pending_.erase(id) == 0)
      return {};
    --published_;
    return make_error(code, "mqtt link '" + opts_.name
                              + "': publish failed: " + describe_exception(e));
  } catch (const std::exception& e) {
    std::lock_guard guard{mtx_};
    if (pending_.erase(id) == 0)
      return {};
    --published_;
    return make_error(errc::system_error,
                      "mqtt link '" + opts_.name + "': publish failed: " + e.what());
  }
}

link_status mqtt_link::status() const {
  std::lock_guard guard{mtx_};
  link_status st;
  st.state = state_;
  st.connects = connects_;
  st.failures = failures_;
  st.disconnects = disconnects_;
  st.published = published_;
  st.acked = acked_;
  st.received = received_;
  st.duplicates_dropped = duplicates_dropped_;
  st.last_error = last_error_;
  if (state_ == link_state::waiting) {
    auto left = retry_at_ - std::chrono::steady_clock::now();
    st.next_retry_in = std::max(std::chrono::milliseconds{0},
                                std::chrono::duration_cast<std::chrono::milliseconds>(left));
  }
  st.subscribed = active_filters_;
  return st;
}

bool mqtt_link::connected() const {
  std::lock_guard guard{mtx_};
  return state_ == link_state::connected && !lost_;
}

} // namespace grove::mm
