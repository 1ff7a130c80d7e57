#!/bin/sh
# Build the libFuzzer targets of tests/fuzz with clang under ASan + UBSan (in build-fuzz/) and run
# each for SECONDS from its seed corpus (docs/fuzzing.md). Exits non-zero when any target finds
# a crash, a sanitizer report, a leak, a failed property or a hang (over 10 s on one input).
#
# Usage: tests/fuzz/run.sh SECONDS [TARGET...]   (default: every target; SS_FUZZ_JOBS of them
# side by side, default the CPUs)
# What a run finds is kept under build-fuzz/fuzz/<target>/: the grown corpus (corpus/), the
# input that failed (crash-*, leak-*, timeout-*) and the log (log). Copy a failing input into
# tests/fuzz/regress/<target>/ once fixed: the unit test fuzz-<target> replays it from then on.
set -eu
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: tests/fuzz/run.sh SECONDS [TARGET...]" >&2; exit 2; }
secs=$1
shift
case $secs in # (libFuzzer reads -max_total_time=0 as no limit)
*[!0-9]* | "" | 0)
    echo "tests/fuzz/run.sh: SECONDS must be a whole number over 0, not '$secs'" >&2
    exit 2
    ;;
esac
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
# UBSan reports are findings: stop at the first, as ASan does.
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OPENBLAS_NUM_THREADS=1
export SS_SOURCE_ROOT="$PWD"
# The targets run side by side, SS_FUZZ_JOBS at a time (default: the CPUs): each libFuzzer run
# is one process on one core, so on 2 cores the six take 3 x SECONDS instead of 6 x SECONDS.
jobs=${SS_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
[ "$jobs" -ge 1 ] 2>/dev/null || jobs=1
ninja -C build-fuzz -j"$jobs" $bins >/dev/null
run_one() { # run_one TARGET: the run, then its one-line summary in $dir/result
    t=$1
    dir=build-fuzz/fuzz/$t
    mkdir -p "$dir/corpus"
    set -- "$dir/corpus" "tests/fuzz/corpus/$t"
    [ -d "tests/fuzz/regress/$t" ] && set -- "$@" "tests/fuzz/regress/$t"
    if build-fuzz/tests/fuzz/fuzz_"$t" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$dir/" "$@" >"$dir/log" 2>&1; then
        res=ok
    else
        res=FAILED
    fi
    # libFuzzer's last status line: execs, coverage (cov: edges, ft: features), corpus size
    last=$(grep -E '^#[0-9]+' "$dir/log" | tail -n 1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log")
    echo "fuzz $t: $res ${secs}s  $last  exec/s $eps" >"$dir/result"
}
status=0
set -- $targets
while [ $# -gt 0 ]; do
    batch=""
    n=0
    while [ $# -gt 0 ] && [ $n -lt "$jobs" ]; do
        batch="$batch $1"
        n=$((n + 1))
        shift
    done
    for t in $batch; do run_one "$t" & done
    wait
    for t in $batch; do
        dir=build-fuzz/fuzz/$t
        cat "$dir/result"
        if ! grep -q "^fuzz $t: ok " "$dir/result"; then
            status=1
            tail -n 40 "$dir/log" >&2
        fi
    done
done
exit $status
