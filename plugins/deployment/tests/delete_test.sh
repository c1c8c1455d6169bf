#!/usr/bin/env bash
# DeleteDeployment does not change what the core runs (issue 15): groved runs the
# deployment plugin (thing core-1 in thing group site); boto3 (delete_test.py) deploys to
# the thing twice and deletes the second deployment, groved restarts, a deployment to the
# group and a failing one to the thing follow, then groved is killed with -9: each time the
# deleted deployment's components run (see delete_test.py).
# Usage: delete_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
PY=/usr/bin/python3
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-deployment-delete "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}" "$PY" openssl
# grove_test_lib.sh's exit cleanup kills groved (-9) first; what the components started dies with it.
# shellcheck disable=SC2317  # invoked from the EXIT trap (grove_test_lib.sh's)
test_cleanup() {
  kill_components
}

start_deployment_alone "thing_groups: [site]"
run_py() { run_phase "$HERE/delete_test.py" "$1" "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK/var"; }
run_py first        # D1, D2, D2 deleted
stop_groved
launch_deployment "groved did not come back after a restart"
run_py restarted    # the deleted D2's set runs again, kept by a group deployment, rolled back to
stop_groved KILL
launch_deployment "groved did not come back after kill -9"
run_py rolled-back  # the rolled-back set runs again
check "groved and the deployment plugin still run" status_matches "deployment .* running" 1
[[ $FAILED == 0 ]] || { echo "--- groved output"; grep -i "deployment" "$WORK/groved.out" | tail -n 80; }
finish
