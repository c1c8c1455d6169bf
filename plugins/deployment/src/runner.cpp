#include "runner.hpp"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <set>

#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include "grove/control.pb.h"
#include "grove/function_runtime/client.hpp"
#include "grove/ml_inference/client.hpp"
#include "grove/kernel/config.hpp"
#include "grove/kernel/control_client.hpp"
#include "grove/kernel/group.hpp"
#include "grove/kernel/group_client.hpp"
#include "group_changes.hpp"
#include "lifecycle.hpp"
#include "public_components.hpp"

extern char** environ;

namespace grove::deployment {

using nlohmann::json;

namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

// The Lifecycle of the first manifest for this core's platform (or the recipe's own).
json lifecycle_of(const json& recipe) {
  static const auto platform = core_platform();
  return grove::deployment::lifecycle_of(recipe, platform);
}

// Step `name` of `p`'s life cycle, read strictly (lifecycle.hpp): a Timeout,
// RequiresPrivilege or Skipif with a recipe variable is rendered with `rc()` first.
step_def step_of(const component_plan& p, std::string_view name,
                 const std::function<render_context()>& rc) {
  return grove::deployment::step_of(lifecycle_of(p.recipe), name, [&](const std::string& text) {
    return render(text, rc(), p.name);
  });
}

// Greengrass' `skipif onpath <program>` / `skipif exists <file>`: true when it holds.
bool skip(const std::string& rule) {
  auto r = parse_skipif(rule);
  if (!r)
    return false; // step_of refused it
  const auto& arg = r->arg;
  if (r->verb == "exists")
    return std::filesystem::exists(arg);
  if (r->verb == "onpath") {
    const char* path = std::getenv("PATH");
    std::string p = path ? path : "/usr/bin:/bin";
    size_t start = 0;
    while (start <= p.size()) {
      auto colon = p.find(':', start);
      auto dir = p.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      if (!dir.empty() && ::access((std::filesystem::path{dir} / arg).c_str(), X_OK) == 0)
        return true;
      if (colon == std::string::npos)
        break;
      start = colon + 1;
    }
  }
  return false;
}

// A Lambda component: its recipe is lambdaFunction's conversion (lambda.cpp), its
// configuration function_runtime's definition of the function.
bool is_lambda(const json& recipe) {
  const json* t = member(recipe, "ComponentType");
  return t && t->is_string() && *t == "aws.greengrass.lambda";
}

// A model component: its DefaultConfiguration has ml_inference's resource key (the
// model's settings), and its artifact is the model (README.md, "Model components under
// ml_inference").
bool is_model(const json& recipe) {
  const json* cc = member(recipe, "ComponentConfiguration");
  const json* dc = cc ? member(*cc, "DefaultConfiguration") : nullptr;
  if (dc == nullptr || !dc->is_object())
    return false;
  auto it = dc->find(std::string{ml_inference::model_resource_key});
  return it != dc->end() && it->is_object();
}

// AWS's public components (public_components.hpp): the plugin whose configuration one
// is (the MQTT bridge: message_manager's `bridge`; shadow manager: shadow's), or "".
std::string public_plugin(const std::string& name) {
  const auto* p = find_public(name);
  return p && p->role == public_role::plugin_config ? std::string{p->plugin} : std::string{};
}

// A public component accepted with nothing to run: why, or nullptr.
const std::string_view* public_no_op(const std::string& name) {
  const auto* p = find_public(name);
  return p && p->role == public_role::no_op ? &p->reason : nullptr;
}

// Run through the kernel (plugins, functions, models, public components), not as
// processes of this runner.
bool through_kernel(const std::string& name, const json& recipe) {
  return !runner::plugin_of(name).empty() || is_lambda(recipe) || is_model(recipe)
         || find_public(name) != nullptr;
}

bool model_file(const std::string& name) {
  for (std::string_view ext : {".onnx", ".tar.gz", ".tgz", ".zip", ".tar"})
    if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0)
      return true;
  return false;
}

// The group resource of model component `p`: its configuration's settings, `path` the
// model artifact in {artifacts:path} (the one .onnx or package, or the file the
// configuration's `path` names there), `sha256` the stored artifact's (its name in the
// content-addressed store), `version` the component's unless the configuration sets one.
caf::expected<std::string> model_resource(const component_plan& p) {
  namespace fs = std::filesystem;
  auto key = std::string{ml_inference::model_resource_key};
  json cfg = json::object();
  if (auto it = p.configuration.find(key); it != p.configuration.end() && it->is_object())
    cfg = *it;
  fs::path dir{p.artifacts_path};
  fs::path file;
  if (auto it = cfg.find("path"); it != cfg.end() && it->is_string()) {
    fs::path given{it->get<std::string>()};
    // Only one of the component's own artifacts: relative, and not out of the directory.
    if (given.empty() || given.is_absolute()
        || std::any_of(given.begin(), given.end(), [](const fs::path& part) { return part == ".."; }))
      return grove::make_error(grove::errc::invalid_config,
                               key + ".path: '" + given.string()
                                 + "' must name a file of the component's artifacts, "
                                   "relative to {artifacts:path}");
    file = dir / given;
  } else {
    std::vector<fs::path> found;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator{dir, ec})
      if (model_file(e.path().filename().string()))
        found.push_back(e.path());
    std::sort(found.begin(), found.end());
    if (found.size() != 1)
      return grove::make_error(grove::errc::invalid_config,
                               "a model component needs one artifact that is the model (.onnx, "
                               ".tar.gz, .tgz, .zip), or " + key + ".path naming it; found "
                                 + std::to_string(found.size()));
    file = found.front();
  }
  std::error_code ec;
  auto target = fs::read_symlink(file, ec);
  auto hex = ec ? std::string{} : target.filename().string();
  if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
    return grove::make_error(grove::errc::invalid_config,
                             file.string() + " is not one of the component's stored artifacts");
  cfg["path"] = file.lexically_normal().string();
  cfg["sha256"] = hex;
  if (!cfg.contains("version"))
    cfg["version"] = p.version;
  return json{{key, cfg}}.dump(); // JSON is YAML
}

// A path in the one spelling library paths are compared in.
std::string same_path(const std::filesystem::path& p) {
  return p.lexically_normal().string();
}

// Every process whose environment has `marker` (GROVE_COMPONENTS_ROOT=<root>: every child
// of a runner, see spawn), held by a pidfd, with its GROVE_COMPONENT_NAME; groved itself is
// left out.
void each_component_process(const std::string& marker,
                            const std::function<void(held_process, const std::string&)>& f) {
  std::error_code ec;
  for (const auto& p : std::filesystem::directory_iterator{"/proc", ec}) {
    auto pid_text = p.path().filename().string();
    if (pid_text.find_first_not_of("0123456789") != std::string::npos)
      continue;
    auto pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid == ::getpid())
      continue;
    // Opened before the environment is read: if the pid is another process's by then,
    // the pidfd holds the one that ended and reaches nobody.
    auto held = held_process::open(pid);
    if (held.fd < 0)
      continue;
    std::ifstream in{p.path() / "environ", std::ios::binary};
    std::string var, component;
    bool marked = false;
    while (std::getline(in, var, '\0')) {
      marked = marked || var == marker;
      if (var.starts_with("GROVE_COMPONENT_NAME="))
        component = var.substr(var.find('=') + 1);
    }
    if (marked)
      f(std::move(held), component);
  }
}

// What install-once compares (component::installed_version): the version, then a SHA-256
// of the rendered install Script and Setenv (the Lifecycle's setenv too), runWith.posixUser
// and the artifacts' stored files ({artifacts:path}'s links), so that a deployment of the
// same version changing any of them installs again.
std::string install_key(const component_plan& p, const step_def& install,
                        const render_context& rc) {
  json what = json::array();
  what.push_back(render(install.script, rc, p.name));
  auto rendered = [&](const json& vars) {
    json out = json::object();
    if (vars.is_object())
      for (auto it = vars.begin(); it != vars.end(); ++it)
        out[it.key()] = render(it->is_string() ? it->get<std::string>() : it->dump(), rc, p.name);
    return out;
  };
  const json* global = member(lifecycle_of(p.recipe), "setenv");
  what.push_back(rendered(global ? *global : json::object()));
  what.push_back(rendered(install.setenv));
  what.push_back(p.posix_user);
  json arts = json::object();
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator{p.artifacts_path, ec})
    arts[e.path().filename().string()] = std::filesystem::read_symlink(e.path(), ec).string();
  what.push_back(arts);
  auto text = what.dump();
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_Digest(text.data(), text.size(), md, &len, EVP_sha256(), nullptr);
  std::string out = p.version + " ";
  static constexpr char digits[] = "0123456789abcdef";
  for (unsigned i = 0; i < len; ++i) {
    out += digits[md[i] >> 4];
    out += digits[md[i] & 15];
  }
  return out;
}

// Signals process group `pgid` while one of `procs` lives in it (an empty group's id may
// have been given to another process since): whether it did.
bool signal_group(pid_t pgid, const std::vector<held_process>& procs, int sig) {
  if (pgid <= 0
      || std::none_of(procs.begin(), procs.end(), [&](const auto& p) { return p.group() == pgid; }))
    return false;
  return ::kill(-pgid, sig) == 0;
}

// Signals the process group `pgid` a run of `proc` leads: kill(2) while `proc` is ours
// and not reaped (no other process can have taken the id then), else signal_group over
// the component's held processes (`held`, called only then: it reads /proc). The first
// case must not depend on `held`: a process that rewrote its environment (exec env -i,
// setproctitle) is not among them.
template <class Held>
void signal_run(const grove::process& proc, pid_t pgid, Held&& held, int sig) {
  if (proc.running() && proc.pid() == pgid)
    ::kill(-pgid, sig);
  else
    signal_group(pgid, held(), sig);
}

// A child's output to the component's log `log` (kept open for the child's life, rotated
// at `limits`: the SDK's grove::rotating_log), then to `user_output`. A line the log could
// not take is lost (a full disk must not stop the component); the first such error of a
// child is logged.
std::function<void(grove::output_stream, const std::string&)>
log_writer(std::filesystem::path log, grove::rotating_log_limits limits, spdlog::logger& out,
           std::function<void(grove::output_stream, const std::string&)> user_output) {
  auto file = std::make_shared<grove::rotating_log>(std::move(log), limits);
  return [file, failed = std::make_shared<bool>(false), &out,
          user_output = std::move(user_output)](grove::output_stream s, const std::string& line) {
    auto err = file->write(s == grove::output_stream::err ? "[stderr] " + line : line);
    if (err && !std::exchange(*failed, true))
      out.warn("deployment: component log: {}", grove::describe(err));
    if (user_output)
      user_output(s, line);
  };
}

} // namespace

caf::expected<std::pair<uid_t, gid_t>> posix_ids(const std::string& posix_user) {
  if (posix_user.empty())
    return std::pair{::geteuid(), ::getegid()};
  auto colon = posix_user.find(':');
  auto user = posix_user.substr(0, colon);
  auto group = colon == std::string::npos ? std::string{} : posix_user.substr(colon + 1);
  auto* pw = ::getpwnam(user.c_str());
  if (!pw)
    return grove::make_error(grove::errc::invalid_config,
                             "runWith.posixUser: no user '" + user + "'");
  std::pair<uid_t, gid_t> out{pw->pw_uid, pw->pw_gid};
  if (!group.empty()) {
    auto* gr = ::getgrnam(group.c_str());
    if (!gr)
      return grove::make_error(grove::errc::invalid_config,
                               "runWith.posixUser: no group '" + group + "'");
    out.second = gr->gr_gid;
  }
  return out;
}

namespace {

// Tests only: GROVE_DEPLOYMENT_CRASH_AT=<step>[:<component>] kills groved (SIGKILL) at
// that step of a deployment, as `kill -9` there would; `:<component>` only at that
// component's (so that the start's re-apply of the set before does not hit it). Steps:
// group_journaled (a change of the group journaled, not set), group_set (set, its answer
// not journaled), stopped (the components the deployment removes or changes all stopped,
// none of their new versions started), startup (a startup exited 0, its service left
// running, not yet RUNNING), plugin (the kernel did a load, configure or hot reload, the
// runner has not recorded it; load, configure, reload: that one only), bootstrap (a
// bootstrap exited 0, not journaled), rollback (a rollback about to start a component of
// the set before again, that component's failed version stopped).
bool crash_armed(const char* step, const std::string& component = {}) {
  auto* at = std::getenv("GROVE_DEPLOYMENT_CRASH_AT");
  if (!at)
    return false;
  std::string_view want{at};
  return want == step || (!component.empty() && want == std::string{step} + ":" + component);
}

void crash_point(const char* step, const std::string& component = {}) {
  if (!crash_armed(step, component))
    return;
  // Written at once (the log is written behind, its last lines die with groved).
  std::fprintf(stderr, "deployment: GROVE_DEPLOYMENT_CRASH_AT: killing groved at %s%s%s\n",
               step, component.empty() ? "" : " of ", component.c_str());
  ::kill(::getpid(), SIGKILL);
}

// Tests only: GROVE_DEPLOYMENT_FAULT_AT=<step>[,<step>...]. group_unanswered makes a
// journaled deployment's change of the group look unanswered (a timeout, though the
// kernel set it) and the read of the group after it fail, as a kernel that stopped
// answering would; rollback_unset makes a rollback's edits of the group time out unset
// (the kernel answering nothing after that), so the change it could not check stays;
// start_reads_unanswered makes each of the start's reads to decide a change left
// undecided wait its whole timeout and time out, as a kernel that does not answer.
bool fault_at(std::string_view step) {
  auto* at = std::getenv("GROVE_DEPLOYMENT_FAULT_AT");
  if (!at)
    return false;
  for (std::string_view rest{at}; !rest.empty();) {
    auto comma = rest.find(',');
    if (rest.substr(0, comma) == step)
      return true;
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
  }
  return false;
}

// How many times a resume reads the group to check a change journaled before kill -9
// before it fails the deployment rather than guess (each read waits settings_.start_read_timeout;
// decide_left's reads the timeout they are given).
constexpr int resume_reads = 3;

} // namespace

struct runner::component {
  component_plan plan;
  std::string state = "NEW";
  std::string details;
  int64_t changed_ms = 0;
  int errors = 0;
  uint64_t generation = 0; // a stop or start makes older callbacks stale
  grove::process proc;
  std::string installed_version;
  std::string bootstrapped_version; // bootstrap's install_key, as installed_version
  std::string main; // "run", "startup" or ""
  pid_t service_pgid = 0; // the process group a startup that exited 0 left running
  uint64_t runs = 0; // run_main's starts (a restart keeps the generation)
  bool timed_out = false; // its run outlived the run step's Timeout
  // Greengrass IPC's UpdateState (report_state): what a startup still running does when it
  // reports RUNNING, and why a run that reported ERRORED was ended (main_exited).
  std::function<void()> reported_running;
  std::string reported_error;
  std::deque<std::chrono::steady_clock::time_point> error_times; // within settings_.error_window
  bool stopped = false; // by stop_component: to be started again (or removed)
  bool restored = false; // read back from the journal: nothing of it runs yet
  bool paused = false; // PauseComponent froze its processes (control)
  bool foreign = false; // its function or model is another change's (installed_record)
  uint64_t oom_seen = 0; // its cgroup's OOM kills when its run or startup began
  std::filesystem::path log;
};

