#!/usr/bin/env bash
# End-to-end test of the console plugin in a real browser: groved runs message_manager (its
# managed Mosquitto, mutual TLS), shadow and console (HTTPS with a group PKI certificate);
# Debian's chromium, driven by puppeteer-core (browser_test.js), logs in and operates it;
# devices are mosquitto_pub/sub with certificates from tools/grove-certs. curl checks the
# refusals a browser would not make (no session, no CSRF token, the login limit), and the
# console unloaded or failing to load (its port taken) leaves groved and the routes running.
# Usage: browser_test.sh GROVED GROVECTL GROVE_CERTS GROVE_CONSOLE_PASSWD [OUTPUT_DIR]
set -u

GROVED=$(readlink -f "${1:?usage: $0 groved grovectl grove-certs grove-console-passwd [out]}")
GROVECTL=$(readlink -f "${2:?}")
CERTS_TOOL=$(readlink -f "${3:?}")
PASSWD_TOOL=$(readlink -f "${4:?}")
HERE=$(dirname "$(readlink -f "$0")")
ROOT=$(readlink -f "$HERE/../../..")
# shellcheck source=../../message_manager/broker/tests/broker_test_lib.sh
source "$HERE/../../message_manager/broker/tests/broker_test_lib.sh"
broker_test_init openssl curl node chromium "$CERTS_TOOL" "$GROVED" "$GROVECTL"
# shellcheck source=../../message_manager/tests/mm_test_lib.sh
source "$HERE/../../message_manager/tests/mm_test_lib.sh"
OUT=${5:-$WORK/out}
mkdir -p "$OUT"
if [[ ! -d "$ROOT/tests/devices/node_modules/puppeteer-core" ]]; then
  echo "missing tests/devices/node_modules/puppeteer-core: run tools/deps (npm ci there)"
  exit 1
fi

HOLDER_PID=""
# shellcheck disable=SC2317  # invoked from the EXIT trap (mm_test_lib.sh's)
test_cleanup() {
  # A browser the test left behind (node killed by its timeout): its profile is in $WORK.
  pkill -9 -f -- "--user-data-dir=$WORK/" 2>/dev/null
  [[ -n "$HOLDER_PID" ]] && kill "$HOLDER_PID" 2>/dev/null
}

group_pki A B grove
read -r PORT CONSOLE_PORT DEP_PORT <<<"$(free_ports 3)"

# Operators' client certificates (openssl): bob is named by CN under the console's
# client_ca_file (ops CA); carol by her own CA (any certificate it issued). Refused: a
# self-signed CN=bob, and CN=mallory from the ops CA (no account names it).
OPS=$WORK/ops
mkdir -p "$OPS"
make_ca() {  # make_ca NAME
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=$1" -keyout "$OPS/$1.key" -out "$OPS/$1.crt" 2>/dev/null
}
make_client() {  # make_client FILE CN CA
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
    -keyout "$OPS/$1.key" -out "$OPS/$1.csr" 2>/dev/null &&
    printf 'extendedKeyUsage = clientAuth\n' >"$OPS/ext" &&
    openssl x509 -req -in "$OPS/$1.csr" -CA "$OPS/$3.crt" -CAkey "$OPS/$3.key" \
      -CAcreateserial -days 1 -extfile "$OPS/ext" -out "$OPS/$1.crt" 2>/dev/null
}
make_ca ops-ca && make_ca carol-ca && make_client bob bob ops-ca &&
  make_client mallory mallory ops-ca && make_client carol-any someone carol-ca &&
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=bob" -keyout "$OPS/selfbob.key" -out "$OPS/selfbob.crt" 2>/dev/null ||
  abort "making the operators' certificates"
PASSWORD="operator password $RANDOM$RANDOM"
HASH=$(printf '%s\n' "$PASSWORD" | "$PASSWD_TOOL") || abort "grove-console-passwd failed"
# shellcheck disable=SC2016  # a literal $ in the pattern
check "grove-console-passwd prints an argon2id hash" grep -q '^\$argon2id\$' <<<"$HASH"

