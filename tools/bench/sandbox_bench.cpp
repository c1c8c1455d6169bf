// sandbox_bench: what function_runtime's GreengrassContainer sandbox costs at cold start,
// each figure against peers in the same run (interleaved, so drift hits all alike):
// - container: an on-demand GreengrassContainer function's first invocation (the runtime
//   makes the cgroup, grove::process clones the namespaces, builds the root, loads the
//   filter and execs; the worker says hello, handles the item, the reply comes back);
// - no_container: the same function and binary as NoContainer, the same user;
// - bare_sandbox: grove::process::start with the same process_sandbox the runtime would
//   build (clone with four new namespaces + cgroup attach + mounts and pivot_root +
//   joining the user namespace + seccomp load + exec of the same worker) until the worker has exited
//   (without an IPC descriptor it ends at once), and bare_fork: the same without the
//   sandbox.
// - python: a runtime: python3 function (tests/python/noop.py) the same two ways, against a
//   bare `python3 -c pass` as the same user (issue 13: the container's Python cold start
//   at most 20 ms over bare python3).
// Also the memory high-water mark (VmHWM) of an idle pinned sandboxed instance. Needs root.
// Prints one JSON object.

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "bench_kernel.hpp"
#include "bench_stats.hpp"
#include "function_bench_support.hpp"
#include "sandbox.hpp"

namespace {

using json = nlohmann::json;
using grove::bench::clock_type;
using grove::bench::pct;
using grove::bench::round2;
using grove::bench::us_since;
namespace fs = std::filesystem;

/// Starts `opts` and waits for the child's exit; microseconds, or -1 on failure.
double run_to_exit(grove::process_options opts) {
  std::promise<void> ended;
  auto done = ended.get_future();
  grove::process_owner owner;
  owner.post = [](std::function<void()> f) { f(); };
  grove::process_callbacks cb;
  cb.on_exit = [&ended](const grove::process_exit&) { ended.set_value(); };
  auto t0 = clock_type::now();
  auto p = grove::process::start(owner, std::move(opts), std::move(cb));
  if (!p) {
    std::cerr << grove::describe(p.error()) << '\n';
    return -1;
  }
  done.wait();
  auto us = us_since(t0);
  p->unbind();
  return us;
}

} // namespace

