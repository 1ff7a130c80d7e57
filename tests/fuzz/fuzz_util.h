/*
 * fuzz_util.h - what the fuzz targets share: finding the fixtures, a check that aborts (so
 * libFuzzer and the replay driver report it as a crash with the input), and the streaming-decode
 * property both tokenizer targets assert.
 */
#ifndef SS_FUZZ_UTIL_H
#define SS_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_tokenizer.h"

#ifndef SS_FUZZ_ROOT
#define SS_FUZZ_ROOT "."
#endif

/* A property failed: say which and abort, so the input is saved as a crash. */
#define FUZZ_CHECK(cond, ...)                                                                     \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "fuzz property failed at %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                                         \
            fputc('\n', stderr);                                                                  \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

/* The path of a file of the source tree (SS_SOURCE_ROOT overrides the root built in). */
static inline const char *fuzz_src_path(const char *rel, char *buf, size_t cap)
{
    const char *root = getenv("SS_SOURCE_ROOT");
    snprintf(buf, cap, "%s/%s", root && *root ? root : SS_FUZZ_ROOT, rel);
    return buf;
}

/*
 * The streaming decoder's contract: pushing ids one at a time and flushing gives exactly
 * ss_tokenizer_decode(skip_special = 0) of the same ids. Every id must be valid.
 */
static inline void fuzz_check_detok(const ss_tokenizer *t, const int32_t *ids, size_t n)
{
    char *whole = NULL;
    size_t whole_len = 0;
    FUZZ_CHECK(ss_tokenizer_decode(t, ids, n, 0, &whole, &whole_len) == SS_OK, "decode of %zu ids",
               n);
    ss_detok *d = NULL;
    if (ss_detok_new(t, &d) != SS_OK) { /* out of memory only */
        free(whole);
        return;
    }
    size_t at = 0;
    for (size_t i = 0; i <= n; i++) {
        size_t len = 0;
        const char *s = i < n ? ss_detok_push(d, ids[i], &len) : ss_detok_flush(d, &len);
        FUZZ_CHECK(s != NULL, "detok push of id %d", i < n ? ids[i] : -1);
        FUZZ_CHECK(at + len <= whole_len && !memcmp(whole + at, s, len),
                   "streamed text differs from decode at byte %zu", at);
        at += len;
    }
    FUZZ_CHECK(at == whole_len, "streamed %zu bytes, decode gave %zu", at, whole_len);
    ss_detok_free(d);
    free(whole);
}

#endif
