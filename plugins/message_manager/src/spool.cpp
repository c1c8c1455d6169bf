#include "spool.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <system_error>

#include "grove/errors.hpp"

namespace grove::mm {

namespace {

// 'GRVS' in PRAGMA application_id marks a database as a Grove spool.
constexpr int32_t application_id = 0x47525653;
constexpr int32_t schema_version = 1;

constexpr const char* schema_sql
  = "CREATE TABLE spool(seq INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
    " payload BLOB NOT NULL, qos INTEGER NOT NULL);"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);";

std::string quoted(const std::filesystem::path& path) {
  return "spool file '" + path.string() + "'";
}

// Runs a statement that returns at most one value and yields it as text.
bool query_text(sqlite3* db, const char* sql, std::string& out) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK)
    return false;
  auto rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) {
    auto text = sqlite3_column_text(stmt, 0);
    out = text ? reinterpret_cast<const char*>(text) : "";
  } else {
    out.clear();
  }
  sqlite3_finalize(stmt);
  return rc == SQLITE_ROW || rc == SQLITE_DONE;
}

} // namespace

// -- construction -------------------------------------------------------------

spool::spool(spool_options opts)
  : opts_(std::move(opts)), durable_(opts_.storage == spool_storage::file) {
  // Nothing.
}

caf::expected<std::unique_ptr<spool>> spool::open(spool_options opts) {
  if (opts.max_size_bytes < min_size_bytes)
    return make_error(errc::invalid_config,
                      "spool max_size_bytes must be at least "
                        + std::to_string(min_size_bytes) + ", got "
                        + std::to_string(opts.max_size_bytes));
  if (opts.batch_max == 0)
    return make_error(errc::invalid_config, "spool batch_max must be at least 1");
  if (opts.storage == spool_storage::file && opts.file.empty())
    return make_error(errc::invalid_config, "spool storage 'file' needs a file path");
  std::unique_ptr<spool> result{new spool(std::move(opts))};
  if (!result->durable_)
    return result;
  if (auto err = result->open_db())
    return err;
  if (auto err = result->load())
    return err;
  result->writer_ = std::thread{[ptr = result.get()] { ptr->writer_loop(); }};
  return result;
}

spool::~spool() {
  if (writer_.joinable()) {
    {
      std::lock_guard guard{mtx_};
      stop_ = true;
    }
    writer_cv_.notify_all();
    writer_.join();
  }
  for (auto stmt : {insert_, delete_, meta_})
    sqlite3_finalize(stmt); // accepts nullptr
  if (db_ != nullptr)
    sqlite3_close(db_);
}

caf::error spool::db_error(std::string_view what) const {
  auto code = db_ ? sqlite3_errcode(db_) : SQLITE_CANTOPEN;
  auto text = quoted(opts_.file) + ": " + std::string{what} + ": "
              + (db_ ? sqlite3_errmsg(db_) : "out of memory");
  switch (code & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
    case SQLITE_FORMAT:
      return make_error(errc::malformed, std::move(text));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return make_error(errc::invalid_state, text + " (in use by another process?)");
    default:
      return make_error(errc::system_error, std::move(text));
  }
}

