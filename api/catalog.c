/*
 * catalog.c - the endpoints that answer at once on the HTTP thread: health, metrics, model info,
 * tokenize / detokenize, and the state catalog (list, get, delete, export, import, stored merge).
 *
 * They only read or write the LMDB catalog and combine states at memory speed, so they never go
 * through the inference engine: a long generation cannot slow them down.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "ss_util.h"

void api_h_healthz(void *app, ss_host_req *r)
{
    ss_api *a = app;
    if (!atomic_load(&a->ready)) {
        api_reject(r, SS_ERR_BUSY, API_CODE_LOADING, "the model is still loading");
        return;
    }
    if (ss_store_check(a->store) != SS_OK) {
        api_json(r, 503, json_pack("{s:s,s:s}", "status", "degraded", "reason", ss_errmsg()));
        return;
    }
    api_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

/* The per-tenant rows of /metrics, gathered from the store (ss_store_tenant_stats). */
typedef struct tenant_list {
    ss_metrics_tenant *rows;
    int n, cap;
} tenant_list;

static void tenant_row(void *user, const char *tenant, uint64_t n_states, uint64_t bytes)
{
    tenant_list *tl = user;
    if (tl->n == tl->cap) {
        int cap = tl->cap ? 2 * tl->cap : 8;
        ss_metrics_tenant *p = realloc(tl->rows, (size_t)cap * sizeof *p);
        if (!p) return; /* a row less on the page */
        tl->rows = p;
        tl->cap = cap;
    }
    char *name = strdup(tenant);
    if (!name) return;
    tl->rows[tl->n++] = (ss_metrics_tenant){.name = name, .states = n_states, .bytes = bytes};
}

/* A tenant's prompt-cache entries onto its row (api_cache_stats; every tenant with entries has
 * one, entries being stored states, unless the rows could not be gathered). */
static void tenant_cache_row(void *user, const char *tenant, uint64_t entries, uint64_t bytes)
{
    tenant_list *tl = user;
    for (int i = 0; i < tl->n; i++)
        if (!strcmp(tl->rows[i].name, tenant)) {
            tl->rows[i].cache_entries = entries;
            tl->rows[i].cache_bytes = bytes;
        }
}

