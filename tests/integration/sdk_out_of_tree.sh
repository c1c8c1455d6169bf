#!/usr/bin/env bash
# Installs the SDK from the build tree into a scratch prefix, builds the example plugin
# out of tree against it with find_package(Grove), and loads the result into the
# installed groved; the installed grovectl must then see the plugin's messages.
set -euo pipefail
build_dir=$1
source_dir=$2
work=$(mktemp -d)
groved_pid=
cleanup() {
  if [[ -n $groved_pid ]]; then
    kill -INT "$groved_pid" 2>/dev/null || true
    wait "$groved_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# DESTDIR: the package's absolute destinations (/etc/grove) land in the scratch root too,
# not on the machine running the test.
prefix=$work/root/grove
DESTDIR="$work/root" cmake --install "$build_dir" --prefix /grove > "$work/install.log"
cmake -S "$source_dir/sdk/examples/heartbeat" -B "$work/hb" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release > "$work/configure.log"
cmake --build "$work/hb" -j2 > "$work/build.log"
plugin=$(find "$work/hb" -name libheartbeat.so -print -quit)
[[ -n $plugin ]] || { echo "out-of-tree build produced no libheartbeat.so"; exit 1; }

cat > "$work/profile.yaml" <<YAML
kernel:
  control_socket: $work/control.sock
plugins:
  - name: heartbeat
    config: {interval_ms: 10, topic: oot/beat}
YAML
"$prefix/bin/groved" --config "$work/profile.yaml" --write-dir "$work/var" \
  --plugin-dir "$(dirname "$plugin")" 2> "$work/groved.log" &
groved_pid=$!
ctl=("$prefix/bin/grovectl" --socket "$work/control.sock")
for _ in $(seq 100); do
  grep -q "ready:" "$work/groved.log" && break
  sleep 0.1
done
grep -q "ready: 1 of 1 plugins running" "$work/groved.log" || {
  echo "groved did not start the out-of-tree plugin:"; cat "$work/groved.log"; exit 1; }
"${ctl[@]}" plugins | grep -E "heartbeat +1\.0\.0 +running" > /dev/null || {
  echo "grovectl plugins does not show heartbeat running"; "${ctl[@]}" plugins; exit 1; }
grep -q "$(dirname "$plugin")" <("${ctl[@]}" plugins --json) || {
  echo "plugin not loaded from the out-of-tree build"; exit 1; }
beats=$(timeout 20 "${ctl[@]}" sub oot/beat --count 3)
[[ $(wc -l <<< "$beats") -eq 3 ]] || { echo "expected 3 beats, got: $beats"; exit 1; }
echo "out-of-tree plugin built against the installed SDK and ran: $(tr '\n' ' ' <<< "$beats")"
