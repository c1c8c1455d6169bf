#!/usr/bin/env bash
# End-to-end test of grove_broker_plugin.so against a real Mosquitto 2.0 broker.
# Usage: broker_plugin_test.sh /path/to/grove_broker_plugin.so
# Clients are identified by username (plugin_opt_insecure_username_auth true, a test-only mode);
# the real deployment takes the identity from the TLS client certificate CN.
set -u

PLUGIN=${1:?usage: $0 /path/to/grove_broker_plugin.so}
PLUGIN=$(readlink -f "$PLUGIN")
# shellcheck source=broker_test_lib.sh
source "$(dirname "$(readlink -f "$0")")/broker_test_lib.sh"
# shellcheck disable=SC2119  # no extra tools needed
broker_test_init
# Test-only identity: the username (plugin_opt_insecure_username_auth true).
client_args() { echo "-u $1"; }
broker_conf '# test group
thing A
thing B
thing C
pub A t/ab
pub A t/x
pub B t/ba
pub C t/#
deliver A B t/ab
deliver C B t/x
deliver C A t/ca
deliver * B g/+
deliver A B t/src
deliver @function:F A t/src
deliver @cloud B t/src
deliver * C t/src' "" "plugin_opt_insecure_username_auth true"

start_broker "$WORK/mosquitto.conf"

start_sub A 't/#' "$WORK/A.out"
start_sub B '#' "$WORK/B.out"
start_sub grove '#' "$WORK/grove.out"
start_sub C '#' "$WORK/C.out"
C_SUB_PID=${SUB_PIDS[-1]}

# 1. allowed route A -> B (also the readiness barrier for B's and grove's subscriptions:
# republish until both have it, since either SUBSCRIBE may still be in flight)
if deliver_until A t/ab "ab-1" "$WORK/grove.out" && deliver_until A t/ab "ab-1" "$WORK/B.out"; then
  pass "A -> B on t/ab is delivered"
else
  fail "A -> B on t/ab is delivered"
fi
if wait_for "$WORK/grove.out" "t/ab ab-1 grove-source:A"; then
  pass "the internal client sees the stamped source (grove-source:A)"
else
  fail "the internal client sees the stamped source (grove-source:A)"
fi

# readiness barrier for A's subscription: C -> A on t/ca is allowed
deliver_until C t/ca "ca-1" "$WORK/A.out" || fail "C -> A on t/ca is delivered (barrier)"

# 1b. QoS 1 and QoS 2 (QoS 2 fans out only at PUBREL, after other packets may have passed)
if pub A t/ab "ab-q1" -q 1 && pub A t/ab "ab-q2" -q 2 &&
   wait_for "$WORK/B.out" "ab-q1" && wait_for "$WORK/B.out" "ab-q2"; then
  pass "A -> B is delivered at QoS 1 and QoS 2"
else
  fail "A -> B is delivered at QoS 1 and QoS 2"
fi

# 2. B -> A denied: B may publish on t/ba, but there is no `deliver B A`
pub B t/ba "ba-1"
pub C t/ca "ca-marker-2"
if wait_for "$WORK/A.out" "ca-marker-2" && wait_for "$WORK/grove.out" "t/ba ba-1" &&
   ! grep -qF "ba-1" "$WORK/A.out"; then
  pass "B -> A without a deliver rule is not delivered (publish itself allowed)"
else
  fail "B -> A without a deliver rule is not delivered (publish itself allowed)"
fi

# 3. publish without a pub rule is denied and counted
pub A t/zz "zz-1"
pub A t/zz "zz-2" -q 1 2>/dev/null
pub A t/ab "ab-marker-3"
if wait_for "$WORK/grove.out" "ab-marker-3" && ! grep -qF "zz-" "$WORK/grove.out" &&
   ! grep -qF "zz-" "$WORK/B.out"; then
  pass "A on t/zz (no pub rule) reaches nobody"
else
  fail "A on t/zz (no pub rule) reaches nobody"
fi
counted=0
for _ in $(seq 1 30); do
  if grep -qE '"denied_publish":\{[^}]*"A":2' "$STATS" 2>/dev/null; then counted=1; break; fi
  sleep 0.1
done
if [[ $counted == 1 ]]; then
  pass "the denials are counted per thing in the stats file"
