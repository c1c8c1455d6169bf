#!/usr/bin/env bash
# Generic components' resource limits and restarts after a deployment that did not
# complete (issue 15): groved runs the deployment plugin over TLS; boto3 (runtime_test.py)
# deploys components with runWith.systemResourceLimits (checked in their processes'
# cgroups; one allocating past its memory is killed and reported out of memory), then
# groved is killed with -9 after a FAILED ROLLBACK deployment, after a FAILED DO_NOTHING
# one and after a CANCELED one, and each restart must bring back exactly the set that ran.
# Usage: runtime_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
PY=/usr/bin/python3
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-deployment-runtime "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}" "$PY" openssl
# grove_test_lib.sh's exit cleanup kills groved (-9) first; GROVED_PID is still the last one's.
# shellcheck disable=SC2317  # invoked from the EXIT trap (grove_test_lib.sh's)
test_cleanup() {
  # What the components started dies with the next groved; here, with the test.
  kill_components
  # The last groved's component cgroups (a next groved would remove them; none may come).
  if [[ -n "$GROVED_PID" ]]; then
    sleep 0.2
    for d in /sys/fs/cgroup/*/grove-components-"$GROVED_PID" \
             /sys/fs/cgroup/*/*/*/grove-components-"$GROVED_PID" \
             /sys/fs/cgroup/*/*/grove-components-"$GROVED_PID"; do
      [[ -d $d ]] || continue
      rmdir "$d"/*/ 2>/dev/null
      rmdir "$d" 2>/dev/null
    done
  fi
}
[[ $(id -u) == 0 ]] || { echo "SKIP: cgroups need root"; exit 77; }

start_deployment_alone "default_system_resource_limits: {cpus: 1.5}   # for what a deployment leaves out" \
  "thing_groups: [site]"
run_py() { run_phase "$HERE/runtime_test.py" "$1" "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK/var"; }
run_py first              # limits; a FAILED ROLLBACK deployment (out of memory)
stop_groved KILL
launch_deployment "groved did not come back after kill -9"
run_py rolled-back        # the rolled-back set runs again; a FAILED DO_NOTHING deployment
stop_groved KILL
launch_deployment "groved did not come back after the second kill -9"
run_py partial            # the partially applied set runs again; a deployment canceled
stop_groved KILL
launch_deployment "groved did not come back after the third kill -9"
run_py canceled           # what the canceled deployment left runs again
logged_times "the three restarts started the journaled set (no current deployment to apply again)" \
  3 "the journaled set runs again as it was"
check "groved and the deployment plugin still run" status_matches "deployment .* running" 1
[[ $FAILED == 0 ]] || { echo "--- groved output"; grep -i "deployment" "$WORK/groved.out" | tail -n 80; }
finish