void api_h_metrics(void *app, ss_host_req *r)
{
    ss_api *a = app;
    ss_metrics_extra x = {0};
    tenant_list tl = {0};
    char *text = NULL;
    size_t len = 0;
    if (!a->p.metrics) {
        api_reject(r, SS_ERR_NOT_FOUND, NULL, "metrics are disabled");
        return;
    }
    if (atomic_load(&a->ready)) {
        x.ready = 1;
        pthread_rwlock_rdlock(&a->engine_lock);
        if (a->engine) {
            ss_engine_stats es;
            ss_engine_get_stats(a->engine, &es);
            x.tokens_prefilled = es.tokens_prefilled;
            x.tokens_generated = es.tokens_generated;
            x.engine_steps = es.steps;
            x.jobs_done = es.jobs_done;
            x.jobs_queued = es.queued;
            x.jobs_running = es.running;
        }
        pthread_rwlock_unlock(&a->engine_lock);
        ss_store_stats ss;
        if (ss_store_get_stats(a->store, &ss) == SS_OK) {
            x.states = ss.n_states;
            x.state_bytes = ss.blob_bytes;
            x.store_map_bytes = ss.map_size;
            x.store_used_bytes = ss.file_bytes;
            x.corrupt_reads = ss.corrupt_reads;
            x.remote = ss.remote;
            x.remote_up = ss.remote_up;
            x.remote_errors = ss.remote_errors;
            x.remote_short_circuits = ss.remote_short_circuits;
            x.cache_hits = ss.cache_hits;
            x.cache_misses = ss.cache_misses;
            x.cache_evictions = ss.cache_evictions;
            x.cache_bytes = ss.cache_bytes;
        }
        x.keys = a->keys_ready &&
                 ss_store_keys_stats(a->store, &x.retrieval_keys, &x.retrieval_key_bytes) == SS_OK;
        if (ss_store_tenant_stats(a->store, tenant_row, &tl) == SS_OK) {
            x.tenants = tl.rows;
            x.n_tenants = tl.n;
        }
        ss_err_clear(); /* none while the remote tier is unreachable */
        x.prefix_cache = api_cache_stats(a, &x.prefix_cache_entries, &x.prefix_cache_bytes,
                                         &x.prefix_cache_budget, &x.prefix_cache_tenant_max,
                                         tenant_cache_row, &tl);
    }
    /* the per-tenant lines name every tenant: an admin key sees all, others their own only */
    const char *own = ss_host_tenant(r);
    if (ss_host_scope_of(r) != SS_HOST_SCOPE_ADMIN) x.only_tenant = own ? own : "";
    ss_err err = ss_metrics_render(a->p.metrics, &x, &text, &len);
    for (int i = 0; i < tl.n; i++) free((char *)tl.rows[i].name);
    free(tl.rows);
    if (err) {
        api_fail(r, err);
        return;
    }
    ss_host_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* The model family as /v1/models names it. */
static const char *family_name(ss_arch a)
{
    switch (a) {
    case SS_ARCH_MAMBA1: return "mamba1";
    case SS_ARCH_MAMBA2: return "mamba2";
    case SS_ARCH_MOE_MAMBA: return "moe_mamba";
    }
    return "unknown";
}

/*
 * The experts of a MoE-Mamba model. Token-choice routers are told apart the way the literature
 * does: a sigmoid router (BlackMamba-style), fine-grained experts (granularity > 1), Switch
 * (top-1 softmax), or plain top-k.
 */
static json_t *moe_json(const ss_model_info *i)
{
    int tc = !strcmp(i->moe_routing, "token_choice");
    const char *variant = !tc                                            ? "mixture_of_tokens"
                          : !strcmp(i->router_activation, "sigmoid")     ? "sigmoid"
                          : i->expert_granularity > 1                    ? "fine_grained"
                          : i->n_experts_per_tok == 1                    ? "switch"
                                                                         : "top_k";
    json_t *o = json_pack("{s:s,s:s,s:i,s:i,s:i}", "routing", i->moe_routing, "variant", variant,
                          "num_experts", i->n_experts, "experts_per_token", i->n_experts_per_tok,
                          "n_moe_layers", i->n_layer - i->n_state_layers);
    if (!o) return NULL;
    if (tc) {
        json_object_set_new(o, "router_activation", json_string(i->router_activation));
        if (i->expert_granularity > 0) {
            json_object_set_new(o, "granularity", json_integer(i->expert_granularity));
            /* expansion rate E = experts / G (arXiv 2402.07871), for `statesoup plan` */
            json_object_set_new(o, "expansion",
                                json_real((double)i->n_experts / i->expert_granularity));
        }
    } else {
        json_object_set_new(o, "group_size", json_integer(i->mot_group_size));
    }
    return o;
}

void api_h_models(void *app, ss_host_req *r)
{
    ss_api *a = app;
    if (!api_ready(a, r)) return;
    const ss_model_info *i = a->info;
    json_t *m = json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:I,s:s,s:I,s:I,s:b,s:I,s:i,s:i}",
        "id", a->model_name, "object", "model", "owned_by", "statesoup", "architecture",
        i->architecture, "model_type", i->model_type, "fingerprint", i->fingerprint, "n_layer",
        i->n_layer, "n_state_layers", i->n_state_layers, "d_model", i->d_model, "d_inner",
        i->d_inner, "d_state", i->d_state, "conv_kernel", i->conv_kernel, "vocab_size",
        i->vocab_size, "state_bytes", (json_int_t)i->state_bytes, "dtype", i->dtype, "n_params",
        (json_int_t)i->n_params, "n_active_params", (json_int_t)i->n_active_params, "tokenizer",
        a->tok != NULL, "created", (json_int_t)0, "eos_token_id", i->eos_token_id, "bos_token_id",
        i->bos_token_id);
    if (m) {
        json_object_set_new(m, "family", json_string(family_name(i->arch)));
        json_object_set_new(m, "weights", json_string(i->weights ? i->weights : "stored"));
        if (i->arch == SS_ARCH_MAMBA2) {
            json_object_set_new(m, "n_heads", json_integer(i->n_heads));
            json_object_set_new(m, "head_dim", json_integer(i->head_dim));
            json_object_set_new(m, "n_groups", json_integer(i->n_groups));
        }
        json_object_set_new(m, "moe", i->moe_routing ? moe_json(i) : json_null());
    }
    api_json(r, 200, json_pack("{s:s,s:[o]}", "object", "list", "data", m));
}

