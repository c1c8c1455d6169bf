#!/usr/bin/env bash
# End-to-end test of Greengrass v1's discovery (issue 18, README "Discovery"): groved runs
# message_manager (a real Mosquitto, mutual TLS) and the deployment plugin with its
# discovery listener. Devices use AWS's device SDK (npm aws-iot-device-sdk-v2,
# greengrass.DiscoveryClient on aws-crt; tests/devices/gg_discovery.js) to discover the
# core with their certificates, then MQTT.js to reach its broker with exactly the
# discovered CA and address; curl and Python's ssl module check the refusals (no client
# certificate, another CA, a revoked certificate, a thing not in the group, another
# thing's path, routes and methods, a body too large); boto3's greengrassv2 client
# updates the connectivity information; a device added to the group file is answered
# without a restart.
# Usage: discovery_test.sh GROVED GROVECTL GROVE_CERTS DEVICES_DIR
set -u

GROVED=$(readlink -f "${1:?usage: $0 groved grovectl grove-certs devices-dir}")
DEVICES=$(readlink -f "${4:?}")
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_mm_open "$GROVED" "${2:?}" "${3:?}" openssl jq curl node /usr/bin/python3
PY=/usr/bin/python3
if [[ ! -d "$DEVICES/node_modules/aws-iot-device-sdk-v2" || ! -d "$DEVICES/node_modules/mqtt" ]]; then
  echo "aws-iot-device-sdk-v2 or MQTT.js is not installed in $DEVICES (tools/deps runs npm ci there)"
  exit 1
fi
"$PY" -c 'import boto3' 2>/dev/null || { echo "boto3 is missing (python3-boto3)"; exit 1; }

# The group PKI: devices A and B of the group, C (same CA, not in the group yet), R
# (in the group, revoked before the start). Another CA's PKI with its own "A".
group_pki A B C R grove
OTHER=$WORK/other
{ make_pki "$CERTS_TOOL" "$OTHER" "Other CA" A &&
  "$CERTS_TOOL" revoke "$PKI" R; } >>"$WORK/certs.out" 2>&1 ||
  { cat "$WORK/certs.out"; abort "making the certificates"; }
cp "$(ls "$PKI"/devices/revoked/R-*.crt | head -1)" "$PKI/devices/R.crt"

read -r PORT API_PORT DISC_PORT <<<"$(free_ports 3)"

GROUP=$WORK/group.yaml
cat >"$GROUP" <<EOF
name: e2e
devices: [{thing: A}, {thing: B}, {thing: R}]
subscriptions:
  - {id: a-b, source: "device:A", subject: "lamp/#", target: "device:B"}
EOF
cat >"$WORK/profile.yaml" <<EOF
kernel:
  log_level: info
  group: $GROUP
plugins:
$(mm_profile_entry)
$(deployment_discovery_entry)
EOF

launch_groved
status_has "deployment.discovery: https://127.0.0.1:$DISC_PORT" 100 ||
  abort "groved did not start the discovery listener"
status_has "local_link: connected" 100 || abort "Grove's client did not connect to the broker"
wait_for "$WORK/groved.out" "discovery answers the 3 device(s) of group 'e2e'" 100 ||
  abort "the deployment plugin did not read the group"
pass "groved runs message_manager, the v2 API and discovery on 127.0.0.1:$DISC_PORT"

# gd ARGS...: the device SDK's discovery (gg_discovery.js discover PORT CA PKI ...).
gd() { timeout 30 node "$DEVICES/gg_discovery.js" discover "$DISC_PORT" "$PKI/ca.crt" "$@" 2>&1; }
answer() { sed -n 's/^ok //p' <<<"$1"; }
# curl_as THING ARGS...: curl with THING's certificate of the group PKI, trusting the
# group CA for the server; prints the status, then the body.
curl_as() {
  local thing=$1
  shift
  curl -sS --max-time 10 --cacert "$PKI/ca.crt" --cert "$PKI/devices/$thing.crt" \
    --key "$PKI/devices/$thing.key" -w '\n%{http_code}' "$@"
}
URL=https://localhost:$DISC_PORT/greengrass/discover/thing

