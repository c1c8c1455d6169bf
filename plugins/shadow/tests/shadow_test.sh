#!/usr/bin/env bash
# End-to-end test of the shadow plugin with real processes: groved runs message_manager
# (its managed Mosquitto, mutual TLS) and shadow; devices are mosquitto_pub/sub with
# certificates from tools/grove-certs speaking AWS IoT's shadow topics; grovectl uses the
# bus API. Covers the classic and named sequences, rejections, the subscription table
# deciding who hears, allow_unknown_things set live, and kill -9 of groved during a stream
# of updates.
# Usage: shadow_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=shadow_test_lib.sh
source "$HERE/shadow_test_lib.sh"
shadow_open "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}"

# lamp reaches its own shadow; other may ask about lamp's and an unknown thing's, but
# only hears answers about the unknown thing, and the deltas of lamp's named shadow
# `watched` (one topic granted, to tell who hears what).
WATCHED='$aws/things/lamp/shadow/name/watched'
shadow_group shadow-e2e lamp other "$(shadow_routes lamp; shadow_routes other + ghost)
  - {id: shadow-other-watched, source: shadow, subject: \"$WATCHED/update/delta\", target: \"device:other\"}"
# max_inflight_per_thing: so that a burst of one device must hit it; the local request
# limits (rateLimits) are shadow_ratelimit_test's, high here.
shadow_profile "      max_inflight_per_thing: 2
      rateLimits: {maxTotalLocalRequestsRate: 1000000, maxLocalRequestsPerSecondPerThing: 1000000}"

start_local_groved 2
pass "groved runs message_manager and shadow, which took the group's devices"

S='$aws/things/lamp/shadow'
start_sub lamp "$S/#" "$WORK/lamp.out"
start_sub other '$aws/things/#' "$WORK/other.out"

# line_with FILE TOPIC TEXT: polls until a line on TOPIC containing TEXT arrives; prints
# its payload.
line_with() {
  for _ in $(seq 1 100); do
    local l
    l=$(grep -F -- "$2 " "$1" 2>/dev/null | grep -F -- "$3" | tail -1)
    if [[ -n "$l" ]]; then
      l=${l#"$2 "}
      echo "${l% *}"  # drops the properties column (%P)
      return 0
    fi
    sleep 0.1
  done
  return 1
}
# jq_is JSON FILTER VALUE
jq_is() {
  local got
  got=$(jq -c "$2" <<<"$1" 2>/dev/null)
  [[ "$got" == "$3" ]] || { echo "jq '$2' is '$got', expected '$3' in $1" >&2; return 1; }
}
export -f jq_is
ask "$S/get" '{"clientToken":"w1"}' w1 "$S/get/rejected" lamp "$WORK/lamp.out" 20 >/dev/null ||
  abort "lamp gets no answer from the shadow service"

# ---- the classic sequence ------------------------------------------------------------------
A=$(ask "$S/update" '{"state":{"desired":{"color":"red","level":3}},"clientToken":"t1"}' t1 "$S/update/accepted")
check "update desired -> update/accepted, version 1, clientToken echoed, per-leaf metadata" \
  bash -c 'jq_is "$1" .version 1 && jq_is "$1" .state.desired.color "\"red\"" &&
           jq_is "$1" ".metadata.desired.color.timestamp|type" "\"number\""' _ "$A"
D=$(line_with "$WORK/lamp.out" "$S/update/delta" '"version":1')
check "... the device hears update/delta with the desired leaves" \
  bash -c 'jq_is "$1" .state "{\"color\":\"red\",\"level\":3}"' _ "$D"
A=$(ask "$S/update" '{"state":{"reported":{"color":"red","level":1}},"clientToken":"t2"}' t2 "$S/update/accepted")
DOCS=$(line_with "$WORK/lamp.out" "$S/update/documents" '"version":2')
check "device reports -> update/documents with previous (v1) and current (v2)" \
  bash -c 'jq_is "$1" .previous.version 1 && jq_is "$1" .current.version 2 &&
           jq_is "$1" .current.state.reported.level 1' _ "$DOCS"
check "... and no new delta for a reported-only update" \
  bash -c '[[ $(grep -c "/update/delta " "$1") == 1 ]]' _ "$WORK/lamp.out"
G=$(ask "$S/get" '{"clientToken":"g1"}' g1 "$S/get/accepted")
check "get -> state with desired, reported and only the differing delta leaf" \
  bash -c 'jq_is "$1" .state.delta "{\"level\":3}" && jq_is "$1" .version 2' _ "$G"
R=$(ask "$S/update" '{"state":{"desired":{"level":9}},"version":1,"clientToken":"t3"}' t3 "$S/update/rejected")
check "an update at a stale version -> 409 Version conflict" \
  bash -c 'jq_is "$1" .code 409 && jq_is "$1" .message "\"Version conflict\""' _ "$R"
ask "$S/update" '{"state":{"desired":{"color":null,"level":null}},"clientToken":"t4"}' t4 "$S/update/accepted" >/dev/null
G=$(ask "$S/get" '{"clientToken":"g2"}' g2 "$S/get/accepted")
check "null deletes every desired key, and the emptied section goes" \
  bash -c 'jq_is "$1" ".state|has(\"desired\")" false && jq_is "$1" .version 3' _ "$G"
A=$(ask "$S/delete" '{"clientToken":"d1"}' d1 "$S/delete/accepted")
check "delete -> delete/accepted with the last version" bash -c 'jq_is "$1" .version 3' _ "$A"
R=$(ask "$S/get" '{"clientToken":"g3"}' g3 "$S/get/rejected")
check "get after delete -> 404 No shadow exists" \
  bash -c 'jq -e --arg m "$2" ".code == 404 and .message == \$m" <<<"$1" >/dev/null' _ "$R" \
  "No shadow exists with name: 'lamp'"
A=$(ask "$S/update" '{"state":{"reported":{"on":true}},"clientToken":"t5"}' t5 "$S/update/accepted")
check "re-created within 48 hours: versions continue (4)" bash -c 'jq_is "$1" .version 4' _ "$A"

# ---- named shadows --------------------------------------------------------------------------
N="$S/name/cfg"
A=$(ask "$N/update" '{"state":{"desired":{"rate":5}},"clientToken":"n1"}' n1 "$N/update/accepted")
check "named shadow: update/accepted on its own topics, version 1" \
  bash -c 'jq_is "$1" .version 1' _ "$A"
check "... with its delta" line_with "$WORK/lamp.out" "$N/update/delta" '"rate":5'
ask "$S/name/other:1/update" '{"state":{"reported":{"x":1}},"clientToken":"n2"}' n2 "$S/name/other:1/update/accepted" >/dev/null
LIST=$("$GROVECTL" shadow list lamp 2>&1)
check "grovectl shadow list: the named shadows, not the classic one" \
  bash -c 'jq_is "$1" .results "[\"cfg\",\"other:1\"]"' _ "$LIST"
PAGE=$("$GROVECTL" shadow list lamp --page-size 1 2>&1)
check "... a page at a time with nextToken" \
  bash -c 'jq_is "$1" .results "[\"cfg\"]" && jq_is "$1" .nextToken "\"cfg\""' _ "$PAGE"

# ---- bus API --------------------------------------------------------------------------------
OUT=$("$GROVECTL" shadow update lamp --name cfg '{"state":{"reported":{"rate":5}},"clientToken":"c1"}' 2>&1)
check "grovectl shadow update: the accepted document, next version" \
  bash -c 'jq_is "$1" .version 2 && jq_is "$1" .clientToken "\"c1\""' _ "$OUT"
check "... and the device hears update/documents from it" \
  line_with "$WORK/lamp.out" "$N/update/documents" '"version":2'
OUT=$("$GROVECTL" shadow get lamp --name cfg 2>&1)
check "grovectl shadow get: no delta once reported matches" \
  bash -c 'jq_is "$1" ".state|has(\"delta\")" false' _ "$OUT"
refused "grovectl shadow get of a missing shadow exits 1" "$GROVECTL" shadow get lamp --name nope
refused "a wildcard-looking thing name through the bus API is refused" \
  "$GROVECTL" shadow get 'lamp/#'
refused "... and a shadow name with a '+'" "$GROVECTL" shadow get lamp --name 'a+b'
OUT=$("$GROVECTL" shadow delete lamp --name cfg 2>&1)
check "grovectl shadow delete: the deleted version (2)" bash -c 'jq_is "$1" .version 2' _ "$OUT"

# ---- rejections of bad input --------------------------------------------------------------------
R=$(ask "$S/update" '{"state":{"desired":5},"clientToken":"b1"}' b1 "$S/update/rejected")
check "desired not an object -> 400" \
  bash -c 'jq_is "$1" .message "\"Desired node must be an object\""' _ "$R"
R=$(ask "$S/update" '{"state":{"desired":{"a":{"b":{"c":{"d":{"e":{"f":{"g":1}}}}}}}},"clientToken":"b2"}' b2 "$S/update/rejected")
check "nesting of 7 -> 400 too many levels" \
  bash -c 'jq_is "$1" .code 400 && jq_is "$1" .message "\"JSON contains too many levels of nesting; maximum is 6\""' _ "$R"
R=$(ask "$S/update" '{"state":{},"version":"1","clientToken":"b3"}' b3 "$S/update/rejected")
check "a version that is no integer -> 400 Invalid version" \
  bash -c 'jq_is "$1" .message "\"Invalid version\""' _ "$R"
BIG=$(head -c 9000 /dev/zero | tr '\0' x)
R=$(ask "$S/update" "{\"state\":{\"reported\":{\"big\":\"$BIG\"}},\"clientToken\":\"b4\"}" b4 "$S/update/rejected")
check "state over 8192 bytes -> 413" bash -c 'jq_is "$1" .code 413' _ "$R"
pub lamp "$S/update" '{"state":' >/dev/null 2>&1
check "invalid JSON -> 400 Invalid JSON" line_with "$WORK/lamp.out" "$S/update/rejected" '"Invalid JSON"'
printf '{"state":{"reported":{"s":"\xff"}}}' >"$WORK/bad-utf8"
# shellcheck disable=SC2046
timeout 5 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args lamp) -i lamp-utf8 \
  -t "$S/update" -f "$WORK/bad-utf8" >/dev/null 2>&1
check "a payload that is not UTF-8 -> 415" line_with "$WORK/lamp.out" "$S/update/rejected" '"code":415'
G=$(ask "$S/get" '{"clientToken":"g4"}' g4 "$S/get/accepted")
check "... and none of them changed the shadow (still version 4)" \
  bash -c 'jq_is "$1" .version 4' _ "$G"
R=$(ask '$aws/things/ghost/shadow/get' '{"clientToken":"u1"}' u1 '$aws/things/ghost/shadow/get/rejected' other "$WORK/other.out" 20)
check "a thing outside the group -> 404 Thing not found" \
  bash -c 'jq_is "$1" .code 404 && jq_is "$1" .message "\"Thing not found\""' _ "$R"
pub other "$S/get" '{"clientToken":"spy"}' >/dev/null 2>&1
check "the shadow answered other's request about lamp (to lamp, per the table)" \
  line_with "$WORK/lamp.out" "$S/get/accepted" '"clientToken":"spy"'
check "... and other, with no route from shadow for lamp's topics, heard none of it" \
  bash -c '! grep -q "things/lamp" "$1"' _ "$WORK/other.out"
# count FILE TOPIC: how many messages on TOPIC are in FILE.
count() { grep -c -F -- "$2 " "$1"; }
export -f count line_with
check "... though lamp, granted them, heard lamp's accepted, update/delta and update/documents" \
  bash -c '(( $(count "$1" "$2/update/accepted") > 0 && $(count "$1" "$2/update/delta") > 0 &&
              $(count "$1" "$2/update/documents") > 0 ))' _ "$WORK/lamp.out" "$S"

