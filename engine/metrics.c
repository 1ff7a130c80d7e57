/*
 * metrics.c - counters behind GET /metrics, rendered in the Prometheus text format.
 *
 * A handful of endpoints and statuses: a small array searched linearly under one mutex is
 * simpler than atomics and costs nothing next to an HTTP request. Latency histograms use fixed
 * buckets from 1 ms to 60 s (cumulative, as Prometheus expects).
 */
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double bucket_le[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                   0.5,   1,     2.5,  5,     10,   30,  60};
#define N_BUCKETS ((int)(sizeof bucket_le / sizeof bucket_le[0]))

typedef struct status_count {
    const char *endpoint;
    int status;
    uint64_t n;
} status_count;

typedef struct latency {
    const char *endpoint;
    uint64_t bucket[N_BUCKETS]; /* not cumulative here; summed when rendering */
    uint64_t count;
    double sum;
} latency;

struct ss_metrics {
    pthread_mutex_t mu;
    status_count *counts; /* [n_counts] */
    int n_counts, cap_counts;
    latency *lat; /* [n_lat] */
    int n_lat, cap_lat;
    uint64_t merges_stored, merges_fly;
    uint64_t prefix[SS_PREFIX_N_OUTCOMES], prefix_saved;
    struct tenant_req {
        char *name;
        uint64_t n;
    } *tenants; /* [n_tenants]: requests per tenant */
    int n_tenants, cap_tenants;
};

ss_err ss_metrics_new(ss_metrics **out)
{
    ss_metrics *m = calloc(1, sizeof *m);
    if (!m) return ss_fail(SS_ERR_NOMEM, "out of memory for metrics");
    pthread_mutex_init(&m->mu, NULL);
    *out = m;
    return SS_OK;
}

void ss_metrics_free(ss_metrics *m)
{
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m->counts);
    free(m->lat);
    for (int i = 0; i < m->n_tenants; i++) free(m->tenants[i].name);
    free(m->tenants);
    free(m);
}

/* Grow an array of `size`-byte items to hold one more; 0 on failure (the sample is dropped). */
static int grow(void **arr, int *cap, int n, size_t size)
{
    if (n < *cap) return 1;
    int nc = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, (size_t)nc * size);
    if (!p) return 0;
    *arr = p;
    *cap = nc;
    return 1;
}

void ss_metrics_request(ss_metrics *m, const char *endpoint, int status, double seconds)
{
    if (!m || !endpoint) return;
    pthread_mutex_lock(&m->mu);
    int i;
    for (i = 0; i < m->n_counts; i++)
        if (m->counts[i].status == status && !strcmp(m->counts[i].endpoint, endpoint)) break;
    if (i == m->n_counts &&
        grow((void **)&m->counts, &m->cap_counts, m->n_counts, sizeof *m->counts)) {
        m->counts[m->n_counts++] = (status_count){.endpoint = endpoint, .status = status};
    }
    if (i < m->n_counts) m->counts[i].n++;
    for (i = 0; i < m->n_lat; i++)
        if (!strcmp(m->lat[i].endpoint, endpoint)) break;
    if (i == m->n_lat && grow((void **)&m->lat, &m->cap_lat, m->n_lat, sizeof *m->lat)) {
        memset(&m->lat[m->n_lat], 0, sizeof *m->lat);
        m->lat[m->n_lat++].endpoint = endpoint;
    }
    if (i < m->n_lat) {
        latency *l = &m->lat[i];
        for (int b = 0; b < N_BUCKETS; b++) {
            if (seconds <= bucket_le[b]) {
                l->bucket[b]++;
                break;
            }
        }
        l->count++;
        l->sum += seconds;
    }
    pthread_mutex_unlock(&m->mu);
}

