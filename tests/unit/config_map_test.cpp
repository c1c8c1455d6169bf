// grove::config_map: the schema text it generates goes through the kernel's own
// validator (file:line:col errors, defaults), the parser fills the struct from the
// validated YAML, the Markdown table, declaration defects, and the heartbeat README.

#define BOOST_TEST_MODULE config_map_test
#include <boost/test/unit_test.hpp>

#include <optional>

#include "grove/config_map.hpp"
#include "grove/kernel/config.hpp"
#include "grove/kernel/plugin_host.hpp"
#include "test_util.hpp"

using namespace grove;

namespace {

enum class unit { celsius, fahrenheit };

struct threshold {
  std::string name;
  double above = 0;
  std::optional<int> hold_s;

  static config_map<threshold> map() {
    return config_map<threshold>{}
      .key_no_default("name", &threshold::name, required, "what to call it")
      .key("above", &threshold::above, 0.5, "alarm above this")
      .key_no_default("hold_s", &threshold::hold_s, range{0, 60}, "optional hold time");
  }
};

struct topics {
  std::string data;
  std::string alarm;

  static config_map<topics> map() {
    return config_map<topics>{}
      .key("data", &topics::data, "sensor/data", "readings")
      .key("alarm", &topics::alarm, "sensor/alarm", "alarms");
  }
};

struct sensor {
  uint16_t port = 0;
  double scale = 0;
  bool enabled = false;
  unit u = unit::celsius;
  std::string mode;
  std::chrono::milliseconds period{};
  std::filesystem::path calibration;
  std::vector<std::string> tags;
  topics out;
  std::vector<threshold> thresholds;

