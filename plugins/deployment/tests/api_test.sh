#!/usr/bin/env bash
# End-to-end test of the deployment plugin's Greengrass v2 API with the real clients:
# groved runs the plugin over TLS (a group PKI from tools/grove-certs); Debian's AWS CLI
# (/usr/bin/aws) and boto3 (/usr/bin/python3, api_test.py) sign with the configured keys.
# Covers every operation of part 1, pagination, idempotency, each error type, and kill -9
# of groved right after a version was created.
# Usage: api_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
# Debian's clients, whatever else is first on PATH (tools/deps installs them).
AWS=/usr/bin/aws
PY=/usr/bin/python3
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-deployment-test "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}" "$AWS" "$PY" openssl
export GROVE_CA_DIR=$WORK/ca
ARTIFACT_SERVER_PID=""
# shellcheck disable=SC2317  # invoked from the EXIT trap (grove_test_lib.sh's)
test_cleanup() {
  [[ -n "$ARTIFACT_SERVER_PID" ]] && kill "$ARTIFACT_SERVER_PID" 2>/dev/null
}

make_server_pki
# The artifact server (https, the same PKI): what s3:// URIs map to, and https ones.
mkdir -p "$WORK/srv/s3/DOC-EXAMPLE-BUCKET/artifacts/com.example.HelloWorld/1.0.0" "$WORK/local"
echo 'print("hello world")' >"$WORK/srv/s3/DOC-EXAMPLE-BUCKET/artifacts/com.example.HelloWorld/1.0.0/hello_world.py"
"$PY" "$HERE/artifact_server.py" "$WORK/srv" "$WORK/pki/server.crt" "$WORK/pki/server.key" \
  "$WORK/artifact.port" 2>"$WORK/artifact_server.out" &
ARTIFACT_SERVER_PID=$!
for _ in $(seq 1 50); do [[ -s "$WORK/artifact.port" ]] && break; sleep 0.1; done
[[ -s "$WORK/artifact.port" ]] || abort "the artifact server did not start"
APORT=$(cat "$WORK/artifact.port")
PORT=$(free_port)
API_PORT=$PORT # gg's
RO_KEY=AKIAGROVEREADONLY1
SLOW_KEY=AKIAGROVESLOWKEY01
cat >"$WORK/profile.yaml" <<YAML
kernel:
  log_level: info
plugins:
  - name: deployment
    config:
      thing_name: core-1
      thing_groups: [site]
      api: {port: $PORT, cert_file: $WORK/pki/server.crt, key_file: $WORK/pki/server.key,
            max_body_bytes: 65536}
      lambda_packages_dir: $WORK/lambda_packages   # api_test.py puts the packages there
      artifacts_base_url: https://127.0.0.1:$APORT/s3
      artifacts_file_dir: $WORK/local
      artifacts_ca_file: $WORK/pki/ca.crt
      credentials:
        - {access_key_id: $KEY, secret_access_key: $SECRET}
        - {access_key_id: $RO_KEY, secret_access_key: $SECRET, operations: [GetComponent]}
        - {access_key_id: $SLOW_KEY, secret_access_key: $SECRET, requests_per_second: 1}
YAML

start_groved() {
  launch_groved_until "deployment .* running" && status_has "deployment.api: https://127.0.0.1:$PORT"
}
start_groved || abort "groved did not start the deployment plugin"
pass "groved serves the Greengrass v2 API over TLS on 127.0.0.1:$PORT"

aws_env "$WORK/pki/ca.crt"
ARN=arn:aws:greengrass:us-east-1:123456789012:components:com.example.HelloWorld:versions:1.0.0
# wait_state ARN STATE [TENTHS]: until describe-component shows componentState STATE
# (10 s by default).
wait_state() {
  for _ in $(seq 1 "${3:-100}"); do
    [[ $(gg describe-component --arn "$1" 2>/dev/null | jq -r .status.componentState) == "$2" ]] && return 0
    sleep 0.1
  done
  return 1
}

cat >"$WORK/hello.yaml" <<'YAML'
---
RecipeFormatVersion: '2020-01-25'
ComponentName: com.example.HelloWorld
ComponentVersion: '1.0.0'
ComponentDescription: My first AWS IoT Greengrass component.
ComponentPublisher: Amazon
ComponentConfiguration:
  DefaultConfiguration:
    Message: world
Manifests:
  - Platform:
      os: linux
    Lifecycle:
      run: |
        python3 -u {artifacts:path}/hello_world.py "{configuration:/Message}"
    Artifacts:
      - Uri: s3://DOC-EXAMPLE-BUCKET/artifacts/com.example.HelloWorld/1.0.0/hello_world.py
