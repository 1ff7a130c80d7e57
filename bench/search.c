/*
 * search.c - statesoup-bench's "search" phase: retrieval over the catalog (POST
 * /v1/states/search) at 10,000 and 100,000 stored keys of 256 dims: the latency of one search
 * (the store's sgemv over the in-memory key matrix and the top-k selection, as the daemon runs
 * it, without HTTP and without running the query through the model), p50 and p99 over many
 * random queries, plain and with a tag filter; the memory the keys take; how long a restart takes
 * to load them; and how fast states with keys are stored.
 *
 * The states are tiny blobs (a seed) whose keys are random unit vectors made from the seed by the
 * bench's keyer: the search cost depends only on the number of keys and their dims, not on the
 * model. The store is opened with no_sync (commits not fsync'd) to fill it in seconds; a daemon
 * never does that.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ss_store.h"

#define SEARCH_DIM   256
#define SEARCH_K     5
#define TAG_EVERY    10 /* one state in 10 has the tag the filtered searches ask for */

/* A random unit vector from seed (xorshift64, uniform components, normalised). */
static void unit_vector(uint64_t seed, float *v, int dim)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    double ss = 0;
    for (int i = 0; i < dim; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        v[i] = (float)((double)(x >> 11) / 9007199254740992.0 - 0.5);
        ss += (double)v[i] * v[i];
    }
    for (int i = 0; i < dim; i++) v[i] = (float)(v[i] / sqrt(ss));
}

/* The bench's keyer: the blob is a seed. */
static ss_err seed_key(void *user, const void *blob, size_t len, float *key)
{
    (void)user;
    uint64_t seed;
    if (len != sizeof seed) return ss_fail(SS_ERR_MISMATCH, "not a bench blob");
    memcpy(&seed, blob, sizeof seed);
    unit_vector(seed, key, SEARCH_DIM);
    return SS_OK;
}

static const ss_store_keyer keyer = {.kind = "bench", .model = "bench-search", .dim = SEARCH_DIM,
                                     .fn = seed_key};

/* p50 and p99 (ms) of n_q searches with random queries, tag-filtered when tag is not NULL. */
static int time_searches(ss_store *s, int n_q, const char *tag, double *p50, double *p99)
{
    double *t = malloc((size_t)n_q * sizeof *t);
    if (!t) return -1;
    float q[SEARCH_DIM];
    ss_store_hit hits[SEARCH_K];
    int n = 0;
    ss_store_query sq = {.key = q, .dim = SEARCH_DIM, .k = SEARCH_K, .tag = tag};
    for (int i = -n_q / 10; i < n_q; i++) { /* a tenth more first, to warm up */
        unit_vector(0xabcdefull + (uint64_t)(i + n_q), q, SEARCH_DIM);
        double t0 = bench_now_s();
        if (ss_store_search(s, &sq, hits, &n) || n != SEARCH_K) {
            free(t);
            return -1;
        }
        if (i >= 0) t[i] = (bench_now_s() - t0) * 1e3;
    }
    qsort(t, (size_t)n_q, sizeof *t, bench_cmp_double);
    *p50 = t[n_q / 2];
    *p99 = t[(size_t)(n_q * 0.99)];
    free(t);
    return 0;
}

/* One catalog of n states: fill, search, reopen. Adds an object to arr. */
static int bench_one(const char *dir, int n, int n_q, double rss_base, json_t *arr)
{
    ss_store_params p = ss_store_default_params();
    p.no_sync = 1;
    ss_store *s = NULL;
    if (ss_store_open(&s, dir, &p) || ss_store_keys_open(s, &keyer, NULL, NULL)) goto fail;
    double t0 = bench_now_s();
    for (int i = 0; i < n; i++) {
        char rec[256];
        uint64_t seed = (uint64_t)i + 1;
        snprintf(rec, sizeof rec,
                 "{\"name\": \"s-%d\", \"tags\": %s, \"model\": \"bench-search\", \"n_tokens\": 1,"
                 " \"dtype\": \"F32\"}",
                 i, i % TAG_EVERY ? "[]" : "[\"tagged\"]");
        if (ss_store_put(s, rec, &seed, sizeof seed, NULL)) goto fail;
    }
    double put_s = bench_now_s() - t0;
    uint64_t nk = 0, bytes = 0;
    double p50, p99, f50, f99, rss, peak;
    if (ss_store_keys_stats(s, &nk, &bytes) || nk != (uint64_t)n) goto fail;
    if (time_searches(s, n_q, NULL, &p50, &p99) || time_searches(s, n_q, "tagged", &f50, &f99))
        goto fail;
    bench_rss_mb(&rss, &peak);
    ss_store_close(s);
    s = NULL;
    /* a restart: open and load every key */
    t0 = bench_now_s();
    uint64_t loaded = 0, computed = 0;
    if (ss_store_open(&s, dir, &p) || ss_store_keys_open(s, &keyer, &loaded, &computed) ||
        loaded != (uint64_t)n)
        goto fail;
    double load_s = bench_now_s() - t0;
    ss_store_close(s);
    printf("  %7d keys  search p50 %6.2f ms  p99 %6.2f ms  (tag 1/%d: p50 %5.2f, p99 %5.2f ms)  "
           "keys %6.1f MB  rss +%5.0f MB  load %5.2f s  puts %6.0f/s\n",
           n, p50, p99, TAG_EVERY, f50, f99, bytes / 1e6, rss - rss_base, load_s, n / put_s);
    json_array_append_new(
        arr, json_pack("{s:i,s:i,s:i,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "keys", n, "dims",
                       SEARCH_DIM, "k", SEARCH_K, "p50_ms", p50, "p99_ms", p99, "tagged_p50_ms",
                       f50, "tagged_p99_ms", f99, "key_bytes_mb", bytes / 1e6, "rss_added_mb",
                       rss - rss_base, "load_s", load_s, "puts_per_s", n / put_s));
    return 0;
fail:
    ss_store_close(s);
    return -1;
}

typedef struct search_run {
    int n_q;
    json_t *arr;
} search_run;

static int search_one(void *user, const char *dir, int n)
{
    search_run *c = user;
    double rss, peak;
    bench_rss_mb(&rss, &peak);
    return bench_one(dir, n, c->n_q, rss, c->arr);
}

int bench_search(const char *root, int quick, json_t *out)
{
    search_run c = {.n_q = quick ? 200 : 2000, .arr = json_array()};
    if (!c.arr) return -1;
    printf("\n== search: %d-dim keys, k = %d, %d random queries (the store's search, no HTTP)\n",
           SEARCH_DIM, SEARCH_K, c.n_q);
    int rc = bench_catalog_sizes(root, quick, "search", search_one, &c);
    json_object_set_new(out, "search", c.arr);
    return rc;
}
