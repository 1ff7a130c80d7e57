/*
 * hash.c - pick the build of the checksum kernels for this CPU (see hash.h).
 */
#include "hash.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct hash_impl {
    const char *name;
    uint64_t (*hash)(const void *, size_t);
    void (*copy)(void *, const void *, size_t, uint64_t *);
    int (*sum)(float *, const float *const *, const float *, int, size_t, uint64_t *);
} hash_impl;

static const hash_impl impls[] = {
    {"avx512", ss_hash64_avx512, ss_hash64_copy_avx512, ss_hash64_sum_f32_avx512},
    {"avx2", ss_hash64_avx2, ss_hash64_copy_avx2, ss_hash64_sum_f32_avx2},
    {"base", ss_hash64_base, ss_hash64_copy_base, ss_hash64_sum_f32_base},
};

static const hash_impl *choose(void)
{
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f");
    const char *want = getenv("SS_HASH_ISA");
    int i = avx512 ? 0 : avx2 ? 1 : 2;
    for (int k = i; want && k < 3; k++)
        if (strcmp(want, impls[k].name) == 0) i = k;
    return &impls[i];
}

static const hash_impl *chosen;
static void choose_once(void) { chosen = choose(); }

/* Chosen once (pthread_once: the first saves may come from several HTTP threads at once). */
static const hash_impl *impl(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, choose_once);
    return chosen;
}

uint64_t ss_hash64(const void *data, size_t len)
{
    return impl()->hash(data, len);
}

void ss_hash64_copy(void *dst, const void *src, size_t len, uint64_t *hash)
{
    impl()->copy(dst, src, len, hash);
}

int ss_hash64_sum_f32(float *out, const float *const *src, const float *w, int n, size_t len,
                      uint64_t *hashes)
{
    return impl()->sum(out, src, w, n, len, hashes);
}

const char *ss_hash_isa(void)
{
    return impl()->name;
}
