#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/expected.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/message.hpp>

#include "grove/envelope.pb.h"
#include "grove/plugin.hpp"

namespace grove {

/// What a subscriber's queue does when it is full.
enum class overflow_policy : uint8_t {
  /// Drop the new message for this subscriber and count it.
  drop,
  /// Make the sender wait (up to the block timeout) for credit, then drop and count.
  block,
};

/// Parses "drop" / "block".
caf::expected<overflow_policy> parse_overflow_policy(std::string_view str);

/// Returns "drop" / "block".
const char* to_string(overflow_policy x) noexcept;

/// Bounded-queue settings of one subscriber.
struct queue_settings {
  /// Messages that may wait in the subscriber's mailbox.
  uint32_t capacity = 10000;
  /// Policy when the queue is full.
  overflow_policy overflow = overflow_policy::drop;
  /// Longest a sender waits for credit under overflow_policy::block.
  std::chrono::milliseconds block_timeout{1000};
};

/// One receiver on the bus: an actor plus its credit counter. Owned jointly by the bus
/// table and the receiver; the actor must call `consumed()` after handling each bus
/// message it got.
class endpoint {
public:
  /// Creates an endpoint for `self`, named `name` in status output.
  endpoint(std::string name, caf::actor self, queue_settings settings);

  /// Display name (plugin name, "grovectl", ...).
  const std::string& name() const noexcept {
    return name_;
  }

  /// The receiving actor.
  const caf::actor& handle() const noexcept {
    return handle_;
  }

  /// Marks one message as handled, returning credit to senders.
  void consumed() noexcept {
    queued_.fetch_sub(1, std::memory_order_acq_rel);
    if (handled_mirror_ != nullptr)
      handled_mirror_->fetch_add(1, std::memory_order_release);
  }

  /// Also counts handled messages into `counter` (in a plugin-host child: a page
  /// shared with groved, so the count survives the child's crash).
  void mirror_handled(std::atomic<uint64_t>* counter) noexcept {
    handled_mirror_ = counter;
  }

  /// Marks one queued message as discarded unhandled (counted as dropped).
  void discard() noexcept {
    queued_.fetch_sub(1, std::memory_order_acq_rel);
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }

  /// Messages waiting right now.
  uint64_t depth() const noexcept {
    auto n = queued_.load(std::memory_order_relaxed);
    return n < 0 ? 0 : static_cast<uint64_t>(n);
  }

  /// Messages handed to this endpoint so far.
  uint64_t delivered() const noexcept {
    return delivered_.load(std::memory_order_relaxed);
  }

  /// Messages dropped because the queue was full.
  uint64_t dropped() const noexcept {
    return dropped_.load(std::memory_order_relaxed);
  }

  /// Current settings.
  const queue_settings& settings() const noexcept {
    return settings_;
  }

  /// Tries to enqueue `msg`; applies the overflow policy. Returns true if enqueued.
  bool offer(const caf::message& msg);

  /// Like offer(), for a message only this endpoint gets: the envelope goes into the
  /// mailbox element itself, one allocation instead of two.
  bool offer(Envelope&& msg);

private:
  // Takes one unit of credit under the overflow policy; false means dropped.
  bool acquire();

  // Enqueues an element after acquire() succeeded.
  void push(caf::mailbox_element_ptr elem);

  std::string name_;
  caf::actor handle_;
  queue_settings settings_;
  std::atomic<int64_t> queued_{0};
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t>* handled_mirror_ = nullptr;
};

using endpoint_ptr = std::shared_ptr<endpoint>;

/// Where a bus in a plugin-host child sends what its plugin does: publishes and
/// subscription changes go to the kernel instead of being routed locally.
class bus_uplink {
public:
  virtual ~bus_uplink();

  /// The plugin published `msg` (topic checked, id and timestamp set).
  virtual void forward(Envelope&& msg) = 0;

  /// The plugin's subscriptions changed.
  virtual void subscription_changed(bool added, const std::string& filter) = 0;

  /// Where the plugin's requests go.
  virtual endpoint_ptr request_endpoint() = 0;

  /// The plugin's serve claims changed (the kernel checks them against others').
  virtual void serve_changed(bool added, const std::string& filter) = 0;

  /// The plugin's owned event topics changed (the kernel checks them against others').
  virtual void own_changed(bool added, const std::string& filter) = 0;

