// shadow: the local Device Shadow service (plugins/shadow/README.md). Devices and
// functions speak AWS IoT's shadow protocol through message_manager (requests on mm-2,
// answers through mm-3 as source `shadow`); other plugins use the bus API (sh-1..sh-4).
// Documents live in SQLite (grove::store, WAL): an update is answered only once its
// group commit is durable, and only a bounded cache of documents stays in memory.
// Cloud sync (README "Cloud sync") goes through message_manager's system API (mm-6 to
// mm-10): the base both sides agreed on is kept in the same database, and each sync is a
// three-way merge per leaf (sync_merge.cpp).

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <random>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include <spdlog/spdlog.h>

#include "config.hpp"
#include "document.hpp"
#include "local_limits.hpp"
#include "sync_merge.hpp"
#include "grove/config_map.hpp"
#include "grove/kernel/group_client.hpp"
#include "grove/message_manager/client.hpp"
#include "grove/rate_limiter.hpp"
#include "grove/shadow/client.hpp"
#include "grove/store.hpp"

namespace {

using namespace grove::shadow;

namespace mmc = grove::message_manager;

constexpr std::string_view requests_filter = "$grove/mm/out/shadow/#";
constexpr std::string_view requests_prefix = "$grove/mm/out/shadow/";

// One row change for the writer: a document, a tombstone (no document), or, with an
// empty thing, the purge of tombstones older than `deleted_at`; with `sync`, a shadow's
// sync row (`doc` the base, `version` the local version at the base).
struct write_op {
  std::string thing;
  std::string name;
  std::optional<std::string> doc;
  uint64_t version = 0;
  int64_t deleted_at = 0;
  bool sync = false;
  uint64_t cloud_version = 0;
  std::optional<std::string> pending;
};

// Who made a change: a cloud change applied locally is not sent back to the cloud.
enum class origin { local, cloud };

// Every sync request's clientToken starts so: the cloud's events of our own updates
// are told from other writers' (also those of an earlier run).
constexpr std::string_view sync_token_prefix = "grove-sync:";

// An answer of the cloud that does not come within this (lost while the link changed)
// is given up and the shadow synchronized again.
constexpr auto sync_answer_timeout = std::chrono::seconds{15};

// What one request produces, sent together once everything before it is durable.
struct answer {
  int code = 200;       // 200 accepted, else the rejection's code
  std::string reply;    // .../accepted or .../rejected payload
  std::string delta;    // update/delta, when there is one
  std::string documents; // update/documents of an accepted update
};

using answer_sink = std::function<void(const shadow_topic&, const answer&)>;

// A cached shadow: its document, or what is left of it, or nothing at all.
struct entry {
  std::optional<document> doc;
  std::string stored; // instead of doc: its stored form, for a get of an uncached shadow
  std::optional<tombstone> tomb;
  uint64_t ticket = 0; // last write of this shadow; pinned in the cache until committed
  std::list<std::string>::iterator lru;
};

struct waiting {
  uint64_t ticket;
  shadow_topic topic;
  answer out;
  answer_sink sink;
};

int64_t now_seconds() {
  using namespace std::chrono;
  return duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
}

std::string key_of(std::string_view thing, std::string_view name) {
  std::string key{thing};
  key += '/'; // never in a name
  key += name;
  return key;
}

class shadow_plugin : public grove::typed_plugin<shadow_config> {
public:
  caf::error init(grove::context& ctx, const shadow_config& cfg) override {
    ctx_ = &ctx;
    cfg_ = cfg;
    grove::store_options opts;
    opts.application_id = 0x47727368; // "Grsh"
    opts.kind = "shadow";
    // Tombstones are rows without a document: the deleted shadow's version and when.
    opts.migrations = {{1, "CREATE TABLE shadows (thing TEXT NOT NULL, name TEXT NOT NULL,"
                           " doc TEXT, version INTEGER NOT NULL, deleted_at INTEGER,"
                           " PRIMARY KEY (thing, name)) WITHOUT ROWID",
                        {}},
                       // Cloud sync: per synced shadow the state both sides agreed on
                       // (NULL: none), each side's version then, and the state an
                       // update not yet answered asked the cloud to take.
                       {2, "CREATE TABLE sync (thing TEXT NOT NULL, name TEXT NOT NULL,"
                           " base TEXT, cloud_version INTEGER NOT NULL,"
                           " local_version INTEGER NOT NULL, pending TEXT,"
                           " PRIMARY KEY (thing, name)) WITHOUT ROWID",
                        {}},
                       // form 1: doc is get/accepted's payload (document::serialize,
                       // with delta), answered without parsing; 0: written before, no
                       // delta, parsed and rendered.
                       {3, "ALTER TABLE shadows ADD COLUMN form INTEGER NOT NULL DEFAULT 0", {}}};
    // Not exclusive: the writer's connection and the reader's share the file (WAL).
    opts.exclusive = false;
    // The file may hold 100,000 documents: reading every page at each start is too slow;
    // WAL recovery already never leaves a torn document.
    opts.check_integrity = false;
    auto db = grove::store::open(cfg.file, opts);
    if (!db)
      return std::move(db.error());
    db_ = std::move(*db);
    auto reader = grove::store::open(cfg.file, opts);
    if (!reader)
      return std::move(reader.error());
    reader_ = std::move(*reader);
    if (auto err = declare_metrics())
      return err;
    limits_.emplace(cfg.rate_limits.max_local_per_thing, cfg.rate_limits.max_total_local);
    // Group commit without a wait by default: a commit (one fsync) takes what is queued,
    // and what arrives meanwhile forms the next. A wait adds to every answer's latency;
    // on flash it may be worth fewer, larger commits (README "Storage, durability and
    // memory").
    grove::group_options go;
    go.batch_delay = std::chrono::milliseconds{cfg.commit_delay_ms};
    writer_ = std::make_unique<grove::group_writer<write_op>>(
      *db_, go, [](grove::store& db, std::vector<write_op>& ops) {
        return write(db, ops);
      },
      [this](uint64_t committed, const caf::error& err) { on_durable(committed, err); });
    purge_tombstones();
    if (auto err = serve_api())
      return err;
    init_sync();
    return {};
  }

  caf::error start() override {
    if (auto err = ctx_->subscribe(grove::group_client::current_topic))
      return err;
    if (auto err = ctx_->subscribe(requests_filter))
      return err;
    load_group();
    ctx_->every(std::chrono::hours{1}, [this] { purge_tombstones(); });
    limits_status();
    return start_sync();
  }

