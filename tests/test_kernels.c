/*
 * test_kernels.c - every SIMD kernel set this CPU can run (AVX2, AVX-512) against the portable
 * reference kernels and a double-precision computation, on shapes around every vector and
 * register-block boundary: GEMMs (F32, BF16, F16 and 8-bit weights; 1..16 rows; N and K
 * tails, K % 32 tails of the 8-bit blocks), the scan, the conv, the merge sum, logsumexp, argmax,
 * widening, and the 8-bit quantiser against its definition. Then the batch invariance that exact
 * prefix reuse rests on: a GEMM row, and a scanned token, give the same bits whatever number of
 * rows or tokens share the call, wherever it starts.
 *
 * The golden tests (test_model) run the whole forward pass with the kernels the CPU picks; this
 * one makes sure the others agree too, including shapes the fixtures never reach.
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "test_util.h"

#include <immintrin.h>

static uint64_t rng = 88172645463325252ull;

static float urand(float lo, float hi) /* xorshift64 */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) & 0xffffff) / (float)0x1000000;
}

static void fill(float *p, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) p[i] = urand(lo, hi);
}

static uint16_t to_bf16(float f) /* truncation is fine: any 16-bit pattern is a test value */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

static uint16_t to_f16(float f) /* normal range only (the test values are in [-2, 2]) */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    int e = (int)((u >> 23) & 0xff) - 127 + 15;
    if (e <= 0) return (uint16_t)sign;
    return (uint16_t)(sign | (uint32_t)e << 10 | ((u >> 13) & 0x3ff));
}

/* |got - want| <= tol * (scale + |want|) */
static int close_to(double got, double want, double scale, double tol)
{
    return fabs(got - want) <= tol * (scale + fabs(want));
}

enum { WF32, WBF16, WF16, WQ8 };

/* Y = X W^T in double (with the weights as the kernel sees them), and sum |x w| per output. */
static void gemm_ref(const float *X, int M, int K, int ldx, const float *Wf, int N, double *Y,
                     double *mag)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double acc = 0, a = 0;
            for (int k = 0; k < K; k++) {
                double p = (double)X[(size_t)m * ldx + k] * Wf[(size_t)n * K + k];
                acc += p;
                a += fabs(p);
            }
            Y[(size_t)m * N + n] = acc;
            mag[(size_t)m * N + n] = a;
        }
}

/* The BF16 kernel's Y (pair layout) has the bits of the F32 kernel on the widened weights Wf:
 * the same FMAs in the same order. */
static int bf16_same_as_f32(const kernels *kn, const float *X, int M, int K, int ldx,
                            const float *Wf, int N, const float *Y, int ldy)
{
    float *Z = malloc(sizeof(float) * (size_t)M * ldy);
    memcpy(Z, Y, sizeof(float) * (size_t)M * ldy); /* the gaps between rows as in Y */
    kn->gemm_small(X, M, K, ldx, Wf, N, Z, ldy);
    const int ok = memcmp(Z, Y, sizeof(float) * (size_t)M * ldy) == 0;
    if (!ok) printf("  %s gemm_small_bf16 M=%d N=%d K=%d: not the F32 kernel's bits\n", kn->name,
                    M, N, K);
    free(Z);
    return ok;
}

/*
 * The row-order BF16 kernels the pair layout replaced, as each computed one output: one vector
 * accumulator over k += VW (16-bit values zero-extended to 32 bits, shifted into F32), the ISA's
 * horizontal sum, then the K % VW tail in scalar; the portable one summed in k order. The new
 * kernels must give their bits, so decoding a BF16 checkpoint gives the tokens it gave before.
 */
__attribute__((target("avx512f"))) static float old_bf16_dot512(const uint16_t *w, const float *x,
                                                                int K)
{
    __m512 acc = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        const __m256i h = _mm256_loadu_si256((const __m256i *)(w + k));
        const __m512 wv = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        acc = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + k), acc);
    }
    float sum = _mm512_reduce_add_ps(acc);
    for (; k < K; k++) sum += bf16_to_f32(w[k]) * x[k];
    return sum;
}

__attribute__((target("avx2,fma"))) static float old_bf16_dot256(const uint16_t *w, const float *x,
                                                                 int K)
{
    __m256 acc = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        const __m128i h = _mm_loadu_si128((const __m128i *)(w + k));
        const __m256 wv = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        acc = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + k), acc);
    }
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
    float sum = _mm_cvtss_f32(q);
    for (; k < K; k++) sum += bf16_to_f32(w[k]) * x[k];
    return sum;
}

static float old_bf16_dot(const kernels *kn, const uint16_t *w, const float *x, int K)
{
    if (!strcmp(kn->name, "avx512")) return old_bf16_dot512(w, x, K);
    if (!strcmp(kn->name, "avx2")) return old_bf16_dot256(w, x, K);
    float acc = 0;
    for (int k = 0; k < K; k++) acc += x[k] * bf16_to_f32(w[k]);
    return acc;
}

/* Y of the BF16 kernel (pair layout) against the old row-order kernel on W16 (row order): the
 * same bits for every output. */
static int bf16_same_as_old(const kernels *kn, const float *X, int M, int K, int ldx,
                            const uint16_t *W16, int N, const float *Y, int ldy)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            const float want = old_bf16_dot(kn, W16 + (size_t)n * K, X + (size_t)m * ldx, K);
            if (memcmp(&want, &Y[(size_t)m * ldy + n], sizeof want) != 0) {
                printf("  %s gemm_small_bf16 M=%d N=%d K=%d: Y[%d][%d] = %.9g, the row-order "
                       "kernel gave %.9g\n",
                       kn->name, M, N, K, m, n, Y[(size_t)m * ldy + n], want);
                return 0;
            }
        }
    return 1;
}

static int check_gemm(const kernels *kn, int wt, int M, int N, int K)
{
    const int ldx = K + 3, ldy = N + 5;
    float *X = malloc(sizeof(float) * (size_t)M * ldx), *Wf = malloc(sizeof(float) * (size_t)N * K);
    uint16_t *W16 = malloc(sizeof(uint16_t) * (size_t)N * K);
    int8_t *W8 = malloc((size_t)N * K);
    float *S8 = malloc(sizeof(float) * (size_t)N * q8_blocks(K));
    float *Y = malloc(sizeof(float) * (size_t)M * ldy);
    double *ref = malloc(sizeof(double) * (size_t)M * N), *mag = malloc(sizeof(double) * M * N);
    fill(X, (size_t)M * ldx, -1, 1);
    fill(Wf, (size_t)N * K, -2, 2);
    for (size_t i = 0; i < (size_t)N * K; i++) {
        if (wt == WBF16) W16[i] = to_bf16(Wf[i]), Wf[i] = bf16_to_f32(W16[i]);
        if (wt == WF16) W16[i] = to_f16(Wf[i]), Wf[i] = f16_to_f32(W16[i]);
    }
    if (wt == WQ8) { /* the reference sees the dequantised weights, s * q in F32 */
        const int nb = q8_blocks(K);
        for (int n = 0; n < N; n++) {
            q8_quantize_row(Wf + (size_t)n * K, K, W8 + (size_t)n * K, S8 + (size_t)n * nb);
            for (int k = 0; k < K; k++)
                Wf[(size_t)n * K + k] = (float)W8[(size_t)n * K + k] * S8[(size_t)n * nb + k / 32];
        }
    }
    for (size_t i = 0; i < (size_t)M * ldy; i++) Y[i] = NAN; /* catch unwritten outputs */
    gemm_ref(X, M, K, ldx, Wf, N, ref, mag);
    int ok = 1;
    if (wt == WF32) {
        kn->gemm_small(X, M, K, ldx, Wf, N, Y, ldy);
    } else if (wt == WQ8) {
        kn->gemm_small_q8(X, M, K, ldx, W8, S8, N, Y, ldy);
    } else if (wt == WBF16) { /* the pair layout, as the loader keeps BF16 matrices */
        uint16_t *Wp = malloc(sizeof(uint16_t) * (size_t)N * K);
        bf16_pack_rows(W16, (size_t)N, K, Wp);
        kn->gemm_small_bf16(X, M, K, ldx, Wp, N, Y, ldy);
        ok &= bf16_same_as_f32(kn, X, M, K, ldx, Wf, N, Y, ldy);
        ok &= bf16_same_as_old(kn, X, M, K, ldx, W16, N, Y, ldy);
        free(Wp);
    } else {
        kn->gemm_small_f16(X, M, K, ldx, W16, N, Y, ldy);
    }
    for (int m = 0; m < M && ok; m++)
        for (int n = 0; n < N && ok; n++) {
            double want = ref[(size_t)m * N + n], got = Y[(size_t)m * ldy + n];
            if (!close_to(got, want, mag[(size_t)m * N + n], 2e-6)) {
                static const char *const wname[] = {"", " bf16", " f16", " q8"};
                printf("  %s gemm_small%s M=%d N=%d K=%d: Y[%d][%d] = %.9g, want %.9g\n",
                       kn->name, wname[wt], M, N, K, m, n, got, want);
                ok = 0;
            }
        }
    free(X);
    free(Wf);
    free(W16);
    free(W8);
    free(S8);
    free(Y);
    free(ref);
    free(mag);
    return ok;
}