/* SS_ERR_UNSUPPORTED unless a tokenizer is loaded; `to` says what it was needed for. */
static ss_err need_tokenizer(const ss_api *a, const char *to)
{
    if (a->tok) return SS_OK;
    return ss_fail(SS_ERR_UNSUPPORTED,
                   "no tokenizer loaded: start statesoupd with --tokenizer to %s", to);
}

static ss_err tokenize(ss_api *a, ss_host_req *r, json_t *body)
{
    json_t *text = json_object_get(body, "text");
    if (!json_is_string(text)) return ss_fail(SS_ERR_FORMAT, "\"text\" (a string) is required");
    ss_err err = need_tokenizer(a, "tokenize text");
    if (err) return err;
    int32_t *ids; /* set only on success */
    size_t n;
    err = ss_tokenizer_encode(a->tok, json_string_value(text), json_string_length(text), &ids, &n);
    if (err) return err;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
    api_json(r, 200, json_pack("{s:o,s:I}", "tokens", arr, "count", (json_int_t)n));
    free(ids);
    return SS_OK;
}

void api_h_tokenize(void *app, ss_host_req *r)
{
    api_with_body(app, r, tokenize);
}

static ss_err detokenize(ss_api *a, ss_host_req *r, json_t *body)
{
    int32_t *ids = NULL;
    char *text = NULL;
    size_t n = 0, len = 0;
    json_t *toks = json_object_get(body, "tokens");
    if (!json_is_array(toks))
        return ss_fail(SS_ERR_FORMAT, "\"tokens\" (an array of token ids) is required");
    ss_err err = need_tokenizer(a, "decode tokens");
    if (!err) err = api_token_array(toks, ss_tokenizer_vocab_size(a->tok), "tokens", &ids, &n);
    if (!err) err = ss_tokenizer_decode(a->tok, ids, n, 0, &text, &len);
    if (!err) api_json(r, 200, json_pack("{s:s%}", "text", text, len));
    free(text);
    free(ids);
    return err;
}

void api_h_detokenize(void *app, ss_host_req *r)
{
    api_with_body(app, r, detokenize);
}

/* ---- the catalog --------------------------------------------------------------------------- */

void api_h_states_list(void *app, ss_host_req *r)
{
    ss_api *a = app;
    if (!api_ready(a, r)) return;
    const char *tag = ss_host_query(r, "tag"), *prefix = ss_host_query(r, "prefix");
    const char *cursor = ss_host_query(r, "cursor"), *lim = ss_host_query(r, "limit");
    int limit = 0;
    if (lim) {
        char *end;
        long v = strtol(lim, &end, 10);
        if (end == lim || *end || v < 1 || v > 1000) {
            api_reject(r, SS_ERR_INVALID, NULL, "limit must be an integer in 1..1000");
            return;
        }
        limit = (int)v;
    }
    if (tag && !*tag) tag = NULL;
    if (prefix && !*prefix) prefix = NULL;
    if (cursor && !*cursor) cursor = NULL;
    const char *include = ss_host_query(r, "include");
    if (include && *include && strcmp(include, "cache")) {
        api_reject(r, SS_ERR_INVALID, NULL, "include must be \"cache\" (the prompt cache's "
                                            "entries, hidden by default)");
        return;
    }
    char *page = NULL;
    ss_store_scope sc = api_scope(r);
    ss_err err = ss_store_list_as(a->store, &sc, tag, prefix, limit, cursor, &page);
    if (err) {
        api_fail(r, err);
        return;
    }
    int show = (include && *include) || (tag && !strcmp(tag, API_CACHE_TAG)) ||
               !strstr(page, "\"" API_CACHE_TAG "\"");
    json_t *j = show ? NULL : json_loads(page, 0, NULL);
    if (j) {
        free(page);
        api_json(r, 200, api_cache_hide(j));
        return;
    }
    ss_host_respond(r, 200, "application/json", page, strlen(page));
}

