#include "resolver.hpp"

#include <algorithm>
#include <optional>
#include <unordered_map>

namespace grove::deployment {

using nlohmann::json;

bool runs_on(const available_version& v, const platform_attributes& platform) {
  if (v.platforms.empty())
    return true;
  return std::any_of(v.platforms.begin(), v.platforms.end(),
                     [&](const platform_attributes& p) { return platform_matches(p, platform); });
}

available_version describe_version(const json& recipe, const std::string& text, bool deleted) {
  available_version out;
  out.version = parse_semver(text).value_or(semver{});
  out.text = text;
  out.deleted = deleted;
  if (auto m = recipe.find("Manifests"); m != recipe.end() && m->is_array())
    for (const auto& manifest : *m)
      out.platforms.push_back(platform_of(manifest));
  if (auto d = recipe.find("ComponentDependencies"); d != recipe.end() && d->is_object())
    for (auto it = d->begin(); it != d->end(); ++it) {
      dependency dep;
      dep.name = it.key();
      dep.range_text = "*";
      if (it->is_object()) {
        if (auto vr = it->find("VersionRequirement"); vr != it->end() && vr->is_string())
          dep.range_text = vr->get<std::string>();
        if (auto dt = it->find("DependencyType"); dt != it->end())
          dep.soft = *dt == "SOFT";
      }
      // parse_recipe checked the range; a range that does not parse matches nothing.
      if (auto r = parse_range(dep.range_text))
        dep.range = std::move(*r);
      else
        dep.range.sets = {{comparator{"<", semver{}}}};
      out.dependencies.push_back(std::move(dep));
    }
  return out;
}

namespace {

// The backtracking search. Components are picked in the order they are discovered (the
// roots, then each pick's dependencies), so at depth d every component before order_[d]
// is picked and order_[d] is the next; undoing a pick truncates what it discovered.
class solver {
public:
  solver(const platform_attributes& platform, const catalog_lookup& catalog, size_t max_steps)
    : platform_(platform), catalog_(catalog), max_steps_(max_steps) {
    // Nothing.
  }

  std::variant<resolution, resolve_error>
  run(const std::map<std::string, std::vector<requirement>>& roots) {
    for (const auto& [name, reqs] : roots) {
      auto* n = discover(name);
      if (!n)
        return *failure_;
      n->root = true;
      for (const auto& r : reqs)
        n->reqs.push_back(constraint{&r.requirer, nullptr, nullptr, &r.range, &r.range_text});
    }
    conflict_set conflict;
    if (!solve(0, conflict)) {
      if (!failure_) // cannot happen: every way to fail records why
        fail(resolve_failure::conflict, "", "no resolution");
      return *failure_;
    }
    failure_.reset(); // a dead end on the way is no longer the answer
    return ordered();
  }

private:
  // A requirement on a node: from a root (requirer set) or from a picked version.
  struct node;

  // Depth of a pick → whether its version itself failed (see solve()).
  using conflict_set = std::map<size_t, bool>;

  // Whether two versions of `n` have the same dependencies (names and ranges).
  static bool same_dependencies(const node& n, const available_version* a,
                                const available_version* b) {
    return n.signature[static_cast<size_t>(a - n.versions->data())]
           == n.signature[static_cast<size_t>(b - n.versions->data())];
  }

  struct constraint {
    const std::string* requirer;       // root requirer, or the depending component's name
    const available_version* from;     // the depending version; nullptr for a root
    const node* src;                   // the depending component; nullptr for a root
    const semver_range* range;
    const std::string* range_text;
  };

  // One pick of a nogood: `who` at `version` (or, not `exact`, any version with the
  // same dependencies).
  struct nogood_entry {
    const node* who;
    const available_version* version;
    bool exact;
  };

  struct learned {
    const available_version* version;
    bool exact;
    std::vector<nogood_entry> when;
  };

  static constexpr size_t max_nogoods_per_node = 64;