  void stop() override {
    // Commit what is queued and send the answers that waited for it: a reload or a
    // clean stop loses none (the context is valid until stop returns).
    if (writer_ && !writer_->flush())
      release(writer_->committed());
    writer_.reset();
    reader_.reset();
    db_.reset();
  }

  void on_message(const grove::Envelope& msg) override {
    if (msg.topic() == grove::group_client::current_topic) {
      if (auto g = grove::group_client::current(msg))
        set_group(*g);
      return;
    }
    if (msg.topic().rfind(requests_prefix, 0) == 0) {
      on_device_request(msg);
      return;
    }
    if (auto cloud_topic = mmc::cloud_topic_of(msg.topic(), ctx_->name())) {
      if (msg.source() == "cloud")
        on_cloud(*cloud_topic, msg.payload());
      return;
    }
    if (msg.topic() == mmc::cloud_link_topic)
      on_link(msg);
  }

private:
  // --- storage ---

  static caf::error write(grove::store& db, std::vector<write_op>& ops) {
    for (const auto& op : ops) {
      caf::error err;
      if (op.sync)
        err = write_sync_row(db, op);
      else if (op.thing.empty())
        err = db.run("DELETE FROM shadows WHERE doc IS NULL AND deleted_at < ?",
                     op.deleted_at);
      else if (op.doc)
        err = db.run("INSERT OR REPLACE INTO shadows (thing, name, doc, version, deleted_at,"
                     " form) VALUES (?, ?, ?, ?, NULL, 1)",
                     op.thing, op.name, *op.doc, op.version);
      else
        err = db.run("INSERT OR REPLACE INTO shadows (thing, name, doc, version, deleted_at,"
                     " form) VALUES (?, ?, NULL, ?, ?, 1)",
                     op.thing, op.name, op.version, op.deleted_at);
      if (err)
        return err;
    }
    return {};
  }

  static caf::error write_sync_row(grove::store& db, const write_op& op) {
    auto stmt = db.prepare("INSERT OR REPLACE INTO sync (thing, name, base, cloud_version,"
                           " local_version, pending) VALUES (?, ?, ?, ?, ?, ?)");
    if (!stmt)
      return std::move(stmt.error());
    auto& st = **stmt;
    st.bind_all(op.thing, op.name, nullptr, op.cloud_version, op.version, nullptr);
    if (op.doc)
      st.bind(3, *op.doc);
    if (op.pending)
      st.bind(6, *op.pending);
    auto done = st.step();
    st.reset();
    if (!done)
      return std::move(done.error());
    return {};
  }

  // Writer thread: hand the commit to the actor, which sends what it made durable.
  void on_durable(uint64_t committed, const caf::error& err) {
    if (err) {
      ctx_->post([this, text = grove::describe(err)] {
        ctx_->log().error("shadow: cannot commit, retrying: {}", text);
        ctx_->set_status("storage", "FAILING: " + text);
        failing_reported_ = true;
        write_failures_.inc();
      });
      return;
    }
    commits_.inc(); // one transaction, one fsync (synchronous=FULL)
    ctx_->post([this, committed] { release(committed); });
  }

  void release(uint64_t committed) {
    if (committed <= committed_)
      return;
    if (std::exchange(failing_reported_, false))
      ctx_->set_status("storage", "ok");
    committed_ = committed;
    while (!waiting_.empty() && waiting_.front().ticket <= committed_) {
      auto w = std::move(waiting_.front());
      waiting_.pop_front();
      if (auto it = inflight_.find(w.topic.thing); it != inflight_.end() && --it->second == 0)
        inflight_.erase(it);
      w.sink(w.topic, w.out);
    }
    while (!reads_.empty() && reads_.front().ticket <= committed_) {
      auto f = std::move(reads_.front().run);
      reads_.pop_front();
      f();
    }
    trim_cache();
  }

  void purge_tombstones() {
    write_op purge;
    purge.deleted_at = now_seconds() - tombstone_seconds;
    writer_->submit(std::move(purge));
  }

  // The cached entry of a shadow, read from the database on a miss; nullptr when the
  // database cannot be read.
  entry* lookup(const shadow_topic& t) {
    auto key = key_of(t.thing, t.name);
    if (auto it = cache_.find(key); it != cache_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      return &it->second;
    }
    auto e = read_entry(t, false);
    if (!e)
      return nullptr;
    lru_.push_front(key);
    e->lru = lru_.begin();
    auto [it, added] = cache_.emplace(std::move(key), std::move(*e));
    return &it->second;
  }

  // The shadow's row as an entry (nothing stored: an empty one); nullopt when the
  // database cannot be read. With `keep_text`, a document in get/accepted's form is
  // kept as its text (entry::stored) instead of parsed: what a get needs.
  std::optional<entry> read_entry(const shadow_topic& t, bool keep_text) {
    entry e;
    auto stmt = reader_->prepare(
      "SELECT doc, version, deleted_at, form FROM shadows WHERE thing = ? AND name = ?");
    if (!stmt) {
      ctx_->log().error("shadow: {}", grove::describe(stmt.error()));
      return std::nullopt;
    }
    (*stmt)->bind_all(t.thing, t.name);
    auto row = (*stmt)->step();
    if (row && *row) {
      if ((*stmt)->column_is_null(0)) {
        e.tomb = tombstone{static_cast<uint64_t>((*stmt)->column_int64(1)),
                           (*stmt)->column_int64(2)};
      } else if (keep_text && (*stmt)->column_int64(3) == 1) {
        e.stored = std::string{(*stmt)->column_text(0)};
      } else {
        e.doc = document::deserialize((*stmt)->column_text(0));
        if (!e.doc)
          ctx_->log().error("shadow: stored document of '{}' does not parse",
                            key_of(t.thing, t.name));
      }
    }
    (*stmt)->reset();
    if (!row) {
      ctx_->log().error("shadow: {}", grove::describe(row.error()));
      return std::nullopt;
    }
    return e;
  }

