/*
 * redis_cluster.c - slot routing for Redis Cluster over hiredis (see redis_cluster.h).
 *
 * State: the nodes seen so far (seeds, then whatever CLUSTER SLOTS and redirects name) and
 * slot -> node for the 16384 slots (-1 = unknown: any node, which answers MOVED), under c->mu;
 * the connections live in lanes (one per node each), each under its own mutex, taken for a whole
 * command. Lock order: a lane, then c->mu (held only briefly, never across I/O).
 */
#include "redis_cluster.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define MAX_NODES 64
#define HOST_MAX  256

typedef struct rc_node {
    char host[HOST_MAX];
    int port;
} rc_node;

/* A lane: one connection per node, used by one command at a time. Commands on different lanes
 * run in parallel; a command and its WAIT always share the lane's connection. */
#define N_LANES 4
typedef struct rc_lane {
    pthread_mutex_t mu;
    redisContext *ctx[MAX_NODES];
} rc_lane;

struct ss_rc {
    pthread_mutex_t mu; /* nodes, n_nodes, slot_node, map_stale, st (the lanes have their own) */
    rc_lane lanes[N_LANES];
    atomic_uint next_lane;
    rc_node nodes[MAX_NODES];
    int n_nodes;
    int16_t slot_node[SS_RC_SLOTS];
    int map_stale; /* refresh before the next command */
    char *password;
    int timeout_ms, retry_ms;
    ss_rc_stats st;
};

uint16_t ss_rc_crc16(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++) crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021)
                                                         : (uint16_t)(crc << 1);
    }
    return crc;
}

