/*
 * test_tokenizer.c - the byte-level BPE tokenizer against HF `tokenizers`: every golden case
 * (the fixture and the extra goldens in tests/golden/tokenizer/) must give exactly HF's ids and
 * decoded text, streaming decode must equal whole decode byte for byte, bad files and bad input
 * must fail cleanly, and threads may share one tokenizer.
 *
 * Usage: test_tokenizer              run the tests (meson test tokenizer)
 *        test_tokenizer --bench FILE encode FILE with the GPT-NeoX tokenizer and print the speed
 */
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "ss_tokenizer.h"
#include "ss_util.h"
#include "test_util.h"

static const char *source_path(const char *rel)
{
    static char buf[4][4096];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", test_source_root(), rel);
    return buf[i];
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Is s[0..n) valid UTF-8 made of whole characters? */
static int valid_utf8(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            return 0;
        }
        for (size_t k = 1; k <= need; k++) {
            if (i + k >= n || s[i + k] < lo || s[i + k] > hi) return 0;
            lo = 0x80;
            hi = 0xBF;
        }
        i += need + 1;
    }
    return 1;
}

/* Printable form of a case's text for failure messages (first 60 bytes, escaped). */
static const char *show(const char *s, size_t n)
{
    static char buf[400];
    size_t o = 0;
    for (size_t i = 0; i < n && i < 60 && o < sizeof buf - 8; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != 0x7f && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, sizeof buf - o, "\\x%02x", c);
    }
    if (n > 60) o += (size_t)snprintf(buf + o, sizeof buf - o, "...");
    buf[o] = '\0';
    return buf;
}

/* Streaming decode of ids must give exactly `want`, in chunks of whole UTF-8 characters. */
static int check_stream(const ss_tokenizer *t, const int32_t *ids, size_t n, const char *want,
                        size_t want_len)
{
    ss_detok *d = NULL;
    CHECK_OK(ss_detok_new(t, &d));
    if (!d) return 0;
    char *acc = malloc(want_len + 64);
    size_t acc_len = 0;
    int ok = acc != NULL;
    for (size_t i = 0; ok && i <= n; i++) {
        size_t l = 0;
        const char *s = i < n ? ss_detok_push(d, ids[i], &l) : ss_detok_flush(d, &l);
        if (!s || strlen(s) > l || !valid_utf8(s, l) || acc_len + l > want_len) {
            ok = 0;
            break;
        }
        memcpy(acc + acc_len, s, l);
        acc_len += l;
    }
    ok = ok && acc_len == want_len && memcmp(acc, want, want_len) == 0;
    free(acc);
    ss_detok_free(d);
    return ok;
}

