/*
 * test_redis.c - the Redis Cluster client (store/redis_cluster.c) and the shared tier
 * (store/remote.c).
 *
 * Without a cluster: CRC16/XMODEM against its published check value and key slots against the
 * values the Redis Cluster specification gives, hash tags, URL parsing.
 * With SS_REDIS_PORTS="p1 p2 ..." (a real cluster on 127.0.0.1, started by
 * tests/redis_cluster.sh): ASK and MOVED redirects during a real slot migration, then two stores
 * sharing the catalog: put on one, read/merge/list on the other (compared with the bytes put and
 * with a merge computed here), names unique, deletes seen by the other replica through pub/sub,
 * large blobs in pieces over several slots, and the LRU bound of the local cache.
 */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "redis_cluster.h"
#include "ss_store.h"
#include "test_util.h"

#define MIB ((size_t)1 << 20)

static void test_vectors(void)
{
    /* The CRC-16/XMODEM check value; the Redis Cluster spec's own example keys. */
    CHECK(ss_rc_crc16("123456789", 9) == 0x31C3);
    CHECK(ss_rc_crc16("", 0) == 0);
    CHECK(ss_rc_key_slot("foo", 3) == 12182);
    CHECK(ss_rc_key_slot("bar", 3) == 5061);
    CHECK(ss_rc_key_slot("hello", 5) == 866);
    CHECK(ss_rc_key_slot("123456789", 9) == (0x31C3 & 16383));
    /* Hash tags: the first {...} with something inside; "{}" does not count. */
    CHECK(ss_rc_key_slot("{user1000}.following", 20) == ss_rc_key_slot("user1000", 8));
    CHECK(ss_rc_key_slot("{user1000}.followers", 20) == ss_rc_key_slot("user1000", 8));
    CHECK(ss_rc_key_slot("foo{}{bar}", 10) == ss_rc_key_slot("foo{}{bar}", 10));
    CHECK(ss_rc_key_slot("foo{}{bar}", 10) == (ss_rc_crc16("foo{}{bar}", 10) & 16383));
    CHECK(ss_rc_key_slot("foo{{bar}}zap", 13) == ss_rc_key_slot("{bar", 4));
    CHECK(ss_rc_key_slot("foo{bar}{zap}", 13) == ss_rc_key_slot("bar", 3));

    ss_rc *c = NULL;
    ss_rc_params p = {.timeout_ms = 100, .retry_ms = 100};
    CHECK_ERR(ss_rc_open(&c, "rediss://127.0.0.1:1", &p), SS_ERR_UNSUPPORTED);
    CHECK_ERR(ss_rc_open(&c, "redis://", &p), SS_ERR_INVALID);
    CHECK_ERR(ss_rc_open(&c, "redis://host", &p), SS_ERR_INVALID);
    CHECK_ERR(ss_rc_open(&c, "redis://h:99999", &p), SS_ERR_INVALID);
    CHECK_ERR(ss_rc_open(&c, "redis://user@h:1", &p), SS_ERR_INVALID);
    CHECK(c == NULL);
    /* Nothing listens on port 1: the client opens (degraded) and commands fail in time. */
    CHECK_OK(ss_rc_open(&c, "redis://:secret@127.0.0.1:1,127.0.0.1:2", &p));
    const char *argv[2] = {"GET", "k"};
    size_t lens[2] = {3, 1};
    CHECK(ss_rc_command(c, 1, 2, argv, lens, 0, 0, NULL) == NULL);
    ss_rc_close(c);
}

/* ---- against the cluster --------------------------------------------------------------------- */

static int ports[16], n_ports;

static redisContext *node(int port)
{
    redisContext *ctx = redisConnect("127.0.0.1", port);
    if (!ctx || ctx->err) {
        fprintf(stderr, "cannot connect to 127.0.0.1:%d\n", port);
        exit(1);
    }
    return ctx;
}

static redisReply *admin(redisContext *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(ctx, fmt, ap);
    va_end(ap);
    if (!r) {
        fprintf(stderr, "admin command failed: %s\n", ctx->errstr);
        exit(1);
    }
    return r;
}

