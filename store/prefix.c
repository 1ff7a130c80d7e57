/*
 * prefix.c - the prefix index of prompt caching: hash chains over token prefixes and the
 * "prefix" database that maps them to states (see ss_store.h).
 *
 * Keys of the "prefix" database (MDB_DUPSORT: one key may name several states):
 *   'c' chain (16)                -> id            the state's chain from its true root
 *   'a' chain (16)                -> id            its tokens' chain from the "any start" root
 *   'n' model (8) be64 n_tokens   -> id            lengths per model, shortest first
 *   'i' id (35)                   -> c, a, model, be64 n_tokens   (to remove the above)
 * model (8) is XXH3-64 of the fingerprint, big-endian. Stores written before this database
 * existed have no entries: their states are simply never found.
 */
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

#define IKEY_LEN (1 + ID_LEN)
#define IVAL_LEN (2 * SS_PREFIX_LEN + 8 + 8)
#define NKEY_LEN (1 + 8 + 8)

static void put128(ss_prefix *out, XXH128_hash_t v)
{
    be64_put(out->h, v.high64);
    be64_put(out->h + 8, v.low64);
}

void ss_prefix_root(const char *model, const char *parent, ss_prefix *out)
{
    ss_prefix_root_tenant(model, parent, NULL, out);
}

void ss_prefix_root_tenant(const char *model, const char *parent, const char *tenant,
                           ss_prefix *out)
{
    char buf[600];
    /* The default tenant's roots are the ones written before tenants existed; another tenant's
     * text ends in "|tenant=" + its name (tenant names cannot hold '|'). */
    int n = snprintf(buf, sizeof buf, "statesoup-prefix-1|%s|%s|%s%s%.64s", model ? model : "",
                     !parent ? "zero" : strcmp(parent, "*") ? "state" : "any",
                     parent && strcmp(parent, "*") ? parent : "",
                     tenant && *tenant ? "|tenant=" : "", tenant && *tenant ? tenant : "");
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof buf) n = sizeof buf - 1;
    put128(out, XXH3_128bits(buf, (size_t)n));
}

void ss_prefix_step(ss_prefix *h, int32_t token)
{
    unsigned char buf[SS_PREFIX_LEN + 4];
    memcpy(buf, h->h, SS_PREFIX_LEN);
    uint32_t t = (uint32_t)token;
    for (int i = 0; i < 4; i++) buf[SS_PREFIX_LEN + i] = (unsigned char)(t >> (8 * i));
    put128(h, XXH3_128bits(buf, sizeof buf));
}

static void model_key(const char *model, unsigned char *out)
{
    be64_put(out, XXH3_64bits(model, strlen(model)));
}

static void nkey(unsigned char *k, const unsigned char *model8, uint64_t n)
{
    k[0] = 'n';
    memcpy(k + 1, model8, 8);
    be64_put(k + 9, n);
}

ss_err store_prefix_put(ss_store *s, wtx *w, const char *id, const ss_store_prefix_entry *pe)
{
    unsigned char k[1 + SS_PREFIX_LEN], ik[IKEY_LEN], iv[IVAL_LEN], nk[NKEY_LEN];
    MDB_val val = {ID_LEN, (void *)id};
    if (!s->has_prefix) return SS_OK;
    k[0] = 'c';
    memcpy(k + 1, pe->chain.h, SS_PREFIX_LEN);
    if (store_w_put(w, s->prefix, k, sizeof k, &val, 0)) goto fail;
    k[0] = 'a';
    memcpy(k + 1, pe->any.h, SS_PREFIX_LEN);
    val = (MDB_val){ID_LEN, (void *)id};
    if (store_w_put(w, s->prefix, k, sizeof k, &val, 0)) goto fail;
    memcpy(iv, pe->chain.h, SS_PREFIX_LEN);
    memcpy(iv + SS_PREFIX_LEN, pe->any.h, SS_PREFIX_LEN);
    model_key(pe->model ? pe->model : "", iv + 2 * SS_PREFIX_LEN);
    be64_put(iv + 2 * SS_PREFIX_LEN + 8, (uint64_t)pe->n_tokens);
    nkey(nk, iv + 2 * SS_PREFIX_LEN, (uint64_t)pe->n_tokens);
    val = (MDB_val){ID_LEN, (void *)id};
    if (store_w_put(w, s->prefix, nk, sizeof nk, &val, 0)) goto fail;
    ik[0] = 'i';
    memcpy(ik + 1, id, ID_LEN);
    val = (MDB_val){IVAL_LEN, iv};
    if (store_w_put(w, s->prefix, ik, sizeof ik, &val, 0)) goto fail;
    return SS_OK;
fail:
    return store_mdb_fail(w->rc, "store %s: indexing the prefix of state %s", s->dir, id);
}

/* Delete the one (key, id) pair; absent is fine. */
static int del_pair(wtx *w, MDB_dbi db, const unsigned char *k, size_t klen, const char *id)
{
    MDB_val key = {klen, (void *)k}, val = {ID_LEN, (void *)id};
    int rc = mdb_del(w->txn, db, &key, &val);
    if (rc && rc != MDB_NOTFOUND) {
        w->rc = rc;
        return -1;
    }
    return 0;
}

