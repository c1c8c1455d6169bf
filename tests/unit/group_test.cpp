#define BOOST_TEST_MODULE group_test
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <sstream>

#include "grove/kernel/group.hpp"
#include "grove/kernel/kernel.hpp"
#include "grove/kernel/plugin_host.hpp"
#include "grove/kernel/config.hpp"
#include <spdlog/spdlog.h>
#include "grove/kernel/group_client.hpp"
#include "directory_fsync_fault.hpp"
#include "test_util.hpp"

using namespace grove;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

const std::string good = R"(name: home
devices:
  - thing: lamp
  - thing: switch
    sync_shadow: true
functions:
  - name: brain
    config: {pinned: true}
subscriptions:
  - {id: s1, source: "device:switch", subject: "home/switch/+", target: "function:brain"}
  - {id: s2, source: "function:brain", subject: "home/lamp/set", target: "device:lamp"}
  - {id: s3, source: "device:lamp", subject: "home/lamp/#", target: cloud}
  - {id: s4, source: shadow, subject: "$aws/things/lamp/shadow/#", target: "device:lamp"}
resources:
  - {id: models, config: {path: /opt/models}}
)";

/// A kernel's options with the files watched or not, and polled only once an hour: an
/// edit is read by the watch (or a set's own check), never by the poll.
kernel_options hourly_poll(bool watch) {
  kernel_options opts{false, false};
  opts.watch_profile = watch;
  opts.watch_interval = std::chrono::hours{1};
  return opts;
}

struct fixture {
  test::temp_dir dir;

  /// A profile on group file `gfile` with one plugin, "deployer", that may set the group
  /// (a profile entry only: its load fails, the grant stands).
  auto deployer_profile(const std::filesystem::path& gfile) {
    auto p = test::make_profile(dir.path());
    p.group_file = gfile;
    plugin_spec deployer;
    deployer.name = "deployer";
    deployer.may_set_group = true;
    p.plugins = {deployer};
    return p;
  }

  std::string error_of(const std::string& name, const std::string& text) {
    auto g = load_group(dir.write(name, text));
    BOOST_REQUIRE(!g);
    BOOST_TEST(g.error() == errc::invalid_config);
    return describe(g.error());
  }

  /// The group of `body` read from parser events (after a plain `name:`) and through the
  /// node tree (after an anchored one): checked to be the same.
  group::Group read_both_ways(const std::string& body) {
    auto events = load_group(dir.write("a/g.yaml", "name: home" + body));
    auto tree = load_group(dir.write("b/g.yaml", "name: &n home" + body));
    BOOST_REQUIRE_MESSAGE(events, test::error_text(events));
    BOOST_REQUIRE_MESSAGE(tree, test::error_text(tree));
    events->clear_source_file();
    tree->clear_source_file();
    BOOST_TEST(events->SerializeAsString() == tree->SerializeAsString());
    return *events;
  }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(group_files, fixture)

BOOST_AUTO_TEST_CASE(valid_group_yaml) {
  auto g = load_group(dir.write("g.yaml", good));
  BOOST_REQUIRE_MESSAGE(g, test::error_text(g));
  BOOST_TEST(g->name() == "home");
  BOOST_REQUIRE_EQUAL(g->devices_size(), 2);
  BOOST_TEST(g->devices(1).sync_shadow());
  BOOST_REQUIRE_EQUAL(g->subscriptions_size(), 4);
  BOOST_TEST(g->subscriptions(0).subject() == "home/switch/+");
  BOOST_TEST(g->subscriptions(2).target() == "cloud");
  BOOST_TEST(contains(g->functions(0).config_yaml(), "pinned: true"));
  BOOST_TEST(g->resources(0).id() == "models");
}

// load_group reads a plain group from parser events and anything else through the YAML
// tree and the schema: both must build the same group. An anchor (unused) sends the same
// content down the tree path.
BOOST_AUTO_TEST_CASE(event_and_tree_readers_build_the_same_group) {
  const std::string body = R"(
devices:
  - thing: lamp
    sync_shadow: yes
  - {thing: "switch", sync_shadow: false}
functions:
  - name: brain
    config:
      env: {A: "1", B: 2}
      list: [1, "two", ~, {x: [y]}]
  - name: scalar
    config: 7
  - name: none
    config:
  - name: quoted
    config: "a: b"
subscriptions:
  - {id: s1, source: "device:switch", subject: "home/+/x", target: "function:brain"}
  - id: 's2'
    source: cloud
    subject: "$aws/things/lamp/shadow/#"
    target: "device:lamp"
resources:
  - {id: models, config: {path: /opt/models, ro: true}}
  - id: bare
)";
  auto events = read_both_ways(body);
  BOOST_TEST(events.devices(0).sync_shadow());
  BOOST_TEST(events.functions(1).config_yaml() == "7");
  BOOST_TEST(events.functions(2).config_yaml().empty());
  BOOST_TEST(contains(events.functions(0).config_yaml(), "two"));
}

