// The caf::error API of Grove's frames (grove/kernel/framing.hpp): each call is the CAF-free
// core's (framing.cpp, grove/kernel/framing_core.hpp) with its status made a Grove error.
// Apart from framing.cpp so a binary that uses only the core (a function) links no CAF.

#include "grove/kernel/framing.hpp"

#include <utility>

#include "grove/errors.hpp"

namespace grove::framing {

namespace {

caf::error to_error(core::status s) {
  if (!s)
    return {};
  return make_error(s.code, std::move(s.message));
}

} // namespace

caf::error append_frame(std::string& out, const google::protobuf::MessageLite& msg,
                        uint32_t max_size) {
  return to_error(core::append_frame(out, msg, max_size));
}

caf::error write_all(int fd, std::string_view bytes) {
  return to_error(core::write_all(fd, bytes));
}

caf::error write_frame(int fd, const google::protobuf::MessageLite& msg) {
  return to_error(core::write_frame(fd, msg));
}

caf::error read_frame(int fd, google::protobuf::MessageLite& msg, uint32_t max_size) {
  return to_error(core::read_frame(fd, msg, max_size));
}

caf::error frame_stream::fill(int fd) {
  return to_error(core_.fill(fd));
}

caf::expected<std::optional<std::string_view>> frame_stream::next() {
  std::optional<std::string_view> body;
  if (auto s = core_.next(body))
    return to_error(std::move(s));
  return body;
}

caf::expected<bool> frame_stream::next(google::protobuf::MessageLite& msg) {
  bool got = false;
  if (auto s = core_.next(msg, got))
    return to_error(std::move(s));
  return got;
}

caf::error frame_stream::receive(int fd, google::protobuf::MessageLite& msg) {
  return to_error(core_.receive(fd, msg));
}

} // namespace grove::framing
