/*
 * metrics.h - the daemon's counters and their Prometheus text exposition (GET /metrics).
 *
 * Counted here: HTTP requests by endpoint and status, request latency histograms by endpoint,
 * merges by kind (stored / on the fly). Values owned by other modules (engine token counters,
 * store totals) are read at render time and passed in as ss_metrics_extra.
 *
 * Threading: every function is thread-safe.
 */
#ifndef SS_METRICS_H
#define SS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "ss_err.h"

typedef struct ss_metrics ss_metrics;

/* An empty registry. SS_ERR_NOMEM; *out is set only on success. */
ss_err ss_metrics_new(ss_metrics **out);
/* NULL is a no-op. */
void ss_metrics_free(ss_metrics *m);

/* Count one finished request. `endpoint` must stay valid as long as m (a route name). */
void ss_metrics_request(ss_metrics *m, const char *endpoint, int status, double seconds);
/* Count one finished request of a tenant (NULL or "": the default tenant). The name is copied;
 * at most SS_METRICS_MAX_TENANTS tenants are told apart, later ones are not counted. */
#define SS_METRICS_MAX_TENANTS 1024
void ss_metrics_tenant_request(ss_metrics *m, const char *tenant);
/* Count one merge; kind is "stored" or "on_the_fly". */
void ss_metrics_merge(ss_metrics *m, int stored);

/* How a prompt-cache lookup ended (docs/api.md, "Prompt caching"). */
typedef enum ss_prefix_outcome {
    SS_PREFIX_HIT,
    SS_PREFIX_MISS_NONE,    /* no stored state starts like the prompt */
    SS_PREFIX_MISS_START,   /* one does, but from another starting state */
    SS_PREFIX_MISS_SHORTER, /* the prompt is shorter than the shortest stored state */
    SS_PREFIX_MISS_EVICTED, /* the state found was deleted or evicted before it could be read */
    SS_PREFIX_N_OUTCOMES
} ss_prefix_outcome;
/* Count one prompt-cache lookup and, for a hit, the prompt tokens it saved. */
void ss_metrics_prefix(ss_metrics *m, ss_prefix_outcome outcome, uint64_t tokens_saved);

/* A tenant's states and their blob bytes, sampled from the store. */
typedef struct ss_metrics_tenant {
    const char *name; /* "" = the default tenant */
    uint64_t states, bytes;
    uint64_t cache_entries, cache_bytes; /* of the automatic prompt cache (prefix_cache) */
} ss_metrics_tenant;

/* The build rendered as statesoup_build_info{version, git}. */
void ss_metrics_set_build(ss_metrics *m, const char *version, const char *git);
/* Open connections changed by delta (the transport's accept/close notifications). */
void ss_metrics_connections(ss_metrics *m, int delta);
/* One connection closed at once because --max-connections were open. */
void ss_metrics_connection_refused(ss_metrics *m);

/* Numbers owned elsewhere, sampled when /metrics is served. */
typedef struct ss_metrics_extra {
    int ready; /* model loaded */
    uint64_t tokens_prefilled, tokens_generated, engine_steps, jobs_done;
    int jobs_queued, jobs_running;
    uint64_t states, state_bytes, store_map_bytes, store_used_bytes;
    uint64_t corrupt_reads; /* damaged records/blobs met by reads since the start */
    /* The shared tier (--remote): rendered only when remote is 1. */
    int remote, remote_up;
    uint64_t remote_errors, remote_short_circuits, cache_hits, cache_misses, cache_evictions,
        cache_bytes;
    /* The automatic prompt cache (--prefix-cache-budget): rendered only when prefix_cache is 1. */
    int prefix_cache;
    uint64_t prefix_cache_entries, prefix_cache_bytes, prefix_cache_budget,
        prefix_cache_tenant_max;
    /* Retrieval keys (search): rendered only when keys is 1. */
    int keys;
    uint64_t retrieval_keys, retrieval_key_bytes;
    /* Per tenant (statesoup_tenant_*{tenant="..."}; the default tenant is tenant=""). */
    const ss_metrics_tenant *tenants;
    int n_tenants;
    const char *only_tenant; /* NULL: every tenant's lines; else only this one's ("" default) */
} ss_metrics_extra;

/*
 * Render every metric in the Prometheus text format (version 0.0.4). *out is malloc'd
 * (free() it), *len its length. SS_ERR_NOMEM.
 */
ss_err ss_metrics_render(ss_metrics *m, const ss_metrics_extra *x, char **out, size_t *len);

#endif