ss_err store_prefix_del(ss_store *s, wtx *w, const char *id)
{
    unsigned char ik[IKEY_LEN], k[1 + SS_PREFIX_LEN], nk[NKEY_LEN], iv[IVAL_LEN];
    if (!s->has_prefix) return SS_OK;
    ik[0] = 'i';
    memcpy(ik + 1, id, ID_LEN);
    MDB_val key = {sizeof ik, ik}, val;
    int rc = mdb_get(w->txn, s->prefix, &key, &val);
    if (rc == MDB_NOTFOUND) return SS_OK;
    if (rc) return store_mdb_fail(rc, "store %s: prefix index of %s", s->dir, id);
    if (val.mv_size != IVAL_LEN) return SS_OK; /* not ours to interpret: leave it */
    memcpy(iv, val.mv_data, IVAL_LEN);
    k[0] = 'c';
    memcpy(k + 1, iv, SS_PREFIX_LEN);
    if (del_pair(w, s->prefix, k, sizeof k, id)) goto fail;
    k[0] = 'a';
    memcpy(k + 1, iv + SS_PREFIX_LEN, SS_PREFIX_LEN);
    if (del_pair(w, s->prefix, k, sizeof k, id)) goto fail;
    nkey(nk, iv + 2 * SS_PREFIX_LEN, be64_get(iv + 2 * SS_PREFIX_LEN + 8));
    if (del_pair(w, s->prefix, nk, sizeof nk, id)) goto fail;
    if (store_w_del(w, s->prefix, ik, sizeof ik)) goto fail;
    return SS_OK;
fail:
    return store_mdb_fail(w->rc, "store %s: removing the prefix index of %s", s->dir, id);
}

ss_err ss_store_prefix_of(ss_store *s, const char *id, ss_prefix *chain, int *found)
{
    *found = 0;
    if (!s->has_prefix || !ss_store_is_id(id)) return SS_OK;
    MDB_txn *txn = NULL;
    ss_err err = store_txn_begin(s, MDB_RDONLY, &txn);
    if (err) return err;
    unsigned char ik[IKEY_LEN];
    ik[0] = 'i';
    memcpy(ik + 1, id, ID_LEN);
    MDB_val key = {sizeof ik, ik}, val;
    int rc = mdb_get(txn, s->prefix, &key, &val);
    if (rc == 0 && val.mv_size == IVAL_LEN) {
        memcpy(chain->h, val.mv_data, SS_PREFIX_LEN);
        *found = 1;
    } else if (rc && rc != MDB_NOTFOUND) {
        err = store_mdb_fail(rc, "store %s: prefix index of %s", s->dir, id);
    }
    store_txn_end(s, txn);
    return err;
}

ss_err ss_store_prefix_find(ss_store *s, const ss_prefix *chains, int n, int any, int *pos,
                            char *id)
{
    if (!s->has_prefix || n <= 0) return ss_fail(SS_ERR_NOT_FOUND, "no stored prefix");
    MDB_txn *txn = NULL;
    ss_err err = store_txn_begin(s, MDB_RDONLY, &txn);
    if (err) return err;
    err = ss_fail(SS_ERR_NOT_FOUND, "no stored prefix");
    unsigned char k[1 + SS_PREFIX_LEN];
    k[0] = any ? 'a' : 'c';
    for (int i = n - 1; i >= 0; i--) {
        memcpy(k + 1, chains[i].h, SS_PREFIX_LEN);
        MDB_val key = {sizeof k, k}, val;
        int rc = mdb_get(txn, s->prefix, &key, &val);
        if (rc == MDB_NOTFOUND) continue;
        if (rc) {
            err = store_mdb_fail(rc, "store %s: prefix lookup", s->dir);
            break;
        }
        if (val.mv_size != ID_LEN) continue;
        memcpy(id, val.mv_data, ID_LEN);
        id[ID_LEN] = '\0';
        *pos = i + 1;
        err = SS_OK;
        break;
    }
    store_txn_end(s, txn);
    return err;
}

ss_err ss_store_prefix_shortest(ss_store *s, const char *model, int64_t *n_tokens)
{
    *n_tokens = -1;
    if (!s->has_prefix) return SS_OK;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    ss_err err = store_txn_begin(s, MDB_RDONLY, &txn);
    if (err) return err;
    unsigned char nk[NKEY_LEN];
    model_key(model, nk + 1);
    nkey(nk, nk + 1, 0);
    int rc = mdb_cursor_open(txn, s->prefix, &cur);
    MDB_val key = {sizeof nk, nk}, val;
    if (!rc) rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    if (rc == 0 && key.mv_size == NKEY_LEN && !memcmp(key.mv_data, nk, 9))
        *n_tokens = (int64_t)be64_get((const unsigned char *)key.mv_data + 9);
    else if (rc && rc != MDB_NOTFOUND)
        err = store_mdb_fail(rc, "store %s: prefix lengths", s->dir);
    mdb_cursor_close(cur);
    store_txn_end(s, txn);
    return err;
}
