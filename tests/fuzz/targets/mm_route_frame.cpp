// The route socket's frames (plugins/message_manager/broker/route_frame.hpp): the device
// messages Grove's broker plugin hands to message_manager. Their parts (topic, payload,
// properties) come from devices. The input is read as route_reader reads its socket: split
// by grove::framing::frame_stream (fed in pieces, as reads come), each body decoded by
// decode_frame. What was decoded must re-encode to the very bytes it came from, and a
// refusal or an incomplete tail never reads past the input.

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "grove/kernel/framing.hpp"
#include "route_frame.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using grove::fuzz::require;
  namespace rf = grove::broker;
  auto input = grove::fuzz::bytes(data, size);
  grove::framing::frame_stream in{static_cast<uint32_t>(rf::kMaxFrameBytes)};
  std::vector<rf::route_message> out;
  size_t fed = 0;
  size_t consumed = 0; // bytes of whole frames decoded
  size_t first_frame = 0;
  bool refused = false;
  // Pieces of varying size, so that frames and length fields are split across reads.
  const size_t piece = 1 + size % 61;
  while (fed < input.size() && !refused) {
    auto space = in.space();
    auto n = std::min({piece, space.size(), input.size() - fed});
    std::memcpy(space.data(), input.data() + fed, n);
    in.commit(n);
    fed += n;
    for (;;) {
      auto body = in.next();
      if (!body) {
        refused = true;
        break;
      }
      if (!*body)
        break;
      require((*body)->size() <= rf::kMaxFrameBytes, "a frame over the bound");
      rf::route_message m;
      if (!rf::decode_frame(**body, m).empty()) {
        refused = true;
        break;
      }
      consumed += 4 + (*body)->size();
      if (out.empty())
        first_frame = 4 + (*body)->size();
      out.push_back(std::move(m));
    }
  }
  require(consumed <= input.size(), "consumed past the input");
  require(!refused || consumed < input.size(), "a refusal with nothing left");
  std::string again;
  for (const auto& m : out) {
    require(!m.source.empty() && m.source.size() <= rf::kMaxSourceBytes, "a bad source");
    require(!m.topic.empty() && m.qos <= 2, "a bad topic or qos");
    std::vector<std::pair<std::string_view, std::string_view>> props;
    for (const auto& [k, v] : m.user_properties)
      props.emplace_back(k, v);
    auto n = rf::frame_size(m.source, m.topic, m.payload.size(), m.content_type, props);
    require(n > 0, "a decoded frame that cannot be encoded");
    rf::encode_frame(again, n, m.source, m.topic, m.payload.data(), m.payload.size(), m.qos,
                     m.retain, m.content_type, props);
  }
  require(again == input.substr(0, consumed), "decode and encode disagree");
  // The plugin's own bookkeeping reads the length as frame_stream does.
  require(out.empty() || rf::frame_length_at(again) == first_frame,
          "frame_length_at disagrees with frame_stream");
  return 0;
}
