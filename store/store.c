/*
 * store.c - the state catalog on LMDB: environment and map management, put/get/view/delete,
 * listing, stats and verification.
 *
 * Why LMDB: readers never block (a 30 MB blob is served straight from the map), one writer commits
 * durably with fsync, and a crash can never leave half a record. What LMDB leaves to us is the map
 * size; we grow it on demand (doubling) instead of reserving the disk up front.
 *
 * On-disk layout (named databases in one environment; keys and values are raw bytes, no NULs):
 *   blobs    id (35 bytes, "st_" + 32 hex)        -> blob bytes
 *   records  id                                   -> be64 created_ns, 0x01, be64 XXH3-64 of the
 *                                                    text, then the record JSON text. Records
 *                                                    written before the checksum existed have the
 *                                                    text right after created_ns (it starts with
 *                                                    '{', never 0x01): they are still read, and
 *                                                    checked by parsing instead
 *   names    name                                 -> time key of the named state
 *   time     time key                             -> name of the state (empty when unnamed)
 *   tags     tag, 0x00, time key                  -> name of the state (empty when unnamed)
 *   meta     "format" -> "1";  "blob_bytes" -> be64 sum of blob sizes
 *   chunks   id                                   -> be64 XXH3-64 of each CHUNK_BYTES piece of
 *                                                    the blob, in order (stores written before
 *                                                    this database existed have no entries: their
 *                                                    blobs are verified whole)
 * time key = be64(INT64_MAX - created_ns) followed by the id: a forward walk is newest first, and
 * the id makes it unique. Index values carry the name so a prefix filter needs no record reads.
 * created_ns is strictly increasing across puts (a clock that steps back is clamped), so "newest
 * first" is also "last stored first".
 *
 * Locking: write_mu admits one writer at a time; map_lock (a rwlock) is held shared by every
 * transaction of this process and exclusively while the map is resized, because
 * mdb_env_set_mapsize() requires that no transaction of the process is live. The order is always
 * write_mu, then map_lock. The rwlock prefers writers so a resize is not starved by a stream of
 * readers, which is also why no code path takes it shared twice (and why a view callback may not
 * call back into the store).
 */
#include "ss_store.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <xxhash.h>

#include "hash.h"
#include "record.h"
#include "ss_util.h"

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
    pthread_rwlock_t map_lock; /* shared: any live txn; exclusive: mdb_env_set_mapsize */
    pthread_mutex_t write_mu;  /* one write txn at a time; taken before map_lock */
    int locks_ready;           /* map_lock and write_mu initialised (for close after a failure) */
    int read_only;
    int broken;          /* a remap failed and LMDB has no map: under map_lock */
    size_t max_map_size; /* 0 = unlimited */
    size_t page_size;    /* LMDB's page size (the file's, which may differ from the OS's) */
    char *dir;
    char *data_path;     /* dir/data.mdb, for the health check */
};

/* The store whose view callback is running on this thread (re-entry would deadlock the rwlock). */
static _Thread_local const ss_store *viewing;

/* ---- small helpers --------------------------------------------------------------------------- */

static void be64_put(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t be64_get(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

static void make_tkey(unsigned char *key, int64_t created_ns, const char *id)
{
    be64_put(key, (uint64_t)(INT64_MAX - created_ns));
    memcpy(key + 8, id, ID_LEN);
}

static int64_t tkey_created_ns(const unsigned char *key)
{
    return INT64_MAX - (int64_t)be64_get(key);
}

static size_t round_up(size_t v, size_t to)
{
    return v % to ? v + (to - v % to) : v;
}

/* Translate an LMDB/errno code: ss_fail with "<context>: <LMDB's text>". */
__attribute__((format(printf, 2, 3))) static ss_err mdb_fail(int rc, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);

    ss_err code;
    switch (rc) {
    case MDB_NOTFOUND:
        code = SS_ERR_NOT_FOUND;
        break;
    case MDB_KEYEXIST:
        code = SS_ERR_EXISTS;
        break;
    case MDB_MAP_FULL:
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        code = SS_ERR_FULL;
        break;
    case MDB_READERS_FULL:
        code = SS_ERR_BUSY;
        break;
    case MDB_TXN_FULL:
    case MDB_BAD_VALSIZE:
        code = SS_ERR_TOO_LARGE;
        break;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
        code = SS_ERR_CORRUPT;
        break;
    case MDB_VERSION_MISMATCH:
        code = SS_ERR_UNSUPPORTED;
        break;
    case ENOMEM:
        code = SS_ERR_NOMEM;
        break;
    case ENOENT:
        code = SS_ERR_NOT_FOUND;
        break;
    case EACCES:
    case EPERM:
    case EROFS:
        code = SS_ERR_PERM;
        break;
    default:
        code = SS_ERR_IO;
        break;
    }
    return ss_fail(code, "%s: %s", what, mdb_strerror(rc));
}

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

/* ---- transactions and the map ---------------------------------------------------------------- */

static ss_err reentry_fail(const ss_store *s)
{
    return ss_fail(SS_ERR_INTERNAL,
                   "store %s: called from inside an ss_store_view callback (not allowed)", s->dir);
}

/*
 * Another process wrote beyond our map (MDB_MAP_RESIZED): adopt the size it recorded. Needs the
 * exclusive lock because LMDB remaps under every transaction of this process.
 */
static ss_err adopt_map_size(ss_store *s)
{
    ss_err err = SS_OK;
    pthread_rwlock_wrlock(&s->map_lock);
    int rc = mdb_env_set_mapsize(s->env, 0);
    if (rc) {
        /* LMDB unmapped before it failed to map again: nothing can be read any more. */
        s->broken = 1;
        err = mdb_fail(rc, "store %s: adopting the grown map", s->dir);
    }
    pthread_rwlock_unlock(&s->map_lock);
    return err;
}

/*
 * Begin a transaction with map_lock held shared; end it with txn_end() (read) or commit/abort
 * plus unlock (write). Handles MDB_MAP_RESIZED (another process grew the map) and a reader table
 * full of stale slots (dead processes) by retrying.
 */
static ss_err txn_begin(ss_store *s, unsigned flags, MDB_txn **txn)
{
    if (viewing == s) return reentry_fail(s);
    for (int attempt = 0;; attempt++) {
        pthread_rwlock_rdlock(&s->map_lock);
        if (s->broken) {
            pthread_rwlock_unlock(&s->map_lock);
            return ss_fail(SS_ERR_IO, "store %s: unusable after a failed remap; reopen it", s->dir);
        }
        int rc = mdb_txn_begin(s->env, NULL, flags, txn);
        if (rc == 0) return SS_OK;
        pthread_rwlock_unlock(&s->map_lock);
        if (rc == MDB_MAP_RESIZED && attempt < 100) {
            ss_err err = adopt_map_size(s);
            if (err) return err;
            continue;
        }
        if (rc == MDB_READERS_FULL && attempt == 0) {
            int dead = 0;
            mdb_reader_check(s->env, &dead);
            if (dead > 0) continue;
        }
        if (rc == MDB_PANIC) {
            return ss_fail(SS_ERR_IO, "store %s: LMDB hit a fatal I/O error earlier; reopen it",
                           s->dir);
        }
        return mdb_fail(rc, "store %s: begin transaction", s->dir);
    }
}

/* End a read transaction begun by txn_begin (no-op for NULL). */
static void txn_end(ss_store *s, MDB_txn *txn)
{
    if (!txn) return;
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&s->map_lock);
}

