#define BOOST_TEST_MODULE spool_test
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/statvfs.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

#include "test_support.hpp"
#include "grove/errors.hpp"
#include "spool.hpp"

namespace grove {
// Lets BOOST_TEST print error codes.
std::ostream& operator<<(std::ostream& os, errc x) {
  return os << to_string(x);
}
} // namespace grove

using namespace grove::mm;
namespace fs = std::filesystem;

using grove::test::reporting_child;
using grove::test::temp_dir;

namespace {

grove::errc code_of(const caf::error& err) {
  return static_cast<grove::errc>(err.code());
}

std::unique_ptr<spool> open_ok(spool_options opts) {
  auto result = spool::open(std::move(opts));
  if (!result)
    BOOST_FAIL("open failed: " << grove::describe(result.error()));
  return std::move(*result);
}

// `file` storage at `file`, the other options their defaults.
spool_options file_at(const fs::path& file) {
  spool_options opts;
  opts.storage = spool_storage::file;
  opts.file = file;
  return opts;
}

// Runs a check once with memory storage and once with file storage.
void for_each_storage(const std::function<void(spool_options)>& check) {
  {
    BOOST_TEST_CONTEXT("memory") {
      check(spool_options{});
    }
  }
  {
    temp_dir dir;
    BOOST_TEST_CONTEXT("file") {
      check(file_at(dir.path() / "state" / "spool.db"));
    }
  }
}

// `file` storage in `dir` that never drops: 64 MB, reject_new.
spool_options unbounded_file(const temp_dir& dir) {
  auto opts = file_at(dir.path() / "spool.db");
  opts.max_size_bytes = 64ull << 20;
  opts.when_full = spool_when_full::reject_new;
  return opts;
}

std::string payload_of(uint64_t i) {
  return "message-" + std::to_string(i);
}

// A spool of `opts` holding payload_of(1) .. payload_of(n) on topic t.
std::unique_ptr<spool> open_with(const spool_options& opts, uint64_t n) {
  auto sp = open_ok(opts);
  for (uint64_t i = 1; i <= n; ++i)
    BOOST_REQUIRE(sp->push("t", payload_of(i)));
  return sp;
}

// A spool of `opts` at its smallest size, full of `fits` messages of 1000 bytes.
struct full_spool {
  std::string payload = std::string(1000, 'x');
  uint64_t each = 1 + payload.size() + spool::message_overhead; // bytes a message counts
  uint64_t fits = spool::min_size_bytes / each;
  std::unique_ptr<spool> sp;

  full_spool(spool_options opts, spool_when_full when_full) {
    opts.max_size_bytes = spool::min_size_bytes;
    opts.when_full = when_full;
    sp = open_ok(opts);
    for (uint64_t i = 0; i < fits; ++i)
      BOOST_REQUIRE(sp->push("t", payload));
  }
};

// A real small filesystem: a tmpfs of `bytes` mounted at `where` (needs root, as CI and
// the dev machines run the tests), unmounted at the end of the scope.
struct small_filesystem {
  fs::path where;
  small_filesystem(fs::path dir, uint64_t bytes) : where(std::move(dir)) {
    fs::create_directories(where);
    auto opts = "size=" + std::to_string(bytes);
    BOOST_REQUIRE_MESSAGE(::mount("tmpfs", where.c_str(), "tmpfs", 0, opts.c_str()) == 0,
                          "mounting a tmpfs at " << where << " failed (needs root): "
                                                 << std::strerror(errno));
  }
  ~small_filesystem() {
    ::umount2(where.c_str(), MNT_DETACH);
  }
  uint64_t free_bytes() const {
    struct statvfs vfs {};
    BOOST_REQUIRE_EQUAL(::statvfs(where.c_str(), &vfs), 0);
    return static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  }
};

// A `file` spool on the 24 MiB `small` filesystem allowed 1 GiB, keeping 12 MiB free:
// the disk is its limit.
spool_options reserve_of_half(const small_filesystem& small, spool_when_full when_full) {
  auto opts = file_at(small.where / "spool.db");
  opts.max_size_bytes = 1ull << 30;
  opts.when_full = when_full;
  opts.disk_reserve_bytes = 12u << 20;
  return opts;
}

} // namespace

