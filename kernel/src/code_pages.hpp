#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace grove {

/// What release_code_pages() did.
struct code_pages_released {
  /// Read-only file mappings advised (the executable, libraries, plugins).
  size_t mappings = 0;
  /// Their total size in bytes (what was advised, not what was resident).
  size_t bytes = 0;
  /// Of those, mappings with no private page whose pages were also unmapped.
  size_t unmapped = 0;
};

/// Tells the kernel that the code and read-only data groved mapped so far are cold:
/// every read-only, file-backed mapping of this process gets MADV_RANDOM (a later fault
/// reads one page, not a read-ahead window) and MADV_PAGEOUT (pages only this process
/// maps are reclaimed now). Start-up code (profile and YAML parsing, plugin loading,
/// TLS set-up) then stops counting against the idle footprint, and what the idle loop
/// and the bus touch faults back in page by page. Writable mappings are left alone:
/// their touched pages are anonymous copies. Returns zeros where madvise is refused.
/// Then, since MADV_PAGEOUT leaves every page another process maps too (the C and C++
/// runtimes, OpenSSL, which the managed broker shares, whose own release skips them for
/// the same reason), groved unmaps its view of the libraries outside `keep_out` (the
/// plugin and write directories) with MADV_DONTNEED: only read-only mappings with no
/// private page, of libraries pinned loaded for good first. A page touched later is
/// mapped again from the page cache.
code_pages_released release_code_pages(const std::vector<std::string>& keep_out = {}) noexcept;

/// This process's resident file-backed memory in kB (RssFile of /proc/self/status).
size_t resident_file_kb() noexcept;

} // namespace grove
