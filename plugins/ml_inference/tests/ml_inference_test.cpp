// ml_inference in a real in-process kernel (the SDK harness) with a real group file:
// models built by make_models.py with python3-onnx, outputs compared with numpy's within
// 1e-4; bad requests and bad models answered with clear errors while the rest serves; a
// new version swapped in under load without a lost or failed request; dynamic batching;
// the throttling queue; the resource parser; README.md's tables.

#define BOOST_TEST_MODULE ml_inference_test
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "grove/kernel/kernel.hpp"
#include "grove/ml_inference/client.hpp"
#include "grove/testing/harness.hpp"
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "config.hpp"
#include "jpeg_check.hpp"
#include "model_def.hpp"
#include "request.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
namespace gml = grove::ml_inference;
namespace ml = grove::ml;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

/// The models and references, made once for the whole run.
struct models_dir {
  fs::path dir;
  json index;
  models_dir() {
    dir = fs::temp_directory_path() / ("ml_inference_test." + std::to_string(::getpid()));
    fs::create_directories(dir);
    auto cmd = std::string{"/usr/bin/python3 "} + ML_MAKE_MODELS + " " + dir.string();
    BOOST_REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
    std::ifstream in{dir / "index.json"};
    index = json::parse(in);
  }
  ~models_dir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  const json& get(const std::string& id) const {
    for (const auto& c : index["cases"])
      if (c["id"] == id)
        return c;
    BOOST_FAIL("no case " + id);
    return index;
  }
};

models_dir& models() {
  static models_dir m;
  return m;
}

std::string slurp(const fs::path& p) {
  std::ifstream in{p, std::ios::binary};
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// A resource entry for the group file (YAML flow style).
std::string resource(const std::string& id, const std::string& path, const std::string& sha,
                     const std::string& manifest_inputs, const std::string& extra = "") {
  std::string r = "  - id: " + id + "\n    config:\n      localMachineLearningModelResourceData:\n"
                  "        path: " + path + "\n        sha256: " + sha + "\n";
  if (!manifest_inputs.empty())
    r += "        manifest: {inputs: " + manifest_inputs + "}\n";
  return r + extra;
}

std::string inputs_yaml(const json& manifest_inputs) {
  std::string s = "[";
  for (const auto& in : manifest_inputs) {
    s += (s.size() > 1 ? ", " : "") + std::string{"{name: "} + in["name"].get<std::string>()
         + ", shape: " + in["shape"].dump() + "}";
  }
  return s + "]";
}

/// The group with every good case and the three bad models.
std::string full_group(const std::string& extra_config = "", const std::string& more = "") {
  const auto& idx = models().index;
  std::string g = "name: ml\nresources:\n";
  for (const auto& c : idx["cases"])
    g += resource(c["id"], c["path"], c["sha256"],
                  c.contains("archive") ? "" : inputs_yaml(c["manifest"]["inputs"]),
                  c["id"] == "cnn" ? extra_config : "");
  for (auto& [id, b] : idx["bad"].items())
    g += resource(id, b["path"], b["sha256"],
                  id == "throws" ? "[{name: x, shape: [1, 1, -1, -1]}]" : "[{name: x, shape: [1, 4]}]");
  // The CNN as a .zip, a missing file, a model whose digest does not match, and a volume
  // (another plugin's) left alone.
  const auto* cnn = &idx["cases"][0];
  for (const auto& c : idx["cases"])
    if (c["id"] == "cnn")
      cnn = &c;
  g += resource("cnn_zip", (*cnn)["zip"]["path"], (*cnn)["zip"]["sha256"], "");
  g += resource("missing", (models().dir / "nosuch.onnx").string(), std::string(64, 'c'),
                "[{name: x, shape: [1, 4]}]");
  g += resource("wrong_digest", idx["bad"]["not_onnx"]["path"], std::string(64, 'a'),
                "[{name: x, shape: [1, 4]}]");
  g += "  - id: data\n    config:\n      localVolumeResourceData: {sourcePath: /srv, "
       "destinationPath: /data}\n";
  return g + more;
}

ml::InferRequest request_of(const json& inputs) {
  ml::InferRequest req;
  for (const auto& in : inputs)
    gml::add_input(req, in["name"].get<std::string>(), in["shape"].get<std::vector<int64_t>>(),
                   in["data"].get<std::vector<float>>());
  return req;
}

caf::expected<ml::InferResponse> infer(grove::testing::harness& h, const std::string& model,
                                       const ml::InferRequest& req, std::chrono::milliseconds t = 20s) {
  return gml::infer_rpc{gml::infer_topic(model)}.call_with(
    [&](grove::Envelope e) { return h.request(e.topic(), e.payload(), t); }, req);
}

caf::expected<ml::ModelsReply> list(grove::testing::harness& h) {
  return gml::models_rpc{std::string{gml::models_topic}}.call_with(
    [&](grove::Envelope e) { return h.request(e.topic(), e.payload()); }, ml::ModelsRequest{});
}

const ml::ModelInfo* find(const ml::ModelsReply& r, const std::string& id) {
  for (const auto& m : r.models())
    if (m.id() == id)
      return &m;
  return nullptr;
}

/// Waits until no model is loading.
void wait_loaded(grove::testing::harness& h) {
  BOOST_REQUIRE(grove::test::wait_until(
    [&] {
      auto r = list(h);
      if (!r || r->models_size() == 0)
        return false;
      for (const auto& m : r->models())
        if (m.state() == ml::ModelInfo::LOADING)
          return false;
      return true;
    },
    60s));
}

void check_close(const std::vector<float>& got, const std::vector<float>& want,
                 const std::string& what, double tolerance = 1e-4) {
  BOOST_REQUIRE_MESSAGE(got.size() == want.size(), what << ": " << got.size() << " elements, expected "
                                                        << want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::abs(double{got[i]} - want[i]));
  BOOST_CHECK_MESSAGE(worst <= tolerance, what << ": largest difference " << worst
                                               << " (tolerance " << tolerance << ")");
}

/// The plugin started in a kernel with the group file `group`, its models loaded.
std::unique_ptr<grove::testing::harness> started(const fs::path& group,
                                                 const std::string& config = "{}") {
  grove::testing::harness_options o;
  o.group_file = group;
  o.log_level = "off";
  auto h = std::make_unique<grove::testing::harness>(ML_PLUGIN, config, o);
  BOOST_REQUIRE(!h->start());
  wait_loaded(*h);
  return h;
}

struct fixture {
  fs::path group;
  std::unique_ptr<grove::testing::harness> h;
  explicit fixture(const std::string& config = "{}", const std::string& extra = "",
                   const std::string& more = "") {
    group = models().dir / ("group." + std::to_string(++n) + ".yaml");
    std::ofstream{group} << full_group(extra, more);
    h = started(group, config);
  }
  static inline int n = 0;
};

std::string error_text(const caf::error& e) {
  return grove::describe(e);
}

} // namespace

