/*
 * test_tenants.c - tenants in the store (ss_store.h, "Tenants"): two tenants each own a state
 * named "x"; neither can read, guess (by id or name), merge, view, delete or list the other's;
 * an admin shares and unshares (then the other reads, merges and lists it, but cannot delete it);
 * per-tenant totals; search filtered by tenant; prefix roots per tenant; everything survives a
 * reopen; and a catalog written by hand in the layout of before tenants opens and reads as the
 * default tenant's. Values are compared with ones computed here (blobs, sums, counts).
 */
#include <inttypes.h>
#include <jansson.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hash.h"
#include "ss_store.h"
#include "test_util.h"

#define MODEL   "fp_tenant_model"
#define FLOATS  1024
#define KEY_DIM 4

static const ss_store_scope T_A = {.tenant = "alice"};
static const ss_store_scope T_B = {.tenant = "bob"};
static const ss_store_scope T_DEF = {.tenant = NULL};
static const ss_store_scope T_ADMIN = {.tenant = "ops", .admin = 1};

/* Deterministic finite floats from a seed. */
static void fill(float *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 77;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (float)((int64_t)(x >> 40) - (1 << 23)) / (float)(1 << 22);
    }
}

/* Put a state of FLOATS floats (fill(seed)) under scope sc; its id to id (36 bytes). */
static ss_err put(ss_store *s, const ss_store_scope *sc, const char *name, const char *tag,
                  uint64_t seed, char *id)
{
    float blob[FLOATS];
    fill(blob, FLOATS, seed);
    char rec[512], *out = NULL;
    snprintf(rec, sizeof rec,
             "{\"name\": %s%s%s, \"tags\": [%s%s%s], \"model\": \"%s\", \"n_tokens\": 3, "
             "\"dtype\": \"F32\", \"tenant\": \"mallory\", \"shared\": true, "
             "\"metadata\": {\"seed\": %" PRIu64 "}}",
             name ? "\"" : "", name ? name : "null", name ? "\"" : "", tag ? "\"" : "",
             tag ? tag : "", tag ? "\"" : "", MODEL, seed);
    ss_err err = ss_store_put_as(s, sc, rec, blob, sizeof blob, NULL, &out);
    if (!err && id) {
        json_t *j = json_loads(out, 0, NULL);
        snprintf(id, 36, "%s", json_string_value(json_object_get(j, "id")));
        json_decref(j);
    }
    free(out);
    return err;
}

/* The record of ref under sc, parsed (NULL when the get fails; *err gets the code). */
static json_t *get(ss_store *s, const ss_store_scope *sc, const char *ref, ss_err *err)
{
    char *text = NULL;
    ss_err e = ss_store_get_record_as(s, sc, ref, &text);
    if (err) *err = e;
    json_t *j = e ? NULL : json_loads(text, 0, NULL);
    free(text);
    return j;
}

static int64_t seed_of(json_t *rec)
{
    return json_integer_value(json_object_get(json_object_get(rec, "metadata"), "seed"));
}

/* ids listed under sc (one page of up to 1000), as a count and whether `id` is among them. */
static int listed(ss_store *s, const ss_store_scope *sc, const char *tag, const char *prefix,
                  const char *id, int *has)
{
    char *page = NULL;
    *has = 0;
    if (ss_store_list_as(s, sc, tag, prefix, 1000, NULL, &page)) return -1;
    json_t *j = json_loads(page, 0, NULL);
    free(page);
    json_t *data = json_object_get(j, "data"), *r;
    size_t i;
    json_array_foreach(data, i, r)
    {
        if (id && !strcmp(json_string_value(json_object_get(r, "id")), id)) *has = 1;
    }
    int n = (int)json_array_size(data);
    json_decref(j);
    return n;
}

/* A missing state's answer, for comparison with another tenant's: same code, same message. */
static void check_like_missing(ss_err err, const char *ref)
{
    char got[512];
    snprintf(got, sizeof got, "%s", ss_errmsg());
    char want[512];
    if (ss_store_is_id(ref))
        snprintf(want, sizeof want, "no state with id %s", ref);
    else
        snprintf(want, sizeof want, "no state named '%s'", ref);
    CHECKF(err == SS_ERR_NOT_FOUND && !strcmp(got, want), "%s: %s '%s' (want NOT_FOUND '%s')", ref,
           ss_err_name(err), got, want);
}

