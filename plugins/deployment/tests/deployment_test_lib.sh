# shellcheck shell=bash
# Shared by the deployment plugin's end-to-end scripts (sourced first; a script then calls
# deployment_open, or deployment_mm_open when it runs message_manager): the API's test
# credentials, the AWS CLI's environment and calls for it, and groved started with the
# deployment plugin alone.

DEPLOYMENT_TESTS=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")

# kill_components: kills (-9) what the components of this test's groveds started, for
# test_cleanup (grove_test_lib.sh's exit cleanup kills groved first; a component's process
# outlives it until the next groved would).
kill_components() {
  local p
  for p in /proc/[0-9]*; do
    grep -qz "^GROVE_COMPONENTS_ROOT=$WORK/" "$p/environ" 2>/dev/null && kill -9 "${p#/proc/}" 2>/dev/null
  done
}

# deployment_open PREFIX GROVED GROVECTL GROVE_CERTS TOOL...: the opening of the scripts
# that run groved without message_manager: GROVED, GROVECTL and CERTS_TOOL (absolute),
# tests/support/grove_test_lib.sh, and grove_test_init PREFIX TOOL...
deployment_open() {
  local prefix=$1
  GROVED=$(readlink -f "$2")
  GROVECTL=$(readlink -f "$3")
  CERTS_TOOL=$(readlink -f "$4")
  shift 4
  # shellcheck source=../../../tests/support/grove_test_lib.sh
  source "$DEPLOYMENT_TESTS/../../../tests/support/grove_test_lib.sh"
  grove_test_init "$prefix" "$@"
}

# deployment_mm_open GROVED GROVECTL GROVE_CERTS TOOL...: the opening of the scripts that
# run groved with message_manager: GROVED, GROVECTL and CERTS_TOOL (absolute), MM_TESTS,
# message_manager's broker_test_lib.sh (broker_test_init checks TOOL... and the three) and
# mm_test_lib.sh.
deployment_mm_open() {
  GROVED=$(readlink -f "$1")
  GROVECTL=$(readlink -f "$2")
  CERTS_TOOL=$(readlink -f "$3")
  shift 3
  MM_TESTS=$(readlink -f "$DEPLOYMENT_TESTS/../../message_manager/tests")
  # shellcheck source=../../message_manager/broker/tests/broker_test_lib.sh
  source "$MM_TESTS/../broker/tests/broker_test_lib.sh"
  broker_test_init "$@" "$CERTS_TOOL" "$GROVED" "$GROVECTL"
  # shellcheck source=../../message_manager/tests/mm_test_lib.sh
  source "$MM_TESTS/mm_test_lib.sh"
}

# The API's test key (the plugin's `credentials`; the CLI's AWS_ACCESS_KEY_ID).
KEY=AKIAGROVETEST00001
SECRET=wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY

# aws_env CA: the AWS CLI's environment for the API: $KEY and $SECRET in us-east-1, CA's
# certificates trusted, no config or credentials files, no pager, one attempt a call.
aws_env() {
  export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=us-east-1
  export AWS_CA_BUNDLE=$1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
  export AWS_PAGER="" AWS_MAX_ATTEMPTS=1
}

# The thing the scripts deploy to: the API's thing_name core-1.
THING=arn:aws:iot:us-east-1:123456789012:thing/core-1

# gg ARG...: the AWS CLI ($AWS) call `greengrassv2 ARG...` to the API on $API_PORT, JSON
# out (in bash -c checks too once the script exports gg, AWS and API_PORT).
gg() { "$AWS" greengrassv2 "$@" --endpoint-url "https://127.0.0.1:$API_PORT" --output json; }

# deployment_config [LINE...]: the lines of a profile's deployment entry under `config:`
# for thing core-1 with its API on $API_PORT with the server certificate of $PKI (the
# caller sets both: mm_test_lib.sh's group_pki, or make_server_pki's $WORK/pki), each LINE
# one more line (e.g. 'artifacts_file_dir: $WORK/local'), and $KEY's credentials last (a
# script may list more credentials after them).
deployment_config() {
  printf '      %s\n' "thing_name: core-1" \
    "api: {port: $API_PORT, cert_file: $PKI/server.crt, key_file: $PKI/server.key}" "$@" \
    "credentials:" "  - {access_key_id: $KEY, secret_access_key: $SECRET}"
}

# launch_deployment [WHY]: launch_groved until grovectl status shows the deployment plugin
# running; aborts with WHY (by default: groved did not start it) when it does not.
# shellcheck disable=SC2120  # WHY is given where the default would mislead
launch_deployment() {
  launch_groved_until "deployment .* running" || abort "${1:-groved did not start the deployment plugin}"
}

# launch_with_mm [WHY]: launch_groved until grovectl status shows the deployment API on
# $API_PORT (else aborts with WHY, by default: groved did not start it) and
# message_manager's local link connected.
# shellcheck disable=SC2120  # WHY is given where the default would mislead
launch_with_mm() {
  launch_groved
  status_has "deployment.api: https://127.0.0.1:$API_PORT" 100 || abort "${1:-groved did not start the API}"
  status_has "local_link: connected" 100 || abort "Grove's client did not connect to the broker"
}

