// AWS event-stream framing (eventstream.hpp).

#include "eventstream.hpp"

#include <algorithm>

#include <zlib.h>

namespace grove::deployment::eventstream {

namespace {

uint32_t be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

void put_be(std::string& out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// The headers block [p, end) into `out`; false with `why` on a malformed one.
bool read_headers(const unsigned char* p, const unsigned char* end, std::vector<header>& out,
                  std::string& why) {
  while (p < end) {
    size_t name_len = *p++;
    if (name_len == 0 || static_cast<size_t>(end - p) < name_len + 1) {
      why = "a header name is empty or runs past the headers";
      return false;
    }
    header h;
    h.name.assign(reinterpret_cast<const char*>(p), name_len);
    p += name_len;
    auto type = *p++;
    auto left = static_cast<size_t>(end - p);
    auto number = [&](int bytes) {
      if (left < static_cast<size_t>(bytes))
        return false;
      uint64_t v = 0;
      for (int i = 0; i < bytes; ++i)
        v = (v << 8) | *p++;
      // Sign-extend from `bytes` bytes.
      if (bytes < 8 && (v >> (8 * bytes - 1)) & 1)
        v |= ~uint64_t{0} << (8 * bytes);
      h.number = static_cast<int64_t>(v);
      return true;
    };
    bool ok = true;
    switch (type) {
      case 0:
      case 1:
        h.number = type == 0 ? 1 : 0;
        break;
      case 2:
        ok = number(1);
        break;
      case 3:
        ok = number(2);
        break;
      case 4:
        ok = number(4);
        break;
      case 5:
      case 8:
        ok = number(8);
        break;
      case 6:
      case 7: {
        if (left < 2) {
          ok = false;
          break;
        }
        size_t len = (size_t{p[0]} << 8) | p[1];
        p += 2;
        if (left - 2 < len) {
          ok = false;
          break;
        }
        h.text.assign(reinterpret_cast<const char*>(p), len);
        p += len;
        break;
      }
      case 9:
        if (left < 16) {
          ok = false;
          break;
        }
        h.text.assign(reinterpret_cast<const char*>(p), 16);
        p += 16;
        break;
      default:
        why = "header '" + h.name + "' has unknown value type " + std::to_string(type);
        return false;
    }
    if (!ok) {
      why = "header '" + h.name + "' runs past the headers";
      return false;
    }
    h.type = static_cast<header_type>(type);
    out.push_back(std::move(h));
  }
  return true;
}

} // namespace

header header::str(std::string name, std::string value) {
  header h;
  h.name = std::move(name);
  h.type = header_type::string;
  h.text = std::move(value);
  return h;
}

header header::i32(std::string name, int32_t value) {
  header h;
  h.name = std::move(name);
  h.type = header_type::int32;
  h.number = value;
  return h;
}

const header* message::find(std::string_view name) const {
  for (const auto& h : headers)
    if (h.name == name)
      return &h;
  return nullptr;
}

std::optional<std::string> message::string_of(std::string_view name) const {
  auto* h = find(name);
  if (!h || h->type != header_type::string)
    return std::nullopt;
  return h->text;
}

std::optional<int32_t> message::int32_of(std::string_view name) const {
  auto* h = find(name);
  if (!h || h->type != header_type::int32)
    return std::nullopt;
  return static_cast<int32_t>(h->number);
}

uint32_t crc32(std::string_view data, uint32_t crc) {
  // zlib takes uInt lengths; frames are bounded far below that, but loop anyway.
  auto* p = reinterpret_cast<const Bytef*>(data.data());
  size_t n = data.size();
  uLong c = crc;
  while (n > 0) {
    auto chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    c = ::crc32(c, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(c);
}

decode_status decode(std::string_view in, size_t max_frame, message& out, size_t& used,
                     std::string& why) {
  if (in.size() < 12)
    return decode_status::need_more;
  auto* p = reinterpret_cast<const unsigned char*>(in.data());
  uint32_t total = be32(p);
  uint32_t headers_len = be32(p + 4);
  if (crc32(in.substr(0, 8)) != be32(p + 8)) {
    why = "the prelude's CRC does not match";
    return decode_status::invalid;
  }
  if (total < min_frame || total > max_frame) {
    why = "a frame of " + std::to_string(total) + " bytes (at least " +
          std::to_string(min_frame) + ", at most " + std::to_string(max_frame) + ")";
    return decode_status::invalid;
  }
  if (headers_len > total - min_frame) {
    why = "the headers' length runs past the frame";
    return decode_status::invalid;
  }
  if (in.size() < total)
    return decode_status::need_more;
  if (crc32(in.substr(0, total - 4)) != be32(p + total - 4)) {
    why = "the message's CRC does not match";
    return decode_status::invalid;
  }
  message m;
  if (!read_headers(p + 12, p + 12 + headers_len, m.headers, why))
    return decode_status::invalid;
  m.payload.assign(in.substr(12 + headers_len, total - min_frame - headers_len));
  out = std::move(m);
  used = total;
  return decode_status::ok;
}

std::string encode(const message& m) {
  std::string hs;
  for (const auto& h : m.headers) {
    auto name = std::string_view{h.name}.substr(0, 255);
    hs.push_back(static_cast<char>(name.size()));
    hs.append(name);
    hs.push_back(static_cast<char>(h.type));
    switch (h.type) {
      case header_type::bool_true:
      case header_type::bool_false:
        break;
      case header_type::byte:
        put_be(hs, static_cast<uint64_t>(h.number), 1);
        break;
      case header_type::int16:
        put_be(hs, static_cast<uint64_t>(h.number), 2);
        break;
      case header_type::int32:
        put_be(hs, static_cast<uint64_t>(h.number), 4);
        break;
      case header_type::int64:
      case header_type::timestamp:
        put_be(hs, static_cast<uint64_t>(h.number), 8);
        break;
      case header_type::bytes:
      case header_type::string: {
        auto v = std::string_view{h.text}.substr(0, 65535);
        put_be(hs, v.size(), 2);
        hs.append(v);
        break;
      }
      case header_type::uuid: {
        auto v = h.text;
        v.resize(16, '\0');
        hs.append(v);
        break;
      }
    }
  }
  std::string out;
  uint64_t total = min_frame + hs.size() + m.payload.size();
  out.reserve(total);
  put_be(out, total, 4);
  put_be(out, hs.size(), 4);
  put_be(out, crc32(out), 4);
  out.append(hs);
  out.append(m.payload);
  put_be(out, crc32(out), 4);
  return out;
}

} // namespace grove::deployment::eventstream