static void test_gemms(const kernels *kn)
{
    static const int Ns[] = {1, 3, 4, 5, 16, 33, 64};
    static const int Ks[] = {1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40, 48, 63, 64, 65, 100, 768};
    int ok = 1;
    for (int M = 1; M <= 16; M++)
        for (size_t a = 0; a < sizeof Ns / sizeof Ns[0]; a++)
            for (size_t b = 0; b < sizeof Ks / sizeof Ks[0]; b++) {
                for (int wt = WF32; wt <= WQ8; wt++) ok &= check_gemm(kn, wt, M, Ns[a], Ks[b]);
            }
    CHECKF(ok, "%s: GEMM kernels", kn->name);
}

/* The scan and the conv of kn against the portable kernels, on the same inputs and states. */
static void test_scan_conv(const kernels *kn, const kernels *ref)
{
    enum { C = 48, N = 16, KC = 4, TMAX = 7 };
    static float dt[TMAX * C], x[TMAX * C], z[TMAX * C], BC[TMAX * 2 * N], A[C * N], A16[C * N],
        D[C], s0[C * N], s1[C * N], y0[TMAX * C], y1[TMAX * C];
    static float in[TMAX * C], w[C * KC], w16[C * KC], bias[C], win0[C * KC], win1[C * KC],
        out0[TMAX * C], out1[TMAX * C];
    int ok = 1;
    for (int T = 1; T <= TMAX; T += 3) {
        fill(dt, TMAX * C, -3, 1);
        fill(x, TMAX * C, -1, 1);
        fill(z, TMAX * C, -2, 2);
        fill(BC, TMAX * 2 * N, -1, 1);
        for (int i = 0; i < C * N; i++) A[i] = -expf(urand(0, 2.8f));
        kernels_block16(A, C, N, A16);
        fill(D, C, -1, 1);
        fill(s0, C * N, -1, 1);
        memcpy(s1, s0, sizeof s0);
        scan1_args a = {.T = T, .c0 = 0, .c1 = C, .N = N, .dt = dt, .ldd = C, .x = x, .ldx = C,
                        .z = z, .ldz = C, .B = BC, .C = BC + N, .ldbc = 2 * N, .A = A, .A16 = A16,
                        .D = D, .s = s0, .y = y0, .ldy = C};
        ref->scan1(&a);
        a.s = s1;
        a.y = y1;
        kn->scan1(&a);
        for (int i = 0; i < T * C; i++) ok &= close_to(y1[i], y0[i], 1, 1e-5);
        for (int i = 0; i < C * N; i++) ok &= close_to(s1[i], s0[i], 1, 1e-5);
        CHECKF(ok, "%s: scan, T=%d", kn->name, T);

        fill(in, TMAX * C, -2, 2);
        fill(w, C * KC, -1, 1);
        kernels_block16(w, C, KC, w16);
        fill(bias, C, -0.5f, 0.5f);
        fill(win0, C * KC, -1, 1);
        memcpy(win1, win0, sizeof win0);
        conv_args c = {.T = T, .c0 = 0, .c1 = C, .K = KC, .in = in, .ld_in = C, .w = w,
                       .w16 = w16, .bias = bias, .win = win0, .out = out0, .ld_out = C};
        ref->conv(&c);
        c.win = win1;
        c.out = out1;
        kn->conv(&c);
        for (int i = 0; i < T * C; i++) ok &= close_to(out1[i], out0[i], 1, 1e-5);
        ok &= memcmp(win0, win1, sizeof win0) == 0; /* the window is data, moved exactly */
        CHECKF(ok, "%s: conv, T=%d", kn->name, T);
    }
}

/* One GEMM call of kn on rows [r0, r0 + M) and columns [lo, hi) of X W^T into Y (stride ldy). */
static void gemm_part(const kernels *kn, int wt, const float *X, int ldx, int r0, int M, int K,
                      const float *Wf, const uint16_t *W16, const uint16_t *Wp, const int8_t *W8,
                      const float *S8,
                      int lo, int hi, float *Y, int ldy)
{
    const float *x = X + (size_t)r0 * ldx;
    float *y = Y + (size_t)r0 * ldy + lo;
    const int n = hi - lo, nb = q8_blocks(K);
    if (wt == WF32)
        kn->gemm_small(x, M, K, ldx, Wf + (size_t)lo * K, n, y, ldy);
    else if (wt == WQ8)
        kn->gemm_small_q8(x, M, K, ldx, W8 + (size_t)lo * K, S8 + (size_t)lo * nb, n, y, ldy);
    else if (wt == WBF16)
        kn->gemm_small_bf16(x, M, K, ldx, Wp + (size_t)lo * K, n, y, ldy);
    else
        kn->gemm_small_f16(x, M, K, ldx, W16 + (size_t)lo * K, n, y, ldy);
}

/*
 * Batch invariance of the GEMMs: every row of a 70-row product (more than one panel of
 * dense.c's 64) computed again in calls of 1..17 and 33 rows starting anywhere, on any column
 * range, has the same bits. 8-bit weights from 2 rows on (one row sums its blocks in another
 * order, kernels.h), and also as the F32 kernel on the widened weights (prefill panels).
 */
/* No input rows: the products read no X and write no Y, on the far streams too (their path
 * takes up to four input rows). */
static void test_gemm_empty(const kernels *kn)
{
    enum { N = 64, K = 96 };
    static float Wf[N * K], Y[4 * N];
    static uint16_t W16[N * K];
    for (int i = 0; i < 4 * N; i++) Y[i] = 7.0f;
    kn->gemm_small(NULL, 0, K, K, Wf, N, Y, N);
    kn->gemm_small_bf16(NULL, 0, K, K, W16, N, Y, N);
    kn->gemm_small_f16(NULL, 0, K, K, W16, N, Y, N);
    int ok = 1;
    for (int i = 0; i < 4 * N; i++) ok &= Y[i] == 7.0f;
    CHECKF(ok, "%s: GEMM of no rows writes nothing", kn->name);
}

