#pragma once

// An encoded image (PNG, JPEG, BMP... what OpenCV's imgcodecs reads) turned into a model's
// first input by its manifest's preprocessing: resize, channel order, mean, scale, std,
// layout.

#include <string_view>

#include <caf/expected.hpp>

#include "backend.hpp"
#include "model_def.hpp"

namespace grove::ml {

/// The first input of `m` made from `encoded`; errors say why the image is refused.
caf::expected<tensor> image_to_tensor(std::string_view encoded, const manifest& m);

} // namespace grove::ml