void ss_metrics_tenant_request(ss_metrics *m, const char *tenant)
{
    if (!m) return;
    if (!tenant) tenant = "";
    pthread_mutex_lock(&m->mu);
    int i;
    for (i = 0; i < m->n_tenants; i++)
        if (!strcmp(m->tenants[i].name, tenant)) break;
    if (i == m->n_tenants && m->n_tenants < SS_METRICS_MAX_TENANTS &&
        grow((void **)&m->tenants, &m->cap_tenants, m->n_tenants, sizeof *m->tenants)) {
        char *name = strdup(tenant);
        if (name) m->tenants[m->n_tenants++] = (struct tenant_req){.name = name};
    }
    if (i < m->n_tenants) m->tenants[i].n++;
    pthread_mutex_unlock(&m->mu);
}

void ss_metrics_merge(ss_metrics *m, int stored)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    if (stored)
        m->merges_stored++;
    else
        m->merges_fly++;
    pthread_mutex_unlock(&m->mu);
}

void ss_metrics_prefix(ss_metrics *m, ss_prefix_outcome outcome, uint64_t tokens_saved)
{
    if (!m || outcome < 0 || outcome >= SS_PREFIX_N_OUTCOMES) return;
    pthread_mutex_lock(&m->mu);
    m->prefix[outcome]++;
    m->prefix_saved += tokens_saved;
    pthread_mutex_unlock(&m->mu);
}

/* A growing text buffer; `failed` sticks once an allocation failed. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = (b->cap + (size_t)n + 1) * 2;
        char *q = realloc(b->p, nc);
        if (!q) {
            b->failed = 1;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
}

/* Per tenant: states and bytes (sampled, x) and requests (counted); a tenant known to only one
 * of them gets 0 for the others. Under m->mu. */
static void render_tenants(sbuf *b, const ss_metrics *m, const ss_metrics_extra *x)
{
    if (!m->n_tenants && !x->n_tenants) return;
    sb_printf(b, "# HELP statesoup_tenant_states States stored per tenant (tenant=\"\": the "
                 "default tenant).\n# TYPE statesoup_tenant_states gauge\n");
    for (int i = 0; i < x->n_tenants; i++)
        sb_printf(b, "statesoup_tenant_states{tenant=\"%s\"} %llu\n", x->tenants[i].name,
                  (unsigned long long)x->tenants[i].states);
    sb_printf(b, "# HELP statesoup_tenant_state_bytes Bytes of the states stored per tenant.\n"
                 "# TYPE statesoup_tenant_state_bytes gauge\n");
    for (int i = 0; i < x->n_tenants; i++)
        sb_printf(b, "statesoup_tenant_state_bytes{tenant=\"%s\"} %llu\n", x->tenants[i].name,
                  (unsigned long long)x->tenants[i].bytes);
    sb_printf(b, "# HELP statesoup_tenant_requests_total Finished HTTP requests per tenant of the "
                 "key.\n# TYPE statesoup_tenant_requests_total counter\n");
    for (int i = 0; i < m->n_tenants; i++)
        sb_printf(b, "statesoup_tenant_requests_total{tenant=\"%s\"} %llu\n", m->tenants[i].name,
                  (unsigned long long)m->tenants[i].n);
}

