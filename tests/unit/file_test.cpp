#define BOOST_TEST_MODULE file_test
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <set>
#include <stdexcept>
#include <string>

#include "grove/errors.hpp"
#include "grove/file.hpp"
#include "directory_fsync_fault.hpp"
#include "test_support.hpp"

namespace grove {
// Error codes by name in failed assertions.
inline std::ostream& boost_test_print_type(std::ostream& os, errc x) {
  return os << to_string(x);
}
} // namespace grove

using namespace grove;
namespace fs = std::filesystem;
using grove::test::failing_directory_fsync;
using grove::test::temp_dir;

namespace {

std::string slurp(const fs::path& file) {
  std::ifstream in{file, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

struct stat stat_of(const fs::path& file) {
  struct stat st {};
  BOOST_REQUIRE_EQUAL(::lstat(file.c_str(), &st), 0);
  return st;
}

// The names in `dir`: what a test expects there, so a temporary file left is seen.
std::set<std::string> names_in(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator{dir})
    out.insert(e.path().filename().string());
  return out;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

errc code_of(const caf::error& err) {
  return static_cast<errc>(err.code());
}

bool is_root() {
  return ::geteuid() == 0;
}

bool not_root() {
  return !is_root();
}

// Sets the umask for a test's scope: the mode must not depend on it.
struct umask_scope {
  mode_t old;
  explicit umask_scope(mode_t m) : old(::umask(m)) {
  }
  ~umask_scope() {
    ::umask(old);
  }
};

} // namespace

BOOST_AUTO_TEST_CASE(writes_the_parts_with_exactly_the_mode) {
  temp_dir dir;
  umask_scope mask{077};
  auto file = dir.path() / "conf";
  BOOST_REQUIRE(!write_file_atomically(file, {"first ", "", "line\n", "end\n"}, {.mode = 0640}));
  BOOST_TEST(slurp(file) == "first line\nend\n");
  BOOST_TEST((stat_of(file).st_mode & 07777) == 0640u);
  // Replaced whole, with the new mode; without sync the content is the same.
  BOOST_REQUIRE(
    !write_file_atomically(file, std::string{"second\n"}, {.mode = 0604, .sync = false}));
  BOOST_TEST(slurp(file) == "second\n");
  BOOST_TEST((stat_of(file).st_mode & 07777) == 0604u);
  BOOST_REQUIRE(!write_file_atomically(file, ""));
  BOOST_TEST(slurp(file).empty());
  BOOST_TEST((stat_of(file).st_mode & 07777) == 0604u); // unasked: the replaced file's
  // Its permissions only: new content never inherits a setuid bit.
  BOOST_REQUIRE_EQUAL(::chmod(file.c_str(), 04750), 0);
  BOOST_REQUIRE(!write_file_atomically(file, "run me\n"));
  BOOST_TEST((stat_of(file).st_mode & 07777) == 0750u);
  BOOST_TEST(names_in(dir.path()) == std::set<std::string>{"conf"});
}

// Unasked, a new file gets what open(2) would give it under the process's umask: groved's
// 077 makes it its user's only (issue 8).
BOOST_AUTO_TEST_CASE(a_new_file_without_a_mode_follows_the_umask) {
  temp_dir dir;
  for (mode_t m : {mode_t{077}, mode_t{022}, mode_t{027}}) {
    umask_scope mask{m};
    auto file = dir.path() / ("new" + std::to_string(m));
    BOOST_REQUIRE(!write_file_atomically(file, "x"));
    BOOST_TEST((stat_of(file).st_mode & 07777) == (0666u & ~m));
  }
  // A symlink at the name gives no mode of its own (0777): the umask's again.
  umask_scope mask{077};
  auto link = dir.path() / "link";
  fs::create_symlink(dir.path() / "new63", link);
  BOOST_REQUIRE(!write_file_atomically(link, "y"));
  BOOST_TEST(S_ISREG(stat_of(link).st_mode));
  BOOST_TEST((stat_of(link).st_mode & 07777) == 0600u);
}

// A check that throws: the exception goes on, the old file stays, no temporary file left.
BOOST_AUTO_TEST_CASE(a_throwing_check_leaves_no_temporary_file) {
  temp_dir dir;
  auto file = dir.write("group.yaml", "name: old\n");
  BOOST_CHECK_THROW(
    (void)write_file_atomically(file, "name: new\n", {.check = [](const fs::path&) -> caf::error {
                                  throw std::runtime_error{"reader failed"};
                                }}),
    std::runtime_error);
  BOOST_TEST(slurp(file) == "name: old\n");
  BOOST_TEST(names_in(dir.path()) == std::set<std::string>{"group.yaml"});
}

// A writer killed mid-way leaves `.<name>.XXXXXX`: the next write of that name removes
// those older than a minute, and nothing else.
BOOST_AUTO_TEST_CASE(stale_temporary_files_of_the_name_are_removed) {
  temp_dir dir;
  auto file = dir.write("state.json", "{}\n");
  auto age = [&](const std::string& name, time_t seconds) {
    auto p = dir.write(name, "left\n");
    struct timespec times[2] = {{::time(nullptr) - seconds, 0}, {::time(nullptr) - seconds, 0}};
    BOOST_REQUIRE_EQUAL(::utimensat(AT_FDCWD, p.c_str(), times, 0), 0);
  };
  age(".state.json.Ab3xZ9", 3600);  // stale: removed
  age(".state.json.recent", 0);     // a live writer's, maybe: kept
  age(".state.json.Ab3xZ", 3600);   // not the pattern (five): kept
  age(".state.json.Ab3-Z9", 3600);  // not the pattern (a dash): kept
  age(".other.json.Ab3xZ9", 3600);  // another name's: kept
  age("state.json.Ab3xZ9", 3600);   // no dot first: kept
  fs::create_directory(dir.path() / ".state.json.DIRxx1");
  BOOST_REQUIRE(!write_file_atomically(file, "{\"a\": 1}\n"));
  BOOST_TEST(slurp(file) == "{\"a\": 1}\n");
  BOOST_TEST(names_in(dir.path())
             == (std::set<std::string>{"state.json", ".state.json.recent", ".state.json.Ab3xZ",
                                       ".state.json.Ab3-Z9", ".other.json.Ab3xZ9",
                                       "state.json.Ab3xZ9", ".state.json.DIRxx1"}));
}

// Only this process's leftovers are swept: its own user's, or those of the owner its
// writes give their files. Another user's file of the pattern stays (in a shared sticky
// directory it is none of ours).
BOOST_AUTO_TEST_CASE(another_users_temporary_of_the_pattern_is_kept,
                     *boost::unit_test::precondition([](auto) { return is_root(); })) {
  temp_dir dir;
  auto file = dir.write("acl", "old\n");
  auto left = [&](const std::string& name, uid_t uid) {
    auto p = dir.write(name, "left\n");
    BOOST_REQUIRE_EQUAL(::chown(p.c_str(), uid, uid), 0);
    struct timespec hour_ago[2] = {{::time(nullptr) - 3600, 0}, {::time(nullptr) - 3600, 0}};
    BOOST_REQUIRE_EQUAL(::utimensat(AT_FDCWD, p.c_str(), hour_ago, 0), 0);
  };
  left(".acl.Other1", 65533);  // someone else's: kept
  left(".acl.Given1", 65534);  // the owner this write gives its file: ours, removed
  left(".acl.Mine01", 0);      // our own: removed
  BOOST_REQUIRE(!write_file_atomically(file, "new\n",
                                       {.mode = 0600, .owner = file_owner{65534, 65534}}));
  BOOST_TEST(names_in(dir.path()) == (std::set<std::string>{"acl", ".acl.Other1"}));
  // Without an owner, the 65534 file is someone else's too.
  left(".acl.Given2", 65534);
  BOOST_REQUIRE(!write_file_atomically(file, "newer\n", {.mode = 0600}));
  BOOST_TEST(names_in(dir.path()) == (std::set<std::string>{"acl", ".acl.Other1", ".acl.Given2"}));
}

// A symlink of the temporary pattern is never followed: neither it nor its old target goes.
BOOST_AUTO_TEST_CASE(a_symlink_of_the_temporary_pattern_is_not_followed) {
  temp_dir dir;
  auto file = dir.write("state.json", "{}\n");
  auto target = dir.write("elsewhere/kept.json", "not a leftover\n");
  auto link = dir.path() / ".state.json.Ln4kX1";
  fs::create_symlink(target, link);
  // Both an hour old: followed, the link would look like a stale temporary file.
  struct timespec hour_ago[2] = {{::time(nullptr) - 3600, 0}, {::time(nullptr) - 3600, 0}};
  BOOST_REQUIRE_EQUAL(::utimensat(AT_FDCWD, target.c_str(), hour_ago, 0), 0);
  BOOST_REQUIRE_EQUAL(::utimensat(AT_FDCWD, link.c_str(), hour_ago, AT_SYMLINK_NOFOLLOW), 0);
  BOOST_REQUIRE(!write_file_atomically(file, "{\"a\": 1}\n"));
  BOOST_TEST(slurp(file) == "{\"a\": 1}\n");
  BOOST_TEST(fs::is_symlink(link));
  BOOST_TEST(slurp(target) == "not a leftover\n");
  BOOST_TEST(names_in(dir.path())
             == (std::set<std::string>{"state.json", "elsewhere", ".state.json.Ln4kX1"}));
}

// A file system that cannot fsync a directory (EINVAL, EROFS, ENOTSUP): done, as in SQLite,
// for write_file_atomically and sync_directory alike.
BOOST_AUTO_TEST_CASE(a_directory_that_cannot_be_fsynced_counts_as_synced) {
  temp_dir dir;
  auto file = dir.write("ca.crt", "old\n");
  for (int code : {EINVAL, EROFS, ENOTSUP}) {
    failing_directory_fsync failing{code};
    auto text = "new " + std::to_string(code) + "\n";
    auto err = write_file_atomically(file, text);
    BOOST_TEST(!err, describe(err));
    BOOST_TEST(slurp(file) == text);
    err = sync_directory(dir.path());
    BOOST_TEST(!err, describe(err));
  }
  BOOST_TEST(names_in(dir.path()) == std::set<std::string>{"ca.crt"});
}

// Any other failure of the directory fsync comes after the rename: the new file is in
// place (no temporary file left) and the error says so, told apart by
// replaced_not_durable(); sync_directory reports it.
BOOST_AUTO_TEST_CASE(a_failed_directory_fsync_is_replaced_but_not_durable) {
  temp_dir dir;
  auto file = dir.write("group.yaml", "name: old\n");
  failing_directory_fsync failing{EIO};
  auto err = write_file_atomically(file, "name: new\n", {.mode = 0600});
  BOOST_REQUIRE(err);
  BOOST_TEST(code_of(err) == errc::system_error);
  BOOST_TEST(replaced_not_durable(err), describe(err));
  BOOST_TEST(contains(message_of(err), file.string()), describe(err));
  BOOST_TEST(contains(message_of(err), std::strerror(EIO)), describe(err));
  BOOST_TEST(slurp(file) == "name: new\n");
  BOOST_TEST(names_in(dir.path()) == std::set<std::string>{"group.yaml"});
  // Without sync, no directory fsync to fail.
  BOOST_TEST(!write_file_atomically(file, "name: unsynced\n", {.sync = false}));
  err = sync_directory(dir.path());
  BOOST_REQUIRE(err);
  BOOST_TEST(!replaced_not_durable(err), describe(err));
  BOOST_TEST(contains(message_of(err), std::strerror(EIO)), describe(err));
}

// Only that error reads as "replaced": not a failure before the rename, even with those
// words in its path, nor another code's.
BOOST_AUTO_TEST_CASE(replaced_not_durable_tells_only_its_error) {
  temp_dir dir;
  BOOST_TEST(!replaced_not_durable(caf::error{}));
  auto odd = dir.path() / "replaced, but not yet durable: x" / "f";
  auto err = write_file_atomically(odd, "x");
  BOOST_REQUIRE(err);
  BOOST_TEST(!replaced_not_durable(err), describe(err));
  BOOST_TEST(!replaced_not_durable(
    make_error(errc::invalid_config, "replaced, but not yet durable: /x/f: fsync its directory")));
}

BOOST_AUTO_TEST_CASE(a_relative_path_is_written_in_the_working_directory) {
  temp_dir dir;
  auto cwd = fs::current_path();
  fs::current_path(dir.path());
  auto err = write_file_atomically("plain", "text");
  fs::current_path(cwd);
  BOOST_REQUIRE(!err);
  BOOST_TEST(slurp(dir.path() / "plain") == "text");
}

// Not asked, the new file is the writer's: neither chowned nor given the old file's owner.
BOOST_AUTO_TEST_CASE(the_owner_is_left_alone_when_not_asked) {
  temp_dir dir;
  auto file = dir.write("key", "old");
  if (is_root())
    BOOST_REQUIRE_EQUAL(::chown(file.c_str(), 65534, 65534), 0);
  BOOST_REQUIRE(!write_file_atomically(file, "new", {.mode = 0600}));
  auto st = stat_of(file);
  BOOST_TEST(st.st_uid == ::geteuid());
  BOOST_TEST(st.st_gid == ::getegid());
  BOOST_TEST(slurp(file) == "new");
}

BOOST_AUTO_TEST_CASE(the_owner_is_set_when_asked,
                     *boost::unit_test::precondition([](auto) { return is_root(); })) {
  temp_dir dir;
  auto file = dir.path() / "acl";
  BOOST_REQUIRE(!write_file_atomically(file, "table\n",
                                       {.mode = 0600, .owner = file_owner{65534, 65533}}));
  auto st = stat_of(file);
  BOOST_TEST(st.st_uid == 65534u);
  BOOST_TEST(st.st_gid == 65533u);
  BOOST_TEST((st.st_mode & 07777) == 0600u);
}

BOOST_AUTO_TEST_CASE(a_foreign_owner_is_refused_without_root,
                     *boost::unit_test::precondition([](auto) { return not_root(); })) {
  temp_dir dir;
  auto file = dir.write("acl", "old");
  auto err = write_file_atomically(file, "new", {.owner = file_owner{0, 0}});
  BOOST_REQUIRE(err);
  BOOST_TEST(contains(message_of(err), "fchown"), describe(err));
  BOOST_TEST(slurp(file) == "old");
  BOOST_TEST(names_in(dir.path()) == std::set<std::string>{"acl"});
}

BOOST_AUTO_TEST_CASE(a_missing_directory_is_an_error_naming_the_path) {
  temp_dir dir;
  auto file = dir.path() / "absent" / "ca.key";
  auto err = write_file_atomically(file, "secret", {.mode = 0600});
  BOOST_REQUIRE(err);
  BOOST_TEST(code_of(err) == errc::system_error);
  BOOST_TEST(contains(message_of(err), file.string()), describe(err));
  BOOST_TEST(contains(message_of(err), "No such file or directory"), describe(err));
  BOOST_TEST(!fs::exists(dir.path() / "absent"));
}

BOOST_AUTO_TEST_CASE(a_directory_that_is_a_file_is_an_error_and_the_file_stays) {
  temp_dir dir;
  auto plain = dir.write("plain", "keep me");
  auto err = write_file_atomically(plain / "f", "x");
  BOOST_REQUIRE(err);
  BOOST_TEST(contains(message_of(err), (plain / "f").string()), describe(err));
  BOOST_TEST(contains(message_of(err), "Not a directory"), describe(err));
  BOOST_TEST(slurp(plain) == "keep me");
}

// The rename fails (a directory holds the name): the temporary file goes, the old entry stays.
BOOST_AUTO_TEST_CASE(a_failed_rename_leaves_no_temporary_file) {
  temp_dir dir;
  auto taken = dir.path() / "taken";
  fs::create_directories(taken / "inside");
  auto err = write_file_atomically(taken, "text");
  BOOST_REQUIRE(err);
  BOOST_TEST(contains(message_of(err), "rename"), describe(err));
  BOOST_TEST(contains(message_of(err), taken.string()), describe(err));
  BOOST_TEST(fs::is_directory(taken / "inside"));
  BOOST_TEST(names_in(dir.path()) == std::set<std::string>{"taken"});
}

// A write the system refuses part way (the file size limit, as a full disk would): the old
// file is intact and the partial temporary file is removed.
BOOST_AUTO_TEST_CASE(a_failed_write_keeps_the_old_file) {
  temp_dir dir;
  auto file = dir.write("state.json", "{\"phase\": \"old\"}\n");
  std::string big(256 * 1024, 'x');
  rlimit old{};
  BOOST_REQUIRE_EQUAL(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN); // EFBIG instead of the signal
  rlimit small = old;
  small.rlim_cur = 64 * 1024;
  BOOST_REQUIRE_EQUAL(::setrlimit(RLIMIT_FSIZE, &small), 0);
  auto err = write_file_atomically(file, big);
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  BOOST_REQUIRE(err);
  BOOST_TEST(contains(message_of(err), "write"), describe(err));
  BOOST_TEST(contains(message_of(err), file.string()), describe(err));
  BOOST_TEST(slurp(file) == "{\"phase\": \"old\"}\n");
  BOOST_TEST(names_in(dir.path()) == std::set<std::string>{"state.json"});
}

BOOST_AUTO_TEST_CASE(a_read_only_directory_keeps_the_old_file,
                     *boost::unit_test::precondition([](auto) { return not_root(); })) {
  temp_dir dir;
  auto file = dir.write("sub/f", "old");
  fs::permissions(dir.path() / "sub", fs::perms::owner_read | fs::perms::owner_exec);
  auto err = write_file_atomically(file, "new");
  fs::permissions(dir.path() / "sub", fs::perms::owner_all);
  BOOST_REQUIRE(err);
  BOOST_TEST(contains(message_of(err), file.string()), describe(err));
  BOOST_TEST(slurp(file) == "old");
  BOOST_TEST(names_in(dir.path() / "sub") == std::set<std::string>{"f"});
}

// The check sees the complete new content under the temporary name; its refusal is returned
// as it is and the old file stays.
BOOST_AUTO_TEST_CASE(a_refused_check_keeps_the_old_file) {
  temp_dir dir;
  auto file = dir.write("group.yaml", "name: old\n");
  std::string seen;
  fs::path seen_at;
  auto err = write_file_atomically(file, {"name: ", "new\n"}, {.check = [&](const fs::path& p) {
                                     seen = slurp(p);
                                     seen_at = p;
                                     return make_error(errc::invalid_config, "not a group");
                                   }});
  BOOST_REQUIRE(err);
  BOOST_TEST(code_of(err) == errc::invalid_config);
  BOOST_TEST(message_of(err) == "not a group");
  BOOST_TEST(seen == "name: new\n");
  BOOST_TEST(seen_at.parent_path() == dir.path());
  BOOST_TEST(seen_at.filename().string().starts_with(".group.yaml."), seen_at);
  BOOST_TEST(slurp(file) == "name: old\n");
  BOOST_TEST(names_in(dir.path()) == std::set<std::string>{"group.yaml"});
  // Accepted: the same content replaces the file.
  BOOST_REQUIRE(!write_file_atomically(file, {"name: ", "new\n"},
                                       {.check = [](const fs::path&) { return caf::error{}; }}));
  BOOST_TEST(slurp(file) == "name: new\n");
}

// A symlink at the path is replaced, never followed: its target is not written.
BOOST_AUTO_TEST_CASE(a_symlink_at_the_path_is_replaced_not_followed) {
  temp_dir dir;
  auto target = dir.write("target", "untouched");
  auto link = dir.path() / "link";
  fs::create_symlink(target, link);
  BOOST_REQUIRE(!write_file_atomically(link, "written"));
  BOOST_TEST(!fs::is_symlink(link));
  BOOST_TEST(slurp(link) == "written");
  BOOST_TEST(slurp(target) == "untouched");
}

// message_manager's state_dir is a symlink to the broker's home.
BOOST_AUTO_TEST_CASE(a_directory_reached_through_a_symlink_is_written) {
  temp_dir dir;
  fs::create_directories(dir.path() / "home");
  fs::create_directory_symlink(dir.path() / "home", dir.path() / "state");
  BOOST_REQUIRE(!write_file_atomically(dir.path() / "state" / "broker.acl", "end\n"));
  BOOST_TEST(slurp(dir.path() / "home" / "broker.acl") == "end\n");
  BOOST_TEST(names_in(dir.path() / "home") == std::set<std::string>{"broker.acl"});
}

BOOST_AUTO_TEST_CASE(sync_directory_names_a_directory_it_cannot_open) {
  temp_dir dir;
  BOOST_TEST(!sync_directory(dir.path()));
  auto err = sync_directory(dir.path() / "absent");
  BOOST_REQUIRE(err);
  BOOST_TEST(contains(message_of(err), (dir.path() / "absent").string()), describe(err));
  auto plain = dir.write("plain", "");
  err = sync_directory(plain);
  BOOST_REQUIRE(err);
  BOOST_TEST(contains(message_of(err), "Not a directory"), describe(err));
}