YAML
OUT=$(gg create-component-version --inline-recipe "fileb://$WORK/hello.yaml" 2>&1)
check "aws create-component-version (YAML recipe, an s3 artifact) -> the version ARN, REQUESTED" \
  test "$(jq -r '.arn + " " + .status.componentState' <<<"$OUT" 2>/dev/null)" == "$ARN REQUESTED"
[[ $FAILED == 0 ]] || echo "$OUT"

# groved dies at once; the version was committed before the CLI got its answer.
stop_groved KILL
start_groved || abort "groved did not come back after kill -9"
check "after kill -9 and a restart, its s3 artifact is fetched (artifacts_base_url): DEPLOYABLE" \
  wait_state "$ARN" DEPLOYABLE
OUT=$(gg describe-component --arn "$ARN" 2>&1)
check "after kill -9 and a restart, describe-component finds it (publisher, platform)" \
  test "$(jq -r '.publisher + " " + .platforms[0].name' <<<"$OUT" 2>/dev/null)" == "Amazon linux"
OUT=$(gg get-component --arn "$ARN" --recipe-output-format JSON 2>&1)
check "aws get-component --recipe-output-format JSON -> the recipe (base64), same message" \
  test "$(jq -r .recipe <<<"$OUT" | base64 -d 2>/dev/null | jq -r .ComponentConfiguration.DefaultConfiguration.Message)" == world
gg create-component-version --inline-recipe "fileb://$WORK/hello.yaml" >"$WORK/dup.out" 2>&1
check "the same version again -> ConflictException (exit 254)" \
  grep -q "ConflictException" "$WORK/dup.out"
for v in 1.1.0 1.2.0 2.0.0; do
  sed "s/^ComponentVersion: .*/ComponentVersion: '$v'/" "$WORK/hello.yaml" >"$WORK/v.yaml"
  gg create-component-version --inline-recipe "fileb://$WORK/v.yaml" >/dev/null 2>&1 ||
    fail "create $v"
done
for v in 1.1.0 1.2.0 2.0.0; do
  wait_state "${ARN%:*}:$v" DEPLOYABLE || fail "$v did not become DEPLOYABLE"
done
OUT=$(gg list-component-versions --arn "${ARN%:versions:*}" --page-size 1 2>&1)
check "aws list-component-versions --page-size 1 follows nextToken through 4 versions" \
  test "$(jq -r '[.componentVersions[].componentVersion] | join(",")' <<<"$OUT" 2>/dev/null)" == "2.0.0,1.2.0,1.1.0,1.0.0"
OUT=$(gg list-components 2>&1)
check "aws list-components -> latestVersion 2.0.0" \
  test "$(jq -r '.components[0].latestVersion.componentVersion' <<<"$OUT" 2>/dev/null)" == 2.0.0
# grovectl components: the same store over the bus (no SigV4: the control socket's owner).
CARN=${ARN%:versions:*}
check "grovectl components list -> latestVersion 2.0.0" \
  test "$("$GROVECTL" components list 2>&1 | jq -r '.components[0].latestVersion.componentVersion')" == 2.0.0
check "grovectl components recipe --format JSON -> the recipe itself" \
  test "$("$GROVECTL" components recipe "$ARN" --format JSON 2>&1 | jq -r .ComponentName)" == com.example.HelloWorld
check "grovectl components versions -> 4, newest first" \
  test "$("$GROVECTL" components versions "$CARN" 2>&1 | jq -r '[.componentVersions[].componentVersion] | join(",")')" == "2.0.0,1.2.0,1.1.0,1.0.0"
OUT=$("$GROVECTL" components guidance "$CARN:versions:2.0.0" DELETED --message "broken, use 1.2.0" 2>&1)
check "grovectl components guidance DELETED -> describe shows it with its message" \
  test "$(jq -r '.status.vendorGuidance + "/" + .status.vendorGuidanceMessage' <<<"$OUT" 2>/dev/null)" == "DELETED/broken, use 1.2.0"
"$GROVECTL" components guidance "$CARN:versions:1.2.0" DISCONTINUED --message "last of 1.x" >/dev/null 2>&1
OUT=$(gg resolve-component-candidates --platform '{"name":"linux","attributes":{"os":"linux"}}' \
  --component-candidates '[{"componentName":"com.example.HelloWorld","componentVersion":"1.0.0","versionRequirements":{"me":">=1.0.0"}}]' 2>&1)
check "aws resolve-component-candidates skips the DELETED 2.0.0, returns DISCONTINUED 1.2.0 with its guidance" \
  test "$(jq -r '.resolvedComponentVersions[0] | .componentVersion + "/" + .vendorGuidance + "/" + .message' <<<"$OUT" 2>/dev/null)" == "1.2.0/DISCONTINUED/last of 1.x"