# A's messages for function F show on the bus ($grove/mm/out/function/F/...), where the
# console watches them; F's messages (the console publishing as function:F) reach B.
# echo: a Python function for the functions page (function_runtime is loaded from the
# plugins page during the test, after the "not in this image" pages).
mkdir -p "$WORK/fn"
cat >"$WORK/fn/console_fn.py" <<'EOF'
import json


def handler(event, context):
    print("console_fn got " + json.dumps(event, sort_keys=True), flush=True)
    return {"echo": event, "by": "console_fn"}
EOF
cat >"$WORK/group.yaml" <<EOF
name: console-e2e
devices: [{thing: A}, {thing: B}]
functions:
  - {name: F}
  - name: echo
    config:
      runtime: python3
      handler: console_fn.handler
      codeUri: $WORK/fn
      runAs: {uid: 0, gid: 0}
      linuxProcessParams: {isolationMode: NoContainer}
subscriptions:
  - {id: a-f, source: "device:A", subject: "a/to/f/#", target: "function:F"}
  - {id: f-b, source: "function:F", subject: "f/to/b", target: "device:B"}
EOF
write_profile() {  # write_profile CONSOLE_PORT
  cat >"$WORK/profile.yaml" <<EOF
kernel:
  log_level: info
  group: $WORK/group.yaml
plugins:
$(mm_profile_entry)
        client_id_patterns: ["<thing>", "<thing>-*"]
  - name: shadow
  - name: console
    may_claim: ["function:*"]
    may_control_plugins: true
    config:
      port: $1
      cert_file: $PKI/server.crt
      key_file: $PKI/server.key
      login_max_failures: 5
      client_ca_file: $OPS/ops-ca.crt
      operators:
        - {name: alice, password_hash: '$HASH'}
        - {name: bob, certificate_cn: bob}
        - {name: carol, certificate_ca_file: $OPS/carol-ca.crt}
EOF
}
write_profile "$CONSOLE_PORT"

launch_groved
status_has "local_link: connected" 150 || abort "message_manager did not come up"
status_has "console: https://127.0.0.1:$CONSOLE_PORT" 100 || abort "the console did not come up"
URL=https://127.0.0.1:$CONSOLE_PORT
CURL=(curl -sS --cacert "$PKI/ca.crt" -o "$WORK/body" -w '%{http_code}')

# ---- the browser ------------------------------------------------------------------------------
# chromium trusts the console's certificate by its public key (the group CA is not in its
# NSS store): TLS is verified, against a pinned key.
SPKI=$(openssl x509 -in "$PKI/server.crt" -pubkey -noout | openssl pkey -pubin -outform der |
  openssl dgst -sha256 -binary | base64)
# What the browser loads during the test (the plugins page's load form), and the
# deployments it makes once deployment runs: a component version through the Greengrass
# v2 API (boto3, SigV4), then with grovectl a deployment of it (COMPLETED, the component
# FINISHED) and one of a missing component (FAILED at resolution: its last error).
DEP_SECRET=wJalrXUtnFEMI/K7MDENG+bPxRfiCYCONSOLEKEY
FR_CONFIG="allow_run_as_root: true"
DEP_CONFIG="thing_name: core-1
api: {port: $DEP_PORT, cert_file: $PKI/server.crt, key_file: $PKI/server.key}
credentials: [{access_key_id: AKIAGROVECONSOLE01, secret_access_key: $DEP_SECRET}]"
cat >"$WORK/deploy.sh" <<EOF
set -e
AWS_ACCESS_KEY_ID=AKIAGROVECONSOLE01 AWS_SECRET_ACCESS_KEY='$DEP_SECRET' python3 -c '
import boto3
gg = boto3.client("greengrassv2", endpoint_url="https://127.0.0.1:$DEP_PORT", verify="$PKI/ca.crt",
                  region_name="us-east-1")
