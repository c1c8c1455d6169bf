#include "sync_merge.hpp"

#include <algorithm>

namespace grove::shadow {

namespace {

// Equality that ignores key order (ordered_json compares objects in order, and the
// cloud need not write keys in ours).
bool same(const json& a, const json& b) {
  if (a.is_object() && b.is_object()) {
    if (a.size() != b.size())
      return false;
    for (const auto& [key, value] : a.items()) {
      auto it = b.find(key);
      if (it == b.end() || !same(value, *it))
        return false;
    }
    return true;
  }
  if (a.is_array() && b.is_array()) {
    if (a.size() != b.size())
      return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!same(a[i], b[i]))
        return false;
    return true;
  }
  return a == b;
}

// Equal, a missing value (nullptr) equal only to another missing one.
bool same(const json* a, const json* b) {
  if (!a || !b)
    return a == b;
  return same(*a, *b);
}

const json* child(const json* parent, const std::string& key) {
  if (!parent || !parent->is_object())
    return nullptr;
  auto it = parent->find(key);
  return it == parent->end() ? nullptr : &*it;
}

// The newest {"timestamp": T} in a metadata subtree; `fallback` when there is none.
int64_t newest(const json* meta, int64_t fallback) {
  // An array's metadata is one entry per element (AWS's shape): its newest counts.
  if (!meta || !(meta->is_object() || meta->is_array()))
    return fallback;
  if (auto it = meta->find("timestamp"); it != meta->end() && it->is_number_integer())
    return it->get<int64_t>();
  int64_t best = fallback;
  bool found = false;
  for (const auto& [key, value] : meta->items()) {
    auto t = newest(&value, fallback);
    if (!found || t > best)
      best = t, found = true;
  }
  return best;
}

struct side_view {
  const json* value;
  const json* meta;
  int64_t deleted_at; // the time a missing value counts
};

// Merges one position: nullopt when the key is to be absent. Recursion is bounded by
// the documents' depth (6 levels for what the plugin stores, 64 for cloud input).
// `pending` (when `has_pending`) is what an update whose answer never came asked the
// cloud to take: where the cloud has it, the cloud did not change the leaf (its
// timestamp is only when our own update reached it).
std::optional<json> merge_at(const json* base, bool has_pending, const json* pending,
                             side_view l, side_view c) {
  auto object = [](const json* x) { return x && x->is_object(); };
  if ((object(l.value) || object(c.value)) && (!l.value || object(l.value))
      && (!c.value || object(c.value))) {
    // Both objects, or one an object and the other missing: key by key, so a leaf
    // changed on one side survives the other side's delete of its parent.
    json out = json::object();
    auto visit = [&](const std::string& key) {
      if (out.contains(key))
        return;
      auto r = merge_at(child(base, key), has_pending, child(pending, key),
                        side_view{child(l.value, key), child(l.meta, key), l.deleted_at},
                        side_view{child(c.value, key), child(c.meta, key), c.deleted_at});
      if (r)
        out[key] = std::move(*r);
    };
    for (const auto* x : {l.value, c.value})
      if (x)
        for (const auto& [key, value] : x->items())
          visit(key);
    if (out.empty())
      return std::nullopt; // an object left empty goes, as in an update
    return out;
  }
  if (same(l.value, c.value))
    return l.value ? std::optional<json>{*l.value} : std::nullopt;
  if (has_pending && same(c.value, pending))
    base = pending;
  const json* pick;
  if (same(l.value, base)) {
    pick = c.value; // changed in the cloud only
  } else if (same(c.value, base)) {
    pick = l.value; // changed locally only
  } else {
    auto tl = l.value ? newest(l.meta, l.deleted_at) : l.deleted_at;
    auto tc = c.value ? newest(c.meta, c.deleted_at) : c.deleted_at;
    pick = tc > tl ? c.value : l.value; // both changed: the newer; a tie stays local
  }
  return pick ? std::optional<json>{*pick} : std::nullopt;
}

json empty_object() {
  return json::object();
}

// What a shadow can hold: no null values, no empty objects (an update deletes both), so
// the merge never agrees on a state an update could not make.
void normalize(json& x) {
  if (!x.is_object())
    return;
  for (auto it = x.begin(); it != x.end();) {
    normalize(*it);
    if (it->is_null() || (it->is_object() && it->empty()))
      it = x.erase(it);
    else
      ++it;
  }
}

} // namespace

sync_side side_of(const document& doc) {
  sync_side s;
  if (!doc.desired.is_null())
    s.state["desired"] = doc.desired;
  if (!doc.reported.is_null())
    s.state["reported"] = doc.reported;
  if (!doc.meta_desired.is_null())
    s.metadata["desired"] = doc.meta_desired;
  if (!doc.meta_reported.is_null())
    s.metadata["reported"] = doc.meta_reported;
  normalize(s.state);
  s.timestamp = doc.timestamp;
  s.version = doc.version;
  return s;
}

