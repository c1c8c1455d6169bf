#!/usr/bin/env bash
# Fails when a function binary built on the C++ function SDK needs a Grove shared library
# at run time: functions run from their own code directory (codeUri), away from the build
# tree or install's lib/, so such a binary exits 127 before main (ctest
# function_sdk_needs_no_grove_library).
set -euo pipefail
status=0
for bin in "$@"; do
  needed=$(readelf -d "$bin" | grep '(NEEDED)' || true)
  # The check itself must see the dynamic section, or it would pass on anything.
  if ! grep -q 'libc\.so' <<<"$needed"; then
    echo "$bin: readelf shows no NEEDED libc.so; cannot check it" >&2
    status=1
    continue
  fi
  if grep 'libgrove' <<<"$needed"; then
    echo "$bin: needs the Grove libraries above at run time" >&2
    status=1
  fi
done
exit "$status"
