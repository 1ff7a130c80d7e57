/*
 * catalog.c - the state catalog: records (verified on every read), put, get, delete, list,
 * stats and verify. The layout of the databases is in internal.h.
 */
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "hash.h"
#include "internal.h"
#include "ss_util.h"

/* Growable text buffer for list pages. */
typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static ss_err buf_add(buf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return ss_fail(SS_ERR_NOMEM, "store: cannot allocate %zu bytes", cap);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return SS_OK;
}

static ss_err buf_str(buf *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

/* ---- tenants --------------------------------------------------------------------------------- */

_Thread_local const ss_store_scope *store_scope;

size_t store_name_key(unsigned char *out, const char *tenant, const char *name)
{
    size_t tl = strlen(tenant), nl = strlen(name);
    if (tl > SS_STORE_TENANT_MAX) tl = SS_STORE_TENANT_MAX;
    if (nl > SS_REC_NAME_MAX) nl = SS_REC_NAME_MAX;
    if (!tl) {
        memcpy(out, name, nl);
        return nl;
    }
    memcpy(out, tenant, tl);
    out[tl] = 0;
    memcpy(out + tl + 1, name, nl);
    return tl + 1 + nl;
}

/* The index value of a state (internal.h); out holds IVAL_MAX. */
static size_t ival_make(unsigned char *out, const char *tenant, int shared, const char *name)
{
    size_t tl = strlen(tenant), nl = name ? strlen(name) : 0;
    if (tl > SS_STORE_TENANT_MAX) tl = SS_STORE_TENANT_MAX;
    if (nl > SS_REC_NAME_MAX) nl = SS_REC_NAME_MAX;
    if (!tl && !shared) {
        memcpy(out, name ? name : "", nl);
        return nl;
    }
    out[0] = 0;
    out[1] = shared ? 1 : 0;
    memcpy(out + 2, tenant, tl);
    out[2 + tl] = 0;
    memcpy(out + 3 + tl, name ? name : "", nl);
    return 3 + tl + nl;
}

int store_text_reachable(const char *text, const ss_store_scope *sc, int *own)
{
    if (own) *own = 1;
    if (!sc) return 1;
    json_t *j = json_loads(text, 0, NULL);
    const char *t = json_string_value(json_object_get(j, "tenant"));
    int mine = strcmp(t ? t : "", scope_tenant(sc)) == 0;
    int ok = mine || sc->admin || json_is_true(json_object_get(j, "shared"));
    json_decref(j);
    if (own) *own = mine;
    return ok;
}

#define TAGKEY_MAX (SS_REC_TAG_MAX + 1 + TKEY_LEN)
/* The tags index key of tag t (a JSON string) for the state of time key tkey: tag, 0x00, time
 * key; its length, or 0 when t is not a string of at most SS_REC_TAG_MAX bytes. */
static size_t tag_key(unsigned char *k, const json_t *t, const unsigned char *tkey)
{
    size_t n = json_string_length(t);
    if (!json_is_string(t) || n > SS_REC_TAG_MAX) return 0;
    memcpy(k, json_string_value(t), n);
    k[n] = 0;
    memcpy(k + n + 1, tkey, TKEY_LEN);
    return n + 1 + TKEY_LEN;
}

typedef struct ival {
    const char *tenant; /* not NUL-terminated: tlen bytes */
    size_t tlen;
    int shared;
    const char *name; /* nlen bytes (0: unnamed) */
    size_t nlen;
} ival;

static void ival_parse(const MDB_val *v, ival *o)
{
    const char *p = v->mv_data;
    *o = (ival){.tenant = "", .name = p, .nlen = v->mv_size};
    if (v->mv_size < 3 || p[0] != 0) return;
    const char *end = memchr(p + 2, 0, v->mv_size - 2);
    if (!end) return;
    o->shared = p[1] & 1;
    o->tenant = p + 2;
    o->tlen = (size_t)(end - (p + 2));
    o->name = end + 1;
    o->nlen = v->mv_size - (size_t)(end + 1 - p);
}

static int ival_own(const ival *v, const ss_store_scope *sc)
{
    const char *t = scope_tenant(sc);
    return v->tlen == strlen(t) && memcmp(v->tenant, t, v->tlen) == 0;
}

/* Listed under sc (see ss_store.h): unscoped, the tenant's own, or shared. */
static int ival_listed(const ival *v, const ss_store_scope *sc)
{
    return !sc || v->shared || ival_own(v, sc);
}

/* The index value of state id (its tenant and shared flag) from the time index. A state without
 * one (a damaged index) reads as the default tenant's, unshared. */
static ss_err owner_of(ss_store *s, MDB_txn *txn, const char *id, const MDB_val *rec,
                       MDB_val *val)
{
    unsigned char tkey[TKEY_LEN];
    make_tkey(tkey, (int64_t)be64_get(rec->mv_data), id);
    MDB_val key = {TKEY_LEN, tkey};
    int rc = mdb_get(txn, s->time, &key, val);
    if (rc == MDB_NOTFOUND) *val = (MDB_val){0, ""};
    else if (rc) return store_mdb_fail(rc, "store %s: reading state %s", s->dir, id);
    return SS_OK;
}

/* Per-tenant counters in meta ("tenant:" + tenant -> be64 states, be64 bytes). */
static ss_err add_tenant_counts(ss_store *s, wtx *w, const char *tenant, size_t tlen,
                                int64_t d_states, int64_t d_bytes)
{
    unsigned char k[7 + SS_STORE_TENANT_MAX], v[16];
    if (tlen == 0) return SS_OK; /* the default tenant's are the totals less the others' */
    if (tlen > SS_STORE_TENANT_MAX) tlen = SS_STORE_TENANT_MAX;
    memcpy(k, "tenant:", 7);
    memcpy(k + 7, tenant, tlen);
    MDB_val key = {7 + tlen, k}, val;
    uint64_t n = 0, b = 0;
    int rc = mdb_get(w->txn, s->meta, &key, &val);
    if (rc == 0 && val.mv_size == 16) {
        n = be64_get(val.mv_data);
        b = be64_get((const unsigned char *)val.mv_data + 8);
    } else if (rc && rc != MDB_NOTFOUND) {
        return store_mdb_fail(rc, "store %s: reading tenant totals", s->dir);
    }
    n += (uint64_t)d_states;
    b += (uint64_t)d_bytes;
    if (n == 0) {
        if (store_w_del(w, s->meta, k, 7 + tlen))
            return store_mdb_fail(w->rc, "store %s: updating tenant totals", s->dir);
        return SS_OK;
    }
    be64_put(v, n);
    be64_put(v + 8, b);
    val = (MDB_val){16, v};
    if (store_w_put(w, s->meta, k, 7 + tlen, &val, 0))
        return store_mdb_fail(w->rc, "store %s: updating tenant totals", s->dir);
    return SS_OK;
}

/* ---- reading records ------------------------------------------------------------------------- */

/*
 * Find the state `ref` (id or name): its id (NUL-terminated) and its records value. The value
 * points into txn. SS_ERR_NOT_FOUND when there is none.
 */
static ss_err resolve(ss_store *s, MDB_txn *txn, const char *ref, char *id, MDB_val *rec)
{
    if (!ref) return ss_fail(SS_ERR_INVALID, "state reference is missing (NULL)");
    MDB_val key, val;
    int rc;
    if (ss_store_is_id(ref)) {
        memcpy(id, ref, ID_LEN + 1);
    } else {
        size_t n = strlen(ref);
        if (n == 0 || n > SS_REC_NAME_MAX) {
            return ss_fail(SS_ERR_NOT_FOUND, "no state named '%.128s'", ref);
        }
        unsigned char nk[NKEY_MAX];
        key = (MDB_val){store_name_key(nk, scope_tenant(store_scope), ref), nk};
        rc = mdb_get(txn, s->names, &key, &val);
        if (rc == MDB_NOTFOUND) return ss_fail(SS_ERR_NOT_FOUND, "no state named '%s'", ref);
        if (rc) return store_mdb_fail(rc, "store %s: looking up name '%s'", s->dir, ref);
        if (val.mv_size != TKEY_LEN) {
            return ss_fail(SS_ERR_CORRUPT, "store %s: name index entry for '%s' is malformed",
                           s->dir, ref);
        }
        memcpy(id, (const char *)val.mv_data + 8, ID_LEN);
        id[ID_LEN] = '\0';
    }
    key = (MDB_val){ID_LEN, id};
    rc = mdb_get(txn, s->records, &key, rec);
    if (rc == MDB_NOTFOUND) {
        if (strcmp(id, ref) == 0) return ss_fail(SS_ERR_NOT_FOUND, "no state with id %s", id);
        return ss_fail(SS_ERR_CORRUPT, "store %s: name '%s' points to missing state %s", s->dir,
                       ref, id);
    }
    if (rc) return store_mdb_fail(rc, "store %s: reading state %s", s->dir, id);
    if (rec->mv_size <= HDR_LEN) {
        return ss_fail(SS_ERR_CORRUPT, "store %s: record of state %s is truncated", s->dir, id);
    }
    if (store_scope && !store_scope->admin) {
        /* Another tenant's state answers exactly as a missing one (no existence oracle). */
        MDB_val ov;
        ival o;
        ss_err err = owner_of(s, txn, id, rec, &ov);
        if (err) return err;
        ival_parse(&ov, &o);
        if (!ival_listed(&o, store_scope)) {
            if (strcmp(id, ref) == 0) return ss_fail(SS_ERR_NOT_FOUND, "no state with id %s", id);
            return ss_fail(SS_ERR_NOT_FOUND, "no state named '%s'", ref);
        }
    }
    return SS_OK;
}

/*
 * The JSON text of a stored record value, verified: against its checksum (records written since
 * the checksum exists), else (older records) by parsing it, so that a damaged record is never
 * served. *text points into rec. SS_ERR_CORRUPT naming the state.
 */
static ss_err record_text(const char *id, const MDB_val *rec, const char **text, size_t *len)
{
    const unsigned char *p = rec->mv_data;
    if (rec->mv_size > HDR_LEN + REC_SUM_LEN && p[HDR_LEN] == REC_SUM_MARK) {
        *text = (const char *)p + HDR_LEN + REC_SUM_LEN;
        *len = rec->mv_size - HDR_LEN - REC_SUM_LEN;
        if (ss_hash64(*text, *len) != be64_get(p + HDR_LEN + 1))
            return ss_fail(SS_ERR_CORRUPT, "state %s: its record failed its checksum", id);
        return SS_OK;
    }
    if (rec->mv_size <= HDR_LEN)
        return ss_fail(SS_ERR_CORRUPT, "state %s: its record is truncated", id);
    *text = (const char *)p + HDR_LEN;
    *len = rec->mv_size - HDR_LEN;
    json_t *j = json_loadb(*text, *len, 0, NULL);
    int ok = json_is_object(j);
    json_decref(j);
    if (!ok) return ss_fail(SS_ERR_CORRUPT, "state %s: stored record is not a JSON object", id);
    return SS_OK;
}

/* Parse a stored record (verified by record_text). */
static ss_err load_record(const char *id, const MDB_val *rec, json_t **out)
{
    const char *text;
    size_t len;
    ss_err err = record_text(id, rec, &text, &len);
    if (err) return err;
    json_t *j = json_loadb(text, len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return ss_fail(SS_ERR_CORRUPT, "state %s: stored record is not a JSON object", id);
    }
    *out = j;
    return SS_OK;
}

ss_err store_load_record(const char *id, const MDB_val *rec, json_t **out)
{
    return load_record(id, rec, out);
}

/* Copy the stored record text (verified) into a malloc'd NUL-terminated string. */
ss_err store_copy_record(const char *id, const MDB_val *rec, char **out)
{
    const char *text;
    size_t n;
    ss_err err = record_text(id, rec, &text, &n);
    if (err) return err;
    char *t = malloc(n + 1);
    if (!t) return ss_fail(SS_ERR_NOMEM, "state %s: cannot allocate %zu bytes", id, n + 1);
    memcpy(t, text, n);
    t[n] = '\0';
    *out = t;
    return SS_OK;
}

/* "st_... ('name')" or "st_..." for messages. */
static void describe(const char *id, const json_t *record, char *out, size_t cap)
{
    const char *name = json_string_value(json_object_get(record, "name"));
    if (name)
        snprintf(out, cap, "%s ('%s')", id, name);
    else
        snprintf(out, cap, "%s", id);
}

static ss_err check_model(const char *id, const json_t *record, const char *expect_model)
{
    if (!expect_model) return SS_OK;
    const char *model = json_string_value(json_object_get(record, "model"));
    if (model && strcmp(model, expect_model) == 0) return SS_OK;
    char who[200];
    describe(id, record, who, sizeof who);
    return ss_fail(SS_ERR_MISMATCH, "state %s was made by model %s, not the loaded model %s", who,
                   model ? model : "(none)", expect_model);
}

/*
 * The whole-blob checksum (hex) and the per-chunk checksums (*sums: be64 each, malloc'd) in one
 * pass: each chunk is hashed on its own and fed to the whole-blob hash while it is in cache.
 */
static ss_err checksums(const void *data, size_t len, char *hex, unsigned char **sums,
                        size_t *n_sums)
{
    size_t n = (len + CHUNK_BYTES - 1) / CHUNK_BYTES;
    unsigned char *out = malloc(8 * (n ? n : 1));
    XXH3_state_t *st = XXH3_createState();
    if (!out || !st) {
        free(out);
        XXH3_freeState(st);
        return ss_fail(SS_ERR_NOMEM, "store: out of memory");
    }
    XXH3_64bits_reset(st);
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = (const unsigned char *)data + i * CHUNK_BYTES;
        size_t cl = len - i * CHUNK_BYTES < CHUNK_BYTES ? len - i * CHUNK_BYTES : CHUNK_BYTES;
        be64_put(out + 8 * i, (uint64_t)ss_hash64(p, cl));
        XXH3_64bits_update(st, p, cl);
    }
    snprintf(hex, 17, "%016" PRIx64, (uint64_t)XXH3_64bits_digest(st));
    XXH3_freeState(st);
    *sums = out;
    *n_sums = n;
    return SS_OK;
}

