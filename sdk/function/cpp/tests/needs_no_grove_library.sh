#!/usr/bin/env bash
# Fails when a function binary built on the C++ function SDK needs a Grove shared library
# or CAF at run time: functions run from their own code directory (codeUri), away from the
# build tree or install's lib/, so such a binary exits 127 before main; and loading
# libcaf_core was most of a native function's cold start (ctest
# function_sdk_needs_no_grove_library). With --static-runtime first (the SDK's
# GROVE_FUNCTION_STATIC_RUNTIME), libstdc++, libgcc_s and Protobuf lite must not be
# needed either: the SDK links them into the binary.
set -euo pipefail
forbidden='libgrove|libcaf_core'
if [[ "${1:-}" == --static-runtime ]]; then
  forbidden+='|libstdc\+\+|libgcc_s|libprotobuf'
  shift
fi
status=0
for bin in "$@"; do
  needed=$(readelf -d "$bin" | grep '(NEEDED)' || true)
  # The check itself must see the dynamic section, or it would pass on anything.
  if ! grep -q 'libc\.so' <<<"$needed"; then
    echo "$bin: readelf shows no NEEDED libc.so; cannot check it" >&2
    status=1
    continue
  fi
  if grep -E "$forbidden" <<<"$needed"; then
    echo "$bin: needs the libraries above at run time" >&2
    status=1
  fi
done
exit "$status"