"$GROVECTL" components describe not-an-arn >"$WORK/ctl.out" 2>&1
check "grovectl components describe of a non-ARN -> exit 1, ValidationException" \
  bash -c '[[ $0 != 0 ]] && grep -q "ValidationException" "$1"' "$?" "$WORK/ctl.out"
"$GROVECTL" components guidance "$ARN" SOMETIMES >"$WORK/ctl.out" 2>&1
check "grovectl components guidance with a bad state -> exit 1" \
  bash -c '[[ $0 != 0 ]] && grep -q "ACTIVE, DISCONTINUED or DELETED" "$1"' "$?" "$WORK/ctl.out"

printf 'RecipeFormatVersion: 2020-01-25\nComponentName: x\nComponentVersion: one\n' >"$WORK/bad.yaml"
gg create-component-version --inline-recipe "fileb://$WORK/bad.yaml" >"$WORK/bad.out" 2>&1
check "a malformed recipe -> ValidationException naming /ComponentVersion and its line" \
  grep -q "ValidationException.*/ComponentVersion: line 3" "$WORK/bad.out"
AWS_SECRET_ACCESS_KEY=not-the-secret gg list-components >"$WORK/sig.out" 2>&1
check "a wrong secret -> InvalidSignatureException" grep -q "InvalidSignatureException" "$WORK/sig.out"
AWS_ACCESS_KEY_ID=AKIANOBODY00000000 gg list-components >"$WORK/key.out" 2>&1
check "an unknown key -> UnrecognizedClientException" grep -q "UnrecognizedClientException" "$WORK/key.out"
AWS_ACCESS_KEY_ID=$RO_KEY gg delete-component --arn "$ARN" >"$WORK/ro.out" 2>&1
check "a key allowed GetComponent only may not delete -> AccessDeniedException" \
  grep -q "AccessDeniedException" "$WORK/ro.out"
check "aws delete-component -> exit 0" gg delete-component --arn "$ARN"
gg describe-component --arn "$ARN" >"$WORK/gone.out" 2>&1
check "... and describe-component then -> ResourceNotFoundException" \
  grep -q "ResourceNotFoundException" "$WORK/gone.out"

# lambdaFunction from the CLI: a package of a program (code/ directory) in lambda_packages_dir.
mkdir -p "$WORK/lambda_packages/cli-fn/2/code"
echo '{"FunctionName": "cli-fn", "Runtime": "provided.al2", "Handler": "bootstrap"}' \
  >"$WORK/lambda_packages/cli-fn/2/configuration.json"
OUT=$(gg create-component-version \
  --lambda-function "lambdaArn=arn:aws:lambda:us-east-1:123456789012:function:cli-fn:2" 2>&1)
check "aws create-component-version --lambda-function -> cli-fn 2.0.0" \
  test "$(jq -r '.componentName + " " + .componentVersion' <<<"$OUT" 2>/dev/null)" == "cli-fn 2.0.0"
OUT=$(gg get-component --arn arn:aws:greengrass:us-east-1:123456789012:components:cli-fn:versions:2.0.0 \
  --recipe-output-format JSON 2>&1)
check "aws get-component -> the converted recipe: function_runtime's definition of the program" \
  test "$(jq -r '.recipe | @base64d | fromjson | .ComponentConfiguration.DefaultConfiguration
                 | .runtime + " " + .handler + " " + .codeUri' <<<"$OUT" 2>/dev/null)" \
       == "executable bootstrap $WORK/lambda_packages/cli-fn/2/code"
gg create-component-version \
  --lambda-function 'lambdaArn=arn:aws:lambda:us-east-1:123456789012:function:cli-fn:$LATEST' >"$WORK/latest.out" 2>&1
check "aws create-component-version --lambda-function ...:\$LATEST -> ValidationException" \
  grep -q 'ValidationException.*\$LATEST' "$WORK/latest.out"

# boto3: the rest (JSON recipes, tags, pagination, idempotency, every error type, the
# skewed clock, an unsigned request, the tag operations, the rate limit).
ARTIFACT_URL=https://127.0.0.1:$APORT SRV=$WORK/srv LOCAL=$WORK/local \
ARTIFACTS=$WORK/var/plugins/deployment/artifacts \
READONLY_KEY_ID=$RO_KEY SLOW_KEY_ID=$SLOW_KEY "$PY" "$HERE/api_test.py" "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK" >"$WORK/py.out" 2>&1
tally "$WORK/py.out" $? api_test.py

# Connectivity info with the AWS CLI (no /v2 in its route); boto3 did its own above.
OUT=$(gg update-connectivity-info --thing-name cli-core --connectivity-info \
  hostAddress=192.168.1.10,portNumber=8883,id=lan hostAddress=core.example.com,portNumber=443,metadata=alpn 2>&1)