/* The blob of state `id`, present and of the size its record says. */
static ss_err get_sized_blob(ss_store *s, MDB_txn *txn, const char *id, const json_t *record,
                             MDB_val *blob)
{
    char who[200];
    MDB_val key = {ID_LEN, (void *)id};
    int rc = mdb_get(txn, s->blobs, &key, blob);
    if (rc == MDB_NOTFOUND) {
        describe(id, record, who, sizeof who);
        return ss_fail(SS_ERR_CORRUPT, "state %s: its blob is missing", who);
    }
    if (rc) return store_mdb_fail(rc, "store %s: reading the blob of state %s", s->dir, id);
    json_t *bytes = json_object_get(record, "bytes");
    if (!json_is_integer(bytes) || (uint64_t)json_integer_value(bytes) != blob->mv_size) {
        describe(id, record, who, sizeof who);
        return ss_fail(SS_ERR_CORRUPT, "state %s: blob is %zu bytes, the record says %" PRId64, who,
                       blob->mv_size, (int64_t)json_integer_value(bytes));
    }
    return SS_OK;
}

/*
 * State `ref` found for reading: *id and *rec from resolve, *record parsed (the caller decrefs
 * it, on error too) and of the expected model, *blob as get_sized_blob gives it.
 */
ss_err store_find_blob(ss_store *s, MDB_txn *txn, const char *ref, const char *expect_model,
                        char *id, MDB_val *rec, json_t **record, MDB_val *blob)
{
    ss_err err;
    if ((err = resolve(s, txn, ref, id, rec))) return err;
    if ((err = load_record(id, rec, record))) return err;
    if ((err = check_model(id, *record, expect_model))) return err;
    return get_sized_blob(s, txn, id, *record, blob);
}

