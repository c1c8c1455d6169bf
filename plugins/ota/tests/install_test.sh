#!/usr/bin/env bash
# ota_install_test: real processes end to end. Keys made here, bundles made by grove-ota
# from a release tree copied out of the build (groved, grovectl, libraries, heartbeat),
# installed into an A/B root that grove-ota-watchdog runs: every refusal leaves the
# install as it was; a good update becomes healthy; a new groved that crashes or hangs
# is rolled back; kill -9 at each step (GROVE_OTA_CRASH_AT) leaves a bootable version.
set -euo pipefail
OTA=$1 WATCHDOG=$2 GROVED=$3 GROVECTL=$4
LIBDIR=$(cd "$(dirname "$GROVED")/../lib" && pwd)
T=$(mktemp -d /tmp/ota_install_test.XXXXXX)
R=$T/root
SOCK=$R/var/run/control.sock
wd_pid=
cleanup() {
  kill_all
  mountpoint -q "$T/small" && umount "$T/small" || true
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; echo "--- watchdog log" >&2; tail -30 "$T/watchdog.log" >&2 || true; exit 1; }
ctl() { "$GROVECTL" --socket "$SOCK" --timeout 5 "$@"; }

# A release tree: version $2, heartbeat topic grove/hb/$2.
make_tree() {
  local dir=$1 version=$2
  mkdir -p "$dir/bin" "$dir/lib/grove/plugins" "$dir/etc/grove"
  cp "$GROVED" "$GROVECTL" "$dir/bin/"
  cp -L "$LIBDIR"/libgrove_core.so.0 "$LIBDIR"/libgrove_proto.so "$dir/lib/"
  cp "$LIBDIR/grove/plugins/libheartbeat.so" "$dir/lib/grove/plugins/"
  cat >"$dir/etc/grove/profile.yaml" <<YAML
kernel:
  log_level: info
plugins:
  - name: heartbeat
    config:
      interval_ms: 50
      topic: grove/hb/$version
YAML
  if [[ "${3:-}" == ota ]]; then  # with the ota plugin, trusting k1
    # libota.so reads bundles with the SDK's archive library (as the grove package has it).
    cp -L "$LIBDIR"/libgrove_archive.so.0 "$dir/lib/"
    cp "$LIBDIR/grove/plugins/libota.so" "$dir/lib/grove/plugins/"
    cat >>"$dir/etc/grove/profile.yaml" <<YAML
  - name: ota
    may_control_plugins: true
    config:
      install_root: $R
      trusted_keys: ["$(cat "$T/k1.pub")"]
YAML
  fi
}

start_watchdog() {
  "$WATCHDOG" --root "$R" --socket "$SOCK" --health-seconds 2 --start-seconds 8 -- \
    -c "$R/current/etc/grove/profile.yaml" -p "$R/current/lib/grove/plugins" -w "$R/var" \
    >>"$T/watchdog.log" 2>&1 &
  wd_pid=$!
}

kill_all() {  # power loss: the watchdog and its groved, both kill -9 (by their ids)
  [[ -z "$wd_pid" ]] && return 0
  local children
  children=$(pgrep -P "$wd_pid" || true)
  kill -9 "$wd_pid" $children 2>/dev/null || true
  wait "$wd_pid" 2>/dev/null || true
  for pid in $children; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  done
  wd_pid=
}

# Waits until groved runs release $1 (its heartbeat topic) and the journal is settled.
expect_running() {
  local version=$1 i
  for i in $(seq 1 150); do
    if ctl --json status 2>/dev/null | jq -e --arg t "grove/hb/$version" \
         '.details["heartbeat.beating"] | endswith($t)' >/dev/null 2>&1; then
      local phase
      phase=$(jq -r .phase "$R/ota-state.json" 2>/dev/null || echo idle)
      [[ "$phase" != trial ]] && return 0
    fi
    sleep 0.2
  done
  fail "groved of version $version is not running (state: $(cat "$R/ota-state.json" 2>/dev/null))"
}

expect_current() {
  [[ "$(readlink "$R/current")" == "releases/$1" ]] || fail "current is $(readlink "$R/current"), expected releases/$1"
}

expect_state() {  # expect_state PHASE [REASON-SUBSTRING]
  local phase reason
  phase=$(jq -r .phase "$R/ota-state.json")
  reason=$(jq -r .reason "$R/ota-state.json")
  [[ "$phase" == "$1" ]] || fail "journal phase is $phase ($reason), expected $1"
  [[ -z "${2:-}" || "$reason" == *"$2"* ]] || fail "journal reason '$reason' lacks '$2'"
}

