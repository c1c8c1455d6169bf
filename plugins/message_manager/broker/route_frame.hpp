#pragma once
// The frames of the route socket: device messages the broker plugin hands to
// message_manager (README.md, "Route socket"). Header-only and pure, like acl.hpp: the
// plugin encodes, message_manager decodes (fuzzed by tests/fuzz/targets/mm_route_frame.cpp).
//
// A frame, integers big-endian as in all of Grove's frames (grove/kernel/framing.hpp): the
// reader splits the stream with grove::framing::frame_stream and decodes each body here.
//
//   u32 length         bytes after this field (the body), at most kMaxFrameBytes
//   u8  version        kFrameVersion
//   u8  qos            0..2
//   u8  flags          bit 0: retain; the others 0
//   u8  reserved       0
//   u16 source_len     the broker's stamp (the publishing thing), 1..kMaxSourceBytes
//   u16 topic_len      1..65535
//   u16 content_type_len
//   u16 property_count MQTT 5 user properties (grove-source is never among them)
//   u32 payload_len
//   source, topic, content_type bytes
//   property_count x (u16 name_len, u16 value_len, name, value)
//   payload
//
// The length must equal the sum of the parts exactly; anything else is malformed.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace grove::broker {

/// 2: integers big-endian (1 had them in host order). message_manager writes it into the
/// broker's configuration (plugin_opt_route_frame_version), which the plugin checks: a hot
/// reload onto a build of another version replaces the running broker instead of adopting it.
inline constexpr uint8_t kFrameVersion = 2;
/// Mosquitto's largest packet (256 MiB) plus the header: no frame is bigger.
inline constexpr std::size_t kMaxFrameBytes = (256u << 20) + 4096;
inline constexpr std::size_t kFrameHeaderBytes = 4 + 4 + 2 * 4 + 4;  // with the length
inline constexpr std::size_t kMaxSourceBytes = 128;  // the longest thing name a group allows

/// One device message as it crosses the socket.
struct route_message {
  std::string source;
  std::string topic;
  std::string payload;
  uint8_t qos = 0;
  bool retain = false;
  std::string content_type;
  std::vector<std::pair<std::string, std::string>> user_properties;  // in the sent order
};

namespace detail {

// Big-endian, byte by byte: no alignment, no byte-order headers.
template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  for (std::size_t i = 0; i < sizeof(T); ++i)
    b[i] = static_cast<char>(static_cast<uint8_t>(v >> (8 * (sizeof(T) - 1 - i))));
  out.append(b, sizeof(T));
}

template <class T>
T get(const char* p) {
  T v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i)
    v = static_cast<T>((v << 8) | static_cast<uint8_t>(p[i]));
  return v;
}

}  // namespace detail

/// The encoded size of a frame, or 0 when it cannot be encoded (a part too long).
inline std::size_t frame_size(std::string_view source, std::string_view topic,
                              std::size_t payload_len, std::string_view content_type,
                              const std::vector<std::pair<std::string_view, std::string_view>>&
                                  props) {
  if (source.empty() || source.size() > kMaxSourceBytes || topic.empty() || topic.size() > 0xffff ||
      content_type.size() > 0xffff || props.size() > 0xffff)
    return 0;
  std::size_t n = kFrameHeaderBytes + source.size() + topic.size() + content_type.size();
  for (auto& [k, v] : props) {
    if (k.size() > 0xffff || v.size() > 0xffff) return 0;
    n += 4 + k.size() + v.size();
  }
  n += payload_len;
  return n > kMaxFrameBytes + 4 ? 0 : n;
}

