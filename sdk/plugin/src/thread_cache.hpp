#pragma once

#include <dlfcn.h>

namespace grove::detail {

/// Hands the calling thread's allocator cache back to the shared arenas. jemalloc (linked
/// into groved) collects a thread's cache only as that thread allocates, so a thread that
/// goes idle after start-up (the main thread, watchers, writers between bursts) would keep
/// what it cached for good: ~1 MB over groved's idle threads in the default image. Looked
/// up by name: the libraries are not linked to jemalloc, and other allocators have no
/// `mallctl` (then this does nothing).
inline void flush_thread_cache() {
  using mallctl_fn = int (*)(const char*, void*, size_t*, void*, size_t);
  static auto* mallctl = reinterpret_cast<mallctl_fn>(::dlsym(RTLD_DEFAULT, "mallctl"));
  if (mallctl)
    mallctl("thread.tcache.flush", nullptr, nullptr, nullptr, 0);
}

} // namespace grove::detail