groved_pid() { ctl --json status | jq -r .pid; }

"$OTA" keygen "$T/k1" >/dev/null
"$OTA" keygen "$T/k2" >/dev/null
[[ "$(stat -c %a "$T/k1.key")" == 600 ]] || fail "secret key is not 0600"

# --- first install and start
make_tree "$T/t1.0.0" 1.0.0
"$OTA" bundle --tree "$T/t1.0.0" --version 1.0.0 --key "$T/k1.key" --out "$T/b1.0.0.tar" >/dev/null
"$OTA" install "$T/b1.0.0.tar" --root "$R" --trust "$T/k1.pub" >/dev/null
expect_current 1.0.0
start_watchdog
expect_running 1.0.0
echo "ok: first install runs"

# --- refusals: nothing changes
make_tree "$T/t1.1.0" 1.1.0
"$OTA" bundle --tree "$T/t1.1.0" --version 1.1.0 --key "$T/k1.key" --out "$T/b1.1.0.tar" >/dev/null
before=$(ls "$R/releases" | tr '\n' ' '); state_before=$(cat "$R/ota-state.json")
refused() {  # refused NAME MESSAGE-SUBSTRING BUNDLE [install args...]
  local name=$1 msg=$2 bundle=$3; shift 3
  local out
  if out=$("$OTA" install "$bundle" --root "$R" --trust "$T/k1.pub" "$@" 2>&1); then
    fail "$name: installed: $out"
  fi
  [[ "$out" == *"$msg"* ]] || fail "$name: message '$out' lacks '$msg'"
  expect_current 1.0.0
  [[ "$(ls "$R/releases" | tr '\n' ' ')" == "$before" ]] || fail "$name: releases changed: $(ls "$R/releases")"
  [[ "$(cat "$R/ota-state.json")" == "$state_before" ]] || fail "$name: journal changed"
  echo "ok: refused $name: $out"
}
# Rewrites a bundle with python's tarfile: $1 in, $2 out, $3 python code on (name, data).
repack() {
  python3 - "$1" "$2" "$3" <<'PY'
import io, sys, tarfile
src, dst, code = sys.argv[1:]
out = tarfile.open(dst, "w", format=tarfile.PAX_FORMAT)
for m in tarfile.open(src):
    data = tarfile.open(src).extractfile(m).read() if m.isfile() else b""
    env = {"name": m.name, "data": data}
    exec(code, env)
    ti = tarfile.TarInfo(env["name"]); ti.size = len(env["data"]); ti.mode = m.mode
    out.addfile(ti, io.BytesIO(env["data"]))
out.close()
PY
}
repack "$T/b1.1.0.tar" "$T/badsig.tar" 'data = data.replace(b"\"1.1.0\"", b"\"1.1.1\"") if name == "manifest.json" else data'
refused "bad signature" "bad signature" "$T/badsig.tar"
"$OTA" bundle --tree "$T/t1.1.0" --version 1.1.0 --key "$T/k2.key" --out "$T/k2.tar" >/dev/null
refused "unknown key" "unknown key" "$T/k2.tar"
repack "$T/b1.1.0.tar" "$T/digest.tar" 'data = data.replace(b"grove/hb/1.1.0", b"grove/hb/6.6.6") if name.endswith("profile.yaml") else data'
refused "wrong digest" "wrong digest" "$T/digest.tar"
# A manifest that names ../escape, validly signed: the parser refuses the path.
python3 - "$T" <<'PY'
import hashlib, json, sys
t = sys.argv[1]
m = {"format": 1, "kind": "full", "version": "1.1.0", "groved_version": "1.1.0",
     "files": [{"path": "../escape", "sha256": hashlib.sha256(b"x").hexdigest(), "size": 1}]}
open(t + "/escape.json", "w").write(json.dumps(m))
PY
"$OTA" sign "$T/k1.key" "$T/escape.json" >"$T/escape.sig"
python3 - "$T" <<'PY'
import io, sys, tarfile
t = sys.argv[1]
out = tarfile.open(t + "/escape.tar", "w", format=tarfile.PAX_FORMAT)
for name, data in (("manifest.json", open(t + "/escape.json", "rb").read()),
                   ("manifest.sig", open(t + "/escape.sig", "rb").read()),
                   ("files/../escape", b"x")):
    ti = tarfile.TarInfo(name); ti.size = len(data); out.addfile(ti, io.BytesIO(data))
