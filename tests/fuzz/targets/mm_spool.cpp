// message_manager's spool file (plugins/message_manager/src/spool.cpp): the SQLite
// database spool::open() reloads at every start (load(): the meta and spool rows). It is
// a file on disk, so it may be damaged (power loss, a bad disk) or edited by hand: open()
// must answer an error naming the file, or a spool that keeps its invariants: every
// message handed out once, in increasing sequence order, as many as stats() counts, and a
// new push numbered after all of them.

#include <system_error>

#include "fuzz_support.hpp"
#include "spool.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static grove::fuzz::input_file input{"spool.db"};
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto& file = input.write(grove::fuzz::bytes(data, size));
  // SQLite's side files of the last input would be replayed into this one.
  fs::remove(file.string() + "-wal", ec);
  fs::remove(file.string() + "-shm", ec);
  grove::mm::spool_options opts;
  opts.storage = grove::mm::spool_storage::file;
  opts.file = file;
  opts.fsync_each_batch = false;
  opts.disk_reserve_bytes = 0;
  auto sp = grove::mm::spool::open(opts);
  if (!sp) {
    grove::fuzz::require(grove::describe(sp.error()).find(file.string()) != std::string::npos,
                         "spool::open: the error does not name the file");
    return 0;
  }
  auto count = (*sp)->stats().count;
  uint64_t last = 0;
  uint64_t seen = 0;
  for (auto batch = (*sp)->peek(64); !batch.empty(); batch = (*sp)->peek(64)) {
    for (const auto& m : batch) {
      grove::fuzz::require(seen == 0 || m.seq > last, "peek: sequence numbers not increasing");
      last = m.seq;
      ++seen;
      (*sp)->ack(m.seq);
    }
  }
  grove::fuzz::require(seen == count, "peek handed out another number than stats().count");
  auto next = (*sp)->push("t", "p", 1);
  if (next)
    grove::fuzz::require(*next > last, "push after open reused a sequence number");
  return 0;
}
