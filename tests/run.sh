#!/bin/sh
# The README's test command: build and run the whole suite (unit + integration), then the same
# suite again (but model-generic) under AddressSanitizer + UndefinedBehaviorSanitizer, then each
# fuzz target briefly (tests/fuzz/run.sh 10). Set SS_SKIP_SANITIZE=1 to run only the first pass,
# SS_SKIP_FUZZ=1 to skip the fuzzing. Uses build/ (debug, asserts on), build-asan/ and
# build-fuzz/; deploy/run.sh's release build is build-release/, so neither changes the other's
# build type.
set -eu
cd "$(dirname "$0")/.."
# On a fresh machine, install the dependencies first (the same script as deploy/run.sh); it
# says what to run instead when it cannot (no root, no sudo).
if ! command -v meson >/dev/null 2>&1 || ! command -v ninja >/dev/null 2>&1; then
    echo "statesoup: meson/ninja not found: running ./deploy/install-deps.sh first" >&2
    ./deploy/install-deps.sh
fi
[ -f build/build.ninja ] || meson setup build
meson test -C build --print-errorlogs "$@"
if [ "${SS_SKIP_SANITIZE:-0}" != 1 ]; then
    [ -f build-asan/build.ninja ] ||
        meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false
    # (without the suite 'plain-only': tests/meson.build says why)
    meson test -C build-asan --print-errorlogs --no-suite plain-only "$@"
fi
# Each libFuzzer target for 10 s under ASan+UBSan (clang, build-fuzz/); SS_SKIP_FUZZ=1 skips it.
# Only for the whole suite: a run of chosen tests ("$@") stays quick.
if [ "${SS_SKIP_FUZZ:-0}" != 1 ] && [ $# -eq 0 ]; then
    tests/fuzz/run.sh 10
fi
