#pragma once

// OTA update bundles (README.md, "Bundle format"): a tar whose first two entries are
// manifest.json and manifest.sig (Ed25519 over the manifest's exact bytes), then the
// release tree under files/. Nothing here changes the running install: staging writes a
// new directory beside it, and install.hpp does the switch.

#include <caf/expected.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace grove::ota {

/// A file of the release tree as the manifest names it.
struct file_entry {
  std::string path;   // relative, '/'-separated, no '.', '..' or empty segments
  std::string sha256; // 64 lower-case hex digits
  uint64_t size = 0;
  uint32_t mode = 0644; // only the permission bits 0755 are kept
};

/// A parsed, checked manifest.json.
struct manifest {
  int format = 1;
  std::string kind; // "full" (a whole release tree) or "plugins" (plugin .so files only)
  std::string version;
  std::string groved_version;                 // empty for kind "plugins"
  std::map<std::string, std::string> plugins; // plugin name -> version
  std::string min_version;                    // lowest installed version it applies over
  bool allow_downgrade = false;
  std::vector<file_entry> files;
  /// Sum of every file's size.
  uint64_t total_size() const;
};

/// Largest manifest.json and manifest.sig accepted (bytes).
inline constexpr size_t max_manifest_bytes = 1 << 20;
inline constexpr size_t max_signature_bytes = 4096;
/// Most files a manifest may list.
inline constexpr size_t max_files = 10000;

/// Parses and checks manifest.json: every field's type, versions as semver, paths that
/// stay inside the tree, digests, no file twice.
caf::expected<manifest> parse_manifest(std::string_view json);

/// Writes a manifest back as JSON (the form the signer signs).
std::string to_json(const manifest& m);

/// Compares two semantic versions (MAJOR.MINOR.PATCH[-pre]); <0, 0, >0.
int compare_versions(std::string_view a, std::string_view b);
/// True if `v` is MAJOR.MINOR.PATCH[-pre][+build].
bool valid_version(std::string_view v);
/// True if `p` is a relative path that cannot leave the tree it is joined to.
bool safe_relative_path(std::string_view p);

/// Where a bundle's bytes come from: a file, or memory (tests, the fuzzer).
struct source {
  std::filesystem::path file;
  std::string_view memory;
};

/// The first two entries of a bundle, unverified.
struct header {
  std::string manifest_json;
  std::string signature_json;
};

/// Reads manifest.json and manifest.sig, which must be the bundle's first two entries.
caf::expected<header> read_header(const source& src);

/// Trusted Ed25519 public keys, 64 hex digits each.
using key_set = std::vector<std::string>;

/// Checks manifest.sig (`{"key": hex, "signature": hex}`) against the trusted keys and
/// the manifest's exact bytes, then parses the manifest. Refuses an unknown key and a
/// bad signature with different messages.
caf::expected<manifest> verify(const header& h, const key_set& trusted);

/// Unpacks the bundle's files/ entries into `dir` (which must not exist yet), checking
/// each against the manifest (listed, regular file, size, sha256) and that every listed
/// file came; fsyncs every file and directory. On error `dir` is removed again.
caf::error stage(const source& src, const manifest& m, const std::filesystem::path& dir);

/// What the device allows (plugin config or command line).
struct policy {
  key_set trusted_keys;
  std::string installed_version; // empty: nothing installed yet
  bool allow_downgrade = false;
  uint64_t margin_bytes = 4 << 20; // free space kept beyond the unpacked size
};

/// Every refusal that needs no unpacking: version order, min_version, free space at
/// `stage_root` against the unpacked size plus the margin.
caf::error check(const manifest& m, const policy& p, const std::filesystem::path& stage_root);

/// Hex helpers (libsodium).
std::string to_hex(std::string_view bytes);
caf::expected<std::string> from_hex(std::string_view hex, size_t bytes);

/// Ed25519: a new key pair as {secret hex, public hex}; a detached signature of `msg`.
std::pair<std::string, std::string> make_key_pair();
caf::expected<std::string> sign(std::string_view msg, std::string_view secret_hex);

/// sha256 of a file as hex.
caf::expected<std::string> sha256_file(const std::filesystem::path& file);

} // namespace grove::ota