# One topic granted: other hears the deltas of lamp's shadow `watched` and nothing else
# about it. Each answer and event of an update is published before the next update's
# (accepted, delta, documents): once other has the second delta, whatever it was to hear
# of the first update and the get between them has arrived.
A=$(ask "$WATCHED/update" '{"state":{"desired":{"mode":"a"}},"clientToken":"wa1"}' wa1 "$WATCHED/update/accepted")
check "lamp updates its shadow watched: update/accepted" bash -c 'jq_is "$1" .version 1' _ "$A"
ask "$WATCHED/get" '{"clientToken":"wg1"}' wg1 "$WATCHED/get/accepted" >/dev/null
A=$(ask "$WATCHED/update" '{"state":{"desired":{"mode":"b"}},"clientToken":"wa2"}' wa2 "$WATCHED/update/accepted")
check "... again: update/accepted (version 2)" bash -c 'jq_is "$1" .version 2' _ "$A"
check "lamp (granted $WATCHED/#) hears get/accepted, and update/delta and update/documents of both" \
  bash -c 'line_with "$1" "$2/update/documents" "\"version\":2" >/dev/null &&
           (( $(count "$1" "$2/get/accepted") == 1 && $(count "$1" "$2/update/delta") == 2 &&
              $(count "$1" "$2/update/documents") == 2 ))' _ "$WORK/lamp.out" "$WATCHED"
