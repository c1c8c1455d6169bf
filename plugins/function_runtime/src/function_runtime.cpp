// function_runtime: the design card's "lambda runtime". Runs the group's user functions
// (functions[].config) as worker processes on grove::process, one work item per instance
// at a time, fed from message_manager (mm-1), PUB_SUB event sources and direct
// invocation, and talks to each instance over its own socketpair with length-prefixed
// grove.fn.Frame messages (function.proto, the kernel's framing). See README.md.

#include <fcntl.h>
#include <pthread.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "code_archive.hpp"
#include "function_def.hpp"
#include "function_log.hpp"
#include "grove/function_snapshot.pb.h"
#include "ipc.hpp"
#include "python_runtime.hpp"
#include "sandbox.hpp"
#include "grove/config_map.hpp"
#include "grove/function_runtime/client.hpp"
#include "grove/kernel/framing.hpp"
#include "grove/kernel/group_client.hpp"
#include "grove/local_resources/client.hpp"
#include "grove/message_manager/client.hpp"
#include "grove/ml_inference/client.hpp"
#include "grove/supervision.hpp"
#include "grove/topic.hpp"
#include "grove/utf8.hpp"

namespace {

using namespace std::chrono_literals;
using grove::errc;
using grove::make_error;
namespace fs = std::filesystem;
namespace gfn = grove::fn;
namespace names = grove::function::names;

/// Where message_manager hands messages to functions (mm-1).
constexpr std::string_view mm_function_prefix = "$grove/mm/out/function/";

/// How long a function with local resources waits for local_resources to serve lr-1
/// (it may load after this plugin) before it is refused for want of it.
constexpr std::chrono::milliseconds local_resources_wait{5000};

/// Bytes of Invoke frames sent ahead to a busy worker (items behind the one in its
/// handler). A worker does not read while its handler runs, so they sit in the socket
/// buffer: well under send_buffer_bytes, a send never waits (and never holds the actor).
constexpr size_t send_ahead_bytes = 64u << 10;

/// How long an instance's exit waits for its reader's EOF (and the Results before it)
/// when items were sent ahead: the exit notice and the frames come on different threads.
constexpr std::chrono::milliseconds exit_wait{1000};

/// Longest a starting instance holds back an item for itself (statusTimeoutInSeconds if
/// shorter): past it, or once the start failed, the item goes ahead to a busy instance.
constexpr std::chrono::milliseconds start_reserve{1000};

/// How long after a start the function's next spare sandbox is prepared (keep_spare):
/// past that worker's start and first item (~1-3 ms here), not competing with them.
constexpr std::chrono::milliseconds spare_delay{25};

/// How long a hot reload waits, in all, for the stopped workers' last frames (their
/// sockets' EOF) before it takes the runtime's state (snapshot()).
constexpr std::chrono::milliseconds reload_drain_wait{2000};

/// SO_SNDBUF of the runtime's end of each socketpair, set explicitly: room for the bytes
/// sent ahead and the call replies and acks the worker reads while its handler runs.
constexpr int send_buffer_bytes = 256 << 10;

/// One work item: a message for a function, and the request to answer, if any (whose
/// payload, source and content type have moved to the item's own fields).
struct work_item {
  uint64_t seq = 0;
  std::optional<grove::Envelope> request;
  std::string payload;
  std::string subject;
  std::string source;
  std::string content_type;
  size_t frame_bytes = 0; // its Invoke frame's size once sent (the budget sent ahead)

  /// The bytes it holds while queued (max_queue_bytes counts these).
  size_t bytes() const {
    return payload.size() + subject.size() + source.size() + content_type.size();
  }
};

enum class inst_state { starting, idle, busy, ending };

/// Frames an instance's reader has read and the actor has not handled yet. The reader
/// pushes each batch here and posts a drain; a hot reload drains it in snapshot() itself
/// (a posted drain would be dropped with the old instance), so a Result the worker sent
/// before it was stopped still answers its item.
struct frame_inbox {
  struct batch {
    std::vector<gfn::Frame> frames;
    int64_t bytes = 0;
  };
  std::mutex mtx;
  std::condition_variable cv;
  std::deque<batch> batches;
  bool done = false; // the reader has stopped (EOF, an error, a flood)
  // When the reader last read bytes from the worker (steady clock, ns): the status
  // watchdog's (statusTimeoutInSeconds) measure, taken where the bytes arrive, so an
  // actor that is slow to drain never makes a live worker look silent.
  std::atomic<int64_t> heard_ns{0};

  void heard() {
    heard_ns.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                   std::memory_order_relaxed);
  }

  void push(batch b) {
    std::lock_guard guard{mtx};
    batches.push_back(std::move(b));
  }

  std::deque<batch> take() {
    std::lock_guard guard{mtx};
    return std::exchange(batches, {});
  }

  void finish() {
    {
      std::lock_guard guard{mtx};
      done = true;
    }
    cv.notify_all();
  }

  /// Waits until the reader has stopped or `deadline` passed; true if it stopped.
  bool wait_done(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock guard{mtx};
    return cv.wait_until(guard, deadline, [this] { return done; });
  }
};

/// One worker process and its end of the socketpair.
struct instance {
  uint64_t id = 0;
  std::string token;
  int fd = -1;
  // GreengrassContainer: the instance's cgroup, removed after the process (declared first).
  std::unique_ptr<gfn::instance_cgroup> cgroup;
  grove::process proc;
  std::thread reader;
  // Frames read but not yet handled on the actor, and their bytes (the reader's bound).
  std::shared_ptr<std::atomic<int64_t>> pending = std::make_shared<std::atomic<int64_t>>(0);
  std::shared_ptr<std::atomic<int64_t>> pending_bytes
    = std::make_shared<std::atomic<int64_t>>(0);
  std::shared_ptr<frame_inbox> inbox = std::make_shared<frame_inbox>();
  inst_state state = inst_state::starting;
  // Items sent to the worker, in order: the front one is in its handler, the others wait
  // in its pipeline (Hello.pipeline, at most `pipeline` in all).
  std::deque<work_item> items;
  uint32_t pipeline = 1;
  // Frame bytes of items[1..]: sent ahead, not read yet (at most send_ahead_bytes).
  size_t ahead_bytes = 0;
  grove::timer_id hello_timer = 0;
  // A pinned instance whose Hello said `status`: checks that it keeps reporting.
  grove::timer_id status_timer = 0;
  std::chrono::steady_clock::time_point started{}; // when its process was started
  // One timer checks the front item's deadline; it is re-armed when it fires early, not
  // set per item (each set costs a message through CAF's clock thread).
  grove::timer_id deadline_timer = 0;
  std::chrono::steady_clock::time_point deadline{};
  std::chrono::steady_clock::time_point deadline_armed{}; // when the armed timer fires
  std::chrono::steady_clock::time_point hwm_read{};
  uint64_t idle_gen = 0;
  int64_t publishes_in_flight = 0;
  // Bytes for the worker its socket did not take yet (write_out), from out_off on, in
  // order; retried on out_timer, every out_retry (doubling while no byte goes).
  std::string out;
  size_t out_off = 0;
  grove::timer_id out_timer = 0;
  std::chrono::milliseconds out_retry{1};
  bool retire = false;     // its definition changed: end it once idle, start anew
  bool recall = false;     // retired with items sent ahead: a Recall went, Recalled awaited
  bool saw_hello = false;
  bool orderly = false;    // the runtime ended it with no fault (idle, retired)
  bool faulted = false;    // the runtime ended it for a fault, already counted
  bool item_fault = false; // it ended on an item (timeout, fault): the item's failure
  bool reader_done = false; // the reader posted its last frames and stopped
  // Its exit, held until reader_done (or exit_wait): it takes no work meanwhile.
  std::optional<grove::process_exit> exit_notice;
  pid_t pid = 0;
};

/// One function: its definition and instances, queue and counters.
struct function_state {
  std::string name;
  std::optional<gfn::function_def> def;
  uid_t uid = 0;
  gid_t gid = 0;
  std::filesystem::path code_dir; // codeUri, or where its archive was unpacked
  std::string def_error;
  // Local resources (lr-1): what its policies resolve to in the group version in force,
  // and the groups they add; while an answer is awaited no instance starts.
  std::vector<gfn::resource_mount> mounts;
  std::vector<gid_t> groups;
  uint64_t mounts_request = 0; // the request awaited; 0: none
  // ML model resources its policies name: the models its infer verb may use (ml-1). They
  // are grants, not mounts, so they are not asked of local_resources.
  std::set<std::string> granted_models;
  std::deque<work_item> queue;
  size_t queue_bytes = 0; // work_item::bytes() of `queue` (push_queue, pop_queue)
  std::map<uint64_t, std::unique_ptr<instance>> instances;
  // Items sent ahead to its instances (behind the one in each handler): counted as they
  // come and go, so nothing scans the instances per item.
  size_t sent_ahead = 0;
  // The instance that got the last item sent ahead: the next round starts after it.
  uint64_t ahead_cursor = 0;
  // Failed starts (no hello): back-off, and give-up under the kernel's restart policy.
  grove::failure_tracker failures;
  // Deaths of a pinned instance while idle: back-off only, never a give-up.
  grove::failure_tracker idle_deaths;
  // Instances ended by their items (crash, timeout) with no result between: the first is
  // replaced at once, a run of them backs off (never a give-up).
  grove::failure_tracker item_deaths;
  uint32_t item_death_run = 0;
  grove::timer_id backoff_timer = 0;
  // After a give-up: tries starting again when it fires (give_up_retry_ms).
  grove::timer_id give_up_timer = 0;
  // Moves items held for a starting instance on when its start reserve ends.
  grove::timer_id reserve_timer = 0;
  bool gave_up = false;
  bool removed = false;
  uint64_t invocations = 0, errors = 0, timeouts = 0, refused = 0;
  uint64_t memory_hwm_kb = 0;
  uint64_t output_dropped = 0; // output lines its log did not get (process on_dropped)
  // Failed no-ack publishes (publish_nowait): the first of a window is logged, the rest
  // counted (with the last one's text) and logged as one line when the window closes.
  bool nowait_window = false;
  uint64_t nowait_failed = 0;
  std::string nowait_last;
  std::string last_error;
  std::unique_ptr<gfn::function_log> log;
  // GreengrassContainer: an instance's sandbox prepared ahead for its next start
  // (keep_spare) and its sandbox::key, the request making one (0: none), and whether
  // one could not be made (not tried again until the definition or resources change).
  std::optional<gfn::instance_sandbox> spare;
  std::string spare_key;
  uint64_t spare_request = 0;
  bool spare_failed = false;
  // Its series of the runtime's metric families, looked up once (with() takes a lock).
  grove::counter invocations_c, errors_c, timeouts_c, refused_c;
  grove::gauge instances_g, queued_g, sent_ahead_g;
};

/// Sanitizer options `opts` without their `suppressions=` entries. A sandboxed function
/// program cannot see the suppression files (outside its root view), and a sanitizer that
/// cannot read one stops the program before main (TSan: exit 66).
std::string without_suppressions(std::string_view opts) {
  std::string out;
  while (!opts.empty()) {
    auto end = opts.find(':');
    auto item = opts.substr(0, end);
    opts = end == std::string_view::npos ? std::string_view{} : opts.substr(end + 1);
    if (item.empty() || item.starts_with("suppressions="))
      continue;
    if (!out.empty())
      out += ':';
    out += item;
  }
  return out;
}

/// Random hex for tokens and invocation ids, from the kernel's CSPRNG: a function must not
/// predict another instance's token from the ids it sees.
std::string random_hex(size_t bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::vector<unsigned char> raw(bytes);
  size_t got = 0;
  while (got < bytes) {
    auto n = ::getrandom(raw.data() + got, bytes - got, 0);
    if (n > 0)
      got += static_cast<size_t>(n);
    else if (errno != EINTR)
      std::abort(); // no randomness (a kernel without getrandom): never run on weak tokens
  }
  std::string out;
  out.reserve(bytes * 2);
  for (auto b : raw) {
    out += digits[b >> 4];
    out += digits[b & 0xf];
  }
  return out;
}

/// True when a group resource's config is an ML model (ml_inference's kind of resource).
bool is_model_resource(const std::string& yaml) {
  try {
    auto node = YAML::Load(yaml);
    return node.IsMap()
           && node[std::string{grove::ml_inference::model_resource_key}].IsDefined();
  } catch (...) {
    return false;
  }
}

/// The name of `err`'s code as a function's infer verb reports it (malformed, no_route...).
std::string code_of(const caf::error& err) {
  if (err.category() == caf::atom("grove"))
    return grove::to_string(static_cast<errc>(err.code()));
  return grove::describe(err).substr(0, grove::describe(err).find(':'));
}

/// A name from a worker quoted in an error: cut (a bad one may be megabytes long).
std::string quoted(const std::string& name) {
  return "'" + grove::cut_utf8(name, 140) + (name.size() > 140 ? "...'" : "'");
}

/// VmHWM of `pid` in kB, 0 when unknown.
uint64_t memory_hwm_kb(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("VmHWM:"))
      return std::strtoull(line.c_str() + 6, nullptr, 10);
  return 0;
}

