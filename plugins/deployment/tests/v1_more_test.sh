#!/usr/bin/env bash
# End-to-end test of Greengrass v1's IP detector, role associations and bulk deployments
# (issue 16) with the real clients: groved runs the deployment plugin over TLS with
# ip_detector on (loopback included) and may_set_group; boto3's `greengrass` client
# (v1_more_test.py) and the AWS CLI (/usr/bin/aws greengrass) check the connectivity
# information against `ip -j addr` (an address added to lo seen live), associate roles,
# and run bulk deployments from a file:// input file and an s3:// one (an HTTPS mirror of
# the test's own, tests/artifact_server.py): the last good record's group becomes the
# kernel's. kill -9 of groved keeps the roles and the bulk deployments.
# Usage: v1_more_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
PY=/usr/bin/python3
AWS=/usr/bin/aws
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-v1-more "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}" "$PY" "$AWS" ip jq

make_server_pki
mkdir -p "$WORK/in" "$WORK/mirror"
"$PY" "$HERE/artifact_server.py" "$WORK/mirror" "$WORK/pki/server.crt" "$WORK/pki/server.key" \
  "$WORK/mirror.port" >"$WORK/mirror.out" 2>&1 &
MIRROR_PID=$!
test_cleanup() { kill "$MIRROR_PID" 2>/dev/null; ip addr del 127.0.0.42/8 dev lo 2>/dev/null; }
wait_for "$WORK/mirror.port" "" 100 && [[ -s $WORK/mirror.port ]] || abort "the mirror did not start"
MIRROR_PORT=$(cat "$WORK/mirror.port")
PORT=$(free_port)
GROUP=$WORK/group.yaml
cat >"$GROUP" <<EOF
name: e2e
devices: [{thing: A}, {thing: B}]
EOF
cat >"$WORK/profile.yaml" <<YAML
kernel:
  log_level: info
  group: $GROUP
plugins:
  - name: deployment
    may_set_group: true
    config:
$(API_PORT=$PORT PKI=$WORK/pki deployment_config "ip_detector: {enabled: true, include_loopback: true}" \
    "artifacts_file_dir: $WORK/in" "artifacts_base_url: https://127.0.0.1:$MIRROR_PORT" \
    "artifacts_ca_file: $WORK/pki/ca.crt")
YAML
launch_deployment
check "grovectl status shows the IP detector's addresses" status_has "lo 127.0.0.1" 100

aws_env "$WORK/pki/ca.crt"
gg1() { "$AWS" greengrass "$@" --endpoint-url "https://127.0.0.1:$PORT" --output json; }
phase() {  # phase NAME: one phase of v1_more_test.py, its PASS/FAIL lines counted here
  "$PY" "$HERE/v1_more_test.py" "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK/state.json" \
    "$WORK/in" "$WORK/mirror" "$1" >"$WORK/py.out" 2>&1
  tally "$WORK/py.out" $? "v1_more_test.py $1"
}
state() { jq -r ".$1" "$WORK/state.json"; }

phase detector
phase roles
OUT=$(gg1 get-associated-role --group-id "$(state groups.first.id)" 2>&1)
check "aws greengrass get-associated-role -> the group's RoleArn" \
  test "$(jq -r .RoleArn <<<"$OUT" 2>/dev/null)" == "arn:aws:iam::123456789012:role/service-role/GreengrassGroupRole"
gg1 associate-role-to-group --group-id "$(state groups.first.id)" --role-arn nope >"$WORK/err.out" 2>&1
check "aws greengrass associate-role-to-group with a bad ARN -> BadRequestException naming RoleArn (exit 254)" \
  bash -c '[[ $0 == 254 ]] && grep -q "BadRequestException.*RoleArn" "$1"' "$?" "$WORK/err.out"
OUT=$(gg1 get-service-role-for-account 2>&1)
check "aws greengrass get-service-role-for-account -> the role" \
  test "$(jq -r .RoleArn <<<"$OUT" 2>/dev/null)" == "arn:aws:iam::123456789012:role/Greengrass_ServiceRole"

phase bulk
check "after the file:// bulk deployment the kernel's group is its last good record's: second" \
  status_matches "second version [0-9]+: 2 devices" 50
check "... and it is the group file" grep -q "second" "$GROUP"
OUT=$(gg1 get-bulk-deployment-status --bulk-deployment-id "$(state bulk1)" 2>&1)
check "aws greengrass get-bulk-deployment-status -> Completed, 6 processed" \
  test "$(jq -r '"\(.BulkDeploymentStatus) \(.BulkDeploymentMetrics.RecordsProcessed)"' <<<"$OUT" 2>/dev/null)" == "Completed 6"
OUT=$(gg1 list-bulk-deployment-detailed-reports --bulk-deployment-id "$(state bulk1)" 2>&1)
check "aws greengrass list-bulk-deployment-detailed-reports -> 2 Success, 4 Failure" \
  test "$(jq -r '[.Deployments[].DeploymentStatus] | group_by(.) | map("\(.[0]) \(length)") | join(",")' <<<"$OUT" 2>/dev/null)" == "Failure 4,Success 2"

phase bulk2
check "after the s3:// bulk deployment the kernel's group is its last record's: first" \
  status_matches "first version [0-9]+: 2 devices" 50
# (The CLI reads a file:// parameter value itself, so its input file here is an s3:// one.)
OUT=$(gg1 start-bulk-deployment --input-file-uri "s3://bucket/nothing.jsonl" \
        --execution-role-arn arn:aws:iam::123456789012:role/r 2>&1)
BID=$(jq -r .BulkDeploymentId <<<"$OUT" 2>/dev/null)
check "aws greengrass start-bulk-deployment -> a BulkDeploymentId" test -n "$BID" -a "$BID" != null
for _ in $(seq 1 30); do
  OUT=$(gg1 get-bulk-deployment-status --bulk-deployment-id "$BID" 2>&1)
  [[ $(jq -r .BulkDeploymentStatus <<<"$OUT" 2>/dev/null) == Failed ]] && break
  sleep 0.1
done
check "... a missing s3:// input: Failed with the reason" \
  bash -c 'jq -e ".BulkDeploymentStatus == \"Failed\" and (.ErrorMessage | test(\"InputFileUri\"))" <<<"$0" >/dev/null' "$OUT"
gg1 stop-bulk-deployment --bulk-deployment-id "$BID" >"$WORK/err.out" 2>&1
check "aws greengrass stop-bulk-deployment of a Failed one -> BadRequestException" \
  bash -c '[[ $0 == 254 ]] && grep -q "BadRequestException.*Failed" "$1"' "$?" "$WORK/err.out"
"$PY" - "$WORK/state.json" "$BID" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))
s["bulks"].insert(0, sys.argv[2])
json.dump(s, open(sys.argv[1], "w"))
PYEOF

stop_groved KILL
launch_deployment "groved did not come back after kill -9"
phase after
check "after kill -9 the kernel's group is still first" status_matches "first version [0-9]+: 2 devices" 50
# A reload lets groups.db go (the next instance opens it) and finds the same state.
check "grovectl reload deployment -> exit 0" "$GROVECTL" reload deployment
phase after
check "groved and the deployment plugin still run" status_matches "deployment .* running" 1
[[ $FAILED == 0 ]] || { echo "--- groved output"; grep -i "deployment" "$WORK/groved.out" | tail -n 60; }
finish
