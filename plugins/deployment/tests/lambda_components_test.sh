#!/usr/bin/env bash
# Lambda components under function_runtime (issue 15): groved runs message_manager (its
# managed Mosquitto, mutual TLS), function_runtime and the deployment plugin (may_set_group);
# the AWS CLI makes a Lambda component from a local function package (the Python relay of
# function_runtime's tests) and deploys it. Device A's message is routed by the group's
# subscription table to the component's function, which publishes through the table to
# device B. A configuration change, a rollback (a second Lambda component whose definition
# function_runtime refuses) and a removal follow; the group's own function and subscription
# stay throughout.
# Then rollbacks undo only the deployment's own changes of the group: an operator's
# function and routes added while the deployment ran stay, the deployment's function goes;
# a removed Lambda component's function and routes come back.
# Usage: lambda_components_test.sh GROVED GROVECTL GROVE_CERTS PYTHON_CODE_DIR
set -u

: "${1:?usage: $0 groved grovectl grove-certs python-code-dir}" "${4:?}"
GROVED=$(readlink -f "$1")
PYCODE=$(readlink -f "$4")
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_mm_open "$GROVED" "${2:?}" "${3:?}" openssl jq /usr/bin/aws /usr/bin/python3
AWS=/usr/bin/aws
PY=/usr/bin/python3

group_pki A B grove
read -r PORT API_PORT <<<"$(free_ports 2)"

# The function package a lambdaFunction names: <dir>/relay/1/ (README, "lambdaFunction").
relay_lambda_package "$PYCODE"
# The group's own function (echo) and subscription: no deployment's, never to be touched.
GROUP=$WORK/group.yaml
cat >"$GROUP" <<EOF
name: e2e
devices: [{thing: A}, {thing: B}]
functions:
  - name: keep
    config:
      runtime: python3
      handler: pyfn.echo
      codeUri: $PYCODE
      runAs: {uid: 0, gid: 0}
      linuxProcessParams: {isolationMode: NoContainer}
subscriptions:
  - {id: a-keep, source: "device:A", subject: "a/to/keep", target: "function:keep"}
EOF
cat >"$WORK/profile.yaml" <<EOF
kernel:
  log_level: info
  group: $GROUP
plugins:
$(mm_profile_entry)
        client_id_patterns: ["<thing>", "<thing>-*"]
  - name: function_runtime
    may_claim: ["function:*"]
    config: {allow_run_as_root: true}  # the test functions run as root from the source tree
  - name: deployment
    may_set_group: true
    config:
$(deployment_config "lambda_packages_dir: $WORK/lambda")
EOF
launch_with_mm
pass "groved runs message_manager, function_runtime and the deployment API"

aws_env "$PKI/ca.crt"
LAMBDA=arn:aws:lambda:us-east-1:123456789012:function:relay:1
export -f gg installed
export AWS API_PORT
# group_has PYTHON_EXPR: the group file (YAML) as `g` satisfies the expression.
group_has() {
  "$PY" -c 'import sys, yaml; g = yaml.safe_load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$GROUP" "$1"
}
FN_NAMES='[f["name"] for f in g.get("functions") or []]'
SUB_IDS='[s["id"] for s in g.get("subscriptions") or []]'

OUT=$(gg create-component-version --lambda-function "{\"lambdaArn\": \"$LAMBDA\",
  \"componentName\": \"e2e.Relay\", \"componentVersion\": \"1.0.0\",
  \"componentLambdaParameters\": {\"environmentVariables\": {\"RELAY_TOPIC\": \"r/to/b\"},
    \"pinned\": true, \"linuxProcessParams\": {\"isolationMode\": \"NoContainer\"}}}" 2>&1)
check "aws create-component-version --lambda-function -> e2e.Relay 1.0.0 DEPLOYABLE" \
  test "$(jq -r .status.componentState <<<"$OUT" 2>/dev/null)" == DEPLOYABLE
# Another Lambda component of the same package that needs e2e.Relay (so it comes after it
# in a deployment) and whose deployment makes a definition function_runtime refuses.
OUT=$(gg create-component-version --lambda-function "{\"lambdaArn\": \"$LAMBDA\",
  \"componentName\": \"e2e.Bad\", \"componentVersion\": \"1.0.0\",
  \"componentDependencies\": {\"e2e.Relay\": {\"versionRequirement\": \">=1.0.0\"}},
  \"componentLambdaParameters\": {\"linuxProcessParams\": {\"isolationMode\": \"NoContainer\"}}}" 2>&1)
check "... and e2e.Bad 1.0.0 (depending on e2e.Relay) DEPLOYABLE" \
  test "$(jq -r .status.componentState <<<"$OUT" 2>/dev/null)" == DEPLOYABLE
cat >"$WORK/placeholder.yaml" <<'EOF'
RecipeFormatVersion: '2020-01-25'
ComponentName: e2e.Placeholder
ComponentVersion: '1.0.0'
EOF
gg create-component-version --inline-recipe "fileb://$WORK/placeholder.yaml" >/dev/null 2>&1

# ---- deployed: a function of the group, run by function_runtime -----------------------
# runAs root: the package is in the test's private directory (as function_e2e_test's).
OUT=$(deploy "{\"e2e.Relay\": {\"componentVersion\": \"1.0.0\",
  \"configurationUpdate\": {\"merge\": \"{\\\"runAs\\\": {\\\"uid\\\": 0, \\\"gid\\\": 0}}\"}}}")
check "a deployment of the Lambda component e2e.Relay -> COMPLETED ($OUT)" test "${OUT%% *}" == COMPLETED
check "... ListInstalledComponents: e2e.Relay RUNNING" test "$(installed e2e.Relay)" == RUNNING
check "... grovectl functions: e2e.Relay is function_runtime's, pinned, its instance up" \
  bash -c 'for _ in $(seq 1 100); do "$0" functions 2>&1 | grep -q "^e2e.Relay .*pinned *1/1" && exit 0; sleep 0.1; done; exit 1' "$GROVECTL"
check "... the group file holds it beside the group's own function keep and its subscription" \
  group_has "$FN_NAMES == ['keep', 'e2e.Relay'] and $SUB_IDS == ['a-keep']"

# ---- the operator routes device A to it and it to device B (an edit of the group file) --
"$PY" - "$GROUP" <<'EOF'
import os, sys, yaml
path = sys.argv[1]
g = yaml.safe_load(open(path))
g["subscriptions"] += [
    {"id": "a-r", "source": "device:A", "subject": "a/to/r", "target": "function:e2e.Relay"},
    {"id": "r-b", "source": "function:e2e.Relay", "subject": "r/to/b", "target": "device:B"},
    {"id": "r-b2", "source": "function:e2e.Relay", "subject": "r/to/b2", "target": "device:B"}]
with open(path + ".tmp", "w") as f:
    yaml.safe_dump(g, f)
