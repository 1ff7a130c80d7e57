/*
 * mamba2.c - the Mamba-2 mixer (HF Mamba2Mixer / mamba_ssm): the recurrent step for short spans
 * (decode) and the chunked, matrix-multiply (SSD) form for prompts.
 *
 * Per token, heads h = 0..H-1 of size P, groups g = h / (H/G) of B and C:
 *   [z | xBC | dt] = in_proj(u)                     z: [Di], xBC: [Di + 2GN], dt: [H]
 *   xBC = SiLU(conv1d_causal(xBC) + conv_bias);  x = xBC[:Di], B = xBC[Di:Di+GN], C = rest
 *   dt = clamp(softplus(dt + dt_bias), time_step_limit)
 *   S_h = exp(dt_h A_h) S_h + dt_h x_h B_g^T        S_h: [P, N]
 *   y_h = S_h C_g + D_h x_h
 *   y = RMSNorm_grouped(y * SiLU(z)) * norm.weight  each group of Di/G channels on its own
 *   out = out_proj(y)
 *
 * SSD form over a chunk of q tokens (per head, a_t = dt_t A, cum_i = a_0 + ... + a_i):
 *   G = C B^T                       [q, q]  (per group, shared by its heads)
 *   M[i,j] = G[i,j] exp(cum_i - cum_j) dt_j  for j <= i, else 0
 *   Y = M X + diag(exp(cum)) C S0^T + D X    X: [q, P] the head's x, S0: [P, N] state before
 *   S = exp(cum_last) S0 + (w X)^T B         w_j = exp(cum_last - cum_j) dt_j
 * which is the recurrence unrolled: four GEMMs per chunk instead of q rank-1 updates.
 */
#include "mixers.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

static inline float silu(float x)
{
    return x / (1.0f + expf(-x));
}

static inline float softplus(float x)
{
    return x > 20.0f ? x : log1pf(expf(x));
}


/* Spans at least this long use the chunked (SSD) form; shorter ones the recurrence. */
#define SSD_MIN_SPAN 16

/* Per-thread SSD scratch, in floats, for chunks of up to q tokens. */
size_t ssd_scratch_floats(const model_config *cf, int q)
{
    return (size_t)q * q * 2 + (size_t)q * cf->head_dim + (size_t)q * cf->d_state + (size_t)q;
}

/* One chunk of rows [r0, r0 + q) for head h; S: [P, N] updated. G holds C B^T of group g when
 * *g_cached == g (recomputed otherwise). */
static void ssd_chunk(const scan_job *j, int r0, int q, int h, float *S, float *scratch,
                      int *g_cached)
{
    const model_config *cf = &j->m->cfg;
    const int Di = cf->d_inner, N = cf->d_state, H = cf->n_heads, P = cf->head_dim;
    const int G_ = cf->n_groups, g = h / (H / G_), Cch = j->m->info.conv_channels;
    const ss_ctx *c = j->c;
    float *Gm = scratch, *M = Gm + (size_t)q * q, *Xw = M + (size_t)q * q, *Cs = Xw + (size_t)q * P;
    float *cum = Cs + (size_t)q * N;
    const float *X = c->xc + (size_t)r0 * Cch + (size_t)h * P;
    const float *B = c->xc + (size_t)r0 * Cch + Di + (size_t)g * N;
    const float *Cm = c->xc + (size_t)r0 * Cch + Di + (size_t)G_ * N + (size_t)g * N;
    const float A = j->ly->A[h], Dh = j->ly->D[h];
    float *Y = c->y + (size_t)r0 * Di + (size_t)h * P;

    double acc = 0;
    for (int i = 0; i < q; i++) {
        acc += (double)c->dt[(size_t)(r0 + i) * H + h] * A;
        cum[i] = (float)acc;
    }
    if (*g_cached != g) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, q, q, N, 1.0f, Cm, Cch, B, Cch, 0.0f,
                    Gm, q);
        *g_cached = g;
    }
    for (int i = 0; i < q; i++) {
        float *Mi = M + (size_t)i * q;
        const float *Gi = Gm + (size_t)i * q;
        for (int k = 0; k <= i; k++)
            Mi[k] = Gi[k] * expf(cum[i] - cum[k]) * c->dt[(size_t)(r0 + k) * H + h];
        for (int k = i + 1; k < q; k++) Mi[k] = 0.0f;
    }
    /* Y = M X */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, q, P, q, 1.0f, M, q, X, Cch, 0.0f, Y,
                Di);
    /* Y += diag(exp(cum)) C S0^T */
    for (int i = 0; i < q; i++) {
        const float e = expf(cum[i]);
        for (int n = 0; n < N; n++) Cs[(size_t)i * N + n] = e * Cm[(size_t)i * Cch + n];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, q, P, N, 1.0f, Cs, N, S, N, 1.0f, Y, Di);
    /* Y += D X */
    for (int i = 0; i < q; i++)
        for (int p = 0; p < P; p++) Y[(size_t)i * Di + p] += Dh * X[(size_t)i * Cch + p];
    /* S = exp(cum_last) S + (w X)^T B */
    const float last = cum[q - 1];
    for (int i = 0; i < q; i++) {
        const float w = expf(last - cum[i]) * c->dt[(size_t)(r0 + i) * H + h];
        for (int p = 0; p < P; p++) Xw[(size_t)i * P + p] = w * X[(size_t)i * Cch + p];
    }
    const float el = expf(last);
    for (size_t k = 0; k < (size_t)P * N; k++) S[k] *= el;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, P, N, q, 1.0f, Xw, P, B, Cch, 1.0f, S, N);
}

