#pragma once

// For suites that start children through grove::process (tests/unit/process_test.cpp,
// cgroup_test.cpp): an owner recording what the children did, and the sandbox both
// build on (the host's system read-only, an own /proc, a writable /dev/null).

#include <csignal>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "grove/process.hpp"
#include "process_support.hpp"

namespace grove::test {

/// groved's signal state (groved_like_signals) plus SIGPIPE ignored, as groved has it
/// before any thread starts; a Boost.Test global fixture.
struct groved_process_signals : groved_like_signals {
  groved_process_signals() {
    std::signal(SIGPIPE, SIG_IGN);
  }
};

/// An owner whose "actor" is a queue the test drains: events arrive in order.
struct process_recorder {
  std::shared_ptr<capture_sink> sink = std::make_shared<capture_sink>();
  std::shared_ptr<spdlog::logger> log = std::make_shared<spdlog::logger>("test", sink);
  std::mutex mtx;
  std::vector<process_exit> exits;
  std::vector<std::pair<output_stream, std::string>> output;
  std::vector<pid_t> starts;

  process_recorder() {
    log->set_level(spdlog::level::debug);
  }

  /// The owner to pass to process::start (events run at once, on the caller's thread).
  process_owner owner() {
    process_owner o;
    o.post = [](std::function<void()> f) { f(); };
    o.log = log;
    return o;
  }

  /// Callbacks recording exits, output lines and starts.
  process_callbacks callbacks() {
    process_callbacks cb;
    cb.on_exit = [this](const process_exit& ex) {
      std::lock_guard guard{mtx};
      exits.push_back(ex);
    };
    cb.on_output = [this](output_stream s, const std::string& line) {
      std::lock_guard guard{mtx};
      output.emplace_back(s, line);
    };
    cb.on_start = [this](pid_t pid) {
      std::lock_guard guard{mtx};
      starts.push_back(pid);
    };
    return cb;
  }

  /// How many exits were recorded.
  size_t exit_count() {
    std::lock_guard guard{mtx};
    return exits.size();
  }

  /// The `i`th exit.
  process_exit exit(size_t i) {
    std::lock_guard guard{mtx};
    return exits.at(i);
  }

  /// The lines of one stream.
  std::vector<std::string> lines(output_stream which) {
    std::lock_guard guard{mtx};
    std::vector<std::string> out;
    for (auto& [s, l] : output)
      if (s == which)
        out.push_back(l);
    return out;
  }

  /// True if an output line contains `needle`.
  bool has_line(const std::string& needle) {
    std::lock_guard guard{mtx};
    for (auto& [s, l] : output)
      if (l.find(needle) != std::string::npos)
        return true;
    return false;
  }
};

/// A sandbox under `root_base` with the host's /usr, /bin, /lib, /lib64 and /etc
/// read-only (each where it exists), its own /proc and a writable /dev/null.
inline process_sandbox host_system_sandbox(const std::filesystem::path& root_base) {
  process_sandbox sb;
  sb.root_base = root_base;
  for (const char* d : {"usr", "bin", "lib", "lib64", "etc"}) {
    sandbox_mount m;
    m.source = std::string{"/"} + d;
    m.target = std::string{"/"} + d;
    m.optional = true;
    sb.mounts.push_back(m);
  }
  sandbox_mount proc;
  proc.type = sandbox_mount::kind::proc;
  proc.target = "/proc";
  sb.mounts.push_back(proc);
  sandbox_mount null;
  null.source = "/dev/null";
  null.target = "/dev/null";
  null.read_only = false;
  sb.mounts.push_back(null);
  return sb;
}

} // namespace grove::test