/* Is hash the checksum the blob's record gives? SS_ERR_CORRUPT naming the state if not. */
ss_err store_check_hash(const char *id, const json_t *record, uint64_t hash)
{
    char who[200];
    const char *want = json_string_value(json_object_get(record, "checksum"));
    char got[17];
    snprintf(got, sizeof got, "%016" PRIx64, hash);
    if (!want || strcmp(want, got) != 0) {
        describe(id, record, who, sizeof who);
        return ss_fail(SS_ERR_CORRUPT, "state %s: checksum mismatch (recorded %s, computed %s)",
                       who, want ? want : "(none)", got);
    }
    return SS_OK;
}

/* Does the blob hash to the checksum its record gives? */
ss_err store_check_sum(const char *id, const json_t *record, const MDB_val *blob)
{
    return store_check_hash(id, record, ss_hash64(blob->mv_data, blob->mv_size));
}

/* ---- put ------------------------------------------------------------------------------------- */

typedef struct put_ctx {
    json_t *rec; /* canonical record from ss_rec_parse; id/created_at filled per attempt */
    const void *blob;
    size_t blob_len;
    char checksum[17];
    unsigned char *chunk_sums; /* be64 XXH3-64 per CHUNK_BYTES of the blob */
    size_t n_chunks;
    char *text; /* out: the committed record text (malloc) */
    size_t text_len;
    const ss_store_prefix_entry *prefix; /* index the state under this (NULL: not) */
    const char *fixed_id;  /* store_put_as: the id and creation time given (remote tier) */
    int64_t fixed_created;
    float *key;            /* the retrieval key to store with it (keys.c), NULL: none */
    char id[ID_LEN + 1];   /* out: the id committed */
    int64_t created;       /* out: its created_ns */
} put_ctx;

/* Add `delta` (may wrap, to subtract) to the blob byte counter in meta. */
static ss_err add_blob_bytes(ss_store *s, wtx *w, uint64_t delta)
{
    MDB_val key = {10, "blob_bytes"}, val;
    uint64_t total = 0;
    int rc = mdb_get(w->txn, s->meta, &key, &val);
    if (rc == 0 && val.mv_size == 8)
        total = be64_get(val.mv_data);
    else if (rc && rc != MDB_NOTFOUND)
        return store_mdb_fail(rc, "store %s: reading totals", s->dir);
    unsigned char b[8];
    be64_put(b, total + delta);
    val = (MDB_val){8, b};
    if (store_w_put(w, s->meta, "blob_bytes", 10, &val, 0)) {
        return store_mdb_fail(w->rc, "store %s: updating totals", s->dir);
    }
    return SS_OK;
}

static ss_err put_fn(ss_store *s, wtx *w, void *ctx)
{
    put_ctx *p = ctx;
    ss_err err = SS_OK;
    MDB_cursor *cur = NULL;
    unsigned char tkey[TKEY_LEN];
    const char *name = json_string_value(json_object_get(p->rec, "name"));
    const char *tenant = json_string_value(json_object_get(p->rec, "tenant"));
    int shared = json_is_true(json_object_get(p->rec, "shared"));
    unsigned char nk[NKEY_MAX], iv[IVAL_MAX];
    size_t nk_len = name ? store_name_key(nk, tenant ? tenant : "", name) : 0;
    size_t iv_len = ival_make(iv, tenant ? tenant : "", shared, name);
    MDB_val key, val;
    int rc;

    free(p->text); /* from a previous attempt that hit MDB_MAP_FULL */
    p->text = NULL;

    if (name) {
        key = (MDB_val){nk_len, nk};
        rc = mdb_get(w->txn, s->names, &key, &val);
        if (rc == 0) {
            char other[ID_LEN + 1] = "?";
            if (val.mv_size == TKEY_LEN) {
                memcpy(other, (const char *)val.mv_data + 8, ID_LEN);
                other[ID_LEN] = '\0';
            }
            return ss_fail(SS_ERR_EXISTS, "name '%s' is already taken by state %s", name, other);
        }
        if (rc != MDB_NOTFOUND) return store_mdb_fail(rc, "store %s: looking up name", s->dir);
    }

    /* Strictly after the newest state, so the time index order is the order of the puts. */
    int64_t created = ss_now_ns();
    if (p->fixed_id) goto fixed;
    rc = mdb_cursor_open(w->txn, s->time, &cur);
    if (rc) return store_mdb_fail(rc, "store %s: time index", s->dir);
    rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    mdb_cursor_close(cur);
    if (rc == 0 && key.mv_size == TKEY_LEN) {
        int64_t newest = tkey_created_ns(key.mv_data);
        if (created <= newest) created = newest + 1;
    } else if (rc && rc != MDB_NOTFOUND) {
        return store_mdb_fail(rc, "store %s: time index", s->dir);
    }

    unsigned char rnd[16];
    char id[ID_LEN + 1] = "st_";
    if ((err = ss_random_bytes(rnd, sizeof rnd))) return err;
    ss_hex(rnd, sizeof rnd, id + 3);
    if (0) {
    fixed: /* a state of the remote tier cached here: its id and time are the catalog's */
        memcpy(id, p->fixed_id, ID_LEN + 1);
        created = p->fixed_created;
    }
    err = ss_rec_finish(p->rec, id, created, p->blob_len, p->checksum, &p->text, &p->text_len);
    if (err) return err;
    make_tkey(tkey, created, id);

    val = (MDB_val){p->blob_len, (void *)p->blob};
    if (store_w_put(w, s->blobs, id, ID_LEN, &val, MDB_NOOVERWRITE)) goto fail;
    val = (MDB_val){8 * p->n_chunks, p->chunk_sums};
    if (store_w_put(w, s->chunks, id, ID_LEN, &val, MDB_NOOVERWRITE)) goto fail;
    val = (MDB_val){HDR_LEN + REC_SUM_LEN + p->text_len, NULL};
    if (store_w_put(w, s->records, id, ID_LEN, &val, MDB_NOOVERWRITE | MDB_RESERVE)) goto fail;
    unsigned char *rv = val.mv_data;
    be64_put(rv, (uint64_t)created);
    rv[HDR_LEN] = REC_SUM_MARK;
    be64_put(rv + HDR_LEN + 1, ss_hash64(p->text, p->text_len));
    memcpy(rv + HDR_LEN + REC_SUM_LEN, p->text, p->text_len);
    if (name) {
        val = (MDB_val){TKEY_LEN, tkey};
        if (store_w_put(w, s->names, nk, nk_len, &val, MDB_NOOVERWRITE)) goto fail;
    }
    val = (MDB_val){iv_len, iv};
    if (store_w_put(w, s->time, tkey, TKEY_LEN, &val, MDB_NOOVERWRITE)) goto fail;
    size_t i;
    json_t *t;
    json_array_foreach (json_object_get(p->rec, "tags"), i, t) {
        unsigned char k[TAGKEY_MAX];
        size_t kl = tag_key(k, t, tkey); /* valid: checked by ss_rec_parse */
        val = (MDB_val){iv_len, iv};
        if (store_w_put(w, s->tags, k, kl, &val, MDB_NOOVERWRITE)) goto fail;
    }
    if (tenant && (err = add_tenant_counts(s, w, tenant, strlen(tenant), 1, (int64_t)p->blob_len)))
        return err;
    if (p->prefix && (err = store_prefix_put(s, w, id, p->prefix))) return err;
    if ((err = store_keys_write(s, w, id, p->key))) return err;
    if ((err = store_lineage_put(s, w, p->rec, tkey))) return err;
    memcpy(p->id, id, ID_LEN + 1);
    p->created = created;
    return add_blob_bytes(s, w, p->blob_len);
fail:
    if (w->rc == MDB_KEYEXIST) {
        return ss_fail(SS_ERR_INTERNAL, "store %s: generated id %s already exists", s->dir, id);
    }
    return store_mdb_fail(w->rc, "store %s: storing state %s (%zu bytes)", s->dir, id, p->blob_len);
}

