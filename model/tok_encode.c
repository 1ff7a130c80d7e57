/*
 * tok_encode.c - text -> ids: added-token split, NFC, the GPT-2 regex, BPE by merge rank
 * (the steps are listed in tokenizer.c), with a per-call word cache.
 */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "ss_buf.h"
#include "ss_util.h"

/* ---- encoding ------------------------------------------------------------------------------ */

/* A piece of text between added tokens, or an added token (id >= 0). */
typedef struct piece {
    size_t start, end;
    int32_t id;
} piece;

typedef struct heap_ent {
    uint32_t rank;
    uint32_t pos;
    int32_t new_id;
} heap_ent;

typedef struct cache_slot {
    uint64_t hash; /* 0 = empty */
    uint32_t off;  /* word bytes at cache_bytes + off, ids at cache_ids + id_off */
    uint16_t len;
    uint16_t n_ids;
    uint32_t id_off;
} cache_slot;

/* Per-call state: the tokenizer itself stays read-only, so threads can share it. */
typedef struct enc {
    const ss_tokenizer *t;
    pcre2_match_data *md;
    int32_t *out; /* [n_out] result */
    size_t n_out, cap_out;
    /* BPE scratch, [cap_w] each (heap [3 * cap_w]) */
    int32_t *sym, *prev, *next;
    heap_ent *heap;
    size_t cap_w;
    char *buf; /* piece with the prefix space */
    size_t cap_buf;
    /* word -> ids cache for this call: English repeats its words */
    cache_slot *cache;
    size_t cache_mask, cache_n;
    char *cache_bytes;
    size_t n_cache_bytes, cap_cache_bytes;
    int32_t *cache_ids;
    size_t n_cache_ids, cap_cache_ids;
} enc;

static ss_err emit(enc *e, int32_t id)
{
    if (e->n_out == e->cap_out && ss_grow((void **)&e->out, &e->cap_out, e->n_out + 1, 4) != 0) {
        return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
    }
    e->out[e->n_out++] = id;
    return SS_OK;
}

static inline int heap_less(const heap_ent *a, const heap_ent *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(heap_ent *h, size_t *n, heap_ent v)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&v, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static heap_ent heap_pop(heap_ent *h, size_t *n)
{
    heap_ent top = h[0], v = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &v)) break;
        h[i] = h[c];
        i = c;
    }
    if (m) h[i] = v;
    return top;
}

static inline const uint64_t *merge_of(const ss_tokenizer *t, int32_t a, int32_t b)
{
    return imap_get(&t->merges, (uint64_t)(uint32_t)a << 32 | (uint32_t)b);
}

/* BPE of one word w[0..n) (raw bytes); appends its ids to e->out. HF's merge_word + merge_all:
 * pop the lowest (rank, position) candidate, skip it when its pair no longer yields the same
 * merged id, else merge and push the new pairs with both neighbours. */
static ss_err bpe_word(enc *e, const unsigned char *w, size_t n)
{
    const ss_tokenizer *t = e->t;
    if (n > e->cap_w) {
        size_t nc = n < 64 ? 64 : n;
        int32_t *s = realloc(e->sym, nc * sizeof *s);
        if (s) e->sym = s;
        int32_t *p = realloc(e->prev, nc * sizeof *p);
        if (p) e->prev = p;
        int32_t *x = realloc(e->next, nc * sizeof *x);
        if (x) e->next = x;
        heap_ent *h = realloc(e->heap, 3 * nc * sizeof *h);
        if (h) e->heap = h;
        if (!s || !p || !x || !h) return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        e->cap_w = nc;
    }
    int32_t *sym = e->sym, *prev = e->prev, *next = e->next;
    size_t m = 0;
    int have_unk = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[w[i]];
        if (id >= 0) {
            if (have_unk) sym[m++] = t->unk_id;
            have_unk = 0;
            sym[m++] = id;
        } else if (t->unk_id >= 0) {
            if (have_unk && !t->fuse_unk) sym[m++] = t->unk_id;
            have_unk = 1;
        }
    }
    if (have_unk) sym[m++] = t->unk_id;
    if (m == 0) return SS_OK;
    if (m == 1) return emit(e, sym[0]);

    size_t nh = 0;
    for (size_t i = 0; i < m; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < m ? (int32_t)i + 1 : -1;
        if (i + 1 < m) {
            const uint64_t *mg = merge_of(t, sym[i], sym[i + 1]);
            if (mg) {
                heap_push(e->heap, &nh,
                          (heap_ent){(uint32_t)(*mg >> 32), (uint32_t)i, (int32_t)(uint32_t)*mg});
            }
        }
    }
    while (nh) {
        heap_ent top = heap_pop(e->heap, &nh);
        size_t p = top.pos;
        if (sym[p] < 0 || next[p] < 0) continue; /* merged away, or now last */
        int32_t r = next[p];
        const uint64_t *mg = merge_of(t, sym[p], sym[r]);
        if (!mg || (int32_t)(uint32_t)*mg != top.new_id) continue;
        sym[p] = top.new_id;
        sym[r] = -1;
        next[p] = next[r];
        if (next[r] >= 0) prev[next[r]] = (int32_t)p;
        if (prev[p] >= 0) {
            const uint64_t *ml = merge_of(t, sym[prev[p]], sym[p]);
            if (ml) {
                heap_push(
                    e->heap, &nh,
                    (heap_ent){(uint32_t)(*ml >> 32), (uint32_t)prev[p], (int32_t)(uint32_t)*ml});
            }
        }
        if (next[p] >= 0) {
            const uint64_t *mr = merge_of(t, sym[p], sym[next[p]]);
            if (mr) {
                heap_push(e->heap, &nh,
                          (heap_ent){(uint32_t)(*mr >> 32), (uint32_t)p, (int32_t)(uint32_t)*mr});
            }
        }
    }
    for (size_t i = 0; i < m; i++) {
        if (sym[i] >= 0) {
            ss_err err = emit(e, sym[i]);
            if (err) return err;
        }
    }
    return SS_OK;
}