/*
 * MDB_MAP_FULL: make the map at least twice as large, and large enough for `need` more bytes on
 * top of what is used (a blob larger than the whole map must fit after one step). Capped at
 * max_map_size: SS_ERR_FULL once the cap is reached. Called with write_mu held, no txn live.
 */
static ss_err grow(ss_store *s, size_t need)
{
    ss_err err = SS_OK;
    pthread_rwlock_wrlock(&s->map_lock);
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    size_t cur = info.me_mapsize;
    size_t used = ((size_t)info.me_last_pgno + 1) * s->page_size;
    size_t want = cur > SIZE_MAX / 2 ? SIZE_MAX : cur * 2;
    /* Overflow pages of a big value are contiguous: leave room for them plus index pages. */
    size_t slack = need / 8 + MIB;
    if (need < SIZE_MAX / 4 && used + need + slack > want) want = used + need + slack;
    want = round_up(want, MIB);
    if (s->max_map_size && want > s->max_map_size) want = s->max_map_size;
    if (want <= cur) {
        err = ss_fail(SS_ERR_FULL, "store %s is full: the map has reached its limit of %zu bytes",
                      s->dir, s->max_map_size ? s->max_map_size : cur);
        goto out;
    }
    int rc = mdb_env_set_mapsize(s->env, want);
    if (rc) {
        /* LMDB unmapped the old map before mapping failed; it has no map now. */
        s->broken = 1;
        err = mdb_fail(rc, "store %s: growing the map from %zu to %zu bytes (reopen the store)",
                       s->dir, cur, want);
        goto out;
    }
out:
    pthread_rwlock_unlock(&s->map_lock);
    return err;
}

/*
 * A commit failed with an errno. ENOSPC/EDQUOT/EFBIG say "full" directly; LMDB reports a short
 * write as EIO, so an EIO on a nearly full filesystem is a full disk too.
 */
static ss_err commit_fail(ss_store *s, int rc, size_t need)
{
    if (rc == EIO) {
        struct statvfs v;
        if (statvfs(s->dir, &v) == 0 && (uint64_t)v.f_bavail * v.f_frsize < need + 4 * MIB) {
            return ss_fail(SS_ERR_FULL,
                           "store %s: disk full (write failed, %" PRIu64 " bytes free, %zu needed)",
                           s->dir, (uint64_t)v.f_bavail * v.f_frsize, need);
        }
    }
    return mdb_fail(rc, "store %s: commit", s->dir);
}

/* A write transaction in progress; rc keeps the LMDB code of the last failed call. */
typedef struct wtx {
    MDB_txn *txn;
    int rc;
} wtx;

typedef ss_err (*write_fn)(ss_store *s, wtx *w, void *ctx);

static int w_put(wtx *w, MDB_dbi dbi, const void *k, size_t klen, MDB_val *val, unsigned flags)
{
    MDB_val key = {klen, (void *)k};
    int rc = mdb_put(w->txn, dbi, &key, val, flags);
    if (rc) w->rc = rc;
    return rc;
}

/* Delete key (all of it); a missing key is not an error. */
static int w_del(wtx *w, MDB_dbi dbi, const void *k, size_t klen)
{
    MDB_val key = {klen, (void *)k};
    int rc = mdb_del(w->txn, dbi, &key, NULL);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) w->rc = rc;
    return rc;
}

/*
 * Run fn in a write transaction and commit it; on MDB_MAP_FULL (from fn or from the commit) grow
 * the map and run fn again from scratch, so fn must not keep state across attempts other than
 * what it rebuilds. `need` estimates the bytes the transaction adds.
 */
static ss_err write_txn(ss_store *s, size_t need, write_fn fn, void *ctx)
{
    if (s->read_only) return ss_fail(SS_ERR_PERM, "store %s is open read-only", s->dir);
    if (viewing == s) return reentry_fail(s);
    ss_err err = SS_OK;
    pthread_mutex_lock(&s->write_mu);
    for (int attempt = 0;; attempt++) {
        wtx w = {NULL, 0};
        err = txn_begin(s, 0, &w.txn);
        if (err) break;
        err = fn(s, &w, ctx);
        if (err == SS_OK) {
            int rc = mdb_txn_commit(w.txn); /* frees the txn, also on failure */
            pthread_rwlock_unlock(&s->map_lock);
            if (rc == 0) break;
            w.rc = rc;
            if (rc != MDB_MAP_FULL) {
                err = commit_fail(s, rc, need);
                break;
            }
        } else {
            mdb_txn_abort(w.txn);
            pthread_rwlock_unlock(&s->map_lock);
            if (w.rc != MDB_MAP_FULL) break;
        }
        if (attempt >= GROW_ATTEMPTS) {
            err = ss_fail(SS_ERR_FULL, "store %s: still full after growing the map %d times",
                          s->dir, attempt);
            break;
        }
        err = grow(s, need);
        if (err) break;
    }
    pthread_mutex_unlock(&s->write_mu);
    return err;
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
        key = (MDB_val){n, (void *)ref};
        rc = mdb_get(txn, s->names, &key, &val);
        if (rc == MDB_NOTFOUND) return ss_fail(SS_ERR_NOT_FOUND, "no state named '%s'", ref);
        if (rc) return mdb_fail(rc, "store %s: looking up name '%s'", s->dir, ref);
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
    if (rc) return mdb_fail(rc, "store %s: reading state %s", s->dir, id);
    if (rec->mv_size <= HDR_LEN) {
        return ss_fail(SS_ERR_CORRUPT, "store %s: record of state %s is truncated", s->dir, id);
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

/* Copy the stored record text (verified) into a malloc'd NUL-terminated string. */
static ss_err copy_record(const char *id, const MDB_val *rec, char **out)
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
    if (rc) return mdb_fail(rc, "store %s: reading the blob of state %s", s->dir, id);
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
static ss_err find_blob(ss_store *s, MDB_txn *txn, const char *ref, const char *expect_model,
                        char *id, MDB_val *rec, json_t **record, MDB_val *blob)
{
    ss_err err;
    if ((err = resolve(s, txn, ref, id, rec))) return err;
    if ((err = load_record(id, rec, record))) return err;
    if ((err = check_model(id, *record, expect_model))) return err;
    return get_sized_blob(s, txn, id, *record, blob);
}

/* Is hash the checksum the blob's record gives? SS_ERR_CORRUPT naming the state if not. */
static ss_err check_hash(const char *id, const json_t *record, uint64_t hash)
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
static ss_err check_sum(const char *id, const json_t *record, const MDB_val *blob)
{
    return check_hash(id, record, ss_hash64(blob->mv_data, blob->mv_size));
}

/* ---- open / close ---------------------------------------------------------------------------- */

ss_store_params ss_store_default_params(void)
{
    ss_store_params p = {0, DEFAULT_MAP_SIZE, 0};
    return p;
}

/* mkdir -p with mode 0700 for what it creates. */
static ss_err make_dirs(const char *dir)
{
    ss_err err = SS_OK;
    char *path = strdup(dir);
    if (!path) return ss_fail(SS_ERR_NOMEM, "store: out of memory");
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) {
            err = ss_fail(errno == EACCES || errno == EROFS ? SS_ERR_PERM : SS_ERR_IO,
                          "store: cannot create directory %s: %s", path, strerror(errno));
            goto out;
        }
        *p = c;
        if (c == '\0') break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        err = ss_fail(SS_ERR_IO, "store: %s is not a directory", dir);
    }
out:
    free(path);
    return err;
}