  struct node {
    std::vector<learned> nogoods;
    const std::vector<available_version>* versions = nullptr;
    // Per version, computed once: not DELETED and runs on the platform; the id of its
    // dependency list (equal ids: equal lists).
    std::vector<char> usable;
    std::vector<uint32_t> signature;
    // Per version, the nodes of its dependencies, looked up the first time it is picked.
    std::vector<std::vector<node*>> dependency_nodes;
    std::vector<constraint> reqs;
    int picked = -1;
    size_t depth = 0;
    bool in_order = false;
    bool root = false;
    const std::string* name = nullptr;
  };

  static const std::vector<available_version>& none() {
    static const std::vector<available_version> empty;
    return empty;
  }

  // The node of `name`, looked up in the catalog the first time and appended to the
  // order when it is not in it; nullptr when the catalog failed (failure_ says why).
  node* discover(const std::string& name) {
    auto [it, fresh] = nodes_.try_emplace(name);
    node& n = it->second;
    if (fresh) {
      n.name = &it->first;
      auto got = catalog_(name);
      if (!got) {
        resolve_error e;
        e.kind = resolve_failure::catalog;
        e.component = name;
        e.message = "the component store failed: " + caf::to_string(got.error());
        e.cause = std::move(got.error());
        failure_ = std::move(e); // replaces a dead end met before
        aborted_ = true;
        return nullptr;
      }
      n.versions = *got ? *got : &none();
      n.dependency_nodes.resize(n.versions->size());
      for (const auto& v : *n.versions) {
        n.usable.push_back(!v.deleted && runs_on(v, platform_));
        std::string key;
        for (const auto& d : v.dependencies)
          key.append(d.name).append(1, '\0').append(d.range_text).append(1, '\0');
        n.signature.push_back(
          signatures_.try_emplace(std::move(key), static_cast<uint32_t>(signatures_.size()))
            .first->second);
      }
    }
    return enlist(&n);
  }

  // Appends `n` to the order when it is not in it.
  node* enlist(node* n) {
    if (!n->in_order) {
      n->in_order = true;
      order_.push_back(n);
    }
    return n;
  }

  static bool usable(const node& n, const available_version& v) {
    return n.usable[static_cast<size_t>(&v - n.versions->data())] != 0;
  }

  static bool meets(const node& n, const available_version& v) {
    return std::all_of(n.reqs.begin(), n.reqs.end(),
                       [&](const constraint& c) { return c.range->satisfies(v.version); });
  }

  bool has_candidate(const node& n) const {
    return std::any_of(n.versions->begin(), n.versions->end(),
                       [&](const available_version& v) { return usable(n, v) && meets(n, v); });
  }

  std::string requirer_of(const constraint& c) const {
    return c.from ? *c.requirer + "@" + c.from->text : *c.requirer;
  }

  // Records why `n` has no version (the first failure is the one reported).
  void fail_at(const node& n) {
    if (failure_)
      return;
    std::vector<std::pair<std::string, std::string>> reqs;
    std::string described;
    for (const auto& c : n.reqs) {
      reqs.emplace_back(requirer_of(c), *c.range_text);
      described += (described.empty() ? "" : ", ") + reqs.back().first + " requires '"
                   + reqs.back().second + "'";
    }
    const auto& name = *n.name;
    if (n.versions->empty()) {
      fail(resolve_failure::not_found, name,
           "Component " + name + " not found" + (described.empty() ? "" : " (" + described + ")"));
    } else if (std::none_of(n.versions->begin(), n.versions->end(),
                            [&](const available_version& v) { return usable(n, v); })) {
      fail(resolve_failure::no_platform, name,
           "No version of " + name + " that is not DELETED runs on platform "
             + json(platform_).dump(-1, ' ', false, json::error_handler_t::replace));
    } else {
      std::string have;
      for (size_t k = 0; k < n.versions->size() && k < 10; ++k)
        have += (k ? ", " : "") + (*n.versions)[k].text;
      fail(resolve_failure::conflict, name,
           "No version of " + name + " satisfies every requirement: " + described
             + " (versions: " + have + (n.versions->size() > 10 ? ", ..." : "") + ")");
    }
    failure_->requirements = std::move(reqs);
  }