  /// The plugin waits for `topic` to be served; the kernel answers by calling
  /// bus::fire_watch(id) on the child's bus. `timeout` bounds the kernel's side.
  virtual void watch_served(uint64_t id, const std::string& topic,
                            std::chrono::milliseconds timeout)
    = 0;
};

/// One serve claim, for listings.
struct serve_claim {
  /// The claimed topic or filter.
  std::string filter;
  /// Who serves it (the endpoint's name).
  std::string owner;
};

/// Bus-wide counters for `grovectl status`.
struct bus_stats {
  uint64_t published = 0;
  uint64_t delivered = 0;
  uint64_t dropped = 0;
  uint64_t unrouted = 0;
  uint32_t subscriptions = 0;
  /// Publishes refused: the topic's events belong to another owner.
  uint64_t refused_not_owner = 0;
  /// Publishes, requests and replies refused: payload over the limit.
  uint64_t refused_too_large = 0;
};

/// Default of `kernel.bus.max_payload_bytes` (15 MiB): below the plugin-host frame cap
/// (64 MiB), so nothing the bus accepts can break the channel to an isolated plugin,
/// and with room for the envelope in a control-socket frame (16 MiB), so `grovectl
/// sub` can show whatever the bus carried.
inline constexpr uint64_t default_max_payload_bytes = 15u << 20;

/// Largest `kernel.bus.max_payload_bytes` allowed: the frame cap less 1 MiB for the
/// envelope's other fields.
inline constexpr uint64_t max_max_payload_bytes = 63u << 20;

/// Where the kernel's own events go (`$grove/group/current`, ...): owned by "kernel".
inline constexpr std::string_view kernel_event_filters[] = {"$grove/group/#",
                                                            "$grove/kernel/#"};

/// The source of what the kernel itself sends; no plugin and no grovectl may set it.
inline constexpr std::string_view kernel_source = "kernel";

/// The namespace whose event topics have owners.
inline constexpr std::string_view owned_namespace = "$grove/";

/// Topic-based publish/subscribe and request routing between plugins. Publishing is
/// lock-free on the hot path: the sender reads an immutable snapshot of the table and
/// enqueues straight into each matching endpoint's mailbox, so a message takes one
/// actor hop and messages from one publisher arrive in publish order.
class bus {
public:
  bus();
  ~bus();

  bus(const bus&) = delete;
  bus& operator=(const bus&) = delete;

  /// Adds a subscription of `ep` to `filter`. Idempotent: an endpoint holds a filter
  /// at most once, so a restarted plugin re-subscribing changes nothing.
  caf::error subscribe(const endpoint_ptr& ep, std::string_view filter);

  /// Removes the subscription of `ep` to `filter`.
  caf::error unsubscribe(const endpoint_ptr& ep, std::string_view filter);

  /// Removes every subscription of `ep`.
  void unsubscribe_all(const endpoint_ptr& ep);

  /// Filters `ep` is subscribed to, in subscription order.
  std::vector<std::string> filters_of(const endpoint_ptr& ep) const;

  /// Publishes `msg` for `publisher` (a plugin's name, "kernel" or "grovectl"; topic
  /// validated; id and timestamp filled in when zero) to every matching endpoint.
  /// Refused, counted, with errc::too_large for a payload over max_payload() and with
  /// errc::not_authorized on a topic whose events another publisher owns (see own()).
  /// Thread-safe.
  caf::expected<publish_result> publish(Envelope msg, std::string_view publisher);

  /// The payload limit rule alone, for requests and replies: errc::too_large (counted)
  /// when `msg`'s payload is larger than max_payload().
  caf::error check_payload(const Envelope& msg) {
    if (msg.payload().size() <= max_payload_) [[likely]]
      return {};
    return payload_error(msg);
  }

  /// Sets the payload limit (`kernel.bus.max_payload_bytes`). Set before plugins load.
  void set_max_payload(uint64_t n) noexcept {
    max_payload_ = n;
  }

  /// The payload limit in bytes.
  uint64_t max_payload() const noexcept {
    return max_payload_;
  }

  /// Makes `owner` the only publisher of events on topics matching `filter`, which
  /// must lie under `$grove/` (sdk/plugin/README.md, "Who owns what"). Fails with
  /// errc::already_served naming both owners when another owner's filter overlaps it,
  /// errc::invalid_topic outside `$grove/`. Idempotent for the same owner and filter.
  caf::error own(std::string_view owner, std::string_view filter);

  /// Gives up one ownership of `owner`.
  caf::error disown(std::string_view owner, std::string_view filter);

  /// Gives up every ownership of `owner`.
  void disown_all(std::string_view owner);

  /// Filters `owner` owns, in claim order.
  std::vector<std::string> owned_by(std::string_view owner) const;

  /// Who owns events on `topic`; empty when nobody does.
  std::string owner_of(std::string_view topic) const;

