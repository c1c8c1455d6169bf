#pragma once

// The deployment plugin's configuration (grove::config_map): the keys an operator writes
// under `config:` in the image profile; README.md's table is generated from it.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "grove/config_map.hpp"
#include "grove/errors.hpp"
#include "v1_operations.hpp"

namespace grove::deployment {

/// `api:`, the HTTPS endpoint of the Greengrass v2 API.
struct api_config {
  /// Listen address.
  std::string bind;
  /// Listen port.
  uint16_t port = 0;
  /// Server certificate (PEM).
  std::filesystem::path cert_file;
  /// Its key (PEM).
  std::filesystem::path key_file;
  /// Plain HTTP, no TLS (development only).
  bool development_plain_http = false;
  /// Largest request body.
  int64_t max_body_bytes = 0;
  /// Server threads.
  int64_t threads = 0;

  /// The keys.
  static grove::config_map<api_config> map() {
    return grove::config_map<api_config>{}
      .key("bind", &api_config::bind, "127.0.0.1", "listen address")
      .key("port", &api_config::port, 8443, grove::range{1, 65535}, "listen port")
      .key("cert_file", &api_config::cert_file, "",
           "server certificate, PEM (e.g. the group PKI's `server.crt` from "
           "tools/grove-certs); required unless development_plain_http")
      .key("key_file", &api_config::key_file, "", "key of `cert_file`, PEM")
      .key("development_plain_http", &api_config::development_plain_http, false,
           "serve plain HTTP without TLS (signatures are still checked); logged loudly at "
           "start. Never in production.")
      .key("max_body_bytes", &api_config::max_body_bytes, 2097152, grove::range{4096, 67108864},
           "a larger request body is refused (413) before it is read in full")
      .key("threads", &api_config::threads, 2, grove::range{1, 64},
           "server threads (they never run on CAF's workers)");
  }
};

/// `default_system_resource_limits:`, Greengrass' nucleus `runWithDefault.systemResourceLimits`.
struct limits_config {
  /// RAM in kilobytes; 0: none.
  int64_t memory = 0;
  /// CPU time in cores; 0: none.
  double cpus = 0;

  /// The keys.
  static grove::config_map<limits_config> map() {
    return grove::config_map<limits_config>{}
      .key("memory", &limits_config::memory, 0, grove::range{0, 4294967296},
           "RAM each component's processes may use together, in kilobytes (cgroup memory "
           "limit); 0: none")
      .key("cpus", &limits_config::cpus, 0.0, grove::range{0, 1024},
           "CPU time each component's processes may use together, in cores (0.5: half of "
           "one core; cgroup CPU quota); 0: none");
  }
};

/// `discovery:`, Greengrass v1's discovery endpoint for devices (mutual TLS, discovery.hpp).
struct discovery_config {
  /// Serve it.
  bool enabled = false;
  /// Listen address.
  std::string bind;
  /// Listen port.
  uint16_t port = 0;
  /// Server certificate (PEM).
  std::filesystem::path cert_file;
  /// Its key (PEM).
  std::filesystem::path key_file;
  /// The group CA that device certificates must chain to (PEM); also the answer's CAs.
  std::filesystem::path ca_file;
  /// The group CA's revocation list (PEM), or empty.
  std::filesystem::path crl_file;
  /// Advertise the broker with DNS-SD (Avahi).
  bool dns_sd = false;
  /// The broker port advertised.
  uint16_t dns_sd_port = 0;

