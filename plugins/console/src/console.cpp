// The console plugin (README.md): a local web console for operators, served over HTTPS by
// cpp-httplib from groved's process. It only does what grovectl could: the kernel's status
// and plugin control through the kernel control service, the bus's messages, publishes
// through message_manager, shadows through the shadow plugin's service.
//
// The server runs on its own threads, never on CAF's workers. A bus call is posted to the
// plugin's slot (calls are only allowed there) and the server thread waits for its answer,
// bounded, and gives up at once when the plugin stops.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "assets.hpp"
#include "auth.hpp"
#include "client_cert.hpp"
#include "config.hpp"
#include "grove/control.pb.h"
#include "grove/deployment/client.hpp"
#include "grove/errors.hpp"
#include "grove/function_runtime/client.hpp"
#include "grove/kernel/control_client.hpp"
#include "grove/kernel/group_client.hpp"
#include "grove/kernel/status_json.hpp"
#include "grove/message_manager/client.hpp"
#include "grove/plugin.hpp"
#include "grove/shadow/client.hpp"
#include "grove/topic.hpp"

namespace grove::console {

namespace {

using json = nlohmann::ordered_json;
using namespace std::chrono_literals;

constexpr auto call_timeout = 10s;
constexpr const char* session_cookie = "grove_console";
constexpr size_t shown_payload_bytes = 16384;
constexpr size_t stream_queue_cap = 1000;
constexpr size_t log_tail_bytes = 65536;  // a function log's tail shown at first
constexpr size_t log_chunk_bytes = 65536; // most of a log sent in one live event

json to_json(const group::Group& g) {
  json devices = json::array();
  for (const auto& d : g.devices())
    devices.push_back(d.thing());
  json functions = json::array();
  for (const auto& f : g.functions())
    functions.push_back(f.name());
  json subs = json::array();
  for (const auto& s : g.subscriptions())
    subs.push_back({{"id", s.id()}, {"source", s.source()}, {"subject", s.subject()},
                    {"target", s.target()}});
  return {{"name", g.name()}, {"version", g.version()}, {"devices", std::move(devices)},
          {"functions", std::move(functions)}, {"subscriptions", std::move(subs)}};
}

/// The answer of a bus call, handed from the slot to the waiting server thread.
template <class T>
struct waiter {
  std::mutex mtx;
  std::condition_variable cv;
  std::optional<caf::expected<T>> result;

  void set(caf::expected<T> r) {
    {
      std::lock_guard lock{mtx};
      result = std::move(r);
    }
    cv.notify_all();
  }
};

/// One open message stream (an SSE client watching a filter).
struct stream {
  std::string filter;
  std::mutex mtx;
  std::condition_variable cv;
  std::deque<std::string> events; // formatted SSE events
  uint64_t lost = 0;              // events dropped because the browser fell behind
};

class console_plugin : public grove::typed_plugin<console_config> {
public:
  caf::error init(grove::context& ctx, const console_config& cfg) override {
    ctx_ = &ctx;
    auto bad = [](std::string what) {
      return grove::make_error(grove::errc::invalid_config, std::move(what));
    };
    if (!sodium_ready())
      return grove::make_error(grove::errc::system_error, "libsodium cannot initialize");
    for (auto [key, file] : {std::pair{"cert_file", &cfg.cert_file},
                             std::pair{"key_file", &cfg.key_file}}) {
      std::error_code ec;
      if (!std::filesystem::is_regular_file(*file, ec))
        return bad(std::string{key} + ": '" + file->string() + "': no such file");
    }
    std::vector<certificate_rule> rules;
    for (const auto& o : cfg.operators) {
      if (!o.password_hash.empty())
        operators_[o.name] = o.password_hash;
      rules.push_back({o.name, o.certificate_cn, o.certificate_ca_file.string()});
    }
    if (std::string error; !certificates_.load(std::move(rules), cfg.client_ca_file.string(),
                                               error))
      return bad(error);
    session_ttl_ = std::chrono::seconds{cfg.session_seconds};
    limiter_ = std::make_unique<login_limiter>(cfg.login_max_failures,
                                               std::chrono::seconds{cfg.login_window_seconds});
    max_streams_ = static_cast<int64_t>(cfg.max_streams);
    status_interval_ = std::chrono::milliseconds{cfg.status_interval_ms};
    if (auto c = ctx.counter("console_requests", "console HTTP requests answered"))
      requests_ = *c;
    if (auto c = ctx.counter("console_actions", "state-changing console actions performed"))
      actions_ = *c;
    if (auto c = ctx.counter("console_login_failures", "refused console logins"))
      login_failures_ = *c;
    if (auto c = ctx.counter("console_forbidden",
                             "console requests refused: no session (401) or no CSRF token (403)"))
      forbidden_ = *c;
    // The context is made here rather than by httplib's file constructor: a client
    // certificate is asked for, never required (httplib's would require one).
    auto tls = std::make_unique<httplib::SSLServer>([this, &cfg](SSL_CTX& ctx) {
      SSL_CTX_set_options(&ctx, SSL_OP_NO_COMPRESSION
                                  | SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION);
      SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
      return SSL_CTX_use_certificate_chain_file(&ctx, cfg.cert_file.c_str()) == 1
             && SSL_CTX_use_PrivateKey_file(&ctx, cfg.key_file.c_str(), SSL_FILETYPE_PEM) == 1
             && SSL_CTX_check_private_key(&ctx) == 1 && certificates_.setup(ctx);
    });
    if (!tls->is_valid())
      return bad("cert_file/key_file: '" + cfg.cert_file.string() + "' and '"
                 + cfg.key_file.string() + "' are not a PEM certificate and its private key"
                 + (certificates_.enabled() ? " (or a client CA file does not load)" : ""));
    server_ = std::move(tls);
    server_->set_tcp_nodelay(true);
    auto threads = static_cast<size_t>(cfg.threads);
    server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server_->set_payload_max_length(1 << 20);
    routes();
    if (!server_->bind_to_port(cfg.bind, cfg.port))
      return grove::make_error(grove::errc::system_error,
                               "cannot listen on " + cfg.bind + ":" + std::to_string(cfg.port));
    ctx.set_status("console", "https://" + cfg.bind + ":" + std::to_string(cfg.port));
    return {};
  }