BOOST_AUTO_TEST_CASE(order_preserved) {
  for_each_storage([](spool_options opts) {
    auto sp = open_ok(opts);
    for (uint64_t i = 1; i <= 100; ++i) {
      auto seq = sp->push("dt/a", payload_of(i));
      BOOST_REQUIRE(seq);
      BOOST_TEST(*seq == i);
    }
    BOOST_TEST(!sp->flush());
    BOOST_TEST(sp->committed_seq() == 100u);
    auto got = sp->peek(30);
    auto rest = sp->peek(1000);
    BOOST_REQUIRE(got.size() == 30u);
    BOOST_REQUIRE(rest.size() == 70u);
    got.insert(got.end(), rest.begin(), rest.end());
    for (uint64_t i = 0; i < got.size(); ++i) {
      BOOST_TEST(got[i].seq == i + 1);
      BOOST_TEST(got[i].payload == payload_of(i + 1));
      BOOST_TEST(got[i].topic == "dt/a");
    }
    BOOST_TEST(sp->peek(10).empty());
    BOOST_TEST(sp->stats().in_flight == 100u);
  });
}

BOOST_AUTO_TEST_CASE(ack_removes) {
  for_each_storage([](spool_options opts) {
    auto sp = open_with(opts, 10);
    auto got = sp->peek(5);
    BOOST_REQUIRE(got.size() == 5u);
    BOOST_TEST(sp->ack(2));
    BOOST_TEST(sp->ack(1));
    BOOST_TEST(!sp->ack(1));
    BOOST_TEST(!sp->ack(4711));
    auto st = sp->stats();
    BOOST_TEST(st.count == 8u);
    BOOST_TEST(st.in_flight == 3u);
    uint64_t want_bytes = 0;
    for (uint64_t i = 3; i <= 10; ++i)
      want_bytes += 1 + payload_of(i).size() + spool::message_overhead;
    BOOST_TEST(st.bytes == want_bytes);
    // Acked messages do not come back on a nack.
    BOOST_TEST(sp->nack_all() == 3u);
    auto again = sp->peek(100);
    BOOST_REQUIRE(again.size() == 8u);
    BOOST_TEST(again.front().seq == 3u);
  });
}

BOOST_AUTO_TEST_CASE(nack_all_restores_order) {
  for_each_storage([](spool_options opts) {
    auto sp = open_with(opts, 20);
    auto first = sp->peek(10);
    BOOST_REQUIRE(first.size() == 10u);
    BOOST_TEST(sp->ack(3));
    BOOST_TEST(sp->ack(7));
    BOOST_TEST(sp->nack_all() == 8u);
    BOOST_TEST(sp->stats().in_flight == 0u);
    BOOST_TEST(sp->push("t", payload_of(21)));
    auto all = sp->peek(100);
    std::vector<uint64_t> seqs;
    for (auto& m : all)
      seqs.push_back(m.seq);
    std::vector<uint64_t> want{1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15,
                               16, 17, 18, 19, 20, 21};
    BOOST_TEST(seqs == want, boost::test_tools::per_element());
  });
}

BOOST_AUTO_TEST_CASE(drop_oldest_when_full) {
  for_each_storage([](spool_options opts) {
    full_spool full{opts, spool_when_full::drop_oldest};
    auto& [payload, each, fits, sp] = full;
    // Some are in flight when the drops happen: those go too.
    BOOST_TEST(sp->peek(10).size() == 10u);
    for (uint64_t i = 0; i < 55; ++i)
      BOOST_REQUIRE(sp->push("t", payload));
    auto st = sp->stats();
    BOOST_TEST(st.dropped_oldest == 55u);
    BOOST_TEST(st.count == fits);
    BOOST_TEST(st.bytes <= spool::min_size_bytes);
    BOOST_TEST(st.in_flight == 0u);
    BOOST_TEST(st.rejected == 0u);
    auto all = sp->peek(1000);
    BOOST_REQUIRE(all.size() == fits);
    BOOST_TEST(all.front().seq == 56u);
    BOOST_TEST(all.back().seq == fits + 55);
    BOOST_TEST(!sp->flush());
  });
}

