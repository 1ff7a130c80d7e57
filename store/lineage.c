/*
 * lineage.c - the children index: which stored states list a given state as a parent (the
 * sources of a merge, the `from` of a state made from it, the start of a generation saved with
 * save_state). Records only name their parents; this index answers the other direction without
 * reading every record, so the console's lineage graph and GET /v1/states/{state}/children stay
 * fast with any number of states.
 *
 * LMDB database "children" (MDB_DUPSORT): key = parent id (35 bytes), values = the children's
 * time keys (be64 inverted created_ns + id, TKEY_LEN bytes), so each parent's children come out
 * newest first, like listings. Entries are written in the child's put transaction and removed in
 * its delete transaction, so the index is exactly as durable as the records. A store written
 * before the index existed is indexed once when it is first opened for writing (meta key
 * "children_index"); a read-only open of such a store has no index (SS_ERR_UNSUPPORTED).
 * A deleted parent keeps its entries (nothing can ask for them: the state is gone) until its
 * children are deleted.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MARK_KEY "children_index"

/* Parent ids of a record (borrowed from it), skipping anything that is not an id. */
static int parent_id(const json_t *p, const char **id)
{
    *id = json_string_value(json_object_get(p, "id"));
    return *id && strlen(*id) == ID_LEN;
}

ss_err store_lineage_put(ss_store *s, wtx *w, const json_t *rec, const unsigned char *tkey)
{
    if (!s->has_children) return SS_OK;
    size_t i;
    json_t *p;
    json_array_foreach (json_object_get(rec, "parents"), i, p) {
        const char *pid;
        if (!parent_id(p, &pid)) continue;
        MDB_val key = {ID_LEN, (void *)pid}, val = {TKEY_LEN, (void *)tkey};
        int rc = mdb_put(w->txn, s->children, &key, &val, MDB_NODUPDATA);
        if (rc == MDB_KEYEXIST) continue; /* a parent listed twice (a merge of x with x) */
        if (rc) {
            w->rc = rc;
            return store_mdb_fail(rc, "store %s: children index", s->dir);
        }
    }
    return SS_OK;
}

ss_err store_lineage_del(ss_store *s, wtx *w, const json_t *rec, const unsigned char *tkey)
{
    if (!s->has_children) return SS_OK;
    MDB_val key, val;
    int rc = 0;
    if (rec) {
        size_t i;
        json_t *p;
        json_array_foreach (json_object_get(rec, "parents"), i, p) {
            const char *pid;
            if (!parent_id(p, &pid)) continue;
            key = (MDB_val){ID_LEN, (void *)pid};
            val = (MDB_val){TKEY_LEN, (void *)tkey};
            rc = mdb_del(w->txn, s->children, &key, &val);
            if (rc && rc != MDB_NOTFOUND) goto fail;
        }
        return SS_OK;
    }
    /* A record we cannot read: find its entries by their value. */
    MDB_cursor *cur = NULL;
    if ((rc = mdb_cursor_open(w->txn, s->children, &cur))) goto fail;
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        if (val.mv_size == TKEY_LEN && memcmp(val.mv_data, tkey, TKEY_LEN) == 0 &&
            (rc = mdb_cursor_del(cur, 0)))
            break;
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND) return SS_OK;
fail:
    w->rc = rc;
    return store_mdb_fail(rc, "store %s: children index", s->dir);
}