int ss_rc_key_slot(const void *key, size_t len)
{
    const char *k = key;
    const char *open = memchr(k, '{', len);
    if (open) {
        size_t from = (size_t)(open - k) + 1;
        const char *close = memchr(k + from, '}', len - from);
        if (close && close > k + from) {
            return ss_rc_crc16(k + from, (size_t)(close - (k + from))) & (SS_RC_SLOTS - 1);
        }
    }
    return ss_rc_crc16(k, len) & (SS_RC_SLOTS - 1);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Index of host:port among the nodes, added when new; -1 when the table is full. */
static int node_index(ss_rc *c, const char *host, size_t host_len, int port)
{
    if (host_len == 0 || host_len >= HOST_MAX || port <= 0 || port > 65535) return -1;
    for (int i = 0; i < c->n_nodes; i++) {
        if (c->nodes[i].port == port && strlen(c->nodes[i].host) == host_len &&
            memcmp(c->nodes[i].host, host, host_len) == 0)
            return i;
    }
    if (c->n_nodes == MAX_NODES) return -1;
    rc_node *n = &c->nodes[c->n_nodes];
    memcpy(n->host, host, host_len);
    n->host[host_len] = '\0';
    n->port = port;
    return c->n_nodes++;
}

/* Host and port of node i (entries never change once added). */
static void node_addr(ss_rc *c, int i, char *host, int *port)
{
    pthread_mutex_lock(&c->mu);
    memcpy(host, c->nodes[i].host, HOST_MAX);
    *port = c->nodes[i].port;
    pthread_mutex_unlock(&c->mu);
}

static void node_drop(rc_lane *l, int i)
{
    if (l->ctx[i]) {
        redisFree(l->ctx[i]);
        l->ctx[i] = NULL;
    }
}

static struct timeval tv_ms(int ms)
{
    return (struct timeval){ms / 1000, (ms % 1000) * 1000};
}

/* A connected context to host:port with timeouts and AUTH, or NULL (reason via ss_fail). */
static redisContext *dial(ss_rc *c, const char *host, int port)
{
    redisContext *ctx = redisConnectWithTimeout(host, port, tv_ms(c->timeout_ms));
    if (!ctx || ctx->err) {
        ss_fail(SS_ERR_UNAVAILABLE, "redis %s:%d: %s", host, port, ctx ? ctx->errstr : "no memory");
        if (ctx) redisFree(ctx);
        return NULL;
    }
    redisSetTimeout(ctx, tv_ms(c->timeout_ms));
    if (c->password) {
        const char *argv[2] = {"AUTH", c->password};
        redisReply *r = redisCommandArgv(ctx, 2, argv, NULL);
        int bad = !r || r->type == REDIS_REPLY_ERROR;
        if (bad) {
            ss_fail(SS_ERR_UNAVAILABLE, "redis %s:%d: AUTH failed: %s", host, port,
                    r ? r->str : ctx->errstr);
        }
        if (r) freeReplyObject(r);
        if (bad) {
            redisFree(ctx);
            return NULL;
        }
    }
    return ctx;
}

/* The lane's connection to node i, dialled when there is none (the lane is held). */
static redisContext *node_ctx(ss_rc *c, rc_lane *l, int i)
{
    if (!l->ctx[i]) {
        char host[HOST_MAX];
        int port;
        node_addr(c, i, host, &port);
        l->ctx[i] = dial(c, host, port);
        if (l->ctx[i]) {
            pthread_mutex_lock(&c->mu);
            c->st.reconnects++;
            pthread_mutex_unlock(&c->mu);
        }
    }
    return l->ctx[i];
}

/* Load the slot map from the reply of CLUSTER SLOTS on node `from`. */
static int apply_slots(ss_rc *c, int from, const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements == 0) return -1;
    for (int s = 0; s < SS_RC_SLOTS; s++) c->slot_node[s] = -1;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3) continue;
        const redisReply *m = e->element[2];
        if (e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER || m->type != REDIS_REPLY_ARRAY ||
            m->elements < 2 || m->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        const char *host = m->element[0]->type == REDIS_REPLY_STRING ? m->element[0]->str : "";
        size_t hl = m->element[0]->type == REDIS_REPLY_STRING ? m->element[0]->len : 0;
        if (hl == 0 || (hl == 1 && host[0] == '?')) { /* "unknown endpoint": the node asked */
            host = c->nodes[from].host;
            hl = strlen(host);
        }
        int ni = node_index(c, host, hl, (int)m->element[1]->integer);
        if (ni < 0) continue;
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        for (long long s = lo; s <= hi && s < SS_RC_SLOTS; s++)
            if (s >= 0) c->slot_node[s] = (int16_t)ni;
    }
    c->map_stale = 0;
    c->st.refreshes++;
    return 0;
}

/* Reload the slot map through lane l (held); c->mu is not held. */
static ss_err refresh_lane(ss_rc *c, rc_lane *l)
{
    pthread_mutex_lock(&c->mu);
    int n = c->n_nodes;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < n; i++) {
        redisContext *ctx = node_ctx(c, l, i);
        if (!ctx) continue;
        const char *argv[2] = {"CLUSTER", "SLOTS"};
        redisReply *r = redisCommandArgv(ctx, 2, argv, NULL);
        if (!r) {
            node_drop(l, i);
            continue;
        }
        pthread_mutex_lock(&c->mu);
        int ok = apply_slots(c, i, r) == 0;
        pthread_mutex_unlock(&c->mu);
        freeReplyObject(r);
        if (ok) return SS_OK;
    }
    return ss_fail(SS_ERR_UNAVAILABLE, "redis cluster: no node answered CLUSTER SLOTS (%d known)",
                   n);
}

static rc_lane *lane_take(ss_rc *c)
{
    rc_lane *l = &c->lanes[atomic_fetch_add(&c->next_lane, 1) % N_LANES];
    pthread_mutex_lock(&l->mu);
    return l;
}

ss_err ss_rc_refresh(ss_rc *c)
{
    rc_lane *l = lane_take(c);
    ss_err err = refresh_lane(c, l);
    pthread_mutex_unlock(&l->mu);
    return err;
}

