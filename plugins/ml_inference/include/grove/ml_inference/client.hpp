#pragma once

// Typed client of the ml_inference plugin's bus API (plugins/ml_inference/README.md,
// "Bus topics"): inference on a model of the group, and the models' state.

#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "grove/ml.pb.h"
#include "grove/rpc.hpp"

namespace grove::ml_inference {

/// ml-1: the filter the plugin serves; a model's topic is infer_topic(model).
inline constexpr std::string_view infer_filter = "$grove/ml/infer/+";

/// ml-2: the models, their state and numbers.
inline constexpr std::string_view models_topic = "$grove/ml/models";

/// The key of a group resource's config that makes it an ML model of this plugin
/// (`resources[].config.localMachineLearningModelResourceData`).
inline constexpr std::string_view model_resource_key = "localMachineLearningModelResourceData";

/// ml-1's topic for `model`.
inline std::string infer_topic(std::string_view model) {
  return "$grove/ml/infer/" + std::string{model};
}

/// ml-1, typed both ways. Errors: malformed (the request: names the tensor and what was
/// expected), queue_full (ThrottlingException: the model's queue is full), no_route (no
/// such model), invalid_state (loading or failed), plugin_failed (the backend threw).
using infer_rpc = rpc<ml::InferRequest, ml::InferResponse>;

/// ml-2, typed both ways.
using models_rpc = rpc<ml::ModelsRequest, ml::ModelsReply>;

/// Adds a float32 input tensor to `req`.
inline void add_input(ml::InferRequest& req, std::string_view name,
                      const std::vector<int64_t>& shape, const std::vector<float>& data) {
  auto* t = req.add_inputs();
  t->set_name(std::string{name});
  t->set_dtype(ml::FLOAT32);
  for (auto d : shape)
    t->add_shape(d);
  t->set_data(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
}

/// The floats of an output tensor (float32).
inline std::vector<float> floats(const ml::Tensor& t) {
  std::vector<float> out(t.data().size() / sizeof(float));
  std::memcpy(out.data(), t.data().data(), out.size() * sizeof(float));
  return out;
}

} // namespace grove::ml_inference
