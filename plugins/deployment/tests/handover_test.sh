#!/usr/bin/env bash
# Generic components across a hot reload of the deployment plugin (issue 15): groved runs
# the deployment plugin over TLS; the AWS CLI deploys e2e.Keep (a run that ticks to its log
# forever). `grovectl reload deployment` hands its process to the new instance
# (context::keep_process): the same pid runs on, RUNNING, its log still written. The new
# instance supervises it: a kill -9 of it is noticed and it runs again (v2 restart rules,
# new pid), and a deployment without it stops it.
# Usage: handover_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
AWS=/usr/bin/aws
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-deployment-handover "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}" "$AWS" jq openssl
# shellcheck disable=SC2317  # invoked from the EXIT trap (grove_test_lib.sh's)
test_cleanup() {
  kill_components
}

start_deployment_alone
WORKDIR=$WORK/var/plugins/deployment/components/work
LOG=$WORK/var/logs/components/e2e.Keep.log
PIDFILE=$WORKDIR/e2e.Keep/pid
ticks() { grep -c '^tick' "$LOG" 2>/dev/null; }
export -f gg installed
export AWS API_PORT
alive() { [[ -n $1 && -d /proc/$1 ]] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
export -f alive

cat >"$WORK/keep.yaml" <<'YAML'
RecipeFormatVersion: '2020-01-25'
ComponentName: e2e.Keep
ComponentVersion: '1.0.0'
Manifests:
  - Platform: {os: linux}
    Lifecycle:
      install: echo installed >> {work:path}/installs
      run: echo $$ > {work:path}/pid; exec /bin/sh -c 'while :; do echo tick; sleep 0.1; done'
YAML
cat >"$WORK/other.yaml" <<'YAML'
RecipeFormatVersion: '2020-01-25'
ComponentName: e2e.Other
ComponentVersion: '1.0.0'
YAML
gg create-component-version --inline-recipe "fileb://$WORK/keep.yaml" >/dev/null 2>&1
gg create-component-version --inline-recipe "fileb://$WORK/other.yaml" >/dev/null 2>&1
OUT=$(deploy '{"e2e.Keep": {"componentVersion": "1.0.0"}}')
check "aws create-deployment of e2e.Keep -> COMPLETED ($OUT)" test "${OUT%% *}" == COMPLETED
check "... e2e.Keep RUNNING, its run alive and ticking to its log" \
  bash -c 'for _ in $(seq 1 50); do alive "$(cat "$0" 2>/dev/null)" && [[ $(grep -c ^tick "$1") -gt 2 ]] && exit 0; sleep 0.1; done; exit 1' "$PIDFILE" "$LOG"
check "... ListInstalledComponents: RUNNING" test "$(installed e2e.Keep)" == RUNNING
PID=$(cat "$PIDFILE")

# ---- the hot reload: the process is handed over, not stopped and started again ----------
"$GROVECTL" reload deployment >"$WORK/reload.out" 2>&1
check "grovectl reload deployment -> exit 0, state carried over" \
  bash -c '[[ $0 == 0 ]] && grep -q "state carried over" "$1"' "$?" "$WORK/reload.out"
[[ $FAILED == 0 ]] || cat "$WORK/reload.out"
status_matches "deployment .* running" || abort "the deployment plugin did not come back"
check "... the new instance took e2e.Keep's run over (pid $PID)" \
  wait_for "$WORK/groved.out" "e2e.Keep 1.0.0: its run (pid $PID) taken over from the last instance" 100
check "... the same process runs on: pid $PID alive, the pid file unchanged, install not run again" \
  bash -c 'alive "$1" && [[ $(cat "$0") == "$1" && $(wc -l < "$2") == 1 ]]' "$PIDFILE" "$PID" "$WORKDIR/e2e.Keep/installs"
check "... ListInstalledComponents (the new instance): RUNNING" \
  bash -c 'for _ in $(seq 1 50); do [[ $("$0" e2e.Keep) == RUNNING ]] && exit 0; sleep 0.1; done; exit 1' installed
# The current deployment, applied again by the new instance, finds it unchanged and running.
check "... and it stays the same process once the new instance applied the deployment again" \
  bash -c 'for _ in $(seq 1 100); do [[ $(grep -cE "deployment: [0-9a-f-]+ applied$" "$0") -ge 2 ]] && break; sleep 0.1; done
           [[ $(grep -cE "deployment: [0-9a-f-]+ applied$" "$0") -ge 2 ]] && alive "$1" && [[ $(cat "$2") == "$1" ]]' \
  "$WORK/groved.out" "$PID" "$PIDFILE"
BEFORE=$(ticks)
check "... its log is still written (more ticks after the reload)" \
  bash -c 'for _ in $(seq 1 50); do [[ $(grep -c ^tick "$0") -gt $1 ]] && exit 0; sleep 0.1; done; exit 1' "$LOG" "$BEFORE"

# ---- its exit is noticed by the new instance: run again (new pid), RUNNING ---------------
kill -9 "$PID"
check "kill -9 of the adopted run: it runs again with a new pid" \
  bash -c 'for _ in $(seq 1 100); do n=$(cat "$0" 2>/dev/null); [[ -n $n && $n != "$1" ]] && alive "$n" && exit 0; sleep 0.1; done; exit 1' "$PIDFILE" "$PID"
check "... the new instance logged the crash (run killed by signal 9)" \
  wait_for "$WORK/groved.out" "e2e.Keep 1.0.0: ERRORED: run killed by signal 9" 50
check "... ListInstalledComponents: RUNNING again" \
  bash -c 'for _ in $(seq 1 50); do [[ $("$0" e2e.Keep) == RUNNING ]] && exit 0; sleep 0.1; done; exit 1' installed
PID2=$(cat "$PIDFILE")

# ---- a second reload, then a deployment without it stops it ----------------------------
"$GROVECTL" reload deployment >"$WORK/reload2.out" 2>&1
check "a second reload -> exit 0; the restarted run (pid $PID2) is handed over too" \
  bash -c '[[ $0 == 0 ]] && for _ in $(seq 1 100); do grep -q "its run (pid $1) taken over" "$2" && exit 0; sleep 0.1; done; exit 1' \
  "$?" "$PID2" "$WORK/groved.out"
OUT=$(deploy '{"e2e.Other": {"componentVersion": "1.0.0"}}')
check "a deployment without e2e.Keep -> COMPLETED ($OUT)" test "${OUT%% *}" == COMPLETED
check "... the adopted run (pid $PID2) is stopped by the instance that adopted it" \
  bash -c 'for _ in $(seq 1 100); do alive "$0" || exit 0; sleep 0.1; done; exit 1' "$PID2"
check "... e2e.Keep is no longer listed" test -z "$(installed e2e.Keep)"
check "groved and the deployment plugin still run" status_matches "deployment .* running" 1
[[ $FAILED == 0 ]] || { echo "--- groved output"; grep -i "deployment\|reload" "$WORK/groved.out" | tail -n 60; }
finish
