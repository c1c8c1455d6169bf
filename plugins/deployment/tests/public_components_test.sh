#!/usr/bin/env bash
# AWS's public components with no set-up (issue 15, README "AWS public components"): groved
# runs message_manager (its managed Mosquitto, mutual TLS), shadow and the deployment plugin.
# With no CreateComponentVersion, the AWS CLI lists the public catalog (--scope PUBLIC),
# describes shadow manager by AWS's ARN, and deploys aws.greengrass.ShadowManager with a
# configurationUpdate (shadowDocumentSizeLimitBytes, rateLimits, synchronize), the MQTT
# bridge with a mapping and the nucleus (a no-op): the shadow plugin then takes a document
# it refused before and synchronizes the core's shadow, message_manager's bridge has the
# mapping. An AWS component Grove does not implement fails its deployment saying why; the
# public version cannot be deleted; a deployment without them gives both plugins their
# profile's configuration back.
# Usage: public_components_test.sh GROVED GROVECTL GROVE_CERTS
set -u

: "${1:?usage: $0 groved grovectl grove-certs}"
GROVED=$(readlink -f "$1")
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_mm_open "$GROVED" "${2:?}" "${3:?}" openssl jq /usr/bin/aws
AWS=/usr/bin/aws

group_pki A grove
read -r PORT API_PORT <<<"$(free_ports 2)"
GROUP=$WORK/group.yaml
echo 'name: e2e
devices: [{thing: A}]' >"$GROUP"
cat >"$WORK/profile.yaml" <<EOF
kernel:
  log_level: info
  group: $GROUP
plugins:
$(mm_profile_entry)
  - name: shadow
  - name: deployment
    may_control_plugins: true
    config:
$(deployment_config)
EOF
launch_groved
status_has "deployment.api: https://127.0.0.1:$API_PORT" 100 || abort "groved did not start the API"
status_has "devices: 1" 100 || abort "the shadow plugin did not take the group"
pass "groved runs message_manager, shadow and the deployment API"

aws_env "$PKI/ca.crt"
SHADOW=aws.greengrass.ShadowManager
BRIDGE=aws.greengrass.clientdevices.mqtt.Bridge
NUCLEUS=aws.greengrass.Nucleus
# A reported state of 10000 bytes: over the 8192 a shadow takes by default, under 16384.
BIG=$(jq -cn --arg b "$(head -c 10000 /dev/zero | tr '\0' x)" '{state: {reported: {blob: $b}}}')

# ---- the catalog, with nothing created ------------------------------------------------
OUT=$(gg list-components --scope PUBLIC)
check "aws list-components --scope PUBLIC: $SHADOW, $BRIDGE and $NUCLEUS, under AWS's account" \
  test "$(jq -r '[.components[] | select(.arn | startswith("arn:aws:greengrass:us-east-1:aws:components:"))
                 | .componentName] | map(select(. == "'$SHADOW'" or . == "'$BRIDGE'" or . == "'$NUCLEUS'"))
                 | length' <<<"$OUT")" == 3
check "... and the account's own scope is empty" \
  test "$(gg list-components | jq '.components | length')" == 0
latest() { jq -r --arg n "$1" '.components[] | select(.componentName == $n) | .latestVersion.componentVersion' <<<"$OUT"; }
SHADOW_V=$(latest "$SHADOW")
BRIDGE_V=$(latest "$BRIDGE")
NUCLEUS_V=$(latest "$NUCLEUS")
SHADOW_ARN=arn:aws:greengrass:us-east-1:aws:components:$SHADOW:versions:$SHADOW_V
OUT=$(gg describe-component --arn "$SHADOW_ARN")
check "aws describe-component $SHADOW_ARN: AWS's, DEPLOYABLE" \
  test "$(jq -r '"\(.publisher) \(.status.componentState)"' <<<"$OUT")" == "AWS DEPLOYABLE"
OUT=$(gg get-component --arn "$SHADOW_ARN" --recipe-output-format JSON | jq -r .recipe | base64 -d)
check "aws get-component: AWS's DefaultConfiguration (rateLimits, 8192 bytes)" \
  test "$(jq -c '.ComponentConfiguration.DefaultConfiguration | [.rateLimits.maxTotalLocalRequestsRate, .shadowDocumentSizeLimitBytes]' <<<"$OUT")" == "[200,8192]"
# An older patch, as a deployment pins it: AWS's too (the oldest the catalog serves).
RUNTIMES=aws.greengrass.LambdaRuntimes
RUNTIMES_OLD=$(gg list-component-versions --arn "arn:aws:greengrass:us-east-1:aws:components:$RUNTIMES" |
  jq -r '.componentVersions[-1].componentVersion')
