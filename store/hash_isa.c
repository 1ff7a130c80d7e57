/*
 * hash_isa.c - XXH3-64, and kernels that checksum data while they use it, compiled once per ISA.
 *
 * meson builds this file three times: for baseline x86-64, with -mavx2 and with -mavx512f, and
 * defines SS_HASH_ISA to the suffix of the names it exports (see hash.h).
 *
 * ss_hash64: xxHash's own header-only XXH3-64, so that it vectorises for the ISA of this build.
 *
 * ss_hash64_copy / ss_hash64_sum_f32: a restore copies a stored state and a merge sums several, and
 * both must checksum every byte they read. Hashing a piece and then using it costs a second pass
 * over the data from cache, and XXH3 from cache runs at roughly the speed of DRAM here: the merge
 * of four 26 MB states took 3.3-4.9 ms instead of the 2.2 ms of the sum alone. These kernels run
 * XXH3's accumulation in the same loop as the copy or the sum, on the vector registers the data
 * is loaded into once, and produce exactly XXH3_64bits() of each input (the test compares them
 * with libxxhash for every length class). No library offers that fusion, hence our own loop.
 *
 * XXH3-64 of n > 240 bytes, default secret S (192 bytes), seed 0 (xxHash's specification,
 * doc/xxhash_spec.md): eight 64-bit accumulators start at fixed primes. The input is read in
 * 64-byte stripes; stripe j of a 1 KiB block (16 stripes) is mixed in with the key S[8j..8j+64):
 *     k = x ^ key;  acc[i] += lo32(k[i]) * hi32(k[i]);  acc[i ^ 1] += x[i]      (i = lane 0..7)
 * and after each complete block (there are (n - 1) / 1024 of them) the accumulators are scrambled
 * with S[128..192):  acc ^= acc >> 47;  acc ^= key;  acc *= PRIME32_1.
 * The stripes of the last, partial block are mixed as above, up to (n - 1) / 64 stripes in all;
 * then the last 64 bytes of the input (which may overlap the previous stripe) are mixed with the
 * key S[121..185). The result is an avalanche of n * PRIME64_1 plus four 64x64->128 folds of
 * accumulator pairs with S[11..75).
 */
#define XXH_INLINE_ALL
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <math.h>
#include <string.h>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "hash.h"

#define CAT_(a, b) a##_##b
#define CAT(a, b)  CAT_(a, b)
#define EXPORT(f)  CAT(f, SS_HASH_ISA)

uint64_t EXPORT(ss_hash64)(const void *data, size_t len)
{
    return XXH3_64bits(data, len);
}

/* The portable forms: hash, then use (two passes). Also the short inputs of the fused forms. */
static void copy_then_hash(void *dst, const void *src, size_t len, uint64_t *hash)
{
    memcpy(dst, src, len);
    *hash = XXH3_64bits(src, len);
}

/*
 * out[k] = w[0] src[0][k], then fma(w[i], src[i][k], out[k]) for i = 1.. (the vector order).
 * Returns 1 when every out[k] written is finite, else 0.
 */
static int sum_then_hash(float *out, const float *const *src, const float *w, int n, size_t from,
                         size_t count)
{
    int finite = 1;
    for (size_t k = from; k < count; k++) {
        float a = w[0] * src[0][k];
        for (int i = 1; i < n; i++) a = fmaf(w[i], src[i][k], a);
        out[k] = a;
        finite &= isfinite(a) != 0;
    }
    return finite;
}

#if defined(__AVX2__)

#define STRIPE        64
#define BLOCK_STRIPES 16 /* (secret size - 64) / 8 for the default 192-byte secret */
#define SECRET        XXH3_kSecret
_Static_assert(XXH_SECRET_DEFAULT_SIZE == 192, "XXH3's default secret is 192 bytes");

static const uint64_t acc_init[8] = {XXH_PRIME32_3, XXH_PRIME64_1, XXH_PRIME64_2, XXH_PRIME64_3,
                                     XXH_PRIME64_4, XXH_PRIME32_2, XXH_PRIME64_5, XXH_PRIME32_1};

