#include "discovery_server.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "grove/errors.hpp"
#include "openssl_error.hpp"

namespace grove::deployment {

namespace {

// The CN of the verified peer certificate, "" when there is none or it has several.
std::string peer_cn(const SSL* ssl) {
  if (ssl == nullptr)
    return {};
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr)
    return {};
  std::string out;
  X509_NAME* name = X509_get_subject_name(cert);
  int at = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (at >= 0 && X509_NAME_get_index_by_NID(name, NID_commonName, at) < 0) {
    unsigned char* text = nullptr;
    int n = ASN1_STRING_to_UTF8(&text, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at)));
    if (n > 0)
      out.assign(reinterpret_cast<char*>(text), static_cast<size_t>(n));
    OPENSSL_free(text);
  }
  X509_free(cert);
  return out;
}

// Loads every CRL of a PEM file into the context's store and turns checking on.
bool load_crl(SSL_CTX& ctx, const std::string& file, std::string& why) {
  BIO* bio = BIO_new_file(file.c_str(), "r");
  if (bio == nullptr) {
    why = "discovery.crl_file: '" + file + "': cannot be read";
    return false;
  }
  X509_STORE* store = SSL_CTX_get_cert_store(&ctx);
  int n = 0;
  while (X509_CRL* crl = PEM_read_bio_X509_CRL(bio, nullptr, nullptr, nullptr)) {
    X509_STORE_add_crl(store, crl);
    X509_CRL_free(crl);
    ++n;
  }
  ERR_clear_error(); // the end of the file reads as an error
  BIO_free(bio);
  if (n == 0) {
    why = "discovery.crl_file: '" + file + "': no PEM revocation list in it";
    return false;
  }
  X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
  return true;
}

} // namespace

caf::expected<std::unique_ptr<discovery_server>>
discovery_server::make(const discovery_config& cfg, parts p) {
  auto bad = [](std::string what) {
    return grove::make_error(grove::errc::invalid_config, std::move(what));
  };
  std::ifstream in{cfg.ca_file};
  if (!in)
    return bad("discovery.ca_file: '" + cfg.ca_file.string() + "': cannot be read");
  std::stringstream pem;
  pem << in.rdbuf();
  p.settings.cas = pem_certificates(pem.str());
  if (p.settings.cas.empty())
    return bad("discovery.ca_file: '" + cfg.ca_file.string() + "': no PEM certificate in it");
  std::string why;
  auto trust_dir = p.trust_dir;
  auto setup = [&cfg, &why, &trust_dir](SSL_CTX& ctx) {
    SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(&ctx, SSL_OP_NO_COMPRESSION);
    if (SSL_CTX_use_certificate_chain_file(&ctx, cfg.cert_file.c_str()) != 1) {
      why = "discovery.cert_file: '" + cfg.cert_file.string()
            + "' is not a PEM certificate: " + openssl_error();
      return false;
    }
    if (SSL_CTX_use_PrivateKey_file(&ctx, cfg.key_file.c_str(), SSL_FILETYPE_PEM) != 1
        || SSL_CTX_check_private_key(&ctx) != 1) {
      why = "discovery.key_file: '" + cfg.key_file.string()
            + "' is not the PEM key of discovery.cert_file: " + openssl_error();
      return false;
    }
    if (SSL_CTX_load_verify_locations(&ctx, cfg.ca_file.c_str(),
                                      trust_dir.empty() ? nullptr : trust_dir.c_str())
        != 1) {
      why = "discovery.ca_file: '" + cfg.ca_file.string() + "': " + openssl_error();
      return false;
    }
    // The CA names go in the CertificateRequest, so a client picks the right certificate.
    if (auto* names = SSL_load_client_CA_file(cfg.ca_file.c_str()))
      SSL_CTX_set_client_CA_list(&ctx, names);
    if (!cfg.crl_file.empty() && !load_crl(ctx, cfg.crl_file.string(), why))
      return false;
    // No client certificate, or one that does not chain to the group CA: no handshake.
    SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    return true;
  };
  std::unique_ptr<discovery_server> self{new discovery_server};
  self->parts_ = std::move(p);
  auto tls = std::make_unique<httplib::SSLServer>(setup);
  if (!tls->is_valid())
    return bad(why.empty() ? "discovery: cannot set up TLS: " + openssl_error() : why);
  self->server_ = std::move(tls);
  auto& srv = *self->server_;
  srv.set_tcp_nodelay(true);
  srv.new_task_queue = [] { return new httplib::ThreadPool(2); };
  // A discovery request has no body: anything larger than this is refused (413) unread.
  srv.set_payload_max_length(1024);
  srv.set_keep_alive_max_count(10);
  auto* raw = self.get();
  auto all = [raw](const httplib::Request& req, httplib::Response& res) {
    auto g = [raw] {
      std::lock_guard guard{raw->mtx_};
      return raw->group_;
    }();
    discovery_outcome out;
    try {
      out = discover(raw->parts_.settings, g.get(), req.method, req.target, peer_cn(req.ssl),
                     raw->parts_.sources);
    } catch (const std::exception& e) {
      out.response.status = 500;
      out.response.body = R"({"message":"internal error"})";
      out.refusal = std::string{"internal error: "} + e.what();
    }
    raw->parts_.requests.inc();
    if (!out.refusal.empty()) {
      raw->parts_.refused.inc();
      auto n = raw->refusals_.fetch_add(1);
      if (raw->parts_.log && (n < 100 || n % 1000 == 0))
        raw->parts_.log->warn("deployment: discovery refused from {}: {}", req.remote_addr,
                              out.refusal);
    }
    res.status = out.response.status;
    for (auto& [k, v] : out.response.headers)
      res.set_header(k, v);
    res.set_content(out.response.body, out.response.content_type.c_str());
  };
  srv.Get(".*", all).Post(".*", all).Put(".*", all).Patch(".*", all).Delete(".*", all)
    .Options(".*", all);
  if (!srv.bind_to_port(cfg.bind, cfg.port))
    return grove::make_error(grove::errc::system_error,
                             "discovery: cannot listen on " + cfg.bind + ":"
                               + std::to_string(cfg.port));
  return self;
}

discovery_server::~discovery_server() {
  stop();
}

void discovery_server::start() {
  if (thread_.joinable())
    return;
  thread_ = std::thread([srv = server_.get()] { srv->listen_after_bind(); });
  // httplib's stop() does nothing before the loop runs: a stop() right after start()
  // would then wait on a server that listens forever. The loop starts at once.
  for (int i = 0; i < 2000 && !server_->is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
}

void discovery_server::stop() {
  if (server_)
    server_->stop();
  if (thread_.joinable())
    thread_.join();
}

void discovery_server::set_group(std::optional<discovery_group> g) {
  auto next = g ? std::make_shared<const discovery_group>(std::move(*g)) : nullptr;
  std::lock_guard guard{mtx_};
  group_ = std::move(next);
}

} // namespace grove::deployment