/* Every case of a {cases: [{text, ids, decoded}]} file. Returns the number that passed. */
static int run_cases(const ss_tokenizer *t, const char *path, int *total)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &je);
    CHECKF(root != NULL, "%s: %s (line %d)", path, je.text, je.line);
    if (!root) return 0;
    json_t *cases = json_object_get(root, "cases");
    CHECKF(json_array_size(cases) > 0, "%s: no cases", path);
    size_t i;
    json_t *c;
    int passed = 0;
    json_array_foreach (cases, i, c) {
        json_t *jt = json_object_get(c, "text"), *jids = json_object_get(c, "ids");
        json_t *jdec = json_object_get(c, "decoded");
        const char *text = json_string_value(jt);
        size_t text_len = json_string_length(jt);
        const char *want_dec = json_string_value(jdec);
        size_t want_dec_len = json_string_length(jdec);
        if (!text || !json_is_array(jids) || !want_dec) {
            CHECKF(0, "%s: case %zu is malformed", path, i);
            continue;
        }
        int ok = 1;
        int32_t *ids = NULL;
        size_t n = 0;
        ss_err err = ss_tokenizer_encode(t, text, text_len, &ids, &n);
        CHECKF(err == SS_OK, "%s case %zu: encode: %s", path, i, ss_errmsg());
        if (err) continue;
        size_t want_n = json_array_size(jids);
        size_t first_diff = SIZE_MAX;
        for (size_t k = 0; k < want_n || k < n; k++) {
            long long want = k < want_n ? json_integer_value(json_array_get(jids, k)) : -1;
            long long got = k < n ? ids[k] : -1;
            if (want != got) {
                first_diff = k;
                break;
            }
        }
        if (first_diff != SIZE_MAX) {
            ok = 0;
            CHECKF(0, "%s case %zu '%s': %zu ids, want %zu; first difference at %zu: %lld vs %lld",
                   path, i, show(text, text_len), n, want_n, first_diff,
                   first_diff < n ? (long long)ids[first_diff] : -1LL,
                   first_diff < want_n ? json_integer_value(json_array_get(jids, first_diff))
                                       : -1LL);
        }
        /* Decode HF's ids (not ours): decoding is checked even where encoding differs. */
        int32_t *hf = malloc((want_n + 1) * sizeof *hf);
        for (size_t k = 0; hf && k < want_n; k++) {
            hf[k] = (int32_t)json_integer_value(json_array_get(jids, k));
        }
        char *dec = NULL;
        size_t dec_len = 0;
        err = hf ? ss_tokenizer_decode(t, hf, want_n, 0, &dec, &dec_len) : SS_ERR_NOMEM;
        if (err || dec_len != want_dec_len || memcmp(dec, want_dec, dec_len) != 0) {
            ok = 0;
            CHECKF(0, "%s case %zu '%s': decode differs (%s)", path, i, show(text, text_len),
                   err ? ss_errmsg() : show(dec, dec_len));
        }
        if (hf && !check_stream(t, hf, want_n, want_dec, want_dec_len)) {
            ok = 0;
            CHECKF(0, "%s case %zu '%s': streaming decode differs", path, i, show(text, text_len));
        }
        passed += ok;
        free(dec);
        free(hf);
        free(ids);
    }
    *total = (int)json_array_size(cases);

    /* decode_cases: random id lists (lone bytes, special tokens), with and without skip_special. */
    json_t *dcases = json_object_get(root, "decode_cases");
    json_array_foreach (dcases, i, c) {
        json_t *jids = json_object_get(c, "ids"), *jdec = json_object_get(c, "decoded");
        int skip = json_is_true(json_object_get(c, "skip_special"));
        size_t n = json_array_size(jids);
        int32_t *ids = malloc((n + 1) * sizeof *ids);
        for (size_t k = 0; ids && k < n; k++) {
            ids[k] = (int32_t)json_integer_value(json_array_get(jids, k));
        }
        char *dec = NULL;
        size_t dec_len = 0;
        ss_err err = ids ? ss_tokenizer_decode(t, ids, n, skip, &dec, &dec_len) : SS_ERR_NOMEM;
        int ok = err == SS_OK && json_is_string(jdec) && dec_len == json_string_length(jdec) &&
                 memcmp(dec, json_string_value(jdec), dec_len) == 0;
        CHECKF(ok, "%s decode case %zu differs: '%s'", path, i,
               err ? ss_errmsg() : show(dec, dec_len));
        if (ok && !skip) {
            ok = check_stream(t, ids, n, dec, dec_len);
            CHECKF(ok, "%s decode case %zu: streaming decode differs", path, i);
        }
        passed += ok;
        (*total)++;
        free(dec);
        free(ids);
    }
    json_decref(root);
    return passed;
}

static void test_goldens(const ss_tokenizer *neox, const ss_tokenizer *demo)
{
    /* The demo tokenizer with add_prefix_space, Sequence([NFC]), [a, b] merges and added tokens
     * with lstrip / rstrip / single_word / normalized, as HF saved it (see make_extra.py). */
    ss_tokenizer *variant = NULL;
    REQUIRE_OK(ss_tokenizer_open(
        &variant, source_path("tests/golden/tokenizer/demo-variant.tokenizer.json")));
    struct {
        const ss_tokenizer *t;
        const char *path;
    } files[] = {
        {neox, fixture_path("tokenizer/gpt-neox-20b.cases.json")},
        {neox, source_path("tests/golden/tokenizer/gpt-neox-20b.extra.json")},
        {demo, source_path("tests/golden/tokenizer/demo-mamba1.extra.json")},
        {variant, source_path("tests/golden/tokenizer/demo-variant.extra.json")},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        int total = 0;
        int passed = run_cases(files[i].t, files[i].path, &total);
        printf("golden %s: %d/%d cases exact\n", files[i].path, passed, total);
        CHECK(total > 0 && passed == total);
    }
    ss_tokenizer_close(variant);
}

