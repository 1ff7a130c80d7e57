/*
 * internal.h - what the files of api/ share: the API object, the error table, JSON and prompt
 * helpers and the starting-state resolution (stored state / on-the-fly merge / zero state).
 * Not exported.
 */
#ifndef SS_API_INTERNAL_H
#define SS_API_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "ss_api.h"

#define API_N_ROUTES    32
#define API_MAX_SOURCES 64 /* most states in one merge */

/* The automatic prompt cache (prefix_cache.c): its entries carry this tag. */
#define API_CACHE_TAG   "statesoup:cache"
#define API_CACHE_EVERY 256 /* default spacing of its checkpoints, in tokens */
typedef struct api_cache api_cache;

struct ss_api {
    ss_api_params p;
    api_cache *cache; /* NULL without --prefix-cache-budget */
    char model_name[256];
    atomic_int ready;
    ss_model *model;
    const ss_model_info *info;
    ss_state_layout lay;
    ss_tokenizer *tok;
    ss_store *store;
    pthread_rwlock_t engine_lock; /* readers: submit / cancel; writer: detach */
    ss_engine *engine;
    /* retrieval keys (search.c) */
    int keys_ready;       /* the store keeps them: search works */
    char keys_why[256];   /* else why not */
    ss_key_kind key_kind; /* the kind served (--retrieval-key) */
    int key_dim;
    ss_host_route routes[API_N_ROUTES];
    int n_routes;
};

/* The retrieval key kind when --retrieval-key is not given (docs/retrieval.md measures them). */
#define API_KEY_DEFAULT SS_KEY_SSM_SLOW

/* Set the store's keyer (search.c): keys of every state of the model, computed for those that
 * have none yet. On failure search is unavailable (keys_why says why); the daemon serves on. */
void api_keys_open(ss_api *a);

/* ---- answers ------------------------------------------------------------------------------- */

/*
 * The API's own error codes, each a finer name for an ss_err whose status it takes (docs/api.md):
 * bad_json (SS_ERR_FORMAT, 400), loading and shutting_down (SS_ERR_BUSY, 503).
 */
#define API_CODE_BAD_JSON      "bad_json"
#define API_CODE_LOADING       "loading"
#define API_CODE_SHUTTING_DOWN "shutting_down"

/* HTTP status of an ss_err: the one table (api.c); 500 outside the enum. */
int api_status_of(ss_err e);
/* Wire code of an ss_err: ss_err_name(), "internal_error" outside the enum. */
const char *api_code_of(ss_err e);
/*
 * Answer an error: the status the table gives for e, `code` (NULL: e's own) and a printf-style
 * message. Every error answer of the API goes through here.
 */
