#!/usr/bin/env bash
# End-to-end test of the Greengrass v1 group API (issue 16) with the real clients: groved
# runs message_manager (a real Mosquitto, mutual TLS, devices A and B) and the deployment
# plugin over TLS; boto3's `greengrass` client (v1_api_test.py) and the AWS CLI
# (/usr/bin/aws greengrass) build a group from definitions and deploy it. Between the
# phases, devices publish through the broker: a route appears when its subscription is
# deployed, moves with a changed version, survives a refused deployment and a restart of
# groved, and goes with a reset.
# Usage: v1_api_test.sh GROVED GROVECTL GROVE_CERTS
set -u

GROVED=$(readlink -f "${1:?usage: $0 groved grovectl grove-certs}")
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_mm_open "$GROVED" "${2:?}" "${3:?}" openssl jq /usr/bin/aws /usr/bin/python3
AWS=/usr/bin/aws
PY=/usr/bin/python3

group_pki A B grove
read -r PORT API_PORT <<<"$(free_ports 2)"
RO_KEY=AKIAGROVEREADONLY1

# The group before any deployment: the devices, no route.
GROUP=$WORK/group.yaml
cat >"$GROUP" <<EOF
name: e2e
devices: [{thing: A}, {thing: B}]
EOF

write_profile() {  # write_profile MAY_SET_GROUP
  cat >"$WORK/profile.yaml" <<EOF
kernel:
  log_level: info
  group: $GROUP
plugins:
$(mm_profile_entry)
        client_id_patterns: ["<thing>", "<thing>-*"]
  - name: deployment
    may_set_group: $1
    config:
$(deployment_config)
        - {access_key_id: $RO_KEY, secret_access_key: $SECRET, operations: [GetGroup]}
EOF
}

write_profile true
launch_with_mm
pass "groved runs message_manager and the v1 API over TLS on 127.0.0.1:$API_PORT"

aws_env "$PKI/ca.crt"
gg1() { "$AWS" greengrass "$@" --endpoint-url "https://127.0.0.1:$API_PORT" --output json; }
phase() {  # phase NAME: one phase of v1_api_test.py, its PASS/FAIL lines counted here
  READONLY_KEY_ID=$RO_KEY "$PY" "$HERE/v1_api_test.py" "https://127.0.0.1:$API_PORT" \
    "$PKI/ca.crt" "$WORK/state.json" "$1" >"$WORK/py.out" 2>&1
  tally "$WORK/py.out" $? "v1_api_test.py $1"
}
state() { jq -r ".$1" "$WORK/state.json"; }
# routes: which of A's publishes reach B. A publish no subscription allows is denied. The
# broker checks a SUBSCRIBE against the table in force, so B subscribes again after each
# change of the group (resub): the previous subscriber stopped, the new one with its own
# client id (two with one id throw each other off the broker).
RESUBS=0
B_SUB_PID=""
resub() {
  if [[ -n "$B_SUB_PID" ]]; then kill "$B_SUB_PID" 2>/dev/null; wait "$B_SUB_PID" 2>/dev/null; fi
  RESUBS=$((RESUBS + 1))
  start_sub B '#' "$WORK/b.out" "B-sub-$RESUBS"
  B_SUB_PID=${SUB_PIDS[-1]}
}
resub
delivered() { deliver_until A "$1" "$2" "$WORK/b.out"; }
denied() {  # denied TOPIC PAYLOAD: the broker counts 3 denials of A, and B has none of it
  local before
  before=$(metric broker.denied_publish A)
  for _ in 1 2 3; do pub A "$1" "$2" >/dev/null 2>&1; done
  metric_is broker.denied_publish $((${before:-0} + 3)) 50 A && ! grep -qF "$2" "$WORK/b.out"
}

check "before any deployment, A -> B on a/to/b is denied" denied a/to/b before-1

# ---- build and deploy ----------------------------------------------------------------------
phase build
OUT=$(gg1 list-device-definitions 2>&1)
check "aws greengrass list-device-definitions -> 1 definition with its Tags" \
  test "$(jq -r '.Definitions | "\(length) \(.[0].Tags.site)"' <<<"$OUT" 2>/dev/null)" == "1 lab"
[[ $FAILED == 0 ]] || echo "$OUT"
OUT=$(gg1 get-group --group-id "$(state group)" 2>&1)
check "aws greengrass get-group -> the group, LatestVersion" \
  test "$(jq -r '.Name + " " + .LatestVersion' <<<"$OUT" 2>/dev/null)" == "home $(state version1)"
gg1 get-group --group-id nope >"$WORK/err.out" 2>&1
check "aws greengrass get-group of an unknown id -> IdNotFoundException (exit 254)" \
  bash -c '[[ $0 == 254 ]] && grep -q IdNotFoundException "$1"' "$?" "$WORK/err.out"
gg1 create-deployment --group-id "$(state group)" --deployment-type Sideways >"$WORK/err.out" 2>&1
check "aws greengrass create-deployment with an unknown type -> refused" \
  bash -c '[[ $0 != 0 ]] && grep -q "BadRequestException.*DeploymentType: must be one of" "$1"' "$?" "$WORK/err.out"

phase deploy
resub
check "deployed: the group file is the deployed group (its subscription)" grep -q '"a-b"' "$GROUP"
check "... grovectl status shows the kernel's group with 1 subscription" \
  status_has "home version 2: 2 devices, 0 functions, 1 subscriptions" 50
check "... and A -> B on a/to/b is delivered through the broker" delivered a/to/b hello-1
check "... A -> B on a/to/c is not" denied a/to/c early-c

# ---- a changed version -------------------------------------------------------------------
phase redeploy
resub
check "redeployed: A -> B on a/to/c is delivered" delivered a/to/c hello-c
check "... and a/to/b no longer" denied a/to/b late-b
cp "$GROUP" "$WORK/deployed.yaml"

# ---- refused deployments leave the group as it is -----------------------------------------------
phase refused
check "a deployment that failed left the group file as it was" cmp -s "$GROUP" "$WORK/deployed.yaml"
check "... and the route: A -> B on a/to/c still delivered" delivered a/to/c still-c

# ---- restart: the deployed group is the group ----------------------------------------------------
stop_groved
launch_with_mm
check "after a restart, groved loads the deployed group" \
  status_has "home version 1: 2 devices, 0 functions, 1 subscriptions" 50
resub
check "... A -> B on a/to/c is delivered" delivered a/to/c after-restart
phase status

# The kernel refuses a set from a plugin without may_set_group.
stop_groved
write_profile false
launch_with_mm
resub
phase kernel
check "the kernel's refusal left the group file as it was" cmp -s "$GROUP" "$WORK/deployed.yaml"
check "... and the route" delivered a/to/c after-refusal
check "groved logged the refusal" grep -q "may not replace the group" "$WORK/groved.out"

# ---- reset ------------------------------------------------------------------------------------
stop_groved
write_profile true
launch_with_mm
resub
check "before the reset, A -> B on a/to/c is delivered" delivered a/to/c before-reset
phase reset
check "reset: the group has no subscriptions left, the devices stay" \
  status_has "home version 2: 2 devices, 0 functions, 0 subscriptions" 50
check "... and A -> B on a/to/c is denied" denied a/to/c after-reset
check "groved is still running, both plugins too" \
  bash -c '"$0" status 2>/dev/null | grep -q "deployment .* running" &&
           "$0" status 2>/dev/null | grep -q "message_manager .* running"' "$GROVECTL"
finish
