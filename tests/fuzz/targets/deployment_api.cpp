// The deployment plugin's routes (plugins/deployment/src/api.cpp) over a real SQLite
// store (component_store.cpp): the input is a request (an "METHOD TARGET" line, then the
// body), signed with a configured key as a client would, so every route, query and body
// parser is reached past the signature check. Every answer has a status the API
// documents, an error type with each error status, and a JSON body (or none for 204).
// The store persists across inputs (one file per fuzzer process), so later inputs meet
// what earlier ones created. A function package is there for lambdaFunction, and the
// corpus stores recipes with dependencies for whole-graph resolution. The core has a
// thing and a group, so CreateDeployment bodies (issue 15) are checked, journaled and
// resolved, and the deployment and core device routes read them back.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "api.hpp"
#include "artifact_uri.hpp"
#include "sigv4.hpp"

using namespace grove::deployment;

namespace {

struct world {
  std::filesystem::path dir;
  std::unique_ptr<component_store> store;
  std::unique_ptr<api> service;

  world() {
    dir = std::filesystem::temp_directory_path()
          / ("grove-fuzz-deployment-api-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    auto s = component_store::open(dir / "components.db");
    if (!s)
      std::abort();
    store = std::move(*s);
    api_settings settings;
    settings.keys["AKIAGROVEFUZZ00001"] = access_key{"fuzz-secret-fuzz-secret", {"*"}, 0};
    // One function package, so lambdaFunction's conversion runs to the end
    // (arn:aws:lambda:us-east-1:123456789012:function:fz:1).
    settings.lambda_packages_dir = dir / "lambda";
    std::filesystem::create_directories(dir / "lambda/fz/1/code");
    std::ofstream{dir / "lambda/fz/1/configuration.json"}
      << R"({"Runtime": "python3.9", "Handler": "fz.handler"})";
    // A thing and a group, so CreateDeployment's bodies get past the target check
    // (arn:aws:iot:us-east-1:123456789012:thing/core-1, .../thinggroup/site).
    settings.thing_name = "core-1";
    settings.thing_groups = {"site"};
    settings.platform = {{"os", "linux"}, {"architecture", "amd64"}};
    settings.url_key = std::string(32, 'k');
    settings.artifact_files = dir / "sha256";
    service = std::make_unique<api>(settings, *store);
  }

  ~world() {
    service.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static world w;
  std::string_view all{reinterpret_cast<const char*>(data), size};
  auto eol = all.find('\n');
  auto first = all.substr(0, eol);
  auto sp = first.find(' ');
  http_request req;
  req.method = std::string{first.substr(0, sp)};
  req.target = sp == std::string_view::npos ? "/" : std::string{first.substr(sp + 1)};
  req.body = eol == std::string_view::npos ? std::string{} : std::string{all.substr(eol + 1)};
  req.headers.emplace_back("host", "127.0.0.1:8443");
  const auto now = std::chrono::system_clock::time_point{std::chrono::seconds{1764676800}};
  // Image Builder's routes are signed for its service, as the AWS clients sign them.
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
  // 412: Image Builder's DryRunOperationException.
  static const int documented[] = {200, 201, 204, 400, 403, 404, 409, 412, 413, 429, 500};
  if (std::find(std::begin(documented), std::end(documented), r.status) == std::end(documented))
    std::abort();
  // A signed request with the all-operations key, and the store never fails here; only a
  // pre-signed artifact URL (its own signature, which the fuzzer lacks) may be refused 403.
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
  if (body.is_discarded() || !body.is_object() || (r.status >= 400 && !body.contains("message")))
    std::abort();
  return 0;
}