os.rename(path + ".tmp", path)
EOF
check "the subscriptions to and from e2e.Relay are in force" status_has "4 subscriptions" 100
start_sub B '#' "$WORK/b.out" B-sub-relay
check "device A -> a/to/r -> the Lambda component -> r/to/b -> device B" \
  deliver_until A a/to/r '{"n":1}' "$WORK/b.out"
check "... B got the relayed event on r/to/b" grep -qF 'r/to/b {"n":1}' "$WORK/b.out"

# ---- its configuration changed: the function's definition replaced, routes kept ---------
OUT=$(deploy "{\"e2e.Relay\": {\"componentVersion\": \"1.0.0\",
  \"configurationUpdate\": {\"merge\": \"{\\\"runAs\\\": {\\\"uid\\\": 0, \\\"gid\\\": 0}, \\\"environmentVariables\\\": {\\\"RELAY_TOPIC\\\": \\\"r/to/b2\\\"}}\"}}}")
check "a configurationUpdate (RELAY_TOPIC r/to/b2) -> COMPLETED ($OUT)" test "${OUT%% *}" == COMPLETED
check "... the function now relays on r/to/b2 (the new definition's instance)" \
  deliver_until A a/to/r '{"n":2}' "$WORK/b.out"
check "... on r/to/b2" grep -qF 'r/to/b2 {"n":2}' "$WORK/b.out"
check "... the operator's subscriptions and the group's function kept" \
  group_has "$FN_NAMES == ['keep', 'e2e.Relay'] and $SUB_IDS == ['a-keep', 'a-r', 'r-b', 'r-b2']"

# ---- kill -9 of groved: the group file keeps the function, the deployment is applied again
stop_groved KILL
launch_with_mm "groved did not come back after kill -9"
check "after kill -9 and a restart: e2e.Relay RUNNING again (the deployment applied at start)" \
  bash -c 'for _ in $(seq 1 100); do [[ $(installed e2e.Relay) == RUNNING ]] && exit 0; sleep 0.1; done; exit 1'
check "... the group unchanged" \
  group_has "$FN_NAMES == ['keep', 'e2e.Relay'] and $SUB_IDS == ['a-keep', 'a-r', 'r-b', 'r-b2']"
start_sub B '#' "$WORK/b.out" B-sub-restart  # the first may still be connected
check "... and A's message still reaches B through it, on r/to/b2" \
  deliver_until A a/to/r '{"n":"after-restart"}' "$WORK/b.out"
check "... on r/to/b2" grep -qF 'r/to/b2 {"n":"after-restart"}' "$WORK/b.out"

# ---- a Greengrass v1 deployment keeps the Lambda component's function and its routes -----
# boto3's `greengrass` client deploys a v1 group (core-1, devices A and B, a route A -> B of
# its own): it replaces the group's own function and subscription, not e2e.Relay's.
cp "$GROUP" "$WORK/group.before-v1"
OUT=$("$PY" - "https://127.0.0.1:$API_PORT" "$PKI/ca.crt" <<'EOF' 2>&1
import sys, time, boto3
endpoint, ca = sys.argv[1:3]
gg = boto3.client("greengrass", endpoint_url=endpoint, verify=ca, region_name="us-east-1")
thing = lambda n: f"arn:aws:iot:us-east-1:123456789012:thing/{n}"
dev = lambda i, n: {"Id": i, "ThingArn": thing(n), "CertificateArn": "arn:aws:iot:us-east-1:123456789012:cert/0123abcd"}
core = gg.create_core_definition(Name="core", InitialVersion={"Cores": [dev("c", "core-1")]})
devs = gg.create_device_definition(Name="devices", InitialVersion={"Devices": [dev("a", "A"), dev("b", "B")]})
subs = gg.create_subscription_definition(Name="routes", InitialVersion={"Subscriptions": [
    {"Id": "v1-a-b", "Source": thing("A"), "Subject": "a/to/v1", "Target": thing("B")}]})
group = gg.create_group(Name="home", InitialVersion={
    "CoreDefinitionVersionArn": core["LatestVersionArn"],
    "DeviceDefinitionVersionArn": devs["LatestVersionArn"],
    "SubscriptionDefinitionVersionArn": subs["LatestVersionArn"]})
dep = gg.create_deployment(GroupId=group["Id"], GroupVersionId=group["LatestVersion"],
                           DeploymentType="NewDeployment")
for _ in range(300):
    st = gg.get_deployment_status(GroupId=group["Id"], DeploymentId=dep["DeploymentId"])
    if st["DeploymentStatus"] in ("Success", "Failure"):
        break
    time.sleep(0.1)
print(st["DeploymentStatus"], st.get("ErrorMessage", ""))
EOF
)
check "a Greengrass v1 deployment (devices A and B, route v1-a-b) -> Success ($OUT)" test "${OUT%% *}" == Success
check "... the group: its devices and route, e2e.Relay's function and the routes naming it kept" \
  group_has "$FN_NAMES == ['e2e.Relay'] and sorted($SUB_IDS) == ['a-r', 'r-b', 'r-b2', 'v1-a-b']"
check "... ListInstalledComponents: e2e.Relay still RUNNING" \
  bash -c 'for _ in $(seq 1 30); do [[ $(installed e2e.Relay) == RUNNING ]] || exit 1; sleep 0.1; done'
start_sub B '#' "$WORK/b.out" B-sub-v1
check "... A's message still reaches B through the Lambda component's function" \
  deliver_until A a/to/r '{"n":"after-v1"}' "$WORK/b.out"
check "... on r/to/b2" grep -qF 'r/to/b2 {"n":"after-v1"}' "$WORK/b.out"
check "... and the v1 route works: A -> a/to/v1 -> B" deliver_until A a/to/v1 '{"n":"v1"}' "$WORK/b.out"
# The group as before (an operator's edit) for what follows.
cp "$WORK/group.before-v1" "$GROUP.tmp" && mv "$GROUP.tmp" "$GROUP"
check "the group before the v1 deployment is back (an edit of the file)" status_has "2 devices, 2 functions, 4 subscriptions" 100

# ---- a Lambda component function_runtime refuses: the previous group back ---------------
OUT=$(deploy "{\"e2e.Relay\": {\"componentVersion\": \"1.0.0\",
  \"configurationUpdate\": {\"merge\": \"{\\\"runAs\\\": {\\\"uid\\\": 0, \\\"gid\\\": 0}, \\\"environmentVariables\\\": {\\\"RELAY_TOPIC\\\": \\\"r/to/b\\\"}}\"}},
  \"e2e.Bad\": {\"componentVersion\": \"1.0.0\",
  \"configurationUpdate\": {\"merge\": \"{\\\"maxInstancesCount\\\": 0}\"}}}")
check "a deployment with e2e.Bad (maxInstancesCount 0) -> FAILED, function_runtime's reason, ROLLBACK_COMPLETE ($OUT)" \
  bash -c '[[ $0 == FAILED* && $0 == *e2e.Bad* && $0 == *"function_runtime refused"* && $0 == *maxInstancesCount* && $0 == *ROLLBACK_COMPLETE* ]]' "$OUT"
