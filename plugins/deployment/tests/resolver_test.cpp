// The whole-graph resolver (src/resolver.{hpp,cpp}) on hand-made catalogs: diamonds,
// conflicts and their message, backtracking and backjumping, SOFT dependencies, cycles,
// DELETED versions, platforms, the catalog's failure and the step budget.

#define BOOST_TEST_MODULE deployment_resolver
#include <boost/test/unit_test.hpp>

#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "grove/errors.hpp"
#include "resolver.hpp"

using namespace grove::deployment;

namespace {

// A catalog written as {"A": {{"2.0.0", {{"B", "^1.0.0"}}}, ...}}; versions are sorted
// newest first when added.
struct catalog {
  std::map<std::string, std::vector<available_version>> components;
  std::vector<std::string> asked; // the order the resolver looked components up

  available_version& add(const std::string& name, const std::string& version,
                         std::vector<std::pair<std::string, std::string>> deps = {},
                         bool soft = false) {
    available_version v;
    v.version = *parse_semver(version);
    v.text = version;
    for (auto& [dep, range] : deps)
      v.dependencies.push_back(dependency{dep, range, *parse_range(range), soft});
    auto& list = components[name];
    list.push_back(std::move(v));
    std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) {
      return compare(a.version, b.version) > 0;
    });
    for (auto& x : list)
      if (x.text == version)
        return x;
    throw std::logic_error("unreachable");
  }

  catalog_lookup lookup() {
    return [this](const std::string& name) -> caf::expected<const std::vector<available_version>*> {
      asked.push_back(name);
      auto it = components.find(name);
      if (it == components.end())
        return nullptr;
      return &it->second;
    };
  }
};

std::map<std::string, std::vector<requirement>>
roots(std::vector<std::tuple<std::string, std::string, std::string>> reqs) {
  std::map<std::string, std::vector<requirement>> out;
  for (auto& [name, requirer, range] : reqs) {
    auto& list = out[name];
    if (!requirer.empty())
      list.push_back(requirement{requirer, range, *parse_range(range)});
  }
  return out;
}

// name@version of every pick, in the resolver's order.
std::string picks(const std::variant<resolution, resolve_error>& r) {
  if (auto* e = std::get_if<resolve_error>(&r))
    return "error: " + e->message;
  std::string out;
  for (const auto& p : std::get<resolution>(r))
    out += (out.empty() ? "" : " ") + p.name + "@" + p.version->text;
  return out;
}

const resolve_error& error_of(const std::variant<resolution, resolve_error>& r) {
  BOOST_REQUIRE(std::holds_alternative<resolve_error>(r));
  return std::get<resolve_error>(r);
}

const platform_attributes linux_amd64{{"os", "linux"}, {"architecture", "amd64"}};

// `prefix` and `i` as one name (g++ 12's -Wrestrict misfires on "K" + std::to_string(i)).
std::string named(const char* prefix, int i) {
  return std::string{prefix}.append(std::to_string(i));
}

} // namespace

BOOST_AUTO_TEST_CASE(a_diamond_resolves_to_one_version_meeting_both_sides) {
  // main -> A, B; A -> C ^1.0.0 (>=1.1), B -> C <1.3: C 1.2.0 is the newest for both.
  catalog c;
  c.add("A", "1.0.0", {{"C", ">=1.1.0 <2.0.0"}});
  c.add("B", "1.0.0", {{"C", "<1.3.0"}});
  for (auto v : {"1.0.0", "1.1.0", "1.2.0", "1.3.0", "2.0.0"})
    c.add("C", v);
  auto r = resolve(linux_amd64, roots({{"A", "main", "*"}, {"B", "main", "*"}}), c.lookup());
  BOOST_CHECK_EQUAL(picks(r), "C@1.2.0 A@1.0.0 B@1.0.0");
  // C was looked up once although two versions depend on it.
  BOOST_CHECK_EQUAL(std::count(c.asked.begin(), c.asked.end(), "C"), 1);
  // Roots are marked as such, the dependency not.
  for (const auto& p : std::get<resolution>(r))
    BOOST_CHECK_EQUAL(p.root, p.name != "C");
}