  static config_map<sensor> map() {
    return config_map<sensor>{}
      .key_no_default("port", &sensor::port, required, range{1, 65535}, "TCP port")
      .key("scale", &sensor::scale, 1.25, range::at_least(0), "multiplier")
      .key("enabled", &sensor::enabled, true, "read at all")
      .key("unit", &sensor::u, unit::celsius,
           names<unit>{{"celsius", unit::celsius}, {"fahrenheit", unit::fahrenheit}},
           "unit of readings")
      .key("mode", &sensor::mode, "fast", one_of{"fast", "safe"}, "how | to read")
      .key("period_ms", &sensor::period, 250, range{1, 10000}, "poll period")
      .key("calibration", &sensor::calibration, "cal.json", "calibration file")
      .key("tags", &sensor::tags, std::vector<std::string>{"a", "b"}, "labels")
      .section("topics", &sensor::out, topics::map(), "where readings go")
      .list("thresholds", &sensor::thresholds, threshold::map(), "alarm levels")
      .validate([](const sensor& s) -> caf::error {
        if (s.mode == "safe" && s.period.count() < 100)
          return make_error(errc::invalid_config, "period_ms: below 100 in safe mode");
        return {};
      });
  }
};

std::string error_of(const std::string& yaml) {
  auto x = sensor::map().load(yaml, "image.yaml", "/state");
  BOOST_REQUIRE(!x);
  BOOST_TEST(x.error() == errc::invalid_config);
  return describe(x.error());
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

} // namespace

BOOST_AUTO_TEST_CASE(schema_text_passes_the_kernel_self_check) {
  auto m = sensor::map();
  BOOST_TEST(m.defect() == "");
  auto schema = config_schema::parse(m.schema(), "sensor (config schema)");
  BOOST_REQUIRE_MESSAGE(schema, test::error_text(schema) << "\n" << m.schema());
  auto port = schema->node()["port"];
  BOOST_TEST(port["type"].Scalar() == "int");
  BOOST_TEST(port["required"].as<bool>());
  BOOST_TEST(port["max"].Scalar() == "65535");
  BOOST_TEST(schema->node()["scale"]["default"].Scalar() == "1.25");
  BOOST_TEST(schema->node()["unit"]["enum"].size() == 2u);
  BOOST_TEST(schema->node()["topics"]["keys"]["alarm"]["default"].Scalar() == "sensor/alarm");
  BOOST_TEST(schema->node()["thresholds"]["items"]["keys"]["name"]["required"].as<bool>());
}

BOOST_AUTO_TEST_CASE(defaults_are_filled_from_the_one_declaration) {
  auto s = sensor::map().load("port: 4000", "image.yaml", "/state");
  BOOST_REQUIRE_MESSAGE(s, test::error_text(s));
  BOOST_TEST(s->port == 4000);
  BOOST_TEST(s->scale == 1.25);
  BOOST_TEST(s->enabled);
  BOOST_TEST((s->u == unit::celsius));
  BOOST_TEST(s->mode == "fast");
  BOOST_TEST(s->period.count() == 250);
  BOOST_TEST(s->calibration == "/state/cal.json");
  BOOST_TEST((s->tags == std::vector<std::string>{"a", "b"}));
  BOOST_TEST(s->out.data == "sensor/data");
  BOOST_TEST(s->out.alarm == "sensor/alarm");
  BOOST_TEST(s->thresholds.empty());
  // The kernel's own fill (what a plugin's ctx.config() holds) parses the same.
  auto schema = config_schema::parse(sensor::map().schema(), "s");
  BOOST_REQUIRE(schema);
  auto filled = schema->validate(YAML::Load("port: 4000"), "image.yaml", "");
  BOOST_REQUIRE(filled);
  auto again = sensor::map().parse(*filled, "/state");
  BOOST_REQUIRE(again);
  BOOST_TEST(again->calibration == s->calibration);
  BOOST_TEST(again->scale == s->scale);
  BOOST_TEST(again->out.alarm == s->out.alarm);
}

BOOST_AUTO_TEST_CASE(values_nested_sections_lists_and_enums) {
  auto s = sensor::map().load(R"(port: 1
scale: 0
enabled: false
unit: fahrenheit
mode: safe
period_ms: 100
calibration: /etc/cal.json
tags: [x]
topics: {alarm: a/b}
thresholds:
  - {name: hot, above: 70.5, hold_s: 3}
  - {name: cold}
)",
                              "image.yaml", "/state");
  BOOST_REQUIRE_MESSAGE(s, test::error_text(s));
  BOOST_TEST(!s->enabled);
  BOOST_TEST(s->scale == 0.0);
  BOOST_TEST((s->u == unit::fahrenheit));
  BOOST_TEST(s->calibration == "/etc/cal.json");
  BOOST_TEST((s->tags == std::vector<std::string>{"x"}));
  BOOST_TEST(s->out.data == "sensor/data");
  BOOST_TEST(s->out.alarm == "a/b");
  BOOST_REQUIRE_EQUAL(s->thresholds.size(), 2u);
  BOOST_TEST(s->thresholds[0].name == "hot");
  BOOST_TEST(s->thresholds[0].above == 70.5);
  BOOST_TEST((s->thresholds[0].hold_s == std::optional<int>{3}));
  BOOST_TEST(s->thresholds[1].name == "cold");
  BOOST_TEST(s->thresholds[1].above == 0.5);
  BOOST_TEST(!s->thresholds[1].hold_s.has_value());
}

BOOST_AUTO_TEST_CASE(errors_keep_file_line_col_and_field) {
  BOOST_TEST(contains(error_of("port: 4000\nperiod_ms: 0\n"),
                      "image.yaml:2:12: period_ms: must be at least 1, got 0"));
  BOOST_TEST(contains(error_of("port: 4000\nunit: kelvin\n"),
                      "image.yaml:2:7: unit: must be one of celsius, fahrenheit, got 'kelvin'"));
  BOOST_TEST(contains(error_of("port: x\n"), "image.yaml:1:7: port: expected an integer"));
  BOOST_TEST(contains(error_of("scale: 2\n"), "port: required key is missing"));
  BOOST_TEST(contains(error_of("port: 1\ntopics: {dta: x}\n"),
                      "image.yaml:2:10: topics.dta: unknown key (allowed: data, alarm)"));
  BOOST_TEST(contains(error_of("port: 1\nthresholds:\n  - {above: 1}\n"),
                      "image.yaml:3:5: thresholds[0].name: required key is missing"));
  BOOST_TEST(contains(error_of("port: 1\nthresholds: [{name: n, hold_s: 61}]\n"),
                      "thresholds[0].hold_s: must be at most 60"));
  BOOST_TEST(contains(error_of("port: 1\nport: 2\n"), "port: duplicate key"));
  BOOST_TEST(contains(error_of("port: [1\n"), "image.yaml:"));
  // The cross-field check runs after the keys are read.
  BOOST_TEST(contains(error_of("port: 1\nmode: safe\nperiod_ms: 50\n"),
                      "period_ms: below 100 in safe mode"));
}