check "... the group is the one before: no e2e.Bad, the same subscriptions" \
  group_has "$FN_NAMES == ['keep', 'e2e.Relay'] and $SUB_IDS == ['a-keep', 'a-r', 'r-b', 'r-b2']"
check "... e2e.Relay relays on r/to/b2 again (its change undone)" \
  deliver_until A a/to/r '{"n":3}' "$WORK/b.out"
check "... on r/to/b2" grep -qF 'r/to/b2 {"n":3}' "$WORK/b.out"
check "... ListInstalledComponents: e2e.Relay RUNNING, no e2e.Bad" \
  bash -c '[[ $("$0" e2e.Relay) == RUNNING && -z $("$0" e2e.Bad) ]]' installed

# ---- an edit of the group file takes the function out: the component's state says so ----
cp "$GROUP" "$WORK/group.before-edit"
"$PY" - "$GROUP" <<'EOF'
import os, sys, yaml
path = sys.argv[1]
g = yaml.safe_load(open(path))
g["functions"] = [f for f in g["functions"] if f["name"] != "e2e.Relay"]
g["subscriptions"] = [s for s in g["subscriptions"] if s["id"] == "a-keep"]
with open(path + ".tmp", "w") as f:
    yaml.safe_dump(g, f)
os.rename(path + ".tmp", path)
EOF
check "an operator takes e2e.Relay out of the group file: ListInstalledComponents ERRORED" \
  bash -c 'for _ in $(seq 1 100); do [[ $(installed e2e.Relay) == ERRORED ]] && exit 0; sleep 0.1; done; exit 1'
cp "$WORK/group.before-edit" "$GROUP.tmp" && mv "$GROUP.tmp" "$GROUP"
check "... and back: RUNNING again" \
  bash -c 'for _ in $(seq 1 100); do [[ $(installed e2e.Relay) == RUNNING ]] && exit 0; sleep 0.1; done; exit 1'

# ---- removed: out of the group with the subscriptions naming it -------------------------
OUT=$(deploy '{"e2e.Placeholder": {"componentVersion": "1.0.0"}}')
check "a deployment without e2e.Relay -> COMPLETED ($OUT)" test "${OUT%% *}" == COMPLETED
check "... its function and the subscriptions naming it are gone; keep and a-keep stay" \
  group_has "$FN_NAMES == ['keep'] and $SUB_IDS == ['a-keep']"
check "... function_runtime no longer runs it" \
  bash -c 'for _ in $(seq 1 100); do "$0" functions 2>&1 | grep -q "^e2e.Relay " || exit 0; sleep 0.1; done; exit 1' "$GROVECTL"
check "... the group's own function still answers" \
  bash -c '"$0" invoke keep --payload "{\"k\": 1}" 2>&1 | grep -qF "\"k\""' "$GROVECTL"
# ---- a rollback undoes only the deployment's own changes of the group --------------------
# e2e.Fail needs e2e.Relay (so it comes after it); its install waits for fail.go, then fails.
cat >"$WORK/fail.yaml" <<EOF
RecipeFormatVersion: '2020-01-25'
ComponentName: e2e.Fail
ComponentVersion: '1.0.0'
ComponentDependencies:
  e2e.Relay: {VersionRequirement: '>=1.0.0'}
Manifests:
  - Platform: {os: linux}
    Lifecycle:
      install: {Script: "touch $WORK/fail.started; while [ ! -e $WORK/fail.go ]; do sleep 0.1; done; exit 1", Timeout: 120}
      run: sleep 600
EOF
cat >"$WORK/broken.yaml" <<'EOF'
RecipeFormatVersion: '2020-01-25'
ComponentName: e2e.Broken
ComponentVersion: '1.0.0'
Manifests:
  - Platform: {os: linux}
    Lifecycle: {install: "exit 3", run: sleep 600}
EOF
gg create-component-version --inline-recipe "fileb://$WORK/fail.yaml" >/dev/null 2>&1
gg create-component-version --inline-recipe "fileb://$WORK/broken.yaml" >/dev/null 2>&1
RELAY='"e2e.Relay": {"componentVersion": "1.0.0", "configurationUpdate": {"merge": "{\"runAs\": {\"uid\": 0, \"gid\": 0}, \"environmentVariables\": {\"RELAY_TOPIC\": \"r/to/b\"}}"}}'
PLACEHOLDER='"e2e.Placeholder": {"componentVersion": "1.0.0"}'
deploy "{$PLACEHOLDER, $RELAY, \"e2e.Fail\": {\"componentVersion\": \"1.0.0\"}}" >"$WORK/deploy.out" &
DEPLOY_PID=$!
check "a deployment adding e2e.Relay, then e2e.Fail: its install runs (e2e.Relay's function is in)" \
  bash -c 'for _ in $(seq 1 600); do [[ -e $0 ]] && exit 0; sleep 0.1; done; exit 1' "$WORK/fail.started"
check "... the group holds e2e.Relay's function" group_has "'e2e.Relay' in $FN_NAMES"
# Meanwhile an operator adds a function and its route, and a route to e2e.Relay.
"$PY" - "$GROUP" "$PYCODE" <<'EOF'
import os, sys, yaml
path, code = sys.argv[1:3]
g = yaml.safe_load(open(path))
g["functions"].append({"name": "keep2", "config": {
    "runtime": "python3", "handler": "pyfn.echo", "codeUri": code, "runAs": {"uid": 0, "gid": 0},
    "linuxProcessParams": {"isolationMode": "NoContainer"}}})
g["subscriptions"] += [
    {"id": "a-keep2", "source": "device:A", "subject": "a/to/keep2", "target": "function:keep2"},
    {"id": "a-r", "source": "device:A", "subject": "a/to/r", "target": "function:e2e.Relay"}]
with open(path + ".tmp", "w") as f:
    yaml.safe_dump(g, f)
os.rename(path + ".tmp", path)
EOF
check "... an operator's edit adding function keep2, route a-keep2 and route a-r is in force" \
  status_has "2 devices, 3 functions, 3 subscriptions" 100
touch "$WORK/fail.go"
wait "$DEPLOY_PID"
OUT=$(cat "$WORK/deploy.out")
check "... e2e.Fail's install fails: FAILED, ROLLBACK_COMPLETE ($OUT)" \
  bash -c '[[ $0 == FAILED* && $0 == *e2e.Fail* && $0 == *ROLLBACK_COMPLETE* ]]' "$OUT"
check "... the operator's keep2 and a-keep2 stay, e2e.Relay's function is gone" \
  group_has "$FN_NAMES == ['keep', 'keep2'] and $SUB_IDS == ['a-keep', 'a-keep2']"
check "... the route a-r to the function the rollback took out left out, the log says so" \
  grep -qF "subscription 'a-r' (device:A -> function:e2e.Relay) left out" "$WORK/groved.out"
