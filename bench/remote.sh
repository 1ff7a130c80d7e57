#!/bin/bash
# remote.sh - start a 6-node Redis Cluster on loopback (tests/redis_cluster_lib.sh: AOF with
# fsync always, 3 primaries + 3 replicas), run statesoup-remotebench on it, stop it.
#   bench/remote.sh [statesoup-remotebench options, e.g. --bytes 328704 --saves 16]
set -u
src=$(cd "$(dirname "$0")/.." && pwd)
bld=${SS_BUILD_ROOT:-$src/build}
. "$src/tests/redis_cluster_lib.sh"
tmp=$(mktemp -d /tmp/statesoup-remotebench.XXXXXX)
trap 'rc_cleanup; rm -rf "$tmp"' EXIT
rc_start "$tmp/cluster" || exit 1
"$bld/bench/statesoup-remotebench" --remote "$RC_SEEDS" --tmp "$tmp" "$@"