caf::error spool::open_db() {
  std::error_code ec;
  if (opts_.file.has_parent_path()) {
    std::filesystem::create_directories(opts_.file.parent_path(), ec);
    if (ec)
      return make_error(errc::system_error, quoted(opts_.file)
                                              + ": cannot create directory: "
                                              + ec.message());
  }
  // NOMUTEX: the connection is used by open() and then only by the writer thread.
  auto flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(opts_.file.c_str(), &db_, flags, nullptr) != SQLITE_OK)
    return db_error("cannot open");
  sqlite3_extended_result_codes(db_, 0);
  // Exclusive locking: a second groved on the same spool fails at open instead of
  // interleaving writes; it also lets WAL work without a shared-memory file.
  if (sqlite3_exec(db_, "PRAGMA locking_mode=EXCLUSIVE", nullptr, nullptr, nullptr)
      != SQLITE_OK)
    return db_error("cannot set locking mode");
  // The first real read happens here: a garbage file fails with "not a database".
  std::string mode;
  if (!query_text(db_, "PRAGMA journal_mode=WAL", mode))
    return db_error("cannot enable WAL");
  if (mode != "wal")
    return make_error(errc::system_error,
                      quoted(opts_.file) + ": cannot enable WAL (journal mode is '"
                        + mode + "')");
  // FULL fsyncs the WAL on every commit (survives power loss); NORMAL does not, but a
  // committed WAL transaction is in the OS page cache and survives kill -9 all the same.
  auto sync = opts_.fsync_each_batch ? "PRAGMA synchronous=FULL"
                                     : "PRAGMA synchronous=NORMAL";
  if (sqlite3_exec(db_, sync, nullptr, nullptr, nullptr) != SQLITE_OK)
    return db_error("cannot set synchronous");
  if (sqlite3_exec(db_, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) != SQLITE_OK)
    return db_error("cannot lock");
  auto abort = [this](std::string_view what) {
    auto err = db_error(what);
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return err;
  };
  std::string app_id;
  std::string version;
  std::string tables;
  if (!query_text(db_, "PRAGMA application_id", app_id)
      || !query_text(db_, "PRAGMA user_version", version)
      || !query_text(db_, "SELECT count(*) FROM sqlite_master", tables))
    return abort("cannot read header");
  if (app_id == "0" && tables == "0") {
    // A fresh file: create the schema.
    auto sql = std::string{"PRAGMA application_id="} + std::to_string(application_id)
               + "; PRAGMA user_version=" + std::to_string(schema_version) + ";"
               + schema_sql;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK)
      return abort("cannot create schema");
  } else if (app_id != std::to_string(application_id)) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return make_error(errc::malformed,
                      quoted(opts_.file) + ": a SQLite database, but not a Grove spool");
  } else if (version != std::to_string(schema_version)) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return make_error(errc::unsupported, quoted(opts_.file) + ": spool schema version "
                                           + version + ", this build reads "
                                           + std::to_string(schema_version));
  } else {
    // An existing spool: a cheap structural check (the file is at most a few MB).
    std::string check;
    if (!query_text(db_, "PRAGMA quick_check", check))
      return abort("integrity check failed");
    if (check != "ok") {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return make_error(errc::malformed,
                        quoted(opts_.file) + ": database is corrupt: " + check);
    }
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK)
    return abort("cannot commit schema");
  auto prepare = [this](const char* sql, sqlite3_stmt*& stmt) {
    return sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr)
           == SQLITE_OK;
  };
  if (!prepare("INSERT INTO spool(seq, topic, payload, qos) VALUES(?1, ?2, ?3, ?4)",
               insert_)
      || !prepare("DELETE FROM spool WHERE seq = ?1", delete_)
      || !prepare("INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)", meta_))
    return db_error("cannot prepare statements");
  return {};
}

caf::error spool::load() {
  sqlite3_stmt* stmt = nullptr;
  auto fail = [&](std::string_view what) {
    auto err = db_error(what);
    sqlite3_finalize(stmt);
    return err;
  };
  // Meta first: the sent high-water mark decides what counts as a possible duplicate.
  if (sqlite3_prepare_v2(db_, "SELECT key, value FROM meta", -1, &stmt, nullptr)
      != SQLITE_OK)
    return fail("cannot read meta");
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    std::string_view key{reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))};
    auto value = static_cast<uint64_t>(sqlite3_column_int64(stmt, 1));
    if (key == "sent_hwm")
      sent_hwm_ = persisted_hwm_ = value;
    else if (key == "next_seq")
      next_seq_ = std::max(next_seq_, value);
  }
  if (rc != SQLITE_DONE)
    return fail("cannot read meta");
  sqlite3_finalize(stmt);
  stmt = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT seq, topic, payload, qos FROM spool ORDER BY seq",
                         -1, &stmt, nullptr)
      != SQLITE_OK)
    return fail("cannot read messages");
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    auto seq = static_cast<uint64_t>(sqlite3_column_int64(stmt, 0));
    auto topic = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 1));
    std::string payload;
    if (auto size = sqlite3_column_bytes(stmt, 2); size > 0)
      payload.assign(static_cast<const char*>(sqlite3_column_blob(stmt, 2)),
                     static_cast<size_t>(size));
    entry e{topic ? topic : "", std::move(payload),
            static_cast<uint32_t>(sqlite3_column_int64(stmt, 3)), 0};
    e.size = e.topic.size() + e.payload.size() + message_overhead;
    bytes_ += e.size;
    if (seq <= sent_hwm_)
      ++redelivered_;
    next_seq_ = std::max(next_seq_, seq + 1);
    messages_.emplace_hint(messages_.end(), seq, std::move(e));
  }
  if (rc != SQLITE_DONE)
    return fail("cannot read messages");
  sqlite3_finalize(stmt);
  committed_seq_ = next_seq_ - 1;
  // A smaller max_size_bytes than last time: drop_oldest trims now; reject_new keeps
  // everything and refuses pushes until acks made room.
  if (opts_.when_full == spool_when_full::drop_oldest) {
    std::lock_guard guard{mtx_};
    while (bytes_ > opts_.max_size_bytes && !messages_.empty()) {
      queue_erase_locked(messages_.begin()->first);
      erase_locked(messages_.begin());
      ++dropped_oldest_;
    }
  }
  return {};
}