struct runner::job {
  std::vector<component_plan> plan;
  std::vector<component_plan> previous;
  bool rollback = false;
  bool is_rollback = false;
  bool background = false; // a restart outside a deployment: nothing waits, nothing fails
  std::chrono::seconds timeout{60};
  std::function<void(apply_outcome)> done;
  std::function<void(apply_outcome)> late;
  apply_journal journal;
  // The runs this job started (name → generation, start), watched after it (see apply).
  std::map<std::string, std::pair<uint64_t, std::chrono::steady_clock::time_point>> runs;
  size_t index = 0;
  uint64_t wait = 0; // the step being waited for; a late callback of another is dropped
  // Plugin components: what the kernel runs (read once per job, kept up to date by the
  // job's own changes), its plugin directory, the plugins to unload first, and the
  // kernel's answer to the last change.
  std::map<std::string, control::PluginInfo> kernel;
  std::string plugin_dir;
  std::vector<std::string> unloads;
  control::PluginInfo last;
  // Lambda and model components: the ones to take out of the group first; this job's
  // changes of the group (what a rollback undoes); for a rollback, the changes to undo
  // first and the functions and resources the undo left at another change's version.
  std::vector<std::string> lambda_gone;
  group_changes group_changed;
  std::optional<group_changes> group_undo;
  std::set<std::string> group_kept;
  // Why the undo failed (conflicts, timeout, refusal): the rollback's outcome says so.
  std::string group_undo_error;
  // restart(): journaled components left as they are (not started, states kept).
  std::set<std::string> hold;
  // Public components configuring a plugin that left the set: that plugin's profile
  // configuration back.
  std::vector<std::string> config_gone;
  std::string tag;         // apply()'s, for interrupt()
  std::string interrupted; // why interrupt() stopped it ("" : not)
  // The component whose install, bootstrap or startup the job waits for ("" : none), which
  // interrupt() ends.
  std::string proc_wait;
  std::string proc_wait_step; // which step of it
  // The components whose bootstrap this job ran (BootstrapOnRollback: only theirs run
  // again in its rollback), and, for a rollback, the failed job's.
  std::set<std::string> booted;
  std::string notes; // apply_outcome::notes
  bool crash_after_stops = false; // tests only: crash_point("stopped") once stops end
};

runner::runner(grove::context& ctx, std::filesystem::path root, std::filesystem::path log_dir,
               std::string thing_name, std::set<pid_t> spare,
               std::set<std::string> spare_services)
  : ctx_(ctx), root_(std::move(root)), log_dir_(std::move(log_dir)),
    thing_name_(std::move(thing_name)) {
  std::error_code ec;
  std::filesystem::create_directories(root_ / "work", ec);
  std::filesystem::create_directories(log_dir_, ec);
  // What an earlier groved (or instance) left frozen is thawed first: a frozen process
  // ignores even SIGKILL.
  freezer();
  // The parent-death signal reaches a script's shell, not what the shell started: after
  // a kill -9 of groved those live on. Every child of this runner carries
  // GROVE_COMPONENTS_ROOT=<root> in its environment; what is left of the last run goes.
  each_component_process("GROVE_COMPONENTS_ROOT=" + root_.string(),
                         [&](held_process p, const std::string& component) {
    // A hot reload handed these over (each child leads a process group of its own), and
    // the services of startups it handed over, wherever they went (setsid).
    if (auto pgid = p.group(); (pgid > 0 && spare.count(pgid))
                               || spare_services.count(component))
      return;
    if (p.signal(SIGKILL))
      ctx_.log().warn("deployment: killed process {}, left by the last run of a component",
                      p.pid);
  });
  // A plugin component's state is the kernel's, a Lambda component's function_runtime's: a
  // plugin that breaks or is unloaded by an operator after its deployment, a function taken
  // out of the group, shows so in ListInstalledComponents.
  ctx_.every(std::chrono::seconds{2}, [this, alive = alive_] {
    if (*alive)
      refresh_plugins();
  });
}

std::string runner::plugin_of(const std::string& component) {
  static constexpr std::string_view prefix = "grove.";
  if (component.size() <= prefix.size() || component.compare(0, prefix.size(), prefix) != 0)
    return {};
  return component.substr(prefix.size());
}

std::string runner::plugin_library(const component_plan& p, const std::string& plugin_dir) {
  auto plugin = plugin_of(p.name);
  auto file = "lib" + plugin + ".so";
  // The manifest for this core's platform, as for the life cycle.
  static const auto platform = core_platform();
  if (const json* m = manifest_for(p.recipe, platform))
    if (const json* arts = member(*m, "Artifacts"); arts && arts->is_array())
      for (const auto& a : *arts)
        if (const json* uri = member(a, "Uri"); uri && uri->is_string()) {
          auto u = uri->get<std::string>();
          if (u.size() > file.size() && u.compare(u.size() - file.size(), file.size(), file) == 0
              && u[u.size() - file.size() - 1] == '/')
            return same_path(std::filesystem::path{p.artifacts_path} / file);
        }
  return same_path(std::filesystem::path{plugin_dir} / file);
}

runner::~runner() {
  *alive_ = false;
  for (auto& [name, c] : components_)
    unpause(*c, "groved or the plugin stops");
  // What startups left running goes with groved (the next start kills any rest).
  for (const auto& [name, c] : components_)
    if (c->service_pgid > 0)
      for (const auto& p : component_pids(name))
        if (p.group() == c->service_pgid)
          p.signal(SIGTERM);
  std::lock_guard guard{mtx_};
  components_.clear(); // each handle stops its child
}

caf::expected<component_cgroups*> runner::cgroups() {
  if (cgroups_)
    return cgroups_.get();
  if (cgroups_error_.empty()) {
    auto cg = component_cgroups::open();
    if (cg) {
      cgroups_ = std::move(*cg);
      ctx_.log().info("deployment: components' systemResourceLimits: {}",
                      cgroups_->describe());
      return cgroups_.get();
    }
    cgroups_error_ = grove::describe(cg.error());
    ctx_.log().error("deployment: components' systemResourceLimits cannot be applied: {}",
                     cgroups_error_);
  }
  return grove::make_error(grove::errc::unsupported, cgroups_error_);
}

std::string runner::explain(const component& c, const grove::process_exit& e,
                            uint64_t oom_before) {
  // The kernel's OOM killer acted in the component's own cgroup since the step began.
  if (c.plan.limits.memory_kb > 0 && cgroups_
      && cgroups_->oom_kills(c.plan.name) > oom_before)
    return "out of memory (systemResourceLimits.memory " + std::to_string(c.plan.limits.memory_kb)
           + " KB): " + e.describe();
  return e.describe();
}

json runner::installed() const {
  std::lock_guard guard{mtx_};
  json out = json::array();
  for (const auto& [name, c] : components_) {
    json e = {{"componentName", name},
              {"componentVersion", c->plan.version},
              {"lifecycleState", c->state},
              {"isRoot", c->plan.root},
              {"lastStatusChangeTimestamp", static_cast<double>(c->changed_ms) / 1000.0},
              {"lastReportedTimestamp", static_cast<double>(now_ms()) / 1000.0},
              {"lastInstallationSource", "LOCAL_DEPLOYMENT"}};
    if (!c->details.empty())
      e["lifecycleStateDetails"] = c->details; // whole: the API cuts it (reason.hpp)
    out.push_back(std::move(e));
  }
  return out;
}

void runner::set_state(component& c, const std::string& state, const std::string& details) {
  if (state != "RUNNING")
    unpause(c, state.c_str());
  {
    std::lock_guard guard{mtx_};
    c.state = state;
    c.details = details;
    c.changed_ms = now_ms();
  }
  ctx_.log().info("deployment: {} {}: {}{}{}", c.plan.name, c.plan.version, state,
                  details.empty() ? "" : ": ", details);
  changed();
}

component_freezer& runner::freezer() {
  if (!freezer_) {
    freezer_ = std::make_unique<component_freezer>();
    ctx_.log().info("deployment: PauseComponent pauses with {}", freezer_->describe());
  }
  return *freezer_;
}

void runner::drop_freeze_leaves(const std::string& name, int tries) {
  if (!freezer_ || freezer_->remove(name) || tries <= 0)
    return;
  ctx_.after(std::chrono::milliseconds{100}, [this, name, tries, alive = alive_] {
    if (*alive)
      drop_freeze_leaves(name, tries - 1);
  });
}

void runner::unpause(component& c, const char* why) {
  if (!std::exchange(c.paused, false))
    return;
  if (auto e = freezer().thaw(c.plan.name, component_pids(c.plan.name)))
    ctx_.log().error("deployment: {}: cannot resume it ({}): {}", c.plan.name, why,
                     grove::describe(e));
  else
    ctx_.log().info("deployment: {} {}: resumed ({})", c.plan.name, c.plan.version, why);
}

std::optional<runner::control_refusal> runner::control(const std::string& name, bool pause) {
  auto it = components_.find(name);
  if (it == components_.end())
    return control_refusal{"ResourceNotFoundError", "Component " + name + " not found"};
  auto& c = *it->second;
  if (through_kernel(name, c.plan.recipe))
    return control_refusal{"InvalidArgumentsError", std::string{"Only generic components can be "}
                                                      + (pause ? "paused." : "resumed.")};
  if (!pause) {
    if (!c.paused)
      return control_refusal{"InvalidArgumentsError", "Component " + name + " is not paused"};
    c.paused = false;
    if (auto e = freezer().thaw(name, component_pids(name))) {
      c.paused = true;
      return control_refusal{"ServiceError", "Failed to resume component " + name + " due to : "
                                               + grove::describe(e)};
    }
    ctx_.log().info("deployment: {} {}: resumed (ResumeComponent)", name, c.plan.version);
    return std::nullopt;
  }
  if (c.state != "RUNNING")
    return control_refusal{"InvalidArgumentsError", "Component " + name + " is not running"};
  if (c.paused)
    return std::nullopt; // as Greengrass: frozen already, nothing to do
  auto procs = [this, &name] { return component_pids(name); };
  if (procs().empty())
    return control_refusal{"InvalidArgumentsError", "Component " + name + " is not running"};
  // A component whose limits hold it in a v2 cgroup of its own is frozen there.
  auto own = c.plan.limits.any() && cgroups_ ? cgroups_->v2_group(name) : std::filesystem::path{};
  if (auto e = freezer().freeze(name, procs, own)) {
    freezer().thaw(name, procs()); // what was frozen before the failure
    return control_refusal{"ServiceError", "Failed to pause component " + name + " due to : "
                                             + grove::describe(e)};
  }
  c.paused = true;
  ctx_.log().info("deployment: {} {}: paused (PauseComponent; still RUNNING)", name,
                  c.plan.version);
  return std::nullopt;
}

void runner::changed() {
  if (on_change_)
    on_change_();
}

void runner::restore(std::vector<installed_record> rows) {
  std::lock_guard guard{mtx_};
  for (auto& r : rows) {
    auto c = std::make_unique<component>();
    c->plan = std::move(r.plan);
    c->state = std::move(r.state);
    c->details = std::move(r.details);
    c->changed_ms = r.changed_ms;
    c->foreign = r.foreign;
    c->installed_version = std::move(r.installed_version);
    c->bootstrapped_version = std::move(r.bootstrapped_version);
    c->restored = true;
    c->log = log_dir_ / (c->plan.name + ".log");
    order_.push_back(c->plan.name);
    components_[c->plan.name] = std::move(c);
  }
}

void runner::restart(std::function<void(apply_outcome)> done) {
  // The journal keeps components by name: dependencies first again (a cycle, which the
  // resolver refuses, would keep the rest as listed).
  std::vector<std::string> names, sorted;
  for (const auto& [name, c] : components_)
    names.push_back(name);
  while (!names.empty()) {
    bool moved = false;
    for (auto it = names.begin(); it != names.end();) {
      const json* deps = member(components_.at(*it)->plan.recipe, "ComponentDependencies");
      bool ready = true;
      if (deps && deps->is_object())
        for (auto d = deps->begin(); d != deps->end(); ++d)
          if (d.key() != *it && std::find(names.begin(), names.end(), d.key()) != names.end())
            ready = false;
      if (ready) {
        sorted.push_back(*it);
        it = names.erase(it);
        moved = true;
      } else {
        ++it;
      }
    }
    if (!moved) {
      sorted.insert(sorted.end(), names.begin(), names.end());
      names.clear();
    }
  }
  order_ = sorted;
  auto j = std::make_shared<job>();
  for (const auto& name : sorted) {
    const auto& c = *components_.at(name);
    j->plan.push_back(c.plan);
    // A foreign one's function or model is another change's: setting it would replace that.
    if (c.state == "BROKEN" || c.state == "ERRORED" || c.foreign
        || ((c.state == "FINISHED" || c.state == "STOPPING") && c.details.starts_with("stopped")))
      j->hold.insert(name);
  }
  for (auto held = j->hold; const auto& name : held)
    for (const auto& d : hard_dependants(name))
      j->hold.insert(d);
  ctx_.log().info("deployment: starting the {} journaled components again ({} left as they "
                  "were: BROKEN, ERRORED or stopped)",
                  j->plan.size() - j->hold.size(), j->hold.size());
  j->rollback = false;
  j->done = std::move(done);
  if (busy_) {
    pending_.push_back(j);
    return;
  }
  busy_ = true;
  begin(j);
}

std::set<std::string> runner::lambda_components() const {
  std::set<std::string> out;
  for (const auto& [name, c] : components_)
    if (is_lambda(c->plan.recipe))
      out.insert(name);
  return out;
}

std::set<std::string> runner::model_components() const {
  std::set<std::string> out;
  for (const auto& [name, c] : components_)
    if (is_model(c->plan.recipe))
      out.insert(name);
  return out;
}

std::vector<handed_component> runner::hand_over() {
  std::vector<handed_component> out;
  for (auto& [name, c] : components_) {
    // The next instance starts with nothing paused (its runner thaws what is left): a
    // component that stayed frozen with nobody knowing would never run again.
    unpause(*c, "hot reload of the deployment plugin");
    handed_component h;
    h.record = installed_record{c->plan, c->state, c->details, c->changed_ms, c->foreign,
                                c->installed_version, c->bootstrapped_version};
    h.main = c->main;
    h.errors = c->errors;
    h.installed_version = c->installed_version;
    // Only a generic component's run or startup that runs: an install or a shutdown in
    // progress ends with this instance, and the next one's apply runs the steps again.
    if (c->proc && c->proc.running() && c->state == "RUNNING" && !c->main.empty()
        && plugin_of(name).empty() && !is_lambda(c->plan.recipe)) {
      ++c->generation; // this instance's callbacks for it are stale from now on
      c->proc.unbind();
      ctx_.keep_process("component:" + name, std::move(c->proc));
      c->proc = grove::process{};
      h.kept = true;
      ctx_.log().info("deployment: {} {}: its {} handed to the next instance", name,
                      c->plan.version, c->main);
    }
    // A startup's service: its process group is spared by the next instance, which stops
    // it as its own.
    if (c->service_pgid > 0 && c->state == "RUNNING"
        && signal_group(c->service_pgid, component_pids(name), 0)) {
      ++c->generation;
      h.service_pgid = std::exchange(c->service_pgid, 0);
    }
    out.push_back(std::move(h));
  }
  return out;
}

