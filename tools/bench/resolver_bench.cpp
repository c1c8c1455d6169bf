// resolver_bench: the deployment plugin's whole-graph resolver (plugins/deployment/src/
// resolver.hpp) on a generated catalog of COMPONENTS x VERSIONS (default 500 x 20, issue
// 14's target: <= 50 ms), against a peer in the same run: a plain newest-per-component pass
// over the same catalog (platform and DELETED checks, no requirements, no dependencies).
//
// The graph: component k's versions depend on three components of higher index (so no
// cycles), 1.x versions on `^1.0.0` ranges, 2.x versions on `^2.0.0` or `>=1.4.0`, and one
// component in eight's 2.x versions on `<2.0.0`: a newest pick whose dependencies clash
// with another's is backtracked (all 1.x always resolves). Every 25th component is a root.
// Also timed: the same graph with one root requiring a version nobody has (the conflict
// answer), and building the catalog from recipe JSON (what ResolveComponentCandidates
// does per request before resolving).
//
// Usage: resolver_bench [COMPONENTS] [VERSIONS] [REPEAT]; prints one JSON object.

#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_stats.hpp"
#include "resolver.hpp"

using namespace grove::deployment;
using grove::bench::clock_type;
using nlohmann::json;

namespace {

std::string name_of(int k) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "com.example.C%03d", k);
  return buf;
}

std::string version_of(int i, int versions) {
  int half = versions / 2;
  return i < half ? "1." + std::to_string(i) + ".0" : "2." + std::to_string(i - half) + ".0";
}

// The recipes, as JSON (the store's form).
std::vector<std::vector<json>> make_recipes(int components, int versions) {
  std::mt19937 rng{14};
  std::vector<std::vector<json>> out(static_cast<size_t>(components));
  for (int k = 0; k < components; ++k) {
    // The same three dependencies for every version of k (ranges differ by major).
    std::vector<int> deps;
    for (int d = 0; d < 3 && k + 1 < components; ++d)
      deps.push_back(k + 1 + static_cast<int>(rng() % std::min(40u, static_cast<unsigned>(components - k - 1))));
    bool clasher = k % 8 == 3;
    for (int i = 0; i < versions; ++i) {
      auto v = version_of(i, versions);
      bool two = v[0] == '2';
      json r = {{"RecipeFormatVersion", "2020-01-25"},
                {"ComponentName", name_of(k)},
                {"ComponentVersion", v},
                {"Manifests", json::array({{{"Platform", {{"os", "linux"}}}, {"Lifecycle", json::object()}}})}};
      for (size_t d = 0; d < deps.size(); ++d) {
        std::string range = !two ? "^1.0.0" : clasher && d == 0 ? "<2.0.0" : d == 2 ? ">=1.4.0" : "^2.0.0";
        r["ComponentDependencies"][name_of(deps[d])] = {{"VersionRequirement", range},
                                                        {"DependencyType", d == 1 ? "SOFT" : "HARD"}};
      }
      out[static_cast<size_t>(k)].push_back(std::move(r));
    }
  }
  return out;
}

using catalog_t = std::map<std::string, std::vector<available_version>>;

catalog_t make_catalog(const std::vector<std::vector<json>>& recipes) {
  catalog_t out;
  for (const auto& versions : recipes) {
    auto& list = out[versions.front()["ComponentName"].get<std::string>()];
    for (auto it = versions.rbegin(); it != versions.rend(); ++it) // newest first
      list.push_back(describe_version(*it, (*it)["ComponentVersion"].get<std::string>(), false));
  }
  return out;
}

double median(std::vector<double> v) {
  return grove::bench::pct(std::move(v), 0.5);
}

} // namespace