BOOST_AUTO_TEST_CASE(reject_new_when_full) {
  for_each_storage([](spool_options opts) {
    full_spool full{opts, spool_when_full::reject_new};
    auto& [payload, each, fits, sp] = full;
    auto refused = sp->push("t", payload);
    BOOST_REQUIRE(!refused);
    BOOST_TEST(code_of(refused.error()) == grove::errc::queue_full);
    auto st = sp->stats();
    BOOST_TEST(st.rejected == 1u);
    BOOST_TEST(st.dropped_oldest == 0u);
    BOOST_TEST(st.count == fits);
    // An ack makes room again.
    BOOST_TEST(sp->ack(1));
    BOOST_TEST(sp->push("t", payload));
  });
}

BOOST_AUTO_TEST_CASE(too_large_refused) {
  for_each_storage([](spool_options opts) {
    opts.max_size_bytes = spool::min_size_bytes;
    auto sp = open_ok(opts);
    auto big = sp->push("t", std::string(spool::min_size_bytes, 'x'));
    BOOST_REQUIRE(!big);
    BOOST_TEST(code_of(big.error()) == grove::errc::too_large);
    BOOST_TEST(sp->stats().rejected == 1u);
    BOOST_TEST(sp->stats().count == 0u);
    // Exactly max_size_bytes fits.
    auto exact = spool::min_size_bytes - spool::message_overhead - 1;
    BOOST_TEST(sp->push("t", std::string(exact, 'x')));
  });
}

BOOST_AUTO_TEST_CASE(small_max_size_refused) {
  spool_options opts;
  opts.max_size_bytes = spool::min_size_bytes - 1;
  auto sp = spool::open(opts);
  BOOST_REQUIRE(!sp);
  BOOST_TEST(code_of(sp.error()) == grove::errc::invalid_config);
  BOOST_TEST(grove::describe(sp.error()).find("262144") != std::string::npos);
  opts.storage = spool_storage::file; // no file either: still the size error first
  BOOST_TEST(!spool::open(opts));
  spool_options no_file;
  no_file.storage = spool_storage::file;
  auto nf = spool::open(no_file);
  BOOST_REQUIRE(!nf);
  BOOST_TEST(code_of(nf.error()) == grove::errc::invalid_config);
}

BOOST_AUTO_TEST_CASE(commit_notifications) {
  temp_dir dir;
  auto opts = file_at(dir.path() / "spool.db");
  std::atomic<uint64_t> last{0};
  opts.on_commit = [&](uint64_t seq) { last = seq; };
  auto sp = open_ok(opts);
  for (int i = 0; i < 1000; ++i)
    BOOST_REQUIRE(sp->push("t", payload_of(i)));
  BOOST_TEST(!sp->flush());
  BOOST_TEST(sp->committed_seq() == 1000u);
  BOOST_TEST(sp->stats().committed_seq == 1000u);
  auto seq = sp->push_durable("t", "last");
  BOOST_REQUIRE(seq);
  BOOST_TEST(*seq == 1001u);
  BOOST_TEST(sp->committed_seq() == 1001u);
  // on_commit runs after committed_seq advanced; flush returned after that commit, but
  // the callback runs without the lock, so only check it once it can no longer change.
  sp.reset();
  BOOST_TEST(last.load() == 1001u);
}

BOOST_AUTO_TEST_CASE(concurrent_push_and_drain) {
  for_each_storage([](spool_options opts) {
    opts.max_size_bytes = 64ull << 20;
    auto sp = open_ok(opts);
    constexpr uint64_t per_producer = 5000;
    auto produce = [&](const std::string& topic) {
      for (uint64_t i = 0; i < per_producer; ++i)
        if (!sp->push(topic, payload_of(i)))
          return;
    };
    std::thread a{produce, "a"};
    std::thread b{produce, "b"};
    // Per topic, messages must come out in push order.
    uint64_t acked = 0, next_a = 0, next_b = 0, last_seq = 0;
    bool ordered = true;
    while (acked < 2 * per_producer) {
      auto batch = sp->peek(64);
      if (batch.empty()) {
        std::this_thread::yield();
        continue;
      }
      for (auto& m : batch) {
        auto& next = m.topic == "a" ? next_a : next_b;
        ordered = ordered && m.payload == payload_of(next++) && m.seq > last_seq;
        last_seq = m.seq;
        acked += sp->ack(m.seq) ? 1 : 0;
      }
    }
    a.join();
    b.join();
    BOOST_TEST(ordered);
    BOOST_TEST(!sp->flush());
    auto st = sp->stats();
    BOOST_TEST(st.count == 0u);
    BOOST_TEST(st.in_flight == 0u);
    BOOST_TEST(st.committed_seq == 2 * per_producer);
    if (opts.storage == spool_storage::file) {
      sp.reset();
      BOOST_TEST(open_ok(opts)->stats().count == 0u);
    }
  });
}

