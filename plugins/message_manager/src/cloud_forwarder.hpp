#pragma once

// Drains a spool to the cloud over an mqtt_link at QoS 1.
//
// While the link is connected, up to max_inflight messages are in flight: spool.peek() →
// link.publish(qos 1) → on PUBACK spool.ack(). When the link drops, spool.nack_all() puts
// the in-flight messages back in front (order preserved) and pumping pauses until the
// link is connected again. A message leaves the spool only when the cloud acknowledged it,
// so the cloud sees every message at least once, in spool order; duplicates are limited to
// the messages in flight when a connection was lost. Exceptions, so that one bad message
// cannot block the spool: a message the link refuses for good (invalid_topic, too_large)
// or the broker refuses max_refusals times on a live connection is removed unsent and
// counted in dropped_invalid; other errors (not connected, queue full) are retried.
//
// Wiring: start() adds its own connected/disconnected listeners to the link (mqtt_link
// supports several), so the plugin keeps its handlers; stop() removes them. The plugin
// only calls notify() after each spool push.

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

#include <caf/error.hpp>

#include "mqtt_link.hpp"
#include "spool.hpp"

namespace grove::mm {

/// Counters of a cloud_forwarder.
struct forwarder_stats {
  /// Messages acknowledged by the cloud and removed from the spool.
  uint64_t delivered = 0;
  /// Messages published and awaiting PUBACK on the current connection.
  uint64_t in_flight = 0;
  /// Messages put back by nack_all() to be sent again (link lost or publish failed).
  uint64_t redelivered = 0;
  /// Publishes the link refused or the broker failed while connected.
  uint64_t publish_errors = 0;
  /// Messages removed from the spool undelivered: refused by the link for good (invalid
  /// topic, too large) or refused by the broker on a live connection max_refusals times.
  uint64_t dropped_invalid = 0;
};

/// Moves spooled messages to the cloud over an mqtt_link (QoS 1, in order).
class cloud_forwarder {
public:
  /// Broker refusals on a live connection after which a message is dropped.
  static constexpr int max_refusals = 3;

  /// Creates a stopped forwarder; `link` and `sp` must outlive it.
  cloud_forwarder(mqtt_link& link, spool& sp, size_t max_inflight = 100);

  /// Calls stop().
  ~cloud_forwarder();

  cloud_forwarder(const cloud_forwarder&) = delete;
  cloud_forwarder& operator=(const cloud_forwarder&) = delete;

  /// Adds the link listeners and starts the worker thread; pumping begins as soon as the
  /// link is connected (also if it already is). Errors: invalid_state (already started).
  caf::error start();

  /// Stops the worker, removes the link listeners and puts in-flight messages back in the
  /// spool. Idempotent. Afterwards no completion touches the spool any more.
  void stop();

  /// Tells the forwarder that the spool got new messages (cheap; call after each push).
  void notify();

  /// Returns the counters. Thread-safe.
  forwarder_stats stats() const;

private:
  struct core;
  std::shared_ptr<core> core_;
  std::thread worker_;
  listener_id up_listener_ = 0;
  listener_id down_listener_ = 0;
  bool started_ = false;
};

} // namespace grove::mm
