/*
 * remote.c - the shared tier: Redis Cluster as the catalog of record, this store's LMDB as a
 * bounded LRU read-through cache of it (docs/scale-out.md).
 *
 * Key layout (P = the prefix, "ss" by default). Everything a put or a delete changes together
 * lives in the one hash slot of the tag {P}, so each is one atomic Lua script:
 *   {P}:rec      HASH  id -> record JSON text (the same canonical text LMDB keeps, with its
 *                      "tenant" and "shared" fields)
 *   {P}:name     HASH  name key -> id (names unique per tenant: the put script refuses a taken
 *                      one). The name key is LMDB's: the name for the default tenant, else
 *                      tenant, 0x00, name (internal.h)
 *   {P}:tk       HASH  id -> member (below)
 *   {P}:time     ZSET  score 0, member = 16 hex of be64(INT64_MAX - created_ns) + id + name:
 *                      lexicographic order is newest first, as LMDB's time index
 *   {P}:tag:<t>  ZSET  the same members, per tag
 *   {P}:meta     HASH  last_ns (20 digits), n_states, blob_bytes
 *   {P}:pending  ZSET  "id:n_chunks" scored by a deadline (ms): blobs written whose record is not
 *                      committed yet, or whose record was deleted; the janitor removes their
 *                      chunks once the deadline passes and no record names them
 * and the blob, in pieces of CHUNK_BYTES under P:blob:{id:k}: each piece its own slot, so a large
 * state spreads over the primaries. A put writes the pieces first (each acknowledged by WAIT),
 * then the record, name, indexes and counters in one script (acknowledged by WAIT); nothing ever
 * points at a blob that is not all there. The record's checksum (XXH3-64 of the whole blob) is
 * checked again when a replica fetches the pieces, so the blob is verified end to end.
 *
 * Deletes are published on channel P:deleted (the id); every replica's subscriber thread drops
 * its cached copy, and on each (re)connect re-checks every cached id against {P}:rec, since
 * messages sent while it was away are lost. Names and listings are always resolved through Redis
 * while it answers; when it does not, reads fall back to what this replica has cached and writes
 * fail with SS_ERR_UNAVAILABLE (503).
 *
 * Tenants (ss_store.h): the scope of the call (store_scope) picks the name key; a state found is
 * checked against it from the record text Redis returned, and listings filter on the records'
 * tenant and shared fields inside the script. Reads of the local cache that follow such a check
 * run unscoped (the cached copy's shared flag may be older than the catalog's); with Redis
 * unreachable the cache is read under the scope.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hash.h"
#include "internal.h"
#include "redis_cluster.h"
#include "ss_util.h"

_Thread_local int store_local_only;

#define KEY_MAX      192
#define MEMBER_HEAD  (16 + ID_LEN) /* hex time + id, before the name */
#define PENDING_MS   (10 * 60 * 1000)
#define JANITOR_MS   (30 * 1000)
#define PROBE_MS     500 /* while commands find no cluster, the subscriber asks it this often */
#define DEFAULT_CACHE ((size_t)1 << 30)

typedef struct lru_entry {
    char id[ID_LEN + 1];
    uint64_t bytes, tick;
} lru_entry;

typedef struct ss_remote {
    ss_rc *rc;
    char prefix[64];
    char k_rec[KEY_MAX], k_name[KEY_MAX], k_tk[KEY_MAX], k_time[KEY_MAX], k_meta[KEY_MAX],
        k_pending[KEY_MAX], k_tagpfx[KEY_MAX], chan[KEY_MAX];
    int wait_replicas, wait_ms;
    size_t cache_max;
    pthread_mutex_t mu; /* the LRU list and last_err */
    lru_entry *lru;
    size_t n_lru, cap_lru;
    uint64_t tick, cache_bytes;
    char last_err[256];
    atomic_int up;
    /*
     * Set when a command found no cluster for its whole retry budget (--remote-retry), cleared
     * by the next answer: meanwhile commands answer SS_ERR_UNAVAILABLE at once (reads are then
     * served from the cache, writes get 503) instead of each spending the budget again on a
     * cluster that is not there (with four lanes, a queue of requests waited 5 s per four), and
     * the subscriber thread probes the cluster every PROBE_MS (a lost subscription alone does not
     * set it: commands may still get through a failover).
     */
    atomic_int failing;
    atomic_uint_least64_t errors, hits, misses, evictions, short_circuits;
    atomic_int stop;
    pthread_t sub;
    int sub_started;
} ss_remote;

/* Run `stmt` against the local LMDB tier, unscoped: the refs were resolved and checked against
 * the scope through Redis just before. */
#define LOCAL_CHECKED(stmt)                                                                        \
    do {                                                                                           \
        const ss_store_scope *saved_sc_ = store_scope;                                             \
        store_scope = NULL;                                                                        \
        LOCAL(stmt);                                                                               \
        store_scope = saved_sc_;                                                                   \
    } while (0)

/* Run `stmt` against the local LMDB tier (no routing back here). */
#define LOCAL(stmt)                                                                                \
    do {                                                                                           \
        int saved_ = store_local_only;                                                             \
        store_local_only = 1;                                                                      \
        stmt;                                                                                      \
        store_local_only = saved_;                                                                 \
    } while (0)

/* ---- scripts (all keys in the slot of {P}) --------------------------------------------------- */

/* KEYS: rec name tk time meta pending. ARGV: id name ns20 member text bytes tagpfx pend
 * fixed tenant tags... (fixed = 1: a copy keeping its own time, which may be older than the
 * newest; tenant: '' for the default one, else its states and bytes are counted in meta's
 * tn:<tenant> and tb:<tenant>, as the default tenant's are the rest of n_states, blob_bytes) */
static const char PUT_LUA[] =
    "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {'DUP', ARGV[1]} end\n"
    "if ARGV[2] ~= '' then\n"
    "  local o = redis.call('HGET', KEYS[2], ARGV[2])\n"
    "  if o then return {'EXISTS', o} end\n"
    "end\n"
    "local last = redis.call('HGET', KEYS[5], 'last_ns')\n"
    "if ARGV[9] == '0' and last and last >= ARGV[3] then return {'RETRY', last} end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])\n"
    "redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])\n"
    "if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[2], ARGV[1]) end\n"
    "redis.call('ZADD', KEYS[4], 0, ARGV[4])\n"
    "for i = 11, #ARGV do redis.call('ZADD', ARGV[7] .. ARGV[i], 0, ARGV[4]) end\n"
    "if not last or last < ARGV[3] then redis.call('HSET', KEYS[5], 'last_ns', ARGV[3]) end\n"
    "redis.call('HINCRBY', KEYS[5], 'n_states', 1)\n"
    "redis.call('HINCRBY', KEYS[5], 'blob_bytes', ARGV[6])\n"
    "if ARGV[10] ~= '' then\n"
    "  redis.call('HINCRBY', KEYS[5], 'tn:' .. ARGV[10], 1)\n"
    "  redis.call('HINCRBY', KEYS[5], 'tb:' .. ARGV[10], ARGV[6])\n"
    "end\n"
    "redis.call('ZREM', KEYS[6], ARGV[8])\n"
    "return {'OK', ARGV[1]}\n";

/* KEYS: rec name tk. ARGV: ref is_id. -> {} or {id, text, member} */
static const char GET_LUA[] =
    "local id = ARGV[1]\n"
    "if ARGV[2] == '0' then id = redis.call('HGET', KEYS[2], ARGV[1]) end\n"
    "if not id then return {} end\n"
    "local t = redis.call('HGET', KEYS[1], id)\n"
    "if not t then return {} end\n"
    "return {id, t, redis.call('HGET', KEYS[3], id) or ''}\n";

