#include "grove/errors.hpp"

#include <caf/atom.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>
#include <caf/to_string.hpp>

namespace grove {

const char* to_string(errc x) noexcept {
  switch (x) {
    case errc::none: return "none";
    case errc::invalid_config: return "invalid_config";
    case errc::invalid_topic: return "invalid_topic";
    case errc::load_failed: return "load_failed";
    case errc::abi_mismatch: return "abi_mismatch";
    case errc::duplicate_plugin: return "duplicate_plugin";
    case errc::unknown_plugin: return "unknown_plugin";
    case errc::init_failed: return "init_failed";
    case errc::plugin_failed: return "plugin_failed";
    case errc::plugin_broken: return "plugin_broken";
    case errc::no_route: return "no_route";
    case errc::timeout: return "timeout";
    case errc::queue_full: return "queue_full";
    case errc::too_large: return "too_large";
    case errc::malformed: return "malformed";
    case errc::unsupported: return "unsupported";
    case errc::system_error: return "system_error";
    case errc::invalid_state: return "invalid_state";
    case errc::not_authorized: return "not_authorized";
    case errc::already_served: return "already_served";
    case errc::conflict: return "conflict";
  }
  return "unknown";
}

caf::error make_error(errc code, std::string msg) {
  return caf::error{static_cast<uint8_t>(code), caf::atom("grove"),
                    caf::make_message(std::move(msg))};
}

std::string message_of(const caf::error& err) {
  auto& context = err.context();
  if (context.size() == 1 && context.match_element<std::string>(0))
    return context.get_as<std::string>(0);
  if (!context.empty())
    return caf::to_string(context);
  return {};
}

std::string describe(const caf::error& err) {
  if (!err)
    return {};
  auto ctx = message_of(err);
  std::string code;
  if (err.category() == caf::atom("grove"))
    code = to_string(static_cast<errc>(err.code()));
  else if (err.category() == caf::atom("system"))
    code = caf::to_string(static_cast<caf::sec>(err.code()));
  else
    code = caf::to_string(err.category()) + ":" + std::to_string(err.code());
  return ctx.empty() ? code : code + ": " + ctx;
}

} // namespace grove
