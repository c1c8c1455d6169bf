#include "grove/kernel/kernel.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <caf/after.hpp>
#include <caf/event_based_actor.hpp>
#include <sys/prctl.h>
#include <caf/scoped_actor.hpp>
#include <caf/sec.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "grove/file.hpp"
#include "grove/kernel/control_client.hpp"
#include "grove/kernel/group_client.hpp"
#include "allocator.hpp"
#include "code_mappings.hpp"
#include "code_pages.hpp"
#include "file_watch.hpp"
#include "grove/kernel/metrics_server.hpp"
#include "tsan_annotations.hpp"

namespace grove {

const char* const kernel_version = "0.1.0";


namespace {

// `over` merged into a copy of `base`: maps key by key, anything else replaced; a null
// or absent `over` keeps `base` (a configure over the profile, control.proto). A key of
// `over` that is no scalar (`{[a]: 1}`) is invalid_config; nothing throws.
caf::expected<YAML::Node> merged_yaml(const YAML::Node& base, const YAML::Node& over) {
  try {
    if (!over.IsDefined() || over.IsNull())
      return base.IsDefined() ? YAML::Clone(base) : YAML::Node{};
    if (!over.IsMap() || !base.IsDefined() || !base.IsMap())
      return YAML::Clone(over);
    auto out = YAML::Clone(base);
    for (const auto& kv : over) {
      if (!kv.first.IsScalar())
        return make_error(errc::invalid_config, "a configuration key is no scalar");
      auto key = kv.first.as<std::string>();
      auto sub = merged_yaml(base[key], kv.second);
      if (!sub)
        return sub.error();
      out[key] = *sub;
    }
    return out;
  } catch (const std::exception& e) {
    return make_error(errc::invalid_config, std::string{"configuration: "} + e.what());
  }
}

// The profile entry's config of `name` in `p`, null when it has none.
yaml_ptr profile_config(const image_profile& p, const std::string& name) {
  for (const auto& s : p.plugins)
    if (s.name == name)
      return s.config;
  return nullptr;
}

// `config` with `overlay` (a plugin's over-profile document, kernel::overlays_) merged
// on top; `config` itself when there is none.
caf::expected<yaml_ptr> with_overlay(const yaml_ptr& config, const yaml_ptr& overlay) {
  if (!overlay)
    return config;
  auto merged = merged_yaml(config ? *config : YAML::Node{}, *overlay);
  if (!merged)
    return std::move(merged.error());
  return make_yaml(std::move(*merged));
}

} // namespace

namespace {

using detail::release_free_pages;

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in{p, std::ios::binary};
  std::ostringstream out;
  out << in.rdbuf();
  return in ? out.str() : std::string{};
}

/// What the group check compares before it reads the file: device, inode, size and
/// mtime (ns). Rereading a 1.1 MB group every second cost ~7 MB the allocator kept.
std::array<long long, 5> file_stamp(const std::filesystem::path& p) {
  struct ::stat st {};
  if (::stat(p.c_str(), &st) != 0)
    return {};
  return {static_cast<long long>(st.st_dev), static_cast<long long>(st.st_ino),
          static_cast<long long>(st.st_size), static_cast<long long>(st.st_mtim.tv_sec),
          static_cast<long long>(st.st_mtim.tv_nsec)};
}

/// Shared by a sink actor and its subscription handle: once the handle lets go, the
/// callback is never called again (and a call in progress has finished).
struct sink_state {
  std::mutex mtx;
  std::function<void(const Envelope&)> fn;
  bool closed = false;
};

/// The sink whose callback runs on this thread, so a handle released from inside its
/// own callback neither re-locks the mutex nor waits for itself.
thread_local sink_state* running_sink = nullptr;

/// Delivers bus messages to a callback; used by the control socket and the harness.
class sink_actor : public caf::event_based_actor {
public:
  sink_actor(caf::actor_config& cfg, std::shared_ptr<sink_state> state,
             std::shared_ptr<endpoint_ptr> ep)
    : caf::event_based_actor(cfg), state_(std::move(state)), ep_(std::move(ep)) {
  }

protected:
#if GROVE_TSAN
  // Pairs with endpoint::push: the publisher's thread wrote this message. Taken before
  // CAF matches the message (it reads the element's type on this thread), not in the
  // handler: a race TSan reports there is suppressed (CAF frames), but a suppressed
  // report still costs TSan a stack restore and symbolization, per message, under its
  // global report lock; the fan-out test crawled to what looked like a stall.
  caf::invoke_message_result consume(caf::mailbox_element& x) override {
    if (ep_ != nullptr && *ep_ != nullptr)
      GROVE_TSAN_ACQUIRE(ep_->get());
    return caf::event_based_actor::consume(x);
  }
#endif

  caf::behavior make_behavior() override {
    return {
      [this](const Envelope& msg) {
        {
          std::lock_guard guard{state_->mtx};
          if (!state_->closed) {
            running_sink = state_.get();
            state_->fn(msg);
            running_sink = nullptr;
          }
        }
        // Credit goes back after handling, so capacity bounds in-hand work too.
        if (!current_mailbox_element()->mid.is_request())
          (*ep_)->consumed();
      },
    };
  }

  void on_exit() override {
    // The endpoint holds this actor's handle: let go of it to break the cycle.
    ep_.reset();
    state_.reset();
  }

private:
  std::shared_ptr<sink_state> state_;
  std::shared_ptr<endpoint_ptr> ep_;
};

/// One of the kernel's own services on the bus: `answer` turns each request into its
/// reply or error. Spawned detached: a group set writes a file and a plugin load waits
/// for the plugin, which must not hold one of CAF's workers.
class kernel_service : public caf::event_based_actor {
public:
  using answer_fn = std::function<caf::expected<Envelope>(const Envelope&)>;

  kernel_service(caf::actor_config& cfg, answer_fn answer, std::shared_ptr<endpoint_ptr> ep)
    : caf::event_based_actor(cfg), answer_(std::move(answer)), ep_(std::move(ep)) {
  }

protected:
  caf::behavior make_behavior() override {
    return {
      [this](const Envelope& msg) -> caf::result<Envelope> {
        if (!current_mailbox_element()->mid.is_request()) {
          (*ep_)->consumed();
          return Envelope{};
        }
        // No exception may end the service (a malformed request must not take it down).
        caf::expected<Envelope> reply{Envelope{}};
        try {
          reply = answer_(msg);
        } catch (const std::exception& e) {
          return make_error(errc::malformed, std::string{"request failed: "} + e.what());
        }
        if (!reply)
          return std::move(reply.error());
        return std::move(*reply);
      },
    };
  }

