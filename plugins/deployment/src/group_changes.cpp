#include "group_changes.hpp"

#include <functional>
#include <set>

#include <yaml-cpp/yaml.h>

#include "grove/errors.hpp"
#include "grove/kernel/config.hpp"
#include "grove/kernel/group.hpp"
#include "http.hpp"
#include "recipe.hpp"

namespace grove::deployment {

namespace {

using changes = std::map<std::string, group_changes::change>;

std::string key_of(const group::Function& f) {
  return f.name();
}

std::string key_of(const group::Resource& r) {
  return r.id();
}

std::string key_of(const group::Subscription& s) {
  return s.id();
}

// A config as its content, not its spelling: an edit of the group file rewrites every
// entry's YAML (another style, other quotes) without changing it.
std::string content(const std::string& config_yaml) {
  try {
    if (auto j = yaml_json(YAML::Load(config_yaml)))
      return j->dump();
  } catch (const std::exception&) { // compared as written
  }
  return config_yaml;
}

std::string canonical(const group::Function& f) {
  return f.name() + '\n' + content(f.config_yaml());
}

std::string canonical(const group::Resource& r) {
  return r.id() + '\n' + content(r.config_yaml());
}

std::string canonical(const group::Subscription& s) {
  return s.SerializeAsString();
}

// By key: the entry's canonical form and the entry (serialized).
template <class Entry>
std::map<std::string, std::pair<std::string, std::string>>
by_key(const google::protobuf::RepeatedPtrField<Entry>& list) {
  std::map<std::string, std::pair<std::string, std::string>> out;
  for (const auto& e : list)
    out.emplace(key_of(e), std::pair{canonical(e), e.SerializeAsString()});
  return out;
}

template <class Entry>
Entry parsed(const std::string& bytes) {
  Entry e;
  e.ParseFromString(bytes);
  return e;
}

template <class Entry>
void record_list(changes& out, const google::protobuf::RepeatedPtrField<Entry>& read,
                 const google::protobuf::RepeatedPtrField<Entry>& set) {
  auto r = by_key(read);
  auto s = by_key(set);
  auto note = [&](const std::string& key) {
    auto was = r.find(key);
    auto is = s.find(key);
    bool had = was != r.end(), has = is != s.end();
    if (had == has && (!had || was->second.first == is->second.first))
      return;
    auto [it, first] = out.try_emplace(key);
    auto& c = it->second;
    // Another change between two of the deployment's (its version is what the read
    // has): that is the "before" an undo must put back, not the deployment's first.
    std::optional<std::string> read_state;
    if (had)
      read_state = was->second.first;
    if (first || read_state != c.after) {
      c.before.reset();
      if (had)
        c.before = was->second.second;
    }
    c.after.reset();
    if (has)
      c.after = is->second.first;
    // Back where it started (added then removed, changed then changed back): nothing
    // for an undo to do.
    if ((!c.before && !c.after)
        || (c.before && c.after && canonical(parsed<Entry>(*c.before)) == *c.after))
      out.erase(it);
  };
  for (const auto& kv : r)
    note(kv.first);
  for (const auto& kv : s)
    if (!r.count(kv.first))
      note(kv.first);
}

// `list` (the group in force) with the changes undone where nobody changed them since.
// `refuse` (may be empty) says why an entry the deployment removed must stay out.
// Returns how many entries it put back as they were.
template <class Entry>
size_t undo_list(google::protobuf::RepeatedPtrField<Entry>& list, const changes& done,
                 const std::string& what, std::vector<std::string>& notes,
                 std::vector<std::string>* kept,
                 const std::function<std::string(const Entry&)>& refuse = {}) {
  size_t undone = 0;
  google::protobuf::RepeatedPtrField<Entry> out;
  std::set<std::string> seen;
  auto others = [&](const std::string& key, const char* how) {
    notes.push_back(what + " '" + key + "' was " + how + " by another change after the "
                    "deployment changed it: that version is kept");
    if (kept)
      kept->push_back(key);
  };
  for (const auto& e : list) {
    auto key = key_of(e);
    seen.insert(key);
    auto c = done.find(key);
    if (c == done.end()) {
      *out.Add() = e; // not the deployment's
      continue;
    }
    if (!c->second.after || canonical(e) != *c->second.after) {
      others(key, c->second.after ? "changed" : "added again");
      *out.Add() = e;
      continue;
    }
    ++undone;
    if (c->second.before) // changed by the deployment: as it was (else added: removed)
      *out.Add() = parsed<Entry>(*c->second.before);
  }
  for (const auto& [key, c] : done) {
    if (seen.count(key))
      continue;
    if (c.after) // the deployment left it; someone removed it since
      others(key, "removed");
    else if (c.before) { // removed by the deployment: back
      auto e = parsed<Entry>(*c.before);
      if (auto why = refuse ? refuse(e) : std::string{}; !why.empty()) {
        notes.push_back(what + " '" + key + "' the deployment removed is not put back: "
                        + why);
        continue;
      }
      *out.Add() = std::move(e);
      ++undone;
    }
  }
  list.Swap(&out);
  return undone;
}

// `read` with each entry a change meant to make (read → intended) that `now` has as
// intended: what of a change whose answer never came is in force. Counts those in
// `applied`, and every entry the change meant in `meant`.
template <class Entry>
void applied_list(const google::protobuf::RepeatedPtrField<Entry>& read,
                  const google::protobuf::RepeatedPtrField<Entry>& intended,
                  const google::protobuf::RepeatedPtrField<Entry>& now,
                  google::protobuf::RepeatedPtrField<Entry>& out, size_t& applied,
                  size_t& meant) {
  auto r = by_key(read), i = by_key(intended), n = by_key(now);
  auto result = r;
  auto same = [](auto a, auto b, const auto& ma, const auto& mb) {
    bool has_a = a != ma.end(), has_b = b != mb.end();
    return has_a == has_b && (!has_a || a->second.first == b->second.first);
  };
  std::set<std::string> keys;
  for (const auto& kv : r)
    keys.insert(kv.first);
  for (const auto& kv : i)
    keys.insert(kv.first);
  for (const auto& key : keys) {
    auto want = i.find(key);
    if (same(r.find(key), want, r, i))
      continue;
    ++meant;
    if (!same(n.find(key), want, n, i))
      continue;
    ++applied;
    if (want == i.end())
      result.erase(key);
    else
      result[key] = want->second;
  }
  out.Clear();
  for (const auto& kv : result)
    *out.Add() = parsed<Entry>(kv.second.second);
}

// The entries of `read` and `intended` that differ (the ones a change means), into
// `before` and `after`.
template <class Entry>
void meant_list(const google::protobuf::RepeatedPtrField<Entry>& read,
                const google::protobuf::RepeatedPtrField<Entry>& intended,
                google::protobuf::RepeatedPtrField<Entry>& before,
                google::protobuf::RepeatedPtrField<Entry>& after) {
  auto r = by_key(read), i = by_key(intended);
  for (const auto& [key, e] : r)
    if (auto w = i.find(key); w == i.end() || w->second.first != e.first)
      *before.Add() = parsed<Entry>(e.second);
  for (const auto& [key, e] : i)
    if (auto was = r.find(key); was == r.end() || was->second.first != e.first)
      *after.Add() = parsed<Entry>(e.second);
}

nlohmann::json changes_json(const changes& c) {
  auto text = [](const std::optional<std::string>& s) {
    return s ? nlohmann::json(base64_encode(*s)) : nlohmann::json(nullptr);
  };
  auto out = nlohmann::json::object();
  for (const auto& [key, ch] : c)
    out[key] = {{"before", text(ch.before)}, {"after", text(ch.after)}};
  return out;
}

caf::expected<changes> changes_of(const nlohmann::json& j, const char* what) {
  auto bad = [&] {
    return make_error(errc::malformed,
                      std::string{"the journaled group changes' "} + what + " are malformed");
  };
  if (!j.is_object())
    return bad();
  changes out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it->is_object())
      return bad();
    group_changes::change ch;
    for (auto [name, field] : {std::pair{"before", &ch.before}, std::pair{"after", &ch.after}}) {
      auto v = it->find(name);
      if (v == it->end() || v->is_null())
        continue;
      std::string bytes;
      if (!v->is_string() || !base64_decode(v->get<std::string>(), bytes))
        return bad();
      *field = std::move(bytes);
    }
    out.emplace(it.key(), std::move(ch));
  }
  return out;
}

} // namespace

