#include "cloud_forwarder.hpp"

#include <pthread.h>

#include <algorithm>
#include <map>

#include "grove/errors.hpp"

namespace grove::mm {

// Shared with the publish completions, which may outlive the forwarder object on the
// link's Paho thread; they only touch the spool while `stop` is false.
struct cloud_forwarder::core {
  core(mqtt_link& l, spool& s, size_t max)
    : link(l), sp(s), max_inflight(std::max<size_t>(max, 1)) {
    window = max_inflight;
  }

  mqtt_link& link;
  spool& sp;
  const size_t max_inflight;
  // Messages in flight at most. The worker refills after every PUBACK rather than in
  // chunks: when the server's Receive Maximum is lower than the window, Paho queues the
  // excess and only sends it when a new request wakes its send thread (or after ~1 s).
  size_t window;

  // Held by whoever hands out or puts back spool messages (worker, link_up, link_down),
  // so a nack_all() never races with a peek() whose messages are not yet published.
  // Lock order: pump_mtx, then mtx.
  std::mutex pump_mtx;

  mutable std::mutex mtx;
  std::condition_variable cv;
  bool stop = false;
  bool up = false;
  bool more = true;   // the spool may hold messages not yet handed out
  bool stuck = false; // some in-flight messages were not sent or were refused
  uint64_t epoch = 0; // changes whenever in-flight accounting starts over
  uint64_t in_flight = 0;
  uint64_t delivered = 0;
  uint64_t redelivered = 0;
  uint64_t publish_errors = 0;
  uint64_t dropped_invalid = 0;
  // Broker refusals on a live connection per message (seq), until it is acked or dropped.
  std::map<uint64_t, int> refusals;

  void link_up() {
    std::lock_guard pump{pump_mtx};
    {
      std::lock_guard guard{mtx};
      if (stop)
        return;
      if (up) {
        more = true;
        cv.notify_all();
        return;
      }
    }
    // The link may have dropped again already; link_down follows then.
    if (!link.connected())
      return;
    auto n = sp.nack_all(); // leftovers of an earlier run
    std::lock_guard guard{mtx};
    up = true;
    ++epoch;
    in_flight = 0;
    stuck = false;
    more = true;
    redelivered += n;
    cv.notify_all();
  }

  void link_down() {
    std::lock_guard pump{pump_mtx};
    {
      std::lock_guard guard{mtx};
      if (stop)
        return;
      up = false;
      ++epoch;
      in_flight = 0;
      stuck = false;
    }
    auto n = sp.nack_all();
    std::lock_guard guard{mtx};
    redelivered += n;
    more = true;
  }

  void completed(uint64_t seq, uint64_t msg_epoch, bool ok) {
    // Asked before taking our lock: the link's lock is never taken under ours.
    bool link_ok = ok || link.connected();
    std::lock_guard guard{mtx};
    if (stop)
      return;
    // A PUBACK is final even if it belongs to an older connection: the cloud has it. ack()
    // is false when an earlier copy was acked already, so nothing is counted twice.
    if (ok && sp.ack(seq))
      ++delivered;
    if (ok)
      refusals.erase(seq);
    if (msg_epoch != epoch)
      return;
    --in_flight;
    if (!ok && link_ok) {
      // Refused by the broker on a live connection: resend after the others completed,
      // but not forever.
      ++publish_errors;
      if (refusals.size() > 4096)
        refusals.clear(); // stale entries of messages drop_oldest removed
      if (++refusals[seq] >= cloud_forwarder::max_refusals) {
        refusals.erase(seq);
        if (sp.ack(seq))
          ++dropped_invalid;
      } else {
        stuck = true;
      }
    }
    if (more || in_flight == 0)
      cv.notify_all();
  }

  void loop(const std::shared_ptr<core>& self) {
    std::unique_lock lk{mtx};
    for (;;) {
      cv.wait(lk, [this] {
        return stop
               || (up
                   && ((stuck && in_flight == 0)
                       || (!stuck && more && in_flight < window)));
      });
      if (stop)
        return;
      if (stuck) {
        lk.unlock();
        retry_stuck();
        lk.lock();
        // Do not spin on a message the broker keeps refusing.
        cv.wait_for(lk, std::chrono::seconds{1}, [this] { return stop || !up; });
        continue;
      }
      lk.unlock();
      pump_once(self);
      lk.lock();
    }
  }

