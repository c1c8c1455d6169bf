#!/usr/bin/env bash
# End-to-end test of the shadow plugin's cloud sync (README "Cloud sync") with real
# processes: groved runs message_manager (its managed Mosquitto, mutual TLS; the cloud
# link to a TLS Mosquitto standing in for AWS IoT, `system_clients: [shadow]`) and shadow;
# tests/support/fake_aws_shadow.py answers the AWS shadow topics on that cloud broker and
# lets the test read, seed and change the cloud's documents. A device (mosquitto_sub with
# its certificate) hears its shadow's events; grovectl changes shadows locally.
# Checks: a local update reaches the cloud (classic, named, and a group device's
# sync_shadow), a cloud update reaches the device (delta) without coming back, a device
# given sync_shadow live has its cloud document read at once (also beyond 50 synced things,
# under the one wildcard filter), edits made
# on both sides while the cloud link is down are merged per leaf once it is back (and a
# cloud-only change comes down on reconnect), kill -9 of groved during a stream of syncs
# converges after the restart; then deviceToCloud ignores cloud edits, and the outbound
# rate limit coalesces a burst yet delivers the final state; strategy periodic sends at
# most once per period; cloudToDevice ignores local edits.
# Usage: sync_test.sh GROVED GROVECTL GROVE_CERTS FAKE_AWS_SHADOW_PY
set -u

HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=shadow_test_lib.sh
source "$HERE/shadow_test_lib.sh"
# shellcheck source=sync_test_lib.sh
source "$HERE/sync_test_lib.sh"
sync_open "$@"

# ---- groved: message_manager with the cloud, shadow syncing lamp (classic + cfg) and fan --------
# write_group [DEVICES]: the group, with DEVICES (flow-style entries) after lamp and fan;
# replaced at once (a running groved watches it).
write_group() {
  cat >"$WORK/group.yaml.new" <<EOF
name: shadow-sync
devices: [{thing: lamp}, {thing: fan, sync_shadow: true}${1:+, $1}]
subscriptions:
  - {id: shadow-lamp, source: shadow, subject: "\$aws/things/lamp/shadow/#", target: "device:lamp"}
EOF
  mv "$WORK/group.yaml.new" "$WORK/group.yaml"
}
write_group
# write_profile SHADOW_CONFIG_LINES: the image profile with this shadow configuration,
# message_manager's cloud link (shadow a system client) and file spool.
write_profile() {
  shadow_profile "$1" "$(mm_profile_cloud)
        system_clients: [shadow]
      spool: {storage: file, max_size_bytes: 10000000}"
}
# The local request limits (20/s per thing by default) would refuse the test's own
# polling and bursts of grovectl calls: they are not what this test is about.
LOCAL_LIMITS="maxTotalLocalRequestsRate: 1000000, maxLocalRequestsPerSecondPerThing: 1000000"
write_profile "      synchronize:
        shadowDocuments: [{thingName: lamp, classic: true, namedShadows: [cfg]}]
      rateLimits: {$LOCAL_LIMITS}"
start_groved() {
  launch_groved
  status_has "cloud: connected" 200 || abort "message_manager did not connect to the cloud"
  status_has "sync: 3 shadows, subscribed" 200 || abort "the shadow plugin did not subscribe"
}
start_groved
pass "groved runs message_manager (cloud, system_clients: [shadow]) and shadow syncing 3 shadows"

start_sub lamp '$aws/things/lamp/shadow/#' "$WORK/lamp.out"
for i in $(seq 1 100); do  # lamp's subscription is in place once an answer shows up
  local_update lamp '{"state":{"reported":{"probe":'"$i"'}}}'
  grep -q 'update/documents' "$WORK/lamp.out" && break
  sleep 0.1
done
grep -q 'update/documents' "$WORK/lamp.out" || abort "lamp hears no shadow events"

