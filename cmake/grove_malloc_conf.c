/* jemalloc's compiled-in options, read at start-up. Compiled into every executable that
 * links grove_allocator (groved, the benchmarks), so a benchmark measures the allocator
 * groved ships; other allocators ignore the symbol. MALLOC_CONF still overrides it.
 *
 * - narenas:2       two arenas suit a small device; the default, four per core, holds
 *                   ~350 kB more idle memory.
 * - tcache_max:4096 and tcache_nslots_small_max:32, tcache_nslots_large:4: each thread
 *                   caches fewer freed blocks. groved has a dozen threads with
 *                   message_manager (CAF workers, Paho, spool, broker supervisor) and
 *                   an idle thread never gives its cache back; the defaults (32 kB,
 *                   200 and 20 slots) held ~500 kB of idle memory in the default image
 *                   (tools/bench/memory_bench.py --breakdown). Bus messages are small
 *                   and still come from the cache; bus_bench's ratio to CAF is unchanged
 *                   within its noise (tools/bench/README.md).
 */
__attribute__((visibility("default"))) const char* malloc_conf
  = "narenas:2,tcache_max:4096,tcache_nslots_small_max:32,tcache_nslots_large:4";
