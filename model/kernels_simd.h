/*
 * kernels_simd.h - the SIMD kernels, written once over a small set of vector operations and
 * included by kernels_avx2.c (8 lanes) and kernels_avx512.c (16 lanes), each of which defines
 * the operations below with its intrinsics and is compiled for its ISA. Not a public header.
 *
 * Required before inclusion:
 *   VF, VW (lanes, 8 or 16), VZERO(), VLOAD(p), VSTORE(p, v), VSET1(f), VFMA(a, b, c) = a*b + c,
 *   VMAX(a, b), VMIN(a, b), VDIV(a, b), VEQ_MASK(a, b) (bit i set where lane i of a equals
 *   that of b, ordered: NaN equals nothing), VHSUM(v), VHSUM_T(a) (lane i = the sum of a[i]'s
 *   lanes for VW vectors, as a tree of adjacent pairs), optionally VHSUM_4X4(a, Y, ldy)
 *   (Y[j ldy + i] = VHSUM(a[4 i + j]) for i, j < 4, the same bits), VEXP_RAW(x) (exp of x
 *   clamped to a safe range), VROUND(x) and VLDEXP(p, n) (for exp_raw_n below: VEXP_RAW of n
 *   vectors, step by step across them, the same bits),
 *   VABS(v), VLOAD_BF16(p) / VLOAD_F16(p) (VW 16-bit values widened to F32), VBF16_LO(p) /
 *   VBF16_HI(p) (2 VW BF16 values read as VW 32-bit lanes: each lane's low / high half as F32),
 *   VLOAD_I8(p) (VW
 *   int8 values converted to F32), and KPREFIX
 *   (name prefix). kernels.h provides the scalar bf16_to_f32 / f16_to_f32.
 * Arithmetic uses GCC vector operators (+, -, *) on VF.
 */

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#define KCAT2(a, b) a##b
#define KCAT(a, b)  KCAT2(a, b)
#define KFN(name)   KCAT(KPREFIX, name)

enum { NB = 16 / VW }; /* vectors per block of 16 channels */

/* How many weight rows ahead the one-row (batch-1) kernels prefetch into L2 (PF1_ROWS..+3). */
#ifndef PF1_ROWS
#define PF1_ROWS 8
#endif
/* How far ahead a one-row block prefetches each of its rows (in elements of W, wsize bytes each):
 * kernels_pf1_rows rows when the four rows are adjacent (rs == K; PF1_ROWS unless SS_PF1_ROWS
 * says), kernels_far_pf_bytes along each stream when they are far (0: one row, as before). */
static inline size_t gs_pf_ahead(size_t rs, int K, size_t wsize)
{
    if (rs == (size_t)K) return (size_t)kernels_pf1_rows * (size_t)K;
    return kernels_far_pf_bytes ? (size_t)kernels_far_pf_bytes / wsize : (size_t)K;
}

/*
 * VEXP_RAW of the n vectors x[0..n-1] in place (n <= 16), each step for all n before the next:
 * the same arithmetic per lane as exp_raw (Cody-Waite reduction with the constants negated, which
 * is exact, Taylor to r^7, the scale by 2^k), so the same bits; n dependency chains interleaved
 * in program order (see scan1_step). Needs VROUND and VLDEXP.
 */
