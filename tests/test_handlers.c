/*
 * test_handlers.c - the API's handlers driven without HTTP and without a socket.
 *
 * This file is the API's host (api/ss_host.h) for the test: a request is a struct in memory, an
 * answer is kept in it, a parked request waits on a condition variable until the engine thread
 * wakes it, and the continuation then runs here, on the test's thread, as a host thread would.
 * The API runs on the mamba1-tiny fixture with a real store and engine, and the answers are
 * compared with values: /v1/models fields, a state stored and read back (token counts, the
 * golden greedy continuation from it, plain and as an event stream), a stored merge scored
 * against the golden log-probabilities, and the status and code of error answers.
 */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "ss_api.h"
#include "ss_host.h"
#include "ss_model.h"
#include "safetensors.h"
#include "ss_store.h"
#include "metrics.h"
#include "engine.h"
#include "test_util.h"

/* ---- the in-memory host ---------------------------------------------------------------------- */

#define MAX_QUERY 4

struct ss_host_req {
    const char *param; /* the {state} path parameter, or NULL */
    const char *query_name[MAX_QUERY], *query_value[MAX_QUERY];
    const char *body;
    ss_host_scope scope;
    const char *tenant;
    void *user;
    void (*user_free)(void *);
    ss_host_over_fn over_fn;

    pthread_mutex_t mu; /* guards everything below (the engine thread writes it) */
    pthread_cond_t cv;  /* signalled on wake, stream writes and the stream's end */
    int refs;
    ss_host_cont cont;
    void *cont_user;
    int woken;
    int status; /* 0 until answered */
    char *out;  /* the answer's body, or the stream's bytes */
    size_t out_len;
    char ctype[64];
    int streaming, stream_ended;
    char code[64]; /* of an error answer; its message is then `out` */
};

const char *ss_host_param(ss_host_req *r, const char *name)
{
    return strcmp(name, "state") ? NULL : r->param;
}

const char *ss_host_query(ss_host_req *r, const char *name)
{
    for (int i = 0; i < MAX_QUERY && r->query_name[i]; i++)
        if (!strcmp(r->query_name[i], name)) return r->query_value[i];
    return NULL;
}

const char *ss_host_body_data(ss_host_req *r, size_t *len)
{
    const char *b = r->body ? r->body : "";
    if (len) *len = strlen(b);
    return b;
}

ss_host_scope ss_host_scope_of(ss_host_req *r)
{
    return r->scope;
}

const char *ss_host_tenant(ss_host_req *r)
{
    return r->tenant;
}

int ss_host_stopping(ss_host_req *r)
{
    (void)r;
    return 0;
}

void ss_host_set_user(ss_host_req *r, void *user, void (*free_fn)(void *), ss_host_over_fn over_fn)
{
    r->user = user;
    r->user_free = free_fn;
    r->over_fn = over_fn;
}

void ss_host_respond(ss_host_req *r, int status, const char *content_type, void *body, size_t len)
{
    pthread_mutex_lock(&r->mu);
    if (r->status) {
        free(body);
    } else {
        r->status = status;
        r->out = body;
        r->out_len = len;
        snprintf(r->ctype, sizeof r->ctype, "%s", content_type ? content_type : "");
    }
    pthread_mutex_unlock(&r->mu);
}

/* The error body is the host's to build (server/host.c): kept here as its two fields. */
void ss_host_respond_error(ss_host_req *r, int status, const char *code, const char *message)
{
    pthread_mutex_lock(&r->mu);
    if (!r->status) {
        r->status = status;
        snprintf(r->code, sizeof r->code, "%s", code);
        r->out = strdup(message);
        r->out_len = strlen(message);
    }
    pthread_mutex_unlock(&r->mu);
}

void ss_host_add_header(ss_host_req *r, const char *name, const char *value)
{
    (void)r;
    (void)name;
    (void)value;
}

void ss_host_wait(ss_host_req *r, ss_host_cont cont, void *user)
{
    pthread_mutex_lock(&r->mu);
    r->cont = cont;
    r->cont_user = user;
    pthread_mutex_unlock(&r->mu);
}

