#!/usr/bin/env bash
# How deployments apply (issue 15): groved runs the deployment plugin (thing core-1 in
# thing group site); boto3 (apply_test.py) upgrades a dependency with a HARD and a SOFT
# dependant, lets a startup and an install outlive their Timeouts (each deployment FAILED
# and rolled back), and deploys a DELETED version and a clashing one (FAILED at once,
# nothing on the core changed; grovectl shows the same reason).
# Usage: apply_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
PY=/usr/bin/python3
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-deployment-apply "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}" "$PY" openssl
# shellcheck disable=SC2317  # invoked from the EXIT trap (grove_test_lib.sh's)
test_cleanup() {
  kill_components
}

start_deployment_alone "thing_groups: [site]"
export GROVECTL
run_py() { run_phase "$HERE/apply_test.py" "$1" "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK/var"; }
run_py upgrade     # Lib 1.0.0 -> 1.1.0: Service (HARD) restarted after it, Soft (SOFT) kept
run_py timeouts    # a startup and an install past their Timeouts: FAILED, rolled back
run_py resolution  # a DELETED version, a clash with the group's: FAILED at once, nothing changed
check "groved and the deployment plugin still run" status_matches "deployment .* running" 1
[[ $FAILED == 0 ]] || { echo "--- groved output"; grep -i "deployment" "$WORK/groved.out" | tail -n 60; }
finish
