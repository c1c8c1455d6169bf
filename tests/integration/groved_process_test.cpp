#define BOOST_TEST_MODULE groved_process_test
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include <sys/stat.h>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "../unit/test_util.hpp"
#include "process_util.hpp"

// groved and grovectl as an operator runs them: real processes, a real Unix socket.

using namespace grove;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

/// The running_daemon profile: echo (answering with `prefix`) and heartbeat.
std::string profile_text(const std::string& prefix) {
  return "kernel:\n  log_level: info\n"
         "  restart: {backoff_initial_ms: 1, backoff_max_ms: 10}\n"
         "plugins:\n  - name: echo\n    config: {prefix: \"" + prefix
         + "\", crash_on: boom}\n  - name: heartbeat\n    config: {interval_ms: 20, topic: hb}\n";
}

/// Whether `pid` is gone (or a zombie nobody reaped yet: it runs no code).
bool gone(pid_t pid) {
  std::ifstream stat{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  if (!std::getline(stat, line))
    return true;
  return line.substr(line.rfind(')') + 2, 1) == "Z";
}

/// Targets of /proc/<pid>/fd/* ("socket:[123]", "/dev/null", paths).
std::set<std::string> fd_targets(pid_t pid) {
  std::set<std::string> out;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator{"/proc/" + std::to_string(pid) + "/fd", ec})
    out.insert(std::filesystem::read_symlink(e.path(), ec).string());
  return out;
}

struct daemon_fixture {
  test::temp_dir dir;
  std::filesystem::path sock = dir.path() / "var/run/control.sock";
  std::unique_ptr<test::child> groved;

  daemon_fixture() {
    auto profile = dir.write("image.yaml", profile_text(">"));
    // heartbeat lives in the main plugin dir, echo in the test one: give both.
    std::filesystem::create_directories(dir.path() / "plugins");
    std::filesystem::copy(test::test_plugin_dir() / "libecho.so", dir.path() / "plugins");
    std::filesystem::copy(HEARTBEAT_PLUGIN, dir.path() / "plugins");
    groved = std::make_unique<test::child>(std::vector<std::string>{
      GROVED_PATH, "--config", profile.string(), "--write-dir",
      (dir.path() / "var").string(), "--plugin-dir", (dir.path() / "plugins").string()});
    BOOST_REQUIRE_MESSAGE(groved->wait_for_output("ready: 2 of 2 plugins running"),
                          groved->output());
  }

  ~daemon_fixture() {
    if (groved)
      groved->stop(SIGTERM);
  }