static ss_err open_dbs(ss_store *s)
{
    ss_err err = SS_OK;
    MDB_txn *txn = NULL;
    unsigned dflags = s->read_only ? 0 : MDB_CREATE;
    static const char *const names[] = {"blobs", "records", "names", "tags", "time", "meta"};
    MDB_dbi *dbis[] = {&s->blobs, &s->records, &s->names, &s->tags, &s->time, &s->meta};

    err = txn_begin(s, s->read_only ? MDB_RDONLY : 0, &txn);
    if (err) return err;
    int crc = mdb_dbi_open(txn, "chunks", dflags, &s->chunks);
    if (crc && !(crc == MDB_NOTFOUND && s->read_only)) {
        err = mdb_fail(crc, "store %s: opening database 'chunks'", s->dir);
        goto out;
    }
    s->has_chunks = crc == 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int rc = mdb_dbi_open(txn, names[i], dflags, dbis[i]);
        if (rc == MDB_NOTFOUND) {
            err = ss_fail(SS_ERR_FORMAT, "%s is not a statesoup store (no '%s' database)", s->dir,
                          names[i]);
            goto out;
        }
        if (rc) {
            err = mdb_fail(rc, "store %s: opening database '%s'", s->dir, names[i]);
            goto out;
        }
    }
    MDB_val key = {6, "format"}, val;
    int rc = mdb_get(txn, s->meta, &key, &val);
    if (rc == MDB_NOTFOUND && !s->read_only) {
        val = (MDB_val){1, "1"};
        rc = mdb_put(txn, s->meta, &key, &val, 0);
    } else if (rc == MDB_NOTFOUND) {
        err = ss_fail(SS_ERR_FORMAT, "%s is not a statesoup store (no format version)", s->dir);
        goto out;
    } else if (rc == 0 && (val.mv_size != 1 || *(const char *)val.mv_data != '1')) {
        err = ss_fail(SS_ERR_UNSUPPORTED, "store %s: unknown format version '%.*s'", s->dir,
                      (int)(val.mv_size < 16 ? val.mv_size : 16), (const char *)val.mv_data);
        goto out;
    }
    if (rc) {
        err = mdb_fail(rc, "store %s: reading the format version", s->dir);
        goto out;
    }
    /* Committing (a read txn too) makes the handles usable by later transactions. */
    rc = mdb_txn_commit(txn);
    txn = NULL;
    pthread_rwlock_unlock(&s->map_lock);
    if (rc) err = mdb_fail(rc, "store %s: creating the databases", s->dir);
out:
    txn_end(s, txn);
    return err;
}

/*
 * The data file must hold every page the newest meta page claims. A file cut short (a bad copy, a
 * full disk during a restore, a truncation by hand) maps without complaint, and the first read of
 * a page past its end is a SIGBUS that kills the process with no message. mdb_env_open reads the
 * meta pages with read(), not through the map, so this check runs before any page is touched.
 * SS_ERR_CORRUPT with what to do; SS_ERR_IO if the file cannot be examined.
 */
static ss_err check_file_covers_pages(ss_store *s, const char *data_path)
{
    MDB_envinfo info;
    struct stat st;
    if (mdb_env_info(s->env, &info)) return ss_fail(SS_ERR_IO, "store %s: env info", s->dir);
    if (stat(data_path, &st) != 0)
        return ss_fail(SS_ERR_IO, "store %s: cannot examine %s: %s", s->dir, data_path,
                       strerror(errno));
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * s->page_size;
    if ((uint64_t)st.st_size < need) {
        return ss_fail(SS_ERR_CORRUPT,
                       "store %s: %s is truncated: it holds %" PRIu64 " bytes but its pages reach "
                       "%" PRIu64 " bytes (%" PRIu64 " missing). Nothing was read or changed. "
                       "Restore data.mdb from a backup (or from the copy it was cut from), or move "
                       "the directory aside and start with an empty store",
                       s->dir, data_path, (uint64_t)st.st_size, need, need - (uint64_t)st.st_size);
    }
    return SS_OK;
}

/*
 * Open (creating when missing and not read-only, with mode 0700 for new directories) the store in
 * directory `dir`. params NULL = defaults. *out is set only on success; close it with
 * ss_store_close(). The map starts at max(initial_map_size, size of the data file) and grows on
 * demand. Read-only: SS_ERR_NOT_FOUND if there is no store in `dir`; works beside a writing
 * daemon (adopts the grown map). Do not open the same directory twice in one process (LMDB rule).
 * Not thread-safe against a concurrent close of the same store; otherwise no shared state.
 */
