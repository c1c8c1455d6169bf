#!/usr/bin/env bash
# Greengrass IPC's PublishToIoTCore / SubscribeToIoTCore (issue 15): groved runs
# message_manager (its managed Mosquitto, mutual TLS, a TLS Mosquitto as the cloud, the
# deployment plugin in cloud.system_clients) and the deployment plugin. The AWS CLI
# deploys a Node component speaking IPC through AWS's own client (ipc_component.js
# `iotcore`, aws-iot-device-sdk-v2's greengrasscoreipc): its publishes reach the cloud
# (mosquitto_sub there), the cloud's messages on its filter reach it, and topics its
# accessControl."aws.greengrass.ipc.mqttproxy" does not list are UnauthorizedError; after
# `grovectl reload deployment` the same connection still subscribes and publishes.
# Usage: ipc_iotcore_test.sh GROVED GROVECTL GROVE_CERTS DEVICES_DIR
set -u

GROVED=$(readlink -f "${1:?usage: $0 groved grovectl grove-certs devices-dir}")
DEVICES=$(readlink -f "${4:?}")
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_mm_open "$GROVED" "${2:?}" "${3:?}" openssl jq node /usr/bin/aws mosquitto_sub mosquitto_pub
AWS=/usr/bin/aws
[[ -d $DEVICES/node_modules/aws-iot-device-sdk-v2 ]] || abort "no aws-iot-device-sdk-v2 in $DEVICES (tools/deps runs npm ci there)"
# shellcheck disable=SC2317  # invoked from the EXIT trap
test_cleanup() {
  kill_components
}

group_pki grove
cloud_pki
read -r PORT API_PORT CLOUD_PORT <<<"$(free_ports 3)"
cloud_init
start_cloud
cat >"$WORK/profile.yaml" <<EOF
kernel:
  log_level: info
plugins:
$(mm_profile_entry)
$(mm_profile_cloud)
        system_clients: [deployment]
  - name: deployment
    config:
$(deployment_config)
EOF
launch_with_mm
status_has "cloud: connected" 100 || abort "the cloud link did not connect"
aws_env "$PKI/ca.crt"

# The cloud's watcher: what reaches the cloud on cloud/up/# (lines `topic payload`).
# shellcheck disable=SC2046
timeout 120 mosquitto_sub $(cloud_args) -i watcher -t 'cloud/up/#' -F '%t %p' >"$WORK/cloud_seen" 2>&1 &
SUB_PIDS+=($!)

cat >"$WORK/iot.yaml" <<EOF
RecipeFormatVersion: '2020-01-25'
ComponentName: e2e.IpcIot
ComponentVersion: 1.0.0
ComponentConfiguration:
  DefaultConfiguration:
    accessControl:
      aws.greengrass.ipc.mqttproxy:
        "e2e.IpcIot:mqttproxy:1":
          operations: [aws.greengrass#PublishToIoTCore, aws.greengrass#SubscribeToIoTCore]
          resources: [cloud/up/*, cloud/down/#]
Manifests:
  - Platform: {os: linux}
    Lifecycle:
      setenv: {NODE_PATH: "$DEVICES/node_modules"}
      run: exec node "$HERE/ipc_component.js" iotcore {work:path}
EOF
gg create-component-version --inline-recipe "fileb://$WORK/iot.yaml" >"$WORK/create.out" 2>&1 ||
  abort "create-component-version: $(cat "$WORK/create.out")"
# cloud_reaches_component TOPIC PAYLOAD: publishes it in the cloud (every 0.5 s, at most
# 20 times: the cloud link's subscription may still be on its way) until the component's
# IoTCoreMessage log has it.
cloud_reaches_component() {
  for _ in $(seq 1 20); do
    # shellcheck disable=SC2046
    mosquitto_pub $(cloud_args) -i cloud-pub -t "$1" -m "$2" 2>/dev/null
    grep -qF "$1 $2" "$CWORK/iot" 2>/dev/null && return 0
    sleep 0.5
  done
  return 1
}
OUT=$(deploy '{"e2e.IpcIot": {"componentVersion": "1.0.0"}}')
check "the component deployed -> COMPLETED ($OUT)" test "${OUT%% *}" == COMPLETED
CWORK=$WORK/var/plugins/deployment/components/work/e2e.IpcIot
check "it subscribed to cloud/down/# (SubscribeToIoTCore answered)" wait_for "$CWORK/iot" "subscribed" 100
check "its PublishToIoTCore reaches the cloud (mosquitto_sub there)" \
  wait_for "$WORK/cloud_seen" 'cloud/up/hello {"from":"component"' 100
check "a cloud message on its filter reaches it (IoTCoreMessage, topic and payload)" \
  cloud_reaches_component cloud/down/cmd '{"from":"cloud"}'
check "a publish on a topic its mqttproxy policy does not list -> UnauthorizedError" \
  grep -q "denied-publish aws.greengrass#UnauthorizedError .*forbidden/up" "$CWORK/iot"
check "a subscribe to a filter it does not list -> UnauthorizedError" \
  grep -q "denied-subscribe aws.greengrass#UnauthorizedError .*forbidden/#" "$CWORK/iot"
# A hot reload keeps the component's IPC connection (AWS's client does not reconnect):
# its SubscribeToIoTCore still hears the cloud and its PublishToIoTCore still reaches it.
max_n=$(grep -o '"n":[0-9]*' "$WORK/cloud_seen" | cut -d: -f2 | sort -n | tail -n 1)
errors_before=$(wc -l <"$CWORK/errors" 2>/dev/null || echo 0)
"$GROVECTL" reload deployment >"$WORK/reload.out" 2>&1
check "grovectl reload deployment: state carried over" grep -q "state carried over" "$WORK/reload.out"
check "after the reload, a cloud message on its filter still reaches it" \
  cloud_reaches_component cloud/down/after '{"from":"cloud, after the reload"}'
ok=""
for _ in $(seq 1 40); do
  n=$(grep -o '"n":[0-9]*' "$WORK/cloud_seen" | cut -d: -f2 | sort -n | tail -n 1)
  [[ -n $n && $n -gt $((${max_n:-0} + 3)) ]] && { ok=1; break; }
  sleep 0.5
done
check "after the reload, its PublishToIoTCore still reaches the cloud (the same connection)" test -n "$ok"
check "... the component was not started again (one SubscribeToIoTCore)" \
  test "$(grep -c '^subscribed$' "$CWORK/iot")" == 1
check "... a publish the reload cut short, if any, was answered ServiceError saying so" \
  test "$(tail -n +$((errors_before + 1)) "$CWORK/errors" 2>/dev/null | grep -vc 'interrupted by a reload')" == 0
check "groved and the deployment plugin still run" status_matches "deployment .* running" 1
[[ $FAILED == 0 ]] || { echo "--- component"; cat "$CWORK/iot" "$CWORK/errors" 2>/dev/null; echo "--- groved output"; grep -i "deployment\|IPC" "$WORK/groved.out" | tail -n 60; }
finish
