#pragma once

// groved's hooks into its allocator, looked up by name: the libraries are not linked to
// jemalloc (only groved and the benchmarks are), and other allocators have no `mallctl`,
// so with them these do nothing. Private to the SDK and the kernel.

#include <dlfcn.h>

namespace grove::detail {

/// jemalloc's `mallctl`, or null.
inline auto allocator_ctl() {
  using mallctl_fn = int (*)(const char*, void*, size_t*, void*, size_t);
  static auto* mallctl = reinterpret_cast<mallctl_fn>(::dlsym(RTLD_DEFAULT, "mallctl"));
  return mallctl;
}

/// Hands the calling thread's allocator cache back to the shared arenas. jemalloc
/// collects a thread's cache only as that thread allocates, so a thread that goes idle
/// after start-up (the main thread, watchers, writers between bursts) would keep what
/// it cached for good: ~0.5 MB over groved's idle threads in the default image.
inline void flush_thread_cache() {
  if (auto* mallctl = allocator_ctl())
    mallctl("thread.tcache.flush", nullptr, nullptr, nullptr, 0);
}

/// Returns the allocator's free pages to the system. jemalloc hands freed pages back
/// only as later allocations age them out, so an idle groved would keep the transient
/// cost of loading a big group (~7 MB at the limits) or of its start-up for good.
inline void release_free_pages() {
  if (auto* mallctl = allocator_ctl())
    mallctl("arena.4096.purge", nullptr, nullptr, nullptr, 0); // 4096: every arena
}

} // namespace grove::detail