class function_runtime : public grove::typed_plugin<gfn::runtime_config> {
public:
  caf::error init(grove::context& ctx, const gfn::runtime_config& cfg) override {
    ctx_ = &ctx;
    cfg_ = cfg;
    invocation_prefix_ = random_hex(8) + "-";
    log_max_bytes_ = static_cast<uint64_t>(cfg_.log_max_bytes);
    log_files_ = static_cast<uint32_t>(cfg_.log_files);
    // state_dir is <write_dir>/plugins/<name>/: the logs go to <write_dir>/logs/.
    auto state = ctx.state_dir();
    if (!state.has_filename())
      state = state.parent_path();
    logs_dir_ = state.parent_path().parent_path() / "logs" / "functions";
    std::error_code ec;
    fs::create_directories(logs_dir_, ec);
    if (ec)
      return make_error(errc::init_failed,
                        "cannot create " + logs_dir_.string() + ": " + ec.message());
    auto inv = ctx.counter_family("invocations", "Work items a function answered.", "function");
    auto err = ctx.counter_family("errors", "Work items that ended in an error.", "function");
    auto tmo = ctx.counter_family("timeouts", "Work items that ran past timeoutInSeconds.",
                                  "function");
    auto ref = ctx.counter_family("refused", "Work refused: queue full, not JSON, invalid.",
                                  "function");
    auto ins = ctx.gauge_family("instances", "Running instances.", "function");
    auto que = ctx.gauge_family("queued", "Work items waiting.", "function");
    auto ahd = ctx.gauge_family("sent_ahead",
                                "Work items sent ahead to busy instances (part of queued).",
                                "function");
    if (!inv || !err || !tmo || !ref || !ins || !que || !ahd)
      return make_error(errc::init_failed, "function_runtime: cannot declare metrics");
    invocations_ = *inv, errors_ = *err, timeouts_ = *tmo, refused_ = *ref;
    instances_gauge_ = *ins, queued_gauge_ = *que, sent_ahead_gauge_ = *ahd;
    std::string invoke_filter{grove::function_runtime::invoke_prefix};
    invoke_filter += '+';
    if (auto e = ctx.serve(invoke_filter, [this](const grove::Envelope& req) { invoked(req); }))
      return e;
    using list_service = grove::service<gfn::ListRequest, gfn::FunctionList>;
    if (auto e = list_service::serve(ctx, grove::function_runtime::list_topic,
                                     [this](auto&, auto&) { return list(); }))
      return e;
    std::string event_filter{grove::function_runtime::event_prefix};
    event_filter += '+';
    for (std::string filter : {event_filter, std::string{mm_function_prefix} + "#",
                               std::string{grove::group_client::current_topic},
                               std::string{grove::local_resources::started_topic}})
      if (auto e = ctx.subscribe(filter))
        return e;
    return {};
  }

  caf::error start() override {
    if (restored_)
      take_over(*restored_);
    restored_.reset();
    grove::group_client::get(*ctx_, 10s, [this](caf::expected<grove::group::Group> g) {
      if (g)
        apply(*g);
      else if (g.error() == errc::no_route)
        ctx_->log().info("no group in this image: no functions");
      else
        ctx_->log().warn("cannot get the group: {}", grove::describe(g.error()));
    });
    status_timer_ = ctx_->every(1s, [this] { refresh_status(); });
    refresh_status();
    return {};
  }

  /// A hot reload: the workers are stopped and their last frames handled here; what no
  /// handler had started goes to the next instance (events, and requests, which it
  /// adopts: context::adopt_request); the item each handler was running is answered as
  /// interrupted. README.md, "Hot reload".
  caf::expected<std::string> snapshot() override {
    reloading_ = true; // nothing is dispatched or started from here on
    // A worker starts an item sent ahead only after it wrote the Result of the one
    // before: stopped now, with every frame it wrote handled below, an item that has no
    // Result and is not first in its instance never reached the handler.
    for (auto& [name, fn] : functions_)
      for (auto& [id, inst] : fn.instances)
        if (inst->proc)
          inst->proc.stop(SIGKILL, 0ms);
    auto deadline = std::chrono::steady_clock::now() + reload_drain_wait;
    for (auto& [name, fn] : functions_)
      for (auto& [id, inst] : fn.instances)
        if (!inst->inbox->wait_done(deadline))
          ctx_->log().warn("function '{}': instance {} did not close its socket at the "
                           "reload; frames it sends later are not read",
                           name, inst->pid);
    for (auto& [name, fn] : functions_)
      for (auto& [id, inst] : fn.instances) {
        auto inbox = inst->inbox;
        auto pending = inst->pending;
        auto bytes = inst->pending_bytes;
        drain(name, id, *inbox, *pending, *bytes);
      }
    for (auto& [name, fn] : functions_)
      flush_nowait(fn);
    gfn::Snapshot snap;
    snap.set_version(1);
    snap.set_group(group_bytes_);
    for (auto& [name, fn] : functions_) {
      std::vector<work_item> waiting_items;
      for (auto& [id, inst] : fn.instances) {
        close_channel(*inst);
        if (inst->items.empty())
          continue;
        auto& running = inst->items.front();
        note_error(fn, "stopped by a reload of function_runtime while its handler ran");
        answer_error(&fn, running,
                     make_error(errc::plugin_failed,
                                "function '" + name + "': its instance was stopped by a "
                                "reload of function_runtime while the handler ran (it may "
                                "have run in part)"));
        for (size_t i = 1; i < inst->items.size(); ++i)
          waiting_items.push_back(std::move(inst->items[i]));
        inst->items.clear();
        inst->ahead_bytes = 0;
      }
      fn.sent_ahead = 0;
      while (!fn.queue.empty())
        waiting_items.push_back(pop_queue(fn));
      // Items sent ahead left the queue before those still in it: back in arrival order.
      std::stable_sort(waiting_items.begin(), waiting_items.end(),
                       [](const work_item& a, const work_item& b) { return a.seq < b.seq; });
      for (auto& item : waiting_items) {
        // A request stays open in the kernel for the next instance to adopt and answer.
        auto* h = item.request ? snap.add_held_requests() : snap.add_held();
        if (item.request)
          h->set_request(item.request->SerializeAsString());
        h->set_seq(item.seq);
        h->set_function(name);
        h->set_payload(std::move(item.payload));
        h->set_subject(std::move(item.subject));
        h->set_source(std::move(item.source));
        h->set_content_type(std::move(item.content_type));
      }
      auto* st = snap.add_stats();
      st->set_function(name);
      st->set_invocations(fn.invocations);
      st->set_errors(fn.errors);
      st->set_timeouts(fn.timeouts);
      st->set_refused(fn.refused);
      st->set_last_error(fn.last_error);
      st->set_memory_hwm_kb(fn.memory_hwm_kb);
      st->set_output_lines_dropped(fn.output_dropped);
    }
    ctx_->log().info("reload: {} events and {} requests handed to the next instance",
                     snap.held_size(), snap.held_requests_size());
    return snap.SerializeAsString();
  }