out.close()
PY
refused "path escaping the tree" "escapes the release tree" "$T/escape.tar"
[[ ! -e "$R/escape" && ! -e "$R/releases/escape" ]] || fail "the escaping file was written"
make_tree "$T/t0.9.0" 0.9.0
"$OTA" bundle --tree "$T/t0.9.0" --version 0.9.0 --key "$T/k1.key" --out "$T/b0.9.0.tar" >/dev/null
refused "older version" "older than the installed 1.0.0" "$T/b0.9.0.tar"
"$OTA" verify "$T/b0.9.0.tar" --trust "$T/k1.pub" --installed-version 1.0.0 --allow-downgrade >/dev/null \
  || fail "a downgrade with --allow-downgrade is refused"
refused "same version" "already installed" "$T/b1.0.0.tar"
refused "not enough disk (margin)" "not enough disk" "$T/b1.1.0.tar" --margin-bytes 1000000000000000
# A real full disk: an 8 MiB tmpfs root, a bundle larger than that.
mkdir -p "$T/small"
mount -t tmpfs -o size=8m tmpfs "$T/small" || fail "cannot mount a tmpfs (the test runs as root)"
if out=$("$OTA" install "$T/b1.0.0.tar" --root "$T/small" --trust "$T/k1.pub" 2>&1); then
  fail "installed onto a full disk"
fi
[[ "$out" == *"not enough disk"* ]] || fail "full disk: '$out'"
[[ -z "$(ls "$T/small/releases")" ]] || fail "full disk: something was staged"
umount "$T/small"
echo "ok: refused a full disk: $out"

# --- a good update: switch, restart into it, healthy
"$OTA" install "$T/b1.1.0.tar" --root "$R" --trust "$T/k1.pub" --restart-pid "$(groved_pid)" >/dev/null
expect_running 1.1.0
expect_current 1.1.0
expect_state healthy
echo "ok: update 1.0.0 -> 1.1.0 healthy"

# --- rollback: a new groved that crashes at start, one that hangs
make_tree "$T/t1.2.0" 1.2.0
printf '#!/bin/sh\necho "crashing groved" >&2\nexit 3\n' >"$T/t1.2.0/bin/groved"
"$OTA" bundle --tree "$T/t1.2.0" --version 1.2.0 --key "$T/k1.key" --out "$T/b1.2.0.tar" >/dev/null
"$OTA" install "$T/b1.2.0.tar" --root "$R" --trust "$T/k1.pub" --restart-pid "$(groved_pid)" >/dev/null
expect_running 1.1.0
expect_current 1.1.0
expect_state rolled_back "exited with code 3"
echo "ok: crashing 1.2.0 rolled back: $(jq -r .reason "$R/ota-state.json")"
make_tree "$T/t1.3.0" 1.3.0
printf '#!/bin/sh\necho $$ >%s/hang.pid\nexec sleep 1000\n' "$T" >"$T/t1.3.0/bin/groved"
"$OTA" bundle --tree "$T/t1.3.0" --version 1.3.0 --key "$T/k1.key" --out "$T/b1.3.0.tar" >/dev/null
"$OTA" install "$T/b1.3.0.tar" --root "$R" --trust "$T/k1.pub" --restart-pid "$(groved_pid)" >/dev/null
expect_running 1.1.0
expect_current 1.1.0
expect_state rolled_back "not healthy within"
[[ -s "$T/hang.pid" ]] || fail "the hanging groved never ran"
kill -0 "$(cat "$T/hang.pid")" 2>/dev/null && fail "the hanging groved was left running"
echo "ok: hanging 1.3.0 rolled back: $(jq -r .reason "$R/ota-state.json")"

# --- kill -9 of both at each step of grove-ota install
make_tree "$T/t1.4.0" 1.4.0
"$OTA" bundle --tree "$T/t1.4.0" --version 1.4.0 --key "$T/k1.key" --out "$T/b1.4.0.tar" >/dev/null
for step in staged journaled; do
  GROVE_OTA_CRASH_AT=$step "$OTA" install "$T/b1.4.0.tar" --root "$R" --trust "$T/k1.pub" \
    >/dev/null 2>&1 && fail "install was not killed at $step"
  kill_all
  start_watchdog
  expect_running 1.1.0
  expect_current 1.1.0
  echo "ok: kill -9 at '$step': 1.1.0 boots ($(jq -r .phase "$R/ota-state.json"))"
