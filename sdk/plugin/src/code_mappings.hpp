#pragma once

// The read-only, file-backed mappings of a process (its code and read-only data), as
// /proc/<pid>/maps lists them: what groved marks cold for itself (kernel/src/code_pages.cpp)
// and for a child (process::release_code_pages). Private to the SDK and the kernel.

#include <cstddef>
#include <cstdio>

namespace grove::detail {

/// Calls `fn(begin, length)` for each read-only, file-backed mapping of /proc/`pid`/maps
/// ("self" for this process); false when the file cannot be opened. stdio, not
/// iostreams: this runs on a quiet device and must not allocate much.
template <class F>
bool for_each_code_mapping(const char* pid, F fn) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%s/maps", pid);
  FILE* maps = std::fopen(path, "re");
  if (maps == nullptr)
    return false;
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
    fn(begin, static_cast<size_t>(end - begin));
  }
  std::fclose(maps);
  return true;
}

} // namespace grove::detail
