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

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <unistd.h>

#include "deployment_api_checks.hpp"

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
    grove::fuzz::deployment_api::add_key(settings);
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
  namespace fz = grove::fuzz::deployment_api;
  std::string_view all{reinterpret_cast<const char*>(data), size};
  auto req = fz::request(all);
  req.body = std::string{all};
  fz::sign(req);
  fz::check_answer(req, w.service->handle(req, fz::now), false);
  return 0;
}
