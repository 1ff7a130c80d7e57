#!/bin/bash
# bench/decode_targets.sh - batch-1 decode against issue 15's targets, round by round.
#
# For each shape and weight type it runs `statesoup-bench --model M [--weights q8] --only decode
# --threads T --quick` and reads its token-by-token figures: the median token against a plain
# read of the same bytes by the same threads just before it ("cold") and the token after it
# ("running"), with that read's GB/s. A round is every shape and type once; the table at the end
# gives each run's figures and how many rounds met the target (cold at or above it). Targets
# (issue 15): F32 90 %, BF16 and F16 85 %, q8 75 % of the bound. Batch-1 decode follows the
# memory of the moment: run it on a quiet machine, and read the GB/s beside each figure.
#
# usage: bench/decode_targets.sh [options]
#   --shapes LIST   default "130m 370m 1.4b" (statesoup-bench's shapes, or any name whose
#                   checkpoints are in --dir)
#   --types LIST    default "F32 BF16 q8" (any of F32 BF16 F16 q8; q8 is the F32 checkpoint
#                   quantised at load, statesoupd --weights q8)
#   --rounds N      default 3
#   --threads N     default 2
#   --dir DIR       where the checkpoints are kept, as DIR/SHAPE-DTYPE (default
#                   $TMPDIR/statesoup-targets); a missing one is written once by
#                   `statesoup-bench --shape SHAPE --dtype DTYPE --keep` (random weights of the
#                   real shape; 1.4b in F32 is 5.6 GB). Put any checkpoint folder there (a link
#                   named NAME-F32, say) to measure it as shape NAME.
#   --ss CMD        how to run statesoup-bench (default: build-release/bench/statesoup-bench)
#   --json FILE     also write every run as JSON: [{round, shape, type, target, cold, running,
#                   read_gbs, met}, ...] (percentages as numbers)
#   -h, --help      this text
# The sandbox of some hosts sets OPENBLAS_CORETYPE; decode does not use OpenBLAS, but run it
# under `env -u OPENBLAS_CORETYPE` to measure what statesoupd does.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHAPES="130m 370m 1.4b" TYPES="F32 BF16 q8" ROUNDS=3 T=2 DIR="${TMPDIR:-/tmp}/statesoup-targets"
SS="$ROOT/build-release/bench/statesoup-bench" JSON=""
usage() { echo "decode_targets.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    --shapes) SHAPES=$2; shift 2 ;;
    --types) TYPES=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) T=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    --ss) SS=$2; shift 2 ;;
    --json) JSON=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) usage "unknown option $1 (see --help)" ;;
    esac
done
case "$ROUNDS,$T" in *[!0-9,]* | ,* | *,) usage "--rounds and --threads take numbers" ;; esac
for s in $SHAPES; do
    case $s in *[!A-Za-z0-9._]*) usage "a shape is letters, digits, . and _" ;; esac
done
for ty in $TYPES; do
    case $ty in F32 | BF16 | F16 | q8) ;; *) usage "unknown type $ty" ;; esac
done
target() { case $1 in F32) echo 90 ;; BF16 | F16) echo 85 ;; q8) echo 75 ;; esac; }
mkdir -p "$DIR"

# The checkpoint of shape $1 in dtype $2 (q8: F32), written on first use.
checkpoint() {
    local dt=$2 out
    [ "$dt" = q8 ] && dt=F32
    if [ ! -e "$DIR/$1-$dt" ]; then
        echo "writing the $1 $dt checkpoint into $DIR ..." >&2
        out=$($SS --shape "$1" --dtype "$dt" --only store --quick --keep --tmp "$DIR" 2>&1) ||
            { echo "$out" >&2; echo "decode_targets.sh: cannot write $1 $dt" >&2; return 1; }
        local kept
        kept=$(echo "$out" | sed -n 's/.*checkpoint kept in \([^ ]*\).*/\1/p' | head -1)
        if [ -z "$kept" ] || [ ! -d "$kept" ]; then
            echo "decode_targets.sh: no checkpoint kept" >&2
            return 1
        fi
        mv "$kept" "$DIR/$1-$dt"
        rmdir "$(dirname "$kept")" 2>/dev/null || true
    fi
    echo "$DIR/$1-$dt"
}

RUNS=() # "round shape type target cold running gbs met"
for r in $(seq 1 "$ROUNDS"); do
    for s in $SHAPES; do
        for ty in $TYPES; do
            m=$(checkpoint "$s" "$ty")
            q=()
            [ "$ty" = q8 ] && q=(--weights q8)
            out=$($SS --model "$m" "${q[@]}" --only decode --threads "$T" --quick 2>&1) ||
                { echo "$out" >&2; echo "decode_targets.sh: statesoup-bench failed" >&2; exit 1; }
            cold=$(echo "$out" | sed -n 's/.*token by token *\([0-9][0-9]*\)%.*/\1/p' | head -1)
            run=$(echo "$out" | sed -n 's/.*(running) *\([0-9][0-9]*\)%.*/\1/p' | head -1)
            gbs=$(echo "$out" | sed -n 's/.*read \([0-9.][0-9.]*\) GB\/s).*/\1/p' | head -1)
            if [ -z "$cold" ] || [ -z "$run" ] || [ -z "$gbs" ]; then
                echo "$out" >&2
                echo "decode_targets.sh: no token-by-token figures" >&2
                exit 1
            fi
            tg=$(target "$ty")
            met=no
            [ "$cold" -ge "$tg" ] && met=yes
            RUNS+=("$r $s $ty $tg $cold $run $gbs $met")
            fmt='%s round %d: %s %s: %s %% cold (read %s GB/s), %s %% running; target %s %%: %s\n'
            # shellcheck disable=SC2059
            printf "$fmt" \
                "$(date -u +%H:%M:%S)" "$r" "$s" "$ty" "$cold" "$gbs" "$run" "$tg" \
                "$([ $met = yes ] && echo met || echo MISSED)"
        done
    done
done

echo
echo "batch-1 decode at $T threads, token by token: cold % (the read's GB/s) / running %, per round"
echo "| shape | type | target | rounds | met |"
echo "| --- | --- | --- | --- | --- |"
for s in $SHAPES; do
    for ty in $TYPES; do
        cells="" n=0 k=0
        for line in "${RUNS[@]}"; do
            read -r _ ls lt tg c ru g me <<<"$line"
            [ "$ls" = "$s" ] && [ "$lt" = "$ty" ] || continue
            cells="${cells:+$cells, }$c ($g) / $ru"
            n=$((n + 1))
            [ "$me" = yes ] && k=$((k + 1))
        done
        echo "| $s | $ty | $(target "$ty") % | $cells | $k of $n |"
    done
done

if [ -n "$JSON" ]; then
    {
        echo "["
        i=0
        for line in "${RUNS[@]}"; do
            read -r r s ty tg c ru g me <<<"$line"
            [ $i -gt 0 ] && echo ","
            [ "$me" = yes ] && me=true || me=false
            printf '  {"round": %d, "shape": "%s", "type": "%s", ' "$r" "$s" "$ty"
            printf '"target": %d, ' "$tg"
            printf '"cold": %d, "running": %d, "read_gbs": %s, "met": %s}' "$c" "$ru" "$g" "$me"
            i=$((i + 1))
        done
        echo
        echo "]"
    } >"$JSON"
fi