typedef struct stat_row {
    char tenant[80];
    uint64_t n, bytes;
} stat_row;
typedef struct stat_set {
    stat_row r[8];
    int n;
} stat_set;

static void stat_cb(void *user, const char *tenant, uint64_t n, uint64_t bytes)
{
    stat_set *s = user;
    if (s->n < 8) {
        snprintf(s->r[s->n].tenant, sizeof s->r[s->n].tenant, "%s", tenant);
        s->r[s->n].n = n;
        s->r[s->n].bytes = bytes;
        s->n++;
    }
}

static int stat_of(ss_store *s, const char *tenant, uint64_t *bytes)
{
    stat_set set = {0};
    if (ss_store_tenant_stats(s, stat_cb, &set)) return -1;
    for (int i = 0; i < set.n; i++)
        if (!strcmp(set.r[i].tenant, tenant)) {
            if (bytes) *bytes = set.r[i].bytes;
            return (int)set.r[i].n;
        }
    if (bytes) *bytes = 0;
    return 0;
}

/* Keys: the first KEY_DIM floats of the blob. */
static ss_err first4(void *user, const void *blob, size_t len, float *key)
{
    (void)user;
    if (len < KEY_DIM * sizeof(float)) return SS_ERR_INVALID;
    memcpy(key, blob, KEY_DIM * sizeof(float));
    double n2 = 0;
    for (int i = 0; i < KEY_DIM; i++) n2 += (double)key[i] * key[i];
    for (int i = 0; i < KEY_DIM; i++) key[i] = (float)(key[i] / sqrt(n2));
    return SS_OK;
}

