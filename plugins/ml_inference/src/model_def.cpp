#include "model_def.hpp"

#include <openssl/evp.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <set>
#include <utility>

#include <yaml-cpp/yaml.h>

#include "grove/archive.hpp"
#include "grove/errors.hpp"

namespace grove::ml {

namespace {

caf::error bad(std::string_view origin, const std::string& what) {
  return make_error(errc::invalid_config, std::string{origin} + ": " + what);
}

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

/// Dimensions of at most 8, each -1 or 1..2^31-1 (OpenCV's Mat sizes are int).
std::string shape_defect(const std::vector<int64_t>& shape) {
  if (shape.empty() || shape.size() > 8)
    return "shape needs 1 to 8 dimensions, got " + std::to_string(shape.size());
  for (auto d : shape)
    if (d != -1 && (d < 1 || d > INT32_MAX))
      return "shape dimension " + std::to_string(d) + ": -1 (any) or 1 to 2147483647";
  return {};
}

} // namespace

config_map<input_def> input_def::map() {
  using c = input_def;
  return config_map<c>{}
    .key_no_default("name", &c::name, required, "the model's name for the input")
    .key("dtype", &c::dtype, "float32", one_of{"float32", "uint8"},
         "what a request sends (computed in float32)")
    .key_no_default("shape", &c::shape, required,
                    "dimensions; -1 is any size, a first -1 the batch dimension");
}

config_map<preprocess_def> preprocess_def::map() {
  using c = preprocess_def;
  return config_map<c>{}
    .key("width", &c::width, 0, range{0, 16384}, "resize an image to this width (0: no images)")
    .key("height", &c::height, 0, range{0, 16384}, "and height")
    .key("mean", &c::mean, std::vector<double>{}, "subtracted per channel (one or three values)")
    .key("scale", &c::scale, 1.0, "multiplied after the mean (1/255: 0..255 to 0..1)")
    .key("std", &c::std_dev, std::vector<double>{},
         "divided per channel after scaling (one or three values; empty: none)")
    .key("channel_order", &c::channel_order, "rgb", one_of{"rgb", "bgr"},
         "order of the channels the model expects")
    .key("layout", &c::layout, "nchw", one_of{"nchw", "nhwc"}, "the image input's layout");
}

config_map<manifest> manifest::map() {
  using c = manifest;
  return config_map<c>{}
    .key("model", &c::model, "model.onnx", "the ONNX file inside an archive")
    .list("inputs", &c::inputs, input_def::map(), "the model's inputs, in order")
    .key("outputs", &c::outputs, std::vector<std::string>{},
         "outputs to return (empty: the model's own)")
    .section("preprocessing", &c::preprocessing, preprocess_def::map(),
             "how an encoded image becomes the first input")
    .key("labels", &c::labels, std::vector<std::string>{},
         "class names by index of the first output's last dimension")
    .key("top_k", &c::top_k, 0, range{0, 1000}, "top labels returned when a request asks none");
}

static config_map<model_data> model_map() {
  using c = model_data;
  return config_map<c>{}
    .key_no_default("path", &c::path, required,
                    "absolute path of a .onnx file or a .tar.gz/.tgz/.zip with the model and "
                    "manifest.yaml")
    .key_no_default("sha256", &c::sha256, required, "the package file's SHA-256 (64 hex digits)")
    .key("version", &c::version, "", "shown as the version (empty: the digest's first 12 digits)")
    .section("manifest", &c::manifest_inline, manifest::map(),
             "the manifest of a .onnx file (an archive's is its manifest.yaml)")
    .key("threads", &c::threads, 0, range{0, 64}, "workers (0: the plugin's threads)")
    .key("queueCapacity", &c::queue_capacity, 0, range{0, 100000},
         "bounded queue (0: the plugin's queue_capacity)")
    .key("maxBatchSize", &c::max_batch_size, 0, range{0, 1024},
         "dynamic batching (0: the plugin's max_batch_size)")
    .key("maxBatchDelayUs", &c::max_batch_delay_us, -1, range{-1, 1000000},
         "dynamic batching (-1: the plugin's max_batch_delay_us)");
}

config_map<resource_config> resource_config::map() {
  return config_map<resource_config>{}.section(
    std::string{resource_key}, &resource_config::model, model_map(),
    "a machine-learning model for ml_inference");
}

bool is_model_resource(std::string_view yaml) {
  try {
    auto node = YAML::Load(std::string{yaml});
    return node.IsMap() && node[std::string{resource_key}].IsDefined();
  } catch (...) {
    return false;
  }
}

std::string manifest_defect(const manifest& m) {
  if (m.inputs.empty())
    return "inputs: a model needs at least one input";
  std::set<std::string> names;
  for (size_t i = 0; i < m.inputs.size(); ++i) {
    const auto& in = m.inputs[i];
    auto at = "inputs[" + std::to_string(i) + "]";
    if (in.name.empty())
      return at + ".name: empty";
    if (!names.insert(in.name).second)
      return at + ".name: '" + in.name + "' twice";
    if (auto d = shape_defect(in.shape); !d.empty())
      return at + ".shape: " + d;
  }
  const auto& p = m.preprocessing;
  if ((p.width == 0) != (p.height == 0))
    return "preprocessing: width and height go together";
  if (p.width > 0) {
    const auto& in = m.inputs[0];
    if (in.shape.size() != 4)
      return "preprocessing: the first input '" + in.name + "' must have 4 dimensions";
    auto channels = p.layout == "nchw" ? in.shape[1] : in.shape[3];
    if (channels != 1 && channels != 3)
      return "preprocessing: the first input '" + in.name + "' has " + std::to_string(channels)
             + " channels in " + p.layout + "; images give 1 or 3";
    auto h = p.layout == "nchw" ? in.shape[2] : in.shape[1];
    auto w = p.layout == "nchw" ? in.shape[3] : in.shape[2];
    if ((h != -1 && h != p.height) || (w != -1 && w != p.width))
      return "preprocessing: " + std::to_string(p.width) + "x" + std::to_string(p.height)
             + " does not fit the first input's shape";
    // One value for every channel, or one per channel (three for a gray model would be
    // read as one, silently).
    for (auto [key, v] : std::initializer_list<std::pair<const char*, const std::vector<double>*>>{
           {"mean", &p.mean}, {"std", &p.std_dev}})
      if (!v->empty() && v->size() != 1 && v->size() != static_cast<size_t>(channels))
        return "preprocessing: " + std::string{key} + " has " + std::to_string(v->size())
               + " values; the first input '" + in.name + "' has "
               + (channels == 1 ? "1 channel (give 1)" : "3 channels (give 1 or 3)");
    for (auto s : p.std_dev)
      if (s == 0)
        return "preprocessing: std: a zero divisor";
  }
  return {};
}

caf::expected<model_data> parse_model_resource(std::string_view yaml, std::string_view origin) {
  static const auto map = resource_config::map();
  auto cfg = map.load(yaml, origin);
  if (!cfg)
    return cfg.error();
  auto d = std::move(cfg->model);
  const std::string key = std::string{resource_key} + ".";
  if (d.path.empty() || d.path.front() != '/')
    return bad(origin, key + "path: '" + d.path + "' is not an absolute path");
  auto lower = d.sha256;
  for (auto& ch : lower)
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (lower.size() != 64 || lower.find_first_not_of("0123456789abcdef") != std::string::npos)
    return bad(origin, key + "sha256: 64 hex digits, got '" + d.sha256 + "'");
  d.sha256 = lower;
  if (!d.manifest_inline.inputs.empty())
    if (auto def = manifest_defect(d.manifest_inline); !def.empty())
      return bad(origin, key + "manifest." + def);
  return d;
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

caf::expected<package> load_package(const model_data& d, uint64_t max_bytes) {
  std::ifstream f{d.path, std::ios::binary};
  if (!f)
    return make_error(errc::invalid_config, d.path + ": cannot open: " + std::strerror(errno));
  f.seekg(0, std::ios::end);
  auto size = static_cast<uint64_t>(f.tellg());
  if (size > max_bytes)
    return make_error(errc::invalid_config, d.path + ": " + std::to_string(size)
                                              + " bytes, more than max_model_bytes ("
                                              + std::to_string(max_bytes) + ")");
  f.seekg(0);
  std::string bytes(size, '\0');
  if (!f.read(bytes.data(), static_cast<std::streamsize>(size)))
    return make_error(errc::invalid_config, d.path + ": read failed");
  package p;
  p.file_bytes = size;
  p.sha256 = sha256_hex(bytes);
  if (p.sha256 != d.sha256)
    return make_error(errc::invalid_config, d.path + ": sha256 is " + p.sha256
                                              + ", the resource says " + d.sha256);
  p.version = d.version.empty() ? p.sha256.substr(0, 12) : d.version;
  bool archive = ends_with(d.path, ".tar.gz") || ends_with(d.path, ".tgz")
                 || ends_with(d.path, ".zip") || ends_with(d.path, ".tar");
  if (!archive) {
    if (d.manifest_inline.inputs.empty())
      return make_error(errc::invalid_config,
                        d.path + ": a .onnx file needs the resource's manifest (inputs)");
    p.onnx = std::move(bytes);
    p.man = d.manifest_inline;
    return p;
  }
  // The SDK's reader: names checked and normalised ("./model.onnx" is "model.onnx"),
  // links, devices and more than max_model_bytes unpacked refused.
  archive::options opts;
  opts.limits.max_total_bytes = max_bytes;
  opts.limits.max_entry_bytes = max_bytes;
  auto files = archive::read_files(bytes, opts);
  if (!files) {
    auto code = static_cast<errc>(files.error().code());
    return make_error(errc::invalid_config,
                      d.path + ": " + message_of(files.error())
                        + (code == errc::too_large ? " (max_model_bytes)" : ""));
  }
  const std::string* man_text = nullptr;
  for (const auto& f : *files)
    if (f.name == "manifest.yaml")
      man_text = &f.data;
  if (man_text != nullptr && !d.manifest_inline.inputs.empty())
    return make_error(errc::invalid_config, d.path + ": has a manifest.yaml and the resource "
                                                     "a manifest: give one of them");
  if (man_text == nullptr) {
    if (d.manifest_inline.inputs.empty())
      return make_error(errc::invalid_config, d.path + ": no manifest.yaml in the archive");
    p.man = d.manifest_inline;
  } else {
    static const auto map = manifest::map();
    auto m = map.load(*man_text, d.path + ":manifest.yaml");
    if (!m)
      return m.error();
    if (auto def = manifest_defect(*m); !def.empty())
      return make_error(errc::invalid_config, d.path + ":manifest.yaml: " + def);
    p.man = std::move(*m);
  }
  for (auto& f : *files)
    if (f.name == p.man.model)
      p.onnx = std::move(f.data);
  if (p.onnx.empty())
    return make_error(errc::invalid_config,
                      d.path + ": no '" + p.man.model + "' in the archive (manifest: model)");
  return p;
}

} // namespace grove::ml