/* "host:port" at p (up to end) into the node table; -1 if malformed. */
static int parse_hostport(ss_rc *c, const char *p, size_t len)
{
    const char *colon = NULL;
    for (size_t i = len; i > 0; i--)
        if (p[i - 1] == ':') {
            colon = p + i - 1;
            break;
        }
    if (!colon || colon == p || colon + 1 == p + len) return -1;
    int port = 0;
    for (const char *q = colon + 1; q < p + len; q++) {
        if (*q < '0' || *q > '9' || port > 65535) return -1;
        port = port * 10 + (*q - '0');
    }
    return node_index(c, p, (size_t)(colon - p), port);
}

/* Parse "redis://[:pass@]host:port[,host:port...]" into the node table and c->password. */
static ss_err parse_url(ss_rc *c, const char *url)
{
    if (strncmp(url, "rediss://", 9) == 0) {
        return ss_fail(SS_ERR_UNSUPPORTED, "--remote %s: TLS (rediss://) is not available: the "
                       "hiredis of Debian 12 (0.14) has no TLS support; reach Redis over a "
                       "private network or a TLS tunnel (stunnel, a service mesh)", url);
    }
    const char *p = url;
    if (strncmp(p, "redis://", 8) == 0) p += 8;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *cred = p;
        const char *colon = memchr(cred, ':', (size_t)(at - cred));
        if (!colon)
            return ss_fail(SS_ERR_INVALID, "--remote %s: credentials must be ':password@'", url);
        /* A user name before the colon is ignored: Redis 7 ACL users are not used here. */
        if (!c->password) c->password = strndup(colon + 1, (size_t)(at - colon - 1));
        if (!c->password) return ss_fail(SS_ERR_NOMEM, "out of memory");
        p = at + 1;
    }
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && p[len - 1] == '/') len--;
        if (parse_hostport(c, p, len) < 0) {
            return ss_fail(SS_ERR_INVALID, "--remote %s: '%.*s' is not host:port", url, (int)len,
                           p);
        }
        p += comma ? (size_t)(comma - p) + 1 : len;
        if (!comma) break;
    }
    if (c->n_nodes == 0) return ss_fail(SS_ERR_INVALID, "--remote %s: no host:port given", url);
    return SS_OK;
}

ss_err ss_rc_open(ss_rc **out, const char *url, const ss_rc_params *params)
{
    if (!out || !url) return ss_fail(SS_ERR_INVALID, "redis cluster: NULL argument");
    ss_rc *c = calloc(1, sizeof *c);
    if (!c) return ss_fail(SS_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&c->mu, NULL);
    for (int i = 0; i < N_LANES; i++) pthread_mutex_init(&c->lanes[i].mu, NULL);
    for (int s = 0; s < SS_RC_SLOTS; s++) c->slot_node[s] = -1;
    c->timeout_ms = params && params->timeout_ms > 0 ? params->timeout_ms : 2000;
    c->retry_ms = params && params->retry_ms > 0 ? params->retry_ms : 5000;
    if (params && params->password && *params->password) {
        c->password = strdup(params->password);
        if (!c->password) {
            ss_rc_close(c);
            return ss_fail(SS_ERR_NOMEM, "out of memory");
        }
    }
    ss_err err = parse_url(c, url);
    if (err) {
        ss_rc_close(c);
        return err;
    }
    if (ss_rc_refresh(c) != SS_OK) c->map_stale = 1; /* not up yet: retried on each command */
    *out = c;
    return SS_OK;
}