static void test_gemm_invariance(const kernels *kn)
{
    enum { MT = 70 };
    /* K = 1000 (from 15 rows) and 1544 (from 7): X and four F32 weight rows pass GS_L1_BYTES,
     * so the AVX-512 blocks run over k in chunks (kernels_simd.h gs_chunk), the last one with the
     * values past the last whole vector */
    static const int Ks[] = {17, 48, 100, 768, 1000, 1544};
    static const int Ns[] = {5, 37, 64};
    static const int Ms[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33};
    int ok = 1;
    for (size_t a = 0; a < sizeof Ks / sizeof Ks[0]; a++)
        for (size_t b = 0; b < sizeof Ns / sizeof Ns[0]; b++) {
            const int K = Ks[a], N = Ns[b], ldx = K + 1, ldy = N + 3, nb = q8_blocks(K);
            float *X = malloc(sizeof(float) * MT * ldx), *Wf = malloc(sizeof(float) * N * K);
            uint16_t *W16 = malloc(sizeof(uint16_t) * N * K);
            int8_t *W8 = malloc((size_t)N * K);
            float *S8 = malloc(sizeof(float) * N * nb);
            float *Y = malloc(sizeof(float) * MT * ldy), *Z = malloc(sizeof(float) * MT * ldy);
            fill(X, (size_t)MT * ldx, -1, 1);
            fill(Wf, (size_t)N * K, -2, 2);
            for (int i = 0; i < N * K; i++) W16[i] = to_bf16(Wf[i]);
            uint16_t *Wp = malloc(sizeof(uint16_t) * N * K); /* W16 in the pair layout (BF16) */
            bf16_pack_rows(W16, (size_t)N, K, Wp);
            for (int n = 0; n < N; n++)
                q8_quantize_row(Wf + (size_t)n * K, K, W8 + (size_t)n * K, S8 + (size_t)n * nb);
            for (int wt = WF32; wt <= WQ8; wt++) {
                gemm_part(kn, wt, X, ldx, 0, MT, K, Wf, W16, Wp, W8, S8, 0, N, Y, ldy);
                if (wt == WQ8) { /* dense.c's prefill: q8 rows widened, then the F32 kernel */
                    float *Wq = malloc(sizeof(float) * N * K);
                    for (int n = 0; n < N; n++)
                        kn->widen_q8(W8 + (size_t)n * K, S8 + (size_t)n * nb, K,
                                     Wq + (size_t)n * K);
                    memcpy(Z, Y, sizeof(float) * MT * ldy);
                    kn->gemm_small(X, MT, K, ldx, Wq, N, Z, ldy);
                    if (memcmp(Z, Y, sizeof(float) * MT * ldy) != 0) {
                        printf("  %s K=%d N=%d: q8 widened differs from q8\n", kn->name, K, N);
                        ok = 0;
                    }
                    free(Wq);
                }
                for (size_t c = 0; c < sizeof Ms / sizeof Ms[0]; c++) {
                    const int M = Ms[c];
                    if (wt == WQ8 && M == 1) continue;
                    const int starts[] = {0, 1, 5, 9, 16, 17, MT - M};
                    for (int si = 0; si < 7; si++) {
                        const int r0 = starts[si], lo = si % 3 == 1 ? 3 : 0;
                        const int hi = si % 3 == 2 ? N - 1 : N;
                        memcpy(Z, Y, sizeof(float) * MT * ldy);
                        gemm_part(kn, wt, X, ldx, r0, M, K, Wf, W16, Wp, W8, S8, lo, hi, Z, ldy);
                        if (memcmp(Z, Y, sizeof(float) * MT * ldy) != 0) {
                            printf("  %s wt=%d K=%d N=%d: rows [%d, %d) cols [%d, %d) differ\n",
                                   kn->name, wt, K, N, r0, r0 + M, lo, hi);
                            ok = 0;
                        }
                    }
                }
            }
            free(X);
            free(Wf);
            free(W16);
            free(Wp);
            free(W8);
            free(S8);
            free(Y);
            free(Z);
        }
    CHECKF(ok, "%s: GEMM rows invariant to the row count", kn->name);
}

/*
 * Batch invariance of the scan and the conv: T tokens in one call, and the same tokens split in
 * two calls at every point (one-token calls take the decode kernel), give the same outputs,
 * states, windows and decay sums, bit for bit.
 */
static void test_scan_invariance(const kernels *kn)
{
    enum { C = 48, N = 16, KC = 4, T = 70 }; /* past the many-token scan's 32 tokens ahead */
    static float dt[T * C], x[T * C], z[T * C], BC[T * 2 * N], A[C * N], A16[C * N], D[C];
    static float s0[C * N], s1[C * N], y0[T * C], y1[T * C], ds0[C], ds1[C], init[C * N];
    static float w[C * KC], w16[C * KC], bias[C], win0[C * KC], win1[C * KC], wini[C * KC];
    static float out0[T * C], out1[T * C];
    fill(dt, T * C, -3, 1);
    fill(x, T * C, -1, 1);
    fill(z, T * C, -2, 2);
    fill(BC, T * 2 * N, -1, 1);
    for (int i = 0; i < C * N; i++) A[i] = -expf(urand(0, 2.8f));
    kernels_block16(A, C, N, A16);
    fill(D, C, -1, 1);
    fill(init, C * N, -1, 1);
    fill(w, C * KC, -1, 1);
    kernels_block16(w, C, KC, w16);
    fill(bias, C, -0.5f, 0.5f);
    fill(wini, C * KC, -1, 1);
    int ok = 1;
    /* whole: one call of T tokens */
    memcpy(s0, init, sizeof s0);
    memset(ds0, 0, sizeof ds0);
    scan1_args a = {.T = T, .c0 = 0, .c1 = C, .N = N, .dt = dt, .ldd = C, .x = x, .ldx = C,
                    .z = z, .ldz = C, .B = BC, .C = BC + N, .ldbc = 2 * N, .A = A, .A16 = A16,
                    .D = D, .s = s0, .y = y0, .ldy = C, .dsum = ds0};
    kn->scan1(&a);
    memcpy(win0, wini, sizeof win0);
    conv_args cv = {.T = T, .c0 = 0, .c1 = C, .K = KC, .in = x, .ld_in = C, .w = w, .w16 = w16,
                    .bias = bias, .win = win0, .out = out0, .ld_out = C};
    kn->conv(&cv);
    for (int p = 1; p < T; p++) {
        memcpy(s1, init, sizeof s1);
        memset(ds1, 0, sizeof ds1);
        memcpy(win1, wini, sizeof win1);
        const int from[2] = {0, p}, n[2] = {p, T - p};
        for (int h = 0; h < 2; h++) {
            const size_t r = (size_t)from[h];
            scan1_args b = a;
            b.T = n[h];
            b.dt = dt + r * C;
            b.x = x + r * C;
            b.z = z + r * C;
            b.B = BC + r * 2 * N;
            b.C = BC + r * 2 * N + N;
            b.s = s1;
            b.y = y1 + r * C;
            b.dsum = ds1;
            kn->scan1(&b);
            conv_args c = cv;
            c.T = n[h];
            c.in = x + r * C;
            c.win = win1;
            c.out = out1 + r * C;
            kn->conv(&c);
        }
        const int same = !memcmp(y0, y1, sizeof y0) && !memcmp(s0, s1, sizeof s0) &&
                         !memcmp(ds0, ds1, sizeof ds0) && !memcmp(out0, out1, sizeof out0) &&
                         !memcmp(win0, win1, sizeof win0);
        if (!same)
            printf("  %s: scan/conv split at %d of %d differs (y %d s %d dsum %d conv %d %d)\n",
                   kn->name, p, T, !!memcmp(y0, y1, sizeof y0), !!memcmp(s0, s1, sizeof s0),
                   !!memcmp(ds0, ds1, sizeof ds0), !!memcmp(out0, out1, sizeof out0),
                   !!memcmp(win0, win1, sizeof win0));
        ok &= same;
    }
    CHECKF(ok, "%s: scan and conv invariant to the split of a span", kn->name);
}

/*
 * The one-token scan (decode) over more channels than it prepares at once (kernels.h
 * kernels_scan_ahead: softplus and SiLU of 128 channels ahead) and ranges that leave channels
 * over: both one-token kernels give the same bits, token after token, and stay close to the
 * recurrence in double (softplus, exp and SiLU of double). dt spans softplus's threshold (20) and
 * dt A far below -87.3 (where the float exp is clamped), A as a trained Mamba's (-exp(A_log)).
 */
