/*
 * keys.c - retrieval keys: one short F32 vector per stored state, kept in the "keys" database in
 * the same write transaction as the state (so a restart or kill -9 never loses or desyncs it), and
 * an in-memory matrix of all of them that one BLAS sgemv scores against a query (ss_store.h,
 * "retrieval keys").
 *
 * The store does not know how a key is made: the daemon hands it a keyer (ss_store_keys_open),
 * a function of the blob that the model provides. Keys of states stored before the keyer was
 * set, or under another kind, are computed when it is set (at the daemon's start).
 *
 * "keys" database: id (35 bytes) -> 0x01, kind length (1 byte), kind, be32 dim, dim floats
 * (native byte order, as the blobs). States of another model than the keyer's have no entry.
 *
 * Memory: rows [n] (id, name, tags, created_ns) and mat [n, dim] in the same order, an
 * open-addressing table id -> row. A delete moves the last row into the hole. Readers (search)
 * and the writer (a put or delete once committed) share a rwlock; the LMDB commit comes first, so
 * a search may briefly miss a new state or name one just deleted (its record read then fails and
 * the caller skips it), never return a key of another state.
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"
#include "ss_log.h"
#include "ss_util.h"

#define KEY_VERSION   0x01
#define KIND_MAX      31
#define DIM_MAX       4096
#define BATCH_STATES  64 /* keys computed per write transaction at open */

typedef struct krow {
    char id[ID_LEN + 1];
    char *name;  /* NULL: unnamed */
    char *tags;  /* "a\0b\0\0" (NULL: no tags) */
    char *tenant; /* NULL: the default tenant */
    int shared;
    int64_t created_ns;
} krow;

struct store_keys {
    pthread_rwlock_t lock;
    char kind[KIND_MAX + 1];
    char model[64];
    int dim;
    ss_store_key_fn fn;
    void *user;
    size_t n, cap;
    krow *rows;       /* [cap] */
    float *mat;       /* [cap, dim] */
    uint32_t *slots;  /* [nslots]: row + 1, 0 = empty */
    size_t nslots;    /* a power of two, >= 2 * cap */
};

/* ---- the id -> row table ---- */

static size_t slot_of(const char *id, size_t nslots)
{
    return (size_t)XXH3_64bits(id, ID_LEN) & (nslots - 1);
}

static long find_row(const struct store_keys *k, const char *id, size_t *slot)
{
    if (!k->nslots) return -1;
    for (size_t i = slot_of(id, k->nslots);; i = (i + 1) & (k->nslots - 1)) {
        if (!k->slots[i]) {
            if (slot) *slot = i;
            return -1;
        }
        if (!memcmp(k->rows[k->slots[i] - 1].id, id, ID_LEN)) {
            if (slot) *slot = i;
            return (long)k->slots[i] - 1;
        }
    }
}

static void slot_put(struct store_keys *k, const char *id, uint32_t row)
{
    size_t i;
    find_row(k, id, &i);
    k->slots[i] = row + 1;
}

/* Remove slot i, shifting the entries after it back (linear probing without tombstones). */
static void slot_del(struct store_keys *k, size_t i)
{
    size_t mask = k->nslots - 1, j = i;
    k->slots[i] = 0;
    for (;;) {
        j = (j + 1) & mask;
        if (!k->slots[j]) return;
        size_t home = slot_of(k->rows[k->slots[j] - 1].id, k->nslots);
        /* can the entry at j move to the hole at i? (home not cyclically in (i, j]) */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            k->slots[i] = k->slots[j];
            k->slots[j] = 0;
            i = j;
        }
    }
}

static ss_err grow(struct store_keys *k)
{
    size_t cap = k->cap ? 2 * k->cap : 1024;
    krow *rows = realloc(k->rows, cap * sizeof *rows);
    if (!rows) return ss_fail(SS_ERR_NOMEM, "retrieval keys: out of memory");
    k->rows = rows;
    float *mat = realloc(k->mat, cap * (size_t)k->dim * sizeof *mat);
    if (!mat) return ss_fail(SS_ERR_NOMEM, "retrieval keys: out of memory");
    k->mat = mat;
    size_t nslots = 2 * cap;
    uint32_t *slots = calloc(nslots, sizeof *slots);
    if (!slots) return ss_fail(SS_ERR_NOMEM, "retrieval keys: out of memory");
    free(k->slots);
    k->slots = slots;
    k->nslots = nslots;
    k->cap = cap;
    for (size_t r = 0; r < k->n; r++) slot_put(k, k->rows[r].id, (uint32_t)r);
    return SS_OK;
}