ss_err ss_metrics_render(ss_metrics *m, const ss_metrics_extra *x, char **out, size_t *len)
{
    sbuf b = {.p = malloc(4096), .cap = 4096};
    if (!b.p) return ss_fail(SS_ERR_NOMEM, "out of memory rendering metrics");
    b.p[0] = '\0';
    pthread_mutex_lock(&m->mu);
    sb_printf(&b, "# HELP statesoup_http_requests_total HTTP requests by endpoint and status.\n"
                  "# TYPE statesoup_http_requests_total counter\n");
    for (int i = 0; i < m->n_counts; i++)
        sb_printf(&b, "statesoup_http_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n",
                  m->counts[i].endpoint, m->counts[i].status, (unsigned long long)m->counts[i].n);
    sb_printf(&b, "# HELP statesoup_http_request_duration_seconds Time from the request's first "
                  "byte to its last answered byte.\n"
                  "# TYPE statesoup_http_request_duration_seconds histogram\n");
    for (int i = 0; i < m->n_lat; i++) {
        const latency *l = &m->lat[i];
        uint64_t cum = 0;
        for (int k = 0; k < N_BUCKETS; k++) {
            cum += l->bucket[k];
            sb_printf(&b,
                      "statesoup_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%g\"} "
                      "%llu\n",
                      l->endpoint, bucket_le[k], (unsigned long long)cum);
        }
        sb_printf(&b,
                  "statesoup_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} "
                  "%llu\n",
                  l->endpoint, (unsigned long long)l->count);
        sb_printf(&b, "statesoup_http_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n",
                  l->endpoint, l->sum);
        sb_printf(&b, "statesoup_http_request_duration_seconds_count{endpoint=\"%s\"} %llu\n",
                  l->endpoint, (unsigned long long)l->count);
    }
    sb_printf(&b,
              "# HELP statesoup_merges_total State merges computed, stored or on the fly.\n"
              "# TYPE statesoup_merges_total counter\n"
              "statesoup_merges_total{kind=\"stored\"} %llu\n"
              "statesoup_merges_total{kind=\"on_the_fly\"} %llu\n",
              (unsigned long long)m->merges_stored, (unsigned long long)m->merges_fly);
    uint64_t lookups = 0;
    for (int i = 0; i < SS_PREFIX_N_OUTCOMES; i++) lookups += m->prefix[i];
    sb_printf(&b,
              "# HELP statesoup_prefix_lookups_total Prompt-cache lookups (requests with reuse).\n"
              "# TYPE statesoup_prefix_lookups_total counter\n"
              "statesoup_prefix_lookups_total %llu\n"
              "# HELP statesoup_prefix_hits_total Lookups that resumed from a stored state.\n"
              "# TYPE statesoup_prefix_hits_total counter\n"
              "statesoup_prefix_hits_total %llu\n"
              "# HELP statesoup_prefix_tokens_saved_total Prompt tokens not fed thanks to hits.\n"
              "# TYPE statesoup_prefix_tokens_saved_total counter\n"
              "statesoup_prefix_tokens_saved_total %llu\n"
              "# HELP statesoup_prefix_misses_total Lookups that found nothing, by cause.\n"
              "# TYPE statesoup_prefix_misses_total counter\n"
              "statesoup_prefix_misses_total{cause=\"no_candidate\"} %llu\n"
              "statesoup_prefix_misses_total{cause=\"different_start\"} %llu\n"
              "statesoup_prefix_misses_total{cause=\"shorter_than_checkpoints\"} %llu\n"
              "statesoup_prefix_misses_total{cause=\"evicted\"} %llu\n",
              (unsigned long long)lookups, (unsigned long long)m->prefix[SS_PREFIX_HIT],
              (unsigned long long)m->prefix_saved,
              (unsigned long long)m->prefix[SS_PREFIX_MISS_NONE],
              (unsigned long long)m->prefix[SS_PREFIX_MISS_START],
              (unsigned long long)m->prefix[SS_PREFIX_MISS_SHORTER],
              (unsigned long long)m->prefix[SS_PREFIX_MISS_EVICTED]);
    render_tenants(&b, m, x);
    pthread_mutex_unlock(&m->mu);

    sb_printf(&b,
              "# HELP statesoup_ready Whether the model is loaded and requests are served.\n"
              "# TYPE statesoup_ready gauge\nstatesoup_ready %d\n"
              "# HELP statesoup_tokens_prefilled_total Prompt/context tokens fed to the model.\n"
              "# TYPE statesoup_tokens_prefilled_total counter\n"
              "statesoup_tokens_prefilled_total %llu\n"
              "# HELP statesoup_tokens_generated_total Tokens sampled by generation requests.\n"
              "# TYPE statesoup_tokens_generated_total counter\n"
              "statesoup_tokens_generated_total %llu\n"
              "# HELP statesoup_engine_steps_total Batched model evaluations.\n"
              "# TYPE statesoup_engine_steps_total counter\nstatesoup_engine_steps_total %llu\n"
              "# HELP statesoup_engine_jobs_total Inference jobs finished.\n"
              "# TYPE statesoup_engine_jobs_total counter\nstatesoup_engine_jobs_total %llu\n"
              "# HELP statesoup_engine_jobs_queued Inference jobs waiting for a batch slot.\n"
              "# TYPE statesoup_engine_jobs_queued gauge\nstatesoup_engine_jobs_queued %d\n"
              "# HELP statesoup_engine_jobs_running Inference jobs in the running batch.\n"
              "# TYPE statesoup_engine_jobs_running gauge\nstatesoup_engine_jobs_running %d\n"
              "# HELP statesoup_states_stored States in the catalog.\n"
              "# TYPE statesoup_states_stored gauge\nstatesoup_states_stored %llu\n"
              "# HELP statesoup_state_bytes Bytes of state data in the catalog.\n"
              "# TYPE statesoup_state_bytes gauge\nstatesoup_state_bytes %llu\n"
              "# HELP statesoup_store_map_bytes Current size of the catalog's memory map.\n"
              "# TYPE statesoup_store_map_bytes gauge\nstatesoup_store_map_bytes %llu\n"
              "# HELP statesoup_store_used_bytes Bytes of the catalog file in use.\n"
              "# TYPE statesoup_store_used_bytes gauge\nstatesoup_store_used_bytes %llu\n",
              x->ready, (unsigned long long)x->tokens_prefilled,
              (unsigned long long)x->tokens_generated, (unsigned long long)x->engine_steps,
              (unsigned long long)x->jobs_done, x->jobs_queued, x->jobs_running,
              (unsigned long long)x->states, (unsigned long long)x->state_bytes,
              (unsigned long long)x->store_map_bytes, (unsigned long long)x->store_used_bytes);
    if (x->remote) {
        sb_printf(&b,
                  "# HELP statesoup_remote_up Whether the shared catalog (Redis Cluster) answers.\n"
                  "# TYPE statesoup_remote_up gauge\nstatesoup_remote_up %d\n"
                  "# HELP statesoup_remote_errors_total Catalog commands that failed for want of "
                  "Redis.\n"
                  "# TYPE statesoup_remote_errors_total counter\nstatesoup_remote_errors_total %llu\n"
                  "# HELP statesoup_cache_hits_total State reads served by the local cache.\n"
                  "# TYPE statesoup_cache_hits_total counter\nstatesoup_cache_hits_total %llu\n"
                  "# HELP statesoup_cache_misses_total State reads fetched from Redis.\n"
                  "# TYPE statesoup_cache_misses_total counter\nstatesoup_cache_misses_total %llu\n"
                  "# HELP statesoup_cache_evictions_total States evicted from the local cache.\n"
                  "# TYPE statesoup_cache_evictions_total counter\n"
                  "statesoup_cache_evictions_total %llu\n"
                  "# HELP statesoup_cache_bytes Blob bytes held by the local cache.\n"
                  "# TYPE statesoup_cache_bytes gauge\nstatesoup_cache_bytes %llu\n",
                  x->remote_up, (unsigned long long)x->remote_errors,
                  (unsigned long long)x->cache_hits, (unsigned long long)x->cache_misses,
                  (unsigned long long)x->cache_evictions, (unsigned long long)x->cache_bytes);
    }
    if (x->keys)
        sb_printf(&b,
                  "# HELP statesoup_retrieval_keys States with a retrieval key in the search "
                  "index.\n"
                  "# TYPE statesoup_retrieval_keys gauge\nstatesoup_retrieval_keys %llu\n"
                  "# HELP statesoup_retrieval_key_bytes Memory of the search index (keys, rows, "
                  "table).\n"
                  "# TYPE statesoup_retrieval_key_bytes gauge\nstatesoup_retrieval_key_bytes %llu\n",
                  (unsigned long long)x->retrieval_keys,
                  (unsigned long long)x->retrieval_key_bytes);
    if (b.failed) {
        free(b.p);
        return ss_fail(SS_ERR_NOMEM, "out of memory rendering metrics");
    }
    *out = b.p;
    *len = b.len;
    return SS_OK;
}
