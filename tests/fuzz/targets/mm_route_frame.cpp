// The route socket's frames (plugins/message_manager/broker/route_frame.hpp,
// decode_frames): the device messages Grove's broker plugin hands to message_manager.
// Their parts (topic, payload, properties) come from devices. A decoded stream must be
// one that re-encodes to the very bytes it came from, and an incomplete tail or a refusal
// never reads past the input.

#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "route_frame.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using grove::fuzz::require;
  namespace rf = grove::broker;
  auto input = grove::fuzz::bytes(data, size);
  std::vector<rf::route_message> out;
  auto r = rf::decode_frames(input, out);
  require(r.consumed <= input.size(), "consumed past the input");
  require(r.error.empty() || r.consumed < input.size(), "an error with nothing left");
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
  require(again == input.substr(0, r.consumed), "decode and encode disagree");
  return 0;
}
