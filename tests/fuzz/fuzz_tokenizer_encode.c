/*
 * fuzz_tokenizer_encode.c - libFuzzer target: text into ss_tokenizer_encode with the real GPT-NeoX
 * tokenizer (tests/fixtures/tokenizer/gpt-neox-20b.tokenizer.json), then back through decode.
 *
 * The round trip is not the identity: the file's normalizer is NFC, and as in HF `tokenizers`
 * the text is first split on the added tokens with normalized=false (<|endoftext|>, <|padding|>,
 * <|im_start|>, <|im_end|>, assistant, RWKV: leftmost-longest), and each piece between them is
 * NFC-normalised on its own. So "assistant" + U+030C decodes as it came, not as NFC of the whole
 * ("assistan" + U+0165). What holds, and is asserted exactly, for every input:
 *   - valid UTF-8 (utf8proc's definition: no surrogates, nothing above U+10FFFF, shortest form)
 *     encodes; anything else is SS_ERR_INVALID;
 *   - every id is in [0, vocab_size);
 *   - decode(encode(x), skip_special=0) == R(x), where R keeps the raw-split added tokens as they
 *     are and replaces each piece between them with its NFC form;
 *   - decode(encode(x), skip_special=1) == R(x) without those tokens (all of them are special);
 *   - pushing the ids one by one through the streaming decoder and flushing gives decode's text.
 * For text that is NFC already and has no combining mark right after a raw-split token, R(x) is
 * x: the plain decode(encode(x)) == x.
 */
#include <jansson.h>
#include <utf8proc.h>

#include "fuzz_util.h"
#include "ss_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_RAW 64

static ss_tokenizer *tok;
static char *raw[MAX_RAW]; /* contents of the added tokens matched on the raw text */
static size_t raw_len[MAX_RAW];
static int n_raw;

/* Read the added tokens with normalized=false from the file itself (independently of the
 * tokenizer's own loader); refuse options this reference does not model. */
static void load_raw_tokens(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    json_t *j = NULL;
    if (ss_read_file(path, 1 << 30, &text, &len) || ss_json_parse_relaxed(text, len, path, &j)) {
        fprintf(stderr, "fuzz_tokenizer_encode: %s: %s\n", path, ss_errmsg());
        exit(1);
    }
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(j, "added_tokens"), i, a)
    {
        if (json_is_true(json_object_get(a, "lstrip")) ||
            json_is_true(json_object_get(a, "rstrip")) ||
            json_is_true(json_object_get(a, "single_word")) || n_raw == MAX_RAW) {
            fprintf(stderr, "fuzz_tokenizer_encode: added token options this reference does not "
                            "model\n");
            exit(1);
        }
        if (!json_is_false(json_object_get(a, "normalized"))) continue;
        raw[n_raw] = strdup(json_string_value(json_object_get(a, "content")));
        raw_len[n_raw] = strlen(raw[n_raw]);
        n_raw++;
    }
    json_decref(j);
    free(text);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[4096];
    fuzz_src_path("tests/fixtures/tokenizer/gpt-neox-20b.tokenizer.json", path, sizeof path);
    if (ss_tokenizer_open(&tok, path) != SS_OK) {
        fprintf(stderr, "fuzz_tokenizer_encode: %s\n", ss_errmsg());
        exit(1);
    }
    load_raw_tokens(path);
    return 0;
}

static int valid_utf8(const uint8_t *s, size_t n)
{
    size_t at = 0;
    while (at < n) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(s + at, (utf8proc_ssize_t)(n - at), &c);
        if (k <= 0) return 0;
        at += (size_t)k;
    }
    return 1;
}

/* Append the NFC form of s[0..n) to out (capacity allows it: NFC at most triples UTF-8). */
static size_t put_nfc(char *out, const uint8_t *s, size_t n)
{
    if (!n) return 0;
    utf8proc_uint8_t *d = NULL;
    utf8proc_ssize_t r = utf8proc_map(s, (utf8proc_ssize_t)n, &d, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    FUZZ_CHECK(r >= 0 && (size_t)r <= 3 * n, "utf8proc_map: %zd", (ssize_t)r);
    memcpy(out, d, (size_t)r);
    free(d);
    return (size_t)r;
}

/* R(x) (with the raw tokens, or without them when skip) into out (3 * n + 1 bytes). */
static size_t reference(const uint8_t *s, size_t n, int skip, char *out)
{
    size_t o = 0, piece = 0, at = 0;
    while (at < n) {
        int best = -1;
        for (int k = 0; k < n_raw; k++)
            if (raw_len[k] <= n - at && !memcmp(s + at, raw[k], raw_len[k]) &&
                (best < 0 || raw_len[k] > raw_len[best]))
                best = k;
        if (best < 0) {
            at++;
            continue;
        }
        o += put_nfc(out + o, s + piece, at - piece);
        if (!skip) {
            memcpy(out + o, raw[best], raw_len[best]);
            o += raw_len[best];
        }
        at += raw_len[best];
        piece = at;
    }
    o += put_nfc(out + o, s + piece, n - piece);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16) return 0; /* linear cost: long inputs only slow the search */
    int32_t *ids = NULL;
    size_t n = 0;
    ss_err e = ss_tokenizer_encode(tok, (const char *)data, size, &ids, &n);
    if (!valid_utf8(data, size)) {
        FUZZ_CHECK(e == SS_ERR_INVALID, "invalid UTF-8 gave %s", ss_err_name(e));
        return 0;
    }
    FUZZ_CHECK(e == SS_OK, "valid UTF-8 gave %s (%s)", ss_err_name(e), ss_errmsg());
    int vocab = ss_tokenizer_vocab_size(tok);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab, "id %d out of range", ids[i]);
    char *want = malloc(3 * size + 1);
    FUZZ_CHECK(want != NULL, "out of memory");
    for (int skip = 0; skip < 2; skip++) {
        size_t want_len = reference(data, size, skip, want);
        char *got = NULL;
        size_t got_len = 0;
        FUZZ_CHECK(ss_tokenizer_decode(tok, ids, n, skip, &got, &got_len) == SS_OK, "decode");
        FUZZ_CHECK(got_len == want_len && !memcmp(got, want, got_len),
                   "decode(encode(x), skip_special=%d) is %zu bytes, R(x) %zu bytes", skip,
                   got_len, want_len);
        free(got);
    }
    free(want);
    fuzz_check_detok(tok, ids, n);
    free(ids);
    return 0;
}