  caf::error restore(std::string_view bytes) override {
    gfn::Snapshot snap;
    if (!snap.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
      return make_error(errc::malformed, "function_runtime: the snapshot does not parse");
    if (snap.version() != 1)
      return make_error(errc::unsupported, "function_runtime: snapshot version "
                                             + std::to_string(snap.version())
                                             + " (this build takes 1)");
    restored_ = std::move(snap);
    return {};
  }

  /// A plain stop (unload, groved's shutdown; a reload takes snapshot() first, which
  /// leaves nothing here): nothing carries the work on, so it is accounted for, never
  /// dropped silently. Requests are answered (their callers would otherwise wait out
  /// their timeout), and the events no handler finished are counted in groved's log and
  /// in each function's. README.md, "Unload".
  void stop() override {
    uint64_t dropped = 0;
    for (auto& [name, fn] : functions_) {
      uint64_t events = 0;
      auto account = [&](work_item& item, const char* what) {
        if (!item.request) {
          ++events;
          return;
        }
        ctx_->reply_error(*item.request,
                          make_error(errc::plugin_failed,
                                     "function '" + name + "': " + what
                                       + ": function_runtime stopped (unloaded or groved "
                                         "shut down)"));
      };
      for (auto& [id, inst] : fn.instances) {
        close_channel(*inst);
        for (size_t i = 0; i < inst->items.size(); ++i)
          account(inst->items[i], "interrupted in its instance (it may have run, in part "
                                  "or whole)");
        inst->items.clear();
      }
      while (!fn.queue.empty()) {
        auto item = pop_queue(fn);
        account(item, "not run");
      }
      if (events > 0 && fn.log)
        fn.log->write("ERROR", std::to_string(events) + " events not run: function_runtime "
                                 "stopped (unloaded or groved shut down)");
      flush_nowait(fn);
      dropped += events;
    }
    if (dropped > 0)
      ctx_->log().warn("stop: {} queued or running events of functions were not run "
                       "(nothing carries them on without a hot reload)",
                       dropped);
    functions_.clear();
  }

  void on_message(const grove::Envelope& msg) override {
    const auto& topic = msg.topic();
    if (topic == grove::group_client::current_topic) {
      if (auto g = grove::group_client::current(msg))
        apply(*g);
      return;
    }
    if (topic == grove::local_resources::started_topic) {
      local_resources_started();
      return;
    }
    work_item item;
    item.payload = msg.payload();
    item.source = msg.source();
    item.content_type = msg.content_type();
    if (topic.starts_with(mm_function_prefix)) {
      // mm-1: $grove/mm/out/function/<name>/<subject>
      auto rest = std::string_view{topic}.substr(mm_function_prefix.size());
      auto slash = rest.find('/');
      if (slash == std::string_view::npos)
        return;
      item.subject = std::string{rest.substr(slash + 1)};
      if (item.source == "shadow" && shadow_reply(std::string{rest.substr(0, slash)}, item))
        return; // the answer to a function's shadow call, not new work
      enqueue(std::string{rest.substr(0, slash)}, std::move(item));
      return;
    }
    if (topic.starts_with(grove::function_runtime::event_prefix)) {
      enqueue(topic.substr(grove::function_runtime::event_prefix.size()), std::move(item));
      return;
    }
    if (auto cloud = grove::message_manager::cloud_topic_of(topic, ctx_->name())) {
      // IOT_CORE sources: once for each function with a matching filter.
      item.subject = std::string{*cloud};
      for (auto& [name, fn] : functions_)
        if (fn.def && !fn.removed)
          for (const auto& s : fn.def->event_sources)
            if (s.type == "IOT_CORE" && grove::topic_matches(s.topic, *cloud)) {
              enqueue(name, item);
              break;
            }
      return;
    }
    // PUB_SUB event sources.
    item.subject = topic;
    for (auto& [name, fn] : functions_)
      if (fn.def && !fn.removed)
        for (const auto& s : fn.def->event_sources)
          if (s.type == "PUB_SUB" && s.topic == topic) {
            enqueue(name, item);
            break;
          }
  }

private:
  // -- hot reload ----------------------------------------------------------------

  /// Takes over what the previous instance handed over (restore()), in start(): its
  /// group first, so the functions are defined before the messages the kernel held
  /// during the reload arrive, then its counts, then its events and requests (adopted
  /// from the kernel), queued ahead of those in the order they first arrived.
  void take_over(const gfn::Snapshot& snap) {
    if (!snap.group().empty()) {
      grove::group::Group g;
      if (g.ParseFromString(snap.group()))
        apply(g);
      else
        ctx_->log().error("reload: the group handed over does not parse; waiting for the "
                          "kernel's");
    }
    for (const auto& st : snap.stats()) {
      auto it = functions_.find(st.function());
      if (it == functions_.end())
        continue;
      auto& fn = it->second;
      fn.invocations = st.invocations();
      fn.errors = st.errors();
      fn.timeouts = st.timeouts();
      fn.refused = st.refused();
      if (fn.last_error.empty())
        fn.last_error = st.last_error();
      fn.memory_hwm_kb = std::max(fn.memory_hwm_kb, st.memory_hwm_kb());
      fn.output_dropped += st.output_lines_dropped();
    }
    std::vector<const gfn::HeldItem*> held;
    for (const auto& h : snap.held())
      held.push_back(&h);
    for (const auto& h : snap.held_requests())
      held.push_back(&h);
    std::stable_sort(held.begin(), held.end(), [](const auto* a, const auto* b) {
      return a->seq() < b->seq();
    });
    for (const auto* hp : held) {
      const auto& h = *hp;
      work_item item;
      item.payload = h.payload();
      item.subject = h.subject();
      item.source = h.source();
      item.content_type = h.content_type();
      if (!h.request().empty()) {
        grove::Envelope req;
        if (!req.ParseFromString(h.request()) || !ctx_->adopt_request(req)) {
          ctx_->log().warn("reload: a request for function '{}' could not be taken over; "
                           "the kernel answers it (plugin_failed)",
                           h.function());
          continue;
        }
        item.request = std::move(req);
        // Queued like a new one: its limits hold, and a refusal is its answer.
        enqueue(h.function(), std::move(item));
        continue;
      }
      auto it = functions_.find(h.function());
      if (it == functions_.end() || !it->second.def || it->second.removed) {
        // enqueue() would refuse it without a word (no function to log to): say so.
        ctx_->log().warn("reload: an event for function '{}' is dropped: the group "
                         "handed over has no valid function of that name",
                         h.function());
        continue;
      }
      enqueue(h.function(), std::move(item));
    }
  }

  // -- definitions ---------------------------------------------------------------

  void apply(const grove::group::Group& g) {
    group_bytes_ = g.SerializeAsString(); // handed to the next instance at a reload
    apply_loggers(g);
    auto base = fs::path{g.source_file()}.parent_path();
    std::set<std::string> seen;
    std::set<std::string> resource_ids;
    ml_models_.clear();
    for (const auto& r : g.resources()) {
      resource_ids.insert(r.id());
      if (is_model_resource(r.config_yaml()))
        ml_models_.insert(r.id());
    }
    for (const auto& f : g.functions()) {
      seen.insert(f.name());
      auto& fn = state_of(f.name());
      fn.removed = false;
      auto origin = g.source_file() + ": functions[" + f.name() + "].config";
      auto def = gfn::parse_function(f.config_yaml(), origin, base);
      std::optional<std::pair<uid_t, gid_t>> user;
      fs::path code_dir;
      if (def) {
        auto u = gfn::resolve_user(*def, cfg_.default_user, cfg_.allow_run_as_root);
        if (u)
          user = *u;
        else
          def = caf::expected<gfn::function_def>{std::move(u.error())};
      }
      if (def) {
        // A policy must name a resource of this group: a removed resource is revoked.
        const auto& policies = def->resource_access_policies;
        for (size_t i = 0; i < policies.size(); ++i)
          if (!resource_ids.count(policies[i].resource_id)) {
            def = caf::expected<gfn::function_def>{make_error(
              errc::invalid_config,
              origin + ": resourceAccessPolicies[" + std::to_string(i) + "].resourceId: no "
                "resource '" + policies[i].resource_id + "' in the group")};
            break;
          }
      }
      if (def && def->process.isolation_mode != "GreengrassContainer") {
        // Local resources reach a function only in its sandbox; a model is a grant of the
        // infer verb (no mount), so any function may be granted one.
        const auto& policies = def->resource_access_policies;
        for (size_t i = 0; i < policies.size(); ++i)
          if (!ml_models_.count(policies[i].resource_id)) {
            def = caf::expected<gfn::function_def>{make_error(
              errc::invalid_config,
              origin + ": resourceAccessPolicies[" + std::to_string(i) + "]: local resource '"
                + policies[i].resource_id + "' reaches a function only in its sandbox "
                "(isolationMode GreengrassContainer); a NoContainer function uses the "
                "device's paths directly (ML model resources may be granted to either)")};
            break;
          }
      }
      if (def && gfn::is_code_archive(def->code_uri)) {
        // Once per digest (kept across restarts); small archives are the norm on devices.
        auto dir = gfn::unpack_code(def->code_uri, def->code_sha256, ctx_->state_dir() / "code");
        if (dir)
          code_dir = *dir;
        else
          def = caf::expected<gfn::function_def>{std::move(dir.error())};
      } else if (def) {
        code_dir = def->code_uri;
      }
      if (!def) {
        fn.def_error = grove::describe(def.error());
        fn.last_error = fn.def_error;
        ctx_->log().error("function '{}': {}{}", f.name(), fn.def_error,
                          fn.def ? " (keeps its previous definition)" : "");
        fn.log->write("ERROR", "definition refused: " + fn.def_error);
        // The previous definition's resources are asked for again: one the group no
        // longer gives (removed, refused) stops the function rather than stay with it.
        if (fn.def) {
          fn.granted_models = model_grants(*fn.def);
          resolve_mounts(fn, g.version());
        }
        continue;
      }
      fn.def_error.clear();
      if (fn.def && *fn.def == *def && fn.uid == user->first && fn.gid == user->second) {
        // The resources themselves may have changed: asked again for this version.
        fn.granted_models = model_grants(*fn.def);
        resolve_mounts(fn, g.version());
        continue;
      }
      if (def->process.isolation_mode == "GreengrassContainer") {
        // Never a silent fallback: without the kernel's features the function is refused.
        if (auto* sb = open_sandbox(); sb == nullptr) {
          fn.def_error = origin + ": " + sandbox_error_;
          fn.last_error = fn.def_error;
          ctx_->log().error("function '{}': {}{}", f.name(), fn.def_error,
                            fn.def ? " (keeps its previous definition)" : "");
          fn.log->write("ERROR", "definition refused: " + fn.def_error);
          continue;
        }
      }
      bool had = fn.def.has_value();
      drop_spare(fn); // made from the previous definition
      fn.def = std::move(*def);
      fn.uid = user->first;
      fn.gid = user->second;
      fn.code_dir = code_dir;
      fn.granted_models = model_grants(*fn.def);
      clear_give_up(fn);
      if (had)
        retire_all(fn);
      fn.log->write("INFO", had ? "definition changed" : "defined");
      resolve_mounts(fn, g.version());
      dispatch(fn);
    }
    for (auto& [name, fn] : functions_) {
      if (seen.count(name) || fn.removed)
        continue;
      fn.removed = true;
      fn.def.reset();
      drop_spare(fn);
      fail_queue(fn, make_error(errc::no_route, "function '" + name + "' was removed"));
      for (auto& [id, inst] : fn.instances)
        end_instance(fn, *inst, "function removed from the group", false);
    }
    erase_removed();
    update_pubsub();
    refresh_status();
  }

  /// The ML model resources of the group that `def`'s policies name.
  std::set<std::string> model_grants(const gfn::function_def& def) const {
    std::set<std::string> out;
    for (const auto& p : def.resource_access_policies)
      if (ml_models_.count(p.resource_id))
        out.insert(p.resource_id);
    return out;
  }

  /// Asks local_resources (lr-1) for `fn`'s mounts as of group `version`; instances
  /// wait for the answer. A changed answer restarts the running instances (a revoked or
  /// changed resource); an error stops the function (its resources are not available).
  void resolve_mounts(function_state& fn, uint64_t version) {
    // Model grants are the infer verb's (no mount): local_resources sees the rest.
    std::vector<gfn::access_policy> policies;
    for (const auto& p : fn.def->resource_access_policies)
      if (!fn.granted_models.count(p.resource_id))
        policies.push_back(p);
    // v2's per-function volumes and devices: a sandbox's only (NoContainer sees the host).
    const auto& container = fn.def->process.container;
    bool own = fn.def->process.isolation_mode == "GreengrassContainer"
               && (!container.volumes.empty() || !container.devices.empty());
    if (policies.empty() && !own) {
      fn.mounts_request = 0;
      if (!fn.mounts.empty() || !fn.groups.empty()) {
        fn.mounts.clear();
        fn.groups.clear();
        drop_spare(fn);
        retire_all(fn);
      }
      return;
    }
    auto req = grove::local_resources::make_request(fn.name, version);
    for (const auto& p : policies)
      grove::local_resources::add_policy(req, p.resource_id, p.permission);
    if (own) {
      for (size_t i = 0; i < container.volumes.size(); ++i) {
        const auto& v = container.volumes[i];
        grove::local_resources::add_volume(req, i, v.source_path, v.destination_path,
                                           v.permission, v.add_group_owner);
      }
      for (size_t i = 0; i < container.devices.size(); ++i) {
        const auto& d = container.devices[i];
        grove::local_resources::add_device(req, i, d.path, d.permission, d.add_group_owner);
      }
    }
    auto seq = ++mounts_requests_;
    fn.mounts_request = seq;
    auto name = fn.name;
    // local_resources may load after this plugin: it gets a moment to come.
    auto topic = grove::local_resources::mounts_topic;
    ctx_->when_served(topic, local_resources_wait, [this, name, seq, req](caf::error err) {
      if (current(name, seq) == nullptr)
        return;
      if (err) {
        mounts_answer(name, seq, make_error(errc::no_route, "nobody serves lr-1"));
        return;
      }
      grove::local_resources::mounts_rpc rpc{std::string{grove::local_resources::mounts_topic}};
      rpc(*ctx_, req, 10s,
          [this, name, seq](caf::expected<grove::local_resources::MountsReply> r) {
            mounts_answer(name, seq, std::move(r));
          });
    });
  }

  /// lr-2: local_resources (re)started. Resources were resolved only at a group change,
  /// so a function whose request found nobody serving lr-1 (local_resources loaded more
  /// than local_resources_wait after it, or was restarting) stayed refused until the
  /// next one. The group in force is applied again: a function refused for its
  /// resources is defined again and asks; the others ask again (an unchanged answer
  /// changes nothing, a changed one restarts their instances).
  void local_resources_started() {
    if (group_bytes_.empty())
      return; // no group yet: its arrival asks
    grove::group::Group g;
    if (!g.ParseFromString(group_bytes_))
      return;
    ctx_->log().info("local_resources started: the functions' resources are asked for again");
    apply(g);
  }

  /// The function awaiting lr-1 request `seq`; null when it no longer does.
  function_state* current(const std::string& name, uint64_t seq) {
    auto it = functions_.find(name);
    if (it == functions_.end() || it->second.mounts_request != seq || !it->second.def)
      return nullptr; // a newer request, or the function is gone
    return &it->second;
  }

  void mounts_answer(const std::string& name, uint64_t seq,
                     caf::expected<grove::local_resources::MountsReply> r) {
    {
      auto* found = current(name, seq);
      if (found == nullptr)
        return;
      auto& fn = *found;
      fn.mounts_request = 0;
      if (!r) {
        std::string first; // the first policy local_resources was asked for
        for (const auto& p : fn.def->resource_access_policies)
          if (first.empty() && !fn.granted_models.count(p.resource_id))
            first = p.resource_id;
        auto wants = first.empty()
                       ? std::string{"linuxProcessParams.containerParams names volumes or "
                                     "devices"}
                       : "resourceAccessPolicies names resource '" + first + "'";
        auto why = r.error() == errc::no_route
                     ? wants + ", and this image has no local_resources plugin to provide it"
                     : grove::describe(r.error());
        fn.def_error = "function '" + name + "': " + why;
        fn.last_error = fn.def_error;
        ctx_->log().error("{}", fn.def_error);
        fn.log->write("ERROR", "definition refused: " + fn.def_error);
        withdraw(fn, fn.def_error);
        return;
      }
      std::vector<gfn::resource_mount> mounts;
      std::set<gid_t> groups;
      for (const auto& m : r->mounts()) {
        gfn::resource_mount x;
        x.id = m.resource_id();
        x.device = m.kind() == grove::local_resources::Mount::DEVICE;
        x.source = m.source_path();
        x.destination = m.destination_path();
        x.read_only = m.read_only();
        x.device_type = m.device_type() == "b" ? 'b' : 'c';
        x.major = m.major();
        x.minor = m.minor();
        mounts.push_back(std::move(x));
        if (m.add_group())
          groups.insert(static_cast<gid_t>(m.group_id()));
        if (m.add_group() && m.group_id() == 0) {
          // A sandbox never holds host root's ids (README, "Sandbox").
          fn.def_error = "function '" + name + "': resource '" + m.resource_id()
                         + "': its group owner is root's group (gid 0), which a sandboxed "
                           "function never gets (give the resource another group)";
          fn.last_error = fn.def_error;
          ctx_->log().error("{}", fn.def_error);
          fn.log->write("ERROR", "definition refused: " + fn.def_error);
          withdraw(fn, fn.def_error);
          return;
        }
      }
      std::vector<gid_t> gids{groups.begin(), groups.end()};
      if (mounts != fn.mounts || gids != fn.groups) {
        bool had = !fn.mounts.empty() || !fn.groups.empty();
        drop_spare(fn);
        fn.mounts = std::move(mounts);
        fn.groups = std::move(gids);
        if (had) {
          fn.log->write("INFO", "local resources changed: instances restart");
          retire_all(fn);
        }
      }
      dispatch(fn);
    }
  }

  /// Stops `fn` for good until a valid definition comes: its definition goes, its
  /// queue is answered with `why` and its instances end.
  void withdraw(function_state& fn, const std::string& why) {
    fn.def.reset();
    drop_spare(fn);
    fn.mounts.clear();
    fn.groups.clear();
    fn.mounts_request = 0;
    fail_queue(fn, make_error(errc::invalid_config, why));
    for (auto& [id, inst] : fn.instances)
      end_instance(fn, *inst, "its local resources were withdrawn", false);
  }

  // -- logs ----------------------------------------------------------------------

  /// The group's Lambda logger (issue 16): the lowest level of the SDK's log() lines a
  /// function's log takes, and its Space as the cap of each function's log files
  /// together (<name>.log and its rotated files). None: every level, and the
  /// profile's log_max_bytes and log_files.
  void apply_loggers(const grove::group::Group& g) {
    const grove::group::Logger* lambda = nullptr;
    for (const auto& l : g.loggers())
      if (l.component() == "Lambda")
        lambda = &l;
    uint32_t min_level = 0;
    uint64_t max_bytes = static_cast<uint64_t>(cfg_.log_max_bytes);
    uint32_t files = static_cast<uint32_t>(cfg_.log_files);
    if (lambda != nullptr) {
      min_level = level_number(lambda->level());
      if (lambda->space_kb() != 0) {
        // Space is for a function's files together: split among the live file and
        // the rotated ones, fewer rotated ones when a file would get under 4 KiB.
        uint64_t space = lambda->space_kb() * 1024;
        while (files > 0 && space / (files + 1) < 4096)
          --files;
        max_bytes = space / (files + 1);
      }
    }
    lambda_logger_ = lambda != nullptr ? lambda->id() : std::string{};
    lambda_level_ = lambda != nullptr ? lambda->level() : std::string{};
    if (min_level == fn_min_level_ && max_bytes == log_max_bytes_ && files == log_files_)
      return;
    // A running instance's SDK took its level at start (GROVE_FUNCTION_LOG_LEVEL) and
    // drops what is under it; the filter here can only be stricter. A lower level (or
    // the logger gone) retires the instances, so new ones start with it: idle ones end
    // now, busy ones after their item (as for a changed definition).
    bool lowered = min_level < fn_min_level_;
    fn_min_level_ = min_level;
    if (lowered)
      for (auto& [name, fn] : functions_)
        retire_all(fn);
    log_max_bytes_ = max_bytes;
    log_files_ = files;
    for (auto& [name, fn] : functions_)
      fn.log->set_limits(log_max_bytes_, log_files_);
    ctx_->log().info("function logs: {}", describe_logs());
    ctx_->set_status("function_logs", describe_logs());
  }

  /// function.proto's Log.level of a logger level (DEBUG 0 ... FATAL 4).
  static uint32_t level_number(const std::string& level) {
    static constexpr std::string_view names[] = {"DEBUG", "INFO", "WARN", "ERROR", "FATAL"};
    for (uint32_t i = 0; i < std::size(names); ++i)
      if (names[i] == level)
        return i;
    return 0;
  }

  /// The effective level and cap, for the status and the log.
  std::string describe_logs() const {
    static constexpr const char* names[] = {"DEBUG", "INFO", "WARN", "ERROR", "FATAL"};
    return std::string{names[std::min<uint32_t>(fn_min_level_, 4)]} + " and above, "
           + std::to_string(log_max_bytes_) + " bytes per file, " + std::to_string(log_files_)
           + " rotated files kept ("
           + (lambda_logger_.empty() ? std::string{"image profile"}
                                     : "group logger '" + lambda_logger_ + "', Lambda")
           + ")";
  }

  function_state& state_of(const std::string& name) {
    auto [it, added] = functions_.try_emplace(name);
    if (added) {
      auto& fn = it->second;
      fn.name = name;
      fn.log = std::make_unique<gfn::function_log>(logs_dir_ / (name + ".log"),
                                                   log_max_bytes_, log_files_);
      fn.invocations_c = invocations_.with(name);
      fn.errors_c = errors_.with(name);
      fn.timeouts_c = timeouts_.with(name);
      fn.refused_c = refused_.with(name);
      fn.instances_g = instances_gauge_.with(name);
      fn.queued_g = queued_gauge_.with(name);
      fn.sent_ahead_g = sent_ahead_gauge_.with(name);
    }
    return it->second;
  }

  void erase_removed() {
    for (auto it = functions_.begin(); it != functions_.end();)
      if (it->second.removed && it->second.instances.empty()) {
        if (it->second.backoff_timer != 0)
          ctx_->cancel(it->second.backoff_timer);
        if (it->second.reserve_timer != 0)
          ctx_->cancel(it->second.reserve_timer);
        if (it->second.give_up_timer != 0)
          ctx_->cancel(it->second.give_up_timer);
        // Its series stay in the registry: a removed function shows nothing in hand.
        it->second.instances_g.set(0);
        it->second.queued_g.set(0);
        it->second.sent_ahead_g.set(0);
        flush_nowait(it->second);
        it = functions_.erase(it);
      } else {
        ++it;
      }
  }

  /// The topics (PUB_SUB) or cloud filters (IOT_CORE) of the defined functions' sources.
  std::set<std::string> source_topics(std::string_view type) const {
    std::set<std::string> out;
    for (const auto& [name, fn] : functions_)
      if (fn.def)
        for (const auto& s : fn.def->event_sources)
          if (s.type == type)
            out.insert(s.topic);
    return out;
  }

  /// Subscribes to the PUB_SUB sources in force, and only to them.
  void update_pubsub() {
    auto want = source_topics("PUB_SUB");
    for (const auto& t : pubsub_)
      if (!want.count(t))
        static_cast<void>(ctx_->unsubscribe(t));
    for (const auto& t : want)
      if (!pubsub_.count(t))
        if (auto err = ctx_->subscribe(t))
          ctx_->log().error("cannot subscribe to event source {}: {}", t,
                            grove::describe(err));
    pubsub_ = std::move(want);
    update_cloud_sources();
  }

  /// IOT_CORE event sources: their cloud filters, through message_manager's system API
  /// (mm-7, mm-8), so this plugin must be in its cloud.system_clients. The messages come
  /// on mm-9 (on_message).
  void update_cloud_sources() {
    auto want = source_topics("IOT_CORE");
    if (!cloud_) {
      if (want.empty())
        return;
      if (auto err = ctx_->subscribe(grove::message_manager::system_filter(ctx_->name())))
        ctx_->log().error("cannot subscribe to the cloud's messages: {}", grove::describe(err));
      cloud_.emplace(*ctx_, [this](auto st, const caf::error& err) {
        if (st == grove::message_manager::cloud_filters::state::refused)
          ctx_->log().error("IOT_CORE event sources: message_manager refuses the cloud "
                            "filters (is {} in its cloud.system_clients?): {}; retrying",
                            ctx_->name(), grove::describe(err));
        else
          ctx_->log().info("IOT_CORE event sources: {} cloud filters in force",
                           cloud_->wanted().size());
        cloud_status();
      });
    }
    cloud_->set(std::move(want));
    cloud_status();
  }

  void cloud_status() {
    using st = grove::message_manager::cloud_filters::state;
    auto state = cloud_->current();
    if (state == st::none) {
      ctx_->set_status("cloud_sources", "none");
      return;
    }
    ctx_->set_status("cloud_sources",
                     std::to_string(cloud_->wanted().size()) + " filters, "
                       + (state == st::subscribed ? "subscribed"
                          : state == st::refused  ? "NOT SUBSCRIBED (cloud.system_clients?)"
                                                  : "subscribing"));
  }

  /// A changed definition: idle instances end now, busy ones after their item. The
  /// items sent ahead to a busy one are taken back (Recall): they run in a new instance,
  /// under what the group gives now (a narrowed resource grant, a new definition), not
  /// in the retired one's sandbox after its current item.
  void retire_all(function_state& fn) {
    for (auto& [id, inst] : fn.instances) {
      inst->retire = true;
      if (inst->state == inst_state::idle || inst->state == inst_state::starting)
        end_instance(fn, *inst, "", false);
      else if (inst->state == inst_state::busy && inst->items.size() > 1 && !inst->recall
               && !inst->exit_notice)
        recall(fn, *inst);
    }
  }

  /// Asks busy `inst` for the items sent ahead of the one in its handler; its Recalled
  /// (recalled()) queues them again. The worker reads it before it starts its next item.
  void recall(function_state& fn, instance& inst) {
    inst.recall = true;
    gfn::Frame f;
    f.mutable_recall();
    // Never waits (send_now): a Recall held back by a full socket would reach the worker
    // only after it drained the socket, which it does just before it starts the next
    // item sent ahead, so that item could run here, under the retired grant.
    send_now(fn, inst, f);
  }

  /// The worker ran none of the items it has not answered (README, "IPC"): back to the
  /// front of the queue, in order, and the retired instance ends (it has nothing in its
  /// handler: Recalled comes between two items).
  void recalled(function_state& fn, instance& inst) {
    if (!inst.recall)
      return end_instance(fn, inst, "a Recalled frame the runtime did not ask for", false);
    if (inst.items.empty())
      return; // it answered them all first (the last Result ended it when idle)
    end_instance(fn, inst, "", false); // an orderly end queues its items again
    dispatch(fn);
  }

  // -- work ------------------------------------------------------------------------

  void invoked(const grove::Envelope& req) {
    work_item item;
    item.request = req;
    // The reply needs only the request's id and reply-to: its bytes move to the item.
    item.payload = std::move(*item.request->mutable_payload());
    item.source = std::move(*item.request->mutable_source());
    item.content_type = std::move(*item.request->mutable_content_type());
    enqueue(req.topic().substr(grove::function_runtime::invoke_prefix.size()),
            std::move(item));
  }

  void answer_error(function_state* fn, work_item& item, caf::error err) {
    if (item.request)
      ctx_->reply_error(*item.request, err);
    else if (fn != nullptr)
      fn->log->write("ERROR", "event not handled: " + grove::describe(err));
  }

  /// Queues `item` for function `name`, or refuses it (and answers a request).
  void enqueue(const std::string& name, work_item item) {
    auto it = functions_.find(name);
    if (it == functions_.end() || !it->second.def || it->second.removed) {
      auto why = it == functions_.end() || it->second.removed
                   ? "no function '" + name + "' in the group"
                   : "function '" + name + "' has no valid definition: "
                       + it->second.def_error;
      if (it != functions_.end())
        refuse(it->second);
      answer_error(nullptr, item, make_error(errc::no_route, why));
      return;
    }
    auto& fn = it->second;
    if (fn.def->input_encoding == "json" && !nlohmann::json::accept(item.payload)) {
      refuse(fn);
      answer_error(&fn, item,
                   make_error(errc::malformed,
                              "function '" + name
                                + "' takes JSON (inputPayloadEncodingType: json) and the "
                                  "payload is not JSON"));
      return;
    }
    if (fn.gave_up) {
      refuse(fn);
      answer_error(&fn, item, make_error(errc::plugin_broken,
                                         "function '" + name + "' does not start: "
                                           + fn.last_error));
      return;
    }
    if (waiting(fn) >= static_cast<size_t>(fn.def->max_queue_size)) {
      refuse(fn);
      answer_error(&fn, item,
                   make_error(errc::queue_full,
                              "function '" + name + "': queue full (maxQueueSize "
                                + std::to_string(fn.def->max_queue_size) + ")"));
      return;
    }
    // Refused now, not when it reaches an instance: until then it would hold queue memory.
    if (item.bytes() > static_cast<size_t>(cfg_.max_frame_bytes)) {
      refuse(fn);
      answer_error(&fn, item,
                   make_error(errc::too_large,
                              "function '" + name + "': the work item's " + std::to_string(item.bytes())
                                + " bytes exceed the limit of "
                                + std::to_string(cfg_.max_frame_bytes) + " (max_frame_bytes)"));
      return;
    }
    if (fn.queue_bytes + item.bytes() > static_cast<size_t>(cfg_.max_queue_bytes)) {
      refuse(fn);
      answer_error(&fn, item,
                   make_error(errc::queue_full,
                              "function '" + name + "': queue full (" + std::to_string(fn.queue_bytes)
                                + " bytes queued, max_queue_bytes "
                                + std::to_string(cfg_.max_queue_bytes) + ")"));
      return;
    }
    item.seq = ++seq_;
    push_queue(fn, std::move(item), false);
    dispatch(fn);
  }

  /// Queues `item` at the back (or the front: one that comes back from an instance).
  static void push_queue(function_state& fn, work_item item, bool front) {
    fn.queue_bytes += item.bytes();
    if (front)
      fn.queue.push_front(std::move(item));
    else
      fn.queue.push_back(std::move(item));
  }

  /// Takes the front item off the queue.
  static work_item pop_queue(function_state& fn) {
    auto item = std::move(fn.queue.front());
    fn.queue.pop_front();
    fn.queue_bytes -= item.bytes();
    return item;
  }

  /// Items waiting for a handler: the queue, and those sent ahead to busy instances.
  static size_t waiting(const function_state& fn) {
    return fn.queue.size() + fn.sent_ahead;
  }

  /// Items of `inst` sent ahead of the one in its handler. function_state::sent_ahead is
  /// the sum of these: items come and go through track_ahead, and fail_in_hand (which
  /// empties `items`) takes its own off.
  static size_t ahead_of(const instance& inst) {
    return inst.items.empty() ? 0 : inst.items.size() - 1;
  }

  /// Runs `change` (which changes inst.items) and counts the items it sent ahead or took
  /// back in `fn.sent_ahead`.
  template <class Change>
  static void track_ahead(function_state& fn, instance& inst, Change&& change) {
    auto before = ahead_of(inst);
    change();
    fn.sent_ahead = fn.sent_ahead + ahead_of(inst) - before;
  }

  void refuse(function_state& fn) {
    ++fn.refused;
    fn.refused_c.inc();
  }

  void fail_queue(function_state& fn, const caf::error& err) {
    while (!fn.queue.empty()) {
      auto item = pop_queue(fn);
      answer_error(&fn, item, err);
    }
  }

  /// How long a starting instance of `fn` keeps a queued item for itself.
  static std::chrono::milliseconds reserve_of(const function_state& fn) {
    return std::min<std::chrono::milliseconds>(start_reserve,
                                               std::chrono::seconds{fn.def->status_timeout_s});
  }

  /// Runs dispatch at `when` (or earlier, when its timer is armed already: that run arms
  /// it again as needed), so items held for a starting instance go ahead when its
  /// reserve ends even if nothing else (a hello, a result, a new item) happens meanwhile.
  void dispatch_at(function_state& fn, std::chrono::steady_clock::time_point when) {
    if (fn.reserve_timer != 0)
      return;
    using std::chrono::milliseconds;
    auto in = std::chrono::ceil<milliseconds>(when - std::chrono::steady_clock::now());
    fn.reserve_timer = ctx_->after(std::max(in, milliseconds{0}), [this, name = fn.name] {
      if (auto it = functions_.find(name); it != functions_.end()) {
        it->second.reserve_timer = 0;
        dispatch(it->second);
      }
    });
  }

  /// Hands queued work to idle instances and starts instances as the definition allows,
  /// then sees that a spare sandbox is there or on its way.
  void dispatch(function_state& fn) {
    if (reloading_)
      return; // snapshot(): the work goes to the next instance
    dispatch_work(fn);
    keep_spare(fn);
  }

  void dispatch_work(function_state& fn) {
    if (!fn.def || fn.removed)
      return;
    if (fn.mounts_request != 0)
      return; // its local resources are being asked for
    // One item is kept for each instance starting for less than start_reserve: it will
    // take it soon. A slow or failing start holds nothing back past that.
    auto reserve = reserve_of(fn);
    auto now = std::chrono::steady_clock::now();
    size_t starting = 0;
    auto reserve_ends = std::chrono::steady_clock::time_point::max();
    for (auto& [id, inst] : fn.instances) {
      if (inst->state == inst_state::starting && !inst->retire
          && now - inst->started < reserve) {
        ++starting;
        reserve_ends = std::min(reserve_ends, inst->started + reserve);
      }
      if (fn.queue.empty())
        continue;
      if (inst->state == inst_state::idle && !inst->retire && !inst->exit_notice)
        hand(fn, *inst, 1);
    }
    // Sent ahead to busy instances only when no other instance could take the work now
    // (a pinned function, maxInstancesCount reached, starts in back-off or given up), as
    // far as their workers take it.
    bool can_grow = !fn.def->pinned && !fn.gave_up && fn.backoff_timer == 0
                    && fn.instances.size() < static_cast<size_t>(fn.def->max_instances_count);
    if (!can_grow && fn.queue.size() > starting)
      send_ahead(fn, fn.queue.size() - starting);
    if (starting > 0 && !fn.queue.empty())
      dispatch_at(fn, reserve_ends);
    if (fn.gave_up || fn.backoff_timer != 0)
      return;
    if (fn.def->pinned) {
      bool live = false;
      for (auto& [id, inst] : fn.instances)
        live = live || !inst->retire;
      if (!live)
        start_instance(fn);
      return;
    }
    starting = 0;
    for (auto& [id, inst] : fn.instances)
      starting += inst->state == inst_state::starting ? 1 : 0;
    while (fn.instances.size() < static_cast<size_t>(fn.def->max_instances_count)
           && starting < fn.queue.size()) {
      if (!start_instance(fn))
        break;
      ++starting;
    }
  }

  /// GreengrassContainer: keeps one instance sandbox of `fn` prepared (sandbox::prepare:
  /// its cgroup's directories, limits and device rules, and its mounts), so a start
  /// skips that (README, "Sandbox"). Made on the actor, off the path of the start that
  /// took the last one.
  void keep_spare(function_state& fn) {
    if (fn.spare || fn.spare_request != 0 || fn.spare_failed || !sandbox_ || !fn.def
        || fn.removed || fn.mounts_request != 0
        || fn.def->process.isolation_mode != "GreengrassContainer")
      return;
    auto seq = ++spare_requests_;
    fn.spare_request = seq;
    auto task = [this, name = fn.name, seq] {
      auto it = functions_.find(name);
      if (it == functions_.end() || it->second.spare_request != seq)
        return; // dropped meanwhile (drop_spare)
      auto& fn = it->second;
      fn.spare_request = 0;
      if (!fn.def || fn.removed)
        return;
      auto key = gfn::sandbox::key(fn.name, *fn.def, fn.code_dir, fn.mounts);
      auto made = sandbox_->prepare(fn.name, ++instance_ids_, *fn.def, fn.code_dir, fn.mounts);
      if (made) {
        fn.spare = std::move(*made);
        fn.spare_key = std::move(key);
        return;
      }
      // The start makes its own and reports why; not tried again until a change.
      fn.spare_failed = true;
      ctx_->log().debug("function '{}': no spare cgroup: {}", fn.name,
                        grove::describe(made.error()));
    };
    // While an instance starts (the one that took the last spare), a little later: made
    // at once, its ~0.4 ms competed with that worker's start and first item for the CPU.
    bool starting = std::any_of(fn.instances.begin(), fn.instances.end(), [](const auto& i) {
      return i.second->state == inst_state::starting;
    });
    if (starting)
      ctx_->after(spare_delay, std::move(task));
    else
      ctx_->post(std::move(task));
  }

  /// Removes `fn`'s spare sandbox (its cgroup), and forgets one being made: its
  /// definition or resources changed, or it is gone.
  static void drop_spare(function_state& fn) {
    fn.spare.reset();
    fn.spare_key.clear();
    fn.spare_request = 0;
    fn.spare_failed = false;
  }

  /// Starts one instance; false when it could not (the reason is the last error).
  bool start_instance(function_state& fn) {
    const auto& def = *fn.def;
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      note_start_failure(fn, std::string{"socketpair: "} + std::strerror(errno));
      return false;
    }
    // Nothing waits to write to it (write_out): a worker that stops reading must not
    // hold the runtime's actor.
    ::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &send_buffer_bytes, sizeof send_buffer_bytes);
    auto inst = std::make_unique<instance>();
    inst->id = ++instance_ids_;
    inst->token = random_hex(32);
    inst->fd = sv[0];
    grove::process_options opts;
    // Relative to the code directory, which the child enters before it drops to runAs: the
    // directories above it (groved's 0700 write dir, a home directory) need not be
    // searchable by the function's user.
    auto program = fn.code_dir.empty() || fs::path{def.handler}.is_absolute()
                     ? fs::path{def.handler}
                     : fs::path{"."} / def.handler;
    if (def.runtime == "python3") {
      opts.argv = gfn::python_argv(def, cfg_);
      program = opts.argv[0];
    } else {
      opts.argv.push_back(program.string());
      for (const auto& a : def.exec_args)
        opts.argv.push_back(a);
    }
    bool sandboxed = def.process.isolation_mode == "GreengrassContainer";
    std::vector<std::string> env{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"};
    // A sanitizer build's options reach its function programs too (README, Sanitizers):
    // without them an instrumented worker reports a crash its own way, not as a signal.
    for (const char* var : {"TSAN_OPTIONS", "ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"})
      if (const char* v = std::getenv(var))
        env.push_back(std::string{var} + "=" + (sandboxed ? without_suppressions(v) : v));
    for (const auto& [k, v] : def.environment)
      if (!k.starts_with("GROVE_FUNCTION_"))
        env.push_back(k + "=" + v);
    env.push_back("GROVE_FUNCTION_NAME=" + fn.name);
    // The SDKs' loggers start at the group's Lambda logger level (the Python runner
    // sets logging's root level from it); a stricter one later is applied on the lines,
    // a lower one retires the instances (apply_loggers).
    if (!lambda_level_.empty())
      env.push_back("GROVE_FUNCTION_LOG_LEVEL=" + lambda_level_);
    env.push_back("GROVE_FUNCTION_FD=3");
    env.push_back("GROVE_FUNCTION_TOKEN=" + inst->token);
    if (def.pinned)
      env.push_back("GROVE_FUNCTION_STATUS_INTERVAL_S=" + std::to_string(def.status_timeout_s));
    env.push_back("GROVE_FUNCTION_MAX_FRAME=" + std::to_string(cfg_.max_frame_bytes));
    if (def.runtime == "python3")
      gfn::add_python_env(def,
                          sandboxed ? std::string{gfn::sandbox_python_dir}
                                    : gfn::python_sdk_dir(cfg_),
                          env);
    opts.env = std::move(env);
    opts.cwd = fn.code_dir.empty() ? ctx_->state_dir() : fn.code_dir;
    if (fn.uid != ::geteuid() || fn.gid != ::getegid()) {
      opts.uid = fn.uid;
      opts.gid = fn.gid;
    }
    if (sandboxed) {
      // The one hook of the sandbox (sandbox.hpp): its cgroup now, the rest in the child.
      // The spare when it was prepared from what is in force (else it goes).
      caf::expected<gfn::instance_sandbox> sb{make_error(errc::unsupported, sandbox_error_)};
      if (fn.spare && fn.spare_key == gfn::sandbox::key(fn.name, def, fn.code_dir, fn.mounts))
        sb = std::move(*fn.spare);
      else if (sandbox_)
        sb = sandbox_->prepare(fn.name, inst->id, def, fn.code_dir, fn.mounts);
      fn.spare.reset();
      if (!sb) {
        ::close(sv[0]);
        ::close(sv[1]);
        note_start_failure(fn, grove::describe(sb.error()));
        return false;
      }
      // Paths into the code directory as the sandbox sees them (it is at /lambda).
      for (size_t i = 0; i < opts.argv.size(); ++i)
        if (i == 0 || fs::path{opts.argv[i]}.is_absolute())
          opts.argv[i] = gfn::sandbox::inside(opts.argv[i], fn.code_dir);
      opts.uid = fn.uid;
      opts.gid = fn.gid;
      opts.groups = fn.groups; // groupOwnerSetting of its local resources
      opts.sandbox = std::move(sb->spec);
      inst->cgroup = std::move(sb->cgroup);
      if (!sb->warning.empty())
        ctx_->log().warn("function '{}': {}", fn.name, sb->warning);
    }
    opts.pass_fds.emplace_back(sv[1], 3);
    opts.stdout_level = grove::output_level::debug;
    opts.stderr_level = grove::output_level::debug;
    opts.log_prefix = "function " + fn.name + ": ";
    opts.stop_grace = std::chrono::milliseconds{cfg_.stop_grace_ms};
    grove::process_callbacks cb;
    // The sandbox (issue 13) is opts.sandbox above: grove::process builds it in the
    // child between clone and exec.
    auto name = fn.name;
    auto id = inst->id;
    cb.on_exit = [this, name, id](const grove::process_exit& e) { exited(name, id, e); };
    cb.on_output = [this, name](grove::output_stream s, const std::string& line) {
      if (auto it = functions_.find(name); it != functions_.end())
        it->second.log->write(s == grove::output_stream::err ? "STDERR" : "STDOUT", line);
    };
    cb.on_dropped = [this, name](grove::output_stream, uint64_t n) {
      if (auto it = functions_.find(name); it != functions_.end())
        it->second.output_dropped += n;
    };
    auto p = grove::process::start(*ctx_, std::move(opts), std::move(cb));
    ::close(sv[1]);
    if (!p) {
      ::close(sv[0]);
      note_start_failure(fn, "cannot start " + program.string() + ": "
                               + grove::describe(p.error()));
      return false;
    }
    inst->proc = std::move(*p);
    inst->pid = inst->proc.pid();
    inst->started = std::chrono::steady_clock::now();
    // It may hold a queued item back (dispatch) until its reserve ends.
    dispatch_at(fn, inst->started + reserve_of(fn));
    inst->hello_timer = ctx_->after(std::chrono::seconds{def.status_timeout_s}, [this, name, id] {
      if (auto* inst = find(name, id); inst && inst->state == inst_state::starting) {
        inst->hello_timer = 0;
        end_instance(functions_.at(name), *inst,
                     "no hello within statusTimeoutInSeconds", false);
      }
    });
    auto max = static_cast<uint32_t>(cfg_.max_frame_bytes);
    inst->reader = std::thread{[this, name, id, fd = inst->fd, max, pending = inst->pending,
                                bytes = inst->pending_bytes, inbox = inst->inbox,
                                limit = cfg_.max_pending_frames] {
      // Named, not `caf.multiplexer` (inherited from the CAF worker that started it).
      ::pthread_setname_np(::pthread_self(), "fn.reader");
      read_loop(name, id, fd, max, pending, bytes, inbox, limit);
      inbox->finish();
    }};
    fn.instances.emplace(id, std::move(inst));
    fn.instances_g.set(static_cast<int64_t>(fn.instances.size()));
    return true;
  }

