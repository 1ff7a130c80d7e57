/*
 * api.c - the API object, its route table, the ss_err -> HTTP table, and the helpers every
 * handler shares: JSON bodies and fields, prompts, name/tags/metadata of states to store, and the
 * starting state of a request (a stored state, an on-the-fly merge, or the zero state).
 *
 * Error mapping lives in exactly one table (err_http below): library code reports what went wrong
 * as an ss_err with a message, and the HTTP status and snake_case code follow from it.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "ss_util.h"

/* ---- the one error table ------------------------------------------------------------------- */

/* HTTP status of each ss_err. The code on the wire is ss_err_name() (common/err.c), or for the
 * API's own answers (bad_json, loading, shutting_down) a refinement of the ss_err whose status
 * it takes. */
static const int err_status[SS_ERR__COUNT] = {
    [SS_OK] = 200,
    [SS_ERR_NOMEM] = 503,
    [SS_ERR_IO] = 500,
    [SS_ERR_NOT_FOUND] = 404,
    [SS_ERR_FORMAT] = 400,
    [SS_ERR_INVALID] = 422,
    [SS_ERR_UNSUPPORTED] = 400,
    [SS_ERR_MISMATCH] = 409,
    [SS_ERR_EXISTS] = 409,
    [SS_ERR_FULL] = 507,
    [SS_ERR_CORRUPT] = 500,
    [SS_ERR_BUSY] = 503,
    [SS_ERR_TOO_LARGE] = 413,
    [SS_ERR_PERM] = 403,
    [SS_ERR_CANCELLED] = 503,
    [SS_ERR_INTERNAL] = 500,
    [SS_ERR_UNAVAILABLE] = 503,
};

int api_status_of(ss_err e)
{
    return (unsigned)e < SS_ERR__COUNT ? err_status[e] : 500;
}

const char *api_code_of(ss_err e)
{
    return (unsigned)e < SS_ERR__COUNT ? ss_err_name(e) : "internal_error";
}

void api_reject(ss_host_req *r, ss_err e, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ss_host_respond_error(r, api_status_of(e), code ? code : api_code_of(e), msg);
}

void api_fail(ss_host_req *r, ss_err e)
{
    api_reject(r, e, NULL, "%s", ss_errmsg());
}

void api_json(ss_host_req *r, int status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!text) {
        api_reject(r, SS_ERR_NOMEM, NULL, "out of memory building the answer");
        return;
    }
    ss_host_respond(r, status, "application/json", text, strlen(text));
}

json_t *api_real(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

int api_ready(ss_api *a, ss_host_req *r)
{
    if (atomic_load(&a->ready)) return 1;
    api_reject(r, SS_ERR_BUSY, API_CODE_LOADING, "the model is still loading; try again shortly");
    return 0;
}

void api_with_body(void *app, ss_host_req *r, api_body_handler fn)
{
    ss_api *a = app;
    if (!api_ready(a, r)) return;
    json_t *body = api_body(r);
    if (!body) return;
    ss_err err = fn(a, r, body);
    if (err) api_fail(r, err);
    json_decref(body);
}

/* ---- request parsing ----------------------------------------------------------------------- */

json_t *api_body(ss_host_req *r)
{
    size_t len;
    const char *text = ss_host_body_data(r, &len);
    json_t *j = NULL;
    if (len == 0) {
        api_reject(r, SS_ERR_FORMAT, API_CODE_BAD_JSON,
                   "the request needs a JSON object as its body");
        return NULL;
    }
    if (ss_json_parse_relaxed(text, len, "request body", &j) != SS_OK) {
        api_reject(r, SS_ERR_FORMAT, API_CODE_BAD_JSON, "%s", ss_errmsg());
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        api_reject(r, SS_ERR_FORMAT, API_CODE_BAD_JSON, "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

ss_err api_get_int(json_t *o, const char *key, long long dflt, long long *out)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return SS_OK;
    }
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return SS_OK;
    }
    /* 5.0 is an integer too (some clients only have doubles) */
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
        fabs(json_real_value(v)) < 9e15) {
        *out = (long long)json_real_value(v);
        return SS_OK;
    }
    return ss_fail(SS_ERR_FORMAT, "\"%s\" must be an integer", key);
}

ss_err api_get_real(json_t *o, const char *key, double dflt, double *out)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return SS_OK;
    }
    if (!ss_json_is_number(v)) return ss_fail(SS_ERR_FORMAT, "\"%s\" must be a number", key);
    *out = ss_json_real(v, dflt);
    if (!isfinite(*out)) return ss_fail(SS_ERR_INVALID, "\"%s\" must be finite", key);
    return SS_OK;
}

