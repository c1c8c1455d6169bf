#!/usr/bin/env bash
# Greengrass v1 loggers applied live (issue 16): groved runs the deployment plugin over
# TLS and function_runtime in a child process of its own (`isolation: process`, its own
# level warn); boto3's `greengrass` client (v1_loggers_test.py) deploys group versions with
# logger definitions. A DEBUG GreengrassSystem logger brings groved's debug lines and the
# isolated plugin's info lines; ERROR takes the info lines away again; a Lambda logger with
# Space 64 keeps a chatty function's log within 64 KB with its newest lines; an
# AWSCloudWatch logger is refused; a reset gives the profile's levels back.
# Usage: v1_loggers_test.sh GROVED GROVECTL GROVE_CERTS TEST_FUNCTION
set -u

HERE=$(dirname "$(readlink -f "$0")")
PY=/usr/bin/python3
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-v1-loggers "${1:?usage: $0 groved grovectl grove-certs test-function}" "${2:?}" "${3:?}" "$PY" openssl jq
FUNCTION=$(readlink -f "${4:?}")
# The test function runs as root (its binary is in the build tree), which the image allows.
[[ $(id -u) == 0 ]] || { echo "SKIP: the test function runs as root"; exit 0; }

make_server_pki
PORT=$(free_port)
GROUP=$WORK/group.yaml
echo "name: loggers" >"$GROUP"
cat >"$WORK/profile.yaml" <<YAML
kernel:
  log_level: info
  group: $GROUP
plugins:
  - name: deployment
    may_set_group: true
    config:
$(API_PORT=$PORT PKI=$WORK/pki deployment_config)
  - name: function_runtime
    isolation: process
    log_level: warn
    may_claim: ["function:*"]
    config: {allow_run_as_root: true}
YAML
launch_groved_until "function_runtime .* running" || abort "groved did not start its plugins"
export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET
phase() {  # phase NAME: one phase of v1_loggers_test.py, its PASS/FAIL lines counted here
  "$PY" "$HERE/v1_loggers_test.py" "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" \
    "$WORK/state.json" "$1" "$FUNCTION" >"$WORK/py.out" 2>&1
  tally "$WORK/py.out" $? "v1_loggers_test.py $1"
}
state() { jq -r ".$1" "$WORK/state.json"; }
LOG=$WORK/groved.out
FNLOG=$WORK/var/logs/functions/chatty.log
json_status() { "$GROVECTL" status --json 2>/dev/null; }
plugin_level() { json_status | jq -r ".plugins[] | select(.name == \"$1\") | .log_level"; }

check "before any logger: groved at the profile's info, function_runtime at its warn" \
  bash -c '[[ $("$0" status --json | jq -r .log_level) == info ]]' "$GROVECTL"
check "... and groved logs no debug line (grovectl's requests)" \
  bash -c '! grep -q "DEBUG.*control: status from" "$0"' "$LOG"
check "... nor function_runtime's info lines (warn)" \
  bash -c '! grep -q "\[function_runtime\] function logs:" "$0"' "$LOG"

# ---- DEBUG ----------------------------------------------------------------------------------
phase debug
check "DEBUG GreengrassSystem: grovectl status shows log level debug" status_has "log level:       debug" 50
check "... status --json log_level debug, function_runtime's too" \
  bash -c '[[ $("$0" status --json | jq -r ".log_level + \" \" + (.plugins[] | select(.name == \"function_runtime\") | .log_level)") == "debug debug" ]]' "$GROVECTL"
check "... a debug line appears in groved's log (the control socket's)" \
  wait_for "$LOG" "control: status from" 50
check "... and the isolated function_runtime's info line on the Lambda logger" \
  wait_for "$LOG" "[function_runtime] function logs: INFO and above, 16384 bytes per file, 3 rotated files kept (group logger 'fn'" 50
check "... grovectl status shows the functions' level and cap" \
  status_has "function_runtime.function_logs: INFO and above, 16384 bytes per file" 50