ss_err ss_store_open(ss_store **out, const char *dir, const ss_store_params *params)
{
    ss_err err = SS_OK;
    ss_store *s = NULL;
    char *data_path = NULL;
    ss_store_params p = params ? *params : ss_store_default_params();

    if (!out || !dir || !*dir) return ss_fail(SS_ERR_INVALID, "store: no directory given");
    s = calloc(1, sizeof *s);
    if (!s) return ss_fail(SS_ERR_NOMEM, "store: out of memory");
    s->dir = strdup(dir);
    data_path = malloc(strlen(dir) + 16);
    if (!s->dir || !data_path) {
        err = ss_fail(SS_ERR_NOMEM, "store: out of memory");
        goto out;
    }
    sprintf(data_path, "%s/data.mdb", dir);

    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
#ifdef __GLIBC__
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    int rc = pthread_rwlock_init(&s->map_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (rc || pthread_mutex_init(&s->write_mu, NULL)) {
        if (!rc) pthread_rwlock_destroy(&s->map_lock);
        err = ss_fail(SS_ERR_NOMEM, "store: cannot create locks");
        goto out;
    }
    s->locks_ready = 1;
    s->read_only = p.read_only != 0;
    long ps = sysconf(_SC_PAGESIZE);
    size_t os_page = ps > 0 ? (size_t)ps : 4096;
    s->max_map_size = p.max_map_size ? p.max_map_size / os_page * os_page : 0;
    if (s->max_map_size && s->max_map_size < 16 * os_page) s->max_map_size = 16 * os_page;

    if (!s->read_only) {
        err = make_dirs(dir);
        if (err) goto out;
    }
    struct stat st;
    size_t file_size = 0;
    if (stat(data_path, &st) == 0) {
        file_size = (size_t)st.st_size;
    } else if (s->read_only) {
        err = ss_fail(errno == ENOENT ? SS_ERR_NOT_FOUND : SS_ERR_IO, "no store in %s: %s", dir,
                      strerror(errno));
        goto out;
    }
    size_t map = p.initial_map_size ? p.initial_map_size : DEFAULT_MAP_SIZE;
    if (s->max_map_size && map > s->max_map_size) map = s->max_map_size;
    if (file_size > map) map = file_size;
    map = round_up(map, os_page);

    rc = mdb_env_create(&s->env);
    if (rc) {
        s->env = NULL;
        err = mdb_fail(rc, "store %s: creating the environment", dir);
        goto out;
    }
    if ((rc = mdb_env_set_maxdbs(s->env, 8)) ||
        (rc = mdb_env_set_maxreaders(s->env, MAX_READERS)) ||
        (rc = mdb_env_set_mapsize(s->env, map))) {
        err = mdb_fail(rc, "store %s: configuring the environment", dir);
        goto out;
    }
    unsigned flags = MDB_NOTLS | (s->read_only ? MDB_RDONLY : 0);
    rc = mdb_env_open(s->env, dir, flags, 0600);
    if (rc) {
        err = mdb_fail(rc, "store %s: opening", dir);
        goto out;
    }
    if (!s->read_only) mdb_reader_check(s->env, NULL); /* slots of crashed readers */
    MDB_stat est;
    mdb_env_stat(s->env, &est);
    s->page_size = est.ms_psize;
    if ((err = check_file_covers_pages(s, data_path))) goto out;

    err = open_dbs(s);
    if (err) goto out;
    s->data_path = data_path;
    data_path = NULL;
    *out = s;
    s = NULL;
out:
    free(data_path);
    ss_store_close(s);
    return err;
}

/*
 * Close the store and free it. NULL is a no-op. No other thread may be using `s` (all calls must
 * have returned). Everything acknowledged is already on disk; close loses nothing.
 */
void ss_store_close(ss_store *s)
{
    if (!s) return;
    if (s->env) mdb_env_close(s->env);
    if (s->locks_ready) {
        pthread_rwlock_destroy(&s->map_lock);
        pthread_mutex_destroy(&s->write_mu);
    }
    free(s->dir);
    free(s->data_path);
    free(s);
}

/*
 * The data file open in LMDB must still be the one at dir/data.mdb (same device and inode): a
 * deleted or replaced directory keeps the old file open, and writes into it are acknowledged and
 * then lost. SS_ERR_UNAVAILABLE with the reason.
 */
static ss_err check_file(ss_store *s)
{
    struct stat on_disk, open_file;
    mdb_filehandle_t fd;
    if (mdb_env_get_fd(s->env, &fd) || fstat(fd, &open_file) != 0)
        return ss_fail(SS_ERR_UNAVAILABLE, "store %s: cannot examine the open data file", s->dir);
    if (stat(s->data_path, &on_disk) != 0) {
        return ss_fail(SS_ERR_UNAVAILABLE,
                       "store %s: the data file %s is gone (%s): states saved now would be lost; "
                       "restore the directory or restart the daemon",
                       s->dir, s->data_path, strerror(errno));
    }
    if (on_disk.st_dev != open_file.st_dev || on_disk.st_ino != open_file.st_ino) {
        return ss_fail(SS_ERR_UNAVAILABLE,
                       "store %s: %s was replaced by another file since the daemon opened it; "
                       "restart the daemon",
                       s->dir, s->data_path);
    }
    return SS_OK;
}

/*
 * Is the store still usable? check_file, and the map must have room (below its configured
 * maximum, or able to grow). Cheap (a stat, an fstat, env info): callable per request. SS_OK, or
 * SS_ERR_UNAVAILABLE with the reason in ss_errmsg(). Thread-safe.
 */
ss_err ss_store_check(ss_store *s)
{
    if (!s) return ss_fail(SS_ERR_INVALID, "store: NULL store");
    ss_err err = check_file(s);
    if (err) return err;
    if (s->max_map_size) {
        MDB_envinfo info;
        mdb_env_info(s->env, &info);
        uint64_t used = ((uint64_t)info.me_last_pgno + 1) * s->page_size;
        if (used >= s->max_map_size - s->max_map_size / 20) { /* 95 % of the ceiling */
            return ss_fail(SS_ERR_UNAVAILABLE,
                           "store %s: the map is nearly full (%" PRIu64 " of at most %zu bytes); "
                           "delete states or raise the limit",
                           s->dir, used, s->max_map_size);
        }
    }
    return SS_OK;
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
        return mdb_fail(rc, "store %s: reading totals", s->dir);
    unsigned char b[8];
    be64_put(b, total + delta);
    val = (MDB_val){8, b};
    if (w_put(w, s->meta, "blob_bytes", 10, &val, 0)) {
        return mdb_fail(w->rc, "store %s: updating totals", s->dir);
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
    size_t name_len = name ? strlen(name) : 0;
    MDB_val key, val;
    int rc;

    free(p->text); /* from a previous attempt that hit MDB_MAP_FULL */
    p->text = NULL;

    if (name) {
        key = (MDB_val){name_len, (void *)name};
        rc = mdb_get(w->txn, s->names, &key, &val);
        if (rc == 0) {
            char other[ID_LEN + 1] = "?";
            if (val.mv_size == TKEY_LEN) {
                memcpy(other, (const char *)val.mv_data + 8, ID_LEN);
                other[ID_LEN] = '\0';
            }
            return ss_fail(SS_ERR_EXISTS, "name '%s' is already taken by state %s", name, other);
        }
        if (rc != MDB_NOTFOUND) return mdb_fail(rc, "store %s: looking up name", s->dir);
    }

    /* Strictly after the newest state, so the time index order is the order of the puts. */
    int64_t created = ss_now_ns();
    rc = mdb_cursor_open(w->txn, s->time, &cur);
    if (rc) return mdb_fail(rc, "store %s: time index", s->dir);
    rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    mdb_cursor_close(cur);
    if (rc == 0 && key.mv_size == TKEY_LEN) {
        int64_t newest = tkey_created_ns(key.mv_data);
        if (created <= newest) created = newest + 1;
    } else if (rc && rc != MDB_NOTFOUND) {
        return mdb_fail(rc, "store %s: time index", s->dir);
    }

    unsigned char rnd[16];
    char id[ID_LEN + 1] = "st_";
    if ((err = ss_random_bytes(rnd, sizeof rnd))) return err;
    ss_hex(rnd, sizeof rnd, id + 3);
    err = ss_rec_finish(p->rec, id, created, p->blob_len, p->checksum, &p->text, &p->text_len);
    if (err) return err;
    make_tkey(tkey, created, id);

    val = (MDB_val){p->blob_len, (void *)p->blob};
    if (w_put(w, s->blobs, id, ID_LEN, &val, MDB_NOOVERWRITE)) goto fail;
    val = (MDB_val){8 * p->n_chunks, p->chunk_sums};
    if (w_put(w, s->chunks, id, ID_LEN, &val, MDB_NOOVERWRITE)) goto fail;
    val = (MDB_val){HDR_LEN + REC_SUM_LEN + p->text_len, NULL};
    if (w_put(w, s->records, id, ID_LEN, &val, MDB_NOOVERWRITE | MDB_RESERVE)) goto fail;
    unsigned char *rv = val.mv_data;
    be64_put(rv, (uint64_t)created);
    rv[HDR_LEN] = REC_SUM_MARK;
    be64_put(rv + HDR_LEN + 1, ss_hash64(p->text, p->text_len));
    memcpy(rv + HDR_LEN + REC_SUM_LEN, p->text, p->text_len);
    if (name) {
        val = (MDB_val){TKEY_LEN, tkey};
        if (w_put(w, s->names, name, name_len, &val, MDB_NOOVERWRITE)) goto fail;
    }
    val = (MDB_val){name_len, (void *)(name ? name : "")};
    if (w_put(w, s->time, tkey, TKEY_LEN, &val, MDB_NOOVERWRITE)) goto fail;
    size_t i;
    json_t *t;
    json_array_foreach (json_object_get(p->rec, "tags"), i, t) {
        unsigned char k[SS_REC_TAG_MAX + 1 + TKEY_LEN];
        size_t tl = json_string_length(t);
        memcpy(k, json_string_value(t), tl);
        k[tl] = 0;
        memcpy(k + tl + 1, tkey, TKEY_LEN);
        val = (MDB_val){name_len, (void *)(name ? name : "")};
        if (w_put(w, s->tags, k, tl + 1 + TKEY_LEN, &val, MDB_NOOVERWRITE)) goto fail;
    }
    return add_blob_bytes(s, w, p->blob_len);
fail:
    if (w->rc == MDB_KEYEXIST) {
        return ss_fail(SS_ERR_INTERNAL, "store %s: generated id %s already exists", s->dir, id);
    }
    return mdb_fail(w->rc, "store %s: storing state %s (%zu bytes)", s->dir, id, p->blob_len);
}

/*
 * Store a new state: validate record_json, assign id/created_at/bytes/checksum and commit blob,
 * record and index entries in one durable transaction (returns after fsync). The blob is copied;
 * the caller keeps ownership of both inputs. *record_out (may be NULL) receives the complete
 * record text (free() it), set only on success. The checksum is computed before the write lock is
 * taken, so concurrent puts only serialise on the copy into the map. Thread-safe.
 */
ss_err ss_store_put(ss_store *s, const char *record_json, const void *blob, size_t blob_len,
                    char **record_out)
{
    ss_err err = SS_OK;
    put_ctx p = {0};

    if (!s) return ss_fail(SS_ERR_INVALID, "store: NULL store");
    if (s->read_only) return ss_fail(SS_ERR_PERM, "store %s is open read-only", s->dir);
    if (blob_len == 0 || !blob) return ss_fail(SS_ERR_INVALID, "state blob is empty");
    /* A write into a file that was deleted under us would be acknowledged and lost. */
    if ((err = check_file(s))) return err;
    if (blob_len > 0xffffffffu) {
        return ss_fail(SS_ERR_TOO_LARGE, "state blob of %zu bytes exceeds the 4 GiB limit",
                       blob_len);
    }
    err = ss_rec_parse(record_json, &p.rec);
    if (err) return err;
    p.blob = blob;
    p.blob_len = blob_len;
    if ((err = checksums(blob, blob_len, p.checksum, &p.chunk_sums, &p.n_chunks))) goto out;
    /* Growth estimate: the blob, the record (about as long as the caller's) and index pages. */
    err = write_txn(s, blob_len + strlen(record_json) + 64 * 1024, put_fn, &p);
    if (err == SS_OK && record_out) {
        *record_out = p.text;
        p.text = NULL;
    }
out:
    free(p.chunk_sums);
    free(p.text);
    json_decref(p.rec);
    return err;
}

/* ---- get ------------------------------------------------------------------------------------- */

/* Record of state `ref` (id or name) as JSON text (free() it), set only on success. Thread-safe. */
ss_err ss_store_get_record(ss_store *s, const char *ref, char **record_json)
{
    ss_err err = SS_OK;
    MDB_txn *txn = NULL;
    char id[ID_LEN + 1];
    MDB_val rec;

    if (!s || !record_json) return ss_fail(SS_ERR_INVALID, "store: NULL argument");
    err = txn_begin(s, MDB_RDONLY, &txn);
    if (err) return err;
    err = resolve(s, txn, ref, id, &rec);
    if (err) goto out;
    err = copy_record(id, &rec, record_json);
out:
    txn_end(s, txn);
    return err;
}

/*
 * The bytes of blob 16-byte aligned in *out: in the map when they are, else in a copy made here
 * (*copy, free it).
 */
static ss_err aligned_blob(const MDB_val *blob, void **copy, const void **out)
{
    *out = blob->mv_data;
    if ((uintptr_t)blob->mv_data % 16 == 0) return SS_OK;
    *copy = aligned_alloc(16, round_up(blob->mv_size, 16));
    if (!*copy)
        return ss_fail(SS_ERR_NOMEM, "store view: cannot allocate %zu bytes", blob->mv_size);
    memcpy(*copy, blob->mv_data, blob->mv_size);
    *out = *copy;
    return SS_OK;
}

/*
 * Check every ref as ss_store_get_blob does (existence, model, checksum), then call
 * fn(user, blobs, lens, n) inside one read transaction. Every blob passed to fn is 16-byte
 * aligned: most point straight into the map (LMDB puts large values on fresh pages); small values
 * that LMDB stores unaligned are copied to a temporary aligned buffer first. The pointers are
 * valid only during the call and must not be written through. fn runs holding a read transaction
 * and the store's shared map lock: keep it short (a merge at memory speed), do not call into this
 * store from it (SS_ERR_INTERNAL) and do not wait there for other users of the store, since a map
 * resize waits for fn and later readers wait for the resize. Returns fn's return, or the first
 * check's error (fn is then not called). Thread-safe.
 */
ss_err ss_store_view(ss_store *s, const char *const *refs, int n, const char *expect_model,
                     ss_store_view_fn fn, void *user)
{
    ss_err err = SS_OK;
    MDB_txn *txn = NULL;
    const void **ptrs = NULL;
    size_t *lens = NULL;
    void **copies = NULL;
    json_t *record = NULL;

    if (!s || !refs || !fn || n < 1) {
        return ss_fail(SS_ERR_INVALID, "store view: no states given");
    }
    ptrs = calloc((size_t)n, sizeof *ptrs);
    lens = calloc((size_t)n, sizeof *lens);
    copies = calloc((size_t)n, sizeof *copies);
    if (!ptrs || !lens || !copies) {
        err = ss_fail(SS_ERR_NOMEM, "store view: out of memory");
        goto out;
    }
    err = txn_begin(s, MDB_RDONLY, &txn);
    if (err) goto out;
    for (int i = 0; i < n; i++) {
        char id[ID_LEN + 1];
        MDB_val rec, blob;
        if ((err = find_blob(s, txn, refs[i], expect_model, id, &rec, &record, &blob))) goto out;
        if ((err = check_sum(id, record, &blob))) goto out;
        json_decref(record);
        record = NULL;
        lens[i] = blob.mv_size;
        if ((err = aligned_blob(&blob, &copies[i], &ptrs[i]))) goto out;
    }
    viewing = s;
    err = fn(user, ptrs, lens, n);
    viewing = NULL;
out:
    txn_end(s, txn);
    json_decref(record);
    for (int i = 0; copies && i < n; i++) free(copies[i]);
    free(copies);
    free(lens);
    free(ptrs);
    return err;
}

/* ---- chunked reads (verify and use each piece while it is in cache) ------------------------- */

/*
 * What a chunked read does with each piece: hand it to a callback once verified (CHUNK_FN), or
 * copy it (CHUNK_COPY, one blob) or sum it with weights (CHUNK_SUM) with kernels that compute the
 * checksum in the same pass, compared right after.
 */
typedef enum { CHUNK_FN, CHUNK_COPY, CHUNK_SUM } chunk_mode;

typedef struct chunk_job {
    chunk_mode mode;
    int n;
    size_t len;               /* bytes of every blob */
    size_t n_chunks;
    const unsigned char *const *blobs;
    const unsigned char *const *sums; /* [n] per-chunk checksums, NULL when the blob has none */
    const char *const *ids;
    ss_store_chunk_fn fn;     /* CHUNK_FN */
    void *user;
    void *dst;                /* CHUNK_COPY: len bytes; CHUNK_SUM: len / 4 floats */
    const float *w;           /* CHUNK_SUM: [n] weights */
    ss_store_source *src;     /* [n] filled with what was resolved, or NULL */
    atomic_size_t next;       /* next chunk to take */
    atomic_int failed;        /* set once: stop taking chunks */
    pthread_mutex_t mu;
    ss_err err;
    char msg[512];
} chunk_job;

static void chunk_job_fail(chunk_job *j, ss_err err, const char *msg)
{
    pthread_mutex_lock(&j->mu);
    if (!j->err) {
        j->err = err;
        snprintf(j->msg, sizeof j->msg, "%s", msg);
    }
    pthread_mutex_unlock(&j->mu);
    atomic_store(&j->failed, 1);
}

/* Piece c of every blob: use it as j->mode says; 0, or -1 after recording a failure. */
static int chunk_one(chunk_job *j, size_t c)
{
    const void *ptrs[SS_STORE_VIEW_MAX];
    uint64_t got[SS_STORE_VIEW_MAX];
    size_t off = c * CHUNK_BYTES, cl = j->len - off < CHUNK_BYTES ? j->len - off : CHUNK_BYTES;
    int finite = 1;
    for (int i = 0; i < j->n; i++) ptrs[i] = j->blobs[i] + off;
    switch (j->mode) {
    case CHUNK_FN:
        for (int i = 0; i < j->n; i++) got[i] = j->sums[i] ? ss_hash64(ptrs[i], cl) : 0;
        break;
    case CHUNK_COPY:
        ss_hash64_copy((unsigned char *)j->dst + off, ptrs[0], cl, &got[0]);
        break;
    case CHUNK_SUM:
        finite = ss_hash64_sum_f32((float *)j->dst + off / sizeof(float),
                                   (const float *const *)ptrs, j->w, j->n, cl, got);
        break;
    }
    for (int i = 0; i < j->n; i++) {
        if (j->sums[i] && got[i] != be64_get(j->sums[i] + 8 * c)) {
            char msg[256];
            snprintf(msg, sizeof msg, "state %s: checksum mismatch in bytes [%zu, %zu)", j->ids[i],
                     off, off + cl);
            chunk_job_fail(j, SS_ERR_CORRUPT, msg);
            return -1;
        }
    }
    if (!finite) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "the merge is not finite: bytes [%zu, %zu) of the result hold infinite or NaN "
                 "values (are the weights too large?); nothing was stored",
                 off, off + cl);
        chunk_job_fail(j, SS_ERR_INVALID, msg);
        return -1;
    }
    if (j->mode == CHUNK_FN) {
        ss_err err = j->fn(j->user, ptrs, off, cl, j->n);
        if (err) {
            chunk_job_fail(j, err, ss_errmsg());
            return -1;
        }
    }
    return 0;
}

