#pragma once

// The ml_inference plugin's configuration (grove::config_map): defaults for every model's
// pool, queue and batching (a model resource may override them), and the limits on what
// a model or a request may make the plugin allocate. README.md's table is generated.

#include <cstdint>

#include "grove/config_map.hpp"

namespace grove::ml {

/// The plugin's keys.
struct ml_config {
  /// Workers per model.
  int64_t threads = 1;
  /// Requests waiting per model.
  int64_t queue_capacity = 64;
  /// Items per backend call (1: no batching).
  int64_t max_batch_size = 1;
  /// How long a batch waits for more requests.
  int64_t max_batch_delay_us = 2000;
  /// Largest package file (and its unpacked contents).
  int64_t max_model_bytes = 256 << 20;
  /// Largest input tensor, in elements.
  int64_t max_input_elements = 16 << 20;
  /// Largest image a request may decode to, in pixels.
  int64_t max_image_pixels = 4096 * 4096;

  /// The keys.
  static config_map<ml_config> map() {
    using c = ml_config;
    return config_map<c>{}
      .key("threads", &c::threads, 1, range{1, 64},
           "workers per model (each holds its own copy of the network)")
      .key("queue_capacity", &c::queue_capacity, 64, range{1, 100000},
           "requests waiting per model; more are refused (ThrottlingException)")
      .key("max_batch_size", &c::max_batch_size, 1, range{1, 1024},
           "items per backend call for models whose inputs all start with a -1 (batch) "
           "dimension; 1: no batching")
      .key("max_batch_delay_us", &c::max_batch_delay_us, 2000, range{0, 1000000},
           "how long the first request of a batch waits for others")
      .key("max_model_bytes", &c::max_model_bytes, 256 << 20, range{1024, int64_t{1} << 32},
           "largest model package (file and unpacked contents)")
      .key("max_input_elements", &c::max_input_elements, 16 << 20, range{1, int64_t{1} << 30},
           "largest input tensor of a request, in elements")
      .key("max_image_pixels", &c::max_image_pixels, 4096 * 4096, range{1, int64_t{1} << 30},
           "largest image a request may send, by its header's width x height (a few KB "
           "of PNG can claim gigabytes); checked before decoding");
  }
};

} // namespace grove::ml
