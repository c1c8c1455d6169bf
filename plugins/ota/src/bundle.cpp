#include "bundle.hpp"

#include "grove/archive.hpp"
#include "grove/errors.hpp"
#include "grove/file.hpp"

#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sodium.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>
#include <memory>
#include <set>

namespace grove::ota {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

caf::error bad(std::string msg) {
  return make_error(errc::malformed, "ota bundle: " + std::move(msg));
}

caf::error refuse(std::string msg) {
  return make_error(errc::not_authorized, "ota bundle: " + std::move(msg));
}

caf::error sys(const std::string& what) {
  return make_error(errc::system_error, what + ": " + std::strerror(errno));
}

bool init_sodium() {
  static const bool ok = sodium_init() >= 0;
  return ok;
}

// grove::archive's refusal, as the bundle's: same code, "ota bundle: " in front.
caf::error from_archive(const caf::error& err) {
  return make_error(static_cast<errc>(err.code()), "ota bundle: " + message_of(err));
}

// The bundle as grove::archive reads it: plain tar or tar.gz (the bundle tool writes
// tar; a gzip'd copy is just as good), no links, devices or paths that leave the tree.
// The manifest bounds every file's size (stage() checks each as it streams), so the
// archive's byte limits are not the bound here.
caf::expected<archive::reader> open_bundle(const source& src) {
  archive::options opts;
  opts.zip = false;
  opts.limits.max_entries = max_files * 4 + 2; // files, their directories, the header
  opts.limits.max_entry_bytes = std::numeric_limits<uint64_t>::max() / 2;
  opts.limits.max_total_bytes = std::numeric_limits<uint64_t>::max() / 2;
  auto r = src.file.empty() ? archive::reader::open_memory(src.memory, opts)
                            : archive::reader::open(src.file, opts);
  if (!r)
    return from_archive(r.error());
  return r;
}

caf::expected<std::string> read_small(archive::reader& r, const archive::entry& e, size_t limit,
                                      const char* what) {
  if (e.kind != archive::entry_kind::file)
    return bad(std::string{what} + " is not a regular file");
  if (e.size && *e.size > limit)
    return bad(std::string{what} + " is larger than " + std::to_string(limit) + " bytes");
  std::string out;
  char buf[8192];
  for (;;) {
    auto n = r.read(buf, sizeof buf);
    if (!n)
      return from_archive(n.error());
    if (*n == 0)
      break;
    out.append(buf, *n);
    if (out.size() > limit)
      return bad(std::string{what} + " is larger than " + std::to_string(limit) + " bytes");
  }
  return out;
}

bool is_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// One version component: digits, no leading zero (semver).
bool numeric(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })
         && (s.size() == 1 || s[0] != '0') && s.size() <= 9;
}

struct parsed_version {
  long part[3] = {0, 0, 0};
  std::string pre;
};

bool parse_version(std::string_view v, parsed_version& out) {
  if (v.empty() || v.size() > 128)
    return false;
  // Versions name release directories: only semver's characters.
  if (!std::all_of(v.begin(), v.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
               || c == '.' || c == '-' || c == '+';
      }))
    return false;
  if (auto plus = v.find('+'); plus != std::string_view::npos)
    v = v.substr(0, plus);
  if (auto dash = v.find('-'); dash != std::string_view::npos) {
    out.pre = std::string{v.substr(dash + 1)};
    if (out.pre.empty())
      return false;
    v = v.substr(0, dash);
  }
  for (int i = 0; i < 3; ++i) {
    auto dot = v.find('.');
    auto part = i < 2 ? v.substr(0, dot) : v;
    if (i < 2 && dot == std::string_view::npos)
      return false;
    if (!numeric(part))
      return false;
    std::from_chars(part.data(), part.data() + part.size(), out.part[i]);
    if (i < 2)
      v = v.substr(dot + 1);
  }
  return true;
}

} // namespace

uint64_t manifest::total_size() const {
  uint64_t sum = 0;
  for (auto& f : files)
    sum += f.size;
  return sum;
}

bool valid_version(std::string_view v) {
  parsed_version pv;
  return parse_version(v, pv);
}