/*
 * Store a new state: validate record_json, assign id/created_at/bytes/checksum and commit blob,
 * record and index entries in one durable transaction (returns after fsync). The blob is copied;
 * the caller keeps ownership of both inputs. *record_out (may be NULL) receives the complete
 * record text (free() it), set only on success. The checksum is computed before the write lock is
 * taken, so concurrent puts only serialise on the copy into the map. Thread-safe.
 */
static ss_err put_common(ss_store *s, const char *record_json, const void *blob, size_t blob_len,
                         const ss_store_prefix_entry *pe, const char *fixed_id,
                         int64_t fixed_created, char **record_out)
{
    ss_err err = SS_OK;
    put_ctx p = {.prefix = pe, .fixed_id = fixed_id, .fixed_created = fixed_created};

    if (s->read_only) return ss_fail(SS_ERR_PERM, "store %s is open read-only", s->dir);
    if (blob_len == 0 || !blob) return ss_fail(SS_ERR_INVALID, "state blob is empty");
    /* A write into a file that was deleted under us would be acknowledged and lost. */
    if ((err = store_check_file(s))) return err;
    if (blob_len > 0xffffffffu) {
        return ss_fail(SS_ERR_TOO_LARGE, "state blob of %zu bytes exceeds the 4 GiB limit",
                       blob_len);
    }
    /* A new state is the scope's tenant's; a copy (fixed id) keeps the tenancy it had. */
    err = ss_rec_parse_as(record_json, fixed_id != NULL, scope_tenant(store_scope), &p.rec);
    if (err) return err;
    p.blob = blob;
    p.blob_len = blob_len;
    if ((err = checksums(blob, blob_len, p.checksum, &p.chunk_sums, &p.n_chunks))) goto out;
    if ((err = store_keys_prepare(s, p.rec, blob, blob_len, &p.key))) goto out;
    /* Growth estimate: the blob, the record (about as long as the caller's) and index pages. */
    err = store_write_txn(s, blob_len + strlen(record_json) + 64 * 1024, put_fn, &p);
    if (err == SS_OK) store_keys_added(s, p.id, p.rec, p.created, p.key);
    if (err == SS_OK && record_out) {
        *record_out = p.text;
        p.text = NULL;
    }
out:
    free(p.key);
    free(p.chunk_sums);
    free(p.text);
    json_decref(p.rec);
    return err;
}

ss_err ss_store_put(ss_store *s, const char *record_json, const void *blob, size_t blob_len,
                    char **record_out)
{
    return ss_store_put_prefixed(s, record_json, blob, blob_len, NULL, record_out);
}

ss_err ss_store_put_prefixed(ss_store *s, const char *record_json, const void *blob,
                             size_t blob_len, const ss_store_prefix_entry *pe, char **record_out)
{
    if (!s) return ss_fail(SS_ERR_INVALID, "store: NULL store");
    REMOTE_ROUTE(s, remote_put(s, record_json, blob, blob_len, pe, record_out));
    return put_common(s, record_json, blob, blob_len, pe, NULL, 0, record_out);
}

ss_err store_put_as(ss_store *s, const char *record_json, const void *blob, size_t blob_len,
                    const ss_store_prefix_entry *pe, const char *id, int64_t created_ns,
                    char **record_out)
{
    return put_common(s, record_json, blob, blob_len, pe, id, created_ns, record_out);
}

/* A complete record's id, created_at (as nanoseconds) and agreement with the blob. */
ss_err store_copy_identity(const char *record_json, const void *blob, size_t blob_len, char *id,
                           int64_t *created_ns)
{
    json_t *rec = record_json ? json_loads(record_json, 0, NULL) : NULL;
    if (!rec) return ss_fail(SS_ERR_FORMAT, "copy: the record is not JSON");
    ss_err err = SS_OK;
    const char *rid = json_string_value(json_object_get(rec, "id"));
    const char *at = json_string_value(json_object_get(rec, "created_at"));
    const char *sum = json_string_value(json_object_get(rec, "checksum"));
    json_int_t bytes = json_integer_value(json_object_get(rec, "bytes"));
    struct tm tm = {0};
    unsigned us = 0;
    char z = 0, hex[17];
    if (!rid || !ss_store_is_id(rid)) {
        err = ss_fail(SS_ERR_INVALID, "copy: the record has no state id");
    } else if (!at || sscanf(at, "%4d-%2d-%2dT%2d:%2d:%2d.%6u%c", &tm.tm_year, &tm.tm_mon,
                             &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &us, &z) != 8 ||
               z != 'Z') {
        err = ss_fail(SS_ERR_INVALID, "copy: state %s: created_at is not RFC 3339 UTC", rid);
    } else if (!blob || (json_int_t)blob_len != bytes ||
               (ss_store_checksum(blob, blob_len, hex), !sum || strcmp(sum, hex) != 0)) {
        err = ss_fail(SS_ERR_CORRUPT, "copy: state %s: the blob does not match its record", rid);
    } else {
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        memcpy(id, rid, ID_LEN + 1);
        *created_ns = (int64_t)timegm(&tm) * 1000000000 + (int64_t)us * 1000;
    }
    json_decref(rec);
    return err;
}

