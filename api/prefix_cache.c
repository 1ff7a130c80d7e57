/*
 * prefix_cache.c - the automatic prompt cache (--prefix-cache-budget): the daemon keeps
 * checkpoints of recent prompts in the catalog as cache entries, and evicts the least recently
 * used ones to stay within the budget.
 *
 * A cache entry is an ordinary stored state, unnamed, tagged CACHE_TAG and indexed under its
 * prefix like any state made from tokens; the listing hides it unless asked (?include=cache).
 * Only states this module stored are ever evicted: a state a user saved never is. The entries
 * are remembered here with their last use (a hit touches its entry); at attach the ones a
 * previous run left are taken back, oldest first. The chains of the last evicted entries are
 * kept so that a miss they caused is counted as "evicted".
 *
 * Tenants share the budget; with --prefix-cache-tenant-share F no tenant's entries hold more
 * than F of it: a tenant at its share evicts its own least recently used entries first, so one
 * tenant's stream of long prompts cannot flush every other tenant's cache.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer.h"
#include "metrics.h"
#include "ss_log.h"

#define EVICTED_RING 64

typedef struct entry {
    char id[SS_STORE_ID_LEN + 1];
    char tenant[SS_STORE_TENANT_MAX + 1]; /* "" = the default tenant */
    size_t bytes;
    uint64_t used; /* clock of the last use */
} entry;

struct api_cache {
    pthread_mutex_t mu;
    size_t budget, total;
    size_t tenant_max; /* the most one tenant's entries may hold (budget: no cap) */
    int every;
    entry *e;
    int n, cap;
    uint64_t clock;
    ss_prefix evicted[EVICTED_RING];
    int n_evicted;
};

static int cache_push(api_cache *c, const char *id, const char *tenant, size_t bytes)
{
    if (c->n == c->cap) {
        int nc = c->cap ? 2 * c->cap : 64;
        entry *e = realloc(c->e, (size_t)nc * sizeof *e);
        if (!e) return -1;
        c->e = e;
        c->cap = nc;
    }
    entry *e = &c->e[c->n++];
    snprintf(e->id, sizeof e->id, "%s", id);
    snprintf(e->tenant, sizeof e->tenant, "%s", tenant ? tenant : "");
    e->bytes = bytes;
    e->used = ++c->clock;
    c->total += bytes;
    return 0;
}

/* The least recently used entry (of `tenant` when not NULL), -1 when none. */
static int cache_lru(const api_cache *c, const char *tenant)
{
    int lru = -1;
    for (int i = 0; i < c->n; i++)
        if ((!tenant || !strcmp(c->e[i].tenant, tenant)) &&
            (lru < 0 || c->e[i].used < c->e[lru].used))
            lru = i;
    return lru;
}

/* The bytes of `tenant`'s entries. */
static size_t cache_held(const api_cache *c, const char *tenant)
{
    size_t held = 0;
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].tenant, tenant)) held += c->e[i].bytes;
    return held;
}

/*
 * Evict least recently used entries until `need` more bytes of `tenant` fit: its own first
 * while it would hold more than its share, then anyone's while the cache would exceed the
 * budget. Caller holds c->mu.
 */
static void cache_evict(ss_api *a, api_cache *c, const char *tenant, size_t need)
{
    const char *t = tenant ? tenant : "";
    for (;;) {
        int lru = -1;
        if (c->tenant_max < c->budget && cache_held(c, t) + need > c->tenant_max)
            lru = cache_lru(c, t);
        if (lru < 0 && c->total + need > c->budget) lru = cache_lru(c, NULL);
        if (lru < 0) break;
        entry victim = c->e[lru];
        c->e[lru] = c->e[--c->n];
        c->total -= victim.bytes;
        int found = 0;
        ss_prefix chain;
        if (ss_store_prefix_of(a->store, victim.id, &chain, &found) == SS_OK && found)
            c->evicted[c->n_evicted++ % EVICTED_RING] = chain;
        ss_err err = ss_store_delete(a->store, victim.id);
        if (err && err != SS_ERR_NOT_FOUND)
            ss_log("warning", "prompt_cache", json_pack("{s:s}", "state", victim.id),
                   "prompt cache: evicting %s: %s", victim.id, ss_errmsg());
    }
    ss_err_clear();
}

