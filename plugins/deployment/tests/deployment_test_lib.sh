# shellcheck shell=bash
# Shared by the deployment plugin's end-to-end scripts (sourced after
# tests/support/grove_test_lib.sh and grove_test_init, or first by the scripts that run
# message_manager, which then call deployment_mm_open): the API's test credentials, the AWS
# CLI's environment for it, and groved started with the deployment plugin alone.

DEPLOYMENT_TESTS=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")

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

# start_deployment_alone [LINE...]: the server PKI (make_server_pki), a free $PORT, and
# groved running a profile with the deployment plugin alone (thing core-1, its API on
# $PORT with the server certificate, $KEY's credentials, and each LINE as one more line of
# its config, e.g. 'default_system_resource_limits: {cpus: 1.5}'); the AWS CLI's
# environment for it (aws_env). Aborts when groved does not start the plugin.
start_deployment_alone() {
  make_server_pki
  PORT=$(free_port)
  cat >"$WORK/profile.yaml" <<YAML
kernel:
  log_level: info
plugins:
  - name: deployment
    config:
      thing_name: core-1
      api: {port: $PORT, cert_file: $WORK/pki/server.crt, key_file: $WORK/pki/server.key}
$(for line in "$@"; do printf '      %s\n' "$line"; done)
      credentials:
        - {access_key_id: $KEY, secret_access_key: $SECRET}
YAML
  launch_groved_until "deployment .* running" || abort "groved did not start the deployment plugin"
  aws_env "$WORK/pki/ca.crt"
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
      thing_name: core-1
      api: {port: $API_PORT, cert_file: $PKI/server.crt, key_file: $PKI/server.key}
      credentials:
        - {access_key_id: $KEY, secret_access_key: $SECRET}
      discovery:
        enabled: true
        bind: 127.0.0.1
        port: $DISC_PORT
        cert_file: $PKI/server.crt
        key_file: $PKI/server.key
        ca_file: $PKI/ca.crt
        crl_file: $PKI/crl.pem
YAML
}

# deploy COMPONENTS_JSON: deploys the components to $THING (the script's `gg`, its AWS
# CLI call to the API), waits until the deployment ends, prints its status and the core's
# reason.
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