check "aws update-connectivity-info -> version 1" test "$(jq -r .version <<<"$OUT" 2>/dev/null)" == 1
OUT=$(gg get-connectivity-info --thing-name cli-core 2>&1)
check "aws get-connectivity-info -> both endpoints, Id defaulting to the host" \
  test "$(jq -r '[.connectivityInfo[] | .id + "@" + .hostAddress + ":" + (.portNumber|tostring) + "/" + .metadata] | join(",")' <<<"$OUT" 2>/dev/null)" \
  == "lan@192.168.1.10:8883/,core.example.com@core.example.com:443/alpn"
[[ $FAILED == 0 ]] || echo "$OUT"

# Deployments applied on this core (issue 15) with boto3: real processes, logs,
# configuration, rollback, BROKEN, delete (deployments_test.py).
"$PY" "$HERE/deployments_test.py" "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK/var" >"$WORK/dpy.out" 2>&1
tally "$WORK/dpy.out" $? deployments_test.py

# The AWS CLI reads them back.
check "aws greengrassv2 get-core-device -> core-1, linux, coreVersion" \
  test "$(gg get-core-device --core-device-thing-name core-1 | jq -r '.coreDeviceThingName + " " + .platform + " " + .coreVersion')" == "core-1 linux 0.1.0"
check "aws greengrassv2 list-deployments (LATEST_ONLY) -> one, for the thing" \
  test "$(gg list-deployments | jq -r '[.deployments[].targetArn] | join(",")')" == "$THING"
check "aws greengrassv2 list-core-devices --thing-group-arn (site) -> core-1" \
  test "$(gg list-core-devices --thing-group-arn arn:aws:iot:us-east-1:123456789012:thinggroup/site | jq -r '.coreDevices[0].coreDeviceThingName')" == core-1
gg create-deployment --target-arn arn:aws:iot:us-east-1:123456789012:thing/other >"$WORK/other.out" 2>&1
check "aws create-deployment for another thing -> ResourceNotFoundException" grep -q ResourceNotFoundException "$WORK/other.out"

# grovectl over the bus (no SigV4): installed components with their last error, and the
# deployments of this core.
OUT=$("$GROVECTL" components installed 2>&1)
check "grovectl components installed -> e2e.Crash BROKEN with its last exit" \
  test "$(jq -r '.installedComponents[] | select(.componentName == "e2e.Crash") | .lifecycleState + "/" + .lifecycleStateDetails' <<<"$OUT" 2>/dev/null)" == "BROKEN/run exited with code 1"
echo '{"components": {"e2e.Lib": {"componentVersion": "1.0.0"}}}' >"$WORK/dep.json"
CTL_ID=$("$GROVECTL" deployments create --file "$WORK/dep.json" 2>&1 | jq -r .deploymentId)
for _ in $(seq 1 100); do
  [[ $("$GROVECTL" deployments get "$CTL_ID" 2>/dev/null | jq -r .deploymentStatus) == COMPLETED ]] && break
  sleep 0.1
done
check "grovectl deployments create --file (targetArn defaulted to the core's thing) -> COMPLETED" \
  test "$("$GROVECTL" deployments get "$CTL_ID" 2>&1 | jq -r '.deploymentStatus + " " + .targetArn')" == "COMPLETED $THING"
check "... grovectl components installed: only e2e.Lib is left" \
  test "$("$GROVECTL" components installed 2>&1 | jq -r '[.installedComponents[].componentName] | join(",")')" == e2e.Lib
check "grovectl deployments list -> it first" \
  test "$("$GROVECTL" deployments list 2>&1 | jq -r '.deployments[0].deploymentId')" == "$CTL_ID"
"$GROVECTL" deployments cancel "$CTL_ID" >"$WORK/ctl.out" 2>&1
check "grovectl deployments cancel of a COMPLETED one -> exit 1, ConflictException" \
  bash -c '[[ $0 != 0 ]] && grep -q "ConflictException" "$1"' "$?" "$WORK/ctl.out"
"$GROVECTL" deployments delete "$CTL_ID" >"$WORK/ctl.out" 2>&1
check "grovectl deployments delete of the COMPLETED one -> exit 0" bash -c '[[ $0 == 0 ]]' "$?"
"$GROVECTL" deployments get "$CTL_ID" >"$WORK/ctl.out" 2>&1
check "... grovectl deployments get of it -> exit 1, ResourceNotFoundException" \
  bash -c '[[ $0 != 0 ]] && grep -q "ResourceNotFoundException" "$1"' "$?" "$WORK/ctl.out"
check "... what the core runs unchanged: grovectl components installed still e2e.Lib" \
  test "$("$GROVECTL" components installed 2>&1 | jq -r '[.installedComponents[].componentName] | join(",")')" == e2e.Lib

