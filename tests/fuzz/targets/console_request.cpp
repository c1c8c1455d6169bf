// The console plugin's parsers of what a browser sends (plugins/console/src/auth.cpp): the
// input is a Cookie header line, a newline, then a request body. cookie_value never reads
// past the header and returns a substring of it; parse_object accepts only JSON objects
// (nesting bounded before nlohmann's recursive parser sees it); string_field never throws
// on any member; describe_payload shows any bytes as JSON, text or hex within its limit.
// A session token found by a cookie is only ever one the table made; the body as a
// session snapshot loads whole or not at all.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "auth.hpp"

using namespace grove::console;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in{reinterpret_cast<const char*>(data), size};
  auto nl = in.find('\n');
  auto header = in.substr(0, nl);
  auto body = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);

  auto v = cookie_value(header, "grove_console");
  if (!v.empty() && header.find(v) == std::string_view::npos)
    std::abort(); // a value that is not in the header

  static session_table sessions;
  auto now = clock::now();
  if (sessions.find(v, now))
    std::abort(); // no session was ever made with a token from the input

  std::string error;
  auto obj = parse_object(body, error);
  if (obj) {
    if (!obj->is_object())
      std::abort();
    for (const auto& [k, _] : obj->items())
      (void) string_field(*obj, k);
    (void) string_field(*obj, "name");
  } else if (error.empty()) {
    std::abort(); // a refusal always says why
  }

  // The body as the previous instance's sessions (a hot reload's snapshot): loaded whole
  // or not at all, and never more than the table's bound.
  session_table restored;
  if (!restored.load(body, now) && restored.size() != 0)
    std::abort();
  if (restored.size() > session_table::max_sessions)
    std::abort();

  auto shown = describe_payload(body, header, 64);
  auto kind = shown["kind"].get<std::string>();
  if (kind != "json" && kind != "text" && kind != "binary")
    std::abort();
  if (kind == "text" && shown["text"].get<std::string>().size() > 64)
    std::abort();
  if (kind == "binary" && shown["hex"].get<std::string>().size() > 64 * 3)
    std::abort();
  if (printable_utf8(body) != (kind != "binary"))
    std::abort();
  return 0;
}
