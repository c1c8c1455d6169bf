#include "grove/store.hpp"

#include <pthread.h>
#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <system_error>

#include <spdlog/spdlog.h>

#include "allocator.hpp"

#include "grove/errors.hpp"

namespace grove {

namespace {

// Maps a primary SQLite result code to the Grove error code open() documents.
errc code_of(int rc) {
  switch (rc & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
    case SQLITE_FORMAT:
      return errc::malformed;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return errc::invalid_state;
    default:
      return errc::system_error;
  }
}

// SQLite's page cache starts every connection with one bulk allocation of
// SQLITE_DEFAULT_PCACHE_INITSZ pages (20 x 4 kB, upstream SQLite's default) and writes
// through all of it at once, while an idle store has read a few pages: in the default image
// that was ~0.2 MB of resident heap for its stores (tools/bench/README.md). Pages are
// allocated one at a time instead. Process-wide and best effort: set once before
// grove::store's first connection, but sqlite3_config is not synchronized with other SQLite
// users in the process; SQLite refuses it (SQLITE_MISUSE) if something initialized it first,
// which is logged once (the saving is then lost, nothing else changes).
int configure_sqlite_once() {
  static const int rc = [] {
    auto result = sqlite3_config(SQLITE_CONFIG_PAGECACHE, nullptr, 0, 0);
    if (result != SQLITE_OK)
      spdlog::warn("grove::store: SQLite refused SQLITE_CONFIG_PAGECACHE ({}): each "
                   "connection keeps its bulk page-cache allocation",
                   sqlite3_errstr(result));
    return result;
  }();
  return rc;
}

// True for the errors recreate_invalid may repair by starting over.
bool is_invalid_file(const caf::error& err) {
  return err.category() == caf::atom("grove")
         && (err.code() == static_cast<uint8_t>(errc::malformed)
             || err.code() == static_cast<uint8_t>(errc::unsupported));
}

} // namespace

// -- statement ----------------------------------------------------------------

statement::~statement() {
  sqlite3_finalize(stmt_);
}

void statement::bind(int index, int64_t value) {
  auto rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK && bind_rc_ == 0)
    bind_rc_ = rc;
}

void statement::bind(int index, double value) {
  auto rc = sqlite3_bind_double(stmt_, index, value);
  if (rc != SQLITE_OK && bind_rc_ == 0)
    bind_rc_ = rc;
}

void statement::bind(int index, std::string_view text) {
  auto rc = sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_STATIC,
                                SQLITE_UTF8);
  if (rc != SQLITE_OK && bind_rc_ == 0)
    bind_rc_ = rc;
}

void statement::bind(int index, blob bytes) {
  // A null pointer would bind NULL: an empty blob must stay a zero-length BLOB.
  auto data = bytes.bytes.data() != nullptr ? bytes.bytes.data() : "";
  auto rc = sqlite3_bind_blob64(stmt_, index, data, bytes.bytes.size(), SQLITE_STATIC);
  if (rc != SQLITE_OK && bind_rc_ == 0)
    bind_rc_ = rc;
}

void statement::bind(int index, std::nullptr_t) {
  auto rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK && bind_rc_ == 0)
    bind_rc_ = rc;
}

caf::expected<bool> statement::step() {
  if (bind_rc_ != 0) {
    auto rc = bind_rc_;
    bind_rc_ = 0;
    return owner_->file_error(rc, std::string{"cannot bind parameters of '"}
                                    + sqlite3_sql(stmt_) + "': " + sqlite3_errstr(rc));
  }
  switch (sqlite3_step(stmt_)) {
    case SQLITE_ROW:
      return true;
    case SQLITE_DONE:
      return false;
    default:
      return owner_->last_error(std::string{"cannot run '"} + sqlite3_sql(stmt_) + "'");
  }
}

void statement::reset() {
  sqlite3_reset(stmt_);
  bind_rc_ = 0;
}

int64_t statement::column_int64(int col) const {
  return sqlite3_column_int64(stmt_, col);
}

double statement::column_double(int col) const {
  return sqlite3_column_double(stmt_, col);
}

std::string_view statement::column_text(int col) const {
  auto text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  if (text == nullptr)
    return {};
  return {text, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))};
}

