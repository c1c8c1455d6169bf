#include "isolated_slot.hpp"
#include "tsan_annotations.hpp"

#include <csignal>
#include <cstring>
#include <deque>
#include <optional>
#include <thread>
#include <unordered_map>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/event_based_actor.hpp>
#include <caf/message_handler.hpp>
#include <caf/response_promise.hpp>
#include <caf/sec.hpp>
#include <caf/skip.hpp>
#include <spdlog/spdlog.h>

#include "frame_channel.hpp"
#include "host_reply.hpp"
#include "grove/plugin_host.pb.h"
#include "grove/process.hpp"
#include "grove/rpc.hpp"

namespace grove {

namespace {

using started_atom = caf::atom_constant<caf::atom("started")>;
using handled_atom = caf::atom_constant<caf::atom("handled")>;
using down_atom = caf::atom_constant<caf::atom("down")>;
using ccall_atom = caf::atom_constant<caf::atom("ccall")>;
using creply_atom = caf::atom_constant<caf::atom("creply")>;
using swapped_atom = caf::atom_constant<caf::atom("swapped")>;
using exited_atom = caf::atom_constant<caf::atom("exited")>;

// How long a stopping plugin host may take to stop its plugin before SIGKILL.
constexpr std::chrono::milliseconds stop_grace{3000};

using cserve_atom = caf::atom_constant<caf::atom("cserve")>;
using cwatch_atom = caf::atom_constant<caf::atom("cwatch")>;
using cown_atom = caf::atom_constant<caf::atom("cown")>;

// The error a Reply frame carries: structured in msg, else the text alone.
caf::error reply_error_of(const Envelope& msg, const std::string& error) {
  if (auto err = error_of(msg))
    return err;
  return make_error(errc::plugin_failed, error);
}

class isolated_slot : public caf::event_based_actor {
public:
  isolated_slot(caf::actor_config& cfg, slot_setup setup, isolation_setup iso)
    : caf::event_based_actor(cfg), setup_(std::move(setup)), iso_(std::move(iso)) {
    library_ = setup_.lib->path;
    version_ = setup_.lib->version;
    // The plugin's code runs in the child only; the kernel needed the library just to
    // check its ABI and schema.
    setup_.lib.reset();
  }

protected:
#if GROVE_TSAN
  // As in in_process_slot: what a sender wrote into a message, which this actor copies
  // into a frame, happens before this through the slot's endpoint.
  caf::invoke_message_result consume(caf::mailbox_element& x) override {
    if (setup_.ep && *setup_.ep)
      GROVE_TSAN_ACQUIRE(setup_.ep->get());
    return caf::event_based_actor::consume(x);
  }
#endif