/* KEYS: rec name tk time meta pending. ARGV: ref is_id tagpfx deadline. -> {} or {id, text} */
static const char DEL_LUA[] =
    "local id = ARGV[1]\n"
    "if ARGV[2] == '0' then id = redis.call('HGET', KEYS[2], ARGV[1]) end\n"
    "if not id then return {} end\n"
    "local t = redis.call('HGET', KEYS[1], id)\n"
    "if not t then return {} end\n"
    "local m = redis.call('HGET', KEYS[3], id)\n"
    "local r = cjson.decode(t)\n"
    "redis.call('HDEL', KEYS[1], id)\n"
    "redis.call('HDEL', KEYS[3], id)\n"
    "if type(r.name) == 'string' then\n"
    "  local nk = r.name\n"
    "  if type(r.tenant) == 'string' then nk = r.tenant .. '\\0' .. r.name end\n"
    "  if redis.call('HGET', KEYS[2], nk) == id then redis.call('HDEL', KEYS[2], nk) end\n"
    "end\n"
    "if m then\n"
    "  redis.call('ZREM', KEYS[4], m)\n"
    "  if type(r.tags) == 'table' then\n"
    "    for _, tg in ipairs(r.tags) do redis.call('ZREM', ARGV[3] .. tg, m) end\n"
    "  end\n"
    "end\n"
    "redis.call('HINCRBY', KEYS[5], 'n_states', -1)\n"
    "redis.call('HINCRBY', KEYS[5], 'blob_bytes', -tonumber(r.bytes))\n"
    "if type(r.tenant) == 'string' then\n"
    "  local n = redis.call('HINCRBY', KEYS[5], 'tn:' .. r.tenant, -1)\n"
    "  redis.call('HINCRBY', KEYS[5], 'tb:' .. r.tenant, -tonumber(r.bytes))\n"
    "  if n <= 0 then redis.call('HDEL', KEYS[5], 'tn:' .. r.tenant, 'tb:' .. r.tenant) end\n"
    "end\n"
    "redis.call('ZADD', KEYS[6], ARGV[4], id .. ':' .. math.ceil(tonumber(r.bytes) / 1048576))\n"
    "return {id, t}\n";

/* KEYS: rec meta. The per-tenant totals (PUT_LUA's tn: and tb: fields) counted from the records
 * once, when meta has no 'tenants' mark: a catalog written before they were kept, or after an
 * operator's `HDEL {P}:meta tenants` (a recount). One pass over every record: blocks the slot's
 * node for about a second per 100,000 states, once. -> 1 when it counted, else 0 */
static const char TENANTS_LUA[] =
    "if redis.call('HEXISTS', KEYS[2], 'tenants') == 1 then return 0 end\n"
    "for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do\n"
    "  local p = string.sub(f, 1, 3)\n"
    "  if p == 'tn:' or p == 'tb:' then redis.call('HDEL', KEYS[2], f) end\n"
    "end\n"
    "local n, b = {}, {}\n"
    "for _, t in ipairs(redis.call('HVALS', KEYS[1])) do\n"
    "  local r = cjson.decode(t)\n"
    "  if type(r.tenant) == 'string' then\n"
    "    n[r.tenant] = (n[r.tenant] or 0) + 1\n"
    "    b[r.tenant] = (b[r.tenant] or 0) + tonumber(r.bytes)\n"
    "  end\n"
    "end\n"
    "for t, c in pairs(n) do\n"
    "  redis.call('HSET', KEYS[2], 'tn:' .. t, c, 'tb:' .. t, b[t])\n"
    "end\n"
    "redis.call('HSET', KEYS[2], 'tenants', '1')\n"
    "return 1\n";

/* KEYS: rec time. ARGV: index key or '', prefix, limit, after (member head) or '', tenant,
 * scoped ('1': only that tenant's states and shared ones; a record that mentions neither field
 * is the default tenant's and unshared without decoding it). -> {next head or '', skipped,
 * texts...} */
static const char LIST_LUA[] =
    "local key = KEYS[2]\n"
    "if ARGV[1] ~= '' then key = ARGV[1] end\n"
    "local lo = '-'\n"
    "if ARGV[4] ~= '' then lo = '(' .. ARGV[4] .. '\\127' end\n"
    "local pre, limit = ARGV[2], tonumber(ARGV[3])\n"
    "local out, skipped, last, more = {}, 0, '', false\n"
    "while not more do\n"
    "  local batch = redis.call('ZRANGEBYLEX', key, lo, '+', 'LIMIT', 0, 256)\n"
    "  if #batch == 0 then break end\n"
    "  for _, m in ipairs(batch) do\n"
    "    local name = string.sub(m, 52)\n"
    "    if pre == '' or string.sub(name, 1, #pre) == pre then\n"
    "      local t = redis.call('HGET', KEYS[1], string.sub(m, 17, 51))\n"
    "      local ok = true\n"
    "      if t and ARGV[6] == '1' then\n"
    "        if string.find(t, '\"tenant\":', 1, true) or string.find(t, '\"shared\":', 1, true) "
    "then\n"
    "          local r = cjson.decode(t)\n"
    "          local tn = r.tenant\n"
    "          if type(tn) ~= 'string' then tn = '' end\n"
    "          ok = tn == ARGV[5] or r.shared == true\n"
    "        else\n"
    "          ok = ARGV[5] == ''\n"
    "        end\n"
    "      end\n"
    "      if ok then\n"
    "        if #out == limit then more = true break end\n"
    "        if t then out[#out + 1] = t else skipped = skipped + 1 end\n"
    "        last = string.sub(m, 1, 51)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  lo = '(' .. batch[#batch]\n"
    "end\n"
    "if not more then last = '' end\n"
    "local res = {last, skipped}\n"
    "for i = 1, #out do res[#res + 1] = out[i] end\n"
    "return res\n";

/* KEYS: rec. ARGV: id, new record text. -> 1, or 0 when the state is gone */
static const char SHARE_LUA[] =
    "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "return 1\n";

/* ---- commands -------------------------------------------------------------------------------- */

static void note_down(ss_remote *r, const char *why)
{
    atomic_store(&r->up, 0);
    atomic_fetch_add(&r->errors, 1);
    pthread_mutex_lock(&r->mu);
    snprintf(r->last_err, sizeof r->last_err, "%s", why);
    pthread_mutex_unlock(&r->mu);
}

/* The last reason the cluster did not answer, copied out under the lock. */
static void last_err(ss_remote *r, char *why) /* why: sizeof r->last_err bytes */
{
    pthread_mutex_lock(&r->mu);
    memcpy(why, r->last_err, sizeof r->last_err);
    pthread_mutex_unlock(&r->mu);
}

/*
 * One routed command (key argv[key_arg]); with `wait`, acknowledged by the configured number of
 * replicas. NULL on failure with SS_ERR_UNAVAILABLE set (and the tier marked down when the cluster
 * did not answer). Unless `probe` (the subscriber's), answered at once while `failing` is set.
 */
static redisReply *cmd_as(ss_remote *r, int probe, int key_arg, int argc, const char **argv,
                          const size_t *lens, int wait)
{
    long long acked = 0;
    int nw = wait ? r->wait_replicas : 0;
    char why[sizeof r->last_err];
    if (!probe && atomic_load(&r->failing)) {
        atomic_fetch_add(&r->errors, 1);
        atomic_fetch_add(&r->short_circuits, 1);
        last_err(r, why);
        ss_fail(SS_ERR_UNAVAILABLE, "remote catalog unavailable: %s (not tried again: the "
                "cluster did not answer the last command; it is probed every %d ms)", why,
                PROBE_MS);
        return NULL;
    }
    redisReply *rep = ss_rc_command(r->rc, key_arg, argc, argv, lens, nw, r->wait_ms, &acked);
    if (!rep) {
        note_down(r, ss_errmsg());
        atomic_store(&r->failing, 1);
        last_err(r, why);
        ss_fail(SS_ERR_UNAVAILABLE, "remote catalog unavailable: %s", why);
        return NULL;
    }
    atomic_store(&r->up, 1);
    atomic_store(&r->failing, 0);
    if (rep->type == REDIS_REPLY_ERROR) {
        ss_fail(SS_ERR_UNAVAILABLE, "remote catalog: %s", rep->str);
        freeReplyObject(rep);
        return NULL;
    }
    if (nw > 0 && acked < nw) {
        freeReplyObject(rep);
        ss_fail(SS_ERR_UNAVAILABLE, "remote catalog: only %lld of %d Redis replicas confirmed the "
                "write within %d ms", acked, nw, r->wait_ms);
        return NULL;
    }
    return rep;
}

