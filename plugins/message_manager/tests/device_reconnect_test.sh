#!/usr/bin/env bash
# Devices with a real device library and its defaults get back in after a reload of
# message_manager and after a restart of groved (issue 10, "devices locked out after every
# broker start"). groved runs message_manager with its managed Mosquitto (mutual TLS); the
# devices are MQTT.js clients (tests/devices/fleet.js, default options: a refused CONNACK is
# final for them, a lost connection or a closed port is retried every second). groved is
# restarted only once every device's reconnect met the closed port, as a slow start (TSan)
# does: those ECONNREFUSED errors are no refusal; a CONNACK refusal or any other error is.
# Usage: device_reconnect_test.sh GROVED GROVECTL GROVE_CERTS DEVICES_DIR
set -u

GROVED=$(readlink -f "${1:?usage: $0 groved grovectl grove-certs devices-dir}")
GROVECTL=$(readlink -f "${2:?}")
CERTS_TOOL=$(readlink -f "${3:?}")
DEVICES=$(readlink -f "${4:?}")
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=../broker/tests/broker_test_lib.sh
source "$HERE/../broker/tests/broker_test_lib.sh"
broker_test_init openssl node ss "$CERTS_TOOL" "$GROVED" "$GROVECTL"
# shellcheck source=mm_test_lib.sh
source "$HERE/mm_test_lib.sh"
ABORT_LOGS=("$WORK/fleet.out")
if [[ ! -d "$DEVICES/node_modules/mqtt" ]]; then
  echo "MQTT.js is not installed in $DEVICES (tools/deps runs npm ci there)"
  exit 1
fi

FLEET_PID=""
# shellcheck disable=SC2317  # called by mm_test_lib.sh's exit cleanup
test_cleanup() { [[ -n "$FLEET_PID" ]] && kill "$FLEET_PID" 2>/dev/null; }

PUBLISHER=P
SUBSCRIBERS=(S1 S2 S3)
THINGS=("$PUBLISHER" "${SUBSCRIBERS[@]}")
group_pki "${THINGS[@]}" grove
PORT=$(free_port)

cat >"$WORK/group.yaml" <<EOF
name: fleet
devices: [{thing: P}, {thing: S1}, {thing: S2}, {thing: S3}]
subscriptions:
  - {id: p-s1, source: "device:P", subject: "fleet/#", target: "device:S1"}
  - {id: p-s2, source: "device:P", subject: "fleet/#", target: "device:S2"}
  - {id: p-s3, source: "device:P", subject: "fleet/#", target: "device:S3"}
EOF
cat >"$WORK/profile.yaml" <<EOF
kernel:
  log_level: info
  group: $WORK/group.yaml
plugins:
$(mm_profile_entry)
EOF

now_ms() { date +%s%3N; }
# The time the broker's port first listens, polled from the moment groved starts.
LISTENING_AT=""
start_groved() {
  launch_groved
  LISTENING_AT=""
  for _ in $(seq 1 400); do
    if [[ -n "$(ss -Hltn "sport = :$PORT" 2>/dev/null)" ]]; then
      LISTENING_AT=$(now_ms)
      break
    fi
    sleep 0.025
  done
  [[ -n "$LISTENING_AT" ]] || abort "the broker did not listen on $PORT"
  status_has "local_link: connected" 200 || abort "Grove's client did not connect to the broker"
}

