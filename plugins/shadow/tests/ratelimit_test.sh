#!/usr/bin/env bash
# End-to-end test of shadow manager's local request limits (README "Local request
# limits") with real processes: groved runs message_manager (its managed Mosquitto, mutual
# TLS) and shadow; devices are mosquitto_pub/sub with certificates. A burst of one device
# over maxLocalRequestsPerSecondPerThing gets 429 Too Many Requests on .../rejected while
# another device is still served; then, with the profile changed live, a burst over
# maxTotalLocalRequestsRate refuses every thing, the bus API (grovectl) included; the
# plugin's counters and status line count what was refused.
# Usage: ratelimit_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=shadow_test_lib.sh
source "$HERE/shadow_test_lib.sh"
shadow_open "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}"

shadow_group shadow-ratelimit lamp fan "$(shadow_routes lamp; shadow_routes fan)"
# write_profile PER_THING TOTAL: the in-flight bound high, so every 429 here is a rate's.
write_profile() {
  shadow_profile "      max_inflight_per_thing: 100000
      rateLimits: {maxLocalRequestsPerSecondPerThing: $1, maxTotalLocalRequestsRate: $2}"
}
write_profile 5 1000
start_local_groved 2
check "the status line shows the limits" status_has "local_limits: 5/s per thing, 1000/s in all"

L='$aws/things/lamp/shadow'
F='$aws/things/fan/shadow'
start_sub lamp "$L/#" "$WORK/lamp.out"
start_sub fan "$F/#" "$WORK/fan.out"

# line_has FILE TOPIC TEXT: polls (bounded, 10 s) until a line on TOPIC containing TEXT.
line_has() {
  for _ in $(seq 1 100); do
    grep -F -- "$2 " "$1" 2>/dev/null | grep -q -F -- "$3" && return 0
    sleep 0.1
  done
  return 1
}
# answers FILE TOPIC TOKEN_PREFIX: how many lines on TOPIC carry a clientToken starting so.
answers() { grep -F -- "$2 " "$1" 2>/dev/null | grep -c -F -- "\"clientToken\":\"$3"; }
# settle FILE PREFIX N: polls (bounded, 60 s) until N answers to tokens PREFIX* arrived.
settle() {
  for _ in $(seq 1 600); do
    local n
    n=$(( $(answers "$1" "$2/update/accepted" "$3") + $(answers "$1" "$2/update/rejected" "$3") ))
    [[ $n -ge $4 ]] && return 0
    sleep 0.1
  done
  return 1
}
# warm_up WHO TOPIC OUT: a get until its answer shows the device's subscription is in place
# (the first publishes may beat it); one a second, below any limit here.
warm_up() {
  for i in $(seq 1 30); do
    pub "$1" "$2/get" "{\"clientToken\":\"w$i\"}" >/dev/null 2>&1
    wait_for "$3" "\"clientToken\":\"w$i\"" 10 && return 0
  done
  return 1
}
warm_up lamp "$L" "$WORK/lamp.out" || abort "lamp gets no answer from the shadow service"
warm_up fan "$F" "$WORK/fan.out" || abort "fan gets no answer from the shadow service"

# ---- one thing over maxLocalRequestsPerSecondPerThing ----------------------------------------
N=200
# shellcheck disable=SC2046
for i in $(seq 1 $N); do echo "{\"state\":{\"reported\":{\"n\":$i}},\"clientToken\":\"b$i\"}"; done |
  timeout 60 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args lamp) -i lamp-burst \
    -t "$L/update" -l >/dev/null 2>&1
# Right after lamp's burst (its bucket empty), fan asks: it has its own bucket.
pub fan "$F/update" '{"state":{"reported":{"on":true}},"clientToken":"fan1"}' >/dev/null 2>&1
check "every one of lamp's $N updates was answered (accepted or rejected)" settle "$WORK/lamp.out" "$L" b $N
OK=$(answers "$WORK/lamp.out" "$L/update/accepted" b)
REFUSED=$(grep -F -- "$L/update/rejected " "$WORK/lamp.out" | grep -F '"clientToken":"b' |
          grep -F '"code":429' | grep -c -F '"message":"Too Many Requests"')
