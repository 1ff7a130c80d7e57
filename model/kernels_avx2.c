/*
 * kernels_avx2.c - the SIMD kernels (kernels_simd.h) for AVX2 + FMA, 8 lanes.
 * Compiled with -mavx2 -mfma; only called when the CPU reports both.
 */
#include <immintrin.h>

typedef __m256 VF;
#define VW            8
#define VZERO()       _mm256_setzero_ps()
#define VLOAD(p)      _mm256_loadu_ps(p)
#define VSTORE(p, v)  _mm256_storeu_ps((p), (v))
#define VSET1(f)      _mm256_set1_ps(f)
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VMAX(a, b)    _mm256_max_ps((a), (b))
#define VMIN(a, b)    _mm256_min_ps((a), (b))
#define VDIV(a, b)    _mm256_div_ps((a), (b))
#define VEQ_MASK(a, b) ((unsigned)_mm256_movemask_ps(_mm256_cmp_ps((a), (b), _CMP_EQ_OQ)))
#define VABS(v)       _mm256_andnot_ps(_mm256_set1_ps(-0.0f), (v))
#define VHSUM(v)      hsum(v)
#define VHSUM_T(a)    hsum_t(a)
#define KPREFIX       k256_

static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* Lane i = the sum of the lanes of a[i], for 8 vectors (a transposing reduction). */
static inline __m256 hsum_t(const __m256 *a)
{
    __m256 q0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    __m256 q1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20),
                         _mm256_permute2f128_ps(q0, q1, 0x31));
}

/* exp(x) for x in [-87.3, 88.3] (so 2^n stays a normal float): Cody-Waite reduction, Taylor to
 * r^7, 2^n built in the exponent field. */
static inline __m256 exp_raw(__m256 x)
{
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#define VEXP_RAW(x) exp_raw(x)
/* VROUND(x): x rounded to the nearest integer (ties to even); VLDEXP(p, n): p 2^n for
 * integral n in exp_raw's range, as exp_raw builds it (kernels_simd.h exp_raw_n) */
#define VROUND(x) _mm256_round_ps((x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VLDEXP(p, n)                                                                               \
    _mm256_mul_ps((p), _mm256_castsi256_ps(_mm256_slli_epi32(                                      \
                           _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23)))
#define VLOAD_BF16(p)                                                                          \
    _mm256_castsi256_ps(                                                                       \
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))
#define VBF16_LO(p)                                                                            \
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(p)), 16))
#define VBF16_HI(p)                                                                            \
    _mm256_castsi256_ps(                                                                       \
        _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p)), _mm256_set1_epi32(-65536)))
#define VLOAD_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define VLOAD_I8(p)  _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p))))

#include "kernels_simd.h"

/*
 * Batch-1 decode on 8-bit weights with 8-bit activations (kernels.h: gemv_q8a8), AVX2 form:
 * per block of 32 the signs of x moved onto the weights (vpsignb), vpmaddubsw of |x| against
 * them (pairs of products, at most 2 x 127 x 127: no saturation) and vpmaddwd with ones give 8
 * exact int32 sums of 4 products, converted and multiplied by s_w s_x into the accumulator.
 * Also what AVX-512 CPUs without VNNI use (kernels.c). Four rows at a time share the loads of x.
 */
/* One block of 32 of a row (32 bytes at w) against x's block at k: the int32 sums of 4 products
 * per lane, as F32, times s_x (the row's s_w is multiplied in by the caller's FMA). */
#define Q8A8_BLOCK(w)                                                                          \
    _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(                                        \
                      _mm256_maddubs_epi16(ax, _mm256_sign_epi8((w), xs)), ones)),             \
                  sx)

