#!/bin/bash
# decode_threads.sh - batch-1 and 16-stream decode by weight type at several thread counts, and
# the decode kernels alone: the figures of docs/performance.md ("A quiet 16-core machine").
#
#   bench/decode_threads.sh [BUILD_DIR] [SHAPES] [THREADS]
#   e.g. bench/decode_threads.sh build-release "130m 370m 1.4b" "2 16"
#
# Writes random-weight checkpoints under $TMPDIR (1.4b in F32 is 5.6 GB). Takes 5-10 minutes on
# 16 cores. Run it on a quiet machine: batch-1 decode follows the memory bandwidth of the moment.
set -eu
B=${1:-build-release}
SHAPES=${2:-130m 370m 1.4b}
THREADS=${3:-2 16}
"$B/bench/statesoup-kernbench" --threads "1,2,4,8,$(nproc)" --rows 1,16
for S in $SHAPES; do
    for T in $THREADS; do
        for W in "" "--dtype BF16" "--weights q8"; do
            echo "== $S threads $T ${W:-F32}"
            # shellcheck disable=SC2086
            "$B/bench/statesoup-bench" --shape "$S" --only decode --threads "$T" --quick $W |
                grep -E "bandwidth|decode"
        done
    done
done
