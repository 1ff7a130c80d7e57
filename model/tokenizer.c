/*
 * tokenizer.c - the tokenizer object and its tokenizer.json loader. Byte-level BPE (GPT-2 /
 * GPT-NeoX kind) from a HF tokenizer.json, written to give
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
 *
 * Files: tok_containers.c (arena, maps, trie), tok_unicode.c (UTF-8 and NFC helpers), this file
 * (loading), tok_encode.c and tok_decode.c; tok_internal.h is what they share.
 */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>
#include <xxhash.h>

#include "ss_buf.h"
#include "ss_util.h"

/* The GPT-2 pattern with Oniguruma's \s spelled out ([\t-\r\x85\p{Z}]): PCRE2's \s also matches
 * U+180E, which Oniguruma (and so HF) does not. */
#define WS "\\x{09}-\\x{0D}\\x{85}\\p{Z}"
static const char gpt2_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS
                                   "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])|[" WS "]+";
#undef WS
/* ---- the tokenizer ------------------------------------------------------------------------- */

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
        json_array_foreach(list, i, v)
        {
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
        json_array_foreach(list, i, v)
        {
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

/* model's type and BPE options: only plain byte-level BPE is supported; *unk gets unk_token
 * (or NULL). SS_ERR_FORMAT for a malformed option, SS_ERR_UNSUPPORTED for a BPE variant. */
static ss_err load_bpe_options(ss_tokenizer *t, const json_t *model, const char **unk)
{
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
    *unk = opt_string(model, "unk_token", &bad);
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
    return SS_OK;
}

/* model.vocab into t->vocab; *max_id raised to its largest id, *vocab_r (malloc'd, [*max_id + 1])
 * gets each id's token string. SS_ERR_FORMAT (bad entry, empty, an id given twice),
 * SS_ERR_NOMEM. */
static ss_err load_vocab(ss_tokenizer *t, const json_t *model, int32_t *max_id,
                         const char ***vocab_r)
{
    const json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: model.vocab is not an object");
    }
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)vocab, key, val)
    {
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
    if (t->vocab.n == 0) return ss_fail(SS_ERR_FORMAT, "tokenizer.json: model.vocab is empty");
    /* Ids must be unique: decoding an id would otherwise be ambiguous. */
    const char **r = calloc((size_t)*max_id + 1, sizeof *r);
    if (!r) return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
    *vocab_r = r;
    for (size_t i = 0; i <= t->vocab.mask; i++) {
        const str_slot *sl = &t->vocab.slots[i];
        if (!sl->key) continue;
        if (r[sl->val]) {
            return ss_fail(SS_ERR_FORMAT,
                           "tokenizer.json: vocab id %d is given to both '%s' and '%s'", sl->val,
                           r[sl->val], sl->key);
        }
        r[sl->val] = sl->key;
    }
    return SS_OK;
}

/* Merge number i as its two halves: "a b" or ["a", "b"]. 1 for a "#version" line (HF skips it),
 * 0 when set, -1 with SS_ERR_FORMAT reported when it is neither form. */
static int merge_halves(const json_t *m, size_t i, const char **a, size_t *al, const char **b,
                        size_t *bl)
{
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t sl = json_string_length(m);
        if (sl >= 8 && !memcmp(s, "#version", 8)) return 1;
        const char *sp = memchr(s, ' ', sl);
        if (!sp || memchr(sp + 1, ' ', sl - (size_t)(sp + 1 - s))) {
            ss_fail(SS_ERR_FORMAT,
                    "tokenizer.json: merge %zu ('%s') is not two tokens separated by one space", i,
                    s);
            return -1;
        }
        *a = s;
        *al = (size_t)(sp - s);
        *b = sp + 1;
        *bl = sl - *al - 1;
        return 0;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *al = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *bl = json_string_length(json_array_get(m, 1));
        return 0;
    }
    ss_fail(SS_ERR_FORMAT, "tokenizer.json: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", i);
    return -1;
}

/* model.merges into t->merges: (left id, right id) -> (rank, merged id), rank = position.
 * SS_ERR_FORMAT (malformed, or a half or the merged token not in the vocab), SS_ERR_NOMEM. */
static ss_err load_merges(ss_tokenizer *t, const json_t *model)
{
    ss_err err = SS_OK;
    char *cat = NULL;
    size_t cat_cap = 0;
    const json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges)) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: model.merges is not an array");
    }
    size_t i, rank = 0;
    const json_t *m;
    json_array_foreach(merges, i, m)
    {
        const char *a, *b;
        size_t al, bl;
        int r = merge_halves(m, i, &a, &al, &b, &bl);
        if (r > 0) continue;
        if (r < 0) {
            err = SS_ERR_FORMAT;
            goto out;
        }
        int32_t ia = strmap_get(&t->vocab, a, al), ib = strmap_get(&t->vocab, b, bl);
        if (ss_grow((void **)&cat, &cat_cap, al + bl, 1)) {
            err = ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
            goto out;
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
out:
    free(cat);
    return err;
}

/* tokenizer.json's "model": BPE options, vocab, unk token, byte symbols, merges and the decode
 * table of the vocab; *max_id raised to the largest vocab id. SS_ERR_FORMAT,
 * SS_ERR_UNSUPPORTED or SS_ERR_NOMEM, as its parts say. */
static ss_err load_model(ss_tokenizer *t, const json_t *model, int32_t *max_id)
{
    const char **vocab_r = NULL;
    const char *unk = NULL;
    ss_err err = load_bpe_options(t, model, &unk);
    if (err) return err;
    if ((err = load_vocab(t, model, max_id, &vocab_r))) goto out;
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
    if ((err = load_merges(t, model))) goto out;

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
    free(vocab_r);
    return err;
}

/* One added_tokens entry's content and flags into *tok (id not yet set); *clen 0 for an empty
 * content, which HF ignores. */
static ss_err added_parse(const json_t *o, size_t i, added_tok *tok, const char **content,
                          size_t *clen)
{
    const json_t *c = json_object_get(o, "content");
    if (!json_is_object(o) || !json_is_string(c)) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: added_tokens[%zu] has no content", i);
    }
    const json_t *jid = json_object_get(o, "id");
    if (jid && !json_is_integer(jid)) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: added_tokens[%zu].id is not an integer", i);
    }
    int sw = get_bool(o, "single_word", 0), ls = get_bool(o, "lstrip", 0);
    int rs = get_bool(o, "rstrip", 0), nz = get_bool(o, "normalized", 1);
    int sp = get_bool(o, "special", 0);
    if (sw < 0 || ls < 0 || rs < 0 || nz < 0 || sp < 0) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: added_tokens[%zu]: a flag is not a boolean",
                       i);
    }
    *content = json_string_value(c);
    *clen = json_string_length(c);
    if (*clen && memchr(*content, '\0', *clen)) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: added_tokens[%zu] contains a NUL", i);
    }
    *tok = (added_tok){.single_word = (uint8_t)sw,
                       .lstrip = (uint8_t)ls,
                       .rstrip = (uint8_t)rs,
                       .normalized = (uint8_t)nz,
                       .special = (uint8_t)sp};
    return SS_OK;
}

