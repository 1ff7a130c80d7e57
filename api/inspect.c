/*
 * inspect.c - looking into the catalog rather than running the model: the children of a state
 * (transitively), the pairwise cosine similarity of up to 64 states (whole state and per layer),
 * and per-layer norms of one state. The console draws lineage graphs, heatmaps and norm charts
 * from these; they are ordinary endpoints (docs/api.md, "Inspecting states").
 *
 * Blobs are read in place (ss_store_view: pointers into the map, checksummed), never copied
 * whole: a 2.8b model's state is ~21 MB, 64 of them would not fit comfortably. The similarity
 * copies one layer of each state at a time into an n x d matrix and adds its Gram matrix
 * (cblas_ssyrk); the whole state's Gram matrix is the sum of the layers'.
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "ss_util.h"

#define CHILDREN_MAX_DEPTH 64
#define CHILDREN_MAX_LIMIT 10000
#define SIMILARITY_MAX     SS_STORE_VIEW_MAX

/* Integer query argument in lo..hi (dflt when absent); 0 after answering 422 when bad. */
static int query_int(ss_host_req *r, const char *name, long lo, long hi, long dflt, long *out)
{
    const char *q = ss_host_query(r, name);
    *out = dflt;
    if (!q || !*q) return 1;
    char *end;
    long v = strtol(q, &end, 10);
    if (end == q || *end || v < lo || v > hi) {
        api_reject(r, SS_ERR_INVALID, NULL, "%s must be an integer in %ld..%ld", name, lo, hi);
        return 0;
    }
    *out = v;
    return 1;
}

/* The record of `ref` as the caller may see it (its tenant's, shared, or any for an admin),
 * parsed; SS_ERR_NOT_FOUND for another tenant's. */
static ss_err get_record(ss_api *a, ss_host_req *r, const char *ref, json_t **out)
{
    char *text = NULL;
    *out = NULL;
    ss_store_scope sc = api_scope(r);
    ss_err err = ss_store_get_record_as(a->store, &sc, ref, &text);
    if (err) return err;
    *out = json_loads(text, 0, NULL);
    free(text);
    if (!*out) return ss_fail(SS_ERR_NOMEM, "out of memory reading a record");
    return SS_OK;
}

/* The weight `child` gives parent `pid`: the sum over its entries naming it (a merge may list a
 * source twice), 0 if none. */
static double parent_weight(const json_t *child, const char *pid)
{
    size_t i;
    json_t *p;
    double w = 0;
    json_array_foreach (json_object_get(child, "parents"), i, p) {
        const char *id = json_string_value(json_object_get(p, "id"));
        if (id && !strcmp(id, pid)) w += ss_json_real(json_object_get(p, "weight"), 0.0);
    }
    return w;
}

/* ---- GET /v1/whoami ---------------------------------------------------------------------- */

/* What the caller's key may do, so that a client (the console) shows only what it may use:
 * {"scope": "read" | "write" | "admin", "tenant": str|null} ("write" and null when the daemon
 * runs without keys; null: the default tenant). */
void api_h_whoami(void *app, ss_host_req *r)
{
    (void)app;
    ss_host_scope s = ss_host_scope_of(r);
    const char *tenant = ss_host_tenant(r);
    api_json(r, 200,
             json_pack("{s:s, s:s?}", "scope",
                       s == SS_HOST_SCOPE_ADMIN   ? "admin"
                       : s == SS_HOST_SCOPE_WRITE ? "write"
                                                  : "read",
                       "tenant", tenant && *tenant ? tenant : NULL));
}

/* ---- GET /v1/states/{state}/children ------------------------------------------------------ */

/*
 * Breadth first from the state: its children (depth 1), theirs (depth 2), ... up to `depth`,
 * each state once (the shallowest path wins), at most `limit` of them ("truncated" says when
 * more were left). Each entry names the parent it was reached from and the weight the child's
 * record gives that parent; the record's own "parents" list has the rest of its edges.
 */
