#include "preprocess.hpp"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grove/errors.hpp"
#include "jpeg_check.hpp"
#include "request.hpp"

namespace grove::ml {

caf::expected<tensor> image_to_tensor(std::string_view encoded, const manifest& m,
                                      uint64_t max_pixels) {
  const auto& p = m.preprocessing;
  if (p.width == 0)
    return make_error(errc::malformed,
                      "an image request: the model has no preprocessing (send tensors)");
  // What the header claims is what the decoder would allocate: checked first.
  auto size = image_size(encoded);
  if (!size)
    return make_error(errc::malformed,
                      "image: " + std::to_string(encoded.size())
                        + " bytes that are not a PNG, JPEG or BMP with a readable size");
  if (size->first == 0 || size->second == 0
      || size->first > max_pixels / size->second)
    return make_error(errc::malformed,
                      "image: " + std::to_string(size->first) + "x" + std::to_string(size->second)
                        + " pixels, more than max_image_pixels ("
                        + std::to_string(max_pixels) + ")");
  const auto& in = m.inputs.front();
  bool nchw = p.layout == "nchw";
  auto channels = static_cast<int>(nchw ? in.shape[1] : in.shape[3]);
  try {
    cv::Mat img;
    if (encoded.substr(0, 2) == "\xFF\xD8") {
      // Decoded once, by libjpeg with corrupt data refused, into what OpenCV would give.
      if (auto why = decode_jpeg(encoded, channels == 1, img); !why.empty())
        return make_error(errc::malformed, "image: a corrupt JPEG ("
                                             + std::to_string(encoded.size())
                                             + " bytes; libjpeg: " + why + ")");
    } else {
      cv::Mat raw(1, static_cast<int>(encoded.size()), CV_8U,
                  const_cast<char*>(encoded.data()));
      img = cv::imdecode(raw, channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
    }
    if (img.empty())
      return make_error(errc::malformed, "image: " + std::to_string(encoded.size())
                                           + " bytes that OpenCV cannot decode (PNG, JPEG or "
                                             "BMP)");
    if (img.cols != p.width || img.rows != p.height)
      cv::resize(img, img, cv::Size(static_cast<int>(p.width), static_cast<int>(p.height)), 0,
                 0, cv::INTER_LINEAR);
    if (channels == 3 && p.channel_order == "rgb")
      cv::cvtColor(img, img, cv::COLOR_BGR2RGB);
    cv::Mat f;
    img.convertTo(f, CV_32F);
    auto H = static_cast<size_t>(p.height), W = static_cast<size_t>(p.width);
    auto C = static_cast<size_t>(channels);
    tensor t;
    t.name = in.name;
    t.shape = nchw ? std::vector<int64_t>{1, channels, p.height, p.width}
                   : std::vector<int64_t>{1, p.height, p.width, channels};
    t.data.resize(H * W * C);
    auto at = [](const std::vector<double>& v, size_t c, double dflt) {
      return v.empty() ? dflt : v.size() == 1 ? v[0] : v[c];
    };
    for (size_t y = 0; y < H; ++y) {
      const float* row = f.ptr<float>(static_cast<int>(y));
      for (size_t x = 0; x < W; ++x)
        for (size_t c = 0; c < C; ++c) {
          double v = (row[x * C + c] - at(p.mean, c, 0.0)) * p.scale / at(p.std_dev, c, 1.0);
          auto i = nchw ? (c * H + y) * W + x : (y * W + x) * C + c;
          t.data[i] = static_cast<float>(v);
        }
    }
    return t;
  } catch (const cv::Exception& e) {
    return make_error(errc::malformed, "image: OpenCV cannot decode it: " + e.msg);
  }
}

} // namespace grove::ml