/* The port of the primary serving `slot`, and that node's id (out, 41 bytes). */
static int owner(int slot, char *id)
{
    redisContext *ctx = node(ports[0]);
    redisReply *r = admin(ctx, "CLUSTER SLOTS");
    int port = -1;
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (slot >= e->element[0]->integer && slot <= e->element[1]->integer) {
            port = (int)e->element[2]->element[1]->integer;
            snprintf(id, 41, "%s", e->element[2]->element[2]->str);
        }
    }
    freeReplyObject(r);
    redisFree(ctx);
    return port;
}

static char *seeds_of(int first_only)
{
    static char buf[512];
    size_t n = (size_t)snprintf(buf, sizeof buf, "redis://");
    for (int i = 0; i < (first_only ? 1 : n_ports); i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s127.0.0.1:%d", i ? "," : "", ports[i]);
    return buf;
}

static redisReply *run(ss_rc *c, const char *a0, const char *a1, const char *a2)
{
    const char *argv[3] = {a0, a1, a2};
    size_t lens[3] = {strlen(a0), strlen(a1), a2 ? strlen(a2) : 0};
    return ss_rc_command(c, 1, a2 ? 3 : 2, argv, lens, 0, 0, NULL);
}

/* ASK while a slot migrates, MOVED once it has moved: the client follows both. */
static void test_redirects(void)
{
    ss_rc *c = NULL;
    REQUIRE_OK(ss_rc_open(&c, seeds_of(1), NULL));
    const char *key = "{ssredirect}old", *key2 = "{ssredirect}new";
    int slot = ss_rc_key_slot(key, strlen(key));
    redisReply *r = run(c, "SET", key, "v1");
    CHECK(r && r->type == REDIS_REPLY_STATUS);
    if (r) freeReplyObject(r);

    char src_id[41], dst_id[41] = "";
    int src = owner(slot, src_id), dst = -1;
    /* Another primary: the owner of a slot far away. */
    for (int s = 0; s < 16384 && dst < 0; s += 1000) {
        char id[41];
        int p = owner(s, id);
        if (p != src) {
            dst = p;
            memcpy(dst_id, id, 41);
        }
    }
    CHECK(src > 0 && dst > 0);
    if (src <= 0 || dst <= 0) return;
    redisContext *S = node(src), *D = node(dst);
    freeReplyObject(admin(D, "CLUSTER SETSLOT %d IMPORTING %s", slot, src_id));
    freeReplyObject(admin(S, "CLUSTER SETSLOT %d MIGRATING %s", slot, dst_id));

    ss_rc_stats st0, st1;
    ss_rc_get_stats(c, &st0);
    /* A key the source does not have goes to the target: ASK. */
    r = run(c, "SET", key2, "v2");
    CHECK(r && r->type == REDIS_REPLY_STATUS);
    if (r) freeReplyObject(r);
    /* A key the source still has is served there. */
    r = run(c, "GET", key, NULL);
    CHECK(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "v1") == 0);
    if (r) freeReplyObject(r);
    ss_rc_get_stats(c, &st1);
    CHECK(st1.ask == st0.ask + 1);

    /* Finish the migration: move the old key, give the slot to the target everywhere. */
    freeReplyObject(admin(S, "MIGRATE 127.0.0.1 %d %s 0 5000", dst, key));
    for (int i = 0; i < n_ports; i++) {
        redisContext *n = node(ports[i]);
        freeReplyObject(admin(n, "CLUSTER SETSLOT %d NODE %s", slot, dst_id));
        redisFree(n);
    }
    /* The client's map still says src: MOVED, then the right node. */
    r = run(c, "GET", key, NULL);
    CHECK(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "v1") == 0);
    if (r) freeReplyObject(r);
    r = run(c, "GET", key2, NULL);
    CHECK(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "v2") == 0);
    if (r) freeReplyObject(r);
    ss_rc_get_stats(c, &st0);
    CHECK(st0.moved >= st1.moved + 1);

    /* And back, so the cluster is as it was for the next tests. */
    freeReplyObject(admin(S, "CLUSTER SETSLOT %d IMPORTING %s", slot, dst_id));
    freeReplyObject(admin(D, "CLUSTER SETSLOT %d MIGRATING %s", slot, src_id));
    freeReplyObject(admin(D, "MIGRATE 127.0.0.1 %d \"\" 0 5000 KEYS %s %s", src, key, key2));
    for (int i = 0; i < n_ports; i++) {
        redisContext *n = node(ports[i]);
        freeReplyObject(admin(n, "CLUSTER SETSLOT %d NODE %s", slot, src_id));
        redisFree(n);
    }
    r = run(c, "DEL", key, NULL);
    if (r) freeReplyObject(r);
    r = run(c, "DEL", key2, NULL);
    if (r) freeReplyObject(r);
    redisFree(S);
    redisFree(D);
    ss_rc_close(c);
}

