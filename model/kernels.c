/*
 * kernels.c - portable reference kernels and the run-time choice of SIMD versions.
 *
 * The portable versions follow the equations literally (libm expf/log1pf) and are what the
 * SIMD versions are tested against. Choice: AVX-512F if the CPU has it, else AVX2+FMA, else
 * portable; SS_KERNELS=generic|avx2|avx512 overrides (for tests and comparisons).
 */
#include "kernels.h"

#include <cpuid.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static inline float silu(float x)
{
    return x / (1.0f + expf(-x));
}

static inline float softplus(float x)
{
    return x > 20.0f ? x : log1pf(expf(x));
}

static void gen_scan1(const scan1_args *a)
{
    const int N = a->N;
    for (int i = a->c0; i < a->c1; i++) {
        const float *A = a->A + (size_t)i * N;
        float *s = a->s + (size_t)i * N;
        for (int t = 0; t < a->T; t++) {
            const float dt = softplus(a->dt[(size_t)t * a->ldd + i]);
            if (a->dsum) a->dsum[i] += dt;
            const float x = a->x[(size_t)t * a->ldx + i];
            const float *B = a->B + (size_t)t * a->ldbc, *C = a->C + (size_t)t * a->ldbc;
            const float dx = dt * x;
            float acc = 0;
            for (int n = 0; n < N; n++) {
                s[n] = expf(dt * A[n]) * s[n] + dx * B[n];
                acc += s[n] * C[n];
            }
            a->y[(size_t)t * a->ldy + i] = (acc + a->D[i] * x) * silu(a->z[(size_t)t * a->ldz + i]);
        }
    }
}

static void gen_conv(const conv_args *a)
{
    const int K = a->K;
    for (int i = a->c0; i < a->c1; i++) {
        const float *w = a->w + (size_t)i * K;
        float *win = a->win + (size_t)i * K;
        const float bias = a->bias ? a->bias[i] : 0.0f;
        for (int t = 0; t < a->T; t++) {
            memmove(win, win + 1, (size_t)(K - 1) * sizeof(float));
            win[K - 1] = a->in[(size_t)t * a->ld_in + i];
            float acc = bias;
            for (int k = 0; k < K; k++) acc += win[k] * w[k];
            a->out[(size_t)t * a->ld_out + i] = silu(acc);
        }
    }
}

static void gen_scan2(float *S, int P, int N, float dA, float dt, const float *x, const float *B,
                      const float *C, float Dh, float *y)
{
    for (int p = 0; p < P; p++) {
        float *Sp = S + (size_t)p * N;
        const float dx = dt * x[p];
        float acc = 0;
        for (int n = 0; n < N; n++) {
            Sp[n] = dA * Sp[n] + dx * B[n];
            acc += Sp[n] * C[n];
        }
        y[p] = acc + Dh * x[p];
    }
}

static void gen_gemm_small(const float *X, int M, int K, int ldx, const float *W, int N, float *Y,
                           int ldy)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float acc = 0;
            for (int k = 0; k < K; k++) acc += X[(size_t)m * ldx + k] * W[(size_t)n * K + k];
            Y[(size_t)m * ldy + n] = acc;
        }
}

#define GEN_GEMM(NAME, WT, CVT)                                                                \
    static void NAME(const float *X, int M, int K, int ldx, const WT *W, int N, float *Y,      \
                     int ldy)                                                                  \
    {                                                                                          \
        for (int m = 0; m < M; m++)                                                            \
            for (int n = 0; n < N; n++) {                                                      \
                float acc = 0;                                                                 \
                for (int k = 0; k < K; k++)                                                    \
                    acc += X[(size_t)m * ldx + k] * CVT(W[(size_t)n * K + k]);                 \
                Y[(size_t)m * ldy + n] = acc;                                                  \
            }                                                                                  \
    }
static void gen_gemm_small_q8(const float *X, int M, int K, int ldx, const int8_t *W,
                              const float *S, int N, float *Y, int ldy)
{
    const int nb = q8_blocks(K);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float acc = 0;
            for (int k = 0; k < K; k++)
                acc += X[(size_t)m * ldx + k] *
                       ((float)W[(size_t)n * K + k] * S[(size_t)n * nb + k / Q8_BLOCK]);
            Y[(size_t)m * ldy + n] = acc;
        }
}