static void test_basics(const ss_tokenizer *t)
{
    CHECK(ss_tokenizer_vocab_size(t) == 50281); /* 50277 + <|im_start|> <|im_end|> assistant RWKV */
    CHECK(ss_tokenizer_token_id(t, "<|endoftext|>") == 0);
    CHECK(ss_tokenizer_token_id(t, "<|padding|>") == 1);
    CHECK(ss_tokenizer_token_id(t, "Hello") == 12092);
    CHECK(ss_tokenizer_token_id(t, "  ") == 50276);
    CHECK(ss_tokenizer_token_id(t, "no such token at all") == -1);
    size_t l = 0;
    const char *b = ss_tokenizer_token_bytes(t, 1533, &l); /* "Ġworld" */
    CHECK(b && l == 6 && memcmp(b, " world", 6) == 0);
    CHECK(ss_tokenizer_token_bytes(t, -1, &l) == NULL);
    CHECK(ss_tokenizer_token_bytes(t, 50281, &l) == NULL);

    /* skip_special drops <|endoftext|> but keeps the (non-special) space-run tokens. */
    int32_t ids[] = {0, 12092, 50276, 1533, 1};
    char *s = NULL;
    size_t n = 0;
    CHECK_OK(ss_tokenizer_decode(t, ids, 5, 1, &s, &n));
    CHECK(s && n == 13 && strcmp(s, "Hello   world") == 0);
    free(s);
    s = NULL;
    CHECK_OK(ss_tokenizer_decode(t, ids, 5, 0, &s, &n));
    CHECK(s && strcmp(s, "<|endoftext|>Hello   world<|padding|>") == 0);
    free(s);

    /* Lone bytes decode to U+FFFD the way from_utf8_lossy does: one per maximal bad subpart. */
    int32_t e6 = ss_tokenizer_token_id(t, "æ"); /* byte 0xE6 */
    int32_t b8 = ss_tokenizer_token_id(t, "¸"); /* byte 0xB8 */
    int32_t a = ss_tokenizer_token_id(t, "a");
    CHECK(e6 >= 0 && b8 >= 0 && a >= 0);
    int32_t bad[] = {e6, b8, a, b8, e6};
    CHECK_OK(ss_tokenizer_decode(t, bad, 5, 0, &s, &n));
    CHECK(s && strcmp(s, "\xEF\xBF\xBD"
                         "a\xEF\xBF\xBD\xEF\xBF\xBD") == 0);
    CHECK(check_stream(t, bad, 5, s ? s : "", s ? n : 0));
    free(s);

    /* Empty input: zero ids, still a pointer to free. */
    int32_t *out = NULL;
    size_t nout = 7;
    CHECK_OK(ss_tokenizer_encode(t, "", 0, &out, &nout));
    CHECK(nout == 0);
    free(out);
    /* Text need not be NUL-terminated, and may contain NUL. */
    out = NULL;
    CHECK_OK(ss_tokenizer_encode(t, "a\0b", 3, &out, &nout));
    CHECK(nout == 3);
    free(out);
}

static void test_stream_emoji(const ss_tokenizer *t)
{
    /* 👍🏽 is 8 bytes spread over tokens that end mid-character: nothing may come out until the
     * character is whole. */
    const char *text = "ok 👍🏽 🇵🇱!";
    int32_t *ids = NULL;
    size_t n = 0;
    REQUIRE_OK(ss_tokenizer_encode(t, text, strlen(text), &ids, &n));
    ss_detok *d = NULL;
    REQUIRE_OK(ss_detok_new(t, &d));
    int held = 0;
    char acc[128] = "";
    for (size_t i = 0; i < n; i++) {
        size_t l = 0;
        const char *s = ss_detok_push(d, ids[i], &l);
        CHECK(s && valid_utf8(s, l));
        if (s && l == 0) held++;
        if (s) strncat(acc, s, sizeof acc - strlen(acc) - 1);
    }
    size_t l = 0;
    const char *s = ss_detok_flush(d, &l);
    CHECK(s && l == 0);
    CHECK(held > 0);
    CHECK(strcmp(acc, text) == 0);

    /* A held-back tail that cannot complete becomes U+FFFD, then the next text follows. */
    int32_t f0 = ss_tokenizer_token_id(t, "ð"); /* byte 0xF0: lead of a 4-byte char */
    int32_t x = ss_tokenizer_token_id(t, "x");
    s = ss_detok_push(d, f0, &l);
    CHECK(s && l == 0);
    s = ss_detok_push(d, x, &l);
    CHECK(s && strcmp(s, "\xEF\xBF\xBDx") == 0);
    s = ss_detok_push(d, f0, &l);
    s = ss_detok_flush(d, &l);
    CHECK(s && strcmp(s, "\xEF\xBF\xBD") == 0);
    /* Bad ids: NULL with SS_ERR_INVALID, and the stream goes on. */
    CHECK(ss_detok_push(d, -5, &l) == NULL);
    CHECK(ss_detok_push(d, 1 << 30, &l) == NULL);
    s = ss_detok_push(d, x, &l);
    CHECK(s && strcmp(s, "x") == 0);
    ss_detok_free(d);
    ss_detok_free(NULL);
    free(ids);
}