  // Drops the least recently used documents beyond the bound; a document whose write is
  // not yet committed stays (the database does not have it yet).
  void trim_cache() {
    auto over = cache_.size() > static_cast<size_t>(cfg_.cache_entries);
    for (auto it = lru_.end(); over && it != lru_.begin();) {
      --it;
      auto found = cache_.find(*it);
      if (found->second.ticket > committed_)
        continue;
      cache_.erase(found);
      it = lru_.erase(it);
      over = cache_.size() > static_cast<size_t>(cfg_.cache_entries);
    }
    cached_.set(static_cast<int64_t>(cache_.size()));
  }

  // --- requests ---

  // Runs one request and queues its answer behind every write before it; returns the
  // answer's code (200: accepted), known at once although the answer may wait.
  int handle(const shadow_topic& t, std::string_view payload, answer_sink sink,
             origin from = origin::local) {
    auto now = now_seconds();
    if (from == origin::local) {
      // Shadow manager's rateLimits (README "Local request limits"): answered at once,
      // like the in-flight bound below, and it costs no token of either bucket.
      auto verdict = limits_->admit(t.thing);
      if (verdict != limit_verdict::ok) {
        rejected_.inc();
        (verdict == limit_verdict::thing ? throttled_thing_ : throttled_total_).inc();
        if (!std::exchange(limits_status_due_, true)) // at most once a second, no idle timer
          ctx_->after(std::chrono::seconds{1}, [this] {
            limits_status_due_ = false;
            limits_status();
          });
        sink(t, refusal({429, std::string{msg::too_many_requests}},
                        client_token_of(payload), now));
        return 429;
      }
    }
    auto& count = inflight_[t.thing];
    if (count >= cfg_.max_inflight_per_thing && from == origin::local) {
      // Answered at once: it changes nothing, and waiting would only add to the load.
      rejected_.inc();
      sink(t, refusal({429, std::string{msg::too_many_requests}},
                      client_token_of(payload), now));
      return 429;
    }
    ++count;
    answer out;
    bool changed = false;
    uint64_t ticket = writer_->submitted();
    // A get of a shadow not in memory reads its row and answers from the stored text: no
    // parse, and it takes no cache slot (reads do not push out documents being written),
    // so its cost does not grow with the number of shadows beyond the row's read.
    std::optional<entry> uncached;
    entry* e = nullptr;
    if (t.op == verb::get && !cache_.contains(key_of(t.thing, t.name))) {
      uncached = read_entry(t, true);
      e = uncached ? &*uncached : nullptr;
    } else {
      e = lookup(t);
    }
    auto req = parse_request(payload, t.op,
                             static_cast<size_t>(cfg_.max_document_bytes) * 4);
    if (!e) {
      out = refusal({500, std::string{msg::internal}}, client_token_of(payload), now);
    } else if (auto rej = rejected(req)) {
      out = refusal(*rej, client_token_of(payload), now);
    } else {
      auto& r = std::get<request>(req);
      switch (t.op) {
        case verb::get:
          if (!e->stored.empty()) {
            if (auto reply = get_accepted_from_stored(e->stored, r.client_token, now)) {
              out.reply = std::move(*reply);
            } else if (auto doc = document::deserialize(e->stored)) {
              out.reply = get_accepted(*doc, r.client_token, now);
            } else {
              ctx_->log().error("shadow: stored document of '{}' does not parse",
                                key_of(t.thing, t.name));
              out = refusal({500, std::string{msg::internal}}, r.client_token, now);
              break;
            }
            gets_.inc();
          } else if (e->doc) {
            out.reply = get_accepted(*e->doc, r.client_token, now);
            gets_.inc();
          } else {
            out = refusal(no_shadow(t), r.client_token, now);
          }
          break;
        case verb::del:
          if (e->doc) {
            out.reply = delete_accepted(e->doc->version, r.client_token, now);
            e->tomb = tombstone{e->doc->version, now};
            e->doc.reset();
            ticket = e->ticket = submit(t, *e);
            deletes_.inc();
            changed = true;
          } else {
            out = refusal(no_shadow(t), r.client_token, now);
          }
          break;
        case verb::update: {
          auto up = apply_update(e->doc, e->tomb, r, now,
                                 static_cast<size_t>(cfg_.max_document_bytes));
          if (auto rej = rejected(up)) {
            out = refusal(*rej, r.client_token, now);
            break;
          }
          auto& done = std::get<update_result>(up);
          out.reply = std::move(done.accepted);
          out.delta = std::move(done.delta);
          out.documents = std::move(done.documents);
          e->doc = std::move(done.current);
          e->tomb.reset();
          ticket = e->ticket = submit(t, *e);
          updates_.inc();
          changed = true;
          break;
        }
      }
    }
    if (out.code != 200 && from == origin::local)
      rejected_.inc(); // the sync's own refusals are counted by reconcile
    trim_cache(); // `e` is not used below: it may go now
    if (changed && from == origin::local)
      local_changed(t);
    if (ticket <= committed_) {
      if (--count == 0)
        inflight_.erase(t.thing);
      auto code = out.code;
      sink(t, out);
      return code;
    }
    auto code = out.code;
    waiting_.push_back(waiting{ticket, t, std::move(out), std::move(sink)});
    return code;
  }

  answer refusal(const rejection& r, const std::optional<std::string>& token, int64_t now) {
    answer out;
    out.code = r.code;
    out.reply = rejected_payload(r, token, now);
    return out;
  }

  uint64_t submit(const shadow_topic& t, const entry& e) {
    write_op op;
    op.thing = t.thing;
    op.name = t.name;
    if (e.doc) {
      op.doc = e.doc->serialize();
      op.version = e.doc->version;
    } else {
      op.version = e.tomb->version;
      op.deleted_at = e.tomb->deleted_at;
    }
    auto bytes = op.doc ? op.doc->size() : 0;
    writer_->wait_for_room(64u << 20); // back-pressure if the disk falls far behind
    return writer_->submit(std::move(op), bytes);
  }

  // --- devices (mm-2 in, mm-3 out) ---