  /// Claims requests on `filter` for `ep` (sdk/plugin/README.md, "Services"). Fails
  /// with errc::already_served naming both owners when another endpoint's claim
  /// overlaps it (some topic matches both). Idempotent for the same endpoint and
  /// filter, so a restarted plugin claiming again changes nothing. Wakes waiters of
  /// watch_served whose topic the filter matches.
  caf::error serve(const endpoint_ptr& ep, std::string_view filter);

  /// Gives up a claim of `ep`.
  caf::error unserve(const endpoint_ptr& ep, std::string_view filter);

  /// Gives up every claim of `ep`.
  void unserve_all(const endpoint_ptr& ep);

  /// Filters `ep` serves, in claim order.
  std::vector<std::string> served_by(const endpoint_ptr& ep) const;

  /// Every claim, in claim order.
  std::vector<serve_claim> claims() const;

  /// Returns the endpoint serving `topic` (plain subscriptions never get requests),
  /// or null. In a plugin-host child: the uplink's endpoint.
  endpoint_ptr route_request(std::string_view topic) const;

  /// Calls `f` once `topic` is served: right away (returning 0) when it is, else from
  /// the thread of the serve() that claims it. Returns an id for cancel_watch.
  uint64_t watch_served(std::string_view topic, std::function<void()> f,
                        std::chrono::milliseconds timeout = std::chrono::hours{1});

  /// Forgets a waiter. A callback already running on another thread may still finish,
  /// so callbacks should only post a message.
  void cancel_watch(uint64_t id);

  /// Calls and forgets waiter `id` (a plugin-host child's, when the kernel reports
  /// its topic served).
  void fire_watch(uint64_t id);

  /// Wraps an envelope in the message type the bus delivers. The wrapper's code lives
  /// in the kernel library, never in a plugin, so a plugin can be unloaded while its
  /// messages are still queued.
  static caf::message wrap(Envelope msg);

  /// Returns the envelope inside a bus message, or null if `msg` is not one.
  static const Envelope* unwrap(const caf::message& msg);

  /// Next unique message id.
  uint64_t next_id() noexcept {
    return next_id_.fetch_add(1, std::memory_order_relaxed);
  }

  /// Bus-wide counters.
  bus_stats stats() const;

  /// Every endpoint with at least one subscription.
  std::vector<endpoint_ptr> endpoints() const;

  /// Turns this bus into a plugin-host child's: publishes, subscriptions and requests
  /// go through `up` (which must outlive the bus's use). Set before any plugin loads.
  void set_uplink(bus_uplink* up) noexcept {
    uplink_ = up;
  }

private:
  struct entry {
    std::string filter;
    endpoint_ptr ep;
  };

  struct table {
    /// Filters without wildcards, keyed by topic.
    std::unordered_map<std::string, std::vector<entry>> exact;
    /// Filters with wildcards, in subscription order.
    std::vector<entry> wild;
    /// All entries in subscription order (for request routing and listings).
    std::vector<entry> all;
  };

  using table_ptr = std::shared_ptr<const table>;

  void rebuild(std::vector<entry> all);

  // The slow halves of the publish checks (counted, with the error's text).
  caf::error payload_error(const Envelope& msg);
  caf::error owner_error(const Envelope& msg, std::string_view publisher);

  // Returns the current table. A mutex-guarded copy rather than
  // std::atomic<std::shared_ptr>: libstdc++ 12's lock-bit implementation of the latter
  // was seen corrupting the table under load.
  table_ptr snapshot() const {
    std::lock_guard guard{table_mtx_};
    return table_;
  }

  void store(table_ptr t) {
    std::lock_guard guard{table_mtx_};
    table_.swap(t);
  }

  struct claim {
    std::string filter;
    endpoint_ptr ep;
  };

  struct waiter {
    uint64_t id;
    std::string topic;
    std::function<void()> fn;
  };

  bus_uplink* uplink_ = nullptr;
  uint64_t max_payload_ = default_max_payload_bytes;
  // Event owners: changed at plugin start and stop, read only for `$grove/` publishes.
  mutable std::mutex owner_mtx_;
  std::vector<serve_claim> owners_;
  // Claims and waiters: requests are rarer than publishes, a mutex is enough.
  mutable std::mutex serve_mtx_;
  std::vector<claim> claims_;
  std::vector<waiter> waiters_;
  uint64_t next_waiter_ = 1;
  mutable std::mutex write_mtx_;
  mutable std::mutex table_mtx_;
  table_ptr table_;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<uint64_t> published_{0};
  std::atomic<uint64_t> unrouted_{0};
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> refused_not_owner_{0};
  std::atomic<uint64_t> refused_too_large_{0};
};

} // namespace grove

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(grove::Envelope)
