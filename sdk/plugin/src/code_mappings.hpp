#pragma once

// The read-only, file-backed mappings of a process (its code and read-only data), as
// /proc/<pid>/maps lists them: what groved marks cold for itself (kernel/src/code_pages.cpp)
// and for a child (process::release_code_pages). Private to the SDK and the kernel.

#include <cstddef>
#include <cstdio>

namespace grove::detail {

/// Pages out again, on the supervisor's thread, the code of every grove::process child
/// whose code was released (process::release_code_pages) and still runs: after groved
/// unmapped its own view of the libraries it shares with them (release_code_pages in
/// the kernel), their pages are the children's alone and can go. Defined in process.cpp.
void release_children_code_pages() noexcept;

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

/// Calls `fn(begin, length, major, minor, inode)` for each read-only, private,
/// file-backed mapping of /proc/`pid`/smaps that holds no private page (`Anonymous` and
/// `Swap` 0 kB): every page it has is the file's, from the page cache, so unmapping it
/// loses nothing. A mapping relocations or a debugger wrote to has private copies and
/// is skipped.
template <class F>
bool for_each_clean_code_mapping(const char* pid, F fn) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%s/smaps", pid);
  FILE* smaps = std::fopen(path, "re");
  if (smaps == nullptr)
    return false;
  char line[4096];
  unsigned long begin = 0;
  unsigned long end = 0;
  unsigned major = 0;
  unsigned minor = 0;
  unsigned long inode = 0;
  bool candidate = false;
  bool clean = true;
  auto done = [&] {
    if (candidate && clean)
      fn(begin, static_cast<size_t>(end - begin), major, minor, inode);
    candidate = false;
    clean = true;
  };
  while (std::fgets(line, sizeof line, smaps) != nullptr) {
    unsigned long b = 0;
    unsigned long e = 0;
    char perms[8] = {};
    unsigned maj = 0;
    unsigned min = 0;
    unsigned long ino = 0;
    int path_at = 0;
    // A mapping's header: "begin-end perms offset major:minor inode path". Field lines
    // ("Rss:  4 kB") never parse that far.
    if (std::sscanf(line, "%lx-%lx %7s %*s %x:%x %lu %n", &b, &e, perms, &maj, &min, &ino,
                    &path_at)
        >= 6) {
      done();
      begin = b;
      end = e;
      major = maj;
      minor = min;
      inode = ino;
      candidate = path_at > 0 && line[path_at] == '/' && perms[1] != 'w' && perms[3] == 'p'
                  && ino != 0;
      continue;
    }
    unsigned long kb = 0;
    if (std::sscanf(line, "Anonymous: %lu kB", &kb) == 1
        || std::sscanf(line, "Swap: %lu kB", &kb) == 1)
      clean = clean && kb == 0;
  }
  done();
  std::fclose(smaps);
  return true;
}

} // namespace grove::detail
