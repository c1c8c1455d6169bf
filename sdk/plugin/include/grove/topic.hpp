#pragma once

#include <string_view>

#include <caf/error.hpp>

namespace grove {

/// Largest topic or filter accepted, in bytes (MQTT's limit).
constexpr size_t max_topic_size = 65535;

/// Checks a topic name used to publish: non-empty, no wildcards, no NUL, valid size.
caf::error validate_topic(std::string_view topic);

/// Checks a topic filter used to subscribe: `+` fills a whole level, `#` is the
/// whole last level, no NUL, valid size.
caf::error validate_filter(std::string_view filter);

/// Returns whether `topic` matches `filter` under MQTT rules. A filter starting with a
/// wildcard does not match a topic starting with `$`. Both are assumed valid.
bool topic_matches(std::string_view filter, std::string_view topic) noexcept;

/// Returns whether a filter contains `+` or `#`.
bool has_wildcard(std::string_view filter) noexcept;

/// Returns whether some topic matches both filters (used to keep serve claims
/// exclusive). Both are assumed valid.
bool filters_overlap(std::string_view a, std::string_view b) noexcept;

} // namespace grove