/* gemm_t (kernels.h): one fmaf chain per output, in k order; every SIMD kernel gives these bits. */
#define GEN_GEMM_T(NAME, WT, CVT)                                                              \
    static void NAME(const float *X, int M, int K, int ldx, const WT *W, int ldw, int bw,      \
                     size_t bs, int N, float *Y, int ldy, int add)                             \
    {                                                                                          \
        for (int m = 0; m < M; m++)                                                            \
            for (int n = 0; n < N; n++) {                                                      \
                const WT *wn = bw >= N ? W + n : W + (size_t)(n / bw) * bs + n % bw;           \
                float acc = 0;                                                                 \
                for (int k = 0; k < K; k++)                                                    \
                    acc = fmaf(CVT(wn[(size_t)k * ldw]), X[(size_t)m * ldx + k], acc);         \
                float *y = Y + (size_t)m * ldy + n;                                            \
                *y = add ? *y + acc : acc;                                                     \
            }                                                                                  \
    }
#define GEN_F32(v) (v)
GEN_GEMM_T(gen_gemm_t, float, GEN_F32)
GEN_GEMM_T(gen_gemm_t_bf16, uint16_t, bf16_to_f32)
GEN_GEMM_T(gen_gemm_t_f16, uint16_t, f16_to_f32)
#undef GEN_F32

static void gen_gemm_t_q8(const float *X, int M, int K, int ldx, const int8_t *W, int ldw,
                          const float *S, int lds, int N, float *Y, int ldy, int add)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float acc = 0;
            for (int k = 0; k < K; k++) {
                const float sx = S[(size_t)k * lds + n / Q8_BLOCK] * X[(size_t)m * ldx + k];
                acc = fmaf((float)W[(size_t)k * ldw + n], sx, acc);
            }
            float *y = Y + (size_t)m * ldy + n;
            *y = add ? *y + acc : acc;
        }
}

/* Per block: the exact int32 sum of q_w q_x, times s_w s_x, summed in F32 in block order. */
static void gen_gemv_q8a8(const q8_act *x, const int8_t *W, const float *S, int N, float *Y)
{
    const int K = x->K, nb = q8_blocks(K);
    for (int n = 0; n < N; n++) {
        const int8_t *w = W + (size_t)n * K;
        float acc = 0;
        for (int b = 0; b < nb; b++) {
            const int k0 = b * Q8_BLOCK, k1 = k0 + Q8_BLOCK < K ? k0 + Q8_BLOCK : K;
            int32_t isum = 0;
            for (int k = k0; k < k1; k++) isum += (int32_t)w[k] * x->q[k];
            acc += (float)isum * (S[(size_t)n * nb + b] * x->s[b]);
        }
        Y[n] = acc;
    }
}

/* gemv_t_q8ka8 (kernels.h): per block the exact int32 sum, then the F32 chain over blocks. */
static void gen_gemv_t_q8ka8(const q8_act *x, const uint8_t *W, size_t ldw, int N, float *Y)
{
    for (int n = 0; n < N; n++) Y[n] = q8k_out_a8(x, W, ldw, n);
}

void q8p_gemv_by_panels(void (*gemv_t)(const q8_act *, const uint8_t *, size_t, int, float *),
                        const q8_act *x, const uint8_t *W, int lo, int hi, float *Y)
{
    const size_t pb = q8p_panel_bytes(x->K);
    for (int a = lo; a < hi;) {
        const int c = a / Q8P_W, o = a % Q8P_W, e = hi < (c + 1) * Q8P_W ? hi : (c + 1) * Q8P_W;
        gemv_t(x, W + (size_t)c * pb + 4 * (size_t)o, 4 * Q8P_W, e - a, Y + (a - lo));
        a = e;
    }
}

int q8p_edges(void (*gemv_t)(const q8_act *, const uint8_t *, size_t, int, float *),
              const q8_act *x, const uint8_t *W, int lo, int hi, float *Y, int *c0, int *c1)
{
    *c0 = (lo + Q8P_W - 1) / Q8P_W;
    *c1 = hi / Q8P_W;
    if (*c0 >= *c1 || x->K == 0) {
        q8p_gemv_by_panels(gemv_t, x, W, lo, hi, Y);
        return 0;
    }
    if (lo < *c0 * Q8P_W) q8p_gemv_by_panels(gemv_t, x, W, lo, *c0 * Q8P_W, Y);
    if (*c1 * Q8P_W < hi)
        q8p_gemv_by_panels(gemv_t, x, W, *c1 * Q8P_W, hi, Y + (*c1 * Q8P_W - lo));
    return 1;
}

static void gen_gemv_q8p_a8(const q8_act *x, const uint8_t *W, int lo, int hi, float *Y)
{
    q8p_gemv_by_panels(gen_gemv_t_q8ka8, x, W, lo, hi, Y);
}