static void k256_gemv_q8a8(const q8_act *x, const int8_t *W, const float *S, int N, float *Y)
{
    const int K = x->K, nb = q8_blocks(K), full = K / Q8_BLOCK;
    const size_t ldw = (size_t)K;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int n = 0, rows; n < N; n += rows) {
        rows = N - n < 4 ? N - n : 4; /* 4 at a time, then the N % 4 left over together */
        const int8_t *w = W + (size_t)n * ldw;
        const float *s = S + (size_t)n * nb;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int b = 0; b < nb; b++) {
            const int k = b * Q8_BLOCK;
            const __m256i ax = _mm256_load_si256((const __m256i *)(x->aq + k));
            const __m256i xs = _mm256_load_si256((const __m256i *)(x->q + k));
            const __m256 sx = _mm256_broadcast_ss(x->s + b);
            if (b < full && rows == 4) {
                if (b % 2 == 0) {
                    __builtin_prefetch(w + (PF1_ROWS + 0) * ldw + k, 0, 2);
                    __builtin_prefetch(w + (PF1_ROWS + 1) * ldw + k, 0, 2);
                    __builtin_prefetch(w + (PF1_ROWS + 2) * ldw + k, 0, 2);
                    __builtin_prefetch(w + (PF1_ROWS + 3) * ldw + k, 0, 2);
                }
                const __m256i w0 = _mm256_loadu_si256((const __m256i *)(w + k));
                const __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + ldw + k));
                const __m256i w2 = _mm256_loadu_si256((const __m256i *)(w + 2 * ldw + k));
                const __m256i w3 = _mm256_loadu_si256((const __m256i *)(w + 3 * ldw + k));
                a0 = _mm256_fmadd_ps(Q8A8_BLOCK(w0), _mm256_broadcast_ss(s + b), a0);
                a1 = _mm256_fmadd_ps(Q8A8_BLOCK(w1), _mm256_broadcast_ss(s + nb + b), a1);
                a2 = _mm256_fmadd_ps(Q8A8_BLOCK(w2), _mm256_broadcast_ss(s + 2 * nb + b), a2);
                a3 = _mm256_fmadd_ps(Q8A8_BLOCK(w3), _mm256_broadcast_ss(s + 3 * nb + b), a3);
                continue;
            }
            /* a short last block (x is zero-padded past K), or a row of the N % 4 left over */
            for (int r = 0; r < rows; r++) {
                int8_t tmp[Q8_BLOCK] = {0};
                memcpy(tmp, w + r * ldw + k, (size_t)(K - k < Q8_BLOCK ? K - k : Q8_BLOCK));
                const __m256i wr = _mm256_loadu_si256((const __m256i *)tmp);
                const __m256 t = _mm256_mul_ps(Q8A8_BLOCK(wr), _mm256_broadcast_ss(s + r * nb + b));
                if (r == 0) a0 = _mm256_add_ps(a0, t);
                if (r == 1) a1 = _mm256_add_ps(a1, t);
                if (r == 2) a2 = _mm256_add_ps(a2, t);
                if (r == 3) a3 = _mm256_add_ps(a3, t);
            }
        }
        Y[n] = hsum(a0);
        if (rows > 1) Y[n + 1] = hsum(a1);
        if (rows > 2) Y[n + 2] = hsum(a2);
        if (rows > 3) Y[n + 3] = hsum(a3);
    }
}

/*
 * gemv_t_q8ka8 (kernels.h), AVX2 form, on the q8k layout: lanes over outputs (8 per vector),
 * per row of the layout (4 k) the weights back to signed bytes (XOR 0x80), the signs of x's 4
 * values moved onto them (vpsignb), vpmaddubsw of |x| against them (pairs of products, at most
 * 2 x 127 x 127: no saturation) and vpmaddwd with ones: the int32 sum of the 4 products of each
 * output, added up over the block's 8 rows (exact), then the generic kernel's F32 steps.
 * Reads whole blocks of the layout (it is padded) and of x (zero past K).
 */
/* One vector of a layout row (8 outputs x 4 bytes at w) against x's 4 bytes (xs, |x| in ax)
 * added into the int32 sums is. */
