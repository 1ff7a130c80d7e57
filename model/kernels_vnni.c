/*
 * kernels_vnni.c - batch-1 decode on 8-bit weights with 8-bit activations (kernels.h:
 * gemv_q8a8) for AVX-512 VNNI. Compiled with -mavx512f -mavx512bw -mavx512vnni; only called
 * when the CPU reports all three (kernels.c).
 *
 * Per chunk of 64 values of a row: the signs of x moved onto the weights (a masked byte
 * subtract: w' = -w where x < 0), one vpdpbusd of |x| (unsigned) against w' (signed) gives 16
 * exact int32 sums of 4 products each (lanes 0-7 in the chunk's first block of 32, 8-15 in the
 * second), converted to F32 and multiplied into the row's accumulator by s_w s_x of their block.
 * That is 5 vector operations per 64 weights where widening int8 to F32 takes about 12 (and a
 * quarter of the shuffle-port work), so one core keeps up with the memory with room to spare.
 * Four rows at a time share the loads of x; the rows PF1_ROWS ahead are prefetched into L2 as
 * in the other one-row kernels.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#ifndef PF1_ROWS
#define PF1_ROWS 8
#endif

void kvnni_gemv_q8a8(const q8_act *x, const int8_t *W, const float *S, int N, float *Y);
void kvnni_q8_act_quantize(q8_act *a, const float *x);
void kvnni_gemv_t_q8ka8(const q8_act *x, const uint8_t *W, size_t ldw, int N, float *Y);
void kvnni_gemv_q8p_a8(const q8_act *x, const uint8_t *W, int lo, int hi, float *Y);

/*
 * Scales: per group of 16 blocks (8 chunks) a row's 16 block scales are loaded once and
 * multiplied by x's; each chunk then spreads its two (lanes 0-7 and 8-15) with one permute.
 */
#define GROUP_BLOCKS 16

/* One chunk of row r (accumulator a##r, scales c##r) at k; w loaded whole or masked. */
#define Q8A8_ROW(r)                                                                            \
    do {                                                                                       \
        const int8_t *wp = W + (r) * rs + k;                                                   \
        const __m512i w = whole ? _mm512_loadu_si512(wp) : _mm512_maskz_loadu_epi8(in, wp);    \
        const __m512i ws = _mm512_mask_sub_epi8(w, neg, zero, w); /* w * sign(x) */             \
        const __m512i d = _mm512_dpbusd_epi32(zero, ax, ws);                                   \
        a##r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_permutexvar_ps(spread, c##r), a##r); \
    } while (0)

/*
 * ROWS (1 or 4) rows of W from row 0 (stride K), their scales at S (stride nb), into Y.
 * Accumulators and scales in named registers: GCC keeps arrays of vectors on the stack.
 */