  caf::error start() override {
    thread_ = std::thread([srv = server_.get()] { srv->listen_after_bind(); });
    ctx_->log().info("console: listening on https://{}:{}", config().bind, config().port);
    return {};
  }

  void stop() override {
    stopping_ = true;
    {
      std::lock_guard lock{streams_mtx_};
      for (auto& s : streams_)
        s->cv.notify_all();
    }
    if (server_)
      server_->stop();
    if (thread_.joinable())
      thread_.join();
    server_.reset();
  }

  // A hot reload keeps the operators logged in: the sessions go to the next instance
  // in memory (the kernel hands the bytes over; they are never written to disk).
  caf::expected<std::string> snapshot() override {
    return sessions_.dump(clock::now());
  }

  caf::error restore(std::string_view bytes) override {
    if (!sessions_.load(bytes, clock::now()))
      ctx_->log().warn("console: the previous instance's sessions do not parse; operators "
                       "log in again");
    return {};
  }

  void on_message(const grove::Envelope& msg) override {
    std::string event;
    std::lock_guard lock{streams_mtx_};
    for (auto& s : streams_) {
      if (!grove::topic_matches(s->filter, msg.topic()))
        continue;
      if (event.empty()) {
        json e = {{"topic", msg.topic()},
                  {"source", msg.source()},
                  {"content_type", msg.content_type()},
                  {"qos", msg.qos()},
                  {"timestamp_ns", msg.timestamp_ns()},
                  {"payload", describe_payload(msg.payload(), msg.content_type(),
                                               shown_payload_bytes)}};
        event = "event: message\ndata: " + e.dump() + "\n\n";
      }
      std::lock_guard slock{s->mtx};
      if (s->events.size() >= stream_queue_cap) {
        ++s->lost;
        continue;
      }
      s->events.push_back(event);
      s->cv.notify_one();
    }
  }

private:
  // --- requests --------------------------------------------------------------------------

  using handler = std::function<void(const httplib::Request&, httplib::Response&, const session&)>;

  static void send_json(httplib::Response& res, int status, const json& body) {
    res.status = status;
    // Replaced, not thrown: a function's log or reply may hold any bytes.
    res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace),
                    "application/json");
  }

  static void send_error(httplib::Response& res, int status, const std::string& message) {
    send_json(res, status, json{{"error", message}});
  }

  static void send_error(httplib::Response& res, const caf::error& err) {
    auto code = static_cast<grove::errc>(err.code());
    int status = 502;
    if (err.category() == caf::atom("grove")) {
      switch (code) {
        case grove::errc::not_authorized: status = 403; break;
        case grove::errc::no_route: status = 404; break;
        case grove::errc::timeout: status = 504; break;
        case grove::errc::invalid_config:
        case grove::errc::invalid_topic:
        case grove::errc::malformed: status = 400; break;
        default: break;
      }
    }
    send_json(res, status, json{{"error", grove::describe(err)}});
  }

  /// The session of the request's cookie, or nullopt.
  std::optional<session> session_of(const httplib::Request& req) {
    return sessions_.find(cookie_value(req.get_header_value("Cookie"), session_cookie),
                          clock::now());
  }

  /// Starts a session for `name`: the cookie on `res`; the session itself.
  session start_session(const std::string& name, httplib::Response& res) {
    auto now = clock::now();
    auto token = sessions_.create(name, session_ttl_, now);
    res.set_header("Set-Cookie", std::string{session_cookie} + "=" + token + "; Path=/; Max-Age="
                                   + std::to_string(session_ttl_.count())
                                   + "; HttpOnly; Secure; SameSite=Strict");
    auto s = sessions_.find(token, now);
    return s ? *s : session{name, {}, now};
  }

  /// The cookie's session, else one started for the operator whose client certificate
  /// the TLS connection carries (a login without a password), else nullopt.
  std::optional<session> session_or_certificate(const httplib::Request& req,
                                                httplib::Response& res) {
    if (auto s = session_of(req))
      return s;
    auto name = certificates_.match(req.ssl);
    if (!name)
      return std::nullopt;
    ctx_->log().info("console: operator '{}' logged in with a client certificate from {}",
                     *name, req.remote_addr);
    return start_session(*name, res);
  }

