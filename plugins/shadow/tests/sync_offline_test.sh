#!/usr/bin/env bash
# End-to-end test of the shadow plugin's cloud sync at its edges (README "Cloud sync"), with
# real processes as sync_test.sh: groved runs message_manager (its managed Mosquitto, mutual
# TLS, a file spool, `system_clients: [shadow]`) and shadow; the cloud is a TLS Mosquitto
# with tests/support/fake_aws_shadow.py on it. The start is the default image's shape:
# the cloud disabled, a group device with sync_shadow: true, plus a coreThing and a
# shadowDocuments thing that are no devices of the group.
# Checks: message_manager tells the plugin the link is disabled (mm-7's answer), and over
# several sync periods nothing is sent and the spool stays empty; a device reaches the
# synced shadows of things outside the group (not 404); once the cloud is enabled live,
# each shadow syncs once (one get, one update). A cloud change the local side refuses (413:
# the merge over max_document_bytes) publishes no rejection to devices, is counted, and is
# not undone in the cloud by a later local change; once the device makes room both merge.
# Usage: sync_offline_test.sh GROVED GROVECTL GROVE_CERTS FAKE_AWS_SHADOW_PY
set -u

: "${4:?usage: $0 groved grovectl grove-certs fake_aws_shadow.py}"
FAKE=$(readlink -f "$4")
PYTHON=${PYTHON:-/usr/bin/python3}  # Debian's, which has python3-paho-mqtt
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=shadow_test_lib.sh
source "$HERE/shadow_test_lib.sh"
# shellcheck source=sync_test_lib.sh
source "$HERE/sync_test_lib.sh"
shadow_open "${1:?}" "${2:?}" "${3:?}" "$PYTHON"
"$PYTHON" -c 'import paho.mqtt.client' 2>/dev/null \
  || { echo "missing python3-paho-mqtt (tools/deps installs it)"; exit 1; }
ABORT_LOGS=("$WORK/cloud.out" "$WORK/fake.out")

group_pki lamp grove
cloud_pki shadow-service
read -r PORT CLOUD_PORT <<<"$(free_ports 2)"
cloud_init
start_cloud
start_fake

# lamp syncs its own shadow, may ask about any thing's and hears the answers.
cat >"$WORK/group.yaml" <<EOF
name: shadow-offline
devices: [{thing: lamp, sync_shadow: true}]
subscriptions:
$(shadow_routes lamp +)
EOF
# write_profile CLOUD_LINES: shadow syncing lamp (the group's), core (coreThing) and sensor
# (shadowDocuments); message_manager with CLOUD_LINES as its cloud section.
write_profile() {
  shadow_profile "      synchronize:
        coreThing: {thingName: core}
        shadowDocuments: [{thingName: sensor, classic: true}]
      rateLimits: {maxTotalLocalRequestsRate: 1000000, maxLocalRequestsPerSecondPerThing: 1000000}" \
    "$1
        system_clients: [shadow]
      spool: {storage: file, max_size_bytes: 10000000}"
}
write_profile "      cloud:
        enabled: false"
start_local_groved 1
check "message_manager tells the shadow plugin the cloud is disabled (mm-7's answer)" \
  status_has "sync: 3 shadows, subscribed, cloud link disabled" 600

# ---- synced things outside the group are served ----------------------------------------------
start_sub lamp '$aws/things/#' "$WORK/lamp.out"
T='$aws/things'
check "the group device updates its synced shadow" \
  ask "$T/lamp/shadow/update" '{"state":{"reported":{"on":true}},"clientToken":"l1"}' l1 \
  "$T/lamp/shadow/update/accepted" lamp "$WORK/lamp.out" 20
check "... and the coreThing's, not a group device (update/accepted, not 404)" \
  ask "$T/core/shadow/update" '{"state":{"reported":{"cpu":1}},"clientToken":"c1"}' c1 \
  "$T/core/shadow/update/accepted"
