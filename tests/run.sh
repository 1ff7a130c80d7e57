#!/bin/sh
# The README's test command: build and run the whole suite (unit + integration), then the same
# suite again under AddressSanitizer + UndefinedBehaviorSanitizer. Set SS_SKIP_SANITIZE=1 to
# run only the first pass.
set -eu
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || meson setup build
meson test -C build --print-errorlogs "$@"
if [ "${SS_SKIP_SANITIZE:-0}" != 1 ]; then
    [ -f build-asan/build.ninja ] ||
        meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false
    meson test -C build-asan --print-errorlogs "$@"
fi