  void retry_stuck() {
    std::lock_guard pump{pump_mtx};
    {
      std::lock_guard guard{mtx};
      if (!up || !stuck || in_flight != 0)
        return;
    }
    auto n = sp.nack_all();
    std::lock_guard guard{mtx};
    stuck = false;
    more = true;
    ++epoch;
    redelivered += n;
  }

  static bool is_permanent(const caf::error& err) {
    return err == errc::invalid_topic || err == errc::too_large;
  }

  void pump_once(const std::shared_ptr<core>& self) {
    std::lock_guard pump{pump_mtx};
    uint64_t my_epoch;
    size_t room;
    {
      std::lock_guard guard{mtx};
      if (stop || !up || stuck)
        return;
      if (in_flight >= window)
        return;
      my_epoch = epoch;
      room = window - in_flight;
      more = false; // notify() during the peek sets it again
    }
    auto batch = sp.peek(room);
    {
      std::lock_guard guard{mtx};
      if (batch.size() == room)
        more = true;
      in_flight += batch.size(); // before publishing: completions decrement it
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      auto& m = batch[i];
      std::weak_ptr<core> weak = self;
      auto seq = m.seq;
      auto err = link.publish(std::move(m.topic), std::move(m.payload), 1, {},
                              [weak, seq, my_epoch](bool ok) {
                                if (auto c = weak.lock())
                                  c->completed(seq, my_epoch, ok);
                              });
      if (err && is_permanent(err)) {
        // Would fail the same way forever and block everything behind it: drop it.
        std::lock_guard guard{mtx};
        ++publish_errors;
        if (sp.ack(seq))
          ++dropped_invalid;
        refusals.erase(seq);
        if (my_epoch == epoch) {
          --in_flight;
          cv.notify_all();
        }
        continue;
      }
      if (err) {
        // Transient: the rest stays in flight in the spool; link_down (if the link is
        // going away) or retry_stuck puts it back.
        std::lock_guard guard{mtx};
        if (my_epoch == epoch) {
          in_flight -= batch.size() - i;
          ++publish_errors;
          stuck = true;
          cv.notify_all();
        }
        return;
      }
    }
  }
};

cloud_forwarder::cloud_forwarder(mqtt_link& link, spool& sp, size_t max_inflight)
  : core_(std::make_shared<core>(link, sp, max_inflight)) {
}

cloud_forwarder::~cloud_forwarder() {
  stop();
}

caf::error cloud_forwarder::start() {
  if (started_)
    return make_error(errc::invalid_state, "cloud forwarder already started");
  {
    std::lock_guard guard{core_->mtx};
    if (core_->stop)
      return make_error(errc::invalid_state, "cloud forwarder was stopped");
  }
  started_ = true;
  auto* c = core_.get();
  // Listeners are removed in stop(), which waits out a call in progress: a raw pointer
  // is safe here.
  up_listener_ = c->link.on_connected([c] { c->link_up(); });
  down_listener_ = c->link.on_disconnected([c](const std::string&) { c->link_down(); });
  if (c->link.connected())
    c->link_up();
  worker_ = std::thread([self = core_] {
    // Named, not `caf.multiplexer` (inherited from the CAF worker that started it).
    ::pthread_setname_np(::pthread_self(), "mm.cloud_fwd");
    self->loop(self);
  });
  return {};
}

void cloud_forwarder::stop() {
  if (!started_)
    return;
  started_ = false;
  core_->link.remove_listener(up_listener_);
  core_->link.remove_listener(down_listener_);
  {
    std::lock_guard pump{core_->pump_mtx};
    std::lock_guard guard{core_->mtx};
    core_->stop = true;
    core_->up = false;
    core_->in_flight = 0;
  }
  core_->cv.notify_all();
  if (worker_.joinable())
    worker_.join();
  // Not acknowledged: pending again for whoever drains the spool next.
  auto n = core_->sp.nack_all();
  std::lock_guard guard{core_->mtx};
  core_->redelivered += n;
}

void cloud_forwarder::notify() {
  std::lock_guard guard{core_->mtx};
  if (core_->more)
    return;
  core_->more = true;
  core_->cv.notify_all();
}

forwarder_stats cloud_forwarder::stats() const {
  std::lock_guard guard{core_->mtx};
  forwarder_stats st;
  st.delivered = core_->delivered;
  st.in_flight = core_->in_flight;
  st.redelivered = core_->redelivered;
  st.publish_errors = core_->publish_errors;
  st.dropped_invalid = core_->dropped_invalid;
  return st;
}

} // namespace grove::mm