# grovectl deployments get / effective: this core's execution of a deployment and the
# reason it failed (e2e.Nowhere is no component: FAILED at resolution, nothing applied).
echo '{"components": {"e2e.Nowhere": {"componentVersion": "1.0.0"}}}' >"$WORK/nowhere.json"
BAD_ID=$("$GROVECTL" deployments create --file "$WORK/nowhere.json" 2>&1 | jq -r .deploymentId)
OUT=$("$GROVECTL" deployments get "$BAD_ID" 2>&1)
check "grovectl deployments get of a deployment failing at resolution -> FAILED, and the core's FAILED with the reason naming e2e.Nowhere" \
  bash -c 'jq -e ".deploymentStatus == \"FAILED\" and .coreDeviceExecutionStatus == \"FAILED\" and (.reason | contains(\"e2e.Nowhere\"))" <<<"$0" >/dev/null' "$OUT"
[[ $FAILED == 0 ]] || echo "$OUT"
OUT=$("$GROVECTL" deployments effective 2>&1)
check "grovectl deployments effective -> it, FAILED with the same reason" \
  bash -c 'jq -e --arg d "$1" --arg r "$2" "[.effectiveDeployments[] | select(.deploymentId == \$d)] | length == 1 and .[0].coreDeviceExecutionStatus == \"FAILED\" and .[0].reason == \$r" <<<"$0" >/dev/null' \
  "$OUT" "$BAD_ID" "$(jq -r .reason <<<"$("$GROVECTL" deployments get "$BAD_ID" 2>&1)")"
# Past the API's 100 rows a page: grovectl follows nextToken to the last page. The AWS
# CLI's own paginator gives the rows to compare with.
for _ in $(seq 1 101); do "$GROVECTL" deployments create --file "$WORK/nowhere.json" >/dev/null 2>&1; done
gg list-deployments --history-filter ALL | jq -r '.deployments[].deploymentId' >"$WORK/aws_list"
"$GROVECTL" deployments list 2>"$WORK/ctl.err" | jq -r '.deployments[].deploymentId' >"$WORK/ctl_list"
check "grovectl deployments list -> every deployment ($(wc -l <"$WORK/ctl_list") rows, past 100), as the AWS CLI's pages, in order" \
  bash -c '[[ $(wc -l <"$0") -gt 102 ]] && cmp -s "$0" "$1"' "$WORK/ctl_list" "$WORK/aws_list"
gg list-effective-deployments --core-device-thing-name core-1 | jq -r '.effectiveDeployments[].deploymentId' >"$WORK/aws_eff"
"$GROVECTL" deployments effective 2>"$WORK/ctl.err" | jq -r '.effectiveDeployments[].deploymentId' >"$WORK/ctl_eff"
check "grovectl deployments effective -> every one ($(wc -l <"$WORK/ctl_eff") rows), as the AWS CLI's pages" \
  bash -c '[[ $(wc -l <"$0") -gt 102 ]] && cmp -s "$0" "$1"' "$WORK/ctl_eff" "$WORK/aws_eff"
OUT=$("$GROVECTL" deployments list --max 100 2>&1)
NEXT=$(jq -r '.nextToken // ""' <<<"$OUT")
check "grovectl deployments list --max 100 -> one page: 100 rows and a nextToken" \
  bash -c '[[ $(jq ".deployments | length" <<<"$0") == 100 && -n $1 ]]' "$OUT" "$NEXT"
OUT=$("$GROVECTL" deployments list --max 100 --next-token "$NEXT" 2>&1)
check "... --next-token it -> the rest, the last page (no nextToken)" \
  bash -c '[[ $(jq ".deployments | length" <<<"$0") == $(( $1 - 100 )) && $(jq -r ".nextToken // \"\"" <<<"$0") == "" ]]' \
  "$OUT" "$(wc -l <"$WORK/aws_list")"
"$GROVECTL" deployments list --max 101 >"$WORK/ctl.out" 2>&1
check "grovectl deployments list --max 101 -> exit 1, ValidationException" \
  bash -c '[[ $0 != 0 ]] && grep -q "ValidationException" "$1"' "$?" "$WORK/ctl.out"

# grovectl deployments cancel of an ACTIVE deployment: e2e.Gate's install waits for a file.
cat >"$WORK/gate.yaml" <<'YAML'
RecipeFormatVersion: '2020-01-25'
ComponentName: e2e.Gate
ComponentVersion: '1.0.0'
Manifests:
  - Platform: {os: linux}
    Lifecycle:
      install: {Script: 'echo waiting > {work:path}/gate; while [ ! -e {work:path}/open ]; do sleep 0.1; done', Timeout: 120}
      run: exec sleep 300