BOOST_AUTO_TEST_CASE(file_survives_reopen) {
  temp_dir dir;
  auto opts = file_at(dir.path() / "spool.db");
  {
    auto sp = open_ok(opts);
    for (uint64_t i = 1; i <= 50; ++i)
      BOOST_REQUIRE(sp->push("dt/" + std::to_string(i % 3), payload_of(i), i % 2));
    auto out = sp->peek(5); // 1..5 handed out
    BOOST_REQUIRE(out.size() == 5u);
    BOOST_TEST(sp->ack(1));
    BOOST_TEST(sp->ack(2));
    BOOST_TEST(sp->ack(20));
    // No flush: the destructor commits what is queued.
  }
  {
    auto sp = open_ok(opts);
    auto st = sp->stats();
    BOOST_TEST(st.count == 47u);
    BOOST_TEST(st.committed_seq == 50u);
    BOOST_TEST(st.redelivered_after_restart == 3u); // 3, 4, 5
    BOOST_TEST(st.in_flight == 0u);
    auto all = sp->peek(100);
    BOOST_REQUIRE(all.size() == 47u);
    uint64_t want = 3;
    for (auto& m : all) {
      if (want == 20)
        ++want;
      BOOST_TEST(m.seq == want);
      BOOST_TEST(m.payload == payload_of(want));
      BOOST_TEST(m.topic == "dt/" + std::to_string(want % 3));
      BOOST_TEST(m.qos == want % 2);
      ++want;
    }
    // Acks empty it; sequence numbers keep increasing after a reopen.
    for (auto& m : all)
      BOOST_TEST(sp->ack(m.seq));
  }
  {
    auto sp = open_ok(opts);
    BOOST_TEST(sp->stats().count == 0u);
    auto seq = sp->push("t", "x");
    BOOST_REQUIRE(seq);
    BOOST_TEST(*seq == 51u);
  }
}

BOOST_AUTO_TEST_CASE(second_open_of_same_file_refused) {
  temp_dir dir;
  auto opts = file_at(dir.path() / "spool.db");
  auto first = open_ok(opts);
  // A forked child stands in for a second groved (SQLite locks are per process).
  reporting_child child{[&](int fd) {
    auto sp = spool::open(opts);
    reporting_child::report(fd, !sp && code_of(sp.error()) == grove::errc::invalid_state
                                  ? "refused\n"
                                  : "not refused\n");
  }};
  BOOST_TEST(child.read_line() == "refused");
}

BOOST_AUTO_TEST_CASE(crash_kill9_loses_nothing_flushed) {
  temp_dir dir;
  auto opts = unbounded_file(dir); // no drops: the file must be a prefix
  constexpr uint64_t first_batch = 10'000;
  constexpr size_t handed_out = 100;
  reporting_child child{[&](int fd) {
    auto sp = spool::open(opts);
    if (!sp)
      return reporting_child::report(fd, "error " + grove::describe(sp.error()) + "\n");
    for (uint64_t i = 1; i <= first_batch; ++i)
      if (!(*sp)->push("dt/crash", payload_of(i)))
        return reporting_child::report(fd, "error push\n");
    (*sp)->peek(handed_out);
    if (auto err = (*sp)->flush())
      return reporting_child::report(fd, "error " + grove::describe(err) + "\n");
    reporting_child::report(fd, "flushed " + std::to_string((*sp)->committed_seq()) + "\n");
    for (uint64_t i = first_batch + 1;; ++i)
      (void) (*sp)->push("dt/crash", payload_of(i));
  }};
  auto line = child.read_line();
  auto status = child.kill_and_wait();
  BOOST_TEST_MESSAGE("child said: " << line);
  BOOST_REQUIRE(line.rfind("flushed ", 0) == 0);
  auto flushed = std::stoull(line.substr(8));
  BOOST_TEST(flushed == first_batch);
  BOOST_TEST(WIFSIGNALED(status));
  auto sp = open_ok(opts);
  auto st = sp->stats();
  BOOST_TEST_MESSAGE("after kill -9: " << st.count << " messages, " << flushed
                                       << " flushed");
  BOOST_TEST(st.count >= flushed);
  BOOST_TEST(st.redelivered_after_restart == handed_out);
  auto all = sp->peek(st.count + 1);
  BOOST_REQUIRE(all.size() == st.count);
  // Every message up to the flushed one, and whatever followed, in order, no gaps.
  bool ok = true;
  for (uint64_t i = 0; i < all.size() && ok; ++i)
    ok = all[i].seq == i + 1 && all[i].payload == payload_of(i + 1);
  BOOST_TEST(ok);
}

