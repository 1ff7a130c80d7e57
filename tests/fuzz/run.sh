#!/bin/sh
# Build the libFuzzer targets of tests/fuzz with clang under ASan + UBSan (in build-fuzz/) and run
# each for SECONDS from its seed corpus (docs/fuzzing.md). Exits non-zero when any target finds
# a crash, a sanitizer report, a leak, a failed property or a hang (over 10 s on one input).
#
# Usage: tests/fuzz/run.sh SECONDS [TARGET...]   (default: every target, one after the other)
# What a run finds is kept under build-fuzz/fuzz/<target>/: the grown corpus (corpus/), the
# input that failed (crash-*, leak-*, timeout-*) and the log (log). Copy a failing input into
# tests/fuzz/regress/<target>/ once fixed: the unit test fuzz-<target> replays it from then on.
set -eu
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: tests/fuzz/run.sh SECONDS [TARGET...]" >&2; exit 2; }
secs=$1
shift
targets=${*:-"safetensors state_import tokenizer_load tokenizer_encode config api"}
if ! command -v clang >/dev/null; then
    echo "tests/fuzz/run.sh: clang not found (deploy/install-deps.sh installs clang and" \
         "libclang-rt-14-dev, which holds libFuzzer)" >&2
    exit 1
fi
[ -f build-fuzz/build.ninja ] ||
    CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
        >/dev/null
bins=""
for t in $targets; do bins="$bins tests/fuzz/fuzz_$t"; done
ninja -C build-fuzz -j"${SS_FUZZ_JOBS:-2}" $bins >/dev/null
# UBSan reports are findings: stop at the first, as ASan does.
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OPENBLAS_NUM_THREADS=1
export SS_SOURCE_ROOT="$PWD"
status=0
for t in $targets; do
    dir=build-fuzz/fuzz/$t
    mkdir -p "$dir/corpus"
    set -- "$dir/corpus" "tests/fuzz/corpus/$t"
    [ -d "tests/fuzz/regress/$t" ] && set -- "$@" "tests/fuzz/regress/$t"
    if build-fuzz/tests/fuzz/fuzz_"$t" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$dir/" "$@" >"$dir/log" 2>&1; then
        res=ok
    else
        res=FAILED
        status=1
    fi
    # libFuzzer's last status line: execs, coverage (cov: edges, ft: features), corpus size
    last=$(grep -E '^#[0-9]+' "$dir/log" | tail -n 1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log")
    echo "fuzz $t: $res ${secs}s  $last  exec/s $eps"
    [ $res = ok ] || tail -n 40 "$dir/log" >&2
done
exit $status