/* A command of a request (cmd_as, not a probe). */
static redisReply *cmd(ss_remote *r, int key_arg, int argc, const char **argv, const size_t *lens,
                       int wait)
{
    return cmd_as(r, 0, key_arg, argc, argv, lens, wait);
}

/* Argument lists with their lengths. */
typedef struct args {
    const char *v[96]; /* EVAL, script, count, 6 keys, 10 arguments, up to SS_REC_MAX_TAGS tags */
    size_t l[96];
    int n;
} args;

static void arg(args *a, const char *s, size_t len)
{
    if (a->n < 96) {
        a->v[a->n] = s;
        a->l[a->n++] = len;
    }
}
static void args_str(args *a, const char *s)
{
    arg(a, s, strlen(s));
}

static void eval_head(ss_remote *r, args *a, const char *script, int nkeys, const char *const *keys)
{
    static const char *const nk[] = {"0", "1", "2", "3", "4", "5", "6"};
    a->n = 0;
    args_str(a, "EVAL");
    args_str(a, script);
    args_str(a, nk[nkeys]);
    for (int i = 0; i < nkeys; i++) args_str(a, keys[i]);
    (void)r;
}

static void chunk_key(const ss_remote *r, const char *id, size_t k, char *out)
{
    snprintf(out, KEY_MAX, "%s:blob:{%s:%zu}", r->prefix, id, k);
}

static size_t n_chunks(uint64_t bytes)
{
    return (size_t)((bytes + CHUNK_BYTES - 1) / CHUNK_BYTES);
}

/* ---- the local cache (LRU over blob bytes) --------------------------------------------------- */

static void lru_touch(ss_remote *r, const char *id, uint64_t bytes)
{
    pthread_mutex_lock(&r->mu);
    size_t i = 0;
    while (i < r->n_lru && strcmp(r->lru[i].id, id)) i++;
    if (i == r->n_lru) {
        if (r->n_lru == r->cap_lru) {
            size_t cap = r->cap_lru ? 2 * r->cap_lru : 64;
            lru_entry *e = realloc(r->lru, cap * sizeof *e);
            if (!e) {
                pthread_mutex_unlock(&r->mu);
                return;
            }
            r->lru = e;
            r->cap_lru = cap;
        }
        memcpy(r->lru[i].id, id, ID_LEN + 1);
        r->lru[i].bytes = bytes;
        r->cache_bytes += bytes;
        r->n_lru++;
    }
    r->lru[i].tick = ++r->tick;
    pthread_mutex_unlock(&r->mu);
}

static void lru_forget(ss_remote *r, const char *id)
{
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_lru; i++) {
        if (strcmp(r->lru[i].id, id) == 0) {
            r->cache_bytes -= r->lru[i].bytes;
            r->lru[i] = r->lru[--r->n_lru];
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
}

static void drop_cached(ss_store *s, const char *id)
{
    LOCAL(ss_store_delete(s, id));
    lru_forget(s->remote, id);
}

/* Evict least recently used blobs until the cache fits (the newest entry always stays). */
static void lru_evict(ss_store *s)
{
    ss_remote *r = s->remote;
    for (;;) {
        char victim[ID_LEN + 1] = "";
        pthread_mutex_lock(&r->mu);
        if (r->cache_bytes > r->cache_max && r->n_lru > 1) {
            size_t best = 0;
            for (size_t i = 1; i < r->n_lru; i++)
                if (r->lru[i].tick < r->lru[best].tick) best = i;
            memcpy(victim, r->lru[best].id, ID_LEN + 1);
        }
        pthread_mutex_unlock(&r->mu);
        if (!victim[0]) return;
        drop_cached(s, victim);
        atomic_fetch_add(&r->evictions, 1);
    }
}

/* The LRU list from what the local tier holds (oldest first = least recent). */
static ss_err lru_load(ss_store *s)
{
    char *cursor = NULL;
    for (;;) {
        char *page = NULL;
        ss_err err;
        LOCAL(err = ss_store_list(s, NULL, NULL, 1000, cursor, &page));
        free(cursor);
        cursor = NULL;
        if (err) return err;
        json_t *j = json_loads(page, 0, NULL);
        free(page);
        if (!j) return ss_fail(SS_ERR_NOMEM, "store: cannot read the cache listing");
        size_t i;
        json_t *rec;
        json_array_foreach (json_object_get(j, "data"), i, rec) {
            const char *id = json_string_value(json_object_get(rec, "id"));
            json_int_t b = json_integer_value(json_object_get(rec, "bytes"));
            if (id && strlen(id) == ID_LEN) lru_touch(s->remote, id, (uint64_t)b);
        }
        const char *next = json_string_value(json_object_get(j, "next_cursor"));
        if (next) cursor = strdup(next);
        json_decref(j);
        if (!cursor) break;
    }
    /* The listing is newest first: reverse the ticks so the oldest is evicted first. */
    ss_remote *r = s->remote;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_lru; i++) r->lru[i].tick = r->n_lru - i;
    r->tick = r->n_lru;
    pthread_mutex_unlock(&r->mu);
    return SS_OK;
}

/* ---- reading from the cluster ---------------------------------------------------------------- */

static int64_t member_created(const char *member)
{
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = member[i];
        v = (v << 4) | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    return INT64_MAX - (int64_t)v;
}

/* Resolve ref through Redis: id, record text (malloc) and created_ns. SS_ERR_NOT_FOUND,
 * SS_ERR_UNAVAILABLE. */
static ss_err remote_find(ss_remote *r, const char *ref, char *id, char **text, int64_t *created)
{
    if (!ref) return ss_fail(SS_ERR_INVALID, "state reference is missing (NULL)");
    const char *keys[3] = {r->k_rec, r->k_name, r->k_tk};
    args a;
    unsigned char nk[NKEY_MAX];
    int is_id = ss_store_is_id(ref);
    eval_head(r, &a, GET_LUA, 3, keys);
    if (is_id || strlen(ref) > SS_REC_NAME_MAX)
        args_str(&a, ref);
    else
        arg(&a, (const char *)nk, store_name_key(nk, scope_tenant(store_scope), ref));
    args_str(&a, is_id ? "1" : "0");
    redisReply *rep = cmd(r, 3, a.n, a.v, a.l, 0);
    if (!rep) return SS_ERR_UNAVAILABLE;
    ss_err err = SS_OK;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements == 0) {
        err = ss_fail(SS_ERR_NOT_FOUND, "no state '%s'", ref);
    } else if (rep->elements != 3 || rep->element[0]->len != ID_LEN ||
               rep->element[2]->len < MEMBER_HEAD) {
        err = ss_fail(SS_ERR_CORRUPT, "remote catalog: damaged entry for '%s'", ref);
    } else {
        memcpy(id, rep->element[0]->str, ID_LEN);
        id[ID_LEN] = '\0';
        *created = member_created(rep->element[2]->str);
        *text = strdup(rep->element[1]->str);
        if (!*text) err = ss_fail(SS_ERR_NOMEM, "out of memory");
        /* another tenant's state answers as a missing one */
        if (!err && !store_text_reachable(*text, store_scope, NULL)) {
            free(*text);
            *text = NULL;
            err = ss_fail(SS_ERR_NOT_FOUND, "no state '%s'", ref);
        }
    }
    freeReplyObject(rep);
    return err;
}

