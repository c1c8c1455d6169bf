#pragma once

// Runs one plugin inside a real, in-process Grove kernel for the plugin's own tests:
//
//   grove::testing::harness h{"build/libmyplugin.so", "interval_ms: 5"};
//   BOOST_REQUIRE(!h.start());
//   auto out = h.subscribe("my/topic");
//   h.publish("my/input", "hello");
//   BOOST_TEST(out->wait_for(1));

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "grove/control.pb.h"
#include "grove/envelope.pb.h"
#include "grove/kernel/bus.hpp"
#include "grove/kernel/clock.hpp"
#include "grove/plugin.hpp"

namespace grove {
class kernel;
} // namespace grove

namespace grove::testing {

/// Messages a harness subscription received; waits with a bound, never sleeps.
class inbox {
public:
  /// Waits until at least `n` messages arrived or `timeout` passed; true if they did.
  bool wait_for(size_t n, std::chrono::milliseconds timeout = std::chrono::seconds{20});

  /// A copy of everything received so far, in arrival order.
  std::vector<Envelope> messages() const;

  /// How many messages arrived so far.
  size_t size() const;

private:
  friend std::shared_ptr<inbox> collect(grove::kernel& k, const std::string& filter);
  void push(const Envelope& msg);

  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<Envelope> got_;
  // Last member: destroyed first, so no callback runs once the rest starts dying.
  std::shared_ptr<void> handle_;
};

/// Collects messages matching `filter` on any kernel (blocking overflow policy, so
/// nothing is dropped for a test's inbox). Releasing the inbox unsubscribes.
std::shared_ptr<inbox> collect(grove::kernel& k, const std::string& filter);

/// Options of a harness.
struct harness_options {
  /// Write directory; empty = a fresh temporary directory removed at the end.
  std::filesystem::path write_dir;
  /// Log level of kernel and plugin ("off" keeps test output clean).
  std::string log_level = "warn";
  /// Queue settings of the plugin under test.
  queue_settings queue;
  /// Run the plugin's timers and restart back-off on a manual clock that only
  /// harness::advance() moves, so a test of timers needs no sleeping.
  bool manual_time = false;
  /// Sources the plugin may set besides its name (the profile's may_claim).
  std::vector<std::string> may_claim;
  /// A group definition file the kernel serves (`kernel.group`); empty: none.
  std::filesystem::path group_file;
  /// The kernel's `kernel.idle_poll_attempts` (how long an idle CAF worker polls before
  /// it sleeps); empty: the kernel's default. A benchmark sets the shipped images' value.
  std::optional<uint32_t> idle_poll_attempts;
};

/// One plugin in one real kernel.
class harness {
public:
  /// Prepares a kernel for the plugin library at `library` (lib<name>.so) with
  /// configuration `config_yaml`. Nothing runs until start().
  explicit harness(std::filesystem::path library, std::string config_yaml = "{}",
                   harness_options options = {});

  ~harness();

  harness(const harness&) = delete;
  harness& operator=(const harness&) = delete;

  /// Starts the kernel and loads the plugin (validation, init, start).
  caf::error start();

  /// Publishes `payload` on `topic` with source "test".
  caf::expected<publish_result> publish(const std::string& topic, std::string payload);

  /// Collects messages matching `filter` from now on.
  std::shared_ptr<inbox> subscribe(const std::string& filter);

  /// Sends a request to whoever serves `topic` (see context::serve) and waits for the
  /// reply or the error.
  caf::expected<Envelope> request(const std::string& topic, std::string payload,
                                  std::chrono::milliseconds timeout
                                  = std::chrono::seconds{5});

  /// The plugin's status as `grovectl plugins` shows it.
  control::PluginInfo info() const;

  /// The plugin's name (from the library file name).
  const std::string& name() const noexcept {
    return name_;
  }

  /// The plugin's state directory.
  std::filesystem::path state_dir() const;

  /// With `manual_time`: moves the plugin's clock forward by `d`, firing the timers
  /// (and restarts) that fall due, in order. Returns how many fired. Each fires by a
  /// message to the plugin's slot, so wait for their effect (an inbox) as usual.
  size_t advance(std::chrono::milliseconds d);

  /// The manual clock, or null without `manual_time`.
  const std::shared_ptr<manual_clock>& clock() const noexcept {
    return clock_;
  }

  /// The kernel, for anything else.
  grove::kernel& kernel() noexcept {
    return *kernel_;
  }

private:
  std::filesystem::path library_;
  std::string name_;
  std::string config_;
  harness_options options_;
  std::filesystem::path temp_dir_;
  std::shared_ptr<manual_clock> clock_;
  std::unique_ptr<grove::kernel> kernel_;
};

} // namespace grove::testing
