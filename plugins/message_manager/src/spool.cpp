#include "spool.hpp"

#include <sys/statvfs.h>

#include <algorithm>
#include <limits>

#include "grove/errors.hpp"

namespace grove::mm {

namespace {

// 'GRVS' in PRAGMA application_id marks a database as a Grove spool.
constexpr int32_t application_id = 0x47525653;

// How old a free-space measurement may get before push() takes a new one: statvfs is a
// system call, and pushes come by the ten thousand per second.
constexpr auto disk_check_interval = std::chrono::milliseconds{20};

// Smallest bound of what may wait for the writer (a reserve of 0 must not make every
// push wait for its own commit).
constexpr uint64_t min_pending_bytes = 256 * 1024;

// The schema, version by version (PRAGMA user_version).
std::vector<migration> schema() {
  return {
    {1,
     "CREATE TABLE spool(seq INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
     " payload BLOB NOT NULL, qos INTEGER NOT NULL);"
     "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
     {}},
  };
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
  if (auto err = result->open_file())
    return err;
  if (auto err = result->load())
    return err;
  auto self = result.get();
  group_options go;
  go.batch_max = self->opts_.batch_max;
  go.batch_delay = self->opts_.batch_delay;
  self->writer_ = std::make_unique<group_writer<op>>(
    *self->db_, go,
    [self](store&, std::vector<op>& batch) { return self->write_batch(batch); },
    [self](uint64_t, const caf::error& err) { self->on_durable(err); });
  // A smaller max_size_bytes than last time: drop_oldest trims now; reject_new keeps
  // everything and refuses pushes until acks made room.
  if (self->opts_.when_full == spool_when_full::drop_oldest) {
    std::lock_guard guard{self->mtx_};
    while (self->bytes_ > self->opts_.max_size_bytes && !self->messages_.empty()) {
      self->queue_erase_locked(self->messages_.begin()->first);
      self->erase_locked(self->messages_.begin());
      ++self->dropped_oldest_;
    }
  }
  return result;
}

spool::~spool() {
  // Commits what is queued; the writer's callbacks still find the spool whole.
  writer_.reset();
}

caf::error spool::open_file() {
  store_options so;
  so.application_id = application_id;
  so.kind = "spool";
  so.migrations = schema();
  // FULL fsyncs the WAL on every commit (survives power loss); NORMAL does not, but a
  // committed WAL transaction is in the OS page cache and survives kill -9 all the same.
  so.synchronous = opts_.fsync_each_batch ? sync_level::full : sync_level::normal;
  auto db = store::open(opts_.file, std::move(so));
  if (!db)
    return std::move(db.error());
  db_ = std::move(*db);
  auto prepare = [this](const char* sql, statement*& stmt) -> caf::error {
    auto result = db_->prepare(sql);
    if (!result)
      return std::move(result.error());
    stmt = *result;
    return {};
  };
  if (auto err = prepare("INSERT INTO spool(seq, topic, payload, qos) VALUES(?1, ?2, ?3, ?4)",
                         insert_))
    return err;
  if (auto err = prepare("DELETE FROM spool WHERE seq = ?1", delete_))
    return err;
  return prepare("INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)", meta_);
}

caf::error spool::load() {
  // The file may be damaged or edited by hand (tests/fuzz/targets/mm_spool.cpp): what the
  // spool never writes is refused, so that sequence numbers stay increasing and in the
  // range SQLite's INTEGER keeps (a push after the last one must fit too).
  constexpr int64_t max_seq = std::numeric_limits<int64_t>::max() - 1;
  auto bad = [this](const std::string& what) {
    return make_error(errc::malformed, "spool file '" + opts_.file.string() + "': " + what);
  };
  // Meta first: the sent high-water mark decides what counts as a possible duplicate.
  auto meta = db_->prepare("SELECT key, value FROM meta");
  if (!meta)
    return std::move(meta.error());
  for (;;) {
    auto row = (*meta)->step();
    if (!row)
      return std::move(row.error());
    if (!*row)
      break;
    auto key = (*meta)->column_text(0);
    auto raw = (*meta)->column_int64(1);
    if ((key == "sent_hwm" || key == "next_seq") && (raw < 0 || raw > max_seq))
      return bad(std::string{key} + " " + std::to_string(raw) + " is out of range");
    auto value = static_cast<uint64_t>(raw);
    if (key == "sent_hwm")
      sent_hwm_ = value;
    else if (key == "next_seq")
      next_seq_ = std::max(next_seq_, value);
  }
  (*meta)->reset();
  auto rows = db_->prepare("SELECT seq, topic, payload, qos FROM spool ORDER BY seq");
  if (!rows)
    return std::move(rows.error());
  auto& stmt = **rows;
  for (;;) {
    auto row = stmt.step();
    if (!row)
      return std::move(row.error());
    if (!*row)
      break;
    auto raw_seq = stmt.column_int64(0);
    auto raw_qos = stmt.column_int64(3);
    if (raw_seq < 1 || raw_seq > max_seq
        || (!messages_.empty() && static_cast<uint64_t>(raw_seq) <= messages_.rbegin()->first))
      return bad("message " + std::to_string(raw_seq)
                 + ": sequence number out of range or not increasing");
    if (stmt.column_is_null(1) || stmt.column_is_null(2) || raw_qos < 0 || raw_qos > 2)
      return bad("message " + std::to_string(raw_seq) + ": no topic or payload, or QoS "
                 + std::to_string(raw_qos));
    auto seq = static_cast<uint64_t>(raw_seq);
    entry e{std::string{stmt.column_text(1)}, std::string{stmt.column_blob(2)},
            static_cast<uint32_t>(raw_qos), 0};
    e.size = e.topic.size() + e.payload.size() + message_overhead;
    bytes_ += e.size;
    if (seq <= sent_hwm_)
      ++redelivered_;
    next_seq_ = std::max(next_seq_, seq + 1);
    messages_.emplace_hint(messages_.end(), seq, std::move(e));
  }
  stmt.reset();
  committed_seq_ = next_seq_ - 1;
  return {};
}

// -- producer side ------------------------------------------------------------

void spool::queue_erase_locked(uint64_t seq) {
  if (writer_)
    writer_->submit(op{op::erase, seq, {}, {}, 0});
}

void spool::erase_locked(std::map<uint64_t, entry>::iterator i) {
  if (i->first < cursor_)
    --in_flight_;
  bytes_ -= i->second.size;
  messages_.erase(i);
}

caf::expected<uint64_t> spool::push(std::string topic, std::string payload, uint32_t qos) {
  auto size = topic.size() + payload.size() + message_overhead;
  // Back-pressure: bounds what waits for the writer to about one spool's worth, and to a
  // quarter of the disk reserve: a commit's WAL grows by what it writes, so a batch must
  // fit in the reserve. Waits outside the spool's lock: the writer's callback takes it.
  if (writer_)
    writer_->wait_for_room(std::min(opts_.max_size_bytes,
                                    std::max(opts_.disk_reserve_bytes / 4, min_pending_bytes)));
  std::unique_lock guard{mtx_};
  if (size > opts_.max_size_bytes) {
    ++rejected_;
    return make_error(errc::too_large, "message of " + std::to_string(size)
                                         + " bytes exceeds the spool's max_size_bytes "
                                         + std::to_string(opts_.max_size_bytes));
  }
  if (writer_error_) {
    // Not accepted: it could not be made durable now. The writer keeps retrying.
    ++rejected_;
    return writer_error_;
  }
  // The disk is a limit too: once its free space is at the reserve, the spool may hold
  // no more than it held then (SQLite reuses the pages of acked and dropped rows), until
  // a measurement finds room again.
  uint64_t capacity = opts_.max_size_bytes;
  bool disk_bound = false;
  if (disk_short_locked(size)) {
    if (!disk_cap_)
      disk_cap_ = bytes_;
    if (*disk_cap_ < capacity) {
      capacity = *disk_cap_;
      disk_bound = true;
    }
  } else {
    disk_cap_.reset();
  }
  if (bytes_ + size > capacity) {
    auto full = [&] {
      ++rejected_;
      if (!disk_bound)
        return make_error(errc::queue_full, "spool is full (" + std::to_string(bytes_) + " of "
                                              + std::to_string(opts_.max_size_bytes)
                                              + " bytes)");
      return make_error(errc::queue_full,
                        "spool is full: " + std::to_string(disk_free_) + " bytes free on the "
                          + "filesystem of " + opts_.file.string() + ", "
                          + std::to_string(opts_.disk_reserve_bytes) + " kept in reserve");
    };
    if (disk_bound)
      ++disk_full_;
    if (opts_.when_full == spool_when_full::reject_new || size > capacity)
      return full();
    while (bytes_ + size > capacity && !messages_.empty()) {
      queue_erase_locked(messages_.begin()->first);
      erase_locked(messages_.begin());
      ++dropped_oldest_;
    }
  }
  auto seq = next_seq_++;
  // Until the next measurement, what is pushed counts as used (rows freed by drops are
  // reused, but the WAL grows meanwhile: the estimate stays on the safe side).
  disk_free_ -= std::min(disk_free_, size);
  if (writer_) {
    uncommitted_bytes_ += size;
    writer_->submit(op{op::insert, seq, topic, payload, qos}, size);
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
  if (!writer_)
    return {};
  return writer_->flush();
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
    // An operation of its own so flush() also covers it; a batch writes only the last.
    if (writer_)
      writer_->submit(op{op::sent_hwm, sent_hwm_, {}, {}, 0});
  }
  return result;
}

bool spool::disk_short_locked(uint64_t size) {
  if (!durable_)
    return false;
  auto now = std::chrono::steady_clock::now();
  if (now - disk_checked_ >= disk_check_interval) {
    struct statvfs vfs {};
    auto dir = opts_.file.parent_path();
    if (::statvfs(dir.empty() ? "." : dir.c_str(), &vfs) != 0)
      return false; // cannot tell: max_size_bytes and the commits' errors still hold
    // What waits for the writer is not on the disk yet, but will be.
    auto measured = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    disk_free_ = measured - std::min(measured, uncommitted_bytes_);
    disk_checked_ = now;
  }
  return disk_free_ < opts_.disk_reserve_bytes + size;
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
  spool_stats st;
  st.count = messages_.size();
  st.bytes = bytes_;
  st.dropped_oldest = dropped_oldest_;
  st.rejected = rejected_;
  st.committed_seq = committed_seq_;
  st.in_flight = in_flight_;
  st.redelivered_after_restart = redelivered_;
  st.commit_failures = commit_failures_;
  st.failing = static_cast<bool>(writer_error_);
  st.disk_full = disk_full_;
  return st;
}

// -- writer (runs on the group writer's thread) -------------------------------

caf::error spool::write_batch(std::vector<op>& batch) {
  // A failed batch comes back with more appended: recompute from scratch.
  batch_last_insert_ = 0;
  batch_insert_bytes_ = 0;
  uint64_t hwm = 0;
  for (auto& x : batch) {
    switch (x.kind) {
      case op::insert:
        if (auto err = insert_->run(x.seq, x.topic, blob{x.payload}, x.qos))
          return err;
        batch_last_insert_ = x.seq;
        batch_insert_bytes_ += x.topic.size() + x.payload.size() + message_overhead;
        break;
      case op::erase:
        if (auto err = delete_->run(x.seq))
          return err;
        break;
      case op::sent_hwm:
        hwm = std::max(hwm, x.seq);
        break;
    }
  }
  // next_seq keeps sequence numbers increasing across restarts even when empty.
  if (batch_last_insert_ != 0)
    if (auto err = meta_->run("next_seq", batch_last_insert_ + 1))
      return err;
  if (hwm != 0)
    if (auto err = meta_->run("sent_hwm", hwm))
      return err;
  return {};
}

void spool::on_durable(const caf::error& err) {
  uint64_t advanced = 0;
  {
    std::lock_guard guard{mtx_};
    if (err) {
      // Rolled back: committed_seq_ stays; pushes are refused until a retry succeeds.
      writer_error_ = err;
      ++commit_failures_;
    } else {
      writer_error_ = caf::error{};
      uncommitted_bytes_ -= std::min(uncommitted_bytes_, batch_insert_bytes_);
      if (batch_last_insert_ > committed_seq_)
        advanced = committed_seq_ = batch_last_insert_;
    }
  }
  if (err) {
    if (opts_.on_error)
      opts_.on_error(err);
  } else if (advanced != 0 && opts_.on_commit) {
    opts_.on_commit(advanced);
  }
}

} // namespace grove::mm