BOOST_AUTO_TEST_CASE(a_conflict_names_the_component_each_requirement_and_who_asked) {
  catalog c;
  c.add("A", "1.0.0", {{"C", "^1.0.0"}});
  c.add("B", "1.0.0", {{"C", "^2.0.0"}});
  c.add("C", "1.4.0");
  c.add("C", "2.1.0");
  auto r = resolve(linux_amd64, roots({{"A", "main", "*"}, {"B", "group-1", ">=1.0.0"}}),
                   c.lookup());
  const auto& e = error_of(r);
  BOOST_CHECK(e.kind == resolve_failure::conflict);
  BOOST_CHECK_EQUAL(e.component, "C");
  BOOST_CHECK_EQUAL(e.message, "No version of C satisfies every requirement: A@1.0.0 requires "
                               "'^1.0.0', B@1.0.0 requires '^2.0.0' (versions: 2.1.0, 1.4.0)");
  BOOST_REQUIRE_EQUAL(e.requirements.size(), 2u);
  BOOST_CHECK_EQUAL(e.requirements[0].first, "A@1.0.0");
  BOOST_CHECK_EQUAL(e.requirements[1].second, "^2.0.0");
  // A root's own requirements are named with their requirers.
  auto r2 = resolve(linux_amd64, roots({{"C", "main", ">2.1.0"}, {"C", "fleet", "<3"}}), c.lookup());
  BOOST_CHECK_EQUAL(error_of(r2).message, "No version of C satisfies every requirement: main "
                                          "requires '>2.1.0', fleet requires '<3' (versions: 2.1.0, 1.4.0)");
}

BOOST_AUTO_TEST_CASE(a_newer_pick_whose_dependencies_conflict_is_backtracked) {
  // A 2.0.0 needs C ^2, which B rules out: A falls back to 1.5.0 (C ^1), C to 1.9.0.
  catalog c;
  c.add("A", "2.0.0", {{"C", "^2.0.0"}});
  c.add("A", "1.5.0", {{"C", "^1.0.0"}});
  c.add("B", "1.0.0", {{"C", "<2.0.0"}});
  c.add("C", "1.9.0");
  c.add("C", "2.0.0");
  auto r = resolve(linux_amd64, roots({{"A", "main", "*"}, {"B", "main", "*"}}), c.lookup());
  BOOST_CHECK_EQUAL(picks(r), "C@1.9.0 A@1.5.0 B@1.0.0");
  // Deeper: B's newest needs D 2.x, whose only version needs C ^3 (none): B drops to 1.0.0.
  catalog d;
  d.add("A", "1.0.0", {{"B", "*"}});
  d.add("B", "2.0.0", {{"D", "^2.0.0"}});
  d.add("B", "1.0.0", {{"D", "^1.0.0"}});
  d.add("D", "2.0.0", {{"C", "^3.0.0"}});
  d.add("D", "1.0.0", {{"C", "^1.0.0"}});
  d.add("C", "1.0.0");
  auto r2 = resolve(linux_amd64, roots({{"A", "", ""}}), d.lookup());
  BOOST_CHECK_EQUAL(picks(r2), "C@1.0.0 D@1.0.0 B@1.0.0 A@1.0.0");
}

BOOST_AUTO_TEST_CASE(a_failure_no_earlier_pick_causes_ends_the_search_at_once) {
  // 12 roots of 20 versions each, then one that is not in the catalog: plain
  // backtracking would try 20^12 combinations; backjumping tries one per root.
  catalog c;
  auto want = roots({});
  for (int i = 0; i < 12; ++i) {
    auto name = named("R", 10 + i);
    for (int v = 0; v < 20; ++v)
      c.add(name, "1." + std::to_string(v) + ".0");
    want[name];
  }
  c.add("S", "1.0.0", {{"Zmissing", "^1.0.0"}});
  want["S"];
  auto r = resolve(linux_amd64, want, c.lookup(), 10000);
  const auto& e = error_of(r);
  BOOST_CHECK(e.kind == resolve_failure::not_found);
  BOOST_CHECK_EQUAL(e.component, "Zmissing");
  BOOST_CHECK_EQUAL(e.message, "Component Zmissing not found (S@1.0.0 requires '^1.0.0')");
}

