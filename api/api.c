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
#include "ss_log.h"
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

ss_store_scope api_scope(ss_host_req *r)
{
    return (ss_store_scope){.tenant = ss_host_tenant(r),
                            .admin = ss_host_scope_of(r) == SS_HOST_SCOPE_ADMIN};
}

ss_err api_save_parse(ss_api *a, const ss_store_scope *sc, json_t *o, api_save *s)
{
    memset(s, 0, sizeof *s);
    if (sc) s->scope = *sc;
    const char *name;
    ss_err err = api_get_string(o, "name", &name);
    if (err) return err;
    if (name) {
        if ((err = ss_store_check_name(name))) return err;
        char *rec = NULL;
        if (ss_store_get_record_as(a->store, sc, name, &rec) == SS_OK) {
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

ss_err api_save_blob_indexed(ss_api *a, const api_save *s, const void *blob, size_t bytes,
                             long long n_tokens, json_t *parents, const ss_store_prefix_entry *pe,
                             char **record)
{
    ss_err err = SS_OK;
    char *text = NULL;
    json_t *rec = json_pack("{s:o,s:o,s:s,s:I,s:s,s:o,s:o}", "name",
                            s->name ? json_string(s->name) : json_null(), "tags",
                            s->tags ? json_incref(s->tags) : json_array(), "model",
                            a->info->fingerprint, "n_tokens", (json_int_t)n_tokens, "dtype", "F32",
                            "parents", parents ? json_incref(parents) : json_array(), "metadata",
                            s->metadata ? json_incref(s->metadata) : json_object());
    if (rec && s->merge_mode && json_object_set_new(rec, "merge_mode", json_string(s->merge_mode)))
        json_decref(rec), rec = NULL;
    if (!rec || !(text = json_dumps(rec, JSON_COMPACT))) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory building a record");
        goto out;
    }
    err = ss_store_put_as(a->store, &s->scope, text, blob, bytes, pe, record);
out:
    free(text);
    json_decref(rec);
    return err;
}

ss_err api_save_state(ss_api *a, const api_save *s, const float *data, long long n_tokens,
                      json_t *parents, char **record)
{
    return api_save_blob_indexed(a, s, data, a->info->state_bytes, n_tokens, parents, NULL, record);
}

ss_err api_save_state_indexed(ss_api *a, const api_save *s, const float *data,
                              long long n_tokens, json_t *parents,
                              const ss_store_prefix_entry *pe, char **record)
{
    return api_save_blob_indexed(a, s, data, a->info->state_bytes, n_tokens, parents, pe, record);
}

ss_err api_save_st_indexed(ss_api *a, const api_save *s, const ss_state *st, long long n_tokens,
                           json_t *parents, const ss_store_prefix_entry *pe, char **record)
{
    const size_t sb = a->info->state_bytes, db = a->info->decay_floats * sizeof(float);
    if (!ss_state_has_decay(st) || db == 0)
        return api_save_blob_indexed(a, s, ss_state_cdata(st), sb, n_tokens, parents, pe, record);
    float *blob = ss_scratch_take(a->model); /* (kept blocks: no fresh memory to touch) */
    if (!blob) return ss_fail(SS_ERR_NOMEM, "out of memory");
    memcpy(blob, ss_state_cdata(st), sb);
    memcpy((unsigned char *)blob + sb, ss_state_cdecay(st), db);
    ss_err err = api_save_blob_indexed(a, s, blob, sb + db, n_tokens, parents, pe, record);
    ss_scratch_give(a->model, blob);
    return err;
}

ss_err api_save_st(ss_api *a, const api_save *s, const ss_state *st, long long n_tokens,
                   json_t *parents, char **record)
{
    return api_save_st_indexed(a, s, st, n_tokens, parents, NULL, record);
}

ss_err api_load_state(ss_api *a, const ss_store_scope *sc, const char *ref, ss_state *st,
                      char **rec)
{
    const size_t sb = a->info->state_bytes, db = a->info->decay_floats * sizeof(float);
    size_t len = 0;
    float *buf = ss_scratch_take(a->model); /* sb + db and a float more */
    if (!buf) return ss_fail(SS_ERR_NOMEM, "out of memory");
    ss_err err =
        ss_store_get_blob_as(a->store, sc, ref, a->info->fingerprint, buf, sb + db, &len, rec);
    if (err == SS_ERR_TOO_LARGE || (!err && len != sb && len != sb + db)) {
        if (!err && rec) free(*rec), *rec = NULL;
        err = ss_fail(SS_ERR_MISMATCH, "state '%s' does not have this model's shape", ref);
    }
    if (!err) err = ss_state_set(st, buf, a->info->state_floats);
    if (!err && len == sb + db) err = ss_state_set_decay(st, buf + a->info->state_floats,
                                                         a->info->decay_floats);
    ss_scratch_give(a->model, buf);
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

static const char *const merge_mode_names[] = {"linear", "sequential", "symmetric"};

const char *api_merge_mode_name(api_merge_mode m)
{
    return (unsigned)m < 3 ? merge_mode_names[m] : "?";
}

ss_err api_merge_mode_parse(const json_t *v, api_merge_mode *out)
{
    *out = API_MERGE_LINEAR;
    if (!v || json_is_null(v)) return SS_OK;
    if (!json_is_string(v))
        return ss_fail(SS_ERR_FORMAT, "\"mode\" must be \"linear\", \"sequential\" or "
                                      "\"symmetric\"");
    for (int i = 0; i < 3; i++) {
        if (!strcmp(json_string_value(v), merge_mode_names[i])) {
            *out = (api_merge_mode)i;
            return SS_OK;
        }
    }
    return ss_fail(SS_ERR_INVALID, "unknown merge mode \"%.64s\" (linear, sequential or "
                                   "symmetric)", json_string_value(v));
}

/* The sources' refs and weights (decay-aware modes: weight absent or 1) into refs, w; *n. */
static ss_err parse_sources(const json_t *sources, api_merge_mode mode, const char **refs,
                            double *w, size_t *n_out)
{
    if (!json_is_array(sources))
        return ss_fail(SS_ERR_FORMAT, "a merge is an array of {\"state\", \"weight\"} objects");
    size_t n = json_array_size(sources);
    if (n == 0) return ss_fail(SS_ERR_INVALID, "the merge is empty: give at least one source");
    if (n > API_MAX_SOURCES)
        return ss_fail(SS_ERR_INVALID, "at most %d states in one merge, not %zu", API_MAX_SOURCES,
                       n);
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(sources, i);
        json_t *st = json_object_get(s, "state"), *wt = json_object_get(s, "weight");
        if (!json_is_object(s) || !json_is_string(st))
            return ss_fail(SS_ERR_FORMAT, "merge source %zu needs \"state\" (an id or a name)", i);
        if (mode != API_MERGE_LINEAR && (!wt || json_is_null(wt))) wt = NULL;
        else if (!wt || !ss_json_is_number(wt))
            return ss_fail(SS_ERR_FORMAT, "merge source %zu needs a numeric \"weight\"", i);
        w[i] = wt ? ss_json_real(wt, NAN) : 1.0;
        if (!isfinite(w[i]))
            return ss_fail(SS_ERR_INVALID, "the weight of merge source %zu is not finite", i);
        if (fabs(w[i]) > FLT_MAX) /* states are float: the weight must be one too */
            return ss_fail(SS_ERR_INVALID, "the weight of merge source %zu (%g) is too large", i,
                           w[i]);
        if (mode != API_MERGE_LINEAR && w[i] != 1.0)
            return ss_fail(SS_ERR_INVALID, "merge source %zu has weight %g, but mode \"%s\" "
                                           "composes states as read one after another and takes "
                                           "no weights (give 1 or leave it out)", i, w[i],
                           api_merge_mode_name(mode));
        refs[i] = json_string_value(st);
    }
    *n_out = n;
    return SS_OK;
}

/* Sizes of the sources' blobs: *with = how many also hold a decay. */
static ss_err count_decays(ss_api *a, const ss_store_scope *sc, const char **refs, size_t n,
                           size_t *with)
{
    const size_t sb = a->info->state_bytes, db = a->info->decay_floats * sizeof(float);
    *with = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        ss_err err =
            ss_store_get_blob_as(a->store, sc, refs[i], a->info->fingerprint, NULL, 0, &len, NULL);
        if (err && err != SS_ERR_TOO_LARGE) return err;
        if (len != sb && len != sb + db)
            return ss_fail(SS_ERR_MISMATCH, "state '%s' does not have this model's shape", refs[i]);
        if (db && len == sb + db) (*with)++;
    }
    return SS_OK;
}

/*
 * Linear merge of sources that do not all have a decay: the state parts only, source by source
 * (evaluated as the store's merge does: (float)w0 * x0, then one fused multiply-add per source).
 */
static ss_err merge_mixed(ss_api *a, const ss_store_scope *sc, const char **refs, const double *w,
                          size_t n, float *out, ss_store_source *src)
{
    const size_t F = a->info->state_floats, D = a->info->decay_floats;
    float *buf = ss_scratch_take(a->model);
    if (!buf) return ss_fail(SS_ERR_NOMEM, "out of memory");
    ss_err err = SS_OK;
    for (size_t i = 0; i < n && !err; i++) {
        char *rec = NULL, id[STATE_ID_SIZE] = "";
        long long bytes = 0, nt = 0;
        err = ss_store_get_blob_as(a->store, sc, refs[i], a->info->fingerprint, buf,
                                   (F + D) * sizeof(float), NULL, &rec);
        if (!err) err = record_info(rec, id, &nt, &bytes);
        src[i].n_tokens = nt;
        free(rec);
        if (err) break;
        snprintf(src[i].id, sizeof src[i].id, "%s", id);
        const float wf = (float)w[i];
        for (size_t k = 0; k < F; k++) out[k] = i == 0 ? wf * buf[k] : fmaf(wf, buf[k], out[k]);
    }
    ss_scratch_give(a->model, buf);
    if (!err) err = ss_state_check_finite(out, F);
    return err;
}

/* Linear: one store call resolves, checks and sums the sources (and their decays when all have
 * one) in one read transaction, checksumming each 1 MiB piece in the pass that sums it. */
static ss_err merge_linear(ss_api *a, const ss_store_scope *sc, const char **refs,
                           const double *w, size_t n, ss_state *dst, ss_store_source *src)
{
    const size_t F = a->info->state_floats, D = a->info->decay_floats;
    size_t with = 0;
    ss_err err = count_decays(a, sc, refs, n, &with);
    if (err) return err;
    if (with == 0 || with < n) {
        err = with == 0 ? ss_store_merge_f32_as(a->store, sc, refs, w, (int)n,
                                                a->info->fingerprint, ss_state_data(dst),
                                                F * sizeof(float), 2, src)
                        : merge_mixed(a, sc, refs, w, n, ss_state_data(dst), src);
        return err ? err : ss_state_set_decay(dst, NULL, 0);
    }
    float *buf = ss_scratch_take(a->model);
    if (!buf) return ss_fail(SS_ERR_NOMEM, "out of memory");
    err = ss_store_merge_f32_as(a->store, sc, refs, w, (int)n, a->info->fingerprint, buf,
                                (F + D) * sizeof(float), 2, src);
    if (!err) err = ss_state_set(dst, buf, F);
    if (!err) err = ss_state_set_decay(dst, buf + F, D);
    ss_scratch_give(a->model, buf);
    return err;
}

/* Sequential / symmetric: every source with its decay, composed by the model. */
static ss_err merge_decay(ss_api *a, const ss_store_scope *sc, const char **refs, size_t n,
                          api_merge_mode mode, ss_state *dst, ss_store_source *src)
{
    const size_t F = a->info->state_floats, D = a->info->decay_floats;
    float *buf[API_MAX_SOURCES] = {0}, *od = ss_scratch_take(a->model); /* one block a source */
    const float *st[API_MAX_SOURCES], *dc[API_MAX_SOURCES];
    ss_err err = od ? SS_OK : ss_fail(SS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n && !err; i++) {
        char *rec = NULL, id[STATE_ID_SIZE] = "";
        long long bytes = 0, nt = 0;
        size_t len = 0;
        float *b = buf[i] = ss_scratch_take(a->model);
        if (!b) {
            err = ss_fail(SS_ERR_NOMEM, "out of memory");
            break;
        }
        err = ss_store_get_blob_as(a->store, sc, refs[i], a->info->fingerprint, b,
                                   (F + D) * sizeof(float), &len, &rec);
        if (err == SS_ERR_TOO_LARGE)
            err = ss_fail(SS_ERR_MISMATCH, "state '%s' does not have this model's shape", refs[i]);
        if (!err && (D == 0 || len != (F + D) * sizeof(float)))
            err = ss_fail(SS_ERR_INVALID, "state '%s' has no decay (stored before states kept "
                                          "one, or imported from a file without it): mode \"%s\" "
                                          "needs the decay of every source", refs[i],
                          api_merge_mode_name(mode));
        if (!err) err = record_info(rec, id, &nt, &bytes);
        src[i].n_tokens = nt;
        free(rec);
        snprintf(src[i].id, sizeof src[i].id, "%s", id);
        st[i] = b;
        dc[i] = b + F;
    }
    if (!err)
        err = ss_state_compose(a->model,
                               mode == API_MERGE_SEQUENTIAL ? SS_COMPOSE_SEQUENTIAL
                                                            : SS_COMPOSE_SYMMETRIC,
                               st, dc, (int)n, ss_state_data(dst), od);
    if (!err) err = ss_state_set_decay(dst, od, D);
    for (size_t i = 0; i < n; i++) ss_scratch_give(a->model, buf[i]);
    ss_scratch_give(a->model, od);
    return err;
}

ss_err api_merge_with(ss_api *a, const ss_store_scope *sc, const json_t *sources, int normalize,
                      api_merge_mode mode,
                      ss_state *dst, json_t **parents, long long *n_tokens)
{
    const char *refs[API_MAX_SOURCES];
    double w[API_MAX_SOURCES], sum = 0;
    size_t n = 0;
    ss_err err = parse_sources(sources, mode, refs, w, &n);
    if (err) return err;
    if (normalize && mode != API_MERGE_LINEAR)
        return ss_fail(SS_ERR_INVALID, "\"normalize\" applies to weights: mode \"%s\" takes "
                                       "none", api_merge_mode_name(mode));
    for (size_t i = 0; i < n; i++) sum += w[i];
    if (normalize) {
        if (sum == 0 || !isfinite(sum))
            return ss_fail(SS_ERR_INVALID, "cannot normalize: the weights sum to %g", sum);
        for (size_t i = 0; i < n; i++) w[i] /= sum;
    }
    ss_store_source src[API_MAX_SOURCES];
    err = mode == API_MERGE_LINEAR ? merge_linear(a, sc, refs, w, n, dst, src)
                                   : merge_decay(a, sc, refs, n, mode, dst, src);
    if (err) return err;
    json_t *par = json_array();
    if (!par) return ss_fail(SS_ERR_NOMEM, "out of memory");
    long long max_tokens = 0, total = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i].n_tokens > max_tokens) max_tokens = src[i].n_tokens;
        total += src[i].n_tokens;
        if (json_array_append_new(par, json_pack("{s:s,s:f}", "id", src[i].id, "weight", w[i]))) {
            json_decref(par);
            return ss_fail(SS_ERR_NOMEM, "out of memory");
        }
    }
    *parents = par;
    /* a linear mix is not a sequence of tokens (the largest is the honest bound); a composition
     * reads every source's context once */
    *n_tokens = mode == API_MERGE_LINEAR ? max_tokens : total;
    return SS_OK;
}

