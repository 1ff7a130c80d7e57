#!/bin/bash
# bench/vs_llamacpp.sh: statesoup beside llama.cpp on the same Mamba-1 shapes, same machine.
#
# For each shape and weight type it writes a random-weight GGUF (bench/mamba_gguf.py, with the
# llama.cpp checkout's gguf-py), then runs ROUNDS rounds, each one llama-bench
# (-p 512 -n 128 -r 1: prefill of 512 tokens and 128 tokens decoded at batch 1) and one
# statesoup-bench (--only prefill,decode --quick --prompt 512 --decode 128: the same work, one
# round), the order swapped every round, and prints one table: tok/s as the median over rounds
# and the range. The types: F32, BF16, F16 (statesoup --dtype, the checkpoint as stored) and
# Q8_0 (statesoup --weights q8: its own 8-bit layout, quantised at load from F32).
#
# usage: bench/vs_llamacpp.sh --llama-bench PATH --gguf-py DIR [options]
#   --llama-bench PATH  llama.cpp's llama-bench (a CPU build; measuring only, not a dependency)
#   --gguf-py DIR       llama.cpp's gguf-py folder (for the GGUF writer)
#   --ss CMD            how to run statesoup-bench (default: build-release/bench/statesoup-bench
#                       of this checkout; a kit passes its loader command line)
#   --shapes LIST       default "130m"        (any of 130m 370m 790m 1.4b 2.8b)
#   --types LIST        default "F32 BF16 Q8_0" (any of F32 BF16 F16 Q8_0)
#   --threads N         default 2
#   --rounds N          default 3
#   --tmp DIR           where the GGUFs and our checkpoints go (default $TMPDIR or /tmp)
#   --tokenizer FILE    GPT-NeoX tokenizer.json (default tests/fixtures/tokenizer's)
#   --commit TEXT       llama.cpp's commit, printed with the table
#   --out FILE          also write the raw results (one line per run, TSV)
#   --max-others F      a shared host: before each run wait (up to --quiet-wait) for the other
#                       processes to use under F of the CPUs, and run again (twice at most) a
#                       run during which they used more (default 0.15; the table keeps only the
#                       last try). Both engines spin their threads at meetings, so a busy
#                       neighbour costs them far more than its share (llama.cpp most).
#   --quiet-wait S      the longest wait for a quiet host before a run (default 120 s)
# Needs python3 with numpy. Takes minutes per shape (1.4b: ~10 min a round at 2 threads).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LB="" GP="" SS="" SHAPES="130m" TYPES="F32 BF16 Q8_0" T=2 ROUNDS=3 TMPD=${TMPDIR:-/tmp}
TOK="" COMMIT="" OUT="" MAXO=0.15 QWAIT=120
while [ $# -gt 0 ]; do
    case "$1" in
    --llama-bench) LB=$2; shift 2 ;;
    --gguf-py) GP=$2; shift 2 ;;
    --ss) SS=$2; shift 2 ;;
    --shapes) SHAPES=$2; shift 2 ;;
    --types) TYPES=$2; shift 2 ;;
    --threads) T=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --tmp) TMPD=$2; shift 2 ;;
    --tokenizer) TOK=$2; shift 2 ;;
    --commit) COMMIT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --max-others) MAXO=$2; shift 2 ;;
    --quiet-wait) QWAIT=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "vs_llamacpp.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$LB" ] && [ -x "$LB" ] || { echo "vs_llamacpp.sh: --llama-bench PATH needed" >&2; exit 2; }
[ -n "$GP" ] && [ -d "$GP/gguf" ] || { echo "vs_llamacpp.sh: --gguf-py DIR needed" >&2; exit 2; }
[ -n "$SS" ] || SS="$ROOT/build-release/bench/statesoup-bench"
GEN="$HERE/mamba_gguf.py"
PY=""
for p in python3 /usr/bin/python3; do
    if "$p" -c 'import numpy' 2>/dev/null; then PY=$p; break; fi
done
[ -n "$PY" ] || { echo "vs_llamacpp.sh: no python3 with numpy" >&2; exit 2; }
TOKARG=()
[ -n "$TOK" ] && TOKARG=(--tokenizer "$TOK")

