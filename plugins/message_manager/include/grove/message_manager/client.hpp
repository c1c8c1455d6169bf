#pragma once

// Typed client of message_manager's services (plugins/message_manager/README.md):
// mm-3, publish a message through the subscription table on behalf of a function or the
// shadow service and learn where it went; mm-6 to mm-9, the system API through which a
// plugin listed in cloud.system_clients publishes to and subscribes on the cloud. Usable
// from a plugin (asynchronous, through its context), and from tools and tests (any
// blocking transport).

#include <chrono>
#include <functional>
#include <string>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

#include "grove/plugin.hpp"

#include "grove/message_manager.pb.h"
#include "grove/rpc.hpp"

namespace grove::message_manager {

/// Requests on this prefix + the MQTT topic are message_manager's (mm-3).
inline constexpr std::string_view in_prefix = "$grove/mm/in/";

/// Where message_manager publishes messages for functions and the shadow service
/// (mm-1, mm-2); only message_manager may publish there (it owns the events).
inline constexpr std::string_view out_prefix = "$grove/mm/out/";

/// The reply's decoding (the request carries the message itself, not a Protobuf).
using routed_rpc = rpc<Envelope, mm::Routed>;

/// The request for `payload` on MQTT topic `subject`, sent as `source`
/// (function:<name> or shadow; the sender's may_claim must grant it).
inline Envelope make_publish(std::string_view subject, std::string payload,
                             std::string_view source, uint32_t qos = 0,
                             std::string_view content_type = {}) {
  Envelope e;
  e.set_topic(std::string{in_prefix} + std::string{subject});
  e.set_payload(std::move(payload));
  e.set_source(std::string{source});
  e.set_qos(qos);
  e.set_content_type(std::string{content_type});
  return e;
}

/// Publishes through message_manager from a plugin; `f` runs on the plugin's actor with
/// the targets reached (0: no route) or the error (not_authorized: refused source).
inline void publish(context& ctx, Envelope msg, std::chrono::milliseconds timeout,
                    std::function<void(caf::expected<mm::Routed>)> f) {
  ctx.call(std::move(msg), timeout, [f = std::move(f)](caf::expected<Envelope> reply) {
    f(routed_rpc::decode(std::move(reply)));
  });
}

/// Publishes through any blocking transport `send(Envelope) -> caf::expected<Envelope>`.
template <class Send>
caf::expected<mm::Routed> publish(Send&& send, Envelope msg) {
  return routed_rpc::decode(send(std::move(msg)));
}

// --- the system API (mm-6 to mm-9) ---

/// mm-6: publish to the cloud through the spool (QoS 1); answered once committed.
inline constexpr std::string_view cloud_publish_topic = "$grove/mm/system/publish";

/// mm-7: add cloud filters to the caller's.
inline constexpr std::string_view cloud_subscribe_topic = "$grove/mm/system/subscribe";

/// mm-8: remove cloud filters from the caller's (none: all of them).
inline constexpr std::string_view cloud_unsubscribe_topic = "$grove/mm/system/unsubscribe";

/// mm-9: cloud messages for system client `c` arrive on this prefix + `c/<cloud topic>`.
inline constexpr std::string_view system_out_prefix = "$grove/mm/out/system/";

/// mm-10: a `grove.mm.CloudLink` each time the cloud link comes up (its subscriptions
/// made) or goes down.
inline constexpr std::string_view cloud_link_topic = "$grove/mm/out/link";

/// Longest cloud topic or filter a system client may use, in bytes (AWS IoT Core's).
inline constexpr size_t cloud_max_topic_bytes = 256;

/// Largest payload a system client may publish, in bytes (AWS IoT Core's 128 KiB).
inline constexpr size_t cloud_max_payload_bytes = 131072;

/// Most cloud filters one system client holds at once.
inline constexpr size_t cloud_max_filters = 50;

/// Typed call of mm-6.
using cloud_publish_rpc = rpc<mm::CloudPublish, mm::CloudPublished>;

/// Typed call of mm-7 and mm-8.
using cloud_subscribe_rpc = rpc<mm::CloudSubscribe, mm::CloudSubscriptions>;

/// The bus filter on which system client `client` receives its cloud messages (mm-9);
/// the client subscribes to it.
inline std::string system_filter(std::string_view client) {
  return std::string{system_out_prefix} + std::string{client} + "/#";
}

/// The cloud topic of an mm-9 message for `client`, or nullopt when `bus_topic` is not
/// one.
inline std::optional<std::string_view> cloud_topic_of(std::string_view bus_topic,
                                                       std::string_view client) {
  if (!bus_topic.starts_with(system_out_prefix))
    return std::nullopt;
  bus_topic.remove_prefix(system_out_prefix.size());
  if (!bus_topic.starts_with(client) || bus_topic.size() <= client.size() + 1
      || bus_topic[client.size()] != '/')
    return std::nullopt;
  return bus_topic.substr(client.size() + 1);
}

/// Publishes `payload` on cloud topic `topic` from a plugin (mm-6); `f` runs on the
/// plugin's actor once the spool committed it, or with the error: not_authorized (the
/// plugin is not in cloud.system_clients), invalid_topic, too_large, queue_full (a full
/// spool with reject_new) or the spool's failure.
inline void cloud_publish(context& ctx, std::string topic, std::string payload,
                          std::chrono::milliseconds timeout,
                          std::function<void(caf::expected<mm::CloudPublished>)> f) {
  mm::CloudPublish req;
  req.set_topic(std::move(topic));
  req.set_payload(std::move(payload));
  cloud_publish_rpc{std::string{cloud_publish_topic}}(ctx, req, timeout, std::move(f));
}

/// Sends `filters` to mm-7 or mm-8 (`topic`); see cloud_subscribe and cloud_unsubscribe.
inline void cloud_filters_call(context& ctx, std::string_view topic,
                               const std::vector<std::string>& filters,
                               std::chrono::milliseconds timeout,
                               std::function<void(caf::expected<mm::CloudSubscriptions>)> f) {
  mm::CloudSubscribe req;
  for (const auto& x : filters)
    req.add_filters(x);
  cloud_subscribe_rpc{std::string{topic}}(ctx, req, timeout, std::move(f));
}

/// Adds cloud filters to the plugin's (mm-7); `f` gets all of them afterwards, or the
/// error: not_authorized, invalid_topic (a bad filter: nothing changes), too_large (more
/// than cloud_max_filters). Subscribing again to a filter is a no-op.
inline void cloud_subscribe(context& ctx, const std::vector<std::string>& filters,
                            std::chrono::milliseconds timeout,
                            std::function<void(caf::expected<mm::CloudSubscriptions>)> f) {
  cloud_filters_call(ctx, cloud_subscribe_topic, filters, timeout, std::move(f));
}

/// Removes cloud filters from the plugin's (mm-8; none: all); `f` gets those left.
inline void cloud_unsubscribe(context& ctx, const std::vector<std::string>& filters,
                              std::chrono::milliseconds timeout,
                              std::function<void(caf::expected<mm::CloudSubscriptions>)> f) {
  cloud_filters_call(ctx, cloud_unsubscribe_topic, filters, timeout, std::move(f));
}

/// The cloud filters a system client keeps in force (mm-7, mm-8), for a plugin: set()
/// sends what changed; a refusal (message_manager not loaded yet, the plugin missing
/// from cloud.system_clients) is retried every `retry` until it holds. Owned by the
/// plugin and used on its actor only (its callbacks run there).
class cloud_filters {
public:
  /// Where the filters stand.
  enum class state {
    /// None wanted.
    none,
    /// Sent, no answer yet.
    subscribing,
    /// In force: the cloud's messages for them come on mm-9.
    subscribed,
    /// Refused; retrying.
    refused,
  };