  /// A start that failed before the instance said hello: back off, give up when the
  /// kernel's restart policy says so (then queued work is answered with the error).
  void note_start_failure(function_state& fn, std::string why) {
    fn.last_error = why;
    fn.log->write("ERROR", why);
    ctx_->log().error("function '{}': {}", fn.name, why);
    schedule_retry(fn);
  }

  void schedule_retry(function_state& fn) {
    if (fn.backoff_timer != 0 || !fn.def || fn.gave_up)
      return;
    auto d = fn.failures.record(policy_);
    if (d.broken) {
      fn.gave_up = true;
      fn.last_error = "gave up after " + std::to_string(d.count)
                      + " failed starts: " + fn.last_error;
      fn.log->write("ERROR", fn.last_error + "; trying again in "
                               + std::to_string(cfg_.give_up_retry_ms) + " ms");
      fail_queue(fn, make_error(errc::plugin_broken,
                                "function '" + fn.name + "': " + fn.last_error));
      // Not for good: the cause (a missing file, memory, a user) may go away.
      auto name = fn.name;
      fn.give_up_timer = ctx_->after(std::chrono::milliseconds{cfg_.give_up_retry_ms},
                                     [this, name] {
        auto it = functions_.find(name);
        if (it == functions_.end())
          return;
        auto& f = it->second;
        f.give_up_timer = 0;
        if (!f.def || f.removed || !f.gave_up)
          return;
        f.log->write("INFO", "trying to start again after the give-up");
        clear_give_up(f);
        dispatch(f);
      });
      return;
    }
    back_off(fn, d.delay);
  }