static void test_demo(const ss_tokenizer *t)
{
    CHECK(ss_tokenizer_vocab_size(t) == 4096);
    CHECK(ss_tokenizer_token_id(t, "<|endoftext|>") == 0);
    static const char *texts[] = {
        "Dictionary:\nalpha = beta\n\nQuery:\nalpha = beta",
        "The Python documentation says:  use   spaces,\tnot tabs.\r\n",
        "caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80<|endoftext|>next",
        "<|endoftext|><|endoftext|>",
        "",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        char *back = NULL;
        size_t bl = 0;
        CHECK_OK(ss_tokenizer_encode(t, texts[i], strlen(texts[i]), &ids, &n));
        CHECK_OK(ss_tokenizer_decode(t, ids, n, 0, &back, &bl));
        CHECKF(back && strcmp(back, texts[i]) == 0, "demo round trip of '%s'", texts[i]);
        for (size_t k = 0; k < n; k++) CHECK(ids[k] >= 0 && ids[k] < 4096);
        free(ids);
        free(back);
    }
}

/* A minimal valid tokenizer.json with parts replaced. */
static char *mini_json(const char *model_type, const char *pre, const char *normalizer,
                       const char *extra_model)
{
    char *buf = malloc(4096);
    snprintf(buf, 4096,
             "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":3,\"content\":\"<s>\",\"special\":"
             "true,\"normalized\":false}],\"normalizer\":%s,\"pre_tokenizer\":%s,"
             "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"%s\",%s"
             "\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}}",
             normalizer, pre, model_type, extra_model);
    return buf;
}

static void expect_open_err(const char *json, ss_err want, const char *what)
{
    ss_tokenizer *t = NULL;
    ss_err e = ss_tokenizer_open_mem(&t, json, strlen(json));
    CHECKF(e == want, "%s: got %s (%s), want %s", what, ss_err_name(e), ss_errmsg(),
           ss_err_name(want));
    CHECK(t == NULL);
    ss_tokenizer_close(t);
}

