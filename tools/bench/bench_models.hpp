#pragma once

// What ml_bench and ml_function_bench share: the models of
// plugins/ml_inference/tests/make_models.py made in a scratch directory, their group
// resources, a model's input, the wait until ml_inference serves them, and the
// latency figures they print.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_stats.hpp"
#include "grove/ml_inference/client.hpp"

namespace grove::bench {

/// The bytes of file `p` ("" when it cannot be read).
inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in{p, std::ios::binary};
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The SHA-256 of file `p` in hex (sha256sum's), "" on failure.
inline std::string sha256_of(const std::filesystem::path& p) {
  auto cmd = "sha256sum " + p.string();
  std::string out(64, '\0');
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr || std::fread(out.data(), 1, 64, f) != 64)
    out.clear();
  if (f != nullptr)
    ::pclose(f);
  return out;
}

/// Runs make_models.py (`script`) into `dir`: "" when it made them, else what failed.
inline std::string make_models(const std::string& script, const std::filesystem::path& dir) {
  auto cmd = "/usr/bin/python3 " + script + " " + dir.string() + " >/dev/null";
  if (std::system(cmd.c_str()) != 0)
    return cmd + " failed (python3-onnx, python3-numpy)";
  return {};
}

/// A group's `resources:` entry for the ONNX model `file` with one input `x` of `shape`
/// (its first dimension, the batch, open: -1), `extra` (indented YAML lines) added.
inline std::string model_resource(const std::string& id, const std::filesystem::path& file,
                                  const std::vector<int64_t>& shape,
                                  const std::string& extra = "") {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i)
    dims += (i ? ", " : "") + (i == 0 ? std::string{"-1"} : std::to_string(shape[i]));
  return "  - id: " + id + "\n    config:\n      localMachineLearningModelResourceData:\n"
         "        path: " + file.string() + "\n        sha256: " + sha256_of(file) + "\n"
         "        manifest: {inputs: [{name: x, shape: [" + dims + "]}]}\n" + extra;
}

/// The input both sides of a comparison run: `shape`'s elements, the same values each run.
inline std::vector<float> model_input(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (auto d : shape)
    n *= static_cast<size_t>(d);
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i)
    x[i] = static_cast<float>((i * 7919) % 255) / 255.0f;
  return x;
}

/// Waits (10 ms a try, `tries` times) until ml_inference serves `n` models, asked through
/// `send` (an Envelope to caf::expected<Envelope>); false when it did not.
template <class Send>
bool wait_models_serving(Send send, size_t n, int tries = 6000) {
  namespace gml = grove::ml_inference;
  for (int i = 0; i < tries; ++i) {
    auto r = gml::models_rpc{std::string{gml::models_topic}}.call_with(send,
                                                                        grove::ml::ModelsRequest{});
    size_t serving = 0;
    if (r)
      for (const auto& m : r->models())
        serving += m.state() == grove::ml::ModelInfo::SERVING ? 1 : 0;
    if (serving >= n)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
  return false;
}

/// The p50 and p99 of latencies `us`, for the JSON printed.
inline nlohmann::ordered_json latency(const std::vector<double>& us) {
  return {{"p50_us", round2(pct(us, 0.5))}, {"p99_us", round2(pct(us, 0.99))}};
}

} // namespace grove::bench