done
expect_state failed "interrupted before the switch"
GROVE_OTA_CRASH_AT=switched "$OTA" install "$T/b1.4.0.tar" --root "$R" --trust "$T/k1.pub" \
  >/dev/null 2>&1 && fail "install was not killed at switched"
kill_all
start_watchdog
expect_running 1.4.0
expect_current 1.4.0
expect_state healthy
echo "ok: kill -9 at 'switched': 1.4.0 boots on trial and is healthy"

# --- kill -9 of the watchdog at its steps: trial start, mid health check, mid rollback
make_tree "$T/t1.5.0" 1.5.0
"$OTA" bundle --tree "$T/t1.5.0" --version 1.5.0 --key "$T/k1.key" --out "$T/b1.5.0.tar" >/dev/null
kill_all
GROVE_OTA_CRASH_AT=trial_started start_watchdog
expect_running 1.4.0
"$OTA" install "$T/b1.5.0.tar" --root "$R" --trust "$T/k1.pub" --restart-pid "$(groved_pid)" >/dev/null
for i in $(seq 1 50); do kill -0 "$wd_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$wd_pid" 2>/dev/null && fail "the watchdog did not die at trial_started"
kill_all
start_watchdog
expect_running 1.5.0
expect_state healthy
echo "ok: kill -9 at 'trial_started': 1.5.0 healthy on the second boot"
make_tree "$T/t1.6.0" 1.6.0
printf '#!/bin/sh\nexit 4\n' >"$T/t1.6.0/bin/groved"
"$OTA" bundle --tree "$T/t1.6.0" --version 1.6.0 --key "$T/k1.key" --out "$T/b1.6.0.tar" >/dev/null
kill_all
GROVE_OTA_CRASH_AT=rolled_back_switch start_watchdog
expect_running 1.5.0
"$OTA" install "$T/b1.6.0.tar" --root "$R" --trust "$T/k1.pub" --restart-pid "$(groved_pid)" >/dev/null
for i in $(seq 1 100); do kill -0 "$wd_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$wd_pid" 2>/dev/null && fail "the watchdog did not die at rolled_back_switch"
kill_all
expect_current 1.5.0
start_watchdog
expect_running 1.5.0
expect_state rolled_back "exited with code 4"
echo "ok: kill -9 mid rollback: 1.5.0 boots, journal says rolled_back"
# Mid health check: the new groved runs, both die before it is declared healthy.
make_tree "$T/t1.7.0" 1.7.0
"$OTA" bundle --tree "$T/t1.7.0" --version 1.7.0 --key "$T/k1.key" --out "$T/b1.7.0.tar" >/dev/null
"$OTA" install "$T/b1.7.0.tar" --root "$R" --trust "$T/k1.pub" --restart-pid "$(groved_pid)" >/dev/null
for i in $(seq 1 50); do
  [[ "$(jq -r .attempts "$R/ota-state.json")" == 1 ]] && break; sleep 0.1
done
kill_all
expect_state trial
start_watchdog
expect_running 1.7.0
expect_state healthy
echo "ok: kill -9 mid health check: 1.7.0 healthy on the second boot"

# --- a plugins-only bundle: a new release sharing every other file (hard links)
mkdir -p "$T/p1.8.0/lib/grove/plugins"
cp "$LIBDIR/grove/plugins/libheartbeat.so" "$T/p1.8.0/lib/grove/plugins/"
"$OTA" bundle --tree "$T/p1.8.0" --kind plugins --plugin heartbeat=1.0.0 --version 1.8.0 \
  --key "$T/k1.key" --out "$T/p1.8.0.tar" >/dev/null
"$OTA" install "$T/p1.8.0.tar" --root "$R" --trust "$T/k1.pub" --restart-pid "$(groved_pid)" >/dev/null
expect_running 1.7.0   # the profile came from 1.7.0
expect_current 1.8.0
expect_state healthy
[[ "$(stat -c %i "$R/releases/1.8.0/bin/groved")" == "$(stat -c %i "$R/releases/1.7.0/bin/groved")" ]] \
  || fail "the plugins release does not share groved with 1.7.0"