else
  fail "the denials are counted per thing in the stats file ($(cat "$STATS" 2>/dev/null))"
fi

# 4. a client-supplied grove-source is ignored: A claims to be C on t/x (B may get t/x only from C)
pub A t/x "spoof-1" -D publish user-property grove-source C
pub C t/x "x-marker-4"
if wait_for "$WORK/B.out" "x-marker-4" && ! grep -qF "spoof-1" "$WORK/B.out"; then
  pass "a spoofed grove-source user property does not open a route"
else
  fail "a spoofed grove-source user property does not open a route"
fi
if wait_for "$WORK/grove.out" "t/x spoof-1 grove-source:A" &&
   ! grep -F "spoof-1" "$WORK/grove.out" | grep -qF "grove-source:C"; then
  pass "the spoofed property is replaced by the real source"
else
  fail "the spoofed property is replaced by the real source"
fi

# 5. messages injected by Grove follow `deliver * ...`
pub grove g/1 "g-1"
pub grove h/1 "h-1"
pub A t/ab "ab-marker-5"
if wait_for "$WORK/B.out" "g/1 g-1" && wait_for "$WORK/B.out" "ab-marker-5" &&
   ! grep -qF "h-1" "$WORK/B.out"; then
  pass "grove-injected messages are delivered only where a 'deliver *' rule matches"
else
  fail "grove-injected messages are delivered only where a 'deliver *' rule matches"
fi

# 5b. grove names the origin of what it injects (grove-source cloud, shadow, function:<name>);
# `deliver @X` rules select by it, `deliver *` takes every grove injection. On t/src: A gets
# @function:F, B gets @cloud (and thing A), C (`deliver * C t/src`) everything grove injects.
gpub() { pub grove t/src "$2" -q 1 -D publish user-property grove-source "$1"; }
deliver_until grove t/src "src-ready" "$WORK/C.out" || fail "grove -> C on t/src (barrier)"
gpub function:F fn-F
gpub cloud cloud-1
gpub shadow shadow-1
gpub function:G fn-G
gpub device:A spoof-devA  # grove may not pass a message off as a device's ...
gpub A spoof-A            # ... not even by a bare thing name (deliver A B t/src exists)
gpub 'function:a/b' fn-bad
pub grove t/x spoof-C -q 1 -D publish user-property grove-source C  # deliver C B t/x exists
pub grove t/src plain-1 -q 1
pub grove t/src twice-1 -q 1 -D publish user-property grove-source cloud \
  -D publish user-property grove-source cloud
pub grove t/src conflict-1 -q 1 -D publish user-property grove-source cloud \
  -D publish user-property grove-source function:F
pub C t/src thing-cloud -q 1 -D publish user-property grove-source cloud  # a thing's claim
# markers: a subscriber has seen everything above once its marker arrived
pub C t/ca "ca-marker-5b"
pub A t/ab "ab-marker-5b"
pub grove t/src "src-marker-5b"
if ! { wait_for "$WORK/A.out" "ca-marker-5b" && wait_for "$WORK/B.out" "ab-marker-5b" &&
       wait_for "$WORK/C.out" "src-marker-5b" && wait_for "$WORK/grove.out" "src-marker-5b"; }; then
  fail "the markers after the grove injections arrive"
fi
# got WHO LINE...: WHO received each exact line. none WHO PAYLOAD...: no line carries PAYLOAD.
got() {
  local f=$WORK/$1.out l; shift
  for l in "$@"; do grep -qxF -- "$l" "$f" || return 1; done
}
none() {
  local f=$WORK/$1.out p; shift
  for p in "$@"; do
    if grep -qE -- "^[^ ]+ $p( |$)" "$f"; then return 1; fi
  done
}
check "grove-source=function:F reaches A (deliver @function:F A), stamped as such" \
  got A "t/src fn-F grove-source:function:F"
check "grove-source=cloud reaches B (deliver @cloud B), stamped as such" \
  got B "t/src cloud-1 grove-source:cloud"
check "function:F does not reach B" none B fn-F
check "cloud does not reach A" none A cloud-1
check "other grove sources (shadow, function:G, plain grove) reach neither A nor B" \
  eval 'none A shadow-1 fn-G fn-bad plain-1 && none B shadow-1 fn-G fn-bad plain-1'