BOOST_AUTO_TEST_CASE(json_is_accepted_with_positions) {
  auto g = load_group(dir.write("g.json", R"({"name": "j", "devices": [{"thing": "a"}],
  "subscriptions": [{"id": "x", "source": "device:a", "subject": "t/#", "target": "cloud"}]})"));
  BOOST_REQUIRE_MESSAGE(g, test::error_text(g));
  BOOST_TEST(g->subscriptions(0).source() == "device:a");
  auto err = error_of("bad.json", "{\"name\": \"j\",\n \"devices\": [{\"thing\": \"a\", \"colour\": 1}]}");
  BOOST_TEST(contains(err, "bad.json:2:"), err);
  BOOST_TEST(contains(err, "devices[0].colour: unknown key"), err);
}

BOOST_AUTO_TEST_CASE(bad_endpoints_and_references) {
  auto err = error_of("g.yaml", "name: g\nsubscriptions:\n  - {id: a, source: toaster, subject: t, target: cloud}\n");
  BOOST_TEST(contains(err, "g.yaml:3:"), err);
  BOOST_TEST(contains(err, "subscriptions[0].source"), err);
  BOOST_TEST(contains(err, "not device:<thing>, function:<name>, cloud or shadow"), err);
  err = error_of("g.yaml", "name: g\nsubscriptions:\n  - {id: a, source: 'device:ghost', subject: t, target: cloud}\n");
  BOOST_TEST(contains(err, "device 'ghost' is not in this group's devices"), err);
  err = error_of("g.yaml", "name: g\nsubscriptions:\n  - {id: a, source: cloud, subject: t, target: 'function:f'}\n");
  BOOST_TEST(contains(err, "function 'f' is not in this group's functions"), err);
  err = error_of("g.yaml", "name: g\nsubscriptions:\n  - {id: a, source: cloud, subject: t, target: cloud}\n");
  BOOST_TEST(contains(err, "source and target are the same"), err);
}

BOOST_AUTO_TEST_CASE(bad_subjects_ids_and_names) {
  auto err = error_of("g.yaml", "name: g\nsubscriptions:\n  - {id: a, source: cloud, subject: 'a/#/b', target: shadow}\n");
  BOOST_TEST(contains(err, "subscriptions[0].subject"), err);
  BOOST_TEST(contains(err, "'#' must be the last level"), err);
  err = error_of("g.yaml", "name: g\nsubscriptions:\n  - {id: a, source: cloud, subject: t, target: shadow}\n  - {id: a, source: shadow, subject: t, target: cloud}\n");
  BOOST_TEST(contains(err, "subscriptions[1].id: id 'a' is used twice"), err);
  err = error_of("g.yaml", "name: g\ndevices:\n  - thing: a\n  - thing: a\n");
  BOOST_TEST(contains(err, "devices[1].thing: device 'a' is listed twice"), err);
  err = error_of("g.yaml", "name: g\ndevices:\n  - thing: 'a b'\n");
  BOOST_TEST(contains(err, "thing names are"), err);
  err = error_of("g.yaml", "name: g\ndevices:\n  - thing: grove\n");
  BOOST_TEST(contains(err, "devices[0].thing: thing name 'grove' is reserved"), err);
  err = error_of("g.yaml", "devices: []\n");
  BOOST_TEST(contains(err, "name: required key is missing"), err);
  err = error_of("g.yaml", "name: [\n");
  BOOST_TEST(contains(err, "g.yaml:"), err);
  // The broker's table is line-based: a line break in a subject would be a rule of its
  // own (found by tests/fuzz, target mm_group).
  err = error_of("g.yaml", "name: g\nsubscriptions:\n  - {id: a, source: cloud, subject: \"t\\nthing x\", target: shadow}\n");
  BOOST_TEST(contains(err, "g.yaml:3:"), err);
  BOOST_TEST(contains(err, "subscriptions[0].subject: a subject must not contain control characters"), err);
}

