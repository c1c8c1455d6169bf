// Control-socket frames (kernel/src/framing.cpp) as both ends decode them: groved's
// control server reads control::Request frames from any local client
// (control_server.cpp: serve, then the checks handle() makes before the kernel sees a
// request), grovectl reads control::Response frames, and a failed call's reply becomes
// an error (rpc.cpp: error_of). Frames are read one after the other until the stream
// ends or breaks, as a connection does.

#include "fuzz_support.hpp"
#include "grove/kernel/control.hpp"
#include "grove/rpc.hpp"
#include "grove/topic.hpp"

namespace {

// A reply that says it failed (code or text) must come out as an error.
void check_reply(const grove::Envelope& msg) {
  auto err = grove::error_of(msg);
  if (msg.error_code() != 0 || !msg.error().empty())
    grove::fuzz::require(static_cast<bool>(err), "a failed reply reads as a success");
}

void check_request(const grove::control::Request& req) {
  using grove::control::Request;
  switch (req.kind_case()) {
    case Request::kPublish:
      (void) grove::validate_topic(req.publish().topic());
      break;
    case Request::kSubscribe:
      (void) grove::validate_filter(req.subscribe().filter());
      break;
    case Request::kCall:
      (void) grove::validate_topic(req.call().msg().topic());
      check_reply(req.call().msg());
      break;
    default:
      break;
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto in = grove::fuzz::bytes(data, size);
  {
    grove::fuzz::memory_fd fd{in};
    for (;;) {
      grove::control::Request req;
      if (auto err = grove::framing::read_frame(fd.get(), req)) {
        // What the server logs and answers for a bad frame.
        (void) grove::describe(err);
        break;
      }
      check_request(req);
    }
  }
  grove::fuzz::memory_fd fd{in};
  for (;;) {
    grove::control::Response res;
    if (grove::framing::read_frame(fd.get(), res))
      break;
    if (res.has_reply())
      check_reply(res.reply());
  }
  return 0;
}
