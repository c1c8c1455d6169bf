#pragma once

// The AWS IoT Jobs MQTT protocol as the ota plugin speaks it (README.md, "AWS IoT
// Jobs"): topics, the execution in notify-next and get replies, the job document naming
// the bundle, and update payloads. Pure: no I/O, so it is unit-tested and fuzzed alone.

#include <caf/expected.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace grove::ota::jobs {

/// A job execution as the cloud describes it.
struct execution {
  std::string job_id;
  std::string status; // QUEUED, IN_PROGRESS, ...
  int64_t version_number = 0;
  std::string document; // the job document, as JSON text
};

/// True for a thing name AWS accepts: 1-128 of [a-zA-Z0-9:_-].
bool valid_thing_name(std::string_view thing);
/// True for a job id AWS accepts: 1-64 of [a-zA-Z0-9_-].
bool valid_job_id(std::string_view id);

/// $aws/things/<thing>/jobs/notify-next
std::string notify_next_topic(std::string_view thing);
/// $aws/things/<thing>/jobs/<job>/get (replies on /accepted, /rejected); job "$next"
/// describes the next pending execution.
std::string get_topic(std::string_view thing, std::string_view job);
/// $aws/things/<thing>/jobs/<job>/update (replies on /accepted, /rejected).
std::string update_topic(std::string_view thing, std::string_view job);
/// The cloud filters the plugin holds: notify-next and the replies to get ($next and a
/// job's own, the re-read after a VersionMismatch) and update.
std::vector<std::string> filters(std::string_view thing);

/// The job id of a reply topic `$aws/things/<thing>/jobs/<job>/<suffix>` ("$next" for
/// $next/get replies), or "" when `topic` is not one of `thing`'s with that suffix.
std::string job_of(std::string_view topic, std::string_view thing, std::string_view suffix);

/// An answer to an update: /accepted (code empty) or /rejected (the ErrorResponse's code,
/// e.g. "VersionMismatch", and message). `state_status` and `version` come from the
/// executionState it carries (accepted with includeJobExecutionState, and a
/// VersionMismatch rejection); version 0 and "" when there is none.
struct update_answer {
  std::string code;
  std::string message;
  std::string state_status;
  int64_t version = 0;
};

/// Reads an update/accepted (`rejected` false) or update/rejected message.
caf::expected<update_answer> parse_update_answer(std::string_view payload, bool rejected);

/// True for an execution status no update can change (SUCCEEDED, FAILED, REJECTED,
/// CANCELED, TIMED_OUT, REMOVED).
bool terminal(std::string_view status);

/// Reads a notify-next message or a get/accepted reply: the execution it carries, or
/// nullopt when it carries none (no pending job). Malformed JSON or fields: an error.
caf::expected<std::optional<execution>> parse_execution(std::string_view payload);

/// The bundle a job document names: {"operation": "grove-ota", "bundle": PATH} where PATH
/// is an absolute path on the device, a file:// URL (the path is returned) or an
/// https:// URL (returned as it is, to download). Anything else (http://, a URL without
/// a host or with user info, spaces or control characters) is refused with a reason for
/// the FAILED statusDetails.
caf::expected<std::string> bundle_of(std::string_view document);

/// An update request: status, statusDetails (values cut to AWS's 1024 bytes),
/// expectedVersion when > 0, includeJobExecutionState (the accepted answer then carries
/// the new versionNumber, the next update's expectedVersion), clientToken.
std::string update_payload(std::string_view status,
                           const std::map<std::string, std::string>& details,
                           int64_t expected_version, std::string_view client_token);

/// A get request with a clientToken.
std::string get_payload(std::string_view client_token);

} // namespace grove::ota::jobs
