// The C++ function of function_ml_e2e_test: runs the function SDK's infer verb on what
// its JSON payload names and answers the outputs as JSON (or the error's code and
// message), so the test compares them with grovectl ml infer and numpy.
//
// Payload: {"model": "m", "inputs": [{"name", "dtype", "shape", "data": [numbers]}],
//           "image_path": "file.png", "top_k": N}; or "inputs_file": a .json file whose
// "inputs" are those (the file grovectl ml infer --input reads).

#include <fstream>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

#include "grove/function/function.hpp"

namespace gf = grove::function;
using json = nlohmann::json;

namespace {

std::string handle(const std::string& payload, const gf::context&) {
  auto in = json::parse(payload);
  auto model = in.at("model").get<std::string>();
  auto top_k = in.value("top_k", 0u);
  gf::outcome<gf::inference> r;
  if (in.contains("image_path")) {
    std::ifstream f{in["image_path"].get<std::string>(), std::ios::binary};
    std::string image{std::istreambuf_iterator<char>{f}, {}};
    r = gf::infer_image(model, image, top_k);
  } else {
    std::vector<gf::tensor> inputs;
    auto list = in.contains("inputs_file")
                  ? json::parse(std::ifstream{in["inputs_file"].get<std::string>()}).at("inputs")
                  : in.at("inputs");
    for (const auto& t : list) {
      auto shape = t.at("shape").get<std::vector<int64_t>>();
      if (t.value("dtype", "float32") == "uint8") {
        gf::tensor x;
        x.name = t.at("name").get<std::string>();
        x.type = gf::dtype::uint8;
        x.shape = shape;
        for (int v : t.at("data"))
          x.data += static_cast<char>(v);
        inputs.push_back(std::move(x));
      } else {
        inputs.push_back(gf::tensor::of(t.at("name").get<std::string>(), shape,
                                        t.at("data").get<std::vector<float>>()));
      }
    }
    r = gf::infer(model, inputs, top_k);
  }
  if (!r)
    return json{{"error", {{"code", r.code}, {"message", r.error}}}}.dump();
  json out{{"version", r->version}, {"batch_size", r->batch_size},
           {"outputs", json::array()}, {"top", json::array()}};
  for (const auto& t : r->outputs)
    out["outputs"].push_back({{"name", t.name}, {"shape", t.shape}, {"data", t.floats()}});
  for (const auto& l : r->top)
    out["top"].push_back({{"index", l.index}, {"label", l.name}, {"score", l.score}});
  return out.dump();
}

} // namespace

GROVE_FUNCTION(handle)
