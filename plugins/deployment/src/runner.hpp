#pragma once

// Runs the generic components of this core's deployments (issue 15, step 3): each
// component's life cycle (install once per version, then run or startup; shutdown on
// stop; setenv, timeout, skipif) as children of the SDK's grove::process (process group,
// parent-death signal), its output in `<write_dir>/logs/components/<name>.log`, its state
// NEW → INSTALLED → STARTING → RUNNING → STOPPING → FINISHED / ERRORED / BROKEN (a third
// error within the error window is BROKEN; a stop runs shutdown, then ends the run and
// what a startup left running). A set is applied in dependency order; a failure puts the
// previous set back when the deployment's policy is ROLLBACK, undoing only the
// deployment's own changes of the kernel's group (group_changes.hpp). A component named
// `grove.<plugin>` is one of Grove's plugins instead: loaded, reconfigured, hot-reloaded and
// unloaded through the kernel's control service (control_client.hpp), its state the
// kernel's. A Lambda component (ComponentType aws.greengrass.lambda) is a function of the
// kernel's group, run by function_runtime: added, replaced and removed through the
// kernel's `$grove/group/set`; so is a model component (its configuration has
// `localMachineLearningModelResourceData`): a model resource of the group whose file is
// the component's artifact, loaded by ml_inference. At run time a generic component that errors or goes BROKEN
// stops its HARD dependants (started again once it runs again), a run an apply started
// that goes BROKEN within its timeout fails that apply late, and configuration builds on
// what each component has (cumulative). A generic component's systemResourceLimits put its
// processes in a cgroup of its own (component_cgroups.hpp). After a restart of groved the
// journaled set comes back through the current deployment applied again, or, when the last
// deployment FAILED or was CANCELED, as it was (restart()). Everything but installed() and
// snapshot() runs on the plugin's actor.

#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "component_cgroups.hpp"
#include "component_freezer.hpp"
#include "held_process.hpp"
#include "grove/plugin.hpp"
#include "grove/process.hpp"
#include "grove/rotating_log.hpp"
#include "group_changes.hpp"
#include "render.hpp"

