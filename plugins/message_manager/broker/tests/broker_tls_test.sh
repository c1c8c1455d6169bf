#!/usr/bin/env bash
# Mutual-TLS test of grove_broker_plugin.so against a real Mosquitto 2.0 broker, with a group PKI
# made by tools/grove-certs. The identity is the client certificate CN, read by the plugin at
# CONNECT (require_certificate true, use_identity_as_username false); no username/password
# test mode.
# Usage: broker_tls_test.sh /path/to/grove_broker_plugin.so /path/to/tools/grove-certs
set -u

PLUGIN=${1:?usage: $0 /path/to/grove_broker_plugin.so /path/to/grove-certs}
CERTS_TOOL=${2:?usage: $0 /path/to/grove_broker_plugin.so /path/to/grove-certs}
PLUGIN=$(readlink -f "$PLUGIN")
CERTS_TOOL=$(readlink -f "$CERTS_TOOL")
# shellcheck source=broker_test_lib.sh
source "$(dirname "$(readlink -f "$0")")/broker_test_lib.sh"
broker_test_init openssl "$CERTS_TOOL"

# ---- PKI -------------------------------------------------------------------------------------
PKI=$WORK/pki
FOREIGN=$WORK/foreign
# The CA keys go here (BASE/<id of the PKI dir>), not into the PKI directories.
export GROVE_CA_DIR=$WORK/ca
CA_KEY=$GROVE_CA_DIR/$(realpath -m -- "$PKI" | sha256sum | cut -c1-16)/ca.key
if ! {
  "$CERTS_TOOL" init "$PKI" --cn "Grove Test Group CA" --days 2 &&
  "$CERTS_TOOL" server "$PKI" --host localhost --ip 127.0.0.1 --days 2 &&
  "$CERTS_TOOL" device "$PKI" A --days 2 &&
  "$CERTS_TOOL" device "$PKI" B --days 2 &&
  "$CERTS_TOOL" device "$PKI" grove --days 2 &&
  "$CERTS_TOOL" device "$PKI" intruder --days 2 &&
  "$CERTS_TOOL" init "$FOREIGN" --cn "Foreign CA" --days 2 &&
  "$CERTS_TOOL" device "$FOREIGN" A --days 2
} >"$WORK/certs.out" 2>&1; then
  cat "$WORK/certs.out"
  echo "0 passed, 1 failed"
  exit 1
fi
pass "grove-certs made the group CA, the server and device certificates, and a foreign CA"

if "$CERTS_TOOL" init "$PKI" >/dev/null 2>&1; then
  fail "grove-certs refuses to overwrite an existing CA"
else
  pass "grove-certs refuses to overwrite an existing CA"
fi
if "$CERTS_TOOL" device "$PKI" 'bad/name' >/dev/null 2>&1; then
  fail "grove-certs rejects an invalid thing name"
else
  pass "grove-certs rejects an invalid thing name"
fi
# shellcheck disable=SC2016  # the bash -c scripts take their arguments as $1
check "keys are private (mode 600)" \
  bash -c '[[ $(stat -c %a "$2") == 600 && $(stat -c %a "$1/server.key") == 600 &&
              $(stat -c %a "$1/devices/A.key") == 600 ]]' _ "$PKI" "$CA_KEY"
check "the CA key is not in the PKI directory (it lives in GROVE_CA_DIR)" \
  bash -c '[[ ! -e $1/ca.key && ! -e $1/ca.srl && -f $2 ]] && ! ls -a "$1" | grep -q "grove-certs\."' \
  _ "$PKI" "$CA_KEY"
check "init made an empty revocation list signed by the CA" \
  bash -c 'openssl crl -in "$1/crl.pem" -CAfile "$1/ca.crt" -noout 2>&1 | grep -q "verify OK" &&
           openssl crl -in "$1/crl.pem" -noout -text | grep -q "No Revoked Certificates"' _ "$PKI"
# server certificates with several DNS names and addresses
"$CERTS_TOOL" server "$WORK/pki2" --host a.example >/dev/null 2>&1 &&
  fail "server needs a CA" || pass "server without a CA is refused"