static void row_free(krow *r)
{
    free(r->name);
    free(r->tags);
    free(r->tenant);
}

/* Add (or replace) the row of state id with record rec's name, tags and time. Under the lock. */
static ss_err index_add(struct store_keys *k, const char *id, const json_t *rec, int64_t created,
                        const float *key)
{
    krow row = {.created_ns = created};
    memcpy(row.id, id, ID_LEN + 1);
    const char *name = json_string_value(json_object_get(rec, "name"));
    const char *tenant = json_string_value(json_object_get(rec, "tenant"));
    row.shared = json_is_true(json_object_get(rec, "shared"));
    if ((name && !(row.name = strdup(name))) || (tenant && !(row.tenant = strdup(tenant)))) {
        row_free(&row);
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    json_t *tags = json_object_get(rec, "tags"), *t;
    size_t i, len = 1;
    json_array_foreach (tags, i, t) len += json_string_length(t) + 1;
    if (len > 1) {
        char *p = row.tags = malloc(len);
        if (!p) {
            row_free(&row);
            return ss_fail(SS_ERR_NOMEM, "out of memory");
        }
        json_array_foreach (tags, i, t) {
            memcpy(p, json_string_value(t), json_string_length(t) + 1);
            p += json_string_length(t) + 1;
        }
        *p = '\0';
    }
    long r = find_row(k, id, NULL);
    if (r < 0) {
        ss_err err = k->n == k->cap ? grow(k) : SS_OK;
        if (err) {
            row_free(&row);
            return err;
        }
        r = (long)k->n++;
        slot_put(k, id, (uint32_t)r);
    } else {
        row_free(&k->rows[r]);
    }
    k->rows[r] = row;
    memcpy(k->mat + (size_t)r * k->dim, key, (size_t)k->dim * sizeof(float));
    return SS_OK;
}

static void index_del(struct store_keys *k, const char *id)
{
    size_t slot;
    long r = find_row(k, id, &slot);
    if (r < 0) return;
    slot_del(k, slot);
    row_free(&k->rows[r]);
    size_t last = k->n - 1;
    if ((size_t)r != last) {
        k->rows[r] = k->rows[last];
        memcpy(k->mat + (size_t)r * k->dim, k->mat + last * k->dim, (size_t)k->dim * sizeof(float));
        find_row(k, k->rows[r].id, &slot);
        k->slots[slot] = (uint32_t)r + 1;
    }
    k->n--;
}

/* ---- the database ---- */

/* The stored value for key[dim] of kind into v (malloc'd, *len). */
static ss_err encode(const struct store_keys *k, const float *key, unsigned char **v, size_t *len)
{
    size_t kl = strlen(k->kind), n = 2 + kl + 4 + (size_t)k->dim * sizeof(float);
    unsigned char *p = malloc(n);
    if (!p) return ss_fail(SS_ERR_NOMEM, "out of memory");
    p[0] = KEY_VERSION;
    p[1] = (unsigned char)kl;
    memcpy(p + 2, k->kind, kl);
    uint32_t d = (uint32_t)k->dim;
    for (int i = 0; i < 4; i++) p[2 + kl + i] = (unsigned char)(d >> (24 - 8 * i));
    memcpy(p + 2 + kl + 4, key, (size_t)k->dim * sizeof(float));
    *v = p;
    *len = n;
    return SS_OK;
}

/* The floats of a stored value when it is a key of k's kind and dim, else NULL. */
static const unsigned char *decode(const struct store_keys *k, const MDB_val *v)
{
    const unsigned char *p = v->mv_data;
    size_t kl = strlen(k->kind);
    if (v->mv_size != 2 + kl + 4 + (size_t)k->dim * sizeof(float) || p[0] != KEY_VERSION ||
        p[1] != kl || memcmp(p + 2, k->kind, kl))
        return NULL;
    uint32_t d = 0;
    for (int i = 0; i < 4; i++) d = d << 8 | p[2 + kl + i];
    return d == (uint32_t)k->dim ? p + 2 + kl + 4 : NULL;
}

ss_err store_keys_prepare(ss_store *s, const json_t *rec, const void *blob, size_t len,
                          float **key)
{
    *key = NULL;
    struct store_keys *k = s->keys;
    if (!k) return SS_OK;
    const char *model = json_string_value(json_object_get(rec, "model"));
    if (!model || strcmp(model, k->model)) return SS_OK;
    float *out = malloc((size_t)k->dim * sizeof *out);
    if (!out) return ss_fail(SS_ERR_NOMEM, "out of memory");
    if (k->fn(k->user, blob, len, out)) {
        free(out); /* not a state this keyer reads (another shape): no key, as another model's */
        ss_err_clear();
        return SS_OK;
    }
    *key = out;
    return SS_OK;
}

ss_err store_keys_write(ss_store *s, wtx *w, const char *id, const float *key)
{
    if (!key || !s->keys) return SS_OK;
    unsigned char *v = NULL;
    size_t len = 0;
    ss_err err = encode(s->keys, key, &v, &len);
    if (err) return err;
    MDB_val val = {len, v};
    int rc = store_w_put(w, s->keydb, id, ID_LEN, &val, 0);
    free(v);
    return rc ? store_mdb_fail(w->rc, "store %s: storing the key of %s", s->dir, id) : SS_OK;
}

ss_err store_keys_del(ss_store *s, wtx *w, const char *id)
{
    if (!s->has_keys) return SS_OK;
    return store_w_del(w, s->keydb, id, ID_LEN)
               ? store_mdb_fail(w->rc, "store %s: deleting the key of %s", s->dir, id)
               : SS_OK;
}

void store_keys_added(ss_store *s, const char *id, const json_t *rec, int64_t created,
                      const float *key)
{
    struct store_keys *k = s->keys;
    if (!k || !key) return;
    pthread_rwlock_wrlock(&k->lock);
    if (index_add(k, id, rec, created, key))
        ss_log("warning", "not_searchable", json_pack("{s:s}", "state", id),
               "state %s is stored but not searchable: %s", id, ss_errmsg());
    pthread_rwlock_unlock(&k->lock);
}

void store_keys_removed(ss_store *s, const char *id)
{
    struct store_keys *k = s->keys;
    if (!k) return;
    pthread_rwlock_wrlock(&k->lock);
    index_del(k, id);
    pthread_rwlock_unlock(&k->lock);
}

void store_keys_shared(ss_store *s, const char *id, int shared)
{
    struct store_keys *k = s->keys;
    if (!k) return;
    pthread_rwlock_wrlock(&k->lock);
    long r = find_row(k, id, NULL);
    if (r >= 0) k->rows[r].shared = shared;
    pthread_rwlock_unlock(&k->lock);
}

/* Listed under scope sc (ss_store.h, Tenants): its tenant's own states and shared ones. */
static int row_listed(const krow *row, const ss_store_scope *sc)
{
    const char *t = sc->tenant ? sc->tenant : "";
    return row->shared || strcmp(row->tenant ? row->tenant : "", t) == 0;
}

void store_keys_free(ss_store *s)
{
    struct store_keys *k = s->keys;
    if (!k) return;
    for (size_t r = 0; r < k->n; r++) row_free(&k->rows[r]);
    free(k->rows);
    free(k->mat);
    free(k->slots);
    pthread_rwlock_destroy(&k->lock);
    free(k);
    s->keys = NULL;
}

/* ---- open: load the stored keys, compute the missing ones ---- */

typedef struct pending {
    char id[ID_LEN + 1];
} pending;

typedef struct batch_ctx {
    struct store_keys *k;
    pending *ids;
    float *keys;  /* [n, dim] */
    int *ok;      /* [n]: a key was computed (and the state still exists) */
    int64_t *created; /* [n]: the states' created_ns */
    int n;
} batch_ctx;

static ss_err batch_fn(ss_store *s, wtx *w, void *ctx)
{
    batch_ctx *b = ctx;
    for (int i = 0; i < b->n; i++) {
        if (!b->ok[i]) continue;
        MDB_val key = {ID_LEN, b->ids[i].id}, val;
        int rc = mdb_get(w->txn, s->records, &key, &val); /* deleted meanwhile: no key */
        if (rc == MDB_NOTFOUND) {
            b->ok[i] = 0;
            continue;
        }
        if (rc) return store_mdb_fail(rc, "store %s: reading state %s", s->dir, b->ids[i].id);
        if (val.mv_size > HDR_LEN) b->created[i] = (int64_t)be64_get(val.mv_data);
        ss_err err = store_keys_write(s, w, b->ids[i].id, b->keys + (size_t)i * b->k->dim);
        if (err) return err;
    }
    return SS_OK;
}

/* Compute, store and index the keys of n states; *done counts those computed. */
static ss_err compute_batch(ss_store *s, pending *ids, int n, uint64_t *done)
{
    struct store_keys *k = s->keys;
    ss_err err = SS_OK;
    batch_ctx b = {.k = k, .ids = ids, .n = n};
    b.keys = malloc((size_t)n * (size_t)k->dim * sizeof(float));
    b.ok = calloc((size_t)n, sizeof(int));
    b.created = calloc((size_t)n, sizeof(int64_t));
    char **recs = calloc((size_t)n, sizeof(char *));
    void *blob = NULL;
    size_t cap = 0;
    if (!b.keys || !b.ok || !b.created || !recs) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        err = ss_store_get_blob(s, ids[i].id, k->model, blob, cap, &len, NULL);
        if (err == SS_ERR_TOO_LARGE) {
            void *nb = realloc(blob, len);
            if (!nb) {
                err = ss_fail(SS_ERR_NOMEM, "out of memory");
                goto out;
            }
            blob = nb;
            cap = len;
            err = ss_store_get_blob(s, ids[i].id, k->model, blob, cap, &len, &recs[i]);
        } else if (!err) {
            err = ss_store_get_record(s, ids[i].id, &recs[i]);
        }
        if (err == SS_ERR_NOMEM) goto out;
        if (err) { /* deleted, damaged, another model's: no key (verify reports damage) */
            ss_err_clear();
            err = SS_OK;
            continue;
        }
        if (k->fn(k->user, blob, len, b.keys + (size_t)i * k->dim) == SS_OK)
            b.ok[i] = 1;
        else
            ss_err_clear();
    }
    if ((err = store_write_txn(s, (size_t)n * ((size_t)k->dim * 4 + 256), batch_fn, &b))) goto out;
    for (int i = 0; i < n; i++) {
        if (!b.ok[i]) continue;
        json_t *rec = json_loads(recs[i], 0, NULL);
        pthread_rwlock_wrlock(&k->lock);
        err = rec ? index_add(k, ids[i].id, rec, b.created[i], b.keys + (size_t)i * k->dim)
                  : ss_fail(SS_ERR_CORRUPT, "state %s: record is not JSON", ids[i].id);
        pthread_rwlock_unlock(&k->lock);
        json_decref(rec);
        if (err) goto out;
        (*done)++;
    }
out:
    for (int i = 0; recs && i < n; i++) free(recs[i]);
    free(recs);
    free(blob);
    free(b.keys);
    free(b.ok);
    free(b.created);
    return err;
}