gg.create_component_version(inlineRecipe=b"""RecipeFormatVersion: "2020-01-25"
ComponentName: console.Hello
ComponentVersion: "1.0.0"
Manifests:
  - Platform: {os: linux}
    Lifecycle:
      run: echo hello from the console test
""")
' >&2
echo '{"deploymentName": "console-good", "components": {"console.Hello": {"componentVersion": "1.0.0"}}}' >"$WORK/good.json"
echo '{"deploymentName": "console-bad", "components": {"console.Missing": {"componentVersion": "9.9.9"}}}' >"$WORK/bad.json"
GOOD=\$("$GROVECTL" deployments create --file "$WORK/good.json" | jq -r .deploymentId)
for _ in \$(seq 1 200); do
  [[ \$("$GROVECTL" deployments get "\$GOOD" | jq -r .deploymentStatus) == COMPLETED ]] && break
  sleep 0.1
done
BAD=\$("$GROVECTL" deployments create --file "$WORK/bad.json" | jq -r .deploymentId)
echo "{\"good\": \"\$GOOD\", \"bad\": \"\$BAD\"}"
EOF
B_OUT=$WORK/b.out
start_sub B f/to/b "$B_OUT"
sleep 0.5 # mosquitto_sub subscribes within this; the browser checks the file with a bound
if CONSOLE_URL=$URL CONSOLE_PASSWORD=$PASSWORD CONSOLE_SPKI=$SPKI CONSOLE_OUT=$OUT \
  MQTT_PORT=$PORT PKI=$PKI B_OUT=$B_OUT NODE_PATH=$ROOT/tests/devices/node_modules TMPDIR=$WORK \
  FR_CONFIG=$FR_CONFIG DEP_CONFIG=$DEP_CONFIG DEPLOY_SCRIPT=$WORK/deploy.sh \
  timeout 300 node "$HERE/browser_test.js" >"$WORK/browser.out" 2>&1; then
  B_RC=0
else
  B_RC=$?
fi
tally "$WORK/browser.out" "$B_RC" "browser_test.js"
# grovectl has no device listing; its status shows the same gauge the devices page reads.
check "grovectl status shows A's connected gauge (0: its mosquitto_pub has left)" \
  bash -c "'$GROVECTL' status | grep -Eq 'message_manager broker.connected\{device=\"A\"\} +0\$'"

# ---- what a browser would not send ------------------------------------------------------------
check "no session: / redirects to the login page (303)" \
  test "$("${CURL[@]}" "$URL/")" = 303
check "no session: /api/status is 401" test "$("${CURL[@]}" "$URL/api/status")" = 401
check "no session: a POST is 401" test "$("${CURL[@]}" -X POST -H 'Content-Type: application/json' \
  -d '{"name":"shadow"}' "$URL/api/plugins/unload")" = 401
login() {  # login PASSWORD: the status code; the cookie in $WORK/jar
  "${CURL[@]}" -c "$WORK/jar" -H 'Content-Type: application/json' \
    -d "$(jq -n --arg p "$1" '{name: "alice", password: $p}')" "$URL/api/login"
}
check "curl logs in" test "$(login "$PASSWORD")" = 200
check "the session cookie is HttpOnly, Secure, SameSite=Strict" \
  grep -q '^#HttpOnly_127.0.0.1.*TRUE.*grove_console' "$WORK/jar"
CSRF=$(jq -r .csrf "$WORK/body")
check "with a session and no CSRF token, a POST is refused 403" \
  test "$("${CURL[@]}" -b "$WORK/jar" -X POST -H 'Content-Type: application/json' \
    -d '{"name":"shadow"}' "$URL/api/plugins/unload")" = 403
check "with a wrong CSRF token, a POST is refused 403" \
  test "$("${CURL[@]}" -b "$WORK/jar" -X POST -H 'Content-Type: application/json' \
    -H "X-CSRF-Token: ${CSRF/?/x}" -d '{"name":"shadow"}' "$URL/api/plugins/unload")" = 403
