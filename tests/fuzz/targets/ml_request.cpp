// ml_inference's request decoder (plugins/ml_inference/src/request.cpp): an InferRequest
// from the bus read in place and checked against a model's inputs. The first byte picks
// one of four models (fixed shape, a batch dimension, uint8, two inputs); the rest is the
// request. The in-place reader (libprotobuf's CodedInputStream, tensor data as views) must
// agree with Protobuf's parser: what it accepts Protobuf accepts with the same fields (data
// moved to alignment, not changed), within the model's limits (input count, rank); and it
// accepts whatever Protobuf parses within those limits, and its re-serialization, with the
// same fields. An accepted request has exactly the model's inputs, each with product(shape)
// finite elements within the element limit, and one batch size; nothing allocates more
// than the limit whatever the shape claims. The same bytes go to image_size (the PNG, JPEG and
// BMP header reader that bounds what an image request may decode to), and a JPEG among
// them (the whole input, or a request's image) within the size bound to decode_jpeg, the
// strict libjpeg decode whose errors longjmp (ASan sees a leak or a bad read there): a
// decoded image has the header's size (turned, for an EXIF orientation of 5 to 8). The
// bytes after the first go to the EXIF orientation reader as an APP1 segment too.

#include <algorithm>
#include <cmath>
#include <string>

#include "fuzz_support.hpp"
#include "jpeg_check.hpp"
#include "request.hpp"

namespace {

using grove::ml::input_def;
using grove::fuzz::require;

/// `v` holds what `req` holds.
void require_same(const grove::ml::request_view& v, const grove::ml::InferRequest& req) {
  require(v.inputs.size() == static_cast<size_t>(req.inputs_size()), "a tensor lost or added");
  require(v.image == req.image() && v.top_k == req.top_k(), "image or top_k differ");
  for (size_t i = 0; i < v.inputs.size(); ++i) {
    const auto& a = v.inputs[i];
    const auto& b = req.inputs(static_cast<int>(i));
    require(a.name == b.name() && a.dtype == b.dtype() && a.data == b.data(),
            "a tensor's name, dtype or data differ");
    require(std::equal(a.shape.begin(), a.shape.end(), b.shape().begin(), b.shape().end()),
            "a tensor's shape differs");
    require(a.dtype != grove::ml::FLOAT32 || a.data.empty()
              || reinterpret_cast<uintptr_t>(a.data.data()) % alignof(float) == 0,
            "float32 data left unaligned");
  }
}

std::vector<std::vector<input_def>> models() {
  return {{{"x", "float32", {1, 3, 8, 8}}},
          {{"x", "float32", {-1, 16}}},
          {{"x", "uint8", {-1, 4, -1}}},
          {{"a", "float32", {-1, 2, 3}}, {"b", "float32", {-1, 4, 3}}}};
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto specs = models();
  constexpr uint64_t limit = 1 << 16;
  if (size == 0)
    return 0;
  // The image header reader sees the same bytes (an image request's are anyone's), and
  // a JPEG within the bound the plugin applies first (smaller here, to keep runs fast)
  // the strict check.
  auto check_image = [](std::string_view b) {
    auto sz = grove::ml::image_size(b);
    if (!sz)
      return;
    require(b.size() >= 24 || sz->first <= 0xFFFF, "a size read past the header");
    if (b.substr(0, 2) == "\xFF\xD8" && sz->first > 0 && sz->second > 0
        && sz->first <= (1u << 20) / sz->second)
      for (bool gray : {false, true}) {
        cv::Mat img;
        if (!grove::ml::decode_jpeg(b, gray, img).empty())
          continue;
        auto w = static_cast<uint32_t>(img.cols), h = static_cast<uint32_t>(img.rows);
        require((w == sz->first && h == sz->second) || (w == sz->second && h == sz->first),
                "a decoded JPEG of another size than its header's");
        require(img.channels() == (gray ? 1 : 3), "a decoded JPEG of other channels");
      }
  };
  check_image(grove::fuzz::bytes(data, size));
  auto o = grove::ml::exif_orientation(grove::fuzz::bytes(data + 1, size - 1));
  require(o >= 0 && o <= 8, "an orientation out of 0..8");
  const auto& spec = specs[data[0] % specs.size()];
  const auto limits = grove::ml::limits_of(spec);
  grove::ml::InferRequest req;
  bool parsed = req.ParseFromArray(data + 1, static_cast<int>(size - 1));
  if (parsed && !req.image().empty())
    check_image(req.image());
  bool within = parsed && static_cast<size_t>(req.inputs_size()) <= limits.inputs
                && std::all_of(req.inputs().begin(), req.inputs().end(), [&](const auto& t) {
                     return static_cast<size_t>(t.shape_size()) <= limits.rank;
                   });
  if (within) {
    // What Protobuf writes back (unknown fields, groups too, kept) reads the same.
    auto again = req.SerializeAsString();
    auto v = grove::ml::read_request(again, limits);
    require(static_cast<bool>(v), "the reader refused what Protobuf serialized");
    require_same(*v, req);
  }
  std::string wire{reinterpret_cast<const char*>(data) + 1, size - 1};
  auto view = grove::ml::read_request(wire, limits);
  require(static_cast<bool>(view) == within,
          view ? "the reader accepted what Protobuf refuses or the limits exceed"
               : "the reader refused what Protobuf parses within the limits");
  if (!view)
    return 0;
  require_same(*view, req);
  // Borrowed (as the plugin decodes): float32 inputs point into `wire`.
  auto r = grove::ml::decode_tensors(*view, spec, limit, true);
  if (!r) {
    (void) grove::describe(r.error());
    return 0;
  }
  require(r->inputs.size() == spec.size(), "an input missing or extra was accepted");
  for (size_t i = 0; i < spec.size(); ++i) {
    const auto& t = r->inputs[i];
    require(t.name == spec[i].name, "inputs out of the model's order");
    require(t.shape.size() == spec[i].shape.size(), "a wrong rank was accepted");
    uint64_t n = 1;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      require(t.shape[d] >= 1, "a dimension below 1 was accepted");
      require(spec[i].shape[d] == -1 || t.shape[d] == spec[i].shape[d],
              "a fixed dimension of another size was accepted");
      n *= static_cast<uint64_t>(t.shape[d]);
    }
    require(n <= limit && t.values().size() == n, "data and shape disagree");
    for (float v : t.values())
      require(std::isfinite(v), "a NaN or infinity was accepted");
    if (grove::ml::batchable(spec))
      require(t.shape[0] == r->batch, "inputs of different batch sizes accepted");
  }
  return 0;
}
