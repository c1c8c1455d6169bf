#!/usr/bin/env bash
# Checks tests/support/fake_aws_shadow.py against the AWS IoT shadow protocol, so the
# shadow plugin's cloud-sync tests can trust it: a real Mosquitto with mutual TLS (as the
# test "cloud"), the fake connected to it, and a device as mosquitto_pub/sub. Classic and
# named shadows: get/update/delete, accepted/rejected, update/delta and update/documents,
# versions, 409 on a version mismatch, null deletes, metadata timestamps, clientToken;
# then the control interface (seed, read, a cloud-side update, offline/online).
# Usage: fake_aws_shadow_test.sh GROVE_CERTS FAKE_AWS_SHADOW_PY
set -u

CERTS_TOOL=$(readlink -f "${1:?usage: $0 grove-certs fake_aws_shadow.py}")
FAKE=$(readlink -f "${2:?}")
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
# Debian's Python, which has Debian's python3-paho-mqtt (a python3 earlier on PATH, say
# pyenv's, would not).
PYTHON=${PYTHON:-/usr/bin/python3}
# shellcheck source=grove_test_lib.sh
source "$(dirname "$(readlink -f "$0")")/grove_test_lib.sh"
grove_test_init grove-fake-shadow "$MOSQUITTO" mosquitto_pub mosquitto_sub jq "$PYTHON" openssl \
  timeout
"$PYTHON" -c 'import paho.mqtt.client' 2>/dev/null \
  || { echo "missing python3-paho-mqtt (tools/deps installs it)"; exit 1; }
PIDS=()
# shellcheck disable=SC2317  # invoked from the EXIT trap (grove_test_lib.sh's)
test_cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
}
ABORT_LOGS=("$WORK/broker.out" "$WORK/fake.out")

# ---- the cloud broker (mutual TLS) and the fake service --------------------------------------
export GROVE_CA_DIR=$WORK/ca
{
  "$CERTS_TOOL" init "$WORK/pki" --cn "Cloud CA" --days 2 &&
  "$CERTS_TOOL" server "$WORK/pki" --host localhost --ip 127.0.0.1 --days 2 &&
  "$CERTS_TOOL" device "$WORK/pki" shadow-service --days 2 &&
  "$CERTS_TOOL" device "$WORK/pki" lamp --days 2
} >"$WORK/certs.out" 2>&1 || { cat "$WORK/certs.out"; abort "making the certificates"; }
PORT=$(free_port)
cat >"$WORK/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous false
listener $PORT 127.0.0.1
cafile $WORK/pki/ca.crt
certfile $WORK/pki/server.crt
keyfile $WORK/pki/server.key
require_certificate true
use_identity_as_username true
EOF
[[ $(id -u) == 0 ]] && echo "user $(id -un)" >>"$WORK/mosquitto.conf"
"$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/broker.out" 2>&1 &
PIDS+=($!)
DEV=(-h 127.0.0.1 -p "$PORT" --cafile "$WORK/pki/ca.crt" --cert "$WORK/pki/devices/lamp.crt"
     --key "$WORK/pki/devices/lamp.key")
for _ in $(seq 1 100); do
  timeout 5 mosquitto_pub "${DEV[@]}" -i probe -t probe -m x 2>/dev/null && break
  sleep 0.1
done

"$PYTHON" "$FAKE" --port "$PORT" --cafile "$WORK/pki/ca.crt" \
  --cert "$WORK/pki/devices/shadow-service.crt" --key "$WORK/pki/devices/shadow-service.key" \
  --ready-file "$WORK/ready" >"$WORK/fake.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 300); do [[ -s "$WORK/ready" ]] && break; sleep 0.1; done
[[ -s "$WORK/ready" ]] || abort "the fake did not connect and subscribe"
CONTROL=$(cat "$WORK/ready")
pass "the fake connects with mutual TLS, subscribes, and names its control port"

# Every shadow message the device sees, as `topic payload` lines.
timeout 300 mosquitto_sub "${DEV[@]}" -i lamp-sub -q 1 -t '$aws/things/#' -F '%t %p' \
  >"$WORK/seen" 2>"$WORK/sub.err" &
PIDS+=($!)
# The subscription is in place once a probe shows up.
for i in $(seq 1 100); do
  mosquitto_pub "${DEV[@]}" -i lamp-probe -q 1 -t "\$aws/things/probe/$i" -m x 2>/dev/null
  grep -q '^\$aws/things/probe/' "$WORK/seen" && break
  sleep 0.1
done
grep -q '^\$aws/things/probe/' "$WORK/seen" || abort "the device's subscription"

