#include "grove/kernel/bus.hpp"

#include <algorithm>
#include <array>
#include <thread>

#include <caf/actor_cast.hpp>
#include <caf/make_message.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/message_id.hpp>

#include "tsan_annotations.hpp"

namespace grove {

caf::expected<overflow_policy> parse_overflow_policy(std::string_view str) {
  if (str == "drop")
    return overflow_policy::drop;
  if (str == "block")
    return overflow_policy::block;
  return make_error(errc::invalid_config, "overflow must be 'drop' or 'block', got '"
                                            + std::string{str} + "'");
}

const char* to_string(overflow_policy x) noexcept {
  return x == overflow_policy::drop ? "drop" : "block";
}

// -- endpoint -----------------------------------------------------------------

endpoint::endpoint(std::string name, caf::actor self, queue_settings settings)
  : name_(std::move(name)), handle_(std::move(self)), settings_(settings) {
  if (settings_.capacity == 0)
    settings_.capacity = 1;
}

bool endpoint::acquire() {
  const int64_t cap = settings_.capacity;
  // Take credit first so concurrent senders cannot overshoot the capacity.
  if (queued_.fetch_add(1, std::memory_order_acq_rel) < cap)
    return true;
  queued_.fetch_sub(1, std::memory_order_acq_rel);
  if (settings_.overflow == overflow_policy::drop) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  // Block: wait for credit with bounded back-off, then give up and count a drop.
  auto deadline = std::chrono::steady_clock::now() + settings_.block_timeout;
  auto pause = std::chrono::microseconds{1};
  for (;;) {
    if (queued_.load(std::memory_order_acquire) < cap) {
      if (queued_.fetch_add(1, std::memory_order_acq_rel) < cap)
        return true;
      queued_.fetch_sub(1, std::memory_order_acq_rel);
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    if (pause.count() < 8)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds{500});
  }
}

void endpoint::push(caf::mailbox_element_ptr elem) {
  auto* dest = caf::actor_cast<caf::abstract_actor*>(handle_);
  GROVE_TSAN_RELEASE(this); // acquired by the receiving sink (kernel.cpp)
  dest->enqueue(std::move(elem), nullptr);
  delivered_.fetch_add(1, std::memory_order_relaxed);
}

bool endpoint::offer(const caf::message& msg) {
  if (!acquire())
    return false;
  push(caf::make_mailbox_element(nullptr, caf::make_message_id(), {}, msg));
  return true;
}

bool endpoint::offer(Envelope&& msg) {
  if (!acquire())
    return false;
  push(caf::make_mailbox_element(nullptr, caf::make_message_id(), {}, std::move(msg)));
  return true;
}

// -- bus ----------------------------------------------------------------------

bus_uplink::~bus_uplink() = default;

bus::bus() {
  store(std::make_shared<const table>());
}

bus::~bus() = default;

caf::message bus::wrap(Envelope msg) {
  return caf::make_message(std::move(msg));
}

const Envelope* bus::unwrap(const caf::message& msg) {
  if (msg.size() == 1 && msg.match_element<Envelope>(0))
    return &msg.get_as<Envelope>(0);
  return nullptr;
}

void bus::rebuild(std::vector<entry> all) {
  auto t = std::make_shared<table>();
  for (auto& e : all) {
    if (has_wildcard(e.filter))
      t->wild.push_back(e);
    else
      t->exact[e.filter].push_back(e);
  }
  t->all = std::move(all);
  store(std::move(t));
}

caf::error bus::subscribe(const endpoint_ptr& ep, std::string_view filter) {
  if (auto err = validate_filter(filter))
    return err;
  std::lock_guard guard{write_mtx_};
  auto cur = snapshot();
  for (auto& e : cur->all)
    if (e.ep == ep && e.filter == filter)
      return {};
  auto all = cur->all;
  all.push_back(entry{std::string{filter}, ep});
  rebuild(std::move(all));
  if (uplink_)
    uplink_->subscription_changed(true, std::string{filter});
  return {};
}

caf::error bus::unsubscribe(const endpoint_ptr& ep, std::string_view filter) {
  std::lock_guard guard{write_mtx_};
  auto cur = snapshot();
  auto all = cur->all;
  auto i = std::find_if(all.begin(), all.end(), [&](const entry& e) {
    return e.ep == ep && e.filter == filter;
  });
  if (i == all.end())
    return make_error(errc::invalid_state,
                      "not subscribed to '" + std::string{filter} + "'");
  all.erase(i);
  rebuild(std::move(all));
  if (uplink_)
    uplink_->subscription_changed(false, std::string{filter});
  return {};
}

void bus::unsubscribe_all(const endpoint_ptr& ep) {
  std::lock_guard guard{write_mtx_};
  auto all = snapshot()->all;
  auto n = all.size();
  std::erase_if(all, [&](const entry& e) {
    if (e.ep != ep)
      return false;
    if (uplink_)
      uplink_->subscription_changed(false, e.filter);
    return true;
  });
  if (all.size() != n)
    rebuild(std::move(all));
}

std::vector<std::string> bus::filters_of(const endpoint_ptr& ep) const {
  std::vector<std::string> result;
  for (auto& e : snapshot()->all)
    if (e.ep == ep)
      result.push_back(e.filter);
  return result;
}

caf::error bus::payload_error(const Envelope& msg) {
  refused_too_large_.fetch_add(1, std::memory_order_relaxed);
  return make_error(errc::too_large,
                    "payload of " + std::to_string(msg.payload().size()) + " bytes on '"
                      + msg.topic() + "' is over the bus limit of "
                      + std::to_string(max_payload_)
                      + " bytes (kernel.bus.max_payload_bytes)");
}

caf::error bus::owner_error(const Envelope& msg, std::string_view publisher) {
  std::string owner;
  {
    std::lock_guard guard{owner_mtx_};
    // Owned filters never overlap, so at most one matches.
    for (auto& o : owners_)
      if (topic_matches(o.filter, msg.topic())) {
        if (o.owner == publisher)
          return {};
        owner = o.owner;
        break;
      }
  }
  if (owner.empty())
    return {};
  refused_not_owner_.fetch_add(1, std::memory_order_relaxed);
  return make_error(errc::not_authorized, "'" + std::string{publisher}
                                            + "' may not publish on '" + msg.topic()
                                            + "': its events belong to '" + owner + "'");
}

caf::expected<publish_result> bus::publish(Envelope msg, std::string_view publisher) {
  if (auto err = validate_topic(msg.topic()))
    return err;
  // Both checks cost the hot path a compare each, no caf::error temporaries.
  if (msg.payload().size() > max_payload_) [[unlikely]]
    return payload_error(msg);
  // Only `$grove/` topics have owners: others stop at the first character (validated
  // topics are not empty). In a plugin-host child the kernel, which knows every owner,
  // checks on arrival.
  if (msg.topic()[0] == '$' && !uplink_ && msg.topic().starts_with(owned_namespace))
    [[unlikely]] {
    if (auto err = owner_error(msg, publisher))
      return err;
  }
  if (msg.id() == 0)
    msg.set_id(next_id());
  if (msg.timestamp_ns() == 0)
    msg.set_timestamp_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count());
  published_.fetch_add(1, std::memory_order_relaxed);
  if (uplink_) {
    // In a plugin-host child the kernel routes; count it as handed over.
    uplink_->forward(std::move(msg));
    return publish_result{1, 0};
  }
  auto t = snapshot();
  publish_result result;
  // Find the receivers first: one receiver gets the envelope moved into its mailbox
  // element; several share one reference-counted message.
  constexpr size_t inline_max = 16;
  std::array<endpoint*, inline_max> few;
  std::vector<endpoint*> many;
  size_t n = 0;
  auto add = [&](endpoint* ep) {
    if (n < inline_max) {
      few[n] = ep;
    } else {
      if (many.empty())
        many.assign(few.begin(), few.end());
      many.push_back(ep);
    }
    ++n;
  };
  if (auto i = t->exact.find(msg.topic()); i != t->exact.end())
    for (auto& e : i->second)
      add(e.ep.get());
  for (auto& e : t->wild)
    if (topic_matches(e.filter, msg.topic()))
      add(e.ep.get());
  auto count = [&](bool ok) {
    if (ok)
      ++result.delivered;
    else
      ++result.dropped;
  };
  if (n == 1) {
    count(few[0]->offer(std::move(msg)));
  } else if (n > 1 && GROVE_TSAN) {
    // Under TSan each receiver gets its own copy: a shared message is freed by whichever
    // receiver lets go last, in uninstrumented CAF, so TSan sees every other receiver's
    // reads race with that free (one suppressed report per message, each a stack
    // restore under TSan's report lock). Receivers only read it, so nothing TSan could
    // find is lost; outside the tsan build type this branch is compiled out.
    for (size_t i = 0; i < n; ++i)
      count((n <= inline_max ? few[i] : many[i])->offer(Envelope{msg}));
  } else if (n > 1) {
    auto wrapped = wrap(std::move(msg));
    for (size_t i = 0; i < n; ++i)
      count((n <= inline_max ? few[i] : many[i])->offer(wrapped));
  }
  if (result.delivered + result.dropped == 0)
    unrouted_.fetch_add(1, std::memory_order_relaxed);
  if (result.delivered > 0)
    delivered_.fetch_add(result.delivered, std::memory_order_relaxed);
  if (result.dropped > 0)
    dropped_.fetch_add(result.dropped, std::memory_order_relaxed);
  return result;
}

