#!/usr/bin/env bash
# End-to-end test of the message_manager plugin with real processes: groved runs the
# plugin, which starts and supervises a real Mosquitto (mutual TLS, Grove's broker plugin);
# a second Mosquitto with TLS stands in for the cloud; devices are mosquitto_pub/sub with
# certificates from tools/grove-certs; grovectl stands in for functions and the shadow
# service on the bus.
# Usage: message_manager_test.sh GROVED GROVECTL GROVE_CERTS
set -u

GROVED=$(readlink -f "${1:?usage: $0 groved grovectl grove-certs}")
GROVECTL=$(readlink -f "${2:?}")
CERTS_TOOL=$(readlink -f "${3:?}")
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=../broker/tests/broker_test_lib.sh
source "$HERE/../broker/tests/broker_test_lib.sh"
broker_test_init openssl "$CERTS_TOOL" "$GROVED" "$GROVECTL"
# shellcheck source=mm_test_lib.sh
source "$HERE/mm_test_lib.sh"
ABORT_LOGS=("$WORK/cloud.out")

SMALL_FS=""
# shellcheck disable=SC2317  # called by mm_test_lib.sh's exit cleanup
test_cleanup() { [[ -n "$SMALL_FS" ]] && umount -l "$SMALL_FS" 2>/dev/null; }

# ---- PKIs: the group's (devices, broker, Grove's client) and the cloud's ------------------
group_pki A B C grove intruder
cloud_pki
# A device certificate of a CA the broker does not trust.
FOREIGN=$WORK/foreign
if ! {
  "$CERTS_TOOL" init "$FOREIGN" --cn "Foreign CA" --days 2 &&
  "$CERTS_TOOL" device "$FOREIGN" A --days 2
} >>"$WORK/certs.out" 2>&1; then
  cat "$WORK/certs.out"
  abort "making the certificates"
fi

read -r PORT CLOUD_PORT <<<"$(free_ports 2)"

# Devices identify with their certificate (CN = thing name).

# ---- the "cloud": Mosquitto with mutual TLS, persistent sessions (mm_test_lib.sh) -------------
cloud_init
# The watcher keeps a persistent QoS 1 session on the cloud, so messages that reach the
# cloud while it is not connected wait for it.
start_watcher() {  # start_watcher OUTFILE [count]
  local count=()
  [[ -n "${2:-}" ]] && count=(-C "$2")
  # shellcheck disable=SC2046
  timeout 300 mosquitto_sub $(cloud_args) -i watcher -c -q 1 -t 'telemetry/#' -t 'f/#' \
    -F '%t %p' "${count[@]}" >>"$1" 2>&1 &
  WATCHER_PID=$!
  SUB_PIDS+=($!)
}
start_cloud

# ---- group and image profile -----------------------------------------------------------------
GROUP=$WORK/group.yaml
write_group() {  # write_group [extra subscription lines]
  cat >"$GROUP.tmp" <<EOF
name: e2e
devices: [{thing: A}, {thing: B}, {thing: C}]
functions: [{name: F}]
subscriptions:
  - {id: a-b, source: "device:A", subject: "a/to/b", target: "device:B"}
  - {id: a-f, source: "device:A", subject: "a/to/f/#", target: "function:F"}
  - {id: a-f-overlap, source: "device:A", subject: "a/to/+/x", target: "function:F"}
  - {id: f-b, source: "function:F", subject: "f/to/b", target: "device:B"}
  - {id: a-cloud, source: "device:A", subject: "telemetry/#", target: cloud}
  - {id: cloud-c, source: cloud, subject: "cmd/c", target: "device:C"}
  - {id: cloud-f, source: cloud, subject: "cmd/f", target: "function:F"}
  - {id: shadow-b, source: shadow, subject: "\$aws/things/B/shadow/update/accepted", target: "device:B"}
  - {id: b-shadow, source: "device:B", subject: "\$aws/things/B/shadow/update", target: shadow}
  - {id: f-cloud, source: "function:F", subject: "f/to/cloud", target: cloud}
${1:-}
EOF
  mv "$GROUP.tmp" "$GROUP"
}
write_group

# write_profile [STORAGE MAX_SIZE_BYTES WHEN_FULL DISK_RESERVE_BYTES]
write_profile() {
  cat >"$WORK/profile.yaml" <<EOF
kernel:
  log_level: info
  group: $GROUP
plugins:
$(mm_profile_entry)
        client_id_patterns: ["<thing>", "<thing>-*"]  # several clients per device below
$(mm_profile_cloud)
      spool:
        storage: ${1:-file}
        max_size_bytes: ${2:-10000000}
        when_full: ${3:-drop_oldest}
        disk_reserve_bytes: ${4:-16777216}
EOF
}
write_profile

