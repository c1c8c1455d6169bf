#pragma once

// A JPEG read by libjpeg(-turbo) with corrupt data made an error (preprocess.cpp calls it
// before OpenCV decodes the image; fuzzed by tests/fuzz/targets/ml_request.cpp).

#include <string>
#include <string_view>

namespace grove::ml {

/// libjpeg's reason when `jpeg` does not decode cleanly (corrupt data, cut short, not a
/// JPEG), or "" when it does. Every coefficient is entropy-decoded, as a full decode does,
/// but the output is scaled to 1/8 (the inverse DCT keeps only the DC term, a row of
/// width/8 pixels at a time), so the check costs a fraction of the decode that follows.
std::string jpeg_problem(std::string_view jpeg);

} // namespace grove::ml
