#pragma once

// The request decoder (pure, fuzzed: tests/fuzz/targets/ml_request.cpp): an InferRequest's
// tensors checked against the model's inputs and turned into float32 tensors, with errors
// that name the tensor and what was expected; and the top-k labels of a reply.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/expected.hpp>

#include "backend.hpp"
#include "grove/ml.pb.h"
#include "model_def.hpp"

namespace grove::ml {

/// A request's inputs, decoded.
struct decoded {
  /// One per model input, in the manifest's order.
  std::vector<tensor> inputs;
  /// Items in the batch dimension (1 when the model has none).
  int64_t batch = 1;
};

/// Checks `req`'s tensors against `inputs` (names, dtype, rank, fixed sizes, the data's
/// length, no NaN or infinity) without allocating more than `max_elements` floats per
/// input; an image request is refused here (see preprocess.hpp). With `borrow`, a float32
/// input whose bytes are aligned is not copied: its tensor's `borrowed` points into `req`,
/// which must then outlive the result.
caf::expected<decoded> decode_tensors(const InferRequest& req,
                                      const std::vector<input_def>& inputs,
                                      uint64_t max_elements, bool borrow = false);

/// The model's batch dimension: every input's first dimension is -1.
bool batchable(const std::vector<input_def>& inputs);

/// "[1, 3, 32, 32]".
std::string shape_text(const std::vector<int64_t>& shape);

/// The width and height a PNG, JPEG or BMP header claims; nullopt for anything else or a
/// header too short to say.
std::optional<std::pair<uint64_t, uint64_t>> image_size(std::string_view encoded);

/// Appends the top `k` scores of each of the `batch` rows of `scores` (its elements split
/// evenly into rows) to `out`, with `labels` by index.
void top_labels(const tensor& scores, int64_t batch, uint32_t k,
                const std::vector<std::string>& labels, InferResponse& out);

} // namespace grove::ml