  /// Wraps an API route: a session required (401), and for a state-changing method the
  /// session's CSRF token in X-CSRF-Token and a JSON body (403 / 415).
  httplib::Server::Handler guarded(handler h) {
    return [this, h = std::move(h)](const httplib::Request& req, httplib::Response& res) {
      security_headers(res);
      // A certificate starts a session on a read; a change needs the session's CSRF
      // token, which only a page of that session knows.
      auto s = req.method == "GET" ? session_or_certificate(req, res) : session_of(req);
      if (!s) {
        forbidden_.inc();
        return send_error(res, 401, "log in first");
      }
      if (req.method != "GET") {
        if (!same_token(req.get_header_value("X-CSRF-Token"), s->csrf)) {
          forbidden_.inc();
          ctx_->log().warn("console: {} {} by '{}' refused: no valid CSRF token", req.method,
                           req.path, s->name);
          return send_error(res, 403, "missing or wrong CSRF token (X-CSRF-Token)");
        }
      }
      try {
        h(req, res, *s);
      } catch (const std::exception& e) {
        send_error(res, 500, std::string{"internal error: "} + e.what());
      }
    };
  }

  static void security_headers(httplib::Response& res) {
    res.set_header("Content-Security-Policy",
                   "default-src 'self'; frame-ancestors 'none'; form-action 'self'");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("X-Frame-Options", "DENY");
    res.set_header("Referrer-Policy", "no-referrer");
    res.set_header("Cache-Control", "no-store");
  }

