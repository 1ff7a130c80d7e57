/*
 * kernels.h - the hot loops of the forward pass, in a portable C version and SIMD versions
 * (AVX2+FMA, AVX-512) chosen once at run time for the CPU at hand. Internal to model/.
 *
 * Vector versions work on blocks of 16 channels and need pre-transposed weights (see
 * kernels_prepare_*); the portable versions are the reference the tests compare against.
 */
#ifndef SS_KERNELS_H
#define SS_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Mamba-1 selective scan over T tokens of one sequence, channels [c0, c1). */
typedef struct scan1_args {
    int T;
    int c0, c1;      /* channel range; vector kernels need multiples of 16 */
    int N;           /* d_state */
    const float *dt; /* row t at dt + t*ldd: raw dt_proj output (softplus applied here) */
    int ldd;
    const float *x; /* conv output, row stride ldx */
    int ldx;
    const float *z; /* gate, row stride ldz */
    int ldz;
    const float *B; /* B of token t at B + t*ldbc, [N]; C likewise */
    const float *C;
    int ldbc;
    const float *A;   /* [Di, N] = -exp(A_log) */
    const float *A16; /* [Di/16][N][16] transposed blocks of A, or NULL */
    const float *D;   /* [Di] */
    float *s;         /* [Di, N] the layer's SSM state of this sequence (updated) */
    float *y;         /* out, row stride ldy: (s.C + D x) * SiLU(z) */
    int ldy;
    float *dsum;      /* [Di] or NULL: dsum[i] += softplus(dt) of every token (the state's decay) */
} scan1_args;

/* Causal depthwise conv + bias + SiLU over T tokens, channels [c0, c1). */
typedef struct conv_args {
    int T;
    int c0, c1;
    int K;
    const float *in; /* input row t at in + t*ld_in */
    int ld_in;
    const float *w;    /* [C, K] */
    const float *w16;  /* [C/16][K][16] transposed blocks, or NULL */
    const float *bias; /* [C] or NULL */
    float *win;        /* [C, K] the conv window of this sequence (oldest first; updated) */
    float *out;        /* row t at out + t*ld_out */
    int ld_out;
} conv_args;

struct q8_act; /* below */