// -- producer side ------------------------------------------------------------

void spool::wake_writer_locked() {
  // Wake an idle writer on the first operation, a batching one when the batch is full.
  if (ops_.size() == 1 || ops_.size() == opts_.batch_max)
    writer_cv_.notify_one();
}

void spool::queue_erase_locked(uint64_t seq) {
  if (!durable_)
    return;
  ops_.push_back(op{false, seq, {}, {}, 0});
  ++queued_gen_;
  wake_writer_locked();
}

void spool::erase_locked(std::map<uint64_t, entry>::iterator i) {
  if (i->first < cursor_)
    --in_flight_;
  bytes_ -= i->second.size;
  messages_.erase(i);
}

caf::expected<uint64_t> spool::push(std::string topic, std::string payload, uint32_t qos) {
  auto size = topic.size() + payload.size() + message_overhead;
  std::unique_lock guard{mtx_};
  if (size > opts_.max_size_bytes) {
    ++rejected_;
    return make_error(errc::too_large, "message of " + std::to_string(size)
                                         + " bytes exceeds the spool's max_size_bytes "
                                         + std::to_string(opts_.max_size_bytes));
  }
  // Back-pressure: bounds what waits for the writer to about one spool's worth.
  space_cv_.wait(guard, [this] {
    return ops_bytes_ <= opts_.max_size_bytes || static_cast<bool>(writer_error_);
  });
  if (writer_error_)
    return writer_error_;
  if (bytes_ + size > opts_.max_size_bytes) {
    if (opts_.when_full == spool_when_full::reject_new) {
      ++rejected_;
      return make_error(errc::queue_full, "spool is full ("
                                            + std::to_string(bytes_) + " of "
                                            + std::to_string(opts_.max_size_bytes)
                                            + " bytes)");
    }
    while (bytes_ + size > opts_.max_size_bytes && !messages_.empty()) {
      queue_erase_locked(messages_.begin()->first);
      erase_locked(messages_.begin());
      ++dropped_oldest_;
    }
  }
  auto seq = next_seq_++;
  if (durable_) {
    ops_.push_back(op{true, seq, topic, payload, qos});
    ops_bytes_ += size;
    ++queued_gen_;
    last_insert_queued_ = seq;
    wake_writer_locked();
  }
  messages_.emplace_hint(messages_.end(), seq,
                         entry{std::move(topic), std::move(payload), qos, size});
  bytes_ += size;
  if (durable_)
    return seq;
  committed_seq_ = seq;
  if (auto cb = opts_.on_commit) {
    guard.unlock();
    cb(seq);
  }
  return seq;
}

caf::expected<uint64_t> spool::push_durable(std::string topic, std::string payload,
                                            uint32_t qos) {
  auto seq = push(std::move(topic), std::move(payload), qos);
  if (!seq)
    return seq;
  if (auto err = flush())
    return err;
  return seq;
}

caf::error spool::flush() {
  if (!durable_)
    return {};
  std::unique_lock guard{mtx_};
  auto target = queued_gen_;
  ++flush_waiters_;
  writer_cv_.notify_one();
  commit_cv_.wait(guard, [&] { return committed_gen_ >= target || writer_error_; });
  --flush_waiters_;
  return writer_error_;
}

uint64_t spool::committed_seq() const {
  std::lock_guard guard{mtx_};
  return committed_seq_;
}

// -- delivery side ------------------------------------------------------------

std::vector<spooled> spool::peek(size_t max) {
  std::vector<spooled> result;
  std::lock_guard guard{mtx_};
  auto i = messages_.lower_bound(cursor_);
  for (; i != messages_.end() && result.size() < max; ++i)
    result.push_back(
      spooled{i->first, i->second.topic, i->second.payload, i->second.qos});
  if (result.empty())
    return result;
  cursor_ = result.back().seq + 1;
  in_flight_ += result.size();
  if (result.back().seq > sent_hwm_) {
    sent_hwm_ = result.back().seq;
    if (durable_) {
      // Counts as an operation so flush() also covers it; the writer coalesces updates.
      ++queued_gen_;
      if (ops_.empty())
        writer_cv_.notify_one();
    }
  }
  return result;
}

