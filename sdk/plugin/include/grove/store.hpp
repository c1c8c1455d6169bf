#pragma once

// grove::store: a plugin's durable state in one SQLite file (library libgrove_store).
//
// - store::open() opens or creates the file in WAL mode, checks that it belongs to the
//   caller (PRAGMA application_id), refuses a corrupt file or a newer schema with an error
//   that names the file, and runs the migrations the file lacks (PRAGMA user_version), one
//   transaction each.
// - prepare() caches prepared statements by SQL text; statement binds and steps typed
//   values; begin() returns an RAII transaction that rolls back unless committed.
// - group_writer<Op> batches many small writes into one transaction on its own thread and
//   reports every batch to a durability callback: committed (durable at the configured
//   synchronous level) or failed (rolled back, retried with back-off). Nothing is ever
//   reported as committed that is not.
//
// Threads: a store and its statements belong to one thread at a time. While a
// group_writer runs, only its apply function (on the writer thread) may use the store.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

struct sqlite3;
struct sqlite3_stmt;

namespace grove {

class store;

/// A byte string bound as a BLOB (a plain string_view binds as TEXT).
struct blob {
  /// The bytes; must stay valid until the statement is stepped or reset.
  std::string_view bytes;
};

/// A prepared statement owned by its store (see store::prepare()). Bound text and blobs
/// are not copied: they must stay valid until the statement is stepped to the end or reset.
class statement {
public:
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;

  /// Finalizes the statement.
  ~statement();

  /// Binds an integer to parameter `index` (1-based).
  void bind(int index, int64_t value);

  /// Binds any other integer type as int64 (unsigned values above INT64_MAX wrap).
  template <class T>
    requires(std::is_integral_v<T> && !std::is_same_v<T, int64_t>)
  void bind(int index, T value) {
    bind(index, static_cast<int64_t>(value));
  }

  /// Binds a floating-point value.
  void bind(int index, double value);

  /// Binds TEXT.
  void bind(int index, std::string_view text);

  /// Binds TEXT (the string must outlive the step).
  void bind(int index, const std::string& text) {
    bind(index, std::string_view{text});
  }

  /// Binds TEXT from a C string.
  void bind(int index, const char* text) {
    bind(index, std::string_view{text});
  }

  /// Binds a BLOB.
  void bind(int index, blob bytes);

  /// Binds NULL.
  void bind(int index, std::nullptr_t);

  /// Binds `args` to parameters 1..N in order.
  template <class... Ts>
  void bind_all(const Ts&... args) {
    int index = 0;
    (bind(++index, args), ...);
  }

  /// Steps once: true when a row is ready, false when done. A bind error or any SQLite
  /// error (I/O, disk full, constraint) is returned naming the file.
  caf::expected<bool> step();

  /// Binds `args`, steps to the end (rows are skipped) and resets.
  template <class... Ts>
  caf::error run(const Ts&... args) {
    bind_all(args...);
    caf::error err;
    for (;;) {
      auto more = step();
      if (!more) {
        err = std::move(more.error());
        break;
      }
      if (!*more)
        break;
    }
    reset();
    return err;
  }

  /// Resets to before the first step; bindings are cleared too.
  void reset();

  /// Column `col` (0-based) of the current row as an integer.
  int64_t column_int64(int col) const;

  /// Column `col` as a double.
  double column_double(int col) const;

  /// Column `col` as text; valid until the next step() or reset().
  std::string_view column_text(int col) const;

  /// Column `col` as bytes; valid until the next step() or reset().
  std::string_view column_blob(int col) const;

  /// True if column `col` is NULL.
  bool column_is_null(int col) const;

  /// The SQLite handle, for what this class does not cover.
  sqlite3_stmt* native_handle() const noexcept {
    return stmt_;
  }

private:
  friend class store;

  statement(store* owner, sqlite3_stmt* stmt) : owner_(owner), stmt_(stmt) {
    // Nothing.
  }

