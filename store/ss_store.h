/*
 * ss_store.h - the durable catalog of named states, in LMDB (alone, or as the local cache of a
 * shared catalog on Redis Cluster: ss_store_params.remote, docs/scale-out.md).
 *
 * A state is a blob (the model's state floats, opaque to the store except for the merge, which
 * sums them as F32 arrays: ss_store_merge_f32) plus a record (JSON object).
 * The store assigns the id ("st_" + 32 lowercase hex), created_at (RFC 3339, UTC, microseconds),
 * bytes and checksum (XXH3-64 of the blob, 16 hex chars, verified on every blob read), and keeps
 * indexes by name (unique), by tag, and by creation time (newest first).
 *
 * Record JSON, as the API serves it:
 *   {"id", "name": str|null, "tags": [str], "model": fingerprint, "n_tokens", "created_at",
 *    "bytes", "dtype", "parents": [{"id", "weight"}], "merge_mode"?: str, "metadata": {...},
 *    "checksum"}
 * merge_mode is optional (present on merged states: how they were combined).
 * Tenants (see "Tenants" below): "tenant": str follows "name" on states of a tenant other than
 * the default one, and "shared": true follows merge_mode on states an admin shared; both are
 * absent otherwise (so records of the default tenant look exactly as before tenants existed).
 * The store sets both (a caller's values are replaced), except ss_store_put_copy, which keeps them.
 * The caller supplies name, tags, model, n_tokens, dtype, parents and metadata; the store fills
 * the rest (overwriting anything the caller put there). model (string), n_tokens (integer >= 0)
 * and dtype (string) are required; name defaults to null, tags to [], parents to [] (each
 * {"id": state id, "weight": number}), metadata to {}. Unknown keys and repeated tags are refused.
 * Records are served as compact JSON with the keys in the order above.
 *
 * Durability is LMDB's: ss_store_put() returns only after the write transaction is committed
 * (fsync'd), so an acknowledged state survives kill -9; a crash never leaves half a record.
 * The map grows on demand (doubling); only a really full disk gives SS_ERR_FULL.
 *
 * Threading: one ss_store may be used by any number of threads (one writer at a time inside,
 * readers in parallel). Another process may open the same directory read-only at the same time
 * (the `statesoup ls --data DIR` case). LMDB/MDB types never leave this module; pointers into a
 * transaction are only lent to a callback (ss_store_view) for its duration.
 */
#ifndef SS_STORE_H
#define SS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "ss_err.h"

typedef struct ss_store ss_store;

/*
 * ---- Tenants --------------------------------------------------------------------------------
 *
 * Every state belongs to one tenant; names are unique per tenant (two tenants may both own "x").
 * A scope says on whose behalf a call runs. The scoped variants (..._as) take one; the plain
 * calls are unscoped (scope NULL: every state of every tenant is reachable by id, names resolve
 * in the default tenant, listings show all tenants): for offline tools (`statesoup ls --data`,
 * migrate) and for the daemon when it runs without tenants.
 *
 * Under a scope a state is
 *   - reachable (get, blob, view, merge source, search hit, by id) when it is the scope's
 *     tenant's, or shared, or the scope is admin;
 *   - listed (ss_store_list_as, ss_store_search with q->scope) when it is the tenant's or shared;
 *   - deletable when it is the tenant's or the scope is admin (a shared state of another tenant:
 *     SS_ERR_PERM);
 *   - found by name only among the tenant's own names.
 * Anything else answers SS_ERR_NOT_FOUND with the same message as a state that does not exist,
 * so ids and names of other tenants cannot be probed. Stores written before tenants existed
 * hold only states of the default tenant and open unchanged.
 */
#define SS_STORE_TENANT_MAX 64 /* bytes; tenant names are [A-Za-z0-9._:/-] like tags */
typedef struct ss_store_scope {
    const char *tenant; /* NULL or "" = the default tenant */
    int admin;          /* may reach any state by id, delete and share (ss_store_share_as) */
} ss_store_scope;

/* Validate a tenant name (1..64 bytes of [A-Za-z0-9._:/-]): SS_OK or SS_ERR_INVALID. */
ss_err ss_store_check_tenant(const char *tenant);