static void test_isolation(const char *dir)
{
    ss_store *s = NULL;
    REQUIRE_OK(ss_store_open(&s, dir, NULL));
    char a_x[36], b_x[36], a_y[36], d_x[36];
    /* names are unique per tenant: both own "x", the default tenant too */
    REQUIRE_OK(put(s, &T_A, "x", "t", 1, a_x));
    REQUIRE_OK(put(s, &T_B, "x", "t", 2, b_x));
    REQUIRE_OK(put(s, &T_A, "y", NULL, 3, a_y));
    REQUIRE_OK(put(s, &T_DEF, "x", "t", 4, d_x));
    CHECK_ERR(put(s, &T_A, "x", NULL, 5, NULL), SS_ERR_EXISTS);
    CHECK_ERR(put(s, &T_B, "x", NULL, 5, NULL), SS_ERR_EXISTS);

    /* each reads its own "x"; the caller's tenant/shared fields were replaced by the store's */
    ss_err err;
    json_t *r = get(s, &T_A, "x", NULL);
    CHECK(r && seed_of(r) == 1 &&
          !strcmp(json_string_value(json_object_get(r, "tenant")), "alice") &&
          !json_object_get(r, "shared"));
    json_decref(r);
    r = get(s, &T_B, "x", NULL);
    CHECK(r && seed_of(r) == 2 && !strcmp(json_string_value(json_object_get(r, "tenant")), "bob"));
    json_decref(r);
    r = get(s, &T_DEF, "x", NULL);
    CHECK(r && seed_of(r) == 4 && !json_object_get(r, "tenant"));
    json_decref(r);
    r = get(s, NULL, "x", NULL); /* unscoped: names of the default tenant */
    CHECK(r && seed_of(r) == 4);
    json_decref(r);

    /* the other tenant's ids and names answer as missing ones, for every kind of access */
    r = get(s, &T_B, a_x, &err);
    check_like_missing(err, a_x);
    r = get(s, &T_B, "y", &err);
    check_like_missing(err, "y");
    r = get(s, &T_DEF, a_y, &err);
    check_like_missing(err, a_y);
    float buf[FLOATS];
    size_t len = 0;
    err = ss_store_get_blob_as(s, &T_B, a_x, MODEL, buf, sizeof buf, &len, NULL);
    check_like_missing(err, a_x);
    const char *refs[2] = {b_x, a_x};
    double w[2] = {0.5, 0.5};
    float out[FLOATS];
    err = ss_store_merge_f32_as(s, &T_B, refs, w, 2, MODEL, out, sizeof out, 1, NULL);
    check_like_missing(err, a_x);
    err = ss_store_delete_as(s, &T_B, a_x);
    check_like_missing(err, a_x);
    err = ss_store_delete_as(s, &T_B, "y");
    check_like_missing(err, "y");
    r = get(s, &T_A, a_x, NULL); /* still there */
    CHECK(r && seed_of(r) == 1);
    json_decref(r);

    /* listings: own states only (with the tag and prefix filters too); unscoped: all */
    int has;
    CHECK(listed(s, &T_A, NULL, NULL, a_x, &has) == 2 && has);
    CHECK(listed(s, &T_B, NULL, NULL, a_x, &has) == 1 && !has);
    CHECK(listed(s, &T_B, "t", NULL, b_x, &has) == 1 && has);
    CHECK(listed(s, &T_B, NULL, "y", NULL, &has) == 0);
    CHECK(listed(s, &T_DEF, "t", "x", d_x, &has) == 1 && has);
    CHECK(listed(s, NULL, NULL, NULL, NULL, &has) == 4);
    CHECK(listed(s, &T_ADMIN, NULL, NULL, NULL, &has) == 0); /* ops owns nothing */

    /* per-tenant totals */
    uint64_t bytes = 0;
    CHECK(stat_of(s, "alice", &bytes) == 2 && bytes == 2 * sizeof buf);
    CHECK(stat_of(s, "bob", &bytes) == 1 && bytes == sizeof buf);
    CHECK(stat_of(s, "", &bytes) == 1 && bytes == sizeof buf);

    /* sharing: admin only */
    CHECK_ERR(ss_store_share_as(s, &T_A, a_x, 1, NULL), SS_ERR_PERM);
    CHECK_ERR(ss_store_share_as(s, &T_ADMIN, "x", 1, NULL), SS_ERR_NOT_FOUND); /* ops has no x */
    char *text = NULL;
    CHECK_OK(ss_store_share_as(s, &T_ADMIN, a_x, 1, &text));
    json_t *sj = text ? json_loads(text, 0, NULL) : NULL;
    CHECK(json_is_true(json_object_get(sj, "shared")) && seed_of(sj) == 1);
    /* the key order is kept: "shared" sits before "metadata" */
    CHECK(text && strstr(text, "\"shared\":true,\"metadata\"") != NULL);
    json_decref(sj);
    free(text);
    r = get(s, &T_B, a_x, &err); /* now bob reads it by id ... */
    CHECK(r && seed_of(r) == 1);
    json_decref(r);
    r = get(s, &T_B, "x", NULL); /* ... but "x" is still his own */
    CHECK(r && seed_of(r) == 2);
    json_decref(r);
    CHECK(listed(s, &T_B, NULL, NULL, a_x, &has) == 2 && has);
    CHECK(listed(s, &T_B, "t", "x", a_x, &has) == 2 && has);
    CHECK(listed(s, &T_DEF, NULL, NULL, a_x, &has) == 2 && has);
    /* ... merges it: the sum equals one computed here */
    CHECK_OK(ss_store_merge_f32_as(s, &T_B, refs, w, 2, MODEL, out, sizeof out, 1, NULL));
    float fa[FLOATS], fb[FLOATS];
    fill(fa, FLOATS, 1);
    fill(fb, FLOATS, 2);
    int same = 1;
    for (int i = 0; i < FLOATS; i++) same &= out[i] == fmaf(0.5f, fa[i], 0.5f * fb[i]);
    CHECK(same);
    CHECK_OK(ss_store_get_blob_as(s, &T_B, a_x, MODEL, buf, sizeof buf, &len, NULL));
    CHECK(len == sizeof buf && !memcmp(buf, fa, sizeof fa));
    /* ... but cannot delete it */
    CHECK_ERR(ss_store_delete_as(s, &T_B, a_x), SS_ERR_PERM);
    /* unshare: gone again for bob */
    CHECK_OK(ss_store_share_as(s, &T_ADMIN, a_x, 0, NULL));
    r = get(s, &T_B, a_x, &err);
    check_like_missing(err, a_x);
    CHECK(listed(s, &T_B, NULL, NULL, a_x, &has) == 1 && !has);

    /* reopen: tenancy, names and sharing persist */
    CHECK_OK(ss_store_share_as(s, &T_ADMIN, a_y, 1, NULL));
    ss_store_close(s);
    REQUIRE_OK(ss_store_open(&s, dir, NULL));
    r = get(s, &T_B, "x", NULL);
    CHECK(r && seed_of(r) == 2);
    json_decref(r);
    r = get(s, &T_B, a_y, NULL);
    CHECK(r && seed_of(r) == 3 && json_is_true(json_object_get(r, "shared")));
    json_decref(r);
    r = get(s, &T_B, a_x, &err);
    check_like_missing(err, a_x);

    /* search: a tenant finds its own states and shared ones only */
    ss_store_keyer k = {.kind = "first4", .model = MODEL, .dim = KEY_DIM, .fn = first4};
    REQUIRE_OK(ss_store_keys_open(s, &k, NULL, NULL));
    float q[KEY_DIM]; /* alice's x's own key: it scores 1, the best, for whoever may see it */
    first4(NULL, fa, sizeof fa, q);
    ss_store_hit hits[8];
    int n = 0;
    ss_store_query sq = {.key = q, .dim = KEY_DIM, .k = 8, .scope = &T_B};
    CHECK_OK(ss_store_search(s, &sq, hits, &n));
    int saw_ax = 0, saw_ay = 0, saw_bx = 0;
    for (int i = 0; i < n; i++) {
        saw_ax |= !strcmp(hits[i].id, a_x);
        saw_ay |= !strcmp(hits[i].id, a_y);
        saw_bx |= !strcmp(hits[i].id, b_x);
    }
    CHECK(n == 2 && !saw_ax && saw_ay && saw_bx);
    sq.scope = &T_A;
    CHECK_OK(ss_store_search(s, &sq, hits, &n));
    CHECK(n == 2 && !strcmp(hits[0].id, a_x));              /* alice: x and y */
    CHECK_OK(ss_store_share_as(s, &T_ADMIN, a_y, 0, NULL)); /* the index follows an unshare */
    sq.scope = &T_B;
    CHECK_OK(ss_store_search(s, &sq, hits, &n));
    CHECK(n == 1 && !strcmp(hits[0].id, b_x));
    sq.scope = NULL;
    CHECK_OK(ss_store_search(s, &sq, hits, &n));
    CHECK(n == 4);

    /* admin deletes another tenant's state; the counts follow, the name is free again */
    CHECK_OK(ss_store_delete_as(s, &T_ADMIN, a_x));
    CHECK(stat_of(s, "alice", &bytes) == 1 && bytes == sizeof buf);
    CHECK_OK(put(s, &T_A, "x", NULL, 9, NULL));
    CHECK_OK(ss_store_delete_as(s, &T_A, "x"));
    CHECK_OK(ss_store_delete_as(s, &T_A, "y"));
    CHECK(stat_of(s, "alice", NULL) == 0 && stat_of(s, "bob", NULL) == 1);
    uint64_t checked = 0, bad = 9;
    CHECK_OK(ss_store_verify(s, &checked, &bad));
    CHECK(checked == 2 && bad == 0);
    ss_store_close(s);
}