check "a burst over maxLocalRequestsPerSecondPerThing (5/s): 429 Too Many Requests ($REFUSED of $N)" \
  bash -c '(( $1 > 0 ))' _ "$REFUSED"
check "... the rest accepted ($OK), each request answered once either way" \
  bash -c '(( $1 > 0 && $1 + $2 == $3 ))' _ "$OK" "$REFUSED" "$N"
R=$(grep -F -- "$L/update/rejected " "$WORK/lamp.out" | grep -F '"code":429' | head -1)
check "... a refusal in AWS's shape: code, message, timestamp, the request's clientToken" \
  bash -c '[[ -n "$1" ]] || exit 1; p=${1#* }; p=${p% *}; jq -e "(.code == 429) and (.message == \"Too Many Requests\")
           and (.timestamp | type == \"number\") and (.clientToken | startswith(\"b\"))" \
           <<<"$p" >/dev/null' _ "$R"
check "another thing is still served meanwhile (fan's update accepted)" \
  line_has "$WORK/fan.out" "$F/update/accepted" '"clientToken":"fan1"'
check "counted: throttled.thing is the number of 429s ($REFUSED), throttled.total 0" \
  bash -c '[[ $(shadow_metric throttled.thing) == "$1" && $(shadow_metric throttled.total) == 0 ]]' _ "$REFUSED"
check "... and shown in the status line" status_has "refused $REFUSED (thing), 0 (total)"
G=$("$GROVECTL" shadow get lamp 2>&1)
check "lamp's shadow is at version $OK: the accepted updates, the refused ones changed nothing" \
  bash -c '[[ $(jq .version <<<"$1") == "$2" ]]' _ "$G" "$OK"

# ---- all things together over maxTotalLocalRequestsRate (profile changed live) -------------
write_profile 1000 5
check "the profile's new limits are in force (status line)" \
  status_has "local_limits: 1000/s per thing, 5/s in all" 300
# The plugin restarted with the new configuration: its subscriptions to mm-2 are new too.
warm_up lamp "$L" "$WORK/lamp.out" || abort "lamp gets no answer after the reconfiguration"
# shellcheck disable=SC2046
for i in $(seq 1 $N); do echo "{\"state\":{\"reported\":{\"t\":$i}},\"clientToken\":\"t$i\"}"; done |
  timeout 60 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args lamp) -i lamp-burst2 \
    -t "$L/update" -l >/dev/null 2>&1
check "every one of the second burst's $N updates was answered" settle "$WORK/lamp.out" "$L" t $N
TOTAL=$(grep -F -- "$L/update/rejected " "$WORK/lamp.out" | grep -F '"clientToken":"t' |
        grep -c -F '"code":429')
check "a burst over maxTotalLocalRequestsRate (5/s): 429s ($TOTAL of $N)" bash -c '(( $1 > 0 ))' _ "$TOTAL"
check "... counted as throttled.total" \
  bash -c 't=$(shadow_metric throttled.total); (( ${t:-0} >= $1 && $1 > 0 ))' _ "$TOTAL"
# The bus API counts too: 20 grovectl calls at once against 5/s in all.
BUS_PIDS=()
for i in $(seq 1 20); do
  "$GROVECTL" shadow get fan >"$WORK/bus.$i" 2>&1 &
  BUS_PIDS+=($!)
done
wait "${BUS_PIDS[@]}"
BUS=0
for i in $(seq 1 20); do grep -q '"code":429' "$WORK/bus.$i" 2>/dev/null && BUS=$((BUS + 1)); done
check "the bus API is held to the same total: grovectl's gets refused 429 ($BUS of 20)" \
  bash -c '(( $1 > 0 ))' _ "$BUS"

finish