  void fail(resolve_failure kind, const std::string& component, std::string message) {
    if (failure_)
      return;
    resolve_error e;
    e.kind = kind;
    e.component = component;
    e.message = std::move(message);
    failure_ = std::move(e);
  }

  // Picks the node at `depth` and, recursively, those after it. On failure `conflict`
  // holds the depths whose picks caused it, each marked true when the picked version
  // itself failed a requirement (false: only the ranges that pick put on its
  // dependencies took part). Two prunings follow from it:
  // - conflict-directed backjumping: a level not in its child's conflict set cannot fix
  //   the child by picking another version, so it returns at once instead of trying them
  //   all (plain backtracking would try every combination above one component no
  //   version fits);
  // - a version whose subtree failed through its dependency ranges alone makes the next
  //   versions with the same dependencies fail alike: they are skipped (a component's
  //   patch releases usually share their dependencies).
  bool solve(size_t depth, conflict_set& conflict) {
    conflict.clear();
    if (depth == order_.size())
      return true;
    node& n = *order_[depth];
    n.depth = depth;
    // Picks whose requirements bound `m` (or made it needed at all).
    auto add_sources = [](conflict_set& to, const node& m, const node* except) {
      for (const auto& c : m.reqs)
        if (c.src && c.src != except)
          to.try_emplace(c.src->depth, false);
    };
    auto merge = [](conflict_set& to, const conflict_set& from) {
      for (const auto& [k, at_fault] : from)
        to[k] = to[k] || at_fault;
    };
    add_sources(conflict, n, nullptr);
    bool tried = false;
    const available_version* failed_alike = nullptr; // failed through its ranges alone
    for (size_t i = 0; i < n.versions->size(); ++i) {
      const auto& v = (*n.versions)[i];
      if (!usable(n, v) || !meets(n, v))
        continue;
      tried = true;
      if (failed_alike && same_dependencies(n, failed_alike, &v))
        continue;
      conflict_set local; // why this version fails
      if (learned_against(n, v, local)) {
        merge(conflict, local);
        continue;
      }
      if (++steps_ > max_steps_) {
        failure_.reset(); // a dead end met before is not why the search stops
        fail(resolve_failure::too_complex, *n.name,
             "resolution gave up after trying " + std::to_string(max_steps_)
               + " versions (at " + *n.name + ")");
        aborted_ = true;
        return false;
      }
      n.picked = static_cast<int>(i);
      auto order_mark = order_.size();
      std::vector<node*> touched;
      bool ok = true;
      auto& dep_nodes = n.dependency_nodes[i];
      for (size_t k = 0; k < v.dependencies.size(); ++k) {
        const auto& dep = v.dependencies[k];
        node* d = k < dep_nodes.size() ? enlist(dep_nodes[k]) : discover(dep.name);
        if (!d)
          return false; // the catalog failed: no point searching on
        if (k == dep_nodes.size())
          dep_nodes.push_back(d);
        d->reqs.push_back(constraint{n.name, &v, &n, &dep.range, &dep.range_text});
        touched.push_back(d);
        // Check ahead: a dependency already picked must still fit, one not picked yet
        // must keep a version that fits.
        bool fits = d->picked >= 0 ? dep.range.satisfies((*d->versions)[d->picked].version)
                                   : has_candidate(*d);
        if (!fits) {
          if (d->picked >= 0)
            local[d->depth] = true; // d's picked version is what fails
          else
            add_sources(local, *d, &n);
          fail_at(*d);
          ok = false;
          break;
        }
      }
      bool jump = false;
      if (!ok) {
        failed_alike = &v; // the check ahead looked at v's ranges only
        learn(n, v, false, local);
      } else {
        conflict_set below;
        if (solve(depth + 1, below))
          return true;
        if (aborted_)
          return false;
        auto self = below.find(depth);
        if (self == below.end()) {
          conflict = std::move(below);
          jump = true;
        } else {
          bool exact = self->second;
          failed_alike = exact ? nullptr : &v;
          below.erase(self);
          local = std::move(below);
          learn(n, v, exact, local);
        }
      }
      if (!jump)
        merge(conflict, local);
      for (auto it = touched.rbegin(); it != touched.rend(); ++it)
        (*it)->reqs.pop_back();
      for (size_t k = order_mark; k < order_.size(); ++k)
        order_[k]->in_order = false;
      order_.resize(order_mark);
      n.picked = -1;
      if (jump)
        return false;
    }
    if (!tried)
      fail_at(n);
    return false;
  }

