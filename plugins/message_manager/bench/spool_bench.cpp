// spool_bench: offline ingest into a `file` spool (group commit, one fsync per batch),
// then drain (peek + ack), against a plain SQLite insert loop in the same run (WAL, same
// synchronous setting, prepared statement, one transaction per 512 rows). Spool and loop
// alternate for --rounds rounds, so load that drifts during the run hits both alike; the
// figures are the medians. Prints one JSON object.
// Usage: spool_bench [--messages N] [--dir D] [--sync full|normal] [--rounds R]

#include <sqlite3.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "grove/errors.hpp"
#include "spool.hpp"

using namespace grove::mm;
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

namespace {

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "spool_bench: %s\n", what.c_str());
  std::exit(1);
}

// The peer: what a hand-written SQLite loop achieves on the same disk.
double sqlite_insert_loop(const fs::path& file, uint64_t n, const std::string& topic,
                          const std::string& payload, bool full_sync) {
  sqlite3* db = nullptr;
  if (sqlite3_open(file.c_str(), &db) != SQLITE_OK)
    die("sqlite open failed");
  auto exec = [&](const char* sql) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK)
      die(std::string{"sqlite: "} + sqlite3_errmsg(db));
  };
  exec("PRAGMA journal_mode=WAL");
  exec(full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
  exec("CREATE TABLE spool(seq INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
       " payload BLOB NOT NULL, qos INTEGER NOT NULL)");
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, "INSERT INTO spool VALUES(?1, ?2, ?3, ?4)", -1, &stmt,
                         nullptr)
      != SQLITE_OK)
    die("sqlite prepare failed");
  auto start = clock_type::now();
  for (uint64_t i = 1; i <= n; ++i) {
    if (i % 512 == 1)
      exec("BEGIN");
    sqlite3_bind_int64(stmt, 1, static_cast<sqlite3_int64>(i));
    sqlite3_bind_text(stmt, 2, topic.data(), static_cast<int>(topic.size()),
                      SQLITE_STATIC);
    sqlite3_bind_blob(stmt, 3, payload.data(), static_cast<int>(payload.size()),
                      SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 4, 1);
    if (sqlite3_step(stmt) != SQLITE_DONE)
      die("sqlite insert failed");
    sqlite3_reset(stmt);
    if (i % 512 == 0 || i == n)
      exec("COMMIT");
  }
  auto elapsed = seconds_since(start);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return static_cast<double>(n) / elapsed;
}

struct spool_rates {
  double ingest = 0;
  double drain = 0;
};

// The spool: n pushes while offline, flush; then drain with peek(512) + ack, flush.
spool_rates spool_round(const fs::path& file, uint64_t n, const std::string& topic,
                        const std::string& payload, bool full_sync) {
  spool_options opts;
  opts.storage = spool_storage::file;
  opts.file = file;
  opts.fsync_each_batch = full_sync;
  // Offline: the whole backlog must fit, nothing dropped.
  opts.max_size_bytes = n * (topic.size() + payload.size() + spool::message_overhead);
  opts.when_full = spool_when_full::reject_new;
  auto sp = spool::open(opts);
  if (!sp)
    die(grove::describe(sp.error()));
  spool_rates result;
  auto start = clock_type::now();
  for (uint64_t i = 0; i < n; ++i)
    if (auto seq = (*sp)->push(topic, payload); !seq)
      die(grove::describe(seq.error()));
  if (auto err = (*sp)->flush())
    die(grove::describe(err));
  result.ingest = static_cast<double>(n) / seconds_since(start);
  auto after_ingest = (*sp)->stats();
  if (after_ingest.committed_seq != n || after_ingest.count != n)
    die("ingest lost messages");
  start = clock_type::now();
  uint64_t drained = 0;
  for (;;) {
    auto batch = (*sp)->peek(512);
    if (batch.empty())
      break;
    for (auto& m : batch)
      (*sp)->ack(m.seq);
    drained += batch.size();
  }
  if (auto err = (*sp)->flush())
    die(grove::describe(err));
  result.drain = static_cast<double>(drained) / seconds_since(start);
  if (drained != n || (*sp)->stats().count != 0)
    die("drain incomplete");
  return result;
}

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  auto mid = xs.size() / 2;
  return xs.size() % 2 == 1 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2;
}

} // namespace

int main(int argc, char** argv) {
  uint64_t n = 200'000;
  fs::path base = fs::temp_directory_path();
  bool full_sync = true;
  int rounds = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--messages") == 0)
      n = std::stoull(argv[i + 1]);
    else if (std::strcmp(argv[i], "--dir") == 0)
      base = argv[i + 1];
    else if (std::strcmp(argv[i], "--sync") == 0)
      full_sync = std::strcmp(argv[i + 1], "normal") != 0;
    else if (std::strcmp(argv[i], "--rounds") == 0)
      rounds = std::max(1, std::stoi(argv[i + 1]));
    else
      die(std::string{"unknown option "} + argv[i]);
  }
  auto templ = (base / "spool_bench.XXXXXX").string();
  if (mkdtemp(templ.data()) == nullptr)
    die("mkdtemp failed in " + base.string());
  fs::path dir = templ;
  const std::string topic = "dt/sensors/device-0042/telemetry";
  const std::string payload(256, 'p');

  std::vector<double> ingest, drain, peer, ratios;
  for (int r = 0; r < rounds; ++r) {
    auto round_dir = dir / std::to_string(r);
    fs::create_directories(round_dir);
    auto rates = spool_round(round_dir / "spool.db", n, topic, payload, full_sync);
    auto peer_rate = sqlite_insert_loop(round_dir / "peer.db", n, topic, payload, full_sync);
    ingest.push_back(rates.ingest);
    drain.push_back(rates.drain);
    peer.push_back(peer_rate);
    ratios.push_back(rates.ingest / peer_rate);
  }
  std::error_code ec;
  fs::remove_all(dir, ec);

  std::string per_round;
  for (auto x : ratios) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%s%.2f", per_round.empty() ? "" : ",", x);
    per_round += buf;
  }
  auto ingest_rate = median(ingest);
  std::printf("{\"bench\":\"spool\",\"messages\":%llu,\"payload_bytes\":%zu,"
              "\"synchronous\":\"%s\",\"rounds\":%d,\"ingest_msgs_per_s\":%.0f,"
              "\"drain_msgs_per_s\":%.0f,\"sqlite_batch512_msgs_per_s\":%.0f,"
              "\"ingest_vs_sqlite\":%.2f,\"ingest_vs_sqlite_rounds\":[%s],"
              "\"target_ingest_msgs_per_s\":50000,\"target_met\":%s}\n",
              static_cast<unsigned long long>(n), payload.size(),
              full_sync ? "FULL" : "NORMAL", rounds, ingest_rate, median(drain),
              median(peer), median(ratios), per_round.c_str(),
              ingest_rate >= 50'000 ? "true" : "false");
  return 0;
}
