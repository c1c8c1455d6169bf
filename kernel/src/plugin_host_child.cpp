#include "plugin_host_child.hpp"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <map>
#include <unordered_map>

#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <spdlog/spdlog.h>

#include "frame_channel.hpp"
#include "host_reply.hpp"
#include "grove/kernel/kernel.hpp"
#include "grove/plugin_host.pb.h"
#include "grove/rpc.hpp"
#include "slot.hpp"
#include "tsan_annotations.hpp"

namespace grove {

namespace {

using call_atom = caf::atom_constant<caf::atom("call")>;

/// Carries requests across the socket: the plugin's requests out (as Calls answered
/// by Replies), and the kernel's Calls in (as requests to the plugin's slot).
class bridge_actor : public caf::event_based_actor {
public:
  bridge_actor(caf::actor_config& cfg, frame_channel* ch, std::atomic<endpoint*>* ep)
    : caf::event_based_actor(cfg), ch_(ch), ep_(ep) {
  }

protected:
  caf::behavior make_behavior() override {
    return {
      // A request from the plugin: ask the kernel.
      [this](Envelope& msg) {
        auto id = next_++;
        open_.emplace(id, make_response_promise());
        host::ToKernel out;
        auto* call = out.mutable_call();
        call->set_id(id);
        *call->mutable_msg() = std::move(msg);
        // A frame the kernel could not read: the plugin hears now, not at its timeout.
        if (auto err = ch_->send(out)) {
          open_.at(id).deliver(std::move(err));
          open_.erase(id);
        }
      },
      // The kernel's answer to one of those.
      [this](reply_atom, uint64_t id, Envelope& msg, std::string& error) {
        auto i = open_.find(id);
        if (i == open_.end())
          return;
        if (error.empty()) {
          i->second.deliver(std::move(msg));
        } else if (auto err = error_of(msg)) {
          i->second.deliver(std::move(err));
        } else {
          i->second.deliver(make_error(errc::plugin_failed, error));
        }
        open_.erase(i);
      },
      // A request from the kernel for the plugin.
      [this](call_atom, uint64_t id, Envelope& msg, uint64_t timeout_ms, caf::actor& slot) {
        auto reply = [this, id](Envelope* env, const caf::error& error) {
          host::ToKernel out;
          fill_reply(*out.mutable_reply(), id, env, error);
          // A reply the kernel could not read: its error instead, so the caller gets
          // too_large now rather than its timeout.
          if (auto err = ch_->send(out)) {
            out.Clear();
            fill_reply(*out.mutable_reply(), id, nullptr, err);
            (void) ch_->send(out);
          }
        };
        request(slot, std::chrono::milliseconds{timeout_ms}, bus::wrap(std::move(msg)))
          .then(
            [this, reply](Envelope& env) {
#if GROVE_TSAN
              // The plugin's slot wrote the reply and released its endpoint
              // (in_process_slot::answer_here); the frame copies all of it.
              if (auto* e = ep_->load())
                GROVE_TSAN_ACQUIRE(e);
#endif
              reply(&env, caf::error{});
            },
                [reply](caf::error& err) { reply(nullptr, err); });
      },
    };
  }

private:
  frame_channel* ch_;
  // The plugin's endpoint once it is loaded: the slot's happens-before edge under TSan.
  std::atomic<endpoint*>* ep_;
  uint64_t next_ = 1;
  std::unordered_map<uint64_t, caf::response_promise> open_;
};

/// The child's bus uplink: everything the plugin does goes to the kernel.
class uplink final : public bus_uplink {
public:
  uplink(frame_channel& ch, caf::actor bridge)
    : ch_(ch), ep_(std::make_shared<endpoint>("kernel", std::move(bridge), queue_settings{})) {
  }

  void forward(Envelope&& msg) override {
    host::ToKernel out;
    *out.mutable_publish() = std::move(msg);
    ch_.send(out);
  }

  void subscription_changed(bool added, const std::string& filter) override {
    host::ToKernel out;
    if (added)
      out.set_subscribe(filter);
    else
      out.set_unsubscribe(filter);
    ch_.send(out);
  }

  endpoint_ptr request_endpoint() override {
    return ep_;
  }

