// grove-ota-watchdog: runs <root>/current/bin/groved and decides rollback outside it
// (README.md, "The watchdog"). When the journal says a new release is on trial it must
// become healthy (status answers, every plugin running, no restarts) and stay so for
// --health-seconds within --start-seconds more; if groved exits, crashes or hangs
// first, `current` goes back to the previous release, the journal says why, and the
// previous groved starts. Outside a trial it only supervises: groved's exit ends it
// (systemd restarts the unit), except an exit that an update asked for. Under systemd
// (packaging/grove-ota.service, Type=notify) it relays groved's READY=1 and WATCHDOG=1
// (notify_relay.hpp).
//   grove-ota-watchdog --root R --socket S [--health-seconds N] [--start-seconds N]
//                      [--max-attempts N] -- GROVED-ARGS...

#include "install.hpp"
#include "notify_relay.hpp"

#include "grove/errors.hpp"

#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using namespace grove::ota;
using clock_type = std::chrono::steady_clock;

namespace {

volatile sig_atomic_t stop_signal = 0;
pid_t child = 0;
notify_relay relay;

void on_signal(int sig) {
  if (sig != SIGHUP) // SIGHUP (systemctl reload) only re-reads groved's profile
    stop_signal = sig;
  if (child > 0)
    ::kill(child, sig);
}

void log(const std::string& msg) {
  std::cerr << "grove-ota-watchdog: " << msg << std::endl;
}

struct options {
  fs::path root;
  std::string socket;
  int health_seconds = 10;
  int start_seconds = 30;
  int max_attempts = 2;
  std::vector<std::string> args;
};

// Starts the groved of `release` (the resolved directory, so a later switch of
// `current` does not change what runs); it dies with the watchdog.
pid_t launch(const options& o, const std::string& release) {
  auto bin = o.root / "releases" / release / "bin" / "groved";
  // Everything the child needs is made before fork(): the relay's thread may hold locks.
  std::vector<char*> argv{const_cast<char*>(bin.c_str())};
  for (auto& a : o.args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  auto env = relay.child_env();
  std::vector<char*> envp;
  for (auto& e : env)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::execve(bin.c_str(), argv.data(), envp.data());
    std::fprintf(stderr, "grove-ota-watchdog: exec %s: %s\n", bin.c_str(), std::strerror(errno));
    ::_exit(127);
  }
  log("started " + bin.string() + " (pid " + std::to_string(pid) + ")");
  // Fed by the watchdog until this groved is ready: a restart is not a hang.
  relay.set_child(pid, std::chrono::seconds(o.start_seconds));
  relay.status("starting release " + release);
  return pid;
}

std::string describe_status(int status) {
  if (WIFEXITED(status))
    return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return std::string{"killed by signal "} + strsignal(WTERMSIG(status));
  return "stopped";
}

// One health probe through the release's own grovectl: empty when healthy.
std::string probe(const options& o, const std::string& release, int& restarts) {
  auto ctl = o.root / "releases" / release / "bin" / "grovectl";
  auto cmd = ctl.string() + " --socket '" + o.socket + "' --json --timeout 2 status 2>&1";
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
      out.append(buf, n);
    int rc = ::pclose(p);
    if (rc != 0)
      return "status failed: " + out.substr(0, 200);
  } else {
    return "cannot run grovectl";
  }
  auto doc = nlohmann::json::parse(out, nullptr, false);
  if (doc.is_discarded() || !doc.contains("plugins") || !doc["plugins"].is_array())
    return "status is not JSON";
  int sum = 0;
  for (auto& p : doc["plugins"]) {
    auto state = p.value("state", std::string{});
    if (state != "running")
      return "plugin " + p.value("name", std::string{"?"}) + " is " + state;
    sum += p.value("restarts", 0);
  }
  if (restarts >= 0 && sum > restarts)
    return "a plugin restarted";
  restarts = sum;
  return {};
}

