#!/bin/bash
# redis_cluster.sh - the shared tier (docs/scale-out.md) against real servers on loopback, all
# started and stopped here: a 6-node Redis Cluster (3 primaries + 3 replicas, AOF on) built with
# `redis-cli --cluster create`, and statesoupd replicas on it.
#   1. test_redis with the cluster: redirects, two stores sharing the catalog (test_redis.c).
#   2. Replicas A and B (and C, LMDB alone, the reference): save on A, merge on B, generate and
#      score on B from the soup == the same requests on C; listing on B; names unique under
#      concurrent saves on A and B; a delete on A seen by B.
#   3. kill -9 the primary holding the catalog's slot during concurrent saves: after failover
#      every acknowledged state is present on B and its data verifies (export checks the checksum).
#   4. kill -9 replica A, start it again on the same --data: nothing lost.
#   5. Stop the whole cluster: B serves its cached states (record, generate), without waiting
#      out --remote-retry again after one command has (the breaker), a state it has no copy of
#      answers 503, saves get 503, /healthz is degraded, /metrics says statesoup_remote_up 0;
#      restart the cluster: B recovers.
# Skips (77) only when redis-server or redis-cli is missing (deploy/install-deps.sh installs them).
set -u
src=${SS_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
bld=${SS_BUILD_ROOT:-$src/build}
cd "$src" || exit 1
for tool in redis-server redis-cli curl jq; do
    command -v $tool >/dev/null || { echo "skipped: $tool missing (./deploy/install-deps.sh)"; exit 77; }
done
# shellcheck source=tests/redis_cluster_lib.sh
. "$src/tests/redis_cluster_lib.sh"

fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
tmp=$(mktemp -d /tmp/ss_redis_cluster.XXXXXX)
declare -A PID PORT
cleanup() {
    local n
    for n in "${!PID[@]}"; do kill -9 "${PID[$n]}" 2>/dev/null; done
    rc_cleanup
    rm -rf "$tmp"
}
trap cleanup EXIT

# start_daemon NAME [statesoupd options...]: its port in PORT[NAME] once it is ready.
start_daemon() {
    local name=$1 line port=""
    shift
    mkfifo "$tmp/$name.fifo"
    "$bld/statesoupd" --model models/demo-mamba1 --data "$tmp/$name.data" \
        --listen 127.0.0.1:0 --compute-threads 1 --quiet "$@" >"$tmp/$name.fifo" 2>&1 &
    PID[$name]=$!
    disown "${PID[$name]}"
    exec {fd}<"$tmp/$name.fifo"
    while IFS= read -r -t 60 line <&$fd; do
        echo "$line" >>"$tmp/$name.log"
        case $line in
        *"listening on http://127.0.0.1:"*) port=${line##*:} ;;
        "statesoupd: ready") break ;;
        esac
    done
    # Keep draining the log in the background so the daemon never blocks on a full pipe.
    cat <&$fd >>"$tmp/$name.log" &
    exec {fd}<&-
    rm -f "$tmp/$name.fifo"
    [ -n "$port" ] || { cat "$tmp/$name.log" >&2; fail "$name did not start"; return 1; }
    PORT[$name]=$port
}

url() { echo "http://127.0.0.1:${PORT[$1]}"; }
# req NAME METHOD PATH [JSON]: body on stdout, status in $tmp/status
req() {
    local name=$1 method=$2 path=$3 body=${4:-}
    if [ -n "$body" ]; then
        curl -s -o "$tmp/body" -w '%{http_code}' -X "$method" "$(url "$name")$path" \
            -H 'Content-Type: application/json' -d "$body" >"$tmp/status"
    else
        curl -s -o "$tmp/body" -w '%{http_code}' -X "$method" "$(url "$name")$path" >"$tmp/status"
    fi
    cat "$tmp/body"
}
status() { cat "$tmp/status"; }

t0=$(date +%s)
rc_start "$tmp/cluster" || { fail "cluster did not start"; exit 1; }
echo "cluster up on $RC_PORTS ($(($(date +%s) - t0)) s)"

# ---- 1. the client and the tier as a library -------------------------------------------------
SS_REDIS_PORTS="$RC_PORTS" "$bld/tests/test_redis" || fail "test_redis against the cluster"