/* ss_store_put_copy (migrate) keeps a record's tenant and shared flag. */
static void test_copy(const char *dir)
{
    char src_dir[300], id[36];
    snprintf(src_dir, sizeof src_dir, "%s/src", dir);
    ss_store *a = NULL, *b = NULL;
    REQUIRE_OK(ss_store_open(&a, src_dir, NULL));
    REQUIRE_OK(put(a, &T_A, "x", NULL, 1, id));
    REQUIRE_OK(ss_store_share_as(a, NULL, id, 1, NULL));
    char *rec = NULL;
    float blob[FLOATS];
    size_t len = 0;
    REQUIRE_OK(ss_store_get_blob(a, id, NULL, blob, sizeof blob, &len, &rec));
    char dst_dir[300];
    snprintf(dst_dir, sizeof dst_dir, "%s/dst", dir);
    REQUIRE_OK(ss_store_open(&b, dst_dir, NULL));
    CHECK_OK(ss_store_put_copy(b, rec, blob, len));
    char *got = NULL;
    CHECK_OK(ss_store_get_record_as(b, &T_A, "x", &got));
    CHECK(got && !strcmp(got, rec)); /* byte for byte, tenant and shared included */
    free(got);
    json_t *r = get(b, &T_B, id, NULL); /* shared: bob reads it */
    CHECK(r != NULL);
    json_decref(r);
    CHECK(stat_of(b, "alice", NULL) == 1);
    free(rec);
    ss_store_close(a);
    ss_store_close(b);
}

