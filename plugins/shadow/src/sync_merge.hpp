#pragma once

// Cloud sync's pure half (plugins/shadow/README.md, "Cloud sync"): the three-way merge per
// leaf of the local and the cloud document against the last state both agreed on, the
// update that turns one state into another, and the reading of the cloud's JSON (get
// answers, update/documents events). No I/O, no clock; nothing throws.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "document.hpp"

namespace grove::shadow {

/// Which way changes flow (shadow manager's `synchronize.direction`).
enum class sync_direction {
  /// Both ways, merged per leaf.
  between,
  /// Local changes go to the cloud; cloud changes are not taken.
  device_to_cloud,
  /// Cloud changes come to the device; local changes are not sent.
  cloud_to_device,
};

/// One side of a synchronized shadow as the merge sees it.
struct sync_side {
  /// {"desired":{...},"reported":{...}}, a section absent when it is empty.
  json state = json::object();
  /// The same shape as `state` with {"timestamp": T} at the leaves.
  json metadata = json::object();
  /// When the side last changed (seconds): the time of a leaf it deleted.
  int64_t timestamp = 0;
  /// The side's own version.
  uint64_t version = 0;
};

/// What a sync does to both sides.
struct sync_plan {
  /// False when the shadow is gone on both sides afterwards.
  bool exists = true;
  /// The state both sides have afterwards (the new base) when `exists`.
  json merged = json::object();
  /// The `state` node of an update for the local shadow; null: nothing to do.
  json local_patch;
  /// The `state` node of an update for the cloud shadow; null: nothing to do.
  json cloud_patch;
  /// Delete the local shadow.
  bool delete_local = false;
  /// Delete the cloud shadow.
  bool delete_cloud = false;
};

/// The state of a local document (sections only when not null), its metadata, time and
/// version.
sync_side side_of(const document& doc);

/// The `state` node of an update that turns state `from` into `to` (objects; a key of
/// `from` missing in `to` becomes null, a section too); null when they are equal.
json state_diff(const json& from, const json& to);

/// The three-way merge per leaf of `local` and `cloud` against `base` (nullopt: never
/// agreed, or a side has no shadow). Rules (README, "The merge rule"): a leaf changed on
/// one side only takes that side's value; changed on both, the newer metadata timestamp
/// wins (a deleted leaf counts the time of its side's last change; a tie keeps the local
/// value); objects are merged key by key, arrays and scalars are leaves. A whole shadow
/// missing on one side: deleted there if the other side did not change since `base`,
/// else re-created from the other side; missing and never agreed: taken from the other
/// side. `dir` other than `between` takes one side as it is for the other. `pending` is
/// the state an update whose answer never came asked the cloud to take (a lost link, a
/// kill): a leaf where the cloud has that value counts as unchanged in the cloud since
/// then, since the cloud's timestamp on it is only when our own update arrived.
sync_plan plan_sync(const std::optional<json>& base, const std::optional<sync_side>& local,
                    const std::optional<sync_side>& cloud, sync_direction dir,
                    const std::optional<json>& pending = std::nullopt);

/// A document as the cloud sends it: get/accepted, or `current` of update/documents
/// ({"state":{...},"metadata":{...},"version":N}); `delta` is dropped. nullopt when it is
/// not one (bad JSON, not UTF-8, nesting over 64, sections not objects, no version).
std::optional<sync_side> cloud_side_of(const json& doc);

/// cloud_side_of for raw text.
std::optional<sync_side> parse_cloud_document(std::string_view text);

/// A reply or event topic of the cloud taken apart: the shadow, the verb it answers
/// (update for documents and delta) and the last level.
struct cloud_reply {
  /// The shadow and the verb.
  shadow_topic topic;
  /// "accepted", "rejected", "documents" or "delta".
  std::string kind;
};

/// `$aws/things/T/shadow[/name/N]/{get,update,delete}/{accepted,rejected}` and
/// `.../update/{documents,delta}`; nullopt for any other topic.
std::optional<cloud_reply> parse_cloud_reply(std::string_view topic);

} // namespace grove::shadow
