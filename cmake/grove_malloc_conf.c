/* jemalloc's compiled-in options, read at start-up. Compiled into every executable that
 * links grove_allocator (groved, the benchmarks), so a benchmark measures the allocator
 * groved ships; other allocators ignore the symbol. MALLOC_CONF still overrides it.
 *
 * - narenas:2       two arenas suit a small device; the default, four per core, holds
 *                   ~350 kB more idle memory.
 * - Thread caches stay at jemalloc's defaults. Smaller ones (tcache_max:4096,
 *   tcache_nslots_small_max:32, tcache_nslots_large:4) held ~500 kB less idle memory in
 *   the default image, but cost the bus 6.4% more instructions per message (callgrind of
 *   bus_bench, 100,000 messages: 895 M against 841 M instructions) and the SDK issue
 *   allows the bus no loss beyond 5%.
 */
__attribute__((visibility("default"))) const char* malloc_conf
  = "narenas:2";