static inline __m256i tq8a8_step(__m256i is, const uint8_t *w, __m256i xs, __m256i ax)
{
    const __m256i ws = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)w),
                                        _mm256_set1_epi8((char)0x80));
    const __m256i pairs = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(ws, xs));
    return _mm256_add_epi32(is, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

#define TQ8A8_TILE(NV)                                                                         \
    do {                                                                                       \
        __m256 acc[NV];                                                                        \
        for (int v = 0; v < NV; v++) acc[v] = _mm256_setzero_ps();                             \
        for (int b = 0; b < nb; b++) {                                                         \
            __m256i is[NV];                                                                    \
            for (int v = 0; v < NV; v++) is[v] = _mm256_setzero_si256();                      \
            for (int r = 0; r < Q8_BLOCK / 4; r++) {                                           \
                int32_t x4;                                                                    \
                memcpy(&x4, x->q + b * Q8_BLOCK + 4 * r, 4);                                   \
                const __m256i xs = _mm256_set1_epi32(x4), ax = _mm256_abs_epi8(xs);            \
                const uint8_t *wr = q8k_vals(W, ldw, b * Q8_BLOCK + 4 * r) + 4 * (size_t)n0;   \
                for (int v = 0; v < NV; v++) is[v] = tq8a8_step(is[v], wr + 32 * v, xs, ax);  \
            }                                                                                  \
            const __m256 sx = _mm256_set1_ps(x->s[b]);                                         \
            for (int v = 0; v < NV; v++)                                                       \
                acc[v] = _mm256_fmadd_ps(                                                      \
                    _mm256_cvtepi32_ps(is[v]),                                                 \
                    _mm256_mul_ps(_mm256_loadu_ps(q8k_scl(W, ldw, b) + n0 + 8 * v), sx),       \
                    acc[v]);                                                                   \
        }                                                                                      \
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(Y + n0 + 8 * v, acc[v]);                 \
    } while (0)

static void k256_gemv_t_q8ka8(const q8_act *x, const uint8_t *W, size_t ldw, int N, float *Y)
{
    const int K = x->K, nb = q8_blocks(K), Nv = N / 8 * 8;
    int n0 = 0;
    for (; n0 + 32 <= Nv; n0 += 32) TQ8A8_TILE(4);
    for (; n0 < Nv; n0 += 8) TQ8A8_TILE(1);
    for (int n = Nv; n < N; n++) /* the last N % 8 outputs: the generic kernel's steps */
        Y[n] = q8k_out_a8(x, W, ldw, n);
}

/*
 * gemv_q8p_a8 (kernels.h), AVX2 form: a whole panel per block, so that its 8 rows are read in
 * order (256 bytes each; the tiles of 32 outputs above would walk every panel twice, each time
 * half of every row: 1.24x the row layout's time at 130m): the block's int32 sums of the 64
 * outputs in 8 registers as above, the F32 sums in Y between blocks (16 registers hold no
 * more), each output the generic kernel's steps. The panels' weights prefetched 8 KB ahead.
 * Runs that do not cover a whole panel go through gemv_t_q8ka8.
 */
static void k256_gemv_q8p_a8(const q8_act *x, const uint8_t *W, int lo, int hi, float *Y)
{
    const int nb = q8_blocks(x->K);
    const size_t pb = q8p_panel_bytes(x->K), ldw = 4 * Q8P_W;
    int c0, c1; /* the whole panels; the runs before and after them done here */
    if (!q8p_edges(k256_gemv_t_q8ka8, x, W, lo, hi, Y, &c0, &c1)) return;
    for (int c = c0; c < c1; c++) {
        const uint8_t *Wp = W + (size_t)c * pb;
        float *y = Y + (c * Q8P_W - lo);
        for (int b = 0; b < nb; b++) {
            __m256i is[8];
            for (int v = 0; v < 8; v++) is[v] = _mm256_setzero_si256();
            for (int r = 0; r < Q8_BLOCK / 4; r++) {
                int32_t x4;
                memcpy(&x4, x->q + b * Q8_BLOCK + 4 * r, 4);
                const __m256i xs = _mm256_set1_epi32(x4), ax = _mm256_abs_epi8(xs);
                const uint8_t *wr = q8k_vals(Wp, ldw, b * Q8_BLOCK + 4 * r);
                for (int l = 0; l < 4 * Q8P_W; l += 64)
                    prefetch_weights((const char *)wr + Q8P_PF + l);
                for (int v = 0; v < 8; v++) is[v] = tq8a8_step(is[v], wr + 32 * v, xs, ax);
            }
            const float *Sb = q8k_scl(Wp, ldw, b);
            for (int l = 0; l < 4 * Q8P_W; l += 64) /* and the stream's row of scales */
                prefetch_weights((const char *)Sb + Q8P_PF + l);
            const __m256 sx = _mm256_set1_ps(x->s[b]);
            for (int v = 0; v < 8; v++) {
                const __m256 prev = b ? _mm256_loadu_ps(y + 8 * v) : _mm256_setzero_ps();
                _mm256_storeu_ps(
                    y + 8 * v,
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[v]),
                                    _mm256_mul_ps(_mm256_loadu_ps(Sb + 8 * v), sx),
                                    prev));
            }
        }
    }
}

static const kernels k256 = {
    .name = "avx2",
    .scan1 = k256_scan1,
    .scan2 = k256_scan2,
    .conv = k256_conv,
    .gemm_small = k256_gemm_small,
    .gemm_small_bf16 = k256_gemm_small_bf16,
    .gemm_small_f16 = k256_gemm_small_f16,
    .gemm_small_q8 = k256_gemm_small_q8,
    .gemm_t = k256_gemm_t,
    .gemm_t_bf16 = k256_gemm_t_bf16,
    .gemm_t_f16 = k256_gemm_t_f16,
    .gemm_t_q8 = k256_gemm_t_q8,
    .gemv_q8a8 = k256_gemv_q8a8,
    .gemv_t_q8ka8 = k256_gemv_t_q8ka8,
    .gemv_q8p_a8 = k256_gemv_q8p_a8,
    .gemm_t_q8k = k256_gemm_t_q8k,
    .quantize_act8 = q8_act_quantize,
    .widen_q8 = k256_widen_q8,
    .widen_bf16 = k256_widen_bf16,
    .widen_bf16_pairs = k256_widen_bf16_pairs,
    .widen_f16 = k256_widen_f16,
    .logsumexp = k256_logsumexp,
    .logsumexp_at = k256_logsumexp_at,
    .argmax = k256_argmax,
};

const kernels *kernels_avx2(void)
{
    return &k256;
}