/* Take back the cache entries a previous run left in the catalog (oldest first). */
static void cache_load(ss_api *a, api_cache *c)
{
    char *cursor = NULL;
    for (;;) {
        char *page = NULL;
        if (ss_store_list(a->store, API_CACHE_TAG, NULL, 1000, cursor, &page)) break;
        json_t *j = json_loads(page, 0, NULL);
        free(page);
        size_t i;
        json_t *rec;
        json_array_foreach (json_object_get(j, "data"), i, rec) {
            const char *id = json_string_value(json_object_get(rec, "id"));
            if (id)
                cache_push(c, id, json_string_value(json_object_get(rec, "tenant")),
                           (size_t)json_integer_value(json_object_get(rec, "bytes")));
        }
        const char *next = json_string_value(json_object_get(j, "next_cursor"));
        free(cursor);
        cursor = next ? strdup(next) : NULL;
        json_decref(j);
        if (!cursor) break;
    }
    /* the listing is newest first: the oldest get the oldest clock */
    for (int i = 0; i < c->n; i++) c->e[i].used = (uint64_t)(c->n - i);
    c->clock = (uint64_t)c->n;
    /* within the budget, and (oldest first) each tenant within its share */
    cache_evict(a, c, "", 0);
    for (int i = 0; i < c->n && c->tenant_max < c->budget; i++) {
        if (cache_held(c, c->e[i].tenant) <= c->tenant_max) continue;
        char t[SS_STORE_TENANT_MAX + 1];
        memcpy(t, c->e[i].tenant, sizeof t);
        cache_evict(a, c, t, 0);
        i = -1; /* the entries moved: look again */
    }
    ss_err_clear();
}

ss_err api_cache_new(ss_api *a)
{
    if (!a->p.prefix_cache_budget) return SS_OK;
    api_cache *c = calloc(1, sizeof *c);
    if (!c) return ss_fail(SS_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&c->mu, NULL);
    c->budget = a->p.prefix_cache_budget;
    const double share = a->p.prefix_cache_tenant_share;
    c->tenant_max = share > 0 && share < 1 ? (size_t)(share * (double)c->budget) : c->budget;
    c->every = a->p.prefix_cache_every > 0 ? a->p.prefix_cache_every : API_CACHE_EVERY;
    a->cache = c;
    cache_load(a, c);
    return SS_OK;
}

int api_cache_stats(ss_api *a, uint64_t *entries, uint64_t *bytes, uint64_t *budget,
                    uint64_t *tenant_max,
                    void (*per_tenant)(void *user, const char *tenant, uint64_t entries,
                                       uint64_t bytes),
                    void *user)
{
    api_cache *c = a->cache;
    if (!c) return 0;
    pthread_mutex_lock(&c->mu);
    *entries = (uint64_t)c->n;
    *bytes = c->total;
    *budget = c->budget;
    *tenant_max = c->tenant_max;
    /* one pass over the entries, summed per tenant (a few tenants, many entries) */
    enum { MAX_T = 1024 }; /* SS_METRICS_MAX_TENANTS: more are not rendered apart */
    struct tsum {
        const char *t;
        uint64_t n, b;
    } *ts = calloc(MAX_T, sizeof *ts);
    int nt = 0;
    for (int i = 0; ts && i < c->n; i++) {
        int k = 0;
        while (k < nt && strcmp(ts[k].t, c->e[i].tenant)) k++;
        if (k == nt) {
            if (nt == MAX_T) continue;
            ts[nt++].t = c->e[i].tenant;
        }
        ts[k].n++;
        ts[k].b += c->e[i].bytes;
    }
    for (int k = 0; k < nt; k++) per_tenant(user, ts[k].t, ts[k].n, ts[k].b);
    pthread_mutex_unlock(&c->mu);
    free(ts);
    return 1;
}

void api_cache_free(api_cache *c)
{
    if (!c) return;
    pthread_mutex_destroy(&c->mu);
    free(c->e);
    free(c);
}

void api_cache_touch(ss_api *a, const char *id)
{
    api_cache *c = a->cache;
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].id, id)) c->e[i].used = ++c->clock;
    pthread_mutex_unlock(&c->mu);
}