  store* owner_;
  sqlite3_stmt* stmt_;
  int bind_rc_ = 0; // first failed bind since the last reset, reported by step()
};

/// How a transaction takes its lock.
enum class begin_mode {
  /// BEGIN: the write lock is taken by the first write.
  deferred,
  /// BEGIN IMMEDIATE: the write lock is taken at once.
  immediate,
};

/// An open transaction; rolls back on destruction unless commit() succeeded.
class transaction {
public:
  transaction(transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {
    // Nothing.
  }

  transaction& operator=(transaction&&) = delete;
  transaction(const transaction&) = delete;

  /// Rolls back unless committed.
  ~transaction();

  /// Commits. On error the transaction is rolled back and over.
  caf::error commit();

  /// Rolls back now (also what the destructor does).
  void rollback();

  /// True until commit() or rollback().
  bool active() const noexcept {
    return db_ != nullptr;
  }

private:
  friend class store;

  explicit transaction(store* db) : db_(db) {
    // Nothing.
  }

  store* db_;
};

/// One schema step: the file goes from version `version - 1` to `version`.
struct migration {
  /// Target schema version; migrations are numbered 1, 2, 3, ... without gaps.
  int version = 0;
  /// SQL run first (may hold several statements); may be empty.
  std::string sql;
  /// Run after `sql` in the same transaction, for steps SQL cannot express; may be empty.
  std::function<caf::error(store&)> apply;
};

/// SQLite's synchronous setting for a WAL database.
enum class sync_level {
  /// synchronous=NORMAL: a commit survives the death of the process, not power loss.
  normal,
  /// synchronous=FULL: each commit fsyncs the WAL and survives power loss too.
  full,
};

/// Settings of store::open().
struct store_options {
  /// Marks the file as this application's (PRAGMA application_id); must not be 0.
  int32_t application_id = 0;
  /// What the file is, for error messages, e.g. "spool" → "spool file '<path>': ...".
  std::string kind = "store";
  /// The schema, as steps from an empty file; the last one is the current version.
  std::vector<migration> migrations;
  /// Durability of a commit.
  sync_level synchronous = sync_level::full;
  /// locking_mode=EXCLUSIVE: a second process opening the file fails with invalid_state
  /// instead of sharing it (also spares WAL its shared-memory file).
  bool exclusive = true;
  /// Check the structure of an existing file at open (PRAGMA quick_check; reads every
  /// page, so meant for files of a few MB).
  bool check_integrity = true;
  /// Move a foreign, corrupt, non-SQLite or newer-schema file aside to `<file>.invalid`
  /// and start an empty one, instead of failing. Off: such a file is an error.
  bool recreate_invalid = false;
};

/// A plugin's SQLite database (see the file comment). Not thread-safe.
class store {
public:
  /// Opens or creates `file` (creating its directory). Errors, each naming the file:
  /// invalid_config (bad options), malformed (not SQLite, corrupt, or another
  /// application's file), unsupported (a schema newer than `opts.migrations`),
  /// invalid_state (in use by another process), system_error (I/O, a failed migration).
  static caf::expected<std::unique_ptr<store>> open(std::filesystem::path file,
                                                    store_options opts);

  /// Closes the database (checkpointing the WAL).
  ~store();

  store(const store&) = delete;
  store& operator=(const store&) = delete;

  /// The database file.
  const std::filesystem::path& path() const noexcept {
    return path_;
  }

  /// The schema version after open (the last migration's).
  int schema_version() const noexcept {
    return schema_version_;
  }

  /// True if open() moved an invalid file aside (recreate_invalid).
  bool recreated() const noexcept {
    return recreated_;
  }

  /// Runs one or more SQL statements that return no rows.
  caf::error exec(std::string_view sql);

  /// Returns the prepared statement for `sql`, compiled on first use and cached for the
  /// store's lifetime. The pointer stays valid until the store closes.
  caf::expected<statement*> prepare(std::string_view sql);

  /// Prepares (cached) and runs `sql` with `args`, skipping rows.
  template <class... Ts>
  caf::error run(std::string_view sql, const Ts&... args) {
    auto stmt = prepare(sql);
    if (!stmt)
      return std::move(stmt.error());
    return (*stmt)->run(args...);
  }

  /// Starts a transaction.
  caf::expected<transaction> begin(begin_mode mode = begin_mode::deferred);

  /// The last SQLite error as a caf::error: "<kind> file '<path>': <what>: <sqlite text>",
  /// with the code mapped as open() documents (SQLITE_FULL and I/O: system_error).
  caf::error last_error(std::string_view what) const;

  /// The SQLite handle, for what this class does not cover.
  sqlite3* native_handle() const noexcept {
    return db_;
  }

private:
  friend class statement;
  friend class transaction;

  store(std::filesystem::path file, store_options opts);

  caf::error open_db();
  caf::error check_header();
  caf::error migrate();
  void close_db();
  caf::error file_error(int code, std::string what) const;
  std::string quoted() const;

