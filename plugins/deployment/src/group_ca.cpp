#include "group_ca.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <map>
#include <memory>
#include <regex>
#include <set>

#include "grove/errors.hpp"
#include "grove/file.hpp"
#include "http.hpp"
#include "openssl_error.hpp"

namespace grove::deployment {

namespace fs = std::filesystem;

namespace {

template <class T, void (*F)(T*)>
struct deleter {
  void operator()(T* p) const {
    F(p);
  }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, deleter<EVP_PKEY, EVP_PKEY_free>>;
using x509_ptr = std::unique_ptr<X509, deleter<X509, X509_free>>;
using bio_ptr = std::unique_ptr<BIO, deleter<BIO, BIO_free_all>>;
using crl_ptr = std::unique_ptr<X509_CRL, deleter<X509_CRL, X509_CRL_free>>;

caf::error ssl_error(const std::string& what) {
  return make_error(errc::system_error, "group CA: " + what + ": " + openssl_error());
}

std::string bio_text(BIO* b) {
  char* data = nullptr;
  auto n = BIO_get_mem_data(b, &data);
  return std::string{data, static_cast<size_t>(n)};
}

bool add_ext(X509* cert, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  auto* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (!ext)
    return false;
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

} // namespace

caf::expected<group_ca_material> make_group_ca(const std::string& group_id, int64_t now_ms,
                                               int64_t validity_ms) {
  pkey_ptr key{EVP_EC_gen("P-256")};
  if (!key)
    return ssl_error("cannot make an EC P-256 key");
  x509_ptr cert{X509_new()};
  if (!cert || X509_set_version(cert.get(), 2) != 1)
    return ssl_error("cannot make the CA certificate");
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1)
    return ssl_error("RAND_bytes failed");
  serial[0] &= 0x7f; // a positive INTEGER
  auto* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  bool serial_ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get())) != nullptr;
  BN_free(bn);
  if (!serial_ok)
    return ssl_error("cannot set the CA's serial number");
  if (!ASN1_TIME_set(X509_getm_notBefore(cert.get()), static_cast<time_t>(now_ms / 1000))
      || !ASN1_TIME_set(X509_getm_notAfter(cert.get()),
                        static_cast<time_t>((now_ms + validity_ms) / 1000)))
    return ssl_error("cannot set the CA's validity");
  // The CN names the group and the moment, so two CAs of a group differ in subject too
  // (OpenSSL's hashed trust directory then keeps them under different names).
  auto* name = X509_get_subject_name(cert.get());
  // (A CN is at most 64 characters: the group id's first block and the time fit.)
  auto cn = "Grove Group CA " + group_id.substr(0, 8) + " " + std::to_string(now_ms);
  auto* ou = group_id.size() <= 64 ? group_id.c_str() : "group";
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>("Grove"), -1, -1, 0)
        != 1
      || X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_UTF8,
                                    reinterpret_cast<const unsigned char*>(ou), -1, -1, 0)
           != 1
      || X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                    reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0)
           != 1)
    return ssl_error("cannot name the CA");
  if (X509_set_issuer_name(cert.get(), name) != 1 || X509_set_pubkey(cert.get(), key.get()) != 1)
    return ssl_error("cannot set the CA's issuer and key");
  // pathlen:0: the group CA signs devices only, never another CA.
  if (!add_ext(cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0")
      || !add_ext(cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign")
      || !add_ext(cert.get(), NID_subject_key_identifier, "hash"))
    return ssl_error("cannot add the CA's extensions");
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0)
    return ssl_error("cannot sign the CA certificate");
  group_ca_material out;
  unsigned char* der = nullptr;
  int der_len = i2d_X509(cert.get(), &der);
  if (der_len <= 0)
    return ssl_error("cannot encode the CA certificate");
  out.id = hex(sha256(std::string_view{reinterpret_cast<char*>(der),
                                       static_cast<size_t>(der_len)}));
  OPENSSL_free(der);
  bio_ptr c{BIO_new(BIO_s_mem())};
  bio_ptr k{BIO_new(BIO_s_mem())};
  if (PEM_write_bio_X509(c.get(), cert.get()) != 1
      || PEM_write_bio_PrivateKey(k.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return ssl_error("cannot write the CA as PEM");
  out.certificate = bio_text(c.get());
  out.private_key = bio_text(k.get());
  out.not_after_ms = (now_ms + validity_ms) / 1000 * 1000;
  auto crl = make_group_crl(out.certificate, out.private_key, now_ms);
  if (!crl)
    return std::move(crl.error());
  out.crl = std::move(*crl);
  return out;
}

caf::expected<std::string> make_group_crl(const std::string& certificate,
                                          const std::string& private_key, int64_t now_ms) {
  bio_ptr cb{BIO_new_mem_buf(certificate.data(), static_cast<int>(certificate.size()))};
  x509_ptr cert{PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr)};
  if (!cert)
    return ssl_error("the CA certificate cannot be read");
  bio_ptr kb{BIO_new_mem_buf(private_key.data(), static_cast<int>(private_key.size()))};
  pkey_ptr key{PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr)};
  if (!key)
    return ssl_error("the CA key cannot be read");
  // nextUpdate is the CA's notAfter: the CRL does not expire before the CA does, so it
  // needs no re-signing (refresh_trust signs one only where it is missing).
  std::unique_ptr<ASN1_TIME, deleter<ASN1_TIME, ASN1_TIME_free>> last{
    ASN1_TIME_set(nullptr, static_cast<time_t>(now_ms / 1000))};
  crl_ptr crl{X509_CRL_new()};
  if (!crl || !last || X509_CRL_set_version(crl.get(), 1) != 1
      || X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(cert.get())) != 1
      || X509_CRL_set1_lastUpdate(crl.get(), last.get()) != 1
      || X509_CRL_set1_nextUpdate(crl.get(), X509_get0_notAfter(cert.get())) != 1)
    return ssl_error("cannot fill the CA's CRL");
  if (X509_CRL_sign(crl.get(), key.get(), EVP_sha256()) == 0)
    return ssl_error("cannot sign the CA's CRL");
  bio_ptr out{BIO_new(BIO_s_mem())};
  if (PEM_write_bio_X509_CRL(out.get(), crl.get()) != 1)
    return ssl_error("cannot write the CA's CRL as PEM");
  return bio_text(out.get());
}

