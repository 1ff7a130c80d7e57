/*
 * metrics.c - counters behind GET /metrics, rendered in the Prometheus text format.
 *
 * A handful of endpoints and statuses: a small array searched linearly under one mutex is
 * simpler than atomics and costs nothing next to an HTTP request. Latency histograms use fixed
 * buckets from 1 ms to 60 s (cumulative, as Prometheus expects).
 */
#include "metrics.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ss_util.h"

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
    long conns_open;
    uint64_t conns_refused;
    int64_t t_start; /* ss_mono_ns at creation: uptime */
    char version[32], git[48];
};

ss_err ss_metrics_new(ss_metrics **out)
{
    ss_metrics *m = calloc(1, sizeof *m);
    if (!m) return ss_fail(SS_ERR_NOMEM, "out of memory for metrics");
    pthread_mutex_init(&m->mu, NULL);
    m->t_start = ss_mono_ns();
    snprintf(m->version, sizeof m->version, "unknown");
    snprintf(m->git, sizeof m->git, "unknown");
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

void ss_metrics_set_build(ss_metrics *m, const char *version, const char *git)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    if (version && *version) snprintf(m->version, sizeof m->version, "%s", version);
    if (git && *git) snprintf(m->git, sizeof m->git, "%s", git);
    pthread_mutex_unlock(&m->mu);
}

void ss_metrics_connections(ss_metrics *m, int delta)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->conns_open += delta;
    pthread_mutex_unlock(&m->mu);
}

void ss_metrics_connection_refused(ss_metrics *m)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->conns_refused++;
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
    const char *only = x->only_tenant;
    if (!m->n_tenants && !x->n_tenants) return;
    sb_printf(b, "# HELP statesoup_tenant_states States stored per tenant (tenant=\"\": the "
                 "default tenant).\n# TYPE statesoup_tenant_states gauge\n");
    for (int i = 0; i < x->n_tenants; i++)
        if (!only || !strcmp(only, x->tenants[i].name))
            sb_printf(b, "statesoup_tenant_states{tenant=\"%s\"} %llu\n", x->tenants[i].name,
                      (unsigned long long)x->tenants[i].states);
    sb_printf(b, "# HELP statesoup_tenant_state_bytes Bytes of the states stored per tenant.\n"
                 "# TYPE statesoup_tenant_state_bytes gauge\n");
    for (int i = 0; i < x->n_tenants; i++)
        if (!only || !strcmp(only, x->tenants[i].name))
            sb_printf(b, "statesoup_tenant_state_bytes{tenant=\"%s\"} %llu\n", x->tenants[i].name,
                      (unsigned long long)x->tenants[i].bytes);
    if (x->prefix_cache) {
        sb_printf(b, "# HELP statesoup_tenant_prefix_cache_bytes Bytes of the automatic prompt "
                     "cache's entries per tenant.\n"
                     "# TYPE statesoup_tenant_prefix_cache_bytes gauge\n");
        for (int i = 0; i < x->n_tenants; i++)
            if (!only || !strcmp(only, x->tenants[i].name))
                sb_printf(b, "statesoup_tenant_prefix_cache_bytes{tenant=\"%s\"} %llu\n",
                          x->tenants[i].name, (unsigned long long)x->tenants[i].cache_bytes);
    }
    sb_printf(b, "# HELP statesoup_tenant_requests_total Finished HTTP requests per tenant of the "
                 "key.\n# TYPE statesoup_tenant_requests_total counter\n");
    for (int i = 0; i < m->n_tenants; i++)
        if (!only || !strcmp(only, m->tenants[i].name))
            sb_printf(b, "statesoup_tenant_requests_total{tenant=\"%s\"} %llu\n",
                      m->tenants[i].name, (unsigned long long)m->tenants[i].n);
}