check "deliver * C receives every grove injection, whatever its source" \
  got C "t/src fn-F grove-source:function:F" "t/src cloud-1 grove-source:cloud" \
        "t/src shadow-1 grove-source:shadow" "t/src fn-G grove-source:function:G" \
        "t/src plain-1 grove-source:grove"
check "grove claiming device:A, A or C opens no device route" \
  eval 'none A spoof-devA spoof-A spoof-C && none B spoof-devA spoof-A spoof-C'
check "a refused claim is re-stamped grove-source=grove and follows 'deliver *'" \
  eval 'got C "t/src spoof-devA grove-source:grove" "t/src spoof-A grove-source:grove" \
                "t/src fn-bad grove-source:grove" &&
        got grove "t/src spoof-devA grove-source:grove" "t/x spoof-C grove-source:grove"'
check "a repeated claim is kept once" got B "t/src twice-1 grove-source:cloud"
check "conflicting claims fall back to plain grove" \
  eval 'got C "t/src conflict-1 grove-source:grove" && none A conflict-1 && none B conflict-1'
check "a thing's grove-source=cloud is replaced by its name and opens no @cloud route" \
  eval 'got grove "t/src thing-cloud grove-source:C" && none B thing-cloud && none A thing-cloud'

# 5c. the client id is bound to the identity (here the username; the certificate CN with TLS):
#     the thing's name or, as configured here, <thing>-*; `grove` and grove-* only for grove
cid_pub() {  # cid_pub USER CLIENT-ID PROTOCOL: one publish with that client id
  timeout 5 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V "$3" -u "$1" -i "$2" -t t/ab -m "cid-$2" \
    >"$WORK/cid.out" 2>&1
}
for v in 311 5; do
  check "A may connect with client id A (MQTT $v)" cid_pub A A "$v"
  check "A may connect with client id A-7 (<thing>-*, MQTT $v)" cid_pub A A-7 "$v"
  for bad in B B-1 AB grove grove-sub foo; do
    if cid_pub A "$bad" "$v"; then
      fail "A with client id '$bad' is refused (MQTT $v)"
    elif grep -qiE "not authori[sz]ed" "$WORK/cid.out"; then
      pass "A with client id '$bad' is refused as not authorized (MQTT $v)"
    else
      fail "A with client id '$bad' is refused as not authorized (MQTT $v): $(cat "$WORK/cid.out")"
    fi
  done
done
check "... logged with the client id and its owner" \
  wait_for "$WORK/mosquitto.log" "refused connect of username 'A': client id 'B' is not allowed for 'A' (it belongs to 'B')"
pub C t/ab "cid-marker"
if wait_for "$WORK/grove.out" "cid-marker" &&
   ! grep -qF "Client grove-sub already connected" "$WORK/mosquitto.log"; then
  pass "grove's own link (client id grove-sub) was not kicked by A's attempts"
else
  fail "grove's own link (client id grove-sub) was not kicked by A's attempts"
fi

# 5d. SUBACK refuses (0x80 with 3.1.1, 0x87 with MQTT 5) a filter that can match nothing the
#     table delivers to the thing; a filter that overlaps a deliver rule is granted
sub_once() {  # sub_once USER FILTER PROTOCOL: subscribe, exit once SUBACK is in
  timeout 5 mosquitto_sub -h 127.0.0.1 -p "$PORT" -V "$3" -u "$1" -i "$1-suback" -t "$2" -E \
    >"$WORK/suback.out" 2>&1
}
for v in 311 5; do
  for f in 'nothing/#' 'u/+/x' '$SYS/#' 't/ab' '$share/g/t/ab'; do
    sub_once A "$f" "$v"
    check "A's subscription to '$f' is refused in SUBACK (MQTT $v)" \
      grep -q "All subscription requests were denied" "$WORK/suback.out"
  done
  for f in '#' 't/+' 't/ca' '+/src' '$share/g/t/ca'; do
    if sub_once A "$f" "$v" && ! grep -q "denied" "$WORK/suback.out"; then
      pass "A's subscription to '$f' is granted (overlaps a deliver rule; MQTT $v)"
    else
      fail "A's subscription to '$f' is granted (overlaps a deliver rule; MQTT $v): $(cat "$WORK/suback.out")"
    fi
  done