/*
 * H: one stripe (512 bits) as 64-bit lanes, the type of the accumulators; F: the same bits as
 * 16 floats. AVX-512 holds a stripe in one register, AVX2 in two.
 */
#if defined(__AVX512F__)
typedef __m512i H;
typedef __m512 F;
static inline H h_load(const void *p)
{
    return _mm512_loadu_si512(p);
}
static inline void h_store(void *p, H v)
{
    _mm512_storeu_si512(p, v);
}
/* acc += lo32(x ^ key) * hi32(x ^ key), and x with its 64-bit lanes swapped in pairs */
static inline H h_mix(H acc, H x, const uint8_t *key)
{
    H k = _mm512_xor_si512(x, _mm512_loadu_si512(key));
    H prod = _mm512_mul_epu32(k, _mm512_srli_epi64(k, 32));
    H swap = _mm512_shuffle_epi32(x, (_MM_PERM_ENUM)_MM_SHUFFLE(1, 0, 3, 2));
    return _mm512_add_epi64(acc, _mm512_add_epi64(prod, swap));
}
static inline H h_scramble(H acc, const uint8_t *key)
{
    const H prime = _mm512_set1_epi32((int)XXH_PRIME32_1);
    acc = _mm512_xor_si512(acc, _mm512_srli_epi64(acc, 47));
    acc = _mm512_xor_si512(acc, _mm512_loadu_si512(key));
    H lo = _mm512_mul_epu32(acc, prime);
    H hi = _mm512_mul_epu32(_mm512_srli_epi64(acc, 32), prime);
    return _mm512_add_epi64(lo, _mm512_slli_epi64(hi, 32));
}
static inline F f_load(const float *p)
{
    return _mm512_loadu_ps(p);
}
static inline void f_store(float *p, F v)
{
    _mm512_storeu_ps(p, v);
}
static inline F f_mul(float w, F x)
{
    return _mm512_mul_ps(_mm512_set1_ps(w), x);
}
static inline F f_fma(float w, F x, F a)
{
    return _mm512_fmadd_ps(_mm512_set1_ps(w), x, a);
}
static inline H f_bits(F x)
{
    return _mm512_castps_si512(x);
}
static inline F f_zero(void)
{
    return _mm512_setzero_ps();
}
/* Does any lane hold a NaN? */
static inline int f_any_nan(F x)
{
    return _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q) != 0;
}
#else /* AVX2: a stripe is two registers */
typedef struct {
    __m256i a, b;
} H;
typedef struct {
    __m256 a, b;
} F;
static inline H h_load(const void *p)
{
    return (H){_mm256_loadu_si256((const __m256i *)p),
               _mm256_loadu_si256((const __m256i *)((const char *)p + 32))};
}
static inline void h_store(void *p, H v)
{
    _mm256_storeu_si256((__m256i *)p, v.a);
    _mm256_storeu_si256((__m256i *)((char *)p + 32), v.b);
}
static inline __m256i mix256(__m256i acc, __m256i x, const uint8_t *key)
{
    __m256i k = _mm256_xor_si256(x, _mm256_loadu_si256((const __m256i *)key));
    __m256i prod = _mm256_mul_epu32(k, _mm256_srli_epi64(k, 32));
    __m256i swap = _mm256_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 3, 2));
    return _mm256_add_epi64(acc, _mm256_add_epi64(prod, swap));
}
static inline H h_mix(H acc, H x, const uint8_t *key)
{
    return (H){mix256(acc.a, x.a, key), mix256(acc.b, x.b, key + 32)};
}
static inline __m256i scramble256(__m256i acc, const uint8_t *key)
{
    const __m256i prime = _mm256_set1_epi32((int)XXH_PRIME32_1);
    acc = _mm256_xor_si256(acc, _mm256_srli_epi64(acc, 47));
    acc = _mm256_xor_si256(acc, _mm256_loadu_si256((const __m256i *)key));
    __m256i lo = _mm256_mul_epu32(acc, prime);
    __m256i hi = _mm256_mul_epu32(_mm256_srli_epi64(acc, 32), prime);
    return _mm256_add_epi64(lo, _mm256_slli_epi64(hi, 32));
}
static inline H h_scramble(H acc, const uint8_t *key)
{
    return (H){scramble256(acc.a, key), scramble256(acc.b, key + 32)};
}
static inline F f_load(const float *p)
{
    return (F){_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)};
}
static inline void f_store(float *p, F v)
{
    _mm256_storeu_ps(p, v.a);
    _mm256_storeu_ps(p + 8, v.b);
}
static inline F f_mul(float w, F x)
{
    __m256 wv = _mm256_set1_ps(w);
    return (F){_mm256_mul_ps(wv, x.a), _mm256_mul_ps(wv, x.b)};
}
static inline F f_fma(float w, F x, F a)
{
    __m256 wv = _mm256_set1_ps(w);
    return (F){_mm256_fmadd_ps(wv, x.a, a.a), _mm256_fmadd_ps(wv, x.b, a.b)};
}
static inline H f_bits(F x)
{
    return (H){_mm256_castps_si256(x.a), _mm256_castps_si256(x.b)};
}
static inline F f_zero(void)
{
    return (F){_mm256_setzero_ps(), _mm256_setzero_ps()};
}
/* Does any lane hold a NaN? */
static inline int f_any_nan(F x)
{
    return _mm256_movemask_ps(_mm256_cmp_ps(x.a, x.a, _CMP_UNORD_Q)) != 0 ||
           _mm256_movemask_ps(_mm256_cmp_ps(x.b, x.b, _CMP_UNORD_Q)) != 0;
}
#endif

