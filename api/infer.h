/*
 * infer.h - what the four files of the inference endpoints share (not exported beyond api/).
 *
 * POST /v1/states (prefill and store), /v1/generate, /v1/completions and /v1/score run the model.
 * A request of theirs goes through four files, one idea each:
 *   infer.c         the handlers: read the request, submit, park;
 *   infer_parse.c   reading and validating the body into the context (host thread);
 *   infer_job.c     the context's life, the engine callbacks (engine thread), the event
 *                   stream, submitting the jobs;
 *   infer_answer.c  the answers, built on a host thread once every job is done.
 *
 * The handler validates everything on the host thread (bad input never reaches the engine),
 * resolves the starting state (stored, merged on the fly, or zero), submits one engine job per
 * choice and parks the request. The jobs' callbacks run on the engine thread; the last on_done
 * wakes the request, and the continuation (infer_finish) answers on a host thread, storing a
 * state first when asked (LMDB commits never run on the engine thread).
 *
 * Batches: a request in a batch form (several prompts: `prompt` as an array of prompts in
 * /v1/completions, `prompts` in /v1/generate, `batch` in /v1/score and POST /v1/states) hands its
 * choices to the engine as one batch (ss_engine_submit_batch). For a Mixture-of-Tokens model the
 * engine steps them in lockstep groups and mixes them; for other models they are independent jobs.
 * A request with one prompt (even with n > 1 choices) is never mixed with anything.
 *
 * Lifetime: the request context (struct infer) belongs to the host's request; every submitted
 * job holds a reference on the request, dropped as the last action of its on_done, so the
 * context and its jobs are freed exactly once, after both the host and the engine are done.
 */
#ifndef SS_API_INFER_H
#define SS_API_INFER_H

#include "internal.h"

#define MAX_CHOICES 16 /* choices (prompts x n, or batch members) of one request */
#define MAX_STOPS   16 /* stop strings of one request */
#define API_MAX_CHECKPOINTS 64 /* checkpoints of one request (docs/api.md) */

typedef enum endpoint { EP_STATES, EP_GENERATE, EP_COMPLETIONS, EP_SCORE, EP_SEARCH } endpoint;

/* What a search asks for (search.c): POST /v1/states/search, or a merge's "retrieve". */
typedef struct api_search {
    int k;        /* hits wanted, 1..SS_STORE_SEARCH_MAX */
    char *tag;    /* NULL or only states with this tag (owned) */
    char *prefix; /* NULL or only names starting with it (owned) */
    ss_store_scope scope; /* the request's tenant: only its states and shared ones are found */
} api_search;

struct infer;
typedef struct api_retrieve api_retrieve; /* retrieve-then-merge (search.c) */

/* One choice: one engine job and what it produced. */
typedef struct choice {
    struct infer *inf;
    int index;
    char label[32];  /* the request field it comes from, for messages ("prompts[2]") */
    ss_job *job;     /* set by submit / on_done; freed with the context */
    int done;        /* on_done ran (inf->mu) */
    int32_t *prompt; /* [n_prompt] (SCORE: the context) */
    int n_prompt;
    int32_t *cont; /* SCORE: the continuation [n_cont] */
    int n_cont;
    api_save save;     /* POST /v1/states in batch form: this member's name, tags, metadata */
    char *prompt_text; /* completions with echo: the prompt as text */
    uint64_t seed;
    /* engine thread until done, then the host thread */
    ss_detok *detok;
    ss_stopper *stop;
    int stop_hit; /* a stop string matched */
    char *text;   /* emitted text, NUL-terminated */
    size_t text_len, text_cap;
    size_t streamed;  /* bytes of text already sent as events */
    int32_t *top_ids; /* [max_tokens + 1, n_logprobs] */
    float *top_lps;
    int oom;
} choice;