check "a server certificate may name several hosts and addresses (--host, --ip repeated)" \
  bash -c '"$1" init "$2" --days 2 >/dev/null && "$1" server "$2" --host core.local --host core \
             --ip 10.1.2.3 --ip ::1 --days 2 >/dev/null &&
           openssl verify -CAfile "$2/ca.crt" -purpose sslserver -verify_hostname core "$2/server.crt" &&
           openssl verify -CAfile "$2/ca.crt" -purpose sslserver -verify_ip 10.1.2.3 "$2/server.crt" &&
           openssl verify -CAfile "$2/ca.crt" -purpose sslserver -verify_ip ::1 "$2/server.crt" &&
           openssl x509 -in "$2/server.crt" -noout -subject | grep -qE "CN ?= ?core.local$"' \
  _ "$CERTS_TOOL" "$WORK/pki3"
# ensure-default takes extra names and addresses from the image profile
cat >"$WORK/profile.yaml" <<'EOF'
plugins:
  - name: message_manager
    config:
      broker:
        server_names: [gw.example, gw]
        server_ips: [192.0.2.7]
EOF
check "ensure-default names the profile's broker.server_names and server_ips (and 127.0.0.1 only when none)" \
  bash -c '"$1" ensure-default "$2" --config "$3" >/dev/null &&
           openssl verify -CAfile "$2/ca.crt" -purpose sslserver -verify_hostname gw.example "$2/server.crt" &&
           openssl verify -CAfile "$2/ca.crt" -purpose sslserver -verify_hostname gw "$2/server.crt" &&
           openssl verify -CAfile "$2/ca.crt" -purpose sslserver -verify_ip 192.0.2.7 "$2/server.crt" &&
           [[ -f $2/devices/grove.crt && -f $2/crl.pem && ! -e $2/ca.key ]]' \
  _ "$CERTS_TOOL" "$WORK/pki4" "$WORK/profile.yaml"
# a device key made on the device: grove-certs signs its request, the key never leaves it
mkdir -p "$WORK/device-C"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/device-C/C.key" 2>/dev/null
openssl req -new -key "$WORK/device-C/C.key" -subj /CN=C -out "$WORK/device-C/C.csr" 2>/dev/null
check "sign: a device-made request for C is signed (clientAuth, CN=C), no key in the PKI" \
  bash -c '"$1" sign "$2" "$3" --thing C --days 2 >/dev/null &&
           openssl verify -CAfile "$2/ca.crt" -purpose sslclient "$2/devices/C.crt" >/dev/null &&
           openssl x509 -in "$2/devices/C.crt" -noout -subject | grep -qE "CN ?= ?C$" &&
           [[ ! -e $2/devices/C.key ]] &&
           [[ $(openssl x509 -in "$2/devices/C.crt" -noout -pubkey) == $(openssl pkey -in "$4" -pubout) ]]' \
  _ "$CERTS_TOOL" "$PKI" "$WORK/device-C/C.csr" "$WORK/device-C/C.key"
cp "$WORK/device-C/C.key" "$PKI/devices/C.key"  # the device's own key, for the clients below
openssl req -new -key "$WORK/device-C/C.key" -subj /CN=grove -out "$WORK/device-C/grove.csr" 2>/dev/null
refused "sign refuses a request for CN grove (reserved)" \
  "$CERTS_TOOL" sign "$PKI" "$WORK/device-C/grove.csr"
refused "sign refuses a request whose CN is not the --thing named" \
  "$CERTS_TOOL" sign "$PKI" "$WORK/device-C/C.csr" --thing B
check "the server certificate verifies against the group CA for 127.0.0.1 (serverAuth)" \
  openssl verify -CAfile "$PKI/ca.crt" -purpose sslserver -verify_ip 127.0.0.1 "$PKI/server.crt"
# shellcheck disable=SC2016
check "a device certificate verifies against the group CA (clientAuth) with CN=A" \
  bash -c 'openssl verify -CAfile "$1/ca.crt" -purpose sslclient "$1/devices/A.crt" >/dev/null &&
           openssl x509 -in "$1/devices/A.crt" -noout -subject | grep -qE "CN ?= ?A$"' _ "$PKI"
