#pragma once

// Fetching a component version's artifacts into a content-addressed directory, and
// settling its state: REQUESTED → INITIATED → DEPLOYABLE when every artifact is in and
// matches its digest, FAILED (with `errors` per Uri) otherwise. Blocking: the plugin
// runs it on the SDK's blocking pool, never on its actor or the HTTP server's threads.
//
// Layout under the root (`<state_dir>/artifacts`): `sha256/<hex>` the artifacts
// (read-only files), `unarchived/<hex>/` a ZIP's entries, `tmp/` downloads in flight.
// A file reaches `sha256/` only whole: written to `tmp/`, fsync'd, renamed, the
// directory fsync'd; the version is marked DEPLOYABLE in SQLite only after that, so a
// kill -9 at any point leaves no half version DEPLOYABLE, and the next start fetches the
// REQUESTED/INITIATED ones again (tmp/ is emptied at open).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "grove/http_fetch.hpp"

#include "artifact_uri.hpp"
#include "component_store.hpp"

namespace grove::deployment {

/// Ends the fetches in flight when the plugin stops (the SDK's, grove/http_fetch.hpp):
/// downloads are cut at once (their sockets shut), copies at their next block, and no
/// version is settled by them (the next start fetches it again).
using fetch_canceller = grove::http::fetch_canceller;

/// How artifacts are fetched.
struct fetch_settings {
  /// s3:// and file:// mapping.
  artifact_uri_settings uris;
  /// CA bundle to verify https servers with; "" for the system's.
  std::filesystem::path ca_file;
  /// Largest artifact.
  uint64_t max_bytes = 1ull << 30;
  /// Connect and read timeout of one download.
  std::chrono::seconds timeout{30};
  /// Cancels fetches when the plugin stops; null: never.
  std::shared_ptr<fetch_canceller> cancel;
};

/// The content-addressed artifact directory (see the file comment). Thread-safe: every
/// file appears by an atomic rename.
class artifact_store {
public:
  /// Opens (creating) `root` and empties its tmp/.
  static caf::expected<std::unique_ptr<artifact_store>> open(const std::filesystem::path& root);

  /// The store's directory.
  const std::filesystem::path& root() const {
    return root_;
  }

  /// Where artifact `sha256_hex` is (whether or not it is there).
  std::filesystem::path path_of(const std::string& sha256_hex) const;

  /// Where the entries of ZIP artifact `sha256_hex` are unpacked.
  std::filesystem::path unarchived_of(const std::string& sha256_hex) const;

  /// Stored artifact `sha256_hex` with a recipe's Permission `mode` for a component
  /// whose user's group is `gid`: a copy owned by groved's user and group `gid`, the OWNER bits given to
  /// the group too and no write bit (the component's user reads or runs it, never
  /// rewrites it), under `modes/<mode>-<owner>-<gid>/` (same name), fsync'd and renamed
  /// into place; reused while its size, mode and owner are right. A copy, since the
  /// stored file is shared by every version and component holding the same bytes and
  /// stays 0444.
  caf::expected<std::filesystem::path> with_mode(const std::string& sha256_hex, int mode,
                                                 gid_t gid);

  /// The unpacked entries of ZIP `sha256_hex` (unzip) for a component whose user's group
  /// is `gid`: a copy of the tree owned by groved's user and group `gid`, directories
  /// 0750, files 0440, or 0550 where the archive gave its owner execute, under
  /// `modes/unarchived-<owner>-<gid>/` (same name); made aside, fsync'd and renamed into
  /// place, so one that is there is whole. A copy, since unarchived_of() is shared by
  /// every component holding the same archive and stays groved's alone.
  caf::expected<std::filesystem::path> unarchived_with_group(const std::string& sha256_hex,
                                                             gid_t gid);

  /// Removes the per-mode copies (with_mode, unarchived_with_group) that are not in `in_use` (paths as with_mode
  /// gave them), and the `modes/` subdirectories left empty; how many copies went. A
  /// removed component version's copies are otherwise kept for ever.
  size_t prune_modes(const std::set<std::filesystem::path>& in_use);

  /// Fetches `a` (download or copy), checks its digest when it has one, and stores it;
  /// its SHA-256 (hex). The error says what went wrong, for status.errors.
  caf::expected<std::string> fetch(const artifact_ref& a, const fetch_settings& s);

  /// Unpacks stored ZIP `sha256_hex` into unarchived_of() (once; again after a crash
  /// midway) with grove::archive: an entry that would land outside it (absolute, `..`),
  /// a link, a device, or entries larger than `max_bytes` in all refuse the whole archive.
  caf::error unzip(const std::string& sha256_hex, uint64_t max_bytes);

  /// The key that signs pre-signed URLs: `<root>/url.key` (32 random bytes, mode
  /// 0600), made on first use.
  caf::expected<std::string> url_key();

private:
  explicit artifact_store(std::filesystem::path root) : root_(std::move(root)) {
    // Nothing.
  }

  std::filesystem::path root_;
};

/// Fetches every artifact of version `name`/`version` and settles its state (see the
/// file comment). A version that is gone or settled meanwhile is left alone.
caf::error settle_version(component_store& store, artifact_store& artifacts,
                          const fetch_settings& s, const std::string& name,
                          const std::string& version);

} // namespace grove::deployment