  /// A pinned instance died while idle (after its hello): restarted after a back-off
  /// that grows while it keeps dying, never given up (only failed starts are).
  void schedule_restart(function_state& fn) {
    if (fn.backoff_timer != 0 || !fn.def)
      return;
    back_off(fn, fn.idle_deaths.record(idle_death_policy_).delay);
  }

  /// Forgets failed starts and a give-up (a new definition, or give_up_retry_ms passed).
  void clear_give_up(function_state& fn) {
    fn.gave_up = false;
    fn.failures.clear();
    fn.idle_deaths.clear();
    fn.item_deaths.clear();
    fn.item_death_run = 0;
    if (fn.give_up_timer != 0)
      ctx_->cancel(fn.give_up_timer);
    fn.give_up_timer = 0;
  }

  /// No instance starts for `delay`, then dispatch runs.
  void back_off(function_state& fn, std::chrono::milliseconds delay) {
    auto name = fn.name;
    fn.backoff_timer = ctx_->after(delay, [this, name] {
      if (auto it = functions_.find(name); it != functions_.end()) {
        it->second.backoff_timer = 0;
        dispatch(it->second);
      }
    });
  }

  /// Sends up to `n` queued items to `inst` in one write: their Invoke frames, in order.
  void hand(function_state& fn, instance& inst, size_t n) {
    std::string out;
    bool was_idle = inst.items.empty();
    while (n > 0 && take(fn, inst, out))
      --n;
    flush(fn, inst, out, was_idle);
  }

  /// Sends up to `n` queued items ahead to the function's busy instances whose workers
  /// take a pipeline: each item to the one with the fewest items in hand (a handler stuck
  /// on a long item gets no more while another drains its own), ties in turn from the
  /// one after the last served; each instance's frames in one write.
  void send_ahead(function_state& fn, size_t n) {
    struct target {
      instance* inst;
      std::string out;
      bool full = false;
    };
    std::vector<target> ring; // in the order of their ids
    for (auto& [id, inst] : fn.instances)
      if (inst->state == inst_state::busy && !inst->retire && !inst->exit_notice
          && inst->items.size() < inst->pipeline)
        ring.push_back({inst.get(), {}});
    while (n > 0 && !fn.queue.empty()) {
      // The least loaded; among equals the first after the last served.
      target* best = nullptr;
      auto after = std::find_if(ring.begin(), ring.end(), [&](const target& t) {
        return t.inst->id > fn.ahead_cursor;
      });
      auto consider = [&](target& t) {
        if (!t.full && t.inst->items.size() < t.inst->pipeline
            && (best == nullptr || t.inst->items.size() < best->inst->items.size()))
          best = &t;
      };
      std::for_each(after, ring.end(), consider);
      std::for_each(ring.begin(), after, consider);
      if (best == nullptr)
        break;
      if (take(fn, *best->inst, best->out)) {
        --n;
        fn.ahead_cursor = best->inst->id;
      } else {
        best->full = true; // within its budget no more: the item may suit another
      }
    }
    for (auto& t : ring)
      flush(fn, *t.inst, t.out, false);
  }

  /// Appends the queue's front item to `out` as an Invoke frame for `inst` and moves it
  /// to `inst.items`; false when it must wait (`inst` has send_ahead_bytes ahead already)
  /// or the queue is empty. The first item to an idle worker goes whatever its size;
  /// items sent ahead of the one in its handler only within send_ahead_bytes. An item
  /// whose frame exceeds max_frame_bytes (the worker's limit too) is answered alone with
  /// errc::too_large and the next one tried.
  bool take(function_state& fn, instance& inst, std::string& out) {
    while (!fn.queue.empty()) {
      auto& item = fn.queue.front();
      gfn::Frame f;
      auto* inv = f.mutable_invoke();
      inv->set_id(item.seq);
      // The item keeps its bytes (it is queued again if the instance ends): lent to the
      // frame while it is serialized, not copied.
      inv->mutable_payload()->swap(item.payload);
      inv->mutable_subject()->swap(item.subject);
      inv->mutable_source()->swap(item.source);
      inv->mutable_content_type()->swap(item.content_type);
      inv->set_invocation_id(invocation_prefix_ + std::to_string(item.seq));
      inv->set_remaining_ms(static_cast<uint64_t>(fn.def->timeout_s) * 1000);
      inv->set_event(!item.request.has_value());
      bool ahead = !inst.items.empty();
      // Sized before anything is serialized: an item that must wait (or is refused)
      // costs no copy, however often a dispatch meets it at the head of the queue.
      auto size = f.ByteSizeLong();
      auto lend_back = [&] {
        inv->mutable_payload()->swap(item.payload);
        inv->mutable_subject()->swap(item.subject);
        inv->mutable_source()->swap(item.source);
        inv->mutable_content_type()->swap(item.content_type);
      };
      if (size > static_cast<size_t>(cfg_.max_frame_bytes)) {
        lend_back();
        // Nothing of it was sent: it alone is answered, the instance goes on.
        refuse(fn);
        auto refused = pop_queue(fn);
        answer_error(&fn, refused,
                     make_error(errc::too_large,
                                "function '" + fn.name + "': the work item's frame of "
                                  + std::to_string(size) + " bytes exceeds the limit of "
                                  + std::to_string(cfg_.max_frame_bytes)
                                  + " (max_frame_bytes)"));
        continue;
      }
      auto bytes = grove::framing::header_size + size;
      if (ahead && inst.ahead_bytes + bytes > send_ahead_bytes) {
        lend_back();
        return false; // it waits for the handler to take the items ahead of it
      }
      grove::framing::append_frame_sized(out, f, size);
      lend_back();
      item.frame_bytes = bytes;
      if (ahead)
        inst.ahead_bytes += bytes;
      track_ahead(fn, inst, [&] { inst.items.push_back(pop_queue(fn)); });
      return true;
    }
    return false;
  }

