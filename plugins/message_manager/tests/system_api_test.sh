#!/usr/bin/env bash
# End to end test of message_manager's system API (mm-6 to mm-9, README "System
# clients") with real processes: groved runs message_manager (its managed Mosquitto,
# mutual TLS) and two builds of a tiny client plugin (tests/cloud_client_plugin.cpp):
# cloud_client, listed in cloud.system_clients, and cloud_stranger, not listed. A TLS
# Mosquitto stands in for the cloud; grovectl drives the plugins and reads metrics.
# Usage: system_api_test.sh GROVED GROVECTL GROVE_CERTS LIBMESSAGE_MANAGER LIBCLOUD_CLIENT
#                           LIBCLOUD_STRANGER
set -u

GROVED=$(readlink -f "${1:?usage: $0 groved grovectl grove-certs mm.so client.so stranger.so}")
GROVECTL=$(readlink -f "${2:?}")
CERTS_TOOL=$(readlink -f "${3:?}")
MM_SO=$(readlink -f "${4:?}")
CLIENT_SO=$(readlink -f "${5:?}")
STRANGER_SO=$(readlink -f "${6:?}")
HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=../broker/tests/broker_test_lib.sh
source "$HERE/../broker/tests/broker_test_lib.sh"
broker_test_init openssl jq "$CERTS_TOOL" "$GROVED" "$GROVECTL"
# shellcheck source=mm_test_lib.sh
source "$HERE/mm_test_lib.sh"
ABORT_LOGS=("$WORK/cloud.out")

# ---- PKIs: the group's (broker, Grove's client) and the cloud's --------------------------------
group_pki grove
cloud_pki
read -r PORT CLOUD_PORT <<<"$(free_ports 2)"
# ---- the "cloud": Mosquitto with mutual TLS; persistent sessions for the watcher --------------
# Grove's cloud link connects with a clean session: after a restart of this broker it has
# no subscriptions unless message_manager makes them again.
cloud_init
# The watcher keeps a persistent QoS 1 session on `sys/#`: what reaches the cloud while it
# is away waits for it. Lines are `topic qos payload`.
start_watcher() {
  # shellcheck disable=SC2046
  timeout 300 mosquitto_sub $(cloud_args) -i watcher -c -q 1 -t 'sys/#' -F '%t %q %p' \
    >>"$WORK/watcher.out" 2>&1 &
  WATCHER_PID=$!
  SUB_PIDS+=($!)
}
start_cloud

# ---- image: message_manager, the listed client and the stranger --------------------------------
# One plugin directory for all three, laid out as installed (<lib>/grove/plugins/): a
# plugin finds the SDK libraries groved does not load (libgrove_store) at $ORIGIN/../..,
# which the loader takes from the path it was given, not the symlink's target.
PLUGINS=$WORK/lib/grove/plugins
mkdir -p "$PLUGINS"
for lib in "$(dirname "$MM_SO")"/../../lib*.so*; do ln -s "$(readlink -f "$lib")" "$WORK/lib/${lib##*/}"; done
ln -s "$MM_SO" "$PLUGINS/libmessage_manager.so"
ln -s "$CLIENT_SO" "$PLUGINS/libcloud_client.so"
ln -s "$STRANGER_SO" "$PLUGINS/libcloud_stranger.so"
cat >"$WORK/group.yaml" <<EOF
name: sys
devices: [{thing: A}]
subscriptions:
  - {id: a-cloud, source: "device:A", subject: "telemetry/#", target: cloud}
EOF
cat >"$WORK/profile.yaml" <<EOF
kernel:
  log_level: info
  group: $WORK/group.yaml
plugins:
$(mm_profile_entry)
$(mm_profile_cloud)
        system_clients: [cloud_client]
      spool: {storage: file, max_size_bytes: 10000000}
  - name: cloud_client
  - name: cloud_stranger
EOF

export GROVE_CONTROL_SOCKET=$WORK/var/run/control.sock
start_groved() {
  launch_groved --plugin-dir "$PLUGINS"
  status_has "cloud: connected" 150 || abort "message_manager did not connect to the cloud"
  status_has "cloud_client" 50 || abort "the client plugin did not load"
}
export GROVECTL
export -f metric  # for the checks that run in bash -c
# call CLIENT OP ARGS: the client plugin's answer (see cloud_client_plugin.cpp).
call() { "$GROVECTL" call "\$grove/test/$1/$2" "$3" 2>&1; }

