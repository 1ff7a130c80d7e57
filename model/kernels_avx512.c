/*
 * kernels_avx512.c - the SIMD kernels (kernels_simd.h) for AVX-512F, 16 lanes.
 * Compiled with -mavx512f -mfma; only called when the CPU reports AVX-512F.
 */
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>

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
#define VEQ_MASK(a, b) ((unsigned)_mm512_cmp_ps_mask((a), (b), _CMP_EQ_OQ))
#define VABS(v)       _mm512_abs_ps(v)
#define VHSUM(v)      hsum16(v)
#define VHSUM_4X4(a, Y, ldy) hsum_4x4((a), (Y), (ldy))
#define VHSUM_T(a)    hsum_t(a)
#define KPREFIX       k512_

/*
 * The sum of v's lanes: the two halves added, then the two quarters of that, then lanes (0, 2)
 * and (1, 3), then those two (GCC's _mm512_reduce_add_ps), written out so that hsum_4x4 below
 * gives the same bits whatever the compiler's own reduction does.
 */
static inline float hsum16(__m512 v)
{
    const __m256 h = _mm256_add_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
                                   _mm512_castps512_ps256(v));
    const __m128 q = _mm_add_ps(_mm256_extractf128_ps(h, 1), _mm256_castps256_ps128(h));
    const __m128 p = _mm_add_ps(q, _mm_shuffle_ps(q, q, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(_mm_add_ss(p, _mm_shuffle_ps(p, p, 1)));
}

/*
 * Y[j ldy + i] = hsum16(a[4 i + j]) for i, j < 4 (a 4 x 4 block of the small GEMM: weight row
 * i, input row j), the same sums in the same tree, 16 reductions at once: each round adds the
 * halves hsum16 adds, two vectors' worth per instruction (45 operations and 4 stores instead of
 * 16 reductions of ~8 and 16 scalar stores; dt_proj's K = 48 spent more on these than on its
 * products). The last round leaves input row j's four outputs in 128-bit lane j.
 */
static inline void hsum_4x4(const __m512 *a, float *Y, int ldy)
{
    __m512 t[4], u[2];
    for (int i = 0; i < 4; i++) {
        __m512 r[2];
        for (int h = 0; h < 2; h++) { /* [a(i, 2h) halves summed | a(i, 2h + 1) halves summed] */
            const __m512 p = a[4 * i + 2 * h], q = a[4 * i + 2 * h + 1];
            r[h] = _mm512_add_ps(_mm512_shuffle_f32x4(p, q, _MM_SHUFFLE(3, 2, 3, 2)),
                                 _mm512_shuffle_f32x4(p, q, _MM_SHUFFLE(1, 0, 1, 0)));
        }
        /* 128-bit lane j: input row j's quarters summed */
        t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(r[0], r[1], _MM_SHUFFLE(3, 1, 3, 1)),
                             _mm512_shuffle_f32x4(r[0], r[1], _MM_SHUFFLE(2, 0, 2, 0)));
    }
    for (int h = 0; h < 2; h++) /* per lane: lanes (0, 2), (1, 3) of outputs 2h and 2h + 1 */
        u[h] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * h], t[2 * h + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(t[2 * h], t[2 * h + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 y = _mm512_add_ps(_mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    _mm_storeu_ps(Y, _mm512_castps512_ps128(y));
    _mm_storeu_ps(Y + ldy, _mm512_extractf32x4_ps(y, 1));
    _mm_storeu_ps(Y + 2 * (size_t)ldy, _mm512_extractf32x4_ps(y, 2));
    _mm_storeu_ps(Y + 3 * (size_t)ldy, _mm512_extractf32x4_ps(y, 3));
}

/*
 * Lane i = the sum of the lanes of a[i], for 16 vectors: four rounds of pairwise sums, each
 * round halving the lanes per vector (45 operations instead of 16 reductions of ~8 each).
 */
static inline __m512 hsum_t(const __m512 *a)
{
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __m512 b[8];
    for (int i = 0; i < 8; i++)
        b[i] = _mm512_add_ps(_mm512_permutex2var_ps(a[2 * i], ie, a[2 * i + 1]),
                             _mm512_permutex2var_ps(a[2 * i], io, a[2 * i + 1]));
    for (int n = 8; n > 1; n /= 2)
        for (int i = 0; i < n / 2; i++)
            b[i] = _mm512_add_ps(_mm512_permutex2var_ps(b[2 * i], ie, b[2 * i + 1]),
                                 _mm512_permutex2var_ps(b[2 * i], io, b[2 * i + 1]));
    return b[0];
}

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
/* VROUND(x): x rounded to the nearest integer (ties to even); VLDEXP(p, n): p 2^n for
 * integral n in exp_raw's range, as exp_raw builds it (kernels_simd.h exp_raw_n) */
#define VROUND(x) _mm512_roundscale_ps((x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VLDEXP(p, n) _mm512_scalef_ps((p), (n))
#define VLOAD_BF16(p)                                                                              \
    _mm512_castsi512_ps(                                                                           \
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))
#define VBF16_LO(p)                                                                                \
    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_loadu_si512((const void *)(p)), 16))