# ---- bad configuration is refused with the field at fault ------------------------------------
write_profile file 1000
"$GROVED" --check --config "$WORK/profile.yaml" >"$WORK/check.out" 2>&1
check "a spool below 262144 bytes is refused with file:line and the field (groved --check)" \
  bash -c '[[ $1 == 2 ]] && grep -q "profile.yaml:[0-9]*:[0-9]*: .*spool.max_size_bytes" "$2"' _ "$?" "$WORK/check.out"
write_profile
sed 's|client_key_file: .*|client_key_file: ""|' "$WORK/profile.yaml" >"$WORK/nokey.yaml"
timeout 20 "$GROVED" --config "$WORK/nokey.yaml" --write-dir "$WORK/var-nokey" >"$WORK/nokey.out" 2>&1 &
NOKEY_PID=$!
wait_for "$WORK/nokey.out" "ready:" 100
kill "$NOKEY_PID" 2>/dev/null; wait "$NOKEY_PID" 2>/dev/null
check "a missing TLS file outside development mode: the plugin is refused, groved keeps running" \
  bash -c 'grep -q "broker.client_key_file is required outside development_mode" "$1" &&
           grep -q "ready: 0 of 1 plugins running" "$1"' _ "$WORK/nokey.out"

start_groved() {
  launch_groved
  status_has "group" 100 || abort "groved did not come up"
  status_has "group: 'e2e'" 100 || abort "the plugin did not take the group"
  status_has "local_link: connected" 100 || abort "Grove's client did not connect to the broker"
}
# A stats file an earlier broker run left in the state directory (its totals were counted
# by the groved that ran it): it must not be counted again.
mkdir -p "$WORK/var/plugins/message_manager/broker"
echo '{"denied_delivery":100000,"denied_subscribe":100000,"wills_forwarded":100000}' \
  >"$WORK/var/plugins/message_manager/broker/broker-stats.json"
start_groved
pass "groved started the managed broker and took the group"

export GROVECTL
export -f broker_pid status metric
FIRST_BROKER_PID=$(broker_pid)
check "the managed broker runs as a child of groved" \
  bash -c '[[ -n "$1" && $(ps -o ppid= -p "$1" | tr -d " ") == "$2" ]]' _ "$FIRST_BROKER_PID" "$GROVED_PID"
check "the broker's configuration is generated in the plugin's state directory" \
  grep -q "require_certificate true" "$WORK/var/plugins/message_manager/broker/mosquitto.conf"

# ---- device to device -----------------------------------------------------------------------
start_sub B '#' "$WORK/b.out"
start_sub C '#' "$WORK/c.out"
check "device A -> device B over mutual TLS (subscription a-b)" deliver_until A a/to/b hello-b "$WORK/b.out"
check "... with the broker-stamped source A" grep -q "a/to/b hello-b grove-source:A" "$WORK/b.out"
check "... and not to device C" bash -c '! grep -q hello-b "$1"' _ "$WORK/c.out"
pub A a/other denied-1 >/dev/null 2>&1
pub A a/other denied-2 >/dev/null 2>&1
check "a publish no subscription allows is denied and counted per device in grovectl status" \
  metric_is broker.denied_publish 2 30 A
check "... and reaches nobody" bash -c '! grep -q denied- "$1" "$2"' _ "$WORK/b.out" "$WORK/c.out"
check "the stats file of an earlier broker run is not counted again" \
  bash -c '(( $(metric broker.denied_deliveries) < 100000 ))'
# A is the target of no subscription: whatever it subscribes to is refused in SUBACK.
# shellcheck disable=SC2046
timeout 5 mosquitto_sub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args A) -i A-nosub \
  -t 'a/gets/nothing' -C 1 -W 2 >/dev/null 2>&1
check "a refused subscription is counted in grovectl status" \
  metric_is broker.denied_subscribes 1 30
# A connected device with a will that loses its connection: the will follows route a-b.
BROKER_LOG=$WORK/var/plugins/message_manager/broker/broker.log
mkfifo "$WORK/will.fifo"  # mosquitto_pub -l keeps its connection while its stdin is open
# shellcheck disable=SC2046
mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args A) -i A-will -l -t a/to/b \
  --will-topic a/to/b --will-payload will-of-a --will-qos 1 <"$WORK/will.fifo" >/dev/null 2>&1 &