/* gemm_t_q8k (kernels.h): per block an fmaf chain over its k, then the chain over blocks. */
static void gen_gemm_t_q8k(const float *X, int M, int K, int ldx, const uint8_t *W, size_t ldw,
                           int N, float *Y, int ldy)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++)
            Y[(size_t)m * ldy + n] = q8k_out_f32(X + (size_t)m * ldx, K, W, ldw, n);
}

void q8k_put_row(uint8_t *W, int N, int K, int n, const int8_t *q, const float *s)
{
    const size_t ldw = 4 * (size_t)N;
    for (int b = 0; b < q8_blocks(K); b++) {
        uint8_t *Wb = W + (size_t)b * Q8K_ROWS * ldw; /* block b: its 8 rows, then its scales */
        for (int k = b * Q8_BLOCK; k < (b + 1) * Q8_BLOCK; k++)
            Wb[(size_t)(k % Q8_BLOCK / 4) * ldw + 4 * (size_t)n + (size_t)(k % 4)] =
                (uint8_t)((k < K ? q[k] : 0) + 128);
        memcpy(Wb + (Q8_BLOCK / 4) * ldw + 4 * (size_t)n, &s[b], sizeof *s);
    }
}

static size_t round64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

size_t q8_act_bytes(int K)
{
    const size_t Kp = round64((size_t)K);
    /* the scales padded to whole groups of 16 blocks (kernels_vnni.c loads 16 at a time) */
    return 2 * Kp + round64(Kp / 8) + ((Kp + 511) / 512) * 16 * sizeof(float);
}

void q8_act_init(q8_act *a, void *mem, int K)
{
    const size_t Kp = round64((size_t)K);
    char *p = mem;
    a->K = K;
    a->q = (int8_t *)p;
    a->aq = (uint8_t *)(p + Kp);
    a->neg = (uint64_t *)(p + 2 * Kp);
    a->s = (float *)(p + 2 * Kp + round64(Kp / 8));
}

void q8_act_pad(q8_act *a)
{
    const int K = a->K, Kp = (int)round64((size_t)K), nb = q8_blocks(K);
    memset(a->q + K, 0, (size_t)(Kp - K));
    memset(a->aq + K, 0, (size_t)(Kp - K));
    if (K % 64) a->neg[K / 64] &= ((uint64_t)1 << (K % 64)) - 1;
    for (int b = nb; b % 16; b++) a->s[b] = 0;
}

void q8_act_quantize(q8_act *a, const float *x)
{
    const int K = a->K;
    for (int b = 0; b * Q8_BLOCK < K; b++) {
        const int k0 = b * Q8_BLOCK, k1 = k0 + Q8_BLOCK < K ? k0 + Q8_BLOCK : K;
        float amax = 0;
        for (int k = k0; k < k1; k++) amax = fmaxf(amax, fabsf(x[k])); /* NaN-free max */
        int finite = isfinite(amax);
        for (int k = k0; k < k1; k++) finite &= !isnan(x[k]);
        const float scale = amax / 127.0f, inv = scale > 0 ? 127.0f / amax : 0.0f;
        a->s[b] = finite ? scale : NAN;
        for (int k = k0; k < k1; k++) {
            float r = finite ? rintf(x[k] * inv) : 0.0f;
            int v = r > 127.0f ? 127 : r < -127.0f ? -127 : (int)r;
            a->q[k] = (int8_t)v;
            a->aq[k] = (uint8_t)(v < 0 ? -v : v);
            if (v < 0)
                a->neg[k / 64] |= (uint64_t)1 << (k % 64);
            else
                a->neg[k / 64] &= ~((uint64_t)1 << (k % 64));
        }
    }
    q8_act_pad(a);
}

static void gen_widen_q8(const int8_t *q, const float *s, int K, float *dst)
{
    for (int k = 0; k < K; k++) dst[k] = (float)q[k] * s[k / Q8_BLOCK];
}

int q8_quantize_row(const float *w, int K, int8_t *q, float *s)
{
    for (int b = 0; b * Q8_BLOCK < K; b++) {
        const int k0 = b * Q8_BLOCK, k1 = k0 + Q8_BLOCK < K ? k0 + Q8_BLOCK : K;
        float amax = 0;
        for (int k = k0; k < k1; k++) {
            if (!isfinite(w[k])) return -1;
            amax = fabsf(w[k]) > amax ? fabsf(w[k]) : amax;
        }
        const float scale = amax / 127.0f;
        s[b] = scale;
        for (int k = k0; k < k1; k++) {
            float r = scale > 0 ? rintf(w[k] / scale) : 0.0f;
            q[k] = (int8_t)(r > 127.0f ? 127 : r < -127.0f ? -127 : r);
        }
    }
    return 0;
}