BOOST_AUTO_TEST_CASE(values_that_do_not_fit_the_member_are_refused) {
  struct small {
    uint8_t level = 0;
    static config_map<small> map() {
      return config_map<small>{}.key("level", &small::level, 1, "no range declared");
    }
  };
  auto ok = small::map().load("level: 255");
  BOOST_REQUIRE(ok);
  BOOST_TEST(ok->level == 255);
  auto bad = small::map().load("level: 256");
  BOOST_REQUIRE(!bad);
  BOOST_TEST(contains(describe(bad.error()), "level: 256 does not fit"), describe(bad.error()));
}

BOOST_AUTO_TEST_CASE(a_bound_that_is_another_key_is_checked_by_the_kernel) {
  // at_least_key (schema min_key): the value must be at least the other key's. The
  // kernel's validator checks it with defaults filled in, at the key's line when given,
  // else at the other key's, naming both; the table shows it.
  struct queue {
    int64_t frame = 0;
    int64_t room = 0;
    static config_map<queue> map() {
      return config_map<queue>{}
        .key("frame", &queue::frame, 100, range{1, 1000}, "largest frame")
        .key("room", &queue::room, 200, range{1, 10000}, at_least_key{"frame"},
             "queue room");
    }
  };
  auto m = queue::map();
  BOOST_TEST(m.defect() == "");
  BOOST_TEST(bool(config_schema::parse(m.schema(), "queue (config schema)")));
  BOOST_TEST(bool(m.load("frame: 300\nroom: 300\n")));
  auto given = m.load("frame: 300\nroom: 250\n", "image.yaml");
  BOOST_REQUIRE(!given);
  BOOST_TEST(contains(describe(given.error()),
                      "image.yaml:2:7: room: must be at least frame (300), got 250"),
             describe(given.error()));
  auto dflt = m.load("frame: 300\n", "image.yaml");
  BOOST_REQUIRE(!dflt);
  BOOST_TEST(contains(describe(dflt.error()),
                      "image.yaml:1:8: room: must be at least frame (300), got 200 (its "
                      "default)"),
             describe(dflt.error()));
  BOOST_TEST(contains(m.markdown(), "| `room` | int | `200` | 1–10000, ≥ `frame` | queue room |"),
             m.markdown());
  // A min_key that names no number key beside it makes the schema invalid.
  for (auto text : {"a: {type: int, min_key: b}\n", "a: {type: int, min_key: a}\n",
                    "a: {type: int, min_key: b}\nb: {type: string}\n",
                    "a: {type: string, min_key: b}\nb: {type: int}\n"}) {
    auto bad = config_schema::parse(text, "bad (config schema)");
    BOOST_TEST(!bad, text);
  }
}

BOOST_AUTO_TEST_CASE(declaration_defects_make_the_schema_refused) {
  struct bad {
    int n = 0;
    std::string s;
    static config_map<bad> out_of_range() {
      return config_map<bad>{}.key("n", &bad::n, 0, range{1, 10}, "default below min");
    }
    static config_map<bad> not_a_choice() {
      return config_map<bad>{}.key("s", &bad::s, "c", one_of{"a", "b"}, "default not allowed");
    }
    static config_map<bad> twice() {
      return config_map<bad>{}.key("n", &bad::n, 1, "one").key("n", &bad::n, 2, "two");
    }
  };
  struct outer {
    bad inner;
    static config_map<outer> section_twice() {
      return config_map<outer>{}
        .section("inner", &outer::inner, config_map<bad>{}, "one")
        .section("inner", &outer::inner, config_map<bad>{}, "two");
    }
    static config_map<outer> defect_inside() {
      return config_map<outer>{}.section("inner", &outer::inner, bad::out_of_range(), "x");
    }
  };
  BOOST_TEST(outer::section_twice().defect() == "inner: declared twice");
  BOOST_TEST(outer::defect_inside().defect() == "inner.n: default 0 is outside its range");
  for (auto m : {bad::out_of_range(), bad::not_a_choice(), bad::twice()}) {
    BOOST_TEST(!m.defect().empty());
    auto schema = config_schema::parse(m.schema(), "bad (config schema)");
    BOOST_REQUIRE(!schema);
    BOOST_TEST(contains(describe(schema.error()), "config map defect (" + m.defect() + ")"),
               describe(schema.error()));
  }
}

