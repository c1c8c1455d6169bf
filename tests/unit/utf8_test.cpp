#define BOOST_TEST_MODULE utf8_test
#include <boost/test/unit_test.hpp>

#include <string>

#include "grove/utf8.hpp"

using grove::escape_invalid_utf8;
using grove::valid_utf8;
using namespace std::string_literals;

BOOST_AUTO_TEST_CASE(well_formed_sequences_are_valid) {
  for (auto s : {""s, "abc"s, "\0x"s, "\xc3\xa9"s, "\xe2\x82\xac"s, "\xef\xbf\xbf"s,
                 "\xf0\x9d\x84\x9e"s, "\xf4\x8f\xbf\xbf"s, "\xed\x9f\xbf"s}) {
    BOOST_TEST(valid_utf8(s), s);
    BOOST_TEST(escape_invalid_utf8(s) == s);
  }
}

BOOST_AUTO_TEST_CASE(ill_formed_sequences_are_not) {
  // A stray byte, overlong forms, a surrogate, past U+10FFFF, F5+, cut short, a lone
  // continuation byte: what Protobuf refuses in a string field.
  for (auto s : {"\xff"s, "\xc0\x80"s, "\xc1\xbf"s, "\xe0\x80\x80"s, "\xf0\x80\x80\x80"s,
                 "\xed\xa0\x80"s, "\xf4\x90\x80\x80"s, "\xf5\x80\x80\x80"s, "\xe2\x82"s,
                 "\x80"s, "a\xc3"s})
    BOOST_TEST(!valid_utf8(s), s);
}

BOOST_AUTO_TEST_CASE(bytes_that_are_not_utf8_are_escaped_one_by_one) {
  // As Python's bytes.decode("utf-8", "backslashreplace") writes them (the Python SDK's
  // escapes read the same).
  BOOST_TEST(escape_invalid_utf8("a\xff\xfe z") == "a\\xff\\xfe z");
  BOOST_TEST(escape_invalid_utf8("\xe2\x82z") == "\\xe2\\x82z");
  BOOST_TEST(escape_invalid_utf8("\xed\xa0\x80!") == "\\xed\\xa0\\x80!");
  BOOST_TEST(escape_invalid_utf8("\xe2\x82\xac\x80\xe2\x82\xac") == "\xe2\x82\xac\\x80\xe2\x82\xac");
  BOOST_TEST(escape_invalid_utf8("\xf0\x9d\x84") == "\\xf0\\x9d\\x84");
  for (int b = 0; b < 256; ++b) {
    auto s = "x"s + static_cast<char>(b) + "\xc3";
    BOOST_TEST(valid_utf8(escape_invalid_utf8(s)), b);
  }
}

BOOST_AUTO_TEST_CASE(text_is_cut_between_characters) {
  // Three-byte characters: a cut at any byte count lands at a character's start.
  std::string euros;
  for (int i = 0; i < 10; ++i)
    euros += "\xe2\x82\xac";
  for (size_t max = 0; max <= euros.size() + 1; ++max) {
    auto n = grove::utf8_cut_point(euros, max);
    BOOST_TEST(n <= max);
    BOOST_TEST(n == std::min(euros.size(), max / 3 * 3), max);
  }
  BOOST_TEST(grove::cut_utf8(euros, euros.size()) == euros);
  // Cut: whole characters, then the whole size; within the limit.
  auto cut = grove::cut_utf8(euros, 20);
  BOOST_TEST(cut == "\xe2\x82\xac [30 bytes, cut]", cut);
  for (size_t max = 0; max <= euros.size(); ++max) {
    auto c = grove::cut_utf8(euros, max);
    BOOST_TEST(c.size() <= max, max);
    BOOST_TEST(valid_utf8(c), max);
  }
  // After escaping, as the runtime does with a worker's error: the size is the escaped one.
  auto escaped = grove::cut_utf8(escape_invalid_utf8(std::string(100, '\xff')), 57);
  BOOST_TEST(escaped == "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff [400 bytes, cut]", escaped);
}