/* The blob of `id` from its pieces, verified against the record's checksum. */
static ss_err fetch_blob(ss_remote *r, const char *id, const char *text, void **out, size_t *len)
{
    json_t *rec = json_loads(text, 0, NULL);
    if (!rec) return ss_fail(SS_ERR_CORRUPT, "remote catalog: record of %s is not JSON", id);
    json_int_t bytes = json_integer_value(json_object_get(rec, "bytes"));
    const char *sum = json_string_value(json_object_get(rec, "checksum"));
    char want[17];
    snprintf(want, sizeof want, "%s", sum ? sum : "");
    json_decref(rec);
    if (bytes <= 0) return ss_fail(SS_ERR_CORRUPT, "remote catalog: record of %s has no size", id);
    unsigned char *blob = aligned_alloc(64, round_up((size_t)bytes, 64));
    if (!blob) return ss_fail(SS_ERR_NOMEM, "out of memory for a %lld-byte state",
                              (long long)bytes);
    size_t n = n_chunks((uint64_t)bytes);
    for (size_t k = 0; k < n; k++) {
        char key[KEY_MAX];
        chunk_key(r, id, k, key);
        const char *argv[2] = {"GET", key};
        size_t lens[2] = {3, strlen(key)};
        redisReply *rep = cmd(r, 1, 2, argv, lens, 0);
        if (!rep) {
            free(blob);
            return SS_ERR_UNAVAILABLE;
        }
        size_t want_len = k + 1 < n ? CHUNK_BYTES : (size_t)bytes - k * CHUNK_BYTES;
        if (rep->type != REDIS_REPLY_STRING || rep->len != want_len) {
            freeReplyObject(rep);
            free(blob);
            return ss_fail(SS_ERR_CORRUPT, "state %s: piece %zu of its blob is missing or has the "
                           "wrong size in the remote catalog", id, k);
        }
        memcpy(blob + k * CHUNK_BYTES, rep->str, want_len);
        freeReplyObject(rep);
    }
    char got[17];
    ss_store_checksum(blob, (size_t)bytes, got);
    if (strcmp(got, want) != 0) {
        free(blob);
        return ss_fail(SS_ERR_CORRUPT, "state %s: blob from the remote catalog has checksum %s, "
                       "its record says %s", id, got, want);
    }
    *out = blob;
    *len = (size_t)bytes;
    return SS_OK;
}

/* Put a state of the catalog into the local cache (replacing a stale holder of its name). */
static ss_err cache_insert(ss_store *s, const char *id, const char *text, int64_t created,
                           const void *blob, size_t len, const ss_store_prefix_entry *pe)
{
    json_t *rec = json_loads(text, 0, NULL);
    const char *name = rec ? json_string_value(json_object_get(rec, "name")) : NULL;
    /* the name is the record's tenant's: look for a stale holder among that tenant's names */
    ss_store_scope owner = {.tenant = json_string_value(json_object_get(rec, "tenant")),
                            .admin = 1};
    const ss_store_scope *saved = store_scope;
    ss_err err = SS_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (name) {
            char *old = NULL;
            ss_err e2;
            store_scope = &owner;
            LOCAL(e2 = ss_store_get_record(s, name, &old));
            store_scope = saved;
            if (e2 == SS_OK && !strstr(old, id)) {
                json_t *o = json_loads(old, 0, NULL);
                const char *oid = o ? json_string_value(json_object_get(o, "id")) : NULL;
                if (oid) drop_cached(s, oid);
                json_decref(o);
            }
            free(old);
        }
        LOCAL(err = store_put_as(s, text, blob, len, pe, id, created, NULL));
        if (err != SS_ERR_EXISTS) break;
    }
    json_decref(rec);
    if (err == SS_OK) {
        lru_touch(s->remote, id, len);
        lru_evict(s);
    }
    return err;
}

/*
 * Make sure state `ref` (resolved through Redis) is in the local tier; *id receives its id.
 * SS_ERR_UNAVAILABLE when Redis does not answer (the caller then serves what is cached),
 * SS_ERR_NOT_FOUND, SS_ERR_CORRUPT, SS_ERR_NOMEM.
 */
static ss_err ensure_cached(ss_store *s, const char *ref, char *id)
{
    ss_remote *r = s->remote;
    char *text = NULL, *local = NULL;
    int64_t created = 0;
    ss_err err = remote_find(r, ref, id, &text, &created);
    if (err) {
        /* Gone from the catalog: this replica must not serve it from its cache either. */
        if (err == SS_ERR_NOT_FOUND && ss_store_is_id(ref)) drop_cached(s, ref);
        return err;
    }
    ss_err have;
    LOCAL_CHECKED(have = ss_store_get_record(s, id, &local));
    free(local);
    if (have == SS_OK) {
        atomic_fetch_add(&r->hits, 1);
        lru_touch(r, id, 0);
        /* The name may still point at an older local copy: a later read-through fixes that. */
        free(text);
        return SS_OK;
    }
    atomic_fetch_add(&r->misses, 1);
    void *blob = NULL;
    size_t len = 0;
    err = fetch_blob(r, id, text, &blob, &len);
    if (!err) err = cache_insert(s, id, text, created, blob, len, NULL);
    free(blob);
    free(text);
    return err;
}

/* Resolve and cache every ref; ids[i] then holds the id. With Redis unavailable the refs are
 * served from the cache as given (*fallback = 1). */
static ss_err ensure_all(ss_store *s, const char *const *refs, int n, char (*ids)[ID_LEN + 1],
                         const char **use, int *fallback)
{
    *fallback = 0;
    for (int i = 0; i < n; i++) {
        ss_err err = ensure_cached(s, refs[i], ids[i]);
        if (err == SS_ERR_UNAVAILABLE) {
            for (int k = 0; k < n; k++) use[k] = refs[k];
            *fallback = 1;
            return SS_OK;
        }
        if (err) return err;
        use[i] = ids[i];
    }
    return SS_OK;
}

/* ---- the routed public operations ------------------------------------------------------------ */

#define MAX_REFS SS_STORE_VIEW_MAX

/* A read served from the cache because the catalog did not answer: a state the cache does not hold
 * may exist all the same, so its absence is SS_ERR_UNAVAILABLE (503), not SS_ERR_NOT_FOUND. */
static ss_err fallback_result(ss_store *s, ss_err err)
{
    if (err != SS_ERR_NOT_FOUND) return err;
    ss_remote *r = s->remote;
    char local[200], why[sizeof r->last_err];
    snprintf(local, sizeof local, "%s", ss_errmsg());
    last_err(r, why);
    return ss_fail(SS_ERR_UNAVAILABLE, "remote catalog unavailable (%s), and this replica has no "
                   "cached copy: %s", why, local);
}

ss_err remote_get_record(ss_store *s, const char *ref, char **record_json)
{
    char id[ID_LEN + 1];
    int64_t created;
    ss_err err = remote_find(s->remote, ref, id, record_json, &created);
    if (err == SS_ERR_UNAVAILABLE) {
        LOCAL(err = ss_store_get_record(s, ref, record_json));
        err = fallback_result(s, err);
    }
    return err;
}

ss_err remote_get_blob(ss_store *s, const char *ref, const char *expect_model, void *dst,
                       size_t cap, size_t *len, char **record_json)
{
    ss_err err = SS_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        char id[ID_LEN + 1];
        const char *use = id;
        err = ensure_cached(s, ref, id);
        if (err == SS_ERR_UNAVAILABLE) use = ref;
        else if (err) return err;
        if (use == ref) {
            LOCAL(err = ss_store_get_blob(s, use, expect_model, dst, cap, len, record_json));
            err = fallback_result(s, err);
        } else
            LOCAL_CHECKED(err =
                              ss_store_get_blob(s, use, expect_model, dst, cap, len, record_json));
        if (err != SS_ERR_NOT_FOUND || use == ref) break; /* evicted meanwhile: once more */
    }
    return err;
}

ss_err remote_view(ss_store *s, const char *const *refs, int n, const char *expect_model,
                   ss_store_view_fn fn, void *user)
{
    if (!refs || n < 1 || n > MAX_REFS) {
        LOCAL(return ss_store_view(s, refs, n, expect_model, fn, user));
    }
    char ids[MAX_REFS][ID_LEN + 1];
    const char *use[MAX_REFS];
    ss_err err = SS_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        int fb;
        if ((err = ensure_all(s, refs, n, ids, use, &fb))) return err;
        if (fb) {
            LOCAL(err = ss_store_view(s, use, n, expect_model, fn, user));
            err = fallback_result(s, err);
        } else
            LOCAL_CHECKED(err = ss_store_view(s, use, n, expect_model, fn, user));
        if (err != SS_ERR_NOT_FOUND || fb) break;
    }
    return err;
}