echo "ok: plugins-only bundle 1.8.0 healthy, other files shared"
# --- through the plugin: grovectl ota apply (the bus service), refusals as exit 1
make_tree "$T/t1.9.0" 1.9.0 ota
"$OTA" bundle --tree "$T/t1.9.0" --version 1.9.0 --key "$T/k1.key" --out "$T/b1.9.0.tar" >/dev/null
"$OTA" install "$T/b1.9.0.tar" --root "$R" --trust "$T/k1.pub" --restart-pid "$(groved_pid)" >/dev/null
expect_running 1.9.0
make_tree "$T/t2.0.0" 2.0.0 ota
"$OTA" bundle --tree "$T/t2.0.0" --version 2.0.0 --key "$T/k1.key" --out "$T/b2.0.0.tar" >/dev/null
repack "$T/b2.0.0.tar" "$T/badsig2.tar" 'data = data.replace(b"\"2.0.0\"", b"\"2.0.1\"") if name == "manifest.json" else data'
if out=$(ctl ota apply "$T/badsig2.tar" 2>&1); then fail "grovectl ota apply took a bad signature: $out"; fi
[[ "$out" == *"bad signature"* ]] || fail "grovectl ota apply: '$out'"
if out=$(ctl ota apply "$T/b1.0.0.tar" 2>&1); then fail "grovectl ota apply took a downgrade: $out"; fi
[[ "$out" == *"older than the installed 1.9.0"* ]] || fail "grovectl ota apply: '$out'"
expect_current 1.9.0
echo "ok: grovectl ota apply refuses: $out"
out=$(ctl ota apply "$T/b2.0.0.tar") || fail "grovectl ota apply: $out"
[[ "$out" == *"switched to 2.0.0 (previous 1.9.0, trial)"* ]] || fail "grovectl ota apply said '$out'"
expect_running 2.0.0
expect_current 2.0.0
expect_state healthy
st=$(ctl --json ota status)
[[ "$(jq -r .phase <<<"$st")/$(jq -r .current_version <<<"$st")" == healthy/2.0.0 ]] \
  || fail "grovectl ota status: $st"
echo "ok: grovectl ota apply 2.0.0: $out; status $st"

# --- a plugins-only bundle hot-reloads heartbeat through the kernel: no restart, and
# every beat arrives (its count goes on across the reload without a gap)
pid_before=$(groved_pid)
mkdir -p "$T/p2.1.0/lib/grove/plugins"
cp "$LIBDIR/grove/plugins/libheartbeat.so" "$T/p2.1.0/lib/grove/plugins/"
"$OTA" bundle --tree "$T/p2.1.0" --kind plugins --plugin heartbeat=1.0.0 --version 2.1.0 \
  --key "$T/k1.key" --out "$T/p2.1.0.tar" >/dev/null
"$GROVECTL" --socket "$SOCK" sub 'grove/hb/#' >"$T/beats.txt" 2>&1 &
sub_pid=$!
sleep 1
out=$(ctl ota apply "$T/p2.1.0.tar") || fail "grovectl ota apply (plugins): $out"
[[ "$out" == *"switched to 2.1.0 (previous 2.0.0, healthy)"* && "$out" != *restarts* ]] \
  || fail "grovectl ota apply (plugins) said '$out'"
sleep 1
kill "$sub_pid"; wait "$sub_pid" 2>/dev/null
[[ "$(groved_pid)" == "$pid_before" ]] || fail "groved restarted for a plugins bundle"
expect_current 2.1.0
expect_state healthy
lib=$(ctl --json status | jq -r '.plugins[] | select(.name == "heartbeat") | .library')
[[ "$lib" == *"/releases/2.1.0/lib/grove/plugins/libheartbeat.so" ]] || fail "heartbeat runs $lib"
python3 - "$T/beats.txt" <<'PY' || fail "beats lost across the hot reload: $(tr '\n' ' ' <"$T/beats.txt" | tail -c 400)"
import sys
counts = [int(l.split()[1]) for l in open(sys.argv[1]) if l.startswith("grove/hb/")]
gaps = [(a, b) for a, b in zip(counts, counts[1:]) if b != a + 1]
print(f"{len(counts)} beats, {counts[0]}..{counts[-1]}, gaps {gaps}")
sys.exit(1 if gaps or len(counts) < 10 else 0)
PY
echo "ok: plugins bundle 2.1.0 hot-reloaded heartbeat without a restart or a lost beat"
echo "PASS"
