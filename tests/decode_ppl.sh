#!/bin/bash
# statesoup-decode-ppl on the bundled demo model (the quality figures of --weights q8 in
# docs/performance.md come from it): with the stored weights, one token per step and one chunk per
# step give the same log-likelihood to the last digit (the exact path is batch-invariant); with
# 8-bit weights and activations the decode figure stays within 0.01 nats/token of the stored one.
set -eu
B=${SS_BUILD_ROOT:?}/bench/statesoup-decode-ppl
text=docs/api.md
stored=$("$B" --model models/demo-mamba1 --threads 2 --max-tokens 400 "$text")
q8=$("$B" --model models/demo-mamba1 --threads 2 --max-tokens 400 --weights q8 "$text")
echo "$stored"; echo "$q8"
nats() { sed -n "s/.*$1.*: *\([0-9.]*\) nats.*/\1/p"; }
s_step=$(echo "$stored" | nats "per step (decode)"); s_chunk=$(echo "$stored" | nats "per step (score)")
q_step=$(echo "$q8" | nats "per step (decode)")
[ -n "$s_step" ] && [ -n "$q_step" ] || { echo "FAIL: no figures"; exit 1; }
[ "$s_step" = "$s_chunk" ] || { echo "FAIL: stored weights: decode $s_step != score $s_chunk"; exit 1; }
python3 -c "import sys; sys.exit(0 if abs($q_step - $s_step) <= 0.01 and $s_step > 0 else 1)" ||
    { echo "FAIL: q8 decode $q_step vs stored $s_step"; exit 1; }
echo "ok: stored $s_step = $s_chunk nats/token; q8 decode $q_step"