ss_err remote_view_chunks(ss_store *s, const char *const *refs, int n, const char *expect_model,
                          int n_threads, ss_store_chunk_fn fn, void *user)
{
    if (!refs || n < 1 || n > MAX_REFS) {
        LOCAL(return ss_store_view_chunks(s, refs, n, expect_model, n_threads, fn, user));
    }
    char ids[MAX_REFS][ID_LEN + 1];
    const char *use[MAX_REFS];
    ss_err err = SS_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        int fb;
        if ((err = ensure_all(s, refs, n, ids, use, &fb))) return err;
        if (fb) {
            LOCAL(err = ss_store_view_chunks(s, use, n, expect_model, n_threads, fn, user));
            err = fallback_result(s, err);
        } else
            LOCAL_CHECKED(err = ss_store_view_chunks(s, use, n, expect_model, n_threads, fn, user));
        if (err != SS_ERR_NOT_FOUND || fb) break;
    }
    return err;
}

ss_err remote_merge_f32(ss_store *s, const char *const *refs, const double *w, int n,
                        const char *expect_model, float *out, size_t out_bytes, int n_threads,
                        ss_store_source *src)
{
    if (!refs || n < 1 || n > MAX_REFS) {
        LOCAL(return ss_store_merge_f32(s, refs, w, n, expect_model, out, out_bytes, n_threads,
                                        src));
    }
    char ids[MAX_REFS][ID_LEN + 1];
    const char *use[MAX_REFS];
    ss_err err = SS_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        int fb;
        if ((err = ensure_all(s, refs, n, ids, use, &fb))) return err;
        if (fb) {
            LOCAL(err = ss_store_merge_f32(s, use, w, n, expect_model, out, out_bytes, n_threads,
                                           src));
            err = fallback_result(s, err);
        } else
            LOCAL_CHECKED(err = ss_store_merge_f32(s, use, w, n, expect_model, out, out_bytes,
                                                   n_threads, src));
        if (err != SS_ERR_NOT_FOUND || fb) break;
    }
    return err;
}

/* Delete the pieces of a blob (best effort: the pending entry makes the janitor finish it). */
static void delete_pieces(ss_remote *r, const char *id, size_t n, const char *pend)
{
    int ok = 1;
    for (size_t k = 0; k < n; k++) {
        char key[KEY_MAX];
        chunk_key(r, id, k, key);
        const char *argv[2] = {"DEL", key};
        size_t lens[2] = {3, strlen(key)};
        redisReply *rep = cmd(r, 1, 2, argv, lens, 0);
        if (rep) freeReplyObject(rep);
        else ok = 0;
    }
    if (ok) {
        const char *argv[3] = {"ZREM", r->k_pending, pend};
        size_t lens[3] = {4, strlen(r->k_pending), strlen(pend)};
        redisReply *rep = cmd(r, 1, 3, argv, lens, 0);
        if (rep) freeReplyObject(rep);
    }
}

/* A put; with fixed_id, a copy keeping that id and fixed_created (ss_store_put_copy). */
static ss_err put_impl(ss_store *s, const char *record_json, const void *blob, size_t blob_len,
                       const ss_store_prefix_entry *pe, const char *fixed_id,
                       int64_t fixed_created, char **record_out)
{
    ss_remote *r = s->remote;
    json_t *rec = NULL;
    char *text = NULL;
    size_t text_len = 0;
    ss_err err;

    if (blob_len == 0 || !blob) return ss_fail(SS_ERR_INVALID, "state blob is empty");
    if (blob_len > 0xffffffffu)
        return ss_fail(SS_ERR_TOO_LARGE, "state blob of %zu bytes exceeds the 4 GiB limit",
                       blob_len);
    /* a new state is the scope's tenant's; a copy keeps the tenancy of its record */
    if ((err = ss_rec_parse_as(record_json, fixed_id != NULL, scope_tenant(store_scope), &rec)))
        return err;
    const char *name = json_string_value(json_object_get(rec, "name"));
    const char *tenant = json_string_value(json_object_get(rec, "tenant"));
    unsigned char nk[NKEY_MAX];
    size_t nk_len = name ? store_name_key(nk, tenant ? tenant : "", name) : 0;
    json_t *tags = json_object_get(rec, "tags"); /* at most SS_REC_MAX_TAGS (ss_rec_parse) */
    char sum[17], id[ID_LEN + 1] = "st_", pend[ID_LEN + 32];
    ss_store_checksum(blob, blob_len, sum);
    unsigned char rnd[16];
    if (fixed_id) {
        memcpy(id, fixed_id, ID_LEN + 1);
    } else {
        if ((err = ss_random_bytes(rnd, sizeof rnd))) goto out;
        ss_hex(rnd, sizeof rnd, id + 3);
    }
    size_t n = n_chunks(blob_len);
    snprintf(pend, sizeof pend, "%s:%zu", id, n);

    /* 1. The blob's pieces, announced as pending so that a crash leaves no orphan for good. */
    char deadline[32];
    snprintf(deadline, sizeof deadline, "%lld", (long long)(ss_now_ns() / 1000000 + PENDING_MS));
    {
        const char *argv[4] = {"ZADD", r->k_pending, deadline, pend};
        size_t lens[4] = {4, strlen(r->k_pending), strlen(deadline), strlen(pend)};
        redisReply *rep = cmd(r, 1, 4, argv, lens, 0);
        if (!rep) {
            err = SS_ERR_UNAVAILABLE;
            goto out;
        }
        freeReplyObject(rep);
    }
    for (size_t k = 0; k < n; k++) {
        char key[KEY_MAX];
        chunk_key(r, id, k, key);
        size_t off = k * CHUNK_BYTES, plen = blob_len - off < CHUNK_BYTES ? blob_len - off
                                                                           : CHUNK_BYTES;
        const char *argv[3] = {"SET", key, (const char *)blob + off};
        size_t lens[3] = {3, strlen(key), plen};
        redisReply *rep = cmd(r, 1, 3, argv, lens, 1);
        if (!rep) {
            err = SS_ERR_UNAVAILABLE;
            goto out; /* the janitor removes the pieces written so far */
        }
        freeReplyObject(rep);
    }

    /* 2. Record, name, indexes and counters in one script, strictly after the newest state. */
    int64_t last = 0, created = 0;
    for (int attempt = 0;; attempt++) {
        created = fixed_id ? fixed_created : ss_now_ns();
        if (!fixed_id && created <= last) created = last + 1;
        free(text);
        text = NULL;
        if ((err = ss_rec_finish(rec, id, created, blob_len, sum, &text, &text_len))) goto out;
        char member[MEMBER_HEAD + SS_REC_NAME_MAX + 1], ns[24], bytes[24];
        snprintf(member, sizeof member, "%016" PRIx64 "%s%s",
                 (uint64_t)(INT64_MAX - created), id, name ? name : "");
        snprintf(ns, sizeof ns, "%020" PRId64, created);
        snprintf(bytes, sizeof bytes, "%zu", blob_len);
        const char *keys[6] = {r->k_rec, r->k_name, r->k_tk, r->k_time, r->k_meta, r->k_pending};
        args a;
        eval_head(r, &a, PUT_LUA, 6, keys);
        args_str(&a, id);
        arg(&a, (const char *)nk, nk_len);
        args_str(&a, ns);
        args_str(&a, member);
        arg(&a, text, text_len);
        args_str(&a, bytes);
        args_str(&a, r->k_tagpfx);
        args_str(&a, pend);
        args_str(&a, fixed_id ? "1" : "0");
        args_str(&a, tenant ? tenant : "");
        size_t i;
        json_t *t;
        json_array_foreach (tags, i, t) args_str(&a, json_string_value(t));
        redisReply *rep = cmd(r, 3, a.n, a.v, a.l, 1);
        if (!rep) {
            /* Not acknowledged: the record may or may not be there (a WAIT that timed out). */
            err = SS_ERR_UNAVAILABLE;
            goto out;
        }
        const char *st = rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
                                 rep->element[0]->type == REDIS_REPLY_STRING
                             ? rep->element[0]->str
                             : "";
        if (strcmp(st, "DUP") == 0 && fixed_id) {
            freeReplyObject(rep);
            err = ss_fail(SS_ERR_EXISTS, "state %s is already in the remote catalog", id);
            goto out; /* the pieces just written are its own, unchanged */
        }
        if (strcmp(st, "OK") == 0 || strcmp(st, "DUP") == 0) {
            freeReplyObject(rep);
            break;
        }
        if (strcmp(st, "EXISTS") == 0) {
            err = ss_fail(SS_ERR_EXISTS, "name '%s' is already taken by state %.40s", name,
                          rep->element[1]->str);
            freeReplyObject(rep);
            delete_pieces(r, id, n, pend);
            goto out;
        }
        if (strcmp(st, "RETRY") == 0 && attempt < 16) {
            last = strtoll(rep->element[1]->str, NULL, 10);
            freeReplyObject(rep);
            continue;
        }
        freeReplyObject(rep);
        err = ss_fail(SS_ERR_INTERNAL, "remote catalog: unexpected answer to a put");
        goto out;
    }

    /* 3. This replica keeps a copy (write-through); failing that is not the put's failure. */
    cache_insert(s, id, text, created, blob, blob_len, pe);
    ss_err_clear();
    if (record_out) {
        *record_out = text;
        text = NULL;
    }
out:
    free(text);
    json_decref(rec);
    return err;
}

