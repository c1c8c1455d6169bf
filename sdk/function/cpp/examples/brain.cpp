// The example group's function (configs/groups/home.yaml): the switch says "on" or "off" on
// home/switch/<button>, and brain tells the lamp through the group's table (home/lamp/set).
// Anything else is answered with an error, which the runtime counts and logs.

#include "grove/function/function.hpp"

#include <stdexcept>

namespace gf = grove::function;

std::string brain(const std::string& payload, const gf::context& ctx) {
  // The group's function config has inputPayloadEncodingType json: the payload is JSON text.
  std::string state;
  if (payload.find("\"on\"") != std::string::npos)
    state = "on";
  else if (payload.find("\"off\"") != std::string::npos)
    state = "off";
  else
    throw std::invalid_argument{"expected \"on\" or \"off\" from " + ctx.source};
  if (auto routed = gf::publish("home/lamp/set", "{\"state\":\"" + state + "\"}"); !routed)
    gf::log(gf::level::warn, "publish to the lamp failed: " + routed.error);
  return "{\"lamp\":\"" + state + "\"}";
}

GROVE_FUNCTION(brain)
