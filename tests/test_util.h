/*
 * test_util.h - the few helpers every test binary uses: CHECK macros that print file:line and the
 * error string, fixture paths, and float comparisons. Header-only so each test stays one file.
 */
#ifndef SS_TEST_UTIL_H
#define SS_TEST_UTIL_H

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ss_err.h"

static int test_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            test_failures++;                                                                       \
        }                                                                                          \
    } while (0)

#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            test_failures++;                                                                       \
        }                                                                                          \
    } while (0)

/*
 * out[k] = w[0] src[0][k], then fmaf(w[i], src[i][k], out[k]) for i = 1..: the merge exactly as
 * ss_store_merge_f32 computes it (the only merge kernel), for tests that merge states in memory.
 */
static inline void test_merge(float *out, const float *const *src, const double *w, int n,
                              size_t count)
{
    for (size_t k = 0; k < count; k++) {
        float a = (float)w[0] * src[0][k];
        for (int i = 1; i < n; i++) a = fmaf((float)w[i], src[i][k], a);
        out[k] = a;
    }
}

/* Fatal: the rest of the test cannot run without it. */
#define REQUIRE_OK(expr)                                                                           \
    do {                                                                                           \
        ss_err e_ = (expr);                                                                        \
        if (e_ != SS_OK) {                                                                         \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #expr,               \
                    ss_strerror(e_), ss_errmsg());                                                 \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        ss_err e_ = (expr);                                                                        \
        if (e_ != SS_OK) {                                                                         \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #expr,               \
                    ss_strerror(e_), ss_errmsg());                                                 \
            test_failures++;                                                                       \
        }                                                                                          \
    } while (0)

#define CHECK_ERR(expr, want)                                                                      \
    do {                                                                                           \
        ss_err e_ = (expr);                                                                        \
        if (e_ != (want)) {                                                                        \
            fprintf(stderr, "%s:%d: %s returned %s, want %s (%s)\n", __FILE__, __LINE__, #expr,    \
                    ss_err_name(e_), ss_err_name(want), ss_errmsg());                              \
            test_failures++;                                                                       \
        }                                                                                          \
    } while (0)

static inline int test_done(const char *name)
{
    if (test_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, test_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

/* Project source root (meson sets SS_SOURCE_ROOT; tests run with it as workdir). */
static inline const char *test_source_root(void)
{
    const char *r = getenv("SS_SOURCE_ROOT");
    return r ? r : ".";
}

/* Path of a fixture under tests/fixtures (the in-repo copy of ../shared/fixtures). Static buffer.
 */
static inline const char *fixture_path(const char *rel)
{
    static char buf[4][4096];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/tests/fixtures/%s", test_source_root(), rel);
    return buf[i];
}

/* A new directory "/tmp/ss_test_<name>_XXXXXX" into out; exits the test (status 1) on failure. */
static inline void test_tmpdir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "/tmp/ss_test_%s_XXXXXX", name);
    if (!mkdtemp(out)) {
        perror("mkdtemp");
        exit(1);
    }
}

static inline int test_rm_entry(const char *path, const struct stat *st, int flag,
                                struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* rm -rf path (links are removed, not followed). */
static inline void test_rm_rf(const char *path)
{
    nftw(path, test_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Largest |a[i] - b[i]| over n floats. */
static inline double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || d != d) m = d != d ? INFINITY : d;
    }
    return m;
}

#endif