# ---- local -> cloud ---------------------------------------------------------------------------------
local_update lamp '{"state":{"desired":{"color":"red","level":1,"old":1}}}'
eventually "a local update reaches the cloud (classic shadow)" \
  cloud_is lamp .state.desired '{"color":"red","level":1,"old":1}'
local_update lamp '{"state":{"reported":{"mode":"auto"}}}' cfg
eventually "... and a named shadow's" cloud_is lamp .state.reported '{"mode":"auto"}' cfg
local_update fan '{"state":{"reported":{"rpm":900}}}'
eventually "... and that of a group device with sync_shadow: true" \
  cloud_is fan .state.reported '{"rpm":900}'
local_update lamp '{"state":{"desired":{"level":null}}}'
eventually "a local null delete reaches the cloud" \
  cloud_is lamp .state.desired '{"color":"red","old":1}'

# ---- cloud -> device -----------------------------------------------------------------------------
SENT=$(shadow_metric sync.sent)
APPLIED=$(shadow_metric sync.applied)
cloud_update lamp '{"state":{"desired":{"level":7}}}'
eventually "a cloud update reaches the device as update/delta" \
  grep -q '^\$aws/things/lamp/shadow/update/delta {.*"level":7' "$WORK/lamp.out"
eventually "... and the local shadow" local_is lamp .state.desired.level 7
eventually "... counted (sync.applied)" bash -c '[[ $(shadow_metric sync.applied) -gt $1 ]]' _ "$APPLIED"
check "... and nothing went back to the cloud for it (sync.sent $SENT -> $(shadow_metric sync.sent))" \
  bash -c '[[ $(shadow_metric sync.sent) == "$1" ]]' _ "$SENT"

# ---- a device with sync_shadow added to the group live --------------------------------------------
# Its filter joins a set already in force: message_manager answers "subscribed" again (the
# state the plugin had), which must count as news all the same: the new shadow is read
# from the cloud and the status says so. (Missed, the status stayed "subscribing" and the
# shadow unread until the link went down and up: shadow_sync_offline_test's first wait
# hung so when the group came after the first answer.)
cloud_put heater '{"state":{"desired":{"temp":21}},"version":4}' || abort "seeding the cloud's heater"
write_group "{thing: heater, sync_shadow: true}"
check "a device with sync_shadow added live: its filter in force (sync: 4 shadows, subscribed)" \
  status_has "sync: 4 shadows, subscribed" 300
eventually "... and its shadow read from the cloud at once (no local change, no reconnect)" \
  local_is heater .state.desired.temp 21
write_group
check "... removed again: the set of 3 in force (sync: 3 shadows, subscribed)" \
  status_has "sync: 3 shadows, subscribed" 300

# ---- more than 50 synced things: one wildcard filter ------------------------------------------------
# AWS allows 50 filters per connection: beyond, the plugin subscribes to every thing's
# shadow topics with one wildcard. A device with sync_shadow added then leaves that set as
# it was, so message_manager says nothing new: the plugin must read the new shadow itself.
# (Missed, the new shadow stayed unread until the link went down and up.)
MANY=$(for i in $(seq -w 1 50); do printf '{thing: many%s, sync_shadow: true}, ' "$i"; done)
MANY=${MANY%, }
write_group "$MANY"
check "52 synced things: the wildcard filter in force (sync: 53 shadows, subscribed)" \
  status_has "sync: 53 shadows, subscribed" 300
cloud_put boiler '{"state":{"desired":{"temp":30}},"version":2}' || abort "seeding the cloud's boiler"
write_group "$MANY, {thing: boiler, sync_shadow: true}"
check "... a device with sync_shadow added live: the same wildcard, in force (54 shadows, subscribed)" \
  status_has "sync: 54 shadows, subscribed" 300
eventually "... and its shadow read from the cloud at once (no local change, no reconnect)" \
  local_is boiler .state.desired.temp 30
cloud_update boiler '{"state":{"desired":{"temp":31}}}'
eventually "... and a cloud update of it comes down through the wildcard" \
  local_is boiler .state.desired.temp 31