/* The id an added token takes: the one its content already has (added or vocab), else the next
 * after the vocab. -2 when an identical token is already added (HF's fast path: skip it). */
static int64_t added_id(ss_tokenizer *t, const added_tok *tok, const char *content, size_t clen,
                        int64_t *next_id)
{
    int32_t id = strmap_get(&t->added_map, content, clen);
    if (id >= 0) {
        const uint64_t *ix = imap_get(&t->added_by_id, (uint64_t)id);
        const added_tok *old = ix ? &t->added[*ix] : NULL;
        if (old && old->single_word == tok->single_word && old->lstrip == tok->lstrip &&
            old->rstrip == tok->rstrip && old->normalized == tok->normalized &&
            old->special == tok->special && old->content_len == clen &&
            !memcmp(old->content, content, clen)) {
            return -2;
        }
    } else {
        id = strmap_get(&t->vocab, content, clen);
    }
    if (id >= 0) return id;
    if (*next_id > MAX_ID) return -1;
    return (*next_id)++;
}

/* The NFC form of a normalized token's content, kept only where it differs. */
static ss_err added_normalize(ss_tokenizer *t, added_tok *tok)
{
    if (!tok->normalized || !t->nfc) return SS_OK;
    size_t nl = 0;
    char *normed = tok_nfc(tok->content, tok->content_len, &nl);
    if (!normed) return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
    ss_err err = SS_OK;
    if (nl != tok->content_len || memcmp(normed, tok->content, nl) != 0) {
        tok->norm = arena_dup(&t->arena, normed, nl);
        tok->norm_len = nl;
        if (!tok->norm) err = ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
    }
    free(normed);
    return err;
}

/* Adds tok, or overwrites the added token that has its id. */
static ss_err added_insert(ss_tokenizer *t, const added_tok *tok)
{
    if (strmap_put(&t->added_map, tok->content, tok->content_len, tok->id) != 0) {
        return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
    }
    const uint64_t *ix = imap_get(&t->added_by_id, (uint64_t)tok->id);
    if (ix) {
        t->added[*ix] = *tok;
        return SS_OK;
    }
    if (ss_grow((void **)&t->added, &t->cap_added, t->n_added + 1, sizeof *t->added))
        return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
    t->added[t->n_added] = *tok;
    if (imap_put(&t->added_by_id, (uint64_t)tok->id, t->n_added) != 0) {
        return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
    }
    t->n_added++;
    return SS_OK;
}

/* added_tokens, in file order, through HF's AddedVocabulary::add_tokens: an added token takes the
 * id its content already has (added or vocab), else the next id after the vocab; the id in the
 * file is not used (HF only warns when it differs). */
static ss_err load_added(ss_tokenizer *t, const json_t *list, int32_t *max_id)
{
    ss_err err;
    if (!list || json_is_null(list)) return SS_OK;
    if (!json_is_array(list)) {
        return ss_fail(SS_ERR_FORMAT, "tokenizer.json: added_tokens is not an array");
    }
    int64_t next_id = (int64_t)t->vocab.n; /* model.get_vocab_size() */
    size_t i;
    const json_t *o;
    json_array_foreach(list, i, o)
    {
        added_tok tok;
        const char *content = NULL;
        size_t clen = 0;
        if ((err = added_parse(o, i, &tok, &content, &clen))) return err;
        if (clen == 0) continue; /* HF ignores empty tokens */
        int64_t id = added_id(t, &tok, content, clen, &next_id);
        if (id == -2) continue; /* identical: HF's fast path */
        if (id < 0) return ss_fail(SS_ERR_FORMAT, "tokenizer.json: too many added tokens");
        tok.id = (int32_t)id;
        tok.content = arena_dup(&t->arena, content, clen);
        tok.content_len = clen;
        if (!tok.content) return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        const uint64_t *ix = imap_get(&t->added_by_id, (uint64_t)id);
        if (ix) {
            /* HF's normalized_cache entry of this id survives an overwrite. */
            tok.norm = t->added[*ix].norm;
            tok.norm_len = t->added[*ix].norm_len;
        }
        if ((err = added_normalize(t, &tok))) return err;
        if ((err = added_insert(t, &tok))) return err;
        if (id > *max_id) *max_id = (int32_t)id;
    }
    return SS_OK;
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
    json_array_foreach(list, i, o)
    {
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
