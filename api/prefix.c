/*
 * prefix.c - prompt caching for the inference endpoints: checkpoints along a prompt, the hash
 * chain every state made from tokens is indexed under, and exact prefix reuse ("reuse").
 *
 * A request's starting state is a chain root when it is the zero state or one stored state (a
 * merge on the fly is not): the root is the zero state's of this model, the stored state's own
 * chain when it has one (so "from X, tokens T" and "from zero, X's tokens then T" meet), or
 * else one made from its id. Every state stored from tokens is indexed under root + its tokens
 * (store/prefix.c). With "reuse", the request looks up the longest stored prefix of its prompt
 * on the same root, resumes from that state (read with the same store call as "state"/"from",
 * so whatever a stored state carries comes along) and feeds only the rest: the engine cuts
 * chunks anywhere and the kernels give a row the same result whatever the chunk, so the answer
 * is bit for bit the one without reuse (tests/test_prefix.c checks it on three families).
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer.h"
#include "metrics.h"

/* ---- chains -------------------------------------------------------------------------------- */

ss_err prefix_root(infer *inf)
{
    ss_api *a = inf->a;
    inf->chained = 0;
    inf->start_tokens = inf->start.n_tokens;
    /* Chains are rooted per tenant: one never resumes from (or probes) another's prefixes. A
     * shared state of another tenant is a start of its own here (its chain is the owner's). */
    const char *tenant = inf->scope.tenant;
    if (!inf->start.st) {
        ss_prefix_root_tenant(a->info->fingerprint, NULL, tenant, &inf->root);
        inf->chained = 1;
    } else if (inf->start.id[0]) {
        int found = 0;
        if (!inf->start.foreign) {
            ss_err err = ss_store_prefix_of(a->store, inf->start.id, &inf->root, &found);
            if (err) return err;
        }
        if (!found) ss_prefix_root_tenant(a->info->fingerprint, inf->start.id, tenant, &inf->root);
        inf->chained = 1;
    }
    return SS_OK;
}

/* The index entry of the state after toks[0..n) from the request's start. */
void prefix_entry(infer *inf, const int32_t *toks, int n, const int32_t *more, int n_more,
                     ss_store_prefix_entry *pe)
{
    pe->chain = inf->root;
    ss_prefix_root_tenant(inf->a->info->fingerprint, "*", inf->scope.tenant, &pe->any);
    for (int i = 0; i < n + n_more; i++) {
        int32_t t = i < n ? toks[i] : more[i - n];
        ss_prefix_step(&pe->chain, t);
        ss_prefix_step(&pe->any, t);
    }
    pe->model = inf->a->info->fingerprint;
    pe->n_tokens = n + n_more;
}

/* ---- checkpoints --------------------------------------------------------------------------- */

