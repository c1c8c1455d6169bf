#pragma once

#include <cstddef>

namespace grove {

/// What release_code_pages() did.
struct code_pages_released {
  /// Read-only file mappings advised (the executable, libraries, plugins).
  size_t mappings = 0;
  /// Their total size in bytes (what was advised, not what was resident).
  size_t bytes = 0;
};

/// Tells the kernel that the code and read-only data groved mapped so far are cold:
/// every read-only, file-backed mapping of this process gets MADV_RANDOM (a later fault
/// reads one page, not a read-ahead window) and MADV_PAGEOUT (pages only this process
/// maps are reclaimed now). Start-up code (profile and YAML parsing, plugin loading,
/// TLS set-up) then stops counting against the idle footprint, and what the idle loop
/// and the bus touch faults back in page by page. Writable mappings are left alone:
/// their touched pages are anonymous copies. Returns zeros where madvise is refused.
code_pages_released release_code_pages() noexcept;

/// This process's resident file-backed memory in kB (RssFile of /proc/self/status).
size_t resident_file_kb() noexcept;

} // namespace grove
