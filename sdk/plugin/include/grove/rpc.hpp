#pragma once

// Typed request/response over the bus (sdk/plugin/README.md, "Services"). A service
// plugin claims a topic or filter with grove::service<Req, Resp>::serve; callers use
// grove::rpc<Req, Resp>, usually through the typed client the service ships in
// plugins/<name>/include/grove/<name>/client.hpp. Both sides speak serialized Protobuf
// (lite) with the content type "application/x-protobuf; messageType=<full name>"; a
// failure travels as the responder's caf::error in the envelope's error fields, so the
// caller gets the same code and category back, never flattened text.

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "grove/envelope.pb.h"
#include "grove/errors.hpp"
#include "grove/plugin.hpp"

namespace grove {

/// "application/x-protobuf; messageType=<type_name>".
std::string protobuf_content_type(std::string_view type_name);

/// Writes `err` into `msg`'s error fields (code, category, message text).
void set_error(Envelope& msg, const caf::error& err);

/// The error a reply carries in its error fields; empty when it carries none.
caf::error error_of(const Envelope& msg);

/// A reply turned into an error when it carries one (see error_of).
caf::expected<Envelope> checked_reply(caf::expected<Envelope> reply);

/// The caller's half of a typed call: encodes `Req`, decodes `Resp` or the error.
/// `Req` and `Resp` are generated Protobuf (lite) message types.
template <class Req, class Resp>
class rpc {
public:
  /// Calls go to `topic` (a topic name, never a filter).
  explicit rpc(std::string topic) : topic_(std::move(topic)) {
  }

  /// The request topic.
  const std::string& topic() const noexcept {
    return topic_;
  }

  /// Content type of requests.
  static std::string request_type() {
    return protobuf_content_type(Req{}.GetTypeName());
  }

  /// Content type of replies.
  static std::string response_type() {
    return protobuf_content_type(Resp{}.GetTypeName());
  }

  /// The request envelope for `req` (topic, payload, content type).
  Envelope encode(const Req& req) const {
    Envelope env;
    env.set_topic(topic_);
    env.set_payload(req.SerializeAsString());
    env.set_content_type(request_type());
    return env;
  }

  /// The typed result of a reply: the responder's error, the transport's error
  /// (no_route, timeout, ...), errc::malformed for a reply of another type or one that
  /// does not parse, else the response.
  static caf::expected<Resp> decode(caf::expected<Envelope> reply) {
    auto checked = checked_reply(std::move(reply));
    if (!checked)
      return std::move(checked.error());
    if (!checked->content_type().empty() && checked->content_type() != response_type())
      return make_error(errc::malformed, "reply on '" + checked->topic() + "' is '"
                                           + checked->content_type() + "', expected '"
                                           + response_type() + "'");
    Resp resp;
    if (!resp.ParseFromString(checked->payload()))
      return make_error(errc::malformed,
                        "reply does not parse as " + Resp{}.GetTypeName());
    return resp;
  }

  /// Calls from a plugin: `f` runs on the plugin's actor with the response or error.
  void operator()(context& ctx, const Req& req, std::chrono::milliseconds timeout,
                  std::function<void(caf::expected<Resp>)> f) const {
    ctx.call(encode(req), timeout,
             [f = std::move(f)](caf::expected<Envelope> reply) {
               f(decode(std::move(reply)));
             });
  }

  /// Calls through any blocking transport `send(Envelope) -> caf::expected<Envelope>`
  /// (grove::kernel::request in tests and tools).
  template <class Send>
  caf::expected<Resp> call_with(Send&& send, const Req& req) const {
    return decode(send(encode(req)));
  }

private:
  std::string topic_;
};

/// The server's half of a typed call.
template <class Req, class Resp>
class service {
public:
  /// A typed handler: the decoded request and the envelope it came in (topic, source).
  using handler = std::function<caf::expected<Resp>(const Req&, const Envelope&)>;

  /// Claims `filter` on `ctx` (exclusively, see context::serve) and answers each
  /// request with `h`'s response or error. A request that is not a `Req` is answered
  /// with errc::malformed without calling `h`.
  static caf::error serve(context& ctx, std::string_view filter, handler h) {
    return ctx.serve(filter, [&ctx, h = std::move(h)](const Envelope& msg) {
      auto req = decode(msg);
      if (!req) {
        ctx.reply_error(msg, std::move(req.error()));
        return;
      }
      reply(ctx, msg, h(*req, msg));
    });
  }

  /// errc::malformed when `msg` says it carries another type than `Req` (for a
  /// handler that reads the payload itself, in place).
  static caf::error check_type(const Envelope& msg) {
    auto want = rpc<Req, Resp>::request_type();
    if (!msg.content_type().empty() && msg.content_type() != want)
      return make_error(errc::malformed, "request on '" + msg.topic() + "' is '"
                                           + msg.content_type() + "', expected '" + want
                                           + "'");
    return {};
  }

  /// Decodes a request envelope; errc::malformed when it is not a `Req`.
  static caf::expected<Req> decode(const Envelope& msg) {
    if (auto err = check_type(msg))
      return err;
    Req req;
    if (!req.ParseFromString(msg.payload()))
      return make_error(errc::malformed, "request on '" + msg.topic()
                                           + "' does not parse as "
                                           + Req{}.GetTypeName());
    return req;
  }

  /// Answers `request` with a response or an error (for handlers that answer later).
  static void reply(context& ctx, const Envelope& request, caf::expected<Resp> result) {
    if (result)
      ctx.reply(request, result->SerializeAsString(), rpc<Req, Resp>::response_type());
    else
      ctx.reply_error(request, std::move(result.error()));
  }
};

} // namespace grove