check "... ListInstalledComponents: no e2e.Relay, no e2e.Fail, e2e.Placeholder kept" \
  bash -c '[[ -z $("$0" e2e.Relay) && -z $("$0" e2e.Fail) && -n $("$0" e2e.Placeholder) ]]' installed
check "... the operator's keep2 answers" \
  bash -c 'for _ in $(seq 1 100); do "$0" invoke keep2 --payload "{\"k2\": 1}" 2>&1 | grep -qF "\"k2\"" && exit 0; sleep 0.1; done; exit 1' "$GROVECTL"

# A removed Lambda component's routes come back with it when its removal is rolled back.
OUT=$(deploy "{$PLACEHOLDER, $RELAY}")
check "e2e.Relay deployed again -> COMPLETED ($OUT)" test "${OUT%% *}" == COMPLETED
"$PY" - "$GROUP" <<'EOF'
import os, sys, yaml
path = sys.argv[1]
g = yaml.safe_load(open(path))
g["subscriptions"] += [
    {"id": "a-r", "source": "device:A", "subject": "a/to/r", "target": "function:e2e.Relay"},
    {"id": "r-b", "source": "function:e2e.Relay", "subject": "r/to/b", "target": "device:B"}]
with open(path + ".tmp", "w") as f:
    yaml.safe_dump(g, f)
os.rename(path + ".tmp", path)
EOF
check "... and routed: a-r and r-b in force" status_has "2 devices, 3 functions, 4 subscriptions" 100
OUT=$(deploy "{$PLACEHOLDER, \"e2e.Broken\": {\"componentVersion\": \"1.0.0\"}}")
check "a deployment removing e2e.Relay and adding e2e.Broken (install exits 3) -> FAILED, ROLLBACK_COMPLETE ($OUT)" \
  bash -c '[[ $0 == FAILED* && $0 == *e2e.Broken* && $0 == *ROLLBACK_COMPLETE* ]]' "$OUT"
check "... e2e.Relay's function and its routes a-r and r-b are back, the operator's kept" \
  group_has "sorted($FN_NAMES) == ['e2e.Relay', 'keep', 'keep2'] and sorted($SUB_IDS) == ['a-keep', 'a-keep2', 'a-r', 'r-b']"
check "... ListInstalledComponents: e2e.Relay RUNNING, no e2e.Broken" \
  bash -c 'for _ in $(seq 1 100); do [[ $("$0" e2e.Relay) == RUNNING && -z $("$0" e2e.Broken) ]] && exit 0; sleep 0.1; done; exit 1' installed
start_sub B '#' "$WORK/b.out" B-sub-rollback
check "... A's message reaches B through it again (a/to/r -> r/to/b)" \
  deliver_until A a/to/r '{"n":"rolled-back"}' "$WORK/b.out"
check "... on r/to/b" grep -qF 'r/to/b {"n":"rolled-back"}' "$WORK/b.out"
OUT=$(deploy "{$PLACEHOLDER}")
check "e2e.Relay removed for what follows -> COMPLETED ($OUT)" test "${OUT%% *}" == COMPLETED
check "... the group: keep, keep2 and their routes" \
  group_has "$FN_NAMES == ['keep', 'keep2'] and $SUB_IDS == ['a-keep', 'a-keep2']"

# ---- kill -9 mid-deployment: the resumed deployment's rollback undoes its group changes --
# The deployment's changes of the group are journaled as they are made: after kill -9 and
# the resume, its failure undoes them (e2e.Relay's function goes), an operator's function
# and route added meanwhile stay.
# group_edit PYTHON: runs the statements on the group file's `g` (`code`: the package
# directory) and writes the file back.
group_edit() {
  "$PY" - "$GROUP" "$PYCODE" "$1" <<'EOF'
import os, sys, yaml
path, code, stmts = sys.argv[1:4]
g = yaml.safe_load(open(path))
exec(stmts)
with open(path + ".tmp", "w") as f:
    yaml.safe_dump(g, f)
os.rename(path + ".tmp", path)
EOF
}
rm -f "$WORK/fail.started" "$WORK/fail.go"
ID=$(gg create-deployment --target-arn "$THING" \
  --components "{$PLACEHOLDER, $RELAY, \"e2e.Fail\": {\"componentVersion\": \"1.0.0\"}}" | jq -r .deploymentId)
check "a deployment adding e2e.Relay, then e2e.Fail: its install runs (e2e.Relay's function is in)" \
  bash -c 'for _ in $(seq 1 600); do [[ -e $0 ]] && exit 0; sleep 0.1; done; exit 1' "$WORK/fail.started"
check "... the group holds e2e.Relay's function" group_has "'e2e.Relay' in $FN_NAMES"
group_edit 'g["functions"].append({"name": "keep3", "config": {
    "runtime": "python3", "handler": "pyfn.echo", "codeUri": code, "runAs": {"uid": 0, "gid": 0},
    "linuxProcessParams": {"isolationMode": "NoContainer"}}})
g["subscriptions"].append({"id": "a-keep3", "source": "device:A", "subject": "a/to/keep3", "target": "function:keep3"})'
check "... an operator's edit adding function keep3 and route a-keep3 is in force" \
  status_has "2 devices, 4 functions, 3 subscriptions" 100
stop_groved KILL
touch "$WORK/fail.go"  # the resumed install fails
launch_groved
status_has "deployment.api: https://127.0.0.1:$API_PORT" 100 || abort "groved did not come back after kill -9"
OUT=$(deployment_outcome "$ID" 900)
check "kill -9 of groved, a restart: the deployment resumes, e2e.Fail's install fails: FAILED, ROLLBACK_COMPLETE ($OUT)" \
  bash -c '[[ $0 == FAILED* && $0 == *e2e.Fail* && $0 == *ROLLBACK_COMPLETE* ]]' "$OUT"
check "... its journaled change undone: e2e.Relay's function gone, the operator's keep3 and a-keep3 kept" \
  group_has "$FN_NAMES == ['keep', 'keep2', 'keep3'] and $SUB_IDS == ['a-keep', 'a-keep2', 'a-keep3']"
check "... ListInstalledComponents: the set before it (e2e.Placeholder), no e2e.Relay, no e2e.Fail" \
  bash -c '[[ -z $("$0" e2e.Relay) && -z $("$0" e2e.Fail) && -n $("$0" e2e.Placeholder) ]]' installed

# ---- a function a rollback kept as another change's stays that change's ------------------
# A deployment changes e2e.Relay's function and fails; meanwhile an operator changed that
# function: the rollback keeps the operator's version, the component shows FINISHED, and
# neither the restart after kill -9 nor a later deployment without it touches the function.
OUT=$(deploy "{$PLACEHOLDER, $RELAY}")
check "e2e.Relay deployed -> COMPLETED ($OUT)" test "${OUT%% *}" == COMPLETED
RELAY2='"e2e.Relay": {"componentVersion": "1.0.0", "configurationUpdate": {"merge": "{\"environmentVariables\": {\"RELAY_TOPIC\": \"r/to/b2\"}}"}}'
rm -f "$WORK/fail.started" "$WORK/fail.go"
deploy "{$PLACEHOLDER, $RELAY2, \"e2e.Fail\": {\"componentVersion\": \"1.0.0\"}}" >"$WORK/deploy.out" &
DEPLOY_PID=$!
check "a deployment changing e2e.Relay (r/to/b2), then e2e.Fail: its install runs" \
  bash -c 'for _ in $(seq 1 600); do [[ -e $0 ]] && exit 0; sleep 0.1; done; exit 1' "$WORK/fail.started"