int compare_versions(std::string_view a, std::string_view b) {
  parsed_version x, y;
  parse_version(a, x);
  parse_version(b, y);
  for (int i = 0; i < 3; ++i)
    if (x.part[i] != y.part[i])
      return x.part[i] < y.part[i] ? -1 : 1;
  // A pre-release sorts before its release.
  if (x.pre.empty() != y.pre.empty())
    return x.pre.empty() ? 1 : -1;
  return x.pre.compare(y.pre) < 0 ? -1 : (x.pre == y.pre ? 0 : 1);
}

bool safe_relative_path(std::string_view p) {
  if (p.empty() || p.size() > 4096 || p.front() == '/' || p.back() == '/')
    return false;
  if (p.find('\0') != std::string_view::npos || p.find('\\') != std::string_view::npos)
    return false;
  size_t start = 0;
  while (start <= p.size()) {
    auto end = p.find('/', start);
    if (end == std::string_view::npos)
      end = p.size();
    auto seg = p.substr(start, end - start);
    if (seg.empty() || seg == "." || seg == ".." || seg.size() > 255)
      return false;
    start = end + 1;
  }
  return true;
}

caf::expected<manifest> parse_manifest(std::string_view text) {
  if (text.size() > max_manifest_bytes)
    return bad("manifest.json is larger than " + std::to_string(max_manifest_bytes) + " bytes");
  json doc = json::parse(text.begin(), text.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    return bad("manifest.json is not a JSON object");
  manifest m;
  auto str = [&](const char* key, std::string& out, bool required) -> caf::error {
    auto it = doc.find(key);
    if (it == doc.end())
      return required ? bad(std::string{"manifest: missing '"} + key + "'") : caf::error{};
    if (!it->is_string())
      return bad(std::string{"manifest: '"} + key + "' must be a string");
    out = it->get<std::string>();
    return {};
  };
  if (auto it = doc.find("format"); it == doc.end() || !it->is_number_integer() || *it != 1)
    return bad("manifest: 'format' must be 1");
  if (auto err = str("kind", m.kind, true))
    return err;
  if (m.kind != "full" && m.kind != "plugins")
    return bad("manifest: 'kind' must be 'full' or 'plugins', not '" + m.kind + "'");
  if (auto err = str("version", m.version, true))
    return err;
  if (!valid_version(m.version))
    return bad("manifest: 'version' is not a semantic version: '" + m.version + "'");
  if (auto err = str("groved_version", m.groved_version, m.kind == "full"))
    return err;
  if (!m.groved_version.empty() && !valid_version(m.groved_version))
    return bad("manifest: 'groved_version' is not a semantic version");
  if (auto err = str("min_version", m.min_version, false))
    return err;
  if (!m.min_version.empty() && !valid_version(m.min_version))
    return bad("manifest: 'min_version' is not a semantic version");
  if (auto it = doc.find("allow_downgrade"); it != doc.end()) {
    if (!it->is_boolean())
      return bad("manifest: 'allow_downgrade' must be true or false");
    m.allow_downgrade = it->get<bool>();
  }
  if (auto it = doc.find("plugins"); it != doc.end()) {
    if (!it->is_object())
      return bad("manifest: 'plugins' must be an object of name: version");
    for (auto& [name, ver] : it->items()) {
      if (name.empty() || name.size() > 64 || !ver.is_string()
          || !valid_version(ver.get<std::string>()))
        return bad("manifest: plugin '" + name + "' needs a semantic version");
      m.plugins.emplace(name, ver.get<std::string>());
    }
  }
  auto files = doc.find("files");
  if (files == doc.end() || !files->is_array() || files->empty())
    return bad("manifest: 'files' must be a non-empty array");
  if (files->size() > max_files)
    return bad("manifest: more than " + std::to_string(max_files) + " files");
  std::set<std::string> seen;
  for (auto& f : *files) {
    if (!f.is_object())
      return bad("manifest: every file must be an object");
    file_entry e;
    auto p = f.find("path"), h = f.find("sha256"), s = f.find("size"), md = f.find("mode");
    if (p == f.end() || !p->is_string())
      return bad("manifest: a file lacks its 'path'");
    e.path = p->get<std::string>();
    if (!safe_relative_path(e.path))
      return bad("manifest: path '" + e.path + "' escapes the release tree");
    if (h == f.end() || !h->is_string() || h->get<std::string>().size() != 64
        || !is_hex(h->get<std::string>()))
      return bad("manifest: '" + e.path + "' needs a sha256 of 64 lower-case hex digits");
    e.sha256 = h->get<std::string>();
    if (s == f.end() || !s->is_number_unsigned() || s->get<uint64_t>() > (uint64_t{1} << 40))
      return bad("manifest: '" + e.path + "' needs a 'size' in bytes");
    e.size = s->get<uint64_t>();
    if (md != f.end()) {
      if (!md->is_number_unsigned() || md->get<uint64_t>() > 07777)
        return bad("manifest: '" + e.path + "' has a bad 'mode'");
      e.mode = static_cast<uint32_t>(md->get<uint64_t>()) & 0755;
    }
    if (m.kind == "plugins"
        && (e.path.rfind("lib/grove/plugins/", 0) != 0 || e.path.find('/', 18) != std::string::npos))
      return bad("manifest: a plugins bundle carries only lib/grove/plugins/*.so, not '"
                 + e.path + "'");
    if (!seen.insert(e.path).second)
      return bad("manifest: '" + e.path + "' is listed twice");
    m.files.push_back(std::move(e));
  }
  // A file cannot also be a directory of another ("a" and "a/b").
  for (auto& e : m.files)
    for (auto pos = e.path.find('/'); pos != std::string::npos; pos = e.path.find('/', pos + 1))
      if (seen.count(e.path.substr(0, pos)))
        return bad("manifest: '" + e.path.substr(0, pos) + "' is both a file and a directory");
  return m;
}

std::string to_json(const manifest& m) {
  json doc = {{"format", m.format}, {"kind", m.kind}, {"version", m.version}};
  if (!m.groved_version.empty())
    doc["groved_version"] = m.groved_version;
  if (!m.min_version.empty())
    doc["min_version"] = m.min_version;
  doc["allow_downgrade"] = m.allow_downgrade;
  doc["plugins"] = json::object();
  for (auto& [k, v] : m.plugins)
    doc["plugins"][k] = v;
  doc["files"] = json::array();
  for (auto& f : m.files)
    doc["files"].push_back(
      {{"path", f.path}, {"sha256", f.sha256}, {"size", f.size}, {"mode", f.mode}});
  return doc.dump(2) + "\n";
}

caf::expected<header> read_header(const source& src) {
  auto r = open_bundle(src);
  if (!r)
    return std::move(r.error());
  header h;
  const char* names[] = {"manifest.json", "manifest.sig"};
  for (int i = 0; i < 2; ++i) {
    auto e = r->next();
    if (!e)
      return bad(std::string{"expected "} + names[i] + " as entry " + std::to_string(i + 1)
                 + ": " + message_of(e.error()));
    if (*e == nullptr)
      return bad(std::string{"expected "} + names[i] + " as entry " + std::to_string(i + 1)
                 + ": the bundle ends");
    if ((*e)->name != names[i])
      return bad(std::string{"expected "} + names[i] + " as entry " + std::to_string(i + 1)
                 + ", found '" + (*e)->name + "'");
    auto data = read_small(*r, **e, i == 0 ? max_manifest_bytes : max_signature_bytes, names[i]);
    if (!data)
      return std::move(data.error());
    (i == 0 ? h.manifest_json : h.signature_json) = std::move(*data);
  }
  return h;
}

caf::expected<manifest> verify(const header& h, const key_set& trusted) {
  if (!init_sodium())
    return make_error(errc::system_error, "ota: libsodium failed to initialize");
  json sig = json::parse(h.signature_json, nullptr, false);
  if (sig.is_discarded() || !sig.is_object() || !sig.contains("key") || !sig["key"].is_string()
      || !sig.contains("signature") || !sig["signature"].is_string())
    return bad("manifest.sig must be {\"key\": hex, \"signature\": hex}");
  auto key_hex = sig["key"].get<std::string>();
  auto pk = from_hex(key_hex, crypto_sign_PUBLICKEYBYTES);
  auto sg = from_hex(sig["signature"].get<std::string>(), crypto_sign_BYTES);
  if (!pk || !sg)
    return bad("manifest.sig: key must be 64 and signature 128 hex digits");
  if (std::find(trusted.begin(), trusted.end(), key_hex) == trusted.end())
    return refuse("signed by an unknown key " + key_hex.substr(0, 16) + "…");
  if (crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sg->data()),
                                  reinterpret_cast<const unsigned char*>(h.manifest_json.data()),
                                  h.manifest_json.size(),
                                  reinterpret_cast<const unsigned char*>(pk->data()))
      != 0)
    return refuse("bad signature: manifest.json is not what key " + key_hex.substr(0, 16)
                  + "… signed");
  return parse_manifest(h.manifest_json);
}

