// process_test's stand-in for groved: starts `sleep 1000` through grove::process,
// prints "child <pid>", and waits to be killed (the child must then die too).

#include <unistd.h>

#include <cstdio>

#include "grove/process.hpp"

int main() {
  grove::process_owner owner;
  owner.post = [](std::function<void()> f) { f(); };
  grove::process_options opts;
  opts.argv = {"sleep", "1000"};
  auto p = grove::process::start(owner, opts);
  if (!p) {
    std::puts("cannot start sleep");
    return 1;
  }
  std::printf("child %d\n", static_cast<int>(p->pid()));
  std::fflush(stdout);
  for (;;)
    ::pause();
}