  test::run_result ctl(std::vector<std::string> args) {
    std::vector<std::string> argv{GROVECTL_PATH, "--socket", sock.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return test::run(std::move(argv));
  }

  nlohmann::json plugin_json(const std::string& name) {
    auto r = ctl({"plugins", "--json"});
    BOOST_REQUIRE_EQUAL(r.code, 0);
    auto j = nlohmann::json::parse(r.output);
    auto& list = j.is_array() ? j : j.at("plugins");
    for (auto& p : list)
      if (p.at("name") == name)
        return p;
    BOOST_FAIL("no plugin " << name << " in " << r.output);
    return {};
  }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(running_daemon, daemon_fixture)

BOOST_AUTO_TEST_CASE(status_and_plugins) {
  auto r = ctl({"status"});
  BOOST_TEST(r.code == 0);
  BOOST_TEST(contains(r.output, "echo"), r.output);
  BOOST_TEST(contains(r.output, "heartbeat"), r.output);
  r = ctl({"status", "--json"});
  BOOST_REQUIRE_EQUAL(r.code, 0);
  auto j = nlohmann::json::parse(r.output);
  BOOST_TEST(j.at("pid").get<int>() == groved->pid());
  BOOST_TEST(plugin_json("echo").at("state") == "running");
  BOOST_TEST(plugin_json("heartbeat").at("version") == "1.0.0");
  r = ctl({"plugins"});
  BOOST_TEST(r.code == 0);
  BOOST_TEST(contains(r.output, "running"), r.output);
}

BOOST_AUTO_TEST_CASE(pub_and_sub_through_a_plugin) {
  // Subscribe first, then publish until the subscriber has what it waits for.
  test::child sub{{GROVECTL_PATH, "--socket", sock.string(), "sub", "test/echo/out",
                   "--count", "1"}};
  int exit_code = -1;
  for (int i = 0; i < 200 && exit_code < 0; ++i) {
    auto r = ctl({"pub", "test/echo/in", "hello"});
    BOOST_REQUIRE_EQUAL(r.code, 0);
    exit_code = sub.wait(std::chrono::milliseconds{50});
  }
  BOOST_TEST(exit_code == 0);
  BOOST_TEST(contains(sub.output(), ">hello"), sub.output());
}

BOOST_AUTO_TEST_CASE(load_unload_and_errors) {
  auto r = ctl({"unload", "echo"});
  BOOST_TEST(r.code == 0, r.output);
  r = ctl({"plugins"});
  BOOST_TEST(!contains(r.output, "echo "), r.output);
  r = ctl({"pub", "test/echo/in", "x"});
  BOOST_TEST(contains(r.output, "delivered 0"), r.output);
  r = ctl({"load", "echo"});
  BOOST_TEST(r.code == 0, r.output);
  BOOST_TEST(plugin_json("echo").at("state") == "running");
  r = ctl({"load", "echo"});
  BOOST_TEST(r.code == 1);
  BOOST_TEST(contains(r.output, "already loaded"), r.output);
  r = ctl({"load", "nonexistent"});
  BOOST_TEST(r.code == 1);
  BOOST_TEST(contains(r.output, "no such file"), r.output);
  r = ctl({"unload", "nonexistent"});
  BOOST_TEST(r.code == 1);
  r = ctl({"pub", "bad/#", "x"});
  BOOST_TEST(r.code != 0);
  BOOST_TEST(contains(r.output, "wildcard"), r.output);
}

BOOST_AUTO_TEST_CASE(call_and_pub_report_fields) {
  // heartbeat serves hb/ping: grovectl call prints the reply.
  auto r = ctl({"call", "hb/ping", "x"});
  BOOST_TEST(r.code == 0, r.output);
  BOOST_TEST(contains(r.output, "pong "), r.output);
  r = ctl({"--json", "call", "hb/ping", "x"});
  BOOST_REQUIRE_EQUAL(r.code, 0);
  auto j = nlohmann::json::parse(r.output);
  BOOST_TEST(j.at("source") == "heartbeat");
  // Nobody serves it (echo only subscribes): no_route, exit 1, code as a field.
  r = ctl({"call", "test/echo/in", "x"});
  BOOST_TEST(r.code == 1);
  BOOST_TEST(contains(r.output, "no_route"), r.output);
  r = ctl({"--json", "call", "test/echo/in", "x"});
  BOOST_TEST(r.code == 1);
  j = nlohmann::json::parse(r.output.substr(0, r.output.find('\n')));
  BOOST_TEST(j.at("ok") == false);
  BOOST_TEST(j.at("error_category") == "grove");
  BOOST_TEST(j.at("error_code").get<int>() == static_cast<int>(errc::no_route));
  // A Protobuf reply prints as base64 (its bytes may be valid UTF-8 control characters).
  auto empty = "application/x-protobuf; messageType=grove.control.Empty";
  r = ctl({"call", "$grove/kernel/status", "", "--content-type", empty});
  BOOST_TEST(r.code == 0, r.output);
  BOOST_TEST(r.output.starts_with("base64:"), r.output);
  r = ctl({"--json", "call", "$grove/kernel/status", "", "--content-type", empty});
  BOOST_REQUIRE_EQUAL(r.code, 0);
  j = nlohmann::json::parse(r.output);
  BOOST_TEST(!j.contains("payload"));
  BOOST_TEST(!j.at("payload_base64").get<std::string>().empty());
  // pub --json: the counts are numbers.
  r = ctl({"--json", "pub", "test/echo/in", "x"});
  BOOST_REQUIRE_EQUAL(r.code, 0);
  j = nlohmann::json::parse(r.output);
  BOOST_TEST(j.at("delivered").get<int>() == 1);
  BOOST_TEST(j.at("dropped").get<int>() == 0);
}

BOOST_AUTO_TEST_CASE(reload_from_the_cli) {
  auto r = ctl({"reload", "echo"});
  BOOST_TEST(r.code == 0, r.output);
  BOOST_TEST(contains(r.output, "state carried over"), r.output);
  auto p = plugin_json("echo");
  BOOST_TEST(contains(p.at("last_reload").get<std::string>(), "ok"), p.dump());
  r = ctl({"reload", "echo", "--path", (dir.path() / "nope.so").string()});
  BOOST_TEST(r.code == 1);
  BOOST_TEST(contains(r.output, "no such file"), r.output);
  r = ctl({"reload", "ghost"});
  BOOST_TEST(r.code == 1);
  BOOST_TEST(contains(r.output, "no plugin named 'ghost'"), r.output);
  // Still serving after the failed attempts.
  BOOST_TEST(plugin_json("echo").at("state") == "running");
}

BOOST_AUTO_TEST_CASE(profile_edit_on_disk_is_applied) {
  // groved polls its profile; a changed plugin config is applied without a restart.
  dir.write("image.yaml", profile_text("<"));
  BOOST_REQUIRE_MESSAGE(groved->wait_for_output("reconfigured echo"), groved->output());
  test::child sub{{GROVECTL_PATH, "--socket", sock.string(), "sub", "test/echo/out",
                   "--count", "1"}};
  int exit_code = -1;
  for (int i = 0; i < 200 && exit_code < 0; ++i) {
    BOOST_REQUIRE_EQUAL(ctl({"pub", "test/echo/in", "x"}).code, 0);
    exit_code = sub.wait(std::chrono::milliseconds{50});
  }
  BOOST_TEST(contains(sub.output(), "<x"), sub.output());
  // A broken edit is refused and the running configuration stays.
  dir.write("image.yaml", "plugins:\n  - name: echo\n    config: {prefix: [}\n");
  BOOST_REQUIRE_MESSAGE(groved->wait_for_output("profile change refused"), groved->output());
  BOOST_TEST(plugin_json("echo").at("state") == "running");
}

BOOST_AUTO_TEST_CASE(sighup_rereads_the_profile_and_keeps_running) {
  // The edit and the signal together: whichever sees it first applies it, and
  // SIGHUP must never stop groved.
  dir.write("image.yaml", profile_text("<"));
  BOOST_REQUIRE_EQUAL(::kill(groved->pid(), SIGHUP), 0);
  BOOST_REQUIRE_MESSAGE(groved->wait_for_output("re-reading profile"), groved->output());
  BOOST_REQUIRE_MESSAGE(groved->wait_for_output("reconfigured echo"), groved->output());
  BOOST_TEST(!contains(groved->output(), "received, stopping"), groved->output());
  BOOST_TEST(ctl({"status"}).code == 0);
  BOOST_TEST(plugin_json("echo").at("state") == "running");
}

BOOST_AUTO_TEST_CASE(crash_is_contained_and_restarted) {
  auto r = ctl({"pub", "test/echo/in", "boom"});
  BOOST_TEST(r.code == 0);
  BOOST_REQUIRE(groved->wait_for_output("restarted"));
  auto p = plugin_json("echo");
  BOOST_TEST(p.at("restarts").get<int>() == 1);
  BOOST_TEST(p.at("state") == "running");
  BOOST_TEST(contains(p.at("last_error").get<std::string>(), "crash requested"));
  BOOST_TEST(plugin_json("heartbeat").at("state") == "running");
}

BOOST_AUTO_TEST_CASE(metrics_are_numbers_in_status_json_and_survive_a_crash) {
  BOOST_TEST(!contains(groved->output(), "metrics endpoint")); // off by default
  auto seen = [&] {
    int64_t v = -1;
    auto p = plugin_json("echo"); // keep it: at() refers into it
    for (auto& m : p.at("metrics"))
      if (m.at("name") == "messages.seen") {
        BOOST_REQUIRE(m.at("value").is_number_integer());
        v = m.at("value").get<int64_t>();
      }
    return v;
  };
  for (int i = 0; i < 3; ++i)
    BOOST_REQUIRE_EQUAL(ctl({"pub", "test/echo/in", "m"}).code, 0);
  BOOST_TEST(test::wait_until([&] { return seen() == 3; }, std::chrono::seconds{20}));
  BOOST_REQUIRE_EQUAL(ctl({"pub", "test/echo/in", "boom"}).code, 0);
  BOOST_REQUIRE(groved->wait_for_output("restarted"));
  BOOST_REQUIRE_EQUAL(ctl({"pub", "test/echo/in", "m"}).code, 0);
  BOOST_TEST(test::wait_until([&] { return seen() == 4; }, std::chrono::seconds{20}));
  // heartbeat's beats: a counter in `status --json`, a line in `status`.
  auto r = ctl({"status", "--json"});
  auto j = nlohmann::json::parse(r.output);
  for (auto& p : j.at("plugins"))
    if (p.at("name") == "heartbeat")
      for (auto& m : p.at("metrics"))
        if (m.at("name") == "beats") {
          BOOST_TEST(m.at("kind") == "counter");
          BOOST_TEST(m.at("value").get<int64_t>() >= 0);
        }
  r = ctl({"status"});
  BOOST_TEST(contains(r.output, "\nmetrics:\n"), r.output);
  BOOST_TEST(contains(r.output, "  echo messages.seen"), r.output);
}

BOOST_AUTO_TEST_CASE(clean_stop_removes_socket_and_cli_reports_it) {
  BOOST_TEST(std::filesystem::exists(sock));
  BOOST_TEST(groved->stop(SIGINT) == 0, groved->output());
  groved.reset();
  BOOST_TEST(!std::filesystem::exists(sock));
  auto r = ctl({"status"});
  BOOST_TEST(r.code == 3);
  BOOST_TEST(contains(r.output, "not running"), r.output);
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

/// The path of the first file mapping of /proc/<pid>/maps that contains `part`.
std::string mapped_path_containing(pid_t pid, const std::string& part) {
  std::ifstream maps{"/proc/" + std::to_string(pid) + "/maps"};
  std::string line;
  while (std::getline(maps, line)) {
    auto slash = line.find('/');
    if (slash != std::string::npos && line.find(part, slash) != std::string::npos)
      return line.substr(slash);
  }
  return {};
}

/// Resident kB of the file mappings of /proc/<pid>/smaps whose path starts with `root`.
size_t resident_kb_under(pid_t pid, const std::string& root) {
  std::ifstream smaps{"/proc/" + std::to_string(pid) + "/smaps"};
  std::string line;
  bool inside = false;
  size_t kb = 0;
  while (std::getline(smaps, line)) {
    auto first = line.substr(0, line.find(' '));
    if (!first.ends_with(':')) { // a mapping's header: "begin-end perms offset dev inode path"
      auto slash = line.find('/');
      inside = slash != std::string::npos && line.compare(slash, root.size(), root) == 0;
    } else if (inside && first == "Rss:") {
      kb += std::stoul(line.substr(4));
    }
  }
  return kb;
}

} // namespace

BOOST_AUTO_TEST_CASE(idle_groved_lets_the_os_reclaim_its_start_up_code) {
  // kernel.release_code_pages defaults to true: about 2 s after ready, groved marks its
  // read-only file mappings cold and the OS reclaims what only groved maps. MADV_PAGEOUT
  // leaves a page another process maps, and parallel tests run other groveds of this
  // build: so this groved runs from private copies of the binary and its libraries, and
  // the resident pages of those copies, read from outside, must fall while echo and
  // heartbeat keep running.
  namespace fs = std::filesystem;
  test::temp_dir dir;
  fs::create_directories(dir.path() / "bin");
  fs::create_directories(dir.path() / "lib");
  fs::create_directories(dir.path() / "plugins");
  fs::copy(GROVED_PATH, dir.path() / "bin/groved");
  for (auto& e : fs::directory_iterator{fs::path{GROVED_PATH}.parent_path().parent_path() / "lib"})
    if (e.is_symlink() || e.is_regular_file())
      fs::copy(e.path(), dir.path() / "lib" / e.path().filename(), fs::copy_options::copy_symlinks);
  fs::copy(test::test_plugin_dir() / "libecho.so", dir.path() / "plugins");
  fs::copy(HEARTBEAT_PLUGIN, dir.path() / "plugins");
  auto sock = dir.path() / "c.sock";
  auto profile = dir.write("image.yaml", "kernel:\n  control_socket: " + sock.string() + "\n"
                                           + profile_text(">").substr(std::string{"kernel:\n"}.size()));
  test::child d{{(dir.path() / "bin/groved").string(), "--config", profile.string(),
                 "--write-dir", (dir.path() / "var").string(), "--plugin-dir",
                 (dir.path() / "plugins").string()}};
  BOOST_REQUIRE_MESSAGE(d.wait_for_output("ready: 2 of 2 plugins running"), d.output());
  auto root = fs::canonical(dir.path()).string() + "/";
  auto before = resident_kb_under(d.pid(), root);
  BOOST_REQUIRE_GT(before, 0u);
  // A system library this process maps too, and whose parser it runs now: those pages
  // are shared, which MADV_PAGEOUT leaves alone; groved unmaps its view of them
  // (MADV_DONTNEED), and its idle loop parses no YAML to bring them back.
  auto yaml_lib = mapped_path_containing(::getpid(), "libyaml-cpp");
  BOOST_REQUIRE_MESSAGE(!yaml_lib.empty(), "this test does not map libyaml-cpp");
  auto parsed = YAML::Load("a: [1, 2.5, 'x']\nb: {c: !tag d}\ne: |\n  block\n");
  BOOST_REQUIRE(parsed["b"]["c"].as<std::string>() == "d");
  auto shared_before = resident_kb_under(d.pid(), yaml_lib);
  BOOST_REQUIRE_MESSAGE(d.wait_for_output("released start-up code pages"), d.output());
  auto after = resident_kb_under(d.pid(), root);
  BOOST_TEST(after < before, "private copies resident " << before << " kB -> " << after << " kB");
  auto shared_after = resident_kb_under(d.pid(), yaml_lib);
  BOOST_TEST(shared_before >= 16u, yaml_lib << " resident " << shared_before << " kB");
  BOOST_TEST(shared_after * 4 <= shared_before,
             yaml_lib << " resident " << shared_before << " kB -> " << shared_after << " kB");
  // And it still works: the bus and the plugins run on pages faulted back in.
  auto r = test::run({GROVECTL_PATH, "--socket", sock.string(), "status"});
  BOOST_TEST(r.code == 0, r.output);
  BOOST_TEST(contains(r.output, "heartbeat"), r.output);
}

BOOST_AUTO_TEST_CASE(bad_profile_is_refused_with_position) {
  test::temp_dir dir;
  auto profile = dir.write("bad.yaml", "kernel:\n  log_level: info\n  bus: {queue_capacity: -1}\n");
  auto r = test::run({GROVED_PATH, "--config", profile.string(), "--write-dir",
                      (dir.path() / "var").string()});
  BOOST_TEST(r.code == 2);
  BOOST_TEST(contains(r.output, "bad.yaml:3:"), r.output);
  BOOST_TEST(contains(r.output, "kernel.bus.queue_capacity"), r.output);
  BOOST_TEST(!std::filesystem::exists(dir.path() / "var"));
}

BOOST_AUTO_TEST_CASE(a_broken_plugin_does_not_stop_the_daemon) {
  test::temp_dir dir;
  auto profile = dir.write("image.yaml", R"(kernel:
  control_socket: )" + (dir.path() / "c.sock").string() + R"(
plugins:
  - name: wrong_abi
  - name: init_throws
  - name: echo
)");
  test::child d{{GROVED_PATH, "--config", profile.string(), "--write-dir",
                 (dir.path() / "var").string(), "--plugin-dir",
                 test::test_plugin_dir().string()}};
  BOOST_REQUIRE_MESSAGE(d.wait_for_output("ready: 1 of 3 plugins running"), d.output());
  BOOST_TEST(contains(d.output(), "plugin wrong_abi not started"), d.output());
  BOOST_TEST(contains(d.output(), "init exploded on purpose"), d.output());
  auto r = test::run({GROVECTL_PATH, "--socket", (dir.path() / "c.sock").string(),
                      "plugins"});
  BOOST_TEST(r.code == 0);
  BOOST_TEST(contains(r.output, "echo"), r.output);
  BOOST_TEST(d.stop(SIGTERM) == 0);
}

BOOST_AUTO_TEST_CASE(check_mode_validates_plugin_configs) {
  test::temp_dir dir;
  auto profile = dir.write("image.yaml", "plugins:\n  - name: echo\n    config:\n      slow_us: x\n");
  auto r = test::run({GROVED_PATH, "--config", profile.string(), "--check",
                      "--plugin-dir", test::test_plugin_dir().string()});
  BOOST_TEST(r.code == 2);
  BOOST_TEST(contains(r.output, "image.yaml:4:16"), r.output);
  BOOST_TEST(contains(r.output, "slow_us: expected an integer"), r.output);
}

BOOST_AUTO_TEST_CASE(describe_config_prints_the_table_of_a_plugin) {
  auto r = test::run({GROVED_PATH, "--describe-config", "echo", "--plugin-dir",
                      test::test_plugin_dir().string()});
  BOOST_TEST(r.code == 0, r.output);
  BOOST_TEST(contains(r.output, "| key | type | default | range | meaning |"), r.output);
  BOOST_TEST(contains(r.output, "| `slow_us` | int | `0` | ≥ 0 | busy time per message |"),
             r.output);
  r = test::run({GROVED_PATH, "--describe-config", "no_such_plugin", "--plugin-dir",
                 test::test_plugin_dir().string()});
  BOOST_TEST(r.code == 2);
  BOOST_TEST(contains(r.output, "no such file"), r.output);
}

BOOST_AUTO_TEST_CASE(what_isolation_buys) {
  // The same segfaulting plugin, twice: in process it takes groved down with it;
  // isolated, groved logs the crash, restarts the plugin and keeps serving.
  for (std::string isolation : {"in_process", "process"}) {
    test::temp_dir dir;
    auto sock = dir.path() / "c.sock";
    auto profile = dir.write("image.yaml", "kernel:\n  control_socket: " + sock.string()
                                             + "\nplugins:\n  - name: echo\n    isolation: "
                                             + isolation + "\n    config: {segv_on: segv}\n");
    test::child d{{GROVED_PATH, "--config", profile.string(), "--write-dir",
                   (dir.path() / "var").string(), "--plugin-dir",
                   test::test_plugin_dir().string()}};
    BOOST_REQUIRE_MESSAGE(d.wait_for_output("ready: 1 of 1 plugins running"), d.output());
    auto r = test::run({GROVECTL_PATH, "--socket", sock.string(), "pub", "test/echo/in",
                        "segv"});
    if (isolation == "in_process") {
      // The crash on a worker races the publish reply, so grovectl may see groved close
      // the connection first: the exit status is what counts here.
      BOOST_TEST(d.wait() == 128 + SIGSEGV, d.output());
    } else {
      BOOST_TEST(r.code == 0, r.output);
      BOOST_REQUIRE_MESSAGE(d.wait_for_output("killed by signal 11"), d.output());
      BOOST_REQUIRE_MESSAGE(d.wait_for_output("restarted: running in process"), d.output());
      r = test::run({GROVECTL_PATH, "--socket", sock.string(), "plugins", "--json"});
      BOOST_TEST(r.code == 0);
      BOOST_TEST(contains(r.output, "\"restarts\":1"), r.output);
      BOOST_TEST(d.stop(SIGTERM) == 0, d.output());
    }
  }
}

BOOST_AUTO_TEST_CASE(prometheus_endpoint_of_a_real_groved) {
  test::temp_dir dir;
  auto port = test::free_port();
  auto profile = dir.write("image.yaml", "kernel:\n  metrics: {bind: 127.0.0.1, port: "
                                           + std::to_string(port) + "}\nplugins:\n"
                                           "  - name: heartbeat\n"
                                           "    config: {interval_ms: 20, topic: hb}\n");
  std::filesystem::create_directories(dir.path() / "plugins");
  std::filesystem::copy(HEARTBEAT_PLUGIN, dir.path() / "plugins");
  test::child groved{{GROVED_PATH, "--config", profile.string(), "--write-dir",
                      (dir.path() / "var").string(), "--plugin-dir",
                      (dir.path() / "plugins").string()}};
  BOOST_REQUIRE_MESSAGE(groved.wait_for_output("ready: 1 of 1"), groved.output());
  BOOST_TEST(contains(groved.output(), "metrics endpoint http://127.0.0.1:"));
  // Beats are counted while we watch: the scraped value grows.
  double first = -1;
  bool grew = test::wait_until([&] {
    auto r = test::http_exchange(port, "GET /metrics HTTP/1.1\r\n\r\n");
    auto at = r.body.find("\ngrove_heartbeat_beats_total ");
    if (r.status != 200 || at == std::string::npos)
      return false;
    auto v = std::stod(r.body.substr(r.body.find(' ', at + 1) + 1));
    if (first < 0)
      first = v;
    return v > first;
  }, std::chrono::seconds{20});
  BOOST_TEST(grew);
  BOOST_TEST(groved.stop(SIGTERM) == 0, groved.output());
}

BOOST_AUTO_TEST_CASE(a_hung_isolated_child_dies_with_a_killed_groved) {
  // kill -9 leaves groved no chance to clean up: the plugin-host child must still go
  // (its parent-death SIGTERM acts, nothing blocks it), and it holds none of groved's
  // descriptors but its channel.
  test::temp_dir dir;
  auto sock = dir.path() / "c.sock";
  auto profile = dir.write("image.yaml", "kernel:\n  control_socket: " + sock.string()
                                           + "\nplugins:\n  - name: echo\n"
                                             "    isolation: process\n"
                                             "    config: {slow_us: 600000000}\n");
  test::child d{{GROVED_PATH, "--config", profile.string(), "--write-dir",
                 (dir.path() / "var").string(), "--plugin-dir",
                 test::test_plugin_dir().string()}};
  BOOST_REQUIRE_MESSAGE(d.wait_for_output("ready: 1 of 1 plugins running"), d.output());
  auto kids = test::children_of(d.pid(), "--plugin-host echo");
  BOOST_REQUIRE_EQUAL(kids.size(), 1u);
  auto kid = kids[0];
  // Descriptors: no socket or file of groved's (the control socket above all) is
  // open in the child; its channel is the other end of a socket pair, so another
  // inode. (Pipes are its stdio; eventfds all read "anon_inode:[eventfd]".)
  auto mine = fd_targets(d.pid());
  auto theirs = fd_targets(kid);
  BOOST_REQUIRE(!theirs.empty());
  size_t sockets = 0;
  for (auto& t : theirs) {
    if (t.starts_with("socket:"))
      ++sockets;
    if (t.starts_with("socket:") || (t.starts_with("/") && !t.starts_with("/dev/")))
      BOOST_TEST(!mine.contains(t), t << " is open in both groved and its child");
  }
  BOOST_TEST(sockets == 1u); // the channel, nothing else
  // Hang it: the echo busies itself for 600 s on this message.
  auto r = test::run({GROVECTL_PATH, "--socket", sock.string(), "pub", "test/echo/in", "x"});
  BOOST_REQUIRE_MESSAGE(r.code == 0, r.output);
  BOOST_REQUIRE_EQUAL(::kill(d.pid(), SIGKILL), 0);
  BOOST_TEST(d.wait() == 128 + SIGKILL);
  bool died = test::wait_until([&] { return gone(kid); }, std::chrono::seconds{20});
  if (!died)
    ::kill(kid, SIGKILL); // leave nothing behind, then fail
  BOOST_TEST(died, "plugin host " << kid << " outlived groved");
}

BOOST_AUTO_TEST_CASE(write_dir_and_everything_in_it_are_private) {
  // The runner's umask (typically 022) must not decide: groved sets 077 and makes its
  // write dir 0700. kv keeps a real SQLite store (database, WAL) in its state dir.
  namespace fs = std::filesystem;
#ifdef KV_PLUGIN
  const std::string plugin = "kv";
  const fs::path lib = KV_PLUGIN;
#else
  const std::string plugin = "heartbeat";
  const fs::path lib = HEARTBEAT_PLUGIN;
#endif
  test::temp_dir dir;
  auto var = dir.path() / "var";
  auto profile = dir.write("image.yaml", "plugins:\n  - name: " + plugin + "\n");
  test::child d{{GROVED_PATH, "--config", profile.string(), "--write-dir", var.string(),
                 "--plugin-dir", lib.parent_path().string()}};
  BOOST_REQUIRE_MESSAGE(d.wait_for_output("ready: 1 of 1 plugins running"), d.output());
  struct stat st;
  BOOST_REQUIRE(::stat(var.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0700u);
  std::vector<std::string> names;
  for (auto& e : fs::recursive_directory_iterator{var}) {
    BOOST_REQUIRE(::lstat(e.path().c_str(), &st) == 0);
    BOOST_TEST((st.st_mode & 077) == 0u,
               e.path().string() << " has mode " << std::oct << (st.st_mode & 0777));
    names.push_back(fs::relative(e.path(), var).string());
  }
  auto has = [&](const std::string& name) {
    return std::find(names.begin(), names.end(), name) != names.end();
  };
  BOOST_TEST(has("run/control.sock"));
  BOOST_TEST(has("plugins/" + plugin));
#ifdef KV_PLUGIN
  BOOST_TEST(has("plugins/kv/kv.db"));
  BOOST_TEST(has("plugins/kv/kv.db-wal"));
#endif
  BOOST_TEST(d.stop(SIGTERM) == 0, d.output());
}