typedef struct ss_store_params {
    int read_only;          /* open for reading only (no writes; works beside a running daemon) */
    size_t initial_map_size; /* bytes; 0 = 64 MiB. Grows by doubling when full. */
    size_t max_map_size;     /* bytes; 0 = no limit other than the disk */
    /*
     * The shared tier (docs/scale-out.md): with `remote` set ("redis://[:pass@]host:port[,...]",
     * Redis Cluster seed nodes), Redis Cluster is the catalog of record and this directory's LMDB
     * a bounded LRU read-through cache of it. NULL = LMDB alone, as before.
     */
    const char *remote;
    const char *remote_password;  /* AUTH; NULL = the URL's, if any */
    const char *remote_prefix;    /* key namespace (one hash tag); NULL = "ss" */
    int remote_wait_replicas;     /* a write is acknowledged once WAIT confirms this many Redis
                                     replicas (default 1; 0 = the primary alone) */
    int remote_wait_ms;           /* WAIT's timeout (default 2000) */
    int remote_timeout_ms;        /* connect/command timeout (0 = 2000) */
    int remote_retry_ms;          /* how long a command retries through failovers (0 = 5000) */
    size_t cache_max_bytes;       /* blob bytes the local cache keeps (0 = 1 GiB) */
    /* Commits are not fsync'd (LMDB's MDB_NOSYNC): much faster, but a crash may lose the last
     * acknowledged writes. For benchmarks that fill a throwaway store; never the daemon. */
    int no_sync;
} ss_store_params;

ss_store_params ss_store_default_params(void);

/*
 * Open (creating when missing and not read-only; new directories get mode 0700) the store in
 * directory `dir`; params NULL = defaults. *out is set only on success.
 * SS_ERR_NOT_FOUND if read-only and the store does not exist; SS_ERR_CORRUPT if data.mdb is
 * shorter than the pages its meta page claims (a truncated file: refused before any page is read,
 * the message says what to do); SS_ERR_FORMAT if the directory holds another LMDB environment;
 * SS_ERR_UNSUPPORTED for an unknown format version; SS_ERR_PERM, SS_ERR_IO, SS_ERR_NOMEM
 * otherwise. Open a directory at most once per process (an LMDB rule).
 */
ss_err ss_store_open(ss_store **out, const char *dir, const ss_store_params *params);
/* NULL is a no-op. No other call on `s` may be running. */
void ss_store_close(ss_store *s);
/*
 * Delete a store from disk: the files it made in `dir` (data.mdb, lock.mdb, the remote tier's
 * cache marker), then `dir` itself when nothing else is left in it. For temporary stores (a
 * benchmark's, a migration's); nothing may have the store open. Failures are ignored: what could
 * not be removed stays.
 */
void ss_store_remove(const char *dir);

/*
 * Health: SS_OK, or SS_ERR_UNAVAILABLE (reason in ss_errmsg()) when the data file open here is no
 * longer the one at DIR/data.mdb (the directory was deleted or the file replaced: writes would be
 * lost; ss_store_put refuses with the same error) or the map is full at its configured maximum.
 * Cheap enough for every /healthz. Thread-safe.
 */
ss_err ss_store_check(ss_store *s);

/* XXH3-64 of len bytes as 16 lowercase hex digits and a NUL (hex holds 17): the checksum a
 * record gives for a blob of these bytes. Thread-safe. */
void ss_store_checksum(const void *data, size_t len, char *hex);

/* Is `ref` shaped like a state id ("st_" + 32 hex)? Names may not look like ids. */
int ss_store_is_id(const char *ref);
/* Validate a name (1..128 bytes of [A-Za-z0-9._:/-], not id-shaped): SS_OK or SS_ERR_INVALID. */
ss_err ss_store_check_name(const char *name);
/* Validate a tag (1..64 bytes of [A-Za-z0-9._:/-]): SS_OK or SS_ERR_INVALID. */
ss_err ss_store_check_tag(const char *tag);