// Issue 16's loggers: both readers take the same section, group_document writes it back,
// and a bad level, component or type is a load error naming file:line and the field.
BOOST_AUTO_TEST_CASE(loggers_are_read_written_back_and_checked) {
  const std::string body = R"(
loggers:
  - {id: sys, component: GreengrassSystem, level: DEBUG}
  - id: fn
    component: Lambda
    level: WARN
    type: FileSystem
    space_kb: 64
)";
  auto events = read_both_ways(body);
  BOOST_REQUIRE_EQUAL(events.loggers_size(), 2);
  BOOST_TEST(events.loggers(0).component() == "GreengrassSystem");
  BOOST_TEST(events.loggers(0).level() == "DEBUG");
  BOOST_TEST(events.loggers(0).type() == "FileSystem"); // the default
  BOOST_TEST(events.loggers(0).space_kb() == 0u);       // not set
  BOOST_TEST(events.loggers(1).space_kb() == 64u);
  // Written back, read again: the same loggers.
  auto doc = group_document(events);
  auto again = load_group(dir.write("c/g.yaml", YAML::Dump(doc)));
  BOOST_REQUIRE_MESSAGE(again, test::error_text(again));
  again->clear_source_file();
  BOOST_TEST(again->SerializeAsString() == events.SerializeAsString());
  // A group without loggers writes no loggers key (documents as before).
  auto plain = load_group(dir.write("d/g.yaml", good));
  BOOST_REQUIRE(plain);
  BOOST_TEST(!group_document(*plain)["loggers"]);

  auto err = error_of("g.yaml", "name: g\nloggers:\n  - {id: a, component: Lambda, level: LOUD}\n");
  BOOST_TEST(contains(err, "g.yaml:3:"), err);
  BOOST_TEST(contains(err, "loggers[0].level"), err);
  err = error_of("g.yaml", "name: g\nloggers:\n  - {id: a, component: Toaster, level: INFO}\n");
  BOOST_TEST(contains(err, "g.yaml:3:"), err);
  BOOST_TEST(contains(err, "loggers[0].component"), err);
  err = error_of("g.yaml", "name: g\nloggers:\n  - {id: a, component: Lambda, level: INFO, type: AWSCloudWatch}\n");
  BOOST_TEST(contains(err, "loggers[0].type"), err);
  err = error_of("g.yaml", "name: g\nloggers:\n  - {id: a, component: Lambda, level: INFO, space_kb: 0}\n");
  BOOST_TEST(contains(err, "loggers[0].space_kb"), err);
  err = error_of("g.yaml", "name: g\nloggers:\n  - {id: a, component: Lambda, level: INFO}\n"
                           "  - {id: b, component: Lambda, level: ERROR}\n");
  BOOST_TEST(contains(err, "g.yaml:4:"), err);
  BOOST_TEST(contains(err, "loggers[1].component: Lambda has a logger already (loggers[0])"), err);
  err = error_of("g.yaml", "name: g\nloggers:\n  - {id: a, component: Lambda, level: INFO}\n"
                           "  - {id: a, component: GreengrassSystem, level: ERROR}\n");
  BOOST_TEST(contains(err, "loggers[1].id: id 'a' is used twice"), err);
  err = error_of("g.yaml", "name: g\nloggers:\n  - {id: a, level: INFO}\n");
  BOOST_TEST(contains(err, "loggers[0].component: required key is missing"), err);
}

// Issue 16: the kernel applies a GreengrassSystem logger to its own level and every
// plugin's, live; a group without one gives the profile's levels back; a bad logger is
// refused with file:line and leaves the level in force.
BOOST_AUTO_TEST_CASE(kernel_applies_a_greengrass_system_logger) {
  auto with = [](const std::string& level) {
    return "name: g\nloggers:\n  - {id: sys, component: GreengrassSystem, level: " + level + "}\n";
  };
  auto gfile = dir.write("g.yaml", with("DEBUG"));
  auto p = test::make_profile(dir.path()); // log_level warn
  p.group_file = gfile;
  kernel k{std::move(p), kernel_options{false, false}};
  BOOST_REQUIRE(!k.start());
  plugin_spec echo;
  echo.name = "echo";
  echo.config = make_yaml(YAML::Load("{prefix: '>'}"));
  echo.log_level = "error"; // its own level, which the logger overrides
  BOOST_REQUIRE(!k.host().load(echo));
  auto plugin_level = [&] {
    auto all = k.plugins(); // kept: plugins() of a temporary would dangle
    for (const auto& pi : all.plugins())
      if (pi.name() == "echo")
        return pi.log_level();
    return std::string{"(not loaded)"};
  };
  BOOST_TEST(k.status().log_level() == "debug");
  BOOST_TEST(k.log()->level() == spdlog::level::debug);
  BOOST_TEST(contains(k.status().details().at("kernel.log"), "group logger 'sys'"));
  BOOST_TEST(plugin_level() == "debug"); // loaded after the logger: it starts at it
  dir.write("g.yaml", with("FATAL"));
  BOOST_REQUIRE(!k.reload_group());
  BOOST_TEST(k.status().log_level() == "critical");
  BOOST_TEST(plugin_level() == "critical");
  // A bad level: refused, naming the file's line; the level stays.
  dir.write("g.yaml", "name: g\nloggers:\n  - {id: sys, component: GreengrassSystem, level: LOUD}\n");
  auto err = k.reload_group();
  BOOST_REQUIRE(err);
  BOOST_TEST(contains(describe(err), "g.yaml:3:"), describe(err));
  BOOST_TEST(contains(describe(err), "loggers[0].level"), describe(err));
  BOOST_TEST(k.status().log_level() == "critical");
  // A profile whose kernel.log_level changed applies at the next start only: the level
  // a group without a logger gives back stays the one of this start.
  dir.write("profile.yaml", "kernel: {log_level: info, worker_threads: 2, group: "
                              + gfile.string() + "}\n");
  auto changed = k.apply_profile_change();
  BOOST_REQUIRE_MESSAGE(changed, test::error_text(changed));
  BOOST_TEST(contains(changed->empty() ? "" : changed->front(), "next start"));
  // No logger: the profile's levels, the kernel's and the plugin's own.
  dir.write("g.yaml", "name: g\n");
  BOOST_REQUIRE(!k.reload_group());
  BOOST_TEST(k.status().log_level() == "warn");
  BOOST_TEST(contains(k.status().details().at("kernel.log"), "image profile"));
  BOOST_TEST(plugin_level() == "error");
}

