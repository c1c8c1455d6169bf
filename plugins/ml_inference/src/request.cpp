#include "request.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <numeric>
#include <span>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include "grove/errors.hpp"
#include "grove/utf8.hpp"

namespace grove::ml {

namespace {

const char* dtype_name(DataType t) {
  switch (t) {
    case FLOAT32:
      return "float32";
    case UINT8:
      return "uint8";
    default:
      return "unspecified";
  }
}

caf::error bad_input(const std::string& name, const std::string& what) {
  return make_error(errc::malformed, "input '" + name + "': " + what);
}

/// The index of the first NaN or infinity in `v`, or v.size(). Blocks are scanned without
/// a branch per element (an all-ones exponent is NaN or infinity), which the compiler
/// vectorizes: ~6x faster than std::isfinite element by element, 15 us less for a 3x96x96
/// input; only a block with one is searched again.
size_t first_non_finite(std::span<const float> v) {
  constexpr size_t block = 1024;
  for (size_t at = 0; at < v.size(); at += block) {
    size_t end = std::min(v.size(), at + block);
    uint32_t bad = 0;
    for (size_t i = at; i < end; ++i)
      bad |= static_cast<uint32_t>((std::bit_cast<uint32_t>(v[i]) & 0x7f800000u) == 0x7f800000u);
    if (bad != 0)
      for (size_t i = at; i < end; ++i)
        if (!std::isfinite(v[i]))
          return i;
  }
  return v.size();
}

using google::protobuf::io::CodedInputStream;
using google::protobuf::internal::WireFormatLite;

/// Reads an InferRequest off libprotobuf's CodedInputStream field by field, as the
/// generated parser does, but keeps the tensors' data and the image as views into `wire`
/// (the stream's buffer) instead of copies. A refusal over the limits says so (over()).
class request_reader {
public:
  request_reader(std::string_view wire, const request_limits& limits)
    : wire_(wire), limits_(limits),
      in_(reinterpret_cast<const uint8_t*>(wire.data()), static_cast<int>(wire.size())) {
  }