  caf::behavior make_behavior() override {
    set_default_handler(caf::skip);
    initial_ = slot_protocol_handlers(
      [this](init_atom) -> caf::result<std::string> {
        init_rp_ = make_response_promise();
        if (auto err = spawn_child(); !err.empty()) {
          init_rp_->deliver(err);
          init_rp_.reset();
          return caf::delegated<std::string>{};
        }
        become(starting_);
        return caf::delegated<std::string>{};
      },
      slot_skip::envelope, slot_skip::reload, slot_skip::reconf,
      [this](stop_atom) { return on_stop(); });
    // What a child asks of the kernel's table while it starts and while it runs.
    caf::message_handler child_services{
      [this](cserve_atom, uint64_t gen, bool add, std::string& filter) {
        on_serve(gen, add, filter);
      },
      [this](cwatch_atom, uint64_t gen, uint64_t id, std::string& topic, uint64_t ms) {
        on_watch(gen, id, topic, ms);
      },
      [this](cown_atom, uint64_t gen, bool add, std::string& filter) {
        on_own(gen, add, filter);
      },
      [this](served_atom, uint64_t gen, uint64_t id) { on_served(gen, id, true); },
      [this](unserved_atom, uint64_t gen, uint64_t id) { on_served(gen, id, false); },
      // In the states without a child (initial, waiting) it stays queued (skip) until
      // one starts; the level is then also the one its Start carries.
      [this](log_level_atom, std::string& level) {
        iso_.log_level = level;
        if (channel_) {
          host::ToChild out;
          out.set_log_level(level);
          channel_->send(out);
        }
      },
    };
    starting_ = slot_protocol_handlers(slot_skip::init, slot_skip::envelope, slot_skip::reload,
                                       slot_skip::reconf,
                                       [this](stop_atom) { return on_stop(); })
                  .or_else(
      [this](started_atom, uint64_t gen, bool ok, std::string& text, std::string& version) {
        if (gen != gen_)
          return;
        if (ok && !claim_error_.empty()) {
          // A claim the kernel refused fails the start like an in-process load. A
          // first load's child goes with the host's stop; any other goes now, and its
          // late messages (gen) are ignored.
          ok = false;
          text = claim_error_;
          if (!init_rp_) {
            retire_child(); // moves gen_ on
          }
        }
        if (!ok && revive_rp_) {
          revive_rp_->deliver(false, "plugin host: " + text + "; plugin stays down");
          revive_rp_.reset();
          retire_child();
          become(broken_);
          return;
        }
        if (!ok) {
          if (init_rp_) {
            init_rp_->deliver("plugin host: " + text);
            init_rp_.reset();
            set_state(plugin_state::stopped, text);
            retire_child();
            become(initial_);
            return;
          }
          on_failure("restart failed: " + text);
          return;
        }
        if (!version.empty())
          version_ = version;
        // Give up claims an earlier child held that this one did not make again.
        for (auto& f : setup_.bus_ptr->served_by(ep()))
          if (std::find(claimed_.begin(), claimed_.end(), f) == claimed_.end())
            setup_.bus_ptr->unserve(ep(), f);
        // Whatever was sent but not handled before a crash goes to the new child.
        next_seq_ = 1;
        for (auto& [seq, msg] : unacked_) {
          seq = next_seq_++;
          host::ToChild out;
          auto* d = out.mutable_deliver();
          d->set_seq(seq);
          *d->mutable_msg() = msg;
          channel_->send(out);
        }
        set_state(plugin_state::running);
        if (init_rp_) {
          init_rp_->deliver(std::string{});
          init_rp_.reset();
          setup_.log->info("{}", text);
        } else if (revive_rp_) {
          failures_.clear();
          note_reload(true, "replaced a broken plugin (started fresh)");
          revive_rp_->deliver(true, "replaced a broken plugin with " + version_
                                      + " (started fresh)");
          revive_rp_.reset();
          setup_.log->info("revived: {}", text);
        } else {
          {
            std::lock_guard guard{setup_.status->mtx};
            setup_.status->restarts += 1;
          }
          setup_.log->info("restarted: {}", text);
        }
        become(running_);
      },
      [this](down_atom, uint64_t gen) { on_down(gen); },
      [this](exited_atom, uint64_t gen, std::string& how) { on_exited(gen, how); })
                  .or_else(child_services);
    running_ = slot_protocol_handlers(
      slot_skip::init,
      [this](Envelope& msg) { forward(msg); },
      [this](reload_atom, reload_request& req) -> caf::result<bool, std::string> {
        host::ToChild out;
        pending_library_ = req.lib->path.string();
        out.mutable_swap()->set_library(pending_library_);
        return start_swap(out);
      },
      [this](reconf_atom, reconfig_request& req) -> caf::result<bool, std::string> {
        host::ToChild out;
        out.mutable_swap()->set_config_yaml(to_yaml(req.config));
        // Kept only once the child accepts it, so a restart never uses a refused one.
        pending_config_ = std::make_shared<const YAML::Node>(req.config);
        return start_swap(out);
      },
      [this](stop_atom) { return on_stop(); })
                 .or_else(
      [this](handled_atom, uint64_t gen, uint64_t n) {
        if (gen != gen_)
          return;
        while (!unacked_.empty() && unacked_.front().first <= n) {
          unacked_.pop_front();
          ep()->consumed();
        }
      },
      [this](ccall_atom, uint64_t gen, uint64_t id, Envelope& msg, uint64_t timeout_ms) {
        if (gen == gen_)
          child_request(id, msg, timeout_ms);
      },
      [this](creply_atom, uint64_t gen, uint64_t id, Envelope& msg, std::string& error) {
        auto i = calls_.find(id);
        if (gen != gen_ || i == calls_.end())
          return;
        // The child is trusted with neither the reply's source nor its size.
        msg.set_source(setup_.name);
        if (error.empty())
          if (auto err = setup_.bus_ptr->check_payload(msg)) {
            setup_.log->warn("reply refused: {}", describe(err));
            i->second.deliver(std::move(err));
            calls_.erase(i);
            return;
          }
        if (error.empty())
          i->second.deliver(std::move(msg));
        else
          i->second.deliver(reply_error_of(msg, error));
        calls_.erase(i);
      },
      [this](swapped_atom, uint64_t gen, bool ok, std::string& text, std::string& version) {
        if (gen != gen_ || !swap_rp_)
          return;
        if (ok && !version.empty())
          version_ = version;
        if (ok && !pending_library_.empty())
          library_ = pending_library_;
        if (ok && pending_config_)
          setup_.config = pending_config_;
        pending_library_.clear();
        pending_config_.reset();
        note_reload(ok, text);
        swap_rp_->deliver(ok, text);
        swap_rp_.reset();
      },
      [this](down_atom, uint64_t gen) { on_down(gen); },
      [this](exited_atom, uint64_t gen, std::string& how) { on_exited(gen, how); },
      [this](restart_atom, uint64_t) {})
                 .or_else(child_services);
    waiting_ = slot_protocol_handlers(slot_skip::init, slot_skip::envelope, slot_skip::reload,
                                      slot_skip::reconf,
                                      [this](stop_atom) { return on_stop(); })
                 .or_else(
      [this](restart_atom, uint64_t gen) {
        if (gen != gen_)
          return;
        if (auto err = spawn_child(); !err.empty()) {
          on_failure(err);
          return;
        }
        become(starting_);
      },
      [this](down_atom, uint64_t) {},
      [this](exited_atom, uint64_t, std::string&) {});
    // Waits for the child to stop its plugin and exit (SIGKILL after the grace).
    stopping_ = slot_protocol_handlers(slot_skip::init, slot_skip::envelope, slot_skip::reload,
                                       slot_skip::reconf,
                                       [](stop_atom) -> caf::result<bool> {
                                         // A second stop waits for the first.
                                         return true;
                                       })
                  .or_else(
      [this](exited_atom, uint64_t gen, std::string&) {
        if (gen == gen_)
          finish_stop();
      },
      [this](down_atom, uint64_t) {});
    broken_ = slot_protocol_handlers(
      [this](init_atom) -> caf::result<std::string> {
        return make_error(errc::plugin_broken, setup_.name + " is broken");
      },
      [this](Envelope&) {
        if (current_mailbox_element()->mid.is_request())
          make_response_promise().deliver(
            make_error(errc::plugin_broken, setup_.name + " is broken"));
        else
          ep()->discard();
      },
      [this](reload_atom, reload_request& req) -> caf::result<bool, std::string> {
        auto previous = library_;
        library_ = req.lib->path.string();
        if (auto err = spawn_child(); !err.empty()) {
          library_ = previous;
          return caf::result<bool, std::string>{false, err};
        }
        // Answered once the new child reports in (see starting_).
        revive_rp_ = make_response_promise();
        become(starting_);
        return caf::delegated<bool, std::string>{};
      },
      [this](reconf_atom, reconfig_request&) -> caf::result<bool, std::string> {
        return caf::result<bool, std::string>{
          false, setup_.name + " is broken; reload it with a build instead"};
      },
      [this](stop_atom) { return on_stop(); })
                .or_else(
                  // No child to tell; the one a reload starts takes the level (Start).
                  [this](log_level_atom, std::string& level) { iso_.log_level = level; },
                  [](caf::message&) {});
    return initial_;
  }