std::string_view statement::column_blob(int col) const {
  auto data = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
  if (data == nullptr)
    return {};
  return {data, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))};
}

bool statement::column_is_null(int col) const {
  return sqlite3_column_type(stmt_, col) == SQLITE_NULL;
}

// -- transaction --------------------------------------------------------------

transaction::~transaction() {
  rollback();
}

caf::error transaction::commit() {
  if (db_ == nullptr)
    return make_error(errc::invalid_state, "transaction already over");
  auto db = std::exchange(db_, nullptr);
  if (sqlite3_exec(db->db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK)
    return {};
  auto err = db->last_error("cannot commit");
  // A failed COMMIT may leave the transaction open (e.g. SQLITE_BUSY): end it here.
  if (sqlite3_get_autocommit(db->db_) == 0)
    sqlite3_exec(db->db_, "ROLLBACK", nullptr, nullptr, nullptr);
  return err;
}

void transaction::rollback() {
  auto db = std::exchange(db_, nullptr);
  // SQLite rolls back by itself after some errors (disk full, I/O): then there is none.
  if (db != nullptr && sqlite3_get_autocommit(db->db_) == 0)
    sqlite3_exec(db->db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

// -- store: open --------------------------------------------------------------

store::store(std::filesystem::path file, store_options opts)
  : path_(std::move(file)), opts_(std::move(opts)) {
  // Nothing.
}

store::~store() {
  close_db();
}

void store::close_db() {
  cache_.clear(); // finalizes every statement before the close
  if (db_ != nullptr)
    sqlite3_close(db_);
  db_ = nullptr;
}

std::string store::quoted() const {
  return opts_.kind + " file '" + path_.string() + "'";
}

caf::error store::file_error(int code, std::string what) const {
  auto text = quoted() + ": " + what;
  if (code_of(code) == errc::invalid_state)
    text += " (in use by another process?)";
  return make_error(code_of(code), std::move(text));
}

caf::error store::last_error(std::string_view what) const {
  if (db_ == nullptr)
    return file_error(SQLITE_CANTOPEN, std::string{what} + ": out of memory");
  return file_error(sqlite3_errcode(db_),
                    std::string{what} + ": " + sqlite3_errmsg(db_));
}

caf::expected<std::unique_ptr<store>> store::open(std::filesystem::path file,
                                                  store_options opts) {
  if (file.empty())
    return make_error(errc::invalid_config, opts.kind + ": no file path given");
  if (opts.application_id == 0)
    return make_error(errc::invalid_config,
                      opts.kind + " file '" + file.string()
                        + "': application_id must not be 0 (0 marks a foreign file)");
  for (size_t i = 0; i < opts.migrations.size(); ++i)
    if (opts.migrations[i].version != static_cast<int>(i + 1))
      return make_error(errc::invalid_config,
                        opts.kind + " file '" + file.string() + "': migration #"
                          + std::to_string(i + 1) + " has version "
                          + std::to_string(opts.migrations[i].version)
                          + " (versions must be 1, 2, 3, ...)");
  std::unique_ptr<store> result{new store(std::move(file), std::move(opts))};
  auto err = result->open_db();
  if (err && result->opts_.recreate_invalid && is_invalid_file(err)) {
    // Asked for: keep the bad file for inspection and start an empty one.
    result->close_db();
    auto aside = result->path_;
    aside += ".invalid";
    std::error_code ec;
    std::filesystem::rename(result->path_, aside, ec);
    if (ec)
      return make_error(errc::system_error, result->quoted() + ": cannot move it aside to '"
                                              + aside.string() + "': " + ec.message()
                                              + " (after: " + describe(err) + ")");
    for (auto suffix : {"-wal", "-shm"}) {
      auto extra = result->path_;
      extra += suffix;
      std::filesystem::remove(extra, ec);
    }
    result->recreated_ = true;
    err = result->open_db();
  }
  if (err)
    return err;
  if (auto merr = result->migrate())
    return merr;
  return result;
}

caf::error store::open_db() {
  std::error_code ec;
  if (path_.has_parent_path()) {
    std::filesystem::create_directories(path_.parent_path(), ec);
    if (ec)
      return make_error(errc::system_error,
                        quoted() + ": cannot create directory: " + ec.message());
  }
  // NOMUTEX: a store belongs to one thread at a time (see the header).
  auto flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  configure_sqlite_once();
  if (sqlite3_open_v2(path_.c_str(), &db_, flags, nullptr) != SQLITE_OK)
    return last_error("cannot open");
  sqlite3_extended_result_codes(db_, 0);
  if (opts_.exclusive)
    if (auto err = exec("PRAGMA locking_mode=EXCLUSIVE"))
      return err;
  // The first real read happens here: a file that is not SQLite fails "not a database",
  // a damaged header "malformed".
  auto unreadable = [this](caf::error err) {
    if (err.code() != static_cast<uint8_t>(errc::malformed))
      return err;
    return make_error(errc::malformed, quoted() + ": not a SQLite database, or corrupt ("
                                         + sqlite3_errmsg(db_) + ")");
  };
  auto mode = prepare("PRAGMA journal_mode=WAL");
  if (!mode)
    return unreadable(std::move(mode.error()));
  auto row = (*mode)->step();
  if (!row)
    return unreadable(std::move(row.error()));
  std::string journal{*row ? (*mode)->column_text(0) : std::string_view{}};
  (*mode)->reset();
  cache_.clear();
  if (journal != "wal")
    return make_error(errc::system_error,
                      quoted() + ": cannot enable WAL (journal mode is '" + journal + "')");
  auto sync = opts_.synchronous == sync_level::full ? "PRAGMA synchronous=FULL"
                                                    : "PRAGMA synchronous=NORMAL";
  if (auto err = exec(sync))
    return err;
  return check_header();
}

caf::error store::check_header() {
  // EXCLUSIVE: with locking_mode=EXCLUSIVE the lock is kept from here on, so a second
  // process fails now rather than at its first write.
  if (sqlite3_exec(db_, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) != SQLITE_OK)
    return last_error("cannot lock");
  transaction txn{this};
  auto query = [this](const char* sql) -> caf::expected<std::string> {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr) != SQLITE_OK)
      return last_error("cannot read header");
    std::string out;
    auto rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      auto text = sqlite3_column_text(stmt, 0);
      out = text ? reinterpret_cast<const char*>(text) : "";
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      auto err = last_error("cannot read header");
      sqlite3_finalize(stmt);
      return err;
    }
    sqlite3_finalize(stmt);
    return out;
  };
  auto app_id = query("PRAGMA application_id");
  auto version = query("PRAGMA user_version");
  auto tables = query("SELECT count(*) FROM sqlite_master");
  for (auto* x : {&app_id, &version, &tables})
    if (!*x)
      return std::move(x->error());
  auto latest = static_cast<int>(opts_.migrations.size());
  schema_version_ = std::stoi(*version);
  if (*app_id == "0" && *tables == "0" && schema_version_ == 0) {
    // A new (or empty) file: claim it.
    if (auto err = exec("PRAGMA application_id=" + std::to_string(opts_.application_id)))
      return err;
  } else if (*app_id != std::to_string(opts_.application_id)) {
    return make_error(errc::malformed,
                      quoted() + ": a SQLite database of another application "
                        "(application_id " + *app_id + ", expected "
                        + std::to_string(opts_.application_id) + ")");
  } else if (schema_version_ > latest) {
    return make_error(errc::unsupported,
                      quoted() + ": schema version " + *version
                        + " is newer than this build knows (" + std::to_string(latest)
                        + "); refusing to open it");
  } else if (opts_.check_integrity) {
    auto check = query("PRAGMA quick_check");
    if (!check && check.error().code() == static_cast<uint8_t>(errc::malformed))
      return make_error(errc::malformed,
                        quoted() + ": database is corrupt: " + describe(check.error()));
    if (!check)
      return std::move(check.error());
    if (*check != "ok")
      return make_error(errc::malformed, quoted() + ": database is corrupt: " + *check);
  }
  return txn.commit();
}