WILL_PID=$!
SUB_PIDS+=("$WILL_PID")
exec 8>"$WORK/will.fifo"
if wait_for "$BROKER_LOG" " as A-will " 100; then
  kill -9 "$WILL_PID" 2>/dev/null
  check "a device's will reaches its route's target" wait_for "$WORK/b.out" "a/to/b will-of-a" 100
  check "... and is counted in grovectl status" metric_is broker.wills_forwarded 1 30
else
  fail "the device with a will connected"
fi
exec 8>&-
pub A f/to/b spoof -D publish user-property grove-source function:F >/dev/null 2>&1
pub A a/to/b spoofed-src -D publish user-property grove-source function:F >/dev/null 2>&1
wait_for "$WORK/b.out" spoofed-src
check "a device cannot claim another source: grove-source is re-stamped" \
  grep -q "spoofed-src grove-source:A" "$WORK/b.out"
check "... nor publish where only a function may" bash -c '! grep -q " spoof " "$1"' _ "$WORK/b.out"

# Clients without a group certificate.
if timeout 5 mosquitto_pub -h 127.0.0.1 -p "$PORT" --cafile "$PKI/ca.crt" -t a/to/b -m x >"$WORK/nocert.out" 2>&1; then
  fail "a client without a certificate is refused"
else
  pass "a client without a certificate is refused"
fi
if timeout 5 mosquitto_pub -h 127.0.0.1 -p "$PORT" --cafile "$PKI/ca.crt" \
  --cert "$FOREIGN/devices/A.crt" --key "$FOREIGN/devices/A.key" -t a/to/b -m foreign >/dev/null 2>&1 &&
  wait_for "$WORK/b.out" foreign 10; then
  fail "a certificate from a foreign CA is refused"
else
  pass "a certificate from a foreign CA is refused"
fi

if pub intruder a/to/b intruder-msg >"$WORK/intruder.out" 2>&1; then
  fail "a group-CA certificate of a thing outside the group is refused at CONNECT"
else
  check "a group-CA certificate of a thing outside the group is refused at CONNECT" \
    grep -qi "not authori" "$WORK/intruder.out"
fi
check "... and counted" metric_is broker.refused_connects 1 30

# ---- functions and the shadow service over the bus -------------------------------------------
# bus_has SOURCE TOPIC: polls until grovectl printed a message with both.
bus_has() {
  for _ in $(seq 1 50); do
    grep -F "\"source\":\"$1\"" "$WORK/bus.out" | grep -qF "\"topic\":\"$2\"" && return 0
    sleep 0.1
  done
  return 1
}
timeout 120 "$GROVECTL" sub --json '$grove/mm/out/#' >"$WORK/bus.out" 2>&1 &
SUB_PIDS+=($!)
sleep 0.3 # the grovectl subscription is made before its first message; nothing to poll
pub A a/to/f/x to-function >/dev/null
check "device A -> function F arrives on the bus with topic and source" \
  bus_has device:A '$grove/mm/out/function/F/a/to/f/x'
pub A a/to/f/marker marker >/dev/null
bus_has device:A '$grove/mm/out/function/F/a/to/f/marker'
check "... once, though two subscriptions (a/to/f/#, a/to/+/x) match" \
  bash -c '[[ $(grep -cF "\"topic\":\"\$grove/mm/out/function/F/a/to/f/x\"" "$1") == 1 ]]' _ "$WORK/bus.out"
# A will on a topic only a function gets (no device subscribes there): the broker catches
# it on Grove's client's subscription and hands its stamped copy over the route socket.
mkfifo "$WORK/will-f.fifo"
# shellcheck disable=SC2046
mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args A) -i A-will-f -l -t a/to/f/x \
  --will-topic a/to/f/will --will-payload will-to-f --will-qos 1 <"$WORK/will-f.fifo" >/dev/null 2>&1 &
WILL_F_PID=$!
SUB_PIDS+=("$WILL_F_PID")
exec 8>"$WORK/will-f.fifo"
if wait_for "$BROKER_LOG" " as A-will-f " 100; then
  kill -9 "$WILL_F_PID" 2>/dev/null
  check "a device's will reaches a function (source device:A)" \
    bus_has device:A '$grove/mm/out/function/F/a/to/f/will'
  check "... once" bash -c 'sleep 0.3; [[ $(grep -cF "will-to-f" "$1") == 1 ]]' _ "$WORK/bus.out"