static ss_err children(ss_api *a, ss_host_req *r, const char *ref, long depth, long limit,
                       json_t **answer)
{
    json_t *root = NULL, *data = json_array(), *seen = json_object();
    char *ids = NULL;
    ss_err err = SS_OK;
    int truncated = 0;
    /* the queue: ids of states whose children are still to read, with their depth */
    size_t qn = 0, qcap = 0, qhead = 0;
    struct {
        char id[SS_STORE_ID_LEN + 1];
        long depth;
    } *queue = NULL;

    if (!data || !seen) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((err = get_record(a, r, ref, &root))) goto out;
    const char *rid = json_string_value(json_object_get(root, "id"));
    if (!rid || strlen(rid) != SS_STORE_ID_LEN) {
        err = ss_fail(SS_ERR_CORRUPT, "state '%s': its record has no id", ref);
        goto out;
    }
    json_object_set_new(seen, rid, json_true());
    queue = malloc(sizeof *queue);
    if (!queue) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    qcap = 1;
    memcpy(queue[0].id, rid, SS_STORE_ID_LEN + 1);
    queue[0].depth = 0;
    qn = 1;
    while (qhead < qn && !truncated) {
        char pid[SS_STORE_ID_LEN + 1];
        long d = queue[qhead].depth;
        memcpy(pid, queue[qhead].id, sizeof pid);
        qhead++;
        if (d >= depth) continue;
        int n = 0;
        free(ids);
        ids = NULL;
        if ((err = ss_store_children(a->store, pid, &ids, &n))) goto out;
        for (int i = 0; i < n; i++) {
            const char *cid = ids + (size_t)i * (SS_STORE_ID_LEN + 1);
            if (json_object_get(seen, cid)) continue;
            json_t *rec = NULL;
            ss_err e = get_record(a, r, cid, &rec);
            if (e == SS_ERR_NOT_FOUND) continue; /* deleted meanwhile, or not the caller's */
            if (e) {
                err = e;
                goto out;
            }
            if ((long)json_array_size(data) >= limit) {
                json_decref(rec);
                truncated = 1;
                break;
            }
            json_object_set_new(seen, cid, json_true());
            json_t *entry = json_pack("{s:o, s:I, s:s, s:o}", "state", rec, "depth",
                                      (json_int_t)(d + 1), "parent", pid, "weight",
                                      api_real(parent_weight(rec, pid)));
            if (!entry || json_array_append_new(data, entry)) {
                err = ss_fail(SS_ERR_NOMEM, "out of memory");
                goto out;
            }
            if (qn == qcap) {
                void *p = realloc(queue, 2 * qcap * sizeof *queue);
                if (!p) {
                    err = ss_fail(SS_ERR_NOMEM, "out of memory");
                    goto out;
                }
                queue = p;
                qcap *= 2;
            }
            memcpy(queue[qn].id, cid, SS_STORE_ID_LEN + 1);
            queue[qn++].depth = d + 1;
        }
    }
    *answer = json_pack("{s:O, s:O, s:I, s:b}", "state", root, "data", data, "depth",
                        (json_int_t)depth, "truncated", truncated);
    if (!*answer) err = ss_fail(SS_ERR_NOMEM, "out of memory");
out:
    free(queue);
    free(ids);
    json_decref(root);
    json_decref(data);
    json_decref(seen);
    return err;
}

void api_h_states_children(void *app, ss_host_req *r)
{
    ss_api *a = app;
    if (!api_ready(a, r)) return;
    long depth, limit;
    if (!query_int(r, "depth", 1, CHILDREN_MAX_DEPTH, 1, &depth)) return;
    if (!query_int(r, "limit", 1, CHILDREN_MAX_LIMIT, 1000, &limit)) return;
    json_t *answer = NULL;
    ss_err err = children(a, r, ss_host_param(r, "state"), depth, limit, &answer);
    if (err) {
        api_fail(r, err);
        return;
    }
    api_json(r, 200, answer);
}

/* ---- shapes ------------------------------------------------------------------------------ */

/* Floats of one layer's conv and ssm state, and where layer l's start in a state. */
typedef struct layer_shape {
    int n_layers;
    size_t conv_n, ssm_n; /* per layer */
} layer_shape;

static layer_shape shape_of(const ss_api *a)
{
    layer_shape s = {.n_layers = a->info->n_state_layers};
    if (s.n_layers > 0) {
        s.conv_n = a->lay.conv_n / (size_t)s.n_layers;
        s.ssm_n = a->lay.ssm_n / (size_t)s.n_layers;
    }
    return s;
}

static const float *conv_of(const ss_api *a, const layer_shape *s, const float *st, int l)
{
    return st + a->lay.conv_off + (size_t)l * s->conv_n;
}

static const float *ssm_of(const ss_api *a, const layer_shape *s, const float *st, int l)
{
    return st + a->lay.ssm_off + (size_t)l * s->ssm_n;
}

/* A blob is a state of this model (with or without its decay)? */
static ss_err check_len(const ss_api *a, size_t len, const char *ref)
{
    const size_t sb = a->info->state_bytes, db = a->info->decay_floats * sizeof(float);
    if (len == sb || (db && len == sb + db)) return SS_OK;
    return ss_fail(SS_ERR_MISMATCH, "state '%s' does not have this model's shape", ref);
}

