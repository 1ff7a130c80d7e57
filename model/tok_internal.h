/*
 * tok_internal.h - what the files of the tokenizer share: the containers (arena, string and
 * integer maps, the added-token trie), the Unicode helpers and struct ss_tokenizer itself.
 * Internal to model/; the public API is ss_tokenizer.h. tokenizer.c says how it all fits.
 */
#ifndef SS_TOK_INTERNAL_H
#define SS_TOK_INTERNAL_H

#include "ss_tokenizer.h"

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

enum {
    MAX_JSON_BYTES = 1 << 30, /* tokenizer.json larger than this is refused */
    MAX_ID = (1 << 24) - 1,   /* ids above this are refused (HF allows u32; 16M is plenty) */
    WORD_CACHE_MAX_LEN = 64,  /* words longer than this skip the per-call cache */
};

/* ---- containers (tok_containers.c) ---------------------------------------------------------- */

typedef struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
    char data[];
} arena_blk;

/* n + 1 bytes of arena storage (the last set to NUL); NULL when out of memory. */
char *arena_alloc(arena_blk **a, size_t n);

/* Copy n bytes (plus a NUL) into the arena; NULL when out of memory. */
char *arena_dup(arena_blk **a, const char *s, size_t n);

/* Free every block of the arena (NULL is fine). */
void arena_free(arena_blk *a);

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

/* Value of key s[0..n), or -1. */
int32_t strmap_get(const strmap *m, const char *s, size_t n);

/* Insert or overwrite key -> val. The key must outlive the map. -1 when out of memory. */
int strmap_put(strmap *m, const char *s, size_t n, int32_t val);

#define IMAP_EMPTY UINT64_MAX

typedef struct imap {
    uint64_t *keys; /* IMAP_EMPTY = free slot */
    uint64_t *vals;
    size_t mask;
    size_t n;
} imap;

/* splitmix64's finaliser: spreads (left id, right id) pairs over the slots. */
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

/* Insert or overwrite; key must not be IMAP_EMPTY. -1 when out of memory. */
int imap_put(imap *m, uint64_t key, uint64_t val);

/* Free the map's arrays (the struct itself is the caller's). */
void imap_free(imap *m);

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

/* Add pattern p[0..n) (n > 0) with a value. SS_ERR_FORMAT for a duplicate pattern (HF's
 * Aho-Corasick builder refuses those too). */
ss_err trie_add(trie *t, const char *p, size_t n, int32_t value);

/* Leftmost-longest: first position >= from where a pattern starts; the longest one there.
 * Returns 1 and sets *start, *end, *value, or 0 when none. */
int trie_find(const trie *t, const char *s, size_t n, size_t from, size_t *start,
              size_t *end, int32_t *value);

/* ---- Unicode helpers (tok_unicode.c) ------------------------------------------------------- */

/* Decode one code point of valid UTF-8 at s (n > 0 bytes left); *len gets its byte count. */
int32_t utf8_next(const unsigned char *s, size_t n, size_t *len);

/* The code point that ends at s[end] (valid UTF-8, end > 0); *len gets its byte count. */
int32_t utf8_prev(const unsigned char *s, size_t end, size_t *len);

/* White_Space, the set behind \s in Rust's regex crate (lstrip/rstrip) and Oniguruma (GPT-2
 * regex): tab..CR, space, NEL, NBSP, U+1680, U+2000..U+200A, LS, PS, U+202F, U+205F, U+3000. */
int tok_is_ws(int32_t c);

/* \w of Rust's regex crate (single_word): Alphabetic, marks, Nd, Pc, Join_Control. Alphabetic is
 * letters, Nl and Other_Alphabetic, whose members outside the marks are the enclosed letters. */
int tok_is_word(int32_t c);

/*
 * Lossy UTF-8 -> UTF-8, as Rust's String::from_utf8_lossy: each maximal invalid subpart (a bad
 * byte, or a valid prefix cut short) becomes one U+FFFD. With final == 0 an incomplete but
 * still valid sequence at the end is not consumed. out needs 3 * n bytes. Returns the number of
 * bytes of s consumed; *olen gets the bytes written.
 */
size_t utf8_lossy(const unsigned char *s, size_t n, int final, char *out, size_t *olen);

/* Offset of the first byte that makes s invalid UTF-8, or SIZE_MAX when s is valid. */
size_t utf8_invalid_at(const unsigned char *s, size_t n);

/* NFC of s[0..n) (valid UTF-8) into a malloc'd string; NULL when out of memory. */
char *tok_nfc(const char *s, size_t n, size_t *out_len);

/* 1 when s[0..n) is all ASCII (NFC leaves it unchanged). */
int tok_is_ascii(const char *s, size_t n);

/* ---- the tokenizer object (tokenizer.c loads it, tok_encode.c and tok_decode.c read it) ------ */

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

#endif