static void fill(float *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (float)((int)(x % 2001) - 1000) / 1000.0f;
    }
}

static ss_store *open_replica(const char *dir, const char *prefix, size_t cache_max)
{
    ss_store_params p = ss_store_default_params();
    p.remote = seeds_of(0);
    p.remote_prefix = prefix;
    p.cache_max_bytes = cache_max;
    ss_store *s = NULL;
    REQUIRE_OK(ss_store_open(&s, dir, &p));
    return s;
}

static char *put(ss_store *s, const char *name, const float *blob, size_t bytes, ss_err want)
{
    char rec[256];
    if (name)
        snprintf(rec, sizeof rec,
                 "{\"name\":\"%s\",\"tags\":[\"t\"],\"model\":\"m1\",\"n_tokens\":3,"
                 "\"dtype\":\"F32\"}", name);
    else
        snprintf(rec, sizeof rec, "{\"model\":\"m1\",\"n_tokens\":3,\"dtype\":\"F32\"}");
    char *out = NULL;
    ss_err err = ss_store_put(s, rec, blob, bytes, &out);
    CHECKF(err == want, "put %s: %s (%s)", name ? name : "-", ss_strerror(err), ss_errmsg());
    return out;
}

/* Wait up to 3 s for `ref` to disappear from s's cache-backed reads. */
static int gone_within(ss_store *s, const char *ref)
{
    for (int i = 0; i < 60; i++) {
        char *r = NULL;
        if (ss_store_get_record(s, ref, &r) == SS_ERR_NOT_FOUND) return 1;
        free(r);
        usleep(50000);
    }
    return 0;
}

typedef struct put_job {
    ss_store *s;
    int t, ok;
} put_job;

/* One thread's saves: names conc/<t>/<i>, blobs seeded from them. */
static void *put_thread(void *arg)
{
    put_job *j = arg;
    float blob[1024];
    for (int i = 0; i < 8; i++) {
        char rec[160];
        fill(blob, 1024, (uint32_t)(100 + j->t * 8 + i));
        snprintf(rec, sizeof rec,
                 "{\"name\":\"conc/%d/%d\",\"model\":\"m1\",\"n_tokens\":1,\"dtype\":\"F32\"}",
                 j->t, i);
        if (ss_store_put(j->s, rec, blob, sizeof blob, NULL) == SS_OK) j->ok++;
    }
    return NULL;
}

/* Several threads of one replica save at once (the client's lanes); the other reads them all. */
static void test_concurrent(ss_store *a, ss_store *b)
{
    pthread_t th[4];
    put_job jobs[4];
    for (int t = 0; t < 4; t++) {
        jobs[t] = (put_job){a, t, 0};
        pthread_create(&th[t], NULL, put_thread, &jobs[t]);
    }
    for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < 4; t++) CHECK(jobs[t].ok == 8);
    char *page = NULL;
    CHECK_OK(ss_store_list(b, NULL, "conc/", 100, NULL, &page));
    int n = 0;
    for (const char *p = page; p && (p = strstr(p, "\"name\":\"conc/")); p++) n++;
    CHECK(n == 32);
    free(page);
    float got[1024], want[1024];
    for (int t = 0; t < 4; t++) {
        for (int i = 0; i < 8; i++) {
            char name[32];
            size_t len = 0;
            snprintf(name, sizeof name, "conc/%d/%d", t, i);
            fill(want, 1024, (uint32_t)(100 + t * 8 + i));
            CHECK_OK(ss_store_get_blob(b, name, "m1", got, sizeof got, &len, NULL));
            CHECK(len == sizeof want && memcmp(got, want, sizeof want) == 0);
        }
    }
}

