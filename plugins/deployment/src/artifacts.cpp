#include "artifacts.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "grove/archive.hpp"
#include "grove/errors.hpp"
#include "grove/file.hpp"
#include "http.hpp"

namespace grove::deployment {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

caf::error sys_error(const std::string& what) {
  return grove::make_error(grove::errc::system_error, what + ": " + std::strerror(errno));
}

caf::error bad(std::string what) {
  return grove::make_error(grove::errc::malformed, std::move(what));
}

// fsync of a file written by name (a copy): its content on disk before a rename names it.
bool fsync_path(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  bool synced = fd >= 0 && ::fsync(fd) == 0;
  if (fd >= 0)
    ::close(fd);
  return synced;
}

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes));
  return hex(raw);
}

// A file being written in tmp/: the bytes go to the file and through SHA-256 (the
// address) and the recipe's algorithm when it is another.
class sink {
public:
  sink(fs::path path, const std::string& algorithm, uint64_t max,
       std::shared_ptr<fetch_canceller> cancel)
    : path_(std::move(path)), max_(max), cancel_(std::move(cancel)) {
    sha256_.reset(EVP_MD_CTX_new());
    EVP_DigestInit_ex(sha256_.get(), EVP_sha256(), nullptr);
    const EVP_MD* md = algorithm == "SHA-384"   ? EVP_sha384()
                       : algorithm == "SHA-512" ? EVP_sha512()
                                                : nullptr;
    if (md != nullptr) {
      other_.reset(EVP_MD_CTX_new());
      EVP_DigestInit_ex(other_.get(), md, nullptr);
    }
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  }

  ~sink() {
    if (fd_ >= 0)
      ::close(fd_);
    if (!kept_) {
      std::error_code ec;
      fs::remove(path_, ec);
    }
  }

  bool ok() const {
    return fd_ >= 0;
  }

  // False when the file is too large or cannot be written (why() says).
  bool write(const char* data, size_t n) {
    if (cancel_ && cancel_->cancelled()) {
      why_ = "cancelled: the plugin is stopping";
      return false;
    }
    if (size_ + n > max_) {
      why_ = "larger than artifacts_max_bytes (" + std::to_string(max_) + ")";
      return false;
    }
    size_ += n;
    EVP_DigestUpdate(sha256_.get(), data, n);
    if (other_)
      EVP_DigestUpdate(other_.get(), data, n);
    while (n > 0) {
      auto w = ::write(fd_, data, n);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0) {
        why_ = std::string{"cannot write "} + path_.string() + ": " + std::strerror(errno);
        return false;
      }
      data += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }

  // fsync and close; the digests (raw SHA-256, raw recipe algorithm's or SHA-256's).
  bool finish(std::string& sha256, std::string& other) {
    if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
      fd_ = -1;
      why_ = std::string{"cannot sync "} + path_.string() + ": " + std::strerror(errno);
      return false;
    }
    fd_ = -1;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(sha256_.get(), md, &len);
    sha256.assign(reinterpret_cast<char*>(md), len);
    if (other_) {
      EVP_DigestFinal_ex(other_.get(), md, &len);
      other.assign(reinterpret_cast<char*>(md), len);
    } else {
      other = sha256;
    }
    return true;
  }

  void keep() {
    kept_ = true;
  }

  const std::string& why() const {
    return why_;
  }

  uint64_t size() const {
    return size_;
  }

private:
  struct md_free {
    void operator()(EVP_MD_CTX* c) const {
      EVP_MD_CTX_free(c);
    }
  };
  fs::path path_;
  uint64_t max_;
  std::shared_ptr<fetch_canceller> cancel_;
  uint64_t size_ = 0;
  int fd_ = -1;
  bool kept_ = false;
  std::string why_;
  std::unique_ptr<EVP_MD_CTX, md_free> sha256_;
  std::unique_ptr<EVP_MD_CTX, md_free> other_;
};

// GETs `url` into `out` with the SDK's downloader; "" on success, else why not.
std::string download(const std::string& url, const fetch_settings& s, sink& out) {
  grove::http::fetch_options o;
  o.ca_file = s.ca_file;
  o.max_bytes = s.max_bytes;
  o.max_bytes_name = "artifacts_max_bytes";
  o.timeout = s.timeout;
  o.cancel = s.cancel;
  auto why = grove::http::get(url, o, [&out](const char* data, size_t n) { return out.write(data, n); });
  if (!out.why().empty())
    return out.why();
  return why;
}

