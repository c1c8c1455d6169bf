// The deployment plugin's event-stream decoder (plugins/deployment/src/eventstream.cpp),
// the framing of Greengrass IPC: the input is read as a stream of frames, as a
// connection reads them. Each frame decoded writes back byte for byte (encode is the
// inverse of decode), no frame over the bound is accepted, and a refusal says why.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "eventstream.hpp"

using namespace grove::deployment::eventstream;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in{reinterpret_cast<const char*>(data), size};
  constexpr size_t bound = 4096;
  while (!in.empty()) {
    message m;
    size_t used = 0;
    std::string why;
    auto st = decode(in, bound, m, used, why);
    if (st == decode_status::need_more)
      return 0;
    if (st == decode_status::invalid) {
      if (why.empty())
        std::abort();
      return 0;
    }
    if (used < min_frame || used > bound || used > in.size())
      std::abort();
    if (encode(m) != in.substr(0, used))
      std::abort(); // decode and encode disagree
    (void) m.string_of(":content-type");
    (void) m.int32_of(":stream-id");
    in.remove_prefix(used);
  }
  return 0;
}