static inline uint64_t le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8); /* x86: little-endian */
    return v;
}

/* Mix in the last stripe (the input's last 64 bytes) and fold the accumulators to the hash. */
static uint64_t h_finish(H acc, const uint8_t *last_stripe, size_t len)
{
    uint64_t a[8];
    h_store(a, h_mix(acc, h_load(last_stripe), SECRET + sizeof SECRET - STRIPE - 7));
    uint64_t r = (uint64_t)len * XXH_PRIME64_1;
    for (int i = 0; i < 4; i++) {
        unsigned __int128 p = (unsigned __int128)(a[2 * i] ^ le64(SECRET + 11 + 16 * i)) *
                              (a[2 * i + 1] ^ le64(SECRET + 11 + 16 * i + 8));
        r += (uint64_t)p ^ (uint64_t)(p >> 64);
    }
    r ^= r >> 37;
    r *= 0x165667919E3779F9ULL;
    return r ^ (r >> 32);
}

void EXPORT(ss_hash64_copy)(void *dst, const void *src, size_t len, uint64_t *hash)
{
    if (len <= 240) {
        copy_then_hash(dst, src, len, hash);
        return;
    }
    const uint8_t *s = src;
    uint8_t *d = dst;
    const size_t n_stripes = (len - 1) / STRIPE, n_blocks = (len - 1) / (STRIPE * BLOCK_STRIPES);
    H acc = h_load(acc_init);
    for (size_t b = 0; b * BLOCK_STRIPES < n_stripes; b++) {
        size_t first = b * BLOCK_STRIPES, ns = n_stripes - first;
        if (ns > BLOCK_STRIPES) ns = BLOCK_STRIPES;
        for (size_t j = 0; j < ns; j++) {
            H x = h_load(s + (first + j) * STRIPE);
            acc = h_mix(acc, x, SECRET + 8 * j);
            h_store(d + (first + j) * STRIPE, x);
        }
        if (b < n_blocks) acc = h_scramble(acc, SECRET + sizeof SECRET - STRIPE);
    }
    memcpy(d + n_stripes * STRIPE, s + n_stripes * STRIPE, len - n_stripes * STRIPE);
    *hash = h_finish(acc, s + len - STRIPE, len);
}

/*
 * One block (ns stripes, up to 16) of a group of G sources (1..4, a constant after inlining): mix
 * each source's stripe into its accumulator and sum them into out, which the first group writes
 * and later groups add to. Keeps G accumulators and one output stripe in registers.
 * Finiteness rides along: *chk += 0 * r is 0 for a finite r and NaN for an infinite or NaN one
 * (one FMA per output vector). A partial sum that is not finite stays so through later groups
 * (inf + finite = inf, inf - inf = NaN), so checking every group's output is exact.
 */
