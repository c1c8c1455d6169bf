#include "client_cert.hpp"

#include <map>

#include <openssl/err.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

namespace grove::console {

namespace {

using store_ptr = std::shared_ptr<X509_STORE>;

store_ptr load_store(const std::string& file, std::string& error) {
  store_ptr store{X509_STORE_new(), &X509_STORE_free};
  if (!store || X509_STORE_load_file(store.get(), file.c_str()) != 1) {
    ERR_clear_error();
    error = "'" + file + "': no PEM CA certificate to read";
    return nullptr;
  }
  return store;
}

bool verifies(X509_STORE* store, X509* cert, STACK_OF(X509) * chain) {
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx{X509_STORE_CTX_new(),
                                                                       &X509_STORE_CTX_free};
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store, cert, chain) != 1)
    return false;
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  bool ok = X509_verify_cert(ctx.get()) == 1;
  ERR_clear_error();
  return ok;
}

} // namespace

struct certificate_matcher::compiled {
  std::string name;
  std::string cn;
  store_ptr store;
};

certificate_matcher::certificate_matcher() = default;
certificate_matcher::~certificate_matcher() = default;

bool certificate_matcher::load(std::vector<certificate_rule> rules,
                               const std::string& client_ca_file, std::string& error) {
  rules_.clear();
  ca_files_.clear();
  std::map<std::string, store_ptr> stores; // one per file
  auto store_of = [&](const std::string& file) -> store_ptr {
    if (auto i = stores.find(file); i != stores.end())
      return i->second;
    auto s = load_store(file, error);
    if (s) {
      stores.emplace(file, s);
      ca_files_.push_back(file);
    }
    return s;
  };
  store_ptr common;
  if (!client_ca_file.empty()) {
    common = store_of(client_ca_file);
    if (!common) {
      error = "client_ca_file: " + error;
      return false;
    }
  }
  for (size_t i = 0; i < rules.size(); ++i) {
    auto& r = rules[i];
    auto where = "operators[" + std::to_string(i) + "]";
    if (r.cn.empty() && r.ca_file.empty())
      continue; // a password account only
    store_ptr store = common;
    if (!r.ca_file.empty()) {
      store = store_of(r.ca_file);
      if (!store) {
        error = where + ".certificate_ca_file: " + error;
        return false;
      }
    }
    if (!store) {
      error = where + ".certificate_cn: needs certificate_ca_file or the console's "
                      "client_ca_file (which CA vouches for the CN)";
      return false;
    }
    rules_.push_back(compiled{std::move(r.name), std::move(r.cn), std::move(store)});
  }
  return true;
}

std::optional<std::string> certificate_matcher::match(X509* cert, STACK_OF(X509) * chain) const {
  if (cert == nullptr)
    return std::nullopt;
  auto cn = certificate_cn(cert);
  for (const auto& r : rules_) {
    if (!r.cn.empty() && (!cn || *cn != r.cn))
      continue;
    if (verifies(r.store.get(), cert, chain))
      return r.name;
  }
  return std::nullopt;
}

std::optional<std::string> certificate_matcher::match(const SSL* ssl) const {
  if (ssl == nullptr || rules_.empty())
    return std::nullopt;
  std::unique_ptr<X509, decltype(&X509_free)> cert{SSL_get1_peer_certificate(ssl), &X509_free};
  // On the server side the peer chain leaves the leaf out: the intermediates only.
  return match(cert.get(), SSL_get_peer_cert_chain(ssl));
}

bool certificate_matcher::setup(SSL_CTX& ctx) const {
  if (rules_.empty())
    return true;
  STACK_OF(X509_NAME)* names = sk_X509_NAME_new_null();
  if (names == nullptr)
    return false;
  for (const auto& f : ca_files_) {
    if (SSL_CTX_load_verify_locations(&ctx, f.c_str(), nullptr) != 1
        || SSL_add_file_cert_subjects_to_stack(names, f.c_str()) != 1) {
      sk_X509_NAME_pop_free(names, X509_NAME_free);
      return false;
    }
  }
  SSL_CTX_set_client_CA_list(&ctx, names); // takes `names`
  // Asked for, never required; the handshake goes on whatever the client sends, and
  // match() verifies it against the account's own CA.
  SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
  static const unsigned char sid[] = "grove-console";
  SSL_CTX_set_session_id_context(&ctx, sid, sizeof sid - 1);
  return true;
}

std::optional<std::string> certificate_cn(X509* cert) {
  X509_NAME* subject = X509_get_subject_name(cert);
  if (subject == nullptr)
    return std::nullopt;
  int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (i < 0 || X509_NAME_get_index_by_NID(subject, NID_commonName, i) >= 0)
    return std::nullopt;
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0)
    return std::nullopt;
  std::string out{reinterpret_cast<char*>(utf8), static_cast<size_t>(n)};
  OPENSSL_free(utf8);
  if (out.find('\0') != std::string::npos)
    return std::nullopt;
  return out;
}

} // namespace grove::console
