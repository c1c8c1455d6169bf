#pragma once

// One MQTT connection (Paho MQTT C++) that keeps itself connected.
//
// The message_manager uses two: the cloud connection and Grove's own client `grove` of the
// local Mosquitto. Reconnection is ours, not Paho's automatic_reconnect, so that the cap and
// the jitter of the back-off are known: a connect loop with capped exponential back-off and
// "equal jitter", reset after every successful connect, always with a clean session.
//
// Threads: one runner thread per link connects, (re)subscribes and calls the connected and
// disconnected listeners; Paho's own thread calls on_message and publish completions.
// After stop() returns, no callback runs any more. Never call stop() from a callback.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "log_sink.hpp"

namespace mqtt {
class async_client;
} // namespace mqtt

namespace grove::mm {

/// Settings of one link; checked by mqtt_link::start().
struct link_options {
  /// Name for logs and status, e.g. "cloud" or "local".
  std::string name;
  /// Broker host name or address.
  std::string host;
  /// Broker port.
  uint16_t port = 8883;
  /// MQTT client identifier (the core thing name for the cloud).
  std::string client_id;
  /// false: plain TCP (dev mode only).
  bool tls = true;
  /// TLS: the CA file the server certificate must chain to (empty: the system's CAs).
  std::string ca_file;
  /// TLS: client certificate (optional; with key_file).
  std::string cert_file;
  /// TLS: client private key (optional; with cert_file).
  std::string key_file;
  /// Optional user name.
  std::string username;
  /// Optional password.
  std::string password;
  /// MQTT protocol version: 4 (3.1.1) or 5.
  int mqtt_version = 5;
  /// Keep-alive interval.
  std::chrono::seconds keep_alive{60};
  /// Back-off after the first failure.
  std::chrono::milliseconds retry_initial{1000};
  /// Back-off cap (Greengrass mqttMaxConnectionRetryInterval).
  std::chrono::milliseconds retry_max{60000};
  /// QoS 1 publishes awaiting PUBACK; more are queued inside Paho until slots free up.
  /// An MQTT 5 server's Receive Maximum lowers it (Mosquitto's max_inflight_messages,
  /// default 20). Paho C 1.3 looks at its queue again only when a new request comes or
  /// after about a second, so keep steady traffic within the server's limit.
  int max_inflight = 100;
  /// How long one connect attempt may take before it counts as failed.
  std::chrono::milliseconds connect_timeout{10000};
  /// Optional log sink; the link logs nothing else. Called from the link's threads.
  log_sink log;
};

/// MQTT 5 properties a message carries between devices, the cloud and the bus (the
/// envelope's content_type and user_properties). MQTT 3.1.1 has none.
struct message_meta {
  /// The Content Type property; empty if none.
  std::string content_type;
  /// User properties other than grove-source (the broker's stamp, see source); a name
  /// given twice keeps its last value.
  std::map<std::string, std::string> user_properties;
};

/// A message received on a subscription.
struct inbound_message {
  /// Topic the message was published to.
  std::string topic;
  /// Message bytes.
  std::string payload;
  /// QoS of the delivery.
  int qos = 0;
  /// Value of the MQTT 5 user property "grove-source"; empty if none.
  std::string source;
  /// Content type and the other user properties.
  message_meta meta;
  /// MQTT 5: the subscription filter of the delivered copy (the matching filter with the
  /// smallest subscription identifier); empty with MQTT 3.1.1 or if unknown.
  std::string filter;
};

/// State of a link.
enum class link_state {
  /// Not started, or stopped.
  stopped,
  /// A connect attempt is under way.
  connecting,
  /// Connected and subscribed.
  connected,
  /// Back-off before the next attempt.
  waiting,
};

/// A snapshot of a link's state and counters.
struct link_status {
  /// Current state.
  link_state state = link_state::stopped;
  /// Successful connects.
  uint64_t connects = 0;
  /// Failed connect attempts.
  uint64_t failures = 0;
  /// Established connections that were lost.
  uint64_t disconnects = 0;
  /// Publishes handed to Paho.
  uint64_t published = 0;
  /// Publishes completed (PUBACK for QoS 1, written for QoS 0).
  uint64_t acked = 0;
  /// Messages received (delivered to on_message).
  uint64_t received = 0;
  /// MQTT 5: extra copies of a message that matched several of our filters, dropped.
  uint64_t duplicates_dropped = 0;
  /// Why the last attempt failed or the last connection was lost.
  std::string last_error;
  /// Time left before the next attempt (zero unless waiting).
  std::chrono::milliseconds next_retry_in{0};
  /// Filters the broker currently grants, sorted.
  std::vector<std::string> subscribed;
};

/// Identifies a listener added with on_connected() or on_disconnected().
using listener_id = uint64_t;

/// One self-reconnecting MQTT connection.
class mqtt_link {
public:
  /// Creates a stopped link.
  explicit mqtt_link(link_options opts);

