#include "grove/topic.hpp"

#include <string>

#include "grove/errors.hpp"

namespace grove {

namespace {

caf::error check_common(std::string_view str, const char* what) {
  if (str.empty())
    return make_error(errc::invalid_topic, std::string{what} + " is empty");
  if (str.size() > max_topic_size)
    return make_error(errc::invalid_topic,
                      std::string{what} + " is longer than 65535 bytes");
  if (str.find('\0') != std::string_view::npos)
    return make_error(errc::invalid_topic,
                      std::string{what} + " contains a NUL character");
  return {};
}

} // namespace

caf::error validate_topic(std::string_view topic) {
  // One pass: this runs on every publish.
  bool bad = topic.empty() || topic.size() > max_topic_size;
  for (auto c : topic)
    bad |= c == '+' || c == '#' || c == '\0';
  if (!bad)
    return {};
  if (auto err = check_common(topic, "topic"))
    return err;
  return make_error(errc::invalid_topic, "topic '" + std::string{topic}
                                           + "' contains a wildcard (+ or #)");
}

caf::error validate_filter(std::string_view filter) {
  if (auto err = check_common(filter, "filter"))
    return err;
  size_t level_start = 0;
  for (size_t i = 0; i <= filter.size(); ++i) {
    if (i < filter.size() && filter[i] != '/')
      continue;
    auto level = filter.substr(level_start, i - level_start);
    if (level.size() > 1 && level.find_first_of("+#") != std::string_view::npos)
      return make_error(errc::invalid_topic,
                        "filter '" + std::string{filter}
                          + "': a wildcard must fill a whole level");
    if (level == "#" && i != filter.size())
      return make_error(errc::invalid_topic,
                        "filter '" + std::string{filter}
                          + "': '#' must be the last level");
    level_start = i + 1;
  }
  return {};
}

bool has_wildcard(std::string_view filter) noexcept {
  return filter.find_first_of("+#") != std::string_view::npos;
}

bool topic_matches(std::string_view filter, std::string_view topic) noexcept {
  // MQTT 4.7.2: wildcards at the first level never match $-topics.
  if (!topic.empty() && topic.front() == '$' && !filter.empty()
      && (filter.front() == '+' || filter.front() == '#'))
    return false;
  size_t f = 0;
  size_t t = 0;
  for (;;) {
    auto f_end = filter.find('/', f);
    if (f_end == std::string_view::npos)
      f_end = filter.size();
    auto level = filter.substr(f, f_end - f);
    if (level == "#")
      return true; // matches the parent level too ("a/#" matches "a")
    if (t > topic.size())
      return false; // topic ran out of levels
    auto t_end = topic.find('/', t);
    if (t_end == std::string_view::npos)
      t_end = topic.size();
    if (level != "+" && level != topic.substr(t, t_end - t))
      return false;
    bool filter_done = f_end == filter.size();
    bool topic_done = t_end == topic.size();
    if (filter_done || topic_done) {
      if (filter_done && topic_done)
        return true;
      // "a/#" vs "a": the filter's next level must be a lone '#'.
      return topic_done && filter.substr(f_end + 1) == "#";
    }
    f = f_end + 1;
    t = t_end + 1;
  }
}

namespace {

// Splits off the next level of `s` at `pos`; `done` tells whether it was the last.
std::string_view next_level(std::string_view s, size_t& pos, bool& done) noexcept {
  auto end = s.find('/', pos);
  if (end == std::string_view::npos)
    end = s.size();
  auto level = s.substr(pos, end - pos);
  done = end == s.size();
  pos = end + 1;
  return level;
}

} // namespace

bool filters_overlap(std::string_view a, std::string_view b) noexcept {
  // A filter starting with a wildcard matches no $-topic, and a filter starting with
  // '$' matches only $-topics.
  auto wild_first = [](std::string_view f) {
    return !f.empty() && (f.front() == '+' || f.front() == '#');
  };
  auto dollar_first = [](std::string_view f) { return !f.empty() && f.front() == '$'; };
  if ((wild_first(a) && dollar_first(b)) || (wild_first(b) && dollar_first(a)))
    return false;
  size_t pa = 0;
  size_t pb = 0;
  for (;;) {
    bool a_done = false;
    bool b_done = false;
    auto la = next_level(a, pa, a_done);
    auto lb = next_level(b, pb, b_done);
    if (la == "#" || lb == "#")
      return true;
    if (la != "+" && lb != "+" && la != lb)
      return false;
    if (a_done && b_done)
      return true;
    if (a_done || b_done) {
      // "x" and "x/#" share the topic "x"; "x" and "x/y" share none.
      auto rest = a_done ? b.substr(pb) : a.substr(pa);
      return rest == "#";
    }
  }
}

} // namespace grove