void api_h_states_get(void *app, ss_host_req *r)
{
    ss_api *a = app;
    if (!api_ready(a, r)) return;
    char *rec = NULL;
    ss_store_scope sc = api_scope(r);
    ss_err err = ss_store_get_record_as(a->store, &sc, ss_host_param(r, "state"), &rec);
    if (err) {
        api_fail(r, err);
        return;
    }
    ss_host_respond(r, 200, "application/json", rec, strlen(rec));
}

void api_h_states_delete(void *app, ss_host_req *r)
{
    ss_api *a = app;
    if (!api_ready(a, r)) return;
    ss_store_scope sc = api_scope(r);
    ss_err err = ss_store_delete_as(a->store, &sc, ss_host_param(r, "state"));
    if (err) {
        api_fail(r, err);
        return;
    }
    ss_host_respond(r, 204, NULL, NULL, 0);
}

/* POST / DELETE /v1/states/{state}/share (admin keys): mark or unmark a state shared. */
static void states_share(ss_api *a, ss_host_req *r, int shared)
{
    if (!api_ready(a, r)) return;
    char *rec = NULL;
    ss_store_scope sc = api_scope(r);
    ss_err err = ss_store_share_as(a->store, &sc, ss_host_param(r, "state"), shared, &rec);
    if (err) {
        api_fail(r, err);
        return;
    }
    ss_host_respond(r, 200, "application/json", rec, strlen(rec));
}

void api_h_states_share(void *app, ss_host_req *r)
{
    states_share(app, r, 1);
}

void api_h_states_unshare(void *app, ss_host_req *r)
{
    states_share(app, r, 0);
}

void api_h_states_data(void *app, ss_host_req *r)
{
    ss_api *a = app;
    if (!api_ready(a, r)) return;
    const char *ref = ss_host_param(r, "state");
    const char *dtype = ss_host_query(r, "dtype");
    ss_err err = SS_OK;
    ss_state *st = NULL;
    char *rec = NULL, *meta_text = NULL;
    uint8_t *file = NULL;
    size_t flen = 0;
    json_t *meta = NULL;
    if (!dtype || !*dtype) dtype = "F32";
    if (strcmp(dtype, "F32") && strcmp(dtype, "BF16") && strcmp(dtype, "F16")) {
        err = ss_fail(SS_ERR_INVALID, "dtype must be F32, BF16 or F16, not '%s'", dtype);
        goto out;
    }
    if ((err = ss_state_new(a->model, &st))) goto out;
    ss_store_scope sc = api_scope(r);
    if ((err = api_load_state(a, &sc, ref, st, &rec))) goto out;
    /* data_checksum: the checksum of the F32 state an import of this file yields, so that an
     * import can tell whether the data still is what the record describes. For F32 it is the
     * record's checksum; a BF16/F16 file holds rounded values, so it is computed on those (one
     * extra export and read-back, for half-precision exports only). */
    char data_sum[17];
    if (strcmp(dtype, "F32") == 0) {
        ss_store_checksum(ss_state_cdata(st), a->info->state_bytes, data_sum);
    } else if ((err = ss_state_export(a->model, ss_state_cdata(st), dtype, NULL, &file, &flen)) ||
               (err = ss_state_import(a->model, file, flen, ss_state_data(st), NULL))) {
        goto out;
    } else {
        ss_store_checksum(ss_state_cdata(st), a->info->state_bytes, data_sum);
        free(file);
        file = NULL;
    }
    meta = json_pack("{s:s,s:s,s:s}", "record", rec, "format", "statesoup-state-v1",
                     "data_checksum", data_sum);
    if (!meta || !(meta_text = json_dumps(meta, JSON_COMPACT))) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* (for half precision st now holds the widened values: rounding them again is exact) */
    if ((err = ss_state_export_decay(a->model, ss_state_cdata(st),
                                     ss_state_has_decay(st) ? ss_state_cdecay(st) : NULL, dtype,
                                     meta_text, &file, &flen)))
        goto out;
    {
        json_t *rj = json_loads(rec, 0, NULL);
        const char *id = json_string_value(json_object_get(rj, "id"));
        char disp[128];
        snprintf(disp, sizeof disp, "attachment; filename=\"%s.safetensors\"", id ? id : "state");
        ss_host_add_header(r, "Content-Disposition", disp);
        json_decref(rj);
    }
    ss_host_respond(r, 200, "application/octet-stream", file, flen);
    file = NULL;
out:
    if (err) api_fail(r, err);
    free(file);
    free(meta_text);
    json_decref(meta);
    free(rec);
    ss_state_free(st);
}