size_t group_changes::record_if_applied(const group::Group& read, const group::Group& intended,
                                        const group::Group& now, size_t* meant,
                                        bool restarted) {
  size_t applied = 0, all = 0;
  auto g = read;
  applied_list(read.functions(), intended.functions(), now.functions(), *g.mutable_functions(),
               applied, all);
  applied_list(read.resources(), intended.resources(), now.resources(), *g.mutable_resources(),
               applied, all);
  applied_list(read.subscriptions(), intended.subscriptions(), now.subscriptions(),
               *g.mutable_subscriptions(), applied, all);
  if (meant)
    *meant = all;
  // The kernel bumps the version on every change it applies: none since the read, none
  // of this change either (an identical group is no sign that it applied). A set is a
  // compare-and-set, applied whole or not at all: some of its entries as asked and others
  // not means another change made those (an operator removing the same entry, adding an
  // identical one), so nothing is the deployment's.
  if ((!restarted && now.version() == read.version()) || applied != all)
    return 0;
  record(read, g);
  return applied;
}

void group_changes::intend(const group::Group& read, std::string document) {
  // The meant entries alone decide (record_if_applied compares nothing else), so the
  // journal keeps those rather than the whole group and document.
  group::Group before, after;
  before.set_version(read.version());
  // A document the kernel refuses never applies: nothing meant, nothing recorded.
  if (auto intended = grove::parse_group(document, "the group a deployment set")) {
    meant_list(read.functions(), intended->functions(), *before.mutable_functions(),
               *after.mutable_functions());
    meant_list(read.resources(), intended->resources(), *before.mutable_resources(),
               *after.mutable_resources());
    meant_list(read.subscriptions(), intended->subscriptions(),
               *before.mutable_subscriptions(), *after.mutable_subscriptions());
  }
  pending_.emplace(std::move(before), std::move(after));
}