/*
 * Store a new state. `record_json` is the caller's part of the record (see above). On success
 * *record_out (may be NULL) receives the complete record as JSON text (free() it).
 * SS_ERR_EXISTS if the name is taken, SS_ERR_FORMAT if record_json is not JSON, SS_ERR_INVALID
 * for a bad name/tag/field or an empty blob, SS_ERR_TOO_LARGE for a record over 1 MiB,
 * SS_ERR_FULL when the disk is full (or max_map_size is reached), SS_ERR_PERM on a read-only
 * store, SS_ERR_UNAVAILABLE when the data file was deleted or replaced (see ss_store_check). The
 * inputs stay the caller's; the blob is copied.
 */
ss_err ss_store_put(ss_store *s, const char *record_json, const void *blob, size_t blob_len,
                    char **record_out);

/* The scoped variants (see Tenants): the state is stored as the scope's tenant's (NULL scope:
 * the default tenant), its name unique among that tenant's names. */
typedef struct ss_store_prefix_entry ss_store_prefix_entry;
ss_err ss_store_put_as(ss_store *s, const ss_store_scope *sc, const char *record_json,
                       const void *blob, size_t blob_len, const ss_store_prefix_entry *pe,
                       char **record_out);
ss_err ss_store_get_record_as(ss_store *s, const ss_store_scope *sc, const char *ref,
                              char **record_json);
ss_err ss_store_get_blob_as(ss_store *s, const ss_store_scope *sc, const char *ref,
                            const char *expect_model, void *dst, size_t cap, size_t *len,
                            char **record_json);
ss_err ss_store_delete_as(ss_store *s, const ss_store_scope *sc, const char *ref);
ss_err ss_store_list_as(ss_store *s, const ss_store_scope *sc, const char *tag,
                        const char *prefix, int limit, const char *cursor, char **page_json);
/*
 * Mark (shared 1) or unmark (0) state `ref` shared: readable and mergeable by every tenant,
 * listed for all, deletable still only by its owner or an admin. sc must be admin (SS_ERR_PERM
 * otherwise; NULL = unscoped, allowed). *record_out (may be NULL) gets the updated record.
 * SS_ERR_NOT_FOUND, SS_ERR_PERM, SS_ERR_FULL, SS_ERR_IO; SS_ERR_UNSUPPORTED on the remote tier.
 */
ss_err ss_store_share_as(ss_store *s, const ss_store_scope *sc, const char *ref, int shared,
                         char **record_out);

/* States and blob bytes per tenant, for /metrics: fn(user, tenant, n_states, blob_bytes) once per
 * tenant holding states ("" = the default tenant). SS_ERR_IO, SS_ERR_NOMEM. With the remote tier
 * the shared catalog's totals (kept in Redis beside n_states; counted from the records the first
 * time), SS_ERR_UNAVAILABLE while it cannot be reached. */
typedef void (*ss_store_tenant_fn)(void *user, const char *tenant, uint64_t n_states,
                                   uint64_t blob_bytes);
ss_err ss_store_tenant_stats(ss_store *s, ss_store_tenant_fn fn, void *user);

/*
 * Store a copy of a state from another catalog under the id and created_at of its complete record
 * (`statesoup migrate`: ids stay valid, so do the parents of merged states). The record's
 * checksum and bytes must match the blob (SS_ERR_CORRUPT otherwise); SS_ERR_EXISTS when the id is
 * already here (a re-run copies nothing twice) or the name belongs to another state; otherwise as
 * ss_store_put. With a remote tier the copy goes to Redis Cluster.
 */
ss_err ss_store_put_copy(ss_store *s, const char *record_json, const void *blob, size_t blob_len);

/*
 * Record of the state with this id or name, as JSON text (free() it), verified against the
 * record's checksum. SS_ERR_NOT_FOUND, SS_ERR_CORRUPT (record damaged: this state only),
 * SS_ERR_NOMEM, SS_ERR_IO.
 */
ss_err ss_store_get_record(ss_store *s, const char *ref, char **record_json);

/*
 * Copy the blob of state `ref` into dst (cap bytes). Verifies the checksum (SS_ERR_CORRUPT), and
 * when expect_model is not NULL that the record's model equals it (SS_ERR_MISMATCH).
 * SS_ERR_TOO_LARGE if cap is too small (then *len still receives the size: cap 0 asks for it).
 * *len (may be NULL) receives the blob size; *record_json (may be NULL) the record (free() it).
 * The bytes are checksummed as they are copied (one pass; large blobs on two threads, piece by
 * piece): on SS_ERR_CORRUPT the message names the state and the contents of dst are undefined.
 * Also SS_ERR_NOT_FOUND, SS_ERR_INVALID (dst NULL with cap > 0), SS_ERR_NOMEM, SS_ERR_IO.
 */