void ss_rc_close(ss_rc *c)
{
    if (!c) return;
    for (int k = 0; k < N_LANES; k++) {
        for (int i = 0; i < c->n_nodes; i++) node_drop(&c->lanes[k], i);
        pthread_mutex_destroy(&c->lanes[k].mu);
    }
    free(c->password);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Parse "MOVED 3999 127.0.0.1:6381" / "ASK ...": slot and node index, or -1. */
static int redirect_target(ss_rc *c, const char *msg, int *slot)
{
    const char *sp = strchr(msg, ' ');
    if (!sp) return -1;
    *slot = atoi(sp + 1);
    const char *hp = strchr(sp + 1, ' ');
    if (!hp) return -1;
    hp++;
    return parse_hostport(c, hp, strlen(hp));
}

static int is_transient(const char *msg)
{
    return strncmp(msg, "CLUSTERDOWN", 11) == 0 || strncmp(msg, "TRYAGAIN", 8) == 0 ||
           strncmp(msg, "LOADING", 7) == 0 || strncmp(msg, "MASTERDOWN", 10) == 0;
}

/* Mark the slot map stale: the next command reloads it first. */
static void mark_stale(ss_rc *c)
{
    pthread_mutex_lock(&c->mu);
    c->map_stale = 1;
    pthread_mutex_unlock(&c->mu);
}

/* One pipelined round trip on ctx (its lane held): ASKING first when asking, the command, then
 * WAIT wait_replicas wait_ms when wait_replicas > 0. The command's reply in *r, WAIT's in *w
 * (NULL without WAIT), both the caller's to free. 0, or nonzero when the connection failed: then
 * *r and *w are NULL and ctx->errstr may say why. */
static int round_trip(ss_rc *c, redisContext *ctx, int asking, int argc, const char **argv,
                      const size_t *lens, int wait_replicas, int wait_ms, redisReply **r,
                      redisReply **w)
{
    char wait_n[24], wait_t[24];
    snprintf(wait_n, sizeof wait_n, "%d", wait_replicas);
    snprintf(wait_t, sizeof wait_t, "%d", wait_ms);
    const char *wargv[3] = {"WAIT", wait_n, wait_t};
    redisReply *ar = NULL;
    int ok = 1;
    *r = *w = NULL;
    /* WAIT may block for wait_ms itself: the socket must not time out before it does. */
    if (wait_replicas > 0) redisSetTimeout(ctx, tv_ms(c->timeout_ms + wait_ms));
    if (asking) {
        const char *a[1] = {"ASKING"};
        ok = redisAppendCommandArgv(ctx, 1, a, NULL) == REDIS_OK;
    }
    ok = ok && redisAppendCommandArgv(ctx, argc, argv, lens) == REDIS_OK;
    if (ok && wait_replicas > 0) ok = redisAppendCommandArgv(ctx, 3, wargv, NULL) == REDIS_OK;
    if (ok && asking) ok = redisGetReply(ctx, (void **)&ar) == REDIS_OK;
    if (ok) ok = redisGetReply(ctx, (void **)r) == REDIS_OK;
    if (ok && wait_replicas > 0) ok = redisGetReply(ctx, (void **)w) == REDIS_OK;
    if (ar) freeReplyObject(ar);
    if (ok && wait_replicas > 0) redisSetTimeout(ctx, tv_ms(c->timeout_ms));
    if (ok) return 0;
    if (*r) freeReplyObject(*r);
    if (*w) freeReplyObject(*w);
    *r = *w = NULL;
    return 1;
}

/* Whether reply r of a command on `slot` asks for another try: MOVED (the slot map learns the
 * new owner), ASK (*ask_node: the node to ask, once) or a transient error such as CLUSTERDOWN
 * (the map is reloaded). The reason goes to last (cap bytes). 0: r is the answer. */
static int redirected(ss_rc *c, const redisReply *r, int slot, int *ask_node, char *last,
                      size_t cap)
{
    if (r->type != REDIS_REPLY_ERROR) return 0;
    int s2 = -1, redirect = strncmp(r->str, "MOVED ", 6) == 0 ? 1
                            : strncmp(r->str, "ASK ", 4) == 0 ? 2 : 0;
    if (!redirect && !is_transient(r->str)) return 0;
    snprintf(last, cap, "%s", r->str);
    pthread_mutex_lock(&c->mu);
    if (redirect == 1) {
        int to = redirect_target(c, r->str, &s2);
        if (to >= 0 && s2 >= 0 && s2 < SS_RC_SLOTS) c->slot_node[s2] = (int16_t)to;
        if (to >= 0) c->slot_node[slot] = (int16_t)to;
        else c->map_stale = 1;
        c->st.moved++;
    } else if (redirect == 2) {
        *ask_node = redirect_target(c, r->str, &s2);
        c->st.ask++;
    } else {
        c->map_stale = 1;
    }
    pthread_mutex_unlock(&c->mu);
    return 1;
}

redisReply *ss_rc_command(ss_rc *c, int key_arg, int argc, const char **argv, const size_t *lens,
                          int wait_replicas, int wait_ms, long long *acked)
{
    int slot = ss_rc_key_slot(argv[key_arg], lens[key_arg]);
    int64_t deadline = mono_ms() + c->retry_ms;
    int ask_node = -1, attempt = 0;
    char last[300] = "no node tried";

    rc_lane *l = lane_take(c);
    for (;; attempt++) {
        if (attempt > 0) {
            if (mono_ms() >= deadline) break;
            sleep_ms(attempt < 4 ? 20 * attempt : 100);
        }
        pthread_mutex_lock(&c->mu);
        int stale = c->map_stale, n_nodes = c->n_nodes;
        pthread_mutex_unlock(&c->mu);
        if (stale && ask_node < 0 && refresh_lane(c, l) != SS_OK) {
            snprintf(last, sizeof last, "%s", ss_errmsg());
            continue;
        }
        pthread_mutex_lock(&c->mu);
        int ni = ask_node >= 0 ? ask_node : c->slot_node[slot];
        pthread_mutex_unlock(&c->mu);
        if (ni < 0) ni = attempt % n_nodes; /* unknown slot: any node redirects us */
        redisContext *ctx = node_ctx(c, l, ni);
        if (!ctx) {
            snprintf(last, sizeof last, "%s", ss_errmsg());
            mark_stale(c);
            ask_node = -1;
            continue;
        }
        int asking = ask_node >= 0;
        ask_node = -1;
        redisReply *r, *w;
        if (round_trip(c, ctx, asking, argc, argv, lens, wait_replicas, wait_ms, &r, &w)) {
            char host[HOST_MAX];
            int port;
            node_addr(c, ni, host, &port);
            snprintf(last, sizeof last, "%.120s:%d: %.100s", host, port,
                     ctx->errstr[0] ? ctx->errstr : "connection lost");
            node_drop(l, ni);
            mark_stale(c);
            continue;
        }
        if (redirected(c, r, slot, &ask_node, last, sizeof last)) {
            freeReplyObject(r);
            if (w) freeReplyObject(w);
            continue;
        }
        if (acked) *acked = w && w->type == REDIS_REPLY_INTEGER ? w->integer : 0;
        if (w) freeReplyObject(w);
        pthread_mutex_unlock(&l->mu);
        return r;
    }
    pthread_mutex_unlock(&l->mu);
    pthread_mutex_lock(&c->mu);
    c->st.failures++;
    pthread_mutex_unlock(&c->mu);
    ss_fail(SS_ERR_UNAVAILABLE, "redis cluster unavailable (%d ms of retries): %s", c->retry_ms,
            last);
    return NULL;
}

redisContext *ss_rc_connect_any(ss_rc *c)
{
    pthread_mutex_lock(&c->mu);
    int n = c->n_nodes;
    rc_node nodes[MAX_NODES];
    memcpy(nodes, c->nodes, sizeof(rc_node) * (size_t)n);
    pthread_mutex_unlock(&c->mu);
    static _Atomic unsigned rr;
    unsigned start = rr++;
    for (int k = 0; k < n; k++) {
        int i = (int)((start + (unsigned)k) % (unsigned)n);
        redisContext *ctx = dial(c, nodes[i].host, nodes[i].port);
        if (ctx) return ctx;
    }
    ss_fail(SS_ERR_UNAVAILABLE, "redis cluster: none of %d nodes accepts a connection", n);
    return NULL;
}

void ss_rc_get_stats(ss_rc *c, ss_rc_stats *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    pthread_mutex_unlock(&c->mu);
}
