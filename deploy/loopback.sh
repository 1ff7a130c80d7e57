#!/bin/bash
# loopback.sh - the scale-out topology of deploy/compose and deploy/kubernetes as processes on
# this machine: a 6-node Redis Cluster (3 primaries + 3 replicas, AOF) and N statesoupd replicas
# sharing it (--remote), each on its own port and --data cache.
#   deploy/loopback.sh [N]          start it (default N=3), print the URLs, Ctrl-C stops all
#   deploy/loopback.sh --check [N]  start it, then round-robin over the replicas as a load
#                                   balancer would (save on replica i, read, merge and generate
#                                   on replica i+1), check the answers agree, stop; exit 1 on any
#                                   mismatch (tests/deploy.sh runs this)
# Needs redis-server and redis-cli (deploy/install-deps.sh) and a built statesoupd
# (SS_BUILD_ROOT, default ./build).
set -u
src=$(cd "$(dirname "$0")/.." && pwd)
bld=${SS_BUILD_ROOT:-$src/build}
check=0
[ "${1:-}" = --check ] && { check=1; shift; }
n=${1:-3}
cd "$src" || exit 1
# shellcheck source=tests/redis_cluster_lib.sh
. "$src/tests/redis_cluster_lib.sh"
tmp=$(mktemp -d /tmp/statesoup-loopback.XXXXXX)
pids=()
stop() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    rc_cleanup
    rm -rf "$tmp"
}
trap stop EXIT
trap 'exit 130' INT TERM

rc_start "$tmp/cluster" || exit 1
echo "loopback: Redis Cluster on $RC_SEEDS"
urls=()
for ((i = 0; i < n; i++)); do
    "$bld/statesoupd" --model models/demo-mamba1 --data "$tmp/replica$i" --listen 127.0.0.1:0 \
        --compute-threads 1 --quiet --remote "$RC_SEEDS" 2>"$tmp/replica$i.log" &
    pids+=($!)
done
for ((i = 0; i < n; i++)); do
    port=""
    for ((t = 0; t < 600; t++)); do
        grep -q 'statesoupd: ready' "$tmp/replica$i.log" && break
        sleep 0.1
    done
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/replica$i.log")
    [ -n "$port" ] || { cat "$tmp/replica$i.log" >&2; echo "loopback: replica $i did not start" >&2; exit 1; }
    urls+=("http://127.0.0.1:$port")
    echo "loopback: replica $i on ${urls[$i]}"
done

if [ $check = 0 ]; then
    echo "loopback: $n replicas up; Ctrl-C stops everything"
    wait "${pids[0]}"
    exit 0
fi

fails=0
post() { curl -s -o "$tmp/body" -w '%{http_code}' "$1$2" -H 'Content-Type: application/json' -d "$3"; }
for ((i = 0; i < n; i++)); do
    a=${urls[$i]} b=${urls[$(((i + 1) % n))]}
    code=$(post "$a" /v1/states "{\"name\": \"lb-$i\", \"prompt\": \"Dictionary:\\nkey$i = word\\n\"}")
    [ "$code" = 201 ] || { echo "FAIL: save lb-$i on replica $i: $code" >&2; fails=$((fails + 1)); }
    id=$(jq -r .id "$tmp/body")
    [ "$(curl -s "$b/v1/states/lb-$i" | jq -r .id)" = "$id" ] ||
        { echo "FAIL: replica $(((i + 1) % n)) does not see lb-$i" >&2; fails=$((fails + 1)); }
done
# A merge of every replica's state on the last replica; generate from it on each replica.
srcs=$(for ((i = 0; i < n; i++)); do printf '{"state": "lb-%d", "weight": 1}\n' "$i"; done | jq -s -c .)
code=$(post "${urls[$((n - 1))]}" /v1/states/merge "{\"name\": \"lb-soup\", \"sources\": $srcs, \"normalize\": true}")
[ "$code" = 201 ] || { echo "FAIL: merge: $code $(cat "$tmp/body")" >&2; fails=$((fails + 1)); }
first=""
for ((i = 0; i < n; i++)); do
    post "${urls[$i]}" /v1/generate '{"state": "lb-soup", "prompt": "\nQuery:\nkey0 =", "max_tokens": 6, "temperature": 0}' >/dev/null
    text=$(jq -r .text "$tmp/body")
    [ -n "$first" ] || first=$text
    [ -n "$text" ] && [ "$text" = "$first" ] ||
        { echo "FAIL: replica $i generates '$text', replica 0 '$first'" >&2; fails=$((fails + 1)); }
done
[ "$(curl -s "${urls[0]}/v1/states?prefix=lb-" | jq '.data | length')" = $((n + 1)) ] ||
    { echo "FAIL: listing on replica 0" >&2; fails=$((fails + 1)); }
[ $fails = 0 ] && echo "loopback: $n replicas on one Redis Cluster agree" || exit 1
