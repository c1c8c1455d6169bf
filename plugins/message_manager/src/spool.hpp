#pragma once

// The durable spool for cloud-bound (QoS 1) messages of the message_manager.
//
// Semantics in short:
// - push() takes a message and gives it a sequence number (1, 2, 3, ... in push order).
//   The message is *accepted* once it is committed: immediately for `memory` storage,
//   after the writer thread committed its batch for `file` storage. committed_seq(),
//   flush(), push_durable() and spool_options::on_commit tell callers what is accepted.
// - peek() hands out the oldest messages not yet handed out, in order, and marks them in
//   flight. ack(seq) removes a message for good (cloud PUBACK). nack_all() puts every
//   in-flight message back in front of the pending ones (link lost), order preserved.
// - A message leaves the spool only by ack(), or by drop_oldest when the spool is full.
// - `file` storage survives kill -9 of the process: every accepted message that was not
//   acked is pending again after open(), in order. Possible duplicates are the messages
//   that were handed out (peek) before the crash but not acked; open() counts them in
//   spool_stats::redelivered_after_restart (an upper bound: it also counts messages that
//   were handed out and nacked).
// - `file` storage is a grove::store (SQLite, WAL) written by a grove::group_writer: the
//   spool keeps only the queue semantics; batching, commits and retries are the store's.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "grove/store.hpp"

namespace grove::mm {

/// Where a spool keeps its messages.
enum class spool_storage {
  /// A deque in memory; nothing survives a restart.
  memory,
  /// A SQLite database in WAL mode; survives restarts and kill -9.
  file,
};

/// What push() does when a new message does not fit.
enum class spool_when_full {
  /// Remove the oldest messages (pending or in flight) until it fits; counted.
  drop_oldest,
  /// Refuse the new message with errc::queue_full; counted.
  reject_new,
};

/// Free space a `file` spool leaves on its filesystem by default (spool_options).
inline constexpr uint64_t default_disk_reserve_bytes = 16 * 1024 * 1024;

/// Settings of a spool; validated by spool::open().
struct spool_options {
  /// Storage kind.
  spool_storage storage = spool_storage::memory;
  /// The database file for `file` storage (its directory is created if missing).
  std::filesystem::path file;
  /// Capacity in accounted bytes (see spool::message_overhead); at least 262144.
  uint64_t max_size_bytes = 2'621'440;
  /// Policy when full.
  spool_when_full when_full = spool_when_full::drop_oldest;
  /// `file`: space the spool leaves free on its filesystem. The spool is also full when
  /// a message would bring the free space (statvfs, for unprivileged users) below this
  /// reserve, whatever max_size_bytes says: it then holds at most what it held when the
  /// reserve was reached (the pages of acked or dropped rows are reused, so the file
  /// stops growing) until the free space is above the reserve again, and `when_full`
  /// applies. The reserve
  /// absorbs what the accounting does not see: the WAL (SQLite checkpoints it at about
  /// 4 MiB), the database's growth at a checkpoint, and the batch being committed: push()
  /// also waits while more than a quarter of it (at least 256 KiB) waits for the writer.
  uint64_t disk_reserve_bytes = default_disk_reserve_bytes;
  /// `file`: the writer commits as soon as this many operations are queued.
  size_t batch_max = 512;
  /// `file`: otherwise it commits at most this long after the first queued operation.
  std::chrono::milliseconds batch_delay{2};
  /// `file`: true = synchronous=FULL (one fsync of the WAL per commit batch: accepted
  /// messages also survive power loss); false = synchronous=NORMAL (no fsync per commit:
  /// accepted messages survive kill -9 of the process, not power loss).
  bool fsync_each_batch = true;
  /// Called with the new committed_seq() whenever it advances; runs on the writer thread
  /// (`file`) or the pushing thread (`memory`), without the spool's lock held.
  std::function<void(uint64_t)> on_commit;
  /// `file`: called on the writer thread, without the spool's lock held, each time a
  /// commit fails (disk full, I/O error); the writer retries with back-off.
  std::function<void(const caf::error&)> on_error;
};

/// One message handed out by spool::peek().
struct spooled {
  /// Sequence number; pass it to spool::ack().
  uint64_t seq = 0;
  /// Destination topic.
  std::string topic;
  /// Message bytes.
  std::string payload;
  /// QoS requested by the publisher.
  uint32_t qos = 1;
};

/// Counters of a spool.
struct spool_stats {
  /// Messages in the spool (pending plus in flight).
  uint64_t count = 0;
  /// Accounted bytes of those messages.
  uint64_t bytes = 0;
  /// Messages removed by drop_oldest to make room.
  uint64_t dropped_oldest = 0;
  /// Pushes refused (queue_full under reject_new, too_large, or the writer failing).
  uint64_t rejected = 0;
  /// Highest sequence number such that it and every older message are accepted.
  uint64_t committed_seq = 0;
  /// Messages handed out by peek() and neither acked nor nacked.
  uint64_t in_flight = 0;
  /// Messages found at open() that had been handed out before the restart (possible
  /// duplicates at the cloud).
  uint64_t redelivered_after_restart = 0;
  /// `file`: commits that failed (each retried); nothing of a failed commit is accepted.
  uint64_t commit_failures = 0;
  /// `file`: true while the last commit failed (pushes are refused until one succeeds).
  bool failing = false;
  /// `file`: pushes that found the filesystem's free space at the reserve (each dropped
  /// old messages or was refused, as `when_full` says; also in those counters).
  uint64_t disk_full = 0;
};

/// A bounded, ordered, optionally durable message queue with explicit acknowledgement.
/// Thread-safe: every member function may be called from any thread.
class spool {
public:
  /// Smallest accepted max_size_bytes.
  static constexpr uint64_t min_size_bytes = 262'144;