else
  fail "the device with a will to a function connected"
fi
exec 8>&-
"$GROVECTL" pub '$grove/mm/in/f/to/b' from-function --source function:F >"$WORK/pub-f.out" 2>&1
check "function F -> device B" wait_for "$WORK/b.out" "f/to/b from-function"
check "... grovectl pub says where mm-3 routed it (typed reply)" \
  grep -q "routed to 1 targets" "$WORK/pub-f.out"
check "... stamped with source function:F" grep -q "from-function grove-source:function:F" "$WORK/b.out"
check "... and not to C" bash -c '! grep -q from-function "$1"' _ "$WORK/c.out"
"$GROVECTL" pub '$grove/mm/in/f/to/b' not-a-function --source device:A >"$WORK/pub-a.out" 2>&1
check "... a refused source makes grovectl pub exit 1 with not_authorized" \
  bash -c '[[ $1 == 1 ]] && grep -q not_authorized "$2"' _ "$?" "$WORK/pub-a.out"
"$GROVECTL" pub '$grove/mm/in/f/to/b' from-nobody >/dev/null
check "a bus message claiming a device source (or none) is refused and counted" \
  metric_is routed.refused_sources 2 30
"$GROVECTL" pub '$grove/mm/in/f/to/b' wrong-function --source function:G >"$WORK/pub-g.out" 2>&1
check "... no route makes grovectl pub exit 1" \
  bash -c '[[ $1 == 1 ]] && grep -q "no route" "$2"' _ "$?" "$WORK/pub-g.out"
check "a function with no subscription reaches no one" metric_is routed.unroutable 1 30
check "... B got none of those" bash -c '! grep -qE "not-a-function|from-nobody|wrong-function" "$1"' _ "$WORK/b.out"
pub B '$aws/things/B/shadow/update' '{"state":{"reported":{"on":true}}}' >/dev/null
check "device B -> shadow service on the bus" \
  wait_for "$WORK/bus.out" '"topic":"$grove/mm/out/shadow/$aws/things/B/shadow/update"'
start_sub B '$aws/things/B/shadow/#' "$WORK/b-shadow.out" B-sub-shadow  # b.out's runs too
sleep 0.3
"$GROVECTL" pub '$aws/things/B/shadow/update/accepted' nope >/dev/null # not through mm
"$GROVECTL" pub '$grove/mm/in/$aws/things/B/shadow/update/accepted' '{"version":1}' --source shadow >/dev/null
check "shadow service -> device B" wait_for "$WORK/b-shadow.out" '{"version":1}'

# ---- MQTT 5 content type and user properties, both ways ---------------------------------------
pub A a/to/f/props with-props -D publish content-type application/json \
  -D publish user-property unit C -D publish user-property site north >/dev/null
check "device -> function: content type and user properties are in the envelope" \
  wait_for "$WORK/bus.out" '"topic":"$grove/mm/out/function/F/a/to/f/props"'
check "... content_type application/json, user_properties {site: north, unit: C}" \
  bash -c 'grep -F "a/to/f/props" "$1" | jq -e "select(.content_type == \"application/json\"
           and .user_properties == {\"site\":\"north\",\"unit\":\"C\"})" >/dev/null' _ "$WORK/bus.out"
# shellcheck disable=SC2046
timeout 120 mosquitto_sub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args B) -i B-props \
  -t f/to/b -F '%t %p ct=%C %P' >"$WORK/b-props.out" 2>&1 &
SUB_PIDS+=($!)
props_to_b() {
  for _ in $(seq 1 30); do
    "$GROVECTL" pub '$grove/mm/in/f/to/b' "$1" --source function:F \
      --content-type text/x-grove --user-property unit=K >/dev/null 2>&1
    wait_for "$WORK/b-props.out" "$1" 3 && return 0
  done
  return 1
}
check "function -> device: the content type and user properties reach the device" \
  props_to_b props-to-b
check "... as MQTT 5 Content Type and user property (source still stamped)" \
  bash -c 'line=$(grep "props-to-b" "$1" | head -1);
           [[ $line == *"ct=text/x-grove"* && $line == *"unit:K"* &&
              $line == *"grove-source:function:F"* ]]' _ "$WORK/b-props.out"

# ---- an abrupt device disconnect is routine: counted, not an error line -----------------------
abrupt_before=$(metric broker.abrupt_disconnects)
# shellcheck disable=SC2046
mosquitto_sub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args C) -i C-abrupt -t 'cmd/c' \
  >/dev/null 2>&1 &
