#!/usr/bin/env bash
# Greengrass v2's MQTT bridge (issue 15: "a Lambda component handling a device message"):
# groved runs message_manager (its managed Mosquitto, mutual TLS, a TLS Mosquitto as the
# cloud), function_runtime and the deployment plugin. The AWS CLI deploys a Lambda
# component (the Python relay of function_runtime's tests, its eventSources PUB_SUB
# clients/A/hello) with aws.greengrass.clientdevices.mqtt.Bridge and a configuration
# merge of mqttTopicMapping; the group has one subscription (cloud -> B). Device A (MQTT.js,
# tests/devices/bridge_device.js) publishes on clients/A/hello: LocalMqtt -> Pubsub -> the
# Lambda, whose publish on replies/A goes Pubsub -> LocalMqtt back to A. Then the cloud
# directions, the loop rule, refused mappings (the configuration before kept, rolled
# back) and the removal of the bridge.
# Usage: bridge_test.sh GROVED GROVECTL GROVE_CERTS PYTHON_CODE_DIR DEVICES_DIR
set -u

GROVED=$(readlink -f "${1:?usage: $0 groved grovectl grove-certs python-code-dir devices-dir}")
PYCODE=$(readlink -f "${4:?}")
DEVICES=$(readlink -f "${5:?}")
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_mm_open "$GROVED" "${2:?}" "${3:?}" openssl jq node /usr/bin/aws
AWS=/usr/bin/aws
[[ -d "$DEVICES/node_modules/mqtt" ]] || abort "no MQTT.js in $DEVICES/node_modules (tools/deps runs npm ci there)"

group_pki A B grove
cloud_pki
read -r PORT API_PORT CLOUD_PORT <<<"$(free_ports 3)"
cloud_init
start_cloud
relay_lambda_package "$PYCODE"
# The group: the devices, no function, two subscriptions (cloud -> B on replies/B and on
# cloud/commands/B, under the bridge's LambdaToDevice and CloudToDevice target filters:
# the table's routes must stay B's only). Every other route below is the bridge's.
GROUP=$WORK/group.yaml
cat >"$GROUP" <<EOF
name: e2e
devices: [{thing: A}, {thing: B}]
subscriptions:
  - {id: cloud-b, source: cloud, subject: replies/B, target: "device:B"}
  - {id: cloud-b2, source: cloud, subject: cloud/commands/B, target: "device:B"}
EOF
cat >"$WORK/profile.yaml" <<EOF
kernel:
  log_level: info
  group: $GROUP
plugins:
$(mm_profile_entry)
        client_id_patterns: ["<thing>", "<thing>-*"]
$(mm_profile_cloud)
  - name: function_runtime
    may_claim: ["function:*"]
    config: {allow_run_as_root: true}  # the test functions run as root from the source tree
  - name: deployment
    may_set_group: true
    may_control_plugins: true
    config:
$(deployment_config "lambda_packages_dir: $WORK/lambda")
EOF
launch_with_mm
status_has "cloud: connected" 100 || abort "the cloud link did not connect"
pass "groved runs message_manager (and its cloud link), function_runtime and the deployment API"
check "no bridge before a deployment: status 'bridge: 0 mapping(s)'" status_has "bridge: 0 mapping(s)" 10

aws_env "$PKI/ca.crt"
LAMBDA=arn:aws:lambda:us-east-1:123456789012:function:relay:1
BRIDGE=aws.greengrass.clientdevices.mqtt.Bridge
# components MAPPING_JSON: the deployment's components: the Lambda component (runAs root,
# as the package is in the test's private directory) and the bridge with this merge.
components() {
  jq -cn --arg m "$1" --arg b "$BRIDGE" '{
    "e2e.Relay": {componentVersion: "1.0.0",
                  configurationUpdate: {merge: "{\"runAs\": {\"uid\": 0, \"gid\": 0}}"}},
    ($b): {componentVersion: "2.3.2",
           configurationUpdate: {reset: ["/mqttTopicMapping"], merge: $m}}}'
}
export -f gg installed metric; export AWS API_PORT GROVECTL
# device THING FILTER TOPIC PAYLOAD: bridge_device.js's line (recv TOPIC PAYLOAD source=S).
device() { timeout 40 node "$DEVICES/bridge_device.js" "$PORT" "$PKI" "$@" 2>&1; }