GEN_GEMM(gen_gemm_small_f16, uint16_t, f16_to_f32)

/* BF16 in the pair layout (kernels.h): value k of row n at W[n K + bf16_pair_pos(K, k)]. */
static void gen_gemm_small_bf16(const float *X, int M, int K, int ldx, const uint16_t *W, int N,
                                float *Y, int ldy)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float acc = 0;
            for (int k = 0; k < K; k++)
                acc += X[(size_t)m * ldx + k] *
                       bf16_to_f32(W[(size_t)n * K + (size_t)bf16_pair_pos(K, k)]);
            Y[(size_t)m * ldy + n] = acc;
        }
}

static void gen_widen_bf16_pairs(const uint16_t *src, int K, float *dst)
{
    for (int k = 0; k < K; k++) dst[k] = bf16_to_f32(src[bf16_pair_pos(K, k)]);
}

void bf16_pack_rows(const uint16_t *src, size_t rows, int K, uint16_t *dst)
{
    enum { H = BF16_GROUP / 2 };
    const int kg = K / BF16_GROUP * BF16_GROUP;
    for (size_t r = 0; r < rows; r++) {
        const uint16_t *s = src + r * (size_t)K;
        uint16_t *d = dst + r * (size_t)K;
        for (int k = 0; k < kg; k += BF16_GROUP)
            for (int j = 0; j < H; j++) {
                d[k + 2 * j] = s[k + j];
                d[k + 2 * j + 1] = s[k + H + j];
            }
        memcpy(d + kg, s + kg, (size_t)(K - kg) * sizeof *d);
    }
}

static void gen_widen_bf16(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]);
}

static void gen_widen_f16(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(src[i]);
}

static float gen_logsumexp_at(const float *x, int n, float mx)
{
    if (!(mx > -INFINITY)) return mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    return mx + (float)log(sum);
}

static float gen_logsumexp(const float *x, int n)
{
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return gen_logsumexp_at(x, n, mx);
}

static int gen_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static const kernels generic = {
    .name = "generic",
    .scan1 = gen_scan1,
    .conv = gen_conv,
    .scan2 = gen_scan2,
    .gemm_small = gen_gemm_small,
    .gemm_small_bf16 = gen_gemm_small_bf16,
    .gemm_small_f16 = gen_gemm_small_f16,
    .gemm_small_q8 = gen_gemm_small_q8,
    .gemv_q8a8 = gen_gemv_q8a8,
    .gemm_t = gen_gemm_t,
    .gemm_t_bf16 = gen_gemm_t_bf16,
    .gemm_t_f16 = gen_gemm_t_f16,
    .gemm_t_q8 = gen_gemm_t_q8,
    .gemv_t_q8ka8 = gen_gemv_t_q8ka8,
    .gemm_t_q8k = gen_gemm_t_q8k,
    .gemv_q8p_a8 = gen_gemv_q8p_a8,
    .quantize_act8 = q8_act_quantize,
    .widen_q8 = gen_widen_q8,
    .widen_bf16 = gen_widen_bf16,
    .widen_bf16_pairs = gen_widen_bf16_pairs,
    .widen_f16 = gen_widen_f16,
    .logsumexp = gen_logsumexp,
    .logsumexp_at = gen_logsumexp_at,
    .argmax = gen_argmax,
};

const kernels *kernels_generic(void)
{
    return &generic;
}

void kernels_block16(const float *src, int C, int K, float *dst)
{
    for (int b = 0; b < C / 16; b++)
        for (int k = 0; k < K; k++)
            for (int c = 0; c < 16; c++)
                dst[((size_t)b * K + k) * 16 + c] = src[(size_t)(b * 16 + c) * K + k];
}

static const kernels *chosen;
int kernels_far_rows = INT_MAX; /* kernels.h; chosen below */
int kernels_pf_nta = 0;        /* kernels.h; chosen below */
int kernels_pf_spread = 1;     /* kernels.h; SS_PF_SPREAD below */
int kernels_pf1_rows = 8;      /* kernels.h (kernels_simd.h PF1_ROWS); SS_PF1_ROWS below */
int kernels_k_chunks = 0;      /* kernels.h; chosen below */
int kernels_far_m = 4;         /* kernels.h; SS_FAR_M below */
int kernels_far_t = -1;          /* kernels.h; SS_FAR_T below */
int kernels_scan_ahead = 1;      /* kernels.h; SS_SCAN_AHEAD below */
int kernels_scan_pf = 32;        /* kernels.h; SS_SCAN_PF below */
int kernels_hsum_4x4 = 1;        /* kernels.h; SS_HSUM4X4 below */
int kernels_q8p_streams = 4;     /* kernels.h; SS_Q8P_STREAMS below */
int kernels_far_pf_bytes = FAR_PF_BYTES; /* kernels.h; SS_FAR_PF_BYTES below */

