#!/bin/bash
# fuse_threads.sh - from how many threads Mamba-1's fused decode step (two parallel steps a layer,
# out_proj's partials transposed) beats the rows (four steps): statesoup-decode-ab --compare
# layouts at several thread counts, per shape and 16-bit or F32 weights. Its answer decides the
# default layout (the rows on every thread count since the Xeon's figures: docs/performance.md,
# "The device's Xeon decides the defaults per CPU"; SS_FUSED_DECODE=1 picks the fused step).
#
#   bench/fuse_threads.sh [BUILD_DIR] [SHAPES] [THREADS] [ROUNDS]
#   e.g. bench/fuse_threads.sh build-release "130m 370m" "2 4 8 16" 20
#
# Prints one line per shape, weight type and thread count: the median step time fused / rows at
# 1 and at 16 streams (below 1: the fused step is faster). Writes random-weight checkpoints
# under $TMPDIR and removes them. Run it on a quiet machine; about a minute per line at 370m.
set -eu
B=${1:-build-release}
SHAPES=${2:-130m 370m}
THREADS=${3:-2 4 8 16}
ROUNDS=${4:-20}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fuse-threads.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
for S in $SHAPES; do
    for D in F32 BF16; do
        mkdir -p "$TMP/$S-$D"
        "$B/bench/statesoup-bench" --shape "$S" --dtype "$D" --only store --quick --keep \
            --tmp "$TMP/$S-$D" >"$TMP/bench.log" 2>&1 || { cat "$TMP/bench.log"; exit 1; }
        M=$(ls -d "$TMP/$S-$D"/*/mamba-"$S")
        for T in $THREADS; do
            R=$("$B/bench/statesoup-decode-ab" --model "$M" --threads "$T" --streams 1,16 \
                    --rounds "$ROUNDS" | awk '/fused \/ rows/ {print $NF}' | paste -sd' ')
            echo "$S $D threads $T: fused / rows at 1 and 16 streams: $R"
        done
        rm -rf "${TMP:?}/$S-$D"
    done
done
