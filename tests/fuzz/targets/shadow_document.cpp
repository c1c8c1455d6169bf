// The shadow plugin's document library (plugins/shadow/src/document.cpp): a device's
// request payload checked and merged into a shadow. The input is two payloads split at
// the first newline: the first makes the current document, the second updates it (and
// both are read as get/delete bodies, a stored document and a topic). Cloud sync: the
// second is also read as the cloud's document and merged three-way with the current one
// (the first's state as the base); applying the local update the merge asks for must
// leave the local shadow at the merged state.

#include "document.hpp"
#include "fuzz_support.hpp"
#include "sync_merge.hpp"

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
  (void) parse_cloud_reply(first);
  if (auto cloud = parse_cloud_document(second)) {
    std::optional<sync_side> local;
    if (current)
      local = side_of(*current);
    std::optional<json> base;
    if (auto b = parse_object(first)) // the first's state node is the base
      base = b->contains("state") ? (*b)["state"] : *b;
    for (auto dir : {sync_direction::between, sync_direction::device_to_cloud,
                     sync_direction::cloud_to_device}) {
      auto plan = plan_sync(base, local, cloud, dir);
      if (!plan.exists || plan.local_patch.is_null() || !plan.local_patch.is_object()
          || dir == sync_direction::device_to_cloud)
        continue;
      request patch;
      patch.state = plan.local_patch;
      auto made = apply_update(current, std::nullopt, patch, 5, 1u << 30);
      if (auto done = std::get_if<update_result>(&made)) {
        // What the merge agreed on is what the local side now has (the cloud's
        // sections, being objects, always merge into objects).
        if (dir == sync_direction::between
            && !state_diff(side_of(done->current).state, plan.merged).is_null())
          __builtin_trap();
      }
    }
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
    // A get from the stored text (a shadow not in memory) answers byte for byte as one
    // from the document.
    const auto& token = std::get<request>(req).client_token;
    auto spliced = get_accepted_from_stored(done->current.serialize(), token, 3);
    if (!spliced || *spliced != get_accepted(done->current, token, 3))
      __builtin_trap();
  }
  return 0;
}