caf::error check(const manifest& m, const policy& p, const fs::path& stage_root) {
  if (!p.installed_version.empty()) {
    int order = compare_versions(m.version, p.installed_version);
    if (order == 0)
      return make_error(errc::invalid_state,
                        "ota bundle: version " + m.version + " is already installed");
    if (order < 0 && !(m.allow_downgrade || p.allow_downgrade))
      return refuse("version " + m.version + " is older than the installed "
                    + p.installed_version + " (downgrade not allowed)");
    if (!m.min_version.empty() && compare_versions(p.installed_version, m.min_version) < 0)
      return refuse("needs at least version " + m.min_version + " installed, not "
                    + p.installed_version);
  }
  struct statvfs st {};
  if (::statvfs(stage_root.c_str(), &st) != 0)
    return sys("statvfs " + stage_root.string());
  uint64_t free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  // Each file rounds up to a block, and a directory costs one.
  uint64_t need = p.margin_bytes;
  for (auto& f : m.files)
    need += (f.size + st.f_frsize - 1) / st.f_frsize * st.f_frsize + st.f_frsize;
  if (free_bytes < need)
    return make_error(errc::too_large, "ota bundle: not enough disk to stage: needs "
                                         + std::to_string(need) + " bytes (with a margin of "
                                         + std::to_string(p.margin_bytes) + "), "
                                         + std::to_string(free_bytes) + " free at "
                                         + stage_root.string());
  return {};
}

