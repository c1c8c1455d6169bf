#include "slot.hpp"

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "grove/rpc.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/send.hpp>
#include <caf/sec.hpp>
#include <caf/skip.hpp>
#include <spdlog/spdlog.h>

#include "blocking_pool.hpp"
#include "tsan_annotations.hpp"

namespace grove {

namespace {

/// The slot running on this thread right now (to tell actor-thread calls apart).
thread_local const void* current_slot = nullptr;

} // namespace

namespace {

bool granted(const std::vector<std::string>& grants, std::string_view source) {
  for (auto& g : grants) {
    if (!g.empty() && g.back() == '*') {
      if (source.starts_with(std::string_view{g}.substr(0, g.size() - 1)))
        return true;
    } else if (g == source) {
      return true;
    }
  }
  return false;
}

} // namespace

caf::error authorize_source(Envelope& msg, const std::string& name,
                            const std::vector<std::string>& may_claim,
                            slot_status& status, spdlog::logger& log) {
  if (msg.source().empty()) {
    msg.set_source(name);
    return {};
  }
  // "kernel" is what consumers of the kernel's events trust: no wildcard reaches it,
  // and profiles refuse the exact grant (only a plugin-host child's plugin has it, as
  // groved checks again what the child sends).
  if (msg.source() == name
      || (msg.source() == kernel_source
            ? std::find(may_claim.begin(), may_claim.end(), kernel_source) != may_claim.end()
            : granted(may_claim, msg.source())))
    return {};
  auto n = status.refused_sources.fetch_add(1, std::memory_order_relaxed) + 1;
  // Logged, but a plugin stuck in a loop must not flood the log: the first ten, then
  // every thousandth.
  if (n <= 10 || n % 1000 == 0)
    log.warn("refused a message on '{}' claiming source '{}': not granted by may_claim "
             "(refused so far: {})",
             msg.topic(), msg.source(), n);
  return make_error(errc::not_authorized,
                    "'" + name + "' may not send as '" + msg.source()
                      + "' (grant it with may_claim in the image profile)");
}

caf::expected<publish_result> publish_as(bus& b, Envelope msg, const std::string& name,
                                         spdlog::logger& log) {
  auto result = b.publish(std::move(msg), name);
  if (!result && result.error() != errc::invalid_topic) {
    // Like refused sources: logged, but a plugin stuck in a loop must not flood the log.
    auto st = b.stats();
    auto n = st.refused_not_owner + st.refused_too_large;
    if (n <= 10 || n % 1000 == 0)
      log.warn("publish refused: {} (refused on the bus so far: {})",
               describe(result.error()), n);
  }
  return result;
}

void log_failure_decision(spdlog::logger& log, const restart_policy& policy,
                          const failure_tracker::decision& d) {
  if (d.broken)
    log.critical("{} failures within {}s: marked broken, stays down", d.count,
                 policy.window.count());
  else
    log.warn("restarting in {} ms (failure {} of {} allowed in {}s)", d.delay.count(), d.count,
             policy.max_failures, policy.window.count());
}

std::string now_iso8601() {
  auto now = std::chrono::system_clock::now();
  auto t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

namespace {

class in_process_slot;

/// The context handed to one plugin instance.
class slot_context final : public context {
public:
  slot_context(in_process_slot* owner) : owner_(owner) {
  }

  const std::string& name() const override;
  const YAML::Node& config() const override;
  const std::filesystem::path& state_dir() const override;
  spdlog::logger& log() override;
  caf::actor_system& system() override;
  caf::error subscribe(std::string_view filter) override;
  caf::error unsubscribe(std::string_view filter) override;
  caf::expected<publish_result> publish(std::string_view topic, std::string payload,
                                        std::string_view content_type) override;
  caf::expected<publish_result> publish(Envelope msg) override;
  void request(std::string_view topic, std::string payload,
               std::chrono::milliseconds timeout, response_handler f) override;
  void reply(const Envelope& request, std::string payload,
             std::string_view content_type) override;
  void reply_error(const Envelope& request, caf::error err) override;
  timer_id after(std::chrono::milliseconds delay, std::function<void()> f) override;
  timer_id every(std::chrono::milliseconds period, std::function<void()> f) override;
  void cancel(timer_id id) override;
  void fail(caf::error reason) override;
  void set_status(std::string_view key, std::string value) override;
  caf::expected<grove::counter> counter(std::string_view name,
                                        std::string_view help) override;
  caf::expected<grove::gauge> gauge(std::string_view name, std::string_view help) override;
  caf::expected<grove::counter_family> counter_family(std::string_view name,
                                                      std::string_view help,
                                                      std::string_view label) override;
  caf::expected<grove::gauge_family> gauge_family(std::string_view name,
                                                  std::string_view help,
                                                  std::string_view label) override;
  void post(std::function<void()> fn) override;
  void keep_process(std::string name, process p) override;
  std::optional<process> adopt_process(std::string_view name) override;
  bool adopt_request(const Envelope& request) override;

protected:
  void run_blocking_impl(std::function<void()> work, std::function<void()> then) override;
  caf::error serve(std::string_view filter, request_handler handler) override;
  caf::error unserve(std::string_view filter) override;
  void when_served(std::string_view topic, std::chrono::milliseconds timeout,
                   std::function<void(caf::error)> f) override;
  void call(Envelope msg, std::chrono::milliseconds timeout, response_handler f) override;

public:
  caf::error own_events(std::string_view filter) override;

private:
  in_process_slot* owner_;
};

/// One plugin instance: created from a library, destroyed through it, and holding the
/// library open while it lives.
struct instance {
  plugin_library_ptr lib;
  plugin* ptr = nullptr;
  ~instance() {
    if (ptr != nullptr)
      lib->descriptor->destroy(ptr);
  }
};

class in_process_slot : public caf::event_based_actor {
public:
  in_process_slot(caf::actor_config& cfg, slot_setup setup)
    : caf::event_based_actor(cfg), setup_(std::move(setup)), ctx_(this) {
  }

  // -- accessors for slot_context ---------------------------------------------

  const slot_setup& setup() const {
    return setup_;
  }

  const endpoint_ptr& ep() const {
    return *setup_.ep;
  }

  bool on_actor_thread() const {
    return current_slot == this;
  }

  uint64_t generation() const {
    return generation_;
  }

  // Subscriptions the current instance asked for (any thread).
  caf::error add_filter(std::string_view filter) {
    if (auto err = setup_.bus_ptr->subscribe(ep(), filter))
      return err;
    std::lock_guard guard{filters_mtx_};
    wanted_filters_.emplace_back(filter);
    return {};
  }

  caf::error remove_filter(std::string_view filter) {
    {
      std::lock_guard guard{filters_mtx_};
      std::erase(wanted_filters_, std::string{filter});
    }
    return setup_.bus_ptr->unsubscribe(ep(), filter);
  }

  caf::expected<publish_result> publish(Envelope msg) {
    // A plugin that fronts other endpoints (message_manager for devices, the cloud and
    // functions) publishes on their behalf, within what its profile entry grants.
    if (auto err = authorize_source(msg, setup_))
      return err;
    return publish_as(*setup_.bus_ptr, std::move(msg), setup_.name, *setup_.log);
  }

  // Event topics of the current instance (actor thread: init, start, callbacks).
  caf::error add_owned(std::string_view filter) {
    if (!on_actor_thread())
      return make_error(errc::invalid_state,
                        "own_events must be called from the plugin's own callbacks");
    if (auto err = setup_.bus_ptr->own(setup_.name, filter)) {
      // Made while loading, it fails the load even if the plugin ignores the result.
      if (starting_ && claim_error_.empty())
        claim_error_ = describe(err);
      return err;
    }
    if (std::find(owned_.begin(), owned_.end(), filter) == owned_.end())
      owned_.emplace_back(filter);
    return {};
  }

  // A delayed message to this slot, on the kernel's clock: CAF's (real time) unless a
  // test installed a manual one. The manual clock holds only a weak handle, so a timer
  // left waiting never keeps a stopped slot alive.
  template <class... Ts>
  void send_later(std::chrono::milliseconds delay, Ts... xs) {
    if (!setup_.clock) {
      delayed_send(this, delay, xs...);
      return;
    }
    auto weak = caf::actor_cast<caf::weak_actor_ptr>(this);
    setup_.clock->schedule(delay, [weak, xs...] {
      if (auto strong = caf::actor_cast<caf::actor>(weak.lock()))
        caf::anon_send(strong, xs...);
    });
  }

  // A serve claim of the current instance (actor thread: init, start, callbacks).
  caf::error add_claim(std::string_view filter, request_handler handler) {
    if (!on_actor_thread())
      return make_error(errc::invalid_state,
                        "serve must be called from the plugin's own callbacks");
    if (!handler)
      return make_error(errc::invalid_state, "serve needs a handler");
    if (auto err = setup_.bus_ptr->serve(ep(), filter)) {
      // Made while loading, it fails the load even if the plugin ignores the result.
      if (starting_ && claim_error_.empty())
        claim_error_ = describe(err);
      return err;
    }
    for (auto& [f, h] : handlers_)
      if (f == filter) {
        h = std::move(handler);
        return {};
      }
    handlers_.emplace_back(std::string{filter}, std::move(handler));
    return {};
  }

  caf::error remove_claim(std::string_view filter) {
    if (!on_actor_thread())
      return make_error(errc::invalid_state,
                        "unserve must be called from the plugin's own callbacks");
    std::erase_if(handlers_, [&](const auto& x) { return x.first == filter; });
    return setup_.bus_ptr->unserve(ep(), filter);
  }

  void add_watch(std::string_view topic, std::chrono::milliseconds timeout,
                 std::function<void(caf::error)> f) {
    if (!on_actor_thread()) {
      f(make_error(errc::invalid_state,
                   "when_served must be called from the plugin's own callbacks"));
      return;
    }
    auto id = next_watch_++;
    watches_.emplace(id, watch{std::move(f), 0});
    auto bus_id = setup_.bus_ptr->watch_served(
      topic,
      [self = caf::actor_cast<caf::actor>(this), gen = generation_, id] {
        caf::anon_send(self, served_atom::value, gen, id);
      },
      timeout);
    if (auto i = watches_.find(id); i != watches_.end())
      i->second.bus_id = bus_id;
    send_later(timeout, unserved_atom::value, generation_, id);
  }

  // Either the claim came (served) or the time ran out; the first one wins.
  void finish_watch(uint64_t gen, uint64_t id, bool served) {
    if (gen != generation_)
      return;
    auto i = watches_.find(id);
    if (i == watches_.end())
      return;
    auto w = std::move(i->second);
    watches_.erase(i);
    caf::error result;
    if (!served) {
      setup_.bus_ptr->cancel_watch(w.bus_id);
      result = make_error(errc::timeout, "no plugin started serving in time");
    }
    auto err = guarded("when_served handler", [&] { w.fn(std::move(result)); });
    if (!err.empty())
      on_failure(err);
  }

  timer_id add_timer(std::chrono::milliseconds delay, std::chrono::milliseconds period,
                     std::function<void()> f) {
    if (!on_actor_thread()) {
      setup_.log->error("timers must be set from the plugin's own callbacks");
      return 0;
    }
    auto id = next_timer_++;
    timers_.emplace(id, timer{std::move(f), period});
    send_later(delay, timer_atom::value, id);
    return id;
  }

  void cancel_timer(timer_id id) {
    if (on_actor_thread())
      timers_.erase(id);
  }

  void start_request(Envelope env, std::chrono::milliseconds timeout,
                     response_handler f) {
    if (!on_actor_thread()) {
      f(make_error(errc::invalid_state,
                   "requests must be made from the plugin's own callbacks"));
      return;
    }
    auto id = next_request_++;
    pending_.emplace(id, std::move(f));
    // Answer asynchronously so the handler never runs inside request().
    auto fail_later = [&](caf::error err) { send(this, resp_atom::value, id, std::move(err)); };
    if (auto err = validate_topic(env.topic())) {
      fail_later(std::move(err));
      return;
    }
    if (auto err = authorize_source(env, setup_)) {
      fail_later(std::move(err));
      return;
    }
    if (auto err = setup_.bus_ptr->check_payload(env)) {
      fail_later(std::move(err));
      return;
    }
    auto target = setup_.bus_ptr->route_request(env.topic());
    if (!target) {
      fail_later(make_error(errc::no_route, "nobody serves '" + env.topic() + "'"));
      return;
    }
    env.set_id(setup_.bus_ptr->next_id());
    env.set_reply_to(setup_.name + "/" + std::to_string(id));
    env.set_timestamp_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count());
    auto gen = generation_;
    request(target->handle(), timeout, bus::wrap(std::move(env)))
      .then(
        [this, id, gen](Envelope& reply) {
          if (gen == generation_)
            finish_request(id, std::move(reply));
        },
        [this, id, gen](caf::error& err) {
          if (gen != generation_)
            return;
          if (err == caf::sec::request_timeout)
            err = make_error(errc::timeout, "request timed out");
          finish_request(id, std::move(err));
        });
  }

  void answer(const Envelope& req, caf::expected<Envelope> result) {
    // An oversized reply becomes the requester's error: it must not reach an isolated
    // requester's child, and the server hears of it in its log.
    if (result)
      if (auto err = setup_.bus_ptr->check_payload(*result)) {
        setup_.log->warn("reply refused: {}", describe(err));
        result = std::move(err);
      }
    if (on_actor_thread()) {
      answer_here(req.id(), std::move(result));
      return;
    }
    // Another thread (a plugin's worker): the promise is taken out under the lock and the
    // reply written straight into the requester's mailbox (safe from any thread, like an
    // anon_send), so it skips a hop through this actor. Not promise.deliver(): in CAF 0.17
    // it reads this actor's execution unit (local_actor::context()) unsynchronised and
    // schedules the requester on it. A promise with forwarding stages still hops over.
    caf::response_promise rp;
    {
      std::lock_guard guard{promises_mtx_};
      auto i = promises_.find(req.id());
      if (i == promises_.end()) {
        setup_.log->warn("reply to unknown or already answered request {}", req.id());
        return;
      }
      if (i->second.stages().empty() && i->second.source()) {
        rp = std::move(i->second);
        promises_.erase(i);
      }
    }
#if GROVE_TSAN
    // Acquired by the requester (kernel::request, an isolated plugin's bridge).
    if (ep())
      GROVE_TSAN_RELEASE(ep().get());
#endif
    if (!rp.source()) {
      // anon_send, not send(this, ...): this is not the actor's thread (send reads the
      // actor's execution unit unsynchronised).
      auto self = caf::actor_cast<caf::actor>(this);
      if (result)
        caf::anon_send(self, reply_atom::value, req.id(), std::move(*result));
      else
        caf::anon_send(self, reply_atom::value, req.id(), std::move(result.error()));
      return;
    }
    auto msg = result ? caf::make_message(std::move(*result))
                      : caf::make_message(std::move(result.error()));
    rp.source()->enqueue(caf::strong_actor_ptr{ctrl()}, rp.id().response_id(), std::move(msg),
                         nullptr);
  }

  void answer_here(uint64_t id, caf::expected<Envelope> result) {
    caf::response_promise rp;
    {
      std::lock_guard guard{promises_mtx_};
      auto i = promises_.find(id);
      if (i == promises_.end()) {
        setup_.log->warn("reply to unknown or already answered request {}", id);
        return;
      }
      rp = std::move(i->second);
      promises_.erase(i);
    }
#if GROVE_TSAN
    // Acquired by the requester (kernel::request, an isolated plugin's bridge).
    if (ep())
      GROVE_TSAN_RELEASE(ep().get());
#endif
    if (result)
      rp.deliver(std::move(*result));
    else
      rp.deliver(std::move(result.error()));
  }

  // The promises of requests in hand, taken out (answered by the caller, on the actor).
  std::unordered_map<uint64_t, caf::response_promise> take_promises() {
    std::lock_guard guard{promises_mtx_};
    return std::exchange(promises_, {});
  }

  void report_failure(caf::error reason) {
    // From any thread (a plugin's own): anon_send, as post_call.
    caf::anon_send(caf::actor_cast<caf::actor>(this), fail_atom::value, generation_,
                   describe(reason));
  }

  void set_detail(std::string_view key, std::string value) {
    std::lock_guard guard{setup_.status->mtx};
    auto full = setup_.name + "." + std::string{key};
    if (value.empty())
      setup_.status->details.erase(full);
    else
      setup_.status->details[full] = std::move(value);
  }

  // Any thread: runs `fn` on this actor if the current instance is still there then.
  void post_call(std::function<void()> fn) {
    std::lock_guard guard{post_mtx_};
    caf::anon_send(caf::actor_cast<caf::actor>(this), post_atom::value, post_gen_,
                   posted_call{post_lib_, std::move(fn)});
  }

  // Any thread: `work` on the blocking pool, then `then` posted like post_call. The
  // task holds the actor and the library, not the context: it may outlive both.
  void submit_blocking(std::function<void()> work, std::function<void()> then) {
    struct task {
      plugin_library_ptr lib;
      caf::actor self;
      uint64_t gen = 0;
      std::function<void()> work;
      std::function<void()> then;
    };
    auto t = std::make_shared<task>();
    {
      std::lock_guard guard{post_mtx_};
      t->lib = post_lib_;
      t->gen = post_gen_;
    }
    t->self = caf::actor_cast<caf::actor>(this);
    t->work = std::move(work);
    t->then = std::move(then);
    detail::blocking_pool::instance().submit([t]() mutable {
      t->work();
      t->work = nullptr;
      caf::anon_send(t->self, post_atom::value, t->gen,
                     posted_call{t->lib, std::move(t->then)});
    });
  }

  void keep(std::string name, process p) {
    if (!on_actor_thread()) {
      setup_.log->error("keep_process must be called from the plugin's own callbacks; "
                        "stopping '{}'",
                        name);
      return;
    }
    p.unbind();
    kept_[std::move(name)] = std::move(p);
  }

  std::optional<process> adopt(std::string_view name) {
    if (!on_actor_thread())
      return std::nullopt;
    auto i = kept_.find(name);
    if (i == kept_.end())
      return std::nullopt;
    auto p = std::move(i->second);
    kept_.erase(i);
    return p;
  }

  // Takes a request the previous instance left open across a reload back into the
  // promises of the current one (context::adopt_request).
  bool adopt_request(uint64_t id) {
    if (!on_actor_thread())
      return false;
    auto i = carried_.find(id);
    if (i == carried_.end())
      return false;
    std::lock_guard guard{promises_mtx_};
    promises_.emplace(id, std::move(i->second));
    carried_.erase(i);
    return true;
  }

  // Answers what a reload carried and no instance adopted, as it was answered before
  // requests could be carried: the old instance stopped.
  void answer_carried() {
    for (auto& [id, rp] : std::exchange(carried_, {}))
      rp.deliver(make_error(errc::plugin_failed, setup_.name + " stopped: reloading"));
  }

protected:
#if GROVE_TSAN
  // What a sender wrote into a message (a 15 MiB payload, say) happens before this,
  // through the slot's endpoint: endpoint::push, kernel::request and an isolated
  // plugin's host loop release it after writing. Acquired before CAF matches the
  // message (see sink_actor in kernel.cpp for why not later).
  caf::invoke_message_result consume(caf::mailbox_element& x) override {
    if (setup_.ep && *setup_.ep)
      GROVE_TSAN_ACQUIRE(setup_.ep->get());
    return caf::event_based_actor::consume(x);
  }
#endif

  caf::behavior make_behavior() override {
    set_default_handler(caf::skip);
    running_ = slot_protocol_handlers(
      [this](init_atom) -> std::string {
        auto err = create_and_start();
        if (err.empty())
          set_state(plugin_state::running);
        else
          set_state(plugin_state::stopped, err);
        return err;
      },
      [this](Envelope& msg) { on_envelope(msg); },
      [this](reload_atom, reload_request& req) { return on_reload(req); },
      [this](reconf_atom, reconfig_request& req) { return on_reconfigure(req.config); },
      [this](stop_atom) { return on_stop(); })
      .or_else(
      [this](timer_atom, uint64_t id) { on_timer(id); },
      [this](resp_atom, uint64_t id, caf::error& err) {
        finish_request(id, std::move(err));
      },
      [this](reply_atom, uint64_t id, Envelope& reply) {
        answer_here(id, std::move(reply));
      },
      [this](reply_atom, uint64_t id, caf::error& err) {
        answer_here(id, std::move(err));
      },
      [this](served_atom, uint64_t gen, uint64_t id) { finish_watch(gen, id, true); },
      [this](unserved_atom, uint64_t gen, uint64_t id) { finish_watch(gen, id, false); },
      [this](fail_atom, uint64_t gen, std::string& reason) {
        if (gen == generation_ && inst_)
          on_failure("plugin reported failure: " + reason);
      },
      [this](restart_atom, uint64_t) {},
      [this](post_atom, uint64_t gen, posted_call& call) { on_posted(gen, call); });
    // While waiting to restart, bus messages stay in the mailbox (skipped) so none is
    // lost; the endpoint's credit bounds how many can pile up.
    restarting_ = slot_protocol_handlers(
      slot_skip::init, slot_skip::envelope,
      [this](reload_atom, reload_request& req) { return replace_dead(req); },
      [this](reconf_atom, reconfig_request&) { return refuse_while("restarting"); },
      [this](stop_atom) { return on_stop(); })
      .or_else(
      [this](restart_atom, uint64_t gen) {
        if (gen != generation_)
          return;
        auto err = create_and_start();
        if (!err.empty()) {
          on_failure("restart failed: " + err);
          return;
        }
        {
          std::lock_guard guard{setup_.status->mtx};
          setup_.status->restarts += 1;
        }
        set_state(plugin_state::running);
        setup_.log->info("restarted");
        become(running_);
      },
      [this](fail_atom, uint64_t, std::string&) {},
      [this](timer_atom, uint64_t) {},
      [](post_atom, uint64_t, posted_call&) {});
    // A broken plugin takes nothing: queued messages are discarded and counted.
    broken_ = slot_protocol_handlers(
      [this](init_atom) -> caf::result<std::string> {
        return make_error(errc::plugin_broken, setup_.name + " is broken");
      },
      [this](Envelope&) {
        if (!current_mailbox_element()->mid.is_request())
          ep()->discard();
        else
          make_response_promise().deliver(
            make_error(errc::plugin_broken, setup_.name + " is broken"));
      },
      [this](reload_atom, reload_request& req) { return replace_dead(req); },
      [this](reconf_atom, reconfig_request&) { return refuse_while("broken"); },
      [this](stop_atom) { return on_stop(); })
      .or_else([](caf::message&) {});
    return running_;
  }

  void on_exit() override {
    // Plugin code must be gone before the library may close; the endpoint holds our
    // handle, so dropping it here breaks the actor <-> endpoint cycle.
    inst_.reset();
    kept_.clear();
    timers_.clear();
    pending_.clear();
    take_promises();
    carried_.clear();
    handlers_.clear();
    drop_watches();
    if (setup_.ep)
      setup_.ep->reset();
    setup_.ep.reset();
    setup_.lib.reset();
  }

private:
  struct timer {
    std::function<void()> fn;
    std::chrono::milliseconds period;
  };

  // Runs plugin code; an exception is a failure of the plugin, never of the kernel.
  template <class F>
  std::string guarded(const char* what, F&& f) {
    auto prev = current_slot;
    current_slot = this;
    std::string err;
    try {
      f();
    } catch (const std::exception& e) {
      err = std::string{what} + " threw: " + e.what();
    } catch (...) {
      err = std::string{what} + " threw a non-standard exception";
    }
    current_slot = prev;
    return err;
  }

  void set_state(plugin_state st, std::string error = {}) {
    std::lock_guard guard{setup_.status->mtx};
    setup_.status->state = st;
    if (!error.empty())
      setup_.status->last_error = std::move(error);
  }

  // Creates an instance and runs init, restore (when given a snapshot) and start.
  // Returns an error text or "".
  std::string create_and_start(const std::string* snapshot = nullptr) {
    ++generation_;
    {
      std::lock_guard guard{post_mtx_};
      post_gen_ = generation_;
      post_lib_ = setup_.lib;
    }
    {
      std::lock_guard guard{filters_mtx_};
      wanted_filters_.clear();
    }
    auto previous_filters = setup_.bus_ptr->filters_of(ep());
    auto previous_claims = setup_.bus_ptr->served_by(ep());
    auto previous_owned = setup_.bus_ptr->owned_by(setup_.name);
    owned_.clear();
    claim_error_.clear();
    auto inst = std::make_unique<instance>();
    inst->lib = setup_.lib;
    inst->ptr = static_cast<plugin*>(setup_.lib->descriptor->create());
    if (inst->ptr == nullptr)
      return "the plugin's factory failed";
    inst_ = std::move(inst);
    starting_ = true;
    caf::error result;
    auto err = guarded("init", [&] { result = inst_->ptr->init(ctx_); });
    if (err.empty() && result)
      err = "init failed: " + describe(result);
    restored_ = false;
    if (err.empty() && snapshot != nullptr) {
      err = guarded("restore", [&] { result = inst_->ptr->restore(*snapshot); });
      if (err.empty() && result == errc::unsupported)
        result = caf::error{}; // a build without the hook starts fresh
      else if (err.empty() && !result)
        restored_ = true;
      if (err.empty() && result)
        err = "restore failed: " + describe(result);
    }
    if (err.empty()) {
      set_state(plugin_state::initialized);
      err = guarded("start", [&] { result = inst_->ptr->start(); });
      if (err.empty() && result)
        err = "start failed: " + describe(result);
    }
    starting_ = false;
    if (err.empty() && !claim_error_.empty())
      err = claim_error_;
    if (!err.empty()) {
      // In a reload, requests it adopted and left open go back for the build put back.
      destroy_instance("init or start failed", snapshot != nullptr);
      return err;
    }
    // Give up claims an earlier instance held that this one did not make again.
    for (auto& f : previous_claims)
      if (std::none_of(handlers_.begin(), handlers_.end(),
                       [&](const auto& h) { return h.first == f; }))
        setup_.bus_ptr->unserve(ep(), f);
    for (auto& f : previous_owned)
      if (std::find(owned_.begin(), owned_.end(), f) == owned_.end())
        setup_.bus_ptr->disown(setup_.name, f);
    // Drop subscriptions an earlier instance held that this one did not ask for.
    std::vector<std::string> wanted;
    {
      std::lock_guard guard{filters_mtx_};
      wanted = wanted_filters_;
    }
    for (auto& f : previous_filters)
      if (std::find(wanted.begin(), wanted.end(), f) == wanted.end())
        setup_.bus_ptr->unsubscribe(ep(), f);
    // Children an earlier instance kept and this one did not adopt.
    for (auto& [name, p] : kept_)
      setup_.log->info("stopping process '{}': the new instance did not adopt it", name);
    kept_.clear();
    // Requests carried over a reload that this instance did not adopt.
    answer_carried();
    return {};
  }

  // Stops and destroys the instance while its library is still loaded: every
  // callback the plugin handed us (timers, response handlers) goes first. Requests it
  // leaves open are answered, or with `carry` (a reload) kept for the next instance;
  // without `carry`, requests still carried from a reload are answered too.
  void destroy_instance(const std::string& why, bool carry = false) {
    if (!carry)
      answer_carried();
    if (!inst_)
      return;
    auto err = guarded("stop", [&] { inst_->ptr->stop(); });
    if (!err.empty())
      setup_.log->warn("{}", err);
    timers_.clear();
    pending_.clear();
    // Handlers and waiters are plugin code: gone before the library may close.
    handlers_.clear();
    drop_watches();
    for (auto& [id, rp] : take_promises())
      if (carry)
        carried_.emplace(id, std::move(rp));
      else
        rp.deliver(make_error(errc::plugin_failed, setup_.name + " stopped: " + why));
    inst_.reset();
  }

  void on_envelope(Envelope& msg) {
    auto mid = current_mailbox_element()->mid;
    std::string err;
    if (mid.is_request()) {
      // Requests go to the handler of the claim they matched, never to on_message.
      auto i = std::find_if(handlers_.begin(), handlers_.end(), [&](const auto& h) {
        return topic_matches(h.first, msg.topic());
      });
      if (i == handlers_.end()) {
        make_response_promise().deliver(make_error(
          errc::no_route, "'" + setup_.name + "' no longer serves '" + msg.topic() + "'"));
        return;
      }
      {
        std::lock_guard guard{promises_mtx_};
        promises_.emplace(msg.id(), make_response_promise());
      }
      // Copy: the handler may unserve its own claim.
      auto handler = i->second;
      err = guarded("request handler", [&] { handler(msg); });
      if (!err.empty())
        on_failure(err);
      return;
    }
    if (inst_)
      err = guarded("on_message", [&] { inst_->ptr->on_message(msg); });
    // Credit goes back after handling, so capacity bounds in-hand work too.
    if (!mid.is_request())
      ep()->consumed();
    if (!err.empty())
      on_failure(err);
  }

  void on_posted(uint64_t gen, posted_call& call) {
    if (gen != generation_ || !inst_ || !call.fn)
      return;
    auto err = guarded("posted function", [&] { call.fn(); });
    if (!err.empty())
      on_failure(err);
  }

  void on_timer(uint64_t id) {
    auto i = timers_.find(id);
    if (i == timers_.end() || !inst_)
      return;
    auto period = i->second.period;
    // Copy: the callback may cancel its own timer.
    auto fn = i->second.fn;
    auto err = guarded("timer", [&] { fn(); });
    if (!err.empty()) {
      on_failure(err);
      return;
    }
    if (period.count() > 0 && timers_.count(id))
      send_later(period, timer_atom::value, id);
    else
      timers_.erase(id);
  }

  void finish_request(uint64_t id, caf::expected<Envelope> result) {
    auto i = pending_.find(id);
    if (i == pending_.end())
      return;
    auto fn = std::move(i->second);
    pending_.erase(i);
    result = checked_reply(std::move(result));
    auto err = guarded("response handler", [&] { fn(std::move(result)); });
    if (!err.empty())
      on_failure(err);
  }

  void on_failure(const std::string& reason) {
    setup_.log->error("failed: {}", reason);
    destroy_instance(reason);
    kept_.clear();
    auto d = setup_.clock ? failures_.record(setup_.restart, setup_.clock->now())
                          : failures_.record(setup_.restart);
    log_failure_decision(*setup_.log, setup_.restart, d);
    if (d.broken) {
      set_state(plugin_state::broken, reason);
      setup_.bus_ptr->unsubscribe_all(ep());
      become(broken_);
      return;
    }
    set_state(plugin_state::restarting, reason);
    send_later(d.delay, restart_atom::value, generation_);
    become(restarting_);
  }

  using reload_result = std::tuple<bool, std::string>;

  void note_reload(bool ok, const std::string& what) {
    std::lock_guard guard{setup_.status->mtx};
    setup_.status->last_reload = now_iso8601() + (ok ? " ok: " : " failed: ") + what;
    setup_.status->version = setup_.lib->version;
    setup_.status->library = setup_.lib->path.string();
    setup_.status->schema = setup_.lib->schema;
  }

  // Swaps the running instance for one made from `req`. Runs inside one handler, so
  // every message that arrives meanwhile waits in the mailbox and is handled, in
  // order, by whichever instance stands at the end.
  reload_result on_reload(reload_request& req) {
    auto old_version = setup_.lib->version;
    std::string snap;
    bool have_snap = false;
    if (inst_) {
      caf::expected<std::string> taken{std::string{}};
      auto err = guarded("snapshot", [&] { taken = inst_->ptr->snapshot(); });
      if (!err.empty()) {
        note_reload(false, err);
        return {false, err + "; kept the running instance"};
      }
      if (taken) {
        snap = std::move(*taken);
        have_snap = true;
      } else if (taken.error() != errc::unsupported) {
        auto what = "snapshot failed: " + describe(taken.error());
        note_reload(false, what);
        return {false, what + "; kept the running instance"};
      }
    }
    auto old_lib = setup_.lib;
    auto old_config = setup_.config;
    // With a snapshot, requests the old instance left open go along for the next one to
    // adopt (context::adopt_request); the rest are answered once it has started.
    destroy_instance("reloading", have_snap);
    setup_.lib = req.lib;
    setup_.config = std::make_shared<const YAML::Node>(req.config);
    auto err = create_and_start(have_snap ? &snap : nullptr);
    if (err.empty()) {
      auto what = old_version + " -> " + setup_.lib->version
                  + (restored_    ? ", state carried over"
                     : have_snap ? ", new build has no restore hook: started fresh"
                                 : ", plugin has no snapshot hook: started fresh");
      setup_.log->info("reloaded from {}: {}", setup_.lib->path.string(), what);
      set_state(plugin_state::running);
      note_reload(true, what);
      return {true, what};
    }
    // Put the old build back with the state it handed over.
    setup_.log->error("reload failed: {}; putting {} back", err, old_version);
    setup_.lib = std::move(old_lib);
    setup_.config = std::move(old_config);
    auto back = create_and_start(have_snap ? &snap : nullptr);
    note_reload(false, err);
    if (!back.empty()) {
      on_failure("could not put the old instance back: " + back);
      return {false, err + "; putting the old instance back failed too: " + back};
    }
    set_state(plugin_state::running);
    return {false, err + "; old instance " + old_version + " put back with its state"};
  }

  // A reload of a plugin that is down (restarting or broken): start the new build
  // fresh; on success the slot runs again.
  reload_result replace_dead(reload_request& req) {
    auto old_lib = setup_.lib;
    auto old_config = setup_.config;
    setup_.lib = req.lib;
    setup_.config = std::make_shared<const YAML::Node>(req.config);
    auto err = create_and_start();
    if (!err.empty()) {
      setup_.lib = std::move(old_lib);
      setup_.config = std::move(old_config);
      note_reload(false, err);
      return {false, err + "; plugin stays down"};
    }
    failures_.clear();
    set_state(plugin_state::running);
    note_reload(true, "replaced a stopped instance (started fresh)");
    become(running_);
    return {true, "replaced a stopped instance with " + setup_.lib->version
                    + " (started fresh)"};
  }

  reload_result refuse_while(const char* state) {
    return {false, setup_.name + " is " + state + "; reload it with a build instead"};
  }

  // Applies a new configuration: through the plugin's reconfigure hook when it has
  // one, else by a reload of the same build with the new configuration.
  reload_result on_reconfigure(YAML::Node& cfg) {
    if (inst_) {
      caf::error result;
      auto err = guarded("reconfigure", [&] { result = inst_->ptr->reconfigure(cfg); });
      if (!err.empty()) {
        on_failure(err);
        return {false, err};
      }
      if (!result) {
        setup_.config = std::make_shared<const YAML::Node>(cfg);
        note_reload(true, "configuration applied live");
        return {true, "configuration applied live"};
      }
      if (result != errc::unsupported) {
        note_reload(false, describe(result));
        return {false, "plugin refused the configuration: " + describe(result)};
      }
    }
    reload_request req{setup_.lib, cfg};
    return on_reload(req);
  }

  bool on_stop() {
    destroy_instance("unloaded");
    kept_.clear();
    setup_.bus_ptr->unsubscribe_all(ep());
    setup_.bus_ptr->unserve_all(ep());
    setup_.bus_ptr->disown_all(setup_.name);
    set_state(plugin_state::stopped);
    quit();
    return true;
  }

  struct watch {
    std::function<void(caf::error)> fn;
    uint64_t bus_id;
  };

  void drop_watches() {
    for (auto& [id, w] : watches_)
      setup_.bus_ptr->cancel_watch(w.bus_id);
    watches_.clear();
  }

  slot_setup setup_;
  slot_context ctx_;
  std::unique_ptr<instance> inst_;
  // Claims of the current instance with their handlers, in claim order.
  std::vector<std::pair<std::string, request_handler>> handlers_;
  // Event topics the current instance owns (own_events), in claim order.
  std::vector<std::string> owned_;
  // Set while init/restore/start run: a failed claim then fails the load.
  bool starting_ = false;
  std::string claim_error_;
  std::unordered_map<uint64_t, watch> watches_;
  uint64_t next_watch_ = 1;
  uint64_t generation_ = 0;
  // Whether the last create_and_start took over a snapshot.
  bool restored_ = false;
  std::mutex filters_mtx_;
  std::vector<std::string> wanted_filters_;
  std::unordered_map<timer_id, timer> timers_;
  timer_id next_timer_ = 1;
  std::unordered_map<uint64_t, response_handler> pending_;
  uint64_t next_request_ = 1;
  // Requests handed to the plugin, not yet answered. Guarded: a plugin's worker thread
  // takes its promise out to answer directly (answer()).
  std::mutex promises_mtx_;
  std::unordered_map<uint64_t, caf::response_promise> promises_;
  // Requests the previous instance left open, across a reload (destroy_instance with
  // carry): the new instance adopts them from here (actor thread only).
  std::unordered_map<uint64_t, caf::response_promise> carried_;
  failure_tracker failures_;
  // Guards what post_call and submit_blocking read from other threads.
  std::mutex post_mtx_;
  uint64_t post_gen_ = 0;
  plugin_library_ptr post_lib_;
  // Processes kept for the next instance (context::keep_process).
  std::map<std::string, process, std::less<>> kept_;
  caf::behavior running_;
  caf::behavior restarting_;
  caf::behavior broken_;

  friend class slot_context;
};

// -- slot_context ---------------------------------------------------------------

const std::string& slot_context::name() const {
  return owner_->setup().name;
}

const YAML::Node& slot_context::config() const {
  return *owner_->setup().config;
}

const std::filesystem::path& slot_context::state_dir() const {
  return owner_->setup().state_dir;
}

spdlog::logger& slot_context::log() {
  return *owner_->setup().log;
}

caf::actor_system& slot_context::system() {
  return owner_->home_system();
}

caf::error slot_context::subscribe(std::string_view filter) {
  return owner_->add_filter(filter);
}

caf::error slot_context::unsubscribe(std::string_view filter) {
  return owner_->remove_filter(filter);
}

caf::expected<publish_result> slot_context::publish(std::string_view topic,
                                                    std::string payload,
                                                    std::string_view content_type) {
  Envelope msg;
  msg.set_topic(std::string{topic});
  msg.set_payload(std::move(payload));
  msg.set_content_type(std::string{content_type});
  return owner_->publish(std::move(msg));
}

caf::expected<publish_result> slot_context::publish(Envelope msg) {
  msg.clear_id();
  msg.clear_timestamp_ns();
  msg.clear_reply_to();
  return owner_->publish(std::move(msg));
}

void slot_context::request(std::string_view topic, std::string payload,
                           std::chrono::milliseconds timeout, response_handler f) {
  Envelope env;
  env.set_topic(std::string{topic});
  env.set_payload(std::move(payload));
  owner_->start_request(std::move(env), timeout, std::move(f));
}

void slot_context::call(Envelope msg, std::chrono::milliseconds timeout,
                        response_handler f) {
  msg.clear_id();
  msg.clear_reply_to();
  msg.clear_timestamp_ns();
  owner_->start_request(std::move(msg), timeout, std::move(f));
}

caf::error slot_context::serve(std::string_view filter, request_handler handler) {
  return owner_->add_claim(filter, std::move(handler));
}

caf::error slot_context::unserve(std::string_view filter) {
  return owner_->remove_claim(filter);
}

caf::error slot_context::own_events(std::string_view filter) {
  return owner_->add_owned(filter);
}

void slot_context::when_served(std::string_view topic, std::chrono::milliseconds timeout,
                               std::function<void(caf::error)> f) {
  owner_->add_watch(topic, timeout, std::move(f));
}

void slot_context::reply(const Envelope& request, std::string payload,
                         std::string_view content_type) {
  Envelope msg;
  msg.set_topic(request.reply_to());
  msg.set_source(owner_->setup().name);
  msg.set_payload(std::move(payload));
  msg.set_content_type(std::string{content_type});
  msg.set_id(owner_->setup().bus_ptr->next_id());
  owner_->answer(request, std::move(msg));
}

void slot_context::reply_error(const Envelope& request, caf::error err) {
  owner_->answer(request, std::move(err));
}

timer_id slot_context::after(std::chrono::milliseconds delay, std::function<void()> f) {
  return owner_->add_timer(delay, std::chrono::milliseconds{0}, std::move(f));
}

timer_id slot_context::every(std::chrono::milliseconds period,
                             std::function<void()> f) {
  if (period.count() <= 0)
    period = std::chrono::milliseconds{1};
  return owner_->add_timer(period, period, std::move(f));
}

void slot_context::cancel(timer_id id) {
  owner_->cancel_timer(id);
}

void slot_context::fail(caf::error reason) {
  owner_->report_failure(std::move(reason));
}

void slot_context::set_status(std::string_view key, std::string value) {
  owner_->set_detail(key, std::move(value));
}

caf::expected<grove::counter> slot_context::counter(std::string_view name,
                                                    std::string_view help) {
  return owner_->setup().status->metrics->counter(name, help);
}

caf::expected<grove::gauge> slot_context::gauge(std::string_view name,
                                                std::string_view help) {
  return owner_->setup().status->metrics->gauge(name, help);
}

// Both kinds of family are declared alike.
template <class Family>
caf::expected<Family> declare_family(metric_registry& reg, metric_kind kind,
                                     std::string_view name, std::string_view help,
                                     std::string_view label) {
  if (label.empty())
    return make_error(errc::invalid_config, "a family needs a label name");
  auto f = reg.declare(name, kind, help, label);
  if (!f)
    return f.error();
  return Family{*f};
}

caf::expected<grove::counter_family>
slot_context::counter_family(std::string_view name, std::string_view help,
                             std::string_view label) {
  return declare_family<grove::counter_family>(*owner_->setup().status->metrics,
                                               metric_kind::counter, name, help, label);
}

caf::expected<grove::gauge_family>
slot_context::gauge_family(std::string_view name, std::string_view help,
                           std::string_view label) {
  return declare_family<grove::gauge_family>(*owner_->setup().status->metrics,
                                             metric_kind::gauge, name, help, label);
}

void slot_context::post(std::function<void()> fn) {
  owner_->post_call(std::move(fn));
}

void slot_context::run_blocking_impl(std::function<void()> work,
                                     std::function<void()> then) {
  owner_->submit_blocking(std::move(work), std::move(then));
}

void slot_context::keep_process(std::string name, process p) {
  owner_->keep(std::move(name), std::move(p));
}

std::optional<process> slot_context::adopt_process(std::string_view name) {
  return owner_->adopt(name);
}

bool slot_context::adopt_request(const Envelope& request) {
  return owner_->adopt_request(request.id());
}

} // namespace

slot_actor spawn_slot(caf::actor_system& sys, slot_setup setup) {
  // Each state's protocol handlers are checked against slot_actor (make_behavior).
  return caf::actor_cast<slot_actor>(sys.spawn<in_process_slot>(std::move(setup)));
}

} // namespace grove
