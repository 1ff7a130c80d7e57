/*
 * env.c - the LMDB environment of a store: transactions and the map (grown on demand by
 * doubling), open/close, and the health check.
 *
 * Why LMDB: readers never block (a 30 MB blob is served straight from the map), one writer commits
 * durably with fsync, and a crash can never leave half a record. What LMDB leaves to us is the map
 * size; we grow it on demand (doubling) instead of reserving the disk up front.
 *
 * Locking: write_mu admits one writer at a time; map_lock (a rwlock) is held shared by every
 * transaction of this process and exclusively while the map is resized, because
 * mdb_env_set_mapsize() requires that no transaction of the process is live. The order is always
 * write_mu, then map_lock. The rwlock prefers writers so a resize is not starved by a stream of
 * readers, which is also why no code path takes it shared twice (and why a view callback may not
 * call back into the store).
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

_Thread_local const ss_store *store_viewing;

/* Translate an LMDB/errno code: ss_fail with "<context>: <LMDB's text>". */
__attribute__((format(printf, 2, 3))) ss_err store_mdb_fail(int rc, const char *fmt, ...)
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

/* ---- transactions and the map ---------------------------------------------------------------- */

ss_err store_reentry_fail(const ss_store *s)
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
        err = store_mdb_fail(rc, "store %s: adopting the grown map", s->dir);
    }
    pthread_rwlock_unlock(&s->map_lock);
    return err;
}

/*
 * Begin a transaction with map_lock held shared; end it with store_txn_end() (read) or commit/abort
 * plus unlock (write). Handles MDB_MAP_RESIZED (another process grew the map) and a reader table
 * full of stale slots (dead processes) by retrying.
 */
ss_err store_txn_begin(ss_store *s, unsigned flags, MDB_txn **txn)
{
    if (store_viewing == s) return store_reentry_fail(s);
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
        return store_mdb_fail(rc, "store %s: begin transaction", s->dir);
    }
}

/* End a read transaction begun by store_txn_begin (no-op for NULL). */
void store_txn_end(ss_store *s, MDB_txn *txn)
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
        err =
            store_mdb_fail(rc, "store %s: growing the map from %zu to %zu bytes (reopen the store)",
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
    return store_mdb_fail(rc, "store %s: commit", s->dir);
}


int store_w_put(wtx *w, MDB_dbi dbi, const void *k, size_t klen, MDB_val *val, unsigned flags)
{
    MDB_val key = {klen, (void *)k};
    int rc = mdb_put(w->txn, dbi, &key, val, flags);
    if (rc) w->rc = rc;
    return rc;
}