void runner::adopt(const std::vector<handed_component>& handed,
                   std::map<std::string, grove::process> procs) {
  for (const auto& h : handed) {
    auto it = components_.find(h.record.plan.name);
    if (it == components_.end())
      continue;
    auto& c = *it->second;
    const auto& name = c.plan.name;
    c.installed_version = h.installed_version;
    c.bootstrapped_version = h.record.bootstrapped_version;
    c.errors = h.errors;
    c.error_times.assign(static_cast<size_t>(std::max(h.errors, 0)),
                         std::chrono::steady_clock::now()); // when is not handed: now
    if (h.service_pgid > 0 && signal_group(h.service_pgid, component_pids(name), 0)) {
      ++c.generation; // started: the deployment applied again finds it unchanged
      c.main = "startup";
      c.service_pgid = h.service_pgid;
      c.restored = false;
      c.stopped = false;
      c.log = log_dir_ / (name + ".log");
      set_state(c, "RUNNING", h.record.state == "RUNNING" ? h.record.details : "");
      continue;
    }
    auto p = procs.find(name);
    if (p == procs.end())
      continue;
    // An exit after this check and before bind is posted to the new owner by bind
    // (grove::process): handled by main_exited like any exit.
    if (!p->second.running()) {
      // Ended while nobody owned it: restored, so the apply that follows starts it.
      ctx_.log().warn("deployment: {} {}: its {} ended during the reload ({}); started "
                      "again by the deployment applied now",
                      name, c.plan.version, h.main, p->second.status().last_exit);
      continue;
    }
    c.main = h.main;
    c.restored = false;
    c.stopped = false;
    auto gen = ++c.generation;
    c.log = log_dir_ / (name + ".log");
    c.oom_seen = 0;
    if (c.plan.limits.memory_kb > 0)
      if (auto cg = cgroups())
        c.oom_seen = (*cg)->oom_kills(name);
    // No job waits for it: its exits follow the restart rules, as a background start's.
    auto j = std::make_shared<job>();
    j->background = true;
    bool is_startup = c.main == "startup";
    grove::process_callbacks cb;
    cb.on_exit = [this, j, name, gen, is_startup, alive = alive_](const grove::process_exit& e) {
      if (!*alive || e.requested)
        return;
      main_exited(j, name, gen, ~uint64_t{0}, is_startup, e);
    };
    cb.on_output = log_writer(c.log, settings_.log_limits, ctx_.log(), {});
    c.proc = std::move(p->second);
    c.proc.bind(ctx_, std::move(cb));
    ctx_.log().info("deployment: {} {}: its {} (pid {}) taken over from the last instance",
                    name, c.plan.version, c.main, c.proc.pid());
    set_state(c, "RUNNING", h.record.state == "RUNNING" ? h.record.details : "");
  }
}

void runner::report_state(const std::string& name, const std::string& state) {
  auto it = components_.find(name);
  if (it == components_.end())
    return;
  auto& c = *it->second;
  if (state == "RUNNING") {
    // A startup that runs on and says it is up: RUNNING now (its exit is then handled as
    // a startup's). A run is RUNNING from its start already.
    if (c.state == "STARTING" && c.reported_running) {
      auto f = std::move(c.reported_running);
      c.reported_running = nullptr;
      f();
    }
    return;
  }
  if (state != "ERRORED" || !c.proc.running() || (c.state != "RUNNING" && c.state != "STARTING"))
    return;
  // As Greengrass: an error of the component (recover, restart, BROKEN after three). Its
  // process group ends as a run past its Timeout does; main_exited gives the reason.
  c.reported_error = "reported ERRORED (UpdateState)";
  auto pid = c.proc.pid();
  auto run_no = c.runs;
  auto held = [this, name] { return component_pids(name); };
  signal_run(c.proc, pid, held, SIGTERM);
  ctx_.after(std::chrono::milliseconds{3000}, [pid, this, name, held, run_no, alive = alive_] {
    if (!*alive)
      return;
    auto it = components_.find(name);
    if (it != components_.end() && it->second->runs == run_no && it->second->proc.pid() == pid)
      signal_run(it->second->proc, pid, held, SIGKILL);
  });
}

std::vector<installed_record> runner::snapshot() const {
  std::vector<installed_record> out;
  std::lock_guard guard{mtx_};
  for (const auto& [name, c] : components_)
    out.push_back(installed_record{c->plan, c->state, c->details, c->changed_ms, c->foreign,
                                   c->installed_version, c->bootstrapped_version});
  return out;
}

std::vector<std::string> runner::hard_dependants(const std::string& name) const {
  // Generic components only (plugins and functions do not restart through a HARD
  // dependency); order_ lists dependencies first, so one pass reaches every level.
  std::vector<std::string> reached{name}, out;
  for (const auto& n : order_) {
    auto it = components_.find(n);
    if (it == components_.end() || n == name || through_kernel(n, it->second->plan.recipe))
      continue;
    const json* deps = member(it->second->plan.recipe, "ComponentDependencies");
    if (!deps || !deps->is_object())
      continue;
    for (auto d = deps->begin(); d != deps->end(); ++d) {
      const json* type = member(*d, "DependencyType");
      bool hard = !type || !type->is_string() || *type != "SOFT";
      if (hard && std::find(reached.begin(), reached.end(), d.key()) != reached.end()) {
        reached.push_back(n);
        out.push_back(n);
        break;
      }
    }
  }
  return out;
}

void runner::stop_dependants(const std::string& name, const std::string& why) {
  for (const auto& d : hard_dependants(name)) {
    auto it = components_.find(d);
    if (it == components_.end() || it->second->stopped)
      continue;
    ctx_.log().info("deployment: {} stops: its HARD dependency {} {}", d, name, why);
    auto details = "stopped: its HARD dependency " + name + " " + why;
    stop_component(d, details);
    if (it->second->state != "STOPPING" && it->second->details != details)
      set_state(*it->second, "FINISHED", details); // a plugin's or function's state
  }
}

render_context runner::render_ctx() const {
  render_context r;
  r.thing_name = thing_name_;
  for (const auto& [name, c] : components_)
    r.components[name] = component_view{c->plan.artifacts_path, c->plan.decompressed_path,
                                        (root_ / "work" / name).string(),
                                        c->plan.configuration};
  return r;
}

caf::expected<grove::process> runner::spawn(component& c, const std::string& script,
                                            const json& step_env, bool privileged,
                                            grove::process_callbacks cb) {
  const auto& name = c.plan.name;
  // The operator's consent (allow_privileged_components): without it a privileged step
  // does not run at all, rather than run as another user than it asked.
  if (privileged && !settings_.allow_privileged)
    return grove::make_error(grove::errc::not_authorized,
                             "RequiresPrivilege refused: this core does not run privileged "
                             "steps (the deployment plugin's allow_privileged_components is "
                             "false)");
  auto rc = render_ctx();
  grove::process_options o;
  o.argv = {"/bin/sh", "-c", render(script, rc, name)};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e)
    env.emplace_back(*e);
  auto add_env = [&](const json& vars) {
    for (auto it = vars.begin(); it != vars.end(); ++it) {
      auto value = it->is_string() ? it->get<std::string>() : it->dump();
      env.push_back(it.key() + "=" + render(value, rc, name));
    }
  };
  env.push_back("AWS_IOT_THING_NAME=" + thing_name_);
  env.push_back("GROVE_COMPONENTS_ROOT=" + root_.string()); // see the constructor
  env.push_back("GROVE_COMPONENT_NAME=" + name);
  env.push_back("GROVE_COMPONENT_VERSION=" + c.plan.version);
  if (extra_env_)
    for (auto& e : extra_env_(name))
      env.push_back(std::move(e));
  auto lifecycle = lifecycle_of(c.plan.recipe);
  if (const json* global = member(lifecycle, "setenv"); global && global->is_object())
    add_env(*global);
  add_env(step_env);
  o.env = std::move(env);
  auto work = root_ / "work" / name;
  std::error_code ec;
  std::filesystem::create_directories(work, ec);
  o.cwd = work;
  // runWith posixUser: only root can switch; a user that does not exist fails the step.
  // A step with RequiresPrivilege keeps groved's user (Greengrass: root).
  if (!c.plan.posix_user.empty() && ::geteuid() == 0 && !privileged) {
    auto ids = posix_ids(c.plan.posix_user);
    if (!ids)
      return std::move(ids.error());
    o.uid = ids->first;
    o.gid = ids->second;
    // The user's own and private: its parents are traversable (see the plugin's
    // prepare: {work:path} and {artifacts:path} are reachable), so it must not be 0777.
    std::filesystem::permissions(work, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
    (void) ::chown(work.c_str(), *o.uid, *o.gid);
  }
  // runWith.systemResourceLimits: the step joins the component's cgroup (limits written
  // first) before it runs anything, so what it starts is inside too.
  if (c.plan.limits.any()) {
    auto cg = cgroups();
    if (!cg)
      return grove::make_error(grove::errc::unsupported,
                               "runWith.systemResourceLimits cannot be applied: "
                                 + grove::describe(cg.error()));
    auto procs = (*cg)->prepare(name, c.plan.limits);
    if (!procs)
      return grove::make_error(grove::errc::system_error,
                               "runWith.systemResourceLimits cannot be applied: "
                                 + grove::describe(procs.error()));
    std::vector<std::string> files;
    for (const auto& f : *procs)
      files.push_back(f.string());
    // In the child between fork and exec: open, write and close only (async-signal-safe;
    // the strings were made before the fork).
    cb.pre_exec = [files = std::move(files)]() -> int {
      for (const auto& f : files) {
        int fd = ::open(f.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0)
          return errno;
        auto n = ::write(fd, "0", 1);
        int e = n == 1 ? 0 : n < 0 ? errno : EIO;
        ::close(fd);
        if (e != 0)
          return e;
      }
      return 0;
    };
  }
  o.capture_output = true;
  o.stdout_level = grove::output_level::debug;
  o.stderr_level = grove::output_level::debug;
  o.log_prefix = name + ": ";
  o.stop_grace = std::chrono::milliseconds{3000};
  cb.on_output = log_writer(c.log, settings_.log_limits, ctx_.log(), std::move(cb.on_output));
  return grove::process::start(ctx_, std::move(o), std::move(cb));
}

void runner::apply(std::vector<component_plan> plan, bool rollback, std::chrono::seconds timeout,
                   std::function<void(apply_outcome)> done,
                   std::function<void(apply_outcome)> late, apply_journal journal,
                   std::string tag) {
  auto j = std::make_shared<job>();
  j->tag = std::move(tag);
  j->journal = std::move(journal);
  j->plan = std::move(plan);
  j->rollback = rollback;
  j->timeout = timeout;
  j->done = std::move(done);
  j->late = std::move(late);
  if (busy_) {
    pending_.push_back(j);
    return;
  }
  busy_ = true;
  begin(j);
}

bool runner::interrupt(const std::string& tag, const std::string& why) {
  if (tag.empty())
    return false;
  auto waiting = std::find_if(pending_.begin(), pending_.end(),
                              [&](const auto& j) { return j->tag == tag; });
  if (waiting != pending_.end()) { // never began: nothing of it to stop
    auto j = *waiting;
    pending_.erase(waiting);
    ctx_.log().info("deployment: an apply waiting for its turn is dropped: {}", why);
    if (auto done = std::move(j->done))
      done(apply_outcome{false, why + ", before its turn came", false, false, true, {}});
    return true;
  }
  auto j = current_;
  if (!j || j->tag != tag || j->is_rollback || !j->interrupted.empty())
    return false;
  j->interrupted = why;
  auto it = j->proc_wait.empty() ? components_.end() : components_.find(j->proc_wait);
  if (it == components_.end()) {
    // A change through the kernel is in flight: the job stops at its next step().
    ctx_.log().info("deployment: the apply running is interrupted at its next step: {}", why);
    return true;
  }
  // An install, bootstrap or startup it waits for: ended now, the job with it.
  auto& c = *it->second;
  auto step_name = c.state == "STARTING" ? std::string{"startup"} : std::string{"install"};
  ++j->wait; // its callbacks are stale from here
  ++c.generation;
  c.proc.stop(SIGKILL, std::chrono::milliseconds{0});
  c.proc = grove::process{};
  c.stopped = true; // the next apply that has it starts it again
  set_state(c, "FINISHED", "interrupted: " + why);
  j->rollback = false;
  finish(j, false, why + ": interrupted while " + c.plan.name + " " + c.plan.version
                     + " ran its " + (j->proc_wait_step.empty() ? step_name : j->proc_wait_step));
  return true;
}

