#define BOOST_TEST_MODULE archive_test
#include <boost/test/unit_test.hpp>

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "grove/archive.hpp"
#include "grove/errors.hpp"
#include "test_util.hpp"

// grove::archive (libgrove_archive) against archives written by libarchive itself (for
// the entries no honest tool makes: `..`, absolute, devices, links out) and by Python's
// zipfile and tarfile (the good ones, as a user's tools make them).

using namespace grove;
namespace fs = std::filesystem;
using grove::test::temp_dir;

namespace {

// The error of a result expected to succeed, for the failure message ("" if none).
template <class T>
std::string why(const caf::expected<T>& r) {
  return r ? std::string{} : describe(r.error());
}

errc code_of(const caf::error& err) {
  return static_cast<errc>(err.code());
}

/// One entry for make(): a file (data), a directory (type AE_IFDIR), a symbolic link
/// (link = target), a hard link (hardlink = target) or a device/FIFO (type).
struct entry {
  entry(std::string n, std::string d, unsigned t = AE_IFREG, std::string l = {},
        std::string h = {})
    : name(std::move(n)), data(std::move(d)), type(t), link(std::move(l)),
      hardlink(std::move(h)) {
    // Nothing.
  }
  std::string name;
  std::string data;
  unsigned type;
  std::string link;
  std::string hardlink;
  unsigned perm = 0644;
};

archive::options with_links(archive::link_policy p) {
  archive::options o;
  o.links = p;
  return o;
}

archive::options with_limits(uint64_t entries, uint64_t total, uint64_t per_entry) {
  archive::options o;
  o.limits.max_entries = entries;
  o.limits.max_total_bytes = total;
  o.limits.max_entry_bytes = per_entry;
  return o;
}

constexpr uint64_t big_limit = 1ull << 40;

enum class kind { zip, tar_gz };

fs::path make(const fs::path& file, kind k, const std::vector<entry>& entries) {
  auto* a = archive_write_new();
  if (k == kind::zip) {
    archive_write_set_format_zip(a);
  } else {
    archive_write_set_format_pax_restricted(a);
    archive_write_add_filter_gzip(a);
  }
  BOOST_REQUIRE(archive_write_open_filename(a, file.c_str()) == ARCHIVE_OK);
  for (const auto& x : entries) {
    auto* e = archive_entry_new();
    archive_entry_set_pathname(e, x.name.c_str());
    archive_entry_set_filetype(e, x.type);
    archive_entry_set_perm(e, x.perm);
    if (!x.link.empty())
      archive_entry_set_symlink(e, x.link.c_str());
    if (!x.hardlink.empty())
      archive_entry_set_hardlink(e, x.hardlink.c_str());
    if (x.type == AE_IFREG && x.hardlink.empty())
      archive_entry_set_size(e, static_cast<la_int64_t>(x.data.size()));
    if (x.type == AE_IFCHR)
      archive_entry_set_rdev(e, makedev(1, 3));
    BOOST_REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
    if (!x.data.empty())
      archive_write_data(a, x.data.data(), x.data.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  return file;
}

std::string read_all(const fs::path& p) {
  std::ifstream in{p, std::ios::binary};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The error message of an extract expected to fail; checks that `dest` is gone.
std::string refused(const fs::path& archive, const fs::path& dest, archive::options o = {}) {
  auto r = archive::extract(archive, dest, o);
  BOOST_REQUIRE(!r);
  BOOST_TEST(!fs::exists(dest), dest << " left behind");
  return message_of(r.error());
}

void python(const std::string& script) {
  auto cmd = "python3 -c '" + script + "'";
  BOOST_REQUIRE_EQUAL(std::system(cmd.c_str()), 0);
}

} // namespace

BOOST_AUTO_TEST_CASE(safe_relative_path_normalises_and_refuses) {
  BOOST_TEST(*archive::safe_relative_path("a/./b//c/") == "a/b/c");
  BOOST_TEST(*archive::safe_relative_path("./model.onnx") == "model.onnx");
  BOOST_TEST(*archive::safe_relative_path("a..b/..c") == "a..b/..c");
  for (auto bad : {"", "/etc/passwd", "../x", "a/../../x", "a/..", "a\\..\\x", ".", "./",
                   "a\nb"}) {
    auto r = archive::safe_relative_path(bad);
    BOOST_TEST(!r, "'" << bad << "' accepted");
    if (!r)
      BOOST_TEST(code_of(r.error()) == errc::malformed);
  }
  BOOST_TEST(message_of(archive::safe_relative_path("../x").error()).find("zip-slip")
             != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_python_tar_gz_and_zip_unpack) {
  temp_dir t;
  auto dir = t.path().string();
  // Made by Python as a user would: a top "./" directory, a subdirectory, an executable
  // marked setuid (which must not survive), a file that is only readable by others.
  python("import io, tarfile, zipfile\n"
         "def add(tar, name, data, mode):\n"
         "    ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = mode\n"
         "    tar.addfile(ti, io.BytesIO(data))\n"
         "with tarfile.open(\"" + dir + "/good.tar.gz\", \"w:gz\") as tar:\n"
         "    d = tarfile.TarInfo(\"./\"); d.type = tarfile.DIRTYPE; d.mode = 0o755; tar.addfile(d)\n"
         "    d = tarfile.TarInfo(\"./bin\"); d.type = tarfile.DIRTYPE; d.mode = 0o755; tar.addfile(d)\n"
         "    add(tar, \"./bin/run\", b\"#!/bin/sh\\necho hi\\n\", 0o4755)\n"
         "    add(tar, \"./data/model.onnx\", b\"\\x00\\x01onnx\" * 1000, 0o004)\n"
         "with zipfile.ZipFile(\"" + dir + "/good.zip\", \"w\", zipfile.ZIP_DEFLATED) as z:\n"
         "    z.writestr(\"bin/run\", b\"#!/bin/sh\\necho hi\\n\")\n"
         "    z.writestr(\"data/model.onnx\", b\"\\x00\\x01onnx\" * 1000)\n");
  for (auto name : {"good.tar.gz", "good.zip"}) {
    BOOST_TEST_CONTEXT(name) {
      auto dest = t.path() / (std::string{name} + ".d");
      archive::options synced;
      synced.sync = true;
      auto r = archive::extract(t.path() / name, dest, synced);
      BOOST_REQUIRE_MESSAGE(r, why(r));
      BOOST_TEST(read_all(dest / "bin/run") == "#!/bin/sh\necho hi\n");
      std::string model;
      for (int i = 0; i < 1000; ++i)
        model += std::string{"\x00\x01onnx", 6};
      BOOST_TEST(read_all(dest / "data/model.onnx") == model);
      BOOST_TEST(r->bytes == model.size() + 18);
      auto perms = fs::status(dest / "bin/run").permissions();
      BOOST_TEST(((perms & fs::perms::set_uid) == fs::perms::none));
      BOOST_TEST(((perms & fs::perms::others_write) == fs::perms::none));
      BOOST_TEST(((fs::status(dest / "data/model.onnx").permissions() & fs::perms::owner_read)
                  != fs::perms::none));
      // The same bytes in memory: the files only, names normalised.
      auto files = archive::read_files(read_all(t.path() / name));
      BOOST_REQUIRE_MESSAGE(files, why(files));
      BOOST_REQUIRE_EQUAL(files->size(), 2u);
      BOOST_TEST((*files)[0].name == "bin/run");
      BOOST_TEST((*files)[1].name == "data/model.onnx");
      BOOST_TEST((*files)[1].data == model);
    }
  }
  // A ZIP-only reader refuses the tar.gz and says what it wanted.
  archive::options zip_only;
  zip_only.tar = false;
  auto r = archive::extract(t.path() / "good.tar.gz", t.path() / "zip-only", zip_only);
  BOOST_REQUIRE(!r);
  BOOST_TEST(message_of(r.error()).find("ZIP") != std::string::npos);
  BOOST_TEST(!fs::exists(t.path() / "zip-only"));
}

BOOST_AUTO_TEST_CASE(zip_slip_and_absolute_entries_are_refused_and_nothing_is_left) {
  temp_dir t;
  for (auto k : {kind::zip, kind::tar_gz}) {
    auto slip = make(t.path() / "slip", k, {{"ok.txt", "fine"}, {"../../escaped.txt", "evil"}});
    auto msg = refused(slip, t.path() / "in" / "slip");
    BOOST_TEST(msg.find("entry '../../escaped.txt'") != std::string::npos, msg);
    BOOST_TEST(msg.find("zip-slip") != std::string::npos, msg);
    BOOST_TEST(!fs::exists(t.path() / "escaped.txt"));
    auto abs_target = t.path() / "abs-escaped.txt";
    auto abs = make(t.path() / "abs", k, {{abs_target.string(), "evil"}});
    msg = refused(abs, t.path() / "in" / "abs");
    BOOST_TEST(msg.find("absolute") != std::string::npos, msg);
    BOOST_TEST(!fs::exists(abs_target));
    auto bs = make(t.path() / "bs", k, {{"..\\..\\win.txt", "evil"}});
    msg = refused(bs, t.path() / "in" / "bs");
    // libarchive's ZIP reader turns a Windows name's backslashes into '/' itself.
    BOOST_TEST(msg.find("zip-slip") != std::string::npos, msg);
    // The same refusals in memory.
    auto m = archive::read_files(read_all(slip));
    BOOST_REQUIRE(!m);
    BOOST_TEST(message_of(m.error()).find("zip-slip") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(links_are_refused_or_kept_inside) {
  temp_dir t;
  for (auto k : {kind::zip, kind::tar_gz}) {
    // Out through a link, then a file written through it.
    auto out = make(t.path() / "out", k,
                    {{"l", "", AE_IFLNK, t.path().string()}, {"l/escaped.txt", "evil"}});
    auto msg = refused(out, t.path() / "in" / "out");
    BOOST_TEST(msg.find("entry 'l': a symbolic link") != std::string::npos, msg);
    BOOST_TEST(msg.find("links are refused") != std::string::npos, msg);
    msg = refused(out, t.path() / "in" / "out", with_links(archive::link_policy::inside));
    BOOST_TEST(msg.find("leaves the directory") != std::string::npos, msg);
    BOOST_TEST(!fs::exists(t.path() / "escaped.txt"));
    for (auto target : {"..", "../x", "a/../../x", "sub/../.."}) {
      auto f = make(t.path() / "rel", k, {{"top", "", AE_IFLNK, target}});
      msg = refused(f, t.path() / "in" / "rel", with_links(archive::link_policy::inside));
      BOOST_TEST(msg.find("leaves the directory") != std::string::npos, target << ": " << msg);
    }
    // Inside: a relative link at depth one going up once, and a hard link; both refused
    // by default, kept with link_policy::inside.
    auto in = make(t.path() / "in.a", k,
                   {{"lib/libx.so.1", "elf"},
                    {"lib/libx.so", "", AE_IFLNK, "libx.so.1"},
                    {"bin/x", "", AE_IFLNK, "../lib/libx.so.1"},
                    {"lib/copy", "", AE_IFREG, "", "lib/libx.so.1"}});
    msg = refused(in, t.path() / "in" / "links");
    BOOST_TEST(msg.find("links are refused") != std::string::npos, msg);
    auto dest = t.path() / "in" / "links";
    auto r = archive::extract(in, dest, with_links(archive::link_policy::inside));
    BOOST_REQUIRE_MESSAGE(r, why(r));
    BOOST_TEST(fs::is_symlink(dest / "lib/libx.so"));
    BOOST_TEST(read_all(dest / "bin/x") == "elf");
    if (k == kind::tar_gz) // ZIP has no hard links
      BOOST_TEST(read_all(dest / "lib/copy") == "elf");
    fs::remove_all(dest);
    // A hard link to a path outside.
    if (k == kind::tar_gz) {
      auto hl = make(t.path() / "hl", k, {{"h", "", AE_IFREG, "", "../../etc/passwd"}});
      msg = refused(hl, t.path() / "in" / "hl", with_links(archive::link_policy::inside));
      BOOST_TEST(msg.find("a hard link") != std::string::npos, msg);
    }
  }
}

BOOST_AUTO_TEST_CASE(devices_and_fifos_are_refused) {
  temp_dir t;
  auto dev = make(t.path() / "dev.tar.gz", kind::tar_gz, {{"ok", "x"}, {"null", "", AE_IFCHR}});
  auto msg = refused(dev, t.path() / "dev", with_links(archive::link_policy::inside));
  BOOST_TEST(msg.find("entry 'null': a character device") != std::string::npos, msg);
  auto fifo = make(t.path() / "fifo.tar.gz", kind::tar_gz, {{"p", "", AE_IFIFO}});
  msg = refused(fifo, t.path() / "fifo");
  BOOST_TEST(msg.find("FIFO") != std::string::npos, msg);
  auto blk = make(t.path() / "blk.tar.gz", kind::tar_gz, {{"sda", "", AE_IFBLK}});
  auto m = archive::read_files(read_all(blk));
  BOOST_REQUIRE(!m);
  BOOST_TEST(message_of(m.error()).find("block device") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(limits_are_kept) {
  temp_dir t;
  std::string big(100000, 'z'); // compresses to little: a small zip bomb
  for (auto k : {kind::zip, kind::tar_gz}) {
    auto f = make(t.path() / "big", k, {{"a", big}, {"b", big}});
    BOOST_TEST(fs::file_size(f) < 10000u);
    auto r = archive::extract(f, t.path() / "total", with_limits(big_limit, 150000, big_limit));
    BOOST_REQUIRE(!r);
    BOOST_TEST(code_of(r.error()) == errc::too_large);
    BOOST_TEST(message_of(r.error()).find("max_total_bytes") != std::string::npos);
    BOOST_TEST(!fs::exists(t.path() / "total"));
    r = archive::extract(f, t.path() / "entry", with_limits(big_limit, big_limit, 99999));
    BOOST_REQUIRE(!r);
    BOOST_TEST(code_of(r.error()) == errc::too_large);
    BOOST_TEST(message_of(r.error()).find("entry 'a'") != std::string::npos,
               message_of(r.error()));
    r = archive::extract(f, t.path() / "count", with_limits(1, big_limit, big_limit));
    BOOST_REQUIRE(!r);
    BOOST_TEST(message_of(r.error()).find("max_entries") != std::string::npos);
    auto m = archive::read_files(read_all(f), with_limits(big_limit, 150000, big_limit));
    BOOST_REQUIRE(!m);
    BOOST_TEST(code_of(m.error()) == errc::too_large);
    // Exactly at the limits: accepted.
    r = archive::extract(f, t.path() / "fits",
                         with_limits(2, 200000, 100000));
    BOOST_REQUIRE_MESSAGE(r, why(r));
    BOOST_TEST(r->bytes == 200000u);
    fs::remove_all(t.path() / "fits");
  }
}

BOOST_AUTO_TEST_CASE(garbage_and_a_busy_directory_are_refused) {
  temp_dir t;
  auto junk = t.write("junk.zip", "this is no archive at all");
  auto msg = refused(junk, t.path() / "junk");
  BOOST_TEST(msg.find("archive") != std::string::npos, msg);
  BOOST_TEST(!archive::read_files("this is no archive at all"));
  // A truncated tar.gz: an error, nothing left.
  auto good = make(t.path() / "g.tar.gz", kind::tar_gz, {{"a", std::string(50000, 'q')}});
  auto bytes = read_all(good);
  auto cut = t.write("cut.tar.gz", bytes.substr(0, bytes.size() / 2));
  refused(cut, t.path() / "cut");
  // Never into a directory that already holds something (it would be removed on error).
  t.write("busy/keep", "mine");
  auto r = archive::extract(good, t.path() / "busy");
  BOOST_REQUIRE(!r);
  BOOST_TEST(code_of(r.error()) == errc::invalid_state);
  BOOST_TEST(read_all(t.path() / "busy/keep") == "mine");
}

BOOST_AUTO_TEST_CASE(a_reader_streams_entry_by_entry_with_the_same_refusals) {
  temp_dir t;
  for (auto k : {kind::zip, kind::tar_gz}) {
    auto f = make(t.path() / "r", k,
                  {{"./", "", AE_IFDIR},
                   {"d", "", AE_IFDIR},
                   {"d/./a", std::string(70000, 'a')},
                   {"lib/libx.so", "", AE_IFLNK, "../d/a"},
                   {"b", "bee"}});
    auto bytes = read_all(f);
    auto r = archive::reader::open_memory(bytes, with_links(archive::link_policy::inside));
    BOOST_REQUIRE_MESSAGE(r, why(r));
    std::vector<std::string> seen;
    std::string a;
    for (;;) {
      auto e = r->next();
      BOOST_REQUIRE_MESSAGE(e, why(e));
      if (*e == nullptr)
        break;
      seen.push_back((*e)->name);
      if ((*e)->kind == archive::entry_kind::symlink)
        BOOST_TEST((*e)->link == "../d/a");
      // Only the first entry is read (in small pieces); the others are skipped.
      if ((*e)->name != "d/a")
        continue;
      BOOST_TEST(((*e)->kind == archive::entry_kind::file));
      char buf[1000];
      for (;;) {
        auto n = r->read(buf, sizeof buf);
        BOOST_REQUIRE_MESSAGE(n, why(n));
        if (*n == 0)
          break;
        a.append(buf, *n);
      }
    }
    BOOST_TEST(a == std::string(70000, 'a'));
    BOOST_TEST((seen == std::vector<std::string>{"d", "d/a", "lib/libx.so", "b"}));
    // Past the end: still the end.
    auto again = r->next();
    BOOST_TEST((again && *again == nullptr));
    // The default policy refuses the link with extract()'s words, and stays failed.
    r = archive::reader::open_memory(bytes);
    BOOST_REQUIRE(r);
    caf::error err;
    for (;;) {
      auto e = r->next();
      if (!e) {
        err = e.error();
        break;
      }
      BOOST_REQUIRE(*e != nullptr);
    }
    BOOST_TEST(message_of(err).find("entry 'lib/libx.so': a symbolic link") != std::string::npos,
               message_of(err));
    BOOST_TEST(!r->next());
    char c;
    BOOST_TEST(!r->read(&c, 1));
  }
  // Limits count what is read; a zip-slip name and a device are refused by next().
  auto big = make(t.path() / "big.tar.gz", kind::tar_gz, {{"a", std::string(100000, 'z')}});
  auto r = archive::reader::open(big, with_limits(big_limit, big_limit, 4096));
  BOOST_REQUIRE(r);
  auto e = r->next();
  BOOST_REQUIRE(!e); // the declared size is over the limit already
  BOOST_TEST(code_of(e.error()) == errc::too_large);
  auto two = make(t.path() / "two.tar.gz", kind::tar_gz,
                  {{"a", std::string(100000, 'z')}, {"b", std::string(100000, 'y')}});
  r = archive::reader::open(two, with_limits(big_limit, 150000, big_limit));
  BOOST_REQUIRE(r);
  caf::error over;
  uint64_t got = 0;
  for (int i = 0; i < 2 && !over; ++i) {
    auto x = r->next();
    BOOST_REQUIRE_MESSAGE(x, why(x));
    char buf[4096];
    for (;;) {
      auto n = r->read(buf, sizeof buf);
      if (!n) {
        over = n.error();
        break;
      }
      if (*n == 0)
        break;
      got += *n;
    }
  }
  BOOST_TEST(code_of(over) == errc::too_large);
  BOOST_TEST(message_of(over).find("max_total_bytes") != std::string::npos, message_of(over));
  BOOST_TEST(got <= 150000u);
  for (auto bad : {std::vector<entry>{{"../x", "x"}}, std::vector<entry>{{"null", "", AE_IFCHR}}}) {
    auto f = make(t.path() / "bad.tar.gz", kind::tar_gz, bad);
    auto rd = archive::reader::open(f);
    BOOST_REQUIRE(rd);
    auto n = rd->next();
    BOOST_REQUIRE(!n);
    BOOST_TEST(code_of(n.error()) == errc::malformed);
  }
  auto junk = archive::reader::open(t.write("junk", "no archive"));
  BOOST_TEST((!junk || !junk->next()));
}
