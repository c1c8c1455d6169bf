#define BOOST_TEST_MODULE ota_bundle_test
#include <boost/test/unit_test.hpp>

#include "bundle.hpp"

#include "grove/errors.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <sodium.h>

#include <fstream>
#include <sstream>

using namespace grove::ota;
namespace fs = std::filesystem;

namespace {

std::string sha(const std::string& data) {
  unsigned char d[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(d, reinterpret_cast<const unsigned char*>(data.data()), data.size());
  return to_hex({reinterpret_cast<char*>(d), sizeof d});
}

struct entry {
  std::string name;
  std::string data;
  unsigned type = AE_IFREG;
};

// A tar in memory with exactly these entries, in this order.
std::string tar(const std::vector<entry>& entries) {
  std::string out(1 << 20, '\0');
  size_t used = 0;
  auto* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_open_memory(a, out.data(), out.size(), &used);
  for (auto& e : entries) {
    auto* ae = archive_entry_new();
    archive_entry_set_pathname(ae, e.name.c_str());
    archive_entry_set_filetype(ae, e.type);
    archive_entry_set_perm(ae, 0644);
    if (e.type == AE_IFLNK)
      archive_entry_set_symlink(ae, "/etc/passwd");
    archive_entry_set_size(ae, e.type == AE_IFREG ? static_cast<la_int64_t>(e.data.size()) : 0);
    archive_write_header(a, ae);
    if (e.type == AE_IFREG)
      archive_write_data(a, e.data.data(), e.data.size());
    archive_entry_free(ae);
  }
  archive_write_close(a);
  archive_write_free(a);
  out.resize(used);
  return out;
}

struct fixture {
  std::pair<std::string, std::string> keys = make_key_pair(); // secret, public
  fs::path dir = fs::temp_directory_path() / ("ota_bundle_test." + std::to_string(::getpid()));
  fixture() { fs::create_directories(dir); }
  ~fixture() { fs::remove_all(dir); }

  manifest make(std::vector<std::pair<std::string, std::string>> files) {
    manifest m;
    m.kind = "full";
    m.version = "1.1.0";
    m.groved_version = "1.1.0";
    for (auto& [path, data] : files)
      m.files.push_back({path, sha(data), data.size(), 0755});
    return m;
  }

  // A signed bundle of `m` with these file entries (names under files/).
  std::string bundle(const manifest& m, const std::vector<entry>& files,
                     const std::string* secret = nullptr) {
    auto text = to_json(m);
    auto sig = sign(text, secret ? *secret : keys.first);
    BOOST_REQUIRE(sig);
    std::vector<entry> all{{"manifest.json", text}, {"manifest.sig", *sig}};
    all.insert(all.end(), files.begin(), files.end());
    return tar(all);
  }
};

std::string error_text(const caf::error& err) {
  return err ? grove::describe(err) : std::string{"no error"};
}

template <class T>
std::string why(const caf::expected<T>& x) {
  return x ? std::string{"ok"} : error_text(x.error());
}

} // namespace

BOOST_AUTO_TEST_CASE(versions_order_and_syntax) {
  BOOST_TEST(compare_versions("1.2.3", "1.2.3") == 0);
  BOOST_TEST(compare_versions("1.2.3", "1.10.0") < 0);
  BOOST_TEST(compare_versions("2.0.0", "1.99.99") > 0);
  BOOST_TEST(compare_versions("1.0.0-rc.1", "1.0.0") < 0);
  BOOST_TEST(valid_version("1.0.0+build.5"));
  BOOST_TEST(!valid_version("1.0"));
  BOOST_TEST(!valid_version("01.0.0"));
  BOOST_TEST(!valid_version("1.0.0-"));
  BOOST_TEST(!valid_version("1.0.0-a/b"));
}

BOOST_AUTO_TEST_CASE(paths_that_escape_are_refused) {
  BOOST_TEST(safe_relative_path("bin/groved"));
  for (auto p : {"", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/", "a\\b", "a/."})
    BOOST_TEST(!safe_relative_path(p), p);
}

BOOST_AUTO_TEST_CASE(manifest_refusals_name_the_field) {
  auto ok = R"({"format":1,"kind":"full","version":"1.0.0","groved_version":"1.0.0",
    "files":[{"path":"bin/groved","sha256":")" + std::string(64, 'a') + R"(","size":3}]})";
  BOOST_TEST(static_cast<bool>(parse_manifest(ok)));
  auto expect = [](std::string text, std::string needle) {
    auto m = parse_manifest(text);
    BOOST_REQUIRE(!m);
    BOOST_TEST(error_text(m.error()).find(needle) != std::string::npos, error_text(m.error()));
  };
  auto with = [&](std::string from, std::string to) {
    auto t = ok;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  expect("[]", "not a JSON object");
  expect(with("\"format\":1", "\"format\":2"), "'format'");
  expect(with("bin/groved", "../groved"), "escapes the release tree");
  expect(with("bin/groved", "/bin/groved"), "escapes the release tree");
  expect(with(std::string(64, 'a'), std::string(64, 'A')), "sha256");
  expect(with("\"version\":\"1.0.0\"", "\"version\":\"1.0\""), "'version'");
  expect(with("\"kind\":\"full\"", "\"kind\":\"plugins\""), "only lib/grove/plugins");
  expect(with("\"size\":3", "\"size\":-3"), "'size'");
  auto twice = with("}]}", "},{\"path\":\"bin/groved\",\"sha256\":\"" + std::string(64, 'b')
                                 + "\",\"size\":1}]}");
  expect(twice, "listed twice");
  auto nested = with("}]}", "},{\"path\":\"bin/groved/x\",\"sha256\":\"" + std::string(64, 'b')
                                  + "\",\"size\":1}]}");
  expect(nested, "both a file and a directory");
}

BOOST_FIXTURE_TEST_CASE(a_good_bundle_stages_every_file, fixture) {
  auto m = make({{"bin/groved", "new groved"}, {"etc/grove/profile.yaml", "kernel: {}\n"}});
  auto data = bundle(m, {{"files/bin/groved", "new groved"},
                         {"files/etc/grove/profile.yaml", "kernel: {}\n"}});
  source src{{}, data};
  auto h = read_header(src);
  BOOST_REQUIRE(h);
  auto v = verify(*h, {keys.second});
  BOOST_REQUIRE_MESSAGE(v, why(v));
  BOOST_TEST(v->version == "1.1.0");
  auto err = stage(src, *v, dir / "rel");
  BOOST_REQUIRE_MESSAGE(!err, error_text(err));
  std::ifstream in{dir / "rel/bin/groved"};
  std::stringstream buf;
  buf << in.rdbuf();
  BOOST_TEST(buf.str() == "new groved");
  BOOST_TEST(((fs::status(dir / "rel/bin/groved").permissions() & fs::perms::owner_exec)
              != fs::perms::none));
}

BOOST_FIXTURE_TEST_CASE(unknown_key_and_bad_signature_are_told_apart, fixture) {
  auto m = make({{"bin/groved", "x"}});
  auto other = make_key_pair();
  auto data = bundle(m, {{"files/bin/groved", "x"}}, &other.first);
  auto h = read_header({{}, data});
  BOOST_REQUIRE(h);
  auto v = verify(*h, {keys.second});
  BOOST_REQUIRE(!v);
  BOOST_TEST(error_text(v.error()).find("unknown key") != std::string::npos);
  // Trusted key, but the manifest changed after signing.
  h->manifest_json.replace(h->manifest_json.find("1.1.0"), 5, "9.9.9");
  v = verify(*h, {other.second});
  BOOST_REQUIRE(!v);
  BOOST_TEST(error_text(v.error()).find("bad signature") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(staging_refusals_leave_nothing_behind, fixture) {
  auto m = make({{"bin/groved", "good"}});
  auto refuse = [&](std::vector<entry> files, std::string needle) {
    auto data = bundle(m, files);
    auto err = stage({{}, data}, m, dir / "rel");
    BOOST_REQUIRE(err);
    BOOST_TEST(error_text(err).find(needle) != std::string::npos, error_text(err));
    BOOST_TEST(!fs::exists(dir / "rel"));
  };
  refuse({{"files/bin/groved", "evil"}}, "wrong digest");
  refuse({{"files/bin/groved", "good and more"}}, "wrong digest");
  refuse({}, "not in the bundle");
  refuse({{"files/bin/groved", "good"}, {"files/../../etc/x", "x"}}, "outside the directory");
  refuse({{"files/bin/groved", "good"}, {"files/bin/extra", "x"}}, "not in the manifest");
  refuse({{"files/bin/groved", "", AE_IFLNK}}, "links are refused");
  refuse({{"files/bin/groved", "good"}, {"elsewhere", "x"}}, "under files/");
}

BOOST_FIXTURE_TEST_CASE(header_order_is_fixed, fixture) {
  auto h = read_header({{}, tar({{"manifest.sig", "{}"}, {"manifest.json", "{}"}})});
  BOOST_REQUIRE(!h);
  BOOST_TEST(error_text(h.error()).find("expected manifest.json") != std::string::npos);
  h = read_header({{}, std::string_view{"not a tar at all"}});
  BOOST_TEST(!h);
  h = read_header({{}, tar({{"manifest.json", std::string(max_manifest_bytes + 1, ' ')}})});
  BOOST_REQUIRE(!h);
  BOOST_TEST(error_text(h.error()).find("larger than") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(version_and_disk_checks, fixture) {
  auto m = make({{"bin/groved", "x"}});
  policy p;
  p.margin_bytes = 0;
  p.installed_version = "1.0.0";
  BOOST_TEST(!check(m, p, dir));
  p.installed_version = "1.1.0";
  BOOST_TEST(error_text(check(m, p, dir)).find("already installed") != std::string::npos);
  p.installed_version = "1.2.0";
  BOOST_TEST(error_text(check(m, p, dir)).find("downgrade not allowed") != std::string::npos);
  p.allow_downgrade = true;
  BOOST_TEST(!check(m, p, dir));
  p.allow_downgrade = false;
  m.allow_downgrade = true; // signed into the manifest
  BOOST_TEST(!check(m, p, dir));
  m.min_version = "1.0.5";
  p.installed_version = "1.0.1";
  BOOST_TEST(error_text(check(m, p, dir)).find("needs at least version 1.0.5") != std::string::npos);
  p.installed_version.clear();
  p.margin_bytes = uint64_t{1} << 62;
  BOOST_TEST(error_text(check(m, p, dir)).find("not enough disk") != std::string::npos);
}
