#define BOOST_TEST_MODULE reload_test
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "grove/errors.hpp"
#include "grove/kernel/control_client.hpp"
#include "grove/kernel/kernel.hpp"
#include "test_util.hpp"

// Hot reload: a plugin swapped under load loses nothing and keeps its state; a bad
// build leaves the old one serving.

using namespace grove;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::filesystem::path build(const std::string& target) {
  return test::test_plugin_dir() / ("lib" + target + ".so");
}

// "<variant>|<payload>|<count>"
struct stamped {
  std::string variant;
  std::string payload;
  uint64_t count = 0;
};

stamped parse(const std::string& s) {
  auto a = s.find('|');
  auto b = s.rfind('|');
  return {s.substr(0, a), s.substr(a + 1, b - a - 1), std::stoull(s.substr(b + 1))};
}

// Live mappings of reload copies of `name` in this process.
size_t mapped_copies(const std::string& name) {
  std::ifstream maps{"/proc/self/maps"};
  std::set<std::string> files;
  std::string line;
  while (std::getline(maps, line))
    if (auto pos = line.find("/run/lib/" + name + "-"); pos != std::string::npos)
      files.insert(line.substr(pos));
  return files.size();
}

// The kernel block matching make_profile(), so only plugin changes show up.
const std::string kernel_yaml = "kernel: {log_level: warn, worker_threads: 2}\n";

struct fixture {
  test::temp_dir dir;
  std::unique_ptr<kernel> k;

  fixture() {
    auto p = test::make_profile(dir.path());
    p.file = dir.write("image.yaml", kernel_yaml + "plugins:\n  - name: relay\n    config: {stamp: true}\n");
    k = std::make_unique<kernel>(std::move(p), kernel_options{false, false});
    BOOST_REQUIRE(!k->start());
  }

  void load_relay(const std::string& config = "{stamp: true}") {
    plugin_spec s;
    s.name = "relay";
    s.config = make_yaml(YAML::Load(config));
    s.file = (dir.path() / "image.yaml").string();
    s.queue.overflow = overflow_policy::block;
    s.queue.capacity = 1000;
    BOOST_REQUIRE(!k->host().load(s));
  }

  control::PluginInfo info() {
    auto all = k->plugins();
    BOOST_REQUIRE_EQUAL(all.plugins_size(), 1);
    return all.plugins(0);
  }