group_edit 'for f in g["functions"]:
    if f["name"] == "e2e.Relay":
        f["config"]["environmentVariables"]["RELAY_TOPIC"] = "r/op"
g["subscriptions"].append({"id": "a-op", "source": "device:A", "subject": "a/to/op", "target": "function:keep"})'
check "... an operator's edit of e2e.Relay's function (r/op) and a route a-op is in force" \
  status_has "2 devices, 4 functions, 4 subscriptions" 100
touch "$WORK/fail.go"
wait "$DEPLOY_PID"
OUT=$(cat "$WORK/deploy.out")
check "... e2e.Fail's install fails: FAILED, ROLLBACK_COMPLETE ($OUT)" \
  bash -c '[[ $0 == FAILED* && $0 == *ROLLBACK_COMPLETE* ]]' "$OUT"
RELAY_CFG='str([f for f in g.get("functions") or [] if f["name"] == "e2e.Relay"])'
OP_RELAY="'r/op' in $RELAY_CFG"
check "... the operator's version of e2e.Relay's function kept" group_has "$OP_RELAY"
check "... ListInstalledComponents: e2e.Relay FINISHED (its function is another change's)" \
  bash -c 'for _ in $(seq 1 100); do [[ $(installed e2e.Relay) == FINISHED ]] && exit 0; sleep 0.1; done; exit 1'
stop_groved KILL
launch_groved
status_has "deployment.api: https://127.0.0.1:$API_PORT" 100 || abort "groved did not come back after kill -9"
check "kill -9 and a restart: the journaled set runs again" \
  bash -c 'for _ in $(seq 1 300); do grep -q "deployment: the journaled set runs again$" "$0" && exit 0; sleep 0.1; done; exit 1' "$WORK/groved.out"
check "... e2e.Relay stays FINISHED (not set again over the operator's function)" \
  bash -c 'for _ in $(seq 1 30); do [[ $(installed e2e.Relay) == FINISHED ]] || exit 1; sleep 0.1; done'
check "... the operator's version of e2e.Relay's function still in the group" group_has "$OP_RELAY"
# A failing deployment naming it: it sets e2e.Relay's function (r/to/b), then its rollback
# puts the operator's version back and leaves it there (the set before kept the component
# as another change's), not the set's old configuration (r/to/b2).
touch "$WORK/fail.go"  # e2e.Fail's install fails at once
OUT=$(deploy "{$PLACEHOLDER, $RELAY, \"e2e.Fail\": {\"componentVersion\": \"1.0.0\"}}")
check "a deployment naming e2e.Relay (r/to/b), then e2e.Fail: FAILED, ROLLBACK_COMPLETE ($OUT)" \
  bash -c '[[ $0 == FAILED* && $0 == *e2e.Fail* && $0 == *ROLLBACK_COMPLETE* ]]' "$OUT"
check "... its rollback: the operator's version of e2e.Relay's function (r/op), not r/to/b2" \
  group_has "$OP_RELAY and 'r/to/b' not in $RELAY_CFG"
check "... ListInstalledComponents: e2e.Relay FINISHED again (another change's)" \
  bash -c 'for _ in $(seq 1 100); do [[ $(installed e2e.Relay) == FINISHED ]] && exit 0; sleep 0.1; done; exit 1'
OUT=$(deploy "{$PLACEHOLDER}")
check "a later deployment without e2e.Relay -> COMPLETED ($OUT)" test "${OUT%% *}" == COMPLETED
check "... the operator's e2e.Relay function and route stay in the group" \
  group_has "$OP_RELAY and 'a-op' in $SUB_IDS"
check "... ListInstalledComponents: no e2e.Relay" test -z "$(installed e2e.Relay)"
group_edit 'g["functions"] = [f for f in g["functions"] if f["name"] != "e2e.Relay"]
g["subscriptions"] = [s for s in g["subscriptions"] if s["id"] != "a-op"]'
check "the operator takes e2e.Relay's function out for what follows" \
  status_has "2 devices, 3 functions, 3 subscriptions" 100

# ---- a rollback journal that cannot be written fails the deployment, nothing changed ----
# An SQLite trigger makes the component store refuse the rollback journal's row: the
# deployment fails before it changes the group (it would have no rollback after kill -9).
# The store holds its file's lock while groved runs (locking_mode=EXCLUSIVE): the trigger
# goes in and out while groved is stopped.
DB=$(find "$WORK/var" -name components.db -print -quit)
sql() {
  "$PY" - "$DB" "$1" <<'EOF'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=30)
c.execute(sys.argv[2])
c.commit()
EOF
}
sql_value() {  # sql_value SQL: the first column of the first row SQL gives ("" : none)
  "$PY" - "$DB" "$1" <<'EOF'
import sqlite3, sys
row = sqlite3.connect(sys.argv[1], timeout=30).execute(sys.argv[2]).fetchone()
print("" if row is None or row[0] is None else row[0])
EOF
}
restart_groved() {  # restart_groved SQL: stops groved, runs SQL on its store, starts it
  stop_groved
  sql "$1" || abort "the test could not change the component store"
  launch_with_mm "groved did not come back"
}
restart_groved "CREATE TRIGGER test_no_journal BEFORE INSERT ON rollback_journal
                BEGIN SELECT RAISE(ABORT, 'the test refuses the rollback journal'); END"
OUT=$(deploy "{$PLACEHOLDER, $RELAY}")
check "the rollback journal refused: a deployment adding e2e.Relay FAILED, nothing changed ($OUT)" \
  bash -c '[[ $0 == FAILED* && $0 == *"could not be journaled, nothing changed"* && $0 == *"the test refuses"* && $0 != *ROLLBACK_COMPLETE* ]]' "$OUT"
check "... the group without e2e.Relay's function" group_has "'e2e.Relay' not in $FN_NAMES"
check "... ListInstalledComponents without e2e.Relay" test -z "$(installed e2e.Relay)"