  std::filesystem::path path_;
  store_options opts_;
  sqlite3* db_ = nullptr;
  int schema_version_ = 0;
  bool recreated_ = false;
  std::unordered_map<std::string, std::unique_ptr<statement>> cache_;
};

/// Settings of a group_writer.
struct group_options {
  /// The writer commits as soon as this many operations are queued.
  size_t batch_max = 512;
  /// Otherwise at most this long after the first queued operation.
  std::chrono::milliseconds batch_delay{2};
  /// First wait before retrying a failed batch; doubles up to retry_max.
  std::chrono::milliseconds retry_min{50};
  /// Longest wait between retries.
  std::chrono::milliseconds retry_max{5000};
};

/// Called on the writer thread after each attempt, with no lock of the writer held:
/// `committed` is the ticket through which every operation is durable (unchanged after a
/// failure); `err` is empty for a committed batch, else why the batch was rolled back (it
/// stays queued and is retried).
using durability_callback = std::function<void(uint64_t committed, const caf::error& err)>;

/// The non-template part of group_writer: the thread, batching, flushing and retries.
class group_writer_base {
public:
  group_writer_base(const group_writer_base&) = delete;
  group_writer_base& operator=(const group_writer_base&) = delete;

  /// Waits until every operation submitted before the call is committed; returns the
  /// writer's error instead if a batch fails (at once if it is failing already).
  caf::error flush();

  /// Ticket through which every operation is committed.
  uint64_t committed() const;

  /// Tickets handed out so far (the last submitted operation's).
  uint64_t submitted() const;

  /// The error of the last attempt while the writer is failing; empty when healthy.
  caf::error failure() const;

  /// Blocks while more than `limit` bytes of operations wait for the writer (back-pressure;
  /// call it before taking a lock the durability callback takes). Returns early while
  /// the writer is failing.
  void wait_for_room(uint64_t limit);

protected:
  group_writer_base(store& db, group_options opts, durability_callback on_durable);

  virtual ~group_writer_base();

  /// Starts the thread; the derived constructor calls it last.
  void start();

  /// Commits what is queued (one last attempt) and joins; the derived destructor calls it.
  void stop();

  /// Called by submit() with mtx_ held after queuing one operation; returns its ticket.
  uint64_t queued_locked(uint64_t bytes);

  /// Moves queued operations behind the taken ones (mtx_ held).
  virtual void take_locked() = 0;

  /// Number of queued, not yet taken operations (mtx_ held).
  virtual size_t queued_count_locked() const = 0;

  /// Writes the taken operations inside the open transaction (writer thread).
  virtual caf::error apply_taken(store& db) = 0;

  /// Forgets the taken operations after their commit (writer thread).
  virtual void release_taken() = 0;

  mutable std::mutex mtx_;

private:
  void run();
  caf::error commit_taken();

  store& db_;
  group_options opts_;
  durability_callback on_durable_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::condition_variable room_cv_;
  uint64_t submitted_ = 0;
  uint64_t committed_ = 0;
  std::atomic<uint64_t> queued_bytes_{0}; // written under mtx_; read without it first
  size_t flush_waiters_ = 0;
  bool stop_ = false;
  caf::error failure_;
  std::thread thread_;
};

/// Group commit of operations of type `Op`: submit() queues one and returns its ticket
/// (1, 2, 3, ... in submit order); the writer thread applies everything queued in one
/// transaction with `apply` (in ticket order) and then calls the durability callback.
/// A failed batch is rolled back, reported, and retried with back-off together with what
/// was queued meanwhile, so tickets commit in order or not at all.
template <class Op>
class group_writer final : public group_writer_base {
public:
  /// Writes a batch inside the writer's transaction; an error rolls the batch back.
  using apply_fn = std::function<caf::error(store&, std::vector<Op>&)>;

  /// Starts the writer thread on `db`, which it uses exclusively until destroyed.
  group_writer(store& db, group_options opts, apply_fn apply, durability_callback on_durable)
    : group_writer_base(db, opts, std::move(on_durable)), apply_(std::move(apply)) {
    start();
  }

  /// Commits what is queued (one attempt) and stops the thread.
  ~group_writer() override {
    stop();
  }

  /// Queues `op` accounting `bytes` for back-pressure; returns its ticket. Never blocks
  /// on the disk.
  uint64_t submit(Op op, uint64_t bytes = 0) {
    std::lock_guard guard{mtx_};
    queued_.push_back(std::move(op));
    return queued_locked(bytes);
  }

private:
  void take_locked() override {
    if (taken_.empty())
      taken_.swap(queued_);
    else
      std::move(queued_.begin(), queued_.end(), std::back_inserter(taken_));
    queued_.clear();
  }

  size_t queued_count_locked() const override {
    return queued_.size();
  }

  caf::error apply_taken(store& db) override {
    return apply_(db, taken_);
  }

  void release_taken() override {
    taken_.clear();
  }

  apply_fn apply_;
  std::vector<Op> queued_; // guarded by mtx_
  std::vector<Op> taken_;  // writer thread only
};

} // namespace grove
