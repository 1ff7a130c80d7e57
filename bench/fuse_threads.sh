#!/bin/bash
# fuse_threads.sh - from how many threads Mamba-1's fused decode step (two parallel steps a layer,
# out_proj's partials transposed) beats the rows (four steps): statesoup-decode-ab --compare
# layouts at several thread counts, per shape and 16-bit or F32 weights. Its answer decides the
# default layout (the rows on every thread count since the Xeon's figures: docs/performance.md,
# "The device's Xeon decides the defaults per CPU"; SS_FUSED_DECODE=1 picks the fused step).
# The layouts comparison of bench/cpu_defaults.sh, with more thread counts and rounds.
#
#   bench/fuse_threads.sh [BUILD_DIR] [SHAPES] [THREADS] [ROUNDS]
#   e.g. bench/fuse_threads.sh build-release "130m 370m" "2 4 8 16" 20
#
# Prints one line per shape, weight type and thread count: the median step time fused / rows at
# 1 and at 16 streams (below 1: the fused step is faster). Writes random-weight checkpoints
# under $TMPDIR and removes them. Run it on a quiet machine; about a minute per line at 370m.
set -eu
exec "$(dirname "$0")/cpu_defaults.sh" "${1:-build-release}" "${2:-130m 370m}" "${3:-2 4 8 16}" \
    "${4:-20}" layouts