  /// `changed` runs when an answer changes the state: subscribed (in force: read again
  /// what the cloud holds) or refused, with message_manager's error; and on the first
  /// answer to a changed set, even in the same state (the new filters are in force, or
  /// refused, only then).
  cloud_filters(context& ctx, std::function<void(state, const caf::error&)> changed,
                std::chrono::milliseconds retry = std::chrono::seconds{5})
    : ctx_(ctx), changed_(std::move(changed)), retry_(retry) {
  }

  /// Makes `wanted` the client's filters: the ones no longer wanted are dropped, the
  /// set is subscribed (again, when it was refused).
  void set(std::set<std::string> wanted) {
    if (wanted == filters_ && state_ != state::refused)
      return;
    // A new set's answer is news even when the state it brings is the one reported
    // last (subscribed → subscribing → subscribed): its filters are in force only now,
    // so the client reads again what they cover and shows the state. Not for a refused
    // set sent again unchanged (each retry's refusal is not news).
    if (wanted != filters_)
      reported_ = state::none;
    std::vector<std::string> gone;
    for (const auto& f : filters_)
      if (!wanted.contains(f))
        gone.push_back(f);
    if (!gone.empty())
      cloud_unsubscribe(ctx_, gone, std::chrono::seconds{10},
                        [](caf::expected<mm::CloudSubscriptions>) {});
    filters_ = std::move(wanted);
    ++generation_; // answers to an older set are not this one's
    if (filters_.empty()) {
      state_ = state::none;
      reported_ = state::none;
      return;
    }
    send();
  }

  /// The state.
  state current() const {
    return state_;
  }

  /// The filters wanted.
  const std::set<std::string>& wanted() const {
    return filters_;
  }

  /// The cloud link as message_manager last told it (mm-7's answers and mm-10's events,
  /// the later state winning): down until told up.
  enum class link { down, up, disabled };

  /// Takes an mm-10 event; false when it is older than what is known (ignored).
  bool on_link(const mm::CloudLink& ev) {
    if (ev.since_ns() < link_since_)
      return false;
    link_since_ = ev.since_ns();
    link_ = ev.connected() ? link::up : ev.disabled() ? link::disabled : link::down;
    return true;
  }

  /// The link's state.
  link link_state() const {
    return link_;
  }

  /// Whether the link is known to be up: what a client sends to the cloud only waits in
  /// message_manager's spool otherwise.
  bool link_up() const {
    return link_ == link::up;
  }

private:
  void send() {
    state_ = state::subscribing;
    auto gen = generation_;
    cloud_subscribe(ctx_, {filters_.begin(), filters_.end()}, std::chrono::seconds{10},
                    [this, gen](caf::expected<mm::CloudSubscriptions> r) {
                      if (gen != generation_)
                        return;
                      if (r && r->has_link())
                        on_link(r->link());
                      state_ = r ? state::subscribed : state::refused;
                      if (state_ != reported_) {
                        reported_ = state_;
                        changed_(state_, r ? caf::error{} : r.error());
                      }
                      if (!r)
                        ctx_.after(retry_, [this, gen] {
                          if (gen == generation_ && state_ == state::refused)
                            send();
                        });
                    });
  }

  context& ctx_;
  std::function<void(state, const caf::error&)> changed_;
  std::chrono::milliseconds retry_;
  std::set<std::string> filters_;
  state state_ = state::none;
  state reported_ = state::none;
  uint64_t generation_ = 0;
  link link_ = link::down;
  uint64_t link_since_ = 0;
};

} // namespace grove::message_manager
