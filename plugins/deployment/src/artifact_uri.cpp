#include "artifact_uri.hpp"

#include <algorithm>
#include <set>

#include <openssl/crypto.h>

#include "http.hpp"

namespace grove::deployment {

using nlohmann::json;

std::vector<artifact_ref> fetchable_artifacts(const json& recipe,
                                              const platform_attributes& platform) {
  std::vector<artifact_ref> out;
  std::set<std::string> seen;
  if (const json* m = manifest_for(recipe, platform); m && m->is_object()) {
    auto arts = m->find("Artifacts");
    if (arts == m->end() || !arts->is_array())
      return out;
    for (const auto& a : *arts) {
      if (!a.is_object() || !a.contains("Uri") || !a["Uri"].is_string())
        continue;
      auto uri = a["Uri"].get<std::string>();
      if (!(uri.starts_with("s3://") || uri.starts_with("https://") || uri.starts_with("file://")))
        continue;
      if (!seen.insert(uri).second)
        continue;
      artifact_ref r;
      r.uri = uri;
      if (a.contains("Digest") && a["Digest"].is_string())
        r.digest = a["Digest"].get<std::string>();
      if (a.contains("Algorithm") && a["Algorithm"].is_string())
        r.algorithm = a["Algorithm"].get<std::string>();
      r.unzip = a.value("Unarchive", std::string{"NONE"}) == "ZIP";
      if (auto pm = a.find("Permission"); pm != a.end() && pm->is_object()) {
        // Greengrass' defaults: Read OWNER, Execute NONE.
        auto bits = [&](const char* key, const char* dflt, int owner, int all) {
          auto v = pm->contains(key) && (*pm)[key].is_string() ? (*pm)[key].get<std::string>()
                                                                : std::string{dflt};
          return v == "ALL" ? owner | all : v == "OWNER" ? owner : 0;
        };
        r.mode = bits("Read", "OWNER", 0400, 0044) | bits("Execute", "NONE", 0100, 0011);
      }
      out.push_back(std::move(r));
    }
  }
  return out;
}

namespace {

// True when a '/'-separated path has a "." or ".." segment (decoded or not).
bool has_dot_segment(std::string_view path) {
  while (!path.empty()) {
    auto slash = path.find('/');
    auto seg = uri_decode(path.substr(0, slash));
    if (seg == "." || seg == ".." || seg.find('/') != std::string::npos
        || seg.find('\\') != std::string::npos)
      return true;
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
  }
  return false;
}

bool has_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x21 || c == 0x7f; });
}

} // namespace