bool spool::ack(uint64_t seq) {
  std::lock_guard guard{mtx_};
  auto i = messages_.find(seq);
  if (i == messages_.end())
    return false;
  queue_erase_locked(seq);
  erase_locked(i);
  return true;
}

size_t spool::nack_all() {
  std::lock_guard guard{mtx_};
  auto n = in_flight_;
  // Everything left is pending again; the map keeps the order.
  cursor_ = 0;
  in_flight_ = 0;
  return n;
}

spool_stats spool::stats() const {
  std::lock_guard guard{mtx_};
  return spool_stats{messages_.size(), bytes_,      dropped_oldest_, rejected_,
                     committed_seq_,   in_flight_, redelivered_};
}

// -- writer -------------------------------------------------------------------

void spool::writer_loop() {
  std::unique_lock guard{mtx_};
  for (;;) {
    writer_cv_.wait(guard, [this] { return stop_ || queued_gen_ != taken_gen_; });
    if (queued_gen_ == taken_gen_)
      return; // stop_ and nothing left
    // Group commit: give producers batch_delay to fill the batch unless someone waits.
    if (!stop_ && flush_waiters_ == 0 && ops_.size() < opts_.batch_max)
      writer_cv_.wait_for(guard, opts_.batch_delay, [this] {
        return stop_ || flush_waiters_ > 0 || ops_.size() >= opts_.batch_max;
      });
    std::vector<op> batch;
    batch.swap(ops_);
    auto gen = queued_gen_;
    taken_gen_ = gen;
    auto hwm = sent_hwm_;
    auto write_hwm = hwm != persisted_hwm_;
    auto next_seq = next_seq_;
    auto last_insert = last_insert_queued_;
    ops_bytes_ = 0;
    space_cv_.notify_all();
    guard.unlock();
    auto err = commit(batch, write_hwm, hwm, next_seq);
    batch.clear(); // free the copies outside the lock
    guard.lock();
    if (err) {
      // Sticky: pushes and flushes report it from now on.
      writer_error_ = std::move(err);
      commit_cv_.notify_all();
      space_cv_.notify_all();
      return;
    }
    committed_gen_ = gen;
    persisted_hwm_ = hwm;
    auto advanced = last_insert > committed_seq_;
    if (advanced)
      committed_seq_ = last_insert;
    commit_cv_.notify_all();
    if (advanced && opts_.on_commit) {
      auto cb = opts_.on_commit;
      guard.unlock();
      cb(last_insert);
      guard.lock();
    }
  }
}

caf::error spool::commit(const std::vector<op>& batch, bool write_hwm, uint64_t hwm,
                         uint64_t next_seq) {
  if (sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK)
    return db_error("cannot begin");
  auto step = [](sqlite3_stmt* stmt) {
    auto rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    return rc == SQLITE_DONE;
  };
  auto fail = [this](std::string_view what) {
    auto err = db_error(what);
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return err;
  };
  bool inserted = false;
  for (auto& x : batch) {
    if (x.insert) {
      inserted = true;
      sqlite3_bind_int64(insert_, 1, static_cast<sqlite3_int64>(x.seq));
      sqlite3_bind_text(insert_, 2, x.topic.data(), static_cast<int>(x.topic.size()),
                        SQLITE_STATIC);
      sqlite3_bind_blob(insert_, 3, x.payload.data(), static_cast<int>(x.payload.size()),
                        SQLITE_STATIC);
      sqlite3_bind_int64(insert_, 4, x.qos);
      if (!step(insert_))
        return fail("cannot insert");
    } else {
      sqlite3_bind_int64(delete_, 1, static_cast<sqlite3_int64>(x.seq));
      if (!step(delete_))
        return fail("cannot delete");
    }
  }
  auto set_meta = [&](const char* key, uint64_t value) {
    sqlite3_bind_text(meta_, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(meta_, 2, static_cast<sqlite3_int64>(value));
    return step(meta_);
  };
  // next_seq keeps sequence numbers increasing across restarts even when empty.
  if (inserted && !set_meta("next_seq", next_seq))
    return fail("cannot update meta");
  if (write_hwm && !set_meta("sent_hwm", hwm))
    return fail("cannot update meta");
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK)
    return fail("cannot commit");
  return {};
}

} // namespace grove::mm