int main(int argc, char** argv) {
  int cold = argc > 1 ? std::atoi(argv[1]) : 20;
  if (cold <= 0) {
    std::cerr << "usage: sandbox_bench [COLD_STARTS]\n";
    return 2;
  }
  auto fail = [](const std::string& what) {
    std::cout << json{{"benchmark", "sandbox"}, {"error", what}}.dump() << '\n';
    return 1;
  };
  if (::geteuid() != 0)
    return fail("needs root (user namespaces with id maps, cgroups)");
  auto dir = fs::temp_directory_path() / ("grove-sandbox-bench-" + std::to_string(getpid()));
  // grove::process notes when each sandboxed start reached each step (one JSON line per
  // start): the breakdown below.
  auto timing = fs::temp_directory_path() / ("grove-sandbox-timing-" + std::to_string(getpid()));
  ::setenv("GROVE_SANDBOX_TIMING", timing.c_str(), 1);
  auto plugins = grove::bench::function_plugin_dir(dir, FN_PLUGIN);
  fs::create_directories(dir / "code");
  fs::permissions(dir, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  fs::copy_file(FN_TEST_FUNCTION, dir / "code" / "fn");
  fs::create_directories(dir / "pycode");
  fs::copy_file(fs::path{FN_PYTHON_CODE} / "noop.py", dir / "pycode" / "noop.py");
  std::string common = "handler: fn, codeUri: " + (dir / "code").string()
                       + ", execArgs: [echo], inputPayloadEncodingType: binary";
  std::string python = "runtime: python3, handler: noop.handler, codeUri: "
                       + (dir / "pycode").string() + ", inputPayloadEncodingType: binary";
  {
    std::ofstream g{dir / "group.yaml"};
    g << "name: bench\nfunctions:\n";
    g << "  - name: pinned\n    config: {" << common << ", pinned: true}\n";
    for (int i = 0; i < cold; ++i) {
      g << "  - name: c" << i << "\n    config: {" << common << ", pinned: false}\n";
      g << "  - name: n" << i << "\n    config: {" << common
        << ", pinned: false, linuxProcessParams: {isolationMode: NoContainer}}\n";
      g << "  - name: pc" << i << "\n    config: {" << python << ", pinned: false}\n";
      g << "  - name: pn" << i << "\n    config: {" << python
        << ", pinned: false, linuxProcessParams: {isolationMode: NoContainer}}\n";
    }
  }
  auto profile = grove::bench::bench_profile(dir, plugins);
  profile.group_file = dir / "group.yaml";
  json out;
  out["benchmark"] = "sandbox";
  {
    grove::kernel k{profile, grove::kernel_options{false, false}};
    if (auto err = k.start())
      return fail(grove::describe(err));
    if (auto err = grove::bench::load_function_runtime(k, "{}"))
      return fail(grove::describe(err));
    auto timeout = std::chrono::seconds{10};
    auto send = [&](grove::Envelope e) { return k.request(std::move(e), timeout); };
    if (!grove::bench::wait_for_functions(send, 4 * cold + 1))
      return fail("the runtime did not define the functions");
    const std::string payload(64, 'p');
    std::string invoke_error;
    auto invoke = [&](const std::string& name) {
      auto r = k.request(grove::function_runtime::make_invoke(name, payload), timeout);
      if (!r)
        invoke_error = grove::describe(r.error());
      return r && r->payload() == payload;
    };
    // The runtime's own sandbox policy for the bare peer: same mounts, cgroup, filter.
    grove::fn::runtime_config cfg;
    auto parsed = grove::fn::runtime_config::map().load("{}", "bench");
    if (parsed)
      cfg = *parsed;
    auto sb = grove::fn::sandbox::open(cfg, dir / "bench-state");
    if (!sb)
      return fail(grove::describe(sb.error()));
    grove::fn::function_def def;
    def.handler = "fn";
    def.process.container.memory_size_kb = 16384;
    auto* pw = ::getpwnam("grove-fn");
    if (pw == nullptr)
      return fail("no user grove-fn (tools/deps makes it)");
    // sandbox::prepare (the instance's cgroup directories, limits and device rules, and
    // its process_sandbox): the runtime's part before grove::process starts it.
    std::vector<double> prepare_us;
    auto bare = [&](bool sandboxed, uint64_t id) {
      grove::process_options o;
      o.argv = {(dir / "code" / "fn").string(), "echo"};
      o.env = std::vector<std::string>{"PATH=/usr/bin:/bin"};
      o.cwd = dir / "code";
      o.uid = pw->pw_uid;
      o.gid = pw->pw_gid;
      o.stdout_level = o.stderr_level = grove::output_level::off;
      std::unique_ptr<grove::fn::instance_cgroup> cg;
      if (sandboxed) {
        auto t0 = clock_type::now();
        auto is = (*sb)->prepare("bare", id, def, dir / "code");
        if (!is)
          return -1.0;
        prepare_us.push_back(us_since(t0));
        o.argv[0] = grove::fn::sandbox::inside(o.argv[0], dir / "code");
        o.sandbox = std::move(is->spec);
        cg = std::move(is->cgroup);
      }
      return run_to_exit(std::move(o));
    };
    // The interpreter doing nothing, as the functions' user, outside any sandbox.
    auto bare_python = [&] {
      grove::process_options o;
      o.argv = {"/usr/bin/python3", "-c", "pass"};
      o.env = std::vector<std::string>{"PATH=/usr/bin:/bin"};
      o.cwd = dir / "pycode";
      o.uid = pw->pw_uid;
      o.gid = pw->pw_gid;
      o.stdout_level = o.stderr_level = grove::output_level::off;
      return run_to_exit(std::move(o));
    };
    std::vector<double> container_us, plain_us, bare_sb_us, bare_fork_us;
    std::vector<double> py_container_us, py_plain_us, bare_python_us;
    uint64_t failed = 0;
    for (int i = 0; i < cold; ++i) {
      auto t0 = clock_type::now();
      failed += invoke("c" + std::to_string(i)) ? 0 : 1;
      container_us.push_back(us_since(t0));
      t0 = clock_type::now();
      failed += invoke("n" + std::to_string(i)) ? 0 : 1;
      plain_us.push_back(us_since(t0));
      bare_sb_us.push_back(bare(true, static_cast<uint64_t>(i)));
      bare_fork_us.push_back(bare(false, 0));
      t0 = clock_type::now();
      failed += invoke("pc" + std::to_string(i)) ? 0 : 1;
      py_container_us.push_back(us_since(t0));
      t0 = clock_type::now();
      failed += invoke("pn" + std::to_string(i)) ? 0 : 1;
      py_plain_us.push_back(us_since(t0));
      bare_python_us.push_back(bare_python());
    }
    auto c50 = pct(container_us, 0.5), n50 = pct(plain_us, 0.5);
    auto b50 = pct(bare_sb_us, 0.5), f50 = pct(bare_fork_us, 0.5);
    out["cold_starts"] = cold;
    out["failed"] = failed;
    if (failed != 0)
      out["last_error"] = invoke_error;
    out["container_first_invoke_p50_us"] = round2(c50);
    out["container_first_invoke_p90_us"] = round2(pct(container_us, 0.9));
    out["no_container_first_invoke_p50_us"] = round2(n50);
    out["container_over_no_container_p50_us"] = round2(c50 - n50);
    out["bare_sandbox_start_to_exit_p50_us"] = round2(b50);
    out["bare_fork_start_to_exit_p50_us"] = round2(f50);
    out["sandbox_setup_p50_us"] = round2(b50 - f50);
    out["sandbox_prepare_p50_us"] = round2(pct(prepare_us, 0.5));
    out["ratio_container_to_no_container"] = round2(c50 / n50);
    out["ratio_bare_sandbox_to_bare_fork"] = round2(b50 / f50);
    auto pc50 = pct(py_container_us, 0.5), pn50 = pct(py_plain_us, 0.5);
    auto bp50 = pct(bare_python_us, 0.5);
    out["python"] = json{{"container_first_invoke_p50_us", round2(pc50)},
                         {"no_container_first_invoke_p50_us", round2(pn50)},
                         {"bare_python3_c_pass_p50_us", round2(bp50)},
                         {"container_over_bare_python3_p50_us", round2(pc50 - bp50)},
                         {"container_over_no_container_p50_us", round2(pc50 - pn50)},
                         {"ratio_container_to_bare_python3", round2(pc50 / bp50)}};
    out["sandbox"] = (*sb)->describe();
    // Idle memory of the pinned sandboxed instance's worker (PID 2 of its namespace; the
    // namespace's holder, PID 1, runs in groved's memory on a 64 KiB stack).
    if (!invoke("pinned"))
      out["pinned_error"] = invoke_error;
    uint64_t rss = 0;
    if (auto l = grove::function_runtime::list(send))
      for (const auto& f : l->functions())
        if (f.name() == "pinned")
          rss = f.memory_hwm_kb();
    out["pinned_idle_vmhwm_kb"] = rss;
    k.stop();
  }
  // The breakdown: p50 over every sandboxed start of the time between consecutive steps.
  {
    static constexpr const char* steps[]
      = {"child", "attached", "mounted", "pivoted", "entered", "ids", "locked", "exec"};
    static constexpr const char* what[]
      = {"clone_namespaces", "cgroup_join", "join_and_copy_prepared_root", "own_mounts",
         "hostname_chdir_userns_capabilities", "credentials", "seccomp_load_and_handover",
         "exec_reported"};
    std::map<std::string, std::vector<double>> deltas;
    std::ifstream in{timing};
    std::string line;
    size_t starts = 0;
    while (std::getline(in, line)) {
      auto j = json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("exec_us"))
        continue;
      ++starts;
      double prev = 0;
      for (size_t i = 0; i < std::size(steps); ++i) {
        auto key = std::string{steps[i]} + "_us";
        if (!j.contains(key))
          continue;
        double at = j[key].get<double>();
        deltas[what[i]].push_back(at - prev);
        prev = at;
      }
      deltas["total_clone_to_exec"].push_back(prev);
    }
    json b;
    b["starts"] = starts;
    for (auto& [k, v] : deltas)
      b[k + "_p50_us"] = round2(pct(v, 0.5));
    out["breakdown"] = b;
  }
  std::error_code ec;
  fs::remove(timing, ec);
  fs::remove_all(dir, ec);
  std::cout << out.dump() << std::endl;
  return 0;
}