# The Lambda component, fed by its PUB_SUB event source, relaying on replies/A.
OUT=$(gg create-component-version --lambda-function "{\"lambdaArn\": \"$LAMBDA\",
  \"componentName\": \"e2e.Relay\", \"componentVersion\": \"1.0.0\",
  \"componentLambdaParameters\": {\"environmentVariables\": {\"RELAY_TOPIC\": \"replies/A\"},
    \"eventSources\": [{\"topic\": \"clients/A/hello\", \"type\": \"PUB_SUB\"}],
    \"pinned\": true, \"linuxProcessParams\": {\"isolationMode\": \"NoContainer\"}}}" 2>&1)
check "aws create-component-version --lambda-function -> e2e.Relay 1.0.0 DEPLOYABLE" \
  test "$(jq -r .status.componentState <<<"$OUT" 2>/dev/null)" == DEPLOYABLE
# AWS's public component, as its recipe reads (a plugin of the nucleus; its configuration
# is the bridge's mapping).
cat >"$WORK/bridge.yaml" <<EOF
RecipeFormatVersion: '2020-01-25'
ComponentName: $BRIDGE
ComponentVersion: '2.3.2'
ComponentType: aws.greengrass.plugin
ComponentDescription: The MQTT bridge between client devices, local publish/subscribe and AWS IoT Core.
ComponentPublisher: AWS
ComponentConfiguration:
  DefaultConfiguration:
    mqttTopicMapping: {}
Manifests:
  - Platform: {os: linux}
EOF
OUT=$(gg create-component-version --inline-recipe "fileb://$WORK/bridge.yaml" 2>&1)
check "aws create-component-version: $BRIDGE 2.3.2 DEPLOYABLE" \
  test "$(jq -r .status.componentState <<<"$OUT" 2>/dev/null)" == DEPLOYABLE

MAPPING='{"mqttTopicMapping": {
  "DeviceToLambda": {"topic": "clients/+/hello", "source": "LocalMqtt", "target": "Pubsub"},
  "LambdaToDevice": {"topic": "replies/#", "source": "Pubsub", "target": "LocalMqtt"},
  "DeviceToCloud": {"topic": "clients/#", "source": "LocalMqtt", "target": "IotCore", "targetTopicPrefix": "site/"},
  "CloudToDevice": {"topic": "commands/#", "source": "IotCore", "target": "LocalMqtt", "targetTopicPrefix": "cloud/"},
  "Echo": {"topic": "clients/+/hello", "source": "Pubsub", "target": "LocalMqtt"},
  "BusToCloud": {"topic": "clients/A/#", "source": "Pubsub", "target": "IotCore", "targetTopicPrefix": "bus/"}}}'
OUT=$(deploy "$(components "$MAPPING")")
check "CreateDeployment: e2e.Relay and $BRIDGE with mqttTopicMapping -> COMPLETED ($OUT)" \
  test "${OUT%% *}" == COMPLETED
check "... ListInstalledComponents: both RUNNING" \
  bash -c '[[ $("$0" e2e.Relay) == RUNNING && $("$0" "$1") == RUNNING ]]' installed "$BRIDGE"
check "... message_manager took the bridge's 6 mappings live ('bridge: 6 mapping(s)')" \
  status_has "bridge: 6 mapping(s)" 50
check "... the broker kept running, the cloud link connected" status_has "cloud: connected" 10

# The cloud side listens (its SUBSCRIBE may still be on its way when A first publishes:
# the check below publishes again until it is there).
# shellcheck disable=SC2046
timeout 120 mosquitto_sub $(cloud_args) -i watcher -t 'site/#' -F '%t %p' >"$WORK/cloud.sub" 2>&1 &
SUB_PIDS+=($!)

# ---- device A -> LocalMqtt -> Pubsub -> the Lambda -> Pubsub -> LocalMqtt -> device A ----
OUT=$(device A 'replies/#' clients/A/hello '{"n":1}')
check "device A's message on clients/A/hello reaches the Lambda component through the bridge, its reply comes back on replies/A ($OUT)" \
  grep -q '^recv replies/A {"n":1} source=bridge$' <<<"$OUT"