BOOST_AUTO_TEST_CASE(operators_match_numpy) {
  fixture f;
  for (const auto& c : models().index["cases"]) {
    std::string id = c["id"];
    auto r = infer(*f.h, id, request_of(c["inputs"]));
    BOOST_REQUIRE_MESSAGE(r, id << ": " << (r ? "" : error_text(r.error())));
    BOOST_CHECK_EQUAL(r->model(), id);
    BOOST_REQUIRE_EQUAL(r->outputs_size(), static_cast<int>(c["outputs"].size()));
    for (size_t i = 0; i < c["outputs"].size(); ++i) {
      const auto& want = c["outputs"][i];
      const auto& got = r->outputs(static_cast<int>(i));
      BOOST_CHECK_EQUAL_COLLECTIONS(got.shape().begin(), got.shape().end(), want["shape"].begin(),
                                    want["shape"].end());
      check_close(gml::floats(got), want["data"].get<std::vector<float>>(), id);
    }
  }
}

BOOST_AUTO_TEST_CASE(a_realistic_small_classifier_matches_numpy) {
  // MobileNet v1 at width 0.5 (make_models.py): 3x128x128, 27 Conv layers, 13 of them
  // depthwise, BatchNormalization, 1000 classes; what a device runs, not a toy.
  const auto& c = models().index["mobilenet"];
  auto group = models().dir / "group.mobilenet.yaml";
  std::ofstream{group} << "name: ml\nresources:\n"
                             + resource(c["id"], c["path"], c["sha256"],
                                        inputs_yaml(c["manifest"]["inputs"]));
  auto hp = started(group);
  auto& h = *hp;
  auto req = request_of(c["inputs"]);
  auto r = infer(h, "mobilenet", req);
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : error_text(r.error())));
  BOOST_REQUIRE_EQUAL(r->outputs_size(), 1);
  const auto& want = c["outputs"][0];
  const auto& got = r->outputs(0);
  BOOST_CHECK_EQUAL_COLLECTIONS(got.shape().begin(), got.shape().end(), want["shape"].begin(),
                                want["shape"].end());
  auto w = want["data"].get<std::vector<float>>();
  auto g = gml::floats(got);
  check_close(g, w, "mobilenet");
  BOOST_CHECK_EQUAL(std::max_element(g.begin(), g.end()) - g.begin(),
                    std::max_element(w.begin(), w.end()) - w.begin());
  // The first non-finite element of a large input is the one named, in a later block of
  // the check than the first.
  auto* data = req.mutable_inputs(0)->mutable_data();
  float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  std::memcpy(data->data() + 40000 * 4, &inf, 4);
  std::memcpy(data->data() + 45000 * 4, &nan, 4);
  auto bad = infer(h, "mobilenet", req);
  BOOST_REQUIRE(!bad);
  BOOST_CHECK_MESSAGE(error_text(bad.error()).find("input 'x': element 40000 is infinite")
                        != std::string::npos,
                      error_text(bad.error()));
}

BOOST_AUTO_TEST_CASE(an_image_through_the_preprocessing) {
  fixture f;
  const auto& c = models().get("cnn");
  ml::InferRequest req;
  req.set_image(slurp(c["image"].get<std::string>()));
  auto r = infer(*f.h, "cnn", req);
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : error_text(r.error())));
  BOOST_REQUIRE_EQUAL(r->outputs_size(), 1);
  auto want = c["image_output"].get<std::vector<float>>();
  check_close(gml::floats(r->outputs(0)), want, "cnn on cat.png");
  // top_k 3 from the manifest, with its labels, best first.
  BOOST_REQUIRE_EQUAL(r->top_size(), 3);
  auto best = std::max_element(want.begin(), want.end()) - want.begin();
  BOOST_CHECK_EQUAL(r->top(0).index(), best);
  BOOST_CHECK_EQUAL(r->top(0).label(), c["labels"][best].get<std::string>());
  BOOST_CHECK(r->top(0).score() >= r->top(1).score());
  BOOST_CHECK(r->top(1).score() >= r->top(2).score());
}

namespace {

/// A group of make_models.py's preprocessing probes (and the manifests it has refused).
std::unique_ptr<grove::testing::harness> started_preprocessing() {
  std::string g = "name: ml\nresources:\n";
  for (const auto& m : models().index["preprocessing"]["models"])
    g += "  - id: " + m["id"].get<std::string>()
         + "\n    config:\n      localMachineLearningModelResourceData:\n        path: "
         + m["path"].get<std::string>() + "\n        sha256: " + m["sha256"].get<std::string>()
         + "\n        manifest: " + m["manifest"].dump() + "\n"; // JSON: YAML's flow style
  auto group = models().dir / "group.preprocessing.yaml";
  std::ofstream{group} << g;
  return started(group);
}

const json& preprocessing_model(const std::string& id) {
  for (const auto& m : models().index["preprocessing"]["models"])
    if (m["id"] == id)
      return m;
  BOOST_FAIL("no preprocessing model " + id);
  return models().index;
}

} // namespace