  /// Calls stop().
  ~mqtt_link();

  mqtt_link(const mqtt_link&) = delete;
  mqtt_link& operator=(const mqtt_link&) = delete;

  /// Sets the handler of received messages (set it before start); runs on a Paho thread.
  void on_message(std::function<void(inbound_message&&)> f);

  /// Adds a listener called after every (re)connect, once the subscriptions are re-made.
  /// Several listeners may be added (the plugin and the cloud_forwarder each add theirs);
  /// they run on the link's runner thread in the order they were added.
  listener_id on_connected(std::function<void()> f);

  /// Adds a listener called when an established connection is lost (after the pending
  /// publishes were completed with done(false)); runs on the runner thread.
  listener_id on_disconnected(std::function<void(const std::string& why)> f);

  /// Removes a listener; once it returns the listener is not running and never runs again
  /// (unless called from a listener itself, which is allowed).
  void remove_listener(listener_id id);

  /// Validates the options (values, files readable), then connects in the background.
  /// Returns at once. Errors: invalid_config, invalid_state (already started).
  caf::error start();

  /// Disconnects and joins the threads; idempotent. No callback runs after it returns.
  void stop();
  /// The server is known to be back (the managed broker listens again): ends a back-off
  /// wait at once, or makes the next one end at once if an attempt is under way. No
  /// effect while connected. Thread-safe.
  void reconnect_now();

  /// Sets the subscriptions. Applied live when connected (new filters subscribed, gone ones
  /// unsubscribed) and all re-made on every reconnect; a refused filter is logged and tried
  /// again at the next reconnect or call. MQTT 5 subscribes with no_local and gives every
  /// filter a subscription identifier, kept while it stays subscribed: a message that
  /// matches several filters is delivered once (see inbound_message::filter).
  void set_subscriptions(std::vector<std::string> filters, int qos);

  /// Publishes a message. Errors: invalid_state when not connected; invalid_topic for a
  /// malformed topic (also one Paho refuses, e.g. not UTF-8); too_large for a payload
  /// above MQTT's limit; queue_full when Paho's queue is full; system_error for other Paho
  /// refusals. invalid_topic and too_large are permanent, the others transient. A
  /// non-empty `source` becomes the MQTT 5 user property grove-source. `done(true)` runs
  /// on PUBACK (QoS 1) or once written (QoS 0), `done(false)` if the connection is lost
  /// first or the broker refuses it; `done` never runs when an error is returned.
  /// MQTT 5: `meta` becomes the Content Type and user properties (a grove-source among
  /// them is left out: `source` is the only one). Thread-safe.
  caf::error publish(std::string topic, std::string payload, int qos,
                     std::string_view source = {},
                     std::function<void(bool ok)> done = {},
                     const message_meta& meta = {});

  /// Returns a snapshot of the state and counters. Thread-safe.
  link_status status() const;

  /// True while connected.
  bool connected() const;

  /// The options the link was made with.
  const link_options& options() const noexcept {
    return opts_;
  }

private:
  struct pending_publish {
    std::function<void(bool)> done;
    uint64_t generation = 0; // of the client it was handed to
  };
  class publish_listener;

  caf::expected<std::shared_ptr<mqtt::async_client>> make_client(uint64_t generation);
  void run();
  bool connect_once(const std::shared_ptr<mqtt::async_client>& cli);
  void apply_subscriptions(std::unique_lock<std::mutex>& lk, bool all);
  void connection_lost(uint64_t generation, std::string why);
  // Decides whether a received copy is the one to deliver; requires mtx_.
  bool pick_copy(const std::string& topic, const std::vector<uint32_t>& ids,
                 std::string& filter);
  void fail_pending();
  void publish_finished(uint64_t id, bool ok);
  void publish_interrupted(uint64_t id);
  void log(log_level level, const std::string& msg) const;
  template <class F>
  void call_listeners(const F& call);

