#pragma once

// Files replaced whole: the one home of "temporary file beside it, write, fsync, rename,
// fsync the directory" for the kernel and the plugins (configuration and ACL files a
// child reads, keys, state files, the group file).

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string_view>

#include <caf/error.hpp>

namespace grove {

/// A file's owner: user and group ids.
struct file_owner {
  /// User id.
  uid_t uid;
  /// Group id.
  gid_t gid;
};

/// How write_file_atomically writes.
struct write_options {
  /// The file's mode, exactly (the umask takes nothing away); empty: the replaced file's
  /// permission bits when it is a regular file, else `0666 & ~umask` as open(2) would give.
  std::optional<mode_t> mode = std::nullopt;
  /// Set before the file appears under its name, so a reader running as that user never
  /// sees one it cannot read; empty: the file belongs to the writer.
  std::optional<file_owner> owner = std::nullopt;
  /// True: the content and the rename reach the disk before the call returns. False only
  /// for a file its reader can tell complete and that is written again at start: a crash
  /// soon after may leave it cut short or empty (the rename reached the disk first).
  bool sync = true;
  /// Called with the complete temporary file (before its fsync) before it replaces the old
  /// one, to validate it as the reader will; an error it returns is returned as it is, the
  /// old file kept; if it throws, the temporary file is removed and the exception goes on.
  std::function<caf::error(const std::filesystem::path& written)> check = nullptr;
};

/// Replaces `path` with the concatenated `parts` so that a reader sees the old content or
/// the new, never a mix: a new file beside it (`.<name>.XXXXXX`, made with O_EXCL and
/// O_NOFOLLOW), written, given its mode and owner, checked, fsync'd, renamed over `path`,
/// and the directory fsync'd (a file system that cannot fsync a directory counts as done).
/// Temporary files of the same name older than 60 s (a writer killed mid-way) are removed
/// first. The directory must exist (it may be reached through a symlink); a symlink at
/// `path` itself is replaced, never followed. On a failure before the rename the old file
/// stays as it was, no temporary file is left, and the `errc::system_error` names `path`,
/// the step and the system's reason; a failed directory fsync after the rename is an error
/// for which replaced_not_durable() is true: the new file is in place.
caf::error write_file_atomically(const std::filesystem::path& path,
                                 std::initializer_list<std::string_view> parts,
                                 const write_options& opts = {});

/// write_file_atomically with one part.
caf::error write_file_atomically(const std::filesystem::path& path, std::string_view contents,
                                 const write_options& opts = {});

/// True for write_file_atomically's error "replaced, but not yet durable: …": the file was
/// replaced, only the directory fsync after the rename failed.
bool replaced_not_durable(const caf::error& err);

/// fsync of a directory, so that a rename, link or unlink in it survives a crash (a file
/// system that cannot fsync a directory counts as done, as in write_file_atomically).
caf::error sync_directory(const std::filesystem::path& dir);

} // namespace grove