# start_deployment_alone [LINE...]: the server PKI (make_server_pki), a free $PORT (also
# $API_PORT, gg's), and groved running a profile with the deployment plugin alone
# (deployment_config LINE..., e.g. 'default_system_resource_limits: {cpus: 1.5}'); the
# AWS CLI's environment for it (aws_env). Aborts when groved does not start the plugin.
# $WITH_PLUGINS, when set, is more profile entries before it (e.g. '  - name: shadow').
start_deployment_alone() {
  make_server_pki
  PORT=$(free_port)
  API_PORT=$PORT
  cat >"$WORK/profile.yaml" <<YAML
kernel:
  log_level: info
plugins:
${WITH_PLUGINS:-}
  - name: deployment
    config:
$(PKI=$WORK/pki deployment_config "$@")
YAML
  launch_deployment
  aws_env "$WORK/pki/ca.crt"
}

# relay_lambda_package PYTHON_CODE_DIR: the function package a lambdaFunction names,
# $WORK/lambda/relay/1/ (the deployment plugin's lambda_packages_dir is $WORK/lambda): the
# Python relay of function_runtime's tests (handler pyfn.relay).
relay_lambda_package() {
  mkdir -p "$WORK/lambda/relay/1"
  cp -r "$1" "$WORK/lambda/relay/1/code"
  echo '{"FunctionName": "relay", "Runtime": "python3.11", "Handler": "pyfn.relay"}' \
    >"$WORK/lambda/relay/1/configuration.json"
}

# deployment_discovery_entry: the profile's deployment entry (it may set the kernel's
# group) beside message_manager on the group PKI $PKI (mm_test_lib.sh's group_pki): thing
# core-1, the API on $API_PORT, $KEY's credentials, the discovery listener on $DISC_PORT
# with the server certificate, trusting $PKI's CA and its CRL.
deployment_discovery_entry() {
  cat <<YAML
  - name: deployment
    may_set_group: true
    config:
$(deployment_config "discovery:" "  enabled: true" "  bind: 127.0.0.1" "  port: $DISC_PORT" \
    "  cert_file: $PKI/server.crt" "  key_file: $PKI/server.key" "  ca_file: $PKI/ca.crt" \
    "  crl_file: $PKI/crl.pem")
YAML
}

# deploy COMPONENTS_JSON: deploys the components to $THING (with gg), waits until the
# deployment ends, prints its status and the core's reason.
deploy() {
  local id
  id=$(gg create-deployment --target-arn "$THING" --components "$1" | jq -r .deploymentId)
  deployment_outcome "$id" 300
}

# deployment_outcome ID TRIES: waits (TRIES times 0.1 s at most) until deployment ID is
# COMPLETED or FAILED, prints its status and the core's reason.
deployment_outcome() {
  local st
  for _ in $(seq 1 "$2"); do
    st=$(gg get-deployment --deployment-id "$1" 2>/dev/null | jq -r .deploymentStatus 2>/dev/null)
    [[ $st == COMPLETED || $st == FAILED ]] && break
    sleep 0.1
  done
  echo "$st $(gg list-effective-deployments --core-device-thing-name core-1 |
    jq -r --arg d "$1" '.effectiveDeployments[] | select(.deploymentId == $d) | .reason // ""')"
}

# installed NAME: its lifecycleState in ListInstalledComponents of core-1.
installed() {
  gg list-installed-components --core-device-thing-name core-1 |
    jq -r --arg n "$1" '.installedComponents[] | select(.componentName == $n) | .lifecycleState'
}

# installed_details NAME: its lifecycleState and lifecycleStateDetails, space-separated.
installed_details() {
  gg list-installed-components --core-device-thing-name core-1 |
    jq -r --arg n "$1" '.installedComponents[] | select(.componentName == $n)
                        | "\(.lifecycleState) \(.lifecycleStateDetails // "")"'
}

# crashed: waits up to 60 s for groved to end; its exit status in $RC (137: SIGKILL).
crashed() {
  for _ in $(seq 1 600); do kill -0 "$GROVED_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$GROVED_PID" 2>/dev/null; then
    RC="still running"
    stop_groved
    return
  fi
  wait "$GROVED_PID"
  # shellcheck disable=SC2034  # read by the test that calls it
  RC=$?
  GROVED_PID=""
}

# heartbeat_builds DIR: the plugin directory's heartbeat (1.0.0) must be built, and the
# heartbeat built as version 2.0.0 (heartbeat_2_0_0, the artifact of grove.heartbeat
# 2.0.0: the runner refuses a build of another version) is copied to DIR/libheartbeat.so.
# Sets PLUGIN_DIR and TEST_PLUGIN_DIR (the test plugins' directory).
heartbeat_builds() {
  PLUGIN_DIR=$(dirname "$GROVED")/../lib/grove/plugins
  TEST_PLUGIN_DIR=$(dirname "$GROVED")/../test-plugins
  [[ -f "$PLUGIN_DIR/libheartbeat.so" && -f "$PLUGIN_DIR/libkv.so" ]] ||
    abort "libheartbeat.so and libkv.so must be built in $PLUGIN_DIR"
  local v2=$TEST_PLUGIN_DIR/heartbeat-2.0.0/libheartbeat.so
  [[ -f $v2 ]] || abort "$v2 must be built (heartbeat_2_0_0)"
  mkdir -p "$1"
  cp "$v2" "$1/libheartbeat.so"
}