check "other (granted $WATCHED/update/delta only) hears both deltas" \
  line_with "$WORK/other.out" "$WATCHED/update/delta" '"mode":"b"'
check "... but not the update/accepted, update/documents or get/accepted lamp heard" \
  bash -c '(( $(count "$1" "$2/update/delta") == 2 && $(count "$1" "$2/update/accepted") == 0 &&
              $(count "$1" "$2/update/documents") == 0 && $(count "$1" "$2/get/accepted") == 0 ))' \
  _ "$WORK/other.out" "$WATCHED"
check "... nor anything else about lamp" \
  bash -c '! grep -v -F -- "$2/update/delta " "$1" | grep -q "things/lamp"' _ "$WORK/other.out" "$WATCHED"

# ---- a flood from one device ------------------------------------------------------------------
# shellcheck disable=SC2046
for i in $(seq 1 2000); do echo "{\"state\":{\"reported\":{\"f\":$i}},\"clientToken\":\"f$i\"}"; done |
  timeout 60 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args lamp) -i lamp-flood \
    -t "$S/name/flood/update" -l >/dev/null 2>&1
check "a flood from one device: 429 Too Many Requests beyond max_inflight_per_thing" \
  line_with "$WORK/lamp.out" "$S/name/flood/update/rejected" '"message":"Too Many Requests"'