/* ---- GET /v1/states/{state}/stats --------------------------------------------------------- */

static double norm2(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

typedef struct stats_ctx {
    ss_api *a;
    const char *ref;
    json_t *answer; /* the record's id and name in; the norms added */
} stats_ctx;

static ss_err stats_fn(void *user, const void *const *blobs, const size_t *lens, int n)
{
    stats_ctx *c = user;
    (void)n;
    ss_err err = check_len(c->a, lens[0], c->ref);
    if (err) return err;
    const float *st = blobs[0];
    layer_shape sh = shape_of(c->a);
    json_t *layers = json_array();
    double conv = 0, ssm = 0;
    for (int l = 0; l < sh.n_layers && layers; l++) {
        double cv = norm2(conv_of(c->a, &sh, st, l), sh.conv_n);
        double sm = norm2(ssm_of(c->a, &sh, st, l), sh.ssm_n);
        conv += cv;
        ssm += sm;
        if (json_array_append_new(layers, json_pack("{s:i, s:o, s:o, s:o}", "layer", l,
                                                    "conv_norm", api_real(sqrt(cv)), "ssm_norm",
                                                    api_real(sqrt(sm)), "norm",
                                                    api_real(sqrt(cv + sm))))) {
            json_decref(layers);
            layers = NULL;
        }
    }
    double hidden = norm2(st + c->a->lay.hidden_off, c->a->lay.hidden_n);
    if (!layers ||
        json_object_update_new(
            c->answer,
            json_pack("{s:i, s:o, s:o, s:o, s:o, s:o, s:b}", "n_layers", sh.n_layers, "layers",
                      layers, "conv_norm", api_real(sqrt(conv)), "ssm_norm", api_real(sqrt(ssm)),
                      "norm", api_real(sqrt(conv + ssm)), "final_hidden_norm",
                      api_real(sqrt(hidden)), "has_decay",
                      lens[0] != c->a->info->state_bytes)))
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    return SS_OK;
}

void api_h_states_stats(void *app, ss_host_req *r)
{
    ss_api *a = app;
    if (!api_ready(a, r)) return;
    const char *ref = ss_host_param(r, "state");
    json_t *rec = NULL;
    ss_err err = get_record(a, r, ref, &rec);
    if (err) {
        api_fail(r, err);
        return;
    }
    const char *id = json_string_value(json_object_get(rec, "id"));
    stats_ctx c = {.a = a, .ref = ref,
                   .answer = json_pack("{s:s?, s:O}", "id", id, "name",
                                       json_object_get(rec, "name"))};
    if (!c.answer) err = ss_fail(SS_ERR_NOMEM, "out of memory");
    ss_store_scope sc = api_scope(r);
    if (!err) err = ss_store_view_as(a->store, &sc, &id, 1, a->info->fingerprint, stats_fn, &c);
    json_decref(rec);
    if (err) {
        json_decref(c.answer);
        api_fail(r, err);
        return;
    }
    api_json(r, 200, c.answer);
}

/* ---- POST /v1/states/similarity ----------------------------------------------------------- */

typedef struct sim_ctx {
    ss_api *a;
    const char *const *refs;
    int per_layer;
    double *gram;   /* [n, n]: the whole state's Gram matrix (upper triangle) */
    json_t *layers; /* per_layer: one cosine matrix per layer */
} sim_ctx;

/* Cosines from the upper triangle of a Gram matrix g [n, n], as rows of a JSON matrix. */
static json_t *cosines(const double *g, int n)
{
    json_t *m = json_array();
    for (int i = 0; i < n && m; i++) {
        json_t *row = json_array();
        for (int j = 0; j < n && row; j++) {
            int lo = i < j ? i : j, hi = i < j ? j : i;
            double d = g[(size_t)i * n + i] * g[(size_t)j * n + j];
            json_t *v = d > 0 ? api_real(g[(size_t)lo * n + hi] / sqrt(d)) : json_null();
            if (json_array_append_new(row, v)) json_decref(row), row = NULL;
        }
        if (!row || json_array_append_new(m, row)) json_decref(m), m = NULL;
    }
    return m;
}

static ss_err sim_fn(void *user, const void *const *blobs, const size_t *lens, int n)
{
    sim_ctx *c = user;
    ss_err err = SS_OK;
    for (int i = 0; i < n; i++)
        if ((err = check_len(c->a, lens[i], c->refs[i]))) return err;
    layer_shape sh = shape_of(c->a);
    size_t d = sh.conv_n + sh.ssm_n;
    float *m = malloc((size_t)n * d * sizeof *m);             /* [n, d]: layer l of each state */
    float *g = malloc((size_t)n * n * sizeof *g);             /* [n, n]: its Gram matrix */
    double *gd = malloc((size_t)n * n * sizeof *gd);          /* [n, n]: the same, in double */
    if (!m || !g || !gd) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    memset(c->gram, 0, (size_t)n * n * sizeof *c->gram);
    for (int l = 0; l < sh.n_layers; l++) {
        for (int i = 0; i < n; i++) {
            memcpy(m + (size_t)i * d, conv_of(c->a, &sh, blobs[i], l), sh.conv_n * sizeof *m);
            memcpy(m + (size_t)i * d + sh.conv_n, ssm_of(c->a, &sh, blobs[i], l),
                   sh.ssm_n * sizeof *m);
        }
        /* g = m m^T, upper triangle */
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, (int)d, 1.0f, m, (int)d, 0.0f, g,
                    n);
        for (int i = 0; i < n; i++)
            for (int j = i; j < n; j++) {
                gd[(size_t)i * n + j] = g[(size_t)i * n + j];
                c->gram[(size_t)i * n + j] += g[(size_t)i * n + j];
            }
        if (c->per_layer) {
            json_t *cm = cosines(gd, n);
            if (!cm || json_array_append_new(c->layers, cm)) {
                err = ss_fail(SS_ERR_NOMEM, "out of memory");
                goto out;
            }
        }
    }
out:
    free(m);
    free(g);
    free(gd);
    return err;
}

