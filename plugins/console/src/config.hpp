#pragma once

// The console plugin's configuration (grove::config_map): the keys an operator writes
// under `config:` in the image profile; README.md's table is generated from it.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "grove/config_map.hpp"
#include "grove/errors.hpp"

namespace grove::console {

/// One operator account (`operators:` entry).
struct operator_config {
  /// Login name, logged with every action.
  std::string name;
  /// libsodium's argon2id string (`$argon2id$v=19$...`); empty: no password login.
  std::string password_hash;
  /// A client certificate with this subject CN logs in as this operator.
  std::string certificate_cn;
  /// A client certificate issued by this CA (PEM) logs in as this operator.
  std::filesystem::path certificate_ca_file;

  /// The keys.
  static grove::config_map<operator_config> map() {
    return grove::config_map<operator_config>{}
      .key_no_default("name", &operator_config::name, grove::required,
                      "login name (1 to 64 of [A-Za-z0-9._-]); every action is logged with it")
      .key("password_hash", &operator_config::password_hash, "",
           "argon2id hash of the password as libsodium's crypto_pwhash_str writes it "
           "(`$argon2id$v=19$m=...`); print one with `grove-console-passwd`. Empty: no "
           "password login (then a certificate is required)")
      .key("certificate_cn", &operator_config::certificate_cn, "",
           "a client certificate whose subject CN is this logs in as this operator (it must "
           "verify against `certificate_ca_file`, else the console's `client_ca_file`)")
      .key("certificate_ca_file", &operator_config::certificate_ca_file, "",
           "a client certificate issued by this CA (PEM, chain and dates verified) logs in as "
           "this operator; with `certificate_cn`, both must hold");
  }
};

/// The plugin's configuration.
struct console_config {
  /// Listen address.
  std::string bind;
  /// Listen port.
  uint16_t port = 0;
  /// Server certificate (PEM).
  std::filesystem::path cert_file;
  /// Its key (PEM).
  std::filesystem::path key_file;
  /// Who may log in.
  std::vector<operator_config> operators;
  /// The CA that vouches for operators' certificates named by CN alone.
  std::filesystem::path client_ca_file;
  /// Lifetime of a session (seconds).
  int64_t session_seconds = 0;
  /// Failed logins allowed per name and per client address within `login_window_seconds`.
  int64_t login_max_failures = 0;
  /// The window of `login_max_failures` (seconds), also how long a locked key waits.
  int64_t login_window_seconds = 0;
  /// Server threads.
  int64_t threads = 0;
  /// Live streams (server-sent events) open at once.
  int64_t max_streams = 0;
  /// How often the live status is sent (milliseconds).
  int64_t status_interval_ms = 0;

  /// The keys, their defaults, ranges and meanings.
  static grove::config_map<console_config> map() {
    return grove::config_map<console_config>{}
      .key("bind", &console_config::bind, "127.0.0.1",
           "listen address; the default keeps the console on the device itself (reach it "
           "through an SSH tunnel)")
      .key("port", &console_config::port, 8444, grove::range{1, 65535}, "listen port")
      .key("cert_file", &console_config::cert_file, "",
           "server certificate, PEM (e.g. the group PKI's `server.crt` from "
           "tools/grove-certs); required")
      .key("key_file", &console_config::key_file, "", "key of `cert_file`, PEM; required")
      .list("operators", &console_config::operators, operator_config::map(),
            "operator accounts; at least one is required (no account, no access)")
      .key("client_ca_file", &console_config::client_ca_file, "",
           "CA (PEM) of operators' client certificates for accounts that name only "
           "`certificate_cn`; with any certificate account the server asks browsers for a "
           "certificate (optional: a password still logs in)")
      .key("session_seconds", &console_config::session_seconds, 3600, grove::range{60, 86400},
           "a session ends this long after login (the cookie's Max-Age too)")
      .key("login_max_failures", &console_config::login_max_failures, 5, grove::range{1, 1000},
           "failed logins per name and per client address within `login_window_seconds`; "
           "past it the login is answered 429 until the window passes")
      .key("login_window_seconds", &console_config::login_window_seconds, 60,
           grove::range{1, 86400}, "the window of `login_max_failures` (seconds)")
      .key("threads", &console_config::threads, 8, grove::range{2, 64},
           "server threads (never CAF's workers); each open live stream holds one")
      .key("max_streams", &console_config::max_streams, 4, grove::range{1, 62},
           "live streams (status, messages, followed logs) open at once; more are answered "
           "503. Must be "
           "below `threads`, so a thread is always left for the pages and actions")
      .key("status_interval_ms", &console_config::status_interval_ms, 1000,
           grove::range{200, 60000}, "how often the live status stream sends the status")
      .validate([](const console_config& c) -> caf::error {
        auto bad = [](std::string what) {
          return grove::make_error(grove::errc::invalid_config, std::move(what));
        };
        if (c.cert_file.empty() || c.key_file.empty())
          return bad("cert_file and key_file are required (the console serves HTTPS only; "
                     "make them with tools/grove-certs server)");
        if (c.operators.empty())
          return bad("operators: at least one operator account is required");
        if (c.max_streams >= c.threads)
          return bad("max_streams: " + std::to_string(c.max_streams)
                     + " must be below threads (" + std::to_string(c.threads) + ")");
        for (size_t i = 0; i < c.operators.size(); ++i) {
          const auto& o = c.operators[i];
          auto where = "operators[" + std::to_string(i) + "]";
          auto ok_char = [](char ch) {
            return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
                   || ch == '.' || ch == '_' || ch == '-';
          };
          if (o.name.empty() || o.name.size() > 64
              || !std::all_of(o.name.begin(), o.name.end(), ok_char))
            return bad(where + ".name: '" + o.name + "' is not 1 to 64 of [A-Za-z0-9._-]");
          if (o.password_hash.empty() && o.certificate_cn.empty()
              && o.certificate_ca_file.empty())
            return bad(where + ": neither password_hash nor certificate_cn / "
                               "certificate_ca_file: this account could never log in");
          if (!o.password_hash.empty() && !o.password_hash.starts_with("$argon2id$"))
            return bad(where + ".password_hash: not an argon2id hash ($argon2id$...); print "
                               "one with grove-console-passwd");
          if (!o.certificate_cn.empty() && o.certificate_ca_file.empty()
              && c.client_ca_file.empty())
            return bad(where + ".certificate_cn: needs certificate_ca_file or the console's "
                               "client_ca_file (which CA vouches for the CN)");
          for (size_t j = 0; j < i; ++j)
            if (c.operators[j].name == o.name)
              return bad(where + ".name: '" + o.name + "' appears twice");
        }
        return {};
      });
  }
};

} // namespace grove::console