caf::error store::migrate() {
  for (auto& m : opts_.migrations) {
    if (m.version <= schema_version_)
      continue;
    auto step = "migration to schema version " + std::to_string(m.version);
    auto txn = begin(begin_mode::immediate);
    if (!txn)
      return std::move(txn.error());
    if (!m.sql.empty())
      if (auto err = exec(m.sql))
        return make_error(errc::system_error, quoted() + ": " + step + " failed: "
                                                + describe(err));
    if (m.apply) {
      caf::error err;
      try {
        err = m.apply(*this);
      } catch (const std::exception& ex) {
        err = make_error(errc::system_error, ex.what());
      } catch (...) {
        err = make_error(errc::system_error, "unknown exception");
      }
      if (err)
        return make_error(errc::system_error, quoted() + ": " + step + " failed: "
                                                + describe(err));
    }
    if (auto err = exec("PRAGMA user_version=" + std::to_string(m.version)))
      return err;
    if (auto err = txn->commit())
      return err;
    schema_version_ = m.version;
    // Statements compiled against the old schema are dropped rather than re-prepared.
    cache_.clear();
  }
  return {};
}

// -- store: use ---------------------------------------------------------------

caf::error store::exec(std::string_view sql) {
  std::string text{sql};
  char* msg = nullptr;
  auto rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &msg);
  if (rc == SQLITE_OK)
    return {};
  std::string what = "cannot run '" + text + "': " + (msg ? msg : sqlite3_errstr(rc));
  sqlite3_free(msg);
  return file_error(rc, std::move(what));
}