ss_err remote_put(ss_store *s, const char *record_json, const void *blob, size_t blob_len,
                  const ss_store_prefix_entry *pe, char **record_out)
{
    return put_impl(s, record_json, blob, blob_len, pe, NULL, 0, record_out);
}

ss_err remote_put_copy(ss_store *s, const char *record_json, const void *blob, size_t blob_len)
{
    char id[ID_LEN + 1];
    int64_t created = 0;
    ss_err err = store_copy_identity(record_json, blob, blob_len, id, &created);
    if (err) return err;
    return put_impl(s, record_json, blob, blob_len, NULL, id, created, NULL);
}

ss_err remote_delete(ss_store *s, const char *ref)
{
    ss_remote *r = s->remote;
    if (store_scope && ref) { /* resolve under the scope, then delete by id */
        char rid[ID_LEN + 1], *text = NULL;
        int64_t created;
        int own = 0;
        ss_err err = remote_find(r, ref, rid, &text, &created);
        if (err) {
            if (err == SS_ERR_NOT_FOUND && ss_store_is_id(ref)) drop_cached(s, ref);
            return err;
        }
        store_text_reachable(text, store_scope, &own);
        free(text);
        if (!own && !store_scope->admin)
            return ss_fail(SS_ERR_PERM, "state %s is shared by another tenant: only its owner "
                                        "or an admin may delete it", rid);
        const ss_store_scope *saved = store_scope;
        store_scope = NULL;
        err = remote_delete(s, rid);
        store_scope = saved;
        return err;
    }
    char deadline[32];
    snprintf(deadline, sizeof deadline, "%lld", (long long)(ss_now_ns() / 1000000));
    const char *keys[6] = {r->k_rec, r->k_name, r->k_tk, r->k_time, r->k_meta, r->k_pending};
    args a;
    eval_head(r, &a, DEL_LUA, 6, keys);
    args_str(&a, ref);
    args_str(&a, ss_store_is_id(ref) ? "1" : "0");
    args_str(&a, r->k_tagpfx);
    args_str(&a, deadline);
    redisReply *rep = cmd(r, 3, a.n, a.v, a.l, 1);
    if (!rep) return SS_ERR_UNAVAILABLE;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
        freeReplyObject(rep);
        /* Not in the catalog: make sure no stale copy of it is served here. */
        if (ss_store_is_id(ref)) drop_cached(s, ref);
        return ss_fail(SS_ERR_NOT_FOUND, "no state '%s'", ref);
    }
    char id[ID_LEN + 1];
    snprintf(id, sizeof id, "%s", rep->element[0]->str);
    json_t *rec = json_loads(rep->element[1]->str, 0, NULL);
    json_int_t bytes = rec ? json_integer_value(json_object_get(rec, "bytes")) : 0;
    json_decref(rec);
    freeReplyObject(rep);

    /* Every replica drops its copy; then the pieces go. */
    const char *argv[3] = {"PUBLISH", r->chan, id};
    size_t lens[3] = {7, strlen(r->chan), strlen(id)};
    rep = cmd(r, 1, 3, argv, lens, 0);
    if (rep) freeReplyObject(rep);
    drop_cached(s, id);
    char pend[ID_LEN + 32];
    size_t n = n_chunks((uint64_t)bytes);
    snprintf(pend, sizeof pend, "%s:%zu", id, n);
    delete_pieces(r, id, n, pend);
    ss_err_clear();
    return SS_OK;
}

ss_err remote_share(ss_store *s, const char *ref, int shared, char **record_out)
{
    ss_remote *r = s->remote;
    char id[ID_LEN + 1], *text = NULL, *next = NULL;
    int64_t created;
    json_t *rec = NULL;
    ss_err err = remote_find(r, ref, id, &text, &created);
    if (err) return err;
    rec = json_loads(text, 0, NULL);
    if (!rec) err = ss_fail(SS_ERR_CORRUPT, "remote catalog: the record of %s is not JSON", id);
    if (!err) err = ss_rec_set_shared(rec, shared);
    if (!err && !(next = json_dumps(rec, JSON_PRESERVE_ORDER | JSON_COMPACT)))
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
    if (err) goto out;
    const char *keys[1] = {r->k_rec};
    args a;
    eval_head(r, &a, SHARE_LUA, 1, keys);
    args_str(&a, id);
    args_str(&a, next);
    redisReply *rep = cmd(r, 3, a.n, a.v, a.l, 1);
    if (!rep) {
        err = SS_ERR_UNAVAILABLE;
        goto out;
    }
    int done = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    if (!done) {
        err = ss_fail(SS_ERR_NOT_FOUND, "no state '%s'", ref);
        goto out;
    }
    /* every replica drops its cached copy (its record says otherwise now) */
    const char *argv[3] = {"PUBLISH", r->chan, id};
    size_t lens[3] = {7, strlen(r->chan), strlen(id)};
    rep = cmd(r, 1, 3, argv, lens, 0);
    if (rep) freeReplyObject(rep);
    drop_cached(s, id);
    if (record_out) {
        *record_out = next;
        next = NULL;
    }
out:
    json_decref(rec);
    free(text);
    free(next);
    return err;
}

static ss_err buf_cat(char **b, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < *len + n + 1) c *= 2;
        char *p = realloc(*b, c);
        if (!p) return ss_fail(SS_ERR_NOMEM, "out of memory");
        *b = p;
        *cap = c;
    }
    memcpy(*b + *len, s, n);
    *len += n;
    (*b)[*len] = '\0';
    return SS_OK;
}