BOOST_AUTO_TEST_CASE(a_soft_dependency_binds_like_a_hard_one_and_keeps_its_type) {
  catalog c;
  c.add("A", "1.0.0", {{"L", "~1.2.0"}}, true);
  for (auto v : {"1.1.0", "1.2.0", "1.2.7", "1.3.0"})
    c.add("L", v);
  auto r = resolve(linux_amd64, roots({{"A", "main", "^1"}}), c.lookup());
  BOOST_CHECK_EQUAL(picks(r), "L@1.2.7 A@1.0.0");
  const auto& a = std::get<resolution>(r).back();
  BOOST_REQUIRE_EQUAL(a.version->dependencies.size(), 1u);
  BOOST_CHECK(a.version->dependencies[0].soft);
  // A SOFT dependency that cannot be met fails the resolution like a HARD one.
  c.components["L"].clear();
  c.add("L", "2.0.0");
  BOOST_CHECK(error_of(resolve(linux_amd64, roots({{"A", "main", "^1"}}), c.lookup())).kind
              == resolve_failure::conflict);
}

BOOST_AUTO_TEST_CASE(a_dependency_cycle_is_reported_with_its_path) {
  catalog c;
  c.add("A", "1.0.0", {{"B", "*"}});
  c.add("B", "1.0.0", {{"C", "*"}});
  c.add("C", "1.0.0", {{"A", "^1.0.0"}});
  auto r = resolve(linux_amd64, roots({{"A", "main", "*"}}), c.lookup());
  const auto& e = error_of(r);
  BOOST_CHECK(e.kind == resolve_failure::cycle);
  BOOST_CHECK_EQUAL(e.message, "Dependency cycle: A@1.0.0 -> B@1.0.0 -> C@1.0.0 -> A@1.0.0");
}

BOOST_AUTO_TEST_CASE(deleted_versions_are_never_picked) {
  catalog c;
  c.add("A", "1.0.0");
  c.add("A", "1.1.0").deleted = true;
  c.add("B", "1.0.0", {{"A", "^1.0.0"}});
  BOOST_CHECK_EQUAL(picks(resolve(linux_amd64, roots({{"B", "main", "*"}}), c.lookup())),
                    "A@1.0.0 B@1.0.0");
  // Only a DELETED version meets the requirement: a conflict, not the deleted one.
  auto r = resolve(linux_amd64, roots({{"A", "main", ">=1.1.0"}}), c.lookup());
  BOOST_CHECK(error_of(r).kind == resolve_failure::conflict);
  // Every version DELETED: nothing can run.
  c.components["A"][1].deleted = true;
  auto r2 = resolve(linux_amd64, roots({{"A", "main", "*"}}), c.lookup());
  BOOST_CHECK(error_of(r2).kind == resolve_failure::no_platform);
}

BOOST_AUTO_TEST_CASE(platform_values_may_be_regular_expressions) {
  // Greengrass' `/regex/` form matches the device's whole value.
  catalog c;
  c.add("A", "2.0.0").platforms = {{{"os", "linux"}, {"architecture", "/aarch64|arm.*/"}}};
  c.add("A", "1.0.0").platforms = {{{"os", "/lin.x/"}}};
  c.add("A", "0.5.0").platforms = {{{"os", "/(/"}}}; // does not compile: matches nothing
  auto pick = [&](platform_attributes p) {
    return picks(resolve(std::move(p), roots({{"A", "main", "*"}}), c.lookup()));
  };
  BOOST_CHECK_EQUAL(pick({{"os", "linux"}, {"architecture", "armv7l"}}), "A@2.0.0");
  BOOST_CHECK_EQUAL(pick({{"os", "linux"}, {"architecture", "aarch64"}}), "A@2.0.0");
  BOOST_CHECK_EQUAL(pick({{"os", "linux"}, {"architecture", "amd64"}}), "A@1.0.0");
  // Whole value only: "arm" inside "notarm64" is no match, nor "linux" in "linux2".
  BOOST_CHECK_EQUAL(pick({{"os", "linux"}, {"architecture", "notarm64"}}), "A@1.0.0");
  auto r = resolve({{"os", "linux2"}}, roots({{"A", "main", "*"}}), c.lookup());
  BOOST_CHECK(error_of(r).kind == resolve_failure::no_platform);
  // The literal "/(/" is no pattern, but still the same string.
  BOOST_CHECK_EQUAL(pick({{"os", "/(/"}}), "A@0.5.0");
}