# ---- 2. replicas A, B on the cluster; C alone on LMDB --------------------------------------------
first=${RC_PORTS%% *}
last=${RC_PORTS##* }
start_daemon A --remote "redis://127.0.0.1:$first" || exit 1
start_daemon B --remote "redis://127.0.0.1:$last,127.0.0.1:$first" || exit 1
start_daemon C || exit 1

save() { # save NAME DAEMON STATE-NAME PROMPT
    req "$1" POST /v1/states "{\"name\": \"$2\", \"prompt\": \"$3\"}"
}
for d in A C; do
    save $d dict-a 'Dictionary:\ncase = word\nfor = next\n' >/dev/null
    [ "$(status)" = 201 ] || fail "$d: save dict-a: $(status) $(cat "$tmp/body")"
    save $d dict-b 'Dictionary:\nthis = options\nmake = write\n' >/dev/null
    [ "$(status)" = 201 ] || fail "$d: save dict-b: $(status)"
done
merge='{"name": "dict-soup", "sources": [{"state": "dict-a", "weight": 0.5}, {"state": "dict-b", "weight": 0.5}]}'
for d in B C; do
    req $d POST /v1/states/merge "$merge" >"$tmp/merge.$d"
    [ "$(status)" = 201 ] || fail "$d: merge: $(status) $(cat "$tmp/merge.$d")"
done
[ "$(jq -c '[.n_tokens, .bytes, .checksum]' "$tmp/merge.B")" = "$(jq -c '[.n_tokens, .bytes, .checksum]' "$tmp/merge.C")" ] ||
    fail "the soup merged on B differs from the one merged on C (LMDB alone)"
gen='{"state": "dict-soup", "prompt": "\nQuery:\nfor =", "max_tokens": 14, "temperature": 0}'
gB=$(req B POST /v1/generate "$gen" | jq -r .text)
gC=$(req C POST /v1/generate "$gen" | jq -r .text)
[ -n "$gB" ] && [ "$gB" = "$gC" ] || fail "generate from the soup: B '$gB' vs C '$gC'"
case $gB in *options*write*) ;; *) fail "the soup does not know half B: '$gB'" ;; esac
score='{"state": "dict-a", "context": "\nQuery:\n", "continuation": "for = next\n"}'
sB=$(req B POST /v1/score "$score" | jq .logprob_sum)
sC=$(req C POST /v1/score "$score" | jq .logprob_sum)
[ "$sB" = "$sC" ] || fail "score from dict-a: B $sB vs C $sC"
names=$(req B GET '/v1/states?limit=10' | jq -r '[.data[].name] | join(",")')
[ "$names" = "dict-soup,dict-b,dict-a" ] || fail "listing on B: $names"
[ "$(req A GET /v1/states/dict-soup | jq -r .id)" = "$(jq -r .id "$tmp/merge.B")" ] ||
    fail "A does not see the soup B stored"
# the shared catalog's per-tenant totals (kept in Redis) on the replica that stored none of them
req A GET /metrics | grep -q '^statesoup_tenant_states{tenant=""} 3$' ||
    fail "A's /metrics: no statesoup_tenant_states of the shared catalog's 3 states"
# search keeps no keys with the remote tier: refused clearly (400 unsupported); C (LMDB) finds
# the soup's own state first
q='{"query": {"state": "dict-soup"}, "k": 1}'
req B POST /v1/states/search "$q" | jq -e '.error.code == "unsupported"' >/dev/null &&
    [ "$(status)" = 400 ] || fail "search on a --remote replica: $(status) $(cat "$tmp/body")"
[ "$(req C POST /v1/states/search "$q" | jq -r '.data[0].state.name')" = dict-soup ] ||
    fail "search on C: $(status) $(cat "$tmp/body")"

# The CLI against a replica; statesoup migrate: C's catalog into Redis (namespace mig) and back.
cli="$bld/cli/statesoup"
[ "$("$cli" ls --url "$(url B)" --json | jq -r '[.data[].name] | join(",")')" = "$names" ] ||
    fail "statesoup ls --url B"
want_ids=$(req C GET '/v1/states?limit=10' | jq -c '[.data[] | [.id, .name, .created_at, .checksum]]')
"$cli" migrate --data "$tmp/C.data" --to "$RC_SEEDS" --remote-prefix mig --json >"$tmp/mig1" ||
    fail "migrate --to: $(cat "$tmp/mig1")"
"$cli" migrate --data "$tmp/C.data" --to "$RC_SEEDS" --remote-prefix mig --json >"$tmp/mig2"
[ "$(jq -c '[.copied, .already_there, .failed]' "$tmp/mig1" "$tmp/mig2" | tr -d '\n')" = "[3,0,0][0,3,0]" ] ||
    fail "migrate counts: $(cat "$tmp/mig1" "$tmp/mig2")"
