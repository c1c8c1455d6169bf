#!/usr/bin/env bash
# The route socket when its path is longer than a Unix socket address holds (sun_path,
# 108 bytes): groved's write dir deep enough that <write dir>/plugins/message_manager/
# broker/route.sock is past it. Device messages must still reach a function and the shadow
# service (grovectl stands in for both on the bus). Two runs of groved: with the broker's
# own user when run as root (the broker's home is short, groved's reader connects through
# the long state directory), then with broker.run_as_user "" (the broker runs in the long
# state directory and binds there).
# Usage: route_long_path_test.sh GROVED GROVECTL GROVE_CERTS
set -u

GROVED=$(readlink -f "${1:?usage: $0 groved grovectl grove-certs}")
GROVECTL=$(readlink -f "${2:?}")
CERTS_TOOL=$(readlink -f "${3:?}")
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=../broker/tests/broker_test_lib.sh
source "$HERE/../broker/tests/broker_test_lib.sh"
broker_test_init openssl jq "$CERTS_TOOL" "$GROVED" "$GROVECTL"
# shellcheck source=mm_test_lib.sh
source "$HERE/mm_test_lib.sh"

group_pki A B grove
PORT=$(free_port)

# The write dir: four long levels under $WORK. The control socket stays short (it has a
# setting of its own, kernel.control_socket).
LONG=$WORK
for i in 1 2 3 4; do LONG=$LONG/a-directory-name-long-enough-that-four-make-the-path-too-long-$i; done
VAR=$LONG/var
SOCK=$VAR/plugins/message_manager/broker/route.sock
mkdir -p "$VAR"
export GROVE_CONTROL_SOCKET=$WORK/control.sock
check "the route socket's path is longer than sun_path (${#SOCK} >= 108 bytes)" test "${#SOCK}" -ge 108

route_group longpath
write_profile() {  # write_profile [BROKER_LINE]: one more key of message_manager's broker:
  cat >"$WORK/profile.yaml" <<EOF
kernel:
  log_level: info
  group: $WORK/group.yaml
  control_socket: $GROVE_CONTROL_SOCKET
plugins:
$(mm_profile_entry)
        client_id_patterns: ["<thing>", "<thing>-*"]  # pub's client ids
${1:+        $1}
EOF
}

# route_messages_at_least N: polls (the metric is refreshed every second) until
# message_manager read N messages from the route socket.
route_messages_at_least() {
  local n
  for _ in $(seq 1 50); do
    n=$(metric route.messages)
    [[ -n "$n" ]] && (( n >= $1 )) && return 0
    sleep 0.1
  done
  echo "route.messages: ${n:-none}"
  return 1
}

# run_once WHAT [in_home]: groved on the long write dir; a device message to F and one to
# the shadow. With in_home: the broker runs in the long state directory itself (no symlink
# to a home elsewhere) and its socket is there.
run_once() {
  local what=$1 sub
  "$GROVED" --config "$WORK/profile.yaml" --write-dir "$VAR" >>"$WORK/groved.out" 2>&1 &
  GROVED_PID=$!
  if ! status_has "local_link: connected" 200; then
    fail "$what: groved started message_manager and its broker"
    echo "--- groved output (tail)"; tail -n 40 "$WORK/groved.out"
    GROVED_OUT_SHOWN=1
    stop_groved
    return
  fi
  if [[ -n "${2:-}" ]]; then
    check "$what: the broker's socket is in the long state directory" \
      bash -c '[[ -S "$1" && ! -L "${1%/*}" ]]' _ "$SOCK"
  fi
  : >"$WORK/bus.out"
  timeout 120 "$GROVECTL" sub --json '$grove/mm/out/#' >"$WORK/bus.out" 2>&1 &
  sub=$!
  SUB_PIDS+=("$sub")
  sleep 0.3 # the grovectl subscription is made before its first message; nothing to poll
  pub A a/to/f/x "to-function" >/dev/null
  check "$what: device A -> function F" route_bus_has device:A '$grove/mm/out/function/F/a/to/f/x'
  pub B '$aws/things/B/shadow/update' '{"state":{}}' >/dev/null
  check "$what: device B -> the shadow service" \
    route_bus_has device:B '$grove/mm/out/shadow/$aws/things/B/shadow/update'
  check "$what: both over the route socket" route_messages_at_least 2
  kill "$sub" 2>/dev/null
  stop_groved
}

if [[ $(id -u) == 0 ]]; then
  write_profile
  run_once "broker as grove-broker, groved's path long"
fi
write_profile 'run_as_user: ""'
run_once "broker in the long state directory" in_home

finish
