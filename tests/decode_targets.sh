#!/bin/bash
# bench/decode_targets.sh (issue 15's decode targets, round by round): its parsing, table,
# verdicts and JSON against a stand-in statesoup-bench that prints known figures, the checkpoint
# it writes once, its usage errors, and one real round on the bundled demo model (which catches
# statesoup-bench's output drifting from what the script reads).
set -eu
S=bench/decode_targets.sh
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# The stand-in: token-by-token lines as statesoup-bench prints them, F32 89 / 93 % at 40.0 GB/s,
# q8 76 / 80 % at 41.5; --keep writes a checkpoint folder and says where. It logs its arguments.
cat >"$W/fake" <<'FAKE'
#!/bin/bash
echo "$*" >>"${0%/*}/calls"
case " $* " in
*" --keep "*)
    while [ $# -gt 0 ]; do case $1 in --shape) s=$2; shift 2 ;; --tmp) t=$2; shift 2 ;; *) shift ;; esac; done
    mkdir -p "$t/statesoup-bench-abc/mamba-$s" && touch "$t/statesoup-bench-abc/mamba-$s/config.json"
    echo "  checkpoint kept in $t/statesoup-bench-abc/mamba-$s (statesoup-bench --model ...)"; exit 0 ;;
*" --weights q8 "*) c=76 r=80 g=41.5 ;;
*) c=89 r=93 g=40.0 ;;
esac
echo "  decode, 1 stream, token by token          $c% of a plain read of the same bytes just before each token (median of"
echo "                                                16 tokens, quartiles 81-83%; medians: token 5.47 ms, read $g GB/s)"
echo "    the token after it (running)            $r% of that read (quartiles 83-86%; median token 5.34 ms)"
FAKE
chmod +x "$W/fake"
mkdir "$W/d"
ln -s "$PWD/models/demo-mamba1" "$W/d/demo-F32"
out=$($S --ss "$W/fake" --dir "$W/d" --shapes "demo tiny" --types "F32 q8" --rounds 2 --json "$W/j.json")
echo "$out"
echo "$out" | grep -qxF '| demo | F32 | 90 % | 89 (40.0) / 93, 89 (40.0) / 93 | 0 of 2 |' || fail "demo F32 row"
echo "$out" | grep -qxF '| demo | q8 | 75 % | 76 (41.5) / 80, 76 (41.5) / 80 | 2 of 2 |' || fail "demo q8 row"
echo "$out" | grep -qxF '| tiny | F32 | 90 % | 89 (40.0) / 93, 89 (40.0) / 93 | 0 of 2 |' || fail "tiny row"
echo "$out" | grep -q 'round 1: demo F32: 89 % cold (read 40.0 GB/s), 93 % running; target 90 %: MISSED' ||
    fail "run line"
# the missing checkpoint written once, as F32 (q8 reads it too), and moved into --dir
[ -f "$W/d/tiny-F32/config.json" ] || fail "tiny's checkpoint not kept in --dir"
[ "$(grep -c -- '--keep' "$W/calls")" = 1 ] || fail "the checkpoint written more than once"
grep -q -- "--shape tiny --dtype F32 --only store --quick --keep --tmp $W/d" "$W/calls" || fail "write call"
grep -qx -- "--model $W/d/demo-F32 --weights q8 --only decode --threads 2 --quick" "$W/calls" || fail "q8 call"
grep -qx -- "--model $W/d/tiny-F32 --only decode --threads 2 --quick" "$W/calls" || fail "F32 call"
python3 - "$W/j.json" <<'PY' || fail "json"
import json, sys
runs = json.load(open(sys.argv[1]))
assert len(runs) == 8, len(runs)
want = {"F32": (90, 89, 93, 40.0, False), "q8": (75, 76, 80, 41.5, True)}
for r in runs:
    assert r["round"] in (1, 2) and r["shape"] in ("demo", "tiny"), r
    assert (r["target"], r["cold"], r["running"], r["read_gbs"], r["met"]) == want[r["type"]], r
PY

# usage errors: exit 2, nothing run
: >"$W/calls"
for bad in "--types F8" "--rounds x" "--shapes a/b" "--bogus 1"; do
    # shellcheck disable=SC2086
    if $S --ss "$W/fake" --dir "$W/d" $bad >/dev/null 2>&1; then fail "accepted $bad"; fi
    # shellcheck disable=SC2086
    $S --ss "$W/fake" --dir "$W/d" $bad >/dev/null 2>&1 || [ $? = 2 ] || fail "$bad: not exit 2"
done
[ ! -s "$W/calls" ] || fail "a usage error ran the bench"

# one real round on the demo model: the real bench's lines parse into figures
out=$($S --ss "${SS_BUILD_ROOT:?}/bench/statesoup-bench" --dir "$W/d" --shapes demo --types "F32 q8" \
    --rounds 1 --json "$W/real.json")
echo "$out"
python3 - "$W/real.json" <<'PY' || fail "real json"
import json, sys
runs = json.load(open(sys.argv[1]))
assert [r["type"] for r in runs] == ["F32", "q8"], runs
for r in runs:
    assert 1 <= r["cold"] <= 1000 and 1 <= r["running"] <= 1000 and r["read_gbs"] > 0, r
    assert r["met"] == (r["cold"] >= r["target"]), r
PY
echo "ok"