json state_diff(const json& from, const json& to) {
  json out = json::object();
  const json& f = from.is_object() ? from : empty_object();
  if (to.is_object()) {
    for (const auto& [key, value] : to.items()) {
      auto it = f.find(key);
      if (it == f.end()) {
        out[key] = value;
      } else if (value.is_object() && it->is_object()) {
        auto sub = state_diff(*it, value);
        if (!sub.is_null())
          out[key] = std::move(sub);
      } else if (!same(value, *it)) {
        out[key] = value;
      }
    }
  }
  for (const auto& [key, value] : f.items())
    if (!to.is_object() || !to.contains(key))
      out[key] = nullptr;
  if (out.empty())
    return nullptr;
  return out;
}

sync_plan plan_sync(const std::optional<json>& base, const std::optional<sync_side>& local,
                    const std::optional<sync_side>& cloud, sync_direction dir,
                    const std::optional<json>& pending) {
  sync_plan p;
  const json none = json::object();
  // One side taken as it is; the other follows with what changed since the base (all
  // of it when the other side has no shadow).
  auto follow = [&](const std::optional<sync_side>& leader,
                    const std::optional<sync_side>& follower, json& patch, bool& del) {
    if (!leader) {
      p.exists = false;
      del = follower && base.has_value();
      return;
    }
    p.merged = leader->state;
    const json& from = follower ? (base ? *base : none) : none;
    patch = state_diff(from, leader->state);
    if (!follower && patch.is_null())
      patch = json::object(); // an empty shadow is still made
  };
  if (dir == sync_direction::device_to_cloud) {
    follow(local, cloud, p.cloud_patch, p.delete_cloud);
    return p;
  }
  if (dir == sync_direction::cloud_to_device) {
    follow(cloud, local, p.local_patch, p.delete_local);
    return p;
  }
  if (!local && !cloud) {
    p.exists = false;
    return p;
  }
  if (!local || !cloud) {
    const auto& present = local ? *local : *cloud;
    if (base && same(present.state, *base)) {
      // Deleted on one side, untouched on the other since they agreed: deleted.
      p.exists = false;
      p.delete_local = local.has_value();
      p.delete_cloud = cloud.has_value();
      return p;
    }
    p.merged = present.state; // changed since (or never agreed): it makes the shadow again
  } else {
    const json* b = base ? &*base : nullptr;
    auto merged = merge_at(b, pending.has_value(), pending ? &*pending : nullptr,
                           side_view{&local->state, &local->metadata, local->timestamp},
                           side_view{&cloud->state, &cloud->metadata, cloud->timestamp});
    p.merged = merged ? std::move(*merged) : json::object();
  }
  auto patch_for = [&](const std::optional<sync_side>& s) -> json {
    if (!s) {
      auto d = state_diff(none, p.merged);
      return d.is_null() ? json::object() : d;
    }
    return state_diff(s->state, p.merged);
  };
  p.local_patch = patch_for(local);
  p.cloud_patch = patch_for(cloud);
  return p;
}

std::optional<sync_side> cloud_side_of(const json& doc) {
  if (!doc.is_object())
    return std::nullopt;
  auto version = doc.find("version");
  if (version == doc.end() || !version->is_number_unsigned())
    return std::nullopt;
  sync_side s;
  s.version = version->get<uint64_t>();
  auto take = [](const json& from, const char* key, json& into) -> bool {
    auto it = from.find(key);
    if (it == from.end() || it->is_null())
      return true;
    if (!it->is_object())
      return false;
    if (!it->empty())
      into[key] = *it;
    return true;
  };
  if (auto state = doc.find("state"); state != doc.end()) {
    if (!state->is_object() || !take(*state, "desired", s.state)
        || !take(*state, "reported", s.state))
      return std::nullopt;
  }
  if (auto meta = doc.find("metadata"); meta != doc.end() && meta->is_object()) {
    if (!take(*meta, "desired", s.metadata) || !take(*meta, "reported", s.metadata))
      return std::nullopt;
  }
  normalize(s.state);
  // The cloud's answer carries the time it was sent, not of its last change: the newest
  // leaf is that change's time (a delete leaves no leaf, see the README).
  s.timestamp = newest(&s.metadata, 0);
  return s;
}

std::optional<sync_side> parse_cloud_document(std::string_view text) {
  auto doc = parse_object(text);
  if (!doc)
    return std::nullopt;
  try {
    return cloud_side_of(*doc);
  } catch (...) {
    return std::nullopt;
  }
}

std::optional<cloud_reply> parse_cloud_reply(std::string_view topic) {
  auto slash = topic.rfind('/');
  if (slash == std::string_view::npos)
    return std::nullopt;
  cloud_reply out;
  out.kind = std::string{topic.substr(slash + 1)};
  auto request = topic.substr(0, slash);
  auto t = parse_topic(request);
  if (!t)
    return std::nullopt;
  bool answer = out.kind == "accepted" || out.kind == "rejected";
  bool event = out.kind == "documents" || out.kind == "delta";
  if (!answer && !(event && t->op == verb::update))
    return std::nullopt;
  out.topic = std::move(*t);
  return out;
}

} // namespace grove::shadow
