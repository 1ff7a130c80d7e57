/*
 * search.c - retrieval over the catalog: POST /v1/states/search (docs/api.md, "Search").
 *
 * Every stored state of the served model has a retrieval key (model/key.c makes it, the store
 * keeps it beside the state and holds all of them in one in-memory matrix: ss_store_search).
 * A query is a stored state ({"state": id | name}: its key is computed from its floats at once)
 * or a text / token ids, run from the zero state through the engine as a prefill job whose final
 * state gives the key (EP_SEARCH: the answer is built in api_search_answer once the job is done).
 * Scores are cosine similarities (keys are L2-normalised), best first.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer.h"
#include "ss_log.h"
#include "ss_util.h"

/* ---- the keyer the store calls on every put ---- */

static ss_err key_of_blob(void *user, const void *blob, size_t len, float *key)
{
    ss_api *a = user;
    const size_t sb = a->info->state_bytes, db = a->info->decay_floats * sizeof(float);
    if (len != sb && len != sb + db)
        return ss_fail(SS_ERR_MISMATCH, "a blob of %zu bytes is not a state of this model", len);
    return ss_state_key(a->model, a->key_kind, blob, a->info->state_floats, key);
}

void api_keys_open(ss_api *a)
{
    a->key_kind = API_KEY_DEFAULT;
    if (a->p.retrieval_key && ss_key_kind_parse(a->p.retrieval_key, &a->key_kind))
        a->key_kind = API_KEY_DEFAULT; /* main() validated it already */
    a->key_dim = ss_key_dim(a->model, a->key_kind);
    ss_store_keyer k = {.kind = ss_key_kind_name(a->key_kind),
                        .model = a->info->fingerprint,
                        .dim = a->key_dim,
                        .fn = key_of_blob,
                        .user = a};
    uint64_t loaded = 0, computed = 0;
    ss_err err = ss_store_keys_open(a->store, &k, &loaded, &computed);
    if (err) {
        snprintf(a->keys_why, sizeof a->keys_why, "%s", ss_errmsg());
        ss_log("warning", "no_search", NULL, "search is not available: %s", a->keys_why);
        ss_err_clear();
        return;
    }
    a->keys_ready = 1;
    if (computed)
        ss_log("info", "retrieval_keys",
               json_pack("{s:s,s:I,s:I}", "kind", k.kind, "loaded", (json_int_t)loaded,
                         "computed", (json_int_t)computed),
               "retrieval keys (%s): %llu loaded, %llu computed now", k.kind,
               (unsigned long long)loaded, (unsigned long long)computed);
}

/* ---- request ---- */

void api_search_free(api_search *s)
{
    free(s->tag);
    free(s->prefix);
    memset(s, 0, sizeof *s);
}