done
check "refused subscriptions are counted (denied_subscribe)" \
  bash -c 'for _ in $(seq 1 30); do grep -qE "\"denied_subscribe\":([1-9][0-9])" "$1" && exit 0; sleep 0.1; done; exit 1' _ "$STATS"

# 5e. a denied publish is logged at info level, naming the missing route, rate-limited (B has no denial before)
printf 'z1\nz2\nz3\nz4\nz5\n' | timeout 5 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 -u B \
  -i B-deny -t z/q -l >/dev/null 2>&1
check "a denied publish is logged with the missing route" \
  wait_for "$WORK/mosquitto.log" "denied publish by 'B' on 'z/q': no route from device:B"
logged=$(grep -c "denied publish by 'B' on 'z/q'" "$WORK/mosquitto.log")
check "... rate-limited: 5 quick denials, $logged log lines" test "$logged" -ge 1 -a "$logged" -lt 5

# 5f. wills. Mosquitto sends a will without the plugin's message event, so the plugin stamps a
#     copy: it reaches grove and devices as its real device, and only where the table allows.
#     C: pub t/#, deliver C B t/x (not t/ab: B gets t/ab only from A).
will_client() {  # will_client ID TOPIC PAYLOAD [extra args]: C with a will, connected
  local id=$1 topic=$2 payload=$3
  shift 3
  mosquitto_sub -h 127.0.0.1 -p "$PORT" -V 5 -u C -i "$id" -t t/src -q 1 \
    --will-topic "$topic" --will-payload "$payload" --will-qos 1 \
    -D will user-property grove-source A "$@" >"$WORK/$id.out" 2>&1 &
  WILL_PID=$!
  SUB_PIDS+=("$WILL_PID")
  wait_for "$WORK/mosquitto.log" "as $id (" 50
}
# an allowed will, carrying a forged grove-source=A
if will_client C-will1 t/x will-x-1 && kill -9 "$WILL_PID" &&
   wait_for "$WORK/B.out" "t/x will-x-1" 50; then
  pass "C's will on t/x reaches B (deliver C B t/x)"
else
  fail "C's will on t/x reaches B (deliver C B t/x)"
fi
check "... and grove, as C (grove-source:C), whatever the will claimed" \
  wait_for "$WORK/grove.out" "t/x will-x-1 grove-source:C"
check "... never as A (the forged grove-source)" \
  bash -c '! grep -F "will-x-1" "$1" | grep -qF "grove-source:A"' _ "$WORK/grove.out"
check "... B gets it stamped as C too" \
  bash -c 'grep -F "will-x-1" "$1" | grep -qF "grove-source:C" && ! grep -F "will-x-1" "$1" | grep -qF "grove-source:A"' _ "$WORK/B.out"
# wills to a target no rule allows (B gets t/ab only from A), with and without a will delay,
# each right after A's messages on t/ab of the same length (freed stored messages to reuse)
for i in 1 2 3 4 5 6; do
  extra=()
  if [[ $i -gt 3 ]]; then extra=(-x 30 -D will will-delay-interval 1); fi
  will_client "C-wab$i" t/ab "willab-$i" "${extra[@]}" || fail "will client C-wab$i connects"
  for j in 1 2 3; do pub A t/ab "abpad-$i" >/dev/null 2>&1; done
  kill -9 "$WILL_PID"
  wait_for "$WORK/grove.out" "t/ab willab-$i grove-source:C" 50 ||
    fail "C's will $i on t/ab reaches grove as C"
done
pub A t/ab "ab-after-wills"
if wait_for "$WORK/B.out" "ab-after-wills" && ! grep -qF "willab-" "$WORK/B.out"; then
  pass "no will of C on t/ab reached B (no rule C -> B on t/ab), with or without a will delay"
else
  fail "no will of C on t/ab reached B (no rule C -> B on t/ab): $(grep -F willab- "$WORK/B.out" | tr '\n' ' ')"
fi
check "wills are counted (wills_forwarded)" \
  bash -c 'for _ in $(seq 1 30); do grep -qE "\"wills_forwarded\":([7-9]|[1-9][0-9])" "$1" && exit 0; sleep 0.1; done; exit 1' _ "$STATS"

