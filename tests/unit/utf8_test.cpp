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
