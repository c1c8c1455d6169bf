// The console's client-certificate login (plugins/console/src/client_cert.cpp) on the
// certificates a TLS client may send: the input is one certificate, DER. certificate_cn
// gives a single CN without NUL or nothing; the matcher logs nobody in with it: the only
// account's CA is made here, in memory, and its key never signs anything, so a match
// would be a forged certificate accepted (CN bob, the account's name, is in the corpus).

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "client_cert.hpp"

using namespace grove::console;

namespace {

// A self-signed CA "fuzz-ops-ca" written to a temporary file; the matcher's one account
// is bob: CN bob, issued by that CA.
const certificate_matcher& matcher() {
  static certificate_matcher* m = [] {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* ca = X509_new();
    X509_set_version(ca, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(ca), 1);
    X509_gmtime_adj(X509_getm_notBefore(ca), 0);
    X509_gmtime_adj(X509_getm_notAfter(ca), 86400);
    X509_NAME* name = X509_get_subject_name(ca);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("fuzz-ops-ca"), -1, -1, 0);
    X509_set_issuer_name(ca, name);
    X509_set_pubkey(ca, key);
    X509_sign(ca, key, EVP_sha256());
    char path[] = "/tmp/fuzz-console-ca-XXXXXX";
    int fd = mkstemp(path);
    FILE* f = fdopen(fd, "w");
    PEM_write_X509(f, ca);
    fclose(f);
    auto* made = new certificate_matcher;
    std::string error;
    if (!made->load({{"bob", "bob", path}}, "", error) || !made->enabled())
      std::abort();
    std::remove(path);
    X509_free(ca);
    EVP_PKEY_free(key);
    return made;
  }();
  return *m;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& m = matcher();
  const unsigned char* p = data;
  std::unique_ptr<X509, decltype(&X509_free)> cert{
    d2i_X509(nullptr, &p, static_cast<long>(size)), &X509_free};
  if (!cert)
    return 0;
  if (auto cn = certificate_cn(cert.get()); cn && cn->find('\0') != std::string::npos)
    std::abort(); // a CN with a NUL in it could end early where it is compared
  if (m.match(cert.get(), nullptr))
    std::abort(); // a certificate the account's CA never signed logged in
  return 0;
}
