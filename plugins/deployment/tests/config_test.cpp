// The deployment plugin's configuration (plugins/deployment/src/config.hpp): what is
// refused at load, and README.md's table being the generated one.

#define BOOST_TEST_MODULE deployment_config
#include <boost/test/unit_test.hpp>

#include "config.hpp"
#include "test_support.hpp"

using grove::deployment::deployment_config;

namespace {

const char* good = R"(
api: {cert_file: /etc/grove/server.crt, key_file: /etc/grove/server.key}
credentials:
  - {access_key_id: AKIAGROVETEST00001, secret_access_key: secret-secret-secret}
)";

} // namespace

BOOST_AUTO_TEST_CASE(defaults_and_a_minimal_configuration) {
  auto cfg = deployment_config::map().load(good, "image.yaml", "/var/lib/grove/plugins/deployment");
  BOOST_REQUIRE_MESSAGE(cfg, (cfg ? std::string{} : grove::describe(cfg.error())));
  BOOST_CHECK_EQUAL(cfg->region, "us-east-1");
  BOOST_CHECK_EQUAL(cfg->account_id, "123456789012");
  BOOST_CHECK_EQUAL(cfg->api.port, 8443);
  BOOST_CHECK_EQUAL(cfg->api.bind, "127.0.0.1");
  BOOST_CHECK(!cfg->api.development_plain_http);
  BOOST_CHECK_EQUAL(cfg->file.string(), "/var/lib/grove/plugins/deployment/components.db");
  BOOST_REQUIRE_EQUAL(cfg->credentials.size(), 1u);
  BOOST_CHECK(cfg->credentials[0].operations == std::vector<std::string>{"*"});
  // Artifacts: under the state directory; s3:// and file:// unmapped until configured.
  BOOST_CHECK_EQUAL(cfg->artifacts_dir.string(), "/var/lib/grove/plugins/deployment/artifacts");
  BOOST_CHECK(cfg->artifacts_base_url.empty() && cfg->artifacts_file_dir.empty());
  BOOST_CHECK_EQUAL(cfg->artifacts_url_seconds, 3600);
  // Steps without runWith.posixUser run as groved's user unless default_posix_user says.
  BOOST_CHECK(cfg->default_posix_user.empty());
  auto with_user = deployment_config::map().load(std::string{good} + "default_posix_user: nobody:nogroup\n",
                                                 "image.yaml", "/var/lib/grove/plugins/deployment");
  BOOST_REQUIRE_MESSAGE(with_user, (with_user ? std::string{} : grove::describe(with_user.error())));
  BOOST_CHECK_EQUAL(with_user->default_posix_user, "nobody:nogroup");
}

BOOST_AUTO_TEST_CASE(refused_at_load_with_the_key_named) {
  const std::string creds =
    "credentials: [{access_key_id: AKIAGROVETEST00001, secret_access_key: secret-secret-secret}]\n";
  const std::string tls = "api: {cert_file: a.crt, key_file: a.key}\n";
  std::pair<std::string, std::string> rows[] = {
    {creds, "api.cert_file"},                                          // no certificate
    {tls, "credentials"},                                              // no keys
    {tls + "credentials: [{access_key_id: short, secret_access_key: secret-secret-secret}]",
     "access_key_id"},
    {tls + "credentials: [{access_key_id: AKIAGROVETEST00001, secret_access_key: s}]",
     "secret_access_key"},
    {tls + "credentials: [{access_key_id: AKIAGROVETEST00001, secret_access_key: "
           "secret-secret-secret, operations: [DeleteEverything]}]",
     "DeleteEverything"},
    {tls + creds + "account_id: '12345'", "account_id"},
    {tls + creds + "region: 'US EAST'", "region"},
    {creds + "api: {cert_file: a.crt, key_file: a.key, port: 0}", "port"},
    {tls + creds + "nope: 1", "nope"},
    {tls + creds + "artifacts_base_url: s3://bucket", "artifacts_base_url"},
    {tls + creds + "artifacts_max_bytes: 0", "artifacts_max_bytes"},
    {tls + creds + "artifacts_url_seconds: 604801", "artifacts_url_seconds"},
    // default_posix_user: `user` or `user:group`.
    {tls + creds + "default_posix_user: ':nogroup'", "default_posix_user"},
    {tls + creds + "default_posix_user: 'nobody:'", "default_posix_user"},
    {tls + creds + "default_posix_user: 'a:b:c'", "default_posix_user"},
    // Discovery: its files, the core's thing, and a port of its own.
    {tls + creds + "thing_name: core\ndiscovery: {enabled: true, ca_file: ca.crt}",
     "discovery.cert_file"},
    {tls + creds + "discovery: {enabled: true, cert_file: s.crt, key_file: s.key, ca_file: c.crt}",
     "thing_name"},
    {tls + creds + "thing_name: core\ndiscovery: {enabled: true, cert_file: s.crt, "
                   "key_file: s.key, ca_file: c.crt}",
     "discovery.port"},
    {tls + creds + "discovery: {port: 70000}", "port"},
    // The IP detector fills the core's own thing's list.
    {tls + creds + "ip_detector: {enabled: true}", "ip_detector.enabled needs thing_name"},
    {tls + creds + "thing_name: core\nip_detector: {enabled: true, port: 70000}", "port"},
    {tls + creds + "thing_name: core\nip_detector: {enabled: true, interface: [eth0]}",
     "interface"},
  };
  for (const auto& [text, names] : rows) {
    auto cfg = deployment_config::map().load(text, "image.yaml");
    BOOST_CHECK_MESSAGE(!cfg, text);
    if (!cfg)
      BOOST_CHECK_MESSAGE(grove::describe(cfg.error()).find(names) != std::string::npos,
                          grove::describe(cfg.error()) << " should name " << names);
  }
  // Discovery on another port, or on the API's port of another address.
  for (auto d : {"discovery: {enabled: true, port: 8444, cert_file: s.crt, key_file: s.key, "
                 "ca_file: c.crt}",
                 "discovery: {enabled: true, bind: 10.0.0.2, cert_file: s.crt, key_file: s.key, "
                 "ca_file: c.crt}"}) {
    auto cfg = deployment_config::map().load(tls + creds + "thing_name: core\n" + d, "image.yaml");
    BOOST_CHECK_MESSAGE(cfg, (cfg ? std::string{} : grove::describe(cfg.error())));
  }
  auto ip = deployment_config::map().load(
    tls + creds + "thing_name: core\nip_detector: {enabled: true, include_ipv6: true, "
                  "interfaces: [eth*], exclude: [docker*], port: 1883}",
    "image.yaml");
  BOOST_CHECK_MESSAGE(ip, (ip ? std::string{} : grove::describe(ip.error())));
  if (ip) {
    BOOST_TEST(ip->ip_detector.port == 1883);
    BOOST_TEST(ip->ip_detector.interfaces == std::vector<std::string>{"eth*"});
  }
  auto dev = deployment_config::map().load(creds + "api: {development_plain_http: true}", "image.yaml");
  BOOST_CHECK_MESSAGE(dev, (dev ? std::string{} : grove::describe(dev.error())));
}

BOOST_AUTO_TEST_CASE(readme_table_is_the_generated_one) {
  auto generated = deployment_config::map().markdown();
  BOOST_TEST(grove::test::readme_config_table(DEPLOYMENT_README) == generated,
             "README.md's table is stale; replace the lines between the config-table "
             "markers with `groved --describe-config deployment`:\n"
               << generated);
}