int main(int argc, char** argv) {
  int components = argc > 1 ? std::atoi(argv[1]) : 500;
  int versions = argc > 2 ? std::atoi(argv[2]) : 20;
  int repeat = argc > 3 ? std::atoi(argv[3]) : 15;
  if (components < 2 || versions < 2 || repeat < 1) {
    std::fprintf(stderr, "usage: resolver_bench [COMPONENTS>=2] [VERSIONS>=2] [REPEAT>=1]\n");
    return 2;
  }
  auto recipes = make_recipes(components, versions);
  std::vector<double> build_ms;
  catalog_t catalog;
  for (int r = 0; r < 3; ++r) {
    auto t0 = clock_type::now();
    catalog = make_catalog(recipes);
    build_ms.push_back(grove::bench::us_since(t0) / 1000);
  }
  catalog_lookup lookup = [&](const std::string& name) -> caf::expected<const std::vector<available_version>*> {
    auto it = catalog.find(name);
    return it == catalog.end() ? nullptr : &it->second;
  };
  platform_attributes platform{{"os", "linux"}, {"architecture", "amd64"}};
  std::map<std::string, std::vector<requirement>> roots;
  for (int k = 0; k < components; k += 25)
    roots[name_of(k)].push_back(requirement{"bench", "*", *parse_range("*")});
  auto conflicting = roots;
  auto last = name_of(components - 1);
  conflicting[last].push_back(requirement{"bench", ">=9.0.0", *parse_range(">=9.0.0")});

  std::vector<double> resolve_ms, peer_ms, conflict_ms;
  size_t resolved = 0, downgraded = 0;
  bool valid = true;
  std::string conflict_message;
  for (int r = 0; r < repeat; ++r) {
    // Peer: newest usable version of every component, nothing else.
    auto t0 = clock_type::now();
    size_t picked = 0;
    for (const auto& [name, list] : catalog)
      for (const auto& v : list)
        if (!v.deleted && runs_on(v, platform)) {
          picked += v.version.major;
          break;
        }
    peer_ms.push_back(grove::bench::us_since(t0) / 1000);
    if (picked == 0)
      valid = false;

    t0 = clock_type::now();
    auto got = resolve(platform, roots, lookup);
    resolve_ms.push_back(grove::bench::us_since(t0) / 1000);
    if (auto* e = std::get_if<resolve_error>(&got)) {
      std::fprintf(stderr, "resolver_bench: %s\n", e->message.c_str());
      return 1;
    }
    const auto& res = std::get<resolution>(got);
    resolved = res.size();
    // Check the answer: every dependency of every pick met by the pick of it.
    std::map<std::string, const available_version*> by_name;
    downgraded = 0;
    for (const auto& p : res) {
      by_name[p.name] = p.version;
      downgraded += p.version != &catalog.at(p.name).front();
    }
    for (const auto& p : res)
      for (const auto& d : p.version->dependencies)
        if (!by_name.count(d.name) || !d.range.satisfies(by_name[d.name]->version))
          valid = false;

    t0 = clock_type::now();
    auto bad = resolve(platform, conflicting, lookup);
    conflict_ms.push_back(grove::bench::us_since(t0) / 1000);
    if (auto* e = std::get_if<resolve_error>(&bad))
      conflict_message = e->message.substr(0, 200);
    else
      valid = false;
  }
  double res = median(resolve_ms), peer = median(peer_ms);
  json out = {{"bench", "resolver_bench"},
              {"components", components},
              {"versions_per_component", versions},
              {"repeat", repeat},
              {"roots", roots.size()},
              {"resolved_components", resolved},
              {"picked_below_newest", downgraded},
              {"answer_checked", valid},
              {"resolve_ms_p50", grove::bench::round2(res)},
              {"resolve_ms_max", grove::bench::round2(*std::max_element(resolve_ms.begin(), resolve_ms.end()))},
              {"peer_newest_per_component_ms_p50", grove::bench::round2(peer * 1000) / 1000},
              {"ratio_resolve_over_peer", grove::bench::round2(peer > 0 ? res / peer : 0)},
              {"conflict_ms_p50", grove::bench::round2(median(conflict_ms))},
              {"conflict_message", conflict_message},
              {"catalog_from_recipes_ms_p50", grove::bench::round2(median(build_ms))},
              {"target_ms", 50},
              {"meets_target", valid && res <= 50}};
  std::printf("%s\n", out.dump().c_str());
  return valid ? 0 : 1;
}