check "shadow is still loaded after the refused unloads" \
  bash -c "'$GROVECTL' plugins 2>&1 | grep -q '^shadow.*running'"
check "a form post (not JSON) is refused 415" \
  test "$("${CURL[@]}" -b "$WORK/jar" -X POST -H "X-CSRF-Token: $CSRF" -d 'name=shadow' \
    "$URL/api/plugins/unload")" = 415
check "a body that is not JSON is refused 400" \
  test "$("${CURL[@]}" -b "$WORK/jar" -X POST -H "X-CSRF-Token: $CSRF" \
    -H 'Content-Type: application/json' -d '{"name":' "$URL/api/publish")" = 400
post() {  # post PATH JSON: the status code with the session and its CSRF token
  "${CURL[@]}" -b "$WORK/jar" -X POST -H 'Content-Type: application/json' \
    -H "X-CSRF-Token: $CSRF" -d "$2" "$URL$1"
}
check "configure: a config the plugin's schema refuses is answered 400" \
  test "$(post /api/plugins/configure '{"name":"shadow","config":"no_such_key: 1"}')" = 400
check "... with the kernel's reason naming the key" grep -q no_such_key "$WORK/body"
check "the console's own unload is refused (a plugin may not unload itself)" \
  test "$(post /api/plugins/unload '{"name":"console"}')" != 200
check "a hot reload of the console (grovectl)" "$GROVECTL" reload console
check "the session survives the reload (snapshot/restore)" \
  test "$("${CURL[@]}" -b "$WORK/jar" "$URL/api/session")" = 200
check "... with its CSRF token" test "$(jq -r .csrf "$WORK/body")" = "$CSRF"
check "the actions are logged with the operator's name" \
  grep -q "console: operator 'alice': reload shadow" "$WORK/groved.out"
# ---- client-certificate login -------------------------------------------------------------------
as_cert() {  # as_cert NAME ARGS...: curl with client certificate NAME (in $OPS)
  local n=$1
  shift
  "${CURL[@]}" --cert "$OPS/$n.crt" --key "$OPS/$n.key" "$@"
}
check "bob's certificate (CN bob, ops CA) opens a session: /api/session is 200" \
  test "$(as_cert bob -c "$WORK/bobjar" "$URL/api/session")" = 200
check "... as bob" test "$(jq -r .name "$WORK/body")" = bob
BOB_CSRF=$(jq -r .csrf "$WORK/body")
check "... with a session cookie" grep -q grove_console "$WORK/bobjar"
check "bob's certificate on / serves the console, not the login page (200)" \
  test "$(as_cert bob "$URL/")" = 200
check "without a certificate or cookie, /api/session is 401" \
  test "$("${CURL[@]}" "$URL/api/session")" = 401
check "a self-signed certificate with CN bob is not bob (401)" \
  test "$(as_cert selfbob "$URL/api/session")" = 401
check "an ops-CA certificate no account names (CN mallory) is refused (401)" \
  test "$(as_cert mallory "$URL/api/session")" = 401
check "any certificate of carol's CA logs in as carol" \
  test "$(as_cert carol-any "$URL/api/session")" = 200
check "... named carol" test "$(jq -r .name "$WORK/body")" = carol
check "a certificate alone changes nothing: a POST without a session is 401" \
  test "$(as_cert bob -X POST -H 'Content-Type: application/json' -d '{"name":"shadow"}' \
    "$URL/api/plugins/unload")" = 401
check "bob's session without its CSRF token: a POST is 403" \
  test "$(as_cert bob -b "$WORK/bobjar" -X POST -H 'Content-Type: application/json' \
    -d '{"name":"shadow"}' "$URL/api/plugins/unload")" = 403
check "bob's session with its CSRF token: a publish is done (200)" \
  test "$(as_cert bob -b "$WORK/bobjar" -X POST -H 'Content-Type: application/json' \
    -H "X-CSRF-Token: $BOB_CSRF" \
    -d '{"topic":"f/to/b","payload":"from-bob","source":"function:F","content_type":""}' \
    "$URL/api/publish")" = 200