namespace grove::deployment {

/// The user and group of a runWith.posixUser (`user` or `user:group`; "" : groved's own).
caf::expected<std::pair<uid_t, gid_t>> posix_ids(const std::string& posix_user);

/// What the runner takes from the plugin's configuration (set_settings).
struct runner_settings {
  /// A component's third error within this of the first makes it BROKEN (Greengrass'
  /// nucleus: an hour); a deployment that starts it again starts the count again.
  std::chrono::seconds error_window{3600};
  /// Each component's log: the size it is rotated at and the rotated files kept
  /// (component_log_max_bytes, component_log_files).
  grove::rotating_log_limits log_limits{};
  /// Whether a life cycle step with `RequiresPrivilege: true` may run (as groved's user,
  /// root when groved runs as root, as Greengrass' nucleus runs it). Refused, such a step
  /// does not start: the component is ERRORED and its deployment fails, naming the
  /// plugin's `allow_privileged_components`.
  bool allow_privileged = true;
  /// The timeout of each of the start's reads of the group (checking the change of the
  /// group a resumed run journaled before kill -9; decide_left takes its own), tried at
  /// most three times.
  std::chrono::seconds start_read_timeout{10};
  /// Greengrass' `runWithDefault.posixUser` (`user` or `user:group`): the user of the
  /// steps of a component whose deployment gives no `runWith.posixUser` (its dependencies
  /// too), when groved is root; "" : groved's own user.
  std::string default_posix_user;
};

/// One component of a set to apply.
struct component_plan {
  /// ComponentName.
  std::string name;
  /// ComponentVersion.
  std::string version;
  /// Named by a deployment (not only a dependency).
  bool root = false;
  /// The recipe (JSON).
  nlohmann::json recipe;
  /// Its merged configuration.
  nlohmann::json configuration = nlohmann::json::object();
  /// runWith.posixUser, or the plugin's default_posix_user when the deployment gives none
  /// ("" : groved's user).
  std::string posix_user;
  /// runWith.systemResourceLimits (else the plugin's default_system_resource_limits).
  resource_limits limits;
  /// Where its artifacts are (`{artifacts:path}`) and unpacked (`{artifacts:decompressedPath}`).
  std::string artifacts_path, decompressed_path;
  /// Cumulative configuration (Greengrass' rule): when set, `configuration` is computed
  /// when the set is applied, as `update` (`configurationUpdate`) on top of the
  /// configuration the component has on this core (`defaults` when it has none). With
  /// `update_if_new`, `update` applies only to a component not installed yet (one another
  /// target's deployment named; only a deployment's own components take its update).
  bool cumulative = false;
  /// The recipe's DefaultConfiguration (cumulative only).
  nlohmann::json defaults = nlohmann::json::object();
  /// The configurationUpdate to apply (cumulative only; null: none).
  nlohmann::json update;
  /// See `cumulative`.
  bool update_if_new = false;
  /// In the set before an apply (what its rollback puts back) only: the component's
  /// function or model was another change's then (installed_record::foreign), so the
  /// rollback leaves the group's entry alone rather than set this plan over it.
  bool foreign = false;
};

/// A component as kept in the journal (ListInstalledComponents after a restart).
struct installed_record {
  /// Its plan (configuration: the effective one).
  component_plan plan;
  /// Its last state and details.
  std::string state, details;
  /// Last state change, ms since the epoch.
  int64_t changed_ms = 0;
  /// A Lambda or model component whose function or model is another change's (a rollback
  /// kept that version): a set without it leaves the group as it is.
  bool foreign = false;
  /// The version whose install ran and a digest of what it ran with ("" : none; see
  /// install_key in runner.cpp): install runs once per version and unchanged script,
  /// Setenv, posixUser and artifacts, also across restarts of groved.
  std::string installed_version;
  /// The same for the `bootstrap` step ("" : none ran): it runs once per version and
  /// unchanged script, Setenv and posixUser, also across restarts of groved.
  std::string bootstrapped_version;
};

/// What an apply journals so that its rollback survives `kill -9` (apply()).
struct apply_journal {
  /// Writes durably the set before the apply and its changes of the group so far, then
  /// calls `then` on the actor with the write's error (none: written). Called once the set
  /// before is known, before anything changes, and after every change of the group. A
  /// failed write fails the apply: before anything changed, without a rollback; after a
  /// change of the group, with its rollback (which undoes it from memory).
  std::function<void(const std::vector<component_plan>& previous, const group_changes& changes,
                     std::function<void(caf::error)> then)>
    write;
  /// What `write` kept for the same deployment in a run that `kill -9` cut short (a
  /// resume): the set before it and its group changes, which its rollback puts back and
  /// undoes instead of the set and changes of this run.
  std::optional<std::pair<std::vector<component_plan>, group_changes>> resumed;
};

/// A component as one instance of the plugin hands it to the next across a hot reload
/// (runner::hand_over, runner::adopt): its record, and, for a generic component whose
/// run or startup runs, its process kept with context::keep_process as
/// `component:<name>`.
struct handed_component {
  /// Its plan and state as the last instance had them.
  installed_record record;
  /// "run" or "startup" (the step its process is), "" when none.
  std::string main;
  /// Errors within the error window so far (the third is BROKEN).
  int errors = 0;
  /// The version whose install ran, with a digest of what it ran with (install_key).
  std::string installed_version;
  /// Its process was kept (keep_process) for the next instance.
  bool kept = false;
  /// The process group a startup that exited 0 left running (0: none).
  pid_t service_pgid = 0;
};

/// What became of an apply.
struct apply_outcome {
  /// Every component reached its state (RUNNING, or FINISHED for a run that ended 0).
  bool ok = false;
  /// Why not.
  std::string reason;
  /// The previous set was put back.
  bool rolled_back = false;
  /// A change of the group whose answer never came and that could not be checked after
  /// (the group could not be read): its journal row stays, to be decided at the next
  /// start (runner::decide_left).
  bool undecided = false;
  /// Ended by interrupt() (a newer deployment replaced it): not rolled back, `reason`
  /// says where it stopped.
  bool interrupted = false;
  /// Notes on an apply that ended ok (a bootstrap that asked for a restart of groved).
  std::string notes;
};

/// The runner (see the file comment).
class runner {
public:
  /// Runs components for `ctx`; work directories under `root` (`work/<name>`), logs
  /// under `log_dir`. What earlier runs of components left is killed, except the process
  /// groups in `spare` (processes the last instance handed over, see adopt) and the
  /// processes of the components in `spare_services` (the services their startups left,
  /// handed over too).
  runner(grove::context& ctx, std::filesystem::path root, std::filesystem::path log_dir,
         std::string thing_name, std::set<pid_t> spare = {},
         std::set<std::string> spare_services = {});