#define Q8A8_ROWS(NAME, ROWS)                                                                  \
    static void NAME(const q8_act *x, const int8_t *W, const float *S, int nb, size_t rs,      \
                     size_t rss, float *Y, size_t ys)                                          \
    {                                                                                          \
        const int K = x->K;                                                                    \
        /* rows PF1_ROWS ahead when consecutive, FAR_PF_ROWS ahead in their streams when far */  \
        const size_t ahead = rs == (size_t)K ? PF1_ROWS : FAR_PF_ROWS;                           \
        const size_t pfw = ahead * (size_t)K, pfs = ahead * (size_t)nb;                        \
        const __m512i zero = _mm512_setzero_si512();                                           \
        const __m512i spread0 =                                                                \
            _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);                 \
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                            \
        for (int b0 = 0; b0 < nb; b0 += GROUP_BLOCKS) {                                        \
            /* this group's scales: s_w s_x per block, 0 past the last block */                \
            const int left = nb - b0;                                                          \
            const __mmask16 sm = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);          \
            const __m512 sx = _mm512_loadu_ps(x->s + b0); /* padded to 16 blocks */            \
            const __m512 c0 = _mm512_mul_ps(_mm512_maskz_loadu_ps(sm, S + b0), sx);            \
            __m512 c1 = c0, c2 = c0, c3 = c0;                                                  \
            if (ROWS == 4) {                                                                   \
                c1 = _mm512_mul_ps(_mm512_maskz_loadu_ps(sm, S + rss + b0), sx);               \
                c2 = _mm512_mul_ps(_mm512_maskz_loadu_ps(sm, S + 2 * rss + b0), sx);           \
                c3 = _mm512_mul_ps(_mm512_maskz_loadu_ps(sm, S + 3 * rss + b0), sx);           \
            }                                                                                  \
            if (ROWS == 4) { /* the scales of the rows the loop below prefetches */          \
                _mm_prefetch((const char *)(S + pfs + b0), _MM_HINT_T1);                       \
                _mm_prefetch((const char *)(S + rss + pfs + b0), _MM_HINT_T1);                 \
                _mm_prefetch((const char *)(S + 2 * rss + pfs + b0), _MM_HINT_T1);             \
                _mm_prefetch((const char *)(S + 3 * rss + pfs + b0), _MM_HINT_T1);             \
            }                                                                                  \
            const int kg = (b0 + GROUP_BLOCKS) * Q8_BLOCK;                                     \
            const int k_end = kg < K ? kg : K;                                                 \
            __m512i spread = spread0;                                                          \
            for (int k = b0 * Q8_BLOCK; k < k_end; k += Q8_CHUNK) {                            \
                /* a whole chunk, or the row's last bytes (x is zero-padded) */                \
                const int whole = K - k >= 64;                                                 \
                const __mmask64 in = whole ? ~(__mmask64)0 : (((__mmask64)1 << (K - k)) - 1);  \
                if (ROWS == 4) {                                                               \
                    _mm_prefetch((const char *)(W + pfw + k), _MM_HINT_T1);                    \
                    _mm_prefetch((const char *)(W + rs + pfw + k), _MM_HINT_T1);               \
                    _mm_prefetch((const char *)(W + 2 * rs + pfw + k), _MM_HINT_T1);           \
                    _mm_prefetch((const char *)(W + 3 * rs + pfw + k), _MM_HINT_T1);           \
                }                                                                              \
                const __m512i ax = _mm512_load_si512(x->aq + k);                               \
                const __mmask64 neg = (__mmask64)x->neg[k / 64];                               \
                Q8A8_ROW(0);                                                                   \
                if (ROWS == 4) {                                                               \
                    Q8A8_ROW(1);                                                               \
                    Q8A8_ROW(2);                                                               \
                    Q8A8_ROW(3);                                                               \
                }                                                                              \
                spread = _mm512_add_epi32(spread, _mm512_set1_epi32(2));                       \
            }                                                                                  \
        }                                                                                      \
        Y[0] = _mm512_reduce_add_ps(a0);                                                       \
        if (ROWS == 4) {                                                                       \
            Y[ys] = _mm512_reduce_add_ps(a1);                                                  \
            Y[2 * ys] = _mm512_reduce_add_ps(a2);                                              \
            Y[3 * ys] = _mm512_reduce_add_ps(a3);                                              \
        }                                                                                      \
    }
Q8A8_ROWS(q8a8_rows4, 4)
Q8A8_ROWS(q8a8_row1, 1)

void kvnni_gemv_q8a8(const q8_act *x, const int8_t *W, const float *S, int N, float *Y)
{
    const int nb = q8_blocks(x->K);
    const size_t K = (size_t)x->K;
    int n = 0;
    if (N >= kernels_far_rows) { /* four far streams: rows n, n + q, n + 2q, n + 3q (kernels.h) */
        const int q = N / 4;
        for (; n < q; n++)
            q8a8_rows4(x, W + (size_t)n * K, S + (size_t)n * nb, nb, (size_t)q * K,
                       (size_t)q * nb, Y + n, (size_t)q);
        n = 4 * q;
    }
    for (; n + 4 <= N; n += 4)
        q8a8_rows4(x, W + (size_t)n * K, S + (size_t)n * nb, nb, K, (size_t)nb, Y + n, 1);
    for (; n < N; n++)
        q8a8_row1(x, W + (size_t)n * K, S + (size_t)n * nb, nb, K, (size_t)nb, Y + n, 1);
}