check "... and a shadowDocuments thing's, not a group device" \
  ask "$T/sensor/shadow/update" '{"state":{"reported":{"t":20}},"clientToken":"s1"}' s1 \
  "$T/sensor/shadow/update/accepted"
R=$(ask "$T/ghost/shadow/get" '{"clientToken":"g1"}' g1 "$T/ghost/shadow/get/rejected")
check "... while a thing neither the group nor the sync names is still unknown (404)" \
  bash -c 'jq -e ".code == 404 and .message == \"Thing not found\"" <<<"$1" >/dev/null' _ "$R"

# ---- nothing goes to the spool while the cloud is off ----------------------------------------
# The plugin re-sends a request not answered within 15 s (checked every 5 s): 50 s are
# three such periods. Every sample must show nothing sent and nothing spooled.
GREW=""
for i in $(seq 0 10); do
  sent=$(shadow_metric sync.sent)
  spooled=$(metric spool.messages)
  [[ $sent == 0 && $spooled == 0 ]] || GREW="$GREW [at ${i}x5 s: sync.sent '$sent', spool.messages '$spooled']"
  [[ $i == 10 ]] || sleep 5
done
check "cloud disabled: over 50 s nothing is sent and the spool stays empty$GREW" test -z "$GREW"

# ---- the cloud appears: each shadow syncs once ------------------------------------------------
write_profile "$(mm_profile_cloud)"
check "the cloud enabled live: the shadow plugin hears the link is up (mm-10)" \
  status_has "sync: 3 shadows, subscribed, cloud link up" 300
eventually "lamp's shadow reaches the cloud" cloud_is lamp .state.reported '{"on":true}'
eventually "... the coreThing's" cloud_is core .state.reported '{"cpu":1}'
eventually "... and sensor's" cloud_is sensor .state.reported '{"t":20}'
check "the sync happened once: each shadow updated once in the cloud (version 1)" bash -c \
  'for t in lamp core sensor; do doc_is "$(cloud_doc $t)" .version 1 || exit 1; done'

# ---- a cloud change the local side refuses (413) -----------------------------------------------
# sensor holds 5000 bytes locally; the cloud adds 5000 more: together over the local
# max_document_bytes (8192), so the merge cannot be applied here.
BIG=$(printf 'x%.0s' $(seq 1 5000))
local_update sensor "{\"state\":{\"reported\":{\"a\":\"$BIG\"}}}"
eventually "sensor's 5000 bytes reach the cloud" cloud_is sensor '.state.reported.a|length' 5000
cloud_update sensor "{\"state\":{\"desired\":{\"b\":\"$BIG\"}}}" || abort "the cloud update"
eventually "a cloud change over max_document_bytes once merged is refused locally, counted" \
  bash -c '[[ $(shadow_metric sync.refused_locally) -ge 1 ]]'
check "... the local shadow unchanged" local_is sensor .state.desired null
check "... and devices heard no update/rejected (nobody asked)" \
  bash -c '! grep -q "^\$aws/things/sensor/shadow/update/rejected" "$1"' _ "$WORK/lamp.out"
N=$(shadow_metric sync.refused_locally)
local_update sensor '{"state":{"reported":{"c":1}}}'
eventually "a later local change is merged again, and refused again" \
  bash -c '[[ $(shadow_metric sync.refused_locally) -gt $1 ]]' _ "$N"
check "... the cloud's change is not undone by it" cloud_is sensor '.state.desired.b|length' 5000
local_update sensor '{"state":{"reported":{"a":null}}}'
eventually "once the device makes room, both sides merge: the cloud has the device's state" \
  cloud_is sensor '.state|[(.desired.b|length), .reported]' '[5000,{"c":1,"t":20}]'
eventually "... and the device the cloud's" \
  local_is sensor '.state|[(.desired.b|length), .reported]' '[5000,{"c":1,"t":20}]'

finish