"$cli" migrate --from "$RC_SEEDS" --remote-prefix mig --data "$tmp/back" >/dev/null || fail "migrate --from"
[ "$("$cli" ls --data "$tmp/back" --json | jq -c '[.data[] | [.id, .name, .created_at, .checksum]]')" = "$want_ids" ] ||
    fail "migrate round trip: $("$cli" ls --data "$tmp/back" --json | head -c 300)"
"$cli" verify --data "$tmp/back" >/dev/null || fail "verify after the migration"

# Names unique across replicas under concurrent saves: exactly one 201.
for i in 1 2 3 4 5 6; do
    d=A; [ $((i % 2)) = 0 ] && d=B
    curl -s -o /dev/null -w '%{http_code}\n' "$(url $d)/v1/states" -H 'Content-Type: application/json' \
        -d '{"name": "race", "prompt": "Dictionary:\nrace = '$i'\n"}' >>"$tmp/race" &
done
sleep 0.1
while [ "$(wc -l <"$tmp/race")" -lt 6 ]; do sleep 0.1; done
[ "$(grep -c 201 "$tmp/race")" = 1 ] && [ "$(grep -c 409 "$tmp/race")" = 5 ] ||
    fail "concurrent saves of one name: $(sort "$tmp/race" | uniq -c | tr '\n' ' ')"

# A delete on A is seen by B (which has dict-a cached from the merge).
req A DELETE /v1/states/dict-a >/dev/null
[ "$(status)" = 204 ] || fail "delete on A: $(status)"
req B GET /v1/states/dict-a >/dev/null
[ "$(status)" = 404 ] || fail "B still serves deleted dict-a: $(status)"
req B POST /v1/generate '{"state": "dict-a", "prompt": "x", "max_tokens": 1}' >/dev/null
[ "$(status)" = 404 ] || fail "B generates from deleted dict-a: $(status)"