  /// The JSON object body of a POST, or nullopt with the 400/415 answer sent.
  static std::optional<json> body_of(const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("Content-Type").rfind("application/json", 0) != 0) {
      send_error(res, 415, "the body must be application/json");
      return std::nullopt;
    }
    std::string error;
    auto j = parse_object(req.body, error);
    if (!j) {
      send_error(res, 400, error);
      return std::nullopt;
    }
    return json::parse(j->dump()); // ordered
  }

  /// Runs `call(ctx, done)` on the slot and waits for `done`, bounded.
  template <class T, class Call>
  caf::expected<T> ask(Call call) {
    auto w = std::make_shared<waiter<T>>();
    ctx_->post([this, w, call = std::move(call)]() mutable {
      call(*ctx_, [w](caf::expected<T> r) { w->set(std::move(r)); });
    });
    std::unique_lock lock{w->mtx};
    auto deadline = clock::now() + call_timeout + 2s;
    while (!w->result) {
      if (stopping_)
        return grove::make_error(grove::errc::plugin_failed, "the console is stopping");
      if (clock::now() >= deadline)
        return grove::make_error(grove::errc::timeout, "no answer from groved in time");
      w->cv.wait_for(lock, 100ms);
    }
    return std::move(*w->result);
  }

  caf::expected<control::Status> status() {
    return ask<control::Status>([](grove::context& ctx, auto done) {
      grove::control_client::status(ctx, call_timeout, std::move(done));
    });
  }

  void routes() {
    auto& srv = *server_;
    // The pages: public files without data; what they show comes from /api/, which needs
    // a session. The app's shell redirects to the login page without one.
    srv.Get("/", [this](const httplib::Request& req, httplib::Response& res) {
      security_headers(res);
      if (!session_or_certificate(req, res)) {
        res.status = 303;
        res.set_header("Location", "/login.html");
        return;
      }
      serve_asset("/index.html", res);
    });
    srv.Get(R"(/([a-z_]+\.(js|css|html|svg)))",
            [this](const httplib::Request& req, httplib::Response& res) {
              security_headers(res);
              if (req.path == "/index.html" && !session_or_certificate(req, res)) {
                res.status = 303;
                res.set_header("Location", "/login.html");
                return;
              }
              serve_asset(req.path, res);
            });
    srv.Post("/api/login", [this](const httplib::Request& req, httplib::Response& res) {
      security_headers(res);
      login(req, res);
    });
    // The login page's "log in with my certificate": a new session for the certificate's
    // operator even when a cookie names another (a JSON body: no cross-site form).
    srv.Post("/api/login/certificate", [this](const httplib::Request& req,
                                              httplib::Response& res) {
      security_headers(res);
      if (!body_of(req, res))
        return;
      auto name = certificates_.match(req.ssl);
      if (!name) {
        login_failures_.inc();
        ctx_->log().warn("console: certificate login from {} refused: no client certificate "
                         "of an operator",
                         req.remote_addr);
        return send_error(res, 401, "no valid client certificate of an operator");
      }
      ctx_->log().info("console: operator '{}' logged in with a client certificate from {}",
                       *name, req.remote_addr);
      auto s = start_session(*name, res);
      send_json(res, 200, json{{"name", s.name}, {"csrf", s.csrf}});
    });
    srv.Get("/api/session", guarded([this](const auto&, auto& res, const session& s) {
              send_json(res, 200, json{{"name", s.name}, {"csrf", s.csrf}});
            }));
    srv.Post("/api/logout", guarded([this](const auto& req, auto& res, const session& s) {
               sessions_.erase(cookie_value(req.get_header_value("Cookie"), session_cookie));
               ctx_->log().info("console: operator '{}' logged out", s.name);
               res.set_header("Set-Cookie", std::string{session_cookie}
                                              + "=; Path=/; Max-Age=0; HttpOnly; Secure; "
                                                "SameSite=Strict");
               send_json(res, 200, json{{"ok", true}});
             }));
    srv.Get("/api/status", guarded([this](const auto&, auto& res, const session&) {
              auto s = status();
              if (!s)
                return send_error(res, s.error());
              send_json(res, 200, status_json::status(*s));
            }));
    srv.Get("/api/group", guarded([this](const auto&, auto& res, const session&) {
              auto g = ask<group::Group>([](grove::context& ctx, auto done) {
                grove::group_client::get(ctx, call_timeout, std::move(done));
              });
              if (!g)
                return send_error(res, g.error());
              send_json(res, 200, to_json(*g));
            }));
    srv.Post("/api/plugins/reload", guarded([this](const auto& req, auto& res, const session& s) {
               plugin_action(req, res, s, "reload");
             }));
    srv.Post("/api/plugins/unload", guarded([this](const auto& req, auto& res, const session& s) {
               plugin_action(req, res, s, "unload");
             }));
    srv.Post("/api/plugins/load", guarded([this](const auto& req, auto& res, const session& s) {
               plugin_action(req, res, s, "load");
             }));
    srv.Post("/api/plugins/configure",
             guarded([this](const auto& req, auto& res, const session& s) {
               plugin_action(req, res, s, "configure");
             }));
    srv.Post("/api/publish", guarded([this](const auto& req, auto& res, const session& s) {
               publish(req, res, s);
             }));
    srv.Get("/api/shadow", guarded([this](const auto& req, auto& res, const session&) {
              shadow_call(req, res, nullptr, "get");
            }));
    srv.Post("/api/shadow", guarded([this](const auto& req, auto& res, const session& s) {
               shadow_call(req, res, &s, "update");
             }));
    srv.Get("/api/functions", guarded([this](const auto&, auto& res, const session&) {
              functions(res);
            }));
    srv.Post("/api/functions/invoke",
             guarded([this](const auto& req, auto& res, const session& s) {
               invoke(req, res, s);
             }));
    srv.Get("/api/functions/log", guarded([this](const auto& req, auto& res, const session&) {
              log_tail(req, res);
            }));
    srv.Get("/api/functions/log/follow",
            guarded([this](const auto& req, auto& res, const session& s) {
              log_stream(req, res, s);
            }));
    srv.Get("/api/deployments", guarded([this](const auto&, auto& res, const session&) {
              deployments(res);
            }));
    srv.Get("/api/deployments/detail",
            guarded([this](const auto& req, auto& res, const session&) {
              deployment_detail(req, res);
            }));
    srv.Get("/api/events", guarded([this](const auto& req, auto& res, const session& s) {
              status_stream(req, res, s);
            }));
    srv.Get("/api/messages", guarded([this](const auto& req, auto& res, const session& s) {
              message_stream(req, res, s);
            }));
    srv.set_logger([this](const httplib::Request&, const httplib::Response&) { requests_.inc(); });
  }

  static void serve_asset(const std::string& path, httplib::Response& res) {
    auto a = find_asset(path);
    if (!a) {
      res.status = 404;
      res.set_content("not found", "text/plain");
      return;
    }
    res.set_content(a->body.data(), a->body.size(), std::string{a->content_type}.c_str());
  }

  void login(const httplib::Request& req, httplib::Response& res) {
    auto body = body_of(req, res);
    if (!body)
      return;
    auto name = string_field(*body, "name");
    auto password = string_field(*body, "password");
    if (!name || !password || name->empty())
      return send_error(res, 400, "name and password (strings) are required");
    auto now = clock::now();
    auto addr_key = "addr:" + req.remote_addr;
    auto name_key = "name:" + *name;
    auto wait = std::max(limiter_->locked_for(addr_key, now), limiter_->locked_for(name_key, now));
    if (wait > 0) {
      login_failures_.inc();
      ctx_->log().warn("console: login as '{}' from {} refused: too many failures, locked "
                       "for {} s",
                       *name, req.remote_addr, wait);
      res.set_header("Retry-After", std::to_string(wait));
      return send_error(res, 429, "too many failed logins; try again in "
                                    + std::to_string(wait) + " s");
    }
    auto it = operators_.find(*name);
    // An unknown name costs the same argon2id work as a known one (no timing oracle).
    static const std::string dummy = hash_password("grove-console-no-such-operator");
    bool ok = verify_password(it == operators_.end() ? dummy : it->second, *password)
              && it != operators_.end();
    if (!ok) {
      limiter_->failed(addr_key, now);
      // Only real accounts are keyed by name: unknown names would grow the table at the
      // client's will (the address still counts).
      if (it != operators_.end())
        limiter_->failed(name_key, now);
      login_failures_.inc();
      ctx_->log().warn("console: login as '{}' from {} refused: wrong name or password", *name,
                       req.remote_addr);
      return send_error(res, 401, "wrong name or password");
    }
    limiter_->succeeded(name_key);
    limiter_->succeeded(addr_key);
    auto s = start_session(*name, res);
    ctx_->log().info("console: operator '{}' logged in from {}", *name, req.remote_addr);
    send_json(res, 200, json{{"name", *name}, {"csrf", s.csrf}});
  }

  void plugin_action(const httplib::Request& req, httplib::Response& res, const session& s,
                     const std::string& verb) {
    auto body = body_of(req, res);
    if (!body)
      return;
    auto name = string_field(*body, "name");
    auto path = string_field(*body, "path");
    auto config = string_field(*body, "config");
    if (!name || name->empty() || !path || !config)
      return send_error(res, 400, "name (a string) is required; path and config are strings");
    actions_.inc();
    caf::expected<json> result = json{};
    if (verb == "unload") {
      auto r = ask<control::Empty>([n = *name](grove::context& ctx, auto done) {
        grove::control_client::unload(ctx, n, call_timeout, std::move(done));
      });
      if (r)
        result = json{{"ok", true}, {"message", "unloaded " + *name}};
      else
        result = std::move(r.error());
    } else {
      auto r = ask<control::PluginInfo>([verb, n = *name, p = *path,
                                         c = *config](grove::context& ctx, auto done) {
        if (verb == "reload") {
          grove::control_client::reload(ctx, n, p, call_timeout, std::move(done));
        } else if (verb == "configure") {
          grove::control_client::configure(ctx, n, c, call_timeout, std::move(done));
        } else {
          control::PluginChange change;
          change.set_name(n);
          change.set_path(p);
          change.set_config(c);
          grove::control_client::load(ctx, change, call_timeout, std::move(done));
        }
      });
      if (r)
        result = json{{"ok", true},
                      {"message", (verb == "reload"      ? "reloaded "
                                   : verb == "configure" ? "configured "
                                                         : "loaded ")
                                    + *name},
                      {"plugin", status_json::plugin(*r)}};
      else
        result = std::move(r.error());
    }
    auto what = verb + " " + *name + (path->empty() ? "" : " from '" + *path + "'");
    if (!result) {
      ctx_->log().warn("console: operator '{}': {} failed: {}", s.name, what,
                       grove::describe(result.error()));
      return send_error(res, result.error());
    }
    ctx_->log().info("console: operator '{}': {}: done", s.name, what);
    send_json(res, 200, *result);
  }

  void publish(const httplib::Request& req, httplib::Response& res, const session& s) {
    auto body = body_of(req, res);
    if (!body)
      return;
    auto topic = string_field(*body, "topic");
    auto payload = string_field(*body, "payload");
    auto source = string_field(*body, "source");
    auto content_type = string_field(*body, "content_type");
    if (!topic || topic->empty() || !payload || !source || !content_type)
      return send_error(res, 400, "topic (a string) is required; payload, source and "
                                  "content_type are strings");
    if (auto err = grove::validate_topic(*topic))
      return send_error(res, err);
    if (content_type->empty())
      *content_type = nlohmann::json::accept(*payload) ? "application/json"
                                                       : "text/plain; charset=utf-8";
    actions_.inc();
    // As grovectl pub to $grove/mm/in/<topic>: through message_manager's table, so the
    // answer is where the message went.
    auto msg = grove::message_manager::make_publish(*topic, *payload, *source, 0, *content_type);
    auto r = ask<grove::mm::Routed>([msg](grove::context& ctx, auto done) mutable {
      grove::message_manager::publish(ctx, std::move(msg), call_timeout, std::move(done));
    });
    if (!r) {
      ctx_->log().warn("console: operator '{}': publish to '{}' as '{}' refused: {}", s.name,
                       *topic, *source, grove::describe(r.error()));
      return send_error(res, r.error());
    }
    ctx_->log().info("console: operator '{}': published to '{}' as '{}': {} targets", s.name,
                     *topic, *source, r->targets());
    send_json(res, 200,
              json{{"ok", r->targets() > 0},
                   {"topic", *topic},
                   {"targets", r->targets()},
                   {"outcome", r->targets() > 0 ? "routed to " + std::to_string(r->targets())
                                                    + " target(s)"
                                                : "no route: no subscription of the group "
                                                  "takes " + *topic}});
  }

  void shadow_call(const httplib::Request& req, httplib::Response& res, const session* s,
                   const std::string& verb) {
    std::string thing;
    std::string name;
    std::string document;
    if (verb == "get") {
      thing = req.get_param_value("thing");
      name = req.get_param_value("name");
    } else {
      auto body = body_of(req, res);
      if (!body)
        return;
      auto t = string_field(*body, "thing");
      auto n = string_field(*body, "name");
      auto d = string_field(*body, "document");
      if (!t || !n || !d)
        return send_error(res, 400, "thing, name and document are strings");
      thing = *t;
      name = *n;
      document = *d;
    }
    if (thing.empty())
      return send_error(res, 400, "thing is required");
    if (s)
      actions_.inc();
    auto topic = std::string{verb == "get" ? grove::shadow::get_topic : grove::shadow::update_topic};
    auto r = ask<grove::shadow::Reply>([topic, thing, name, document](grove::context& ctx,
                                                                       auto done) {
      grove::shadow::document_rpc rpc{topic};
      rpc(ctx, grove::shadow::make_request(thing, name, document), call_timeout,
          std::move(done));
    });
    if (!r) {
      if (r.error() == grove::errc::no_route)
        return send_error(res, 404, "shadows: the shadow plugin is not in this image");
      return send_error(res, r.error());
    }
    if (s)
      ctx_->log().info("console: operator '{}': shadow update of {}{}{}: {}", s->name, thing,
                       name.empty() ? "" : "/", name, r->code());
    auto doc = nlohmann::json::parse(r->payload(), nullptr, false);
    send_json(res, 200, json{{"code", r->code()},
                             {"document", doc.is_discarded() ? json(r->payload()) : json(doc)}});
  }

  // --- functions (function_runtime's fr-1, fr-3) -----------------------------------------

  caf::expected<grove::fn::FunctionList> function_list() {
    return ask<grove::fn::FunctionList>([](grove::context& ctx, auto done) {
      grove::function_runtime::list(ctx, call_timeout, std::move(done));
    });
  }

  /// The log file of function `name` (from fr-3: never a path the browser names), or
  /// nullopt with the error sent.
  std::optional<std::string> log_file_of(const std::string& name, httplib::Response& res) {
    if (name.empty()) {
      send_error(res, 400, "name is required");
      return std::nullopt;
    }
    auto list = function_list();
    if (!list) {
      send_function_error(res, list.error());
      return std::nullopt;
    }
    for (const auto& f : list->functions())
      if (f.name() == name)
        return f.log_file();
    send_error(res, 404, "no function '" + name + "'");
    return std::nullopt;
  }

  static void send_function_error(httplib::Response& res, const caf::error& err) {
    if (err == grove::errc::no_route)
      return send_error(res, 404, "functions: function_runtime is not in this image");
    send_error(res, err);
  }

  void functions(httplib::Response& res) {
    auto list = function_list();
    if (!list)
      return send_function_error(res, list.error());
    json out = json::array();
    for (const auto& f : list->functions())
      out.push_back({{"name", f.name()},
                     {"valid", f.valid()},
                     {"pinned", f.pinned()},
                     {"instances", f.instances()},
                     {"busy", f.busy()},
                     {"max_instances", f.max_instances()},
                     {"queued", f.queued()},
                     {"sent_ahead", f.sent_ahead()},
                     {"max_queue", f.max_queue()},
                     {"invocations", f.invocations()},
                     {"errors", f.errors()},
                     {"timeouts", f.timeouts()},
                     {"refused", f.refused()},
                     {"memory_hwm_kb", f.memory_hwm_kb()},
                     {"output_lines_dropped", f.output_lines_dropped()},
                     {"last_error", f.last_error()},
                     {"log_file", f.log_file()}});
    send_json(res, 200, json{{"functions", std::move(out)}});
  }

  void invoke(const httplib::Request& req, httplib::Response& res, const session& s) {
    auto body = body_of(req, res);
    if (!body)
      return;
    auto name = string_field(*body, "name");
    auto payload = string_field(*body, "payload");
    auto content_type = string_field(*body, "content_type");
    if (!name || name->empty() || !payload || !content_type)
      return send_error(res, 400, "name (a string) is required; payload and content_type "
                                  "are strings");
    actions_.inc();
    // As grovectl invoke: a request on fr-1, answered with the handler's return value.
    auto r = ask<grove::Envelope>([n = *name, p = *payload,
                                   c = *content_type](grove::context& ctx, auto done) {
      grove::function_runtime::invoke(ctx, n, p, c, call_timeout, std::move(done));
    });
    if (!r) {
      ctx_->log().warn("console: operator '{}': invoke {} failed: {}", s.name, *name,
                       grove::describe(r.error()));
      if (r.error() == grove::errc::no_route)
        return send_error(res, 404, grove::describe(r.error()));
      return send_error(res, r.error());
    }
    ctx_->log().info("console: operator '{}': invoke {}: {} bytes back", s.name, *name,
                     r->payload().size());
    send_json(res, 200, json{{"ok", true},
                             {"name", *name},
                             {"reply", describe_payload(r->payload(), r->content_type(),
                                                        shown_payload_bytes)}});
  }

  void log_tail(const httplib::Request& req, httplib::Response& res) {
    auto file = log_file_of(req.get_param_value("name"), res);
    if (!file)
      return;
    auto chunk = read_log(*file, std::nullopt, log_tail_bytes);
    send_json(res, 200, json{{"file", *file},
                             {"text", std::move(chunk.text)},
                             {"offset", chunk.end},
                             {"truncated", chunk.skipped}});
  }

  /// What read_log found.
  struct log_chunk {
    std::string text;
    uint64_t end = 0;     // the offset after it: where the next read starts
    bool skipped = false; // bytes before it were left out (older ones, or too many)
    bool rotated = false; // the file is shorter than the offset: rotated
  };

  /// Up to `limit` bytes of `file`: its tail (from = nullopt, cut to whole lines) or from
  /// `*from`. A missing file (nothing logged yet) reads as empty.
  static log_chunk read_log(const std::string& file, std::optional<uint64_t> from,
                            size_t limit) {
    log_chunk out;
    std::ifstream in{file, std::ios::binary};
    if (!in)
      return out;
    in.seekg(0, std::ios::end);
    auto size = static_cast<uint64_t>(std::max<std::streamoff>(0, in.tellg()));
    uint64_t start = 0;
    if (!from) {
      start = size > limit ? size - limit : 0;
    } else if (*from > size) {
      out.rotated = true; // the new file starts over
    } else {
      start = *from;
    }
    auto n = std::min<uint64_t>(size - start, limit);
    out.text.resize(n);
    in.seekg(static_cast<std::streamoff>(start));
    in.read(out.text.data(), static_cast<std::streamsize>(n));
    out.text.resize(static_cast<size_t>(std::max<std::streamsize>(0, in.gcount())));
    out.end = start + out.text.size();
    if (!from && start > 0) {
      out.skipped = true;
      if (auto nl = out.text.find('\n'); nl != std::string::npos)
        out.text.erase(0, nl + 1);
    }
    return out;
  }

  /// Follows a function's log: `log` events with what is appended (from `offset`, the
  /// tail's end), `rotated` when the file starts over.
  void log_stream(const httplib::Request& req, httplib::Response& res, const session& s) {
    auto name = req.get_param_value("name");
    auto file = log_file_of(name, res);
    if (!file)
      return;
    std::optional<uint64_t> from;
    if (auto o = req.get_param_value("offset"); !o.empty()) {
      char* end = nullptr;
      errno = 0;
      auto v = std::strtoull(o.c_str(), &end, 10);
      if (end == o.c_str() || *end != '\0' || errno != 0)
        return send_error(res, 400, "offset: not a non-negative integer");
      from = v;
    }
    if (!from)
      from = read_log(*file, std::nullopt, 0).end; // only what comes from now on
    if (!open_stream(res))
      return;
    ctx_->log().info("console: operator '{}' follows the log of {}", s.name, name);
    auto token = s.token;
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
      "text/event-stream",
      [this, token, file = *file, name, offset = *from,
       first = true](size_t, httplib::DataSink& sink) mutable {
        if (first) {
          first = false;
          auto hello = "event: following\ndata: "
                       + json{{"name", name}, {"offset", offset}}.dump() + "\n\n";
          return sink.write(hello.data(), hello.size());
        }
        // Polled: a log is appended by another process; 250 ms is grovectl logs -f's pace.
        for (int i = 0; i < 4; ++i) {
          if (stopping_)
            return false;
          auto chunk = read_log(file, offset, log_chunk_bytes);
          std::string event;
          if (chunk.rotated) {
            event = "event: rotated\ndata: {}\n\n";
            offset = 0;
          } else if (!chunk.text.empty()) {
            offset = chunk.end;
            event = "event: log\ndata: "
                    + json{{"text", std::move(chunk.text)}, {"offset", offset}}.dump(
                      -1, ' ', false, json::error_handler_t::replace)
                    + "\n\n";
          }
          if (!event.empty()) {
            if (!stream_alive(token))
              return false;
            return sink.write(event.data(), event.size());
          }
          std::this_thread::sleep_for(250ms);
        }
        if (!stream_alive(token))
          return false;
        std::string keep = ": keep-alive\n\n"; // finds a closed connection within a second
        return sink.write(keep.data(), keep.size());
      },
      [this](bool) { open_streams_.fetch_sub(1); });
  }

  // --- deployments (the deployment plugin's dep-bus-1, as grovectl deployments) ----------

  /// One operation of the deployment plugin's bus API, its AWS JSON body parsed; an API
  /// error (status >= 400) or a bus error as the console's error answer.
  caf::expected<json> deployment_call(const std::string& operation, const std::string& arn,
                                      int& status) {
    auto r = ask<grove::deployment::ApiAnswer>([operation, arn](grove::context& ctx,
                                                                auto done) {
      grove::deployment::components_rpc rpc{std::string{grove::deployment::components_topic}};
      rpc(ctx, grove::deployment::make_call(operation, arn), call_timeout, std::move(done));
    });
    if (!r) {
      status = r.error() == grove::errc::no_route ? 404 : 0;
      if (status == 404)
        return grove::make_error(grove::errc::no_route,
                                 "deployments: the deployment plugin is not in this image");
      return std::move(r.error());
    }
    auto body = json::parse(r->body(), nullptr, false);
    if (r->status() >= 400) {
      status = r->status();
      auto text = body.is_object() && body.contains("message") && body["message"].is_string()
                    ? body["message"].get<std::string>()
                    : r->body();
      return grove::make_error(grove::errc::malformed, r->error_type() + ": " + text);
    }
    if (body.is_discarded())
      return json::object();
    return body;
  }

  /// Sends the error of a deployment_call.
  static void send_deployment_error(httplib::Response& res, const caf::error& err, int status) {
    if (status != 0)
      return send_error(res, status, grove::describe(err));
    send_error(res, err);
  }

  void deployments(httplib::Response& res) {
    int status = 0;
    auto list = deployment_call("ListDeployments", "", status);
    if (!list)
      return send_deployment_error(res, list.error(), status);
    auto installed = deployment_call("ListInstalledComponents", "", status);
    if (!installed)
      return send_deployment_error(res, installed.error(), status);
    send_json(res, 200,
              json{{"deployments", list->value("deployments", json::array())},
                   {"installed", installed->value("installedComponents", json::array())}});
  }

  void deployment_detail(const httplib::Request& req, httplib::Response& res) {
    auto id = req.get_param_value("id");
    if (id.empty())
      return send_error(res, 400, "id is required");
    int status = 0;
    auto d = deployment_call("GetDeployment", id, status);
    if (!d)
      return send_deployment_error(res, d.error(), status);
    auto effective = deployment_call("ListEffectiveDeployments", "", status);
    if (!effective)
      return send_deployment_error(res, effective.error(), status);
    auto installed = deployment_call("ListInstalledComponents", "", status);
    if (!installed)
      return send_deployment_error(res, installed.error(), status);
    // This core's execution of it: status and the failure's reason (its last error).
    json execution = nullptr;
    for (const auto& e : effective->value("effectiveDeployments", json::array()))
      if (e.value("deploymentId", "") == id)
        execution = e;
    // Each component it names, with what the core runs of it now.
    json components = json::array();
    auto requested = d->value("components", json::object());
    auto all = installed->value("installedComponents", json::array());
    if (requested.is_object())
      for (const auto& [name, spec] : requested.items()) {
        json c = {{"componentName", name},
                  {"requestedVersion",
                   spec.is_object() ? spec.value("componentVersion", "") : ""},
                  {"installed", nullptr}};
        for (const auto& i : all)
          if (i.value("componentName", "") == name)
            c["installed"] = i;
        components.push_back(std::move(c));
      }
    send_json(res, 200, json{{"deployment", std::move(*d)},
                             {"execution", std::move(execution)},
                             {"components", std::move(components)}});
  }

  // --- live streams (server-sent events) -------------------------------------------------

  /// Counts an open stream; false (and 503 sent) past max_streams.
  bool open_stream(httplib::Response& res) {
    if (open_streams_.fetch_add(1) >= max_streams_) {
      open_streams_.fetch_sub(1);
      send_error(res, 503, "too many live streams open (max_streams)");
      return false;
    }
    return true;
  }

  /// True while the stream of session cookie `token` may go on: the plugin runs and the
  /// session lives (a logout or its expiry ends the operator's streams too).
  bool stream_alive(const std::string& token) {
    return !stopping_ && sessions_.find(token, clock::now()).has_value();
  }

  void status_stream(const httplib::Request&, httplib::Response& res, const session& s) {
    if (!open_stream(res))
      return;
    auto token = s.token;
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
      "text/event-stream",
      [this, token, next = clock::time_point{}](size_t, httplib::DataSink& sink) mutable {
        // One status per interval; the wait is sliced so a stop ends it at once.
        while (clock::now() < next) {
          if (stopping_)
            return false;
          std::this_thread::sleep_for(std::min<clock::duration>(100ms, next - clock::now()));
        }
        if (!stream_alive(token))
          return false;
        next = clock::now() + status_interval_;
        auto st = status();
        std::string event;
        if (st)
          event = "event: status\ndata: " + status_json::status(*st).dump() + "\n\n";
        else
          event = "event: failure\ndata: " + json{{"error", grove::describe(st.error())}}.dump()
                  + "\n\n";
        return sink.write(event.data(), event.size());
      },
      [this](bool) { open_streams_.fetch_sub(1); });
  }

  void message_stream(const httplib::Request& req, httplib::Response& res, const session& s) {
    auto filter = req.get_param_value("filter");
    if (auto err = grove::validate_filter(filter))
      return send_error(res, err);
    if (!open_stream(res))
      return;
    auto st = std::make_shared<stream>();
    st->filter = filter;
    {
      std::lock_guard lock{streams_mtx_};
      streams_.insert(st);
      if (filters_[filter]++ == 0) {
        if (auto err = ctx_->subscribe(filter))
          ctx_->log().error("console: cannot subscribe to '{}': {}", filter,
                            grove::describe(err));
      }
    }
    ctx_->log().info("console: operator '{}' watches '{}'", s.name, filter);
    auto token = s.token;
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
      "text/event-stream",
      [this, st, token, first = true](size_t, httplib::DataSink& sink) mutable {
        if (first) {
          first = false;
          std::string hello = "event: subscribed\ndata: " + json{{"filter", st->filter}}.dump()
                              + "\n\n";
          return sink.write(hello.data(), hello.size());
        }
        std::deque<std::string> out;
        uint64_t lost = 0;
        {
          std::unique_lock lock{st->mtx};
          st->cv.wait_for(lock, 1s, [&] { return stopping_ || !st->events.empty(); });
          out.swap(st->events);
          std::swap(lost, st->lost);
        }
        if (!stream_alive(token))
          return false;
        std::string chunk;
        for (auto& e : out)
          chunk += e;
        if (lost > 0)
          chunk += "event: lost\ndata: " + std::to_string(lost) + "\n\n";
        if (chunk.empty())
          chunk = ": keep-alive\n\n"; // finds a closed connection within a second
        return sink.write(chunk.data(), chunk.size());
      },
      [this, st](bool) {
        std::lock_guard lock{streams_mtx_};
        streams_.erase(st);
        if (--filters_[st->filter] == 0) {
          filters_.erase(st->filter);
          if (!stopping_)
            ctx_->unsubscribe(st->filter);
        }
        open_streams_.fetch_sub(1);
      });
  }

  grove::context* ctx_ = nullptr;
  std::map<std::string, std::string> operators_; // name -> argon2id hash (password accounts)
  certificate_matcher certificates_;              // certificate accounts
  std::chrono::seconds session_ttl_{3600};
  session_table sessions_;
  std::unique_ptr<login_limiter> limiter_;
  int64_t max_streams_ = 4;
  std::atomic<int64_t> open_streams_{0};
  std::chrono::milliseconds status_interval_{1000};
  std::mutex streams_mtx_;
  std::set<std::shared_ptr<stream>> streams_;
  std::map<std::string, size_t> filters_; // bus subscriptions: filter -> streams watching it
  std::atomic<bool> stopping_{false};
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  grove::counter requests_;
  grove::counter actions_;
  grove::counter login_failures_;
  grove::counter forbidden_;
};

} // namespace

} // namespace grove::console

GROVE_TYPED_PLUGIN(grove::console::console_plugin, "console", "0.1.0")
