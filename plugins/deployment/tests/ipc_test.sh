#!/usr/bin/env bash
# Greengrass IPC for generic components (issue 15): groved runs the deployment plugin
# with the shadow plugin; boto3 (ipc_test.py) deploys two Node components speaking IPC through AWS's own
# client (aws-iot-device-sdk-v2's greengrasscoreipc, tests/devices, ipc_component.js):
# local publish/subscribe between them under their accessControl and with Grove's bus
# (grovectl sub/pub), GetConfiguration,
# UpdateState, a NOTIFY_COMPONENTS update deferred once, a SKIP_NOTIFY_COMPONENTS one not
# announced, a configuration REJECTED by the component failing its deployment; raw
# clients with a wrong token and a malformed frame are refused without harm. Shadow
# operations reach the shadow plugin under the component's ShadowManager accessControl,
# and are ServiceError once the shadow plugin is unloaded; UpdateConfiguration and
# SubscribeToConfigurationUpdate (own and another component's configuration), the
# changes still in force after kill -9 of groved; `grovectl reload deployment` keeping the
# components' connections (subscriptions, GetConfiguration, tokens); PauseComponent /
# ResumeComponent (frozen, resumed, refusals; resumed by a hot reload's hand-over, thawed
# after kill -9 of groved). ctest runs it also with GROVE_DEPLOYMENT_FREEZER=v2 and =signal
# (tests only: groved inherits it) so that cgroup v2's freezer and the SIGSTOP fallback
# are each exercised on a host that has a v1 freezer.
# Usage: ipc_test.sh GROVED GROVECTL GROVE_CERTS DEVICES_DIR
set -u

HERE=$(dirname "$(readlink -f "$0")")
PY=/usr/bin/python3
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-deployment-ipc "${1:?usage: $0 groved grovectl grove-certs devices-dir}" "${2:?}" "${3:?}" "$PY" openssl node
DEVICES=$(readlink -f "${4:?}")
[[ -d $DEVICES/node_modules/aws-iot-device-sdk-v2 ]] || abort "no aws-iot-device-sdk-v2 in $DEVICES (tools/deps runs npm ci there)"
# shellcheck disable=SC2317  # invoked from the EXIT trap (grove_test_lib.sh's)
test_cleanup() {
  kill_components
}
WITH_PLUGINS="  - name: shadow" start_deployment_alone
run_phase "$HERE/ipc_test.py" main "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK/var" "$HERE/ipc_component.js" "$DEVICES/node_modules" "$GROVECTL"
check "groved and the deployment plugin still run" status_matches "deployment .* running" 1
# A hot reload of the plugin keeps the components' IPC connections (their clients do not
# reconnect): subscriptions and requests go on.
run_phase "$HERE/ipc_test.py" reload "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK/var" "$HERE/ipc_component.js" "$DEVICES/node_modules" "$GROVECTL"
# UpdateConfiguration's changes are kept: kill -9, start again, the component reads them.
# The killed groved's pid: the restarted phase looks for what it left frozen (and only
# that: another test's groved may be between its own kill -9 and restart meanwhile).
export KILLED_GROVED_PID=$GROVED_PID
stop_groved KILL
launch_deployment "groved did not come back after kill -9"
run_phase "$HERE/ipc_test.py" restarted "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK/var" "$HERE/ipc_component.js" "$DEVICES/node_modules" "$GROVECTL"
[[ $FAILED == 0 ]] || { echo "--- groved output"; grep -i "deployment" "$WORK/groved.out" | tail -n 80; }
finish