YAML
gg create-component-version --inline-recipe "fileb://$WORK/gate.yaml" >/dev/null 2>&1
echo '{"components": {"e2e.Lib": {"componentVersion": "1.0.0"}, "e2e.Gate": {"componentVersion": "1.0.0"}}}' >"$WORK/gate.json"
GATE_ID=$("$GROVECTL" deployments create --file "$WORK/gate.json" 2>&1 | jq -r .deploymentId)
GW=$WORK/var/plugins/deployment/components/work/e2e.Gate
for _ in $(seq 1 100); do [[ -s "$GW/gate" ]] && break; sleep 0.1; done
check "grovectl deployments get mid-install -> ACTIVE, the core's IN_PROGRESS" \
  test "$("$GROVECTL" deployments get "$GATE_ID" 2>&1 | jq -r '.deploymentStatus + " " + .coreDeviceExecutionStatus')" == "ACTIVE IN_PROGRESS"
"$GROVECTL" deployments cancel "$GATE_ID" >"$WORK/ctl.out" 2>&1
check "grovectl deployments cancel of the ACTIVE one -> exit 0, SUCCESS" \
  bash -c '[[ $0 == 0 ]] && jq -e ".message == \"SUCCESS\"" "$1" >/dev/null' "$?" "$WORK/ctl.out"
check "... grovectl deployments get -> CANCELED" \
  test "$("$GROVECTL" deployments get "$GATE_ID" 2>&1 | jq -r .deploymentStatus)" == CANCELED
touch "$GW/open"
for _ in $(seq 1 100); do
  [[ $("$GROVECTL" deployments get "$GATE_ID" 2>/dev/null | jq -r .coreDeviceExecutionStatus) != IN_PROGRESS ]] && break
  sleep 0.1
done
check "... its run, under way, goes on to its end: the core's execution no longer IN_PROGRESS" \
  test "$("$GROVECTL" deployments get "$GATE_ID" 2>&1 | jq -r .coreDeviceExecutionStatus)" != IN_PROGRESS
# components installed one page at a time: a row, then the rest after its nextToken.
"$GROVECTL" components installed 2>&1 | jq -r '.installedComponents[].componentName' >"$WORK/ctl_inst"
OUT=$("$GROVECTL" components installed --max 1 2>&1)
NEXT=$(jq -r '.nextToken // ""' <<<"$OUT")
{ jq -r '.installedComponents[].componentName' <<<"$OUT"
  "$GROVECTL" components installed --next-token "$NEXT" 2>&1 | jq -r '.installedComponents[].componentName'; } >"$WORK/ctl_pages"
check "grovectl components installed --max 1, then --next-token -> one row, then the rest: $(paste -sd, "$WORK/ctl_pages") as in one answer" \
  bash -c '[[ $(jq ".installedComponents | length" <<<"$0") == 1 && -n $1 && $(wc -l <"$2") -ge 2 ]] && cmp -s "$2" "$3"' \
  "$OUT" "$NEXT" "$WORK/ctl_pages" "$WORK/ctl_inst"

# kill -9 of groved in the middle of a deployment (a slow install): at the next start the
# journal's ACTIVE / IN_PROGRESS deployment is applied again and completes. The first
# install's sleep (60 s) must outlive groved's restart however slow the machine is, or the
# next start would find nothing left to kill; the install run again is quick.
cat >"$WORK/slowinstall.yaml" <<'YAML'
RecipeFormatVersion: '2020-01-25'
ComponentName: e2e.SlowInstall
ComponentVersion: '1.0.0'
Manifests:
  - Platform: {os: linux}
    Lifecycle:
      install: echo $$ > {work:path}/install.pid; echo start >> {work:path}/installs; if [ ! -e {work:path}/slow ]; then touch {work:path}/slow; sleep 60; fi; sleep 1; echo done >> {work:path}/installs
      run: echo $$ > {work:path}/pid; exec sleep 300
YAML
gg create-component-version --inline-recipe "fileb://$WORK/slowinstall.yaml" >/dev/null 2>&1
DID=$(gg create-deployment --target-arn "$THING" --components '{"e2e.SlowInstall":{"componentVersion":"1.0.0"}}' | jq -r .deploymentId)
SW=$WORK/var/plugins/deployment/components/work/e2e.SlowInstall
for _ in $(seq 1 50); do [[ -s "$SW/installs" ]] && break; sleep 0.1; done
EXEC=$(gg list-effective-deployments --core-device-thing-name core-1 | jq -r --arg d "$DID" '.effectiveDeployments[] | select(.deploymentId == $d) | .coreDeviceExecutionStatus')
check "mid-install: the deployment is IN_PROGRESS ($EXEC), the install started" \
  bash -c '[[ $0 == IN_PROGRESS && $(cat "$1") == start ]]' "$EXEC" "$SW/installs"