BOOST_AUTO_TEST_CASE(garbage_file_is_a_clear_error) {
  temp_dir dir;
  auto check = [&](const fs::path& file, grove::errc want) {
    auto opts = file_at(file);
    auto sp = spool::open(opts);
    BOOST_REQUIRE(!sp);
    auto text = grove::describe(sp.error());
    BOOST_TEST_MESSAGE(text);
    BOOST_TEST(code_of(sp.error()) == want);
    BOOST_TEST(text.find(file.string()) != std::string::npos);
  };
  {
    auto file = dir.path() / "random.db";
    std::mt19937 rng{42};
    std::ofstream out{file, std::ios::binary};
    for (int i = 0; i < 8192; ++i)
      out.put(static_cast<char>(rng()));
    out.close();
    check(file, grove::errc::malformed);
  }
  {
    auto file = dir.path() / "text.db";
    std::ofstream{file} << "this is not a database\n";
    check(file, grove::errc::malformed);
  }
  {
    // A valid spool whose pages were overwritten in the middle.
    auto file = dir.path() / "torn.db";
    auto opts = file_at(file);
    {
      auto sp = open_ok(opts);
      for (int i = 0; i < 2000; ++i)
        BOOST_REQUIRE(sp->push("t", std::string(200, 'a')));
    }
    BOOST_REQUIRE(fs::file_size(file) > 3 * 4096);
    std::fstream io{file, std::ios::in | std::ios::out | std::ios::binary};
    io.seekp(2 * 4096);
    for (int i = 0; i < 4096; ++i)
      io.put(static_cast<char>(0xA5));
    io.close();
    check(file, grove::errc::malformed);
  }
  {
    // A healthy SQLite database that is not a spool.
    auto file = dir.path() / "other.db";
    sqlite3* db = nullptr;
    BOOST_REQUIRE(sqlite3_open(file.c_str(), &db) == SQLITE_OK);
    BOOST_REQUIRE(sqlite3_exec(db, "CREATE TABLE t(x)", nullptr, nullptr, nullptr)
                  == SQLITE_OK);
    sqlite3_close(db);
    check(file, grove::errc::malformed);
  }
  {
    // A directory where the file should be.
    auto file = dir.path() / "adir";
    fs::create_directories(file);
    auto opts = file_at(file);
    auto sp = spool::open(opts);
    BOOST_REQUIRE(!sp);
    BOOST_TEST(grove::describe(sp.error()).find(file.string()) != std::string::npos);
  }
}

// Rows a spool never writes (a damaged or hand-edited file; tests/fuzz/targets/mm_spool.cpp
// fuzzes this) are refused as malformed, naming the file: sequence numbers must stay
// increasing and within SQLite's INTEGER, or the next push would reuse or wrap one.
BOOST_AUTO_TEST_CASE(edited_rows_are_a_clear_error) {
  temp_dir dir;
  int n = 0;
  auto edited = [&](const char* sql) {
    auto file = dir.path() / ("edited-" + std::to_string(++n) + ".db");
    auto opts = file_at(file);
    {
      auto sp = open_ok(opts);
      BOOST_REQUIRE(sp->push("t", "a"));
      BOOST_REQUIRE(!sp->flush());
    }
    sqlite3* db = nullptr;
    BOOST_REQUIRE(sqlite3_open(file.c_str(), &db) == SQLITE_OK);
    BOOST_REQUIRE_MESSAGE(sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK,
                          sqlite3_errmsg(db));
    sqlite3_close(db);
    auto sp = spool::open(opts);
    BOOST_REQUIRE_MESSAGE(!sp, sql);
    BOOST_TEST_MESSAGE(grove::describe(sp.error()));
    BOOST_TEST(code_of(sp.error()) == grove::errc::malformed);
    BOOST_TEST(grove::describe(sp.error()).find(file.string()) != std::string::npos);
  };
  edited("INSERT INTO spool VALUES(-3, 't', x'00', 1)");
  edited("INSERT INTO spool VALUES(9223372036854775807, 't', x'00', 1)");
  edited("INSERT INTO spool VALUES(7, 't', x'00', 7)");
  edited("INSERT OR REPLACE INTO meta VALUES('next_seq', -1)");
  edited("INSERT OR REPLACE INTO meta VALUES('sent_hwm', 9223372036854775807)");
}