  void on_device_request(const grove::Envelope& msg) {
    // message_manager owns $grove/mm/out/# and sets these; anything else (our own
    // `shadow`, a forged name) is not a request.
    const auto& src = msg.source();
    if (src.rfind("device:", 0) != 0 && src.rfind("function:", 0) != 0 && src != "cloud") {
      refused_.inc();
      return;
    }
    auto subject = std::string_view{msg.topic()}.substr(requests_prefix.size());
    auto t = parse_topic(subject);
    if (!t) {
      ignored_.inc(); // replies, events, bad names: nothing to answer on
      return;
    }
    if (!group_known_ && !cfg_.allow_unknown_things) {
      // Right after a start or reload the group is on its way: hold the request
      // (bounded) rather than answer 404 for a device of the group.
      if (early_.size() < max_early)
        early_.push_back(msg);
      else
        ignored_.inc();
      return;
    }
    auto sink = [this](const shadow_topic& t, const answer& a) { publish_answer(t, a); };
    if (!cfg_.allow_unknown_things && !known_thing(t->thing)) {
      rejected_.inc();
      sink(*t, refusal({404, std::string{grove::shadow::msg::thing_not_found}},
                       client_token_of(msg.payload()), now_seconds()));
      return;
    }
    handle(*t, msg.payload(), std::move(sink));
  }

  // A group device's, or one the sync configuration names (coreThing, shadowDocuments:
  // not devices of the group, yet their shadows are the core's to serve).
  bool known_thing(const std::string& thing) const {
    if (devices_.contains(thing))
      return true;
    for (auto it = synced_.lower_bound(key_of(thing, ""));
         it != synced_.end() && it->second.topic.thing == thing; ++it)
      if (it->second.configured)
        return true;
    return false;
  }

  static std::string verb_topic(const shadow_topic& t) {
    static constexpr std::string_view verbs[] = {"/get", "/update", "/delete"};
    return t.prefix() + std::string{verbs[static_cast<int>(t.op)]};
  }

  void publish_answer(const shadow_topic& t, const answer& a) {
    publish(verb_topic(t) + (a.code == 200 ? "/accepted" : "/rejected"), a.reply);
    publish_events(t, a);
  }

  // update/delta and update/documents, whoever made the change (a device, or a plugin
  // through the bus API): devices learn of it as they would from AWS.
  void publish_events(const shadow_topic& t, const answer& a) {
    if (!a.delta.empty())
      publish(verb_topic(t) + "/delta", a.delta);
    if (!a.documents.empty())
      publish(verb_topic(t) + "/documents", a.documents);
  }

  void publish(std::string subject, std::string payload) {
    mmc::publish(*ctx_, mmc::make_publish(subject, std::move(payload), "shadow", 0,
                                        "application/json"),
                std::chrono::seconds{5}, [this, subject](caf::expected<grove::mm::Routed> r) {
                  if (!r) {
                    publish_failures_.inc();
                    ctx_->log().warn("shadow: publishing on '{}' failed: {}", subject,
                                     grove::describe(r.error()));
                  }
                });
  }

  // --- the group ---

  void load_group() {
    grove::group_client::get(*ctx_, std::chrono::seconds{5},
                             [this](caf::expected<grove::group::Group> g) {
                               if (g) {
                                 set_group(*g);
                               } else if (g.error() == grove::errc::no_route) {
                                 group_arrived(); // an image without a group
                               } else {
                                 ctx_->after(std::chrono::seconds{1},
                                             [this] { load_group(); });
                               }
                             });
  }

  void set_group(const grove::group::Group& g) {
    if (g.version() < group_version_)
      return; // a late reply after a newer event
    group_version_ = g.version();
    devices_.clear();
    for (const auto& d : g.devices())
      devices_.insert(d.thing());
    ctx_->set_status("devices", std::to_string(devices_.size()));
    std::set<std::string> sync_devices;
    for (const auto& d : g.devices())
      if (d.sync_shadow() && valid_thing_name(d.thing()))
        sync_devices.insert(d.thing());
    set_sync_devices(sync_devices);
    group_arrived();
  }

  void group_arrived() {
    if (std::exchange(group_known_, true))
      return;
    auto held = std::move(early_);
    early_.clear();
    for (const auto& m : held)
      on_device_request(m);
  }

  // --- bus API (sh-1..sh-4) ---

  caf::error serve_api() {
    using doc_service = grove::service<Request, Reply>;
    auto serve_verb = [this](std::string_view topic, verb op) {
      return ctx_->serve(topic, [this, op](const grove::Envelope& msg) {
        auto req = doc_service::decode(msg);
        if (!req) {
          ctx_->reply_error(msg, std::move(req.error()));
          return;
        }
        if (!valid_thing_name(req->thing_name())
            || (!req->shadow_name().empty() && !valid_shadow_name(req->shadow_name()))) {
          ctx_->reply_error(msg, grove::make_error(grove::errc::invalid_topic,
                                                   "invalid thing or shadow name"));
          return;
        }
        shadow_topic t{req->thing_name(), req->shadow_name(), op};
        handle(t, req->payload(), [this, msg](const shadow_topic& t, const answer& a) {
          Reply reply;
          reply.set_code(static_cast<uint32_t>(a.code));
          reply.set_payload(a.reply);
          doc_service::reply(*ctx_, msg, std::move(reply));
          publish_events(t, a);
        });
      });
    };
    if (auto err = serve_verb(get_topic, verb::get))
      return err;
    if (auto err = serve_verb(update_topic, verb::update))
      return err;
    if (auto err = serve_verb(delete_topic, verb::del))
      return err;
    using list_service = grove::service<ListRequest, ListReply>;
    return ctx_->serve(list_topic, [this](const grove::Envelope& msg) {
      auto req = list_service::decode(msg);
      if (!req) {
        ctx_->reply_error(msg, std::move(req.error()));
        return;
      }
      lists_.inc();
      if (!valid_thing_name(req->thing_name())) {
        ctx_->reply_error(msg, grove::make_error(grove::errc::invalid_topic,
                                                 "invalid thing name"));
        return;
      }
      // The reader sees committed rows only, so the list waits for the writes before it,
      // as a get's answer does; it never makes the writer commit early (no flush): a
      // read costs no commit and no fsync, and never blocks the actor on the disk.
      after_commit(writer_->submitted(), [this, msg, req = std::move(*req)] {
        list_service::reply(*ctx_, msg, list(req));
      });
    });
  }

  // Runs `f` on the actor once every write through `ticket` is committed (at once if
  // it is), after the answers that waited for the same commit.
  void after_commit(uint64_t ticket, std::function<void()> f) {
    if (ticket <= committed_) {
      f();
      return;
    }
    reads_.push_back(deferred_read{ticket, std::move(f)});
  }