stop_groved KILL
OLD_PGID=$(cat "$SW/install.pid")
for _ in $(seq 1 20); do [[ -d /proc/$OLD_PGID ]] || break; sleep 0.1; done
check "kill -9 of groved: the install's shell dies with it (parent-death signal)" \
  test ! -d "/proc/$OLD_PGID"
start_groved || abort "groved did not come back after kill -9 mid-deployment"
# (A killed orphan may stay a zombie when PID 1 does not reap: only live ones count.)
check "... what the shell started (its sleep) is killed at the next start" \
  bash -c '[[ -z $(ps -eo pgid=,stat= | awk -v g="$0" '"'"'$1 == g && $2 !~ /^Z/'"'"') ]] && grep -q "killed process .* left by the last run" "$1"' "$OLD_PGID" "$WORK/groved.out"
for _ in $(seq 1 200); do
  [[ $(gg get-deployment --deployment-id "$DID" | jq -r .deploymentStatus) == COMPLETED ]] && break
  sleep 0.1
done
check "after the restart the deployment is applied again: COMPLETED" \
  test "$(gg get-deployment --deployment-id "$DID" | jq -r .deploymentStatus)" == COMPLETED
check "... its install ran again to the end, the component RUNNING with a live pid" \
  bash -c '[[ $(tail -1 "$0") == done ]] && [[ -d /proc/$(cat "$1") ]]' "$SW/installs" "$SW/pid"
check "... ListInstalledComponents: e2e.SlowInstall RUNNING" \
  test "$(gg list-installed-components --core-device-thing-name core-1 | jq -r '.installedComponents[] | select(.componentName == "e2e.SlowInstall") | .lifecycleState')" == RUNNING

# The installed components and their effective configurations are journaled (SQLite):
# two deployments merging different keys, then kill -9; the restart reads the set back and
# the current deployment, applied again, builds on the journaled configuration (from the
# defaults it would lose the first merge).
deploy_done() {
  local id
  id=$(gg create-deployment --target-arn "$THING" --components "$1" | jq -r .deploymentId)
  for _ in $(seq 1 100); do
    [[ $(gg get-deployment --deployment-id "$id" | jq -r .deploymentStatus) == COMPLETED ]] && return 0
    sleep 0.1
  done
  return 1
}
SVC_LOG=$WORK/var/logs/components/e2e.Service.log
SVC_PID_FILE=$WORK/var/plugins/deployment/components/work/e2e.Service/pid
deploy_done '{"e2e.Service":{"componentVersion":"1.0.0","configurationUpdate":{"merge":"{\"Other\":\"o4\"}"}}}'
check "aws create-deployment merging {Other: o4} into e2e.Service -> COMPLETED" test $? == 0
deploy_done '{"e2e.Service":{"componentVersion":"1.0.0","configurationUpdate":{"merge":"{\"Message\":\"m4\"}"}}}'
check "... then merging {Message: m4} -> COMPLETED" test $? == 0
for _ in $(seq 1 50); do [[ $(tail -1 "$SVC_LOG") == msg=m4* ]] && break; sleep 0.1; done
check "... the component sees both merges (msg=m4 env=m4 other=o4)" \
  bash -c '[[ $(tail -1 "$0") == "msg=m4 env=m4 other=o4 "* ]]' "$SVC_LOG"
OLD_SVC=$(cat "$SVC_PID_FILE")
stop_groved KILL
start_groved || abort "groved did not come back after kill -9 (journaled components)"
check "after kill -9 and a restart ListInstalledComponents reads the set back: e2e.Service 1.0.0 (root), e2e.Lib" \
  test "$(gg list-installed-components --core-device-thing-name core-1 | jq -r '[.installedComponents[] | .componentName + "@" + .componentVersion + (if .isRoot then "(root)" else "" end)] | sort | join(",")')" == "e2e.Lib@1.0.0,e2e.Service@1.0.0(root)"
for _ in $(seq 1 100); do
  NEW_SVC=$(cat "$SVC_PID_FILE" 2>/dev/null)
  [[ -n $NEW_SVC && $NEW_SVC != "$OLD_SVC" && $(tail -1 "$SVC_LOG") == msg=* ]] && break
  sleep 0.1
done
check "... e2e.Service runs again (new pid) with the journaled configuration: msg=m4 env=m4 other=o4" \
  bash -c '[[ $1 != "$2" && -d /proc/$1 && $(tail -1 "$0") == "msg=m4 env=m4 other=o4 "* ]]' "$SVC_LOG" "$NEW_SVC" "$OLD_SVC"
[[ $FAILED == 0 ]] || tail -3 "$SVC_LOG"
check "... and RUNNING" \
  test "$(gg list-installed-components --core-device-thing-name core-1 | jq -r '.installedComponents[] | select(.componentName == "e2e.Service") | .lifecycleState')" == RUNNING