typedef struct kernels {
    const char *name;
    void (*scan1)(const scan1_args *a);
    void (*conv)(const conv_args *a);
    /*
     * The Mamba-2 recurrence, one token of one head: for p < P,
     *   S[p][:] = dA S[p][:] + (dt x[p]) B,  y[p] = S[p] . C + Dh x[p]
     * S [P, N] row-major (updated), B and C [N], x and y [P]. Every token the same arithmetic,
     * whatever span it is in.
     */
    void (*scan2)(float *S, int P, int N, float dA, float dt, const float *x, const float *B,
                  const float *C, float Dh, float *y);
    /*
     * Y[M, N] = X[M, K] W[N, K]^T: weights streamed once, every row of X reused from cache
     * (callers pass panels of rows that fit in L2). X rows at stride ldx, Y rows at stride ldy.
     * Each Y element is one dot product whose summation order depends on K alone (never on M,
     * N, the position of the row or of the column), so a row gives the same bits however many
     * rows come with it; in the 8-bit form this holds for every M > 1 (M = 1 sums the blocks in
     * another order, for decode speed).
     */
    void (*gemm_small)(const float *X, int M, int K, int ldx, const float *W, int N, float *Y,
                       int ldy);
    /* The same with BF16 weights in the pair layout below (bf16_pack_rows) and F16 weights in
     * row order, widened to F32 as they are loaded: a row gives the bits the F32 kernel gives on
     * the widened values (the same FMAs in the same order). */
    void (*gemm_small_bf16)(const float *X, int M, int K, int ldx, const uint16_t *W, int N,
                            float *Y, int ldy);
    void (*gemm_small_f16)(const float *X, int M, int K, int ldx, const uint16_t *W, int N,
                           float *Y, int ldy);
    /*
     * The same with 8-bit weights (--weights q8): W[N][K] int8, S the scales of its blocks
     * (q8 layout below); each weight is widened and scaled to F32 as it is loaded.
     */
    void (*gemm_small_q8)(const float *X, int M, int K, int ldx, const int8_t *W, const float *S,
                          int N, float *Y, int ldy);
    /*
     * Batch-1 decode on 8-bit weights with 8-bit activations: y[n] = sum_k w[n][k] x[k] with x
     * quantised per block as well (q8_act, below), so that the products are integer dot
     * products (AVX-512 VNNI vpdpbusd: 64 multiply-adds per instruction; AVX2 vpmaddubsw):
     * per block an exact int32 sum, scaled by s_w * s_x and summed in F32. W, S as above.
     */
    void (*gemv_q8a8)(const struct q8_act *x, const int8_t *W, const float *S, int N, float *Y);
    /*
     * Products with transposed weights Wt[K][N] (a checkpoint's W[N][K] transposed at load, so
     * row k holds input k's weight for every output; Mamba-1's x_proj and out_proj):
     *   Y[m][n] = sum over k < K of Wt[k][n] X[m][k]       (add != 0: Y[m][n] += that sum)
     * computed as ONE chain of fused multiply-adds in k order from 0, acc = fmaf(w, x, acc),
     * then stored or added: the same bits from every kernel (generic, AVX2, AVX-512), for every
     * M, N and column offset. A product over a long K cut into segments (each segment a call,
     * the results summed left to right) is then the same whether the segments run one after the
     * other on one thread (add = 1 from the second on: prefill) or on different threads, their
     * results summed afterwards (batch-1 decode, model/mamba.c). Rows of W, X and Y at strides
     * ldw, ldx and ldy (in elements). 16-bit weights are widened (exact) in row order.
     * W may be column-blocked (the far layout below): the columns in blocks of bw, block c at
     * W + c bs, so that column n of row k is W[(n / bw) bs + k ldw + n % bw]; bw >= N is one
     * block, the plain layout (bs unused). The bits do not depend on the layout.
     */
    void (*gemm_t)(const float *X, int M, int K, int ldx, const float *W, int ldw, int bw,
                   size_t bs, int N, float *Y, int ldy, int add);
    void (*gemm_t_bf16)(const float *X, int M, int K, int ldx, const uint16_t *W, int ldw, int bw,
                        size_t bs, int N, float *Y, int ldy, int add);
    void (*gemm_t_f16)(const float *X, int M, int K, int ldx, const uint16_t *W, int ldw, int bw,
                       size_t bs, int N, float *Y, int ldy, int add);
    /* 8-bit: Wt int8 [K][ldw] (the q8 layout below, on the transposed matrix: a scale per block
     * of Q8_BLOCK columns of a row k, at S[k lds + n / Q8_BLOCK]; W and S start at a block's
     * first column). Each step is acc = fmaf((float)q, s * x, acc), s * x rounded to F32 first. */
    void (*gemm_t_q8)(const float *X, int M, int K, int ldx, const int8_t *W, int ldw,
                      const float *S, int lds, int N, float *Y, int ldy, int add);
    /*
     * 8-bit weights transposed in the q8k layout (below: scales along k, after each block's
     * values), for Mamba-1's x_proj and out_proj under --weights q8 and the q8p panels. W points
     * at the layout's block of k0 (k0 a multiple of Q8_BLOCK) and its group of output n0
     * (W + 4 n0), ldw bytes between rows (4 x the layout's outputs: the scales are found from
     * W and ldw). Outputs n < N, over k < K (from k0).
     *
     * gemv_t_q8ka8, one row with 8-bit activations (x quantised as for gemv_q8a8, K = x->K):
     *   Y[n] = chain over the blocks b in order, from 0: acc = fmaf((float)i_b, s[b][n] * s_x[b],
     *   acc), with i_b = sum over k of block b of q_w[n][k] q_x[k] (an exact int32; the product
     *   s * s_x rounded to F32 first).
     * gemm_t_q8k, M rows of F32 activations: Y[m][n] = chain over the blocks b in order, from 0:
     *   acc = fmaf(t_b, s[b][n], acc), with t_b = the fmaf chain over k of block b in order, from
     *   0: t = fmaf((float)q_w[n][k], X[m][k], t).
     * Every kernel set gives these bits (tests/test_kernels.c). Both store Y (no add). The SIMD
     * kernels may read the layout's rows and x's values up to the end of the last block (the
     * layout is padded with zero weights, q8_act with zero values).
     */
    void (*gemv_t_q8ka8)(const struct q8_act *x, const uint8_t *W, size_t ldw, int N, float *Y);
    void (*gemm_t_q8k)(const float *X, int M, int K, int ldx, const uint8_t *W, size_t ldw, int N,
                       float *Y, int ldy);
    /*
     * Batch-1 decode on a matrix in the q8p layout (below) with 8-bit activations: outputs
     * [lo, hi) into Y[0 .. hi - lo) (W at the matrix's first panel, K = x->K), each output
     * the bits of gemv_t_q8ka8 on its panel. The AVX-512 VNNI kernel keeps a whole panel's 64
     * sums in registers over all blocks.
     */
    void (*gemv_q8p_a8)(const struct q8_act *x, const uint8_t *W, int lo, int hi, float *Y);
    /* q8_act_quantize (below), the same bytes */
    void (*quantize_act8)(struct q8_act *a, const float *x);
    /* One q8 row of K values (its q8_blocks(K) scales in s) as F32 into dst. */
    void (*widen_q8)(const int8_t *q, const float *s, int K, float *dst);
    /* dst[i] = (float)src[i] for n BF16 / F16 values (in order). */
    void (*widen_bf16)(const uint16_t *src, float *dst, size_t n);
    /* One BF16 row of K values in the pair layout as F32 into dst, in row order. */
    void (*widen_bf16_pairs)(const uint16_t *src, int K, float *dst);
    void (*widen_f16)(const uint16_t *src, float *dst, size_t n);
    /* out[k] = sum_i w[i] srcs[i][k] for k < count (a piece of a state merge). */
    /* log(sum_i exp(x[i])) over n values (the softmax normaliser of a vocabulary); the same
     * when the maximum mx is already known; the index of the maximum (lowest on ties). */
    float (*logsumexp)(const float *x, int n);
    float (*logsumexp_at)(const float *x, int n, float mx);
    int (*argmax)(const float *x, int n);
} kernels;

