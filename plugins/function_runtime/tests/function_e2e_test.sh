#!/usr/bin/env bash
# End to end with real processes: groved runs message_manager (its managed Mosquitto with
# mutual TLS), shadow and function_runtime; device A's message is routed by the group's table to
# function F (a real worker process on the C++ function SDK), which publishes through the
# table to device B, and the same with PF, a Python function (runtime: python3,
# tests/python/pyfn.py on the Python function SDK's greengrasssdk). grovectl's functions,
# invoke (request and event) and logs commands; the shadow verbs from C++ (S) and Python
# (PS) against the shadow plugin; function CF's IOT_CORE event source from a TLS Mosquitto
# standing in for the cloud, through message_manager's system API.
# Usage: function_e2e_test.sh GROVED GROVECTL GROVE_CERTS TEST_FUNCTION PYTHON_CODE_DIR
set -u

GROVED=$(readlink -f "${1:?usage: $0 groved grovectl grove-certs test-function}")
GROVECTL=$(readlink -f "${2:?}")
CERTS_TOOL=$(readlink -f "${3:?}")
FUNCTION=$(readlink -f "${4:?}")
PYCODE=$(readlink -f "${5:?}")
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=../../message_manager/broker/tests/broker_test_lib.sh
source "$HERE/../../message_manager/broker/tests/broker_test_lib.sh"
broker_test_init openssl "$CERTS_TOOL" "$GROVED" "$GROVECTL" "$FUNCTION"
# shellcheck source=../../message_manager/tests/mm_test_lib.sh
source "$HERE/../../message_manager/tests/mm_test_lib.sh"

group_pki A B grove
cloud_pki
read -r PORT CLOUD_PORT <<<"$(free_ports 2)"
# A TLS Mosquitto stands in for AWS IoT Core: function CF's IOT_CORE event source.
ABORT_LOGS=("$WORK/cloud.out")
cloud_init
start_cloud

cat >"$WORK/group.yaml" <<YAML
name: e2e
devices: [{thing: A}, {thing: B}, {thing: lamp}, {thing: plamp}]
functions:
  - name: S
    config:
      handler: $FUNCTION
      execArgs: [shadow]
      timeoutInSeconds: 10
      runAs: {uid: 0, gid: 0}
      linuxProcessParams: {isolationMode: NoContainer}
  - name: F
    config:
      handler: $FUNCTION
      execArgs: [relay]
      environmentVariables: {RELAY_TOPIC: f/to/b}
      runAs: {uid: 0, gid: 0}
      linuxProcessParams: {isolationMode: NoContainer}
  - name: PF
    config:
      runtime: python3
      handler: pyfn.relay
      codeUri: $PYCODE
      environmentVariables: {RELAY_TOPIC: p/to/b}
      runAs: {uid: 0, gid: 0}
      linuxProcessParams: {isolationMode: NoContainer}
  - name: CF
    config:
      handler: $FUNCTION
      execArgs: [relay]
      environmentVariables: {RELAY_TOPIC: c/to/b}
      eventSources: [{topic: "cmd/+/go", type: IOT_CORE}]
      runAs: {uid: 0, gid: 0}
      linuxProcessParams: {isolationMode: NoContainer}
  - name: PS
    config:
      runtime: python3
      handler: pyfn.shadow
      codeUri: $PYCODE
      timeoutInSeconds: 10
      runAs: {uid: 0, gid: 0}
      linuxProcessParams: {isolationMode: NoContainer}
subscriptions:
  - {id: a-f, source: "device:A", subject: "a/to/f", target: "function:F"}
  - {id: f-b, source: "function:F", subject: "f/to/b", target: "device:B"}
  - {id: s-shadow, source: "function:S", subject: "\$aws/things/lamp/shadow/#", target: shadow}
  - {id: shadow-s-ok, source: shadow, subject: "\$aws/things/lamp/shadow/+/accepted", target: "function:S"}
  - {id: shadow-s-no, source: shadow, subject: "\$aws/things/lamp/shadow/+/rejected", target: "function:S"}
  - {id: a-pf, source: "device:A", subject: "a/to/p", target: "function:PF"}
  - {id: pf-b, source: "function:PF", subject: "p/to/b", target: "device:B"}
  - {id: cf-b, source: "function:CF", subject: "c/to/b", target: "device:B"}
  - {id: ps-shadow, source: "function:PS", subject: "\$aws/things/plamp/shadow/#", target: shadow}
  - {id: shadow-ps-ok, source: shadow, subject: "\$aws/things/plamp/shadow/+/accepted", target: "function:PS"}
  - {id: shadow-ps-no, source: shadow, subject: "\$aws/things/plamp/shadow/+/rejected", target: "function:PS"}
