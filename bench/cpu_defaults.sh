#!/bin/bash
# cpu_defaults.sh - the interleaved comparisons behind the defaults that differ by CPU (kernels.c
# kernels_choose, docs/performance.md "The device's Xeon decides the defaults per CPU"), run on
# the machine at hand: statesoup-decode-ab --compare C, one line per shape, weight type, thread
# count and comparison, the median step of side 1 / side 0 at each stream count (below 1: side
# 1 is faster).
#
#   bench/cpu_defaults.sh [BUILD_DIR] [SHAPES] [THREADS] [ROUNDS] [COMPARISONS]
#   e.g. bench/cpu_defaults.sh build-release "130m 370m" "2 16" 8
#
# COMPARISONS (default all of them), each at its stream counts:
#   nta        prefetches ahead non-temporal / into L2 (1 stream; F32, BF16, q8)
#   q8streams  q8 panels read as 4 streams / 1, and 4 / 2 (1 stream; q8)
#   spread     next rows' prefetches shared out / in every block (8 and 16 streams; F32)
#   chunks     K in chunks / all at once (8 and 16 streams; F32)
#   layouts    the fused two-step layer / the rows (1 and 16 streams; F32, BF16)
#   far        four far streams / one (1 and 4 streams; F32, BF16; the prefetches into L2, as
#              where non-temporal ones are off: SS_PF_NTA=0)
#   farpf      the far streams prefetched 1,536 bytes ahead / one row (1 stream; F32, BF16)
#   pfrows     one stream's prefetches 16 rows ahead / 8 (1 stream; F32, BF16; the far streams
#              off, SS_FAR_STREAMS=0: both sides run the same far-stream code otherwise)
#   scanpf     the one-token scan prefetching 32 channels ahead / not (1 and 16 streams; F32,
#              BF16, q8)
#   aa         both sides the same: the noise floor of the lines above (1 stream; q8)
# Writes random-weight checkpoints under $TMPDIR and removes them. Run it on a quiet machine;
# at 370m a line takes 10-60 s.
set -eu
B=${1:-build-release}
SHAPES=${2:-130m 370m}
THREADS=${3:-2 16}
ROUNDS=${4:-8}
COMPARISONS=${5:-aa nta q8streams spread chunks layouts far farpf pfrows scanpf}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cpu-defaults.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# ab MODEL_DIR LABEL COMPARE STREAMS [--weights q8] [ENV=VALUE]: one line of ratios
ab() {
    local m=$1 label=$2 cmp=$3 streams=$4 w=${5:-} e=${6:-}
    for T in $THREADS; do
        R=$(env $e "$B/bench/statesoup-decode-ab" --model "$m" $w --threads "$T" \
                --streams "$streams" --rounds "$ROUNDS" --compare "$cmp" |
            awk '/median:/ {print $1 " streams " $NF}' | paste -sd',' | sed 's/,/, /g')
        echo "$label threads $T, $cmp${e:+ ($e)}: $R"
    done
}

has() { case " $COMPARISONS " in *" $1 "*) return 0 ;; esac; return 1; }

for S in $SHAPES; do
    for D in F32 BF16; do
        mkdir -p "$TMP/$S-$D"
        "$B/bench/statesoup-bench" --shape "$S" --dtype "$D" --only store --quick --keep \
            --tmp "$TMP/$S-$D" >"$TMP/bench.log" 2>&1 || { cat "$TMP/bench.log"; exit 1; }
        M=$(ls -d "$TMP/$S-$D"/*/mamba-"$S")
        has nta && ab "$M" "$S $D" nta 1
        has layouts && ab "$M" "$S $D" layouts 1,16
        has far && ab "$M" "$S $D" far 1,4 "" SS_PF_NTA=0
        has farpf && ab "$M" "$S $D" farpf 1
        has pfrows && ab "$M" "$S $D" pfrows 1 "" SS_FAR_STREAMS=0
        has scanpf && ab "$M" "$S $D" scanpf 1,16
        if [ "$D" = F32 ]; then
            has spread && ab "$M" "$S $D" spread 8,16
            has chunks && ab "$M" "$S $D" chunks 8,16
            has aa && ab "$M" "$S q8" aa 1 "--weights q8"
            has nta && ab "$M" "$S q8" nta 1 "--weights q8"
            has scanpf && ab "$M" "$S q8" scanpf 1 "--weights q8"
            if has q8streams; then
                ab "$M" "$S q8" q8streams 1 "--weights q8" SS_Q8P_STREAMS_A=1
                ab "$M" "$S q8" q8streams 1 "--weights q8" SS_Q8P_STREAMS_A=2
            fi
        fi
        rm -rf "${TMP:?}/$S-$D"
    done
done