static void *chunk_worker(void *arg)
{
    chunk_job *j = arg;
    while (!atomic_load(&j->failed)) {
        size_t c = atomic_fetch_add(&j->next, 1);
        if (c >= j->n_chunks || chunk_one(j, c)) break;
    }
    return NULL;
}

/* Run j on up to n_threads threads (this one included), inside the caller's read transaction. */
static ss_err chunk_job_run(ss_store *s, chunk_job *j, int n_threads)
{
    pthread_t th[MAX_VIEW_THREADS];
    int n_th = 0;
    j->n_chunks = (j->len + CHUNK_BYTES - 1) / CHUNK_BYTES;
    if (n_threads > MAX_VIEW_THREADS) n_threads = MAX_VIEW_THREADS;
    if ((size_t)n_threads > j->n_chunks) n_threads = (int)j->n_chunks;
    pthread_mutex_init(&j->mu, NULL);
    viewing = s;
    for (int t = 1; t < n_threads; t++)
        if (pthread_create(&th[n_th], NULL, chunk_worker, j) == 0) n_th++;
    chunk_worker(j);
    for (int t = 0; t < n_th; t++) pthread_join(th[t], NULL);
    viewing = NULL;
    pthread_mutex_destroy(&j->mu);
    return j->err ? ss_fail(j->err, "%s", j->msg) : SS_OK;
}

