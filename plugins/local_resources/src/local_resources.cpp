// local_resources: the group's local volumes and devices (README.md). Validates the
// group's `resources` whenever the group changes and answers function_runtime's lr-1
// request with what one function may see in its sandbox: each of its
// resourceAccessPolicies resolved to a bind mount (source, destination, ro|rw), a device's
// numbers for the devices cgroup, and the group to add to the worker's groups.

#include <map>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "resource_def.hpp"
#include "grove/kernel/group_client.hpp"
#include "grove/local_resources/client.hpp"
#include "grove/plugin.hpp"

namespace {

using namespace std::chrono_literals;
using grove::errc;
using grove::make_error;
namespace lr = grove::lr;
namespace glr = grove::local_resources;

using mounts_service = grove::service<glr::MountsRequest, glr::MountsReply>;

/// One resource of the group: its definition, or why it was refused.
struct entry {
  std::optional<lr::resource_def> def;
  std::string error;
};

class local_resources final : public grove::plugin {
public:
  caf::error init(grove::context& ctx) override {
    ctx_ = &ctx;
    if (auto e = ctx.serve(glr::mounts_topic, [this](const grove::Envelope& req) { asked(req); }))
      return e;
    if (auto e = ctx.own_events(glr::started_topic))
      return e;
    return ctx.subscribe(grove::group_client::current_topic);
  }

  caf::error start() override {
    refresh();
    // lr-2: functions that asked before this instance served lr-1 (a later load, a
    // restart, a reload) ask again; a request now waits for the group refresh() reads.
    if (auto r = ctx_->publish(glr::started_topic, std::string{}); !r)
      ctx_->log().warn("cannot announce the start on {}: {}", glr::started_topic,
                       grove::describe(r.error()));
    return {};
  }

  void on_message(const grove::Envelope& msg) override {
    if (auto g = grove::group_client::current(msg))
      apply(*g);
  }

private:
  /// Asks the kernel for the group; answers the requests that waited for it.
  void refresh() {
    if (refreshing_)
      return;
    refreshing_ = true;
    grove::group_client::get(*ctx_, 10s, [this](caf::expected<grove::group::Group> g) {
      refreshing_ = false;
      if (g)
        apply(*g);
      else if (g.error() != errc::no_route)
        ctx_->log().warn("cannot get the group: {}", grove::describe(g.error()));
      has_group_ = true; // what there is (none: no resources)
      auto waiting = std::move(waiting_);
      waiting_.clear();
      for (const auto& req : waiting)
        answer(req);
    });
  }

  void apply(const grove::group::Group& g) {
    if (has_group_ && g.version() < version_)
      return; // an older copy than the one in force
    has_group_ = true;
    version_ = g.version();
    std::map<std::string, entry> next;
    size_t volumes = 0, devices = 0, invalid = 0;
    for (const auto& r : g.resources()) {
      auto origin = g.source_file() + ": resources[" + r.id() + "].config";
      auto def = lr::parse_resource(r.config_yaml(), origin);
      entry e;
      if (def) {
        volumes += def->kind == lr::resource_kind::volume ? 1 : 0;
        devices += def->kind == lr::resource_kind::device ? 1 : 0;
        e.def = std::move(*def);
      } else {
        ++invalid;
        e.error = grove::describe(def.error());
        // Once per change of the text, not per group version.
        auto old = resources_.find(r.id());
        if (old == resources_.end() || old->second.error != e.error)
          ctx_->log().error("resource '{}' refused: {}", r.id(), e.error);
      }
      next[r.id()] = std::move(e);
    }
    resources_ = std::move(next);
    ctx_->set_status("resources", std::to_string(volumes) + " volumes, "
                                    + std::to_string(devices) + " devices, "
                                    + std::to_string(invalid) + " refused (group version "
                                    + std::to_string(version_) + ")");
  }

  void asked(const grove::Envelope& msg) {
    // A caller that read a newer group than ours waits for it (the kernel publishes
    // the change to both of us; this one may not have arrived yet).
    auto req = mounts_service::decode(msg);
    if (req && (!has_group_ || req->group_version() > version_)) {
      waiting_.push_back(msg);
      refresh();
      return;
    }
    answer(msg);
  }

  void answer(const grove::Envelope& msg) {
    auto req = mounts_service::decode(msg);
    if (!req) {
      ctx_->reply_error(msg, std::move(req.error()));
      return;
    }
    mounts_service::reply(*ctx_, msg, mounts(*req));
  }

  caf::expected<glr::MountsReply> mounts(const glr::MountsRequest& req) {
    glr::MountsReply out;
    out.set_group_version(version_);
    for (const auto& p : req.policies()) {
      auto it = resources_.find(p.resource_id());
      if (it == resources_.end())
        return make_error(errc::invalid_config,
                          "function '" + req.function() + "': resourceAccessPolicies names "
                            "resource '" + p.resource_id() + "', which the group does not have");
      if (!it->second.def)
        return make_error(errc::invalid_config,
                          "function '" + req.function() + "': resource '" + p.resource_id()
                            + "' is refused: " + it->second.error);
      auto m = lr::resolve(p.resource_id(), *it->second.def, p.permission());
      if (!m)
        return make_error(errc::invalid_config, "function '" + req.function() + "': "
                                                  + grove::describe(m.error()));
      *out.add_mounts() = std::move(*m);
    }
    // The function's own volumes and devices: checked as the group's are.
    for (const auto& r : req.inline_resources()) {
      auto def = lr::inline_resource(r.device(), r.source_path(), r.destination_path(),
                                     r.add_group_owner(), r.id());
      if (!def)
        return make_error(errc::invalid_config, "function '" + req.function() + "': "
                                                  + grove::describe(def.error()));
      auto m = lr::resolve(r.id(), *def, r.permission());
      if (!m)
        return make_error(errc::invalid_config, "function '" + req.function() + "': "
                                                  + grove::describe(m.error()));
      *out.add_mounts() = std::move(*m);
    }
    if (auto clash = lr::destination_clash(out); !clash.empty())
      return make_error(errc::invalid_config, "function '" + req.function() + "': " + clash);
    return out;
  }

  grove::context* ctx_ = nullptr;
  std::map<std::string, entry> resources_;
  uint64_t version_ = 0;
  bool has_group_ = false;
  bool refreshing_ = false;
  std::vector<grove::Envelope> waiting_;
};

} // namespace

GROVE_PLUGIN(local_resources, "local_resources", "1.0.0", nullptr)
