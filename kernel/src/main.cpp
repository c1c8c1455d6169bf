// groved: the Grove kernel daemon.

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "grove/kernel/config.hpp"
#include "grove/kernel/kernel.hpp"
#include "grove/kernel/plugin_host.hpp"
#include "../../sdk/plugin/src/allocator.hpp"
#include "plugin_host_child.hpp"
#include "systemd_notify.hpp"

namespace {

// Plugins sit at <prefix>/<libdir>/grove/plugins beside <prefix>/bin/groved: libdir as
// installed (e.g. lib/x86_64-linux-gnu under /usr), or plain lib in the build tree.
std::filesystem::path default_plugin_dir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  auto prefix = ec ? std::filesystem::current_path() : exe.parent_path().parent_path();
  auto installed = prefix / GROVE_PLUGIN_RELDIR;
  if (std::filesystem::is_directory(installed, ec))
    return installed;
  return prefix / "lib" / "grove" / "plugins";
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"groved - the Grove edge runtime kernel"};
  std::string config_file;
  std::string write_dir;
  std::string plugin_dir;
  bool check_only = false;
  std::string describe_name;
  std::string host_name;
  int host_fd = -1;
  auto config_opt = app.add_option("-c,--config", config_file, "image profile (YAML)");
  auto host_opt = app.add_option("--plugin-host", host_name,
                                 "internal: run one plugin for a parent groved");
  app.add_option("--fd", host_fd, "internal: socket to the parent groved")
    ->needs(host_opt);
  host_opt->group("");
  config_opt->excludes(host_opt);
  app.add_option("-w,--write-dir", write_dir,
                 "state directory (default: GROVE_WRITE_DIR, the profile, ./var)");
  app.add_option("-p,--plugin-dir", plugin_dir, "where lib<name>.so plugins are");
  app.add_flag("--check", check_only,
               "validate the profile and every plugin's configuration, then exit");
  auto describe_opt = app.add_option(
    "--describe-config", describe_name,
    "print the configuration keys of plugin NAME as a Markdown table, then exit");
  describe_opt->excludes(host_opt);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2; // usage errors exit 2, like grovectl's
  }
  if (!host_name.empty())
    return grove::run_plugin_host(host_name, host_fd);
  if (!describe_name.empty()) {
    // The table comes from the schema the library exports, so it reads the same for
    // typed (config_map) and hand-written schemas.
    auto dir = plugin_dir.empty() ? default_plugin_dir() : std::filesystem::path{plugin_dir};
    auto lib = grove::open_plugin_library(dir / ("lib" + describe_name + ".so"),
                                          describe_name);
    if (!lib) {
      std::cerr << "groved: " << grove::describe(lib.error()) << '\n';
      return 2;
    }
    std::cout << grove::config_table((*lib)->schema);
    return 0;
  }
  if (config_file.empty()) {
    std::cerr << "groved: --config is required (see --help)\n";
    return 2;
  }
  // Everything groved and its children create (spool, stores, WAL, the broker's log,
  // sockets) is for its own user only.
  ::umask(077);

  grove::profile_overrides ov;
  if (!write_dir.empty())
    ov.write_dir = write_dir;
  else if (auto env = std::getenv("GROVE_WRITE_DIR"); env != nullptr && *env != '\0')
    ov.write_dir = env;
  if (!plugin_dir.empty())
    ov.plugin_dir = plugin_dir;
  ov.default_plugin_dir = default_plugin_dir();
  auto profile = grove::load_profile(config_file, ov);
  if (!profile) {
    std::cerr << "groved: " << grove::describe(profile.error()) << '\n';
    return 2;
  }

  // Block the stop signals (and SIGHUP, which re-reads the profile) before CAF starts
  // its threads so only sigwait sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  grove::kernel_options opts;
  opts.watch_profile = true;
  std::error_code ec;
  opts.plugin_host_exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  grove::kernel k{std::move(*profile), opts};
  if (check_only) {
    int failures = 0;
    if (!k.profile().group_file.empty())
      if (auto g = grove::load_group(k.profile().group_file); !g) {
        std::cerr << "groved: " << grove::describe(g.error()) << '\n';
        ++failures;
      }
    for (auto& spec : k.profile().plugins)
      if (auto err = k.host().check(spec)) {
        std::cerr << "groved: " << grove::describe(err) << '\n';
        ++failures;
      }
    if (failures == 0)
      std::cout << "groved: " << config_file << " is valid\n";
    return failures == 0 ? 0 : 2;
  }
  if (auto err = k.start()) {
    k.log()->critical("cannot start: {}", grove::describe(err));
    return err == grove::errc::invalid_config ? 2 : 1;
  }
  // Under systemd (Type=notify): ready once start() has started every plugin of the
  // profile (failed ones are logged and left out, as without systemd).
  grove::systemd_notifier notifier;
  if (!notifier.error().empty())
    k.log()->warn("{}", notifier.error());
  if (notifier.enabled()) {
    size_t running = 0;
    for (auto& p : k.host().list())
      if (p.state() == "running")
        ++running;
    notifier.ready(std::to_string(running) + " of " + std::to_string(k.profile().plugins.size())
                   + " plugins running");
    notifier.start_watchdog(k.system());
    if (notifier.watchdog_period().count() > 0)
      k.log()->info("systemd watchdog: fed every {} ms",
                    notifier.watchdog_period().count() / 1000);
  }
  int sig = 0;
  for (;;) {
    // Start-up (profile, group, plugin loads) ran on this thread; it only waits now.
    grove::detail::flush_thread_cache();
    if (sigwait(&stop_signals, &sig) != 0)
      continue;
    if (sig != SIGHUP)
      break;
    // The daemon convention: SIGHUP means "re-read your configuration".
    k.reread();
  }
  k.log()->info("signal {} received, stopping", sig);
  notifier.stopping();
  k.stop();
  if (auto n = k.host().abandoned(); n > 0) {
    // A plugin stuck in init or stop holds a CAF worker: the actor system would wait
    // for it forever on destruction.
    k.log()->error("{} plugin(s) stuck past their timeout; exiting without them", n);
    k.log()->flush();
    std::_Exit(1);
  }
  return 0;
}
