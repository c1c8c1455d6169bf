#pragma once

// The inference backend interface (README.md, "Backends"): what the service needs of an
// engine, so that another engine (Arm NN, ONNX Runtime, a vendor's NPU library) is one
// more implementation of `backend` and nothing else changes. OpenCV DNN 4.6 is the first
// (opencv_backend.cpp).

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

namespace grove::ml {

/// A dense float32 tensor, row-major: inputs after decoding, outputs of a run.
struct tensor {
  /// The model's name for it.
  std::string name;
  /// Its dimensions.
  std::vector<int64_t> shape;
  /// product(shape) elements (empty when `borrowed` holds them).
  std::vector<float> data;
  /// The elements when they are not copied: an input's float32 bytes inside the request
  /// it came in (decode_tensors with borrow), which must outlive the tensor.
  std::span<const float> borrowed;

  /// The elements, wherever they are.
  std::span<const float> values() const noexcept {
    return borrowed.data() != nullptr ? borrowed : std::span<const float>{data};
  }
};

/// One loaded copy of a model. Used by one thread at a time (a worker owns one).
class session {
public:
  virtual ~session() = default;

  /// Runs the model on `inputs` (named as the model names them) and returns its outputs
  /// in output_names() order. An engine's exception comes back as an error with its text.
  virtual caf::expected<std::vector<tensor>> run(const std::vector<tensor>& inputs) = 0;

  /// The model's outputs, in the order run() returns them.
  virtual const std::vector<std::string>& output_names() const = 0;
};

/// An inference engine. Thread-safe: open() may run on any thread.
class backend {
public:
  virtual ~backend() = default;

  /// The engine's name and version, for `grovectl ml models`.
  virtual std::string name() const = 0;

  /// Loads a model from the bytes of an ONNX file; `outputs` (may be empty: the model's
  /// own) names the outputs to return. Errors carry the engine's reason (an unsupported
  /// operator, a file that is not ONNX).
  virtual caf::expected<std::unique_ptr<session>>
  open(std::string_view onnx, const std::vector<std::string>& outputs) = 0;
};

/// OpenCV DNN (opencv_backend.cpp).
std::unique_ptr<backend> make_opencv_backend();

} // namespace grove::ml