/* Split "a,b,c" into a JSON array of tags (validated). */
static ss_err tags_from_query(const char *q, json_t **out)
{
    json_t *arr = json_array();
    if (!arr) return ss_fail(SS_ERR_NOMEM, "out of memory");
    ss_err err = SS_OK;
    while (q && *q) {
        const char *c = strchr(q, ',');
        size_t n = c ? (size_t)(c - q) : strlen(q);
        if (n) {
            char *t = strndup(q, n);
            if (!t) {
                err = ss_fail(SS_ERR_NOMEM, "out of memory");
                break;
            }
            err = ss_store_check_tag(t);
            if (!err && json_array_append_new(arr, json_string(t)))
                err = ss_fail(SS_ERR_NOMEM, "out of memory");
            free(t);
            if (err) break;
        }
        q = c ? c + 1 : NULL;
    }
    if (err) {
        json_decref(arr);
        return err;
    }
    *out = arr;
    return SS_OK;
}

void api_h_states_import(void *app, ss_host_req *r)
{
    ss_api *a = app;
    if (!api_ready(a, r)) return;
    size_t len;
    const char *body = ss_host_body_data(r, &len);
    ss_err err = SS_OK;
    ss_state *st = NULL;
    char *meta_text = NULL, *record = NULL;
    json_t *meta = NULL, *orig = NULL, *parents = NULL;
    api_save save = {.scope = api_scope(r)};
    long long n_tokens = 0;
    const char *name = ss_host_query(r, "name");
    if (name && !*name) name = NULL;
    if (name) {
        if ((err = ss_store_check_name(name))) goto out;
        char *rec = NULL;
        if (ss_store_get_record_as(a->store, &save.scope, name, &rec) == SS_OK) {
            free(rec);
            err = ss_fail(SS_ERR_EXISTS, "the name '%s' is already taken", name);
            goto out;
        }
    }
    if (name && !(save.name = strdup(name))) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((err = tags_from_query(ss_host_query(r, "tags"), &save.tags))) goto out;
    if (len == 0) {
        err = ss_fail(SS_ERR_FORMAT, "the body must be a safetensors state file");
        goto out;
    }
    if ((err = ss_state_new(a->model, &st))) goto out;
    float *decay = malloc(a->info->decay_floats * sizeof(float) + 1);
    int has_decay = 0;
    if (!decay) err = ss_fail(SS_ERR_NOMEM, "out of memory");
    if (!err) err = ss_state_import_decay(a->model, (const uint8_t *)body, len, ss_state_data(st),
                                          decay, &has_decay, &meta_text);
    /* a file without a decay imports as a state without one (decay-aware merges refuse it) */
    if (!err) err = ss_state_set_decay(st, has_decay ? decay : NULL, a->info->decay_floats);
    free(decay);
    if (err) goto out;
    /* Keep what the exporting daemon knew: n_tokens, parents and metadata of its record, but only
     * when the data is still what that record describes: its checksum must equal data_checksum
     * (or, in files from before it existed, the record's checksum). Otherwise the state imports
     * as a fresh one: no parents and n_tokens 0, the metadata kept. */
    meta = json_loads(meta_text ? meta_text : "{}", 0, NULL);
    const char *rec_text = json_string_value(json_object_get(meta, "record"));
    orig = rec_text ? json_loads(rec_text, 0, NULL) : NULL;
    const char *want_sum = json_string_value(json_object_get(meta, "data_checksum"));
    if (!want_sum) want_sum = json_string_value(json_object_get(orig, "checksum"));
    char got_sum[17];
    ss_store_checksum(ss_state_cdata(st), a->info->state_bytes, got_sum);
    int provenance_ok = want_sum && strcmp(want_sum, got_sum) == 0;
    if (json_is_object(orig)) {
        json_t *md = json_object_get(orig, "metadata");
        if (json_is_object(md)) save.metadata = json_incref(md);
    }
    if (json_is_object(orig) && provenance_ok) {
        json_t *nt = json_object_get(orig, "n_tokens");
        if (json_is_integer(nt) && json_integer_value(nt) >= 0) n_tokens = json_integer_value(nt);
        json_t *par = json_object_get(orig, "parents");
        if (json_is_array(par)) parents = json_incref(par);
    }
    err = api_save_st(a, &save, st, n_tokens, parents, &record);
    if (err == SS_ERR_INVALID && parents) {
        /* parents from another catalog may not validate here: keep the state, drop them */
        json_decref(parents);
        parents = NULL;
        err = api_save_st(a, &save, st, n_tokens, NULL, &record);
    }
    if (err) goto out;
    ss_host_respond(r, 201, "application/json", record, strlen(record));
    record = NULL;
out:
    if (err) api_fail(r, err);
    free(record);
    json_decref(parents);
    json_decref(orig);
    json_decref(meta);
    free(meta_text);
    ss_state_free(st);
    api_save_free(&save);
}