BOOST_AUTO_TEST_CASE(every_preprocessing_option_and_image_format_matches_numpy) {
  // make_models.py's probe models return their input (Mul by 1), so each reply is the
  // tensor the preprocessing made, compared with numpy's preprocessing of the image that
  // Python wrote (PNG, BMP) or decoded (JPEG, with PIL), within the case's tolerance
  // (make_models.py: 1e-4 where the pixels are exact; about a level of 8 bits more for a
  // resize, which OpenCV does on 8 bits, and for a colour image's luma).
  const auto& pp = models().index["preprocessing"];
  auto hp = started_preprocessing();
  auto& h = *hp;
  std::set<std::string> covered;
  for (const auto& c : pp["cases"]) {
    std::string what = c["what"];
    ml::InferRequest req;
    req.set_image(slurp(c["image"].get<std::string>()));
    auto r = infer(h, c["model"].get<std::string>(), req);
    BOOST_REQUIRE_MESSAGE(r, what << ": " << (r ? "" : error_text(r.error())));
    BOOST_REQUIRE_EQUAL(r->outputs_size(), 1);
    const auto& got = r->outputs(0);
    std::vector<int64_t> got_shape(got.shape().begin(), got.shape().end());
    BOOST_CHECK_MESSAGE(got_shape == c["shape"].get<std::vector<int64_t>>(),
                        what << ": shape " << ml::shape_text(got_shape) << ", expected "
                             << c["shape"].dump());
    check_close(gml::floats(got), c["data"].get<std::vector<float>>(), what,
                c["tolerance"].get<double>());
    // What the case drove, from its manifest and image, for the check below.
    const auto& man = preprocessing_model(c["model"].get<std::string>())["manifest"];
    const auto& pre = man["preprocessing"];
    auto shape = man["inputs"][0]["shape"].get<std::vector<int64_t>>();
    std::string layout = pre.value("layout", "nchw");
    auto channels = layout == "nchw" ? shape[1] : shape[3];
    auto image = fs::path{c["image"].get<std::string>()}.stem().string();
    covered.insert("layout " + layout);
    covered.insert("channels " + std::to_string(channels));
    if (channels == 3)
      covered.insert("channel_order " + pre.value("channel_order", std::string{"rgb"}));
    for (std::string key : {"mean", "std"})
      covered.insert(key + " " + std::to_string(pre.value(key, json::array()).size()));
    covered.insert(pre.contains("scale") ? "scale" : "scale default");
    auto w = pre["width"].get<int64_t>(), hgt = pre["height"].get<int64_t>();
    bool rotated = image == "pp_jpeg_exif_rotated";
    int64_t iw = rotated ? 16 : 24, ih = rotated ? 24 : 16; // make_models.py's PW x PH
    covered.insert(w == iw && hgt == ih ? "no resize"
                   : w * hgt > iw * ih  ? "resize up"
                   : w * 2 == iw && hgt * 2 == ih ? "resize by half"
                                                  : "resize down");
    if (std::count(shape.begin(), shape.end(), -1) > 1)
      covered.insert("free size");
    covered.insert("image " + image);
  }
  // Every option of the manifest's preprocessing and every image the decoders take was
  // driven by a case above (none dropped from make_models.py unnoticed).
  for (std::string want :
       {"layout nchw", "layout nhwc", "channels 1", "channels 3", "channel_order rgb",
        "channel_order bgr", "mean 0", "mean 1", "mean 3", "std 0", "std 1", "std 3", "scale",
        "scale default", "no resize", "resize up", "resize down", "resize by half",
        "free size"})
    BOOST_CHECK_MESSAGE(covered.count(want) == 1, "no case drives " << want);
  for (const auto& [name, path] : pp["images"].items())
    BOOST_CHECK_MESSAGE(covered.count("image pp_" + name) == 1, "no case sends " << name);
}

BOOST_AUTO_TEST_CASE(bad_images_and_preprocessing_manifests_get_clear_errors) {
  const auto& pp = models().index["preprocessing"];
  auto hp = started_preprocessing();
  auto& h = *hp;
  // Manifests whose preprocessing cannot fill the first input: FAILED with the reason.
  auto l = list(h);
  BOOST_REQUIRE(l);
  for (auto [id, text] : std::initializer_list<std::pair<const char*, const char*>>{
         {"pp_bad_4ch", "preprocessing: the first input 'x' has 4 channels in nchw; images "
                        "give 1 or 3"},
         {"pp_bad_2ch_nhwc", "preprocessing: the first input 'x' has 2 channels in nhwc"},
         {"pp_bad_gray_3mean", "preprocessing: mean has 3 values; the first input 'x' has 1 "
                               "channel (give 1)"},
         {"pp_bad_2std", "preprocessing: std has 2 values; the first input 'x' has 3 channels "
                         "(give 1 or 3)"},
         {"pp_bad_size", "preprocessing: 32x16 does not fit the first input's shape"}}) {
    auto* m = find(*l, id);
    BOOST_REQUIRE_MESSAGE(m, id);
    BOOST_CHECK_MESSAGE(m->state() == ml::ModelInfo::FAILED, id);
    BOOST_CHECK_MESSAGE(m->error().find(text) != std::string::npos, id << ": " << m->error());
  }
  BOOST_REQUIRE(find(*l, "pp_rgb"));
  BOOST_CHECK(find(*l, "pp_rgb")->state() == ml::ModelInfo::SERVING);
  auto expect = [&](const std::string& model, const ml::InferRequest& req, const std::string& text) {
    auto r = infer(h, model, req);
    BOOST_REQUIRE_MESSAGE(!r, model << ": wanted '" << text << "', got a reply");
    BOOST_CHECK_MESSAGE(error_text(r.error()).find(text) != std::string::npos,
                        "wanted '" << text << "' in: " << error_text(r.error()));
  };
  auto image = [&](const json& path) {
    ml::InferRequest req;
    req.set_image(slurp(path.get<std::string>()));
    return req;
  };
  const auto& bad = pp["bad_images"];
  // JPEGs that libjpeg decodes with a warning only (OpenCV would return the image): cut
  // inside its scan (the rest gray), and a corrupt one that still reaches its end marker:
  // the scan cut and closed with the marker. (Stray bytes between markers are read past:
  // images jpeg_stray_header and jpeg_stray_end above.)
  expect("pp_rgb", image(bad["jpeg_cut"]), "image: a corrupt JPEG (");
  expect("pp_rgb", image(bad["jpeg_cut"]), "libjpeg: Premature end of JPEG file)");
  expect("pp_rgb", image(bad["jpeg_cut_closed"]),
         "libjpeg: Corrupt JPEG data: premature end of data segment)");
  expect("pp_rgb", image(bad["bmp_cut"]), "bytes that OpenCV cannot decode");
  expect("pp_rgb", image(bad["png_crc"]), "bytes that OpenCV cannot decode");
  // OpenCV reads PPM, the plugin does not (no size check for it).
  expect("pp_rgb", image(bad["ppm"]), "bytes that are not a PNG, JPEG or BMP with a readable size");
  // A good image to a model without preprocessing, to one that failed, and with tensors.
  auto png = image(pp["images"]["png_rgb"]);
  expect("pp_none", png, "an image request: the model has no preprocessing (send tensors)");
  expect("pp_bad_4ch", png, "failed to load");
  auto both = png;
  gml::add_input(both, "x", {1, 3, 16, 24}, std::vector<float>(3 * 16 * 24, 0.5f));
  expect("pp_rgb", both, "an image request carries no tensors (got 1): send an image or tensors");
  // And the model serves on.
  for (const auto& c : pp["cases"])
    if (c["model"] == "pp_rgb" && c["what"] == "png_rgb through pp_rgb") {
      auto r = infer(h, "pp_rgb", png);
      BOOST_REQUIRE_MESSAGE(r, (r ? "" : error_text(r.error())));
      check_close(gml::floats(r->outputs(0)), c["data"].get<std::vector<float>>(),
                  "png_rgb after the bad images", c["tolerance"].get<double>());
    }
}

