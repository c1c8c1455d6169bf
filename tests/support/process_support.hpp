#pragma once

// Helpers for suites that run child processes the way groved does: groved's signal
// state, and a log sink that keeps what a supervised child's output became.

#include <csignal>
#include <mutex>
#include <string>
#include <vector>

#include <pthread.h>

#include <spdlog/sinks/base_sink.h>

namespace grove::test {

/// Blocks SIGINT, SIGTERM and SIGHUP (groved blocks them for sigwait before any of its
/// threads starts); as a Boost.Test global fixture, every thread of the suite has them
/// blocked, so a child that inherited the mask would show it.
struct groved_like_signals {
  groved_like_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
  }
};

/// A spdlog sink that keeps every message (without pattern) for later checks.
class capture_sink final : public spdlog::sinks::base_sink<std::mutex> {
public:
  /// Everything logged so far.
  std::vector<std::string> lines() {
    std::lock_guard<std::mutex> guard{mutex_};
    return lines_;
  }

  /// True if a logged line contains `needle`.
  bool has(const std::string& needle) {
    for (const auto& l : lines())
      if (l.find(needle) != std::string::npos)
        return true;
    return false;
  }

protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    lines_.emplace_back(msg.payload.data(), msg.payload.size());
  }

  void flush_() override {
  }

private:
  std::vector<std::string> lines_;
};

} // namespace grove::test
