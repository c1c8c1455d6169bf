#!/usr/bin/env bash
# End-to-end test of the Greengrass v1 group CA (README "Group CA") with the real clients:
# groved runs message_manager (a real Mosquitto, mutual TLS, broker.ca_dir = the
# deployment plugin's trust directory) and the deployment plugin (API over TLS,
# discovery). boto3 and `aws greengrass` make a group's CA, `grove-certs --group-ca`
# signs device A with it; a second CA (the rotation) signs device B; A (old CA) reaches B
# (new CA) through the deployed subscription on the same broker process, discovery answers
# both with every trusted CA, and after kill -9 of groved everything is still there.
# Usage: group_ca_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_mm_open "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}" openssl jq curl /usr/bin/aws /usr/bin/python3
AWS=/usr/bin/aws
PY=/usr/bin/python3

# The PKI's CA signs the server certificate and Grove's own client only: the devices'
# certificates come from the group's CAs.
group_pki grove
[[ -s $PKI/crl.pem ]] || abort "grove-certs made no crl.pem"
read -r PORT API_PORT DISC_PORT <<<"$(free_ports 3)"
GCA=$WORK/var/plugins/deployment/group_ca

GROUP=$WORK/group.yaml
printf 'name: e2e\ndevices: []\n' >"$GROUP"
{
  printf 'kernel:\n  log_level: info\n  group: %s\nplugins:\n' "$GROUP"
  mm_profile_entry
  # crl_file as in the shipped full image: OpenSSL then wants a CRL from every CA of a
  # chain, the group CAs' own too (their `<hash>.r0` in the trust directory).
  printf '        client_id_patterns: ["<thing>", "<thing>-*"]\n        ca_dir: %s/trust\n        crl_file: %s/crl.pem\n' "$GCA" "$PKI"
  deployment_discovery_entry
} >"$WORK/profile.yaml"

launch_with_mm
pass "groved runs message_manager (broker.ca_dir) and the v1 API over TLS"

aws_env "$PKI/ca.crt"
gg1() { "$AWS" greengrass "$@" --endpoint-url "https://127.0.0.1:$API_PORT" --output json; }
phase() {
  "$PY" "$HERE/group_ca_test.py" "https://127.0.0.1:$API_PORT" "$PKI/ca.crt" \
    "$WORK/state.json" "$1" >"$WORK/py.out" 2>&1
  tally "$WORK/py.out" $? "group_ca_test.py $1"
}
state() { jq -r ".$1" "$WORK/state.json"; }
discover() {  # discover THING: discovery's answer to THING's certificate
  curl -sS --max-time 10 --cacert "$PKI/ca.crt" --cert "$PKI/devices/$1.crt" \
    --key "$PKI/devices/$1.key" "https://127.0.0.1:$DISC_PORT/greengrass/discover/thing/$1"
}
hashed() { find "$GCA/trust" -name '*.[0-9]' 2>/dev/null | wc -l; }
crls() { find "$GCA/trust" -name '*.r[0-9]' 2>/dev/null | wc -l; }

# ---- the first CA; device A signed with it -------------------------------------------------
phase setup
GID=$(state group)
CA1=$(state ca1)
check "the key of the first CA is mode 0600 in the plugin's state" \
  test "$(stat -c %a "$GCA/$GID/$CA1/ca.key" 2>/dev/null)" == 600
check "... its 'active' file names it" test "$(cat "$GCA/active" 2>/dev/null)" == "$GID/$CA1"
"$CERTS_TOOL" device "$PKI" A --group-ca "$GCA" >"$WORK/certs-a.out" 2>&1
check "grove-certs device A --group-ca signs A with the group's CA (openssl verify)" \
  openssl verify -CAfile "$WORK/ca1.pem" "$PKI/devices/A.crt"
refused "... not with the PKI's own CA" openssl verify -CAfile "$PKI/ca.crt" "$PKI/devices/A.crt"
# The broker's copy of the trust directory is refreshed every second: retry until then.
pub_until() {
  local i
  for i in $(seq 1 50); do
    pub "$@" && return 0
    sleep 0.2
  done
  return 1
}
check "device A (first CA) connects and publishes on a/to/b" pub_until A a/to/b first -q 1
BROKER=$(broker_pid)

# ---- rotation: a second CA; device B signed with it --------------------------------------------
OUT=$(gg1 create-group-certificate-authority --group-id "$GID" 2>&1)
CA2=$(jq -r '.GroupCertificateAuthorityArn' <<<"$OUT" 2>/dev/null | sed 's#.*/##')
check "aws greengrass create-group-certificate-authority: a second CA (rotation)" \
  bash -c '[[ $0 =~ ^[0-9a-f]{64}$ && $0 != "$1" ]]' "$CA2" "$CA1"
[[ $FAILED == 0 ]] || echo "$OUT"
phase rotate
OUT=$(gg1 get-group-certificate-authority --group-id "$GID" --certificate-authority-id "$CA2" 2>&1)
check "aws greengrass get-group-certificate-authority: the new CA's PEM" \
  bash -c 'jq -j .PemEncodedCertificate <<<"$0" | cmp -s - "$1"' "$OUT" "$WORK/ca2.pem"
