#!/usr/bin/env bash
# ota_jobs_test: AWS IoT Jobs end to end with real processes. grove-ota-watchdog runs a
# release tree (groved, message_manager with its Mosquitto and the cloud link, ota,
# heartbeat) installed by grove-ota; a TLS Mosquitto stands in for AWS IoT with
# fake_aws_jobs.py on it, holding seven job executions in order: a bundle with a bad
# signature, one named by an http:// URL, one on an HTTPS server whose certificate is
# not from bundle_ca_file's CA and two larger than bundle_max_bytes (with and without
# Content-Length; all FAILED with the
# reason, nothing changes), a good update downloaded from an HTTPS server of the test CA
# (tests/../deployment/tests/artifact_server.py; IN_PROGRESS, restart, SUCCEEDED once
# the watchdog journals it healthy) and a release whose groved exits at start
# (IN_PROGRESS, rollback, FAILED with the watchdog's reason, reported by the previous
# release). The fake checks
# expectedVersion as AWS does: every update carries one, and job-good's version is
# raised by "another client" before its first update, which is rejected
# (VersionMismatch); the plugin reads the execution again and goes on.
# Usage: jobs_test.sh GROVE_OTA WATCHDOG GROVED GROVECTL GROVE_CERTS FAKE_AWS_JOBS_PY
set -u
OTA=$(readlink -f "$1") WATCHDOG=$(readlink -f "$2") GROVED=$(readlink -f "$3")
GROVECTL=$(readlink -f "$4") CERTS_TOOL=$(readlink -f "$5") FAKE=$(readlink -f "$6")
PYTHON=${PYTHON:-/usr/bin/python3}  # Debian's, which has python3-paho-mqtt
LIBDIR=$(cd "$(dirname "$GROVED")/../lib" && pwd)
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=../../message_manager/broker/tests/broker_test_lib.sh
source "$HERE/../../message_manager/broker/tests/broker_test_lib.sh"
broker_test_init openssl jq "$CERTS_TOOL" "$GROVED" "$GROVECTL" "$PYTHON"
# shellcheck source=../../message_manager/tests/mm_test_lib.sh
source "$HERE/../../message_manager/tests/mm_test_lib.sh"
ABORT_LOGS=("$WORK/watchdog.log" "$WORK/fake.out" "$WORK/jobs.log" "$WORK/rejected.log"
            "$WORK/https.out")
"$PYTHON" -c 'import paho.mqtt.client' 2>/dev/null \
  || { echo "missing python3-paho-mqtt (tools/deps installs it)"; exit 1; }

WD_PID="" FAKE_PID="" HTTPS_PIDS=()
# shellcheck disable=SC2317  # called by mm_test_lib.sh's exit cleanup (the cloud is its)
test_cleanup() {
  if [[ -n "$WD_PID" ]]; then
    local children
    children=$(pgrep -P "$WD_PID")
    kill -9 "$WD_PID" $children 2>/dev/null
  fi
  [[ -n "$FAKE_PID" ]] && kill "$FAKE_PID" 2>/dev/null
  for pid in "${HTTPS_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
}

group_pki lamp grove
cloud_pki jobs-service
read -r PORT CLOUD_PORT <<<"$(free_ports 2)"
cloud_init
start_cloud

R=$WORK/root
"$OTA" keygen "$WORK/k" >/dev/null || abort "keygen"
make_tree() {  # make_tree DIR VERSION [crash]
  local dir=$1 version=$2
  mkdir -p "$dir/bin" "$dir/lib/grove/plugins" "$dir/lib/grove/broker" "$dir/etc/grove"
  cp "$GROVED" "$GROVECTL" "$dir/bin/"
  cp -L "$LIBDIR"/libgrove_core.so.0 "$LIBDIR"/libgrove_proto.so "$LIBDIR"/libgrove_store.so.0 \
    "$LIBDIR"/libgrove_archive.so.0 "$dir/lib/"
  cp "$LIBDIR"/grove/plugins/{libheartbeat,libmessage_manager,libota}.so "$dir/lib/grove/plugins/"
  cp "$LIBDIR"/grove/broker/grove_broker_plugin.so "$dir/lib/grove/broker/"
  [[ "${3:-}" == crash ]] && printf '#!/bin/sh\nexit 3\n' >"$dir/bin/groved"
  {
    printf 'kernel:\n  log_level: info\nplugins:\n'
    printf '  - name: heartbeat\n    config:\n      interval_ms: 200\n      topic: grove/hb/%s\n' "$version"
    mm_profile_entry
    mm_profile_cloud
    printf '        system_clients: [ota]\n'
    printf '  - name: ota\n    config:\n      install_root: %s\n      trusted_keys: ["%s"]\n      thing_name: core\n' \
      "$R" "$(cat "$WORK/k.pub")"
    # https:// bundles: the group CA's server only; 16 MiB at most.
    printf '      bundle_ca_file: %s\n      bundle_max_bytes: 16777216\n' "$PKI/ca.crt"
  } >"$dir/etc/grove/profile.yaml"
}
bundle() {  # bundle VERSION [crash]
  make_tree "$WORK/t$1" "$1" "${2:-}"
  "$OTA" bundle --tree "$WORK/t$1" --version "$1" --key "$WORK/k.key" --out "$WORK/b$1.tar" >/dev/null \
    || abort "bundle $1"
}
bundle 1.0.0
"$GROVED" -c "$WORK/t1.0.0/etc/grove/profile.yaml" --check >"$WORK/check.out" 2>&1 \
  || { cat "$WORK/check.out"; abort "the release profile does not validate"; }