ss_err prefix_parse_checkpoints(json_t *o, const char *where, infer *inf, int n_prompt, int upto)
{
    json_t *cv = json_object_get(o, "checkpoints"), *ev = json_object_get(o, "checkpoint_every");
    if (cv && json_is_null(cv)) cv = NULL;
    if (ev && json_is_null(ev)) ev = NULL;
    if (!cv && !ev) return SS_OK;
    if (cv && ev)
        return ss_fail(SS_ERR_FORMAT, "give %scheckpoints or %scheckpoint_every, not both", where,
                       where);
    if (inf->batch)
        return ss_fail(SS_ERR_UNSUPPORTED, "%scheckpoints are for one prompt, not a batch form",
                       where);
    int last = upto ? n_prompt : n_prompt - 1; /* the end itself is the state stored anyway */
    if (ev) {
        long long every = 0;
        if (!json_is_integer(ev) || (every = json_integer_value(ev)) < 1)
            return ss_fail(SS_ERR_INVALID, "%scheckpoint_every must be a positive integer", where);
        long long n = last / every;
        if (n > API_MAX_CHECKPOINTS)
            return ss_fail(SS_ERR_INVALID, "%scheckpoint_every %lld makes %lld checkpoints in %d "
                           "tokens: at most %d", where, every, n, n_prompt, API_MAX_CHECKPOINTS);
        for (long long p = every; p <= last; p += every) inf->cps[inf->n_cps++] = (int)p;
        return SS_OK;
    }
    if (!json_is_array(cv))
        return ss_fail(SS_ERR_FORMAT, "%scheckpoints must be an array of token positions", where);
    if (json_array_size(cv) > API_MAX_CHECKPOINTS)
        return ss_fail(SS_ERR_INVALID, "at most %d %scheckpoints, not %zu", API_MAX_CHECKPOINTS,
                       where, json_array_size(cv));
    size_t i;
    json_t *v;
    json_array_foreach (cv, i, v) {
        if (!json_is_integer(v))
            return ss_fail(SS_ERR_FORMAT, "%scheckpoints[%zu] is not an integer", where, i);
        long long p = json_integer_value(v);
        if (p < 1 || p > last)
            return ss_fail(SS_ERR_INVALID, "%scheckpoints[%zu] = %lld is out of range: positions "
                           "are 1..%d for this prompt of %d tokens", where, i, p, last, n_prompt);
        if (i && p <= inf->cps[i - 1])
            return ss_fail(SS_ERR_INVALID, "%scheckpoints must be strictly increasing: [%zu] = "
                           "%lld %s [%zu]", where, i, p, p == inf->cps[i - 1] ? "repeats" :
                           "is below", i - 1);
        inf->cps[inf->n_cps++] = (int)p;
    }
    return SS_OK;
}

size_t prefix_cp_bytes(const ss_model_info *in, const float *cp)
{
    int has = in->decay_floats && !isnan(cp[in->state_floats]);
    return in->state_bytes + (has ? in->decay_floats * sizeof(float) : 0);
}

/* The engine reached a checkpoint (engine thread): copy the state out. */
static int on_checkpoint(void *user, int pos, const ss_state *st)
{
    choice *c = user;
    infer *inf = c->inf;
    int at = pos + inf->cached;
    /* the state's floats, then its decay (a stored blob's layout; a NAN first decay value marks
     * a state without one) */
    size_t bytes = inf->a->info->state_bytes, nd = inf->a->info->decay_floats;
    for (int k = 0; k < inf->n_cps + inf->n_ccps; k++) {
        int mine = k < inf->n_cps; /* the request's own, else the automatic cache's */
        if ((mine ? inf->cps[k] : inf->ccps[k - inf->n_cps]) != at) continue;
        float **d = mine ? &inf->cp_data[k] : &inf->ccp_data[k - inf->n_cps];
        if (!*d && !(*d = malloc(bytes + (nd + 1) * sizeof(float)))) {
            c->oom = mine; /* a cache checkpoint is only skipped */
            if (mine) return -1;
            continue;
        }
        memcpy(*d, ss_state_cdata(st), bytes);
        float *dc = *d + inf->a->info->state_floats;
        if (ss_state_has_decay(st)) memcpy(dc, ss_state_cdecay(st), nd * sizeof(float));
        else dc[0] = NAN;
    }
    return 0;
}

void prefix_job_params(choice *c, ss_job_params *p)
{
    infer *inf = c->inf;
    p->prompt = c->prompt + inf->cached;
    p->n_prompt = c->n_prompt - inf->cached;
    if (inf->n_cps + inf->n_ccps && c->index == 0 && !inf->batch) {
        /* the union of both lists, in order, past the cached part */
        int n = 0, i = 0, k = 0;
        while (i < inf->n_cps || k < inf->n_ccps) {
            int a = i < inf->n_cps ? inf->cps[i] : INT_MAX;
            int b = k < inf->n_ccps ? inf->ccps[k] : INT_MAX;
            int pos = a < b ? a : b;
            i += a == pos;
            k += b == pos;
            if (pos > inf->cached && n < SS_ENGINE_MAX_CHECKPOINTS)
                inf->eng_cps[n++] = pos - inf->cached;
        }
        p->checkpoints = inf->eng_cps;
        p->n_checkpoints = n;
        p->on_checkpoint = on_checkpoint;
    }
}