static inline __attribute__((always_inline)) void KFN(exp_raw_n)(VF *x, int n)
{
    VF k[16], p[16];
#pragma GCC unroll 16
    for (int i = 0; i < n; i++) k[i] = VROUND(x[i] * VSET1(1.44269504088896341f));
#pragma GCC unroll 16
    for (int i = 0; i < n; i++) x[i] = VFMA(k[i], VSET1(-0.693359375f), x[i]);
#pragma GCC unroll 16
    for (int i = 0; i < n; i++) x[i] = VFMA(k[i], VSET1(2.12194440e-4f), x[i]);
#pragma GCC unroll 16
    for (int i = 0; i < n; i++) p[i] = VFMA(VSET1(1.0f / 5040), x[i], VSET1(1.0f / 720));
    static const float c[6] = {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
#pragma GCC unroll 6
    for (int j = 0; j < 6; j++)
#pragma GCC unroll 16
        for (int i = 0; i < n; i++) p[i] = VFMA(p[i], x[i], VSET1(c[j]));
#pragma GCC unroll 16
    for (int i = 0; i < n; i++) x[i] = VLDEXP(p[i], k[i]);
}
#define VEXP_RAW_N(x, n) KFN(exp_raw_n)((x), (n))

/* x clamped to where exp_raw is safe */
static inline VF KFN(exp_arg)(VF x)
{
    return VMIN(VMAX(x, VSET1(-87.3f)), VSET1(88.3f));
}

static inline VF KFN(exp)(VF x)
{
    return VEXP_RAW(KFN(exp_arg)(x));
}

/* log1p(u) for u in [0, 1]: 2 atanh(u / (2 + u)), series to z^13 (|z| <= 1/3). */
static inline VF KFN(log1p01)(VF u)
{
    VF z = VDIV(u, u + VSET1(2.0f));
    VF z2 = z * z;
    VF p = VSET1(1.0f / 13);
    p = VFMA(p, z2, VSET1(1.0f / 11));
    p = VFMA(p, z2, VSET1(1.0f / 9));
    p = VFMA(p, z2, VSET1(1.0f / 7));
    p = VFMA(p, z2, VSET1(1.0f / 5));
    p = VFMA(p, z2, VSET1(1.0f / 3));
    p = VFMA(p, z2, VSET1(1.0f));
    return VSET1(2.0f) * z * p;
}

/* softplus(x) = max(x, 0) + log1p(exp(-|x|)); equals torch's thresholded form to float precision */
static inline VF KFN(softplus)(VF x)
{
    VF u = KFN(exp)(VZERO() - VABS(x));
    return VMAX(x, VZERO()) + KFN(log1p01)(u);
}

static inline VF KFN(silu)(VF x)
{
    return VDIV(x, VSET1(1.0f) + KFN(exp)(VZERO() - x));
}

/* ---- Mamba-1 selective scan ------------------------------------------------------------------ */

/* Channels whose exps a one-token scan computes together, and channels whose softplus(dt) and
 * SiLU(z) it computes ahead of their updates (scan1_step). */
#ifndef SCAN_G
#define SCAN_G 4
#endif
#ifndef SCAN_AHEAD
#define SCAN_AHEAD 128
#endif
/* Tokens whose softplus(dt) and SiLU(z) the many-token scan computes ahead (scan1). */
#ifndef SCAN_TAHEAD
#define SCAN_TAHEAD 32
#endif

/*
 * One token (decode): vectorised over the 16 states of a channel instead, which needs no
 * transposition of the state (for a single token the transposes would cost more than the math).
 * Where the time went (one core, 768 channels, 3.9-5.4 us a call): each channel's update is one
 * long chain (dt A, the exp's ~12 dependent steps, the state, the output), and every block of VW
 * channels began with softplus(dt), itself ~100 cycles of dependent steps (an exp, a division):
 * one block's updates filled the out-of-order window, so the next block's softplus started only
 * when they retired, and the FP units idled at every block. So the softplus and SiLU of
 * SCAN_AHEAD channels come first (independent vectors, back to back), then the updates, SCAN_G
 * channels through each step of the chain together (VEXP_RAW_N). The arithmetic, and so the bits,
 * are the same as one channel at a time.
 */
static void KFN(scan1_step)(const scan1_args *a)
{
    enum { N = 16, G = SCAN_G, AH = SCAN_AHEAD };
    const int pf = kernels_scan_pf;
    VF B[NB], C[NB];
    for (int v = 0; v < NB; v++) {
        B[v] = VLOAD(a->B + v * VW);
        C[v] = VLOAD(a->C + v * VW);
    }
    int i = a->c0;
    for (; i + VW <= a->c1;) {
        /* softplus(dt), dt x and SiLU(z) of the next channels, vectorised across channels */
        float dt[AH] __attribute__((aligned(64))), dx[AH] __attribute__((aligned(64)));
        float gz[AH] __attribute__((aligned(64)));
        const int n = (a->c1 - i) / VW * VW < AH ? (a->c1 - i) / VW * VW : AH;
        for (int b = 0; b < n; b += VW) {
            const VF dtv = KFN(softplus)(VLOAD(a->dt + i + b));
            VSTORE(dt + b, dtv);
            VSTORE(dx + b, dtv * VLOAD(a->x + i + b)); /* lane c: dt[c] x[c], as a scalar */
            if (a->dsum) VSTORE(a->dsum + i + b, VLOAD(a->dsum + i + b) + dtv);
            VSTORE(gz + b, KFN(silu)(VLOAD(a->z + i + b)));
        }
        /* VW channels at a time: their states, then their outputs in one vector */
        for (int b = 0; b < n; b += VW, i += VW) {
            VF acc[VW];
            float *st = a->s + (size_t)i * N;
            const float *A = a->A + (size_t)i * N;
            if (pf && i + pf < a->c1) /* the state and A rows pf channels ahead */
                for (int q = 0; q < VW; q++) {
                    __builtin_prefetch(st + (size_t)(pf + q) * N, 1, 3);
                    __builtin_prefetch(A + (size_t)(pf + q) * N, 0, 3);
                }
            for (int c0 = 0; c0 < VW; c0 += G) {
                VF e[G * NB];
                /* exp(dt A): dt A <= 0 (softplus >= 0, A = -exp(A_log)), so KFN(exp)'s upper
                 * clamp is the identity and is left out (a NaN becomes -87.3 at the max) */
                for (int g = 0; g < G; g++)
                    for (int v = 0; v < NB; v++)
                        e[g * NB + v] =
                            VMAX(VSET1(dt[b + c0 + g]) * VLOAD(A + (c0 + g) * N + v * VW),
                                 VSET1(-87.3f));
                VEXP_RAW_N(e, G * NB);
                for (int g = 0; g < G; g++) {
                    const VF dxc = VSET1(dx[b + c0 + g]);
                    float *sg = st + (c0 + g) * N;
                    VF q = VZERO();
                    for (int v = 0; v < NB; v++) {
                        const VF sv = VFMA(e[g * NB + v], VLOAD(sg + v * VW), dxc * B[v]);
                        VSTORE(sg + v * VW, sv);
                        q = VFMA(sv, C[v], q);
                    }
                    acc[c0 + g] = q;
                }
            }
            /* the VW channels' sums over their states, one per lane */
            const VF y = VFMA(VLOAD(a->D + i), VLOAD(a->x + i), VHSUM_T(acc));
            VSTORE(a->y + i, y * VLOAD(gz + b));
        }
    }
    for (; i < a->c1; i++) { /* channels left over */
        const float dt = a->dt[i] > 20.0f ? a->dt[i] : log1pf(expf(a->dt[i]));
        if (a->dsum) a->dsum[i] += dt;
        const float x = a->x[i];
        const VF dtv = VSET1(dt), dxv = VSET1(dt * x);
        float *st = a->s + (size_t)i * N;
        const float *A = a->A + (size_t)i * N;
        VF acc = VZERO();
        for (int v = 0; v < NB; v++) {
            VF sv = VFMA(KFN(exp)(dtv * VLOAD(A + v * VW)), VLOAD(st + v * VW), dxv * B[v]);
            VSTORE(st + v * VW, sv);
            acc = VFMA(sv, C[v], acc);
        }
        const float z = a->z[i];
        a->y[i] = (VHSUM(acc) + a->D[i] * x) * (z / (1.0f + expf(-z)));
    }
}

/* The one-token kernel before scan1_step (one channel after another, softplus and SiLU at each
 * block of VW): the same bits, kept for measuring against it (kernels.h kernels_scan_ahead). */
static void KFN(scan1_step_plain)(const scan1_args *a)
{
    enum { N = 16 };
    VF B[NB], C[NB];
    for (int v = 0; v < NB; v++) {
        B[v] = VLOAD(a->B + v * VW);
        C[v] = VLOAD(a->C + v * VW);
    }
    int i = a->c0;
    for (; i + VW <= a->c1; i += VW) {
        float dt[VW] __attribute__((aligned(64)));
        VF acc[VW];
        const VF dtv = KFN(softplus)(VLOAD(a->dt + i)), xv = VLOAD(a->x + i);
        VSTORE(dt, dtv);
        if (a->dsum) VSTORE(a->dsum + i, VLOAD(a->dsum + i) + dtv);
        for (int c = 0; c < VW; c++) {
            const VF dtc = VSET1(dt[c]), dxc = VSET1(dt[c] * a->x[i + c]);
            float *st = a->s + (size_t)(i + c) * N;
            const float *A = a->A + (size_t)(i + c) * N;
            acc[c] = VZERO();
            for (int v = 0; v < NB; v++) {
                VF sv = VFMA(KFN(exp)(dtc * VLOAD(A + v * VW)), VLOAD(st + v * VW), dxc * B[v]);
                VSTORE(st + v * VW, sv);
                acc[c] = VFMA(sv, C[v], acc[c]);
            }
        }
        const VF y = VFMA(VLOAD(a->D + i), xv, VHSUM_T(acc));
        VSTORE(a->y + i, y * KFN(silu)(VLOAD(a->z + i)));
    }
    if (i < a->c1) { /* channels left over: scan1_step's code for them */
        scan1_args b = *a;
        b.c0 = i;
        KFN(scan1_step)(&b);
    }
}

static void KFN(scan1)(const scan1_args *a)
{
    if (a->N == 16 && a->T == 1) {
        if (kernels_scan_ahead)
            KFN(scan1_step)(a);
        else
            KFN(scan1_step_plain)(a);
        return;
    }
    if (a->N != 16 || !a->A16 || (a->c0 % 16) || (a->c1 % 16)) {
        kernels_generic()->scan1(a);
        return;
    }
    enum { N = 16 };
    for (int ch = a->c0; ch < a->c1; ch += 16) {
        float buf[N][16] __attribute__((aligned(64)));
        VF s[N][NB], A[N][NB], Dv[NB];
        /* state rows [ch + c][n] -> vectors over channels, one per n */
        for (int c = 0; c < 16; c++)
            for (int n = 0; n < N; n++) buf[n][c] = a->s[(size_t)(ch + c) * N + n];
        const float *A16 = a->A16 + (size_t)(ch / 16) * N * 16;
        for (int n = 0; n < N; n++)
            for (int v = 0; v < NB; v++) {
                s[n][v] = VLOAD(&buf[n][v * VW]);
                A[n][v] = VLOAD(A16 + n * 16 + v * VW);
            }
        for (int v = 0; v < NB; v++) Dv[v] = VLOAD(a->D + ch + v * VW);
        for (int t0 = 0; t0 < a->T; t0 += SCAN_TAHEAD) {
            /* softplus(dt) and SiLU(z) of the next tokens first (as scan1_step does for its
             * channels; one core, 64 tokens x 768 channels: 5.3 -> 3.3 ns a channel-token) */
            float sp[SCAN_TAHEAD][16] __attribute__((aligned(64)));
            float gz[SCAN_TAHEAD][16] __attribute__((aligned(64)));
            const int t1 = a->T - t0 < SCAN_TAHEAD ? a->T : t0 + SCAN_TAHEAD;
            for (int t = t0; t < t1; t++)
                for (int v = 0; v < NB; v++) {
                    const int col = ch + v * VW;
                    const VF dt = KFN(softplus)(VLOAD(a->dt + (size_t)t * a->ldd + col));
                    VSTORE(&sp[t - t0][v * VW], dt);
                    if (a->dsum) VSTORE(a->dsum + col, VLOAD(a->dsum + col) + dt);
                    VSTORE(&gz[t - t0][v * VW], KFN(silu)(VLOAD(a->z + (size_t)t * a->ldz + col)));
                }
            for (int t = t0; t < t1; t++) {
                const float *Bt = a->B + (size_t)t * a->ldbc, *Ct = a->C + (size_t)t * a->ldbc;
                for (int v = 0; v < NB; v++) {
                    const int col = ch + v * VW;
                    const VF dt = VLOAD(&sp[t - t0][v * VW]);
                    VF x = VLOAD(a->x + (size_t)t * a->ldx + col);
                    VF dx = dt * x;
                    /* exp(dt A) SCAN_G states at a time, step by step (VEXP_RAW_N; upper clamp
                     * left out as in scan1_step) */
                    for (int n0 = 0; n0 < N; n0 += SCAN_G) {
                        VF e[SCAN_G];
                        for (int g = 0; g < SCAN_G; g++)
                            e[g] = VMAX(dt * A[n0 + g][v], VSET1(-87.3f));
                        VEXP_RAW_N(e, SCAN_G);
                        for (int g = 0; g < SCAN_G; g++)
                            s[n0 + g][v] = VFMA(e[g], s[n0 + g][v], dx * VSET1(Bt[n0 + g]));
                    }
                    /* y's sum over the states in scan1_step's order (see there), so that a token
                     * gives the same bits whether its span has one token or many: lane l of the
                     * step's accumulator is q_l = s_l C_l (+ s_{l+VW} C_{l+VW} with 8 lanes), and
                     * VHSUM_T sums q_0..q_{VW-1} as a tree of adjacent pairs. The tree is built as
                     * the q_l come (a binary counter: each pair is summed as soon as it is whole),
                     * which keeps five partial sums live instead of VW. */
                    VF part[5];
                    int np = 0;
                    for (int l = 0; l < VW; l++) {
                        VF q = VFMA(s[l][v], VSET1(Ct[l]), VZERO());
                        for (int u = 1; u < NB; u++)
                            q = VFMA(s[u * VW + l][v], VSET1(Ct[u * VW + l]), q);
                        for (int h = l; h & 1; h >>= 1) q = part[--np] + q;
                        part[np++] = q;
                    }
                    VSTORE(a->y + (size_t)t * a->ldy + col,
                           VFMA(Dv[v], x, part[0]) * VLOAD(&gz[t - t0][v * VW]));
                }
            }
        }
        for (int n = 0; n < N; n++)
            for (int v = 0; v < NB; v++) VSTORE(&buf[n][v * VW], s[n][v]);
        for (int c = 0; c < 16; c++)
            for (int n = 0; n < N; n++) a->s[(size_t)(ch + c) * N + n] = buf[n][c];
    }
}

/* ---- Mamba-2 recurrence ------------------------------------------------------------------- */

/* One token of one head (kernels.h): VW rows of S at a time, each a dot product over N in
 * vectors, the VW sums transposed into one vector of y. */
static void KFN(scan2)(float *S, int P, int N, float dA, float dt, const float *x, const float *B,
                       const float *C, float Dh, float *y)
{
    if (N % VW || P % VW) {
        kernels_generic()->scan2(S, P, N, dA, dt, x, B, C, Dh, y);
        return;
    }
    const VF dAv = VSET1(dA);
    for (int p0 = 0; p0 < P; p0 += VW) {
        VF acc[VW];
        for (int c = 0; c < VW; c++) {
            const VF dx = VSET1(dt * x[p0 + c]);
            float *Sp = S + (size_t)(p0 + c) * N;
            VF a = VZERO();
            for (int n = 0; n < N; n += VW) {
                const VF sv = VFMA(dAv, VLOAD(Sp + n), dx * VLOAD(B + n));
                VSTORE(Sp + n, sv);
                a = VFMA(sv, VLOAD(C + n), a);
            }
            acc[c] = a;
        }
        VSTORE(y + p0, VFMA(VSET1(Dh), VLOAD(x + p0), VHSUM_T(acc)));
    }
}

/* ---- causal depthwise conv + SiLU ----------------------------------------------------------- */

#define KMAX 8
static void KFN(conv)(const conv_args *a)
{
    const int K = a->K;
    if (!a->w16 || K > KMAX || (a->c0 % 16) || (a->c1 % 16)) {
        kernels_generic()->conv(a);
        return;
    }
    for (int ch = a->c0; ch < a->c1; ch += 16) {
        float buf[KMAX][16] __attribute__((aligned(64)));
        VF w[KMAX][NB], W[KMAX][NB], bias[NB];
        for (int c = 0; c < 16; c++)
            for (int k = 0; k < K; k++) buf[k][c] = a->win[(size_t)(ch + c) * K + k];
        const float *w16 = a->w16 + (size_t)(ch / 16) * K * 16;
        for (int k = 0; k < K; k++)
            for (int v = 0; v < NB; v++) {
                w[k][v] = VLOAD(&buf[k][v * VW]);
                W[k][v] = VLOAD(w16 + k * 16 + v * VW);
            }
        for (int v = 0; v < NB; v++) bias[v] = a->bias ? VLOAD(a->bias + ch + v * VW) : VZERO();
        for (int t = 0; t < a->T; t++) {
            for (int v = 0; v < NB; v++) {
                for (int k = 0; k + 1 < K; k++) w[k][v] = w[k + 1][v];
                w[K - 1][v] = VLOAD(a->in + (size_t)t * a->ld_in + ch + v * VW);
                VF acc;
                if (K == 4) { /* kernels_avx512.c's one-token conv's order: the same bits */
                    acc = (W[0][v] * w[0][v] + W[1][v] * w[1][v]) +
                          (W[2][v] * w[2][v] + W[3][v] * w[3][v]);
                    if (a->bias) acc = acc + bias[v];
                } else {
                    acc = bias[v];
                    for (int k = 0; k < K; k++) acc = VFMA(W[k][v], w[k][v], acc);
                }
                VSTORE(a->out + (size_t)t * a->ld_out + ch + v * VW, KFN(silu)(acc));
            }
        }
        for (int k = 0; k < K; k++)
            for (int v = 0; v < NB; v++) VSTORE(&buf[k][v * VW], w[k][v]);
        for (int c = 0; c < 16; c++)
            for (int k = 0; k < K; k++) a->win[(size_t)(ch + c) * K + k] = buf[k][c];
    }
}
#undef KMAX

/* ---- small-M GEMM: Y = X W^T ---------------------------------------------------------------- */

/*
 * A block of 4 weight rows x RX input rows over the whole K, accumulators in named registers
 * (GCC spills arrays of vectors to the stack, which made this 4x slower). The weight rows are
 * read once per block from memory and RX times from L1. Weights are F32, or BF16/F16 widened to
 * F32 in registers as they are loaded (exact: every 16-bit value is a float), so 16-bit
 * checkpoints stream half the bytes. From two input rows on, the loop does enough arithmetic per
 * weight byte that the out-of-order window no longer runs far enough ahead to keep DRAM busy:
 * it prefetches the next block's four rows at the same k (12 KB ahead at K = 768), which took
 * four rows from 34-38 to 42-43 GB/s on two cores. One row needs no help (and gets none).
 */
#define GS_ACC(i, j) a##i##j
#define GS_DECL(i) VF GS_ACC(i, 0) = VZERO(), GS_ACC(i, 1) = VZERO(), GS_ACC(i, 2) = VZERO(), \
                      GS_ACC(i, 3) = VZERO()
#define GS_DECL4 GS_DECL(0); GS_DECL(1); GS_DECL(2); GS_DECL(3) /* all 16 accumulators */
/* The four weight vectors w0..w3 against input row j at k + off. */
#define GS_STEP_AT(j, off)                                                                         \
    do {                                                                                       \
        VF x = VLOAD(X + (size_t)(j) * ldx + k + (off));                                       \
        GS_ACC(0, j) = VFMA(w0, x, GS_ACC(0, j));                                              \
        GS_ACC(1, j) = VFMA(w1, x, GS_ACC(1, j));                                              \
        GS_ACC(2, j) = VFMA(w2, x, GS_ACC(2, j));                                              \
        GS_ACC(3, j) = VFMA(w3, x, GS_ACC(3, j));                                              \
    } while (0)
#define GS_STEP(j) GS_STEP_AT(j, 0)
#define GS_OUT(i, j, WSC)                                                                      \
    do {                                                                                       \
        float sum = VHSUM(GS_ACC(i, j));                                                       \
        for (int kk = k; kk < ke; kk++)                                                        \
            sum += WSC(W[(size_t)(i) * rs + kk]) * X[(size_t)(j) * ldx + kk];                  \
        Y[(size_t)(j) * ldy + (size_t)(i) * ys] = sum;                                         \
    } while (0)
#define GS_OUT4(j, WSC)                                                                        \
    do {                                                                                       \
        GS_OUT(0, j, WSC);                                                                     \
        GS_OUT(1, j, WSC);                                                                     \
        GS_OUT(2, j, WSC);                                                                     \
        GS_OUT(3, j, WSC);                                                                     \
    } while (0)

/* Prefetch at k: the next block's rows (RX > 1, when pf > 0 and NEXT), or each row's stream
 * ahead (RX == 1 or pf < 0 - several input rows on four far streams -, when AHEAD): the
 * conditions say at which k a new cache line of the rows begins. */
#define GS_PREFETCH(RX, NEXT, AHEAD)                                                           \
    do {                                                                                       \
        if (RX > 1 && pf > 0 && (NEXT)) { /* next block's rows in pf's mask (gs_pf_rows) */   \
            if (pf & 1) __builtin_prefetch(W + 4 * (size_t)K + k);                             \
            if (pf & 2) __builtin_prefetch(W + 5 * (size_t)K + k);                             \
            if (pf & 4) __builtin_prefetch(W + 6 * (size_t)K + k);                             \
            if (pf & 8) __builtin_prefetch(W + 7 * (size_t)K + k);                             \
        } else if ((RX == 1 || pf < 0) && (AHEAD)) { /* each row's stream pfa floats ahead */ \
            prefetch_weights(W + pfa + k);                                                     \
            prefetch_weights(W + rs + pfa + k);                                                \
            prefetch_weights(W + 2 * rs + pfa + k);                                            \
            prefetch_weights(W + 3 * rs + pfa + k);                                            \
        }                                                                                      \
    } while (0)
/* The four rows' vectors at k (WLD) against the RX input rows. */
#define GS_WSTEP(WLD, RX)                                                                      \
    do {                                                                                       \
        VF w0 = WLD(W + k), w1 = WLD(W + rs + k);                                              \
        VF w2 = WLD(W + 2 * rs + k), w3 = WLD(W + 3 * rs + k);                                 \
        GS_STEP(0);                                                                            \
        if (RX > 1) GS_STEP(1);                                                                \
        if (RX > 2) GS_STEP(2);                                                                \
        if (RX > 3) GS_STEP(3);                                                                \
    } while (0)
/* The RX input rows' four outputs, one sum at a time (GS_OUT4). */
#define GS_OUTS_EACH(RX, WSC)                                                                  \
    do {                                                                                       \
        GS_OUT4(0, WSC);                                                                       \
        if (RX > 1) GS_OUT4(1, WSC);                                                           \
        if (RX > 2) GS_OUT4(2, WSC);                                                           \
        if (RX > 3) GS_OUT4(3, WSC);                                                           \
    } while (0)
/* A 4 x 4 block's 16 sums at once where the ISA has it (VHSUM_4X4: the same bits as VHSUM),
 * each output's scalar tail (k < K) added after as GS_OUT adds it; kernels_hsum_4x4 = 0 sums
 * them one at a time, for measuring (kernels.h) */
#ifdef VHSUM_4X4
#define GS_OUTS(RX, WSC)                                                                       \
    do {                                                                                       \
        if (RX == 4 && ys == 1 && kernels_hsum_4x4) {                                          \
            const VF acc[16] = {a00, a01, a02, a03, a10, a11, a12, a13,                        \
                                a20, a21, a22, a23, a30, a31, a32, a33};                       \
            VHSUM_4X4(acc, Y, ldy);                                                            \
            for (int j = 0; j < 4 && k < ke; j++)                                              \
                for (int i = 0; i < 4; i++) {                                                  \
                    float sum = Y[(size_t)j * ldy + i];                                        \
                    for (int kk = k; kk < ke; kk++)                                            \
                        sum += WSC(W[(size_t)i * rs + kk]) * X[(size_t)j * ldx + kk];          \
                    Y[(size_t)j * ldy + i] = sum;                                              \
                }                                                                              \
            break;                                                                             \
        }                                                                                      \
        GS_OUTS_EACH(RX, WSC);                                                                 \
    } while (0)
#else
#define GS_OUTS(RX, WSC)                                                                       \
    do {                                                                                       \
        GS_OUTS_EACH(RX, WSC);                                                                 \
    } while (0)
#endif

/* The block's accumulators from / into sums[4 j + i] (a chunk of k at a time: GS_DRIVER). */
#define GS_ACC_IO(RX, OP)                                                                      \
    do {                                                                                       \
        OP(0, 0); OP(1, 0); OP(2, 0); OP(3, 0);                                                \
        if (RX > 1) { OP(0, 1); OP(1, 1); OP(2, 1); OP(3, 1); }                                \
        if (RX > 2) { OP(0, 2); OP(1, 2); OP(2, 2); OP(3, 2); }                                \
        if (RX > 3) { OP(0, 3); OP(1, 3); OP(2, 3); OP(3, 3); }                                \
    } while (0)
#define GS_ACC_LOAD(i, j) GS_ACC(i, j) = sums[4 * (j) + (i)]
#define GS_ACC_SAVE(i, j) sums[4 * (j) + (i)] = GS_ACC(i, j)
/* Blocks run over k in [k0, k1) (X pointing at column k0): from k0 > 0 the sums so far come
 * from sums, and below K (k1 a multiple of VW) they go back there instead of into Y: the same
 * operations in the same order as one run over all of K, so the same bits. */
#define GS_CHUNK_IN(RX)                                                                        \
    if (k0 > 0) GS_ACC_IO(RX, GS_ACC_LOAD)
#define GS_CHUNK_OUT(RX)                                                                       \
    if (k1 < K) {                                                                              \
        GS_ACC_IO(RX, GS_ACC_SAVE);                                                            \
        return;                                                                                \
    }

#define GS_BLOCK(NAME, RX, WT, WLD, WSC)                                                       \
    static void NAME(const float *X, int ldx, const WT *W, int K, size_t rs, float *Y, int ys, \
                     int ldy, int pf, int k0, int k1, VF *sums)                                 \
    {                                                                                          \
        const size_t pfa = gs_pf_ahead(rs, K, sizeof(WT));                                     \
        GS_DECL4;                                                                              \
        GS_CHUNK_IN(RX);                                                                       \
        const int ke = K - k0; /* k from here on counts from k0: W's too, X's is there */      \
        W += k0;                                                                               \
        int k = 0;                                                                             \
        for (; k + VW <= k1 - k0; k += VW) {                                                   \
            GS_PREFETCH(RX, VW == 16 || k % 16 == 0, k % (64 / sizeof(WT)) == 0);              \
            GS_WSTEP(WLD, RX);                                                                 \
        }                                                                                      \
        GS_CHUNK_OUT(RX);                                                                      \
        GS_OUTS(RX, WSC);                                                                      \
    }

/* One weight row against one input row (the N % 4 tail). */
#define GS_DOT(NAME, WT, WLD, WSC)                                                             \
    static float NAME(const WT *a, const float *b, int K)                                      \
    {                                                                                          \
        VF acc = VZERO();                                                                      \
        int k = 0;                                                                             \
        for (; k + VW <= K; k += VW) acc = VFMA(WLD(a + k), VLOAD(b + k), acc);                \
        float sum = VHSUM(acc);                                                                \
        for (; k < K; k++) sum += WSC(a[k]) * b[k];                                            \
        return sum;                                                                            \
    }

/*
 * Decode steps of 2 to 16 streams: the blocks of input rows over four weight rows read all of X's
 * rows once per four weight rows, and once X and the four rows passed the L1 (16 rows x 1536 x 4
 * bytes of X alone is 96 KB) they came from L2 again for every four weight rows. One core in L2
 * (statesoup-kernbench --rows 16 --size 2, F32): K = 384 97 G MAC/s, 768 79, 1536 66, 3072 58.
 * There GS_DRIVER takes K in chunks of GS_KC and the weight rows in tiles of GS_TILE blocks of
 * four: each chunk of X, packed at a stride off multiples of 4 KB, is read for the tile's every
 * block while it stays in L1, the blocks' sums kept in memory from one chunk to the next
 * (GS_CHUNK_IN / OUT: each sum still runs over k in order, so the same bits as one run over all
 * of K). From memory (two cores, --huge): K = 1536 93 -> 109-113 G MAC/s, 2048 87-90 -> 107; K =
 * 768 and 1024 level, so only X and four rows beyond GS_L1_BYTES are chunked; BF16 (whose
 * widening keeps the core busier than X's reloads) level or 3-6 % slower, and the AVX2 blocks of
 * two rows 3-6 % slower in decode steps, so both run over K at once, as do one row and prefill
 * panels (more than 16 rows). Decode steps, F32, 2 threads (statesoup-decode-ab --compare
 * chunks): 370m 0.92-0.96 at 8 streams, 0.97-0.98 at 16; 1.4b 0.92 / 0.87-0.92; 130m level.
 * kernels_k_chunks = 0 (SS_K_CHUNKS=0) turns it off, for measuring.
 */
#define GS_L1_BYTES (64 << 10)
#ifndef GS_KC
#define GS_KC 384
#endif
#ifndef GS_TILE
#define GS_TILE 16
#endif
/* The packed chunk of X's rows: a stride off multiples of 4 KB (X's rows at 1024 or 2048 floats
 * fell in the same L1 sets: K = 1024 chunked 128 G MAC/s in L2 on two cores, 143 at once). */
#define GS_XP_LD (GS_KC + 16)
/* Vectors of sums kept between chunks per block of four weight rows: 16 per block of input rows,
 * up to 4 blocks (AVX-512 only takes chunks). */
#define GS_CHUNK_ACC (4 * 16)
/* The most input rows whose products read the weights as four far streams: one block of them
 * (kernels.h kernels_far_m; AVX2's blocks hold 2). */
static inline int gs_far_m(void)
{
    return VW == 16 || kernels_far_m < 2 ? kernels_far_m : 2;
}

static inline int gs_chunk(int M, int K, size_t wsize)
{
    const size_t l1 = (size_t)M * K * sizeof(float) + 4 * (size_t)K * wsize; /* X and 4 rows */
    return VW == 16 && wsize == sizeof(float) && M >= 2 && M <= 16 && kernels_k_chunks &&
                   l1 > GS_L1_BYTES
               ? GS_KC
               : K;
}

/*
 * The next four weight rows that the block of input rows [m, m + RX) prefetches, the bi-th of the
 * nb blocks of two or more input rows over the same four weight rows (a mask of rows 0..3).
 * Up to 16 input rows (decode) the blocks share them out, row r to block r % nb, so that the
 * requests spread over the four rows' whole time: all four in every block (before) asked for the
 * whole 12 KB (K = 768, F32) in the first quarter of it at 16 streams, more than one core keeps
 * in flight (decode steps at 130m, 2 threads, 16 streams: 0.88-0.93 of the time; 8 streams
 * 0.82-0.88; SS_PF_SPREAD=0 for before). With more (a prefill panel) only the last block
 * prefetches: the current rows are reused by every block of rows first, and fetching the next
 * ones early pushed them out of L1 (one core, 512 x 768 x 1536: 72-79 -> 92-98 GFLOP/s, OpenBLAS
 * 90-99). Prefetching changes no arithmetic.
 */
static inline int gs_pf_rows(int M, int m, int RX, int bi, int nb)
{
    if (M > 16) return m + RX >= M ? 15 : 0;
    if (!kernels_pf_spread) return 15;
    int mask = 0;
    for (int r = 0; r < 4; r++)
        if (r % nb == bi) mask |= 1 << r;
    return mask;
}

/* GS_DRIVER's blocks of input rows over the four weight rows at Wn, k in [k0, k1): X's rows at
 * Xc from column k0 on, the sums kept at ab0 (16 vectors per block of input rows; NULL when K
 * is one chunk). */
#define GS_SUMS(ab0, bi) ((ab0) ? (ab0) + 16 * (bi) : NULL)
#define GS_BLOCKS(B1, B2, B3, B4, Xc, ldc, Wn, Yn, ab0)                                        \
    do {                                                                                       \
        int m = 0, bi = 0;                                                                     \
        if (VW == 16) { /* AVX2 has 16 registers: 8 accumulators at most */                    \
            for (; m + 4 <= M; m += 4, bi++)                                                   \
                B4((Xc) + (size_t)m * (ldc), ldc, Wn, K, rk, (Yn) + (size_t)m * ldy, 1, ldy,   \
                   gs_pf_rows(M, m, 4, bi, nbk), k0, k1, GS_SUMS(ab0, bi));                    \
            if (M - m == 3) {                                                                  \
                B3((Xc) + (size_t)m * (ldc), ldc, Wn, K, rk, (Yn) + (size_t)m * ldy, 1, ldy,   \
                   gs_pf_rows(M, m, 3, bi, nbk), k0, k1, GS_SUMS(ab0, bi));                    \
                break;                                                                         \
            }                                                                                  \
        }                                                                                      \
        for (; m + 2 <= M; m += 2, bi++)                                                       \
            B2((Xc) + (size_t)m * (ldc), ldc, Wn, K, rk, (Yn) + (size_t)m * ldy, 1, ldy,       \
               gs_pf_rows(M, m, 2, bi, nbk), k0, k1, GS_SUMS(ab0, bi));                        \
        if (m < M)                                                                             \
            B1((Xc) + (size_t)m * (ldc), ldc, Wn, K, rk, (Yn) + (size_t)m * ldy, 1, ldy, 1,    \
               k0, k1, GS_SUMS(ab0, bi));                                                      \
    } while (0)

#define GS_DRIVER(NAME, WT, B1, B2, B3, B4, DOT)                                               \
    static void NAME(const float *X, int M, int K, int ldx, const WT *W, int N, float *Y,      \
                     int ldy)                                                                  \
    {                                                                                          \
        const size_t rk = (size_t)K;                                                           \
        const int nbk = VW == 16 ? M / 4 + (M % 4 >= 2) : M / 2; /* blocks of 2+ input rows */  \
        int n = 0;                                                                             \
        if (M >= 1 && M <= gs_far_m() && N >= kernels_far_rows) { /* far streams (kernels.h) */ \
            const int q = N / 4; /* rows n, n + q, n + 2q, n + 3q */                           \
            const size_t rq = (size_t)q * rk;                                                  \
            for (; n < q; n++) {                                                               \
                const WT *Wn = W + (size_t)n * rk;                                             \
                if (M == 1) B1(X, ldx, Wn, K, rq, Y + n, q, ldy, 1, 0, K, NULL);               \
                else if (M == 2) B2(X, ldx, Wn, K, rq, Y + n, q, ldy, -1, 0, K, NULL);         \
                else if (M == 3) B3(X, ldx, Wn, K, rq, Y + n, q, ldy, -1, 0, K, NULL);         \
                else B4(X, ldx, Wn, K, rq, Y + n, q, ldy, -1, 0, K, NULL);                     \
            }                                                                                  \
            n = 4 * q;                                                                         \
        }                                                                                      \
        const int kc = gs_chunk(M, K, sizeof(WT)), tile = kc < K ? GS_TILE : 1;                \
        /* (chunks are AVX-512's only: elsewhere one unused vector and float) */               \
        VF acc[VW == 16 ? GS_TILE * GS_CHUNK_ACC : 1] __attribute__((aligned(64)));            \
        float xp[VW == 16 ? 16 * GS_XP_LD : 1] __attribute__((aligned(64)));                   \
        for (; n + 4 <= N; n += 4 * tile) { /* tiles of blocks of four weight rows */          \
            const int nt = (N - n) / 4 < tile ? (N - n) / 4 : tile;                            \
            for (int k0 = 0, k1; k0 < K; k0 = k1) {                                            \
                k1 = K - k0 <= kc ? K : k0 + kc;                                               \
                const float *Xc = X; /* X, or the chunk's columns of X packed (GS_XP_LD) */    \
                int ldc = ldx;                                                                 \
                if (kc < K) {                                                                  \
                    for (int m = 0; m < M; m++)                                                \
                        memcpy(xp + (size_t)m * GS_XP_LD, X + (size_t)m * ldx + k0,            \
                               sizeof(float) * (size_t)(k1 - k0));                             \
                    Xc = xp, ldc = GS_XP_LD;                                                   \
                }                                                                              \
                for (int t = 0; t < nt; t++)                                                   \
                    GS_BLOCKS(B1, B2, B3, B4, Xc, ldc, W + (size_t)(n + 4 * t) * K,            \
                              Y + n + 4 * t, kc < K ? acc + t * GS_CHUNK_ACC : NULL);          \
            }                                                                                  \
        }                                                                                      \
        n = N / 4 * 4;                                                                         \
        for (; n < N; n++)                                                                     \
            for (int m = 0; m < M; m++)                                                        \
                Y[(size_t)m * ldy + n] = DOT(W + (size_t)n * K, X + (size_t)m * ldx, K);       \
    }

#define GS_FAMILY(SUFFIX, WT, WLD, WSC)                                                        \
    GS_BLOCK(KFN(gs_4x1##SUFFIX), 1, WT, WLD, WSC)                                             \
    GS_BLOCK(KFN(gs_4x2##SUFFIX), 2, WT, WLD, WSC)                                             \
    GS_BLOCK(KFN(gs_4x3##SUFFIX), 3, WT, WLD, WSC)                                             \
    GS_BLOCK(KFN(gs_4x4##SUFFIX), 4, WT, WLD, WSC)                                             \
    GS_DOT(KFN(dot##SUFFIX), WT, WLD, WSC)                                                     \
    GS_DRIVER(KFN(gemm_small##SUFFIX), WT, KFN(gs_4x1##SUFFIX), KFN(gs_4x2##SUFFIX),           \
              KFN(gs_4x3##SUFFIX), KFN(gs_4x4##SUFFIX), KFN(dot##SUFFIX))

#define F32_SC(v) (v)
GS_FAMILY(, float, VLOAD, F32_SC)
GS_FAMILY(_f16, uint16_t, VLOAD_F16, f16_to_f32)

/*
 * BF16 weights in the pair layout (kernels.h): per group of 32 values of a row, 16 / VW loads of
 * VW 32-bit lanes; VBF16_LO of load p is w[k+p VW+i] as F32 in lane i, VBF16_HI w[k+16+p VW+i].
 * The lo halves are FMAed first (with x[k+p VW..]), then the hi halves (x[k+16+p VW..]): lane i
 * takes k+i, k+VW+i, k+2VW+i, ... as GS_BLOCK's loop does on F32 weights, then the vectors and
 * scalars past the last group as GS_BLOCK too (they are in row order): the same bits as the F32
 * kernel on the widened weights. Prefetching as GS_BLOCK, once per group (one line per row).
 */
#define GSP_HALF(HALF, off, RX)                                                                \
    for (int p = 0; p < 16 / VW; p++) {                                                        \
        VF w0 = HALF(W + k + 2 * p * VW), w1 = HALF(W + rs + k + 2 * p * VW);                  \
        VF w2 = HALF(W + 2 * rs + k + 2 * p * VW);                                             \
        VF w3 = HALF(W + 3 * rs + k + 2 * p * VW);                                             \
        GS_STEP_AT(0, (off) + p * VW);                                                         \
        if (RX > 1) GS_STEP_AT(1, (off) + p * VW);                                             \
        if (RX > 2) GS_STEP_AT(2, (off) + p * VW);                                             \
        if (RX > 3) GS_STEP_AT(3, (off) + p * VW);                                             \
    }
#define GSP_BLOCK(NAME, RX)                                                                    \
    static void NAME(const float *X, int ldx, const uint16_t *W, int K, size_t rs, float *Y,   \
                     int ys, int ldy, int pf, int k0, int k1, VF *sums)                         \
    {                                                                                          \
        (void)k0, (void)k1, (void)sums; /* all of K at once: gs_chunk keeps 16-bit weights so */ \
        const size_t pfa = gs_pf_ahead(rs, K, sizeof(uint16_t));                               \
        const int ke = K;                                                                      \
        GS_DECL4;                                                                              \
        int k = 0;                                                                             \
        for (; k + BF16_GROUP <= K; k += BF16_GROUP) {                                         \
            GS_PREFETCH(RX, 1, 1);                                                             \
            GSP_HALF(VBF16_LO, 0, RX)                                                          \
            GSP_HALF(VBF16_HI, 16, RX)                                                         \
        }                                                                                      \
        for (; k + VW <= K; k += VW) GS_WSTEP(VLOAD_BF16, RX);                                 \
        GS_OUTS(RX, bf16_to_f32);                                                              \
    }
GSP_BLOCK(KFN(gs_4x1_bf16), 1)
GSP_BLOCK(KFN(gs_4x2_bf16), 2)
GSP_BLOCK(KFN(gs_4x3_bf16), 3)
GSP_BLOCK(KFN(gs_4x4_bf16), 4)

/* One pair-layout row against one input row (the N % 4 tail), in GS_DOT's order. */
static float KFN(dot_bf16)(const uint16_t *a, const float *b, int K)
{
    VF acc = VZERO();
    int k = 0;
    for (; k + BF16_GROUP <= K; k += BF16_GROUP) {
        for (int p = 0; p < 16 / VW; p++)
            acc = VFMA(VBF16_LO(a + k + 2 * p * VW), VLOAD(b + k + p * VW), acc);
        for (int p = 0; p < 16 / VW; p++)
            acc = VFMA(VBF16_HI(a + k + 2 * p * VW), VLOAD(b + k + 16 + p * VW), acc);
    }
    for (; k + VW <= K; k += VW) acc = VFMA(VLOAD_BF16(a + k), VLOAD(b + k), acc);
    float sum = VHSUM(acc);
    for (; k < K; k++) sum += bf16_to_f32(a[k]) * b[k];
    return sum;
}
GS_DRIVER(KFN(gemm_small_bf16), uint16_t, KFN(gs_4x1_bf16), KFN(gs_4x2_bf16), KFN(gs_4x3_bf16),
          KFN(gs_4x4_bf16), KFN(dot_bf16))

/* One pair-layout BF16 row as F32 in row order (embedding rows, kernels.h). */
static void KFN(widen_bf16_pairs)(const uint16_t *src, int K, float *dst)
{
    int k = 0;
    for (; k + BF16_GROUP <= K; k += BF16_GROUP)
        for (int p = 0; p < 16 / VW; p++) {
            VSTORE(dst + k + p * VW, VBF16_LO(src + k + 2 * p * VW));
            VSTORE(dst + k + 16 + p * VW, VBF16_HI(src + k + 2 * p * VW));
        }
    for (; k < K; k++) dst[k] = bf16_to_f32(src[k]);
}

/*
 * The same blocks on 8-bit weights (kernels.h: int8 values, one scale per Q8_BLOCK of a row).
 * Per block of 32 values the four rows' scales are broadcast once, and each weight vector is
 * converted and scaled (two operations shared by the RX input rows) before the same FMAs as
 * above: the products are those of the dequantised weights, so the reference is exact F32
 * arithmetic on s * q. The K % 32 tail is summed in scalar in the output.
 */
#define Q8_OUT(i, j)                                                                           \
    do {                                                                                       \
        float sum = VHSUM(GS_ACC(i, j));                                                       \
        for (int kk = k; kk < K; kk++)                                                         \
            sum += ((float)W[(size_t)(i) * K + kk] * S[(size_t)(i) * nb + kk / Q8_BLOCK]) *    \
                   X[(size_t)(j) * ldx + kk];                                                  \
        Y[(size_t)(j) * ldy + (i)] = sum;                                                      \
    } while (0)
#define Q8_OUT4(j)                                                                             \
    do {                                                                                       \
        Q8_OUT(0, j);                                                                          \
        Q8_OUT(1, j);                                                                          \
        Q8_OUT(2, j);                                                                          \
        Q8_OUT(3, j);                                                                          \
    } while (0)

#define Q8_BLOCKFN(NAME, RX)                                                                   \
    static void NAME(const float *X, int ldx, const int8_t *W, const float *S, int K,          \
                     float *Y, int ldy)                                                        \
    {                                                                                          \
        const int nb = q8_blocks(K);                                                           \
        GS_DECL(0);                                                                            \
        GS_DECL(1);                                                                            \
        GS_DECL(2);                                                                            \
        GS_DECL(3);                                                                            \
        int k = 0;                                                                             \
        /* whole blocks, then the whole vectors of a short last block (the F32 kernel's steps) */\
        for (; k + VW <= K;) {                                                                 \
            const int b = k / Q8_BLOCK;                                                        \
            const int end = k + Q8_BLOCK <= K ? k + Q8_BLOCK : K - (K - k) % VW;               \
            if (b % 2 == 0) { /* the next block's rows, one line per 64 values */              \
                __builtin_prefetch(W + 4 * (size_t)K + k);                                     \
                __builtin_prefetch(W + 5 * (size_t)K + k);                                     \
                __builtin_prefetch(W + 6 * (size_t)K + k);                                     \
                __builtin_prefetch(W + 7 * (size_t)K + k);                                     \
            }                                                                                  \
            const VF s0 = VSET1(S[b]), s1 = VSET1(S[nb + b]);                                  \
            const VF s2 = VSET1(S[2 * (size_t)nb + b]), s3 = VSET1(S[3 * (size_t)nb + b]);     \
            for (; k < end; k += VW) {                                                         \
                VF w0 = VLOAD_I8(W + k) * s0, w1 = VLOAD_I8(W + (size_t)K + k) * s1;           \
                VF w2 = VLOAD_I8(W + 2 * (size_t)K + k) * s2;                                  \
                VF w3 = VLOAD_I8(W + 3 * (size_t)K + k) * s3;                                  \
                GS_STEP(0);                                                                    \
                if (RX > 1) GS_STEP(1);                                                        \
                if (RX > 2) GS_STEP(2);                                                        \
                if (RX > 3) GS_STEP(3);                                                        \
            }                                                                                  \
        }                                                                                      \
        Q8_OUT4(0);                                                                            \
        if (RX > 1) Q8_OUT4(1);                                                                \
        if (RX > 2) Q8_OUT4(2);                                                                \
        if (RX > 3) Q8_OUT4(3);                                                                \
    }

/*
 * One input row: the scales multiply each block's sums instead of the weights (per 16 weights:
 * widen, convert, one FMA; the scale is applied once per 32), which took the kernel from ~20 to
 * ~30 G weights/s per core in L2: batch-1 decode needs 15-20 from DRAM.
 */
#define Q8_SUM1(i)                                                                             \
    do {                                                                                       \
        float sum = VHSUM(GS_ACC(i, 0));                                                       \
        for (int kk = k; kk < K; kk++)                                                         \
            sum += ((float)W[(size_t)(i) * K + kk] * S[(size_t)(i) * nb + kk / Q8_BLOCK]) *    \
                   X[kk];                                                                      \
        Y[i] = sum;                                                                            \
    } while (0)
static void KFN(q8_4x1)(const float *X, int ldx, const int8_t *W, const float *S, int K, float *Y,
                        int ldy)
{
    (void)ldx;
    (void)ldy;
    const int nb = q8_blocks(K);
    VF a00 = VZERO(), a10 = VZERO(), a20 = VZERO(), a30 = VZERO();
    int k = 0;
    /* whole blocks, then the whole vectors of a short last block (dt_proj's K = 48 leaves 16,
     * which one value at a time in Q8_SUM1 made 13 % of a q8 token at 130m) */
    for (; k + VW <= K;) {
        const int b = k / Q8_BLOCK, end = k + Q8_BLOCK <= K ? k + Q8_BLOCK : K - (K - k) % VW;
        if (b % 2 == 0) { /* two blocks ahead, into L2: without, one core streamed 10 GB/s; 20 */
            __builtin_prefetch(W + (PF1_ROWS + 0) * (size_t)K + k, 0, 2);
            __builtin_prefetch(W + (PF1_ROWS + 1) * (size_t)K + k, 0, 2);
            __builtin_prefetch(W + (PF1_ROWS + 2) * (size_t)K + k, 0, 2);
            __builtin_prefetch(W + (PF1_ROWS + 3) * (size_t)K + k, 0, 2);
        }
        VF b0 = VZERO(), b1 = VZERO(), b2 = VZERO(), b3 = VZERO();
        for (; k < end; k += VW) {
            const VF x = VLOAD(X + k);
            b0 = VFMA(VLOAD_I8(W + k), x, b0);
            b1 = VFMA(VLOAD_I8(W + (size_t)K + k), x, b1);
            b2 = VFMA(VLOAD_I8(W + 2 * (size_t)K + k), x, b2);
            b3 = VFMA(VLOAD_I8(W + 3 * (size_t)K + k), x, b3);
        }
        a00 = VFMA(b0, VSET1(S[b]), a00);
        a10 = VFMA(b1, VSET1(S[nb + b]), a10);
        a20 = VFMA(b2, VSET1(S[2 * (size_t)nb + b]), a20);
        a30 = VFMA(b3, VSET1(S[3 * (size_t)nb + b]), a30);
    }
    Q8_SUM1(0);
    Q8_SUM1(1);
    Q8_SUM1(2);
    Q8_SUM1(3);
}
#undef Q8_SUM1
Q8_BLOCKFN(KFN(q8_4x1s), 1) /* one row with the sums of the blocks below (rows of M > 1) */
Q8_BLOCKFN(KFN(q8_4x2), 2)
Q8_BLOCKFN(KFN(q8_4x3), 3)
Q8_BLOCKFN(KFN(q8_4x4), 4)

/* One q8 weight row against one input row (the N % 4 tail). */
static float KFN(dot_q8)(const int8_t *q, const float *s, const float *x, int K)
{
    VF acc = VZERO();
    int k = 0;
    for (; k + Q8_BLOCK <= K;) {
        const VF sc = VSET1(s[k / Q8_BLOCK]);
        for (int e = 0; e < Q8_BLOCK / VW; e++, k += VW)
            acc = VFMA(VLOAD_I8(q + k) * sc, VLOAD(x + k), acc);
    }
    if (k + VW <= K) { /* whole vectors of a short last block, as Q8_BLOCKFN */
        const VF sc = VSET1(s[k / Q8_BLOCK]);
        for (; k + VW <= K; k += VW) acc = VFMA(VLOAD_I8(q + k) * sc, VLOAD(x + k), acc);
    }
    float sum = VHSUM(acc);
    for (; k < K; k++) sum += ((float)q[k] * s[k / Q8_BLOCK]) * x[k];
    return sum;
}

static void KFN(gemm_small_q8)(const float *X, int M, int K, int ldx, const int8_t *W,
                               const float *S, int N, float *Y, int ldy)
{
    const size_t nb = (size_t)q8_blocks(K);
    int n = 0;
    for (; n + 4 <= N; n += 4) {
        const int8_t *Wn = W + (size_t)n * K;
        const float *Sn = S + (size_t)n * nb;
        float *Yn = Y + n;
        int m = 0;
        if (VW == 16) { /* AVX2 has 16 registers: 8 accumulators at most */
            for (; m + 4 <= M; m += 4)
                KFN(q8_4x4)(X + (size_t)m * ldx, ldx, Wn, Sn, K, Yn + (size_t)m * ldy, ldy);
            if (M - m == 3) {
                KFN(q8_4x3)(X + (size_t)m * ldx, ldx, Wn, Sn, K, Yn + (size_t)m * ldy, ldy);
                continue;
            }
        }
        for (; m + 2 <= M; m += 2)
            KFN(q8_4x2)(X + (size_t)m * ldx, ldx, Wn, Sn, K, Yn + (size_t)m * ldy, ldy);
        /* M = 1 (decode) takes the faster form; the last row of an odd M > 1 is summed like
         * the others, so that a row gives the same bits for every M > 1 */
        if (m < M)
            (M == 1 ? KFN(q8_4x1) : KFN(q8_4x1s))(X + (size_t)m * ldx, ldx, Wn, Sn, K,
                                                    Yn + (size_t)m * ldy, ldy);
    }
    for (; n < N; n++)
        for (int m = 0; m < M; m++)
            Y[(size_t)m * ldy + n] =
                KFN(dot_q8)(W + (size_t)n * K, S + (size_t)n * nb, X + (size_t)m * ldx, K);
}

/* One q8 row as F32 (the prefill GEMMs on 8-bit weights, embedding rows). */
/* ---- products with transposed weights: Y (+)= X Wt (kernels.h gemm_t) -------------------- */

/*
 * Every output is one fmaf chain over k in order (the bits of the generic kernel): the vectors
 * run across outputs, never across k. Rows of up to GT_WIDE floats at one input row (batch-1
 * decode) stream GT_KB rows of Wt at a time in memory order with the running sums in an L1
 * buffer, each sum loaded and stored once per GT_KB rows (once per row, the store of the sums
 * was the limit: 14 GMAC/s in L2 for every weight type on one Zen 4 core); more rows take tiles
 * of GT_RB input rows x GT_NV vectors in registers over the whole K.
 */
#define GT_WIDE 4096
#define GT_KB   4
#if VW == 16
#define GT_RB 4 /* 16 accumulators of 32 registers */
#else
#define GT_RB 2 /* 8 of 16 */
#endif
#define GT_NV 4
/* a vector of 8-bit weights lies in one block of scales; a tile of GT_NV vectors starts one */
_Static_assert(Q8_BLOCK % VW == 0 && GT_NV * VW % Q8_BLOCK == 0, "gemm_t q8 tiles");
/*
 * One row: at the first vector of each cache line of the GT_KB rows from wk, that line of the
 * rows PF1_ROWS ahead into L2. The GT_KB rows are GT_KB streams; without it one core streamed
 * q8 at 10 GB/s from memory (one row at a time, a single stream, 14-15).
 */
#define GT_PREFETCH(WT, wk, n)                                                                 \
    do {                                                                                       \
        if ((n) % (64 / (int)sizeof(WT)) == 0)                                                 \
            _Pragma("GCC unroll 8") for (int p = 0; p < GT_KB; p++)                            \
                __builtin_prefetch((wk) + (size_t)(PF1_ROWS + p) * ldw + (n), 0, 2);           \
    } while (0)
#define GT_LD_F32(p)  VLOAD(p)
#define GT_LD_BF16(p) VLOAD_BF16(p)
#define GT_LD_F16(p)  VLOAD_F16(p)
#define GT_LD_I8(p)   VLOAD_I8(p)
#define GT_CVT_F32(v) (v)
#define GT_CVT_I8(v)  ((float)(v))
/* the multiplier of weight column n at row k for input row m: x, or s * x on 8-bit weights */
#define GT_SX(Q8, m, k, n)                                                                     \
    ((Q8) ? S[(size_t)(k) * lds + (n) / Q8_BLOCK] * X[(size_t)(m) * ldx + (k)]                 \
          : X[(size_t)(m) * ldx + (k)])

#define GT_KERNEL(NAME, WT, LD, CVT, Q8)                                                           \
    static void NAME(const float *X, int M, int K, int ldx, const WT *W, int ldw, int bw,          \
                     size_t bs, const float *S, int lds, int N, float *Y, int ldy, int add)        \
    {                                                                                              \
        const int Nv = N / VW * VW;                                                                \
        (void)S;                                                                                   \
        (void)lds;                                                                                 \
        if (bw < N) { /* column-blocked (kernels.h far_t_width; never on 8-bit weights) */         \
            int b0 = 0;                                                                            \
            if (!(Q8) && M == 1 && N / bw >= FAR_T_BLOCKS && bw % VW == 0 &&                       \
                FAR_T_BLOCKS * bw <= GT_WIDE) {                                                    \
                GT_FAR1(WT, LD); /* the first FAR_T_BLOCKS blocks as far streams */                \
                b0 = FAR_T_BLOCKS;                                                                 \
            }                                                                                      \
            /* the rest block by block, each as a matrix; GT_RB input rows at a time through       \
             * all the blocks (as the plain layout's tiles go: those rows' pass over the           \
             * weights from memory, then the next rows' from L2) */                                \
            for (int m0 = 0; m0 < M && b0 * bw < N; m0 += GT_RB) {                                 \
                const int mr = M - m0 < GT_RB ? M - m0 : GT_RB;                                    \
                for (int b = b0; b * bw < N; b++) {                                                \
                    const int w = N - b * bw < bw ? N - b * bw : bw;                               \
                    NAME(X + (size_t)m0 * ldx, mr, K, ldx, W + (size_t)b * bs, ldw, w, 0,          \
                         (Q8) ? S + (size_t)b * bw / Q8_BLOCK : S, lds, w,                         \
                         Y + (size_t)m0 * ldy + (size_t)b * bw, ldy, add);                         \
                }                                                                                  \
            }                                                                                      \
            return;                                                                                \
        }                                                                                          \
        if (M == 1 && Nv <= GT_WIDE && Nv > 0) {                                                   \
            float acc[GT_WIDE] __attribute__((aligned(64)));                                       \
            for (int n = 0; n < Nv; n += VW) VSTORE(acc + n, VZERO());                             \
            int k = 0;                                                                             \
            for (; k + GT_KB <= K; k += GT_KB) { /* GT_KB rows, each sum k in order */             \
                const WT *wk = W + (size_t)k * ldw;                                                \
                if (Q8) { /* s x of each block of the GT_KB rows, then the rows */                 \
                    float sx[GT_KB][GT_WIDE / Q8_BLOCK] __attribute__((aligned(64)));              \
                    const int nb = (Nv + Q8_BLOCK - 1) / Q8_BLOCK;                                 \
                    for (int r = 0; r < GT_KB; r++) {                                              \
                        const float *Sk = S + (size_t)(k + r) * lds;                               \
                        const VF xb = VSET1(X[k + r]);                                             \
                        int b = 0;                                                                 \
                        for (; b + VW <= nb; b += VW) VSTORE(sx[r] + b, VLOAD(Sk + b) * xb);       \
                        for (; b < nb; b++) sx[r][b] = Sk[b] * X[k + r];                           \
                    }                                                                              \
                    for (int n = 0; n < Nv; n += VW) {                                             \
                        GT_PREFETCH(WT, wk, n);                                                    \
                        VF a = VLOAD(acc + n);                                                     \
                        _Pragma("GCC unroll 8") for (int r = 0; r < GT_KB; r++) a =                \
                            VFMA(LD(wk + (size_t)r * ldw + n), VSET1(sx[r][n / Q8_BLOCK]), a);     \
                        VSTORE(acc + n, a);                                                        \
                    }                                                                              \
                } else {                                                                           \
                    VF xb[GT_KB];                                                                  \
                    _Pragma("GCC unroll 8") for (int r = 0; r < GT_KB; r++) xb[r] =                \
                        VSET1(X[k + r]);                                                           \
                    for (int n = 0; n < Nv; n += VW) {                                             \
                        GT_PREFETCH(WT, wk, n);                                                    \
                        VF a = VLOAD(acc + n);                                                     \
                        _Pragma("GCC unroll 8") for (int r = 0; r < GT_KB; r++) a =                \
                            VFMA(LD(wk + (size_t)r * ldw + n), xb[r], a);                          \
                        VSTORE(acc + n, a);                                                        \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
            for (; k < K; k++) { /* the last K % GT_KB rows, one at a time */                      \
                const WT *wk = W + (size_t)k * ldw;                                                \
                if (Q8) {                                                                          \
                    for (int n = 0; n < Nv; n += VW)                                               \
                        VSTORE(acc + n,                                                            \
                               VFMA(LD(wk + n), VSET1(GT_SX(1, 0, k, n)), VLOAD(acc + n)));        \
                } else {                                                                           \
                    const VF xb = VSET1(X[k]);                                                     \
                    for (int n = 0; n < Nv; n += VW)                                               \
                        VSTORE(acc + n, VFMA(LD(wk + n), xb, VLOAD(acc + n)));                     \
                }                                                                                  \
            }                                                                                      \
            for (int n = 0; n < Nv; n += VW) {                                                     \
                VF t = VLOAD(acc + n);                                                             \
                if (add) t = VLOAD(Y + n) + t;                                                     \
                VSTORE(Y + n, t);                                                                  \
            }                                                                                      \
        } else {                                                                                   \
            int m0 = 0;                                                                            \
            for (; m0 + GT_RB <= M; m0 += GT_RB) GT_ROWS(GT_RB, WT, LD, Q8);                       \
            for (; m0 < M; m0++) GT_ROWS(1, WT, LD, Q8);                                           \
        }                                                                                          \
        for (int n = Nv; n < N; n++) /* the last N % VW outputs, one at a time */                  \
            for (int m = 0; m < M; m++) {                                                          \
                float a = 0;                                                                       \
                for (int k = 0; k < K; k++)                                                        \
                    a = fmaf(CVT(W[(size_t)k * ldw + n]), GT_SX(Q8, m, k, n), a);                  \
                float *y = Y + (size_t)m * ldy + n;                                                \
                *y = add ? *y + a : a;                                                             \
            }                                                                                      \
    }
/*
 * One input row on the column-blocked layout: its first FAR_T_BLOCKS blocks read as that many
 * far streams, GT_KB rows at a time as above, at each group of VW columns j one vector of every
 * block (the blocks' streams interleaved: one Zen 5 core reads four far streams 10-20 % faster
 * than one, docs/performance.md); every output the same chain over k in order. On 16-bit
 * weights each block's lines GT_FAR_PF(WT) rows ahead are prefetched into L2 (0 to 8 rows
 * measured: 4 best), or non-temporal (kernels.h kernels_pf_nta); F32 read no faster with it (a
 * prefetch per vector per row).
 */
#define GT_FAR_PF(WT) (sizeof(WT) == 4 ? 0 : 4)
#define GT_FAR1(WT, LD)                                                                        \
    do {                                                                                       \
        float acc[GT_WIDE] __attribute__((aligned(64)));                                       \
        const int pf = GT_FAR_PF(WT);                                                          \
        for (int n = 0; n < FAR_T_BLOCKS * bw; n += VW) VSTORE(acc + n, VZERO());              \
        int k = 0;                                                                             \
        for (; k + GT_KB <= K; k += GT_KB) {                                                   \
            VF xb[GT_KB];                                                                      \
            const WT *wb[FAR_T_BLOCKS];                                                        \
            _Pragma("GCC unroll 8") for (int r = 0; r < GT_KB; r++) xb[r] = VSET1(X[k + r]);   \
            _Pragma("GCC unroll 8") for (int c = 0; c < FAR_T_BLOCKS; c++) wb[c] =             \
                W + (size_t)c * bs + (size_t)k * ldw;                                          \
            for (int j = 0; j < bw; j += VW) {                                                 \
                if (pf && j % (64 / (int)sizeof(WT)) == 0)                                     \
                    _Pragma("GCC unroll 8") for (int c = 0; c < FAR_T_BLOCKS; c++)             \
                        _Pragma("GCC unroll 8") for (int r = 0; r < GT_KB; r++)                \
                            prefetch_weights(wb[c] + (size_t)(pf + r) * ldw + j);              \
                _Pragma("GCC unroll 8") for (int c = 0; c < FAR_T_BLOCKS; c++) {               \
                    VF a = VLOAD(acc + c * bw + j);                                            \
                    _Pragma("GCC unroll 8") for (int r = 0; r < GT_KB; r++)                    \
                        a = VFMA(LD(wb[c] + (size_t)r * ldw + j), xb[r], a);                   \
                    VSTORE(acc + c * bw + j, a);                                               \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        for (; k < K; k++) { /* the last K % GT_KB rows, one at a time */                     \
            const VF xb = VSET1(X[k]);                                                         \
            for (int j = 0; j < bw; j += VW)                                                   \
                _Pragma("GCC unroll 8") for (int c = 0; c < FAR_T_BLOCKS; c++)                 \
                    VSTORE(acc + c * bw + j,                                                   \
                           VFMA(LD(W + (size_t)c * bs + (size_t)k * ldw + j), xb,              \
                                VLOAD(acc + c * bw + j)));                                     \
        }                                                                                      \
        for (int n = 0; n < FAR_T_BLOCKS * bw; n += VW) {                                      \
            VF t = VLOAD(acc + n);                                                             \
            if (add) t = VLOAD(Y + n) + t;                                                     \
            VSTORE(Y + n, t);                                                                  \
        }                                                                                      \
    } while (0)
/* RB input rows from m0: tiles of GT_NV vectors, then one tile of the vectors left, over the
 * whole K (a thread's 48 columns of 130m's out_proj at 16 threads: one tile of 3, not three of
 * one, which read a cache line per row of Wt each) */
#define GT_ROWS(RB, WT, LD, Q8)                                                                \
    do {                                                                                       \
        int n0 = 0;                                                                            \
        for (; n0 + GT_NV * VW <= Nv; n0 += GT_NV * VW) GT_TILE(RB, GT_NV, WT, LD, Q8);        \
        switch ((Nv - n0) / VW) {                                                              \
        case 3: GT_TILE(RB, 3, WT, LD, Q8); break;                                             \
        case 2: GT_TILE(RB, 2, WT, LD, Q8); break;                                             \
        case 1: GT_TILE(RB, 1, WT, LD, Q8); break;                                             \
        default: break;                                                                        \
        }                                                                                      \
    } while (0)
#define GT_TILE(RB, NV, WT, LD, Q8)                                                                \
    do {                                                                                           \
        VF a[RB][NV];                                                                              \
        _Pragma("GCC unroll 16") for (int r = 0; r < RB; r++)                                      \
            _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++) a[r][v] = VZERO();               \
        for (int k = 0; k < K; k++) {                                                              \
            const WT *wk = W + (size_t)k * ldw + n0;                                               \
            if (NV == GT_NV) /* the next strip's lines of row k, into L2 (the first pass over      \
                              * the strip reads it from memory, at a stride of ldw) */             \
                for (size_t l = 0; l < GT_NV * VW * sizeof(WT); l += 64)                           \
                    __builtin_prefetch((const char *)(wk + GT_NV * VW) + l, 0, 2);                 \
            if (Q8) { /* s x once per row and block (x broadcast once per row): the same           \
                       * products as GT_SX, a vector multiply in place of a scalar multiply        \
                       * and a broadcast per accumulator */                                        \
                VF xr[RB], sxb[RB];                                                                \
                _Pragma("GCC unroll 16") for (int r = 0; r < RB; r++) xr[r] =                      \
                    VSET1(X[(size_t)(m0 + r) * ldx + k]);                                          \
                _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++)                              \
                {                                                                                  \
                    const VF w = LD(wk + v * VW);                                                  \
                    /* a block starts: v = 0, and (n0 a multiple of GT_NV VW when NV > 1) */       \
                    if (v * VW % Q8_BLOCK == 0) {                                                  \
                        const VF sb = VSET1(S[(size_t)k * lds + (n0 + v * VW) / Q8_BLOCK]);        \
                        _Pragma("GCC unroll 16") for (int r = 0; r < RB; r++) sxb[r] = sb * xr[r]; \
                    }                                                                              \
                    _Pragma("GCC unroll 16") for (int r = 0; r < RB; r++) a[r][v] =                \
                        VFMA(w, sxb[r], a[r][v]);                                                  \
                }                                                                                  \
            } else {                                                                               \
                VF w[NV];                                                                          \
                _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++) w[v] = LD(wk + v * VW);      \
                _Pragma("GCC unroll 16") for (int r = 0; r < RB; r++)                              \
                    _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++) a[r][v] =                \
                        VFMA(w[v], VSET1(X[(size_t)(m0 + r) * ldx + k]), a[r][v]);                 \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 16") for (int r = 0; r < RB; r++)                                      \
            _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++)                                  \
        {                                                                                          \
            float *y = Y + (size_t)(m0 + r) * ldy + n0 + v * VW;                                   \
            VF t = a[r][v];                                                                        \
            if (add) t = VLOAD(y) + t;                                                             \
            VSTORE(y, t);                                                                          \
        }                                                                                          \
    } while (0)

GT_KERNEL(KFN(gt_f32), float, GT_LD_F32, GT_CVT_F32, 0)
GT_KERNEL(KFN(gt_bf16), uint16_t, GT_LD_BF16, bf16_to_f32, 0)
GT_KERNEL(KFN(gt_f16), uint16_t, GT_LD_F16, f16_to_f32, 0)
GT_KERNEL(KFN(gt_q8), int8_t, GT_LD_I8, GT_CVT_I8, 1)

static void KFN(gemm_t)(const float *X, int M, int K, int ldx, const float *W, int ldw, int bw,
                        size_t bs, int N, float *Y, int ldy, int add)
{
    KFN(gt_f32)(X, M, K, ldx, W, ldw, bw, bs, NULL, 0, N, Y, ldy, add);
}
static void KFN(gemm_t_bf16)(const float *X, int M, int K, int ldx, const uint16_t *W, int ldw,
                             int bw, size_t bs, int N, float *Y, int ldy, int add)
{
    KFN(gt_bf16)(X, M, K, ldx, W, ldw, bw, bs, NULL, 0, N, Y, ldy, add);
}
static void KFN(gemm_t_f16)(const float *X, int M, int K, int ldx, const uint16_t *W, int ldw,
                            int bw, size_t bs, int N, float *Y, int ldy, int add)
{
    KFN(gt_f16)(X, M, K, ldx, W, ldw, bw, bs, NULL, 0, N, Y, ldy, add);
}
static void KFN(gemm_t_q8)(const float *X, int M, int K, int ldx, const int8_t *W, int ldw,
                           const float *S, int lds, int N, float *Y, int ldy, int add)
{
    KFN(gt_q8)(X, M, K, ldx, W, ldw, N, 0, S, lds, N, Y, ldy, add);
}

/* ---- 8-bit weights in the q8k layout with F32 activations (kernels.h gemm_t_q8k) --------- */

/*
 * Lanes over outputs, as gemm_t: lane n of a vector of int32 holds output n's 4 bytes (k .. k+3)
 * of a layout row; XOR 0x80 makes them the signed weights, and byte j as F32 is a shift left
 * and an arithmetic shift right (exact). Block by block (a block's 8 rows are contiguous: the
 * weights are read as they lie), Y holding each output's running sum between blocks; within a
 * block, tiles of GK_NV vectors x GK_RB input rows (the tile's weights reused from L1 by the
 * next rows). Each output's t and acc chains are the generic kernel's.
 */
typedef int32_t KFN(vi32) __attribute__((vector_size(VW * 4)));
#if VW == 16
#define GK_RB 4 /* 8 + 8 accumulators of 32 registers */
#else
#define GK_RB 2 /* 4 + 4 of 16 */
#endif
#define GK_NV  2
#define GK_NV1 4 /* fewer rows than GK_RB: single rows, tiles of 4 vectors (4 chains of t) */
/* byte j (0..3) of each lane of the signed weights wv as F32 */
#define GK_BYTE(wv, j) __builtin_convertvector(((wv) << (24 - 8 * (j))) >> 24, VF)
#define GK_J(RB, NV, j)                                                                        \
    do {                                                                                       \
        VF wf[NV];                                                                             \
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++) wf[v] = GK_BYTE(wv[v], j);      \
        _Pragma("GCC unroll 16") for (int r = 0; r < RB; r++) {                                \
            const VF xb = VSET1(X[(size_t)(m0 + r) * ldx + k + (j)]);                          \
            _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++) t[r][v] =                    \
                VFMA(wf[v], xb, t[r][v]);                                                      \
        }                                                                                      \
    } while (0)
/* block b's part of rows [m0, m0 + RB) x vectors [n0, n0 + NV VW) */
#define GK_TILE(RB, NV)                                                                        \
    do {                                                                                       \
        VF t[RB][NV];                                                                          \
        _Pragma("GCC unroll 16") for (int r = 0; r < RB; r++)                                  \
            _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++) t[r][v] = VZERO();           \
        const uint8_t *Wb = q8k_vals(W, ldw, b * Q8_BLOCK); /* block b's rows */               \
        for (int k = b * Q8_BLOCK; k < kend; k += 4) {                                         \
            const uint8_t *wk = Wb + (size_t)((k - b * Q8_BLOCK) / 4) * ldw + 4 * (size_t)n0;  \
            if (m0 == 0) /* this row's lines of the next block, into L2 */                    \
                for (int l = 0; l < 4 * NV * VW; l += 64)                                      \
                    __builtin_prefetch(wk + 2 * Q8K_ROWS * ldw + l, 0, 2);                     \
            KFN(vi32) wv[NV];                                                                  \
            _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++) {                            \
                memcpy(&wv[v], wk + 4 * (size_t)v * VW, sizeof wv[v]);                         \
                wv[v] ^= (int32_t)0x80808080u;                                                 \
            }                                                                                  \
            GK_J(RB, NV, 0);                                                                   \
            if (k + 1 < kend) GK_J(RB, NV, 1);                                                 \
            if (k + 2 < kend) GK_J(RB, NV, 2);                                                 \
            if (k + 3 < kend) GK_J(RB, NV, 3);                                                 \
        }                                                                                      \
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++) {                                \
            const VF sv = VLOAD(q8k_scl(W, ldw, b) + n0 + v * VW);                             \
            _Pragma("GCC unroll 16") for (int r = 0; r < RB; r++) {                            \
                float *y = Y + (size_t)(m0 + r) * ldy + n0 + v * VW;                           \
                VSTORE(y, VFMA(t[r][v], sv, b ? VLOAD(y) : VZERO()));                          \
            }                                                                                  \
        }                                                                                      \
    } while (0)
#define GK_COLS(NV)                                                                            \
    do {                                                                                       \
        int m0 = 0;                                                                            \
        for (; m0 + GK_RB <= M; m0 += GK_RB) GK_TILE(GK_RB, NV);                               \
        for (; m0 < M; m0++) GK_TILE(1, NV);                                                   \
    } while (0)

static void KFN(gemm_t_q8k)(const float *X, int M, int K, int ldx, const uint8_t *W, size_t ldw,
                            int N, float *Y, int ldy)
{
    const int Nv = N / VW * VW, nb = q8_blocks(K);
    for (int b = 0; b < nb; b++) {
        const int kend = (b + 1) * Q8_BLOCK < K ? (b + 1) * Q8_BLOCK : K;
        int n0 = 0;
        if (M < GK_RB)
            for (; n0 + GK_NV1 * VW <= Nv; n0 += GK_NV1 * VW) GK_COLS(GK_NV1);
        for (; n0 + GK_NV * VW <= Nv; n0 += GK_NV * VW) GK_COLS(GK_NV);
        for (; n0 < Nv; n0 += VW) GK_COLS(1);
    }
    if (nb == 0)
        for (int m = 0; m < M; m++) memset(Y + (size_t)m * ldy, 0, (size_t)Nv * sizeof *Y);
    for (int n = Nv; n < N; n++) /* the last N % VW outputs, one at a time */
        for (int m = 0; m < M; m++)
            Y[(size_t)m * ldy + n] = q8k_out_f32(X + (size_t)m * ldx, K, W, ldw, n);
}

static void KFN(widen_q8)(const int8_t *q, const float *s, int K, float *dst)
{
    int k = 0;
    for (; k + Q8_BLOCK <= K;) {
        const VF sc = VSET1(s[k / Q8_BLOCK]);
        for (int e = 0; e < Q8_BLOCK / VW; e++, k += VW) VSTORE(dst + k, VLOAD_I8(q + k) * sc);
    }
    for (; k < K; k++) dst[k] = (float)q[k] * s[k / Q8_BLOCK];
}

/* Widen n BF16 / F16 values to F32 (for the prefill GEMMs on 16-bit checkpoints). */
static void KFN(widen_bf16)(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + VW <= n; i += VW) VSTORE(dst + i, VLOAD_BF16(src + i));
    for (; i < n; i++) dst[i] = bf16_to_f32(src[i]);
}

static void KFN(widen_f16)(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + VW <= n; i += VW) VSTORE(dst + i, VLOAD_F16(src + i));
    for (; i < n; i++) dst[i] = f16_to_f32(src[i]);
}

/* ---- softmax helpers over a vocabulary ----------------------------------------------------- */

static float KFN(max)(const float *x, int n)
{
    VF m = VSET1(-INFINITY);
    int i = 0;
    for (; i + VW <= n; i += VW) m = VMAX(m, VLOAD(x + i));
    float buf[VW] __attribute__((aligned(64)));
    VSTORE(buf, m);
    float r = -INFINITY;
    for (int k = 0; k < VW; k++) r = buf[k] > r ? buf[k] : r;
    for (; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}

/* Index of the largest of n values (lowest index on ties; NaN never wins). */
static int KFN(argmax)(const float *x, int n)
{
    const float mx = KFN(max)(x, n);
    const VF m = VSET1(mx);
    int i = 0;
    for (; i + VW <= n; i += VW) { /* (one at a time: ~20 us a maximum deep in 50,280) */
        const unsigned eq = VEQ_MASK(VLOAD(x + i), m);
        if (eq) return i + __builtin_ctz(eq);
    }
    for (; i < n; i++)
        if (x[i] == mx) return i;
    return 0; /* all NaN */
}

/* log(sum(exp(x - mx))) + mx for n logits whose maximum is mx. */
static float KFN(logsumexp_at)(const float *x, int n, float mx)
{
    if (!(mx > -INFINITY)) return mx;
    const VF m = VSET1(mx);
    VF acc = VZERO();
    int i = 0;
    for (; i + 4 * VW <= n; i += 4 * VW) { /* four exps' chains interleaved, the same sum */
        VF e[4];
        for (int j = 0; j < 4; j++)
            e[j] = KFN(exp_arg)(VLOAD(x + i + j * VW) - m);
        VEXP_RAW_N(e, 4);
        for (int j = 0; j < 4; j++) acc = acc + e[j];
    }
    for (; i + VW <= n; i += VW) acc = acc + KFN(exp)(VLOAD(x + i) - m);
    double sum = VHSUM(acc);
    for (; i < n; i++) sum += exp((double)x[i] - mx);
    return mx + (float)log(sum);
}

/* log(sum(exp(x))) for n logits. */
static float KFN(logsumexp)(const float *x, int n)
{
    return KFN(logsumexp_at)(x, n, KFN(max)(x, n));
}

