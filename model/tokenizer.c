/*
 * tokenizer.c - byte-level BPE (GPT-2 / GPT-NeoX kind) from a HF tokenizer.json, written to give
 * exactly the ids and text of HF `tokenizers` (TokenizerImpl::encode with add_special_tokens=False,
 * TokenizerImpl::decode).
 *
 * Encoding, in HF's order (AddedVocabulary::extract_and_normalize, then ByteLevel, then BPE):
 *   1. the raw text is split on the added tokens with normalized=false (leftmost-longest, then
 *      single_word / lstrip / rstrip exactly as AddedVocabulary::find_matches does);
 *   2. each remaining piece is NFC-normalised on its own and split on the added tokens with
 *      normalized=true (matched against their NFC form). GPT-NeoX's runs of 2..24 spaces are such
 *      tokens, which is why "a  b" has a token for the two spaces;
 *   3. each remaining piece is cut with the GPT-2 regex. The regex runs on one piece at a time, so
 *      its look-ahead never sees past an added token, as in HF;
 *   4. each word is BPE-merged by rank (lowest rank first, leftmost first: HF's Word::merge_all).
 * ByteLevel maps every byte to one printable char, a bijection, so the merge works on byte-level
 * ids directly: at load we resolve byte -> id of its char and (id, id) -> (rank, merged id), and no
 * mapped string is built while encoding.
 *
 * Decoding maps each id to bytes once at load (HF's ByteLevel decoder: a token's chars mapped back
 * to bytes when all are in the byte alphabet, else its own UTF-8) and replaces invalid UTF-8 like
 * Rust's String::from_utf8_lossy; the streaming decoder runs the same lossy scan but holds back a
 * valid-but-incomplete tail, so its output concatenates to exactly the whole decode.
 *
 * Why PCRE2 and utf8proc: HF runs the regex with Oniguruma and NFC with its own tables. PCRE2
 * (UTF + UCP, JIT) gives the same leftmost-first backtracking semantics and the same \p{L}/\p{N}
 * classes; its \s differs from Oniguruma's (it also matches U+180E), so the pattern spells out
 * Oniguruma's whitespace class (tests/golden/tokenizer/regex_diff.c checks the two engines agree
 * on a million random strings). utf8proc is the small, well-tested NFC we can link; writing our
 * own composition tables would be more code to get wrong. Both are safe to share between threads:
 * a compiled PCRE2 pattern may be matched concurrently with per-call match data, utf8proc is pure.
 * Everything mutable while encoding (match data, BPE scratch, a word -> ids cache that halves the
 * time on English) lives in a per-call struct, so the tokenizer itself stays read-only.
 *
 * Known limits: Unicode versions differ a little between PCRE2/utf8proc and HF's Oniguruma and
 * normalization tables, so characters assigned in the newest Unicode versions may split or
 * normalise differently. Added-token matching walks a trie at each candidate position:
 * O(text * longest added token), fine for the few short added tokens of these files.
 */
#include "ss_tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>
#include <xxhash.h>

#include "ss_util.h"

enum {
    MAX_JSON_BYTES = 1 << 30, /* tokenizer.json larger than this is refused */
    MAX_ID = (1 << 24) - 1,   /* ids above this are refused (HF allows u32; 16M is plenty) */
    WORD_CACHE_MAX_LEN = 64,  /* words longer than this skip the per-call cache */
};

/* The GPT-2 pattern with Oniguruma's \s spelled out ([\t-\r\x85\p{Z}]): PCRE2's \s also matches
 * U+180E, which Oniguruma (and so HF) does not. */
#define WS "\\x{09}-\\x{0D}\\x{85}\\p{Z}"
static const char gpt2_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS
                                   "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])|[" WS "]+";
#undef WS

/* ---- arena: stable storage for strings that live as long as the tokenizer ------------------- */

typedef struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
    char data[];
} arena_blk;

/* n + 1 bytes of arena storage (the last set to NUL); NULL when out of memory. */
static char *arena_alloc(arena_blk **a, size_t n)
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

/* Copy n bytes (plus a NUL) into the arena; NULL when out of memory. */
static char *arena_dup(arena_blk **a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n);
    if (p && n) memcpy(p, s, n);
    return p;
}

static void arena_free(arena_blk *a)
{
    while (a) {
        arena_blk *n = a->next;
        free(a);
        a = n;
    }
}

/* ---- string -> int32 map (open addressing; keys are not owned) ------------------------------ */

typedef struct str_slot {
    const char *key; /* NULL = empty */
    uint32_t len;
    int32_t val;
    uint64_t hash;
} str_slot;

typedef struct strmap {
    str_slot *slots;
    size_t mask; /* capacity - 1; capacity is a power of two */
    size_t n;
} strmap;

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

/* Value of key s[0..n), or -1. */
static int32_t strmap_get(const strmap *m, const char *s, size_t n)
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

/* Insert or overwrite key -> val. The key must outlive the map. -1 when out of memory. */
static int strmap_put(strmap *m, const char *s, size_t n, int32_t val)
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

#define IMAP_EMPTY UINT64_MAX

typedef struct imap {
    uint64_t *keys; /* IMAP_EMPTY = free slot */
    uint64_t *vals;
    size_t mask;
    size_t n;
} imap;

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Pointer to the value of key, or NULL. */
static inline const uint64_t *imap_get(const imap *m, uint64_t key)
{
    if (!m->keys) return NULL;
    for (size_t i = mix64(key) & m->mask;; i = (i + 1) & m->mask) {
        if (m->keys[i] == key) return &m->vals[i];
        if (m->keys[i] == IMAP_EMPTY) return NULL;
    }
}

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

