#!/usr/bin/env bash
# kill -9 of groved in the middle of a deployment, at each of the runner's crash points
# (issue 15): groved runs the deployment plugin (may_control_plugins) and heartbeat from
# its profile; for each point it is launched with GROVE_DEPLOYMENT_CRASH_AT (tests only:
# groved kills itself with SIGKILL there), boto3 (crash_test.py) creates a deployment that
# changes the set (one component upgraded or downgraded, one removed, one added; a plugin
# configured), groved dies at the point, and once launched again without the variable the
# deployment's end, ListInstalledComponents' exact set, the components' exact processes
# and the kernel's plugin configuration are checked. Points: stopped (the old versions
# stopped, the new not started), startup (its service left running), configure (the
# kernel configured heartbeat, the runner not told), load (kv), bootstrap (it ran, not
# journaled), rollback (a failed deployment's rollback restoring the set before it),
# reload (the kernel hot-reloaded heartbeat to a recipe's own build).
# Usage: crash_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
PY=/usr/bin/python3
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-deployment-crash "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}" "$PY"
# shellcheck disable=SC2317  # invoked from the EXIT trap (grove_test_lib.sh's)
test_cleanup() {
  kill_components
}
# The checks read every component process's environment (/proc/<pid>/environ), and the
# start's kill of what a dead groved's components left needs the same: root.
[[ $(id -u) == 0 ]] || { echo "SKIP: reading the components' environments needs root"; exit 77; }
make_server_pki
# grove.heartbeat 2.0.0 carries its own build (another file than the plugin directory's).
heartbeat_builds "$WORK/local"
PORT=$(free_port)
cat >"$WORK/profile.yaml" <<YAML
kernel:
  log_level: info
plugins:
  - name: heartbeat
    config: {interval_ms: 100, topic: e2e/beat}
  - name: deployment
    may_control_plugins: true
    config:
$(API_PORT=$PORT PKI=$WORK/pki deployment_config "artifacts_file_dir: $WORK/local")
YAML
export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET
run_py() {
  run_phase "$HERE/crash_test.py" "$1" "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK/var" "$GROVECTL"
}
# point AT PHASE: groved launched with GROVE_DEPLOYMENT_CRASH_AT=AT, phase PHASE (the
# deployment created), groved's SIGKILL at the point, PHASE_crashed, groved launched again,
# PHASE_after.
point() {
  GROVE_DEPLOYMENT_CRASH_AT=$1 launch_deployment "groved did not start with GROVE_DEPLOYMENT_CRASH_AT=$1"
  local failures_before=$FAILED
  run_py "$2"
  [[ $FAILED == "$failures_before" ]] || abort "the deployment to kill groved in was not created"
  crashed
  check "groved killed itself at $1 (exit $RC)" test "$RC" == 137
  run_py "$2_crashed"
  launch_deployment "groved did not come back after the kill at $1"
  run_py "$2_after"
  stop_groved
}
point stopped stopped
point startup:e2e.S startup
point configure:grove.heartbeat plugin
point load:grove.kv load
point bootstrap:e2e.Boot bootstrap
point rollback:e2e.A rollback
point reload:grove.heartbeat reload
logged_times "each kill resumed its deployment (7 resumes logged)" 7 \
  "deployment: resuming with the journaled set before it"
[[ $FAILED == 0 ]] || { echo "--- groved output"; grep -i "deployment\|heartbeat" "$WORK/groved.out" | tail -n 80; }
finish
