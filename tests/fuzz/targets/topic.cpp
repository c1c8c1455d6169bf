// Topic and filter validation and matching (sdk/plugin/src/topic.cpp): every topic on
// the bus comes from outside (devices through the broker, the cloud, grovectl, plugins).
// The input is "<filter a>\n<filter b>\n<topic>"; beyond "no crash", the matcher must
// agree with a plain level-by-level reference, and filters_overlap must be symmetric
// and see every topic both filters match.

#include <vector>

#include "fuzz_support.hpp"
#include "grove/topic.hpp"

namespace {

std::vector<std::string_view> levels(std::string_view s) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    auto pos = s.find('/', start);
    out.push_back(s.substr(start, pos - start));
    if (pos == std::string_view::npos)
      return out;
    start = pos + 1;
  }
}

// MQTT 4.7 as written: '#' matches the rest (and the parent level), '+' one level,
// a first-level wildcard no $-topic.
bool reference_matches(std::string_view filter, std::string_view topic) {
  if (topic.front() == '$' && (filter.front() == '+' || filter.front() == '#'))
    return false;
  auto f = levels(filter);
  auto t = levels(topic);
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] == "#")
      return true;
    if (i >= t.size() || (f[i] != "+" && f[i] != t[i]))
      return false;
  }
  return f.size() == t.size();
}

std::string_view next_part(std::string_view& rest) {
  auto nl = rest.find('\n');
  auto part = rest.substr(0, nl);
  rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
  return part;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using grove::fuzz::require;
  auto rest = grove::fuzz::bytes(data, size);
  auto a = next_part(rest);
  auto b = next_part(rest);
  auto topic = rest;
  bool a_ok = !grove::validate_filter(a);
  bool b_ok = !grove::validate_filter(b);
  bool topic_ok = !grove::validate_topic(topic);
  if (topic_ok) {
    // A topic is a filter without wildcards.
    require(!grove::validate_filter(topic), "a valid topic is not a valid filter");
    require(grove::topic_matches(topic, topic), "a topic does not match itself");
  }
  if (a_ok) {
    require(grove::has_wildcard(a) == (a.find_first_of("+#") != a.npos), "has_wildcard");
    require(grove::filters_overlap(a, a), "a filter does not overlap itself");
  }
  if (a_ok && topic_ok)
    require(grove::topic_matches(a, topic) == reference_matches(a, topic),
            "topic_matches disagrees with the reference");
  if (a_ok && b_ok) {
    bool overlap = grove::filters_overlap(a, b);
    require(overlap == grove::filters_overlap(b, a), "filters_overlap is not symmetric");
    if (topic_ok && grove::topic_matches(a, topic) && grove::topic_matches(b, topic))
      require(overlap, "filters_overlap missed a topic both filters match");
  }
  return 0;
}