/* Insert or overwrite; key must not be IMAP_EMPTY. -1 when out of memory. */
static int imap_put(imap *m, uint64_t key, uint64_t val)
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

static void imap_free(imap *m)
{
    free(m->keys);
    free(m->vals);
}

/* ---- byte trie for added tokens: leftmost-longest matching ----------------------------------- */

typedef struct trie_node {
    int32_t child;   /* first child, -1 none */
    int32_t sibling; /* next sibling, -1 none */
    int32_t value;   /* index into ss_tokenizer.added, -1 when no pattern ends here */
    uint8_t byte;
} trie_node;

typedef struct trie {
    trie_node *nodes; /* nodes[0] is the root */
    size_t n, cap;
    int32_t root_child[256]; /* the root's children by byte (the root is the widest node) */
    size_t max_len;          /* longest pattern */
} trie;

static int32_t trie_child(const trie *t, int32_t node, uint8_t b)
{
    if (node == 0) return t->root_child[b];
    for (int32_t c = t->nodes[node].child; c >= 0; c = t->nodes[c].sibling) {
        if (t->nodes[c].byte == b) return c;
    }
    return -1;
}

/* Add pattern p[0..n) (n > 0) with a value. SS_ERR_FORMAT for a duplicate pattern (HF's
 * Aho-Corasick builder refuses those too). */
static ss_err trie_add(trie *t, const char *p, size_t n, int32_t value)
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
            if (t->n == t->cap) {
                trie_node *nn = realloc(t->nodes, 2 * t->cap * sizeof *nn);
                if (!nn) return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
                t->nodes = nn;
                t->cap *= 2;
            }
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

/* Leftmost-longest: first position >= from where a pattern starts; the longest one there.
 * Returns 1 and sets *start, *end, *value, or 0 when none. */
static int trie_find(const trie *t, const char *s, size_t n, size_t from, size_t *start,
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

/* ---- Unicode helpers ----------------------------------------------------------------------- */

/* Decode one code point of valid UTF-8 at s (n > 0 bytes left); *len gets its byte count. */
static int32_t utf8_next(const unsigned char *s, size_t n, size_t *len)
{
    unsigned c = s[0];
    if (c < 0x80 || n < 2) {
        *len = 1;
        return (int32_t)c;
    }
    if (c < 0xE0) {
        *len = 2;
        return (int32_t)(((c & 0x1F) << 6) | (s[1] & 0x3F));
    }
    if (c < 0xF0 || n < 4) {
        *len = 3;
        return (int32_t)(((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F));
    }
    *len = 4;
    return (int32_t)(((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) |
                     (s[3] & 0x3F));
}

/* The code point that ends at s[end] (valid UTF-8, end > 0); *len gets its byte count. */
static int32_t utf8_prev(const unsigned char *s, size_t end, size_t *len)
{
    size_t i = end - 1;
    while (i > 0 && (s[i] & 0xC0) == 0x80 && end - i < 4) i--;
    return utf8_next(s + i, end - i, len);
}

/* White_Space, the set behind \s in Rust's regex crate (lstrip/rstrip) and Oniguruma (GPT-2
 * regex): tab..CR, space, NEL, NBSP, U+1680, U+2000..U+200A, LS, PS, U+202F, U+205F, U+3000. */
static int is_ws(int32_t c)
{
    if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
    if (c < 0x85) return 0;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* \w of Rust's regex crate (single_word): Alphabetic, marks, Nd, Pc, Join_Control. Alphabetic is
 * letters, Nl and Other_Alphabetic, whose members outside the marks are the enclosed letters. */
static int is_word(int32_t c)
{
    if (c < 0x80) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '_';
    }
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9) ||
               (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
               (c >= 0x1F170 && c <= 0x1F189);
    }
}

/*
 * The UTF-8 sequence that byte c >= 0x80 starts (RFC 3629): the number of continuation bytes, 0
 * when c cannot start one; [*lo, *hi] is the range of the first continuation byte (narrower
 * after E0, ED, F0 and F4: no overlong forms, no surrogates, nothing above U+10FFFF).
 */
static inline size_t utf8_lead(unsigned c, unsigned *lo, unsigned *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) return 1;
    if (c >= 0xE0 && c <= 0xEF) {
        if (c == 0xE0) *lo = 0xA0;
        if (c == 0xED) *hi = 0x9F;
        return 2;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (c == 0xF0) *lo = 0x90;
        if (c == 0xF4) *hi = 0x8F;
        return 3;
    }
    return 0;
}

/*
 * Lossy UTF-8 -> UTF-8, as Rust's String::from_utf8_lossy: each maximal invalid subpart (a bad
 * byte, or a valid prefix cut short) becomes one U+FFFD. With final == 0 an incomplete but
 * still valid sequence at the end is not consumed. out needs 3 * n bytes. Returns the number of
 * bytes of s consumed; *olen gets the bytes written.
 */
static size_t utf8_lossy(const unsigned char *s, size_t n, int final, char *out, size_t *olen)
{
    size_t i = 0, o = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            out[o++] = (char)c;
            i++;
            continue;
        }
        unsigned lo, hi;
        size_t need = utf8_lead(c, &lo, &hi);
        if (!need) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
            continue;
        }
        size_t k = 1;
        while (k <= need) {
            if (i + k >= n) break;
            unsigned b = s[i + k];
            if (b < lo || b > hi) break;
            lo = 0x80;
            hi = 0xBF;
            k++;
        }
        if (k > need) {
            memcpy(out + o, s + i, k);
            o += k;
        } else if (i + k >= n && !final) {
            break; /* a valid prefix waiting for more bytes */
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
        }
        i += k;
    }
    *olen = o;
    return i;
}

