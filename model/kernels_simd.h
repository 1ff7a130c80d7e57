/*
 * kernels_simd.h - the SIMD kernels, written once over a small set of vector operations and
 * included by kernels_avx2.c (8 lanes) and kernels_avx512.c (16 lanes), each of which defines
 * the operations below with its intrinsics and is compiled for its ISA. Not a public header.
 *
 * Required before inclusion:
 *   VF, VW (lanes, 8 or 16), VZERO(), VLOAD(p), VSTORE(p, v), VSET1(f), VFMA(a, b, c) = a*b + c,
 *   VMAX(a, b), VMIN(a, b), VDIV(a, b), VHSUM(v), VEXP_RAW(x) (exp of x clamped to a safe range),
 *   VABS(v), and KPREFIX (name prefix).
 * Arithmetic uses GCC vector operators (+, -, *) on VF.
 */

#include <string.h>

#include "kernels.h"

#define KCAT2(a, b) a##b
#define KCAT(a, b)  KCAT2(a, b)
#define KFN(name)   KCAT(KPREFIX, name)

enum { NB = 16 / VW }; /* vectors per block of 16 channels */

static inline VF KFN(exp)(VF x)
{
    x = VMAX(x, VSET1(-87.3f));
    x = VMIN(x, VSET1(88.3f));
    return VEXP_RAW(x);
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

static void KFN(scan1)(const scan1_args *a)
{
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
        for (int t = 0; t < a->T; t++) {
            const float *Bt = a->B + (size_t)t * a->ldbc, *Ct = a->C + (size_t)t * a->ldbc;
            for (int v = 0; v < NB; v++) {
                const int col = ch + v * VW;
                VF dt = KFN(softplus)(VLOAD(a->dt + (size_t)t * a->ldd + col));
                VF x = VLOAD(a->x + (size_t)t * a->ldx + col);
                VF dx = dt * x;
                VF acc = VZERO();
                for (int n = 0; n < N; n++) {
                    VF dA = KFN(exp)(dt * A[n][v]);
                    s[n][v] = VFMA(dA, s[n][v], dx * VSET1(Bt[n]));
                    acc = VFMA(s[n][v], VSET1(Ct[n]), acc);
                }
                VF z = VLOAD(a->z + (size_t)t * a->ldz + col);
                VSTORE(a->y + (size_t)t * a->ldy + col, (acc + Dv[v] * x) * KFN(silu)(z));
            }
        }
        for (int n = 0; n < N; n++)
            for (int v = 0; v < NB; v++) VSTORE(&buf[n][v * VW], s[n][v]);
        for (int c = 0; c < 16; c++)
            for (int n = 0; n < N; n++) a->s[(size_t)(ch + c) * N + n] = buf[n][c];
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
                VF acc = bias[v];
                for (int k = 0; k < K; k++) acc = VFMA(W[k][v], w[k][v], acc);
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

/* One block of rw weight rows x rx input rows over the whole K. rw, rx <= 4; constants after
 * inlining, so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void KFN(gs_block)(const float *X, int ldx,
                                                                const float *W, int K, float *Y,
                                                                int ldy, const int rw, const int rx)
{
    VF acc[4][4];
    for (int i = 0; i < rw; i++)
        for (int j = 0; j < rx; j++) acc[i][j] = VZERO();
    int k = 0;
    for (; k + VW <= K; k += VW) {
        VF wv[4], xv[4];
        for (int i = 0; i < rw; i++) wv[i] = VLOAD(W + (size_t)i * K + k);
        for (int j = 0; j < rx; j++) xv[j] = VLOAD(X + (size_t)j * ldx + k);
        for (int i = 0; i < rw; i++)
            for (int j = 0; j < rx; j++) acc[i][j] = VFMA(wv[i], xv[j], acc[i][j]);
    }
    for (int i = 0; i < rw; i++)
        for (int j = 0; j < rx; j++) {
            float sum = VHSUM(acc[i][j]);
            for (int kk = k; kk < K; kk++) sum += W[(size_t)i * K + kk] * X[(size_t)j * ldx + kk];
            Y[(size_t)j * ldy + i] = sum;
        }
}

static void KFN(gemm_small)(const float *X, int M, int K, int ldx, const float *W, int N, float *Y,
                            int ldy)
{
    enum { RW = 4, RX = VW == 16 ? 4 : 2 };
    int n = 0;
    for (; n + RW <= N; n += RW) {
        const float *Wn = W + (size_t)n * K;
        int m = 0;
        for (; m + RX <= M; m += RX)
            KFN(gs_block)(X + (size_t)m * ldx, ldx, Wn, K, Y + (size_t)m * ldy + n, ldy, RW, RX);
        for (; m < M; m++)
            KFN(gs_block)(X + (size_t)m * ldx, ldx, Wn, K, Y + (size_t)m * ldy + n, ldy, RW, 1);
    }
    for (; n < N; n++) {
        const float *Wn = W + (size_t)n * K;
        int m = 0;
        for (; m + RX <= M; m += RX)
            KFN(gs_block)(X + (size_t)m * ldx, ldx, Wn, K, Y + (size_t)m * ldy + n, ldy, 1, RX);
        for (; m < M; m++)
            KFN(gs_block)(X + (size_t)m * ldx, ldx, Wn, K, Y + (size_t)m * ldy + n, ldy, 1, 1);
    }
}
