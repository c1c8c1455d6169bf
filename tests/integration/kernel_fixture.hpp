#pragma once

// A kernel inside the test process that hosts plugins in process or in `isolation:
// process` children (real `groved --plugin-host`, GROVED_PATH). Shared by the suites that
// run plugins of both slot kinds (isolation_test, services_test, metrics_test). Include after
// <boost/test/unit_test.hpp>.

#include <memory>
#include <string>
#include <vector>

#include "../unit/test_util.hpp"

namespace grove::test {

struct kernel_fixture {
  temp_dir dir;
  std::unique_ptr<kernel> k;

  kernel_fixture() : kernel_fixture([](image_profile&) {}) {
  }

  /// A kernel whose profile `tweak` adjusts first (metrics_test turns the endpoint on).
  template <class Tweak>
  explicit kernel_fixture(Tweak tweak) {
    auto p = make_profile(dir.path());
    p.restart.backoff_initial = std::chrono::milliseconds{1};
    p.restart.backoff_max = std::chrono::milliseconds{20};
    p.restart.max_failures = 4;
    tweak(p);
    kernel_options opts{false, false};
    opts.plugin_host_exe = GROVED_PATH;
    k = std::make_unique<kernel>(std::move(p), opts);
    BOOST_REQUIRE(!k->start());
  }

  /// Loads test plugin `name` (blocking queue of 1000) and returns the load's error.
  caf::error try_load(const std::string& name, const std::string& config, bool isolated,
                      std::vector<std::string> may_claim = {}) {
    plugin_spec s;
    s.name = name;
    s.config = make_yaml(YAML::Load(config));
    s.file = "test.yaml";
    s.queue.overflow = overflow_policy::block;
    s.queue.capacity = 1000;
    s.isolation = isolated ? "process" : "in_process";
    s.may_claim = std::move(may_claim);
    return k->host().load(s);
  }

  /// Loads test plugin `name`; the test stops if that fails.
  void load(const std::string& name, const std::string& config, bool isolated) {
    auto err = try_load(name, config, isolated);
    BOOST_REQUIRE_MESSAGE(!err, describe(err));
  }

  control::PluginInfo info(const std::string& name) {
    auto all = k->plugins();
    for (auto& p : all.plugins())
      if (p.name() == name)
        return p;
    BOOST_FAIL("no plugin " << name);
    return {};
  }

  /// Waits (bounded) until `pred` holds, pacing itself by bus round trips, not sleeps.
  template <class Pred>
  bool wait_until(Pred pred) {
    collector tick{*k, "tick"};
    for (size_t i = 0; i < 20000; ++i) {
      if (pred())
        return true;
      pub(*k, "tick", "x");
      if (!tick.wait_for(i + 1))
        return false;
    }
    return pred();
  }

  /// Waits (bounded) until `name` has restarted `n` times and runs again.
  bool wait_restarts(const std::string& name, uint32_t n) {
    return wait_until([&] {
      auto i = info(name);
      return i.restarts() >= n && i.state() == "running";
    });
  }
};

} // namespace grove::test