# count EVENT THING: how many times the fleet reported EVENT for THING.
count() { grep -c " $1 $2\$" "$WORK/fleet.out" 2>/dev/null; }
# received THING TAG: the distinct messages of TAG THING received.
received() { grep " recv $1 $2-" "$WORK/fleet.out" 2>/dev/null | awk '{print $4}' | sort -u | wc -l; }
# all_at_least EVENT N: polls (bounded) until every thing reported EVENT at least N times.
all_at_least() {
  local event=$1 n=$2 things=("${@:3}") ok t
  for _ in $(seq 1 "${TRIES:-300}"); do
    ok=1
    for t in "${things[@]}"; do
      (($(count "$event" "$t") >= n)) || { ok=0; break; }
    done
    ((ok)) && return 0
    sleep 0.1
  done
  return 1
}
# all_received TAG N: polls until every subscriber has the N distinct messages of TAG.
all_received() {
  local t ok
  for _ in $(seq 1 300); do
    ok=1
    for t in "${SUBSCRIBERS[@]}"; do
      (($(received "$t" "$1") == $2)) || { ok=0; break; }
    done
    ((ok)) && return 0
    sleep 0.1
  done
  for t in "${SUBSCRIBERS[@]}"; do echo "$t has $(received "$t" "$1") of $2 $1-messages" >&2; done
  return 1
}
send() { echo "$*" >&7; }
# all_unreachable: polls (bounded) until every device had a reconnect refused by the closed
# port (no broker listens: MQTT.js reports ECONNREFUSED and retries every second).
all_unreachable() {
  local t ok
  for _ in $(seq 1 100); do
    ok=1
    for t in "${THINGS[@]}"; do
      grep -q " error $t connect ECONNREFUSED " "$WORK/fleet.out" || { ok=0; break; }
    done
    ((ok)) && return 0
    sleep 0.1
  done
  return 1
}

start_groved
pass "groved started message_manager with its broker"

mkfifo "$WORK/fleet.cmd"
node "$DEVICES/fleet.js" "$PORT" "$PKI" "$PUBLISHER" "${SUBSCRIBERS[@]}" \
  <"$WORK/fleet.cmd" >"$WORK/fleet.out" 2>&1 &
FLEET_PID=$!
exec 7>"$WORK/fleet.cmd"

check "every device (MQTT.js defaults, mutual TLS) connects" all_at_least connect 1 "${THINGS[@]}"
check "every subscriber subscribed" all_at_least subscribed 1 "${SUBSCRIBERS[@]}"
send pub warm 10
check "QoS 1 device -> device: every subscriber gets all 10" all_received warm 10

# ---- reload: the broker is handed over, devices stay connected -------------------------------
BROKER_BEFORE=$(broker_pid)
send pub reload 150 # 1.5 s of publishing across the reload
"$GROVECTL" reload message_manager >"$WORK/reload.out" 2>&1
status_has "local_link: connected" 200 || abort "Grove's client did not come back after the reload"
check "reload: the broker was kept (same pid)" test "$(broker_pid)" == "$BROKER_BEFORE"
check "reload: every QoS 1 message published meanwhile reached every subscriber" \
  all_received reload 150
check "reload: no device lost its connection" \
  bash -c '! grep -q " close " "$1"' _ "$WORK/fleet.out"

# ---- restart of groved: every device is back, none refused ---------------------------------
kill -TERM "$GROVED_PID"
for _ in $(seq 1 200); do kill -0 "$GROVED_PID" 2>/dev/null || break; sleep 0.05; done
kill -0 "$GROVED_PID" 2>/dev/null && abort "groved did not stop on SIGTERM"
wait "$GROVED_PID" 2>/dev/null
GROVED_PID=""
TRIES=100 all_at_least close 1 "${THINGS[@]}" || abort "the devices did not notice the restart"
all_unreachable || abort "the devices did not retry while groved was down"
start_groved
TRIES=300 all_at_least connect 2 "${THINGS[@]}"
back=$?
check "restart: every device is back (MQTT.js defaults)" test "$back" == 0
if ((back == 0)); then
  last=$(grep " connect " "$WORK/fleet.out" | tail -n 1 | awk '{print $1}')
  echo "INFO: all ${#THINGS[@]} devices back $((last - LISTENING_AT)) ms after the broker listened"
fi
check "restart: no device was refused at CONNECT" \
  bash -c '! grep -q " refused " "$1"' _ "$WORK/fleet.out"
check "restart: no connection error but the closed port's while groved was down" \
  bash -c '! grep " error " "$1" | grep -qv " connect ECONNREFUSED "' _ "$WORK/fleet.out"
check "restart: every subscriber subscribed again" all_at_least suback 2 "${SUBSCRIBERS[@]}"
send pub after 50
check "restart: QoS 1 device -> device reaches every subscriber again" all_received after 50

grep -q " refused \| error " "$WORK/fleet.out" &&
  { echo "--- fleet errors"; grep " refused \| error " "$WORK/fleet.out" | tail -n 40; }
finish
