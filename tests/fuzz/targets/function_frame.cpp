// Function IPC frames (plugins/function_runtime/function.proto) as function_runtime reads
// them from a function instance, which runs user code and so is not trusted: frames
// through the kernel's framing (framing.cpp, bounded like max_frame_bytes) until the
// stream ends or breaks, each through the runtime's check (ipc.cpp:
// check_worker_frame), with the hello state the runtime keeps, and the topic check a
// Publish gets. The instance's side (what the SDK reads) is decoded from the same bytes.

#include "fuzz_support.hpp"
#include "grove/kernel/control.hpp"
#include "grove/topic.hpp"
#include "ipc.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using grove::fn::Frame;
  auto in = grove::fuzz::bytes(data, size);
  const std::string token = "t";
  {
    grove::fuzz::memory_fd fd{in};
    bool said_hello = false;
    for (;;) {
      Frame f;
      if (auto err = grove::framing::read_frame(fd.get(), f, 1u << 20)) {
        (void) grove::describe(err);
        break;
      }
      auto err = grove::fn::check_worker_frame(f, said_hello, token);
      if (err)
        break; // the runtime ends the instance here
      if (!said_hello) {
        grove::fuzz::require(f.body_case() == Frame::kHello && f.hello().token() == token,
                             "a frame other than the hello with its token was accepted first");
        said_hello = true;
        continue;
      }
      grove::fuzz::require(f.body_case() != Frame::kHello && f.body_case() != Frame::kInvoke,
                           "a hello or invoke from a worker was accepted");
      if (f.body_case() == Frame::kPublish)
        (void) grove::validate_topic(f.publish().topic());
      if (f.body_case() == Frame::kInferCall) {
        // The runtime's own checks of an infer call (the InferRequest decoder itself is
        // ml_inference's, fuzzed by ml_request).
        auto name_ok = grove::fn::valid_model_name(f.infer_call().model());
        grove::fuzz::require(!name_ok || f.infer_call().model().find('/') == std::string::npos,
                             "a model name with '/' was taken as one topic level");
      }
    }
  }
  grove::fuzz::memory_fd fd{in};
  Frame f;
  while (!grove::framing::read_frame(fd.get(), f, 1u << 20))
    f.Clear();
  return 0;
}