  /// Writes the frames take() put in `out` to `inst` in one send; `was_idle`: the first
  /// of them is the one its handler starts now.
  void flush(function_state& fn, instance& inst, const std::string& out, bool was_idle) {
    if (out.empty())
      return;
    inst.state = inst_state::busy;
    if (was_idle) {
      ++inst.idle_gen;
      start_deadline(fn, inst);
    }
    write_out(fn, inst, out);
  }

  /// Writes a frame (a CallReply: call, shadow and infer replies) through write_out.
  void send(function_state& fn, instance& inst, const gfn::Frame& f) {
    std::string buf;
    if (auto err = grove::framing::append_frame(buf, f))
      return end_instance(fn, inst, "cannot write to the instance: " + grove::describe(err),
                          false);
    write_out(fn, inst, buf);
  }

  /// Sends `bytes` to `inst` without ever waiting: what its socket does not take now
  /// waits in inst.out, in order, and goes when the worker reads (out_timer). A worker
  /// that stops reading (its handler busy, or stuck) then holds neither the actor nor
  /// other functions; what waits for it is bounded (4 * max_frame_bytes, as what the
  /// reader takes from it), beyond which it is ended.
  void write_out(function_state& fn, instance& inst, std::string_view bytes) {
    if (inst.fd < 0 || inst.state == inst_state::ending)
      return;
    if (inst.out.size() == inst.out_off) {
      auto n = send_some(fn, inst, bytes);
      if (n < 0)
        return;
      bytes.remove_prefix(static_cast<size_t>(n));
      if (bytes.empty())
        return;
    }
    auto waiting = inst.out.size() - inst.out_off + bytes.size();
    if (waiting > 4 * static_cast<size_t>(cfg_.max_frame_bytes))
      return end_instance(fn, inst,
                          "its socket is full: the worker does not read what the runtime "
                          "sends it ("
                            + std::to_string(waiting) + " bytes waiting)",
                          false);
    inst.out.append(bytes);
    if (inst.out_timer == 0)
      arm_out(fn, inst);
  }

  /// Sends what of `bytes` the socket takes now: their number, or -1 once the instance
  /// was ended for an error.
  ssize_t send_some(function_state& fn, instance& inst, std::string_view bytes) {
    ssize_t n;
    while ((n = ::send(inst.fd, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL)) < 0
           && errno == EINTR) {
    }
    if (n >= 0)
      return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return 0;
    end_instance(fn, inst, std::string{"cannot write to the instance: "} + std::strerror(errno),
                 false);
    return -1;
  }

  /// Retries inst.out after out_retry: at once again (1 ms) once bytes go, doubling up to
  /// 64 ms while none do (a worker in a long handler costs a few timers a second).
  void arm_out(function_state& fn, instance& inst) {
    inst.out_timer = ctx_->after(inst.out_retry, [this, name = fn.name, id = inst.id] {
      auto* inst = find(name, id);
      if (inst == nullptr)
        return;
      inst->out_timer = 0;
      if (inst->state == inst_state::ending)
        return;
      auto& fn = functions_.at(name);
      auto n = send_some(fn, *inst, std::string_view{inst->out}.substr(inst->out_off));
      if (n < 0)
        return;
      inst->out_off += static_cast<size_t>(n);
      if (inst->out_off == inst->out.size()) {
        inst->out.clear();
        inst->out_off = 0;
        inst->out_retry = 1ms;
        return;
      }
      // Keep the buffer from growing without end while it drains slowly.
      if (inst->out_off > (inst->out.size() >> 1)) {
        inst->out.erase(0, inst->out_off);
        inst->out_off = 0;
      }
      inst->out_retry = n > 0 ? 1ms : std::min<std::chrono::milliseconds>(2 * inst->out_retry, 64ms);
      arm_out(fn, *inst);
    });
  }

  /// Sends a small frame (Recall, PublishAck) now, or ends the instance. The socket
  /// holds at most the items sent ahead (send_ahead_bytes) and the replies the worker
  /// waits for, far under send_buffer_bytes: a full one is a worker that does not read
  /// what it asked for (Publishes with acks it never reads). A Recall also ends it when
  /// bytes already wait in inst.out: queued behind them it would reach the worker only
  /// after it started the next item sent ahead. `behind`: the frame may wait behind those
  /// bytes (a PublishAck after a large reply the worker is still reading).
  void send_now(function_state& fn, instance& inst, const gfn::Frame& f, bool behind = false) {
    if (inst.fd < 0 || inst.state == inst_state::ending)
      return;
    std::string buf;
    if (auto err = grove::framing::append_frame(buf, f))
      return end_instance(fn, inst, "cannot write to the instance: " + grove::describe(err),
                          false);
    if (behind && inst.out.size() != inst.out_off)
      return write_out(fn, inst, buf);
    ssize_t n = 0;
    if (inst.out.size() == inst.out_off && (n = send_some(fn, inst, buf)) < 0)
      return;
    if (n == 0)
      return end_instance(fn, inst,
                          "its socket is full: the worker does not read what the runtime "
                          "sends it",
                          false);
    // A frame this small goes in one piece or not at all (one buffer of the socket);
    // the rest of a split one, should a kernel split it, waits in order.
    if (static_cast<size_t>(n) < buf.size())
      write_out(fn, inst, std::string_view{buf}.substr(static_cast<size_t>(n)));
  }

  /// The front item of `inst` has just reached its handler: timeoutInSeconds from now.
  void start_deadline(function_state& fn, instance& inst) {
    auto timeout = std::chrono::seconds{fn.def->timeout_s};
    inst.deadline = std::chrono::steady_clock::now() + timeout;
    if (inst.deadline_timer != 0 && inst.deadline < inst.deadline_armed) {
      // A lowered timeoutInSeconds: the armed timer would fire too late.
      ctx_->cancel(inst.deadline_timer);
      inst.deadline_timer = 0;
    }
    if (inst.deadline_timer == 0)
      arm_deadline(fn.name, inst, timeout);
  }

  void arm_deadline(const std::string& name, instance& inst, std::chrono::milliseconds in) {
    auto id = inst.id;
    inst.deadline_armed = std::chrono::steady_clock::now() + in;
    inst.deadline_timer = ctx_->after(in, [this, name, id] {
      auto* inst = find(name, id);
      if (inst == nullptr)
        return;
      inst->deadline_timer = 0;
      if (inst->state != inst_state::busy || inst->items.empty())
        return;
      auto now = std::chrono::steady_clock::now();
      if (now >= inst->deadline)
        return end_instance(functions_.at(name), *inst, "", true);
      // The item it was armed for is done; the one in hand now ends later.
      arm_deadline(name, *inst,
                   std::chrono::ceil<std::chrono::milliseconds>(inst->deadline - now));
    });
  }

  // -- instances -------------------------------------------------------------------

  instance* find(const std::string& name, uint64_t id) {
    auto it = functions_.find(name);
    if (it == functions_.end())
      return nullptr;
    auto jt = it->second.instances.find(id);
    return jt == it->second.instances.end() ? nullptr : jt->second.get();
  }

  /// Runs on the instance's reader thread: frames go to the actor, at most `limit`
  /// and 4 * max_frame_bytes waiting; a bad frame, EOF or a flood ends the loop. One
  /// read takes every frame that has arrived, and they go to the actor in one message.
  void read_loop(std::string name, uint64_t id, int fd, uint32_t max,
                 std::shared_ptr<std::atomic<int64_t>> pending,
                 std::shared_ptr<std::atomic<int64_t>> bytes,
                 std::shared_ptr<frame_inbox> inbox, int64_t limit) {
    const int64_t byte_limit = 4 * static_cast<int64_t>(max);
    grove::framing::frame_stream in{max};
    auto fail = [&](caf::error err) {
      ctx_->post([this, name, id, err] { channel_failed(name, id, err); });
    };
    for (;;) {
      // EOF, or a read error: system_error; a frame cut short: malformed.
      if (auto err = in.fill(fd))
        return fail(std::move(err));
      inbox->heard();
      frame_inbox::batch batch;
      caf::error err;
      for (;;) {
        auto body = in.next();
        if (!body) {
          err = std::move(body.error());
          break;
        }
        if (!*body)
          break;
        auto& f = batch.frames.emplace_back();
        if (!f.ParseFromArray((*body)->data(), static_cast<int>((*body)->size()))) {
          batch.frames.pop_back();
          err = make_error(errc::malformed, "cannot parse " + f.GetTypeName());
          break;
        }
        auto size = static_cast<int64_t>((*body)->size());
        if (pending->fetch_add(1) + 1 > limit || bytes->fetch_add(size) + size > byte_limit) {
          batch.frames.pop_back();
          err = make_error(errc::queue_full, "flood: more than " + std::to_string(limit)
                                               + " frames or " + std::to_string(byte_limit)
                                               + " bytes waiting");
          break;
        }
        batch.bytes += size;
      }
      if (!batch.frames.empty()) {
        inbox->push(std::move(batch));
        ctx_->post([this, name, id, inbox, pending, bytes] {
          drain(name, id, *inbox, *pending, *bytes);
        });
      }
      if (err)
        return fail(std::move(err));
    }
  }

  /// Handles the frames `inbox` holds (all of them: a drain posted later finds none).
  void drain(const std::string& name, uint64_t id, frame_inbox& inbox,
             std::atomic<int64_t>& pending, std::atomic<int64_t>& bytes) {
    for (auto& b : inbox.take()) {
      pending.fetch_sub(static_cast<int64_t>(b.frames.size()));
      bytes.fetch_sub(b.bytes);
      for (auto& f : b.frames)
        on_frame(name, id, f);
    }
  }

  void channel_failed(const std::string& name, uint64_t id, const caf::error& err) {
    auto* inst = find(name, id);
    if (inst == nullptr)
      return;
    // Its frames were posted before this (same thread): a held exit can finish now.
    inst->reader_done = true;
    if (inst->exit_notice) {
      auto e = *inst->exit_notice;
      return exited(name, id, e);
    }
    if (inst->state == inst_state::ending)
      return;
    auto& fn = functions_.at(name);
    if (err == errc::system_error) {
      // EOF: the worker closed its socket or died; its exit answers the item.
      inst->state = inst_state::ending;
      cancel_timers(*inst);
      inst->proc.stop(SIGTERM, std::chrono::milliseconds{cfg_.stop_grace_ms});
      return;
    }
    end_instance(fn, *inst, "bad IPC frame: " + grove::describe(err), false);
  }

  void on_frame(const std::string& name, uint64_t id, gfn::Frame& f) {
    auto* inst = find(name, id);
    if (inst == nullptr || inst->state == inst_state::ending)
      return;
    auto& fn = functions_.at(name);
    if (auto err = gfn::check_worker_frame(f, inst->saw_hello, inst->token))
      return end_instance(fn, *inst, grove::message_of(err), false);
    gfn::make_text_valid(f);
    if (!inst->saw_hello) {
      if (!f.hello().error().empty()) {
        // The worker cannot serve (a Python handler that does not import): a failed
        // start with its reason; the instance's exit schedules the retry.
        fn.last_error = f.hello().error();
        fn.log->write("ERROR", fn.last_error);
        ctx_->log().error("function '{}': {}", fn.name, fn.last_error);
        return end_instance(fn, *inst, "", false);
      }
      inst->saw_hello = true;
      // Only a worker that gives items back when retired (Recall) gets them ahead.
      inst->pipeline = f.hello().recall()
                         ? std::clamp<uint32_t>(f.hello().pipeline(), 1,
                                                static_cast<uint32_t>(cfg_.pipeline_depth))
                         : 1;
      if (inst->hello_timer != 0)
        ctx_->cancel(inst->hello_timer);
      inst->hello_timer = 0;
      inst->state = inst_state::idle;
      if (inst->retire)
        return end_instance(fn, *inst, "", false);
      if (f.hello().status() && fn.def && fn.def->pinned)
        arm_status(fn, *inst, std::chrono::seconds{2 * fn.def->status_timeout_s});
      arm_idle(fn, *inst);
      return dispatch(fn);
    }
    switch (f.body_case()) {
      case gfn::Frame::kResult:
        return result(fn, *inst, *f.mutable_result());
      case gfn::Frame::kPublish:
        return publish(fn, *inst, f.publish());
      case gfn::Frame::kCall:
        return call(fn, *inst, f.call());
      case gfn::Frame::kShadowCall:
        return shadow_call(fn, *inst, f.shadow_call());
      case gfn::Frame::kInferCall:
        return infer(fn, *inst, f.infer_call());
      case gfn::Frame::kRecalled:
        return recalled(fn, *inst);
      case gfn::Frame::kLog: {
        static constexpr const char* levels[] = {"DEBUG", "INFO", "WARN", "ERROR", "FATAL"};
        auto level = std::min<uint32_t>(f.log().level(), 4);
        if (level < fn_min_level_)
          return; // under the group's Lambda logger level
        fn.log->write(levels[level], f.log().text());
        return;
      }
      default:
        return; // check_worker_frame let nothing else through
    }
  }