// Copies local file `from` into `out`; "" on success, else why not.
std::string copy_file(const fs::path& from, sink& out) {
  int fd = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return "cannot read " + from.string() + ": " + std::strerror(errno);
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return from.string() + " is not a regular file";
  }
  char buf[65536];
  std::string why;
  for (;;) {
    auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      why = "cannot read " + from.string() + ": " + std::strerror(errno);
      break;
    }
    if (n == 0)
      break;
    if (!out.write(buf, static_cast<size_t>(n))) {
      why = out.why();
      break;
    }
  }
  ::close(fd);
  return why;
}

} // namespace

caf::expected<std::unique_ptr<artifact_store>> artifact_store::open(const fs::path& root) {
  std::error_code ec;
  for (const char* sub : {"sha256", "unarchived", "tmp"}) {
    fs::create_directories(root / sub, ec);
    if (ec)
      return grove::make_error(grove::errc::system_error,
                               "cannot create " + (root / sub).string() + ": " + ec.message());
  }
  // What a crash left half written: never referenced, so simply gone.
  for (const auto& e : fs::directory_iterator(root / "tmp", ec))
    fs::remove_all(e.path(), ec);
  return std::unique_ptr<artifact_store>{new artifact_store(root)};
}

fs::path artifact_store::path_of(const std::string& sha256_hex) const {
  return root_ / "sha256" / sha256_hex;
}

fs::path artifact_store::unarchived_of(const std::string& sha256_hex) const {
  return root_ / "unarchived" / sha256_hex;
}

caf::expected<fs::path> artifact_store::with_mode(const std::string& sha256_hex, int mode,
                                                   gid_t gid) {
  // Owned by groved's user, the OWNER bits given to the component's group and no write
  // bit: the component's user can read or run it but not rewrite it (a RequiresPrivilege
  // step of any component holding the same bytes runs this file as root).
  auto perm = static_cast<mode_t>((mode & 0555) | ((mode & 0500) >> 3));
  auto owner = ::geteuid();
  char sub[64];
  std::snprintf(sub, sizeof sub, "%04o-%u-%u", static_cast<unsigned>(perm),
                static_cast<unsigned>(owner), static_cast<unsigned>(gid));
  auto dest = root_ / "modes" / sub / sha256_hex;
  auto src = path_of(sha256_hex);
  struct stat want{}, have{};
  if (::stat(src.c_str(), &want) != 0)
    return sys_error("cannot stat " + src.string());
  // Reused only when it is what this call makes (a crash cannot leave a short copy under
  // the name, see the fsync below; this also replaces copies an older groved gave away).
  std::error_code ec;
  if (::lstat(dest.c_str(), &have) == 0) {
    if (S_ISREG(have.st_mode) && have.st_size == want.st_size
        && (have.st_mode & 07777) == perm && have.st_uid == owner && have.st_gid == gid)
      return dest;
    fs::remove(dest, ec);
  }
  fs::create_directories(dest.parent_path(), ec);
  auto tmp = root_ / "tmp" / (random_hex(12) + ".mode");
  auto fail = [&](const std::string& what) {
    auto err = sys_error(what);
    fs::remove(tmp, ec);
    return err;
  };
  if (!fs::copy_file(src, tmp, ec))
    return sys_error("cannot copy " + src.string() + " to " + tmp.string() + ": "
                     + ec.message());
  if (gid != ::getegid() && ::chown(tmp.c_str(), owner, gid) != 0)
    return fail("cannot chown " + tmp.string());
  if (::chmod(tmp.c_str(), perm) != 0)
    return fail("cannot set the mode of " + tmp.string());
  // The content on disk before the name points to it.
  if (!fsync_path(tmp))
    return fail("cannot fsync " + tmp.string());
  if (::rename(tmp.c_str(), dest.c_str()) != 0)
    return fail("cannot rename " + tmp.string() + " to " + dest.string());
  if (auto err = grove::sync_directory(dest.parent_path()))
    return err;
  return dest;
}