  void on_exit() override {
    retire_child();
    // A promise nobody delivered (an init the host gave up on) holds a strong
    // reference to this actor: kept, it would never be freed (LSan, isolation_test).
    init_rp_.reset();
    swap_rp_.reset();
    revive_rp_.reset();
    stop_rp_.reset();
    drop_watches();
    unmap_page();
    if (setup_.ep)
      setup_.ep->reset();
    setup_.ep.reset();
  }

private:
  const endpoint_ptr& ep() const {
    return *setup_.ep;
  }

  void set_state(plugin_state st, std::string error = {}) {
    std::lock_guard guard{setup_.status->mtx};
    setup_.status->state = st;
    setup_.status->version = version_;
    setup_.status->library = library_;
    if (!error.empty())
      setup_.status->last_error = std::move(error);
  }

  void note_reload(bool ok, const std::string& what) {
    std::lock_guard guard{setup_.status->mtx};
    setup_.status->last_reload = now_iso8601() + (ok ? " ok: " : " failed: ") + what;
    setup_.status->version = version_;
    setup_.status->library = library_;
  }

  caf::result<bool, std::string> start_swap(const host::ToChild& out) {
    if (swap_rp_)
      return caf::result<bool, std::string>{false,
                                            std::string{"a reload is already in progress"}};
    swap_rp_ = make_response_promise();
    channel_->send(out);
    return caf::delegated<bool, std::string>{};
  }