static void test_errors(const ss_tokenizer *neox)
{
    const char *bl = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false}";
    char *j;
    ss_tokenizer *t = NULL;

    /* The mini file itself loads and works ("ab" merges; <s> is an added special token). */
    j = mini_json("BPE", bl, "null", "");
    CHECK_OK(ss_tokenizer_open_mem(&t, j, strlen(j)));
    if (t) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(ss_tokenizer_encode(t, "ab<s>ba", 7, &ids, &n));
        CHECK(n == 4 && ids[0] == 2 && ids[1] == 3 && ids[2] == 1 && ids[3] == 0);
        free(ids);
        ss_tokenizer_close(t);
        t = NULL;
    }
    free(j);
    ss_tokenizer_close(NULL);

    j = mini_json("WordPiece", bl, "null", "");
    expect_open_err(j, SS_ERR_UNSUPPORTED, "model WordPiece");
    free(j);
    j = mini_json("BPE", "{\"type\":\"Metaspace\"}", "null", "");
    expect_open_err(j, SS_ERR_UNSUPPORTED, "pre_tokenizer Metaspace");
    free(j);
    j = mini_json("BPE",
                  "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\"},"
                  "{\"type\":\"ByteLevel\"}]}",
                  "null", "");
    expect_open_err(j, SS_ERR_UNSUPPORTED, "pre_tokenizer Sequence [Split, ByteLevel]");
    CHECKF(strstr(ss_errmsg(), "Sequence [Split, ByteLevel]") != NULL, "%s", ss_errmsg());
    free(j);
    j = mini_json("BPE", bl, "{\"type\":\"NFKC\"}", "");
    expect_open_err(j, SS_ERR_UNSUPPORTED, "normalizer NFKC");
    free(j);
    j = mini_json("BPE", bl, "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"}]}", "");
    CHECK_OK(ss_tokenizer_open_mem(&t, j, strlen(j)));
    ss_tokenizer_close(t);
    t = NULL;
    free(j);
    j = mini_json("BPE", bl, "null", "\"byte_fallback\":true,");
    expect_open_err(j, SS_ERR_UNSUPPORTED, "byte_fallback");
    free(j);
    j = mini_json("BPE", bl, "null", "\"ignore_merges\":true,");
    expect_open_err(j, SS_ERR_UNSUPPORTED, "ignore_merges");
    free(j);
    j = mini_json("BPE", bl, "null", "\"dropout\":0.1,");
    expect_open_err(j, SS_ERR_UNSUPPORTED, "dropout");
    free(j);
    j = mini_json("BPE", bl, "null", "\"fuse_unk\":\"yes\",");
    expect_open_err(j, SS_ERR_FORMAT, "fuse_unk not a boolean");
    free(j);
    j = mini_json("BPE", bl, "null", "\"unk_token\":\"<unk>\",");
    expect_open_err(j, SS_ERR_FORMAT, "unk_token not in vocab");
    free(j);

    /* unk_token: bytes whose char is not in the vocab become <unk>, fused or not, and take part
     * in merges like any symbol (HF's merge_word); without unk_token they are dropped. */
    static const char unk_fmt[] =
        "{\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}"
        ","
        "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",%s"
        "\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"<unk>\":3},\"merges\":[\"a b\"]}}";
    static const struct {
        const char *opts;
        size_t n;
        int32_t want[4];
    } unk_cases[] = {
        {"\"unk_token\":\"<unk>\",\"fuse_unk\":false,", 4, {2, 3, 3, 2}},
        {"\"unk_token\":\"<unk>\",\"fuse_unk\":true,", 3, {2, 3, 2}},
        {"", 2, {2, 2}},
    };
    for (size_t i = 0; i < 3; i++) {
        char buf[1024];
        snprintf(buf, sizeof buf, unk_fmt, unk_cases[i].opts);
        t = NULL;
        CHECK_OK(ss_tokenizer_open_mem(&t, buf, strlen(buf)));
        if (!t) continue;
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(ss_tokenizer_encode(t, "abxyab", 6, &ids, &n));
        CHECKF(n == unk_cases[i].n && !memcmp(ids, unk_cases[i].want, n * sizeof *ids),
               "unk case %zu: %zu ids", i, n);
        free(ids);
        ss_tokenizer_close(t);
    }
    t = NULL;

    static const char *bad[] = {
        "",
        "[]",
        "{}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"0\"},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":99999999999},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a  b\"]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[[\"a\"]]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[3]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":{}}}",
        "{\"model\":{\"type\":7,\"vocab\":{\"a\":0},\"merges\":[]}}",
        "{\"added_tokens\":{},\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
        "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}}",
        "{\"added_tokens\":[{\"id\":1}],\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
        "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}}",
        "{\"added_tokens\":[{\"id\":1,\"content\":\"x\",\"lstrip\":1}],"
        "\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
        "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}}",
        "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"decoder\":null,"
        "\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}}",
        "{\"pre_tokenizer\":[],\"decoder\":{\"type\":\"ByteLevel\"},"
        "\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}}",
        "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":7},"
        "\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        t = NULL;
        ss_err e = ss_tokenizer_open_mem(&t, bad[i], strlen(bad[i]));
        CHECKF(e == SS_ERR_FORMAT || e == SS_ERR_UNSUPPORTED, "bad json %zu: %s", i,
               ss_err_name(e));
        CHECK(t == NULL);
    }

    CHECK_ERR(ss_tokenizer_open(&t, "/nonexistent/tokenizer.json"), SS_ERR_NOT_FOUND);

    /* Truncations and byte flips of the real file: an error or a tokenizer, never a crash. */
    char *file = NULL;
    size_t len = 0;
    REQUIRE_OK(
        ss_read_file(fixture_path("tokenizer/gpt-neox-20b.tokenizer.json"), 1 << 30, &file, &len));
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    int failed = 0, loaded = 0;
    for (int k = 0; k < 24; k++) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t cut = (size_t)(rng >> 33) % len;
        if (k < 6) cut = (size_t)k * 37; /* the small header part too */
        ss_err e = ss_tokenizer_open_mem(&t, file, cut);
        if (e == SS_OK) {
            ss_tokenizer_close(t);
            loaded++;
        } else {
            failed++;
        }
        t = NULL;
    }
    CHECK(failed == 24 && loaded == 0);
    /* Flip bytes of the demo tokenizer (small, so quick to load): mostly in its structural head
     * (added_tokens, normalizer, pre_tokenizer, model options), some anywhere. Each load must
     * fail cleanly or give a tokenizer that works. */
    free(file);
    file = NULL;
    REQUIRE_OK(
        ss_read_file(source_path("models/demo-mamba1/tokenizer.json"), 1 << 30, &file, &len));
    char *copy = malloc(len);
    int flips_loaded = 0;
    for (int k = 0; copy && k < 300; k++) {
        memcpy(copy, file, len);
        for (int f = 0; f < 1 + k % 3; f++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t at = (size_t)(rng >> 33) % (k % 4 ? 1500 : len);
            static const char subst[] = "{}[]\":,0aZ \\n-tf";
            copy[at] = subst[(rng >> 20) % (sizeof subst - 1)];
        }
        ss_err e = ss_tokenizer_open_mem(&t, copy, len);
        if (e == SS_OK) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (ss_tokenizer_encode(t, "Hello  world <|endoftext|>", 26, &ids, &n) == SS_OK) {
                free(ids);
            }
            ss_tokenizer_close(t);
            flips_loaded++;
        }
        t = NULL;
    }
    printf("byte flips: %d of 300 damaged files still loaded\n", flips_loaded);
    free(copy);
    free(file);

    /* Invalid UTF-8 input. */
    static const char *bad_text[] = {
        "abc\xff",
        "\xc0\xaf",
        "\xe0\x80\x80",
        "\xed\xa0\x80" /* surrogate */,
        "\xf4\x90\x80\x80" /* > U+10FFFF */,
        "caf\xc3",
        "\x80",
        "ok \xf0\x9f\x98",
    };
    for (size_t i = 0; i < sizeof bad_text / sizeof bad_text[0]; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_ERR(ss_tokenizer_encode(neox, bad_text[i], strlen(bad_text[i]), &ids, &n),
                  SS_ERR_INVALID);
        CHECK(strstr(ss_errmsg(), "UTF-8") != NULL);
    }

    /* Out-of-range ids. */
    int32_t oob[][2] = {{12092, -1}, {12092, 50281}, {12092, INT32_MAX}};
    for (size_t i = 0; i < 3; i++) {
        char *s = NULL;
        CHECK_ERR(ss_tokenizer_decode(neox, oob[i], 2, 0, &s, NULL), SS_ERR_INVALID);
        CHECK(s == NULL);
    }
}

