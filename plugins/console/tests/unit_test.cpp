// The console's security parts (src/auth.cpp) and configuration (src/config.hpp): password
// hashes, sessions and their CSRF tokens, the login limiter, the parsers of what a browser
// sends, how payloads are shown, what the configuration refuses, and README.md's table
// being the generated one.

#define BOOST_TEST_MODULE console_unit
#include <boost/test/unit_test.hpp>

#include "auth.hpp"
#include "client_cert.hpp"
#include "config.hpp"
#include "test_support.hpp"

using namespace grove::console;
using namespace std::chrono_literals;

BOOST_AUTO_TEST_CASE(argon2id_hashes_verify_only_their_password) {
  auto h = hash_password("correct horse");
  BOOST_REQUIRE(h.starts_with("$argon2id$"));
  BOOST_CHECK(verify_password(h, "correct horse"));
  BOOST_CHECK(!verify_password(h, "correct horse "));
  BOOST_CHECK(!verify_password(h, ""));
  // Salted: the same password hashes differently each time.
  BOOST_CHECK(hash_password("correct horse") != h);
  BOOST_CHECK(!verify_password("not a hash", "correct horse"));
  BOOST_CHECK(!verify_password("", ""));
}

BOOST_AUTO_TEST_CASE(sessions_expire_and_carry_their_own_csrf_token) {
  session_table t;
  auto now = clock::now();
  auto a = t.create("alice", 60s, now);
  auto b = t.create("bob", 60s, now);
  BOOST_CHECK_EQUAL(a.size(), 64u);
  BOOST_CHECK(a != b);
  auto sa = t.find(a, now + 59s);
  BOOST_REQUIRE(sa);
  BOOST_CHECK_EQUAL(sa->name, "alice");
  BOOST_CHECK_EQUAL(sa->csrf.size(), 64u);
  BOOST_CHECK(sa->csrf != a); // the CSRF token is not the cookie
  BOOST_CHECK_EQUAL(sa->token, a); // what a live stream checks the session by
  auto sb = t.find(b, now);
  BOOST_REQUIRE(sb);
  BOOST_CHECK(!same_token(sa->csrf, sb->csrf));
  BOOST_CHECK(same_token(sa->csrf, sa->csrf));
  BOOST_CHECK(!same_token("", ""));
  BOOST_CHECK(!t.find(a, now + 60s)); // expired, and gone
  BOOST_CHECK(!t.find(a, now));
  BOOST_CHECK(!t.find("", now));
  BOOST_CHECK(!t.find(a.substr(1), now));
  t.erase(b);
  BOOST_CHECK(!t.find(b, now));
}

BOOST_AUTO_TEST_CASE(sessions_survive_a_dump_and_load_with_their_tokens_and_expiry) {
  session_table a;
  auto now = clock::now();
  auto live = a.create("alice", 60s, now);
  auto old = a.create("bob", 10s, now);
  auto csrf = a.find(live, now)->csrf;
  auto dumped = a.dump(now + 20s); // bob's is over by then
  session_table b;
  BOOST_REQUIRE(b.load(dumped, now + 20s));
  auto s = b.find(live, now + 20s);
  BOOST_REQUIRE(s);
  BOOST_CHECK_EQUAL(s->name, "alice");
  BOOST_CHECK_EQUAL(s->csrf, csrf);
  BOOST_CHECK(!b.find(live, now + 61s)); // the same end as before
  BOOST_CHECK(!b.find(old, now + 20s));
  session_table c;
  BOOST_CHECK(!c.load("{", now));
  BOOST_CHECK(!c.load(R"([{"token":"short","name":"x","csrf":"y","ms_left":1}])", now));
  BOOST_CHECK_EQUAL(c.size(), 0u);
}

BOOST_AUTO_TEST_CASE(sessions_are_bounded) {
  session_table t;
  auto now = clock::now();
  auto first = t.create("o", 100s, now);
  for (size_t i = 0; i < session_table::max_sessions + 10; ++i)
    t.create("o", 200s, now);
  BOOST_CHECK_EQUAL(t.size(), session_table::max_sessions);
  BOOST_CHECK(!t.find(first, now)); // the one ending soonest went first
}

BOOST_AUTO_TEST_CASE(logins_lock_after_the_failures_allowed_until_the_window_passes) {
  login_limiter l{3, 60s};
  auto now = clock::now();
  BOOST_CHECK_EQUAL(l.locked_for("name:x", now), 0);
  l.failed("name:x", now);
  l.failed("name:x", now + 1s);
  BOOST_CHECK_EQUAL(l.locked_for("name:x", now + 2s), 0);
  l.failed("name:x", now + 2s);
  BOOST_CHECK_GT(l.locked_for("name:x", now + 3s), 0);
  BOOST_CHECK_EQUAL(l.locked_for("name:y", now + 3s), 0); // per key
  BOOST_CHECK_EQUAL(l.locked_for("name:x", now + 61s), 0); // the window passed
  l.failed("name:z", now);
  l.failed("name:z", now);
  l.succeeded("name:z");
  l.failed("name:z", now);
  l.failed("name:z", now);
  BOOST_CHECK_EQUAL(l.locked_for("name:z", now), 0);
}

