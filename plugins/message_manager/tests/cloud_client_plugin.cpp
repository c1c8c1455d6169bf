// A tiny system client of message_manager (mm-6 to mm-9) for system_api_test.sh: it
// stands in for the shadow service and uses only the typed client
// (grove/message_manager/client.hpp). The test drives it with grovectl; answers are text:
//   call $grove/test/<name>/publish     '<cloud topic> <payload>' -> "ok seq=<n>" | "error: ..."
//   call $grove/test/<name>/publish_n   '<cloud topic> <n>'       -> payloads 1..n, one after
//                                           the other's commit -> "ok <n> seq=<last>" | "error: ..."
//   call $grove/test/<name>/publish_size '<cloud topic> <bytes>' -> a payload of that size,
//                                           answered as publish
//   call $grove/test/<name>/subscribe   '<filter>...'             -> "ok <filters>" | "error: ..."
//   call $grove/test/<name>/unsubscribe '[<filter>...]'           -> "ok <filters left>"
//   call $grove/test/<name>/link        ''                        -> "link up|down|disabled"
//                                           (the state in mm-7's answer to no new filter)
// Each cloud message it receives (mm-9) it publishes again on
// $grove/test/<name>/got/<cloud topic> with the same payload, for grovectl sub.

#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "grove/message_manager/client.hpp"
#include "grove/plugin.hpp"

namespace {

namespace mmc = grove::message_manager;
constexpr auto timeout = std::chrono::seconds{20};

std::vector<std::string> words(const std::string& text) {
  std::istringstream in{text};
  std::vector<std::string> result;
  for (std::string w; in >> w;)
    result.push_back(w);
  return result;
}

std::string joined(const google::protobuf::RepeatedPtrField<std::string>& xs) {
  std::string out;
  for (const auto& x : xs)
    out += (out.empty() ? "" : " ") + x;
  return out;
}

/// Relays grovectl's requests to message_manager's system API.
class cloud_client : public grove::plugin {
public:
  caf::error init(grove::context& ctx) override {
    ctx_ = &ctx;
    prefix_ = "$grove/test/" + ctx.name() + "/";
    if (auto err = ctx.subscribe(mmc::system_filter(ctx.name())))
      return err;
    for (auto op : {"publish", "publish_n", "publish_size", "subscribe", "unsubscribe", "link"})
      if (auto err = ctx.serve(prefix_ + op, [this, op = std::string{op}](
                                                const grove::Envelope& req) { handle(op, req); }))
        return err;
    return {};
  }

  void on_message(const grove::Envelope& msg) override {
    auto topic = mmc::cloud_topic_of(msg.topic(), ctx_->name());
    if (!topic)
      return;
    ctx_->publish(prefix_ + "got/" + std::string{*topic}, msg.payload(), "text/plain");
  }

private:
  void answer(const grove::Envelope& req, const std::string& text) {
    ctx_->reply(req, text, "text/plain; charset=utf-8");
  }

  void answer_error(const grove::Envelope& req, const caf::error& err) {
    answer(req, "error: " + grove::describe(err));
  }

  void handle(const std::string& op, const grove::Envelope& req) {
    auto args = words(req.payload());
    if (op == "publish" || op == "publish_size") {
      auto space = req.payload().find(' ');
      auto topic = req.payload().substr(0, space);
      auto payload = space == std::string::npos ? std::string{} : req.payload().substr(space + 1);
      if (op == "publish_size")
        payload = std::string(std::stoul(payload), 'x');
      mmc::cloud_publish(*ctx_, topic, payload, timeout,
                         [this, req](caf::expected<grove::mm::CloudPublished> r) {
                           if (r)
                             answer(req, "ok seq=" + std::to_string(r->seq()));
                           else
                             answer_error(req, r.error());
                         });
    } else if (op == "publish_n") {
      if (args.size() != 2) {
        answer(req, "error: expected '<topic> <n>'");
        return;
      }
      publish_next(req, args[0], 1, std::stoul(args[1]));
    } else if (op == "link") {
      mmc::cloud_subscribe(*ctx_, {}, timeout,
                           [this, req](caf::expected<grove::mm::CloudSubscriptions> r) {
                             if (!r)
                               return answer_error(req, r.error());
                             const auto& l = r->link();
                             answer(req, std::string{"link "}
                                           + (l.connected() ? "up"
                                              : l.disabled() ? "disabled"
                                                             : "down"));
                           });
    } else {
      auto f = [this, req](caf::expected<grove::mm::CloudSubscriptions> r) {
        if (r)
          answer(req, "ok " + joined(r->filters()));
        else
          answer_error(req, r.error());
      };
      if (op == "subscribe")
        mmc::cloud_subscribe(*ctx_, args, timeout, std::move(f));
      else
        mmc::cloud_unsubscribe(*ctx_, args, timeout, std::move(f));
    }
  }

  // Publishes i..n one at a time: the next once the last is committed, so the cloud
  // must see them in order.
  void publish_next(grove::Envelope req, std::string topic, unsigned long i, unsigned long n) {
    mmc::cloud_publish(*ctx_, topic, std::to_string(i), timeout,
                       [this, req, topic, i, n](caf::expected<grove::mm::CloudPublished> r) {
                         if (!r)
                           answer_error(req, r.error());
                         else if (i == n)
                           answer(req, "ok " + std::to_string(n)
                                         + " seq=" + std::to_string(r->seq()));
                         else
                           publish_next(req, topic, i + 1, n);
                       });
  }

  grove::context* ctx_ = nullptr;
  std::string prefix_;
};

} // namespace

#ifndef CLOUD_CLIENT_NAME
#  define CLOUD_CLIENT_NAME "cloud_client"
#endif

GROVE_PLUGIN(cloud_client, CLOUD_CLIENT_NAME, "1.0.0", nullptr)
