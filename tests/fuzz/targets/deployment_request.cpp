// The deployment plugin's request checks (plugins/deployment/src/sigv4.cpp, http.cpp):
// the input is a request as the API sees it ("METHOD TARGET" line, "name: value" header
// lines, a blank line, the body). SigV4 verification of it never fails open: an
// unsigned or garbled request is refused with one of AWS's four types. Signing it with a
// known key and verifying must pass, and must fail once the body changes. Percent and
// base64 coding round-trip. The target is also a pre-signed artifact URL (artifact_uri.cpp):
// it never passes unsigned, and one the core signs always does; the first line after the
// method, as an artifact Uri, maps to a URL without dot segments or a file inside the
// configured directory, or is refused with a reason.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "artifact_uri.hpp"
#include "http.hpp"
#include "sigv4.hpp"

using namespace grove::deployment;

namespace {

http_request read_request(std::string_view in) {
  http_request r;
  auto eol = in.find('\n');
  auto first = in.substr(0, eol);
  in = eol == std::string_view::npos ? std::string_view{} : in.substr(eol + 1);
  auto sp = first.find(' ');
  r.method = std::string{first.substr(0, sp)};
  r.target = sp == std::string_view::npos ? "/" : std::string{first.substr(sp + 1)};
  while (!in.empty()) {
    eol = in.find('\n');
    auto line = in.substr(0, eol);
    in = eol == std::string_view::npos ? std::string_view{} : in.substr(eol + 1);
    if (line.empty())
      break;
    auto colon = line.find(':');
    if (colon == std::string_view::npos)
      continue;
    std::string name{line.substr(0, colon)};
    for (auto& c : name)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    auto value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ')
      value.remove_prefix(1);
    r.headers.emplace_back(std::move(name), std::string{value});
  }
  r.body = std::string{in};
  return r;
}

bool plain_name(const std::string& n) {
  if (n.empty())
    return false;
  for (char c : n)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
      return false;
  return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view all{reinterpret_cast<const char*>(data), size};
  const auto now = std::chrono::system_clock::time_point{std::chrono::seconds{1764676800}};
  const sigv4_scope scope{"us-east-1"};
  auto secret = [](std::string_view id) -> std::optional<std::string> {
    if (id == "AKIAGROVEFUZZ00001")
      return std::string{"fuzz-secret-fuzz-secret"};
    return std::nullopt;
  };
  auto req = read_request(all);
  auto verdict = verify_sigv4(req, scope, secret, now);
  if (auto* e = std::get_if<auth_error>(&verdict)) {
    if (e->type != "MissingAuthenticationTokenException" && e->type != "IncompleteSignatureException"
        && e->type != "UnrecognizedClientException" && e->type != "InvalidSignatureException")
      std::abort();
  } else if (std::get<std::string>(verdict) != "AKIAGROVEFUZZ00001") {
    std::abort(); // only the known key can pass
  }
  // Signed by a client with the key: passes; with the body changed: refused.
  http_request fresh = req;
  std::erase_if(fresh.headers, [](const auto& h) {
    return h.first == "authorization" || h.first == "x-amz-date"
           || h.first == "x-amz-content-sha256" || !plain_name(h.first); // the signer sets these
  });
  // The server wants host signed (as AWS does); every client sends it.
  if (fresh.header("host").empty())
    fresh.headers.emplace_back("host", "127.0.0.1:8443");
  if (fresh.method.empty() || fresh.method.find_first_of(" \n") != std::string::npos)
    fresh.method = "GET";
  sign_sigv4(fresh, scope, "AKIAGROVEFUZZ00001", "fuzz-secret-fuzz-secret", now);
  if (!std::holds_alternative<std::string>(verify_sigv4(fresh, scope, secret, now)))
    std::abort();
  fresh.body += "x";
  if (std::holds_alternative<std::string>(verify_sigv4(fresh, scope, secret, now)))
    std::abort();
  // Codings.
  std::string bytes{all.substr(0, 512)};
  if (uri_decode(uri_encode(bytes, false)) != bytes || uri_decode(uri_encode(bytes, true)) != bytes)
    std::abort();
  std::string back;
  if (!base64_decode(base64_encode(bytes), back) || back != bytes)
    std::abort();
  (void) base64_decode(bytes, back);
  (void) parse_query(req.raw_query());
  std::string why;
  (void) parse_authorization(req.header("authorization"), why);
  // Pre-signed artifact URLs.
  const std::string url_key(32, 'k');
  std::string sha;
  auto pc = check_presigned(url_key, req.raw_path(), req.raw_query(), 1764676800, sha);
  if (pc == presign_check::valid && (sha.size() != 64 || !req.raw_path().starts_with(presigned_prefix)))
    std::abort();
  std::string name = bytes.substr(0, 64);
  if (!name.empty() && name.find('/') == std::string::npos) {
    auto h = hex(sha256(bytes));
    auto url = presign_artifact(url_key, h, name, 1764676800 + 60);
    auto q = url.find('?');
    std::string got;
    if (check_presigned(url_key, std::string_view{url}.substr(0, q), std::string_view{url}.substr(q + 1),
                        1764676800, got)
          != presign_check::valid
        || got != h)
      std::abort();
    if (check_presigned(url_key, std::string_view{url}.substr(0, q), std::string_view{url}.substr(q + 1),
                        1764676800 + 60, got)
        != presign_check::expired)
      std::abort();
  }
  // Artifact URIs: the target as a Uri.
  artifact_uri_settings us{"https://mirror.example/base", "/srv/artifacts"};
  auto src = resolve_artifact_uri(req.target, us, why);
  if (why.empty()) {
    if (src.url.empty() == src.file.empty())
      std::abort();
    // The path after the host: no dot segment, encoded or not.
    auto after_host = src.url.find('/', std::min(src.url.size(), size_t{8}));
    auto path = after_host == std::string::npos
                  ? std::string{}
                  : uri_decode(src.url.substr(after_host, src.url.find('?') - after_host)) + "/";
    if (!src.url.empty()
        && (!src.url.starts_with("https://") || path.find("/../") != std::string::npos
            || path.find("/./") != std::string::npos))
      std::abort();
    if (!src.file.empty() && !src.file.string().starts_with("/srv/artifacts/"))
      std::abort();
  } else if (!src.url.empty() || !src.file.empty()) {
    std::abort();
  }
  return 0;
}