ss_err remote_list(ss_store *s, const char *tag, const char *prefix, int limit,
                   const unsigned char *after, int has_cursor, char **page_json)
{
    ss_remote *r = s->remote;
    char head[MEMBER_HEAD + 1] = "", index[KEY_MAX + SS_REC_TAG_MAX] = "", lim[16];
    if (has_cursor) {
        snprintf(head, sizeof head, "%016" PRIx64 "%.*s", be64_get(after), ID_LEN,
                 (const char *)after + 8);
    }
    if (tag) snprintf(index, sizeof index, "%s%s", r->k_tagpfx, tag);
    snprintf(lim, sizeof lim, "%d", limit);
    const char *keys[2] = {r->k_rec, r->k_time};
    args a;
    eval_head(r, &a, LIST_LUA, 2, keys);
    args_str(&a, index);
    args_str(&a, prefix ? prefix : "");
    args_str(&a, lim);
    args_str(&a, head);
    args_str(&a, scope_tenant(store_scope));
    args_str(&a, store_scope ? "1" : "0");
    redisReply *rep = cmd(r, 3, a.n, a.v, a.l, 0);
    if (!rep) return SS_ERR_UNAVAILABLE;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2) {
        freeReplyObject(rep);
        return ss_fail(SS_ERR_INTERNAL, "remote catalog: unexpected answer to a listing");
    }
    char *b = NULL;
    size_t len = 0, cap = 0;
    ss_err err = buf_cat(&b, &len, &cap, "{\"data\":[", 9);
    for (size_t i = 2; !err && i < rep->elements; i++) {
        if (i > 2) err = buf_cat(&b, &len, &cap, ",", 1);
        if (!err) err = buf_cat(&b, &len, &cap, rep->element[i]->str, rep->element[i]->len);
    }
    char tail[64 + CURSOR_LEN];
    const redisReply *next = rep->element[0];
    if (!err && next->type == REDIS_REPLY_STRING && next->len == MEMBER_HEAD) {
        char idhex[2 * ID_LEN + 1];
        ss_hex(next->str + 16, ID_LEN, idhex);
        snprintf(tail, sizeof tail, "],\"skipped\":%lld,\"next_cursor\":\"%.16s%s\"}",
                 rep->element[1]->integer, next->str, idhex);
    } else {
        snprintf(tail, sizeof tail, "],\"skipped\":%lld,\"next_cursor\":null}",
                 rep->element[1]->integer);
    }
    if (!err) err = buf_cat(&b, &len, &cap, tail, strlen(tail));
    freeReplyObject(rep);
    if (err) {
        free(b);
        return err;
    }
    *page_json = b;
    return SS_OK;
}

void remote_stats(ss_store *s, ss_store_stats *out)
{
    ss_remote *r = s->remote;
    out->remote = 1;
    pthread_mutex_lock(&r->mu);
    out->cache_bytes = r->cache_bytes;
    pthread_mutex_unlock(&r->mu);
    const char *argv[4] = {"HMGET", r->k_meta, "n_states", "blob_bytes"};
    size_t lens[4] = {5, strlen(r->k_meta), 8, 10};
    if (atomic_load(&r->up)) {
        redisReply *rep = cmd(r, 1, 4, argv, lens, 0);
        if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2) {
            out->n_states = rep->element[0]->str ? strtoull(rep->element[0]->str, NULL, 10) : 0;
            out->blob_bytes = rep->element[1]->str ? strtoull(rep->element[1]->str, NULL, 10) : 0;
        }
        if (rep) freeReplyObject(rep);
        ss_err_clear();
    }
    out->remote_up = atomic_load(&r->up);
    out->remote_errors = atomic_load(&r->errors);
    out->remote_short_circuits = atomic_load(&r->short_circuits);
    out->cache_hits = atomic_load(&r->hits);
    out->cache_misses = atomic_load(&r->misses);
    out->cache_evictions = atomic_load(&r->evictions);
}

ss_err remote_tenant_stats(ss_store *s, ss_store_tenant_fn fn, void *user)
{
    ss_remote *r = s->remote;
    ss_store_stats total = {0};
    remote_stats(s, &total);
    if (!total.remote_up) return ss_fail(SS_ERR_UNAVAILABLE, "the remote catalog is unreachable");
    const char *keys[2] = {r->k_rec, r->k_meta};
    args a;
    eval_head(r, &a, TENANTS_LUA, 2, keys);
    redisReply *rep = cmd(r, 3, a.n, a.v, a.l, 0);
    if (!rep) return SS_ERR_UNAVAILABLE;
    freeReplyObject(rep);
    const char *argv[2] = {"HGETALL", r->k_meta};
    size_t lens[2] = {7, strlen(r->k_meta)};
    if (!(rep = cmd(r, 1, 2, argv, lens, 0))) return SS_ERR_UNAVAILABLE;
    uint64_t n_other = 0, b_other = 0;
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements; i += 2) {
        const redisReply *f = rep->element[i];
        if (f->type != REDIS_REPLY_STRING || f->len < 4 || memcmp(f->str, "tn:", 3)) continue;
        const char *t = f->str + 3;
        char bf[8 + SS_STORE_TENANT_MAX];
        snprintf(bf, sizeof bf, "tb:%s", t);
        uint64_t n = strtoull(rep->element[i + 1]->str ? rep->element[i + 1]->str : "0", NULL,
                              10),
                 b = 0;
        for (size_t k = 0; k + 1 < rep->elements; k += 2)
            if (rep->element[k]->str && !strcmp(rep->element[k]->str, bf) &&
                rep->element[k + 1]->str)
                b = strtoull(rep->element[k + 1]->str, NULL, 10);
        n_other += n;
        b_other += b;
        fn(user, t, n, b);
    }
    freeReplyObject(rep);
    if (total.n_states >= n_other)
        fn(user, "", total.n_states - n_other,
           total.blob_bytes >= b_other ? total.blob_bytes - b_other : 0);
    return SS_OK;
}

ss_err remote_check(ss_store *s)
{
    ss_remote *r = s->remote;
    if (atomic_load(&r->up)) return SS_OK;
    char why[sizeof r->last_err];
    last_err(r, why);
    return ss_fail(SS_ERR_UNAVAILABLE, "remote catalog unreachable (cached reads only, writes "
                   "refused): %s", why);
}

/* ---- the subscriber: deletes from other replicas, reconnect resync, orphan janitor ----------- */

/* Drop every cached state the catalog no longer has (deletes missed while disconnected). */
static void resync(ss_store *s)
{
    ss_remote *r = s->remote;
    pthread_mutex_lock(&r->mu);
    size_t n = r->n_lru;
    char(*ids)[ID_LEN + 1] = n ? malloc(n * sizeof *ids) : NULL;
    for (size_t i = 0; ids && i < n; i++) memcpy(ids[i], r->lru[i].id, ID_LEN + 1);
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; ids && i < n && !atomic_load(&r->stop); i++) {
        const char *argv[3] = {"HEXISTS", r->k_rec, ids[i]};
        size_t lens[3] = {7, strlen(r->k_rec), ID_LEN};
        redisReply *rep = cmd(r, 1, 3, argv, lens, 0);
        if (!rep) break;
        if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 0) drop_cached(s, ids[i]);
        freeReplyObject(rep);
    }
    free(ids);
}

/* Remove the pieces of blobs whose put never committed (or whose delete did not finish). */
static void janitor(ss_remote *r)
{
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)(ss_now_ns() / 1000000));
    const char *argv[6] = {"ZRANGEBYSCORE", r->k_pending, "-inf", now, "LIMIT", "0"};
    const char *argv2[8] = {argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], "100", NULL};
    size_t lens[7];
    for (int i = 0; i < 7; i++) lens[i] = strlen(argv2[i]);
    redisReply *rep = cmd(r, 1, 7, argv2, lens, 0);
    if (!rep) return;
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++) {
        const char *m = rep->element[i]->str;
        const char *colon = strrchr(m, ':');
        if (!colon || colon - m != ID_LEN) continue;
        char id[ID_LEN + 1];
        memcpy(id, m, ID_LEN);
        id[ID_LEN] = '\0';
        const char *hv[3] = {"HEXISTS", r->k_rec, id};
        size_t hl[3] = {7, strlen(r->k_rec), ID_LEN};
        redisReply *h = cmd(r, 1, 3, hv, hl, 0);
        if (!h) break;
        int live = h->type == REDIS_REPLY_INTEGER && h->integer == 1;
        freeReplyObject(h);
        if (live) { /* committed after all (a lost reply): only the pending entry goes */
            const char *zv[3] = {"ZREM", r->k_pending, m};
            size_t zl[3] = {4, strlen(r->k_pending), strlen(m)};
            redisReply *z = cmd(r, 1, 3, zv, zl, 0);
            if (z) freeReplyObject(z);
        } else {
            delete_pieces(r, id, (size_t)strtoull(colon + 1, NULL, 10), m);
        }
    }
    freeReplyObject(rep);
}