/* The context of one inference request. */
typedef struct infer {
    ss_api *a;
    ss_host_req *req;
    ss_store_scope scope; /* the request's tenant (api_scope): every store call uses it */
    endpoint ep;
    pthread_mutex_t mu;
    int n_choices, n_done;
    choice ch[MAX_CHOICES];
    int batch; /* the request's batch form: the choices go to the engine as one batch */
    /* options */
    int stream;
    int want_logprobs, n_logprobs;
    int echo;
    int max_tokens;
    int stop_at_eos;
    api_start start;
    int want_save;
    api_save save;
    const char *stops[MAX_STOPS]; /* borrowed from the request body until the choices copy them */
    int n_stops;
    char cmpl_id[48];
    long long created;
    /* prompt caching (prefix.c) */
    int chained;             /* the start is a chain root: the zero state or one stored state */
    ss_prefix root;          /* its root */
    long long start_tokens;  /* n_tokens of the request's own start (before any reuse) */
    int cached;              /* leading prompt tokens resumed from a stored state, not fed */
    char cached_id[SS_STORE_ID_LEN + 1];
    int n_cps;               /* checkpoints: positions in the prompt, increasing */
    int cps[API_MAX_CHECKPOINTS];
    float *cp_data[API_MAX_CHECKPOINTS];    /* the states there (engine thread) */
    int n_ccps;                             /* the automatic cache's checkpoints, likewise */
    int ccps[API_MAX_CHECKPOINTS];
    float *ccp_data[API_MAX_CHECKPOINTS];
    int eng_cps[2 * API_MAX_CHECKPOINTS];   /* both, relative to the tokens fed */
    api_search search; /* EP_SEARCH: what to look for with the query's state */
    api_retrieve *retr; /* "merge": {"retrieve"}: the first pass (search.c), else NULL */
    json_t *retrieved;  /* [{id, name, score, weight}]: the states it merged, for the answer */
} infer;

/*
 * The "batch" form of POST /v1/states and /v1/score: an array of objects, one choice each, that
 * carry their own fields instead of the body.
 */
typedef struct batch_spec {
    const char *own[4];   /* a member's own fields (NULL-terminated): not allowed in the body */
    const char *own_text; /* them, in words, for the message */
    const char *shape;    /* a member, in words, for the message */
    /* Read member i from item (an object); `where` ("batch[i].") prefixes its fields. */
    ss_err (*member)(ss_api *a, json_t *body, json_t *item, const char *where, infer *inf, int i);
} batch_spec;

/* ---- infer_job.c --------------------------------------------------------------------------- */

/* A new context for request r, owned by r from here on. Returns SS_OK or SS_ERR_NOMEM. */
ss_err infer_new(ss_api *a, ss_host_req *r, endpoint ep, infer **out);
/*
 * Submit one job per choice (base params completed per choice; in batch form all of them as one
 * engine batch), then park or start the stream. On failure answers the error (jobs already
 * queued are cancelled). Host thread.
 */
void infer_submit(infer *inf, const ss_job_params *base);
/* Append "data: <json>\n\n" to the stream (reference stolen); -1 when the client is gone. */
int infer_sse_send(ss_host_req *r, json_t *j);
/* End an event stream: the "[DONE]" event, then the end of the response. */
void infer_sse_done(ss_host_req *r);

/* ---- infer_answer.c ------------------------------------------------------------------------ */

/*
 * The stream event of token ev of choice c, whose text grew from byte `before` on: /v1/generate's
 * {text, token, logprob?, top_logprobs?} or a /v1/completions chunk. Engine thread.
 */
json_t *infer_token_event(infer *inf, const choice *c, const ss_token_event *ev, size_t before);
/* The continuation of a parked request (ss_host_cont): answer once every job is done. */
void infer_finish(void *app, ss_host_req *r, void *user);

/* ---- infer_parse.c ------------------------------------------------------------------------- */

/* The job parameters every choice of inf shares (kind and starting state). */
ss_job_params infer_base_params(infer *inf, ss_job_kind kind);
/*
 * The array of a batch form: 1..MAX_CHOICES members; sets inf->batch and inf->n_choices and
 * each choice's label ("<key>[i]"). SS_ERR_FORMAT when not a non-empty array, SS_ERR_INVALID
 * when too long.
 */