# The function writes 100 lines of ~260 bytes per call: 3 calls pass the 64 KB.
for i in 1 2 3; do
  "$GROVECTL" invoke chatty --payload '{}' >"$WORK/invoke.out" 2>&1 || { cat "$WORK/invoke.out"; break; }
done
check "the chatty function answered" grep -q logged "$WORK/invoke.out"
total=$(cat "$FNLOG" "$FNLOG".* 2>/dev/null | wc -c)
check "Space 64: the function's log file stays <= 64 KB (it is $(stat -c %s "$FNLOG" 2>/dev/null) bytes)" \
  test "$(stat -c %s "$FNLOG" 2>/dev/null || echo 999999)" -le 65536
check "... its files together too ($total bytes)" test "$total" -le 65536
check "... the live file ends with the newest line" bash -c 'tail -n 1 "$0" | grep -q "INFO line 99 "' "$FNLOG"
check "... the oldest lines went first (the first call's line 0 is gone)" \
  bash -c '[[ $(cat "$0" "$0".* | grep -c "INFO line 0 ") -lt 3 ]]' "$FNLOG"
check "deployment's info line for the DEBUG deployment" \
  wait_for "$LOG" "v1 deployment $(state debug_deployment) of group" 50

# ---- ERROR -----------------------------------------------------------------------------------
phase error
check "ERROR GreengrassSystem: grovectl status shows log level error" status_has "log level:       error" 50
check "... function_runtime's too" bash -c '[[ $(jq -r ".plugins[] | select(.name == \"function_runtime\") | .log_level" <<<"$("$0" status --json)") == error ]]' "$GROVECTL"
before=$(grep -c "control: status from" "$LOG")
phase again
status >/dev/null
status >/dev/null
check "after ERROR: groved's debug lines stop" test "$(grep -c "control: status from" "$LOG")" -eq "$before"
check "... the deployment's info line of the next deployment no longer appears" \
  bash -c '! grep -q "v1 deployment $1 of group" "$0"' "$LOG" "$(state again_deployment)"
check "... nor the isolated function_runtime's info line on its new Lambda logger" \
  bash -c '! grep -q "function logs: ERROR and above" "$0"' "$LOG"
check "... though the function runtime applied it (grovectl status)" \
  status_has "function_runtime.function_logs: ERROR and above, 8192 bytes per file" 50

# ---- AWSCloudWatch, a bad group file ------------------------------------------------------
phase cloudwatch
cp "$GROUP" "$WORK/deployed.yaml"
cat >"$GROUP" <<'YAML'
name: loggers
loggers:
  - {id: bad, component: GreengrassSystem, level: LOUD}
YAML
kill -HUP "$GROVED_PID"  # the watcher would see it too; SIGHUP says it now
check "a group file with an unknown level: refused naming file:line and the field" \
  wait_for "$LOG" "group.yaml:3:" 50
check "... loggers[0].level" grep -q "group.yaml:3:.*loggers\[0\]\.level" "$LOG"
check "... the previous group stays (log level error)" status_has "log level:       error" 20
cp "$WORK/deployed.yaml" "$GROUP"

# ---- reset --------------------------------------------------------------------------------
phase reset
check "reset: groved back at the profile's info" status_has "log level:       info" 50
check "... function_runtime back at its own warn" \
  bash -c '[[ $(jq -r ".plugins[] | select(.name == \"function_runtime\") | .log_level" <<<"$("$0" status --json)") == warn ]]' "$GROVECTL"
check "... the functions' logs at the image's defaults" \
  status_has "function_runtime.function_logs: DEBUG and above, 1048576 bytes per file, 3 rotated files kept (image profile)" 50
check "... the group file has no loggers left" bash -c '! grep -qE "component|GreengrassSystem" "$0"' "$GROUP"
check "groved and both plugins still run" \
  bash -c '"$0" status | grep -q "deployment .* running" && "$0" status | grep -q "function_runtime .* running"' "$GROVECTL"
finish