static ss_err similarity(ss_api *a, ss_host_req *r, json_t *body, json_t **answer)
{
    json_t *states = json_object_get(body, "states"), *list = NULL;
    const char *refs[SIMILARITY_MAX], *ids[SIMILARITY_MAX];
    int per_layer = 0;
    ss_err err;
    if (!json_is_array(states))
        return ss_fail(SS_ERR_FORMAT, "\"states\" must be an array of state ids or names");
    size_t n = json_array_size(states);
    if (n < 1 || n > SIMILARITY_MAX)
        return ss_fail(SS_ERR_INVALID, "\"states\" must name 1..%d states (got %zu)",
                       SIMILARITY_MAX, n);
    if ((err = api_get_bool(body, "per_layer", 0, &per_layer))) return err;
    for (size_t i = 0; i < n; i++) {
        refs[i] = json_string_value(json_array_get(states, i));
        if (!refs[i]) return ss_fail(SS_ERR_FORMAT, "\"states\"[%zu] must be a string", i);
    }
    sim_ctx c = {.a = a, .refs = refs, .per_layer = per_layer,
                 .gram = malloc(n * n * sizeof(double)), .layers = json_array()};
    list = json_array();
    if (!c.gram || !c.layers || !list) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* the records, as the caller may see them: ids to read, and the answer's list */
    for (size_t i = 0; i < n; i++) {
        json_t *rec = NULL;
        if ((err = get_record(a, r, refs[i], &rec))) goto out;
        json_t *e = json_pack("{s:O, s:O}", "id", json_object_get(rec, "id"), "name",
                              json_object_get(rec, "name"));
        json_decref(rec);
        if (!e || json_array_append_new(list, e)) {
            err = ss_fail(SS_ERR_NOMEM, "out of memory");
            goto out;
        }
        ids[i] = json_string_value(json_object_get(json_array_get(list, i), "id"));
        if (!ids[i]) {
            err = ss_fail(SS_ERR_CORRUPT, "state '%s': its record has no id", refs[i]);
            goto out;
        }
    }
    ss_store_scope sc = api_scope(r);
    err = ss_store_view_as(a->store, &sc, ids, (int)n, a->info->fingerprint, sim_fn, &c);
    if (err) goto out;
    json_t *m = cosines(c.gram, (int)n);
    *answer = m ? json_pack("{s:O, s:o}", "states", list, "similarity", m) : NULL;
    if (*answer && per_layer) json_object_set(*answer, "layers", c.layers);
    if (!*answer) err = ss_fail(SS_ERR_NOMEM, "out of memory");
out:
    free(c.gram);
    json_decref(c.layers);
    json_decref(list);
    return err;
}

void api_h_states_similarity(void *app, ss_host_req *r)
{
    ss_api *a = app;
    if (!api_ready(a, r)) return;
    json_t *body = api_body(r);
    if (!body) return;
    json_t *answer = NULL;
    ss_err err = similarity(a, r, body, &answer);
    json_decref(body);
    if (err) {
        api_fail(r, err);
        return;
    }
    api_json(r, 200, answer);
}
