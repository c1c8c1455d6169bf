#pragma once

// The request decoder (pure, fuzzed: tests/fuzz/targets/ml_request.cpp): an InferRequest
// read in place from the bus's bytes (its tensors' data never copied), its tensors checked
// against the model's inputs and turned into float32 tensors, with errors that name the
// tensor and what was expected; and the top-k labels of a reply.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/expected.hpp>

#include "backend.hpp"
#include "grove/ml.pb.h"
#include "model_def.hpp"

namespace grove::ml {

/// One tensor of a request read in place (read_request).
struct tensor_view {
  /// Tensor.name.
  std::string name;
  /// Tensor.dtype (a DataType; proto3 enums are open, so any value).
  int32_t dtype = 0;
  /// Tensor.shape.
  std::vector<int64_t> shape;
  /// Tensor.data: a view into the bytes read.
  std::string_view data;
};

/// An InferRequest read in place: what InferRequest::ParseFromString gives, but the
/// tensors' data and the image are views into the bytes read, not copies of them.
struct request_view {
  /// InferRequest.inputs.
  std::vector<tensor_view> inputs;
  /// InferRequest.image: a view into the bytes read.
  std::string_view image;
  /// InferRequest.top_k.
  uint32_t top_k = 0;
};

/// What a request may hold before read_request refuses it, taken from the model.
struct request_limits {
  /// Tensors: the model's input count.
  size_t inputs = 0;
  /// Dimensions of a tensor's shape: the largest rank of the model's inputs.
  size_t rank = 0;
};

/// The limits `inputs` set (their count, their largest rank).
request_limits limits_of(const std::vector<input_def>& inputs);

/// Reads a serialized InferRequest with libprotobuf's CodedInputStream as the generated
/// parser reads it (unknown fields, groups too, skipped; the last of a singular field
/// kept: name, dtype, data, image, top_k; shape elements appended, packed or not; names
/// checked as UTF-8) without copying its tensors' data: the result points into `wire`,
/// which must outlive it and not move. More tensors or dimensions than `limits` are
/// refused while reading. A float32 tensor's data that does not start at a float's
/// alignment is moved back (at most 3 bytes, over its own field's header, already read)
/// so it can be used in place.
caf::expected<request_view> read_request(std::string& wire, const request_limits& limits);

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
/// input whose bytes are aligned is not copied: its tensor's `borrowed` points into the
/// bytes `req` was read from, which must then outlive the result.
caf::expected<decoded> decode_tensors(const request_view& req,
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
void top_labels(std::span<const float> scores, int64_t batch, uint32_t k,
                const std::vector<std::string>& labels, InferResponse& out);

} // namespace grove::ml