/* "# HELP" and "# TYPE" of one metric. */
static void sb_head(sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sb_u64(sbuf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    sb_head(b, name, type, help);
    sb_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* Requests by endpoint and status, and their latency histograms. Caller holds m->mu. */
static void render_http(sbuf *b, const ss_metrics *m)
{
    sb_head(b, "statesoup_http_requests_total", "counter", "HTTP requests by endpoint and status.");
    for (int i = 0; i < m->n_counts; i++)
        sb_printf(b, "statesoup_http_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n",
                  m->counts[i].endpoint, m->counts[i].status, (unsigned long long)m->counts[i].n);
    sb_head(b, "statesoup_http_request_duration_seconds", "histogram",
            "Time from the request's first byte to its last answered byte.");
    for (int i = 0; i < m->n_lat; i++) {
        const latency *l = &m->lat[i];
        uint64_t cum = 0;
        for (int k = 0; k < N_BUCKETS; k++) {
            cum += l->bucket[k];
            sb_printf(b,
                      "statesoup_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%g\"} "
                      "%llu\n",
                      l->endpoint, bucket_le[k], (unsigned long long)cum);
        }
        sb_printf(b,
                  "statesoup_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} "
                  "%llu\n",
                  l->endpoint, (unsigned long long)l->count);
        sb_printf(b, "statesoup_http_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n",
                  l->endpoint, l->sum);
        sb_printf(b, "statesoup_http_request_duration_seconds_count{endpoint=\"%s\"} %llu\n",
                  l->endpoint, (unsigned long long)l->count);
    }
    sb_u64(b, "statesoup_http_connections", "gauge", "Client connections open now.",
           m->conns_open > 0 ? (uint64_t)m->conns_open : 0);
    sb_u64(b, "statesoup_http_connections_refused_total", "counter",
           "Connections closed at once because --max-connections were open.", m->conns_refused);
}

/* Merges and prompt-cache lookups. Caller holds m->mu. */
static void render_counters(sbuf *b, const ss_metrics *m)
{
    sb_head(b, "statesoup_merges_total", "counter", "State merges computed, stored or on the fly.");
    sb_printf(b,
              "statesoup_merges_total{kind=\"stored\"} %llu\n"
              "statesoup_merges_total{kind=\"on_the_fly\"} %llu\n",
              (unsigned long long)m->merges_stored, (unsigned long long)m->merges_fly);
    uint64_t lookups = 0;
    for (int i = 0; i < SS_PREFIX_N_OUTCOMES; i++) lookups += m->prefix[i];
    sb_u64(b, "statesoup_prefix_lookups_total", "counter",
           "Prompt-cache lookups (requests with reuse).", lookups);
    sb_u64(b, "statesoup_prefix_hits_total", "counter",
           "Lookups that resumed from a stored state.", m->prefix[SS_PREFIX_HIT]);
    sb_u64(b, "statesoup_prefix_tokens_saved_total", "counter",
           "Prompt tokens not fed thanks to hits.", m->prefix_saved);
    sb_head(b, "statesoup_prefix_misses_total", "counter",
            "Lookups that found nothing, by cause.");
    static const char *const cause[SS_PREFIX_N_OUTCOMES] = {
        [SS_PREFIX_MISS_NONE] = "no_candidate",
        [SS_PREFIX_MISS_START] = "different_start",
        [SS_PREFIX_MISS_SHORTER] = "shorter_than_checkpoints",
        [SS_PREFIX_MISS_EVICTED] = "evicted"};
    for (int i = 0; i < SS_PREFIX_N_OUTCOMES; i++)
        if (cause[i])
            sb_printf(b, "statesoup_prefix_misses_total{cause=\"%s\"} %llu\n", cause[i],
                      (unsigned long long)m->prefix[i]);
}

/* The engine's and the catalog's numbers, sampled by the caller. */
static void render_extra(sbuf *b, const ss_metrics_extra *x)
{
    sb_u64(b, "statesoup_ready", "gauge", "Whether the model is loaded and requests are served.",
           (uint64_t)x->ready);
    sb_u64(b, "statesoup_tokens_prefilled_total", "counter",
           "Prompt/context tokens fed to the model.", x->tokens_prefilled);
    sb_u64(b, "statesoup_tokens_generated_total", "counter",
           "Tokens sampled by generation requests.", x->tokens_generated);
    sb_u64(b, "statesoup_engine_steps_total", "counter", "Batched model evaluations.",
           x->engine_steps);
    sb_u64(b, "statesoup_engine_jobs_total", "counter", "Inference jobs finished.", x->jobs_done);
    sb_u64(b, "statesoup_engine_jobs_queued", "gauge", "Inference jobs waiting for a batch slot.",
           (uint64_t)x->jobs_queued);
    sb_u64(b, "statesoup_engine_jobs_running", "gauge", "Inference jobs in the running batch.",
           (uint64_t)x->jobs_running);
    sb_u64(b, "statesoup_states_stored", "gauge", "States in the catalog.", x->states);
    sb_u64(b, "statesoup_state_bytes", "gauge", "Bytes of state data in the catalog.",
           x->state_bytes);
    sb_u64(b, "statesoup_store_map_bytes", "gauge", "Current size of the catalog's memory map.",
           x->store_map_bytes);
    sb_u64(b, "statesoup_store_used_bytes", "gauge", "Bytes of the catalog file in use.",
           x->store_used_bytes);
    sb_u64(b, "statesoup_store_free_bytes", "gauge",
           "Bytes of the catalog's map not in use (room before the map must grow).",
           x->store_map_bytes > x->store_used_bytes ? x->store_map_bytes - x->store_used_bytes
                                                    : 0);
    sb_u64(b, "statesoup_store_corrupt_reads_total", "counter",
           "Reads that found a damaged record or blob (answered 500 corrupt, or skipped in "
           "listings).",
           x->corrupt_reads);
    if (x->prefix_cache) {
        sb_u64(b, "statesoup_prefix_cache_entries", "gauge",
               "Entries of the automatic prompt cache (checkpoints of recent prompts).",
               x->prefix_cache_entries);
        sb_u64(b, "statesoup_prefix_cache_bytes", "gauge", "Bytes of those entries.",
               x->prefix_cache_bytes);
        sb_u64(b, "statesoup_prefix_cache_budget_bytes", "gauge",
               "The cache's budget (--prefix-cache-budget).", x->prefix_cache_budget);
        sb_u64(b, "statesoup_prefix_cache_tenant_max_bytes", "gauge",
               "The most one tenant's entries may hold (--prefix-cache-tenant-share).",
               x->prefix_cache_tenant_max);
    }
    if (x->keys) {
        sb_u64(b, "statesoup_retrieval_keys", "gauge",
               "States with a retrieval key in the search index.", x->retrieval_keys);
        sb_u64(b, "statesoup_retrieval_key_bytes", "gauge",
               "Memory of the search index (keys, rows, table).", x->retrieval_key_bytes);
    }
    if (!x->remote) return;
    sb_u64(b, "statesoup_remote_up", "gauge", "Whether the shared catalog (Redis Cluster) answers.",
           (uint64_t)x->remote_up);
    sb_u64(b, "statesoup_remote_errors_total", "counter",
           "Catalog commands that failed for want of Redis.", x->remote_errors);
    sb_u64(b, "statesoup_remote_short_circuits_total", "counter",
           "Of those, commands answered at once, not tried: the one before them had found no "
           "cluster for its whole retry budget, and no probe has reached it since.",
           x->remote_short_circuits);
    sb_u64(b, "statesoup_cache_hits_total", "counter", "State reads served by the local cache.",
           x->cache_hits);
    sb_u64(b, "statesoup_cache_misses_total", "counter", "State reads fetched from Redis.",
           x->cache_misses);
    sb_u64(b, "statesoup_cache_evictions_total", "counter", "States evicted from the local cache.",
           x->cache_evictions);
    sb_u64(b, "statesoup_cache_bytes", "gauge", "Blob bytes held by the local cache.",
           x->cache_bytes);
}

/* Open descriptors of this process (-1 when /proc cannot be read). */
static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

/* Resident set size in bytes (0 when /proc cannot be read). */
static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (!f) return 0;
    int got = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return got == 2 && page > 0 ? resident * (uint64_t)page : 0;
}

/* Build, uptime and the process's resources. */
static void render_process(sbuf *b, const ss_metrics *m)
{
    sb_head(b, "statesoup_build_info", "gauge",
            "Version and git commit of this statesoupd (the value is always 1).");
    sb_printf(b, "statesoup_build_info{version=\"%s\",git=\"%s\"} 1\n", m->version, m->git);
    sb_head(b, "statesoup_uptime_seconds", "gauge", "Seconds since this statesoupd started.");
    sb_printf(b, "statesoup_uptime_seconds %.3f\n", (double)(ss_mono_ns() - m->t_start) / 1e9);
    sb_u64(b, "statesoup_process_resident_memory_bytes", "gauge",
           "Resident set size (weights, states being served, the catalog's mapped pages).",
           rss_bytes());
    long fds = open_fds();
    if (fds >= 0)
        sb_u64(b, "statesoup_process_open_fds", "gauge",
               "Open file descriptors (connections, the catalog, logs).", (uint64_t)fds);
}

ss_err ss_metrics_render(ss_metrics *m, const ss_metrics_extra *x, char **out, size_t *len)
{
    sbuf b = {.p = malloc(8192), .cap = 8192};
    if (!b.p) return ss_fail(SS_ERR_NOMEM, "out of memory rendering metrics");
    b.p[0] = '\0';
    pthread_mutex_lock(&m->mu);
    render_http(&b, m);
    render_counters(&b, m);
    render_tenants(&b, m, x);
    pthread_mutex_unlock(&m->mu);
    render_extra(&b, x);
    render_process(&b, m);
    if (b.failed) {
        free(b.p);
        return ss_fail(SS_ERR_NOMEM, "out of memory rendering metrics");
    }
    *out = b.p;
    *len = b.len;
    return SS_OK;
}
