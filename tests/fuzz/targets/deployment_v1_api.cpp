// Greengrass v1's group API (plugins/deployment/src/v1_api.cpp) through the shared router
// over real SQLite files: the input is a request (an "METHOD TARGET" line, optionally a
// "x-amzn-client-token: T" line, then the body), signed with a configured key as a client
// would, so every v1 route, query, body and definition check is reached past the
// signature. Deployments are applied at once, alternately accepted and refused, as the
// kernel would answer. Every answer has a status the API documents, an error type with
// each error status, and a JSON object body with a message (or none for 204). The stores
// persist across inputs, so later inputs meet what earlier ones created.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "api.hpp"
#include "artifact_uri.hpp"
#include "sigv4.hpp"
#include "v1_api.hpp"

using namespace grove::deployment;

namespace {

struct world {
  std::filesystem::path dir;
  std::unique_ptr<component_store> components;
  std::unique_ptr<v1_store> groups;
  std::unique_ptr<api> service;
  std::unique_ptr<v1_api> v1;
  int applied = 0;

  world() {
    dir = std::filesystem::temp_directory_path()
          / ("grove-fuzz-deployment-v1-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    auto c = component_store::open(dir / "components.db");
    auto g = v1_store::open(dir / "groups.db");
    if (!c || !g)
      std::abort();
    components = std::move(*c);
    groups = std::move(*g);
    api_settings settings;
    settings.keys["AKIAGROVEFUZZ00001"] = access_key{"fuzz-secret-fuzz-secret", {"*"}, 0};
    service = std::make_unique<api>(settings, *components);
    v1 = std::make_unique<v1_api>(settings, v1_settings{}, *groups);
    v1->set_applier([this](v1_apply_job job) {
      // The document handed to the kernel is always a JSON object with a name.
      auto doc = nlohmann::json::parse(job.group, nullptr, false);
      if (doc.is_discarded() || !doc.is_object() || !doc.contains("name"))
        std::abort();
      v1->in_progress(job.group_id, job.deployment_id, 1);
      v1->applied(job.group_id, job.deployment_id, ++applied % 2 ? "" : "refused", 2);
    });
    service->set_v1(v1.get());
  }

  ~world() {
    service.reset();
    v1.reset();
    groups.reset();
    components.reset();
    std::filesystem::remove_all(dir);
  }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static world w;
  std::string_view all{reinterpret_cast<const char*>(data), size};
  auto line = [&all]() {
    auto eol = all.find('\n');
    auto first = all.substr(0, eol);
    all = eol == std::string_view::npos ? std::string_view{} : all.substr(eol + 1);
    return first;
  };
  auto first = line();
  auto sp = first.find(' ');
  http_request req;
  req.method = std::string{first.substr(0, sp)};
  req.target = sp == std::string_view::npos ? "/" : std::string{first.substr(sp + 1)};
  req.headers.emplace_back("host", "127.0.0.1:8443");
  constexpr std::string_view token_header = "x-amzn-client-token: ";
  if (all.substr(0, token_header.size()) == token_header)
    req.headers.emplace_back("x-amzn-client-token",
                             std::string{line().substr(token_header.size())});
  req.body = std::string{all};
  const auto now = std::chrono::system_clock::time_point{std::chrono::seconds{1764676800}};
  // Image Builder's routes (behind the same router) are signed for its service.
  std::vector<std::string> segs;
  for (auto path = req.raw_path(); !path.empty();) {
    auto slash = path.find('/');
    if (slash != 0)
      segs.push_back(uri_decode(path.substr(0, slash)));
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
  }
  bool ib = !imagebuilder_api::operation(req.method, segs).empty();
  sign_sigv4(req, sigv4_scope{"us-east-1", ib ? "imagebuilder" : "greengrass"},
             "AKIAGROVEFUZZ00001", "fuzz-secret-fuzz-secret", now);
  auto r = w.service->handle(req, now);
  static const int documented[] = {200, 201, 204, 400, 403, 404, 409, 412, 413, 429, 500};
  if (std::find(std::begin(documented), std::end(documented), r.status) == std::end(documented))
    std::abort();
  // A signed request with the all-operations key; the store never fails here. Only a
  // pre-signed artifact URL (the same router's; its own signature, which the fuzzer
  // lacks) is refused 403, and always.
  bool presigned = req.method == "GET" && req.raw_path().starts_with(presigned_prefix);
  if ((r.status == 403 && !presigned) || r.status == 500 || (presigned && r.status != 403))
    std::abort();
  bool typed = false;
  for (const auto& [k, v] : r.headers)
    typed = typed || (k == "x-amzn-ErrorType" && !v.empty());
  if ((r.status >= 400) != typed)
    std::abort();
  if (r.status == 204)
    return 0;
  auto body = nlohmann::json::parse(r.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()
      || (r.status >= 400 && !body.contains("Message") && !body.contains("message")))
    std::abort();
  return 0;
}