  /// Stops every component (shutdown scripts are not waited for).
  ~runner();

  /// The plugin's settings the runner follows (runner_settings); configure and the
  /// runner's making both hand them over whole.
  void set_settings(runner_settings s) {
    settings_ = std::move(s);
  }

  /// Extra environment variables of every life cycle process of a component, by its
  /// name, set before the recipe's Setenv (Greengrass IPC's socket and token:
  /// ipc_server::env).
  void set_extra_env(std::function<std::vector<std::string>(const std::string&)> f) {
    extra_env_ = std::move(f);
  }

  /// The cgroups components with systemResourceLimits run in; the error why there are
  /// none (such components then fail to start, saying so). Made on first use.
  caf::expected<component_cgroups*> cgroups();

  /// Makes `plan` (dependencies first) the running set: components not in it are
  /// stopped, changed ones (version or configuration) stopped and started again, new ones
  /// installed and started. `timeout` bounds each install and startup. On a failure with
  /// `rollback`, the set before is applied again. `done` gets the outcome.
  /// `late` gets a failure found after `done` said ok: a `run` the apply started that goes
  /// BROKEN within `timeout` of its start, before another apply begins (the set before is
  /// then put back when `rollback`). `journal` keeps what a rollback needs across
  /// `kill -9` (apply_journal).
  /// `tag` names the apply for interrupt() ("" : none).
  void apply(std::vector<component_plan> plan, bool rollback, std::chrono::seconds timeout,
             std::function<void(apply_outcome)> done,
             std::function<void(apply_outcome)> late = {}, apply_journal journal = {},
             std::string tag = {});

  /// Interrupts the apply tagged `tag` (a newer deployment to its target replaced it): one
  /// still waiting for its turn never begins; the running one stops at its next safe
  /// point: an install, bootstrap or startup it waits for is ended at once (the component
  /// FINISHED `interrupted: ...`, started again by the next apply that has it), a change
  /// through the kernel (plugin, group) is let end first. Either ends with `done` given
  /// apply_outcome::interrupted and `why`, without a rollback (the next apply starts from
  /// what it left). A rollback in progress is not interrupted. False: no such apply.
  bool interrupt(const std::string& tag, const std::string& why);

  /// Takes the components the journal kept (at start, before the first apply): listed with
  /// their last states until the current deployment, applied again, runs them.
  void restore(std::vector<installed_record> rows);

  /// Starts the components restore() took as they were (their versions and effective
  /// configurations, dependencies first), outside any deployment: what ran when the last
  /// deployment settled FAILED or CANCELED. Components journaled BROKEN or ERRORED, or
  /// stopped (FINISHED "stopped..."), and their HARD dependants keep their states and are
  /// not started, until a deployment brings them back. `done` gets the outcome (a failure
  /// is not rolled back).
  void restart(std::function<void(apply_outcome)> done);