/* The best kernels for this CPU (SS_KERNELS=generic|avx2|avx512 forces a choice). */
const kernels *kernels_get(void);
/* The portable reference kernels. */
const kernels *kernels_generic(void);
const kernels *kernels_avx2(void);   /* NULL when not built in */
const kernels *kernels_avx512(void); /* NULL when not built in */

/* Scalar conversions of one 16-bit value (exact). */
static inline float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/*
 * BF16 matrices [N, K] are kept in a pair layout (bf16_pack_rows, at load): within each complete
 * group of 32 values of a row, k0 = 32g, memory holds w[k0], w[k0+16], w[k0+1], w[k0+17], ...,
 * w[k0+15], w[k0+31]; the last K % 32 values of a row stay in order. Read as 32-bit lanes, lane i
 * of a group is (w[k0+i] in its low half, w[k0+16+i] in its high half): a shift left by 16 gives
 * the first as F32, a mask of the high half the second (two plain ALU operations per 32 weights,
 * where widening 16-bit lanes takes a shuffle per 16), and the kernels FMA them with x[k0..+15]
 * then x[k0+16..+31]: each lane sums in row order, as on F32 weights.
 */
enum { BF16_GROUP = 32 };
/* Where value k of a row of K values sits in the row's pair layout. */
static inline int bf16_pair_pos(int K, int k)
{
    if (k >= K / BF16_GROUP * BF16_GROUP) return k;
    const int j = k % BF16_GROUP;
    return k - j + (j < BF16_GROUP / 2 ? 2 * j : 2 * (j - BF16_GROUP / 2) + 1);
}
/* rows rows of K BF16 values in row order (src) into the pair layout (dst; not overlapping). */
void bf16_pack_rows(const uint16_t *src, size_t rows, int K, uint16_t *dst);

/*
 * Batch-1 decode (one input row; up to kernels_far_m, below) over at least kernels_far_rows weight
 * rows reads them as four streams far apart: a block of four rows takes rows n, n + q, n + 2q and
 * n + 3q (q = N / 4), each stream prefetched kernels_far_pf_bytes ahead. An AMD core keeps more
 * reads in flight for four distant streams than for one (2 cores of a Zen 5: 62-71 GB/s for four
 * adjacent rows, 83-87 for four far streams), and so does the device machine's Intel Xeon with
 * the prefetches 1,536 bytes ahead (2 threads, 130m BF16 0.70 of one stream's time, 370m 0.82;
 * docs/performance.md "Far streams on Intel too"; an earlier Xeon, one round each, had favoured
 * one stream). Each output is still its own dot product in the same order, so the grouping
 * changes no bits. kernels_get() sets it: FAR_MIN_ROWS on every CPU; SS_FAR_STREAMS=1|0 forces
 * it on or off.
 * Tests set it directly (before any thread runs a kernel).
 */