# answer_where TOPIC JQ_EXPR: waits (bounded) for a message on TOPIC for which JQ_EXPR is
# true; prints its payload.
answer_where() {
  local line
  for _ in $(seq 1 100); do
    line=$(while read -r t p; do
             [[ $t == "$1" ]] && jq -e "$2" <<<"$p" >/dev/null 2>&1 && { echo "$p"; break; }
           done <"$WORK/seen")
    [[ -n $line ]] && { echo "$line"; return 0; }
    sleep 0.1
  done
  return 1
}
# answer TOPIC TOKEN: the message on TOPIC whose clientToken is TOKEN.
answer() { answer_where "$1" ".clientToken == \"$2\""; }
# request OP PREFIX PAYLOAD RESULT: publishes PAYLOAD on PREFIX/OP and prints the answer on
# PREFIX/OP/RESULT (the payload must carry a clientToken).
request() {
  local token
  token=$(jq -r .clientToken <<<"$3")
  mosquitto_pub "${DEV[@]}" -i lamp-pub -q 1 -t "$2/$1" -m "$3" || return 1
  answer "$2/$1/$4" "$token"
}
# is JSON JQ_EXPR: the expression is true for JSON (never for none: jq 1.6 says true
# for an empty input).
is() { [[ -n $1 ]] && jq -e "$2" <<<"$1" >/dev/null 2>&1; }
control() {  # control METHOD PATH [BODY]: the control interface; prints the body
  python3 - "$CONTROL" "$@" <<'EOF'
import http.client, sys
port, method, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
c.request(method, path, body=body)
r = c.getresponse()
print(r.status, r.read().decode())
EOF
}

C='$aws/things/lamp/shadow'
N='$aws/things/lamp/shadow/name/config'

# ---- classic shadow -------------------------------------------------------------------------
r=$(request get "$C" '{"clientToken":"g0"}' rejected) || abort "no answer to a get"
check "get of a missing shadow: get/rejected 404 with message, timestamp, clientToken" \
  is "$r" '.code == 404 and (.message | test("No shadow exists")) and (.timestamp|type) == "number"'

r=$(request update "$C" '{"state":{"desired":{"color":"red","level":3,"cfg":{"a":1}}},"clientToken":"u1"}' accepted) \
  || abort "no update/accepted"
check "update desired: update/accepted echoes the state, version 1, leaf metadata timestamps" \
  is "$r" '.version == 1 and .state.desired.color == "red" and
           (.metadata.desired.color.timestamp|type) == "number" and
           (.metadata.desired.cfg.a.timestamp|type) == "number" and (.timestamp|type) == "number"'
d=$(answer "$C/update/documents" u1)
check "update/documents: current at version 1, no previous for a new shadow" \
  is "$d" '.current.version == 1 and .current.state.desired.level == 3 and (has("previous")|not)'
dl=$(answer "$C/update/delta" u1)
check "update/delta: every desired leaf (nothing reported yet), version, metadata" \
  is "$dl" '.version == 1 and .state == {"color":"red","level":3,"cfg":{"a":1}} and
            (.metadata.color.timestamp|type) == "number"'

r=$(request update "$C" '{"state":{"reported":{"color":"red","level":1}},"clientToken":"u2"}' accepted)
check "update reported: version 2" is "$r" '.version == 2 and .state.reported.level == 1'
d=$(answer "$C/update/documents" u2)
check "update/documents: previous version 1, current version 2 with both sections" \
  is "$d" '.previous.version == 1 and .current.version == 2 and
           .current.state.reported.color == "red" and .current.state.desired.color == "red" and
           (.current.metadata.reported.level.timestamp|type) == "number"'

r=$(request get "$C" '{"clientToken":"g1"}' accepted)
check "get: desired, reported, delta (only what differs), metadata, version 2" \
  is "$r" '.version == 2 and .state.delta == {"level":3,"cfg":{"a":1}} and
           .state.reported.level == 1 and (.metadata.desired.level.timestamp|type) == "number"'

r=$(request update "$C" '{"state":{"desired":{"level":5}},"version":1,"clientToken":"u3"}' rejected)
check "update with a stale version: update/rejected 409 Version conflict" \
  is "$r" '.code == 409 and .message == "Version conflict"'
r=$(request update "$C" '{"state":{"desired":{"level":5}},"version":2,"clientToken":"u4"}' accepted)
check "update with the current version: accepted, version 3" is "$r" '.version == 3'
check "a rejected update sent no delta, the accepted one did (no delta for a reported-only update)" \
  bash -c '[[ $(grep -c "^\$aws/things/lamp/shadow/update/delta " "$1") == 2 ]] &&
           grep "^\$aws/things/lamp/shadow/update/delta " "$1" | tail -1 | grep -q "\"u4\""' _ "$WORK/seen"

mosquitto_pub "${DEV[@]}" -i lamp-pub -q 1 -t "$C/update" -m 'not json'
r=$(answer_where "$C/update/rejected" '.code == 400')
check "invalid JSON: update/rejected 400" is "$r" '.code == 400 and .message == "Invalid JSON"'
r=$(request update "$C" '{"clientToken":"u5"}' rejected)
check "no state node: 400 Missing required node: state" \
  is "$r" '.code == 400 and (.message | test("state"))'