/* ---- threads share one tokenizer ----------------------------------------------------------- */

typedef struct job {
    const ss_tokenizer *t;
    const char *text;
    size_t len;
    int32_t *ids;
    size_t n;
    ss_err err;
} job;

static void *encode_job(void *arg)
{
    job *j = arg;
    for (int r = 0; r < 3 && !j->err; r++) {
        free(j->ids);
        j->ids = NULL;
        j->err = ss_tokenizer_encode(j->t, j->text, j->len, &j->ids, &j->n);
    }
    return NULL;
}

/* ~1 MB of English-like text built from the repo's own docs (cycled). */
static char *english_text(size_t want, size_t *len)
{
    static const char *files[] = {"models/demo-mamba1/README.md", "tests/fixtures/README.md",
                                  "docs/api.md", "docs/model-format.md"};
    char *out = malloc(want + 1);
    size_t o = 0;
    char *parts[4] = {0};
    size_t plen[4] = {0};
    for (int i = 0; i < 4; i++) {
        if (ss_read_file(source_path(files[i]), 1 << 24, &parts[i], &plen[i]) != SS_OK) {
            parts[i] = NULL;
        }
    }
    static const char fallback[] = "The quick brown fox jumps over the lazy dog. ";
    for (int i = 0; o < want; i = (i + 1) % 4) {
        const char *p = parts[i] ? parts[i] : fallback;
        size_t n = parts[i] ? plen[i] : sizeof fallback - 1;
        if (n > want - o) n = want - o;
        memcpy(out + o, p, n);
        o += n;
    }
    /* Do not end inside a UTF-8 character. */
    while (o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0x80) o--;
    if (o > 0 && (unsigned char)out[o - 1] >= 0xC0) o--;
    out[o] = '\0';
    for (int i = 0; i < 4; i++) free(parts[i]);
    *len = o;
    return out;
}

