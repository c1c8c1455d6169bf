// The shadow plugin's document library (plugins/shadow/src/document.cpp): a device's
// request payload checked and merged into a shadow. The input is two payloads split at
// the first newline: the first makes the current document, the second updates it (and
// both are read as get/delete bodies, a stored document and a topic).

#include "document.hpp"
#include "fuzz_support.hpp"

using namespace grove::shadow;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view all = grove::fuzz::bytes(data, size);
  auto cut = all.find('\n');
  auto first = all.substr(0, cut);
  auto second = cut == std::string_view::npos ? std::string_view{} : all.substr(cut + 1);
  constexpr size_t limit = 30720;
  (void) parse_topic(first);
  (void) client_token_of(all);
  (void) parse_request(all, verb::get, 4 * limit);
  std::optional<document> current;
  if (auto stored = document::deserialize(first))
    current = std::move(stored);
  auto base = parse_request(first, verb::update, 4 * limit);
  if (!current && !rejected(base)) {
    auto made = apply_update(std::nullopt, tombstone{3, 0}, std::get<request>(base), 1, limit);
    if (!rejected(made))
      current = std::get<update_result>(made).current;
  }
  auto req = parse_request(second, verb::update, 4 * limit);
  if (rejected(req))
    return 0;
  auto next = apply_update(current, std::nullopt, std::get<request>(req), 2, limit);
  if (auto done = std::get_if<update_result>(&next)) {
    // What is stored must read back as the same document.
    auto back = document::deserialize(done->current.serialize());
    if (!back || back->serialize() != done->current.serialize())
      __builtin_trap();
    (void) get_accepted(done->current, std::get<request>(req).client_token, 3);
  }
  return 0;
}