static void test_scan_step(const kernels *kn)
{
    enum { C = 280, N = 16, T = 5 };
    static float dt[T * C], x[T * C], z[T * C], BC[T * 2 * N], A[C * N], A16[C * N], D[C];
    static float s[2][C * N], y[2][T * C], ds[2][C];
    static double sd[C * N], dsd[C];
    const int ranges[2][2] = {{0, C}, {32, C - 16}};
    int ok = 1, same = 1;
    for (int r = 0; r < 2; r++) {
        const int c0 = ranges[r][0], c1 = ranges[r][1];
        fill(dt, T * C, -6, 4);
        for (int i = 0; i < C; i += 7) dt[i] = urand(18, 30); /* large: softplus(dt) = dt */
        fill(x, T * C, -1, 1);
        fill(z, T * C, -3, 3);
        fill(BC, T * 2 * N, -1, 1);
        for (int i = 0; i < C * N; i++) A[i] = -expf(urand(-1, 3.5f));
        kernels_block16(A, C, N, A16);
        fill(D, C, -1, 1);
        fill(s[0], C * N, -1, 1);
        memcpy(s[1], s[0], sizeof s[0]);
        for (int i = 0; i < C * N; i++) sd[i] = s[0][i];
        memset(ds, 0, sizeof ds);
        memset(dsd, 0, sizeof dsd);
        memset(y, 0, sizeof y);
        for (int t = 0; t < T; t++) {
            for (int v = 0; v < 2; v++) { /* v: kernels_scan_ahead */
                scan1_args a = {.T = 1, .c0 = c0, .c1 = c1, .N = N, .dt = dt + t * C, .ldd = C,
                                .x = x + t * C, .ldx = C, .z = z + t * C, .ldz = C,
                                .B = BC + t * 2 * N, .C = BC + t * 2 * N + N, .ldbc = 2 * N,
                                .A = A, .A16 = A16, .D = D, .s = s[v], .y = y[v] + t * C,
                                .ldy = C, .dsum = ds[v]};
                kernels_scan_ahead = v;
                kn->scan1(&a);
            }
            const float *B = BC + t * 2 * N, *Cc = B + N;
            for (int i = c0; i < c1; i++) {
                const double raw = dt[t * C + i], d = raw > 20 ? raw : log1p(exp(raw));
                const double xi = x[t * C + i], zi = z[t * C + i];
                double acc = 0;
                dsd[i] += d;
                for (int n = 0; n < N; n++) {
                    double *sn = &sd[(size_t)i * N + n];
                    *sn = exp(d * A[i * N + n]) * *sn + d * xi * B[n];
                    acc += *sn * Cc[n];
                }
                const double want = (acc + D[i] * xi) * (zi / (1 + exp(-zi)));
                ok &= close_to(y[1][t * C + i], want, 1, 1e-5);
            }
        }
        kernels_scan_ahead = 1;
        same &= !memcmp(y[0], y[1], sizeof y[0]) && !memcmp(s[0], s[1], sizeof s[0]) &&
                !memcmp(ds[0], ds[1], sizeof ds[0]);
        for (int i = c0; i < c1; i++) {
            ok &= close_to(ds[1][i], dsd[i], 1, 1e-6);
            for (int n = 0; n < N; n++)
                ok &= close_to(s[1][(size_t)i * N + n], sd[(size_t)i * N + n], 1, 1e-5);
        }
        /* channels outside the range untouched */
        for (int i = 0; i < C; i++)
            if (i < c0 || i >= c1) ok &= ds[1][i] == 0 && y[1][i] == 0;
    }
    CHECKF(ok, "%s: one-token scan close to double", kn->name);
    CHECKF(same, "%s: one-token scan kernels (scan_ahead 1, 0) give the same bits", kn->name);
}

static void test_small_kernels(const kernels *kn)
{
    enum { NMAX = 1000 };
    static float v[NMAX];
    static uint16_t h[NMAX];
    static float wide[NMAX];
    int ok = 1;

    for (int n = 1; n <= NMAX; n = n * 2 + 1) {
        fill(v, (size_t)n, -30, 30);
        v[n / 2] = 31; /* the maximum, also repeated later: the first one wins */
        if (n > 2) v[n - 1] = 31;
        if (n > 4) v[n / 2 + 1] = 31; /* in the same vector too: its first lane that matches */
        double mx = -INFINITY, sum = 0;
        for (int i = 0; i < n; i++) mx = v[i] > mx ? v[i] : mx;
        for (int i = 0; i < n; i++) sum += exp(v[i] - mx);
        ok &= close_to(kn->logsumexp(v, n), mx + log(sum), 0, 1e-6);
        ok &= close_to(kn->logsumexp_at(v, n, (float)mx), mx + log(sum), 0, 1e-6);
        ok &= kn->argmax(v, n) == n / 2;
    }
    CHECKF(ok, "%s: logsumexp and argmax", kn->name);

    for (int i = 0; i < NMAX; i++) h[i] = (uint16_t)(i * 65.537); /* spread over all patterns */
    kn->widen_bf16(h, wide, NMAX);
    for (int i = 0; i < NMAX; i++) {
        float want = bf16_to_f32(h[i]);
        ok &= memcmp(&wide[i], &want, 4) == 0;
    }
    /* a pair-layout row, every K % 32 tail: each value where bf16_pair_pos puts it */
    static uint16_t hp[NMAX];
    for (int K = 1; K <= NMAX; K = K * 2 + 7) {
        bf16_pack_rows(h, 1, K, hp);
        const int kg = K / 32 * 32; /* the layout's definition (kernels.h) */
        for (int g = 0; g < kg; g += 32)
            for (int i = 0; i < 16; i++)
                ok &= hp[g + 2 * i] == h[g + i] && hp[g + 2 * i + 1] == h[g + 16 + i];
        for (int k = 0; k < K; k++)
            ok &= hp[bf16_pair_pos(K, k)] == h[k] && (k < kg || hp[k] == h[k]);
        kn->widen_bf16_pairs(hp, K, wide);
        for (int k = 0; k < K; k++) {
            float want = bf16_to_f32(h[k]);
            ok &= memcmp(&wide[k], &want, 4) == 0;
        }
    }
    kn->widen_f16(h, wide, NMAX);
    for (int i = 0; i < NMAX; i++) {
        float want = f16_to_f32(h[i]);
        ok &= memcmp(&wide[i], &want, 4) == 0 || (isnan(want) && isnan(wide[i]));
    }
    CHECKF(ok, "%s: widen", kn->name);

    /* 8-bit rows: every K % 32 tail, a zero block, widening exactly s * q */
    static int8_t q[NMAX];
    static float s[(NMAX + 31) / 32];
    for (int K = 1; K <= NMAX; K = K * 2 + 7) {
        fill(v, (size_t)K, -3, 3);
        for (int k = 0; k < K && k < 32; k++) v[k] = 0;
        q8_quantize_row(v, K, q, s);
        kn->widen_q8(q, s, K, wide);
        for (int k = 0; k < K; k++) {
            float want = (float)q[k] * s[k / 32];
            ok &= memcmp(&wide[k], &want, 4) == 0;
        }
    }
    CHECKF(ok, "%s: widen q8", kn->name);
}

/* The quantiser against its definition: scale = max |w| / 127 per block of 32, q = round(w/s). */
static void test_quantize(void)
{
    enum { K = 200 };
    float w[K];
    int8_t q[K];
    float s[(K + 31) / 32];
    int ok = 1;
    fill(w, K, -5, 5);
    for (int k = 64; k < 96; k++) w[k] = 0; /* an all-zero block: scale 0, q 0 */
    w[5] = -7.5f;                           /* the extreme of its block maps to -127 */
    ok &= q8_quantize_row(w, K, q, s) == 0;
    for (int b = 0; b * 32 < K; b++) {
        double amax = 0;
        for (int k = b * 32; k < K && k < b * 32 + 32; k++) amax = fmax(amax, fabs(w[k]));
        ok &= close_to(s[b], amax / 127, 0, 1e-6);
        for (int k = b * 32; k < K && k < b * 32 + 32; k++) {
            /* within half a step of the weight (plus the float division's rounding) */
            ok &= fabs((double)q[k] * s[b] - w[k]) <= 0.5 * s[b] * (1 + 1e-5) + 1e-30;
            ok &= q[k] != -128;
        }
    }
    ok &= q[5] == -127 && s[2] == 0 && q[70] == 0;
    w[100] = NAN;
    ok &= q8_quantize_row(w, K, q, s) == -1;
    w[100] = INFINITY;
    ok &= q8_quantize_row(w, K, q, s) == -1;
    CHECKF(ok, "q8 quantiser");
}

/*
 * Batch-1 decode with 8-bit activations (gemv_q8a8): against double on the quantised values
 * (s_w q_w times s_x q_x), for every K % 64 and K % 32 tail, row counts around the 4-row blocks,
 * activations with an all-zero block and an outlier; then a non-finite activation makes the
 * outputs NaN, as the F32 path's would be.
 */
/* kernels_avx2()->gemv_q8a8 where the CPU has AVX2 (main) */
static void (*avx2_q8a8)(const q8_act *, const int8_t *, const float *, int, float *);