  // A bus message (or a request) for the plugin.
  void forward(Envelope& msg) {
    host::ToChild out;
    if (current_mailbox_element()->mid.is_request()) {
      auto id = next_call_++;
      calls_.emplace(id, make_response_promise());
      auto* c = out.mutable_call();
      c->set_id(id);
      *c->mutable_msg() = msg;
      c->set_timeout_ms(3'600'000); // the requester's own timeout governs
      // A frame the child could not read is answered now, not at the caller's timeout.
      if (auto err = channel_->send(out)) {
        calls_.at(id).deliver(std::move(err));
        calls_.erase(id);
      }
      return;
    }
    auto seq = next_seq_;
    auto* d = out.mutable_deliver();
    d->set_seq(seq);
    *d->mutable_msg() = msg;
    if (channel_->send(out)) {
      // Not sent (logged): no credit to wait for, nothing to send again after a crash.
      ep()->consumed();
      return;
    }
    ++next_seq_;
    // Credit goes back when the child reports the message handled.
    unacked_.emplace_back(seq, std::move(msg));
  }

  // A request the plugin made: route it on the kernel's bus.
  void child_request(uint64_t id, Envelope& msg, uint64_t timeout_ms) {
    auto answer = [ch = channel_, id](Envelope* env, const caf::error& error) {
      host::ToChild out;
      fill_reply(*out.mutable_reply(), id, env, error);
      // A reply the child could not read: its error instead, so the plugin's request
      // ends now rather than at its timeout.
      if (auto err = ch->send(out)) {
        out.Clear();
        fill_reply(*out.mutable_reply(), id, nullptr, err);
        (void) ch->send(out);
      }
    };
    // The child is held to the same source rule as an in-process plugin.
    if (auto err = authorize_source(msg, setup_)) {
      answer(nullptr, err);
      return;
    }
    if (auto err = setup_.bus_ptr->check_payload(msg)) {
      answer(nullptr, err);
      return;
    }
    auto target = setup_.bus_ptr->route_request(msg.topic());
    if (!target) {
      answer(nullptr, make_error(errc::no_route, "nobody serves '" + msg.topic() + "'"));
      return;
    }
    msg.set_id(setup_.bus_ptr->next_id());
    // The plugin's own request timeout runs in the child; the kernel only bounds
    // requests the child abandoned (it died, or never answers).
    auto timeout = std::chrono::milliseconds{timeout_ms > 0 ? timeout_ms : 3'600'000};
    request(target->handle(), timeout, bus::wrap(std::move(msg)))
      .then([answer](Envelope& env) { answer(&env, caf::error{}); },
            [answer](caf::error& err) {
              if (err == caf::sec::request_timeout)
                err = make_error(errc::timeout, "request timed out");
              answer(nullptr, err);
            });
  }