ss_err ss_store_get_blob(ss_store *s, const char *ref, const char *expect_model, void *dst,
                         size_t cap, size_t *len, char **record_json);

/*
 * Read several blobs in one read transaction without copying them: checks every ref as
 * ss_store_get_blob does (existence, checksum, model), then calls fn(user, blobs, lens, n) with
 * pointers into the database, valid only during the call (read-only). Every blob passed to fn is
 * 16-byte aligned (small values LMDB stores unaligned are copied to an aligned buffer first).
 * fn's return is passed back. For merges at memory speed (combine straight from the map).
 * fn runs inside a read transaction holding the store's shared map lock: keep it short, do not
 * call this store from it (SS_ERR_INTERNAL) and do not wait there on other users of the store.
 * Before fn: SS_ERR_NOT_FOUND, SS_ERR_MISMATCH, SS_ERR_CORRUPT, SS_ERR_NOMEM, SS_ERR_IO.
 */
typedef ss_err (*ss_store_view_fn)(void *user, const void *const *blobs, const size_t *lens,
                                   int n);
ss_err ss_store_view(ss_store *s, const char *const *refs, int n, const char *expect_model,
                     ss_store_view_fn fn, void *user);
ss_err ss_store_view_as(ss_store *s, const ss_store_scope *sc, const char *const *refs, int n,
                        const char *expect_model, ss_store_view_fn fn, void *user);

/*
 * Read several blobs of equal size piece by piece (1 MiB) on up to n_threads threads, each piece
 * verified against its own checksum just before fn sees it (every byte read from memory once):
 * fn(user, chunks, offset, len, n) gets 16-byte aligned pointers to bytes [offset, offset + len)
 * of each blob, valid during the call; calls for different pieces run concurrently, in no order.
 * Checks as ss_store_view, plus SS_ERR_MISMATCH for different sizes. On SS_ERR_CORRUPT (or an
 * error from fn) some pieces were already passed to fn: discard what fn produced.
 * For merges at memory speed. At most SS_STORE_VIEW_MAX blobs (else SS_ERR_TOO_LARGE).
 * Returns SS_OK, fn's error, or SS_ERR_NOT_FOUND / MISMATCH / CORRUPT / NOMEM / IO.
 */
#define SS_STORE_VIEW_MAX 64
typedef ss_err (*ss_store_chunk_fn)(void *user, const void *const *chunks, size_t offset,
                                    size_t len, int n);
ss_err ss_store_view_chunks(ss_store *s, const char *const *refs, int n, const char *expect_model,
                            int n_threads, ss_store_chunk_fn fn, void *user);
ss_err ss_store_view_chunks_as(ss_store *s, const ss_store_scope *sc, const char *const *refs,
                               int n, const char *expect_model, int n_threads,
                               ss_store_chunk_fn fn, void *user);

/* A merge source as the store resolved it: what the merged state's record needs. */
#define SS_STORE_ID_LEN 35 /* "st_" + 32 lowercase hex */
typedef struct ss_store_source {
    char id[SS_STORE_ID_LEN + 1]; /* the id the reference resolved to: the state summed */
    int64_t n_tokens;             /* that state's record n_tokens */
} ss_store_source;