/* Offset of the first byte that makes s invalid UTF-8, or SIZE_MAX when s is valid. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, 8 bytes at a time. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        unsigned lo, hi;
        size_t need = utf8_lead(c, &lo, &hi);
        if (!need) return i;
        for (size_t k = 1; k <= need; k++) {
            if (i + k >= n || s[i + k] < lo || s[i + k] > hi) return i;
            lo = 0x80;
            hi = 0xBF;
        }
        i += need + 1;
    }
    return SIZE_MAX;
}

/* NFC of s[0..n) (valid UTF-8) into a malloc'd string; NULL when out of memory. */
static char *nfc(const char *s, size_t n, size_t *out_len)
{
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (r < 0) return NULL;
    *out_len = (size_t)r;
    return (char *)dst;
}

static int is_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] >= 0x80) return 0;
    }
    return 1;
}

/* ---- the tokenizer ------------------------------------------------------------------------- */

/* One entry of HF's added_tokens_map_r (the added token that owns an id). */
typedef struct added_tok {
    int32_t id;
    const char *content; /* as in the file */
    size_t content_len;
    const char *norm; /* NFC(content) when normalized and different (HF's normalized_cache) */
    size_t norm_len;
    uint8_t single_word, lstrip, rstrip, normalized, special;
} added_tok;

/* What an id decodes to. */
typedef struct id_info {
    const char *bytes; /* after byte-level decoding (arena), NULL = no token has this id */
    uint32_t len;
    uint8_t special; /* dropped by skip_special */
} id_info;

struct ss_tokenizer {
    int32_t n_ids;    /* max id + 1 */
    id_info *ids;     /* [n_ids] */
    strmap vocab;     /* model vocab: token string -> id */
    strmap added_map; /* added token content -> id (HF's added_tokens_map) */
    added_tok *added; /* [n_added], HF's added_tokens_map_r in insertion order */
    size_t n_added, cap_added;
    imap added_by_id;     /* id -> index into added */
    trie raw_trie;        /* normalized=false added tokens, matched on the raw text */
    trie norm_trie;       /* normalized=true added tokens, matched on NFC'd pieces */
    int32_t byte_id[256]; /* id of the single char a byte maps to, -1 when not in the vocab */
    imap merges;          /* (left id << 32 | right id) -> (rank << 32 | merged id) */
    int32_t unk_id;       /* -1 = none: unknown chars are dropped, as HF does */
    int fuse_unk;
    int nfc;              /* normalizer: NFC or nothing */
    int add_prefix_space; /* ByteLevel pre-tokenizer options */
    pcre2_code *re;       /* GPT-2 pattern; NULL when use_regex is false */
    arena_blk *arena;
};

/* GPT-2's byte -> char table: printable Latin-1 maps to itself, the other bytes to U+0100.. */
static void byte_chars(int32_t b2c[256], int16_t c2b[0x144])
{
    for (int i = 0; i < 0x144; i++) c2b[i] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        b2c[b] = keep ? b : 256 + n++;
        c2b[b2c[b]] = (int16_t)b;
    }
}

/* ByteLevel decoder for one token: its chars mapped back to bytes when all of them are in the
 * byte alphabet, else the token's own UTF-8 bytes (HF's decode_chain). Copied into the arena. */
static const char *byte_decode(ss_tokenizer *t, const int16_t c2b[0x144], const char *s, size_t n,
                               uint32_t *out_len)
{
    char *p = arena_alloc(&t->arena, n); /* the mapped bytes are never longer than the chars */
    if (!p) return NULL;
    size_t o = 0, i = 0;
    while (i < n) {
        size_t l;
        int32_t c = utf8_next((const unsigned char *)s + i, n - i, &l);
        if (c >= 0x144 || c2b[c] < 0) {
            memcpy(p, s, n); /* not byte-level: the token's own bytes */
            *out_len = (uint32_t)n;
            return p;
        }
        p[o++] = (char)c2b[c];
        i += l;
    }
    *out_len = (uint32_t)o;
    return p;
}

void ss_tokenizer_close(ss_tokenizer *t)
{
    if (!t) return;
    free(t->ids);
    free(t->vocab.slots);
    free(t->added_map.slots);
    free(t->added);
    imap_free(&t->added_by_id);
    free(t->raw_trie.nodes);
    free(t->norm_trie.nodes);
    imap_free(&t->merges);
    pcre2_code_free(t->re);
    arena_free(t->arena);
    free(t);
}

/* The "type" string of a JSON object, or NULL. */
static const char *type_of(const json_t *o)
{
    return json_string_value(json_object_get(o, "type"));
}

/* Boolean field: absent/null gives dflt, a non-boolean is an error (-1). */
static int get_bool(const json_t *o, const char *key, int dflt)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return dflt;
    if (!json_is_boolean(v)) return -1;
    return json_is_true(v);
}

