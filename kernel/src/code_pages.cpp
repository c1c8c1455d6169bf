#include "code_pages.hpp"

#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <utility>

#include "code_mappings.hpp"
#include "grove/plugin.hpp"

namespace grove {

namespace {

/// The (device, inode) of each library loaded now whose path is under none of
/// `keep_out`, pinned first (RTLD_NODELETE): a pinned library stays mapped where it is
/// until groved exits, so no other mapping can take its addresses while they are
/// advised. Plugins (under `keep_out`, or with the plugin entry point) are never pinned:
/// unloading and reloading them must work as before.
std::set<std::pair<dev_t, ino_t>> pinned_libraries(const std::vector<std::string>& keep_out) {
  std::vector<std::string> names;
  ::dl_iterate_phdr(
    [](dl_phdr_info* info, size_t, void* out) {
      // No dlopen in here: the loader's lock is held.
      if (info->dlpi_name != nullptr && info->dlpi_name[0] == '/')
        static_cast<std::vector<std::string>*>(out)->emplace_back(info->dlpi_name);
      return 0;
    },
    &names);
  std::set<std::pair<dev_t, ino_t>> result;
  for (auto& name : names) {
    if (std::any_of(keep_out.begin(), keep_out.end(), [&](const std::string& dir) {
          return !dir.empty() && name.compare(0, dir.size(), dir) == 0;
        }))
      continue;
    // RTLD_NOLOAD: only if it is still loaded (a plugin's dependency may have gone).
    void* handle = ::dlopen(name.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    if (handle == nullptr)
      continue;
    // A plugin loaded from elsewhere (`grovectl load NAME --library PATH`) is never
    // pinned either: it has the entry point.
    bool plugin = ::dlsym(handle, plugin_entry_symbol) != nullptr;
    if (!plugin)
      if (void* pin = ::dlopen(name.c_str(), RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE))
        ::dlclose(pin); // the reference taken just now; NODELETE stays
    ::dlclose(handle);
    if (plugin)
      continue;
    struct ::stat st {};
    if (::stat(name.c_str(), &st) == 0)
      result.emplace(st.st_dev, st.st_ino);
  }
  return result;
}

} // namespace

code_pages_released release_code_pages(const std::vector<std::string>& keep_out) noexcept {
  code_pages_released result;
  detail::for_each_code_mapping("self", [&](unsigned long begin, size_t len) {
    auto* addr = reinterpret_cast<void*>(begin);
    // MADV_RANDOM first: with read-ahead off, a page faulted back later brings in only
    // itself, and fault-around maps only what the page cache still holds.
    if (::madvise(addr, len, MADV_RANDOM) != 0)
      return;
    if (::madvise(addr, len, MADV_PAGEOUT) != 0)
      return;
    ++result.mappings;
    result.bytes += len;
  });
  // MADV_PAGEOUT leaves the pages another process maps too (the C and C++ runtimes,
  // OpenSSL, which the managed broker shares): groved keeps them in its footprint, and
  // the broker's own release (process::release_code_pages) skips them as shared. Unmap
  // groved's view of them: a read-only mapping with no private copy (no Anonymous or
  // Swap page in smaps) holds only page-cache pages, which a later access maps again.
  // Only pinned libraries' mappings: a plugin unloaded meanwhile could leave its
  // addresses to a new mapping with private pages, which MADV_DONTNEED would drop.
  try {
    auto pinned = pinned_libraries(keep_out);
    detail::for_each_clean_code_mapping(
      "self", [&](unsigned long begin, size_t len, unsigned major, unsigned minor,
                  unsigned long inode) {
        if (pinned.count({makedev(major, minor), static_cast<ino_t>(inode)}) == 0)
          return;
        if (::madvise(reinterpret_cast<void*>(begin), len, MADV_DONTNEED) == 0)
          ++result.unmapped;
      });
  } catch (...) {
    // Out of memory while listing: the pages stay mapped, nothing else changes.
  }
  return result;
}

size_t resident_file_kb() noexcept {
  FILE* status = std::fopen("/proc/self/status", "re");
  if (status == nullptr)
    return 0;
  char line[256];
  size_t kb = 0;
  while (std::fgets(line, sizeof line, status) != nullptr)
    if (std::sscanf(line, "RssFile: %zu kB", &kb) == 1)
      break;
  std::fclose(status);
  return kb;
}

} // namespace grove