ss_err api_merge(ss_api *a, const ss_store_scope *sc, const json_t *sources, int normalize,
                 ss_state *dst, json_t **parents, long long *n_tokens)
{
    return api_merge_with(a, sc, sources, normalize, API_MERGE_LINEAR, dst, parents, n_tokens);
}

/* The on-the-fly "merge": a list of sources (linear), or {"sources", "mode"?, "normalize"?}. */
static ss_err merge_on_the_fly(ss_api *a, const ss_store_scope *sc, const json_t *mv,
                               ss_state *dst, json_t **parents, long long *n_tokens)
{
    if (!json_is_object(mv)) return api_merge(a, sc, mv, 0, dst, parents, n_tokens);
    const char *key;
    json_t *v;
    json_object_foreach ((json_t *)mv, key, v) {
        if (strcmp(key, "sources") && strcmp(key, "mode") && strcmp(key, "normalize"))
            return ss_fail(SS_ERR_FORMAT, "\"merge\" has an unknown field \"%.64s\" (sources, "
                                          "mode, normalize)", key);
    }
    const json_t *sources = json_object_get(mv, "sources"), *nv = json_object_get(mv, "normalize");
    if (!sources)
        return ss_fail(SS_ERR_FORMAT, "\"merge\" as an object needs \"sources\"");
    if (nv && !json_is_boolean(nv))
        return ss_fail(SS_ERR_FORMAT, "\"merge.normalize\" must be true or false");
    api_merge_mode mode;
    ss_err err = api_merge_mode_parse(json_object_get(mv, "mode"), &mode);
    if (err) return err;
    return api_merge_with(a, sc, sources, json_is_true(nv), mode, dst, parents, n_tokens);
}