  // A serve claim (or its end) the child made; the kernel's table decides.
  void on_serve(uint64_t gen, bool add, const std::string& filter) {
    if (gen != gen_)
      return;
    if (!add) {
      std::erase(claimed_, filter);
      setup_.bus_ptr->unserve(ep(), filter);
      return;
    }
    if (auto err = setup_.bus_ptr->serve(ep(), filter)) {
      setup_.log->error("{}", describe(err));
      if (claim_error_.empty())
        claim_error_ = describe(err);
      return;
    }
    claimed_.push_back(filter);
  }

  // An event topic the child's plugin owns (or gives up); the kernel's table decides.
  void on_own(uint64_t gen, bool add, const std::string& filter) {
    if (gen != gen_)
      return;
    if (!add) {
      setup_.bus_ptr->disown(setup_.name, filter);
      return;
    }
    if (auto err = setup_.bus_ptr->own(setup_.name, filter)) {
      setup_.log->error("{}", describe(err));
      if (claim_error_.empty())
        claim_error_ = describe(err);
    }
  }

  // The child waits for `topic` to be served.
  void on_watch(uint64_t gen, uint64_t id, const std::string& topic, uint64_t ms) {
    if (gen != gen_)
      return;
    auto bus_id = setup_.bus_ptr->watch_served(
      topic, [self = caf::actor_cast<caf::actor>(this), gen, id] {
        caf::anon_send(self, served_atom::value, gen, id);
      });
    watches_[id] = bus_id;
    delayed_send(this, std::chrono::milliseconds{ms}, unserved_atom::value, gen, id);
  }

  void on_served(uint64_t gen, uint64_t id, bool served) {
    auto i = watches_.find(id);
    if (gen != gen_ || i == watches_.end())
      return;
    if (served && channel_) {
      host::ToChild out;
      out.set_served(id);
      channel_->send(out);
    } else if (!served) {
      setup_.bus_ptr->cancel_watch(i->second); // the child times out by itself
    }
    watches_.erase(i);
  }

  void drop_watches() {
    for (auto& [id, bus_id] : watches_)
      setup_.bus_ptr->cancel_watch(bus_id);
    watches_.clear();
  }

