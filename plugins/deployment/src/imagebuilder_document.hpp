#pragma once

// Image Builder component documents (YAML, schemaVersion 1.0), checked as grove-image
// (tools/grove-image, parse_component) checks them before it runs one: the same keys,
// values, defaults and field names, so a document CreateComponent stores is one
// grove-image runs. Pure: text in, a checked document or the first problem out.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace grove::deployment {

/// The largest document checked (bytes): 16000 characters of UTF-8 fit.
inline constexpr size_t max_component_document_bytes = 64000;

/// One step, with Image Builder's defaults filled in.
struct component_step {
  /// `name`: 1 to 128 of [A-Za-z0-9_-], unique in its phase.
  std::string name;
  /// `action` (ExecuteBash: the only one grove-image runs).
  std::string action;
  /// `inputs.commands`.
  std::vector<std::string> commands;
  /// `onFailure`: Abort (default), Continue or Ignore.
  std::string on_failure = "Abort";
  /// `timeoutSeconds`: 1 to 86400, 7200 by default (Image Builder's).
  int64_t timeout_seconds = 7200;
  /// `maxAttempts`: 1 to 10, 1 by default.
  int64_t max_attempts = 1;
};

/// One phase: build, validate or test.
struct component_phase {
  /// Its name.
  std::string name;
  /// Its steps, in order.
  std::vector<component_step> steps;
};

/// A document that passed every check.
struct component_document {
  /// `name` (CreateComponent's name pattern).
  std::string name;
  /// `description`, or "".
  std::string description;
  /// The phases as written.
  std::vector<component_phase> phases;
};

/// What is wrong with a document: the field (`document`, `phases[1].name`,
/// `build.hello.timeoutSeconds`, grove-image's names) and the problem, starting
/// `line N: ` where the YAML reader knows the line.
struct component_document_error {
  /// The field.
  std::string field;
  /// The problem.
  std::string message;
};

/// Parses and checks `text`; nullopt with the first problem in `err`.
std::optional<component_document> parse_component_document(std::string_view text,
                                                           component_document_error& err);

/// True for a name CreateComponent takes (and a document's `name`):
/// `^[-_A-Za-z-0-9][-_A-Za-z0-9 ]{1,126}[-_A-Za-z-0-9]$`.
bool valid_imagebuilder_name(std::string_view name);

} // namespace grove::deployment
