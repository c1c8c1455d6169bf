#!/usr/bin/env bash
# DeleteDeployment does not change what the core runs (issue 15): groved runs the
# deployment plugin (thing core-1 in thing group site); boto3 (delete_test.py) deploys to
# the thing twice and deletes the second deployment, groved restarts, a deployment to the
# group and a failing one to the thing follow, then groved is killed with -9: each time the
# deleted deployment's components run (see delete_test.py). Then a deployment replaced
# while it applies, one replaced while it waits for its turn, and a start whose reads of the group go unanswered.
# Usage: delete_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
PY=/usr/bin/python3
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-deployment-delete "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}" "$PY" openssl
# grove_test_lib.sh's exit cleanup kills groved (-9) first; what the components started dies with it.
# shellcheck disable=SC2317  # invoked from the EXIT trap (grove_test_lib.sh's)
test_cleanup() {
  kill_components
}

start_deployment_alone "thing_groups: [site]"
run_py() { run_phase "$HERE/delete_test.py" "$1" "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK/var"; }
run_py first        # D1, D2, D2 deleted
stop_groved
launch_deployment "groved did not come back after a restart"
run_py restarted    # the deleted D2's set runs again, kept by a group deployment, rolled back to
stop_groved KILL
launch_deployment "groved did not come back after kill -9"
run_py rolled-back  # the rolled-back set runs again
run_py replaced     # a deployment replaced while it applies is interrupted (CANCELED); a late BROKEN recorded
run_py queued       # a deployment replaced while it waits for its turn never begins (CANCELED)
stop_groved
# Three changes of the group left undecided (deployments since deleted, ROLLBACK owed), for
# the next start to decide; its reads of the group go unanswered
# (GROVE_DEPLOYMENT_FAULT_AT=start_reads_unanswered: each waits start_group_read_timeout).
DB=$(find "$WORK/var" -name components.db | head -n 1)
"$PY" - "$DB" <<'PY' || abort "could not journal the undecided changes"
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
state = json.dumps({"previous": [], "group": {"pending": {"before": "", "after": ""}},
                    "rollback": True})
for i in range(3):
    db.execute("INSERT INTO rollback_journal(deployment_id, state) VALUES (?, ?)",
               (f"00000000-0000-4000-8000-00000000000{i}", state))
db.commit()
PY
sed -i 's/^\(      \)thing_name: core-1$/&\n\1start_group_read_timeout: 1/' "$WORK/profile.yaml"
grep -q "start_group_read_timeout: 1" "$WORK/profile.yaml" || abort "the profile did not take start_group_read_timeout"
GROVE_DEPLOYMENT_FAULT_AT=start_reads_unanswered launch_deployment "groved did not come back with its group reads unanswered"
run_py unanswered   # the start's work goes on: the set runs again
check "... the first change's reads timed out, the other two kept for the next start unread" \
  grep -q "2 more change(s) of the group left undecided kept for the next start unread" "$WORK/groved.out"
check "groved and the deployment plugin still run" status_matches "deployment .* running" 1
[[ $FAILED == 0 ]] || { echo "--- groved output"; grep -i "deployment" "$WORK/groved.out" | tail -n 80; }
finish
