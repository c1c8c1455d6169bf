#define BOOST_TEST_MODULE config_test
#include <boost/test/unit_test.hpp>

#include "grove/errors.hpp"
#include "grove/kernel/config.hpp"
#include "test_util.hpp"

using namespace grove;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct fixture {
  test::temp_dir dir;

  caf::expected<image_profile> load(const std::string& text) {
    auto file = dir.write("profile.yaml", text);
    profile_overrides ov;
    ov.default_plugin_dir = dir.path() / "plugins";
    return load_profile(file, ov);
  }

  // Loads `text`, expects an invalid_config error, returns its text.
  std::string error_of(const std::string& text) {
    auto p = load(text);
    BOOST_REQUIRE(!p);
    BOOST_TEST(p.error() == errc::invalid_config);
    return describe(p.error());
  }

  // Loads `text`, expects an invalid_config error whose text has each of `parts`.
  void refused_naming(const std::string& text, std::initializer_list<std::string> parts) {
    auto err = error_of(text);
    for (const auto& part : parts)
      BOOST_TEST(contains(err, part), err);
  }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(profile, fixture)

BOOST_AUTO_TEST_CASE(valid_profile_with_defaults) {
  auto p = load(R"(kernel:
  write_dir: /tmp/grove-x
  bus: {queue_capacity: 42, overflow: block}
plugins:
  - name: echo
    log_level: debug
    queue_capacity: 7
    config: {prefix: ">"}
  - name: heartbeat
)");
  BOOST_REQUIRE(p);
  BOOST_TEST(p->write_dir == "/tmp/grove-x");
  BOOST_TEST(p->control_socket == "/tmp/grove-x/run/control.sock");
  BOOST_TEST(p->plugin_dir == dir.path() / "plugins");
  BOOST_TEST(p->log_level == "info");
  BOOST_TEST(p->queue.capacity == 42u);
  BOOST_TEST(to_string(p->queue.overflow) == std::string{"block"});
  BOOST_TEST(p->restart.max_failures == 5u);
  BOOST_TEST(p->release_code_pages);
  BOOST_TEST(p->max_payload_bytes == default_max_payload_bytes);
  BOOST_TEST(default_max_payload_bytes == 15u * 1024 * 1024);
  BOOST_REQUIRE_EQUAL(p->plugins.size(), 2u);
  BOOST_TEST(p->plugins[0].name == "echo");
  BOOST_TEST(p->plugins[0].log_level == "debug");
  BOOST_TEST(p->plugins[0].queue.capacity == 7u);
  BOOST_TEST(to_string(p->plugins[0].queue.overflow) == std::string{"block"});
  BOOST_TEST(p->plugins[0].line == 5);
  BOOST_TEST((*p->plugins[0].config)["prefix"].as<std::string>() == ">");
  BOOST_TEST(p->plugins[1].queue.capacity == 42u);
}

BOOST_AUTO_TEST_CASE(overrides_win) {
  auto file = dir.write("p.yaml", "kernel: {write_dir: /nowhere}\n");
  profile_overrides ov;
  ov.write_dir = dir.path() / "w";
  ov.plugin_dir = dir.path() / "pd";
  auto p = load_profile(file, ov);
  BOOST_REQUIRE(p);
  BOOST_TEST(p->write_dir == dir.path() / "w");
  BOOST_TEST(p->plugin_dir == dir.path() / "pd");
}

BOOST_AUTO_TEST_CASE(idle_poll_attempts_are_caf_s_unless_set) {
  auto p = load("kernel: {}\n");
  BOOST_REQUIRE(p);
  BOOST_TEST(p->idle_poll_attempts == 500u);
  p = load("kernel: {idle_poll_attempts: 20}\n");
  BOOST_REQUIRE(p);
  BOOST_TEST(p->idle_poll_attempts == 20u);
  refused_naming("kernel: {idle_poll_attempts: -1}\n", {"kernel.idle_poll_attempts"});
}

BOOST_AUTO_TEST_CASE(worker_timer_slack_is_a_microsecond_unless_set) {
  auto p = load("kernel: {}\n");
  BOOST_REQUIRE(p);
  BOOST_TEST(p->worker_timer_slack_ns == 1000u);
  p = load("kernel: {worker_timer_slack_ns: 50000}\n");
  BOOST_REQUIRE(p);
  BOOST_TEST(p->worker_timer_slack_ns == 50000u);
  refused_naming("kernel: {worker_timer_slack_ns: 0}\n", {"kernel.worker_timer_slack_ns"});
}

BOOST_AUTO_TEST_CASE(release_code_pages_can_be_turned_off) {
  auto p = load("kernel: {release_code_pages: false}\n");
  BOOST_REQUIRE(p);
  BOOST_TEST(!p->release_code_pages);
  refused_naming("kernel: {release_code_pages: sometimes}\n", {"kernel.release_code_pages"});
}

BOOST_AUTO_TEST_CASE(unknown_key_names_file_line_field) {
  // write_dir: the error lists the allowed keys.
  refused_naming("kernel:\n  log_level: info\n  wrtie_dir: /x\n",
                 {"profile.yaml:3:3", "kernel.wrtie_dir", "unknown key", "write_dir"});
}

BOOST_AUTO_TEST_CASE(unknown_top_level_key) {
  refused_naming("kernel: {}\nplugin:\n  - name: x\n", {":2:1", "plugin: unknown key"});
}

BOOST_AUTO_TEST_CASE(wrong_type) {
  refused_naming("kernel:\n  bus:\n    queue_capacity: lots\n",
                 {":3:21", "kernel.bus.queue_capacity", "expected an integer, got 'lots'"});
  refused_naming("plugins: {name: x}\n", {"plugins: expected a list"});
  refused_naming("kernel: [1, 2]\n", {"kernel: expected a map"});
}

BOOST_AUTO_TEST_CASE(out_of_range_and_enum) {
  refused_naming("kernel:\n  bus: {queue_capacity: 0}\n", {"must be at least 1"});
  refused_naming("kernel:\n  log_level: loud\n", {"kernel.log_level: must be one of"});
  // [payload-1] The payload limit stays below the plugin-host frame cap (64 MiB).
  refused_naming("kernel:\n  bus: {max_payload_bytes: 67108864}\n",
                 {"kernel.bus.max_payload_bytes: must be at most 66060288"});
  refused_naming("kernel:\n  bus: {max_payload_bytes: 100}\n", {"kernel.bus.max_payload_bytes"});
  // [claims-4] The kernel's source is nobody's grant.
  refused_naming("plugins:\n  - name: a\n    may_claim: [kernel]\n",
                 {"plugins[0].may_claim[0]: 'kernel' is the kernel's own source"});
  auto p = load("kernel:\n  bus: {max_payload_bytes: 2048}\n");
  BOOST_REQUIRE(p);
  BOOST_TEST(p->max_payload_bytes == 2048u);
  refused_naming("plugins:\n  - name: a\n    overflow: explode\n", {"plugins[0].overflow"});
}

BOOST_AUTO_TEST_CASE(metrics_endpoint_settings) {
  auto p = load("kernel: {log_level: info}\n");
  BOOST_REQUIRE(p);
  BOOST_TEST(!p->metrics.enabled); // off by default
  p = load("kernel:\n  metrics: {bind: \"::1\", port: 9464}\n");
  BOOST_REQUIRE_MESSAGE(p, test::error_text(p));
  BOOST_TEST(p->metrics.enabled);
  BOOST_TEST(p->metrics.bind == "::1");
  BOOST_TEST(p->metrics.port == 9464);
  refused_naming("kernel:\n  log_level: info\n  metrics:\n    port: 70000\n",
                 {"profile.yaml:4:", "kernel.metrics.port"});
  refused_naming("kernel:\n  metrics:\n    bind: localhost\n    port: 9464\n",
                 {"profile.yaml:3:", "kernel.metrics.bind", "numeric"});
  refused_naming("kernel:\n  metrics: {port: 9464, path: /x}\n", {"kernel.metrics.path"});
}

BOOST_AUTO_TEST_CASE(missing_required) {
  refused_naming("plugins:\n  - config: {a: 1}\n",
                 {"plugins[0].name: required key is missing", ":2:5"});
}

BOOST_AUTO_TEST_CASE(duplicates) {
  refused_naming("plugins:\n  - name: a\n  - name: a\n", {":3:11", "listed twice"});
  refused_naming("kernel:\n  log_level: info\n  log_level: debug\n", {"duplicate key"});
}

BOOST_AUTO_TEST_CASE(bad_plugin_name) {
  refused_naming("plugins:\n  - name: ../../etc/evil\n", {"plugins[0].name"});
}

BOOST_AUTO_TEST_CASE(syntax_error_has_position) {
  refused_naming("kernel:\n  log_level: [info\n", {"profile.yaml:"});
}

BOOST_AUTO_TEST_CASE(not_a_map_and_missing_file) {
  refused_naming("- a\n- b\n", {"must be a YAML map"});
  profile_overrides ov;
  auto p = load_profile(dir.path() / "absent.yaml", ov);
  BOOST_REQUIRE(!p);
  BOOST_TEST(contains(describe(p.error()), "no such file"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(schemas)

BOOST_AUTO_TEST_CASE(defaults_fill_in_and_nested_maps) {
  auto s = config_schema::parse(R"(
port: {type: int, default: 8883, min: 1, max: 65535}
host: {type: string, required: true}
tls:
  type: map
  keys:
    verify: {type: bool, default: true}
tags: {type: list, items: {type: string}}
ratio: {type: float, min: 0, max: 1}
extra: {type: map, open: true}
)",
                                "schema");
  BOOST_REQUIRE(s);
  auto v = s->validate(YAML::Load("{host: h, tags: [a, b], ratio: 0.5, extra: {x: 1}}"),
                       "f", "cfg");
  BOOST_REQUIRE(v);
  BOOST_TEST((*v)["port"].as<int>() == 8883);
  BOOST_TEST((*v)["tls"]["verify"].as<bool>() == true);
  BOOST_TEST((*v)["tags"][1].as<std::string>() == "b");
  BOOST_TEST((*v)["extra"]["x"].as<int>() == 1);
  auto bad = s->validate(YAML::Load("{host: h, tags: [a, [b]]}"), "f", "cfg");
  BOOST_REQUIRE(!bad);
  BOOST_TEST(contains(describe(bad.error()), "cfg.tags[1]: expected string"));
  bad = s->validate(YAML::Load("{host: h, ratio: 2.5}"), "f", "cfg");
  BOOST_REQUIRE(!bad);
  BOOST_TEST(contains(describe(bad.error()), "cfg.ratio: must be at most 1"));
  bad = s->validate(YAML::Load("{host: h, tls: {verify: maybe}}"), "f", "cfg");
  BOOST_REQUIRE(!bad);
  BOOST_TEST(contains(describe(bad.error()), "cfg.tls.verify: expected true or false"));
  bad = s->validate(YAML::Load("{port: 1}"), "f", "cfg");
  BOOST_REQUIRE(!bad);
  BOOST_TEST(contains(describe(bad.error()), "cfg.host: required key is missing"));
}

BOOST_AUTO_TEST_CASE(broken_schemas_are_refused) {
  BOOST_TEST(!config_schema::parse("a: {type: integer}", "s").engaged());
  BOOST_TEST(!config_schema::parse("a: {type: int, colour: red}", "s").engaged());
  BOOST_TEST(!config_schema::parse("a: {type: string, min: 1}", "s").engaged());
  BOOST_TEST(!config_schema::parse("a: {type: int, keys: {}}", "s").engaged());
  BOOST_TEST(!config_schema::parse("a: 5", "s").engaged());
  BOOST_TEST(!config_schema::parse("a: {type: [", "s").engaged());
  BOOST_TEST(config_schema::parse("", "s").engaged());
}

BOOST_AUTO_TEST_CASE(empty_schema_accepts_only_nothing) {
  auto s = config_schema::empty();
  BOOST_TEST(s.validate(YAML::Node{}, "f", "cfg").engaged());
  BOOST_TEST(s.validate(YAML::Load("{}"), "f", "cfg").engaged());
  auto bad = s.validate(YAML::Load("{a: 1}"), "f", "cfg");
  BOOST_REQUIRE(!bad);
  BOOST_TEST(contains(describe(bad.error()), "no keys allowed"));
}

BOOST_AUTO_TEST_SUITE_END()

// yaml-cpp 0.7 writes a scalar read quoted plain: '1' came back as the int 1, 'yes' as a
// bool. to_yaml keeps it quoted, what is plain stays plain, and shared nodes stay aliases.
BOOST_AUTO_TEST_CASE(to_yaml_keeps_quoted_scalars_quoted) {
  const char* quoted[] = {"1", "true", "007", "yes", "0x1F", "1e3", "null", "~", "", "a: b"};
  std::string text = "{";
  for (size_t i = 0; i < std::size(quoted); ++i)
    text += "q" + std::to_string(i) + ": '" + quoted[i] + "', ";
  text += "'4': plain, n: 5, b: yes, z: ~, l: ['2', 3], a: &x {k: '8'}, c: *x}";
  auto node = parse_yaml(text, "<test>");
  BOOST_REQUIRE_MESSAGE(node, test::error_text(node));
  auto out = to_yaml(*node);
  auto back = YAML::Load(out);
  for (size_t i = 0; i < std::size(quoted); ++i) {
    auto v = back["q" + std::to_string(i)];
    BOOST_TEST(v.Tag() == "!", quoted[i] << " in " << out);
    BOOST_TEST(v.Scalar() == quoted[i], out);
  }
  for (auto key : {"n", "b"})
    BOOST_TEST(back[key].Tag() == "?", key << " in " << out);
  BOOST_TEST(back["n"].as<int>() == 5);
  BOOST_TEST(back["z"].IsNull());
  BOOST_TEST(back["4"].Scalar() == "plain");
  BOOST_TEST(back["l"][0].Tag() == "!", out);
  BOOST_TEST(back["l"][1].Tag() == "?", out);
  BOOST_TEST(back["c"]["k"].Tag() == "!", out);
  BOOST_TEST(back["c"].is(back["a"]), out); // an alias, not a copy
  BOOST_TEST(to_yaml(back) == out); // a fixed point: a re-emitted group does not drift
  BOOST_TEST(to_yaml(*parse_yaml("'5'", "<test>")) == "\"5\"");
}

// A recursive alias is written once, as yaml-cpp's own writer does.
BOOST_AUTO_TEST_CASE(to_yaml_writes_a_recursive_alias) {
  auto node = parse_yaml("&a [*a, '1']", "<test>");
  BOOST_REQUIRE_MESSAGE(node, test::error_text(node));
  BOOST_TEST(to_yaml(*node) == R"(&1 [*1, "1"])");
}