/* Walk every record: index the stored keys of k's kind, list the states of k's model without
 * one in *todo (*n_todo of them). */
static ss_err load_all(ss_store *s, pending **todo, size_t *n_todo, uint64_t *loaded)
{
    struct store_keys *k = s->keys;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    size_t cap = 0;
    ss_err err = store_txn_begin(s, MDB_RDONLY, &txn);
    if (err) return err;
    int rc = mdb_cursor_open(txn, s->records, &cur);
    MDB_val key, val;
    for (rc = rc ? rc : mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        if (key.mv_size != ID_LEN || val.mv_size <= HDR_LEN) continue;
        char id[ID_LEN + 1];
        memcpy(id, key.mv_data, ID_LEN);
        id[ID_LEN] = '\0';
        json_t *rec = NULL;
        if (store_load_record(id, &val, &rec)) { /* damaged: not searchable (verify says so) */
            ss_err_clear();
            continue;
        }
        int64_t created = (int64_t)be64_get(val.mv_data);
        const char *model = json_string_value(json_object_get(rec, "model"));
        if (!rec || !model || strcmp(model, k->model)) {
            json_decref(rec);
            continue;
        }
        MDB_val kv;
        const unsigned char *f = NULL;
        if (s->has_keys && mdb_get(txn, s->keydb, &key, &kv) == 0) f = decode(k, &kv);
        if (f) {
            float *tmp = malloc((size_t)k->dim * sizeof(float)); /* aligned copy */
            err = tmp ? SS_OK : ss_fail(SS_ERR_NOMEM, "out of memory");
            if (!err) {
                memcpy(tmp, f, (size_t)k->dim * sizeof(float));
                pthread_rwlock_wrlock(&k->lock);
                err = index_add(k, id, rec, created, tmp);
                pthread_rwlock_unlock(&k->lock);
                free(tmp);
                (*loaded)++;
            }
        } else if (*n_todo == cap) {
            cap = cap ? 2 * cap : 256;
            pending *nt = realloc(*todo, cap * sizeof *nt);
            if (nt) *todo = nt;
            else err = ss_fail(SS_ERR_NOMEM, "out of memory");
        }
        if (!f && !err) memcpy((*todo)[(*n_todo)++].id, id, ID_LEN + 1);
        json_decref(rec);
        if (err) break;
    }
    if (!err && rc && rc != MDB_NOTFOUND)
        err = store_mdb_fail(rc, "store %s: reading records", s->dir);
    if (cur) mdb_cursor_close(cur);
    store_txn_end(s, txn);
    return err;
}