caf::expected<fs::path> artifact_store::unarchived_with_group(const std::string& sha256_hex,
                                                               gid_t gid) {
  auto owner = ::geteuid();
  char sub[64];
  std::snprintf(sub, sizeof sub, "unarchived-%u-%u", static_cast<unsigned>(owner),
                static_cast<unsigned>(gid));
  auto dest = root_ / "modes" / sub / sha256_hex;
  std::error_code ec;
  if (fs::is_directory(dest, ec))
    return dest; // published by one rename: whole
  auto src = unarchived_of(sha256_hex);
  auto work = root_ / "tmp" / (random_hex(12) + ".dir");
  auto fail = [&](const std::string& what) {
    auto err = sys_error(what);
    fs::remove_all(work, ec);
    return err;
  };
  // Owned by groved's user, readable by the group, never writable by it: a
  // RequiresPrivilege step of any component holding the same archive may run these.
  auto give = [&](const fs::path& p, mode_t mode) {
    return (gid == ::getegid() || ::chown(p.c_str(), owner, gid) == 0)
           && ::chmod(p.c_str(), mode) == 0;
  };
  std::vector<fs::path> dirs{work};
  if (!fs::create_directory(work, ec) || !give(work, 0750))
    return fail("cannot create " + work.string());
  fs::recursive_directory_iterator it{src, ec}, end;
  if (ec)
    return sys_error("cannot read " + src.string() + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    auto to = work / it->path().lexically_relative(src);
    struct stat st{};
    if (::lstat(it->path().c_str(), &st) != 0)
      return fail("cannot stat " + it->path().string());
    if (S_ISDIR(st.st_mode)) {
      if (!fs::create_directory(to, ec) || !give(to, 0750))
        return fail("cannot create " + to.string());
      dirs.push_back(to);
    } else if (S_ISREG(st.st_mode)) {
      // unzip() keeps the archive's owner execute bit (and always owner read).
      if (!fs::copy_file(it->path(), to, ec) || !give(to, (st.st_mode & S_IXUSR) ? 0550 : 0440))
        return fail("cannot copy " + it->path().string() + " to " + to.string());
      if (!fsync_path(to))
        return fail("cannot fsync " + to.string());
    } // unzip() refuses links, devices and FIFOs: nothing else is there
  }
  if (ec)
    return fail("cannot read " + src.string());
  for (const auto& d : dirs)
    if (auto err = grove::sync_directory(d)) {
      fs::remove_all(work, ec);
      return err;
    }
  fs::create_directories(dest.parent_path(), ec);
  if (::rename(work.c_str(), dest.c_str()) != 0) {
    auto err = fail("cannot rename " + work.string() + " to " + dest.string());
    if (fs::is_directory(dest, ec))
      return dest; // made meanwhile by another preparation
    return err;
  }
  if (auto err = grove::sync_directory(dest.parent_path()))
    return err;
  return dest;
}

caf::expected<std::string> artifact_store::fetch(const artifact_ref& a, const fetch_settings& s) {
  std::string want;
  if (!a.digest.empty() && !base64_decode(a.digest, want))
    return bad("Digest '" + a.digest.substr(0, 128) + "' is not base64");
  if (!a.digest.empty()) {
    size_t bytes = a.algorithm == "SHA-512" ? 64 : a.algorithm == "SHA-384" ? 48 : 32;
    if (want.size() != bytes)
      return bad("Digest '" + a.digest.substr(0, 128) + "' is not a " + a.algorithm + " digest ("
                 + std::to_string(bytes) + " bytes in base64)");
  }
  // Fetched before (another version, or before a crash) with the same SHA-256: done.
  if (!a.digest.empty() && (a.algorithm.empty() || a.algorithm == "SHA-256")) {
    std::error_code ec;
    if (fs::is_regular_file(path_of(hex(want)), ec))
      return hex(want);
  }
  std::string why;
  auto src = resolve_artifact_uri(a.uri, s.uris, why);
  if (!why.empty())
    return bad(why);
  auto tmp = root_ / "tmp" / (random_hex(12) + ".part");
  sink out{tmp, a.algorithm, s.max_bytes, s.cancel};
  if (!out.ok())
    return sys_error("cannot create " + tmp.string());
  why = src.url.empty() ? copy_file(src.file, out) : download(src.url, s, out);
  if (!why.empty())
    return bad(why);
  std::string sha, other;
  if (!out.finish(sha, other))
    return bad(out.why());
  if (!a.digest.empty() && other != want)
    return bad("digest mismatch: the recipe's " + a.algorithm + " is " + a.digest + ", the "
               + std::to_string(out.size()) + " bytes fetched have " + base64_encode(other));
  auto dest = path_of(hex(sha));
  ::chmod(tmp.c_str(), 0444);
  if (::rename(tmp.c_str(), dest.c_str()) != 0)
    return sys_error("cannot rename " + tmp.string() + " to " + dest.string());
  out.keep();
  if (auto err = grove::sync_directory(dest.parent_path()))
    return err;
  return hex(sha);
}