BOOST_AUTO_TEST_CASE(markdown_table_rows) {
  auto md = sensor::map().markdown();
  BOOST_TEST(contains(md, "| key | type | default | range | meaning |\n"), md);
  BOOST_TEST(contains(md, "| `port` | int | required | 1–65535 | TCP port |\n"), md);
  BOOST_TEST(contains(md, "| `scale` | float | `1.25` | ≥ 0 | multiplier |\n"), md);
  BOOST_TEST(contains(md, "| `unit` | string | `celsius` | `celsius`, `fahrenheit` | unit of "
                          "readings |\n"),
             md);
  BOOST_TEST(contains(md, "| `mode` | string | `fast` | `fast`, `safe` | how \\| to read |\n"),
             md);
  BOOST_TEST(contains(md, "| `tags` | list of string | `[a, b]` |  | labels |\n"), md);
  BOOST_TEST(contains(md, "| `topics` | map | – |  | where readings go |\n"), md);
  BOOST_TEST(contains(md, "| `topics.alarm` | string | `sensor/alarm` |  | alarms |\n"), md);
  BOOST_TEST(contains(md, "| `thresholds[].hold_s` | int | – | 0–60 | optional hold time |\n"),
             md);
}

BOOST_AUTO_TEST_CASE(heartbeat_exports_its_map_and_its_readme_matches) {
  auto lib = open_plugin_library(HEARTBEAT_PLUGIN, "heartbeat");
  BOOST_REQUIRE_MESSAGE(lib, test::error_text(lib));
  auto schema = (*lib)->schema.node();
  BOOST_TEST(schema["interval_ms"]["default"].Scalar() == "1000");
  BOOST_TEST(schema["topic"]["default"].Scalar() == "grove/heartbeat");
  auto table = config_table((*lib)->schema);
  BOOST_TEST(test::readme_config_table(HEARTBEAT_README) == table,
             "sdk/examples/heartbeat/README.md's table is stale; put `groved "
             "--describe-config heartbeat` between the config-table markers:\n"
               << table);
}

BOOST_AUTO_TEST_CASE(typed_plugin_gets_its_struct_and_live_changes) {
  auto lib = (test::test_plugin_dir() / "libtyped.so").string();
  // A failed cross-field check is init's error: the load fails naming the key.
  grove::testing::harness refused{lib, "{prefix: bad}"};
  auto err = refused.start();
  BOOST_REQUIRE(err);
  BOOST_TEST(contains(describe(err), "prefix: 'bad' is refused on purpose"), describe(err));

  grove::testing::harness h{lib, "{prefix: 'a-'}"};
  auto out = h.subscribe("test/typed/out");
  BOOST_REQUIRE(!h.start());
  h.publish("test/typed/in", "x");
  BOOST_REQUIRE(out->wait_for(1));
  BOOST_TEST(out->messages()[0].payload() == "a-x");

  // A live change reaches reconfigure(const Config&), and config() follows it.
  plugin_spec spec;
  spec.name = "typed";
  spec.file = "image.yaml";
  spec.config = make_yaml(YAML::Load("{prefix: 'b-'}"));
  auto r = h.kernel().host().reconfigure(spec);
  BOOST_REQUIRE_MESSAGE(r, test::error_text(r));
  BOOST_TEST(contains(*r, "applied live"), *r);
  h.publish("test/typed/in", "y");
  BOOST_REQUIRE(out->wait_for(2));
  BOOST_TEST(out->messages()[1].payload() == "b-y");

  // A change its check refuses leaves the configuration in force as it was.
  spec.config = make_yaml(YAML::Load("{prefix: bad}"));
  r = h.kernel().host().reconfigure(spec);
  auto text = r ? *r : describe(r.error());
  BOOST_TEST(contains(text, "prefix: 'bad' is refused on purpose"), text);
  h.publish("test/typed/in", "z");
  BOOST_REQUIRE(out->wait_for(3));
  BOOST_TEST(out->messages()[2].payload() == "b-z");
}