/*
 * The merge of State Soup, the one place where the store looks inside blobs: it treats them as
 * arrays of F32 (the daemon stores every state as F32; the model owns the layout, the store only
 * the arithmetic of the merge, because it is fused with the checksum pass and reads the sources
 * straight from the map). There is no other merge kernel.
 *
 * out = sum_i w[i] * blob_i for n stored F32 states of out_bytes each, on up to n_threads
 * threads. Each 1 MiB piece of every source is checksummed in the same pass that sums it, and
 * the result is checked finite in that pass too, so the sources are read from memory once and
 * only once. Evaluated per element as (float)w[0] * x0, then one fused multiply-add per further
 * source, in order. Resolution of the refs, the checks and the sum happen in one read
 * transaction: src (may be NULL; else n entries) receives the ids and n_tokens of exactly the
 * states summed, so a name deleted and re-created meanwhile cannot make the record lie.
 * Returns SS_OK; SS_ERR_NOT_FOUND (a ref), SS_ERR_MISMATCH (another model, a blob not out_bytes
 * long), SS_ERR_CORRUPT (a checksum, naming the state and the byte range), SS_ERR_INVALID (a
 * weight that is not a finite float, or a result with an infinite or NaN element),
 * SS_ERR_TOO_LARGE (n > SS_STORE_VIEW_MAX), SS_ERR_NOMEM, SS_ERR_IO. On any error out and src are
 * undefined.
 */
ss_err ss_store_merge_f32(ss_store *s, const char *const *refs, const double *w, int n,
                          const char *expect_model, float *out, size_t out_bytes, int n_threads,
                          ss_store_source *src);
ss_err ss_store_merge_f32_as(ss_store *s, const ss_store_scope *sc, const char *const *refs,
                             const double *w, int n, const char *expect_model, float *out,
                             size_t out_bytes, int n_threads, ss_store_source *src);

/*
 * Delete state `ref` (id or name) with its indexes (a state whose record is damaged too).
 * SS_ERR_NOT_FOUND, SS_ERR_PERM (read-only), SS_ERR_FULL, SS_ERR_IO.
 */
ss_err ss_store_delete(ss_store *s, const char *ref);

/*
 * The children of state `id` (an id, not a name: resolve it first): the states whose record lists
 * it among its parents, newest first, as *n ids of SS_STORE_ID_LEN + 1 bytes each (NUL-ended)
 * packed in *ids (malloc'd; free it; NULL when none). Read from an index kept with the records
 * (one range read, whatever the catalog's size). Ids of states another tenant owns may be among
 * them: read each record through the caller's scope. An id nothing lists gives 0 children.
 * SS_ERR_UNSUPPORTED on the remote tier, or read-only on a store never opened by this version
 * for writing; SS_ERR_NOMEM, SS_ERR_IO. Thread-safe.
 */
ss_err ss_store_children(ss_store *s, const char *id, char **ids, int *n);

/*
 * List records newest first. Filters (NULL = none): tag (exact), prefix (of the name; states
 * without a name never match a prefix). limit 1..1000 (0 = 100). cursor: NULL for the first page,
 * else the next_cursor of the previous page (SS_ERR_INVALID if malformed; it stays valid across
 * writes and deletes). An invalid tag is SS_ERR_INVALID; pass NULL, not "", for "no filter".
 * *page_json = {"data": [records], "skipped": n, "next_cursor": str|null} (free() it);
 * next_cursor is null exactly when no further record matches. Records that cannot be read
 * (checksum, damaged page) are left out and counted in skipped; a damaged index page ends the
 * listing there. SS_ERR_INVALID (limit, tag, cursor), SS_ERR_NOMEM, SS_ERR_IO.
 */
ss_err ss_store_list(ss_store *s, const char *tag, const char *prefix, int limit,
                     const char *cursor, char **page_json);

/* Totals for /metrics and `statesoup ls`; ss_store_get_stats gives SS_ERR_INVALID (NULL) or
 * SS_ERR_IO. */
typedef struct ss_store_stats {
    uint64_t n_states;
    uint64_t blob_bytes;  /* sum of blob sizes */
    uint64_t map_size;    /* current LMDB map size */
    uint64_t file_bytes;  /* pages in use * page size (high-water mark, incl. reusable pages) */
    uint64_t corrupt_reads; /* reads since open that met a damaged record or blob (SS_ERR_CORRUPT
                               answers and records skipped by listings) */
    /* With a remote tier (else 0): n_states and blob_bytes are then the shared catalog's. */
    int remote;              /* 1 when a remote tier is configured */
    int remote_up;           /* its last command succeeded */
    uint64_t remote_errors;  /* commands that failed for want of the cluster */
    uint64_t remote_short_circuits; /* of those, answered at once: the cluster had not answered
                                       the command before them (--remote-retry) */
    uint64_t cache_hits, cache_misses, cache_evictions; /* local blob cache */
    uint64_t cache_bytes;    /* blob bytes held by the local cache */
} ss_store_stats;
ss_err ss_store_get_stats(ss_store *s, ss_store_stats *out);