r=$(request update "$C" '{"state":{"desired":1},"clientToken":"u6"}' rejected)
check "a desired that is not an object: 400" is "$r" '.code == 400'
r=$(request update "$C" '{"state":{"desired":{}},"version":"2","clientToken":"u7"}' rejected)
check "a version that is not a number: 400" is "$r" '.code == 400'

r=$(request update "$C" '{"state":{"desired":{"cfg":null,"level":null}},"clientToken":"u8"}' accepted)
r=$(request get "$C" '{"clientToken":"g2"}' accepted)
check "null leaves delete them (and their metadata); version 4" \
  is "$r" '.version == 4 and .state.desired == {"color":"red"} and
           (.metadata.desired | has("cfg") | not) and (.state | has("delta") | not)'
r=$(request update "$C" '{"state":{"reported":null},"clientToken":"u9"}' accepted)
r=$(request get "$C" '{"clientToken":"g3"}' accepted)
check "a null section deletes it; delta comes back" \
  is "$r" '.version == 5 and (.state | has("reported") | not) and .state.delta == {"color":"red"}'

# ---- named shadow: its own topics and versions ----------------------------------------------
r=$(request update "$N" '{"state":{"desired":{"rate":10}},"clientToken":"n1"}' accepted)
check "named shadow: update/accepted on its own topic, version 1" \
  is "$r" '.version == 1 and .state.desired.rate == 10'
check "named shadow: its delta on .../name/config/update/delta" \
  is "$(answer "$N/update/delta" n1)" '.state == {"rate":10}'
r=$(request get "$N" '{"clientToken":"n2"}' accepted)
check "named shadow: get sees its document only" \
  is "$r" '.version == 1 and (.state.desired | has("color") | not)'

# ---- delete ---------------------------------------------------------------------------------
r=$(request delete "$C" '{"clientToken":"d1"}' accepted)
check "delete: delete/accepted with the version deleted" is "$r" '.version == 5'
r=$(request get "$C" '{"clientToken":"g4"}' rejected)
check "get after delete: 404" is "$r" '.code == 404'
r=$(request delete "$C" '{"clientToken":"d2"}' rejected)
check "delete of a missing shadow: delete/rejected 404" is "$r" '.code == 404'
r=$(request update "$C" '{"state":{"reported":{"on":true}},"clientToken":"u10"}' accepted)
check "a new shadow after delete goes on from the old version (6)" is "$r" '.version == 6'
r=$(request get "$N" '{"clientToken":"n3"}' accepted)
check "deleting the classic shadow leaves the named one" is "$r" '.version == 1'

# ---- control interface ----------------------------------------------------------------------
out=$(control GET /shadow/lamp/config)
check "control: GET reads the current named document" \
  bash -c '[[ ${1%% *} == 200 ]] && jq -e ".version == 1 and .state.desired.rate == 10" <<<"${1#* }" >/dev/null' _ "$out"
out=$(control PUT /shadow/fan '{"state":{"desired":{"speed":2},"reported":{"speed":1}},"version":41,"metadata":{"desired":{"speed":{"timestamp":1000}},"reported":{"speed":{"timestamp":900}}}}')
r=$(request get '$aws/things/fan/shadow' '{"clientToken":"s1"}' accepted)
check "control: PUT seeds a document (version, metadata timestamps) that get returns" \
  is "$r" '.version == 41 and .metadata.desired.speed.timestamp == 1000 and .state.delta == {"speed":2}'
out=$(control POST /update/fan '{"state":{"desired":{"speed":3}},"clientToken":"c1"}')
check "control: POST /update answers like update/accepted (version 42)" \
  bash -c '[[ ${1%% *} == 200 ]] && jq -e ".version == 42" <<<"${1#* }" >/dev/null' _ "$out"
check "control: a cloud-side update publishes the delta to the device" \
  is "$(answer '$aws/things/fan/shadow/update/delta' c1)" '.state == {"speed":3} and .version == 42'
out=$(control POST /update/fan '{"state":{"desired":{"speed":4}},"version":7}')
check "control: a cloud-side update with a stale version is 409" test "${out%% *}" = 409

out=$(control POST /offline)
check "control: offline" is "$(control GET /health | cut -d' ' -f2-)" '.connected == false'
mosquitto_pub "${DEV[@]}" -i lamp-pub -q 1 -t "$C/get" -m '{"clientToken":"off1"}'
out=$(control POST /online)
check "control: back online (subscribed again)" is "${out#* }" '.connected == true'
r=$(request get "$C" '{"clientToken":"on1"}' accepted)
check "a request while offline is never answered, one after coming back is" \
  bash -c '[[ -n $1 ]] && jq -e ".version == 6" <<<"$1" >/dev/null &&
           ! grep "^\$aws/things/lamp/shadow/get/" "$2" | grep -q "\"off1\""' _ "$r" "$WORK/seen"

finish