ss_err ss_store_put_copy(ss_store *s, const char *record_json, const void *blob, size_t blob_len)
{
    if (!s) return ss_fail(SS_ERR_INVALID, "store: NULL store");
    REMOTE_ROUTE(s, remote_put_copy(s, record_json, blob, blob_len));
    char id[ID_LEN + 1], *have = NULL;
    int64_t created = 0;
    ss_err err = store_copy_identity(record_json, blob, blob_len, id, &created);
    if (err) return err;
    if (ss_store_get_record(s, id, &have) == SS_OK) {
        free(have);
        return ss_fail(SS_ERR_EXISTS, "state %s is already in %s", id, s->dir);
    }
    return put_common(s, record_json, blob, blob_len, NULL, id, created, NULL);
}

/* ---- get ------------------------------------------------------------------------------------- */

/* Record of state `ref` (id or name) as JSON text (free() it), set only on success. Thread-safe. */
static ss_err get_record_impl(ss_store *s, const char *ref, char **record_json)
{
    ss_err err = SS_OK;
    MDB_txn *txn = NULL;
    char id[ID_LEN + 1];
    MDB_val rec;

    if (!s || !record_json) return ss_fail(SS_ERR_INVALID, "store: NULL argument");
    REMOTE_ROUTE(s, remote_get_record(s, ref, record_json));
    err = store_txn_begin(s, MDB_RDONLY, &txn);
    if (err) return err;
    err = resolve(s, txn, ref, id, &rec);
    if (err) goto out;
    err = store_copy_record(id, &rec, record_json);
out:
    store_txn_end(s, txn);
    return err;
}

ss_err ss_store_get_record(ss_store *s, const char *ref, char **record_json)
{
    return store_count_corrupt(s, get_record_impl(s, ref, record_json));
}

void ss_store_checksum(const void *data, size_t len, char *hex)
{
    snprintf(hex, 17, "%016" PRIx64, ss_hash64(data, len));
}

/* ---- delete ---------------------------------------------------------------------------------- */

/* Remove every entry of db whose key ends with / value equals the time key (index repair). */
static ss_err purge_index(ss_store *s, wtx *w, MDB_dbi db, const unsigned char *tkey, int in_key)
{
    MDB_cursor *cur = NULL;
    MDB_val key, val;
    int rc = mdb_cursor_open(w->txn, db, &cur);
    if (rc) {
        w->rc = rc;
        return store_mdb_fail(rc, "store %s: index scan", s->dir);
    }
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        const MDB_val *v = in_key ? &key : &val;
        if (v->mv_size >= TKEY_LEN &&
            memcmp((const char *)v->mv_data + v->mv_size - TKEY_LEN, tkey, TKEY_LEN) == 0) {
            if ((rc = mdb_cursor_del(cur, 0))) break;
        }
    }
    mdb_cursor_close(cur);
    if (rc && rc != MDB_NOTFOUND) {
        w->rc = rc;
        return store_mdb_fail(rc, "store %s: index scan", s->dir);
    }
    return SS_OK;
}

typedef struct delete_ctx {
    const char *ref;
    char id[ID_LEN + 1]; /* out: the state deleted */
} delete_ctx;

static ss_err delete_fn(ss_store *s, wtx *w, void *ctx)
{
    delete_ctx *dc = ctx;
    const char *ref = dc->ref;
    ss_err err = SS_OK;
    json_t *record = NULL;
    char id[ID_LEN + 1];
    unsigned char tkey[TKEY_LEN];
    MDB_val rec, blob, key;

    if ((err = resolve(s, w->txn, ref, id, &rec))) return err;
    MDB_val ov;
    ival o;
    char tenant[SS_STORE_TENANT_MAX + 1];
    if ((err = owner_of(s, w->txn, id, &rec, &ov))) return err;
    ival_parse(&ov, &o);
    if (store_scope && !store_scope->admin && !ival_own(&o, store_scope))
        return ss_fail(SS_ERR_PERM, "state %s is shared by another tenant: only its owner or an "
                                    "admin may delete it", id);
    memcpy(tenant, o.tenant, o.tlen < SS_STORE_TENANT_MAX ? o.tlen : SS_STORE_TENANT_MAX);
    tenant[o.tlen < SS_STORE_TENANT_MAX ? o.tlen : SS_STORE_TENANT_MAX] = '\0';
    make_tkey(tkey, (int64_t)be64_get(rec.mv_data), id);
    /* A record we cannot parse must still be deletable: then find its index entries by scan. */
    ss_err lerr = load_record(id, &rec, &record);
    uint64_t blob_len = 0;
    key = (MDB_val){ID_LEN, id};
    int rc = mdb_get(w->txn, s->blobs, &key, &blob);
    if (rc == 0)
        blob_len = blob.mv_size;
    else if (rc != MDB_NOTFOUND) {
        err = store_mdb_fail(rc, "store %s: deleting state %s", s->dir, id);
        goto out;
    }
    if (store_w_del(w, s->blobs, id, ID_LEN) || store_w_del(w, s->records, id, ID_LEN) ||
        store_w_del(w, s->time, tkey, TKEY_LEN)) {
        goto fail;
    }
    key = (MDB_val){ID_LEN, id};
    rc = mdb_del(w->txn, s->chunks, &key, NULL); /* absent for states from older stores */
    if (rc && rc != MDB_NOTFOUND) {
        w->rc = rc;
        goto fail;
    }
    if ((err = store_prefix_del(s, w, id))) goto out;
    if ((err = store_keys_del(s, w, id))) goto out;
    if ((err = store_lineage_del(s, w, lerr == SS_OK ? record : NULL, tkey))) goto out;
    memcpy(dc->id, id, ID_LEN + 1);
    if (lerr == SS_OK) {
        const char *name = json_string_value(json_object_get(record, "name"));
        unsigned char nk[NKEY_MAX];
        if (name && store_w_del(w, s->names, nk, store_name_key(nk, tenant, name))) goto fail;
        size_t i;
        json_t *t;
        json_array_foreach (json_object_get(record, "tags"), i, t) {
            unsigned char k[TAGKEY_MAX];
            size_t kl = tag_key(k, t, tkey);
            if (kl && store_w_del(w, s->tags, k, kl)) goto fail;
        }
    } else {
        if ((err = purge_index(s, w, s->names, tkey, 0))) goto out;
        if ((err = purge_index(s, w, s->tags, tkey, 1))) goto out;
    }
    if ((err = add_tenant_counts(s, w, tenant, strlen(tenant), -1, -(int64_t)blob_len))) goto out;
    err = add_blob_bytes(s, w, (uint64_t)0 - blob_len);
    goto out;
fail:
    err = store_mdb_fail(w->rc, "store %s: deleting state %s", s->dir, id);
out:
    json_decref(record);
    return err;
}