static ss_err load_normalizer(ss_tokenizer *t, const json_t *n)
{
    if (!n || json_is_null(n)) return SS_OK;
    if (!json_is_object(n) || !type_of(n)) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: normalizer is not an object with a type");
    }
    const char *type = type_of(n);
    if (!strcmp(type, "NFC")) {
        t->nfc = 1;
        return SS_OK;
    }
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list)) {
            return ss_fail(SS_ERR_FORMAT, "tokenizer.json: normalizer Sequence without a list");
        }
        size_t i;
        const json_t *v;
        json_array_foreach (list, i, v) {
            const char *vt = json_is_object(v) ? type_of(v) : NULL;
            if (!vt || strcmp(vt, "NFC") != 0) {
                return ss_fail(SS_ERR_UNSUPPORTED,
                               "tokenizer.json: normalizer Sequence item %zu is '%s'; only NFC is "
                               "supported",
                               i, vt ? vt : "?");
            }
            t->nfc = 1;
        }
        return SS_OK;
    }
    return ss_fail(SS_ERR_UNSUPPORTED,
                   "tokenizer.json: normalizer '%s' is not supported (only NFC or none)", type);
}

/* A ByteLevel object, or a Sequence holding exactly one ByteLevel. */
static const json_t *single_byte_level(const json_t *o, const char *list_key)
{
    const char *type = type_of(o);
    if (!type) return NULL;
    if (!strcmp(type, "ByteLevel")) return o;
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(o, list_key);
        if (json_is_array(list) && json_array_size(list) == 1) {
            const json_t *only = json_array_get(list, 0);
            const char *ot = json_is_object(only) ? type_of(only) : NULL;
            if (ot && !strcmp(ot, "ByteLevel")) return only;
        }
    }
    return NULL;
}

/* "Sequence [Split, ByteLevel]" or "Metaspace": what a pre_tokenizer/decoder is, for messages. */
static const char *describe(const json_t *o, const char *list_key, char *buf, size_t cap)
{
    const char *type = type_of(o);
    snprintf(buf, cap, "%s", type ? type : "?");
    const json_t *list = json_object_get(o, list_key);
    if (type && !strcmp(type, "Sequence") && json_is_array(list)) {
        size_t len = strlen(buf), i;
        const json_t *v;
        json_array_foreach (list, i, v) {
            const char *vt = json_is_object(v) ? type_of(v) : NULL;
            if (len < cap) {
                len +=
                    (size_t)snprintf(buf + len, cap - len, "%s%s", i ? ", " : " [", vt ? vt : "?");
            }
        }
        if (len < cap) snprintf(buf + len, cap - len, "]");
    }
    return buf;
}

static ss_err load_pre_tokenizer_decoder(ss_tokenizer *t, const json_t *root)
{
    char what[256];
    const json_t *pt = json_object_get(root, "pre_tokenizer");
    if (!pt || json_is_null(pt)) {
        return ss_fail(SS_ERR_UNSUPPORTED,
                       "tokenizer.json: no pre_tokenizer; only byte-level BPE (ByteLevel) is "
                       "supported");
    }
    if (!json_is_object(pt) || !type_of(pt)) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: pre_tokenizer is not an object with a type");
    }
    const json_t *bl = single_byte_level(pt, "pretokenizers");
    if (!bl) {
        return ss_fail(SS_ERR_UNSUPPORTED,
                       "tokenizer.json: pre_tokenizer %s is not supported (only ByteLevel, alone "
                       "or as the only member of a Sequence)",
                       describe(pt, "pretokenizers", what, sizeof what));
    }
    int aps = get_bool(bl, "add_prefix_space", 1);
    int use_regex = get_bool(bl, "use_regex", 1);
    if (aps < 0 || use_regex < 0 || get_bool(bl, "trim_offsets", 1) < 0) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: pre_tokenizer ByteLevel: option not a "
                                      "boolean");
    }
    t->add_prefix_space = aps;
    if (use_regex) {
        int errcode;
        PCRE2_SIZE erroff;
        t->re = pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED,
                              PCRE2_UTF | PCRE2_UCP, &errcode, &erroff, NULL);
        if (!t->re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(errcode, msg, sizeof msg);
            return ss_fail(SS_ERR_INTERNAL, "tokenizer: GPT-2 regex does not compile at %zu: %s",
                           (size_t)erroff, (const char *)msg);
        }
        /* JIT is an optimisation only: without it (no JIT support) pcre2_match interprets. */
        (void)pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE);
    }

    const json_t *dec = json_object_get(root, "decoder");
    if (!dec || json_is_null(dec)) {
        return ss_fail(SS_ERR_UNSUPPORTED,
                       "tokenizer.json: no decoder; only the ByteLevel decoder is supported");
    }
    if (!json_is_object(dec) || !type_of(dec)) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: decoder is not an object with a type");
    }
    if (!single_byte_level(dec, "decoders")) {
        return ss_fail(SS_ERR_UNSUPPORTED,
                       "tokenizer.json: decoder %s is not supported (only ByteLevel, alone or as "
                       "the only member of a Sequence)",
                       describe(dec, "decoders", what, sizeof what));
    }
    return SS_OK;
}

/* An optional string field: NULL for absent/null, *bad = 1 when present but not a string. */
static const char *opt_string(const json_t *o, const char *key, int *bad)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return NULL;
    if (!json_is_string(v)) {
        *bad = 1;
        return NULL;
    }
    return json_string_value(v);
}