static int check_gemv_q8a8(const kernels *kn, int N, int K, void *mem)
{
    const int nb = q8_blocks(K);
    float *x = malloc(sizeof(float) * K), *Wf = malloc(sizeof(float) * (size_t)N * K);
    int8_t *W8 = malloc((size_t)N * K);
    float *S8 = malloc(sizeof(float) * (size_t)N * nb), *Y = malloc(sizeof(float) * (N + 1));
    fill(x, (size_t)K, -1, 1);
    for (int k = 32; k < 64 && k < K; k++) x[k] = 0; /* an all-zero block */
    if (K > 70) x[70] = 40;                           /* an outlier: its block's scale */
    fill(Wf, (size_t)N * K, -2, 2);
    for (int n = 0; n < N; n++)
        q8_quantize_row(Wf + (size_t)n * K, K, W8 + (size_t)n * K, S8 + (size_t)n * nb);
    q8_act a;
    q8_act_init(&a, mem, K);
    kn->quantize_act8(&a, x);
    Y[N] = 12345; /* nothing written past N */
    kn->gemv_q8a8(&a, W8, S8, N, Y);
    int ok = Y[N] == 12345;
    for (int n = 0; n < N && ok; n++) {
        double want = 0, mag = 0;
        for (int k = 0; k < K; k++) {
            double p = ((double)W8[(size_t)n * K + k] * S8[(size_t)n * nb + k / 32]) *
                       ((double)a.q[k] * a.s[k / 32]);
            want += p;
            mag += fabs(p);
        }
        if (!close_to(Y[n], want, mag, 2e-6)) {
            printf("  %s gemv_q8a8 N=%d K=%d: y[%d] = %.9g, want %.9g\n", kn->name, N, K, n, Y[n],
                   want);
            ok = 0;
        }
    }
    /* the rows' grouping (four far streams from 16 rows on, blocks of four, one) changes no
     * bits: each row again alone (the AVX2 form pairs four rows' sums, so its blocks of four
     * differ from one row in the last bits; its blocks always start at a multiple of 4) */
    for (int n = 0; n < N && ok && kn->gemv_q8a8 != avx2_q8a8; n++) {
        float y1;
        kn->gemv_q8a8(&a, W8 + (size_t)n * K, S8 + (size_t)n * nb, 1, &y1);
        if (memcmp(&y1, &Y[n], sizeof y1) != 0) {
            printf("  %s gemv_q8a8 N=%d K=%d: row %d alone %.9g, in the call %.9g\n", kn->name, N,
                   K, n, y1, Y[n]);
            ok = 0;
        }
    }
    x[K / 2] = K % 2 ? INFINITY : NAN;
    kn->quantize_act8(&a, x);
    kn->gemv_q8a8(&a, W8, S8, N, Y);
    for (int n = 0; n < N; n++) ok &= isnan(Y[n]);
    free(x);
    free(Wf);
    free(W8);
    free(S8);
    free(Y);
    return ok;
}

static void test_gemv_q8a8(const kernels *kn)
{
    static const int Ns[] = {1, 3, 4, 5, 8, 9, 16, 33, 67};
    static const int Ks[] = {1, 15, 31, 32, 33, 48, 63, 64, 65, 96, 100, 127, 128, 768, 1536};
    void *mem = aligned_alloc(64, q8_act_bytes(1536));
    int ok = 1;
    for (size_t a = 0; a < sizeof Ns / sizeof Ns[0]; a++)
        for (size_t b = 0; b < sizeof Ks / sizeof Ks[0]; b++)
            ok &= check_gemv_q8a8(kn, Ns[a], Ks[b], mem);
    free(mem);
    CHECKF(ok, "%s: 8-bit activations (gemv_q8a8)", kn->name);
}

/* Every kernel set's activation quantiser gives q8_act_quantize's bytes: every K % 32 tail, a
 * zero block, NaN and infinite values, a tie (x * 127 / max exactly n + 0.5). */
static void test_quantize_act_same(const kernels *kn)
{
    enum { KMAX = 300 };
    float x[KMAX];
    const size_t bytes = q8_act_bytes(KMAX);
    void *m1 = aligned_alloc(64, bytes), *m2 = aligned_alloc(64, bytes);
    int ok = 1;
    for (int K = 1; K <= KMAX; K += K < 70 ? 1 : 37) {
        fill(x, (size_t)K, -3, 3);
        for (int k = 32; k < 64 && k < K; k++) x[k] = 0;
        if (K > 70) x[70] = NAN;
        if (K > 100) x[100] = -INFINITY;
        if (K > 130) { /* a block whose max is 127: x = 2.5 rounds to 2 (ties to even) */
            for (int k = 128; k < 160 && k < K; k++) x[k] = (float)(k % 5) - 2.5f;
            x[128] = 127;
        }
        q8_act a, b;
        memset(m1, 0x5a, bytes); /* the quantisers must write the padding too */
        memset(m2, 0xa5, bytes);
        q8_act_init(&a, m1, K);
        q8_act_init(&b, m2, K);
        q8_act_quantize(&a, x);
        kn->quantize_act8(&b, x);
        const size_t Kp = ((size_t)K + 63) / 64 * 64, ns = (Kp / 32 + 15) / 16 * 16;
        if (memcmp(a.q, b.q, Kp) || memcmp(a.aq, b.aq, Kp) || memcmp(a.neg, b.neg, Kp / 8) ||
            memcmp(a.s, b.s, ns * sizeof(float))) {
            printf("  %s quantize_act8 K=%d differs from q8_act_quantize\n", kn->name, K);
            ok = 0;
        }
    }
    free(m1);
    free(m2);
    CHECKF(ok, "%s: 8-bit activation quantiser, same bytes", kn->name);
}

/* The activation quantiser: as the weights' (scale max|x| / 127, q = round(x / s)) and the
 * kernels' forms of q (|q|, sign bits, zero padding to 64). */
static void test_quantize_act(void)
{
    enum { K = 200 };
    float x[K];
    void *mem = aligned_alloc(64, q8_act_bytes(K));
    q8_act a;
    int ok = 1;
    fill(x, K, -5, 5);
    for (int k = 64; k < 96; k++) x[k] = 0;
    x[5] = -7.5f;
    memset(mem, 0x5a, q8_act_bytes(K)); /* the quantiser must clear the padding */
    q8_act_init(&a, mem, K);
    q8_act_quantize(&a, x);
    int8_t qw[K];
    float sw[(K + 31) / 32];
    q8_quantize_row(x, K, qw, sw);
    for (int k = 0; k < 256; k++) {
        const int neg = (int)(a.neg[k / 64] >> (k % 64) & 1);
        if (k >= K) {
            ok &= a.q[k] == 0 && a.aq[k] == 0 && !neg;
            continue;
        }
        ok &= fabs((double)a.q[k] * a.s[k / 32] - x[k]) <= 0.5 * a.s[k / 32] * (1 + 1e-5) + 1e-30;
        ok &= abs(a.q[k] - qw[k]) <= 1 && a.q[k] != -128; /* the weights' quantiser, up to ties */
        ok &= a.aq[k] == abs(a.q[k]) && neg == (a.q[k] < 0);
    }
    for (int b = 0; b < 8; b++)
        ok &= b < (K + 31) / 32 ? close_to(a.s[b], sw[b], 0, 1e-7) : a.s[b] == 0;
    ok &= a.q[5] == -127 && a.s[2] == 0;
    free(mem);
    CHECKF(ok, "8-bit activation quantiser");
}

/*
 * gemm_t (transposed weights): every output must be exactly the fmaf chain over k in order
 * (the kernels' contract: the same bits from every ISA, M, N and column offset), stored or added
 * to what Y held, and close to the double product. bw > 0: the same matrix in the far layout
 * (columns in blocks of bw, each block's rows contiguous, blocks bs apart; kernels.h
 * far_t_width; ldw and col multiples of bw, not 8-bit) must give the same bits.
 */