  /// The keys.
  static grove::config_map<discovery_config> map() {
    return grove::config_map<discovery_config>{}
      .key("enabled", &discovery_config::enabled, false,
           "serve `GET /greengrass/discover/thing/{thing}` to the group's devices")
      .key("bind", &discovery_config::bind, "0.0.0.0",
           "listen address (devices reach it on the LAN, as the broker)")
      .key("port", &discovery_config::port, 8443, grove::range{1, 65535},
           "listen port (AWS's 8443; must differ from api.port on the same address)")
      .key("cert_file", &discovery_config::cert_file, "",
           "server certificate, PEM (e.g. the group PKI's `server.crt`); required when enabled")
      .key("key_file", &discovery_config::key_file, "", "key of `cert_file`, PEM")
      .key("ca_file", &discovery_config::ca_file, "",
           "the group CA (message_manager's `broker.ca_file`): a client certificate must "
           "chain to it or the TLS handshake fails; its certificates are the answer's `CAs`. "
           "Required when enabled")
      .key("crl_file", &discovery_config::crl_file, "",
           "revocation list of the group CA (`tools/grove-certs revoke`): a revoked "
           "certificate fails the handshake; read at start")
      .key("dns_sd", &discovery_config::dns_sd, false,
           "advertise the core's broker on the LAN with DNS-SD: `avahi-publish -s \"Grove "
           "<thing_name>\" _grove-mqtt._tcp <dns_sd_port> thing=<thing_name> "
           "discovery=<port>` as a supervised child (needs a running avahi-daemon)")
      .key("dns_sd_port", &discovery_config::dns_sd_port, 8883, grove::range{1, 65535},
           "the MQTT port advertised: message_manager's `broker.port`");
  }
};

/// `ip_detector:`, Greengrass v1's automatic connectivity information (ip_detector.hpp).
struct ip_detector_config {
  /// Fill the core's connectivity information from its interfaces.
  bool enabled = false;
  /// IPv6 addresses too.
  bool include_ipv6 = false;
  /// Loopback interfaces too.
  bool include_loopback = false;
  /// Only these interfaces (fnmatch patterns).
  std::vector<std::string> interfaces;
  /// Not these interfaces (fnmatch patterns).
  std::vector<std::string> exclude;
  /// The broker port of each entry; 0: discovery.dns_sd_port.
  uint16_t port = 0;

  /// The keys.
  static grove::config_map<ip_detector_config> map() {
    return grove::config_map<ip_detector_config>{}
      .key("enabled", &ip_detector_config::enabled, false,
           "fill `thing_name`'s connectivity information (what discovery answers) from this "
           "machine's interface addresses, at start and on every address change (netlink); "
           "it replaces only its own entries (README, \"IP detector\")")
      .key("include_ipv6", &ip_detector_config::include_ipv6, false,
           "report IPv6 addresses too (link-local fe80::/10 never)")
      .key("include_loopback", &ip_detector_config::include_loopback, false,
           "report loopback interfaces' addresses too")
      .key("interfaces", &ip_detector_config::interfaces, std::vector<std::string>{},
           "only interfaces whose name matches one of these fnmatch patterns (`eth*`); "
           "empty: every interface that is up")
      .key("exclude", &ip_detector_config::exclude, std::vector<std::string>{},
           "no interface whose name matches one of these fnmatch patterns (`docker*`, "
           "`veth*`)")
      .key("port", &ip_detector_config::port, 0, grove::range{0, 65535},
           "the broker port each entry names; 0: `discovery.dns_sd_port` (message_manager's "
           "`broker.port`)");
  }
};

/// One access key (`credentials:` entry).
struct credential_config {
  /// The access key id the client signs with.
  std::string access_key_id;
  /// Its secret.
  std::string secret_access_key;
  /// Operations it may call.
  std::vector<std::string> operations;
  /// Its rate limit.
  int64_t requests_per_second = 0;

  /// The keys.
  static grove::config_map<credential_config> map() {
    return grove::config_map<credential_config>{}
      .key_no_default("access_key_id", &credential_config::access_key_id, grove::required,
                      "the access key id (16 to 128 of [A-Z0-9])")
      .key_no_default("secret_access_key", &credential_config::secret_access_key,
                      grove::required, "its secret (at least 16 characters)")
      .key("operations", &credential_config::operations, std::vector<std::string>{"*"},
           "operation names it may call (CreateComponentVersion, ...; Image Builder's as "
           "`imagebuilder:CreateComponent`, ...), or `*` for all")
      .key("requests_per_second", &credential_config::requests_per_second, 100,
           grove::range{0, 1000000},
           "requests per second this key may make (a bucket of one second's worth); more "
           "are answered 429 ThrottlingException; 0: no limit");
  }
};

/// The plugin's configuration.
struct deployment_config {
  /// Region in ARNs and the SigV4 scope.
  std::string region;
  /// Account id in ARNs.
  std::string account_id;
  /// This core's thing name.
  std::string thing_name;
  /// The thing groups this core belongs to.
  std::vector<std::string> thing_groups;
  /// The HTTPS API.
  api_config api;
  /// SigV4 keys.
  std::vector<credential_config> credentials;
  /// The discovery endpoint.
  discovery_config discovery;
  /// The IP detector.
  ip_detector_config ip_detector;
  /// The Greengrass v1 group store's database file.
  std::filesystem::path groups_file;
  /// Group CAs' keys, certificates and trust directory (README "Group CA").
  std::filesystem::path group_ca_dir;
  /// Function packages: lambdaFunction's, and v1 deployments' functions.
  std::filesystem::path lambda_packages_dir;
  /// The component store's database file.
  std::filesystem::path file;
  /// What s3:// artifact URIs map to.
  std::string artifacts_base_url;
  /// Where file:// artifacts may be read from.
  std::filesystem::path artifacts_file_dir;
  /// CA bundle for https artifact servers.
  std::filesystem::path artifacts_ca_file;
  /// The content-addressed artifact directory.
  std::filesystem::path artifacts_dir;
  /// Largest artifact.
  int64_t artifacts_max_bytes = 0;
  /// Timeout of one artifact download (seconds).
  int64_t artifacts_fetch_timeout = 0;
  /// Lifetime of a pre-signed artifact URL (seconds).
  int64_t artifacts_url_seconds = 0;
  /// Generic components' limits when their deployment gives none.
  limits_config default_system_resource_limits;
  /// Seconds within which a third error makes a generic component BROKEN.
  int64_t broken_error_window = 0;
  /// Size at which a component's log is rotated (bytes).
  int64_t component_log_max_bytes = 0;
  /// Rotated logs kept per component.
  int64_t component_log_files = 0;
  /// Whether life cycle steps with RequiresPrivilege run.
  bool allow_privileged_components = true;
  /// Timeout of each of the start's reads of the group (seconds).
  int64_t start_group_read_timeout = 0;
  /// The user of components' steps when their deployment gives no runWith.posixUser.
  std::string default_posix_user;