ss_err api_start_resolve(ss_api *a, const ss_store_scope *sc, json_t *body,
                         const char *state_key, int allow_merge, api_start *out)
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
        char *rec = NULL, id[STATE_ID_SIZE];
        err = api_load_state(a, sc, json_string_value(sv), out->st, &rec);
        if (err) goto fail;
        long long bytes = 0;
        err = record_info(rec, id, &out->n_tokens, &bytes);
        json_t *rj = err ? NULL : json_loads(rec, 0, NULL);
        const char *owner = json_string_value(json_object_get(rj, "tenant"));
        const char *mine = sc && sc->tenant ? sc->tenant : "";
        out->foreign = strcmp(owner ? owner : "", mine) != 0;
        json_decref(rj);
        free(rec);
        if (err) goto fail;
        snprintf(out->id, sizeof out->id, "%s", id);
        out->parents = json_pack("[{s:s,s:f}]", "id", id, "weight", 1.0);
    } else {
        err = merge_on_the_fly(a, sc, mv, out->st, &out->parents, &out->n_tokens);
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
    {"POST", "/v1/states/{state}/share", "states_share", api_h_states_share, SS_HOST_SCOPE_ADMIN,
     SS_HOST_BODY_NONE, 0},
    {"DELETE", "/v1/states/{state}/share", "states_unshare", api_h_states_unshare,
     SS_HOST_SCOPE_ADMIN, SS_HOST_BODY_NONE, 0},
    {"POST", "/v1/generate", "generate", api_h_generate, SS_HOST_SCOPE_READ, SS_HOST_BODY_JSON, 0},
    {"POST", "/v1/completions", "completions", api_h_completions, SS_HOST_SCOPE_READ,
     SS_HOST_BODY_JSON, 0},
    {"POST", "/v1/score", "score", api_h_score, SS_HOST_SCOPE_READ, SS_HOST_BODY_JSON, 0},
    {"POST", "/v1/states/search", "states_search", api_h_states_search, SS_HOST_SCOPE_READ,
     SS_HOST_BODY_JSON, 0},
    {"GET", "/v1/whoami", "whoami", api_h_whoami, SS_HOST_SCOPE_READ, SS_HOST_BODY_NONE, 0},
    {"GET", "/v1/states/{state}/children", "states_children", api_h_states_children,
     SS_HOST_SCOPE_READ, SS_HOST_BODY_NONE, 0},
    {"GET", "/v1/states/{state}/stats", "states_stats", api_h_states_stats, SS_HOST_SCOPE_READ,
     SS_HOST_BODY_NONE, 0},
    {"POST", "/v1/states/similarity", "states_similarity", api_h_states_similarity,
     SS_HOST_SCOPE_READ, SS_HOST_BODY_JSON, 0},
    /* the operators' console (web.c): static files, no key needed */
    {"GET", "/", "ui", api_h_ui_index, SS_HOST_SCOPE_PUBLIC, SS_HOST_BODY_NONE, 0},
    {"GET", "/ui/{file}", "ui", api_h_ui_asset, SS_HOST_SCOPE_PUBLIC, SS_HOST_BODY_NONE, 0},
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
    api_cache_free(a->cache);
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
    if (!a->keys_ready) api_keys_open(a);
    if (!a->cache && api_cache_new(a))
        ss_log("warning", "no_prompt_cache", NULL, "no prompt cache: %s", ss_errmsg());
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
