// Function IPC frames (plugins/function_runtime/function.proto) as function_runtime reads
// them from a function instance, which runs user code and so is not trusted: the bytes
// arrive in reads of 1 to 97 bytes (the input's last byte picks) and are split by the kernel's
// frame_stream (grove/kernel/framing.hpp, bounded like max_frame_bytes) until the stream
// ends or breaks, each frame through the runtime's check (check_worker_frame), with the
// hello state the runtime keeps, the topic check a Publish gets, the name checks of a
// Call and a ShadowCall and the escaping of text
// that is not UTF-8 (make_text_valid: valid text after it, errors cut to max_error_text,
// valid text within it unchanged). The same bytes are read three times more: by frame_stream::fill from a descriptor (the
// runtime's reader thread), by the CAF-free core's receive (the C++ SDK's worker loop)
// and by read_frame (one frame per call, the control socket's reader): all must see the
// same frames and the same end.

#include <algorithm>
#include <cstring>
#include <vector>

#include "fuzz_support.hpp"
#include "grove/kernel/framing.hpp"
#include "grove/topic.hpp"
#include "grove/utf8.hpp"
#include "ipc.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using grove::fn::Frame;
  auto in = grove::fuzz::bytes(data, size);
  const std::string token = "t";
  constexpr uint32_t max = 1u << 20;
  // The runtime's reader (function_runtime.cpp, read_loop): reads into frame_stream.
  std::vector<std::string> bodies;
  bool too_large = false;
  size_t partial = 0;
  {
    grove::framing::frame_stream stream{max};
    size_t step = in.empty() ? 1 : 1 + static_cast<uint8_t>(in.back()) % 97;
    for (size_t at = 0;;) {
      auto space = stream.space();
      // Memory follows the bytes held: a large frame gone, its buffer goes too.
      grove::fuzz::require(stream.capacity()
                             <= 4 * (stream.partial() + grove::framing::frame_stream::chunk),
                           "frame_stream kept the memory of a frame it handed out");
      auto n = std::min({space.size(), step, in.size() - at});
      std::memcpy(space.data(), in.data() + at, n);
      at += n;
      stream.commit(n);
      bool broke = false;
      for (;;) {
        auto body = stream.next();
        if (!body) {
          too_large = broke = true;
          break;
        }
        if (!*body)
          break;
        bodies.emplace_back(**body);
      }
      if (broke || n == 0) {
        partial = stream.partial();
        break;
      }
    }
  }
  bool said_hello = false;
  for (const auto& body : bodies) {
    Frame f;
    if (!f.ParseFromArray(body.data(), static_cast<int>(body.size())))
      break; // the runtime ends the instance here
    auto err = grove::fn::check_worker_frame(f, said_hello, token);
    if (err)
      break;
    {
      auto text = [](const Frame& g) {
        return g.hello().error() + g.result().error() + g.log().text();
      };
      auto before = text(f);
      grove::fn::make_text_valid(f);
      auto after = text(f);
      grove::fuzz::require(grove::valid_utf8(after), "escaped text is not UTF-8");
      auto error_size = f.hello().error().size() + f.result().error().size();
      grove::fuzz::require(error_size <= grove::fn::max_error_text, "an error was not cut");
      grove::fuzz::require(!grove::valid_utf8(before) || after == before
                               || before.size() > grove::fn::max_error_text,
                           "valid text was changed");
    }
    if (!said_hello) {
      grove::fuzz::require(f.body_case() == Frame::kHello && f.hello().token() == token,
                           "a frame other than the hello with its token was accepted first");
      said_hello = true;
      continue;
    }
    grove::fuzz::require(f.body_case() != Frame::kHello && f.body_case() != Frame::kInvoke
                           && f.body_case() != Frame::kRecall,
                         "a hello, invoke or recall from a worker was accepted");
    if (f.body_case() == Frame::kPublish)
      (void) grove::validate_topic(f.publish().topic());
    if (f.body_case() == Frame::kCall) {
      // A bad name is the call's own error (answered); a good one is one topic level.
      const auto& name = f.call().function();
      grove::fuzz::require(!grove::fn::valid_function_name(name)
                             || (!name.empty() && name.find_first_of("/+#") == std::string::npos),
                           "a function name that is not one topic level was taken");
    }
    if (f.body_case() == Frame::kShadowCall)
      (void) grove::fn::valid_shadow_name(f.shadow_call().thing(), 128);
    if (f.body_case() == Frame::kInferCall) {
      // The runtime's own checks of an infer call (the InferRequest decoder itself is
      // ml_inference's, fuzzed by ml_request).
      auto name_ok = grove::fn::valid_model_name(f.infer_call().model());
      grove::fuzz::require(!name_ok || f.infer_call().model().find('/') == std::string::npos,
                           "a model name with '/' was taken as one topic level");
    }
  }
  // frame_stream::fill from a descriptor: same frames, same end.
  {
    grove::fuzz::memory_fd fd{in};
    grove::framing::frame_stream stream{max};
    size_t i = 0;
    for (;;) {
      auto body = stream.next();
      if (!body) {
        grove::fuzz::require(too_large && bodies.size() == i,
                             "fill saw a frame over the limit the stepped reads did not");
        break;
      }
      if (*body) {
        grove::fuzz::require(i < bodies.size() && bodies[i] == **body,
                             "fill and the stepped reads split the bytes differently");
        ++i;
        continue;
      }
      if (auto err = stream.fill(fd.get())) {
        if (err == grove::errc::malformed)
          grove::fuzz::require(!too_large && partial > 0 && bodies.size() == i,
                               "fill missed a truncated frame");
        else
          grove::fuzz::require(!too_large && partial == 0 && bodies.size() == i
                                 && grove::message_of(err) == "connection closed",
                               "fill and the stepped reads disagree at the end");
        break;
      }
    }
  }
  // The C++ function SDK's loop (core::frame_stream::receive, no CAF): the same frames
  // parsed, the same end (a frame whose bytes do not parse ends it as malformed).
  {
    grove::fuzz::memory_fd fd{in};
    grove::framing::core::frame_stream stream{max};
    for (size_t i = 0;; ++i) {
      Frame f;
      auto s = stream.receive(fd.get(), f);
      Frame g;
      bool parses = i < bodies.size()
                    && g.ParseFromArray(bodies[i].data(), static_cast<int>(bodies[i].size()));
      if (!s) {
        grove::fuzz::require(parses && g.SerializeAsString() == f.SerializeAsString(),
                             "receive and the stepped reads split the bytes differently");
        continue;
      }
      if (s.code == grove::errc::too_large)
        grove::fuzz::require(too_large && bodies.size() == i,
                             "receive saw a frame over the limit the stepped reads did not");
      else if (s.code == grove::errc::malformed)
        grove::fuzz::require((i < bodies.size() && !parses)
                               || (!too_large && partial > 0 && bodies.size() == i),
                             "receive called a frame malformed that parses, or missed a "
                             "truncated one");
      else
        grove::fuzz::require(!too_large && partial == 0 && bodies.size() == i
                               && s.message == "connection closed",
                             "receive and the stepped reads disagree at the end");
      break;
    }
  }
  // read_frame: one frame per call. Same frames, same end.
  grove::fuzz::memory_fd fd{in};
  size_t i = 0;
  for (;; ++i) {
    Frame f;
    auto err = grove::framing::read_frame(fd.get(), f, max);
    if (err) {
      if (err == grove::errc::too_large)
        grove::fuzz::require(too_large && bodies.size() == i,
                             "frame_stream missed a frame over the limit");
      else if (grove::message_of(err) == "connection closed")
        grove::fuzz::require(!too_large && partial == 0 && bodies.size() == i,
                             "frame_stream and read_frame disagree at the end");
      else if (grove::message_of(err).starts_with("truncated"))
        grove::fuzz::require(!too_large && partial > 0 && bodies.size() == i,
                             "frame_stream missed a truncated frame");
      break;
    }
    grove::fuzz::require(i < bodies.size(), "read_frame saw a frame frame_stream did not");
    Frame g;
    grove::fuzz::require(g.ParseFromArray(bodies[i].data(), static_cast<int>(bodies[i].size()))
                           && g.SerializeAsString() == f.SerializeAsString(),
                         "frame_stream and read_frame split the bytes differently");
  }
  return 0;
}