BOOST_AUTO_TEST_CASE(the_limiter_is_bounded_without_lifting_locks) {
  login_limiter l{1, 60s};
  auto now = clock::now();
  l.failed("addr:locked", now);
  for (size_t i = 0; i < login_limiter::max_keys + 10; ++i)
    l.failed("addr:" + std::to_string(i), now);
  BOOST_CHECK_GT(l.locked_for("addr:locked", now), 0);
  BOOST_CHECK_EQUAL(l.locked_for("addr:" + std::to_string(login_limiter::max_keys + 5), now), 0);
}

BOOST_AUTO_TEST_CASE(cookie_header_parsing) {
  BOOST_CHECK_EQUAL(cookie_value("grove_console=abc", "grove_console"), "abc");
  BOOST_CHECK_EQUAL(cookie_value("a=1; grove_console=abc; b=2", "grove_console"), "abc");
  BOOST_CHECK_EQUAL(cookie_value("a=1;grove_console=x;grove_console=y", "grove_console"), "x");
  BOOST_CHECK_EQUAL(cookie_value("xgrove_console=abc", "grove_console"), "");
  BOOST_CHECK_EQUAL(cookie_value("grove_console", "grove_console"), "");
  BOOST_CHECK_EQUAL(cookie_value("", "grove_console"), "");
  BOOST_CHECK_EQUAL(cookie_value(";;; =;grove_console=", "grove_console"), "");
}

BOOST_AUTO_TEST_CASE(json_bodies) {
  std::string err;
  auto ok = parse_object(R"({"name":"a","n":1})", err);
  BOOST_REQUIRE(ok);
  BOOST_CHECK_EQUAL(*string_field(*ok, "name"), "a");
  BOOST_CHECK(!string_field(*ok, "n")); // present, not a string
  BOOST_CHECK_EQUAL(*string_field(*ok, "absent", "dflt"), "dflt");
  BOOST_CHECK(!parse_object("[1]", err));
  BOOST_CHECK_EQUAL(err, "the body is not a JSON object");
  BOOST_CHECK(!parse_object("{", err));
  BOOST_CHECK_EQUAL(err, "the body is not JSON");
  BOOST_CHECK(!parse_object(std::string(100, '[') + std::string(100, ']'), err));
  BOOST_CHECK(err.find("deeper") != std::string::npos);
  // Brackets inside strings do not count as depth.
  BOOST_CHECK(parse_object(R"({"s":")" + std::string(100, '[') + R"("})", err));
}

BOOST_AUTO_TEST_CASE(payloads_shown_as_json_text_or_hex) {
  auto j = describe_payload(R"({"a":1})", "application/json", 100);
  BOOST_CHECK_EQUAL(j["kind"], "json");
  BOOST_CHECK_EQUAL(j["text"], "{\n  \"a\": 1\n}");
  auto t = describe_payload("héllo", "text/plain", 100);
  BOOST_CHECK_EQUAL(t["kind"], "text");
  BOOST_CHECK_EQUAL(t["text"], "héllo");
  auto b = describe_payload(std::string{"\x00\x01\xff", 3}, "", 100);
  BOOST_CHECK_EQUAL(b["kind"], "binary");
  BOOST_CHECK_EQUAL(b["hex"], "00 01 ff");
  auto cut = describe_payload("hé", "", 2); // cut inside the é: back to its start
  BOOST_CHECK_EQUAL(cut["text"], "h");
  BOOST_CHECK_EQUAL(cut["truncated"], true);
  BOOST_CHECK(!printable_utf8("\xc0\x80"));       // overlong NUL
  BOOST_CHECK(!printable_utf8("\xed\xa0\x80"));   // surrogate
  BOOST_CHECK(!printable_utf8("\xe2\x82"));       // cut short
  BOOST_CHECK(printable_utf8("\xf0\x9f\x8c\xb3")); // U+1F333
  BOOST_CHECK(printable_utf8("a\tb\r\n"));
  BOOST_CHECK(!printable_utf8("a\x1b[0m"));           // a terminal escape
  BOOST_CHECK(!printable_utf8("a\x7f"));              // DEL
  BOOST_CHECK(!printable_utf8(std::string{"a\0b", 3})); // NUL
  // A cut inside a 4-byte character goes back to its start, wherever it falls in it.
  for (size_t limit : {2, 3, 4}) {
    auto tree = describe_payload("a\xf0\x9f\x8c\xb3" "b", "", limit);
    BOOST_CHECK_EQUAL(tree["kind"], "text");
    BOOST_CHECK_EQUAL(tree["text"], "a");
  }
  BOOST_CHECK_EQUAL(describe_payload("a\xf0\x9f\x8c\xb3" "b", "", 5)["text"], "a\xf0\x9f\x8c\xb3");
  // Binary is shown to the limit, whatever its bytes.
  auto bin = describe_payload("\x01\xf0\x9f\x8c", "", 3);
  BOOST_CHECK_EQUAL(bin["kind"], "binary");
  BOOST_CHECK_EQUAL(bin["hex"], "01 f0 9f");
}