  void serve_changed(bool added, const std::string& filter) override {
    host::ToKernel out;
    if (added)
      out.set_serve(filter);
    else
      out.set_unserve(filter);
    ch_.send(out);
  }

  void own_changed(bool added, const std::string& filter) override {
    host::ToKernel out;
    if (added)
      out.set_own(filter);
    else
      out.set_disown(filter);
    ch_.send(out);
  }

  void watch_served(uint64_t id, const std::string& topic,
                    std::chrono::milliseconds timeout) override {
    host::ToKernel out;
    auto* w = out.mutable_watch();
    w->set_id(id);
    w->set_topic(topic);
    w->set_timeout_ms(static_cast<uint64_t>(timeout.count()));
    ch_.send(out);
  }

private:
  frame_channel& ch_;
  endpoint_ptr ep_;
};

} // namespace

int run_plugin_host(const std::string& name, int fd) {
  // Go when groved goes, whatever the reason.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  std::signal(SIGPIPE, SIG_IGN);
  // Acknowledge handled deliveries from the writer thread, about every millisecond.
  std::atomic<uint64_t> last_ack{0};
  std::atomic<endpoint*> ep_raw{nullptr};
  frame_channel* chp = nullptr;
  // Status lines (context::set_status) go up every ~100 ticks, changed ones only.
  std::atomic<kernel*> kp{nullptr};
  std::map<std::string, std::string> sent_status;
  metric_uplink sent_metrics;
  int ticks = 0;
  frame_channel ch{fd, [&] {
                     auto* e = ep_raw.load();
                     if (e == nullptr)
                       return;
                     auto handled = e->delivered() - e->depth();
                     if (handled != last_ack.exchange(handled)) {
                       host::ToKernel out;
                       out.set_handled(handled);
                       chp->send(out);
                     }
                     if (++ticks % 100 != 0 || kp.load() == nullptr)
                       return;
                     if (auto reg = kp.load()->host().metrics_of(name)) {
                       host::ToKernel out;
                       if (sent_metrics.diff(*reg, *out.mutable_metrics()))
                         chp->send(out);
                     }
                     auto prefix = name + ".";
                     auto details = kp.load()->host().details();
                     for (auto& [key, value] : details) {
                       auto& last = sent_status[key];
                       if (last == value || key.rfind(prefix, 0) != 0)
                         continue;
                       last = value;
                       host::ToKernel out;
                       out.mutable_status()->set_key(key.substr(prefix.size()));
                       out.mutable_status()->set_value(value);
                       chp->send(out);
                     }
                     // Lines the plugin removed: an empty value removes them above too.
                     for (auto it = sent_status.begin(); it != sent_status.end();) {
                       if (details.count(it->first) != 0) {
                         ++it;
                         continue;
                       }
                       if (it->first.rfind(prefix, 0) == 0 && !it->second.empty()) {
                         host::ToKernel out;
                         out.mutable_status()->set_key(it->first.substr(prefix.size()));
                         chp->send(out);
                       }
                       it = sent_status.erase(it);
                     }
                   }};
  chp = &ch;
  // Declared after the channel: the kernel (and every actor using the channel) must be
  // gone before the channel is.
  std::unique_ptr<kernel> k;
  endpoint_ptr ep;
  host::ToChild first;
  if (auto err = ch.receive(first); err || !first.has_start()) {
    fprintf(stderr, "groved --plugin-host %s: no start frame: %s\n", name.c_str(),
            describe(err).c_str());
    return 2;
  }
  auto& start = first.start();
  std::filesystem::path state_dir = start.state_dir();
  image_profile p;
  p.file = "<plugin-host>";
  p.write_dir = state_dir.parent_path().parent_path();
  p.plugin_dir = std::filesystem::path{start.library()}.parent_path();
  p.control_socket = p.write_dir / "run" / (name + ".sock");
  // The child's own kernel says little: the plugin's logger carries what matters.
  p.log_level = "warn";
  p.worker_threads = 2;
  // The same limit as the kernel's bus, so the plugin hears of an oversized publish or
  // reply at once instead of only in groved's log.
  if (start.max_payload_bytes() > 0)
    p.max_payload_bytes = start.max_payload_bytes();
  kernel_options opts;
  opts.control_socket = false;
  opts.kernel_services = false;
  opts.logger_name = "host:" + name;
  k = std::make_unique<kernel>(std::move(p), opts);
  auto bridge = k->system().spawn<bridge_actor>(&ch, &ep_raw);
  uplink up{ch, bridge};
  k->bus().set_uplink(&up);
  auto result = [&](bool ok, const std::string& text) {
    host::ToKernel out;
    auto* r = out.mutable_started();
    r->set_ok(ok);
    r->set_text(text);
    auto all = k->plugins();
    if (all.plugins_size() > 0)
      r->set_version(all.plugins(0).version());
    ch.send(out);
  };
  if (auto err = k->start()) {
    result(false, describe(err));
    return 1;
  }
  plugin_spec spec;
  spec.name = name;
  spec.file = "<plugin-host>";
  spec.config = make_yaml(YAML::Load(start.config_yaml()));
  spec.log_level = start.log_level();
  spec.queue.capacity = start.queue_capacity() > 0 ? start.queue_capacity() : 10000;
  spec.queue.overflow = overflow_policy::block;
  spec.queue.block_timeout = std::chrono::hours{24};
  // Any source passes here: the kernel enforces may_claim in the parent, the one
  // place a child's claims are counted (and a child cannot be trusted to check).
  spec.may_claim = {"*", std::string{kernel_source}};
  if (auto err = k->host().load(spec)) {
    result(false, describe(err));
    return 1;
  }
  ep = k->host().endpoint_of(name);
  kp = k.get();
  // fd 4: a page shared with groved; the handled count there survives our crash.
  if (auto* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, 4, 0);
      page != MAP_FAILED)
    ep->mirror_handled(static_cast<std::atomic<uint64_t>*>(page));
  ::close(4);
  ep_raw = ep.get();
  result(true, "running in process " + std::to_string(getpid()));
  auto slot = caf::actor_cast<caf::actor>(k->host().slot_of(name));
  int code = 0;
  for (;;) {
    host::ToChild in;
    if (auto err = ch.receive(in)) {
      if (err != errc::system_error) // EOF is the parent going away
        k->log()->error("plugin host {}: {}", name, describe(err));
      code = 1;
      break;
    }
    // What this thread parsed reaches the plugin's slot through CAF (its consume acquires).
    GROVE_TSAN_RELEASE(ep.get());
    if (in.has_deliver()) {
      auto* msg = in.mutable_deliver()->mutable_msg();
      ep->offer(std::move(*msg));
    } else if (in.has_call()) {
      auto* call = in.mutable_call();
      caf::anon_send(bridge, call_atom::value, call->id(), std::move(*call->mutable_msg()),
                     call->timeout_ms(), slot);
    } else if (in.has_reply()) {
      auto* r = in.mutable_reply();
      caf::anon_send(bridge, reply_atom::value, r->id(), std::move(*r->mutable_msg()),
                     r->error());
    } else if (in.has_swap()) {
      auto& swap = in.swap();
      caf::expected<std::string> r{std::string{}};
      if (!swap.config_yaml().empty()) {
        auto s = *k->host().spec_of(name);
        s.config = make_yaml(YAML::Load(swap.config_yaml()));
        r = k->host().reconfigure(s);
      } else {
        r = k->host().reload(name, swap.library());
      }
      host::ToKernel out;
      auto* res = out.mutable_swapped();
      res->set_ok(static_cast<bool>(r));
      res->set_text(r ? *r : describe(r.error()));
      auto all = k->plugins();
      if (all.plugins_size() > 0)
        res->set_version(all.plugins(0).version());
      ch.send(out);
    } else if (in.kind_case() == host::ToChild::kServed) {
      k->bus().fire_watch(in.served());
    } else if (in.kind_case() == host::ToChild::kLogLevel) {
      // The kernel checked it (a group's logger); the child's host has this one plugin.
      k->host().set_log_level(in.log_level());
    } else if (in.has_stop()) {
      break;
    }
  }
  ep_raw = nullptr;
  kp = nullptr;
  k->stop();
  caf::anon_send_exit(bridge, caf::exit_reason::user_shutdown);
  k->bus().set_uplink(nullptr);
  return code;
}

} // namespace grove