caf::error artifact_store::unzip(const std::string& sha256_hex, uint64_t max_bytes) {
  auto dest = unarchived_of(sha256_hex);
  std::error_code ec;
  if (fs::is_directory(dest, ec))
    return {};
  // Unpacked (all or nothing, durable) aside, then published under its address.
  auto work = root_ / "tmp" / (random_hex(12) + ".dir");
  grove::archive::options opts;
  opts.tar = false;
  opts.limits.max_total_bytes = max_bytes;
  opts.limits.max_entry_bytes = max_bytes;
  opts.sync = true;
  if (auto done = grove::archive::extract(path_of(sha256_hex), work, opts); !done) {
    auto msg = "ZIP: " + grove::message_of(done.error());
    if (static_cast<grove::errc>(done.error().code()) == grove::errc::too_large)
      msg += " (artifacts_max_bytes)";
    return grove::make_error(static_cast<grove::errc>(done.error().code()), std::move(msg));
  }
  if (::rename(work.c_str(), dest.c_str()) != 0) {
    auto err = sys_error("cannot rename " + work.string() + " to " + dest.string());
    fs::remove_all(work, ec);
    if (fs::is_directory(dest, ec))
      return {}; // unpacked meanwhile by another fetch of the same archive
    return err;
  }
  return grove::sync_directory(dest.parent_path());
}

size_t artifact_store::prune_modes(const std::set<fs::path>& in_use) {
  std::error_code ec;
  std::vector<fs::path> subs, gone;
  for (const auto& sub : fs::directory_iterator{root_ / "modes", ec})
    subs.push_back(sub.path());
  for (const auto& sub : subs) {
    std::error_code e;
    for (const auto& f : fs::directory_iterator{sub, e})
      if (!in_use.contains(f.path().lexically_normal()))
        gone.push_back(f.path());
  }
  size_t n = 0;
  for (const auto& f : gone) {
    std::error_code e;
    n += fs::remove_all(f, e) > 0 ? 1 : 0; // a file, or a tree (unarchived_with_group)
  }
  for (const auto& sub : subs) {
    std::error_code e;
    fs::remove(sub, e); // only when empty
  }
  return n;
}

caf::expected<std::string> artifact_store::url_key() {
  auto file = root_ / "url.key";
  for (int attempt = 0; attempt < 2; ++attempt) {
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      char buf[64];
      auto n = ::read(fd, buf, sizeof buf);
      ::close(fd);
      if (n == 32)
        return std::string{buf, 32};
      return bad(file.string() + ": not a 32-byte key (delete it to make a new one; "
                                 "URLs given before then stop working)");
    }
    // Made once: written aside, synced, linked in (a racing maker's file wins).
    std::string key(32, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), 32) != 1)
      return grove::make_error(grove::errc::system_error, "RAND_bytes failed");
    auto tmp = root_ / "tmp" / (random_hex(8) + ".key");
    int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0)
      return sys_error("cannot create " + tmp.string());
    bool written = ::write(out, key.data(), 32) == 32 && ::fsync(out) == 0;
    ::close(out);
    if (!written || (::link(tmp.c_str(), file.c_str()) != 0 && errno != EEXIST)) {
      auto err = sys_error("cannot write " + file.string());
      ::unlink(tmp.c_str());
      return err;
    }
    ::unlink(tmp.c_str());
    if (auto err = grove::sync_directory(root_))
      return err;
  }
  return bad(file.string() + ": cannot be read");
}

caf::error settle_version(component_store& store, artifact_store& artifacts,
                          const fetch_settings& s, const std::string& name,
                          const std::string& version) {
  auto v = store.get(name, version);
  if (!v)
    return std::move(v.error());
  if (!*v || ((*v)->state != "REQUESTED" && (*v)->state != "INITIATED"))
    return {};
  if (auto moved = store.advance(name, version, "REQUESTED", "INITIATED"); !moved)
    return std::move(moved.error());
  auto recipe = json::parse((*v)->recipe, nullptr, false);
  json errors = json::object();
  json stored = json::object();
  size_t total = 0;
  // Only what this core runs (the manifest for its platform), as Greengrass downloads.
  static const auto platform = core_platform();
  for (const auto& a : fetchable_artifacts(recipe, platform)) {
    ++total;
    auto sha = artifacts.fetch(a, s);
    if (!sha) {
      errors[a.uri] = grove::message_of(sha.error());
      continue;
    }
    if (a.unzip)
      if (auto err = artifacts.unzip(*sha, s.max_bytes)) {
        errors[a.uri] = grove::message_of(err);
        continue;
      }
    stored[a.uri] = *sha;
  }
  // Stopped midway: what failed may only have been cut short, so nothing is settled.
  if (s.cancel && s.cancel->cancelled())
    return {};
  std::string state = errors.empty() ? "DEPLOYABLE" : "FAILED";
  std::string message = "NONE";
  if (!errors.empty())
    message = std::to_string(errors.size()) + " of " + std::to_string(total)
              + " artifacts could not be stored: " + errors.begin().key() + ": "
              + errors.begin()->get<std::string>();
  auto done = store.settle(name, version, state, message,
                           artifact_status{errors.dump(-1, ' ', false, json::error_handler_t::replace),
                                           stored.dump()});
  if (!done)
    return std::move(done.error());
  return {};
}

} // namespace grove::deployment