ss_err infer_batch_members(infer *inf, const json_t *v, const char *key);
/*
 * The batch form of s when the body has one (not absent, not null): sets inf->batch and the
 * choices and reads every member. Otherwise one choice, inf->batch stays 0 and the caller reads
 * it from the body. SS_ERR_FORMAT for a body field that belongs in the members, else the
 * member reader's errors.
 */
ss_err infer_parse_batch(ss_api *a, json_t *body, infer *inf, const batch_spec *s);
/*
 * One state to create: `prompt` (text) or `tokens` (ids) of o, into choice c. `where` prefixes
 * the field names in messages ("" or "batch[2]."). An empty prompt is allowed with `from`.
 * SS_ERR_FORMAT (both or neither given), else api_tokens' errors.
 */
ss_err infer_state_prompt(ss_api *a, json_t *o, int have_from, const char *where, choice *c);
/* The members of POST /v1/states and /v1/score in batch form. */
extern const batch_spec infer_states_batch, infer_score_batch;
/*
 * Context (optional) and continuation of scoring member i from o (the body itself outside the
 * batch form); `where` prefixes the field names in messages. SS_ERR_FORMAT without a
 * continuation, SS_ERR_INVALID when it is empty, else api_tokens' errors.
 */
ss_err infer_score_member(ss_api *a, json_t *body, json_t *o, const char *where, infer *inf, int i);
/*
 * What /v1/generate and /v1/completions share: stream, max_tokens (default dflt_max), logprobs,
 * ignore_eos, stop, sampling, seed and the starting state, into inf and *p; then each choice's
 * buffers. SS_ERR_FORMAT / SS_ERR_INVALID naming the field, SS_ERR_UNSUPPORTED for stop strings
 * without a tokenizer, the starting state's errors (api_start_resolve), SS_ERR_NOMEM.
 */
ss_err infer_parse_generation(ss_api *a, json_t *body, infer *inf, ss_job_params *p,
                              long long dflt_max);
/*
 * "save_state" of /v1/generate: absent, null or false, true, or {name?, tags?, metadata?}.
 * SS_ERR_FORMAT, SS_ERR_PERM without write scope, SS_ERR_INVALID for a name with "prompts",
 * else api_save_parse's errors.
 */
ss_err infer_parse_save_state(ss_api *a, json_t *body, infer *inf);
/*
 * The choices of /v1/completions: n per prompt, from "prompt": "text" | [ids] | ["text", ...] |
 * [[ids], ...]; absent = empty. The two array forms are a batch: its choices go to the engine
 * together (Mixture of Tokens mixes them). SS_ERR_INVALID for n or too many choices, else
 * api_tokens' errors.
 */
ss_err infer_completion_prompts(ss_api *a, json_t *body, infer *inf);

/* ---- search.c ----------------------------------------------------------------------------- */

/*
 * k (default dflt_k), tag and prefix of o into s (free it with api_search_free on success).
 * SS_ERR_UNSUPPORTED when the server keeps no retrieval keys (--remote), SS_ERR_FORMAT for a
 * wrong type, SS_ERR_INVALID for k outside 1..SS_STORE_SEARCH_MAX or a bad tag, SS_ERR_NOMEM.
 * `where` prefixes the field names in messages.
 */
ss_err api_search_parse(ss_api *a, const ss_store_scope *sc, json_t *o, const char *where,
                        int dflt_k, api_search *s);
void api_search_free(api_search *s);
/*
 * The states most similar to `state` (state_floats floats of the served model) under s, best
 * first, as *data = [{"state": record, "score": cosine}] (prompt-cache entries left out unless s
 * asks for their tag; states deleted meanwhile skipped). ss_store_search's errors, SS_ERR_NOMEM.
 */