namespace {

const std::string hash = "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA";

std::string good() {
  return "cert_file: /etc/grove/server.crt\nkey_file: /etc/grove/server.key\n"
         "operators: [{name: alice, password_hash: '" + hash + "'}]\n";
}

} // namespace

BOOST_AUTO_TEST_CASE(defaults_and_a_minimal_configuration) {
  auto cfg = console_config::map().load(good(), "image.yaml", "/var/lib/grove/plugins/console");
  BOOST_REQUIRE_MESSAGE(cfg, (cfg ? std::string{} : grove::describe(cfg.error())));
  BOOST_CHECK_EQUAL(cfg->bind, "127.0.0.1");
  BOOST_CHECK_EQUAL(cfg->port, 8444);
  BOOST_CHECK_EQUAL(cfg->session_seconds, 3600);
  BOOST_REQUIRE_EQUAL(cfg->operators.size(), 1u);
  BOOST_CHECK_EQUAL(cfg->operators[0].name, "alice");
}

BOOST_AUTO_TEST_CASE(certificate_accounts) {
  // A certificate account needs no password; a CN alone is vouched for by client_ca_file.
  auto cfg = console_config::map().load(
    "cert_file: a.crt\nkey_file: a.key\nclient_ca_file: ops-ca.crt\n"
    "operators: [{name: bob, certificate_cn: bob}, {name: carol, certificate_ca_file: c.crt}]",
    "image.yaml", "/var/lib/grove/plugins/console");
  BOOST_REQUIRE_MESSAGE(cfg, (cfg ? std::string{} : grove::describe(cfg.error())));
  BOOST_CHECK_EQUAL(cfg->operators[0].password_hash, "");
  BOOST_CHECK_EQUAL(cfg->operators[0].certificate_cn, "bob");
  BOOST_CHECK_EQUAL(cfg->client_ca_file, "/var/lib/grove/plugins/console/ops-ca.crt");
  BOOST_CHECK_EQUAL(cfg->operators[1].certificate_ca_file,
                    "/var/lib/grove/plugins/console/c.crt");
  // A CA file that holds no certificate is named.
  certificate_matcher m;
  std::string error;
  BOOST_CHECK(!m.load({{"bob", "bob", "/nonexistent/ca.crt"}}, "", error));
  BOOST_CHECK_MESSAGE(error.find("certificate_ca_file") != std::string::npos, error);
  BOOST_CHECK(m.load({{"alice", "", ""}}, "", error)); // a password account only
  BOOST_CHECK(!m.enabled());
}

BOOST_AUTO_TEST_CASE(refused_at_load_with_the_key_named) {
  const std::string tls = "cert_file: a.crt\nkey_file: a.key\n";
  const std::string op = "operators: [{name: alice, password_hash: '" + hash + "'}]\n";
  std::pair<std::string, std::string> rows[] = {
    {op, "cert_file"},
    {tls, "operators"},
    {tls + "operators: [{name: alice, password_hash: plain}]", "password_hash"},
    {tls + "operators: [{name: 'a b', password_hash: '" + hash + "'}]", "name"},
    {tls + "operators: [{name: a, password_hash: '" + hash + "'}, {name: a, password_hash: '"
       + hash + "'}]",
     "twice"},
    {tls + op + "threads: 4\nmax_streams: 4", "max_streams"},
    {tls + op + "session_seconds: 10", "session_seconds"},
    {tls + op + "nope: 1", "nope"},
    {tls + "operators: [{name: bob}]", "could never log in"},
    {tls + "operators: [{name: bob, certificate_cn: bob}]", "client_ca_file"},
  };
  for (const auto& [doc, key] : rows) {
    auto cfg = console_config::map().load(doc, "image.yaml", "/tmp");
    BOOST_CHECK_MESSAGE(!cfg, "accepted: " << doc);
    if (!cfg)
      BOOST_CHECK_MESSAGE(grove::describe(cfg.error()).find(key) != std::string::npos,
                          grove::describe(cfg.error()) << " does not name " << key);
  }
}

BOOST_AUTO_TEST_CASE(readme_table_is_the_generated_one) {
  auto generated = console_config::map().markdown();
  BOOST_TEST(grove::test::readme_config_table(CONSOLE_README) == generated,
             "README.md's table is stale; replace the lines between the config-table "
             "markers with `groved --describe-config console`:\n"
               << generated);
}
