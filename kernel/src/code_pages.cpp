#include "code_pages.hpp"

#include <cstdio>
#include <sys/mman.h>

namespace grove {

code_pages_released release_code_pages() noexcept {
  code_pages_released result;
  // stdio, not iostreams: this runs on a quiet device and must not allocate much.
  FILE* maps = std::fopen("/proc/self/maps", "re");
  if (maps == nullptr)
    return result;
  char line[4096];
  while (std::fgets(line, sizeof line, maps) != nullptr) {
    unsigned long begin = 0;
    unsigned long end = 0;
    char perms[8] = {};
    int path_at = 0;
    if (std::sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &begin, &end, perms, &path_at) < 3)
      continue;
    // File-backed only (anonymous and [stack]/[vdso] have no leading '/'), and never a
    // writable one: its dirtied pages are anonymous and would only go to swap.
    if (path_at <= 0 || line[path_at] != '/' || perms[1] == 'w')
      continue;
    auto* addr = reinterpret_cast<void*>(begin);
    auto len = static_cast<size_t>(end - begin);
    // MADV_RANDOM first: with read-ahead off, a page faulted back later brings in only
    // itself, and fault-around maps only what the page cache still holds.
    if (::madvise(addr, len, MADV_RANDOM) != 0)
      continue;
    if (::madvise(addr, len, MADV_PAGEOUT) != 0)
      continue;
    ++result.mappings;
    result.bytes += len;
  }
  std::fclose(maps);
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