void runner::begin(std::shared_ptr<job> j) {
  // The deployment plugin is never a component of its own deployments: it cannot unload,
  // reload or reconfigure itself (the kernel refuses it), so such a set is refused whole,
  // before anything changes.
  for (const auto& p : j->plan)
    if (plugin_of(p.name) == ctx_.name()) {
      j->rollback = false;
      finish(j, false,
             p.name + ": a deployment cannot load, unload, reload or reconfigure the "
                      "deployment plugin itself (it would wait for its own stop); change it "
                      "with the image profile, grovectl or an OTA update");
      return;
    }
  // A public component (the bridge, shadow manager) is a configure over the profile of
  // its plugin, a grove.<plugin> component that plugin's whole configuration: each would
  // overwrite the other's (review #6).
  for (const auto& p : j->plan) {
    auto plugin = public_plugin(p.name);
    if (plugin.empty())
      continue;
    for (const auto& q : j->plan)
      if (plugin_of(q.name) == plugin) {
        j->rollback = false;
        finish(j, false,
               p.name + " and " + q.name + " in one deployment: " + p.name + " configures "
                 + plugin + " over the image profile, " + q.name
                 + " replaces its whole configuration, so one would undo the other; put "
                   "the settings in "
                 + q.name + "'s configuration instead");
        return;
      }
  }
  current_ = j;
  // A new set: the last one's runs are no longer its to fail, only to report (late);
  // watches whose runs are all past their timeouts go.
  auto now = std::chrono::steady_clock::now();
  std::erase_if(replaced_watches_, [&](const watch& w) {
    return std::none_of(w.runs.begin(), w.runs.end(),
                        [&](const auto& r) { return now < r.second.second + w.j->timeout; });
  });
  if (watch_)
    replaced_watches_.push_back(std::move(*watch_));
  watch_.reset();
  // The set before (what a rollback puts back), dependencies first.
  j->previous.clear();
  auto keep = [&](const component& c) {
    j->previous.push_back(c.plan);
    j->previous.back().foreign = c.foreign; // the rollback leaves such a function alone
  };
  for (const auto& name : order_)
    if (auto it = components_.find(name); it != components_.end())
      keep(*it->second);
  for (const auto& [name, c] : components_)
    if (std::find(order_.begin(), order_.end(), name) == order_.end())
      keep(*c);
  // A deployment that kill -9 cut short: what ran before it and what it changed in the
  // group, as journaled then (the components now are its partly applied set).
  bool resumed = j->journal.resumed.has_value();
  if (resumed) {
    j->previous = std::move(j->journal.resumed->first);
    j->group_changed = std::move(j->journal.resumed->second);
    j->journal.resumed.reset();
    ctx_.log().info("deployment: resuming with the journaled set before it ({} components) "
                    "and {} journaled change(s) of the group",
                    j->previous.size(), j->group_changed.size());
  }
  // Journaled before anything changes, so that a rollback after kill -9 has it.
  auto journal_first = [this, j, resumed] {
    if (!j->journal.write || j->is_rollback) {
      begin_changes(j);
      return;
    }
    j->journal.write(j->previous, j->group_changed,
                     [this, j, resumed, alive = alive_](caf::error err) {
                       if (!*alive)
                         return;
                       if (err && !resumed) { // nothing changed yet: nothing to roll back
                         j->rollback = false;
                         finish(j, false, "what its rollback would undo could not be "
                                          "journaled, nothing changed: " + grove::describe(err));
                         return;
                       }
                       if (err) { // the run cut short changed things: its rollback undoes them
                         finish(j, false, "what its rollback undoes could not be journaled: "
                                            + grove::describe(err));
                         return;
                       }
                       begin_changes(j);
                     });
  };
  if (!resumed || !j->group_changed.pending()) {
    journal_first();
    return;
  }
  // The run cut short journaled a change of the group and was killed before its answer
  // was journaled: whether the kernel applied it, the group in force says (the group file
  // survives the kill). Applied, it is recorded as the run's (its rollback undoes it); not
  // applied (the group lacks it), nothing of it is, and nothing is undone for it.
  settle_resumed(j, resume_reads, std::move(journal_first));
}

void runner::settle_resumed(std::shared_ptr<job> j, int tries, std::function<void()> then) {
  auto wait = ++j->wait;
  group_client::get(
    ctx_, settings_.start_read_timeout,
    [this, j, wait, tries, then = std::move(then), alive = alive_](
      caf::expected<group::Group> now) mutable {
      if (!*alive || j->wait != wait)
        return;
      ++j->wait;
      if (!now && tries > 1) {
        ctx_.log().warn("deployment: the group could not be read to check the change "
                        "journaled before kill -9 ({}), trying again",
                        grove::describe(now.error()));
        settle_resumed(j, tries - 1, std::move(then));
        return;
      }
      if (!now) {
        // Not dropped: journaling now would rewrite the row without the change, so that
        // it could never be checked again. The deployment fails as it stands; its
        // rollback (if any) undoes what is known and says the change is not undone.
        finish(j, false, "the change of the group journaled before kill -9 cannot be "
                         "checked, the group could not be read ("
                           + grove::describe(now.error()) + ")");
        return;
      }
      size_t meant = 0;
      auto applied = j->group_changed.settle(*now, true, &meant);
      if (applied > 0)
        ctx_.log().info("deployment: the change of the group journaled before kill -9 is "
                        "in force ({} entries): recorded for a rollback", applied);
      else
        ctx_.log().info("deployment: the change of the group journaled before kill -9 is "
                        "not in force (its {} entries are not as it asked): nothing of it "
                        "recorded for a rollback",
                        meant);
      then();
    });
}

void runner::undo_group(std::chrono::seconds timeout, group_changes changes,
                        std::function<void(group_undone)> then) {
  auto undo = std::make_shared<group_changes>(std::move(changes));
  auto u = std::make_shared<group_undone>();
  group_client::edit(
    ctx_, timeout,
    [undo, u](const group::Group& now) -> caf::expected<std::string> {
      u->notes.clear();
      u->kept.clear();
      auto g = undo->undo(now, u->notes, u->kept, &u->undone);
      u->none_left = g.SerializeAsString() == now.SerializeAsString();
      if (u->none_left) // ends the edit: nothing to set
        return grove::make_error(grove::errc::conflict, "nothing to undo");
      return group_yaml(g);
    },
    [this, u, then = std::move(then), alive = alive_](caf::expected<group::Group> g) {
      if (!*alive)
        return;
      for (const auto& n : u->notes)
        ctx_.log().warn("deployment: rollback: {}", n);
      if (u->none_left)
        ctx_.log().info("deployment: rollback: none of the failed deployment's changes of "
                        "the group is left to undo");
      else if (!g)
        ctx_.log().error("deployment: rollback: the failed deployment's changes of the "
                         "group could not be undone: {}",
                         grove::describe(g.error()));
      else
        ctx_.log().info("deployment: rollback: {} of the failed deployment's changes of "
                        "the group undone (group version {})",
                        u->undone, g->version());
      u->set = std::move(g);
      then(std::move(*u));
    });
}

void runner::decide_left(group_changes left, bool undo, bool whole,
                         std::chrono::seconds timeout,
                         std::function<void(caf::expected<std::string>)> done) {
  decide_read(std::make_shared<group_changes>(std::move(left)), undo, whole, timeout,
              resume_reads, std::move(done));
}

void runner::decide_read(std::shared_ptr<group_changes> left, bool undo, bool whole,
                         std::chrono::seconds timeout, int tries,
                         std::function<void(caf::expected<std::string>)> done) {
  auto answered =
    [this, left, undo, whole, timeout, tries, done = std::move(done), alive = alive_](
      caf::expected<group::Group> now) mutable {
      if (!*alive)
        return;
      if (!now && tries > 1) {
        ctx_.log().warn("deployment: the group could not be read to decide a change of the "
                        "group left undecided ({}), trying again",
                        grove::describe(now.error()));
        decide_read(left, undo, whole, timeout, tries - 1, std::move(done));
        return;
      }
      if (!now) {
        done(std::move(now.error()));
        return;
      }
      // Only the pending change counts (unless `whole`): what the deployment recorded
      // was undone (or kept, DO_NOTHING) when it settled.
      auto changes = whole ? *left : left->pending_part();
      size_t meant = 0;
      // At start: the group's versions began again after a restart (and a hot reload
      // may have come between), so only the entries say (all as asked, or nothing).
      auto applied = changes.settle(*now, true, &meant);
      if (whole) {
        ctx_.log().info("deployment: the changes of the group of a canceled run cut short: "
                        "{} recorded{}{}",
                        changes.size(),
                        meant > 0 ? (applied > 0 ? ", its pending one in force"
                                                 : ", its pending one not in force")
                                  : "",
                        undo && !changes.empty() ? ": undone, as its rollback policy says"
                                                 : "");
        if (changes.empty()) {
          done(std::string{"its run had changed nothing in the group"});
          return;
        }
        if (!undo) {
          done(std::string{"its changes of the group kept (its policy is DO_NOTHING)"});
          return;
        }
        undo_group(timeout, std::move(changes), [done = std::move(done)](group_undone u) {
          if (!u.none_left && !u.set)
            done(std::move(u.set.error()));
          else
            done(std::to_string(u.undone) + " of its changes of the group undone");
        });
        return;
      }
      ctx_.log().info("deployment: the change of the group a deployment left "
                      "undecided is {} ({} of its {} entries as it asked){}",
                      applied > 0 ? "in force" : "not in force", applied, meant,
                      applied > 0 && undo ? ": undone, as its rollback owed" : "");
      if (applied == 0) {
        done(std::string{"a start found the change of the group left undecided not in "
                         "force: nothing of it to undo"});
        return;
      }
      if (!undo) {
        done(std::string{"a start found the change of the group left undecided in force: "
                         "kept (no rollback owed it)"});
        return;
      }
      undo_group(timeout, std::move(changes), [done = std::move(done)](group_undone u) {
        if (!u.none_left && !u.set)
          done(std::move(u.set.error()));
        else
          done(std::string{"a start found the change of the group left undecided in "
                           "force and undid it, as its rollback owed"});
      });
    };
  // Tests only: a kernel that does not answer the start's reads (each waits its timeout).
  if (fault_at("start_reads_unanswered")) {
    ctx_.after(timeout, [answered]() mutable {
      answered(grove::make_error(grove::errc::timeout, "the test's fault: no group read"));
    });
    return;
  }
  group_client::get(ctx_, timeout, std::move(answered));
}

void runner::begin_changes(std::shared_ptr<job> j) {
  // Configuration is cumulative: a deployment's reset and merge apply on top of what the
  // component has on this core (the last deployment's result, kept across a version
  // change), the recipe's defaults only for a component new here. Computed now, not when
  // the deployment was prepared, so a deployment queued behind another builds on its
  // result. A rollback's plan was computed already.
  for (auto& p : j->plan) {
    if (!p.cumulative)
      continue;
    auto it = components_.find(p.name);
    bool known = it != components_.end();
    json none;
    const json& update = !p.update_if_new || !known ? p.update : none;
    p.configuration = merged_configuration(p.defaults, known ? it->second->plan.configuration
                                                             : json{},
                                           update);
    p.cumulative = false;
  }
  order_.clear();
  for (const auto& p : j->plan)
    order_.push_back(p.name);
  // Components leaving the set, or changing (version, configuration, user), stop first.
  std::vector<std::string> gone;
  size_t stops = 0;
  for (const auto& [name, c] : components_) {
    auto it = std::find_if(j->plan.begin(), j->plan.end(),
                           [&](const component_plan& p) { return p.name == name; });
    if (!plugin_of(name).empty()) {
      if (it == j->plan.end())
        j->unloads.push_back(name); // by step(), through the kernel
      continue;
    }
    if (is_lambda(c->plan.recipe) || is_model(c->plan.recipe)) {
      if (it == j->plan.end()) {
        if (c->foreign) // its function or model is another change's: it stays
          gone.push_back(name);
        else
          j->lambda_gone.push_back(name); // by step(), out of the kernel's group
      }
      continue;
    }
    if (!public_plugin(name).empty()) {
      if (it == j->plan.end())
        j->config_gone.push_back(name); // by step()
      continue;
    }
    if (public_no_op(name)) {
      if (it == j->plan.end())
        gone.push_back(name); // nothing ran: only its entry goes
      continue;
    }
    if (it == j->plan.end())
      gone.push_back(name);
    else if (j->hold.count(name))
      continue; // restart(): kept as journaled
    else if (it->version != c->plan.version || it->configuration != c->plan.configuration
             || it->posix_user != c->plan.posix_user || it->limits != c->plan.limits
             || c->state == "BROKEN"
             || c->state == "ERRORED") {
      stop_component(name);
      ++stops;
    }
  }
  for (const auto& name : gone) {
    stop_component(name);
    ++stops;
    if (cgroups_)
      cgroups_->remove(name); // when already empty
    std::lock_guard guard{mtx_};
    components_.erase(name);
  }
  // A HARD dependency that restarts restarts its dependants (transitively); a SOFT one
  // does not. A dependant stopped here is started again by step(), after the dependency.
  for (bool more = true; more;) {
    more = false;
    for (const auto& p : j->plan) {
      auto it = components_.find(p.name);
      if (it == components_.end() || it->second->stopped || j->hold.count(p.name))
        continue;
      const json* deps = member(p.recipe, "ComponentDependencies");
      if (!deps || !deps->is_object())
        continue;
      for (auto d = deps->begin(); d != deps->end(); ++d) {
        const json* type = member(*d, "DependencyType");
        bool hard = !type || !type->is_string() || *type != "SOFT";
        auto dep = components_.find(d.key());
        bool restarting = dep == components_.end() || dep->second->stopped;
        if (hard && restarting) {
          ctx_.log().info("deployment: {} restarts with its HARD dependency {}", p.name, d.key());
          stop_component(p.name);
          ++stops;
          more = true;
          break;
        }
      }
    }
  }
  // Tests only: `stopped` holds the job's starts until every stop ended (a start waits
  // only for its own component's otherwise), then kills groved there (poll_stop).
  if (stops > 0 && !j->is_rollback && !j->background && crash_armed("stopped")) {
    j->crash_after_stops = true;
    if (stopping_.empty())
      crash_point("stopped");
  }
  bool plugins = !j->unloads.empty()
                 || std::any_of(j->plan.begin(), j->plan.end(), [](const component_plan& p) {
                      return !plugin_of(p.name).empty();
                    });
  if (!plugins) {
    step(j);
    return;
  }
  // Plugin components change what the kernel runs: what runs now decides load, reload or
  // configure (after a restart of groved the profile's plugins run, not the deployment's).
  auto wait = ++j->wait;
  control_client::status(ctx_, j->timeout,
                         [this, j, wait, alive = alive_](caf::expected<control::Status> st) {
                           if (!*alive || j->wait != wait)
                             return;
                           ++j->wait;
                           if (!st) {
                             finish(j, false, "the kernel's status could not be read: "
                                                + grove::describe(st.error()));
                             return;
                           }
                           j->plugin_dir = st->plugin_dir();
                           j->kernel.clear();
                           for (const auto& info : st->plugins())
                             j->kernel[info.name()] = info;
                           step(j);
                         });
}

void runner::stop_component(const std::string& name, const std::string& details) {
  auto it = components_.find(name);
  if (it == components_.end())
    return;
  auto& c = *it->second;
  if (through_kernel(name, c.plan.recipe))
    return; // plugins, functions and models change through the kernel (step), not as processes
  ++c.generation;
  c.stopped = true;
  if (c.proc || c.service_pgid > 0) {
    set_state(c, "STOPPING", details); // FINISHED when poll_stop is done
    // Greengrass' order: shutdown first; once it ends (or its timeout), the run or what
    // the startup left is signalled, then whatever of the component is left is killed.
    // A start of the same component waits for this (start_component).
    auto w = std::make_shared<stop_work>();
    w->name = name;
    w->main = std::move(c.proc);
    c.proc = grove::process{};
    w->service = std::exchange(c.service_pgid, 0);
    w->generation = c.generation;
    w->details = details;
    stopping_[name];
    auto shutdown = step_of(c.plan, "shutdown", [this] { return render_ctx(); });
    if (!shutdown.error.empty())
      ctx_.log().warn("deployment: {}: shutdown not run: {}", name, shutdown.error);
    if (shutdown.present && !shutdown.script.empty() && shutdown.error.empty()
        && (shutdown.skipif.empty() || !skip(shutdown.skipif))) {
      grove::process_callbacks cb;
      cb.on_exit = [this, w, alive = alive_](const grove::process_exit&) {
        if (*alive)
          end_stop(w);
      };
      auto s = spawn(c, shutdown.script, shutdown.setenv, shutdown.privileged, std::move(cb));
      if (s) {
        // Its own handle until its timeout (Greengrass' default for shutdown: 15 s):
        // dropping it then stops a shutdown that hangs.
        auto keep = std::make_shared<grove::process>(std::move(*s));
        ctx_.after(std::chrono::seconds{shutdown.timeout > 0 ? shutdown.timeout : 15},
                   [this, w, keep, alive = alive_]() mutable {
                     keep.reset();
                     if (*alive)
                       end_stop(w);
                   });
      } else {
        ctx_.log().warn("deployment: {}: shutdown could not start: {}", name,
                        grove::describe(s.error()));
        end_stop(w);
      }
    } else {
      end_stop(w);
    }
    return;
  }
  set_state(c, "FINISHED", details);
}

