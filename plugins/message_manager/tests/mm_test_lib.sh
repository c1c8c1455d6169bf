# shellcheck shell=bash
# Shared by the end-to-end scripts that run message_manager (sourced after
# ../broker/tests/broker_test_lib.sh and broker_test_init, which bring
# tests/support/grove_test_lib.sh: the verdict, groved, its status): message_manager's
# metrics and profile entries, the group PKI, and a TLS Mosquitto standing in for the
# cloud. A script sets GROVED, GROVECTL and CERTS_TOOL, and for abort() may list extra
# logs in ABORT_LOGS. On exit groved and the test cloud are killed, then the script's own
# test_cleanup runs (if it defines one), then broker_test_cleanup.

export GROVE_CONTROL_SOCKET=$WORK/var/run/control.sock
GROVED_PID=""
CLOUD_PID=""

# shellcheck disable=SC2317  # invoked from the EXIT trap
mm_cleanup() {
  [[ -n "$GROVED_PID" ]] && kill -9 "$GROVED_PID" 2>/dev/null
  [[ -n "$CLOUD_PID" ]] && kill -9 "$CLOUD_PID" 2>/dev/null
  if declare -F test_cleanup >/dev/null; then test_cleanup; fi
  broker_test_cleanup
}
trap mm_cleanup EXIT

# make_group_pki TOOL DIR THING...: the group's CA (its key under $GROVE_CA_DIR), the
# broker's server certificate (localhost, 127.0.0.1) and one device certificate per THING.
make_group_pki() {
  local tool=$1 dir=$2
  shift 2
  make_pki "$tool" "$dir" "Group CA" "$@"
}
# group_pki THING...: the group PKI in $PKI = $WORK/pki (the CA key under GROVE_CA_DIR =
# $WORK/ca, outside it) made with $CERTS_TOOL: the broker's server certificate and one
# device certificate per THING (`grove` is message_manager's own client); aborts on failure.
group_pki() {
  PKI=$WORK/pki
  export GROVE_CA_DIR=$WORK/ca
  if ! make_group_pki "$CERTS_TOOL" "$PKI" "$@" >"$WORK/certs.out" 2>&1; then
    cat "$WORK/certs.out"
    abort "making the certificates"
  fi
}
# cloud_pki [THING...]: the test cloud's PKI in $CLOUD_PKI = $WORK/cloud-pki (make_cloud_pki
# with $CERTS_TOOL, after group_pki); aborts on failure.
cloud_pki() {
  CLOUD_PKI=$WORK/cloud-pki
  if ! make_cloud_pki "$CERTS_TOOL" "$CLOUD_PKI" "$@" >>"$WORK/certs.out" 2>&1; then
    cat "$WORK/certs.out"
    abort "making the cloud's certificates"
  fi
}
# make_cloud_pki TOOL DIR [THING...]: the test cloud's CA (cloud_init), its server
# certificate, `core` (Grove's cloud link, mm_profile_cloud), `watcher` (cloud_args) and
# one device certificate per THING.
make_cloud_pki() {
  local tool=$1 dir=$2
  shift 2
  make_pki "$tool" "$dir" "Cloud CA" core watcher "$@"
}
# make_pki TOOL DIR CN THING...: a CA named CN, a server certificate (localhost,
# 127.0.0.1) and one device certificate per THING.
make_pki() {
  local tool=$1 dir=$2 cn=$3 thing
  shift 3
  "$tool" init "$dir" --cn "$cn" --days 2 &&
    "$tool" server "$dir" --host localhost --ip 127.0.0.1 --days 2 || return 1
  for thing in "$@"; do
    "$tool" device "$dir" "$thing" --days 2 || return 1
  done
}

