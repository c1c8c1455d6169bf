#!/usr/bin/env bash
# Grove's own plugins as components (issue 15): groved runs the deployment plugin (with
# may_control_plugins) over TLS and the kv plugin from its profile; boto3
# (plugins_test.py) deploys `grove.heartbeat` (the SDK's example plugin, built beside
# groved): added, reconfigured, hot-reloaded to a recipe's own build (version 2.0.0), a
# build of another version than its component's refused and rolled back, kept across
# kill -9 of groved, rolled back after a plugin that fails to load, removed; a deployment
# replaced while the kernel loads a plugin for it.
# Usage: plugins_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
PY=/usr/bin/python3
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-deployment-plugins "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}" "$PY"
make_server_pki
# Version 2.0.0 of grove.heartbeat carries its own build, the heartbeat built as version
# 2.0.0, as a file:// artifact; 2.1.0 carries the plugin directory's 1.0.0 build (a copy),
# which the runner refuses (another version than the component's).
heartbeat_builds "$WORK/local"
mkdir -p "$WORK/local/v1"
cp "$PLUGIN_DIR/libheartbeat.so" "$WORK/local/v1/libheartbeat.so"
# The kernel's test plugin echo (its init waits for a gate file) as grove.echo's artifact.
[[ -f "$TEST_PLUGIN_DIR/libecho.so" ]] || abort "libecho.so must be built in $TEST_PLUGIN_DIR"
cp "$TEST_PLUGIN_DIR/libecho.so" "$WORK/local/libecho.so"
PORT=$(free_port)
cat >"$WORK/profile.yaml" <<YAML
kernel:
  log_level: info
plugins:
  - name: kv
  - name: deployment
    may_control_plugins: true
    config:
$(API_PORT=$PORT PKI=$WORK/pki deployment_config "artifacts_file_dir: $WORK/local")
YAML
launch_deployment
export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET
run_py() {
  run_phase "$HERE/plugins_test.py" "$1" "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK/var" \
    "$GROVECTL" "$WORK/local"
}
run_py before
# kill -9 of groved: the kernel comes back with its profile's plugins only; the deployment
# plugin applies the current deployment again, plugins included.
stop_groved KILL
launch_deployment "groved did not come back after kill -9"
run_py after
# The failed deployment's heartbeat change was really made, then undone by the rollback:
# the kernel logged three reconfigurations (the merge, the failed deployment's, the undo).
logged_times "the rollback undid a configuration really applied (3 reconfigurations logged)" \
  3 "deployment reconfigured plugin heartbeat"
check "groved and the deployment plugin still run" status_matches "deployment .* running" 1
[[ $FAILED == 0 ]] || { echo "--- groved output"; grep -i "deployment\|heartbeat\|ghost" "$WORK/groved.out" | tail -n 60; }
finish
