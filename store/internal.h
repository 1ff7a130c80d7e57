/*
 * internal.h - shared by the files of store/ only: the on-disk layout, the ss_store struct, the
 * transaction helpers (env.c) and the record readers (catalog.c) the chunked reads use. LMDB and
 * jansson types appear here, which is why it is not ss_store.h.
 *
 * Files: env.c (LMDB environment, transactions, map growth, open/close, health), catalog.c
 * (records, put, get, delete, list, stats, verify), chunks.c (views, piece-by-piece reads, the
 * merge, blob copies), record.c (the record schema), hash*.c (checksum kernels), remote.c (the
 * shared tier on Redis Cluster: public calls are routed there by REMOTE_ROUTE when it is on) and
 * redis_cluster.c (its cluster client).
 *
 * On-disk layout (named databases in one environment; keys and values are raw bytes, no NULs):
 *   blobs    id (35 bytes, "st_" + 32 hex)        -> blob bytes
 *   records  id                                   -> be64 created_ns, 0x01, be64 XXH3-64 of the
 *                                                    text, then the record JSON text. Records
 *                                                    written before the checksum existed have the
 *                                                    text right after created_ns (it starts with
 *                                                    '{', never 0x01): they are still read, and
 *                                                    checked by parsing instead
 *   names    name key                             -> time key of the named state
 *   time     time key                             -> index value of the state
 *   tags     tag, 0x00, time key                  -> index value of the state
 *   meta     "format" -> "1";  "blob_bytes" -> be64 sum of blob sizes;
 *            "tenant:" tenant -> be64 states, be64 blob bytes (tenants other than the default)
 *   chunks   id                                   -> be64 XXH3-64 of each CHUNK_BYTES piece of
 *                                                    the blob, in order (stores written before
 *                                                    this database existed have no entries: their
 *                                                    blobs are verified whole)
 *   prefix   see prefix.c (MDB_DUPSORT)            the prefix index of prompt caching
 *   keys     id                                   -> the state's retrieval key (keys.c)
 * name key = the name (the default tenant: as before tenants existed), or tenant, 0x00, name.
 * index value = the name (empty when unnamed) for a state of the default tenant that is not
 * shared (as before tenants existed), else 0x00, flags (0x01 = shared), tenant, 0x00, name.
 * Names never contain 0x00, so the forms cannot be confused, and a listing filters by tenant and
 * name prefix from the index alone.
 * time key = be64(INT64_MAX - created_ns) followed by the id: a forward walk is newest first, and
 * the id makes it unique. Index values carry the name so a prefix filter needs no record reads.
 * created_ns is strictly increasing across puts (a clock that steps back is clamped), so "newest
 * first" is also "last stored first".
 *
 * Locking: see env.c.
 */
#ifndef SS_STORE_INTERNAL_H
#define SS_STORE_INTERNAL_H

#include <jansson.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "record.h"
#include "ss_store.h"

#define MIB              ((size_t)1 << 20)
#define DEFAULT_MAP_SIZE (64 * MIB)
#define MAX_READERS      512
#define ID_LEN           SS_REC_ID_LEN
#define TKEY_LEN         (8 + ID_LEN)   /* time key: be64 inverted created_ns + id */
#define CURSOR_LEN       (2 * TKEY_LEN) /* hex of the time key */
#define HDR_LEN          8              /* records value header: be64 created_ns */
#define REC_SUM_MARK     0x01           /* after HDR_LEN: a record checksum follows */
#define REC_SUM_LEN      (1 + 8)        /* the mark and be64 XXH3-64 of the text */
#define LIST_DEFAULT     100
#define LIST_MAX         1000
#define GROW_ATTEMPTS    32
/* verify() ends its read transaction after this much blob data, so resizes are not held off. */
#define VERIFY_CHUNK_BYTES (256 * MIB)
/* Blobs are also checksummed per piece of this size, so that a merge can verify and combine each
 * piece while it is in cache, on several threads (ss_store_view_chunks). */