  /// The keys, their defaults, ranges and meanings.
  static grove::config_map<deployment_config> map() {
    return grove::config_map<deployment_config>{}
      .key("region", &deployment_config::region, "us-east-1",
           "region in ARNs and in the SigV4 credential scope clients sign for")
      .key("account_id", &deployment_config::account_id, "123456789012",
           "12-digit account id in ARNs")
      .key("thing_name", &deployment_config::thing_name, "",
           "this core's thing name: CreateDeployment targets its ARN, and the core device "
           "operations name it (empty: no deployment can target this core); a Greengrass v1 "
           "group whose core definition names another thing is not deployed here")
      .key("thing_groups", &deployment_config::thing_groups, std::vector<std::string>{},
           "thing groups this core belongs to: CreateDeployment may target "
           "`arn:aws:iot:<region>:<account_id>:thinggroup/<name>` of each, besides the thing")
      .section("api", &deployment_config::api, api_config::map(),
               "the Greengrass v2 API endpoint (HTTPS)")
      .list("credentials", &deployment_config::credentials, credential_config::map(),
            "SigV4 access keys; at least one is required")
      .section("discovery", &deployment_config::discovery, discovery_config::map(),
               "Greengrass v1's discovery endpoint for the group's devices (mutual TLS; "
               "README, \"Discovery\")")
      .section("ip_detector", &deployment_config::ip_detector, ip_detector_config::map(),
               "Greengrass v1's IP detector: the core's own connectivity information from "
               "its interfaces (README, \"IP detector\")")
      .key("groups_file", &deployment_config::groups_file, "groups.db",
           "the Greengrass v1 group store (SQLite: definitions, groups, deployments); a "
           "relative path is under the plugin's state directory")
      .key("group_ca_dir", &deployment_config::group_ca_dir, "group_ca",
           "the Greengrass v1 group CAs (README, \"Group CA\"): `GROUP/CA/ca.key` (0600) and "
           "`ca.crt`, `active` (the deployed group's newest CA, for `grove-certs --group-ca`) and "
           "`trust/` (the deployed group's CAs under OpenSSL's hashed names: message_manager's "
           "`broker.ca_dir`); a relative path is under the plugin's state directory")
      .key("lambda_packages_dir", &deployment_config::lambda_packages_dir, "lambda_packages",
           "function packages, `DIR/NAME/VERSION/` with `configuration.json` and `code.zip` or "
           "`code/` (README, lambdaFunction): CreateComponentVersion's lambdaFunction, and the "
           "code of a v1 deployment's functions; a relative path is under the plugin's state "
           "directory")
      .key("file", &deployment_config::file, "components.db",
           "the component store (SQLite); a relative path is under the plugin's state "
           "directory")
      .key("artifacts_base_url", &deployment_config::artifacts_base_url, "",
           "what `s3://bucket/key` artifact URIs are fetched from: `<url>/bucket/key` "
           "(https://, or http:// for a local mirror); empty: s3 artifacts fail")
      .key("artifacts_file_dir", &deployment_config::artifacts_file_dir, "",
           "the directory `file://` artifacts may be read from (symbolic links resolved); "
           "empty: file artifacts fail (an API caller could read any file otherwise)")
      .key("artifacts_ca_file", &deployment_config::artifacts_ca_file, "",
           "CA bundle (PEM) that https artifact servers are verified with; empty: the "
           "system's")
      .key("artifacts_dir", &deployment_config::artifacts_dir, "artifacts",
           "the content-addressed artifact store (`sha256/<hex>`); relative: under the "
           "plugin's state directory")
      .key("artifacts_max_bytes", &deployment_config::artifacts_max_bytes, 1073741824,
           grove::range{1, 68719476736},
           "a larger artifact (or ZIP artifact's unpacked entries) fails its version")
      .key("artifacts_fetch_timeout", &deployment_config::artifacts_fetch_timeout, 30,
           grove::range{1, 3600},
           "seconds an artifact download may wait to connect or for the next bytes")
      .key("artifacts_url_seconds", &deployment_config::artifacts_url_seconds, 3600,
           grove::range{1, 604800},
           "how long a GetComponentVersionArtifact URL is valid (seconds)")
      .section("default_system_resource_limits",
               &deployment_config::default_system_resource_limits, limits_config::map(),
               "generic components' `runWith.systemResourceLimits` when their deployment gives "
               "none (Greengrass' nucleus `runWithDefault.systemResourceLimits`): applied "
               "with a cgroup per component (README, \"Resource limits\")")
      .key("broken_error_window", &deployment_config::broken_error_window, 3600,
           grove::range{1, 31536000},
           "seconds within which a generic component's third error (a run or startup "
           "that fails, or outlives its Timeout) makes it BROKEN, without more restarts "
           "(Greengrass' nucleus: 3 errors within an hour); errors before that no longer "
           "count, and a deployment that starts it again starts the count again")
      .key("component_log_max_bytes", &deployment_config::component_log_max_bytes, 1048576,
           grove::range{4096, 1073741824},
           "a generic component's log (`<write_dir>/logs/components/<name>.log`) is rotated "
           "before a line would take it past this size (Greengrass' nucleus `fileSizeKB`: "
           "1024); applies to processes started after a change (README, \"Component logs\")")
      .key("component_log_files", &deployment_config::component_log_files, 9,
           grove::range{1, 100},
           "rotated logs kept per component (`<name>.log.1` ... `.N`, the oldest dropped): "
           "with the default size at most 10 MiB a component, Greengrass' nucleus "
           "`totalLogsSizeKB` 10240")
      .key("allow_privileged_components", &deployment_config::allow_privileged_components,
           true,
           "whether a generic component's life cycle step with `RequiresPrivilege: true` "
           "runs, as groved's user (root when groved runs as root, as Greengrass' nucleus "
           "runs it, also over the component's `runWith.posixUser`); false: such a step "
           "does not start, the component is ERRORED and its deployment fails (rolled back "
           "by its policy). Steps without it run as `runWith.posixUser`, or as groved's "
           "user when none is given")
      .key("start_group_read_timeout", &deployment_config::start_group_read_timeout, 10,
           grove::range{1, 600},
           "seconds each of the start's reads of the kernel's group waits for its answer "
           "(deciding a change of the group a deployment left undecided, checking the change "
           "a run cut short by kill -9 journaled), each tried at most 3 times; once one is "
           "unanswered, the undecided changes still to decide are kept for the next start "
           "unread, and the start's deployment work goes on")
      .key("default_posix_user", &deployment_config::default_posix_user, "",
           "Greengrass' nucleus `runWithDefault.posixUser`: `user` or `user:group` whose "
           "steps a generic component runs as (when groved is root) when its deployment gives "
           "no `runWith.posixUser` (its dependencies too); empty: groved's own user. Set, a "
           "step runs as root only when asked explicitly (`RequiresPrivilege`, a `posixUser` "
           "naming root, or this key naming root); a user or group that does not exist "
           "fails the deployment's preparation, never falls back to groved's user")
      .validate([](const deployment_config& c) -> caf::error {
        auto bad = [](std::string what) {
          return grove::make_error(grove::errc::invalid_config, std::move(what));
        };
        auto lower_alnum = [](char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'; };
        if (c.region.empty() || c.region.size() > 32
            || !std::all_of(c.region.begin(), c.region.end(), lower_alnum))
          return bad("region: '" + c.region + "' is not a region name ([a-z0-9-])");
        if (c.account_id.size() != 12
            || !std::all_of(c.account_id.begin(), c.account_id.end(),
                            [](char ch) { return ch >= '0' && ch <= '9'; }))
          return bad("account_id: '" + c.account_id + "' is not 12 digits");
        if (!c.api.development_plain_http && (c.api.cert_file.empty() || c.api.key_file.empty()))
          return bad("api.cert_file and api.key_file are required unless "
                     "api.development_plain_http (make them with tools/grove-certs server)");
        if (c.discovery.enabled) {
          if (c.discovery.cert_file.empty() || c.discovery.key_file.empty()
              || c.discovery.ca_file.empty())
            return bad("discovery.cert_file, discovery.key_file and discovery.ca_file are "
                       "required when discovery.enabled (the group PKI of tools/grove-certs)");
          if (c.thing_name.empty())
            return bad("discovery.enabled needs thing_name: the core's thing whose "
                       "connectivity information devices discover");
          auto any = [](const std::string& b) { return b == "0.0.0.0" || b == "::"; };
          if (c.discovery.port == c.api.port
              && (c.discovery.bind == c.api.bind || any(c.discovery.bind) || any(c.api.bind)))
            return bad("discovery.port: " + std::to_string(c.discovery.port)
                       + " is api.port on the same address; give one of them another port");
        }
        if (c.ip_detector.enabled && c.thing_name.empty())
          return bad("ip_detector.enabled needs thing_name: the core's thing whose "
                     "connectivity information it fills");
        if (!c.artifacts_base_url.empty() && !c.artifacts_base_url.starts_with("https://")
            && !c.artifacts_base_url.starts_with("http://"))
          return bad("artifacts_base_url: '" + c.artifacts_base_url
                     + "' is not an https:// (or http://) URL");
        if (auto colon = c.default_posix_user.find(':');
            !c.default_posix_user.empty()
            && (colon == 0 || colon + 1 == c.default_posix_user.size()
                || c.default_posix_user.find(':', colon + 1) != std::string::npos))
          return bad("default_posix_user: '" + c.default_posix_user
                     + "' is not `user` or `user:group`");
        if (c.credentials.empty())
          return bad("credentials: at least one access key is required (clients sign every "
                     "request with SigV4)");
        for (size_t i = 0; i < c.credentials.size(); ++i) {
          const auto& k = c.credentials[i];
          auto where = "credentials[" + std::to_string(i) + "]";
          if (k.access_key_id.size() < 16 || k.access_key_id.size() > 128
              || !std::all_of(k.access_key_id.begin(), k.access_key_id.end(), [](char ch) {
                   return (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
                 }))
            return bad(where + ".access_key_id: 16 to 128 of [A-Z0-9]");
          if (k.secret_access_key.size() < 16)
            return bad(where + ".secret_access_key: at least 16 characters");
          for (size_t j = 0; j < i; ++j)
            if (c.credentials[j].access_key_id == k.access_key_id)
              return bad(where + ".access_key_id: '" + k.access_key_id + "' appears twice");
          static const char* known[] = {"*",
                                        "CreateComponentVersion",
                                        "DescribeComponent",
                                        "GetComponent",
                                        "ListComponents",
                                        "ListComponentVersions",
                                        "DeleteComponent",
                                        "TagResource",
                                        "UntagResource",
                                        "ListTagsForResource",
                                        "ResolveComponentCandidates",
                                        "GetComponentVersionArtifact",
                                        "GetConnectivityInfo",
                                        "UpdateConnectivityInfo",
                                        "CreateDeployment",
                                        "GetDeployment",
                                        "ListDeployments",
                                        "CancelDeployment",
                                        "DeleteDeployment",
                                        "ListEffectiveDeployments",
                                        "ListInstalledComponents",
                                        "GetCoreDevice",
                                        "ListCoreDevices",
                                        // Image Builder's (imagebuilder.hpp), IAM-style
                                        // names: GetComponent etc. are v2's too.
                                        "imagebuilder:CreateComponent",
                                        "imagebuilder:GetComponent",
                                        "imagebuilder:ListComponents",
                                        "imagebuilder:DeleteComponent"};
          for (const auto& op : k.operations)
            if (std::find(std::begin(known), std::end(known), op) == std::end(known)
                && !is_v1_operation(op))
              return bad(where + ".operations: unknown operation '" + op + "'");
        }
        return {};
      });
  }
};

} // namespace grove::deployment
