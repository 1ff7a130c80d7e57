/*
 * chunks.c - reading blobs without a second pass: views straight from the map, piece-by-piece
 * reads that verify each 1 MiB piece just before it is used (on several threads), the merge
 * (sum and checksum fused) and blob copies (copy and checksum fused).
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
#include <unistd.h>
#include <xxhash.h>

#include "hash.h"
#include "internal.h"
#include "ss_util.h"

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
static ss_err view_impl(ss_store *s, const char *const *refs, int n, const char *expect_model,
                     ss_store_view_fn fn, void *user)
{
    REMOTE_ROUTE(s, remote_view(s, refs, n, expect_model, fn, user));
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
    err = store_txn_begin(s, MDB_RDONLY, &txn);
    if (err) goto out;
    for (int i = 0; i < n; i++) {
        char id[ID_LEN + 1];
        MDB_val rec, blob;
        if ((err = store_find_blob(s, txn, refs[i], expect_model, id, &rec, &record, &blob)))
            goto out;
        if ((err = store_check_sum(id, record, &blob))) goto out;
        json_decref(record);
        record = NULL;
        lens[i] = blob.mv_size;
        if ((err = aligned_blob(&blob, &copies[i], &ptrs[i]))) goto out;
    }
    store_viewing = s;
    err = fn(user, ptrs, lens, n);
    store_viewing = NULL;
out:
    store_txn_end(s, txn);
    json_decref(record);
    for (int i = 0; copies && i < n; i++) free(copies[i]);
    free(copies);
    free(lens);
    free(ptrs);
    return err;
}

ss_err ss_store_view(ss_store *s, const char *const *refs, int n, const char *expect_model,
                     ss_store_view_fn fn, void *user)
{
    return store_count_corrupt(s, view_impl(s, refs, n, expect_model, fn, user));
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
    store_viewing = s;
    for (int t = 1; t < n_threads; t++)
        if (pthread_create(&th[n_th], NULL, chunk_worker, j) == 0) n_th++;
    chunk_worker(j);
    for (int t = 0; t < n_th; t++) pthread_join(th[t], NULL);
    store_viewing = NULL;
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
        return store_mdb_fail(rc, "store %s: reading checksums of %s", s->dir, id);
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
    if (store_viewing == s) return store_reentry_fail(s);
    if ((err = store_txn_begin(s, MDB_RDONLY, &txn))) return err;
    size_t want_len = j->len;
    for (int i = 0; i < n; i++) {
        MDB_val rec, blob;
        if ((err = store_find_blob(s, txn, refs[i], expect_model, ids[i], &rec, &record, &blob)))
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
        if (!sums[i] && (err = store_check_sum(ids[i], record, &blob))) goto out;
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
    store_txn_end(s, txn);
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
static ss_err view_chunks_impl(ss_store *s, const char *const *refs, int n,
                               const char *expect_model, int n_threads, ss_store_chunk_fn fn,
                               void *user)
{
    REMOTE_ROUTE(s, remote_view_chunks(s, refs, n, expect_model, n_threads, fn, user));
    if (!fn) return ss_fail(SS_ERR_INVALID, "store view: no function given");
    chunk_job j = {.mode = CHUNK_FN, .fn = fn, .user = user};
    return chunked_read(s, refs, n, expect_model, n_threads, &j);
}

ss_err ss_store_view_chunks(ss_store *s, const char *const *refs, int n, const char *expect_model,
                            int n_threads, ss_store_chunk_fn fn, void *user)
{
    return store_count_corrupt(s, view_chunks_impl(s, refs, n, expect_model, n_threads, fn, user));
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
    REMOTE_ROUTE(s, remote_merge_f32(s, refs, w, n, expect_model, out, out_bytes, n_threads, src));
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
static ss_err get_blob_impl(ss_store *s, const char *ref, const char *expect_model, void *dst,
                         size_t cap, size_t *len, char **record_json)
{
    REMOTE_ROUTE(s, remote_get_blob(s, ref, expect_model, dst, cap, len, record_json));
    ss_err err = SS_OK;
    MDB_txn *txn = NULL;
    json_t *record = NULL;
    char id[ID_LEN + 1];
    MDB_val rec, blob;

    if (!s) return ss_fail(SS_ERR_INVALID, "store: NULL store");
    err = store_txn_begin(s, MDB_RDONLY, &txn);
    if (err) return err;
    if ((err = store_find_blob(s, txn, ref, expect_model, id, &rec, &record, &blob))) goto out;
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
    if (record_json && (err = store_copy_record(id, &rec, record_json))) goto out;
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
        err = store_check_hash(id, record, h);
    }
    if (err && record_json) {
        free(*record_json);
        *record_json = NULL;
    }
out:
    store_txn_end(s, txn);
    json_decref(record);
    return err;
}

ss_err ss_store_get_blob(ss_store *s, const char *ref, const char *expect_model, void *dst,
                         size_t cap, size_t *len, char **record_json)
{
    return store_count_corrupt(s, get_blob_impl(s, ref, expect_model, dst, cap, len, record_json));
}
