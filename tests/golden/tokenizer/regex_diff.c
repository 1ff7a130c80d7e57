/*
 * regex_diff.c - differential check of the GPT-2 pre-tokenizer regex: Oniguruma (the engine HF
 * `tokenizers` runs it with, via the onig crate) against the PCRE2 pattern in model/tokenizer.c,
 * on random strings rich in whitespace, apostrophes and code points from every plane. Prints the
 * strings whose splits differ. Not part of the build (it needs the Oniguruma headers); see
 * README.md for how to run it. Keep `pcre_pattern` equal to gpt2_pattern in model/tokenizer.c.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <oniguruma.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* HF's pattern, as written in tokenizers/src/pre_tokenizers/byte_level.rs. */
static const char onig_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
#define WS "\\x{09}-\\x{0D}\\x{85}\\p{Z}"
static const char pcre_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS
                                   "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])|[" WS "]+";

static uint64_t rng_state = 88172645463325252ULL;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)rng_state;
}

static size_t put_utf8(uint32_t c, unsigned char *o)
{
    if (c < 0x80) {
        o[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (unsigned char)(0xC0 | c >> 6);
        o[1] = (unsigned char)(0x80 | (c & 63));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xE0 | c >> 12);
        o[1] = (unsigned char)(0x80 | ((c >> 6) & 63));
        o[2] = (unsigned char)(0x80 | (c & 63));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | c >> 18);
    o[1] = (unsigned char)(0x80 | ((c >> 12) & 63));
    o[2] = (unsigned char)(0x80 | ((c >> 6) & 63));
    o[3] = (unsigned char)(0x80 | (c & 63));
    return 4;
}

/* Whitespace of every flavour (White_Space, Python-only, PCRE2-only), contraction letters. */
static const uint32_t interesting[] = {
    0x09,   0x0A,   0x0B,   0x0C,   0x0D,   0x1C,   0x1D,   0x1E,   0x1F,   0x20,   0x20,
    0x20,   0x85,   0xA0,   0x1680, 0x180E, 0x2000, 0x2005, 0x200A, 0x200B, 0x2028, 0x2029,
    0x202F, 0x205F, 0x3000, 0xFEFF, '\'',   '\'',   's',    't',    'm',    'd',    'l',
    'r',    'e',    'v',    'S',    '0',    '9',    '!',    '.'};

static uint32_t pick(void)
{
    uint32_t r = rnd() % 100, c;
    if (r < 40) return interesting[rnd() % (sizeof interesting / sizeof interesting[0])];
    if (r < 60) return 0x20 + rnd() % 0x5F;
    do {
        c = r < 80 ? rnd() % 0x30000 : rnd() % 0x110000;
    } while (c >= 0xD800 && c < 0xE000);
    return c;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 300000;
    OnigEncoding encs[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encs, 1);
    regex_t *oreg = NULL;
    OnigErrorInfo einfo;
    const UChar *op = (const UChar *)onig_pattern;
    if (onig_new(&oreg, op, op + strlen(onig_pattern), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                 ONIG_SYNTAX_DEFAULT, &einfo) != ONIG_NORMAL) {
        fprintf(stderr, "onig_new failed\n");
        return 1;
    }
    OnigRegion *region = onig_region_new();
    int err;
    PCRE2_SIZE eoff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pcre_pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &err, &eoff, NULL);
    if (!re) {
        fprintf(stderr, "pcre2_compile failed\n");
        return 1;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);

    unsigned char s[64];   /* [n] the subject: up to 12 code points */
    size_t ob[32], pb[32]; /* match [start, end) pairs from each engine */
    uint32_t cps[12];
    long bad = 0;
    for (long it = 0; it < iters; it++) {
        int ncp = 1 + (int)(rnd() % 12);
        size_t n = 0, no = 0, np = 0, off = 0;
        for (int i = 0; i < ncp; i++) {
            cps[i] = pick();
            n += put_utf8(cps[i], s + n);
        }
        while (off < n && no < 32) {
            if (onig_search(oreg, s, s + n, s + off, s + n, region, ONIG_OPTION_NONE) < 0) break;
            ob[no++] = (size_t)region->beg[0];
            ob[no++] = (size_t)region->end[0];
            off = (size_t)region->end[0] + (region->end[0] == region->beg[0]);
        }
        off = 0;
        while (off < n && np < 32) {
            if (pcre2_match(re, s, n, off, 0, md, NULL) < 0) break;
            const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            pb[np++] = ov[0];
            pb[np++] = ov[1];
            off = ov[1] + (ov[1] == ov[0]);
        }
        if (no == np && !memcmp(ob, pb, no * sizeof *ob)) continue;
        if (bad++ < 20) {
            printf("differs:");
            for (int i = 0; i < ncp; i++) printf(" U+%04X", (unsigned)cps[i]);
            printf("\n  onig:");
            for (size_t i = 0; i < no; i += 2) printf(" [%zu,%zu)", ob[i], ob[i + 1]);
            printf("\n  pcre:");
            for (size_t i = 0; i < np; i += 2) printf(" [%zu,%zu)", pb[i], pb[i + 1]);
            printf("\n");
        }
    }
    printf("%ld of %ld random strings split differently\n", bad, iters);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    onig_region_free(region, 1);
    onig_free(oreg);
    onig_end();
    return bad != 0;
}