/*
 * Delete state `ref` (id or name) with its blob and every index entry, in one transaction; its
 * name is free again afterwards. SS_ERR_NOT_FOUND, SS_ERR_PERM on a read-only store. Thread-safe.
 */
ss_err ss_store_delete(ss_store *s, const char *ref)
{
    if (!s) return ss_fail(SS_ERR_INVALID, "store: NULL store");
    if (!ref) return ss_fail(SS_ERR_INVALID, "state reference is missing (NULL)");
    REMOTE_ROUTE(s, remote_delete(s, ref));
    delete_ctx dc = {.ref = ref};
    ss_err err = store_write_txn(s, 64 * 1024, delete_fn, &dc);
    if (!err) store_keys_removed(s, dc.id);
    return err;
}

/* ---- list ------------------------------------------------------------------------------------ */

static int unhex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static ss_err parse_cursor(const char *cursor, unsigned char *tkey)
{
    size_t n = strlen(cursor);
    if (n != CURSOR_LEN) goto bad;
    for (size_t i = 0; i < TKEY_LEN; i++) {
        int hi = unhex(cursor[2 * i]), lo = unhex(cursor[2 * i + 1]);
        if (hi < 0 || lo < 0) goto bad;
        tkey[i] = (unsigned char)(hi << 4 | lo);
    }
    char id[ID_LEN + 1];
    memcpy(id, tkey + 8, ID_LEN);
    id[ID_LEN] = '\0';
    if ((tkey[0] & 0x80) || !ss_store_is_id(id)) goto bad;
    return SS_OK;
bad:
    return ss_fail(SS_ERR_INVALID, "malformed list cursor '%.100s'", cursor);
}

/* End a page: close "data", add "skipped" and next_cursor (the hex of `last`, or null). */
static ss_err list_close(buf *b, int skipped, const unsigned char *last)
{
    char tail[64 + CURSOR_LEN];
    if (last) {
        char hex[CURSOR_LEN + 1];
        ss_hex(last, TKEY_LEN, hex);
        snprintf(tail, sizeof tail, "],\"skipped\":%d,\"next_cursor\":\"%s\"}", skipped, hex);
    } else {
        snprintf(tail, sizeof tail, "],\"skipped\":%d,\"next_cursor\":null}", skipped);
    }
    return buf_str(b, tail);
}

/*
 * List records newest first as {"data": [records], "skipped": n, "next_cursor": str|null}
 * (*page_json, free() it; set only on success). Records that cannot be read are left out and
 * counted in skipped; a damaged index page ends the page there (next_cursor null). tag: exact tag
 * (SS_ERR_INVALID if not a valid tag) or NULL; prefix: name prefix or NULL (unnamed states never
 * match; "" matches every named state). limit 1..1000, 0 = 100, else SS_ERR_INVALID. cursor: NULL,
 * or a next_cursor from an earlier page (opaque; it stays valid across writes and deletes).
 * next_cursor is null exactly when no further record matches. Cost: index entries newer than the
 * page's last match, plus one record read per result. Thread-safe.
 */
ss_err ss_store_list(ss_store *s, const char *tag, const char *prefix, int limit,
                     const char *cursor, char **page_json)
{
    ss_err err = SS_OK;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    buf b = {0};
    unsigned char after[TKEY_LEN], last[TKEY_LEN];
    unsigned char start[SS_REC_TAG_MAX + 1 + TKEY_LEN];
    size_t off = 0; /* where the time key starts in an index key */
    size_t plen = prefix ? strlen(prefix) : 0;
    int count = 0, more = 0, skipped = 0;

    if (!s || !page_json) return ss_fail(SS_ERR_INVALID, "store: NULL argument");
    if (limit == 0) limit = LIST_DEFAULT;
    if (limit < 1 || limit > LIST_MAX) {
        return ss_fail(SS_ERR_INVALID, "limit must be 1..%d (got %d)", LIST_MAX, limit);
    }
    if (tag && (err = ss_store_check_tag(tag))) return err;
    if (cursor && (err = parse_cursor(cursor, after))) return err;
    REMOTE_ROUTE(s, remote_list(s, tag, prefix, limit, after, cursor != NULL, page_json));

    if ((err = buf_str(&b, "{\"data\":["))) goto out;
    err = store_txn_begin(s, MDB_RDONLY, &txn);
    if (err) goto out;
    int rc = mdb_cursor_open(txn, tag ? s->tags : s->time, &cur);
    if (rc) {
        err = store_mdb_fail(rc, "store %s: opening an index", s->dir);
        goto out;
    }
    MDB_val key, val;
    if (tag) {
        off = strlen(tag) + 1;
        memcpy(start, tag, off); /* with its NUL: the separator */
        if (cursor) memcpy(start + off, after, TKEY_LEN);
        key = (MDB_val){cursor ? off + TKEY_LEN : off, start};
        rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    } else if (cursor) {
        key = (MDB_val){TKEY_LEN, after};
        rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    }
    for (; rc == 0; rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        if (tag && (key.mv_size < off || memcmp(key.mv_data, start, off) != 0)) break;
        if (key.mv_size != off + TKEY_LEN) continue; /* not ours: skip rather than fail a listing */
        const unsigned char *tk = (const unsigned char *)key.mv_data + off;
        if (cursor && memcmp(tk, after, TKEY_LEN) <= 0) continue;
        ival iv;
        ival_parse(&val, &iv);
        if (!ival_listed(&iv, store_scope)) continue;
        if (prefix && (iv.nlen == 0 || iv.nlen < plen || memcmp(iv.name, prefix, plen) != 0)) {
            continue;
        }
        if (count == limit) {
            more = 1;
            break;
        }
        MDB_val rkey = {ID_LEN, (void *)(tk + 8)}, rec;
        int rrc = mdb_get(txn, s->records, &rkey, &rec);
        if (rrc == MDB_NOTFOUND) continue; /* stale index entry */
        /* A record that cannot be read (checksum, damaged page) is skipped and counted: one
         * damaged state must not take the whole listing down. */
        const char *text;
        size_t tlen;
        char rid[ID_LEN + 1];
        memcpy(rid, tk + 8, ID_LEN);
        rid[ID_LEN] = '\0';
        if (rrc || record_text(rid, &rec, &text, &tlen)) {
            skipped++;
            memcpy(last, tk, TKEY_LEN);
            continue;
        }
        if (count && (err = buf_add(&b, ",", 1))) goto out;
        if ((err = buf_add(&b, text, tlen))) goto out;
        memcpy(last, tk, TKEY_LEN);
        count++;
    }
    if (rc && rc != MDB_NOTFOUND) {
        /* A damaged index page: serve what was read before it, say so, and end the listing (the
         * walk cannot step past the page). verify names the damage. */
        skipped++;
        more = 0;
    }
    if (skipped) atomic_fetch_add(&s->corrupt_reads, (unsigned long long)skipped);
    if ((err = list_close(&b, skipped, more ? last : NULL))) goto out;
    *page_json = b.p;
    b.p = NULL;
out:
    if (cur) mdb_cursor_close(cur);
    store_txn_end(s, txn);
    free(b.p);
    return err;
}