caf::error bus::own(std::string_view owner, std::string_view filter) {
  if (auto err = validate_filter(filter))
    return err;
  if (!filter.starts_with(owned_namespace))
    return make_error(errc::invalid_topic, "'" + std::string{owner} + "' cannot own '"
                                             + std::string{filter}
                                             + "': only topics under $grove/ have owners");
  if (uplink_) {
    // In a plugin-host child the kernel, which knows every owner, decides.
    uplink_->own_changed(true, std::string{filter});
    return {};
  }
  std::lock_guard guard{owner_mtx_};
  for (auto& o : owners_) {
    if (o.owner == owner && o.filter == filter)
      return {};
    if (o.owner != owner && filters_overlap(o.filter, filter))
      return make_error(errc::already_served,
                        "'" + std::string{owner} + "' cannot own '" + std::string{filter}
                          + "': '" + o.owner + "' owns '" + o.filter + "'");
  }
  owners_.push_back(serve_claim{std::string{filter}, std::string{owner}});
  return {};
}

caf::error bus::disown(std::string_view owner, std::string_view filter) {
  if (uplink_) {
    uplink_->own_changed(false, std::string{filter});
    return {};
  }
  std::lock_guard guard{owner_mtx_};
  auto n = std::erase_if(owners_, [&](const serve_claim& o) {
    return o.owner == owner && o.filter == filter;
  });
  if (n == 0)
    return make_error(errc::invalid_state, "'" + std::string{owner} + "' does not own '"
                                             + std::string{filter} + "'");
  return {};
}