"$OTA" install "$WORK/b1.0.0.tar" --root "$R" --trust "$WORK/k.pub" >/dev/null || abort "first install"
bundle 1.1.0
bundle 1.2.0 crash
# The bad-signature bundle: 1.1.0's manifest changed after signing.
"$PYTHON" - "$WORK/b1.1.0.tar" "$WORK/badsig.tar" <<'PY'
import io, sys, tarfile
src, dst = sys.argv[1:]
out = tarfile.open(dst, "w", format=tarfile.PAX_FORMAT)
for m in tarfile.open(src):
    data = tarfile.open(src).extractfile(m).read()
    if m.name == "manifest.json":
        data = data.replace(b'"1.1.0"', b'"1.1.5"')
    ti = tarfile.TarInfo(m.name); ti.size = len(data); ti.mode = m.mode
    out.addfile(ti, io.BytesIO(data))
out.close()
PY
# HTTPS servers of bundles: one with the group CA's server certificate (trusted by
# bundle_ca_file), one with the cloud CA's (not trusted); big.tar is one byte over
# bundle_max_bytes (sparse; refused on its Content-Length), big-nolength.tar the same
# sent without Content-Length (refused while it streams).
mkdir -p "$WORK/srv"
cp "$WORK/b1.1.0.tar" "$WORK/srv/"
truncate -s 16777217 "$WORK/srv/big.tar"
truncate -s 16777217 "$WORK/srv/big-nolength.tar"
https_server() {  # https_server PKI_DIR NAME: serves $WORK/srv, port in $WORK/NAME.port
  "$PYTHON" "$HERE/../../deployment/tests/artifact_server.py" "$WORK/srv" "$1/server.crt" \
    "$1/server.key" "$WORK/$2.port" 2>>"$WORK/https.out" &
  HTTPS_PIDS+=($!)
}
https_server "$PKI" good
https_server "$CLOUD_PKI" wrongca
for _ in $(seq 1 100); do [[ -s "$WORK/good.port" && -s "$WORK/wrongca.port" ]] && break; sleep 0.1; done
[[ -s "$WORK/good.port" && -s "$WORK/wrongca.port" ]] || abort "the HTTPS servers did not start"
GOOD_URL=https://127.0.0.1:$(cat "$WORK/good.port")
WRONG_URL=https://127.0.0.1:$(cat "$WORK/wrongca.port")
cat >"$WORK/jobs.json" <<EOF
[{"jobId": "job-badsig", "document": {"operation": "grove-ota", "bundle": "$WORK/badsig.tar"}},
 {"jobId": "job-http", "document": {"operation": "grove-ota", "bundle": "http://127.0.0.1:1/b.tar"}},
 {"jobId": "job-wrongca", "document": {"operation": "grove-ota", "bundle": "$WRONG_URL/b1.1.0.tar"}},
 {"jobId": "job-big", "document": {"operation": "grove-ota", "bundle": "$GOOD_URL/big.tar"}},
 {"jobId": "job-big-stream", "document": {"operation": "grove-ota", "bundle": "$GOOD_URL/big-nolength.tar"}},
 {"jobId": "job-good", "bumps": 1, "document": {"operation": "grove-ota", "bundle": "$GOOD_URL/b1.1.0.tar"}},
 {"jobId": "job-crash", "document": {"operation": "grove-ota", "bundle": "$WORK/b1.2.0.tar"}}]
EOF

"$WATCHDOG" --root "$R" --socket "$GROVE_CONTROL_SOCKET" --health-seconds 2 --start-seconds 20 -- \
  -c "$R/current/etc/grove/profile.yaml" -p "$R/current/lib/grove/plugins" -w "$WORK/var" \
  >>"$WORK/watchdog.log" 2>&1 &
WD_PID=$!
running() {  # running VERSION: groved of that release answers
  "$GROVECTL" --json --timeout 2 status 2>/dev/null \
    | jq -e --arg t "grove/hb/$1" '.details["heartbeat.beating"] | endswith($t)' >/dev/null 2>&1
}
until_true() {  # until_true TENTHS COMMAND...: polls every 0.1 s
  local tries=$1; shift
  for _ in $(seq 1 "$tries"); do "$@" && return 0; sleep 0.1; done
  return 1
}
until_true 300 running 1.0.0 || abort "1.0.0 did not start"