static int check_gemm_t(const kernels *kn, int wt, int M, int N, int K, int ldw, int col, int add,
                        int bw)
{
    const int lds = q8_blocks(ldw), ldx = K + 3, ldy = N + 5;
    float *X = malloc(((size_t)M * ldx + 1) * sizeof *X);
    float *Wf =
        malloc(((size_t)K * ldw + 1) * sizeof *Wf); /* the weights as the kernel sees them */
    uint16_t *W16 = malloc(((size_t)K * ldw + 1) * sizeof *W16);
    int8_t *Q = malloc((size_t)K * ldw + 1);
    float *S = malloc(((size_t)K * lds + 1) * sizeof *S);
    float *Y = malloc(((size_t)M * ldy + 1) * sizeof *Y),
          *Y0 = malloc(((size_t)M * ldy + 1) * sizeof *Y0);
    fill(X, (size_t)M * ldx, -2, 2);
    fill(Wf, (size_t)K * ldw, -1, 1);
    for (int k = 0; k < K; k++) {
        float *w = Wf + (size_t)k * ldw;
        for (int n = 0; n < ldw; n++) {
            if (wt == WBF16) w[n] = bf16_to_f32(W16[(size_t)k * ldw + n] = to_bf16(w[n]));
            if (wt == WF16) w[n] = f16_to_f32(W16[(size_t)k * ldw + n] = to_f16(w[n]));
        }
        if (wt == WQ8) q8_quantize_row(w, ldw, Q + (size_t)k * ldw, S + (size_t)k * lds);
    }
    fill(Y0, (size_t)M * ldy, -3, 3);
    memcpy(Y, Y0, (size_t)M * ldy * sizeof *Y);
    const size_t off = (size_t)col;
    /* the far layout: block c [K][bw] at c bs (bs past K bw: the blocks need not touch) */
    const size_t bs = (size_t)K * bw + 16, nbk = bw ? (size_t)(ldw / bw) : 0;
    float *Bf = malloc((nbk * bs + 1) * sizeof *Bf);
    uint16_t *B16 = malloc((nbk * bs + 1) * sizeof *B16);
    for (size_t c = 0; c < nbk; c++)
        for (int k = 0; k < K; k++)
            for (int j = 0; j < bw; j++) {
                const size_t from = (size_t)k * ldw + c * bw + j, to = c * bs + (size_t)k * bw + j;
                Bf[to] = Wf[from];
                B16[to] = wt == WF32 ? 0 : W16[from];
            }
    const size_t boff = bw ? (size_t)(col / bw) * bs : 0;
    if (wt == WF32 && bw)
        kn->gemm_t(X, M, K, ldx, Bf + boff, bw, bw, bs, N, Y, ldy, add);
    else if (wt == WBF16 && bw)
        kn->gemm_t_bf16(X, M, K, ldx, B16 + boff, bw, bw, bs, N, Y, ldy, add);
    else if (wt == WF16 && bw)
        kn->gemm_t_f16(X, M, K, ldx, B16 + boff, bw, bw, bs, N, Y, ldy, add);
    else if (wt == WF32)
        kn->gemm_t(X, M, K, ldx, Wf + off, ldw, N, 0, N, Y, ldy, add);
    else if (wt == WBF16)
        kn->gemm_t_bf16(X, M, K, ldx, W16 + off, ldw, N, 0, N, Y, ldy, add);
    else if (wt == WF16)
        kn->gemm_t_f16(X, M, K, ldx, W16 + off, ldw, N, 0, N, Y, ldy, add);
    else
        kn->gemm_t_q8(X, M, K, ldx, Q + off, ldw, S + col / Q8_BLOCK, lds, N, Y, ldy, add);
    int bad = 0;
    for (int m = 0; m < M && !bad; m++)
        for (int n = 0; n < N && !bad; n++) {
            float acc = 0;
            double dref = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                const size_t wi = (size_t)k * ldw + off + (size_t)n;
                const float x = X[(size_t)m * ldx + k];
                if (wt == WQ8) {
                    const float s = S[(size_t)k * lds + (col + n) / Q8_BLOCK];
                    acc = fmaf((float)Q[wi], s * x, acc);
                    dref += (double)Q[wi] * s * x;
                    mag += fabs((double)Q[wi] * s * x);
                } else {
                    acc = fmaf(Wf[wi], x, acc);
                    dref += (double)Wf[wi] * x;
                    mag += fabs((double)Wf[wi] * x);
                }
            }
            const float y0 = Y0[(size_t)m * ldy + n];
            const float want = add ? y0 + acc : acc;
            const float got = Y[(size_t)m * ldy + n];
            /* (the double check on stored sums only: y0 + sum rounds the sum away) */
            if (memcmp(&got, &want, sizeof got) || (!add && !close_to(got, dref, mag, 1e-5))) {
                printf("  gemm_t %s wt %d M %d N %d K %d ldw %d col %d add %d bw %d: y[%d][%d] = "
                       "%.9g, the fmaf chain gives %.9g (double %.9g)\n",
                       kn->name, wt, M, N, K, ldw, col, add, bw, m, n, got, want, dref);
                bad = 1;
            }
        }
    /* columns past N and rows' padding untouched */
    for (int m = 0; m < M && !bad; m++)
        for (int n = N; n < ldy; n++)
            if (memcmp(&Y[(size_t)m * ldy + n], &Y0[(size_t)m * ldy + n], sizeof *Y)) {
                printf("  gemm_t %s wrote y[%d][%d] past N = %d\n", kn->name, m, n, N);
                bad = 1;
                break;
            }
    free(X);
    free(Wf);
    free(W16);
    free(Bf);
    free(B16);
    free(Q);
    free(S);
    free(Y);
    free(Y0);
    return !bad;
}

static void test_gemm_t(const kernels *kn)
{
    /* M, N, K, ldw, col: decode's x_proj (N = 80) and out_proj rows, the tiles' edges (N % 16,
     * M % 4), empty K and N, columns from an offset (a thread's share; 8-bit at a block); one
     * row over GT_KB-row blocks and a K % GT_KB tail, 130m's out_proj segment (N = d_inner) */
    static const int shapes[][5] = {{1, 80, 96, 80, 0},    {1, 768, 96, 768, 0},
                                    {1, 19, 5, 19, 0},     {3, 37, 17, 40, 0},
                                    {4, 64, 33, 64, 0},    {7, 130, 48, 200, 32},
                                    {16, 768, 64, 768, 0}, {5, 96, 1, 160, 64},
                                    {1, 33, 0, 64, 0},     {2, 0, 9, 16, 0},
                                    {1, 4200, 3, 4200, 0}, {6, 17, 70, 64, 32},
                                    {1, 130, 37, 200, 32}, {1, 1536, 96, 1600, 64}};
    int ok = 1;
    for (int wt = WF32; wt <= WQ8; wt++)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            for (int add = 0; add < 2; add++)
                ok &= check_gemm_t(kn, wt, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3],
                                   shapes[i][4], add, 0);
    /* the far layout, M, N, K, ldw, col, bw: 130m's and 370m's out_proj segments at one row
     * (four far streams), a K % GT_KB tail, two blocks and a part one (N % bw, and N % 16 in
     * it), a column offset on a block, tiles (M > 1) block by block, three blocks of one AVX2
     * vector, widths that are not whole AVX-512 vectors, blocks wider than the one-row buffer
     * together, the tiny fixtures' out_proj (blocks of 16), four blocks and a part one */
    static const int far[][6] = {{1, 768, 96, 768, 0, 192},  {1, 1024, 128, 1024, 0, 256},
                                 {1, 768, 97, 768, 0, 192},  {1, 80, 33, 96, 0, 32},
                                 {1, 72, 9, 96, 0, 32},      {1, 64, 5, 128, 64, 32},
                                 {3, 768, 40, 768, 0, 192},  {16, 768, 17, 768, 0, 192},
                                 {1, 48, 7, 48, 0, 16},      {1, 40, 7, 48, 0, 24},
                                 {1, 8192, 3, 8192, 0, 2048}, {5, 100, 6, 128, 0, 64},
                                 {1, 64, 5, 64, 0, 16},      {1, 136, 9, 160, 0, 32},
                                 {1, 112, 6, 128, 0, 24}};
    for (int wt = WF32; wt <= WF16; wt++)
        for (size_t i = 0; i < sizeof far / sizeof far[0]; i++)
            for (int add = 0; add < 2; add++)
                ok &= check_gemm_t(kn, wt, far[i][0], far[i][1], far[i][2], far[i][3], far[i][4],
                                   add, far[i][5]);
    /* a NaN input reaches the outputs of its row */
    float X[2 * 8], W[8 * 32], Y[2 * 32];
    fill(X, 16, -1, 1);
    fill(W, 256, -1, 1);
    X[8 + 3] = NAN;
    kn->gemm_t(X, 2, 8, 8, W, 32, 32, 0, 32, Y, 32, 0);
    for (int n = 0; n < 32; n++) ok &= isfinite(Y[n]) && isnan(Y[32 + n]);
    CHECKF(ok, "%s gemm_t: exact fmaf chains (all weight types, tails, add, offsets, the far "
               "layout)", kn->name);
}

