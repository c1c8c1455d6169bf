#!/usr/bin/env bash
# The C++ function SDK as an installed CMake package: installs Grove from the build tree
# into a scratch prefix, builds the installed example function (echo) out of tree with
# find_package(Grove) and grove_add_function(), and runs it from the installed groved's
# function_runtime: grovectl invoke must get the payload back, and the function's log
# must hold the line it logged through the SDK.
set -euo pipefail
build_dir=$1
source_dir=$2
work=$(mktemp -d)
groved_pid=
cleanup() {
  if [[ -n $groved_pid ]]; then
    kill -INT "$groved_pid" 2>/dev/null || true
    wait "$groved_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "$1"
  for f in "$work"/*.log "$work"/var/logs/functions/*.log; do
    [[ -f $f ]] && { echo "== $f"; tail -n 40 "$f"; }
  done
  exit 1
}

# DESTDIR: the package's absolute destinations (/etc/grove) land in the scratch root too,
# not on the machine running the test.
prefix=$work/root/grove
DESTDIR="$work/root" cmake --install "$build_dir" --prefix /grove > "$work/install.log"
example=$prefix/share/grove/sdk/function/cpp
[[ -f $example/CMakeLists.txt ]] || fail "the install has no function example at $example"
cmake -S "$example" -B "$work/echo" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release > "$work/configure.log" 2>&1 || fail "configure failed"
cmake --build "$work/echo" -j2 > "$work/build.log" 2>&1 || fail "build failed"
[[ -x $work/echo/echo ]] || fail "out-of-tree build produced no echo"
# Like the in-tree functions: nothing of Grove, CAF or the C++ runtime loaded at run time.
"$source_dir/sdk/function/cpp/tests/needs_no_grove_library.sh" --static-runtime \
  "$work/echo/echo" || fail "the out-of-tree function needs a library it should not"
mkdir -p "$work/code"
cp "$work/echo/echo" "$work/code/echo"

cat > "$work/group.yaml" <<YAML
name: oot
functions:
  - name: echo
    config:
      handler: echo
      codeUri: $work/code
      runAs: {uid: 0, gid: 0}
      linuxProcessParams: {isolationMode: NoContainer}
YAML
cat > "$work/profile.yaml" <<YAML
kernel:
  control_socket: $work/control.sock
  group: $work/group.yaml
plugins:
  - name: function_runtime
    may_claim: ["function:*"]
    config: {allow_run_as_root: true}
YAML
"$prefix/bin/groved" --config "$work/profile.yaml" --write-dir "$work/var" \
  --plugin-dir "$prefix/lib/grove/plugins" 2> "$work/groved.log" &
groved_pid=$!
ctl=("$prefix/bin/grovectl" --socket "$work/control.sock")
for _ in $(seq 300); do
  grep -q "ready:" "$work/groved.log" && break
  sleep 0.1
done
grep -q "ready: 1 of 1 plugins running" "$work/groved.log" || fail "groved did not start"
reply=
for _ in $(seq 100); do
  reply=$(timeout 20 "${ctl[@]}" invoke echo --payload '{"oot":1}' 2>&1) && break
  sleep 0.2
done
[[ $reply == '{"oot":1}' ]] || fail "invoke echo answered: $reply"
grep -q "echo 9 bytes from" "$work/var/logs/functions/echo.log" \
  || fail "the function's SDK log line is not in its log"
echo "out-of-tree function built against the installed SDK answered: $reply"
