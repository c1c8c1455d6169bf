// ml_function_bench: inference from a user function (the C++ function SDK's infer() in a
// pinned native instance, invoked through the bus: kernel -> function_runtime -> the
// instance -> function_runtime -> ml_inference -> back the same way), against OpenCV DNN
// called directly in the same process with the same model and input, and against the
// bus's own typed request to ml_inference (the part of the path without the function),
// for the MLP and the small CNN of plugins/ml_inference/tests/make_models.py at batch 1.
// Alternating blocks so drift hits all three alike. Prints one JSON object; never fails
// on the figures.
//
// Usage: ml_function_bench [REQUESTS]

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/dnn.hpp>

#include "bench_kernel.hpp"
#include "bench_models.hpp"
#include "bench_stats.hpp"
#include "function_bench_support.hpp"
#include "grove/ml_inference/client.hpp"

namespace {

namespace fs = std::filesystem;
namespace gml = grove::ml_inference;
using json = nlohmann::ordered_json;
using grove::bench::clock_type;
using grove::bench::latency;
using grove::bench::pct;
using grove::bench::round2;
using grove::bench::us_since;

struct model_case {
  std::string id;
  std::vector<int64_t> shape;
};

int fail(const std::string& what) {
  std::cout << json{{"bench", "ml_function_bench"}, {"error", what}}.dump() << std::endl;
  return 1;
}

} // namespace

int main(int argc, char** argv) {
  int requests = argc > 1 ? std::atoi(argv[1]) : 1000;
  if (requests < 10)
    requests = 10;
  cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
  auto dir = fs::temp_directory_path() / ("ml_function_bench." + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto models = dir / "models";
  if (auto err = grove::bench::make_models(ML_MAKE_MODELS, models); !err.empty())
    return fail(err);
  auto plugins = grove::bench::function_plugin_dir(dir, FN_PLUGIN);
  fs::copy_file(ML_PLUGIN, plugins / "libml_inference.so");
  std::vector<model_case> cases{{"mlp", {1, 32}}, {"cnn", {1, 3, 32, 32}}};
  {
    std::ofstream g{dir / "group.yaml"};
    g << "name: bench\nresources:\n";
    for (auto& c : cases)
      g << grove::bench::model_resource(c.id, models / (c.id + ".onnx"), c.shape,
                                        "        maxBatchSize: 1\n");
    g << "functions:\n";
    for (auto& c : cases) {
      std::string dims;
      for (size_t i = 0; i < c.shape.size(); ++i)
        dims += (i ? "," : "") + std::to_string(c.shape[i]);
      g << "  - name: f_" << c.id << "\n    config: {handler: " << ML_BENCH_FUNCTION
        << ", inputPayloadEncodingType: binary, runAs: {uid: " << ::getuid()
        << ", gid: " << ::getgid() << "}, linuxProcessParams: {isolationMode: NoContainer}, "
        << "environmentVariables: {ML_MODEL: " << c.id << ", ML_SHAPE: \"" << dims << "\"}, "
        << "resourceAccessPolicies: [{resourceId: " << c.id << "}]}\n";
    }
  }
  auto profile = grove::bench::bench_profile(dir, plugins);
  profile.group_file = dir / "group.yaml";
  json out;
  out["bench"] = "ml_function_bench";
  out["requests"] = requests;
  out["backend"] = std::string{"opencv-dnn "} + CV_VERSION;
  {
    grove::kernel k{profile, grove::kernel_options{false, false}};
    if (auto err = k.start())
      return fail(grove::describe(err));
    if (auto err = grove::bench::load_function_runtime(k, "{allow_run_as_root: true}"))
      return fail(grove::describe(err));
    grove::plugin_spec ml;
    ml.name = "ml_inference";
    ml.config = grove::make_yaml(YAML::Load("{threads: 1}"));
    if (auto err = k.host().load(ml))
      return fail(grove::describe(err));
    auto timeout = std::chrono::seconds{30};
    auto send = [&](grove::Envelope e) { return k.request(std::move(e), timeout); };
    if (!grove::bench::wait_for_functions(send, static_cast<int>(cases.size())))
      return fail("the runtime did not define the functions");
    if (!grove::bench::wait_models_serving(send, cases.size(), 3001))
      return fail("the models did not load");
    json batch1 = json::object();
    for (auto& c : cases) {
      auto x = grove::bench::model_input(c.shape);
      std::string bytes(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float));
      auto onnx = grove::bench::read_file(models / (c.id + ".onnx"));
      auto net = cv::dnn::readNetFromONNX(onnx.data(), onnx.size());
      std::vector<int> dims(c.shape.begin(), c.shape.end());
      grove::ml::InferRequest req;
      gml::add_input(req, "x", c.shape, x);
      auto direct_once = [&] {
        cv::Mat blob(static_cast<int>(dims.size()), dims.data(), CV_32F, x.data());
        net.setInput(blob, "x");
        return net.forward();
      };
      auto bus_once = [&] { return gml::infer_rpc{gml::infer_topic(c.id)}.call_with(send, req); };
      auto fn_once = [&] {
        return k.request(grove::function_runtime::make_invoke("f_" + c.id, bytes), timeout);
      };
      // The function's answer is the model's output: checked against OpenCV's once.
      cv::Mat want = direct_once().clone();
      auto first = fn_once();
      if (!first)
        return fail("f_" + c.id + ": " + grove::describe(first.error()));
      if (first->payload().size() != want.total() * sizeof(float))
        return fail("f_" + c.id + " answered: " + first->payload().substr(0, 300));
      float worst = 0;
      for (size_t i = 0; i < want.total(); ++i) {
        float v;
        std::memcpy(&v, first->payload().data() + i * sizeof(float), sizeof(float));
        worst = std::max(worst, std::fabs(v - want.ptr<float>()[i]));
      }
      if (!(worst <= 1e-4f))
        return fail("f_" + c.id + ": output differs from OpenCV's by " + std::to_string(worst));
      for (int i = 0; i < 50; ++i) { // warm-up
        direct_once();
        (void) bus_once();
        (void) fn_once();
      }
      std::vector<double> direct, bus, fn;
      uint64_t failed = 0;
      for (int block = 0; block < 10; ++block) {
        for (int i = 0; i < requests / 10; ++i) {
          auto t0 = clock_type::now();
          cv::Mat y = direct_once();
          direct.push_back(us_since(t0));
        }
        for (int i = 0; i < requests / 10; ++i) {
          auto t0 = clock_type::now();
          auto r = bus_once();
          bus.push_back(us_since(t0));
          failed += r ? 0 : 1;
        }
        for (int i = 0; i < requests / 10; ++i) {
          auto t0 = clock_type::now();
          auto r = fn_once();
          fn.push_back(us_since(t0));
          failed += r && r->payload().size() == want.total() * sizeof(float) ? 0 : 1;
        }
      }
      double d50 = pct(direct, 0.5), b50 = pct(bus, 0.5), f50 = pct(fn, 0.5);
      batch1[c.id] = {{"direct", latency(direct)},
                      {"bus", latency(bus)},
                      {"function", latency(fn)},
                      {"function_over_direct_p50", round2(f50 / d50)},
                      {"function_overhead_us_p50", round2(f50 - d50)},
                      {"bus_over_direct_p50", round2(b50 / d50)},
                      {"function_over_bus_p50", round2(f50 / b50)},
                      {"max_abs_diff_to_direct", worst},
                      {"failed", failed}};
    }
    out["batch1"] = batch1;
    k.stop();
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  std::cout << out.dump() << std::endl;
  return 0;
}
