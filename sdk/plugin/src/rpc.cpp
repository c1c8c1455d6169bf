#include "grove/rpc.hpp"

#include <cstdint>
#include <string>

#include <caf/atom.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>
#include <caf/to_string.hpp>

namespace grove {

std::string protobuf_content_type(std::string_view type_name) {
  return "application/x-protobuf; messageType=" + std::string{type_name};
}

void set_error(Envelope& msg, const caf::error& err) {
  if (!err)
    return;
  // The message text alone: code and category travel as fields.
  msg.set_error(message_of(err));
  msg.set_error_code(err.code());
  msg.set_error_category(caf::to_string(err.category()));
}

caf::error error_of(const Envelope& msg) {
  if (msg.error_code() == 0) {
    // A reply from a peer that only fills the text still fails.
    if (msg.error().empty())
      return {};
    return make_error(errc::plugin_failed, msg.error());
  }
  // CAF's codes are 1-255 (0 is "no error"): a wider one from a peer must not wrap
  // around to a success.
  if (msg.error_code() > UINT8_MAX)
    return make_error(errc::plugin_failed,
                      msg.error().empty()
                        ? "error code " + std::to_string(msg.error_code())
                        : msg.error());
  auto category = msg.error_category().empty() ? caf::atom("grove")
                                               : caf::atom_from_string(msg.error_category());
  auto code = static_cast<uint8_t>(msg.error_code());
  if (msg.error().empty())
    return caf::error{code, category};
  return caf::error{code, category, caf::make_message(msg.error())};
}

caf::expected<Envelope> checked_reply(caf::expected<Envelope> reply) {
  if (!reply)
    return reply;
  if (auto err = error_of(*reply))
    return err;
  return reply;
}

} // namespace grove
