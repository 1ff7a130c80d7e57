/*
 * kernels_avx512.c - the SIMD kernels (kernels_simd.h) for AVX-512F, 16 lanes.
 * Compiled with -mavx512f -mfma; only called when the CPU reports AVX-512F.
 */
#include <immintrin.h>

typedef __m512 VF;
#define VW            16
#define VZERO()       _mm512_setzero_ps()
#define VLOAD(p)      _mm512_loadu_ps(p)
#define VSTORE(p, v)  _mm512_storeu_ps((p), (v))
#define VSET1(f)      _mm512_set1_ps(f)
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VMAX(a, b)    _mm512_max_ps((a), (b))
#define VMIN(a, b)    _mm512_min_ps((a), (b))
#define VDIV(a, b)    _mm512_div_ps((a), (b))
#define VABS(v)       _mm512_abs_ps(v)
#define VHSUM(v)      _mm512_reduce_add_ps(v)
#define KPREFIX       k512_

/* exp(x) for x in [-87.3, 88.3]: x = n ln2 + r (Cody-Waite), e^r by its Taylor series to r^7,
 * scaled by 2^n with scalef. Max relative error ~2e-7. */
static inline __m512 exp_raw(__m512 x)
{
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
#define VEXP_RAW(x) exp_raw(x)
#define VLOAD_BF16(p)                                                                          \
    _mm512_castsi512_ps(                                                                       \
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))
#define VLOAD_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))

#include "kernels_simd.h"

static const kernels k512 = {
    .name = "avx512",
    .scan1 = k512_scan1,
    .conv = k512_conv,
    .gemm_small = k512_gemm_small,
    .gemm_small_bf16 = k512_gemm_small_bf16,
    .gemm_small_f16 = k512_gemm_small_f16,
    .widen_bf16 = k512_widen_bf16,
    .widen_f16 = k512_widen_f16,
    .logsumexp = k512_logsumexp,
};

const kernels *kernels_avx512(void)
{
    return &k512;
}
