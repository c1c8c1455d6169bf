// Greengrass v1's group API (plugins/deployment/src/v1_api.cpp) through the shared router
// over real SQLite files: the input is a request (an "METHOD TARGET" line, optionally a
// "x-amzn-client-token: T" line, then the body), signed with a configured key as a client
// would, so every v1 route, query, body and definition check is reached past the
// signature. Deployments are applied at once, alternately accepted and refused, as the
// kernel would answer. Every answer has a status the API documents, an error type with
// each error status, and a JSON object body with a message (or none for 204). The stores
// persist across inputs, so later inputs meet what earlier ones created. A bulk deployment
// started by an input runs right after its answer, over the input's body as its input
// file (each line a record: deployed, or failed with its reason).

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "deployment_api_checks.hpp"
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
  std::string bulk; // a bulk deployment StartBulkDeployment just started

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
    grove::fuzz::deployment_api::add_key(settings);
    service = std::make_unique<api>(settings, *components);
    v1_settings vs;
    vs.group_ca_dir = dir / "group_ca"; // CreateGroupCertificateAuthority writes real keys
    v1 = std::make_unique<v1_api>(settings, vs, *groups);
    v1->set_applier([this](v1_apply_job job) {
      // The document handed to the kernel is always a JSON object with a name.
      auto doc = nlohmann::json::parse(job.group, nullptr, false);
      if (doc.is_discarded() || !doc.is_object() || !doc.contains("name"))
        std::abort();
      v1->in_progress(job.group_id, job.deployment_id, 1);
      v1->applied(job.group_id, job.deployment_id, ++applied % 2 ? "" : "refused", 2);
    });
    // Called under the API's lock: run after the answer (run_bulk takes the lock).
    v1->set_bulk_starter([this](std::string id, std::string) { bulk = std::move(id); });
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
  namespace fz = grove::fuzz::deployment_api;
  std::string_view all{reinterpret_cast<const char*>(data), size};
  auto req = fz::request(all);
  constexpr std::string_view token_header = "x-amzn-client-token: ";
  if (all.substr(0, token_header.size()) == token_header)
    req.headers.emplace_back("x-amzn-client-token",
                             std::string{fz::take_line(all).substr(token_header.size())});
  req.body = std::string{all};
  fz::sign(req);
  fz::check_answer(req, w.service->handle(req, fz::now), true);
  if (!w.bulk.empty()) {
    w.v1->run_bulk(w.bulk, req.body, std::chrono::seconds{1});
    auto b = w.groups->bulk(w.bulk);
    // It ends (its deployments settle at once) and counts what it processed.
    if (!b || !*b || ((*b)->status != "Completed" && (*b)->status != "Failed")
        || (*b)->invalid > (*b)->processed)
      std::abort();
    w.bulk.clear();
  }
  return 0;
}
