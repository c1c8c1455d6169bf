#pragma once

// A Greengrass v1 group's certificate authorities (README.md, "Group CA"): a new EC P-256
// key pair and self-signed CA certificate (OpenSSL), the private key written 0600 and
// durably under the plugin's state directory, and the trust directory of the CAs the
// broker (message_manager's `broker.ca_dir`, Mosquitto's `capath`) and discovery accept:
// OpenSSL's hashed names (`<subject hash>.<n>`), looked up per handshake, so a CA added
// there is trusted by the running broker without a restart.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace grove::deployment {

/// A new CA's parts.
struct group_ca_material {
  /// Its id: the lower-case hex SHA-256 of the certificate's DER (64 characters).
  std::string id;
  /// The certificate, PEM.
  std::string certificate;
  /// The private key, PEM (PKCS#8); written to disk only, never answered.
  std::string private_key;
  /// notAfter, ms since the epoch.
  int64_t not_after_ms = 0;
  /// An empty CRL signed by the CA (nextUpdate = the CA's notAfter), PEM.
  std::string crl;
};

/// A CA of the trust directory: its certificate and its CRL (PEM; may be empty).
struct trust_entry {
  /// The certificate, PEM.
  std::string certificate;
  /// The CA's CRL, PEM, written as `<hash>.r<n>`; empty: none.
  std::string crl;
};

/// Signs an empty CRL with the CA's key: lastUpdate `now_ms`, nextUpdate the CA's
/// notAfter (so it never needs re-signing while the CA is valid).
caf::expected<std::string> make_group_crl(const std::string& certificate,
                                          const std::string& private_key, int64_t now_ms);

/// Makes a CA for `group_id` valid from `now_ms` for `validity_ms`.
caf::expected<group_ca_material> make_group_ca(const std::string& group_id, int64_t now_ms,
                                               int64_t validity_ms);

/// Makes `dir` hold exactly `cas` under OpenSSL's hashed names (`<hash>.N` the
/// certificate, `<hash>.rN` its CRL), each file written with grove::write_file_atomically
/// (mode 0644: certificates and CRLs are public); other `*.N` and `*.rN` files are removed.
caf::error write_trust_dir(const std::filesystem::path& dir, const std::vector<trust_entry>& cas);

} // namespace grove::deployment
