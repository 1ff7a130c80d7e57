#!/bin/sh
# The README's test command: build and run the whole suite (unit + integration), then the same
# suite again (but model-generic) under AddressSanitizer + UndefinedBehaviorSanitizer, the
# threaded tests under ThreadSanitizer, then each fuzz target briefly (tests/fuzz/run.sh 10).
# Set SS_SKIP_SANITIZE=1 to run only the first pass, SS_SKIP_FUZZ=1 to skip the fuzzing. Uses
# build/ (debug, asserts on), build-asan/, build-tsan/ and build-fuzz/; deploy/run.sh's release
# build is build-release/, so neither changes the other's build type.
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
# The tests whose threads meet (the engine and its pool, the daemon's HTTP threads and the
# store under them, the load tool's clients) once more under ThreadSanitizer (build-tsan/): a
# data race aborts the process that has it (halt_on_error), which fails its test. Only for the
# whole suite; skipped with SS_SKIP_SANITIZE=1. Where the kernel's address randomisation is
# wider than gcc 12's TSan runtime maps, that runtime cannot start: the tests then run under
# `setarch -R`.
if [ "${SS_SKIP_SANITIZE:-0}" != 1 ] && [ $# -eq 0 ]; then
    [ -f build-tsan/build.ninja ] || meson setup build-tsan -Db_sanitize=thread -Db_lundef=false
    # only what these tests run is built (about a third of the targets)
    meson compile -C build-tsan statesoupd statesoup statesoup-load test_common test_engine \
        test_handlers test_tenants test_noalloc test_api test_transport test_load
    norand=""
    build-tsan/tests/test_common >/dev/null 2>&1 || norand="setarch $(uname -m) -R"
    # shellcheck disable=SC2086
    TSAN_OPTIONS="halt_on_error=1 abort_on_error=1 ${TSAN_OPTIONS:-}" $norand meson test \
        -C build-tsan --no-rebuild --print-errorlogs --timeout-multiplier 4 \
        engine handlers tenants noalloc api transport load
fi
# Each libFuzzer target for 10 s under ASan+UBSan (clang, build-fuzz/); SS_SKIP_FUZZ=1 skips it.
# Only for the whole suite: a run of chosen tests ("$@") stays quick.
if [ "${SS_SKIP_FUZZ:-0}" != 1 ] && [ $# -eq 0 ]; then
    tests/fuzz/run.sh 10
fi
