/* jemalloc's compiled-in options, read at start-up. Compiled into every executable that
 * links grove_allocator (groved, the benchmarks), so a benchmark measures the allocator
 * groved ships; other allocators ignore the symbol. MALLOC_CONF still overrides it.
 *
 * - narenas:2       two arenas suit a small device; the default, four per core, holds
 *                   ~350 kB more idle memory.
 * - tcache_gc_incr_bytes:4096
 *                   cache GC every ~4 kB of a thread's allocation traffic (jemalloc counts
 *                   frees too; each GC event flushes one size class) instead of 64 kB,
 *                   so groved's threads that still see some traffic (timers, watchers,
 *                   links) hand back the blocks start-up left in their caches: -0.4 MB
 *                   of idle anonymous memory in the default image, for +0.6% bus instructions
 *                   (bare CAF in the same bench +1.1%: the ratio holds; tools/bench/README.md).
 * - Thread caches otherwise stay at jemalloc's defaults. Smaller ones
 *   (tcache_nslots_small_max:64) held another ~0.5 MB less, but cost the bus +1.8%
 *   instructions per message, and tcache_max:4096 with 32/4 slots +6.4%.
 */
__attribute__((visibility("default"))) const char* malloc_conf
  = "narenas:2,tcache_gc_incr_bytes:4096";
