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
 * Prompts and decode alike run the recurrence token by token (kernels.h: scan2), never the
 * chunked matrix (SSD) form: SSD sums a token's output over the tokens of its chunk and the state
 * at the chunk's start, so its bits depend on where chunks begin, and a prompt resumed from a
 * stored state (a chunk boundary wherever the state was saved) would not give the bits of one fed
 * whole. The recurrence gives every token the same arithmetic whatever span it is in.
 */
#include "kernels.h"
#include "mixers.h"

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


/* Heads [h0, h1) of every span, token by token: S_h = exp(dt A) S_h + dt x_h B^T,
 * y_h = S_h C + D x_h. */
static void scan2_part(void *arg, int tid, int nt)
{
    const scan_job *j = arg;
    const model_config *cf = &j->m->cfg;
    const int Di = cf->d_inner, N = cf->d_state, H = cf->n_heads, P = cf->head_dim;
    const int G = cf->n_groups, hpg = H / G, C = j->m->info.conv_channels;
    const ss_ctx *c = j->c;
    const kernels *k = kernels_get();
    int h0, h1;
    pool_range(H, 1, tid, nt, &h0, &h1);
    for (int q = 0; q < j->n_sp; q++) {
        for (int h = h0; h < h1; h++) {
            const int g = h / hpg;
            const float A = j->ly->A[h], Dh = j->ly->D[h];
            float *S = ss_state_data(j->sp[q].state) + j->ssm_off + (size_t)h * P * N;
            for (int t = j->sp[q].row; t < j->sp[q].row + j->sp[q].n; t++) {
                const float dt = c->dt[(size_t)t * H + h];
                const float *xr = c->xc + (size_t)t * C;
                k->scan2(S, P, N, expf(dt * A), dt, xr + (size_t)h * P, xr + Di + (size_t)g * N,
                         xr + Di + (size_t)G * N + (size_t)g * N, Dh,
                         c->y + (size_t)t * Di + (size_t)h * P);
            }
        }
    }
}

void mamba2_mixer(ss_model *m, ss_ctx *c, const layer *ly, const span *sp, int n_sp, int T)
{
    const model_config *cf = &m->cfg;
    const int Di = cf->d_inner, N = cf->d_state, H = cf->n_heads;
    const int P = cf->head_dim, G = cf->n_groups;
    const int C = m->info.conv_channels, W = Di + C + H; /* in_proj width */
    const size_t ssm_off = (size_t)m->info.n_state_layers * C * cf->conv_kernel +
                           (size_t)ly->state_index * (size_t)Di * N;

    /* [z | xBC | dt] = in_proj(u): proj [T, W]; xBC = SiLU(conv(xBC)): xc [T, C] */
    in_proj_conv(m, c, ly, sp, n_sp, T, W, Di, C);
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
    else model_run(m, c, scan2_part, &sj);
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
    prof_mark(c, SS_PHASE_MIXER);
    /* h += out_proj(y) */
    out_proj_residual(m, c, ly, T);
}