check "... bridge.relayed{DeviceToLambda} and {LambdaToDevice} counted" \
  bash -c '(( $(metric bridge.relayed DeviceToLambda) >= 1 && $(metric bridge.relayed LambdaToDevice) >= 1 ))'
check "... the relayed message came back to the bridge on the bus (Echo's filter): not sent back to the devices, counted in bridge.dropped_loops" \
  bash -c 'for _ in $(seq 1 50); do (( $(metric bridge.dropped_loops) >= 1 )) && exit 0; sleep 0.1; done; exit 1'
check "... and Echo relayed nothing" test "$(metric bridge.relayed Echo)" == 0
# The message DeviceToLambda put on the bus matches two of the bridge's bus filters
# (Echo's clients/+/hello, BusToCloud's clients/A/#): the bus hands it over twice, the
# bridge relays it once (issue 15 review #3).
check "... BusToCloud (overlapping Echo's filter) relayed each of A's messages once: bridge.relayed{BusToCloud} == {DeviceToLambda}" \
  bash -c 'for _ in $(seq 1 50); do b=$(metric bridge.relayed BusToCloud); d=$(metric bridge.relayed DeviceToLambda)
    (( d >= 1 && b == d )) && exit 0; sleep 0.1; done
    echo "BusToCloud $b, DeviceToLambda $d"; exit 1'
check "... and one loop dropped per message (Echo's hop), not one per copy" \
  bash -c '(( $(metric bridge.dropped_loops) == $(metric bridge.relayed DeviceToLambda) ))'
check "... nothing was unroutable (no table route for it; the bridge took it)" \
  test "$(metric routed.unroutable)" == 0

# ---- the cloud directions ---------------------------------------------------------------
check "LocalMqtt -> IotCore: a message of A on clients/A/cloud reaches the cloud on site/clients/A/cloud (QoS 1 through the spool)" \
  deliver_until A clients/A/cloud '{"n":"cloud"}' "$WORK/cloud.sub"
check "... on the prefixed topic" grep -qF 'site/clients/A/cloud {"n":"cloud"}' "$WORK/cloud.sub"
check "IotCore -> LocalMqtt: a cloud message on commands/A reaches device B on cloud/commands/A, stamped the bridge's" bash -c '
  ( for _ in $(seq 1 30); do timeout 5 mosquitto_pub $0 -i watcher-pub -t commands/A -m "{\"go\":1}" -q 1; sleep 1; done ) &
  pubs=$!
  out=$(timeout 40 node "$1/bridge_device.js" "$2" "$3" B "cloud/commands/#" b/idle x 2>&1)
  kill $pubs 2>/dev/null
  grep -q "^recv cloud/commands/A {\"go\":1} source=bridge$" <<<"$out" || { echo "$out"; exit 1; }' \
  "$(cloud_args)" "$DEVICES" "$PORT" "$PKI"

# ---- the bridge's delivery rules are its own: a table route on a mapped topic stays narrow --
# only_to_b N TOPIC WHERE FILTER WHOSE: the cloud publishes {"table":N} on TOPIC (under a
# bridge mapping's target filter, WHERE) for 30 s; B, subscribed to FILTER, gets it by the
# table's route cloud -> device:B; A, subscribed to FILTER too (WHOSE), gets nothing.
only_to_b() {
  local n=$1 topic=$2 where=$3 filter=$4 whose=$5 pubs a_pid out
  # shellcheck disable=SC2046
  ( for _ in $(seq 1 30); do timeout 5 mosquitto_pub $(cloud_args) -i "watcher-pub$((n + 1))" -t "$topic" -m "{\"table\":$n}" -q 1; sleep 1; done ) &
  pubs=$!
  device A "$filter" a/idle x >"$WORK/table_a$n.out" &
  a_pid=$!
  out=$(device B "$filter" b/idle x)
  check "a table route cloud -> device:B on $topic ($where) reaches B ($out)" \
    grep -q "^recv $topic {\"table\":$n} source=cloud\$" <<<"$out"
  wait "$a_pid"
  kill "$pubs" 2>/dev/null
  check "... and not device A, though subscribed to $whose ($(cat "$WORK/table_a$n.out"))" \
    grep -q '^timeout' "$WORK/table_a$n.out"
}
# replies/B is under LambdaToDevice's replies/# (devices get what the bridge relays there),
# but the cloud's message on it goes by the table to B only.
only_to_b 1 replies/B "a mapped topic" 'replies/#' "the bridge's replies/#"
# The same for the cloud's table route on cloud/commands/B, under CloudToDevice's target
# filter cloud/commands/#: the bridge's relays from the cloud are stamped `bridge`, so the
# devices' lines for them grant nothing of the table's cloud routes (issue 15 review #1).
only_to_b 2 cloud/commands/B "under IotCore -> LocalMqtt's target" 'cloud/commands/#' 'cloud/commands/#'