/*
 * gemv_t_q8ka8 (kernels.h) on the q8k layout: lanes over outputs (16 per vector); per row of the
 * layout (4 k) one vpdpbusd of the stored unsigned weights (q + 128) against x's 4 signed bytes
 * broadcast, into an int32 sum that starts at -128 sum(q_x) of the block: after the block's 8
 * rows each lane holds the exact sum q_w q_x. Then the generic kernel's F32 step (convert,
 * S * s_x, one FMA) into Y, which holds each output's running sum between blocks. Block by
 * block, so that the weights are read as they lie (a block's 8 rows are contiguous), in tiles of
 * TQ_NV vectors across the row (8 independent chains of vpdpbusd); the N % 16 outputs left in a
 * masked vector. Reads whole blocks of the layout (it is padded) and of x (zero past K).
 */
#define TQ_NV 8
#define TQ_TILE(NV, MASK)                                                                          \
    do {                                                                                           \
        __m512i is[NV];                                                                            \
        for (int v = 0; v < NV; v++) is[v] = c0;                                                   \
        for (int r = 0; r < Q8_BLOCK / 4; r++) {                                                   \
            const __m512i xb = _mm512_set1_epi32(x4[r]);                                           \
            const uint8_t *wr = Wb + (size_t)r * ldw + 4 * (size_t)n0;                             \
            for (int v = 0; v < NV; v++)                                                           \
                is[v] =                                                                            \
                    _mm512_dpbusd_epi32(is[v], _mm512_maskz_loadu_epi32((MASK), wr + 64 * v), xb); \
        }                                                                                          \
        for (int v = 0; v < NV; v++) {                                                             \
            float *y = Y + n0 + 16 * v;                                                            \
            const __m512 sc = _mm512_mul_ps(_mm512_maskz_loadu_ps((MASK), Sb + n0 + 16 * v), sx);  \
            const __m512 prev = b ? _mm512_maskz_loadu_ps((MASK), y) : _mm512_setzero_ps();        \
            _mm512_mask_storeu_ps(y, (MASK),                                                       \
                                  _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[v]), sc, prev));           \
        }                                                                                          \
    } while (0)

/* sum of the 32 signed bytes at q: the unsigned bytes q + 128 summed by vpsadbw, less 32 x 128 */
static inline int32_t block_sum(const int8_t *q)
{
    const __m256i u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)q),
                                       _mm256_set1_epi8((char)0x80));
    const __m256i s = _mm256_sad_epu8(u, _mm256_setzero_si256()); /* 4 sums of 8 */
    const __m128i h = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    return (int32_t)(_mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1)) - Q8_BLOCK * 128;
}

void kvnni_gemv_t_q8ka8(const q8_act *x, const uint8_t *W, size_t ldw, int N, float *Y)
{
    const int nb = q8_blocks(x->K);
    if (nb == 0) memset(Y, 0, (size_t)N * sizeof *Y);
    for (int b = 0; b < nb; b++) {
        const __m512i c0 = _mm512_set1_epi32(-128 * block_sum(x->q + b * Q8_BLOCK));
        const __m512 sx = _mm512_set1_ps(x->s[b]);
        int32_t x4[Q8_BLOCK / 4];
        memcpy(x4, x->q + b * Q8_BLOCK, sizeof x4);
        const uint8_t *Wb = q8k_vals(W, ldw, b * Q8_BLOCK);
        const float *Sb = q8k_scl(W, ldw, b);
        int n0 = 0;
        for (; n0 + TQ_NV * 16 <= N; n0 += TQ_NV * 16) TQ_TILE(TQ_NV, (__mmask16)0xffff);
        for (; n0 + 16 <= N; n0 += 16) TQ_TILE(1, (__mmask16)0xffff);
        if (n0 < N) TQ_TILE(1, (__mmask16)((1u << (N - n0)) - 1));
    }
}