  link_options opts_;
  std::string uri_;
  // The Paho client of the current connection. Replaced after every lost connection:
  // Paho would otherwise send publishes still queued from the old connection on the new
  // one, ahead of their re-sends. Swapped under mtx_ (only by the runner, which may read
  // it without the lock); publish() holds its own reference. Paho is never called, and a
  // client never created or destroyed, under mtx_: Paho runs completions under its own
  // global mutex (also from inside MQTTAsync_destroy) and they take mtx_.
  std::shared_ptr<mqtt::async_client> cli_;
  // Replaced clients stay alive (callbacks disabled) so that a Paho callback still
  // running on one never touches freed memory; the oldest are dropped. Runner only.
  std::vector<std::shared_ptr<mqtt::async_client>> retired_;
  std::unique_ptr<publish_listener> listener_;

  // Guards everything below except the gate and the listener lists.
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  // Generation of cli_; handlers of older clients carry an older one and are ignored.
  uint64_t generation_ = 0;
  bool started_ = false;
  bool stop_ = false;
  bool lost_ = false;          // Paho reported the connection gone
  bool lost_provisional_ = false; // lost_ set by publish_interrupted, reason to follow
  std::string lost_why_;
  bool subs_dirty_ = false;    // set_subscriptions() changed the wanted set
  bool reconnect_now_ = false; // reconnect_now(): skip the current back-off
  link_state state_ = link_state::stopped;
  std::chrono::steady_clock::time_point retry_at_;
  uint64_t connects_ = 0;
  uint64_t failures_ = 0;
  uint64_t disconnects_ = 0;
  uint64_t published_ = 0;
  uint64_t acked_ = 0;
  uint64_t received_ = 0;
  uint64_t duplicates_dropped_ = 0;
  std::string last_error_;
  std::vector<std::string> wanted_filters_;
  int wanted_qos_ = 1;
  std::vector<std::string> active_filters_;
  int active_qos_ = -1;
  // MQTT 5 subscription identifiers of the filters that are (or are being) subscribed.
  std::map<std::string, uint32_t> sub_ids_;
  uint32_t next_sub_id_ = 1;
  bool sub_ids_available_ = false; // MQTT 5 and the server supports them
  // Filters of recently unsubscribed identifiers, for inbound_message::filter.
  std::map<uint32_t, std::string> gone_ids_;
  // pick_copy's answer per topic (the smallest identifier of a matching filter, and
  // that filter) while sub_ids_ stays as it is: every change clears it. A device's
  // topics repeat, while the scan over every filter grows with the group.
  struct best_copy {
    uint32_t id = 0;
    std::string filter;
  };
  std::unordered_map<std::string, best_copy> best_copies_;
  void sub_ids_changed() {
    best_copies_.clear();
  }
  uint64_t next_publish_id_ = 1;
  std::map<uint64_t, pending_publish> pending_;
  std::thread runner_;

  // Callbacks run under a shared lock; stop() takes it exclusively to wait them out.
  mutable std::shared_mutex gate_;
  bool closed_ = false; // guarded by gate_
  std::function<void(inbound_message&&)> on_message_;

  // Listener lists; listener_call_mtx_ is held by the runner while calling them.
  std::mutex listeners_mtx_;
  std::mutex listener_call_mtx_;
  listener_id next_listener_ = 1;
  std::vector<std::pair<listener_id, std::function<void()>>> connected_listeners_;
  std::vector<std::pair<listener_id, std::function<void(const std::string&)>>>
    disconnected_listeners_;
};

/// Returns "stopped", "connecting", "connected" or "waiting".
std::string_view to_string(link_state s);

/// The back-off before attempt n (n >= 1 failures so far): min(max, initial * 2^(n-1))
/// scaled by a jitter factor in [0.5, 1.0] drawn from `jitter01` in [0, 1] ("equal
/// jitter"); never above max.
std::chrono::milliseconds backoff_delay(int failures, std::chrono::milliseconds initial,
                                        std::chrono::milliseconds max, double jitter01);

} // namespace grove::mm