ss_err api_search_run(ss_api *a, const api_search *s, const float *state, json_t **data);
/* The answer of a search whose query ran as a prefill job (EP_SEARCH). Host thread. */
void api_search_answer(infer *inf, ss_host_req *r);

/*
 * Retrieve-then-merge (docs/api.md, "Search"): a request whose "merge" is {"retrieve": {query?,
 * k?, weights?, temperature?, tag?, prefix?}} first finds the k stored states closest to the
 * query (default dflt_query: the request's prompt, or context for score), then merges them
 * linearly with uniform weights or a softmax of score / temperature (default 0.01): body's
 * "merge" becomes {"sources": [...]} and next(inf, body) handles the request as usual (on a host
 * thread, from the continuation when the query ran as a prefill job). inf->retrieved then lists
 * the states used for the answer. Errors: SS_ERR_FORMAT (the shape of merge / retrieve),
 * SS_ERR_INVALID (k, weights, temperature, no query, an empty query, nothing found), and the
 * search's or the query's errors.
 */
typedef ss_err (*api_retrieve_next)(infer *inf, json_t *body);
int api_retrieve_wanted(json_t *body);
ss_err api_retrieve_start(infer *inf, json_t *body, const json_t *dflt_query,
                          api_retrieve_next next);
/* Cancel the query's job when it runs (the client went away); free (NULL: no-op). */
void api_retrieve_cancel(infer *inf);
void api_retrieve_free(api_retrieve *rt);

/* ---- prefix.c ----------------------------------------------------------------------------- */

/* The chain root of the request's start (inf->chained, inf->root, inf->start_tokens); call it
 * once the start is resolved. SS_ERR_IO. */
ss_err prefix_root(infer *inf);
/*
 * "checkpoints": [positions] or "checkpoint_every": N of o (the body, or save_state; `where`
 * prefixes the names in messages) for a prompt of n_prompt tokens: positions 1..n_prompt - 1,
 * or up to n_prompt when upto (save_state: the saved state comes after generation).
 * SS_ERR_FORMAT (types, both given), SS_ERR_INVALID (out of range, unsorted, repeated, more
 * than API_MAX_CHECKPOINTS), SS_ERR_UNSUPPORTED in a batch form.
 */
ss_err prefix_parse_checkpoints(json_t *o, const char *where, infer *inf, int n_prompt, int upto);
/* Bytes of a checkpoint copied by the engine (cp_data, ccp_data): the state's, plus its decay's
 * when it has one, the layout of a stored blob. */
size_t prefix_cp_bytes(const ss_model_info *in, const float *cp);
/* The index entry of the state after toks[0..n) then more[0..n_more) from the request's start. */
void prefix_entry(infer *inf, const int32_t *toks, int n, const int32_t *more, int n_more,
                  ss_store_prefix_entry *pe);
/* The automatic cache's checkpoints for this request (inf->ccps), after any reuse. */
void api_cache_plan(infer *inf);
/* Store the automatic cache's checkpoints the job reached, evicting to stay in the budget. */
void api_cache_store(infer *inf);
/* Complete choice c's job parameters: the prompt past the cached part, the checkpoints. */
void prefix_job_params(choice *c, ss_job_params *p);
/*
 * "reuse" (default: the daemon's --prefix-cache): look up the longest stored prefix of the
 * prompt on the same root and make it the start (p's start too, when p is not NULL); counts
 * the lookup. A miss is not an error. SS_ERR_FORMAT, SS_ERR_NOMEM, the store's read errors.
 */
ss_err prefix_reuse(ss_api *a, json_t *body, infer *inf, ss_job_params *p);
/*
 * Store choice c's final state (and first its checkpoints, each the parent of the next, the
 * last the parent of the final one), each indexed under its prefix when the start is a chain
 * root. *rec is the final record, with "checkpoints": [records] when there are any.
 */
ss_err prefix_save(infer *inf, const api_save *save, const choice *c, const ss_job_result *res,
                   json_t **rec);

#endif