void runner::end_stop(std::shared_ptr<stop_work> w) {
  if (std::exchange(w->signalled, true))
    return; // the shutdown's exit and its timeout both come here
  w->deadline = std::chrono::steady_clock::now() + w->grace;
  w->main.stop(SIGTERM, w->grace); // the run's (or a startup still running) process group
  auto procs = component_pids(w->name);
  if (!signal_group(w->service, procs, SIGTERM))
    w->service = 0; // no process of the component is in it any more
  for (const auto& p : procs)
    p.signal(SIGTERM); // what left the group (setsid) still carries the component's name
  poll_stop(w);
}

void runner::poll_stop(std::shared_ptr<stop_work> w) {
  auto now = std::chrono::steady_clock::now();
  auto left = component_pids(w->name);
  // Only a wait: the group is signalled below only while one of `left` is in it.
  bool group_left = w->service > 0 && ::kill(-w->service, 0) == 0;
  if ((!left.empty() || group_left || w->main.running()) && now < w->deadline) {
    auto wait = std::exchange(w->poll, std::min(w->poll * 2, std::chrono::milliseconds{100}));
    ctx_.after(wait, [this, w, alive = alive_] {
      if (*alive)
        poll_stop(w);
    });
    return;
  }
  // Nothing left: no SIGKILL at all (a group id or pid may be another's by now).
  signal_group(w->service, left, SIGKILL);
  for (const auto& p : left)
    if (p.signal(SIGKILL))
      ctx_.log().warn("deployment: {}: killed process {}, left after its stop", w->name, p.pid);
  if (auto it = components_.find(w->name); it != components_.end() && it->second->stopped
                                            && it->second->generation == w->generation)
    set_state(*it->second, "FINISHED", w->details);
  drop_freeze_leaves(w->name);
  auto waiting = std::move(stopping_[w->name]);
  stopping_.erase(w->name);
  if (current_ && current_->crash_after_stops && stopping_.empty())
    crash_point("stopped"); // tests only: before the new versions waiting here start
  for (auto& f : waiting)
    f();
}

std::vector<held_process> runner::component_pids(const std::string& name) const {
  std::vector<held_process> out;
  each_component_process("GROVE_COMPONENTS_ROOT=" + root_.string(),
                         [&](held_process p, const std::string& component) {
                           if (component == name)
                             out.push_back(std::move(p));
                         });
  return out;
}

void runner::step(std::shared_ptr<job> j) {
  // interrupt(): a newer deployment replaced this one; what it changed stays for the
  // next apply to build on (no rollback).
  if (!j->interrupted.empty() && !j->is_rollback) {
    j->rollback = false;
    auto at = j->index < j->plan.size() ? ", before " + j->plan[j->index].name : std::string{};
    finish(j, false, j->interrupted + ": interrupted" + at);
    return;
  }
  // A rollback first undoes the failed deployment's own changes of the group, on the
  // group in force and as a compare-and-set: what others changed meanwhile (a v1
  // deployment, an edit of the file) stays, their version of an entry the deployment
  // changed too included (group_changes.hpp).
  if (j->group_undo) {
    auto undo = std::move(*j->group_undo);
    j->group_undo.reset();
    auto wait = ++j->wait;
    undo_group(j->timeout, std::move(undo), [this, j, wait, alive = alive_](group_undone u) {
      if (!*alive || j->wait != wait)
        return;
      ++j->wait;
      j->group_kept = {u.kept.begin(), u.kept.end()};
      if (!u.none_left && !u.set) {
        j->group_kept.clear(); // the components' rollback below puts theirs back
        j->group_undo_error += (j->group_undo_error.empty() ? "" : "; ")
                               + grove::describe(u.set.error());
      }
      step(j);
    });
    return;
  }
  // Lambda and model components leaving the set: their functions (and the subscriptions
  // naming them, which the group could not keep) and model resources out of the group, in
  // one change.
  if (!j->lambda_gone.empty()) {
    auto names = std::move(j->lambda_gone);
    j->lambda_gone.clear();
    for (const auto& n : names)
      if (auto it = components_.find(n); it != components_.end())
        set_state(*it->second, "STOPPING");
    // A rollback leaves a function or model that another change made after the failed
    // deployment's (the undo kept it and said so); the component goes all the same.
    auto out = names;
    std::erase_if(out, [&](const std::string& n) { return j->group_kept.count(n) > 0; });
    if (out.empty()) { // all another change's: the group stays as it is
      {
        std::lock_guard guard{mtx_};
        for (const auto& n : names)
          components_.erase(n);
      }
      ctx_.log().info("deployment: {} component(s) removed; their functions or models, "
                      "another change's, stay in the group", names.size());
      step(j);
      return;
    }
    edit_group(
      j,
      [names = out](YAML::Node& doc) {
        auto gone = [&](const std::string& endpoint) {
          return std::any_of(names.begin(), names.end(),
                             [&](const std::string& n) { return endpoint == "function:" + n; });
        };
        auto named = [&](const YAML::Node& n, const char* key) {
          return std::find(names.begin(), names.end(), n[key].as<std::string>()) != names.end();
        };
        YAML::Node functions{YAML::NodeType::Sequence}, subscriptions{YAML::NodeType::Sequence},
          resources{YAML::NodeType::Sequence};
        for (const auto& f : doc["functions"])
          if (!named(f, "name"))
            functions.push_back(f);
        // A model component's resource (ml_inference finishes its queue and drops it).
        for (const auto& r : doc["resources"])
          if (!named(r, "id") || !r["config"].IsMap()
              || !r["config"][std::string{ml_inference::model_resource_key}].IsDefined())
            resources.push_back(r);
        doc["resources"] = resources;
        for (const auto& s : doc["subscriptions"])
          if (!gone(s["source"].as<std::string>()) && !gone(s["target"].as<std::string>()))
            subscriptions.push_back(s);
        doc["functions"] = functions;
        doc["subscriptions"] = subscriptions;
      },
      [this, j, names](caf::error err) {
        if (err) {
          for (const auto& n : names)
            if (auto it = components_.find(n); it != components_.end())
              set_state(*it->second, "ERRORED", "removal: " + grove::describe(err));
          finish(j, false, "the kernel refused the group without the functions of "
                             + names.front() + (names.size() > 1 ? " and others" : "")
                             + ": " + grove::describe(err));
          return;
        }
        for (const auto& n : names) {
          std::lock_guard guard{mtx_};
          components_.erase(n);
        }
        ctx_.log().info("deployment: {} function(s) or model(s) removed from the group",
                        names.size());
        step(j);
      });
    return;
  }
  // Plugin components leaving the set go first: unloaded by the kernel.
  while (!j->unloads.empty()) {
    auto name = j->unloads.back();
    j->unloads.pop_back();
    auto plugin = plugin_of(name);
    auto it = components_.find(name);
    if (!j->kernel.count(plugin)) { // not running (a load that failed): nothing to unload
      std::lock_guard guard{mtx_};
      components_.erase(name);
      continue;
    }
    if (it != components_.end())
      set_state(*it->second, "STOPPING");
    auto wait = ++j->wait;
    control_client::unload(
      ctx_, plugin, j->timeout,
      [this, j, name, plugin, wait, alive = alive_](caf::expected<control::Empty> r) {
        if (!*alive || j->wait != wait)
          return;
        ++j->wait;
        if (!r && r.error() != grove::errc::unknown_plugin) {
          if (auto it = components_.find(name); it != components_.end())
            set_state(*it->second, "ERRORED", "unload: " + grove::describe(r.error()));
          finish(j, false, name + ": the kernel did not unload plugin '" + plugin
                             + "': " + grove::describe(r.error()));
          return;
        }
        j->kernel.erase(plugin);
        {
          std::lock_guard guard{mtx_};
          components_.erase(name);
        }
        ctx_.log().info("deployment: {} removed: plugin {} unloaded", name, plugin);
        step(j);
      });
    return;
  }
  if (!j->config_gone.empty()) {
    auto name = std::move(j->config_gone.back());
    j->config_gone.pop_back();
    apply_public_config(j, name, {});
    return;
  }
  while (j->index < j->plan.size()) {
    const auto& p = j->plan[j->index];
    if (j->hold.count(p.name)) {
      ++j->index; // restart(): left as journaled
      continue;
    }
    if (!public_plugin(p.name).empty()) {
      apply_public_config(j, p.name, p);
      return;
    }
    if (const auto* why = public_no_op(p.name)) {
      set_state(take_plan(p), "RUNNING", "a no-op on Grove: " + std::string{*why});
      ++j->index;
      continue;
    }
    if (!plugin_of(p.name).empty()) {
      apply_plugin(j, p);
      return;
    }
    if ((is_lambda(p.recipe) || is_model(p.recipe))
        && (j->group_kept.count(p.name) || (j->is_rollback && p.foreign))) {
      // A rollback: another change made this component's function or model after the
      // failed deployment's (the undo kept that and said so), or it was another change's
      // in the set before already (the undo put that change's version back); it stays,
      // and is not this component's to run (the failed version's state replaced,
      // journaled as foreign). A slot the failed deployment's removal erased is made again
      // only for one foreign before: a kept one was the failed deployment's own.
      component* slot_ptr = nullptr;
      {
        std::lock_guard guard{mtx_};
        auto it = components_.find(p.name);
        if (p.foreign && (it == components_.end() || !it->second))
          it = components_.insert_or_assign(p.name, std::make_unique<component>()).first;
        if (it != components_.end() && it->second) {
          it->second->plan = p;
          it->second->plan.foreign = false; // component::foreign is the component's own
          // Journaled with its state: a later set without it leaves the group alone.
          it->second->foreign = true;
          slot_ptr = it->second.get();
        }
      }
      if (slot_ptr)
        set_state(*slot_ptr, "FINISHED",
                  std::string{"its "} + (is_model(p.recipe) ? "model" : "function")
                    + " is another change's (kept by the rollback)");
      ++j->index;
      continue;
    }
    if (is_lambda(p.recipe)) {
      apply_lambda(j, p);
      return;
    }
    if (is_model(p.recipe)) {
      apply_model(j, p);
      return;
    }
    auto it = components_.find(p.name);
    if (it != components_.end() && it->second->plan.version == p.version
        && it->second->plan.configuration == p.configuration
        && (it->second->state == "RUNNING" || it->second->state == "FINISHED")
        && it->second->generation > 0 && !it->second->stopped) {
      ++j->index; // unchanged and fine
      continue;
    }
    start_component(j, p);
    return;
  }
  finish(j, true, "");
}

void runner::start_component(std::shared_ptr<job> j, component_plan p) {
  // Interrupted while it waited for the component's last stop: no new step begins.
  if (!j->interrupted.empty() && !j->is_rollback) {
    step(j);
    return;
  }
  if (auto s = stopping_.find(p.name); s != stopping_.end()) {
    // Its last processes are still stopping (shutdown, then the grace): not two at once.
    s->second.push_back([this, j, p = std::move(p), alive = alive_]() mutable {
      if (*alive)
        start_component(j, std::move(p));
    });
    return;
  }
  if (j->crash_after_stops && !stopping_.empty()) { // tests only: see begin_changes
    stopping_.begin()->second.push_back([this, j, p = std::move(p), alive = alive_]() mutable {
      if (*alive)
        start_component(j, std::move(p));
    });
    return;
  }
  if (j->is_rollback)
    crash_point("rollback", p.name); // tests only
  auto& slot = components_[p.name];
  if (!slot) {
    std::lock_guard guard{mtx_};
    slot = std::make_unique<component>();
  }
  auto& c = *slot;
  if (c.proc) {
    c.proc.stop();
    c.proc = grove::process{};
  }
  {
    std::lock_guard guard{mtx_};
    if (c.plan.version != p.version)
      c.installed_version.clear();
    c.plan = std::move(p);
    c.errors = 0;
    c.error_times.clear();
    c.stopped = false;
    c.restored = false;
  }
  ++c.generation;
  c.log = log_dir_ / (c.plan.name + ".log");
  auto name = c.plan.name;
  set_state(c, "NEW");
  if (!bootstrap_component(j, name))
    install_component(j, name);
}

bool runner::bootstrap_component(std::shared_ptr<job> j, const std::string& name) {
  auto& c = *components_.at(name);
  auto boot = step_of(c.plan, "bootstrap", [this] { return render_ctx(); });
  if (!boot.error.empty()) {
    set_state(c, "ERRORED", boot.error);
    finish(j, false, name + " " + c.plan.version + ": " + boot.error);
    return true;
  }
  if (!boot.present || boot.script.empty())
    return false;
  // Greengrass: before install, when the component is new here, its version changed, or
  // the bootstrap script (rendered) changed; once, journaled (bootstrapped_version).
  auto key = install_key(c.plan, boot, render_ctx());
  // A rollback runs the previous version's bootstrap again only when it asks for it
  // (BootstrapOnRollback) and the failed deployment ran this component's bootstrap (the
  // nucleus' rule: that bootstrap, even one that failed, may have changed the device);
  // else that version counts as bootstrapped, as it was before.
  if (j->is_rollback && !(boot.on_rollback && j->booted.count(name))) {
    c.bootstrapped_version = key;
    return false;
  }
  if (!j->is_rollback && c.bootstrapped_version == key)
    return false;
  auto gen = c.generation;
  auto wait = ++j->wait;
  j->booted.insert(name);
  c.oom_seen = c.plan.limits.memory_kb > 0 && cgroups_ ? cgroups_->oom_kills(name) : 0;
  grove::process_callbacks cb;
  cb.on_exit = [this, j, name, gen, wait, key, alive = alive_](const grove::process_exit& e) {
    if (!*alive)
      return;
    auto* exited = step_exited(j, name, gen, wait);
    if (!exited)
      return;
    auto& c = *exited;
    // 0: done; 100: done, and a restart of groved asked, which Grove does not need (every
    // component of the set is started fresh after its bootstrap, plugins reload live):
    // noted in the deployment's outcome; 101: a reboot of the device, which Grove never
    // does: refused, the deployment fails (the install may depend on that reboot);
    // 102-199: reserved (Greengrass); anything else: the step failed.
    if (e.code == 0 || e.code == 100) {
      if (!j->is_rollback)
        crash_point("bootstrap", name); // tests only: it ran, not yet journaled
      c.bootstrapped_version = key;
      changed(); // journaled with the component
      if (e.code == 100) {
        auto note = name + " " + c.plan.version
                    + ": bootstrap asked for a restart of groved (exit 100), not done: Grove "
                      "applies components without one";
        ctx_.log().info("deployment: {}", note);
        j->notes += (j->notes.empty() ? "" : "; ") + note;
      }
      install_component(j, name);
      return;
    }
    auto why = e.code == 101 ? std::string{"bootstrap asked for a reboot of the device (exit "
                                           "101), which Grove does not do"}
               : e.code > 101 && e.code < 200
                 ? "bootstrap exited with code " + std::to_string(e.code)
                     + ", which Greengrass reserves (100-199)"
                 : "bootstrap " + explain(c, e, c.oom_seen);
    set_state(c, "ERRORED", why);
    finish(j, false, name + " " + c.plan.version + ": " + why);
  };
  auto proc = spawn(c, boot.script, boot.setenv, boot.privileged, std::move(cb));
  if (!proc) {
    set_state(c, "ERRORED", "bootstrap: " + grove::describe(proc.error()));
    finish(j, false, name + ": bootstrap could not start: " + grove::describe(proc.error()));
    return true;
  }
  c.proc = std::move(*proc);
  j->proc_wait = name;
  j->proc_wait_step = "bootstrap";
  set_state(c, "NEW", "bootstrap");
  // Greengrass' default Timeout for bootstrap: 120 s.
  step_deadline(j, name, gen, wait, std::chrono::seconds{boot.timeout > 0 ? boot.timeout : 120},
                "bootstrap");
  return true;
}

