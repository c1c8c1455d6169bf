#pragma once

// Runs real processes for integration tests: spawn with captured output, wait with a
// bound, and run a command to completion.

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace grove::test {

/// A child process whose stdout+stderr go to a pipe we read.
class child {
public:
  explicit child(std::vector<std::string> argv) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(a.data());
    args.push_back(nullptr);
    if (posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ) != 0)
      throw std::runtime_error("spawn failed: " + argv[0]);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    out_fd_ = fds[0];
  }

  ~child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0)
      close(out_fd_);
  }

  pid_t pid() const {
    return pid_;
  }

  /// Reads output until `needle` shows up or `timeout` passes; true if it did.
  bool wait_for_output(const std::string& needle,
                       std::chrono::milliseconds timeout = std::chrono::seconds{20}) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (output_.find(needle) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !read_some(left))
        return output_.find(needle) != std::string::npos;
    }
    return true;
  }

  /// Sends `sig` and waits (bounded) for the exit; returns the exit code, or -1.
  int stop(int sig = SIGTERM, std::chrono::milliseconds timeout = std::chrono::seconds{20}) {
    ::kill(pid_, sig);
    return wait(timeout);
  }

  /// Waits (bounded) for the exit; exit code, 128+signal, or -1 on timeout.
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds{20}) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      int status = 0;
      auto r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        while (read_some(std::chrono::milliseconds{0})) {
        }
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (std::chrono::steady_clock::now() >= deadline)
        return -1;
      read_some(std::chrono::milliseconds{20});
    }
  }

  const std::string& output() const {
    return output_;
  }

private:
  bool read_some(std::chrono::milliseconds timeout) {
    pollfd p{out_fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0)
      return false;
    char buf[4096];
    auto n = read(out_fd_, buf, sizeof(buf));
    if (n <= 0)
      return false;
    output_.append(buf, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string output_;
};

/// Children of `parent` whose command line contains `needle`.
inline std::vector<pid_t> children_of(pid_t parent, const std::string& needle) {
  std::vector<pid_t> found;
  for (auto& e : std::filesystem::directory_iterator{"/proc"}) {
    auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    std::ifstream stat{e.path() / "stat"};
    std::string line;
    if (!std::getline(stat, line))
      continue;
    std::istringstream rest{line.substr(line.rfind(')') + 2)};
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    std::ifstream cmd{e.path() / "cmdline"};
    std::string args{std::istreambuf_iterator<char>{cmd}, {}};
    std::replace(args.begin(), args.end(), '\0', ' ');
    if (ppid == parent && args.find(needle) != std::string::npos)
      found.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return found;
}

/// Result of a finished command.
struct run_result {
  int code = -1;
  std::string output;
};

/// Runs a command to completion (bounded) and returns exit code and output.
inline run_result run(std::vector<std::string> argv,
                      std::chrono::milliseconds timeout = std::chrono::seconds{30}) {
  child c{std::move(argv)};
  run_result r;
  r.code = c.wait(timeout);
  r.output = c.output();
  return r;
}

} // namespace grove::test
