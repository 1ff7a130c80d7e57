# redis_cluster_lib.sh - start and stop a real Redis Cluster on 127.0.0.1 for the tests, the
# bench and deploy/loopback.sh. Source it; it defines:
#   rc_start DIR [N_PRIMARIES]  6 nodes (3 primaries + 3 replicas) by default, AOF on (fsync
#                               always), data and logs under DIR; sets RC_PORTS ("p1 p2 ...") and
#                               RC_SEEDS ("redis://127.0.0.1:p1,...")
#   rc_wait_ok                  until every live node says cluster_state:ok (15 s at most)
#   rc_kill PORT                kill -9 one node;  rc_stop_all  SIGKILL every node (the pid files)
#   rc_restart_all              start every node again from its own dir (nodes.conf, AOF)
#   rc_primary_of_slot SLOT     the port of the primary serving SLOT now
#   rc_cleanup                  kill everything and remove DIR (use in a trap)
# Ports: a block below the ephemeral range; the cluster bus uses port + 10000.

rc_node_start() {
    local port=$1 d="$RC_DIR/$1"
    mkdir -p "$d"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$d" --daemonize yes \
        --pidfile "$d/redis.pid" --logfile "$d/redis.log" --save "" \
        --appendonly yes --appendfsync always \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
        --cluster-replica-validity-factor 0 --protected-mode no >/dev/null
}

# rc_node_ours PORT: the server answering on PORT is the one we started from its dir (its
# process id is in our pid file). A node whose port was taken exits without a pid file, while the
# port's owner (another test's cluster, a leftover) still answers a ping.
rc_node_ours() {
    local pidf="$RC_DIR/$1/redis.pid" pid
    [ -f "$pidf" ] || return 1
    pid=$(redis-cli -p "$1" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')
    [ -n "$pid" ] && [ "$pid" = "$(cat "$pidf")" ]
}

rc_start() {
    RC_DIR=$1
    local primaries=${2:-3} n i p base attempt up
    n=$((primaries * 2))
    # Client ports 10000..21999 and bus ports (+10000) stay below Linux's ephemeral range
    # (32768..), so no outgoing connection of another process holds them; a block that does not
    # come up (a port taken) is given up for another.
    for ((attempt = 0; attempt < 4; attempt++)); do
        base=$((10000 + (($$ + attempt * 7919 + RANDOM) % 600) * 20))
        RC_PORTS=""
        for ((i = 0; i < n; i++)); do RC_PORTS="$RC_PORTS $((base + i))"; done
        RC_PORTS=${RC_PORTS# }
        for p in $RC_PORTS; do rc_node_start "$p"; done
        up=1
        for p in $RC_PORTS; do
            for ((i = 0; i < 50; i++)); do
                rc_node_ours "$p" && break
                sleep 0.1
            done
            [ $i -lt 50 ] || up=0
        done
        [ $up = 1 ] && break
        rc_stop_all
        rm -rf "${RC_DIR:?}"/*
    done
    [ $up = 1 ] || { echo "redis: no free block of ports" >&2; return 1; }
    local hosts=""
    for p in $RC_PORTS; do hosts="$hosts 127.0.0.1:$p"; done
    # shellcheck disable=SC2086
    redis-cli --cluster create $hosts --cluster-replicas 1 --cluster-yes >"$RC_DIR/create.log" 2>&1 ||
        { cat "$RC_DIR/create.log" >&2; return 1; }
    RC_SEEDS="redis://$(echo "$RC_PORTS" | sed 's/\([0-9]*\)/127.0.0.1:\1/g; s/ /,/g')"
    rc_wait_ok
}

rc_wait_ok() {
    local i p ok
    for ((i = 0; i < 150; i++)); do
        ok=1
        for p in $RC_PORTS; do
            [ -f "$RC_DIR/$p/redis.pid" ] && kill -0 "$(cat "$RC_DIR/$p/redis.pid")" 2>/dev/null || continue
            redis-cli -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ok=0
        done
        # Every replica also has to be in sync, or WAIT 1 would time out.
        if [ $ok = 1 ]; then
            for p in $RC_PORTS; do
                [ -f "$RC_DIR/$p/redis.pid" ] && kill -0 "$(cat "$RC_DIR/$p/redis.pid")" 2>/dev/null || continue
                if redis-cli -p "$p" info replication 2>/dev/null | grep -q 'role:slave'; then
                    redis-cli -p "$p" info replication | grep -q 'master_link_status:up' || ok=0
                fi
            done
        fi
        [ $ok = 1 ] && return 0
        sleep 0.1
    done
    echo "redis cluster did not become ok" >&2
    return 1
}

rc_kill() {
    local d="$RC_DIR/$1"
    [ -f "$d/redis.pid" ] && kill -9 "$(cat "$d/redis.pid")" 2>/dev/null
    rm -f "$d/redis.pid"
}

rc_stop_all() {
    local p
    for p in $RC_PORTS; do rc_kill "$p"; done
}

rc_restart_all() {
    local p
    for p in $RC_PORTS; do
        [ -f "$RC_DIR/$p/redis.pid" ] || rc_node_start "$p"
    done
    rc_wait_ok
}

rc_primary_of_slot() {
    local slot=$1 p out
    for p in $RC_PORTS; do
        out=$(redis-cli -p "$p" cluster nodes 2>/dev/null | awk -v s="$slot" '
            $3 ~ /master/ && $3 !~ /fail/ {
                for (i = 9; i <= NF; i++) {
                    n = split($i, r, "-"); lo = r[1]; hi = (n == 2 ? r[2] : r[1])
                    if (lo ~ /^[0-9]+$/ && s >= lo + 0 && s <= hi + 0) {
                        split($2, h, "@"); k = split(h[1], hp, ":"); print hp[k]; exit
                    }
                }
            }')
        [ -n "$out" ] && { echo "$out"; return 0; }
    done
    return 1
}

rc_cleanup() {
    [ -n "${RC_DIR:-}" ] || return 0
    rc_stop_all
    rm -rf "$RC_DIR"
}