if openssl verify -CAfile "$PKI/ca.crt" "$FOREIGN/devices/A.crt" >/dev/null 2>&1; then
  fail "the foreign CA's certificate does not verify against the group CA"
else
  pass "the foreign CA's certificate does not verify against the group CA"
fi

# ---- broker ----------------------------------------------------------------------------------
broker_conf '# test group (intruder holds a certificate of the group CA but is not listed)
thing A
thing B
thing C
pub A t/ab
pub A t/#
pub C t/c
deliver A B t/ab' "cafile $PKI/ca.crt
certfile $PKI/server.crt
keyfile $PKI/server.key
require_certificate true
use_identity_as_username false
crlfile $PKI/crl.pem"

# tls_args DIR THING: client TLS options for thing THING of the PKI in DIR
tls_args() { echo "--cafile $PKI/ca.crt --cert $1/devices/$2.crt --key $1/devices/$2.key"; }
# Every client of the tests below holds a certificate of the group CA.
client_args() { tls_args "$PKI" "$1"; }

start_broker "$WORK/mosquitto.conf"
pass "mosquitto starts with the TLS listener and the plugin; a group certificate connects"

start_sub B '#' "$WORK/B.out"
B_SUB_PID=${SUB_PIDS[-1]}
start_sub grove '#' "$WORK/grove.out"
start_sub intruder '#' "$WORK/intruder.out"
INTRUDER_SUB_PID=${SUB_PIDS[-1]}

# 1. allowed route A -> B over mutual TLS, source stamped from the certificate CN
#    (readiness barriers first: the subscribers' SUBSCRIBEs may still be in flight)
deliver_until A t/ab "barrier-grove" "$WORK/grove.out" >/dev/null
if deliver_until A t/ab "ab-1" "$WORK/B.out"; then
  pass "A -> B on t/ab is delivered over mutual TLS"
else
  fail "A -> B on t/ab is delivered over mutual TLS"
fi
check "the source is the certificate CN (grove-source:A)" \
  wait_for "$WORK/grove.out" "t/ab ab-1 grove-source:A"

# 2. no client certificate: refused at the TLS handshake
if timeout 5 mosquitto_pub -h 127.0.0.1 -p "$PORT" --cafile "$PKI/ca.crt" -i nocert \
     -t t/ab -m nocert-1 >"$WORK/nocert.out" 2>&1; then
  fail "a client without a certificate is refused"
else
  pass "a client without a certificate is refused"
fi
check "... at the TLS handshake (peer did not return a certificate)" \
  wait_for "$WORK/mosquitto.log" "peer did not return a certificate" 30

# 3. certificate from a foreign CA (even with CN=A): refused
# shellcheck disable=SC2046
if timeout 5 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 --cafile "$PKI/ca.crt" \
     --cert "$FOREIGN/devices/A.crt" --key "$FOREIGN/devices/A.key" -i foreign \
     -t t/ab -m foreign-1 >"$WORK/foreign.out" 2>&1; then
  fail "a certificate from a foreign CA is refused"
else
  pass "a certificate from a foreign CA is refused"
fi
check "... at the TLS handshake (certificate verify failed)" \
  wait_for "$WORK/mosquitto.log" "certificate verify failed" 30

# 4. the server certificate presented on the wire verifies against the group CA as 127.0.0.1
if timeout 5 openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$PKI/ca.crt" \
     -verify_ip 127.0.0.1 -verify_return_error \
     -cert "$PKI/devices/A.crt" -key "$PKI/devices/A.key" </dev/null >"$WORK/sclient.out" 2>&1 &&
   grep -q 'Verify return code: 0 (ok)' "$WORK/sclient.out"; then
  pass "the broker's certificate verifies against the group CA with IP 127.0.0.1"
else
  fail "the broker's certificate verifies against the group CA with IP 127.0.0.1"
fi
# and a client refuses it when it expects another host name
if timeout 5 openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$PKI/ca.crt" \
     -verify_hostname not-the-broker.example -verify_return_error \
     -cert "$PKI/devices/A.crt" -key "$PKI/devices/A.key" </dev/null >/dev/null 2>&1; then
  fail "a client expecting another host name refuses the broker's certificate"
else
  pass "a client expecting another host name refuses the broker's certificate"