# ---- 3. kill -9 the catalog's primary during concurrent saves -------------------------------------
slot=$(redis-cli -p "$first" cluster keyslot '{ss}')
victim=$(rc_primary_of_slot "$slot")
saver() { # saver DAEMON TAG N: one line "status name" per save
    local i
    for ((i = 0; i < $3; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -m 30 "$(url "$1")/v1/states" \
            -H 'Content-Type: application/json' \
            -d "{\"name\": \"fo-$2-$i\", \"prompt\": \"Dictionary:\\nkey = $i\\n\"}")
        echo "$code fo-$2-$i" >>"$tmp/saves.$2"
    done
}
: >"$tmp/saves.a"
: >"$tmp/saves.b"
saver A a 16 &
pa=$!
saver B b 16 &
pb=$!
for ((i = 0; i < 100; i++)); do [ "$(cat "$tmp/saves.a" "$tmp/saves.b" | wc -l)" -ge 4 ] && break; sleep 0.05; done
echo "kill -9 primary $victim (slot $slot of {ss})"
rc_kill "$victim"
for ((i = 0; i < 150; i++)); do
    new_primary=$(rc_primary_of_slot "$slot")
    [ -n "$new_primary" ] && [ "$new_primary" != "$victim" ] && break
    sleep 0.1
done
[ -n "$new_primary" ] && [ "$new_primary" != "$victim" ] || fail "no failover ($new_primary)"
# The killed primary comes back (AOF) as the new primary's replica: WAIT 1 can succeed again.
rc_node_start "$victim"
wait $pa $pb
rc_wait_ok || fail "cluster not ok after the old primary returned"
acked=$(cat "$tmp/saves.a" "$tmp/saves.b" | awk '$1 == 201 { print $2 }')
n_acked=$(echo "$acked" | grep -c .)
echo "saves around the failover: $n_acked acknowledged, $(cat "$tmp/saves.a" "$tmp/saves.b" | awk '$1 != 201' | wc -l) refused (503: no replica could confirm)"
[ "$n_acked" -ge 4 ] || fail "only $n_acked saves acknowledged around a failover"
for n in $acked; do
    req B GET "/v1/states/$n/data" >/dev/null
    [ "$(status)" = 200 ] || fail "acknowledged $n lost after failover: $(status)"
done
cat "$tmp/saves.a" "$tmp/saves.b" | awk '$1 != 201 && $1 != 503 { print }' | grep . &&
    fail "a save around the failover answered neither 201 nor 503"

# ---- 4. kill -9 replica A: nothing lost -----------------------------------------------------------
count() { req "$1" GET '/v1/states?limit=1000' | jq '.data | length'; }
before=$(count B)
kill -9 "${PID[A]}"
unset 'PID[A]'
start_daemon A --remote "redis://127.0.0.1:$first" --remote-retry 1500 --remote-timeout 500 || exit 1
[ "$(count A)" = "$before" ] || fail "after kill -9 of A: $(count A) states, before $before"

# ---- 5. the whole cluster down, then back -------------------------------------------------------
req B GET /v1/states/dict-soup >/dev/null # cached on B (it merged it)
save A only-on-a 'Dictionary:\nq = r\n' >/dev/null # B never reads it: not in B's cache
[ "$(status)" = 201 ] || fail "save only-on-a: $(status) $(cat "$tmp/body")"
rc_stop_all
# The first command finds no cluster for its whole retry budget (5 s on B); the breaker then
# answers the next ones at once, so B's cached reads do not wait for it again.
req B GET /v1/states/dict-soup | jq -e '.name == "dict-soup"' >/dev/null ||
    fail "cluster down: cached record not served ($(status))"
g2=$(req B POST /v1/generate "$gen" | jq -r .text)
[ "$g2" = "$gB" ] || fail "cluster down: generate from the cached soup: '$g2' ($(status))"
req B GET /metrics | awk '$1 == "statesoup_remote_short_circuits_total" && $2 > 0 { f = 1 }
    END { exit !f }' || fail "cluster down: the generate after a failed command was not short-circuited"
# A state B has no copy of may exist all the same: 503, not 404.
req B GET /v1/states/only-on-a >/dev/null
[ "$(status)" = 503 ] && jq -e '.error.message | test("no cached copy")' "$tmp/body" >/dev/null ||
    fail "cluster down: an uncached state answered $(status), not 503: $(cat "$tmp/body")"
save A down 'Dictionary:\nx = y\n' >/dev/null
[ "$(status)" = 503 ] || fail "cluster down: save answered $(status), not 503"
jq -e '.error.message | test("remote catalog")' "$tmp/body" >/dev/null ||
    fail "cluster down: the 503 does not say why: $(cat "$tmp/body")"
req B GET /healthz >/dev/null
[ "$(status)" = 503 ] && jq -e '.status == "degraded"' "$tmp/body" >/dev/null ||
    fail "cluster down: /healthz $(status) $(cat "$tmp/body")"
req B GET /metrics | grep -q '^statesoup_remote_up 0' || fail "cluster down: metrics say up"
req B GET /metrics | awk '$1 == "statesoup_remote_errors_total" && $2 > 0 { f = 1 } END { exit !f }' ||
    fail "cluster down: no remote errors counted"
rc_restart_all || fail "cluster did not come back"
for ((i = 0; i < 100; i++)); do
    req B GET /healthz >/dev/null
    [ "$(status)" = 200 ] && break
    sleep 0.1
done
[ "$(status)" = 200 ] || fail "B did not recover: /healthz $(status) $(cat "$tmp/body")"
# A cluster started again from nothing can go on settling after cluster_state:ok (a late
# election, a replica still loading its AOF, on a test run that loads both cores: WAIT 1 then
# times out and the save answers 503). So a save answering 503 is tried again, under a new name
# (the refused write may still be on the primary), for about 15 s; and an acknowledged state is a
# loss only when reading it answers something else than 200 for 10 s, or 404 at once.
after=
for ((i = 0; i < 6; i++)); do
    save B "after-$i" 'Dictionary:\nx = y\n' >/dev/null
    [ "$(status)" = 201 ] && after=after-$i && break
    [ "$(status)" = 503 ] || break
    sleep 0.5
done
if [ -z "$after" ]; then
    fail "after recovery: save $(status) $(cat "$tmp/body")"
else
    req A GET "/v1/states/$after" >/dev/null
    [ "$(status)" = 200 ] || fail "after recovery: A does not see B's save: $(status)"
fi
for n in $acked; do
    for ((i = 0; i < 50; i++)); do
        req A GET "/v1/states/$n" >/dev/null
        [ "$(status)" = 200 ] || [ "$(status)" = 404 ] && break
        sleep 0.2
    done
    [ "$(status)" = 200 ] || fail "after the cluster restart (AOF): $n lost: $(status) $(cat "$tmp/body")"
done

echo "redis_cluster: $(($(date +%s) - t0)) s"
if [ $fails -gt 0 ]; then
    echo "redis_cluster: $fails failure(s); daemon logs:" >&2
    tail -n 5 "$tmp"/*.log >&2
    exit 1
fi
echo "redis_cluster: all checks passed"
