// grove::rotating_log (sdk/plugin/include/grove/rotating_log.hpp) on real files in a
// temporary directory: lines appended to one open file, rotation at the size with N files
// kept and the oldest dropped, no line split across files, a line longer than the cap cut,
// a file removed or renamed from outside reopened, two writers of one path, smaller limits
// applied at once, rotated files past the number removed (gaps and all), a symlink at
// the path not followed, and an unwritable directory answered with an error.

#define BOOST_TEST_MODULE rotating_log_test
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "grove/errors.hpp"
#include "grove/rotating_log.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using grove::rotating_log;

namespace {

std::string text_of(const fs::path& file) {
  std::ifstream in{file};
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<std::string> lines_of(const fs::path& file) {
  std::vector<std::string> out;
  std::istringstream in{text_of(file)};
  for (std::string l; std::getline(in, l);)
    out.push_back(l);
  return out;
}

/// "line <i> " and padding to 60 bytes with the newline.
std::string numbered(int i) {
  auto s = "line " + std::to_string(i) + " ";
  return s + std::string(59 - s.size(), 'x');
}

/// Open descriptors of this process on `file`.
int open_count(const fs::path& file) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator{"/proc/self/fd", ec})
    if (fs::read_symlink(e.path(), ec) == file)
      ++n;
  return n;
}

} // namespace

BOOST_AUTO_TEST_CASE(lines_are_appended_to_one_open_file) {
  grove::test::temp_dir dir;
  auto path = dir.path() / "sub" / "a.log"; // its directory made
  rotating_log log{path, {.max_bytes = 1 << 20, .files = 3}};
  BOOST_TEST(!fs::exists(path)); // nothing before the first line or open()
  for (int i = 0; i < 100; ++i)
    BOOST_REQUIRE(!log.write(numbered(i)));
  auto lines = lines_of(path);
  BOOST_REQUIRE(lines.size() == 100u);
  BOOST_TEST(lines.front() == numbered(0));
  BOOST_TEST(lines.back() == numbered(99));
  // Kept open: one descriptor on it, not one per line (nor none).
  BOOST_TEST(open_count(path) == 1);
  // A second log of the same path appends after the first's lines.
  rotating_log again{path, {.max_bytes = 1 << 20, .files = 3}};
  BOOST_REQUIRE(!again.write("more"));
  BOOST_TEST(lines_of(path).size() == 101u);
  BOOST_TEST(lines_of(path).back() == "more");
}

BOOST_AUTO_TEST_CASE(rotates_at_the_size_keeping_n_files_and_dropping_the_oldest) {
  grove::test::temp_dir dir;
  auto path = dir.path() / "r.log";
  // 60-byte lines, 1000 bytes a file: 16 lines fit (960), the 17th starts a new file.
  rotating_log log{path, {.max_bytes = 1000, .files = 3}};
  for (int i = 0; i < 200; ++i)
    BOOST_REQUIRE(!log.write(numbered(i)));
  BOOST_TEST(!fs::exists(log.rotated(4)));
  std::vector<std::string> all; // oldest file first
  for (auto f : {log.rotated(3), log.rotated(2), log.rotated(1), path}) {
    BOOST_REQUIRE(fs::exists(f));
    BOOST_TEST(fs::file_size(f) <= 1000u, f);
    auto t = text_of(f);
    BOOST_TEST((t.starts_with("line ") && t.ends_with("x\n")), f); // whole lines only
    for (auto& l : lines_of(f))
      all.push_back(l);
  }
  // Rotated files are full (16 lines), consecutive, the newest line last, the oldest gone.
  BOOST_TEST(lines_of(log.rotated(1)).size() == 16u);
  BOOST_REQUIRE(!all.empty());
  BOOST_TEST(all.back() == numbered(199));
  auto first = 200 - static_cast<int>(all.size());
  BOOST_TEST(first > 0); // the oldest lines were dropped
  for (size_t k = 0; k < all.size(); ++k)
    BOOST_TEST(all[k] == numbered(first + static_cast<int>(k)));
  // The one open descriptor is on the live file.
  BOOST_TEST(open_count(path) == 1);
}

