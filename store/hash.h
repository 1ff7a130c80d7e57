/*
 * hash.h - XXH3-64, and kernels that checksum what they copy or sum, compiled for the CPU at hand
 * (internal to store/).
 *
 * The Debian libxxhash is built for baseline x86-64 (SSE2). Checksums are on the path of every
 * state read and merge, so hash_isa.c compiles xxHash's header-only implementation and our fused
 * kernels for baseline, AVX2 and AVX-512, and the best build for this CPU is picked at run time.
 * Every build gives the same values (XXH3 is defined independently of the vector width; the sums
 * use the same operations in the same order).
 */
#ifndef SS_STORE_HASH_H
#define SS_STORE_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Sources of one ss_hash64_sum_f32 call (beyond: a plain two-pass fallback). */
#define SS_HASH_SUM_MAX 64

/* XXH3-64 of len bytes. Thread-safe. */
uint64_t ss_hash64(const void *data, size_t len);

/* memcpy(dst, src, len) and *hash = XXH3-64 of src, in one pass over src. */
void ss_hash64_copy(void *dst, const void *src, size_t len, uint64_t *hash);

/*
 * out[k] = w[0] src[0][k] + w[1] src[1][k] + ... (evaluated as w[0] * x, then one fused
 * multiply-add per further source, in order) over len bytes (a multiple of 4), and hashes[i] =
 * XXH3-64 of the len bytes of src[i], in one pass over the sources. out may not overlap them.
 * Returns 1 when every out[k] is finite, 0 when any is infinite or NaN (checked in the same pass).
 */
int ss_hash64_sum_f32(float *out, const float *const *src, const float *w, int n, size_t len,
                       uint64_t *hashes);

/* The per-ISA builds of hash_isa.c, suffixed base, avx2 and avx512. */
#define SS_HASH_DECLARE(isa)                                                                       \
    uint64_t ss_hash64_##isa(const void *data, size_t len);                                        \
    void ss_hash64_copy_##isa(void *dst, const void *src, size_t len, uint64_t *hash);             \
    int ss_hash64_sum_f32_##isa(float *out, const float *const *src, const float *w, int n,        \
                                size_t len, uint64_t *hashes);
SS_HASH_DECLARE(base)
SS_HASH_DECLARE(avx2)
SS_HASH_DECLARE(avx512)
#undef SS_HASH_DECLARE

/* Which build runs here ("base", "avx2" or "avx512"); SS_HASH_ISA=... in the environment picks a
 * lower one (for tests). */
const char *ss_hash_isa(void);

#endif
