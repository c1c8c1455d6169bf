#!/usr/bin/env bash
# DNS-SD advertisement of the core's broker (README "Greengrass discovery", disc-6): groved
# with the deployment plugin and `discovery.dns_sd: true` runs avahi-publish as a
# supervised child; a real avahi-daemon (on a private D-Bus system bus of the test's own,
# in a mount namespace so its pid file is private) must then resolve _grove-mqtt._tcp to
# the configured port and TXT records; a killed avahi-publish is restarted and advertises
# again; a kill -9 of groved takes it down and the service is withdrawn.
# Skipped (exit 77, ctest SKIP) with the reason when avahi-daemon or D-Bus cannot run here.
# Usage: dns_sd_test.sh GROVED GROVECTL GROVE_CERTS
set -u

GROVED=$(readlink -f "${1:?usage: $0 groved grovectl grove-certs}")
GROVECTL=$(readlink -f "${2:?}")
CERTS_TOOL=$(readlink -f "${3:?}")
skip() { echo "SKIP: $1"; exit 77; }
for tool in dbus-daemon avahi-daemon avahi-publish avahi-browse unshare openssl; do
  command -v "$tool" >/dev/null 2>&1 ||
    skip "$tool is missing (avahi-daemon, avahi-utils, dbus-daemon, util-linux)"
done
[[ $(id -u) == 0 ]] || skip "avahi-daemon needs root here (its pid file under /run)"

# shellcheck source=../../../tests/support/grove_test_lib.sh
source "$(dirname "$(readlink -f "$0")")/../../../tests/support/grove_test_lib.sh"
grove_test_init grove-dns-sd-test
DBUS_PID=""
AVAHI_PID=""
# shellcheck disable=SC2317  # invoked from the EXIT trap (grove_test_lib.sh's)
test_cleanup() {
  [[ -n "$AVAHI_PID" ]] && kill "$AVAHI_PID" 2>/dev/null
  [[ -n "$DBUS_PID" ]] && kill "$DBUS_PID" 2>/dev/null
}

# ---- a private system bus and avahi-daemon -------------------------------------------------------
cat >"$WORK/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$WORK/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
EOF
cat >"$WORK/avahi.conf" <<EOF
[server]
use-ipv4=yes
use-ipv6=no
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
EOF
dbus-daemon --config-file="$WORK/bus.conf" --fork --print-pid >"$WORK/dbus.pid" 2>"$WORK/dbus.err" ||
  skip "dbus-daemon does not start: $(head -c 300 "$WORK/dbus.err")"
DBUS_PID=$(cat "$WORK/dbus.pid")
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$WORK/bus
mkdir -p /run/avahi-daemon 2>/dev/null
unshare -m sh -c 'mount -t tmpfs none /run/avahi-daemon && exec avahi-daemon --no-drop-root --no-chroot --no-rlimits -f "$0"' \
  "$WORK/avahi.conf" >"$WORK/avahi.out" 2>&1 &
AVAHI_PID=$!
up=0
for _ in $(seq 1 50); do
  kill -0 "$AVAHI_PID" 2>/dev/null || break
  grep -q "Server startup complete" "$WORK/avahi.out" && { up=1; break; }
  sleep 0.1
done
[[ $up == 1 ]] || skip "avahi-daemon does not run here: $(tail -n 3 "$WORK/avahi.out" | tr '\n' ' ')"

# ---- groved with discovery and DNS-SD --------------------------------------------------------------
PKI=$WORK/pki
export GROVE_CA_DIR=$WORK/ca
{ "$CERTS_TOOL" init "$PKI" --days 2 && "$CERTS_TOOL" server "$PKI" --host localhost --days 2; } \
  >"$WORK/certs.out" 2>&1 || { cat "$WORK/certs.out"; abort "making the certificates"; }
read -r API_PORT DISC_PORT MQTT_PORT <<<"$(free_ports 3)"
cat >"$WORK/profile.yaml" <<EOF
kernel:
  log_level: info
plugins:
  - name: deployment
    config:
      thing_name: core-1
      api: {port: $API_PORT, cert_file: $PKI/server.crt, key_file: $PKI/server.key}
      credentials:
        - {access_key_id: AKIAGROVETEST00001, secret_access_key: secret-secret-secret}
      discovery:
        enabled: true
        bind: 127.0.0.1
        port: $DISC_PORT
        cert_file: $PKI/server.crt
        key_file: $PKI/server.key
        ca_file: $PKI/ca.crt
        dns_sd: true
        dns_sd_port: $MQTT_PORT
EOF
launch_groved
# browse_has TEXT: avahi-browse resolves _grove-mqtt._tcp to a line containing TEXT.
browse_has() {
  for _ in $(seq 1 "${2:-30}"); do
    timeout 5 avahi-browse -rpt _grove-mqtt._tcp >"$WORK/browse.out" 2>&1
    grep -q "$1" "$WORK/browse.out" && return 0
    sleep 0.2
  done
  return 1
}
publisher() { pgrep -P "$GROVED_PID" -x avahi-publish; }

check "groved shows the service advertised (grovectl status: deployment.dns_sd)" \
  status_has "deployment.dns_sd: _grove-mqtt._tcp advertised: 'Grove core-1'" 100
check "avahi-browse resolves 'Grove core-1' _grove-mqtt._tcp to port $MQTT_PORT with thing and discovery TXT records" \
  browse_has "^=;.*;Grove\\\\032core-1;_grove-mqtt._tcp;local;.*;$MQTT_PORT;\"discovery=$DISC_PORT\" \"thing=core-1\"$"
[[ $FAILED == 0 ]] || { cat "$WORK/browse.out"; tail -n 20 "$WORK/groved.out"; }
PID1=$(publisher)
kill -9 "$PID1" 2>/dev/null
again=0
for _ in $(seq 1 100); do
  PID2=$(publisher)
  [[ -n "$PID2" && "$PID2" != "$PID1" ]] && { again=1; break; }
  sleep 0.1
done
check "avahi-publish killed (pid $PID1): restarted by the supervisor (pid ${PID2:-none})" test "$again" == 1
check "... and the service is advertised again" browse_has "^=;.*;Grove\\\\032core-1;_grove-mqtt._tcp;.*;$MQTT_PORT;"
stop_groved KILL
gone=0
for _ in $(seq 1 50); do
  # The daemon must answer (exit 0): a browse that failed proves nothing.
  timeout 5 avahi-browse -rpt _grove-mqtt._tcp >"$WORK/browse.out" 2>&1 &&
    ! grep -q "Grove\\\\032core-1" "$WORK/browse.out" && { gone=1; break; }
  sleep 0.2
done
check "kill -9 of groved: avahi-publish dies with it and the service is withdrawn" test "$gone" == 1
finish