  void result(function_state& fn, instance& inst, gfn::Result& r) {
    if (inst.state != inst_state::busy || inst.items.empty() || inst.items.front().seq != r.id())
      return end_instance(fn, inst, "a result for no item in hand", false);
    auto item = std::move(inst.items.front());
    track_ahead(fn, inst, [&] { inst.items.pop_front(); });
    fn.item_death_run = 0; // an item answered: the run of instance-ending items is over
    fn.item_deaths.clear();
    // The next item sent ahead is in the handler now (its deadline timer stays armed);
    // its bytes have left the socket buffer.
    if (!inst.items.empty()) {
      inst.ahead_bytes -= std::min(inst.ahead_bytes, inst.items.front().frame_bytes);
      start_deadline(fn, inst);
    }
    if (!r.error().empty()) {
      note_error(fn, "handler failed: " + r.error());
      answer_error(&fn, item, make_error(errc::plugin_failed,
                                         "function '" + fn.name + "': " + r.error()));
    } else {
      ++fn.invocations;
      fn.invocations_c.inc();
      if (item.request)
        ctx_->reply(*item.request, std::move(*r.mutable_payload()), r.content_type());
    }
    // /proc costs an open and a parse: at most every 100 ms per instance while it serves
    // (refresh_status and list() read it too).
    auto now = std::chrono::steady_clock::now();
    if (now - inst.hwm_read >= 100ms) {
      inst.hwm_read = now;
      fn.memory_hwm_kb = std::max(fn.memory_hwm_kb, memory_hwm_kb(inst.pid));
    }
    if (!inst.items.empty())
      return dispatch(fn);
    inst.state = inst_state::idle;
    if (inst.retire)
      return end_instance(fn, inst, "", false);
    arm_idle(fn, inst);
    dispatch(fn);
  }

  void note_error(function_state& fn, std::string why) {
    ++fn.errors;
    fn.errors_c.inc();
    fn.log->write("ERROR", why);
    fn.last_error = std::move(why);
  }

  void arm_idle(function_state& fn, instance& inst) {
    if (fn.def->pinned)
      return;
    auto name = fn.name;
    auto id = inst.id;
    auto gen = ++inst.idle_gen;
    ctx_->after(std::chrono::seconds{fn.def->max_idle_time_s}, [this, name, id, gen] {
      auto* inst = find(name, id);
      if (inst && inst->state == inst_state::idle && inst->idle_gen == gen)
        end_instance(functions_.at(name), *inst, "", false);
    });
  }

  // How long failed no-ack publishes after a logged one are only counted.
  static constexpr std::chrono::seconds nowait_log_interval{5};

  // A failed no-ack publish, told to the function's log only: a function that floods
  // them must not flood its log (one line a failure, for ever), so the first one is
  // written and the rest are counted until the window closes.
  void note_nowait_failure(function_state& fn, std::string why) {
    if (fn.nowait_window) {
      ++fn.nowait_failed;
      fn.nowait_last = std::move(why);
      return;
    }
    fn.log->write("WARN", why);
    fn.nowait_window = true;
    close_nowait_window(fn.name);
  }

  // At the end of the window: the count of failures it held (another window follows),
  // or none (the next failure is written again).
  void close_nowait_window(const std::string& name) {
    ctx_->after(nowait_log_interval, [this, name] {
      auto it = functions_.find(name);
      if (it == functions_.end())
        return;
      auto& fn = it->second;
      if (fn.nowait_failed == 0) {
        fn.nowait_window = false;
        return;
      }
      write_nowait_count(fn, "in the last " + std::to_string(nowait_log_interval.count())
                               + " s");
      close_nowait_window(name);
    });
  }

  /// The count a window still holds, written now: the function is going (unload,
  /// removal, reload), and the timer that would have written it goes with it.
  void flush_nowait(function_state& fn) {
    if (fn.log)
      write_nowait_count(fn, "before function_runtime let the function go");
  }

  // The failures a window counted, in one line ("N more ... failed <when> (the last: ...)"),
  // and the window's count starts again.
  void write_nowait_count(function_state& fn, const std::string& when) {
    if (fn.nowait_failed > 0)
      fn.log->write("WARN", std::to_string(fn.nowait_failed) + " more no-ack publishes failed "
                              + when + " (the last: " + fn.nowait_last + ")");
    fn.nowait_failed = 0;
    fn.nowait_last.clear();
  }

  void publish(function_state& fn, instance& inst, const gfn::Publish& p) {
    if (inst.publishes_in_flight >= cfg_.max_pending_frames)
      return end_instance(fn, inst,
                          "flood: more than " + std::to_string(cfg_.max_pending_frames)
                            + " publishes in flight",
                          false);
    auto ack = [this, name = fn.name, id = inst.id, ack_id = p.ack_id(), topic = p.topic()](
                 uint32_t targets, const caf::error& err) {
      auto* inst = find(name, id);
      if (inst == nullptr)
        return;
      --inst->publishes_in_flight;
      // A publish that asked for no ack (publish_nowait) has no one to tell of its
      // failure but the function's log.
      if (ack_id == 0 && err)
        note_nowait_failure(functions_.at(name),
                            "publish to " + quoted(topic) + " failed: " + grove::describe(err));
      if (ack_id == 0 || inst->state == inst_state::ending)
        return;
      gfn::Frame f;
      auto* a = f.mutable_publish_ack();
      a->set_ack_id(ack_id);
      a->set_targets(targets);
      if (err)
        a->set_error(grove::describe(err));
      send_now(functions_.at(name), *inst, f, true);
    };
    ++inst.publishes_in_flight;
    if (auto err = grove::validate_topic(p.topic()))
      return ack(0, err);
    auto msg = grove::message_manager::make_publish(
      p.topic(), p.payload(), grove::function_runtime::source_of(fn.name), p.qos(),
      p.content_type());
    grove::message_manager::publish(*ctx_, std::move(msg),
                                    std::chrono::milliseconds{cfg_.call_timeout_ms},
                                    [ack](caf::expected<grove::mm::Routed> r) {
                                      if (r)
                                        ack(r->targets(), {});
                                      else
                                        ack(0, r.error());
                                    });
  }

  void call(function_state& fn, instance& inst, const gfn::Call& c) {
    auto reply = [this, name = fn.name, id = inst.id, call_id = c.call_id()](
                   caf::expected<grove::Envelope> r) {
      if (r)
        send_call_reply(name, id, call_id, r->payload(), {}, r->content_type());
      else
        send_call_reply(name, id, call_id, {}, grove::describe(r.error()), {});
    };
    if (!gfn::valid_function_name(c.function()))
      return reply(make_error(errc::malformed,
                              "invoke: " + quoted(c.function()) + " is not a function name: "
                                + names::function_rule));
    if (c.event()) {
      // The runtime's own subscription to the event topics takes every event, so the
      // bus's delivery count cannot tell a missing function: the definitions can.
      auto it = functions_.find(c.function());
      if (it == functions_.end() || !it->second.def || it->second.removed)
        return reply(make_error(errc::no_route, "no function " + quoted(c.function())
                                                  + " in the group to take the event"));
      grove::Envelope e;
      e.set_topic(std::string{grove::function_runtime::event_prefix} + c.function());
      e.set_payload(c.payload());
      e.set_content_type(c.content_type());
      e.set_source(grove::function_runtime::source_of(fn.name));
      auto r = ctx_->publish(std::move(e));
      if (!r)
        return reply(r.error());
      return reply(grove::Envelope{});
    }
    auto e = grove::function_runtime::make_invoke(c.function(), c.payload(), c.content_type());
    e.set_source(grove::function_runtime::source_of(fn.name));
    auto timeout = c.timeout_ms() != 0 ? c.timeout_ms()
                                       : static_cast<uint64_t>(cfg_.call_timeout_ms);
    ctx_->call(std::move(e), std::chrono::milliseconds{timeout}, reply);
  }

  /// A function's inference (InferCall): only on a model its resourceAccessPolicies
  /// grant, sent to ml_inference (ml-1) with its typed client; the reply (asynchronous,
  /// the actor is not held) answers the worker as a CallReply: the InferResponse's bytes,
  /// or ml_inference's error code and message.
  void infer(function_state& fn, instance& inst, const gfn::InferCall& c) {
    auto answer = [this, name = fn.name, id = inst.id,
                   call_id = c.call_id()](caf::expected<grove::ml::InferResponse> r) {
      if (r)
        send_call_reply(name, id, call_id, r->SerializeAsString(), {},
                        "application/x-protobuf");
      else
        send_call_reply(name, id, call_id, {}, grove::message_of(r.error()), {},
                        code_of(r.error()));
    };
    if (!gfn::valid_model_name(c.model()))
      return answer(make_error(errc::malformed, "infer: '" + c.model()
                                                  + "' is not a model name ("
                                                  + names::model_rule + ")"));
    // As ml_inference answers for a model it does not have: no_route.
    if (!ml_models_.count(c.model()))
      return answer(make_error(errc::no_route,
                               "no ML model resource '" + c.model() + "' in the group"));
    if (!fn.granted_models.count(c.model()))
      return answer(make_error(errc::not_authorized,
                               "function '" + fn.name + "' is not granted model '" + c.model()
                                 + "': its resourceAccessPolicies do not name it"));
    grove::ml::InferRequest req;
    if (!req.ParseFromString(c.request()))
      return answer(make_error(errc::malformed,
                               "infer: the request is not a grove.ml.InferRequest"));
    auto timeout = std::chrono::milliseconds{
      c.timeout_ms() != 0 ? static_cast<int64_t>(c.timeout_ms()) : cfg_.call_timeout_ms};
    grove::ml_inference::infer_rpc rpc{grove::ml_inference::infer_topic(c.model())};
    rpc(*ctx_, req, timeout, std::move(answer));
  }

  /// Answers a worker's Call, ShadowCall or InferCall `call_id`, if its instance still
  /// runs.
  void send_call_reply(const std::string& name, uint64_t id, uint64_t call_id,
                       std::string payload, std::string error, std::string content_type,
                       std::string error_code = {}) {
    auto* inst = find(name, id);
    if (inst == nullptr || inst->state == inst_state::ending)
      return;
    gfn::Frame f;
    auto* out = f.mutable_call_reply();
    out->set_call_id(call_id);
    out->set_payload(std::move(payload));
    out->set_error(std::move(error));
    out->set_content_type(std::move(content_type));
    out->set_error_code(std::move(error_code));
    send(functions_.at(name), *inst, f);
  }

  /// A function's shadow request: sent through the table with a clientToken; the reply
  /// comes back as an mm-1 message from the shadow service (shadow_reply).
  void shadow_call(function_state& fn, instance& inst, const gfn::ShadowCall& c) {
    auto answer = [this, name = fn.name, id = inst.id, call_id = c.call_id()](
                    std::string payload, std::string error) {
      send_call_reply(name, id, call_id, std::move(payload), std::move(error), {});
    };
    if (!gfn::valid_shadow_name(c.thing(), names::max_thing))
      return answer({}, "malformed: " + quoted(c.thing()) + " is not a thing name ("
                          + names::thing_rule + ")");
    if (!c.shadow().empty() && !gfn::valid_shadow_name(c.shadow(), names::max_shadow))
      return answer({}, "malformed: " + quoted(c.shadow()) + " is not a shadow name ("
                          + names::shadow_rule + ")");
    if (c.op() != "get" && c.op() != "update" && c.op() != "delete")
      return answer({}, "malformed: " + quoted(c.op()) + " is not a shadow operation");
    nlohmann::json doc = nlohmann::json::object();
    if (c.op() == "update") {
      doc = nlohmann::json::parse(c.payload(), nullptr, false);
      if (!doc.is_object())
        return answer({}, "update_thing_shadow: the document is not a JSON object");
    }
    std::string token;
    if (auto it = doc.find("clientToken"); it != doc.end() && it->is_string()
                                           && !it->get<std::string>().empty())
      token = it->get<std::string>();
    else
      doc["clientToken"] = token = random_hex(16);
    // Keyed by function too: a reply reaches only the function it was routed to.
    auto key = fn.name + '\n' + token;
    if (pending_shadow_.count(key))
      return answer({}, "a shadow call with clientToken '" + token + "' is in flight");
    auto topic = "$aws/things/" + c.thing() + "/shadow/"
                 + (c.shadow().empty() ? "" : "name/" + c.shadow() + "/") + c.op();
    auto timeout = std::chrono::milliseconds{
      c.timeout_ms() != 0 ? static_cast<int64_t>(c.timeout_ms()) : cfg_.call_timeout_ms};
    auto timer = ctx_->after(timeout, [this, key, token] {
      if (auto it = pending_shadow_.find(key); it != pending_shadow_.end()) {
        auto done = std::move(it->second.answer);
        pending_shadow_.erase(it);
        done({}, "timeout: no accepted/rejected reply for clientToken '" + token + "'");
      }
    });
    pending_shadow_[key] = pending_shadow{answer, timer, topic};
    auto msg = grove::message_manager::make_publish(
      topic, doc.dump(), grove::function_runtime::source_of(fn.name), 0, "application/json");
    grove::message_manager::publish(
      *ctx_, std::move(msg), timeout, [this, key, topic](caf::expected<grove::mm::Routed> r) {
        if (r && r->targets() > 0)
          return;
        auto it = pending_shadow_.find(key);
        if (it == pending_shadow_.end())
          return;
        auto done = std::move(it->second.answer);
        ctx_->cancel(it->second.timer);
        pending_shadow_.erase(it);
        done({}, r ? "no subscription routes " + topic + " to the shadow service"
                   : grove::describe(r.error()));
      });
  }

  /// True when `item` (an mm-1 message from the shadow service) answers a pending shadow
  /// call: it goes to the waiting instance instead of the queue.
  bool shadow_reply(const std::string& function, const work_item& item) {
    bool accepted = item.subject.ends_with("/accepted");
    if (pending_shadow_.empty() || (!accepted && !item.subject.ends_with("/rejected")))
      return false;
    auto doc = nlohmann::json::parse(item.payload, nullptr, false);
    if (!doc.is_object())
      return false;
    auto t = doc.find("clientToken");
    if (t == doc.end() || !t->is_string())
      return false;
    auto it = pending_shadow_.find(function + '\n' + t->get<std::string>());
    // The reply's topic must be the request's + /accepted or /rejected.
    if (it == pending_shadow_.end() || !item.subject.starts_with(it->second.topic + "/"))
      return false;
    auto done = std::move(it->second.answer);
    ctx_->cancel(it->second.timer);
    pending_shadow_.erase(it);
    if (accepted)
      done(item.payload, {});
    else
      done({}, "rejected: " + item.payload);
    return true;
  }