  caf::expected<ListReply> list(const ListRequest& req) {
    auto size = req.page_size() == 0 ? 25u : std::min(req.page_size(), 100u);
    auto stmt = reader_->prepare("SELECT name FROM shadows WHERE thing = ? AND name > ?"
                                 " AND doc IS NOT NULL ORDER BY name LIMIT ?");
    if (!stmt)
      return std::move(stmt.error());
    // The classic shadow's name is empty: `name > ''` leaves it out.
    (*stmt)->bind_all(req.thing_name(), req.next_token(), static_cast<int64_t>(size) + 1);
    ListReply reply;
    caf::error err;
    for (;;) {
      auto row = (*stmt)->step();
      if (!row) {
        err = std::move(row.error());
        break;
      }
      if (!*row)
        break;
      if (static_cast<uint32_t>(reply.results_size()) == size) {
        reply.set_next_token(reply.results(reply.results_size() - 1));
        break;
      }
      reply.add_results(std::string{(*stmt)->column_text(0)});
    }
    (*stmt)->reset();
    if (err)
      return err;
    reply.set_timestamp(now_seconds());
    return reply;
  }

  // --- cloud sync (README "Cloud sync"; mm-6 to mm-10) ---

  // A shadow kept in sync with its cloud twin.
  struct synced {
    shadow_topic topic;          // `op` unused
    bool configured = false;     // from `synchronize` (else from the group's sync_shadow)
    std::optional<json> base;    // the state both sides last agreed on
    uint64_t cloud_version = 0;  // the cloud's version at `base`; 0: unknown
    uint64_t local_version = 0;  // ours at `base`
    bool busy = false;           // a request to the cloud waits for its answer
    verb asked = verb::get;      // ... which
    std::string token;           // ... its clientToken
    std::optional<json> sent;    // what the last update not yet answered asked the cloud
                                 // to take (kept over lost answers: see plan_sync)
    uint64_t sent_local_version = 0;
    std::chrono::steady_clock::time_point sent_at;
    bool dirty = false;          // changed locally since the last push
    bool resync = true;          // the cloud's document is to be read and merged
    bool queued = false;         // waits in sync_queue_
    bool refused = false;        // the local side refused the last merge: merge again
                                 // (not push) on the next change or at retry_at
    std::chrono::seconds refused_backoff{0};
    std::chrono::steady_clock::time_point retry_at; // ... (sync_tick: one retry pending)
  };

  bool periodic() const {
    return cfg_.strategy.type == sync_strategy::periodic;
  }

  sync_direction direction() const {
    return cfg_.synchronize.direction;
  }

  // The configured shadows, their bases read back from the database.
  void init_sync() {
    token_prefix_ = std::string{sync_token_prefix} + std::to_string(std::random_device{}())
                    + ":";
    outbound_ = grove::token_bucket{
      grove::rate_limit{static_cast<double>(cfg_.rate_limits.max_outbound)}};
    const auto& core = cfg_.synchronize.core_thing;
    auto add_thing = [this](const std::string& thing, bool classic,
                            const std::vector<std::string>& named) {
      if (classic)
        add_synced(thing, "", true);
      for (const auto& n : named)
        add_synced(thing, n, true);
    };
    if (!core.thing_name.empty())
      add_thing(core.thing_name, core.classic, core.named_shadows);
    for (const auto& t : cfg_.synchronize.shadow_documents)
      add_thing(t.thing_name, t.classic, t.named_shadows);
  }

  synced& add_synced(const std::string& thing, const std::string& name, bool configured) {
    auto key = key_of(thing, name);
    auto [it, added] = synced_.try_emplace(key);
    auto& s = it->second;
    s.configured = s.configured || configured;
    if (!added)
      return s;
    s.topic = shadow_topic{thing, name, verb::update};
    auto stmt = reader_->prepare(
      "SELECT base, cloud_version, local_version, pending FROM sync"
      " WHERE thing = ? AND name = ?");
    if (!stmt) {
      ctx_->log().error("shadow: sync: {}", grove::describe(stmt.error()));
      return s;
    }
    (*stmt)->bind_all(thing, name);
    if (auto row = (*stmt)->step(); row && *row) {
      if (!(*stmt)->column_is_null(0))
        s.base = parse_object((*stmt)->column_text(0));
      s.cloud_version = static_cast<uint64_t>((*stmt)->column_int64(1));
      s.local_version = static_cast<uint64_t>((*stmt)->column_int64(2));
      if (!(*stmt)->column_is_null(3))
        s.sent = parse_object((*stmt)->column_text(3));
    }
    (*stmt)->reset();
    return s;
  }

  caf::error start_sync() {
    if (auto err = ctx_->subscribe(mmc::system_filter(ctx_->name())))
      return err;
    if (auto err = ctx_->subscribe(mmc::cloud_link_topic))
      return err;
    ctx_->every(std::chrono::seconds{5}, [this] { sync_tick(); });
    if (periodic())
      ctx_->every(cfg_.strategy.delay, [this] {
        for (auto& [key, s] : synced_)
          if (s.dirty || s.resync)
            enqueue(key);
      });
    refresh_cloud_filters();
    return {};
  }

  // The group's devices with sync_shadow: true have their classic shadow synced.
  void set_sync_devices(const std::set<std::string>& things) {
    for (auto it = synced_.begin(); it != synced_.end();) {
      auto& s = it->second;
      if (!s.configured && s.topic.name.empty() && !things.contains(s.topic.thing))
        it = synced_.erase(it);
      else
        ++it;
    }
    std::vector<std::string> added;
    for (const auto& t : things) {
      auto key = key_of(t, "");
      if (!synced_.contains(key))
        added.push_back(std::move(key));
      add_synced(t, "", false);
    }
    if (!ctx_ || !started_sync_)
      return;
    refresh_cloud_filters();
    // A changed set of filters reads every shadow once in force (cloud_filters' callback).
    // One that did not change (the wildcard above 50 things) is in force already: read
    // the new shadows now.
    if (subscribed())
      for (const auto& key : added)
        enqueue(key);
  }