/* Heads [h0, h1) of one long span, chunk by chunk (chunk-outer so G is shared by a group). */
static void ssd_span(const scan_job *j, const span *sp, int h0, int h1, float *scratch)
{
    const model_config *cf = &j->m->cfg;
    const int N = cf->d_state, P = cf->head_dim;
    const int Q = cf->chunk_size < j->c->ssd_chunk ? cf->chunk_size : j->c->ssd_chunk;
    for (int r0 = sp->row; r0 < sp->row + sp->n; r0 += Q) {
        const int q = sp->row + sp->n - r0 < Q ? sp->row + sp->n - r0 : Q;
        int g_cached = -1;
        for (int h = h0; h < h1; h++) {
            float *S = ss_state_data(sp->state) + j->ssm_off + (size_t)h * P * N;
            ssd_chunk(j, r0, q, h, S, scratch, &g_cached);
        }
    }
}

/* Heads [h0, h1) of every span: long spans in SSD chunks, short ones by the recurrence
 * S_h = exp(dt A) S_h + dt x_h B^T, y_h = S_h C + D x_h. */
static void scan2_part(void *arg, int tid, int nt)
{
    const scan_job *j = arg;
    const model_config *cf = &j->m->cfg;
    const int Di = cf->d_inner, N = cf->d_state, H = cf->n_heads, P = cf->head_dim;
    const int G = cf->n_groups, hpg = H / G, C = j->m->info.conv_channels;
    const ss_ctx *c = j->c;
    int h0, h1;
    pool_range(H, 1, tid, nt, &h0, &h1);
    for (int q = 0; q < j->n_sp; q++) {
        if (j->sp[q].n >= SSD_MIN_SPAN) {
            ssd_span(j, &j->sp[q], h0, h1, c->ssd + (size_t)tid * c->ssd_floats);
            continue;
        }
        for (int h = h0; h < h1; h++) {
            const int g = h / hpg;
            const float A = j->ly->A[h], Dh = j->ly->D[h];
            float *S = ss_state_data(j->sp[q].state) + j->ssm_off + (size_t)h * P * N;
            for (int t = j->sp[q].row; t < j->sp[q].row + j->sp[q].n; t++) {
                const float dt = c->dt[(size_t)t * H + h];
                const float dA = expf(dt * A);
                const float *xr = c->xc + (size_t)t * C;
                const float *x = xr + (size_t)h * P;
                const float *B = xr + Di + (size_t)g * N;
                const float *Cm = xr + Di + (size_t)G * N + (size_t)g * N;
                float *y = c->y + (size_t)t * Di + (size_t)h * P;
                for (int p = 0; p < P; p++) {
                    float *Sp = S + (size_t)p * N;
                    const float dx = dt * x[p];
                    float acc = 0;
                    for (int n = 0; n < N; n++) {
                        Sp[n] = dA * Sp[n] + dx * B[n];
                        acc += Sp[n] * Cm[n];
                    }
                    y[p] = acc + Dh * x[p];
                }
            }
        }
    }
}

void mamba2_mixer(ss_model *m, ss_ctx *c, const layer *ly, const span *sp, int n_sp, int T)
{
    const model_config *cf = &m->cfg;
    const int d = cf->d_model, Di = cf->d_inner, N = cf->d_state, H = cf->n_heads;
    const int P = cf->head_dim, G = cf->n_groups;
    const int C = m->info.conv_channels, W = Di + C + H; /* in_proj width */
    const size_t ssm_off = (size_t)m->info.n_state_layers * C * cf->conv_kernel +
                           (size_t)ly->state_index * (size_t)Di * N;

    mm_rows(m, c, c->xn, T, d, d, ly->in_proj_w, ly->in_proj_b, W, c->proj, W);
    conv_rows(m, ly, sp, n_sp, c->proj + Di, W, c->xc, C);
    /* dt per row and head */
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < H; h++) {
            float v = softplus(c->proj[(size_t)t * W + Di + C + h] + ly->dt_bias[h]);
            if (v < cf->dt_min) v = cf->dt_min;
            if (v > cf->dt_max) v = cf->dt_max;
            c->dt[(size_t)t * H + h] = v;
        }
    }
    /* the state's decay: sum of dt per head over the tokens each sequence saw */
    for (int s = 0; s < n_sp; s++) {
        float *ds = ss_state_decay(sp[s].state) + (size_t)ly->state_index * H;
        for (int t = sp[s].row; t < sp[s].row + sp[s].n; t++)
            for (int h = 0; h < H; h++) ds[h] += c->dt[(size_t)t * H + h];
    }
    /* Scan: heads in parallel, each head walks its spans in order. */
    scan_job sj = {.m = m, .c = c, .ly = ly, .sp = sp, .n_sp = n_sp, .ssm_off = ssm_off};
    if (H * P < 256) scan2_part(&sj, 0, 1);
    else pool_run(m->pool, scan2_part, &sj);
    /* Gate, grouped RMSNorm, weight. */
    const int gs = Di / G;
    for (int t = 0; t < T; t++) {
        float *y = c->y + (size_t)t * Di;
        const float *z = c->proj + (size_t)t * W;
        for (int i = 0; i < Di; i++) y[i] *= silu(z[i]);
        for (int g = 0; g < G; g++) {
            float *yg = y + (size_t)g * gs;
            double ss = 0;
            for (int i = 0; i < gs; i++) ss += (double)yg[i] * yg[i];
            float inv = (float)(1.0 / sqrt(ss / gs + cf->norm_eps));
            for (int i = 0; i < gs; i++) yg[i] = yg[i] * inv * ly->gnorm_w[(size_t)g * gs + i];
        }
    }
    mm_rows(m, c, c->y, T, Di, Di, ly->out_proj_w, ly->out_proj_b, d, c->out, d);
}