BOOST_AUTO_TEST_CASE(greengrass_limits) {
  std::ostringstream devices;
  devices << "name: big\ndevices:\n";
  for (size_t i = 0; i <= max_group_devices; ++i)
    devices << "  - {thing: d" << i << "}\n";
  auto err = error_of("d.yaml", devices.str());
  BOOST_TEST(contains(err, "2501 devices; a group holds at most 2500"), err);
  std::ostringstream subs;
  subs << "name: big\nsubscriptions:\n";
  for (size_t i = 0; i < max_group_subscriptions; ++i)
    subs << "  - {id: s" << i << ", source: cloud, subject: t/" << i << ", target: shadow}\n";
  auto g = load_group(dir.write("s.yaml", subs.str()));
  BOOST_REQUIRE_MESSAGE(g, test::error_text(g)); // exactly at the limit is fine
  BOOST_TEST(g->subscriptions_size() == 10000);
  subs << "  - {id: one-more, source: cloud, subject: t, target: shadow}\n";
  err = error_of("s2.yaml", subs.str());
  BOOST_TEST(contains(err, "10001 subscriptions; a group holds at most 10000"), err);
}

BOOST_AUTO_TEST_CASE(kernel_serves_and_publishes_the_group) {
  auto gfile = dir.write("g.yaml", good);
  auto p = test::make_profile(dir.path());
  p.group_file = gfile;
  kernel k{std::move(p), kernel_options{false, false}};
  BOOST_REQUIRE(!k.start());
  // Through the typed client, as message_manager asks for it.
  auto send = [&](Envelope req) { return k.request(std::move(req), std::chrono::seconds{10}); };
  auto got = group_client::get(send);
  BOOST_REQUIRE_MESSAGE(got, test::error_text(got));
  auto g = *got;
  BOOST_TEST(g.name() == "home");
  // A request of another type is refused as malformed, never misread.
  Envelope wrong;
  wrong.set_topic(std::string{group_client::get_topic});
  wrong.set_content_type("text/plain");
  wrong.set_payload("give me the group");
  auto r = k.request(std::move(wrong), std::chrono::seconds{10});
  BOOST_REQUIRE(!r);
  BOOST_TEST(r.error() == errc::malformed);
  // The group service is a serve claim: no plugin can take the topics over.
  // (The kernel's control service claims its own topics beside them.)
  std::vector<std::string> group_claims;
  for (auto& c : k.bus().claims())
    if (c.filter.starts_with("$grove/group/"))
      group_claims.push_back(c.filter);
  BOOST_REQUIRE(group_claims.size() == 2u);
  BOOST_TEST(group_claims[0] == "$grove/group/get");
  BOOST_TEST(group_claims[1] == "$grove/group/set");
  BOOST_TEST(g.version() == 1u);
  BOOST_TEST(contains(k.status().details().at("kernel.group"), "4 subscriptions"));
  // A valid change is published to subscribers; an invalid one changes nothing.
  test::collector current{k, "$grove/group/current"};
  dir.write("g.yaml", "name: home2\n");
  BOOST_REQUIRE(!k.reload_group());
  BOOST_REQUIRE(current.wait_for(1));
  BOOST_REQUIRE(g.ParseFromString(current.messages()[0].payload()));
  BOOST_TEST(g.name() == "home2");
  BOOST_TEST(g.version() == 2u);
  dir.write("g.yaml", "name: home3\nsubscriptions: [{id: x}]\n");
  BOOST_TEST(k.reload_group() == errc::invalid_config);
  BOOST_TEST(k.group()->name() == "home2");
}

