#include "component_cgroups.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "grove/cgroup.hpp"
#include "grove/errors.hpp"

namespace grove::deployment {

namespace {

namespace fs = std::filesystem;

// The CFS period the quota is a share of (the kernel's default).
constexpr int64_t cfs_period_us = 100000;

} // namespace

caf::expected<std::unique_ptr<component_cgroups>> component_cgroups::open() {
  std::unique_ptr<component_cgroups> cg{new component_cgroups};
  if (::geteuid() != 0)
    return make_error(errc::unsupported, "groved does not run as root (cgroups need it)");
  auto tag = std::string{component_cgroups_prefix} + std::to_string(::getpid());
  auto host = cgroup_host::probe();
  std::string v2_why = host.v2_why;
  if (!host.v2_dir.empty()) {
    const auto& parent = host.v2_dir;
    if (!host.v2_has("memory")) {
      v2_why = parent.string() + " has no memory controller";
    } else {
      bool cpu = host.v2_has("cpu");
      std::string enable = cpu ? "+memory +cpu" : "+memory";
      // The runner kills what the last run left at start.
      cgroup_remove_stale(parent, component_cgroups_prefix, true);
      auto base = parent / tag;
      // function_runtime's sandbox enables its controllers the same way, so either may
      // come first.
      caf::error e = cgroup_enable(parent, enable, true);
      if (!e)
        e = cgroup_mkdir(base);
      if (!e)
        e = cgroup_write(base / "cgroup.subtree_control", enable);
      if (!e) {
        cg->version_ = 2;
        cg->bases_[""] = base;
        cg->cpu_ = cpu;
        return cg;
      }
      v2_why = grove::describe(e);
      ::rmdir(base.c_str());
    }
  }
  // v1: memory is required, cpu optional (a cpus limit is refused without it).
  std::string v1_why;
  for (const char* c : {"memory", "cpu"}) {
    auto parent = host.v1_dir(c);
    if (parent.empty()) {
      if (std::string_view{c} == "memory")
        v1_why = "no v1 memory hierarchy";
      break;
    }
    cgroup_remove_stale(parent, component_cgroups_prefix, true);
    auto base = parent / tag;
    if (auto e = cgroup_mkdir(base)) {
      if (std::string_view{c} == "memory")
        v1_why = grove::describe(e);
      break;
    }
    cg->bases_[c] = base;
  }
  if (!v1_why.empty())
    return make_error(errc::unsupported, "no writable cgroup with the memory controller (v2: "
                                           + v2_why + "; v1: " + v1_why + ")");
  cg->cpu_ = cg->bases_.count("cpu") > 0;
  return cg;
}

component_cgroups::~component_cgroups() {
  // The components were told to stop (SIGTERM, SIGKILL after their grace, by the SDK's
  // supervisor): nothing is killed here. What is still busy stays; a plugin instance
  // reloaded in this groved takes it over (same pid), the next groved removes it.
  for (const auto& [c, base] : bases_) {
    std::error_code ec;
    for (const auto& leaf : fs::directory_iterator{base, ec})
      if (leaf.is_directory(ec))
        ::rmdir(leaf.path().c_str());
    ::rmdir(base.c_str());
  }
}

cgroup_group component_cgroups::group(const std::string& name) const {
  cgroup_group g;
  for (const auto& [c, base] : bases_)
    g.dirs.emplace_back(c, base / name);
  return g;
}

caf::expected<std::vector<fs::path>>
component_cgroups::prepare(const std::string& name, const resource_limits& limits) {
  // AWS's API bounds neither value; the kernel takes bytes and microseconds as int64.
  if (limits.memory_kb > (int64_t{1} << 40))
    return make_error(errc::invalid_config,
                      "runWith.systemResourceLimits.memory " + std::to_string(limits.memory_kb)
                        + " KB is past the 1 PiB a cgroup takes here");
  if (limits.cpus > 65536)
    return make_error(errc::invalid_config, "runWith.systemResourceLimits.cpus "
                                              + std::to_string(limits.cpus)
                                              + " is past the 65536 cores a quota takes here");
  if (limits.cpus > 0 && !cpu_)
    return make_error(errc::unsupported,
                      "runWith.systemResourceLimits.cpus cannot be applied: no writable cpu "
                      "controller (" + describe() + ")");
  std::vector<std::pair<std::string, fs::path>> bases{bases_.begin(), bases_.end()};
  auto g = cgroup_group::make(bases, name);
  if (!g)
    return std::move(g.error());
  // Rewritten on every start: a limit taken away is lifted (-1: unlimited).
  cgroup_limits l;
  l.memory_bytes = limits.memory_kb > 0 ? limits.memory_kb * 1024 : -1;
  l.no_swap = true; // else a hog swaps instead
  if (cpu_) {
    l.cpu_period_us = cfs_period_us;
    l.cpu_quota_us = limits.cpus > 0 ? std::max<int64_t>(1000, static_cast<int64_t>(std::llround(
                                                                  limits.cpus * cfs_period_us)))
                                     : -1;
  }
  if (auto e = g->apply(l))
    return e;
  return g->procs();
}

uint64_t component_cgroups::oom_kills(const std::string& name) const {
  return group(name).oom_kills();
}

void component_cgroups::remove(const std::string& name) {
  group(name).remove(false);
}

std::string component_cgroups::describe() const {
  if (version_ == 2)
    return std::string{"cgroup v2 (memory"} + (cpu_ ? ", cpu" : "") + ") under "
           + bases_.at("").string();
  return std::string{"cgroup v1 (memory"} + (cpu_ ? ", cpu" : "") + ") under "
         + bases_.at("memory").string();
}

fs::path component_cgroups::v2_group(const std::string& name) const {
  auto it = bases_.find("");
  std::error_code ec;
  if (it == bases_.end() || !fs::is_directory(it->second / name, ec))
    return {};
  return it->second / name;
}

fs::path component_cgroups::base(const std::string& controller) const {
  auto it = bases_.find(controller);
  return it == bases_.end() ? fs::path{} : it->second;
}

} // namespace grove::deployment
