/*
 * fuzz_tokenizer_load.c - libFuzzer target: a tokenizer.json into ss_tokenizer_open_mem
 * (model/tokenizer.c).
 *
 * Properties: loading fails cleanly (SS_ERR_FORMAT / SS_ERR_UNSUPPORTED / SS_ERR_NOMEM, the
 * tokenizer left NULL) or gives a tokenizer that works: a positive vocabulary; a few fixed texts
 * and the input itself (when it is valid UTF-8) encode to ids in [0, vocab_size); those ids
 * decode, with and without special tokens, and the streaming decoder gives decode's text; every
 * id's bytes can be asked for (and none outside [0, vocab_size)).
 */
#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

static void exercise(const ss_tokenizer *t, const char *text, size_t len)
{
    int vocab = ss_tokenizer_vocab_size(t);
    int32_t *ids = NULL;
    size_t n = 0;
    ss_err e = ss_tokenizer_encode(t, text, len, &ids, &n);
    if (e) {
        FUZZ_CHECK(e == SS_ERR_INVALID || e == SS_ERR_NOMEM, "encode: %s", ss_err_name(e));
        return;
    }
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab, "id %d of %d", ids[i], vocab);
    char *s = NULL;
    FUZZ_CHECK(ss_tokenizer_decode(t, ids, n, 1, &s, NULL) == SS_OK, "decode skip_special");
    free(s);
    fuzz_check_detok(t, ids, n);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ss_tokenizer *t = NULL;
    ss_err e = ss_tokenizer_open_mem(&t, (const char *)data, size);
    if (e) {
        FUZZ_CHECK(t == NULL, "failed load set the tokenizer");
        FUZZ_CHECK(e == SS_ERR_FORMAT || e == SS_ERR_UNSUPPORTED || e == SS_ERR_NOMEM,
                   "load gave %s", ss_err_name(e));
        return 0;
    }
    int vocab = ss_tokenizer_vocab_size(t);
    FUZZ_CHECK(vocab > 0, "vocab %d", vocab);
    static const char *const texts[] = {
        "Hello world", "ab<s>ba  \t\n x", "caf\xc3\xa9 e\xcc\x81 \xe2\x84\xab \xf0\x9f\x98\x80",
        "<|endoftext|>a<|padding|>", "   lots    of     spaces ",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        exercise(t, texts[i], strlen(texts[i]));
    exercise(t, (const char *)data, size < 512 ? size : 512);
    for (int32_t id = 0; id < vocab && id < 4096; id++) {
        size_t len = 0;
        const char *b = ss_tokenizer_token_bytes(t, id, &len);
        if (b) {
            volatile char sink = 0;
            for (size_t i = 0; i < len; i++) sink ^= b[i]; /* every byte is readable */
            (void)sink;
        }
    }
    FUZZ_CHECK(ss_tokenizer_token_bytes(t, vocab, NULL) == NULL, "id vocab_size has bytes");
    FUZZ_CHECK(ss_tokenizer_token_bytes(t, -1, NULL) == NULL, "id -1 has bytes");
    ss_tokenizer_close(t);
    return 0;
}