  // One cloud filter per synced thing (AWS allows 50 per connection: beyond, one for
  // every thing, the rest ignored when it comes).
  void refresh_cloud_filters() {
    started_sync_ = true;
    std::set<std::string> things;
    for (const auto& [key, s] : synced_)
      things.insert(s.topic.thing);
    std::set<std::string> wanted;
    if (things.size() > mmc::cloud_max_filters)
      wanted.insert("$aws/things/+/shadow/#");
    else
      for (const auto& t : things)
        wanted.insert("$aws/things/" + t + "/shadow/#");
    if (!cloud_)
      cloud_.emplace(*ctx_, [this](mmc::cloud_filters::state st, const caf::error& err) {
        if (st == mmc::cloud_filters::state::refused)
          ctx_->log().error("shadow: cannot subscribe to the cloud (is shadow in "
                            "message_manager's cloud.system_clients?): {}; retrying",
                            grove::describe(err));
        sync_status();
        if (st != mmc::cloud_filters::state::subscribed)
          return;
        // In force: read every cloud document (and merge) now.
        for (auto& [key, s] : synced_) {
          s.resync = true;
          enqueue(key);
        }
      });
    cloud_->set(std::move(wanted));
    sync_status();
  }

  bool subscribed() const {
    return cloud_ && cloud_->current() == mmc::cloud_filters::state::subscribed;
  }

  // Nothing goes to the cloud unless message_manager said its link is up: a request
  // made while it is down or disabled would only wait in the spool (and pile up there).
  bool link_up() const {
    return cloud_ && cloud_->link_up();
  }

  std::string_view link_name() const {
    if (!cloud_)
      return "down";
    switch (cloud_->link_state()) {
      case mmc::cloud_filters::link::up:
        return "up";
      case mmc::cloud_filters::link::disabled:
        return "disabled";
      default:
        return "down";
    }
  }

  void sync_status() {
    if (synced_.empty()) {
      ctx_->set_status("sync", "off");
      return;
    }
    auto st = cloud_ ? cloud_->current() : mmc::cloud_filters::state::none;
    ctx_->set_status("sync", fmt::format("{} shadows, {}, cloud link {}", synced_.size(),
                                         st == mmc::cloud_filters::state::subscribed
                                           ? "subscribed"
                                         : st == mmc::cloud_filters::state::refused
                                           ? "NOT SUBSCRIBED"
                                           : "subscribing",
                                         link_name()));
  }

  // mm-10: the cloud link came back; what changed in the cloud meanwhile is read again
  // (answers to requests made before are not waited for: they come, or not).
  void on_link(const grove::Envelope& msg) {
    grove::mm::CloudLink ev;
    if (!ev.ParseFromString(msg.payload()) || !cloud_ || !cloud_->on_link(ev))
      return; // not one, or older than mm-7's answer
    sync_status();
    if (!link_up())
      return;
    for (auto& [key, s] : synced_) {
      s.busy = false;
      s.resync = true;
      enqueue(key);
    }
  }

  void sync_tick() {
    auto now = std::chrono::steady_clock::now();
    for (auto& [key, s] : synced_) {
      if (s.busy && link_up() && now - s.sent_at > sync_answer_timeout) {
        s.busy = false;
        s.resync = true;
        enqueue(key);
      } else if (s.refused && !s.busy && !s.resync && now >= s.retry_at) {
        s.resync = true; // the refused merge's back-off is over
        enqueue(key);
      }
    }
    pump();
  }

  void local_changed(const shadow_topic& t) {
    auto it = synced_.find(key_of(t.thing, t.name));
    if (it == synced_.end())
      return;
    it->second.dirty = true;
    if (!periodic())
      enqueue(it->first);
  }

  void enqueue(const std::string& key) {
    auto it = synced_.find(key);
    if (it == synced_.end())
      return;
    if (!std::exchange(it->second.queued, true))
      sync_queue_.push_back(key);
    pump();
  }

  // The rate limit: a token bucket of maxOutboundSyncUpdatesPerSecond (one second's
  // worth of burst). A shadow waits in the queue once, whatever changed meanwhile: what
  // goes out is its state when its turn comes.
  void pump() {
    if (!subscribed() || !link_up())
      return; // subscribing, and the link coming up, resynchronize everything
    while (!sync_queue_.empty() && outbound_.can_take(std::chrono::steady_clock::now())) {
      auto key = std::move(sync_queue_.front());
      sync_queue_.pop_front();
      auto it = synced_.find(key);
      if (it == synced_.end())
        continue;
      it->second.queued = false;
      if (!it->second.busy)
        run(it->second); // a busy one runs again when its answer comes
    }
    if (!sync_queue_.empty() && !pump_scheduled_) {
      pump_scheduled_ = true;
      auto wait = outbound_.wait_for(std::chrono::steady_clock::now());
      ctx_->after(std::max(std::chrono::milliseconds{1},
                           std::chrono::ceil<std::chrono::milliseconds>(wait)),
                  [this] {
                    pump_scheduled_ = false;
                    pump();
                  });
    }
  }

  // The local side of a synced shadow: false when the database cannot be read.
  bool local_side(const shadow_topic& t, std::optional<sync_side>& out) {
    auto* e = lookup(shadow_topic{t.thing, t.name, verb::get});
    if (!e)
      return false;
    out.reset();
    if (e->doc)
      out = side_of(*e->doc);
    return true;
  }

  void run(synced& s) {
    if (s.resync || s.refused || !s.base || s.cloud_version == 0) {
      json req = json::object();
      send_cloud(s, verb::get, req);
      return;
    }
    if (!s.dirty)
      return;
    s.dirty = false;
    if (direction() == sync_direction::cloud_to_device)
      return;
    std::optional<sync_side> local;
    if (!local_side(s.topic, local))
      return retry_later(s);
    if (!local) {
      s.sent.reset();
      send_cloud(s, verb::del, json::object());
      return;
    }
    auto patch = state_diff(*s.base, local->state);
    if (patch.is_null())
      return;
    json req = json::object();
    req["state"] = std::move(patch);
    req["version"] = s.cloud_version;
    s.sent = local->state;
    s.sent_local_version = local->version;
    save_base(s); // the pending state first: after a kill it tells our update from others'
    send_cloud(s, verb::update, req);
  }