#define FAR_MIN_ROWS 16
extern int kernels_far_rows;
/*
 * How far ahead, in bytes, gemm_small's blocks on four far streams (F32, BF16, F16) prefetch each
 * stream: FAR_PF_BYTES (24 lines), whatever the row's length. One row ahead (before) was 8 KB a
 * stream at 1.4b in F32 and 4 KB in BF16, and a core's far streams ran slower the farther ahead
 * they were asked for: the AMD host's 2 threads on K = 2048 BF16 rows read 60 GB/s 4 KB ahead,
 * 69 at 1.5 KB (370m F32 decode 0.89 of the time, 1.4b BF16 0.85; docs/performance.md "The far
 * streams' prefetch distance"). SS_FAR_PF_BYTES=0 (one row) or 64..65536 (whole lines) sets it
 * at the first kernels_get(); benchmarks flip it (statesoup-decode-ab --compare farpf). The
 * q8 rows layout's far streams (kernels_vnni.c) still prefetch FAR_PF_ROWS rows ahead.
 */
#define FAR_PF_BYTES 1536
#define FAR_PF_ROWS  1
extern int kernels_far_pf_bytes;
/*
 * Up to how many input rows gemm_small reads the weight rows as four far streams when they are
 * on: as many as one block of input rows holds (AVX-512 4, AVX2 2), each stream prefetched ahead
 * as the one-row blocks do. Decode steps of 2-4 streams are bound by the memory as batch-1 is
 * (130m, 2 threads, AMD: 0.66-0.86 of the time, docs/performance.md). The same bits, as for one
 * row. SS_FAR_M=1 keeps them to one input row (before), for measuring.
 */
extern int kernels_far_m;
/*
 * Whether the batch-1 kernels' prefetches of the weight streams ahead (the one-row blocks of
 * gemm_small, F32 / BF16 / F16, and the q8p panels of gemv_q8p_a8) are non-temporal
 * (prefetchnta) rather than into L2 (prefetcht1). A token streams every weight once: on the
 * AMD host, lines fetched into L2 are evicted again into L3 (a victim cache), and a token's
 * 145-743 MB passing through the caches that way cost 4-15 % of a batch-1 step (BF16 130m
 * 0.85-0.88 of the step's time with non-temporal prefetches, 370m 0.86-0.91, 1.4b 0.95; q8
 * 0.92-0.94; F32 0.96-0.98; docs/performance.md). No arithmetic changes. kernels_get() sets it
 * on AMD CPUs, off elsewhere (an Intel Xeon ran 1.1-3x slower with it: its non-temporal lines
 * go to L1 only); SS_PF_NTA=1|0 forces it. Tests set it directly.
 */
extern int kernels_pf_nta;
/* How many weight rows ahead gemm_small's one-row blocks (F32, BF16, F16) prefetch the rows of
 * one stream (far streams off: SS_FAR_STREAMS=0): 8 (PF1_ROWS); SS_PF1_ROWS=4..64 (a multiple
 * of 4) sets it, statesoup-decode-ab --compare pfrows flips it, for measuring (BF16's rows hold
 * half the bytes of F32's, so 8 rows ahead is half as far in memory). The same bits. */
extern int kernels_pf1_rows;
/* gemm_small's next-block prefetches spread over the blocks of input rows (gs_pf_rows); 0: all
 * four rows in each block (before; SS_PF_SPREAD=0|1, for measuring). */
extern int kernels_pf_spread;
/* gemm_small from 2 to 16 input rows in chunks of k (kernels_simd.h gs_chunk); 0: all of K at
 * once. The same bits either way. kernels_get() sets it on AMD CPUs (0.87-0.98 of the time at
 * 8-16 streams), off elsewhere (a Xeon: 0.97-1.07, docs/performance.md);
 * SS_K_CHUNKS=0|1 forces it. */