# ---- kill -9 between a change of the group and its journal: the resume tells them apart --
# A change of the group is journaled before the kernel sets it. groved killed (SIGKILL at
# GROVE_DEPLOYMENT_CRASH_AT) after that write and before the set: the group file lacks
# the change, and the resume records nothing of it. Killed after the set and before its
# answer is journaled: the group file has it, the resume finds it in force and records it,
# and the resumed deployment's rollback undoes it. At each launch with the crash step set,
# the deployment that settled last FAILED: nothing is applied again at start.
KEPT="sorted($FN_NAMES) == ['keep', 'keep2', 'keep3']"
FAILING="{$PLACEHOLDER, $RELAY, \"e2e.Fail\": {\"componentVersion\": \"1.0.0\"}}"
touch "$WORK/fail.go"  # e2e.Fail's install fails as soon as it runs
GROVE_DEPLOYMENT_CRASH_AT=group_journaled restart_groved "DROP TRIGGER test_no_journal"
ID=$(gg create-deployment --target-arn "$THING" --components "$FAILING" | jq -r .deploymentId)
crashed
check "a deployment adding e2e.Relay, groved killed after its change is journaled, before the set (exit $RC)" \
  test "$RC" == 137
check "... the group file without e2e.Relay's function: the set never happened" \
  group_has "$KEPT"
launch_groved
status_has "deployment.api: https://127.0.0.1:$API_PORT" 100 || abort "groved did not come back after the kill"
OUT=$(deployment_outcome "$ID" 900)
check "the restart resumes it, e2e.Fail's install fails: FAILED, ROLLBACK_COMPLETE ($OUT)" \
  bash -c '[[ $0 == FAILED* && $0 == *e2e.Fail* && $0 == *ROLLBACK_COMPLETE* ]]' "$OUT"
check "... the journaled change found not in force, nothing of it recorded" \
  grep -qF "journaled before kill -9 is not in force (its 1 entries are not as it asked)" "$WORK/groved.out"
check "... the group as before: keep, keep2, keep3 and their routes, no e2e.Relay" \
  group_has "$KEPT and sorted($SUB_IDS) == ['a-keep', 'a-keep2', 'a-keep3']"
stop_groved
GROVE_DEPLOYMENT_CRASH_AT=group_set launch_groved
status_has "deployment.api: https://127.0.0.1:$API_PORT" 100 || abort "groved did not come back"
ID=$(gg create-deployment --target-arn "$THING" --components "$FAILING" | jq -r .deploymentId)
crashed
check "a deployment adding e2e.Relay, groved killed after the kernel set its change, before the answer is journaled (exit $RC)" \
  test "$RC" == 137
check "... the group file has e2e.Relay's function: the set happened" \
  group_has "'e2e.Relay' in $FN_NAMES"
launch_groved
status_has "deployment.api: https://127.0.0.1:$API_PORT" 100 || abort "groved did not come back after the kill"
status_has "local_link: connected" 100 || abort "Grove's client did not connect again"
OUT=$(deployment_outcome "$ID" 900)
check "the restart resumes it, e2e.Fail's install fails: FAILED, ROLLBACK_COMPLETE ($OUT)" \
  bash -c '[[ $0 == FAILED* && $0 == *e2e.Fail* && $0 == *ROLLBACK_COMPLETE* ]]' "$OUT"
check "... the journaled change found in force and recorded" \
  grep -qF "journaled before kill -9 is in force (1 entries): recorded for a rollback" "$WORK/groved.out"
check "... its rollback undid it: e2e.Relay's function gone, keep, keep2, keep3 and their routes kept" \
  group_has "$KEPT and sorted($SUB_IDS) == ['a-keep', 'a-keep2', 'a-keep3']"
check "... ListInstalledComponents: no e2e.Relay, no e2e.Fail, e2e.Placeholder kept" \
  bash -c '[[ -z $("$0" e2e.Relay) && -z $("$0" e2e.Fail) && -n $("$0" e2e.Placeholder) ]]' installed

# ---- a change of the group unanswered and unchecked: kept journaled, decided at start ----
# GROVE_DEPLOYMENT_FAULT_AT=group_unanswered: the kernel sets the deployment's change of
# the group, but its answer looks timed out and the group cannot be read after it. The
# deployment FAILED saying the change could not be confirmed, without ROLLBACK_COMPLETE,
# its rollback journal row (with the pending change) kept after it settled; the next
# start decides it (the rollback took e2e.Relay's function out with the component: not in
# force) and forgets the row.
stop_groved
GROVE_DEPLOYMENT_FAULT_AT=group_unanswered launch_with_mm "groved did not come back"
ID=$(gg create-deployment --target-arn "$THING" --components "$FAILING" | jq -r .deploymentId)
OUT=$(deployment_outcome "$ID" 900)
check "a change of the group unanswered, the group unreadable after it: FAILED, not confirmed, no ROLLBACK_COMPLETE ($OUT)" \
  bash -c '[[ $0 == FAILED* && $0 == *"could not be confirmed"* && $0 == *"the next start decides it"* && $0 != *ROLLBACK_COMPLETE* ]]' "$OUT"
stop_groved  # the store is groved's alone while it runs
PENDING="SELECT json_type(state, '$.group.pending') FROM rollback_journal WHERE deployment_id = '$ID'"
check "... its rollback journal row kept with the pending change" \
  test "$(sql_value "$PENDING")" == object
launch_with_mm "groved did not come back"
forgotten() {  # up to 200 s: the decision's reads wait up to 3 x 60 s for the group
  for _ in $(seq 1 2000); do
    grep -qF "$ID: its decided change of the group is no longer journaled" "$WORK/groved.out" && return 0
    sleep 0.1
  done
  return 1
}
check "the next start decides the change and forgets it" forgotten
check "... the change found not in force (the rollback took e2e.Relay out)" \
  grep -qF "the change of the group a deployment left undecided is not in force" "$WORK/groved.out"
stop_groved
check "... its row gone from the store" test -z "$(sql_value "$PENDING")"
launch_with_mm "groved did not come back"
check "... the group as before: keep, keep2, keep3 and their routes, no e2e.Relay" \
  group_has "$KEPT and sorted($SUB_IDS) == ['a-keep', 'a-keep2', 'a-keep3']"

# ---- a change left undecided and in force at start: undone when its rollback owes it ----
# GROVE_DEPLOYMENT_FAULT_AT=group_unanswered,rollback_unset: the kernel sets the change
# (e2e.Relay's function added) but answers nothing after it, so the rollback cannot take
# the function out either: FAILED, the rollback failed too, the function in the group,
# the row kept. groved killed (-9) and started again: the start finds the change in force
# and, the deployment's policy being ROLLBACK, undoes it; the decision is in its reason.
# reason_of ID: the core's reason for deployment ID (ListEffectiveDeployments).
# put_back_since N: up to 30 s for the log (every launch's, appended) to say more than N
# times that the set before the deployment that settled last runs again.
PUT_BACK_LINE="deployment: the set before the deployment that settled last runs again"
put_back_since() {
  for _ in $(seq 1 300); do
    (( $(grep -cF "$PUT_BACK_LINE" "$WORK/groved.out") > $1 )) && return 0
    sleep 0.1
  done
  return 1
}
reason_of() {
  gg list-effective-deployments --core-device-thing-name core-1 |
    jq -r --arg d "$1" '.effectiveDeployments[] | select(.deploymentId == $d) | .reason // ""'
}
stop_groved
GROVE_DEPLOYMENT_FAULT_AT=group_unanswered,rollback_unset launch_with_mm "groved did not come back"
ID=$(gg create-deployment --target-arn "$THING" --components "{$PLACEHOLDER, $RELAY}" | jq -r .deploymentId)
OUT=$(deployment_outcome "$ID" 900)
check "ROLLBACK, its change of the group unanswered, the rollback's unset: FAILED, not confirmed, the rollback failed too ($OUT)" \
  bash -c '[[ $0 == FAILED* && $0 == *"could not be confirmed"* && $0 == *"the rollback failed too"* && $0 != *ROLLBACK_COMPLETE* ]]' "$OUT"