BOOST_AUTO_TEST_CASE(bad_models_are_reported_and_the_others_serve) {
  fixture f;
  auto r = list(*f.h);
  BOOST_REQUIRE(r);
  auto check_failed = [&](const std::string& id, const std::string& reason) {
    auto* m = find(*r, id);
    BOOST_REQUIRE_MESSAGE(m, id);
    BOOST_CHECK_MESSAGE(m->state() == ml::ModelInfo::FAILED, id);
    BOOST_CHECK_MESSAGE(m->error().find(reason) != std::string::npos, id << ": " << m->error());
  };
  check_failed("not_onnx", "Failed to parse onnx model");
  check_failed("unsupported", "Hardmax");
  check_failed("wrong_digest", "sha256 is");
  check_failed("missing", "nosuch.onnx: cannot open: No such file or directory");
  BOOST_CHECK(find(*r, "data") == nullptr); // a volume: not ours
  auto* cnn = find(*r, "cnn");
  BOOST_REQUIRE(cnn);
  BOOST_CHECK(cnn->state() == ml::ModelInfo::SERVING);
  BOOST_CHECK_EQUAL(cnn->outputs_size(), 1);
  BOOST_CHECK(cnn->backend().find("opencv-dnn 4.") == 0);
  // A failed model's requests are refused with its reason.
  ml::InferRequest req;
  gml::add_input(req, "x", {1, 4}, {1, 2, 3, 4});
  auto e = infer(*f.h, "unsupported", req);
  BOOST_REQUIRE(!e);
  BOOST_CHECK(error_text(e.error()).find("failed to load") != std::string::npos);
  auto none = infer(*f.h, "nosuch", req);
  BOOST_REQUIRE(!none);
  BOOST_CHECK(error_text(none.error()).find("no model 'nosuch'") != std::string::npos);
  // The status line counts them.
  auto details = f.h->kernel().status().details();
  auto line = details.find("ml_inference.models");
  BOOST_REQUIRE(line != details.end());
  BOOST_CHECK_MESSAGE(line->second.find("9 serving, 4 failed") != std::string::npos, line->second);
}

BOOST_AUTO_TEST_CASE(a_zip_package_serves_like_the_tar_gz) {
  fixture f;
  const auto& c = models().get("cnn");
  auto r = infer(*f.h, "cnn_zip", request_of(c["inputs"]));
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : error_text(r.error())));
  check_close(gml::floats(r->outputs(0)), c["outputs"][0]["data"].get<std::vector<float>>(),
              "cnn.zip");
  BOOST_CHECK_EQUAL(r->top_size(), 6); // top_k 3 of its manifest, for each of two items
}

BOOST_AUTO_TEST_CASE(bad_requests_get_clear_errors_and_the_service_runs_on) {
  fixture f;
  const auto& c = models().get("conv_relu");
  auto good = request_of(c["inputs"]);
  auto expect = [&](const std::string& model, const ml::InferRequest& req, const std::string& text) {
    auto r = infer(*f.h, model, req);
    BOOST_REQUIRE_MESSAGE(!r, text);
    BOOST_CHECK_MESSAGE(error_text(r.error()).find(text) != std::string::npos,
                        "wanted '" << text << "' in: " << error_text(r.error()));
  };
  {
    auto req = good;
    req.mutable_inputs(0)->clear_shape();
    for (auto d : {1, 3, 8, 9})
      req.mutable_inputs(0)->add_shape(d);
    expect("conv_relu", req, "input 'x': shape [1, 3, 8, 9], expected [1, 3, 8, 8]");
  }
  {
    auto req = good;
    req.mutable_inputs(0)->set_dtype(ml::UINT8);
    expect("conv_relu", req, "input 'x': dtype uint8, expected float32");
  }
  {
    auto req = good;
    req.mutable_inputs(0)->mutable_data()->resize(100);
    expect("conv_relu", req, "input 'x': 100 bytes of data, expected 768");
  }
  {
    // 2 GB claimed with a few bytes sent: refused before anything is allocated.
    ml::InferRequest req;
    gml::add_input(req, "x", {1 << 29, 16}, {1, 2, 3});
    expect("gemm_sigmoid", req, "more than 16777216 elements");
  }
  {
    auto req = good;
    auto data = gml::floats(req.inputs(0));
    data[5] = std::numeric_limits<float>::quiet_NaN();
    req.mutable_inputs(0)->set_data(reinterpret_cast<const char*>(data.data()), data.size() * 4);
    expect("conv_relu", req, "input 'x': element 5 is NaN");
  }
  {
    // A non-finite element in the last, partial block of the check (65 x 16 = 1,040
    // elements: one full block of 1,024 and 16 more).
    std::vector<float> x(65 * 16, 0.25f);
    x[1030] = -std::numeric_limits<float>::infinity();
    ml::InferRequest req;
    gml::add_input(req, "x", {65, 16}, x);
    expect("gemm_sigmoid", req, "input 'x': element 1030 is infinite");
  }
  {
    // ~1 MiB of empty inputs (field 1, length 0, repeated): refused at the second, more
    // tensors than the model has inputs, not held first; the model serves on (checked below).
    std::string empties;
    while (empties.size() < (1u << 20))
      empties += std::string{"\x0a\x00", 2};
    auto r = f.h->request(gml::infer_topic("conv_relu"), empties);
    BOOST_REQUIRE(!r);
    BOOST_CHECK_MESSAGE(error_text(r.error()).find("more tensors than the model has inputs (1)")
                          != std::string::npos,
                        error_text(r.error()));
  }
  {
    ml::InferRequest req;
    req.set_image("GIF89a not really an image");
    expect("cnn", req, "bytes that are not a PNG, JPEG or BMP with a readable size");
    // A PNG header with its data cut short.
    auto png = slurp(models().get("cnn")["image"].get<std::string>());
    req.set_image(png.substr(0, 60));
    expect("cnn", req, "bytes that OpenCV cannot decode");
    expect("conv_relu", req, "the model has no preprocessing");
    // 25 M pixels claimed by 75 KB: refused by its header, nothing decoded.
    req.set_image(slurp(models().index["big_png"].get<std::string>()));
    expect("cnn", req, "image: 5000x5000 pixels, more than max_image_pixels (16777216)");
  }
  {
    ml::InferRequest req;
    expect("conv_relu", req, "input 'x' is missing (expected float32 [1, 3, 8, 8])");
    auto extra = good;
    gml::add_input(extra, "z", {1}, {0});
    expect("conv_relu", extra, "more tensors than the model has inputs (1)");
  }
  {
    // Not an InferRequest at all.
    auto r = f.h->request(gml::infer_topic("conv_relu"), "\xff\xff\xff garbage");
    BOOST_CHECK(!r);
  }
  {
    // Loads, then the backend throws at inference (a Reshape that no longer fits).
    ml::InferRequest req;
    gml::add_input(req, "x", {1, 1, 6, 6}, std::vector<float>(36, 1.0f));
    expect("throws", req, "backend (OpenCV DNN)");
  }
  // And everything still serves.
  auto r = infer(*f.h, "conv_relu", good);
  BOOST_REQUIRE(r);
  check_close(gml::floats(r->outputs(0)), c["outputs"][0]["data"].get<std::vector<float>>(),
              "conv_relu after the bad requests");
  auto m = list(*f.h);
  BOOST_REQUIRE(m);
  BOOST_CHECK_GE(find(*m, "conv_relu")->errors(), 9u);
  BOOST_CHECK_GE(find(*m, "conv_relu")->requests(), 10u);
}