/* Runs once per process (pthread_once): the CPU and SS_KERNELS do not change under us, and
 * the engine, the merge threads and the loader may all ask first at the same time. */
static void kernels_choose(void)
{
    const kernels *k = &generic;
    const char *force = getenv("SS_KERNELS");
    __builtin_cpu_init();
    int has512 = __builtin_cpu_supports("avx512f");
    /* F16C from CPUID itself: clang before 15 has no "f16c" for __builtin_cpu_supports, and the
     * fuzz build (tests/fuzz) uses Debian 12's clang 14 */
    unsigned ca, cb, cc, cd;
    int f16c = __get_cpuid(1, &ca, &cb, &cc, &cd) && (cc & bit_F16C);
    int has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    if (force && !strcmp(force, "generic"))
        k = &generic;
    else if (force && !strcmp(force, "avx2") && has2)
        k = kernels_avx2();
    else if (has512 && (!force || !strcmp(force, "avx512")))
        k = kernels_avx512();
    else if (has2)
        k = kernels_avx2();
    const int amd = __builtin_cpu_is("amd");
    const char *far = getenv("SS_FAR_STREAMS");
    if (far && (!strcmp(far, "0") || !strcmp(far, "1")))
        kernels_far_rows = far[0] == '1' ? FAR_MIN_ROWS : INT_MAX;
    else
        kernels_far_rows = FAR_MIN_ROWS;
    const char *nta = getenv("SS_PF_NTA");
    if (nta && (!strcmp(nta, "0") || !strcmp(nta, "1")))
        kernels_pf_nta = nta[0] == '1';
    else
        kernels_pf_nta = amd;
    const char *spread = getenv("SS_PF_SPREAD");
    if (spread && (!strcmp(spread, "0") || !strcmp(spread, "1")))
        kernels_pf_spread = spread[0] == '1';
    const char *pf1 = getenv("SS_PF1_ROWS");
    if (pf1 && atoi(pf1) >= 4 && atoi(pf1) <= 64 && atoi(pf1) % 4 == 0)
        kernels_pf1_rows = atoi(pf1);
    const char *fpb = getenv("SS_FAR_PF_BYTES");
    if (fpb && *fpb >= '0' && *fpb <= '9' && atoi(fpb) <= 65536 && atoi(fpb) % 64 == 0)
        kernels_far_pf_bytes = atoi(fpb);
    const char *farm = getenv("SS_FAR_M");
    if (farm && farm[0] >= '1' && farm[0] <= '4' && !farm[1]) kernels_far_m = farm[0] - '0';
    const char *chunks = getenv("SS_K_CHUNKS");
    if (chunks && (!strcmp(chunks, "0") || !strcmp(chunks, "1")))
        kernels_k_chunks = chunks[0] == '1';
    else
        kernels_k_chunks = amd;
    const char *far_t = getenv("SS_FAR_T");
    if (far_t && (!strcmp(far_t, "0") || !strcmp(far_t, "1"))) kernels_far_t = far_t[0] == '1';
    const char *ahead = getenv("SS_SCAN_AHEAD");
    if (ahead && (!strcmp(ahead, "0") || !strcmp(ahead, "1"))) kernels_scan_ahead = ahead[0] == '1';
    const char *spf = getenv("SS_SCAN_PF");
    if (spf && atoi(spf) >= 0 && atoi(spf) <= 1024 && atoi(spf) % 16 == 0)
        kernels_scan_pf = atoi(spf);
    const char *h44 = getenv("SS_HSUM4X4");
    if (h44 && (!strcmp(h44, "0") || !strcmp(h44, "1"))) kernels_hsum_4x4 = h44[0] == '1';
    const char *q8ps = getenv("SS_Q8P_STREAMS");
    if (q8ps && (!strcmp(q8ps, "1") || !strcmp(q8ps, "2") || !strcmp(q8ps, "4")))
        kernels_q8p_streams = q8ps[0] - '0';
    chosen = k;
}

const kernels *kernels_get(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, kernels_choose);
    return chosen;
}