check "... the group file holds e2e.Relay's function (the kernel set it, nothing took it out)" \
  group_has "'e2e.Relay' in $FN_NAMES"
stop_groved KILL
PENDING="SELECT json_type(state, '$.group.pending') FROM rollback_journal WHERE deployment_id = '$ID'"
check "... kill -9 of groved: its rollback journal row kept with the pending change" \
  test "$(sql_value "$PENDING")" == object
PUT_BACK=$(grep -cF "$PUT_BACK_LINE" "$WORK/groved.out")
launch_with_mm "groved did not come back after kill -9"
check "the start decides the change and forgets it" forgotten
check "... found in force and undone, as its rollback owed" \
  grep -qF "left undecided is in force (1 of its 1 entries as it asked): undone, as its rollback owed" "$WORK/groved.out"
check "... the group as before it: keep, keep2, keep3 and their routes, no e2e.Relay" \
  group_has "$KEPT and sorted($SUB_IDS) == ['a-keep', 'a-keep2', 'a-keep3']"
check "... the set before it runs again (not the journal's, whose e2e.Relay would set its function again)" \
  put_back_since "$PUT_BACK"
check "... ListInstalledComponents: e2e.Placeholder, no e2e.Relay" \
  bash -c '[[ -z $("$0" e2e.Relay) && -n $("$0" e2e.Placeholder) ]]' installed
check "... still without e2e.Relay's function" group_has "'e2e.Relay' not in $FN_NAMES"
check "... GetDeployment: still FAILED" \
  test "$(gg get-deployment --deployment-id "$ID" | jq -r .deploymentStatus)" == FAILED
OUT=$(reason_of "$ID")
check "... ListEffectiveDeployments: its reason says the start undid the change ($OUT)" \
  bash -c '[[ $0 == *"could not be confirmed"* && $0 == *"a start found the change of the group left undecided in force and undid it, as its rollback owed; the set before it runs again" ]]' "$OUT"
stop_groved
check "... its row gone from the store" test -z "$(sql_value "$PENDING")"

# The same with DO_NOTHING (group_unanswered alone): FAILED without a rollback, the row kept;
# groved stopped and started: the change found in force and kept, the row gone.
GROVE_DEPLOYMENT_FAULT_AT=group_unanswered launch_with_mm "groved did not come back"
ID=$(gg create-deployment --target-arn "$THING" --components "{$PLACEHOLDER, $RELAY}" \
  --deployment-policies '{"failureHandlingPolicy": "DO_NOTHING"}' | jq -r .deploymentId)
OUT=$(deployment_outcome "$ID" 900)
check "DO_NOTHING, its change of the group unanswered: FAILED, not confirmed, no rollback ($OUT)" \
  bash -c '[[ $0 == FAILED* && $0 == *"could not be confirmed"* && $0 != *rollback* && $0 != *ROLLBACK_COMPLETE* ]]' "$OUT"
stop_groved
PENDING="SELECT json_type(state, '$.group.pending') FROM rollback_journal WHERE deployment_id = '$ID'"
check "... groved stopped: its row kept with the pending change" \
  test "$(sql_value "$PENDING")" == object
launch_with_mm "groved did not come back"
check "the start decides the change and forgets it" forgotten
check "... found in force and kept (no rollback owed it)" \
  bash -c 'grep -F "left undecided is in force (1 of its 1 entries as it asked)" "$0" | grep -vqF "undone"' "$WORK/groved.out"
check "... the group keeps e2e.Relay's function beside keep, keep2 and keep3" \
  group_has "sorted($FN_NAMES) == ['e2e.Relay', 'keep', 'keep2', 'keep3']"
OUT=$(reason_of "$ID")
check "... ListEffectiveDeployments: its reason says the start kept it ($OUT)" \
  bash -c '[[ $0 == *"a start found the change of the group left undecided in force: kept (no rollback owed it)" ]]' "$OUT"
stop_groved
check "... its row gone from the store" test -z "$(sql_value "$PENDING")"
launch_with_mm "groved did not come back"
OUT=$(deploy "{$PLACEHOLDER}")
check "a deployment without e2e.Relay -> COMPLETED ($OUT)" test "${OUT%% *}" == COMPLETED
check "... the group as before: keep, keep2, keep3, no e2e.Relay" group_has "$KEPT"

# ---- CancelDeployment while a deployment applies: its rollback journal row is kept -------
# A cancel changes nothing on a core that already runs the deployment (Greengrass): the run
# goes on to its end (here e2e.Fail's install failing, and the run's own rollback), and
# its row goes then. Cut short by kill -9, the canceled run never resumes: the start
# undoes what it changed, as its policy (ROLLBACK) says, and the set before it runs again.
# status_of ID: GetDeployment's deploymentStatus.
status_of() { gg get-deployment --deployment-id "$1" | jq -r .deploymentStatus; }
# failed_in_log ID: up to 60 s for the run of deployment ID to end failed (the log).
failed_in_log() {
  for _ in $(seq 1 600); do grep -qF "deployment: $1 failed:" "$WORK/groved.out" && return 0; sleep 0.1; done
  return 1
}
rm -f "$WORK/fail.started" "$WORK/fail.go"
ID=$(gg create-deployment --target-arn "$THING" --components "$FAILING" | jq -r .deploymentId)
check "a deployment adding e2e.Relay, then e2e.Fail: its install runs, e2e.Relay's function in" \
  bash -c 'for _ in $(seq 1 600); do [[ -e $0 ]] && exit 0; sleep 0.1; done; exit 1' "$WORK/fail.started"
check "... the group holds e2e.Relay's function" group_has "'e2e.Relay' in $FN_NAMES"
gg cancel-deployment --deployment-id "$ID" >/dev/null
check "... canceled while it applies: CANCELED" test "$(status_of "$ID")" == CANCELED
touch "$WORK/fail.go"
check "... its run goes on: e2e.Fail's install fails" failed_in_log "$ID"
check "... and the run's rollback (ROLLBACK) takes e2e.Relay's function out: the group as before" \
  group_has "$KEPT and sorted($SUB_IDS) == ['a-keep', 'a-keep2', 'a-keep3']"