void bus::disown_all(std::string_view owner) {
  std::lock_guard guard{owner_mtx_};
  std::erase_if(owners_, [&](const serve_claim& o) { return o.owner == owner; });
}

std::vector<std::string> bus::owned_by(std::string_view owner) const {
  std::vector<std::string> result;
  std::lock_guard guard{owner_mtx_};
  for (auto& o : owners_)
    if (o.owner == owner)
      result.push_back(o.filter);
  return result;
}

std::string bus::owner_of(std::string_view topic) const {
  std::lock_guard guard{owner_mtx_};
  for (auto& o : owners_)
    if (topic_matches(o.filter, topic))
      return o.owner;
  return {};
}

caf::error bus::serve(const endpoint_ptr& ep, std::string_view filter) {
  if (auto err = validate_filter(filter))
    return err;
  std::vector<std::function<void()>> woken;
  {
    std::lock_guard guard{serve_mtx_};
    for (auto& c : claims_) {
      if (c.ep == ep && c.filter == filter)
        return {};
      if (c.ep != ep && filters_overlap(c.filter, filter))
        return make_error(errc::already_served,
                          "'" + ep->name() + "' cannot serve '" + std::string{filter}
                            + "': '" + c.ep->name() + "' serves '" + c.filter + "'");
    }
    claims_.push_back(claim{std::string{filter}, ep});
    std::erase_if(waiters_, [&](waiter& w) {
      if (!topic_matches(filter, w.topic))
        return false;
      woken.push_back(std::move(w.fn));
      return true;
    });
  }
  if (uplink_)
    uplink_->serve_changed(true, std::string{filter});
  for (auto& fn : woken)
    fn();
  return {};
}