  void send_cloud(synced& s, verb op, json req) {
    static constexpr std::string_view verbs[] = {"/get", "/update", "/delete"};
    s.token = token_prefix_ + std::to_string(++token_seq_);
    req["clientToken"] = s.token;
    s.busy = true;
    s.asked = op;
    s.sent_at = std::chrono::steady_clock::now();
    outbound_.spend(std::chrono::steady_clock::now()); // answers to the cloud spend it too
    sync_sent_.inc();
    auto topic = s.topic.prefix() + std::string{verbs[static_cast<int>(op)]};
    auto key = key_of(s.topic.thing, s.topic.name);
    mmc::cloud_publish(*ctx_, topic, req.dump(), std::chrono::seconds{10},
                       [this, key, token = s.token](caf::expected<grove::mm::CloudPublished> r) {
                         if (r)
                           return;
                         ctx_->log().warn("shadow: sync of '{}' not sent: {}", key,
                                          grove::describe(r.error()));
                         auto it = synced_.find(key);
                         if (it != synced_.end() && it->second.busy
                             && it->second.token == token) {
                           it->second.busy = false;
                           retry_later(it->second);
                         }
                       });
  }

  void retry_later(synced& s) {
    sync_failures_.inc();
    s.resync = true;
    ctx_->after(std::chrono::seconds{5},
                [this, key = key_of(s.topic.thing, s.topic.name)] { enqueue(key); });
  }

  // A message from the cloud on mm-9.
  void on_cloud(std::string_view topic, std::string_view payload) {
    auto r = parse_cloud_reply(topic);
    if (!r)
      return;
    auto it = synced_.find(key_of(r->topic.thing, r->topic.name));
    if (it == synced_.end())
      return;
    auto& s = it->second;
    auto doc = parse_object(payload);
    if (!doc) {
      sync_invalid_.inc();
      return;
    }
    std::string token;
    if (auto t = doc->find("clientToken"); t != doc->end() && t->is_string())
      token = t->get<std::string>();
    if (r->kind == "accepted" || r->kind == "rejected") {
      if (s.busy && token == s.token && r->topic.op == s.asked) {
        s.busy = false;
        on_answer(s, r->topic.op, r->kind == "accepted", *doc);
        if (s.resync || (s.dirty && !periodic()))
          enqueue(it->first);
        return;
      }
    }
    if (token.starts_with(sync_token_prefix) || direction() == sync_direction::device_to_cloud)
      return; // our own change's events, a late answer; or cloud changes are not taken
    std::optional<sync_side> cloud;
    if (r->kind == "documents") {
      auto current = doc->find("current");
      if (current != doc->end())
        cloud = cloud_side_of(*current);
      if (!cloud) {
        sync_invalid_.inc();
        return;
      }
      if (cloud->version <= s.cloud_version)
        return; // no newer than what we agreed on
    } else if (!(r->topic.op == verb::del && r->kind == "accepted")) {
      return; // deltas (documents has it all), others' answers
    }
    if (s.busy || periodic()) {
      s.resync = true; // read again once free (periodic: at the next period)
      if (!periodic())
        enqueue(it->first);
      return;
    }
    reconcile(s, cloud);
  }

  void on_answer(synced& s, verb op, bool accepted, const json& doc) {
    auto code = doc.contains("code") && doc["code"].is_number_integer() ? doc["code"].get<int>()
                                                                        : 0;
    switch (op) {
      case verb::get:
        if (accepted) {
          auto cloud = cloud_side_of(doc);
          if (!cloud) {
            sync_invalid_.inc();
            return retry_later(s);
          }
          reconcile(s, cloud);
        } else if (code == 404) {
          reconcile(s, std::nullopt);
        } else {
          retry_later(s);
        }
        return;
      case verb::update:
        if (accepted && doc.contains("version") && doc["version"].is_number_unsigned()) {
          s.cloud_version = doc["version"].get<uint64_t>();
          s.base = std::exchange(s.sent, std::nullopt);
          s.local_version = s.sent_local_version;
          save_base(s);
        } else if (code == 409) {
          sync_conflicts_.inc(); // the cloud changed meanwhile: read it and merge
          s.sent.reset();        // not taken
          s.resync = true;
        } else {
          s.sent.reset();
          ctx_->log().warn("shadow: the cloud refused the sync of '{}': {}",
                           key_of(s.topic.thing, s.topic.name), doc.dump());
          retry_later(s);
        }
        return;
      case verb::del:
        if (accepted || code == 404) {
          s.base.reset();
          s.cloud_version = 0;
          save_base(s);
        } else {
          retry_later(s);
        }
        return;
    }
  }

  // The three-way merge (sync_merge.cpp) and what it asks of both sides.
  void reconcile(synced& s, const std::optional<sync_side>& cloud) {
    std::optional<sync_side> local;
    if (!local_side(s.topic, local))
      return retry_later(s);
    auto plan = plan_sync(s.base, local, cloud, direction(), s.sent);
    // Devices hear a cloud change applied as any other; a refusal of it answers no one
    // (no device asked) and is handled below.
    auto sink = [this](const shadow_topic& t, const answer& a) {
      if (a.code == 200)
        publish_answer(t, a);
    };
    int code = 200;
    if (plan.delete_local) {
      code = handle(shadow_topic{s.topic.thing, s.topic.name, verb::del}, "", sink,
                    origin::cloud);
    } else if (!plan.local_patch.is_null()) {
      json req = json::object();
      req["state"] = plan.local_patch;
      code = handle(shadow_topic{s.topic.thing, s.topic.name, verb::update}, req.dump(),
                    sink, origin::cloud);
    }
    if (code != 200)
      return local_refused(s, code);
    if (plan.delete_local || !plan.local_patch.is_null())
      sync_applied_.inc();
    s.resync = false;
    s.dirty = false;
    s.refused = false;
    s.refused_backoff = std::chrono::seconds{0};
    if (!local_side(s.topic, local))
      return retry_later(s);
    s.sent_local_version = local ? local->version : 0;
    s.cloud_version = cloud ? cloud->version : 0;
    if (plan.delete_cloud) {
      s.sent.reset();
      send_cloud(s, verb::del, json::object());
    } else if (!plan.cloud_patch.is_null()) {
      json req = json::object();
      req["state"] = plan.cloud_patch;
      if (cloud)
        req["version"] = cloud->version; // refused 409 if the cloud moved meanwhile
      s.sent = plan.merged;
      save_base(s);
      send_cloud(s, verb::update, std::move(req));
    } else {
      s.sent.reset();
      s.base = plan.exists ? std::optional<json>{plan.merged} : std::nullopt;
      s.local_version = s.sent_local_version;
      save_base(s);
    }
  }