  // Sends one message through the relay and returns what came out.
  stamped roundtrip(test::collector& out, const std::string& payload) {
    auto before = out.size();
    test::pub(*k, "test/echo/in", payload);
    BOOST_REQUIRE(out.wait_for(before + 1));
    return parse(out.messages()[before].payload());
  }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(reload, fixture)

BOOST_AUTO_TEST_CASE(twenty_reloads_under_full_speed_stream_lose_nothing) {
  load_relay();
  test::collector out{*k, "test/echo/out"};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> dropped{0};
  std::thread publisher{[&] {
    // At least 50,000 messages, and on until every reload is done.
    for (uint64_t i = 0; i < 50000 || !stop.load(); ++i) {
      auto r = test::pub(*k, "test/echo/in", std::to_string(i));
      dropped += r.dropped;
      sent = i + 1;
    }
  }};
  std::vector<std::string> results;
  for (int i = 0; i < 20; ++i) {
    // Wait for traffic between reloads so each one swaps under load.
    auto mark = sent.load();
    while (sent.load() < mark + 500)
      std::this_thread::yield();
    auto r = k->reload("relay", build(i % 2 == 0 ? "relay_v2" : "relay").string());
    BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
    results.push_back(*r);
  }
  // Traffic after the last swap too, so the last build serves (the count below needs it):
  // under load the publisher could pass its 50,000 before the last reload and stop.
  auto mark = sent.load();
  while (sent.load() < mark + 500)
    std::this_thread::yield();
  stop = true;
  publisher.join();
  BOOST_TEST(dropped.load() == 0u);
  BOOST_REQUIRE(out.wait_for(sent.load()));
  auto msgs = out.messages();
  BOOST_REQUIRE_EQUAL(msgs.size(), sent.load());
  size_t switches = 0;
  std::string last_variant;
  for (size_t i = 0; i < msgs.size(); ++i) {
    auto m = parse(msgs[i].payload());
    // Every number exactly once, in order...
    BOOST_REQUIRE_EQUAL(m.payload, std::to_string(i));
    // ...and the counter carried over every swap.
    BOOST_REQUIRE_EQUAL(m.count, i + 1);
    if (m.variant != last_variant) {
      ++switches;
      last_variant = m.variant;
    }
  }
  // Both builds served, alternating: 1 initial run + 20 swaps.
  BOOST_TEST(switches == 21u);
  for (auto& r : results)
    BOOST_TEST(contains(r, "state carried over"), r);
  auto i = info();
  BOOST_TEST(i.version() == "1.0.0");
  BOOST_TEST(i.state() == "running");
  BOOST_TEST(contains(i.last_reload(), "ok"), i.last_reload());
  // Old builds were unloaded: only the current copy is still mapped.
  BOOST_TEST(mapped_copies("relay") == 1u);
}

// Requests a plugin left open at a hot reload (context::adopt_request): the instance
// that restores the snapshot adopts those it carried and answers them itself; the
// kernel answers the others as it did before requests could be carried ("stopped:
// reloading"), and so it does at a reload without a snapshot and at an unload.
BOOST_AUTO_TEST_CASE(open_requests_cross_a_reload_when_the_next_instance_adopts_them) {
  load_relay("{stamp: true, serve: 'test/relay/req'}");
  test::collector out{*k, "test/echo/out"};
  auto ask = [&](const std::string& payload) { return test::ask_held(*k, out, payload); };
  auto stopped = [](caf::expected<Envelope> r) {
    BOOST_REQUIRE(!r);
    BOOST_TEST(r.error() == errc::plugin_failed);
    BOOST_TEST(contains(describe(r.error()), "relay stopped: reloading"),
               describe(r.error()));
  };
  auto a = ask("hold-a");
  auto b = ask("hold-b");
  auto d = ask("hold-drop");
  auto r = k->reload("relay", build("relay_v2").string());
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  // Adopted: the new build's own answers, once each (a second adoption found none).
  auto ra = a.get();
  BOOST_REQUIRE_MESSAGE(ra, test::error_text(ra));
  BOOST_TEST(ra->payload() == "v2|adopted hold-a");
  auto rb = b.get();
  BOOST_REQUIRE_MESSAGE(rb, test::error_text(rb));
  BOOST_TEST(rb->payload() == "v2|adopted hold-b");
  // Not adopted: the old answer.
  stopped(d.get());
  // A build whose restore fails: the old build, put back with its snapshot, adopts.
  auto c = ask("hold-c");
  r = k->reload("relay", build("relay_no_restore").string());
  BOOST_REQUIRE(!r);
  auto rc = c.get();
  BOOST_REQUIRE_MESSAGE(rc, test::error_text(rc));
  BOOST_TEST(rc->payload() == "v2|adopted hold-c");
  // No snapshot (a build without hooks is what is running): answered as before.
  r = k->reload("relay", build("relay_no_hooks").string());
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  auto e = ask("hold-e");
  r = k->reload("relay", build("relay").string());
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  stopped(e.get());
  // An unload answers whatever is open.
  auto f = ask("hold-f");
  BOOST_REQUIRE(!k->host().unload("relay"));
  auto rf = f.get();
  BOOST_REQUIRE(!rf);
  BOOST_TEST(rf.error() == errc::plugin_failed);
  BOOST_TEST(contains(describe(rf.error()), "relay stopped: unloaded"), describe(rf.error()));
}

BOOST_AUTO_TEST_CASE(bad_builds_leave_the_old_one_serving_with_its_state) {
  load_relay();
  test::collector out{*k, "test/echo/out"};
  BOOST_TEST(roundtrip(out, "a").count == 1u);
  auto fails = [&](const std::string& target, errc code, const std::string& text) {
    auto r = k->reload("relay", build(target).string());
    BOOST_REQUIRE(!r);
    BOOST_TEST(r.error() == code);
    BOOST_TEST(contains(describe(r.error()), text), describe(r.error()));
  };
  fails("relay_bad_abi", errc::abi_mismatch,
        "plugin ABI " + std::to_string(GROVE_PLUGIN_ABI_VERSION + 1));
  fails("does_not_exist", errc::load_failed, "no such file");
  fails("wrong_abi", errc::abi_mismatch, "plugin ABI"); // another plugin's build
  fails("echo", errc::load_failed, "calls itself 'echo', expected 'relay'");
  fails("relay_throws", errc::init_failed, "init exploded on purpose");
  fails("relay_no_restore", errc::init_failed, "restore refused on purpose");
  // Still the first build, still counting from where it was.
  auto m = roundtrip(out, "b");
  BOOST_TEST(m.variant == "v1");
  BOOST_TEST(m.count == 2u);
  auto i = info();
  BOOST_TEST(i.state() == "running");
  BOOST_TEST(i.restarts() == 0u);
  BOOST_TEST(contains(i.last_reload(), "failed"), i.last_reload());
}

BOOST_AUTO_TEST_CASE(plugin_without_snapshot_starts_fresh_and_says_so) {
  load_relay();
  test::collector out{*k, "test/echo/out"};
  roundtrip(out, "a");
  auto r = k->reload("relay", build("relay_no_hooks").string());
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  BOOST_TEST(contains(*r, "started fresh"), *r);
  BOOST_TEST(roundtrip(out, "b").count == 1u);
  // From a build without hooks the state is gone, but a reload still works.
  r = k->reload("relay", build("relay_v2").string());
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  BOOST_TEST(contains(*r, "started fresh"), *r);
  BOOST_TEST(info().version() == "2.0.0");
}

BOOST_AUTO_TEST_CASE(reload_of_same_path_rereads_the_file) {
  load_relay();
  test::collector out{*k, "test/echo/out"};
  BOOST_TEST(roundtrip(out, "a").variant == "v1");
  // Replace the file behind the running plugin, as a rebuild would, and reload.
  auto live = dir.path() / "plugins" / "librelay.so";
  std::filesystem::create_directories(live.parent_path());
  std::filesystem::copy_file(build("relay"), live);
  BOOST_REQUIRE(k->reload("relay", live.string()));
  BOOST_TEST(roundtrip(out, "b").variant == "v1");
  std::filesystem::copy_file(build("relay_v2"), live,
                             std::filesystem::copy_options::overwrite_existing);
  BOOST_REQUIRE(k->reload("relay", ""));
  auto m = roundtrip(out, "c");
  BOOST_TEST(m.variant == "v2");
  BOOST_TEST(m.count == 3u);
}

BOOST_AUTO_TEST_CASE(profile_change_reconfigures_live_or_by_reload) {
  load_relay();
  test::collector out{*k, "test/echo/out"};
  BOOST_TEST(roundtrip(out, "a").payload == "a");
  // The prefix can change live (reconfigure hook).
  dir.write("image.yaml", kernel_yaml + "plugins:\n  - name: relay\n    config: {stamp: true, prefix: 'x-'}\n");
  auto actions = k->apply_profile_change();
  BOOST_REQUIRE(actions);
  BOOST_REQUIRE_EQUAL(actions->size(), 1u);
  BOOST_TEST(contains((*actions)[0], "applied live"), (*actions)[0]);
  auto m = roundtrip(out, "b");
  BOOST_TEST(m.payload == "x-b");
  BOOST_TEST(m.count == 2u);
  // A change the hook refuses goes through a reload of the same build, state kept.
  dir.write("image.yaml", kernel_yaml + "plugins:\n  - name: relay\n    config: {stamp: true, prefix: 'y-',"
                          " listen: other/in}\n");
  actions = k->apply_profile_change();
  BOOST_REQUIRE(actions);
  BOOST_TEST(contains((*actions)[0], "state carried over"), (*actions)[0]);
  auto before = out.size();
  test::pub(*k, "other/in", "c");
  BOOST_REQUIRE(out.wait_for(before + 1));
  m = parse(out.messages()[before].payload());
  BOOST_TEST(m.payload == "y-c");
  BOOST_TEST(m.count == 3u);
  // The old subscription is gone with the old configuration.
  BOOST_TEST(test::pub(*k, "test/echo/in", "d").delivered == 0u);
}

BOOST_AUTO_TEST_CASE(load_and_status_race_the_profile_watcher) {
  // Its own kernel, watching its profile: the watcher replaces the profile while the
  // control socket's calls (load, status) read it. Under ThreadSanitizer (build type
  // tsan) an unguarded profile is a reported race; elsewhere it may crash.
  test::temp_dir d;
  auto file = d.write("image.yaml", kernel_yaml + "plugins: []\n");
  auto p = test::make_profile(d.path());
  p.file = file;
  kernel_options opts{false, false};
  opts.watch_profile = true;
  opts.watch_interval = std::chrono::milliseconds{1};
  kernel w{std::move(p), opts};
  BOOST_REQUIRE(!w.start());
  std::atomic<bool> done{false};
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> wrong{0};
  std::thread reader{[&] {
    while (!done.load()) {
      if (w.load("nosuch") != errc::load_failed)
        ++wrong;
      if (w.status().config_file() != file.string())
        ++wrong;
      if (w.profile().plugins.size() > 1)
        ++wrong;
      ++calls;
    }
  }};
  auto listed = [&] {
    auto names = w.host().names();
    return std::find(names.begin(), names.end(), "echo_b") != names.end();
  };
  bool applied = true;
  for (int i = 0; i < 10 && applied; ++i) {
    // Written aside and renamed in, as deploy tools do, so the watcher never reads
    // half a file.
    auto with = i % 2 == 0;
    auto next = d.write("next.yaml", kernel_yaml
                                       + (with ? "plugins:\n  - name: echo_b\n    config: "
                                                 "{prefix: '" + std::to_string(i) + "'}\n"
                                               : std::string{"plugins: []\n"}));
    std::filesystem::rename(next, file);
    applied = test::wait_until([&] { return listed() == with; });
  }
  done = true;
  reader.join();
  BOOST_TEST(applied);
  BOOST_TEST(calls.load() > 0u);
  BOOST_TEST(wrong.load() == 0u);
}

BOOST_AUTO_TEST_CASE(invalid_profile_change_changes_nothing) {
  load_relay();
  test::collector out{*k, "test/echo/out"};
  roundtrip(out, "a");
  dir.write("image.yaml", kernel_yaml + "plugins:\n  - name: relay\n    config: {stamp: yes-please}\n");
  auto actions = k->apply_profile_change();
  BOOST_REQUIRE(actions);
  BOOST_REQUIRE_EQUAL(actions->size(), 1u);
  BOOST_TEST(contains((*actions)[0], "refused, old configuration kept"), (*actions)[0]);
  BOOST_TEST(contains((*actions)[0], "image.yaml:4:"), (*actions)[0]);
  dir.write("image.yaml", kernel_yaml + "plugins:\n  - name: relay\n    bogus: 1\n");
  auto bad = k->apply_profile_change();
  BOOST_REQUIRE(!bad);
  BOOST_TEST(contains(describe(bad.error()), "plugins[0].bogus: unknown key"));
  auto m = roundtrip(out, "b");
  BOOST_TEST(m.payload == "b");
  BOOST_TEST(m.count == 2u);
}

BOOST_AUTO_TEST_CASE(reload_revives_a_broken_plugin) {
  load_relay("{stamp: true, crash_on: boom}");
  test::collector out{*k, "test/echo/out"};
  for (int i = 0; i < 5; ++i)
    test::pub(*k, "test/echo/in", "boom");
  test::collector probe{*k, "test/echo/in"};
  for (int tries = 0; tries < 2000 && info().state() != "broken"; ++tries) {
    test::pub(*k, "test/echo/in", "probe");
    BOOST_REQUIRE(probe.wait_for(static_cast<size_t>(tries) + 1));
  }
  BOOST_REQUIRE_EQUAL(info().state(), "broken");
  auto r = k->reload("relay", build("relay_v2").string());
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  BOOST_TEST(info().state() == "running");
  BOOST_TEST(roundtrip(out, "ok").variant == "v2");
}

// The over-profile cases: a profile file with `deployer` (may_control_plugins) and
// `relay` (stamp, listening on over/in), the control service as deployer asks it, and
// a roundtrip through relay.
struct over_profile_fixture {
  test::temp_dir d;
  std::unique_ptr<kernel> kk;
  std::unique_ptr<test::collector> out;