static void test_threads_and_speed(const ss_tokenizer *t)
{
    size_t len = 0;
    char *text = english_text(1 << 20, &len);
    int32_t *ids = NULL;
    size_t n = 0;
    double t0 = now_s();
    REQUIRE_OK(ss_tokenizer_encode(t, text, len, &ids, &n));
    double dt = now_s() - t0;
    printf("encode: %zu bytes -> %zu tokens in %.3f s (%.1f MB/s; informational)\n", len, n, dt,
           (double)len / dt / 1e6);
    char *back = NULL;
    size_t bl = 0;
    CHECK_OK(ss_tokenizer_decode(t, ids, n, 0, &back, &bl));
    CHECK(back && bl == len && memcmp(back, text, len) == 0); /* the docs are NFC already */
    free(back);

    /* Two threads on different slices, repeatedly, must match the single-threaded result. */
    job jobs[2];
    pthread_t th[2];
    size_t half = len / 2;
    while (half < len && ((unsigned char)text[half] & 0xC0) == 0x80) half++;
    for (int i = 0; i < 2; i++) {
        jobs[i] = (job){t, i ? text + half : text, i ? len - half : half, NULL, 0, SS_OK};
        CHECK(pthread_create(&th[i], NULL, encode_job, &jobs[i]) == 0);
    }
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK(jobs[i].err == SS_OK);
        int32_t *ref = NULL;
        size_t rn = 0;
        CHECK_OK(ss_tokenizer_encode(t, jobs[i].text, jobs[i].len, &ref, &rn));
        CHECK(ref && rn == jobs[i].n && memcmp(ref, jobs[i].ids, rn * sizeof *ref) == 0);
        free(ref);
        free(jobs[i].ids);
    }
    free(ids);
    free(text);
}

static int bench(const char *path)
{
    ss_tokenizer *t = NULL;
    char *text = NULL;
    size_t len = 0;
    double t0 = now_s();
    REQUIRE_OK(ss_tokenizer_open(&t, fixture_path("tokenizer/gpt-neox-20b.tokenizer.json")));
    printf("load: %.3f s\n", now_s() - t0);
    REQUIRE_OK(ss_read_file(path, (size_t)1 << 31, &text, &len));
    for (int r = 0; r < 3; r++) {
        int32_t *ids = NULL;
        size_t n = 0;
        t0 = now_s();
        REQUIRE_OK(ss_tokenizer_encode(t, text, len, &ids, &n));
        double dt = now_s() - t0;
        printf("encode: %zu bytes -> %zu tokens in %.3f s (%.1f MB/s)\n", len, n, dt,
               (double)len / dt / 1e6);
        char *back = NULL;
        t0 = now_s();
        REQUIRE_OK(ss_tokenizer_decode(t, ids, n, 0, &back, NULL));
        printf("decode: %.3f s\n", now_s() - t0);
        free(back);
        free(ids);
    }
    free(text);
    ss_tokenizer_close(t);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--bench")) return bench(argv[2]);

    ss_tokenizer *neox = NULL, *demo = NULL;
    double t0 = now_s();
    REQUIRE_OK(ss_tokenizer_open(&neox, fixture_path("tokenizer/gpt-neox-20b.tokenizer.json")));
    printf("loaded gpt-neox-20b tokenizer in %.3f s\n", now_s() - t0);
    REQUIRE_OK(ss_tokenizer_open(&demo, source_path("models/demo-mamba1/tokenizer.json")));

    test_basics(neox);
    test_goldens(neox, demo);
    test_stream_emoji(neox);
    test_demo(demo);
    test_errors(neox);
    test_threads_and_speed(neox);

    ss_tokenizer_close(neox);
    ss_tokenizer_close(demo);
    return test_done("test_tokenizer");
}