/* Ask the catalog (past the breaker: cmd_as); when it answers, catch up on the deletes missed
 * meanwhile. */
static void probe(ss_store *s)
{
    ss_remote *r = s->remote;
    const char *pv[3] = {"HGET", r->k_meta, "n_states"};
    size_t pl[3] = {4, strlen(r->k_meta), 8};
    redisReply *p = cmd_as(r, 1, 1, 3, pv, pl, 0);
    if (p) {
        freeReplyObject(p);
        resync(s);
    }
    ss_err_clear();
}

static void *subscriber(void *arg)
{
    ss_store *s = arg;
    ss_remote *r = s->remote;
    int64_t next_janitor = 0;
    while (!atomic_load(&r->stop)) {
        redisContext *ctx = ss_rc_connect_any(r->rc);
        if (!ctx) {
            note_down(r, ss_errmsg());
            for (int i = 0; i < 5 && !atomic_load(&r->stop); i++) {
                struct timespec ts = {0, 100000000L};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        const char *sv[2] = {"SUBSCRIBE", r->chan};
        redisReply *rep = redisCommandArgv(ctx, 2, sv, NULL);
        int ok = rep && rep->type == REDIS_REPLY_ARRAY;
        if (rep) freeReplyObject(rep);
        if (ok) probe(s); /* up again (or for the first time) */
        int64_t next_probe = ss_now_ns() / 1000000 + PROBE_MS;
        while (ok && !atomic_load(&r->stop)) {
            void *msg = NULL;
            if (redisGetReplyFromReader(ctx, &msg) != REDIS_OK) break;
            if (!msg) {
                struct pollfd pfd = {ctx->fd, POLLIN, 0};
                int pr = poll(&pfd, 1, 200);
                if (pr < 0 && errno != EINTR) break;
                if (pr > 0 && redisBufferRead(ctx) != REDIS_OK) break;
                const int64_t now_ms = ss_now_ns() / 1000000;
                if (atomic_load(&r->failing) && now_ms >= next_probe) {
                    /* subscribed, but the catalog's commands fail (its shard down) */
                    probe(s);
                    next_probe = now_ms + PROBE_MS;
                }
                if (atomic_load(&r->up) && now_ms >= next_janitor) {
                    janitor(r);
                    ss_err_clear();
                    next_janitor = ss_now_ns() / 1000000 + JANITOR_MS;
                }
                continue;
            }
            redisReply *m = msg;
            if (m->type == REDIS_REPLY_ARRAY && m->elements == 3 &&
                m->element[2]->type == REDIS_REPLY_STRING && m->element[2]->len == ID_LEN &&
                strcmp(m->element[0]->str, "message") == 0) {
                drop_cached(s, m->element[2]->str);
            }
            freeReplyObject(m);
        }
        redisFree(ctx);
        if (!atomic_load(&r->stop)) note_down(r, "the subscription to the catalog was lost");
    }
    return NULL;
}

/* ---- open / close ---------------------------------------------------------------------------- */

/*
 * The local tier's marker, DIR/remote-cache (the prefix it caches): the cache drops whatever the
 * catalog does not have, so a directory that holds a catalog of its own (LMDB alone, before
 * --remote) or the cache of another namespace is refused rather than emptied.
 */
static ss_err claim_dir(ss_store *s, const char *prefix)
{
    char path[4096], have[80] = "";
    snprintf(path, sizeof path, "%s/remote-cache", s->dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(have, sizeof have, f)) have[0] = '\0';
        fclose(f);
        have[strcspn(have, "\n")] = '\0';
        if (strcmp(have, prefix) == 0) return SS_OK;
        return ss_fail(SS_ERR_INVALID, "%s is the local cache of the remote catalog '%s', not "
                       "'%s': give each --remote-prefix its own --data", s->dir, have, prefix);
    }
    ss_store_stats st;
    ss_err err;
    LOCAL(err = ss_store_get_stats(s, &st));
    if (err) return err;
    if (st.n_states > 0) {
        return ss_fail(SS_ERR_INVALID, "%s holds a catalog of %llu states of its own; with "
                       "--remote it would only be a cache (states Redis lacks are dropped): copy "
                       "it first (statesoup migrate --data %s --to URL), then start with an empty "
                       "--data", s->dir, (unsigned long long)st.n_states, s->dir);
    }
    f = fopen(path, "w");
    if (!f || fprintf(f, "%s\n", prefix) < 0 || fclose(f) != 0) {
        return ss_fail(SS_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    }
    return SS_OK;
}

ss_err remote_open(ss_store *s, const ss_store_params *p)
{
    if (s->read_only) return ss_fail(SS_ERR_INVALID, "store: a remote tier needs a writable cache");
    ss_remote *r = calloc(1, sizeof *r);
    if (!r) return ss_fail(SS_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&r->mu, NULL);
    const char *pre = p->remote_prefix && *p->remote_prefix ? p->remote_prefix : "ss";
    if (strlen(pre) > 48 || strpbrk(pre, "{}")) {
        pthread_mutex_destroy(&r->mu);
        free(r);
        return ss_fail(SS_ERR_INVALID, "remote prefix '%s': at most 48 bytes, no braces", pre);
    }
    snprintf(r->prefix, sizeof r->prefix, "%s", pre);
    snprintf(r->k_rec, KEY_MAX, "{%s}:rec", pre);
    snprintf(r->k_name, KEY_MAX, "{%s}:name", pre);
    snprintf(r->k_tk, KEY_MAX, "{%s}:tk", pre);
    snprintf(r->k_time, KEY_MAX, "{%s}:time", pre);
    snprintf(r->k_meta, KEY_MAX, "{%s}:meta", pre);
    snprintf(r->k_pending, KEY_MAX, "{%s}:pending", pre);
    snprintf(r->k_tagpfx, KEY_MAX, "{%s}:tag:", pre);
    snprintf(r->chan, KEY_MAX, "%s:deleted", pre);
    r->wait_replicas = p->remote_wait_replicas < 0 ? 0 : p->remote_wait_replicas;
    r->wait_ms = p->remote_wait_ms > 0 ? p->remote_wait_ms : 2000;
    r->cache_max = p->cache_max_bytes ? p->cache_max_bytes : DEFAULT_CACHE;
    snprintf(r->last_err, sizeof r->last_err, "not connected yet");
    ss_err err = claim_dir(s, pre);
    if (err) {
        pthread_mutex_destroy(&r->mu);
        free(r);
        return err;
    }
    ss_rc_params rp = {.password = p->remote_password, .timeout_ms = p->remote_timeout_ms,
                       .retry_ms = p->remote_retry_ms};
    err = ss_rc_open(&r->rc, p->remote, &rp);
    if (err) {
        pthread_mutex_destroy(&r->mu);
        free(r);
        return err;
    }
    s->remote = r;
    if ((err = lru_load(s)) == SS_OK) lru_evict(s);
    if (!err && pthread_create(&r->sub, NULL, subscriber, s) != 0)
        err = ss_fail(SS_ERR_NOMEM, "store: cannot start the catalog subscriber");
    if (err) {
        ss_rc_close(r->rc);
        free(r->lru);
        pthread_mutex_destroy(&r->mu);
        free(r);
        s->remote = NULL;
        return err;
    }
    r->sub_started = 1;
    return SS_OK;
}

void remote_close(ss_store *s)
{
    ss_remote *r = s->remote;
    if (!r) return;
    atomic_store(&r->stop, 1);
    if (r->sub_started) pthread_join(r->sub, NULL);
    ss_rc_close(r->rc);
    free(r->lru);
    pthread_mutex_destroy(&r->mu);
    free(r);
    s->remote = NULL;
}