BOOST_AUTO_TEST_CASE(a_line_is_never_split_and_a_long_one_is_cut) {
  grove::test::temp_dir dir;
  auto path = dir.path() / "s.log";
  rotating_log log{path, {.max_bytes = 100, .files = 2}};
  BOOST_REQUIRE(!log.write(std::string(60, 'a')));
  // 61 + 41 > 100: the second line goes whole to a new file, none of it in the first.
  BOOST_REQUIRE(!log.write(std::string(40, 'b')));
  BOOST_TEST(text_of(log.rotated(1)) == std::string(60, 'a') + "\n");
  BOOST_TEST(text_of(path) == std::string(40, 'b') + "\n");
  // A record with a newline inside is one record: whole in one file.
  BOOST_REQUIRE(!log.write("c1\nc2" + std::string(60, 'c')));
  BOOST_TEST(text_of(path).starts_with("c1\nc2"));
  BOOST_TEST(text_of(log.rotated(1)) == std::string(40, 'b') + "\n");
  // Longer than the cap: cut to it (between UTF-8 characters), marked, alone in its file.
  std::string long_line;
  for (int i = 0; i < 100; ++i)
    long_line += "\u00e9"; // two bytes each
  BOOST_REQUIRE(!log.write(long_line));
  auto cut = text_of(path);
  BOOST_TEST(cut.size() <= 100u);
  BOOST_TEST(cut.ends_with("\u00e9\u2026truncated\n"), cut);
  BOOST_REQUIRE(!log.write("after"));
  BOOST_TEST(text_of(path) == "after\n");
}

BOOST_AUTO_TEST_CASE(a_file_removed_or_renamed_from_outside_is_reopened) {
  grove::test::temp_dir dir;
  auto path = dir.path() / "d.log";
  rotating_log log{path, {.max_bytes = 1 << 20, .files = 2}};
  BOOST_REQUIRE(!log.write("one"));
  fs::remove(path); // an operator's rm
  BOOST_REQUIRE(!log.write("two"));
  BOOST_REQUIRE(fs::exists(path));
  BOOST_TEST(text_of(path) == "two\n");
  // logrotate's rename: the old file keeps what it had, the new one gets the next line.
  fs::rename(path, dir.path() / "d.log.old");
  BOOST_REQUIRE(!log.write("three"));
  BOOST_TEST(text_of(dir.path() / "d.log.old") == "two\n");
  BOOST_TEST(text_of(path) == "three\n");
  BOOST_TEST(open_count(dir.path() / "d.log.old") == 0); // let go
  // A truncation from outside (copytruncate): the size counts from there.
  fs::resize_file(path, 0);
  BOOST_REQUIRE(!log.write("four"));
  BOOST_TEST(text_of(path) == "four\n");
  BOOST_TEST(!fs::exists(log.rotated(1)));
}

BOOST_AUTO_TEST_CASE(two_writers_of_one_path_share_its_rotation) {
  grove::test::temp_dir dir;
  auto path = dir.path() / "t.log";
  rotating_log a{path, {.max_bytes = 1000, .files = 2}};
  rotating_log b{path, {.max_bytes = 1000, .files = 2}};
  for (int i = 0; i < 40; ++i)
    BOOST_REQUIRE(!(i % 2 == 0 ? a : b).write(numbered(i)));
  std::vector<std::string> all;
  for (auto f : {a.rotated(2), a.rotated(1), path}) {
    BOOST_TEST(fs::file_size(f) <= 1000u, f);
    for (auto& l : lines_of(f))
      all.push_back(l);
  }
  // Every line once, in order: no file rotated twice, no line into a rotated file.
  BOOST_REQUIRE(all.size() == 40u);
  for (int i = 0; i < 40; ++i)
    BOOST_TEST(all[static_cast<size_t>(i)] == numbered(i));
}

