/*
 * ss_api.h - the HTTP API of statesoupd (docs/api.md): request parsing and validation, the
 * handlers of every endpoint, JSON building, and the one table that maps ss_err to an HTTP status
 * and error code.
 *
 * The API object is created before the model is loaded (so /healthz can answer 503 while it
 * loads) and given the model, tokenizer, store and engine with ss_api_attach() once they exist.
 * Its routes are handed to a host (api/ss_host.h: server/host.c in the daemon), which carries the
 * requests; the API knows no transport. Catalog endpoints answer on the host's threads;
 * inference endpoints queue engine jobs (engine/engine.h) and park their request until the jobs
 * report.
 *
 * Threading: ss_api_new / ss_api_free / ss_api_attach / ss_api_detach_engine are called by the
 * daemon's main thread; the handlers run on any number of host threads at once.
 */
#ifndef SS_API_H
#define SS_API_H

#include <stddef.h>

#include "engine.h"
#include "metrics.h"
#include "ss_err.h"
#include "ss_host.h"
#include "ss_model.h"
#include "ss_store.h"
#include "ss_tokenizer.h"

typedef struct ss_api ss_api;

typedef struct ss_api_params {
    size_t max_body;        /* the daemon's body limit (imports may take one state file more) */
    int max_tokens;         /* most tokens one request may generate */
    const char *model_name; /* served as the model's id (e.g. the model folder's name) */
    ss_metrics *metrics;    /* not owned; may be NULL */
    int prefix_cache;       /* "reuse" defaults to true (--prefix-cache) */
    size_t prefix_cache_budget; /* bytes of automatic cache entries (0: no automatic cache);
                                 * implies prefix_cache */
    int prefix_cache_every;     /* their spacing in tokens (0: 256) */
    double prefix_cache_tenant_share; /* the most of the budget one tenant's entries may hold,
                                       * in (0, 1] (0: 1, no cap): a tenant over it evicts its
                                       * own entries first (--prefix-cache-tenant-share) */
    /* the retrieval key kind of search (ss_key_kind_name: "final_hidden", "ssm_norm",
     * "projection"); NULL: the default (docs/retrieval.md) */
    const char *retrieval_key;
} ss_api_params;

/*
 * Create the API (not ready: every endpoint but /healthz and /metrics answers 503). p is copied
 * (model_name too). SS_ERR_NOMEM; *out is set only on success.
 */
ss_err ss_api_new(ss_api **out, const ss_api_params *p);
/* Free the API. The host serving its routes must be stopped first. NULL is a no-op. */
void ss_api_free(ss_api *a);

/* The route table to hand to the host (owned by a, valid until ss_api_free). */
const ss_host_route *ss_api_routes(const ss_api *a, int *n);

/*
 * Give the API what it serves and mark it ready. None of these is owned; all must outlive the
 * API (or, for the engine, until ss_api_detach_engine). tok may be NULL (token ids only).
 */
void ss_api_attach(ss_api *a, ss_model *m, ss_tokenizer *tok, ss_store *store, ss_engine *engine);
/*
 * Stop using the engine: new inference requests get 503, and no handler touches the engine once
 * this returns, so it may then be closed (which finishes and reports every job).
 */
void ss_api_detach_engine(ss_api *a);

#endif
