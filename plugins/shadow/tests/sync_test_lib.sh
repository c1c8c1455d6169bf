# shellcheck shell=bash
# Shared by the shadow plugin's cloud sync scripts (sourced after shadow_test_lib.sh):
# their common start (sync_open), the fake on the test's cloud broker
# (tests/support/fake_aws_shadow.py) and its control interface, reading and changing
# documents on both sides, and polling.

FAKE_PID=""
# shellcheck disable=SC2317  # called by mm_test_lib.sh's exit cleanup
test_cleanup() { [[ -n "$FAKE_PID" ]] && kill "$FAKE_PID" 2>/dev/null; }

# sync_open GROVED GROVECTL GROVE_CERTS FAKE_AWS_SHADOW_PY: shadow_open with Debian's
# Python (which has python3-paho-mqtt), the group's PKI (device lamp), the cloud's
# (shadow-service), PORT and CLOUD_PORT, the cloud broker and the fake on it.
sync_open() {
  : "${4:?usage: $0 groved grovectl grove-certs fake_aws_shadow.py}"
  FAKE=$(readlink -f "$4")
  PYTHON=${PYTHON:-/usr/bin/python3}
  shadow_open "$1" "$2" "$3" "$PYTHON"
  "$PYTHON" -c 'import paho.mqtt.client' 2>/dev/null \
    || { echo "missing python3-paho-mqtt (tools/deps installs it)"; exit 1; }
  # shellcheck disable=SC2034  # read by grove_test_lib.sh's abort
  ABORT_LOGS=("$WORK/cloud.out" "$WORK/fake.out")
  group_pki lamp grove
  cloud_pki shadow-service
  # shellcheck disable=SC2034  # PORT: the group broker's, read by the profiles
  read -r PORT CLOUD_PORT <<<"$(free_ports 2)"
  cloud_init
  start_cloud
  start_fake
}

# start_fake: the fake AWS shadow service on the cloud broker ($CLOUD_PORT, $CLOUD_PKI's
# certificate shadow-service); FAKE_URL its control interface.
start_fake() {
  rm -f "$WORK/ready"
  "$PYTHON" "$FAKE" --port "$CLOUD_PORT" --cafile "$CLOUD_PKI/ca.crt" \
    --cert "$CLOUD_PKI/devices/shadow-service.crt" \
    --key "$CLOUD_PKI/devices/shadow-service.key" --control-port "${CONTROL:-0}" \
    --ready-file "$WORK/ready" >>"$WORK/fake.out" 2>&1 &
  FAKE_PID=$!
  for _ in $(seq 1 300); do [[ -s "$WORK/ready" ]] && break; sleep 0.1; done
  [[ -s "$WORK/ready" ]] || abort "the fake shadow service did not connect"
  CONTROL=$(cat "$WORK/ready")
  FAKE_URL=http://127.0.0.1:$CONTROL
  export FAKE_URL
}
# ctl METHOD PATH [BODY]: the fake's control interface; prints the answer, fails on an
# HTTP error.
ctl() {
  "$PYTHON" - "$FAKE_URL" "$@" <<'PY'
import sys, urllib.request
url, method, path = sys.argv[1:4]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
try:
    with urllib.request.urlopen(urllib.request.Request(url + path, data=body, method=method),
                                timeout=10) as r:
        sys.stdout.write(r.read().decode())
except Exception as e:
    sys.exit(1)
PY
}
# cloud_doc THING [NAME]: the cloud's document (empty when there is none).
cloud_doc() { ctl GET "/shadow/$1${2:+/$2}" 2>/dev/null; }
# cloud_update THING[/NAME] JSON: an update made by a cloud application.
cloud_update() { ctl POST "/update/$1" "$2" >/dev/null; }
# cloud_put THING[/NAME] JSON: seeds the cloud's document as given (no MQTT message).
cloud_put() { ctl PUT "/shadow/$1" "$2" >/dev/null; }
cloud_connected() {
  for _ in $(seq 1 200); do
    [[ $(ctl GET /health | jq -r .connected 2>/dev/null) == true ]] && return 0
    sleep 0.1
  done
  return 1
}
# local_doc THING [NAME]: the local document through the bus API.
local_doc() { "$GROVECTL" shadow get "$1" ${2:+--name "$2"} 2>/dev/null; }
local_update() { "$GROVECTL" shadow update "$1" ${3:+--name "$3"} "$2" >/dev/null 2>&1; }
# eventually DESCRIPTION COMMAND...: polls COMMAND (bounded, 60 s) until it succeeds.
eventually() {
  local what=$1; shift
  for _ in $(seq 1 600); do
    if "$@" 2>/dev/null; then pass "$what"; return 0; fi
    sleep 0.1
  done
  fail "$what"
  "$@"  # once more, with its complaint
  return 1
}
# doc_is JSON FILTER VALUE: the jq FILTER of JSON is VALUE (compact).
doc_is() {
  local got
  got=$(jq -cS "$2" <<<"$1" 2>/dev/null)
  [[ "$got" == "$3" ]] || { echo "jq '$2' is '$got', expected '$3'" >&2; return 1; }
}
cloud_is() { doc_is "$(cloud_doc "$1" "${4:-}")" "$2" "$3"; }
local_is() { doc_is "$(local_doc "$1" "${4:-}")" "$2" "$3"; }

export GROVECTL PYTHON
export -f ctl cloud_doc local_doc doc_is shadow_metric