WORK=$(mktemp -d "$TMPD/vs_llamacpp.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
RAW="$WORK/raw.tsv" # round, shape, type, engine, prefill tok/s, decode tok/s, others' CPU share
NCPU=$(nproc)
: >"$RAW"

echo "llama.cpp ${COMMIT:-(commit not given)}: $LB"
echo "statesoup: $SS"
echo "threads $T, rounds $ROUNDS, shapes: $SHAPES, types: $TYPES"

# CPU ticks the whole machine spent busy, and this shell's waited-for children
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8; exit}' /proc/stat; }
child_ticks() { awk '{print $16+$17}' "/proc/$$/stat"; }
# the share of the CPUs that other processes used over the last run (ticks at its start in $1 $2)
others_share() {
    awk -v b0="$1" -v c0="$2" -v b1="$(busy_ticks)" -v c1="$(child_ticks)" -v w="$3" -v n="$NCPU" \
        -v hz="$(getconf CLK_TCK)" 'BEGIN { o = ((b1 - b0) - (c1 - c0)) / hz / (w * n);
                                            printf "%.2f", o < 0 ? 0 : o }'
}
# wait (up to QWAIT s) until other processes use under MAXO of the CPUs over 2 s
wait_quiet() {
    local i b0 c0
    for i in $(seq $(((QWAIT + 1) / 2))); do
        b0=$(busy_ticks) c0=$(child_ticks)
        sleep 2
        awk -v o="$(others_share "$b0" "$c0" 2)" -v m="$MAXO" 'BEGIN { exit !(o < m) }' && return
    done
    echo "  (the host stayed busy: measuring anyway)"
}
# run_one ENGINE shape type round: quiet first; a run the neighbours disturbed runs again
run_one() {
    local try b0 c0 t0 o
    for try in 1 2 3; do
        wait_quiet
        b0=$(busy_ticks) c0=$(child_ticks) t0=$(date +%s.%N)
        "run_$1" "$2" "$3" "$4"
        o=$(others_share "$b0" "$c0" "$(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN{print t1-t0}')")
        sed -i '$ s/$/\t'"$o"'/' "$RAW"
        awk -v o="$o" -v m="$MAXO" 'BEGIN { exit !(o < m) }' && return
        [ $try -eq 3 ] || { echo "  ($1 $2 $3: others used $o of the CPUs; again)"; sed -i '$d' "$RAW"; }
    done
}

run_llama() { # shape type round
    local g="$WORK/$1-$2.gguf" j="$WORK/llama.json"
    "$LB" -m "$g" -t "$T" -p 512 -n 128 -r 1 -o json >"$j" 2>"$WORK/llama.err" ||
        { tail -5 "$WORK/llama.err" >&2; echo "vs_llamacpp.sh: llama-bench failed" >&2; return 1; }
    "$PY" - "$j" "$3" "$1" "$2" >>"$RAW" <<'EOF'
import json, sys
rs = json.load(open(sys.argv[1]))
pp = [r["avg_ts"] for r in rs if r["n_prompt"] > 0 and r["n_gen"] == 0]
tg = [r["avg_ts"] for r in rs if r["n_gen"] > 0 and r["n_prompt"] == 0]
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], "llama.cpp", f"{pp[0]:.2f}", f"{tg[0]:.2f}"]))
EOF
}

run_ours() { # shape type round
    local j="$WORK/ss.json" a=()
    case "$2" in
    F32) a=(--dtype F32) ;;
    BF16) a=(--dtype BF16) ;;
    F16) a=(--dtype F16) ;;
    Q8_0) a=(--dtype F32 --weights q8) ;;
    esac
    # shellcheck disable=SC2086 # $SS may be a loader command line
    $SS --shape "$1" "${a[@]}" --only prefill,decode --threads "$T" --quick --prompt 512 \
        --decode 128 --tmp "$WORK" --json "$j" >"$WORK/ss.out" 2>&1 ||
        { tail -5 "$WORK/ss.out" >&2; echo "vs_llamacpp.sh: statesoup-bench failed" >&2; return 1; }
    "$PY" - "$j" "$3" "$1" "$2" >>"$RAW" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))["models"][0]
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], "statesoup",
                 f"{m['prefill_tok_s']:.2f}", f"{m['decode_1_tok_s']:.2f}"]))
EOF
}

for s in $SHAPES; do
    for ty in $TYPES; do
        echo "writing $s $ty GGUF..."
        "$PY" "$GEN" --gguf-py "$GP" --shape "$s" --type "$ty" "${TOKARG[@]}" -o "$WORK/$s-$ty.gguf"
    done
done
for r in $(seq 1 "$ROUNDS"); do
    for s in $SHAPES; do
        for ty in $TYPES; do
            if [ $((r % 2)) -eq 1 ]; then
                run_one llama "$s" "$ty" "$r"; run_one ours "$s" "$ty" "$r"
            else
                run_one ours "$s" "$ty" "$r"; run_one llama "$s" "$ty" "$r"
            fi
            tail -2 "$RAW" | sed 's/^/  round /'
        done
    done
done
[ -z "$OUT" ] || cp "$RAW" "$OUT"

"$PY" - "$RAW" "$T" <<'EOF'
import sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
keys = []
for r in rows:
    if (r[1], r[2]) not in keys:
        keys.append((r[1], r[2]))
def cell(vals):
    if not vals:
        return "-"
    md = statistics.median(vals)
    return f"{md:.1f} ({min(vals):.1f}-{max(vals):.1f})"
def med(vals):
    return statistics.median(vals) if vals else float("nan")
t = sys.argv[2]
print(f"\ntok/s at {t} threads: median over rounds (range)")
print(f"| shape | type | llama.cpp pp512 | statesoup pp512 | x | llama.cpp tg128 | statesoup decode 128 | x |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for s, ty in keys:
    v = {e: [r for r in rows if r[1] == s and r[2] == ty and r[3] == e] for e in ("llama.cpp", "statesoup")}
    lp = [float(r[4]) for r in v["llama.cpp"]]; sp = [float(r[4]) for r in v["statesoup"]]
    ld = [float(r[5]) for r in v["llama.cpp"]]; sd = [float(r[5]) for r in v["statesoup"]]
    ours = "q8" if ty == "Q8_0" else ty
    print(f"| {s} | {ty} / {ours} | {cell(lp)} | {cell(sp)} | {med(sp) / med(lp):.2f} | "
          f"{cell(ld)} | {cell(sd)} | {med(sd) / med(ld):.2f} |")
EOF
