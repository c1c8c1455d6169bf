#pragma once

// An encoded image (PNG, JPEG, BMP... what OpenCV's imgcodecs reads) turned into a model's
// first input by its manifest's preprocessing: resize, channel order, mean, scale, std,
// layout.

#include <string_view>

#include <caf/expected.hpp>

#include "backend.hpp"
#include "model_def.hpp"

namespace grove::ml {

/// The first input of `m` made from `encoded` (PNG, JPEG or BMP, at most `max_pixels` by
/// its header, checked before anything is decoded); errors say why it is refused.
caf::expected<tensor> image_to_tensor(std::string_view encoded, const manifest& m,
                                      uint64_t max_pixels);

} // namespace grove::ml
