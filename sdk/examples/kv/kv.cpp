// kv: the SDK's example service plugin. Serves typed get/put requests ($grove/kv/get,
// $grove/kv/put) from a grove::store (SQLite, WAL: an acknowledged put survives kill -9)
// and counts what it does. Its typed client is include/grove/kv/client.hpp.

#include "grove/config_map.hpp"
#include "grove/kv/client.hpp"
#include "grove/store.hpp"

namespace {

using namespace grove::kv;

struct kv_config {
  std::filesystem::path file;
  int64_t max_value_bytes = 0;

  static grove::config_map<kv_config> map() {
    return grove::config_map<kv_config>{}
      .key("file", &kv_config::file, "kv.db",
           "database file; a relative path is under the plugin's state directory")
      .key("max_value_bytes", &kv_config::max_value_bytes, 65536,
           grove::range{1, 16777216}, "largest value a put may store");
  }
};

class kv : public grove::typed_plugin<kv_config> {
public:
  caf::error init(grove::context& ctx, const kv_config& cfg) override {
    max_value_ = cfg.max_value_bytes;
    grove::store_options opts;
    opts.application_id = 0x47726b76; // "Grkv"
    opts.kind = "kv";
    opts.migrations = {{1, "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
                           " version INTEGER NOT NULL)"}};
    auto db = grove::store::open(cfg.file, std::move(opts));
    if (!db)
      return std::move(db.error());
    db_ = std::move(*db);
    auto gets = ctx.counter("gets", "Get requests answered.");
    auto puts = ctx.counter("puts", "Puts stored.");
    auto refused = ctx.counter("refused", "Puts refused (size, version conflict).");
    if (!gets || !puts || !refused)
      return grove::make_error(grove::errc::init_failed, "kv: cannot declare counters");
    gets_ = *gets, puts_ = *puts, refused_ = *refused;
    using get_service = grove::service<GetRequest, GetReply>;
    using put_service = grove::service<PutRequest, PutReply>;
    if (auto err = get_service::serve(ctx, get_topic,
                                      [this](auto& req, auto&) { return get(req); }))
      return err;
    return put_service::serve(ctx, put_topic, [this](auto& req, auto&) { return put(req); });
  }

  void on_message(const grove::Envelope&) override {
    // Subscribes to nothing: requests go to the services above.
  }

private:
  caf::expected<GetReply> get(const GetRequest& req) {
    auto reply = lookup(req.key());
    if (reply)
      gets_.inc();
    return reply;
  }

  caf::expected<GetReply> lookup(const std::string& key) {
    auto stmt = db_->prepare("SELECT value, version FROM kv WHERE key = ?");
    if (!stmt)
      return std::move(stmt.error());
    (*stmt)->bind_all(key);
    GetReply reply;
    auto row = (*stmt)->step();
    if (row && *row) {
      reply.set_found(true);
      reply.set_value(std::string{(*stmt)->column_blob(0)});
      reply.set_version(static_cast<uint64_t>((*stmt)->column_int64(1)));
    }
    (*stmt)->reset();
    if (!row)
      return std::move(row.error());
    return reply;
  }

  caf::expected<PutReply> put(const PutRequest& req) {
    if (req.key().empty() || req.value().size() > static_cast<size_t>(max_value_)) {
      refused_.inc();
      return grove::make_error(grove::errc::invalid_config,
                               req.key().empty() ? "empty key"
                                                 : "value over max_value_bytes");
    }
    auto current = lookup(req.key());
    if (!current)
      return std::move(current.error());
    if (req.if_version() != 0 && req.if_version() != current->version()) {
      refused_.inc();
      return grove::make_error(grove::errc::invalid_state,
                               "version conflict: '" + req.key() + "' is at version "
                                 + std::to_string(current->version()));
    }
    auto version = current->version() + 1;
    if (auto err = db_->run("INSERT OR REPLACE INTO kv (key, value, version) VALUES (?, ?, ?)",
                            req.key(), grove::blob{req.value()}, version))
      return err; // not stored: the caller sees why, nothing is acknowledged
    puts_.inc();
    PutReply reply;
    reply.set_version(version);
    return reply;
  }

  std::unique_ptr<grove::store> db_;
  int64_t max_value_ = 0;
  grove::counter gets_, puts_, refused_;
};

} // namespace

GROVE_TYPED_PLUGIN(kv, "kv", "1.0.0")