# 6. unknown usernames and anonymous clients are refused at connect
if pub Z t/ab "z-1" 2>/dev/null; then
  fail "an unknown username is refused at connect"
else
  pass "an unknown username is refused at connect"
fi
if timeout 5 mosquitto_pub -h 127.0.0.1 -p "$PORT" -t t/ab -m anon 2>/dev/null; then
  fail "an anonymous client is refused at connect"
else
  pass "an anonymous client is refused at connect"
fi

# 7. a live ACL change applies without restarting the broker or dropping connections
echo "deliver B A t/ba" >>"$ACL"
live=0
for i in $(seq 1 40); do
  pub B t/ba "live-$i" >/dev/null 2>&1
  if wait_for "$WORK/A.out" "live-$i" 2; then live=1; break; fi
done
if [[ $live == 1 ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
  pass "an added deliver rule applies live (no restart)"
else
  fail "an added deliver rule applies live (no restart)"
fi
if kill -0 "${SUB_PIDS[0]}" 2>/dev/null; then
  pass "the subscriber connection survived the table change"
else
  fail "the subscriber connection survived the table change"
fi

# 8. a broken ACL file is refused and the previous table stays in force
cp "$ACL" "$WORK/acl.good"
echo "bogus line" >>"$ACL"
errored=0
for _ in $(seq 1 40); do
  if grep -qE '"acl_errors":[1-9]' "$STATS" 2>/dev/null; then errored=1; break; fi
  sleep 0.1
done
if [[ $errored == 1 ]] && deliver_until A t/ab "ab-after-bad" "$WORK/B.out"; then
  pass "a broken ACL file is reported and the previous table stays in force"
else
  fail "a broken ACL file is reported and the previous table stays in force"
fi

# 8b. '@' tokens are validated: a thing named @x, an empty or bad @function: name, an unknown
# @source each reject the whole table (counted, reported by line), and so does a statement
# after `end`; the old table stays.
errors_before=$(grep -oE '"acl_errors":[0-9]+' "$STATS" | cut -d: -f2)
n=0
for bad in "thing @x|thing name '@x' must not start with '@'" "deliver @function: B t/src|bad source '@function:'" \
           "deliver @function:a/b B t/src|bad source" "deliver @foo B t/src|bad source '@foo'" \
           $'end\npub B t/src|\'pub\' after end'; do
  why=${bad#*|}
  bad=${bad%%|*}
  n=$((n + 1))
  { cat "$WORK/acl.good"; echo "$bad"; } >"$ACL.tmp" && mv "$ACL.tmp" "$ACL"
  line=$(wc -l <"$ACL")
  rejected=0
  for _ in $(seq 1 100); do
    if grep -qF "\"acl_errors\":$((errors_before + n))," "$STATS" 2>/dev/null &&
       grep -qF "acl.txt: line $line: $why" "$STATS"; then rejected=1; break; fi
    sleep 0.1
  done
  check "'$bad' rejects the table (line $line: $why..., acl_errors counted)" \
    test "$rejected" = 1
done
# the previous table (with its @ rules) is still in force
kept=0
for i in $(seq 1 30); do
  gpub function:F "kept-$i" >/dev/null 2>&1
  if wait_for "$WORK/A.out" "kept-$i" 3; then kept=1; break; fi
done
check "after the rejected tables, deliver @function:F A still applies" test "$kept" = 1
gpub cloud kept-cloud
pub C t/ca "ca-marker-8b"
if wait_for "$WORK/A.out" ca-marker-8b && none A kept-cloud; then
  pass "... and @cloud still does not reach A"
else
  fail "... and @cloud still does not reach A"
fi

# 9. a thing removed from the group is disconnected (and refused when it reconnects)
grep -v -E '^(thing C|pub C|deliver C|deliver . C)' "$WORK/acl.good" >"$ACL"
gone=0
for _ in $(seq 1 50); do
  if ! kill -0 "$C_SUB_PID" 2>/dev/null; then gone=1; break; fi
  sleep 0.1
done
if [[ $gone == 1 ]] && ! pub C c/1 "c-1" 2>/dev/null; then
  pass "a thing removed from the table is disconnected and refused"
else
  fail "a thing removed from the table is disconnected and refused"
fi

broker_test_finish 60 A B C grove