/* A writer that died between its pieces and its record leaves pending pieces: the janitor of any
 * replica removes them once their deadline has passed, and leaves a committed state's alone. */
static void test_orphans(void)
{
    char prefix[64], dir[512], key[160], pending[160];
    snprintf(prefix, sizeof prefix, "orph%ld", (long)getpid());
    snprintf(pending, sizeof pending, "{%s}:pending", prefix);
    const char *orphan = "st_0123456789abcdef0123456789abcdef";
    ss_rc *c = NULL;
    REQUIRE_OK(ss_rc_open(&c, seeds_of(0), NULL));
    for (int k = 0; k < 2; k++) {
        snprintf(key, sizeof key, "%s:blob:{%s:%d}", prefix, orphan, k);
        redisReply *r = run(c, "SET", key, "piece");
        CHECK(r && r->type == REDIS_REPLY_STATUS);
        if (r) freeReplyObject(r);
    }
    char member[64];
    snprintf(member, sizeof member, "%s:2", orphan);
    const char *zv[4] = {"ZADD", pending, "1", member};
    size_t zl[4] = {4, strlen(pending), 1, strlen(member)};
    redisReply *r = ss_rc_command(c, 1, 4, zv, zl, 0, 0, NULL);
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    if (r) freeReplyObject(r);

    test_tmpdir(dir, sizeof dir, "redis_janitor");
    ss_store *s = open_replica(dir, prefix, 0);
    float x[256];
    fill(x, 256, 7);
    free(put(s, "kept", x, sizeof x, SS_OK));
    int gone = 0;
    for (int i = 0; i < 60 && !gone; i++) {
        usleep(50000);
        snprintf(key, sizeof key, "%s:blob:{%s:1}", prefix, orphan);
        redisReply *e = run(c, "EXISTS", key, NULL);
        redisReply *z = run(c, "ZCARD", pending, NULL);
        gone = e && z && e->integer == 0 && z->integer == 0;
        if (e) freeReplyObject(e);
        if (z) freeReplyObject(z);
    }
    CHECK(gone);
    size_t len = 0;
    float got[256];
    CHECK_OK(ss_store_get_blob(s, "kept", "m1", got, sizeof got, &len, NULL));
    CHECK(len == sizeof x && memcmp(got, x, sizeof x) == 0);
    ss_store_close(s);
    ss_rc_close(c);
    test_rm_rf(dir);
}

