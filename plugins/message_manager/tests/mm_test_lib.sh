# shellcheck shell=bash
# Shared by message_manager's end-to-end scripts (sourced after
# ../broker/tests/broker_test_lib.sh, which gives WORK, pass/fail/check and the MQTT
# clients): the end of a run, the group PKI, and `grovectl status` polled. A script sets
# GROVECTL and, for abort, may list more logs to show in ABORT_LOGS.

ABORT_LOGS=()
export GROVE_CONTROL_SOCKET=$WORK/var/run/control.sock

# finish: prints the counts and exits, 0 when nothing failed.
finish() {
  echo "$PASSED passed, $FAILED failed"
  [[ $FAILED == 0 ]]
  exit $?
}

# abort WHY: counts a failure, prints groved's output and the ABORT_LOGS, and stops.
abort() {
  fail "$1"
  echo "--- groved output"; tail -n 60 "$WORK/groved.out" 2>/dev/null
  local log
  for log in "${ABORT_LOGS[@]}"; do
    echo "--- $(basename "$log")"; tail -n 30 "$log" 2>/dev/null
  done
  finish
}

# make_group_pki TOOL DIR THING...: the group's CA (its key under $GROVE_CA_DIR), the
# broker's server certificate (localhost, 127.0.0.1) and one device certificate per THING.
make_group_pki() {
  local tool=$1 dir=$2 thing
  shift 2
  "$tool" init "$dir" --cn "Group CA" --days 2 &&
    "$tool" server "$dir" --host localhost --ip 127.0.0.1 --days 2 || return 1
  for thing in "$@"; do
    "$tool" device "$dir" "$thing" --days 2 || return 1
  done
}

status() { "$GROVECTL" status 2>&1; }
# status_has TEXT [tries]: polls `grovectl status` until TEXT shows up.
status_has() {
  for _ in $(seq 1 "${2:-100}"); do
    status | grep -qF -- "$1" && return 0
    sleep 0.1
  done
  return 1
}
# broker_pid: the managed broker's pid, from `grovectl status`.
broker_pid() { status | sed -n 's/.*broker: running pid \([0-9]*\).*/\1/p' | head -1; }