start_groved
pass "groved runs message_manager with cloud.system_clients and both client plugins"

# ---- callers not listed are refused and counted ---------------------------------------------------
out=$(call cloud_stranger publish "sys/stranger hello")
check "an unlisted plugin's publish is refused with not_authorized ($out)" \
  bash -c '[[ $1 == "error: not_authorized"* ]]' _ "$out"
out=$(call cloud_stranger subscribe "sys/#")
check "an unlisted plugin's subscribe is refused with not_authorized ($out)" \
  bash -c '[[ $1 == "error: not_authorized"* ]]' _ "$out"
"$GROVECTL" call '$grove/mm/system/publish' 'hello' >"$WORK/grovectl-call.out" 2>&1
check "grovectl (source grovectl) is refused too, before its payload is even read" \
  grep -q "not_authorized" "$WORK/grovectl-call.out"
check "the refusals are counted (system.refused = 3)" metric_is system.refused 3

# ---- publish: through the spool to the cloud at QoS 1 -------------------------------------------
start_watcher
for i in $(seq 1 50); do  # the watcher's subscription is in place once a probe shows up
  # shellcheck disable=SC2046
  mosquitto_pub $(cloud_args) -i probe -q 1 -t "sys/probe" -m "$i" 2>/dev/null
  grep -q '^sys/probe ' "$WORK/watcher.out" && break
  sleep 0.1
done
out=$(call cloud_client publish "sys/hello hi there")
check "a listed plugin's publish is answered with its spool sequence number ($out)" \
  bash -c '[[ $1 =~ ^ok\ seq=[0-9]+$ ]]' _ "$out"
wait_for "$WORK/watcher.out" "sys/hello" 100
check "it reaches the cloud at QoS 1 with its payload" grep -qx "sys/hello 1 hi there" "$WORK/watcher.out"