R=$(ask '$aws/things/ghost/shadow/get' '{"clientToken":"u2"}' u2 '$aws/things/ghost/shadow/get/rejected' other "$WORK/other.out" 20)
check "... another device is answered as before" bash -c 'jq_is "$1" .code 404' _ "$R"
G=$(ask "$S/get" '{"clientToken":"after-flood"}' after-flood "$S/get/accepted" lamp "$WORK/lamp.out" 20)
check "... and the flooding device again once its answers went out" \
  bash -c 'jq_is "$1" .version 4' _ "$G"

# ---- hot reload ---------------------------------------------------------------------------------
check "grovectl reload shadow" "$GROVECTL" reload shadow
G=$(ask "$S/get" '{"clientToken":"after-reload"}' after-reload "$S/get/accepted")
check "... carries every shadow (a device's get right after it: lamp at version 4)" \
  bash -c 'jq_is "$1" .version 4' _ "$G"

# ---- allow_unknown_things: true (profile changed live) ------------------------------------------
# ghost is in no group (404 Thing not found above); now it is served like a device of the
# group. other, granted ghost's topics, asks until the restarted plugin answers it.
shadow_profile "      max_inflight_per_thing: 2
      allow_unknown_things: true
      rateLimits: {maxTotalLocalRequestsRate: 1000000, maxLocalRequestsPerSecondPerThing: 1000000}"
GH='$aws/things/ghost/shadow'
R=$(ask "$GH/update" '{"state":{"reported":{"seen":1}},"clientToken":"unk1"}' unk1 \
        "$GH/update/accepted" other "$WORK/other.out" 20)
check "allow_unknown_things: true (live): a thing outside the group is served (update accepted)" \
  bash -c 'jq_is "$1" .version 1' _ "$R"
check "... and its shadow kept" \
  bash -c 'jq_is "$("$1" shadow get ghost)" .state.reported.seen 1' _ "$GROVECTL"

# ---- kill -9 during a stream of updates -----------------------------------------------------
K="$S/name/stream"
# shellcheck disable=SC2046
(for i in $(seq 1 3000); do
   echo "{\"state\":{\"reported\":{\"seq\":$i}},\"clientToken\":\"k$i\"}"
   sleep 0.002  # pacing the stream, not waiting for anything
 done) | timeout 120 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 $(client_args lamp) \
           -i "lamp-stream" -t "$K/update" -l >/dev/null 2>&1 &
STREAM=$!
for _ in $(seq 1 300); do
  [[ $(grep -c "^$K/update/accepted " "$WORK/lamp.out") -ge 200 ]] && break
  sleep 0.1
done
stop_groved KILL
kill "$STREAM" 2>/dev/null
sleep 0.5 # lets the subscriber print what it read before the broker went away
LAST=$(grep "^$K/update/accepted " "$WORK/lamp.out" | sed "s|^$K/update/accepted ||; s| [^ ]*\$||" |
       jq -s 'max_by(.version) | [.version, .state.reported.seq] | @csv' -r 2>/dev/null)
check "updates were accepted before the kill ($LAST)" bash -c '[[ -n "$1" ]]' _ "$LAST"
start_local_groved 2
OUT=$("$GROVECTL" shadow get lamp --name stream 2>&1)
check "after kill -9 and restart: the shadow has every accepted version" \
  bash -c 'v=$(jq .version <<<"$1"); s=$(jq .state.reported.seq <<<"$1");
           [[ $v -ge ${2%,*} && $s -ge ${2#*,} ]] || { echo "have $v/$s, accepted $2" >&2; exit 1; }' _ "$OUT" "$LAST"
check "... and the documents before it (classic lamp at version 4)" \
  bash -c 'jq_is "$("$2" shadow get lamp)" .version 4' _ "$OUT" "$GROVECTL"
OUT=$("$GROVECTL" shadow update lamp --name cfg '{"state":{"reported":{"back":true}}}' 2>&1)
check "... and the tombstone of a shadow deleted before it: versions continue (3)" \
  bash -c 'jq_is "$1" .version 3' _ "$OUT"

finish