  // The local shadow refused the merge (413: both sides' additions together are over
  // max_document_bytes; 429: too many requests of the thing in flight). Nothing was
  // agreed: the base stays and the cloud is not sent the merge (taking it as agreed
  // would later push the stale local state back as a local change, undoing the
  // cloud's). Read and merged again at retry_at (sync_tick), less often each time; a
  // local change that makes room (or a cloud one) is merged at once.
  void local_refused(synced& s, int code) {
    sync_refused_.inc();
    s.refused = true;
    s.resync = false; // not at once: at the back-off, or when a side changes again
    s.dirty = false;  // ... taken into this merge
    s.refused_backoff = std::clamp(s.refused_backoff * 2, std::chrono::seconds{5},
                                   std::chrono::seconds{300});
    s.retry_at = std::chrono::steady_clock::now() + s.refused_backoff;
    ctx_->log().warn("shadow: sync of '{}': the local shadow refused the cloud's change "
                     "({}{}); both sides stay as they are, merging again in {} s",
                     key_of(s.topic.thing, s.topic.name), code,
                     code == 413   ? ": the merge is over max_document_bytes"
                     : code == 429 ? ": too many requests of the thing in flight"
                                   : "",
                     s.refused_backoff.count());
  }

  void save_base(const synced& s) {
    write_op op;
    op.sync = true;
    op.thing = s.topic.thing;
    op.name = s.topic.name;
    if (s.base)
      op.doc = s.base->dump();
    if (s.sent)
      op.pending = s.sent->dump();
    op.version = s.local_version;
    op.cloud_version = s.cloud_version;
    writer_->submit(std::move(op));
  }

  // Status line `local_limits`: the limits and how many requests they refused so far
  // (at start, then a second after a refusal).
  void limits_status() {
    auto thing = throttled_thing_.value();
    auto total = throttled_total_.value();
    if (thing + total == throttled_shown_)
      return;
    throttled_shown_ = thing + total;
    ctx_->set_status("local_limits",
                     fmt::format("{}/s per thing, {}/s in all; refused {} (thing), {} (total)",
                                 cfg_.rate_limits.max_local_per_thing,
                                 cfg_.rate_limits.max_total_local, thing, total));
  }

  caf::error declare_metrics() {
    auto c = [this](const char* name, const char* help, grove::counter& out) -> bool {
      auto x = ctx_->counter(name, help);
      if (x)
        out = *x;
      return static_cast<bool>(x);
    };
    auto cached = ctx_->gauge("cache.entries", "Shadow documents held in memory.");
    if (!c("updates", "Updates accepted (durable before answered).", updates_)
        || !c("gets", "Gets answered with a document.", gets_)
        || !c("deletes", "Shadows deleted.", deletes_)
        || !c("rejected", "Requests answered on .../rejected.", rejected_)
        || !c("refused_sources", "Messages on mm-2 from a source message_manager never sets.",
              refused_)
        || !c("ignored", "Messages on mm-2 that are no shadow request (replies, bad names).",
              ignored_)
        || !c("publish_failures", "Answers message_manager did not take.", publish_failures_)
        || !c("lists", "ListNamedShadowsForThing requests (sh-4).", lists_)
        || !c("commits", "Group commits made durable (one transaction and one fsync each).",
              commits_)
        || !c("write_failures", "Group commits that failed and were retried.",
              write_failures_)
        || !c("throttled.thing",
              "Requests refused 429: their thing was over maxLocalRequestsPerSecondPerThing.",
              throttled_thing_)
        || !c("throttled.total",
              "Requests refused 429: all things together were over maxTotalLocalRequestsRate.",
              throttled_total_)
        || !c("sync.sent", "Requests sent to the cloud shadow service (get, update, delete).",
              sync_sent_)
        || !c("sync.applied", "Cloud changes applied to local shadows.", sync_applied_)
        || !c("sync.conflicts", "Cloud updates refused 409 (then read and merged).",
              sync_conflicts_)
        || !c("sync.failures", "Syncs that failed and were retried.", sync_failures_)
        || !c("sync.refused_locally",
              "Cloud changes the local shadow refused (413: the merge over "
              "max_document_bytes; 429: too many requests in flight for the thing); "
              "both sides kept, merged again with back-off.",
              sync_refused_)
        || !c("sync.invalid", "Cloud messages that were not valid shadow documents.",
              sync_invalid_)
        || !cached)
      return grove::make_error(grove::errc::init_failed, "shadow: cannot declare metrics");
    cached_ = *cached;
    return {};
  }

  grove::context* ctx_ = nullptr;
  shadow_config cfg_;
  std::unique_ptr<grove::store> db_;     // the writer's
  std::unique_ptr<grove::store> reader_; // the actor's, for cache misses and lists
  std::unique_ptr<grove::group_writer<write_op>> writer_;
  uint64_t committed_ = 0;
  bool failing_reported_ = false;
  std::deque<waiting> waiting_;
  // Reads (lists) waiting for the commit of the writes before them, by ticket.
  struct deferred_read {
    uint64_t ticket;
    std::function<void()> run;
  };
  std::deque<deferred_read> reads_;
  std::unordered_map<std::string, int64_t> inflight_;
  std::unordered_map<std::string, entry> cache_;
  std::list<std::string> lru_;
  std::unordered_set<std::string> devices_;
  static constexpr size_t max_early = 10000;
  bool group_known_ = false;
  std::vector<grove::Envelope> early_; // device requests that came before the group
  uint64_t group_version_ = 0;
  grove::counter updates_, gets_, deletes_, lists_, rejected_, refused_, ignored_,
    publish_failures_, commits_, write_failures_, throttled_thing_, throttled_total_;
  // Local request limits (rateLimits), made in init.
  std::optional<local_limits> limits_;
  uint64_t throttled_shown_ = ~uint64_t{0};
  bool limits_status_due_ = false;
  grove::gauge cached_;
  // cloud sync
  std::map<std::string, synced> synced_; // by key_of(thing, name)
  std::deque<std::string> sync_queue_;
  grove::token_bucket outbound_; // maxOutboundSyncUpdatesPerSecond, one second's worth
  bool pump_scheduled_ = false;
  bool started_sync_ = false;
  std::optional<mmc::cloud_filters> cloud_; // made with the sync (it needs the context)
  std::string token_prefix_;
  uint64_t token_seq_ = 0;
  grove::counter sync_sent_, sync_applied_, sync_conflicts_, sync_failures_, sync_invalid_,
    sync_refused_;
};

} // namespace

GROVE_TYPED_PLUGIN(shadow_plugin, "shadow", "1.0.0")