ABRUPT_PID=$!
wait_for "$WORK/var/plugins/message_manager/broker/broker.log" "as C-abrupt" 100
kill -9 "$ABRUPT_PID"
check "a device killed with its TLS session open is counted (broker.abrupt_disconnects)" \
  bash -c 'for _ in $(seq 1 300); do (( $(metric broker.abrupt_disconnects) > $1 )) && exit 0;
           sleep 0.1; done; exit 1' _ "$abrupt_before"
check "... and its OpenSSL 'unexpected eof' is no info or error line in groved's log" \
  bash -c '! grep -q "unexpected eof" "$1"' _ "$WORK/groved.out"

# ---- cloud -----------------------------------------------------------------------------------
status_has "cloud: connected" 100 || abort "the cloud link did not connect"
pass "the cloud link connected over mutual TLS with client id core"
: >"$WORK/watcher.out"
start_watcher "$WORK/watcher.out"
sleep 0.5 # the watcher's SUBSCRIBE; its session is persistent from here on
pub A telemetry/1 t-1 -q 1 >/dev/null
check "device A -> cloud" wait_for "$WORK/watcher.out" "telemetry/1 t-1"
"$GROVECTL" pub '$grove/mm/in/f/to/cloud' f-cloud --source function:F >/dev/null
check "function F -> cloud" wait_for "$WORK/watcher.out" "f/to/cloud f-cloud"
# shellcheck disable=SC2046
deliver_cloud() {  # deliver_cloud TOPIC PAYLOAD FILE: cloud-side publish until it arrives
  for _ in $(seq 1 30); do
    timeout 5 mosquitto_pub $(cloud_args) -i cloudpub -t "$1" -m "$2" >/dev/null 2>&1
    wait_for "$3" "$2" 3 && return 0
  done
  return 1
}
check "cloud -> device C" deliver_cloud cmd/c from-cloud "$WORK/c.out"
check "... not to B" bash -c '! grep -q from-cloud "$1"' _ "$WORK/b.out"
check "cloud -> function F" deliver_cloud cmd/f cloud-to-f "$WORK/bus.out"
check "... with source cloud" bus_has cloud '$grove/mm/out/function/F/cmd/f'

# ---- live cloud settings change ---------------------------------------------------------------
sed -i 's/mqtt_max_connection_retry_interval: 1$/mqtt_max_connection_retry_interval: 2/' "$WORK/profile.yaml"
applied=0
for _ in $(seq 1 100); do
  "$GROVECTL" plugins | grep -q "configuration applied live" && { applied=1; break; }
  sleep 0.1
done
check "a changed cloud setting in the profile is applied live (no reload)" test "$applied" = 1
check "... the cloud link reconnects" status_has "cloud: connected" 100
check "... without restarting the broker" bash -c '[[ "$(broker_pid)" == "$1" ]]' _ "$FIRST_BROKER_PID"
check "... and the cloud route works" deliver_cloud cmd/c after-reconf "$WORK/c.out"

# ---- live table change -----------------------------------------------------------------------
write_group '  - {id: a-c, source: "device:A", subject: "a/to/c", target: "device:C"}'
check "a changed group file is applied live" metric_is group.subscriptions 11 100
check "the new route A -> C works" deliver_until A a/to/c new-route "$WORK/c.out"
check "... without restarting the broker" bash -c '[[ "$(broker_pid)" == "$1" ]]' _ "$FIRST_BROKER_PID"
check "... and B's connection was kept (still receives)" deliver_until A a/to/b after-change "$WORK/b.out"
printf 'name: e2e\nsubscriptions: [ {id: x, source: "device:Z", subject: a, target: cloud} ]\n' >"$GROUP.tmp"
mv "$GROUP.tmp" "$GROUP"
sleep 2 # the kernel polls the file every second; nothing observable changes on purpose
check "a malformed group file is refused and the table stays" \
  bash -c '[[ "$(metric group.subscriptions)" == 11 ]]'
check "... routes still work" deliver_until A a/to/c still-works "$WORK/c.out"
"$GROVECTL" pub '$grove/group/current' 'not a protobuf' >/dev/null 2>&1
check "garbage on \$grove/group/current is refused, the table stays" \
  bash -c 'sleep 0.3; [[ "$(metric group.subscriptions)" == 11 ]]'
