// local_resources' resource parser (errors with file:line, the paths Greengrass refuses)
// and resolver (real files, real device nodes made with mknod), and that README.md's
// table is the generated one.
#define BOOST_TEST_MODULE local_resources
#include <boost/test/unit_test.hpp>

#include <grp.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "resource_def.hpp"
#include "test_support.hpp"

namespace lr = grove::lr;
namespace fs = std::filesystem;

namespace {

std::string err(const caf::expected<lr::resource_def>& r) {
  return r ? std::string{"(accepted)"} : grove::describe(r.error());
}

/// The error of a failed `x`, "" for a value (the message is built even when the check
/// holds).
template <class T>
std::string why(const caf::expected<T>& x) {
  return x ? std::string{} : grove::describe(x.error());
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

bool as_root() {
  return ::geteuid() == 0;
}

} // namespace

BOOST_AUTO_TEST_CASE(a_volume_and_a_device_are_read) {
  auto v = lr::parse_resource("localVolumeResourceData:\n  sourcePath: /srv/data/\n"
                              "  destinationPath: /data\n"
                              "  groupOwnerSetting: {autoAddGroupOwner: true}\n",
                              "g.yaml: resources[data].config");
  BOOST_REQUIRE_MESSAGE(v, err(v));
  BOOST_TEST((v->kind == lr::resource_kind::volume));
  BOOST_TEST(v->source_path == "/srv/data");
  BOOST_TEST(v->destination_path == "/data");
  BOOST_TEST(v->owner.auto_add_group_owner);
  auto d = lr::parse_resource(
    "localDeviceResourceData: {sourcePath: /dev/ttyUSB0, groupOwnerSetting: {groupOwner: dialout}}",
    "o");
  BOOST_REQUIRE_MESSAGE(d, err(d));
  BOOST_TEST((d->kind == lr::resource_kind::device));
  BOOST_TEST(d->destination_path == "/dev/ttyUSB0");
  BOOST_TEST(d->owner.group_owner == "dialout");
  // /proc is allowed for volumes (as in Greengrass).
  BOOST_TEST(err(lr::parse_resource(
               "localVolumeResourceData: {sourcePath: /proc/cpuinfo, destinationPath: /cpuinfo}",
               "o"))
             == "(accepted)");
  // Another plugin's resource is left alone.
  auto ml = lr::parse_resource("s3MachineLearningModelResourceData: {s3Uri: x}", "o");
  BOOST_REQUIRE_MESSAGE(ml, err(ml));
  BOOST_TEST((ml->kind == lr::resource_kind::other));
  // ml_inference's own kind, too.
  auto local_ml = lr::parse_resource(
    "localMachineLearningModelResourceData: {path: /m.onnx, sha256: x}", "o");
  BOOST_REQUIRE_MESSAGE(local_ml, err(local_ml));
  BOOST_TEST((local_ml->kind == lr::resource_kind::other));
}

BOOST_AUTO_TEST_CASE(refusals_name_the_file_line_and_key) {
  auto origin = std::string{"g.yaml: resources[x].config"};
  // A missing key, with its line.
  auto r = lr::parse_resource("localVolumeResourceData:\n  sourcePath: /srv\n", origin);
  BOOST_TEST(contains(err(r), origin + ":"), err(r));
  BOOST_TEST(contains(err(r), "destinationPath"), err(r));
  // An unknown key, with its line and column.
  r = lr::parse_resource("localDeviceResourceData:\n  sourcePath: /dev/x\n  colour: red\n",
                         origin);
  BOOST_TEST(contains(err(r), origin + ":3:"), err(r));
  BOOST_TEST(contains(err(r), "colour"), err(r));
  // Wrong types.
  r = lr::parse_resource("localDeviceResourceData:\n  sourcePath: /dev/x\n"
                         "  groupOwnerSetting: {autoAddGroupOwner: maybe}\n",
                         origin);
  BOOST_TEST(contains(err(r), "autoAddGroupOwner"), err(r));
  BOOST_TEST(contains(err(r), origin + ":3:"), err(r));
  // Neither kind, both kinds, not a map.
  BOOST_TEST(contains(err(lr::parse_resource("{}", origin)), "localVolumeResourceData or"));
  BOOST_TEST(contains(err(lr::parse_resource("", origin)), "localVolumeResourceData or"));
  BOOST_TEST(contains(err(lr::parse_resource(
                        "localVolumeResourceData: {sourcePath: /a, destinationPath: /b}\n"
                        "localDeviceResourceData: {sourcePath: /dev/x}\n",
                        origin)),
                      "give one of them"));
  BOOST_TEST(err(lr::parse_resource("[1, 2]", origin)) != "(accepted)");
  BOOST_TEST(err(lr::parse_resource("localVolumeResourceData: [", origin)) != "(accepted)");
  // Both owner settings.
  r = lr::parse_resource("localDeviceResourceData: {sourcePath: /dev/x, groupOwnerSetting: "
                         "{autoAddGroupOwner: true, groupOwner: dialout}}",
                         origin);
  BOOST_TEST(contains(err(r), "groupOwnerSetting: autoAddGroupOwner: true and a groupOwner"),
             err(r));
}

BOOST_AUTO_TEST_CASE(paths_greengrass_refuses_are_refused) {
  auto vol = [](const std::string& src, const std::string& dst) {
    return err(lr::parse_resource("localVolumeResourceData: {sourcePath: '" + src
                                    + "', destinationPath: '" + dst + "'}",
                                  "o"));
  };
  for (const char* src : {"/sys", "/sys/class", "/dev", "/dev/sda", "/var", "/var/lib/x",
                          "/var/", "//var/x", "/"})
    BOOST_TEST(contains(vol(src, "/data"), "localVolumeResourceData.sourcePath"), src);
  BOOST_TEST(vol("/variable", "/data") == "(accepted)");
  BOOST_TEST(contains(vol("data", "/data"), "not an absolute path"));
  BOOST_TEST(contains(vol("/srv/../var/x", "/data"), "'..' component"));
  for (const char* dst : {"/", "/proc/x", "/dev/x", "/sys", "/lambda", "/lambda/x", "/tmp/x",
                          "/usr/share/x", "/etc", "rel"})
    BOOST_TEST(contains(vol("/srv", dst), "localVolumeResourceData.destinationPath"), dst);
  auto dev = [](const std::string& src) {
    return err(lr::parse_resource("localDeviceResourceData: {sourcePath: '" + src + "'}", "o"));
  };
  for (const char* src : {"/dev", "/dev/", "/tmp/x", "/devx", "dev/x", "/dev/../etc/passwd"})
    BOOST_TEST(contains(dev(src), "localDeviceResourceData.sourcePath"), src);
}

BOOST_AUTO_TEST_CASE(a_device_where_the_sandbox_makes_its_own_dev_entries_is_refused) {
  // Each sandbox mounts a devpts instance of its own at /dev/pts and links /dev/ptmx to
  // pts/ptmx: a device resource there would be mounted over them.
  auto dev = [](const std::string& src) {
    return err(lr::parse_resource("localDeviceResourceData:\n  groupOwnerSetting: "
                                  "{autoAddGroupOwner: true}\n  sourcePath: '" + src + "'\n",
                                  "g.yaml: resources[tty].config"));
  };
  for (const char* src : {"/dev/ptmx", "/dev/pts", "/dev/pts/0", "/dev/pts/ptmx", "/dev/pts/",
                          "/dev/shm/x", "/dev/fd", "/dev/stdout"}) {
    auto e = dev(src);
    BOOST_TEST(contains(e, "g.yaml: resources[tty].config:3:15: localDeviceResourceData."
                           "sourcePath: '" + std::string{src} + "' is under /dev/"),
               src << ": " << e);
    BOOST_TEST(contains(e, "which the sandbox makes itself"), e);
  }
  // Their neighbours are devices like any other.
  for (const char* src : {"/dev/ptmx0", "/dev/ptsx", "/dev/ttyUSB0", "/dev/tty"})
    BOOST_TEST(dev(src) == "(accepted)", src);
  // A function's own devices[] get the same check.
  auto own = lr::inline_resource(true, "/dev/pts/3", "/dev/pts/3", false,
                                 "containerParams.devices[0]");
  BOOST_TEST(contains(err(own), "containerParams.devices[0]: sourcePath: '/dev/pts/3' is under "
                                "/dev/pts"),
             err(own));
}

BOOST_AUTO_TEST_CASE(a_functions_own_volumes_and_devices_get_the_same_checks) {
  // containerParams.volumes[] / devices[] (function_runtime sends them on lr-1).
  auto vol = [](const std::string& src, const std::string& dst) {
    return err(lr::inline_resource(false, src, dst, false, "containerParams.volumes[1]"));
  };
  BOOST_TEST(vol("/srv/data/", "/data/") == "(accepted)");
  auto ok = lr::inline_resource(false, "/srv/data/", "/data/", true, "v");
  BOOST_REQUIRE(ok);
  BOOST_TEST(ok->source_path == "/srv/data");
  BOOST_TEST(ok->destination_path == "/data");
  BOOST_TEST(ok->owner.auto_add_group_owner);
  for (const char* src : {"/sys/kernel", "/dev/sda", "/var/lib", "/", "rel"})
    BOOST_TEST(contains(vol(src, "/data"), "containerParams.volumes[1]: sourcePath: "), src);
  for (const char* dst : {"/", "/proc/x", "/lambda", "/tmp/x"})
    BOOST_TEST(contains(vol("/srv", dst), "containerParams.volumes[1]: destinationPath: "), dst);
  auto dev = [](const std::string& path) {
    return err(lr::inline_resource(true, path, path, false, "containerParams.devices[0]"));
  };
  BOOST_TEST(dev("/dev/ttyS0") == "(accepted)");
  for (const char* path : {"/dev", "/tmp/x", "/dev/../etc/passwd"})
    BOOST_TEST(contains(dev(path), "containerParams.devices[0]: sourcePath: "), path);
}

BOOST_AUTO_TEST_CASE(resolving_checks_what_is_on_the_device) {
  grove::test::temp_dir dir;
  auto data = dir.path() / "data";
  fs::create_directories(data);
  auto v = lr::parse_resource("localVolumeResourceData: {sourcePath: " + data.string()
                                + ", destinationPath: /data, groupOwnerSetting: "
                                  "{autoAddGroupOwner: true}}",
                              "o");
  BOOST_REQUIRE_MESSAGE(v, err(v));
  auto m = lr::resolve("data", *v, "ro");
  BOOST_REQUIRE_MESSAGE(m, why(m));
  BOOST_TEST(m->source_path() == fs::canonical(data).string());
  BOOST_TEST(m->read_only());
  BOOST_TEST(m->add_group());
  struct stat st {};
  BOOST_REQUIRE(::stat(data.c_str(), &st) == 0);
  BOOST_TEST(m->group_id() == st.st_gid);
  BOOST_TEST(!lr::resolve("data", *v, "rw")->read_only());
  BOOST_TEST(!static_cast<bool>(lr::resolve("data", *v, "wx")));
  // A link that leads into /var is refused when resolved.
  fs::create_directory_symlink("/var/lib", dir.path() / "sneaky");
  auto s = lr::parse_resource("localVolumeResourceData: {sourcePath: "
                                + (dir.path() / "sneaky").string() + ", destinationPath: /x}",
                              "o");
  BOOST_REQUIRE(s);
  auto sm = lr::resolve("sneaky", *s, "ro");
  BOOST_TEST(!sm);
  if (!sm)
    BOOST_TEST(contains(grove::describe(sm.error()), "under /var"), grove::describe(sm.error()));
  // A missing source names the resource.
  auto gone = lr::parse_resource(
    "localVolumeResourceData: {sourcePath: /no/such/dir, destinationPath: /x}", "o");
  BOOST_REQUIRE(gone);
  auto gm = lr::resolve("gone", *gone, "ro");
  BOOST_TEST(!gm);
  if (!gm)
    BOOST_TEST(contains(grove::describe(gm.error()), "resource 'gone': sourcePath"));
  // A named group that does not exist.
  auto ng = lr::parse_resource("localVolumeResourceData: {sourcePath: " + data.string()
                                 + ", destinationPath: /d, groupOwnerSetting: "
                                   "{groupOwner: no-such-group-grove}}",
                               "o");
  BOOST_REQUIRE(ng);
  auto ngm = lr::resolve("ng", *ng, "ro");
  BOOST_TEST(!ngm);
  if (!ngm)
    BOOST_TEST(contains(grove::describe(ngm.error()), "no such group"));
}

BOOST_AUTO_TEST_CASE(a_device_resolves_to_its_numbers, *boost::unit_test::precondition(
                                                          [](auto) { return as_root(); })) {
  // A test device with /dev/null's numbers, under /dev as a device resource must be.
  auto path = "/dev/grove-lr-unit-" + std::to_string(::getpid());
  BOOST_REQUIRE(::mknod(path.c_str(), S_IFCHR | 0660, ::makedev(1, 3)) == 0);
  auto d = lr::parse_resource("localDeviceResourceData: {sourcePath: " + path
                                + ", groupOwnerSetting: {groupOwner: root}}",
                              "o");
  BOOST_REQUIRE(d);
  auto m = lr::resolve("dev", *d, "rw");
  ::unlink(path.c_str());
  BOOST_REQUIRE_MESSAGE(m, why(m));
  BOOST_TEST(m->device_type() == "c");
  BOOST_TEST(m->major() == 1u);
  BOOST_TEST(m->minor() == 3u);
  BOOST_TEST(m->destination_path() == path);
  BOOST_TEST(m->add_group());
  BOOST_TEST(m->group_id() == 0u);
  // A regular file under /dev is not a device.
  auto file = "/dev/grove-lr-unit-file-" + std::to_string(::getpid());
  grove::test::temp_dir keep;
  { std::ofstream{file} << "x"; }
  auto f = lr::parse_resource("localDeviceResourceData: {sourcePath: " + file + "}", "o");
  BOOST_REQUIRE(f);
  auto fm = lr::resolve("file", *f, "ro");
  ::unlink(file.c_str());
  BOOST_TEST(!fm);
  if (!fm)
    BOOST_TEST(contains(grove::describe(fm.error()), "not a character or block device"));
}

BOOST_AUTO_TEST_CASE(one_functions_mounts_may_not_meet) {
  auto reply = [](std::vector<std::pair<std::string, std::string>> mounts) {
    grove::local_resources::MountsReply r;
    for (auto& [id, dest] : mounts) {
      auto* m = r.add_mounts();
      m->set_resource_id(id);
      m->set_destination_path(dest);
    }
    return r;
  };
  BOOST_TEST(lr::destination_clash(reply({{"a", "/data"}, {"b", "/logs"}, {"c", "/dev/x"}}))
               .empty());
  // Sharing a prefix of characters only is no clash.
  BOOST_TEST(lr::destination_clash(reply({{"a", "/data"}, {"b", "/data2"}})).empty());
  auto same = lr::destination_clash(reply({{"a", "/data"}, {"b", "/logs"}, {"c", "/data"}}));
  BOOST_TEST(contains(same, "resources 'a' (/data) and 'c' (/data) have the same "
                            "destinationPath"),
             same);
  auto nested = lr::destination_clash(reply({{"a", "/data"}, {"b", "/data/x"}}));
  BOOST_TEST(contains(nested, "resources 'a' (/data) and 'b' (/data/x) are one inside the other"),
             nested);
  BOOST_TEST(!lr::destination_clash(reply({{"b", "/data/x"}, {"a", "/data"}})).empty());
}

BOOST_AUTO_TEST_CASE(readme_table_is_the_generated_one) {
  auto generated = lr::resource_config::map().markdown();
  BOOST_TEST(grove::test::readme_config_table(LR_README) == generated,
             "README.md's table is stale; replace the lines between the config-table "
             "markers with:\n"
               << generated);
}
