#pragma once

// A JPEG decoded once, by libjpeg(-turbo), with corrupt data made an error (preprocess.cpp
// calls it instead of OpenCV's imdecode for a JPEG; fuzzed by
// tests/fuzz/targets/ml_request.cpp).

#include <string>
#include <string_view>

#include <opencv2/core.hpp>

namespace grove::ml {

/// Decodes `jpeg` into `out` (8-bit BGR, or gray with `gray`) with the pixels OpenCV's
/// imdecode gives (IMREAD_COLOR / IMREAD_GRAYSCALE): the same libjpeg-turbo, with its
/// settings (ISLOW inverse DCT, fancy upsampling, libjpeg's own colour conversion, CMYK
/// converted by OpenCV's formula) and the orientation of the first APP1 (EXIF) segment
/// applied. Returns libjpeg's reason when the data is corrupt (libjpeg only warns of
/// corrupt entropy-coded data, a premature end, data past the scan, and decodes what it
/// can), cut short or not a JPEG, or more than 500 scans; "" when `out` holds the image.
/// Stray bytes between markers are read past, as PIL and libjpeg's own tools do.
std::string decode_jpeg(std::string_view jpeg, bool gray, cv::Mat& out);

/// The orientation (1..8) that the EXIF block `app1` (an APP1 segment's data, "Exif\0\0"
/// and a TIFF header) gives in its first directory, read as OpenCV's ExifReader reads
/// it; 0 when it gives none.
int exif_orientation(std::string_view app1);

} // namespace grove::ml