# ---- the answer ------------------------------------------------------------------------------
OUT=$(gd "$PKI" A)
J=$(answer "$OUT")
[[ -n "$J" ]] || echo "$OUT"
# The expected id is computed here, independently: RFC 4122's name-based UUID (uuid5).
GID=$("$PY" -c 'import uuid; print(uuid.uuid5(uuid.NAMESPACE_URL, "grove-group:e2e"))')
check "A discovers with the device SDK: one group, its stable id (uuid5 of the name)" \
  test "$(jq -r '.gg_groups | "\(length) \(.[0].gg_group_id)"' <<<"$J" 2>/dev/null)" == "1 $GID"
check "... one core, arn:aws:iot:us-east-1:123456789012:thing/core-1" \
  test "$(jq -r '.gg_groups[0].cores | "\(length) \(.[0].thing_arn)"' <<<"$J" 2>/dev/null)" \
  == "1 arn:aws:iot:us-east-1:123456789012:thing/core-1"
check "... no connectivity information yet: an empty list" \
  test "$(jq -r '.gg_groups[0].cores[0].connectivity | length' <<<"$J" 2>/dev/null)" == 0
check "... CAs is exactly the group CA's PEM" \
  bash -c 'cmp -s <(jq -j ".gg_groups[0].certificate_authorities[0]" <<<"$0") "$1" &&
           [[ $(jq ".gg_groups[0].certificate_authorities | length" <<<"$0") == 1 ]]' "$J" "$PKI/ca.crt"
RAW=$(curl_as A "$URL/A")
check "curl: the same answer in v1's JSON keys (GGGroups, GGGroupId, Cores, thingArn, Connectivity, CAs)" \
  test "$(head -n -1 <<<"$RAW" | jq -r '.GGGroups[0] | "\(.GGGroupId) \(.Cores[0].thingArn) \(.Cores[0].Connectivity|length) \(.CAs|length)"' 2>/dev/null) $(tail -1 <<<"$RAW")" \
  == "$GID arn:aws:iot:us-east-1:123456789012:thing/core-1 0 1 200"

# ---- connectivity information from the v2 API (boto3) ---------------------------------------
update_connectivity() {  # update_connectivity JSON_LIST: boto3 greengrassv2, prints Version
  AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=us-east-1 \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    "$PY" - "https://127.0.0.1:$API_PORT" "$PKI/ca.crt" "$1" <<'EOF'
import json, sys, boto3
gg = boto3.client("greengrassv2", endpoint_url=sys.argv[1], verify=sys.argv[2])
r = gg.update_connectivity_info(thingName="core-1", connectivityInfo=json.loads(sys.argv[3]))
print(r["version"])
EOF
}
V=$(update_connectivity "[{\"id\": \"lan\", \"hostAddress\": \"127.0.0.1\", \"portNumber\": $PORT, \"metadata\": \"broker\"}]" 2>&1)
check "boto3 greengrassv2.update_connectivity_info for core-1 -> version 1" test "$V" == 1
J=$(answer "$(gd "$PKI" B)")
check "B's next discovery has it: [{Id lan, HostAddress 127.0.0.1, PortNumber $PORT, Metadata broker}]" \
  test "$(jq -c '.gg_groups[0].cores[0].connectivity' <<<"$J" 2>/dev/null)" \
  == "[{\"id\":\"lan\",\"host_address\":\"127.0.0.1\",\"port\":$PORT,\"metadata\":\"broker\"}]"

# ---- the device flow: discover, then the broker with exactly the discovered CA ---------------
OUT=$(timeout 40 node "$DEVICES/gg_discovery.js" relay "$DISC_PORT" "$PKI/ca.crt" "$PKI" A B lamp/1 on-42 2>&1)
check "A and B discover, connect to the discovered broker with the discovered CA; A -> B delivered" \
  grep -qx "received lamp/1 on-42" <<<"$OUT"
[[ $FAILED == 0 ]] || echo "$OUT"

# ---- refusals --------------------------------------------------------------------------------
OUT=$(gd "$PKI" C)
check "C (group CA, not a device of the group): the SDK gets 404" grep -q "^error 404 " <<<"$OUT"
RAW=$(curl_as C "$URL/C")
check "... body {\"errorMessage\":\"The thing provided for discovery was not found\"}" \
  test "$(head -n -1 <<<"$RAW" | jq -r .errorMessage 2>/dev/null) $(tail -1 <<<"$RAW")" \
  == "The thing provided for discovery was not found 404"