/* A catalog in the layout of before tenants, written through LMDB directly. */
static void write_old_catalog(const char *dir)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi blobs, records, names, tags, time_db, meta;
    REQUIRE_OK(mkdir(dir, 0700) ? SS_ERR_IO : SS_OK);
    CHECK(mdb_env_create(&env) == 0 && mdb_env_set_maxdbs(env, 16) == 0 &&
          mdb_env_set_mapsize(env, 8 << 20) == 0 && mdb_env_open(env, dir, 0, 0600) == 0 &&
          mdb_txn_begin(env, NULL, 0, &txn) == 0);
    CHECK(mdb_dbi_open(txn, "blobs", MDB_CREATE, &blobs) == 0 &&
          mdb_dbi_open(txn, "records", MDB_CREATE, &records) == 0 &&
          mdb_dbi_open(txn, "names", MDB_CREATE, &names) == 0 &&
          mdb_dbi_open(txn, "tags", MDB_CREATE, &tags) == 0 &&
          mdb_dbi_open(txn, "time", MDB_CREATE, &time_db) == 0 &&
          mdb_dbi_open(txn, "meta", MDB_CREATE, &meta) == 0);
    MDB_val k = {6, "format"}, v = {1, "1"};
    CHECK(mdb_put(txn, meta, &k, &v, 0) == 0);
    const char *ids[2] = {"st_0123456789abcdef0123456789abcdef",
                          "st_fedcba9876543210fedcba9876543210"};
    const char *nm[2] = {"x", "old"};
    unsigned char be[8];
    uint64_t total = 0;
    for (int i = 0; i < 2; i++) {
        float blob[FLOATS];
        fill(blob, FLOATS, 20 + (uint64_t)i);
        char sum[17], text[600];
        ss_store_checksum(blob, sizeof blob, sum);
        int64_t created = 1700000000000000000ll + i * 1000;
        snprintf(text, sizeof text,
                 "{\"id\":\"%s\",\"name\":\"%s\",\"tags\":[\"t\"],\"model\":\"%s\",\"n_tokens\":3,"
                 "\"created_at\":\"2023-11-14T22:13:20.00000%dZ\",\"bytes\":%zu,\"dtype\":\"F32\","
                 "\"parents\":[],\"metadata\":{\"seed\":%d},\"checksum\":\"%s\"}",
                 ids[i], nm[i], MODEL, i, sizeof blob, 20 + i, sum);
        size_t tl = strlen(text);
        unsigned char *rv = malloc(8 + 9 + tl), tkey[8 + 35];
        uint64_t inv = (uint64_t)(INT64_MAX - created);
        for (int b = 7; b >= 0; b--) tkey[b] = (unsigned char)(inv >> (8 * (7 - b)));
        memcpy(tkey + 8, ids[i], 35);
        for (int b = 0; b < 8; b++) rv[b] = (unsigned char)((uint64_t)created >> (8 * (7 - b)));
        rv[8] = 0x01;
        uint64_t h = ss_hash64(text, tl);
        for (int b = 0; b < 8; b++) rv[9 + b] = (unsigned char)(h >> (8 * (7 - b)));
        memcpy(rv + 17, text, tl);
        MDB_val key = {35, (void *)ids[i]}, val = {sizeof blob, blob};
        CHECK(mdb_put(txn, blobs, &key, &val, 0) == 0);
        val = (MDB_val){17 + tl, rv};
        CHECK(mdb_put(txn, records, &key, &val, 0) == 0);
        key = (MDB_val){strlen(nm[i]), (void *)nm[i]};
        val = (MDB_val){sizeof tkey, tkey};
        CHECK(mdb_put(txn, names, &key, &val, 0) == 0);
        key = (MDB_val){sizeof tkey, tkey};
        val = (MDB_val){strlen(nm[i]), (void *)nm[i]};
        CHECK(mdb_put(txn, time_db, &key, &val, 0) == 0);
        unsigned char tk[2 + sizeof tkey] = {'t', 0};
        memcpy(tk + 2, tkey, sizeof tkey);
        key = (MDB_val){sizeof tk, tk};
        CHECK(mdb_put(txn, tags, &key, &val, 0) == 0);
        free(rv);
        total += sizeof blob;
    }
    for (int b = 0; b < 8; b++) be[b] = (unsigned char)(total >> (8 * (7 - b)));
    k = (MDB_val){10, "blob_bytes"};
    v = (MDB_val){8, be};
    CHECK(mdb_put(txn, meta, &k, &v, 0) == 0);
    CHECK(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
}