runner::component* runner::step_exited(const std::shared_ptr<job>& j, const std::string& name,
                                       uint64_t gen, uint64_t wait) {
  if (j->wait != wait)
    return nullptr;
  auto it = components_.find(name);
  if (it == components_.end() || it->second->generation != gen)
    return nullptr;
  auto& c = *it->second;
  c.proc = grove::process{};
  ++j->wait;
  j->proc_wait.clear();
  return &c;
}

void runner::step_deadline(std::shared_ptr<job> j, const std::string& name, uint64_t gen,
                           uint64_t wait, std::chrono::seconds limit, std::string step) {
  ctx_.after(limit, [this, j, name, gen, wait, limit, step = std::move(step), alive = alive_] {
    if (!*alive || j->wait != wait)
      return;
    ++j->wait;
    j->proc_wait.clear();
    auto it = components_.find(name);
    if (it == components_.end() || it->second->generation != gen)
      return;
    auto& c = *it->second;
    ++c.generation;
    c.proc.stop(SIGKILL, std::chrono::milliseconds{0});
    c.proc = grove::process{};
    set_state(c, "ERRORED", step + " timed out");
    finish(j, false,
           name + " " + c.plan.version + ": " + step + " did not end within "
             + std::to_string(limit.count()) + " s");
  });
}

void runner::install_component(std::shared_ptr<job> j, const std::string& name) {
  auto& c = *components_.at(name);
  auto gen = c.generation;
  auto install = step_of(c.plan, "install", [this] { return render_ctx(); });
  if (!install.error.empty()) {
    set_state(c, "ERRORED", install.error);
    finish(j, false, name + " " + c.plan.version + ": " + install.error);
    return;
  }
  auto key = install.present ? install_key(c.plan, install, render_ctx()) : c.plan.version;
  if (!install.present || install.script.empty() || c.installed_version == key
      || (!install.skipif.empty() && skip(install.skipif))) {
    c.installed_version = key;
    set_state(c, "INSTALLED");
    run_main(j, name);
    return;
  }
  auto wait = ++j->wait;
  c.oom_seen = c.plan.limits.memory_kb > 0 && cgroups_ ? cgroups_->oom_kills(name) : 0;
  grove::process_callbacks cb;
  cb.on_exit = [this, j, name, gen, wait, key, alive = alive_](const grove::process_exit& e) {
    if (!*alive)
      return;
    auto* exited = step_exited(j, name, gen, wait);
    if (!exited)
      return;
    auto& c = *exited;
    if (e.code == 0) {
      c.installed_version = key;
      set_state(c, "INSTALLED");
      run_main(j, name);
    } else {
      auto why = "install " + explain(c, e, c.oom_seen);
      set_state(c, "ERRORED", why);
      finish(j, false, name + " " + c.plan.version + ": " + why);
    }
  };
  auto proc = spawn(c, install.script, install.setenv, install.privileged, std::move(cb));
  if (!proc) {
    set_state(c, "ERRORED", grove::describe(proc.error()));
    finish(j, false, name + ": install could not start: " + grove::describe(proc.error()));
    return;
  }
  c.proc = std::move(*proc);
  j->proc_wait = name;
  j->proc_wait_step = "install";
  step_deadline(j, name, gen, wait,
                install.timeout > 0 ? std::chrono::seconds{install.timeout} : j->timeout,
                "install");
}

void runner::run_main(std::shared_ptr<job> j, const std::string& name) {
  auto& c = *components_.at(name);
  auto startup = step_of(c.plan, "startup", [this] { return render_ctx(); });
  auto run = step_of(c.plan, "run", [this] { return render_ctx(); });
  const auto& chosen = startup.present ? startup : run;
  c.main = startup.present ? "startup" : run.present ? "run" : "";
  if (!chosen.error.empty()) {
    set_state(c, "ERRORED", chosen.error);
    ++j->wait;
    finish(j, false, name + " " + c.plan.version + ": " + chosen.error);
    return;
  }
  if (c.main.empty() || chosen.script.empty()
      || (!chosen.skipif.empty() && skip(chosen.skipif))) {
    set_state(c, c.main.empty() ? "FINISHED" : "FINISHED", c.main.empty() ? "" : "skipped");
    ++j->index;
    step(j);
    return;
  }
  auto gen = c.generation;
  c.oom_seen = c.plan.limits.memory_kb > 0 && cgroups_ ? cgroups_->oom_kills(name) : 0;
  set_state(c, "STARTING");
  auto wait = ++j->wait;
  grove::process_callbacks cb;
  bool is_startup = c.main == "startup";
  if (!is_startup && !j->background && !j->is_rollback && !j->runs.count(name))
    j->runs[name] = {gen, std::chrono::steady_clock::now()};
  auto running = [this, j, name, gen, wait, alive = alive_] {
    if (!*alive)
      return;
    auto it = components_.find(name);
    if (it == components_.end() || it->second->generation != gen)
      return;
    set_state(*it->second, "RUNNING");
    if (j->wait == wait) {
      ++j->wait;
      ++j->index;
      step(j);
    }
  };
  if (!is_startup)
    cb.on_start = [running](pid_t) { running(); };
  else
    c.reported_running = running; // a startup may report RUNNING before it exits
  cb.on_exit = [this, j, name, gen, wait, is_startup, alive = alive_](const grove::process_exit& e) {
    if (!*alive || e.requested)
      return;
    main_exited(j, name, gen, wait, is_startup, e);
  };
  auto proc = spawn(c, chosen.script, chosen.setenv, chosen.privileged, std::move(cb));
  if (!proc) {
    set_state(c, "ERRORED", grove::describe(proc.error()));
    ++j->wait;
    finish(j, false, name + ": " + c.main + " could not start: " + grove::describe(proc.error()));
    return;
  }
  c.proc = std::move(*proc);
  c.timed_out = false;
  if (is_startup) {
    j->proc_wait = name;
    j->proc_wait_step = "startup";
  }
  auto run_no = ++c.runs;
  if (!is_startup && chosen.timeout > 0) {
    // Greengrass ends a run that outlives its Timeout: an error (ERRORED, the restart
    // rules), reported by main_exited as the timeout.
    ctx_.after(std::chrono::seconds{chosen.timeout}, [this, name, gen, run_no,
                                                      alive = alive_] {
      if (!*alive)
        return;
      auto it = components_.find(name);
      if (it == components_.end() || it->second->generation != gen || it->second->runs != run_no
          || !it->second->proc.running())
        return;
      auto& c = *it->second;
      c.timed_out = true;
      unpause(c, "its run's Timeout"); // a frozen process would not end
      // Its process group (it leads one), as a stop would; on_exit sees an unasked end.
      auto pid = c.proc.pid();
      auto held = [this, name] { return component_pids(name); };
      signal_run(c.proc, pid, held, SIGTERM);
      ctx_.after(std::chrono::milliseconds{3000}, [pid, this, name, held, run_no, alive = alive_] {
        if (!*alive)
          return;
        auto it = components_.find(name);
        if (it != components_.end() && it->second->runs == run_no
            && it->second->proc.pid() == pid)
          signal_run(it->second->proc, pid, held, SIGKILL);
      });
    });
  }
  if (is_startup) {
    auto limit = chosen.timeout > 0 ? std::chrono::seconds{chosen.timeout} : j->timeout;
    ctx_.after(limit, [this, j, name, gen, wait, limit, alive = alive_] {
      if (!*alive || j->wait != wait)
        return;
      ++j->wait;
      j->proc_wait.clear();
      auto it = components_.find(name);
      if (it == components_.end() || it->second->generation != gen)
        return;
      auto& c = *it->second;
      ++c.generation;
      c.proc.stop(SIGKILL, std::chrono::milliseconds{0});
      c.proc = grove::process{};
      set_state(c, "ERRORED", "startup timed out");
      finish(j, false, name + " " + c.plan.version + ": not RUNNING within "
                         + std::to_string(limit.count()) + " s");
    });
  }
}

// A run or startup ended without being asked to (run_main's, or one adopt took over):
// the state, then what the job waiting for it (`wait`) does, or the v2 restart rules.
void runner::main_exited(std::shared_ptr<job> j, const std::string& name, uint64_t gen,
                         uint64_t wait, bool is_startup, const grove::process_exit& e) {
  auto it = components_.find(name);
  if (it == components_.end() || it->second->generation != gen)
    return;
  auto& c = *it->second;
  c.proc = grove::process{};
  c.reported_running = nullptr;
  drop_freeze_leaves(name); // reaped: a pause's leaf has nothing left to hold
  if (!c.reported_error.empty()) { // report_state ended it: an error whatever its exit
    auto why = std::move(c.reported_error);
    c.reported_error.clear();
    grove::process_exit errored = e;
    if (errored.code == 0)
      errored.code = 1;
    return main_exited_as(j, name, gen, wait, is_startup, errored,
                          why + " (" + e.describe() + ")");
  }
  if (c.timed_out) { // run_main's timer ended it: an error whatever its exit
    c.timed_out = false;
    auto limit = step_of(c.plan, "run", [this] { return render_ctx(); }).timeout;
    grove::process_exit timed = e;
    if (timed.code == 0)
      timed.code = 1;
    return main_exited_as(j, name, gen, wait, is_startup, timed,
                          "run exceeded its Timeout of " + std::to_string(limit) + " s ("
                            + e.describe() + ")");
  }
  main_exited_as(j, name, gen, wait, is_startup, e, "");
}

void runner::main_exited_as(std::shared_ptr<job> j, const std::string& name, uint64_t gen,
                            uint64_t wait, bool is_startup, const grove::process_exit& e,
                            std::string why) {
  auto& c = *components_.at(name);
  if (why.empty())
    why = (is_startup ? "startup " : "run ") + explain(c, e, c.oom_seen);
  if (e.code == 0) {
    if (is_startup && !j->is_rollback && !j->background)
      crash_point("startup", name); // tests only: its service runs, not yet RUNNING
    // A startup's service runs on in its process group: a stop ends it (stop_component).
    if (is_startup)
      c.service_pgid = e.pid;
    set_state(c, is_startup ? "RUNNING" : "FINISHED");
  } else {
    // Greengrass v2's rule: a third error within the window is BROKEN, no more restarts.
    auto now = std::chrono::steady_clock::now();
    c.error_times.push_back(now);
    while (!c.error_times.empty() && c.error_times.front() + settings_.error_window <= now)
      c.error_times.pop_front();
    c.errors = static_cast<int>(c.error_times.size());
    set_state(c, c.errors >= 3 ? "BROKEN" : "ERRORED", why);
  }
  if (j->wait == wait) { // the job waits for this start
    ++j->wait;
    j->proc_wait.clear();
    if (e.code == 0) {
      ++j->index;
      step(j);
      return;
    }
    if (!j->background) {
      finish(j, false, name + " " + c.plan.version + ": " + why);
      return;
    }
  }
  if (e.code != 0 && c.errors >= 3) {
    // BROKEN: what needs it (HARD) stops too, until a deployment brings it back (not
    // while one applies: it is starting them in order, and waits for them). A run the
    // last deployment started, BROKEN within its timeout, fails that deployment.
    if (!busy_)
      stop_dependants(name, "is BROKEN");
    broken_late(name, gen, why); // a rollback may remove `c`: nothing after
    return;
  }
  if (e.code != 0 && c.errors < 3) { // a later crash: recover, then the run again
    auto recover = step_of(c.plan, "recover", [this] { return render_ctx(); });
    if (!recover.error.empty())
      ctx_.log().warn("deployment: {}: recover not run: {}", name, recover.error);
    if (recover.present && !recover.script.empty() && recover.error.empty()
        && (recover.skipif.empty() || !skip(recover.skipif))) {
      // Its own handle, kept until its timeout (dropping it stops the script).
      auto r = spawn(c, recover.script, recover.setenv, recover.privileged, {});
      if (r)
        ctx_.after(std::chrono::seconds{recover.timeout > 0 ? recover.timeout : 60},
                   [keep = std::make_shared<grove::process>(std::move(*r))] {});
      else
        ctx_.log().warn("deployment: {}: recover could not start: {}", name,
                        grove::describe(r.error()));
    }
    // Its HARD dependants (transitively) stop now and start again once it runs again
    // (Greengrass: a HARD dependant restarts when its dependency changes state); not
    // while a deployment applies (it starts them in order and waits for them).
    if (!busy_)
      stop_dependants(name, "errored");
    ctx_.after(std::chrono::milliseconds{500 * c.errors}, [this, name, gen, alive = alive_] {
      if (!*alive)
        return;
      auto it = components_.find(name);
      if (it == components_.end() || it->second->generation != gen)
        return;
      // Not part of a deployment: nothing waits, nothing fails; once it runs, the
      // dependants stopped above start again, in order.
      auto again = std::make_shared<job>();
      again->background = true;
      again->plan.push_back(it->second->plan);
      if (!busy_) // else the deployment begun meanwhile starts them, in its order
        for (const auto& d : hard_dependants(name))
          if (auto dep = components_.find(d); dep != components_.end() && dep->second->stopped)
            again->plan.push_back(dep->second->plan);
      run_main(again, name);
    });
  }
}