static ss_err load_model(ss_tokenizer *t, const json_t *model, int32_t *max_id)
{
    ss_err err = SS_OK;
    char *cat = NULL;
    size_t cat_cap = 0;
    const char **vocab_r = NULL;

    if (!json_is_object(model)) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: no \"model\" object");
    }
    const char *type = type_of(model);
    if (type && strcmp(type, "BPE") != 0) {
        return ss_fail(SS_ERR_UNSUPPORTED,
                       "tokenizer.json: model type '%s' is not supported (only BPE)", type);
    }
    if (!type && json_object_get(model, "type")) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: model.type is not a string");
    }
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout)) {
        if (!ss_json_is_number(dropout)) {
            return ss_fail(SS_ERR_FORMAT, "tokenizer.json: model.dropout is not a number");
        }
        if (ss_json_real(dropout, 0) != 0.0) {
            return ss_fail(SS_ERR_UNSUPPORTED, "tokenizer.json: BPE dropout is not supported");
        }
    }
    int bad = 0;
    const char *unk = opt_string(model, "unk_token", &bad);
    const char *prefix = opt_string(model, "continuing_subword_prefix", &bad);
    const char *suffix = opt_string(model, "end_of_word_suffix", &bad);
    int fuse = get_bool(model, "fuse_unk", 0);
    int byte_fallback = get_bool(model, "byte_fallback", 0);
    int ignore_merges = get_bool(model, "ignore_merges", 0);
    if (bad || fuse < 0 || byte_fallback < 0 || ignore_merges < 0) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: a BPE option has the wrong type");
    }
    if (prefix || suffix) {
        return ss_fail(SS_ERR_UNSUPPORTED, "tokenizer.json: BPE continuing_subword_prefix / "
                                           "end_of_word_suffix are not supported");
    }
    if (byte_fallback) {
        return ss_fail(SS_ERR_UNSUPPORTED, "tokenizer.json: BPE byte_fallback is not supported");
    }
    if (ignore_merges) {
        return ss_fail(SS_ERR_UNSUPPORTED, "tokenizer.json: BPE ignore_merges is not supported");
    }
    t->fuse_unk = fuse;

    /* vocab: token string -> id */
    const json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: model.vocab is not an object");
    }
    const char *key;
    const json_t *val;
    json_object_foreach ((json_t *)vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) > MAX_ID) {
            return ss_fail(SS_ERR_FORMAT,
                           "tokenizer.json: vocab entry '%s' is not an id in [0, %d]", key, MAX_ID);
        }
        int32_t id = (int32_t)json_integer_value(val);
        size_t len = strlen(key);
        const char *k = arena_dup(&t->arena, key, len);
        if (!k || strmap_put(&t->vocab, k, len, id) != 0) {
            return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        }
        if (id > *max_id) *max_id = id;
    }
    size_t n_vocab = t->vocab.n;
    if (n_vocab == 0) return ss_fail(SS_ERR_FORMAT, "tokenizer.json: model.vocab is empty");
    /* Ids must be unique: decoding an id would otherwise be ambiguous. */
    vocab_r = calloc((size_t)*max_id + 1, sizeof *vocab_r);
    if (!vocab_r) return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i <= t->vocab.mask; i++) {
        const str_slot *sl = &t->vocab.slots[i];
        if (!sl->key) continue;
        if (vocab_r[sl->val]) {
            err =
                ss_fail(SS_ERR_FORMAT, "tokenizer.json: vocab id %d is given to both '%s' and '%s'",
                        sl->val, vocab_r[sl->val], sl->key);
            goto out;
        }
        vocab_r[sl->val] = sl->key;
    }

    if (unk) {
        t->unk_id = strmap_get(&t->vocab, unk, strlen(unk));
        if (t->unk_id < 0) {
            err = ss_fail(SS_ERR_FORMAT, "tokenizer.json: unk_token '%s' is not in the vocab", unk);
            goto out;
        }
    }

    /* Initial symbols: the id of each byte's char. */
    int32_t b2c[256];
    int16_t c2b[0x144];
    byte_chars(b2c, c2b);
    for (int b = 0; b < 256; b++) {
        char u[4];
        size_t ul = (size_t)utf8proc_encode_char(b2c[b], (utf8proc_uint8_t *)u);
        t->byte_id[b] = strmap_get(&t->vocab, u, ul);
    }

    /* merges: "a b" strings or ["a", "b"] pairs; rank = position (HF skips "#version" lines) */
    const json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges)) {
        err = ss_fail(SS_ERR_FORMAT, "tokenizer.json: model.merges is not an array");
        goto out;
    }
    size_t i, rank = 0;
    const json_t *m;
    json_array_foreach (merges, i, m) {
        const char *a, *b;
        size_t al, bl;
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            size_t sl = json_string_length(m);
            if (sl >= 8 && !memcmp(s, "#version", 8)) continue;
            const char *sp = memchr(s, ' ', sl);
            if (!sp || memchr(sp + 1, ' ', sl - (size_t)(sp + 1 - s))) {
                err = ss_fail(SS_ERR_FORMAT,
                              "tokenizer.json: merge %zu ('%s') is not two tokens separated by "
                              "one space",
                              i, s);
                goto out;
            }
            a = s;
            al = (size_t)(sp - s);
            b = sp + 1;
            bl = sl - al - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            al = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            bl = json_string_length(json_array_get(m, 1));
        } else {
            err = ss_fail(SS_ERR_FORMAT,
                          "tokenizer.json: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", i);
            goto out;
        }
        int32_t ia = strmap_get(&t->vocab, a, al), ib = strmap_get(&t->vocab, b, bl);
        if (al + bl > cat_cap) {
            size_t nc = 2 * (al + bl) + 16;
            char *p = realloc(cat, nc);
            if (!p) {
                err = ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
                goto out;
            }
            cat = p;
            cat_cap = nc;
        }
        memcpy(cat, a, al);
        memcpy(cat + al, b, bl);
        int32_t inew = strmap_get(&t->vocab, cat, al + bl);
        if (ia < 0 || ib < 0 || inew < 0) {
            const char *miss = ia < 0 ? a : ib < 0 ? b : cat;
            size_t ml = ia < 0 ? al : ib < 0 ? bl : al + bl;
            err = ss_fail(SS_ERR_FORMAT,
                          "tokenizer.json: merge %zu ('%.*s' '%.*s'): '%.*s' is not in "
                          "the vocab",
                          i, (int)al, a, (int)bl, b, (int)ml, miss);
            goto out;
        }
        /* A later duplicate overwrites an earlier one, as HF's HashMap collect does. */
        if (imap_put(&t->merges, (uint64_t)ia << 32 | (uint32_t)ib,
                     (uint64_t)rank << 32 | (uint32_t)inew) != 0) {
            err = ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
            goto out;
        }
        rank++;
    }

    /* Decode table, vocab part (added tokens override below). */
    t->n_ids = *max_id + 1;
    t->ids = calloc((size_t)t->n_ids, sizeof *t->ids);
    if (!t->ids) {
        err = ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        goto out;
    }
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (!vocab_r[id]) continue;
        t->ids[id].bytes = byte_decode(t, c2b, vocab_r[id], strlen(vocab_r[id]), &t->ids[id].len);
        if (!t->ids[id].bytes) {
            err = ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
            goto out;
        }
    }