void stop_child(pid_t pid) {
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 50; ++i) {
    if (::waitpid(pid, nullptr, WNOHANG) == pid)
      return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

bool journal(const options& o, const state& st) {
  if (auto err = write_state(o.root, st)) {
    log("cannot write the journal: " + grove::describe(err));
    return false;
  }
  return true;
}

void roll_back(const options& o, state st, const std::string& reason) {
  log("rolling back " + st.target + " to " + st.previous + ": " + reason);
  // The reason first: a kill -9 right after the switch back is then read as a rollback.
  st.reason = reason;
  journal(o, st);
  if (auto err = switch_to(o.root, st.previous))
    log("cannot switch back: " + grove::describe(err)); // the journal still says trial
  crash_point("rolled_back_switch");
  st.phase = "rolled_back";
  st.reason = reason;
  journal(o, st);
  relay.status("rolled back " + st.target + " to " + st.previous + ": " + reason);
}

// Brings the journal in line with `current` after a start (maybe after a kill -9).
state recover(const options& o) {
  auto st = read_state(o.root);
  if (!st) {
    log(grove::describe(st.error()) + "; starting current as it is");
    return state{};
  }
  if (st->phase != "trial")
    return *st;
  auto current = current_release(o.root);
  if (current != st->target) {
    // Killed between the journal and the switch, or during a rollback's switch.
    st->phase = st->reason.empty() ? "failed" : "rolled_back";
    if (st->reason.empty())
      st->reason = "interrupted before the switch to " + st->target;
    journal(o, *st);
    return *st;
  }
  if (!st->reason.empty()) { // killed during a rollback, before its switch back
    roll_back(o, *st, st->reason);
    return *read_state(o.root);
  }
  if (st->attempts >= o.max_attempts) {
    roll_back(o, *st, "not healthy after " + std::to_string(st->attempts) + " boots");
    return *read_state(o.root);
  }
  return *st;
}

// Runs a release on trial; true when it became healthy (it keeps running as `pid`).
bool trial(const options& o, state st, pid_t& pid) {
  st.attempts += 1;
  journal(o, st);
  crash_point("trial_started");
  pid = launch(o, st.target);
  child = pid;
  auto deadline = clock_type::now() + std::chrono::seconds(o.start_seconds + o.health_seconds);
  // The watchdog feeds systemd through the whole trial: it has its own deadline.
  relay.feed_until(deadline + std::chrono::seconds(5));
  relay.status("release " + st.target + " on trial");
  bool healthy = false;
  clock_type::time_point healthy_since;
  int restarts = -1;
  std::string last = "never answered";
  while (!stop_signal) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      pid = 0;
      roll_back(o, st, "the new groved " + describe_status(status) + " during the health check");
      return false;
    }
    auto why = probe(o, st.target, restarts);
    auto now = clock_type::now();
    if (why.empty()) {
      if (!healthy)
        healthy = true, healthy_since = now;
      if (now - healthy_since >= std::chrono::seconds(o.health_seconds)) {
        st.phase = "healthy";
        st.reason.clear();
        journal(o, st);
        log(st.target + " is healthy");
        relay.feed_until(clock_type::now()); // from now on only groved's own feed
        relay.status("release " + st.target + " is healthy");
        return true;
      }
    } else {
      healthy = false;
      last = why;
    }
    if (now >= deadline) {
      stop_child(pid);
      pid = 0;
      roll_back(o, st, "not healthy within " + std::to_string(o.start_seconds + o.health_seconds)
                         + " s: " + last);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return true;
}

} // namespace

int main(int argc, char** argv) {
  options o;
  int i = 1;
  for (; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--") {
      ++i;
      break;
    }
    if (a == "--root") o.root = next();
    else if (a == "--socket") o.socket = next();
    else if (a == "--health-seconds") o.health_seconds = std::stoi(next());
    else if (a == "--start-seconds") o.start_seconds = std::stoi(next());
    else if (a == "--max-attempts") o.max_attempts = std::stoi(next());
    else {
      std::cerr << "usage: grove-ota-watchdog --root R --socket S [--health-seconds N]"
                   " [--start-seconds N] [--max-attempts N] -- GROVED-ARGS...\n";
      return 2;
    }
  }
  for (; i < argc; ++i)
    o.args.push_back(argv[i]);
  if (o.root.empty() || o.socket.empty()) {
    std::cerr << "grove-ota-watchdog: --root and --socket are required\n";
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);
  if (auto why = relay.start(); !why.empty())
    log(why + "; groved's notifications are not relayed");
  for (;;) {
    auto st = recover(o);
    pid_t pid = 0;
    if (st.phase == "trial")
      trial(o, st, pid);
    if (stop_signal) {
      relay.stopping();
      if (pid > 0)
        stop_child(pid);
      return 0;
    }
    if (pid == 0) {
      auto current = current_release(o.root);
      if (current.empty()) {
        log("no release at " + (o.root / "current").string());
        return 1;
      }
      pid = launch(o, current);
    }
    child = pid;
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      if (stop_signal)
        relay.stopping();
    }
    child = 0;
    log("groved " + describe_status(status));
    if (stop_signal) {
      relay.stopping();
      return 0;
    }
    // An update switched `current` and stopped groved to restart into it.
    auto after = read_state(o.root);
    if (after && after->phase == "trial" && after->attempts == 0) {
      // Fed until the trial's own feed begins.
      relay.feed_until(clock_type::now() + std::chrono::seconds(o.start_seconds));
      relay.status("restarting into release " + after->target);
      continue;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  }
}
