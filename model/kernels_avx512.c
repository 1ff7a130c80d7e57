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
#define VLOAD_BF16(p)                                                                              \
    _mm512_castsi512_ps(                                                                           \
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))
#define VLOAD_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))

#include "kernels_simd.h"

/*
 * Y[M, N] = X W^T for 9..16 rows, "broadcast" form: Xt is X transposed and padded to 16 lanes
 * (Xt[k][m], zeros for m >= M). For each tile of 8 weight rows, 16 accumulators hold Y[0..15][n]
 * for one n each, two per row (even and odd k, summed at the end): every weight element is
 * broadcast once into one FMA, so there are no horizontal sums and X stays in L1 as one vector
 * per k. Eight rows (not 16) keep every row pointer in a register: with 16 rows GCC spilled five
 * of them and reloaded them every k, on the load ports this loop is bound by. Weights F32 only.
 */
#define BC_ROWS(OP)                                                                                \
    OP(0);                                                                                         \
    OP(1);                                                                                         \
    OP(2);                                                                                         \
    OP(3);                                                                                         \
    OP(4);                                                                                         \
    OP(5);                                                                                         \
    OP(6);                                                                                         \
    OP(7)
#define BC_DECL(n)                                                                                 \
    __m512 ev##n = _mm512_setzero_ps(), od##n = _mm512_setzero_ps();                              \
    const float *w##n = W + (size_t)(n)*K
#define BC_FMA2(n)                                                                                 \
    ev##n = _mm512_fmadd_ps(_mm512_set1_ps(w##n[k]), x0, ev##n);                                   \
    od##n = _mm512_fmadd_ps(_mm512_set1_ps(w##n[k + 1]), x1, od##n)
#define BC_LAST(n) ev##n = _mm512_fmadd_ps(_mm512_set1_ps(w##n[k]), x0, ev##n)
#define BC_STORE(n)                                                                                \
    _mm512_mask_i32scatter_ps(Y + (n), lanes, rows, _mm512_add_ps(ev##n, od##n), 4)

static void k512_gemm_bcast(const float *Xt, int M, int K, const float *W0, int N, float *Y0,
                            int ldy)
{
    const __mmask16 lanes = (__mmask16)((1u << M) - 1);
    const __m512i rows =
        _mm512_mullo_epi32(_mm512_set1_epi32(ldy),
                           _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    int n0 = 0;
    for (; n0 + 8 <= N; n0 += 8) {
        const float *W = W0 + (size_t)n0 * K;
        float *Y = Y0 + n0;
        BC_ROWS(BC_DECL);
        int k = 0;
        for (; k + 2 <= K; k += 2) {
            const __m512 x0 = _mm512_load_ps(Xt + (size_t)k * 16);
            const __m512 x1 = _mm512_load_ps(Xt + (size_t)k * 16 + 16);
            BC_ROWS(BC_FMA2);
        }
        if (k < K) {
            const __m512 x0 = _mm512_load_ps(Xt + (size_t)k * 16);
            BC_ROWS(BC_LAST);
        }
        BC_ROWS(BC_STORE);
    }
    for (; n0 < N; n0++) { /* tail rows: one at a time */
        __m512 acc = _mm512_setzero_ps();
        const float *w = W0 + (size_t)n0 * K;
        for (int k = 0; k < K; k++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(w[k]), _mm512_load_ps(Xt + (size_t)k * 16), acc);
        _mm512_mask_i32scatter_ps(Y0 + n0, lanes, rows, acc, 4);
    }
}

static const kernels k512 = {
    .name = "avx512",
    .scan1 = k512_scan1,
    .conv = k512_conv,
    .gemm_small = k512_gemm_small,
    .gemm_bcast = k512_gemm_bcast,
    .gemm_small_bf16 = k512_gemm_small_bf16,
    .gemm_small_f16 = k512_gemm_small_f16,
    .widen_bf16 = k512_widen_bf16,
    .widen_f16 = k512_widen_f16,
    .logsumexp = k512_logsumexp,
    .logsumexp_at = k512_logsumexp_at,
    .argmax = k512_argmax,
    .combine = k512_combine,
};

const kernels *kernels_avx512(void)
{
    return &k512;
}