/* Index every stored record (the one-time pass over a store from before the index). */
static ss_err backfill_fn(ss_store *s, wtx *w, void *ctx)
{
    (void)ctx;
    MDB_cursor *cur = NULL;
    MDB_val key, val;
    ss_err err = SS_OK;
    int rc = mdb_drop(w->txn, s->children, 0); /* from scratch on a retry after growing */
    if (!rc) rc = mdb_cursor_open(w->txn, s->records, &cur);
    if (rc) {
        w->rc = rc;
        return store_mdb_fail(rc, "store %s: indexing children", s->dir);
    }
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0 && !err;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        if (key.mv_size != ID_LEN || val.mv_size <= HDR_LEN) continue;
        char id[ID_LEN + 1];
        memcpy(id, key.mv_data, ID_LEN);
        id[ID_LEN] = '\0';
        json_t *rec = NULL;
        if (store_load_record(id, &val, &rec) != SS_OK) continue; /* damaged: verify names it */
        unsigned char tkey[TKEY_LEN];
        make_tkey(tkey, (int64_t)be64_get(val.mv_data), id);
        err = store_lineage_put(s, w, rec, tkey);
        json_decref(rec);
    }
    mdb_cursor_close(cur);
    if (err) return err;
    if (rc != MDB_NOTFOUND) {
        w->rc = rc;
        return store_mdb_fail(rc, "store %s: indexing children", s->dir);
    }
    val = (MDB_val){1, "1"};
    if (store_w_put(w, s->meta, MARK_KEY, strlen(MARK_KEY), &val, 0))
        return store_mdb_fail(w->rc, "store %s: indexing children", s->dir);
    return SS_OK;
}

ss_err store_lineage_open(ss_store *s)
{
    MDB_txn *txn = NULL;
    ss_err err = store_txn_begin(s, s->read_only ? MDB_RDONLY : 0, &txn);
    if (err) return err;
    int rc = mdb_dbi_open(txn, "children", (s->read_only ? 0 : MDB_CREATE) | MDB_DUPSORT,
                          &s->children);
    int marked = 0;
    if (rc == 0) {
        MDB_val key = {strlen(MARK_KEY), MARK_KEY}, val;
        marked = mdb_get(txn, s->meta, &key, &val) == 0;
    }
    if (rc && !(rc == MDB_NOTFOUND && s->read_only)) {
        store_txn_end(s, txn);
        return store_mdb_fail(rc, "store %s: opening database 'children'", s->dir);
    }
    int opened = rc == 0;
    rc = mdb_txn_commit(txn); /* makes the handle usable by later transactions (a read txn too) */
    pthread_rwlock_unlock(&s->map_lock);
    if (rc) return store_mdb_fail(rc, "store %s: opening database 'children'", s->dir);
    if (s->read_only) {
        s->has_children = opened && marked;
        return SS_OK;
    }
    s->has_children = 1;
    if (marked) return SS_OK;
    return store_write_txn(s, 16 * MIB, backfill_fn, NULL);
}

ss_err ss_store_children(ss_store *s, const char *id, char **ids, int *n)
{
    *ids = NULL;
    *n = 0;
    if (!s || !id) return ss_fail(SS_ERR_INVALID, "store: NULL argument");
    if (s->remote)
        return ss_fail(SS_ERR_UNSUPPORTED, "the children index is not kept with the remote tier "
                                           "(--remote)");
    if (!s->has_children)
        return ss_fail(SS_ERR_UNSUPPORTED, "store %s has no children index yet: open it once "
                                           "for writing (start statesoupd on it)", s->dir);
    if (strlen(id) != ID_LEN) return SS_OK; /* not an id: nothing lists it as a parent */
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    char *out = NULL;
    int cnt = 0, cap = 0;
    ss_err err = store_txn_begin(s, MDB_RDONLY, &txn);
    if (err) return err;
    int rc = mdb_cursor_open(txn, s->children, &cur);
    MDB_val key = {ID_LEN, (void *)id}, val;
    if (!rc) rc = mdb_cursor_get(cur, &key, &val, MDB_SET_KEY);
    for (; rc == 0; rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT_DUP)) {
        if (val.mv_size != TKEY_LEN) continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            char *p = realloc(out, (size_t)cap * (ID_LEN + 1));
            if (!p) {
                err = ss_fail(SS_ERR_NOMEM, "out of memory listing children");
                goto out;
            }
            out = p;
        }
        memcpy(out + (size_t)cnt * (ID_LEN + 1), (const char *)val.mv_data + 8, ID_LEN);
        out[(size_t)cnt * (ID_LEN + 1) + ID_LEN] = '\0';
        cnt++;
    }
    if (rc != MDB_NOTFOUND) err = store_mdb_fail(rc, "store %s: children index", s->dir);
out:
    if (cur) mdb_cursor_close(cur);
    store_txn_end(s, txn);
    if (err) {
        free(out);
        return err;
    }
    *ids = out;
    *n = cnt;
    return SS_OK;
}