BOOST_AUTO_TEST_CASE(write_error_never_accepted_and_recovers) {
  // A file-size limit (RLIMIT_FSIZE) in a child process makes SQLite's writes fail the
  // way a full disk does; raising it again is the space coming back.
  temp_dir dir;
  auto opts = unbounded_file(dir);
  const std::string payload(1000, 'p');
  reporting_child child{[&](int fd) {
    auto report = [fd](const std::string& line) { reporting_child::report(fd, line + "\n"); };
    signal(SIGXFSZ, SIG_IGN); // the write fails with EFBIG instead of killing us
    std::atomic<int> errors{0};
    opts.on_error = [&](const caf::error&) { ++errors; };
    auto sp = spool::open(opts);
    if (!sp)
      return report("error open " + grove::describe(sp.error()));
    auto& s = **sp;
    for (int i = 0; i < 100; ++i)
      if (!s.push("dt/full", payload))
        return report("error first pushes");
    if (auto err = s.flush())
      return report("error first flush " + grove::describe(err));
    rlimit lim{};
    getrlimit(RLIMIT_FSIZE, &lim);
    auto old = lim;
    lim.rlim_cur = 256 * 1024;
    setrlimit(RLIMIT_FSIZE, &lim);
    uint64_t accepted = 100;
    for (int i = 0; i < 2000; ++i)
      if (s.push("dt/full", payload))
        ++accepted;
    auto err = s.flush();
    if (!err)
      return report("error no failure");
    auto failed = s.stats();
    bool refused = !s.push("dt/full", payload);
    setrlimit(RLIMIT_FSIZE, &old);
    bool recovered = grove::test::wait_until([&] { return !s.stats().failing; });
    auto flushed = s.flush();
    auto after = s.stats();
    bool pushes_again = static_cast<bool>(s.push("dt/full", payload));
    if (pushes_again)
      ++accepted;
    if (s.flush())
      return report("error last flush");
    // _exit follows: what the test reads back is what kill -9 would have left.
    report("ok " + std::to_string(accepted) + " " + std::to_string(failed.committed_seq) + " "
           + std::to_string(failed.failing) + " " + std::to_string(failed.commit_failures)
           + " " + std::to_string(errors.load() > 0) + " " + std::to_string(refused) + " "
           + std::to_string(recovered) + " " + std::to_string(!flushed) + " "
           + std::to_string(after.committed_seq) + " " + std::to_string(pushes_again) + " "
           + grove::describe(err));
  }};
  auto line = child.read_line();
  child.kill_and_wait();
  BOOST_TEST_MESSAGE("child said: " << line);
  BOOST_REQUIRE(line.rfind("ok ", 0) == 0);
  std::istringstream in{line.substr(3)};
  uint64_t accepted = 0, committed_failing = 0, failures = 0, committed_after = 0;
  int failing = 0, called = 0, refused = 0, recovered = 0, flushed = 0, pushes_again = 0;
  std::string text;
  in >> accepted >> committed_failing >> failing >> failures >> called >> refused >> recovered
    >> flushed >> committed_after >> pushes_again;
  std::getline(in, text);
  BOOST_TEST(text.find("spool.db") != std::string::npos); // the error names the file
  // While failing: not everything pushed is accepted, and it says so.
  BOOST_TEST(committed_failing >= 100u);
  BOOST_TEST(committed_failing < accepted);
  BOOST_TEST(failing == 1);
  BOOST_TEST(failures >= 1u);
  BOOST_TEST(called == 1);
  BOOST_TEST(refused == 1);
  // After: the held messages commit without being pushed again, and pushes work.
  BOOST_TEST(recovered == 1);
  BOOST_TEST(flushed == 1);
  BOOST_TEST(pushes_again == 1);
  BOOST_TEST(committed_after + 1 == accepted);
  // Every accepted message is in the file, in order, no gaps.
  auto sp = open_ok(opts);
  auto all = sp->peek(accepted + 1);
  BOOST_TEST(all.size() == accepted);
  bool ok = true;
  for (uint64_t i = 0; i < all.size() && ok; ++i)
    ok = all[i].seq == i + 1 && all[i].payload == payload;
  BOOST_TEST(ok);
}