/* ---- stats and verify ------------------------------------------------------------------------ */

/*
 * Totals from one consistent snapshot: states, sum of blob sizes, the current map size and
 * file_bytes = (last used page + 1) * page size, the high-water mark of the data file (it
 * includes free pages LMDB will reuse). Thread-safe.
 */
ss_err ss_store_get_stats(ss_store *s, ss_store_stats *out)
{
    ss_err err = SS_OK;
    MDB_txn *txn = NULL;
    MDB_stat st;
    MDB_envinfo info;

    if (!s || !out) return ss_fail(SS_ERR_INVALID, "store: NULL argument");
    err = store_txn_begin(s, MDB_RDONLY, &txn);
    if (err) return err;
    int rc = mdb_stat(txn, s->records, &st);
    if (rc) {
        err = store_mdb_fail(rc, "store %s: stat", s->dir);
        goto out;
    }
    MDB_val key = {10, "blob_bytes"}, val;
    uint64_t blob_bytes = 0;
    rc = mdb_get(txn, s->meta, &key, &val);
    if (rc == 0 && val.mv_size == 8)
        blob_bytes = be64_get(val.mv_data);
    else if (rc && rc != MDB_NOTFOUND) {
        err = store_mdb_fail(rc, "store %s: reading totals", s->dir);
        goto out;
    }
    mdb_env_info(s->env, &info);
    out->n_states = st.ms_entries;
    out->blob_bytes = blob_bytes;
    out->map_size = info.me_mapsize;
    out->file_bytes = ((uint64_t)info.me_last_pgno + 1) * s->page_size;
    out->corrupt_reads = atomic_load(&s->corrupt_reads);
    if (s->remote) remote_stats(s, out);
out:
    store_txn_end(s, txn);
    return err;
}

/*
 * Walk the index databases end to end: a damaged page stops a cursor with MDB_CORRUPTED (or
 * MDB_PAGE_NOTFOUND), which a listing survives by ending early; here it counts as one bad item
 * per index, with ss_errmsg() naming the index. Errors other than the damage itself are returned.
 */
static ss_err verify_indexes(ss_store *s, uint64_t *bad)
{
    static const char *const names[] = {"time", "names", "tags"};
    MDB_dbi dbis[] = {s->time, s->names, s->tags};
    for (size_t i = 0; i < sizeof dbis / sizeof dbis[0]; i++) {
        MDB_txn *txn = NULL;
        MDB_cursor *cur = NULL;
        MDB_val key, val;
        ss_err err = store_txn_begin(s, MDB_RDONLY, &txn);
        if (err) return err;
        int rc = mdb_cursor_open(txn, dbis[i], &cur);
        if (rc == 0) {
            for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
                 rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
            }
            mdb_cursor_close(cur);
        }
        store_txn_end(s, txn);
        if (rc != MDB_NOTFOUND) {
            (*bad)++;
            store_mdb_fail(rc, "store %s: the '%s' index is damaged (listings stop there)", s->dir,
                     names[i]);
        }
    }
    return SS_OK;
}

/*
 * Check every state: record parseable, blob present with the recorded size and checksum. Works in
 * chunks of read transactions (so a long fsck does not hold off map growth), which means states
 * stored during the run may or may not be counted. *n_checked / *n_bad (either may be NULL)
 * receive the number of states checked and failing. Returns an error only when the walk itself
 * fails; corrupt states are counted, not returned (when *n_bad > 0, ss_errmsg() describes the
 * last one found). Thread-safe.
 */
ss_err ss_store_verify(ss_store *s, uint64_t *n_checked, uint64_t *n_bad)
{
    ss_err err = SS_OK;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    json_t *record = NULL;
    char last[ID_LEN + 1] = "";
    uint64_t checked = 0, bad = 0;
    int done = 0;

    if (!s) return ss_fail(SS_ERR_INVALID, "store: NULL store");
    while (!done) {
        size_t chunk_bytes = 0;
        err = store_txn_begin(s, MDB_RDONLY, &txn);
        if (err) goto out;
        int rc = mdb_cursor_open(txn, s->records, &cur);
        if (rc) {
            err = store_mdb_fail(rc, "store %s: verify", s->dir);
            goto out;
        }
        MDB_val key = {ID_LEN, last}, val;
        rc = mdb_cursor_get(cur, &key, &val, last[0] ? MDB_SET_RANGE : MDB_FIRST);
        for (; rc == 0; rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
            if (key.mv_size != ID_LEN) continue; /* cannot be a state */
            char id[ID_LEN + 1];
            memcpy(id, key.mv_data, ID_LEN);
            id[ID_LEN] = '\0';
            if (last[0] && memcmp(id, last, ID_LEN) <= 0) continue;
            if (chunk_bytes >= VERIFY_CHUNK_BYTES) break; /* resume after `last` */
            memcpy(last, id, ID_LEN + 1);
            checked++;
            MDB_val blob;
            if (load_record(id, &val, &record) ||
                get_sized_blob(s, txn, id, record, &blob) || store_check_sum(id, record, &blob)) {
                bad++;
            } else {
                chunk_bytes += blob.mv_size;
            }
            json_decref(record);
            record = NULL;
        }
        if (rc == MDB_NOTFOUND)
            done = 1;
        else if (rc) {
            err = store_mdb_fail(rc, "store %s: verify", s->dir);
            goto out;
        }
        mdb_cursor_close(cur);
        cur = NULL;
        store_txn_end(s, txn);
        txn = NULL;
    }
    if ((err = verify_indexes(s, &bad))) goto out;
    if (!bad) ss_err_clear();
    if (n_checked) *n_checked = checked;
    if (n_bad) *n_bad = bad;
out:
    if (cur) mdb_cursor_close(cur);
    store_txn_end(s, txn);
    return err;
}

/* ---- tenants: scoped calls, sharing, per-tenant totals ------------------------------------- */

/* The remote tier (remote.c) obeys the same thread-local scope. */
#define SCOPED_ENTRY(s, sc, call) SCOPED_CALL(sc, call)

ss_err ss_store_put_as(ss_store *s, const ss_store_scope *sc, const char *record_json,
                       const void *blob, size_t blob_len, const ss_store_prefix_entry *pe,
                       char **record_out)
{
    SCOPED_ENTRY(s, sc, ss_store_put_prefixed(s, record_json, blob, blob_len, pe, record_out));
}

ss_err ss_store_get_record_as(ss_store *s, const ss_store_scope *sc, const char *ref,
                              char **record_json)
{
    SCOPED_ENTRY(s, sc, ss_store_get_record(s, ref, record_json));
}

ss_err ss_store_get_blob_as(ss_store *s, const ss_store_scope *sc, const char *ref,
                            const char *expect_model, void *dst, size_t cap, size_t *len,
                            char **record_json)
{
    SCOPED_ENTRY(s, sc, ss_store_get_blob(s, ref, expect_model, dst, cap, len, record_json));
}