  /// Decides the change of the group `left` journaled as pending by a deployment that
  /// ended before it could be checked (a FAILED one whose group could not be read, one
  /// never resumed), as a resume does (group_changes::settle on the group in force, read
  /// up to 3 times): applied iff every entry it meant is in force as asked. When applied
  /// and `undo` (the deployment's rollback owed it), it is undone (group_changes::undo, a
  /// compare-and-set). `whole`: every change in `left` counts, the recorded ones too
  /// (the run of a deployment canceled while it applied, cut short: its rollback never
  /// came), the pending one settled first. `done` gets what was decided (for the
  /// deployment's reason) once decided (and undone), else why not: it stays undecided.
  void decide_left(group_changes left, bool undo, bool whole, std::chrono::seconds timeout,
                   std::function<void(caf::expected<std::string>)> done);

  /// For a hot reload (the plugin's snapshot): every component's record, and the
  /// processes of generic components RUNNING handed to the next instance with
  /// context::keep_process (`component:<name>`); this runner no longer owns them.
  std::vector<handed_component> hand_over();

  /// After restore() of the records a hand_over gave: takes over the processes the last
  /// instance kept (`procs`, adopted by name): they run on (same pids) as RUNNING, their
  /// output goes on to their logs, and their exits are handled as this runner's own
  /// (recover, restart, BROKEN after three errors, HARD dependants). A component whose
  /// process ended meanwhile stays as restored: the next apply starts it.
  void adopt(const std::vector<handed_component>& handed,
             std::map<std::string, grove::process> procs);

  /// The Lambda components' names (their functions are theirs in the kernel's group).
  std::set<std::string> lambda_components() const;

  /// The model components' names (their model resources are theirs in the kernel's group).
  std::set<std::string> model_components() const;

  /// A component's UpdateState (Greengrass IPC), on the actor: RUNNING from a startup
  /// still running makes it RUNNING (its deployment goes on); ERRORED from a running
  /// process ends it as an error (recover, restart, BROKEN after three). Others: nothing.
  void report_state(const std::string& name, const std::string& state);

  /// Why a PauseComponent or ResumeComponent is refused: an IPC error shape and its
  /// message, as Greengrass' nucleus answers.
  struct control_refusal {
    std::string shape;
    std::string message;
  };

  /// PauseComponent (`pause`) or ResumeComponent of component `name` (Greengrass IPC), on
  /// the actor: every process of a generic component RUNNING frozen (component_freezer),
  /// or thawed. It stays RUNNING (as Greengrass reports it); a pause of a paused one is
  /// no error (as Greengrass). Refused: ResourceNotFoundError (no such component),
  /// InvalidArgumentsError (not a generic component, not running, not paused),
  /// ServiceError (the freezer failed). A stop, a run's Timeout, a new state, a hot
  /// reload's hand-over and this runner's end resume it first.
  std::optional<control_refusal> control(const std::string& name, bool pause);

  /// Every component with its effective configuration and state, for the journal.
  std::vector<installed_record> snapshot() const;

  /// Called (on the actor) when a component's state, plan or the set changes.
  void on_change(std::function<void()> f) {
    on_change_ = std::move(f);
  }

  /// ListInstalledComponents' entries; thread-safe.
  nlohmann::json installed() const;

  /// The plugin a component stands for (`grove.heartbeat` → `heartbeat`), or "".
  static std::string plugin_of(const std::string& component);

  /// The library a plugin component runs: the recipe's artifact `lib<plugin>.so` (in the
  /// component's `{artifacts:path}`) when its manifest carries one, else
  /// `<plugin_dir>/lib<plugin>.so`.
  static std::string plugin_library(const component_plan& p, const std::string& plugin_dir);

private:
  std::function<std::vector<std::string>(const std::string&)> extra_env_;
  struct component;
  struct job;

