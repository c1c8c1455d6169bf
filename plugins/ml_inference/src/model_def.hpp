#pragma once

// A model resource as ml_inference reads it (the group's resources[].config with
// `localMachineLearningModelResourceData`), its manifest (inputs, preprocessing, labels)
// and the package on disk (a .onnx file, or a .tar.gz/.tgz/.zip holding the model and
// manifest.yaml), checked against its sha256. Parsing is pure; load_package reads files.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

#include "grove/config_map.hpp"
#include "grove/ml_inference/client.hpp"

namespace grove::ml {

/// The resource data key that makes a group resource a model (the typed client's, which
/// function_runtime reads to tell model grants from local resources).
inline constexpr std::string_view resource_key = ml_inference::model_resource_key;

/// One input the model expects.
struct input_def {
  /// The model's name for it.
  std::string name;
  /// float32 or uint8 (what the request sends; the backend computes in float32).
  std::string dtype = "float32";
  /// Dimensions; -1 is any size (a first -1 is the batch dimension).
  std::vector<int64_t> shape;
  /// The config map.
  static config_map<input_def> map();
};

/// How an encoded image becomes the first input.
struct preprocess_def {
  /// Resize to this size (0: no preprocessing; an image request is refused).
  int64_t width = 0;
  /// Ditto.
  int64_t height = 0;
  /// Subtracted per channel (in the channel order below) before scaling.
  std::vector<double> mean;
  /// Multiplied after the mean (1/255 maps 0..255 to 0..1).
  double scale = 1.0;
  /// Per-channel divisor after scaling (empty: none), e.g. ImageNet's std.
  std::vector<double> std_dev;
  /// rgb or bgr.
  std::string channel_order = "rgb";
  /// nchw or nhwc.
  std::string layout = "nchw";
  /// The config map.
  static config_map<preprocess_def> map();
};

/// A model's manifest: inline in the resource, or manifest.yaml in its archive.
struct manifest {
  /// The model file inside an archive.
  std::string model = "model.onnx";
  /// The inputs, in order.
  std::vector<input_def> inputs;
  /// The outputs to return (empty: the model's).
  std::vector<std::string> outputs;
  /// For image requests.
  preprocess_def preprocessing;
  /// A classifier's class names, by index of the first output's last dimension.
  std::vector<std::string> labels;
  /// Top labels returned by default (0: none unless the request asks).
  int64_t top_k = 0;
  /// The config map.
  static config_map<manifest> map();
};

/// localMachineLearningModelResourceData.
struct model_data {
  /// The package: a .onnx file, or a .tar.gz/.tgz/.zip with the model and manifest.yaml.
  std::string path;
  /// Its SHA-256 (64 hex digits); a file that does not match is not loaded.
  std::string sha256;
  /// Shown as the version (empty: the digest's first 12 digits).
  std::string version;
  /// The manifest, when the package has none (a .onnx file).
  manifest manifest_inline;
  /// Per-model pool and batching (0: the plugin's setting).
  int64_t threads = 0;
  /// Ditto.
  int64_t queue_capacity = 0;
  /// Ditto.
  int64_t max_batch_size = 0;
  /// Ditto (-1: the plugin's).
  int64_t max_batch_delay_us = -1;
};

/// The resource's config (for the README table).
struct resource_config {
  /// localMachineLearningModelResourceData.
  model_data model;
  /// The config map.
  static config_map<resource_config> map();
};

/// Whether a resource's config is a model's (has resource_key); false for other kinds.
bool is_model_resource(std::string_view yaml);

/// Validates one model resource's config. Errors read `<origin>:<line>:<col>: <key>:
/// <what>` or `<origin>: <key>: <what>`.
caf::expected<model_data> parse_model_resource(std::string_view yaml, std::string_view origin);

/// Checks what the schema cannot say (names, shapes, preprocessing); "" when fine.
std::string manifest_defect(const manifest& m);

/// A package read from disk and checked.
struct package {
  /// The ONNX bytes.
  std::string onnx;
  /// Its manifest (inline or the archive's).
  manifest man;
  /// The package file's SHA-256 (hex).
  std::string sha256;
  /// model_data::version or the digest's first 12 digits.
  std::string version;
  /// The package file's size.
  uint64_t file_bytes = 0;
};

/// Reads `d.path` (at most `max_bytes`), checks its digest, unpacks an archive, reads and
/// checks the manifest. Errors name the file and what is wrong.
caf::expected<package> load_package(const model_data& d, uint64_t max_bytes);

/// Lower-case hex SHA-256 of `bytes`.
std::string sha256_hex(std::string_view bytes);

} // namespace grove::ml
