#include "code_pages.hpp"

#include <cstdio>
#include <sys/mman.h>

#include "code_mappings.hpp"

namespace grove {

code_pages_released release_code_pages() noexcept {
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
