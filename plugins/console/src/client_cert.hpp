#pragma once

// Client-certificate login (README.md, "Security"): which operator a TLS client's
// certificate names. An operator account may name a certificate by its subject CN, its
// issuer CA (a PEM file), or both; a certificate logs in as the first account it
// matches, and only when it verifies (chain, dates, client purpose) against that
// account's CA, or against the console's `client_ca_file` for an account that names a
// CN alone. Apart from the server so the unit test calls it with openssl-made files.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace grove::console {

/// One account's certificate: empty fields do not count, at least one is set.
struct certificate_rule {
  /// The operator it logs in as.
  std::string name;
  /// The certificate's subject CN must be this.
  std::string cn;
  /// The certificate must verify against this CA (PEM); empty: against client_ca_file.
  std::string ca_file;
};

/// Matches verified client certificates to operators; safe from any thread once loaded.
class certificate_matcher {
public:
  certificate_matcher();
  ~certificate_matcher();
  certificate_matcher(const certificate_matcher&) = delete;
  certificate_matcher& operator=(const certificate_matcher&) = delete;

  /// Loads the rules and their CA files; false with `error` naming the file at fault.
  bool load(std::vector<certificate_rule> rules, const std::string& client_ca_file,
            std::string& error);

  /// True when some account may log in with a certificate (the server then asks for one).
  bool enabled() const noexcept {
    return !rules_.empty();
  }

  /// Every CA file the server accepts client certificates from (its request's CA list).
  const std::vector<std::string>& ca_files() const noexcept {
    return ca_files_;
  }

  /// The operator `cert` (with the client's `chain` of intermediates, may be null) logs
  /// in as, or nullopt.
  std::optional<std::string> match(X509* cert, STACK_OF(X509) * chain) const;

  /// The same for the peer of a TLS connection.
  std::optional<std::string> match(const SSL* ssl) const;

  /// Sets `ctx` up to ask for an optional client certificate from ca_files(). A
  /// certificate that does not verify does not end the handshake: match() refuses it,
  /// and the client may still log in with a password.
  bool setup(SSL_CTX& ctx) const;

private:
  struct compiled;
  std::vector<compiled> rules_;
  std::vector<std::string> ca_files_;
};

/// The single subject CN of `cert` (UTF-8), or nullopt (none, several, or not text).
std::optional<std::string> certificate_cn(X509* cert);

} // namespace grove::console
