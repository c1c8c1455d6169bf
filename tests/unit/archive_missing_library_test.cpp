#define BOOST_TEST_MODULE archive_missing_library_test
#include <boost/test/unit_test.hpp>

#include <dlfcn.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "grove/archive.hpp"
#include "grove/errors.hpp"
#include "test_util.hpp"

// grove::archive built with a soname no system has, or with one of a library that is not
// libarchive (GROVE_LIBARCHIVE_SONAME, see tests/unit/CMakeLists.txt): what a device
// without a usable libarchive gets from every entry point, an error naming the library
// (GROVE_EXPECTED_FAILURE), and no directory left behind.

using namespace grove;
namespace fs = std::filesystem;
using grove::test::temp_dir;

namespace {

errc code_of(const caf::error& err) {
  return static_cast<errc>(err.code());
}

// The error of a call expected to fail for want of the library.
template <class T>
void refused_for_the_library(const caf::expected<T>& r) {
  BOOST_REQUIRE(!r);
  BOOST_TEST((code_of(r.error()) == errc::system_error));
  BOOST_TEST(message_of(r.error()).find(GROVE_EXPECTED_FAILURE)
               != std::string::npos,
             message_of(r.error()));
}

} // namespace

BOOST_AUTO_TEST_CASE(every_entry_point_says_which_library_is_unusable) {
  // The premise: the name cannot be opened here, or opens a library without libarchive's
  // first symbol.
  void* handle = ::dlopen(GROVE_LIBARCHIVE_SONAME, RTLD_LAZY);
  if (std::string_view{GROVE_EXPECTED_FAILURE}.starts_with("cannot load")) {
    BOOST_REQUIRE(handle == nullptr);
  } else {
    BOOST_REQUIRE(handle != nullptr);
    BOOST_REQUIRE(::dlsym(handle, "archive_entry_filetype") == nullptr);
    ::dlclose(handle);
  }
  temp_dir t;
  auto file = t.path() / "code.zip";
  // Any bytes: the library is asked for before the file is read.
  std::ofstream{file, std::ios::binary} << "PK\x05\x06" << std::string(18, '\0');
  for (int round = 0; round < 2; ++round) { // the second call reads the cached failure
    BOOST_TEST_CONTEXT("round " << round) {
      auto dest = t.path() / "out";
      refused_for_the_library(archive::extract(file, dest));
      BOOST_TEST(!fs::exists(dest));
      refused_for_the_library(archive::reader::open(file));
      refused_for_the_library(archive::reader::open_memory("PK\x05\x06"));
      refused_for_the_library(archive::read_files("PK\x05\x06"));
    }
  }
  // Options without any format are refused as before, not as a missing library.
  archive::options none;
  none.zip = false;
  none.tar = false;
  auto r = archive::extract(file, t.path() / "none", none);
  BOOST_REQUIRE(!r);
  BOOST_TEST((code_of(r.error()) == errc::invalid_config));
}
