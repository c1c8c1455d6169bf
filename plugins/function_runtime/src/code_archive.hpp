#pragma once

// A function's code shipped as an archive (codeUri ending in .zip or .tar.gz): checked
// against its SHA-256 (codeSha256), then unpacked once into the runtime's state
// directory with the SDK's grove::archive, refusing entries that would land outside it.

#include <filesystem>
#include <string>

#include <caf/expected.hpp>

namespace grove::fn {

/// True when `uri` names an archive this runtime unpacks (.zip, .tar.gz, .tgz).
bool is_code_archive(const std::string& uri);

/// The lowercase hex SHA-256 of the file at `path`.
caf::expected<std::string> sha256_file(const std::filesystem::path& path);

/// Checks `archive` against `sha256` (hex) and unpacks it into `root/<sha256>/`, or
/// reuses that directory when an earlier unpack completed (without hashing the archive
/// again when it is the same file, unchanged since: device, inode, size, mtime, ctime);
/// returns it. Errors: a digest
/// mismatch, an unreadable archive, an entry with an absolute path or `..`, a link out,
/// a device or FIFO, more than grove::archive's default limits.
caf::expected<std::filesystem::path> unpack_code(const std::filesystem::path& archive,
                                                 const std::string& sha256,
                                                 const std::filesystem::path& root);

} // namespace grove::fn