YAML
cat >"$WORK/profile.yaml" <<YAML
kernel:
  log_level: info
  group: $WORK/group.yaml
plugins:
$(mm_profile_entry)
        client_id_patterns: ["<thing>", "<thing>-*"]
      spool: {storage: memory}
$(mm_profile_cloud)
        system_clients: [function_runtime]
  - name: shadow
  - name: function_runtime
    may_claim: ["function:*"]
    config: {allow_run_as_root: true}  # the test functions run as root from the build tree
YAML

launch_groved
up=0
for _ in $(seq 1 200); do
  if "$GROVECTL" status 2>/dev/null | grep -qF "local_link: connected" &&
     "$GROVECTL" functions 2>/dev/null | grep -q "^F .*pinned *1/1" &&
     "$GROVECTL" functions 2>/dev/null | grep -q "^PF .*pinned *1/1"; then
    up=1; break
  fi
  sleep 0.1
done
[[ $up == 1 ]] || abort "groved, the broker link or the pinned functions did not come up"
pass "groved runs message_manager and function_runtime; F's and PF's pinned instances are up"
# What reaches the shadow service (mm-2), from now on: the shadow checks below read it.
"$GROVECTL" sub '$grove/mm/out/shadow/#' >"$WORK/shadow_req.out" 2>&1 &
SUB_PIDS+=($!)

# Device B's three subscribers (f/to/b, c/to/b, p/to/b) run side by side: each has its own
# client id, or they would take each other's session over and miss one-shot publishes.
start_sub B "f/to/b" "$WORK/b.out" B-sub-f
check "device A -> function F -> device B over the broker with mutual TLS" \
  deliver_until A "a/to/f" '{"n":1}' "$WORK/b.out"
check "the function's log names the device and subject it came from" \
  bash -c '"$1" logs F | grep -q "relayed from device:A on .a/to/f. to 1 targets"' _ "$GROVECTL"

out=$("$GROVECTL" invoke F --payload '{"n":2}' 2>&1)
check "grovectl invoke prints the reply" test "$out" == '{"targets":1}'
check "... and the function's publish reached device B" wait_for "$WORK/b.out" '{"n":2}'
check "grovectl invoke --event queues it without a reply" \
  bash -c '"$1" invoke F --event --payload "{\"n\":3}" >/dev/null' _ "$GROVECTL"
check "... and device B gets what the event published" wait_for "$WORK/b.out" '{"n":3}'
refused "grovectl invoke of an unknown function exits non-zero" "$GROVECTL" invoke nobody
refused "grovectl invoke --event of an unknown function exits non-zero" \
  "$GROVECTL" invoke nobody --event --payload '{}'
err=$("$GROVECTL" invoke F --payload 'not json' 2>&1)
check "a JSON function refuses a payload that is not JSON, with the reason" \
  bash -c '[[ $1 == *"not JSON"* ]]' _ "$err"
check "grovectl functions counts the invocations" \
  bash -c '"$1" functions --json | jq -s -e "map(select(.name == \"F\")) | .[0].invocations >= 3" >/dev/null' _ "$GROVECTL"
check "grovectl functions --json counts the output lines a function's log did not get" \
  bash -c '"$1" functions --json | jq -s -e "map(select(.name == \"F\")) | .[0].output_lines_dropped == 0" >/dev/null' _ "$GROVECTL"
check "... and so does its table (DROPPED)" \
  bash -c '"$1" functions | head -1 | grep -q " DROPPED "' _ "$GROVECTL"
check "grovectl status shows the runtime" \
  bash -c '"$1" status | grep -q "functions: 5 defined, 0 invalid"' _ "$GROVECTL"

# ---- IOT_CORE event source: the cloud -> message_manager's system API (mm-9) -> CF ----
check "CF's IOT_CORE filter is in force through message_manager's system API" \
  status_has "cloud_sources: 1 filters, subscribed" 150
start_sub B "c/to/b" "$WORK/cb.out" B-sub-c
# Published by the cloud until the link has made the subscription (a reconnect remakes it).
cloud_delivered=0
for i in $(seq 1 50); do
  # shellcheck disable=SC2046
  mosquitto_pub $(cloud_args) -i cloudpub -q 1 -t "cmd/lamp/go" -m "{\"go\":$i}" 2>/dev/null
  if grep -q '"go"' "$WORK/cb.out" 2>/dev/null; then cloud_delivered=1; break; fi
  sleep 0.2