# kill -9 in the middle of a download (the server sends 100 bytes each half second): the
# version is never DEPLOYABLE half fetched, no partial file is ever under sha256/, and
# the next start fetches it again from the beginning.
ART=$WORK/var/plugins/deployment/artifacts
mkdir -p "$WORK/srv/s3/bucket"
# 25 s of download: the AWS CLI calls around the kill take seconds each on a loaded machine,
# and the version must still be mid-download when groved is killed.
head -c 5000 /dev/urandom >"$WORK/srv/s3/bucket/slow-blob.bin"
SHA=$(sha256sum "$WORK/srv/s3/bucket/slow-blob.bin" | cut -d' ' -f1)
DIGEST=$(openssl dgst -sha256 -binary "$WORK/srv/s3/bucket/slow-blob.bin" | base64)
cat >"$WORK/slow.yaml" <<YAML
RecipeFormatVersion: '2020-01-25'
ComponentName: com.example.Slow
ComponentVersion: '1.0.0'
Manifests:
  - Artifacts:
      - {Uri: s3://bucket/slow-blob.bin, Digest: "$DIGEST", Algorithm: SHA-256}
YAML
SLOW_ARN=arn:aws:greengrass:us-east-1:123456789012:components:com.example.Slow:versions:1.0.0
gg create-component-version --inline-recipe "fileb://$WORK/slow.yaml" >/dev/null 2>&1
for _ in $(seq 1 50); do compgen -G "$ART/tmp/*.part" >/dev/null && break; sleep 0.1; done
PART=$(compgen -G "$ART/tmp/*.part" | head -1)
sleep 1
check "mid-download: a .part file in tmp/ holds some bytes, nothing under sha256/ yet" \
  bash -c '[[ -n "$0" && -s "$0" && ! -e "$1" ]]' "$PART" "$ART/sha256/$SHA"
check "mid-download: describe-component says INITIATED" \
  test "$(gg describe-component --arn "$SLOW_ARN" | jq -r .status.componentState)" == INITIATED
stop_groved KILL
start_groved || abort "groved did not come back after kill -9 mid-download"
STATE=$(gg describe-component --arn "$SLOW_ARN" | jq -r .status.componentState)
check "after the restart: the half download is gone, the version not DEPLOYABLE ($STATE)" \
  bash -c '[[ ! -e "$0" && ( $1 == INITIATED || $1 == REQUESTED ) ]]' "$PART" "$STATE"
check "... the restart fetches it again: DEPLOYABLE" wait_state "$SLOW_ARN" DEPLOYABLE 300
check "... and sha256/<hex> holds exactly the served bytes, tmp/ is empty" \
  bash -c 'cmp -s "$0" "$1" && [[ -z $(ls -A "$2") ]]' "$ART/sha256/$SHA" "$WORK/srv/s3/bucket/slow-blob.bin" "$ART/tmp"

# A hot reload in the middle of a download: the old instance's fetch is cut (socket shut)
# and waited for, so the new one opens the store (exclusively) and fetches it again. The
# download would take 15 s, longer than stop() waits (10 s): uncut, the reload fails.
head -c 3000 /dev/urandom >"$WORK/srv/s3/bucket/slow-reload.bin"
sed -e 's/com.example.Slow/com.example.SlowReload/' -e 's/slow-blob.bin/slow-reload.bin/' \
  -e "s|Digest: \".*\"|Digest: \"$(openssl dgst -sha256 -binary "$WORK/srv/s3/bucket/slow-reload.bin" | base64)\"|" \
  "$WORK/slow.yaml" >"$WORK/slow2.yaml"
RELOAD_ARN=${SLOW_ARN/com.example.Slow:/com.example.SlowReload:}
gg create-component-version --inline-recipe "fileb://$WORK/slow2.yaml" >/dev/null 2>&1
for _ in $(seq 1 50); do compgen -G "$ART/tmp/*.part" >/dev/null && break; sleep 0.1; done
"$GROVECTL" reload deployment >"$WORK/reload.out" 2>&1
check "grovectl reload deployment mid-download -> exit 0 (the store was let go)" test $? == 0
[[ $FAILED == 0 ]] || cat "$WORK/reload.out"
check "... the new instance fetches it again: DEPLOYABLE" wait_state "$RELOAD_ARN" DEPLOYABLE 300
check "... and the cut fetch settled nothing (no FAILED logged for it), no wait timed out" \
  bash -c '! grep -q "SlowReload:1.0.0: FAILED\|did not end within" "$0"' "$WORK/groved.out"

check "groved is still running, the plugin too" status_matches "deployment .* running" 1
finish
