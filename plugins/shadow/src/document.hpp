#pragma once

// The AWS IoT Device Shadow document and its semantics, as a pure library (no I/O, no
// clock of its own): parsing and checking requests, merging partial updates, metadata,
// delta, versions, tombstones, and the exact JSON of every reply and event
// (plugins/shadow/README.md, "Protocol"). Nothing here throws: every refusal is a
// `rejection` carrying AWS's code and message.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

namespace grove::shadow {

/// JSON with the keys in the order they were written (AWS's replies read state,
/// metadata, version, timestamp, clientToken).
using json = nlohmann::ordered_json;

/// A refused request: AWS's HTTP-like code and message.
struct rejection {
  /// 400, 404, 409, 413, 415, 429 or 500.
  int code = 0;
  /// AWS's message text for that code.
  std::string message;
};

/// A value or the rejection that took its place.
template <class T>
using outcome = std::variant<T, rejection>;

/// The rejection in `x`, or nullptr.
template <class T>
const rejection* rejected(const outcome<T>& x) noexcept {
  return std::get_if<rejection>(&x);
}

/// AWS's messages, shared by the plugin and the tests.
namespace msg {
inline constexpr std::string_view invalid_json = "Invalid JSON";
inline constexpr std::string_view missing_state = "Missing required node: state";
inline constexpr std::string_view state_not_object = "State node must be an object";
inline constexpr std::string_view desired_not_object = "Desired node must be an object";
inline constexpr std::string_view reported_not_object = "Reported node must be an object";
inline constexpr std::string_view invalid_version = "Invalid version";
inline constexpr std::string_view invalid_client_token = "Invalid clientToken";
inline constexpr std::string_view too_deep
  = "JSON contains too many levels of nesting; maximum is 6";
inline constexpr std::string_view invalid_node = "State contains an invalid node";
inline constexpr std::string_view version_conflict = "Version conflict";
inline constexpr std::string_view too_large = "The payload exceeds the maximum size allowed";
inline constexpr std::string_view not_utf8
  = "Unsupported documented encoding; supported encoding is UTF-8";
inline constexpr std::string_view too_many_requests = "Too Many Requests";
inline constexpr std::string_view thing_not_found = "Thing not found";
inline constexpr std::string_view internal = "Internal service failure";
} // namespace msg

/// Longest thing name, in bytes.
inline constexpr size_t max_thing_name = 128;

/// Longest shadow name, in bytes.
inline constexpr size_t max_shadow_name = 64;

/// Longest clientToken, in bytes.
inline constexpr size_t max_client_token = 64;

/// Deepest desired or reported section (levels of nesting).
inline constexpr int max_depth = 6;

/// How long a deleted shadow's version is remembered (48 hours, as AWS).
inline constexpr int64_t tombstone_seconds = 48 * 3600;

/// The three verbs.
enum class verb { get, update, del };

/// A request topic taken apart.
struct shadow_topic {
  /// The thing.
  std::string thing;
  /// The shadow's name; empty for the classic shadow.
  std::string name;
  /// What is asked.
  verb op = verb::get;

  /// `$aws/things/<thing>/shadow[/name/<name>]`, the prefix of every reply topic.
  std::string prefix() const;
};

/// True for 1..128 bytes of [a-zA-Z0-9:_-].
bool valid_thing_name(std::string_view name) noexcept;

/// True for 1..64 bytes of [a-zA-Z0-9:_-].
bool valid_shadow_name(std::string_view name) noexcept;

/// True when `bytes` is well-formed UTF-8 (no overlongs, surrogates or values above
/// U+10FFFF).
bool valid_utf8(std::string_view bytes) noexcept;

/// `$aws/things/{thing}/shadow/{get,update,delete}` and the named form; nullopt for any
/// other topic (replies, events, wildcards, bad names).
std::optional<shadow_topic> parse_topic(std::string_view topic);

/// The stored shadow: its two sections (null when absent), their metadata, version and
/// the time of its last change.
struct document {
  /// The desired section, an object, or null when absent.
  json desired;
  /// The reported section, an object, or null when absent.
  json reported;
  /// Metadata of desired: the same shape with {"timestamp": T} at the leaves.
  json meta_desired;
  /// Metadata of reported.
  json meta_reported;
  /// Version, 1 for a new shadow.
  uint64_t version = 0;
  /// Seconds since the epoch of the last accepted update.
  int64_t timestamp = 0;