#define CHUNK_BYTES        (1 * MIB)
#define MAX_VIEW_THREADS   16
/* ss_store_get_blob copies blobs this large on two threads (with per-piece checksums). */
#define GET_THREADED_BYTES (4 * MIB)

struct ss_store {
    MDB_env *env;
    MDB_dbi blobs, records, names, tags, time, meta;
    MDB_dbi chunks; /* per-chunk checksums of each blob (id -> be64 hashes) */
    int has_chunks; /* the chunks database exists (always, except read-only on an old store) */
    MDB_dbi prefix; /* the prefix index of prompt caching (prefix.c) */
    int has_prefix; /* it exists (always, except read-only on an old store) */
    MDB_dbi keydb;  /* retrieval keys (keys.c) */
    int has_keys;   /* it exists (always, except read-only on an old store) */
    MDB_dbi children; /* parent id -> children's time keys (lineage.c) */
    int has_children; /* it exists and is complete (always, except read-only on an old store) */
    struct store_keys *keys; /* the keyer and the in-memory index; NULL: none set */
    pthread_rwlock_t map_lock; /* shared: any live txn; exclusive: mdb_env_set_mapsize */
    pthread_mutex_t write_mu;  /* one write txn at a time; taken before map_lock */
    int locks_ready;           /* map_lock and write_mu initialised (for close after a failure) */
    int read_only;
    int broken;          /* a remap failed and LMDB has no map: under map_lock */
    size_t max_map_size; /* 0 = unlimited */
    size_t page_size;    /* LMDB's page size (the file's, which may differ from the OS's) */
    char *dir;
    char *data_path;     /* dir/data.mdb, for the health check */
    struct ss_remote *remote; /* the Redis Cluster tier (remote.c), NULL without --remote */
    atomic_ullong corrupt_reads; /* reads that met a damaged record or blob (stats) */
};

/* ---- tenants (catalog.c) ---- */

/* The scope of the public call running on this thread (set by the ..._as functions for the
 * duration of the call; NULL: unscoped). resolve() and the listing obey it. */
extern _Thread_local const ss_store_scope *store_scope;
#define SCOPED_CALL(sc, call)                                                                      \
    do {                                                                                           \
        const ss_store_scope *saved_scope_ = store_scope;                                          \
        store_scope = (sc);                                                                        \
        ss_err scoped_err_ = (call);                                                               \
        store_scope = saved_scope_;                                                                \
        return scoped_err_;                                                                        \
    } while (0)
#define NKEY_MAX (SS_STORE_TENANT_MAX + 1 + SS_REC_NAME_MAX) /* a name key */
#define IVAL_MAX (2 + SS_STORE_TENANT_MAX + 1 + SS_REC_NAME_MAX) /* an index value */
/* The name key of `name` in `tenant`'s names ("" = default); out holds NKEY_MAX. */
size_t store_name_key(unsigned char *out, const char *tenant, const char *name);
/* May a call under sc reach the state whose record text is `text` (its tenant and shared
 * fields)? *own (may be NULL) = it is sc's tenant's. sc NULL: always (own 1). */
int store_text_reachable(const char *text, const ss_store_scope *sc, int *own);
/* The tenant ("" = default) of scope sc (NULL: unscoped = the default tenant). */
static inline const char *scope_tenant(const ss_store_scope *sc)
{
    return sc && sc->tenant ? sc->tenant : "";
}

/* Count err when it says the data read was damaged; returns err (public read functions). */
static inline ss_err store_count_corrupt(ss_store *s, ss_err err)
{
    if (err == SS_ERR_CORRUPT && s) atomic_fetch_add(&s->corrupt_reads, 1);
    return err;
}

/* The store whose view callback is running on this thread (re-entry would deadlock the rwlock). */
extern _Thread_local const ss_store *store_viewing;