/* The record's text as JSON (stolen), or SS_ERR_NOMEM. */
static ss_err rec_json(char *text, json_t **rec)
{
    *rec = json_loads(text, 0, NULL);
    free(text);
    return *rec ? SS_OK : ss_fail(SS_ERR_NOMEM, "out of memory");
}

/* Store one state of the request: save with name, n_tokens, parents; indexed when chained. */
static ss_err store_one(infer *inf, const api_save *save, const char *name, const float *data,
                        const ss_state *st, long long n_tokens, json_t *parents,
                        const ss_store_prefix_entry *pe, json_t **rec)
{
    api_save s = *save;
    s.name = (char *)name;
    s.scope = inf->scope;
    char *text = NULL;
    /* a whole state (st), or a checkpoint's floats and decay (data, see on_checkpoint) */
    size_t bytes = data ? prefix_cp_bytes(inf->a->info, data) : 0;
    /* indexed when made from tokens on a chain (a copy of `from` with no tokens is not) */
    if (!inf->chained || pe->n_tokens <= 0) pe = NULL;
    ss_err err = st ? api_save_st_indexed(inf->a, &s, st, n_tokens, parents, pe, &text)
                    : api_save_blob_indexed(inf->a, &s, data, bytes, n_tokens, parents, pe, &text);
    return err ? err : rec_json(text, rec);
}

ss_err prefix_save(infer *inf, const api_save *save, const choice *c, const ss_job_result *res,
                   json_t **rec)
{
    if (!res->state) return ss_fail(SS_ERR_INTERNAL, "the job kept no state");
    ss_err err = SS_OK;
    ss_store_prefix_entry pe;
    json_t *cps = NULL, *parents = json_incref(inf->start.parents);
    int with_cps = inf->n_cps && c->index == 0 && !inf->batch;
    if (with_cps && !(cps = json_array())) err = ss_fail(SS_ERR_NOMEM, "out of memory");
    for (int k = 0; with_cps && !err && k < inf->n_cps; k++) {
        int pos = inf->cps[k];
        if (!inf->cp_data[k]) {
            err = ss_fail(SS_ERR_INTERNAL, "checkpoint at %d was not reached", pos);
            break;
        }
        char name[160];
        if (save->name) snprintf(name, sizeof name, "%s:%d", save->name, pos);
        if (save->name && strlen(save->name) + 12 > 128) {
            err = ss_fail(SS_ERR_INVALID, "the name is too long for checkpoint names (%s:%d)",
                          save->name, pos);
            break;
        }
        prefix_entry(inf, c->prompt, pos, NULL, 0, &pe);
        json_t *r = NULL;
        err = store_one(inf, save, save->name ? name : NULL, inf->cp_data[k], NULL,
                        inf->start_tokens + pos, parents, &pe, &r);
        if (err) break;
        json_decref(parents);
        parents = json_pack("[{s:s,s:f}]", "id", json_string_value(json_object_get(r, "id")),
                            "weight", 1.0);
        json_array_append_new(cps, r);
    }
    if (!err) {
        int n_prompt = c->n_prompt; /* the whole prompt, the cached part too */
        long long n_tokens = inf->start_tokens + n_prompt + res->n_generated;
        prefix_entry(inf, c->prompt, n_prompt, res->tokens, res->n_generated, &pe);
        err = store_one(inf, save, save->name, NULL, res->state, n_tokens, parents, &pe, rec);
    }
    if (!err && cps) json_object_set(*rec, "checkpoints", cps);
    json_decref(cps);
    json_decref(parents);
    return err;
}

/* ---- reuse --------------------------------------------------------------------------------- */