fi

# 5. intruder: valid group certificate, not in the table -> refused at CONNECT (CONNACK
#    "not authorized"), counted as refused_connect; nothing reaches it or comes from it
if pub intruder t/ab "intr-1" >"$WORK/intruder-pub.out" 2>&1; then
  fail "the intruder (valid certificate, CN not a thing) is refused at CONNECT"
elif grep -qiE "not authori[sz]ed|Connection Refused" "$WORK/intruder-pub.out"; then
  pass "the intruder (valid certificate, CN not a thing) is refused at CONNECT"
else
  fail "the intruder is refused at CONNECT as not authorised ($(cat "$WORK/intruder-pub.out"))"
fi
gone=0
for _ in $(seq 1 50); do
  if ! kill -0 "$INTRUDER_SUB_PID" 2>/dev/null; then gone=1; break; fi
  sleep 0.1
done
if [[ $gone == 1 ]] && grep -qiE "not authori[sz]ed|Connection Refused" "$WORK/intruder.out"; then
  pass "the intruder's subscriber is refused at CONNECT"
else
  fail "the intruder's subscriber is refused at CONNECT"
fi
check "... by the plugin (logged with the certificate CN)" \
  wait_for "$WORK/mosquitto.log" "refused connect of certificate CN 'intruder'"
counted=0
for _ in $(seq 1 30); do
  if grep -qE '"refused_connect":[2-9]' "$STATS" 2>/dev/null; then counted=1; break; fi
  sleep 0.1
done
if [[ $counted == 1 ]]; then
  pass "the intruder's connections are counted (refused_connect)"
else
  fail "the intruder's connections are counted (refused_connect) ($(cat "$STATS" 2>/dev/null))"
fi
pub A t/ab "ab-marker-5"
if wait_for "$WORK/B.out" "ab-marker-5" && wait_for "$WORK/grove.out" "ab-marker-5" &&
   ! grep -qF "intr-" "$WORK/B.out" && ! grep -qF "intr-" "$WORK/grove.out" &&
   ! grep -qF "ab-" "$WORK/intruder.out"; then
  pass "the intruder reaches nobody and receives nothing"
else
  fail "the intruder reaches nobody and receives nothing"
fi
check "... and never got far enough to publish (denied_publish_unknown 0)" \
  grep -qF '"denied_publish_unknown":0' "$STATS"

# 5b. a username is optional; if sent, it must equal the certificate CN
if pub A t/ab "ab-user-ok" -u A >"$WORK/userok.out" 2>&1 && wait_for "$WORK/B.out" "ab-user-ok"; then
  pass "A may send its CN as username"
else
  fail "A may send its CN as username"
fi
if pub A t/ab "ab-user-bad" -u B >"$WORK/userbad.out" 2>&1; then
  fail "A sending another thing's name (B) as username is refused at CONNECT"
else
  pass "A sending another thing's name (B) as username is refused at CONNECT"
fi
check "... logged as a username that differs from the CN" \
  wait_for "$WORK/mosquitto.log" "refused connect of certificate CN 'A': username 'B' differs"
pub A t/ab "ab-marker-5b"
if wait_for "$WORK/B.out" "ab-marker-5b" && ! grep -qF "ab-user-bad" "$WORK/B.out"; then
  pass "... and its message is not delivered"
else
  fail "... and its message is not delivered"
fi

# 6. the legitimate subscriber is still connected and still served
if kill -0 "${SUB_PIDS[0]}" 2>/dev/null && deliver_until A t/ab "ab-final" "$WORK/B.out"; then
  pass "B is still connected and served after the refusals"
else
  fail "B is still connected and served after the refusals"
fi

# 6b. the client id is bound to the certificate CN, tried with a real device library (MQTT.js,
#     tests/devices): A with client id B is refused and B keeps its session and queued messages
DEVICES=$(readlink -f "$(dirname "$(readlink -f "$0")")/../../../../tests/devices")
if [[ -d $DEVICES/node_modules/mqtt ]] && command -v node >/dev/null 2>&1; then
  timeout 60 node "$DEVICES/client_id_takeover.js" "$PORT" "$PKI" >"$WORK/takeover.out" 2>&1
  while IFS= read -r line; do
    case $line in
      PASS:*) pass "MQTT.js: ${line#PASS: }" ;;
      FAIL:*) fail "MQTT.js: ${line#FAIL: }" ;;
    esac
  done <"$WORK/takeover.out"
  check "MQTT.js takeover script ran to the end" grep -q "queued while it was offline" "$WORK/takeover.out"
