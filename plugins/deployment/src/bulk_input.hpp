#pragma once

// Greengrass v1's bulk deployment input file (StartBulkDeployment's `InputFileUri`):
// JSON lines, one `{"GroupId", "GroupVersionId", "DeploymentType"}` object per line, UTF-8,
// as AWS reads it. Outside input: every line is checked on its own, and a line that fails
// is a record with the reason, never the end of the file. Pure (no I/O), for the API,
// its tests and its fuzz target.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace grove::deployment {

/// The largest input file (AWS: "This file must be less than 100 MB").
inline constexpr size_t max_bulk_input_bytes = 100 * 1024 * 1024;

/// The most records one bulk deployment takes (more is the file's error, not a record's).
inline constexpr size_t max_bulk_records = 10000;

/// The longest line (one record is well under 1 KiB).
inline constexpr size_t max_bulk_line_bytes = 4096;

/// One record of the input file.
struct bulk_record {
  /// Its line number (1-based).
  size_t line = 0;
  /// `GroupId` ("" when the line failed before it).
  std::string group_id;
  /// `GroupVersionId`.
  std::string group_version_id;
  /// `DeploymentType` (NewDeployment when absent).
  std::string deployment_type;
  /// Why the line is not a record that can be deployed; empty when it is.
  std::string error;
};

/// The records of `text`, blank lines skipped; an empty `file_error` when the file as a
/// whole is readable (it names the problem otherwise: too large, no records, too many).
std::vector<bulk_record> parse_bulk_input(std::string_view text, std::string& file_error);

} // namespace grove::deployment
