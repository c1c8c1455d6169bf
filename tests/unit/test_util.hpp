#pragma once

// Helpers shared by the kernel's Boost.Test suites.

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <stdexcept>
#include <string>

#include <unistd.h>

#include <ostream>

#include <caf/expected.hpp>

#include "grove/errors.hpp"
#include "../support/test_support.hpp"

// Let Boost.Test print CAF errors and Grove error codes in failed assertions.
namespace caf {
inline std::ostream& boost_test_print_type(std::ostream& os, const error& x) {
  return os << (x ? grove::describe(x) : std::string{"<no error>"});
}
} // namespace caf

namespace grove {
inline std::ostream& boost_test_print_type(std::ostream& os, errc x) {
  return os << to_string(x);
}
} // namespace grove

namespace grove::test {

/// The error text of `x`, or "" when it holds a value (safe in eager messages).
template <class T>
std::string error_text(const caf::expected<T>& x) {
  return x ? std::string{} : grove::describe(x.error());
}

/// Where the test plugins are built.
inline std::filesystem::path test_plugin_dir() {
  return GROVE_TEST_PLUGIN_DIR;
}

} // namespace grove::test

#include <chrono>
#include <vector>

#include "grove/kernel/kernel.hpp"
#include "grove/testing/harness.hpp"

namespace grove::test {

/// A profile for an in-process kernel in `dir`: no plugins, test plugin directory.
inline image_profile make_profile(const std::filesystem::path& dir) {
  image_profile p;
  p.file = dir / "profile.yaml";
  p.write_dir = dir / "var";
  p.plugin_dir = test_plugin_dir();
  p.control_socket = dir / "var" / "run" / "control.sock";
  p.log_level = "warn";
  p.worker_threads = 2;
  return p;
}

/// Collects what a bus subscription receives (the SDK harness's inbox).
class collector {
public:
  collector(kernel& k, const std::string& filter) : box_(testing::collect(k, filter)) {
  }

  /// Waits until at least `n` messages arrived (or 20 s, scaled(), passed). True if
  /// they did.
  bool wait_for(size_t n) {
    return box_->wait_for(n, scaled(std::chrono::seconds{20}));
  }

  std::vector<Envelope> messages() const {
    return box_->messages();
  }

  size_t size() const {
    return box_->size();
  }

private:
  std::shared_ptr<testing::inbox> box_;
};

/// Asks the relay test plugin (serving `test/relay/req`, telling `out` what it does)
/// `payload` from a thread of its own, and waits until relay holds it open ("held
/// <payload>"); the future gives the answer. Throws when relay did not say so.
inline std::future<caf::expected<Envelope>> ask_held(kernel& k, collector& out,
                                                     const std::string& payload) {
  auto before = out.size();
  auto f = std::async(std::launch::async, [&k, payload] {
    return k.request("test/relay/req", payload, std::chrono::seconds{60});
  });
  if (!out.wait_for(before + 1) || out.messages()[before].payload() != "held " + payload)
    throw std::runtime_error("relay did not hold '" + payload + "' open");
  return f;
}

/// Publishes `payload` on `topic` from the test.
inline publish_result pub(kernel& k, const std::string& topic, const std::string& payload) {
  Envelope e;
  e.set_topic(topic);
  e.set_payload(payload);
  e.set_source("test");
  auto r = k.publish(std::move(e));
  if (!r)
    throw std::runtime_error("publish failed: " + describe(r.error()));
  return *r;
}

} // namespace grove::test