static ss_err states_merge(ss_api *a, ss_host_req *r, json_t *body)
{
    ss_err err = SS_OK;
    ss_state *st = NULL;
    json_t *parents = NULL;
    char *record = NULL;
    api_save save = {0};
    long long n_tokens = 0;
    int normalize = 0;
    json_t *sources = json_object_get(body, "sources");
    if (!sources)
        return ss_fail(SS_ERR_FORMAT, "\"sources\" ([{\"state\", \"weight\"}, ...]) is required");
    api_merge_mode mode;
    if ((err = api_get_bool(body, "normalize", 0, &normalize))) goto out;
    if ((err = api_merge_mode_parse(json_object_get(body, "mode"), &mode))) goto out;
    ss_store_scope sc = api_scope(r);
    if ((err = api_save_parse(a, &sc, body, &save))) goto out;
    save.merge_mode = api_merge_mode_name(mode);
    if ((err = ss_state_new(a->model, &st))) goto out;
    if ((err = api_merge_with(a, &sc, sources, normalize, mode, st, &parents, &n_tokens)))
        goto out;
    if ((err = api_save_st(a, &save, st, n_tokens, parents, &record))) goto out;
    if (a->p.metrics) ss_metrics_merge(a->p.metrics, 1);
    ss_host_respond(r, 201, "application/json", record, strlen(record));
    record = NULL;
out:
    free(record);
    json_decref(parents);
    ss_state_free(st);
    api_save_free(&save);
    return err;
}

void api_h_states_merge(void *app, ss_host_req *r)
{
    api_with_body(app, r, states_merge);
}