# ---- bad input: clear errors, nothing changes ----------------------------------------------------
PUBLISHED=$(metric system.published)  # a counter: current at once
HELLO_SEQ=${out#ok seq=}
out=$(call cloud_client publish "sys/+/x wild")
check "a wildcard in a publish topic: invalid_topic ($out)" bash -c '[[ $1 == "error: invalid_topic"* ]]' _ "$out"
out=$(call cloud_client publish "sys/$(head -c 300 /dev/zero | tr '\0' t) long")
check "a topic over 256 bytes: invalid_topic ($out)" bash -c '[[ $1 == "error: invalid_topic"* ]]' _ "$out"
out=$(call cloud_client publish_size "sys/big 131073")
check "a payload over 131072 bytes: too_large ($out)" bash -c '[[ $1 == "error: too_large"* ]]' _ "$out"
out=$(call cloud_client subscribe "down/# bad/#/x")
check "a bad filter among good ones: invalid_topic ($out)" bash -c '[[ $1 == "error: invalid_topic"* ]]' _ "$out"
check "bad input is counted (system.invalid = 4)" metric_is system.invalid 4
check "... and none was published" bash -c '[[ $(metric system.published) == "$1" ]]' _ "$PUBLISHED"
out=$(call cloud_client publish_size "sys/big 131072")
check "a payload of exactly 131072 bytes is taken, next in the spool after hello: nothing was spooled between ($out)" \
  test "$out" = "ok seq=$((HELLO_SEQ + 1))"
out=$(call cloud_client publish "sys/after ok")
wait_for "$WORK/watcher.out" "sys/after" 100
check "the cloud got hello, the 131072-byte message and 'after', nothing refused" \
  bash -c 'grep -v "^sys/probe" "$1" | cut -c1-40 | diff - <(printf "sys/hello 1 hi there\nsys/big 1 %s\nsys/after 1 ok\n" "$(head -c 30 /dev/zero | tr "\0" x)")' _ "$WORK/watcher.out"

# ---- subscribe: cloud messages reach the listed plugin on the bus --------------------------------
out=$(call cloud_client subscribe "down/# \$aws/things/+/shadow/#")
check "subscribe answers the plugin's filters ($out)" test "$out" = 'ok $aws/things/+/shadow/# down/#'
check "the filters are counted (system.filters = 2)" metric_is system.filters 2
# cloud_to_client TOPIC PAYLOAD: publishes on the cloud until the plugin got it (the
# cloud link's SUBACK may still be on its way), bounded.
cloud_to_client() {
  local got=$WORK/got.$RANDOM
  timeout 60 "$GROVECTL" sub "\$grove/test/cloud_client/got/#" -n 1 >"$got" 2>&1 &
  local sub=$!
  for _ in $(seq 1 100); do
    # shellcheck disable=SC2046
    mosquitto_pub $(cloud_args) -i cloudapp -q 1 -t "$1" -m "$2" 2>/dev/null
    [[ -s $got ]] && break
    sleep 0.2
  done
  wait "$sub" 2>/dev/null
  cat "$got"
}
"$GROVECTL" sub '$grove/mm/out/system/#' >"$WORK/mm9.out" 2>&1 &
SUB_PIDS+=($!)
out=$(cloud_to_client '$aws/things/lamp/shadow/update/delta' '{"state":{"on":true}}')
check "a cloud message on a subscribed filter reaches the plugin ($out)" \
  test "$out" = '$grove/test/cloud_client/got/$aws/things/lamp/shadow/update/delta {"state":{"on":true}}'
wait_for "$WORK/mm9.out" "delta" 50
check "... on mm-9, \$grove/mm/out/system/cloud_client/<cloud topic>" \
  grep -qF '$grove/mm/out/system/cloud_client/$aws/things/lamp/shadow/update/delta {"state":{"on":true}}' "$WORK/mm9.out"
check "... counted (system.delivered)" bash -c '(( $(metric system.delivered) >= 1 ))'
check "... and not as unroutable (only the system client subscribed)" metric_is routed.unroutable 0
out=$(call cloud_client unsubscribe "down/#")
check "unsubscribe answers what is left ($out)" test "$out" = 'ok $aws/things/+/shadow/#'

# ---- the cloud broker restarts: the subscriptions are made again ---------------------------------
kill "$WATCHER_PID" 2>/dev/null
stop_cloud
metric_is cloud.connected 0 100 || abort "message_manager did not notice the cloud going"
# link_is STATE: polls until mm-7's answer says the link is STATE (the metric and the
# state are set one after the other); prints the last answer.
link_is() {
  for _ in $(seq 1 50); do
    out=$(call cloud_client link "")
    [[ $out == "link $1" ]] && break
    sleep 0.1
  done
  echo "$out"
  [[ $out == "link $1" ]]
}
out=$(link_is down)
check "mm-7's answer says the link is down ($out)" test "$out" = "link down"
start_cloud
metric_is cloud.connected 1 150 || abort "message_manager did not reconnect to the cloud"
out=$(link_is up)
check "... and up again once it reconnected ($out)" test "$out" = "link up"
out=$(cloud_to_client '$aws/things/lamp/shadow/get/accepted' 'after-restart')
check "after the cloud broker restarted, cloud messages still reach the plugin" \
  test "$out" = '$grove/test/cloud_client/got/$aws/things/lamp/shadow/get/accepted after-restart'

# ---- cloud down: publishes are spooled, committed, and survive kill -9 of groved -----------------
stop_cloud
metric_is cloud.connected 0 100 || abort "message_manager did not notice the cloud going"
out=$(call cloud_client publish_n "sys/spooled 20")
check "20 publishes while the cloud is down are all answered (committed) ($out)" \
  bash -c '[[ $1 =~ ^ok\ 20\ seq=[0-9]+$ ]]' _ "$out"
# The gauge is refreshed every second: poll.
check "they wait in the spool" \
  bash -c 'for _ in $(seq 1 50); do (( $(metric spool.messages) >= 20 )) && exit 0; sleep 0.1; done; exit 1'
stop_groved KILL
start_cloud
start_watcher
start_groved
for _ in $(seq 1 150); do
  [[ $(grep -c '^sys/spooled ' "$WORK/watcher.out") -ge 20 ]] && break
  sleep 0.1
done
check "after kill -9 and a restart, the cloud has all 20, in order, at QoS 1" \
  bash -c 'grep "^sys/spooled " "$1" | head -20 | diff - <(for i in $(seq 1 20); do echo "sys/spooled 1 $i"; done)' _ "$WORK/watcher.out"
out=$(cloud_to_client '$aws/things/fan/shadow/update/accepted' 'after-kill')
check "the plugin's cloud filters survived the restart (system.db): it still gets its messages" \
  test "$out" = '$grove/test/cloud_client/got/$aws/things/fan/shadow/update/accepted after-kill'

finish