/* The per-piece checksums of blob id (len bytes) in *sums, or NULL when it has none (a store
 * written before they existed: the caller then verifies the blob whole). */
static ss_err piece_sums(ss_store *s, MDB_txn *txn, const char *id, size_t len,
                         const unsigned char **sums)
{
    MDB_val key = {ID_LEN, (void *)id}, sv;
    *sums = NULL;
    int rc = s->has_chunks ? mdb_get(txn, s->chunks, &key, &sv) : MDB_NOTFOUND;
    if (rc && rc != MDB_NOTFOUND)
        return mdb_fail(rc, "store %s: reading checksums of %s", s->dir, id);
    if (rc == 0 && sv.mv_size == 8 * ((len + CHUNK_BYTES - 1) / CHUNK_BYTES)) *sums = sv.mv_data;
    return SS_OK;
}

/*
 * Shared by ss_store_view_chunks and ss_store_merge_f32: find and check n blobs of equal size in
 * one read transaction, then run j over them piece by piece.
 */
static ss_err chunked_read(ss_store *s, const char *const *refs, int n, const char *expect_model,
                           int n_threads, chunk_job *j)
{
    ss_err err = SS_OK;
    MDB_txn *txn = NULL;
    json_t *record = NULL;
    const unsigned char *blobs[SS_STORE_VIEW_MAX];
    const unsigned char *sums[SS_STORE_VIEW_MAX];
    char ids[SS_STORE_VIEW_MAX][ID_LEN + 1];
    const char *idp[SS_STORE_VIEW_MAX];
    void *copies[SS_STORE_VIEW_MAX] = {0};

    if (!s || !refs || n < 1) return ss_fail(SS_ERR_INVALID, "store view: no states given");
    if (n > SS_STORE_VIEW_MAX)
        return ss_fail(SS_ERR_TOO_LARGE, "store view: %d states at once (at most %d)", n,
                       SS_STORE_VIEW_MAX);
    if (viewing == s) return reentry_fail(s);
    if ((err = txn_begin(s, MDB_RDONLY, &txn))) return err;
    size_t want_len = j->len;
    for (int i = 0; i < n; i++) {
        MDB_val rec, blob;
        if ((err = find_blob(s, txn, refs[i], expect_model, ids[i], &rec, &record, &blob)))
            goto out;
        idp[i] = ids[i];
        if (j->src) {
            memcpy(j->src[i].id, ids[i], ID_LEN + 1);
            j->src[i].n_tokens = json_integer_value(json_object_get(record, "n_tokens"));
        }
        if (i > 0 && blob.mv_size != j->len) {
            err = ss_fail(SS_ERR_MISMATCH, "states %s and %s have different sizes (%zu, %zu bytes)",
                          ids[0], ids[i], j->len, blob.mv_size);
            goto out;
        }
        if (want_len && blob.mv_size != want_len) {
            err = ss_fail(SS_ERR_MISMATCH, "state %s holds %zu bytes, not the %zu expected", ids[i],
                          blob.mv_size, want_len);
            goto out;
        }
        j->len = blob.mv_size;
        if ((err = piece_sums(s, txn, ids[i], blob.mv_size, &sums[i]))) goto out;
        /* no (or an unusable) per-piece list: verify the blob whole now */
        if (!sums[i] && (err = check_sum(ids[i], record, &blob))) goto out;
        const void *aligned;
        if ((err = aligned_blob(&blob, &copies[i], &aligned))) goto out;
        blobs[i] = aligned;
        json_decref(record);
        record = NULL;
    }
    j->n = n;
    j->blobs = blobs;
    j->sums = sums;
    j->ids = idp;
    err = chunk_job_run(s, j, n_threads);
out:
    txn_end(s, txn);
    json_decref(record);
    for (int i = 0; i < n; i++) free(copies[i]);
    return err;
}