check "aws list-component-versions $RUNTIMES: older patches too ($RUNTIMES_OLD), AWS's ARN" \
  test "$(gg describe-component --arn "arn:aws:greengrass:us-east-1:aws:components:$RUNTIMES:versions:$RUNTIMES_OLD" |
          jq -r .publisher)" == AWS
refused "aws delete-component of AWS's version: refused" gg delete-component --arn "$SHADOW_ARN"
check "... and it is still there" gg describe-component --arn "$SHADOW_ARN"

# ---- before: the profile's configuration ----------------------------------------------
refused "before: a 10000-byte state is refused (the profile's 8192)" \
  "$GROVECTL" shadow update A "$BIG"
check "before: no shadow synchronized ('sync: off')" status_has "sync: off" 10
check "before: no bridge ('bridge: 0 mapping(s)')" status_has "bridge: 0 mapping(s)" 10

# ---- deployed with a configuration update ---------------------------------------------
COMPONENTS=$(jq -cn --arg s "$SHADOW" --arg sv "$SHADOW_V" --arg b "$BRIDGE" --arg bv "$BRIDGE_V" \
  --arg n "$NUCLEUS" --arg nv "$NUCLEUS_V" '{
  ($s): {componentVersion: $sv, configurationUpdate: {merge: ({
    shadowDocumentSizeLimitBytes: 16384,
    rateLimits: {maxLocalRequestsPerSecondPerThing: 50},
    synchronize: {coreThing: {classic: true}},
    file: "elsewhere.db"} | tojson)}},
  ($b): {componentVersion: $bv, configurationUpdate: {merge: ({mqttTopicMapping: {
    DeviceToPubsub: {topic: "clients/+/hello", source: "LocalMqtt", target: "Pubsub"}}} | tojson)}},
  ($n): {componentVersion: $nv}}')
OUT=$(deploy "$COMPONENTS")
check "deployment of $SHADOW, $BRIDGE and $NUCLEUS with no recipe created: COMPLETED ($OUT)" \
  test "${OUT%% *}" == COMPLETED
OUT=$(installed_details "$SHADOW")
check "$SHADOW RUNNING, naming the key that is not shadow manager's ($OUT)" \
  bash -c '[[ $1 == "RUNNING configuration keys ignored"*": file" ]]' _ "$OUT"
check "$BRIDGE RUNNING" test "$(installed_details "$BRIDGE" | cut -d' ' -f1)" == RUNNING
OUT=$(installed_details "$NUCLEUS")
check "$NUCLEUS RUNNING as a no-op, saying why ($OUT)" \
  bash -c '[[ $1 == "RUNNING a no-op on Grove: "* ]]' _ "$OUT"
OUT=$("$GROVECTL" shadow update A "$BIG" 2>&1)
check "the shadow plugin takes shadowDocumentSizeLimitBytes 16384: the 10000-byte state accepted" \
  test "$(jq -r .version <<<"$OUT" 2>/dev/null)" == 1
check "... synchronize: the core's classic shadow (coreThing, thing core-1) is synchronized" \
  status_matches "sync: 1 shadows"
check "message_manager has the bridge's mapping ('bridge: 1 mapping(s)')" \
  status_has "bridge: 1 mapping(s)" 30
check "... over the profile: the broker still takes devices" status_has "local_link: connected" 10

# ---- refused and kept ------------------------------------------------------------------
OUT=$(deploy "$(jq -cn --arg n "$NUCLEUS" --arg nv "$NUCLEUS_V" \
  '{"aws.greengrass.TokenExchangeService": {componentVersion: "2.0.3"}, ($n): {componentVersion: $nv}}')")
check "an AWS component Grove does not implement: FAILED, saying so ($OUT)" \
  bash -c '[[ $1 == FAILED*"Grove does not implement"* ]]' _ "$OUT"
check "... before anything changed: shadow manager's configuration still in force" \
  "$GROVECTL" shadow update A "$BIG"
# A value the shadow plugin refuses (over its 30720 bytes): the deployment fails, rolled back.
OUT=$(deploy "$(jq -cn --arg s "$SHADOW" --arg sv "$SHADOW_V" --arg n "$NUCLEUS" --arg nv "$NUCLEUS_V" '{
  ($s): {componentVersion: $sv, configurationUpdate: {merge: ({shadowDocumentSizeLimitBytes: 1000000} | tojson)}},
  ($n): {componentVersion: $nv}}')")