# ---- refused mappings: the deployment fails, rolled back, the bridge before kept --------
for bad in '{"mqttTopicMapping": {"Bad": {"topic": "a/#/b", "source": "LocalMqtt", "target": "Pubsub"}}}|is no MQTT topic filter' \
           '{"mqttTopicMapping": {"Bad": {"topic": "a/b", "source": "Cloud", "target": "Pubsub"}}}|must be one of LocalMqtt, Pubsub, IotCore' \
           '{"mqttTopicMapping": {"Bad": {"topic": "a/b", "source": "Pubsub", "target": "Pubsub"}}}|the same as its source' \
           '{"mqttTopicMapping": {"Bad": {"topic": "$aws/things/+/shadow/#", "source": "IotCore", "target": "LocalMqtt"}}}|a LocalMqtt target under $aws/ must name the receiving device'; do
  OUT=$(deploy "$(components "${bad%|*}")")
  check "a mapping refused (${bad#*|}) -> FAILED with message_manager's reason, ROLLBACK_COMPLETE ($OUT)" \
    bash -c '[[ $0 == FAILED* && $0 == *"$1"* && $0 == *"$2"* && $0 == *ROLLBACK_COMPLETE* ]]' \
    "$OUT" "${bad#*|}" "$BRIDGE"
  # message_manager refused it, so the kernel never applied it: kept, not rolled back
  # (the rollback of an applied set is below).
  check "... the bridge before was kept (6 mappings)" status_has "bridge: 6 mapping(s)" 50
done
check "... and it relays: A's message reaches the Lambda and the reply comes back" \
  bash -c 'out=$(timeout 40 node "$0/bridge_device.js" "$1" "$2" A "replies/#" clients/A/hello "{\"n\":2}" 2>&1); grep -q "^recv replies/A {\"n\":2} source=bridge$" <<<"$out" || { echo "$out"; exit 1; }' \
  "$DEVICES" "$PORT" "$PKI"
check "... ListInstalledComponents: $BRIDGE RUNNING" test "$(installed "$BRIDGE")" == RUNNING

# ---- an applied bridge rolled back: a later component fails ------------------------------
# grove.ghost (no libghost.so: its load fails) depends on the bridge, so the bridge's new
# mapping set (2 mappings) is applied first, then the deployment fails and rolls back.
cat >"$WORK/ghost.yaml" <<EOF
RecipeFormatVersion: '2020-01-25'
ComponentName: grove.ghost
ComponentVersion: '1.0.0'
ComponentDependencies:
  $BRIDGE: {VersionRequirement: '>=2.0.0', DependencyType: HARD}
EOF
OUT=$(gg create-component-version --inline-recipe "fileb://$WORK/ghost.yaml" 2>&1)
check "aws create-component-version: grove.ghost 1.0.0 (needs $BRIDGE) DEPLOYABLE" \
  test "$(jq -r .status.componentState <<<"$OUT" 2>/dev/null)" == DEPLOYABLE
TWO='{"mqttTopicMapping": {
  "DeviceToLambda": {"topic": "clients/+/hello", "source": "LocalMqtt", "target": "Pubsub"},
  "Other": {"topic": "other/#", "source": "Pubsub", "target": "LocalMqtt"}}}'