extern int kernels_k_chunks;
/* A prefetch of a weight stream ahead of its loads: non-temporal or into L2 (kernels_pf_nta). */
static inline void prefetch_weights(const void *p)
{
    if (kernels_pf_nta)
        __builtin_prefetch(p, 0, 0);
    else
        __builtin_prefetch(p, 0, 2);
}

/*
 * The same for the transposed products (gemm_t, gemm_t_bf16, gemm_t_f16) at one input row: a
 * pass over four rows of Wt [K][N] (GT_KB) reads the N columns of those rows, one stream. Kept
 * column-blocked instead (the far layout: FAR_T_BLOCKS blocks of N / FAR_T_BLOCKS columns, each
 * block [K][N / FAR_T_BLOCKS] contiguous over all K rows), the pass reads four streams K N / 4
 * values apart; each output is still one chain over k in order (the same bits). A model loaded
 * while kernels_far_rows is on (at most FAR_MIN_ROWS) keeps its transposed matrices so when N is
 * a multiple of FAR_T_BLOCKS x 16 (Mamba-1's out_proj: d_model); far_t_width gives the block
 * width (0: the plain layout). kernels_far_t = 1 or 0 (SS_FAR_T, read by kernels_get()) decides
 * it alone instead; -1 (the default) follows kernels_far_rows.
 */
#define FAR_T_BLOCKS 4
extern int kernels_far_t;
static inline int far_t_width(int N)
{
    const int on = kernels_far_t < 0 ? kernels_far_rows <= FAR_MIN_ROWS : kernels_far_t;
    return on && N % (FAR_T_BLOCKS * 16) == 0 ? N / FAR_T_BLOCKS : 0;
}

/*
 * The one-token Mamba-1 scan (decode): 1 (the default) computes softplus(dt) and SiLU(z) of up to
 * 128 channels ahead of their updates and runs 4 channels' updates together, step by step
 * (kernels_simd.h scan1_step); 0 runs the previous kernel, one channel after another. The same
 * bits either way; kept for measuring (SS_SCAN_AHEAD=1|0, statesoup-decode-ab --compare scan).
 */
extern int kernels_scan_ahead;
/*
 * How many channels ahead of its updates the one-token scan (scan1_step) prefetches the state
 * and A rows it will read (a multiple of 16; 0: none). Each thread's channels of a layer are
 * two runs of a few KB to 100 KB that every other matrix of the token has pushed out of the
 * caches, too short for the hardware prefetchers to catch: one core scanning 768 channels
 * after 6 MB of other reads took 7.5-10 us, prefetching 16-128 channels ahead 5.2-5.9 us (in
 * cache: 2.9-3.9). Default 32; SS_SCAN_PF sets it, statesoup-decode-ab --compare scanpf flips
 * it. The same bits.
 */
extern int kernels_scan_pf;
/*
 * The small GEMM's 4 x 4 blocks (gemm_small*, AVX-512): 1 (the default) reduces the block's 16
 * accumulators together (45 vector operations, kernels_avx512.c hsum_4x4), 0 one at a time; the
 * same bits. 16-stream decode's dt_proj (K = 48) spent a third of its time on these. Kept for
 * measuring (SS_HSUM4X4=1|0; statesoup-decode-ab --compare scan flips it with the above).
 */
extern int kernels_hsum_4x4;
/*
 * Far streams of gemv_q8p_a8 (VNNI): 1, 2 or 4 panels side by side (SS_Q8P_STREAMS); 4 on every
 * CPU. On this AMD host, one model instance, 2 threads, one stream (statesoup-decode-ab, four
 * streams / one, docs/performance.md "Four q8p streams"): 370m q8 0.89-0.98, 130m 0.96-1.01; on
 * the device's Xeon, four / two: 0.888 at 370m, 0.982 at 130m (2 threads), level at 16.
 */
extern int kernels_q8p_streams;

/*
 * 8-bit weights: a matrix [N, K] is stored as int8 values q[N][K] (row-major, as the checkpoint)
 * and one F32 scale per block of Q8_BLOCK consecutive values of a row, s[N][q8_blocks(K)] (the
 * last block of a row may be short): w[n][k] = s[n][k / Q8_BLOCK] * q[n][k]. Symmetric: the scale
 * of a block is its largest |w| / 127, q = round(w / scale) in [-127, 127].
 */