# client_args THING: mosquitto_pub/sub's TLS options for device THING of the group PKI $PKI.
client_args() {
  echo "--cafile $PKI/ca.crt --cert $PKI/devices/$1.crt --key $PKI/devices/$1.key"
}
# metric NAME [LABEL_VALUE]: message_manager's counter or gauge NAME, a number read from
# `grovectl status --json` (numbers are never parsed out of status text).
metric() {
  "$GROVECTL" status --json 2>/dev/null | jq -r --arg n "$1" --arg l "${2:-}" \
    '.plugins[] | select(.name == "message_manager") | .metrics[]
     | select(.name == $n and (([.labels[]] | first) // "") == $l) | .value'
}
# metric_is NAME VALUE [TRIES] [LABEL_VALUE]: polls until the metric has VALUE.
metric_is() {
  for _ in $(seq 1 "${3:-100}"); do
    [[ "$(metric "$1" "${4:-}")" == "$2" ]] && return 0
    sleep 0.1
  done
  echo "metric $1${4:+{$4\}} is '$(metric "$1" "${4:-}")', expected '$2'" >&2
  return 1
}
# mm_profile_entry: the image profile's message_manager entry up to its broker section
# (mutual TLS with the group PKI in $PKI, listening on $PORT); a script's heredoc adds
# more broker keys (8 spaces in) and the other sections after it.
mm_profile_entry() {
  cat <<EOF
  - name: message_manager
    may_claim: ["device:*", "cloud", "function:*", "shadow"]
    config:
      broker:
        bind: 127.0.0.1
        port: $PORT
        ca_file: $PKI/ca.crt
        cert_file: $PKI/server.crt
        key_file: $PKI/server.key
        client_cert_file: $PKI/devices/grove.crt
        client_key_file: $PKI/devices/grove.key
EOF
}
# mm_profile_cloud: message_manager's cloud section for the cloud of cloud_init (thing
# `core` of $CLOUD_PKI, quick reconnects); more cloud keys may follow (8 spaces in).
mm_profile_cloud() {
  cat <<EOF
      cloud:
        enabled: true
        host: 127.0.0.1
        port: $CLOUD_PORT
        thing_name: core
        ca_file: $CLOUD_PKI/ca.crt
        cert_file: $CLOUD_PKI/devices/core.crt
        key_file: $CLOUD_PKI/devices/core.key
        retry_initial_ms: 100
        mqtt_max_connection_retry_interval: 1
EOF
}
broker_pid() { status | sed -n 's/.*broker: running pid \([0-9]*\).*/\1/p' | head -1; }

# route_group NAME: $WORK/group.yaml with devices A and B, function F and two routes over
# the route socket: A's a/to/f/# to F, B's shadow updates to the shadow service.
route_group() {
  cat >"$WORK/group.yaml" <<EOF
name: $1
devices: [{thing: A}, {thing: B}]
functions: [{name: F}]
subscriptions:
  - {id: a-f, source: "device:A", subject: "a/to/f/#", target: "function:F"}
  - {id: b-shadow, source: "device:B", subject: "\$aws/things/B/shadow/update", target: shadow}
EOF
}
# route_bus_has SOURCE TOPIC [PAYLOAD]: polls (10 s) until `grovectl sub --json` wrote to
# $WORK/bus.out a message with that source and topic (and containing PAYLOAD).
route_bus_has() {
  for _ in $(seq 1 100); do
    grep -F "\"source\":\"$1\"" "$WORK/bus.out" | grep -F "\"topic\":\"$2\"" |
      grep -qF -- "${3:-}" && return 0
    sleep 0.1
  done
  return 1
}

# ---- the "cloud": Mosquitto with mutual TLS and persistent sessions -----------------------------
# cloud_init: writes its configuration for $CLOUD_PORT and the PKI in $CLOUD_PKI (made by the
# script: a server certificate, device certificates `core` and `watcher`).
cloud_init() {
  CLOUD_PID=""
  mkdir -p "$WORK/cloud"
  cat >"$WORK/cloud/mosquitto.conf" <<EOF
user $(id -un)
per_listener_settings false
allow_anonymous false
persistence true
persistence_location $WORK/cloud/
max_queued_messages 50000
listener $CLOUD_PORT 127.0.0.1
cafile $CLOUD_PKI/ca.crt
certfile $CLOUD_PKI/server.crt
keyfile $CLOUD_PKI/server.key
require_certificate true
use_identity_as_username true
EOF
}
# cloud_args: mosquitto_pub/sub options to reach the cloud as `watcher`.
cloud_args() {
  echo "-h 127.0.0.1 -p $CLOUD_PORT --cafile $CLOUD_PKI/ca.crt --cert $CLOUD_PKI/devices/watcher.crt --key $CLOUD_PKI/devices/watcher.key"
}
start_cloud() {
  "$MOSQUITTO" -c "$WORK/cloud/mosquitto.conf" >>"$WORK/cloud.out" 2>&1 &
  CLOUD_PID=$!
  for _ in $(seq 1 50); do
    # shellcheck disable=SC2046
    timeout 5 mosquitto_pub $(cloud_args) -i probe -t probe -m x 2>/dev/null && return 0
    sleep 0.1
  done
  abort "cloud broker did not start"
}
stop_cloud() {  # SIGTERM: Mosquitto saves its sessions
  kill "$CLOUD_PID" 2>/dev/null
  wait "$CLOUD_PID" 2>/dev/null
  CLOUD_PID=""
}