/* bpe_word through the per-call cache. */
static ss_err word(enc *e, const char *w, size_t n)
{
    if (n == 1 && e->t->byte_id[(unsigned char)w[0]] >= 0) {
        return emit(e, e->t->byte_id[(unsigned char)w[0]]);
    }
    if (n > WORD_CACHE_MAX_LEN) return bpe_word(e, (const unsigned char *)w, n);
    uint64_t h = XXH3_64bits(w, n) | 1;
    cache_slot *sl = NULL;
    if (e->cache) {
        for (size_t i = h & e->cache_mask;; i = (i + 1) & e->cache_mask) {
            sl = &e->cache[i];
            if (!sl->hash) break;
            if (sl->hash == h && sl->len == n && !memcmp(e->cache_bytes + sl->off, w, n)) {
                if (ss_grow((void **)&e->out, &e->cap_out, e->n_out + sl->n_ids, 4) != 0) {
                    return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
                }
                if (sl->n_ids) /* out and cache_ids may be NULL for a word of no ids */
                    memcpy(e->out + e->n_out, e->cache_ids + sl->id_off,
                           sl->n_ids * sizeof(int32_t));
                e->n_out += sl->n_ids;
                return SS_OK;
            }
        }
    }
    size_t first = e->n_out;
    ss_err err = bpe_word(e, (const unsigned char *)w, n);
    if (err) return err;
    size_t k = e->n_out - first;
    /* Remember it (best effort: a failed allocation only loses the cache entry). */
    if (!e->cache || 2 * (e->cache_n + 1) > e->cache_mask + 1) {
        if (e->cache_n >= (1u << 20)) return SS_OK; /* big enough */
        size_t nc = e->cache ? 2 * (e->cache_mask + 1) : 4096;
        cache_slot *ns = calloc(nc, sizeof *ns);
        if (!ns) return SS_OK;
        for (size_t i = 0; e->cache && i <= e->cache_mask; i++) {
            if (!e->cache[i].hash) continue;
            size_t j = e->cache[i].hash & (nc - 1);
            while (ns[j].hash) j = (j + 1) & (nc - 1);
            ns[j] = e->cache[i];
        }
        free(e->cache);
        e->cache = ns;
        e->cache_mask = nc - 1;
        sl = &ns[h & (nc - 1)];
        while (sl->hash) sl = &ns[((size_t)(sl - ns) + 1) & (nc - 1)];
    }
    if (ss_grow((void **)&e->cache_bytes, &e->cap_cache_bytes, e->n_cache_bytes + n, 1) != 0 ||
        ss_grow((void **)&e->cache_ids, &e->cap_cache_ids, e->n_cache_ids + k, 4) != 0 ||
        e->n_cache_bytes + n > UINT32_MAX || e->n_cache_ids + k > UINT32_MAX) {
        return SS_OK;
    }
    memcpy(e->cache_bytes + e->n_cache_bytes, w, n);
    /* k is 0 for a word whose bytes are all outside the vocabulary (dropped without unk_token):
     * cache_ids may still be NULL then, and NULL + 0 is undefined (found by tests/fuzz) */
    if (k) memcpy(e->cache_ids + e->n_cache_ids, e->out + first, k * sizeof(int32_t));
    *sl = (cache_slot){h, (uint32_t)e->n_cache_bytes, (uint16_t)n, (uint16_t)k,
                       (uint32_t)e->n_cache_ids};
    e->n_cache_bytes += n;
    e->n_cache_ids += k;
    e->cache_n++;
    return SS_OK;
}