#define VBF16_HI(p)                                                                                \
    _mm512_castsi512_ps(                                                                           \
        _mm512_and_si512(_mm512_loadu_si512((const void *)(p)), _mm512_set1_epi32(-65536)))
#define VLOAD_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define VLOAD_I8(p)  _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p))))

#include "kernels_simd.h"

/*
 * One token of a K = 4 conv (decode), 16 channels at a time, on the windows and weights in their
 * stored [C][4] layout: four vectors of 4 channels x 4 taps each. The window shift is one
 * two-source permute per vector (taps 1..3 move down, the new input comes in as tap 3), and the
 * four taps of each channel are summed by two rounds of pairwise permutes. The general kernel
 * transposes each window to [4][16] and back, 128 scalar moves per 16 channels, which made the
 * conv cost 6 % of a 16-stream decode step.
 */
static int k512_conv_step4(const conv_args *a)
{
    if (a->T != 1 || a->K != 4 || (a->c0 % 16) || (a->c1 % 16)) return 0;
    /* shift[j]: lane c*4+k of vector j takes tap k+1 of channel c, or (k = 3) input 4j+c */
    static const int32_t shift[4][16] __attribute__((aligned(64))) = {
        {1, 2, 3, 16, 5, 6, 7, 17, 9, 10, 11, 18, 13, 14, 15, 19},
        {1, 2, 3, 20, 5, 6, 7, 21, 9, 10, 11, 22, 13, 14, 15, 23},
        {1, 2, 3, 24, 5, 6, 7, 25, 9, 10, 11, 26, 13, 14, 15, 27},
        {1, 2, 3, 28, 5, 6, 7, 29, 9, 10, 11, 30, 13, 14, 15, 31}};
    /* round 1: lanes 2i and 2i+1 of the pair (p, q) -> lane i (p's 8 pairs, then q's) */
    static const int32_t even[16] __attribute__((aligned(64))) = {0,  2,  4,  6,  8,  10, 12, 14,
                                                                  16, 18, 20, 22, 24, 26, 28, 30};
    static const int32_t odd[16] __attribute__((aligned(64))) = {1,  3,  5,  7,  9,  11, 13, 15,
                                                                 17, 19, 21, 23, 25, 27, 29, 31};
    const __m512i ie = _mm512_load_si512(even), io = _mm512_load_si512(odd);
    for (int ch = a->c0; ch < a->c1; ch += 16) {
        const __m512 x = _mm512_loadu_ps(a->in + ch);
        float *win = a->win + (size_t)ch * 4;
        const float *w = a->w + (size_t)ch * 4;
        __m512 p[4];
        for (int j = 0; j < 4; j++) {
            __m512 nw = _mm512_permutex2var_ps(_mm512_loadu_ps(win + 16 * j),
                                               _mm512_load_si512(shift[j]), x);
            _mm512_storeu_ps(win + 16 * j, nw);
            p[j] = _mm512_mul_ps(nw, _mm512_loadu_ps(w + 16 * j));
        }
        /* per channel: (t0 + t1) + (t2 + t3); lane order stays channel order */
        __m512 h0 = _mm512_add_ps(_mm512_permutex2var_ps(p[0], ie, p[1]),
                                  _mm512_permutex2var_ps(p[0], io, p[1]));
        __m512 h1 = _mm512_add_ps(_mm512_permutex2var_ps(p[2], ie, p[3]),
                                  _mm512_permutex2var_ps(p[2], io, p[3]));
        __m512 acc = _mm512_add_ps(_mm512_permutex2var_ps(h0, ie, h1),
                                   _mm512_permutex2var_ps(h0, io, h1));
        if (a->bias) acc = _mm512_add_ps(acc, _mm512_loadu_ps(a->bias + ch));
        _mm512_storeu_ps(a->out + ch, k512_silu(acc));
    }
    return 1;
}