write_group '  - {id: a-c, source: "device:A", subject: "a/to/c", target: "device:C"}'
# Only the kernel publishes groups: a forged one with the highest version (name "forged",
# version 2^64-1, no subscriptions; no NUL byte, so it fits an argument) would pin the
# table and make every later edit look stale.
FORGED=$(printf '\x0a\x06forged\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01')
"$GROVECTL" pub '$grove/group/current' "$FORGED" >"$WORK/forged.out" 2>&1
FORGED_RC=$?
check "grovectl pub of a forged group is refused ($(head -c 200 "$WORK/forged.out"))" \
  bash -c '[[ $1 != 0 ]] && grep -qF "belong to '"'"'kernel'"'"'" "$2"' _ "$FORGED_RC" "$WORK/forged.out"
check "... counted in groved's status" \
  bash -c '[[ "$("$1" status --json | jq -r .bus.refused_not_owner)" -ge 2 ]]' _ "$GROVECTL"
check "... the table stays" bash -c 'sleep 0.3; [[ "$(metric group.subscriptions)" == 11 ]]'
write_group '  - {id: a-c, source: "device:A", subject: "a/to/c", target: "device:C"}
  - {id: c-a, source: "device:C", subject: "c/to/a", target: "device:A"}'
check "... and the next real edit is applied" metric_is group.subscriptions 12 100
write_group '  - {id: a-c, source: "device:A", subject: "a/to/c", target: "device:C"}'
check "... as is the one after it" metric_is group.subscriptions 11 100

# ---- hot reload hands the broker over: devices stay connected, nothing lost at QoS 1 --------
RELOAD_BROKER_PID=$(broker_pid)
# shellcheck disable=SC2046
timeout 120 mosquitto_sub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args B) -i B-reload -q 1 \
  -t a/to/b -F '%t %p' >"$WORK/reload-b.out" 2>&1 &
RELOAD_SUB_PID=$!
SUB_PIDS+=("$RELOAD_SUB_PID")
check "a QoS 1 subscriber is in place before the reload" deliver_until A a/to/b reload-barrier "$WORK/reload-b.out"
# One connection of device A publishes 400 QoS 1 messages across the reload.
# shellcheck disable=SC2046
(for i in $(seq 1 400); do echo "rl-$i"; sleep 0.005; done |
  timeout 60 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args A) -i A-reload \
    -q 1 -t a/to/b -l) >"$WORK/reload-pub.out" 2>&1 &
RELOAD_PUB_PID=$!
# And another of its connections 400 QoS 1 messages to function F: they cross the route
# socket, which the broker keeps filling (bounded) while no instance reads it.
# shellcheck disable=SC2046
(for i in $(seq 1 400); do echo "rf-$i"; sleep 0.005; done |
  timeout 60 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args A) -i A-reload-f \
    -q 1 -t a/to/f/reload -l) >"$WORK/reload-pub-f.out" 2>&1 &
RELOAD_PUB_F_PID=$!
wait_for "$WORK/reload-b.out" "rl-20" 100
wait_for "$WORK/bus.out" "rf-20" 100
"$GROVECTL" reload message_manager >"$WORK/reload.out" 2>&1
RELOAD_RC=$?
check "grovectl reload message_manager succeeds ($(cat "$WORK/reload.out"))" test "$RELOAD_RC" = 0
wait "$RELOAD_PUB_PID"
RELOAD_PUB_RC=$?
check "... the publishing device's one connection stayed up through the reload" test "$RELOAD_PUB_RC" = 0
check "... the broker was handed over, not restarted (same pid)" \
  bash -c '[[ "$(broker_pid)" == "$1" ]]' _ "$RELOAD_BROKER_PID"
check "... the new instance says it took the broker over" \
  grep -q "took over the running broker (pid $RELOAD_BROKER_PID)" "$WORK/groved.out"
wait_for "$WORK/reload-b.out" "rl-400" 100
check "... the subscriber's connection stayed up (still running)" kill -0 "$RELOAD_SUB_PID"
check "... and all 400 QoS 1 messages arrived, none lost" \
  bash -c '[[ "$(grep -o "rl-[0-9]*" "$1" | sort -u | wc -l)" == 400 ]]' _ "$WORK/reload-b.out"
check "... Grove's client is back after the reload" status_has "local_link: connected" 100
wait "$RELOAD_PUB_F_PID"
check "... device -> function: the publisher's connection stayed up too" test "$?" = 0
wait_for "$WORK/bus.out" '"payload":"rf-400"' 100
check "... and all 400 reached the function's bus topic through the route socket, each once" \
  bash -c 'l=$(grep -F "a/to/f/reload" "$1" | grep -o "\"rf-[0-9]*\"");
           [[ $(sort -u <<<"$l" | wc -l) == 400 && $(wc -l <<<"$l") == 400 ]]' _ "$WORK/bus.out"