  // Starts `groved --plugin-host NAME --fd 3` and sends it what to load.
  std::string spawn_child() {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      return std::string{"socketpair: "} + strerror(errno);
    // A page the child counts handled messages into: unlike an ack on the socket it
    // is up to date at the instant of a crash.
    int mfd = memfd_create("grove-handled", MFD_CLOEXEC);
    if (mfd < 0 || ftruncate(mfd, 4096) != 0) {
      ::close(sv[0]);
      ::close(sv[1]);
      return std::string{"memfd: "} + strerror(errno);
    }
    auto* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (page == MAP_FAILED) {
      ::close(mfd);
      ::close(sv[0]);
      ::close(sv[1]);
      return std::string{"mmap: "} + strerror(errno);
    }
    unmap_page();
    handled_page_ = static_cast<std::atomic<uint64_t>*>(page);
    auto gen = ++gen_;
    exit_how_.reset();
    down_ = false;
    process_options opts;
    opts.argv = {iso_.exe.string(), "--plugin-host", setup_.name, "--fd", "3"};
    opts.pass_fds = {{sv[1], 3}, {mfd, 4}};
    // The child logs to groved's stderr itself, in the same format.
    opts.capture_output = false;
    opts.log_prefix = "plugin host process: ";
    opts.parent_death_signal = SIGTERM;
    opts.stop_grace = stop_grace;
    // Restarts are the slot's: it replays what the dead child had not handled.
    opts.restart = false;
    process_owner owner;
    // The callback only sends a message, so it may run on the supervisor thread.
    owner.post = [](std::function<void()> f) { f(); };
    owner.log = setup_.log;
    process_callbacks cb;
    cb.on_exit = [self = caf::actor_cast<caf::actor>(this), gen](const process_exit& ex) {
      caf::anon_send(self, exited_atom::value, gen, ex.describe());
    };
    auto started = process::start(std::move(owner), std::move(opts), std::move(cb));
    ::close(sv[1]);
    ::close(mfd);
    if (!started) {
      ::close(sv[0]);
      return "cannot start " + iso_.exe.string() + ": " + describe(started.error());
    }
    proc_ = std::move(*started);
    channel_ = std::make_shared<frame_channel>(sv[0], std::function<void()>{}, setup_.log);
    claimed_.clear();
    claim_error_.clear();
    drop_watches();
    reader_ = std::thread{[ch = channel_, gen, self = caf::actor_cast<caf::actor>(this),
                           b = setup_.bus_ptr, ep = ep(), name = setup_.name,
                           grants = setup_.may_claim, status = setup_.status,
                           log = setup_.log] {
      read_loop(*ch, gen, self, *b, ep, name, grants, *status, *log);
    }};
    host::ToChild out;
    auto* s = out.mutable_start();
    s->set_name(setup_.name);
    s->set_library(library_);
    s->set_config_yaml(to_yaml(*setup_.config));
    s->set_state_dir(setup_.state_dir.string());
    s->set_log_level(iso_.log_level);
    s->set_queue_capacity(iso_.queue_capacity);
    s->set_max_payload_bytes(setup_.bus_ptr->max_payload());
    channel_->send(out);
    return {};
  }