OUT=$(deploy "$(components "$TWO" | jq -c '. + {"grove.ghost": {componentVersion: "1.0.0"}}')")
check "a new mapping set with grove.ghost (fails to load) -> FAILED naming grove.ghost, ROLLBACK_COMPLETE ($OUT)" \
  bash -c '[[ $0 == FAILED* && $0 == *grove.ghost* && $0 == *ROLLBACK_COMPLETE* ]]' "$OUT"
check "... the new set had been applied before the failure ('bridge: 2 mapping(s) applied live' logged)" \
  grep -q "bridge: 2 mapping(s) applied live" "$WORK/groved.out"
check "... rolled back: the 6 mappings before are in force again" status_has "bridge: 6 mapping(s)" 50
check "... and relay: A's message reaches the Lambda and the reply comes back" \
  bash -c 'out=$(timeout 40 node "$0/bridge_device.js" "$1" "$2" A "replies/#" clients/A/hello "{\"n\":21}" 2>&1); grep -q "^recv replies/A {\"n\":21} source=bridge$" <<<"$out" || { echo "$out"; exit 1; }' \
  "$DEVICES" "$PORT" "$PKI"

# ---- a profile change keeps the deployed bridge (review #1) -----------------------------
echo "# touched by bridge_test.sh" >>"$WORK/profile.yaml"
check "the profile changed on disk: groved saw it" \
  bash -c 'for _ in $(seq 1 100); do grep -q "changed on disk" "$0" && exit 0; sleep 0.1; done; exit 1' "$WORK/groved.out"
check "... A's message still goes through the bridge after it" \
  bash -c 'out=$(timeout 40 node "$0/bridge_device.js" "$1" "$2" A "replies/#" clients/A/hello "{\"n\":22}" 2>&1); grep -q "^recv replies/A {\"n\":22} source=bridge$" <<<"$out" || { echo "$out"; exit 1; }' \
  "$DEVICES" "$PORT" "$PKI"
check "... 'bridge: 6 mapping(s)' still" status_has "bridge: 6 mapping(s)" 10
check "... message_manager was not reconfigured to the bare profile" \
  bash -c '! grep -q "profile change: reconfigured message_manager" "$0"' "$WORK/groved.out"

# ---- a restart: the deployment applied again gives message_manager its bridge again ------
stop_groved KILL
launch_groved
status_has "local_link: connected" 100 || abort "Grove's client did not reconnect after kill -9"
check "after kill -9 and a restart: 'bridge: 6 mapping(s)' again (the deployment applied at start)" \
  status_has "bridge: 6 mapping(s)" 150
check "... A's message reaches the Lambda and the reply comes back" \
  bash -c 'out=$(timeout 40 node "$0/bridge_device.js" "$1" "$2" A "replies/#" clients/A/hello "{\"n\":3}" 2>&1); grep -q "^recv replies/A {\"n\":3} source=bridge$" <<<"$out" || { echo "$out"; exit 1; }' \
  "$DEVICES" "$PORT" "$PKI"

# ---- removed: the profile's bridge (none) is back --------------------------------------
OUT=$(deploy '{"e2e.Relay": {"componentVersion": "1.0.0", "configurationUpdate": {"merge": "{\"runAs\": {\"uid\": 0, \"gid\": 0}}"}}}')
check "a deployment without $BRIDGE -> COMPLETED ($OUT)" test "${OUT%% *}" == COMPLETED
check "... message_manager's bridge is the profile's again: 0 mappings" status_has "bridge: 0 mapping(s)" 50
check "... ListInstalledComponents: no $BRIDGE" test -z "$(installed "$BRIDGE")"
OUT=$(device A 'replies/#' clients/A/hello '{"n":4}')
check "... device A may no longer subscribe to replies/# (refused in SUBACK: no route delivers there) ($OUT)" \
  grep -q "^subscribe replies/# refused" <<<"$OUT"

[[ $FAILED == 0 ]] || { echo "--- groved output"; grep -i "bridge\|deployment\|function\|message_manager" "$WORK/groved.out" | tail -n 60; }
finish
