# shellcheck shell=bash
# Shared by Grove's end-to-end shell tests (sourced, not run): a work directory removed on
# exit with groved, PASS/FAIL counting and the verdict, free ports, polling, groved started
# and stopped, its status read through grovectl. Layered under
# plugins/message_manager/broker/tests/broker_test_lib.sh (a real Mosquitto, MQTT
# clients) and plugins/message_manager/tests/mm_test_lib.sh (message_manager's PKIs,
# profile entries, the test cloud). A script sets GROVED and GROVECTL; abort() also shows
# the logs it lists in ABORT_LOGS.

PASSED=${PASSED:-0}
FAILED=${FAILED:-0}
GROVED_PID=${GROVED_PID:-}
ABORT_LOGS=()

# grove_test_init PREFIX TOOL...: checks each TOOL, makes $WORK (/tmp/PREFIX.XXXXXX) with
# the control socket under it; on exit grove_test_cleanup runs.
grove_test_init() {
  local prefix=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool (tools/deps installs it)"; exit 1; }
  done
  WORK=$(mktemp -d "/tmp/$prefix.XXXXXX")
  export GROVE_CONTROL_SOCKET=$WORK/var/run/control.sock
  trap grove_test_cleanup EXIT
}

# grove_test_cleanup: kills groved (-9), runs the script's test_cleanup if it defines one,
# removes $WORK.
# shellcheck disable=SC2317  # invoked from the EXIT trap
grove_test_cleanup() {
  if [[ -n "$GROVED_PID" ]]; then
    kill -9 "$GROVED_PID" 2>/dev/null
    wait "$GROVED_PID" 2>/dev/null
  fi
  if declare -F test_cleanup >/dev/null; then test_cleanup; fi
  rm -rf "$WORK"
}

pass() { echo "PASS: $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL: $1"; FAILED=$((FAILED + 1)); }
check() {  # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
refused() {  # refused DESCRIPTION COMMAND...: passes when the command fails
  local what=$1; shift
  if "$@"; then fail "$what"; else pass "$what"; fi
}

# finish: the verdict line; exits 0 if nothing failed, else 1. After a failure groved's
# output is shown first (abort() has shown it already): $WORK goes with the exit.
GROVED_OUT_SHOWN=""
finish() {
  if [[ $FAILED != 0 && -z "$GROVED_OUT_SHOWN" && -s "${WORK:-}/groved.out" ]]; then
    echo "--- groved output (tail)"; tail -n 120 "$WORK/groved.out"
  fi
  echo "$PASSED passed, $FAILED failed"
  [[ $FAILED == 0 ]]
  exit $?
}

# tally OUTFILE RC NAME: a child test's output (a Python script printing PASS:/FAIL: lines)
# shown and its PASS/FAIL lines added to the counts; a failure more if it exited RC != 0.
tally() {
  cat "$1"
  PASSED=$((PASSED + $(grep -c '^PASS' "$1")))
  FAILED=$((FAILED + $(grep -c '^FAIL' "$1")))
  [[ $2 == 0 ]] || fail "$3 exited $2"
}

# run_phase SCRIPT PHASE ARG...: one phase of a Python check script (PASS:/FAIL: lines),
# run with $PY and tallied.
run_phase() {
  local script=$1 phase=$2
  shift 2
  "$PY" "$script" "$phase" "$@" >"$WORK/py.out" 2>&1
  tally "$WORK/py.out" $? "$(basename "$script") $phase"
}

# logged_times DESCRIPTION N TEXT: passes when groved's output has TEXT on exactly N lines.
logged_times() {
  local n
  n=$(grep -c -- "$3" "$WORK/groved.out")
  if [[ $n == "$2" ]]; then pass "$1"; else fail "$1 (logged $n times, not $2)"; fi
}

abort() {  # abort WHY: a failure, groved's output and the ABORT_LOGS, then finish
  fail "$1"
  echo "--- groved output"; tail -n 60 "$WORK/groved.out" 2>/dev/null
  GROVED_OUT_SHOWN=1
  local log
  for log in "${ABORT_LOGS[@]}"; do
    echo "--- ${log##*/}"; tail -n 30 "$log" 2>/dev/null
  done
  finish
}

# free_port: a loopback port nobody uses right now, below the kernel's ephemeral range
# (tests/support/free_port.py), so no client's outgoing connection takes it before the
# test's server binds it.
free_port() {
  python3 "$(dirname "${BASH_SOURCE[0]}")/free_port.py" 2>/dev/null || echo $((20000 + RANDOM % 10000))
}

# free_ports N: N different loopback ports nobody listens on right now, on one line
# (`read -r PORT API_PORT <<<"$(free_ports 2)"`).
free_ports() {
  local ports=() p
  while ((${#ports[@]} < $1)); do
    p=$(free_port)
    [[ " ${ports[*]} " == *" $p "* ]] || ports+=("$p")
  done
  echo "${ports[*]}"
}

# wait_for FILE PATTERN [tries]: polls until a fixed-string line match appears.
wait_for() {
  local tries=${3:-50}
  for _ in $(seq 1 "$tries"); do
    grep -qF -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# launch_groved [ARG...]: starts groved on $WORK/profile.yaml and $WORK/var with ARGs, its
# output appended to $WORK/groved.out; GROVED_PID is its pid. The caller waits for what it
# needs (status_has).
# shellcheck disable=SC2120  # the scripts pass ARGs; launch_groved_until passes none
launch_groved() {
  "$GROVED" --config "$WORK/profile.yaml" --write-dir "$WORK/var" "$@" >>"$WORK/groved.out" 2>&1 &
  GROVED_PID=$!
}
# stop_groved [SIGNAL]: sends groved SIGNAL (TERM unless given, e.g. KILL) and waits for it.
stop_groved() {
  [[ -n "$GROVED_PID" ]] || return 0
  kill -"${1:-TERM}" "$GROVED_PID" 2>/dev/null
  wait "$GROVED_PID" 2>/dev/null
  GROVED_PID=""
}

# launch_groved_until REGEX [tries]: launch_groved, then status_matches REGEX.
launch_groved_until() {
  # shellcheck disable=SC2119  # no ARGs for groved here
  launch_groved
  status_matches "$@"
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
# status_matches REGEX [tries]: polls `grovectl status` until a line matches REGEX (grep -E).
status_matches() {
  for _ in $(seq 1 "${2:-100}"); do
    status | grep -qE -- "$1" && return 0
    sleep 0.1
  done
  return 1
}

# make_server_pki: a group CA and a server certificate for localhost and 127.0.0.1 in
# $WORK/pki, made with $CERTS_TOOL (tools/grove-certs); aborts when they cannot be made.
make_server_pki() {
  if ! { "$CERTS_TOOL" init "$WORK/pki" --cn "Group CA" --days 2 &&
         "$CERTS_TOOL" server "$WORK/pki" --host localhost --ip 127.0.0.1 --days 2; } >"$WORK/certs.out" 2>&1; then
    cat "$WORK/certs.out"
    abort "making the certificates"
  fi
}