static void test_shared(void)
{
    char d1[512], d2[512], prefix[64];
    test_tmpdir(d1, sizeof d1, "redis_a");
    test_tmpdir(d2, sizeof d2, "redis_b");
    snprintf(prefix, sizeof prefix, "t%ld", (long)getpid());

    /* A folder with a catalog of its own is not taken as a cache (it would be emptied). */
    {
        ss_store *own = NULL;
        float one[4] = {1, 2, 3, 4};
        REQUIRE_OK(ss_store_open(&own, d1, NULL));
        free(put(own, "mine", one, sizeof one, SS_OK));
        ss_store_close(own);
        ss_store_params p = ss_store_default_params();
        p.remote = seeds_of(0);
        p.remote_prefix = prefix;
        CHECK_ERR(ss_store_open(&own, d1, &p), SS_ERR_INVALID);
        CHECK(strstr(ss_errmsg(), "statesoup migrate") != NULL);
        test_rm_rf(d1);
    }
    ss_store *a = open_replica(d1, prefix, 0);
    {
        ss_store_params p = ss_store_default_params(); /* nor a cache of another namespace */
        p.remote = seeds_of(0);
        p.remote_prefix = "another";
        ss_store *other = NULL;
        ss_store_close(a);
        CHECK_ERR(ss_store_open(&other, d1, &p), SS_ERR_INVALID);
        a = open_replica(d1, prefix, 0);
    }
    ss_store *b = open_replica(d2, prefix, 0);

    enum { N = 4096 };
    static float x[N], y[N], got[N], want[N];
    fill(x, N, 1);
    fill(y, N, 2);
    char *rx = put(a, "soup/x", x, sizeof x, SS_OK);
    char *ry = put(a, "soup/y", y, sizeof y, SS_OK);
    put(b, "soup/x", y, sizeof y, SS_ERR_EXISTS); /* names are unique across replicas */
    char *unnamed = put(a, NULL, x, sizeof x, SS_OK);
    CHECK(unnamed != NULL);
    free(unnamed);

    /* Read on the other replica: record identical, bytes identical (a remote miss). */
    char *r2 = NULL;
    CHECK_OK(ss_store_get_record(b, "soup/x", &r2));
    CHECK(rx && r2 && strcmp(rx, r2) == 0);
    free(r2);
    size_t len = 0;
    CHECK_OK(ss_store_get_blob(b, "soup/y", "m1", got, sizeof got, &len, NULL));
    CHECK(len == sizeof y && memcmp(got, y, sizeof y) == 0);
    ss_store_stats st;
    CHECK_OK(ss_store_get_stats(b, &st));
    CHECK(st.remote == 1 && st.remote_up == 1 && st.n_states == 3 && st.cache_misses == 1);
    CHECK(st.blob_bytes == 3 * sizeof x);

    /* Merge on b, compared with the merge computed here. */
    const char *refs[2] = {"soup/x", "soup/y"};
    double w[2] = {0.25, -1.5};
    const float *src[2] = {x, y};
    test_merge(want, src, w, 2, N);
    ss_store_source srcs[2];
    CHECK_OK(ss_store_merge_f32(b, refs, w, 2, "m1", got, sizeof got, 1, srcs));
    CHECK(memcmp(got, want, sizeof want) == 0);
    CHECK(strstr(rx, srcs[0].id) != NULL);

    /* Listing on b: newest first, paged with a cursor, filtered by prefix and tag. */
    char *page = NULL;
    CHECK_OK(ss_store_list(b, NULL, "soup/", 1, NULL, &page));
    CHECK(page && strstr(page, "\"name\":\"soup/y\"") && strstr(page, "\"next_cursor\":\""));
    char cursor[128] = "";
    const char *nc = page ? strstr(page, "\"next_cursor\":\"") : NULL;
    if (nc) sscanf(nc + 15, "%127[0-9a-f]", cursor);
    free(page);
    page = NULL;
    CHECK_OK(ss_store_list(b, "t", NULL, 10, cursor, &page));
    CHECK(page && strstr(page, "\"name\":\"soup/x\"") && !strstr(page, "soup/y") &&
          strstr(page, "\"next_cursor\":null"));
    free(page);
    page = NULL;
    CHECK_ERR(ss_store_list(b, NULL, NULL, 10, "zz", &page), SS_ERR_INVALID);

    /* A delete on a is seen by b (its cached copy of soup/y too). */
    CHECK_OK(ss_store_delete(a, "soup/y"));
    CHECK(gone_within(b, "soup/y"));
    CHECK_ERR(ss_store_get_blob(b, "soup/y", "m1", got, sizeof got, &len, NULL), SS_ERR_NOT_FOUND);
    CHECK_ERR(ss_store_delete(b, "soup/y"), SS_ERR_NOT_FOUND);
    /* The name is free again, on any replica. */
    free(put(b, "soup/y", x, sizeof x, SS_OK));

    /* A large state: pieces of 1 MiB, read back on the other replica byte for byte. */
    size_t big_n = (3 * MIB + 4096) / sizeof(float);
    float *big = malloc(big_n * sizeof(float)), *back = malloc(big_n * sizeof(float));
    fill(big, big_n, 3);
    free(put(a, "big", big, big_n * sizeof(float), SS_OK));
    CHECK_OK(ss_store_get_blob(b, "big", NULL, back, big_n * sizeof(float), &len, NULL));
    CHECK(len == big_n * sizeof(float) && memcmp(big, back, len) == 0);
    free(big);
    free(back);

    test_concurrent(a, b);

    free(rx);
    free(ry);
    ss_store_close(a);
    ss_store_close(b);

    /* A small cache: b keeps at most ~2 states of 16 KiB locally, yet reads all of them. */
    test_rm_rf(d2);
    b = open_replica(d2, prefix, 40000);
    a = open_replica(d1, prefix, 0);
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "lru/%d", i);
        fill(x, N, 10 + (uint32_t)i);
        free(put(a, name, x, sizeof x, SS_OK));
    }
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 5; i++) {
            char name[32];
            snprintf(name, sizeof name, "lru/%d", i);
            fill(want, N, 10 + (uint32_t)i);
            CHECK_OK(ss_store_get_blob(b, name, "m1", got, sizeof got, &len, NULL));
            CHECK(memcmp(got, want, sizeof want) == 0);
        }
    }
    CHECK_OK(ss_store_get_stats(b, &st));
    CHECK(st.cache_bytes <= 40000 && st.cache_evictions >= 8);
    ss_store_close(a);
    ss_store_close(b);
    test_rm_rf(d1);
    test_rm_rf(d2);
}