BOOST_AUTO_TEST_CASE(versions_for_other_platforms_are_skipped) {
  catalog c;
  c.add("A", "1.0.0").platforms = {{{"os", "linux"}, {"architecture", "*"}}};
  c.add("A", "2.0.0").platforms = {{{"os", "windows"}}};
  c.add("A", "1.5.0").platforms = {{{"os", "linux"}, {"architecture", "arm64"}},
                                   {{"os", "darwin"}}};
  c.add("A", "0.9.0"); // no manifests: anywhere
  BOOST_CHECK_EQUAL(picks(resolve(linux_amd64, roots({{"A", "main", "*"}}), c.lookup())), "A@1.0.0");
  BOOST_CHECK_EQUAL(picks(resolve({{"os", "linux"}, {"architecture", "arm64"}},
                                  roots({{"A", "main", "*"}}), c.lookup())),
                    "A@1.5.0");
  BOOST_CHECK_EQUAL(picks(resolve({{"os", "windows"}}, roots({{"A", "main", "*"}}), c.lookup())),
                    "A@2.0.0");
  // A manifest without Platform runs on every device.
  c.add("B", "3.0.0").platforms = {platform_attributes{}};
  BOOST_CHECK_EQUAL(picks(resolve({{"os", "qnx"}}, roots({{"B", "main", "*"}}), c.lookup())), "B@3.0.0");
  c.components["A"].pop_back(); // 0.9.0, the one for anywhere
  auto r = resolve({{"os", "qnx"}}, roots({{"A", "main", "*"}}), c.lookup());
  BOOST_CHECK(error_of(r).kind == resolve_failure::no_platform);
  BOOST_CHECK_EQUAL(error_of(r).message,
                    "No version of A that is not DELETED runs on platform {\"os\":\"qnx\"}");
}

BOOST_AUTO_TEST_CASE(a_missing_root_a_failing_catalog_and_the_step_budget) {
  catalog c;
  auto r = resolve(linux_amd64, roots({{"Nope", "main", "*"}}), c.lookup());
  BOOST_CHECK(error_of(r).kind == resolve_failure::not_found);
  BOOST_CHECK_EQUAL(error_of(r).message, "Component Nope not found (main requires '*')");
  catalog_lookup broken = [](const std::string&) -> caf::expected<const std::vector<available_version>*> {
    return grove::make_error(grove::errc::system_error, "disk I/O error");
  };
  auto r2 = resolve(linux_amd64, roots({{"A", "main", "*"}}), broken);
  BOOST_CHECK(error_of(r2).kind == resolve_failure::catalog);
  BOOST_CHECK(error_of(r2).cause);
  // A long chain with a budget smaller than it: the search stops and says so.
  catalog chain;
  for (int i = 0; i < 50; ++i)
    chain.add(named("N", i), "1.0.0", {{named("N", i + 1), "*"}});
  chain.add("N50", "1.0.0");
  BOOST_CHECK(error_of(resolve(linux_amd64, roots({{"N0", "", ""}}), chain.lookup(), 20)).kind
              == resolve_failure::too_complex);
  auto full = resolve(linux_amd64, roots({{"N0", "", ""}}), chain.lookup());
  BOOST_REQUIRE(std::holds_alternative<resolution>(full));
  BOOST_CHECK_EQUAL(std::get<resolution>(full).front().name, "N50"); // dependencies first
}

BOOST_AUTO_TEST_CASE(recipes_are_described_for_the_resolver) {
  auto recipe = nlohmann::json::parse(R"({
    "ComponentName": "X", "ComponentVersion": "1.2.3",
    "ComponentDependencies": {"H": {"VersionRequirement": ">=1.0.0 <2.0.0"},
                              "S": {"DependencyType": "SOFT"}},
    "Manifests": [{"Platform": {"os": "linux"}}, {"Lifecycle": {}}]})");
  auto v = describe_version(recipe, "1.2.3", false);
  BOOST_CHECK_EQUAL(v.version.str(), "1.2.3");
  BOOST_REQUIRE_EQUAL(v.dependencies.size(), 2u);
  BOOST_CHECK_EQUAL(v.dependencies[0].name, "H");
  BOOST_CHECK(!v.dependencies[0].soft);
  BOOST_CHECK(!v.dependencies[0].range.satisfies(*parse_semver("2.0.0")));
  BOOST_CHECK_EQUAL(v.dependencies[1].range_text, "*");
  BOOST_CHECK(v.dependencies[1].soft);
  BOOST_REQUIRE_EQUAL(v.platforms.size(), 2u);
  BOOST_CHECK(runs_on(v, {{"os", "linux"}}));
  BOOST_CHECK(runs_on(v, {{"os", "anything"}})); // the second manifest has no Platform
}