int api_cache_was_evicted(ss_api *a, const ss_prefix *chains, int n)
{
    api_cache *c = a->cache;
    if (!c) return 0;
    int hit = 0;
    pthread_mutex_lock(&c->mu);
    int m = c->n_evicted < EVICTED_RING ? c->n_evicted : EVICTED_RING;
    for (int i = 0; i < n && !hit; i++)
        for (int k = 0; k < m && !hit; k++)
            hit = !memcmp(chains[i].h, c->evicted[k].h, SS_PREFIX_LEN);
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void api_cache_plan(infer *inf)
{
    api_cache *c = inf->a->cache;
    inf->n_ccps = 0;
    if (!c || inf->batch || !inf->chained || inf->n_choices < 1 ||
        inf->a->info->state_bytes > c->tenant_max)
        return;
    int end = inf->ch[0].n_prompt; /* the prompt, or the context of a score */
    int first = (inf->cached / c->every + 1) * c->every;
    int n = end > inf->cached ? (end - 1 - first) / c->every + 1 : 0;
    if (end - 1 < first) n = 0;
    /* the last API_MAX_CHECKPOINTS - 1 grid positions, then the end */
    int skip = n > API_MAX_CHECKPOINTS - 1 ? n - (API_MAX_CHECKPOINTS - 1) : 0;
    for (int k = skip; k < n; k++) inf->ccps[inf->n_ccps++] = first + k * c->every;
    if (end > inf->cached) inf->ccps[inf->n_ccps++] = end;
}

void api_cache_store(infer *inf)
{
    ss_api *a = inf->a;
    api_cache *c = a->cache;
    if (!c || !inf->n_ccps) return;
    const choice *ch = &inf->ch[0];
    size_t bytes = a->info->state_bytes;
    api_save save = {0};
    for (int k = 0; k < inf->n_ccps; k++) {
        if (!inf->ccp_data[k]) continue; /* not reached (cancelled) */
        int pos = inf->ccps[k];
        ss_store_prefix_entry pe;
        prefix_entry(inf, ch->prompt, pos, NULL, 0, &pe);
        int got = 0;
        char id[SS_STORE_ID_LEN + 1];
        if (ss_store_prefix_find(a->store, &pe.chain, 1, 0, &got, id) == SS_OK) {
            api_cache_touch(a, id); /* already stored (by a user or the cache) */
            continue;
        }
        pthread_mutex_lock(&c->mu);
        cache_evict(a, c, inf->scope.tenant, bytes);
        char *text = NULL;
        if (!save.tags) save.tags = json_pack("[s]", API_CACHE_TAG);
        save.scope = inf->scope; /* a tenant's cache entries are its own */
        ss_err err = api_save_blob_indexed(a, &save, inf->ccp_data[k],
                                           prefix_cp_bytes(a->info, inf->ccp_data[k]),
                                           inf->start_tokens + pos, inf->start.parents, &pe, &text);
        if (!err) {
            json_t *rec = json_loads(text, 0, NULL);
            const char *nid = json_string_value(json_object_get(rec, "id"));
            if (nid) cache_push(c, nid, inf->scope.tenant, bytes);
            json_decref(rec);
        }
        free(text);
        pthread_mutex_unlock(&c->mu);
        if (err) {
            ss_log("warning", "prompt_cache", NULL, "prompt cache: storing a checkpoint: %s",
                   ss_errmsg());
            break;
        }
    }
    json_decref(save.tags);
    ss_err_clear();
}

json_t *api_cache_hide(json_t *page)
{
    json_t *data = json_object_get(page, "data");
    size_t hidden = 0;
    for (size_t i = 0; i < json_array_size(data);) {
        json_t *tags = json_object_get(json_array_get(data, i), "tags");
        int cache = 0;
        size_t k;
        json_t *t;
        json_array_foreach (tags, k, t)
            cache |= json_is_string(t) && !strcmp(json_string_value(t), API_CACHE_TAG);
        if (cache) {
            json_array_remove(data, i);
            hidden++;
        } else {
            i++;
        }
    }
    json_object_set_new(page, "hidden", json_integer((json_int_t)hidden));
    return page;
}