caf::expected<statement*> store::prepare(std::string_view sql) {
  std::string key{sql};
  if (auto i = cache_.find(key); i != cache_.end())
    return i->second.get();
  sqlite3_stmt* raw = nullptr;
  const char* tail = nullptr;
  if (sqlite3_prepare_v3(db_, key.data(), static_cast<int>(key.size()),
                         SQLITE_PREPARE_PERSISTENT, &raw, &tail)
      != SQLITE_OK)
    return last_error("cannot prepare '" + key + "'");
  std::unique_ptr<statement> stmt{new statement(this, raw)};
  const char* end = key.c_str() + key.size();
  auto blank = [](char c) { return std::isspace(static_cast<unsigned char>(c)) || c == ';'; };
  if (raw == nullptr || !std::all_of(tail, end, blank))
    return make_error(errc::invalid_config,
                      quoted() + ": prepare takes exactly one statement, got '" + key + "'");
  auto ptr = stmt.get();
  cache_.emplace(std::move(key), std::move(stmt));
  return ptr;
}

caf::expected<transaction> store::begin(begin_mode mode) {
  auto sql = mode == begin_mode::immediate ? "BEGIN IMMEDIATE" : "BEGIN";
  if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK)
    return last_error("cannot begin a transaction");
  return transaction{this};
}

// -- group_writer -------------------------------------------------------------

group_writer_base::group_writer_base(store& db, group_options opts,
                                     durability_callback on_durable)
  : db_(db), opts_(opts), on_durable_(std::move(on_durable)) {
  opts_.batch_max = std::max<size_t>(opts_.batch_max, 1);
  opts_.retry_min = std::max(opts_.retry_min, std::chrono::milliseconds{1});
  opts_.retry_max = std::max(opts_.retry_max, opts_.retry_min);
}

group_writer_base::~group_writer_base() {
  // The derived destructor stopped the thread (it needs the derived members).
}

void group_writer_base::start() {
  // Named: started from a CAF worker it would show as `caf.multiplexer` (CAF 0.17's
  // name for its workers) in top, gdb and tools/bench/smaps_breakdown.py.
  thread_ = std::thread{[this] {
    ::pthread_setname_np(::pthread_self(), "grove.store");
    run();
  }};
}