out:
    free(cat);
    free(vocab_r);
    return err;
}

/* added_tokens, in file order, through HF's AddedVocabulary::add_tokens: an added token takes the
 * id its content already has (added or vocab), else the next id after the vocab; the id in the
 * file is not used (HF only warns when it differs). */
static ss_err load_added(ss_tokenizer *t, const json_t *list, int32_t *max_id)
{
    ss_err err = SS_OK;
    char *normed = NULL;
    if (!list || json_is_null(list)) return SS_OK;
    if (!json_is_array(list)) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: added_tokens is not an array");
    }
    int64_t next_id = (int64_t)t->vocab.n; /* model.get_vocab_size() */
    size_t i;
    const json_t *o;
    json_array_foreach (list, i, o) {
        const json_t *c = json_object_get(o, "content");
        if (!json_is_object(o) || !json_is_string(c)) {
            return ss_fail(SS_ERR_FORMAT, "tokenizer.json: added_tokens[%zu] has no content", i);
        }
        const json_t *jid = json_object_get(o, "id");
        if (jid && !json_is_integer(jid)) {
            return ss_fail(SS_ERR_FORMAT, "tokenizer.json: added_tokens[%zu].id is not an integer",
                           i);
        }
        added_tok tok = {0};
        int sw = get_bool(o, "single_word", 0), ls = get_bool(o, "lstrip", 0);
        int rs = get_bool(o, "rstrip", 0), nz = get_bool(o, "normalized", 1);
        int sp = get_bool(o, "special", 0);
        if (sw < 0 || ls < 0 || rs < 0 || nz < 0 || sp < 0) {
            return ss_fail(SS_ERR_FORMAT,
                           "tokenizer.json: added_tokens[%zu]: a flag is not a boolean", i);
        }
        const char *content = json_string_value(c);
        size_t clen = json_string_length(c);
        if (clen == 0) continue; /* HF ignores empty tokens */
        if (memchr(content, '\0', clen)) {
            return ss_fail(SS_ERR_FORMAT, "tokenizer.json: added_tokens[%zu] contains a NUL", i);
        }
        tok.single_word = (uint8_t)sw;
        tok.lstrip = (uint8_t)ls;
        tok.rstrip = (uint8_t)rs;
        tok.normalized = (uint8_t)nz;
        tok.special = (uint8_t)sp;

        int32_t id = strmap_get(&t->added_map, content, clen);
        if (id >= 0) {
            const uint64_t *ix = imap_get(&t->added_by_id, (uint64_t)id);
            const added_tok *old = ix ? &t->added[*ix] : NULL;
            if (old && old->single_word == tok.single_word && old->lstrip == tok.lstrip &&
                old->rstrip == tok.rstrip && old->normalized == tok.normalized &&
                old->special == tok.special && old->content_len == clen &&
                !memcmp(old->content, content, clen)) {
                continue; /* identical: HF's fast path */
            }
        } else {
            id = strmap_get(&t->vocab, content, clen);
        }
        if (id < 0) {
            if (next_id > MAX_ID) {
                return ss_fail(SS_ERR_FORMAT, "tokenizer.json: too many added tokens");
            }
            id = (int32_t)next_id++;
        }
        tok.id = id;
        tok.content = arena_dup(&t->arena, content, clen);
        tok.content_len = clen;
        if (!tok.content) return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");

        const uint64_t *ix = imap_get(&t->added_by_id, (uint64_t)id);
        if (ix) {
            /* HF's normalized_cache entry of this id survives an overwrite. */
            tok.norm = t->added[*ix].norm;
            tok.norm_len = t->added[*ix].norm_len;
        }
        if (tok.normalized && t->nfc) {
            size_t nl = 0;
            normed = nfc(content, clen, &nl);
            if (!normed) return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
            if (nl != clen || memcmp(normed, content, clen) != 0) {
                tok.norm = arena_dup(&t->arena, normed, nl);
                tok.norm_len = nl;
                if (!tok.norm) {
                    err = ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
                    goto out;
                }
            }
            free(normed);
            normed = NULL;
        }
        if (strmap_put(&t->added_map, tok.content, clen, id) != 0) {
            return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        }
        if (ix) {
            t->added[*ix] = tok;
        } else {
            if (t->n_added == t->cap_added) {
                size_t nc = t->cap_added ? 2 * t->cap_added : 16;
                added_tok *na = realloc(t->added, nc * sizeof *na);
                if (!na) return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
                t->added = na;
                t->cap_added = nc;
            }
            t->added[t->n_added] = tok;
            if (imap_put(&t->added_by_id, (uint64_t)id, t->n_added) != 0) {
                return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
            }
            t->n_added++;
        }
        if (id > *max_id) *max_id = id;
    }