check "... and groved logged why" grep -q "discovery refused from .*'C' is not a device of group 'e2e'" "$WORK/groved.out"
OUT=$(gd "$PKI" A B)
check "A asking for B's discovery: the SDK gets 403" grep -q "^error 403 " <<<"$OUT"
RAW=$(curl_as A "$URL/B")
check "... body with message and traceId, logged" \
  bash -c '[[ $(head -n -1 <<<"$0" | jq -r "(.message|length>0), (.traceId|length)" | tr "\n" " ") == "true 36 " &&
            $(tail -1 <<<"$0") == 403 ]] && grep -q "certificate CN .A. asked to discover .B." "$1"' "$RAW" "$WORK/groved.out"
RAW=$(curl_as C "$URL/A")
check "C asking for A (a device): 403, the same as for any other thing" test "$(tail -1 <<<"$RAW")" == 403
curl -sS --max-time 10 --cacert "$PKI/ca.crt" "$URL/A" >"$WORK/nocert.out" 2>&1
RC=$?
check "no client certificate: the handshake fails (curl exit $RC, no HTTP answer)" \
  bash -c '[[ $0 != 0 ]] && ! grep -q GGGroups "$1"' "$RC" "$WORK/nocert.out"
"$PY" - "$DISC_PORT" "$PKI/ca.crt" >"$WORK/nocert.py" 2>&1 <<'EOF'
import http.client, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
c = http.client.HTTPSConnection("localhost", int(sys.argv[1]), context=ctx, timeout=10)
try:
    c.request("GET", "/greengrass/discover/thing/A")
    print("answered", c.getresponse().status)
except (ssl.SSLError, ConnectionError) as e:
    print("refused", type(e).__name__, e)
EOF
check "... Python ssl + http.client without a certificate: refused by TLS" grep -q "^refused" "$WORK/nocert.py"
[[ $FAILED == 0 ]] || cat "$WORK/nocert.py"
curl -sS --max-time 10 --cacert "$PKI/ca.crt" --cert "$OTHER/devices/A.crt" --key "$OTHER/devices/A.key" \
  "$URL/A" >"$WORK/other.out" 2>&1
RC=$?
check "a certificate with CN A from another CA: the handshake fails (curl exit $RC)" \
  bash -c '[[ $0 != 0 ]] && ! grep -q GGGroups "$1"' "$RC" "$WORK/other.out"
OUT=$(gd "$OTHER" A)
check "... and the device SDK with it gets no answer" grep -q "^error 0 " <<<"$OUT"
RAW=$(curl_as R "$URL/R" 2>&1)
check "R, a device of the group whose certificate is revoked (crl_file): the handshake fails" \
  bash -c '! grep -q GGGroups <<<"$0"' "$RAW"
RAW=$(curl_as A "https://localhost:$DISC_PORT/greengrass/discover/thing/A/x")
check "an unknown path: 404" test "$(tail -1 <<<"$RAW")" == 404
RAW=$(curl_as A "https://localhost:$DISC_PORT/greengrass/v2/components")
check "the v2 API's routes are not served here: 404" test "$(tail -1 <<<"$RAW")" == 404
RAW=$(curl_as A -X POST -d '{}' "$URL/A")
check "POST on the discovery route: 405 with Allow: GET" test "$(tail -1 <<<"$RAW")" == 405
head -c 4096 /dev/zero | tr '\0' x >"$WORK/body"
RAW=$(curl_as A -X PUT --data-binary "@$WORK/body" "$URL/A" 2>&1)
check "a request with a 4 KiB body (past the 1 KiB bound): 413, unread" test "$(tail -1 <<<"$RAW")" == 413
RAW=$(curl_as A "$URL/$(head -c 9000 /dev/zero | tr '\0' A)" 2>&1)
check "a 9000-character thing name (past the 8 KiB target bound): 414" test "$(tail -1 <<<"$RAW")" == 414

# ---- changes seen without a restart ----------------------------------------------------------
V=$(update_connectivity "[{\"id\": \"wlan\", \"hostAddress\": \"core.local\", \"portNumber\": 8883, \"metadata\": \"\"}, {\"id\": \"lan\", \"hostAddress\": \"127.0.0.1\", \"portNumber\": $PORT, \"metadata\": \"broker\"}]" 2>&1)
J=$(answer "$(gd "$PKI" A)")
check "connectivity updated again (version $V): the next discovery lists both, in order" \
  test "$V $(jq -r '[.gg_groups[0].cores[0].connectivity[] | "\(.id)=\(.host_address):\(.port)"] | join(",")' <<<"$J" 2>/dev/null)" \
  == "2 wlan=core.local:8883,lan=127.0.0.1:$PORT"