void group_writer_base::stop() {
  {
    std::lock_guard guard{mtx_};
    stop_ = true;
  }
  work_cv_.notify_all();
  room_cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

uint64_t group_writer_base::queued_locked(uint64_t bytes) {
  ++submitted_;
  // Written only under mtx_: no atomic read-modify-write needed.
  queued_bytes_.store(queued_bytes_.load(std::memory_order_relaxed) + bytes,
                      std::memory_order_relaxed);
  // Wake an idle writer on the first operation, a batching one when the batch is full.
  auto n = queued_count_locked();
  if (n == 1 || n == opts_.batch_max)
    work_cv_.notify_one();
  return submitted_;
}

caf::error group_writer_base::flush() {
  std::unique_lock guard{mtx_};
  auto target = submitted_;
  if (committed_ >= target)
    return {};
  if (failure_)
    return failure_;
  ++flush_waiters_;
  work_cv_.notify_one();
  done_cv_.wait(guard, [&] { return committed_ >= target || failure_; });
  --flush_waiters_;
  if (committed_ >= target)
    return {};
  return failure_;
}

uint64_t group_writer_base::committed() const {
  std::lock_guard guard{mtx_};
  return committed_;
}

uint64_t group_writer_base::submitted() const {
  std::lock_guard guard{mtx_};
  return submitted_;
}

caf::error group_writer_base::failure() const {
  std::lock_guard guard{mtx_};
  return failure_;
}

void group_writer_base::wait_for_room(uint64_t limit) {
  // Fast path without the lock: called once per submit by producers.
  if (queued_bytes_.load(std::memory_order_relaxed) <= limit)
    return;
  std::unique_lock guard{mtx_};
  room_cv_.wait(guard, [&] { return queued_bytes_ <= limit || failure_ || stop_; });
}

caf::error group_writer_base::commit_taken() {
  try {
    auto txn = db_.begin();
    if (!txn)
      return std::move(txn.error());
    if (auto err = apply_taken(db_))
      return err; // txn rolls back
    return txn->commit();
  } catch (const std::exception& ex) {
    return make_error(errc::system_error, db_.path().string() + ": batch threw: " + ex.what());
  } catch (...) {
    return make_error(errc::system_error, db_.path().string() + ": batch threw");
  }
}

void group_writer_base::run() {
  auto notify = [this](uint64_t committed, const caf::error& err) {
    if (!on_durable_)
      return;
    try {
      on_durable_(committed, err);
    } catch (...) {
      // The callback's problem; the writer keeps its own state consistent.
    }
  };
  std::unique_lock guard{mtx_};
  uint64_t taken_through = committed_;
  auto backoff = opts_.retry_min;
  bool retrying = false; // the taken batch failed and waits for another attempt
  for (;;) {
    if (retrying) {
      // Back-off; stop() cuts it short for one last attempt.
      work_cv_.wait_for(guard, backoff, [this] { return stop_; });
      backoff = std::min(backoff * 2, opts_.retry_max);
    } else {
      auto has_work = [&] { return stop_ || submitted_ != taken_through; };
      // Idle for a second: hand the allocator cache back (allocator.hpp), then sleep.
      if (!work_cv_.wait_for(guard, std::chrono::seconds{1}, has_work)) {
        guard.unlock();
        detail::flush_thread_cache();
        guard.lock();
        work_cv_.wait(guard, has_work);
      }
      if (submitted_ == taken_through)
        return; // stopping and nothing left
      // Group commit: give producers batch_delay to fill the batch unless someone waits.
      if (!stop_ && flush_waiters_ == 0 && queued_count_locked() < opts_.batch_max)
        work_cv_.wait_for(guard, opts_.batch_delay, [this] {
          return stop_ || flush_waiters_ > 0 || queued_count_locked() >= opts_.batch_max;
        });
    }
    take_locked();
    taken_through = submitted_;
    queued_bytes_ = 0;
    room_cv_.notify_all();
    auto committed = committed_; // only this thread writes it
    auto stopping = stop_;
    guard.unlock();
    auto err = commit_taken();
    if (!err) {
      release_taken(); // frees the operations outside the lock
      // The callback runs before flush() returns, so flushers see its effects.
      notify(taken_through, err);
      guard.lock();
      committed_ = taken_through;
      failure_ = caf::error{};
      retrying = false;
      backoff = opts_.retry_min;
    } else {
      // Rolled back: nothing of the batch is durable. Keep it and try again.
      notify(committed, err);
      guard.lock();
      failure_ = std::move(err);
      retrying = true;
      if (stopping) {
        // The last attempt at stop() failed: give up, reported above.
        done_cv_.notify_all();
        room_cv_.notify_all();
        return;
      }
    }
    done_cv_.notify_all();
    room_cv_.notify_all();
  }
}

} // namespace grove