/*
 * gemv_q8p_a8 (kernels.h) on the q8p layout: a whole panel's 64 outputs in four vectors of F32
 * sums kept in registers over all its blocks; per block its 8 rows (vpdpbusd, as above, from
 * -128 sum(q_x) of the block, into four int32 vectors), then its row of scales (the block's
 * 2.25 KB contiguous: a panel is one stream, read in order): convert, s * s_x and one FMA each,
 * gemv_t_q8ka8's steps in its order, the same bits. The blocks' -128 sum(q_x) once per call.
 * Several panels at a time: one Zen core keeps more reads in flight for distant streams than for
 * one (docs/performance.md, "Four far streams"). kernels_q8p_streams 4 (AMD): four panels from the
 * four quarters of the call's whole panels, their 16 vectors of sums in registers (x's groups
 * broadcast from memory by vpdpbusd itself, so that nothing spills) and no software prefetch (the
 * hardware's streams keep up with four; prefetches ahead were slower, "Four q8p streams"); 2: the
 * two halves; 1: one after the other; the panels left over two or one at a time. The one- and
 * two-stream paths prefetch each stream P8_PF bytes ahead (prefetch_weights: non-temporal on AMD,
 * else into L2), its first P8_PF bytes at once. Runs that do not cover a whole panel (a claim's
 * edges, the last panel) go through gemv_t_q8ka8.
 */
#define P8_MAX_BLOCKS 512
#ifndef P8_PF
#define P8_PF Q8P_PF
#endif

/* Prefetch the first P8_PF bytes of panel c. */
static inline void p8_start(const uint8_t *W, size_t pb, int c)
{
    const char *w0 = (const char *)(W + (size_t)c * pb);
    for (int l = 0; l < P8_PF; l += 64) prefetch_weights(w0 + l);
}

/* A block's int32 sums of 16 outputs into their F32 sums y: converted, times the panel's scales
 * at s and x's block scale sx, one FMA */
static inline __m512 p8_fma(__m512i i, const float *s, __m512 sx, __m512 y)
{
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(_mm512_loadu_ps(s), sx), y);
}
/* the block's four vectors i0..i3 into y0..y3 (scales at Sb) */
#define P8_SCALE(Sb, y0, y1, y2, y3)                                                           \
    do {                                                                                       \
        y0 = p8_fma(i0, (Sb), sx, y0);                                                         \
        y1 = p8_fma(i1, (Sb) + 16, sx, y1);                                                    \
        y2 = p8_fma(i2, (Sb) + 32, sx, y2);                                                    \
        y3 = p8_fma(i3, (Sb) + 48, sx, y3);                                                    \
    } while (0)

/* Block b of panel Wp into its F32 sums y0..y3, the int32 sums i0..i3 started at cb (a
 * statement: the loop of rows, the prefetches, the F32 step) */
#define P8_BLOCK(Wp, y0, y1, y2, y3)                                                           \
    do {                                                                                       \
        const uint8_t *Wb = q8k_vals((Wp), 4 * Q8P_W, b * Q8_BLOCK);                           \
        const float *Sb = q8k_scl((Wp), 4 * Q8P_W, b);                                         \
        __m512i i0 = cb, i1 = cb, i2 = cb, i3 = cb;                                            \
        for (int l = 0; l < 4 * 64; l += 64) /* the row of scales' share */                   \
            prefetch_weights((const char *)Sb + P8_PF + l);                                    \
        for (int r = 0; r < Q8_BLOCK / 4; r++) {                                               \
            const uint8_t *wr = Wb + (size_t)r * 4 * Q8P_W;                                    \
            for (int l = 0; l < 4 * 64; l += 64)                                               \
                prefetch_weights((const char *)wr + P8_PF + l);                                \
            i0 = _mm512_dpbusd_epi32(i0, _mm512_loadu_si512(wr), xb[r]);                       \
            i1 = _mm512_dpbusd_epi32(i1, _mm512_loadu_si512(wr + 64), xb[r]);                  \
            i2 = _mm512_dpbusd_epi32(i2, _mm512_loadu_si512(wr + 128), xb[r]);                 \
            i3 = _mm512_dpbusd_epi32(i3, _mm512_loadu_si512(wr + 192), xb[r]);                 \
        }                                                                                      \
        P8_SCALE(Sb, y0, y1, y2, y3);                                                          \
    } while (0)