check "... still CANCELED" test "$(status_of "$ID")" == CANCELED
stop_groved
ROW="SELECT count(*) FROM rollback_journal WHERE deployment_id = '$ID'"
check "... its row gone with its run's end" test "$(sql_value "$ROW")" == 0
launch_with_mm "groved did not come back"

rm -f "$WORK/fail.started" "$WORK/fail.go"
ID=$(gg create-deployment --target-arn "$THING" --components "$FAILING" | jq -r .deploymentId)
check "a deployment adding e2e.Relay, then e2e.Fail: its install runs" \
  bash -c 'for _ in $(seq 1 600); do [[ -e $0 ]] && exit 0; sleep 0.1; done; exit 1' "$WORK/fail.started"
gg cancel-deployment --deployment-id "$ID" >/dev/null
check "... canceled while it applies: CANCELED" test "$(status_of "$ID")" == CANCELED
check "... the group holds e2e.Relay's function" group_has "'e2e.Relay' in $FN_NAMES"
stop_groved KILL
ROW="SELECT count(*) FROM rollback_journal WHERE deployment_id = '$ID'"
check "... kill -9 of groved while the install waits: its row kept" test "$(sql_value "$ROW")" == 1
rm -f "$WORK/fail.started"  # e2e.Fail's install makes it again if it runs again
PUT_BACK=$(grep -cF "$PUT_BACK_LINE" "$WORK/groved.out")
launch_with_mm "groved did not come back after kill -9"
check "the start decides what the canceled run changed and forgets its row" forgotten
check "... its change of the group undone: e2e.Relay's function gone, keep, keep2, keep3 and their routes kept" \
  group_has "$KEPT and sorted($SUB_IDS) == ['a-keep', 'a-keep2', 'a-keep3']"
check "... the set before it runs again" \
  put_back_since "$PUT_BACK"
check "... ListInstalledComponents: e2e.Placeholder, no e2e.Relay, no e2e.Fail" \
  bash -c '[[ -z $("$0" e2e.Relay) && -z $("$0" e2e.Fail) && -n $("$0" e2e.Placeholder) ]]' installed
check "... the canceled deployment not resumed: e2e.Fail's install not run again" \
  test ! -e "$WORK/fail.started"
check "... still CANCELED" test "$(status_of "$ID")" == CANCELED
OUT=$(reason_of "$ID")
check "... ListEffectiveDeployments: its reason says what the start did ($OUT)" \
  bash -c '[[ $0 == "canceled by CancelDeployment; a start found its run cut short after the cancel: 1 of its changes of the group undone; the set before it runs again" ]]' "$OUT"
stop_groved
check "... its row gone from the store" test "$(sql_value "$ROW")" == 0
launch_with_mm "groved did not come back"

# ---- a v1 deployment and a v2 deployment change the group at once: both applied --------
# Each reads the group and sets it; the kernel's compare-and-set refuses the one computed
# from a group that changed meanwhile, and it is recomputed on the group then in force.
# Three rounds, each: boto3's greengrassv2 client deploys e2e.Relay with RELAY_TOPIC
# r/round-N while its greengrass (v1) client deploys a group version with route v1-round-N,
# from two threads started together.
OUT=$("$PY" - "https://127.0.0.1:$API_PORT" "$PKI/ca.crt" "$THING" <<'EOF' 2>&1
import json, sys, threading, time, boto3
endpoint, ca, target = sys.argv[1:4]
kw = dict(endpoint_url=endpoint, verify=ca, region_name="us-east-1")
v1, v2 = boto3.client("greengrass", **kw), boto3.client("greengrassv2", **kw)
thing = lambda n: f"arn:aws:iot:us-east-1:123456789012:thing/{n}"
dev = lambda i, n: {"Id": i, "ThingArn": thing(n), "CertificateArn": "arn:aws:iot:us-east-1:123456789012:cert/0123abcd"}
core = v1.create_core_definition(Name="core", InitialVersion={"Cores": [dev("c", "core-1")]})
devs = v1.create_device_definition(Name="devices", InitialVersion={"Devices": [dev("a", "A"), dev("b", "B")]})
subs = v1.create_subscription_definition(Name="race")
group = v1.create_group(Name="race")
out = {}
# The group versions are made first, so each thread makes one request to start its change.
versions = {}
for n in range(1, 4):
    sv = v1.create_subscription_definition_version(SubscriptionDefinitionId=subs["Id"], Subscriptions=[
        {"Id": f"v1-round-{n}", "Source": thing("A"), "Subject": f"a/round/{n}", "Target": thing("B")}])
    versions[n] = v1.create_group_version(GroupId=group["Id"], CoreDefinitionVersionArn=core["LatestVersionArn"],
                                          DeviceDefinitionVersionArn=devs["LatestVersionArn"],
                                          SubscriptionDefinitionVersionArn=sv["Arn"])["Version"]
start = threading.Barrier(2)
def v1_round(n):
    start.wait()
    dep = v1.create_deployment(GroupId=group["Id"], GroupVersionId=versions[n],
                               DeploymentType="NewDeployment")
    for _ in range(600):
        st = v1.get_deployment_status(GroupId=group["Id"], DeploymentId=dep["DeploymentId"])
        if st["DeploymentStatus"] in ("Success", "Failure"):
            break
        time.sleep(0.05)
    out["v1"] = st["DeploymentStatus"] + " " + st.get("ErrorMessage", "")
def v2_round(n):
    merge = {"runAs": {"uid": 0, "gid": 0}, "environmentVariables": {"RELAY_TOPIC": f"r/round-{n}"}}
    start.wait()
    d = v2.create_deployment(targetArn=target, components={"e2e.Relay": {
        "componentVersion": "1.0.0", "configurationUpdate": {"merge": json.dumps(merge)}}})
    for _ in range(600):
        st = v2.get_deployment(deploymentId=d["deploymentId"])["deploymentStatus"]
        if st in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.05)
    out["v2"] = st
for n in range(1, 4):
    threads = [threading.Thread(target=f, args=(n,)) for f in (v1_round, v2_round)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(f"round {n}: v1 {out['v1'].strip()}, v2 {out['v2']}")
EOF
)
echo "$OUT"
# How often the kernel refused a stale set this run (timing decides; informational).
echo "compare-and-set conflicts: $(grep -c 'refused: computed from version' "$WORK/groved.out")"
check "three rounds of a v1 and a v2 deployment at once: all Success and COMPLETED" \
  bash -c '[[ $(grep -c "v1 Success, v2 COMPLETED" <<<"$0") == 3 ]]' "$OUT"
check "... the group has both last changes: v1's route v1-round-3 and e2e.Relay on r/round-3" \
  group_has "$SUB_IDS == ['v1-round-3'] and 'r/round-3' in $RELAY_CFG"
check "... function_runtime runs e2e.Relay, ListInstalledComponents RUNNING" \
  test "$(installed e2e.Relay)" == RUNNING

[[ $FAILED == 0 ]] || { echo "--- groved output"; grep -i "deployment\|function\|group" "$WORK/groved.out" | tail -n 60; }
finish