  void begin(std::shared_ptr<job> j);
  void begin_changes(std::shared_ptr<job> j);
  // A resume: settles the change of the group journaled before kill -9 on the group in
  // force (read up to `tries` times), then `then`; fails the job when it cannot be read.
  void settle_resumed(std::shared_ptr<job> j, int tries, std::function<void()> then);
  void step(std::shared_ptr<job> j);
  // What undo_group did: the group set (or why not), its notes, the functions and
  // resources left at another change's version, how many entries it put back, and
  // none_left: nothing was left to undo, so nothing was set.
  struct group_undone {
    caf::expected<group::Group> set{group::Group{}};
    std::vector<std::string> notes, kept;
    size_t undone = 0;
    bool none_left = false;
  };
  // Undoes `changes` on the group in force (group_changes::undo, a compare-and-set).
  void undo_group(std::chrono::seconds timeout, group_changes changes,
                  std::function<void(group_undone)> then);
  void decide_read(std::shared_ptr<group_changes> left, bool undo, bool whole,
                   std::chrono::seconds timeout, int tries,
                   std::function<void(caf::expected<std::string>)> done);
  void finish(std::shared_ptr<job> j, bool ok, std::string reason);
  std::string explain(const component& c, const grove::process_exit& e, uint64_t oom_before);
  // Stops a generic component: shutdown, then its processes (stop_work); returns at once.
  // STOPPING until its processes are gone, then FINISHED with `details`.
  void stop_component(const std::string& name, const std::string& details = "stopped");
  // What a stop still has to end: the run's process, the group a startup left, and every
  // process carrying the component's name, signalled once shutdown ended, killed after
  // `grace`.
  struct stop_work {
    std::string name;
    grove::process main;
    pid_t service = 0;
    // The component's generation when stopped, and its FINISHED details once done.
    uint64_t generation = 0;
    std::string details;
    std::chrono::milliseconds grace{3000};
    std::chrono::steady_clock::time_point deadline;
    bool signalled = false;
    // poll_stop's next wait: 2 ms, doubled up to 100 (most processes end within
    // milliseconds of SIGTERM; a fixed 100 ms made every stop, and so every upgrade, wait).
    std::chrono::milliseconds poll{2};
  };
  void end_stop(std::shared_ptr<stop_work> w);
  void poll_stop(std::shared_ptr<stop_work> w);
  // The processes of this runner's component `name` (by their environment, see spawn).
  std::vector<held_process> component_pids(const std::string& name) const;
  void start_component(std::shared_ptr<job> j, component_plan p);
  // start_component's `bootstrap` step, when it has to run: true when it began (the
  // install follows once it ends, see install_component).
  bool bootstrap_component(std::shared_ptr<job> j, const std::string& name);
  void install_component(std::shared_ptr<job> j, const std::string& name);
  // The component whose bootstrap or install process (waited for as `wait`, started at
  // generation `gen`) exited, its process and the job's wait done with; nullptr when the
  // exit is stale (the job moved on, the component was stopped or restarted).
  component* step_exited(const std::shared_ptr<job>& j, const std::string& name, uint64_t gen,
                         uint64_t wait);
  // Ends `name`'s `step` (bootstrap, install) still waited for after `limit`: ERRORED,
  // the job failed.
  void step_deadline(std::shared_ptr<job> j, const std::string& name, uint64_t gen,
                     uint64_t wait, std::chrono::seconds limit, std::string step);
  // A run of a watched apply went BROKEN: reported to it late (see apply).
  void broken_late(const std::string& name, uint64_t gen, const std::string& why);
  void run_main(std::shared_ptr<job> j, const std::string& name);
  void main_exited(std::shared_ptr<job> j, const std::string& name, uint64_t gen, uint64_t wait,
                   bool is_startup, const grove::process_exit& e);
  // main_exited once `why` (empty: from `e`) says why it ended.
  void main_exited_as(std::shared_ptr<job> j, const std::string& name, uint64_t gen,
                      uint64_t wait, bool is_startup, const grove::process_exit& e,
                      std::string why);
  void apply_plugin(std::shared_ptr<job> j, const component_plan& p);
  void plugin_actions(std::shared_ptr<job> j, std::string name, std::string todo);
  void settle_plugin(std::shared_ptr<job> j, const std::string& name);
  void refresh_plugins();
  // The record of a component the kernel runs, made or reused, with `p` as its plan.
  component& take_plan(const component_plan& p);
  // A Lambda or model component's start: nothing when it is unchanged (version and
  // configuration), RUNNING and not restored (the job has stepped on), else its record
  // (take_plan) set STARTING.
  component* start_in_group(std::shared_ptr<job> j, const component_plan& p);
  void apply_lambda(std::shared_ptr<job> j, const component_plan& p);
  void apply_model(std::shared_ptr<job> j, const component_plan& p);
  void apply_public_config(std::shared_ptr<job> j, const std::string& name,
                           const component_plan& p);
  void wait_model(std::shared_ptr<job> j, std::string name, std::string version,
                  std::chrono::steady_clock::time_point deadline);
  void wait_function(std::shared_ptr<job> j, std::string name,
                     std::chrono::steady_clock::time_point deadline);
  void edit_group(std::shared_ptr<job> j, std::function<void(YAML::Node&)> edit,
                  std::function<void(caf::error)> then);
  // The job's group changes journaled (apply_journal::write), then `then` (the write's
  // error, if any).
  void journal_group(std::shared_ptr<job> j, std::function<void(caf::error)> then);
  void set_state(component& c, const std::string& state, const std::string& details = "");
  // Thaws `c` when it is paused (control), saying `why`.
  void unpause(component& c, const char* why);
  component_freezer& freezer();
  // Removes `name`'s freeze leaves (component_freezer::remove) once its processes are gone:
  // now, else every 100 ms, `tries` times (a process just killed leaves its cgroup a moment
  // later; one that lives on there keeps the leaf until the stop, or the next start).
  void drop_freeze_leaves(const std::string& name, int tries = 20);
  caf::expected<grove::process> spawn(component& c, const std::string& script,
                                      const nlohmann::json& step_env, bool privileged,
                                      grove::process_callbacks cb);
  render_context render_ctx() const;
  std::vector<std::string> hard_dependants(const std::string& name) const;
  void stop_dependants(const std::string& name, const std::string& why);
  void changed();