/* Per block of x: its 8 groups of 4 bytes broadcast, its scale, -128 sum(q_x) (cs[b]). */
#define P8_X()                                                                                 \
    __m512i xb[Q8_BLOCK / 4];                                                                  \
    for (int r = 0; r < Q8_BLOCK / 4; r++) {                                                   \
        int32_t x4;                                                                            \
        memcpy(&x4, x->q + b * Q8_BLOCK + 4 * r, sizeof x4);                                   \
        xb[r] = _mm512_set1_epi32(x4);                                                         \
    }                                                                                          \
    const __m512 sx = _mm512_set1_ps(x->s[b]);                                                 \
    const __m512i cb = _mm512_set1_epi32(cs[b])

/* acc + the dot products of w's unsigned bytes with the 4 signed bytes at x, broadcast from
 * memory (vpdpbusd's m32bcst operand: no register holds the broadcast, so four panels' sums fit
 * in the registers) */
static inline __m512i dp_bcst(__m512i acc, __m512i w, const int32_t *x)
{
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*x));
    return acc;
}

/* P8_BLOCK with x's groups read through dp_bcst from x4 (sx, cb as there), no prefetch */
#define P8_BLOCK4(Wp, y0, y1, y2, y3)                                                          \
    do {                                                                                       \
        const uint8_t *Wb = q8k_vals((Wp), 4 * Q8P_W, b * Q8_BLOCK);                           \
        const float *Sb = q8k_scl((Wp), 4 * Q8P_W, b);                                         \
        __m512i i0 = cb, i1 = cb, i2 = cb, i3 = cb;                                            \
        for (int r = 0; r < Q8_BLOCK / 4; r++) {                                               \
            const uint8_t *wr = Wb + (size_t)r * 4 * Q8P_W;                                    \
            i0 = dp_bcst(i0, _mm512_loadu_si512(wr), x4 + r);                                  \
            i1 = dp_bcst(i1, _mm512_loadu_si512(wr + 64), x4 + r);                             \
            i2 = dp_bcst(i2, _mm512_loadu_si512(wr + 128), x4 + r);                            \
            i3 = dp_bcst(i3, _mm512_loadu_si512(wr + 192), x4 + r);                            \
        }                                                                                      \
        P8_SCALE(Sb, y0, y1, y2, y3);                                                          \
    } while (0)

static void p8_store(float *y, __m512 y0, __m512 y1, __m512 y2, __m512 y3)
{
    _mm512_storeu_ps(y, y0);
    _mm512_storeu_ps(y + 16, y1);
    _mm512_storeu_ps(y + 32, y2);
    _mm512_storeu_ps(y + 48, y3);
}

