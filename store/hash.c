/*
 * hash.c - pick the XXH3-64 build for this CPU (see hash.h).
 */
#include "hash.h"

#include <xxhash.h>

typedef uint64_t (*hash_fn)(const void *, size_t);

static uint64_t hash_baseline(const void *data, size_t len)
{
    return XXH3_64bits(data, len);
}

static hash_fn choose(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return ss_hash64_avx512;
    if (__builtin_cpu_supports("avx2")) return ss_hash64_avx2;
    return hash_baseline;
}

uint64_t ss_hash64(const void *data, size_t len)
{
    static hash_fn fn; /* benign race: every thread computes the same pointer */
    if (!fn) fn = choose();
    return fn(data, len);
}
