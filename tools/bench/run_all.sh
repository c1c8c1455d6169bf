#!/bin/sh
# Runs every Grove benchmark against an existing build and prints one JSON line each.
# Builds nothing: run tools/build first (with GROVE_BUILD_BENCH=ON, the default).
# Usage: tools/bench/run_all.sh [BUILD_DIR]   (default: <repo>/build)
# Extra bus_bench flags can be passed in BUS_BENCH_ARGS, e.g. "--messages 500000".
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=${1:-$repo/build}
build=$(cd "$build" && pwd)

if [ ! -x "$build/bin/bus_bench" ] || [ ! -x "$build/bin/groved" ]; then
  echo "run_all.sh: $build/bin/bus_bench or groved missing; build first (tools/build)" >&2
  exit 2
fi

rc=0
# shellcheck disable=SC2086 # BUS_BENCH_ARGS is a list of flags on purpose
"$build/bin/bus_bench" ${BUS_BENCH_ARGS:-} || rc=1
python3 "$here/startup_bench.py" --build "$build" || rc=1
python3 "$here/memory_bench.py" --build "$build" --image kernel || rc=1
python3 "$here/memory_bench.py" --build "$build" --image default || rc=1
python3 "$here/group_bench.py" --build "$build" || rc=1
if [ -x "$build/bin/grove-ota" ]; then
  python3 "$here/ota_bench.py" --build "$build" || rc=1
fi
python3 "$here/image_size.py" --build-dir "$build" || rc=1
/usr/bin/python3 "$here/python_start_bench.py" --sdk "$build/sdk/function/python" || rc=1
if [ -x "$build/bin/reload_bench" ]; then
  "$build/bin/reload_bench" 20 || rc=1
fi
if [ -x "$build/bin/rpc_bench" ]; then
  "$build/bin/rpc_bench" 20000 3 || rc=1
fi
if [ -x "$build/bin/shadow_bench" ]; then
  "$build/bin/shadow_bench" 20000 32 2000 || rc=1
fi
if [ -x "$build/bin/metrics_bench" ]; then
  "$build/bin/metrics_bench" || rc=1
fi
if [ -x "$build/bin/isolation_bench" ]; then
  "$build/bin/isolation_bench" 500000 3 || rc=1
fi
if [ -x "$build/bin/process_bench" ]; then
  "$build/bin/process_bench" 300 || rc=1
fi
if [ -x "$build/bin/resolver_bench" ]; then
  "$build/bin/resolver_bench" 500 20 15 || rc=1
fi
# The message_manager benchmarks (mqtt_load and device_function_bench need libmosquitto-dev;
# cloud_drain_bench is built only when the message_manager's MQTT link is).
if [ -x "$build/bin/mqtt_load" ]; then
  python3 "$here/device_bench.py" --build "$build" || rc=1
fi
if [ -f "$build/lib/grove/plugins/libshadow.so" ]; then
  /usr/bin/python3 "$here/shadow_rtt_bench.py" --build "$build" || rc=1
fi
if [ -f "$build/lib/grove/plugins/libdeployment.so" ]; then
  /usr/bin/python3 "$here/deployment_api_bench.py" --build "$build" || rc=1
  /usr/bin/python3 "$here/deployment_apply_bench.py" --build "$build" || rc=1
fi
if [ -x "$build/bin/device_function_bench" ]; then
  "$build/bin/device_function_bench" || rc=1
fi
if [ -x "$build/bin/spool_bench" ]; then
  "$build/bin/spool_bench" || rc=1
fi
if [ -x "$build/bin/cloud_drain_bench" ]; then
  "$build/bin/cloud_drain_bench" || rc=1
fi
# function_runtime's GreengrassContainer sandbox: needs root (id maps, cgroups).
if [ -x "$build/bin/sandbox_bench" ] && [ "$(id -u)" = 0 ]; then
  "$build/bin/sandbox_bench" || rc=1
fi
# ml_inference against OpenCV DNN called directly (needs python3-onnx for its models).
if [ -x "$build/bin/ml_bench" ]; then
  "$build/bin/ml_bench" 1000 3 || rc=1
fi
# The same models through a pinned C++ function's infer() (function_runtime).
if [ -x "$build/bin/ml_function_bench" ]; then
  "$build/bin/ml_function_bench" 1000 || rc=1
fi
# Non-zero only when a benchmark could not run; missing a target is not a failure.
exit $rc