BOOST_AUTO_TEST_CASE(disk_reserve_makes_the_spool_full_before_the_disk_is) {
  // A 24 MiB filesystem, a spool allowed 1 GiB, 12 MiB kept free: the disk is the limit,
  // and reject_new refuses with queue_full before any commit fails.
  temp_dir dir;
  small_filesystem small{dir.path() / "small", 24u << 20};
  auto opts = reserve_of_half(small, spool_when_full::reject_new);
  auto sp = open_ok(opts);
  const std::string payload(4000, 'd');
  uint64_t accepted = 0;
  caf::error refusal;
  for (int i = 0; i < 20000 && !refusal; ++i) {
    if (auto seq = sp->push("disk/full", payload))
      ++accepted;
    else
      refusal = seq.error();
  }
  BOOST_REQUIRE_MESSAGE(refusal, "24 MiB took 20000 messages of 4 KB");
  BOOST_TEST(code_of(refusal) == grove::errc::queue_full);
  BOOST_TEST(grove::describe(refusal).find("kept in reserve") != std::string::npos);
  BOOST_TEST(accepted > 0u);
  auto err = sp->flush();
  BOOST_TEST(!err, grove::describe(err));
  auto st = sp->stats();
  BOOST_TEST(!st.failing);
  BOOST_TEST(st.commit_failures == 0u);
  BOOST_TEST(st.disk_full == 1u);
  BOOST_TEST(st.rejected == 1u);
  BOOST_TEST(st.committed_seq == accepted);
  BOOST_TEST(small.free_bytes() > 0u);
  // Acked rows make room inside the file: pushes are taken again though the disk's free
  // space did not grow.
  for (auto& m : sp->peek(10))
    BOOST_TEST(sp->ack(m.seq));
  BOOST_TEST(static_cast<bool>(sp->push("disk/full", payload)));
  err = sp->flush();
  BOOST_TEST(!err, grove::describe(err));
  BOOST_TEST(!sp->stats().failing);
}

BOOST_AUTO_TEST_CASE(disk_reserve_with_drop_oldest_keeps_the_newest) {
  // drop_oldest on a disk at its reserve: every new message replaces old ones, nothing
  // fails, and the newest are in the file after a reopen.
  temp_dir dir;
  small_filesystem small{dir.path() / "small", 24u << 20};
  auto opts = reserve_of_half(small, spool_when_full::drop_oldest);
  const std::string payload(4000, 'o');
  const uint64_t total = 9000; // 36 MB: more than the whole filesystem
  {
    auto sp = open_ok(opts);
    for (uint64_t i = 1; i <= total; ++i) {
      auto seq = sp->push("disk/drop", payload_of(i) + payload);
      if (!seq)
        BOOST_FAIL("push " << i << ": " << grove::describe(seq.error()));
    }
    auto err = sp->flush();
    BOOST_REQUIRE_MESSAGE(!err, grove::describe(err));
    auto st = sp->stats();
    BOOST_TEST(!st.failing);
    BOOST_TEST(st.commit_failures == 0u);
    BOOST_TEST(st.disk_full > 0u);
    BOOST_TEST(st.dropped_oldest > 0u);
    BOOST_TEST(st.count + st.dropped_oldest == total);
    BOOST_TEST(st.committed_seq == total);
  }
  auto sp = open_ok(opts);
  auto all = sp->peek(total);
  BOOST_REQUIRE(!all.empty());
  BOOST_TEST(all.size() < total);
  BOOST_TEST(all.back().seq == total);
  BOOST_TEST(all.back().payload == payload_of(total) + payload);
  bool contiguous = true;
  for (size_t i = 1; i < all.size() && contiguous; ++i)
    contiguous = all[i].seq == all[i - 1].seq + 1;
  BOOST_TEST(contiguous);
}
