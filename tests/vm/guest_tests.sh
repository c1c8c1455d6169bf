#!/usr/bin/env bash
# Inside cgroup_v2_vm_test's VM (root, cgroup2 alone at /sys/fs/cgroup): lays the cgroups
# out as Debian 12's systemd does for a service with Delegate=yes (the controllers enabled
# down to /system.slice, so /system.slice/grove.service is offered them and may write its
# own subtree_control, its processes in it), then runs each inner test in a fresh
# grove.service cgroup, writing "<name> <exit code> <seconds> <skipped 0|1>" to
# OUT/results and its output to OUT/<name>.log and the console.
# Usage: guest_tests.sh BUILD_DIR OUT_DIR FUNCTION_RUNTIME_TEST
set -u
BUILD=$1 OUT=$2 FN_TEST=$3
CG=/sys/fs/cgroup
CONTROLLERS="+cpuset +cpu +io +memory +pids"

fail_all() { echo "guest: $*"; exit 1; }
[[ -f $CG/cgroup.controllers ]] || fail_all "no cgroup2 at $CG"
grep -q "^cgroup " /proc/mounts && fail_all "a cgroup v1 hierarchy is mounted"
# PID 1's own scope, as systemd's init.scope; the root then hands its controllers down.
mkdir -p $CG/init.scope $CG/system.slice
echo $$ > $CG/init.scope/cgroup.procs || fail_all "cannot move into init.scope"
echo "$CONTROLLERS" > $CG/cgroup.subtree_control || fail_all "cannot enable $CONTROLLERS at the root"
echo "$CONTROLLERS" > $CG/system.slice/cgroup.subtree_control \
  || fail_all "cannot enable $CONTROLLERS in system.slice"
UNIT=$CG/system.slice/grove.service

# Removes a cgroup and everything below it, killing what is left (cgroup.kill, 5.14+).
remove_tree() {
  [[ -d $1 ]] || return 0
  echo 1 > "$1"/cgroup.kill 2>/dev/null
  local i
  for i in $(seq 50); do
    find "$1" -depth -type d -exec rmdir {} + 2>/dev/null
    [[ -d $1 ]] || return 0
    sleep 0.1
  done
  echo "guest: $1 stays: $(find "$1" -name cgroup.procs -exec cat {} + | tr '\n' ' ')"
}

run_inner() {  # run_inner NAME COMMAND...
  local name=$1; shift
  remove_tree "$UNIT"
  mkdir "$UNIT"
  echo "===== $name ($(date -u +%T), in ${UNIT#"$CG"}, offered: $(cat "$UNIT"/cgroup.controllers))"
  local t0 t1 rc skipped=0
  t0=$(date +%s.%N)
  # The test's processes start in the unit's cgroup, as a service's do.
  ( echo "$BASHPID" > "$UNIT"/cgroup.procs && cd /tmp && "$@" ) > "$OUT/$name.log" 2>&1 &
  local pid=$!
  tail -n +1 --pid=$pid -f "$OUT/$name.log" 2>/dev/null
  wait $pid; rc=$?
  t1=$(date +%s.%N)
  # What the test announces as skipped (its own words, Boost.Test's, ctest's) fails it here.
  # (--run_test's cases left out are "skipped because disabled": not a skip of theirs.)
  grep -v "skipped because disabled" "$OUT/$name.log" \
    | grep -Eq '^SKIP|is skipped because|\*\*\*Skipped|[Ss]kipped: |[:,] skipped$' && skipped=1
  ((rc == 77)) && skipped=1
  {
    echo "--- $name's cgroups at its end:"
    find "$UNIT" -mindepth 1 -type d | sed "s|^$CG||"
  } >> "$OUT"/layout
  remove_tree "$UNIT"
  awk -v n="$name" -v rc="$rc" -v t0="$t0" -v t1="$t1" -v s="$skipped" \
    'BEGIN { printf "%s %s %.1f %s\n", n, rc, t1 - t0, s }' | tee -a "$OUT"/results
}

export BOOST_TEST_LOG_LEVEL=test_suite   # each case's start, end and time, and skips
export BOOST_TEST_COLOR_OUTPUT=no

# A ctest test's own command, working directory and environment (ctest --show-only), run
# without ctest: its TIMEOUT is for a host, and under TCG the test takes many times that
# (the VM's own bound, GROVE_VM_TIMEOUT, is the limit here).
ctest_test() {  # ctest_test NAME [ARGUMENT...]: those added to its command
  local spec
  mapfile -d '' spec < <(python3 - "$BUILD" "$1" <<'PY'
import json, subprocess, sys
out = subprocess.check_output(["ctest", "--test-dir", sys.argv[1], "--show-only=json-v1",
                               "-R", "^%s$" % sys.argv[2]])
tests = json.loads(out)["tests"]
if len(tests) != 1:
    sys.exit("no ctest test named %s" % sys.argv[2])
props = {p["name"]: p["value"] for p in tests[0].get("properties", [])}
fields = [props.get("WORKING_DIRECTORY", "/tmp")] + list(props.get("ENVIRONMENT", []))
sys.stdout.write("\0".join(fields + ["--"] + tests[0]["command"]) + "\0")
PY
  ) || { echo "guest: no ctest test $1"; return 1; }
  local wd=${spec[0]} i envs=() cmd=()
  for ((i = 1; i < ${#spec[@]}; i++)); do
    [[ ${spec[i]} == -- ]] && break
    envs+=("${spec[i]}")
  done
  cmd=("${spec[@]:i+1}" "${@:2}")
  echo "guest: in $wd: ${envs[*]} ${cmd[*]}"
  cd "$wd" && exec env "${envs[@]}" "${cmd[@]}"
}

# grove::cgroup itself: the v2 cases (limits read back from the kernel, an OOM kill
# counted); its v1 cases would only say they are skipped.
run_inner cgroup_test ctest_test cgroup_test --run_test="\
the_hierarchy_is_found_as_proc_self_says:\
a_v2_group_takes_a_child_and_names_a_limit_it_cannot_take:\
a_v2_group_gets_its_limits_and_a_child_started_into_it:\
a_child_past_its_v2_memory_is_oom_killed_and_reported:\
errors_name_the_file_and_why"
run_inner deployment_freezer_test ctest_test deployment_freezer_test
# function_runtime's sandbox cases that make cgroups (limits, OOM, pids, spare groups,
# groups left by a killed groved, the v2 device program).
run_inner function_runtime_test_cgroups "$FN_TEST" --run_test="\
a_sandboxed_function_runs_as_its_user_as_pid_2_of_its_own_pid_and_uts_namespaces:\
a_fork_bomb_stops_at_the_pids_limit:\
a_memory_hog_is_reported_out_of_memory_and_replaced:\
a_container_function_keeps_one_spare_cgroup:\
a_python_fork_bomb_and_memory_hog_stop_at_their_limits:\
cgroups_left_by_a_killed_groved_are_removed_at_start:\
a_cgroup_v2_device_program_grants_devices_as_v1_does"
run_inner deployment_runtime_test ctest_test deployment_runtime_test
echo "guest: done"