static inline __attribute__((always_inline)) void sum_block(int G, int first_group, float *out,
                                                            const float *const *src, const float *w,
                                                            H *acc, size_t ns, int scramble,
                                                            F *chk)
{
    F c = *chk;
    H a[4];
    for (int g = 0; g < G; g++) a[g] = acc[g];
    for (size_t j = 0; j < ns; j++) {
        const uint8_t *key = SECRET + 8 * j;
        F x = f_load(src[0] + 16 * j);
        a[0] = h_mix(a[0], f_bits(x), key);
        F r = first_group ? f_mul(w[0], x) : f_fma(w[0], x, f_load(out + 16 * j));
        for (int g = 1; g < G; g++) {
            x = f_load(src[g] + 16 * j);
            a[g] = h_mix(a[g], f_bits(x), key);
            r = f_fma(w[g], x, r);
        }
        f_store(out + 16 * j, r);
        c = f_fma(0.0f, r, c);
    }
    *chk = c;
    for (int g = 0; g < G; g++)
        acc[g] = scramble ? h_scramble(a[g], SECRET + sizeof SECRET - STRIPE) : a[g];
}

int EXPORT(ss_hash64_sum_f32)(float *out, const float *const *src, const float *w, int n,
                              size_t len, uint64_t *hashes)
{
    const size_t count = len / sizeof(float);
    if (len <= 240 || n > SS_HASH_SUM_MAX) {
        int finite = sum_then_hash(out, src, w, n, 0, count);
        for (int i = 0; i < n; i++) hashes[i] = XXH3_64bits(src[i], len);
        return finite;
    }
    F chk = f_zero();
    const size_t n_stripes = (len - 1) / STRIPE, n_blocks = (len - 1) / (STRIPE * BLOCK_STRIPES);
    H acc[SS_HASH_SUM_MAX];
    for (int i = 0; i < n; i++) acc[i] = h_load(acc_init);
    for (size_t b = 0; b * BLOCK_STRIPES < n_stripes; b++) {
        size_t first = b * BLOCK_STRIPES, ns = n_stripes - first;
        if (ns > BLOCK_STRIPES) ns = BLOCK_STRIPES;
        const size_t at = first * (STRIPE / sizeof(float));
        int scramble = b < n_blocks;
        for (int g = 0; g < n; g += 4) {
            const float *s[4];
            int G = n - g < 4 ? n - g : 4;
            for (int i = 0; i < G; i++) s[i] = src[g + i] + at;
            switch (G) { /* constant group sizes, so that sum_block keeps everything in registers */
            case 4:
                sum_block(4, g == 0, out + at, s, w + g, acc + g, ns, scramble, &chk);
                break;
            case 3:
                sum_block(3, g == 0, out + at, s, w + g, acc + g, ns, scramble, &chk);
                break;
            case 2:
                sum_block(2, g == 0, out + at, s, w + g, acc + g, ns, scramble, &chk);
                break;
            default:
                sum_block(1, g == 0, out + at, s, w + g, acc + g, ns, scramble, &chk);
            }
        }
    }
    int finite = sum_then_hash(out, src, w, n, n_stripes * (STRIPE / sizeof(float)), count);
    for (int i = 0; i < n; i++)
        hashes[i] = h_finish(acc[i], (const uint8_t *)src[i] + len - STRIPE, len);
    return finite && !f_any_nan(chk);
}

#else /* baseline x86-64: the two-pass forms */

void EXPORT(ss_hash64_copy)(void *dst, const void *src, size_t len, uint64_t *hash)
{
    copy_then_hash(dst, src, len, hash);
}

int EXPORT(ss_hash64_sum_f32)(float *out, const float *const *src, const float *w, int n,
                              size_t len, uint64_t *hashes)
{
    int finite = sum_then_hash(out, src, w, n, 0, len / sizeof(float));
    for (int i = 0; i < n; i++) hashes[i] = XXH3_64bits(src[i], len);
    return finite;
}

#endif
