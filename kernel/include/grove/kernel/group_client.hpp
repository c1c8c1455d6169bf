#pragma once

// Typed client of the kernel's group service (sdk/plugin/README.md, "Services";
// README.md, bus topics): `$grove/group/get` answers a grove.group.GetRequest with the
// grove.group.Group in force, or errc::no_route when the image has no group.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "grove/errors.hpp"
#include "grove/group.pb.h"
#include "grove/rpc.hpp"

namespace grove::group_client {

/// The topic the kernel serves the group on.
inline constexpr std::string_view get_topic = "$grove/group/get";

/// The typed call.
using get_rpc = rpc<group::GetRequest, group::Group>;

/// Where the kernel publishes each new group (a grove.group.Group, source `kernel`).
inline constexpr std::string_view current_topic = "$grove/group/current";

/// The topic the kernel replaces the group on (plugins with `may_set_group`).
inline constexpr std::string_view set_topic = "$grove/group/set";

/// The typed call of set_topic: a group document in, the group then in force out.
using set_rpc = rpc<group::SetRequest, group::Group>;

/// The one source a group is accepted from, on `$grove/group/get` replies and
/// `$grove/group/current` events alike.
inline constexpr std::string_view source = "kernel";

/// `reply` when the kernel sent it, else errc::not_authorized (a plugin serving
/// `$grove/group/get` in an image without a group must not hand out one).
inline caf::expected<Envelope> from_kernel(caf::expected<Envelope> reply) {
  if (reply && reply->source() != source)
    return make_error(errc::not_authorized, "ignored a group from '" + reply->source()
                                              + "': only the kernel's is accepted");
  return reply;
}

/// The group a `$grove/group/current` event carries, for a plugin's on_message: nullopt
/// for any other topic, a source other than the kernel, or bytes that do not parse.
inline std::optional<group::Group> current(const Envelope& msg) {
  if (msg.topic() != current_topic || msg.source() != source)
    return std::nullopt;
  group::Group g;
  if (!g.ParseFromString(msg.payload()))
    return std::nullopt;
  return g;
}

/// Asks for the group from a plugin; `f` runs on the plugin's actor.
inline void get(context& ctx, std::chrono::milliseconds timeout,
                std::function<void(caf::expected<group::Group>)> f) {
  get_rpc rpc{std::string{get_topic}};
  ctx.call(rpc.encode(group::GetRequest{}), timeout,
           [f = std::move(f)](caf::expected<Envelope> reply) {
             f(get_rpc::decode(from_kernel(std::move(reply))));
           });
}

/// Replaces the group with `document` (YAML or JSON, the group file's shape) from a
/// plugin whose profile entry has `may_set_group`; `f` runs on the plugin's actor with the
/// group then in force, or the kernel's reason for refusing it (nothing changed). With
/// `expected_version` (the version the document was computed from) the kernel refuses
/// with errc::conflict when the group in force is another one: use `edit` for that.
inline void set(context& ctx, std::string document, std::chrono::milliseconds timeout,
                std::function<void(caf::expected<group::Group>)> f,
                std::optional<uint64_t> expected_version = std::nullopt) {
  set_rpc rpc{std::string{set_topic}};
  group::SetRequest req;
  req.set_document(std::move(document));
  if (expected_version)
    req.set_expected_version(*expected_version);
  ctx.call(rpc.encode(req), timeout, [f = std::move(f)](caf::expected<Envelope> reply) {
    f(set_rpc::decode(from_kernel(std::move(reply))));
  });
}

/// How often `edit` reads and recomputes after a conflict before it gives up.
inline constexpr int edit_attempts = 8;

/// What `edit` calls between computing a document and setting it: `read`, the group the
/// document was computed on, and the document. Calling `go` with no error sets it; with
/// an error, the edit ends with that error and nothing is set. A caller that must know
/// after a crash whether a set happened keeps the document durably here (the kernel's
/// group file survives a `kill -9`, its version does not: it starts again at 1).
using before_set = std::function<void(const group::Group& read, const std::string& document,
                                      std::function<void(caf::error)> go)>;

/// A read-modify-write of the group that never loses a concurrent change: reads the
/// group in force, `compute` turns it into the new document (or an error, which ends the
/// edit), `prepare` (optional) sees it, and it is set as a compare-and-set on the version
/// read. A conflict (someone else changed the group meanwhile) reads again and
/// recomputes (and prepares again), up to edit_attempts times. `compute`, `prepare` and
/// `f` run on the plugin's actor; `f` gets the group then in force.
inline void edit(context& ctx, std::chrono::milliseconds timeout,
                 std::function<caf::expected<std::string>(const group::Group&)> compute,
                 std::function<void(caf::expected<group::Group>)> f, before_set prepare = {}) {
  struct state {
    context* ctx;
    std::chrono::milliseconds timeout;
    std::function<caf::expected<std::string>(const group::Group&)> compute;
    std::function<void(caf::expected<group::Group>)> f;
    before_set prepare;
    int attempt = 0;
  };
  auto st = std::make_shared<state>(
    state{&ctx, timeout, std::move(compute), std::move(f), std::move(prepare)});
  // Each attempt holds the state; the last callback lets it go.
  auto attempt = std::make_shared<std::function<void(std::shared_ptr<state>)>>();
  *attempt = [weak = std::weak_ptr{attempt}](std::shared_ptr<state> st) {
    auto again = weak.lock();
    if (!again)
      return;
    ++st->attempt;
    get(*st->ctx, st->timeout, [st, again](caf::expected<group::Group> now) {
      if (!now) {
        st->f(std::move(now.error()));
        return;
      }
      auto doc = st->compute(*now);
      if (!doc) {
        st->f(std::move(doc.error()));
        return;
      }
      auto put = [st, again, version = now->version()](std::string document) {
        set(
          *st->ctx, std::move(document), st->timeout,
          [st, again](caf::expected<group::Group> r) {
            if (!r && r.error() == errc::conflict && st->attempt < edit_attempts) {
              (*again)(st);
              return;
            }
            if (!r && r.error() == errc::conflict) {
              st->f(caf::expected<group::Group>{
                make_error(errc::conflict, message_of(r.error()) + " (gave up after "
                                             + std::to_string(st->attempt) + " attempts)")});
              return;
            }
            st->f(std::move(r));
          },
          version);
      };
      if (!st->prepare) {
        put(std::move(*doc));
        return;
      }
      auto document = std::make_shared<std::string>(std::move(*doc));
      st->prepare(*now, *document, [st, put, document](caf::error err) {
        if (err)
          st->f(std::move(err));
        else
          put(std::move(*document));
      });
    });
  };
  (*attempt)(std::move(st));
}

/// Asks for the group through a blocking transport `send(Envelope) ->
/// caf::expected<Envelope>` (e.g. a lambda over grove::kernel::request in tests).
template <class Send>
caf::expected<group::Group> get(Send&& send) {
  get_rpc rpc{std::string{get_topic}};
  return get_rpc::decode(from_kernel(send(rpc.encode(group::GetRequest{}))));
}

} // namespace grove::group_client
