#pragma once

// Semantic versions (semver 2.0.0) and npm-style version ranges, as Greengrass recipes
// use them in ComponentVersion and ComponentDependencies.VersionRequirement.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace grove::deployment {

/// A semantic version.
struct semver {
  /// MAJOR.
  uint64_t major = 0;
  /// MINOR.
  uint64_t minor = 0;
  /// PATCH.
  uint64_t patch = 0;
  /// Pre-release identifiers (after `-`).
  std::vector<std::string> pre;
  /// Build metadata (after `+`), ignored by precedence.
  std::string build;

  /// The text form.
  std::string str() const;
};

/// Parses a strict semver 2.0.0 version (no `v`, no leading zeros, each number below
/// 2^53); `why` says what is wrong.
std::optional<semver> parse_semver(std::string_view text, std::string* why = nullptr);

/// Precedence: <0, 0, >0 (build metadata ignored).
int compare(const semver& a, const semver& b);

/// True when version texts `a` and `b` name the same version: MAJOR.MINOR.PATCH and the
/// pre-release equal, build metadata ignored, a missing MINOR or PATCH taken as 0 (a
/// plugin's own version may be `1.0`); texts that are no version compare as strings.
bool same_version(std::string_view a, std::string_view b);

/// One comparison of a range.
struct comparator {
  /// `<`, `<=`, `>`, `>=` or `=`.
  std::string op;
  /// The version compared with.
  semver version;
};

/// An npm range: alternatives (`||`) of sets of comparators that must all hold.
struct semver_range {
  /// The alternatives; empty never happens after a successful parse.
  std::vector<std::vector<comparator>> sets;

  /// npm's satisfies(): a pre-release version only matches a set with a comparator on
  /// the same major.minor.patch that has a pre-release too.
  bool satisfies(const semver& v) const;
};

/// Parses `>=1.0.0 <2.0.0`, `^1.2`, `~1.2.3`, `1.x`, `*`, `1.2 - 2.3`, `a || b`.
std::optional<semver_range> parse_range(std::string_view text, std::string* why = nullptr);

} // namespace grove::deployment