#define Q8_BLOCK 32
static inline int q8_blocks(int K)
{
    return (K + Q8_BLOCK - 1) / Q8_BLOCK;
}
/* Quantise one row of K F32 weights into q and its scales s. -1 (nothing written past what was
 * read) if a weight is not finite, else 0. */
int q8_quantize_row(const float *w, int K, int8_t *q, float *s);

/*
 * The q8k layout: a matrix W [N, K] quantised exactly as the row layout above (q8_quantize_row per
 * output n: one scale per block of Q8_BLOCK consecutive k), kept transposed for products over a
 * range of k (kernels.h gemm_t's use) with integer dot products:
 *   values: Kp / 4 rows (Kp = K rounded up to Q8_BLOCK) of N groups of 4 bytes; byte j of group
 *           n in row r is q[n][4r + j] + 128 as an unsigned byte (128 for k >= K): the four
 *           consecutive k of one output that one lane of vpdpbusd multiplies (unsigned weights
 *           against signed activations; sum (q + 128) q_x = sum q q_x + 128 sum q_x, the last
 *           term once per activation block);
 *   scales: s[b][n], a row of N floats (4N bytes) after each block's values.
 * Block b (Q8K_ROWS rows of 4N bytes) at W + b * Q8K_ROWS * 4N: its Q8_BLOCK / 4 rows of values,
 * then its scales. A range of outputs, or a segment [k0, k1) of a product (segments start on a
 * block), reads one run of memory per block: the scales stream with the values (read as a
 * second stream beside them the short products ran 7-15 % slower, docs/performance.md "The q8p
 * scales in the panels' stream").
 */
#define Q8K_ROWS (Q8_BLOCK / 4 + 1)
/* Bytes of the layout (values and scales) for W [N, K]. */
static inline size_t q8k_bytes(int N, int K)
{
    return (size_t)q8_blocks(K) * Q8K_ROWS * 4 * (size_t)N;
}
/* The values of input k's row (k % 4 == 0) and the scales of block b, in a q8k layout whose rows
 * are ldw bytes (4N), from W (W + 4 n0: output n0's, the same offset in both) */
static inline const uint8_t *q8k_vals(const uint8_t *W, size_t ldw, int k)
{
    return W + ((size_t)(k / Q8_BLOCK) * Q8K_ROWS + (size_t)(k % Q8_BLOCK / 4)) * ldw;
}
static inline const float *q8k_scl(const uint8_t *W, size_t ldw, int b)
{
    return (const float *)(const void *)(W + ((size_t)b * Q8K_ROWS + Q8_BLOCK / 4) * ldw);
}
/* Output n's quantised row (q [K], s [q8_blocks(K)], as q8_quantize_row wrote them) into the
 * layout at W (the padding past K included). */
void q8k_put_row(uint8_t *W, int N, int K, int n, const int8_t *q, const float *s);
/* The weight q[n][k] of the layout (what the kernels multiply). */
static inline int q8k_at(const uint8_t *W, int N, int n, int k)
{
    return (int)q8k_vals(W, 4 * (size_t)N, k - k % 4)[4 * (size_t)n + (size_t)(k % 4)] - 128;
}

/*
 * The q8p layout (--weights q8's matrices used by output columns, y = W x: in_proj, the logits
 * head, ...): W [N, K] cut into panels of Q8P_W outputs, each panel a q8k matrix of Q8P_W
 * outputs (the last one padded with zero weights and scales): panel c at W + c q8p_panel_bytes(K),
 * per block 8 rows of 4 inputs of 4 Q8P_W bytes each and a row of Q8P_W scales. The quantised
 * values are the row layout's.
 * A range of outputs reads one run of memory per panel, and the kernels keep outputs in lanes
 * (gemv_t_q8ka8, gemm_t_q8k): a block's 32 products of one output are summed in one int32 lane
 * before they are scaled. The row layout's one-row kernel (gemv_q8a8) spends five vector
 * operations per 64 weights on the signs, the conversion and the scales and fell behind the
 * memory (docs/performance.md).
 */
