#!/bin/bash
# test_docs.sh - the examples in README.md, docs/cli.md and docs/api.md are run, as written,
# against a real statesoupd on the bundled demo model, so the docs cannot drift from what the
# daemon does.
#
# Usage: tests/test_docs.sh FILE.md...   (meson runs it with SS_SOURCE_ROOT / SS_BUILD_ROOT set)
#
# What is run: every ```sh block directly preceded by a line `<!-- doctest ... -->`. The blocks
# of one file run in order, in one bash shell (variables carry over), in a fresh temporary folder
# that holds `models` (a link to the repo's) and the daemon's `./data`, exactly as a user in the
# repo root with `./deploy/run.sh` running would. Before a block runs, `localhost:8080` and
# `127.0.0.1:8080` become the test daemon's address, `./build-release/` the build being tested,
# `statesoup` on PATH is that build's CLI, and STATESOUP_URL (the CLI's default daemon) is the
# test daemon's address.
#
# What is checked, per block:
# - none of its commands fails (the last of a pipeline included: pipefail);
# - every curl call's HTTP status: `status=201,200` in the marker lists them in order; without
#   it, each must be 2xx;
# - the ```text block right after the ```sh block (blank lines between allowed), if any, is what
#   it prints (stdout and stderr, as in a terminal; curl's statuses aside), line for line, where
#   a line `…` stands for any number of lines, `…` inside a line for any characters, and the
#   numbers of a line may differ by 0.011 + 0.1 % (a figure rounded differently with another
#   CPU's kernels; the words around them must still be the same);
# - `decreasing`: the numbers the block printed (one per line) strictly decrease;
# - `contains=A,B`: its stdout contains each word.
#
# bash, curl and jq only (deploy/install-deps.sh installs curl and jq; bash is Essential in
# Debian). The daemon's readiness is taken from its log lines, never from a clock.
set -u
src=${SS_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
bld=${SS_BUILD_ROOT:-$src/build}
fails=0

fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

for tool in curl jq; do
    command -v $tool >/dev/null || { echo "skipped: $tool missing (./deploy/install-deps.sh)"; exit 77; }
done

# Each curl call of a block appends "HTTP <status>" (and its own errors) to $statuses, so that
# the block's stdout and stderr together are what a user sees in the terminal.
statuses=/dev/null
curl() { command curl -w '%{stderr}HTTP %{http_code}\n' "$@" 2>>"$statuses"; }

# glob PATTERN-LINE: the expected line as a bash pattern (… = *, everything else literal).
glob() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\*/\\*}
    s=${s//\?/\\?}
    s=${s//\[/\\[}
    printf '%s' "${s//…/*}"
}

# line_ok EXPECTED ACTUAL
line_ok() {
    local pat
    pat=$(glob "$1")
    # shellcheck disable=SC2053
    [[ $2 == $pat ]] && return 0
    awk -v e="$1" -v g="$2" '
        function num(x) { return x ~ /^-?[0-9]+(\.[0-9]+)?$/ }
        BEGIN {
            n = split(e, x); if (split(g, y) != n) exit 1
            for (i = 1; i <= n; i++) {
                if (x[i] == y[i]) continue
                if (!num(x[i]) || !num(y[i])) exit 1
                d = x[i] - y[i]; if (d < 0) d = -d
                m = x[i] < 0 ? -x[i] : x[i]
                if (d > 0.011 + 1e-3 * m) exit 1
            }
        }'
}

# match EXPECTED-FILE ACTUAL-FILE: the rules above; greedy on `…` lines (enough for docs).
match() {
    local -a e a
    local i=0 j=0 skip=0
    mapfile -t e <"$1"
    mapfile -t a <"$2"
    while ((i < ${#e[@]})); do
        if [[ ${e[i]} == "…" ]]; then
            skip=1
            i=$((i + 1))
            continue
        fi
        while ((j < ${#a[@]})) && ! line_ok "${e[i]}" "${a[j]}"; do
            ((skip)) || { echo "line $((j + 1)): expected [${e[i]}], got [${a[j]}]"; return 1; }
            j=$((j + 1))
        done
        ((j < ${#a[@]})) || { echo "expected [${e[i]}], not found"; return 1; }
        skip=0
        i=$((i + 1))
        j=$((j + 1))
    done
    ((skip || j == ${#a[@]})) || { echo "unexpected line $((j + 1)): [${a[j]}]"; return 1; }
}

# extract FILE DIR: writes DIR/N.sh, DIR/N.marker and DIR/N.expected (when a text block
# follows) for each doctest block, N = 1, 2, ...
extract() {
    awk -v dir="$2" '
        function flush_wait() { wait_text = 0 }
        /^<!-- doctest( .*)? -->$/ { marker = $0; armed = 1; next }
        armed && /^```sh$/ { n++; inblk = 1; armed = 0
            m = marker; sub(/^<!-- doctest ?/, "", m); sub(/ ?-->$/, "", m)
            print m > (dir "/" n ".marker"); close(dir "/" n ".marker")
            printf "" > (dir "/" n ".sh"); next }
        inblk && /^```$/ { inblk = 0; close(dir "/" n ".sh"); wait_text = 1; next }
        inblk { print > (dir "/" n ".sh"); next }
        wait_text && /^```text$/ { intext = 1; wait_text = 0
            printf "" > (dir "/" n ".expected"); next }
        intext && /^```$/ { intext = 0; close(dir "/" n ".expected"); next }
        intext { print > (dir "/" n ".expected"); next }
        wait_text && !/^[ \t]*$/ { wait_text = 0 }
        { armed = 0 }
    ' "$1"
}

# run_doc FILE: a fresh daemon and folder, then every doctest block of FILE in order.
run_doc() {
    local doc=$1 tmp port="" line pid nblocks n oldpath=$PATH
    tmp=$(mktemp -d)
    mkdir "$tmp/blocks" "$tmp/bin"
    ln -s "$src/models" "$tmp/models"
    ln -s "$bld/cli/statesoup" "$tmp/bin/statesoup"
    extract "$src/$doc" "$tmp/blocks"
    nblocks=$(find "$tmp/blocks" -name '*.sh' | wc -l)
    if [ "$nblocks" -eq 0 ]; then
        fail "$doc: no doctest blocks"
        rm -rf "$tmp"
        return
    fi
    cd "$tmp" || return
    export STATESOUP_URL PATH="$tmp/bin:$PATH"
    exec 3< <(exec "$bld/statesoupd" --model models/demo-mamba1 --data ./data \
        --listen 127.0.0.1:0 --compute-threads 2 2>&1)
    pid=$!
    while read -r -t 300 line <&3; do
        echo "$line" >>daemon.log
        case $line in
        *"listening on http://127.0.0.1:"*) port=${line##*:} ;;
        "statesoupd: ready") break ;;
        esac
    done
    cat <&3 >>daemon.log &
    if [ -z "$port" ]; then
        fail "$doc: the daemon did not start"
        cat daemon.log >&2
    else
        echo "$doc: $nblocks blocks, daemon on port $port"
        STATESOUP_URL=http://127.0.0.1:$port
        for ((n = 1; n <= nblocks; n++)); do
            run_block "$doc" "$tmp/blocks/$n" "$port"
        done
    fi
    cd "$src" || return
    PATH=$oldpath
    unset STATESOUP_URL
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    wait
    exec 3<&-
    if grep -q "ERROR: AddressSanitizer\|runtime error:" "$tmp/daemon.log"; then
        fail "$doc: the daemon reported a sanitizer error"
        cat "$tmp/daemon.log" >&2
    fi
    [ -n "${SS_DOCTEST_KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}

# run_block DOC BLOCK-PREFIX PORT
run_block() {
    local doc=$1 b=$2 port=$3 marker code want got
    local -a want_status=() got_status=()
    marker=$(cat "$b.marker")
    sed -e "s#localhost:8080#127.0.0.1:$port#g; s#127\.0\.0\.1:8080#127.0.0.1:$port#g" \
        -e "s#\./build-release/#$bld/#g" "$b.sh" >"$b.run"
    for word in $marker; do
        case $word in
        status=*) IFS=, read -r -a want_status <<<"${word#status=}" ;;
        esac
    done
    # Every failing command counts (an ERR trap, as set -e would stop at, without leaving this
    # shell); variables the block sets stay for the next block.
    block_errs=0
    set -o pipefail
    trap 'block_errs=$((block_errs + 1))' ERR
    statuses=$b.status
    : >"$statuses"
    eval "$(cat "$b.run")" >"$b.out" 2>&1 </dev/null
    trap - ERR
    set +o pipefail
    local what
    what="$doc block ${b##*/} ($(head -n 1 "$b.sh" | cut -c 1-60))"
    [ "$block_errs" -eq 0 ] || { fail "$what: $block_errs command(s) failed"; cat "$b.out" "$b.status" >&2; }
    mapfile -t got_status < <(sed -n 's/^HTTP \([0-9][0-9][0-9]\)$/\1/p' "$b.status")
    if ((${#want_status[@]})); then
        want=${want_status[*]}
        got=${got_status[*]}
        [ "$want" = "$got" ] || fail "$what: HTTP statuses [$got], expected [$want]"
    else
        for code in "${got_status[@]}"; do
            [[ $code == 2?? ]] || fail "$what: HTTP $code"
        done
    fi
    if [ -f "$b.expected" ]; then
        local why
        why=$(match "$b.expected" "$b.out") || {
            fail "$what: output differs from the doc: $why"
            echo "--- got:" >&2
            cat "$b.out" >&2
        }
    fi
    for word in $marker; do
        case $word in
        decreasing)
            awk 'NR > 1 && !($1 < prev) { bad = 1 } { prev = $1 } END { exit bad || NR < 2 }' \
                "$b.out" || fail "$what: the numbers do not decrease: $(tr '\n' ' ' <"$b.out")"
            ;;
        contains=*)
            IFS=, read -r -a words <<<"${word#contains=}"
            for w in "${words[@]}"; do
                grep -q -- "$w" "$b.out" || fail "$what: the output does not name '$w'"
            done
            ;;
        esac
    done
}

[ $# -gt 0 ] || set -- README.md docs/tutorial.md docs/cli.md docs/api.md
for doc in "$@"; do
    run_doc "$doc"
done
if [ "$fails" -ne 0 ]; then
    echo "$fails failure(s)"
    exit 1
fi
echo "ok"
