// The ota plugin's AWS IoT Jobs messages (plugins/ota/src/jobs.cpp), what the cloud
// sends: the input as a notify-next / get reply (the execution, then its job document),
// as a job document, as an update/accepted and update/rejected answer, and as a reply
// topic. An execution read has a valid job id; a bundle is an https:// URL without
// spaces or control characters or an absolute path that stays in the tree; a version
// is never negative; a job id taken from a topic builds the same topic back; an update
// payload made from the input is JSON that parses back, its reason at most 1024 bytes.

#include "bundle.hpp"
#include "jobs.hpp"
#include "fuzz_support.hpp"

#include <nlohmann/json.hpp>

#include <cstdlib>

using namespace grove::ota;

namespace {

void check_bundle(std::string_view document) {
  auto b = jobs::bundle_of(document);
  if (!b)
    return;
  if (b->starts_with("https://")) {
    for (char c : *b)
      if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == '\\')
        std::abort();
    return;
  }
  if (b->empty() || b->front() != '/' || !safe_relative_path(b->substr(1)))
    std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto input = grove::fuzz::bytes(data, size);
  if (auto ex = jobs::parse_execution(input); ex && *ex) {
    if (!jobs::valid_job_id((*ex)->job_id))
      std::abort();
    check_bundle((*ex)->document);
  }
  check_bundle(input);
  for (bool rejected : {false, true})
    if (auto a = jobs::parse_update_answer(input, rejected); a && a->version < 0)
      std::abort();
  for (std::string_view suffix : {"/update/accepted", "/get/accepted"}) {
    auto job = jobs::job_of(input, "core", suffix);
    if (!job.empty()
        && "$aws/things/core/jobs/" + job + std::string{suffix} != input)
      std::abort();
  }
  auto payload = jobs::update_payload("FAILED", {{"reason", std::string{input}}}, 7,
                                      std::string{input.substr(0, 100)});
  auto doc = nlohmann::json::parse(payload, nullptr, false);
  if (doc.is_discarded() || doc["statusDetails"]["reason"].get<std::string>().size() > 1024
      || doc["expectedVersion"] != 7)
    std::abort();
  return 0;
}