BOOST_AUTO_TEST_CASE(random_graphs_resolve_exactly_when_a_brute_force_finds_an_answer) {
  // The prunings (backjumping, skipped look-alikes, learned nogoods) must never lose an
  // answer nor give a wrong one: 400 small random catalogs (6 components x 4 versions,
  // dependencies on higher-numbered components, random ranges, some DELETED versions),
  // each checked against every assignment there is.
  std::mt19937 rng{1402};
  const char* ranges[] = {"*", "^1.0.0", "^2.0.0", "<2.0.0", ">=1.1.0", "~1.1.0", ">=2.1.0", "1.0.0 || 2.1.0"};
  const char* versions[] = {"1.0.0", "1.1.0", "2.0.0", "2.1.0"};
  const int n = 6;
  int solvable = 0;
  for (int round = 0; round < 400; ++round) {
    catalog c;
    for (int k = 0; k < n; ++k)
      for (auto ver : versions) {
        if (rng() % 5 == 0)
          continue; // not every version exists
        std::vector<std::pair<std::string, std::string>> deps;
        for (int d = k + 1; d < n; ++d)
          if (rng() % 3 == 0)
            deps.emplace_back(named("K", d), ranges[rng() % 8]);
        c.add(named("K", k), ver, deps).deleted = rng() % 10 == 0;
      }
    auto want = roots({{"K0", "main", ranges[rng() % 8]}, {"K1", "main", ranges[rng() % 8]}});
    // Brute force: each component absent or at one of its versions.
    std::vector<const std::vector<available_version>*> lists;
    for (int k = 0; k < n; ++k)
      lists.push_back(&c.components[named("K", k)]);
    std::vector<int> pick(n, -1);
    bool exists = false;
    std::function<void(int)> walk = [&](int k) {
      if (exists)
        return;
      if (k == n) {
        auto at = [&](const std::string& name) -> const available_version* {
          int idx = std::stoi(name.substr(1));
          return pick[idx] < 0 ? nullptr : &(*lists[idx])[pick[idx]];
        };
        for (auto& [name, reqs] : want) {
          auto* v = at(name);
          if (!v)
            return;
          for (auto& r : reqs)
            if (!r.range.satisfies(v->version))
              return;
        }
        for (int i = 0; i < n; ++i) {
          if (pick[i] < 0)
            continue;
          const auto& v = (*lists[i])[pick[i]];
          if (v.deleted)
            return;
          for (const auto& d : v.dependencies) {
            auto* w = at(d.name);
            if (!w || !d.range.satisfies(w->version))
              return;
          }
        }
        exists = true;
        return;
      }
      for (int p = -1; p < static_cast<int>(lists[k]->size()); ++p) {
        pick[k] = p;
        walk(k + 1);
      }
      pick[k] = -1;
    };
    walk(0);
    auto got = resolve(linux_amd64, want, c.lookup());
    BOOST_CHECK_MESSAGE(std::holds_alternative<resolution>(got) == exists,
                        "round " << round << ": brute force " << exists << ", resolver " << picks(got));
    if (auto* res = std::get_if<resolution>(&got)) {
      ++solvable;
      std::map<std::string, const available_version*> by;
      for (const auto& p : *res)
        by[p.name] = p.version;
      for (const auto& p : *res) {
        BOOST_CHECK(!p.version->deleted);
        for (const auto& d : p.version->dependencies)
          BOOST_CHECK(by.count(d.name) && d.range.satisfies(by[d.name]->version));
      }
      for (auto& [name, reqs] : want)
        for (auto& r : reqs)
          BOOST_CHECK(by.count(name) && r.range.satisfies(by[name]->version));
    }
  }
  // Both outcomes were exercised.
  BOOST_TEST_MESSAGE(solvable << " of 400 solvable");
  BOOST_CHECK(solvable > 50 && solvable < 350);
}