/*
 * Verify every state (record checksum, blob present, blob checksum) and walk the time, names and
 * tags indexes; *n_checked receives the states checked, *n_bad the unreadable items (states, plus
 * one per damaged index). fsck for operators. Runs in chunks of read transactions, so it does not
 * hold off writers. When *n_bad > 0, ss_errmsg() describes the last one. Returns SS_OK unless the
 * walk itself fails (SS_ERR_IO, SS_ERR_NOMEM).
 */
ss_err ss_store_verify(ss_store *s, uint64_t *n_checked, uint64_t *n_bad);

/* ---- retrieval keys (store/keys.c) ---------------------------------------------------------
 *
 * A retrieval key is a short F32 vector per state (the model makes it: ss_state_key), so that
 * the catalog can be searched by similarity. Once a keyer is set (ss_store_keys_open), every
 * state stored through this store whose record's model is the keyer's gets its key computed from
 * its blob before the write transaction and written in that transaction ("keys" database), so a
 * state and its key are committed together (kill -9 never separates them); a delete removes both
 * together. States stored without a keyer (an older daemon, `statesoup migrate`, `--data` tools)
 * or under another kind get theirs when the keyer is set: ss_store_keys_open computes the
 * missing keys (the daemon does it at start). All keys are also held in memory, one matrix
 * [n_states, dim], that ss_store_search scores with one BLAS sgemv.
 * Not available with the remote tier (SS_ERR_UNSUPPORTED): its local LMDB is a cache that holds
 * only some of the catalog.
 */

/* key[dim] of a stored blob; an error means the blob gets no key (e.g. not a state of this
 * model's shape). Called on the putting thread, outside any transaction. */
typedef ss_err (*ss_store_key_fn)(void *user, const void *blob, size_t len, float *key);
typedef struct ss_store_keyer {
    const char *kind;  /* recorded with each key (1..31 bytes): keys of another kind are redone */
    const char *model; /* fingerprint: only states whose record names this model get keys */
    int dim;           /* floats per key, 1..4096 */
    ss_store_key_fn fn;
    void *user;
} ss_store_keyer;

/*
 * Set the keyer (copied; fn and user must outlive the store), load every stored key of its kind
 * into memory and compute, store and load the missing ones (in batches of write transactions).
 * *n_loaded / *n_computed (may be NULL) count them. Call once, before serving. SS_ERR_UNSUPPORTED
 * with a remote tier, SS_ERR_EXISTS (already set), SS_ERR_INVALID (bad keyer), SS_ERR_PERM
 * (read-only with keys missing), SS_ERR_NOMEM, SS_ERR_FULL, SS_ERR_IO.
 */
ss_err ss_store_keys_open(ss_store *s, const ss_store_keyer *k, uint64_t *n_loaded,
                          uint64_t *n_computed);
/* Floats per key, 0 when no keyer is set. */
int ss_store_keys_dim(ss_store *s);
/* Keys held in memory and the bytes they take (matrix, rows, table). SS_ERR_UNSUPPORTED without
 * a keyer. */
ss_err ss_store_keys_stats(ss_store *s, uint64_t *n, uint64_t *bytes);

#define SS_STORE_SEARCH_MAX 100 /* most hits of one search */
typedef struct ss_store_query {
    const float *key; /* [dim], normalised by the caller for cosine similarity */
    int dim;          /* must be the keyer's */
    int k;            /* hits wanted, 1..SS_STORE_SEARCH_MAX */
    const char *tag;         /* NULL, or only states with this tag */
    const char *prefix;      /* NULL, or only named states whose name starts with it */
    const char *exclude_tag; /* NULL, or no state with this tag */
    /* NULL, or only states for which it returns nonzero (tags: "a\0b\0\0" or NULL). Runs
     * under the index's read lock: quick, no store calls. */
    int (*filter)(void *user, const char *id, const char *name, const char *tags);
    void *filter_user;
    /* NULL, or only the states this scope lists (its tenant's and shared ones) */
    const ss_store_scope *scope;
} ss_store_query;
typedef struct ss_store_hit {
    char id[SS_STORE_ID_LEN + 1];
    float score; /* dot product of the keys */
} ss_store_hit;
/*
 * The k states whose keys have the largest dot product with q->key among those passing the
 * filters, best first (ties: newest first). hits holds q->k entries; *n_hits receives how many
 * were found (0 for an empty catalog: not an error). Thread-safe (readers in parallel with each
 * other; a put or delete waits for them). A state deleted just now may still be named: read its
 * record and skip it if it is gone. SS_ERR_UNSUPPORTED (no keyer), SS_ERR_MISMATCH (q->dim),
 * SS_ERR_INVALID (k), SS_ERR_NOMEM.
 */
