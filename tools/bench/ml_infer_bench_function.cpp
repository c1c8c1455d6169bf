// The function ml_function_bench invokes: its binary payload is the float32 bytes of one
// input tensor `x`; it runs the C++ function SDK's infer() on model $ML_MODEL with shape
// $ML_SHAPE ("1,3,32,32") and answers the first output's bytes (or "error: ..." when the
// verb fails, which the bench counts).

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "grove/function/function.hpp"

namespace gf = grove::function;

namespace {

std::vector<int64_t> shape_of(const char* text) {
  std::vector<int64_t> out;
  std::stringstream in{text != nullptr ? text : ""};
  std::string part;
  while (std::getline(in, part, ','))
    out.push_back(std::stoll(part));
  return out;
}

std::string handle(const std::string& payload, const gf::context&) {
  static const std::string model = std::getenv("ML_MODEL") ? std::getenv("ML_MODEL") : "";
  static const auto shape = shape_of(std::getenv("ML_SHAPE"));
  gf::tensor x;
  x.name = "x";
  x.shape = shape;
  x.data = payload;
  auto r = gf::infer(model, {x});
  if (!r)
    return "error: " + r.code + ": " + r.error;
  return r->outputs.empty() ? std::string{} : r->outputs.front().data;
}

} // namespace

GROVE_FUNCTION(handle)