ss_err api_search_parse(ss_api *a, const ss_store_scope *sc, json_t *o, const char *where,
                        int dflt_k, api_search *s)
{
    memset(s, 0, sizeof *s);
    if (sc) s->scope = *sc;
    if (!a->keys_ready)
        return ss_fail(SS_ERR_UNSUPPORTED, "search is not available on this server: %s",
                       a->keys_why[0] ? a->keys_why : "no retrieval keys");
    long long k;
    const char *tag = NULL, *prefix = NULL;
    ss_err err = api_get_int(o, "k", dflt_k, &k);
    if (!err && (k < 1 || k > SS_STORE_SEARCH_MAX))
        err = ss_fail(SS_ERR_INVALID, "%sk must be 1..%d (got %lld)", where, SS_STORE_SEARCH_MAX,
                      k);
    if (!err) err = api_get_string(o, "tag", &tag);
    if (!err && tag) err = ss_store_check_tag(tag);
    if (!err) err = api_get_string(o, "prefix", &prefix);
    if (err) return err;
    s->k = (int)k;
    if ((tag && !(s->tag = strdup(tag))) || (prefix && !(s->prefix = strdup(prefix)))) {
        api_search_free(s);
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    return SS_OK;
}

ss_err api_search_run(ss_api *a, const api_search *s, const float *state, json_t **data)
{
    ss_err err = SS_OK;
    float *key = malloc((size_t)a->key_dim * sizeof *key);
    ss_store_hit *hits = calloc((size_t)s->k, sizeof *hits);
    json_t *out = json_array();
    int n = 0;
    if (!key || !hits || !out) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((err = ss_state_key(a->model, a->key_kind, state, a->info->state_floats, key))) goto out;
    /* the prompt cache's entries are never results unless asked for by their tag */
    ss_store_query q = {.key = key,
                        .dim = a->key_dim,
                        .k = s->k,
                        .tag = s->tag,
                        .prefix = s->prefix,
                        .exclude_tag = s->tag && !strcmp(s->tag, API_CACHE_TAG) ? NULL
                                                                               : API_CACHE_TAG,
                        .scope = &s->scope};
    if ((err = ss_store_search(a->store, &q, hits, &n))) goto out;
    for (int i = 0; i < n; i++) {
        char *text = NULL;
        ss_err e = ss_store_get_record_as(a->store, &s->scope, hits[i].id, &text);
        if (e == SS_ERR_NOT_FOUND || e == SS_ERR_CORRUPT) { /* deleted meanwhile, or damaged */
            ss_err_clear();
            continue;
        }
        if (e) {
            err = e;
            goto out;
        }
        json_t *rec = json_loads(text, 0, NULL);
        free(text);
        if (!rec || json_array_append_new(out, json_pack("{s:o,s:o}", "state", rec, "score",
                                                         api_real(hits[i].score)))) {
            err = ss_fail(SS_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    *data = out;
    out = NULL;
out:
    json_decref(out);
    free(key);
    free(hits);
    return err;
}

/* The answer: {"object": "list", "key": kind, "data": [{"state": record, "score"}]}. */
static void answer(ss_api *a, ss_host_req *r, const api_search *s, const float *state,
                   int query_tokens)
{
    json_t *data = NULL;
    ss_err err = api_search_run(a, s, state, &data);
    if (err) {
        api_fail(r, err);
        return;
    }
    json_t *j = json_pack("{s:s,s:s,s:o}", "object", "list", "key", ss_key_kind_name(a->key_kind),
                          "data", data);
    if (j && query_tokens >= 0) json_object_set_new(j, "query_tokens", json_integer(query_tokens));
    api_json(r, 200, j);
}

void api_search_answer(infer *inf, ss_host_req *r)
{
    const ss_job_result *res = ss_job_get_result(inf->ch[0].job);
    if (res->finish == SS_FINISH_ERROR) {
        api_fail(r, ss_fail(res->err ? res->err : SS_ERR_INTERNAL, "%s", res->errmsg));
        return;
    }
    if (res->finish == SS_FINISH_CANCELLED || !res->state) {
        api_fail(r, ss_fail(SS_ERR_CANCELLED, "the request was cancelled (server shutting down)"));
        return;
    }
    answer(inf->a, r, &inf->search, ss_state_cdata(res->state), inf->ch[0].n_prompt);
}

/* POST /v1/states/search */
static ss_err search(ss_api *a, ss_host_req *r, json_t *body)
{
    json_t *qv = json_object_get(body, "query");
    if (!qv || json_is_null(qv))
        return ss_fail(SS_ERR_FORMAT, "\"query\" is required: a text, an array of token ids, or "
                                      "{\"state\": id or name}");
    if (json_is_object(qv)) {
        const char *ref = json_string_value(json_object_get(qv, "state"));
        if (!ref || json_object_size(qv) != 1)
            return ss_fail(SS_ERR_FORMAT, "a query object is {\"state\": id or name}");
        api_search s;
        ss_store_scope sc = api_scope(r);
        ss_err err = api_search_parse(a, &sc, body, "", 5, &s);
        if (err) return err;
        ss_state *st = NULL;
        if (!(err = ss_state_new(a->model, &st))) err = api_load_state(a, &sc, ref, st, NULL);
        if (!err) answer(a, r, &s, ss_state_cdata(st), -1);
        ss_state_free(st);
        api_search_free(&s);
        return err;
    }
    infer *inf = NULL;
    ss_err err = infer_new(a, r, EP_SEARCH, &inf);
    if (!err) err = api_search_parse(a, &inf->scope, body, "", 5, &inf->search);
    if (!err) {
        inf->n_choices = 1;
        err = api_tokens(a, qv, "query", &inf->ch[0].prompt, &inf->ch[0].n_prompt);
    }
    if (!err && inf->ch[0].n_prompt == 0) err = ss_fail(SS_ERR_INVALID, "the query is empty");
    if (err) return err;
    ss_job_params p = infer_base_params(inf, SS_JOB_PREFILL);
    infer_submit(inf, &p);
    return SS_OK;
}

void api_h_states_search(void *app, ss_host_req *r)
{
    api_with_body(app, r, search);
}

/* ---- retrieve-then-merge: "merge": {"retrieve": {...}} on generate, completions, score ---- */

struct api_retrieve {
    json_t *body;        /* the request's body, kept for the second pass */
    api_retrieve_next next;
    api_search search;
    int softmax;         /* weights: 0 uniform, 1 softmax of score / temperature */
    double temperature;
    ss_job *job;         /* the query's prefill job (under inf->mu), NULL for a state query */
    int done;
};

void api_retrieve_free(api_retrieve *rt)
{
    if (!rt) return;
    ss_job_free(rt->job);
    json_decref(rt->body);
    api_search_free(&rt->search);
    free(rt);
}

void api_retrieve_cancel(infer *inf)
{
    if (inf->retr && inf->retr->job && !inf->retr->done) api_cancel(inf->a, inf->retr->job);
}

int api_retrieve_wanted(json_t *body)
{
    json_t *mv = json_object_get(body, "merge");
    return json_is_object(mv) && json_object_get(mv, "retrieve") != NULL;
}

/* The hits for the query's state: the merge's sources into the body, the answer's "retrieved". */
static ss_err retrieved_merge(infer *inf, const float *state)
{
    api_retrieve *rt = inf->retr;
    json_t *data = NULL, *sources = NULL, *used = NULL;
    ss_err err = api_search_run(inf->a, &rt->search, state, &data);
    if (err) return err;
    size_t n = json_array_size(data);
    if (n == 0) {
        json_decref(data);
        return ss_fail(SS_ERR_INVALID, "merge.retrieve found no stored state to merge (an empty "
                                       "catalog, or none passes tag / prefix)");
    }
    double w[SS_STORE_SEARCH_MAX], top = -1e300, sum = 0;
    for (size_t i = 0; i < n; i++) {
        double s = json_number_value(json_object_get(json_array_get(data, i), "score"));
        w[i] = s;
        if (s > top) top = s;
    }
    for (size_t i = 0; i < n; i++) {
        w[i] = rt->softmax ? exp((w[i] - top) / rt->temperature) : 1.0;
        sum += w[i];
    }
    sources = json_array();
    used = json_array();
    for (size_t i = 0; sources && used && i < n; i++) {
        json_t *h = json_array_get(data, i), *rec = json_object_get(h, "state");
        const char *id = json_string_value(json_object_get(rec, "id"));
        json_array_append_new(sources, json_pack("{s:s,s:f}", "state", id, "weight", w[i] / sum));
        json_array_append_new(used, json_pack("{s:s,s:O,s:O,s:f}", "id", id, "name",
                                              json_object_get(rec, "name"), "score",
                                              json_object_get(h, "score"), "weight", w[i] / sum));
    }
    json_decref(data);
    if (!sources || !used ||
        json_object_set_new(rt->body, "merge", json_pack("{s:o}", "sources", sources))) {
        json_decref(used);
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    inf->retrieved = used;
    return SS_OK;
}

/* The query's prefill job ended (engine thread): wake the request. Last: drop its reference. */
static void retr_on_done(void *user, ss_job *job)
{
    infer *inf = user;
    ss_host_req *r = inf->req;
    pthread_mutex_lock(&inf->mu);
    inf->retr->job = job;
    inf->retr->done = 1;
    pthread_mutex_unlock(&inf->mu);
    ss_host_wake(r);
    ss_host_req_unref(r);
}

/* The continuation once the query ran: search, merge, then the request itself (second pass). */
static void retr_cont(void *app, ss_host_req *r, void *user)
{
    (void)app;
    infer *inf = user;
    api_retrieve *rt = inf->retr;
    if (ss_host_stopping(r)) {
        api_reject(r, SS_ERR_BUSY, API_CODE_SHUTTING_DOWN, "the server is shutting down");
        return;
    }
    const ss_job_result *res = ss_job_get_result(rt->job);
    ss_err err = SS_OK;
    if (res->finish == SS_FINISH_ERROR)
        err = ss_fail(res->err ? res->err : SS_ERR_INTERNAL, "%s", res->errmsg);
    else if (res->finish == SS_FINISH_CANCELLED || !res->state)
        err = ss_fail(SS_ERR_CANCELLED, "the request was cancelled (server shutting down)");
    if (!err) err = retrieved_merge(inf, ss_state_cdata(res->state));
    if (!err) err = rt->next(inf, rt->body);
    if (err) api_fail(r, err);
    ss_err_clear();
}

ss_err api_retrieve_start(infer *inf, json_t *body, const json_t *dflt_query,
                          api_retrieve_next next)
{
    ss_api *a = inf->a;
    json_t *mv = json_object_get(body, "merge"), *rv = json_object_get(mv, "retrieve");
    if (json_object_size(mv) != 1)
        return ss_fail(SS_ERR_FORMAT, "\"merge\" with \"retrieve\" takes no other field");
    if (!json_is_object(rv))
        return ss_fail(SS_ERR_FORMAT, "\"merge.retrieve\" must be an object {query?, k, weights?, "
                                      "temperature?, tag?, prefix?}");
    const char *key;
    json_t *v;
    json_object_foreach (rv, key, v) {
        static const char *const known[] = {"query", "k", "weights", "temperature", "tag",
                                            "prefix"};
        int ok = 0;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) ok |= !strcmp(key, known[i]);
        if (!ok)
            return ss_fail(SS_ERR_FORMAT, "\"merge.retrieve\" has an unknown field \"%.64s\" "
                                          "(query, k, weights, temperature, tag, prefix)", key);
    }
    api_retrieve *rt = calloc(1, sizeof *rt);
    if (!rt) return ss_fail(SS_ERR_NOMEM, "out of memory");
    inf->retr = rt; /* freed with the context */
    rt->body = json_incref(body);
    rt->next = next;
    const char *weights = NULL;
    ss_err err = api_search_parse(a, &inf->scope, rv, "merge.retrieve.", 5, &rt->search);
    if (!err) err = api_get_string(rv, "weights", &weights);
    if (!err && weights && strcmp(weights, "uniform") && strcmp(weights, "softmax"))
        err = ss_fail(SS_ERR_INVALID, "merge.retrieve.weights must be \"uniform\" or "
                                      "\"softmax\" (got \"%.64s\")", weights);
    rt->softmax = weights && !strcmp(weights, "softmax");
    if (!err) err = api_get_real(rv, "temperature", 0.01, &rt->temperature);
    if (!err && json_object_get(rv, "temperature") && !rt->softmax)
        err = ss_fail(SS_ERR_INVALID, "merge.retrieve.temperature applies to \"softmax\" weights");
    if (!err && !(rt->temperature > 0))
        err = ss_fail(SS_ERR_INVALID, "merge.retrieve.temperature must be > 0");
    if (err) return err;

    const json_t *q = json_object_get(rv, "query");
    if (!q || json_is_null(q)) q = dflt_query;
    if (!q || json_is_null(q))
        return ss_fail(SS_ERR_INVALID, "merge.retrieve needs a query: give merge.retrieve.query, "
                                       "or a single prompt (context, for score) to use as one");
    if (json_is_object(q)) { /* a stored state: its key at once */
        const char *ref = json_string_value(json_object_get(q, "state"));
        if (!ref || json_object_size(q) != 1)
            return ss_fail(SS_ERR_FORMAT, "a query object is {\"state\": id or name}");
        ss_state *st = NULL;
        if (!(err = ss_state_new(a->model, &st)))
            err = api_load_state(a, &inf->scope, ref, st, NULL);
        if (!err) err = retrieved_merge(inf, ss_state_cdata(st));
        ss_state_free(st);
        return err ? err : next(inf, body);
    }
    if (json_is_array(q) && json_array_size(q) && !json_is_integer(json_array_get(q, 0)))
        return ss_fail(SS_ERR_INVALID, "a batch has no single prompt to retrieve with: give "
                                       "merge.retrieve.query");
    int32_t *ids = NULL;
    int n = 0;
    if ((err = api_tokens(a, q, "merge.retrieve.query", &ids, &n))) return err;
    if (n == 0) {
        free(ids);
        return ss_fail(SS_ERR_INVALID, "the retrieval query is empty");
    }
    ss_job_params p = {.kind = SS_JOB_PREFILL, .prompt = ids, .n_prompt = n, .user = inf,
                       .on_done = retr_on_done};
    ss_job *job = NULL;
    ss_host_req_ref(inf->req); /* the job's, dropped by retr_on_done */
    err = api_submit(a, &p, &job);
    free(ids); /* copied at submit */
    if (err) {
        ss_host_req_unref(inf->req);
        return err;
    }
    pthread_mutex_lock(&inf->mu);
    if (!rt->job) rt->job = job;
    pthread_mutex_unlock(&inf->mu);
    ss_host_wait(inf->req, retr_cont, inf);
    return SS_OK;
}