/* Read stored state `id` (found at pos) as the request's start. SS_ERR_NOT_FOUND when it went. */
static ss_err resume_from(infer *inf, const char *id, int pos)
{
    ss_api *a = inf->a;
    ss_state *st = NULL;
    ss_err err = ss_state_new(a->model, &st);
    char *text = NULL;
    if (!err)
        err = api_load_state(a, &inf->scope, id, st, &text); /* with its decay when it has one */
    free(text);
    if (err) {
        ss_state_free(st);
        return err;
    }
    ss_state_free(inf->start.st);
    inf->start.st = st;
    inf->start.has_hidden = 1;
    inf->start.n_tokens = inf->start_tokens + pos;
    inf->cached = pos;
    snprintf(inf->cached_id, sizeof inf->cached_id, "%s", id);
    return SS_OK;
}

/* The lookup of prefix_reuse. */
static ss_err lookup(ss_api *a, infer *inf)
{
    ss_err err = SS_OK;
    if (inf->batch || !inf->chained || inf->n_choices < 1) return SS_OK;
    const choice *c = &inf->ch[0];
    /* at least one token is fed: the first prediction is then computed as without reuse */
    int limit = c->n_prompt - 1;
    if (inf->n_cps && inf->cps[0] - 1 < limit) limit = inf->cps[0] - 1;
    if (limit < 1) {
        if (a->p.metrics) ss_metrics_prefix(a->p.metrics, SS_PREFIX_MISS_SHORTER, 0);
        return SS_OK;
    }
    ss_prefix *chains = malloc((size_t)limit * sizeof *chains);
    if (!chains) return ss_fail(SS_ERR_NOMEM, "out of memory");
    ss_prefix h = inf->root;
    for (int i = 0; i < limit; i++) {
        ss_prefix_step(&h, c->prompt[i]);
        chains[i] = h;
    }
    int pos = 0;
    char id[SS_STORE_ID_LEN + 1];
    ss_prefix_outcome out = SS_PREFIX_HIT;
    err = ss_store_prefix_find(a->store, chains, limit, 0, &pos, id);
    if (!err) {
        err = resume_from(inf, id, pos);
        if (err == SS_ERR_NOT_FOUND) out = SS_PREFIX_MISS_EVICTED;
        if (!err) api_cache_touch(a, id);
    } else if (err == SS_ERR_NOT_FOUND && api_cache_was_evicted(a, chains, limit)) {
        out = SS_PREFIX_MISS_EVICTED;
    } else if (err == SS_ERR_NOT_FOUND) {
        int64_t shortest = -1;
        ss_prefix_root_tenant(a->info->fingerprint, "*", inf->scope.tenant, &h);
        for (int i = 0; i < limit; i++) {
            ss_prefix_step(&h, c->prompt[i]);
            chains[i] = h;
        }
        if (ss_store_prefix_find(a->store, chains, limit, 1, &pos, id) == SS_OK)
            out = SS_PREFIX_MISS_START;
        else if (ss_store_prefix_shortest(a->store, a->info->fingerprint, &shortest) == SS_OK &&
                 shortest > limit)
            out = SS_PREFIX_MISS_SHORTER;
        else
            out = SS_PREFIX_MISS_NONE;
        err = SS_ERR_NOT_FOUND;
    }
    free(chains);
    if (err && err != SS_ERR_NOT_FOUND) return err;
    if (a->p.metrics)
        ss_metrics_prefix(a->p.metrics, out, out == SS_PREFIX_HIT ? (uint64_t)pos : 0);
    ss_err_clear();
    return SS_OK;
}

ss_err prefix_reuse(ss_api *a, json_t *body, infer *inf, ss_job_params *p)
{
    int reuse = 0;
    ss_err err = api_get_bool(body, "reuse", a->p.prefix_cache || a->p.prefix_cache_budget, &reuse);
    if (!err) err = prefix_root(inf);
    if (!err && reuse) err = lookup(a, inf);
    if (err) return err;
    api_cache_plan(inf);
    if (p) {
        p->start_state = inf->start.st ? ss_state_cdata(inf->start.st) : NULL;
        p->start_decay = inf->start.st && ss_state_has_decay(inf->start.st)
                             ? ss_state_cdecay(inf->start.st) : NULL;
        p->start_has_hidden = inf->start.has_hidden;
    }
    return SS_OK;
}