ss_err api_get_bool(json_t *o, const char *key, int dflt, int *out)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return SS_OK;
    }
    if (!json_is_boolean(v)) return ss_fail(SS_ERR_FORMAT, "\"%s\" must be true or false", key);
    *out = json_is_true(v);
    return SS_OK;
}

ss_err api_get_string(json_t *o, const char *key, const char **out)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v)) return SS_OK;
    if (!json_is_string(v)) return ss_fail(SS_ERR_FORMAT, "\"%s\" must be a string", key);
    *out = json_string_value(v);
    return SS_OK;
}

ss_err api_tokens(ss_api *a, const json_t *v, const char *what, int32_t **ids, int *n)
{
    *ids = NULL;
    *n = 0;
    if (json_is_string(v)) {
        if (json_string_length(v) == 0) return SS_OK; /* no text: no tokenizer needed */
        if (!a->tok)
            return ss_fail(SS_ERR_UNSUPPORTED,
                           "no tokenizer loaded: send \"%s\" as an array of token ids, or start "
                           "statesoupd with --tokenizer",
                           what);
        size_t nn = 0;
        ss_err err =
            ss_tokenizer_encode(a->tok, json_string_value(v), json_string_length(v), ids, &nn);
        if (err) return err;
        if (nn > INT32_MAX / 2) {
            free(*ids);
            *ids = NULL;
            return ss_fail(SS_ERR_TOO_LARGE, "%s is too long", what);
        }
        *n = (int)nn;
        for (int i = 0; i < *n; i++) {
            if ((*ids)[i] >= a->info->vocab_size) {
                ss_err e = ss_fail(SS_ERR_INVALID,
                                   "%s: token %d at position %d is outside the model's vocabulary "
                                   "[0, %d) (tokenizer and model do not match)",
                                   what, (*ids)[i], i, a->info->vocab_size);
                free(*ids);
                *ids = NULL;
                *n = 0;
                return e;
            }
        }
        return SS_OK;
    }
    if (!json_is_array(v))
        return ss_fail(SS_ERR_FORMAT, "\"%s\" must be a string or an array of token ids", what);
    size_t len = 0;
    ss_err err = api_token_array(v, a->info->vocab_size, what, ids, &len);
    if (!err) *n = (int)len;
    return err;
}

ss_err api_token_array(const json_t *v, int vocab, const char *what, int32_t **ids, size_t *n)
{
    size_t len = json_array_size(v);
    if (len > INT32_MAX / 2) return ss_fail(SS_ERR_TOO_LARGE, "%s is too long", what);
    int32_t *out = malloc((len ? len : 1) * sizeof *out);
    if (!out) return ss_fail(SS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < len; i++) {
        const json_t *t = json_array_get(v, i);
        if (!json_is_integer(t)) {
            free(out);
            return ss_fail(SS_ERR_FORMAT, "%s[%zu] is not an integer token id", what, i);
        }
        json_int_t id = json_integer_value(t);
        if (id < 0 || id >= vocab) {
            free(out);
            return ss_fail(SS_ERR_INVALID, "%s[%zu] = %lld is outside the vocabulary [0, %d)", what,
                           i, (long long)id, vocab);
        }
        out[i] = (int32_t)id;
    }
    *ids = out;
    *n = len;
    return SS_OK;
}

/* ---- states to store ----------------------------------------------------------------------- */