/*
 * Read n blobs of equal size piece by piece (CHUNK_BYTES), on up to n_threads threads (this one
 * included): each piece of each blob is checked against its own checksum just before fn sees it.
 * fn(user, chunks, offset, len, n) gets 16-byte aligned pointers to bytes [offset, offset + len)
 * of each blob, valid during the call; calls for different pieces run concurrently and in no
 * particular order. States stored without per-piece checksums (older stores) are verified whole
 * first. Same checks as ss_store_view (existence, model), plus SS_ERR_MISMATCH when the sizes
 * differ. On SS_ERR_CORRUPT (or fn's error) some pieces may already have been passed to fn: the
 * caller must discard what fn produced.
 */
ss_err ss_store_view_chunks(ss_store *s, const char *const *refs, int n, const char *expect_model,
                            int n_threads, ss_store_chunk_fn fn, void *user)
{
    if (!fn) return ss_fail(SS_ERR_INVALID, "store view: no function given");
    chunk_job j = {.mode = CHUNK_FN, .fn = fn, .user = user};
    return chunked_read(s, refs, n, expect_model, n_threads, &j);
}

/*
 * out = sum_i w[i] * blob_i, each piece of each source checksummed and the result checked finite
 * in the pass that sums it (see ss_store.h). Resolution, checks and the sum share one read
 * transaction, so src[i] (when not NULL) names exactly the state that was summed.
 */
ss_err ss_store_merge_f32(ss_store *s, const char *const *refs, const double *w, int n,
                          const char *expect_model, float *out, size_t out_bytes, int n_threads,
                          ss_store_source *src)
{
    float wf[SS_STORE_VIEW_MAX];
    if (!out || !w || out_bytes == 0 || out_bytes % sizeof(float))
        return ss_fail(SS_ERR_INVALID, "store merge: no output buffer");
    for (int i = 0; i < n && i < SS_STORE_VIEW_MAX; i++) {
        if (!isfinite(w[i]) || fabs(w[i]) > FLT_MAX)
            return ss_fail(SS_ERR_INVALID, "store merge: weight %d (%g) is not a finite float", i,
                           w[i]);
        wf[i] = (float)w[i];
    }
    chunk_job j = {.mode = CHUNK_SUM, .len = out_bytes, .dst = out, .w = wf, .src = src};
    return chunked_read(s, refs, n, expect_model, n_threads, &j);
}

/*
 * Copy the blob of state `ref` into dst (cap bytes). Checks, in this order: the model
 * (SS_ERR_MISMATCH), the size (SS_ERR_TOO_LARGE, *len still set: cap 0 asks for the size), then
 * the checksum, computed as the bytes are copied (SS_ERR_CORRUPT naming the state; dst is then
 * undefined). *len and *record_json (free() it) may be NULL; *record_json is set only on success.
 * Thread-safe; readers run in parallel.
 */
ss_err ss_store_get_blob(ss_store *s, const char *ref, const char *expect_model, void *dst,
                         size_t cap, size_t *len, char **record_json)
{
    ss_err err = SS_OK;
    MDB_txn *txn = NULL;
    json_t *record = NULL;
    char id[ID_LEN + 1];
    MDB_val rec, blob;

    if (!s) return ss_fail(SS_ERR_INVALID, "store: NULL store");
    err = txn_begin(s, MDB_RDONLY, &txn);
    if (err) return err;
    if ((err = find_blob(s, txn, ref, expect_model, id, &rec, &record, &blob))) goto out;
    if (len) *len = blob.mv_size;
    if (blob.mv_size > cap) {
        err = ss_fail(SS_ERR_TOO_LARGE, "state %s is %zu bytes, the buffer holds %zu", id,
                      blob.mv_size, cap);
        goto out;
    }
    if (!dst) {
        err = ss_fail(SS_ERR_INVALID, "store: NULL destination buffer");
        goto out;
    }
    if (record_json && (err = copy_record(id, &rec, record_json))) goto out;
    /* Copy and verify in one pass: on two threads piece by piece when the blob has per-piece
     * checksums and is large, else whole against the record's checksum. */
    const unsigned char *sums = NULL;
    if (blob.mv_size >= GET_THREADED_BYTES && (err = piece_sums(s, txn, id, blob.mv_size, &sums)))
        goto out;
    if (sums) {
        const unsigned char *blobs[1] = {blob.mv_data}, *sl[1] = {sums};
        const char *ids[1] = {id};
        chunk_job j = {.mode = CHUNK_COPY, .n = 1, .len = blob.mv_size, .blobs = blobs, .sums = sl,
                       .ids = ids, .dst = dst};
        err = chunk_job_run(s, &j, 2);
    } else {
        uint64_t h;
        ss_hash64_copy(dst, blob.mv_data, blob.mv_size, &h);
        err = check_hash(id, record, h);
    }
    if (err && record_json) {
        free(*record_json);
        *record_json = NULL;
    }
out:
    txn_end(s, txn);
    json_decref(record);
    return err;
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
        return mdb_fail(rc, "store %s: index scan", s->dir);
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
        return mdb_fail(rc, "store %s: index scan", s->dir);
    }
    return SS_OK;
}

