#include "grove/errors.hpp"

#include <caf/atom.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>
#include <caf/to_string.hpp>

namespace grove {

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