/* The id of a record text (36 bytes out): records start {"id":"st_...". */
static void id_of(const char *text, char *id)
{
    const char *p = text ? strstr(text, "\"id\":\"") : NULL;
    snprintf(id, 36, "%.35s", p ? p + 6 : "");
}

/* ss_store_tenant_stats into a small table: states and bytes of up to 8 tenants. */
typedef struct tenant_rows {
    char name[8][72];
    uint64_t n[8], b[8];
    int k;
} tenant_rows;

static void tenant_row(void *user, const char *tenant, uint64_t n, uint64_t b)
{
    tenant_rows *t = user;
    if (t->k == 8) return;
    snprintf(t->name[t->k], sizeof t->name[t->k], "%s", tenant);
    t->n[t->k] = n;
    t->b[t->k++] = b;
}

/* The states and bytes of `tenant` in s's catalog (both 0 when it holds none). */
static void tenant_totals(ss_store *s, const char *tenant, uint64_t *n, uint64_t *b)
{
    tenant_rows t = {.k = 0};
    *n = *b = 0;
    CHECK_OK(ss_store_tenant_stats(s, tenant_row, &t));
    for (int i = 0; i < t.k; i++)
        if (!strcmp(t.name[i], tenant)) {
            *n = t.n[i];
            *b = t.b[i];
        }
}

/* Tenants on the shared tier: names per tenant in Redis, other tenants' states answer as missing
 * on every replica, listings filtered in the script, share/unshare seen by the other replica,
 * delete rights; migrate's copy (put_copy) keeps tenant and shared. */