  grove::context& ctx_;
  std::filesystem::path root_;
  std::filesystem::path log_dir_;
  std::string thing_name_;
  mutable std::mutex mtx_; // guards the states installed() reads
  std::map<std::string, std::unique_ptr<component>> components_;
  std::vector<std::string> order_;               // the applied set, dependencies first
  std::deque<std::shared_ptr<job>> pending_;     // deployments waiting for this one
  // Components whose stop has not ended yet, with what waits for it (a new start).
  std::map<std::string, std::vector<std::function<void()>>> stopping_;
  bool busy_ = false;
  // The last apply that ended ok, with the runs it started (name → generation, start):
  // one that goes BROKEN within its timeout fails it late (see apply).
  struct watch {
    std::shared_ptr<job> j;
    std::map<std::string, std::pair<uint64_t, std::chrono::steady_clock::time_point>> runs;
  };
  std::optional<watch> watch_;
  // Watches of applies a newer one followed (begin): a run of theirs that goes BROKEN
  // within its timeout is still reported to them (late), but not rolled back.
  std::vector<watch> replaced_watches_;
  std::shared_ptr<job> current_; // the apply running (interrupt)
  std::function<void()> on_change_;
  runner_settings settings_; // see set_settings
  std::unique_ptr<component_cgroups> cgroups_; // see cgroups()
  std::string cgroups_error_;
  std::unique_ptr<component_freezer> freezer_; // see freezer()
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

} // namespace grove::deployment