write_group
check "... the 51 removed again: one filter per thing (sync: 3 shadows, subscribed)" \
  status_has "sync: 3 shadows, subscribed" 300

# ---- offline edits on both sides, merged per leaf -------------------------------------------------
# Base: desired {color: red, level: 7, old: 1}. While the cloud link is down the cloud
# changes mode (its own), deletes old, sets level 9 later than the device and color
# green earlier than the device; the device sets color blue, level 1 and spot.
eventually "both sides agree before going offline" \
  bash -c 'doc_is "$(cloud_doc lamp)" .state.desired "$(jq -cS .state.desired <<<"$(local_doc lamp)")"'
stop_cloud  # the fake stays: its documents are "the cloud"; it reconnects by itself
status_has "cloud link down" 200 || abort "the shadow plugin did not hear the cloud link go (mm-10)"
pass "the cloud link is down and the shadow plugin knows it (mm-10)"
local_update lamp '{"state":{"desired":{"color":"blue","level":1,"spot":true}}}'
NOW=$(date +%s)
SEED=$(cloud_doc lamp | jq -c --argjson now "$NOW" '
  .state.desired = {color: "green", level: 9, mode: "eco"}
  | .metadata.desired = {color: {timestamp: ($now - 1000)}, level: {timestamp: ($now + 1000)},
                         mode: {timestamp: $now}}
  | .version += 1 | del(.timestamp)')
cloud_put lamp "$SEED" || abort "seeding the cloud's lamp"
SEED=$(cloud_doc lamp cfg | jq -c '.state.reported.mode = "manual" | .version += 5 | del(.timestamp)')
cloud_put lamp/cfg "$SEED" || abort "seeding the cloud's lamp/cfg"
start_cloud
cloud_connected || abort "the fake did not reconnect"
MERGED='{"color":"blue","level":9,"mode":"eco","spot":true}'
eventually "offline edits on both sides merged per leaf in the cloud ($MERGED)" \
  cloud_is lamp .state.desired "$MERGED"
eventually "... and on the device (one side only: that side; both: the newer; a delete counts)" \
  local_is lamp .state.desired "$MERGED"
eventually "a cloud-only change made while the link was down comes down on reconnect (mm-10)" \
  local_is lamp .state.reported.mode '"manual"' cfg

# ---- kill -9 of groved mid-sync -------------------------------------------------------------------
LAST=0
for i in $(seq 1 40); do
  if local_update lamp "{\"state\":{\"reported\":{\"seq\":$i}}}"; then LAST=$i; fi
  if [[ $i == 20 ]]; then
    stop_groved KILL
  fi
done
check "20 local updates accepted before the kill ($LAST)" bash -c '[[ $1 == 20 ]]' _ "$LAST"
start_groved
eventually "after kill -9 and restart the cloud converges to the device (seq 20)" \
  cloud_is lamp .state.reported.seq 20
check "... and the device kept its last accepted update" local_is lamp .state.reported.seq 20

# ---- deviceToCloud ignores cloud edits; the rate limit coalesces ---------------------------------
stop_groved
write_profile "      synchronize:
        shadowDocuments: [{thingName: lamp, classic: true, namedShadows: [cfg]}]
        direction: deviceToCloud
      rateLimits: {maxOutboundSyncUpdatesPerSecond: 1, $LOCAL_LIMITS}"
start_groved
# Once "before" is in the cloud, the plugin's start-up read of lamp is done (a shadow
# waits for its answer before it sends again): the cloud edit below comes after it.
local_update lamp '{"state":{"desired":{"before":1}}}'
eventually "(the restarted plugin syncs again)" cloud_is lamp .state.desired.before 1
cloud_update lamp '{"state":{"desired":{"cloudonly":1}}}'
local_update lamp '{"state":{"desired":{"after":1}}}'
eventually "deviceToCloud: a local update still reaches the cloud" cloud_is lamp .state.desired.after 1
check "... while the cloud's edit made before it never reached the device" \
  local_is lamp .state.desired.cloudonly null
check "... nor did it go away in the cloud" cloud_is lamp .state.desired.cloudonly 1
check "... our update, sent with the version we knew, was refused 409 and merged (sync.conflicts)" \
  bash -c '[[ $(shadow_metric sync.conflicts) -gt 0 ]]'

V0=$(cloud_doc lamp | jq .version)
T0=$(date +%s)
N=20
for i in $(seq 1 $N); do local_update lamp "{\"state\":{\"reported\":{\"burst\":$i}}}"; done
eventually "a burst of $N local updates: the final state reaches the cloud" \
  cloud_is lamp .state.reported.burst $N
T1=$(date +%s)
V1=$(cloud_doc lamp | jq .version)
# At 1 message/s (a bucket of one) at most one per second since the burst began, plus
# the one the bucket held: a bound that loosens on a slow machine, never tightens.
check "... in at most the rate's worth of cloud updates ($((V1 - V0)) for $N in $((T1 - T0 + 1)) s)" \
  bash -c '(( $1 < $3 && $1 <= $2 + 1 ))' _ "$((V1 - V0))" "$((T1 - T0 + 1))" "$N"

# ---- strategy: periodic ----------------------------------------------------------------------------
# Every 5 s the shadows changed since go out, once each: 20 local updates spread over a
# few seconds reach the cloud in at most one update per period begun (realTime sends
# nearly each of them: its answers come back well within the 0.2 s between two).
stop_groved
write_profile "      synchronize:
        shadowDocuments: [{thingName: lamp, classic: true, namedShadows: [cfg]}]
      strategy: {type: periodic, delay: 5}
      rateLimits: {$LOCAL_LIMITS}"
start_groved
local_update lamp '{"state":{"reported":{"periodic":0}}}'
eventually "periodic: a local update reaches the cloud" cloud_is lamp .state.reported.periodic 0
V0=$(cloud_doc lamp | jq .version)
T0=$(date +%s)
for i in $(seq 1 $N); do
  local_update lamp "{\"state\":{\"reported\":{\"periodic\":$i}}}"
  sleep 0.2 # spreading the updates, not waiting for anything
done
eventually "... $N local updates over some seconds: the last reaches the cloud" \
  cloud_is lamp .state.reported.periodic $N
T1=$(date +%s)
V1=$(cloud_doc lamp | jq .version)
# One per 5 s period begun since the first update, plus one for a period that was
# already running and one for a merge after the restart: it loosens on a slow machine.
check "... in at most one cloud update per period ($((V1 - V0)) for $N in $((T1 - T0 + 1)) s)" \
  bash -c '(( $1 <= ($2 + 4) / 5 + 2 ))' _ "$((V1 - V0))" "$((T1 - T0 + 1))"

# ---- cloudToDevice ignores local edits ---------------------------------------------------------
stop_groved
write_profile "      synchronize:
        shadowDocuments: [{thingName: lamp, classic: true, namedShadows: [cfg]}]
        direction: cloudToDevice
      rateLimits: {$LOCAL_LIMITS}"
start_groved
# Once "before" came down, the plugin's start-up read of lamp is done: the local edit
# below comes after it.
cloud_update lamp '{"state":{"desired":{"c2d_before":1}}}'
eventually "(the restarted plugin syncs again, cloudToDevice)" local_is lamp .state.desired.c2d_before 1
local_update lamp '{"state":{"desired":{"c2d_localonly":1}}}'
cloud_update lamp '{"state":{"desired":{"c2d_after":1}}}'
eventually "cloudToDevice: a cloud update still reaches the device" local_is lamp .state.desired.c2d_after 1
check "... while the local edit made before it never reached the cloud" \
  cloud_is lamp .state.desired.c2d_localonly null
check "... nor did it go away locally" local_is lamp .state.desired.c2d_localonly 1

finish
