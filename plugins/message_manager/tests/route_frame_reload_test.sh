#!/usr/bin/env bash
# A hot reload of message_manager from a build whose broker plugin writes another route
# frame version (1: little-endian, before plugin_opt_route_frame_version) onto this one.
# That needs a real old build: OLD_BUILD is its build directory (lib/grove/plugins/
# libmessage_manager.so and lib/grove/broker/grove_broker_plugin.so), e.g. commit
# 27044d3 built with `cmake --build build --target message_manager grove_broker_plugin`.
# groved runs the old message_manager and broker plugin; then, as a package upgrade
# does, the broker plugin file is replaced by this build's and message_manager reloaded
# onto this build. The broker must be replaced, not adopted (its plugin writes frames
# this reader does not take), and device messages must reach a function and the shadow
# service over the route socket before and after.
# Usage: route_frame_reload_test.sh GROVED GROVECTL GROVE_CERTS OLD_BUILD
set -u

GROVED=$(readlink -f "${1:?usage: $0 groved grovectl grove-certs old-build-dir}")
GROVECTL=$(readlink -f "${2:?}")
CERTS_TOOL=$(readlink -f "${3:?}")
OLD_BUILD=$(readlink -f "${4:?}")
NEW_LIB=$(dirname "$GROVED")/../lib/grove
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=../broker/tests/broker_test_lib.sh
source "$HERE/../broker/tests/broker_test_lib.sh"
broker_test_init openssl jq "$CERTS_TOOL" "$GROVED" "$GROVECTL"
# shellcheck source=mm_test_lib.sh
source "$HERE/mm_test_lib.sh"

group_pki A B grove
PORT=$(free_port)
export GROVE_CONTROL_SOCKET=$WORK/control.sock
# The installed files: message_manager's library in the plugin directory (the old build's,
# where its libraries are found), the broker plugin where broker.plugin says, the old
# build's first.
mkdir -p "$WORK/broker"
install_file() { cp "$1" "$2.new" && mv "$2.new" "$2"; } # as a package manager: a rename
install_file "$OLD_BUILD/lib/grove/broker/grove_broker_plugin.so" "$WORK/broker/grove_broker_plugin.so"

route_group framereload
cat >"$WORK/profile.yaml" <<EOF
kernel:
  log_level: info
  group: $WORK/group.yaml
  control_socket: $GROVE_CONTROL_SOCKET
  plugin_dir: $OLD_BUILD/lib/grove/plugins
plugins:
$(mm_profile_entry)
        plugin: $WORK/broker/grove_broker_plugin.so
        client_id_patterns: ["<thing>", "<thing>-*"]  # pub's client ids
EOF

# both_routes WHAT TAG: a device message to F and one to the shadow, each seen on the bus.
both_routes() {
  pub A a/to/f/x "to-function-$2" >/dev/null
  check "$1: device A -> function F" route_bus_has device:A '$grove/mm/out/function/F/a/to/f/x' "to-function-$2"
  pub B '$aws/things/B/shadow/update' "{\"state\":{\"reported\":{\"t\":\"$2\"}}}" >/dev/null
  check "$1: device B -> the shadow service" \
    route_bus_has device:B '$grove/mm/out/shadow/$aws/things/B/shadow/update' "$2"
}

launch_groved
status_has "local_link: connected" 200 || abort "groved started the old message_manager and its broker"
check "the old build runs (no plugin_opt_route_frame_version in its broker's configuration)" \
  bash -c '! grep -Rqs route_frame_version "$1"' _ "$WORK/var/plugins/message_manager"
timeout 300 "$GROVECTL" sub --json '$grove/mm/out/#' >"$WORK/bus.out" 2>&1 &
SUB_PIDS+=("$!")
sleep 0.3 # the grovectl subscription is made before its first message; nothing to poll
both_routes "old build" old
OLD_BROKER=$(broker_pid)
check "the old broker runs (pid ${OLD_BROKER:-none})" test -n "$OLD_BROKER"

# The upgrade: this build's broker plugin installed, message_manager reloaded onto this build.
install_file "$NEW_LIB/broker/grove_broker_plugin.so" "$WORK/broker/grove_broker_plugin.so"
"$GROVECTL" reload message_manager --path "$(readlink -f "$NEW_LIB/plugins/libmessage_manager.so")" \
  >"$WORK/reload.out" 2>&1
RELOAD_RC=$?
check "grovectl reload message_manager onto this build succeeds ($(cat "$WORK/reload.out"))" \
  test "$RELOAD_RC" = 0
check "... the new instance replaces the broker (its configuration changed)" \
  grep -q "the broker's configuration changed: replacing it" "$WORK/groved.out"
# new_broker: polls until the status shows a broker other than the old one; prints its pid.
new_broker() {
  local pid
  for _ in $(seq 1 200); do
    pid=$(broker_pid)
    [[ -n "$pid" && "$pid" != "$OLD_BROKER" ]] && { echo "$pid"; return 0; }
    sleep 0.1
  done
  return 1
}
NEW_BROKER=$(new_broker)
check "... a new broker runs (pid ${NEW_BROKER:-none}, the old one was $OLD_BROKER)" test -n "$NEW_BROKER"
check "... the old broker is gone" bash -c '! kill -0 "$1" 2>/dev/null' _ "$OLD_BROKER"
check "... the new instance reads the new broker's route socket" \
  grep -q "route socket: connected to the broker (pid $NEW_BROKER)" "$WORK/groved.out"
check "... Grove's client is connected to it" status_has "local_link: connected" 200
check "... with this build's frame version" \
  grep -Rqs "plugin_opt_route_frame_version 2" "$WORK/var/plugins/message_manager"
both_routes "after the reload" new
check "... the route socket read no malformed stream" metric_is route.malformed 0 30
stop_groved
finish