/*
 * The q8k layout (8-bit weights transposed, scales along k after each block's values): its
 * bytes where kernels.h puts them (written out here: block b's row r at (9 b + r) 4 Nt, its
 * scales at (9 b + 8) 4 Nt); gemv_t_q8ka8 (8-bit activations) and gemm_t_q8k (F32
 * activations) on a segment [k0, k0 + K) and columns [n0, n0 + N) of a matrix W [Nt, Kt]
 * quantised per row: each output bitwise against the generic kernel and the formula of
 * kernels.h written out here on q8k_at and the scales' offsets (the layout read back), close
 * to double on the dequantised weights, nothing written past N; a non-finite activation makes
 * its outputs NaN.
 */
static int check_q8k(const kernels *kn, int M, int Nt, int Kt, int N, int n0, int k0, int K)
{
    const int nbt = q8_blocks(Kt), nb = q8_blocks(K), ldx = K + 3, ldy = N + 5;
    float *Wf = malloc(((size_t)Nt * Kt + 1) * sizeof *Wf), *srow = malloc((size_t)nbt * 4);
    int8_t *qrow = malloc((size_t)Kt + 1);
    uint8_t *W = malloc(q8k_bytes(Nt, Kt) + 1);
    float *X = malloc(((size_t)M * ldx + 1) * sizeof *X);
    float *Y = malloc(((size_t)M * ldy + 1) * sizeof *Y);
    float *Yg = malloc(((size_t)M * ldy + 1) * sizeof *Y);
    void *mem = aligned_alloc(64, q8_act_bytes(K));
    const size_t ldw = 4 * (size_t)Nt;
    int ok = 1;
    fill(Wf, (size_t)Nt * Kt, -1, 1);
    for (int n = 0; n < Nt; n++) {
        if (n == 3) /* an all-zero block and an outlier */
            for (int k = 0; k < Kt; k++)
                if (k < 32 || k == 40) Wf[(size_t)n * Kt + k] = k < 32 ? 0 : 9;
        q8_quantize_row(Wf + (size_t)n * Kt, Kt, qrow, srow);
        q8k_put_row(W, Nt, Kt, n, qrow, srow);
        for (int k = 0; k < nbt * 32; k++) /* the values (128 past Kt), then the scales */
            ok &= W[(size_t)(9 * (k / 32) + k % 32 / 4) * ldw + 4 * (size_t)n + (size_t)(k % 4)] ==
                  (uint8_t)((k < Kt ? qrow[k] : 0) + 128);
        for (int b = 0; b < nbt; b++)
            ok &= !memcmp(W + (size_t)(9 * b + 8) * ldw + 4 * (size_t)n, &srow[b], 4);
    }
    if (!ok) printf("  q8k layout Nt %d Kt %d: a byte not where kernels.h puts it\n", Nt, Kt);
    fill(X, (size_t)M * ldx, -2, 2);
    for (int k = 32; k < 64 && k < K; k++) X[k] = 0; /* row 0: a zero block, an outlier */
    if (K > 70) X[70] = 30;
    const uint8_t *Wp = W + (size_t)(k0 / Q8_BLOCK) * Q8K_ROWS * ldw + 4 * (size_t)n0;
    for (int pass = 0; pass < 2; pass++) { /* 0: F32 activations, 1: 8-bit */
        q8_act a;
        q8_act_init(&a, mem, K);
        if (pass) kn->quantize_act8(&a, X);
        const int rows = pass ? 1 : M;
        for (int i = 0; i < M * ldy; i++) Y[i] = Yg[i] = 12345;
        if (pass) {
            kn->gemv_t_q8ka8(&a, Wp, ldw, N, Y);
            kernels_generic()->gemv_t_q8ka8(&a, Wp, ldw, N, Yg);
        } else {
            kn->gemm_t_q8k(X, M, K, ldx, Wp, ldw, N, Y, ldy);
            kernels_generic()->gemm_t_q8k(X, M, K, ldx, Wp, ldw, N, Yg, ldy);
        }
        for (int m = 0; m < rows && ok; m++) {
            for (int n = N; n < ldy; n++) ok &= Y[(size_t)m * ldy + n] == 12345;
            for (int n = 0; n < N && ok; n++) {
                float acc = 0;
                double want = 0, mag = 0;
                for (int b = 0; b < nb; b++) {
                    int32_t isum = 0;
                    float t = 0;
                    float sw; /* written out: the segment's block b's row of scales */
                    memcpy(&sw, Wp + (size_t)(9 * b + 8) * ldw + 4 * (size_t)n, 4);
                    for (int k = b * 32; k < b * 32 + 32 && k < K; k++) {
                        const int q = q8k_at(W, Nt, n0 + n, k0 + k);
                        const double x = pass ? (double)a.q[k] * a.s[b] : X[(size_t)m * ldx + k];
                        isum += q * (pass ? a.q[k] : 0);
                        t = fmaf((float)q, X[(size_t)m * ldx + k], t);
                        want += q * (double)sw * x;
                        mag += fabs(q * (double)sw * x);
                    }
                    acc = pass ? fmaf((float)isum, sw * a.s[b], acc) : fmaf(t, sw, acc);
                }
                const float got = Y[(size_t)m * ldy + n], gen = Yg[(size_t)m * ldy + n];
                if (memcmp(&got, &acc, 4) || memcmp(&gen, &acc, 4) ||
                    !close_to(got, want, mag, 2e-6)) {
                    printf("  %s q8k %s M %d Nt %d Kt %d N %d n0 %d k0 %d K %d: y[%d][%d] = %.9g, "
                           "generic %.9g, formula %.9g, double %.9g\n",
                           kn->name, pass ? "a8" : "f32", M, Nt, Kt, N, n0, k0, K, m, n, got,
                           gen, acc, want);
                    ok = 0;
                }
            }
        }
        /* a NaN / an infinite activation: NaN in every output of its row */
        if (N > 0 && K > 0) {
            const int kbad = K / 2, m = M - 1;
            const float keep = X[(size_t)m * ldx + kbad];
            X[(size_t)m * ldx + kbad] = pass && K % 2 ? INFINITY : NAN;
            if (pass) {
                kn->quantize_act8(&a, X + (size_t)m * ldx);
                kn->gemv_t_q8ka8(&a, Wp, ldw, N, Y);
                for (int n = 0; n < N; n++) ok &= isnan(Y[n]);
            } else {
                kn->gemm_t_q8k(X, M, K, ldx, Wp, ldw, N, Y, ldy);
                for (int n = 0; n < N; n++) ok &= isnan(Y[(size_t)m * ldy + n]);
                for (int n = 0; n < N && m > 0; n++) ok &= isfinite(Y[n]);
            }
            X[(size_t)m * ldx + kbad] = keep;
            if (!ok)
                printf("  %s q8k %s: a NaN activation, M %d N %d K %d\n", kn->name,
                       pass ? "a8" : "f32", M, N, K);
        }
    }
    free(Wf);
    free(srow);
    free(qrow);
    free(W);
    free(X);
    free(Y);
    free(Yg);
    free(mem);
    return ok;
}

static void test_q8k(const kernels *kn)
{
    /* M, Nt, Kt, N, n0, k0, K: 130m's x_proj and out_proj segments (from a segment inside the
     * matrix), K % 32 and K % 4 tails, N around 8- and 16-lane vectors and the 4- and 8-vector
     * tiles, column offsets (any n0), rows around the F32 kernel's row tiles */
    static const int shapes[][7] = {
        {1, 80, 1536, 80, 0, 0, 96},      {1, 768, 1536, 768, 0, 96, 96},
        {1, 768, 1536, 768, 0, 1440, 96}, {16, 768, 192, 768, 0, 96, 96},
        {3, 37, 17, 37, 0, 0, 17},        {4, 64, 64, 48, 16, 32, 32},
        {5, 130, 70, 130, 0, 0, 70},      {7, 200, 100, 130, 33, 64, 36},
        {2, 9, 33, 9, 0, 0, 33},          {1, 19, 5, 19, 0, 0, 5},
        {6, 300, 256, 283, 17, 0, 256},   {1, 1536, 128, 1536, 0, 0, 128},
        {8, 129, 96, 129, 0, 32, 64},     {1, 16, 32, 0, 0, 0, 32},
        {2, 255, 512, 250, 5, 480, 32},   {9, 48, 512, 48, 0, 0, 512}};
    int ok = 1;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        ok &= check_q8k(kn, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], shapes[i][4],
                        shapes[i][5], shapes[i][6]);
    CHECKF(ok, "%s q8k layout: 8-bit and F32 activations, the same bits as the generic kernel",
           kn->name);
}