check "$SHADOW with a size the shadow plugin refuses: FAILED, saying so ($OUT)" \
  bash -c '[[ $1 == FAILED*"shadow refused $2"* ]]' _ "$OUT" "$SHADOW"
# shadow refused it, so it was never applied: kept, not rolled back (below).
check "... the deployed configuration kept (10000 bytes accepted)" "$GROVECTL" shadow update A "$BIG"
# An applied configuration rolled back: grove.ghost (no libghost.so: its load fails) depends
# on shadow manager, so its new configuration (8192 bytes) is applied first, then the
# deployment fails and rolls back.
cat >"$WORK/ghost.yaml" <<EOF
RecipeFormatVersion: '2020-01-25'
ComponentName: grove.ghost
ComponentVersion: '1.0.0'
ComponentDependencies:
  $SHADOW: {VersionRequirement: '>=2.0.0', DependencyType: HARD}
EOF
check "aws create-component-version: grove.ghost 1.0.0 (needs $SHADOW)" \
  gg create-component-version --inline-recipe "fileb://$WORK/ghost.yaml"
reconfigured() { grep -c "reconfigured plugin shadow" "$WORK/groved.out"; }
BEFORE=$(reconfigured)
OUT=$(deploy "$(jq -cn --arg s "$SHADOW" --arg sv "$SHADOW_V" --arg n "$NUCLEUS" --arg nv "$NUCLEUS_V" '{
  ($s): {componentVersion: $sv, configurationUpdate: {merge: ({shadowDocumentSizeLimitBytes: 8192} | tojson)}},
  "grove.ghost": {componentVersion: "1.0.0"}, ($n): {componentVersion: $nv}}')")
check "$SHADOW's new configuration with grove.ghost (fails to load): FAILED naming grove.ghost, ROLLBACK_COMPLETE ($OUT)" \
  bash -c '[[ $1 == FAILED*grove.ghost*ROLLBACK_COMPLETE* ]]' _ "$OUT"
check "... the shadow plugin was reconfigured twice: the new configuration, then the one before" \
  test "$(reconfigured)" -ge $((BEFORE + 2))
check "... rolled back: 16384 bytes again (the 10000-byte state accepted)" \
  "$GROVECTL" shadow update A "$BIG"
check "... and synchronize back too" status_matches "sync: 1 shadows"
# ShadowManager beside grove.shadow: refused before anything changes (one would undo the other).
cat >"$WORK/grove-shadow.yaml" <<EOF
RecipeFormatVersion: '2020-01-25'
ComponentName: grove.shadow
ComponentVersion: '1.0.0'
Manifests: [{Platform: {os: linux}}]
EOF
check "aws create-component-version: grove.shadow 1.0.0" \
  gg create-component-version --inline-recipe "fileb://$WORK/grove-shadow.yaml"
OUT=$(deploy "$(jq -cn --arg s "$SHADOW" --arg sv "$SHADOW_V" '{($s): {componentVersion: $sv},
  "grove.shadow": {componentVersion: "1.0.0"}}')")
check "$SHADOW with grove.shadow: FAILED, saying one would undo the other ($OUT)" \
  bash -c '[[ $1 == FAILED*"one would undo the other"* ]]' _ "$OUT"
check "... shadow manager's configuration still in force" "$GROVECTL" shadow update A "$BIG"

# ---- removed: the profiles' configurations back ----------------------------------------
# The nucleus (a no-op) leaves too, the Lambda runtimes pinned to an older patch come in.
OUT=$(deploy "$(jq -cn --arg r "$RUNTIMES" --arg rv "$RUNTIMES_OLD" '{($r): {componentVersion: $rv}}')")
check "a deployment without $SHADOW and $BRIDGE: COMPLETED ($OUT)" test "${OUT%% *}" == COMPLETED
refused "the profile's shadow configuration back: the 10000-byte state refused again" \
  "$GROVECTL" shadow update A "$BIG"
check "... and no shadow synchronized" status_has "sync: off" 30
check "the profile's bridge back ('bridge: 0 mapping(s)')" status_has "bridge: 0 mapping(s)" 30
check "$SHADOW no longer installed" test -z "$(installed_details "$SHADOW")"
check "a no-op removed: $NUCLEUS no longer installed" test -z "$(installed_details "$NUCLEUS")"
OUT=$(installed_details "$RUNTIMES")
check "$RUNTIMES $RUNTIMES_OLD (an older patch) RUNNING as a no-op ($OUT)" \
  bash -c '[[ $1 == "RUNNING a no-op on Grove: "* ]]' _ "$OUT"

stop_groved
finish