artifact_source resolve_artifact_uri(std::string_view uri, const artifact_uri_settings& s,
                                     std::string& why) {
  why.clear();
  artifact_source out;
  if (has_control(uri)) {
    why = "the URI holds a space or a control character";
    return out;
  }
  if (uri.starts_with("s3://")) {
    auto rest = uri.substr(5);
    auto slash = rest.find('/');
    if (slash == std::string_view::npos || slash == 0 || slash + 1 == rest.size()) {
      why = "an s3 URI is s3://bucket/key";
      return out;
    }
    if (has_dot_segment(rest)) {
      why = "the key has a '.' or '..' segment";
      return out;
    }
    if (s.base_url.empty()) {
      why = "s3:// artifacts need artifacts_base_url in the deployment plugin's configuration";
      return out;
    }
    auto base = s.base_url;
    while (!base.empty() && base.back() == '/')
      base.pop_back();
    // An S3 key is literal: `?`, `#` and `%` in it are the key's, not the URL's (a raw
    // `?` made `k/.?x` the path `k/.`, a dot segment; fuzz_deployment_request).
    out.url = base + "/" + uri_encode(rest, true);
    return out;
  }
  if (uri.starts_with("https://")) {
    auto rest = uri.substr(8);
    auto slash = rest.find('/');
    if (slash == 0 || slash == std::string_view::npos || slash + 1 == rest.size()
        || rest.substr(0, slash).find('@') != std::string_view::npos) {
      why = "an https URI is https://host[:port]/path (no user info)";
      return out;
    }
    auto path = rest.substr(slash + 1);
    if (has_dot_segment(path.substr(0, path.find('?')))) {
      why = "the path has a '.' or '..' segment";
      return out;
    }
    out.url = std::string{uri};
    return out;
  }
  if (uri.starts_with("file://")) {
    auto path = uri_decode(uri.substr(7));
    if (has_control(path)) {
      why = "the path holds a space or a control character";
      return out;
    }
    if (path.empty() || path.front() != '/') {
      why = "a file URI is file:///absolute/path";
      return out;
    }
    if (has_dot_segment(std::string_view{path}.substr(1))) {
      why = "the path has a '.' or '..' segment";
      return out;
    }
    if (s.file_dir.empty()) {
      why = "file:// artifacts need artifacts_file_dir in the deployment plugin's "
            "configuration (the directory they may be read from)";
      return out;
    }
    // Symbolic links resolved: a link inside the directory must not lead out of it.
    std::error_code ec;
    auto dir = std::filesystem::weakly_canonical(s.file_dir, ec);
    auto file = std::filesystem::weakly_canonical(std::filesystem::path{path}, ec);
    auto rel = file.lexically_relative(dir);
    if (ec || rel.empty() || rel == "." || rel.native().starts_with("..") || rel.is_absolute()) {
      why = "'" + path.substr(0, 256) + "' is not under artifacts_file_dir ("
            + s.file_dir.string() + ")";
      return out;
    }
    out.file = file;
    return out;
  }
  why = "only s3://, https:// and file:// artifacts are fetched";
  return out;
}

namespace {

std::string url_signature(std::string_view key, std::string_view sha, std::string_view name,
                          int64_t expires) {
  std::string what = "GET\n";
  what += presigned_prefix;
  what += sha;
  what += "/";
  what += name;
  what += '\n';
  what += std::to_string(expires);
  return hex(hmac_sha256(key, what));
}

bool is_hex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

} // namespace

std::string presign_artifact(std::string_view key, std::string_view sha256_hex,
                             std::string_view file_name, int64_t expires) {
  return std::string{presigned_prefix} + std::string{sha256_hex} + "/"
         + uri_encode(file_name, false) + "?X-Grove-Expires=" + std::to_string(expires)
         + "&X-Grove-Signature=" + url_signature(key, sha256_hex, file_name, expires);
}

presign_check check_presigned(std::string_view key, std::string_view raw_path,
                              std::string_view raw_query, int64_t now, std::string& sha256_hex) {
  if (!raw_path.starts_with(presigned_prefix))
    return presign_check::malformed;
  auto rest = raw_path.substr(presigned_prefix.size());
  auto slash = rest.find('/');
  if (slash == std::string_view::npos)
    return presign_check::malformed;
  auto sha = rest.substr(0, slash);
  auto name = uri_decode(rest.substr(slash + 1));
  if (!is_hex64(sha) || name.empty() || name.find('/') != std::string::npos)
    return presign_check::malformed;
  std::string expires_text, signature;
  int n_expires = 0, n_signature = 0;
  for (auto& [k, v] : parse_query(raw_query)) {
    if (k == "X-Grove-Expires") {
      expires_text = v;
      ++n_expires;
    } else if (k == "X-Grove-Signature") {
      signature = v;
      ++n_signature;
    }
  }
  if (n_expires != 1 || n_signature != 1 || expires_text.empty() || expires_text.size() > 12
      || !std::all_of(expires_text.begin(), expires_text.end(),
                      [](char c) { return c >= '0' && c <= '9'; }))
    return presign_check::malformed;
  auto expires = std::stoll(expires_text);
  auto want = url_signature(key, sha, name, expires);
  // Compared in constant time, like the SigV4 signature.
  if (signature.size() != want.size()
      || CRYPTO_memcmp(signature.data(), want.data(), want.size()) != 0)
    return presign_check::forged;
  if (now >= expires)
    return presign_check::expired;
  sha256_hex = std::string{sha};
  return presign_check::valid;
}

} // namespace grove::deployment