  // Remembers that `v` of `n` (any version with its dependencies unless `exact`) fails
  // while the picks at the depths of `why` stand: a nogood, valid for the whole search,
  // so a later branch that makes the same picks skips `v` at once instead of exploring
  // its subtree again (backjumping alone forgets it when it undoes the picks).
  void learn(node& n, const available_version& v, bool exact, const conflict_set& why) {
    learned l{&v, exact, {}};
    for (const auto& [k, at_fault] : why) {
      const node* who = order_[k];
      l.when.push_back(nogood_entry{who, &(*who->versions)[who->picked], at_fault});
    }
    if (n.nogoods.size() >= max_nogoods_per_node)
      n.nogoods.erase(n.nogoods.begin()); // the oldest; forgetting one is always sound
    n.nogoods.push_back(std::move(l));
  }

  // Whether a nogood rules `v` of `n` out under the current picks; `why` gets its picks.
  bool learned_against(const node& n, const available_version& v, conflict_set& why) const {
    auto alike = [](const node& m, const available_version* a, const available_version* b,
                    bool exact) { return exact ? a == b : same_dependencies(m, a, b); };
    for (const auto& l : n.nogoods) {
      if (!alike(n, l.version, &v, l.exact))
        continue;
      bool holds = std::all_of(l.when.begin(), l.when.end(), [&](const nogood_entry& e) {
        return e.who->picked >= 0
               && alike(*e.who, e.version, &(*e.who->versions)[e.who->picked], e.exact);
      });
      if (holds) {
        for (const auto& e : l.when)
          why[e.who->depth] = why[e.who->depth] || e.exact;
        return true;
      }
    }
    return false;
  }

  // Dependencies first (a depth-first post-order over the picks, in discovery order); a
  // back edge is a cycle.
  std::variant<resolution, resolve_error> ordered() {
    enum mark : char { white, grey, black };
    std::unordered_map<const node*, mark> marks;
    std::vector<const node*> path;
    resolution out;
    std::function<bool(const node*)> visit = [&](const node* n) -> bool {
      auto& m = marks[n];
      if (m == black)
        return true;
      if (m == grey) {
        std::string cycle;
        auto start = std::find(path.begin(), path.end(), n);
        for (auto it = start; it != path.end(); ++it)
          cycle += *(*it)->name + "@" + (*(*it)->versions)[(*it)->picked].text + " -> ";
        cycle += *n->name + "@" + (*n->versions)[n->picked].text;
        fail(resolve_failure::cycle, *n->name, "Dependency cycle: " + cycle);
        return false;
      }
      m = grey;
      path.push_back(n);
      for (const auto& dep : (*n->versions)[n->picked].dependencies)
        if (!visit(&nodes_.at(dep.name)))
          return false;
      path.pop_back();
      marks[n] = black;
      out.push_back(resolved_component{*n->name, &(*n->versions)[n->picked], n->root});
      return true;
    };
    for (const node* n : order_)
      if (!visit(n))
        return *failure_;
    return out;
  }

  const platform_attributes& platform_;
  const catalog_lookup& catalog_;
  size_t max_steps_;
  size_t steps_ = 0;
  bool aborted_ = false;
  std::unordered_map<std::string, node> nodes_; // element addresses are stable
  std::unordered_map<std::string, uint32_t> signatures_; // dependency list → its id
  std::vector<node*> order_;
  std::optional<resolve_error> failure_;
};

} // namespace

std::variant<resolution, resolve_error>
resolve(const platform_attributes& platform,
        const std::map<std::string, std::vector<requirement>>& roots,
        const catalog_lookup& catalog, size_t max_steps) {
  solver s{platform, catalog, max_steps};
  return s.run(roots);
}

} // namespace grove::deployment