  // Runs on the reader thread: only thread-safe things (bus, status, messages to self).
  static void read_loop(frame_channel& ch, uint64_t gen, caf::actor self, bus& b,
                        endpoint_ptr ep, const std::string& name,
                        const std::vector<std::string>& grants, slot_status& status,
                        spdlog::logger& log) {
    for (;;) {
      host::ToKernel in;
      auto err = ch.receive(in);
      // What this thread parsed reaches requesters through CAF (kernel::request).
      GROVE_TSAN_RELEASE(ep.get());
      if (err) {
        if (err != errc::system_error)
          log.error("plugin host sent bad data: {}", describe(err));
        caf::anon_send(self, down_atom::value, gen);
        return;
      }
      switch (in.kind_case()) {
        case host::ToKernel::kStarted: {
          auto& r = in.started();
          caf::anon_send(self, started_atom::value, gen, r.ok(), r.text(), r.version());
          break;
        }
        case host::ToKernel::kSubscribe:
          if (auto err = b.subscribe(ep, in.subscribe()))
            log.error("subscribe: {}", describe(err));
          break;
        case host::ToKernel::kUnsubscribe:
          b.unsubscribe(ep, in.unsubscribe());
          break;
        case host::ToKernel::kPublish: {
          auto* msg = in.mutable_publish();
          // Same rule as in-process plugins (slot.cpp), enforced here in the parent.
          if (authorize_source(*msg, name, grants, status, log))
            break;
          msg->clear_id();
          publish_as(b, std::move(*msg), name, log);
          break;
        }
        case host::ToKernel::kCall: {
          auto* c = in.mutable_call();
          caf::anon_send(self, ccall_atom::value, gen, c->id(),
                         std::move(*c->mutable_msg()), c->timeout_ms());
          break;
        }
        case host::ToKernel::kReply: {
          auto* r = in.mutable_reply();
          caf::anon_send(self, creply_atom::value, gen, r->id(),
                         std::move(*r->mutable_msg()), r->error());
          break;
        }
        case host::ToKernel::kHandled:
          caf::anon_send(self, handled_atom::value, gen, in.handled());
          break;
        case host::ToKernel::kSwapped: {
          auto& r = in.swapped();
          caf::anon_send(self, swapped_atom::value, gen, r.ok(), r.text(), r.version());
          break;
        }
        case host::ToKernel::kServe:
          caf::anon_send(self, cserve_atom::value, gen, true, in.serve());
          break;
        case host::ToKernel::kUnserve:
          caf::anon_send(self, cserve_atom::value, gen, false, in.unserve());
          break;
        case host::ToKernel::kOwn:
          caf::anon_send(self, cown_atom::value, gen, true, in.own());
          break;
        case host::ToKernel::kDisown:
          caf::anon_send(self, cown_atom::value, gen, false, in.disown());
          break;
        case host::ToKernel::kWatch:
          caf::anon_send(self, cwatch_atom::value, gen, in.watch().id(), in.watch().topic(),
                         in.watch().timeout_ms());
          break;
        case host::ToKernel::kStatus: {
          std::lock_guard guard{status.mtx};
          // An empty value is a removed line (context::set_status).
          if (in.status().value().empty())
            status.details.erase(name + "." + in.status().key());
          else
            status.details[name + "." + in.status().key()] = in.status().value();
          break;
        }
        case host::ToKernel::kMetrics:
          // The registry lives here, in the slot: a crash of the child loses at most
          // the last ~100 ms of updates, never the totals.
          for (auto& u : in.metrics().updates())
            if (auto err = status.metrics->apply(u))
              log.warn("metric from the plugin host refused: {}", describe(err));
          break;
        default:
          break;
      }
    }
  }

  // Ends the current child now (SIGKILL), closes the channel and joins the reader;
  // messages of its generation that are still on their way are ignored.
  void retire_child() {
    if (proc_) {
      proc_.unbind();
      proc_.stop(SIGKILL, std::chrono::milliseconds{0});
      proc_ = process{};
    }
    if (channel_)
      channel_->shutdown();
    if (reader_.joinable())
      reader_.join();
    channel_.reset();
    exit_how_.reset();
    down_ = false;
    ++gen_;
  }
  void unmap_page() {
    if (handled_page_ != nullptr)
      munmap(handled_page_, 4096);
    handled_page_ = nullptr;
  }

  // The channel ended (EOF or bad data): the child is dead or broken. Handled once
  // both the channel and the child's exit report are in, so every frame the child sent
  // before dying has arrived.
  void on_down(uint64_t gen) {
    if (gen != gen_)
      return;
    down_ = true;
    if (exit_how_)
      child_gone();
    else if (proc_)
      proc_.stop(SIGKILL, std::chrono::milliseconds{0});
  }

  void on_exited(uint64_t gen, const std::string& how) {
    if (gen != gen_)
      return;
    exit_how_ = how;
    if (down_)
      child_gone();
  }

  void child_gone() {
    auto how = *exit_how_;
    retire_child();
    drop_watches();
    for (auto& [id, rp] : calls_)
      rp.deliver(make_error(errc::plugin_failed, setup_.name + " process " + how));
    calls_.clear();
    if (swap_rp_) {
      swap_rp_->deliver(false, "plugin host process " + how + " during the reload");
      swap_rp_.reset();
    }
    if (revive_rp_) {
      revive_rp_->deliver(false, "plugin host process " + how + " while starting");
      revive_rp_.reset();
      become(broken_);
      return;
    }
    if (init_rp_) {
      init_rp_->deliver("plugin host process " + how + " while starting");
      init_rp_.reset();
      set_state(plugin_state::stopped, how);
      become(initial_);
      return;
    }
    // Settle what the child handled before it died; the socket's acks may lag.
    auto handled = handled_page_ ? handled_page_->load(std::memory_order_acquire) : 0;
    while (!unacked_.empty() && unacked_.front().first <= handled) {
      unacked_.pop_front();
      ep()->consumed();
    }
    if (!unacked_.empty()) {
      // The message in hand at the crash is the likely cause: do not send it again.
      setup_.log->warn("dropping the message that was in hand at the crash (topic {})",
                       unacked_.front().second.topic());
      unacked_.pop_front();
      ep()->discard();
    }
    on_failure("plugin host process " + how);
  }

