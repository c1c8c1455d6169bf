# shellcheck shell=bash
# Shared by the broker plugin's test scripts (sourced, not run): work directory and
# cleanup, PASS/FAIL counting, a real Mosquitto started and awaited, and MQTT clients.
# A script defines client_args USER (how a client identifies itself: username or
# certificate) before calling pub, start_sub or start_broker. Client ids are USER-pub-N and
# USER-sub (or start_sub's own): the broker needs plugin_opt_client_id_patterns <thing>
# <thing>-*. PASS/FAIL, free ports and polling come from tests/support/grove_test_lib.sh,
# sourced here.

# shellcheck source=../../../../tests/support/grove_test_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../../tests/support/grove_test_lib.sh"

# broker_test_init TOOL...: checks the tools, makes $WORK, removes it (and every process
# started here) on exit.
broker_test_init() {
  MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
  local tool
  for tool in "$MOSQUITTO" mosquitto_pub mosquitto_sub timeout "$@"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "missing $tool (install mosquitto, mosquitto-clients and openssl)"
      exit 1
    fi
  done
  WORK=$(mktemp -d /tmp/grove-broker-test.XXXXXX)
  BROKER_PID=""
  SUB_PIDS=()
  declare -gA SUB_BY_ID=()
  PASSED=0
  FAILED=0
  trap broker_test_cleanup EXIT
}

broker_test_cleanup() {
  local p
  for p in "${SUB_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  if [[ -n "$BROKER_PID" ]]; then
    kill "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
}

# broker_test_finish TAIL NAME...: fails if the broker died; after any failure prints the
# last TAIL lines of its log, each $WORK/NAME.out and the stats file ($STATS); then the
# verdict line. Its status is the script's: call it last.
broker_test_finish() {
  local tail=$1 name
  shift
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    fail "broker still running at the end"
    cat "$WORK/mosquitto.out"
  fi
  if [[ $FAILED -gt 0 ]]; then
    echo "---- mosquitto log (tail) ----"; tail -n "$tail" "$WORK/mosquitto.log" 2>/dev/null
    for name in "$@"; do echo "---- $name.out ----"; cat "$WORK/$name.out" 2>/dev/null; done
    echo "---- stats ----"; cat "$STATS" 2>/dev/null
  fi
  echo "$PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
}

pub() {  # pub USER TOPIC PAYLOAD [extra args...]
  local user=$1 topic=$2 payload=$3
  shift 3
  # shellcheck disable=SC2046  # client_args is a list of options on purpose
  timeout 5 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args "$user") \
    -i "$user-pub-$RANDOM" -t "$topic" -m "$payload" "$@"
}

# start_sub USER FILTER OUTFILE [CLIENT-ID]: a subscriber of USER in the background, client
# id USER-sub unless given. Two subscribers running at once need different client ids: the
# broker lets the second take the first's session over, the two mosquitto_subs then kick each
# other off about every second (each reconnects), and a QoS 0 message published while one is
# off never reaches it. So a second subscriber with the id of one still running aborts the
# test.
start_sub() {
  local id=${4:-$1-sub}
  local running=${SUB_BY_ID[$id]:-}
  if [[ -n "$running" ]] && kill -0 "$running" 2>/dev/null; then
    abort "start_sub: client id $id is already used by subscriber $running, still running (give the second subscriber its own id)"
  fi
  # shellcheck disable=SC2046
  timeout 120 mosquitto_sub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args "$1") \
    -i "$id" -t "$2" -F '%t %p %P' >"$3" 2>&1 &
  SUB_PIDS+=($!)
  SUB_BY_ID[$id]=$!
}

# broker_conf TABLE [LISTENER_LINES [PLUGIN_LINES]]: a free $PORT, the table TABLE in
# $ACL ($WORK/acl.txt) and $WORK/mosquitto.conf: Mosquitto as this user on 127.0.0.1:$PORT
# (LISTENER_LINES more, e.g. TLS), the plugin $PLUGIN reading $ACL, writing $STATS
# ($WORK/stats.json), clients <thing> or <thing>-* (PLUGIN_LINES more options), everything
# logged to $WORK/mosquitto.log.
broker_conf() {
  PORT=$(free_port)
  ACL=$WORK/acl.txt
  STATS=$WORK/stats.json
  printf '%s\n' "$1" >"$ACL"
  cat >"$WORK/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous false
persistence false
user $(id -un)
listener $PORT 127.0.0.1
${2:+$2
}plugin $PLUGIN
plugin_opt_acl_file $ACL
plugin_opt_stats_file $STATS
plugin_opt_client_id_patterns <thing> <thing>-*
${3:+$3
}log_dest file $WORK/mosquitto.log
log_type all
EOF
}

# start_broker CONF: starts Mosquitto and waits (bounded) until the internal client
# `grove` can publish; on failure prints the logs and the closing count, and exits.
start_broker() {
  "$MOSQUITTO" -c "$1" >"$WORK/mosquitto.out" 2>&1 &
  BROKER_PID=$!
  local ready=0
  for _ in $(seq 1 50); do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then break; fi
    if pub grove ready x 2>/dev/null; then ready=1; break; fi
    sleep 0.1
  done
  if [[ $ready != 1 ]]; then
    echo "broker did not start:"; cat "$WORK/mosquitto.out" "$WORK/mosquitto.log" 2>/dev/null
    echo "$PASSED passed, $((FAILED + 1)) failed"
    exit 1
  fi
}

# deliver_until USER TOPIC PAYLOAD FILE: republishes until the payload shows up (the
# subscriber's SUBSCRIBE may still be in flight when we start).
deliver_until() {
  for _ in $(seq 1 30); do
    pub "$1" "$2" "$3" >/dev/null 2>&1
    wait_for "$4" "$3" 3 && return 0
  done
  return 1
}
