// ml_inference's model resource parser (plugins/ml_inference/src/model_def.cpp): a group's
// `resources[].config` text with localMachineLearningModelResourceData and its inline
// manifest. An accepted resource has an absolute path, a 64-digit lower-case digest, and
// a manifest that is empty or passes manifest_defect (what the workers rely on).

#include "fuzz_support.hpp"
#include "model_def.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto text = grove::fuzz::bytes(data, size);
  (void) grove::ml::is_model_resource(text);
  auto r = grove::ml::parse_model_resource(text, "fuzz");
  if (!r) {
    (void) grove::describe(r.error());
    return 0;
  }
  grove::fuzz::require(r->path.starts_with("/"), "a relative model path was accepted");
  grove::fuzz::require(r->sha256.size() == 64
                         && r->sha256.find_first_not_of("0123456789abcdef") == std::string::npos,
                       "a malformed digest was accepted");
  const auto& m = r->manifest_inline;
  grove::fuzz::require(m.inputs.empty() || grove::ml::manifest_defect(m).empty(),
                       "a defective manifest was accepted");
  for (const auto& in : m.inputs)
    for (auto d : in.shape)
      grove::fuzz::require(d == -1 || (d >= 1 && d <= INT32_MAX), "a bad dimension was accepted");
  return 0;
}