ss_err ss_store_delete_as(ss_store *s, const ss_store_scope *sc, const char *ref)
{
    SCOPED_ENTRY(s, sc, ss_store_delete(s, ref));
}

ss_err ss_store_list_as(ss_store *s, const ss_store_scope *sc, const char *tag,
                        const char *prefix, int limit, const char *cursor, char **page_json)
{
    SCOPED_ENTRY(s, sc, ss_store_list(s, tag, prefix, limit, cursor, page_json));
}

ss_err ss_store_view_as(ss_store *s, const ss_store_scope *sc, const char *const *refs, int n,
                        const char *expect_model, ss_store_view_fn fn, void *user)
{
    SCOPED_ENTRY(s, sc, ss_store_view(s, refs, n, expect_model, fn, user));
}

ss_err ss_store_view_chunks_as(ss_store *s, const ss_store_scope *sc, const char *const *refs,
                               int n, const char *expect_model, int n_threads,
                               ss_store_chunk_fn fn, void *user)
{
    SCOPED_ENTRY(s, sc, ss_store_view_chunks(s, refs, n, expect_model, n_threads, fn, user));
}

ss_err ss_store_merge_f32_as(ss_store *s, const ss_store_scope *sc, const char *const *refs,
                             const double *w, int n, const char *expect_model, float *out,
                             size_t out_bytes, int n_threads, ss_store_source *src)
{
    SCOPED_ENTRY(s, sc,
                 ss_store_merge_f32(s, refs, w, n, expect_model, out, out_bytes, n_threads, src));
}

typedef struct share_ctx {
    const char *ref;
    int shared;
    char *text;          /* out: the new record text (malloc) */
    char id[ID_LEN + 1]; /* out: the state */
} share_ctx;

static ss_err share_fn(ss_store *s, wtx *w, void *ctx)
{
    share_ctx *c = ctx;
    char id[ID_LEN + 1], tenant[SS_STORE_TENANT_MAX + 1];
    unsigned char tkey[TKEY_LEN], iv[IVAL_MAX];
    MDB_val rec, ov, val;
    json_t *record = NULL;
    ival o;
    ss_err err;

    free(c->text);
    c->text = NULL;
    if ((err = resolve(s, w->txn, c->ref, id, &rec))) return err;
    if ((err = load_record(id, &rec, &record))) return err;
    if ((err = owner_of(s, w->txn, id, &rec, &ov))) goto out;
    ival_parse(&ov, &o);
    size_t tl = o.tlen < SS_STORE_TENANT_MAX ? o.tlen : SS_STORE_TENANT_MAX;
    memcpy(tenant, o.tenant, tl);
    tenant[tl] = '\0';
    if ((err = ss_rec_set_shared(record, c->shared))) goto out;
    c->text = json_dumps(record, JSON_PRESERVE_ORDER | JSON_COMPACT);
    if (!c->text) {
        err = ss_fail(SS_ERR_NOMEM, "store: cannot serialise a record");
        goto out;
    }
    size_t len = strlen(c->text);
    int64_t created = (int64_t)be64_get(rec.mv_data);
    make_tkey(tkey, created, id);
    val = (MDB_val){HDR_LEN + REC_SUM_LEN + len, NULL};
    if (store_w_put(w, s->records, id, ID_LEN, &val, MDB_RESERVE)) goto fail;
    unsigned char *rv = val.mv_data;
    be64_put(rv, (uint64_t)created);
    rv[HDR_LEN] = REC_SUM_MARK;
    be64_put(rv + HDR_LEN + 1, ss_hash64(c->text, len));
    memcpy(rv + HDR_LEN + REC_SUM_LEN, c->text, len);
    size_t iv_len =
        ival_make(iv, tenant, c->shared, json_string_value(json_object_get(record, "name")));
    val = (MDB_val){iv_len, iv};
    if (store_w_put(w, s->time, tkey, TKEY_LEN, &val, 0)) goto fail;
    size_t i;
    json_t *t;
    json_array_foreach (json_object_get(record, "tags"), i, t) {
        unsigned char k[TAGKEY_MAX];
        size_t kl = tag_key(k, t, tkey);
        val = (MDB_val){iv_len, iv};
        if (kl && store_w_put(w, s->tags, k, kl, &val, 0)) goto fail;
    }
    memcpy(c->id, id, ID_LEN + 1);
    goto out;
fail:
    err = store_mdb_fail(w->rc, "store %s: sharing state %s", s->dir, id);
out:
    json_decref(record);
    return err;
}

static ss_err share_unscoped(ss_store *s, const char *ref, int shared, char **record_out)
{
    share_ctx c = {.ref = ref, .shared = shared ? 1 : 0};
    ss_err err = store_write_txn(s, 64 * 1024, share_fn, &c);
    if (!err) store_keys_shared(s, c.id, c.shared);
    if (!err && record_out) {
        *record_out = c.text;
        c.text = NULL;
    }
    free(c.text);
    return err;
}

ss_err ss_store_share_as(ss_store *s, const ss_store_scope *sc, const char *ref, int shared,
                         char **record_out)
{
    if (!s || !ref) return ss_fail(SS_ERR_INVALID, "store: NULL argument");
    if (sc && !sc->admin) return ss_fail(SS_ERR_PERM, "only an admin may share or unshare states");
    if (s->remote && !store_local_only)
        SCOPED_CALL(sc, remote_share(s, ref, shared ? 1 : 0, record_out));
    SCOPED_CALL(sc, share_unscoped(s, ref, shared, record_out));
}

ss_err ss_store_tenant_stats(ss_store *s, ss_store_tenant_fn fn, void *user)
{
    ss_store_stats total;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val key = {7, "tenant:"}, val;
    uint64_t n_other = 0, b_other = 0;
    if (!s || !fn) return ss_fail(SS_ERR_INVALID, "store: NULL argument");
    if (s->remote) /* the shared catalog's counts, not the local cache's */
        return remote_tenant_stats(s, fn, user);
    ss_err err = ss_store_get_stats(s, &total);
    if (err) return err;
    if ((err = store_txn_begin(s, MDB_RDONLY, &txn))) return err;
    int rc = mdb_cursor_open(txn, s->meta, &cur);
    for (rc = rc ? rc : mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        if (key.mv_size < 8 || memcmp(key.mv_data, "tenant:", 7)) break;
        if (val.mv_size != 16 || key.mv_size > 7 + SS_STORE_TENANT_MAX) continue;
        char t[SS_STORE_TENANT_MAX + 1];
        memcpy(t, (const char *)key.mv_data + 7, key.mv_size - 7);
        t[key.mv_size - 7] = '\0';
        uint64_t n = be64_get(val.mv_data), b = be64_get((const unsigned char *)val.mv_data + 8);
        n_other += n;
        b_other += b;
        fn(user, t, n, b);
    }
    if (rc && rc != MDB_NOTFOUND) err = store_mdb_fail(rc, "store %s: tenant totals", s->dir);
    if (cur) mdb_cursor_close(cur);
    store_txn_end(s, txn);
    if (!err && total.n_states >= n_other)
        fn(user, "", total.n_states - n_other,
           total.blob_bytes >= b_other ? total.blob_bytes - b_other : 0);
    return err;
}