  over_profile_fixture() {
    auto p = test::make_profile(d.path());
    p.file = write_profile("{stamp: true, listen: over/in}");
    plugin_spec deployer;
    deployer.name = "deployer";
    deployer.may_control_plugins = true;
    plugin_spec relay;
    relay.name = "relay";
    relay.config = make_yaml(YAML::Load("{stamp: true, listen: over/in}"));
    p.plugins = {deployer, relay};
    kk = std::make_unique<kernel>(std::move(p), kernel_options{false, false});
    BOOST_REQUIRE(!kk->start());
    out = std::make_unique<test::collector>(*kk, "test/echo/out");
  }

  // Writes the profile file: relay with `relay_config`, or without relay when empty.
  std::filesystem::path write_profile(const std::string& relay_config) {
    auto text = kernel_yaml + "plugins:\n  - name: deployer\n    may_control_plugins: true\n";
    if (!relay_config.empty())
      text += "  - name: relay\n    config: " + relay_config + "\n";
    return d.write("profile.yaml", text);
  }

  // The deployer's PluginChange for relay on `topic` (configure or load).
  caf::expected<control::PluginInfo> send(std::string_view topic, const std::string& doc,
                                          bool over) {
    control::PluginChange c;
    c.set_name("relay");
    c.set_config(doc);
    c.set_over_profile(over);
    return control_client::configure_rpc::decode(ask(topic, c));
  }