static void test_old_catalog(const char *dir)
{
    char d[300];
    snprintf(d, sizeof d, "%s/old", dir);
    write_old_catalog(d);
    ss_store *s = NULL;
    REQUIRE_OK(ss_store_open(&s, d, NULL));
    /* every state is the default tenant's: found by name and id, listed, counted */
    json_t *r = get(s, &T_DEF, "x", NULL);
    CHECK(r && seed_of(r) == 20 && !json_object_get(r, "tenant"));
    json_decref(r);
    r = get(s, NULL, "old", NULL);
    CHECK(r && seed_of(r) == 21);
    json_decref(r);
    float buf[FLOATS], want[FLOATS];
    size_t len = 0;
    fill(want, FLOATS, 21);
    CHECK_OK(ss_store_get_blob_as(s, &T_DEF, "old", MODEL, buf, sizeof buf, &len, NULL));
    CHECK(len == sizeof buf && !memcmp(buf, want, sizeof want));
    int has;
    CHECK(listed(s, &T_DEF, "t", NULL, "st_0123456789abcdef0123456789abcdef", &has) == 2 && has);
    CHECK(listed(s, &T_DEF, NULL, "ol", "st_fedcba9876543210fedcba9876543210", &has) == 1 && has);
    CHECK(stat_of(s, "", NULL) == 2);
    /* ... and no other tenant's */
    ss_err err;
    r = get(s, &T_A, "x", &err);
    check_like_missing(err, "x");
    r = get(s, &T_A, "st_0123456789abcdef0123456789abcdef", &err);
    check_like_missing(err, "st_0123456789abcdef0123456789abcdef");
    CHECK(listed(s, &T_A, NULL, NULL, NULL, &has) == 0);
    /* new tenants' states live beside the old ones */
    char ax[36];
    CHECK_OK(put(s, &T_A, "x", NULL, 5, ax));
    r = get(s, &T_DEF, "x", NULL);
    CHECK(r && seed_of(r) == 20);
    json_decref(r);
    CHECK(stat_of(s, "", NULL) == 2 && stat_of(s, "alice", NULL) == 1);
    /* the old states delete cleanly (their index entries are in the old form) */
    CHECK_OK(ss_store_delete_as(s, &T_DEF, "x"));
    CHECK(listed(s, NULL, "t", NULL, NULL, &has) == 1);
    CHECK_ERR(put(s, &T_A, "x", NULL, 6, NULL), SS_ERR_EXISTS);
    CHECK_OK(put(s, &T_DEF, "x", NULL, 7, NULL));
    uint64_t checked = 0, bad = 9;
    CHECK_OK(ss_store_verify(s, &checked, &bad));
    CHECK(checked == 3 && bad == 0);
    ss_store_close(s);
}

static void test_prefix_roots(void)
{
    ss_prefix a, b, c, d;
    ss_prefix_root("m", NULL, &a);
    ss_prefix_root_tenant("m", NULL, NULL, &b);
    CHECK(!memcmp(&a, &b, sizeof a)); /* the default tenant's roots are the old ones */
    ss_prefix_root_tenant("m", NULL, "", &b);
    CHECK(!memcmp(&a, &b, sizeof a));
    ss_prefix_root_tenant("m", NULL, "alice", &c);
    ss_prefix_root_tenant("m", NULL, "bob", &d);
    CHECK(memcmp(&a, &c, sizeof a) && memcmp(&c, &d, sizeof c));
    ss_prefix_root_tenant("m", "*", "alice", &b);
    CHECK(memcmp(&b, &c, sizeof b));
}

int main(void)
{
    char dir[64];
    CHECK(ss_store_check_tenant("team-1.a") == SS_OK);
    CHECK(ss_store_check_tenant("") == SS_ERR_INVALID);
    CHECK(ss_store_check_tenant("a b") == SS_ERR_INVALID);
    test_prefix_roots();
    test_tmpdir(dir, sizeof dir, "tenants");
    test_isolation(dir);
    test_rm_rf(dir);
    test_tmpdir(dir, sizeof dir, "tenants");
    test_copy(dir);
    test_rm_rf(dir);
    test_tmpdir(dir, sizeof dir, "tenants");
    test_old_catalog(dir);
    test_rm_rf(dir);
    return test_done("test_tenants");
}