ss_err api_save_parse(ss_api *a, json_t *o, api_save *s)
{
    memset(s, 0, sizeof *s);
    const char *name;
    ss_err err = api_get_string(o, "name", &name);
    if (err) return err;
    if (name) {
        if ((err = ss_store_check_name(name))) return err;
        char *rec = NULL;
        if (ss_store_get_record(a->store, name, &rec) == SS_OK) {
            free(rec);
            return ss_fail(SS_ERR_EXISTS, "the name '%s' is already taken", name);
        }
        if (!(s->name = strdup(name))) return ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    json_t *tags = json_object_get(o, "tags");
    if (tags && !json_is_null(tags)) {
        if (!json_is_array(tags)) {
            api_save_free(s);
            return ss_fail(SS_ERR_FORMAT, "\"tags\" must be an array of strings");
        }
        size_t i;
        json_t *t;
        json_array_foreach(tags, i, t)
        {
            if (!json_is_string(t))
                err = ss_fail(SS_ERR_FORMAT, "tags[%zu] is not a string", i);
            else
                err = ss_store_check_tag(json_string_value(t));
            if (err) {
                api_save_free(s);
                return err;
            }
        }
        s->tags = json_incref(tags);
    } else {
        s->tags = json_array();
    }
    json_t *md = json_object_get(o, "metadata");
    if (md && !json_is_null(md)) {
        if (!json_is_object(md)) {
            api_save_free(s);
            return ss_fail(SS_ERR_FORMAT, "\"metadata\" must be a JSON object");
        }
        s->metadata = json_incref(md);
    } else {
        s->metadata = json_object();
    }
    if (!s->tags || !s->metadata) {
        api_save_free(s);
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    return SS_OK;
}

void api_save_free(api_save *s)
{
    free(s->name);
    json_decref(s->tags);
    json_decref(s->metadata);
    memset(s, 0, sizeof *s);
}

ss_err api_save_state(ss_api *a, const api_save *s, const float *data, long long n_tokens,
                      json_t *parents, char **record)
{
    return api_save_state_indexed(a, s, data, n_tokens, parents, NULL, record);
}

ss_err api_save_state_indexed(ss_api *a, const api_save *s, const float *data,
                              long long n_tokens, json_t *parents,
                              const ss_store_prefix_entry *pe, char **record)
{
    ss_err err = SS_OK;
    char *text = NULL;
    json_t *rec = json_pack("{s:o,s:o,s:s,s:I,s:s,s:o,s:o}", "name",
                            s->name ? json_string(s->name) : json_null(), "tags",
                            s->tags ? json_incref(s->tags) : json_array(), "model",
                            a->info->fingerprint, "n_tokens", (json_int_t)n_tokens, "dtype", "F32",
                            "parents", parents ? json_incref(parents) : json_array(), "metadata",
                            s->metadata ? json_incref(s->metadata) : json_object());
    if (!rec || !(text = json_dumps(rec, JSON_COMPACT))) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory building a record");
        goto out;
    }
    err = ss_store_put_prefixed(a->store, text, data, a->info->state_bytes, pe, record);
out:
    free(text);
    json_decref(rec);
    return err;
}

#define STATE_ID_SIZE 36 /* a state id, "st_" + 32 hex digits, and its NUL */

/* ---- starting states ----------------------------------------------------------------------- */

static int hidden_nonzero(ss_api *a, const float *data)
{
    for (size_t i = 0; i < a->lay.hidden_n; i++)
        if (data[a->lay.hidden_off + i] != 0.0f) return 1;
    return 0;
}

/* Record fields of a stored state: its id (out, STATE_ID_SIZE bytes) and n_tokens. */
static ss_err record_info(const char *rec_text, char *id, long long *n_tokens,
                          long long *bytes)
{
    json_t *rec = json_loads(rec_text, 0, NULL);
    if (!rec) return ss_fail(SS_ERR_CORRUPT, "a stored record is not valid JSON");
    const char *s = json_string_value(json_object_get(rec, "id"));
    snprintf(id, STATE_ID_SIZE, "%s", s ? s : "");
    *n_tokens = json_integer_value(json_object_get(rec, "n_tokens"));
    *bytes = json_integer_value(json_object_get(rec, "bytes"));
    json_decref(rec);
    return SS_OK;
}

ss_err api_merge(ss_api *a, const json_t *sources, int normalize, ss_state *dst, json_t **parents,
                 long long *n_tokens)
{
    ss_err err = SS_OK;
    if (!json_is_array(sources))
        return ss_fail(SS_ERR_FORMAT, "a merge is an array of {\"state\", \"weight\"} objects");
    size_t n = json_array_size(sources);
    if (n == 0) return ss_fail(SS_ERR_INVALID, "the merge is empty: give at least one source");
    if (n > API_MAX_SOURCES)
        return ss_fail(SS_ERR_INVALID, "at most %d states in one merge, not %zu", API_MAX_SOURCES,
                       n);
    const char *refs[API_MAX_SOURCES];
    double w[API_MAX_SOURCES], sum = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(sources, i);
        json_t *st = json_object_get(s, "state"), *wt = json_object_get(s, "weight");
        if (!json_is_object(s) || !json_is_string(st))
            return ss_fail(SS_ERR_FORMAT, "merge source %zu needs \"state\" (an id or a name)", i);
        if (!wt || !ss_json_is_number(wt))
            return ss_fail(SS_ERR_FORMAT, "merge source %zu needs a numeric \"weight\"", i);
        w[i] = ss_json_real(wt, NAN);
        if (!isfinite(w[i]))
            return ss_fail(SS_ERR_INVALID, "the weight of merge source %zu is not finite", i);
        if (fabs(w[i]) > FLT_MAX) /* states are float: the weight must be one too */
            return ss_fail(SS_ERR_INVALID, "the weight of merge source %zu (%g) is too large", i,
                           w[i]);
        refs[i] = json_string_value(st);
        sum += w[i];
    }
    if (normalize) {
        if (sum == 0 || !isfinite(sum))
            return ss_fail(SS_ERR_INVALID, "cannot normalize: the weights sum to %g", sum);
        for (size_t i = 0; i < n; i++) w[i] /= sum;
    }
    /* One store call resolves, checks and sums the sources in one read transaction and says
     * which states it summed, so the record's parents are exactly those. Each 1 MiB piece of
     * every source is checksummed (and the result checked finite) in the pass that sums it, on
     * two threads: every byte is read from memory once (a 4-way merge of 26 MB states: ~2.5 ms). */
    ss_store_source src[API_MAX_SOURCES];
    err = ss_store_merge_f32(a->store, refs, w, (int)n, a->info->fingerprint, ss_state_data(dst),
                             a->info->state_bytes, 2, src);
    if (err) return err;
    json_t *par = json_array();
    if (!par) return ss_fail(SS_ERR_NOMEM, "out of memory");
    long long max_tokens = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i].n_tokens > max_tokens) max_tokens = src[i].n_tokens;
        if (json_array_append_new(par, json_pack("{s:s,s:f}", "id", src[i].id, "weight", w[i]))) {
            err = ss_fail(SS_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    *parents = par;
    par = NULL;
    *n_tokens = max_tokens;
out:
    json_decref(par);
    return err;
}

ss_err api_start_resolve(ss_api *a, json_t *body, const char *state_key, int allow_merge,
                         api_start *out)
{
    memset(out, 0, sizeof *out);
    json_t *sv = json_object_get(body, state_key);
    json_t *mv = allow_merge ? json_object_get(body, "merge") : NULL;
    if (sv && json_is_null(sv)) sv = NULL;
    if (mv && json_is_null(mv)) mv = NULL;
    if (sv && mv) return ss_fail(SS_ERR_FORMAT, "give \"%s\" or \"merge\", not both", state_key);
    if (!sv && !mv) return SS_OK;
    ss_err err = ss_state_new(a->model, &out->st);
    if (err) return err;
    if (sv) {
        if (!json_is_string(sv)) {
            err = ss_fail(SS_ERR_FORMAT, "\"%s\" must be a state id or name", state_key);
            goto fail;
        }
        size_t len = 0;
        char *rec = NULL, id[STATE_ID_SIZE];
        err = ss_store_get_blob(a->store, json_string_value(sv), a->info->fingerprint,
                                ss_state_data(out->st), a->info->state_bytes, &len, &rec);
        if (err == SS_ERR_TOO_LARGE || (!err && len != a->info->state_bytes)) {
            free(rec);
            err = ss_fail(SS_ERR_MISMATCH, "state '%s' does not have this model's shape",
                          json_string_value(sv));
            goto fail;
        }
        if (err) goto fail;
        long long bytes = 0;
        err = record_info(rec, id, &out->n_tokens, &bytes);
        free(rec);
        if (err) goto fail;
        snprintf(out->id, sizeof out->id, "%s", id);
        out->parents = json_pack("[{s:s,s:f}]", "id", id, "weight", 1.0);
    } else {
        err = api_merge(a, mv, 0, out->st, &out->parents, &out->n_tokens);
        if (err) goto fail;
        if (a->p.metrics) ss_metrics_merge(a->p.metrics, 0);
    }
    out->has_hidden = hidden_nonzero(a, ss_state_cdata(out->st));
    return SS_OK;
fail:
    api_start_free(out);
    return err;
}

void api_start_free(api_start *s)
{
    ss_state_free(s->st);
    json_decref(s->parents);
    memset(s, 0, sizeof *s);
}

/* ---- engine access ------------------------------------------------------------------------- */

ss_err api_submit(ss_api *a, const ss_job_params *p, ss_job **out)
{
    pthread_rwlock_rdlock(&a->engine_lock);
    ss_err err = a->engine ? ss_engine_submit(a->engine, p, out)
                           : ss_fail(SS_ERR_BUSY, "the server is shutting down");
    pthread_rwlock_unlock(&a->engine_lock);
    return err;
}

ss_err api_submit_batch(ss_api *a, const ss_job_params *ps, int n, ss_job **out)
{
    pthread_rwlock_rdlock(&a->engine_lock);
    ss_err err = a->engine ? ss_engine_submit_batch(a->engine, ps, n, out)
                           : ss_fail(SS_ERR_BUSY, "the server is shutting down");
    pthread_rwlock_unlock(&a->engine_lock);
    return err;
}

void api_cancel(ss_api *a, ss_job *job)
{
    pthread_rwlock_rdlock(&a->engine_lock);
    if (a->engine) ss_engine_cancel(a->engine, job);
    pthread_rwlock_unlock(&a->engine_lock);
}

/* ---- the object and its routes ------------------------------------------------------------ */

static const ss_host_route route_table[] = {
    {"GET", "/healthz", "healthz", api_h_healthz, SS_HOST_SCOPE_READ, SS_HOST_BODY_NONE, 0},
    {"GET", "/metrics", "metrics", api_h_metrics, SS_HOST_SCOPE_READ, SS_HOST_BODY_NONE, 0},
    {"GET", "/v1/models", "models", api_h_models, SS_HOST_SCOPE_READ, SS_HOST_BODY_NONE, 0},
    {"POST", "/v1/tokenize", "tokenize", api_h_tokenize, SS_HOST_SCOPE_READ, SS_HOST_BODY_JSON, 0},
    {"POST", "/v1/detokenize", "detokenize", api_h_detokenize, SS_HOST_SCOPE_READ,
     SS_HOST_BODY_JSON, 0},
    {"GET", "/v1/states", "states_list", api_h_states_list, SS_HOST_SCOPE_READ, SS_HOST_BODY_NONE,
     0},
    {"POST", "/v1/states", "states_create", api_h_states_create, SS_HOST_SCOPE_WRITE,
     SS_HOST_BODY_JSON, 0},
    {"POST", "/v1/states/import", "states_import", api_h_states_import, SS_HOST_SCOPE_WRITE,
     SS_HOST_BODY_BINARY, 0},
    {"POST", "/v1/states/merge", "states_merge", api_h_states_merge, SS_HOST_SCOPE_WRITE,
     SS_HOST_BODY_JSON, 0},
    {"GET", "/v1/states/{state}", "states_get", api_h_states_get, SS_HOST_SCOPE_READ,
     SS_HOST_BODY_NONE, 0},
    {"DELETE", "/v1/states/{state}", "states_delete", api_h_states_delete, SS_HOST_SCOPE_WRITE,
     SS_HOST_BODY_NONE, 0},
    {"GET", "/v1/states/{state}/data", "states_data", api_h_states_data, SS_HOST_SCOPE_READ,
     SS_HOST_BODY_NONE, 0},
    {"POST", "/v1/generate", "generate", api_h_generate, SS_HOST_SCOPE_READ, SS_HOST_BODY_JSON, 0},
    {"POST", "/v1/completions", "completions", api_h_completions, SS_HOST_SCOPE_READ,
     SS_HOST_BODY_JSON, 0},
    {"POST", "/v1/score", "score", api_h_score, SS_HOST_SCOPE_READ, SS_HOST_BODY_JSON, 0},
};

ss_err ss_api_new(ss_api **out, const ss_api_params *p)
{
    ss_api *a = calloc(1, sizeof *a);
    if (!a) return ss_fail(SS_ERR_NOMEM, "out of memory");
    a->p = *p;
    snprintf(a->model_name, sizeof a->model_name, "%s", p->model_name ? p->model_name : "model");
    a->p.model_name = a->model_name;
    atomic_init(&a->ready, 0);
    pthread_rwlock_init(&a->engine_lock, NULL);
    a->n_routes = (int)(sizeof route_table / sizeof route_table[0]);
    memcpy(a->routes, route_table, sizeof route_table);
    *out = a;
    return SS_OK;
}

void ss_api_free(ss_api *a)
{
    if (!a) return;
    pthread_rwlock_destroy(&a->engine_lock);
    free(a);
}

const ss_host_route *ss_api_routes(const ss_api *a, int *n)
{
    *n = a->n_routes;
    return a->routes;
}

void ss_api_attach(ss_api *a, ss_model *m, ss_tokenizer *tok, ss_store *store, ss_engine *engine)
{
    a->model = m;
    a->info = ss_model_get_info(m);
    ss_model_state_layout(m, &a->lay);
    a->tok = tok;
    a->store = store;
    pthread_rwlock_wrlock(&a->engine_lock);
    a->engine = engine;
    pthread_rwlock_unlock(&a->engine_lock);
    atomic_store(&a->ready, 1); /* publishes everything above to the HTTP threads */
}

void ss_api_detach_engine(ss_api *a)
{
    pthread_rwlock_wrlock(&a->engine_lock);
    a->engine = NULL;
    pthread_rwlock_unlock(&a->engine_lock);
}