  void on_failure(const std::string& reason) {
    setup_.log->error("failed: {}", reason);
    retire_child();
    auto d = failures_.record(setup_.restart);
    log_failure_decision(*setup_.log, setup_.restart, d);
    if (d.broken) {
      retire_child();
      set_state(plugin_state::broken, reason);
      setup_.bus_ptr->unsubscribe_all(ep());
      for (size_t i = 0; i < unacked_.size(); ++i)
        ep()->discard();
      unacked_.clear();
      become(broken_);
      return;
    }
    set_state(plugin_state::restarting, reason);
    delayed_send(this, d.delay, restart_atom::value, gen_);
    become(waiting_);
  }

  // Asks the child to stop its plugin; answered once it exited (SIGKILL after the
  // grace period), without holding a CAF worker meanwhile.
  caf::result<bool> on_stop() {
    if (channel_ && proc_.running()) {
      host::ToChild out;
      out.set_stop(true);
      channel_->send(out);
      stop_rp_ = make_response_promise();
      proc_.stop(0, stop_grace);
      become(stopping_);
      return caf::delegated<bool>{};
    }
    finish_stop();
    return true;
  }

  void finish_stop() {
    retire_child();
    setup_.bus_ptr->unsubscribe_all(ep());
    setup_.bus_ptr->unserve_all(ep());
    setup_.bus_ptr->disown_all(setup_.name);
    set_state(plugin_state::stopped);
    if (stop_rp_) {
      stop_rp_->deliver(true);
      stop_rp_.reset();
    }
    quit();
  }

  slot_setup setup_;
  isolation_setup iso_;
  std::string library_;
  std::string version_;
  std::string pending_library_;
  std::shared_ptr<const YAML::Node> pending_config_;
  process proc_;
  // How the current child ended, once its exit was reported.
  std::optional<std::string> exit_how_;
  // The current child's channel ended.
  bool down_ = false;
  std::atomic<uint64_t>* handled_page_ = nullptr;
  std::shared_ptr<frame_channel> channel_;
  std::thread reader_;
  uint64_t gen_ = 0;
  uint64_t next_seq_ = 1;
  uint64_t next_call_ = 1;
  std::deque<std::pair<uint64_t, Envelope>> unacked_;
  std::unordered_map<uint64_t, caf::response_promise> calls_;
  // Claims the current child made, and the first one the kernel refused.
  std::vector<std::string> claimed_;
  std::string claim_error_;
  // The child's when_served waits: its id -> the bus's.
  std::unordered_map<uint64_t, uint64_t> watches_;
  std::optional<caf::response_promise> init_rp_;
  std::optional<caf::response_promise> swap_rp_;
  std::optional<caf::response_promise> revive_rp_;
  std::optional<caf::response_promise> stop_rp_;
  failure_tracker failures_;
  caf::behavior initial_;
  caf::behavior starting_;
  caf::behavior running_;
  caf::behavior waiting_;
  caf::behavior stopping_;
  caf::behavior broken_;
};

} // namespace

slot_actor spawn_isolated_slot(caf::actor_system& sys, slot_setup setup,
                               isolation_setup iso) {
  return caf::actor_cast<slot_actor>(sys.spawn<isolated_slot>(std::move(setup), std::move(iso)));
}

} // namespace grove