bool group_changes::pending() const {
  return pending_.has_value();
}

group_changes group_changes::pending_part() const {
  group_changes out;
  out.pending_ = pending_;
  return out;
}

void group_changes::forget_pending() {
  pending_.reset();
}

size_t group_changes::settle(const group::Group& now, bool restarted, size_t* meant) {
  if (meant)
    *meant = 0;
  if (!pending_)
    return 0;
  auto [before, after] = std::move(*pending_);
  pending_.reset();
  return record_if_applied(before, after, now, meant, restarted);
}

nlohmann::json group_changes::to_json() const {
  nlohmann::json out = {{"functions", changes_json(functions_)},
                        {"resources", changes_json(resources_)},
                        {"subscriptions", changes_json(subscriptions_)}};
  if (pending_)
    out["pending"] = {{"before", base64_encode(pending_->first.SerializeAsString())},
                      {"after", base64_encode(pending_->second.SerializeAsString())}};
  return out;
}

caf::expected<group_changes> group_changes::from_json(const nlohmann::json& j,
                                                      std::string* dropped) {
  if (!j.is_object())
    return make_error(errc::malformed, "the journaled group changes are no object");
  group_changes out;
  for (auto [what, field] : {std::pair{"functions", &out.functions_},
                             std::pair{"resources", &out.resources_},
                             std::pair{"subscriptions", &out.subscriptions_}}) {
    auto c = changes_of(j.value(what, nlohmann::json::object()), what);
    if (!c)
      return std::move(c.error());
    *field = std::move(*c);
  }
  if (auto p = j.find("pending"); p != j.end()) {
    auto bytes = [&](const char* name, std::string& into) {
      auto v = p->is_object() ? p->value(name, nlohmann::json{}) : nlohmann::json{};
      return v.is_string() && base64_decode(v.get<std::string>(), into);
    };
    std::string a, b;
    group::Group before, after;
    if (bytes("before", a) && bytes("after", b) && before.ParseFromString(a)
        && after.ParseFromString(b)) {
      out.pending_.emplace(std::move(before), std::move(after));
    } else if (bytes("read", a) && bytes("document", b) && before.ParseFromString(a)) {
      out.intend(before, std::move(b)); // as journals before the meant entries wrote it
    } else if (dropped) {
      *dropped = "the journaled pending change of the group is malformed";
    }
  }
  return out;
}