out:
    free(normed);
    return err;
}

/* Decode table for added tokens, special flags, and the two matching tries. */
static ss_err finish_added(ss_tokenizer *t, const json_t *list, int32_t max_id)
{
    ss_err err = SS_OK;
    strmap specials = {0}; /* HF's special_tokens_set: contents ever added as special */
    int32_t b2c[256];
    int16_t c2b[0x144];
    byte_chars(b2c, c2b);

    if (max_id + 1 > t->n_ids) {
        id_info *ni = realloc(t->ids, ((size_t)max_id + 1) * sizeof *ni);
        if (!ni) return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        memset(ni + t->n_ids, 0, ((size_t)max_id + 1 - (size_t)t->n_ids) * sizeof *ni);
        t->ids = ni;
        t->n_ids = max_id + 1;
    }
    size_t i;
    const json_t *o;
    json_array_foreach (list, i, o) {
        const json_t *c = json_object_get(o, "content");
        if (get_bool(o, "special", 0) == 1 && json_string_length(c) > 0) {
            if (strmap_put(&specials, json_string_value(c), json_string_length(c), 1) != 0) {
                err = ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
                goto out;
            }
        }
    }
    for (size_t k = 0; k < t->n_added; k++) {
        const added_tok *a = &t->added[k];
        /* Decoding uses the normalized form when there is one (simple_id_to_token). */
        const char *s = a->norm ? a->norm : a->content;
        size_t sl = a->norm ? a->norm_len : a->content_len;
        id_info *d = &t->ids[a->id];
        d->bytes = byte_decode(t, c2b, s, sl, &d->len);
        if (!d->bytes) {
            err = ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
            goto out;
        }
        err = a->normalized ? trie_add(&t->norm_trie, s, sl, (int32_t)k)
                            : trie_add(&t->raw_trie, a->content, a->content_len, (int32_t)k);
        if (err) goto out;
    }
    /* skip_special tests the token string of every id against the set: the added token's string
     * for added ids, the vocab string for the others. */
    for (size_t k = 0; k < t->n_added; k++) {
        const added_tok *a = &t->added[k];
        const char *s = a->norm ? a->norm : a->content;
        size_t sl = a->norm ? a->norm_len : a->content_len;
        t->ids[a->id].special = strmap_get(&specials, s, sl) >= 0;
    }
    for (size_t k = 0; specials.slots && k <= specials.mask; k++) {
        const str_slot *sl = &specials.slots[k];
        if (!sl->key) continue;
        int32_t vid = strmap_get(&t->vocab, sl->key, sl->len);
        if (vid >= 0 && !imap_get(&t->added_by_id, (uint64_t)vid)) t->ids[vid].special = 1;
    }
out:
    free(specials.slots);
    return err;
}

ss_err ss_tokenizer_open_mem(ss_tokenizer **out, const char *json, size_t len)
{
    ss_err err;
    json_t *root = NULL;
    ss_tokenizer *t = NULL;

    err = ss_json_parse_relaxed(json, len, "tokenizer.json", &root);
    if (err) goto out;
    if (!json_is_object(root)) {
        err = ss_fail(SS_ERR_FORMAT, "tokenizer.json: top level is not an object");
        goto out;
    }
    t = calloc(1, sizeof *t);
    if (!t) {
        err = ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        goto out;
    }
    t->unk_id = -1;
    int32_t max_id = -1;
    err = load_normalizer(t, json_object_get(root, "normalizer"));
    if (err) goto out;
    err = load_model(t, json_object_get(root, "model"), &max_id);
    if (err) goto out;
    err = load_pre_tokenizer_decoder(t, root);
    if (err) goto out;
    const json_t *added = json_object_get(root, "added_tokens");
    err = load_added(t, added, &max_id);
    if (err) goto out;
    err = finish_added(t, added, max_id);
    if (err) goto out;
    *out = t;
    t = NULL;
out:
    ss_tokenizer_close(t);
    json_decref(root);
    return err;
}

ss_err ss_tokenizer_open(ss_tokenizer **out, const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    ss_err err = ss_read_file(path, MAX_JSON_BYTES, &buf, &len);
    if (err) return err;
    err = ss_tokenizer_open_mem(out, buf, len);
    free(buf);
    if (err) {
        /* Name the file: messages from the parser start with "tokenizer.json: ". */
        char msg[1024];
        const char *m = ss_errmsg();
        snprintf(msg, sizeof msg, "%s", strncmp(m, "tokenizer.json: ", 16) ? m : m + 16);
        ss_fail(err, "%s: %s", path, msg);
    }
    return err;
}