BOOST_AUTO_TEST_CASE(dynamic_batching_matches_single_requests) {
  fixture f{"{max_batch_size: 16, max_batch_delay_us: 20000, threads: 1}"};
  const auto& c = models().get("cnn");
  auto xs = c["inputs"][0]["data"].get<std::vector<float>>();
  auto want = c["outputs"][0]["data"].get<std::vector<float>>();
  // 16 single-image requests at once, each one of the two references.
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int i = 0; i < 16; ++i)
    ts.emplace_back([&, i] {
      size_t item = static_cast<size_t>(i % 2);
      ml::InferRequest req;
      gml::add_input(req, "x", {1, 3, 32, 32},
                     std::vector<float>(xs.begin() + item * 3072, xs.begin() + (item + 1) * 3072));
      auto r = infer(*f.h, "cnn", req);
      if (!r)
        return;
      auto got = gml::floats(r->outputs(0));
      double worst = 0;
      for (size_t k = 0; k < 10; ++k)
        worst = std::max(worst, std::abs(double{got[k]} - want[item * 10 + k]));
      if (got.size() == 10 && r->outputs(0).shape(0) == 1 && worst <= 1e-4)
        ++ok;
    });
  for (auto& t : ts)
    t.join();
  BOOST_CHECK_EQUAL(ok.load(), 16);
  auto m = list(*f.h);
  BOOST_REQUIRE(m);
  auto* info = find(*m, "cnn");
  uint64_t batched = 0;
  for (const auto& [size, n] : info->batches())
    if (size > 1)
      batched += n;
  BOOST_CHECK_MESSAGE(batched > 0, "no backend call ran more than one request");
}

/// Sends `n` requests at once, `n` times at most, until the model has had a backend call
/// of more than one request; returns what went wrong per request ("" when its answer was
/// `want(i)` within 1e-4) and whether a joined call happened.
template <class MakeRequest, class Want>
std::pair<std::vector<std::string>, bool>
concurrent_rounds(grove::testing::harness& h, const std::string& model, int n,
                  MakeRequest make_request, Want want) {
  std::vector<std::string> faults;
  auto joined = [&] {
    auto m = list(h);
    uint64_t calls = 0;
    if (m && find(*m, model) != nullptr)
      for (const auto& [size, count] : find(*m, model)->batches())
        if (size > 1)
          calls += count;
    return calls > 0;
  };
  for (int round = 0; round < n && !joined(); ++round) {
    std::vector<std::string> these(static_cast<size_t>(n));
    std::vector<std::thread> ts;
    for (int i = 0; i < n; ++i)
      ts.emplace_back([&, i] {
        auto r = infer(h, model, make_request(i));
        auto& fault = these[static_cast<size_t>(i)];
        if (!r) {
          fault = error_text(r.error());
          return;
        }
        auto got = gml::floats(r->outputs(0));
        std::vector<float> expected = want(i);
        double worst = got.size() == expected.size() ? 0 : 1e9;
        for (size_t k = 0; k < std::min(got.size(), expected.size()); ++k)
          worst = std::max(worst, std::abs(double{got[k]} - expected[k]));
        if (worst > 1e-4)
          fault = std::to_string(got.size()) + " values, largest difference "
                  + std::to_string(worst);
      });
    for (auto& t : ts)
      t.join();
    faults.insert(faults.end(), these.begin(), these.end());
  }
  return {faults, joined()};
}

BOOST_AUTO_TEST_CASE(batching_joins_only_requests_of_one_shape) {
  // A model with free spatial dimensions takes 8x8 and 12x12 images: arriving together,
  // they must not be joined (one shape for all, the others' bytes read past or short).
  const auto& fs_ = models().index["free_size"];
  auto more = resource("free_size", fs_["path"], fs_["sha256"],
                       "[{name: x, shape: [-1, 3, -1, -1]}]");
  fixture f{"{max_batch_size: 16, max_batch_delay_us: 20000, threads: 1}", "", more};
  // Three of one size to one of the other, so requests of one size do get joined.
  auto size_of = [&](int i) -> const json& { return fs_["sizes"][i % 4 == 3 ? 1 : 0]; };
  auto [faults, joined] = concurrent_rounds(
    *f.h, "free_size", 12,
    [&](int i) {
      ml::InferRequest req;
      gml::add_input(req, "x", size_of(i)["shape"].get<std::vector<int64_t>>(),
                     size_of(i)["data"].get<std::vector<float>>());
      return req;
    },
    [&](int i) { return size_of(i)["output"].get<std::vector<float>>(); });
  for (size_t i = 0; i < faults.size(); ++i)
    BOOST_CHECK_MESSAGE(faults[i].empty(), "request " << i << ": " << faults[i]);
  BOOST_CHECK_MESSAGE(joined, "no joined call in 12 rounds: batching was not exercised");
}