caf::error write_trust_dir(const fs::path& dir, const std::vector<trust_entry>& cas) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return make_error(errc::system_error, "cannot create " + dir.string() + ": " + ec.message());
  // Everyone may read the certificates (the broker may run as another user).
  fs::permissions(dir, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec
                         | fs::perms::others_read | fs::perms::others_exec,
                  fs::perm_options::replace, ec);
  std::map<unsigned long, int> next;
  std::set<std::string> wanted;
  for (const auto& [pem, crl] : cas) {
    bio_ptr b{BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))};
    x509_ptr cert{PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr)};
    if (!cert)
      return ssl_error("a stored CA certificate cannot be read");
    auto hash = X509_subject_name_hash(cert.get());
    char name[32];
    auto n = next[hash]++;
    // The CA's CRL (issuer = its subject, so the same hash): with a crl_file the broker
    // and discovery check a CRL for every CA of a chain, and a group CA has no other. It
    // is written first, so a reader never sees the certificate without its CRL.
    if (!crl.empty()) {
      std::snprintf(name, sizeof name, "%08lx.r%d", hash, n);
      wanted.insert(name);
      if (auto err = write_file_atomically(dir / name, crl, {.mode = 0644}))
        return err;
    }
    std::snprintf(name, sizeof name, "%08lx.%d", hash, n);
    wanted.insert(name);
    if (auto err = write_file_atomically(dir / name, pem, {.mode = 0644}))
      return err;
  }
  static const std::regex hashed{"[0-9a-f]{8}\\.r?[0-9]+"};
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    auto n = e.path().filename().string();
    if (std::regex_match(n, hashed) && !wanted.count(n))
      fs::remove(e.path(), ec);
  }
  return sync_directory(dir);
}

} // namespace grove::deployment