  /// statusTimeoutInSeconds of a pinned instance (Greengrass: the interval at which a
  /// pinned Lambda reports its status): its SDK reports at least that often, from a
  /// thread of its own, and any frame counts. One missed report is forgiven (a loaded
  /// device); heard nothing for twice the interval, the instance is stuck (stopped,
  /// deadlocked, its runtime wedged) and is ended, its item answered, and the pinned
  /// function starts a new one. The timer fires at the silence's earliest end and is
  /// re-armed from the last report, not set per frame.
  void arm_status(function_state& fn, instance& inst, std::chrono::seconds limit) {
    arm_status(fn, inst, limit, limit);
  }

  /// As above, firing after `delay` (what is left of `limit` since the last report).
  void arm_status(function_state& fn, instance& inst, std::chrono::seconds limit,
                  std::chrono::milliseconds delay) {
    inst.status_timer = ctx_->after(delay, [this, name = fn.name, id = inst.id, limit] {
      auto* inst = find(name, id);
      if (inst == nullptr || inst->state == inst_state::ending)
        return;
      inst->status_timer = 0;
      auto heard = std::chrono::steady_clock::time_point{
        std::chrono::steady_clock::duration{inst->inbox->heard_ns.load()}};
      auto silent = std::chrono::steady_clock::now() - heard;
      auto& fn = functions_.at(name);
      if (silent < limit) {
        // The rest of the silence allowed, against the whole limit again next time.
        arm_status(fn, *inst, limit,
                   std::chrono::ceil<std::chrono::milliseconds>(limit - silent));
        return;
      }
      end_instance(fn, *inst,
                   "no status report for " + std::to_string(limit.count())
                     + " s (twice statusTimeoutInSeconds): the instance is stuck",
                   false);
    });
  }

  void cancel_timers(instance& inst) {
    for (auto* t : {&inst.hello_timer, &inst.deadline_timer, &inst.status_timer,
                    &inst.out_timer})
      if (*t != 0) {
        ctx_->cancel(*t);
        *t = 0;
      }
  }

  /// Ends an instance: its item (if any) is answered now (a timeout, or `why`), the
  /// process gets SIGTERM then SIGKILL, and its exit removes it. An empty `why` with no
  /// timeout is an orderly end (idle exit, retirement).
  void end_instance(function_state& fn, instance& inst, const std::string& why, bool timeout) {
    if (inst.state == inst_state::ending)
      return;
    inst.state = inst_state::ending;
    cancel_timers(inst);
    inst.orderly = why.empty() && !timeout;
    inst.faulted = !inst.orderly;
    inst.item_fault = !inst.orderly && !inst.items.empty();
    if (timeout) {
      ++fn.timeouts;
      fn.timeouts_c.inc();
      auto msg = "timed out after " + std::to_string(fn.def ? fn.def->timeout_s : 0)
                 + " s (timeoutInSeconds)";
      fn.last_error = msg;
      fn.log->write("ERROR", msg);
      fail_in_hand(fn, inst, make_error(errc::timeout, "function '" + fn.name + "' " + msg));
    } else if (!why.empty()) {
      note_error(fn, "instance ended: " + why);
      ctx_->log().warn("function '{}': instance {} ended: {}", fn.name, inst.pid, why);
      fail_in_hand(fn, inst, make_error(errc::plugin_failed,
                                        "function '" + fn.name + "': instance ended: " + why));
    } else {
      fail_in_hand(fn, inst, {});
    }
    inst.proc.stop(SIGTERM, std::chrono::milliseconds{cfg_.stop_grace_ms});
  }

  /// The item in `inst`'s handler is answered with `err`; those sent ahead of it never
  /// reached the handler and go back to the front of the queue, in order, for the next
  /// instance (or are answered with `err` too when the function is withdrawn or
  /// removed, and with plugin_broken when it gave up starting instances: nothing would
  /// run them). An empty `err` (an orderly end) has no item in hand.
  void fail_in_hand(function_state& fn, instance& inst, const caf::error& err) {
    inst.ahead_bytes = 0;
    if (inst.items.empty())
      return;
    // None of its items stays sent ahead: answered, or queued again below.
    fn.sent_ahead -= ahead_of(inst);
    if (err) {
      answer_error(&fn, inst.items.front(), err);
      inst.items.pop_front();
    }
    if (!fn.def || fn.removed) {
      // Withdrawn or removed: its queue has been answered, so are these.
      auto why = err ? err
                     : make_error(errc::no_route, "function '" + fn.name + "' is gone");
      for (auto& item : inst.items)
        answer_error(&fn, item, why);
      inst.items.clear();
      return;
    }
    if (fn.gave_up) {
      // As enqueue() answers new work then.
      auto why = make_error(errc::plugin_broken,
                            "function '" + fn.name + "' does not start: " + fn.last_error);
      for (auto& item : inst.items)
        answer_error(&fn, item, why);
      inst.items.clear();
      return;
    }
    while (!inst.items.empty()) {
      push_queue(fn, std::move(inst.items.back()), true);
      inst.items.pop_back();
    }
  }

  /// Stops the reader thread and closes the runtime's end of the socketpair.
  void close_channel(instance& inst) {
    if (inst.fd >= 0)
      ::shutdown(inst.fd, SHUT_RDWR);
    if (inst.reader.joinable())
      inst.reader.join();
    if (inst.fd >= 0)
      ::close(inst.fd);
    inst.fd = -1;
  }

  void exited(const std::string& name, uint64_t id, const grove::process_exit& e) {
    auto it = functions_.find(name);
    if (it == functions_.end())
      return;
    auto& fn = it->second;
    auto jt = fn.instances.find(id);
    if (jt == fn.instances.end())
      return;
    auto& inst = *jt->second;
    if (!inst.reader_done && !inst.exit_notice && inst.items.size() > 1) {
      // Results it wrote before it died may still be on the reader's thread: answered
      // first, so only the item it died on is failed and the rest are re-queued.
      inst.exit_notice = e;
      cancel_timers(inst);
      ctx_->after(exit_wait, [this, name, id] {
        if (auto* held = find(name, id); held && held->exit_notice) {
          auto notice = *held->exit_notice;
          exited(name, id, notice);
        }
      });
      return;
    }
    bool orderly = inst.orderly;
    cancel_timers(inst);
    // A sandboxed instance's end names its cause: the OOM killer, a denied call.
    auto how = inst.cgroup ? gfn::sandbox::explain(e, inst.cgroup.get(),
                                                   fn.def ? &*fn.def : nullptr)
                           : e.describe();
    bool item_fault = inst.item_fault || !inst.items.empty();
    if (!inst.items.empty()) {
      note_error(fn, "instance " + how);
      fail_in_hand(fn, inst, make_error(errc::plugin_failed,
                                        "function '" + name + "': instance " + how));
    } else if (!orderly && (!inst.faulted || how != e.describe())) {
      note_error(fn, "instance " + how);
    }
    bool retire = inst.retire;
    bool said_hello = inst.saw_hello;
    fn.memory_hwm_kb = std::max(fn.memory_hwm_kb, memory_hwm_kb(inst.pid));
    close_channel(inst);
    fn.instances.erase(jt);
    fn.instances_g.set(static_cast<int64_t>(fn.instances.size()));
    if (fn.removed) {
      erase_removed();
      return;
    }
    // Only a start that failed (no hello) counts toward giving up. An instance that died
    // on an item is that item's failure (answered above) and is replaced now; a pinned
    // one that died idle is restarted after a back-off.
    if (fn.def && !said_hello) {
      if (fn.last_error.empty())
        fn.last_error = "instance " + how + " before its hello";
      schedule_retry(fn);
    } else if (fn.def && fn.def->pinned && !retire && !orderly && !item_fault) {
      schedule_restart(fn);
    } else if (fn.def && item_fault && fn.item_death_run++ > 0 && fn.backoff_timer == 0) {
      // Items that keep ending their instance (every item poison, say): not a fork and
      // a sandbox per item at full speed.
      back_off(fn, fn.item_deaths.record(idle_death_policy_).delay);
    }
    dispatch(fn);
  }

  // -- operators -------------------------------------------------------------------

  caf::expected<gfn::FunctionList> list() {
    gfn::FunctionList out;
    for (auto& [name, fn] : functions_) {
      if (fn.removed)
        continue;
      auto* i = out.add_functions();
      i->set_name(name);
      i->set_valid(fn.def.has_value());
      uint32_t busy = 0;
      for (auto& [id, inst] : fn.instances) {
        busy += inst->state == inst_state::busy ? 1 : 0;
        fn.memory_hwm_kb = std::max(fn.memory_hwm_kb, memory_hwm_kb(inst->pid));
      }
      if (fn.def) {
        i->set_pinned(fn.def->pinned);
        i->set_max_instances(fn.def->pinned ? 1 : static_cast<uint32_t>(fn.def->max_instances_count));
        i->set_max_queue(static_cast<uint32_t>(fn.def->max_queue_size));
      }
      i->set_instances(static_cast<uint32_t>(fn.instances.size()));
      i->set_busy(busy);
      i->set_queued(static_cast<uint32_t>(waiting(fn)));
      i->set_sent_ahead(static_cast<uint32_t>(fn.sent_ahead));
      i->set_invocations(fn.invocations);
      i->set_errors(fn.errors);
      i->set_timeouts(fn.timeouts);
      i->set_refused(fn.refused);
      i->set_last_error(fn.def_error.empty() ? fn.last_error : fn.def_error);
      i->set_memory_hwm_kb(fn.memory_hwm_kb);
      i->set_output_lines_dropped(fn.output_dropped);
      i->set_log_file(fn.log->path().string());
    }
    return out;
  }

  void refresh_status() {
    size_t defined = 0, invalid = 0, instances = 0, queued = 0, ahead = 0;
    for (auto& [name, fn] : functions_) {
      // A removed function's instances are ending: its gauges follow them down.
      auto w = waiting(fn);
      fn.queued_g.set(static_cast<int64_t>(w));
      fn.sent_ahead_g.set(static_cast<int64_t>(fn.sent_ahead));
      if (fn.removed)
        continue;
      ++(fn.def ? defined : invalid);
      instances += fn.instances.size();
      queued += w;
      ahead += fn.sent_ahead;
      for (auto& [id, inst] : fn.instances)
        if (inst->state == inst_state::busy)
          fn.memory_hwm_kb = std::max(fn.memory_hwm_kb, memory_hwm_kb(inst->pid));
    }
    ctx_->set_status("function_logs", describe_logs());
    ctx_->set_status("functions", std::to_string(defined) + " defined, "
                                    + std::to_string(invalid) + " invalid");
    ctx_->set_status("instances", std::to_string(instances) + " running, "
                                    + std::to_string(queued) + " queued ("
                                    + std::to_string(ahead) + " sent ahead)");
  }

  /// The sandbox, opened (probed) at the first GreengrassContainer function; null when
  /// the kernel lacks a feature (sandbox_error_ names it). Its state shows in status.
  gfn::sandbox* open_sandbox() {
    if (!sandbox_probed_) {
      sandbox_probed_ = true;
      auto sb = gfn::sandbox::open(cfg_, ctx_->state_dir());
      if (sb) {
        sandbox_ = std::move(*sb);
        ctx_->set_status("sandbox", sandbox_->describe());
        ctx_->log().info("sandbox: {}", sandbox_->describe());
        for (const auto& w : sandbox_->warnings())
          ctx_->log().warn("sandbox: {}", w);
        for (const auto& d : sandbox_->stale_removed())
          ctx_->log().info("sandbox: removed {}, left by a groved that is gone", d);
      } else {
        sandbox_error_ = grove::describe(sb.error());
        ctx_->set_status("sandbox", "unavailable: " + sandbox_error_);
      }
    }
    return sandbox_.get();
  }

  grove::context* ctx_ = nullptr;
  std::unique_ptr<gfn::sandbox> sandbox_;
  std::string sandbox_error_;
  bool sandbox_probed_ = false;
  gfn::runtime_config cfg_;
  fs::path logs_dir_;
  // The group's Lambda logger as applied (apply_loggers).
  uint32_t fn_min_level_ = 0;
  uint64_t log_max_bytes_ = 0;
  uint32_t log_files_ = 0;
  std::string lambda_logger_;
  std::string lambda_level_;
  grove::restart_policy policy_;
  // The back-off of a pinned instance that dies idle: the kernel's, without a give-up.
  grove::restart_policy idle_death_policy_{.max_failures = UINT32_MAX};
  std::map<std::string, function_state> functions_;
  std::set<std::string> pubsub_;
  std::set<std::string> ml_models_; // the group's ML model resources (ids)
  std::optional<grove::message_manager::cloud_filters> cloud_; // IOT_CORE sources
  /// Shadow calls in flight by clientToken.
  struct pending_shadow {
    std::function<void(std::string, std::string)> answer;
    grove::timer_id timer = 0;
    std::string topic;
  };
  std::map<std::string, pending_shadow> pending_shadow_;
  uint64_t seq_ = 0;
  uint64_t instance_ids_ = 0;
  // Invocation ids are this (random per runtime) and the item's sequence number.
  std::string invocation_prefix_;
  uint64_t mounts_requests_ = 0;
  uint64_t spare_requests_ = 0;
  grove::timer_id status_timer_ = 0;
  // The group last applied, serialized: handed over at a hot reload.
  std::string group_bytes_;
  // What the previous instance handed over (restore()), taken over in start().
  std::optional<gfn::Snapshot> restored_;
  // Set by snapshot(): the instance is being replaced, nothing is dispatched any more.
  bool reloading_ = false;
  grove::counter_family invocations_, errors_, timeouts_, refused_;
  grove::gauge_family instances_gauge_, queued_gauge_, sent_ahead_gauge_;
};

} // namespace

GROVE_TYPED_PLUGIN(function_runtime, "function_runtime", "1.0.0")