BOOST_AUTO_TEST_CASE(smaller_limits_apply_at_once) {
  grove::test::temp_dir dir;
  auto path = dir.path() / "l.log";
  rotating_log log{path, {.max_bytes = 1000, .files = 4}};
  for (int i = 0; i < 100; ++i)
    BOOST_REQUIRE(!log.write(numbered(i)));
  BOOST_REQUIRE(fs::exists(log.rotated(4)));
  BOOST_REQUIRE(!log.set_limits({.max_bytes = 300, .files = 2}));
  BOOST_TEST(!fs::exists(log.rotated(3)));
  BOOST_TEST(!fs::exists(log.rotated(4)));
  for (auto f : {log.rotated(2), log.rotated(1), path})
    if (fs::exists(f)) {
      BOOST_TEST(fs::file_size(f) <= 300u, f);
      auto t = text_of(f);
      BOOST_TEST((t.empty() || (t.starts_with("line ") && t.ends_with("x\n"))), f);
    }
  BOOST_REQUIRE(!log.write("last"));
  BOOST_TEST(text_of(path).ends_with("last\n"));
  // files 0: the live file starts again instead of rotating.
  BOOST_REQUIRE(!log.set_limits({.max_bytes = 300, .files = 0}));
  BOOST_TEST(!fs::exists(log.rotated(1)));
  for (int i = 0; i < 20; ++i)
    BOOST_REQUIRE(!log.write(numbered(i)));
  BOOST_TEST(fs::file_size(path) <= 300u);
  BOOST_TEST(lines_of(path).back() == numbered(19));
  BOOST_TEST(!fs::exists(log.rotated(1)));
}

BOOST_AUTO_TEST_CASE(an_unwritable_directory_is_an_error_not_a_crash) {
  grove::test::temp_dir dir;
  // A path under a regular file: no directory can be made there, for root too.
  std::ofstream{dir.path() / "file"} << "x";
  rotating_log log{dir.path() / "file" / "x.log"};
  auto err = log.open();
  BOOST_REQUIRE(static_cast<bool>(err));
  BOOST_TEST((err == grove::errc::system_error));
  BOOST_TEST(grove::describe(err).find("file/x.log") != std::string::npos, grove::describe(err));
  auto w = log.write("lost");
  BOOST_TEST(static_cast<bool>(w));
  // A read-only directory (a non-root user's case; root passes permission checks).
  if (::geteuid() != 0) {
    auto ro = dir.path() / "ro";
    fs::create_directory(ro);
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    rotating_log r{ro / "x.log"};
    BOOST_TEST(static_cast<bool>(r.write("lost")));
    fs::permissions(ro, fs::perms::owner_all);
  }
  // Once the way is clear, the same log writes.
  fs::remove(dir.path() / "file");
  BOOST_TEST(!log.write("found"));
  BOOST_TEST(text_of(dir.path() / "file" / "x.log") == "found\n");
}

BOOST_AUTO_TEST_CASE(rotated_files_past_the_number_go_gaps_and_all) {
  grove::test::temp_dir dir;
  auto path = dir.path() / "a.log";
  // An earlier run with more files left .3, .5 and .12 (gaps between them); .07 and
  // .x are not rotated files of this log.
  for (const char* n : {"a.log.3", "a.log.5", "a.log.12", "a.log.07", "a.log.x", "b.log.4"})
    std::ofstream{dir.path() / n} << "old\n";
  rotating_log log{path, {.max_bytes = 1 << 20, .files = 2}};
  BOOST_REQUIRE(!log.set_limits({.max_bytes = 1 << 20, .files = 2}));
  for (const char* n : {"a.log.3", "a.log.5", "a.log.12"})
    BOOST_TEST(!fs::exists(dir.path() / n), n);
  for (const char* n : {"a.log.07", "a.log.x", "b.log.4"})
    BOOST_TEST(fs::exists(dir.path() / n), n);
}

BOOST_AUTO_TEST_CASE(a_symlink_at_the_path_is_not_followed) {
  grove::test::temp_dir dir;
  auto target = dir.path() / "precious";
  std::ofstream{target} << "keep\n";
  auto path = dir.path() / "a.log";
  fs::create_symlink(target, path); // as a user owning the log's directory could
  rotating_log log{path};
  auto err = log.write("line");
  BOOST_TEST(static_cast<bool>(err));
  BOOST_TEST(grove::describe(err).find("a.log") != std::string::npos, grove::describe(err));
  BOOST_TEST(text_of(target) == "keep\n");
}