void runner::broken_late(const std::string& name, uint64_t gen, const std::string& why) {
  auto now = std::chrono::steady_clock::now();
  auto within = [&](const watch& w) {
    auto r = w.runs.find(name);
    return r != w.runs.end() && r->second.first == gen && now < r->second.second + w.j->timeout;
  };
  auto reason = [&](const watch& w) {
    const auto& version = components_.at(name)->plan.version;
    return name + " " + version + ": run went BROKEN (3 errors) within "
           + std::to_string(w.j->timeout.count()) + " s of its start: " + why;
  };
  // Watches a newer apply followed: reported to their deployments (recorded), not rolled
  // back (the newer apply owns the set now). Expired ones go.
  std::erase_if(replaced_watches_, [&](watch& w) {
    if (within(w)) {
      if (w.j->late)
        w.j->late(apply_outcome{false, reason(w) + " (after a newer deployment began: "
                                                   "recorded, not rolled back)",
                                false, false, false, {}});
      return true;
    }
    return std::none_of(w.runs.begin(), w.runs.end(), [&](const auto& r) {
      return now < r.second.second + w.j->timeout;
    });
  });
  // The last apply's run, BROKEN within its timeout, fails that deployment late.
  if (watch_ && within(*watch_) && !busy_) {
    auto text = reason(*watch_); // before its job is moved out
    auto w = std::move(watch_->j);
    watch_.reset();
    w->done = std::move(w->late);
    w->index = w->plan.size();
    busy_ = true;
    current_ = w;
    finish(w, false, std::move(text)); // a rollback may remove the component
  }
}

runner::component& runner::take_plan(const component_plan& p) {
  std::lock_guard guard{mtx_};
  auto& slot = components_[p.name];
  if (!slot)
    slot = std::make_unique<component>();
  slot->plan = p;
  slot->stopped = false;
  slot->restored = false;
  slot->foreign = false; // a deployment sets its function or model again: its own
  return *slot;
}

runner::component* runner::start_in_group(std::shared_ptr<job> j, const component_plan& p) {
  auto it = components_.find(p.name);
  if (it != components_.end() && it->second->plan.version == p.version
      && it->second->plan.configuration == p.configuration && it->second->state == "RUNNING"
      && !it->second->restored) {
    ++j->index; // its function or model is in the group and running as it should be
    step(j);
    return nullptr;
  }
  auto& c = take_plan(p);
  set_state(c, "STARTING");
  return &c;
}

void runner::apply_plugin(std::shared_ptr<job> j, const component_plan& p) {
  auto plugin = plugin_of(p.name);
  auto library = plugin_library(p, j->plugin_dir);
  auto running = j->kernel.find(plugin);
  auto known_it = components_.find(p.name);
  component* known = known_it == components_.end() || known_it->second->restored
                       ? nullptr
                       : known_it->second.get();
  // l: load (new to the kernel), L: load from the recipe's own build (its artifact),
  // r: hot reload (another version or library, or broken), c: configure (another
  // configuration, or one this instance never gave: after a restart the plugin may run
  // with the profile's).
  std::string todo;
  if (running == j->kernel.end()) {
    todo = library != same_path(std::filesystem::path{j->plugin_dir} / ("lib" + plugin + ".so"))
             ? "L"
             : "l";
  } else {
    if (same_path(running->second.library()) != library || (known && known->plan.version != p.version)
        || running->second.state() == "broken")
      todo += "r";
    if (!known || known->plan.configuration != p.configuration)
      todo += "c";
  }
  auto& c = take_plan(p);
  if (todo.empty()) {
    j->last = running->second;
    settle_plugin(j, p.name);
    return;
  }
  set_state(c, "STARTING");
  plugin_actions(j, p.name, todo);
}

void runner::plugin_actions(std::shared_ptr<job> j, std::string name, std::string todo) {
  if (todo.empty()) {
    settle_plugin(j, name);
    return;
  }
  auto& c = *components_.at(name);
  auto plugin = plugin_of(name);
  char what = todo.front();
  todo.erase(0, 1);
  auto wait = ++j->wait;
  auto verb = what == 'l' || what == 'L' ? "load" : what == 'r' ? "reload" : "configure";
  auto then = [this, j, name, plugin, todo, wait, verb, what,
               alive = alive_](caf::expected<control::PluginInfo> info) {
    if (!*alive || j->wait != wait)
      return;
    ++j->wait;
    auto it = components_.find(name);
    if (it == components_.end())
      return;
    auto& c = *it->second;
    if (!info && what == 'L' && info.error() == grove::errc::not_authorized) {
      // The kernel loads a library only from this plugin's state directory (an
      // artifacts_dir outside it): from the plugin directory, then the reload to the
      // build (which the kernel checks the same way: refused, the deployment fails with
      // its reason). An unsafe file inside it (load_failed) fails at once.
      ctx_.log().warn("deployment: {} {}: the kernel refused to load plugin {} from its "
                      "artifact ({}); loading it from the plugin directory, then a hot "
                      "reload to the artifact",
                      name, c.plan.version, plugin, grove::describe(info.error()));
      plugin_actions(j, name, "lr" + todo);
      return;
    }
    if (!info) {
      auto why = grove::describe(info.error());
      set_state(c, "ERRORED", std::string{verb} + ": " + why);
      finish(j, false, name + " " + c.plan.version + ": the kernel refused the " + verb
                         + " of plugin '" + plugin + "': " + why);
      return;
    }
    if (!j->is_rollback) { // tests only: the kernel changed it, not yet recorded
      crash_point("plugin", name);
      crash_point(verb, name);
    }
    j->kernel[plugin] = *info;
    j->last = std::move(*info);
    plugin_actions(j, name, todo);
  };
  auto config = c.plan.configuration.is_object() ? c.plan.configuration.dump() : "{}";
  if (what == 'l' || what == 'L') {
    control::PluginChange change;
    change.set_name(plugin);
    change.set_config(config);
    if (what == 'L') {
      // A first load from the verified artifact itself: the kernel checks that it is a
      // file of this plugin's state directory (the artifact store) before it opens it.
      change.set_path(plugin_library(c.plan, j->plugin_dir));
      ctx_.log().info("deployment: {} {}: loading plugin {} from {}", name, c.plan.version,
                      plugin, change.path());
    } else {
      ctx_.log().info("deployment: {} {}: loading plugin {}", name, c.plan.version, plugin);
    }
    control_client::load(ctx_, change, j->timeout, std::move(then));
  } else if (what == 'r') {
    auto library = plugin_library(c.plan, j->plugin_dir);
    ctx_.log().info("deployment: {} {}: hot reload of plugin {} from {}", name,
                    c.plan.version, plugin, library);
    control_client::reload(ctx_, plugin, library, j->timeout, std::move(then));
  } else {
    ctx_.log().info("deployment: {} {}: configuring plugin {}", name, c.plan.version, plugin);
    control_client::configure(ctx_, plugin, config, j->timeout, std::move(then));
  }
}

void runner::settle_plugin(std::shared_ptr<job> j, const std::string& name) {
  auto& c = *components_.at(name);
  const auto& info = j->last;
  // grove.<plugin> is the plugin at the component's version: the recipe's own build whose
  // version (GROVE_PLUGIN's, PluginInfo.version) is another is refused, and the deployment
  // goes back by its policy, rather than list one build under another's version. The
  // plugin directory's library (no artifact) is the package's: after a package upgrade it
  // reports another version, and refusing it would fail every later apply with nothing to
  // roll back to, so it runs with a warning.
  if (info.state() == "running" && !info.version().empty()
      && !same_version(info.version(), c.plan.version)
      && same_path(info.library())
           != same_path(std::filesystem::path{j->plugin_dir} / ("lib" + plugin_of(name) + ".so"))) {
    auto details = "the library loaded (" + info.library() + ") is plugin '" + plugin_of(name)
                   + "' version " + info.version() + ", not the component's version "
                   + c.plan.version;
    set_state(c, "ERRORED", details);
    finish(j, false, name + " " + c.plan.version + ": " + details);
    return;
  }
  if (info.state() == "running" && !info.version().empty()
      && !same_version(info.version(), c.plan.version))
    ctx_.log().warn("deployment: {} {}: plugin {} from the plugin directory is version {}, "
                    "not the component's version {}; it runs, listed under the component's",
                    name, c.plan.version, plugin_of(name), info.version(), c.plan.version);
  if (info.state() == "running") {
    if (c.state != "RUNNING")
      set_state(c, "RUNNING");
    ++c.generation;
    ++j->index;
    step(j);
    return;
  }
  auto details = "the kernel reports plugin '" + plugin_of(name) + "' " + info.state()
                 + (info.last_error().empty() ? "" : ": " + info.last_error());
  set_state(c, info.state() == "broken" ? "BROKEN" : "ERRORED", details);
  finish(j, false, name + " " + c.plan.version + ": " + details);
}

void runner::refresh_plugins() {
  if (busy_)
    return; // a deployment is changing them; it sets their states
  bool lambdas = std::any_of(components_.begin(), components_.end(),
                             [](const auto& kv) { return is_lambda(kv.second->plan.recipe); });
  if (lambdas) {
    // A Lambda component's state is function_runtime's: listed with a definition, or not
    // (an edit of the group file or a v1 deployment may have taken its function out).
    using list_rpc = function_runtime::list_rpc;
    list_rpc rpc{std::string{function_runtime::list_topic}};
    ctx_.call(rpc.encode(fn::ListRequest{}), std::chrono::seconds{10},
              [this, alive = alive_](caf::expected<Envelope> reply) {
                if (!*alive || busy_)
                  return;
                auto list = list_rpc::decode(std::move(reply));
                for (auto& [name, c] : components_) {
                  if (!is_lambda(c->plan.recipe) || c->foreign) // another change's: FINISHED
                    continue;
                  std::string state = "ERRORED";
                  std::string details = list ? "function_runtime does not list its function"
                                             : grove::describe(list.error());
                  if (list)
                    for (const auto& f : list->functions())
                      if (f.name() == name) {
                        state = f.valid() ? "RUNNING" : "ERRORED";
                        details = f.valid() ? "" : f.last_error();
                      }
                  if (state != c->state || (state != "RUNNING" && details != c->details))
                    set_state(*c, state, details);
                }
              });
  }
  bool models = std::any_of(components_.begin(), components_.end(),
                            [](const auto& kv) { return is_model(kv.second->plan.recipe); });
  if (models) {
    // A model component's state is ml_inference's: serving, or failed with the reason (a
    // group edit may also have taken its resource out).
    ml_inference::models_rpc rpc{std::string{ml_inference::models_topic}};
    ctx_.call(rpc.encode(ml::ModelsRequest{}), std::chrono::seconds{10},
              [this, alive = alive_](caf::expected<Envelope> reply) {
                if (!*alive || busy_)
                  return;
                auto list = ml_inference::models_rpc::decode(std::move(reply));
                for (auto& [name, c] : components_) {
                  if (!is_model(c->plan.recipe) || c->foreign) // another change's: FINISHED
                    continue;
                  std::string state = "ERRORED";
                  std::string details = list ? "ml_inference does not list its model"
                                             : grove::describe(list.error());
                  if (list)
                    for (const auto& m : list->models())
                      if (m.id() == name) {
                        // SERVING with an error: the old version still serves after the
                        // new one failed to load (wait_model's ERRORED stays).
                        bool ok = (m.state() == ml::ModelInfo::SERVING && m.error().empty())
                                  || m.loading();
                        state = ok ? "RUNNING" : "ERRORED";
                        details = ok ? "" : m.error();
                      }
                  if (state != c->state || (state != "RUNNING" && details != c->details))
                    set_state(*c, state, details);
                }
              });
  }
  bool any = std::any_of(components_.begin(), components_.end(),
                         [](const auto& kv) { return !plugin_of(kv.first).empty(); });
  if (!any)
    return;
  control_client::status(ctx_, std::chrono::seconds{10},
                         [this, alive = alive_](caf::expected<control::Status> st) {
                           if (!*alive || !st || busy_)
                             return;
                           std::map<std::string, const control::PluginInfo*> by_name;
                           for (const auto& info : st->plugins())
                             by_name[info.name()] = &info;
                           for (auto& [name, c] : components_) {
                             auto plugin = plugin_of(name);
                             if (plugin.empty())
                               continue;
                             auto it = by_name.find(plugin);
                             std::string state = "RUNNING", details;
                             if (it == by_name.end()) {
                               state = "ERRORED";
                               details = "the kernel has no plugin '" + plugin
                                         + "' loaded (unloaded outside a deployment?)";
                             } else if (it->second->state() != "running") {
                               state = it->second->state() == "broken" ? "BROKEN" : "ERRORED";
                               details = "the kernel reports plugin '" + plugin + "' "
                                         + it->second->state()
                                         + (it->second->last_error().empty()
                                              ? ""
                                              : ": " + it->second->last_error());
                             }
                             if (state != c->state || (state != "RUNNING" && details != c->details))
                               set_state(*c, state, details);
                           }
                         });
}

void runner::edit_group(std::shared_ptr<job> j, std::function<void(YAML::Node&)> edit,
                        std::function<void(caf::error)> then) {
  if (j->is_rollback && fault_at("rollback_unset")) {
    then(grove::make_error(grove::errc::timeout,
                           "the test's fault: the rollback's set unanswered"));
    return;
  }
  auto wait = ++j->wait;
  // A compare-and-set on the version read: a v1 deployment (or an edit of the file) that
  // changes the group meanwhile makes the kernel refuse, and the edit is made again on
  // the group then in force (group_client::edit), so neither change is lost.
  auto read = std::make_shared<group::Group>();
  // A deployment's change is journaled before the set (prepare): kill -9 between the two,
  // or before the answer is journaled, leaves the change in the journal, and the resume
  // tells from the group in force whether it applied (begin).
  group_client::before_set prepare;
  // Its group and document go unused: edit calls prepare right after the compute below
  // returned that document, and the compute intend()ed the same pair into group_changed
  // (which this journals). The two go together.
  if (j->journal.write && !j->is_rollback)
    prepare = [j, alive = alive_](const group::Group&, const std::string&,
                                  std::function<void(caf::error)> go) {
      j->journal.write(j->previous, j->group_changed,
                       [go = std::move(go), alive](caf::error err) {
                         if (!*alive)
                           return;
                         if (err) // nothing changed by this one: the failure's rollback
                           err = grove::make_error(grove::errc::system_error,
                                                   "a change of the group could not be "
                                                   "journaled before it was set: "
                                                     + grove::message_of(err));
                         else
                           crash_point("group_journaled");
                         go(std::move(err));
                       });
    };
  group_client::edit(
    ctx_, j->timeout,
    [j, edit, read](const group::Group& g) -> caf::expected<std::string> {
      try {
        *read = g;
        auto node = grove::group_document(g);
        edit(node);
        auto document = grove::to_yaml(node); // quoted strings stay quoted
        // The change asked for, until its answer: what the journal keeps, and what a
        // timeout compares with the group in force (group_changes::settle).
        if (!j->is_rollback)
          j->group_changed.intend(g, document);
        return document;
      } catch (const std::exception& e) { // a config the kernel gave that is no YAML
        return grove::make_error(grove::errc::invalid_config,
                                 std::string{"the group in force could not be edited: "}
                                   + e.what());
      }
    },
    [this, j, wait, then, read, alive = alive_](caf::expected<group::Group> r) {
      if (!*alive || j->wait != wait)
        return;
      ++j->wait;
      if (j->is_rollback) {
        then(r ? caf::error{} : std::move(r.error()));
        return;
      }
      // What a rollback undoes: the entries that differ between the group this change was
      // computed on and the one the kernel then put in force (a compare-and-set: nobody
      // else's change lies between them), journaled before the job moves on.
      if (r && j->journal.write && fault_at("group_unanswered")) // set, but no answer
        r = grove::make_error(grove::errc::timeout, "the test's fault: no answer to the set");
      if (r) {
        if (j->journal.write)
          crash_point("group_set");
        j->group_changed.record(*read, *r);
        journal_group(j, then);
        return;
      }
      if (r.error() != grove::errc::timeout) { // refused: nothing changed
        j->group_changed.forget_pending();
        then(std::move(r.error()));
        return;
      }
      // No answer: the set may have applied. The group in force says whether what it
      // asked for is there (and the version moved on); what is, is the deployment's.
      auto err = std::make_shared<caf::error>(std::move(r.error()));
      auto wait2 = ++j->wait;
      group_client::get(
        ctx_, j->timeout,
        [this, j, wait2, then, err, alive](caf::expected<group::Group> now) {
          if (!*alive || j->wait != wait2)
            return;
          ++j->wait;
          if (fault_at("group_unanswered"))
            now = grove::make_error(grove::errc::timeout, "the test's fault: no group read");
          if (!now) {
            // Kept pending: the journal has it as prepare wrote it (nothing changed since,
            // so no write), and the deployment's end keeps that row (apply_outcome::
            // undecided) for the next start to decide (decide_left).
            ctx_.log().error("deployment: a change of the group timed out and the group "
                             "could not be read after it ({}): it stays journaled, "
                             "undecided",
                             grove::describe(now.error()));
            then(grove::make_error(grove::errc::timeout,
                                   grove::message_of(*err)
                                     + "; whether the change of the group applied could not "
                                       "be confirmed (the group could not be read after it: "
                                     + grove::message_of(now.error())
                                     + "), it stays journaled until the next start decides it"));
            return;
          }
          size_t meant = 0;
          auto applied = j->group_changed.settle(*now, false, &meant);
          ctx_.log().warn("deployment: a change of the group timed out; {} of its {} "
                          "entries recorded for a rollback as in force (group version {}; "
                          "all or none: a set applies whole)",
                          applied, meant, now->version());
          journal_group(j, [then, err](caf::error) { then(std::move(*err)); });
        });
    },
    std::move(prepare));
}