check "... the new instance reads the route socket" status_has "route_socket: connected" 100
check "... and the broker dropped nothing for it" metric_is broker.route_dropped 0 30
check "... and the table of the last instance is in force" deliver_until A a/to/c after-reload "$WORK/c.out"

# ---- broker supervision ----------------------------------------------------------------------
kill -9 "$FIRST_BROKER_PID"
check "a killed broker is restarted and counted" metric_is broker.restarts 1 100
status_has "local_link: connected" 100
start_sub B '#' "$WORK/b2.out" B-sub-restarted  # B-sub (b.out) may be connected again
check "... devices reconnect and routes work again" deliver_until A a/to/b after-restart "$WORK/b2.out"
check "... Grove's client reconnects as soon as the restarted broker listens (no back-off wait)" \
  grep -q "the restarted broker listens: Grove's client reconnects now" "$WORK/groved.out"
check "... device -> function works again" \
  bash -c 'for i in $(seq 1 30); do
             timeout 5 mosquitto_pub -h 127.0.0.1 -p "$1" -V 5 $2 -i "A-pub-$i" -t a/to/f/x -m "resumed-$i" >/dev/null 2>&1
             for _ in $(seq 1 3); do grep -q "resumed-" "$3" && exit 0; sleep 0.1; done
           done; exit 1' _ "$PORT" "$(client_args A)" "$WORK/bus.out"

# ---- cloud down -> spool -> cloud up ---------------------------------------------------------
kill "$WATCHER_PID" 2>/dev/null
stop_cloud
status_has "cloud: waiting" 100 || abort "the cloud link did not notice the cloud went away"
pass "the cloud link goes to back-off when the cloud is down"
for i in $(seq 1 50); do echo "down-$i"; done | timeout 20 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 \
  $(client_args A) -i A-bulk -t telemetry/down -q 1 -l
check "messages for the cloud wait in the spool" metric_is spool.messages 50 100
start_cloud
check "the cloud link reconnects with back-off" status_has "cloud: connected" 100
check "... and the spool drains" metric_is spool.messages 0 100
: >"$WORK/watcher2.out"
start_watcher "$WORK/watcher2.out"
wait_for "$WORK/watcher2.out" "down-50" 100
check "every spooled message reached the cloud once, in order" \
  bash -c '[[ "$(grep "^telemetry/down " "$1" | cut -d" " -f2 | tr "\n" " ")" == "$2" ]]' _ \
  "$WORK/watcher2.out" "$(for i in $(seq 1 50); do printf 'down-%s ' "$i"; done)"

# ---- kill -9 of groved with 10,000 messages spooled ------------------------------------------
kill "$WATCHER_PID" 2>/dev/null
stop_cloud
status_has "cloud: waiting" 100 || abort "the cloud link did not notice the cloud went away (2)"
committed_before=$(metric spool.committed_seq)
seq 1 10000 | timeout 120 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args A) \
  -i A-bulk -t telemetry/k -q 1 -l
check "10,000 messages accepted into the spool" \
  metric_is spool.committed_seq $((committed_before + 10000)) 300
BROKER_BEFORE_KILL=$(broker_pid)
stop_groved KILL
for _ in $(seq 1 50); do kill -0 "$BROKER_BEFORE_KILL" 2>/dev/null || break; sleep 0.1; done
check "the managed broker dies with groved (kill -9)" bash -c '! kill -0 "$1" 2>/dev/null' _ "$BROKER_BEFORE_KILL"
start_cloud
: >"$WORK/watcher3.out"
start_watcher "$WORK/watcher3.out"
start_groved
check "after restart the spool reports the messages it kept" \
  grep -q "spool: 10000 cloud-bound messages from before the restart" "$WORK/groved.out"
wait_for "$WORK/watcher3.out" "telemetry/k 10000" 600
got=$(grep -c "^telemetry/k " "$WORK/watcher3.out")
check "all 10,000 delivered to the cloud after the restart (got $got)" \
  bash -c '[[ "$(grep "^telemetry/k " "$1" | cut -d" " -f2 | awk "!seen[\$0]++" | tr "\n" " ")" == "$(seq 1 10000 | tr "\n" " ")" ]]' _ "$WORK/watcher3.out"