BOOST_AUTO_TEST_CASE(a_model_that_only_claims_a_batch_dimension_answers_each_alone) {
  // no_batch's graph sums over axis 0 (every item into one row) while its manifest
  // here claims a batch dimension: requests arriving together are joined, the answer has
  // no batch dimension to split, and each request is run alone (its right answer).
  const auto& nb = models().index["no_batch"];
  auto more = resource("no_batch", nb["path"], nb["sha256"], "[{name: x, shape: [-1, 4]}]");
  fixture f{"{max_batch_size: 16, max_batch_delay_us: 20000, threads: 1}", "", more};
  auto [faults, joined] = concurrent_rounds(
    *f.h, "no_batch", 8,
    [&](int) {
      ml::InferRequest req;
      gml::add_input(req, "x", {1, 4}, nb["input"].get<std::vector<float>>());
      return req;
    },
    [&](int) { return nb["output"].get<std::vector<float>>(); });
  for (size_t i = 0; i < faults.size(); ++i)
    BOOST_CHECK_MESSAGE(faults[i].empty(), "request " << i << ": " << faults[i]);
  BOOST_CHECK_MESSAGE(joined, "no joined call in 8 rounds: the fallback was not exercised");
}

BOOST_AUTO_TEST_CASE(a_full_queue_is_throttled_and_counted) {
  fixture f{"{queue_capacity: 1, threads: 1}"};
  const auto& c = models().get("cnn");
  ml::InferRequest req;
  gml::add_input(req, "x", {2, 3, 32, 32}, c["inputs"][0]["data"].get<std::vector<float>>());
  std::vector<std::thread> ts;
  std::atomic<int> throttled{0}, ok{0};
  for (int i = 0; i < 32; ++i)
    ts.emplace_back([&] {
      auto r = infer(*f.h, "cnn", req);
      if (r)
        ++ok;
      else if (error_text(r.error()).find("ThrottlingException") != std::string::npos)
        ++throttled;
    });
  for (auto& t : ts)
    t.join();
  BOOST_CHECK_EQUAL(ok.load() + throttled.load(), 32);
  BOOST_CHECK_GT(throttled.load(), 0);
  auto m = list(*f.h);
  BOOST_REQUIRE(m);
  BOOST_CHECK_EQUAL(find(*m, "cnn")->throttled(), static_cast<uint64_t>(throttled.load()));
}

BOOST_AUTO_TEST_CASE(a_new_version_is_swapped_in_without_losing_a_request) {
  fixture f;
  const auto& c = models().get("gemm_sigmoid");
  auto req = request_of(c["inputs"]);
  auto r0 = list(*f.h);
  BOOST_REQUIRE(r0);
  auto v1 = find(*r0, "gemm_sigmoid")->version();
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::set<std::string> versions;
  std::mutex vm;
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i)
    ts.emplace_back([&] {
      while (!stop) {
        auto r = infer(*f.h, "gemm_sigmoid", req);
        if (r) {
          ++ok;
          std::lock_guard<std::mutex> g{vm};
          versions.insert(r->version());
        } else {
          ++failed;
        }
      }
    });
  // The same file under a new version name: a new runner, loaded beside the old.
  auto text = full_group();
  auto at = text.find("gemm_sigmoid.onnx");
  BOOST_REQUIRE(at != std::string::npos);
  text.insert(text.find('\n', at) + 1, "        version: v2\n");
  std::this_thread::sleep_for(200ms); // let requests flow on v1 first (not a result wait)
  std::ofstream{f.group} << text;
  BOOST_REQUIRE(!f.h->kernel().reload_group());
  BOOST_REQUIRE(grove::test::wait_until([&] {
    auto r = list(*f.h);
    return r && find(*r, "gemm_sigmoid")->version() == "v2";
  }, 30s));
  std::this_thread::sleep_for(200ms);
  stop = true;
  for (auto& t : ts)
    t.join();
  BOOST_CHECK_EQUAL(failed.load(), 0);
  BOOST_CHECK_GT(ok.load(), 0);
  BOOST_CHECK(versions.count(v1) == 1);
  BOOST_CHECK(versions.count("v2") == 1);
  // A broken new version keeps the old one serving, with the reason shown.
  text = full_group();
  at = text.find("gemm_sigmoid.onnx");
  auto sha = text.find("sha256: ", at) + 8;
  text.replace(sha, 64, std::string(64, 'b'));
  std::ofstream{f.group} << text;
  BOOST_REQUIRE(!f.h->kernel().reload_group());
  BOOST_REQUIRE(grove::test::wait_until([&] {
    auto r = list(*f.h);
    return r && !find(*r, "gemm_sigmoid")->error().empty();
  }, 30s));
  auto r = infer(*f.h, "gemm_sigmoid", req);
  BOOST_REQUIRE(r);
  BOOST_CHECK_EQUAL(r->version(), "v2");
  // A removed model is gone.
  text = full_group();
  auto start = text.find("  - id: gemm_sigmoid");
  text.erase(start, text.find("  - id:", start + 5) - start);
  std::ofstream{f.group} << text;
  BOOST_REQUIRE(!f.h->kernel().reload_group());
  BOOST_REQUIRE(grove::test::wait_until([&] {
    auto l = list(*f.h);
    return l && find(*l, "gemm_sigmoid") == nullptr;
  }, 30s));
  BOOST_CHECK(!infer(*f.h, "gemm_sigmoid", req));
  // ... and so is its status line; the others' stay.
  auto details = f.h->kernel().status().details();
  BOOST_CHECK(details.count("ml_inference.model.gemm_sigmoid") == 0);
  BOOST_CHECK(details.count("ml_inference.model.cnn") == 1);
}

BOOST_AUTO_TEST_CASE(a_failed_model_is_tried_again_at_the_next_group_change) {
  const auto& c = models().get("gemm_sigmoid");
  auto late = models().dir / "late" / "model.onnx";
  fs::create_directories(late.parent_path());
  auto group = models().dir / "late" / "group.yaml";
  auto write_group = [&](const std::string& name) {
    std::ofstream{group} << "name: " << name << "\nresources:\n"
                         << resource("late", late.string(), c["sha256"],
                                     inputs_yaml(c["manifest"]["inputs"]));
  };
  write_group("late");
  auto hp = started(group);
  auto& h = *hp;
  auto r = list(h);
  BOOST_REQUIRE(r && find(*r, "late"));
  BOOST_CHECK(find(*r, "late")->state() == ml::ModelInfo::FAILED);
  // The file arrives; the resource's text is the same, the group changes elsewhere.
  fs::copy_file(c["path"].get<std::string>(), late);
  write_group("late-2");
  BOOST_REQUIRE(!h.kernel().reload_group());
  BOOST_REQUIRE(grove::test::wait_until([&] {
    auto l = list(h);
    return l && find(*l, "late") && find(*l, "late")->state() == ml::ModelInfo::SERVING;
  }, 30s));
  auto out = infer(h, "late", request_of(c["inputs"]));
  BOOST_REQUIRE(out);
  check_close(gml::floats(out->outputs(0)), c["outputs"][0]["data"].get<std::vector<float>>(),
              "late");
}