caf::error stage(const source& src, const manifest& m, const fs::path& dir) {
  if (!init_sodium())
    return make_error(errc::system_error, "ota: libsodium failed to initialize");
  std::error_code ec;
  if (fs::exists(dir, ec))
    return make_error(errc::invalid_state, "ota: " + dir.string() + " exists already");
  auto fail = [&](caf::error err) {
    std::error_code ignore;
    fs::remove_all(dir, ignore);
    return err;
  };
  if (!fs::create_directories(dir, ec))
    return fail(make_error(errc::system_error, "ota: create " + dir.string() + ": " + ec.message()));
  auto r = open_bundle(src);
  if (!r)
    return fail(std::move(r.error()));
  std::map<std::string, const file_entry*> wanted;
  for (auto& f : m.files)
    wanted.emplace(f.path, &f);
  std::set<fs::path> dirs{dir};
  int index = 0;
  for (;;) {
    auto next = r->next();
    if (!next)
      return fail(from_archive(next.error()));
    if (*next == nullptr)
      break;
    const archive::entry& e = **next;
    const std::string& name = e.name;
    if (++index <= 2)
      continue; // manifest.json, manifest.sig (read_header checked them)
    if (e.kind == archive::entry_kind::directory)
      continue; // directories come from the files' paths
    if (name.rfind("files/", 0) != 0)
      return fail(bad("unexpected entry '" + name + "' (the tree is under files/)"));
    auto rel = name.substr(6);
    if (!safe_relative_path(rel))
      return fail(bad("entry '" + name + "' escapes the release tree"));
    if (e.kind != archive::entry_kind::file)
      return fail(bad("entry '" + name + "' is not a regular file"));
    auto it = wanted.find(rel);
    if (it == wanted.end())
      return fail(bad("entry '" + name + "' is not in the manifest (or comes twice)"));
    const file_entry& fe = *it->second;
    wanted.erase(it);
    auto target = dir / rel;
    for (auto parent = target.parent_path(); dirs.insert(parent).second;
         parent = parent.parent_path()) {
      fs::create_directories(parent, ec);
      if (ec)
        return fail(make_error(errc::system_error, "ota: create " + parent.string() + ": " + ec.message()));
    }
    int fd = ::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                    fe.mode & 0755);
    if (fd < 0)
      return fail(sys("ota: create " + target.string()));
    crypto_hash_sha256_state hs;
    crypto_hash_sha256_init(&hs);
    uint64_t written = 0;
    char buf[64 * 1024];
    caf::error err;
    for (;;) {
      auto got = r->read(buf, sizeof buf);
      if (!got) {
        err = from_archive(got.error());
        break;
      }
      auto n = static_cast<ssize_t>(*got);
      if (n == 0)
        break;
      written += static_cast<uint64_t>(n);
      if (written > fe.size) {
        err = refuse("wrong digest: '" + rel + "' is larger than the manifest says");
        break;
      }
      crypto_hash_sha256_update(&hs, reinterpret_cast<unsigned char*>(buf),
                                static_cast<unsigned long long>(n));
      for (ssize_t off = 0; off < n;) {
        auto w = ::write(fd, buf + off, static_cast<size_t>(n - off));
        if (w < 0 && errno == EINTR)
          continue;
        if (w < 0) {
          err = sys("ota: write " + target.string());
          break;
        }
        off += w;
      }
      if (err)
        break;
    }
    if (!err && ::fsync(fd) != 0)
      err = sys("ota: fsync " + target.string());
    ::fchmod(fd, fe.mode & 0755); // the umask may have masked bits at create
    ::close(fd);
    if (err)
      return fail(std::move(err));
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&hs, digest);
    auto hex = to_hex({reinterpret_cast<char*>(digest), sizeof digest});
    if (written != fe.size || hex != fe.sha256)
      return fail(refuse("wrong digest: '" + rel + "' has sha256 " + hex.substr(0, 16)
                         + "… and " + std::to_string(written) + " bytes, the manifest says "
                         + fe.sha256.substr(0, 16) + "… and " + std::to_string(fe.size)));
  }
  if (!wanted.empty())
    return fail(bad("'" + wanted.begin()->first + "' is in the manifest but not in the bundle"));
  // Directories deepest first, so each entry is durable before its parent is.
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it)
    if (auto err = sync_directory(*it))
      return fail(std::move(err));
  if (auto err = sync_directory(dir.parent_path()))
    return fail(std::move(err));
  return {};
}