OUT=$(gg1 get-group-certificate-configuration --group-id "$GID" 2>&1)
check "aws greengrass get-group-certificate-configuration: 864000000" \
  test "$(jq -r .CertificateExpiryInMilliseconds <<<"$OUT" 2>/dev/null)" == 864000000
gg1 update-group-certificate-configuration --group-id "$GID" \
  --certificate-expiry-in-milliseconds 1000 >"$WORK/err.out" 2>&1
check "aws greengrass update-group-certificate-configuration 1000 -> BadRequestException naming the field (exit 254)" \
  bash -c '[[ $0 == 254 ]] && grep -q "BadRequestException.*CertificateExpiryInMilliseconds: must be" "$1"' "$?" "$WORK/err.out"
gg1 list-group-certificate-authorities --group-id nope >"$WORK/err.out" 2>&1
check "aws greengrass list-group-certificate-authorities of an unknown group -> IdNotFoundException" \
  grep -q IdNotFoundException "$WORK/err.out"
check "the trust directory holds both CAs (hashed names)" test "$(hashed)" == 2
check "... and an empty CRL of each, signed by it (<hash>.rN)" \
  bash -c '[[ $(find "$0" -name "*.r[0-9]" | wc -l) == 2 ]] && for r in "$0"/*.r[0-9]; do
             c=${r%.r*}.${r##*.r}; openssl crl -in "$r" -noout -CAfile "$c" 2>&1 | grep -q "verify OK" || exit 1
           done' "$GCA/trust"
check "... 'active' names the new one" test "$(cat "$GCA/active")" == "$GID/$CA2"
check "... certificates, CRLs and 'active' are 0644 under groved's umask 077 (issue 8)" \
  bash -c 'for f in "$0"/*.[0-9] "$0"/*.r[0-9] "$@"; do
             [[ $(stat -c %a "$f") == 644 ]] || { echo "$f: $(stat -c %a "$f")"; exit 1; }
           done' "$GCA/trust" "$GCA/active" "$GCA/$GID/$CA2/ca.crt" "$GCA/$GID/$CA2/ca.crl"
"$CERTS_TOOL" device "$PKI" B --group-ca "$GCA" >"$WORK/certs-b.out" 2>&1
check "grove-certs signs B with the new CA" openssl verify -CAfile "$WORK/ca2.pem" "$PKI/devices/B.crt"
refused "... not with the old one" openssl verify -CAfile "$WORK/ca1.pem" "$PKI/devices/B.crt"

start_sub B '#' "$WORK/b.out" B-sub-1
check "A (old CA) -> B (new CA) on a/to/b through the deployed subscription" \
  deliver_until A a/to/b rotated-1 "$WORK/b.out"
check "... on the same broker process (no restart for the new CA)" test "$(broker_pid)" == "$BROKER"
OUT=$(discover B)
check "discovery answers B (new CA) with the PKI's CA and both group CAs" \
  test "$(jq -r '.GGGroups[0].CAs | length' <<<"$OUT" 2>/dev/null)" == 3
[[ $FAILED == 0 ]] || echo "$OUT"
check "... and A (old CA) with the deployed group's id" \
  test "$(discover A | jq -r '.GGGroups[0].GGGroupId' 2>/dev/null)" == "$GID"

# ---- kill -9: the CAs, the keys and the trust are still there -----------------------------------
kill "${SUB_PIDS[@]}" 2>/dev/null
stop_groved KILL
rm -rf "${GCA:?}/trust"   # what the restart must rebuild from the store
launch_with_mm
phase restart
check "after kill -9 the trust directory is rebuilt with both CAs" test "$(hashed)" == 2
check "... and their CRLs" test "$(crls)" == 2
check "... the keys are still 0600" test "$(stat -c %a "$GCA/$GID/$CA2/ca.key" 2>/dev/null)" == 600
start_sub B '#' "$WORK/b2.out" B-sub-2
check "... and A (old CA) -> B (new CA) is delivered again" \
  deliver_until A a/to/b after-kill "$WORK/b2.out"
# ---- the CAs leave the trust: the broker restarts to forget them ---------------------------------
kill "${SUB_PIDS[@]}" 2>/dev/null
BROKER=$(broker_pid)
phase retire
check "the trust directory is empty once the group is reset and deleted" \
  test "$(hashed)$(crls)" == 00
restarted() {
  local i p
  for i in $(seq 1 100); do
    p=$(broker_pid)
    [[ -n $p && $p != "$BROKER" ]] && return 0
    sleep 0.1
  done
  return 1
}
check "... and message_manager restarts the broker (OpenSSL caches the CAs it loaded)" restarted
status_has "local_link: connected" 100 || abort "Grove's client did not reconnect"
refused "... after which device A (a retired CA) is refused" pub A a/to/b retired -q 1
check "groved is still running, both plugins too" \
  bash -c '"$0" status 2>/dev/null | grep -q "deployment .* running" &&
           "$0" status 2>/dev/null | grep -q "message_manager .* running"' "$GROVECTL"
finish
