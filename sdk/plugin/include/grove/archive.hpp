#pragma once

// grove::archive: one reader for the archives plugins take from outside (library
// libgrove_archive, libarchive underneath): ZIP, tar and tar.gz, unpacked into a
// directory, read into memory, or read entry by entry (a reader streaming each file's
// bytes to the caller: ota hashes while it writes), with limits, refusing every entry
// that could land outside (absolute, `..`), links (all, or those that leave the
// directory), devices and FIFOs. An error names the entry and the reason; nothing half
// unpacked is left behind.
//
// Error codes: `malformed` (an unreadable archive, a refused entry), `too_large` (a
// limit), `system_error` (the disk). Messages start with "entry '<name>': " when one
// entry is at fault, so a caller prefixes only what it is (a URI, a setting's name).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace grove::archive {

/// What an archive may hold and unpack to.
struct limits {
  /// Entries of any kind (files, directories, links).
  uint64_t max_entries = 100000;
  /// Bytes of all files together, as unpacked.
  uint64_t max_total_bytes = 1ull << 30;
  /// Bytes of one file, as unpacked.
  uint64_t max_entry_bytes = 1ull << 30;
};

/// Which links an archive may hold.
enum class link_policy : uint8_t {
  /// None: a symbolic or hard link is refused (the strictest; the default).
  refuse,
  /// Symbolic links with a relative target that stays inside the directory (`..` only
  /// as a leading run no deeper than the link's own folder), and hard links to another
  /// entry's safe path. Needed by code packages (node_modules/.bin, lib*.so.1 -> ...).
  inside,
};

/// How an archive is read.
struct options {
  /// The limits.
  grove::archive::limits limits;
  /// Accept ZIP.
  bool zip = true;
  /// Accept tar, plain or gzip-compressed.
  bool tar = true;
  /// Which links are allowed.
  link_policy links = link_policy::refuse;
  /// With extract(): fsync every file and directory before returning, so a rename of
  /// the directory afterwards publishes only durable contents.
  bool sync = false;
};

/// What was unpacked.
struct summary {
  /// Entries written (files, directories, links).
  uint64_t entries = 0;
  /// Bytes of file contents written.
  uint64_t bytes = 0;
};

/// A file read into memory by read_files().
struct file {
  /// Its safe relative path ("a/b", no "./" prefix).
  std::string name;
  /// Its contents.
  std::string data;
};

/// Checks an entry name from outside and returns it normalised (`a/./b//c` -> `a/b/c`,
/// trailing `/` dropped). Refused (`malformed`): empty, absolute, a `..` segment, a
/// backslash, a NUL or other control byte, a name that is only `.` segments.
caf::expected<std::string> safe_relative_path(std::string_view name);

/// Unpacks the archive file `archive` into `dest`, created if missing (it must be empty
/// otherwise). Files and directories keep their rwx bits without setuid, setgid, sticky
/// or write for others, and are always readable (directories searchable) by the owner.
/// On any error `dest` is removed: a caller sees all or nothing.
caf::expected<summary> extract(const std::filesystem::path& archive,
                               const std::filesystem::path& dest, const options& opts = {});

/// Reads the regular files of an archive held in memory, in archive order; directories
/// are skipped, links as allowed by `opts.links` are checked and skipped, and anything
/// else is refused exactly as extract() would.
caf::expected<std::vector<file>> read_files(std::string_view bytes, const options& opts = {});

/// What a reader's entry is.
enum class entry_kind : uint8_t {
  /// A regular file; its contents come from reader::read().
  file,
  /// A directory.
  directory,
  /// A symbolic link (only with link_policy::inside); `link` is its checked target.
  symlink,
  /// A hard link (only with link_policy::inside); `link` is the safe path it names.
  hardlink,
};

/// One entry as a reader returns it: already checked as extract() checks it.
struct entry {
  /// Its safe relative path ("a/b", no "./" prefix).
  std::string name;
  /// What it is.
  entry_kind kind = entry_kind::file;
  /// A link's target; empty otherwise.
  std::string link;
  /// A file's size as the archive declares it (not yet read), if it declares one.
  std::optional<uint64_t> size;
  /// Its permission bits as the archive holds them (untrusted: mask before use).
  uint32_t mode = 0;
};

/// An archive read one entry at a time, in archive order, for a caller that checks or
/// transforms contents while they stream (digests, its own layout, per-entry sizes).
/// The same refusals and limits as extract(): a refused entry is an error from next(),
/// bytes past a limit are an error from read(). The archive directory itself ("./") is
/// skipped. After an error every call returns that error again.
class reader {
public:
  /// Opens an archive file.
  static caf::expected<reader> open(const std::filesystem::path& archive,
                                    const options& opts = {});

  /// Opens an archive held in memory; `bytes` must outlive the reader.
  static caf::expected<reader> open_memory(std::string_view bytes, const options& opts = {});

  reader(reader&&) noexcept;
  reader& operator=(reader&&) noexcept;
  ~reader();

  /// The next entry, checked; nullptr after the last. Unread contents of the entry
  /// before are skipped (not unpacked, so not counted against the byte limits).
  caf::expected<const entry*> next();

  /// Reads up to `size` bytes of the current file entry into `buf`; 0 at its end (and
  /// for entries that are not files).
  caf::expected<size_t> read(char* buf, size_t size);

private:
  struct impl;
  explicit reader(std::unique_ptr<impl> ptr);
  std::unique_ptr<impl> impl_;
};

} // namespace grove::archive