ss_err ss_store_search(ss_store *s, const ss_store_query *q, ss_store_hit *hits, int *n_hits);

/* ---- prefix index (prompt caching, store/prefix.c) -----------------------------------------
 *
 * A state made by feeding tokens can be indexed by a hash chain over those tokens: the chain
 * starts at a root (ss_prefix_root: the model and where the tokens started, the zero state or a
 * stored state) and takes one step per token (ss_prefix_step). A request then finds the longest
 * stored state whose chain equals the chain of a prefix of its own tokens (ss_store_prefix_find)
 * and resumes from it. Chains are 128-bit XXH3 values: equal chains mean equal token sequences
 * from the same root, up to a 2^-128 chance.
 *
 * Index entries (database "prefix", written in the put's transaction, removed with the state):
 * the state's chain -> id, its chain rooted at "any start" -> id (to tell a miss caused by a
 * different start from no candidate at all), and its length per model (for the shortest one).
 */
#define SS_PREFIX_LEN 16
typedef struct ss_prefix {
    unsigned char h[SS_PREFIX_LEN];
} ss_prefix;

/* The root of a chain for tokens fed to `model` (fingerprint) from the zero state (parent NULL),
 * from stored state `parent` (an id without a chain of its own), or from anywhere (parent "*":
 * the "any start" chain). */
void ss_prefix_root(const char *model, const char *parent, ss_prefix *out);
/* The same for a tenant's chains: each tenant's chains start at roots of their own, so one tenant
 * never resumes from (nor probes) another's prefixes. NULL or "" = the default tenant, whose roots
 * are ss_prefix_root's (indexes written before tenants stay valid). */
void ss_prefix_root_tenant(const char *model, const char *parent, const char *tenant,
                           ss_prefix *out);
/* Extend the chain h by one token. */
void ss_prefix_step(ss_prefix *h, int32_t token);

/* What a state is indexed under (ss_store_put_prefixed). */
struct ss_store_prefix_entry {
    ss_prefix chain;   /* from its true root: the zero state or a stored state */
    ss_prefix any;     /* the same tokens from the "any start" root */
    const char *model; /* fingerprint */
    int64_t n_tokens;  /* tokens the chain covers */
};

/* ss_store_put, indexing the new state under pe (NULL: not indexed, as ss_store_put). */
ss_err ss_store_put_prefixed(ss_store *s, const char *record_json, const void *blob,
                             size_t blob_len, const ss_store_prefix_entry *pe, char **record_out);

/* The chain a stored state (id) is indexed under: SS_OK and *found 1/0; SS_ERR_IO. */
ss_err ss_store_prefix_of(ss_store *s, const char *id, ss_prefix *chain, int *found);

/*
 * The longest indexed prefix: chains[i] is the chain after i + 1 tokens (n of them). Probes from
 * the longest down and sets *pos (the tokens covered) and id (SS_STORE_ID_LEN + 1 bytes) of the
 * newest state indexed there. any: probe the "any start" chains instead. SS_ERR_NOT_FOUND when
 * none is indexed, SS_ERR_IO.
 */
ss_err ss_store_prefix_find(ss_store *s, const ss_prefix *chains, int n, int any, int *pos,
                            char *id);

/* Fewest tokens among the states indexed for model: *n_tokens (-1: none). SS_ERR_IO. */
ss_err ss_store_prefix_shortest(ss_store *s, const char *model, int64_t *n_tokens);

#endif
