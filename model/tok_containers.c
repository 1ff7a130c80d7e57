/*
 * tok_containers.c - the tokenizer's containers: an arena for strings that live as long as the
 * tokenizer, a string -> int32 map and a uint64 -> uint64 map (open addressing), and the byte
 * trie that finds added tokens leftmost-longest.
 */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "ss_buf.h"
#include "ss_util.h"

char *arena_alloc(arena_blk **a, size_t n)
{
    arena_blk *b = *a;
    if (!b || b->cap - b->used < n + 1) {
        size_t cap = n + 1 > (1u << 20) ? n + 1 : (1u << 20);
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = *a;
        b->used = 0;
        b->cap = cap;
        *a = b;
    }
    char *p = b->data + b->used;
    p[n] = '\0';
    b->used += n + 1;
    return p;
}

char *arena_dup(arena_blk **a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n);
    if (p && n) memcpy(p, s, n);
    return p;
}

void arena_free(arena_blk *a)
{
    while (a) {
        arena_blk *n = a->next;
        free(a);
        a = n;
    }
}

/* ---- string -> int32 map (open addressing; keys are not owned) ------------------------------ */

static uint64_t str_hash(const char *s, size_t n)
{
    return XXH3_64bits(s, n);
}

static str_slot *strmap_find(const strmap *m, const char *s, size_t n, uint64_t h)
{
    if (!m->slots) return NULL;
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        str_slot *sl = &m->slots[i];
        if (!sl->key) return sl;
        if (sl->hash == h && sl->len == n && memcmp(sl->key, s, n) == 0) return sl;
    }
}

int32_t strmap_get(const strmap *m, const char *s, size_t n)
{
    str_slot *sl = strmap_find(m, s, n, str_hash(s, n));
    return sl && sl->key ? sl->val : -1;
}

static int strmap_grow(strmap *m)
{
    size_t cap = m->slots ? 2 * (m->mask + 1) : 64;
    str_slot *old = m->slots;
    size_t old_cap = old ? m->mask + 1 : 0;
    m->slots = calloc(cap, sizeof *m->slots);
    if (!m->slots) {
        m->slots = old;
        return -1;
    }
    m->mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].key) continue;
        size_t j = old[i].hash & m->mask;
        while (m->slots[j].key) j = (j + 1) & m->mask;
        m->slots[j] = old[i];
    }
    free(old);
    return 0;
}

int strmap_put(strmap *m, const char *s, size_t n, int32_t val)
{
    if (!m->slots || 2 * (m->n + 1) > m->mask + 1) {
        if (strmap_grow(m) != 0) return -1;
    }
    uint64_t h = str_hash(s, n);
    str_slot *sl = strmap_find(m, s, n, h);
    if (!sl->key) {
        sl->key = s;
        sl->len = (uint32_t)n;
        sl->hash = h;
        m->n++;
    }
    sl->val = val;
    return 0;
}

/* ---- uint64 -> uint64 map (merges, added tokens by id) --------------------------------------- */


static int imap_grow(imap *m)
{
    size_t cap = m->keys ? 2 * (m->mask + 1) : 64;
    size_t old_cap = m->keys ? m->mask + 1 : 0;
    uint64_t *ok = m->keys, *ov = m->vals;
    uint64_t *nk = malloc(cap * sizeof *nk), *nv = malloc(cap * sizeof *nv);
    if (!nk || !nv) {
        free(nk);
        free(nv);
        return -1;
    }
    memset(nk, 0xff, cap * sizeof *nk);
    m->keys = nk;
    m->vals = nv;
    m->mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (ok[i] == IMAP_EMPTY) continue;
        size_t j = mix64(ok[i]) & m->mask;
        while (nk[j] != IMAP_EMPTY) j = (j + 1) & m->mask;
        nk[j] = ok[i];
        nv[j] = ov[i];
    }
    free(ok);
    free(ov);
    return 0;
}

int imap_put(imap *m, uint64_t key, uint64_t val)
{
    if (!m->keys || 2 * (m->n + 1) > m->mask + 1) {
        if (imap_grow(m) != 0) return -1;
    }
    size_t i = mix64(key) & m->mask;
    while (m->keys[i] != IMAP_EMPTY && m->keys[i] != key) i = (i + 1) & m->mask;
    if (m->keys[i] == IMAP_EMPTY) m->n++;
    m->keys[i] = key;
    m->vals[i] = val;
    return 0;
}

void imap_free(imap *m)
{
    free(m->keys);
    free(m->vals);
}

/* ---- byte trie for added tokens: leftmost-longest matching ----------------------------------- */

static int32_t trie_child(const trie *t, int32_t node, uint8_t b)
{
    if (node == 0) return t->root_child[b];
    for (int32_t c = t->nodes[node].child; c >= 0; c = t->nodes[c].sibling) {
        if (t->nodes[c].byte == b) return c;
    }
    return -1;
}

ss_err trie_add(trie *t, const char *p, size_t n, int32_t value)
{
    if (!t->nodes) {
        t->cap = 64;
        t->nodes = malloc(t->cap * sizeof *t->nodes);
        if (!t->nodes) return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        t->nodes[0] = (trie_node){-1, -1, -1, 0};
        t->n = 1;
        for (int i = 0; i < 256; i++) t->root_child[i] = -1;
    }
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)p[i];
        int32_t c = trie_child(t, node, b);
        if (c < 0) {
            if (ss_grow((void **)&t->nodes, &t->cap, t->n + 1, sizeof *t->nodes))
                return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
            c = (int32_t)t->n++;
            t->nodes[c] = (trie_node){-1, -1, -1, b};
            if (node == 0) {
                t->root_child[b] = c;
            } else {
                t->nodes[c].sibling = t->nodes[node].child;
                t->nodes[node].child = c;
            }
        }
        node = c;
    }
    if (t->nodes[node].value >= 0) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: two added tokens match the same text '%.*s'",
                       (int)n, p);
    }
    t->nodes[node].value = value;
    if (n > t->max_len) t->max_len = n;
    return SS_OK;
}

int trie_find(const trie *t, const char *s, size_t n, size_t from, size_t *start,
              size_t *end, int32_t *value)
{
    if (!t->nodes) return 0;
    for (size_t i = from; i < n; i++) {
        int32_t node = t->root_child[(uint8_t)s[i]];
        if (node < 0) continue;
        int32_t best = -1;
        size_t best_end = 0;
        for (size_t j = i + 1;; j++) {
            if (t->nodes[node].value >= 0) {
                best = t->nodes[node].value;
                best_end = j;
            }
            if (j == n) break;
            node = trie_child(t, node, (uint8_t)s[j]);
            if (node < 0) break;
        }
        if (best >= 0) {
            *start = i;
            *end = best_end;
            *value = best;
            return 1;
        }
    }
    return 0;
}