/* Delete key (all of it); a missing key is not an error. */
int store_w_del(wtx *w, MDB_dbi dbi, const void *k, size_t klen)
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
ss_err store_write_txn(ss_store *s, size_t need, write_fn fn, void *ctx)
{
    if (s->read_only) return ss_fail(SS_ERR_PERM, "store %s is open read-only", s->dir);
    if (store_viewing == s) return store_reentry_fail(s);
    ss_err err = SS_OK;
    pthread_mutex_lock(&s->write_mu);
    for (int attempt = 0;; attempt++) {
        wtx w = {NULL, 0};
        err = store_txn_begin(s, 0, &w.txn);
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

/* ---- open / close ---------------------------------------------------------------------------- */

ss_store_params ss_store_default_params(void)
{
    ss_store_params p = {.initial_map_size = DEFAULT_MAP_SIZE, .remote_wait_replicas = 1,
                         .remote_wait_ms = 2000};
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

    err = store_txn_begin(s, s->read_only ? MDB_RDONLY : 0, &txn);
    if (err) return err;
    int crc = mdb_dbi_open(txn, "chunks", dflags, &s->chunks);
    if (crc && !(crc == MDB_NOTFOUND && s->read_only)) {
        err = store_mdb_fail(crc, "store %s: opening database 'chunks'", s->dir);
        goto out;
    }
    s->has_chunks = crc == 0;
    crc = mdb_dbi_open(txn, "prefix", dflags | MDB_DUPSORT, &s->prefix);
    if (crc && !(crc == MDB_NOTFOUND && s->read_only)) {
        err = store_mdb_fail(crc, "store %s: opening database 'prefix'", s->dir);
        goto out;
    }
    s->has_prefix = crc == 0;
    crc = mdb_dbi_open(txn, "keys", dflags, &s->keydb);
    if (crc && !(crc == MDB_NOTFOUND && s->read_only)) {
        err = store_mdb_fail(crc, "store %s: opening database 'keys'", s->dir);
        goto out;
    }
    s->has_keys = crc == 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int rc = mdb_dbi_open(txn, names[i], dflags, dbis[i]);
        if (rc == MDB_NOTFOUND) {
            err = ss_fail(SS_ERR_FORMAT, "%s is not a statesoup store (no '%s' database)", s->dir,
                          names[i]);
            goto out;
        }
        if (rc) {
            err = store_mdb_fail(rc, "store %s: opening database '%s'", s->dir, names[i]);
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
        err = store_mdb_fail(rc, "store %s: reading the format version", s->dir);
        goto out;
    }
    /* Committing (a read txn too) makes the handles usable by later transactions. */
    rc = mdb_txn_commit(txn);
    txn = NULL;
    pthread_rwlock_unlock(&s->map_lock);
    if (rc) err = store_mdb_fail(rc, "store %s: creating the databases", s->dir);
out:
    store_txn_end(s, txn);
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

/* The map lock (preferring writers, so that a growing map is not starved by readers) and the
 * write mutex; locks_ready tells ss_store_close to destroy them. */
static ss_err init_locks(ss_store *s)
{
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
#ifdef __GLIBC__
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    int rc = pthread_rwlock_init(&s->map_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (rc || pthread_mutex_init(&s->write_mu, NULL)) {
        if (!rc) pthread_rwlock_destroy(&s->map_lock);
        return ss_fail(SS_ERR_NOMEM, "store: cannot create locks");
    }
    s->locks_ready = 1;
    return SS_OK;
}

/*
 * Set s->max_map_size (whole OS pages, at least 16; 0 = no limit) and *map, the size to map at
 * first: p->initial_map_size (default DEFAULT_MAP_SIZE) within the limit, but never less than the
 * data file. Read-only, SS_ERR_NOT_FOUND when there is no data file.
 */
static ss_err initial_map_size(ss_store *s, const ss_store_params *p, const char *data_path,
                               size_t *map)
{
    long ps = sysconf(_SC_PAGESIZE);
    size_t os_page = ps > 0 ? (size_t)ps : 4096;
    s->max_map_size = p->max_map_size ? p->max_map_size / os_page * os_page : 0;
    if (s->max_map_size && s->max_map_size < 16 * os_page) s->max_map_size = 16 * os_page;

    struct stat st;
    size_t file_size = 0;
    if (stat(data_path, &st) == 0) {
        file_size = (size_t)st.st_size;
    } else if (s->read_only) {
        return ss_fail(errno == ENOENT ? SS_ERR_NOT_FOUND : SS_ERR_IO, "no store in %s: %s",
                       s->dir, strerror(errno));
    }
    *map = p->initial_map_size ? p->initial_map_size : DEFAULT_MAP_SIZE;
    if (s->max_map_size && *map > s->max_map_size) *map = s->max_map_size;
    if (file_size > *map) *map = file_size;
    *map = round_up(*map, os_page);
    return SS_OK;
}

/* Create and open the LMDB environment in s->dir with a map of `map` bytes (read-only as s says;
 * no_sync: no fsync at commit), clear the reader slots of crashed processes, note the page size. */
static ss_err open_env(ss_store *s, size_t map, int no_sync)
{
    int rc = mdb_env_create(&s->env);
    if (rc) {
        s->env = NULL;
        return store_mdb_fail(rc, "store %s: creating the environment", s->dir);
    }
    if ((rc = mdb_env_set_maxdbs(s->env, 16)) ||
        (rc = mdb_env_set_maxreaders(s->env, MAX_READERS)) ||
        (rc = mdb_env_set_mapsize(s->env, map))) {
        return store_mdb_fail(rc, "store %s: configuring the environment", s->dir);
    }
    unsigned flags = MDB_NOTLS | (s->read_only ? MDB_RDONLY : 0) | (no_sync ? MDB_NOSYNC : 0);
    rc = mdb_env_open(s->env, s->dir, flags, 0600);
    if (rc) return store_mdb_fail(rc, "store %s: opening", s->dir);
    if (!s->read_only) mdb_reader_check(s->env, NULL); /* slots of crashed readers */
    MDB_stat est;
    mdb_env_stat(s->env, &est);
    s->page_size = est.ms_psize;
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
    size_t map = 0;

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
    if ((err = init_locks(s))) goto out;
    s->read_only = p.read_only != 0;
    if (!s->read_only && (err = make_dirs(dir))) goto out;
    if ((err = initial_map_size(s, &p, data_path, &map))) goto out;
    if ((err = open_env(s, map, p.no_sync))) goto out;
    if ((err = check_file_covers_pages(s, data_path))) goto out;

    err = open_dbs(s);
    if (err) goto out;
    if ((err = store_lineage_open(s))) goto out;
    s->data_path = data_path;
    data_path = NULL;
    if (p.remote && (err = remote_open(s, &p))) goto out;
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
    remote_close(s);
    store_keys_free(s);
    if (s->env) mdb_env_close(s->env);
    if (s->locks_ready) {
        pthread_rwlock_destroy(&s->map_lock);
        pthread_mutex_destroy(&s->write_mu);
    }
    free(s->dir);
    free(s->data_path);
    free(s);
}

void ss_store_remove(const char *dir)
{
    /* the marker is remote.c's (remote-cache: the prefix the local tier caches) */
    static const char *const files[] = {"data.mdb", "lock.mdb", "remote-cache"};
    size_t cap = strlen(dir) + 16;
    char *path = malloc(cap);
    for (size_t i = 0; path && i < sizeof files / sizeof *files; i++) {
        snprintf(path, cap, "%s/%s", dir, files[i]);
        unlink(path);
    }
    free(path);
    rmdir(dir);
}

/*
 * The data file open in LMDB must still be the one at dir/data.mdb (same device and inode): a
 * deleted or replaced directory keeps the old file open, and writes into it are acknowledged and
 * then lost. SS_ERR_UNAVAILABLE with the reason.
 */
ss_err store_check_file(ss_store *s)
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
    ss_err err = store_check_file(s);
    if (err) return err;
    if (s->remote && (err = remote_check(s))) return err;
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