static inline void be64_put(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static inline uint64_t be64_get(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

static inline void make_tkey(unsigned char *key, int64_t created_ns, const char *id)
{
    be64_put(key, (uint64_t)(INT64_MAX - created_ns));
    memcpy(key + 8, id, ID_LEN);
}

static inline int64_t tkey_created_ns(const unsigned char *key)
{
    return INT64_MAX - (int64_t)be64_get(key);
}

static inline size_t round_up(size_t v, size_t to)
{
    return v % to ? v + (to - v % to) : v;
}

/* ---- env.c: transactions and the map ---- */

/* Translate an LMDB/errno code: ss_fail with "<context>: <LMDB's text>"; returns the ss_err. */
__attribute__((format(printf, 2, 3))) ss_err store_mdb_fail(int rc, const char *fmt, ...);
/* SS_ERR_INTERNAL: a store call from inside a view callback. */
ss_err store_reentry_fail(const ss_store *s);
/*
 * Begin a transaction (flags: MDB_RDONLY or 0) with map_lock held shared; end a read one with
 * store_txn_end (NULL is a no-op). SS_ERR_IO (unusable after a failed remap, LMDB panic),
 * SS_ERR_INTERNAL (re-entry), or an LMDB error as store_mdb_fail translates it.
 */
ss_err store_txn_begin(ss_store *s, unsigned flags, MDB_txn **txn);
void store_txn_end(ss_store *s, MDB_txn *txn);

/* A write transaction in progress; rc keeps the LMDB code of the last failed call. */
typedef struct wtx {
    MDB_txn *txn;
    int rc;
} wtx;
typedef ss_err (*write_fn)(ss_store *s, wtx *w, void *ctx);
/* mdb_put / mdb_del (a missing key is not an error) recording a failure's code in w->rc. */
int store_w_put(wtx *w, MDB_dbi dbi, const void *k, size_t klen, MDB_val *val, unsigned flags);
int store_w_del(wtx *w, MDB_dbi dbi, const void *k, size_t klen);
/*
 * Run fn in a write transaction and commit it (durably); on MDB_MAP_FULL grow the map and run fn
 * again from scratch. `need` estimates the bytes added. fn's error, SS_ERR_PERM (read-only),
 * SS_ERR_FULL (disk or map ceiling), SS_ERR_IO, SS_ERR_INTERNAL (re-entry).
 */
ss_err store_write_txn(ss_store *s, size_t need, write_fn fn, void *ctx);

/* SS_ERR_UNAVAILABLE when the open data file is no longer DIR/data.mdb (see ss_store_check). */
ss_err store_check_file(ss_store *s);

/* ---- prefix.c: the prefix index, kept in the put's and the delete's transaction ---- */
ss_err store_prefix_put(ss_store *s, wtx *w, const char *id, const ss_store_prefix_entry *pe);
ss_err store_prefix_del(ss_store *s, wtx *w, const char *id);

/* ---- keys.c: retrieval keys, kept in the put's and the delete's transaction ---- */
/* *key (malloc'd, free it) = the key of a state about to be stored, or NULL (no keyer, another
 * model, a blob the keyer does not read). Before the transaction. SS_ERR_NOMEM. */
ss_err store_keys_prepare(ss_store *s, const json_t *rec, const void *blob, size_t len,
                          float **key);
/* In the put's transaction (key NULL: nothing). */
ss_err store_keys_write(ss_store *s, wtx *w, const char *id, const float *key);
/* In the delete's transaction. */
ss_err store_keys_del(ss_store *s, wtx *w, const char *id);
/* After the commit: the in-memory index follows. */
void store_keys_added(ss_store *s, const char *id, const json_t *rec, int64_t created,
                      const float *key);
void store_keys_removed(ss_store *s, const char *id);
/* After a share/unshare commit: the in-memory row follows. */
void store_keys_shared(ss_store *s, const char *id, int shared);
/* At close. */
void store_keys_free(ss_store *s);

/* ---- lineage.c: the children index, kept in the put's and the delete's transaction ---- */
/* Open (and on a writable store from before the index, build) it; after open_dbs. */
ss_err store_lineage_open(ss_store *s);
/* In the put's transaction: rec's parents get the child tkey. */
ss_err store_lineage_put(ss_store *s, wtx *w, const json_t *rec, const unsigned char *tkey);
/* In the delete's transaction; rec NULL (unreadable record): found by scanning. */
ss_err store_lineage_del(ss_store *s, wtx *w, const json_t *rec, const unsigned char *tkey);

/* ---- catalog.c: reading records ---- */

/*
 * State `ref` found for reading: *id and *rec (pointing into txn), *record parsed (the caller
 * decrefs it, on error too) and of the expected model, *blob present with the recorded size.
 * SS_ERR_NOT_FOUND, SS_ERR_CORRUPT, SS_ERR_MISMATCH, or an LMDB error.
 */
ss_err store_find_blob(ss_store *s, MDB_txn *txn, const char *ref, const char *expect_model,
                       char *id, MDB_val *rec, json_t **record, MDB_val *blob);
/* Is hash (or the hash of blob) the checksum the record gives? SS_ERR_CORRUPT naming the state. */
ss_err store_check_hash(const char *id, const json_t *record, uint64_t hash);
ss_err store_check_sum(const char *id, const json_t *record, const MDB_val *blob);
/* The stored record value rec of state id, verified and parsed (*out: decref it). SS_ERR_CORRUPT.
 */
ss_err store_load_record(const char *id, const MDB_val *rec, json_t **out);
/* The verified record text as a malloc'd string (*out). SS_ERR_CORRUPT, SS_ERR_NOMEM. */
ss_err store_copy_record(const char *id, const MDB_val *rec, char **out);

/* ---- remote.c: the Redis Cluster tier ---- */

/* Set while remote.c calls the local (LMDB) functions on this thread: no routing then. */
extern _Thread_local int store_local_only;
/* In a public function: with a remote tier, hand the call to remote.c. */
#define REMOTE_ROUTE(s, call)                                                                      \
    do {                                                                                           \
        if ((s) && (s)->remote && !store_local_only) return (call);                                \
    } while (0)

/* ss_store_put with the id and creation time given (a state of the remote tier cached here). */
ss_err store_put_as(ss_store *s, const char *record_json, const void *blob, size_t blob_len,
                    const ss_store_prefix_entry *pe, const char *id, int64_t created_ns,
                    char **record_out);

/* For ss_store_put_copy: id and created_ns of a complete record that matches its blob. */
ss_err store_copy_identity(const char *record_json, const void *blob, size_t blob_len, char *id,
                           int64_t *created_ns);
ss_err remote_put_copy(ss_store *s, const char *record_json, const void *blob, size_t blob_len);
ss_err remote_open(ss_store *s, const ss_store_params *p);
void remote_close(ss_store *s); /* NULL remote: no-op */
ss_err remote_check(ss_store *s);
void remote_stats(ss_store *s, ss_store_stats *out);
/* Each tenant's states and bytes in the shared catalog (ss_store_tenant_stats). */
ss_err remote_tenant_stats(ss_store *s, ss_store_tenant_fn fn, void *user);
/* pe: the prompt-cache index entry (store/prefix.c), kept in this replica's local tier only. */
ss_err remote_put(ss_store *s, const char *record_json, const void *blob, size_t blob_len,
                  const ss_store_prefix_entry *pe, char **record_out);
ss_err remote_get_record(ss_store *s, const char *ref, char **record_json);
ss_err remote_get_blob(ss_store *s, const char *ref, const char *expect_model, void *dst,
                       size_t cap, size_t *len, char **record_json);
ss_err remote_view(ss_store *s, const char *const *refs, int n, const char *expect_model,
                   ss_store_view_fn fn, void *user);
ss_err remote_view_chunks(ss_store *s, const char *const *refs, int n, const char *expect_model,
                          int n_threads, ss_store_chunk_fn fn, void *user);
ss_err remote_merge_f32(ss_store *s, const char *const *refs, const double *w, int n,
                        const char *expect_model, float *out, size_t out_bytes, int n_threads,
                        ss_store_source *src);
ss_err remote_delete(ss_store *s, const char *ref);
ss_err remote_share(ss_store *s, const char *ref, int shared, char **record_out);
/* after: the decoded cursor (time key) when has_cursor. */
ss_err remote_list(ss_store *s, const char *tag, const char *prefix, int limit,
                   const unsigned char *after, int has_cursor, char **page_json);

#endif