  caf::expected<control::Empty> unload() {
    control::Name n;
    n.set_name("relay");
    return control_client::unload_rpc::decode(ask(control_client::unload_topic, n));
  }

  // The payload relay sends back for `payload` on `topic`, with its prefix.
  std::string roundtrip(const std::string& topic, const std::string& payload) {
    auto before = out->size();
    test::pub(*kk, topic, payload);
    BOOST_REQUIRE(out->wait_for(before + 1));
    return parse(out->messages()[before].payload()).payload;
  }

private:
  caf::expected<Envelope> ask(std::string_view topic, const google::protobuf::MessageLite& body) {
    Envelope env;
    env.set_topic(std::string{topic});
    env.set_source("deployer");
    env.set_payload(body.SerializeAsString());
    return kk->request(std::move(env), std::chrono::seconds{30});
  }
};

namespace cc = control_client;

// A configure over the profile (PluginChange.over_profile, what the deployment plugin
// gives message_manager's bridge with): the caller's keys merged over the profile entry's,
// the others kept; an empty document gives the profile's back.
BOOST_FIXTURE_TEST_CASE(configure_over_the_profile_keeps_the_profile_keys,
                        over_profile_fixture) {
  BOOST_TEST(roundtrip("over/in", "a") == "a");
  // The caller's prefix, the profile's listen topic and stamp kept.
  auto info = send(cc::configure_topic, "{prefix: 'o-'}", true);
  BOOST_REQUIRE_MESSAGE(info, test::error_text(info));
  BOOST_TEST(roundtrip("over/in", "b") == "o-b");
  // Refused as any configure (the merged document is validated); nothing changes.
  info = send(cc::configure_topic, "{prefix: 'p-', no_such_key: 1}", true);
  BOOST_REQUIRE(!info);
  BOOST_TEST(info.error() == errc::invalid_config, test::error_text(info));
  BOOST_TEST(roundtrip("over/in", "c") == "o-c");
  // Empty: the profile's configuration again.
  info = send(cc::configure_topic, "", true);
  BOOST_REQUIRE_MESSAGE(info, test::error_text(info));
  BOOST_TEST(roundtrip("over/in", "d") == "d");
  // Without over_profile (and no overlay in force) the document is the whole
  // configuration (listen back to its default).
  info = send(cc::configure_topic, "{stamp: true, prefix: 'w-'}", false);
  BOOST_REQUIRE_MESSAGE(info, test::error_text(info));
  BOOST_TEST(roundtrip("test/echo/in", "e") == "w-e");
}

// Review #1 of the bridge: a configure over the profile stays in force across profile
// changes (the kernel keeps it as the plugin's overlay and merges it over the new entry),
// until an empty over-profile document clears it. Review #9: a key that is no scalar is
// invalid_config (the service lives on), over_profile on a load is refused.
BOOST_FIXTURE_TEST_CASE(configure_over_the_profile_survives_profile_changes,
                        over_profile_fixture) {
  auto info = send(cc::configure_topic, "{prefix: 'o-'}", true);
  BOOST_REQUIRE_MESSAGE(info, test::error_text(info));
  BOOST_TEST(roundtrip("over/in", "a") == "o-a");
  // Another key of the profile entry changes: the new listen topic, the overlay's prefix.
  write_profile("{stamp: true, listen: over2/in}");
  auto actions = kk->apply_profile_change();
  BOOST_REQUIRE(actions);
  BOOST_TEST(roundtrip("over2/in", "b") == "o-b");
  // No change: nothing reconfigured, the overlay still in force.
  actions = kk->apply_profile_change();
  BOOST_REQUIRE(actions);
  for (const auto& a : *actions)
    BOOST_TEST(!contains(a, "relay"), a);
  BOOST_TEST(roundtrip("over2/in", "c") == "o-c");
  // Refused: a key that is no scalar; over_profile on a load. The service still answers.
  info = send(cc::configure_topic, "{[a, b]: 1}", true);
  BOOST_REQUIRE(!info);
  BOOST_TEST(info.error() == errc::invalid_config, test::error_text(info));
  info = send(cc::load_topic, "{prefix: 'l-'}", true);
  BOOST_REQUIRE(!info);
  BOOST_TEST(info.error() == errc::unsupported, test::error_text(info));
  BOOST_TEST(roundtrip("over2/in", "d") == "o-d");
  // An empty over-profile document clears the overlay: a profile change keeps none.
  info = send(cc::configure_topic, "", true);
  BOOST_REQUIRE_MESSAGE(info, test::error_text(info));
  BOOST_TEST(roundtrip("over2/in", "e") == "e");
  write_profile("{stamp: true, listen: over/in}");
  actions = kk->apply_profile_change();
  BOOST_REQUIRE(actions);
  BOOST_TEST(roundtrip("over/in", "f") == "f");
}

// Issue 15 review #4: an operator's whole configuration, an unload + load and a profile
// that drops the plugin and takes it back keep the over-profile document merged on top
// (else message_manager would run the profile's bridge while the deployment reports the
// bridge component RUNNING); only an empty over-profile document drops it.
BOOST_FIXTURE_TEST_CASE(configure_over_the_profile_survives_configures_and_unloads,
                        over_profile_fixture) {
  auto info = send(cc::configure_topic, "{prefix: 'o-'}", true);
  BOOST_REQUIRE_MESSAGE(info, test::error_text(info));
  // A whole configuration: its listen topic, the overlay's prefix on top.
  info = send(cc::configure_topic, "{stamp: true, listen: over3/in}", false);
  BOOST_REQUIRE_MESSAGE(info, test::error_text(info));
  BOOST_TEST(roundtrip("over3/in", "a") == "o-a");
  // Unloaded, loaded again with the profile's entry: the overlay on top.
  auto gone = unload();
  BOOST_REQUIRE_MESSAGE(gone, test::error_text(gone));
  info = send(cc::load_topic, "", false);
  BOOST_REQUIRE_MESSAGE(info, test::error_text(info));
  BOOST_TEST(roundtrip("over/in", "b") == "o-b");
  // The profile drops relay, then takes it back: loaded with the overlay.
  write_profile("");
  auto actions = kk->apply_profile_change();
  BOOST_REQUIRE(actions);
  BOOST_TEST(std::count(actions->begin(), actions->end(), "unloaded relay") == 1);
  write_profile("{stamp: true, listen: over/in}");
  actions = kk->apply_profile_change();
  BOOST_REQUIRE(actions);
  BOOST_TEST(roundtrip("over/in", "c") == "o-c");
  // Dropped by an empty over-profile document only, even while unloaded (the
  // deployment removing the bridge then hears unknown_plugin): the next load has none.
  gone = unload();
  BOOST_REQUIRE_MESSAGE(gone, test::error_text(gone));
  info = send(cc::configure_topic, "", true);
  BOOST_REQUIRE(!info);
  BOOST_TEST(info.error() == errc::unknown_plugin, test::error_text(info));
  info = send(cc::load_topic, "", false);
  BOOST_REQUIRE_MESSAGE(info, test::error_text(info));
  BOOST_TEST(roundtrip("over/in", "d") == "d");
}

// Issue 15 review (H13 #1): grovectl's load (kernel::load through the control socket, not
// the bus service) merges the over-profile document in force too, so `grovectl unload
// message_manager && grovectl load message_manager` keeps the deployment's bridge.
BOOST_FIXTURE_TEST_CASE(grovectl_load_keeps_the_over_profile_document, over_profile_fixture) {
  auto info = send(cc::configure_topic, "{prefix: 'o-'}", true);
  BOOST_REQUIRE_MESSAGE(info, test::error_text(info));
  BOOST_REQUIRE(!kk->unload("relay"));
  auto err = kk->load("relay");
  BOOST_REQUIRE_MESSAGE(!err, describe(err));
  BOOST_TEST(roundtrip("over/in", "a") == "o-a");
  // Dropped while unloaded: the next grovectl load runs the profile's entry alone.
  BOOST_REQUIRE(!kk->unload("relay"));
  info = send(cc::configure_topic, "", true);
  BOOST_REQUIRE(!info);
  BOOST_TEST(info.error() == errc::unknown_plugin, test::error_text(info));
  err = kk->load("relay");
  BOOST_REQUIRE_MESSAGE(!err, describe(err));
  BOOST_TEST(roundtrip("over/in", "b") == "b");
}

// The kernel's control service (control_client.hpp): what grovectl does over the socket,
// for plugins on the bus. Status for anyone; loads, reconfigurations, reloads and unloads
// only for a plugin the profile grants may_control_plugins, and never on itself.
BOOST_AUTO_TEST_CASE(plugins_control_other_plugins_through_the_kernel_service) {
  test::temp_dir d;
  auto p = test::make_profile(d.path());
  // Profile entries only (no such libraries: their loads fail, the grants stand).
  plugin_spec deployer;
  deployer.name = "deployer";
  deployer.may_control_plugins = true;
  plugin_spec other;
  other.name = "other";
  p.plugins = {deployer, other};
  auto state_dir = p.write_dir / "plugins";
  kernel kk{std::move(p), kernel_options{false, false}};
  BOOST_REQUIRE(!kk.start());
  namespace cc = control_client;
  auto ask = [&](std::string_view topic, const std::string& caller,
                 const google::protobuf::MessageLite& body) {
    Envelope env;
    env.set_topic(std::string{topic});
    env.set_source(caller);
    env.set_payload(body.SerializeAsString());
    return kk.request(std::move(env), std::chrono::seconds{30});
  };
  auto change = [](std::string name, std::string config) {
    control::PluginChange c;
    c.set_name(std::move(name));
    c.set_config(std::move(config));
    return c;
  };
  // Anyone reads the status; the reply comes from the kernel.
  auto st = cc::status_rpc::decode(ask(cc::status_topic, "other", control::Empty{}));
  BOOST_REQUIRE_MESSAGE(st, test::error_text(st));
  BOOST_TEST(st->pid() == static_cast<uint32_t>(getpid()));
  BOOST_TEST(st->plugins_size() == 0);
  // Without the grant nothing changes.
  auto info = cc::load_rpc::decode(ask(cc::load_topic, "other", change("relay", "{stamp: true}")));
  BOOST_REQUIRE(!info);
  BOOST_TEST(info.error() == errc::not_authorized);
  BOOST_TEST(contains(test::error_text(info), "'other' may not control plugins"),
             test::error_text(info));
  BOOST_TEST(kk.plugins().plugins_size() == 0);
  // With it: a load with a config of the caller's, running at once.
  info = cc::load_rpc::decode(ask(cc::load_topic, "deployer", change("relay", "{stamp: true}")));
  BOOST_REQUIRE_MESSAGE(info, test::error_text(info));
  BOOST_TEST(info->name() == "relay");
  BOOST_TEST(info->state() == "running");
  test::collector out{kk, "test/echo/out"};
  auto roundtrip = [&](const std::string& payload) {
    auto before = out.size();
    test::pub(kk, "test/echo/in", payload);
    BOOST_REQUIRE(out.wait_for(before + 1));
    return parse(out.messages()[before].payload());
  };
  BOOST_TEST(roundtrip("a").payload == "a");
  // Reconfigured live; a config the schema refuses, or no YAML at all, changes nothing.
  info = cc::configure_rpc::decode(
    ask(cc::configure_topic, "deployer", change("relay", "{stamp: true, prefix: 'x-'}")));
  BOOST_REQUIRE_MESSAGE(info, test::error_text(info));
  BOOST_TEST(roundtrip("b").payload == "x-b");
  for (auto bad : {"{stamp: true, no_such_key: 1}", "{stamp: [", "[1, 2]"}) {
    info = cc::configure_rpc::decode(ask(cc::configure_topic, "deployer", change("relay", bad)));
    BOOST_REQUIRE(!info);
    BOOST_TEST(info.error() == errc::invalid_config, bad << ": " << test::error_text(info));
  }
  auto m = roundtrip("c");
  BOOST_TEST(m.payload == "x-c");
  BOOST_TEST(m.count == 3u);
  // A hot reload to another build keeps the state.
  control::Reload rl;
  rl.set_name("relay");
  // A plugin's reload path inside its state directory is checked as its load path: a
  // file others may write is refused (and the old build keeps serving). (Outside it, a
  // path is reloaded as given, as ota's release directories are.)
  auto own = state_dir / "deployer" / "librelay_v2.so";
  std::filesystem::create_directories(own.parent_path());
  auto unsafe = state_dir / "deployer" / "librelay_unsafe.so";
  std::filesystem::copy_file(build("relay_v2"), unsafe);
  std::filesystem::permissions(unsafe, std::filesystem::perms::owner_read
                                         | std::filesystem::perms::owner_write
                                         | std::filesystem::perms::others_write);
  rl.set_path(unsafe.string());
  info = cc::reload_rpc::decode(ask(cc::reload_topic, "deployer", rl));
  BOOST_REQUIRE(!info);
  BOOST_TEST(info.error() != errc::not_authorized, test::error_text(info));
  BOOST_TEST(roundtrip("c2").variant != "v2");
  std::filesystem::copy_file(build("relay_v2"), own);
  std::filesystem::permissions(own, std::filesystem::perms::owner_read
                                      | std::filesystem::perms::owner_write);
  rl.set_path(own.string());
  info = cc::reload_rpc::decode(ask(cc::reload_topic, "deployer", rl));
  BOOST_REQUIRE_MESSAGE(info, test::error_text(info));
  BOOST_TEST(!info->last_reload().empty());
  m = roundtrip("d");
  BOOST_TEST(m.variant == "v2");
  BOOST_TEST(m.count == 5u);
  // Never on itself; not on a plugin that is not there; not from bytes that do not parse.
  control::Name self;
  self.set_name("deployer");
  auto gone = cc::unload_rpc::decode(ask(cc::unload_topic, "deployer", self));
  BOOST_REQUIRE(!gone);
  BOOST_TEST(contains(test::error_text(gone), "cannot unload itself"), test::error_text(gone));
  info = cc::configure_rpc::decode(ask(cc::configure_topic, "deployer", change("ghost", "{}")));
  BOOST_REQUIRE(!info);
  BOOST_TEST(info.error() == errc::unknown_plugin);
  Envelope junk;
  junk.set_topic(std::string{cc::load_topic});
  junk.set_source("deployer");
  junk.set_payload("\xff\xff\xff");
  auto bad = kk.request(std::move(junk), std::chrono::seconds{5});
  BOOST_REQUIRE(!bad);
  BOOST_TEST(bad.error() == errc::malformed);
  // Unloaded: nothing serves its topic any more.
  control::Name relay;
  relay.set_name("relay");
  gone = cc::unload_rpc::decode(ask(cc::unload_topic, "deployer", relay));
  BOOST_REQUIRE_MESSAGE(gone, test::error_text(gone));
  BOOST_TEST(kk.plugins().plugins_size() == 0);
  BOOST_TEST(test::pub(kk, "test/echo/in", "e").delivered == 0u);
}

// Issue 15: a plugin component first loaded from its artifact. `$grove/kernel/plugins/load`
// with a path loads that library instead of <plugin_dir>/lib<name>.so, when the kernel
// finds it inside the caller's own state directory (symlinks and `..` resolved), a regular
// file writable only by groved's user; the ABI is checked as for any plugin. The path is
// reported as asked, and a reload without a path loads it again.
BOOST_AUTO_TEST_CASE(a_plugin_loads_a_library_only_from_its_own_state_directory) {
  test::temp_dir d;
  auto p = test::make_profile(d.path());
  plugin_spec deployer;
  deployer.name = "deployer";
  deployer.may_control_plugins = true;
  p.plugins = {deployer};
  auto store = p.write_dir / "plugins" / "deployer" / "artifacts";
  kernel kk{std::move(p), kernel_options{false, false}};
  BOOST_REQUIRE(!kk.start());
  std::filesystem::create_directories(store);
  namespace fs = std::filesystem;
  auto put = [&](const std::string& target, const std::string& as, fs::perms mode) {
    auto to = store / as;
    fs::copy_file(build(target), to, fs::copy_options::overwrite_existing);
    fs::permissions(to, mode);
    return to;
  };
  auto ro = fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read;
  auto load = [&](const std::string& name, const std::string& path) {
    control::PluginChange c;
    c.set_name(name);
    c.set_path(path);
    c.set_config("{stamp: true}");
    Envelope env;
    env.set_topic(std::string{control_client::load_topic});
    env.set_source("deployer");
    env.set_payload(c.SerializeAsString());
    return control_client::load_rpc::decode(kk.request(std::move(env), std::chrono::seconds{30}));
  };
  auto refused = [&](const std::string& path, errc code, const std::string& why) {
    auto info = load("relay", path);
    BOOST_REQUIRE_MESSAGE(!info, path);
    BOOST_TEST(info.error() == code, path << ": " << test::error_text(info));
    BOOST_TEST(contains(test::error_text(info), why), test::error_text(info));
    BOOST_TEST(kk.plugins().plugins_size() == 0);
  };
  // Outside the state directory, directly, through `..` or through a link inside it.
  refused(build("relay").string(), errc::not_authorized,
          "a plugin may load a library only from its own state directory");
  auto good = put("relay_v2", "relay-v2.so", ro);
  fs::copy_file(build("relay"), d.path() / "outside.so");
  refused((store / ".." / ".." / ".." / ".." / "outside.so").string(), errc::not_authorized,
          "only from its own state directory");
  fs::create_symlink(build("relay"), store / "link.so");
  refused((store / "link.so").string(), errc::not_authorized, "only from its own state directory");
  refused((store / ".." / ".." / "other" / "x.so").string(), errc::load_failed, "");
  refused("relative/librelay.so", errc::invalid_config, "is not absolute");
  // Writable by others than groved's user: the file, or a directory on the way to it
  // (as the deployment's components/work/<name> is, for a component's user).
  refused(put("relay_v2", "open.so", fs::perms::all).string(), errc::load_failed,
          "writable by others than groved's user");
  fs::create_directories(store / "open-dir");
  fs::permissions(store / "open-dir", fs::perms::all);
  refused(put("relay_v2", "open-dir/relay.so", ro).string(), errc::load_failed,
          "open-dir is writable by others");
  fs::permissions(store / "open-dir", fs::perms::owner_all);
  // A hard link: the other name could be anywhere, writable by anyone who owns it.
  fs::create_hard_link(good, store / "hard.so");
  refused((store / "hard.so").string(), errc::load_failed, "2 hard links");
  refused(good.string(), errc::load_failed, "2 hard links");
  fs::remove(store / "hard.so");
  // A link and `..`: the kernel resolves sub/.. to a/, a lexical reading to the store
  // itself (another file there): refused, not guessed.
  fs::create_directories(store / "a" / "b");
  put("relay_v2", "a/x.so", ro);
  put("relay", "x.so", ro);
  fs::create_directory_symlink(store / "a" / "b", store / "sub");
  refused((store / "sub" / ".." / "x.so").string(), errc::load_failed, "names '..'");
  // Inside, but not a plugin of this ABI.
  refused(put("wrong_abi", "wrong.so", ro).string(), errc::abi_mismatch, "kernel speaks");
  // Inside and read-only: loaded from there, running, the path reported as asked.
  auto info = load("relay", (store / "." / "relay-v2.so").string());
  BOOST_REQUIRE_MESSAGE(info, test::error_text(info));
  BOOST_TEST(info->state() == "running");
  BOOST_TEST(info->library() == good.string());
  test::collector out{kk, "test/echo/out"};
  test::pub(kk, "test/echo/in", "a");
  BOOST_REQUIRE(out.wait_for(1));
  BOOST_TEST(parse(out.messages()[0].payload()).variant == "v2");
  // A reload without a path loads the same library again.
  auto r = kk.reload("relay", "");
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  BOOST_TEST(kk.plugins().plugins(0).library() == good.string());
  // A configure names no library.
  control::PluginChange c;
  c.set_name("relay");
  c.set_path(good.string());
  Envelope env;
  env.set_topic(std::string{control_client::configure_topic});
  env.set_source("deployer");
  env.set_payload(c.SerializeAsString());
  auto conf = control_client::configure_rpc::decode(kk.request(std::move(env), std::chrono::seconds{30}));
  BOOST_REQUIRE(!conf);
  BOOST_TEST(conf.error() == errc::unsupported);
}

BOOST_AUTO_TEST_SUITE_END()