/// Appends one frame to `out`; `size` is frame_size() of the same parts (not 0).
inline void encode_frame(std::string& out, std::size_t size, std::string_view source,
                         std::string_view topic, const void* payload, std::size_t payload_len,
                         uint8_t qos, bool retain, std::string_view content_type,
                         const std::vector<std::pair<std::string_view, std::string_view>>& props) {
  using detail::put;
  out.reserve(out.size() + size);
  put<uint32_t>(out, static_cast<uint32_t>(size - 4));
  put<uint8_t>(out, kFrameVersion);
  put<uint8_t>(out, qos);
  put<uint8_t>(out, retain ? 1 : 0);
  put<uint8_t>(out, 0);
  put<uint16_t>(out, static_cast<uint16_t>(source.size()));
  put<uint16_t>(out, static_cast<uint16_t>(topic.size()));
  put<uint16_t>(out, static_cast<uint16_t>(content_type.size()));
  put<uint16_t>(out, static_cast<uint16_t>(props.size()));
  put<uint32_t>(out, static_cast<uint32_t>(payload_len));
  out.append(source);
  out.append(topic);
  out.append(content_type);
  for (auto& [k, v] : props) {
    put<uint16_t>(out, static_cast<uint16_t>(k.size()));
    put<uint16_t>(out, static_cast<uint16_t>(v.size()));
    out.append(k);
    out.append(v);
  }
  if (payload_len) out.append(static_cast<const char*>(payload), payload_len);
}

/// The length of the frame at the front of `buf` including its length field, 0 while
/// fewer than 4 bytes are there (the plugin's bookkeeping of what it has written).
inline std::size_t frame_length_at(std::string_view buf) {
  if (buf.size() < 4) return 0;
  return std::size_t{detail::get<uint32_t>(buf.data())} + 4;
}

/// Decodes one frame's body (the bytes after its length field, as frame_stream hands them
/// out) into `out`. Returns what is wrong with it, empty when it is a whole valid frame.
/// Pure: never reads past `body`, never allocates more than the body's own size.
inline std::string decode_frame(std::string_view body, route_message& out) {
  using detail::get;
  constexpr std::size_t head = kFrameHeaderBytes - 4;
  if (body.size() > kMaxFrameBytes || body.size() < head)
    return "frame length " + std::to_string(body.size()) + " out of range";
  const char* p = body.data();
  auto version = get<uint8_t>(p);
  auto qos = get<uint8_t>(p + 1);
  auto flags = get<uint8_t>(p + 2);
  auto reserved = get<uint8_t>(p + 3);
  std::size_t source_len = get<uint16_t>(p + 4);
  std::size_t topic_len = get<uint16_t>(p + 6);
  std::size_t ct_len = get<uint16_t>(p + 8);
  std::size_t nprops = get<uint16_t>(p + 10);
  std::size_t payload_len = get<uint32_t>(p + 12);
  if (version != kFrameVersion)
    return "frame version " + std::to_string(version) + " (expected " +
           std::to_string(kFrameVersion) + ")";
  if (qos > 2 || (flags & ~1u) != 0 || reserved != 0) return "bad qos or flags";
  if (source_len == 0 || source_len > kMaxSourceBytes || topic_len == 0)
    return "bad source or topic length";
  std::size_t rest = body.size() - head;
  const char* q = p + head;
  std::size_t fixed = source_len + topic_len + ct_len;
  // Checked step by step, so no sum can wrap.
  if (fixed > rest || payload_len > rest - fixed) return "frame parts longer than the frame";
  std::size_t left = rest - fixed - payload_len;  // the properties' bytes
  route_message m;
  m.source.assign(q, source_len);
  m.topic.assign(q + source_len, topic_len);
  m.content_type.assign(q + source_len + topic_len, ct_len);
  q += fixed;
  m.user_properties.reserve(std::min<std::size_t>(nprops, left / 4));
  for (std::size_t i = 0; i < nprops; ++i) {
    if (left < 4) return "property header past the frame";
    std::size_t kl = get<uint16_t>(q);
    std::size_t vl = get<uint16_t>(q + 2);
    q += 4;
    left -= 4;
    if (kl + vl > left) return "property past the frame";
    m.user_properties.emplace_back(std::string(q, kl), std::string(q + kl, vl));
    q += kl + vl;
    left -= kl + vl;
  }
  if (left != 0) return "frame length does not match its parts";
  m.payload.assign(q, payload_len);
  m.qos = qos;
  m.retain = (flags & 1u) != 0;
  out = std::move(m);
  return {};
}

}  // namespace grove::broker
