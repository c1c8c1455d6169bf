// process_bench: the cost of one supervised child (grove::process: fork on the
// supervisor thread, descriptor and signal reset, exec, pidfd exit report) against the
// peer in the same run, posix_spawn + a blocking waitpid, both running /bin/true.
// Prints JSON; the ratio is what to compare between runs.

#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>

#include <nlohmann/json.hpp>

#include "grove/process.hpp"

extern char** environ;

namespace {

using clock_type = std::chrono::steady_clock;

double spawn_waitpid_us(int runs) {
  char prog[] = "/bin/true";
  char* argv[] = {prog, nullptr};
  auto t0 = clock_type::now();
  for (int i = 0; i < runs; ++i) {
    pid_t pid = 0;
    if (posix_spawn(&pid, prog, nullptr, nullptr, argv, environ) != 0)
      return -1;
    int st = 0;
    waitpid(pid, &st, 0);
  }
  return std::chrono::duration<double, std::micro>(clock_type::now() - t0).count() / runs;
}

double grove_process_us(int runs) {
  std::mutex mtx;
  std::condition_variable cv;
  int exits = 0;
  grove::process_owner owner;
  owner.post = [](std::function<void()> f) { f(); };
  grove::process_callbacks cb;
  cb.on_exit = [&](const grove::process_exit&) {
    std::lock_guard guard{mtx};
    ++exits;
    cv.notify_all();
  };
  auto t0 = clock_type::now();
  for (int i = 0; i < runs; ++i) {
    grove::process_options o;
    o.argv = {"/bin/true"};
    auto p = grove::process::start(owner, o, cb);
    if (!p)
      return -1;
    std::unique_lock lock{mtx};
    cv.wait(lock, [&] { return exits == i + 1; });
  }
  return std::chrono::duration<double, std::micro>(clock_type::now() - t0).count() / runs;
}

} // namespace

int main(int argc, char** argv) {
  int runs = argc > 1 ? std::atoi(argv[1]) : 300;
  grove_process_us(10); // warm up: the supervisor thread starts on first use
  auto peer = spawn_waitpid_us(runs);
  auto ours = grove_process_us(runs);
  nlohmann::json out{{"bench", "process_bench"},
                     {"runs", runs},
                     {"posix_spawn_waitpid_us", peer},
                     {"grove_process_us", ours},
                     {"ratio_grove_to_posix_spawn", peer > 0 ? ours / peer : 0.0}};
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