  /// The stored form: get/accepted's payload at the time of the last change and without
  /// clientToken, {"state":{desired,reported,delta},"metadata":{...},"version":N,
  /// "timestamp":T} (delta only when there is one), so that a get of a shadow not in
  /// memory answers from the stored text without parsing it (get_accepted_from_stored).
  std::string serialize() const;

  /// Reads the stored form back; nullopt when it is not one.
  static std::optional<document> deserialize(std::string_view text);

  /// {"state":{desired,reported},"metadata":{...},"version":N}: one side of
  /// update/documents.
  json snapshot() const;

  /// Bytes that count toward the size limit: desired plus reported, serialized.
  size_t state_bytes() const;
};

/// What is left of a deleted shadow.
struct tombstone {
  /// The deleted shadow's last version.
  uint64_t version = 0;
  /// When it was deleted (seconds since the epoch).
  int64_t deleted_at = 0;

  /// True while a re-created shadow continues this version (within 48 hours).
  bool live(int64_t now) const noexcept {
    return now - deleted_at < tombstone_seconds;
  }
};

/// What a parsed request carries.
struct request {
  /// The state node of an update (an object); null for get and delete.
  json state;
  /// The expected version, when given.
  std::optional<uint64_t> version;
  /// The clientToken, when given.
  std::optional<std::string> client_token;
};

/// Checks and parses a request payload for `op`: 415 for non-UTF-8, 413 above
/// `max_payload_bytes`, then 400 for each malformation of AWS's table. Get and delete
/// accept an empty payload.
outcome<request> parse_request(std::string_view payload, verb op, size_t max_payload_bytes);

/// Untrusted JSON text as an object: nullopt when it is not UTF-8, nests over 64 levels,
/// does not parse or is not an object.
std::optional<json> parse_object(std::string_view text);

/// The clientToken of a payload, if it has a valid one: rejections echo it even when
/// the request is refused.
std::optional<std::string> client_token_of(std::string_view payload);

/// Everything an accepted update produces.
struct update_result {
  /// The new document.
  document current;
  /// The update/accepted payload.
  std::string accepted;
  /// The update/documents payload.
  std::string documents;
  /// The update/delta payload; empty when there is no delta to announce.
  std::string delta;
};

/// Applies update `req` (from parse_request) to `current` (nullopt: no shadow, with
/// `tomb` the deleted one's remains, if any) at `now`. Refuses 409 when `req.version`
/// is not the current version and 413 when the merged state exceeds
/// `max_document_bytes`. `current` is not changed.
outcome<update_result> apply_update(const std::optional<document>& current,
                                    const std::optional<tombstone>& tomb, const request& req,
                                    int64_t now, size_t max_document_bytes);

/// The desired leaves that differ from reported (objects compared per key, anything
/// else as a whole); null when there are none.
json delta_of(const json& desired, const json& reported);

/// The get/accepted payload.
std::string get_accepted(const document& doc, const std::optional<std::string>& token,
                         int64_t now);

/// The get/accepted payload made from a stored form (document::serialize) without
/// parsing it: its timestamp replaced by `now`, `token` added; byte for byte what
/// get_accepted gives for the document. nullopt when `stored` does not end as one does.
std::optional<std::string> get_accepted_from_stored(std::string_view stored,
                                                    const std::optional<std::string>& token,
                                                    int64_t now);

/// The delete/accepted payload.
std::string delete_accepted(uint64_t version, const std::optional<std::string>& token,
                            int64_t now);

/// A .../rejected payload: {"code","message","timestamp","clientToken"}.
std::string rejected_payload(const rejection& r, const std::optional<std::string>& token,
                             int64_t now);

/// 404 for a missing shadow: "No shadow exists with name: '<thing>[~<name>]'".
rejection no_shadow(const shadow_topic& t);

} // namespace grove::shadow