void group_changes::record(const group::Group& read, const group::Group& set) {
  pending_.reset(); // the set's answer came: it is this
  record_list(functions_, read.functions(), set.functions());
  record_list(resources_, read.resources(), set.resources());
  record_list(subscriptions_, read.subscriptions(), set.subscriptions());
}

bool group_changes::empty() const {
  return size() == 0;
}

size_t group_changes::size() const {
  return functions_.size() + resources_.size() + subscriptions_.size();
}

group::Group group_changes::undo(const group::Group& now, std::vector<std::string>& notes,
                                 std::vector<std::string>& kept, size_t* undone) const {
  auto g = now;
  auto k0 = kept.size();
  size_t n = undo_list(*g.mutable_functions(), functions_, "function", notes, &kept);
  std::set<std::string> others{kept.begin() + k0, kept.end()};
  n += undo_list(*g.mutable_resources(), resources_, "resource", notes, &kept);
  // A route the deployment took out with its function must not come back pointing at
  // the function another change made under that name since.
  n += undo_list<group::Subscription>(
    *g.mutable_subscriptions(), subscriptions_, "subscription", notes, nullptr,
    [&](const group::Subscription& s) -> std::string {
      for (const auto& ep : {s.source(), s.target()})
        if (ep.starts_with("function:") && others.count(ep.substr(9)))
          return "it names " + ep + ", another change's function";
      return {};
    });
  if (undone)
    *undone = n;
  // A subscription whose function the undo took out (one added meanwhile naming the
  // deployment's function), or one put back whose function or device is gone since.
  std::set<std::string> functions, devices;
  for (const auto& f : g.functions())
    functions.insert(f.name());
  for (const auto& d : g.devices())
    devices.insert(d.thing());
  auto there = [&](const std::string& ep) {
    if (ep.starts_with("function:"))
      return functions.count(ep.substr(9)) > 0;
    if (ep.starts_with("device:"))
      return devices.count(ep.substr(7)) > 0;
    return true;
  };
  google::protobuf::RepeatedPtrField<group::Subscription> subs;
  for (const auto& s : g.subscriptions()) {
    if (there(s.source()) && there(s.target())) {
      *subs.Add() = s;
      continue;
    }
    notes.push_back("subscription '" + s.id() + "' (" + s.source() + " -> " + s.target()
                    + ") left out: the group no longer has its "
                    + (there(s.source()) ? s.target() : s.source()));
  }
  g.mutable_subscriptions()->Swap(&subs);
  return g;
}

caf::expected<std::string> group_yaml(const group::Group& g) {
  try {
    return grove::to_yaml(grove::group_document(g));
  } catch (const std::exception& e) { // a config the kernel gave that is no YAML
    return make_error(errc::invalid_config,
                      std::string{"the group could not be written: "} + e.what());
  }
}

} // namespace grove::deployment