std::string to_hex(std::string_view bytes) {
  std::string out(bytes.size() * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                 bytes.size());
  out.pop_back();
  return out;
}

caf::expected<std::string> from_hex(std::string_view hex, size_t bytes) {
  if (hex.size() != bytes * 2 || !is_hex(hex))
    return make_error(errc::malformed, "expected " + std::to_string(bytes * 2)
                                         + " lower-case hex digits");
  std::string out(bytes, '\0');
  size_t len = 0;
  if (sodium_hex2bin(reinterpret_cast<unsigned char*>(out.data()), bytes, hex.data(), hex.size(),
                     nullptr, &len, nullptr)
        != 0
      || len != bytes)
    return make_error(errc::malformed, "bad hex");
  return out;
}

std::pair<std::string, std::string> make_key_pair() {
  init_sodium();
  unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
  crypto_sign_keypair(pk, sk);
  auto result = std::make_pair(to_hex({reinterpret_cast<char*>(sk), sizeof sk}),
                               to_hex({reinterpret_cast<char*>(pk), sizeof pk}));
  sodium_memzero(sk, sizeof sk);
  return result;
}

caf::expected<std::string> sign(std::string_view msg, std::string_view secret_hex) {
  init_sodium();
  auto sk = from_hex(secret_hex, crypto_sign_SECRETKEYBYTES);
  if (!sk)
    return make_error(errc::malformed, "secret key must be 128 hex digits");
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(msg.data()),
                       msg.size(), reinterpret_cast<const unsigned char*>(sk->data()));
  sodium_memzero(sk->data(), sk->size());
  // The public key is the secret key's second half (libsodium's layout).
  json doc = {{"key", std::string{secret_hex.substr(crypto_sign_SEEDBYTES * 2)}},
              {"signature", to_hex({reinterpret_cast<char*>(sig), sizeof sig})}};
  return doc.dump() + "\n";
}

caf::expected<std::string> sha256_file(const fs::path& file) {
  init_sodium();
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return sys("open " + file.string());
  crypto_hash_sha256_state hs;
  crypto_hash_sha256_init(&hs);
  char buf[64 * 1024];
  for (;;) {
    auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      auto err = sys("read " + file.string());
      ::close(fd);
      return err;
    }
    if (n == 0)
      break;
    crypto_hash_sha256_update(&hs, reinterpret_cast<unsigned char*>(buf),
                              static_cast<unsigned long long>(n));
  }
  ::close(fd);
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&hs, digest);
  return to_hex({reinterpret_cast<char*>(digest), sizeof digest});
}

} // namespace grove::ota
