#!/usr/bin/env bash
# Who components run as, and the `bootstrap` step (issue 15): groved (root) runs the
# deployment plugin with `default_posix_user: nobody` (Greengrass' runWithDefault.posixUser);
# boto3 (runwith_test.py) deploys components that run as nobody without a runWith of their
# own, one that names root, one reading and running its artifacts through {artifacts:path}
# as nobody while another component's stay out of its reach, the same for the entries of
# a ZIP artifact through {artifacts:decompressedPath}, and a component whose
# bootstrap runs before its install once per version, asks for a restart of groved
# (exit 100: noted, not done) and a reboot (exit 101: refused, rolled back, the previous
# version's bootstrap run again by BootstrapOnRollback). Then groved is killed with -9:
# the set comes back without bootstrap or install running again.
# Usage: runwith_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
PY=/usr/bin/python3
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-deployment-runwith "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}" "$PY" openssl
# shellcheck disable=SC2317  # invoked from the EXIT trap (grove_test_lib.sh's)
test_cleanup() {
  kill_components
}
[[ $(id -u) == 0 ]] || { echo "SKIP: switching users needs root"; exit 77; }

# The operator's part: the write directory's parent lets nobody pass (mktemp's is 0700);
# groved's own directories below it are groved's to open (traversal only).
chmod 0711 "$WORK"
mkdir -p "$WORK/local"
printf '#!/bin/sh\necho tool ran > "$1"\n' >"$WORK/local/tool.sh"
echo "data of e2e.Arts" >"$WORK/local/data.txt"
echo "secret of e2e.Root" >"$WORK/local/secret.txt"
chmod 0644 "$WORK/local/"*
# Unarchive: ZIP artifacts: e2e.Arts' pack.zip (a script the archive marks executable, a
# text file) and e2e.Root's rootpack.zip.
"$PY" - "$WORK/local" <<'EOF'
import sys, zipfile
def add(z, name, data, mode):
    info = zipfile.ZipInfo(name)
    info.external_attr = (0o100000 | mode) << 16
    z.writestr(info, data)
with zipfile.ZipFile(f"{sys.argv[1]}/pack.zip", "w") as z:
    add(z, "pack/run.sh", '#!/bin/sh\necho unpacked tool ran > "$1"\n', 0o755)
    add(z, "pack/info.txt", "info of e2e.Arts\n", 0o644)
with zipfile.ZipFile(f"{sys.argv[1]}/rootpack.zip", "w") as z:
    add(z, "hidden.txt", "unpacked secret of e2e.Root\n", 0o644)
EOF
chmod 0644 "$WORK/local/"*.zip
start_deployment_alone "artifacts_file_dir: $WORK/local" "default_posix_user: nobody"
run_py() { run_phase "$HERE/runwith_test.py" "$1" "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK/var" "$WORK/local"; }
run_py first
stop_groved KILL
launch_deployment "groved did not come back after kill -9"
run_py restarted
check "groved and the deployment plugin still run" status_matches "deployment .* running" 1
[[ $FAILED == 0 ]] || { echo "--- groved output"; grep -i "deployment" "$WORK/groved.out" | tail -n 80; }
finish
