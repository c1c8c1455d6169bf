// shadow: the local Device Shadow service (plugins/shadow/README.md). Devices and
// functions speak AWS IoT's shadow protocol through message_manager (requests on mm-2,
// answers through mm-3 as source `shadow`); other plugins use the bus API (sh-1..sh-4).
// Documents live in SQLite (grove::store, WAL): an update is answered only once its
// group commit is durable, and only a bounded cache of documents stays in memory.

#include <chrono>
#include <deque>
#include <list>
#include <unordered_map>
#include <unordered_set>

#include <spdlog/spdlog.h>

#include "config.hpp"
#include "document.hpp"
#include "grove/config_map.hpp"
#include "grove/kernel/group_client.hpp"
#include "grove/message_manager/client.hpp"
#include "grove/shadow/client.hpp"
#include "grove/store.hpp"

namespace {

using namespace grove::shadow;

constexpr std::string_view group_current = "$grove/group/current";
constexpr std::string_view requests_filter = "$grove/mm/out/shadow/#";
constexpr std::string_view requests_prefix = "$grove/mm/out/shadow/";

// One row change for the writer: a document, a tombstone (no document), or, with an
// empty thing, the purge of tombstones older than `deleted_at`.
struct write_op {
  std::string thing;
  std::string name;
  std::optional<std::string> doc;
  uint64_t version = 0;
  int64_t deleted_at = 0;
};

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
                        {}}};
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
    writer_ = std::make_unique<grove::group_writer<write_op>>(
      *db_, grove::group_options{}, [](grove::store& db, std::vector<write_op>& ops) {
        return write(db, ops);
      },
      [this](uint64_t committed, const caf::error& err) { on_durable(committed, err); });
    purge_tombstones();
    if (auto err = serve_api())
      return err;
    return {};
  }

  caf::error start() override {
    if (auto err = ctx_->subscribe(group_current))
      return err;
    if (auto err = ctx_->subscribe(requests_filter))
      return err;
    load_group();
    ctx_->every(std::chrono::hours{1}, [this] { purge_tombstones(); });
    return {};
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
    if (msg.topic() == group_current) {
      if (msg.source() != grove::group_client::source)
        return;
      grove::group::Group g;
      if (g.ParseFromString(msg.payload()))
        set_group(g);
      return;
    }
    if (msg.topic().rfind(requests_prefix, 0) == 0)
      on_device_request(msg);
  }

private:
  // --- storage ---

  static caf::error write(grove::store& db, std::vector<write_op>& ops) {
    for (const auto& op : ops) {
      caf::error err;
      if (op.thing.empty())
        err = db.run("DELETE FROM shadows WHERE doc IS NULL AND deleted_at < ?",
                     op.deleted_at);
      else if (op.doc)
        err = db.run("INSERT OR REPLACE INTO shadows (thing, name, doc, version, deleted_at)"
                     " VALUES (?, ?, ?, ?, NULL)",
                     op.thing, op.name, *op.doc, op.version);
      else
        err = db.run("INSERT OR REPLACE INTO shadows (thing, name, doc, version, deleted_at)"
                     " VALUES (?, ?, NULL, ?, ?)",
                     op.thing, op.name, op.version, op.deleted_at);
      if (err)
        return err;
    }
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
    entry e;
    auto stmt = reader_->prepare(
      "SELECT doc, version, deleted_at FROM shadows WHERE thing = ? AND name = ?");
    if (!stmt) {
      ctx_->log().error("shadow: {}", grove::describe(stmt.error()));
      return nullptr;
    }
    (*stmt)->bind_all(t.thing, t.name);
    auto row = (*stmt)->step();
    if (row && *row) {
      if ((*stmt)->column_is_null(0)) {
        e.tomb = tombstone{static_cast<uint64_t>((*stmt)->column_int64(1)),
                           (*stmt)->column_int64(2)};
      } else {
        e.doc = document::deserialize((*stmt)->column_text(0));
        if (!e.doc)
          ctx_->log().error("shadow: stored document of '{}' does not parse", key);
      }
    }
    (*stmt)->reset();
    if (!row) {
      ctx_->log().error("shadow: {}", grove::describe(row.error()));
      return nullptr;
    }
    lru_.push_front(key);
    e.lru = lru_.begin();
    auto [it, added] = cache_.emplace(std::move(key), std::move(e));
    return &it->second;
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

  // Runs one request and queues its answer behind every write before it.
  void handle(const shadow_topic& t, std::string_view payload, answer_sink sink) {
    auto now = now_seconds();
    auto& count = inflight_[t.thing];
    if (count >= cfg_.max_inflight_per_thing) {
      // Answered at once: it changes nothing, and waiting would only add to the load.
      rejected_.inc();
      sink(t, refusal({429, std::string{msg::too_many_requests}},
                      client_token_of(payload), now));
      return;
    }
    ++count;
    answer out;
    uint64_t ticket = writer_->submitted();
    auto* e = lookup(t);
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
          if (e->doc) {
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
          break;
        }
      }
    }
    if (out.code != 200)
      rejected_.inc();
    trim_cache(); // `e` is not used below: it may go now
    if (ticket <= committed_) {
      if (--count == 0)
        inflight_.erase(t.thing);
      sink(t, out);
      return;
    }
    waiting_.push_back(waiting{ticket, t, std::move(out), std::move(sink)});
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
    if (!cfg_.allow_unknown_things && !devices_.contains(t->thing)) {
      rejected_.inc();
      sink(*t, refusal({404, std::string{grove::shadow::msg::thing_not_found}},
                       client_token_of(msg.payload()), now_seconds()));
      return;
    }
    handle(*t, msg.payload(), std::move(sink));
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
    namespace mm = grove::message_manager;
    mm::publish(*ctx_, mm::make_publish(subject, std::move(payload), "shadow", 0,
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
    return list_service::serve(*ctx_, list_topic,
                               [this](const ListRequest& req, const grove::Envelope&) {
                                 return list(req);
                               });
  }

  caf::expected<ListReply> list(const ListRequest& req) {
    if (!valid_thing_name(req.thing_name()))
      return grove::make_error(grove::errc::invalid_topic, "invalid thing name");
    // The reader sees committed rows only: commit what is queued first.
    if (auto err = writer_->flush())
      return err;
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
        || !c("write_failures", "Group commits that failed and were retried.",
              write_failures_)
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
  std::unordered_map<std::string, int64_t> inflight_;
  std::unordered_map<std::string, entry> cache_;
  std::list<std::string> lru_;
  std::unordered_set<std::string> devices_;
  static constexpr size_t max_early = 10000;
  bool group_known_ = false;
  std::vector<grove::Envelope> early_; // device requests that came before the group
  uint64_t group_version_ = 0;
  grove::counter updates_, gets_, deletes_, rejected_, refused_, ignored_, publish_failures_,
    write_failures_;
  grove::gauge cached_;
};

} // namespace

GROVE_TYPED_PLUGIN(shadow_plugin, "shadow", "1.0.0")
