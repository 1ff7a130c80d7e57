/*
 * children.c - statesoup-bench's "children" phase: GET /v1/states/{state}/children at 10,000
 * and 100,000 stored states. The store is filled with a random lineage (each state after the
 * first two is a merge of two earlier ones, and every 100th also lists state 0, a "hub" with a
 * thousand children at 100k), then the latency of the store's children lookup (one range read of
 * the children index) and of a transitive walk to depth 3 as the handler does it (the lookup,
 * then each child's record read and parsed), p50 and p99 over random states, and the hub's walk.
 * Without HTTP and without a model. The store is opened with no_sync (commits not fsync'd) to
 * fill it in seconds; a daemon never does that.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_store.h"

#define HUB_EVERY 100

static uint64_t next_rand(uint64_t *x)
{
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return *x;
}

/* Breadth-first walk from id to `depth` as api/inspect.c does it; the states met, or -1. */
static int walk(ss_store *s, const char *id, int depth)
{
    char (*queue)[SS_STORE_ID_LEN + 1] = malloc(sizeof *queue);
    int *qd = malloc(sizeof *qd), qn = 1, qcap = 1, found = 0;
    if (!queue || !qd) goto fail;
    memcpy(queue[0], id, SS_STORE_ID_LEN + 1);
    qd[0] = 0;
    for (int h = 0; h < qn; h++) {
        if (qd[h] >= depth) continue;
        char *ids = NULL;
        int n = 0;
        if (ss_store_children(s, queue[h], &ids, &n)) goto fail;
        for (int i = 0; i < n; i++) {
            const char *cid = ids + (size_t)i * (SS_STORE_ID_LEN + 1);
            char *rec = NULL;
            if (ss_store_get_record(s, cid, &rec)) {
                free(ids);
                goto fail;
            }
            json_t *j = json_loads(rec, 0, NULL);
            free(rec);
            json_decref(j);
            if (qn == qcap) {
                qcap *= 2;
                void *p = realloc(queue, (size_t)qcap * sizeof *queue), *pd = NULL;
                if (p) queue = p;
                if (p) pd = realloc(qd, (size_t)qcap * sizeof *qd);
                if (!p || !pd) {
                    free(ids);
                    goto fail;
                }
                qd = pd;
            }
            memcpy(queue[qn], cid, SS_STORE_ID_LEN + 1);
            qd[qn++] = qd[h] + 1;
            found++;
        }
        free(ids);
    }
    free(queue);
    free(qd);
    return found;
fail:
    free(queue);
    free(qd);
    return -1;
}

/* p50 / p99 (ms) of n_q lookups (depth 0) or walks (depth > 0) from random states. */
static int time_lookups(ss_store *s, char (*ids)[SS_STORE_ID_LEN + 1], int n, int n_q, int depth,
                        double *p50, double *p99, double *mean_found)
{
    double *t = malloc((size_t)n_q * sizeof *t), found = 0;
    uint64_t x = 0x5eed;
    if (!t) return -1;
    for (int i = 0; i < n_q; i++) {
        const char *id = ids[next_rand(&x) % (uint64_t)n];
        double t0 = bench_now_s();
        int f;
        if (depth == 0) {
            char *c = NULL;
            if (ss_store_children(s, id, &c, &f)) f = -1;
            free(c);
        } else {
            f = walk(s, id, depth);
        }
        if (f < 0) {
            free(t);
            return -1;
        }
        t[i] = (bench_now_s() - t0) * 1e3;
        found += f;
    }
    qsort(t, (size_t)n_q, sizeof *t, bench_cmp_double);
    *p50 = t[n_q / 2];
    *p99 = t[(size_t)(n_q * 0.99)];
    *mean_found = found / n_q;
    free(t);
    return 0;
}

static int bench_one(const char *dir, int n, int n_q, json_t *arr)
{
    ss_store_params p = ss_store_default_params();
    p.no_sync = 1;
    ss_store *s = NULL;
    char (*ids)[SS_STORE_ID_LEN + 1] = malloc((size_t)n * sizeof *ids);
    if (!ids || ss_store_open(&s, dir, &p)) goto fail;
    uint64_t x = 0x1234567;
    double t0 = bench_now_s();
    for (int i = 0; i < n; i++) {
        char rec[512], parents[256] = "[]", *out = NULL;
        if (i >= 2) {
            int a = (int)(next_rand(&x) % (uint64_t)i), b = (int)(next_rand(&x) % (uint64_t)i);
            int hub = i % HUB_EVERY == 0;
            snprintf(parents, sizeof parents,
                     "[{\"id\": \"%s\", \"weight\": 0.5}, {\"id\": \"%s\", \"weight\": 0.5}%s%s%s]",
                     ids[a], ids[b], hub ? ", {\"id\": \"" : "", hub ? ids[0] : "",
                     hub ? "\", \"weight\": 0.1}" : "");
        }
        snprintf(rec, sizeof rec,
                 "{\"name\": \"c-%d\", \"model\": \"bench-children\", \"n_tokens\": 1, "
                 "\"dtype\": \"F32\", \"parents\": %s}",
                 i, parents);
        uint64_t seed = (uint64_t)i;
        if (ss_store_put(s, rec, &seed, sizeof seed, &out)) goto fail;
        json_t *j = json_loads(out, 0, NULL);
        const char *id = json_string_value(json_object_get(j, "id"));
        snprintf(ids[i], sizeof ids[i], "%s", id ? id : "");
        json_decref(j);
        free(out);
    }
    double put_s = bench_now_s() - t0;
    double l50, l99, lf, w50, w99, wf, h0, hub_ms;
    if (time_lookups(s, ids, n, n_q, 0, &l50, &l99, &lf) ||
        time_lookups(s, ids, n, n_q, 3, &w50, &w99, &wf))
        goto fail;
    t0 = bench_now_s();
    int hub_found = walk(s, ids[0], 1);
    hub_ms = (bench_now_s() - t0) * 1e3;
    h0 = hub_found;
    if (hub_found < 0) goto fail;
    ss_store_close(s);
    printf("  %7d states  lookup p50 %6.3f ms  p99 %6.3f ms (%.1f children)  depth 3 p50 %6.2f ms"
           "  p99 %6.2f ms (%.1f states)  hub: %d children in %.1f ms  puts %6.0f/s\n",
           n, l50, l99, lf, w50, w99, wf, hub_found, hub_ms, n / put_s);
    json_array_append_new(
        arr, json_pack("{s:i,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "states", n, "lookup_p50_ms",
                       l50, "lookup_p99_ms", l99, "mean_children", lf, "depth3_p50_ms", w50,
                       "depth3_p99_ms", w99, "depth3_mean_states", wf, "hub_children", h0,
                       "hub_ms", hub_ms, "puts_per_s", n / put_s));
    free(ids);
    return 0;
fail:
    ss_store_close(s);
    free(ids);
    return -1;
}

typedef struct children_run {
    int n_q;
    json_t *arr;
} children_run;

static int children_one(void *user, const char *dir, int n)
{
    children_run *c = user;
    return bench_one(dir, n, c->n_q, c->arr);
}

int bench_children(const char *root, int quick, json_t *out)
{
    children_run c = {.n_q = quick ? 200 : 2000, .arr = json_array()};
    if (!c.arr) return -1;
    printf("\n== children: lineage lookups, %d random states (the store's index and record reads, "
           "no HTTP)\n",
           c.n_q);
    int rc = bench_catalog_sizes(root, quick, "children", children_one, &c);
    json_object_set_new(out, "children", c.arr);
    return rc;
}