ss_err ss_store_keys_open(ss_store *s, const ss_store_keyer *kr, uint64_t *n_loaded,
                          uint64_t *n_computed)
{
    if (!s || !kr || !kr->fn || !kr->kind || !kr->model)
        return ss_fail(SS_ERR_INVALID, "store: NULL argument");
    if (s->remote)
        return ss_fail(SS_ERR_UNSUPPORTED, "retrieval keys are not kept with the remote tier "
                                           "(--remote): search is not available there");
    if (s->keys) return ss_fail(SS_ERR_EXISTS, "store %s: retrieval keys are already open", s->dir);
    if (strlen(kr->kind) == 0 || strlen(kr->kind) > KIND_MAX || kr->dim < 1 || kr->dim > DIM_MAX ||
        strlen(kr->model) >= sizeof s->keys->model)
        return ss_fail(SS_ERR_INVALID, "store: bad keyer (kind 1..%d bytes, dim 1..%d)", KIND_MAX,
                       DIM_MAX);
    if (!s->read_only && !s->has_keys)
        return ss_fail(SS_ERR_IO, "store %s: no 'keys' database", s->dir);
    struct store_keys *k = calloc(1, sizeof *k);
    if (!k) return ss_fail(SS_ERR_NOMEM, "out of memory");
    pthread_rwlock_init(&k->lock, NULL);
    snprintf(k->kind, sizeof k->kind, "%s", kr->kind);
    snprintf(k->model, sizeof k->model, "%s", kr->model);
    k->dim = kr->dim;
    k->fn = kr->fn;
    k->user = kr->user;
    /* From here every put computes its key in its transaction; the walk below then finds every
     * older state (a put meanwhile may be indexed twice: index_add replaces). */
    s->keys = k;
    pending *todo = NULL;
    size_t n_todo = 0;
    uint64_t loaded = 0, computed = 0;
    ss_err err = load_all(s, &todo, &n_todo, &loaded);
    if (!err && s->read_only && n_todo)
        err = ss_fail(SS_ERR_PERM, "store %s: %zu states have no %s key and the store is "
                                   "read-only", s->dir, n_todo, k->kind);
    for (size_t i = 0; !err && i < n_todo; i += BATCH_STATES) {
        int n = (int)(n_todo - i < BATCH_STATES ? n_todo - i : BATCH_STATES);
        err = compute_batch(s, todo + i, n, &computed);
    }
    free(todo);
    if (err) {
        store_keys_free(s);
        return err;
    }
    if (n_loaded) *n_loaded = loaded;
    if (n_computed) *n_computed = computed;
    return SS_OK;
}