static void k512_conv_any(const conv_args *a)
{
    if (!k512_conv_step4(a)) k512_conv(a);
}

/* kernels_vnni.c, for CPUs with AVX-512 VNNI and BW (the form kernels_avx2.c has otherwise) */
void kvnni_gemv_q8a8(const q8_act *x, const int8_t *W, const float *S, int N, float *Y);
void kvnni_q8_act_quantize(q8_act *a, const float *x);
void kvnni_gemv_t_q8ka8(const q8_act *x, const uint8_t *W, size_t ldw, int N, float *Y);
void kvnni_gemv_q8p_a8(const q8_act *x, const uint8_t *W, int lo, int hi, float *Y);

static kernels k512 = {
    .name = "avx512",
    .scan1 = k512_scan1,
    .scan2 = k512_scan2,
    .conv = k512_conv_any,
    .gemm_small = k512_gemm_small,
    .gemm_small_bf16 = k512_gemm_small_bf16,
    .gemm_small_f16 = k512_gemm_small_f16,
    .gemm_small_q8 = k512_gemm_small_q8,
    .gemm_t = k512_gemm_t,
    .gemm_t_bf16 = k512_gemm_t_bf16,
    .gemm_t_f16 = k512_gemm_t_f16,
    .gemm_t_q8 = k512_gemm_t_q8,
    .gemv_t_q8ka8 = NULL, /* chosen in kernels_avx512(), as gemv_q8a8 */
    .gemm_t_q8k = k512_gemm_t_q8k,
    .gemv_q8p_a8 = NULL,
    .gemv_q8a8 = NULL, /* these two chosen in kernels_avx512() */
    .quantize_act8 = NULL,
    .widen_q8 = k512_widen_q8,
    .widen_bf16 = k512_widen_bf16,
    .widen_bf16_pairs = k512_widen_bf16_pairs,
    .widen_f16 = k512_widen_f16,
    .logsumexp = k512_logsumexp,
    .logsumexp_at = k512_logsumexp_at,
    .argmax = k512_argmax,
};

static void k512_choose(void)
{
    unsigned a, b, c, d;
    const int vnni = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & bit_AVX512VNNI) &&
                     (b & bit_AVX512BW) && (b & bit_AVX512VL);
    k512.gemv_q8a8 = vnni ? kvnni_gemv_q8a8 : kernels_avx2()->gemv_q8a8;
    k512.quantize_act8 = vnni ? kvnni_q8_act_quantize : q8_act_quantize;
    k512.gemv_t_q8ka8 = vnni ? kvnni_gemv_t_q8ka8 : kernels_avx2()->gemv_t_q8ka8;
    k512.gemv_q8p_a8 = vnni ? kvnni_gemv_q8p_a8 : kernels_avx2()->gemv_q8p_a8;
}

const kernels *kernels_avx512(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, k512_choose);
    return &k512;
}
