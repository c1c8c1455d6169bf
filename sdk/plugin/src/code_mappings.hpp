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

/// One mapping's header line of /proc/<pid>/maps or smaps:
/// "begin-end perms offset major:minor inode path".
struct mapping_header {
  unsigned long begin = 0;
  unsigned long end = 0;
  char perms[8] = {};
  unsigned major = 0;
  unsigned minor = 0;
  unsigned long inode = 0;
  /// Backed by a file (anonymous, [stack] and [vdso] have no leading '/') and never
  /// writable: a writable mapping's dirtied pages are anonymous and would only go to swap.
  bool read_only_file = false;
};

/// Parses `line` as a mapping's header; false for anything else (smaps' field lines
/// such as "Rss:  4 kB" never parse that far).
inline bool parse_mapping_header(const char* line, mapping_header& out) {
  int path_at = 0;
  if (std::sscanf(line, "%lx-%lx %7s %*s %x:%x %lu %n", &out.begin, &out.end, out.perms,
                  &out.major, &out.minor, &out.inode, &path_at)
      < 6)
    return false;
  out.read_only_file = path_at > 0 && line[path_at] == '/' && out.perms[1] != 'w';
  return true;
}

/// Calls `on_line(line)` for each line of /proc/`pid`/`file` ("self" for this process);
/// false when the file cannot be opened. stdio, not iostreams: this runs on a quiet
/// device and must not allocate much.
template <class F>
bool for_each_proc_line(const char* pid, const char* file, F on_line) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%s/%s", pid, file);
  FILE* in = std::fopen(path, "re");
  if (in == nullptr)
    return false;
  char line[4096];
  while (std::fgets(line, sizeof line, in) != nullptr)
    on_line(line);
  std::fclose(in);
  return true;
}

/// Calls `fn(begin, length)` for each read-only, file-backed mapping of /proc/`pid`/maps.
template <class F>
bool for_each_code_mapping(const char* pid, F fn) {
  return for_each_proc_line(pid, "maps", [&](const char* line) {
    mapping_header m;
    if (parse_mapping_header(line, m) && m.read_only_file)
      fn(m.begin, static_cast<size_t>(m.end - m.begin));
  });
}

/// Calls `fn(begin, length, major, minor, inode)` for each read-only, private,
/// file-backed mapping of /proc/`pid`/smaps that holds no private page (`Anonymous` and
/// `Swap` 0 kB): every page it has is the file's, from the page cache, so unmapping it
/// loses nothing. A mapping relocations or a debugger wrote to has private copies and
/// is skipped.
template <class F>
bool for_each_clean_code_mapping(const char* pid, F fn) {
  mapping_header m;
  bool candidate = false;
  bool clean = true;
  auto done = [&] {
    if (candidate && clean)
      fn(m.begin, static_cast<size_t>(m.end - m.begin), m.major, m.minor, m.inode);
    candidate = false;
    clean = true;
  };
  bool read = for_each_proc_line(pid, "smaps", [&](const char* line) {
    mapping_header next;
    if (parse_mapping_header(line, next)) {
      done();
      m = next;
      candidate = m.read_only_file && m.perms[3] == 'p' && m.inode != 0;
      return;
    }
    unsigned long kb = 0;
    if (std::sscanf(line, "Anonymous: %lu kB", &kb) == 1
        || std::sscanf(line, "Swap: %lu kB", &kb) == 1)
      clean = clean && kb == 0;
  });
  done();
  return read;
}

} // namespace grove::detail