int ss_store_keys_dim(ss_store *s)
{
    return s && s->keys ? s->keys->dim : 0;
}

ss_err ss_store_keys_stats(ss_store *s, uint64_t *n, uint64_t *bytes)
{
    if (!s || !s->keys) return ss_fail(SS_ERR_UNSUPPORTED, "retrieval keys are not open");
    struct store_keys *k = s->keys;
    pthread_rwlock_rdlock(&k->lock);
    if (n) *n = k->n;
    if (bytes)
        *bytes = k->cap * ((size_t)k->dim * sizeof(float) + sizeof(krow)) +
                 k->nslots * sizeof(uint32_t);
    pthread_rwlock_unlock(&k->lock);
    return SS_OK;
}

/* ---- search ---- */

static int has_tag(const char *tags, const char *tag)
{
    for (const char *p = tags; p && *p; p += strlen(p) + 1)
        if (!strcmp(p, tag)) return 1;
    return 0;
}

/* Does hit a rank before hit b? Higher score, then newer, then id. */
static int before(const krow *ra, float a, const krow *rb, float b)
{
    if (a != b) return a > b;
    if (ra->created_ns != rb->created_ns) return ra->created_ns > rb->created_ns;
    return strcmp(ra->id, rb->id) < 0;
}

ss_err ss_store_search(ss_store *s, const ss_store_query *q, ss_store_hit *hits, int *n_hits)
{
    if (!s || !q || !q->key || !hits || !n_hits)
        return ss_fail(SS_ERR_INVALID, "store: NULL argument");
    *n_hits = 0;
    struct store_keys *k = s->keys;
    if (!k) return ss_fail(SS_ERR_UNSUPPORTED, "search is not available: retrieval keys are not "
                                               "kept by this store");
    if (q->dim != k->dim)
        return ss_fail(SS_ERR_MISMATCH, "a query key of %d dims against keys of %d", q->dim,
                       k->dim);
    if (q->k < 1 || q->k > SS_STORE_SEARCH_MAX)
        return ss_fail(SS_ERR_INVALID, "k must be 1..%d (got %d)", SS_STORE_SEARCH_MAX, q->k);
    ss_err err = SS_OK;
    size_t plen = q->prefix ? strlen(q->prefix) : 0;
    long *best = malloc((size_t)q->k * sizeof *best); /* rows, best first */
    float *bs = malloc((size_t)q->k * sizeof *bs);
    pthread_rwlock_rdlock(&k->lock);
    float *scores = malloc((k->n ? k->n : 1) * sizeof *scores);
    if (!best || !bs || !scores) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (k->n)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)k->n, k->dim, 1.0f, k->mat, k->dim, q->key,
                    1, 0.0f, scores, 1);
    int m = 0;
    for (size_t r = 0; r < k->n; r++) {
        const krow *row = &k->rows[r];
        float sc = scores[r];
        if (m == q->k && !before(row, sc, &k->rows[best[m - 1]], bs[m - 1])) continue;
        if (q->scope && !row_listed(row, q->scope)) continue;
        if (q->tag && !has_tag(row->tags, q->tag)) continue;
        if (q->exclude_tag && has_tag(row->tags, q->exclude_tag)) continue;
        if (q->prefix && (!row->name || strncmp(row->name, q->prefix, plen))) continue;
        if (q->filter && !q->filter(q->filter_user, row->id, row->name, row->tags)) continue;
        int j = m < q->k ? m++ : m - 1;
        while (j > 0 && before(row, sc, &k->rows[best[j - 1]], bs[j - 1])) {
            best[j] = best[j - 1];
            bs[j] = bs[j - 1];
            j--;
        }
        best[j] = (long)r;
        bs[j] = sc;
    }
    for (int i = 0; i < m; i++) {
        memcpy(hits[i].id, k->rows[best[i]].id, ID_LEN + 1);
        hits[i].score = bs[i];
    }
    *n_hits = m;
out:
    pthread_rwlock_unlock(&k->lock);
    free(scores);
    free(best);
    free(bs);
    return err;
}