std::string slurp(const std::filesystem::path& file) {
  std::ifstream in{file, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

// Issue 16: `$grove/group/set` replaces the group as an edit of the file would, for a
// plugin the profile allows: validated first (a refusal is the error, the file and the
// group in force stay), then written over the group file and applied.
BOOST_AUTO_TEST_CASE(set_replaces_the_group_as_a_file_edit_would) {
  auto gfile = dir.write("g.yaml", good);
  // As an operator's editor may leave it; the kernel's writes make it groved's user's only.
  namespace stdfs = std::filesystem;
  stdfs::permissions(gfile, stdfs::perms::owner_read | stdfs::perms::owner_write
                              | stdfs::perms::group_read | stdfs::perms::others_read);
  auto p = deployer_profile(gfile);
  plugin_spec other; // a profile entry only, as deployer is
  other.name = "other";
  p.plugins.push_back(other);
  kernel k{std::move(p), kernel_options{false, false}};
  BOOST_REQUIRE(!k.start());
  test::collector current{k, "$grove/group/current"};
  auto before = slurp(gfile);
  // Refused: not allowed, or not a valid group. Nothing changes.
  auto r = k.set_group("other", "name: x\n");
  BOOST_REQUIRE(!r);
  BOOST_TEST(r.error() == errc::not_authorized);
  BOOST_TEST(contains(test::error_text(r), "'other' may not replace the group"), test::error_text(r));
  r = k.set_group("deployer", "name: x\nsubscriptions:\n  - {id: s, source: \"device:ghost\", "
                              "subject: a, target: cloud}\n");
  BOOST_REQUIRE(!r);
  BOOST_TEST(r.error() == errc::invalid_config);
  BOOST_TEST(contains(test::error_text(r), "device 'ghost' is not in this group's devices"),
             test::error_text(r));
  // The temporary file (.g.yaml.XXXXXX, grove::write_file_atomically) is not named.
  auto tmp_prefix = "." + gfile.filename().string() + ".";
  BOOST_TEST(!contains(test::error_text(r), tmp_prefix), test::error_text(r));
  std::ostringstream big;
  big << "name: big\nsubscriptions:\n";
  for (size_t i = 0; i <= max_group_subscriptions; ++i)
    big << "  - {id: s" << i << ", source: cloud, subject: t/" << i << ", target: shadow}\n";
  r = k.set_group("deployer", big.str());
  BOOST_REQUIRE(!r);
  BOOST_TEST(contains(test::error_text(r), "10001 subscriptions; a group holds at most 10000"));
  BOOST_TEST(slurp(gfile) == before);
  BOOST_TEST(k.group()->name() == "home");
  for (const auto& e : std::filesystem::directory_iterator{gfile.parent_path()})
    BOOST_TEST(!e.path().filename().string().starts_with(tmp_prefix), e.path());
  // Through the bus, a request's source is who asks: the kernel itself is no plugin.
  group::SetRequest req;
  req.set_document("name: x\n");
  auto send = [&](Envelope e) { return k.request(std::move(e), std::chrono::seconds{10}); };
  auto via_bus = group_client::set_rpc::decode(
    send(group_client::set_rpc{std::string{group_client::set_topic}}.encode(req)));
  BOOST_REQUIRE(!via_bus);
  BOOST_TEST(via_bus.error() == errc::not_authorized);
  // Accepted: the file is the document, the group in force is it, and it is published.
  std::string doc = R"({"name": "deployed", "devices": [{"thing": "lamp"}]})";
  r = k.set_group("deployer", doc);
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  BOOST_TEST((*r)->name() == "deployed");
  BOOST_TEST((*r)->version() == 2u);
  BOOST_TEST(slurp(gfile) == doc);
  // 0600 whatever the umask and the mode it had: function configs and environments are
  // groved's user's only, as its umask 077 made them before the SDK helper (issue 8).
  BOOST_TEST((stdfs::status(gfile).permissions()
              == (stdfs::perms::owner_read | stdfs::perms::owner_write)));
  BOOST_TEST(k.group()->devices_size() == 1);
  BOOST_REQUIRE(current.wait_for(1));
  group::Group g;
  BOOST_REQUIRE(g.ParseFromString(current.messages()[0].payload()));
  BOOST_TEST(g.name() == "deployed");
  // A new kernel on the same files loads the deployed group.
  k.stop();
  auto p2 = test::make_profile(dir.path());
  p2.group_file = gfile;
  kernel k2{std::move(p2), kernel_options{false, false}};
  BOOST_REQUIRE(!k2.start());
  BOOST_TEST(k2.group()->name() == "deployed");
}

// Issue 8: a directory fsync that fails after the rename leaves the new group file in
// place; the set goes on (stamp, reload, publish) rather than leave the kernel on a group
// the file no longer holds, and a compare-and-set on the new version goes through.
BOOST_AUTO_TEST_CASE(set_goes_on_when_only_the_directory_fsync_fails) {
  auto gfile = dir.write("g.yaml", good);
  auto p = deployer_profile(gfile);
  kernel k{std::move(p), kernel_options{false, false}};
  BOOST_REQUIRE(!k.start());
  test::collector current{k, "$grove/group/current"};
  auto read = k.group()->version();
  {
    test::failing_directory_fsync failing{EIO};
    auto r = k.set_group("deployer", "name: unsynced\n", read);
    BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
    BOOST_TEST((*r)->name() == "unsynced");
  }
  BOOST_TEST(k.group()->name() == "unsynced");
  BOOST_TEST(slurp(gfile) == "name: unsynced\n");
  BOOST_REQUIRE(current.wait_for(1));
  auto next = k.set_group("deployer", "name: next\n", k.group()->version());
  BOOST_REQUIRE_MESSAGE(next, test::error_text(next));
  BOOST_TEST(k.group()->name() == "next");
}

// Issue 15: `$grove/group/set` with the version the document was computed from is a
// compare-and-set. Two writers that read the same group cannot both set it: the second
// is refused with errc::conflict and changes nothing; an edit of the file the kernel has
// not read yet counts as a change too; read again, the change goes through.
BOOST_AUTO_TEST_CASE(set_with_an_expected_version_refuses_a_stale_group) {
  auto gfile = dir.write("g.yaml", good);
  auto p = deployer_profile(gfile);
  // As groved runs: the files watched (the poll an hour, so an edit may be read by the
  // watch or by the set's own check; either way it is in force before the set).
  kernel k{std::move(p), hourly_poll(true)};
  BOOST_REQUIRE(!k.start());
  auto read = k.group()->version();
  // Two writers computed their documents from the same version; the first one wins.
  auto first = k.set_group("deployer", "name: first\n", read);
  BOOST_REQUIRE_MESSAGE(first, test::error_text(first));
  BOOST_TEST((*first)->version() == read + 1);
  auto second = k.set_group("deployer", "name: second\n", read);
  BOOST_REQUIRE(!second);
  BOOST_TEST(second.error() == errc::conflict);
  BOOST_TEST(contains(test::error_text(second),
                      "computed from version " + std::to_string(read) + ", version "
                        + std::to_string(read + 1) + " is in force"),
             test::error_text(second));
  BOOST_TEST(k.group()->name() == "first");
  BOOST_TEST(slurp(gfile) == "name: first\n");
  // An edit of the file (no watcher here) that the kernel has not applied yet.
  read = k.group()->version();
  {
    std::ofstream out{gfile, std::ios::trunc};
    out << "name: edited\n";
  }
  auto stale = k.set_group("deployer", "name: third\n", read);
  BOOST_REQUIRE(!stale);
  BOOST_TEST(stale.error() == errc::conflict);
  BOOST_TEST(k.group()->name() == "edited"); // read by the check, not lost
  BOOST_TEST(slurp(gfile) == "name: edited\n");
  // Through the bus: the request carries the version; read again, the set goes through.
  auto send = [&](Envelope e) { return k.request(std::move(e), std::chrono::seconds{10}); };
  group::SetRequest req;
  req.set_document("name: third\n");
  req.set_expected_version(read);
  auto env = group_client::set_rpc{std::string{group_client::set_topic}}.encode(req);
  env.set_source("deployer");
  auto via_bus = group_client::set_rpc::decode(send(env));
  BOOST_REQUIRE(!via_bus);
  BOOST_TEST(via_bus.error() == errc::conflict);
  req.set_expected_version(k.group()->version());
  env = group_client::set_rpc{std::string{group_client::set_topic}}.encode(req);
  env.set_source("deployer");
  via_bus = group_client::set_rpc::decode(send(env));
  BOOST_REQUIRE_MESSAGE(via_bus, test::error_text(via_bus));
  BOOST_TEST(via_bus->name() == "third");
  // Without a version the document replaces whatever is in force, as before.
  auto plain = k.set_group("deployer", "name: plain\n");
  BOOST_REQUIRE_MESSAGE(plain, test::error_text(plain));
  BOOST_TEST((*plain)->name() == "plain");
}

// A compare-and-set never writes over an edit of the group file that is not in force:
// one the kernel does not watch for (applied only on SIGHUP), or one it refused. The
// version does not change for either, so the file's text is compared.
BOOST_AUTO_TEST_CASE(set_with_an_expected_version_keeps_an_edit_not_in_force) {
  auto gfile = dir.write("g.yaml", good);
  auto p = deployer_profile(gfile);
  for (bool watch : {false, true}) {
    {
      std::ofstream out{gfile, std::ios::trunc};
      out << good;
    }
    auto copy = p;
    kernel k{std::move(copy), hourly_poll(watch)};
    BOOST_REQUIRE(!k.start());
    auto read = k.group()->version();
    auto name = k.group()->name();
    // Not watched: a valid edit stays unread; watched: an edit the reader refuses.
    std::string edit = watch ? "name: [unclosed\n" : "name: operator\n";
    {
      std::ofstream out{gfile, std::ios::trunc};
      out << edit;
    }
    auto r = k.set_group("deployer", "name: deployment\n", read);
    BOOST_REQUIRE_MESSAGE(!r, "watch " << watch);
    BOOST_TEST(r.error() == errc::conflict, test::error_text(r));
    BOOST_TEST(contains(test::error_text(r), "the group file has an edit not in force"),
               test::error_text(r));
    BOOST_TEST(slurp(gfile) == edit);
    BOOST_TEST(k.group()->name() == name);
    BOOST_TEST(k.group()->version() == read);
    // Undone, the compare-and-set goes through (watched, the undo is read as a change:
    // one version on).
    {
      std::ofstream out{gfile, std::ios::trunc};
      out << good;
    }
    if (watch)
      BOOST_REQUIRE(test::wait_until([&] { return k.group()->version() == read + 1; }));
    r = k.set_group("deployer", "name: deployment\n", k.group()->version());
    BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
    BOOST_TEST((*r)->name() == "deployment");
    BOOST_TEST(slurp(gfile) == "name: deployment\n");
  }
}

// Issue 9: an edit reaches the bus when the file is written, not at the next poll. The
// poll is an hour here, so only the file watch can apply these edits: one renamed over
// the file (as editors do), one written in place.
BOOST_AUTO_TEST_CASE(a_group_edit_is_applied_without_waiting_for_the_poll) {
  auto gfile = dir.write("g.yaml", good);
  auto p = test::make_profile(dir.path());
  p.group_file = gfile;
  kernel k{std::move(p), hourly_poll(true)};
  test::collector current{k, "$grove/group/current"};
  BOOST_REQUIRE(!k.start());
  BOOST_REQUIRE(current.wait_for(1)); // version 1, at start
  dir.write("other.yaml", "name: not-the-group\n"); // another file of the directory
  dir.write("g.yaml.new", "name: renamed\n");
  std::filesystem::rename(dir.path() / "g.yaml.new", gfile);
  BOOST_REQUIRE(current.wait_for(2));
  group::Group g;
  BOOST_REQUIRE(g.ParseFromString(current.messages()[1].payload()));
  BOOST_TEST(g.name() == "renamed");
  BOOST_TEST(g.version() == 2u);
  dir.write("g.yaml", "name: in-place\n");
  BOOST_REQUIRE(current.wait_for(3));
  BOOST_REQUIRE(g.ParseFromString(current.messages()[2].payload()));
  BOOST_TEST(g.name() == "in-place");
  BOOST_TEST(k.group()->name() == "in-place");
}

// An edit of the group in force (the deployment plugin's: group_document, to_yaml, set)
// writes the file back; an operator's quoted strings must stay strings for the kernel
// and for operator tooling (PyYAML), not turn into ints and bools.
BOOST_AUTO_TEST_CASE(a_group_edit_keeps_quoted_strings_quoted) {
  auto gfile = dir.write("g.yaml", R"(name: home
functions:
  - name: brain
    config:
      env: {A: '1', B: 'true', C: '007', c: 'yes', e: '0x1F', f: '1e3', n: 5, p: on}
resources:
  - {id: pin, config: '42'}
)");
  auto p = deployer_profile(gfile);
  kernel k{std::move(p), kernel_options{false, false}};
  BOOST_REQUIRE(!k.start());
  auto r = k.set_group("deployer", to_yaml(group_document(*k.group())));
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  auto env = YAML::Load((*r)->functions(0).config_yaml())["env"];
  for (auto key : {"A", "B", "C", "c", "e", "f"})
    BOOST_TEST(env[key].Tag() == "!", key << " in " << (*r)->functions(0).config_yaml());
  BOOST_TEST(env["n"].Tag() == "?");
  std::string script = R"(import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
env = d["functions"][0]["config"]["env"]
want = {"A": "1", "B": "true", "C": "007", "c": "yes", "e": "0x1F", "f": "1e3", "n": 5, "p": True}
assert env == want, env
assert d["resources"][0]["config"] == "42", d["resources"]
)";
  auto cmd = "python3 -c '" + script + "' " + gfile.string();
  BOOST_TEST(std::system(cmd.c_str()) == 0, slurp(gfile));
  k.stop();
}

// Issue 15: a group is printable UTF-8 text (YAML 1.2's c-printable). yaml-cpp's parser
// takes control bytes and bytes that are not UTF-8, but its writer cannot write them so
// that they read back: refused at load with line and column, the group in force kept.
BOOST_AUTO_TEST_CASE(text_that_is_not_printable_utf8_is_refused_with_its_position) {
  const std::string head = "name: home\nfunctions:\n  - name: brain\n    config: {env: {A: '";
  const std::string tail = "'}}\n";
  struct bad_case {
    std::string bytes, what;
  };
  std::vector<bad_case> bad = {
    {std::string{"x\0y", 3}, "control character U+0000"},
    {"x\x01y", "control character U+0001"},
    {"x\x1b[0m", "control character U+001B"},
    {"x\x7fy", "control character U+007F"},
    {"x\xc2\x80y", "control character U+0080"},         // C1, as UTF-8
    {"x\xef\xbf\xbey", "noncharacter U+FFFE"},           // YAML excludes it
    {"x\xc2\x85y", "line break U+0085"},  // NEL: libyaml (YAML 1.1) breaks the line there
    {"x\xe2\x80\xa8y", "line break U+2028"},
    {"x\xe2\x80\xa9y", "line break U+2029"},
    {"x\xef\xbb\xbfy", "byte order mark U+FEFF past the start"}, // YAML: only at the start
    {"x\xffy", "not UTF-8 (byte 0xFF)"},
    {"x\xc3y", "not UTF-8 (byte 0xC3)"},                // a sequence cut short
    {"x\xc0\xafy", "not UTF-8 (byte 0xC0)"},            // overlong '/'
    {"x\xed\xa0\x80y", "not UTF-8 (byte 0xED)"},        // a UTF-16 surrogate
    {"x\xf4\x90\x80\x80y", "not UTF-8 (byte 0xF4)"},    // over U+10FFFF
  };
  for (const auto& c : bad) {
    // Line 4, column 25: the byte after `x` (columns count characters).
    auto what = error_of("bad.yaml", head + c.bytes + tail);
    BOOST_TEST(contains(what, "bad.yaml:4:25: " + c.what), what);
    BOOST_TEST(contains(what, "printable UTF-8"), what);
  }
  // Characters, not bytes, are counted: two 2-byte letters before it.
  auto what = error_of("wide.yaml", head + "\xc3\xa9\xc3\xa9\x01" + tail);
  BOOST_TEST(contains(what, "wide.yaml:4:26: control character U+0001"), what);
  // Escapes in a double-quoted scalar are YAML's own way to say such a character: they
  // load (the writer escapes them again), as do tab, CR, LF and any printable UTF-8.
  auto ok = load_group(dir.write("ok.yaml", "name: home\r\nfunctions:\r\n  - name: brain\r\n"
                                            "    config: {env: {A: \"x\\x01\\0y\", B: \"\t\","
                                            " C: \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}}\r\n"));
  BOOST_REQUIRE_MESSAGE(ok, test::error_text(ok));
  auto env = YAML::Load(ok->functions(0).config_yaml())["env"];
  BOOST_TEST(env["A"].as<std::string>() == std::string("x\x01\0y", 4));
  BOOST_TEST(env["C"].as<std::string>() == "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
  // Written back as a deployment writes it, it loads again the same.
  auto again = parse_group(to_yaml(group_document(*ok)), "again");
  BOOST_REQUIRE_MESSAGE(again, test::error_text(again));
  ok->clear_source_file();
  BOOST_TEST(again->SerializeAsString() == ok->SerializeAsString());
}

// Positions are an editor's: a byte order mark at the start takes no column (and is
// accepted), a lone CR ends a line as LF and CRLF do, and a character of 2, 3 or 4 bytes
// is one column. UTF-16 and UTF-32 text (their marks) is said to be such.
BOOST_AUTO_TEST_CASE(positions_count_as_an_editor_does) {
  const std::string bom = "\xef\xbb\xbf";
  auto g = load_group(dir.write("bom.yaml", bom + "name: home\n"));
  BOOST_REQUIRE_MESSAGE(g, test::error_text(g));
  BOOST_TEST(g->name() == "home");
  auto what = error_of("bom.yaml", bom + "name: home\x01\n");
  BOOST_TEST(contains(what, "bom.yaml:1:11: control character U+0001"), what);
  what = error_of("cr.yaml", "a\rb\r\x01");
  BOOST_TEST(contains(what, "cr.yaml:3:1: control character U+0001"), what);
  what = error_of("crlf.yaml", "a\r\nb\r\n\x01");
  BOOST_TEST(contains(what, "crlf.yaml:3:1: control character U+0001"), what);
  // é (2 bytes), € (3), 😀 (4): columns 1-3, the fault in column 4.
  what = error_of("wide.yaml", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x01");
  BOOST_TEST(contains(what, "wide.yaml:1:4: control character U+0001"), what);
  for (const auto& [marked, form] :
       {std::pair{std::string{"\xff\xfen\0"}, "UTF-16"}, std::pair{std::string{"\xfe\xff\0n"}, "UTF-16"},
        std::pair{std::string{"\xff\xfe\0\0n\0\0\0", 8}, "UTF-32"},
        std::pair{std::string{"\0\0\xfe\xff\0\0\0n", 8}, "UTF-32"}}) {
    what = error_of("wide.yaml", marked);
    BOOST_TEST(contains(what, std::string{form} + " text (its byte order mark), not UTF-8"), what);
  }
}

// The inputs fuzz_group found that yaml-cpp's writer could not round-trip
// (tests/fuzz/regressions/group/): each is refused at load now, with the place at fault.
BOOST_AUTO_TEST_CASE(the_fuzzers_round_trip_inputs_are_refused_at_load) {
  const std::filesystem::path regressions = GROVE_FUZZ_REGRESSIONS "/group";
  struct regression {
    const char* file;
    std::string at;
  };
  for (const auto& r : {regression{"nul-in-quoted-scalar", ":5:29: control character U+0000"},
                        regression{"bad-utf8-round-trip", ":6:1: control character U+0000"},
                        regression{"long-key-control-bytes", ":5:21: not UTF-8 (byte 0xD6)"},
                        regression{"subject-with-line-break", "subject"}}) {
    auto g = load_group(regressions / r.file);
    BOOST_REQUIRE_MESSAGE(!g, r.file);
    BOOST_TEST(g.error() == errc::invalid_config);
    BOOST_TEST(contains(describe(g.error()), r.at), r.file << ": " << describe(g.error()));
  }
}

// A group file edited to hold a control byte is refused by the kernel with its place;
// the group in force stays, and the set of such a document too.
BOOST_AUTO_TEST_CASE(the_kernel_keeps_its_group_when_an_edit_holds_a_control_byte) {
  auto gfile = dir.write("g.yaml", good);
  auto p = deployer_profile(gfile);
  kernel k{std::move(p), kernel_options{false, false}};
  BOOST_REQUIRE(!k.start());
  dir.write("g.yaml", "name: home2\ndevices: [{thing: \"la\x02mp\"}]\n");
  auto err = k.reload_group();
  BOOST_TEST(err == errc::invalid_config);
  BOOST_TEST(contains(describe(err), "g.yaml:2:22: control character U+0002"), describe(err));
  BOOST_TEST(k.group()->name() == "home");
  dir.write("g.yaml", good);
  BOOST_REQUIRE(!k.reload_group());
  auto before = slurp(gfile);
  auto r = k.set_group("deployer", "name: \"x\x1b\"\n");
  BOOST_REQUIRE(!r);
  BOOST_TEST(contains(test::error_text(r), "group:1:9: control character U+001B"),
             test::error_text(r));
  BOOST_TEST(slurp(gfile) == before);
  BOOST_TEST(k.group()->name() == "home");
  k.stop();
}

BOOST_AUTO_TEST_CASE(kernel_refuses_to_start_on_a_bad_group) {
  auto p = test::make_profile(dir.path());
  p.group_file = dir.write("g.yaml", "name: g\ndevices: 5\n");
  kernel k{std::move(p), kernel_options{false, false}};
  auto err = k.start();
  BOOST_TEST(err == errc::invalid_config);
  BOOST_TEST(contains(describe(err), "devices: expected a list"), describe(err));
}

BOOST_AUTO_TEST_SUITE_END()