cat >"$GROUP.new" <<EOF
name: e2e
devices: [{thing: A}, {thing: B}, {thing: R}, {thing: C}]
subscriptions:
  - {id: a-b, source: "device:A", subject: "lamp/#", target: "device:B"}
  - {id: c-b, source: "device:C", subject: "lamp/#", target: "device:B"}
EOF
mv "$GROUP.new" "$GROUP"
ok=0
for _ in $(seq 1 50); do
  J=$(answer "$(gd "$PKI" C)")
  [[ -n "$J" ]] && { ok=1; break; }
  sleep 0.2
done
check "C added to the group file: answered without a restart" test "$ok" == 1
OUT=$(timeout 40 node "$DEVICES/gg_discovery.js" relay "$DISC_PORT" "$PKI/ca.crt" "$PKI" C B lamp/2 from-c 2>&1)
check "... and C -> B through the discovered broker" grep -qx "received lamp/2 from-c" <<<"$OUT"
[[ $FAILED == 0 ]] || echo "$OUT"
# ---- a reload: the listener is let go and bound again ------------------------------------------
"$GROVECTL" reload deployment >"$WORK/reload.out" 2>&1
check "grovectl reload deployment -> exit 0" test $? == 0
[[ $FAILED == 0 ]] || cat "$WORK/reload.out"
ok=0
for _ in $(seq 1 50); do
  J=$(answer "$(gd "$PKI" C)")
  [[ "$(jq -r '.gg_groups[0].cores[0].connectivity | length' <<<"$J" 2>/dev/null)" == 2 ]] && { ok=1; break; }
  sleep 0.2
done
check "... the new instance answers C (the group read again) with the stored connectivity" test "$ok" == 1

# ---- a Greengrass v1 deployment: its group's id ------------------------------------------------
V1=$(AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=us-east-1 \
  AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
  "$PY" - "https://127.0.0.1:$API_PORT" "$PKI/ca.crt" 2>&1 <<'EOF'
import sys, time, boto3
gg = boto3.client("greengrass", endpoint_url=sys.argv[1], verify=sys.argv[2])
arn = lambda t: f"arn:aws:iot:us-east-1:123456789012:thing/{t}"
dev = lambda t: {"Id": t, "ThingArn": arn(t), "CertificateArn": "arn:aws:iot:us-east-1:123456789012:cert/0123abcd"}
core = gg.create_core_definition(InitialVersion={"Cores": [dev("core-1")]})
devs = gg.create_device_definition(InitialVersion={"Devices": [dev(t) for t in "ABCR"]})
subs = gg.create_subscription_definition(InitialVersion={"Subscriptions": [
    {"Id": "a-b", "Source": arn("A"), "Subject": "lamp/#", "Target": arn("B")}]})
g = gg.create_group(Name="site", InitialVersion={
    "CoreDefinitionVersionArn": core["LatestVersionArn"],
    "DeviceDefinitionVersionArn": devs["LatestVersionArn"],
    "SubscriptionDefinitionVersionArn": subs["LatestVersionArn"]})
d = gg.create_deployment(GroupId=g["Id"], DeploymentType="NewDeployment", GroupVersionId=g["LatestVersion"])
for _ in range(300):
    st = gg.get_deployment_status(GroupId=g["Id"], DeploymentId=d["DeploymentId"])["DeploymentStatus"]
    if st in ("Success", "Failure"):
        break
    time.sleep(0.1)
print(g["Id"], st)
EOF
)
check "boto3 greengrass (v1): group 'site' deployed -> Success" test "${V1#* }" == Success
ok=0
for _ in $(seq 1 50); do
  J=$(answer "$(gd "$PKI" A)")
  [[ "$(jq -r '.gg_groups[0].gg_group_id' <<<"$J" 2>/dev/null)" == "${V1% *}" ]] && { ok=1; break; }
  sleep 0.2
done
check "... discovery's GGGroupId is now the deployed group's id (${V1% *})" test "$ok" == 1
[[ $ok == 1 ]] || echo "$V1 / $J"
check "groved is still running, both plugins too" \
  bash -c '"$0" status 2>/dev/null | grep -q "deployment .* running" &&
           "$0" status 2>/dev/null | grep -q "message_manager .* running"' "$GROVECTL"
finish