  bool read(request_view& out) {
    auto whole = in_.PushLimit(static_cast<int>(wire_.size()));
    while (in_.BytesUntilLimit() > 0) {
      uint32_t tag = next_tag();
      if (tag == WireFormatLite::MakeTag(1, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
        if (out.inputs.size() == limits_.inputs) {
          over_ = "the request has more tensors than the model has inputs ("
                  + std::to_string(limits_.inputs) + ")";
          return false;
        }
        if (!read_tensor(out.inputs.emplace_back()))
          return false;
      } else if (tag == WireFormatLite::MakeTag(2, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
        if (!view(out.image))
          return false;
      } else if (tag == WireFormatLite::MakeTag(3, WireFormatLite::WIRETYPE_VARINT)) {
        uint64_t n;
        if (!in_.ReadVarint64(&n))
          return false;
        out.top_k = static_cast<uint32_t>(n);
      } else if (!skip(tag)) {
        return false;
      }
    }
    in_.PopLimit(whole);
    return true;
  }

  /// Why the limits refused the request; empty when they did not.
  const std::string& over() const noexcept {
    return over_;
  }

private:
  /// Protobuf's parser reads a tag or a length in 5 bytes at most; CodedInputStream
  /// takes up to 10 (the bits past 32 dropped), so longer ones are refused here.
  static constexpr int max_tag_bytes = 5;

  /// The next tag; 0 (field number 0, refused) for a malformed one.
  uint32_t next_tag() {
    int at = in_.CurrentPosition();
    uint32_t tag = in_.ReadTag();
    return in_.CurrentPosition() - at > max_tag_bytes ? 0 : tag;
  }

  /// An unknown field skipped, as Protobuf skips it; field number 0 and an end-group tag
  /// with no group open are refused. Varints and fixed-size fields go to
  /// WireFormatLite::SkipField; lengths and groups are read here because SkipField reads
  /// their lengths and tags as CodedInputStream does (up to 10 bytes, a length's bits past
  /// 32 dropped), accepting what Protobuf's parser refuses.
  bool skip(uint32_t tag) {
    if (WireFormatLite::GetTagFieldNumber(tag) == 0)
      return false;
    switch (WireFormatLite::GetTagWireType(tag)) {
      case WireFormatLite::WIRETYPE_LENGTH_DELIMITED: {
        int n;
        return length(n) && in_.Skip(n);
      }
      case WireFormatLite::WIRETYPE_START_GROUP: {
        // Nested within Protobuf's recursion limit, up to the matching end-group tag.
        if (!in_.IncrementRecursionDepth())
          return false;
        auto end = WireFormatLite::MakeTag(WireFormatLite::GetTagFieldNumber(tag),
                                           WireFormatLite::WIRETYPE_END_GROUP);
        for (uint32_t t = next_tag(); t != end; t = next_tag())
          if (!skip(t))
            return false;
        in_.DecrementRecursionDepth();
        return true;
      }
      default:
        return WireFormatLite::SkipField(&in_, tag);
    }
  }

  /// A length-delimited field's length, checked against what is left (PushLimit would
  /// cut a longer one silently to the enclosing limit).
  bool length(int& n) {
    int at = in_.CurrentPosition();
    return in_.ReadVarintSizeAsInt(&n) && in_.CurrentPosition() - at <= max_tag_bytes
           && n <= in_.BytesUntilLimit();
  }

  /// A length-delimited field's bytes, as a view into the wire.
  bool view(std::string_view& out) {
    int n;
    if (!length(n))
      return false;
    int at = in_.CurrentPosition();
    if (!in_.Skip(n))
      return false;
    out = wire_.substr(static_cast<size_t>(at), static_cast<size_t>(n));
    return true;
  }

  bool push_shape(tensor_view& t, uint64_t n) {
    if (t.shape.size() == limits_.rank) {
      over_ = "a tensor's shape has more dimensions than any of the model's inputs ("
              + std::to_string(limits_.rank) + ")";
      return false;
    }
    t.shape.push_back(static_cast<int64_t>(n));
    return true;
  }

  /// A Tensor, inside its own limit (and a level of nesting, as Protobuf counts it).
  bool read_tensor(tensor_view& t) {
    int n;
    if (!length(n) || !in_.IncrementRecursionDepth())
      return false;
    auto outer = in_.PushLimit(n);
    while (in_.BytesUntilLimit() > 0) {
      uint32_t tag = next_tag();
      std::string_view v;
      uint64_t x;
      if (tag == WireFormatLite::MakeTag(1, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
        if (!view(v) || !valid_utf8(v))
          return false;
        t.name.assign(v);
      } else if (tag == WireFormatLite::MakeTag(2, WireFormatLite::WIRETYPE_VARINT)) {
        if (!in_.ReadVarint64(&x))
          return false;
        t.dtype = static_cast<int32_t>(x);
      } else if (tag == WireFormatLite::MakeTag(3, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
        int len; // packed
        if (!length(len))
          return false;
        auto packed = in_.PushLimit(len);
        while (in_.BytesUntilLimit() > 0)
          if (!in_.ReadVarint64(&x) || !push_shape(t, x))
            return false;
        in_.PopLimit(packed);
      } else if (tag == WireFormatLite::MakeTag(3, WireFormatLite::WIRETYPE_VARINT)) {
        if (!in_.ReadVarint64(&x) || !push_shape(t, x))
          return false;
      } else if (tag == WireFormatLite::MakeTag(4, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
        if (!view(t.data))
          return false;
      } else if (!skip(tag)) {
        return false;
      }
    }
    in_.PopLimit(outer);
    in_.DecrementRecursionDepth();
    return true;
  }

  std::string_view wire_;
  request_limits limits_;
  CodedInputStream in_;
  std::string over_;
};

} // namespace

caf::expected<request_view> read_request(std::string& wire, const request_limits& limits) {
  request_view out;
  if (wire.size() > static_cast<size_t>(INT32_MAX))
    return make_error(errc::malformed, "the request is larger than Protobuf reads");
  request_reader r{wire, limits};
  if (!r.read(out))
    return make_error(errc::malformed,
                      !r.over().empty()
                        ? r.over()
                        : "the request does not parse as " + InferRequest{}.GetTypeName());
  // Moved back over bytes already read: the data field's own tag and length and the
  // tensor's (4 bytes at least, all before this data and after any other data kept).
  for (auto& t : out.inputs) {
    auto mis = reinterpret_cast<uintptr_t>(t.data.data()) % alignof(float);
    if (t.dtype != FLOAT32 || mis == 0 || t.data.empty())
      continue;
    auto* to = wire.data() + (t.data.data() - wire.data()) - mis;
    std::memmove(to, t.data.data(), t.data.size());
    t.data = {to, t.data.size()};
  }
  return out;
}

request_limits limits_of(const std::vector<input_def>& inputs) {
  request_limits l{inputs.size(), 0};
  for (const auto& in : inputs)
    l.rank = std::max(l.rank, in.shape.size());
  return l;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool batchable(const std::vector<input_def>& inputs) {
  return !inputs.empty() && std::all_of(inputs.begin(), inputs.end(), [](const input_def& in) {
    return !in.shape.empty() && in.shape[0] == -1;
  });
}

caf::expected<decoded> decode_tensors(const request_view& req,
                                      const std::vector<input_def>& inputs,
                                      uint64_t max_elements, bool borrow) {
  if (!req.image.empty())
    return make_error(errc::malformed, "an image request: the model has no preprocessing");
  decoded out;
  out.inputs.reserve(inputs.size());
  bool batch_dim = batchable(inputs);
  std::vector<bool> used(req.inputs.size(), false);
  for (const auto& spec : inputs) {
    const tensor_view* t = nullptr;
    for (size_t i = 0; i < req.inputs.size(); ++i)
      if (req.inputs[i].name == spec.name) {
        if (t != nullptr)
          return bad_input(spec.name, "given twice");
        t = &req.inputs[i];
        used[i] = true;
      }
    if (t == nullptr)
      return make_error(errc::malformed, "input '" + spec.name + "' is missing (expected "
                                           + spec.dtype + " " + shape_text(spec.shape) + ")");
    std::vector<int64_t> shape = t->shape;
    auto want = spec.dtype == "uint8" ? UINT8 : FLOAT32;
    if (t->dtype != want)
      return bad_input(spec.name, std::string{"dtype "}
                                    + dtype_name(static_cast<DataType>(t->dtype)) + ", expected "
                                    + spec.dtype);
    if (shape.size() != spec.shape.size())
      return bad_input(spec.name, "shape " + shape_text(shape) + " has "
                                    + std::to_string(shape.size()) + " dimensions, expected "
                                    + shape_text(spec.shape));
    // Counted with an overflow check before anything is allocated: a claim of 2 GB
    // elements costs nothing.
    uint64_t elements = 1;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (shape[d] < 1 || (spec.shape[d] != -1 && shape[d] != spec.shape[d]))
        return bad_input(spec.name, "shape " + shape_text(shape) + ", expected "
                                      + shape_text(spec.shape) + " (-1: any size)");
      if (static_cast<uint64_t>(shape[d]) > max_elements
          || elements > max_elements / static_cast<uint64_t>(shape[d]))
        return bad_input(spec.name, "shape " + shape_text(shape) + " has more than "
                                      + std::to_string(max_elements)
                                      + " elements (max_input_elements)");
      elements *= static_cast<uint64_t>(shape[d]);
    }
    uint64_t esize = want == UINT8 ? 1 : 4;
    if (t->data.size() != elements * esize)
      return bad_input(spec.name, std::to_string(t->data.size()) + " bytes of data, expected "
                                    + std::to_string(elements * esize) + " (" + spec.dtype + " "
                                    + shape_text(shape) + ")");
    if (batch_dim) {
      if (&spec == &inputs.front())
        out.batch = shape[0];
      else if (shape[0] != out.batch)
        return bad_input(spec.name, "batch dimension " + std::to_string(shape[0]) + ", but '"
                                      + inputs.front().name + "' has "
                                      + std::to_string(out.batch));
    }
    tensor x;
    x.name = spec.name;
    x.shape = std::move(shape);
    const auto* raw = reinterpret_cast<const unsigned char*>(t->data.data());
    if (want == UINT8) {
      x.data.resize(elements);
      for (uint64_t i = 0; i < elements; ++i)
        x.data[i] = static_cast<float>(raw[i]);
    } else {
      // The wire is little-endian float32: on such a host, aligned bytes are the floats.
      bool in_place = borrow && std::endian::native == std::endian::little
                      && reinterpret_cast<uintptr_t>(raw) % alignof(float) == 0;
      if (in_place) {
        x.borrowed = {reinterpret_cast<const float*>(raw), static_cast<size_t>(elements)};
      } else {
        x.data.resize(elements);
        std::memcpy(x.data.data(), raw, elements * 4);
      }
      auto v = x.values();
      if (auto i = first_non_finite(v); i < v.size())
        return bad_input(spec.name, "element " + std::to_string(i) + " is "
                                      + (std::isnan(v[i]) ? "NaN" : "infinite"));
    }
    out.inputs.push_back(std::move(x));
  }
  for (size_t i = 0; i < req.inputs.size(); ++i)
    if (!used[i]) {
      std::string names;
      for (const auto& spec : inputs)
        names += (names.empty() ? "" : ", ") + spec.name;
      return make_error(errc::malformed, "input '" + req.inputs[i].name
                                           + "' is not an input of the model (inputs: "
                                           + names + ")");
    }
  return out;
}

std::optional<std::pair<uint64_t, uint64_t>> image_size(std::string_view b) {
  auto byte = [&](size_t i) { return static_cast<uint64_t>(static_cast<unsigned char>(b[i])); };
  auto be16 = [&](size_t i) { return byte(i) << 8 | byte(i + 1); };
  auto be32 = [&](size_t i) { return be16(i) << 16 | be16(i + 2); };
  auto le32 = [&](size_t i) {
    return static_cast<int32_t>(static_cast<uint32_t>(byte(i) | byte(i + 1) << 8
                                                      | byte(i + 2) << 16 | byte(i + 3) << 24));
  };
  // PNG: the signature, then IHDR's width and height.
  if (b.size() >= 24 && b.substr(0, 8) == std::string_view{"\x89PNG\r\n\x1a\n", 8}
      && b.substr(12, 4) == "IHDR")
    return std::pair{be32(16), be32(20)};
  // BMP: BITMAPINFOHEADER's (and its successors') width and height, 32 bits each
  // (negative height: top-down); OS/2's 12-byte BITMAPCOREHEADER has 16 bits each.
  if (b.size() >= 26 && b.substr(0, 2) == "BM") {
    if (le32(14) == 12)
      return std::pair{byte(18) | byte(19) << 8, byte(20) | byte(21) << 8};
    int64_t w = le32(18), h = le32(22);
    return std::pair{static_cast<uint64_t>(w < 0 ? -w : w), static_cast<uint64_t>(h < 0 ? -h : h)};
  }
  // JPEG: the first start-of-frame segment (SOF0-15 but DHT, JPG, DAC) before the scan.
  // Stray bytes between segments are skipped, as libjpeg's next_marker skips them (with a
  // warning the decode reads past: jpeg_check.cpp).
  if (b.size() >= 4 && byte(0) == 0xFF && byte(1) == 0xD8) {
    size_t i = 2;
    while (i + 4 <= b.size()) {
      if (byte(i) != 0xFF) { // a stray byte
        ++i;
        continue;
      }
      auto marker = byte(i + 1);
      if (marker == 0xFF) { // fill byte
        ++i;
        continue;
      }
      if (marker == 0x00) { // a stuffed zero is no marker: stray too
        i += 2;
        continue;
      }
      if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { // no length
        i += 2;
        continue;
      }
      if (marker == 0xDA || marker == 0xD9)
        return std::nullopt; // the scan or the end before any frame header
      auto len = be16(i + 2);
      if (len < 2)
        return std::nullopt;
      if (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8
          && marker != 0xCC) {
        if (i + 9 > b.size())
          return std::nullopt;
        return std::pair{be16(i + 7), be16(i + 5)};
      }
      i += 2 + len;
    }
  }
  return std::nullopt;
}

void top_labels(std::span<const float> scores, int64_t batch, uint32_t k,
                const std::vector<std::string>& labels, InferResponse& out) {
  if (batch < 1 || scores.empty() || scores.size() % static_cast<size_t>(batch) != 0)
    return;
  auto row = scores.size() / static_cast<size_t>(batch);
  std::vector<uint32_t> idx(row);
  for (int64_t b = 0; b < batch; ++b) {
    const float* s = scores.data() + static_cast<size_t>(b) * row;
    std::iota(idx.begin(), idx.end(), 0u);
    auto n = std::min<size_t>(k, row);
    std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(n), idx.end(),
                      [s](uint32_t a, uint32_t c) { return s[a] > s[c] || (s[a] == s[c] && a < c); });
    for (size_t i = 0; i < n; ++i) {
      auto* l = out.add_top();
      l->set_index(idx[i]);
      l->set_score(s[idx[i]]);
      if (idx[i] < labels.size())
        l->set_label(labels[idx[i]]);
    }
  }
}

} // namespace grove::ml