void kvnni_gemv_q8p_a8(const q8_act *x, const uint8_t *W, int lo, int hi, float *Y)
{
    const int nb = q8_blocks(x->K);
    const size_t pb = q8p_panel_bytes(x->K);
    int32_t cs[P8_MAX_BLOCKS];
    if (nb > P8_MAX_BLOCKS) {
        q8p_gemv_by_panels(kvnni_gemv_t_q8ka8, x, W, lo, hi, Y);
        return;
    }
    int c0, c1; /* the whole panels; the runs before and after them done here */
    if (!q8p_edges(kvnni_gemv_t_q8ka8, x, W, lo, hi, Y, &c0, &c1)) return;
    for (int b = 0; b < nb; b++) cs[b] = -128 * block_sum(x->q + b * Q8_BLOCK);
    const int np = c1 - c0;
    if (kernels_q8p_streams == 4 && np >= 4) { /* four streams, the sums in registers */
        const int q = np / 4;
        for (int i = 0; i < q; i++) {
            const uint8_t *W0 = W + (size_t)(c0 + i) * pb, *W1 = W0 + (size_t)q * pb,
                          *W2 = W1 + (size_t)q * pb, *W3 = W2 + (size_t)q * pb;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, d0 = a0, d1 = a0,
                   d2 = a0, d3 = a0, e0 = a0, e1 = a0, e2 = a0, e3 = a0, f0 = a0, f1 = a0,
                   f2 = a0, f3 = a0;
            for (int b = 0; b < nb; b++) {
                const int32_t *x4 = (const int32_t *)(const void *)(x->q + b * Q8_BLOCK);
                const __m512 sx = _mm512_set1_ps(x->s[b]);
                const __m512i cb = _mm512_set1_epi32(cs[b]);
                P8_BLOCK4(W0, a0, a1, a2, a3);
                P8_BLOCK4(W1, d0, d1, d2, d3);
                P8_BLOCK4(W2, e0, e1, e2, e3);
                P8_BLOCK4(W3, f0, f1, f2, f3);
            }
            p8_store(Y + ((c0 + i) * Q8P_W - lo), a0, a1, a2, a3);
            p8_store(Y + ((c0 + q + i) * Q8P_W - lo), d0, d1, d2, d3);
            p8_store(Y + ((c0 + 2 * q + i) * Q8P_W - lo), e0, e1, e2, e3);
            p8_store(Y + ((c0 + 3 * q + i) * Q8P_W - lo), f0, f1, f2, f3);
        }
        c0 += 4 * q;
    }
    const int half = kernels_q8p_streams > 1 ? (c1 - c0) / 2 : 0;
    if (c0 < c1) p8_start(W, pb, c0);
    if (half) p8_start(W, pb, c0 + half);
    for (int i = 0; i < half; i++) { /* panels c0 + i and c0 + half + i side by side */
        const uint8_t *Wa = W + (size_t)(c0 + i) * pb, *Wc = W + (size_t)(c0 + half + i) * pb;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m512 e0 = a0, e1 = a0, e2 = a0, e3 = a0;
        for (int b = 0; b < nb; b++) {
            P8_X();
            P8_BLOCK(Wa, a0, a1, a2, a3);
            P8_BLOCK(Wc, e0, e1, e2, e3);
        }
        p8_store(Y + ((c0 + i) * Q8P_W - lo), a0, a1, a2, a3);
        p8_store(Y + ((c0 + half + i) * Q8P_W - lo), e0, e1, e2, e3);
    }
    for (int c = c0 + 2 * half; c < c1; c++) { /* the odd one out (or all: one stream) */
        const uint8_t *Wa = W + (size_t)c * pb;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int b = 0; b < nb; b++) {
            P8_X();
            P8_BLOCK(Wa, a0, a1, a2, a3);
        }
        p8_store(Y + (c * Q8P_W - lo), a0, a1, a2, a3);
    }
}

/*
 * kernels.c's q8_act_quantize, 32 values at a time, with the same operations on every value
 * (|x| max, 127 / max, x * that rounded to nearest even, clamped): the same bytes.
 */
void kvnni_q8_act_quantize(q8_act *a, const float *x)
{
    const int K = a->K;
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    for (int k = 0; k < K; k += Q8_BLOCK) {
        const int n = K - k < Q8_BLOCK ? K - k : Q8_BLOCK;
        const __mmask16 m0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
        const __mmask16 m1 = n >= 32 ? 0xffff : n > 16 ? (__mmask16)((1u << (n - 16)) - 1) : 0;
        const __m512 v0 = _mm512_maskz_loadu_ps(m0, x + k),
                     v1 = _mm512_maskz_loadu_ps(m1, x + k + 16);
        const int nan = _mm512_cmp_ps_mask(v0, v0, _CMP_UNORD_Q) |
                        _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q);
        const float amax =
            _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const int finite = !nan && amax <= 3.402823466e38f;
        const float inv = amax > 0 ? 127.0f / amax : 0.0f;
        a->s[k / Q8_BLOCK] = finite ? amax / 127.0f : __builtin_nanf("");
        __m512i q0 = _mm512_setzero_si512(), q1 = q0;
        if (finite) {
            const __m512 iv = _mm512_set1_ps(inv);
            q0 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v0, iv)), lo),
                                  hi);
            q1 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v1, iv)), lo),
                                  hi);
        }
        const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtepi32_epi8(q0)),
                                                  _mm512_cvtepi32_epi8(q1), 1);
        _mm256_storeu_si256((__m256i *)(a->q + k), q);
        _mm256_storeu_si256((__m256i *)(a->aq + k), _mm256_abs_epi8(q));
        const uint32_t bits = (uint32_t)_mm256_movemask_epi8(q);
        memcpy((char *)a->neg + (size_t)k / 8, &bits, sizeof bits); /* bits k .. k + 31 */
    }
    q8_act_pad(a);
}