BOOST_AUTO_TEST_CASE(resource_parser_names_the_fault) {
  auto ok = ml::parse_model_resource(
    "localMachineLearningModelResourceData: {path: /m/a.onnx, sha256: " + std::string(64, 'A')
      + ", manifest: {inputs: [{name: x, shape: [-1, 4]}]}}",
    "g.yaml: resources[a].config");
  BOOST_REQUIRE(ok);
  BOOST_CHECK_EQUAL(ok->sha256, std::string(64, 'a'));
  BOOST_CHECK(ml::is_model_resource("localMachineLearningModelResourceData: {}"));
  BOOST_CHECK(!ml::is_model_resource("localVolumeResourceData: {}"));
  BOOST_CHECK(!ml::is_model_resource("[unbalanced"));
  for (auto [bad, text] : std::initializer_list<std::pair<const char*, const char*>>{
         {"localMachineLearningModelResourceData: {sha256: x}", "path: required"},
         {"localMachineLearningModelResourceData: {path: rel.onnx, sha256: x}", "not an absolute"},
         {"localMachineLearningModelResourceData: {path: /a.onnx, sha256: xyz}", "64 hex digits"},
         {"localMachineLearningModelResourceData: {path: /a, sha256: x, colour: red}", "unknown key"},
         {"localMachineLearningModelResourceData: {path: /a.onnx, sha256: "
          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, manifest: "
          "{inputs: [{name: x, shape: [0, 4]}]}}",
          "inputs[0].shape"},
         {"localMachineLearningModelResourceData: {path: /a.onnx, sha256: "
          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, manifest: "
          "{inputs: [{name: x, shape: [1, 4]}], preprocessing: {width: 8, height: 8}}}",
          "4 dimensions"}}) {
    auto r = ml::parse_model_resource(bad, "g.yaml: resources[a].config");
    BOOST_REQUIRE_MESSAGE(!r, bad);
    BOOST_CHECK_MESSAGE(grove::describe(r.error()).find(text) != std::string::npos,
                        grove::describe(r.error()));
    BOOST_CHECK(grove::describe(r.error()).find("g.yaml: resources[a].config") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(requests_are_read_in_place) {
  // Names of 1 to 4 bytes put the data at every offset modulo 4: each is read where it
  // lies in the bytes (moved back to a float's alignment when it must be), equal to what
  // was sent, and decoded without a copy.
  for (size_t len = 1; len <= 4; ++len) {
    std::string name(len, 'x');
    std::vector<float> x(3 * 5 * 7);
    for (size_t i = 0; i < x.size(); ++i)
      x[i] = static_cast<float>(i) * 0.5f - 3.0f;
    ml::InferRequest req;
    gml::add_input(req, name, {1, 3, 5, 7}, x);
    req.set_top_k(3);
    const auto sent = req.SerializeAsString();
    // Fields Protobuf skips: an unknown varint and an unknown string, before and after.
    auto wire = std::string{"\x48\x07\x52\x02hi", 6} + sent + std::string{"\x48\x09", 2};
    auto v = ml::read_request(wire, {1, 4});
    BOOST_REQUIRE_MESSAGE(v, (v ? "" : grove::describe(v.error())));
    BOOST_REQUIRE_EQUAL(v->inputs.size(), 1u);
    const auto& t = v->inputs[0];
    BOOST_CHECK_EQUAL(t.name, name);
    BOOST_CHECK_EQUAL(t.dtype, ml::FLOAT32);
    BOOST_CHECK((t.shape == std::vector<int64_t>{1, 3, 5, 7}));
    BOOST_CHECK_EQUAL(v->top_k, 3u);
    BOOST_CHECK(t.data.data() >= wire.data() && t.data.data() + t.data.size() <= wire.data() + wire.size());
    BOOST_CHECK_EQUAL(reinterpret_cast<uintptr_t>(t.data.data()) % alignof(float), 0u);
    BOOST_REQUIRE_EQUAL(t.data.size(), x.size() * 4);
    BOOST_CHECK(std::memcmp(t.data.data(), x.data(), t.data.size()) == 0);
    auto d = ml::decode_tensors(*v, {{name, "float32", {1, 3, 5, 7}}}, 1 << 20, true);
    BOOST_REQUIRE_MESSAGE(d, (d ? "" : grove::describe(d.error())));
    BOOST_CHECK(d->inputs[0].data.empty()); // borrowed
    BOOST_CHECK_EQUAL(static_cast<const void*>(d->inputs[0].values().data()),
                      static_cast<const void*>(t.data.data()));
    // Cut short anywhere (a fresh copy: `wire` was rewritten in place): refused where
    // Protobuf refuses it, read as Protobuf reads it where it does not (a cut between
    // fields).
    for (size_t cut = 0; cut < sent.size(); ++cut) {
      auto part = sent.substr(0, cut);
      ml::InferRequest pb;
      bool parsed = pb.ParseFromString(part);
      auto r = ml::read_request(part, {1, 4});
      BOOST_REQUIRE_MESSAGE(static_cast<bool>(r) == parsed, "cut at " << cut);
      if (r) {
        BOOST_CHECK_EQUAL(r->inputs.size(), static_cast<size_t>(pb.inputs_size()));
        BOOST_CHECK_EQUAL(r->top_k, pb.top_k());
      }
    }
  }
  // Unpacked shape elements and a dtype given twice (the last counts), as Protobuf reads.
  const std::string unpacked{"\x0a\x0f\x0a\x01" "a" "\x10\x02\x10\x01\x18\x02\x18\x01\x22\x02\x05\x06", 17};
  auto wire = unpacked; // read_request may move its data in place
  ml::InferRequest pb;
  BOOST_REQUIRE(pb.ParseFromString(wire));
  auto v = ml::read_request(wire, {1, 2});
  BOOST_REQUIRE(v);
  BOOST_REQUIRE_EQUAL(v->inputs.size(), 1u);
  BOOST_CHECK_EQUAL(v->inputs[0].dtype, pb.inputs(0).dtype());
  BOOST_CHECK((v->inputs[0].shape == std::vector<int64_t>{2, 1}));
  BOOST_CHECK_EQUAL(v->inputs[0].data, pb.inputs(0).data());
  // More dimensions or tensors than the limits: refused while reading, saying which.
  wire = unpacked;
  auto rank = ml::read_request(wire, {1, 1});
  BOOST_REQUIRE(!rank);
  BOOST_CHECK_MESSAGE(grove::describe(rank.error()).find("more dimensions") != std::string::npos,
                      grove::describe(rank.error()));
  std::string two = unpacked + unpacked;
  auto count = ml::read_request(two, {1, 2});
  BOOST_REQUIRE(!count);
  BOOST_CHECK_MESSAGE(grove::describe(count.error()).find("more tensors") != std::string::npos,
                      grove::describe(count.error()));
  // An unknown group (field 1, nested) is skipped, as Protobuf skips it; a name that is not
  // UTF-8, field number 0 and an unmatched end-group tag are refused, as Protobuf refuses them.
  std::string group{"\x0b\x0b\x08\x01\x0c\x0c\x18\x05", 8};
  BOOST_REQUIRE(pb.ParseFromString(group));
  auto g = ml::read_request(group, {1, 2});
  BOOST_REQUIRE_MESSAGE(g, (g ? "" : grove::describe(g.error())));
  BOOST_CHECK_EQUAL(g->top_k, 5u);
  for (std::string bad : {std::string{"\x0a\x03\x0a\x01\xff", 5}, std::string{"\x02\x00", 2},
                          std::string{"\x0c", 1}}) {
    BOOST_CHECK(!pb.ParseFromString(bad));
    BOOST_CHECK(!ml::read_request(bad, {1, 2}));
  }
}

BOOST_AUTO_TEST_CASE(the_jpeg_decode_gives_opencvs_pixels) {
  // The plugin decodes a JPEG once, itself (jpeg_check.cpp), where it used to check it and
  // then hand it to cv::imdecode: the pixels must be imdecode's, bit for bit, in colour
  // and gray, for every EXIF orientation, CMYK, sampling and scan layout.
  const auto& files = models().index["preprocessing"]["jpeg_vs_opencv"];
  BOOST_REQUIRE_GE(files.size(), 20u);
  for (const auto& [name, path] : files.items()) {
    auto bytes = slurp(path.get<std::string>());
    cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8U, bytes.data());
    for (bool gray : {false, true}) {
      auto what = name + (gray ? " (gray)" : " (colour)");
      cv::Mat want = cv::imdecode(raw, gray ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
      BOOST_REQUIRE_MESSAGE(!want.empty(), what << ": OpenCV cannot decode it");
      cv::Mat got;
      auto why = ml::decode_jpeg(bytes, gray, got);
      BOOST_REQUIRE_MESSAGE(why.empty(), what << ": " << why);
      BOOST_REQUIRE_MESSAGE(got.size() == want.size() && got.type() == want.type(),
                            what << ": " << got.cols << "x" << got.rows << " of type "
                                 << got.type() << ", OpenCV " << want.cols << "x"
                                 << want.rows << " of type " << want.type());
      BOOST_CHECK_MESSAGE(cv::norm(got, want, cv::NORM_INF) == 0,
                          what << ": pixels differ by up to "
                               << cv::norm(got, want, cv::NORM_INF));
    }
  }
  // The orientation reader on its own: a segment too short, a byte order it does not know.
  BOOST_CHECK_EQUAL(ml::exif_orientation(""), 0);
  BOOST_CHECK_EQUAL(ml::exif_orientation(std::string{"Exif\0\0II\x2a\0", 10}), 0);
  BOOST_CHECK_EQUAL(ml::exif_orientation(std::string{"Exif\0\0IM\x2a\0\x08\0\0\0", 14}), 0);
}

BOOST_AUTO_TEST_CASE(image_headers_give_their_size) {
  // JPEG: SOI, an APP0 segment, then SOF0 with height 480 and width 640.
  std::string jpeg{"\xFF\xD8\xFF\xE0\x00\x04\x00\x00\xFF\xC0\x00\x11\x08\x01\xE0\x02\x80", 17};
  auto j = ml::image_size(jpeg);
  BOOST_REQUIRE(j);
  BOOST_CHECK_EQUAL(j->first, 640u);
  BOOST_CHECK_EQUAL(j->second, 480u);
  // The scan before any frame header, and a segment running past the end.
  // Stray bytes (and a stuffed zero) before a segment are skipped, as libjpeg skips them.
  auto stray = ml::image_size(std::string{"\xFF\xD8\x00\x11\xFF\x00\x55\xFF\xC0\x00\x11\x08"
                                          "\x01\xE0\x02\x80", 16});
  BOOST_REQUIRE(stray);
  BOOST_CHECK_EQUAL(stray->first, 640u);
  BOOST_CHECK(!ml::image_size(std::string{"\xFF\xD8\xFF\xDA\x00\x04", 6}));
  BOOST_CHECK(!ml::image_size(std::string{"\xFF\xD8\xFF\xC0\x00\x11\x08", 7}));
  // BMP, top-down (negative height).
  std::string bmp(26, '\0');
  bmp[0] = 'B';
  bmp[1] = 'M';
  bmp[18] = 100;
  bmp[22] = static_cast<char>(0x9C); // -100
  bmp[23] = bmp[24] = bmp[25] = static_cast<char>(0xFF);
  auto b = ml::image_size(bmp);
  BOOST_REQUIRE(b);
  BOOST_CHECK_EQUAL(b->first, 100u);
  BOOST_CHECK_EQUAL(b->second, 100u);
  auto p = ml::image_size(slurp(models().get("cnn")["image"].get<std::string>()));
  BOOST_REQUIRE(p);
  BOOST_CHECK_EQUAL(p->first, 32u);
  BOOST_CHECK(!ml::image_size("GIF89a"));
}

BOOST_AUTO_TEST_CASE(readme_tables_are_the_generated_ones) {
  BOOST_CHECK(ml::ml_config::map().defect().empty());
  BOOST_CHECK(ml::resource_config::map().defect().empty());
  auto generated = ml::ml_config::map().markdown();
  BOOST_TEST(grove::test::readme_config_table(ML_README) == generated,
             "README.md's table is stale; replace the lines between the config-table markers "
             "with `groved --describe-config ml_inference`:\n"
               << generated);
  auto resource = ml::resource_config::map().markdown();
  BOOST_TEST(slurp(ML_README).find(resource) != std::string::npos,
             "README.md's resource table is stale; it is:\n" << resource);
}
