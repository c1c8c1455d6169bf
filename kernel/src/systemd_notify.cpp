#include "systemd_notify.hpp"

#include <cstdlib>

#include <caf/all.hpp>

#include <dlfcn.h>

#include <systemd/sd-daemon.h>

namespace grove {

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
  // A trivial actor on the kernel's scheduler: its answer proves the workers run.
  auto echo = sys.spawn([]() -> caf::behavior {
    return {[](int32_t x) { return x; }};
  });
  feeder_ = std::thread{[this, &sys, echo] {
    caf::scoped_actor self{sys};
    std::unique_lock lock{mtx_};
    while (!stop_) {
      auto next = std::chrono::steady_clock::now() + period_;
      lock.unlock();
      bool alive = false;
      self->request(echo, period_ / 2, int32_t{1})
        .receive([&](int32_t) { alive = true; }, [](caf::error&) {});
      if (alive)
        send("WATCHDOG=1");
      lock.lock();
      cv_.wait_until(lock, next, [this] { return stop_; });
    }
    anon_send_exit(echo, caf::exit_reason::user_shutdown);
  }};
}

} // namespace grove