static ss_err delete_fn(ss_store *s, wtx *w, void *ctx)
{
    const char *ref = ctx;
    ss_err err = SS_OK;
    json_t *record = NULL;
    char id[ID_LEN + 1];
    unsigned char tkey[TKEY_LEN];
    MDB_val rec, blob, key;

    if ((err = resolve(s, w->txn, ref, id, &rec))) return err;
    make_tkey(tkey, (int64_t)be64_get(rec.mv_data), id);
    /* A record we cannot parse must still be deletable: then find its index entries by scan. */
    ss_err lerr = load_record(id, &rec, &record);
    uint64_t blob_len = 0;
    key = (MDB_val){ID_LEN, id};
    int rc = mdb_get(w->txn, s->blobs, &key, &blob);
    if (rc == 0)
        blob_len = blob.mv_size;
    else if (rc != MDB_NOTFOUND) {
        err = mdb_fail(rc, "store %s: deleting state %s", s->dir, id);
        goto out;
    }
    if (w_del(w, s->blobs, id, ID_LEN) || w_del(w, s->records, id, ID_LEN) ||
        w_del(w, s->time, tkey, TKEY_LEN)) {
        goto fail;
    }
    key = (MDB_val){ID_LEN, id};
    rc = mdb_del(w->txn, s->chunks, &key, NULL); /* absent for states from older stores */
    if (rc && rc != MDB_NOTFOUND) {
        w->rc = rc;
        goto fail;
    }
    if (lerr == SS_OK) {
        const char *name = json_string_value(json_object_get(record, "name"));
        if (name && w_del(w, s->names, name, strlen(name))) goto fail;
        size_t i;
        json_t *t;
        json_array_foreach (json_object_get(record, "tags"), i, t) {
            unsigned char k[SS_REC_TAG_MAX + 1 + TKEY_LEN];
            if (!json_is_string(t)) continue;
            size_t tl = json_string_length(t);
            if (tl > SS_REC_TAG_MAX) continue;
            memcpy(k, json_string_value(t), tl);
            k[tl] = 0;
            memcpy(k + tl + 1, tkey, TKEY_LEN);
            if (w_del(w, s->tags, k, tl + 1 + TKEY_LEN)) goto fail;
        }
    } else {
        if ((err = purge_index(s, w, s->names, tkey, 0))) goto out;
        if ((err = purge_index(s, w, s->tags, tkey, 1))) goto out;
    }
    err = add_blob_bytes(s, w, (uint64_t)0 - blob_len);
    goto out;
fail:
    err = mdb_fail(w->rc, "store %s: deleting state %s", s->dir, id);
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
    return write_txn(s, 64 * 1024, delete_fn, (void *)ref);
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

/*
 * List records newest first as {"data": [records], "next_cursor": str|null} (*page_json, free()
 * it; set only on success). tag: exact tag (SS_ERR_INVALID if not a valid tag) or NULL; prefix:
 * name prefix or NULL (unnamed states never match; "" matches every named state). limit 1..1000,
 * 0 = 100, else SS_ERR_INVALID. cursor: NULL, or a next_cursor from an earlier page (opaque; it
 * stays valid across writes and deletes). next_cursor is null exactly when no further record
 * matches. Cost: index entries newer than the page's last match, plus one record read per result.
 * Thread-safe.
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

    if ((err = buf_str(&b, "{\"data\":["))) goto out;
    err = txn_begin(s, MDB_RDONLY, &txn);
    if (err) goto out;
    int rc = mdb_cursor_open(txn, tag ? s->tags : s->time, &cur);
    if (rc) {
        err = mdb_fail(rc, "store %s: opening an index", s->dir);
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
        if (prefix &&
            (val.mv_size == 0 || val.mv_size < plen || memcmp(val.mv_data, prefix, plen) != 0)) {
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
    char tail[64];
    snprintf(tail, sizeof tail, "],\"skipped\":%d", skipped);
    if ((err = buf_str(&b, tail))) goto out;
    if (more) {
        char hex[CURSOR_LEN + 1];
        ss_hex(last, TKEY_LEN, hex);
        if ((err = buf_str(&b, ",\"next_cursor\":\""))) goto out;
        if ((err = buf_str(&b, hex))) goto out;
        if ((err = buf_str(&b, "\"}"))) goto out;
    } else if ((err = buf_str(&b, ",\"next_cursor\":null}"))) {
        goto out;
    }
    *page_json = b.p;
    b.p = NULL;
out:
    if (cur) mdb_cursor_close(cur);
    txn_end(s, txn);
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
    err = txn_begin(s, MDB_RDONLY, &txn);
    if (err) return err;
    int rc = mdb_stat(txn, s->records, &st);
    if (rc) {
        err = mdb_fail(rc, "store %s: stat", s->dir);
        goto out;
    }
    MDB_val key = {10, "blob_bytes"}, val;
    uint64_t blob_bytes = 0;
    rc = mdb_get(txn, s->meta, &key, &val);
    if (rc == 0 && val.mv_size == 8)
        blob_bytes = be64_get(val.mv_data);
    else if (rc && rc != MDB_NOTFOUND) {
        err = mdb_fail(rc, "store %s: reading totals", s->dir);
        goto out;
    }
    mdb_env_info(s->env, &info);
    out->n_states = st.ms_entries;
    out->blob_bytes = blob_bytes;
    out->map_size = info.me_mapsize;
    out->file_bytes = ((uint64_t)info.me_last_pgno + 1) * s->page_size;
out:
    txn_end(s, txn);
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
        ss_err err = txn_begin(s, MDB_RDONLY, &txn);
        if (err) return err;
        int rc = mdb_cursor_open(txn, dbis[i], &cur);
        if (rc == 0) {
            for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
                 rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
            }
            mdb_cursor_close(cur);
        }
        txn_end(s, txn);
        if (rc != MDB_NOTFOUND) {
            (*bad)++;
            mdb_fail(rc, "store %s: the '%s' index is damaged (listings stop there)", s->dir,
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
        err = txn_begin(s, MDB_RDONLY, &txn);
        if (err) goto out;
        int rc = mdb_cursor_open(txn, s->records, &cur);
        if (rc) {
            err = mdb_fail(rc, "store %s: verify", s->dir);
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
                get_sized_blob(s, txn, id, record, &blob) || check_sum(id, record, &blob)) {
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
            err = mdb_fail(rc, "store %s: verify", s->dir);
            goto out;
        }
        mdb_cursor_close(cur);
        cur = NULL;
        txn_end(s, txn);
        txn = NULL;
    }
    if ((err = verify_indexes(s, &bad))) goto out;
    if (!bad) ss_err_clear();
    if (n_checked) *n_checked = checked;
    if (n_bad) *n_bad = bad;
out:
    if (cur) mdb_cursor_close(cur);
    txn_end(s, txn);
    return err;
}