int ss_tokenizer_vocab_size(const ss_tokenizer *t)
{
    return t->n_ids;
}

int32_t ss_tokenizer_token_id(const ss_tokenizer *t, const char *token)
{
    size_t n = strlen(token);
    int32_t id = strmap_get(&t->added_map, token, n);
    return id >= 0 ? id : strmap_get(&t->vocab, token, n);
}

const char *ss_tokenizer_token_bytes(const ss_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_ids || !t->ids[id].bytes) return NULL;
    if (len) *len = t->ids[id].len;
    return t->ids[id].bytes;
}

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

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np) return -1;
    *p = np;
    *cap = nc;
    return 0;
}

static ss_err emit(enc *e, int32_t id)
{
    if (e->n_out == e->cap_out && grow((void **)&e->out, &e->cap_out, e->n_out + 1, 4) != 0) {
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
                if (grow((void **)&e->out, &e->cap_out, e->n_out + sl->n_ids, 4) != 0) {
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
    if (grow((void **)&e->cache_bytes, &e->cap_cache_bytes, e->n_cache_bytes + n, 1) != 0 ||
        grow((void **)&e->cache_ids, &e->cap_cache_ids, e->n_cache_ids + k, 4) != 0 ||
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
        if (grow((void **)&e->buf, &e->cap_buf, n + 1, 1) != 0) {
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
        if (grow((void **)ps, cap, *np + 1, sizeof(piece)) != 0) {                                 \
            return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");                              \
        }                                                                                          \
        (*ps)[(*np)++] = (piece){(a), (b), (i)};                                                   \
    } while (0)
    while (from < n && trie_find(tr, s, n, from, &ms, &me, &k)) {
        from = me;
        const added_tok *a = &t->added[k];
        size_t start = ms, stop = me, cl;
        if (a->single_word) {
            int start_space = start == 0 || !is_word(utf8_prev(u, start, &cl));
            int stop_space = stop == n || !is_word(utf8_next(u + stop, n - stop, &cl));
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0 && is_ws(utf8_prev(u, ns, &cl))) ns -= cl;
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n && is_ws(utf8_next(u + stop, n - stop, &cl))) stop += cl;
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
    if (grow((void **)&e.out, &e.cap_out, len / 3 + 16, 4) != 0) {
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
        if (t->nfc && !is_ascii(s, n)) { /* ASCII is already NFC */
            free(norm);
            norm = nfc(s, n, &n);
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

/* ---- decoding ------------------------------------------------------------------------------ */

ss_err ss_tokenizer_decode(const ss_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                           char **text, size_t *len)
{
    ss_err err = SS_OK;
    unsigned char *raw = NULL;
    char *res = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || !t->ids[ids[i]].bytes) {
            return ss_fail(SS_ERR_INVALID, "tokenizer: id %d (at %zu) is not a token id (vocab %d)",
                           (int)ids[i], i, (int)t->n_ids);
        }
        if (!(skip_special && t->ids[ids[i]].special)) total += t->ids[ids[i]].len;
    }
    raw = malloc(total + 1);
    res = malloc(3 * total + 1);
    if (!raw || !res) {
        err = ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        goto out;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const id_info *d = &t->ids[ids[i]];
        if (skip_special && d->special) continue;
        memcpy(raw + o, d->bytes, d->len);
        o += d->len;
    }
    size_t rl;
    utf8_lossy(raw, total, 1, res, &rl);
    res[rl] = '\0';
    *text = res;
    res = NULL;
    if (len) *len = rl;
out:
    free(raw);
    free(res);
    return err;
}

struct ss_detok {
    const ss_tokenizer *t;
    unsigned char *in; /* held-back tail (< 4 bytes) followed by the new token's bytes */
    size_t n_in, cap_in;
    char *out; /* what push/flush return */
    size_t cap_out;
};

ss_err ss_detok_new(const ss_tokenizer *t, ss_detok **out)
{
    ss_detok *d = calloc(1, sizeof *d);
    if (!d) return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
    d->t = t;
    *out = d;
    return SS_OK;
}

void ss_detok_free(ss_detok *d)
{
    if (!d) return;
    free(d->in);
    free(d->out);
    free(d);
}

/* Decode d->in, keep the incomplete tail (unless final), return the text. */
static const char *detok_run(ss_detok *d, int final, size_t *len)
{
    if (grow((void **)&d->out, &d->cap_out, 3 * d->n_in + 1, 1) != 0) {
        ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        return NULL;
    }
    size_t ol;
    size_t used = utf8_lossy(d->in, d->n_in, final, d->out, &ol);
    if (used && used < d->n_in) memmove(d->in, d->in + used, d->n_in - used);
    d->n_in -= used;
    d->out[ol] = '\0';
    if (len) *len = ol;
    return d->out;
}

const char *ss_detok_push(ss_detok *d, int32_t id, size_t *len)
{
    size_t n;
    const char *b = ss_tokenizer_token_bytes(d->t, id, &n);
    if (!b) {
        ss_fail(SS_ERR_INVALID, "tokenizer: id %d is not a token id (vocab %d)", (int)id,
                (int)d->t->n_ids);
        return NULL;
    }
    if (grow((void **)&d->in, &d->cap_in, d->n_in + n, 1) != 0) {
        ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        return NULL;
    }
    memcpy(d->in + d->n_in, b, n);
    d->n_in += n;
    return detok_run(d, 0, len);
}

const char *ss_detok_flush(ss_detok *d, size_t *len)
{
    return detok_run(d, 1, len);
}
