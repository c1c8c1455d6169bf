#include "resource_def.hpp"

#include <grp.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "grove/errors.hpp"

namespace grove::lr {

namespace {

namespace fs = std::filesystem;

/// Another plugin's resource data (Greengrass v1's ResourceDataContainer): accepted here
/// unread, so one group holds every kind.
constexpr const char* other_kinds[]
  = {"s3MachineLearningModelResourceData", "sageMakerMachineLearningModelResourceData",
     "secretsManagerSecretResourceData", "localMachineLearningModelResourceData"};

/// What the sandbox makes itself (function_runtime's README, "Sandbox"): a volume is
/// not mounted over or inside them.
constexpr const char* sandbox_roots[] = {"/proc", "/dev",  "/sys",   "/lambda", "/tmp",
                                         "/usr",  "/bin",  "/sbin",  "/lib",    "/lib32",
                                         "/lib64", "/libx32", "/etc", "/grove"};

config_map<group_owner_setting> owner_map() {
  return config_map<group_owner_setting>{}
    .key("autoAddGroupOwner", &group_owner_setting::auto_add_group_owner, false,
         "add the source's group owner to the function's groups")
    .key("groupOwner", &group_owner_setting::group_owner, "",
         "or add this named group (it must exist on the device); empty: none");
}

config_map<volume_data> volume_map() {
  return config_map<volume_data>{}
    .key_no_default("sourcePath", &volume_data::source_path, required,
                    "absolute path on the device, not under /sys, /dev or /var (/proc "
                    "is allowed)")
    .key_no_default("destinationPath", &volume_data::destination_path, required,
                    "absolute path inside the sandbox: not /, nor in what the sandbox "
                    "makes (/proc, /dev, /sys, /tmp, /lambda, /grove, /usr, /bin, /sbin, "
                    "/lib*, /etc)")
    .section("groupOwnerSetting", &volume_data::owner, owner_map(),
             "the group the function gets for it");
}

config_map<device_data> device_map() {
  return config_map<device_data>{}
    .key_no_default("sourcePath", &device_data::source_path, required,
                    "a character or block device under /dev (the sandbox shows it at the "
                    "same path)")
    .section("groupOwnerSetting", &device_data::owner, owner_map(),
             "the group the function gets for it");
}

/// An absolute path without `.` or `..` components nor a NUL, for `key`; "" when fine.
std::string path_defect(const std::string& p) {
  if (p.empty() || p.front() != '/')
    return "'" + p + "' is not an absolute path";
  if (p.find('\0') != std::string::npos)
    return "a path with a NUL byte";
  for (const auto& part : fs::path{p})
    if (part == "." || part == "..")
      return "'" + p + "' has a '.' or '..' component";
  return {};
}

caf::error key_error(std::string_view origin, const std::string& key, const std::string& what) {
  return make_error(errc::invalid_config, std::string{origin} + ": " + key + ": " + what);
}

std::string owner_defect(const group_owner_setting& o) {
  if (o.auto_add_group_owner && !o.group_owner.empty())
    return "autoAddGroupOwner: true and a groupOwner: give one or the other";
  return {};
}

/// A volume's source may not be the device's devices, kernel or variable state.
std::string volume_source_defect(const std::string& p) {
  for (const char* root : {"/sys", "/dev", "/var"})
    if (is_under(p, root))
      return "'" + p + "' is under " + root + ", which a volume may not expose (/proc is "
                                              "allowed; a device is a device resource)";
  if (fs::path{p}.lexically_normal() == "/")
    return "'/' holds /sys, /dev and /var, which a volume may not expose";
  return {};
}

// Without trailing slashes ("/" stays).
std::string trimmed(std::string p) {
  while (p.size() > 1 && p.back() == '/')
    p.pop_back();
  return p;
}

// The checks of a volume's paths (parse_resource and inline_resource): errors name
// `key` (prefixed) at `origin`.
caf::expected<resource_def> volume_def(const std::string& source, const std::string& destination,
                                       const group_owner_setting& owner,
                                       std::string_view origin, const std::string& key) {
  if (auto d = path_defect(source); !d.empty())
    return key_error(origin, key + "sourcePath", d);
  if (auto d = volume_source_defect(source); !d.empty())
    return key_error(origin, key + "sourcePath", d);
  if (auto d = path_defect(destination); !d.empty())
    return key_error(origin, key + "destinationPath", d);
  auto dest = fs::path{destination}.lexically_normal().string();
  if (dest == "/")
    return key_error(origin, key + "destinationPath", "'/' is the sandbox's root");
  for (const char* root : sandbox_roots)
    if (is_under(dest, root))
      return key_error(origin, key + "destinationPath",
                       "'" + destination + "' is under " + root
                         + ", which the sandbox makes itself");
  if (auto d = owner_defect(owner); !d.empty())
    return key_error(origin, key + "groupOwnerSetting", d);
  resource_def out;
  out.kind = resource_kind::volume;
  out.source_path = trimmed(fs::path{source}.lexically_normal().string());
  out.destination_path = trimmed(dest);
  out.owner = owner;
  return out;
}

// The checks of a device's path.
caf::expected<resource_def> device_def(const std::string& source,
                                       const group_owner_setting& owner,
                                       std::string_view origin, const std::string& key) {
  if (auto d = path_defect(source); !d.empty())
    return key_error(origin, key + "sourcePath", d);
  auto src = trimmed(fs::path{source}.lexically_normal().string());
  if (!is_under(src, "/dev") || src == "/dev")
    return key_error(origin, key + "sourcePath", "'" + source + "' is not a device under /dev");
  // The sandbox's own /dev entries: its devpts instance and ptmx link, its /dev/shm and
  // the links to its descriptors. A resource there would be mounted over them (and the
  // host's ptmx would open the host's ptys, not the sandbox's).
  for (const char* own : {"/dev/ptmx", "/dev/pts", "/dev/shm", "/dev/fd", "/dev/stdin",
                          "/dev/stdout", "/dev/stderr"})
    if (is_under(src, own))
      return key_error(origin, key + "sourcePath",
                       "'" + source + "' is under " + own
                         + ", which the sandbox makes itself (each sandbox has a devpts "
                           "instance of its own at /dev/pts, /dev/ptmx links to it, and "
                           "/dev/shm and the descriptor links are its own)");
  if (auto d = owner_defect(owner); !d.empty())
    return key_error(origin, key + "groupOwnerSetting", d);
  resource_def out;
  out.kind = resource_kind::device;
  out.source_path = src;
  out.destination_path = src;
  out.owner = owner;
  return out;
}

} // namespace

bool is_under(std::string_view path, std::string_view root) {
  auto p = fs::path{std::string{path}}.lexically_normal().string();
  while (p.size() > 1 && p.back() == '/')
    p.pop_back();
  std::string r{root};
  return p == r || (p.size() > r.size() && p.compare(0, r.size(), r) == 0 && p[r.size()] == '/');
}

static config_map<resource_config> volume_root() {
  return config_map<resource_config>{}.section(
    "localVolumeResourceData", &resource_config::volume, volume_map(),
    "a volume (LocalVolumeResourceData): a directory or file of the device");
}

static config_map<resource_config> device_root() {
  return config_map<resource_config>{}.section(
    "localDeviceResourceData", &resource_config::device, device_map(),
    "a device (LocalDeviceResourceData): a device node under /dev");
}

config_map<resource_config> resource_config::map() {
  return config_map<resource_config>{}
    .section("localVolumeResourceData", &resource_config::volume, volume_map(),
             "a volume (LocalVolumeResourceData): a directory or file of the device")
    .section("localDeviceResourceData", &resource_config::device, device_map(),
             "a device (LocalDeviceResourceData): a device node under /dev");
}

caf::expected<resource_def> parse_resource(std::string_view yaml, std::string_view origin) {
  static const auto volume_keys = volume_root();
  static const auto device_keys = device_root();
  // Whether each kind is present decides what the entry is, so the sections are
  // validated only when there (the map's sections otherwise default), and the other
  // plugins' kinds are `any` here.
  auto node = detail::validate(
    [] {
      std::vector<detail::config_field> fields;
      for (const char* k : other_kinds) {
        detail::config_field f;
        f.name = k;
        f.type = "any";
        f.doc = "another plugin's resource (ml_inference)";
        fields.push_back(f);
      }
      // The two kinds, as maps of any keys: their own keys are checked below, with the
      // config map, once we know which is there.
      for (const char* k : {"localVolumeResourceData", "localDeviceResourceData"}) {
        detail::config_field f;
        f.name = k;
        f.type = "any";
        fields.push_back(f);
      }
      return fields;
    }(),
    yaml, origin);
  if (!node)
    return node.error();
  auto volume = detail::child(*node, "localVolumeResourceData");
  auto device = detail::child(*node, "localDeviceResourceData");
  bool has_volume = !detail::absent(volume);
  bool has_device = !detail::absent(device);
  resource_def out;
  if (!has_volume && !has_device) {
    for (const char* k : other_kinds)
      if (!detail::absent(detail::child(*node, k)))
        return out; // kind other: not ours
    return make_error(errc::invalid_config,
                      std::string{origin} + ": a resource needs localVolumeResourceData "
                                            "or localDeviceResourceData");
  }
  if (has_volume && has_device)
    return make_error(errc::invalid_config,
                      std::string{origin} + ": localVolumeResourceData and "
                                            "localDeviceResourceData: give one of them");
  // Now the full map, with the lines and columns of the kind that is there.
  const auto& map = has_volume ? volume_keys : device_keys;
  auto full = detail::validate(map.fields(), yaml, origin);
  if (!full)
    return full.error();
  auto cfg = map.parse(*full);
  if (!cfg)
    return make_error(errc::invalid_config, std::string{origin} + ": " + describe(cfg.error()));
  if (has_volume)
    return volume_def(cfg->volume.source_path, cfg->volume.destination_path,
                      cfg->volume.owner, origin, "localVolumeResourceData.");
  // A device's path checks name the line and column of its sourcePath.
  // (Read from the text again: the validated node does not keep its marks.)
  auto at = std::string{origin};
  try {
    auto mark = YAML::Load(std::string{yaml})["localDeviceResourceData"]["sourcePath"].Mark();
    if (mark.line >= 0)
      at += ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
  } catch (const std::exception&) {
    // validated above; no position then
  }
  return device_def(cfg->device.source_path, cfg->device.owner, at, "localDeviceResourceData.");
}

caf::expected<resource_def> inline_resource(bool device, const std::string& source_path,
                                            const std::string& destination_path,
                                            bool add_group_owner, std::string_view origin) {
  group_owner_setting owner;
  owner.auto_add_group_owner = add_group_owner;
  if (device)
    return device_def(source_path, owner, origin, "");
  return volume_def(source_path, destination_path, owner, origin, "");
}

caf::expected<local_resources::Mount> resolve(const std::string& id, const resource_def& def,
                                              const std::string& permission) {
  auto fail = [&](const std::string& what) {
    return make_error(errc::invalid_config, "resource '" + id + "': " + what);
  };
  if (def.kind == resource_kind::other)
    return fail("not a local volume or device (another plugin's resource)");
  if (permission != "ro" && permission != "rw")
    return fail("permission '" + permission + "': ro or rw");
  // The source as it is now: a link must not lead a volume into /sys, /dev or /var, nor
  // a device out of /dev.
  std::error_code ec;
  auto real = fs::canonical(def.source_path, ec);
  if (ec)
    return fail("sourcePath " + def.source_path + ": " + ec.message());
  struct stat st {};
  if (::stat(real.c_str(), &st) != 0)
    return fail("sourcePath " + def.source_path + ": " + std::strerror(errno));
  local_resources::Mount m;
  m.set_resource_id(id);
  m.set_source_path(real.string());
  m.set_destination_path(def.destination_path);
  m.set_read_only(permission == "ro");
  if (def.kind == resource_kind::volume) {
    if (auto d = volume_source_defect(real.string()); !d.empty())
      return fail("sourcePath " + def.source_path + " leads to " + d);
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
      return fail("sourcePath " + def.source_path + " is not a directory or regular file");
    m.set_kind(local_resources::Mount::VOLUME);
  } else {
    if (!is_under(real.string(), "/dev"))
      return fail("sourcePath " + def.source_path + " leads to " + real.string()
                  + ", outside /dev");
    if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
      return fail("sourcePath " + def.source_path + " is not a character or block device");
    m.set_kind(local_resources::Mount::DEVICE);
    m.set_device_type(S_ISCHR(st.st_mode) ? "c" : "b");
    m.set_major(major(st.st_rdev));
    m.set_minor(minor(st.st_rdev));
  }
  if (def.owner.auto_add_group_owner) {
    m.set_add_group(true);
    m.set_group_id(st.st_gid);
  } else if (!def.owner.group_owner.empty()) {
    errno = 0;
    auto* gr = ::getgrnam(def.owner.group_owner.c_str());
    if (gr == nullptr)
      return fail("groupOwner '" + def.owner.group_owner + "': no such group on this device");
    m.set_add_group(true);
    m.set_group_id(gr->gr_gid);
  }
  return m;
}

std::string destination_clash(const local_resources::MountsReply& mounts) {
  const auto& ms = mounts.mounts();
  for (int i = 0; i < ms.size(); ++i)
    for (int j = i + 1; j < ms.size(); ++j) {
      const auto& a = ms[i];
      const auto& b = ms[j];
      bool same = a.destination_path() == b.destination_path();
      if (!same && !is_under(a.destination_path(), b.destination_path())
          && !is_under(b.destination_path(), a.destination_path()))
        continue;
      return "resources '" + a.resource_id() + "' (" + a.destination_path() + ") and '"
             + b.resource_id() + "' (" + b.destination_path() + ") "
             + (same ? "have the same destinationPath" : "are one inside the other")
             + ": a function may use only one of them";
    }
  return {};
}

} // namespace grove::lr