# ---- spool full, both policies (cloud down, memory spool of the minimum size) ----------------
kill "$WATCHER_PID" 2>/dev/null
stop_cloud
stop_groved
# 1078 accounted bytes each (topic 14 + payload 1000 + 64), so 243 fit in 262144.
# spool_full_is DROPPED REJECTED: 243 messages of 1078 bytes in the 262144-byte memory spool.
spool_full_is() {
  metric_is spool.messages 243 100 && metric_is spool.bytes $((243 * 1078)) 10 &&
    metric_is spool.max_bytes 262144 10 && metric_is spool.in_flight 0 10 &&
    metric_is spool.dropped_oldest "$1" 10 && metric_is spool.rejected "$2" 10
}
fill() {  # fill: 400 messages 0001..0400 of 1000 bytes on telemetry/full
  # shellcheck disable=SC2046
  for i in $(seq 1 400); do printf '%04d%0996d\n' "$i" 0; done |
    timeout 60 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args A) -i A-bulk \
      -t telemetry/full -q 1 -l
}
write_profile memory 262144 reject_new
start_groved
fill
check "reject_new: a full spool keeps the first 243 and refuses 157 (counted)" \
  spool_full_is 0 157
stop_groved
write_profile memory 262144 drop_oldest
start_groved
fill
check "drop_oldest: a full spool drops the 157 oldest (counted)" \
  spool_full_is 157 0
start_cloud
: >"$WORK/watcher4.out"
start_watcher "$WORK/watcher4.out"
wait_for "$WORK/watcher4.out" "telemetry/full 0400" 300
check "... and the cloud gets the newest 243 (0158..0400) in order" \
  bash -c '[[ "$(grep "^telemetry/full " "$1" | cut -c16-19 | tr "\n" " ")" == "$2" ]]' _ \
  "$WORK/watcher4.out" "$(seq -f %04g 158 400 | tr '\n' ' ')"

# ---- a real full disk: the spool fails visibly and recovers -------------------------------------
kill "$WATCHER_PID" 2>/dev/null
stop_cloud
stop_groved
# The plugin's state directory (spool.db) on a 32 MiB tmpfs; no reserve, so the writes
# themselves meet the full disk.
SMALL_FS=$WORK/var/plugins/message_manager
rm -rf "$SMALL_FS" && mkdir -p "$SMALL_FS"
mount -t tmpfs -o size=32m tmpfs "$SMALL_FS" || abort "cannot mount a tmpfs (needs root)"
write_profile file 10000000 drop_oldest 0
start_groved
# Leave 256 KiB: SQLite's WAL grows by whole pages per commit (messages 10 ms apart
# commit one by one), far faster than the messages' accounted size, so the commits meet
# the full disk.
avail=$(( $(stat -f -c '%a * %S' "$SMALL_FS") ))
dd if=/dev/zero of="$SMALL_FS/filler" bs=64K count=$(( (avail - 262144) / 65536 )) 2>/dev/null
# shellcheck disable=SC2046
(for i in $(seq 1 300); do echo "df-$i"; sleep 0.01; done) | timeout 60 mosquitto_pub \
  -h 127.0.0.1 -p "$PORT" -V 5 $(client_args A) -i A-bulk -t telemetry/df -q 1 -l
check "a full disk makes the spool fail visibly: spool.failing 1" metric_is spool.failing 1 100
check "... the status line reads FAILING with the error" status_has "spool: file, FAILING: " 50
check "... failed commits are counted" \
  bash -c '(( $(metric spool.commit_failures) >= 1 ))'
check "... and logged as an error" grep -q "spool: .* commit(s) failed since the last report" "$WORK/groved.out"
committed_full=$(metric spool.committed_seq)
rm -f "$SMALL_FS/filler"
check "after space comes back the spool recovers (spool.failing 0)" metric_is spool.failing 0 150
check "... and takes messages again" \
  bash -c 'timeout 5 mosquitto_pub -h 127.0.0.1 -p "$1" -V 5 $2 -i A-bulk -t telemetry/df -q 1 -m df-after &&
           for _ in $(seq 1 100); do (( $(metric spool.committed_seq) > $3 )) && exit 0; sleep 0.1; done;
           exit 1' _ "$PORT" "$(client_args A)" "$committed_full"
start_cloud
: >"$WORK/watcher5.out"
start_watcher "$WORK/watcher5.out"
check "... and the cloud gets what was accepted, the last message included" \
  wait_for "$WORK/watcher5.out" "telemetry/df df-after" 300
stop_groved
umount -l "$SMALL_FS" && SMALL_FS=""

finish