  void on_exit() override {
    ep_.reset();
  }

private:
  answer_fn answer_;
  std::shared_ptr<endpoint_ptr> ep_;
};

/// A library a plugin asked for, checked and copied from the descriptor that was checked:
/// `copy` (groved's own file under run/lib, removed once loaded) is what is dlopened,
/// `reported` the path as asked (normalized), which plugins compare with what they asked.
struct checked_library {
  std::filesystem::path reported;
  std::filesystem::path copy;
};

/// True when a file or directory could be changed by someone other than groved's user
/// or root.
bool writable_by_others(const struct stat& st) {
  return (st.st_mode & (S_IWGRP | S_IWOTH)) != 0
         || (st.st_uid != ::geteuid() && st.st_uid != 0);
}

std::string mode_owner(const struct stat& st) {
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return std::string{"mode "} + mode + ", owner " + std::to_string(st.st_uid);
}

/// The library a plugin asks the kernel to load or reload (`$grove/kernel/plugins/load`
/// or `.../reload` with a path): only a file inside the caller's own state directory,
/// `<write_dir>/plugins/<caller>/` (where the deployment plugin keeps its verified,
/// content-addressed artifacts), as the kernel resolves it (symlinks, `..`); outside it
/// errc::not_authorized. A path with `..` is refused; the resolved file is opened without following links and the
/// descriptor checked: a regular file with one link, owned by groved's user or root and
/// writable by no one else, in directories (up to the state directory) of the same kind;
/// else errc::load_failed. What is loaded is a copy read from that descriptor, so no path
/// is resolved again between the check and the load.
caf::expected<checked_library> library_of_caller(const std::filesystem::path& write_dir,
                                                 const std::string& caller,
                                                 const std::string& asked) {
  std::filesystem::path p{asked};
  if (!p.is_absolute())
    return make_error(errc::invalid_config, "library path '" + asked + "' is not absolute");
  std::error_code ec;
  auto base = std::filesystem::canonical(write_dir / "plugins" / caller, ec);
  if (ec)
    return make_error(errc::not_authorized, "'" + caller + "' has no state directory under "
                                              + write_dir.string() + " to load a library from");
  auto real = std::filesystem::canonical(p, ec);
  if (ec)
    return make_error(errc::load_failed, asked + ": " + ec.message());
  auto rel = real.lexically_relative(base);
  if (rel.empty() || rel == "." || *rel.begin() == "..")
    return make_error(errc::not_authorized,
                      asked + (real.string() == asked ? "" : " (" + real.string() + ")")
                        + " is outside " + base.string() + ": a plugin may load a library "
                        + "only from its own state directory");
  auto refuse = [&](const std::string& why) {
    return make_error(errc::load_failed, asked + (real.string() == asked ? "" : " (" + real.string() + ")")
                                           + ": " + why + "; refused as a plugin library");
  };
  // `a/..` after a link means one file to the kernel (resolved) and another to the plugin
  // (lexically, as reported): a path that needs `..` is refused rather than guessed.
  for (const auto& part : p)
    if (part == "..")
      return refuse("names '..' (give the path without it)");
  int fd = ::open(real.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return refuse(std::string{"cannot open: "} + std::strerror(errno));
  struct fd_closer {
    int fd;
    ~fd_closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    return refuse("not a regular file");
  if (writable_by_others(st))
    return refuse("writable by others than groved's user (" + mode_owner(st) + ")");
  if (st.st_nlink != 1)
    return refuse("has " + std::to_string(st.st_nlink) + " hard links");
  // Whoever may write a directory on the way could have swapped the file in it.
  for (auto dir = real.parent_path();; dir = dir.parent_path()) {
    struct stat ds {};
    if (::lstat(dir.c_str(), &ds) != 0 || !S_ISDIR(ds.st_mode))
      return refuse(dir.string() + " is not a directory");
    if (writable_by_others(ds))
      return refuse("its directory " + dir.string() + " is writable by others than "
                    "groved's user (" + mode_owner(ds) + ")");
    if (dir == base || dir == dir.parent_path())
      break;
  }
  static std::atomic<uint64_t> copies{0};
  auto lib_dir = write_dir / "run" / "lib";
  std::filesystem::create_directories(lib_dir, ec);
  auto copy = lib_dir / (caller + "-checked-" + std::to_string(::getpid()) + "-"
                         + std::to_string(++copies) + ".so");
  int out = ::open(copy.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (out < 0)
    return refuse("cannot copy to " + copy.string() + ": " + std::strerror(errno));
  fd_closer out_closer{out};
  std::array<char, 65536> buf;
  for (;;) {
    auto n = ::read(fd, buf.data(), buf.size());
    if (n == 0)
      break;
    if (n < 0 && errno == EINTR)
      continue;
    bool ok = n > 0;
    for (ssize_t done = 0; ok && done < n;) {
      auto w = ::write(out, buf.data() + done, static_cast<size_t>(n - done));
      if (w < 0 && errno == EINTR)
        continue;
      ok = w > 0;
      done += ok ? w : 0;
    }
    if (!ok) {
      auto why = std::string{"cannot copy to "} + copy.string() + ": " + std::strerror(errno);
      std::filesystem::remove(copy, ec);
      return refuse(why);
    }
  }
  return checked_library{p.lexically_normal(), copy};
}

/// `$grove/group/get`: a grove.group.GetRequest answered with the group in force, and
/// `$grove/group/set`: a grove.group.SetRequest whose document replaces it
/// (group_client.hpp).
caf::expected<Envelope> group_answer(kernel& k, const Envelope& msg) {
  std::shared_ptr<const group::Group> g;
  if (msg.topic() == group_client::set_topic) {
    using set_svc = service<group::SetRequest, group::Group>;
    auto req = set_svc::decode(msg);
    if (!req)
      return std::move(req.error());
    auto set = k.set_group(msg.source(), req->document(),
                           req->has_expected_version()
                             ? std::optional<uint64_t>{req->expected_version()}
                             : std::nullopt);
    if (!set)
      return std::move(set.error());
    g = std::move(*set);
  } else {
    using svc = service<group::GetRequest, group::Group>;
    if (auto req = svc::decode(msg); !req)
      return std::move(req.error());
    g = k.group();
  }
  if (!g)
    return make_error(errc::invalid_state, "this image has no group definition");
  Envelope reply;
  reply.set_topic(msg.reply_to());
  reply.set_source("kernel");
  reply.set_content_type(group_client::get_rpc::response_type());
  reply.set_payload(g->SerializeAsString());
  return reply;
}

/// Unsubscribes, waits out a callback in progress and stops the sink actor when the
/// last owner lets go; after that the callback never runs again. The callback itself
/// stays alive until the sink actor is gone, so releasing from inside it is safe.
struct subscription_handle {
  grove::bus* b;
  endpoint_ptr ep;
  std::shared_ptr<sink_state> state;
  ~subscription_handle() {
    b->unsubscribe_all(ep);
    if (running_sink == state.get()) {
      state->closed = true; // we are inside the callback and hold the lock
    } else {
      std::lock_guard guard{state->mtx};
      state->closed = true;
    }
    caf::anon_send_exit(ep->handle(), caf::exit_reason::user_shutdown);
  }
};

} // namespace

kernel::kernel(image_profile profile, kernel_options options)
  : profile_(std::move(profile)), options_(options) {
  std::shared_ptr<spdlog::sinks::sink> sink;
  if (options_.log_to_stderr)
    sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  else
    sink = std::make_shared<spdlog::sinks::null_sink_mt>();
  sink->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ [%n] %v");
  log_ = std::make_shared<spdlog::logger>(options_.logger_name, sink);
  start_level_ = profile_.log_level;
  log_->set_level(spdlog::level::from_str(start_level_));
  log_->flush_on(spdlog::level::info);
  // CAF 0.17 starts max(cores, 4) workers; on a 2-core device the idle extra workers
  // cost context switches on every message, so default to one per core.
  size_t workers = profile_.worker_threads;
  if (workers == 0)
    workers = std::max(2u, std::thread::hardware_concurrency());
  cfg_.set("scheduler.max-threads", workers);
  // After a job a worker polls its queue (100 times at once, then these ~50 us apart)
  // before it sleeps on its condition variable, which a new job notifies. CAF's 500
  // keep an idle groved waking ~1,000 times a second (its plugins' timers give the
  // workers a job every second); an idle device wants few.
  cfg_.set("work-stealing.moderate-poll-attempts",
           static_cast<size_t>(profile_.idle_poll_attempts));
  // Those ~50 us polls are nanosleeps, which Linux's default timer slack (50 us) makes
  // ~100 us: a job (a request's next hop) waits up to that long for a polling worker.
  // The workers inherit the slack of the thread that starts them (here); this thread's
  // own is put back after.
  auto slack = ::prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  ::prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(profile_.worker_timer_slack_ns), 0, 0,
          0);
  sys_ = std::make_unique<caf::actor_system>(cfg_);
  if (slack > 0)
    ::prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(slack), 0, 0, 0);
  host_settings hs;
  hs.plugin_dir = profile_.plugin_dir;
  hs.write_dir = profile_.write_dir;
  hs.restart = profile_.restart;
  hs.log_level = profile_.log_level;
  hs.sink = sink;
  hs.plugin_host_exe = options_.plugin_host_exe;
  hs.clock = options_.clock;
  hs.init_timeout = profile_.init_timeout;
  hs.stop_timeout = profile_.stop_timeout;
  host_ = std::make_unique<plugin_host>(*sys_, bus_, std::move(hs), log_);
  bus_.set_max_payload(profile_.max_payload_bytes);
  // The kernel's events are its own from the start: no plugin loads before this.
  for (auto f : kernel_event_filters)
    bus_.own(kernel_source, f);
}

kernel::~kernel() {
  stop();
}

caf::error kernel::start() {
  // Profile changes (the watcher, other callers of apply_profile_change) wait until
  // start is done, so it reads the profile without the lock.
  std::lock_guard apply_guard{apply_mtx_};
  started_ = std::chrono::steady_clock::now();
  // The baseline for profile watching: taken before anything loads, so an edit made
  // while plugins start is still seen as a change.
  if (options_.watch_profile)
    profile_text_ = read_file(profile_.file);
  std::error_code ec;
  // A write dir made here is private (0700) whatever the umask: it holds the spool,
  // stores and sockets. One that exists keeps the mode its owner gave it.
  bool fresh = !std::filesystem::exists(profile_.write_dir, ec);
  std::filesystem::create_directories(profile_.write_dir / "plugins", ec);
  if (!ec && fresh)
    std::filesystem::permissions(profile_.write_dir, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
  if (ec)
    return make_error(errc::system_error, "cannot create write directory "
                                            + profile_.write_dir.string() + ": "
                                            + ec.message());
  log_->info("groved {} starting: profile {}, write dir {}, plugin dir {}",
             kernel_version, profile_.file.string(), profile_.write_dir.string(),
             profile_.plugin_dir.string());
  if (!profile_.group_file.empty()) {
    if (options_.watch_profile) {
      group_stamp_ = file_stamp(profile_.group_file); // before the read: no change missed
      group_text_ = read_file(profile_.group_file);
    }
    if (auto err = reload_group())
      return err;
    // Without a group the request finds no route, which says just that.
    if (auto err = serve_kernel_service(
          "kernel:group", [this](const Envelope& msg) { return group_answer(*this, msg); },
          {group_client::get_topic, group_client::set_topic}, group_service_, group_ep_))
      return err;
  }
  if (options_.kernel_services) {
    // Served before any plugin starts: a plugin's init may ask at once.
    if (auto err = serve_kernel_service(
          "kernel:control", [this](const Envelope& msg) { return control_request(msg); },
          {control_client::status_topic, control_client::load_topic,
           control_client::unload_topic, control_client::reload_topic,
           control_client::configure_topic},
          control_service_, control_ep_))
      return err;
  }
  // The control socket comes first so an operator can look at a half-started device.
  if (options_.control_socket) {
    control_ = std::make_unique<control_server>(*this, profile_.control_socket, log_);
    if (auto err = control_->start())
      return err;
    log_->info("control socket {}", profile_.control_socket.string());
  }
  if (profile_.metrics.enabled) {
    metrics_ = std::make_unique<metrics_server>(profile_.metrics.bind,
                                                profile_.metrics.port,
                                                [this] { return scrape(); }, log_);
    if (auto err = metrics_->start())
      return err;
    log_->info("metrics endpoint http://{}:{}/metrics", profile_.metrics.bind,
               metrics_->port());
  }
  size_t ok = 0;
  for (auto& spec : profile_.plugins) {
    if (auto err = host_->load(spec))
      log_->error("plugin {} not started: {}", spec.name, describe(err));
    else
      ++ok;
  }
  auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
    std::chrono::steady_clock::now() - started_);
  log_->info("ready: {} of {} plugins running ({:.1f} ms)", ok, profile_.plugins.size(),
             elapsed.count() / 1000.0);
  if (options_.watch_profile && !profile_.group_file.empty()) {
    // The group has its own watcher: a change reaches the broker within one parse, not
    // the profile's polling period (issue 9: <= 100 ms at the limits). The contents
    // decide, so an event without a change costs a read.
    group_watch_ = std::make_unique<file_watch>(profile_.group_file);
    group_watcher_ = std::thread{[this] {
      // Events only: the profile watcher's poll (check_files) is the fallback.
      for (;;) {
        detail::flush_thread_cache(); // a group change is rare: nothing cached meanwhile
        if (!group_watch_->wait(std::chrono::hours{1}))
          break;
        std::lock_guard guard{watch_mtx_}; // one check at a time, with the poll and SIGHUP
        check_group_file();
      }
    }};
  }
  if (options_.watch_profile) {
    // Polling the content, not inotify: editors and deploy tools replace files by
    // rename, and a once-a-second read of a small file costs nothing.
    watcher_ = std::thread{[this] {
      std::unique_lock guard{watch_mtx_};
      while (!watch_cv_.wait_for(guard, options_.watch_interval,
                                 [this] { return watch_stop_; })) {
        check_files(false);
        release_code_pages_if_due();
      }
    }};
    schedule_code_trim();
  }
  return {};
}

void kernel::schedule_code_trim() {
  // Two seconds: long enough that a burst of loads or a plugin's first seconds of
  // start-up work are over, short enough that an operator sees the idle figure soon.
  if (!with_profile([](const image_profile& p) { return p.release_code_pages; }))
    return;
  auto due = std::chrono::steady_clock::now() + std::chrono::seconds{2};
  code_trim_due_.store(due.time_since_epoch().count(), std::memory_order_relaxed);
}

void kernel::release_code_pages_if_due() {
  auto due = code_trim_due_.load(std::memory_order_relaxed);
  if (due == 0 || std::chrono::steady_clock::now().time_since_epoch().count() < due)
    return;
  if (!code_trim_due_.compare_exchange_strong(due, 0, std::memory_order_relaxed))
    return; // rescheduled meanwhile: wait for the later time
  // Start-up's freed heap pages go back too, not after jemalloc's 10 s decay.
  release_free_pages();
  auto before = resident_file_kb();
  // Plugins and the libraries they asked for load from these: never pinned.
  auto keep_out = with_profile([](const image_profile& p) {
    std::vector<std::string> dirs;
    for (auto* d : {&p.plugin_dir, &p.write_dir}) {
      std::error_code ec;
      auto canon = std::filesystem::weakly_canonical(*d, ec);
      if (!d->empty())
        dirs.push_back((ec ? *d : canon).string() + "/");
      if (!d->empty() && !ec && canon != *d)
        dirs.push_back(d->string() + "/");
    }
    return dirs;
  });
  auto released = release_code_pages(keep_out);
  // The managed broker shared groved's OpenSSL and C++ runtime pages; groved let go of
  // them just now, so a child's earlier release can take them this time.
  detail::release_children_code_pages();
  log_->info("released start-up code pages: {} read-only file mappings ({:.1f} MB) marked "
             "cold ({} unmapped), resident file pages {:.1f} -> {:.1f} MB",
             released.mappings, released.bytes / 1048576.0, released.unmapped, before / 1024.0,
             resident_file_kb() / 1024.0);
}

void kernel::check_group_file() {
  auto group_file = with_profile([](const image_profile& p) { return p.group_file; });
  if (group_file.empty())
    return;
  auto stamp = file_stamp(group_file);
  if (stamp == group_stamp_ && stamp != decltype(stamp){})
    return; // not touched since the last read
  group_stamp_ = stamp;
  auto gtext = read_file(group_file);
  if (gtext.empty() || gtext == group_text_)
    return;
  group_text_ = std::move(gtext);
  log_->info("group {} changed on disk", group_file.string());
  reload_group();
}

void kernel::check_files(bool force) {
  check_group_file();
  auto file = with_profile([](const image_profile& p) { return p.file; });
  auto text = read_file(file);
  if (text.empty() || (text == profile_text_ && !force))
    return;
  if (text != profile_text_)
    log_->info("profile {} changed on disk", file.string());
  profile_text_ = text;
  apply_profile_change();
}

void kernel::reread() {
  // The watcher holds this lock while it checks: one pass at a time, and the text
  // it compares against stays in step with what was applied.
  std::lock_guard guard{watch_mtx_};
  log_->info("re-reading profile {}", with_profile([](const image_profile& p) {
               return p.file.string();
             }));
  check_files(true);
}

void kernel::stop() {
  if (stopped_)
    return;
  stopped_ = true;
  if (group_watcher_.joinable()) {
    group_watch_->stop();
    group_watcher_.join();
  }
  if (watcher_.joinable()) {
    {
      std::lock_guard guard{watch_mtx_};
      watch_stop_ = true;
    }
    watch_cv_.notify_all();
    watcher_.join();
  }
  if (control_)
    control_->stop();
  if (metrics_)
    metrics_->stop();
  host_->stop_all();
  for (auto [svc, ep] : {std::pair{&group_service_, &group_ep_},
                         std::pair{&control_service_, &control_ep_}})
    if (*ep) {
      bus_.unserve_all(*ep);
      caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
      ep->reset();
    }
  log_->info("stopped");
  log_->flush();
}

caf::expected<Envelope> kernel::request(std::string_view topic, std::string payload,
                                        std::chrono::milliseconds timeout) {
  Envelope env;
  env.set_topic(std::string{topic});
  env.set_payload(std::move(payload));
  return request(std::move(env), timeout);
}

caf::expected<Envelope> kernel::request(Envelope env, std::chrono::milliseconds timeout) {
  if (auto err = validate_topic(env.topic()))
    return err;
  auto target = bus_.route_request(env.topic());
  if (!target)
    return make_error(errc::no_route, "nobody serves '" + env.topic() + "'");
  if (env.source().empty())
    env.set_source(std::string{kernel_source});
  if (auto err = bus_.check_payload(env))
    return err;
  env.set_id(bus_.next_id());
  env.set_reply_to("kernel/" + std::to_string(env.id()));
  auto self = take_requester();
  caf::expected<Envelope> result{caf::error{}};
  bool timed_out = false;
  // What this thread wrote into the request, for the slot (its consume acquires).
  GROVE_TSAN_RELEASE(target.get());
  // No CAF request timeout: it is an event for the actor clock's thread, which wakes to
  // file it and again to cancel it, twice per call. The receive's own deadline is a wait
  // on the requester's condition variable.
  auto handle = (*self)->request(target->handle(), caf::infinite, bus::wrap(std::move(env)));
  caf::blocking_actor::accept_one_cond one;
  (*self)->varargs_receive(
    one, handle.id(), [&](Envelope& reply) { result = std::move(reply); },
    [&](caf::error& err) { result = std::move(err); },
    caf::after(timeout) >> [&] { timed_out = true; });
  // Pairs with the isolated slot's reader thread, which may have written the reply.
  GROVE_TSAN_ACQUIRE(target.get());
  if (timed_out)
    // Not given back: a late reply would wait in its mailbox for the next caller.
    return make_error(errc::timeout, "request timed out");
  give_back(std::move(self));
  return checked_reply(std::move(result));
}

std::unique_ptr<caf::scoped_actor> kernel::take_requester() {
  {
    std::lock_guard guard{requesters_mtx_};
    if (!requesters_.empty()) {
      auto self = std::move(requesters_.back());
      requesters_.pop_back();
      return self;
    }
  }
  // Hidden: a requester waiting in the pool is not a running actor the system awaits.
  return std::make_unique<caf::scoped_actor>(*sys_, true);
}

void kernel::give_back(std::unique_ptr<caf::scoped_actor> self) {
  // As many as were ever in flight at once, up to a bound.
  constexpr size_t max_idle_requesters = 64;
  std::lock_guard guard{requesters_mtx_};
  if (requesters_.size() < max_idle_requesters)
    requesters_.push_back(std::move(self));
}

caf::error kernel::wait_served(std::string_view topic, std::chrono::milliseconds timeout) {
  if (auto err = validate_topic(topic))
    return err;
  struct state {
    std::mutex mtx;
    std::condition_variable cv;
    bool served = false;
  };
  auto st = std::make_shared<state>();
  auto id = bus_.watch_served(topic, [st] {
    std::lock_guard guard{st->mtx};
    st->served = true;
    st->cv.notify_all();
  });
  std::unique_lock guard{st->mtx};
  if (st->cv.wait_for(guard, timeout, [&] { return st->served; }))
    return {};
  guard.unlock();
  bus_.cancel_watch(id);
  return make_error(errc::timeout, "nobody served '" + std::string{topic} + "' within "
                                     + std::to_string(timeout.count()) + " ms");
}

std::shared_ptr<const group::Group> kernel::group() const {
  std::lock_guard guard{group_mtx_};
  return group_;
}

caf::expected<std::shared_ptr<const group::Group>>
kernel::set_group(std::string_view caller, const std::string& document,
                  std::optional<uint64_t> expected_version) {
  // Who may: the profile says, per plugin (may_set_group).
  auto allowed = with_profile([&](const image_profile& p) {
    for (const auto& spec : p.plugins)
      if (spec.name == caller)
        return spec.may_set_group;
    return false;
  });
  if (!allowed)
    return make_error(errc::not_authorized,
                      "'" + std::string{caller}
                        + "' may not replace the group: its profile entry has no "
                          "may_set_group: true");
  // One change at a time, with the file watcher and SIGHUP.
  std::lock_guard guard{watch_mtx_};
  auto file = with_profile([](const image_profile& p) { return p.group_file; });
  if (file.empty())
    return make_error(errc::invalid_state, "this image has no group file (kernel.group)");
  if (expected_version) {
    // An edit of the file the watcher has not applied yet is a change too: read it first
    // (a kernel that does not watch its files applies edits only when told, on SIGHUP).
    if (options_.watch_profile)
      check_group_file();
    auto in_force = group();
    auto now = in_force ? in_force->version() : 0;
    if (now != *expected_version) {
      log_->warn("group from {} refused: computed from version {}, version {} is in force",
                 caller, *expected_version, now);
      return make_error(errc::conflict,
                        "the group changed since it was read: the document was computed "
                        "from version "
                          + std::to_string(*expected_version) + ", version "
                          + std::to_string(now)
                          + " is in force; read it again and recompute the change");
    }
    // An edit never applied (not watched, or refused) leaves the version as it was, and
    // the set would write over it: the file must hold the text of the version in force.
    auto on_disk = read_file(file);
    std::string in_force_text;
    {
      std::lock_guard group_guard{group_mtx_};
      in_force_text = group_in_force_text_;
    }
    if (on_disk != in_force_text) {
      log_->warn("group from {} refused: {} has an edit not in force", caller, file.string());
      return make_error(errc::conflict,
                        "the group file has an edit not in force: " + file.string()
                          + " differs from the text of version " + std::to_string(now)
                          + " (an edit not applied yet, or refused); apply or undo it "
                            "(SIGHUP, grovectl reload) and try again");
    }
  }
  // Validated as the file would be, from the temporary file beside it: a refused group
  // never reaches the group file.
  bool refused = false;
  auto check = [&](const std::filesystem::path& tmp) -> caf::error {
    auto checked = load_group(tmp);
    if (checked)
      return {};
    refused = true;
    // The reader names the temporary file; the caller knows it as the group it sent.
    auto what = describe(checked.error());
    for (auto at = what.find(tmp.string()); at != std::string::npos;
         at = what.find(tmp.string()))
      what.replace(at, tmp.string().size(), "group");
    return make_error(errc::invalid_config, what);
  };
  if (auto err = write_file_atomically(file, document, {.mode = 0600, .check = check})) {
    // The file is replaced, only its directory fsync failed: the new group is the one on
    // disk, so stamp and reload go on (the watcher would otherwise take it as an edit).
    if (replaced_not_durable(err)) {
      log_->warn("group from {} written: {}", caller, message_of(err));
    } else {
      if (refused) {
        log_->error("group from {} refused, the group in force is kept: {}", caller,
                    message_of(err));
        release_free_pages();
      }
      return err;
    }
  }
  // What the watcher compares against: the file is what we just wrote.
  group_stamp_ = file_stamp(file);
  group_text_ = document;
  log_->info("group replaced by {} ({} bytes)", caller, document.size());
  if (auto err = reload_group())
    return err;
  return group();
}

caf::error kernel::reload_group() {
  auto t0 = std::chrono::steady_clock::now();
  auto file = with_profile([](const image_profile& p) { return p.group_file; });
  // Read before the load: a later edit makes them differ, which a compare-and-set takes
  // as an edit not in force (a conflict), never the other way round.
  auto text = read_file(file);
  auto next = load_group(file);
  // Logged with the group: the cost of a change at the limits, stage by stage (the
  // change path's bench reads it; issue 9).
  std::chrono::duration<double, std::milli> parse_ms = std::chrono::steady_clock::now() - t0;
  if (!next) {
    log_->error("group refused, the group in force is kept: {}", describe(next.error()));
    release_free_pages(); // a refused group went through the YAML tree
    return next.error();
  }
  std::shared_ptr<const group::Group> g;
  {
    std::lock_guard guard{group_mtx_};
    next->set_version(group_ ? group_->version() + 1 : 1);
    g = group_ = std::make_shared<const group::Group>(std::move(*next));
    group_in_force_text_ = std::move(text);
  }
  log_->info("group {} version {}: {} devices, {} functions, {} subscriptions (read in "
             "{:.1f} ms)",
             g->name(), g->version(), g->devices_size(), g->functions_size(),
             g->subscriptions_size(), parse_ms.count());
  apply_loggers(*g);
  Envelope msg;
  msg.set_topic("$grove/group/current");
  msg.set_source(std::string{kernel_source});
  msg.set_content_type(group_client::get_rpc::response_type());
  msg.set_payload(g->SerializeAsString());
  if (auto r = bus_.publish(std::move(msg), kernel_source); !r)
    log_->error("group {} version {} not published: {}", g->name(), g->version(),
                describe(r.error()));
  release_free_pages();
  return {};
}

namespace {

/// spdlog's name for a Greengrass logger level (the group reader checked it).
std::string spdlog_level_of(const std::string& level) {
  if (level == "DEBUG")
    return "debug";
  if (level == "INFO")
    return "info";
  if (level == "WARN")
    return "warn";
  if (level == "ERROR")
    return "error";
  return "critical"; // FATAL
}

/// The profile's name of a level (`kernel.log_level`'s enum: warn, not spdlog's warning).
std::string level_name(spdlog::level::level_enum l) {
  if (l == spdlog::level::warn)
    return "warn";
  return std::string{spdlog::level::to_string_view(l).data()};
}

} // namespace

void kernel::apply_loggers(const group::Group& g) {
  std::string id;
  std::string level;
  for (const auto& l : g.loggers())
    if (l.component() == "GreengrassSystem") {
      id = l.id();
      level = spdlog_level_of(l.level());
    }
  {
    std::lock_guard guard{group_mtx_};
    if (loggers_applied_ && id == system_logger_ && level == system_level_)
      return;
    loggers_applied_ = true;
    system_logger_ = id;
    system_level_ = level;
  }
  // No logger: the level in force at start, not the profile file's now (a changed
  // kernel.log_level waits for the next start, as apply_profile_change says).
  auto next = level.empty() ? start_level_ : level;
  auto before = log_->level();
  auto after = spdlog::level::from_str(next);
  auto say = [&] {
    if (id.empty())
      log_->info("log level {}: the image profile's (no GreengrassSystem logger)", next);
    else
      log_->info("log level {}: the group's GreengrassSystem logger '{}'", next, id);
  };
  // Said while the more verbose of the two levels is in force, so that it shows when
  // either level lets info lines through.
  if (after > before)
    say();
  log_->set_level(after);
  host_->set_log_level(level);
  if (after <= before)
    say();
}

control::Status kernel::status() {
  control::Status st;
  st.set_version(kernel_version);
  st.set_pid(static_cast<uint32_t>(getpid()));
  st.set_uptime_seconds(
    std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
  with_profile([&](const image_profile& p) {
    st.set_config_file(p.file.string());
    st.set_write_dir(p.write_dir.string());
    st.set_plugin_dir(p.plugin_dir.string());
    st.set_control_socket(p.control_socket.string());
  });
  auto bs = bus_.stats();
  st.set_bus_published(bs.published);
  st.set_bus_delivered(bs.delivered);
  st.set_bus_dropped(bs.dropped);
  st.set_bus_unrouted(bs.unrouted);
  st.set_subscriptions(bs.subscriptions);
  st.set_bus_refused_not_owner(bs.refused_not_owner);
  st.set_bus_refused_too_large(bs.refused_too_large);
  for (auto& p : host_->list())
    *st.add_plugins() = std::move(p);
  for (auto& [k, v] : host_->details())
    (*st.mutable_details())[k] = v;
  st.set_log_level(level_name(log_->level()));
  {
    std::lock_guard guard{group_mtx_};
    // groved logs to stderr (journald under systemd) only: there is no file of its own
    // whose size a logger's space_kb could cap.
    (*st.mutable_details())["kernel.log"]
      = level_name(log_->level())
        + (system_logger_.empty() ? " (image profile)"
                                  : " (group logger '" + system_logger_ + "', GreengrassSystem)")
        + "; stderr only, no log file to cap";
  }
  if (auto g = group())
    (*st.mutable_details())["kernel.group"]
      = g->name() + " version " + std::to_string(g->version()) + ": "
        + std::to_string(g->devices_size()) + " devices, "
        + std::to_string(g->functions_size()) + " functions, "
        + std::to_string(g->subscriptions_size()) + " subscriptions";
  return st;
}

std::string kernel::scrape() {
  std::string out;
  write_prometheus(status(), out);
  return out;
}

image_profile kernel::profile() const {
  std::lock_guard guard{profile_mtx_};
  return profile_;
}

uint16_t kernel::metrics_port() const noexcept {
  return metrics_ ? metrics_->port() : 0;
}

control::Plugins kernel::plugins() {
  control::Plugins result;
  for (auto& p : host_->list())
    *result.add_plugins() = std::move(p);
  return result;
}

caf::error kernel::load(const std::string& name) {
  // One change at a time, with profile changes and the control service's loads.
  std::lock_guard guard{apply_mtx_};
  // A copy: the watcher may replace the profile while this plugin starts.
  auto spec = with_profile([&](const image_profile& p) {
    for (auto& s : p.plugins)
      if (s.name == name)
        return s;
    plugin_spec s;
    s.name = name;
    s.queue = p.queue;
    return s;
  });
  // The over-profile document in force (the deployment's bridge) merged on top, as for
  // the control service's load: else grovectl's unload + load would run without it.
  if (auto o = overlays_.find(name); o != overlays_.end()) {
    auto merged = with_overlay(spec.config, o->second);
    if (!merged)
      return std::move(merged.error());
    spec.config = std::move(*merged);
  }
  auto result = host_->load(spec);
  schedule_code_trim(); // the new plugin's start-up code
  return result;
}

caf::error kernel::serve_kernel_service(
  std::string name, std::function<caf::expected<Envelope>(const Envelope&)> answer,
  std::initializer_list<std::string_view> topics, caf::actor& svc, endpoint_ptr& ep) {
  auto box = std::make_shared<endpoint_ptr>();
  svc = sys_->spawn<kernel_service, caf::detached>(std::move(answer), box);
  ep = std::make_shared<endpoint>(std::move(name), svc, profile_.queue);
  *box = ep;
  for (auto topic : topics)
    if (auto err = bus_.serve(ep, topic))
      return err;
  return {};
}

caf::expected<Envelope> kernel::control_request(const Envelope& msg) {
  namespace cc = control_client;
  const auto& caller = msg.source();
  auto answer = [&](const google::protobuf::MessageLite& body, std::string type) {
    Envelope reply;
    reply.set_topic(msg.reply_to());
    reply.set_source(std::string{kernel_source});
    reply.set_content_type(std::move(type));
    reply.set_payload(body.SerializeAsString());
    return reply;
  };
  if (msg.topic() == cc::status_topic) {
    if (auto req = service<control::Empty, control::Status>::decode(msg); !req)
      return std::move(req.error());
    return answer(status(), cc::status_rpc::response_type());
  }
  // The rest changes plugins: the profile says who may, as for the group.
  auto allowed = with_profile([&](const image_profile& p) {
    for (const auto& spec : p.plugins)
      if (spec.name == caller)
        return spec.may_control_plugins;
    return false;
  });
  if (!allowed)
    return make_error(errc::not_authorized,
                      "'" + caller
                        + "' may not control plugins: its profile entry has no "
                          "may_control_plugins: true");
  // A plugin waiting for its own stop would wait for itself.
  auto other = [&](const std::string& name, const char* verb) -> caf::error {
    if (name == caller)
      return make_error(errc::invalid_state,
                        "'" + caller + "' cannot " + verb + " itself; an operator or "
                                                            "another plugin can");
    return {};
  };
  auto parse_config = [&](const std::string& name,
                          const std::string& doc) -> caf::expected<yaml_ptr> {
    try {
      return make_yaml(YAML::Load(doc)); // JSON is YAML
    } catch (const std::exception& e) {
      return make_error(errc::invalid_config,
                        "config of '" + name + "' is not YAML or JSON: " + e.what());
    }
  };
  auto info_of = [&](const std::string& name) -> caf::expected<Envelope> {
    for (auto& p : host_->list())
      if (p.name() == name)
        return answer(p, cc::load_rpc::response_type());
    return make_error(errc::unknown_plugin, "no plugin '" + name + "' is loaded");
  };
  if (msg.topic() == cc::load_topic || msg.topic() == cc::configure_topic) {
    auto req = service<control::PluginChange, control::PluginInfo>::decode(msg);
    if (!req)
      return std::move(req.error());
    bool load = msg.topic() == cc::load_topic;
    if (auto err = other(req->name(), load ? "load" : "reconfigure"))
      return err;
    std::filesystem::path library;
    std::filesystem::path library_copy;
    // The checked copy goes once loaded (the mapping stays) or refused.
    struct remove_copy {
      std::filesystem::path* p;
      ~remove_copy() {
        std::error_code ec;
        if (!p->empty())
          std::filesystem::remove(*p, ec);
      }
    } copy_guard{&library_copy};
    if (!req->path().empty()) {
      if (!load)
        return make_error(errc::unsupported, "a configure names no library; use reload with "
                                             "a path to change a plugin's library");
      auto checked = with_profile([&](const image_profile& p) {
        return library_of_caller(p.write_dir, caller, req->path());
      });
      if (!checked) {
        log_->error("{} asked to load plugin {} from {}: refused: {}", caller, req->name(),
                    req->path(), describe(checked.error()));
        return std::move(checked.error());
      }
      library = std::move(checked->reported);
      library_copy = std::move(checked->copy);
    }
    std::optional<plugin_spec> spec;
    if (load) {
      spec = with_profile([&](const image_profile& p) {
        for (auto& s : p.plugins)
          if (s.name == req->name())
            return s;
        plugin_spec s;
        s.name = req->name();
        s.queue = p.queue;
        return s;
      });
    } else if (spec = host_->spec_of(req->name()); !spec) {
      // Its over-profile document outlives an unload, so an empty one still drops it
      // (the deployment removing the bridge while message_manager is not loaded).
      if (req->over_profile() && req->config().empty()) {
        std::lock_guard guard{apply_mtx_};
        overlays_.erase(req->name());
      }
      return make_error(errc::unknown_plugin, "no plugin '" + req->name() + "' is loaded");
    }
    if (req->over_profile() && load)
      return make_error(errc::unsupported, "over_profile is for a configure, not a load");
    yaml_ptr overlay;
    if (!req->config().empty() || !load) {
      auto cfg = parse_config(req->name(), req->config());
      if (!cfg)
        return std::move(cfg.error());
      if (req->over_profile())
        overlay = *cfg;
      spec->config = std::move(*cfg);
      spec->file = "(config from " + caller + ")";
      spec->line = 0;
    }
    std::lock_guard guard{apply_mtx_}; // one change at a time, with profile changes
    if (overlay) {
      // Merged under apply_mtx_: a profile change cannot slip in between.
      auto merged = with_overlay(profile_config(profile_, req->name()), overlay);
      if (!merged)
        return std::move(merged.error());
      spec->config = std::move(*merged);
    } else if (auto o = overlays_.find(req->name()); o != overlays_.end()) {
      // A whole configuration (an operator's configure) or a load is a new base: the
      // over-profile document in force stays merged on top, as over a profile change,
      // so what its caller reports (the bridge component RUNNING) stays true.
      auto merged = with_overlay(spec->config, o->second);
      if (!merged)
        return std::move(merged.error());
      spec->config = std::move(*merged);
    }
    if (load) {
      auto err = host_->load(*spec, library_copy, library);
      schedule_code_trim();
      if (err)
        return err;
    } else if (auto r = host_->reconfigure(*spec); !r) {
      return std::move(r.error());
    }
    // Kept for profile changes, configures and loads (all merge it again); only an
    // empty over-profile document drops it.
    if (req->over_profile()) {
      if (overlay && overlay->IsDefined() && !overlay->IsNull())
        overlays_[req->name()] = overlay;
      else
        overlays_.erase(req->name());
    }
    log_->info("{} {} plugin {}{}", caller, load ? "loaded" : "reconfigured", req->name(),
               library.empty() ? std::string{} : " from " + library.string());
    return info_of(req->name());
  }
  if (msg.topic() == cc::unload_topic) {
    auto req = service<control::Name, control::Empty>::decode(msg);
    if (!req)
      return std::move(req.error());
    if (auto err = other(req->name(), "unload"))
      return err;
    std::lock_guard guard{apply_mtx_};
    // The over-profile document stays: a later load merges it again.
    if (auto err = host_->unload(req->name()))
      return err;
    log_->info("{} unloaded plugin {}", caller, req->name());
    return answer(control::Empty{}, cc::unload_rpc::response_type());
  }
  if (msg.topic() == cc::reload_topic) {
    auto req = service<control::Reload, control::PluginInfo>::decode(msg);
    if (!req)
      return std::move(req.error());
    if (auto err = other(req->name(), "reload"))
      return err;
    // A path inside the caller's state directory is checked as for a load (an unsafe
    // file there is refused, so a refused load is not loaded one step later by a
    // reload). A path outside it is what a plugin with may_control_plugins could always
    // name (ota's new release directory): reloaded as given, as before.
    std::filesystem::path library;
    std::filesystem::path library_copy;
    if (!req->path().empty()) {
      auto checked = with_profile([&](const image_profile& p) {
        return library_of_caller(p.write_dir, caller, req->path());
      });
      if (checked) {
        library = std::move(checked->reported);
        library_copy = std::move(checked->copy);
      } else if (checked.error() == errc::not_authorized) {
        library_copy = req->path();
      } else {
        log_->error("{} asked to reload plugin {} from {}: refused: {}", caller, req->name(),
                    req->path(), describe(checked.error()));
        return std::move(checked.error());
      }
    }
    struct remove_copy {
      std::filesystem::path* p;
      ~remove_copy() {
        std::error_code ec;
        if (!p->empty())
          std::filesystem::remove(*p, ec);
      }
    } copy_guard{library.empty() ? &library : &library_copy}; // only the kernel's own copy
    std::lock_guard guard{apply_mtx_};
    auto r = host_->reload(req->name(), library_copy, library);
    schedule_code_trim();
    if (!r)
      return std::move(r.error());
    log_->info("{} reloaded plugin {}: {}", caller, req->name(), *r);
    return info_of(req->name());
  }
  return make_error(errc::no_route, "the kernel serves no '" + msg.topic() + "'");
}

caf::error kernel::unload(const std::string& name) {
  return host_->unload(name);
}

caf::expected<std::string> kernel::reload(const std::string& name,
                                          const std::string& path) {
  auto result = host_->reload(name, path);
  schedule_code_trim();
  return result;
}

caf::expected<std::vector<std::string>> kernel::apply_profile_change() {
  std::lock_guard guard{apply_mtx_};
  profile_overrides ov;
  ov.write_dir = profile_.write_dir;
  ov.plugin_dir = profile_.plugin_dir;
  auto next = load_profile(profile_.file, ov);
  if (!next) {
    log_->error("profile change refused, running configuration kept: {}",
                describe(next.error()));
    return next.error();
  }
  std::vector<std::string> actions;
  if (next->log_level != profile_.log_level || next->worker_threads != profile_.worker_threads
      || next->queue.capacity != profile_.queue.capacity
      || next->restart.max_failures != profile_.restart.max_failures)
    actions.push_back("kernel settings changed: they apply at the next start of groved");
  auto find = [](const image_profile& p, const std::string& name) -> const plugin_spec* {
    for (auto& s : p.plugins)
      if (s.name == name)
        return &s;
    return nullptr;
  };
  for (auto& old_spec : profile_.plugins)
    if (!find(*next, old_spec.name) && host_->spec_of(old_spec.name)) {
      // Its over-profile document stays, as over an unload: merged again at a load.
      auto err = host_->unload(old_spec.name);
      actions.push_back("unloaded " + old_spec.name
                        + (err ? ": " + describe(err) : std::string{}));
    }
  for (auto& spec : next->plugins) {
    auto running = host_->spec_of(spec.name);
    auto overlay = overlays_.find(spec.name);
    if (!running) {
      auto loading = spec;
      caf::error err;
      if (auto want = with_overlay(spec.config,
                                   overlay == overlays_.end() ? nullptr : overlay->second)) {
        loading.config = std::move(*want);
        err = host_->load(loading);
      } else {
        err = std::move(want.error());
      }
      actions.push_back(err ? "load of " + spec.name + " failed: " + describe(err)
                            : "loaded " + spec.name);
      continue;
    }
    // A configure over the profile stays in force: compared and applied merged over the
    // new entry.
    auto want = spec;
    if (overlay != overlays_.end()) {
      auto merged = with_overlay(spec.config, overlay->second);
      if (!merged) {
        actions.push_back("reconfiguration of " + spec.name + " refused, old configuration "
                          "kept: " + describe(merged.error()));
        continue;
      }
      want.config = std::move(*merged);
    }
    if (to_yaml(*running->config) != to_yaml(*want.config)) {
      auto r = host_->reconfigure(want);
      actions.push_back(r ? "reconfigured " + spec.name + ": " + *r
                          : "reconfiguration of " + spec.name
                              + " refused, old configuration kept: "
                              + describe(r.error()));
    }
  }
  for (auto& a : actions)
    log_->info("profile change: {}", a);
  {
    std::lock_guard profile_guard{profile_mtx_};
    profile_ = std::move(*next);
  }
  return actions;
}

caf::expected<publish_result> kernel::publish(Envelope msg) {
  if (msg.source().empty())
    msg.set_source("grovectl");
  else if (msg.source() == kernel_source) [[unlikely]]
    return make_error(errc::not_authorized, "grovectl may not send as 'kernel'");
  return bus_.publish(std::move(msg), "grovectl");
}

caf::expected<std::shared_ptr<void>>
kernel::subscribe(const std::string& filter, std::function<void(const Envelope&)> sink) {
  return subscribe(filter, std::move(sink),
                   with_profile([](const image_profile& p) { return p.queue; }));
}

caf::expected<std::shared_ptr<void>>
kernel::subscribe(const std::string& filter, std::function<void(const Envelope&)> sink,
                  queue_settings queue) {
  if (auto err = validate_filter(filter))
    return err;
  auto box = std::make_shared<endpoint_ptr>();
  auto state = std::make_shared<sink_state>();
  state->fn = std::move(sink);
  auto actor = sys_->spawn<sink_actor>(state, box);
  auto ep = std::make_shared<endpoint>("subscriber:" + filter, actor, queue);
  *box = ep;
  if (auto err = bus_.subscribe(ep, filter)) {
    caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    return err;
  }
  return std::shared_ptr<void>{
    std::make_shared<subscription_handle>(&bus_, ep, std::move(state))};
}

} // namespace grove