void api_reject(ss_host_req *r, ss_err e, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* api_reject(r, e, NULL, ss_errmsg()): the detail of the last ss_fail on this thread. */
void api_fail(ss_host_req *r, ss_err e);
/* Answer with a JSON value (reference stolen). */
void api_json(ss_host_req *r, int status, json_t *j);
/* A JSON number, or null when not finite (JSON has no NaN). */
json_t *api_real(double v);
/* Answer 503 unless the model is loaded; returns whether it is. */
int api_ready(ss_api *a, ss_host_req *r);

/*
 * A handler that takes a JSON body (borrowed: it is freed when the handler returns). It answers
 * itself (or parks the request) and returns SS_OK, or returns the error to answer.
 */
typedef ss_err (*api_body_handler)(ss_api *a, ss_host_req *r, json_t *body);
/*
 * Run fn for request r: answers 503 unless the model is loaded and 400 unless the body is a JSON
 * object (fn is not called then); answers the error fn returns with api_fail.
 */
void api_with_body(void *app, ss_host_req *r, api_body_handler fn);

/* ---- request parsing ----------------------------------------------------------------------- */

/* The body as a JSON object; on failure answers 400 and returns NULL. */
json_t *api_body(ss_host_req *r);
/*
 * Optional fields of o: *out is the value, or dflt when the key is absent or null.
 * SS_ERR_FORMAT when present with the wrong type (an integer may be sent as 5.0).
 */
ss_err api_get_int(json_t *o, const char *key, long long dflt, long long *out);
/* Likewise for a number; also SS_ERR_INVALID when it is not finite (NaN, Infinity). */
ss_err api_get_real(json_t *o, const char *key, double dflt, double *out);
/* Likewise for true / false. */
ss_err api_get_bool(json_t *o, const char *key, int dflt, int *out);
/* Likewise for a string (borrowed from o); *out is NULL when absent or null. */
ss_err api_get_string(json_t *o, const char *key, const char **out);

/*
 * A prompt: a string (tokenized; SS_ERR_UNSUPPORTED without a tokenizer) or an array of token
 * ids (api_token_array against the model's vocabulary). *ids is malloc'd (free it; may be NULL
 * when *n is 0). `what` names the field in messages. SS_ERR_FORMAT for another type,
 * SS_ERR_INVALID for a tokenizer that yields ids beyond the model's vocabulary, SS_ERR_TOO_LARGE,
 * SS_ERR_NOMEM, or the tokenizer's errors.
 */
ss_err api_tokens(ss_api *a, const json_t *v, const char *what, int32_t **ids, int *n);
/*
 * The token ids of the JSON array v, each an integer in [0, vocab): the one check of token ids
 * from a request (the engine and the model see only ids that passed it). *ids is malloc'd (free
 * it) and *n its length, set only on success. SS_ERR_FORMAT for an element that is not an
 * integer, SS_ERR_INVALID for one outside the vocabulary, SS_ERR_TOO_LARGE, SS_ERR_NOMEM;
 * `what` names the field in messages.
 */
ss_err api_token_array(const json_t *v, int vocab, const char *what, int32_t **ids, size_t *n);

/* Name / tags / metadata of a state to store (POST /v1/states, merge, save_state, import). */
typedef struct api_save {
    char *name;       /* NULL: unnamed (owned) */
    json_t *tags;     /* array of strings (new reference) */
    json_t *metadata; /* object (new reference) */
    const char *merge_mode; /* the record's merge_mode (a static string), NULL for none */
    ss_store_scope scope;   /* on whose behalf it is stored (the request's tenant) */
} api_save;

/* The store scope of a request: its key's tenant, admin for admin keys (ss_store.h, Tenants).
 * The tenant string belongs to the host and outlives the request. */
ss_store_scope api_scope(ss_host_req *r);
/*
 * Read and validate name/tags/metadata from o into s (free it with api_save_free on success; on
 * failure nothing is left to free). SS_ERR_FORMAT for a wrong type, SS_ERR_INVALID for a bad
 * name or tag (ss_store_check_name / _tag), SS_ERR_EXISTS when the name is taken, SS_ERR_NOMEM.
 */
ss_err api_save_parse(ss_api *a, const ss_store_scope *sc, json_t *o, api_save *s);
/* Free what s holds and zero it (a zeroed api_save is a no-op). */
void api_save_free(api_save *s);
/*
 * Store `data` (the model's state_bytes) with the record built from s, n_tokens and parents
 * (array, borrowed; NULL = []). On success *record is the complete record text (free it).
 * SS_ERR_NOMEM, or ss_store_put's errors (SS_ERR_EXISTS, SS_ERR_INVALID, SS_ERR_FULL, ...).
 */
ss_err api_save_state(ss_api *a, const api_save *s, const float *data, long long n_tokens,
                      json_t *parents, char **record);
/*
 * The same for a state st, with its cumulative decay when it is known (ss_state_has_decay): the
 * stored blob is then the state's floats followed by the decay's (state_bytes + decay bytes; a
 * blob of state_bytes is a state without decay, as catalogs from before the decay hold).
 */
ss_err api_save_st(ss_api *a, const api_save *s, const ss_state *st, long long n_tokens,
                   json_t *parents, char **record);
/*
 * Read stored state `ref` into st with its decay when the blob has one (else st's decay is
 * unknown). *rec (may be NULL) receives the record text. SS_ERR_MISMATCH when the blob is
 * neither size, and ss_store_get_blob's errors.
 */
ss_err api_load_state(ss_api *a, const ss_store_scope *sc, const char *ref, ss_state *st,
                      char **rec);
/* The same, indexing the state under pe for prompt caching (NULL: not indexed). */
ss_err api_save_state_indexed(ss_api *a, const api_save *s, const float *data,
                              long long n_tokens, json_t *parents,
                              const ss_store_prefix_entry *pe, char **record);
/* Store `bytes` of blob (state_bytes: a state; + decay bytes: a state and its decay) with s's
 * record, indexed under pe (NULL: not indexed). */
ss_err api_save_blob_indexed(ss_api *a, const api_save *s, const void *blob, size_t bytes,
                             long long n_tokens, json_t *parents, const ss_store_prefix_entry *pe,
                             char **record);
/* api_save_st, indexed under pe for prompt caching (NULL: not indexed). */
ss_err api_save_st_indexed(ss_api *a, const api_save *s, const ss_state *st, long long n_tokens,
                           json_t *parents, const ss_store_prefix_entry *pe, char **record);

/* ---- starting states ----------------------------------------------------------------------- */

/* The starting state of a request (api_start_resolve). */
typedef struct api_start {
    ss_state *st;   /* NULL: the zero state */
    int has_hidden; /* final_hidden is not all zeros */
    long long n_tokens;
    json_t *parents; /* [{id, weight}] or NULL */
    char id[SS_STORE_ID_LEN + 1]; /* the stored state it is ("" for the zero state or a merge) */
    int foreign; /* that state is another tenant's (shared): its prompt-cache chain is not ours */
} api_start;

/*
 * Resolve the starting state of a request: `state_key` ("state" or "from": a stored state),
 * or, when allow_merge, "merge" ([{state, weight}] combined on the fly), or the zero state.
 * 404 unknown state, 409 another model's, 422 empty merge or non-finite weight, 400 both given.
 */
ss_err api_start_resolve(ss_api *a, const ss_store_scope *sc, json_t *body,
                         const char *state_key, int allow_merge, api_start *out);
/* Free what s holds and zero it (a zeroed api_start is a no-op). */
void api_start_free(api_start *s);

/*
 * dst = sum_i w_i * state_i over the sources [{state, weight}] (normalized by the sum of the
 * weights when asked). *parents receives [{id, weight}] (the weights as applied) and *n_tokens
 * the largest n_tokens of the sources. SS_ERR_FORMAT for a malformed source, SS_ERR_INVALID for
 * an empty or too long merge, a weight that is not finite or beyond float, weights that sum to 0
 * with normalize; SS_ERR_NOT_FOUND, SS_ERR_MISMATCH (another model's state), SS_ERR_CORRUPT,
 * SS_ERR_NOMEM.
 */
ss_err api_merge(ss_api *a, const ss_store_scope *sc, const json_t *sources, int normalize,
                 ss_state *dst, json_t **parents, long long *n_tokens);

/* How a merge combines its sources (docs/api.md, "Merge modes"). */
typedef enum api_merge_mode {
    API_MERGE_LINEAR = 0, /* sum_i w_i s_i (decay: sum_i w_i S_i when every source has one) */
    API_MERGE_SEQUENTIAL, /* read one after another in order (ss_state_compose) */
    API_MERGE_SYMMETRIC,  /* the mean of sequential over all orders */
} api_merge_mode;
/* "linear", "sequential", "symmetric". */
const char *api_merge_mode_name(api_merge_mode m);
/* v absent or null: linear. SS_ERR_FORMAT (not a string), SS_ERR_INVALID (unknown mode). */
ss_err api_merge_mode_parse(const json_t *v, api_merge_mode *out);
/*
 * api_merge with a mode. Decay-aware modes (sequential, symmetric) take weights absent or 1 and
 * no normalize (SS_ERR_INVALID otherwise), need every source's decay (SS_ERR_INVALID naming the
 * source without one) and give *n_tokens = the sum of the sources' n_tokens; parents are the
 * sources in order with weight 1. dst's decay is set (linear: when every source has one).
 */
ss_err api_merge_with(ss_api *a, const ss_store_scope *sc, const json_t *sources, int normalize,
                      api_merge_mode mode, ss_state *dst, json_t **parents, long long *n_tokens);

/* ---- submitting work ---------------------------------------------------------------------- */

/* ss_engine_submit unless the engine is detached (SS_ERR_BUSY then). */
ss_err api_submit(ss_api *a, const ss_job_params *p, ss_job **out);
/* ss_engine_submit_batch (the choices of one request in batch form), likewise. */
ss_err api_submit_batch(ss_api *a, const ss_job_params *ps, int n, ss_job **out);
/* ss_engine_cancel unless the engine is detached. */
void api_cancel(ss_api *a, ss_job *job);

/* ---- handlers ------------------------------------------------------------------------------ */

/*
 * The endpoints (ss_host_handler, host thread), in the route table of api.c. Each answers
 * through the host (ss_host.h), errors through api_reject; the inference ones park the request.
 * catalog.c: health, metrics, models, tokenize / detokenize, the state catalog;
 * infer.c: POST /v1/states, /v1/generate, /v1/completions, /v1/score.
 */
void api_h_healthz(void *app, ss_host_req *r);
/* ---- prefix_cache.c ------------------------------------------------------------------------ */
/* The automatic cache's figures for /metrics: 0 when there is none, else 1 with its entries,
 * bytes, budget and per-tenant cap; per_tenant(user, tenant, entries, bytes) for each tenant
 * holding entries ("" = the default tenant). */
int api_cache_stats(ss_api *a, uint64_t *entries, uint64_t *bytes, uint64_t *budget,
                    uint64_t *tenant_max,
                    void (*per_tenant)(void *user, const char *tenant, uint64_t entries,
                                       uint64_t bytes),
                    void *user);
/* Start the automatic cache when the params ask for one (taking back a previous run's
 * entries, evicting beyond the budget). SS_ERR_NOMEM. */
ss_err api_cache_new(ss_api *a);
void api_cache_free(api_cache *c);
/* A hit on state id: if it is a cache entry, it is now the most recently used. */
void api_cache_touch(ss_api *a, const char *id);
/* Was one of these chains the chain of an entry evicted lately? */
int api_cache_was_evicted(ss_api *a, const ss_prefix *chains, int n);
/* A listing page (JSON, borrowed and returned) without cache entries, with "hidden": n. */
json_t *api_cache_hide(json_t *page);

void api_h_metrics(void *app, ss_host_req *r);
void api_h_models(void *app, ss_host_req *r);
void api_h_tokenize(void *app, ss_host_req *r);
void api_h_detokenize(void *app, ss_host_req *r);
void api_h_states_list(void *app, ss_host_req *r);
void api_h_states_get(void *app, ss_host_req *r);
void api_h_states_delete(void *app, ss_host_req *r);
void api_h_states_share(void *app, ss_host_req *r);
void api_h_states_unshare(void *app, ss_host_req *r);
void api_h_states_data(void *app, ss_host_req *r);
void api_h_states_import(void *app, ss_host_req *r);
void api_h_states_merge(void *app, ss_host_req *r);
void api_h_states_create(void *app, ss_host_req *r);
void api_h_generate(void *app, ss_host_req *r);
void api_h_completions(void *app, ss_host_req *r);
void api_h_score(void *app, ss_host_req *r);
void api_h_states_search(void *app, ss_host_req *r);
/* inspect.c: the caller's scope, children, per-layer norms, similarity */
void api_h_whoami(void *app, ss_host_req *r);
void api_h_states_children(void *app, ss_host_req *r);
void api_h_states_stats(void *app, ss_host_req *r);
void api_h_states_similarity(void *app, ss_host_req *r);
/* web.c: the console's page and files (public routes) */
void api_h_ui_index(void *app, ss_host_req *r);
void api_h_ui_asset(void *app, ss_host_req *r);

#endif