#define Q8P_W 64
static inline size_t q8p_panel_bytes(int K)
{
    return q8k_bytes(Q8P_W, K);
}
static inline int q8p_panels(int N)
{
    return (N + Q8P_W - 1) / Q8P_W;
}
/* How far ahead (bytes of a panel's stream) the q8p one-row kernels prefetch into L2. */
#define Q8P_PF 8192
/* gemv_q8p_a8 of a kernel set without a kernel of its own: a panel's run of outputs at a time
 * through its gemv_t_q8ka8. */
void q8p_gemv_by_panels(void (*gemv_t)(const struct q8_act *, const uint8_t *, size_t, int,
                                       float *),
                        const struct q8_act *x, const uint8_t *W, int lo, int hi, float *Y);
/* The whole panels [*c0, *c1) of outputs [lo, hi), for a kernel that takes panels whole: the
 * runs before and after them computed here through gemv_t (all of [lo, hi) when it holds no
 * whole panel, or K is 0: then 0 is returned, else 1). */
int q8p_edges(void (*gemv_t)(const struct q8_act *, const uint8_t *, size_t, int, float *),
              const struct q8_act *x, const uint8_t *W, int lo, int hi, float *Y, int *c0,
              int *c1);

/*
 * An activation row quantised for gemv_q8a8: per block of Q8_BLOCK values one scale
 * s = max|x| / 127 and q = round(x / s) in [-127, 127] (symmetric, as the weights), kept as the
 * signed values, their magnitudes (the unsigned operand of the integer dot products) and a sign
 * bit per value; every array zero-padded to whole chunks of 64 values (Q8_CHUNK), so kernels
 * read whole vectors. A non-finite x makes its block's scale NaN (the outputs then are NaN, as
 * the F32 path's would be).
 */
#define Q8_CHUNK 64
typedef struct q8_act {
    int K;
    int8_t *q;     /* [Kp], Kp = K rounded up to Q8_CHUNK */
    uint8_t *aq;   /* [Kp] |q| */
    uint64_t *neg; /* [Kp / 64]: bit k % 64 of neg[k / 64] = q[k] < 0 */
    float *s;      /* scales, 0 past the last block up to a multiple of 16 blocks */
} q8_act;
/* Bytes q8_act_init needs for rows of up to K values. */
size_t q8_act_bytes(int K);
/* Point a's arrays into mem (q8_act_bytes(Kmax) bytes, 64-byte aligned) for rows of K <= Kmax. */
void q8_act_init(q8_act *a, void *mem, int K);
/* Quantise x[K] into a (K as given to q8_act_init), the padding included. */
void q8_act_quantize(q8_act *a, const float *x);
/* Zero a's padding past K (for the kernels' quantisers, after writing the values). */
void q8_act_pad(q8_act *a);

/* Transpose [C, K] into [C/16][K][16] blocks (C % 16 == 0). dst has C*K floats. */
void kernels_block16(const float *src, int C, int K, float *dst);

/*
 * One output n of the q8k products written out: gemv_t_q8ka8 (8-bit activations x) and
 * gemm_t_q8k (one F32 input row x of K values). The generic kernels are these; the SIMD ones
 * run them for their last N % VW outputs, so every set gives the same bits.
 */
static inline float q8k_out_a8(const q8_act *x, const uint8_t *W, size_t ldw, int n)
{
    const int K = x->K, nb = q8_blocks(K);
    float acc = 0;
    for (int b = 0; b < nb; b++) {
        int32_t isum = 0;
        for (int k = b * Q8_BLOCK; k < (b + 1) * Q8_BLOCK && k < K; k++)
            isum += ((int32_t)q8k_vals(W, ldw, k - k % 4)[4 * (size_t)n + k % 4] - 128) * x->q[k];
        acc = fmaf((float)isum, q8k_scl(W, ldw, b)[n] * x->s[b], acc);
    }
    return acc;
}
static inline float q8k_out_f32(const float *x, int K, const uint8_t *W, size_t ldw, int n)
{
    const int nb = q8_blocks(K);
    float acc = 0;
    for (int b = 0; b < nb; b++) {
        float t = 0;
        for (int k = b * Q8_BLOCK; k < (b + 1) * Q8_BLOCK && k < K; k++)
            t = fmaf((float)((int)q8k_vals(W, ldw, k - k % 4)[4 * (size_t)n + k % 4] - 128), x[k],
                     t);
        acc = fmaf(t, q8k_scl(W, ldw, b)[n], acc);
    }
    return acc;
}

#endif