"$PYTHON" "$FAKE" --port "$CLOUD_PORT" --cafile "$CLOUD_PKI/ca.crt" \
  --cert "$CLOUD_PKI/devices/jobs-service.crt" --key "$CLOUD_PKI/devices/jobs-service.key" \
  --thing core --jobs "$WORK/jobs.json" --log "$WORK/jobs.log" --rejected-log "$WORK/rejected.log" \
  --ready-file "$WORK/ready" \
  >>"$WORK/fake.out" 2>&1 &
FAKE_PID=$!

terminal_count() { grep -cE '"status": "(SUCCEEDED|FAILED|REJECTED)"' "$WORK/jobs.log" 2>/dev/null; }
all_done() { [[ "$(terminal_count)" -ge 7 ]]; }
until_true 1200 all_done || abort "the jobs did not all end"

final() { grep "\"jobId\": \"$1\"" "$WORK/jobs.log" | tail -1; }
statuses() { grep "\"jobId\": \"$1\"" "$WORK/jobs.log" | jq -r .status | tr '\n' ' '; }
reason() { final "$1" | jq -r '.statusDetails.reason // ""'; }
check "job-badsig IN_PROGRESS then FAILED: $(reason job-badsig)" \
  bash -c "[[ '$(statuses job-badsig)' == 'IN_PROGRESS FAILED ' && '$(reason job-badsig)' == *'bad signature'* ]]"
check "job-http FAILED: $(reason job-http)" \
  bash -c "[[ '$(statuses job-http)' == 'FAILED ' && '$(reason job-http)' == *'https:// URL'* ]]"
check "job-wrongca IN_PROGRESS then FAILED: $(reason job-wrongca)" \
  bash -c "[[ '$(statuses job-wrongca)' == 'IN_PROGRESS FAILED ' && '$(reason job-wrongca)' == *'not from the configured CA'* ]]"
check "job-big IN_PROGRESS then FAILED: $(reason job-big)" \
  bash -c "[[ '$(statuses job-big)' == 'IN_PROGRESS FAILED ' && '$(reason job-big)' == *'larger than bundle_max_bytes'*'announced 16777217 bytes' ]]"
check "job-big-stream IN_PROGRESS then FAILED: $(reason job-big-stream)" \
  bash -c "[[ '$(statuses job-big-stream)' == 'IN_PROGRESS FAILED ' && '$(reason job-big-stream)' == *'larger than bundle_max_bytes (16777216 bytes)' ]]"
check "job-good was downloaded over HTTPS (IN_PROGRESS step downloading)" \
  bash -c "[[ \$(grep '\"jobId\": \"job-good\"' '$WORK/jobs.log' | head -1 | jq -r .statusDetails.step) == downloading ]]"
check "no download is left behind" bash -c "[[ -z \$(ls -A '$R/downloads' 2>/dev/null) ]]"
check "job-good IN_PROGRESS then SUCCEEDED: $(final job-good)" \
  bash -c "[[ '$(statuses job-good)' == 'IN_PROGRESS SUCCEEDED ' && '$(final job-good | jq -r .statusDetails.version)' == 1.1.0 ]]"
check "job-crash IN_PROGRESS then FAILED: $(reason job-crash)" \
  bash -c "[[ '$(statuses job-crash)' == 'IN_PROGRESS FAILED ' && '$(reason job-crash)' == *'exited with code 3'* ]]"
check "every accepted update carried expectedVersion" \
  bash -c "[[ \$(jq -s 'length > 0 and all(.expectedVersion | type == \"number\")' '$WORK/jobs.log') == true ]]"
check "job-good's stale version was rejected (VersionMismatch) and then accepted" \
  bash -c "[[ \$(jq -s 'map(select(.jobId == \"job-good\" and .code == \"VersionMismatch\")) | length' '$WORK/rejected.log') == 1 ]]"
check "no update rejected for another reason: $(jq -c "select(.code != \"VersionMismatch\")" "$WORK/rejected.log" 2>/dev/null | head -3)" \
  bash -c "[[ \$(jq -s 'map(select(.code != \"VersionMismatch\")) | length' '$WORK/rejected.log') == 0 ]]"
check "the refused bundle left no release" bash -c "[[ ! -e '$R/releases/1.1.5' && ! -e '$R/releases/1.1.5.staging' ]]"
until_true 100 running 1.1.0
check "1.1.0 runs after the rollback" running 1.1.0
check "current is 1.1.0" bash -c "[[ \$(readlink '$R/current') == releases/1.1.0 ]]"
check "journal rolled_back" bash -c "[[ \$(jq -r .phase '$R/ota-state.json') == rolled_back ]]"
finish