check "... logged as bob's" grep -q "console: operator 'bob': published to 'f/to/b'" "$WORK/groved.out"
check "POST /api/login/certificate with bob's certificate: 200 as bob" \
  test "$(as_cert bob -X POST -H 'Content-Type: application/json' -d '{}' \
    "$URL/api/login/certificate")" = 200
check "POST /api/login/certificate without a certificate: 401" \
  test "$("${CURL[@]}" -X POST -H 'Content-Type: application/json' -d '{}' \
    "$URL/api/login/certificate")" = 401
check "bob has no password: a password login as bob is refused 401" \
  test "$("${CURL[@]}" -H 'Content-Type: application/json' \
    -d '{"name":"bob","password":"x"}' "$URL/api/login")" = 401
check "a live stream opened with bob's certificate alone (no cookie) sends the status" \
  bash -c "curl -sN --max-time 4 --cacert '$PKI/ca.crt' --cert '$OPS/bob.crt' --key '$OPS/bob.key' \
    '$URL/api/events' | grep -q '^event: status'"
check "certificate logins are logged" \
  grep -q "operator 'bob' logged in with a client certificate from 127.0.0.1" "$WORK/groved.out"

for i in 1 2 3 4 5; do login "wrong $i" >/dev/null; done
check "past login_max_failures, even the right password is answered 429" \
  test "$(login "$PASSWORD")" = 429
check "refused logins are logged" grep -q "login as 'alice' from 127.0.0.1 refused" "$WORK/groved.out"

# ---- the console gone or broken leaves groved running ------------------------------------------
# shellcheck disable=SC2317  # called through check
routes_work() {  # a message from function F (grovectl pub) still reaches device B
  local before
  before=$(grep -c "from-A-$1" "$B_OUT")
  "$GROVECTL" pub --source function:F "\$grove/mm/in/f/to/b" "from-A-$1" >/dev/null 2>&1
  for _ in $(seq 1 200); do
    [[ $(grep -c "from-A-$1" "$B_OUT") -gt $before ]] && return 0
    sleep 0.1
  done
  return 1
}
check "grovectl unload console" "$GROVECTL" unload console
check "groved runs on after the console is unloaded" kill -0 "$GROVED_PID"
check "routes still work after the console is unloaded" routes_work unloaded
check "nothing listens on the console's port any more" \
  bash -c "! curl -s --cacert '$PKI/ca.crt' -o /dev/null '$URL/login.html'"
# Someone else takes the port: the load fails with the reason, groved runs on. (The
# console's closed connections sit in TIME_WAIT for up to a minute, and httplib's
# SO_REUSEPORT sockets keep a plain bind out meanwhile: the holder retries until it has it.)
python3 -c "
import socket, time, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
for _ in range(200):
    try:
        s.bind(('127.0.0.1', $CONSOLE_PORT)); break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit(1)
s.listen()
open('$WORK/held', 'w').close()
time.sleep(300)" &
HOLDER_PID=$!
for _ in $(seq 1 220); do [[ -e $WORK/held ]] && break; sleep 0.5; done
[[ -e $WORK/held ]] || abort "could not take the console's port for the test"
"$GROVECTL" load console >"$WORK/load.out" 2>&1
LOAD_RC=$?
cat "$WORK/load.out"
check "loading the console on a taken port fails" test "$LOAD_RC" != 0
check "... saying why" grep -q "cannot listen on 127.0.0.1:$CONSOLE_PORT" "$WORK/load.out"
check "groved runs on after the failed load" kill -0 "$GROVED_PID"
check "routes still work after the failed load" routes_work failed
kill "$HOLDER_PID" 2>/dev/null
wait "$HOLDER_PID" 2>/dev/null
HOLDER_PID=""
check "the console loads again once the port is free" "$GROVECTL" load console
check "and serves its login page" \
  test "$("${CURL[@]}" "$URL/login.html")" = 200

echo "screenshots: $OUT"
ls "$OUT"
finish