void runner::journal_group(std::shared_ptr<job> j, std::function<void(caf::error)> then) {
  if (!j->journal.write) {
    then({});
    return;
  }
  j->journal.write(j->previous, j->group_changed,
                   [then = std::move(then), alive = alive_](caf::error err) {
                     if (!*alive)
                       return;
                     if (err) // the group changed: the failure's rollback undoes it from memory
                       err = grove::make_error(grove::errc::system_error,
                                               "the group was set, but what its rollback "
                                               "undoes could not be journaled: "
                                                 + grove::message_of(err));
                     then(std::move(err));
                   });
}

// Public component `name` configuring a plugin (the MQTT bridge: message_manager's
// `bridge`; shadow manager: the shadow plugin), its plan `p` (an empty name: it left the
// set): public_plugin_document of its merged configuration is given over the image
// profile's configuration of that plugin, which validates it; removed, the profile's
// configuration is back.
void runner::apply_public_config(std::shared_ptr<job> j, const std::string& name,
                                 const component_plan& p) {
  auto plugin = public_plugin(name);
  bool gone = p.name.empty();
  // Applied every time, "unchanged" or not: whether it is still in force is the plugin's
  // (a reload of it or of the profile), and a configure with the same document is a no-op.
  std::string document, ignored_note;
  if (!gone) {
    std::vector<std::string> ignored;
    document = public_plugin_document(name, p.configuration, thing_name_, &ignored)
                 .value_or(json{})
                 .dump();
    if (!ignored.empty()) {
      // Not an error (AWS's own keys among them): said in the log and the component's state.
      ignored_note = "configuration keys ignored (not the AWS component's, or not "
                     "implemented on Grove): ";
      for (size_t i = 0; i < ignored.size(); ++i)
        ignored_note.append(i ? ", " : "").append(ignored[i]);
      ctx_.log().warn("deployment: {}: {}", name, ignored_note);
    }
    std::lock_guard guard{mtx_};
    auto& slot = components_[name];
    if (!slot)
      slot = std::make_unique<component>();
    slot->plan = p;
    slot->stopped = false;
    slot->restored = false;
  }
  if (auto c = components_.find(name); c != components_.end())
    set_state(*c->second, gone ? "STOPPING" : "STARTING");
  auto wait = ++j->wait;
  control_client::configure_over_profile(
    ctx_, plugin, document, j->timeout,
    [this, j, name, plugin, gone, wait, ignored_note,
     alive = alive_](caf::expected<control::PluginInfo> info) {
      if (!*alive || j->wait != wait)
        return;
      ++j->wait;
      auto c = components_.find(name);
      // Removed while the plugin is not loaded: there is no configuration to take back.
      if (!info && gone && info.error() == grove::errc::unknown_plugin)
        info = control::PluginInfo{};
      if (!info) {
        auto why = plugin + " refused " + name + "'s configuration: "
                   + grove::describe(info.error());
        if (c != components_.end())
          set_state(*c->second, "ERRORED", why);
        finish(j, false, name + ": " + why);
        return;
      }
      if (gone) {
        std::lock_guard guard{mtx_};
        components_.erase(name);
      } else {
        if (c != components_.end())
          set_state(*c->second, "RUNNING", ignored_note);
        ++j->index;
      }
      step(j);
    });
}

void runner::apply_lambda(std::shared_ptr<job> j, const component_plan& p) {
  if (!start_in_group(j, p))
    return;
  auto name = p.name;
  auto config = p.configuration.dump(); // JSON is YAML
  edit_group(
    j,
    [name, config](YAML::Node& doc) {
      YAML::Node fn;
      fn["name"] = name;
      fn["config"] = YAML::Load(config);
      bool replaced = false;
      for (auto f : doc["functions"])
        if (f["name"].as<std::string>() == name) {
          f["config"] = fn["config"];
          replaced = true;
        }
      if (!replaced)
        doc["functions"].push_back(fn);
    },
    [this, j, name](caf::error err) {
      auto it = components_.find(name);
      if (it == components_.end())
        return;
      if (err) {
        set_state(*it->second, "ERRORED", "group: " + grove::describe(err));
        finish(j, false, name + " " + it->second->plan.version
                           + ": the kernel refused the group with its function: "
                           + grove::describe(err));
        return;
      }
      wait_function(j, name, std::chrono::steady_clock::now() + j->timeout);
    });
}

void runner::wait_function(std::shared_ptr<job> j, std::string name,
                           std::chrono::steady_clock::time_point deadline) {
  // function_runtime takes the group from the kernel's event, queued to it before the
  // kernel answered the set: a list asked now comes after it.
  using list_rpc = function_runtime::list_rpc;
  list_rpc rpc{std::string{function_runtime::list_topic}};
  auto wait = ++j->wait;
  ctx_.call(rpc.encode(fn::ListRequest{}), std::chrono::seconds{10},
            [this, j, name, deadline, wait, alive = alive_](caf::expected<Envelope> reply) {
              if (!*alive || j->wait != wait)
                return;
              ++j->wait;
              auto it = components_.find(name);
              if (it == components_.end())
                return;
              auto& c = *it->second;
              auto list = list_rpc::decode(std::move(reply));
              std::string why = list ? "function_runtime does not list it" : grove::describe(list.error());
              if (list)
                for (const auto& f : list->functions()) {
                  if (f.name() != name)
                    continue;
                  // A refused definition: no definition at all, or the previous one kept
                  // with the refusal (naming functions[<name>]) as its last error.
                  bool refused = !f.valid()
                                 || f.last_error().find("functions[" + name + "]")
                                      != std::string::npos;
                  if (!refused) {
                    set_state(c, "RUNNING");
                    ++c.generation;
                    ++j->index;
                    step(j);
                    return;
                  }
                  set_state(c, "ERRORED", f.last_error());
                  finish(j, false, name + " " + c.plan.version
                                     + ": function_runtime refused its definition: "
                                     + f.last_error());
                  return;
                }
              bool no_runtime = !list && list.error() == grove::errc::no_route;
              if (no_runtime)
                why = "function_runtime is not running (nothing serves "
                      + std::string{function_runtime::list_topic} + ")";
              if (!no_runtime && std::chrono::steady_clock::now() < deadline) {
                ctx_.after(std::chrono::milliseconds{100}, [this, j, name, deadline, alive] {
                  if (*alive)
                    wait_function(j, name, deadline);
                });
                return;
              }
              set_state(c, "ERRORED", why);
              finish(j, false, name + " " + c.plan.version
                                 + ": its function did not come up under function_runtime: "
                                 + why);
            });
}

void runner::apply_model(std::shared_ptr<job> j, const component_plan& p) {
  auto* started = start_in_group(j, p);
  if (!started)
    return;
  auto& c = *started;
  auto name = p.name;
  auto res = model_resource(p);
  if (!res) {
    set_state(c, "ERRORED", grove::message_of(res.error()));
    finish(j, false, name + " " + p.version + ": " + grove::message_of(res.error()));
    return;
  }
  auto version = p.configuration.value(std::string{ml_inference::model_resource_key},
                                       json::object())
                   .value("version", p.version);
  edit_group(
    j,
    [name, config = *res](YAML::Node& doc) {
      YAML::Node r;
      r["id"] = name;
      r["config"] = YAML::Load(config);
      bool replaced = false;
      for (auto x : doc["resources"])
        if (x["id"].as<std::string>() == name) {
          x["config"] = r["config"];
          replaced = true;
        }
      if (!replaced)
        doc["resources"].push_back(r);
    },
    [this, j, name, version](caf::error err) {
      auto it = components_.find(name);
      if (it == components_.end())
        return;
      if (err) {
        set_state(*it->second, "ERRORED", "group: " + grove::describe(err));
        finish(j, false, name + " " + it->second->plan.version
                           + ": the kernel refused the group with its model: "
                           + grove::describe(err));
        return;
      }
      wait_model(j, name, version, std::chrono::steady_clock::now() + j->timeout);
    });
}

void runner::wait_model(std::shared_ptr<job> j, std::string name, std::string version,
                        std::chrono::steady_clock::time_point deadline) {
  // ml_inference takes the group from the kernel's event, queued to it before the kernel
  // answered the set: ml-2 asked now shows the load it began (loading) or its outcome.
  ml_inference::models_rpc rpc{std::string{ml_inference::models_topic}};
  auto wait = ++j->wait;
  ctx_.call(rpc.encode(ml::ModelsRequest{}), std::chrono::seconds{10},
            [this, j, name, version, deadline, wait,
             alive = alive_](caf::expected<Envelope> reply) {
              if (!*alive || j->wait != wait)
                return;
              ++j->wait;
              auto it = components_.find(name);
              if (it == components_.end())
                return;
              auto& c = *it->second;
              auto list = ml_inference::models_rpc::decode(std::move(reply));
              std::string why = list ? "ml_inference does not list it" : grove::describe(list.error());
              if (list)
                for (const auto& m : list->models()) {
                  if (m.id() != name || m.loading())
                    continue;
                  if (m.state() == ml::ModelInfo::SERVING && m.version() == version
                      && m.error().empty()) {
                    set_state(c, "RUNNING");
                    ++c.generation;
                    ++j->index;
                    step(j);
                    return;
                  }
                  // FAILED, or the previous version serving on with the new one's error.
                  auto reason = m.error().empty() ? "version " + m.version() + " serves, not "
                                                      + version
                                                  : m.error();
                  set_state(c, "ERRORED", reason);
                  finish(j, false, name + " " + c.plan.version
                                     + ": ml_inference could not load the model: " + reason);
                  return;
                }
              bool no_plugin = !list && list.error() == grove::errc::no_route;
              if (no_plugin)
                why = "ml_inference is not running (nothing serves "
                      + std::string{ml_inference::models_topic} + ")";
              if (!no_plugin && std::chrono::steady_clock::now() < deadline) {
                ctx_.after(std::chrono::milliseconds{100},
                           [this, j, name, version, deadline, alive] {
                             if (*alive)
                               wait_model(j, name, version, deadline);
                           });
                return;
              }
              set_state(c, "ERRORED", why);
              finish(j, false, name + " " + c.plan.version
                                 + ": its model did not come up under ml_inference: " + why);
            });
}

void runner::finish(std::shared_ptr<job> j, bool ok, std::string reason) {
  if (j->background) // a restart outside a deployment
    return;
  // A run this job started that is BROKEN already (before the last step ended) fails it
  // now; the others are watched until their timeout (see apply).
  for (const auto& [name, run] : j->runs) {
    auto it = components_.find(name);
    if (ok && !j->is_rollback && it != components_.end() && it->second->generation == run.first
        && it->second->state == "BROKEN") {
      ok = false;
      reason = name + " " + it->second->plan.version + ": run went BROKEN (3 errors) while "
               "the deployment applied: " + it->second->details;
    }
  }
  if (ok && !j->is_rollback && j->late && !j->runs.empty())
    watch_ = watch{j, j->runs};
  if (!ok && j->rollback && !j->is_rollback) {
    // The set before goes back: components the failed one added or changed stop, the
    // previous versions and configurations start again.
    ctx_.log().warn("deployment: {}; rolling back to the previous set ({} components)", reason,
                    j->previous.size());
    auto back = std::make_shared<job>();
    back->plan = j->previous;
    back->is_rollback = true;
    back->booted = j->booted; // BootstrapOnRollback: only those whose bootstrap ran
    bool undecided = j->group_changed.pending(); // whether it applied is unknown
    if (undecided)
      back->group_undo_error = "a change of the group whose outcome could not be checked "
                               "is not undone (the next start decides it)";
    if (!j->group_changed.empty())
      back->group_undo = std::move(j->group_changed); // first, then the components
    back->timeout = j->timeout;
    back->done = [j, reason, undecided, b = back.get()](apply_outcome o) { // b: the caller
      o.ok = false;
      o.rolled_back = true;
      o.undecided = undecided;
      o.reason = reason + (o.reason.empty() ? "" : "; the rollback failed too: " + o.reason);
      if (!b->group_undo_error.empty()) { // not a complete rollback
        o.rolled_back = false;
        o.reason += "; the group changes could not be undone: " + b->group_undo_error;
      }
      j->done(std::move(o));
    };
    // Components of the failed set that the previous one does not have are dropped.
    begin(back);
    return;
  }
  auto done = std::move(j->done);
  j->done = nullptr;
  busy_ = false;
  if (current_ == j)
    current_.reset();
  j->proc_wait.clear();
  changed(); // components the job removed
  if (done)
    done(apply_outcome{ok, reason, false, !ok && !j->is_rollback && j->group_changed.pending(),
                       !ok && !j->interrupted.empty(), ok ? j->notes : std::string{}});
  if (!busy_ && !pending_.empty()) {
    auto next = pending_.front();
    pending_.pop_front();
    busy_ = true;
    begin(next);
  }
}

} // namespace grove::deployment