void ss_host_wake(ss_host_req *r)
{
    pthread_mutex_lock(&r->mu);
    r->woken = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

int ss_host_client_gone(ss_host_req *r)
{
    (void)r;
    return 0;
}

void ss_host_stream_start(ss_host_req *r, const char *content_type)
{
    pthread_mutex_lock(&r->mu);
    if (!r->status) {
        r->status = 200;
        r->streaming = 1;
        snprintf(r->ctype, sizeof r->ctype, "%s", content_type);
    }
    pthread_mutex_unlock(&r->mu);
}

int ss_host_stream_write(ss_host_req *r, const void *data, size_t len)
{
    pthread_mutex_lock(&r->mu);
    int rc = -1;
    char *p = r->stream_ended ? NULL : realloc(r->out, r->out_len + len + 1);
    if (p) {
        memcpy(p + r->out_len, data, len);
        r->out = p;
        r->out_len += len;
        p[r->out_len] = '\0';
        rc = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void ss_host_stream_end(ss_host_req *r)
{
    pthread_mutex_lock(&r->mu);
    r->stream_ended = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void ss_host_req_ref(ss_host_req *r)
{
    pthread_mutex_lock(&r->mu);
    r->refs++;
    pthread_mutex_unlock(&r->mu);
}

void ss_host_req_unref(ss_host_req *r)
{
    pthread_mutex_lock(&r->mu);
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left) return;
    if (r->user_free) r->user_free(r->user);
    free(r->out);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

/* ---- driving a request ----------------------------------------------------------------------- */

static ss_api *api;

/* What a request got: status, body (a JSON value when it parsed; NULL otherwise) and the text. */
typedef struct answer {
    int status;
    json_t *json;
    char *text;    /* the body, the whole event stream, or an error's message; NUL-terminated */
    char code[64]; /* the code of an error answer, else "" */
} answer;

static void answer_free(answer *a)
{
    json_decref(a->json);
    free(a->text);
}

/* The handler of the route named `name` (its metrics label) in the API's table. */
static ss_host_handler handler_of(const char *name)
{
    int n;
    const ss_host_route *rt = ss_api_routes(api, &n);
    for (int i = 0; i < n; i++)
        if (!strcmp(rt[i].name, name)) return rt[i].handler;
    fprintf(stderr, "no route named %s\n", name);
    exit(1);
}

/* Is the request finished: answered, or its stream ended? Caller holds r->mu. */
static int finished(const ss_host_req *r)
{
    return r->streaming ? r->stream_ended : r->status != 0;
}

/*
 * Run route `name` for a request with the given body (may be NULL), {state} parameter (may be
 * NULL) and query (a "name", "value", ... list ending with NULL), as a host would: call the
 * handler, then while the request is parked wait for its wake and run the continuation.
 */
/* The caller's key for the next run() calls (tests of tenants change them). */
static ss_host_scope run_scope = SS_HOST_SCOPE_WRITE;
static const char *run_tenant;

static answer run(const char *name, const char *param, const char *body, ...)
{
    ss_host_req *r = calloc(1, sizeof *r);
    if (!r) exit(1);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->refs = 1;
    r->param = param;
    r->body = body;
    r->scope = run_scope;
    r->tenant = run_tenant;
    va_list ap;
    va_start(ap, body);
    for (int i = 0; i < MAX_QUERY; i++) {
        if (!(r->query_name[i] = va_arg(ap, const char *))) break;
        r->query_value[i] = va_arg(ap, const char *);
    }
    va_end(ap);

    handler_of(name)(api, r);
    pthread_mutex_lock(&r->mu);
    while (!finished(r)) {
        if (!r->cont) {
            fprintf(stderr, "%s: the handler neither answered nor parked\n", name);
            exit(1);
        }
        while (!r->woken && !finished(r)) pthread_cond_wait(&r->cv, &r->mu);
        if (finished(r)) break;
        ss_host_cont cont = r->cont;
        void *user = r->cont_user;
        r->woken = 0;
        r->cont = NULL;
        pthread_mutex_unlock(&r->mu);
        cont(api, r, user);
        pthread_mutex_lock(&r->mu);
    }
    answer a = {.status = r->status, .text = strndup(r->out ? r->out : "", r->out_len)};
    memcpy(a.code, r->code, sizeof a.code);
    pthread_mutex_unlock(&r->mu);
    a.json = r->streaming || a.code[0] ? NULL : json_loads(a.text, 0, NULL);
    if (r->over_fn) r->over_fn(r->user, 0);
    ss_host_req_unref(r);
    return a;
}

#define CHECK_ERROR(a, want_status, want_code)                                                     \
    CHECKF((a).status == (want_status) && !strcmp((a).code, want_code) && (a).text[0],             \
           "got %d %s: %s, want %d %s", (a).status, (a).code, (a).text, want_status, want_code)

/* ---- the tests ------------------------------------------------------------------------------- */

static golden G;

/* A JSON array text of n token ids (malloc'd). */
static char *ids_text(const int32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    char *t = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return t;
}

static int tokens_equal(const json_t *arr, const int32_t *want, size_t n)
{
    if (json_array_size(arr) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(arr, i)) != want[i]) return 0;
    return 1;
}

static void test_models(const ss_model_info *info)
{
    answer a = run("models", NULL, NULL, NULL);
    json_t *m = json_array_get(json_object_get(a.json, "data"), 0);
    CHECKF(a.status == 200, "GET /v1/models: %d", a.status);
    CHECK(!strcmp(json_string_value(json_object_get(m, "id")), "mamba1-tiny"));
    CHECK(!strcmp(json_string_value(json_object_get(m, "family")), "mamba1"));
    CHECK(!strcmp(json_string_value(json_object_get(m, "weights")), "stored"));
    CHECK(json_integer_value(json_object_get(m, "d_model")) == 64);
    CHECK(json_integer_value(json_object_get(m, "vocab_size")) == info->vocab_size);
    CHECK(json_integer_value(json_object_get(m, "state_bytes")) ==
          4 * (4 * (128 * 4 + 128 * 16) + 64));
    CHECK(!strcmp(json_string_value(json_object_get(m, "fingerprint")), info->fingerprint));
    CHECK(json_is_false(json_object_get(m, "tokenizer")));
    answer_free(&a);
}

/* POST /v1/states from seq_a, read back; then the golden greedy continuation from it. */
static void test_state_and_generate(void)
{
    size_t n, n12;
    const int32_t *ids = gt(&G, "seq_a.ids", &n);
    const int32_t *g12 = gt(&G, "seq_a.greedy12", &n12);
    char *toks = ids_text(ids, n), body[8192];
    snprintf(body, sizeof body, "{\"tokens\": %s, \"name\": \"seq_a\", \"tags\": [\"t1\"]}", toks);
    answer a = run("states_create", NULL, body, NULL);
    CHECKF(a.status == 201, "POST /v1/states: %d %s", a.status, a.text);
    CHECK(json_integer_value(json_object_get(a.json, "n_tokens")) == (json_int_t)n);
    const char *id = json_string_value(json_object_get(a.json, "id"));
    CHECK(id && !strncmp(id, "st_", 3));
    char seq_a_id[64];
    snprintf(seq_a_id, sizeof seq_a_id, "%s", id ? id : "");
    answer_free(&a);

    a = run("states_get", "seq_a", NULL, NULL);
    CHECKF(a.status == 200, "GET /v1/states/seq_a: %d", a.status);
    CHECK(json_integer_value(json_object_get(a.json, "n_tokens")) == (json_int_t)n);
    CHECK(!strcmp(json_string_value(json_object_get(a.json, "name")), "seq_a"));
    CHECK(!strcmp(json_string_value(json_array_get(json_object_get(a.json, "tags"), 0)), "t1"));
    answer_free(&a);

    /* from seq_a with an empty prompt at temperature 0, saved: greedy12, n_tokens n + 12 */
    snprintf(body, sizeof body,
             "{\"state\": \"seq_a\", \"prompt\": [], \"max_tokens\": %zu, \"temperature\": 0, "
             "\"ignore_eos\": true, \"save_state\": {\"name\": \"seq_a_more\"}}",
             n12);
    a = run("generate", NULL, body, NULL);
    CHECKF(a.status == 200 && tokens_equal(json_object_get(a.json, "tokens"), g12, n12),
           "greedy12 from seq_a: %d %s", a.status, a.text);
    CHECK(!strcmp(json_string_value(json_object_get(a.json, "finish_reason")), "length"));
    json_t *saved = json_object_get(a.json, "state");
    CHECK(json_integer_value(json_object_get(saved, "n_tokens")) == (json_int_t)(n + n12));
    json_t *parent = json_array_get(json_object_get(saved, "parents"), 0);
    CHECK(json_number_value(json_object_get(parent, "weight")) == 1.0);
    CHECK(!strcmp(json_string_value(json_object_get(parent, "id")), seq_a_id));
    answer_free(&a);

    /* the same as an event stream: one event per token, then the final one, then [DONE] */
    snprintf(body, sizeof body,
             "{\"state\": \"seq_a\", \"max_tokens\": %zu, \"temperature\": 0, \"ignore_eos\": "
             "true, \"stream\": true}",
             n12);
    a = run("generate", NULL, body, NULL);
    size_t got = 0;
    int good = a.status == 200, last_finish = 0;
    for (char *ev = strstr(a.text, "data: "); good && ev; ev = strstr(ev + 6, "data: ")) {
        if (!strncmp(ev + 6, "[DONE]", 6)) break;
        json_t *e = json_loadb(ev + 6, strcspn(ev + 6, "\n"), 0, NULL);
        if (json_object_get(e, "token"))
            good = got < n12 && json_integer_value(json_object_get(e, "token")) == g12[got++];
        else
            last_finish = !strcmp(json_string_value(json_object_get(e, "finish_reason")), "length");
        json_decref(e);
    }
    CHECKF(good && got == n12 && last_finish && strstr(a.text, "data: [DONE]\n\n"),
           "streamed greedy12: %s", a.text);
    answer_free(&a);
    free(toks);
}

/* A stored merge of seq_a and seq_b scored on seq_q: the golden log-probabilities. */
static void test_merge_and_score(void)
{
    const int V = 512;
    size_t nb, qn;
    const int32_t *b_ids = gt(&G, "seq_b.ids", &nb), *q = gt(&G, "seq_q.ids", &qn);
    const float *ql = gt(&G, "merge_ab_25_75.query_logits", NULL);
    char *toks = ids_text(b_ids, nb), body[8192];
    snprintf(body, sizeof body, "{\"tokens\": %s, \"name\": \"seq_b\"}", toks);
    answer a = run("states_create", NULL, body, NULL);
    CHECKF(a.status == 201, "POST /v1/states seq_b: %d", a.status);
    answer_free(&a);
    free(toks);
    a = run("states_merge", NULL,
            "{\"sources\": [{\"state\": \"seq_a\", \"weight\": 0.25}, {\"state\": \"seq_b\", "
            "\"weight\": 0.75}], \"name\": \"ab\"}",
            NULL);
    CHECKF(a.status == 201, "stored merge: %d %s", a.status, a.text);
    CHECK(json_array_size(json_object_get(a.json, "parents")) == 2);
    answer_free(&a);

    toks = ids_text(q + 1, qn - 1);
    snprintf(body, sizeof body, "{\"state\": \"ab\", \"context\": [%d], \"continuation\": %s}",
             q[0], toks);
    free(toks);
    a = run("score", NULL, body, NULL);
    json_t *lps = json_object_get(a.json, "token_logprobs");
    CHECKF(a.status == 200 && json_array_size(lps) == qn - 1, "score: %d %s", a.status, a.text);
    double worst = 0;
    for (size_t i = 1; i < qn && json_array_size(lps) == qn - 1; i++) {
        double want = ss_logprob_of(ql + (i - 1) * V, V, q[i]);
        double d = fabs(json_number_value(json_array_get(lps, i - 1)) - want);
        if (d > worst) worst = d;
    }
    CHECKF(worst < 4e-3, "merge scored: log-probs off by %.3g", worst);
    answer_free(&a);
}

/* Error answers: the status and code of the one table. */
static void test_errors(void)
{
    answer a = run("states_create", NULL, "{\"tokens\": [1, 2", NULL);
    CHECK_ERROR(a, 400, "bad_json");
    answer_free(&a);
    a = run("states_create", NULL, "[1, 2]", NULL);
    CHECK_ERROR(a, 400, "bad_json");
    answer_free(&a);
    a = run("states_create", NULL, "{\"tokens\": \"x\"}", NULL);
    CHECK_ERROR(a, 400, "unsupported"); /* text without a tokenizer */
    answer_free(&a);
    a = run("states_create", NULL, "{}", NULL);
    CHECK_ERROR(a, 400, "bad_request");
    answer_free(&a);
    a = run("states_get", "no_such_state", NULL, NULL);
    CHECK_ERROR(a, 404, "not_found");
    answer_free(&a);
    a = run("generate", NULL, "{\"prompt\": [1, 512]}", NULL);
    CHECK_ERROR(a, 422, "invalid_value"); /* token id outside the vocabulary */
    answer_free(&a);
    a = run("generate", NULL, "{\"prompt\": [1], \"logprobs\": 21}", NULL);
    CHECK_ERROR(a, 422, "invalid_value");
    answer_free(&a);
    a = run("generate", NULL, "{\"prompt\": []}", NULL);
    CHECK_ERROR(a, 422, "invalid_value"); /* empty prompt from the zero state */
    answer_free(&a);
    a = run("states_create", NULL, "{\"tokens\": [1], \"name\": \"seq_a\"}", NULL);
    CHECK_ERROR(a, 409, "already_exists");
    answer_free(&a);
    a = run("states_list", NULL, NULL, "limit", "0", NULL);
    CHECK_ERROR(a, 422, "invalid_value");
    answer_free(&a);
    a = run("states_data", "seq_a", NULL, "dtype", "F64", NULL);
    CHECK_ERROR(a, 422, "invalid_value");
    answer_free(&a);
    a = run("states_merge", NULL, "{\"sources\": []}", NULL);
    CHECK_ERROR(a, 422, "invalid_value");
    answer_free(&a);
    a = run("tokenize", NULL, "{\"text\": \"hi\"}", NULL);
    CHECK_ERROR(a, 400, "unsupported"); /* no tokenizer */
    answer_free(&a);
    a = run("metrics", NULL, NULL, NULL);
    CHECK_ERROR(a, 404, "not_found"); /* this API was made without a metrics registry */
    answer_free(&a);
    /* the catalog holds seq_a, seq_a_more, seq_b and ab; the tag t1 only seq_a */
    a = run("states_list", NULL, NULL, "limit", "10", NULL);
    CHECKF(a.status == 200 && json_array_size(json_object_get(a.json, "data")) == 4, "list: %s",
           a.text);
    answer_free(&a);
    a = run("states_list", NULL, NULL, "tag", "t1", NULL);
    json_t *only = json_array_get(json_object_get(a.json, "data"), 0);
    CHECKF(a.status == 200 && json_array_size(json_object_get(a.json, "data")) == 1 &&
               !strcmp(json_string_value(json_object_get(only, "name")), "seq_a"),
           "list by tag: %s", a.text);
    answer_free(&a);
    a = run("states_delete", "seq_b", NULL, NULL);
    CHECKF(a.status == 204 && a.text[0] == '\0', "DELETE: %d", a.status);
    answer_free(&a);
    a = run("states_delete", "seq_b", NULL, NULL);
    CHECK_ERROR(a, 404, "not_found");
    answer_free(&a);
}


/* ---- prompt caching -------------------------------------------------------------------------- */

/* The blob of stored state ref (malloc'd, *len bytes) or NULL. */
static unsigned char *blob_of(ss_store *st, const char *ref, size_t *len)
{
    *len = 0;
    if (ss_store_get_blob(st, ref, NULL, NULL, 0, len, NULL) != SS_ERR_TOO_LARGE) return NULL;
    unsigned char *b = malloc(*len);
    if (b && ss_store_get_blob(st, ref, NULL, b, *len, len, NULL)) {
        free(b);
        return NULL;
    }
    return b;
}

/*
 * Are stored states a and b the same bits? The model's kernels sum every token the same way
 * whatever its chunk (docs/api.md, exact prefix reuse), so a state reached by another chunking
 * or from a stored prefix is byte for byte the same.
 */
static int same_blob(ss_store *st, const char *a, const char *b)
{
    size_t la, lb;
    float *x = (float *)blob_of(st, a, &la), *y = (float *)blob_of(st, b, &lb);
    int same = x && y && la == lb && !memcmp(x, y, la);
    if (!same && x && y && la == lb) {
        double diff = 0;
        for (size_t i = 0; i < la / sizeof(float); i++)
            if (fabs((double)x[i] - y[i]) > diff) diff = fabs((double)x[i] - y[i]);
        fprintf(stderr, "%s vs %s: max diff %g\n", a, b, diff);
    }
    free(x);
    free(y);
    return same;
}

/* The value of a Prometheus sample line starting with `name ` in the text, or -1. */
static long long metric(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, name, n) && p[n] == ' ') return atoll(p + n + 1);
    return -1;
}

/* usage.cached_tokens of an answer */
static long long cached_of(const answer *a)
{
    return json_integer_value(json_object_get(json_object_get(a->json, "usage"), "cached_tokens"));
}

/* A fresh API of its own (model, store, engine, metrics) in place of the global one. */
typedef struct rig {
    ss_api *saved; /* the global api, given back by rig_close */
    char dir[256];
    ss_model *m;
    ss_store *st;
    ss_engine *eng;
    ss_metrics *mx;
    const ss_model_info *info;
} rig;

/* The next rig's --prefix-cache-tenant-share (0: none). */
static double rig_tenant_share;

/* Open model_dir; cache_states > 0: an automatic cache of that many states, every `every`
 * tokens; chunk > 0: the engine's prefill chunk; key: the retrieval key kind (NULL: default). */
static void rig_open_key(rig *g, const char *model_dir, int cache_states, int every, int chunk,
                         const char *key)
{
    memset(g, 0, sizeof *g);
    g->saved = api;
    test_tmpdir(g->dir, sizeof g->dir, "prefix");
    REQUIRE_OK(ss_metrics_new(&g->mx));
    REQUIRE_OK(ss_model_open(&g->m, fixture_path(model_dir), NULL));
    g->info = ss_model_get_info(g->m);
    ss_api_params ap = {.max_body = 1 << 20, .max_tokens = 64, .model_name = "m",
                        .metrics = g->mx, .prefix_cache_every = every,
                        .prefix_cache_budget =
                            cache_states ? (size_t)cache_states * g->info->state_bytes + 100 : 0,
                        .prefix_cache_tenant_share = rig_tenant_share,
                        .retrieval_key = key};
    REQUIRE_OK(ss_api_new(&api, &ap));
    ss_store_params sp = ss_store_default_params();
    REQUIRE_OK(ss_store_open(&g->st, g->dir, &sp));
    ss_engine_params ep = ss_engine_default_params();
    if (chunk) ep.prefill_chunk = chunk;
    REQUIRE_OK(ss_engine_open(&g->eng, g->m, &ep));
    ss_api_attach(api, g->m, NULL, g->st, g->eng);
}

static void rig_open(rig *g, const char *model_dir, int cache_states, int every, int chunk)
{
    rig_open_key(g, model_dir, cache_states, every, chunk, NULL);
}

static void rig_close(rig *g)
{
    ss_api_detach_engine(api);
    ss_engine_close(g->eng);
    ss_api_free(api);
    ss_metrics_free(g->mx);
    ss_store_close(g->st);
    ss_model_close(g->m);
    test_rm_rf(g->dir);
    api = g->saved;
}

/*
 * Prompt caching on one model: checkpoints equal separate saves of each prefix (bytes), and a
 * generate / score / completion that resumes from a stored prefix gives the same tokens,
 * log-probabilities and saved state (bytes) as one that feeds the whole prompt; the counters
 * and usage.cached_tokens say what happened; bad checkpoints get 4xx.
 */
static void test_prefix(const char *model_dir)
{
    rig g;
    rig_open(&g, model_dir, 0, 0, 16); /* chunks of 16: the prompts below span several */
    ss_store *st = g.st;
    const int V = g.info->vocab_size;

    enum { N = 45 };
    int32_t P[N];
    for (int i = 0; i < N; i++) P[i] = (int32_t)((i * 37 + 11) % (V - 1)) + 1;
    char *full = ids_text(P, N), *pre = ids_text(P, 30), *ctx = ids_text(P, 36),
         *cont = ids_text(P + 36, N - 36);
    char body[8192];

    /* checkpoints along a prefix of 30 tokens */
    snprintf(body, sizeof body, "{\"tokens\": %s, \"name\": \"p\", \"tags\": [\"k\"], "
             "\"checkpoints\": [7, 16, 23]}", pre);
    answer a = run("states_create", NULL, body, NULL);
    json_t *cps = json_object_get(a.json, "checkpoints");
    CHECKF(a.status == 201 && json_array_size(cps) == 3, "%s: checkpoints: %d %s", model_dir,
           a.status, a.text);
    const int at[3] = {7, 16, 23};
    char prev[64] = "";
    for (int k = 0; k < 3 && json_array_size(cps) == 3; k++) {
        json_t *r = json_array_get(cps, (size_t)k);
        char want[32];
        snprintf(want, sizeof want, "p:%d", at[k]);
        CHECK(!strcmp(json_string_value(json_object_get(r, "name")), want));
        CHECK(json_integer_value(json_object_get(r, "n_tokens")) == at[k]);
        const char *par = json_string_value(
            json_object_get(json_array_get(json_object_get(r, "parents"), 0), "id"));
        CHECK(k == 0 ? par == NULL : par && !strcmp(par, prev));
        snprintf(prev, sizeof prev, "%s", json_string_value(json_object_get(r, "id")));
        /* a separate save of the same prefix: the same bytes */
        char *sep = ids_text(P, (size_t)at[k]);
        snprintf(body, sizeof body, "{\"tokens\": %s, \"name\": \"sep%d\"}", sep, at[k]);
        free(sep);
        answer b = run("states_create", NULL, body, NULL);
        char sname[32];
        snprintf(sname, sizeof sname, "sep%d", at[k]);
        CHECKF(b.status == 201 && same_blob(st, want, sname), "%s: checkpoint %d != separate save",
               model_dir, at[k]);
        answer_free(&b);
    }
    const char *par = json_string_value(
        json_object_get(json_array_get(json_object_get(a.json, "parents"), 0), "id"));
    CHECK(par && !strcmp(par, prev)); /* the final state's parent: the last checkpoint */
    answer_free(&a);

    /* generate: with and without reuse, the same tokens, log-probabilities and state bytes */
    snprintf(body, sizeof body, "{\"prompt\": %s, \"max_tokens\": 6, \"temperature\": 0, "
             "\"ignore_eos\": true, \"logprobs\": 2, \"reuse\": false, "
             "\"save_state\": {\"name\": \"g0\"}}", full);
    answer g0 = run("generate", NULL, body, NULL);
    snprintf(body, sizeof body, "{\"prompt\": %s, \"max_tokens\": 6, \"temperature\": 0, "
             "\"ignore_eos\": true, \"logprobs\": 2, \"reuse\": true, "
             "\"save_state\": {\"name\": \"g1\"}}", full);
    answer g1 = run("generate", NULL, body, NULL);
    CHECKF(g0.status == 200 && g1.status == 200, "%s: generate %d %s / %d %s", model_dir,
           g0.status, g0.text, g1.status, g1.text);
    CHECKF(cached_of(&g0) == 0 && cached_of(&g1) == 30, "%s: cached %lld, %lld", model_dir,
           cached_of(&g0), cached_of(&g1));
    json_t *u1 = json_object_get(g1.json, "usage");
    CHECK(json_integer_value(json_object_get(u1, "prompt_tokens")) == N);
    CHECKF(json_equal(json_object_get(g0.json, "tokens"), json_object_get(g1.json, "tokens")) &&
               json_equal(json_object_get(g0.json, "logprobs"),
                          json_object_get(g1.json, "logprobs")),
           "%s: reuse changed the generation", model_dir);
    CHECKF(same_blob(st, "g0", "g1"), "%s: reuse changed the saved state", model_dir);
    CHECK(json_integer_value(json_object_get(json_object_get(g1.json, "state"), "n_tokens")) ==
          N + 6);
    answer_free(&g0);
    answer_free(&g1);

    /* score: the same log-probabilities; the hit is the longest stored prefix of the context */
    snprintf(body, sizeof body, "{\"context\": %s, \"continuation\": %s, \"reuse\": false}", ctx,
             cont);
    answer s0 = run("score", NULL, body, NULL);
    snprintf(body, sizeof body, "{\"context\": %s, \"continuation\": %s, \"reuse\": true}", ctx,
             cont);
    answer s1 = run("score", NULL, body, NULL);
    CHECKF(s0.status == 200 && s1.status == 200 && cached_of(&s1) == 30 &&
               json_equal(json_object_get(s0.json, "token_logprobs"),
                          json_object_get(s1.json, "token_logprobs")),
           "%s: score with reuse: %s vs %s", model_dir, s0.text, s1.text);
    answer_free(&s0);
    answer_free(&s1);

    /* completions: n = 2 choices share the cached prefix */
    snprintf(body, sizeof body, "{\"prompt\": %s, \"max_tokens\": 3, \"temperature\": 0, "
             "\"n\": 2, \"reuse\": true}", full);
    a = run("completions", NULL, body, NULL);
    CHECKF(a.status == 200 && cached_of(&a) == 60, "%s: completions: %s", model_dir, a.text);
    answer_free(&a);

    /* a copy of a state (no tokens fed) is not indexed: the shortest stored prefix stays 7 */
    a = run("states_create", NULL, "{\"from\": \"p\", \"tokens\": [], \"name\": \"copy\"}", NULL);
    CHECKF(a.status == 201, "copy: %s", a.text);
    answer_free(&a);
    /* misses: from another start (the same tokens), shorter than any stored state */
    snprintf(body, sizeof body, "{\"state\": \"sep7\", \"prompt\": %s, \"max_tokens\": 1, "
             "\"reuse\": true}", pre);
    a = run("generate", NULL, body, NULL);
    CHECK(a.status == 200 && cached_of(&a) == 0);
    answer_free(&a);
    snprintf(body, sizeof body, "{\"prompt\": [%d, %d, %d], \"max_tokens\": 1, \"reuse\": true}",
             P[0], P[1], P[2]);
    a = run("generate", NULL, body, NULL);
    CHECK(a.status == 200 && cached_of(&a) == 0);
    answer_free(&a);
    a = run("metrics", NULL, NULL, NULL);
    CHECKF(metric(a.text, "statesoup_prefix_lookups_total") == 5 &&
               metric(a.text, "statesoup_prefix_hits_total") == 3 &&
               metric(a.text, "statesoup_prefix_tokens_saved_total") == 90 &&
               metric(a.text, "statesoup_prefix_misses_total{cause=\"different_start\"}") == 1 &&
               metric(a.text,
                      "statesoup_prefix_misses_total{cause=\"shorter_than_checkpoints\"}") == 1,
           "%s: prefix counters:\n%s", model_dir, a.text);
    answer_free(&a);

    /* bad checkpoints */
    static const char *const bad[] = {"[7, 5]", "[5, 5]", "[0]", "[30]", "[1.5]", "7"};
    static const int bad_status[] = {422, 422, 422, 422, 400, 400};
    for (int i = 0; i < 6; i++) {
        snprintf(body, sizeof body, "{\"tokens\": %s, \"checkpoints\": %s}", pre, bad[i]);
        a = run("states_create", NULL, body, NULL);
        CHECKF(a.status == bad_status[i], "checkpoints %s: %d %s", bad[i], a.status, a.text);
        answer_free(&a);
    }
    snprintf(body, sizeof body, "{\"tokens\": %s, \"checkpoint_every\": 0}", pre);
    a = run("states_create", NULL, body, NULL);
    CHECK_ERROR(a, 422, "invalid_value");
    answer_free(&a);
    int32_t *many = malloc(200 * sizeof *many);
    for (int i = 0; i < 200; i++) many[i] = P[i % N];
    char *mt = ids_text(many, 200), *big = malloc(strlen(mt) + 128);
    sprintf(big, "{\"tokens\": %s, \"checkpoint_every\": 2}", mt);
    a = run("states_create", NULL, big, NULL);
    CHECKF(a.status == 422 && strstr(a.text, "at most 64"), "too many checkpoints: %s", a.text);
    answer_free(&a);
    free(many);
    free(mt);
    free(big);

    rig_close(&g);
    free(full);
    free(pre);
    free(ctx);
    free(cont);
}

/* The number of records in a listing answer, and its "hidden" count (0 when absent). */
static size_t listed(const answer *a, long long *hidden)
{
    *hidden = json_integer_value(json_object_get(a->json, "hidden"));
    return json_array_size(json_object_get(a->json, "data"));
}

/*
 * The automatic cache: a budget of three states, checkpoints every 8 tokens. A 40-token prompt
 * leaves 8, 16, 24, 32, 40, of which the three most recent stay (LRU); they are hidden from the
 * listing but for ?include=cache; the same prompt again resumes at 32 (a generation needs one
 * token fed); a prompt that shares only the first 20 tokens misses because of an eviction; a
 * state the user saved is never evicted.
 */
static void test_prefix_cache(void)
{
    rig g;
    rig_open(&g, "models/mamba1-tiny", 3, 8, 0);
    const int V = g.info->vocab_size;
    enum { N = 40 };
    int32_t P[N], Q[N];
    for (int i = 0; i < N; i++) {
        P[i] = (int32_t)((i * 53 + 7) % (V - 1)) + 1;
        Q[i] = i < 20 ? P[i] : (int32_t)((i * 29 + 3) % (V - 1)) + 1;
    }
    char *pt = ids_text(P, N), *qt = ids_text(Q, N), *ut = ids_text(P, 4), body[4096];
    snprintf(body, sizeof body, "{\"tokens\": %s, \"name\": \"mine\"}", ut);
    answer a = run("states_create", NULL, body, NULL);
    CHECK(a.status == 201);
    answer_free(&a);
    snprintf(body, sizeof body, "{\"prompt\": %s, \"max_tokens\": 2, \"temperature\": 0}", pt);
    a = run("generate", NULL, body, NULL);
    CHECKF(a.status == 200 && cached_of(&a) == 4, "first: %s", a.text); /* "mine" */
    answer_free(&a);
    long long hidden = -1;
    a = run("states_list", NULL, NULL, NULL);
    CHECKF(listed(&a, &hidden) == 1 && hidden == 3, "listing: %s", a.text);
    answer_free(&a);
    a = run("states_list", NULL, NULL, "include", "cache", NULL);
    CHECKF(listed(&a, &hidden) == 4 && hidden == 0, "listing with the cache: %s", a.text);
    answer_free(&a);
    a = run("states_list", NULL, NULL, "include", "everything", NULL);
    CHECK_ERROR(a, 422, "invalid_value");
    answer_free(&a);
    a = run("generate", NULL, body, NULL);
    CHECKF(a.status == 200 && cached_of(&a) == 32, "again: %s", a.text);
    answer_free(&a);
    snprintf(body, sizeof body, "{\"prompt\": %s, \"max_tokens\": 1}", qt);
    a = run("generate", NULL, body, NULL);
    CHECKF(a.status == 200 && cached_of(&a) == 4, "shared 20: %s", a.text);
    answer_free(&a);
    a = run("states_get", "mine", NULL, NULL);
    CHECK(a.status == 200);
    answer_free(&a);
    a = run("metrics", NULL, NULL, NULL);
    CHECKF(metric(a.text, "statesoup_prefix_hits_total") == 3, "%s", a.text);
    answer_free(&a);
    /* without the user's state, a third prompt that shares the first 20 tokens: its miss is
     * counted as caused by an eviction (the entries at 8 and 16 went) */
    a = run("states_delete", "mine", NULL, NULL);
    answer_free(&a);
    for (int i = 20; i < N; i++) Q[i] = (int32_t)((i * 31 + 5) % (V - 1)) + 1;
    free(qt);
    qt = ids_text(Q, N);
    snprintf(body, sizeof body, "{\"prompt\": %s, \"max_tokens\": 1}", qt);
    a = run("generate", NULL, body, NULL);
    CHECK(a.status == 200 && cached_of(&a) == 0);
    answer_free(&a);
    a = run("metrics", NULL, NULL, NULL);
    CHECKF(metric(a.text, "statesoup_prefix_misses_total{cause=\"evicted\"}") == 1, "%s", a.text);
    answer_free(&a);

    rig_close(&g);
    free(pt);
    free(qt);
    free(ut);
}

/*
 * The budget among tenants (--prefix-cache-tenant-share 0.5 of four states, checkpoints every 8
 * tokens): the default tenant's 16-token prompt leaves entries at 8 and 16; tenant t-a's 40-token
 * prompt leaves five checkpoints, of which it keeps its two newest (its share) by evicting its
 * own, none of the default tenant's: that prompt again resumes at 8, t-a's at 32. Without the
 * share (the first rig) t-a's prompt takes the whole budget and the default tenant's misses.
 */
static void test_prefix_cache_tenants(void)
{
    for (int shared = 0; shared < 2; shared++) {
        rig g;
        rig_tenant_share = shared ? 0.5 : 0;
        rig_open(&g, "models/mamba1-tiny", 4, 8, 0);
        rig_tenant_share = 0;
        const int V = g.info->vocab_size;
        enum { N = 40, M = 16 };
        int32_t P[N], D[M];
        for (int i = 0; i < N; i++) P[i] = (int32_t)((i * 53 + 7) % (V - 1)) + 1;
        for (int i = 0; i < M; i++) D[i] = (int32_t)((i * 41 + 19) % (V - 1)) + 1;
        char *pt = ids_text(P, N), *dt = ids_text(D, M), pb[4096], db[4096];
        snprintf(pb, sizeof pb, "{\"prompt\": %s, \"max_tokens\": 1}", pt);
        snprintf(db, sizeof db, "{\"prompt\": %s, \"max_tokens\": 1}", dt);
        answer a = run("generate", NULL, db, NULL);
        CHECKF(a.status == 200 && cached_of(&a) == 0, "default tenant: %s", a.text);
        answer_free(&a);
        run_tenant = "t-a";
        a = run("generate", NULL, pb, NULL);
        CHECKF(a.status == 200 && cached_of(&a) == 0, "t-a: %s", a.text);
        answer_free(&a);
        long long hidden = -1;
        a = run("states_list", NULL, NULL, "include", "cache", NULL);
        CHECKF(listed(&a, &hidden) == (shared ? 2u : 4u), "share %d: t-a's entries: %s", shared,
               a.text);
        answer_free(&a);
        /* the cache's occupancy, and t-a's part of it, in /metrics */
        const long long sb = (long long)g.info->state_bytes;
        a = run("metrics", NULL, NULL, NULL);
        CHECKF(metric(a.text, "statesoup_prefix_cache_entries") == 4 &&
                   metric(a.text, "statesoup_prefix_cache_bytes") == 4 * sb &&
                   metric(a.text, "statesoup_prefix_cache_budget_bytes") == 4 * sb + 100 &&
                   metric(a.text, "statesoup_prefix_cache_tenant_max_bytes") ==
                       (shared ? (2 * sb + 50) : 4 * sb + 100) &&
                   metric(a.text, "statesoup_tenant_prefix_cache_bytes{tenant=\"t-a\"}") ==
                       (shared ? 2 : 4) * sb,
               "share %d: metrics: %s", shared, a.text);
        answer_free(&a);
        a = run("generate", NULL, pb, NULL);
        CHECKF(a.status == 200 && cached_of(&a) == 32, "t-a again: %s", a.text);
        answer_free(&a);
        run_tenant = NULL;
        a = run("states_list", NULL, NULL, "include", "cache", NULL);
        CHECKF(listed(&a, &hidden) == (shared ? 2u : 0u), "share %d: the default tenant's: %s",
               shared, a.text);
        answer_free(&a);
        a = run("generate", NULL, db, NULL);
        CHECKF(a.status == 200 && cached_of(&a) == (shared ? 8 : 0),
               "share %d: the default tenant again: %s", shared, a.text);
        answer_free(&a);
        rig_close(&g);
        free(pt);
        free(dt);
    }
}

/* ---- search ---------------------------------------------------------------------------------- */

/* splitmix64, the hash of the keys' count sketch (docs/retrieval.md) */
static uint64_t ref_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* |A| = exp(A_log) of the first layer with a mixer, read from the checkpoint file itself (not
 * from the loaded model): [d_inner * d_state] (Mamba-1, MoE) or [n_heads] (Mamba-2). */
static double ref_A[1 << 16];
static size_t ref_A_n;
static void ref_load_A(const char *model_dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", fixture_path(model_dir));
    FILE *f = fopen(path, "rb");
    static uint8_t buf[1 << 24];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    st_file sf;
    ref_A_n = 0;
    if (!n || st_parse(&sf, buf, n, path)) {
        CHECKF(0, "cannot read %s", path);
        return;
    }
    for (int l = 0; l < 64 && !ref_A_n; l++) {
        char name[96];
        snprintf(name, sizeof name, "backbone.layers.%d.mixer.A_log", l);
        const st_tensor *t = st_find(&sf, name);
        if (!t || t->dtype != ST_F32 || t->n_elem > sizeof ref_A / sizeof ref_A[0]) continue;
        for (uint64_t i = 0; i < t->n_elem; i++) {
            float v;
            memcpy(&v, t->data + 4 * i, 4);
            ref_A[i] = exp((double)v);
        }
        ref_A_n = t->n_elem;
    }
    st_free(&sf);
    CHECKF(ref_A_n > 0, "no A_log in %s", path);
}

/*
 * The retrieval key of state floats x as docs/retrieval.md defines it, computed here from the
 * definition (double precision): final_hidden normalised; or a 256-bucket count sketch (element
 * i adds +-x_i to bucket h(i) & 255, sign bit 32 of h(i), h = splitmix64(seed ^ i)) of the SSM
 * states with each layer at unit norm (ssm_norm), of the whole state (projection), or of the
 * first layer's slowest SSM dimensions at unit norm (ssm_slow: per channel the state dimension of
 * smallest |A|; Mamba-2 the heads of the slowest quarter; ref_load_A first), normalised.
 * Returns the dims.
 */
static int ref_key(const ss_model_info *in, const ss_state_layout *lay, const char *kind,
                   const float *x, double *key)
{
    const uint64_t seed = 0x5eed5011a7e5eedULL;
    int dim = !strcmp(kind, "final_hidden") ? in->d_model : 256;
    for (int i = 0; i < dim; i++) key[i] = 0;
    if (!strcmp(kind, "final_hidden")) {
        for (int i = 0; i < dim; i++) key[i] = x[lay->hidden_off + (size_t)i];
    } else if (!strcmp(kind, "ssm_norm")) {
        size_t per = lay->ssm_n / (size_t)in->n_state_layers;
        for (int l = 0; l < in->n_state_layers; l++) {
            const float *v = x + lay->ssm_off + (size_t)l * per;
            double n2 = 0;
            for (size_t j = 0; j < per; j++) n2 += (double)v[j] * v[j];
            for (size_t j = 0; j < per && n2 > 0; j++) {
                uint64_t h = ref_mix(seed ^ ((size_t)l * per + j));
                key[h & 255] += ((h >> 32) & 1 ? 1 : -1) * v[j] / sqrt(n2);
            }
        }
    } else if (!strcmp(kind, "ssm_slow")) {
        const float *v = x + lay->ssm_off; /* the first state layer */
        size_t per = lay->ssm_n / (size_t)in->n_state_layers,
               unit = in->n_heads ? per / (size_t)in->n_heads : 1;
        static int take[1 << 20];
        memset(take, 0, per * sizeof take[0]);
        if (in->n_heads) { /* Mamba-2: heads whose |A| is among the H/4 smallest (ties kept) */
            int H = in->n_heads, q = H / 4 > 0 ? H / 4 : 1;
            for (int h = 0; h < H; h++) {
                int below = 0;
                for (int g = 0; g < H; g++) below += ref_A[g] < ref_A[h];
                for (size_t j = 0; below < q && j < unit; j++) take[(size_t)h * unit + j] = 1;
            }
        } else { /* per channel the first state dimension of smallest |A| */
            for (int c = 0; c < in->d_inner; c++) {
                int best = 0;
                for (int n = 1; n < in->d_state; n++)
                    if (ref_A[(size_t)c * in->d_state + n] < ref_A[(size_t)c * in->d_state + best])
                        best = n;
                take[(size_t)c * in->d_state + best] = 1;
            }
        }
        double n2 = 0;
        for (size_t j = 0; j < per; j++) n2 += take[j] ? (double)v[j] * v[j] : 0;
        for (size_t j = 0; j < per && n2 > 0; j++) {
            if (!take[j]) continue;
            uint64_t h = ref_mix(seed ^ j);
            key[h & 255] += ((h >> 32) & 1 ? 1 : -1) * v[j] / sqrt(n2);
        }
    } else {
        for (size_t j = 0; j < in->state_floats; j++) {
            uint64_t h = ref_mix(seed ^ j);
            key[h & 255] += ((h >> 32) & 1 ? 1 : -1) * (double)x[j];
        }
    }
    double n2 = 0;
    for (int i = 0; i < dim; i++) n2 += key[i] * key[i];
    for (int i = 0; i < dim && n2 > 0; i++) key[i] /= sqrt(n2);
    return dim;
}

static double dot(const double *a, const double *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

#define N_SEARCH 6 /* states r0..r4 and one prompt-cache entry, rc */

/*
 * The hits of a search answer must be exactly the states the test ranks itself: every state of
 * names[] (keys[i], n of them) whose name passes `want` (NULL: all), by cosine with q, best
 * first, with those scores (to tol; the order is checked where scores differ by more than 2 tol).
 */
static void check_hits(const answer *a, const double *q, double (*keys)[4096], const char **names,
                       const int *want, int n, int dim, int k, double tol)
{
    double sc[N_SEARCH];
    int order[N_SEARCH], m = 0;
    for (int i = 0; i < n; i++)
        if (!want || want[i]) sc[i] = dot(q, keys[i], dim), order[m++] = i;
    for (int i = 0; i < m; i++)
        for (int j = i + 1; j < m; j++)
            if (sc[order[j]] > sc[order[i]]) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    if (m > k) m = k;
    json_t *data = json_object_get(a->json, "data");
    CHECKF(a->status == 200 && json_array_size(data) == (size_t)m, "search: %d %s (want %d hits)",
           a->status, a->text, m);
    for (int i = 0; i < m && i < (int)json_array_size(data); i++) {
        json_t *h = json_array_get(data, i);
        const char *name = json_string_value(json_object_get(json_object_get(h, "state"), "name"));
        double got = json_number_value(json_object_get(h, "score"));
        int j = 0;
        while (j < n && (!name || strcmp(names[j], name))) j++;
        CHECKF(j < n && fabs(got - sc[j]) < tol, "hit %d: %s scores %.7f, want %.7f", i,
               name ? name : "?", got, j < n ? sc[j] : NAN);
        int clear = (i == 0 || sc[order[i - 1]] - sc[order[i]] > 2 * tol) &&
                    (i + 1 >= m || sc[order[i]] - sc[order[i + 1]] > 2 * tol);
        if (clear)
            CHECKF(j == order[i], "hit %d is %s, want %s", i, name ? name : "?", names[order[i]]);
    }
}

/*
 * POST /v1/states/search with each key kind: scores equal the cosine similarities the test
 * computes from the stored states' floats with its own implementation of the key, for a query
 * by stored state and a query by token ids (its state computed here with the model); tag and
 * prefix filters, the prompt cache's entries hidden, a deleted state gone, bad input 4xx.
 */
static void test_search(const char *model_dir, const char *kind)
{
    rig g;
    rig_open_key(&g, model_dir, 0, 0, 0, kind);
    ref_load_A(model_dir);
    ss_state_layout lay;
    ss_model_state_layout(g.m, &lay);
    const ss_model_info *in = g.info;
    static double keys[N_SEARCH][4096];
    double qk[4096];
    const char *names[N_SEARCH] = {"r0", "r1", "r2", "r3", "r4", "rc"};
    int32_t toks[N_SEARCH][24];
    int lens[N_SEARCH] = {7, 12, 18, 9, 24, 15}, dim = 0;
    char body[4096];
    uint64_t x = 0x12345;

    /* an empty catalog: no hits, not an error */
    answer a = run("states_search", NULL, "{\"query\": [1, 2, 3], \"k\": 3}", NULL);
    CHECKF(a.status == 200 && json_array_size(json_object_get(a.json, "data")) == 0 &&
               !strcmp(json_string_value(json_object_get(a.json, "key")), kind),
           "empty catalog: %d %s", a.status, a.text);
    answer_free(&a);

    for (int i = 0; i < N_SEARCH; i++) {
        for (int t = 0; t < lens[i]; t++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            toks[i][t] = (int32_t)(x % (uint64_t)in->vocab_size);
        }
        char *tt = ids_text(toks[i], (size_t)lens[i]);
        snprintf(body, sizeof body, "{\"tokens\": %s, \"name\": \"%s\", \"tags\": [\"%s\"]}", tt,
                 names[i], i == 5 ? "statesoup:cache" : i % 2 ? "odd" : "even");
        free(tt);
        a = run("states_create", NULL, body, NULL);
        CHECKF(a.status == 201, "POST /v1/states %s: %d %s", names[i], a.status, a.text);
        answer_free(&a);
        size_t len;
        float *f = (float *)blob_of(g.st, names[i], &len);
        CHECK(f && len >= in->state_bytes);
        if (f) dim = ref_key(in, &lay, kind, f, keys[i]);
        free(f);
    }
    const double tol = 2e-5;
    /* by stored state: every state but the cache entry, r2 itself first at 1 */
    int not_cache[N_SEARCH] = {1, 1, 1, 1, 1, 0};
    a = run("states_search", NULL, "{\"query\": {\"state\": \"r2\"}, \"k\": 10}", NULL);
    check_hits(&a, keys[2], keys, names, not_cache, N_SEARCH, dim, 10, tol);
    answer_free(&a);
    /* by token ids: r1's prompt and 5 more tokens, its state computed here */
    {
        int32_t q[17];
        memcpy(q, toks[1], 12 * sizeof(int32_t));
        for (int t = 12; t < 17; t++) q[t] = (int32_t)(t * 7 % in->vocab_size);
        ss_ctx *c = NULL;
        ss_state *st = NULL;
        REQUIRE_OK(ss_ctx_new(g.m, &c));
        REQUIRE_OK(ss_state_new(g.m, &st));
        ss_seq sq = {.state = st, .tokens = q, .n_tokens = 17};
        REQUIRE_OK(ss_model_eval(g.m, c, &sq, 1, 0));
        ref_key(in, &lay, kind, ss_state_cdata(st), qk);
        ss_state_free(st);
        ss_ctx_free(c);
        char *tt = ids_text(q, 17);
        snprintf(body, sizeof body, "{\"query\": %s, \"k\": 3}", tt);
        free(tt);
        a = run("states_search", NULL, body, NULL);
        CHECK(json_integer_value(json_object_get(a.json, "query_tokens")) == 17);
        check_hits(&a, qk, keys, names, not_cache, N_SEARCH, dim, 3, 1e-4);
        answer_free(&a);
    }
    /* filters */
    int even[N_SEARCH] = {1, 0, 1, 0, 1, 0}, r3[N_SEARCH] = {0, 0, 0, 1, 0, 0};
    int cache[N_SEARCH] = {0, 0, 0, 0, 0, 1};
    a = run("states_search", NULL, "{\"query\": {\"state\": \"r1\"}, \"k\": 5, \"tag\": \"even\"}",
            NULL);
    check_hits(&a, keys[1], keys, names, even, N_SEARCH, dim, 5, tol);
    answer_free(&a);
    a = run("states_search", NULL, "{\"query\": {\"state\": \"r1\"}, \"prefix\": \"r3\"}", NULL);
    check_hits(&a, keys[1], keys, names, r3, N_SEARCH, dim, 5, tol);
    answer_free(&a);
    a = run("states_search", NULL,
            "{\"query\": {\"state\": \"r1\"}, \"tag\": \"statesoup:cache\"}", NULL);
    check_hits(&a, keys[1], keys, names, cache, N_SEARCH, dim, 5, tol);
    answer_free(&a);
    /* deleted: gone from the results */
    a = run("states_delete", "r0", NULL, NULL);
    CHECK(a.status == 204);
    answer_free(&a);
    a = run("metrics", NULL, NULL, NULL); /* the index: r1..r4 and the cache entry */
    CHECKF(metric(a.text, "statesoup_retrieval_keys") == N_SEARCH - 1 &&
               metric(a.text, "statesoup_retrieval_key_bytes") >=
                   (long long)(N_SEARCH - 1) * dim * 4,
           "metrics: %s", a.text);
    answer_free(&a);
    int left[N_SEARCH] = {0, 1, 1, 1, 1, 0};
    a = run("states_search", NULL, "{\"query\": {\"state\": \"r4\"}, \"k\": 100}", NULL);
    check_hits(&a, keys[4], keys, names, left, N_SEARCH, dim, 100, tol);
    answer_free(&a);
    /* bad input */
    static const struct {
        const char *body;
        int status;
        const char *code;
    } bad[] = {
        {"{\"query\": [1], \"k\": 0}", 422, "invalid_value"},
        {"{\"query\": [1], \"k\": 101}", 422, "invalid_value"},
        {"{\"query\": [1], \"k\": \"five\"}", 400, "bad_request"},
        {"{\"query\": [1], \"tag\": \"a b\"}", 422, "invalid_value"},
        {"{\"query\": [1], \"prefix\": 3}", 400, "bad_request"},
        {"{\"k\": 3}", 400, "bad_request"},
        {"{\"query\": []}", 422, "invalid_value"},
        {"{\"query\": [1, 99999]}", 422, "invalid_value"},
        {"{\"query\": \"text\"}", 400, "unsupported"}, /* no tokenizer in this rig */
        {"{\"query\": 7}", 400, "bad_request"},
        {"{\"query\": {\"state\": \"r0\"}}", 404, "not_found"},
        {"{\"query\": {\"id\": \"r1\"}}", 400, "bad_request"},
        {"{\"query\": {\"state\": \"r1\", \"x\": 1}}", 400, "bad_request"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        a = run("states_search", NULL, bad[i].body, NULL);
        CHECK_ERROR(a, bad[i].status, bad[i].code);
        answer_free(&a);
    }
    rig_close(&g);
}

/* The key (ref_key) of the state after tokens q[0..n) from the zero state, computed here. */
static void query_key(const rig *g, const char *kind, const int32_t *q, int n, double *key)
{
    ss_state_layout lay;
    ss_model_state_layout(g->m, &lay);
    ss_ctx *c = NULL;
    ss_state *st = NULL;
    REQUIRE_OK(ss_ctx_new(g->m, &c));
    REQUIRE_OK(ss_state_new(g->m, &st));
    ss_seq sq = {.state = st, .tokens = q, .n_tokens = n};
    REQUIRE_OK(ss_model_eval(g->m, c, &sq, 1, 0));
    ref_key(g->info, &lay, kind, ss_state_cdata(st), key);
    ss_state_free(st);
    ss_ctx_free(c);
}

/*
 * Retrieve-then-merge: generate, score and completions with "merge": {"retrieve"} merge the
 * states the test ranks itself (cosine of its own keys, the query's state computed here), with
 * uniform or softmax weights computed here, and answer exactly as the same explicit merge does;
 * "retrieved" lists them; the query defaults to the prompt (context for score); bad input 4xx.
 */
static void test_retrieve_merge(void)
{
    const char *kind = "ssm_norm";
    rig g;
    rig_open_key(&g, "models/mamba1-tiny", 0, 0, 0, kind);
    ss_state_layout lay;
    ss_model_state_layout(g.m, &lay);
    static double keys[4][4096];
    double qk[4096];
    const char *names[4] = {"m0", "m1", "m2", "m3"};
    int32_t toks[4][16];
    char body[8192];
    uint64_t x = 0x777;
    answer a = run("generate", NULL, "{\"merge\": {\"retrieve\": {}}, \"prompt\": [1, 2]}", NULL);
    CHECK_ERROR(a, 422, "invalid_value"); /* an empty catalog: nothing to merge */
    answer_free(&a);
    for (int i = 0; i < 4; i++) {
        for (int t = 0; t < 16; t++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            toks[i][t] = (int32_t)(x % (uint64_t)g.info->vocab_size);
        }
        char *tt = ids_text(toks[i], 16);
        snprintf(body, sizeof body, "{\"tokens\": %s, \"name\": \"%s\"}", tt, names[i]);
        free(tt);
        a = run("states_create", NULL, body, NULL);
        CHECK(a.status == 201);
        answer_free(&a);
        size_t len;
        float *f = (float *)blob_of(g.st, names[i], &len);
        if (f) ref_key(g.info, &lay, kind, f, keys[i]);
        free(f);
    }
    /* the query: m2's first 10 tokens; the two best by the test's own ranking */
    query_key(&g, kind, toks[2], 10, qk);
    int best[2] = {-1, -1};
    double sc[4];
    for (int i = 0; i < 4; i++) {
        sc[i] = dot(qk, keys[i], 256);
        if (best[0] < 0 || sc[i] > sc[best[0]]) best[1] = best[0], best[0] = i;
        else if (best[1] < 0 || sc[i] > sc[best[1]]) best[1] = i;
    }
    const double T = 0.05;
    double e0 = exp(sc[best[0]] / T), e1 = exp(sc[best[1]] / T);
    double w[2][2] = {{0.5, 0.5}, {e0 / (e0 + e1), e1 / (e0 + e1)}};
    char *qt = ids_text(toks[2], 10);
    for (int soft = 0; soft < 2; soft++) {
        /* generate, the query given */
        snprintf(body, sizeof body,
                 "{\"merge\": {\"retrieve\": {\"query\": %s, \"k\": 2%s}}, \"prompt\": [5, 6], "
                 "\"max_tokens\": 6, \"temperature\": 0, \"ignore_eos\": true}",
                 qt, soft ? ", \"weights\": \"softmax\", \"temperature\": 0.05" : "");
        answer r = run("generate", NULL, body, NULL);
        json_t *used = json_object_get(r.json, "retrieved");
        CHECKF(r.status == 200 && json_array_size(used) == 2, "retrieve: %d %s", r.status, r.text);
        for (int i = 0; i < 2 && json_array_size(used) == 2; i++) {
            json_t *u = json_array_get(used, i);
            CHECKF(!strcmp(json_string_value(json_object_get(u, "name")), names[best[i]]) &&
                       fabs(json_number_value(json_object_get(u, "score")) - sc[best[i]]) < 1e-4 &&
                       fabs(json_number_value(json_object_get(u, "weight")) - w[soft][i]) < 1e-3,
                   "retrieved[%d]: %s", i, r.text);
        }
        /* the same merge, explicit, with the weights the answer reports */
        snprintf(body, sizeof body,
                 "{\"merge\": [{\"state\": \"%s\", \"weight\": %.17g}, {\"state\": \"%s\", "
                 "\"weight\": %.17g}], \"prompt\": [5, 6], \"max_tokens\": 6, \"temperature\": 0, "
                 "\"ignore_eos\": true}",
                 names[best[0]],
                 json_number_value(json_object_get(json_array_get(used, 0), "weight")),
                 names[best[1]],
                 json_number_value(json_object_get(json_array_get(used, 1), "weight")));
        answer e = run("generate", NULL, body, NULL);
        CHECKF(e.status == 200 && json_equal(json_object_get(e.json, "tokens"),
                                             json_object_get(r.json, "tokens")),
               "retrieved merge %s vs explicit %s", r.text, e.text);
        answer_free(&r);
        answer_free(&e);
    }
    /* score: the query defaults to the context; the best state alone (k = 1) */
    snprintf(
        body, sizeof body,
        "{\"merge\": {\"retrieve\": {\"k\": 1}}, \"context\": %s, \"continuation\": [7, 8, 9]}",
        qt);
    a = run("score", NULL, body, NULL);
    json_t *u0 = json_array_get(json_object_get(a.json, "retrieved"), 0);
    CHECKF(a.status == 200 && u0 &&
               !strcmp(json_string_value(json_object_get(u0, "name")), names[best[0]]) &&
               json_number_value(json_object_get(u0, "weight")) == 1,
           "score with retrieve: %s", a.text);
    snprintf(body, sizeof body,
             "{\"merge\": [{\"state\": \"%s\", \"weight\": 1}], \"context\": %s, "
             "\"continuation\": [7, 8, 9]}", names[best[0]], qt);
    answer e = run("score", NULL, body, NULL);
    CHECKF(fabs(json_number_value(json_object_get(a.json, "logprob_sum")) -
                json_number_value(json_object_get(e.json, "logprob_sum"))) < 1e-6,
           "score: retrieved %s vs explicit %s", a.text, e.text);
    answer_free(&a);
    answer_free(&e);
    /* completions: the query defaults to the prompt; by a stored state: itself first */
    snprintf(body, sizeof body,
             "{\"merge\": {\"retrieve\": {\"k\": 1}}, \"prompt\": %s, \"max_tokens\": 1}", qt);
    a = run("completions", NULL, body, NULL);
    u0 = json_array_get(json_object_get(a.json, "retrieved"), 0);
    CHECKF(a.status == 200 && u0 &&
               !strcmp(json_string_value(json_object_get(u0, "name")), names[best[0]]),
           "completions with retrieve: %s", a.text);
    answer_free(&a);
    a = run("generate", NULL,
            "{\"merge\": {\"retrieve\": {\"query\": {\"state\": \"m3\"}, \"k\": 1}}, \"prompt\": "
            "[1], \"max_tokens\": 1}", NULL);
    u0 = json_array_get(json_object_get(a.json, "retrieved"), 0);
    CHECKF(a.status == 200 && u0 && !strcmp(json_string_value(json_object_get(u0, "name")), "m3"),
           "retrieve by state: %s", a.text);
    answer_free(&a);
    free(qt);
    static const struct {
        const char *ep, *body;
        int status;
        const char *code;
    } bad[] = {
        {"generate", "{\"merge\": {\"retrieve\": {\"k\": 0}}, \"prompt\": [1]}", 422,
         "invalid_value"},
        {"generate", "{\"merge\": {\"retrieve\": {\"k\": 2, \"tag\": \"none\"}}, \"prompt\": [1]}",
         422, "invalid_value"},
        {"generate", "{\"merge\": {\"retrieve\": {}, \"mode\": \"linear\"}, \"prompt\": [1]}", 400,
         "bad_request"},
        {"generate", "{\"merge\": {\"retrieve\": 3}, \"prompt\": [1]}", 400, "bad_request"},
        {"generate", "{\"merge\": {\"retrieve\": {\"x\": 1}}, \"prompt\": [1]}", 400,
         "bad_request"},
        {"generate", "{\"merge\": {\"retrieve\": {\"weights\": \"max\"}}, \"prompt\": [1]}", 422,
         "invalid_value"},
        {"generate", "{\"merge\": {\"retrieve\": {\"temperature\": 1}}, \"prompt\": [1]}", 422,
         "invalid_value"},
        {"generate",
         "{\"merge\": {\"retrieve\": {\"weights\": \"softmax\", \"temperature\": 0}}, \"prompt\": "
         "[1]}",
         422, "invalid_value"},
        {"generate", "{\"merge\": {\"retrieve\": {}}, \"prompt\": []}", 422, "invalid_value"},
        {"generate", "{\"merge\": {\"retrieve\": {}}, \"prompts\": [[1], [2]]}", 422,
         "invalid_value"},
        {"generate",
         "{\"merge\": {\"retrieve\": {\"query\": {\"state\": \"nope\"}}}, \"prompt\": [1]}", 404,
         "not_found"},
        {"score", "{\"merge\": {\"retrieve\": {}}, \"continuation\": [1]}", 422, "invalid_value"},
        {"completions", "{\"merge\": {\"retrieve\": {}}, \"prompt\": [[1], [2]]}", 422,
         "invalid_value"},
        {"generate", "{\"state\": \"m0\", \"merge\": {\"retrieve\": {}}, \"prompt\": [1]}", 400,
         "bad_request"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        a = run(bad[i].ep, NULL, bad[i].body, NULL);
        CHECK_ERROR(a, bad[i].status, bad[i].code);
        answer_free(&a);
    }
    rig_close(&g);
}

/* ---- inspecting states: children, stats, similarity ----------------------------------------- */

/* The id of stored state ref (out: SS_STORE_ID_LEN + 1 bytes). */
static void id_of(const char *ref, char *out)
{
    answer a = run("states_get", ref, NULL, NULL);
    snprintf(out, SS_STORE_ID_LEN + 1, "%s", json_string_value(json_object_get(a.json, "id")));
    CHECKF(a.status == 200 && strlen(out) == SS_STORE_ID_LEN, "GET %s: %d", ref, a.status);
    answer_free(&a);
}

static void store_tokens(const char *name, const char *tokens, const char *from)
{
    char body[512];
    snprintf(body, sizeof body, "{\"tokens\": %s, \"name\": \"%s\"%s%s%s}", tokens, name,
             from ? ", \"from\": \"" : "", from ? from : "", from ? "\"" : "");
    answer a = run("states_create", NULL, body, NULL);
    CHECKF(a.status == 201, "store %s: %d %s", name, a.status, a.text);
    answer_free(&a);
}

static void store_merge(const char *name, const char *x, double wx, const char *y, double wy)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"sources\": [{\"state\": \"%s\", \"weight\": %g}, {\"state\": \"%s\", \"weight\": "
             "%g}], \"name\": \"%s\"}",
             x, wx, y, wy, name);
    answer a = run("states_merge", NULL, body, NULL);
    CHECKF(a.status == 201, "merge %s: %d %s", name, a.status, a.text);
    answer_free(&a);
}

/* The entries of a children answer as "name@depth<parent-name:weight" strings, joined by ' '
 * in the answer's order, into out. */
static void children_text(const answer *a, const char *const *ids, const char *const *names,
                          int n_names, char *out, size_t cap)
{
    out[0] = '\0';
    size_t i;
    json_t *e;
    json_array_foreach (json_object_get(a->json, "data"), i, e) {
        const char *pid = json_string_value(json_object_get(e, "parent")), *pname = "?";
        for (int k = 0; k < n_names; k++)
            if (pid && !strcmp(ids[k], pid)) pname = names[k];
        char one[128];
        snprintf(one, sizeof one, "%s%s@%lld<%s:%g", i ? " " : "",
                 json_string_value(json_object_get(json_object_get(e, "state"), "name")),
                 json_integer_value(json_object_get(e, "depth")), pname,
                 json_number_value(json_object_get(e, "weight")));
        strncat(out, one, cap - strlen(out) - 1);
    }
}

/* Per-layer squared norms of a state's conv and ssm parts, from the layout's shapes. */
static void ref_norms(const ss_model_info *in, const ss_state_layout *lay, const float *st,
                      double *conv, double *ssm)
{
    int L = in->n_state_layers;
    size_t cper = 1, sper = 1;
    for (int d = 1; d < lay->conv_ndim; d++) cper *= (size_t)lay->conv_shape[d];
    for (int d = 1; d < lay->ssm_ndim; d++) sper *= (size_t)lay->ssm_shape[d];
    CHECK(lay->conv_shape[0] == L && lay->ssm_shape[0] == L);
    for (int l = 0; l < L; l++) {
        conv[l] = ssm[l] = 0;
        for (size_t i = 0; i < cper; i++) {
            double v = st[lay->conv_off + (size_t)l * cper + i];
            conv[l] += v * v;
        }
        for (size_t i = 0; i < sper; i++) {
            double v = st[lay->ssm_off + (size_t)l * sper + i];
            ssm[l] += v * v;
        }
    }
}

/* Dot product of layer l (conv and ssm; l < 0: all layers) of two states, in double. */
static double ref_dot(const ss_model_info *in, const ss_state_layout *lay, const float *x,
                      const float *y, int l)
{
    int L = in->n_state_layers;
    size_t cper = lay->conv_n / (size_t)L, sper = lay->ssm_n / (size_t)L;
    double s = 0;
    for (int k = 0; k < L; k++) {
        if (l >= 0 && k != l) continue;
        for (size_t i = 0; i < cper; i++)
            s += (double)x[lay->conv_off + k * cper + i] * y[lay->conv_off + k * cper + i];
        for (size_t i = 0; i < sper; i++)
            s += (double)x[lay->ssm_off + k * sper + i] * y[lay->ssm_off + k * sper + i];
    }
    return s;
}

/*
 * GET /v1/states/{state}/children, GET /v1/states/{state}/stats and POST /v1/states/similarity
 * on one model: the children are exactly the lineage built here (merges and `from`, with
 * depths, parents and weights), follow deletes, and respect depth and limit; the norms and the
 * cosines equal values computed here in double from the stored blobs; bad input is 4xx.
 */
static void test_inspect(const char *model_dir)
{
    rig g;
    rig_open(&g, model_dir, 0, 0, 0);
    ss_state_layout lay;
    ss_model_state_layout(g.m, &lay);
    store_tokens("i-a", "[1, 2, 3, 4]", NULL);
    store_tokens("i-b", "[5, 6, 7]", NULL);
    store_tokens("i-c", "[8, 9, 10, 11, 12]", NULL);
    store_merge("i-ab", "i-a", 0.25, "i-b", 0.75);
    store_merge("i-abc", "i-ab", 0.5, "i-c", -0.5);
    store_tokens("i-from", "[13, 14]", "i-ab");
    store_merge("i-aa", "i-a", 2, "i-a", 1); /* a parent listed twice */
    const char *names[] = {"i-a", "i-b", "i-c", "i-ab", "i-abc", "i-from", "i-aa"};
    char idbuf[7][SS_STORE_ID_LEN + 1];
    const char *ids[7];
    for (int i = 0; i < 7; i++) id_of(names[i], idbuf[i]), ids[i] = idbuf[i];

    char got[1024];
    answer a = run("states_children", "i-a", NULL, NULL);
    children_text(&a, ids, names, 7, got, sizeof got);
    CHECKF(a.status == 200 && !strcmp(got, "i-aa@1<i-a:3 i-ab@1<i-a:0.25") &&
               !strcmp(json_string_value(json_object_get(json_object_get(a.json, "state"), "id")),
                       ids[0]) &&
               json_is_false(json_object_get(a.json, "truncated")),
           "children of i-a (depth 1, newest first): %d %s", a.status, got);
    answer_free(&a);
    a = run("states_children", "i-a", NULL, "depth", "3", NULL);
    children_text(&a, ids, names, 7, got, sizeof got);
    CHECKF(!strcmp(got, "i-aa@1<i-a:3 i-ab@1<i-a:0.25 i-from@2<i-ab:1 i-abc@2<i-ab:0.5"),
           "children of i-a to depth 3: %s", got);
    answer_free(&a);
    a = run("states_children", ids[2], NULL, "depth", "64", NULL);
    children_text(&a, ids, names, 7, got, sizeof got);
    CHECKF(!strcmp(got, "i-abc@1<i-c:-0.5"), "children of i-c by id: %s", got);
    answer_free(&a);
    a = run("states_children", "i-a", NULL, "depth", "3", "limit", "2", NULL);
    children_text(&a, ids, names, 7, got, sizeof got);
    CHECKF(!strcmp(got, "i-aa@1<i-a:3 i-ab@1<i-a:0.25") &&
               json_is_true(json_object_get(a.json, "truncated")),
           "children with limit 2: %s (truncated)", got);
    answer_free(&a);
    a = run("states_children", "i-from", NULL, NULL);
    CHECKF(a.status == 200 && json_array_size(json_object_get(a.json, "data")) == 0,
           "a state without children: %d %s", a.status, a.text);
    answer_free(&a);
    a = run("states_delete", "i-abc", NULL, NULL);
    CHECK(a.status == 204);
    answer_free(&a);
    a = run("states_children", "i-ab", NULL, "depth", "2", NULL);
    children_text(&a, ids, names, 7, got, sizeof got);
    CHECKF(!strcmp(got, "i-from@1<i-ab:1"), "children of i-ab after deleting i-abc: %s", got);
    answer_free(&a);
    a = run("states_children", "i-nope", NULL, NULL);
    CHECK_ERROR(a, 404, "not_found");
    answer_free(&a);
    a = run("states_children", "i-a", NULL, "depth", "0", NULL);
    CHECK_ERROR(a, 422, "invalid_value");
    answer_free(&a);
    a = run("states_children", "i-a", NULL, "limit", "x", NULL);
    CHECK_ERROR(a, 422, "invalid_value");
    answer_free(&a);

    /* per-layer norms */
    int L = g.info->n_state_layers;
    double conv[256], ssm[256];
    size_t len;
    float *st = (float *)blob_of(g.st, "i-ab", &len);
    if (!st || L > 256) {
        CHECKF(0, "the blob of i-ab (%d layers)", L);
        rig_close(&g);
        return;
    }
    ref_norms(g.info, &lay, st, conv, ssm);
    a = run("states_stats", "i-ab", NULL, NULL);
    json_t *layers = json_object_get(a.json, "layers");
    CHECKF(a.status == 200 && (int)json_array_size(layers) == L &&
               json_integer_value(json_object_get(a.json, "n_layers")) == L &&
               !strcmp(json_string_value(json_object_get(a.json, "name")), "i-ab"),
           "stats: %d %s", a.status, a.text);
    double worst = 0, tc = 0, ts = 0, hid = 0;
    for (int l = 0; l < L && (int)json_array_size(layers) == L; l++) {
        json_t *e = json_array_get(layers, l);
        double d1 = fabs(json_number_value(json_object_get(e, "conv_norm")) - sqrt(conv[l]));
        double d2 = fabs(json_number_value(json_object_get(e, "ssm_norm")) - sqrt(ssm[l]));
        double d3 = fabs(json_number_value(json_object_get(e, "norm")) - sqrt(conv[l] + ssm[l]));
        double m = fmax(d1, fmax(d2, d3)) / (1e-12 + sqrt(conv[l] + ssm[l]));
        if (m > worst) worst = m;
        CHECK(json_integer_value(json_object_get(e, "layer")) == l);
        tc += conv[l];
        ts += ssm[l];
    }
    for (size_t i = 0; i < lay.hidden_n; i++)
        hid += (double)st[lay.hidden_off + i] * st[lay.hidden_off + i];
    CHECKF(worst < 1e-6, "stats: per-layer norms off by %.3g (relative)", worst);
    CHECKF(fabs(json_number_value(json_object_get(a.json, "conv_norm")) - sqrt(tc)) <=
                   1e-6 * sqrt(tc) &&
               fabs(json_number_value(json_object_get(a.json, "ssm_norm")) - sqrt(ts)) <=
                   1e-6 * sqrt(ts) &&
               fabs(json_number_value(json_object_get(a.json, "final_hidden_norm")) - sqrt(hid)) <=
                   1e-6 * sqrt(hid),
           "stats: whole-state norms");
    CHECK(json_is_boolean(json_object_get(a.json, "has_decay")) &&
          json_is_true(json_object_get(a.json, "has_decay")) ==
              (len != g.info->state_bytes));
    answer_free(&a);
    free(st);
    a = run("whoami", NULL, NULL, NULL);
    CHECKF(a.status == 200 && !strcmp(json_string_value(json_object_get(a.json, "scope")), "write"),
           "whoami (write): %d %s", a.status, a.text);
    answer_free(&a);
    run_scope = SS_HOST_SCOPE_READ;
    a = run("whoami", NULL, NULL, NULL);
    CHECKF(a.status == 200 && !strcmp(json_string_value(json_object_get(a.json, "scope")), "read"),
           "whoami (read): %d %s", a.status, a.text);
    answer_free(&a);
    run_scope = SS_HOST_SCOPE_ADMIN;
    run_tenant = "t-ops";
    a = run("whoami", NULL, NULL, NULL);
    CHECKF(a.status == 200 &&
               !strcmp(json_string_value(json_object_get(a.json, "scope")), "admin") &&
               !strcmp(json_string_value(json_object_get(a.json, "tenant")), "t-ops"),
           "whoami (admin of t-ops): %d %s", a.status, a.text);
    answer_free(&a);
    run_scope = SS_HOST_SCOPE_WRITE;
    run_tenant = NULL;
    a = run("states_stats", "i-nope", NULL, NULL);
    CHECK_ERROR(a, 404, "not_found");
    answer_free(&a);

    /* similarity: whole state and per layer, against cosines of the blobs in double */
    const char *sim[] = {"i-a", "i-b", "i-ab", "i-from", "i-a"};
    float *blobs[5];
    for (int i = 0; i < 5; i++) {
        blobs[i] = (float *)blob_of(g.st, sim[i], &len);
        CHECKF(blobs[i] != NULL, "the blob of %s", sim[i]);
        if (!blobs[i]) exit(1);
    }
    a = run("states_similarity", NULL,
            "{\"states\": [\"i-a\", \"i-b\", \"i-ab\", \""
            "i-from\", \"i-a\"], \"per_layer\": true}",
            NULL);
    json_t *m = json_object_get(a.json, "similarity"), *pl = json_object_get(a.json, "layers");
    CHECKF(a.status == 200 && json_array_size(m) == 5 && (int)json_array_size(pl) == L,
           "similarity: %d %.300s", a.status, a.text);
    worst = 0;
    for (int i = 0; i < 5 && json_array_size(m) == 5; i++) {
        const char *id = json_string_value(
            json_object_get(json_array_get(json_object_get(a.json, "states"), i), "id"));
        char want_id[SS_STORE_ID_LEN + 1];
        id_of(sim[i], want_id);
        CHECKF(id && !strcmp(id, want_id), "similarity: states[%d] is %s", i, sim[i]);
        for (int j = 0; j < 5; j++) {
            for (int l = -1; l < L; l++) {
                double dxy = ref_dot(g.info, &lay, blobs[i], blobs[j], l);
                double dxx = ref_dot(g.info, &lay, blobs[i], blobs[i], l);
                double dyy = ref_dot(g.info, &lay, blobs[j], blobs[j], l);
                json_t *row = json_array_get(l < 0 ? m : json_array_get(pl, l), i);
                json_t *v = json_array_get(row, j);
                if (dxx == 0 || dyy == 0) {
                    CHECKF(json_is_null(v), "similarity of a zero layer is null");
                    continue;
                }
                double d = fabs(json_number_value(v) - dxy / sqrt(dxx * dyy));
                if (!json_is_number(v) || d > worst) worst = json_is_number(v) ? d : 1;
            }
        }
    }
    CHECKF(worst < 1e-4, "similarity: cosines off by %.3g", worst);
    CHECKF(fabs(json_number_value(json_array_get(json_array_get(m, 0), 4)) - 1) < 1e-6,
           "similarity: a state and itself: 1");
    answer_free(&a);
    for (int i = 0; i < 5; i++) free(blobs[i]);
    a = run("states_similarity", NULL, "{\"states\": [\"i-a\"]}", NULL);
    CHECKF(a.status == 200 && !json_object_get(a.json, "layers") &&
               fabs(json_number_value(json_array_get(
                        json_array_get(json_object_get(a.json, "similarity"), 0), 0)) -
                    1) < 1e-6,
           "similarity of one state, no per_layer: %d %s", a.status, a.text);
    answer_free(&a);
    char big[8192] = "{\"states\": [";
    for (int i = 0; i < 65; i++) strcat(big, i ? ", \"i-a\"" : "\"i-a\"");
    strcat(big, "]}");
    a = run("states_similarity", NULL, big, NULL);
    CHECK_ERROR(a, 422, "invalid_value");
    answer_free(&a);
    a = run("states_similarity", NULL, "{\"states\": []}", NULL);
    CHECK_ERROR(a, 422, "invalid_value");
    answer_free(&a);
    a = run("states_similarity", NULL, "{\"states\": \"i-a\"}", NULL);
    CHECK_ERROR(a, 400, "bad_request");
    answer_free(&a);
    a = run("states_similarity", NULL, "{\"states\": [\"i-a\", 3]}", NULL);
    CHECK_ERROR(a, 400, "bad_request");
    answer_free(&a);
    a = run("states_similarity", NULL, "{\"states\": [\"i-a\"], \"per_layer\": 1}", NULL);
    CHECK_ERROR(a, 400, "bad_request");
    answer_free(&a);
    a = run("states_similarity", NULL, "{\"states\": [\"i-a\", \"i-abc\"]}", NULL);
    CHECK_ERROR(a, 404, "not_found");
    answer_free(&a);

    /* tenants: another tenant's states never appear. i-a is shared by an admin; tenant t-other
     * merges it into a state of its own, which the default tenant's children of i-a leave out
     * (and t-other sees); t-other reaches none of the default tenant's unshared states. */
    run_scope = SS_HOST_SCOPE_ADMIN;
    a = run("states_share", "i-a", NULL, NULL);
    CHECKF(a.status == 200, "share i-a: %d %s", a.status, a.text);
    answer_free(&a);
    run_scope = SS_HOST_SCOPE_WRITE;
    run_tenant = "t-other";
    store_merge("o-m", ids[0], 0.5, ids[0], 0.25);
    char om[SS_STORE_ID_LEN + 1];
    id_of("o-m", om);
    a = run("states_children", ids[0], NULL, "depth", "3", NULL);
    CHECKF(a.status == 200 && json_array_size(json_object_get(a.json, "data")) == 1 &&
               !strcmp(json_string_value(json_object_get(
                           json_object_get(json_array_get(json_object_get(a.json, "data"), 0),
                                           "state"),
                           "id")),
                       om),
           "t-other: children of the shared i-a are its own o-m only: %d %.300s", a.status,
           a.text);
    answer_free(&a);
    a = run("states_stats", ids[3], NULL, NULL);
    CHECK_ERROR(a, 404, "not_found");
    answer_free(&a);
    a = run("states_children", ids[3], NULL, NULL);
    CHECK_ERROR(a, 404, "not_found");
    answer_free(&a);
    char body[256];
    snprintf(body, sizeof body, "{\"states\": [\"%s\", \"%s\"]}", ids[0], ids[1]);
    a = run("states_similarity", NULL, body, NULL);
    CHECK_ERROR(a, 404, "not_found");
    answer_free(&a);
    snprintf(body, sizeof body, "{\"states\": [\"%s\", \"o-m\"]}", ids[0]);
    a = run("states_similarity", NULL, body, NULL);
    CHECKF(a.status == 200, "t-other: similarity of the shared i-a and its own o-m: %d %s",
           a.status, a.text);
    answer_free(&a);
    run_tenant = NULL;
    a = run("states_children", "i-a", NULL, "depth", "3", NULL);
    children_text(&a, ids, names, 7, got, sizeof got);
    CHECKF(!strcmp(got, "i-aa@1<i-a:3 i-ab@1<i-a:0.25 i-from@2<i-ab:1"),
           "the default tenant's children of i-a leave t-other's o-m out: %s", got);
    answer_free(&a);
    a = run("states_stats", om, NULL, NULL);
    CHECK_ERROR(a, 404, "not_found");
    answer_free(&a);
    rig_close(&g);
}

int main(int argc, char **argv)
{
    (void)argc;
    ss_blas_ensure_kernels(argv);
    char dir[256];
    test_tmpdir(dir, sizeof dir, "handlers");
    ss_model *m = NULL;
    ss_store *store = NULL;
    ss_engine *eng = NULL;
    ss_api_params ap = {.max_body = 1 << 20, .max_tokens = 64, .model_name = "mamba1-tiny"};
    REQUIRE_OK(ss_api_new(&api, &ap));
    /* before the model is attached, every endpoint but /healthz and /metrics answers 503 */
    answer a = run("healthz", NULL, NULL, NULL);
    CHECK_ERROR(a, 503, "loading");
    answer_free(&a);
    a = run("models", NULL, NULL, NULL);
    CHECK_ERROR(a, 503, "loading");
    answer_free(&a);

    REQUIRE_OK(ss_model_open(&m, fixture_path("models/mamba1-tiny"), NULL));
    golden_open(&G, fixture_path("models/mamba1-tiny"));
    ss_store_params sp = ss_store_default_params();
    REQUIRE_OK(ss_store_open(&store, dir, &sp));
    ss_engine_params ep = ss_engine_default_params();
    REQUIRE_OK(ss_engine_open(&eng, m, &ep));
    ss_api_attach(api, m, NULL, store, eng);

    a = run("healthz", NULL, NULL, NULL);
    CHECK(a.status == 200 && !strcmp(json_string_value(json_object_get(a.json, "status")), "ok"));
    answer_free(&a);
    test_models(ss_model_get_info(m));
    test_state_and_generate();
    test_merge_and_score();
    test_errors();
    test_prefix("models/mamba1-tiny");
    test_prefix("models/mamba2-tiny");
    test_prefix("models/moe-mamba-switch");
    test_prefix_cache();
    test_prefix_cache_tenants();
    test_search("models/mamba1-tiny", "final_hidden");
    test_search("models/mamba1-tiny", "ssm_norm");
    test_search("models/mamba1-tiny", "projection");
    test_search("models/mamba1-tiny", "ssm_slow");
    test_search("models/mamba2-tiny", "ssm_norm");
    test_search("models/mamba2-tiny", "ssm_slow");
    test_search("models/moe-mamba-switch", "projection");
    test_search("models/moe-mamba-switch", "ssm_slow");
    test_retrieve_merge();
    test_inspect("models/mamba1-tiny");
    test_inspect("models/mamba2-tiny");
    test_inspect("models/moe-mamba-switch");

    ss_api_detach_engine(api);
    ss_engine_close(eng);
    ss_api_free(api);
    ss_store_close(store);
    golden_close(&G);
    ss_model_close(m);
    test_rm_rf(dir);
    return test_done("test_handlers");
}
