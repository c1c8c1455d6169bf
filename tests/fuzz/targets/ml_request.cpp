// ml_inference's request decoder (plugins/ml_inference/src/request.cpp): an InferRequest
// from the bus checked against a model's inputs. The first byte picks one of four models
// (fixed shape, a batch dimension, uint8, two inputs); the rest is the request. An
// accepted request has exactly the model's inputs, each with product(shape) finite
// elements within the element limit, and one batch size; nothing allocates more than the
// limit whatever the shape claims. The same bytes go to image_size (the PNG, JPEG and
// BMP header reader that bounds what an image request may decode to).

#include <cmath>

#include "fuzz_support.hpp"
#include "request.hpp"

namespace {

using grove::ml::input_def;

std::vector<std::vector<input_def>> models() {
  return {{{"x", "float32", {1, 3, 8, 8}}},
          {{"x", "float32", {-1, 16}}},
          {{"x", "uint8", {-1, 4, -1}}},
          {{"a", "float32", {-1, 2, 3}}, {"b", "float32", {-1, 4, 3}}}};
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto specs = models();
  constexpr uint64_t limit = 1 << 16;
  if (size == 0)
    return 0;
  // The image header reader sees the same bytes (an image request's are anyone's).
  if (auto sz = grove::ml::image_size(grove::fuzz::bytes(data, size)))
    grove::fuzz::require(size >= 24 || sz->first <= 0xFFFF, "a size read past the header");
  const auto& spec = specs[data[0] % specs.size()];
  grove::ml::InferRequest req;
  if (!req.ParseFromArray(data + 1, static_cast<int>(size - 1)))
    return 0;
  // Borrowed (as the plugin decodes): float32 inputs point into req.
  auto r = grove::ml::decode_tensors(req, spec, limit, true);
  if (!r) {
    (void) grove::describe(r.error());
    return 0;
  }
  grove::fuzz::require(r->inputs.size() == spec.size(), "an input missing or extra was accepted");
  for (size_t i = 0; i < spec.size(); ++i) {
    const auto& t = r->inputs[i];
    grove::fuzz::require(t.name == spec[i].name, "inputs out of the model's order");
    grove::fuzz::require(t.shape.size() == spec[i].shape.size(), "a wrong rank was accepted");
    uint64_t n = 1;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      grove::fuzz::require(t.shape[d] >= 1, "a dimension below 1 was accepted");
      grove::fuzz::require(spec[i].shape[d] == -1 || t.shape[d] == spec[i].shape[d],
                           "a fixed dimension of another size was accepted");
      n *= static_cast<uint64_t>(t.shape[d]);
    }
    grove::fuzz::require(n <= limit && t.values().size() == n, "data and shape disagree");
    for (float v : t.values())
      grove::fuzz::require(std::isfinite(v), "a NaN or infinity was accepted");
    if (grove::ml::batchable(spec))
      grove::fuzz::require(t.shape[0] == r->batch, "inputs of different batch sizes accepted");
  }
  return 0;
}
