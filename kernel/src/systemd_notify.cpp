#include "systemd_notify.hpp"

#include <atomic>
#include <cstdlib>
#include <memory>

#include <caf/actor_system.hpp>
#include <caf/resumable.hpp>
#include <caf/scheduler/abstract_coordinator.hpp>

#include <dlfcn.h>

#include <systemd/sd-daemon.h>

namespace grove {

namespace {

// A job for the kernel's CAF workers that records its number when a worker runs it. A
// bare resumable, not an actor: no CAF message templates in groved for one counter.
class ping_job final : public caf::resumable {
public:
  ping_job(std::shared_ptr<std::atomic<uint64_t>> handled, uint64_t seq)
    : handled_(std::move(handled)), seq_(seq) {
    // nop
  }

  subtype_t subtype() const override {
    return function_object;
  }

  resume_result resume(caf::execution_unit*, size_t) override {
    handled_->store(seq_, std::memory_order_release);
    return done; // the worker releases it
  }

  void intrusive_ptr_add_ref_impl() override {
    // nop: one owner, the scheduler
  }

  void intrusive_ptr_release_impl() override {
    delete this;
  }

private:
  std::shared_ptr<std::atomic<uint64_t>> handled_;
  uint64_t seq_;
};

} // namespace

systemd_notifier::systemd_notifier() {
  auto sock = std::getenv("NOTIFY_SOCKET");
  if (sock == nullptr || *sock == '\0')
    return;
  // libsystemd (and what it links: libgcrypt, liblz4, libzstd, ...) is mapped only into a
  // groved that runs under systemd; everywhere else it costs nothing.
  lib_ = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL);
  if (lib_ == nullptr) {
    error_ = std::string{"NOTIFY_SOCKET is set but libsystemd.so.0 cannot be loaded: "}
             + dlerror();
    return;
  }
  notify_ = reinterpret_cast<decltype(notify_)>(dlsym(lib_, "sd_notify"));
  auto watchdog_enabled
    = reinterpret_cast<decltype(&sd_watchdog_enabled)>(dlsym(lib_, "sd_watchdog_enabled"));
  if (notify_ == nullptr || watchdog_enabled == nullptr) {
    error_ = "libsystemd.so.0 lacks sd_notify or sd_watchdog_enabled";
    return;
  }
  enabled_ = true;
  uint64_t usec = 0;
  // > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID (if any) is this process.
  if (watchdog_enabled(0, &usec) > 0 && usec > 0)
    period_ = std::chrono::microseconds{usec / 2};
}

systemd_notifier::~systemd_notifier() {
  {
    std::lock_guard guard{mtx_};
    stop_ = true;
  }
  cv_.notify_all();
  if (feeder_.joinable())
    feeder_.join();
  // lib_ stays loaded: unloading buys nothing at exit.
}

void systemd_notifier::send(const std::string& state) {
  if (enabled_)
    notify_(0, state.c_str());
}

void systemd_notifier::ready(const std::string& status) {
  send("READY=1\nSTATUS=" + status);
}

void systemd_notifier::stopping() {
  send("STOPPING=1");
  {
    std::lock_guard guard{mtx_};
    stop_ = true;
  }
  cv_.notify_all();
  if (feeder_.joinable())
    feeder_.join();
}

void systemd_notifier::start_watchdog(caf::actor_system& sys) {
  if (!enabled_ || period_.count() == 0 || feeder_.joinable())
    return;
  auto handled = std::make_shared<std::atomic<uint64_t>>(0);
  feeder_ = std::thread{[this, &sys, handled] {
    uint64_t sent = 0;
    std::unique_lock lock{mtx_};
    while (!stop_) {
      auto next = std::chrono::steady_clock::now() + period_;
      // Fed only when the CAF workers ran the ping of one period ago.
      if (handled->load(std::memory_order_acquire) == sent) {
        lock.unlock();
        send("WATCHDOG=1");
        sys.scheduler().enqueue(new ping_job{handled, ++sent});
        lock.lock();
      }
      cv_.wait_until(lock, next, [this] { return stop_; });
    }
  }};
}

} // namespace grove