static void test_tenants_remote(void)
{
    char d1[512], d2[512], d3[512], prefix[64];
    test_tmpdir(d1, sizeof d1, "redis_ta");
    test_tmpdir(d2, sizeof d2, "redis_tb");
    test_tmpdir(d3, sizeof d3, "redis_tc");
    snprintf(prefix, sizeof prefix, "tn%ld", (long)getpid());
    ss_store *a = open_replica(d1, prefix, 0), *b = open_replica(d2, prefix, 0);
    const ss_store_scope alice = {.tenant = "alice"}, bob = {.tenant = "bob"},
                         def = {.tenant = NULL}, admin = {.tenant = "ops", .admin = 1};
    enum { N = 1024 };
    static float x[N], y[N], z[N], got[N], want[N];
    fill(x, N, 21);
    fill(y, N, 22);
    fill(z, N, 23);
    const char *rec = "{\"name\":\"x\",\"tags\":[\"t\"],\"model\":\"m1\",\"n_tokens\":3,"
                      "\"dtype\":\"F32\"}";
    char *ra = NULL, *rb = NULL, *rd = NULL, ax[36], bx[36], dx[36];
    CHECK_OK(ss_store_put_as(a, &alice, rec, x, sizeof x, NULL, &ra));
    CHECK_OK(ss_store_put_as(b, &bob, rec, y, sizeof y, NULL, &rb));
    CHECK_OK(ss_store_put_as(b, &def, rec, z, sizeof z, NULL, &rd));
    CHECK_ERR(ss_store_put_as(b, &alice, rec, z, sizeof z, NULL, NULL), SS_ERR_EXISTS);
    id_of(ra, ax);
    id_of(rb, bx);
    id_of(rd, dx);
    CHECK(ra && strstr(ra, "\"tenant\":\"alice\""));
    /* per-tenant totals of the shared catalog, the same on both replicas; counted again from
     * the records when the mark is gone (an older catalog, or an operator's recount) */
    uint64_t tn, tb;
    for (int rep = 0; rep < 2; rep++) {
        ss_store *on = rep ? b : a;
        tenant_totals(on, "alice", &tn, &tb);
        CHECK(tn == 1 && tb == sizeof x);
        tenant_totals(on, "bob", &tn, &tb);
        CHECK(tn == 1 && tb == sizeof y);
        tenant_totals(on, "", &tn, &tb);
        CHECK(tn == 1 && tb == sizeof z);
    }
    {
        char meta[160];
        snprintf(meta, sizeof meta, "{%s}:meta", prefix);
        ss_rc *c = NULL;
        REQUIRE_OK(ss_rc_open(&c, seeds_of(0), NULL));
        const char *hv[6] = {"HSET", meta, "tn:alice", "99", "tn:carol", "5"};
        size_t hl[6] = {4, strlen(meta), 8, 2, 8, 1};
        redisReply *r = ss_rc_command(c, 1, 6, hv, hl, 0, 0, NULL);
        CHECK(r && r->type == REDIS_REPLY_INTEGER);
        if (r) freeReplyObject(r);
        r = run(c, "HDEL", meta, "tenants");
        CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
        if (r) freeReplyObject(r);
        ss_rc_close(c);
    }
    tenant_totals(b, "alice", &tn, &tb);
    CHECK(tn == 1 && tb == sizeof x);
    tenant_totals(b, "carol", &tn, &tb);
    CHECK(tn == 0);
    /* each tenant's "x" on the other replica */
    char *t = NULL;
    CHECK_OK(ss_store_get_record_as(b, &alice, "x", &t));
    CHECK(t && ra && !strcmp(t, ra));
    free(t);
    t = NULL;
    size_t len = 0;
    CHECK_OK(ss_store_get_blob_as(a, &bob, "x", "m1", got, sizeof got, &len, NULL));
    CHECK(len == sizeof y && !memcmp(got, y, sizeof y));
    CHECK_OK(ss_store_get_blob_as(a, &def, "x", "m1", got, sizeof got, &len, NULL));
    CHECK(!memcmp(got, z, sizeof z));
    /* bob cannot reach alice's by id: get, blob (also once it is cached on b), merge, delete */
    CHECK_ERR(ss_store_get_record_as(a, &bob, ax, &t), SS_ERR_NOT_FOUND);
    CHECK_OK(ss_store_get_blob_as(b, &alice, ax, "m1", got, sizeof got, &len, NULL)); /* cached */
    CHECK_ERR(ss_store_get_blob_as(b, &bob, ax, "m1", got, sizeof got, &len, NULL),
              SS_ERR_NOT_FOUND);
    const char *refs[2] = {"x", ax};
    double w[2] = {0.5, 0.5};
    CHECK_ERR(ss_store_merge_f32_as(b, &bob, refs, w, 2, "m1", got, sizeof got, 1, NULL),
              SS_ERR_NOT_FOUND);
    CHECK_ERR(ss_store_delete_as(b, &bob, ax), SS_ERR_NOT_FOUND);
    CHECK_OK(ss_store_get_record_as(a, &alice, ax, &t)); /* still there */
    free(t);
    t = NULL;
    /* listings: own only (with the tag filter too); unscoped: all three */
    char *page = NULL;
    CHECK_OK(ss_store_list_as(a, &bob, NULL, NULL, 100, NULL, &page));
    CHECK(page && strstr(page, bx) && !strstr(page, ax) && !strstr(page, dx));
    free(page);
    page = NULL;
    CHECK_OK(ss_store_list_as(b, &def, "t", "x", 100, NULL, &page));
    CHECK(page && strstr(page, dx) && !strstr(page, ax) && !strstr(page, bx));
    free(page);
    page = NULL;
    CHECK_OK(ss_store_list(a, NULL, NULL, 100, NULL, &page));
    CHECK(page && strstr(page, ax) && strstr(page, bx) && strstr(page, dx));
    free(page);
    page = NULL;
    /* share on a (admin only): bob reads and merges it on b, cannot delete it */
    CHECK_ERR(ss_store_share_as(a, &alice, ax, 1, NULL), SS_ERR_PERM);
    CHECK_OK(ss_store_share_as(a, &admin, ax, 1, &t));
    CHECK(t && strstr(t, "\"shared\":true"));
    free(t);
    t = NULL;
    CHECK_OK(ss_store_get_record_as(b, &bob, ax, &t));
    CHECK(t && strstr(t, "\"shared\":true"));
    free(t);
    t = NULL;
    const float *src[2] = {y, x};
    test_merge(want, src, w, 2, N);
    CHECK_OK(ss_store_merge_f32_as(b, &bob, refs, w, 2, "m1", got, sizeof got, 1, NULL));
    CHECK(!memcmp(got, want, sizeof want));
    CHECK_OK(ss_store_list_as(b, &bob, NULL, NULL, 100, NULL, &page));
    CHECK(page && strstr(page, ax) && strstr(page, bx) && !strstr(page, dx));
    free(page);
    page = NULL;
    CHECK_ERR(ss_store_delete_as(b, &bob, ax), SS_ERR_PERM);
    /* migrate-style copy into a local catalog keeps tenant and shared */
    {
        ss_store *loc = NULL;
        char *r0 = NULL;
        REQUIRE_OK(ss_store_open(&loc, d3, NULL));
        CHECK_OK(ss_store_get_blob(a, ax, NULL, got, sizeof got, &len, &r0));
        CHECK_OK(ss_store_put_copy(loc, r0, got, len));
        char *r1 = NULL;
        CHECK_OK(ss_store_get_record_as(loc, &alice, "x", &r1));
        CHECK(r0 && r1 && !strcmp(r0, r1));
        free(r0);
        free(r1);
        ss_store_close(loc);
    }
    /* unshare: gone for bob again, on both replicas */
    CHECK_OK(ss_store_share_as(b, &admin, ax, 0, NULL));
    CHECK_ERR(ss_store_get_blob_as(b, &bob, ax, "m1", got, sizeof got, &len, NULL),
              SS_ERR_NOT_FOUND);
    CHECK_ERR(ss_store_get_record_as(a, &bob, ax, &t), SS_ERR_NOT_FOUND);
    /* owners delete their own; the names are free again */
    CHECK_OK(ss_store_delete_as(b, &alice, "x"));
    CHECK_OK(ss_store_delete_as(a, &bob, "x"));
    CHECK_OK(ss_store_delete_as(a, &admin, dx));
    CHECK_OK(ss_store_put_as(a, &alice, rec, x, sizeof x, NULL, NULL));
    tenant_totals(b, "alice", &tn, &tb);
    CHECK(tn == 1 && tb == sizeof x);
    CHECK_OK(ss_store_delete_as(a, &alice, "x"));
    tenant_totals(b, "alice", &tn, &tb);
    CHECK(tn == 0 && tb == 0);
    tenant_totals(a, "", &tn, &tb);
    CHECK(tn == 0);
    free(ra);
    free(rb);
    free(rd);
    ss_store_close(a);
    ss_store_close(b);
    test_rm_rf(d1);
    test_rm_rf(d2);
    test_rm_rf(d3);
}

int main(void)
{
    test_vectors();
    const char *env = getenv("SS_REDIS_PORTS");
    if (env && *env) {
        char *copy = strdup(env), *save = NULL;
        for (char *t = strtok_r(copy, " ,", &save); t && n_ports < 16;
             t = strtok_r(NULL, " ,", &save))
            ports[n_ports++] = atoi(t);
        free(copy);
        test_redirects();
        test_shared();
        test_tenants_remote();
        test_orphans();
    } else {
        printf("redis: no cluster (SS_REDIS_PORTS unset): client vectors only; "
               "tests/redis_cluster.sh runs the rest\n");
    }
    return test_done("redis");
}