/* ByteLevel pre-tokenizer on one piece (prefix space, GPT-2 regex with isolated gaps), then BPE. */
static ss_err pre_tokenize(enc *e, const char *s, size_t n)
{
    const ss_tokenizer *t = e->t;
    if (t->add_prefix_space && s[0] != ' ') {
        if (ss_grow((void **)&e->buf, &e->cap_buf, n + 1, 1) != 0) {
            return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        }
        e->buf[0] = ' ';
        memcpy(e->buf + 1, s, n);
        s = e->buf;
        n++;
    }
    if (!t->re) return word(e, s, n);
    size_t off = 0, last = 0;
    while (off < n) {
        int rc = pcre2_match(t->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
            rc = pcre2_match(t->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, e->md,
                             NULL);
        }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return ss_fail(SS_ERR_INTERNAL, "tokenizer: regex failed at byte %zu: %s", off,
                           (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        ss_err err;
        if (ms > last && (err = word(e, s + last, ms - last)) != SS_OK) return err;
        if (me == ms) { /* an empty match (not possible with this pattern): step over a char */
            size_t cl;
            utf8_next((const unsigned char *)s + me, n - me, &cl);
            off = me + cl;
            last = ms;
            continue;
        }
        if ((err = word(e, s + ms, me - ms)) != SS_OK) return err;
        last = off = me;
    }
    if (last < n) return word(e, s + last, n - last);
    return SS_OK;
}

/* AddedVocabulary::find_matches on s[0..n): pieces covering the text, added tokens marked.
 * *np counts pieces in *ps (grown as needed); empty pieces are left out. */
static ss_err find_matches(const ss_tokenizer *t, const trie *tr, const char *s, size_t n,
                           piece **ps, size_t *cap, size_t *np)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t start_offset = 0, from = 0, ms, me;
    int32_t k;
    *np = 0;
#define PUSH(a, b, i)                                                                              \
    do {                                                                                           \
        if (ss_grow((void **)ps, cap, *np + 1, sizeof(piece)) != 0) {                              \
            return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");                              \
        }                                                                                          \
        (*ps)[(*np)++] = (piece){(a), (b), (i)};                                                   \
    } while (0)
    while (from < n && trie_find(tr, s, n, from, &ms, &me, &k)) {
        from = me;
        const added_tok *a = &t->added[k];
        size_t start = ms, stop = me, cl;
        if (a->single_word) {
            int start_space = start == 0 || !tok_is_word(utf8_prev(u, start, &cl));
            int stop_space = stop == n || !tok_is_word(utf8_next(u + stop, n - stop, &cl));
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0 && tok_is_ws(utf8_prev(u, ns, &cl))) ns -= cl;
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n && tok_is_ws(utf8_next(u + stop, n - stop, &cl))) stop += cl;
        }
        if (start_offset < start) PUSH(start_offset, start, -1);
        PUSH(start, stop, a->id);
        start_offset = stop;
    }
    if (start_offset < n) PUSH(start_offset, n, -1);
#undef PUSH
    return SS_OK;
}

static void enc_free(enc *e)
{
    pcre2_match_data_free(e->md);
    free(e->out);
    free(e->sym);
    free(e->prev);
    free(e->next);
    free(e->heap);
    free(e->buf);
    free(e->cache);
    free(e->cache_bytes);
    free(e->cache_ids);
}

ss_err ss_tokenizer_encode(const ss_tokenizer *t, const char *text, size_t len, int32_t **ids,
                           size_t *n_ids)
{
    ss_err err = SS_OK;
    enc e = {.t = t};
    piece *p1 = NULL, *p2 = NULL;
    size_t cap1 = 0, cap2 = 0, n1 = 0, n2 = 0;
    char *norm = NULL;

    if (len && !text) return ss_fail(SS_ERR_INVALID, "tokenizer: NULL text");
    size_t bad = utf8_invalid_at((const unsigned char *)text, len);
    if (bad != SIZE_MAX) {
        return ss_fail(SS_ERR_INVALID,
                       "tokenizer: input is not valid UTF-8 (byte 0x%02x at offset "
                       "%zu)",
                       (unsigned char)text[bad], bad);
    }
    if (t->re) {
        e.md = pcre2_match_data_create_from_pattern(t->re, NULL);
        if (!e.md) return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
    }
    if (ss_grow((void **)&e.out, &e.cap_out, len / 3 + 16, 4) != 0) {
        err = ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        goto out;
    }
    err = find_matches(t, &t->raw_trie, text, len, &p1, &cap1, &n1);
    if (err) goto out;
    for (size_t i = 0; i < n1; i++) {
        if (p1[i].id >= 0) {
            if ((err = emit(&e, p1[i].id)) != SS_OK) goto out;
            continue;
        }
        const char *s = text + p1[i].start;
        size_t n = p1[i].end - p1[i].start;
        if (t->nfc && !tok_is_ascii(s, n)) { /* ASCII is already NFC */
            free(norm);
            norm = tok_nfc(s, n, &n);
            if (!norm) {
                err = ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory (NFC)");
                goto out;
            }
            s = norm;
        }
        err = find_matches(t, &t->norm_trie, s, n, &p2, &cap2, &n2);
        if (err) goto out;
        for (size_t j = 0; j < n2; j++) {
            err = p2[j].id >= 0 ? emit(&e, p2[j].id)
                                : pre_tokenize(&e, s + p2[j].start, p2[j].end - p2[j].start);
            if (err) goto out;
        }
    }
    *ids = e.out;
    *n_ids = e.n_out;
    e.out = NULL;
out:
    free(norm);
    free(p1);
    free(p2);
    enc_free(&e);
    return err;
}
