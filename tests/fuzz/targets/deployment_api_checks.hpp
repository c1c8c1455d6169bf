#pragma once

// What the deployment API's fuzz targets (deployment_api.cpp, deployment_v1_api.cpp)
// share: the fuzz key, the request line read from the input, the signature a client
// would add, and the checks every answer of the router must pass.

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "api.hpp"
#include "artifact_uri.hpp"
#include "http.hpp"
#include "imagebuilder.hpp"
#include "sigv4.hpp"

namespace grove::fuzz::deployment_api {

/// The access key the targets configure (all operations) and sign with.
inline constexpr const char* key_id = "AKIAGROVEFUZZ00001";
/// Its secret.
inline constexpr const char* secret = "fuzz-secret-fuzz-secret";
/// The fixed clock of every request (2025-12-02T12:00:00Z).
inline const auto now = std::chrono::system_clock::time_point{std::chrono::seconds{1764676800}};

/// Adds the fuzz key to `settings`.
inline void add_key(grove::deployment::api_settings& settings) {
  settings.keys[key_id] = grove::deployment::access_key{secret, {"*"}, 0};
}

/// Takes the first line of `all` ("METHOD TARGET") and leaves `all` after it.
inline std::string_view take_line(std::string_view& all) {
  auto eol = all.find('\n');
  auto first = all.substr(0, eol);
  all = eol == std::string_view::npos ? std::string_view{} : all.substr(eol + 1);
  return first;
}

/// A request from the input's first line (the method, then the target; "/" if none),
/// with the host header set; `all` is left after that line.
inline grove::deployment::http_request request(std::string_view& all) {
  auto first = take_line(all);
  auto sp = first.find(' ');
  grove::deployment::http_request req;
  req.method = std::string{first.substr(0, sp)};
  req.target = sp == std::string_view::npos ? "/" : std::string{first.substr(sp + 1)};
  req.headers.emplace_back("host", "127.0.0.1:8443");
  return req;
}

/// Signs `req` (SigV4, us-east-1) with the fuzz key at `now`, for the service the AWS
/// clients sign that route for: `imagebuilder` for Image Builder's, else `greengrass`.
inline void sign(grove::deployment::http_request& req) {
  std::vector<std::string> segs;
  for (auto path = req.raw_path(); !path.empty();) {
    auto slash = path.find('/');
    if (slash != 0)
      segs.push_back(grove::deployment::uri_decode(path.substr(0, slash)));
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
  }
  bool ib = !grove::deployment::imagebuilder_api::operation(req.method, segs).empty();
  grove::deployment::sign_sigv4(
    req, grove::deployment::sigv4_scope{"us-east-1", ib ? "imagebuilder" : "greengrass"}, key_id,
    secret, now);
}

/// Aborts unless `r` answers the signed `req` as the API documents: a documented status;
/// never 403 (the key allows everything) but for a pre-signed artifact URL (its own
/// signature, which the fuzzer lacks), which is always 403; never 500 (the store does not
/// fail here); an error type with each error status; a JSON object body (none for 204)
/// with a message on errors (`message`, or v1's `Message` when `v1_message`).
inline void check_answer(const grove::deployment::http_request& req,
                         const grove::deployment::http_response& r, bool v1_message) {
  // 412: Image Builder's DryRunOperationException.
  static const int documented[] = {200, 201, 204, 400, 403, 404, 409, 412, 413, 429, 500};
  if (std::find(std::begin(documented), std::end(documented), r.status) == std::end(documented))
    std::abort();
  bool presigned = req.method == "GET"
                   && req.raw_path().starts_with(grove::deployment::presigned_prefix);
  if ((r.status == 403 && !presigned) || r.status == 500 || (presigned && r.status != 403))
    std::abort();
  bool typed = false;
  for (const auto& [k, v] : r.headers)
    typed = typed || (k == "x-amzn-ErrorType" && !v.empty());
  if ((r.status >= 400) != typed)
    std::abort();
  if (r.status == 204)
    return;
  auto body = nlohmann::json::parse(r.body, nullptr, false);
  bool message = body.is_object()
                 && (body.contains("message") || (v1_message && body.contains("Message")));
  if (body.is_discarded() || !body.is_object() || (r.status >= 400 && !message))
    std::abort();
}

} // namespace grove::fuzz::deployment_api