caf::error bus::unserve(const endpoint_ptr& ep, std::string_view filter) {
  {
    std::lock_guard guard{serve_mtx_};
    auto n = std::erase_if(claims_, [&](const claim& c) {
      return c.ep == ep && c.filter == filter;
    });
    if (n == 0)
      return make_error(errc::invalid_state, "not serving '" + std::string{filter} + "'");
  }
  if (uplink_)
    uplink_->serve_changed(false, std::string{filter});
  return {};
}

void bus::unserve_all(const endpoint_ptr& ep) {
  std::vector<std::string> gone;
  {
    std::lock_guard guard{serve_mtx_};
    std::erase_if(claims_, [&](const claim& c) {
      if (c.ep != ep)
        return false;
      gone.push_back(c.filter);
      return true;
    });
  }
  if (uplink_)
    for (auto& f : gone)
      uplink_->serve_changed(false, f);
}

std::vector<std::string> bus::served_by(const endpoint_ptr& ep) const {
  std::vector<std::string> result;
  std::lock_guard guard{serve_mtx_};
  for (auto& c : claims_)
    if (c.ep == ep)
      result.push_back(c.filter);
  return result;
}

std::vector<serve_claim> bus::claims() const {
  std::vector<serve_claim> result;
  std::lock_guard guard{serve_mtx_};
  for (auto& c : claims_)
    result.push_back(serve_claim{c.filter, c.ep->name()});
  return result;
}

endpoint_ptr bus::route_request(std::string_view topic) const {
  if (uplink_)
    return uplink_->request_endpoint();
  // Claims never overlap, so at most one matches.
  std::lock_guard guard{serve_mtx_};
  for (auto& c : claims_)
    if (topic_matches(c.filter, topic))
      return c.ep;
  return nullptr;
}

uint64_t bus::watch_served(std::string_view topic, std::function<void()> f,
                           std::chrono::milliseconds timeout) {
  uint64_t id = 0;
  {
    std::lock_guard guard{serve_mtx_};
    bool served = false;
    if (!uplink_)
      for (auto& c : claims_)
        served = served || topic_matches(c.filter, topic);
    if (!served) {
      id = next_waiter_++;
      waiters_.push_back(waiter{id, std::string{topic}, std::move(f)});
    }
  }
  if (id == 0) {
    f(); // outside the lock: the callback may use the bus
    return 0;
  }
  // In a plugin-host child only the kernel knows every claim.
  if (uplink_)
    uplink_->watch_served(id, std::string{topic}, timeout);
  return id;
}

void bus::cancel_watch(uint64_t id) {
  std::lock_guard guard{serve_mtx_};
  std::erase_if(waiters_, [&](const waiter& w) { return w.id == id; });
}

void bus::fire_watch(uint64_t id) {
  std::function<void()> fn;
  {
    std::lock_guard guard{serve_mtx_};
    for (auto i = waiters_.begin(); i != waiters_.end(); ++i)
      if (i->id == id) {
        fn = std::move(i->fn);
        waiters_.erase(i);
        break;
      }
  }
  if (fn)
    fn();
}

std::vector<endpoint_ptr> bus::endpoints() const {
  std::vector<endpoint_ptr> result;
  for (auto& e : snapshot()->all)
    if (std::find(result.begin(), result.end(), e.ep) == result.end())
      result.push_back(e.ep);
  return result;
}

bus_stats bus::stats() const {
  bus_stats s;
  s.published = published_.load();
  s.unrouted = unrouted_.load();
  auto t = snapshot();
  s.delivered = delivered_.load();
  s.dropped = dropped_.load();
  s.subscriptions = static_cast<uint32_t>(t->all.size());
  s.refused_not_owner = refused_not_owner_.load();
  s.refused_too_large = refused_too_large_.load();
  return s;
}

} // namespace grove