/*
 * The q8p layout (panels of Q8P_W outputs, each a q8k matrix): gemv_q8p_a8 over outputs [lo, hi)
 * of W [N, K] quantised per row, each output bitwise the formula of kernels.h on its panel read
 * back (q8k_at) and close to double on the dequantised weights, nothing written past hi - lo; a
 * NaN activation makes every output NaN.
 */
static int check_q8p(const kernels *kn, int N, int K, int lo, int hi)
{
    const int nb = q8_blocks(K), np = q8p_panels(N);
    const size_t pb = q8p_panel_bytes(K);
    float *Wf = malloc(((size_t)N * K + 1) * sizeof *Wf), *srow = malloc((size_t)nb * 4 + 4);
    int8_t *qrow = malloc((size_t)K + 1);
    uint8_t *W = malloc(np * pb + 1);
    float *X = malloc(((size_t)K + 1) * sizeof *X);
    float *Y = malloc(((size_t)(hi - lo) + 8) * sizeof *Y);
    void *mem = aligned_alloc(64, q8_act_bytes(K));
    fill(Wf, (size_t)N * K, -1, 1);
    for (int n = 0; n < np * Q8P_W; n++) { /* the last panel padded with zeros, as the loader */
        if (n < N)
            q8_quantize_row(Wf + (size_t)n * K, K, qrow, srow);
        else
            memset(qrow, 0, (size_t)K), memset(srow, 0, (size_t)nb * 4);
        q8k_put_row(W + (size_t)(n / Q8P_W) * pb, Q8P_W, K, n % Q8P_W, qrow, srow);
    }
    fill(X, (size_t)K, -2, 2);
    if (K > 70) X[70] = 30;
    q8_act a;
    q8_act_init(&a, mem, K);
    kn->quantize_act8(&a, X);
    for (int i = 0; i < hi - lo + 8; i++) Y[i] = 12345;
    kn->gemv_q8p_a8(&a, W, lo, hi, Y);
    int ok = 1;
    for (int i = hi - lo; i < hi - lo + 8; i++) ok &= Y[i] == 12345;
    for (int n = lo; n < hi && ok; n++) {
        const uint8_t *Wp = W + (size_t)(n / Q8P_W) * pb;
        float acc = 0;
        double want = 0, mag = 0;
        for (int b = 0; b < nb; b++) {
            int32_t isum = 0;
            float sw; /* written out: block b's row of scales in the panel */
            memcpy(&sw, Wp + (size_t)(9 * b + 8) * 4 * Q8P_W + 4 * (size_t)(n % Q8P_W), 4);
            for (int k = b * 32; k < b * 32 + 32 && k < K; k++) {
                const int q = q8k_at(Wp, Q8P_W, n % Q8P_W, k);
                isum += q * a.q[k];
                want += q * (double)sw * ((double)a.q[k] * a.s[b]);
                mag += fabs(q * (double)sw * ((double)a.q[k] * a.s[b]));
            }
            acc = fmaf((float)isum, sw * a.s[b], acc);
        }
        const float got = Y[n - lo];
        if (memcmp(&got, &acc, 4) || !close_to(got, want, mag, 2e-6)) {
            printf("  %s q8p N %d K %d [%d, %d): y[%d] = %.9g, formula %.9g, double %.9g\n",
                   kn->name, N, K, lo, hi, n, got, acc, want);
            ok = 0;
        }
    }
    X[K / 2] = NAN;
    kn->quantize_act8(&a, X);
    kn->gemv_q8p_a8(&a, W, lo, hi, Y);
    for (int n = 0; n < hi - lo; n++) ok &= isnan(Y[n]);
    void *bufs[] = {Wf, srow, qrow, W, X, Y, mem};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    return ok;
}

static void test_q8p(const kernels *kn)
{
    /* N, K, lo, hi: 130m's in_proj (whole, a thread's claim of whole panels, runs that start
     * or end inside a panel), a last panel padded, x_proj's 80 outputs, K % 32 and K % 4 tails,
     * one output */
    static const int shapes[][4] = {{3072, 768, 0, 3072}, {3072, 768, 1536, 3072},
                                    {3072, 768, 10, 130},  {3072, 768, 64, 200},
                                    {100, 768, 0, 100},    {80, 1536, 0, 80},
                                    {200, 48, 0, 200},     {130, 70, 5, 129},
                                    {64, 33, 0, 64},       {257, 96, 256, 257},
                                    {1024, 1024, 64, 448}, {1024, 2048, 30, 1000}};
    const int saved = kernels_q8p_streams;
    int ok = 1;
    /* one, two and four streams (whole panels in pairs or quarters, the rest one by one) */
    for (kernels_q8p_streams = 1; kernels_q8p_streams <= 4; kernels_q8p_streams *= 2)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            ok &= check_q8p(kn, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3]);
    kernels_q8p_streams = saved;
    CHECKF(ok, "%s q8p layout: gemv_q8p_a8 (1, 2 and 4 streams), the bits of the formula on each "
               "panel", kn->name);
}

int main(void)
{
    __builtin_cpu_init();
    const int has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                     __builtin_cpu_supports("f16c");
    const int has512 = __builtin_cpu_supports("avx512f");
    const kernels *ref = kernels_generic();
    if (has2) avx2_q8a8 = kernels_avx2()->gemv_q8a8;
    const kernels *sets[3] = {ref, has2 ? kernels_avx2() : NULL, has512 ? kernels_avx512() : NULL};
    const char *names[3] = {"generic", "avx2", "avx512"};
    /* K in chunks (kernels.h kernels_k_chunks; AMD's default) in every test below, and all of K
     * at once in the row-split invariance too */
    kernels_k_chunks = 1;
    for (int i = 0; i < 3; i++) {
        if (!sets[i]) {
            printf("%-8s not supported by this CPU: skipped\n", names[i]);
            continue;
        }
        int before = test_failures;
        test_gemms(sets[i]);
        test_gemm_t(sets[i]);
        /* one-row products from consecutive rows and from four far streams, their weights
         * prefetched into L2 or non-temporal (kernels.h; also the q8p panels and the transposed
         * products' far layout): the same bits */
        for (int far = 0; far < 4; far++) {
            /* (the generic set reads none of these switches: it runs once, as far 2) */
            if (i == 0 && far != 2) continue;
            kernels_far_rows = far & 1 ? FAR_MIN_ROWS : INT_MAX;
            kernels_pf_nta = far >> 1;
            test_gemm_invariance(sets[i]);
            test_gemm_empty(sets[i]);
            test_gemv_q8a8(sets[i]);
            if (far == 2) { /* (these two do not read kernels_far_rows) */
                test_q8p(sets[i]);
                test_gemm_t(sets[i]);
            }
        }
        kernels_pf_nta = 0;
        if (i > 0) {
            /* up to 16 input rows, the next weight rows' prefetches all in every block of input
             * rows instead of shared out (kernels.h kernels_pf_spread): the same bits */
            kernels_pf_spread = 0;
            test_gemm_invariance(sets[i]);
            kernels_pf_spread = 1;
            /* one stream's prefetches 64 rows ahead instead of 8 (kernels.h kernels_pf1_rows) */
            kernels_pf1_rows = 64;
            test_gemm_invariance(sets[i]);
            kernels_pf1_rows = 8;
            /* and over all of K at once, however many rows (kernels.h kernels_k_chunks) */
            kernels_k_chunks = 0;
            test_gemm_invariance(sets[i]);
            kernels_k_chunks = 1;
        }
        test_scan_invariance(sets[i]);
        test_scan_step(sets[i]);
        if (i > 0) test_scan_conv(sets[i], ref);
        test_small_kernels(sets[i]);
        test_q8k(sets[i]);
        test_q8p(sets[i]);
        test_quantize_act_same(sets[i]);
        printf("%-8s %s\n", names[i], test_failures == before ? "ok" : "FAILED");
    }
    test_quantize();
    test_quantize_act();
    printf("kernels_get() picks %s here\n", kernels_get()->name);
    return test_done("test_kernels");
}
