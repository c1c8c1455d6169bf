#!/usr/bin/env bash
# Generic components' life cycle steps (issue 15): groved runs the deployment plugin over
# TLS (broken_error_window 6 s); boto3 (lifecycle_test.py) deploys components whose
# startup leaves a service (stopped by shutdown, then ended, on an upgrade and a removal),
# a run stopped after its shutdown, a privileged install beside a runWith.posixUser run,
# an artifact with Permission Execute run directly, a run outliving its Timeout and one
# failing more slowly than three errors within the window; groved is then killed with -9
# and the same set must come back without its install running again; after a hot reload
# the startup's services are the new instance's to stop; last, groved again with
# allow_privileged_components: false refuses a RequiresPrivilege install; last, a
# component writing past component_log_max_bytes (4096 here) has its log rotated.
# Usage: lifecycle_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
PY=/usr/bin/python3
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-deployment-lifecycle "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}" "$PY" openssl
# shellcheck disable=SC2317  # invoked from the EXIT trap (grove_test_lib.sh's)
test_cleanup() {
  # What the components started (their services included) dies with the test.
  kill_components
}
# runWith.posixUser and RequiresPrivilege switch users: only root can.
[[ $(id -u) == 0 ]] || { echo "SKIP: switching users needs root"; exit 77; }

# nobody (runWith.posixUser) reaches its work directory under $WORK (mktemp's 0700).
chmod 0711 "$WORK"
mkdir -p "$WORK/local"
printf '#!/bin/sh\necho tool ran > "$1"\n' >"$WORK/local/tool.sh"
chmod 0644 "$WORK/local/tool.sh"
start_deployment_alone "artifacts_file_dir: $WORK/local" "broken_error_window: 6" \
  "component_log_max_bytes: 4096" "component_log_files: 2"
run_py() { run_phase "$HERE/lifecycle_test.py" "$1" "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK/var" "$WORK/local"; }
run_py first       # every step's rule; the last deployment keeps Daemon 2.0.0 and Priv
stop_groved KILL
launch_deployment "groved did not come back after kill -9"
run_py restarted   # the set back, install not again
"$GROVECTL" reload deployment >"$WORK/reload.out" 2>&1
check "grovectl reload deployment -> exit 0" bash -c '[[ $0 == 0 ]]' "$?"
status_matches "deployment .* running" || abort "the deployment plugin did not come back"
run_py reloaded    # Daemon's services handed over; its removal runs its shutdown, ends them
stop_groved
# The operator withdraws consent to privileged steps.
sed -i 's/^\(      \)thing_name: core-1$/&\n\1allow_privileged_components: false/' "$WORK/profile.yaml"
grep -q "allow_privileged_components: false" "$WORK/profile.yaml" || abort "the profile did not take allow_privileged_components"
launch_deployment "groved did not come back with allow_privileged_components: false"
run_py unprivileged  # a RequiresPrivilege step refused: its deployment FAILED, rolled back
run_py skipif      # Skipif onpath / exists, holding and not
run_py logs        # a component's log rotated at component_log_max_bytes, made again after rm
check "groved and the deployment plugin still run" status_matches "deployment .* running" 1
[[ $FAILED == 0 ]] || { echo "--- groved output"; grep -i "deployment" "$WORK/groved.out" | tail -n 80; }
finish