else
  fail "MQTT.js is installed in tests/devices (tools/deps runs npm ci there)"
fi
refused "A with client id 'grove' is refused (grove is reserved for the grove certificate)" \
  pub A t/ab "grove-id" -i grove
check "... logged as a client id that belongs to grove" \
  wait_for "$WORK/mosquitto.log" "refused connect of certificate CN 'A': client id 'grove' is not allowed for 'A' (it belongs to 'grove')"

# 7. second line of defence: a thing removed from the table while connected is disconnected
#    (on the broker tick) and refused at CONNECT when it comes back
printf 'thing A\nthing C\npub A t/#\npub C t/c\n' >"$ACL.new"
mv "$ACL.new" "$ACL"
gone=0
for _ in $(seq 1 50); do
  if ! kill -0 "$B_SUB_PID" 2>/dev/null; then gone=1; break; fi
  sleep 0.1
done
check "B, removed from the table while connected, is disconnected" test "$gone" = 1
if pub B t/x "b-after-removal" >"$WORK/B-removed.out" 2>&1; then
  fail "B, removed from the table, is refused at CONNECT"
else
  pass "B, removed from the table, is refused at CONNECT"
fi
check "... by the plugin (logged with the certificate CN)" \
  wait_for "$WORK/mosquitto.log" "refused connect of certificate CN 'B'"
check "grove still connects without a username" pub grove t/x "grove-final"
check "C connects with the certificate signed from its own request" pub C t/c "c-signed"

# 8. revocation: A's certificate is revoked (crl.pem, read by the broker at start); A is
#    refused at the TLS handshake without renaming the thing, and a new certificate works
cp "$PKI/devices/A.key" "$WORK/A-old.key"
"$CERTS_TOOL" revoke "$PKI" A >"$WORK/revoke.out" 2>&1
check "grove-certs revoke A rewrites the revocation list" \
  bash -c 'openssl crl -in "$1/crl.pem" -noout -text | grep -q "Serial Number" &&
           [[ ! -e $1/devices/A.crt ]] && ls "$1"/devices/revoked/A-*.crt >/dev/null' _ "$PKI"
cp "$PKI"/devices/revoked/A-*.crt "$WORK/A-revoked.crt"
restart_broker() {
  kill "$BROKER_PID" 2>/dev/null; wait "$BROKER_PID" 2>/dev/null
  start_broker "$WORK/mosquitto.conf"
}
restart_broker
log_before=$(wc -l <"$WORK/mosquitto.log")
if timeout 5 mosquitto_pub -h 127.0.0.1 -p "$PORT" -V 5 --cafile "$PKI/ca.crt" \
     --cert "$WORK/A-revoked.crt" --key "$WORK/A-old.key" -i A -t t/ab -m revoked-1 \
     >"$WORK/revoked.out" 2>&1; then
  fail "A's revoked certificate is refused"
else
  pass "A's revoked certificate is refused"
fi
check "... at the TLS handshake (certificate verify failed, nothing reaches the plugin)" \
  bash -c 'for _ in $(seq 1 30); do
             tail -n +"$2" "$1" | grep -q "certificate verify failed" && break; sleep 0.1
           done
           tail -n +"$2" "$1" | grep -q "certificate verify failed" &&
           ! tail -n +"$2" "$1" | grep -q "refused connect of certificate CN .A."' \
  _ "$WORK/mosquitto.log" "$((log_before + 1))"
check "C (not revoked) still connects" pub C t/c "c-after-revoke"
"$CERTS_TOOL" device "$PKI" A --days 2 >/dev/null
restart_broker
check "A, with a new certificate (same thing name), connects again" pub A t/ab "a-new-cert"

broker_test_finish 80 B grove intruder intruder-pub userok userbad B-removed nocert foreign \
  takeover revoke revoked
