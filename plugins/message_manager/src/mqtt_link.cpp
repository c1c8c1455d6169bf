#include "mqtt_link.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include <mqtt/async_client.h>

#include "grove/errors.hpp"

namespace grove::mm {

namespace {

using namespace std::chrono_literals;

// How often blocking waits on Paho tokens look at stop()/connection loss.
constexpr auto poll_step = 50ms;

bool readable_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return false;
  std::ifstream in(path, std::ios::binary);
  return in.good();
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
    link_->publish_finished(id_of(tok), false);
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

void mqtt_link::log(int level, const std::string& msg) const {
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
  std::lock_guard guard{mtx_};
  if (started_ || stop_)
    return make_error(errc::invalid_state,
                      "mqtt link '" + opts_.name + "' was already started");
  uri_ = (opts_.tls ? "ssl://" : "tcp://") + opts_.host + ":" + std::to_string(opts_.port);
  if (auto err = make_client())
    return err;
  started_ = true;
  state_ = link_state::connecting;
  runner_ = std::thread([this] { run(); });
  return {};
}

caf::error mqtt_link::make_client() {
  std::shared_ptr<mqtt::async_client> cli;
  try {
    mqtt::create_options create{opts_.mqtt_version == 5 ? MQTTVERSION_5
                                                        : MQTTVERSION_3_1_1};
    cli = std::make_shared<mqtt::async_client>(uri_, opts_.client_id, create, nullptr);
    cli->set_connection_lost_handler([this](const std::string& cause) {
      connection_lost(cause.empty() ? "connection lost" : "connection lost: " + cause);
    });
    cli->set_disconnected_handler([this](const mqtt::properties&, mqtt::ReasonCode rc) {
      connection_lost("server sent DISCONNECT (reason code " + std::to_string(int(rc))
                      + ")");
    });
    cli->set_message_callback([this](mqtt::const_message_ptr msg) {
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
          if (std::get<0>(kv) == "grove-source") {
            in.source = std::get<1>(kv);
            break;
          }
        } catch (...) {
        }
      }
      {
        std::lock_guard guard{mtx_};
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
  cli_ = std::move(cli);
  return {};
}

void mqtt_link::connection_lost(std::string why) {
  {
    std::lock_guard guard{mtx_};
    if (lost_)
      return;
    lost_ = true;
    lost_why_ = std::move(why);
  }
  cv_.notify_all();
}

bool mqtt_link::connect_once() {
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
    ssl.error_handler([this](const std::string& msg) {
      std::lock_guard guard{mtx_};
      if (tls_error_.empty()) {
        tls_error_ = msg;
        while (!tls_error_.empty() && std::isspace(static_cast<unsigned char>(tls_error_.back())))
          tls_error_.pop_back();
      }
    });
    b.ssl(ssl.finalize());
  }
  auto fail = [this](const std::string& why) {
    std::lock_guard guard{mtx_};
    last_error_ = "connect to " + uri_ + " failed: " + why;
    if (!tls_error_.empty())
      last_error_ += " (TLS: " + tls_error_ + ")";
  };
  {
    std::lock_guard guard{mtx_};
    tls_error_.clear();
  }
  try {
    auto tok = cli_->connect(b.finalize());
    for (;;) {
      if (tok->wait_for(poll_step))
        return true;
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
  std::vector<std::string> to_sub;
  std::vector<std::string> to_unsub;
  if (all || qos != active_qos_) {
    // A clean session starts without subscriptions; a QoS change re-subscribes all.
    if (all)
      active_filters_.clear();
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
  lk.unlock();
  // Waits for a token; false on failure, stop or connection loss.
  auto await = [this](const mqtt::token_ptr& tok) {
    for (;;) {
      if (tok->wait_for(poll_step))
        return true;
      std::lock_guard guard{mtx_};
      if (stop_ || lost_)
        return false;
    }
  };
  std::vector<std::string> removed;
  std::vector<std::string> added;
  try {
    // One request per filter, all sent before waiting: Paho C++ 1.2 mishandles the
    // per-filter options of its many-filter subscribe (no_local lost for one filter,
    // a crash for several).
    std::vector<mqtt::token_ptr> unsub_toks;
    for (auto& f : to_unsub)
      unsub_toks.push_back(cli_->unsubscribe(f));
    for (size_t i = 0; i < to_unsub.size(); ++i)
      if (await(unsub_toks[i]))
        removed.push_back(to_unsub[i]);
    std::vector<mqtt::token_ptr> sub_toks;
    auto sub_opts = opts_.mqtt_version == 5 ? mqtt::subscribe_options{true} // no_local
                                            : mqtt::subscribe_options{};
    for (auto& f : to_sub)
      sub_toks.push_back(cli_->subscribe(f, qos, sub_opts));
    for (size_t i = 0; i < to_sub.size(); ++i) {
      if (!await(sub_toks[i]))
        continue;
      // 0x80 and above: refused (MQTT 3.1.1 "failure" and MQTT 5 reason codes).
      auto codes = sub_toks[i]->get_subscribe_response().get_reason_codes();
      if (!codes.empty() && static_cast<int>(codes[0]) >= 0x80) {
        log(2, "subscribe to '" + to_sub[i] + "' refused (reason code "
                 + std::to_string(static_cast<int>(codes[0])) + ")");
        continue;
      }
      added.push_back(to_sub[i]);
    }
  } catch (const mqtt::exception& e) {
    log(2, "subscription update failed: " + describe_exception(e));
  } catch (const std::exception& e) {
    log(2, std::string{"subscription update failed: "} + e.what());
  }
  lk.lock();
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
    lk.unlock();
    log(0, "connecting to " + uri_);
    bool ok = connect_once();
    lk.lock();
    if (stop_)
      break;
    std::chrono::milliseconds delay;
    if (ok) {
      failures_in_row = 0;
      ++connects_;
      apply_subscriptions(lk, true);
      if (!lost_ && !stop_) {
        state_ = link_state::connected;
        lk.unlock();
        log(1, "connected to " + uri_);
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
      lk.unlock();
      log(2, why);
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
      lk.lock();
      retired_.push_back(old);
      if (retired_.size() > 4)
        retired_.erase(retired_.begin());
      if (auto err = make_client()) {
        last_error_ = grove::describe(err);
        break;
      }
    } else {
      ++failures_;
      ++failures_in_row;
      delay = backoff_delay(failures_in_row, opts_.retry_initial, opts_.retry_max,
                            jitter(rng));
      state_ = link_state::waiting;
      retry_at_ = std::chrono::steady_clock::now() + delay;
      auto why = last_error_;
      lk.unlock();
      log(failures_in_row == 1 ? 2 : 0,
          why + "; retrying in " + std::to_string(delay.count()) + " ms");
      lk.lock();
    }
    cv_.wait_until(lk, retry_at_, [this] { return stop_; });
  }
  state_ = link_state::stopped;
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
  // Cancels a connect in progress too; gives in-flight PUBACKs a moment to arrive.
  try {
    auto tok = cli_->disconnect(1000);
    tok->wait_for(std::chrono::seconds{3});
  } catch (...) {
  }
  fail_pending();
  {
    std::unique_lock gate{gate_}; // waits for callbacks in progress
    closed_ = true;
  }
  try {
    cli_->disable_callbacks();
  } catch (...) {
  }
  std::lock_guard guard{mtx_};
  state_ = link_state::stopped;
  active_filters_.clear();
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
                              std::string_view source, std::function<void(bool)> done) {
  if (qos < 0 || qos > 2)
    return make_error(errc::invalid_config, "qos must be 0, 1 or 2");
  uint64_t id;
  std::shared_ptr<mqtt::async_client> cli;
  {
    std::lock_guard guard{mtx_};
    if (state_ != link_state::connected || lost_ || stop_)
      return make_error(errc::invalid_state,
                        "mqtt link '" + opts_.name + "' is not connected");
    id = next_publish_id_++;
    pending_.emplace(id, pending_publish{std::move(done)});
    ++published_;
    cli = cli_;
  }
  try {
    auto msg = mqtt::make_message(std::move(topic), std::move(payload), qos, false);
    if (!source.empty() && opts_.mqtt_version == 5) {
      mqtt::properties props;
      props.add(mqtt::property(mqtt::property::USER_PROPERTY, std::string{"grove-source"},
                               std::string{source}));
      msg->set_properties(std::move(props));
    }
    cli->publish(std::move(msg), reinterpret_cast<void*>(static_cast<uintptr_t>(id)),
                  *listener_);
    return {};
  } catch (const mqtt::exception& e) {
    auto code = e.get_return_code() == MQTTASYNC_BAD_UTF8_STRING
                    || e.get_return_code() == MQTTASYNC_BAD_STRUCTURE
                  ? errc::invalid_topic
                  : errc::system_error;
    std::lock_guard guard{mtx_};
    pending_.erase(id);
    --published_;
    return make_error(code, "mqtt link '" + opts_.name
                              + "': publish failed: " + describe_exception(e));
  } catch (const std::exception& e) {
    std::lock_guard guard{mtx_};
    pending_.erase(id);
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