done
check "a cloud message matching CF's filter runs CF (which publishes to device B)" \
  test "$cloud_delivered" == 1
check "... and CF's log names the cloud and the cloud topic" \
  bash -c '"$1" logs CF | grep -q "relayed from cloud on .cmd/lamp/go."' _ "$GROVECTL"
# shellcheck disable=SC2046
mosquitto_pub $(cloud_args) -i cloudpub -q 1 -t "cmd/lamp/stop" -m '{"stop":1}'
sleep 1
check "a cloud topic outside the filter does not" bash -c '! grep -q stop "$1"' _ "$WORK/cb.out"

# ---- shadow verbs: function S -> the table -> the shadow plugin -> the table -> S ----
out=$("$GROVECTL" invoke S --payload '{"state":{"reported":{"on":true}}}' 2>&1)
check "update_thing_shadow goes through the table with a clientToken" \
  wait_for "$WORK/shadow_req.out" 'shadow/update {"clientToken":"'
check "... and the shadow plugin's accepted reply with that token answers the call" \
  bash -c '[[ $1 == *"\"reported\":{\"on\":true}"* && $1 == *"\"version\":1"* ]]' _ "$out"
out=$("$GROVECTL" invoke S --payload '{"state":{"reported":{"on":false}},"version":99}' 2>&1)
check "a rejected update (version conflict, 409) is the call's error, and the function's" \
  bash -c '[[ $1 == *"update_thing_shadow: rejected: "*"409"* ]]' _ "$out"

# ---- the same from Python: device A -> PF (greengrasssdk) -> device B; shadow verbs ----
start_sub B "p/to/b" "$WORK/pb.out" B-sub-p
check "device A -> Python function PF -> device B over the broker with mutual TLS" \
  deliver_until A "a/to/p" '{"n":1}' "$WORK/pb.out"
check "PF's logging lines land in its log, naming the device and subject" \
  bash -c '"$1" logs PF | grep -q "pyfn: relayed from device:A on .a/to/p."' _ "$GROVECTL"
out=$("$GROVECTL" invoke PF --payload '{"n":2}' 2>&1)
check "grovectl invoke prints the Python handler's return value, JSON-encoded" \
  test "$out" == '{"relayed": {"n": 2}}'
check "... and its publish reached device B" wait_for "$WORK/pb.out" '{"n":2}'
out=$("$GROVECTL" invoke PS --payload '{"op":"update","thing":"plamp","doc":{"state":{"reported":{"on":true}}}}' 2>&1)
check "Python update_thing_shadow: the shadow plugin's accepted document is the reply" \
  bash -c '[[ $1 == *"\"reported\": {\"on\": true}"* && $1 == *"\"version\": 1"* ]]' _ "$out"
out=$("$GROVECTL" invoke PS --payload '{"op":"get","thing":"plamp"}' 2>&1)
check "Python get_thing_shadow returns the document" \
  bash -c '[[ $1 == *"\"reported\": {\"on\": true}"* ]]' _ "$out"
out=$("$GROVECTL" invoke PS --payload '{"op":"update","thing":"plamp","doc":{"state":{"reported":{"on":false}},"version":99}}' 2>&1)
check "a rejected Python update (409) raises ShadowError, the item's error" \
  bash -c '[[ $1 == *"ShadowError: rejected: "*"409"* ]]' _ "$out"
out=$("$GROVECTL" invoke PS --payload '{"op":"delete","thing":"plamp"}' 2>&1)
check "Python delete_thing_shadow is accepted" bash -c '[[ $1 != *Error* ]]' _ "$out"
out=$("$GROVECTL" invoke PS --payload '{"op":"get","thing":"plamp"}' 2>&1)
check "... after which get_thing_shadow is rejected with 404" \
  bash -c '[[ $1 == *"ShadowError: rejected: "*"404"* ]]' _ "$out"
# The broker logs a session takeover (groved.out has its log): none of B's subscribers lost
# its connection to another one's, so every one-shot check above saw all that reached B.
check "device B's subscribers kept their connections (no client id was taken over)" \
  bash -c '! grep "Client B-[^ ]* already connected, closing old connection" "$1"' _ "$WORK/groved.out"
finish