  /// Bytes accounted per message on top of topic and payload: roughly what the
  /// in-memory index node and the SQLite row header cost.
  static constexpr uint64_t message_overhead = 64;

  /// Opens a spool. For `file` storage it creates or reopens the database; every row
  /// found is pending again. Errors: invalid_config (bad options), malformed (the file
  /// is not a healthy Grove spool database), unsupported (a newer spool schema),
  /// invalid_state (the file is in use by another process), system_error (I/O). Every
  /// error message names the file.
  static caf::expected<std::unique_ptr<spool>> open(spool_options opts);

  /// Commits what is queued, stops the writer and closes the database.
  ~spool();

  spool(const spool&) = delete;
  spool& operator=(const spool&) = delete;

  /// Queues a message and returns its sequence number. It is accepted (durable) once
  /// committed_seq() >= that number. Errors: too_large (the message alone exceeds
  /// max_size_bytes), queue_full (reject_new and no room: max_size_bytes reached, or
  /// the filesystem's free space at disk_reserve_bytes), or the writer's error while
  /// its last commit failed (until a retry succeeds). For `file` storage it blocks while
  /// more than max_size_bytes of operations wait for the writer (back-pressure).
  caf::expected<uint64_t> push(std::string topic, std::string payload, uint32_t qos = 1);

  /// Like push(), but returns only after the message is committed.
  caf::expected<uint64_t> push_durable(std::string topic, std::string payload,
                                       uint32_t qos = 1);

  /// Waits until every push, ack and drop made before the call is committed. Returns the
  /// writer's error if a commit fails (at once while it is failing). A no-op for `memory`
  /// storage.
  caf::error flush();

  /// Highest sequence number such that it and every older message are accepted.
  uint64_t committed_seq() const;

  /// Hands out up to `max` of the oldest messages not yet handed out, in order, and marks
  /// them in flight. Messages not yet committed may be handed out too: the cloud can only
  /// ack what it got, and an ack of an uncommitted message is committed after its insert.
  std::vector<spooled> peek(size_t max);

  /// Removes a message (pending or in flight) for good. Returns false if it was not in
  /// the spool (already acked or dropped).
  bool ack(uint64_t seq);

  /// Makes every in-flight message pending again, ahead of the others, in order; returns
  /// how many. Call it when the cloud link drops.
  size_t nack_all();

  /// Returns the counters.
  spool_stats stats() const;

private:
  struct entry {
    std::string topic;
    std::string payload;
    uint32_t qos;
    uint64_t size;
  };

  // One write for the group writer.
  struct op {
    enum kind_t : uint8_t { insert, erase, sent_hwm } kind;
    uint64_t seq;
    std::string topic;
    std::string payload;
    uint32_t qos;
  };

  explicit spool(spool_options opts);

  caf::error open_file();
  caf::error load();
  caf::error write_batch(std::vector<op>& batch);
  void on_durable(const caf::error& err);
  void erase_locked(std::map<uint64_t, entry>::iterator i);
  void queue_erase_locked(uint64_t seq);
  bool disk_short_locked(uint64_t size);

  spool_options opts_;
  bool durable_ = false;

  mutable std::mutex mtx_;

  // Messages in the spool by sequence number. Those with seq < cursor_ are in flight.
  std::map<uint64_t, entry> messages_;
  uint64_t cursor_ = 0;
  uint64_t next_seq_ = 1;
  uint64_t bytes_ = 0;
  uint64_t in_flight_ = 0;
  uint64_t dropped_oldest_ = 0;
  uint64_t rejected_ = 0;
  uint64_t committed_seq_ = 0;
  uint64_t redelivered_ = 0;
  uint64_t commit_failures_ = 0;
  uint64_t disk_full_ = 0;
  caf::error writer_error_; // the last commit's error while the writer is failing

  // `file`: the filesystem's free bytes as last measured, minus what was pushed and not
  // committed then and what was pushed since; measured again at most every
  // disk_check_interval.
  uint64_t disk_free_ = 0;
  // `file`: accounted bytes of inserts pushed and not yet committed.
  uint64_t uncommitted_bytes_ = 0;
  std::chrono::steady_clock::time_point disk_checked_;
  // While the free space is at the reserve: what the spool held when it got there.
  std::optional<uint64_t> disk_cap_;

  // Highest seq ever handed out; persisted so open() can count possible duplicates.
  uint64_t sent_hwm_ = 0;

  // `file` only. The statements and batch_last_insert_ belong to the writer thread.
  std::unique_ptr<store> db_;
  statement* insert_ = nullptr;
  statement* delete_ = nullptr;
  statement* meta_ = nullptr;
  uint64_t batch_last_insert_ = 0;
  uint64_t batch_insert_bytes_ = 0;
  std::unique_ptr<group_writer<op>> writer_; // last: stops before the rest goes
};

} // namespace grove::mm
